//! A receive into a file ([`Action::RecvFile`](crate::backend::driver::Action)) on the
//! ring, the mirror of the send path: the head the protocol holds is written (WRITE),
//! then the connection's bytes go socket→pipe→file as a linked SPLICE pair through a
//! pipe from the ring's pool (a short splice from the socket breaks the link; the
//! pipe's bytes go to the file next step), or, when the pool is at its bound, RECV into
//! a buffer and WRITE. One step in the kernel at a time; a step that moves nothing for
//! the body timeout is cancelled by the tick. Accepted sockets are blocking on this
//! backend, so a SPLICE from one waits in an io-wq worker for bytes, and ASYNC_CANCEL
//! interrupts it.

use super::super::bufs::Pipe;
use super::recv::Input;
use super::step::{Done, StepState};
use super::user_data::Op;
use super::{Conn, Io, Job};
use crate::conn::Key;
use crate::proto::{ProtocolFactory, RecvFile};
use crate::stats::Stats;
use io_uring::{opcode, squeue, types};
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Copy fallback: bytes received per step.
const COPY_BUF: usize = 64 * 1024;

/// A receive into a file in flight. Boxed in the connection; every buffer and pipe an
/// SQE of it names stays here until that SQE's CQE.
pub(super) struct Receiving {
    want: RecvFile,
    /// Bytes of `want.head` written so far.
    head_done: usize,
    /// Bytes of the connection written to the file.
    got: u64,
    pipe: Option<Pipe>,
    /// Bytes in the pipe not yet written to the file.
    in_pipe: u32,
    copy: Option<Box<[u8]>>,
    copy_len: usize,
    copy_done: usize,
    /// The peer closed before the end.
    eof: bool,
    /// A multishot receive was still armed when this began: it is being cancelled,
    /// and what it parked is taken into `want.head` before the first step.
    stopping_recv: bool,
    parked_taken: bool,
    /// Bytes of the connection taken from parked input into the head: they count as
    /// received from the connection.
    absorbed: u64,
    /// What went wrong, to tell the protocol once nothing is in flight.
    failed: Option<io::Error>,
    /// The step in flight, and its clock against `timeout` (the body timeout).
    pub(super) step: StepState,
    pub(super) timeout: Duration,
}

impl Receiving {
    pub(super) fn new(want: RecvFile, timeout: Duration, now: Instant) -> Receiving {
        Receiving {
            want,
            head_done: 0,
            got: 0,
            pipe: None,
            in_pipe: 0,
            copy: None,
            copy_len: 0,
            copy_done: 0,
            eof: false,
            stopping_recv: false,
            parked_taken: false,
            absorbed: 0,
            failed: None,
            step: StepState::new(now),
            timeout,
        }
    }
}

impl Receiving {
    /// Its pipe, and whether the pipe is empty (reusable), for a connection retired
    /// with nothing of this receive in flight.
    pub(super) fn into_pipe(self) -> Option<(Pipe, bool)> {
        let empty = self.in_pipe == 0;
        self.pipe.map(|p| (p, empty))
    }
}

impl<F: ProtocolFactory> Io<'_, F> {
    /// Queues the next step of the receive in flight, or finishes it and tells the
    /// driver.
    pub(super) fn advance_sink(&mut self, key: Key, conn: &mut Conn<F::Proto>) {
        let k = key.to_u64();
        let sock = types::Fd(conn.fd.as_raw_fd());
        let Some(Job::Sink(rx)) = &mut conn.job else {
            return;
        };
        if conn.ops & Op::Recv.bit() != 0 {
            // A multishot receive is still armed: it would take the body's bytes for
            // itself. Stop it; go on once its last CQE is in.
            if !std::mem::replace(&mut rx.stopping_recv, true) {
                self.cancel(Op::Recv.ud(k));
            }
            return;
        }
        if !std::mem::replace(&mut rx.parked_taken, true) {
            self.take_parked(conn);
        }
        let Some(Job::Sink(rx)) = &mut conn.job else {
            return;
        };
        let ffd = types::Fd(rx.want.file.file().as_raw_fd());
        let base = rx.want.offset;
        let head = rx.want.head.len();
        let done = rx.failed.is_some()
            || (rx.head_done >= head
                && rx.in_pipe == 0
                && rx.copy_done >= rx.copy_len
                && (rx.eof || rx.got >= rx.want.len));
        if done {
            let rx = conn.take_sink().expect("checked");
            let result = match rx.failed {
                Some(e) => Err(e),
                None => Ok(rx.absorbed + rx.got),
            };
            if let Some(pipe) = rx.pipe {
                self.pipes.give(pipe, rx.in_pipe == 0);
            }
            return conn.core.recv_file_done(result);
        }
        let pos = base + head as u64 + rx.got;
        let (entries, ops): (Vec<squeue::Entry>, u32) = if rx.head_done < head {
            let rest = &rx.want.head[rx.head_done..];
            let w = opcode::Write::new(ffd, rest.as_ptr(), rest.len() as u32)
                .offset(base + rx.head_done as u64)
                .build()
                .user_data(Op::SinkWrite.ud(k));
            (vec![w], Op::SinkWrite.bit())
        } else {
            if rx.pipe.is_none() && rx.copy.is_none() {
                rx.pipe = self.pipes.take();
                if rx.pipe.is_none() {
                    rx.copy = Some(vec![0u8; COPY_BUF].into_boxed_slice());
                }
            }
            let left = rx.want.len - rx.got - u64::from(rx.in_pipe);
            if let Some(pipe) = &rx.pipe {
                let out = |n: u32| {
                    opcode::Splice::new(types::Fd(pipe.r.as_raw_fd()), -1, ffd, pos as i64, n)
                        .build()
                        .user_data(Op::SinkOut.ud(k))
                };
                if rx.in_pipe > 0 {
                    (vec![out(rx.in_pipe)], Op::SinkOut.bit())
                } else {
                    let n = left.min(u64::from(pipe.cap)) as u32;
                    let fill = opcode::Splice::new(sock, -1, types::Fd(pipe.w.as_raw_fd()), -1, n)
                        .build()
                        .flags(squeue::Flags::IO_LINK)
                        .user_data(Op::SinkIn.ud(k));
                    (vec![fill, out(n)], Op::SinkIn.bit() | Op::SinkOut.bit())
                }
            } else {
                let buf = rx.copy.as_mut().expect("pipe or copy buffer");
                if rx.copy_done < rx.copy_len {
                    let rest = &buf[rx.copy_done..rx.copy_len];
                    let w = opcode::Write::new(ffd, rest.as_ptr(), rest.len() as u32)
                        .offset(pos)
                        .build()
                        .user_data(Op::SinkWrite.ud(k));
                    (vec![w], Op::SinkWrite.bit())
                } else {
                    let n = left.min(buf.len() as u64) as u32;
                    let r = opcode::Recv::new(sock, buf.as_mut_ptr(), n)
                        .build()
                        .user_data(Op::SinkRecv.ud(k));
                    (vec![r], Op::SinkRecv.bit())
                }
            }
        };
        rx.step.start(entries.len());
        // SAFETY: the head and copy buffers, the pipe and the file (in `want`) belong to
        // the boxed `Receiving`, the socket to the connection; all stay until every CQE
        // of this step has arrived (`ops`, and the rule of lifecycle.rs).
        unsafe { self.push(&entries) };
        conn.ops |= ops;
    }

    /// Input a multishot receive parked before the receive into the file began is the
    /// start of the body: it goes into the head (as much as the body needs; the rest
    /// stays parked, in order, for the protocol). Its buffers go back to the kernel.
    fn take_parked(&mut self, conn: &mut Conn<F::Proto>) {
        let Some(Job::Sink(rx)) = &mut conn.job else {
            return;
        };
        while let Some(input) = conn.parked.pop_front() {
            let bytes = match input {
                Input::Data(Some(bid), n) => {
                    let Some(b) = self.bufs.as_mut() else { break };
                    let v = b.get(bid, n).to_vec();
                    b.recycle(bid);
                    self.recycled = true;
                    v
                }
                Input::Data(None, _) => Vec::new(),
                Input::Owned(v) => v,
                Input::Eof => {
                    conn.parked.push_front(Input::Eof);
                    rx.eof = true;
                    break;
                }
                Input::Error(e) => {
                    rx.failed = Some(io::Error::from_raw_os_error(-e));
                    break;
                }
            };
            let take = bytes.len().min(rx.want.len as usize);
            rx.want.head.extend_from_slice(&bytes[..take]);
            rx.want.len -= take as u64;
            rx.absorbed += take as u64;
            if take < bytes.len() {
                conn.parked.push_front(Input::Owned(bytes[take..].to_vec()));
                break;
            }
        }
    }

    /// One CQE of a receive step; the step is judged when its last CQE is in.
    pub(super) fn sink_part(&mut self, conn: &mut Conn<F::Proto>, op: Op, res: i32) {
        let Some(Job::Sink(rx)) = &mut conn.job else {
            return;
        };
        let is_in = matches!(op, Op::SinkIn | Op::SinkRecv);
        let Some(Done {
            r_in,
            r_out,
            timed_out,
        }) = rx.step.record(is_in, res, self.now)
        else {
            return;
        };
        let err = |r: i32| io::Error::from_raw_os_error(-r);
        if let Some(n) = r_in {
            match n {
                n if n > 0 && rx.pipe.is_some() => rx.in_pipe += n as u32,
                n if n > 0 => (rx.copy_len, rx.copy_done) = (n as usize, 0),
                0 => rx.eof = true,
                n if n == -libc::ECANCELED => {}
                n => {
                    rx.failed.get_or_insert(err(n));
                }
            }
        }
        if let Some(m) = r_out {
            let head = rx.want.head.len();
            match m {
                m if m > 0 && rx.head_done < head => {
                    Stats::add(&self.st.bytes_recv_copy, m as u64);
                    rx.head_done += m as usize;
                }
                m if m > 0 && rx.pipe.is_some() => {
                    Stats::add(&self.st.bytes_recv_splice, m as u64);
                    rx.in_pipe = rx.in_pipe.saturating_sub(m as u32);
                    rx.got += m as u64;
                }
                m if m > 0 => {
                    Stats::add(&self.st.bytes_recv_copy, m as u64);
                    rx.copy_done += m as usize;
                    rx.got += m as u64;
                }
                // A short splice from the socket broke the link; the pipe's bytes go
                // to the file next step.
                m if m == -libc::ECANCELED => {}
                0 => {
                    rx.failed
                        .get_or_insert(io::Error::from_raw_os_error(libc::EIO));
                }
                m => {
                    rx.failed.get_or_insert(err(m));
                }
            }
        }
        if timed_out {
            rx.failed = Some(io::ErrorKind::TimedOut.into());
        }
    }
}
