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

fn start(backend: &str, hooks: Arc<Log>) -> Server {
    let mut cfg = Config::new(temp_dir("lib"));
    cfg.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.backend = match backend {
        "epoll" => BackendRequest::Epoll,
        _ => BackendRequest::Uring,
    };
    Server::start(cfg, ShoutFactory, hooks).unwrap()
}

fn shout(addr: SocketAddr, line: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_panic_in_one_connection_closes_only_that_connection() {
    for b in backends() {
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

#[test]
fn hooks_see_every_accept_and_exactly_one_close_per_connection() {
    for b in backends() {
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
