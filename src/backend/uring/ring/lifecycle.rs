//! How a ring's connections and operations end: the tick (deadlines), close requests,
//! shutdown, retiring a connection, and tearing the ring down.
//!
//! # The in-flight ownership rule
//!
//! **Every SQE's memory and descriptors are owned by its connection, or by the ring
//! (`Io`), until its last CQE has been reaped.** A connection's buffers, msghdr,
//! iovecs, open_how, path, statx buffer, pipes and files live in boxes it owns
//! (`Conn`, `Sending`, `Opening`, `Receiving`); the ring's own (the timespecs, the
//! eventfd buffer, the provided-buffer ring, the listeners) live in `Io`. Every `unsafe`
//! push states which of these an SQE points at and leans on this rule for the rest.
//! The rule holds on every exit path:
//!
//! - **A connection** leaves the table only in [`Io::retire`], which runs only when its
//!   `ops` bits (one per operation kind in the kernel) are all clear. Closing first
//!   cancels what is in flight (ASYNC_CANCEL, repeated each tick for operations that
//!   were still in the SQ backlog) and waits for the completions.
//! - **A panic** in the protocol or the driver is caught per connection; the
//!   connection is closed through the same path (cancel, wait, retire). A provided
//!   buffer is recycled before the panic goes on (`recv.rs`).
//! - **The loop ending** for any reason (shutdown, `io_uring_enter` failing, a panic
//!   outside the per-connection catch) runs [`Io::teardown`] before `conns` or `Io` is
//!   dropped: it cancels every connection's and the ring's own operations and reaps
//!   until nothing is in flight (`Io::inflight` counts SQEs handed to the kernel whose
//!   last CQE has not come), each wait bounded by a TIMEOUT. If after
//!   [`TEARDOWN_LIMIT`] something is still in the kernel, the memory it may touch is
//!   leaked, never freed: the table, the buffer ring and the boxes are forgotten.
//! - Only then does `Io` drop, `ring` first (field order), then the memory.
//!
//! Entries still waiting in the SQ backlog never reached the kernel and own nothing
//! there: teardown discards them. (A CLOSE is never backlogged: `send.rs` closes the
//! descriptor itself when the queue is full.)

use super::user_data::{self, Op};
use super::{Conns, Io};
use crate::backend::{close_socket, driver, CloseReason, ShutdownLevel};
use crate::conn::Key;
use crate::proto::ProtocolFactory;
use crate::stats::Stats;
use io_uring::{cqueue, opcode};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Each teardown wait is bounded by a TIMEOUT of this long.
pub(super) const TEARDOWN_STEP: Duration = Duration::from_millis(100);
/// How long teardown waits in all for the kernel to give operations back.
pub(super) const TEARDOWN_LIMIT: Duration = Duration::from_secs(2);

impl<F: ProtocolFactory> Io<'_, F> {
    /// Every [`super::TICK`]: receive and send deadlines, accept back-off, the shutdown
    /// deadline, and receives that ran out of buffers.
    pub(super) fn tick(&mut self, conns: &mut Conns<F::Proto>) {
        self.arm_tick();
        self.pipes.trim();
        let now = Instant::now();
        self.open_cache.sweep(now);
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
            for li in 0..self.listeners.len() {
                self.arm_accept(li);
            }
        }
        self.rearm_stranded();
        // Receives that found no buffer try again at least once a tick.
        self.ready.append(&mut self.starved);
        let hard_stop = self.stop_deadline.is_some_and(|d| d <= now);
        let send_timeout = self.sh.ctx.cfg.send_timeout;
        for (key, conn) in conns.iter_mut() {
            if hard_stop {
                if conn.closing.is_none() {
                    conn.closing = Some(CloseReason::Shutdown);
                    conn.cut = conn.send.is_some();
                }
                self.ready.push(key);
            } else if conn.closing.is_some() && conn.ops != 0 {
                // Cancel again: an operation that entered the kernel after the first
                // cancel (from the backlog) must not pin the connection.
                conn.cancelled = false;
                self.ready.push(key);
            } else if let Some(st) = conn.send.as_mut() {
                // Promise 2's bound: a send step that moved nothing for send_timeout is
                // cancelled; the step's CQEs then close the connection.
                if st.step.stalls(now, send_timeout) {
                    self.cancel_all(key, conn.ops & Op::SEND_STEP);
                }
            } else if let Some(super::Job::Sink(rx)) = &mut conn.job {
                // The body timeout: no byte for that long ends the receive.
                if rx.step.stalls(now, rx.timeout) {
                    self.cancel_all(key, conn.ops & Op::SINK_STEP);
                }
            } else if conn.ops & Op::Recv.bit() != 0
                && !conn.recv_timed_out
                && conn
                    .core
                    .recv_deadline(&self.timeouts)
                    .is_some_and(|d| d <= now)
            {
                conn.recv_timed_out = true;
                self.cancel(Op::Recv.ud(key.to_u64()));
            }
        }
    }

    /// [`Control::close`](crate::Control::close), decided by the driver: a connection
    /// waiting for a request closes now, one with a request in hand after its response
    /// is sent. A retired key is dropped and counted.
    pub(super) fn close_asked(&mut self, conns: &mut Conns<F::Proto>, key: Key) {
        let Some(conn) = conns.get_mut(key) else {
            Stats::add(&self.st.stale_dropped, 1);
            return;
        };
        if conn.core.ask_close() {
            conn.closing.get_or_insert(CloseReason::Requested);
        }
        self.ready.push(key);
    }

    /// Stop accepting; close connections waiting for a request; let the ones answering
    /// one finish until the shutdown timeout (the tick enforces it), or stop now.
    pub(super) fn shutdown(&mut self, conns: &mut Conns<F::Proto>, level: ShutdownLevel) {
        let now = Instant::now();
        if !self.draining {
            self.draining = true;
            // A hand-off's listeners are the successor's too: shutting one would close
            // it for both, so it is only no longer accepted on.
            self.handoff = self.sh.ctx.control.handing_off();
            let shared = self.sh.ctx.control.listeners_shared();
            self.stop_deadline = Some(now + self.sh.ctx.cfg.shutdown_timeout);
            for li in 0..self.listeners.len() {
                if !shared {
                    let _ = crate::sys::net::shutdown(self.listeners[li].fd(), libc::SHUT_RD);
                }
                if self.accepting[li] {
                    self.cancel(user_data::accept(li));
                }
            }
            for (key, conn) in conns.iter_mut() {
                if conn.closing.is_none() && conn.core.closes_at_drain(self.handoff) {
                    conn.closing = Some(CloseReason::Shutdown);
                }
                self.ready.push(key);
            }
        }
        if level == ShutdownLevel::Immediate {
            self.stop_deadline = Some(now);
            for (key, conn) in conns.iter_mut() {
                if conn.closing.is_none() {
                    conn.closing = Some(CloseReason::Shutdown);
                    conn.cut = conn.send.is_some();
                }
                self.ready.push(key);
            }
        }
    }

    /// Removes a connection with nothing in flight and closes it, once.
    pub(super) fn retire(&mut self, conns: &mut Conns<F::Proto>, key: Key) {
        let Some(conn) = conns.remove(key).map(|c| *c) else {
            return;
        };
        debug_assert_eq!(conn.ops, 0, "retired with operations in flight");
        let why = conn.closing.unwrap_or(CloseReason::Done);
        if let Some(st) = conn.send {
            self.release(st);
        }
        let rx = match conn.job {
            Some(super::Job::Sink(rx)) => Some(rx),
            _ => None,
        };
        if let Some((pipe, empty)) = rx.and_then(|rx| rx.into_pipe()) {
            self.pipes.give(pipe, empty);
        }
        for input in conn.parked.into_inputs() {
            if let (super::Input::Data(Some(bid), _), Some(b)) = (input, self.bufs.as_mut()) {
                b.recycle(bid);
                self.recycled = true;
            }
        }
        close_socket(conn.fd, why, conn.cut);
        driver::retire(&self.sh.ctx, &self.st, key, conn.core.peer(), why);
    }

    /// Ends the ring whatever way its loop ended: cancels every operation in the kernel
    /// (the connections' and the ring's own), reaps until none is left, each wait
    /// bounded, then closes what connections remain. See the module's rule.
    pub(super) fn teardown(&mut self, conns: &mut Conns<F::Proto>) {
        self.tearing_down = true;
        self.inbox.set_ring_fd(-1);
        // Never submitted: they hold nothing in the kernel.
        self.backlog.clear();
        self.cancel(user_data::TICK);
        self.cancel(user_data::WAKE_READ);
        for li in 0..self.listeners.len() {
            if self.accepting[li] {
                self.cancel(user_data::accept(li));
            }
        }
        let keys: Vec<(Key, u32)> = conns.iter_mut().map(|(k, c)| (k, c.ops)).collect();
        for (key, ops) in keys {
            self.cancel_all(key, ops);
        }
        let limit = Instant::now() + TEARDOWN_LIMIT;
        let mut timer = false;
        while self.inflight > 0 && Instant::now() < limit {
            if !timer && self.has_room(1) {
                let e = opcode::Timeout::new(&*self.teardown_ts)
                    .build()
                    .user_data(user_data::TEARDOWN);
                // SAFETY: the timespec is boxed in `self`, which outlives this wait
                // (it is leaked below if the kernel keeps anything).
                unsafe { self.push(&[e]) };
                timer = true;
            }
            self.flush_backlog();
            if let Err(e) = self.enter() {
                crate::log_error!("ringserve: ring {}: teardown: io_uring_enter: {e}", self.me);
                break;
            }
            let done: Vec<(u64, i32, u32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .collect();
            for (ud, res, flags) in done {
                if ud != user_data::WAKE_MSG && !cqueue::more(flags) {
                    self.inflight = self.inflight.saturating_sub(1);
                }
                if ud == user_data::TEARDOWN {
                    timer = false;
                }
                let (op, low) = Op::of(ud);
                if res >= 0 && matches!(op, Some(Op::Accept | Op::Open)) {
                    // SAFETY: a late accept's or open's descriptor is ours to close.
                    drop(unsafe { OwnedFd::from_raw_fd(res) });
                }
                if let Some((_, conn)) = super::user_data::lookup(conns, low) {
                    if !(op == Some(Op::Recv) && cqueue::more(flags)) {
                        conn.ops &= op.map_or(0, |o| !o.bit());
                    }
                }
            }
        }
        if self.inflight > 0 {
            // Something the kernel may still write into: leak it rather than free it.
            crate::log_warn!(
                "ringserve: ring {}: {} operations still in the kernel after {:?}; leaking their memory",
                self.me,
                self.inflight,
                TEARDOWN_LIMIT
            );
            let all = std::mem::replace(conns, crate::conn::ConnTable::with_capacity(0));
            std::mem::forget(all);
            std::mem::forget(self.bufs.take());
            std::mem::forget(std::mem::replace(
                &mut self.tick_ts,
                Box::new(TEARDOWN_STEP.into()),
            ));
            std::mem::forget(std::mem::replace(
                &mut self.teardown_ts,
                Box::new(TEARDOWN_STEP.into()),
            ));
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
            return;
        }
        // Nothing is in flight: connections still here (the loop ended early) close
        // now, with their accounting and hooks.
        let keys: Vec<Key> = conns.iter_mut().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(conn) = conns.get_mut(key) {
                conn.ops = 0;
                conn.closing
                    .get_or_insert(CloseReason::Error(io::ErrorKind::Other));
            }
            self.retire(conns, key);
        }
        if let Some(b) = &self.bufs {
            b.unregister(&self.ring);
        }
    }
}
