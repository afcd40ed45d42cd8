//! Receiving: a RECV from the provided-buffer ring (or a per-connection buffer held
//! only while the RECV is in flight), or one multishot receive per connection with
//! parked input; ENOBUFS waits for a recycled buffer or the tick.

use super::user_data::Op;
use super::{Conn, Io};
use crate::backend::CloseReason;
use crate::conn::Key;
use crate::proto::ProtocolFactory;
use crate::stats::Stats;
use io_uring::{cqueue, opcode, squeue, types};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// Receive buffer size, for the buffer ring and the per-connection fallback alike.
pub(super) const RECV_BUF: u32 = 4096;
/// A connection's own receive buffer (no buffer ring): a thin pointer in the `Conn`.
pub(super) type RecvBuf = Box<[u8; RECV_BUF as usize]>;
/// Multishot receive: data buffers a connection may hold while it sends, before its
/// receive is cancelled (a pipelining client must not drain the buffer ring).
const PARK_MAX: usize = 2;

/// What one receive completion brought.
#[derive(Debug)]
pub(super) enum Input {
    /// `len` bytes in provided buffer `bid`, or in `recv_buf` (`bid` None).
    Data(Option<u16>, usize),
    /// What was left of a parked buffer after a receive into a file took its share.
    Owned(Vec<u8>),
    Eof,
    Error(i32),
}

/// Multishot input held, in order, while the protocol is not asking. Most connections
/// never park anything, so the queue is boxed on first use (and kept): an idle
/// connection pays one word for it, not a `VecDeque`'s four.
#[derive(Default)]
#[allow(clippy::box_collection)] // the point: one word inline, not four
pub(super) struct Parked(Option<Box<VecDeque<Input>>>);

impl Parked {
    pub(super) fn is_empty(&self) -> bool {
        self.0.as_ref().map_or(true, |q| q.is_empty())
    }

    pub(super) fn pop_front(&mut self) -> Option<Input> {
        self.0.as_mut()?.pop_front()
    }

    pub(super) fn push_back(&mut self, input: Input) {
        self.0.get_or_insert_with(Box::default).push_back(input);
    }

    pub(super) fn push_front(&mut self, input: Input) {
        self.0.get_or_insert_with(Box::default).push_front(input);
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Input> {
        self.0.iter().flat_map(|q| q.iter())
    }

    /// Everything parked, for a connection's teardown.
    pub(super) fn into_inputs(self) -> impl Iterator<Item = Input> {
        self.0.into_iter().flat_map(|q| q.into_iter())
    }
}

impl<F: ProtocolFactory> Io<'_, F> {
    /// The protocol wants input. Parked input goes first (true: it was delivered, drive
    /// on); otherwise a receive is armed unless a multishot one still is (false).
    pub(super) fn arm_recv(&mut self, key: Key, conn: &mut Conn<F::Proto>) -> bool {
        conn.want_recv = true;
        if let Some(input) = conn.parked.pop_front() {
            self.deliver(conn, input);
            return true;
        }
        if conn.ops & Op::Recv.bit() != 0 {
            return false; // multishot, still armed
        }
        conn.starved = false;
        conn.recv_timed_out = false;
        let fd = types::Fd(conn.fd.as_raw_fd());
        conn.multishot = self.caps.multishot_recv && self.bufs.is_some();
        let e = match &self.bufs {
            Some(_) if conn.multishot => {
                opcode::RecvMulti::new(fd, super::super::bufs::BGID).build()
            }
            Some(b) => opcode::Recv::new(fd, std::ptr::null_mut(), b.size())
                .buf_group(super::super::bufs::BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT),
            None => {
                let buf = conn.recv_buf.get_or_insert_with(|| {
                    Stats::add(&self.st.recv_buf_allocs, 1);
                    Box::new([0u8; RECV_BUF as usize])
                });
                opcode::Recv::new(fd, buf.as_mut_ptr(), buf.len() as u32).build()
            }
        };
        // SAFETY: the buffer is the ring's provided group (registered until teardown has
        // drained every receive) or `recv_buf`, boxed in the connection, which stays in
        // the table until this CQE (for multishot, until the CQE without F_MORE: the
        // Recv bit stays set). The rule is lifecycle.rs's.
        unsafe { self.push(&[e.user_data(Op::Recv.ud(key.to_u64()))]) };
        conn.ops |= Op::Recv.bit();
        false
    }

    /// A receive completion: delivered to the protocol if it asked, parked otherwise
    /// (only a multishot receive completes while the protocol is not asking).
    pub(super) fn received(&mut self, key: Key, conn: &mut Conn<F::Proto>, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let ended = !cqueue::more(flags);
        let input = match res {
            n if n > 0 => Some(Input::Data(bid, n as usize)),
            0 => Some(Input::Eof),
            e if e == -libc::ENOBUFS => {
                // Every buffer is in use: wait for one to come back (or the tick), lose
                // nothing, and never re-arm in a loop.
                Stats::add(&self.st.recv_enobufs, 1);
                if conn.want_recv {
                    conn.starved = true;
                    self.starved.push(key);
                }
                None
            }
            e if e == -libc::ECANCELED && conn.recv_timed_out && conn.want_recv => {
                conn.want_recv = false;
                conn.core.timed_out(&self.st);
                None
            }
            e if e == -libc::ECANCELED => {
                // Paused (too much parked) or closing: arm again if input is wanted.
                conn.starved = conn.want_recv;
                if conn.starved {
                    self.starved.push(key);
                    self.recycled = true; // not for want of a buffer: retry this turn
                }
                None
            }
            e => Some(Input::Error(e)),
        };
        let Some(input) = input else {
            if !conn.multishot {
                conn.recv_buf = None;
            }
            return;
        };
        if conn.want_recv && conn.parked.is_empty() && !conn.has_sink() {
            self.deliver(conn, input);
        } else {
            Stats::add(&self.st.recv_parked, 1);
            conn.parked.push_back(input);
            let data = conn
                .parked
                .iter()
                .filter(|i| matches!(i, Input::Data(..)))
                .count();
            if data >= PARK_MAX && !ended && conn.multishot {
                Stats::add(&self.st.recv_paused, 1);
                self.cancel(Op::Recv.ud(key.to_u64()));
            }
        }
    }

    /// Hands one input to the driver and gives its buffer back, even if the protocol
    /// panics while it looks at the bytes (the panic then goes on to the connection's
    /// catch_unwind, which closes only this connection).
    pub(super) fn deliver(&mut self, conn: &mut Conn<F::Proto>, input: Input) {
        conn.want_recv = false;
        // A timeout cancel still on its way no longer means a timeout.
        conn.recv_timed_out = false;
        let now = self.now;
        match input {
            Input::Owned(v) => conn.core.recv(&v, now),
            Input::Data(bid, n) => {
                let r = catch_unwind(AssertUnwindSafe(|| {
                    match (bid, &self.bufs, &conn.recv_buf) {
                        (Some(bid), Some(b), _) => conn.core.recv(b.get(bid, n), now),
                        (None, _, Some(buf)) => conn.core.recv(&buf[..n.min(buf.len())], now),
                        _ => conn.closing = Some(CloseReason::Error(io::ErrorKind::InvalidData)),
                    }
                }));
                if let (Some(bid), Some(b)) = (bid, self.bufs.as_mut()) {
                    b.recycle(bid);
                    self.recycled = true;
                }
                if !conn.multishot {
                    conn.recv_buf = None;
                }
                if let Err(panic) = r {
                    resume_unwind(panic);
                }
            }
            Input::Eof => conn.core.eof(),
            Input::Error(e) => {
                if conn.closing.is_none() {
                    conn.closing =
                        Some(CloseReason::Error(io::Error::from_raw_os_error(-e).kind()));
                }
            }
        }
        if !conn.multishot {
            conn.recv_buf = None;
        }
    }
}
