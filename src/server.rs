//! Starting a server: bind, open the root, choose the backend (once, by name, with a
//! reason), start it.

use crate::backend::epoll::EpollBackend;
use crate::backend::uring::UringBackend;
use crate::backend::{bind_listener, Backend, Control, Ctx, Hooks, Running};
use crate::config::Config;
use crate::fs::Root;
pub use crate::listener::{Bind, ListenAddr, Listener};
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

/// Listeners bound, the root open and the backend chosen, but nothing serving yet:
/// the point at which the CLI drops privileges.
pub struct Bound {
    cfg: Config,
    listeners: Vec<Listener>,
    root: Root,
    backend: BackendKind,
    reason: String,
    notes: Vec<String>,
    /// Held from the free-port check until every ring's listener is bound and the
    /// backend has started (see `bind`).
    port_locks: Vec<OwnedFd>,
}

/// A running server.
pub struct Server {
    listeners: Arc<[Listener]>,
    backend: BackendKind,
    reason: String,
    notes: Vec<String>,
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
        Server::bind(cfg)?.start(factory, hooks)
    }

    /// Binds `cfg.listen`, opens `cfg.root` and picks the backend; serves nothing yet.
    pub fn bind(cfg: Config) -> Result<Bound, StartError> {
        let binds = cfg.listen.iter().map(|&a| Bind::tcp(a)).collect();
        Server::bind_with(cfg, binds, Vec::new(), false)
    }

    /// Like [`Server::bind`], for `binds` (TCP or Unix), using the listeners in `given`
    /// (a predecessor's, or systemd's) where they match: a given listener whose origin
    /// is a bind's, or whose address is a bind's (a concrete port), serves that bind
    /// and nothing is bound for it. Given listeners from systemd (`systemd:` origins),
    /// and all of them with `keep_given`, are served even if no bind wants them; any
    /// other is closed, with a note. `cfg.listen` is not read.
    pub fn bind_with(
        cfg: Config,
        binds: Vec<Bind>,
        given: Vec<Listener>,
        keep_given: bool,
    ) -> Result<Bound, StartError> {
        cfg.validate().map_err(StartError::Config)?;
        let (backend, reason) = select_backend(&cfg).map_err(StartError::Config)?;
        let root = Root::open(&cfg.root)
            .map_err(|e| StartError::Config(format!("root {}: {e}", cfg.root.display())))?
            .with_max_entries(cfg.max_dir_entries);
        if binds.is_empty() && given.is_empty() {
            return Err(StartError::Config("no --listen address".into()));
        }
        // A given listener serves the bind with its origin, or its address (a concrete
        // port or path): every copy of it (the rings' SO_REUSEPORT sockets) is taken.
        let satisfies = |l: &Listener, b: &Bind| {
            let concrete = matches!(&b.addr, ListenAddr::Tcp(a) if a.port() != 0)
                || matches!(&b.addr, ListenAddr::Unix(Some(_)));
            l.origin() == b.origin || (concrete && *l.addr() == b.addr)
        };
        let mut listeners = Vec::new();
        let mut notes = Vec::new();
        for l in given {
            if binds.iter().any(|b| satisfies(&l, b))
                || keep_given
                || l.origin().starts_with("systemd:")
            {
                listeners.push(l);
            } else {
                notes.push(format!(
                    "no longer listening on {} ({}): not in --listen",
                    l.addr(),
                    l.origin()
                ));
            }
        }
        let fresh: Vec<&Bind> = binds
            .iter()
            .filter(|b| !listeners.iter().any(|l| satisfies(l, b)))
            .collect();
        let ka = &cfg.tcp_keepalive;
        for l in &listeners {
            if matches!(l.addr(), ListenAddr::Tcp(_)) {
                crate::sys::net::tune(l.fd(), (ka.idle, ka.interval, ka.count), cfg.sndbuf)
                    .map_err(StartError::Io)?;
            }
        }
        // io_uring rings each get their own SO_REUSEPORT listener unless told to share.
        let reuseport = backend == BackendKind::Uring && !cfg.uring_shared_listener;
        let copies = if reuseport {
            cfg.uring_threads.max(1)
        } else {
            1
        };
        // A port someone holds is exit 2, whatever the backend and listener mode. A
        // SO_REUSEPORT bind would join a group of this same user (another ringserve)
        // instead of failing, so a reuseport server first checks that the port is free,
        // holding the port's name lock from the check until all its rings are bound
        // (two servers started at once cannot both pass the check).
        let mut port_locks = Vec::new();
        // `:PORT` binds two addresses on one port: one lock serves both.
        let mut locked = Vec::new();
        for b in fresh {
            let cannot = |e: io::Error| {
                let port = match &b.addr {
                    ListenAddr::Tcp(a) => a.port(),
                    ListenAddr::Unix(_) => 0,
                };
                let why = match e.raw_os_error() {
                    Some(libc::EADDRINUSE) => "address already in use".to_string(),
                    _ => match crate::hints::low_port_hint(port, &e) {
                        Some(hint) => format!("{e}; {hint}"),
                        None => e.to_string(),
                    },
                };
                StartError::Config(format!("cannot listen on {}: {why}", b.addr))
            };
            match &b.addr {
                ListenAddr::Tcp(addr) => {
                    // The host has no such address family or address: fine for an
                    // optional bind (the IPv6 half of `:PORT` on a host without IPv6).
                    let absent = |e: &io::Error| {
                        b.optional
                            && matches!(
                                e.raw_os_error(),
                                Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                            )
                    };
                    if reuseport && addr.port() != 0 {
                        if !locked.contains(&addr.port()) {
                            port_locks.push(port_lock(addr.port()).map_err(StartError::Io)?);
                            locked.push(addr.port());
                        }
                        match crate::sys::net::check_free(*addr) {
                            Err(e) if absent(&e) => {
                                notes.push(format!("not listening on {}: {e}", b.addr));
                                continue;
                            }
                            r => r.map_err(cannot)?,
                        }
                    }
                    let mut at = *addr;
                    for copy in 0..copies {
                        let fd = match bind_listener(at, &cfg, reuseport) {
                            Ok(fd) => fd,
                            Err(e) if copy == 0 && absent(&e) => {
                                notes.push(format!("not listening on {}: {e}", b.addr));
                                break;
                            }
                            Err(e) => return Err(cannot(e)),
                        };
                        // The copies join the first one's port (port 0 resolved once).
                        at = crate::sys::net::local_addr(fd.as_fd()).map_err(StartError::Io)?;
                        listeners.push(Listener::new(fd, ListenAddr::Tcp(at), &b.origin));
                    }
                }
                ListenAddr::Unix(path) => {
                    let Some(path) = path else {
                        return Err(StartError::Config("unix: needs a path".into()));
                    };
                    let fd = crate::sys::net::listen_unix(path, cfg.backlog, cfg.unix_socket_mode)
                        .map_err(cannot)?;
                    listeners.push(Listener::new(fd, b.addr.clone(), &b.origin));
                }
            }
        }
        Ok(Bound {
            cfg,
            listeners,
            root,
            backend,
            reason,
            notes,
            port_locks,
        })
    }
}

impl Bound {
    /// The backend that will serve.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Starts serving on the bound listeners.
    pub fn start<F: ProtocolFactory>(
        self,
        factory: F,
        hooks: Arc<dyn Hooks>,
    ) -> Result<Server, StartError> {
        let Bound {
            cfg,
            listeners,
            root,
            backend,
            mut reason,
            notes,
            port_locks,
        } = self;
        let listeners: Arc<[Listener]> = listeners.into();
        let stats = Arc::new(StatsHub::default());
        let control = Arc::new(Control::default());
        // systemd keeps its own copy of a socket it passed (to activate the service
        // again): a shutdown of ours must never shut it.
        if listeners.iter().any(|l| l.origin().starts_with("systemd:")) {
            control.pin_shared();
        }
        let ctx = Ctx {
            cfg,
            listeners: listeners.clone(),
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
            listeners,
            backend,
            reason,
            notes,
            stats,
            control,
            running,
        })
    }
}

impl Server {
    /// The listening sockets, for a hand-off to a successor: each with its address and
    /// origin, several per address when the rings have their own.
    pub fn listeners(&self) -> Arc<[Listener]> {
        self.listeners.clone()
    }

    /// What binding had to say (a listener given but no longer wanted).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The distinct addresses listened on, in order (port 0 resolved).
    pub fn listen_addrs(&self) -> Vec<ListenAddr> {
        let mut out: Vec<ListenAddr> = Vec::new();
        for l in self.listeners.iter() {
            if !out.contains(l.addr()) {
                out.push(l.addr().clone());
            }
        }
        out
    }

    /// The distinct TCP addresses listened on, in `--listen` order (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listen_addrs()
            .into_iter()
            .filter_map(|a| match a {
                ListenAddr::Tcp(a) => Some(a),
                ListenAddr::Unix(_) => None,
            })
            .collect()
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
