//! The epoll fallback: an EPOLLET|EPOLLONESHOT worker pool, the model of the seed
//! `epoll-oneshot-worker-pool-server.txt`, with its leaks and races taken out.
//!
//! - **One owner.** Every connection is registered EPOLLIN|EPOLLRDHUP|EPOLLET|
//!   EPOLLONESHOT with its [`Key`] as the event data. Workers wait for one event at a
//!   time. The worker that gets a connection's event takes the connection out of the
//!   table (`Parked` → `Owned`); one-shot means no other worker can be told about it
//!   until the owner parks it again and re-arms it with EPOLL_CTL_MOD, which happens
//!   under the table lock so no one can close it in between. An event whose key is
//!   stale, or whose connection is not parked, is dropped and counted.
//! - **The driver** (`backend/driver.rs`) interprets the protocol's steps; this file
//!   lowers its actions: a receive is one non-blocking `recv` (park on EAGAIN), a send
//!   is the blocking send ([`send`]), an open or fsync is the syscall on the worker, a
//!   receive into a file is a [`Sink`](super::sink::Sink) that parks between bursts.
//! - **Blocking send** ([`send`]): the owner sends a whole response before it asks the
//!   protocol for anything else. A socket that stays full for [`send::PARK_AFTER`]
//!   parks the connection with its send cursor, armed EPOLLOUT|EPOLLONESHOT, so a slow
//!   reader holds no worker; the worker that gets its event goes on with the send.
//! - **The pool** starts at `workers_min`. When a worker is about to block on a peer
//!   (a send that must wait for writability) and finds every worker busy, it starts
//!   one more, up to `workers_max`. The seed checks this when a worker takes an event;
//!   checking where the worker blocks keeps CPU-bound load from growing the pool (a
//!   worker merely preempted mid-request also counts as busy, and on a loaded core
//!   that fed itself: 25 threads on one CPU, and a 150 ms p99). A worker that waits
//!   `worker_idle_timeout` for an event while the pool is above the minimum leaves.
//! - **Timeouts.** A parked connection carries the deadline of its wait (header,
//!   keep-alive, body, or a parked send's `send_timeout` from its last progress). One coordinator thread scans parked connections every [`TICK`]; an
//!   expired one is taken out of the table (so it has exactly one owner, the
//!   coordinator), told of the timeout, given one non-blocking chance to send what the
//!   protocol answers (a 408) and closed. Owners also check the deadline themselves
//!   each time data arrives, so a trickling client cannot outrun it.
//! - **Accept.** Listeners are one-shot too: one worker accepts a batch, then re-arms.
//!   At EMFILE it sheds the connection with a spare descriptor; if even that fails the
//!   listener stays disarmed for [`EMFILE_BACKOFF`] and the coordinator re-arms it.
//! - **Shutdown.** The coordinator stops the listeners, closes parked connections and
//!   makes owners close theirs after the response in flight; at `shutdown_timeout` it
//!   makes the stop eventfd readable, which wakes every waiting worker and aborts
//!   blocking sends; then it joins every worker.

pub(crate) mod send;

use super::driver::{self, Action, Cache, Core, Env, Timeouts};
use super::sink::{Poll, Sink};
use super::{close_socket, lock, Backend, CloseReason, Ctx, Running, ShutdownLevel};
use crate::conn::{ConnTable, Key};
use crate::log::episode::ACCEPT_EMFILE;
use crate::log::Level;
use crate::open_cache::OpenCache;
use crate::proto::ProtocolFactory;
use crate::stats::{Gauges, Seq, Stats};
use crate::sys::epoll::{self, Epoll, EventFd};
use crate::sys::net;
use send::{Report, Sending, Sent};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How often the coordinator looks for expired waits and re-arms backed-off listeners.
const TICK: Duration = Duration::from_millis(100);
/// How long a listener rests after EMFILE when no descriptor could be freed to shed.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);
/// Connections accepted per listener event before the listener is re-armed, so one
/// worker does not accept forever while others wait.
const ACCEPT_BATCH: usize = 64;
/// Each worker's receive buffer. Received bytes are handed to the protocol at once,
/// so an idle connection holds no receive buffer at all.
const RECV_BUF: usize = 64 * 1024;
/// Worker stacks: the handlers are shallow, and thousands of threads is not the plan,
/// but a small stack keeps a grown pool cheap.
const WORKER_STACK: usize = 256 * 1024;

/// Event data of the stop eventfd. Keys never have generation 0, so small numbers are
/// free for internal tokens.
const TOKEN_STOP: u64 = 0;
/// Event data of listener `i` is `TOKEN_LISTENER + i`.
const TOKEN_LISTENER: u64 = 1;

const CONN_EVENTS: i32 = epoll::EPOLLIN | epoll::EPOLLRDHUP | epoll::EPOLLET | epoll::EPOLLONESHOT;
/// A parked send waits for room only: input (a pipelined request, a FIN) must not wake
/// it, or every re-arm would fire at once on a readable socket. Errors and hang-ups
/// are always reported.
const SEND_EVENTS: i32 = epoll::EPOLLOUT | epoll::EPOLLET | epoll::EPOLLONESHOT;
const LISTEN_EVENTS: i32 = epoll::EPOLLIN | epoll::EPOLLONESHOT;

/// The epoll worker-pool backend.
pub(crate) struct EpollBackend;

impl Backend for EpollBackend {
    fn start<F: ProtocolFactory>(ctx: Ctx<F>) -> io::Result<Box<dyn Running>> {
        let epoll = Epoll::new()?;
        let stop = EventFd::new()?;
        epoll.add(stop.as_fd(), epoll::EPOLLIN, TOKEN_STOP)?;
        for (i, l) in ctx.listeners.iter().enumerate() {
            epoll.add(l.fd(), LISTEN_EVENTS, TOKEN_LISTENER + i as u64)?;
        }
        let cap = ctx.cfg.max_connections.min(4096);
        let shared = Arc::new(Shared {
            epoll,
            stop,
            table: Mutex::new(Table {
                conns: ConnTable::with_capacity(cap),
                draining: false,
                handoff: false,
            }),
            draining: AtomicBool::new(false),
            handoff: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            workers: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            closes_marked: AtomicUsize::new(0),
            handles: Mutex::new(Vec::new()),
            spare_fd: Mutex::new(epoll::open_spare_fd().ok()),
            paused: Mutex::new(None),
            names: Seq::default(),
            open_cache: Mutex::new(OpenCache::new(
                ctx.cfg.open_file_cache,
                ctx.cfg.open_file_cache_valid,
            )),
            timeouts: Timeouts::of(&ctx.cfg),
            ctx,
        });
        for _ in 0..shared.ctx.cfg.workers_min.max(1) {
            shared.spawn_worker()?;
        }
        let sh = shared.clone();
        let coordinator = std::thread::Builder::new()
            .name("ringserve-coord".into())
            .spawn(move || sh.coordinate())?;
        Ok(Box::new(Handle {
            coordinator: Some(coordinator),
        }))
    }
}

struct Handle {
    coordinator: Option<JoinHandle<()>>,
}

impl Running for Handle {
    fn wait(mut self: Box<Self>) {
        if let Some(h) = self.coordinator.take() {
            let _ = h.join();
        }
    }
}

/// One connection, owned by whoever holds the box.
struct Conn<P> {
    fd: OwnedFd,
    core: Core<P>,
    /// What the connection was waiting for when it was parked; the next owner goes on
    /// with it before asking the driver for anything new.
    resume: Resume,
    /// A send was cut short: close with RST.
    cut: bool,
}

/// An action in progress across a park.
enum Resume {
    /// Nothing: ask the driver.
    Next,
    /// A receive, until the deadline its `Entry::Parked` holds.
    Recv,
    /// A receive into a file.
    Sink(Box<Sink>),
    /// A send the socket had no room for: its cursor, until its send deadline.
    Send(Box<Sending>),
}

enum Entry<P> {
    /// Armed in epoll, owned by nobody; the deadline of its wait.
    Parked(Box<Conn<P>>, Instant),
    /// A worker (or the acceptor, or the coordinator) holds it. `close_asked`: a
    /// [`Control::close`](crate::Control::close) came meanwhile; the owner hands it to
    /// the driver at its next check.
    Owned { close_asked: bool },
}

fn owned<P>() -> Entry<P> {
    Entry::Owned { close_asked: false }
}

struct Table<P> {
    conns: ConnTable<Entry<P>>,
    /// Set once shutdown begins: nothing idle may park any more.
    draining: bool,
    /// The drain is a hand-off: a successor accepts on our listeners, so connections
    /// we still accept are served, and idle ones wait for their next request.
    handoff: bool,
}

/// A parked connection the coordinator took out of the table, with its deadline.
type Taken<P> = (Key, Box<Conn<P>>, Instant);

/// What the owner does with a connection after driving it.
enum Outcome<P> {
    Park(Box<Conn<P>>, Instant),
    Close(Box<Conn<P>>, CloseReason),
}

struct Shared<F: ProtocolFactory> {
    ctx: Ctx<F>,
    epoll: Epoll,
    /// Readable once the server stops: wakes waiting workers, aborts blocking sends.
    stop: EventFd,
    table: Mutex<Table<F::Proto>>,
    draining: AtomicBool,
    /// Set with `draining` when the drain is a hand-off (see `Table::handoff`).
    handoff: AtomicBool,
    stopping: AtomicBool,
    workers: AtomicUsize,
    busy: AtomicUsize,
    /// Owned entries marked `close_asked` and not yet handed to their driver: owners
    /// look at the table between actions only while this is non-zero.
    closes_marked: AtomicUsize,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// The descriptor given up at EMFILE to accept-and-close one connection.
    spare_fd: Mutex<Option<OwnedFd>>,
    /// Listener indexes resting after EMFILE, and until when.
    paused: Mutex<Option<(Instant, Vec<usize>)>>,
    /// Recently opened files, shared by the workers (`--open-file-cache`).
    open_cache: Mutex<OpenCache>,
    timeouts: Timeouts,
    /// Names worker threads' counter blocks.
    names: Seq,
}

impl<F: ProtocolFactory> Shared<F> {
    fn spawn_worker(self: &Arc<Self>) -> io::Result<()> {
        let sh = self.clone();
        self.workers.fetch_add(1, Ordering::SeqCst);
        Gauges::up(&self.ctx.stats.gauges.workers);
        self.ctx.stats.add(|s| &s.workers_spawned, 1);
        let res = std::thread::Builder::new()
            .name("ringserve-worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || sh.worker());
        match res {
            Ok(h) => {
                let mut hs = lock(&self.handles);
                hs.retain(|h| !h.is_finished());
                hs.push(h);
                Ok(())
            }
            Err(e) => {
                self.workers.fetch_sub(1, Ordering::SeqCst);
                Gauges::down(&self.ctx.stats.gauges.workers);
                Err(e)
            }
        }
    }

    /// Grows the pool by one if every worker is busy (the seed's addQSSWorker rule),
    /// called by a worker about to block on its peer.
    fn maybe_grow(self: &Arc<Self>) {
        let max = self.ctx.cfg.workers_max.max(1);
        let busy = self.busy.load(Ordering::SeqCst);
        if busy < self.workers.load(Ordering::SeqCst) || self.stopping.load(Ordering::SeqCst) {
            return;
        }
        // Serialise growth so a burst does not overshoot the maximum.
        let hs = lock(&self.handles);
        if self.workers.load(Ordering::SeqCst) < max {
            drop(hs);
            if let Err(e) = self.spawn_worker() {
                crate::log_error!("ringserve: cannot start a worker thread: {e}");
            }
        }
    }

    /// A worker that timed out waiting leaves if the pool is above its minimum.
    fn retire_if_surplus(&self) -> bool {
        let min = self.ctx.cfg.workers_min.max(1);
        self.workers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                (w > min).then(|| w - 1)
            })
            .is_ok()
    }

    fn worker(self: Arc<Self>) {
        let counting = self.ctx.stats.bind(self.names.next("worker"));
        let st = counting.stats().clone();
        let mut buf = vec![0u8; RECV_BUF];
        let idle = self
            .ctx
            .cfg
            .worker_idle_timeout
            .max(Duration::from_millis(10));
        loop {
            let ev = match self.epoll.wait_one(Some(idle)) {
                Ok(ev) => ev,
                Err(e) => {
                    crate::log_error!("ringserve: epoll_wait: {e}; worker exits");
                    self.workers.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
            };
            let Some((_events, data)) = ev else {
                if self.retire_if_surplus() {
                    break;
                }
                continue;
            };
            Stats::add(&st.epoll_wakeups, 1);
            match Key::from_u64(data) {
                Some(key) => self.run_conn(&st, key, &mut buf),
                None if data == TOKEN_STOP => {
                    // Level-triggered and never read back: every waiter sees it.
                    self.workers.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                None => self.accept_batch(&st, (data - TOKEN_LISTENER) as usize),
            }
        }
        Gauges::down(&self.ctx.stats.gauges.workers);
    }

    /// Takes ownership of the connection `key` names, drives it, and parks or closes it.
    fn run_conn(self: &Arc<Self>, st: &Stats, key: Key, buf: &mut [u8]) {
        let (conn, parked_until) = {
            let mut t = lock(&self.table);
            match t.conns.get_mut(key) {
                Some(e @ Entry::Parked(..)) => match std::mem::replace(e, owned()) {
                    Entry::Parked(c, d) => (c, d),
                    Entry::Owned { .. } => unreachable!(),
                },
                _ => {
                    // Retired key, or taken by the coordinator for a timeout.
                    Stats::add(&st.stale_dropped, 1);
                    return;
                }
            }
        };
        self.busy.fetch_add(1, Ordering::SeqCst);
        Gauges::up(&self.ctx.stats.gauges.busy_workers);
        let peer = conn.core.peer();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            self.drive(st, key, conn, parked_until, buf)
        }));
        self.busy.fetch_sub(1, Ordering::SeqCst);
        Gauges::down(&self.ctx.stats.gauges.busy_workers);
        match outcome {
            Ok(Outcome::Park(conn, deadline)) => self.park(st, key, conn, deadline, false),
            Ok(Outcome::Close(conn, why)) => self.close(st, key, *conn, why),
            Err(_) => {
                // The connection (and its descriptor) was dropped while unwinding.
                Stats::add(&st.panics, 1);
                self.retire(st, key, peer, CloseReason::Panic);
            }
        }
    }

    fn env<'a>(&'a self, st: &'a Stats) -> Env<'a> {
        Env {
            now: Instant::now(),
            turn: None,
            served: None,
            wall: SystemTime::now(),
            draining: self.draining.load(Ordering::Relaxed),
            handoff: self.handoff.load(Ordering::Relaxed),
            timeouts: &self.timeouts,
            root: &self.ctx.root,
            cache: Cache::Shared(&self.open_cache),
            st,
        }
    }

    /// Lowers the driver's actions until the connection must wait for input or is done.
    fn drive(
        self: &Arc<Self>,
        st: &Stats,
        key: Key,
        mut conn: Box<Conn<F::Proto>>,
        parked_until: Instant,
        buf: &mut [u8],
    ) -> Outcome<F::Proto> {
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return Outcome::Close(conn, CloseReason::Shutdown);
            }
            let resume = std::mem::replace(&mut conn.resume, Resume::Next);
            let action = match resume {
                Resume::Recv => Action::Recv {
                    deadline: parked_until,
                },
                Resume::Sink(sink) => {
                    conn = match self.sink(st, conn, sink, buf) {
                        Ok(c) => c,
                        Err(parked) => return parked,
                    };
                    continue;
                }
                Resume::Send(sending) => {
                    conn = match self.send(st, key, conn, *sending) {
                        Ok(c) => c,
                        Err(out) => return out,
                    };
                    continue;
                }
                Resume::Next => conn.core.next(&mut self.env(st)),
            };
            match action {
                Action::Send(chunks) => {
                    // On the stack: boxed only if it has to park.
                    let sending = Sending::new(chunks, Instant::now());
                    conn = match self.send(st, key, conn, sending) {
                        Ok(c) => c,
                        Err(out) => return out,
                    };
                }
                Action::Recv { deadline } => {
                    // Owners check the deadline too, so a trickling client cannot
                    // outrun the coordinator's scan.
                    if Instant::now() >= deadline {
                        conn.core.timed_out(st);
                        continue;
                    }
                    let got = loop {
                        match net::recv(conn.fd.as_fd(), buf) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            r => break r,
                        }
                    };
                    match got {
                        Ok(0) => conn.core.eof(),
                        Ok(n) => conn.core.recv(&buf[..n], Instant::now()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            conn.resume = Resume::Recv;
                            return Outcome::Park(conn, deadline);
                        }
                        Err(e) => return Outcome::Close(conn, CloseReason::Error(e.kind())),
                    }
                    self.check_close(key, &mut conn.core);
                }
                Action::RecvFile { sink, timeout } => {
                    let sink = Box::new(Sink::new(sink, timeout, Instant::now()));
                    conn = match self.sink(st, conn, sink, buf) {
                        Ok(c) => c,
                        Err(parked) => return parked,
                    };
                }
                Action::Open(path) => {
                    let r = self.ctx.root.open_beneath(&path);
                    conn.core.opened(&mut self.env(st), &path, r);
                }
                Action::Sync(file) => {
                    let r = crate::fs::sync(&file);
                    conn.core.synced(&mut self.env(st), r);
                }
                Action::Close(why) => return Outcome::Close(conn, why),
            }
        }
    }

    /// Moves a send on: done (the connection comes back to be driven on), parked with
    /// its cursor because the socket stayed full, or ended.
    fn send(
        self: &Arc<Self>,
        st: &Stats,
        key: Key,
        mut conn: Box<Conn<F::Proto>>,
        mut sending: Sending,
    ) -> Result<Box<Conn<F::Proto>>, Outcome<F::Proto>> {
        let timeout = self.ctx.cfg.send_timeout;
        let core = &mut conn.core;
        let mut report = Report {
            stats: st,
            wrote: &mut |n| core.wrote(n),
            before_wait: &|| self.maybe_grow(),
        };
        let r = sending.advance(
            conn.fd.as_fd(),
            send::PARK_AFTER,
            timeout,
            &self.stop,
            &mut report,
        );
        match r {
            Ok(Sent::Done) => {
                sending.recycle();
                conn.core.sent();
                self.check_close(key, &mut conn.core);
                Ok(conn)
            }
            Ok(Sent::Full) => {
                let deadline = sending.deadline(timeout);
                conn.resume = Resume::Send(Box::new(sending));
                Err(Outcome::Park(conn, deadline))
            }
            Err(why) => {
                conn.cut = true;
                Err(Outcome::Close(conn, why))
            }
        }
    }

    /// Moves a receive into a file on. When the socket runs dry the connection parks
    /// (`Err`, the outcome); otherwise it comes back to be driven on.
    fn sink(
        &self,
        st: &Stats,
        mut conn: Box<Conn<F::Proto>>,
        mut sink: Box<Sink>,
        buf: &mut [u8],
    ) -> Result<Box<Conn<F::Proto>>, Outcome<F::Proto>> {
        if Instant::now() >= sink.deadline() {
            conn.core
                .recv_file_done(Err(io::ErrorKind::TimedOut.into()));
            return Ok(conn);
        }
        match sink.advance(conn.fd.as_fd(), buf, st) {
            Poll::Done(r) => {
                conn.core.recv_file_done(r);
                Ok(conn)
            }
            Poll::Pending => {
                let deadline = sink.deadline();
                conn.resume = Resume::Sink(sink);
                Err(Outcome::Park(conn, deadline))
            }
        }
    }

    /// Hands a [`Control::close`](crate::Control::close) that came while this worker
    /// owned the connection to its driver, which closes after the response in flight
    /// (not when pipelined input runs dry).
    fn check_close(&self, key: Key, core: &mut Core<F::Proto>) {
        if self.closes_marked.load(Ordering::Acquire) == 0 {
            return;
        }
        if self.take_mark(&mut lock(&self.table), key) {
            core.ask_close();
        }
    }

    /// Clears `key`'s close mark under the table lock; true if it was set.
    fn take_mark(&self, t: &mut Table<F::Proto>, key: Key) -> bool {
        match t.conns.get_mut(key) {
            Some(Entry::Owned { close_asked }) if *close_asked => {
                *close_asked = false;
                self.closes_marked.fetch_sub(1, Ordering::AcqRel);
                true
            }
            _ => false,
        }
    }

    /// Gives the connection back to epoll (`new`: its first arming). The arming happens
    /// under the table lock: once the entry says `Parked` anyone may take and close it,
    /// so the descriptor must not be touched after the lock is released. A close mark
    /// that came while it was owned, or a drain, is decided here by the driver.
    fn park(
        &self,
        st: &Stats,
        key: Key,
        mut conn: Box<Conn<F::Proto>>,
        deadline: Instant,
        new: bool,
    ) {
        let mut t = lock(&self.table);
        if self.take_mark(&mut t, key) && conn.core.ask_close() {
            drop(t);
            return self.close(st, key, *conn, CloseReason::Requested);
        }
        if t.draining && conn.core.closes_at_drain(t.handoff) {
            drop(t);
            return self.close(st, key, *conn, CloseReason::Shutdown);
        }
        let fd = conn.fd.as_fd();
        let events = match conn.resume {
            Resume::Send(_) => SEND_EVENTS,
            _ => CONN_EVENTS,
        };
        let armed = if new {
            self.epoll.add(fd, events, key.to_u64())
        } else {
            self.epoll.modify(fd, events, key.to_u64())
        };
        if let Err(e) = armed {
            drop(t);
            return self.close(st, key, *conn, CloseReason::Error(e.kind()));
        }
        if let Some(e) = t.conns.get_mut(key) {
            *e = Entry::Parked(conn, deadline);
        }
    }

    /// Closes a connection its owner holds: the descriptor is closed exactly once, here,
    /// then the key is retired.
    fn close(&self, st: &Stats, key: Key, conn: Conn<F::Proto>, why: CloseReason) {
        let Conn { fd, core, cut, .. } = conn;
        close_socket(fd, why, cut);
        self.retire(st, key, core.peer(), why);
        // The core goes last: temporary files it still holds are removed.
        drop(core);
    }

    fn retire(&self, st: &Stats, key: Key, peer: std::net::SocketAddr, why: CloseReason) {
        let mut t = lock(&self.table);
        self.take_mark(&mut t, key);
        t.conns.remove(key);
        drop(t);
        driver::retire(&self.ctx, st, key, peer, why);
    }

    fn accept_batch(self: &Arc<Self>, st: &Stats, li: usize) {
        let Some(lfd) = self.ctx.listeners.get(li).map(|l| l.fd()) else {
            return;
        };
        for _ in 0..ACCEPT_BATCH {
            if self.draining.load(Ordering::Relaxed) {
                return;
            }
            match net::accept(lfd) {
                Ok((fd, peer)) => {
                    ACCEPT_EMFILE.ok();
                    self.register(st, fd, peer);
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EMFILE | libc::ENFILE) => {
                        Stats::add(&st.accept_emfile, 1);
                        ACCEPT_EMFILE.hit(&e);
                        if !self.shed_one(lfd) {
                            // Leave the listener disarmed; the coordinator re-arms it.
                            let mut p = lock(&self.paused);
                            let until = Instant::now() + EMFILE_BACKOFF;
                            p.get_or_insert_with(|| (until, Vec::new())).1.push(li);
                            return;
                        }
                    }
                    // The peer gave up before we got to it, or a transient error.
                    Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM) => {}
                    Some(libc::ENOBUFS | libc::ENOMEM) => break,
                    _ => {
                        crate::log_limited!(Level::Error, "ringserve: accept: {e}");
                        // Rest as for EMFILE: a listener that fails every accept (shut
                        // by another process holding it) would spin, its hang-up
                        // reported again at every re-arm.
                        let mut p = lock(&self.paused);
                        let until = Instant::now() + EMFILE_BACKOFF;
                        p.get_or_insert_with(|| (until, Vec::new())).1.push(li);
                        return;
                    }
                },
            }
        }
        self.arm_listener(li);
    }

    fn arm_listener(&self, li: usize) {
        if self.draining.load(Ordering::Relaxed) {
            return;
        }
        if let Some(l) = self.ctx.listeners.get(li) {
            if let Err(e) = self
                .epoll
                .modify(l.fd(), LISTEN_EVENTS, TOKEN_LISTENER + li as u64)
            {
                crate::log_error!("ringserve: re-arming listener {}: {e}", l.addr());
            }
        }
    }

    /// At EMFILE: frees the spare descriptor, accepts one connection and closes it, so
    /// the client hears a prompt close rather than hanging in the backlog. False if no
    /// descriptor could be freed.
    fn shed_one(&self, lfd: std::os::fd::BorrowedFd<'_>) -> bool {
        let mut spare = lock(&self.spare_fd);
        if spare.take().is_none() {
            return false;
        }
        let shed = net::accept(lfd).is_ok();
        *spare = epoll::open_spare_fd().ok();
        shed && spare.is_some()
    }

    /// Admits a new socket, gives it a key and arms it (through `park`, like any other
    /// connection, so a close or drain that came meanwhile is never lost).
    fn register(&self, st: &Stats, fd: OwnedFd, peer: std::net::SocketAddr) {
        let Some(fd) = driver::admit(&self.ctx, st, fd) else {
            return;
        };
        let key = {
            let mut t = lock(&self.table);
            if t.draining && !t.handoff {
                drop(t);
                driver::unadmit(&self.ctx);
                return;
            }
            t.conns.insert(owned())
        };
        let now = Instant::now();
        let Some(core) = driver::open(&self.ctx, st, key, peer, now) else {
            // The factory or the accept hook panicked: no connection.
            lock(&self.table).conns.remove(key);
            driver::unadmit(&self.ctx);
            return;
        };
        let conn = Box::new(Conn {
            core,
            fd,
            resume: Resume::Next,
            cut: false,
        });
        self.park(st, key, conn, now + self.ctx.cfg.header_timeout, true);
    }

    /// Takes every parked connection for which `pick` says yes out of the table.
    fn take_parked(&self, mut pick: impl FnMut(Instant) -> bool) -> Vec<Taken<F::Proto>> {
        let mut t = lock(&self.table);
        let mut out = Vec::new();
        for (key, e) in t.conns.iter_mut() {
            if matches!(e, Entry::Parked(_, d) if pick(*d)) {
                if let Entry::Parked(c, d) = std::mem::replace(e, owned()) {
                    out.push((key, c, d));
                }
            }
        }
        out
    }

    /// Tells an expired connection of its timeout, lets its answer (a 408) go out if it
    /// fits the socket buffer right now, and closes it. Never blocks. A parked send
    /// whose reader took nothing for `send_timeout` is simply cut.
    fn expire(&self, st: &Stats, key: Key, mut conn: Conn<F::Proto>) {
        if let Resume::Send(_) = conn.resume {
            Stats::add(&st.send_timeouts, 1);
            conn.cut = true;
            return self.close(st, key, conn, CloseReason::SendTimeout);
        }
        // Protocol code, on the coordinator: a panic closes this connection only.
        let told = catch_unwind(AssertUnwindSafe(|| {
            match std::mem::replace(&mut conn.resume, Resume::Next) {
                Resume::Sink(_) => {
                    conn.core
                        .recv_file_done(Err(io::ErrorKind::TimedOut.into()));
                }
                _ => conn.core.timed_out(st),
            }
            for _ in 0..4 {
                match conn.core.next(&mut self.env(st)) {
                    Action::Send(chunks) => {
                        let n = send::send_once(conn.fd.as_fd(), &chunks);
                        conn.core.wrote(n);
                        conn.core.sent();
                    }
                    _ => break,
                }
            }
        }));
        let why = match told {
            Ok(()) => CloseReason::Timeout,
            Err(_) => {
                Stats::add(&st.panics, 1);
                conn.cut = true;
                CloseReason::Panic
            }
        };
        self.close(st, key, conn, why);
    }

    /// The coordinator: timeouts, EMFILE back-off, and the shutdown sequence.
    fn coordinate(self: Arc<Self>) {
        let counting = self.ctx.stats.bind("coordinator");
        let st = counting.stats().clone();
        let control = self.ctx.control.clone();
        loop {
            let (level, closes) = control.wait(ShutdownLevel::Running, TICK);
            self.close_asked(&st, closes);
            if level != ShutdownLevel::Running {
                break;
            }
            self.housekeeping(&st);
        }

        // 1. Stop accepting. The listeners stay open (no descriptor reuse races with a
        //    worker mid-accept) but shut for reading, so new connections are refused;
        //    in a hand-off they are the successor's too, so they are only forgotten
        //    (shutting one would close it for the successor as well).
        let handoff = control.handing_off();
        let shared = control.listeners_shared();
        self.handoff.store(handoff, Ordering::SeqCst);
        self.draining.store(true, Ordering::SeqCst);
        for l in self.ctx.listeners.iter() {
            let _ = self.epoll.delete(l.fd());
            if !shared {
                let _ = net::shutdown(l.fd(), libc::SHUT_RD);
            }
        }
        // 2. Close idle and half-received connections (the driver decides which);
        //    owners close theirs after the response in flight (`park` asks the driver
        //    once `draining` is set under the lock).
        {
            let mut t = lock(&self.table);
            t.draining = true;
            t.handoff = handoff;
        }
        for (key, conn, until) in self.take_parked(|_| true) {
            if conn.core.closes_at_drain(handoff) {
                self.close(&st, key, *conn, CloseReason::Shutdown);
            } else {
                self.repark(&st, key, conn, until);
            }
        }
        // 3. Let in-flight responses finish, up to the shutdown timeout.
        let deadline = Instant::now() + self.ctx.cfg.shutdown_timeout;
        while !lock(&self.table).conns.is_empty() && Instant::now() < deadline {
            let (level, closes) = control.wait(ShutdownLevel::Graceful, TICK);
            self.close_asked(&st, closes);
            if level == ShutdownLevel::Immediate {
                break;
            }
            self.housekeeping(&st);
        }
        // 4. Stop: wake every worker, abort blocking sends, join everyone.
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify();
        loop {
            let hs = std::mem::take(&mut *lock(&self.handles));
            if hs.is_empty() {
                break;
            }
            for h in hs {
                let _ = h.join();
            }
        }
        for (key, conn, _) in self.take_parked(|_| true) {
            self.close(&st, key, *conn, CloseReason::Shutdown);
        }
    }

    /// Parks a connection the coordinator took and did not close, re-armed: a worker
    /// that got its event while the coordinator held it dropped that event.
    fn repark(&self, st: &Stats, key: Key, conn: Box<Conn<F::Proto>>, until: Instant) {
        self.park(st, key, conn, until, false);
    }

    /// [`Control::close`](crate::Control::close): a parked connection is handed to the
    /// driver now (closed at once if it waits for a request); an owned one is marked,
    /// and its owner hands the mark over at its next check. A retired key is dropped
    /// and counted.
    fn close_asked(&self, st: &Stats, keys: Vec<Key>) {
        for key in keys {
            let taken = {
                let mut t = lock(&self.table);
                match t.conns.get_mut(key) {
                    Some(e @ Entry::Parked(..)) => match std::mem::replace(e, owned()) {
                        Entry::Parked(c, d) => Some((c, d)),
                        Entry::Owned { .. } => unreachable!(),
                    },
                    Some(Entry::Owned { close_asked }) => {
                        if !*close_asked {
                            *close_asked = true;
                            self.closes_marked.fetch_add(1, Ordering::AcqRel);
                        }
                        None
                    }
                    None => {
                        Stats::add(&st.stale_dropped, 1);
                        None
                    }
                }
            };
            if let Some((mut conn, until)) = taken {
                if conn.core.ask_close() {
                    self.close(st, key, *conn, CloseReason::Requested);
                } else {
                    self.repark(st, key, conn, until);
                }
            }
        }
    }

    fn housekeeping(&self, st: &Stats) {
        let now = Instant::now();
        lock(&self.open_cache).sweep(now);
        for (key, conn, _) in self.take_parked(|deadline| deadline <= now) {
            self.expire(st, key, *conn);
        }
        let due = {
            let mut p = lock(&self.paused);
            match &*p {
                Some((until, _)) if *until <= now => p.take().map(|(_, l)| l),
                _ => None,
            }
        };
        for li in due.into_iter().flatten() {
            self.arm_listener(li);
        }
    }
}

/// An idle connection's memory is mostly its `Conn` (bench's idle-10k measures the
/// RSS): a field that grows it shows here first. Raise the bound only with a reason.
#[cfg(all(test, target_pointer_width = "64"))]
#[test]
fn an_http_connection_stays_within_its_size_budget() {
    let n = std::mem::size_of::<Conn<crate::proto::http1::Http1>>();
    assert!(n <= 248, "a pool's HTTP connection is {n} bytes");
}
