//! The per-peer call rate: a keyed GCRA limiter, apart from the token cache, so that turning the
//! cache off (or a peer minting a fresh token per call) does not turn rate limiting off.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Forget peers idle long enough to have a full bucket again, once per this many calls, so the
/// limiter's memory follows the active peers.
const PRUNE_EVERY: u64 = 4096;

/// Who is limited: a peer of a project, whichever token it presents.
pub(crate) type PeerKey = (Arc<str>, Arc<str>, Arc<str>);

pub(crate) struct CallLimiter {
    limiter: DefaultKeyedRateLimiter<PeerKey>,
    calls: AtomicU64,
}

impl CallLimiter {
    /// `rate` calls per second sustained, `burst` at once; both are validated positive by the
    /// config, and 1 is used should either be 0.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_second(NonZeroU32::new(rate).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        CallLimiter {
            limiter: RateLimiter::keyed(quota),
            calls: AtomicU64::new(0),
        }
    }

    /// Takes one call from `peer`'s budget; `false` when it is spent.
    pub(crate) fn take(&self, peer: &PeerKey) -> bool {
        if self.calls.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(peer).is_ok()
    }

    /// Peers with a budget in use.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(peer: &str) -> PeerKey {
        (Arc::from("p"), Arc::from("g"), Arc::from(peer))
    }

    #[test]
    fn each_peer_has_its_own_burst() {
        let limiter = CallLimiter::new(1, 3);
        for _ in 0..3 {
            assert!(limiter.take(&key("a")));
        }
        assert!(!limiter.take(&key("a")));
        assert!(limiter.take(&key("b")));
        // The same peer in another project has its own budget too.
        assert!(limiter.take(&(Arc::from("q"), Arc::from("g"), Arc::from("a"))));
        assert_eq!(limiter.tracked(), 3);
    }
}
