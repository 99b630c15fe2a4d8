//! Bindings in Redis, shared by every node of a deployment: one string key per binding,
//! `P:bind:<group>:<peer>:<client>` (ids escaped), holding the credential, expiring
//! [`KEEP_EXPIRED_SECS`] after the token does.

use std::net::IpAddr;

use super::connection::RedisConnection;
use super::keys::escape_into;
use super::scripts::{GetBinding, PutBinding};
use crate::store::{BindingKey, BindingStore, BoxFuture, StoreError, KEEP_EXPIRED_SECS};

/// The [`BindingStore`] of a deployment on Redis.
#[derive(Debug, Clone)]
pub struct RedisBindings {
    connection: RedisConnection,
    prefix: String,
}

impl RedisBindings {
    /// Bindings under `key_prefix` (`store.key_prefix`) on `connection`.
    pub fn new(connection: RedisConnection, key_prefix: &str) -> Self {
        RedisBindings {
            connection,
            prefix: format!("{key_prefix}:bind:"),
        }
    }

    fn key(&self, key: BindingKey<'_>) -> String {
        let mut out = self.prefix.clone();
        escape_into(&mut out, key.group);
        out.push(':');
        escape_into(&mut out, key.peer);
        out.push(':');
        match key.client {
            IpAddr::V4(ip) => out.push_str(&ip.to_string()),
            // `:` is the separator: write an IPv6 address as its 32 hex digits.
            IpAddr::V6(ip) => out.push_str(&format!("{:032x}", ip.to_bits())),
        }
        out
    }
}

impl BindingStore for RedisBindings {
    fn put<'a>(
        &'a self,
        key: BindingKey<'a>,
        credential: &'a str,
        valid_until: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let keep = valid_until.saturating_add(KEEP_EXPIRED_SECS);
            if keep <= now {
                // Already past keeping: nothing to store, and nothing older may be answered.
                return self
                    .connection
                    .run(PutBinding {
                        binding: self.key(key),
                        credential: String::new(),
                        keep_ms: 0,
                    })
                    .await
                    .map(drop);
            }
            self.connection
                .run(PutBinding {
                    binding: self.key(key),
                    credential: credential.to_owned(),
                    keep_ms: (keep - now).saturating_mul(1000),
                })
                .await
                .map(drop)
        })
    }

    fn get<'a>(
        &'a self,
        key: BindingKey<'a>,
        _now: u64,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            let got = self
                .connection
                .run(GetBinding {
                    binding: self.key(key),
                })
                .await?;
            Ok(Some(got.credential).filter(|c| !c.is_empty()))
        })
    }
}
