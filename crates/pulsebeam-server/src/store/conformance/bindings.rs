//! The contract of [`BindingStore`] as tests that every implementation runs.
//!
//! The factory gives a store for a namespace; called twice with one namespace it must give two
//! nodes on the same data.

use std::net::IpAddr;
use std::sync::Arc;

use crate::store::{BindingKey, BindingStore, BoxFuture, KEEP_EXPIRED_SECS};

/// Builds a store (a node) for a namespace.
pub type Factory = Arc<dyn Fn(&str) -> Arc<dyn BindingStore> + Send + Sync>;

/// A test of the suite.
pub type Test = fn(Factory) -> BoxFuture<'static, ()>;

const NOW: u64 = 1_800_000_000;

fn key<'a>(group: &'a str, peer: &'a str, client: &str) -> BindingKey<'a> {
    BindingKey {
        group,
        peer,
        client: client
            .parse::<IpAddr>()
            .unwrap_or(IpAddr::from([0, 0, 0, 0])),
    }
}

/// A binding made on one node is read on another, and a later one replaces it.
pub async fn a_binding_is_shared_and_the_latest_wins(f: Factory) {
    let a = f("shared");
    let b = f("shared");
    let k = key("room", "bob", "203.0.113.7");
    assert_eq!(b.get(k, NOW).await.unwrap(), None);
    a.put(k, "Bearer one", NOW + 60, NOW).await.unwrap();
    assert_eq!(b.get(k, NOW).await.unwrap().as_deref(), Some("Bearer one"));
    b.put(k, "Bearer two", NOW + 120, NOW).await.unwrap();
    assert_eq!(a.get(k, NOW).await.unwrap().as_deref(), Some("Bearer two"));
}

/// Keys that differ in group, peer or client never meet, ids with separators and braces
/// included.
pub async fn keys_that_differ_never_meet(f: Factory) {
    let s = f("apart");
    let keys = [
        key("a:b", "c", "192.0.2.1"),
        key("a", "b:c", "192.0.2.1"),
        key("a", "b", "192.0.2.1"),
        key("a", "b", "192.0.2.2"),
        key("a", "b", "2001:db8::"),
        key("{x}", "%y é", "192.0.2.1"),
    ];
    for (i, k) in keys.iter().enumerate() {
        s.put(*k, &format!("Bearer {i}"), NOW + 60, NOW)
            .await
            .unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(s.get(*k, NOW).await.unwrap(), Some(format!("Bearer {i}")));
    }
}

/// An expired binding is still answered for [`KEEP_EXPIRED_SECS`] after its token expired
/// (its client is then told the token expired), one that expired longer ago is not.
pub async fn an_expired_binding_is_kept_a_while(f: Factory) {
    let s = f("expired");
    let recent = key("room", "recent", "198.51.100.1");
    s.put(recent, "Bearer recent", NOW - KEEP_EXPIRED_SECS / 2, NOW)
        .await
        .unwrap();
    assert_eq!(
        s.get(recent, NOW).await.unwrap().as_deref(),
        Some("Bearer recent")
    );
    let gone = key("room", "gone", "198.51.100.1");
    s.put(gone, "Bearer gone", NOW - 2 * KEEP_EXPIRED_SECS, NOW)
        .await
        .unwrap();
    assert_eq!(s.get(gone, NOW).await.unwrap(), None);
}

/// Every test of the suite, by name.
pub fn all() -> Vec<(&'static str, Test)> {
    macro_rules! tests {
        ($($name:ident),* $(,)?) => {
            vec![$((stringify!($name), (|f| Box::pin($name(f))) as Test)),*]
        };
    }
    tests![
        a_binding_is_shared_and_the_latest_wins,
        keys_that_differ_never_meet,
        an_expired_binding_is_kept_a_while,
    ]
}

/// Runs every test at once (each in its own task and namespace) and returns the names of the
/// failed ones with their panic messages.
pub async fn run_all(factory: Factory) -> Vec<String> {
    super::run_each(all(), factory).await
}
