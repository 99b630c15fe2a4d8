//! A project's two connection budgets on Redis (see the module docs of `store::redis`): units
//! taken before a script may open a connection or a discovery queue, refreshed while in use,
//! expiring by score once not.

use super::connection::RedisConnection;
use super::keys::Keys;
use super::scripts::{BudgetMembers, CountBudgets, ReleaseBudget, TakeBudget};
use crate::store::StoreError;

/// The budgets of every project of one deployment.
#[derive(Debug, Clone)]
pub(crate) struct Budgets {
    connection: RedisConnection,
    keys: Keys,
    max_per_project: usize,
}

/// Which budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// Connections that have polled.
    Polled,
    /// Mailboxes opened by senders for connections or peers that have not polled.
    Mail,
}

impl Budgets {
    /// Budgets of `max_per_project` units each.
    pub(crate) fn new(connection: RedisConnection, keys: Keys, max_per_project: usize) -> Self {
        Budgets {
            connection,
            keys,
            max_per_project,
        }
    }

    /// The most units a budget holds.
    pub(crate) fn max_per_project(&self) -> usize {
        self.max_per_project
    }

    /// Takes a unit of `budget` for `member` (a connection's or a discovery queue's key), held
    /// for about twice `span_ms`, and gives back the unit it held in the other budget; `false`
    /// when the budget is spent.
    pub(crate) async fn take(
        &self,
        project: &str,
        budget: Budget,
        member: String,
        span_ms: u64,
    ) -> Result<bool, StoreError> {
        self.call(project, budget, member, span_ms, false).await
    }

    /// Extends the unit `member` holds.
    pub(crate) async fn refresh(
        &self,
        project: &str,
        budget: Budget,
        member: String,
        span_ms: u64,
    ) -> Result<(), StoreError> {
        self.call(project, budget, member, span_ms, true)
            .await
            .map(|_| ())
    }

    async fn call(
        &self,
        project: &str,
        budget: Budget,
        member: String,
        span_ms: u64,
        refresh: bool,
    ) -> Result<bool, StoreError> {
        let (polled, mail) = self.keys.budgets(project);
        let (budget, other) = match budget {
            Budget::Polled => (polled, mail),
            Budget::Mail => (mail, polled),
        };
        let taken = self
            .connection
            .run(TakeBudget {
                budget,
                other,
                refresh,
                member,
                span_ms,
                max: u64::try_from(self.max_per_project).unwrap_or(u64::MAX),
            })
            .await?;
        Ok(taken.granted)
    }

    /// Gives back the unit `member` holds in either budget: its connection was evicted, or
    /// refused after the unit was taken.
    pub(crate) async fn release(&self, project: &str, member: String) -> Result<(), StoreError> {
        let (polled, mail) = self.keys.budgets(project);
        self.connection
            .run(ReleaseBudget {
                polled,
                mail,
                member,
            })
            .await
            .map(|_| ())
    }

    /// The units `project` holds in both budgets.
    pub(crate) async fn count(&self, project: &str) -> Result<u64, StoreError> {
        let (polled, mail) = self.keys.budgets(project);
        Ok(self
            .connection
            .run(CountBudgets { polled, mail })
            .await?
            .count)
    }

    /// The members of `project`'s polled budget: the keys of its connections that polled.
    pub(crate) async fn polled_members(&self, project: &str) -> Result<Vec<String>, StoreError> {
        let (polled, _) = self.keys.budgets(project);
        Ok(self.connection.run(BudgetMembers { polled }).await?.members)
    }
}
