//! `--status-listen`: `/metrics` in the Prometheus text format and `/healthz`, on both
//! backends. The page is checked by Prometheus's own parser (Debian's
//! python3-prometheus-client, which .ci/run installs) where it can be had.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The status address the server announced.
fn status_addr(srv: &Srv) -> SocketAddr {
    let mut found = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            found = srv.log().iter().find_map(|l| {
                let rest = l.split("status on http://").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            });
            found.is_some()
        }),
        "no status line: {:?}",
        srv.log()
    );
    found.unwrap()
}

/// The value of every sample of `metric` with all of `labels`, summed.
fn sum(page: &str, metric: &str, labels: &[&str]) -> u64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(metric))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Debian's Python, where apt puts python3-prometheus-client (a pyenv `python3` on the
/// PATH would not see it).
fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Parses `page` with prometheus_client; the families it found, or None (with a SKIP)
/// where the parser cannot be had.
fn prometheus_parse(page: &str) -> Option<Vec<String>> {
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families as parse\n\
        for f in parse(sys.stdin.read()):\n    print(f.name, f.type, len(f.samples))\n";
    let probe = Command::new(python())
        .args(["-c", "import prometheus_client"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skip(
            &format!("{}: the Prometheus parser check", test_name()),
            "python3-prometheus-client is not installed (apt-get install python3-prometheus-client)",
        );
        return None;
    }
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the page: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

backend_test! {
    /// Counters per thread, the gauges and the info series, in a page Prometheus's
    /// parser reads; /healthz; and the endpoint's answers to what it does not serve.
    fn metrics_and_health(b) {
        let dir = temp_dir("status");
        std::fs::write(dir.join("a"), "a").unwrap();
        let srv = Srv::start(b, &dir, &["--status-listen", "127.0.0.1:0"]);
        let st = status_addr(&srv);
        for _ in 0..3 {
            assert_eq!(get(srv.addr, "/a").body, b"a");
        }
        // A connection left open shows in the gauge.
        let mut idle = srv.connect();
        idle.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        assert!(read_some(&mut idle, &mut buf).unwrap() > 0);
        let r = get(st, "/metrics");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        let page = String::from_utf8(r.body).unwrap();
        assert!(sum(&page, "ringserve_responses_total", &["server=\"http\""]) >= 4, "{page}");
        assert!(sum(&page, "ringserve_accepts_total", &[]) >= 4, "{page}");
        assert_eq!(sum(&page, "ringserve_open_conns", &["server=\"http\""]), 1, "{page}");
        assert_eq!(
            sum(&page, "ringserve_info", &[&format!("backend=\"{b}\""), "server=\"http\""]),
            1,
            "{page}"
        );
        assert!(page.contains("# TYPE ringserve_responses_total counter\n"));
        assert!(page.contains("# TYPE ringserve_open_conns gauge\n"));
        assert!(page.contains("# HELP ringserve_accepts_total Connections accepted.\n"));
        // Per thread, with the exited threads' row: the backend's own thread names.
        let threads: Vec<&str> = page
            .lines()
            .filter(|l| l.starts_with("ringserve_accepts_total{"))
            .filter_map(|l| l.split("thread=\"").nth(1)?.split('"').next())
            .collect();
        assert!(threads.contains(&"exited") && threads.len() >= 2, "{threads:?}");
        // Every response so far was timed, once.
        let served = sum(&page, "ringserve_responses_total", &["server=\"http\""]);
        assert_eq!(sum(&page, "ringserve_service_seconds_count", &["server=\"http\""]), served, "{page}");
        assert_eq!(
            sum(&page, "ringserve_service_seconds_bucket", &["server=\"http\"", "le=\"+Inf\""]),
            served,
            "{page}"
        );
        if let Some(families) = prometheus_parse(&page) {
            assert!(families.iter().any(|f| f.starts_with("ringserve_service_seconds histogram")), "{families:?}");
            assert!(families.iter().any(|f| f.starts_with("ringserve_responses counter")), "{families:?}");
            assert!(families.iter().any(|f| f.starts_with("ringserve_open_conns gauge")), "{families:?}");
        }
        drop(idle);

        let h = get(st, "/healthz");
        assert_eq!((h.status, &h.body[..]), (200, &b"ok\n"[..]));
        let head = request(st, "HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert_eq!(get(st, "/metrics?name=x").status, 200, "a query string is ignored");
        assert_eq!(get(st, "/").status, 404);
        let post = request(st, "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((post.status, post.header("allow")), (405, Some("GET, HEAD")));
        assert_eq!(request(st, "GARBAGE\r\n\r\n").status, 400);
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "x".repeat(20_000));
        let mut s = TcpStream::connect(st).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(huge.as_bytes());
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        assert!(got.starts_with("HTTP/1.1 431 "), "{got:?}");
        // The file server is untouched by all of it.
        assert_eq!(get(srv.addr, "/a").body, b"a");
        remove_temp_tree(&dir);
    }
}

backend_test! {
    /// Scrapers that connect and say nothing hold no one else up: each has a short
    /// deadline and a thread of its own.
    fn stalled_scrapers_do_not_hold_up_the_endpoint(b) {
        let dir = temp_dir("status-stall");
        let srv = Srv::start(b, &dir, &["--status-listen", "127.0.0.1:0"]);
        let st = status_addr(&srv);
        let stalled: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(st).unwrap()).collect();
        // Give the accept thread time to take them all first (it need not; this only
        // makes the order below the likely one).
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(get(st, "/healthz").status, 200);
        // Answered while every stalled one is still open: nobody waited for their
        // deadlines (a server taking them in turn would have closed them first).
        for s in &stalled {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            let still_open = matches!((&*s).read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            assert!(still_open, "[{b}] a stalled scrape was closed before /healthz was answered");
            s.set_nonblocking(false).unwrap();
        }
        // The stalled ones are closed at their deadline, unanswered.
        for mut s in stalled {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(read_some(&mut s, &mut buf).unwrap(), 0);
        }
        remove_temp_tree(&dir);
    }
}

backend_test! {
    /// While the server drains (SIGTERM, a download still in flight), /healthz says
    /// 503 so a load balancer stops sending, and /metrics still answers.
    fn healthz_is_503_while_draining(b) {
        let dir = temp_dir("status-drain");
        // Sparse: 256 MiB the unread socket cannot hold, costing no disk.
        std::fs::File::create(dir.join("big")).unwrap().set_len(256 << 20).unwrap();
        let mut srv = Srv::start(b, &dir, &["--status-listen", "127.0.0.1:0", "--shutdown-timeout", "20s"]);
        let st = status_addr(&srv);
        // A download the client does not read: the drain waits for it.
        let mut slow = srv.connect();
        slow.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        assert!(read_some(&mut slow, &mut buf).unwrap() > 0);
        srv.signal(libc::SIGTERM);
        assert!(
            eventually(Duration::from_secs(10), || try_get(st, "/healthz").is_ok_and(|r| r.status == 503)),
            "[{b}] /healthz did not turn 503"
        );
        assert_eq!(get(st, "/healthz").body, b"draining\n");
        assert_eq!(get(st, "/metrics").status, 200);
        drop(slow);
        assert_eq!(srv.wait_exit(Duration::from_secs(20)), Some(0));
        remove_temp_tree(&dir);
    }
}

/// A status address in use is a configuration error (exit 2) with one line naming it,
/// like a --listen address in use.
#[test]
fn a_status_address_in_use_is_exit_2() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let dir = temp_dir("status-busy");
    let (code, err) = serve_to_exit(&[
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--status-listen",
        &addr,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("--status-listen {addr}")), "{err}");
    let (code, err) = serve_to_exit(&[dir.to_str().unwrap(), "--status-listen", "unix:/tmp/x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a TCP address"), "{err}");
    remove_temp_tree(&dir);
}
