//! The contract of [`RevocationStore`] as tests that every implementation runs.
//!
//! The factory gives a store for a namespace; called twice with one namespace it must give two
//! nodes on the same data (the same local store, or two Redis stores with one key prefix).
//! Times are the `now` the tests pass, never the wall clock, so the suite runs alike everywhere.

use std::sync::Arc;

use crate::revoke::{Revocation, RevocationTarget};
use crate::store::{BoxFuture, RevocationStore};

/// Builds a store (a node) for a namespace.
pub type Factory = Arc<dyn Fn(&str) -> Arc<dyn RevocationStore> + Send + Sync>;

/// A test of the suite.
pub type Test = fn(Factory) -> BoxFuture<'static, ()>;

/// A peer of the suite's project, for the suites' callers' own tests too.
pub fn peer(group: &str, peer: &str) -> RevocationTarget {
    RevocationTarget::Peer {
        project: "p".into(),
        group: group.into(),
        peer: peer.into(),
    }
}

fn token(project: &str, jti: &str) -> RevocationTarget {
    RevocationTarget::Token {
        project: project.into(),
        jti: jti.into(),
    }
}

/// A revocation is listed while it holds and not from its `until` on.
pub async fn a_put_is_in_force_until_its_time(f: Factory) {
    let s = f("until");
    let bob = Revocation::new(peer("g", "bob"), 2_000, 1_000);
    assert_eq!(s.put(&bob, 1_000).await.unwrap(), bob);
    assert_eq!(s.list(1_000).await.unwrap(), std::slice::from_ref(&bob));
    assert_eq!(s.list(1_999).await.unwrap(), [bob]);
    assert!(s.list(2_000).await.unwrap().is_empty());
    assert!(s.list(5_000).await.unwrap().is_empty());
}

/// A second revocation of one target never shortens the first; a longer one replaces it.
pub async fn a_longer_revocation_wins(f: Factory) {
    let s = f("longer");
    let first = Revocation::new(peer("g", "bob"), 2_000, 1_000);
    s.put(&first, 1_000).await.unwrap();
    let shorter = Revocation::new(peer("g", "bob"), 1_500, 1_100);
    assert_eq!(s.put(&shorter, 1_100).await.unwrap(), first);
    let same = Revocation::new(peer("g", "bob"), 2_000, 1_200);
    assert_eq!(
        s.put(&same, 1_200).await.unwrap(),
        first,
        "a tie keeps the one held"
    );
    assert_eq!(s.list(1_200).await.unwrap(), [first]);
    let longer = Revocation::new(peer("g", "bob"), 3_000, 1_300);
    assert_eq!(s.put(&longer, 1_300).await.unwrap(), longer);
    assert_eq!(s.list(2_500).await.unwrap(), [longer]);
}

/// A revocation that ran out is replaced by a new one, even a shorter one.
pub async fn a_new_revocation_replaces_one_that_ran_out(f: Factory) {
    let s = f("ran-out");
    s.put(&Revocation::new(token("p", "t"), 2_000, 1_000), 1_000)
        .await
        .unwrap();
    assert!(s.list(2_000).await.unwrap().is_empty());
    let again = Revocation::new(token("p", "t"), 2_100, 2_050);
    assert_eq!(s.put(&again, 2_050).await.unwrap(), again);
    assert_eq!(s.list(2_050).await.unwrap(), [again]);
}

/// The version changes with every put that changed what is held, and only then.
pub async fn the_version_follows_changes(f: Factory) {
    let s = f("version");
    let start = s.version().await.unwrap();
    assert_eq!(s.version().await.unwrap(), start, "reading changes nothing");
    s.put(&Revocation::new(peer("g", "bob"), 2_000, 1_000), 1_000)
        .await
        .unwrap();
    let one = s.version().await.unwrap();
    assert_ne!(one, start);
    s.put(&Revocation::new(peer("g", "bob"), 1_500, 1_000), 1_000)
        .await
        .unwrap();
    assert_eq!(
        s.version().await.unwrap(),
        one,
        "a put that loses changes nothing"
    );
    s.put(&Revocation::new(peer("g", "bob"), 2_500, 1_000), 1_000)
        .await
        .unwrap();
    let two = s.version().await.unwrap();
    assert_ne!(two, one);
    s.put(&Revocation::new(peer("g", "carol"), 2_500, 1_000), 1_000)
        .await
        .unwrap();
    assert_ne!(s.version().await.unwrap(), two);
}

/// Targets that differ in any field are apart, whatever characters their ids hold.
pub async fn targets_are_apart(f: Factory) {
    let s = f("apart");
    let all = [
        Revocation::new(peer("a:b", "c"), 2_000, 1),
        Revocation::new(peer("a", "b:c"), 2_000, 2),
        Revocation::new(peer("{x}", "é|%"), 2_000, 3),
        Revocation::new(token("p", "a:b"), 2_000, 4),
        Revocation::new(token("q", "a:b"), 2_000, 5),
        Revocation::new(token("p", "|2000|"), 2_000, 6),
    ];
    for r in &all {
        assert_eq!(&s.put(r, 1_000).await.unwrap(), r);
    }
    assert_eq!(s.list(1_000).await.unwrap(), all);
}

/// The list is ordered by creation time, then target.
pub async fn the_list_is_ordered_by_creation(f: Factory) {
    let s = f("order");
    let late = Revocation::new(peer("g", "a"), 2_000, 30);
    let early = Revocation::new(peer("g", "b"), 2_000, 10);
    let tie_peer = Revocation::new(peer("g", "c"), 2_000, 20);
    let tie_token = Revocation::new(token("p", "z"), 2_000, 20);
    for r in [&late, &early, &tie_peer, &tie_token] {
        s.put(r, 1_000).await.unwrap();
    }
    assert_eq!(
        s.list(1_000).await.unwrap(),
        [early, tie_token, tie_peer, late]
    );
}

/// What one node puts, every node of the store sees, with the rule applied across nodes.
pub async fn every_node_sees_every_put(f: Factory) {
    let a = f("nodes");
    let b = f("nodes");
    let before = b.version().await.unwrap();
    let first = Revocation::new(peer("g", "bob"), 2_000, 1_000);
    a.put(&first, 1_000).await.unwrap();
    assert_ne!(b.version().await.unwrap(), before);
    assert_eq!(b.list(1_000).await.unwrap(), std::slice::from_ref(&first));
    let shorter = Revocation::new(peer("g", "bob"), 1_500, 1_100);
    assert_eq!(b.put(&shorter, 1_100).await.unwrap(), first);
    assert_eq!(a.list(1_100).await.unwrap(), [first]);
    assert_eq!(a.version().await.unwrap(), b.version().await.unwrap());
}

/// Every test of the suite, by name.
pub fn all() -> Vec<(&'static str, Test)> {
    macro_rules! tests {
        ($($name:ident),* $(,)?) => {
            vec![$((stringify!($name), (|f| Box::pin($name(f))) as Test)),*]
        };
    }
    tests![
        a_put_is_in_force_until_its_time,
        a_longer_revocation_wins,
        a_new_revocation_replaces_one_that_ran_out,
        the_version_follows_changes,
        targets_are_apart,
        the_list_is_ordered_by_creation,
        every_node_sees_every_put,
    ]
}

/// Runs every test at once (each in its own task and namespace) and returns the names of the
/// failed ones with their panic messages.
pub async fn run_all(factory: Factory) -> Vec<String> {
    super::run_each(all(), factory).await
}
