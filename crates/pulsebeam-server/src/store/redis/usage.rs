//! Usage totals in Redis, summed over every node of a deployment: one hash of fields per
//! project and hour, kept [`KEEP_HOURS`] (keys in `store::redis`'s docs), and per batch and
//! entry a marker `<hour key>:a:<batch>` (same hash tag) that it was applied, kept
//! [`BATCH_IDS_KEPT_SECS`].

use std::collections::BTreeMap;

use fred::types::Value;

use super::connection::RedisConnection;
use super::keys::Keys;
use super::scripts::{AddUsage, ReadUsage};
use crate::store::usage::{BATCH_IDS_KEPT_SECS, KEEP_HOURS};
use crate::store::{BoxFuture, HourlyUsage, StoreError, UsageStore};
use crate::usage::UsageTotals;

/// The [`UsageStore`] of a deployment on Redis.
#[derive(Debug, Clone)]
pub struct RedisUsage {
    connection: RedisConnection,
    keys: Keys,
}

impl RedisUsage {
    /// Usage totals under `key_prefix` (`store.key_prefix`) on `connection`.
    pub fn new(connection: RedisConnection, key_prefix: &str) -> Self {
        RedisUsage {
            connection,
            keys: Keys::new(key_prefix),
        }
    }
}

/// An hour's totals from the hash's `name, value, ...` list; unknown names are skipped.
fn read_totals(fields: Value) -> Result<Option<UsageTotals>, StoreError> {
    let fields = fields.into_array();
    if fields.is_empty() {
        return Ok(None);
    }
    let mut totals = UsageTotals::default();
    for pair in fields.chunks(2) {
        let [name, value] = pair else {
            return Err(StoreError::Unavailable(
                "redis answered usage totals this node cannot read".into(),
            ));
        };
        let value = value.as_u64().unwrap_or(0);
        if let Some(name) = name.as_str() {
            totals.set(&name, value);
        }
    }
    Ok(Some(totals))
}

impl UsageStore for RedisUsage {
    fn add<'a>(
        &'a self,
        batch: &'a str,
        totals: &'a HourlyUsage,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            for ((hour, project), t) in totals {
                let fields: Vec<String> = t
                    .fields()
                    .into_iter()
                    .filter(|(_, value)| *value > 0)
                    .flat_map(|(name, value)| [name.to_owned(), value.to_string()])
                    .collect();
                if fields.is_empty() {
                    continue;
                }
                let hour = self.keys.usage(project, *hour);
                self.connection
                    .run(AddUsage {
                        applied: format!("{hour}:a:{batch}"),
                        hour,
                        ttl_secs: KEEP_HOURS * 3600,
                        applied_ttl_secs: BATCH_IDS_KEPT_SECS,
                        fields,
                    })
                    .await?;
            }
            Ok(())
        })
    }

    fn hours<'a>(
        &'a self,
        project: &'a str,
        hours: &'a [u64],
    ) -> BoxFuture<'a, Result<BTreeMap<u64, UsageTotals>, StoreError>> {
        Box::pin(async move {
            if hours.is_empty() {
                return Ok(BTreeMap::new());
            }
            let read = self
                .connection
                .run(ReadUsage {
                    hours: hours.iter().map(|h| self.keys.usage(project, *h)).collect(),
                })
                .await?;
            let mut out = BTreeMap::new();
            for (hour, fields) in hours.iter().zip(read.hours) {
                if let Some(totals) = read_totals(fields)? {
                    out.insert(*hour, totals);
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_fields_read_as_totals() {
        let fields = Value::Array(vec![
            Value::from("calls"),
            Value::from("3"),
            Value::from("turn_relay_bytes"),
            Value::Integer(9),
            Value::from("from_a_newer_node"),
            Value::from("1"),
        ]);
        let totals = read_totals(fields).unwrap().unwrap();
        assert_eq!((totals.calls, totals.turn_relay_bytes), (3, 9));
        assert_eq!(read_totals(Value::Array(Vec::new())).unwrap(), None);
        assert!(read_totals(Value::Array(vec![Value::from("calls")])).is_err());
    }
}
