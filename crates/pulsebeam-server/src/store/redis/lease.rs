//! A lease in Redis: one holder at a time, for a bounded time, renewed while held. Nodes use it
//! to elect the one that does something once for the deployment (counting coturn's reports).

use std::time::Duration;

use super::connection::{node_id, RedisConnection};
use super::scripts::{AcquireLease, ReleaseLease};
use crate::store::StoreError;

/// What [`Lease::acquire`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// This node held the lease since its previous acquisition, without a break.
    Renewed,
    /// The lease was free and this node took it: whether it held it before or not, someone
    /// else may have held it in between.
    Taken,
    /// Another node holds it.
    HeldByOther,
}

/// This node's claim on the lease at one key.
#[derive(Debug)]
pub(crate) struct Lease {
    connection: RedisConnection,
    key: String,
    holder: String,
    span: Duration,
}

impl Lease {
    /// A claim on the lease at `key`, lasting `span` from each renewal, under a random id.
    pub(crate) fn new(connection: RedisConnection, key: &str, span: Duration) -> Self {
        Lease {
            connection,
            key: key.to_owned(),
            holder: node_id(),
            span,
        }
    }

    /// Takes the lease if free, renews it if held: whether this node holds it now, and since
    /// when.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub(crate) async fn acquire(&self) -> Result<Acquired, StoreError> {
        let acquired = self
            .connection
            .run(AcquireLease {
                lease: self.key.clone(),
                holder: self.holder.clone(),
                ms: u64::try_from(self.span.as_millis()).unwrap_or(u64::MAX),
            })
            .await?;
        Ok(match (acquired.held, acquired.renewed) {
            (true, true) => Acquired::Renewed,
            (true, false) => Acquired::Taken,
            (false, _) => Acquired::HeldByOther,
        })
    }

    /// Gives the lease up if this node holds it: whether it did.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub(crate) async fn release(&self) -> Result<bool, StoreError> {
        let released = self
            .connection
            .run(ReleaseLease {
                lease: self.key.clone(),
                holder: self.holder.clone(),
            })
            .await?;
        Ok(released.released)
    }
}
