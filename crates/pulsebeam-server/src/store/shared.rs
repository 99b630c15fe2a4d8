//! What nodes sharing a store share besides mail: revocations and usage totals.
//!
//! A store that several nodes share ([`RedisStore`]) offers [`SharedState`] through
//! [`MailboxStore::shared`](super::MailboxStore::shared); the server then keeps its revocations
//! there (every node reads them again within half a second of a change) and adds its hourly
//! usage totals there (so the admin API answers for the whole deployment). A store for one
//! node has none, and the server keeps both itself.
//!
//! Redis keys (all of one kind in one hash slot): `P:{rev}:all` (hash: revocation target ->
//! `until|json`), `P:{rev}:version` (bumped on every change), `P:{u:<project>}:<hour>` (hash of
//! usage fields, expiring after a week).

use std::collections::BTreeMap;

use fred::interfaces::KeysInterface as _;
use fred::types::scripts::Script;
use fred::types::Value;

use super::redis::RedisStore;
use super::{BoxFuture, StoreError};
use crate::revoke::Revocation;
use crate::usage::UsageTotals;

/// Hourly totals are kept this long in the shared store.
const USAGE_TTL_SECS: u64 = 8 * 24 * 3600;

/// Revocations and usage totals shared by every node of a deployment.
pub trait SharedState: Send + Sync {
    /// Stores `revocation` unless one of the same target already holds longer; returns the
    /// one in force.
    fn put_revocation<'a>(
        &'a self,
        revocation: &'a Revocation,
    ) -> BoxFuture<'a, Result<Revocation, StoreError>>;

    /// A number that changes whenever the revocations change.
    fn revocations_version(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// The revocations holding at `now` (those run out are dropped from the store).
    fn revocations(&self, now: u64) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>>;

    /// Adds `totals` (by hour and project) to the shared totals.
    fn add_usage<'a>(
        &'a self,
        totals: &'a BTreeMap<(u64, std::sync::Arc<str>), UsageTotals>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// `project`'s totals for `hours` (Unix seconds of whole hours), summed over every node.
    fn usage<'a>(
        &'a self,
        project: &'a str,
        hours: &'a [u64],
    ) -> BoxFuture<'a, Result<BTreeMap<u64, UsageTotals>, StoreError>>;
}

const PUT_REVOCATION: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local u = tonumber(string.match(cur, '^(%d+)|'))
  if u and u >= tonumber(ARGV[3]) then return cur end
end
local value = ARGV[3] .. '|' .. ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], value)
redis.call('INCR', KEYS[2])
return value
";

const LOAD_REVOCATIONS: &str = r"
local all = redis.call('HGETALL', KEYS[1])
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #all, 2 do
  local value = all[i + 1]
  local u = tonumber(string.match(value, '^(%d+)|'))
  if u and u > now then
    out[#out + 1] = value
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
";

const ADD_USAGE: &str = r"
for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
";

const READ_USAGE: &str = r"
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
";

/// The scripts, compiled once per store.
pub(super) struct SharedScripts {
    put_revocation: Script,
    load_revocations: Script,
    add_usage: Script,
    read_usage: Script,
}

impl SharedScripts {
    pub(super) fn new() -> Self {
        SharedScripts {
            put_revocation: Script::from_lua(PUT_REVOCATION),
            load_revocations: Script::from_lua(LOAD_REVOCATIONS),
            add_usage: Script::from_lua(ADD_USAGE),
            read_usage: Script::from_lua(READ_USAGE),
        }
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis holds a {what} this node cannot read"))
}

/// `until|json` as the scripts store it.
fn parse_revocation(value: &Value) -> Result<Revocation, StoreError> {
    let text = value.as_str().ok_or_else(|| corrupt("revocation"))?;
    let (_, json) = text.split_once('|').ok_or_else(|| corrupt("revocation"))?;
    serde_json::from_str(json).map_err(|_| corrupt("revocation"))
}

impl RedisStore {
    fn rev_keys(&self) -> (String, String) {
        let prefix = self.key_prefix();
        (
            format!("{prefix}:{{rev}}:all"),
            format!("{prefix}:{{rev}}:version"),
        )
    }

    fn usage_key(&self, project: &str, hour: u64) -> String {
        let mut tag = String::from("{u:");
        super::redis::escape_into(&mut tag, project);
        tag.push('}');
        format!("{}:{tag}:{hour}", self.key_prefix())
    }
}

impl SharedState for RedisStore {
    fn put_revocation<'a>(
        &'a self,
        revocation: &'a Revocation,
    ) -> BoxFuture<'a, Result<Revocation, StoreError>> {
        Box::pin(async move {
            let (all, version) = self.rev_keys();
            let field = serde_json::to_string(&revocation.target)
                .map_err(|_| corrupt("revocation target"))?;
            let json = serde_json::to_string(revocation).map_err(|_| corrupt("revocation"))?;
            let args: Vec<Value> = vec![
                field.into(),
                json.into(),
                revocation.until.to_string().into(),
            ];
            let reply = self
                .eval_keys(
                    &self.shared_scripts().put_revocation,
                    vec![all, version],
                    args,
                )
                .await?;
            parse_revocation(&reply)
        })
    }

    fn revocations_version(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let (_, version) = self.rev_keys();
            let client = self.client().await;
            let value: Option<u64> =
                tokio::time::timeout(super::redis::COMMAND_TIMEOUT, client.get(version.as_str()))
                    .await
                    .map_err(|_| StoreError::Unavailable("redis did not answer in time".into()))?
                    .map_err(|e| super::redis::unavailable(&e))?;
            Ok(value.unwrap_or(0))
        })
    }

    fn revocations(&self, now: u64) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>> {
        Box::pin(async move {
            let (all, _) = self.rev_keys();
            let reply = self
                .eval_keys(
                    &self.shared_scripts().load_revocations,
                    vec![all],
                    vec![now.to_string().into()],
                )
                .await?;
            reply.into_array().iter().map(parse_revocation).collect()
        })
    }

    fn add_usage<'a>(
        &'a self,
        totals: &'a BTreeMap<(u64, std::sync::Arc<str>), UsageTotals>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            for ((hour, project), t) in totals {
                let mut args: Vec<Value> = vec![USAGE_TTL_SECS.to_string().into()];
                for (name, value) in t.fields() {
                    if value > 0 {
                        args.push(name.into());
                        args.push(value.to_string().into());
                    }
                }
                if args.len() > 1 {
                    self.eval_keys(
                        &self.shared_scripts().add_usage,
                        vec![self.usage_key(project, *hour)],
                        args,
                    )
                    .await?;
                }
            }
            Ok(())
        })
    }

    fn usage<'a>(
        &'a self,
        project: &'a str,
        hours: &'a [u64],
    ) -> BoxFuture<'a, Result<BTreeMap<u64, UsageTotals>, StoreError>> {
        Box::pin(async move {
            let keys: Vec<String> = hours.iter().map(|h| self.usage_key(project, *h)).collect();
            if keys.is_empty() {
                return Ok(BTreeMap::new());
            }
            let reply = self
                .eval_keys(&self.shared_scripts().read_usage, keys, Vec::new())
                .await?;
            let mut out = BTreeMap::new();
            for (hour, fields) in hours.iter().zip(reply.into_array()) {
                let fields = fields.into_array();
                if fields.is_empty() {
                    continue;
                }
                let mut totals = UsageTotals::default();
                for pair in fields.chunks(2) {
                    if let [name, value] = pair {
                        let value = value
                            .as_str()
                            .and_then(|v| v.parse::<u64>().ok())
                            .or_else(|| value.as_u64())
                            .unwrap_or(0);
                        if let Some(name) = name.as_str() {
                            totals.set(&name, value);
                        }
                    }
                }
                out.insert(*hour, totals);
            }
            Ok(out)
        })
    }
}
