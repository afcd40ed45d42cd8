//! The library API: a pluggable protocol, lifecycle hooks, and a panic in one
//! connection that does not take down the process.

mod common;
use common::*;
use ringserve::conn::Key;
use ringserve::probe::BackendRequest;
use ringserve::proto::{Chunk, Protocol, ProtocolFactory, Step, Wait};
use ringserve::{CloseReason, Config, Hooks, Server};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Upper-cases lines; panics on the line "panic".
#[derive(Default)]
struct Shout {
    buf: Vec<u8>,
    out: Vec<u8>,
    eof: bool,
}

impl Protocol for Shout {
    fn handle_recv(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            if line == b"panic\n" {
                panic!("a protocol bug, on purpose");
            }
            self.out.extend(line.to_ascii_uppercase());
        }
    }
    fn handle_eof(&mut self) {
        self.eof = true;
    }
    fn handle_timeout(&mut self) {
        self.eof = true;
    }
    fn poll(&mut self, _now: SystemTime) -> Step {
        if !self.out.is_empty() {
            Step::Send(vec![Chunk::Mem(std::mem::take(&mut self.out))])
        } else if self.eof {
            Step::Close
        } else {
            Step::Recv(Wait::Idle)
        }
    }
}

struct ShoutFactory;
impl ProtocolFactory for ShoutFactory {
    type Proto = Shout;
    fn new_conn(&self, _peer: SocketAddr) -> Shout {
        Shout::default()
    }
}

#[derive(Default)]
struct Log(Mutex<Vec<(String, Key)>>);
impl Hooks for Log {
    fn on_accept(&self, key: Key, _peer: SocketAddr) {
        self.0.lock().unwrap().push(("accept".into(), key));
    }
    fn on_close(&self, key: Key, _peer: SocketAddr, why: CloseReason) {
        self.0.lock().unwrap().push((format!("close {why:?}"), key));
    }
}

fn config(backend: &str, root: &std::path::Path) -> Config {
    let mut cfg = Config::new(root);
    cfg.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.backend = match backend {
        "epoll" => BackendRequest::Epoll,
        _ => BackendRequest::Uring,
    };
    cfg
}

fn start(backend: &str, hooks: Arc<Log>) -> Server {
    Server::start(config(backend, &temp_dir("lib")), ShoutFactory, hooks).unwrap()
}

/// An HTTP server on `b` whose root holds `/big` (4 MiB of pattern `seed`, returned),
/// with a 4 KiB send buffer so a response to a client that does not read stalls; and
/// one connection to it.
fn big_file_server(b: &str, seed: u8) -> (Server, Arc<Log>, Vec<u8>, TcpStream) {
    use ringserve::proto::http1::{HttpConfig, HttpFactory};
    let root = temp_dir("lib-big");
    let body = pattern(seed, 4 << 20);
    std::fs::write(root.join("big"), &body).unwrap();
    let mut cfg = config(b, &root);
    cfg.sndbuf = 4096;
    let hooks = Arc::new(Log::default());
    let factory = HttpFactory::new(HttpConfig::default());
    let srv = Server::start(cfg, factory, hooks.clone()).unwrap();
    let s = TcpStream::connect(srv.local_addrs()[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (srv, hooks, body, s)
}

/// Calls `Control::close` from inside `on_accept`, then holds the accepting thread a
/// while: the request reaches the backend while it is still registering the
/// connection (the window of B5).
struct CloseOnAccept {
    log: Log,
    control: Mutex<Option<Arc<ringserve::Control>>>,
}

impl Hooks for CloseOnAccept {
    fn on_accept(&self, key: Key, peer: SocketAddr) {
        self.log.on_accept(key, peer);
        if let Some(c) = &*self.control.lock().unwrap() {
            c.close(key);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    fn on_close(&self, key: Key, peer: SocketAddr, why: CloseReason) {
        self.log.on_close(key, peer, why);
    }
}

fn shout(addr: SocketAddr, line: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    // A line that panics the server may have reset the connection already.
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

backend_test! {
    fn a_panic_in_one_connection_closes_only_that_connection(b) {
        let hooks = Arc::new(Log::default());
        let srv = start(b, hooks.clone());
        let addr = srv.local_addrs()[0];
        let mut bystander = TcpStream::connect(addr).unwrap();
        bystander
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(shout(addr, "panic\n"), "", "[{b}]");
        assert_eq!(shout(addr, "still here\n"), "STILL HERE\n", "[{b}]");
        bystander.write_all(b"me too\n").unwrap();
        let mut buf = [0u8; 7];
        bystander.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ME TOO\n");
        assert!(
            eventually(Duration::from_secs(5), || srv.stats().panics == 1),
            "[{b}] {}",
            srv.stats()
        );
        drop(bystander);
        srv.shutdown();
        let log = hooks.0.lock().unwrap();
        assert!(log.iter().any(|(e, _)| e == "close Panic"), "{log:?}");
    }
}

backend_test! {
    fn hooks_see_every_accept_and_exactly_one_close_per_connection(b) {
        let hooks = Arc::new(Log::default());
        let srv = start(b, hooks.clone());
        let addr = srv.local_addrs()[0];
        for i in 0..20 {
            assert_eq!(shout(addr, &format!("hi {i}\n")), format!("HI {i}\n"));
        }
        let idle = TcpStream::connect(addr).unwrap();
        assert!(eventually(Duration::from_secs(5), || srv.stats().accepts == 21));
        srv.shutdown();
        drop(idle);
        let log = hooks.0.lock().unwrap();
        let accepts: Vec<Key> = log
            .iter()
            .filter(|(e, _)| e == "accept")
            .map(|(_, k)| *k)
            .collect();
        assert_eq!(accepts.len(), 21, "[{b}]");
        for k in accepts {
            let closes = log
                .iter()
                .filter(|(e, kk)| e.starts_with("close") && *kk == k)
                .count();
            assert_eq!(closes, 1, "[{b}] key {k}: {log:?}");
        }
        assert!(log.iter().any(|(e, _)| e == "close Shutdown"), "{log:?}");
    }
}

/// The only key `hooks` saw accepted since `from` entries.
fn accepted_key(hooks: &Log, from: usize) -> Key {
    let log = hooks.0.lock().unwrap();
    let keys: Vec<Key> = log[from..]
        .iter()
        .filter(|(e, _)| e == "accept")
        .map(|(_, k)| *k)
        .collect();
    assert_eq!(keys.len(), 1, "{log:?}");
    keys[0]
}

backend_test! {
    fn control_close_ends_an_idle_connection_and_ignores_a_retired_key(b) {
        let hooks = Arc::new(Log::default());
        let srv = start(b, hooks.clone());
        let addr = srv.local_addrs()[0];
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"hi\n").unwrap();
        let mut got = [0u8; 3];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"HI\n");
        let key = accepted_key(&hooks, 0);
        srv.control().close(key);
        assert!(
            closed_by_peer(&mut s),
            "[{b}] still open after close({key})"
        );
        let closed = || {
            let log = hooks.0.lock().unwrap();
            log.iter().any(|(e, k)| e == "close Requested" && *k == key)
        };
        assert!(eventually(Duration::from_secs(5), closed), "[{b}]");
        // A new connection may reuse the slot; the old key (an older generation) must
        // not reach it, and is counted as stale.
        let seen = hooks.0.lock().unwrap().len();
        let mut s2 = TcpStream::connect(addr).unwrap();
        s2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s2.write_all(b"a\n").unwrap();
        s2.read_exact(&mut got[..2]).unwrap();
        let key2 = accepted_key(&hooks, seen);
        assert_ne!(key2, key);
        let stale = srv.stats().stale_dropped;
        srv.control().close(key);
        assert!(
            eventually(Duration::from_secs(5), || srv.stats().stale_dropped > stale),
            "[{b}] the retired key was not dropped"
        );
        s2.write_all(b"b\n").unwrap();
        s2.read_exact(&mut got[..2]).unwrap();
        assert_eq!(&got[..2], b"B\n", "[{b}] the new connection was hit");
        srv.shutdown();
    }
}

backend_test! {
    fn control_close_waits_for_the_response_in_flight(b) {
        let (srv, hooks, body, mut s) = big_file_server(b, 5);
        s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        // The 4 MiB response stalls in the socket buffers while the close is asked: it
        // has started going out and cannot finish, as the client does not read and the
        // server's sndbuf is 4 KiB. (Counters grow as sends complete: epoll's sendfile
        // shows the body's first ~100 KiB; io_uring's first 64 KiB splice cannot
        // complete unread, so there only the header shows.)
        let out = || {
            let st = srv.stats();
            st.bytes_copy + st.bytes_sendfile + st.bytes_splice
        };
        let mut sent = 0;
        let started = eventually(Duration::from_secs(10), || {
            sent = out();
            sent > 0
        });
        eprintln!("[{b}] {sent} bytes out before the close");
        assert!(started, "[{b}] the response did not start: {}", srv.stats());
        assert!(
            sent < body.len() as u64,
            "[{b}] all {sent} bytes went out unread: nothing is in flight"
        );
        srv.control().close(accepted_key(&hooks, 0));
        // Read at once: the close is taken within microseconds (a condvar wakes the
        // backend), and the rest of the body needs hundreds of 4 KiB sends. Should the
        // response finish first anyway, the connection is closed as it waits for the
        // next request: the assertions below hold either way.
        let mut r = std::io::BufReader::new(s);
        let resp = read_resp(&mut r, false).unwrap();
        assert!(resp.body == body, "[{b}] the response in flight was cut");
        let mut rest = Vec::new();
        assert_eq!(
            r.read_to_end(&mut rest).unwrap(),
            0,
            "[{b}] not closed after it"
        );
        srv.shutdown();
    }
}

backend_test! {
    /// B1: a protocol panic inside `handle_recv` gives the provided buffer back. With
    /// two buffers on one ring, three panics used to leave the ring unable to receive.
    fn panics_while_receiving_do_not_use_up_the_receive_buffers(b) {
        let mut cfg = config(b, &temp_dir("lib-bufs"));
        cfg.uring_buffers = 2;
        cfg.uring_threads = 1;
        let hooks = Arc::new(Log::default());
        let srv = Server::start(cfg, ShoutFactory, hooks).unwrap();
        let addr = srv.local_addrs()[0];
        for _ in 0..5 {
            assert_eq!(shout(addr, "panic\n"), "", "[{b}]");
        }
        assert_eq!(shout(addr, "healthy\n"), "HEALTHY\n", "[{b}] {}", srv.stats());
        // The unwinding drops the connection (the client sees the close) just before
        // the worker counts the panic: wait for the count to land, then it must be 5.
        eventually(Duration::from_secs(5), || srv.stats().panics >= 5);
        assert_eq!(srv.stats().panics, 5);
        srv.shutdown();
    }
}

backend_test! {
    /// B5: a close asked while the backend is still registering the connection is
    /// not lost: the connection closes, with the reason `Requested`.
    fn a_close_asked_during_registration_is_not_lost(b) {
        let hooks = Arc::new(CloseOnAccept {
            log: Log::default(),
            control: Mutex::new(None),
        });
        let cfg = config(b, &temp_dir("lib-reg"));
        let srv = Server::start(cfg, ShoutFactory, hooks.clone()).unwrap();
        *hooks.control.lock().unwrap() = Some(srv.control());
        let mut s = TcpStream::connect(srv.local_addrs()[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(closed_by_peer(&mut s), "[{b}] the close was lost");
        let closed = || {
            let log = hooks.log.0.lock().unwrap();
            log.iter().any(|(e, _)| e == "close Requested")
        };
        assert!(eventually(Duration::from_secs(5), closed), "[{b}]");
        *hooks.control.lock().unwrap() = None;
        srv.shutdown();
    }
}

backend_test! {
    /// B9: with pipelined requests queued behind the response in flight, a close
    /// takes effect after that response, not once the pipeline runs dry.
    fn a_close_with_pipelined_requests_behind_comes_after_the_response_in_flight(b) {
        let (srv, hooks, body, mut s) = big_file_server(b, 6);
        let req = "GET /big HTTP/1.1\r\nHost: t\r\n\r\n";
        s.write_all(req.repeat(3).as_bytes()).unwrap();
        let started = eventually(Duration::from_secs(10), || srv.stats().responses >= 1);
        assert!(started, "[{b}] no response started: {}", srv.stats());
        srv.control().close(accepted_key(&hooks, 0));
        let mut r = std::io::BufReader::new(s);
        let resp = read_resp(&mut r, false).unwrap();
        assert!(resp.body == body, "[{b}] the response in flight was cut");
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "[{b}] {} more bytes: the pipelined requests were answered",
            rest.len()
        );
        assert_eq!(srv.stats().responses, 1, "[{b}]");
        srv.shutdown();
    }
}
