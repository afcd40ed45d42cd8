//! A token bucket for log lines a client can cause at will.

use std::time::Instant;

/// `per_sec` lines a second on average, `burst` at once; what it refuses it counts, and
/// the next line it lets through (or [`RateLimit::refilled`]) hands the count over, to
/// be said as one "N similar messages suppressed" line.
#[derive(Debug)]
pub struct RateLimit {
    per_sec: u32,
    burst: u32,
    tokens: f64,
    /// When tokens were last added; `None` until the first line (the bucket starts full).
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub const fn new(per_sec: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_sec,
            burst,
            tokens: 0.0,
            last: None,
            suppressed: 0,
        }
    }

    fn refill(&mut self, now: Instant) {
        let burst = f64::from(self.burst);
        self.tokens = match self.last {
            None => burst,
            Some(t) => {
                let earned =
                    now.saturating_duration_since(t).as_secs_f64() * f64::from(self.per_sec);
                (self.tokens + earned).min(burst)
            }
        };
        self.last = Some(now);
    }

    /// A line wants out at `now`: `Some(n)` lets it through, `n` being the lines
    /// suppressed since the last one let through (to report first); `None` suppresses
    /// it (and counts it).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Lines suppressed and not yet reported, once the bucket has a token again for
    /// the report (which takes it): for a flood that ended, so its count is not held
    /// until the next line.
    pub fn refilled(&mut self, now: Instant) -> Option<u64> {
        if self.suppressed == 0 {
            return None;
        }
        self.refill(now);
        if self.tokens < 1.0 {
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_and_the_rest_counted() {
        let mut r = RateLimit::new(10, 20);
        let t0 = Instant::now();
        // A flood of 2000 in one instant: the burst goes through, the rest is counted.
        let through = (0..2000).filter(|_| r.admit(t0).is_some()).count();
        assert_eq!(through, 20);
        assert_eq!(r.refilled(t0), None, "no token yet for the report");
        // 100 ms later one token: the report of the 1980 takes it.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.refilled(t1), Some(1980));
        assert_eq!(r.refilled(t1), None);
        // A second later, ten more lines, and the first of them reports nothing.
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(r.admit(t2), Some(0));
        assert_eq!((1..10).filter(|_| r.admit(t2).is_some()).count(), 9);
        assert_eq!(r.admit(t2), None);
        // The next line let through hands over the count of those refused meanwhile.
        let t3 = t2 + Duration::from_millis(150);
        assert_eq!(r.admit(t3), Some(1));
    }

    #[test]
    fn a_steady_flood_stays_at_the_rate() {
        let mut r = RateLimit::new(10, 20);
        let t0 = Instant::now();
        // 1000 lines a second for 10 s: 20 + 10 a second get out.
        let through = (0..10_000)
            .filter(|i| r.admit(t0 + Duration::from_millis(*i)).is_some())
            .count();
        assert!((115..=121).contains(&through), "{through}");
    }

    #[test]
    fn the_bucket_never_holds_more_than_the_burst() {
        let mut r = RateLimit::new(10, 20);
        let t0 = Instant::now();
        assert_eq!(r.admit(t0), Some(0));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| r.admit(later).is_some()).count(), 20);
    }
}
