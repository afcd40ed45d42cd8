//! What the counters cost per request, in CPU time and without a kernel's TCP path or
//! a load generator in the way: one keep-alive HTTP connection driven in memory
//! (`ringserve::backend::memory`, the driver and protocol every backend runs), fetching
//! a 1 KiB file over and over, timed by the thread's CPU clock. bench/run.sh builds it
//! twice, with counters and with `--features no-counters`, and runs the two in turn;
//! the difference of their medians is what the counters add to each request in the
//! driver and the protocol (the service-time histogram with its clock read, and every
//! per-request increment). A backend's own per-turn increments are not in it.
//!
//! `counters [REQUESTS]` (default 200 000, after a 20 000-request warm-up). Prints one
//! line: `counters on: 1234 ns per 1 KiB keep-alive response (200000 requests)`.

use ringserve::backend::memory::Memory;
use ringserve::fs::Root;
use ringserve::proto::http1::{HttpConfig, HttpFactory};
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

/// Sends `n` requests one at a time and checks each answer is one 1 KiB response.
fn fetch(conn: &mut Memory<<HttpFactory as ProtocolFactory>::Proto>, n: usize, req: &[u8]) {
    for _ in 0..n {
        conn.push(req);
        let out = conn.run();
        let end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        assert_eq!(out.len(), end + 4 + 1024, "one 1 KiB response per request");
    }
}

fn main() {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().expect("usage: counters [REQUESTS]"),
        None => 200_000,
    };
    let dir = std::env::temp_dir().join(format!("ringserve-counters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("1k.bin"), vec![b'x'; 1024]).unwrap();
    let factory = HttpFactory::new(HttpConfig::default());
    let proto = factory.new_conn("127.0.0.1:9".parse().unwrap());
    let mut conn = Memory::new(proto, Root::open(&dir).unwrap());
    let req = b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n";
    fetch(&mut conn, 20_000, req);
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
