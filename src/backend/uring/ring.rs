//! One ring's event loop: accept, receive, send, splice, open, time out, shut down.
//!
//! Each turn: one `io_uring_enter` submits everything queued and waits for at least one
//! completion; queued notifications are handled first (a bounded number), then every
//! completion. A connection is driven (its protocol polled) only when none of its
//! operations is in the kernel, which is promise 1's "one operation per direction" and
//! promise 2's "poll again only after the whole send".
//!
//! Every `unsafe` push below states the contract of io_uring's submit edge: the memory
//! and descriptors the SQE names stay alive until its completion arrives. The
//! connection owns them (boxed, so slab growth never moves them) and is removed from the
//! table only when `ops` says nothing naming it is in the kernel.

use super::bufs::{BufRing, Pipe, PipePool, BGID};
use super::{Caps, ListenFd, Note, Notifier, Shared};
use crate::backend::chunks::{advance, gather, more_after};
use crate::backend::{close_socket, recv_deadline, CloseReason, ShutdownLevel};
use crate::conn::{ConnTable, Key, KEY_BITS};
use crate::open_cache::OpenCache;
use crate::proto::{Chunk, Opened, Protocol, ProtocolFactory, Step, Wait};
use crate::stats::{Gauges, Stats};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Operation kinds, the top byte of `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Accept = 1,
    Recv,
    SendMsg,
    SpliceIn,
    SpliceOut,
    Read,
    Send,
    Open,
    Close,
    Cancel,
    Tick,
    Wake,
    Stat,
}

impl Op {
    const ALL: [Op; 13] = [
        Op::Accept,
        Op::Recv,
        Op::SendMsg,
        Op::SpliceIn,
        Op::SpliceOut,
        Op::Read,
        Op::Send,
        Op::Open,
        Op::Close,
        Op::Cancel,
        Op::Tick,
        Op::Wake,
        Op::Stat,
    ];

    fn from(b: u8) -> Option<Op> {
        Op::ALL.into_iter().find(|o| *o as u8 == b)
    }

    /// This kind's bit in a connection's `ops`.
    fn bit(self) -> u16 {
        1 << (self as u8)
    }

    fn ud(self, low: u64) -> u64 {
        (self as u64) << KEY_BITS | low
    }
}

/// The `user_data` a MSG_RING wakeup arrives with.
pub(super) fn wake_user_data() -> u64 {
    Op::Wake.ud(1)
}

/// How often the ring checks receive deadlines, accept back-off and shutdown deadlines.
const TICK: Duration = Duration::from_millis(100);
/// How long accept rests after EMFILE/ENFILE.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);
/// Notifications handled per loop turn, so a flood cannot starve I/O.
const NOTES_PER_TURN: usize = 16;
/// Receive buffer size, for the buffer ring and the per-connection fallback alike.
const RECV_BUF: u32 = 4096;
/// Multishot receive: data buffers a connection may hold while it sends, before its
/// receive is cancelled (a pipelining client must not drain the buffer ring).
const PARK_MAX: usize = 2;
/// Read+send fallback: bytes read per step when no pipe can be had.
const COPY_BUF: usize = 64 * 1024;
/// Pipes per ring: what splicing may hold of the user's pipe pages.
const MAX_PIPES: usize = 32;

/// A response on its way out: the chunks, where we are in them, and the kernel-visible
/// state of the step in flight. Boxed, and dropped only when no step is in the kernel.
struct Sending {
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
    /// When bytes last moved: the tick ends a send that makes no progress for
    /// `send_timeout`.
    progress: Instant,
    /// Results of the step in flight, evaluated when its last CQE arrives.
    pending: u8,
    r_in: Option<i32>,
    r_out: Option<i32>,
    timed_out: bool,
    /// A small file body being READ into its (replaced) chunk: the length asked for.
    reading: Option<u32>,
    /// Files whose bodies were read into memory chunks, kept open until release.
    inlined: Vec<Arc<File>>,
}

// SAFETY: the raw pointers in `iov`/`msg` point into `chunks` and `iov`, which the box
// owns; nothing else aliases them, and the whole box moves between threads only as a
// unit (it never does: a ring's connections stay on its thread).
unsafe impl Send for Sending {}

/// An open in flight: what OPENAT2 points at, and the protocol's path it caches under;
/// then the file it opened and the buffer STATX of it fills.
struct Opening {
    rel: String,
    path: CString,
    how: types::OpenHow,
    file: Option<File>,
    stx: libc::statx,
}

struct Conn<P> {
    fd: OwnedFd,
    peer: SocketAddr,
    proto: P,
    /// Operations in the kernel that name this connection, one bit per kind.
    ops: u16,
    wait: Option<(Wait, Instant)>,
    /// The deadline of the armed receive.
    deadline: Option<Instant>,
    recv_timed_out: bool,
    /// Per-connection receive buffer, without a buffer ring: held only while a receive
    /// is in flight.
    recv_buf: Option<Box<[u8]>>,
    send: Option<Box<Sending>>,
    open: Option<Box<Opening>>,
    /// Set once the connection is to close; it does when `ops` is empty.
    closing: Option<CloseReason>,
    cancelled: bool,
    /// A send was cut short: close with RST.
    cut: bool,
    drained: bool,
    /// A receive came back ENOBUFS (or a paused multishot receive ended while input is
    /// wanted): arm again when buffers return, after the batch.
    starved: bool,
    /// The protocol asked for input (`Step::Recv`) and has not had it yet. Input that
    /// a multishot receive delivers at other times is parked.
    want_recv: bool,
    /// The armed receive is multishot: it stays in the kernel across requests.
    multishot: bool,
    /// Multishot input that arrived while the protocol was not asking (it was sending):
    /// held, in order, buffers and all, until it asks. At most [`PARK_MAX`] data
    /// buffers; then the receive is cancelled and TCP holds the rest.
    parked: std::collections::VecDeque<Input>,
    /// `Control::close` came while a response was in hand: close once it is sent.
    close_asked: bool,
}

/// A ring's connections. Boxed: the table doubles as it grows, and a slot of a box
/// costs 16 bytes where a whole connection (protocol state included) costs hundreds, so
/// idle connections cost what they hold, not the table's spare capacity.
type Conns<P> = ConnTable<Box<Conn<P>>>;

/// What one receive completion brought.
#[derive(Debug, Clone, Copy)]
enum Input {
    /// `len` bytes in provided buffer `bid`, or in `recv_buf` (`bid` None).
    Data(Option<u16>, usize),
    Eof,
    Error(i32),
}

/// Everything but the connection table, so the two can be borrowed apart.
struct Io<'a, F: ProtocolFactory> {
    ring: IoUring,
    sh: &'a Shared<F>,
    caps: Caps,
    bufs: Option<BufRing>,
    pipes: PipePool,
    /// The timespec TIMEOUT points at; boxed so it never moves.
    tick_ts: Box<types::Timespec>,
    /// The eventfd READ's buffer.
    wake_buf: Box<u64>,
    listeners: Vec<ListenFd>,
    /// Per listener: an ACCEPT is armed.
    accepting: Vec<bool>,
    /// Accept rests until then (EMFILE).
    paused_until: Option<Instant>,
    /// Internal operations in flight (tick, wake read, accepts): waited for at exit.
    internal: usize,
    draining: bool,
    stop_deadline: Option<Instant>,
    /// Connections to drive or retry after this batch of completions.
    ready: Vec<Key>,
    /// SQE groups that did not fit the submission queue yet, in order.
    backlog: std::collections::VecDeque<Vec<squeue::Entry>>,
    /// This ring's recently opened files (`--open-file-cache`): a hit skips OPENAT2,
    /// fstat and CLOSE.
    open_cache: OpenCache,
    /// The clocks, read once per loop turn rather than per connection step: every
    /// completion of a turn arrived by then, and a clock read is a measurable share of
    /// a small request's cost.
    now: Instant,
    wall: SystemTime,
    /// This ring thread's counters (src/stats.rs).
    st: Arc<Stats>,
}

pub(super) fn run<F: ProtocolFactory>(
    sh: Arc<Shared<F>>,
    me: usize,
    ring: IoUring,
    listeners: Vec<ListenFd>,
    inbox: Arc<Notifier>,
    ready: std::sync::mpsc::Sender<io::Result<Vec<String>>>,
) {
    inbox.set_ring_fd(ring.as_raw_fd());
    let counting = sh.ctx.stats.bind(format!("ring-{me}"));
    let caps = sh.caps;
    let mut notes = Vec::new();
    let bufs = if caps.buf_ring {
        let count = sh.ctx.cfg.uring_buffers.max(1).next_power_of_two();
        match BufRing::register(&ring, count, RECV_BUF) {
            Ok(b) => Some(b),
            Err(e) => {
                notes.push(format!(
                    "buffer ring refused ({e}): per-connection receive buffers"
                ));
                None
            }
        }
    } else {
        None
    };
    let _ = ready.send(Ok(notes));
    let n = listeners.len();
    let mut io = Io {
        ring,
        sh: &sh,
        caps,
        bufs,
        pipes: PipePool::new(MAX_PIPES),
        tick_ts: Box::new(types::Timespec::from(TICK)),
        wake_buf: Box::new(0),
        listeners,
        accepting: vec![false; n],
        paused_until: None,
        internal: 0,
        draining: false,
        stop_deadline: None,
        ready: Vec::new(),
        backlog: std::collections::VecDeque::new(),
        open_cache: OpenCache::new(sh.ctx.cfg.open_file_cache, sh.ctx.cfg.open_file_cache_valid),
        now: Instant::now(),
        wall: SystemTime::now(),
        st: counting.stats().clone(),
    };
    let mut conns: Conns<F::Proto> =
        ConnTable::shard(sh.ctx.cfg.max_connections.min(1024), me as u8);
    io.arm_tick();
    io.arm_wake(&inbox);
    for li in 0..n {
        io.arm_accept(li);
    }
    let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
    loop {
        io.flush_backlog();
        match io.ring.submit_and_wait(1) {
            Ok(_) => {}
            // EBUSY: completions must be reaped before more can be submitted.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EINTR)) => {}
            Err(e) => {
                crate::say!("ringserve: io_uring_enter: {e}; ring stops");
                break;
            }
        }
        Stats::add(&io.st.uring_enters, 1);
        io.now = Instant::now();
        io.wall = SystemTime::now();
        for note in inbox.take(NOTES_PER_TURN) {
            match note {
                Note::Shutdown(level) => io.shutdown(&mut conns, level),
                Note::Close(key) => io.close_asked(&mut conns, key),
            }
        }
        cqes.clear();
        cqes.extend(
            io.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        Stats::add(&io.st.cqes, cqes.len() as u64);
        for &(ud, res, flags) in &cqes {
            io.complete(&mut conns, &inbox, ud, res, flags);
        }
        io.run_ready(&mut conns);
        if io.draining && conns.is_empty() && io.accepting.iter().all(|a| !a) {
            break;
        }
    }
    io.teardown(&inbox);
}

impl<F: ProtocolFactory> Io<'_, F> {
    /// Queues SQEs that must be submitted together (a link chain). When the submission
    /// queue has no room even after a submit (the kernel answers EBUSY while its
    /// completion backlog is full), the group waits, whole and in order, in `backlog`
    /// until the next loop turn has reaped: never a spin, never a split chain.
    ///
    /// # Safety
    /// Everything the entries point at must stay valid until their completions arrive.
    unsafe fn push(&mut self, entries: &[squeue::Entry]) {
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

    /// Moves waiting groups into the submission queue while they fit.
    fn flush_backlog(&mut self) {
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
        let mut sq = self.ring.submission();
        for e in entries {
            // SAFETY: forwarded to our caller.
            let _ = unsafe { sq.push(e) };
        }
    }

    fn arm_tick(&mut self) {
        let e = opcode::Timeout::new(&*self.tick_ts)
            .build()
            .user_data(Op::Tick.ud(0));
        // SAFETY: the timespec is boxed in `self` and outlives the ring (teardown waits
        // for this completion); the kernel copies it at submit anyway.
        unsafe { self.push(&[e]) };
        self.internal += 1;
    }

    fn arm_wake(&mut self, inbox: &Notifier) {
        let buf: *mut u64 = &mut *self.wake_buf;
        let e = opcode::Read::new(types::Fd(inbox.efd().as_fd().as_raw_fd()), buf.cast(), 8)
            .build()
            .user_data(Op::Wake.ud(0));
        // SAFETY: the 8-byte buffer is boxed in `self`, the eventfd in the inbox that
        // outlives this loop; teardown waits for this completion.
        unsafe { self.push(&[e]) };
        self.internal += 1;
    }

    fn arm_accept(&mut self, li: usize) {
        if self.draining || self.accepting[li] || self.paused_until.is_some() {
            return;
        }
        let fd = types::Fd(self.listeners[li].raw());
        let e = if self.caps.multishot_accept {
            opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        };
        // SAFETY: no address buffer; the listener outlives the ring's accepts (shutdown
        // cancels them and the loop waits for their completions before returning).
        unsafe { self.push(&[e.user_data(Op::Accept.ud(li as u64))]) };
        self.accepting[li] = true;
        self.internal += 1;
    }

    fn cancel(&mut self, ud: u64) {
        let e = opcode::AsyncCancel::new(ud)
            .build()
            .user_data(Op::Cancel.ud(0));
        // SAFETY: ASYNC_CANCEL points at no memory.
        unsafe { self.push(&[e]) };
    }

    /// One completion.
    fn complete(
        &mut self,
        conns: &mut Conns<F::Proto>,
        inbox: &Notifier,
        ud: u64,
        res: i32,
        flags: u32,
    ) {
        let low = ud & ((1 << KEY_BITS) - 1);
        let Some(op) = Op::from((ud >> KEY_BITS) as u8) else {
            return; // the coordinator's own MSG_RING CQE carries 0
        };
        match op {
            Op::Accept => return self.accepted(conns, low as usize, res, flags),
            Op::Tick => {
                self.internal -= 1;
                return self.tick(conns);
            }
            Op::Wake if low == 0 => {
                // The eventfd READ; a MSG_RING wakeup (low 1) needs nothing: notes are
                // read every turn.
                self.internal -= 1;
                if !(self.draining && res == -libc::ECANCELED) {
                    self.arm_wake(inbox);
                }
                return;
            }
            Op::Wake | Op::Cancel | Op::Close => return,
            _ => {}
        }
        let Some((key, conn)) = lookup(conns, low) else {
            // A retired key. Never expected (a connection leaves the table only with no
            // operation in flight), but what such a completion carries is not leaked.
            Stats::add(&self.st.stale_dropped, 1);
            if let (Some(bid), Some(b)) = (cqueue::buffer_select(flags), self.bufs.as_mut()) {
                b.recycle(bid);
            }
            if op == Op::Open && res >= 0 {
                // SAFETY: the kernel just handed us this descriptor.
                drop(unsafe { OwnedFd::from_raw_fd(res) });
            }
            return;
        };
        if !(op == Op::Recv && cqueue::more(flags)) {
            conn.ops &= !op.bit();
        }
        // These may call into the protocol; a panic there closes only this connection.
        let r = catch_unwind(AssertUnwindSafe(|| match op {
            Op::Recv => self.received(key, conn, res, flags),
            Op::Open => self.opened(key, conn, res),
            Op::Stat => self.stated(conn, res),
            _ => self.send_part(conn, op, res),
        }));
        if r.is_err() {
            Stats::add(&self.st.panics, 1);
            conn.closing = Some(CloseReason::Panic);
            conn.cut = true;
        }
        self.ready.push(key);
    }

    /// Drives, retries or closes the connections completions touched.
    fn run_ready(&mut self, conns: &mut Conns<F::Proto>) {
        let mut i = 0;
        while i < self.ready.len() {
            let key = self.ready[i];
            i += 1;
            self.step(conns, key);
        }
        self.ready.clear();
    }

    /// Moves one connection on as far as it can go without waiting.
    fn step(&mut self, conns: &mut Conns<F::Proto>, key: Key) {
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        // An armed multishot receive is passive: it does not hold the protocol back.
        let passive = if conn.multishot { Op::Recv.bit() } else { 0 };
        if conn.closing.is_none() && conn.ops & !passive == 0 {
            let r = catch_unwind(AssertUnwindSafe(|| self.drive(key, conn)));
            if r.is_err() {
                Stats::add(&self.st.panics, 1);
                conn.closing = Some(CloseReason::Panic);
                conn.cut = true;
            }
        }
        if conn.closing.is_some() {
            if conn.ops == 0 {
                self.retire(conns, key);
            } else if !conn.cancelled {
                conn.cancelled = true;
                for op in Op::ALL {
                    if conn.ops & op.bit() != 0 {
                        self.cancel(op.ud(key.to_u64()));
                    }
                }
            }
        }
    }

    /// Polls the protocol until it waits on the kernel or is done.
    fn drive(&mut self, key: Key, conn: &mut Conn<F::Proto>) {
        let root = &self.sh.ctx.root;
        loop {
            if conn.send.is_some() {
                self.advance_send(key, conn);
                if conn.send.is_some() || conn.closing.is_some() {
                    return;
                }
            }
            if conn.starved {
                // Buffers were recycled while the batch was handled: try again.
                if self.arm_recv(key, conn) {
                    continue;
                }
                return;
            }
            if conn.close_asked {
                conn.closing.get_or_insert(CloseReason::Requested);
                return;
            }
            if !conn.drained && self.draining {
                conn.drained = true;
                conn.proto.handle_drain();
            }
            match conn.proto.poll(self.wall) {
                Step::Send(chunks) => {
                    Stats::add(&self.st.responses, 1);
                    // Logged as the response is handed over: log order is response order.
                    if let Some(line) = conn.proto.take_log_line() {
                        crate::backend::access_log(&line);
                    }
                    conn.send = Some(Box::new(Sending::new(chunks, self.now)));
                }
                Step::Open(path) => {
                    let now = self.now;
                    if let Some(hit) = self.open_cache.get(&path, now) {
                        conn.proto.handle_open(Ok(hit));
                        continue;
                    }
                    match root.openat2_args(&path) {
                        Some(Ok(args)) if self.caps.openat2 => {
                            return self.submit_open(key, conn, &path, args)
                        }
                        Some(Err(e)) => conn.proto.handle_open(Err(e)),
                        _ => {
                            let r = root.open_beneath(&path);
                            if let Ok(o) = &r {
                                self.open_cache.put(&path, o, now);
                            }
                            conn.proto.handle_open(r)
                        }
                    }
                }
                // There is no getdents on the ring; listings are small and rare.
                Step::ReadDir(path) => conn.proto.handle_read_dir(root.read_dir(&path)),
                Step::Recv(_) if self.draining => {
                    // As epoll's `park` refuses while draining: a connection that
                    // finished its response and would wait for another closes now,
                    // even if its protocol ignored `handle_drain`.
                    conn.closing = Some(CloseReason::Shutdown);
                    return;
                }
                Step::Recv(wait) => {
                    let now = self.now;
                    let deadline = recv_deadline(&mut conn.wait, wait, &self.sh.ctx.cfg, now);
                    if now >= deadline {
                        Stats::add(&self.st.recv_timeouts, 1);
                        conn.proto.handle_timeout();
                        continue;
                    }
                    conn.deadline = Some(deadline);
                    if self.arm_recv(key, conn) {
                        continue;
                    }
                    return;
                }
                Step::Close => {
                    conn.closing = Some(CloseReason::Done);
                    return;
                }
            }
        }
    }

    /// The protocol wants input. Parked input goes first (true: it was delivered, drive
    /// on); otherwise a receive is armed unless a multishot one still is (false).
    fn arm_recv(&mut self, key: Key, conn: &mut Conn<F::Proto>) -> bool {
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
            Some(_) if conn.multishot => opcode::RecvMulti::new(fd, BGID).build(),
            Some(b) => opcode::Recv::new(fd, std::ptr::null_mut(), b.size())
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT),
            None => {
                let buf = conn
                    .recv_buf
                    .get_or_insert_with(|| vec![0u8; RECV_BUF as usize].into_boxed_slice());
                opcode::Recv::new(fd, buf.as_mut_ptr(), buf.len() as u32).build()
            }
        };
        // SAFETY: the buffer is the ring's provided group (registered until teardown) or
        // `recv_buf`, boxed in the connection, which stays in the table until this CQE
        // (for multishot, until the CQE without F_MORE: the Recv bit stays set).
        unsafe { self.push(&[e.user_data(Op::Recv.ud(key.to_u64()))]) };
        conn.ops |= Op::Recv.bit();
        false
    }

    /// A receive completion: delivered to the protocol if it asked, parked otherwise
    /// (only a multishot receive completes while the protocol is not asking).
    fn received(&mut self, key: Key, conn: &mut Conn<F::Proto>, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let ended = !cqueue::more(flags);
        let input = match res {
            n if n > 0 => Some(Input::Data(bid, n as usize)),
            0 => Some(Input::Eof),
            e if e == -libc::ENOBUFS => {
                // Every buffer is in use: wait for some to come back, lose nothing.
                Stats::add(&self.st.recv_enobufs, 1);
                conn.starved = conn.want_recv;
                None
            }
            e if e == -libc::ECANCELED && conn.recv_timed_out => {
                conn.deadline = None;
                conn.want_recv = false;
                Stats::add(&self.st.recv_timeouts, 1);
                conn.proto.handle_timeout();
                None
            }
            e if e == -libc::ECANCELED => {
                // Paused (too much parked) or closing: arm again if input is wanted.
                conn.starved = conn.want_recv;
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
        if conn.want_recv && conn.parked.is_empty() {
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

    /// Hands one input to the protocol and gives its buffer back.
    fn deliver(&mut self, conn: &mut Conn<F::Proto>, input: Input) {
        conn.deadline = None;
        conn.want_recv = false;
        match input {
            Input::Data(bid, n) => {
                match (bid, &self.bufs, &conn.recv_buf) {
                    (Some(bid), Some(b), _) => conn.proto.handle_recv(b.get(bid, n)),
                    (None, _, Some(buf)) => conn.proto.handle_recv(&buf[..n.min(buf.len())]),
                    _ => conn.closing = Some(CloseReason::Error(io::ErrorKind::InvalidData)),
                }
                if let (Some(bid), Some(b)) = (bid, self.bufs.as_mut()) {
                    b.recycle(bid);
                }
            }
            Input::Eof => conn.proto.handle_eof(),
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

    fn submit_open(
        &mut self,
        key: Key,
        conn: &mut Conn<F::Proto>,
        rel: &str,
        args: crate::fs::Openat2Args<'_>,
    ) {
        let dir = args.dir.as_raw_fd();
        let op = conn.open.insert(Box::new(Opening {
            rel: rel.to_owned(),
            path: args.path,
            how: types::OpenHow::new()
                .flags(args.flags)
                .resolve(args.resolve),
            file: None,
            // SAFETY: statx is plain data; all-zero is a valid value.
            stx: unsafe { std::mem::zeroed() },
        }));
        let e = opcode::OpenAt2::new(types::Fd(dir), op.path.as_ptr(), &op.how)
            .build()
            .user_data(Op::Open.ud(key.to_u64()));
        // SAFETY: the path and open_how live in the boxed `Opening`, the root descriptor
        // in the shared context; both outlive this completion.
        unsafe { self.push(&[e]) };
        conn.ops |= Op::Open.bit();
    }

    /// OPENAT2 completed. The new descriptor is stat'ed with STATX on the ring where
    /// the kernel has it (AT_EMPTY_PATH: this very file, no second lookup), so nothing
    /// on this thread can block on a slow filesystem's getattr (NFS, FUSE). The kernel
    /// runs STATX in an io-wq worker, a thread hop, which the open-file cache pays once
    /// per file per validity period. Without STATX, `fstat` of the new descriptor.
    fn opened(&mut self, key: Key, conn: &mut Conn<F::Proto>, res: i32) {
        let Some(mut op) = conn.open.take() else {
            return;
        };
        if res < 0 {
            return conn
                .proto
                .handle_open(Err(io::Error::from_raw_os_error(-res)));
        }
        // SAFETY: the kernel just handed us this descriptor.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(res) });
        if conn.closing.is_some() {
            return; // dropping `file` closes it
        }
        if self.caps.statx {
            let e = opcode::Statx::new(
                types::Fd(file.as_raw_fd()),
                c"".as_ptr(),
                std::ptr::addr_of_mut!(op.stx).cast::<types::statx>(),
            )
            .flags(libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT)
            .mask(libc::STATX_BASIC_STATS)
            .build()
            .user_data(Op::Stat.ud(key.to_u64()));
            op.file = Some(file);
            conn.open = Some(op); // the box, and the buffer in it, do not move
                                  // SAFETY: the statx buffer and the descriptor live in the boxed `Opening`,
                                  // which the connection keeps until this completion (`ops`); the path is a
                                  // static empty string.
            unsafe { self.push(&[e]) };
            conn.ops |= Op::Stat.bit();
            return;
        }
        let r = crate::fs::meta_of(&file);
        self.open_done(conn, &op.rel, file, r);
    }

    /// STATX of a just-opened file completed.
    fn stated(&mut self, conn: &mut Conn<F::Proto>, res: i32) {
        let Some(mut op) = conn.open.take() else {
            return;
        };
        let Some(file) = op.file.take() else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        let r = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(crate::fs::meta_of_statx(&op.stx))
        };
        self.open_done(conn, &op.rel, file, r);
    }

    /// Hands an open file and its metadata to the protocol, and caches them.
    fn open_done(
        &mut self,
        conn: &mut Conn<F::Proto>,
        rel: &str,
        file: File,
        meta: io::Result<crate::proto::FileMeta>,
    ) {
        let r = meta.map(|meta| Opened {
            file: Arc::new(file),
            meta,
        });
        if let Ok(o) = &r {
            self.open_cache.put(rel, o, self.now);
        }
        conn.proto.handle_open(r);
    }

    /// Queues the next step of the response in flight, or finishes it.
    fn advance_send(&mut self, key: Key, conn: &mut Conn<F::Proto>) {
        let fd = types::Fd(conn.fd.as_raw_fd());
        let k = key.to_u64();
        let Some(st) = conn.send.as_mut() else {
            return;
        };
        while let Some(chunk) = st.chunks.get(st.i) {
            if let Chunk::File { file, offset, len } = chunk {
                let (ffd, offset, len) = (types::Fd(file.as_raw_fd()), *offset, *len);
                if st.off >= len && st.in_pipe == 0 && st.copy_sent >= st.copy_len {
                    st.i += 1;
                    st.off = 0;
                    (st.copy_len, st.copy_sent) = (0, 0);
                    continue;
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
                let (entries, ops): (Vec<squeue::Entry>, u16) = if let Some(pipe) = &st.pipe {
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
                st.pending = entries.len() as u8;
                // SAFETY: the pipe, the copy buffer, the file (in `chunks`) and the
                // socket all belong to the boxed `Sending` and the connection, which
                // stay until every CQE of this step has arrived (`ops`).
                unsafe { self.push(&entries) };
                conn.ops |= ops;
                return;
            }
            // A small file body right after this run of memory rides in the same
            // send: READ it into a memory chunk, linked to one SENDMSG of the run, the
            // body and the memory after it. A short or failed READ breaks the link (the
            // SENDMSG completes -ECANCELED, never sending stale bytes). One step and one
            // send per response instead of three.
            let mut read = None;
            let (_, end) = gather(&st.chunks, st.i, st.off);
            if let Some(Chunk::File { file, offset, len }) = st.chunks.get(end) {
                if (1..=COPY_BUF as u64).contains(len) {
                    let (file, offset, len) = (file.clone(), *offset, *len as u32);
                    let mut body = vec![0u8; len as usize];
                    let e = opcode::Read::new(types::Fd(file.as_raw_fd()), body.as_mut_ptr(), len)
                        .offset(offset)
                        .build()
                        .flags(squeue::Flags::IO_LINK)
                        .user_data(Op::Read.ud(k));
                    // The Vec's heap buffer does not move with it.
                    st.chunks[end] = Chunk::Mem(body);
                    st.inlined.push(file);
                    st.reading = Some(len);
                    read = Some(e);
                }
            }
            let (slices, end) = gather(&st.chunks, st.i, st.off);
            if slices.is_empty() {
                st.i = end;
                st.off = 0;
                continue;
            }
            st.iov = slices
                .iter()
                .map(|s| libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                })
                .collect();
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
            let entries: &[squeue::Entry] = match &read {
                Some(r) => &[r.clone(), send],
                None => &[send],
            };
            st.pending = entries.len() as u8;
            // SAFETY: `msg` and `iov` live in the boxed `Sending`; the iovecs point into
            // memory chunks it owns, the READ into one of them (its heap buffer, which
            // stays put), from a file `inlined` keeps open. All stay until this step's
            // CQEs have arrived (`ops`).
            unsafe { self.push(entries) };
            conn.ops |= Op::SendMsg.bit() | if read.is_some() { Op::Read.bit() } else { 0 };
            return;
        }
        // Every byte is in the kernel: promise 2 lets the protocol go on.
        if let Some(st) = conn.send.take() {
            self.release(st);
        }
        conn.wait = None;
    }

    /// Returns a finished (or abandoned) response's pipe to the pool, and closes its
    /// files on the ring (IORING_OP_CLOSE) rather than with a close(2) per response.
    /// Only called with no step of it in the kernel.
    fn release(&mut self, st: Box<Sending>) {
        let Sending {
            chunks,
            pipe,
            in_pipe,
            inlined,
            ..
        } = *st;
        if let Some(pipe) = pipe {
            self.pipes.give(pipe, in_pipe == 0);
        }
        let files = chunks.into_iter().filter_map(|c| match c {
            Chunk::File { file, .. } => Some(file),
            _ => None,
        });
        for file in files.chain(inlined) {
            // The last holder closes it; others (the open-file cache, another response)
            // just drop their share.
            if let Ok(file) = Arc::try_unwrap(file) {
                let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
                let e = opcode::Close::new(types::Fd(fd))
                    .build()
                    .user_data(Op::Close.ud(0));
                // SAFETY: CLOSE points at no memory; the descriptor was ours alone and
                // is handed to the kernel to close.
                unsafe { self.push(&[e]) };
            }
        }
    }

    /// One CQE of a send step; the step is judged when its last CQE is in.
    fn send_part(&mut self, conn: &mut Conn<F::Proto>, op: Op, res: i32) {
        let Some(st) = conn.send.as_mut() else {
            return;
        };
        match op {
            Op::SpliceIn | Op::Read => st.r_in = Some(res),
            _ => st.r_out = Some(res),
        }
        st.pending = st.pending.saturating_sub(1);
        if st.pending > 0 {
            return;
        }
        let (r_in, r_out) = (st.r_in.take(), st.r_out.take());
        let timed_out = std::mem::take(&mut st.timed_out);
        let stats = &*self.st;
        if r_in.is_some_and(|n| n > 0) || r_out.is_some_and(|n| n > 0) {
            st.progress = self.now;
        }
        let mut fail = None;
        let err = |r: i32| CloseReason::Error(io::Error::from_raw_os_error(-r).kind());
        let is_file = matches!(st.chunks.get(st.i), Some(Chunk::File { .. }));
        if let Some(want) = st.reading.take() {
            // A small body READ into memory ahead of its SENDMSG.
            match r_in {
                Some(n) if n >= 0 && n as u32 == want => {}
                Some(n) if n >= 0 => fail = Some(CloseReason::FileShrunk),
                Some(n) if n == -libc::ECANCELED => {}
                Some(n) => fail = Some(err(n)),
                None => {}
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

    fn accepted(&mut self, conns: &mut Conns<F::Proto>, li: usize, res: i32, flags: u32) {
        if !cqueue::more(flags) && self.accepting.get(li) == Some(&true) {
            self.accepting[li] = false;
            self.internal -= 1;
        }
        if res >= 0 {
            // SAFETY: the kernel just handed us this descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            self.register(conns, fd);
        } else {
            match -res {
                libc::EMFILE | libc::ENFILE => {
                    // Rest instead of spinning; the tick re-arms.
                    Stats::add(&self.st.accept_emfile, 1);
                    self.paused_until = Some(Instant::now() + EMFILE_BACKOFF);
                    if self.accepting[li] {
                        self.cancel(Op::Accept.ud(li as u64));
                    }
                }
                libc::ECANCELED | libc::EINTR | libc::ECONNABORTED | libc::EAGAIN => {}
                // A listener shut for reading at shutdown answers EINVAL.
                _ if self.draining => {}
                e => crate::say!("ringserve: accept: {}", io::Error::from_raw_os_error(e)),
            }
        }
        if !self.accepting[li] {
            self.arm_accept(li);
        }
    }

    /// Gives a new socket a key and starts its protocol.
    fn register(&mut self, conns: &mut Conns<F::Proto>, fd: OwnedFd) {
        let ctx = &self.sh.ctx;
        let Ok(peer) = crate::sys::net::peer_addr(fd.as_fd()) else {
            return; // already reset by the peer
        };
        if self.draining {
            return;
        }
        if ctx
            .stats
            .gauges
            .open_conns
            .load(std::sync::atomic::Ordering::Relaxed)
            >= ctx.cfg.max_connections as u64
        {
            Stats::add(&self.st.refused_full, 1);
            crate::backend::refuse(fd, ctx.factory.overload_response());
            return;
        }
        let key = conns.insert(Box::new(Conn {
            fd,
            peer,
            proto: ctx.factory.new_conn(peer),
            ops: 0,
            wait: Some((Wait::Request, self.now)),
            deadline: None,
            recv_timed_out: false,
            recv_buf: None,
            send: None,
            open: None,
            closing: None,
            cancelled: false,
            cut: false,
            drained: false,
            starved: false,
            want_recv: false,
            multishot: false,
            parked: std::collections::VecDeque::new(),
            close_asked: false,
        }));
        Stats::add(&self.st.accepts, 1);
        Gauges::up(&ctx.stats.gauges.open_conns);
        ctx.hooks.on_accept(key, peer);
        self.ready.push(key);
    }

    /// Every [`TICK`]: receive deadlines, accept back-off, the shutdown deadline, and
    /// receives that ran out of buffers.
    fn tick(&mut self, conns: &mut Conns<F::Proto>) {
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
        let hard_stop = self.stop_deadline.is_some_and(|d| d <= now);
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
            } else if conn.starved {
                self.ready.push(key);
            } else if let Some(st) = conn.send.as_mut().filter(|st| st.pending > 0) {
                // Promise 2's bound: a send step that moved nothing for send_timeout is
                // cancelled; the step's CQEs then close the connection.
                if !st.timed_out && now.duration_since(st.progress) >= self.sh.ctx.cfg.send_timeout
                {
                    st.timed_out = true;
                    for op in [Op::SendMsg, Op::Send, Op::SpliceIn, Op::SpliceOut, Op::Read] {
                        if conn.ops & op.bit() != 0 {
                            self.cancel(op.ud(key.to_u64()));
                        }
                    }
                }
            } else if conn.ops & Op::Recv.bit() != 0
                && !conn.recv_timed_out
                && conn.deadline.is_some_and(|d| d <= now)
            {
                conn.recv_timed_out = true;
                self.cancel(Op::Recv.ud(key.to_u64()));
            }
        }
    }

    /// [`Control::close`](crate::Control::close): a connection waiting for a request
    /// closes now, one with a response in hand after it is sent (`drive` checks
    /// `close_asked`). A retired key is dropped and counted.
    fn close_asked(&mut self, conns: &mut Conns<F::Proto>, key: Key) {
        let Some(conn) = conns.get_mut(key) else {
            Stats::add(&self.st.stale_dropped, 1);
            return;
        };
        if conn.send.is_none() && conn.open.is_none() {
            conn.closing.get_or_insert(CloseReason::Requested);
        } else {
            conn.close_asked = true;
        }
        self.ready.push(key);
    }

    /// Stop accepting; close idle connections; let responses in flight finish until the
    /// shutdown timeout (the tick enforces it), or stop now.
    fn shutdown(&mut self, conns: &mut Conns<F::Proto>, level: ShutdownLevel) {
        let now = Instant::now();
        if !self.draining {
            self.draining = true;
            self.stop_deadline = Some(now + self.sh.ctx.cfg.shutdown_timeout);
            for li in 0..self.listeners.len() {
                let fd = self.listeners[li].raw();
                // SAFETY: the listener is open for the life of this loop.
                let _ = crate::sys::net::shutdown(
                    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
                    libc::SHUT_RD,
                );
                if self.accepting[li] {
                    self.cancel(Op::Accept.ud(li as u64));
                }
            }
            for (key, conn) in conns.iter_mut() {
                // Waiting for a request (idle, or half-received): close now.
                if conn.send.is_none() && conn.open.is_none() && conn.closing.is_none() {
                    conn.closing = Some(CloseReason::Shutdown);
                }
                self.ready.push(key);
            }
        }
        if level == ShutdownLevel::Immediate {
            self.stop_deadline = Some(now);
            self.tick_now(conns);
        }
    }

    fn tick_now(&mut self, conns: &mut Conns<F::Proto>) {
        for (key, conn) in conns.iter_mut() {
            if conn.closing.is_none() {
                conn.closing = Some(CloseReason::Shutdown);
                conn.cut = conn.send.is_some();
            }
            self.ready.push(key);
        }
    }

    /// Removes a connection with nothing in flight and closes it, once.
    fn retire(&mut self, conns: &mut Conns<F::Proto>, key: Key) {
        let Some(conn) = conns.remove(key).map(|c| *c) else {
            return;
        };
        let why = conn.closing.unwrap_or(CloseReason::Done);
        if let Some(st) = conn.send {
            self.release(st);
        }
        for input in conn.parked {
            if let (Input::Data(Some(bid), _), Some(b)) = (input, self.bufs.as_mut()) {
                b.recycle(bid);
            }
        }
        close_socket(conn.fd, why, conn.cut);
        let ctx = &self.sh.ctx;
        Stats::add(&self.st.closes, 1);
        Gauges::down(&ctx.stats.gauges.open_conns);
        ctx.hooks.on_close(key, conn.peer, why);
    }

    /// Cancels the ring's own operations and waits (bounded) for their completions,
    /// so nothing the kernel may still touch is freed under it.
    fn teardown(&mut self, inbox: &Notifier) {
        inbox.set_ring_fd(-1);
        // Queued CLOSEs still own descriptors: get them into the kernel.
        while !self.backlog.is_empty() {
            self.flush_backlog();
            if self.ring.submit_and_wait(1).is_err() {
                break;
            }
            self.ring.completion().for_each(drop);
        }
        self.cancel(Op::Tick.ud(0));
        self.cancel(Op::Wake.ud(0));
        let limit = Instant::now() + Duration::from_secs(2);
        while self.internal > 0 && Instant::now() < limit {
            if self.ring.submit_and_wait(1).is_err() {
                break;
            }
            let done: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (ud, res) in done {
                match Op::from((ud >> KEY_BITS) as u8) {
                    Some(Op::Tick) => self.internal -= 1,
                    Some(Op::Wake) if ud & 1 == 0 => self.internal -= 1,
                    Some(Op::Accept) if res >= 0 => {
                        // SAFETY: a late accept's descriptor is ours to close.
                        drop(unsafe { OwnedFd::from_raw_fd(res) });
                    }
                    _ => {}
                }
            }
        }
        if let Some(b) = &self.bufs {
            b.unregister(&self.ring);
        }
    }
}

/// The live connection a completion's key names, or `None` for a retired key (its
/// slot empty, or reused under a newer generation).
fn lookup<T>(conns: &mut ConnTable<T>, low: u64) -> Option<(Key, &mut T)> {
    let key = Key::from_u64(low)?;
    conns.get_mut(key).map(|c| (key, c))
}

impl Sending {
    fn new(chunks: Vec<Chunk>, now: Instant) -> Sending {
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
            progress: now,
            pending: 0,
            r_in: None,
            r_out: None,
            timed_out: false,
            reading: None,
            inlined: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A completion still in flight when its connection was closed and the slot reused
    /// comes back from the kernel with the old key and must not reach the new one.
    #[test]
    fn stale_completions_after_close_and_slot_reuse_are_dropped() {
        let mut ring = match IoUring::new(8) {
            Ok(r) => r,
            Err(e) => return crate::say!("SKIP: io_uring_setup: {e}"),
        };
        let mut conns: ConnTable<&str> = ConnTable::shard(4, 1);
        let old = conns.insert("closed");
        let nop = opcode::Nop::new()
            .build()
            .user_data(Op::Recv.ud(old.to_u64()));
        // SAFETY: a NOP points at no memory.
        unsafe { ring.submission().push(&nop) }.unwrap();
        conns.remove(old);
        let new = conns.insert("reused");
        assert_eq!(old.index(), new.index(), "the slot was reused");
        ring.submit_and_wait(1).unwrap();
        let cqe = ring.completion().next().unwrap();
        let ud = cqe.user_data();
        assert_eq!(Op::from((ud >> KEY_BITS) as u8), Some(Op::Recv));
        let low = ud & ((1 << KEY_BITS) - 1);
        assert!(
            lookup(&mut conns, low).is_none(),
            "stale completion reached the new connection"
        );
        let live = new.to_u64();
        assert_eq!(
            lookup(&mut conns, live).map(|(k, v)| (k, *v)),
            Some((new, "reused"))
        );
    }

    /// ETags come from dev/ino/size/mtime: STATX on the ring and the fstat fallback
    /// must agree on every one of them.
    #[test]
    fn statx_and_fstat_give_the_same_metadata() {
        let f = File::open("/proc/self/exe").unwrap();
        // SAFETY: statx is plain data; all-zero is a valid value.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor, a static empty path and a buffer we own.
        let rc = unsafe {
            libc::statx(
                f.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_BASIC_STATS,
                &mut stx,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        assert_eq!(
            crate::fs::meta_of_statx(&stx),
            crate::fs::meta_of(&f).unwrap()
        );
    }

    #[test]
    fn user_data_keeps_the_op_and_the_whole_key() {
        let mut conns: ConnTable<()> = ConnTable::shard(1, 200);
        let k = conns.insert(());
        for op in Op::ALL {
            let ud = op.ud(k.to_u64());
            assert_eq!(Op::from((ud >> KEY_BITS) as u8), Some(op));
            assert_eq!(Key::from_u64(ud & ((1 << KEY_BITS) - 1)), Some(k));
        }
    }
}
