//! Heap allocations per response, counted: the server runs in this process (the
//! library's `Server`) under a counting global allocator, one keep-alive client fetches
//! a 1 KiB file over and over, and the allocations made between two marks, by every
//! thread of the process, are divided by the responses in between. The client is
//! written to allocate nothing per request itself (one request buffer, one response
//! buffer, reused), so what is counted is the server's.
//!
//! `allocs [uring|epoll] [REQUESTS]` (default: both backends, 20 000 requests after a
//! 2 000-request warm-up, so caches and buffers have reached their steady state).
//! Then the same, pipelined: 16 requests per write on the same connection. Prints two
//! lines per backend, the keep-alive one last:
//! `allocs uring pipelined x16: 0.06 allocations and 12 bytes per 1 KiB response`,
//! `allocs uring: 6.00 allocations and 1234 bytes per 1 KiB keep-alive response`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// atomics, so counting is sound from any thread and allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (above).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new as u64, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; `new` is the caller's valid new size.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Fetches `/1k.bin` `n` times on one connection; the response is 1 KiB after a head
/// that ends in "\r\n\r\n" (the body length is known, so no parsing allocates).
fn fetch(s: &mut TcpStream, n: usize, req: &[u8], buf: &mut [u8]) {
    for _ in 0..n {
        s.write_all(req).unwrap();
        let mut got = 0;
        loop {
            let k = s.read(&mut buf[got..]).unwrap();
            assert!(k > 0, "the server closed");
            got += k;
            if let Some(end) = buf[..got].windows(4).position(|w| w == b"\r\n\r\n") {
                if got >= end + 4 + 1024 {
                    assert_eq!(got, end + 4 + 1024, "one response at a time");
                    break;
                }
            }
        }
    }
}

/// Sends `bursts` writes of 16 requests each and reads back the 16 responses of each:
/// `resp` bytes every one (the head's length does not change from one to the next).
fn fetch_pipelined(s: &mut TcpStream, bursts: usize, req16: &[u8], resp: usize, buf: &mut [u8]) {
    for _ in 0..bursts {
        s.write_all(req16).unwrap();
        let mut got = 0;
        while got < 16 * resp {
            let k = s.read(&mut buf[got..]).unwrap();
            assert!(k > 0, "the server closed");
            got += k;
        }
        assert_eq!(got, 16 * resp, "16 responses per burst");
    }
}

fn run(backend: &str, requests: usize) {
    let dir = std::env::temp_dir().join(format!("ringserve-allocs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("1k.bin"), vec![b'x'; 1024]).unwrap();
    let mut cfg = ringserve::Config::new(&dir);
    cfg.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.backend = match backend {
        "uring" => ringserve::probe::BackendRequest::Uring,
        _ => ringserve::probe::BackendRequest::Epoll,
    };
    cfg.uring_threads = 1;
    let http = ringserve::proto::http1::HttpFactory::new(Default::default());
    let srv = match ringserve::Server::start(cfg, http, std::sync::Arc::new(ringserve::NoHooks)) {
        Ok(s) => s,
        Err(e) => {
            println!("allocs {backend}: SKIP: {e}");
            return;
        }
    };
    let mut s = TcpStream::connect(srv.local_addrs()[0]).unwrap();
    s.set_nodelay(true).unwrap();
    let req = b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n";
    let mut buf = vec![0u8; 8192];
    fetch(&mut s, 2000, req, &mut buf);
    let (a0, b0) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    fetch(&mut s, requests, req, &mut buf);
    let (a1, b1) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    // Pipelined, 16 requests per write: the responses of a burst go as one send.
    let mut one = vec![0u8; 4096];
    s.write_all(req).unwrap();
    let mut got = 0;
    let resp = loop {
        got += s.read(&mut one[got..]).unwrap();
        if let Some(end) = one[..got].windows(4).position(|w| w == b"\r\n\r\n") {
            if got >= end + 4 + 1024 {
                break end + 4 + 1024;
            }
        }
    };
    let req16 = req.repeat(16);
    let mut big = vec![0u8; 16 * resp + 4096];
    let bursts = requests / 16;
    fetch_pipelined(&mut s, 200, &req16, resp, &mut big);
    let (p0, q0) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    fetch_pipelined(&mut s, bursts, &req16, resp, &mut big);
    let (p1, q1) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    let n = bursts * 16;
    println!(
        "allocs {backend} pipelined x16: {:.2} allocations and {} bytes per 1 KiB response ({n} responses)",
        (p1 - p0) as f64 / n as f64,
        (q1 - q0) / n as u64
    );
    println!(
        "allocs {backend}: {:.2} allocations and {} bytes per 1 KiB keep-alive response ({requests} responses)",
        (a1 - a0) as f64 / requests as f64,
        (b1 - b0) / requests as u64
    );
    drop(s);
    srv.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let requests = args.iter().find_map(|a| a.parse().ok()).unwrap_or(20_000);
    let backends: Vec<&str> = match args.first().map(String::as_str) {
        Some(b @ ("uring" | "epoll")) => vec![b],
        _ => vec!["uring", "epoll"],
    };
    for b in backends {
        run(b, requests);
    }
}
