//! Backends: what each one gets, and what each one must do.
//!
//! A backend is handed a [`Ctx`]: bound non-blocking listeners, the opened root, the
//! protocol factory, lifecycle hooks, shared counters and the configuration. It must:
//!
//! 1. accept on every listener, tune each socket (TCP keepalive, TCP_NODELAY), and
//!    refuse cleanly past `max_connections` and at EMFILE without spinning;
//! 2. give each connection a generation-checked [`Key`](crate::conn::Key) and drop any
//!    event or completion whose key is stale;
//! 3. keep **promise 1**: exactly one owner per connection at any instant, at most one
//!    receive and one send in flight, closed once, after its last operation;
//! 4. keep **promise 2**: poll the protocol again only after a whole
//!    [`Step::Send`](crate::proto::Step::Send) is in the kernel, continue short writes,
//!    and end a connection whose send makes no progress for `send_timeout`;
//! 5. enforce the deadlines [`driver::Core`] gives each receive (header, keep-alive,
//!    body) and the body timeout of a receive into a file;
//! 6. on [`Control::shutdown`]: stop accepting, let in-flight responses finish within
//!    `shutdown_timeout`, close idle connections, join every thread, then return from
//!    [`Running::wait`].
//!
//! Everything protocol-facing (the `Step` interpreter, drain, the open-file cache,
//! close requests, accounting, the shutdown decisions) is in [`driver`], once; a
//! backend lowers the driver's [`driver::Action`]s to the kernel.
//! `docs/ARCHITECTURE.md` says where each promise is enforced in each backend.

pub mod blocking;
pub(crate) mod chunks;
pub(crate) mod driver;
pub mod epoll;
// The in-memory lowering: the crate's tests and fuzz/ only (it reads FileRefs).
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod memory;
pub(crate) mod sink;
pub(crate) mod uring;

use crate::config::Config;
use crate::conn::Key;
use crate::fs::Root;
use crate::proto::ProtocolFactory;
use crate::stats::StatsHub;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Why a connection was closed, as the `on_close` hook hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The protocol finished (e.g. `Connection: close`, or the peer closed cleanly).
    Done,
    /// A header or keep-alive wait timed out.
    Timeout,
    /// A send made no progress for `send_timeout`.
    SendTimeout,
    /// A file shrank while its bytes were being sent.
    FileShrunk,
    /// The peer reset the connection or another socket error occurred.
    Error(io::ErrorKind),
    /// The server is shutting down.
    Shutdown,
    /// The connection's handler panicked; the server lived on.
    Panic,
    /// Closed by [`Control::close`].
    Requested,
}

/// Lifecycle callbacks, the seed's `CSocketLifecycleCallback`. They run on the thread
/// that owns the connection at that moment, so they must be quick.
pub trait Hooks: Send + Sync + 'static {
    /// A connection was accepted and given `key`.
    fn on_accept(&self, _key: Key, _peer: SocketAddr) {}
    /// The connection `key` was closed.
    fn on_close(&self, _key: Key, _peer: SocketAddr, _why: CloseReason) {}
}

/// Hooks that do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;
impl Hooks for NoHooks {}

/// Everything a backend is started with.
pub(crate) struct Ctx<F> {
    pub cfg: Config,
    /// Shared with the `Server`, which can hand them to a successor.
    pub listeners: Arc<[crate::listener::Listener]>,
    pub root: Root,
    pub factory: F,
    pub hooks: Arc<dyn Hooks>,
    pub stats: Arc<StatsHub>,
    pub control: Arc<Control>,
    /// Shared by every open-file cache of this server.
    pub replaced: crate::open_cache::Replaced,
}

/// A started backend.
pub(crate) trait Running: Send {
    /// Blocks until the backend has stopped and joined all its threads.
    fn wait(self: Box<Self>);
    /// What the backend had to do without at start (a feature the probe found but
    /// setup refused), for the startup line's reason.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A backend: one type per I/O model, chosen once by a single `match` in `server.rs`.
pub(crate) trait Backend {
    fn start<F: ProtocolFactory>(ctx: Ctx<F>) -> io::Result<Box<dyn Running>>;
}

/// A listener on `addr`, tuned so accepted sockets inherit TCP keepalive, TCP_NODELAY
/// and SO_SNDBUF. Returns the listener and the address it is bound to.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    cfg: &Config,
    reuseport: bool,
) -> io::Result<OwnedFd> {
    let fd = crate::sys::net::listen(addr, cfg.backlog, reuseport)?;
    let ka = &cfg.tcp_keepalive;
    crate::sys::net::tune(
        std::os::fd::AsFd::as_fd(&fd),
        (ka.idle, ka.interval, ka.count),
        cfg.sndbuf,
    )?;
    Ok(fd)
}

/// Closes a connection's socket. `cut` says a send was cut short: then the close is an
/// abort (SO_LINGER 0, RST), so the kernel does not trickle queued bytes to a stalled
/// peer for minutes and the peer cannot take a truncated response for a whole one
/// (nginx's reset_timedout_connection). A close the protocol asked for (`Done`) is
/// lingering but never blocks: FIN first, then drop the input that has already arrived,
/// so the close does not turn into an RST that eats an error response the peer has not
/// read (pipelined requests behind it).
pub(crate) fn close_socket(fd: OwnedFd, why: CloseReason, cut: bool) {
    use std::os::fd::AsFd;
    if cut {
        let _ = crate::sys::net::set_linger_reset(fd.as_fd());
    } else if why == CloseReason::Done {
        let _ = crate::sys::net::shutdown(fd.as_fd(), libc::SHUT_WR);
        crate::sys::net::discard_pending(fd.as_fd(), LINGER_DISCARD);
    }
    drop(fd);
}

/// Refuses a connection at the connection limit: the protocol's overload response,
/// sent without blocking, then a lingering close.
pub(crate) fn refuse(fd: OwnedFd, response: Option<&'static [u8]>) {
    if let Some(msg) = response {
        use std::os::fd::AsFd;
        let _ = crate::sys::net::send_vectored(fd.as_fd(), &[io::IoSlice::new(msg)], false);
    }
    close_socket(fd, CloseReason::Done, false);
}

/// Locks a mutex whose data stays usable after a panic elsewhere: every handler that
/// can panic runs under `catch_unwind`, and none leaves shared state half-updated.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Most unread input discarded before a protocol-initiated close.
const LINGER_DISCARD: usize = 64 * 1024;

/// How far a shutdown has been asked to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownLevel {
    Running,
    /// Stop accepting, drain in-flight responses within `shutdown_timeout`.
    Graceful,
    /// Stop now: abort sends in progress.
    Immediate,
}

/// The shutdown request a backend's coordinator waits on. Written from any thread (the
/// signal thread, a test); never from a signal handler.
#[derive(Debug)]
pub struct Control {
    state: Mutex<ControlState>,
    cv: Condvar,
}

#[derive(Debug)]
struct ControlState {
    level: ShutdownLevel,
    /// Connections [`Control::close`] was asked to close, not yet handed to the backend.
    closes: Vec<Key>,
    /// The shutdown is a hand-off ([`Control::hand_off`]).
    handoff: bool,
    /// Another process holds these listeners too ([`Control::share_listeners`]).
    shared: bool,
    /// One always does (systemd): `shared` stays set.
    pinned: bool,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            state: Mutex::new(ControlState {
                level: ShutdownLevel::Running,
                closes: Vec::new(),
                handoff: false,
                shared: false,
                pinned: false,
            }),
            cv: Condvar::new(),
        }
    }
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, ControlState> {
        lock(&self.state)
    }

    /// Asks for a graceful shutdown; a second call makes it immediate.
    pub fn shutdown(&self) {
        let mut st = self.lock();
        st.level = match st.level {
            ShutdownLevel::Running => ShutdownLevel::Graceful,
            _ => ShutdownLevel::Immediate,
        };
        self.cv.notify_all();
    }

    /// A graceful shutdown for a successor that now accepts on these very listeners
    /// (a hand-off): stop accepting without shutting the listeners (that would close
    /// them for the successor too), serve what was accepted meanwhile, and let idle
    /// connections close after their next response (`Connection: close`) or at the
    /// shutdown timeout, instead of closing them now under a client that may be
    /// sending. It also marks the listeners shared. A shutdown that had already begun
    /// goes on as it was (false is returned).
    pub fn hand_off(&self) -> bool {
        let mut st = self.lock();
        st.shared = true;
        let took = st.level == ShutdownLevel::Running;
        if took {
            st.handoff = true;
            st.level = ShutdownLevel::Graceful;
        }
        self.cv.notify_all();
        took
    }

    /// Says another process holds these very listening sockets (a successor they are
    /// being handed to, or a predecessor they came from): from now on no shutdown
    /// shuts them (`SHUT_RD` on a listener closes it for every process holding it),
    /// they are only no longer accepted on. `false` says the other process is gone
    /// or has stopped accepting for good, so a shutdown may shut them again.
    pub fn share_listeners(&self, shared: bool) {
        let mut st = self.lock();
        st.shared = shared || st.pinned;
    }

    /// The listeners are always shared (systemd keeps a copy of each it passed).
    pub(crate) fn pin_shared(&self) {
        let mut st = self.lock();
        (st.shared, st.pinned) = (true, true);
    }

    /// Whether the shutdown is a hand-off.
    pub(crate) fn handing_off(&self) -> bool {
        self.lock().handoff
    }

    /// Whether a shutdown must leave the listeners unshut.
    pub(crate) fn listeners_shared(&self) -> bool {
        self.lock().shared
    }

    /// Asks the backend to close connection `key` (a key from [`Hooks::on_accept`]):
    /// at once if it is waiting for a request, after the response in flight otherwise
    /// (promise 2 holds). `on_close` then reports [`CloseReason::Requested`]. A key
    /// already closed, even if its slot has a new connection, is ignored and counted
    /// as `stale_dropped`: keys carry a generation.
    pub fn close(&self, key: Key) {
        self.lock().closes.push(key);
        self.cv.notify_all();
    }

    /// The level asked for so far.
    pub fn level(&self) -> ShutdownLevel {
        self.lock().level
    }

    /// Waits up to `timeout` for the level to rise above `seen` or for close requests;
    /// returns the level and takes the requests.
    pub(crate) fn wait(&self, seen: ShutdownLevel, timeout: Duration) -> (ShutdownLevel, Vec<Key>) {
        let st = self.lock();
        let (mut st, _) = self
            .cv
            .wait_timeout_while(st, timeout, |st| st.level <= seen && st.closes.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        (st.level, std::mem::take(&mut st.closes))
    }
}
