//! Time, injected: nothing in this crate reads the wall clock except [`SystemClock`].

use std::fmt;

/// A source of the current Unix time in whole seconds.
///
/// Minting and verification take their notion of "now" from a `Clock`, so tests, golden
/// vectors and hosts without a system clock (WebAssembly) can supply their own.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch, rounded down.
    fn now_unix(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        // A clock set before 1970 reads as the epoch rather than failing: every token minted
        // then is simply already expired, which is the safe direction.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock stopped at one instant; for tests and reproducible tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now_unix(&self) -> u64 {
        self.0
    }
}

impl<F: Fn() -> u64 + Send + Sync> Clock for F {
    fn now_unix(&self) -> u64 {
        self()
    }
}

/// Shared, type-erased clock held by [`crate::AccessToken`] and [`crate::Verifier`].
pub(crate) type DynClock = std::sync::Arc<dyn Clock>;

pub(crate) struct ClockDebug;

impl fmt::Debug for ClockDebug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}
