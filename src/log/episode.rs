//! Conditions that come and go, said once as they start and once as they end: running
//! out of descriptors at accept (EMFILE, ENFILE) on any backend's thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An episode ends at the first success after this long without a failure, so a
/// descriptor count that hovers at the limit is one episode, not a line per accept.
const QUIET: Duration = Duration::from_secs(1);

/// One kind of episode, process-wide (descriptors are the process's): every thread
/// reports its failures and successes; one warning starts it, one ends it.
pub struct Episode {
    active: AtomicBool,
    /// Failures in this episode.
    hits: AtomicU64,
    /// Milliseconds since [`epoch`] of the episode's start and its last failure.
    started: AtomicU64,
    last_hit: AtomicU64,
}

/// Accepts refused (epoll sheds them) or deferred (io_uring rests) for want of a
/// descriptor.
pub static ACCEPT_EMFILE: Episode = Episode::new();

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Episode {
    pub const fn new() -> Episode {
        Episode {
            active: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            started: AtomicU64::new(0),
            last_hit: AtomicU64::new(0),
        }
    }

    /// An accept failed for want of a descriptor (`e`): the first of an episode warns.
    pub fn hit(&self, e: &std::io::Error) {
        if self.hit_at(now_ms()) {
            crate::log_warn!(
                "ringserve: accept: {e}: new connections are refused or wait until descriptors are free"
            );
        }
    }

    /// An accept succeeded: ends an episode that has been quiet long enough. One
    /// relaxed load when there is none.
    #[inline]
    pub fn ok(&self) {
        if self.active.load(Ordering::Relaxed) {
            if let Some((hits, ms)) = self.ok_at(now_ms()) {
                crate::log_warn!(
                    "ringserve: accept: descriptors available again after {hits} accepts refused or deferred in {:.1} s",
                    ms as f64 / 1000.0
                );
            }
        }
    }

    /// A failure at `now` (ms): true if it starts an episode.
    fn hit_at(&self, now: u64) -> bool {
        self.last_hit.store(now, Ordering::Relaxed);
        self.hits.fetch_add(1, Ordering::Relaxed);
        let starts = !self.active.swap(true, Ordering::AcqRel);
        if starts {
            self.started.store(now, Ordering::Relaxed);
        }
        starts
    }

    /// A success at `now` (ms): the failures and the length of an episode it ends.
    fn ok_at(&self, now: u64) -> Option<(u64, u64)> {
        let quiet = now.saturating_sub(self.last_hit.load(Ordering::Relaxed));
        if quiet < QUIET.as_millis() as u64 || !self.active.swap(false, Ordering::AcqRel) {
            return None;
        }
        let hits = self.hits.swap(0, Ordering::Relaxed);
        Some((
            hits,
            now.saturating_sub(self.started.load(Ordering::Relaxed)),
        ))
    }
}

impl Default for Episode {
    fn default() -> Self {
        Episode::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_start_and_one_end_however_many_failures() {
        let e = Episode::new();
        assert!(e.ok_at(0).is_none(), "no episode, nothing to end");
        assert!(e.hit_at(1000));
        for t in 1001..1500 {
            assert!(!e.hit_at(t));
            // Successes in between, while failures keep coming: still one episode.
            assert!(e.ok_at(t).is_none());
        }
        assert!(e.ok_at(2000).is_none(), "quiet for only 501 ms");
        assert_eq!(e.ok_at(2600), Some((500, 1600)));
        assert!(e.ok_at(2700).is_none(), "ended once");
        // The next episode starts afresh.
        assert!(e.hit_at(5000));
        assert_eq!(e.ok_at(6000), Some((1, 1000)));
    }
}
