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
//! 5. enforce the header and keep-alive timeouts the protocol's
//!    [`Wait`](crate::proto::Wait) asks for;
//! 6. on [`Control::shutdown`]: stop accepting, let in-flight responses finish within
//!    `shutdown_timeout`, close idle connections, join every thread, then return from
//!    [`Running::wait`].
//!
//! `docs/ARCHITECTURE.md` says where each promise is enforced in each backend.

pub mod epoll;

use crate::config::Config;
use crate::conn::Key;
use crate::fs::Root;
use crate::proto::ProtocolFactory;
use crate::stats::Stats;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
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
    pub listeners: Vec<(OwnedFd, SocketAddr)>,
    pub root: Root,
    pub factory: F,
    pub hooks: Arc<dyn Hooks>,
    pub stats: Arc<Stats>,
    pub control: Arc<Control>,
}

/// A started backend.
pub(crate) trait Running: Send {
    /// Blocks until the backend has stopped and joined all its threads.
    fn wait(self: Box<Self>);
}

/// A backend: one type per I/O model, chosen once by a single `match` in `server.rs`.
pub(crate) trait Backend {
    fn start<F: ProtocolFactory>(ctx: Ctx<F>) -> io::Result<Box<dyn Running>>;
}

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
    level: Mutex<ShutdownLevel>,
    cv: Condvar,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            level: Mutex::new(ShutdownLevel::Running),
            cv: Condvar::new(),
        }
    }
}

impl Control {
    /// Asks for a graceful shutdown; a second call makes it immediate.
    pub fn shutdown(&self) {
        let mut l = self.level.lock().unwrap_or_else(|e| e.into_inner());
        *l = match *l {
            ShutdownLevel::Running => ShutdownLevel::Graceful,
            _ => ShutdownLevel::Immediate,
        };
        self.cv.notify_all();
    }

    /// The level asked for so far.
    pub fn level(&self) -> ShutdownLevel {
        *self.level.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` for the level to rise above `seen`; returns the level.
    pub(crate) fn wait_above(&self, seen: ShutdownLevel, timeout: Duration) -> ShutdownLevel {
        let l = self.level.lock().unwrap_or_else(|e| e.into_inner());
        let (l, _) = self
            .cv
            .wait_timeout_while(l, timeout, |l| *l <= seen)
            .unwrap_or_else(|e| e.into_inner());
        *l
    }
}
