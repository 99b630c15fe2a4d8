//! Revocations in Redis, shared by every node of a deployment: a hash of target ->
//! `until|json`, a counter bumped on every change and an epoch (keys in `store::redis`'s docs).
//! The rule "a longer revocation wins" is `revocation_put.lua`'s.
//!
//! The epoch is a random id that the first node reading the version after the key went
//! missing writes (`SET NX`). When Redis loses its data the counter starts again from zero, but
//! the epoch is new, so every node reads the whole set again (and re-publishes what it holds
//! that Redis lost: `store::revocation_mirror`).

use super::connection::RedisConnection;
use super::keys::Keys;
use super::scripts::{ListRevocations, PutRevocation, ReadRevocationsVersion};
use crate::revoke::{sort_revocations, Revocation, RevocationError};
use crate::store::revocations::new_epoch;
use crate::store::{BoxFuture, RevocationStore, RevocationsVersion, StoreError};

/// The [`RevocationStore`] of a deployment on Redis.
#[derive(Debug, Clone)]
pub struct RedisRevocations {
    connection: RedisConnection,
    /// The hash of revocations.
    all: String,
    /// Their change counter.
    version: String,
    /// The epoch of the counter (same hash tag).
    epoch: String,
}

impl RedisRevocations {
    /// Revocations under `key_prefix` (`store.key_prefix`) on `connection`.
    pub fn new(connection: RedisConnection, key_prefix: &str) -> Self {
        let (all, version) = Keys::new(key_prefix).revocations();
        RedisRevocations {
            connection,
            all,
            epoch: format!("{version}:epoch"),
            version,
        }
    }
}

fn unavailable(err: StoreError) -> RevocationError {
    RevocationError::Store(err.to_string())
}

fn unreadable() -> RevocationError {
    RevocationError::Store("redis holds a revocation this node cannot read".into())
}

/// Reads `until|json` as `revocation_put.lua` stores it.
fn parse(stored: &str) -> Result<Revocation, RevocationError> {
    let (_, json) = stored.split_once('|').ok_or_else(unreadable)?;
    serde_json::from_str(json).map_err(|_| unreadable())
}

impl RevocationStore for RedisRevocations {
    fn put<'a>(
        &'a self,
        revocation: &'a Revocation,
        _now: u64,
    ) -> BoxFuture<'a, Result<Revocation, RevocationError>> {
        Box::pin(async move {
            let target = serde_json::to_string(&revocation.target).map_err(|_| unreadable())?;
            let json = serde_json::to_string(revocation).map_err(|_| unreadable())?;
            let in_force = self
                .connection
                .run(PutRevocation {
                    all: self.all.clone(),
                    version: self.version.clone(),
                    target,
                    stored: format!("{}|{json}", revocation.until),
                    until_secs: revocation.until,
                })
                .await
                .map_err(unavailable)?;
            parse(&in_force.in_force)
        })
    }

    fn list(&self, now: u64) -> BoxFuture<'_, Result<Vec<Revocation>, RevocationError>> {
        Box::pin(async move {
            let listed = self
                .connection
                .run(ListRevocations {
                    all: self.all.clone(),
                    now_secs: now,
                })
                .await
                .map_err(unavailable)?;
            let mut all = listed
                .stored
                .iter()
                .map(|stored| parse(stored))
                .collect::<Result<Vec<_>, _>>()?;
            sort_revocations(&mut all);
            Ok(all)
        })
    }

    fn version(&self) -> BoxFuture<'_, Result<RevocationsVersion, RevocationError>> {
        Box::pin(async move {
            // One script reads both, so the counter is always of the epoch read with it.
            let read = self
                .connection
                .run(ReadRevocationsVersion {
                    version: self.version.clone(),
                    epoch: self.epoch.clone(),
                    proposed: new_epoch(),
                })
                .await
                .map_err(unavailable)?;
            Ok(RevocationsVersion::new(read.epoch, read.version))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revoke::RevocationTarget;

    #[test]
    fn stored_revocations_read_back_and_garbage_is_refused() {
        let revocation = Revocation::new(
            RevocationTarget::Token {
                project: "p".into(),
                jti: "a|b".into(),
            },
            2_000,
            1_000,
        );
        let stored = format!("2000|{}", serde_json::to_string(&revocation).unwrap());
        assert_eq!(parse(&stored).unwrap(), revocation);
        for bad in ["", "2000", "2000|{}", "2000|not json"] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains("cannot read"), "{bad}: {err}");
        }
    }
}
