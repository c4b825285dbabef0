//! Keeping warnings about untrusted input from flooding the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Allows one event per second; used for warnings a hostile peer could trigger at will.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    last_second: AtomicU64,
}

impl RateLimiter {
    /// Whether a warning may be logged now.
    pub(crate) fn allow(&self) -> bool {
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
