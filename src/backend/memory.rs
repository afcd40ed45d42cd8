//! The driver's in-memory lowering, for tests and fuzzing: one connection's protocol
//! run through the same [`Core`] every backend uses, with a real [`Root`] and no socket.
//! Bytes pushed into its inbox are handed over in pieces of at most [`Memory::piece`]
//! bytes; what the protocol sends comes back as bytes, file chunks read from their
//! files. Opens go to [`Root::open_beneath`] as on the epoll backend, listings and the
//! write path run in the driver as everywhere, and every open the backend made is kept
//! for the caller to check ([`Memory::opened`]).
//!
//! Compiled for the crate's tests, and for `fuzz/` through the `test-support` feature
//! (never in a server build): it reads the files behind [`FileRef`]s, which a protocol
//! must not be able to, so it is no part of the API.

use super::driver::{Action, Core, Env, Timeouts};
use crate::fs::Root;
use crate::open_cache::OpenCache;
use crate::proto::{Chunk, FileMeta, Protocol, RecvFile};
use crate::stats::Stats;
use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const TIMEOUTS: Timeouts = Timeouts {
    header: Duration::from_secs(30),
    keepalive: Duration::from_secs(30),
    body: Duration::from_secs(30),
};

/// One connection: a protocol in the driver, and what the backend is doing for it.
pub struct Memory<P> {
    core: Core<P>,
    root: Root,
    cache: OpenCache,
    st: Stats,
    inbox: VecDeque<u8>,
    /// The peer has closed: once the inbox is empty, an armed receive hears EOF.
    shut: bool,
    /// A receive (or a receive into a file) armed and waiting for bytes.
    waiting: Option<Pending>,
    closed: bool,
    opened: Vec<(String, FileMeta)>,
    /// Every path the backend was asked to open, found or not.
    looked: Vec<String>,
    /// Largest piece handed over per receive.
    pub piece: usize,
}

enum Pending {
    Recv,
    File { sink: RecvFile, got: u64 },
}

impl<P: Protocol> Memory<P> {
    /// A connection that has just been accepted, serving beneath `root`.
    pub fn new(proto: P, root: Root) -> Memory<P> {
        Memory {
            core: Core::new(proto, "127.0.0.1:1".parse().unwrap(), Instant::now()),
            root,
            cache: OpenCache::new(16, Duration::from_secs(1)),
            st: Stats::default(),
            inbox: VecDeque::new(),
            shut: false,
            waiting: None,
            closed: false,
            opened: Vec::new(),
            looked: Vec::new(),
            piece: usize::MAX,
        }
    }

    /// The protocol, to start an operation or read its answer.
    pub fn proto(&mut self) -> &mut P {
        &mut self.core.proto
    }

    /// Bytes from the peer, handed over by the next [`Memory::run`].
    pub fn push(&mut self, bytes: &[u8]) {
        self.inbox.extend(bytes);
    }

    /// The peer closes its side after what is in the inbox.
    pub fn shut(&mut self) {
        self.shut = true;
    }

    /// The driver closed the connection.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// It waits for bytes the inbox does not have (a plain receive, not a file's).
    pub fn idle(&self) -> bool {
        self.inbox.is_empty() && matches!(self.waiting, Some(Pending::Recv))
    }

    /// Every path the backend opened, with what `fstat` said of it (cache hits are
    /// earlier opens and are not repeated).
    pub fn opened(&self) -> &[(String, FileMeta)] {
        &self.opened
    }

    /// Every path the backend was asked to open (cache hits are not asked), found or not.
    pub fn looked(&self) -> &[String] {
        &self.looked
    }

    /// Drops an armed receive the caller no longer needs (a client whose operation has
    /// its answer).
    pub fn drop_recv(&mut self) {
        if matches!(self.waiting, Some(Pending::Recv)) {
            self.waiting = None;
            self.core.recv_dropped();
        }
    }

    /// Runs the driver until it waits for bytes it does not have, or closes. Returns
    /// what it sent.
    pub fn run(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            if self.closed {
                return out;
            }
            match self.waiting.take() {
                Some(Pending::Recv) if self.inbox.is_empty() && self.shut => self.core.eof(),
                Some(Pending::Recv) if self.inbox.is_empty() => {
                    self.waiting = Some(Pending::Recv);
                    return out;
                }
                Some(Pending::Recv) => {
                    let n = self.inbox.len().min(self.piece);
                    let data: Vec<u8> = self.inbox.drain(..n).collect();
                    self.core.recv(&data, Instant::now());
                }
                Some(Pending::File { mut sink, mut got }) => {
                    let f = sink.file.file();
                    if !sink.head.is_empty() {
                        f.write_all_at(&sink.head, sink.offset).unwrap();
                        sink.offset += sink.head.len() as u64;
                        sink.head.clear();
                    }
                    let n = (self.inbox.len() as u64).min(sink.len - got) as usize;
                    let data: Vec<u8> = self.inbox.drain(..n).collect();
                    f.write_all_at(&data, sink.offset + got).unwrap();
                    got += n as u64;
                    if got < sink.len && !self.shut {
                        self.waiting = Some(Pending::File { sink, got });
                        return out;
                    }
                    self.core.recv_file_done(Ok(got));
                }
                None => {}
            }
            let mut env = Env::single(&TIMEOUTS, &self.root, &mut self.cache, &self.st);
            match self.core.next(&mut env) {
                Action::Send(chunks) => {
                    for c in &chunks {
                        match c {
                            Chunk::Mem(v) => out.extend_from_slice(v),
                            Chunk::Static(s) => out.extend_from_slice(s),
                            Chunk::File { file, offset, len } => {
                                let mut buf = vec![0; *len as usize];
                                file.file().read_exact_at(&mut buf, *offset).unwrap();
                                out.extend_from_slice(&buf);
                            }
                        }
                    }
                    self.core.sent();
                }
                Action::Recv { .. } => self.waiting = Some(Pending::Recv),
                Action::RecvFile { sink, .. } => {
                    self.waiting = Some(Pending::File { sink, got: 0 })
                }
                Action::Open(path) => {
                    self.looked.push(path.clone());
                    let r = self.root.open_beneath(&path);
                    if let Ok(o) = &r {
                        self.opened.push((path.clone(), o.meta));
                    }
                    let mut env = Env::single(&TIMEOUTS, &self.root, &mut self.cache, &self.st);
                    self.core.opened(&mut env, &path, r);
                }
                Action::Sync(file) => {
                    let r = crate::fs::sync(&file);
                    let mut env = Env::single(&TIMEOUTS, &self.root, &mut self.cache, &self.st);
                    self.core.synced(&mut env, r);
                }
                Action::Close(_) => self.closed = true,
            }
        }
    }
}
