//! The one Redis setting the store depends on: `maxmemory-policy`. Under any policy but
//! `noeviction`, Redis may evict a peer's keys when memory runs short, and with them mail it has
//! already accepted; the store keeps its order then (see the module docs), but not the mail. A
//! node says so once at start, in its log; it does not refuse to run.

use super::connection::RedisConnection;
use crate::store::StoreError;

/// The policy under which Redis never evicts a key.
const SAFE: &str = "noeviction";

/// What the log should say about the policy Redis answered, or `None` when all is well.
pub(crate) fn eviction_warning(policy: &Result<Option<String>, StoreError>) -> Option<String> {
    match policy {
        Ok(Some(policy)) if policy == SAFE => None,
        Ok(Some(policy)) => Some(format!(
            "redis maxmemory-policy is {policy}: when Redis runs short of memory it may evict \
             mailboxes and lose accepted messages; set maxmemory-policy {SAFE}"
        )),
        Ok(None) => Some(format!(
            "redis has no maxmemory-policy setting; make sure it cannot evict keys \
             ({SAFE}), or accepted messages may be lost"
        )),
        Err(err) => Some(format!(
            "cannot read redis's maxmemory-policy ({err}); managed services often refuse CONFIG: \
             make sure its policy is {SAFE}, or accepted messages may be lost when it runs short \
             of memory"
        )),
    }
}

/// Reads the policy once Redis answers and logs a warning unless it is `noeviction`.
pub(crate) async fn warn_unless_noeviction(connection: RedisConnection) {
    // A Redis not reachable yet is not one that refuses CONFIG: wait for it.
    while connection.ping().await.is_err() {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let policy = connection.config_get("maxmemory-policy").await;
    if let Some(warning) = eviction_warning(&policy) {
        tracing::warn!("{warning}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_noeviction_is_quiet_and_a_refusal_is_not_an_error() {
        assert_eq!(eviction_warning(&Ok(Some("noeviction".into()))), None);
        let lru = eviction_warning(&Ok(Some("allkeys-lru".into()))).unwrap();
        assert!(lru.contains("allkeys-lru") && lru.contains("set maxmemory-policy noeviction"));
        let refused = eviction_warning(&Err(StoreError::Unavailable(
            "redis: ERR unknown command 'CONFIG'".into(),
        )))
        .unwrap();
        assert!(refused.contains("refuse CONFIG") && refused.contains("noeviction"));
        assert!(eviction_warning(&Ok(None)).unwrap().contains("noeviction"));
    }

    /// Against the test Redis of `scripts/redis.sh`, when its URL is set: the setting is read
    /// (its default is `noeviction`), and an unknown one is `None`.
    #[tokio::test]
    async fn the_policy_is_read_from_redis() {
        let Ok(url) = std::env::var("PULSEBEAM_TEST_REDIS_URL") else {
            eprintln!("SKIP the_policy_is_read_from_redis: PULSEBEAM_TEST_REDIS_URL is not set");
            return;
        };
        let connection = RedisConnection::from_url(&url).unwrap();
        let policy = connection.config_get("maxmemory-policy").await;
        assert_eq!(policy, Ok(Some(SAFE.to_owned())));
        assert_eq!(eviction_warning(&policy), None);
        assert_eq!(connection.config_get("no-such-setting").await, Ok(None));
    }
}
