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
//! - **Blocking send** ([`send`]): the owner sends a whole response before it asks the
//!   protocol for anything else.
//! - **The pool** starts at `workers_min`. When a worker is about to block on a peer
//!   (a send that must wait for writability) and finds every worker busy, it starts
//!   one more, up to `workers_max`. The seed checks this when a worker takes an event;
//!   checking where the worker blocks keeps CPU-bound load from growing the pool (a
//!   worker merely preempted mid-request also counts as busy, and on a loaded core
//!   that fed itself: 25 threads on one CPU, and a 150 ms p99). A worker that waits
//!   `worker_idle_timeout` for an event while the pool is above the minimum leaves.
//! - **Timeouts.** A parked connection carries the deadline of its wait (header or
//!   keep-alive). One coordinator thread scans parked connections every [`TICK`]; an
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

mod send;

use super::{
    access_log, close_socket, recv_deadline, refuse, Backend, CloseReason, Ctx, Running,
    ShutdownLevel,
};
use crate::conn::{ConnTable, Key};
use crate::open_cache::OpenCache;
use crate::proto::{Protocol, ProtocolFactory, Step, Wait};
use crate::stats::{Gauges, Seq};
use crate::sys::epoll::{self, Epoll, EventFd};
use crate::sys::net;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
const LISTEN_EVENTS: i32 = epoll::EPOLLIN | epoll::EPOLLONESHOT;

/// The epoll worker-pool backend.
pub(crate) struct EpollBackend;

impl Backend for EpollBackend {
    fn start<F: ProtocolFactory>(ctx: Ctx<F>) -> io::Result<Box<dyn Running>> {
        let epoll = Epoll::new()?;
        let stop = EventFd::new()?;
        epoll.add(stop.as_fd(), epoll::EPOLLIN, TOKEN_STOP)?;
        for (i, (fd, _)) in ctx.listeners.iter().enumerate() {
            epoll.add(fd.as_fd(), LISTEN_EVENTS, TOKEN_LISTENER + i as u64)?;
        }
        let cap = ctx.cfg.max_connections.min(4096);
        let shared = Arc::new(Shared {
            epoll,
            stop,
            table: Mutex::new(Table {
                conns: ConnTable::with_capacity(cap),
                draining: false,
            }),
            draining: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            workers: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            handles: Mutex::new(Vec::new()),
            spare_fd: Mutex::new(epoll::open_spare_fd().ok()),
            paused: Mutex::new(None),
            names: Seq::default(),
            open_cache: Mutex::new(OpenCache::new(
                ctx.cfg.open_file_cache,
                ctx.cfg.open_file_cache_valid,
            )),
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
    peer: SocketAddr,
    proto: P,
    /// The wait in progress and when it began: the timeout runs from there.
    wait: Option<(Wait, Instant)>,
    /// `handle_drain` was delivered.
    drained: bool,
    /// A send was cut short: close with RST.
    cut: bool,
}

enum Entry<P> {
    /// Armed in epoll, owned by nobody; the deadline of its wait.
    Parked(Box<Conn<P>>, Instant),
    /// A worker (or the acceptor, or the coordinator) holds it. `close_asked`: a
    /// [`Control::close`](crate::Control::close) came meanwhile; the owner closes it
    /// instead of parking it.
    Owned { close_asked: bool },
}

fn owned<P>() -> Entry<P> {
    Entry::Owned { close_asked: false }
}

struct Table<P> {
    conns: ConnTable<Entry<P>>,
    /// Set once shutdown begins: nothing may park any more.
    draining: bool,
}

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
    stopping: AtomicBool,
    workers: AtomicUsize,
    busy: AtomicUsize,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// The descriptor given up at EMFILE to accept-and-close one connection.
    spare_fd: Mutex<Option<OwnedFd>>,
    /// Listener indexes resting after EMFILE, and until when.
    paused: Mutex<Option<(Instant, Vec<usize>)>>,
    /// Recently opened files, shared by the workers (`--open-file-cache`).
    open_cache: Mutex<OpenCache>,
    /// Names worker threads' counter blocks.
    names: Seq,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock is caught per connection; the data stays usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
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
                crate::say!("ringserve: cannot start a worker thread: {e}");
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
        let _counting = self.ctx.stats.bind(self.names.next("worker"));
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
                    crate::say!("ringserve: epoll_wait: {e}; worker exits");
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
            self.ctx.stats.add(|s| &s.epoll_wakeups, 1);
            match Key::from_u64(data) {
                Some(key) => self.run_conn(key, &mut buf),
                None if data == TOKEN_STOP => {
                    // Level-triggered and never read back: every waiter sees it.
                    self.workers.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                None => self.accept_batch((data - TOKEN_LISTENER) as usize),
            }
        }
        Gauges::down(&self.ctx.stats.gauges.workers);
    }

    /// Takes ownership of the connection `key` names, drives it, and parks or closes it.
    fn run_conn(self: &Arc<Self>, key: Key, buf: &mut [u8]) {
        let conn = {
            let mut t = lock(&self.table);
            match t.conns.get_mut(key) {
                Some(e @ Entry::Parked(..)) => match std::mem::replace(e, owned()) {
                    Entry::Parked(c, _) => c,
                    Entry::Owned { .. } => unreachable!(),
                },
                _ => {
                    // Retired key, or taken by the coordinator for a timeout.
                    self.ctx.stats.add(|s| &s.stale_dropped, 1);
                    return;
                }
            }
        };
        self.busy.fetch_add(1, Ordering::SeqCst);
        Gauges::up(&self.ctx.stats.gauges.busy_workers);
        let peer = conn.peer;
        let outcome = catch_unwind(AssertUnwindSafe(|| self.drive(conn, buf)));
        self.busy.fetch_sub(1, Ordering::SeqCst);
        Gauges::down(&self.ctx.stats.gauges.busy_workers);
        match outcome {
            Ok(Outcome::Park(conn, deadline)) => self.park(key, conn, deadline),
            Ok(Outcome::Close(conn, why)) => self.close(key, *conn, why),
            Err(_) => {
                // The connection (and its descriptor) was dropped while unwinding.
                self.ctx.stats.add(|s| &s.panics, 1);
                self.retire(key, peer, CloseReason::Panic);
            }
        }
    }

    /// Runs the protocol until it must wait for input or is done.
    fn drive(self: &Arc<Self>, mut conn: Box<Conn<F::Proto>>, buf: &mut [u8]) -> Outcome<F::Proto> {
        let cfg = &self.ctx.cfg;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return Outcome::Close(conn, CloseReason::Shutdown);
            }
            if !conn.drained && self.draining.load(Ordering::Relaxed) {
                conn.drained = true;
                conn.proto.handle_drain();
            }
            match conn.proto.poll(SystemTime::now()) {
                Step::Send(chunks) => {
                    self.ctx.stats.add(|s| &s.responses, 1);
                    // Logged as the response is handed over, so log order is response
                    // order even when another worker finishes its send sooner.
                    if let Some(line) = conn.proto.take_log_line() {
                        access_log(&line);
                    }
                    let r = send::send_all(
                        conn.fd.as_fd(),
                        &chunks,
                        cfg.send_timeout,
                        &self.stop,
                        &self.ctx.stats,
                        &|| self.maybe_grow(),
                    );
                    if let Err(why) = r {
                        conn.cut = true;
                        return Outcome::Close(conn, why);
                    }
                    conn.wait = None;
                }
                Step::Open(path) => {
                    let now = Instant::now();
                    let hit = lock(&self.open_cache).get(&path, now);
                    let r = hit.map(Ok).unwrap_or_else(|| {
                        let r = self.ctx.root.open_beneath(&path);
                        if let Ok(o) = &r {
                            lock(&self.open_cache).put(&path, o, now);
                        }
                        r
                    });
                    conn.proto.handle_open(r);
                }
                Step::ReadDir(path) => {
                    let r = self.ctx.root.read_dir(&path);
                    conn.proto.handle_read_dir(r);
                }
                Step::Recv(wait) => {
                    let now = Instant::now();
                    let deadline = recv_deadline(&mut conn.wait, wait, cfg, now);
                    if now >= deadline {
                        self.ctx.stats.add(|s| &s.recv_timeouts, 1);
                        conn.proto.handle_timeout();
                        continue;
                    }
                    match net::recv(conn.fd.as_fd(), buf) {
                        Ok(0) => conn.proto.handle_eof(),
                        Ok(n) => conn.proto.handle_recv(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Outcome::Park(conn, deadline)
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Outcome::Close(conn, CloseReason::Error(e.kind())),
                    }
                }
                Step::Close => return Outcome::Close(conn, CloseReason::Done),
            }
        }
    }

    /// Gives the connection back to epoll. The re-arm happens under the table lock:
    /// once the entry says `Parked` anyone may take and close it, so the descriptor
    /// must not be touched after the lock is released.
    fn park(&self, key: Key, conn: Box<Conn<F::Proto>>, deadline: Instant) {
        let mut t = lock(&self.table);
        if t.draining {
            drop(t);
            return self.close(key, *conn, CloseReason::Shutdown);
        }
        if matches!(t.conns.get(key), Some(Entry::Owned { close_asked: true })) {
            drop(t);
            return self.close(key, *conn, CloseReason::Requested);
        }
        if let Err(e) = self
            .epoll
            .modify(conn.fd.as_fd(), CONN_EVENTS, key.to_u64())
        {
            drop(t);
            return self.close(key, *conn, CloseReason::Error(e.kind()));
        }
        if let Some(e) = t.conns.get_mut(key) {
            *e = Entry::Parked(conn, deadline);
        }
    }

    /// Closes a connection its owner holds: the descriptor is closed exactly once, here,
    /// then the key is retired.
    fn close(&self, key: Key, conn: Conn<F::Proto>, why: CloseReason) {
        let Conn { fd, peer, cut, .. } = conn;
        close_socket(fd, why, cut);
        self.retire(key, peer, why);
    }

    fn retire(&self, key: Key, peer: SocketAddr, why: CloseReason) {
        lock(&self.table).conns.remove(key);
        self.ctx.stats.add(|s| &s.closes, 1);
        Gauges::down(&self.ctx.stats.gauges.open_conns);
        self.ctx.hooks.on_close(key, peer, why);
    }

    fn accept_batch(self: &Arc<Self>, li: usize) {
        let Some((lfd, _)) = self.ctx.listeners.get(li) else {
            return;
        };
        for _ in 0..ACCEPT_BATCH {
            if self.draining.load(Ordering::Relaxed) {
                return;
            }
            match net::accept(lfd.as_fd()) {
                Ok((fd, peer)) => self.register(fd, peer),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EMFILE | libc::ENFILE) => {
                        self.ctx.stats.add(|s| &s.accept_emfile, 1);
                        if !self.shed_one(lfd.as_fd()) {
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
                        crate::say!("ringserve: accept: {e}");
                        break;
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
        if let Some((lfd, addr)) = self.ctx.listeners.get(li) {
            if let Err(e) =
                self.epoll
                    .modify(lfd.as_fd(), LISTEN_EVENTS, TOKEN_LISTENER + li as u64)
            {
                crate::say!("ringserve: re-arming listener {addr}: {e}");
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

    /// Tunes a new socket, gives it a key and arms it.
    fn register(&self, fd: OwnedFd, peer: SocketAddr) {
        let cfg = &self.ctx.cfg;
        let key = {
            let mut t = lock(&self.table);
            if t.draining {
                return;
            }
            if t.conns.len() >= cfg.max_connections {
                drop(t);
                self.ctx.stats.add(|s| &s.refused_full, 1);
                refuse(fd, self.ctx.factory.overload_response());
                return;
            }
            t.conns.insert(owned())
        };
        self.ctx.stats.add(|s| &s.accepts, 1);
        Gauges::up(&self.ctx.stats.gauges.open_conns);
        self.ctx.hooks.on_accept(key, peer);
        let conn = Box::new(Conn {
            proto: self.ctx.factory.new_conn(peer),
            fd,
            peer,
            wait: Some((Wait::Request, Instant::now())),
            drained: false,
            cut: false,
        });
        let deadline = Instant::now() + cfg.header_timeout;
        let mut t = lock(&self.table);
        if t.draining {
            drop(t);
            return self.close(key, *conn, CloseReason::Shutdown);
        }
        if let Err(e) = self.epoll.add(conn.fd.as_fd(), CONN_EVENTS, key.to_u64()) {
            drop(t);
            return self.close(key, *conn, CloseReason::Error(e.kind()));
        }
        if let Some(e) = t.conns.get_mut(key) {
            *e = Entry::Parked(conn, deadline);
        }
    }

    /// Takes every parked connection for which `pick` says yes out of the table.
    fn take_parked(
        &self,
        mut pick: impl FnMut(Instant) -> bool,
    ) -> Vec<(Key, Box<Conn<F::Proto>>)> {
        let mut t = lock(&self.table);
        let mut out = Vec::new();
        for (key, e) in t.conns.iter_mut() {
            if matches!(e, Entry::Parked(_, d) if pick(*d)) {
                if let Entry::Parked(c, _) = std::mem::replace(e, owned()) {
                    out.push((key, c));
                }
            }
        }
        out
    }

    /// Tells an expired connection of its timeout, lets its answer (a 408) go out if it
    /// fits the socket buffer right now, and closes it. Never blocks.
    fn expire(&self, key: Key, mut conn: Conn<F::Proto>) {
        self.ctx.stats.add(|s| &s.recv_timeouts, 1);
        conn.proto.handle_timeout();
        for _ in 0..4 {
            match conn.proto.poll(SystemTime::now()) {
                Step::Send(chunks) => send::send_once(conn.fd.as_fd(), &chunks),
                _ => break,
            }
        }
        self.close(key, conn, CloseReason::Timeout);
    }

    /// The coordinator: timeouts, EMFILE back-off, and the shutdown sequence.
    fn coordinate(self: Arc<Self>) {
        let _counting = self.ctx.stats.bind("coordinator");
        let control = self.ctx.control.clone();
        loop {
            let (level, closes) = control.wait(ShutdownLevel::Running, TICK);
            self.close_asked(closes);
            if level != ShutdownLevel::Running {
                break;
            }
            self.housekeeping();
        }

        // 1. Stop accepting. The listeners stay open (no descriptor reuse races with a
        //    worker mid-accept) but shut for reading, so new connections are refused.
        self.draining.store(true, Ordering::SeqCst);
        for (fd, _) in &self.ctx.listeners {
            let _ = self.epoll.delete(fd.as_fd());
            let _ = net::shutdown(fd.as_fd(), libc::SHUT_RD);
        }
        // 2. Close idle and half-received connections; owners close theirs after the
        //    response in flight (`park` refuses once `draining` is set under the lock).
        lock(&self.table).draining = true;
        for (key, conn) in self.take_parked(|_| true) {
            self.close(key, *conn, CloseReason::Shutdown);
        }
        // 3. Let in-flight responses finish, up to the shutdown timeout.
        let deadline = Instant::now() + self.ctx.cfg.shutdown_timeout;
        while !lock(&self.table).conns.is_empty() && Instant::now() < deadline {
            let (level, closes) = control.wait(ShutdownLevel::Graceful, TICK);
            self.close_asked(closes);
            if level == ShutdownLevel::Immediate {
                break;
            }
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
        for (key, conn) in self.take_parked(|_| true) {
            self.close(key, *conn, CloseReason::Shutdown);
        }
    }

    /// [`Control::close`](crate::Control::close): a parked connection is closed now; an
    /// owned one is marked, and its owner closes it instead of parking it (after the
    /// response in flight). A retired key is dropped and counted.
    fn close_asked(&self, keys: Vec<Key>) {
        for key in keys {
            let taken = {
                let mut t = lock(&self.table);
                match t.conns.get_mut(key) {
                    Some(e @ Entry::Parked(..)) => match std::mem::replace(e, owned()) {
                        Entry::Parked(c, _) => Some(c),
                        Entry::Owned { .. } => unreachable!(),
                    },
                    Some(Entry::Owned { close_asked }) => {
                        *close_asked = true;
                        None
                    }
                    None => {
                        self.ctx.stats.add(|s| &s.stale_dropped, 1);
                        None
                    }
                }
            };
            if let Some(conn) = taken {
                self.close(key, *conn, CloseReason::Requested);
            }
        }
    }

    fn housekeeping(&self) {
        let now = Instant::now();
        lock(&self.open_cache).sweep(now);
        for (key, conn) in self.take_parked(|deadline| deadline <= now) {
            self.expire(key, *conn);
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
