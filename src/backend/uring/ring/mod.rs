//! One ring's event loop: accept, receive, send, splice, open, time out, shut down.
//!
//! Each turn: one `io_uring_enter` submits everything queued and waits for at least one
//! completion; queued notifications are handled first (a bounded number), then every
//! completion. A connection is driven (the driver asked for its next action) only when
//! none of its operations is in the kernel, which is promise 1's "one operation per
//! direction" and promise 2's "poll again only after the whole send".
//!
//! The files here split the ring by verb: `user_data` (what a CQE names), `sq` (the
//! submit edge), `accept`, `recv`, `open` (OPENAT2, STATX, FSYNC), `send`, `sink` (a
//! receive into a file), and `lifecycle` (tick, close requests, shutdown, retire and
//! teardown). **The memory-safety rule every `unsafe` push relies on is stated once, in
//! `lifecycle.rs`**, with how each exit path keeps it.

mod accept;
mod lifecycle;
mod open;
mod recv;
mod send;
mod sink;
mod sq;
mod step;
mod user_data;

use super::bufs::{BufRing, PipePool};
use super::{Caps, ListenFd, Note, Notifier, Shared};
use crate::backend::driver::{self, Action, Cache, Core, Env, Served, Timeouts};
use crate::conn::{ConnTable, Key};
use crate::open_cache::OpenCache;
use crate::proto::{FileRef, ProtocolFactory};
use crate::stats::Stats;
use io_uring::{cqueue, squeue, types, IoUring};
use recv::{Input, Parked};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use user_data::Op;

use crate::backend::CloseReason;

pub(super) use user_data::wake_user_data;

/// How often the ring checks receive deadlines, accept back-off and shutdown deadlines.
const TICK: Duration = Duration::from_millis(100);
/// Notifications handled per loop turn, so a flood cannot starve I/O.
const NOTES_PER_TURN: usize = 16;
/// Pipes per ring: what splicing may hold of the user's pipe pages.
const MAX_PIPES: usize = 32;

/// One connection, owned by its ring for life.
struct Conn<P> {
    fd: OwnedFd,
    core: Core<P>,
    /// Operations in the kernel that name this connection, one bit per kind.
    ops: u32,
    recv_timed_out: bool,
    /// Per-connection receive buffer, without a buffer ring: held only while a receive
    /// is in flight.
    recv_buf: Option<recv::RecvBuf>,
    send: Option<Box<send::Sending>>,
    /// The one open, fsync or receive into a file in flight (the driver asks for one
    /// at a time), with what its SQEs point at.
    job: Option<Job>,
    /// Set once the connection is to close; it does when `ops` is empty.
    closing: Option<CloseReason>,
    cancelled: bool,
    /// A send was cut short: close with RST.
    cut: bool,
    /// A receive came back ENOBUFS (or a paused multishot receive ended while input is
    /// wanted): armed again once a buffer is recycled, or at the tick; never in a loop.
    starved: bool,
    /// The protocol asked for input and has not had it yet. Input that a multishot
    /// receive delivers at other times is parked.
    want_recv: bool,
    /// The armed receive is multishot: it stays in the kernel across requests.
    multishot: bool,
    /// Multishot input that arrived while the protocol was not asking (it was sending):
    /// held, in order, buffers and all, until it asks.
    parked: Parked,
}

/// What a connection's `job` holds for the kernel.
enum Job {
    Open(Box<open::Opening>),
    Sink(Box<sink::Receiving>),
    /// The file an FSYNC in flight names: held, never read, so the descriptor lives
    /// until the CQE.
    #[allow(dead_code)]
    Sync(FileRef),
}

impl<P> Conn<P> {
    /// A new connection: nothing in flight, nothing held.
    fn new(fd: OwnedFd, core: Core<P>) -> Conn<P> {
        Conn {
            fd,
            core,
            ops: 0,
            recv_timed_out: false,
            recv_buf: None,
            send: None,
            job: None,
            closing: None,
            cancelled: false,
            cut: false,
            starved: false,
            want_recv: false,
            multishot: false,
            parked: Parked::default(),
        }
    }

    fn has_sink(&self) -> bool {
        matches!(self.job, Some(Job::Sink(_)))
    }

    fn take_open(&mut self) -> Option<Box<open::Opening>> {
        match self.job.take() {
            Some(Job::Open(op)) => Some(op),
            other => {
                self.job = other;
                None
            }
        }
    }

    fn take_sink(&mut self) -> Option<Box<sink::Receiving>> {
        match self.job.take() {
            Some(Job::Sink(rx)) => Some(rx),
            other => {
                self.job = other;
                None
            }
        }
    }
}

/// A ring's connections. Boxed: the table doubles as it grows, and a slot of a box
/// costs 16 bytes where a whole connection (protocol state included) costs hundreds, so
/// idle connections cost what they hold, not the table's spare capacity. The box is
/// also what keeps every pointer an SQE holds into a connection stable.
type Conns<P> = ConnTable<Box<Conn<P>>>;

/// Everything a ring thread owns but the connection table, so the two can be borrowed
/// apart. **Field order is drop order**: `ring` is first, so its descriptor is closed
/// before any memory below (buffers, timespecs) is freed; teardown has drained every
/// operation by then (`lifecycle.rs`).
struct Io<'a, F: ProtocolFactory> {
    ring: IoUring,
    sh: &'a Shared<F>,
    inbox: &'a Notifier,
    me: usize,
    caps: Caps,
    /// The provided-buffer ring: unregistered by teardown, after the last receive.
    bufs: Option<BufRing>,
    pipes: PipePool,
    /// The timespecs TIMEOUTs point at; boxed so they never move.
    tick_ts: Box<types::Timespec>,
    teardown_ts: Box<types::Timespec>,
    /// The eventfd READ's buffer.
    wake_buf: Box<u64>,
    listeners: Vec<ListenFd>,
    /// Per listener: an ACCEPT is armed.
    accepting: Vec<bool>,
    /// Listeners seen with a connection waiting at the last tick (accept.rs,
    /// [`Io::rearm_stranded`]).
    queued: Vec<bool>,
    /// Accept rests until then (EMFILE).
    paused_until: Option<Instant>,
    /// SQEs in the kernel whose last CQE has not arrived: teardown waits for zero.
    inflight: usize,
    draining: bool,
    /// The drain is a hand-off: the listeners are a successor's too (never shut), a
    /// connection accepted meanwhile is served, idle ones wait for their next request.
    handoff: bool,
    stop_deadline: Option<Instant>,
    /// Connections to drive or retry after this batch of completions.
    ready: Vec<Key>,
    /// Connections whose receive found no buffer, waiting for one to be recycled.
    starved: Vec<Key>,
    /// A provided buffer went back to the kernel this turn.
    recycled: bool,
    /// SQE groups that did not fit the submission queue yet, in order.
    backlog: VecDeque<Vec<squeue::Entry>>,
    /// This ring's recently opened files (`--open-file-cache`): a hit skips OPENAT2,
    /// STATX and CLOSE.
    open_cache: OpenCache,
    /// Finished sends' boxes, reused (with their iovec and file lists) for the next:
    /// the allocations are what is kept, hence boxed inside the `Vec`.
    #[allow(clippy::vec_box)]
    spare_sends: Vec<Box<send::Sending>>,
    timeouts: Timeouts,
    /// Teardown has begun: the ring is not entered for new work, so descriptors are
    /// closed with close(2), not IORING_OP_CLOSE.
    tearing_down: bool,
    /// The clocks, read once per loop turn rather than per connection step: every
    /// completion of a turn arrived by then, and a clock read is a measurable share of
    /// a small request's cost.
    now: Instant,
    wall: SystemTime,
    /// Loop turns so far: the open-file cache checks a hit at most once a turn.
    turns: u64,
    /// The responses of this turn, timed when the next enter hands them to the kernel.
    served: Served,
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
    let mut notes = Vec::new();
    let bufs = if sh.caps.buf_ring {
        // Config::validate bounds the count, so the power of two fits a u16.
        let count = sh.ctx.cfg.uring_buffers.max(1).next_power_of_two();
        match BufRing::register(&ring, count, recv::RECV_BUF) {
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
    let mut io = Io::new(
        &sh,
        &inbox,
        me,
        ring,
        listeners,
        bufs,
        counting.stats().clone(),
    );
    // Config::validate caps the rings at 256, so the shard number is the ring's own.
    let mut conns: Conns<F::Proto> = ConnTable::shard(
        sh.ctx.cfg.max_connections.min(1024),
        u8::try_from(me).expect("at most 256 rings"),
    );
    // Whatever way the loop ends (done, io_uring_enter failing, or a panic outside the
    // per-connection catch_unwind), teardown runs before `conns` or `io` is dropped.
    let served = catch_unwind(AssertUnwindSafe(|| io.serve(&mut conns)));
    if served.is_err() {
        Stats::add(&io.st.panics, 1);
        crate::log_error!("ringserve: ring {me}: the event loop panicked; closing its connections");
    }
    io.teardown(&mut conns);
    drop(counting);
}

impl<'a, F: ProtocolFactory> Io<'a, F> {
    fn new(
        sh: &'a Shared<F>,
        inbox: &'a Notifier,
        me: usize,
        ring: IoUring,
        listeners: Vec<ListenFd>,
        bufs: Option<BufRing>,
        st: Arc<Stats>,
    ) -> Io<'a, F> {
        let n = listeners.len();
        let cfg = &sh.ctx.cfg;
        Io {
            ring,
            sh,
            inbox,
            me,
            caps: sh.caps,
            bufs,
            pipes: PipePool::new(MAX_PIPES),
            tick_ts: Box::new(types::Timespec::from(TICK)),
            teardown_ts: Box::new(types::Timespec::from(lifecycle::TEARDOWN_STEP)),
            wake_buf: Box::new(0),
            listeners,
            accepting: vec![false; n],
            queued: vec![false; n],
            paused_until: None,
            inflight: 0,
            draining: false,
            handoff: false,
            stop_deadline: None,
            ready: Vec::new(),
            starved: Vec::new(),
            recycled: false,
            backlog: VecDeque::new(),
            spare_sends: Vec::new(),
            open_cache: OpenCache::sharing(
                cfg.open_file_cache,
                cfg.open_file_cache_valid,
                sh.ctx.replaced.clone(),
            ),
            timeouts: Timeouts::of(cfg),
            tearing_down: false,
            now: Instant::now(),
            wall: SystemTime::now(),
            turns: 0,
            served: Served::new(),
            st,
        }
    }
}

impl<F: ProtocolFactory> Io<'_, F> {
    /// The loop, until the ring has drained at shutdown or cannot go on.
    fn serve(&mut self, conns: &mut Conns<F::Proto>) {
        self.arm_tick();
        self.arm_wake();
        for li in 0..self.listeners.len() {
            self.arm_accept(li);
        }
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            if let Err(e) = self.turn(conns, &mut cqes) {
                crate::log_error!(
                    "ringserve: ring {}: io_uring_enter: {e}; ring stops",
                    self.me
                );
                return;
            }
            if self.draining && conns.is_empty() && self.accepting.iter().all(|a| !a) {
                return;
            }
            let limit = self.stop_deadline.map(|d| d + lifecycle::TEARDOWN_LIMIT);
            if limit.is_some_and(|l| self.now >= l) {
                // Something ignores cancellation (a hung disk, a hard NFS mount):
                // teardown bounds the rest, and leaks rather than hang.
                crate::log_warn!(
                    "ringserve: ring {}: {} connections still busy past the shutdown timeout",
                    self.me,
                    conns.len()
                );
                return;
            }
        }
    }

    /// One loop turn: submit and wait, notifications, completions, then the
    /// connections they touched.
    fn turn(
        &mut self,
        conns: &mut Conns<F::Proto>,
        cqes: &mut Vec<(u64, i32, u32)>,
    ) -> io::Result<()> {
        self.flush_backlog();
        if !self.served.is_empty() {
            // One clock read for every response of the last turn: this enter submits
            // their sends.
            driver::record_served(&self.st, &mut self.served, Instant::now());
        }
        self.enter()?;
        Stats::add(&self.st.uring_enters, 1);
        // Counted before the completions are reaped: everything this turn handles
        // arrived before the reap (see `OpenCache::get_fresh`).
        self.turns += 1;
        self.now = Instant::now();
        self.wall = SystemTime::now();
        for note in self.inbox.take(NOTES_PER_TURN) {
            match note {
                Note::Shutdown(level) => self.shutdown(conns, level),
                Note::Close(key) => self.close_asked(conns, key),
            }
        }
        cqes.clear();
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        Stats::add(&self.st.cqes, cqes.len() as u64);
        for &(ud, res, flags) in cqes.iter() {
            self.complete(conns, ud, res, flags);
        }
        self.run_ready(conns);
        if std::mem::take(&mut self.recycled) && !self.starved.is_empty() {
            // Buffers came back: receives that found none try again, once.
            self.ready.append(&mut self.starved);
            self.run_ready(conns);
        }
        Ok(())
    }

    /// Submits what is queued and waits for a completion. Errors that only mean "try
    /// again" are absorbed; what comes back means the ring cannot go on.
    fn enter(&mut self) -> io::Result<()> {
        match self.ring.submit_and_wait(1) {
            Ok(_) => Ok(()),
            // EBUSY: completions must be reaped before more can be submitted.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EINTR)) => Ok(()),
            // EAGAIN: the kernel could not allocate request memory this time.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                std::thread::sleep(Duration::from_millis(1));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The driver's view of this thread, for one step.
    fn env(&mut self) -> Env<'_> {
        Env {
            now: self.now,
            turn: Some(self.turns),
            served: Some(&mut self.served),
            wall: self.wall,
            draining: self.draining,
            handoff: self.handoff,
            timeouts: &self.timeouts,
            root: &self.sh.ctx.root,
            cache: Cache::Own(&mut self.open_cache),
            st: &self.st,
        }
    }

    /// One completion.
    fn complete(&mut self, conns: &mut Conns<F::Proto>, ud: u64, res: i32, flags: u32) {
        if ud != user_data::WAKE_MSG && !cqueue::more(flags) {
            self.inflight = self.inflight.saturating_sub(1);
        }
        let (op, low) = Op::of(ud);
        let Some(op) = op else {
            return;
        };
        match op {
            Op::Accept => return self.accepted(conns, low as usize, res, flags),
            Op::Tick => return self.tick(conns),
            Op::Wake if ud == user_data::WAKE_READ => {
                // The eventfd READ; a MSG_RING wakeup needs nothing: notes are read
                // every turn.
                if !(self.draining && res == -libc::ECANCELED) {
                    self.arm_wake();
                }
                return;
            }
            Op::Wake | Op::Cancel | Op::Close | Op::Teardown => return,
            _ => {}
        }
        let Some((key, conn)) = user_data::lookup(conns, low) else {
            return self.stale(op, res, flags);
        };
        if !(op == Op::Recv && cqueue::more(flags)) {
            conn.ops &= !op.bit();
        }
        // These may call into the protocol; a panic there closes only this connection.
        let r = catch_unwind(AssertUnwindSafe(|| match op {
            Op::Recv => self.received(key, conn, res, flags),
            Op::Open => self.opened(key, conn, res),
            Op::Stat => self.stated(conn, res),
            Op::Fsync => self.synced(conn, res),
            Op::SinkIn | Op::SinkOut | Op::SinkRecv | Op::SinkWrite => {
                self.sink_part(conn, op, res)
            }
            _ => self.send_part(conn, op, res),
        }));
        if r.is_err() {
            Stats::add(&self.st.panics, 1);
            conn.closing = Some(CloseReason::Panic);
            conn.cut = true;
        }
        // A receive with no buffer waits for a recycle or the tick (never a spin).
        if !conn.starved || conn.closing.is_some() {
            self.ready.push(key);
        }
    }

    /// A completion whose key is retired. Never expected (a connection leaves the table
    /// only with no operation in flight), but what it carries is not leaked: a provided
    /// buffer goes back, a descriptor is closed.
    fn stale(&mut self, op: Op, res: i32, flags: u32) {
        Stats::add(&self.st.stale_dropped, 1);
        if let (Some(bid), Some(b)) = (cqueue::buffer_select(flags), self.bufs.as_mut()) {
            b.recycle(bid);
            self.recycled = true;
        }
        if op == Op::Open && res >= 0 {
            // SAFETY: the kernel just handed us this descriptor, and nothing else has it.
            drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(res) });
        }
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
                self.cancel_all(key, conn.ops);
            }
        }
    }

    /// Lowers the driver's actions until the connection waits on the kernel or closes.
    fn drive(&mut self, key: Key, conn: &mut Conn<F::Proto>) {
        loop {
            if conn.closing.is_some() {
                return;
            }
            if conn.send.is_some() {
                self.advance_send(key, conn);
                if conn.send.is_some() || conn.closing.is_some() {
                    return;
                }
            }
            if conn.has_sink() {
                self.advance_sink(key, conn);
                if conn.has_sink() || conn.closing.is_some() {
                    return;
                }
            }
            if conn.starved {
                let deadline = conn.core.recv_deadline(&self.timeouts);
                if deadline.is_some_and(|d| d <= self.now) {
                    // Starved past its deadline: the wait is over all the same.
                    (conn.starved, conn.want_recv) = (false, false);
                    conn.core.timed_out(&self.st);
                    continue;
                }
                // Woken by a recycled buffer or the tick: try again.
                if self.arm_recv(key, conn) {
                    continue;
                }
                return;
            }
            if conn.want_recv {
                // Waiting for input (a passive multishot receive is armed): nothing to
                // do until it comes, whoever put the connection on the ready list.
                return;
            }
            let action = conn.core.next(&mut self.env());
            match action {
                Action::Send(chunks) => {
                    conn.send = Some(self.sending(chunks));
                }
                // The core keeps the deadline (`Core::recv_deadline`).
                Action::Recv { .. } => {
                    if self.arm_recv(key, conn) {
                        continue;
                    }
                    return;
                }
                Action::RecvFile { sink, timeout } => {
                    let rx = sink::Receiving::new(sink, timeout, self.now);
                    conn.job = Some(Job::Sink(Box::new(rx)));
                }
                Action::Open(path) => {
                    if self.open(key, conn, path) {
                        return;
                    }
                }
                Action::Sync(file) => return self.submit_fsync(key, conn, file),
                Action::Close(why) => {
                    conn.closing = Some(why);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// An idle connection's memory is mostly its `Conn` (bench's idle-10k measures the
/// RSS): a field that grows it shows here first. Raise the bound only with a reason.
/// A test build's `Http1` is 24 bytes larger (`sent_lens`): 280 here is 256 in release,
/// a 272-byte malloc chunk, and with the table's 16-byte slot 288 bytes a connection.
#[cfg(all(test, target_pointer_width = "64"))]
#[test]
fn an_http_connection_stays_within_its_size_budget() {
    let n = std::mem::size_of::<Conn<crate::proto::http1::Http1>>();
    assert!(n <= 280, "a ring's HTTP connection is {n} bytes");
}
