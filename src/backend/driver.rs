//! The connection driver: everything protocol-facing, written once for every backend.
//!
//! A backend owns sockets, threads and the kernel; this file owns what a connection
//! *means*. [`Core::next`] is the one [`Step`] interpreter: it polls the protocol and
//! turns each step into an [`Action`] the backend lowers to the kernel (a blocking
//! syscall on an epoll worker, SQEs on a ring), after doing here whatever needs no
//! lowering:
//!
//! - `handle_drain` delivery, once, when the server starts draining;
//! - response counting and the access-log hand-off, as each response is handed over
//!   (so the log is in response order);
//! - the open-file cache: a hit answers `FsOp::Open` without the backend;
//! - the receive deadline of each wait, and a wait that expired before it began;
//! - the file-system operations that have no asynchronous lowering (listing, create,
//!   link, remove) and the temporary files a connection leaves unlinked;
//! - [`Control::close`](crate::Control::close): at once when the connection waits for
//!   a request, after the response in flight otherwise ([`Core::ask_close`]);
//! - the shutdown decision table ([`Core::closes_at_drain`], and `Recv` while draining);
//! - register/retire accounting ([`admit`], [`open`], [`retire`]): the connection
//!   limit, refusal, counters, the open-connections gauge and the lifecycle hooks.
//!
//! The backend reports back what the kernel did ([`Core::recv`], [`Core::sent`],
//! [`Core::opened`], ...) and calls `next` again once nothing is in flight. The tests
//! below drive it in memory, with a scripted protocol and no sockets, in the style of
//! quinn-proto's tests. Nothing in it needs a listener or a pool, so a blocking client
//! on one socket can drive a protocol through it the same way.

use super::{refuse, CloseReason, Ctx};
use crate::config::Config;
use crate::conn::Key;
use crate::fs::{Root, Temp};
use crate::log::Level;
use crate::open_cache::OpenCache;
use crate::proto::{
    Chunk, Fault, FileRef, FsDone, FsOp, LogLine, Protocol, ProtocolFactory, RecvFile, Step,
    TempFile, Wait,
};
use crate::stats::{Gauges, Stats};
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, Weak};

use std::time::{Duration, Instant, SystemTime};

/// The waits a backend enforces for the protocol: header and keep-alive from the
/// start of the wait, body from the last byte received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header: Duration,
    pub keepalive: Duration,
    pub body: Duration,
}

impl Timeouts {
    pub(crate) fn of(cfg: &Config) -> Timeouts {
        Timeouts {
            header: cfg.header_timeout,
            keepalive: cfg.keepalive_timeout,
            body: cfg.body_timeout,
        }
    }

    /// How long a receive waiting for `wait` may take.
    fn of_wait(&self, wait: Wait) -> Duration {
        match wait {
            Wait::Idle => self.keepalive,
            Wait::Request => self.header,
            Wait::Body => self.body,
        }
    }
}

/// Responses waiting to be timed (see [`Env::served`]): when their request arrived, and
/// how many responses went in one send. [`record_served`] times them.
pub(crate) type Served = Vec<(Instant, u32)>;

/// Records every response in `served` as handed to the kernel at `now`, into `st`'s
/// service-time histogram, and empties it.
pub(crate) fn record_served(st: &Stats, served: &mut Served, now: Instant) {
    for (arrived, n) in served.drain(..) {
        st.service
            .record_n(now.saturating_duration_since(arrived), u64::from(n));
    }
}

/// The open-file cache as a backend holds it: a ring's own, or the pool's shared one.
pub(crate) enum Cache<'a> {
    Own(&'a mut OpenCache),
    Shared(&'a Mutex<OpenCache>),
}

impl Cache<'_> {
    /// A hit whose descriptor's inode still has the size, mtime, inode and device it
    /// was cached with (see [`OpenCache::get_fresh`] for when that is asked).
    fn get(&mut self, path: &str, now: Instant, turn: Option<u64>) -> Option<crate::proto::Opened> {
        let fresh =
            |o: &crate::proto::Opened| crate::fs::meta_of(o.file.file()).ok() == Some(o.meta);
        match self {
            Cache::Own(c) => c.get_fresh(path, now, turn, fresh),
            Cache::Shared(m) => super::lock(m).get_fresh(path, now, turn, fresh),
        }
    }

    fn put(&mut self, path: &str, o: &crate::proto::Opened, now: Instant) {
        match self {
            Cache::Own(c) => c.put(path, o, now),
            Cache::Shared(m) => super::lock(m).put(path, o, now),
        }
    }

    fn forget(&mut self, path: &str) {
        match self {
            Cache::Own(c) => c.forget(path),
            Cache::Shared(m) => super::lock(m).forget(path),
        }
    }
}

/// What the driver needs from the backend's thread at one step.
pub(crate) struct Env<'a> {
    pub now: Instant,
    /// The caller's batch of input, where it has one ([`OpenCache::get_fresh`]): an
    /// io_uring loop turn. `None` (the epoll pool, whose workers share one cache and
    /// receive one connection at a time): every open-file cache hit is checked.
    pub turn: Option<u64>,
    /// Where a backend that submits a turn's sends together (io_uring) wants each
    /// response's arrival and count, to time them all with one clock read when it hands
    /// them to the kernel ([`Served`]). `None`: timed here, with a clock read each.
    pub served: Option<&'a mut Served>,
    /// The wall clock, for protocols that stamp dates.
    pub wall: SystemTime,
    /// The server is shutting down.
    pub draining: bool,
    /// The shutdown is a hand-off to a successor (see [`Core::closes_at_drain`]).
    pub handoff: bool,
    pub timeouts: &'a Timeouts,
    pub root: &'a Root,
    pub cache: Cache<'a>,
    /// The calling thread's counters.
    pub st: &'a Stats,
}

impl<'a> Env<'a> {
    /// The clocks now, not draining: a thread that drives one connection by itself (a
    /// blocking client, the in-memory tests).
    pub(crate) fn single(
        timeouts: &'a Timeouts,
        root: &'a Root,
        cache: &'a mut OpenCache,
        st: &'a Stats,
    ) -> Env<'a> {
        Env {
            now: Instant::now(),
            turn: None,
            served: None,
            wall: SystemTime::now(),
            draining: false,
            handoff: false,
            timeouts,
            root,
            cache: Cache::Own(cache),
            st,
        }
    }
}

/// What the backend must do next for a connection. It reports the outcome with the
/// matching `Core` method, then asks again.
#[derive(Debug)]
pub(crate) enum Action {
    /// Hand every byte to the kernel in order, ending the connection if no byte moves
    /// for `send_timeout`; then [`Core::sent`].
    Send(Vec<Chunk>),
    /// Receive; then [`Core::recv`], [`Core::eof`], or at `deadline` [`Core::timed_out`].
    Recv { deadline: Instant },
    /// Write `sink.head`, then move `sink.len` bytes of the socket into the file; end it
    /// when no byte arrives for `timeout`; then [`Core::recv_file_done`].
    RecvFile { sink: RecvFile, timeout: Duration },
    /// Open this path beneath the root (the cache missed); then [`Core::opened`].
    Open(String),
    /// fsync the file; then [`Core::synced`].
    Sync(FileRef),
    /// Close the connection: once nothing is in flight, close the socket and [`retire`].
    Close(CloseReason),
}

/// What the backend is doing for the connection, as far as the driver knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doing {
    Nothing,
    Recv,
    Send,
    Fs,
    RecvFile,
}

/// A peer's address in half a `SocketAddr`'s 32 bytes: an IPv4 one inline, an IPv6 one
/// (28 bytes with flow and scope) boxed. Every idle connection holds one.
enum Peer {
    V4(SocketAddrV4),
    V6(Box<SocketAddrV6>),
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Peer {
        match a {
            SocketAddr::V4(a) => Peer::V4(a),
            SocketAddr::V6(a) => Peer::V6(Box::new(a)),
        }
    }
}

impl Peer {
    fn get(&self) -> SocketAddr {
        match self {
            Peer::V4(a) => SocketAddr::V4(*a),
            Peer::V6(a) => SocketAddr::V6(**a),
        }
    }
}

/// One connection's protocol and everything the driver keeps about it.
pub(crate) struct Core<P> {
    pub proto: P,
    peer: Peer,
    /// The wait in progress; its clock started at `wait_start`. Kept apart (not an
    /// `Option<(Wait, Instant)>`) so the kind packs with the flags below: an idle
    /// connection is mostly this struct.
    wait: Option<Wait>,
    wait_start: Instant,
    /// `handle_drain` was delivered.
    drained: bool,
    /// Bytes have been received since the last response was sent (a hand-off drain
    /// waits for them).
    heard_input: bool,
    /// [`Control::close`](crate::Control::close) was asked.
    close_asked: bool,
    /// A request is being answered: from the protocol's first file-system step or
    /// file receive until it hands over a response.
    mid_request: bool,
    doing: Doing,
    /// Files created and not linked, and a file-system operation of several steps in
    /// progress: boxed, so a connection that never writes (every idle one) pays one
    /// pointer for them.
    files: Option<Box<Files>>,
    /// The last step was a wait that had already expired: the protocol heard its
    /// timeout. Asked for an expired wait again, the connection closes (a protocol
    /// that ignores timeouts must not loop here).
    expired: bool,
    /// The access-log lines of the responses being sent (in order: a pipelined burst
    /// goes as one send) and the bytes of the send in the kernel so far: written when
    /// the send ends, however it ends.
    log: Option<Box<SendLog>>,
    /// When the latest input arrived (`None`: none since a timeout, or ever): a
    /// response's service time runs from here. Kept across a response, so each of
    /// several pipelined requests read at once is timed from the read that brought it.
    arrived: Option<Instant>,
}

/// The access-log lines of a send in flight and its bytes in the kernel so far.
struct SendLog {
    first: LogLine,
    /// The rest of a pipelined burst's (empty, and unallocated, otherwise).
    more: Vec<LogLine>,
    sent: u64,
}

/// The steps of an operation the driver splits so that every fsync can go to the
/// backend (on io_uring, FSYNC on the ring: no disk stall blocks other connections).
struct FsSteps {
    /// The next action to hand the backend, if one is waiting.
    queued: Option<Action>,
    /// What the running fsync is for.
    then: AfterSync,
}

enum AfterSync {
    /// `FsOp::Link`: the file is synced; link it, then sync the directory.
    Link {
        temp: Temp,
        replace: bool,
    },
    /// The directory is synced: answer.
    Linked,
    Removed,
}

/// What a connection that writes files keeps.
#[derive(Default)]
struct Files {
    /// Created, unlinked files, each with a watch on the protocol's handle.
    held: Vec<(Weak<()>, Temp)>,
    /// A link or removal between its steps.
    steps: Option<FsSteps>,
}

impl<P: Protocol> Core<P> {
    /// A connection that has just been accepted: the header clock starts now.
    pub(crate) fn new(proto: P, peer: SocketAddr, now: Instant) -> Core<P> {
        Core {
            proto,
            peer: Peer::from(peer),
            wait: Some(Wait::Request),
            wait_start: now,
            drained: false,
            heard_input: false,
            close_asked: false,
            mid_request: false,
            doing: Doing::Nothing,
            files: None,
            expired: false,
            log: None,
            arrived: None,
        }
    }

    /// The peer's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer.get()
    }

    /// Polls the protocol until it needs the backend, and says for what.
    pub(crate) fn next(&mut self, env: &mut Env<'_>) -> Action {
        debug_assert_eq!(
            self.doing,
            Doing::Nothing,
            "next() with an action in flight"
        );
        let steps = self.files.as_mut().and_then(|f| f.steps.as_mut());
        if let Some(action) = steps.and_then(|s| s.queued.take()) {
            self.doing = Doing::Fs;
            return action;
        }
        loop {
            if let Some(f) = &mut self.files {
                // A temporary file whose handle the protocol dropped is abandoned.
                f.held.retain(|(w, _)| w.strong_count() > 0);
                if f.held.is_empty() && f.steps.is_none() {
                    self.files = None;
                }
            }
            if self.close_asked && !self.mid_request {
                return Action::Close(CloseReason::Requested);
            }
            // In a hand-off, the drain reaches the protocol once a request is coming
            // (its response then says `Connection: close`); told while idle, a
            // protocol would hang up on a client that may be sending one right now.
            let told = !env.handoff || self.mid_request || self.heard_input;
            if env.draining && !self.drained && told {
                self.drained = true;
                self.proto.handle_drain();
            }
            match self.proto.poll(env.wall) {
                Step::Send(chunks) => {
                    let n = self.proto.sent_responses().max(1);
                    Stats::add(&env.st.responses, u64::from(n));
                    if let Some(arrived) =
                        self.arrived.filter(|_| cfg!(not(feature = "no-counters")))
                    {
                        match env.served.as_deref_mut() {
                            // Timed when the backend hands the turn's sends over.
                            Some(served) => served.push((arrived, n)),
                            // One clock read per response, the counters' only one.
                            None => {
                                let took = Instant::now().saturating_duration_since(arrived);
                                env.st.service.record_n(took, u64::from(n));
                            }
                        }
                    }
                    // Written when the send ends, with the bytes that went out.
                    self.finish_log();
                    if let Some(first) = self.proto.take_log_line() {
                        let mut more = Vec::new();
                        while let Some(l) = self.proto.take_log_line() {
                            more.push(l);
                        }
                        self.log = Some(Box::new(SendLog {
                            first,
                            more,
                            sent: 0,
                        }));
                    }
                    while let Some(fault) = self.proto.take_fault() {
                        log_fault(self.peer(), &fault);
                    }
                    self.mid_request = false;
                    self.doing = Doing::Send;
                    return Action::Send(chunks);
                }
                Step::Fs(op) => {
                    self.mid_request = true;
                    if let Some(action) = self.fs(env, op) {
                        self.doing = Doing::Fs;
                        return action;
                    }
                }
                Step::Recv(_) if env.draining && !env.handoff && !self.mid_request => {
                    // Finished its response and would wait for another: close now,
                    // even if the protocol ignored `handle_drain`.
                    return Action::Close(CloseReason::Shutdown);
                }
                Step::Recv(wait) => {
                    let deadline = self.deadline(wait, env);
                    if env.now >= deadline {
                        if std::mem::replace(&mut self.expired, true) {
                            return Action::Close(CloseReason::Timeout);
                        }
                        Stats::add(&env.st.recv_timeouts, 1);
                        self.proto.handle_timeout();
                        continue;
                    }
                    self.expired = false;
                    self.doing = Doing::Recv;
                    return Action::Recv { deadline };
                }
                Step::RecvFile(sink) => {
                    self.mid_request = true;
                    self.doing = Doing::RecvFile;
                    let timeout = env.timeouts.body;
                    return Action::RecvFile { sink, timeout };
                }
                Step::Close => return Action::Close(CloseReason::Done),
            }
        }
    }

    /// Does `op` here, or hands it (or its first step) to the backend (`Some`).
    fn fs(&mut self, env: &mut Env<'_>, op: FsOp) -> Option<Action> {
        let root = env.root;
        let done = match op {
            // A hit is served only if its descriptor's inode is still what it was
            // cached as: a file rewritten in place is opened again, never sent with
            // its old length and ETag.
            FsOp::Open(path) => match env.cache.get(&path, env.now, env.turn) {
                Some(hit) => {
                    crate::proto::pool::give_string(path);
                    FsDone::Opened(Ok(hit))
                }
                None => return Some(Action::Open(path)),
            },
            FsOp::Sync(file) => return Some(Action::Sync(file)),
            // Listings and metadata changes are rare and have no ring lowering here:
            // done on the calling thread (a ring's, or a pool worker's).
            FsOp::ReadDir(path) => FsDone::Listed(root.read_dir(&path)),
            FsOp::Create(path) => FsDone::Created(root.create(&path).map(|t| self.keep(t))),
            FsOp::Reserve { file, len } => FsDone::Reserved(crate::fs::reserve(&file, len)),
            FsOp::Link { temp, replace } => match self.take_temp(&temp) {
                // Durable under its name: fsync the file, link, fsync the directory.
                Some(t) => {
                    return Some(
                        self.sync_then(t.file().clone(), AfterSync::Link { temp: t, replace }),
                    )
                }
                // Not a file this connection created (or linked already).
                None => FsDone::Linked(Err(io::Error::from_raw_os_error(libc::EINVAL))),
            },
            FsOp::Remove(path) => match root.remove_entry(&path) {
                Ok(dir) => {
                    env.cache.forget(&path);
                    return Some(self.sync_then(dir, AfterSync::Removed));
                }
                Err(e) => FsDone::Removed(Err(e)),
            },
        };
        self.proto.handle_fs(done);
        None
    }

    /// An fsync for the backend, and what follows it.
    fn sync_then(&mut self, file: FileRef, then: AfterSync) -> Action {
        let files = self.files.get_or_insert_with(Box::default);
        files.steps = Some(FsSteps { queued: None, then });
        Action::Sync(file)
    }

    /// This connection's created file that `temp` is the handle of.
    fn take_temp(&mut self, temp: &TempFile) -> Option<Temp> {
        let held = &mut self.files.as_mut()?.held;
        let watch = temp.watch();
        let at = held.iter().position(|(w, _)| w.ptr_eq(&watch))?;
        Some(held.swap_remove(at).1)
    }

    /// Registers a created file with this connection and gives the protocol its handle.
    fn keep(&mut self, t: Temp) -> TempFile {
        let handle = TempFile::new(t.file().clone());
        let files = self.files.get_or_insert_with(Box::default);
        files.held.push((handle.watch(), t));
        handle
    }

    /// The deadline of a receive the protocol asked for with `wait`. Header and
    /// keep-alive waits run from the start of the wait, not from the last byte: the
    /// same kind of wait keeps its start (a client trickling a header one byte at a
    /// time still runs out of time), a new kind starts it now. A body wait restarts
    /// with every byte received ([`Core::recv`]).
    fn deadline(&mut self, wait: Wait, env: &Env<'_>) -> Instant {
        if self.wait != Some(wait) {
            self.wait = Some(wait);
            self.wait_start = env.now;
        }
        self.wait_start + env.timeouts.of_wait(wait)
    }

    /// The deadline of the receive the backend is making (`None`: it is making none):
    /// what [`Action::Recv`] said, for a backend that keeps no copy of it.
    pub(crate) fn recv_deadline(&self, t: &Timeouts) -> Option<Instant> {
        match (self.doing, self.wait) {
            (Doing::Recv, Some(wait)) => Some(self.wait_start + t.of_wait(wait)),
            _ => None,
        }
    }

    /// Bytes arrived for the armed receive.
    pub(crate) fn recv(&mut self, data: &[u8], now: Instant) {
        self.doing = Doing::Nothing;
        self.heard_input = true;
        self.arrived = Some(now);
        if self.wait == Some(Wait::Body) {
            self.wait_start = now;
        }
        self.proto.handle_recv(data);
    }

    /// The backend will not make the receive it was asked for: a blocking client whose
    /// operation has its answer stops there.
    pub(crate) fn recv_dropped(&mut self) {
        debug_assert_eq!(self.doing, Doing::Recv);
        self.doing = Doing::Nothing;
    }

    /// The peer closed its side.
    pub(crate) fn eof(&mut self) {
        self.doing = Doing::Nothing;
        self.proto.handle_eof();
    }

    /// The armed receive outlived its deadline.
    pub(crate) fn timed_out(&mut self, st: &Stats) {
        self.doing = Doing::Nothing;
        // A response to a timeout (408) is not a request served.
        self.arrived = None;
        Stats::add(&st.recv_timeouts, 1);
        self.proto.handle_timeout();
    }

    /// `n` more bytes of the response in flight are in the kernel. A backend reports
    /// every byte, so a response cut short is logged with what went out.
    pub(crate) fn wrote(&mut self, n: u64) {
        if let Some(l) = &mut self.log {
            l.sent += n;
        }
    }

    /// The whole response is in the kernel (promise 2).
    pub(crate) fn sent(&mut self) {
        self.doing = Doing::Nothing;
        self.wait = None;
        // The response went out without the drain's `Connection: close`: a hand-off
        // drain waits for the next request before telling the protocol.
        self.heard_input = false;
        self.finish_log();
    }

    /// The backend's open of `path` finished; a success is cached.
    pub(crate) fn opened(
        &mut self,
        env: &mut Env<'_>,
        path: &str,
        result: io::Result<crate::proto::Opened>,
    ) {
        self.doing = Doing::Nothing;
        if let Ok(o) = &result {
            env.cache.put(path, o, env.now);
        }
        self.proto.handle_fs(FsDone::Opened(result));
    }

    /// The backend's fsync finished: an answer, or the next step of a link or
    /// removal (queued for the next `next`).
    pub(crate) fn synced(&mut self, env: &mut Env<'_>, result: io::Result<()>) {
        self.doing = Doing::Nothing;
        let Some(steps) = self.files.as_mut().and_then(|f| f.steps.take()) else {
            return self.proto.handle_fs(FsDone::Synced(result));
        };
        let done = match (steps.then, result) {
            (AfterSync::Link { mut temp, replace }, Ok(())) => {
                match env.root.link_entry(&mut temp, replace) {
                    Ok(dir) => {
                        env.cache.forget(temp.rel());
                        let files = self.files.get_or_insert_with(Box::default);
                        files.steps = Some(FsSteps {
                            queued: Some(Action::Sync(dir)),
                            then: AfterSync::Linked,
                        });
                        return;
                    }
                    Err(e) => FsDone::Linked(Err(e)),
                }
            }
            (AfterSync::Link { .. } | AfterSync::Linked, r) => FsDone::Linked(r),
            (AfterSync::Removed, r) => FsDone::Removed(r),
        };
        self.proto.handle_fs(done);
    }

    /// The backend's receive into a file finished: bytes of the connection written.
    pub(crate) fn recv_file_done(&mut self, result: io::Result<u64>) {
        self.doing = Doing::Nothing;
        self.wait = None;
        // The request is complete when its body is in the file.
        if cfg!(not(feature = "no-counters")) {
            self.arrived = Some(Instant::now());
        }
        self.proto.handle_recv_file(result);
    }

    /// [`Control::close`](crate::Control::close) reached the connection. True when it
    /// closes at once (it waits for a request); otherwise it closes after the response
    /// in flight, at the next [`Core::next`] that finds no request being answered.
    pub(crate) fn ask_close(&mut self) -> bool {
        self.close_asked = true;
        self.waits_for_request()
    }

    /// Whether a graceful shutdown closes this connection now, rather than letting the
    /// request it is answering finish (within `shutdown_timeout`). In a hand-off
    /// (`handoff`), none closes now: a connection waiting for a request gets its next
    /// one answered with the drain's `Connection: close`, so a keep-alive client is
    /// never hung up on while its request is on the wire; what stays idle closes at
    /// the shutdown timeout (or its own keep-alive timeout).
    pub(crate) fn closes_at_drain(&self, handoff: bool) -> bool {
        !handoff && self.waits_for_request()
    }

    /// Waiting for a request (idle, or part-received): nothing in hand to answer.
    fn waits_for_request(&self) -> bool {
        !self.mid_request && matches!(self.doing, Doing::Recv | Doing::Nothing)
    }
}

impl<P> Core<P> {
    /// Writes the access-log line of the response whose send has ended, completed or
    /// cut short (counted in `responses_cut`).
    fn finish_log(&mut self) {
        if let Some(l) = self.log.take() {
            // The send's bytes belong to its responses in order.
            let SendLog { first, more, sent } = *l;
            let mut left = sent;
            for line in std::iter::once(first).chain(more) {
                let whole = line.head.saturating_add(line.body);
                let sent = left.min(whole);
                left -= sent;
                if sent < whole {
                    Stats::add_here(|s| &s.responses_cut, 1);
                }
                crate::log::access::write(line.finish(sent));
            }
        }
    }
}

/// The cause of a failed response, as nginx's error log says one:
/// `open() "/dir/file" failed (13: Permission denied), client: 10.0.0.1, request: "GET
/// /dir/file HTTP/1.1"`. Rate-limited: a client can cause these at will.
fn log_fault(peer: SocketAddr, f: &Fault) {
    crate::log_limited!(
        Level::Error,
        "ringserve: {}() \"{}\" failed ({}), client: {}, request: \"{}\"",
        f.op,
        f.path,
        crate::log::error::describe(&f.error),
        peer.ip(),
        f.request
    );
}

impl<P> Drop for Core<P> {
    /// A connection that ends with a response in flight (a reset, a send timeout, a
    /// shutdown, a panic) still logs it, with the bytes that went out.
    fn drop(&mut self) {
        self.finish_log();
    }
}

/// Whether a new connection fits under `max_connections`, counted server-wide. A
/// connection that fits is counted in the open-connections gauge from here on; one
/// that does not is refused (the protocol's overload response, a lingering close) and
/// `None` comes back.
pub(crate) fn admit<F: ProtocolFactory>(ctx: &Ctx<F>, st: &Stats, fd: OwnedFd) -> Option<OwnedFd> {
    let max = ctx.cfg.max_connections as u64;
    let fits = ctx
        .stats
        .gauges
        .open_conns
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok();
    if fits {
        return Some(fd);
    }
    Stats::add(&st.refused_full, 1);
    refuse(fd, ctx.factory.overload_response());
    None
}

/// Undoes [`admit`] for a connection that never got a key (the server began draining).
pub(crate) fn unadmit<F>(ctx: &Ctx<F>) {
    Gauges::down(&ctx.stats.gauges.open_conns);
}

/// An admitted connection got `key`: count it, tell the hooks, start its protocol.
/// `None` if the factory or the hook panicked: the connection is then not opened (the
/// caller closes the socket and undoes the admission), and the thread lives on.
pub(crate) fn open<F: ProtocolFactory>(
    ctx: &Ctx<F>,
    st: &Stats,
    key: Key,
    peer: SocketAddr,
    now: Instant,
) -> Option<Core<F::Proto>> {
    let made = catch_unwind(AssertUnwindSafe(|| {
        let proto = ctx.factory.new_conn(peer);
        ctx.hooks.on_accept(key, peer);
        proto
    }));
    match made {
        Ok(proto) => {
            Stats::add(&st.accepts, 1);
            Some(Core::new(proto, peer, now))
        }
        Err(_) => {
            Stats::add(&st.panics, 1);
            None
        }
    }
}

/// A connection's socket is closed and its key removed: count it, lower the gauge,
/// tell the hooks (a panic in the hook is caught and counted). Its `Core`, if it
/// survived, is dropped by the caller: any temporary file it still holds is removed
/// then.
pub(crate) fn retire<F>(ctx: &Ctx<F>, st: &Stats, key: Key, peer: SocketAddr, why: CloseReason) {
    Stats::add(&st.closes, 1);
    Gauges::down(&ctx.stats.gauges.open_conns);
    if catch_unwind(AssertUnwindSafe(|| ctx.hooks.on_close(key, peer, why))).is_err() {
        Stats::add(&st.panics, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted protocol: `poll` returns the queued steps in order, then `Recv(Idle)`;
    /// every input is recorded.
    #[derive(Default)]
    struct Script {
        steps: VecDeque<Step>,
        heard: Vec<String>,
        temp: Option<TempFile>,
    }

    impl Protocol for Script {
        fn handle_recv(&mut self, data: &[u8]) {
            self.heard
                .push(format!("recv {}", String::from_utf8_lossy(data)));
        }
        fn handle_eof(&mut self) {
            self.heard.push("eof".into());
        }
        fn handle_timeout(&mut self) {
            self.heard.push("timeout".into());
        }
        fn handle_fs(&mut self, done: FsDone) {
            self.heard.push(match done {
                FsDone::Opened(r) => format!("opened {}", r.is_ok()),
                FsDone::Listed(r) => format!("listed {:?}", r.map(|v| v.len()).ok()),
                FsDone::Created(r) => {
                    let ok = r.is_ok();
                    self.temp = r.ok();
                    format!("created {ok}")
                }
                FsDone::Linked(r) => format!("linked {:?}", r.map_err(|e| e.raw_os_error())),
                FsDone::Removed(r) => format!("removed {}", r.is_ok()),
                FsDone::Synced(r) => format!("synced {}", r.is_ok()),
                FsDone::Reserved(r) => format!("reserved {}", r.is_ok()),
            });
        }
        fn handle_recv_file(&mut self, r: io::Result<u64>) {
            self.heard.push(format!("recv_file {:?}", r.ok()));
        }
        fn handle_drain(&mut self) {
            self.heard.push("drain".into());
        }
        fn poll(&mut self, _now: SystemTime) -> Step {
            self.steps.pop_front().unwrap_or(Step::Recv(Wait::Idle))
        }
    }

    /// A root, a cache and counters: everything an [`Env`] borrows.
    struct World {
        dir: std::path::PathBuf,
        root: Root,
        cache: OpenCache,
        st: Stats,
        t: Timeouts,
        now: Instant,
        draining: bool,
        handoff: bool,
    }

    impl World {
        fn new(tag: &str) -> World {
            let dir =
                std::env::temp_dir().join(format!("ringserve-driver-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("d")).unwrap();
            std::fs::write(dir.join("a.txt"), "aaa").unwrap();
            World {
                root: Root::open(&dir).unwrap(),
                dir,
                cache: OpenCache::new(8, Duration::from_secs(60)),
                st: Stats::default(),
                t: Timeouts {
                    header: Duration::from_secs(30),
                    keepalive: Duration::from_secs(75),
                    body: Duration::from_secs(60),
                },
                now: Instant::now(),
                draining: false,
                handoff: false,
            }
        }

        fn env(&mut self) -> Env<'_> {
            Env {
                now: self.now,
                turn: None,
                served: None,
                wall: SystemTime::UNIX_EPOCH,
                draining: self.draining,
                handoff: self.handoff,
                timeouts: &self.t,
                root: &self.root,
                cache: Cache::Own(&mut self.cache),
                st: &self.st,
            }
        }
    }

    impl Drop for World {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn core(steps: Vec<Step>, w: &World) -> Core<Script> {
        let p = Script {
            steps: steps.into(),
            ..Default::default()
        };
        Core::new(p, "192.0.2.1:9".parse().unwrap(), w.now)
    }

    fn send(s: &str) -> Step {
        Step::Send(vec![Chunk::Mem(s.as_bytes().to_vec())])
    }

    fn open(s: &str) -> Step {
        Step::Fs(FsOp::Open(s.into()))
    }

    #[test]
    fn a_send_is_counted_and_polling_waits_for_it() {
        let mut w = World::new("send");
        let mut c = core(vec![send("a"), send("b")], &w);
        assert!(matches!(c.next(&mut w.env()), Action::Send(_)));
        assert_eq!(c.doing, Doing::Send);
        c.sent();
        assert!(matches!(c.next(&mut w.env()), Action::Send(_)));
        c.sent();
        assert!(matches!(c.next(&mut w.env()), Action::Recv { .. }));
        assert_eq!(w.st.responses.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn an_open_goes_to_the_backend_once_then_comes_from_the_cache() {
        let mut w = World::new("cache");
        let mut c = core(vec![open("a.txt"), open("a.txt")], &w);
        let Action::Open(path) = c.next(&mut w.env()) else {
            panic!("a miss goes to the backend")
        };
        let r = w.root.open_beneath(&path);
        c.opened(&mut w.env(), &path, r);
        // The second open is answered from the cache without leaving the driver.
        assert!(matches!(c.next(&mut w.env()), Action::Recv { .. }));
        assert_eq!(c.proto.heard, ["opened true", "opened true"]);
    }

    #[test]
    fn listing_create_link_and_remove_run_here_and_answer_in_order() {
        let mut w = World::new("fs");
        let mut c = core(
            vec![
                Step::Fs(FsOp::ReadDir("".into())),
                Step::Fs(FsOp::Create("d/new.txt".into())),
            ],
            &w,
        );
        assert!(matches!(c.next(&mut w.env()), Action::Recv { .. }));
        assert_eq!(c.proto.heard, ["listed Some(2)", "created true"]);
        let temp = c.proto.temp.take().unwrap();
        let file = temp.file_ref().clone();
        c.recv(b"", w.now);
        c.proto.steps.extend([
            Step::Fs(FsOp::Sync(file)),
            Step::Fs(FsOp::Link {
                temp,
                replace: false,
            }),
            Step::Fs(FsOp::Remove("a.txt".into())),
        ]);
        // Sync, then Link's three steps (file, name, directory), then Remove's two:
        // every fsync goes to the backend.
        let mut fsyncs = 0;
        loop {
            match c.next(&mut w.env()) {
                Action::Sync(f) => {
                    fsyncs += 1;
                    let r = crate::fs::sync(&f);
                    c.synced(&mut w.env(), r);
                }
                Action::Recv { .. } => break,
                a => panic!("{a:?}"),
            }
        }
        assert_eq!(
            fsyncs, 4,
            "sync; link: file and directory; remove: directory"
        );
        assert!(w.dir.join("d/new.txt").exists());
        assert!(!w.dir.join("a.txt").exists());
        let tail = &c.proto.heard[3..];
        assert_eq!(tail, ["synced true", "linked Ok(())", "removed true"]);
    }

    #[test]
    fn a_dropped_temporary_file_is_removed_and_cannot_be_linked() {
        let mut w = World::new("temp");
        let mut c = core(vec![Step::Fs(FsOp::Create("gone.txt".into()))], &w);
        assert!(matches!(c.next(&mut w.env()), Action::Recv { .. }));
        assert_eq!(c.files.as_ref().unwrap().held.len(), 1);
        drop(c.proto.temp.take());
        c.recv(b"", w.now);
        let _ = c.next(&mut w.env());
        assert!(c.files.is_none(), "the abandoned file was not dropped");
        let visible: Vec<_> = std::fs::read_dir(&w.dir).unwrap().collect();
        assert_eq!(visible.len(), 2, "only a.txt and d/ remain: {visible:?}");
    }

    #[test]
    fn a_wait_that_expired_before_it_began_times_out_here() {
        let mut w = World::new("expired");
        let mut c = core(vec![Step::Recv(Wait::Request)], &w);
        w.now += Duration::from_secs(31);
        // Header clock started at accept: 31 s later the wait is already over.
        assert!(matches!(c.next(&mut w.env()), Action::Recv { .. }));
        assert_eq!(c.proto.heard, ["timeout"]);
        assert_eq!(w.st.recv_timeouts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn header_waits_keep_their_start_and_body_waits_restart_on_each_byte() {
        let mut w = World::new("clocks");
        let t0 = w.now;
        let mut c = core(vec![Step::Recv(Wait::Request)], &w);
        w.now += Duration::from_secs(10);
        let Action::Recv { deadline } = c.next(&mut w.env()) else {
            panic!()
        };
        assert_eq!(deadline, t0 + Duration::from_secs(30), "from the accept");
        c.recv(b"x", w.now);
        c.proto.steps.push_back(Step::Recv(Wait::Body));
        let Action::Recv { deadline } = c.next(&mut w.env()) else {
            panic!()
        };
        let t1 = w.now;
        assert_eq!(deadline, t1 + Duration::from_secs(60));
        w.now += Duration::from_secs(50);
        c.recv(b"y", w.now);
        c.proto.steps.push_back(Step::Recv(Wait::Body));
        let Action::Recv { deadline } = c.next(&mut w.env()) else {
            panic!()
        };
        assert_eq!(
            deadline,
            w.now + Duration::from_secs(60),
            "progress restarts it"
        );
    }

    /// B5/B9/B10: one behaviour for `Control::close`. Waiting for a request: at once.
    #[test]
    fn close_asked_while_waiting_for_a_request_closes_at_once() {
        let mut w = World::new("close-idle");
        let mut c = core(vec![], &w);
        assert!(matches!(c.next(&mut w.env()), Action::Recv { .. }));
        assert!(c.ask_close(), "waiting for a request: close now");
    }

    /// With pipelined requests behind it (B9), the close comes after the response in
    /// flight, not after the pipeline runs dry.
    #[test]
    fn close_asked_during_a_send_closes_after_it_even_with_pipelined_input() {
        let mut w = World::new("close-send");
        let mut c = core(vec![send("1"), send("2"), send("3")], &w);
        assert!(matches!(c.next(&mut w.env()), Action::Send(_)));
        assert!(!c.ask_close(), "a response is in flight");
        c.sent();
        let a = c.next(&mut w.env());
        assert!(matches!(a, Action::Close(CloseReason::Requested)), "{a:?}");
    }

    /// With an open in flight (B10), the response is still produced and sent first.
    #[test]
    fn close_asked_during_an_open_still_answers_the_request() {
        let mut w = World::new("close-open");
        let mut c = core(vec![open("a.txt"), send("the answer")], &w);
        let Action::Open(path) = c.next(&mut w.env()) else {
            panic!()
        };
        assert!(!c.ask_close(), "a request is being answered");
        let r = w.root.open_beneath(&path);
        c.opened(&mut w.env(), &path, r);
        assert!(matches!(c.next(&mut w.env()), Action::Send(_)), "answered");
        c.sent();
        assert!(matches!(
            c.next(&mut w.env()),
            Action::Close(CloseReason::Requested)
        ));
    }

    #[test]
    fn drain_is_delivered_once_and_an_idle_connection_closes() {
        let mut w = World::new("drain");
        let mut c = core(vec![send("last")], &w);
        w.draining = true;
        assert!(matches!(c.next(&mut w.env()), Action::Send(_)));
        c.sent();
        assert!(matches!(
            c.next(&mut w.env()),
            Action::Close(CloseReason::Shutdown)
        ));
        assert_eq!(c.proto.heard, ["drain"]);
        assert!(c.closes_at_drain(false));
    }

    #[test]
    fn a_hand_off_drain_waits_for_the_next_request_and_then_tells_the_protocol() {
        let mut w = World::new("handoff");
        let mut c = core(vec![send("first")], &w);
        c.recv(b"GET", w.now);
        assert!(matches!(c.next(&mut w.env()), Action::Send(_)));
        // The drain comes while that response (without `Connection: close`) is sent.
        (w.draining, w.handoff) = (true, true);
        c.sent();
        c.proto.heard.clear();
        // Idle in a hand-off: not closed, not told (it would hang up), still waiting.
        assert!(matches!(c.next(&mut w.env()), Action::Recv { .. }));
        assert!(!c.closes_at_drain(true) && c.closes_at_drain(false));
        assert!(c.proto.heard.is_empty());
        // A request comes: now the protocol hears of the drain, before answering it.
        c.proto.steps.push_back(send("second"));
        c.recv(b"GET", w.now);
        assert!(matches!(c.next(&mut w.env()), Action::Send(_)));
        assert_eq!(c.proto.heard, ["recv GET", "drain"]);
    }

    #[test]
    fn a_request_being_answered_is_not_closed_by_a_drain() {
        let mut w = World::new("drain-busy");
        let mut c = core(vec![open("a.txt")], &w);
        assert!(matches!(c.next(&mut w.env()), Action::Open(_)));
        assert!(!c.closes_at_drain(false));
    }

    #[test]
    fn a_file_receive_is_a_request_in_progress_with_the_body_timeout() {
        let mut w = World::new("recvfile");
        let f = w.root.open_beneath("a.txt").unwrap().file;
        let sink = RecvFile {
            file: f,
            offset: 0,
            head: b"h".to_vec(),
            len: 10,
        };
        let mut c = core(vec![Step::RecvFile(sink), send("done")], &w);
        let Action::RecvFile { sink, timeout } = c.next(&mut w.env()) else {
            panic!()
        };
        assert_eq!((sink.len, timeout), (10, Duration::from_secs(60)));
        assert!(!c.ask_close(), "an upload in progress is not cut");
        c.recv_file_done(Ok(10));
        assert!(matches!(c.next(&mut w.env()), Action::Send(_)));
        c.sent();
        assert!(matches!(c.next(&mut w.env()), Action::Close(_)));
        assert_eq!(c.proto.heard, ["recv_file Some(10)"]);
    }
}
