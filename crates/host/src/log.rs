//! Keeping warnings about untrusted input from flooding the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Allows one event per second: for warnings a hostile peer could trigger at will (the host's
/// limits use it; so can the layers above).
///
/// ```
/// let limiter = p2pnet_host::RateLimiter::default();
/// if limiter.allow() {
///     // log the warning; further calls in this wall-clock second return false
/// }
/// ```
#[derive(Debug, Default)]
pub struct RateLimiter {
    last_second: AtomicU64,
}

impl RateLimiter {
    /// Whether a warning may be logged now.
    pub fn allow(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_second.load(Ordering::Relaxed);
        now != last
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
