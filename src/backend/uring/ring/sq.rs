//! The submit edge: queueing SQEs, whole chains at a time, and the ring's own
//! operations (the tick, the wakeup READ, cancellations).

use super::user_data::{self, Op};
use super::Io;
use crate::conn::Key;
use crate::proto::ProtocolFactory;
use crate::stats::Stats;
use io_uring::{opcode, squeue, types};
use std::os::fd::{AsFd, AsRawFd};

impl<F: ProtocolFactory> Io<'_, F> {
    /// Queues SQEs that must be submitted together (a link chain). When the submission
    /// queue has no room even after a submit (the kernel answers EBUSY while its
    /// completion backlog is full), the group waits, whole and in order, in `backlog`
    /// until the next loop turn has reaped: never a spin, never a split chain.
    ///
    /// # Safety
    /// Everything the entries point at (buffers, paths, msghdrs, timespecs) and every
    /// descriptor they name must stay valid until their completions arrive: the rule
    /// of `lifecycle.rs`.
    pub(super) unsafe fn push(&mut self, entries: &[squeue::Entry]) {
        Stats::add(&self.st.sqes, entries.len() as u64);
        if self.backlog.is_empty() && self.sq_free() < entries.len() {
            let _ = self.ring.submit();
        }
        if self.backlog.is_empty() && self.sq_free() >= entries.len() {
            // SAFETY: forwarded to our caller; there is room (checked above).
            unsafe { self.push_now(entries) };
        } else {
            self.backlog.push_back(entries.to_vec());
        }
    }

    /// Whether `n` more entries would go straight into the submission queue.
    pub(super) fn has_room(&mut self, n: usize) -> bool {
        self.backlog.is_empty() && self.sq_free() >= n
    }

    /// Moves waiting groups into the submission queue while they fit.
    pub(super) fn flush_backlog(&mut self) {
        while let Some(len) = self.backlog.front().map(Vec::len) {
            if self.sq_free() < len {
                break;
            }
            let group = self.backlog.pop_front().expect("front exists");
            // SAFETY: the group's memory is owned as when `push` accepted it, and the
            // connection it names keeps its `ops` bits until the completions arrive.
            unsafe { self.push_now(&group) };
        }
    }

    fn sq_free(&mut self) -> usize {
        let sq = self.ring.submission();
        sq.capacity() - sq.len()
    }

    /// # Safety
    /// As [`Io::push`], and the queue must have room for every entry.
    unsafe fn push_now(&mut self, entries: &[squeue::Entry]) {
        // SAFETY: forwarded to our caller. `push_multiple` is all or nothing, so a
        // chain is never split; room was checked by the caller.
        let pushed = unsafe { self.ring.submission().push_multiple(entries) };
        debug_assert!(pushed.is_ok(), "no room for a checked push");
        if pushed.is_ok() {
            self.inflight += entries.len();
        }
    }

    pub(super) fn arm_tick(&mut self) {
        let e = opcode::Timeout::new(&*self.tick_ts)
            .build()
            .user_data(user_data::TICK);
        // SAFETY: the timespec is boxed in `self` (which outlives every operation, see
        // lifecycle.rs); the kernel also copies it when it takes the SQE.
        unsafe { self.push(&[e]) };
    }

    pub(super) fn arm_wake(&mut self) {
        let buf: *mut u64 = &mut *self.wake_buf;
        let efd = self.inbox.efd().as_fd().as_raw_fd();
        let e = opcode::Read::new(types::Fd(efd), buf.cast(), 8)
            .build()
            .user_data(user_data::WAKE_READ);
        // SAFETY: the 8-byte buffer is boxed in `self`, the eventfd lives in the inbox
        // that outlives this ring; both outlive every operation (lifecycle.rs).
        unsafe { self.push(&[e]) };
    }

    /// ASYNC_CANCEL of the operation with user_data `ud`.
    pub(super) fn cancel(&mut self, ud: u64) {
        let e = opcode::AsyncCancel::new(ud)
            .build()
            .user_data(user_data::CANCEL);
        // SAFETY: ASYNC_CANCEL points at no memory.
        unsafe { self.push(&[e]) };
    }

    /// Cancels each kind of operation in `ops` that names `key`.
    pub(super) fn cancel_all(&mut self, key: Key, ops: u32) {
        for op in Op::ALL {
            if ops & op.bit() != 0 {
                self.cancel(op.ud(key.to_u64()));
            }
        }
    }
}
