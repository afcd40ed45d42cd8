//! The client's side: one operation at a time, as a sans-IO [`Protocol`] so the same
//! driver that runs servers can run it (`backend::blocking` on one socket, or the
//! in-memory tests against an [`XferServer`](super::XferServer)).
//!
//! [`XferClient::start`] queues an operation's request; the driver drives the protocol
//! until [`XferClient::take_outcome`] has the answer. A download's bytes go by
//! [`Step::RecvFile`] into the file the caller gave, an upload's by [`Chunk::File`]
//! from it, so a blocking driver moves them by splice and sendfile.

use super::frame::{self, Code, Entry, Identity, Meta, Reply, Request, Status};
use crate::proto::{Chunk, FileRef, Protocol, RecvFile, Step, Wait};
use std::io;
use std::time::SystemTime;

/// An operation the client can run.
#[derive(Debug)]
pub enum Op {
    Hello,
    Stat(Vec<u8>),
    List(Vec<u8>),
    /// Download `path` from `offset` into `file` at the same offset. A non-zero
    /// `identity` asks the server to go on only if the file is still that version.
    Get {
        path: Vec<u8>,
        offset: u64,
        identity: Identity,
        file: FileRef,
    },
    /// Upload `len` bytes of `file` (from its start) as `path`.
    Put {
        path: Vec<u8>,
        file: FileRef,
        len: u64,
        replace: bool,
    },
}

/// How an operation ended.
#[derive(Debug)]
pub enum Outcome {
    Hello {
        version: u8,
        uploads: bool,
        replace: bool,
        max_upload: u64,
    },
    Stat(Meta),
    List(Vec<Entry>),
    /// All of `meta.len - offset` bytes are in the file.
    Got {
        meta: Meta,
        offset: u64,
    },
    /// The upload is durable under its name.
    Put {
        len: u64,
    },
    /// The server said no, and why. The connection is still usable unless the server
    /// closes it.
    Refused {
        code: Code,
        message: String,
    },
    /// The connection failed: it cannot be used again.
    Failed(String),
}

#[derive(Debug)]
enum State {
    Idle,
    /// The request is out (or queued); the reply to it is awaited.
    Await(Expect),
    /// A download's bytes are being received: `want` after the head.
    Body {
        meta: Meta,
        offset: u64,
        want: u64,
    },
    Broken,
}

#[derive(Debug)]
enum Expect {
    Hello,
    Stat,
    List,
    Data { file: FileRef },
    Ready { file: FileRef, len: u64 },
    Done,
}

/// One client connection.
#[derive(Debug)]
pub struct XferClient {
    input: Vec<u8>,
    out: Vec<Chunk>,
    state: State,
    outcome: Option<Outcome>,
    eof: bool,
    /// A download's total and starting offset, once its reply is in (for a progress
    /// bar), or an upload's length once the server said READY.
    announced: Option<(u64, u64)>,
}

impl Default for XferClient {
    fn default() -> Self {
        XferClient {
            input: Vec::new(),
            out: Vec::new(),
            state: State::Idle,
            outcome: None,
            eof: false,
            announced: None,
        }
    }
}

impl XferClient {
    pub fn new() -> XferClient {
        XferClient::default()
    }

    /// Starts `op`. The previous one must have ended.
    pub fn start(&mut self, op: Op) {
        assert!(matches!(self.state, State::Idle), "one operation at a time");
        self.outcome = None;
        self.announced = None;
        let (req, expect) = match op {
            Op::Hello => {
                let v = frame::VERSION;
                (
                    Request::Hello {
                        lowest: v,
                        highest: v,
                    },
                    Expect::Hello,
                )
            }
            Op::Stat(path) => (Request::Stat { path }, Expect::Stat),
            Op::List(path) => (Request::List { path }, Expect::List),
            Op::Get {
                path,
                offset,
                identity,
                file,
            } => (
                Request::Get {
                    path,
                    offset,
                    identity,
                },
                Expect::Data { file },
            ),
            Op::Put {
                path,
                file,
                len,
                replace,
            } => (
                Request::Put { path, len, replace },
                Expect::Ready { file, len },
            ),
        };
        self.out.push(Chunk::Mem(req.encode()));
        self.state = State::Await(expect);
    }

    /// The answer, once the operation has ended.
    pub fn take_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    /// Whether the operation has ended (the driver stops driving).
    pub fn has_outcome(&self) -> bool {
        self.outcome.is_some()
    }

    /// `(total, offset)` of the body in flight, once the server has announced it.
    pub fn announced(&self) -> Option<(u64, u64)> {
        self.announced
    }

    fn end(&mut self, o: Outcome) {
        self.state = if matches!(o, Outcome::Failed(_)) {
            State::Broken
        } else {
            State::Idle
        };
        self.outcome = Some(o);
    }

    fn fail(&mut self, why: impl Into<String>) {
        self.out.clear();
        self.end(Outcome::Failed(why.into()));
    }

    /// Takes a reply off the input if a whole one is in.
    fn reply(&mut self) -> Result<Option<Reply>, String> {
        match frame::decode(&self.input, frame::MAX_REPLY) {
            Ok(Status::Partial) => Ok(None),
            Ok(Status::Complete(h, n)) => {
                let r = Reply::decode(&h, &self.input[frame::HEADER_LEN..n]);
                self.input.drain(..n);
                r.map(Some)
                    .ok_or_else(|| format!("the server sent a malformed {:?} frame", h.kind()))
            }
            Err(e) => Err(format!("the server's reply is not valid: {e}")),
        }
    }

    /// Applies a reply to the awaited operation; a step when one follows.
    fn answer(&mut self, expect: Expect, r: Reply) -> Option<Step> {
        match (expect, r) {
            (_, Reply::Error { code, message }) => self.end(Outcome::Refused { code, message }),
            (
                Expect::Hello,
                Reply::Hello {
                    version,
                    uploads,
                    replace,
                    max_upload,
                },
            ) => self.end(Outcome::Hello {
                version,
                uploads,
                replace,
                max_upload,
            }),
            (Expect::Stat, Reply::Stat(m)) => self.end(Outcome::Stat(m)),
            (Expect::List, Reply::List(l)) => self.end(Outcome::List(l)),
            (Expect::Data { file }, Reply::Data { meta, offset }) => {
                let Some(total) = meta.len.checked_sub(offset) else {
                    self.fail("the server announced an offset past the end");
                    return None;
                };
                self.announced = Some((meta.len, offset));
                let head_len = total.min(self.input.len() as u64) as usize;
                let head: Vec<u8> = self.input.drain(..head_len).collect();
                let want = total - head.len() as u64;
                if total == 0 {
                    self.end(Outcome::Got { meta, offset });
                    return None;
                }
                self.state = State::Body { meta, offset, want };
                return Some(Step::RecvFile(RecvFile {
                    file,
                    offset,
                    head,
                    len: want,
                }));
            }
            (Expect::Ready { file, len }, Reply::Ready) => {
                self.announced = Some((len, 0));
                if len > 0 {
                    self.out.push(Chunk::File {
                        file,
                        offset: 0,
                        len,
                    });
                }
                self.state = State::Await(Expect::Done);
            }
            (Expect::Done, Reply::Done { len }) => self.end(Outcome::Put { len }),
            (_, r) => self.fail(format!("the server sent an unexpected {r:?}")),
        }
        None
    }
}

impl Protocol for XferClient {
    fn handle_recv(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
    }

    fn handle_eof(&mut self) {
        self.eof = true;
    }

    fn handle_timeout(&mut self) {
        self.fail("timed out waiting for the server");
    }

    fn handle_recv_file(&mut self, result: io::Result<u64>) {
        let State::Body { meta, offset, want } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return self.fail("internal: a file receive finished with none running");
        };
        match result {
            Ok(n) if n == want => self.end(Outcome::Got { meta, offset }),
            Ok(n) => {
                let got = meta.len - offset - (want - n);
                self.fail(format!(
                    "the server closed the connection after {got} of {} bytes",
                    meta.len - offset
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                self.fail("the download stalled: no bytes for the body timeout")
            }
            Err(e) => self.fail(format!("receiving the file: {e}")),
        }
    }

    fn poll(&mut self, _now: SystemTime) -> Step {
        if !self.out.is_empty() {
            return Step::Send(std::mem::take(&mut self.out));
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Await(expect) => match self.reply() {
                Ok(Some(r)) => {
                    if let Some(step) = self.answer(expect, r) {
                        return step;
                    }
                    if !self.out.is_empty() {
                        return Step::Send(std::mem::take(&mut self.out));
                    }
                    if matches!(self.state, State::Await(_)) {
                        // The next reply may be in already (an empty upload's READY
                        // and DONE arrive together): look before waiting.
                        return self.poll(_now);
                    }
                    // Ended: the driver sees the outcome.
                    Step::Recv(Wait::Request)
                }
                Ok(None) if self.eof => {
                    self.fail("the server closed the connection");
                    Step::Close
                }
                Ok(None) => {
                    self.state = State::Await(expect);
                    Step::Recv(Wait::Request)
                }
                Err(e) => {
                    self.fail(e);
                    Step::Close
                }
            },
            State::Broken => {
                self.state = State::Broken;
                Step::Close
            }
            s @ (State::Idle | State::Body { .. }) => {
                self.state = s;
                if self.eof {
                    return Step::Close;
                }
                Step::Recv(Wait::Idle)
            }
        }
    }
}
