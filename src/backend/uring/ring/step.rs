//! What a send step and a file-receive step share: at most a linked pair of SQEs (an
//! "in" side that fills, an "out" side that drains) whose results are judged together
//! once the last CQE is in, and the progress clock the tick holds against a timeout.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct StepState {
    /// CQEs of the step in flight not yet in.
    pending: u8,
    r_in: Option<i32>,
    r_out: Option<i32>,
    /// When bytes last moved.
    progress: Instant,
    /// The tick cancelled the step for want of progress.
    timed_out: bool,
}

/// A finished step's results.
pub(super) struct Done {
    pub r_in: Option<i32>,
    pub r_out: Option<i32>,
    pub timed_out: bool,
}

impl StepState {
    pub(super) fn new(now: Instant) -> StepState {
        StepState {
            pending: 0,
            r_in: None,
            r_out: None,
            progress: now,
            timed_out: false,
        }
    }

    /// A step of `n` SQEs went in.
    pub(super) fn start(&mut self, n: usize) {
        self.pending = n as u8;
    }

    /// Bytes moved outside a step (a send made on the ring thread).
    pub(super) fn moved(&mut self, now: Instant) {
        self.progress = now;
    }

    /// One CQE of the step; its results once it was the last.
    pub(super) fn record(&mut self, is_in: bool, res: i32, now: Instant) -> Option<Done> {
        *if is_in {
            &mut self.r_in
        } else {
            &mut self.r_out
        } = Some(res);
        self.pending = self.pending.saturating_sub(1);
        if self.pending > 0 {
            return None;
        }
        let (r_in, r_out) = (self.r_in.take(), self.r_out.take());
        if r_in.is_some_and(|n| n > 0) || r_out.is_some_and(|n| n > 0) {
            self.progress = now;
        }
        Some(Done {
            r_in,
            r_out,
            timed_out: std::mem::take(&mut self.timed_out),
        })
    }

    /// Whether the tick should cancel the step in flight now: it has moved nothing for
    /// `limit`. Marks it, so the cancel is asked once.
    pub(super) fn stalls(&mut self, now: Instant, limit: Duration) -> bool {
        let stalled =
            self.pending > 0 && !self.timed_out && now.duration_since(self.progress) >= limit;
        self.timed_out |= stalled;
        stalled
    }
}
