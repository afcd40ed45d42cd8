//! Promise 2 on io_uring: a response's chunks go out in order, one step in the kernel at
//! a time. Memory chunks go as one SENDMSG (MSG_MORE while more follows); file bodies up
//! to 64 KiB among them (each small file of a pipelined burst, up to [`MAX_INLINE`]) are
//! READ into memory by READs linked ahead of that SENDMSG; any other body up to 64 KiB
//! is READ and SENT; a larger one goes with sendfile on the ring thread while the page
//! cache holds it all and the socket takes it ([`sendfile_hot`], where cachestat(2) is
//! had), and the rest is spliced file→pipe→socket as a linked pair through a pipe from
//! the ring's pool, copied when the pool is at its bound. A step that moves nothing for
//! `send_timeout` is cancelled by the tick.

use super::super::bufs::Pipe;
use super::step::{Done, StepState};
use super::user_data::{self, Op};
use super::{Conn, Io};
use crate::backend::chunks::{advance, more_after, visit_run, wants_cork};
use crate::backend::CloseReason;
use crate::conn::Key;
use crate::proto::{Chunk, FileRef, ProtocolFactory};
use crate::stats::Stats;
use crate::sys;
use io_uring::{opcode, squeue, types};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use std::time::Instant;

/// Read+send fallback: bytes read per step when no pipe can be had.
const COPY_BUF: usize = 64 * 1024;
/// Most small bodies READ ahead of one SENDMSG (the responses of a pipelined burst).
pub(super) const MAX_INLINE: usize = 16;
/// Most bytes READ into memory for one SENDMSG.
const MAX_INLINE_BYTES: u64 = 256 * 1024;
/// Released send boxes a ring keeps for reuse.
const SPARE_SENDS: usize = 256;

/// A response on its way out: the chunks, where we are in them, and the kernel-visible
/// state of the step in flight. Boxed, and dropped only when no step is in the kernel.
pub(super) struct Sending {
    chunks: Vec<Chunk>,
    i: usize,
    /// Memory chunks: bytes of chunk `i` sent. File chunks: bytes read out of the file
    /// (into the pipe or the copy buffer); some may still wait there.
    off: u64,
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
    pipe: Option<Pipe>,
    /// Bytes in the pipe not yet spliced to the socket.
    in_pipe: u32,
    copy: Option<Box<[u8]>>,
    copy_len: usize,
    copy_sent: usize,
    /// The step in flight and when bytes last moved: the tick ends a send that makes
    /// no progress for `send_timeout`.
    pub(super) step: StepState,
    /// Small file bodies being READ into their (replaced) chunks: how many, how many
    /// of their CQEs are in, and the bytes asked for and read.
    reads: u8,
    reads_in: u8,
    read_want: u64,
    read_got: u64,
    /// A READ of this step failed (other than by being cancelled).
    read_failed: Option<CloseReason>,
    /// Files whose bodies were read into memory chunks, kept open until release.
    inlined: Vec<FileRef>,
    /// Of this step's READs, those from offset 0 of a small file: the chunk read into,
    /// kept by the file ([`FileRef::keep_start`]) once every READ of the step is whole.
    keep: Vec<(usize, FileRef)>,
    /// Whether TCP_CORK is on for this response (a large body, [`wants_cork`]): decided
    /// at its first step (`None` before), cleared when its last byte is in the kernel.
    corked: Option<bool>,
}

/// Bytes cachestat checks at a time, and sendfile then sends at most.
const SENDFILE_WINDOW: u64 = 1024 * 1024;
/// Most bytes one connection sends with sendfile per turn of the ring; the rest of the
/// body is spliced, so one fast reader of a large file cannot hold the ring.
const SENDFILE_BUDGET: u64 = 4 * SENDFILE_WINDOW;

/// Puts `body` where the file chunk `slot` was and hands back its file: the handle moves,
/// so no clone and no drop touch its shared count (two atomic operations per response).
fn take_file(slot: &mut Chunk, body: Vec<u8>) -> FileRef {
    match std::mem::replace(slot, Chunk::Mem(body)) {
        Chunk::File { file, .. } => file,
        _ => unreachable!("take_file is called on a file chunk"),
    }
}

/// A large body the page cache holds goes with sendfile(2) on the ring thread: no
/// io-wq hop, no pipe, no CQE. Only for a handle a body already went out through whole
/// ([`FileRef::was_sent`]): cachestat counts a page whose read is still in flight as
/// cached, and sendfile would wait for it, but pages a finished send read are in. Each
/// window of [`SENDFILE_WINDOW`] is checked with cachestat before it is sent, at most
/// [`SENDFILE_BUDGET`] in all. The socket is made non-blocking around the calls
/// (io_uring's socket requests ignore the flag, but the io-wq splices of the fallback
/// would not, so it is set only here): a full socket is an EAGAIN, not a wait. Sends
/// from `*off` until the body is out, the budget is spent, a window is not all
/// cached, the socket is full or something fails, and returns the bytes sent. The
/// caller splices what is left; a failure (a reset peer, a file that ended early)
/// shows again there and is handled as any splice's.
///
/// What can still wait here, rarely: a page evicted and being read again between the
/// check and the send, and an access-time update the file system must journal (at
/// most once a day per file under relatime). A root on NFS or FUSE, whose reads can
/// revalidate over the network, never comes here (`Caps::cachestat` is off for it).
fn sendfile_hot(sock: BorrowedFd<'_>, file: &FileRef, offset: u64, len: u64, off: &mut u64) -> u64 {
    let ffd = file.file().as_fd();
    let start = *off;
    let end = len.min(start.saturating_add(SENDFILE_BUDGET));
    let cached = |from: u64| {
        let n = (end - from).min(SENDFILE_WINDOW);
        sys::fs::all_cached(ffd, offset + from, n)
            .unwrap_or(false)
            .then_some(from + n)
    };
    if !file.was_sent() {
        return 0;
    }
    let Some(mut window_end) = cached(start) else {
        return 0;
    };
    if sys::net::set_nonblocking(sock, true).is_err() {
        return 0;
    }
    'windows: loop {
        while *off < window_end {
            let mut pos = offset + *off;
            match sys::net::sendfile(sock, ffd, &mut pos, window_end - *off) {
                Ok(n) if n > 0 => *off += n as u64,
                // 0: the file ended early; EAGAIN: the socket is full; else a failure.
                Ok(_) | Err(_) => break 'windows,
            }
        }
        match cached(*off) {
            Some(e) if *off < end => window_end = e,
            _ => break,
        }
    }
    // FIONBIO on a descriptor the connection owns does not fail; were it to, the
    // fallback's splice would answer EAGAIN and end the connection, never block.
    let _ = sys::net::set_nonblocking(sock, false);
    *off - start
}

impl<F: ProtocolFactory> Io<'_, F> {
    /// Queues the next step of the response in flight, or finishes it.
    pub(super) fn advance_send(&mut self, key: Key, conn: &mut Conn<F::Proto>) {
        let fd = types::Fd(conn.fd.as_raw_fd());
        let k = key.to_u64();
        let Some(st) = conn.send.as_mut() else {
            return;
        };
        if st.corked.is_none() {
            let cork = wants_cork(&st.chunks) && sys::net::set_cork(conn.fd.as_fd(), true).is_ok();
            st.corked = Some(cork);
        }
        while let Some(chunk) = st.chunks.get(st.i) {
            if let Chunk::File { file, offset, len } = chunk {
                let (ffd, offset, len) = (types::Fd(file.file().as_raw_fd()), *offset, *len);
                if st.off >= len && st.in_pipe == 0 && st.copy_sent >= st.copy_len {
                    // Whole: every page of it was read (sendfile_hot trusts that).
                    file.mark_sent();
                    st.i += 1;
                    st.off = 0;
                    (st.copy_len, st.copy_sent) = (0, 0);
                    continue;
                }
                // Only while the send holds no pipe and no copy buffer, so nothing read
                // from the file waits to be sent first (once either is taken it stays
                // with the send until release, so later bodies of the same send are
                // spliced or copied too).
                if len > COPY_BUF as u64
                    && self.caps.cachestat
                    && st.off < len
                    && st.pipe.is_none()
                    && st.copy.is_none()
                {
                    let sent = sendfile_hot(conn.fd.as_fd(), file, offset, len, &mut st.off);
                    if sent > 0 {
                        Stats::add(&self.st.bytes_sendfile, sent);
                        conn.core.wrote(sent);
                        st.step.moved(self.now);
                    }
                    if st.off >= len {
                        continue;
                    }
                }
                if st.pipe.is_none() && st.copy.is_none() {
                    // Splice goes through an io-wq worker (a thread hop per step), so
                    // it pays only for large bodies; a small one is read (inline from
                    // the page cache) and sent. When the pool is at its bound, copy
                    // rather than wait for a pipe.
                    if len > COPY_BUF as u64 {
                        st.pipe = self.pipes.take();
                    }
                    if st.pipe.is_none() {
                        st.copy =
                            Some(vec![0u8; (len as usize).clamp(1, COPY_BUF)].into_boxed_slice());
                    }
                }
                let left = len - st.off;
                let (entries, ops): (Vec<squeue::Entry>, u32) = if let Some(pipe) = &st.pipe {
                    // SPLICE_F_MORE (MSG_MORE) while more of the response follows, so
                    // TCP builds full segments across pipe loads instead of pushing a
                    // partial one at the end of each.
                    let follows = more_after(&st.chunks, st.i + 1);
                    let out = |n: u32, more: bool| {
                        opcode::Splice::new(types::Fd(pipe.r.as_raw_fd()), -1, fd, -1, n)
                            .flags(if more { libc::SPLICE_F_MORE } else { 0 })
                            .build()
                            .user_data(Op::SpliceOut.ud(k))
                    };
                    if st.in_pipe > 0 {
                        let more = st.off < len || follows;
                        (vec![out(st.in_pipe, more)], Op::SpliceOut.bit())
                    } else {
                        let n = left.min(u64::from(pipe.cap)) as u32;
                        let more = u64::from(n) < left || follows;
                        let pos = offset.saturating_add(st.off) as i64;
                        let fill =
                            opcode::Splice::new(ffd, pos, types::Fd(pipe.w.as_raw_fd()), -1, n)
                                .build()
                                .flags(squeue::Flags::IO_LINK)
                                .user_data(Op::SpliceIn.ud(k));
                        (
                            vec![fill, out(n, more)],
                            Op::SpliceIn.bit() | Op::SpliceOut.bit(),
                        )
                    }
                } else {
                    let buf = st.copy.as_mut().expect("pipe or copy buffer");
                    if st.copy_sent < st.copy_len {
                        let rest = &buf[st.copy_sent..st.copy_len];
                        let send = opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                            .flags(libc::MSG_NOSIGNAL)
                            .build()
                            .user_data(Op::Send.ud(k));
                        (vec![send], Op::Send.bit())
                    } else {
                        let n = left.min(buf.len() as u64) as u32;
                        let read = opcode::Read::new(ffd, buf.as_mut_ptr(), n)
                            .offset(offset.saturating_add(st.off))
                            .build()
                            .user_data(Op::Read.ud(k));
                        (vec![read], Op::Read.bit())
                    }
                };
                st.step.start(entries.len());
                // SAFETY: the pipe, the copy buffer, the file (in `chunks`) and the
                // socket all belong to the boxed `Sending` and the connection, which
                // stay until every CQE of this step has arrived (`ops`).
                unsafe { self.push(&entries) };
                conn.ops |= ops;
                return;
            }
            // Small file bodies among this run of memory ride in the same send: each is
            // READ into a memory chunk, then one SENDMSG takes the run, the bodies and
            // the memory between them. One body: its READ is linked ahead of the
            // SENDMSG (a short or failed READ breaks the link, and the SENDMSG completes
            // -ECANCELED, never sending stale bytes): one step per response instead of
            // three. Several (a pipelined burst): the READs go unlinked, as a step of
            // their own, so page-cache hits all complete in the one submission (a chain
            // would run link by link, a kernel round each); the SENDMSG follows once
            // every READ is in, judged by their sum (no READ returns more than asked,
            // so the sum is whole only when each is).
            let mut entries: [squeue::Entry; MAX_INLINE + 1] =
                std::array::from_fn(|_| opcode::Nop::new().build());
            let (mut inline_bytes, mut kept_bytes) = (0u64, 0u64);
            st.reads = 0;
            st.reads_in = 0;
            st.keep.clear();
            loop {
                let end = visit_run(&st.chunks, st.i, st.off, |_| {});
                let Some(Chunk::File { file, offset, len }) = st.chunks.get(end) else {
                    break;
                };
                let fits = (1..=COPY_BUF as u64).contains(len)
                    && usize::from(st.reads) < MAX_INLINE
                    && (inline_bytes == 0 || inline_bytes + len <= MAX_INLINE_BYTES);
                if !fits {
                    break;
                }
                let (offset, len) = (*offset, *len as u32);
                let mut body = crate::proto::pool::bytes();
                if let Some(kept) = file.kept(offset, u64::from(len)) {
                    // Read whole once through this handle: sent from memory, no READ.
                    body.extend_from_slice(kept);
                    Stats::add(&self.st.bodies_kept, 1);
                    let file = take_file(&mut st.chunks[end], body);
                    st.inlined.push(file);
                    inline_bytes += u64::from(len);
                    kept_bytes += u64::from(len);
                    continue;
                }
                body.resize(len as usize, 0);
                let ptr = body.as_mut_ptr();
                // The Vec's heap buffer does not move with it.
                let file = take_file(&mut st.chunks[end], body);
                if file.would_keep(offset, len as usize) {
                    st.keep.push((end, file.clone()));
                }
                let e = opcode::Read::new(types::Fd(file.file().as_raw_fd()), ptr, len)
                    .offset(offset)
                    .build()
                    .user_data(Op::Read.ud(k));
                st.inlined.push(file);
                entries[usize::from(st.reads)] = e;
                st.reads += 1;
                inline_bytes += u64::from(len);
            }
            st.read_want = inline_bytes - kept_bytes;
            st.read_got = 0;
            if st.reads > 1 {
                let n = usize::from(st.reads);
                st.step.start(n);
                // SAFETY: each READ fills a memory chunk the boxed `Sending` owns (its
                // heap buffer stays put), from a file `inlined` keeps open; they stay
                // until every CQE of the step is in (`step` counts them).
                unsafe { self.push(&entries[..n]) };
                conn.ops |= Op::Read.bit();
                return;
            }
            if st.reads == 1 {
                entries[0] = entries[0].clone().flags(squeue::Flags::IO_LINK);
            }
            // The iovec array is the Sending's, reused step after step.
            st.iov.clear();
            let iov = &mut st.iov;
            let end = visit_run(&st.chunks, st.i, st.off, |b| {
                iov.push(libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                });
            });
            if st.iov.is_empty() {
                st.i = end;
                st.off = 0;
                continue;
            }
            st.msg.msg_iov = st.iov.as_mut_ptr();
            st.msg.msg_iovlen = st.iov.len();
            let flags = libc::MSG_NOSIGNAL
                | if more_after(&st.chunks, end) {
                    libc::MSG_MORE
                } else {
                    0
                };
            let send = opcode::SendMsg::new(fd, &st.msg)
                .flags(flags as u32)
                .build()
                .user_data(Op::SendMsg.ud(k));
            let reads = st.reads > 0;
            let n = usize::from(st.reads) + 1;
            entries[n - 1] = send;
            let entries = &entries[..n];
            st.step.start(n);
            // SAFETY: `msg` and `iov` live in the boxed `Sending`; the iovecs point into
            // memory chunks it owns, each READ into one of them (its heap buffer, which
            // stays put), from a file `inlined` keeps open. All stay until this step's
            // CQEs have arrived (`ops`, and `step` counts every CQE of the chain).
            unsafe { self.push(entries) };
            conn.ops |= Op::SendMsg.bit() | if reads { Op::Read.bit() } else { 0 };
            return;
        }
        // Every byte is in the kernel: promise 2 lets the protocol go on.
        if st.corked == Some(true) {
            let _ = sys::net::set_cork(conn.fd.as_fd(), false);
        }
        if let Some(st) = conn.send.take() {
            self.release(st);
        }
        conn.core.sent();
    }

    /// Returns a finished (or abandoned) response's pipe to the pool, and closes its
    /// files on the ring (IORING_OP_CLOSE) rather than with a close(2) per response.
    /// Only called with no step of it in the kernel.
    /// Its memory, the chunk list and the box itself are kept for the next response.
    pub(super) fn release(&mut self, mut st: Box<Sending>) {
        if let Some(pipe) = st.pipe.take() {
            self.pipes.give(pipe, st.in_pipe == 0);
        }
        let mut files = std::mem::take(&mut st.inlined);
        crate::proto::pool::give_chunks_with(std::mem::take(&mut st.chunks), |f| files.push(f));
        for file in files.drain(..) {
            // The last holder closes it; others (the open-file cache, another response)
            // just drop their share. A CLOSE that would have to wait in the backlog is
            // a close(2) instead, so no descriptor ever waits outside the kernel.
            if let Ok(file) = file.into_only() {
                if self.tearing_down || !self.has_room(1) {
                    drop(file);
                    continue;
                }
                let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
                let e = opcode::Close::new(types::Fd(fd))
                    .build()
                    .user_data(user_data::CLOSE);
                // SAFETY: CLOSE points at no memory; the descriptor was ours alone and
                // is handed to the kernel to close.
                unsafe { self.push(&[e]) };
            }
        }
        if self.spare_sends.len() < SPARE_SENDS {
            st.inlined = files;
            self.spare_sends.push(st);
        }
    }

    /// A box for a new response's send: a released one if there is one.
    pub(super) fn sending(&mut self, chunks: Vec<Chunk>) -> Box<Sending> {
        match self.spare_sends.pop() {
            Some(mut st) => {
                st.reset(chunks, self.now);
                st
            }
            None => Box::new(Sending::new(chunks, self.now)),
        }
    }

    /// One CQE of a send step; the step is judged when its last CQE is in.
    pub(super) fn send_part(&mut self, conn: &mut Conn<F::Proto>, op: Op, res: i32) {
        let Some(st) = conn.send.as_mut() else {
            return;
        };
        let is_in = matches!(op, Op::SpliceIn | Op::Read);
        if op == Op::Read && st.reads_in < st.reads {
            // One of the READs of small bodies: counted, and judged by their sum.
            st.reads_in += 1;
            match res {
                n if n >= 0 => st.read_got += n as u64,
                n if n == -libc::ECANCELED => {}
                n => {
                    let e = CloseReason::Error(io::Error::from_raw_os_error(-n).kind());
                    st.read_failed.get_or_insert(e);
                }
            }
            // The dispatch cleared the kind's bit; more READs of the step are still in
            // the kernel.
            if st.reads_in < st.reads {
                conn.ops |= Op::Read.bit();
            }
        }
        let Some(Done {
            r_in,
            r_out,
            timed_out,
        }) = st.step.record(is_in, res, self.now)
        else {
            return;
        };
        let stats = &*self.st;
        let mut fail = None;
        let err = |r: i32| CloseReason::Error(io::Error::from_raw_os_error(-r).kind());
        let is_file = matches!(st.chunks.get(st.i), Some(Chunk::File { .. }));
        if st.reads > 0 {
            // Small bodies READ into memory ahead of the SENDMSG. A cancelled READ
            // (the tick's timeout, or a broken link) leaves the sum short too; the
            // timeout says why below.
            st.reads = 0;
            fail = st.read_failed.take();
            if fail.is_none() && st.read_got != st.read_want && !timed_out {
                fail = Some(CloseReason::FileShrunk);
            }
            // Every READ whole: the small files read from their start keep it.
            for (i, file) in st.keep.drain(..) {
                if let (None, false, Some(Chunk::Mem(b))) = (&fail, timed_out, st.chunks.get(i)) {
                    file.keep_start(b);
                }
            }
        } else if let Some(n) = r_in {
            match n {
                n if n > 0 => {
                    st.off += n as u64;
                    if st.pipe.is_some() {
                        st.in_pipe += n as u32;
                    } else {
                        (st.copy_len, st.copy_sent) = (n as usize, 0);
                    }
                }
                // The file ended before the bytes promised: never pad, never wait.
                0 => fail = Some(CloseReason::FileShrunk),
                n if n == -libc::ECANCELED => {}
                n => fail = Some(err(n)),
            }
        }
        if let Some(m) = r_out {
            if m > 0 {
                conn.core.wrote(m as u64);
            }
            match m {
                m if m > 0 && !is_file => {
                    Stats::add(&stats.bytes_copy, m as u64);
                    (st.i, st.off) = advance(&st.chunks, st.i, st.off, m as u64);
                }
                m if m > 0 && st.pipe.is_some() => {
                    Stats::add(&stats.bytes_splice, m as u64);
                    st.in_pipe = st.in_pipe.saturating_sub(m as u32);
                }
                m if m > 0 => {
                    Stats::add(&stats.bytes_copy, m as u64);
                    st.copy_sent += m as usize;
                }
                // A short splice-in broke the link; the pipe's bytes go next step.
                m if m == -libc::ECANCELED => {}
                0 => fail = Some(CloseReason::Error(io::ErrorKind::WriteZero)),
                m => fail = Some(err(m)),
            }
        }
        if timed_out {
            Stats::add(&stats.send_timeouts, 1);
            fail = Some(CloseReason::SendTimeout);
        }
        if let Some(why) = fail {
            conn.closing.get_or_insert(why);
            conn.cut = true;
        }
    }
}

impl Sending {
    /// A released box made ready for `chunks`: every field as [`Sending::new`] sets it,
    /// but the iovec and file lists keep their capacity.
    fn reset(&mut self, chunks: Vec<Chunk>, now: Instant) {
        let mut iov = std::mem::take(&mut self.iov);
        let mut inlined = std::mem::take(&mut self.inlined);
        let mut keep = std::mem::take(&mut self.keep);
        iov.clear();
        inlined.clear();
        keep.clear();
        *self = Sending {
            iov,
            inlined,
            keep,
            ..Sending::new(chunks, now)
        };
    }

    pub(super) fn new(chunks: Vec<Chunk>, now: Instant) -> Sending {
        Sending {
            chunks,
            i: 0,
            off: 0,
            iov: Vec::new(),
            // SAFETY: msghdr is plain data; all-zero is valid (no name, no control).
            msg: unsafe { std::mem::zeroed() },
            pipe: None,
            in_pipe: 0,
            copy: None,
            copy_len: 0,
            copy_sent: 0,
            step: StepState::new(now),
            reads: 0,
            reads_in: 0,
            read_want: 0,
            read_got: 0,
            read_failed: None,
            inlined: Vec::new(),
            keep: Vec::new(),
            corked: None,
        }
    }
}
