//! The write path of INVARIANTS §3, end to end on each backend: a small line protocol
//! (`PUT path len [replace]` then the bytes; `RM path`) built on the contract's
//! `FsOp::Create`/`Link`/`Remove`/`Sync` and `Step::RecvFile`. The uploaded bytes go
//! socket→pipe→file; nothing half-written is ever visible; nothing outside the root is
//! created, replaced or removed; a cut-short or stalled upload leaves nothing.

mod common;
use common::*;
use ringserve::probe::BackendRequest;
use ringserve::proto::{
    Chunk, FsDone, FsOp, Protocol, ProtocolFactory, RecvFile, Step, TempFile, Wait,
};
use ringserve::{Config, NoHooks, Server};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One connection of the store protocol.
#[derive(Default)]
struct Store {
    input: Vec<u8>,
    out: Vec<u8>,
    state: State,
    eof: bool,
}

#[derive(Default)]
enum State {
    #[default]
    Command,
    /// Asked to create the file; then receive `len` bytes into it.
    Creating {
        len: u64,
        replace: bool,
    },
    /// `want`: bytes of the connection still to come after the head.
    Receiving {
        temp: TempFile,
        len: u64,
        want: u64,
        replace: bool,
    },
    Syncing {
        temp: TempFile,
        replace: bool,
        len: u64,
    },
    Linking {
        len: u64,
    },
    Removing,
    /// Ask for this step on the next poll.
    Ask(Box<Step>, Box<State>),
    Done,
}

fn err_word(e: &io::Error) -> String {
    format!("ERR {:?} {}\n", e.kind(), e.raw_os_error().unwrap_or(0))
}

impl Store {
    fn command(&mut self) -> Option<Step> {
        let nl = self.input.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.input.drain(..=nl).collect();
        let line = String::from_utf8_lossy(&line).trim().to_string();
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["PUT", path, len, rest @ ..] => {
                let len: u64 = len.parse().unwrap();
                let replace = rest == ["replace"];
                self.state = State::Creating { len, replace };
                Some(Step::Fs(FsOp::Create(path.to_string())))
            }
            ["RM", path] => {
                self.state = State::Removing;
                Some(Step::Fs(FsOp::Remove(path.to_string())))
            }
            _ => {
                self.out.extend_from_slice(b"ERR bad command\n");
                self.state = State::Done;
                None
            }
        }
    }
}

impl Protocol for Store {
    fn handle_recv(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
    }
    fn handle_eof(&mut self) {
        self.eof = true;
    }
    fn handle_timeout(&mut self) {
        self.eof = true;
    }
    fn handle_fs(&mut self, done: FsDone) {
        self.state = match (std::mem::take(&mut self.state), done) {
            (State::Creating { len, replace }, FsDone::Created(Ok(temp))) => {
                let head_len = (len as usize).min(self.input.len());
                let head: Vec<u8> = self.input.drain(..head_len).collect();
                let sink = RecvFile {
                    file: temp.file_ref().clone(),
                    offset: 0,
                    len: len - head.len() as u64,
                    head,
                };
                let want = sink.len;
                let next = State::Receiving {
                    temp,
                    len,
                    want,
                    replace,
                };
                State::Ask(Box::new(Step::RecvFile(sink)), Box::new(next))
            }
            (State::Syncing { temp, replace, len }, FsDone::Synced(Ok(()))) => State::Ask(
                Box::new(Step::Fs(FsOp::Link { temp, replace })),
                Box::new(State::Linking { len }),
            ),
            (State::Linking { len }, FsDone::Linked(Ok(()))) => {
                self.out.extend_from_slice(format!("OK {len}\n").as_bytes());
                State::Command
            }
            (State::Removing, FsDone::Removed(Ok(()))) => {
                self.out.extend_from_slice(b"OK\n");
                State::Command
            }
            (_, FsDone::Created(Err(e)) | FsDone::Linked(Err(e)) | FsDone::Removed(Err(e)))
            | (_, FsDone::Synced(Err(e))) => {
                self.out.extend_from_slice(err_word(&e).as_bytes());
                State::Done
            }
            (_, other) => panic!("unexpected {other:?}"),
        };
    }
    fn handle_recv_file(&mut self, r: io::Result<u64>) {
        self.state = match (std::mem::take(&mut self.state), r) {
            (
                State::Receiving {
                    temp,
                    len,
                    want,
                    replace,
                },
                Ok(n),
            ) if n == want => {
                let file = temp.file_ref().clone();
                State::Ask(
                    Box::new(Step::Fs(FsOp::Sync(file))),
                    Box::new(State::Syncing { temp, replace, len }),
                )
            }
            // Cut short: the temporary file goes with the state.
            (_, Ok(_)) => State::Done,
            (_, Err(e)) => {
                self.out.extend_from_slice(err_word(&e).as_bytes());
                State::Done
            }
        };
    }
    fn poll(&mut self, _now: SystemTime) -> Step {
        if !self.out.is_empty() {
            return Step::Send(vec![Chunk::Mem(std::mem::take(&mut self.out))]);
        }
        match std::mem::take(&mut self.state) {
            State::Ask(step, next) => {
                self.state = *next;
                *step
            }
            State::Command => match self.command() {
                Some(step) => step,
                None if !self.out.is_empty() => self.poll(_now),
                None if self.eof => Step::Close,
                None => Step::Recv(Wait::Request),
            },
            State::Done => Step::Close,
            other => {
                self.state = other;
                Step::Recv(Wait::Body)
            }
        }
    }
}

struct StoreFactory;
impl ProtocolFactory for StoreFactory {
    type Proto = Store;
    fn new_conn(&self, _peer: SocketAddr) -> Store {
        Store::default()
    }
}

fn start(backend: &str, root: &Path, tweak: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = Config::new(root);
    cfg.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.backend = match backend {
        "epoll" => BackendRequest::Epoll,
        _ => BackendRequest::Uring,
    };
    tweak(&mut cfg);
    Server::start(cfg, StoreFactory, Arc::new(NoHooks)).unwrap()
}

/// Sends `PUT path len [replace]` and `body`, returns the answer line.
fn put(addr: SocketAddr, path: &str, body: &[u8], replace: bool) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let flag = if replace { " replace" } else { "" };
    let head = format!("PUT {path} {}{flag}\n", body.len());
    // Header and the body's first bytes in one write, as a real client's first
    // segment often is: the protocol hands them over as the receive's head.
    let first = body.len().min(1000);
    s.write_all(&[head.as_bytes(), &body[..first]].concat())
        .unwrap();
    let _ = s.write_all(&body[first..]);
    answer(&mut s)
}

fn answer(s: &mut TcpStream) -> String {
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line.trim_end().to_string()
}

backend_test! {
    fn an_upload_goes_into_place_whole_and_zero_copy(b) {
        let root = temp_dir("up-whole");
        std::fs::create_dir(root.join("d")).unwrap();
        let srv = start(b, &root, |_| {});
        let body = pattern(9, 8 << 20);
        assert_eq!(put(srv.local_addrs()[0], "d/big.bin", &body, false), format!("OK {}", body.len()));
        assert!(std::fs::read(root.join("d/big.bin")).unwrap() == body, "[{b}] contents differ");
        assert_eq!(tree(&root), ["d", "d/big.bin"], "[{b}] leftovers");
        let st = srv.stats();
        assert!(st.bytes_recv_splice > 0, "[{b}] nothing was spliced: {st}");
        assert_eq!(st.bytes_recv_splice + st.bytes_recv_copy, body.len() as u64, "[{b}] {st}");
        srv.shutdown();
        remove_temp_tree(&root);
    }

    fn an_upload_never_replaces_unless_asked(b) {
        let root = temp_dir("up-replace");
        std::fs::write(root.join("a"), "old").unwrap();
        let srv = start(b, &root, |_| {});
        let addr = srv.local_addrs()[0];
        let got = put(addr, "a", b"new contents", false);
        assert!(got.starts_with("ERR AlreadyExists"), "[{b}] {got}");
        assert_eq!(std::fs::read(root.join("a")).unwrap(), b"old");
        assert_eq!(tree(&root), ["a"], "[{b}] leftovers");
        assert_eq!(put(addr, "a", b"new contents", true), "OK 12");
        assert_eq!(std::fs::read(root.join("a")).unwrap(), b"new contents");
        assert_eq!(tree(&root), ["a"], "[{b}] leftovers");
        srv.shutdown();
        remove_temp_tree(&root);
    }

    fn uploads_and_removals_never_leave_the_root(b) {
        let top = temp_dir("up-escape");
        let root = top.join("root");
        let outside = top.join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), "keep").unwrap();
        std::os::unix::fs::symlink("../outside", root.join("out")).unwrap();
        std::os::unix::fs::symlink("../outside/victim", root.join("victim")).unwrap();
        let srv = start(b, &root, |_| {});
        let addr = srv.local_addrs()[0];
        let before = tree(&top);
        for path in ["../x", "/tmp/ringserve-escape", "sub/../../x", "out/x", "out/victim", ".ringserve-part-1-1"] {
            let got = put(addr, path, b"evil", true);
            assert!(got.starts_with("ERR"), "[{b}] PUT {path}: {got}");
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(format!("RM {path}\n").as_bytes()).unwrap();
            let got = answer(&mut s);
            assert!(got.starts_with("ERR"), "[{b}] RM {path}: {got}");
        }
        assert_eq!(tree(&top), before, "[{b}] something changed");
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");
        assert!(!Path::new("/tmp/ringserve-escape").exists());
        // A symlink as the last name is replaced itself, never followed.
        assert_eq!(put(addr, "victim", b"mine", true), "OK 4");
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");
        assert_eq!(std::fs::read(root.join("victim")).unwrap(), b"mine");
        srv.shutdown();
        remove_temp_tree(&top);
    }

    fn an_upload_cut_short_or_stalled_leaves_nothing(b) {
        let root = temp_dir("up-cut");
        let srv = start(b, &root, |c| c.body_timeout = Duration::from_secs(1));
        let addr = srv.local_addrs()[0];
        // The client goes away halfway.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"PUT half 100000\n").unwrap();
        s.write_all(&pattern(1, 50_000)).unwrap();
        drop(s);
        // The client stalls halfway: the body timeout ends it, and it hears why.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"PUT stalled 100000\n").unwrap();
        s.write_all(&pattern(2, 50_000)).unwrap();
        let got = answer(&mut s);
        assert!(got.starts_with("ERR TimedOut"), "[{b}] {got}");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(
            eventually(Duration::from_secs(5), || srv.stats().open_conns == 0),
            "[{b}] {}",
            srv.stats()
        );
        assert!(tree(&root).is_empty(), "[{b}] left behind: {:?}", tree(&root));
        srv.shutdown();
        remove_temp_tree(&root);
    }
}

backend_test! {
    /// Two uploads and a removal pipelined in one write: each body is exactly its
    /// length, and what follows it is the next command. With `--uring-multishot-recv`
    /// the receive armed when the first body begins has parked some of it; those bytes
    /// go into the file first, and the rest go back to the protocol.
    fn pipelined_uploads_keep_their_boundaries(b) {
        for multishot in [false, true] {
            let root = temp_dir("up-pipe");
            std::fs::write(root.join("gone"), "x").unwrap();
            let srv = start(b, &root, |c| c.uring_multishot_recv = multishot);
            let one = pattern(4, 300_000);
            let mut wire = format!("PUT one {}\n", one.len()).into_bytes();
            wire.extend_from_slice(&one);
            wire.extend_from_slice(b"PUT two 5\nhelloRM gone\n");
            let mut s = TcpStream::connect(srv.local_addrs()[0]).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(&wire).unwrap();
            let mut r = BufReader::new(s);
            let mut lines = String::new();
            for _ in 0..3 {
                r.read_line(&mut lines).unwrap();
            }
            assert_eq!(lines, "OK 300000\nOK 5\nOK\n", "[{b}] multishot={multishot}");
            assert!(std::fs::read(root.join("one")).unwrap() == one, "[{b}] one differs");
            assert_eq!(std::fs::read(root.join("two")).unwrap(), b"hello");
            assert_eq!(tree(&root), ["one", "two"], "[{b}] multishot={multishot}");
            srv.shutdown();
            remove_temp_tree(&root);
        }
    }
}
