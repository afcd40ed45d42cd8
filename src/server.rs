//! Starting a server: bind, open the root, choose the backend (once, by name, with a
//! reason), start it.

use crate::backend::epoll::EpollBackend;
use crate::backend::uring::UringBackend;
use crate::backend::{bind_listener, Backend, Control, Ctx, Hooks, Running};
use crate::config::Config;
use crate::fs::Root;
use crate::probe::{self, BackendKind, BackendRequest};
use crate::proto::ProtocolFactory;
use crate::stats::{Snapshot, StatsHub};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

/// Why a server did not start.
#[derive(Debug)]
pub enum StartError {
    /// Bad configuration: a missing root, an address in use, a backend that cannot
    /// run here. The CLI exits 2.
    Config(String),
    /// A system call failed while starting threads or kernel objects.
    Io(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(m) => f.write_str(m),
            StartError::Io(e) => write!(f, "starting the server: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The backend `cfg` gets, and why: the probe's verdict, then (for io_uring) a ring set
/// up at the size `cfg` needs, since the probe's ring is tiny and a full one can still
/// fail (RLIMIT_MEMLOCK before 5.12). `auto` falls back to epoll with the reason; a
/// forced backend that cannot start is an error. `serve`, `probe` and the test suite all
/// ask here, so they cannot disagree.
pub fn select_backend(cfg: &Config) -> Result<(BackendKind, String), String> {
    let (backend, reason) = probe::choose(cfg.backend, probe::probe())?;
    if backend == BackendKind::Uring {
        if let Err(e) = crate::backend::uring::preflight(cfg) {
            let why = format!("io_uring ring setup failed: {e}");
            if cfg.backend != BackendRequest::Auto {
                return Err(format!("--backend uring: {why}"));
            }
            return Ok((BackendKind::Epoll, format!("{why}; using epoll")));
        }
    }
    Ok((backend, reason))
}

/// A running server.
pub struct Server {
    addrs: Vec<SocketAddr>,
    backend: BackendKind,
    reason: String,
    stats: Arc<StatsHub>,
    control: Arc<Control>,
    running: Box<dyn Running>,
}

/// The name lock of TCP port `port` (any address: `0.0.0.0:P` and `127.0.0.1:P`
/// conflict), waited for while another ringserve holds it (it holds it only while it
/// binds, milliseconds).
fn port_lock(port: u16) -> io::Result<OwnedFd> {
    let name = format!("ringserve-bind-port-{port}");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(fd) = crate::sys::net::name_lock(&name)? {
            return Ok(fd);
        }
        if std::time::Instant::now() >= until {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("port {port}: another ringserve has been binding it for 5 s"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

impl Server {
    /// Binds `cfg.listen`, opens `cfg.root`, picks the backend and starts serving.
    pub fn start<F: ProtocolFactory>(
        cfg: Config,
        factory: F,
        hooks: Arc<dyn Hooks>,
    ) -> Result<Server, StartError> {
        cfg.validate().map_err(StartError::Config)?;
        let (backend, mut reason) = select_backend(&cfg).map_err(StartError::Config)?;
        let root = Root::open(&cfg.root)
            .map_err(|e| StartError::Config(format!("root {}: {e}", cfg.root.display())))?;
        if cfg.listen.is_empty() {
            return Err(StartError::Config("no --listen address".into()));
        }
        // io_uring rings each get their own SO_REUSEPORT listener unless told to share.
        let reuseport = backend == BackendKind::Uring && !cfg.uring_shared_listener;
        // A port someone holds is exit 2, whatever the backend and listener mode. A
        // SO_REUSEPORT bind would join a group of this same user (another ringserve)
        // instead of failing, so a reuseport server first checks that the port is free,
        // holding the port's name lock from the check until all its rings are bound
        // (two servers started at once cannot both pass the check).
        let mut port_locks = Vec::new();
        let mut listeners = Vec::with_capacity(cfg.listen.len());
        for &addr in &cfg.listen {
            let cannot = |e: io::Error| {
                let why = match e.raw_os_error() {
                    Some(libc::EADDRINUSE) => "address already in use".to_string(),
                    _ => e.to_string(),
                };
                StartError::Config(format!("cannot listen on {addr}: {why}"))
            };
            if reuseport && addr.port() != 0 {
                port_locks.push(port_lock(addr.port()).map_err(StartError::Io)?);
                crate::sys::net::check_free(addr).map_err(cannot)?;
            }
            let fd = bind_listener(addr, &cfg, reuseport).map_err(cannot)?;
            let bound = crate::sys::net::local_addr(fd.as_fd()).map_err(StartError::Io)?;
            listeners.push((fd, bound));
        }
        let addrs = listeners.iter().map(|(_, a)| *a).collect();
        let stats = Arc::new(StatsHub::default());
        let control = Arc::new(Control::default());
        let ctx = Ctx {
            cfg,
            listeners,
            root,
            factory,
            hooks,
            stats: stats.clone(),
            control: control.clone(),
            replaced: Default::default(),
        };
        let running = match backend {
            BackendKind::Epoll => EpollBackend::start(ctx),
            BackendKind::Uring => UringBackend::start(ctx),
        }
        .map_err(StartError::Io)?;
        drop(port_locks);
        for note in running.notes() {
            reason = format!("{reason}; {note}");
        }
        Ok(Server {
            addrs,
            backend,
            reason,
            stats,
            control,
            running,
        })
    }

    /// The bound addresses, in `--listen` order (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The backend serving.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Why that backend was chosen.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The counters now.
    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// The live counters, for a thread that reports them (SIGUSR1).
    pub fn stats_handle(&self) -> Arc<StatsHub> {
        self.stats.clone()
    }

    /// A handle that asks for shutdown from any thread: graceful the first time,
    /// immediate the second.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// Blocks until the server has shut down and joined all its threads.
    pub fn wait(self) {
        self.running.wait();
    }

    /// Asks for a graceful shutdown and waits for it.
    pub fn shutdown(self) {
        self.control.shutdown();
        self.wait();
    }
}
