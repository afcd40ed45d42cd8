//! The `ringserve` command: parse → config → probe → serve. Nothing else lives here.

use clap::{Args, Parser, Subcommand, ValueEnum};
use ringserve::backend::blocking::Limits;
use ringserve::backend::ShutdownLevel;
use ringserve::client::{self, parse_size, Failure};
use ringserve::config::{parse_duration, Config, TcpKeepalive};
use ringserve::handoff;
use ringserve::listener::{Bind, Listener};
use ringserve::log::Level;
use ringserve::privs::{self, UserSpec};
use ringserve::probe::{self, BackendRequest};
use ringserve::proto::echo::EchoFactory;
use ringserve::proto::http1::rules::{CacheRule, Cors, HeaderRule, Rules};
use ringserve::proto::http1::{Coding, Dotfiles, Etag, HttpConfig, HttpFactory};
use ringserve::proto::xfer::{XferConfig, XferFactory};
use ringserve::stats::{Snapshot, StatsHub};
use ringserve::status::StatusServer;
use ringserve::sys::epoll::{raise_nofile_limit, SigSet};
use ringserve::{log_error, log_info, log_notice, log_warn, say, NoHooks, Server, StartError};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Exit status for bad usage or configuration (clap uses it for usage errors too).
const EXIT_CONFIG: u8 = 2;
/// Descriptors kept back from --max-connections for listeners, files being sent,
/// directories being listed, epoll, eventfds and the spare.
const FD_RESERVE: u64 = 64;

#[derive(Parser)]
#[command(
    name = "ringserve",
    version,
    about = "An io_uring-first static file server with an epoll fallback"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve a directory over HTTP/1.1 (or run another protocol).
    Serve(Box<ServeArgs>),
    /// Report the kernel's io_uring support and which backend `auto` would choose.
    Probe {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Download a file from an xfer server (zero-copy: splice into the file).
    Get {
        /// The server: HOST:PORT or xfer://HOST:PORT.
        addr: String,
        /// The file on the server, relative to its root.
        remote: String,
        /// Where to write it [default: REMOTE's last name, in the current directory].
        #[arg(short, long, value_name = "LOCAL")]
        output: Option<PathBuf>,
        /// Resume an interrupted download, if the remote file is still the same version.
        #[arg(short = 'c', long = "continue")]
        resume: bool,
        /// Overwrite LOCAL if it exists (with --continue: start over if the file changed).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        limits: ClientLimits,
    },
    /// Upload a file to an xfer server run with --allow-upload (zero-copy: sendfile).
    Put {
        /// The server: HOST:PORT or xfer://HOST:PORT.
        addr: String,
        /// The local file.
        local: PathBuf,
        /// The name on the server [default: LOCAL's file name, at the root].
        remote: Option<String>,
        /// Replace the server's file if it exists (the server must allow it).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        limits: ClientLimits,
    },
    /// Write .br and .zst sidecars beneath ROOT for `serve --precompressed`: for text,
    /// JSON, JavaScript, SVG, WebAssembly and font files, each only where it is smaller,
    /// with its file's mtime and permissions, written atomically. Files whose sidecars
    /// are already in step (same mtime) are skipped, so a run after a deploy compresses
    /// only what changed. Symlinks are not followed and dotfiles are skipped.
    #[cfg(feature = "compress")]
    Compress {
        /// The directory to compress beneath (what `serve` serves).
        root: PathBuf,
        /// The sidecars to write: br (FILE.br), zstd (FILE.zst), or both.
        #[arg(long, value_name = "LIST", default_value = "br,zstd", value_parser = codings)]
        formats: Codings,
        /// Files smaller than this are left alone: a few bytes saved are not worth a
        /// second file.
        #[arg(long, value_name = "BYTES", default_value = "256", value_parser = parse_size)]
        min_size: u64,
        /// Brotli quality, 0 (fastest) to 11 (smallest).
        #[arg(long, value_name = "Q", default_value_t = 11)]
        brotli_quality: u32,
        /// zstd level, 1 (fastest) to 22 (smallest).
        #[arg(long, value_name = "L", default_value_t = 19)]
        zstd_level: i32,
        /// Rewrite sidecars that are already in step with their files.
        #[arg(long)]
        force: bool,
        /// Print a line for every sidecar written or not written.
        #[arg(short, long)]
        verbose: bool,
        /// Files compressed at once [default: the CPU count].
        #[arg(short, long, value_name = "N")]
        jobs: Option<usize>,
    },
    /// List a directory on an xfer server.
    Ls {
        /// The server: HOST:PORT or xfer://HOST:PORT.
        addr: String,
        /// The directory, relative to the server's root.
        #[arg(default_value = "")]
        dir: String,
        /// Print JSON: an array of {name, kind, size, mtime}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: ClientLimits,
    },
}

/// How long the client waits.
#[derive(Args)]
struct ClientLimits {
    /// Connecting, and each reply.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = duration)]
    timeout: Duration,
    /// A file body that moves no byte for this long fails.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = duration)]
    stall_timeout: Duration,
}

impl ClientLimits {
    fn limits(&self) -> Limits {
        Limits {
            reply: self.timeout,
            body: self.stall_timeout,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Auto,
    Uring,
    Epoll,
}

#[derive(Clone, Copy, ValueEnum)]
enum DotfilesArg {
    /// 404 for any path with a segment starting with `.`; left out of listings.
    Deny,
    /// Served and listed like other names.
    Allow,
}

#[derive(Clone, Copy, ValueEnum)]
enum EtagArg {
    /// Modification time (ns) and size: copies made with `cp -a` or rsync -t agree.
    MtimeSize,
    /// Device, inode, mtime and size: unique to this host's file.
    Inode,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogLevelArg {
    Error,
    Warn,
    Notice,
    Info,
    Debug,
}

impl LogLevelArg {
    fn level(self) -> Level {
        match self {
            LogLevelArg::Error => Level::Error,
            LogLevelArg::Warn => Level::Warn,
            LogLevelArg::Notice => Level::Notice,
            LogLevelArg::Info => Level::Info,
            LogLevelArg::Debug => Level::Debug,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    /// HTTP/1.1 static files.
    Http,
    /// Echo every byte back (the seed's default handler).
    Echo,
    /// The file-transfer protocol (`ringserve get`, `put`, `ls`).
    Xfer,
}

impl ProtocolArg {
    fn scheme(self) -> &'static str {
        match self {
            ProtocolArg::Http => "http",
            ProtocolArg::Echo => "tcp",
            ProtocolArg::Xfer => "xfer",
        }
    }

    /// The protocol a scheme (`http`, `xfer`, `tcp` or `echo`) names.
    fn of_scheme(s: &str) -> Option<ProtocolArg> {
        match s {
            "http" => Some(ProtocolArg::Http),
            "xfer" => Some(ProtocolArg::Xfer),
            "tcp" | "echo" => Some(ProtocolArg::Echo),
            _ => None,
        }
    }
}

/// One `--listen` value (`listener::parse_listen`), with the protocol its scheme names.
#[derive(Clone)]
struct Listen {
    protocol: Option<ProtocolArg>,
    binds: Vec<Bind>,
}

fn listen_value(s: &str) -> Result<Listen, String> {
    let (scheme, binds) = ringserve::listener::parse_listen(s)?;
    let protocol = match scheme {
        None => None,
        Some(sc) => Some(
            ProtocolArg::of_scheme(sc)
                .ok_or_else(|| format!("unknown scheme {sc}:// (http, xfer, tcp)"))?,
        ),
    };
    Ok(Listen { protocol, binds })
}

/// Where `serve` listens when neither --listen nor a predecessor or systemd says.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

fn octal_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s}: not a permission mode in octal (660)"))
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// `--status-listen`: one TCP address, in `--listen`'s forms (the first address of a
/// name; `:PORT` is every IPv4 interface).
fn status_addr(s: &str) -> Result<SocketAddr, String> {
    let (scheme, binds) = ringserve::listener::parse_listen(s)?;
    if scheme.is_some() {
        return Err(format!("{s}: no scheme here (the endpoint speaks HTTP)"));
    }
    match binds.first().map(|b| &b.addr) {
        Some(ringserve::listener::ListenAddr::Tcp(a)) => Ok(*a),
        _ => Err(format!("{s}: a TCP address (ADDR:PORT, :PORT, NAME:PORT)")),
    }
}

/// Durations accept `20`, `20s`, `500ms` or `2m`; a bare number is seconds.
#[derive(Args)]
struct ServeArgs {
    /// Directory to serve.
    #[arg(env = "RINGSERVE_ROOT", default_value = ".")]
    root: PathBuf,
    /// Address to listen on; repeat for several [default: 127.0.0.1:8080, unless
    /// systemd or --takeover gives listeners]. ADDR:PORT, [V6]:PORT, :PORT or PORT (all
    /// interfaces, IPv4 and IPv6: what a container needs), NAME:PORT (every address
    /// the name resolves to: localhost:8080), or unix:/path (HTTP over a Unix socket).
    /// Port 0 picks a free port. A value may name its protocol (`http://:8080`,
    /// `xfer://:9090`), so one process serves both; a bare one takes --protocol.
    #[arg(env = "RINGSERVE_LISTEN", long, value_name = "ADDR:PORT", value_parser = listen_value)]
    listen: Vec<Listen>,
    /// Permission bits (octal) of a unix:/path listener's socket file.
    #[arg(env = "RINGSERVE_UNIX_SOCKET_MODE", long, value_name = "MODE", default_value = "660", value_parser = octal_mode)]
    unix_socket_mode: u32,
    /// Accept hand-off requests on this Unix socket (a path, or @name for the abstract
    /// namespace): a new server started with --takeover PATH receives the listening
    /// sockets, and this one drains and exits 0. Only the same uid may use it.
    #[arg(env = "RINGSERVE_CONTROL_SOCKET", long, value_name = "PATH")]
    control_socket: Option<String>,
    /// Take the listening sockets over from the server whose --control-socket is PATH,
    /// serve on them, then have it drain and exit. No connection is refused or lost.
    /// If this server cannot start, the old one keeps serving.
    #[arg(long, value_name = "PATH", env = "RINGSERVE_TAKEOVER")]
    takeover: Option<String>,
    /// I/O backend. auto: io_uring where the kernel really offers it, epoll otherwise.
    /// A forced backend that cannot start is an error, never a silent switch.
    #[arg(env = "RINGSERVE_BACKEND", long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Protocol spoken on connections to a --listen address that names none.
    #[arg(env = "RINGSERVE_PROTOCOL", long, value_enum, default_value = "http")]
    protocol: ProtocolArg,
    /// xfer: accept uploads (PUT) [default: off].
    #[arg(env = "RINGSERVE_ALLOW_UPLOAD", long)]
    allow_upload: bool,
    /// xfer: let an upload replace an existing file (needs --allow-upload) [default: off].
    #[arg(env = "RINGSERVE_ALLOW_REPLACE", long)]
    allow_replace: bool,
    /// xfer: largest upload, in bytes or with K/M/G/T.
    #[arg(env = "RINGSERVE_MAX_UPLOAD_SIZE", long, value_name = "SIZE", default_value = "64G", value_parser = parse_size)]
    max_upload_size: u64,

    /// epoll pool: worker threads kept even when idle [default: CPU count, at least 2].
    #[arg(env = "RINGSERVE_WORKERS_MIN", long, value_name = "N")]
    workers_min: Option<usize>,
    /// epoll pool: most worker threads; the pool grows by one when all are busy.
    #[arg(
        env = "RINGSERVE_WORKERS_MAX",
        long,
        value_name = "N",
        default_value_t = 256
    )]
    workers_max: usize,
    /// epoll pool: a worker above the minimum that has been idle this long exits.
    #[arg(env = "RINGSERVE_WORKER_IDLE_TIMEOUT", long, value_name = "DUR", default_value = "20s", value_parser = duration)]
    worker_idle_timeout: Duration,

    /// A send that makes no progress for this long closes the connection.
    #[arg(env = "RINGSERVE_SEND_TIMEOUT", long, value_name = "DUR", default_value = "20s", value_parser = duration)]
    send_timeout: Duration,
    /// Time to receive a whole request header section (slowloris guard).
    #[arg(env = "RINGSERVE_HEADER_TIMEOUT", long, value_name = "DUR", default_value = "30s", value_parser = duration)]
    header_timeout: Duration,
    /// An idle kept-alive connection is closed after this long.
    #[arg(env = "RINGSERVE_KEEPALIVE_TIMEOUT", long, value_name = "DUR", default_value = "75s", value_parser = duration)]
    keepalive_timeout: Duration,
    /// An upload (a request body streamed into a file) ends when no byte arrives for
    /// this long; every byte restarts it.
    #[arg(env = "RINGSERVE_BODY_TIMEOUT", long, value_name = "DUR", default_value = "60s", value_parser = duration)]
    body_timeout: Duration,
    /// On SIGTERM, SIGINT or SIGQUIT (and after a hand-off), in-flight responses get
    /// this long to finish; a second signal stops at once. Below Docker's 10 s stop
    /// grace period, so a drain ends before its SIGKILL.
    #[arg(env = "RINGSERVE_SHUTDOWN_TIMEOUT", long, value_name = "DUR", default_value = "8s", value_parser = duration)]
    shutdown_timeout: Duration,

    /// Most open connections; more are accepted and closed at once (HTTP: a 503).
    /// Capped by the open-file limit.
    #[arg(
        env = "RINGSERVE_MAX_CONNECTIONS",
        long,
        value_name = "N",
        default_value_t = 16384
    )]
    max_connections: usize,
    /// listen(2) backlog.
    #[arg(
        env = "RINGSERVE_BACKLOG",
        long,
        value_name = "N",
        default_value_t = 4096
    )]
    backlog: u32,
    /// SO_SNDBUF for accepted sockets in bytes; 0 keeps the kernel's autotuning.
    #[arg(
        env = "RINGSERVE_SNDBUF",
        long,
        value_name = "BYTES",
        default_value_t = 0
    )]
    sndbuf: usize,

    /// io_uring: ring threads, each with its own ring and connections [default: CPU count].
    #[arg(env = "RINGSERVE_URING_THREADS", long, value_name = "N")]
    uring_threads: Option<usize>,
    /// io_uring: all rings accept on one shared listener instead of one SO_REUSEPORT
    /// listener per ring [default: off].
    #[arg(env = "RINGSERVE_URING_SHARED_LISTENER", long)]
    uring_shared_listener: bool,
    /// io_uring: provided receive buffers (4 KiB each) per ring; rounded up to a power
    /// of two. Idle connections hold none; when all are in use, reads wait.
    #[arg(
        env = "RINGSERVE_URING_BUFFERS",
        long,
        value_name = "N",
        default_value_t = 256
    )]
    uring_buffers: u16,
    /// io_uring: keep one multishot receive armed per connection (6.0+) instead of one
    /// receive per request. Input that arrives mid-response is held until the response
    /// is sent [default: off; measured slower for HTTP keep-alive].
    #[arg(env = "RINGSERVE_URING_MULTISHOT_RECV", long)]
    uring_multishot_recv: bool,

    /// Open-file cache: descriptors and metadata of this many recently served paths per
    /// ring (io_uring) or for the pool (epoll), so a hot file costs no open, stat or
    /// close per request. 0 turns it off.
    #[arg(
        env = "RINGSERVE_OPEN_FILE_CACHE",
        long,
        value_name = "N",
        default_value_t = 1024
    )]
    open_file_cache: usize,
    /// Open-file cache: an entry is trusted this long, then the path is opened again. A
    /// file changed or removed on disk is seen at most this late. 0 turns the cache off.
    #[arg(env = "RINGSERVE_OPEN_FILE_CACHE_VALID", long, value_name = "DUR", default_value = "1s", value_parser = duration)]
    open_file_cache_valid: Duration,

    /// Print every thread's counters (submissions, completions, io_uring_enter calls,
    /// epoll wakeups, accepts, bytes by path, stale completions) grown in each interval,
    /// then a total with open connections and pool size, to stderr. SIGUSR1 prints the
    /// running totals at any time. 0 is off.
    #[arg(
        env = "RINGSERVE_STATS_INTERVAL",
        long,
        value_name = "SECS",
        default_value_t = 0
    )]
    stats_interval: u64,

    /// Serve GET /metrics (Prometheus text format: every counter above per thread, the
    /// gauges) and GET /healthz (200 "ok", or 503 once the server drains) on this
    /// address, apart from the file server: ADDR:PORT, [V6]:PORT, NAME:PORT or :PORT.
    /// Bind it to loopback or a private network: it is not access-controlled.
    #[arg(env = "RINGSERVE_STATUS_LISTEN", long, value_name = "ADDR", value_parser = status_addr)]
    status_listen: Option<SocketAddr>,

    /// TCP keepalive: idle time before the first probe.
    #[arg(env = "RINGSERVE_TCP_KEEPALIVE_IDLE", long, value_name = "DUR", default_value = "1800s", value_parser = duration)]
    tcp_keepalive_idle: Duration,
    /// TCP keepalive: time between probes.
    #[arg(env = "RINGSERVE_TCP_KEEPALIVE_INTERVAL", long, value_name = "DUR", default_value = "5s", value_parser = duration)]
    tcp_keepalive_interval: Duration,
    /// TCP keepalive: unanswered probes before the connection is dropped.
    #[arg(
        env = "RINGSERVE_TCP_KEEPALIVE_COUNT",
        long,
        value_name = "N",
        default_value_t = 3
    )]
    tcp_keepalive_count: u32,

    /// Serve an HTML listing for directories without index.html [default: off].
    #[arg(env = "RINGSERVE_LISTING", long)]
    listing: bool,
    /// Entries one directory listing holds at most (HTTP --listing, xfer `ls`), so one
    /// request cannot make the server allocate and stat without bound. Past it an HTTP
    /// listing is partial and says how many it left out; xfer `ls` is refused.
    #[arg(env = "RINGSERVE_MAX_DIR_ENTRIES", long, value_name = "N", default_value_t = ringserve::fs::MAX_DIR_ENTRIES)]
    max_dir_entries: usize,
    /// Write one access-log line per response, nginx's "combined" format with the body
    /// bytes actually sent, to PATH (appended; SIGUSR1 reopens it, for logrotate), or to
    /// stdout without a PATH or with `-` [default: off]. Never blocks serving: when the
    /// log's reader falls behind, lines are dropped, counted (log_dropped) and reported.
    #[arg(env = "RINGSERVE_ACCESS_LOG", long, value_name = "PATH", num_args = 0..=1, default_missing_value = "-")]
    access_log: Option<PathBuf>,
    /// Access-log lines held for a reader that falls behind before new ones are
    /// dropped (like nginx's access_log buffer=, but in lines).
    #[arg(env = "RINGSERVE_ACCESS_LOG_QUEUE", long, value_name = "LINES", default_value_t = ringserve::log::access::QUEUE_LINES as u32,
          value_parser = clap::value_parser!(u32).range(1..=1 << 24))]
    access_log_queue: u32,
    /// Where the error log goes: start and stop, the cause of each 403 and 500,
    /// accept errors, running out of descriptors, dropped log lines, statistics. A
    /// PATH is appended to and reopened on SIGUSR1; `-` is stderr [default: stderr].
    /// Under journald each line carries its syslog priority (`<3>` ... `<7>`).
    #[arg(env = "RINGSERVE_ERROR_LOG", long, value_name = "PATH")]
    error_log: Option<PathBuf>,
    /// The least severe error-log lines written; the startup line is always written.
    #[arg(
        env = "RINGSERVE_LOG_LEVEL",
        long,
        value_enum,
        value_name = "LEVEL",
        default_value = "info"
    )]
    log_level: LogLevelArg,
    /// Largest request header section in bytes; larger gets 431.
    #[arg(
        env = "RINGSERVE_MAX_HEADER_BYTES",
        long,
        value_name = "BYTES",
        default_value_t = 16384
    )]
    max_header_bytes: usize,
    /// Longest request-target in bytes; longer gets 414.
    #[arg(
        env = "RINGSERVE_MAX_URI_BYTES",
        long,
        value_name = "BYTES",
        default_value_t = 8192
    )]
    max_uri_bytes: usize,
    /// Most header field lines in one request (1 to 10000); more gets 431.
    #[arg(env = "RINGSERVE_MAX_HEADER_FIELDS", long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..=10_000))]
    max_header_fields: u16,
    /// HTTP: names starting with `.` (`.git`, `.env`). /.well-known/ is always served.
    #[arg(
        env = "RINGSERVE_DOTFILES",
        long,
        value_enum,
        value_name = "POLICY",
        default_value = "deny"
    )]
    dotfiles: DotfilesArg,
    /// HTTP: what a file's ETag is made of. Servers of copies of one tree agree on
    /// mtime-size ETags, so a client may switch between them and keep its cache.
    #[arg(
        env = "RINGSERVE_ETAG",
        long,
        value_enum,
        value_name = "FORM",
        default_value = "mtime-size"
    )]
    etag: EtagArg,
    /// HTTP: serve a precompressed sidecar (FILE.br, FILE.zst, FILE.gz) in place of a
    /// text, JSON, JavaScript, SVG, WebAssembly or font file, to a client whose
    /// Accept-Encoding accepts its coding, when the sidecar is no older than the file.
    /// CODINGS is a list of br, zstd, gzip: which to look for, and the server's
    /// preference among those the client rates equally. `off`: none.
    #[arg(
        env = "RINGSERVE_PRECOMPRESSED",
        long,
        value_name = "CODINGS",
        default_value = "off",
        value_parser = codings
    )]
    precompressed: Codings,
    /// HTTP: a GET or HEAD for a missing path gets this file (beneath ROOT, e.g.
    /// index.html) with 200 when the path's last name has no extension or the request
    /// accepts text/html: a single-page app's routes, as nginx's try_files. [default:
    /// none]
    #[arg(env = "RINGSERVE_FALLBACK", long, value_name = "PATH", value_parser = served_path)]
    fallback: Option<String>,
    /// HTTP: the body of a 404 for a missing file comes from this file (beneath ROOT,
    /// e.g. 404.html); if it is missing too, the built-in page. It may be a dotfile
    /// (`.errors/404.html`): served in this role only, never to a request of its own
    /// name under --dotfiles deny. [default: built-in]
    #[arg(env = "RINGSERVE_PAGE404", long, value_name = "PATH", value_parser = served_path)]
    page404: Option<String>,
    /// HTTP: add a header to every response (`NAME: VALUE`), or to those for paths a
    /// glob matches (`GLOB:NAME: VALUE`, e.g. `assets/**:X-Robots-Tag: noindex`).
    /// Globs match the path without its leading `/`: `*` within a name, `**` across
    /// names. Repeatable; a bad rule is exit 2. Framing fields (Content-Length,
    /// Content-Type, ...) stay the server's. [default: none]
    #[arg(long = "header", value_name = "[GLOB:]NAME: VALUE", value_parser = HeaderRule::parse)]
    headers: Vec<HeaderRule>,
    /// HTTP: Cache-Control for paths GLOB matches, e.g.
    /// `assets/**=public, max-age=31536000, immutable`; the first matching rule wins.
    /// Repeatable. [default: none]
    #[arg(long = "cache-control", value_name = "GLOB=VALUE", value_parser = CacheRule::parse)]
    cache_control: Vec<CacheRule>,
    /// HTTP: CORS for ORIGIN (`https://app.example`; repeatable) or any origin (`*`):
    /// Access-Control-Allow-Origin on responses to it, and 204 to its preflight
    /// OPTIONS requests. [default: off]
    #[arg(long, value_name = "ORIGIN|*", value_parser = cors_origin)]
    cors: Vec<String>,
    /// After binding the listeners and opening the root, drop to this user (setgroups,
    /// setgid, setuid), verified; exit 2 if it cannot. Names or numeric ids; GROUP
    /// defaults to the user's primary group, and is the only supplementary group.
    #[arg(env = "RINGSERVE_USER", long, value_name = "USER[:GROUP]", value_parser = user_spec)]
    user: Option<UserSpec>,
}

/// `--precompressed`'s list, in order.
#[derive(Debug, Clone)]
struct Codings(Vec<Coding>);

fn codings(s: &str) -> Result<Codings, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Codings(Vec::new()));
    }
    let mut list = Vec::new();
    for name in s.split(',').map(str::trim) {
        let c = Coding::from_name(name)
            .ok_or_else(|| format!("unknown coding {name:?} (known: br, zstd, gzip, or off)"))?;
        if list.contains(&c) {
            return Err(format!("{name} is listed twice"));
        }
        list.push(c);
    }
    Ok(Codings(list))
}

fn cors_origin(s: &str) -> Result<String, String> {
    Cors::default().add(s).map(|()| s.trim().to_owned())
}

fn served_path(s: &str) -> Result<String, String> {
    ringserve::proto::http1::served_path(s)
}

fn user_spec(s: &str) -> Result<UserSpec, String> {
    s.parse()
}

impl ServeArgs {
    /// The server's configuration (without its addresses), the protocols', and the
    /// addresses each protocol listens on, in --listen order.
    fn into_config(self) -> (Config, HttpConfig, XferConfig, Vec<(ProtocolArg, Bind)>) {
        let listens = self
            .listen
            .iter()
            .flat_map(|l| {
                let p = l.protocol.unwrap_or(self.protocol);
                l.binds.iter().map(move |b| (p, b.clone()))
            })
            .collect();
        let xfer = XferConfig {
            allow_upload: self.allow_upload,
            allow_replace: self.allow_replace,
            max_upload: self.max_upload_size,
            ..XferConfig::default()
        };
        let mut cfg = Config::new(self.root);
        cfg.backend = match self.backend {
            BackendArg::Auto => BackendRequest::Auto,
            BackendArg::Uring => BackendRequest::Uring,
            BackendArg::Epoll => BackendRequest::Epoll,
        };
        if let Some(n) = self.workers_min {
            cfg.workers_min = n;
        }
        cfg.workers_max = self.workers_max;
        cfg.worker_idle_timeout = self.worker_idle_timeout;
        cfg.send_timeout = self.send_timeout;
        cfg.header_timeout = self.header_timeout;
        cfg.keepalive_timeout = self.keepalive_timeout;
        cfg.body_timeout = self.body_timeout;
        cfg.shutdown_timeout = self.shutdown_timeout;
        if let Some(n) = self.uring_threads {
            cfg.uring_threads = n;
        }
        cfg.uring_shared_listener = self.uring_shared_listener;
        cfg.uring_buffers = self.uring_buffers;
        cfg.uring_multishot_recv = self.uring_multishot_recv;
        cfg.max_connections = self.max_connections;
        cfg.backlog = self.backlog;
        cfg.sndbuf = self.sndbuf;
        cfg.open_file_cache = self.open_file_cache;
        cfg.max_dir_entries = self.max_dir_entries;
        cfg.open_file_cache_valid = self.open_file_cache_valid;
        cfg.unix_socket_mode = self.unix_socket_mode;
        cfg.tcp_keepalive = TcpKeepalive {
            idle: self.tcp_keepalive_idle,
            interval: self.tcp_keepalive_interval,
            count: self.tcp_keepalive_count,
        };
        let http = HttpConfig {
            listing: self.listing,
            access_log: self.access_log.is_some(),
            max_header_bytes: self.max_header_bytes,
            max_uri_bytes: self.max_uri_bytes,
            max_header_fields: usize::from(self.max_header_fields),
            dotfiles: match self.dotfiles {
                DotfilesArg::Deny => Dotfiles::Deny,
                DotfilesArg::Allow => Dotfiles::Allow,
            },
            etag: match self.etag {
                EtagArg::MtimeSize => Etag::MtimeSize,
                EtagArg::Inode => Etag::Inode,
            },
            precompressed: self.precompressed.0,
            fallback: self.fallback,
            page404: self.page404,
            rules: Rules::new(
                self.headers,
                self.cache_control,
                (!self.cors.is_empty()).then(|| {
                    let mut c = Cors::default();
                    for origin in &self.cors {
                        // Each one passed cors_origin, the same check.
                        let _ = c.add(origin);
                    }
                    c
                }),
            ),
            ..HttpConfig::default()
        };
        (cfg, http, xfer, listens)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: print as clap formats them, exit 0.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One clear line, not clap's three: "ringserve: invalid value ...".
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad usage");
            say!("ringserve: {}", first.trim_start_matches("error: "));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.cmd {
        Cmd::Probe { json } => {
            let p = probe::probe();
            // What `serve` with the defaults would really do: the probe's verdict plus
            // a full-size ring (server::select_backend), not the probe's tiny ring alone.
            let choice = ringserve::server::select_backend(&Config::new("."));
            if json {
                let mut v = p.to_json();
                if let Ok((kind, reason)) = choice {
                    v["backend"] = kind.to_string().into();
                    v["reason"] = reason.into();
                }
                if let Some(w) = write_path_here() {
                    v["uploads_here"] = w.into();
                }
                let _ = writeln!(std::io::stdout(), "{v}");
            } else {
                let _ = write!(std::io::stdout(), "{}", p.to_text());
                if let Ok((kind, reason)) = choice {
                    if kind != p.backend {
                        let _ = writeln!(
                            std::io::stdout(),
                            "serve would use:    {kind} because {reason}"
                        );
                    }
                }
                if let Some(w) = write_path_here() {
                    let _ = writeln!(std::io::stdout(), "uploads here (.):   {w}");
                }
            }
            ExitCode::SUCCESS
        }
        Cmd::Serve(args) => serve(*args),
        Cmd::Get {
            addr,
            remote,
            output,
            resume,
            force,
            limits,
        } => finish(client::get(client::GetArgs {
            addr,
            remote,
            local: output,
            resume,
            force,
            limits: limits.limits(),
        })),
        Cmd::Put {
            addr,
            local,
            remote,
            replace,
            limits,
        } => finish(client::put(client::PutArgs {
            addr,
            local,
            remote,
            replace,
            limits: limits.limits(),
        })),
        Cmd::Ls {
            addr,
            dir,
            json,
            limits,
        } => finish(client::ls(&addr, &dir, json, limits.limits())),
        #[cfg(feature = "compress")]
        Cmd::Compress {
            root,
            formats,
            min_size,
            brotli_quality,
            zstd_level,
            force,
            verbose,
            jobs,
        } => {
            let args = ringserve::compress::CompressArgs {
                root,
                codings: formats.0,
                min_size,
                brotli_quality,
                zstd_level,
                force,
                verbose,
                jobs: jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            };
            finish(ringserve::compress::compress(&args).map(|sum| {
                let _ = writeln!(std::io::stdout(), "{}", sum.line());
            }))
        }
    }
}

/// How xfer uploads would be written in the current directory (the file system
/// decides: O_TMPFILE, RENAME_NOREPLACE and fallocate are not everywhere).
fn write_path_here() -> Option<String> {
    let root = ringserve::fs::Root::open(std::path::Path::new(".")).ok()?;
    Some(root.write_path().to_string())
}

/// A client command's exit: 0, 2 for bad usage, 1 when the transfer or the server
/// failed, each failure one line (anyhow's context chain, outermost first).
fn finish(r: Result<(), Failure>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            say!("ringserve: {m}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Failed(e)) => {
            say!("ringserve: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The logs' level, files and queue, before anything writes a line.
fn set_up_logs(args: &ServeArgs) -> Result<(), String> {
    ringserve::log::set_level(args.log_level.level());
    ringserve::log::access::set_queue_lines(args.access_log_queue as usize);
    if let Some(p) = &args.access_log {
        ringserve::log::access::set_path(p)
            .map_err(|e| format!("--access-log {}: {e}", p.display()))?;
    }
    let p = args
        .error_log
        .as_deref()
        .unwrap_or(std::path::Path::new("-"));
    ringserve::log::error::set_path(p).map_err(|e| format!("--error-log {}: {e}", p.display()))
}

/// Says `line` synchronously on stderr, after what the logs hold (at most a second
/// each): the last word of a run that ends before or instead of serving.
fn last_word(line: std::fmt::Arguments<'_>) {
    ringserve::log::flush(Duration::from_secs(1));
    say!("{line}");
}

fn serve(args: ServeArgs) -> ExitCode {
    let stats_interval = args.stats_interval;
    let status_listen = args.status_listen;
    let control_socket = args.control_socket.clone();
    let takeover = args.takeover.clone();
    let explicit_listen = !args.listen.is_empty();
    let default_protocol = args.protocol;
    if let Err(e) = set_up_logs(&args) {
        say!("ringserve: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let user = args.user.clone();
    // Log files the server opened as root, for --user's chown.
    let log_files: Vec<PathBuf> = [args.access_log.clone(), args.error_log.clone()]
        .into_iter()
        .flatten()
        .filter(|p| p.as_os_str() != "-")
        .collect();
    let (mut cfg, http, xfer, mut listens) = args.into_config();
    if xfer.allow_replace && !xfer.allow_upload {
        say!("ringserve: --allow-replace needs --allow-upload");
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Err(e) = cfg.validate() {
        say!("ringserve: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    // Noted after the startup line: tools read that line first.
    let mut notes = Vec::new();
    if let Ok(limit) = raise_nofile_limit() {
        let room = limit.saturating_sub(FD_RESERVE) as usize;
        if cfg.max_connections > room {
            notes.push(format!(
                "ringserve: --max-connections {} exceeds the open-file limit {limit}; using {room}",
                cfg.max_connections
            ));
            cfg.max_connections = room;
        }
    }
    // Sockets systemd passed (socket activation), taken while this is the only thread:
    // reading them unsets LISTEN_FDS and friends. A successor (--takeover) gets its
    // predecessor's instead, systemd's among them.
    let activated = if takeover.is_none() {
        match ringserve::systemd::listen_fds() {
            Ok(a) => a,
            Err(e) => {
                say!("ringserve: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    } else {
        Vec::new()
    };
    let notify = ringserve::systemd::Notify::from_env().map(Arc::new);
    // Signals are blocked before any thread starts, so every thread inherits the mask
    // and they stay pending for the signal thread's sigwait. No handler ever runs.
    let signals = SigSet::of(&[
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGQUIT,
        libc::SIGHUP,
        libc::SIGUSR1,
    ]);
    if let Err(e) = signals.block() {
        say!("ringserve: blocking signals: {e}");
        return ExitCode::FAILURE;
    }
    let root = std::fs::canonicalize(&cfg.root).unwrap_or_else(|_| cfg.root.clone());

    // Listeners given to us: a predecessor's (--takeover), each under its scheme.
    let mut taken = None;
    let mut given: Vec<(ProtocolArg, Listener)> = Vec::new();
    for a in activated {
        let name = a.name.clone().unwrap_or_else(|| "unnamed".into());
        let p = ringserve::systemd::scheme_of(&name)
            .and_then(ProtocolArg::of_scheme)
            .unwrap_or(default_protocol);
        match Listener::inherited(a.fd, format!("systemd:{name}")) {
            Ok(l) => given.push((p, l)),
            Err(e) => {
                say!("ringserve: socket activation: {name}: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    if let Some(addr) = &takeover {
        match handoff::take(addr, HANDOFF_TIMEOUT) {
            Ok(mut t) => {
                for (scheme, l) in t.take_listeners() {
                    match ProtocolArg::of_scheme(&scheme) {
                        Some(p) => given.push((p, l)),
                        None => notes.push(format!(
                            "ringserve: a listener on {} speaks {scheme}, which this build does not: closed",
                            l.addr()
                        )),
                    }
                }
                taken = Some(t);
            }
            Err(e) => {
                say!("ringserve: --takeover {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Until the predecessor hears READY it serves on; a failure here tells it why.
    let fail = |taken: Option<handoff::Taken>, msg: String, code: u8| {
        last_word(format_args!("ringserve: {msg}"));
        if let Some(t) = taken {
            t.failed(&msg);
        }
        ExitCode::from(code)
    };
    if !explicit_listen && given.is_empty() {
        match listen_value(DEFAULT_LISTEN) {
            Ok(l) => listens.extend(l.binds.into_iter().map(|b| (default_protocol, b))),
            Err(e) => return fail(taken, e, EXIT_CONFIG),
        }
    }

    // One server per protocol, each on its own addresses; they share the process, the
    // signals and the banner. The connection limit applies to each.
    let mut protocols: Vec<ProtocolArg> = Vec::new();
    for p in listens
        .iter()
        .map(|(p, _)| *p)
        .chain(given.iter().map(|(p, _)| *p))
    {
        if !protocols.iter().any(|q| q.scheme() == p.scheme()) {
            protocols.push(p);
        }
    }
    let mut bound = Vec::new();
    for p in protocols {
        let binds = listens
            .iter()
            .filter(|(q, _)| q.scheme() == p.scheme())
            .map(|(_, b)| b.clone())
            .collect();
        let mine;
        (mine, given) = given
            .into_iter()
            .partition(|(q, _)| q.scheme() == p.scheme());
        let mine = mine.into_iter().map(|(_, l)| l).collect();
        match Server::bind_with(cfg.clone(), binds, mine, !explicit_listen) {
            Ok(b) => bound.push((p, b)),
            Err(e) => return fail(taken, e.to_string(), exit_code(&e)),
        }
    }
    // A first server binds its control socket here, before any drop (it may live in
    // a root-only directory), and one in use is a configuration error. A successor
    // takes its predecessor's path over only once it serves: until then the
    // predecessor must stay reachable there.
    let mut control = None;
    if let (Some(path), None) = (&control_socket, &takeover) {
        match handoff::ControlSocket::bind(path) {
            Ok(c) => control = Some(c),
            Err(e) => return fail(taken, format!("--control-socket {path}: {e}"), EXIT_CONFIG),
        }
    }
    // The status endpoint binds here too (its port may be below 1024). A successor
    // binds it once its predecessor has closed its own, after READY.
    let mut status = None;
    if let (Some(addr), None) = (status_listen, &takeover) {
        match StatusServer::bind(addr, Duration::ZERO) {
            Ok(s) => status = Some(Arc::new(s)),
            Err(e) => return fail(taken, format!("--status-listen {addr}: {e}"), EXIT_CONFIG),
        }
    }
    // Every listener is bound and every root open, and no server thread runs yet
    // (glibc's setuid applies to every thread, but there is only this one): drop.
    if let Some(spec) = &user {
        // What root made for the server becomes the user's: the control socket (a
        // successor running as the user connects to it and replaces it), Unix
        // listeners (their mode then means the user's group), the log files (reopened
        // on SIGUSR1, and opened again by a re-executed successor).
        let mut made: Vec<PathBuf> = log_files.clone();
        made.extend(control.as_ref().and_then(|c| c.path()));
        made.extend(listens.iter().filter_map(|(_, b)| match &b.addr {
            ringserve::listener::ListenAddr::Unix(p) => p.clone(),
            _ => None,
        }));
        // One lookup of the user serves both.
        let dropped = privs::resolve(spec)
            .and_then(|ids| privs::give(ids, &made).and_then(|()| privs::drop_to_ids(ids)));
        if let Err(e) = dropped {
            return fail(taken, format!("--user {spec}: {e}"), EXIT_CONFIG);
        }
    }

    let xfer_uploads = xfer.allow_upload;
    let xfer_factory = XferFactory::new(xfer);
    let mut servers: Vec<(ProtocolArg, Server)> = Vec::new();
    for (p, b) in bound {
        let started = match p {
            ProtocolArg::Http => b.start(HttpFactory::new(http.clone()), Arc::new(NoHooks)),
            ProtocolArg::Echo => b.start(EchoFactory, Arc::new(NoHooks)),
            ProtocolArg::Xfer => b.start(xfer_factory.clone(), Arc::new(NoHooks)),
        };
        match started {
            Ok(s) => {
                // A successor shares the listeners with its predecessor, which serves
                // on if we fail: no shutdown of ours may shut them, until it drains.
                if taken.is_some() {
                    s.control().share_listeners(true);
                }
                servers.push((p, s));
            }
            Err(e) => {
                for (_, s) in servers {
                    s.shutdown();
                }
                return fail(taken, e.to_string(), exit_code(&e));
            }
        }
    }
    let handoffs = Arc::new(Handoffs {
        notify: notify.clone(),
        offers: servers
            .iter()
            .map(|(p, s)| (p.scheme(), s.listeners()))
            .collect(),
        controls: servers.iter().map(|(_, s)| s.control()).collect(),
        busy: Mutex::new(()),
        handed: Default::default(),
        control: Default::default(),
        status: Default::default(),
    });
    let targets: Vec<ringserve::status::Target> = servers
        .iter()
        .map(|(p, s)| ringserve::status::Target {
            scheme: p.scheme(),
            backend: s.backend(),
            stats: s.stats_handle(),
            control: s.control(),
        })
        .collect();
    // The signal thread starts before the banner, so the banner means "fully up".
    let hubs: Vec<_> = servers.iter().map(|(_, s)| s.stats_handle()).collect();
    let counters = xfer_factory.counters();
    let on_signal = handoffs.clone();
    let spawned = std::thread::Builder::new()
        .name("ringserve-signals".into())
        .spawn(move || loop {
            match signals.wait() {
                Ok(libc::SIGUSR1) => {
                    ringserve::log::reopen();
                    for hub in &hubs {
                        report_stats(hub, None);
                    }
                    report_xfer(&counters);
                }
                // On a thread of its own: a reload waits for a whole start, and this
                // thread must stay free for SIGTERM meanwhile.
                Ok(libc::SIGHUP) => {
                    let h = on_signal.clone();
                    let spawned = std::thread::Builder::new()
                        .name("ringserve-reload".into())
                        .spawn(move || reload(&h));
                    if let Err(e) = spawned {
                        log_error!("ringserve: reload: starting its thread: {e}");
                    }
                }
                Ok(_) => {
                    log_notice!("ringserve: shutting down");
                    // A server that handed off is not the service any more.
                    if let Some(n) = on_signal.notify.as_ref().filter(|_| !on_signal.handed()) {
                        let _ = n.stopping();
                    }
                    for c in &on_signal.controls {
                        c.shutdown();
                    }
                }
                Err(e) => {
                    log_error!("ringserve: sigwait: {e}");
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        for (_, s) in servers {
            s.shutdown();
        }
        return fail(taken, format!("starting the signal thread: {e}"), 1);
    }
    let addrs: Vec<String> = servers
        .iter()
        .flat_map(|(p, s)| {
            s.listen_addrs()
                .into_iter()
                .map(move |a| format!("{}://{a}", p.scheme()))
        })
        .collect();
    let first = &servers[0].1;
    // Written at every --log-level: tools (and the tests) wait for it.
    ringserve::log::error::emit(
        Level::Notice,
        format_args!(
            "ringserve: serving {} on {} with backend {} ({})",
            root.display(),
            addrs.join(" "),
            first.backend(),
            first.reason()
        ),
    );
    for (_, s) in &servers {
        for note in s.notes() {
            log_warn!("ringserve: {note}");
        }
    }
    for note in notes {
        log_warn!("{note}");
    }
    // After the banner, which tools (and tests) read as the first line.
    if let Some(s) = status {
        start_status(&handoffs, s, targets.clone());
    }
    if let Some(t) = taken {
        let (from, n) = (
            t.from_pid,
            servers
                .iter()
                .map(|(_, s)| s.listeners().len())
                .sum::<usize>(),
        );
        match t.ready(HANDOFF_TIMEOUT) {
            Ok(took) => {
                log_notice!(
                    "ringserve: took over from pid {from} in {:.1} ms; serving {n} listeners",
                    took.as_secs_f64() * 1e3
                );
                // It accepts no more: a shutdown of ours may shut them again (those
                // systemd also holds stay unshut: Bound::start pinned them).
                for (_, s) in &servers {
                    s.control().share_listeners(false);
                }
                // It closed its status endpoint before it said DRAINING. Not having
                // one is no reason to fail the hand-off: the predecessor is draining.
                if let Some(addr) = status_listen {
                    match StatusServer::bind(addr, STATUS_REBIND) {
                        Ok(s) => start_status(&handoffs, Arc::new(s), targets.clone()),
                        Err(e) => {
                            log_error!("ringserve: --status-listen {addr}: {e}; no status endpoint")
                        }
                    }
                }
            }
            // It did not hear, or did not stop: it may be serving on. Two servers on
            // one socket, one of them unreachable, help nobody: we go, without
            // shutting what it uses.
            Err(e) => {
                for (_, s) in servers {
                    s.shutdown();
                }
                last_word(format_args!(
                    "ringserve: hand-off from pid {from}: {e}; stopped, it serves on"
                ));
                return ExitCode::FAILURE;
            }
        }
    }
    // Under systemd, the service is up (a successor's MAINPID is its predecessor's
    // to announce, and is, before this).
    if let Some(n) = &notify {
        let _ = n.ready();
    }
    if let Some(path) = control_socket {
        // A successor replaces whatever is at the path: its predecessor's socket.
        let bound = match control {
            Some(c) => Ok(c),
            None => handoff::ControlSocket::bind_replacing(&path),
        };
        match bound {
            Ok(sock) => {
                let sock = Arc::new(sock);
                let _ = handoffs.control.set(sock.clone());
                let h = handoffs.clone();
                let spawned = std::thread::Builder::new()
                    .name("ringserve-control".into())
                    .spawn(move || control_loop(&sock, &h));
                if let Err(e) = spawned {
                    log_error!("ringserve: --control-socket {path}: starting its thread: {e}");
                }
            }
            Err(e) => log_error!("ringserve: --control-socket {path}: {e}; hand-offs are off"),
        }
    }
    if xfer_uploads && servers.iter().any(|(p, _)| matches!(p, ProtocolArg::Xfer)) {
        if let Ok(r) = ringserve::fs::Root::open(&root) {
            log_info!("ringserve: xfer uploads: {}", r.write_path());
        }
    }
    if stats_interval > 0 {
        let stats: Vec<_> = servers.iter().map(|(_, s)| s.stats_handle()).collect();
        let counters = xfer_factory.counters();
        let every = Duration::from_secs(stats_interval);
        // Detached: it only reads counters, and ends with the process.
        let spawned = std::thread::Builder::new()
            .name("ringserve-stats".into())
            .spawn(move || {
                let mut last: Vec<Seen> = stats.iter().map(|_| Default::default()).collect();
                loop {
                    std::thread::sleep(every);
                    for (hub, seen) in stats.iter().zip(&mut last) {
                        report_stats(hub, Some(seen));
                    }
                    report_xfer(&counters);
                }
            });
        if let Err(e) = spawned {
            log_error!("ringserve: starting the stats thread: {e}; --stats-interval ignored");
        }
    }
    for (_, s) in servers {
        s.wait();
    }
    // The last responses' lines and the last messages reach a reader that keeps
    // reading; a stalled one costs the exit at most this for each log (the writers are
    // detached, never joined).
    ringserve::log::flush(Duration::from_secs(1));
    ExitCode::SUCCESS
}

fn exit_code(e: &StartError) -> u8 {
    match e {
        StartError::Config(_) => EXIT_CONFIG,
        StartError::Io(_) => 1,
    }
}

/// How long each step of a hand-off may take: the successor's start included.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(30);

/// What a hand-off needs: every server's listeners under its scheme, and their
/// controls; `done` once one has succeeded (there is nothing left to hand over).
struct Handoffs {
    notify: Option<Arc<ringserve::systemd::Notify>>,
    offers: Vec<(&'static str, Arc<[Listener]>)>,
    controls: Vec<Arc<ringserve::Control>>,
    /// Held for a session: one at a time (a reload and a --control-socket request).
    busy: Mutex<()>,
    /// A hand-off succeeded: the successor is the service now (nothing more to hand
    /// over, and systemd hears nothing more from us: not even STOPPING).
    handed: std::sync::atomic::AtomicBool,
    /// Our --control-socket, whose path is removed before the successor is told to
    /// take it.
    control: std::sync::OnceLock<Arc<handoff::ControlSocket>>,
    /// Our --status-listen endpoint, closed before the successor is told to bind it.
    status: std::sync::OnceLock<Arc<StatusServer>>,
}

/// How long a successor retries binding the status address its predecessor has just
/// closed.
const STATUS_REBIND: Duration = Duration::from_secs(2);

/// Serves the status endpoint and gives it to `h`, which closes it at a hand-off.
fn start_status(h: &Handoffs, s: Arc<StatusServer>, targets: Vec<ringserve::status::Target>) {
    match s.serve(targets) {
        Ok(()) => {
            // Written at every --log-level, as the banner: tools wait for it.
            ringserve::log::error::emit(
                Level::Notice,
                format_args!(
                    "ringserve: status on http://{} (/metrics, /healthz)",
                    s.addr()
                ),
            );
            let _ = h.status.set(s);
        }
        Err(e) => log_error!("ringserve: starting the status thread: {e}; no status endpoint"),
    }
}

impl Handoffs {
    fn handed(&self) -> bool {
        self.handed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// One session with a would-be successor on `conn`: it gets the listeners, and
    /// once it says it serves, every server here drains as for SIGTERM but leaves the
    /// listeners open for it. Returns its pid. Before that, nothing here changes but
    /// that the listeners are marked shared the moment they are sent: from then on no
    /// shutdown of ours shuts them (the successor may be using them).
    /// `reload`: the successor is our own re-execution (SIGHUP). What is said of the
    /// outcome is said before the drain starts: once it has, the process may exit.
    fn serve_one(&self, conn: std::os::fd::OwnedFd, reload: bool) -> Result<i32, String> {
        // Dropping `conn` ends a refused session: the successor sees it closed.
        let Ok(_one) = self.busy.try_lock() else {
            return Err("another hand-off is in progress".into());
        };
        if self.handed()
            || self
                .controls
                .iter()
                .any(|c| c.level() != ShutdownLevel::Running)
        {
            return Err("already handed off or shutting down".into());
        }
        let offers: Vec<handoff::Offer<'_>> = self
            .offers
            .iter()
            .map(|(scheme, l)| handoff::Offer {
                scheme,
                listeners: l,
            })
            .collect();
        let session = handoff::offer(conn, &offers, HANDOFF_TIMEOUT, || {
            for c in &self.controls {
                c.share_listeners(true);
            }
        })?;
        self.handed.store(true, std::sync::atomic::Ordering::SeqCst);
        let pid = session.pid;
        if reload {
            log_notice!("ringserve: reloaded: pid {pid} serves now; draining");
        } else {
            log_notice!("ringserve: handing off to pid {pid}; draining");
        }
        // systemd follows the successor as the main process (it is ready: it serves).
        if let Some(n) = &self.notify {
            let _ = n.send(&format!("MAINPID={pid}\nREADY=1"));
        }
        // Our path goes before the successor, told, binds its own there. DRAINING is
        // sent before the drain begins: a drain with nothing to wait for ends the
        // process at once, which would close this session before the word is out.
        if let Some(c) = self.control.get() {
            c.unlink();
        }
        // The successor binds the status address once it hears DRAINING.
        if let Some(s) = self.status.get() {
            s.close();
        }
        session.release();
        for c in &self.controls {
            c.hand_off();
        }
        Ok(pid)
    }
}

/// The --control-socket thread: hand-off requests, one at a time, until one succeeds
/// (here or by a reload).
fn control_loop(sock: &handoff::ControlSocket, h: &Handoffs) {
    while !h.handed() {
        match sock.accept(Duration::from_millis(500)) {
            Ok(None) => continue,
            Ok(Some(conn)) => match h.serve_one(conn, false) {
                Ok(_) => return,
                Err(e) => log_warn!("ringserve: hand-off failed: {e}; still serving"),
            },
            Err(e) => {
                log_error!("ringserve: --control-socket: {e}; hand-offs are off");
                return;
            }
        }
    }
}

/// SIGHUP: start this same program again, with the same arguments, as a successor
/// that takes the listeners over (through an abstract control socket only it is
/// told of); a new binary at the same path is picked up. If it fails, we serve on.
fn reload(h: &Handoffs) {
    if h.handed() {
        return;
    }
    let name = format!("@ringserve-reload-{}-{:x}", std::process::id(), rand_tag());
    let sock = match handoff::ControlSocket::bind(&name) {
        Ok(s) => s,
        Err(e) => return log_error!("ringserve: reload: {e}; still serving"),
    };
    let exe = match std::env::current_exe() {
        // A binary replaced on disk shows as "PATH (deleted)": the new one is at PATH.
        Ok(p) => {
            let s = p.to_string_lossy();
            PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s).to_string())
        }
        Err(e) => return log_error!("ringserve: reload: finding our binary: {e}; still serving"),
    };
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut skip = false;
    for a in std::env::args_os().skip(1) {
        if std::mem::take(&mut skip) {
            continue;
        }
        let text = a.to_string_lossy();
        if text == "--takeover" {
            skip = true;
            continue;
        }
        if text.starts_with("--takeover=") {
            continue;
        }
        args.push(a);
    }
    log_notice!("ringserve: reloading: starting {}", exe.display());
    if let Some(n) = &h.notify {
        let _ = n.reloading();
    }
    let mut child = match std::process::Command::new(&exe)
        .args(&args)
        .env("RINGSERVE_TAKEOVER", &name)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            if let Some(n) = &h.notify {
                let _ = n.ready();
            }
            return log_error!(
                "ringserve: reload: starting {}: {e}; still serving",
                exe.display()
            );
        }
    };
    let until = std::time::Instant::now() + HANDOFF_TIMEOUT;
    let outcome = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!(
                "the new server exited ({status}) before taking over"
            ));
        }
        if std::time::Instant::now() >= until {
            break Err("the new server did not ask for the listeners in time".to_string());
        }
        match sock.accept(Duration::from_millis(100)) {
            Ok(None) => continue,
            Ok(Some(conn)) => break h.serve_one(conn, true),
            Err(e) => break Err(e.to_string()),
        }
    };
    match outcome {
        Ok(_) => {}
        Err(e) => {
            log_error!("ringserve: reload failed: {e}; still serving");
            if let Some(n) = &h.notify {
                let _ = n.send(&format!("READY=1\nSTATUS=reload failed: {e}"));
            }
            // It exits by itself once it has said why; reap it, or end it: two
            // servers on one socket, one of which nobody can reach, help no one.
            for _ in 0..50 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A few random bits for a name nobody can guess ahead.
fn rand_tag() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The file-transfer protocol's counters, when it has counted anything.
fn report_xfer(c: &ringserve::proto::xfer::Counters) {
    let line = c.line();
    if !line.is_empty() {
        log_info!("ringserve: stats xfer: {line}");
    }
}

/// What the previous interval report saw: each thread's counters and the total.
type Seen = (std::collections::HashMap<String, Snapshot>, Snapshot);

/// One line per server thread (`ring-0`, `worker-3`, ...) with its non-zero counters,
/// then the total with the gauges. With `last`, counters are what grew since the
/// previous report (and `last` is updated); without, running totals (SIGUSR1).
fn report_stats(hub: &StatsHub, last: Option<&mut Seen>) {
    let threads = hub.per_thread();
    let total = hub.snapshot();
    match last {
        Some((prev, prev_total)) => {
            for (name, s) in &threads {
                let d = s.since(prev.get(name).unwrap_or(&Snapshot::default()));
                log_info!("ringserve: stats {name}: {}", d.counters());
            }
            log_info!("ringserve: stats interval: {}", total.since(prev_total));
            *prev = threads.into_iter().collect();
            *prev_total = total;
        }
        None => {
            for (name, s) in &threads {
                log_info!("ringserve: stats {name}: {}", s.counters());
            }
            log_info!("ringserve: stats {total}");
        }
    }
}
