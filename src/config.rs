//! The server's knobs, each with its default and the reason for it. The CLI
//! (`src/main.rs`) maps flags onto this one-to-one; the library takes it as is. Each
//! protocol owns its own configuration (`proto::http1::HttpConfig`), given to its
//! factory: nothing here knows a protocol.

use crate::probe::BackendRequest;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// TCP keepalive probes on accepted sockets (SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT).
/// The seed's values: a peer that vanished without a FIN is found in about 30 minutes
/// instead of the kernel's two hours, without any application-level heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpKeepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

impl Default for TcpKeepalive {
    fn default() -> Self {
        TcpKeepalive {
            idle: Duration::from_secs(1800),
            interval: Duration::from_secs(5),
            count: 3,
        }
    }
}

/// The server's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory served. Opened once; every lookup is relative to that descriptor.
    pub root: PathBuf,
    /// Addresses to listen on. Port 0 picks a free port.
    pub listen: Vec<SocketAddr>,
    /// auto, uring or epoll.
    pub backend: BackendRequest,
    /// epoll pool: threads kept even when idle. Default: the CPU count, at least 2.
    pub workers_min: usize,
    /// epoll pool: the ceiling the pool grows to when every worker is busy. A worker is
    /// held for the whole of a blocking send, so this bounds how many stalled readers
    /// can be waited on at once before new work queues.
    pub workers_max: usize,
    /// epoll pool: a worker above the minimum that saw no event for this long exits.
    /// The seed's MIN_WORKER_WAIT_TIMEOUT.
    pub worker_idle_timeout: Duration,
    /// A send that makes no progress for this long ends the connection. The seed's
    /// BLOCKING_SEND_TIMEOUT.
    pub send_timeout: Duration,
    /// Time allowed to receive a whole request header section, measured from its start,
    /// so a slowloris client cannot hold a connection.
    pub header_timeout: Duration,
    /// An idle kept-alive connection is closed after this long (nginx's keepalive_timeout).
    pub keepalive_timeout: Duration,
    /// A request body the protocol streams (an upload) ends when no byte arrives for
    /// this long; every byte restarts it (nginx's client_body_timeout).
    pub body_timeout: Duration,
    /// On SIGTERM/SIGINT/SIGQUIT (or a hand-off), in-flight responses get this long to
    /// finish. 8 s: below Docker's 10 s stop grace period and systemd's 90 s, so the
    /// drain ends before the supervisor's SIGKILL, with room for the exit.
    pub shutdown_timeout: Duration,
    /// Connections beyond this are accepted and closed at once (with a 503 for HTTP).
    pub max_connections: usize,
    /// io_uring: ring threads, each with its own ring and connections. Default: the
    /// CPU count.
    pub uring_threads: usize,
    /// io_uring: every ring accepts on one shared listener instead of each ring having
    /// its own SO_REUSEPORT listener.
    pub uring_shared_listener: bool,
    /// io_uring: receive buffers per ring in the provided-buffer ring (a power of two).
    /// Idle connections hold none; when all are in use, reads wait (ENOBUFS) and resume
    /// as buffers come back.
    pub uring_buffers: u16,
    /// io_uring: one multishot RECV per connection instead of a RECV per request, where
    /// the kernel has it. Off by default: slower for request/response HTTP (measured).
    pub uring_multishot_recv: bool,
    /// SO_SNDBUF for accepted sockets in bytes; 0 keeps the kernel's autotuning.
    pub sndbuf: usize,
    /// Open-file cache entries per ring (io_uring) or for the pool (epoll); 0 is off.
    pub open_file_cache: usize,
    /// Entries a directory listing holds at most ([`crate::fs::Root::read_dir`]).
    pub max_dir_entries: usize,
    /// How long a cached open is trusted before the path is opened again.
    pub open_file_cache_valid: Duration,
    /// listen(2) backlog.
    pub backlog: u32,
    pub tcp_keepalive: TcpKeepalive,
    /// Permission bits of a Unix-socket listener's file (`unix:/path`).
    pub unix_socket_mode: u32,
}

/// Most io_uring ring threads: a connection key names its ring in one byte.
pub const MAX_URING_THREADS: usize = 256;
/// Most provided buffers per ring: the kernel's limit on a buffer ring's entries.
pub const MAX_URING_BUFFERS: u16 = 1 << 15;

impl Config {
    /// The defaults for serving `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Config {
            root: root.into(),
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            backend: BackendRequest::Auto,
            workers_min: cpus.max(2),
            workers_max: 256,
            worker_idle_timeout: Duration::from_secs(20),
            send_timeout: Duration::from_secs(20),
            header_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(8),
            max_connections: 16384,
            uring_threads: cpus.min(MAX_URING_THREADS),
            uring_shared_listener: false,
            uring_buffers: 256,
            uring_multishot_recv: false,
            sndbuf: 0,
            open_file_cache: 1024,
            max_dir_entries: crate::fs::MAX_DIR_ENTRIES,
            open_file_cache_valid: Duration::from_secs(1),
            backlog: 4096,
            tcp_keepalive: TcpKeepalive::default(),
            unix_socket_mode: 0o660,
        }
    }

    /// Whether these values can run, and if not, one line saying which is wrong.
    /// `Server::start` asks (a bad value is a configuration error, exit 2 in the CLI),
    /// so no backend thread ever meets one.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers_min == 0 || self.workers_max < self.workers_min {
            return Err(format!(
                "--workers-min must be at least 1 and at most --workers-max (got {} and {})",
                self.workers_min, self.workers_max
            ));
        }
        if !(1..=MAX_URING_THREADS).contains(&self.uring_threads) {
            return Err(format!(
                "--uring-threads must be 1 to {MAX_URING_THREADS} (got {}): a connection key names its ring in one byte",
                self.uring_threads
            ));
        }
        if !(1..=MAX_URING_BUFFERS).contains(&self.uring_buffers) {
            return Err(format!(
                "--uring-buffers must be 1 to {MAX_URING_BUFFERS} (got {}): the kernel's limit on a buffer ring",
                self.uring_buffers
            ));
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.max_dir_entries == 0 {
            return Err("--max-dir-entries must be at least 1".into());
        }
        Ok(())
    }
}

/// Parses a duration written as `20`, `20s`, `500ms` or `2m`. A bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 20, 20s, 500ms, 2m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("duration {s:?} too large")),
        _ => Err(format!(
            "invalid duration unit in {s:?}: use s, ms or m (a bare number is seconds)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "s", "1h", "-1", "1.5", "99999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_names_the_bad_value() {
        assert_eq!(Config::new(".").validate(), Ok(()));
        let bad = |f: fn(&mut Config), needle: &str| {
            let mut c = Config::new(".");
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(needle), "{e}");
        };
        bad(
            |c| c.uring_threads = 257,
            "--uring-threads must be 1 to 256",
        );
        bad(|c| c.uring_threads = 0, "--uring-threads");
        bad(
            |c| c.uring_buffers = 40000,
            "--uring-buffers must be 1 to 32768",
        );
        bad(|c| c.uring_buffers = 0, "--uring-buffers");
        bad(|c| c.workers_min = 0, "--workers-min");
        bad(|c| c.max_dir_entries = 0, "--max-dir-entries");
        let mut c = Config::new(".");
        (c.uring_threads, c.uring_buffers) = (256, 32768);
        assert_eq!(c.validate(), Ok(()));
    }
}
