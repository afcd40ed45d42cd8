//! What the counters cost per request, in CPU time and without a kernel's TCP path or
//! a load generator in the way: one keep-alive HTTP connection driven in memory
//! (`ringserve::backend::memory`, the driver and protocol every backend runs), fetching
//! a 1 KiB file over and over, timed by the thread's CPU clock. bench/run.sh builds it
//! twice, with counters and with `--features no-counters`, and runs the two in turn;
//! the difference of their medians is what the counters add to each request in the
//! driver and the protocol (the service-time histogram with its clock read, and every
//! per-request increment). A backend's own per-turn increments are not in it.
//!
//! `counters [REQUESTS] [MODE]` (default 200 000, after a 20 000-request warm-up). Prints
//! one line: `counters on: 1234 ns per 1 KiB keep-alive response (200000 requests)`.
//!
//! MODE is what bench/site.sh counts instructions of, the same harness serving a 1 KiB
//! script four ways (its wrk runs' modes), each to the same request, a browser's for a
//! script of another origin (`Accept-Encoding: br, zstd, gzip`, an `Origin`): `plain`
//! (no feature on), `sidecar` (`--precompressed br`: the 1 KiB `.br` is sent),
//! `nosidecar` (`--precompressed br,zstd,gzip`, for a script that has none) and `rules`
//! (three `--header`, two `--cache-control`, a `--cors` origin). Without one:
//! `counters`, the 1 KiB file bench/counters.sh measures.

use ringserve::backend::memory::Memory;
use ringserve::fs::Root;
use ringserve::proto::http1::rules::{CacheRule, Cors, HeaderRule, Rules};
use ringserve::proto::http1::{Coding, HttpConfig, HttpFactory};
use ringserve::proto::ProtocolFactory;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call writes; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sends `n` requests one at a time and checks each answer is one 1 KiB response: a
/// head that ends 1 KiB before the end. Checked at the end, not scanned for, so a mode
/// whose head is longer does not pay the harness more per request.
fn fetch(conn: &mut Memory<<HttpFactory as ProtocolFactory>::Proto>, n: usize, req: &[u8]) {
    for _ in 0..n {
        conn.push(req);
        let out = conn.run();
        let head_end = out.len().checked_sub(1024).expect("a 1 KiB body");
        assert!(
            out.starts_with(b"HTTP/1.1 200 OK\r\n") && out[..head_end].ends_with(b"\r\n\r\n"),
            "one 1 KiB response per request"
        );
    }
}

fn main() {
    let usage = "usage: counters [REQUESTS] [counters|plain|sidecar|nosidecar|rules]";
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().expect(usage),
        None => 200_000,
    };
    let mode = std::env::args().nth(2).unwrap_or_else(|| "counters".into());
    let dir = std::env::temp_dir().join(format!("ringserve-counters-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("1k.bin"), vec![b'x'; 1024]).unwrap();
    for f in ["assets/app.js", "assets/app.js.br", "assets/lib.js"] {
        std::fs::write(dir.join(f), vec![b'x'; 1024]).unwrap();
    }
    // Every mode sends what a browser sends for a script of another origin: the same
    // request, so the modes differ only in what the server does with it.
    let script = |name: &str| {
        format!(
            "GET /assets/{name} HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: br, zstd, gzip\r\nOrigin: https://app.example\r\n\r\n"
        )
    };
    // What a response of the mode must carry (checked once, after the warm-up).
    let (cfg, req, carries) = match mode.as_str() {
        "counters" => (
            HttpConfig::default(),
            "GET /1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n".to_string(),
            "200 OK",
        ),
        "plain" => (HttpConfig::default(), script("app.js"), "200 OK"),
        "sidecar" => (
            HttpConfig {
                precompressed: vec![Coding::Br],
                ..HttpConfig::default()
            },
            script("app.js"),
            "Content-Encoding: br",
        ),
        "nosidecar" => (
            HttpConfig {
                precompressed: vec![Coding::Br, Coding::Zstd, Coding::Gzip],
                ..HttpConfig::default()
            },
            script("lib.js"),
            "Vary: Accept-Encoding",
        ),
        "rules" => {
            let header = |s| HeaderRule::parse(s).unwrap();
            let mut cors = Cors::default();
            cors.add("https://app.example").unwrap();
            let rules = Rules::new(
                vec![
                    header("X-Content-Type-Options: nosniff"),
                    header("Referrer-Policy: same-origin"),
                    header("assets/**:X-Robots-Tag: noindex"),
                ],
                vec![
                    CacheRule::parse("assets/**=public, max-age=31536000, immutable").unwrap(),
                    CacheRule::parse("**/*.html=no-cache").unwrap(),
                ],
                Some(cors),
            );
            (
                HttpConfig {
                    rules,
                    ..HttpConfig::default()
                },
                script("app.js"),
                "X-Robots-Tag: noindex",
            )
        }
        _ => panic!("{usage}"),
    };
    let factory = HttpFactory::new(cfg);
    let proto = factory.new_conn("127.0.0.1:9".parse().unwrap());
    let mut conn = Memory::new(proto, Root::open(&dir).unwrap());
    let req = req.as_bytes();
    fetch(&mut conn, 20_000, req);
    conn.push(req);
    let one = String::from_utf8_lossy(&conn.run()).into_owned();
    assert!(
        one.contains(carries),
        "a {mode} response carries {carries}: {one}"
    );
    assert!(
        mode == "sidecar" || !one.contains("Content-Encoding"),
        "{one}"
    );
    let t0 = thread_cpu_ns();
    fetch(&mut conn, n, req);
    let ns = (thread_cpu_ns() - t0) / n as u64;
    let _ = std::fs::remove_dir_all(&dir);
    let which = if cfg!(feature = "no-counters") {
        "off"
    } else {
        "on"
    };
    println!("counters {which}: {ns} ns per 1 KiB keep-alive response ({n} requests)");
}
