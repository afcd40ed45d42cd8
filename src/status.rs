//! `--status-listen`: `GET /metrics` in the Prometheus text format (0.0.4) and
//! `GET /healthz`, on a listener of its own.
//!
//! It is served by one accept thread and a short-lived thread per scrape (at most
//! [`MAX_SCRAPES`] at once), apart from the backends: a scraper that stalls, or a
//! flood of them, costs the file server nothing but the counters' reads, and the
//! endpoint stays up while the server drains, which is when `/healthz` says 503 so a
//! load balancer stops sending. Every request gets one response and the connection
//! closes (`Connection: close`), as nginx's `stub_status` and Caddy's admin endpoint
//! are used by scrapers.
//!
//! `/metrics` carries every counter of `--stats-interval` per thread (label
//! `thread`; `thread="exited"` holds what threads that are gone counted, so a sum over
//! threads never goes backwards), the service-time histogram per thread
//! (`ringserve_service_seconds`, log2 buckets from 1 µs), the gauges, and
//! `ringserve_info` with the version
//! and backend. Every series has a `server` label: the protocol it serves (`http`,
//! `xfer`, `echo`).

use crate::backend::{Control, ShutdownLevel};
use crate::probe::BackendKind;
use crate::stats::{HistogramSnapshot, StatsHub, COUNTERS, GAUGES};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Scrapes served at once; one more is closed unanswered.
pub const MAX_SCRAPES: usize = 32;
/// How long a scrape may take to send its request and read the response.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most a request head may be.
const MAX_HEAD: usize = 8 * 1024;

/// One server the endpoint reports on.
#[derive(Clone)]
pub struct Target {
    /// The protocol it serves: the `server` label.
    pub scheme: &'static str,
    pub backend: BackendKind,
    pub stats: Arc<StatsHub>,
    pub control: Arc<Control>,
}

/// The metrics page for `targets`.
pub fn metrics(targets: &[Target]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let rows: Vec<_> = targets.iter().map(|t| t.stats.rows()).collect();
    let totals: Vec<_> = targets.iter().map(|t| t.stats.snapshot()).collect();
    let _ = writeln!(
        out,
        "# HELP ringserve_info The server's version and backend, per server.\n\
         # TYPE ringserve_info gauge"
    );
    for t in targets {
        let _ = writeln!(
            out,
            "ringserve_info{{server=\"{}\",backend=\"{}\",version=\"{}\"}} 1",
            t.scheme,
            t.backend,
            env!("CARGO_PKG_VERSION")
        );
    }
    for (i, (name, help)) in COUNTERS.iter().enumerate() {
        let _ = writeln!(
            out,
            "# HELP ringserve_{name}_total {}\n# TYPE ringserve_{name}_total counter",
            help_text(help)
        );
        for (t, (threads, gone)) in targets.iter().zip(&rows) {
            for (thread, s) in threads {
                let _ = writeln!(
                    out,
                    "ringserve_{name}_total{{server=\"{}\",thread=\"{}\"}} {}",
                    t.scheme,
                    label(thread),
                    s.counter_values()[i]
                );
            }
            let _ = writeln!(
                out,
                "ringserve_{name}_total{{server=\"{}\",thread=\"exited\"}} {}",
                t.scheme,
                gone.counter_values()[i]
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringserve_service_seconds Time from the loop turn in which a request's last bytes arrived to its response handed to the kernel.\n\
         # TYPE ringserve_service_seconds histogram"
    );
    for (t, (threads, gone)) in targets.iter().zip(&rows) {
        let gone = [("exited".to_string(), *gone)];
        for (thread, s) in threads.iter().chain(&gone) {
            let labels = format!("server=\"{}\",thread=\"{}\"", t.scheme, label(thread));
            histogram(&mut out, "ringserve_service_seconds", &labels, &s.service);
        }
    }
    for (i, (name, help)) in GAUGES.iter().enumerate() {
        let _ = writeln!(
            out,
            "# HELP ringserve_{name} {}\n# TYPE ringserve_{name} gauge",
            help_text(help)
        );
        for (t, total) in targets.iter().zip(&totals) {
            let _ = writeln!(
                out,
                "ringserve_{name}{{server=\"{}\"}} {}",
                t.scheme,
                total.gauge_values()[i]
            );
        }
    }
    out
}

/// One histogram's series: cumulative buckets, `+Inf`, the sum and the count.
fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let mut cumulative = 0u64;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative = cumulative.wrapping_add(*n);
        let le = match HistogramSnapshot::bound_secs(i) {
            Some(b) => b.to_string(),
            None => "+Inf".into(),
        };
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// A doc comment as one HELP line: its lines joined, backslashes and line breaks
/// escaped as the format asks.
fn help_text(doc: &str) -> String {
    let joined = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.replace('\\', "\\\\")
}

/// A label value, escaped as the format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// True while every server is running (none has begun to drain or stop).
pub fn healthy(targets: &[Target]) -> bool {
    targets
        .iter()
        .all(|t| t.control.level() == ShutdownLevel::Running)
}

/// The status endpoint's listener and the thread serving it.
pub struct StatusServer {
    addr: SocketAddr,
    listener: Mutex<Option<Arc<TcpListener>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    closed: Arc<AtomicBool>,
}

impl StatusServer {
    /// Listens on `addr`. While the address is in use (a predecessor in a hand-off
    /// closes its own endpoint just before it tells the successor to take over), the
    /// bind is retried for up to `patience`.
    pub fn bind(addr: SocketAddr, patience: Duration) -> io::Result<StatusServer> {
        let until = Instant::now() + patience;
        let listener = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        Ok(StatusServer {
            addr: listener.local_addr()?,
            listener: Mutex::new(Some(Arc::new(listener))),
            thread: Mutex::new(None),
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The address it listens on (the port a `:0` bind got).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the accept thread, which serves until [`StatusServer::close`].
    pub fn serve(&self, targets: Vec<Target>) -> io::Result<()> {
        let Some(listener) = lock(&self.listener).clone() else {
            return Err(io::Error::other("closed"));
        };
        let closed = self.closed.clone();
        let targets: Arc<[Target]> = targets.into();
        let t = std::thread::Builder::new()
            .name("ringserve-status".into())
            .spawn(move || accept_loop(&listener, &closed, &targets))?;
        *lock(&self.thread) = Some(t);
        Ok(())
    }

    /// Stops accepting and closes the listener before it returns, so that a successor
    /// can bind the address: shutting the listener for reading wakes the accept
    /// thread, which is then joined. Scrapes in progress finish on their own threads.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let Some(listener) = lock(&self.listener).take() else {
            return;
        };
        let _ = crate::sys::net::shutdown(listener.as_fd(), libc::SHUT_RD);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        drop(listener);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(listener: &TcpListener, closed: &AtomicBool, targets: &Arc<[Target]>) {
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        let conn = listener.accept();
        if closed.load(Ordering::SeqCst) {
            return;
        }
        let (stream, _) = match conn {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: rest rather than spin; the endpoint is not
                // worth a log line per failed accept.
                if e.kind() != io::ErrorKind::Interrupted {
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_SCRAPES {
            busy.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: closed unanswered
        }
        let (busy2, targets) = (busy.clone(), targets.clone());
        let spawned = std::thread::Builder::new()
            .name("ringserve-scrape".into())
            .spawn(move || {
                let _ = scrape(stream, &targets);
                busy2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One request on `stream`, one response.
fn scrape(mut stream: TcpStream, targets: &[Target]) -> io::Result<()> {
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    let (method, path) = loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        head.extend_from_slice(&buf[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("").to_owned(),
                    req.path.unwrap_or("").to_owned(),
                );
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD && Instant::now() < deadline => {
            }
            Ok(httparse::Status::Partial) if head.len() >= MAX_HEAD => {
                return respond(
                    &mut stream,
                    "431 Request Header Fields Too Large",
                    "",
                    "request head too large\n",
                    false,
                );
            }
            Ok(httparse::Status::Partial) => return Ok(()),
            Err(_) => return respond(&mut stream, "400 Bad Request", "", "bad request\n", false),
        }
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "only GET and HEAD\n",
            false,
        );
    }
    // The query string is ignored, as scrapers add their own.
    match path.split('?').next().unwrap_or("") {
        "/metrics" => {
            let page = metrics(targets);
            respond(
                &mut stream,
                "200 OK",
                "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
                &page,
                head_only,
            )
        }
        "/healthz" if healthy(targets) => respond(&mut stream, "200 OK", "", "ok\n", head_only),
        "/healthz" => respond(
            &mut stream,
            "503 Service Unavailable",
            "",
            "draining\n",
            head_only,
        ),
        _ => respond(
            &mut stream,
            "404 Not Found",
            "",
            "not found: try /metrics or /healthz\n",
            head_only,
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    extra: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nServer: ringserve\r\nCache-Control: no-store\r\nConnection: close\r\n{extra}"
    );
    if !extra.contains("Content-Type") {
        out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    if !head_only {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes())?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lines_are_one_line_and_labels_are_escaped() {
        assert_eq!(
            help_text(" Connections\n accepted. "),
            "Connections accepted."
        );
        assert_eq!(help_text(r" a \ b"), r"a \\ b");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_counter_and_gauge_has_a_description() {
        for (name, help) in COUNTERS.iter().chain(GAUGES) {
            assert!(!help.trim().is_empty(), "{name} has no doc comment");
        }
    }
}
