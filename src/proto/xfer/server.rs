//! The server's side of one connection: frames in, replies and file bodies out, and
//! uploads through the file-writing contract (create invisible, receive, reserve,
//! fsync, link without replacing).

use super::frame::{
    self, Code, Entry, EntryKind, FrameError, Identity, Meta, Reply, Request, Status,
};
use super::{rel_path, Shared};
use crate::proto::{
    Chunk, FileKind, FileRef, FsDone, FsOp, Listing, Opened, Protocol, RecvFile, Step, TempFile,
    Wait,
};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

/// One connection of the file-transfer protocol.
pub struct XferServer {
    shared: Arc<Shared>,
    input: Vec<u8>,
    /// Replies built and not yet handed to the backend.
    out: Vec<Chunk>,
    state: State,
    /// After `out` is sent, close (a frame error, a broken body, a timeout, EOF).
    closing: bool,
    eof: bool,
    draining: bool,
}

enum State {
    /// Between requests: decode the next frame.
    Ready,
    /// This step goes out at the next poll; then the connection is in `then`.
    Ask(Box<Step>, Box<State>),
    Stat,
    List,
    Get {
        offset: u64,
        identity: Identity,
    },
    /// PUT: looking whether the name is taken.
    PutCheck(Put),
    PutCreate(Put),
    PutReserve(Put, TempFile),
    /// `want`: bytes of the connection still to come after the head.
    PutBody(Put, TempFile, u64),
    PutSync(Put, TempFile),
    PutLink(Put),
}

#[derive(Clone)]
struct Put {
    path: String,
    len: u64,
    replace: bool,
}

impl XferServer {
    pub(super) fn new(shared: Arc<Shared>) -> XferServer {
        XferServer {
            shared,
            input: Vec::new(),
            out: Vec::new(),
            state: State::Ready,
            closing: false,
            eof: false,
            draining: false,
        }
    }

    fn reply(&mut self, r: Reply) {
        self.out.push(Chunk::Mem(r.encode()));
    }

    fn error(&mut self, code: Code, message: impl Into<String>) {
        let message = message.into();
        self.reply(Reply::Error { code, message });
    }

    /// An upload that will not be committed: why, counted, and told to the client.
    fn abort(&mut self, code: Code, message: impl Into<String>) {
        self.shared.counters.aborted(code);
        self.error(code, message);
    }

    /// Decodes and starts the next request, if a whole one is in.
    fn next_request(&mut self) -> bool {
        let (h, n) = match frame::decode(&self.input, frame::MAX_REQUEST) {
            Ok(Status::Partial) => return false,
            Ok(Status::Complete(h, n)) => (h, n),
            Err(e) => {
                let code = match e {
                    FrameError::TooLarge(_) => Code::TooLarge,
                    _ => Code::BadRequest,
                };
                self.fatal(code, e.to_string());
                return false;
            }
        };
        let req = Request::decode(&h, &self.input[frame::HEADER_LEN..n]);
        self.input.drain(..n);
        let Some(req) = req else {
            let what = if h.kind().is_request() {
                "malformed"
            } else {
                "unexpected"
            };
            self.fatal(Code::BadRequest, format!("{what} {:?} frame", h.kind()));
            return false;
        };
        self.start(req);
        true
    }

    /// A frame error: the stream cannot be trusted any more.
    fn fatal(&mut self, code: Code, message: String) {
        self.error(code, message);
        self.input.clear();
        self.closing = true;
    }

    fn start(&mut self, req: Request) {
        let path = match &req {
            Request::Hello { lowest, highest } => {
                if *lowest > frame::VERSION || *highest < frame::VERSION {
                    let m = format!("this server speaks version {} only", frame::VERSION);
                    return self.fatal(Code::BadRequest, m);
                }
                let c = &self.shared.cfg;
                let version = frame::VERSION;
                let (uploads, replace, max_upload) =
                    (c.allow_upload, c.allow_replace, c.max_upload);
                return self.reply(Reply::Hello {
                    version,
                    uploads,
                    replace,
                    max_upload,
                });
            }
            Request::Stat { path }
            | Request::List { path }
            | Request::Get { path, .. }
            | Request::Put { path, .. } => path,
        };
        let rel = match rel_path(path) {
            Ok(rel) => rel,
            Err((code, m)) => return self.error(code, m),
        };
        let (step, state) = match req {
            Request::Hello { .. } => unreachable!(),
            Request::Stat { .. } => (FsOp::Open(rel), State::Stat),
            Request::List { .. } => (FsOp::ReadDir(rel), State::List),
            Request::Get {
                offset, identity, ..
            } => (FsOp::Open(rel), State::Get { offset, identity }),
            Request::Put { len, replace, .. } => {
                let c = &self.shared.cfg;
                if !c.allow_upload {
                    return self
                        .abort(Code::UploadsDisabled, "uploads are disabled on this server");
                }
                if len > c.max_upload {
                    let m = format!(
                        "{len} bytes is over the server's upload limit of {}",
                        c.max_upload
                    );
                    return self.abort(Code::TooLarge, m);
                }
                if replace && !c.allow_replace {
                    return self.abort(
                        Code::Forbidden,
                        "replacing files is not allowed on this server",
                    );
                }
                if rel.is_empty() {
                    return self.error(Code::BadRequest, "an upload needs a file name");
                }
                let put = Put {
                    path: rel.clone(),
                    len,
                    replace,
                };
                (FsOp::Open(rel), State::PutCheck(put))
            }
        };
        self.state = State::Ask(Box::new(Step::Fs(step)), Box::new(state));
    }

    fn opened(&mut self, state: State, r: io::Result<Opened>) -> State {
        match (state, r) {
            (State::Stat, Ok(o)) => {
                let meta = meta_of(&o);
                self.reply(Reply::Stat(meta));
                State::Ready
            }
            (State::Get { offset, identity }, Ok(o)) => self.get(o, offset, identity),
            (State::PutCheck(p), Ok(o)) => {
                if o.meta.kind != FileKind::File {
                    self.abort(Code::Forbidden, format!("{} is not a regular file", p.path));
                    State::Ready
                } else if !p.replace {
                    self.abort(Code::Exists, format!("{} exists", p.path));
                    State::Ready
                } else {
                    self.ask(FsOp::Create(p.path.clone()), State::PutCreate(p))
                }
            }
            (State::PutCheck(p), Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.ask(FsOp::Create(p.path.clone()), State::PutCreate(p))
            }
            (State::PutCheck(_), Err(e)) => {
                self.abort(Code::of_io(&e), io_text(&e));
                State::Ready
            }
            (_, Err(e)) => {
                self.error(Code::of_io(&e), io_text(&e));
                State::Ready
            }
            (s, Ok(_)) => s,
        }
    }

    fn get(&mut self, o: Opened, offset: u64, identity: Identity) -> State {
        let meta = meta_of(&o);
        if meta.kind != EntryKind::File {
            self.error(Code::Forbidden, "not a regular file");
        } else if !identity.is_any() && identity != meta.identity {
            self.error(Code::Changed, "the file changed since the download began");
        } else if offset > meta.len {
            self.error(
                Code::BadRequest,
                format!("offset {offset} is past the end ({})", meta.len),
            );
        } else {
            let len = meta.len - offset;
            self.reply(Reply::Data { meta, offset });
            if len > 0 {
                self.out.push(Chunk::File {
                    file: o.file,
                    offset,
                    len,
                });
            }
            self.shared.counters.downloads.fetch_add(1, Relaxed);
        }
        State::Ready
    }

    fn ask(&mut self, op: FsOp, then: State) -> State {
        State::Ask(Box::new(Step::Fs(op)), Box::new(then))
    }

    /// The body of `p` goes into `temp`: what is buffered first, then the socket.
    fn receive(&mut self, p: Put, temp: TempFile) -> State {
        let head_len = (p.len.min(self.input.len() as u64)) as usize;
        let head: Vec<u8> = self.input.drain(..head_len).collect();
        let want = p.len - head.len() as u64;
        if want == 0 && head.is_empty() {
            let file = temp.file_ref().clone();
            return self.ask(FsOp::Sync(file), State::PutSync(p, temp));
        }
        let sink = RecvFile {
            file: temp.file_ref().clone(),
            offset: 0,
            head,
            len: want,
        };
        State::Ask(
            Box::new(Step::RecvFile(sink)),
            Box::new(State::PutBody(p, temp, want)),
        )
    }
}

fn meta_of(o: &Opened) -> Meta {
    let m = &o.meta;
    let kind = match m.kind {
        FileKind::File => EntryKind::File,
        FileKind::Dir => EntryKind::Dir,
        FileKind::Other => EntryKind::Other,
    };
    Meta {
        kind,
        len: m.len,
        mtime_sec: m.mtime_sec,
        identity: Identity::of(m.ino, m.len, m.mtime_sec, m.mtime_nsec),
    }
}

impl Protocol for XferServer {
    fn handle_recv(&mut self, data: &[u8]) {
        if !self.closing {
            self.input.extend_from_slice(data);
        }
    }

    fn handle_eof(&mut self) {
        self.eof = true;
    }

    fn handle_timeout(&mut self) {
        if !self.input.is_empty() {
            self.error(Code::Timeout, "timed out waiting for the rest of a frame");
        }
        self.closing = true;
    }

    fn handle_drain(&mut self) {
        self.draining = true;
    }

    fn handle_fs(&mut self, done: FsDone) {
        let state = std::mem::replace(&mut self.state, State::Ready);
        self.state = match (state, done) {
            (s, FsDone::Opened(r)) => self.opened(s, r),
            (State::List, FsDone::Listed(Ok(Listing { entries, omitted }))) => {
                let max = self.shared.cfg.max_list;
                if entries.len() > max {
                    self.error(Code::TooLarge, format!("more than {max} entries"));
                } else if omitted > 0 {
                    // Cut at the backend's cap: refused, never sent as if whole.
                    let n = entries.len() as u64 + omitted;
                    self.error(
                        Code::TooLarge,
                        format!("{n} entries, more than the server lists"),
                    );
                } else {
                    let list = entries
                        .into_iter()
                        .map(|e| Entry {
                            name: e.name,
                            kind: match e.kind {
                                FileKind::File => EntryKind::File,
                                FileKind::Dir => EntryKind::Dir,
                                FileKind::Other => EntryKind::Other,
                            },
                            len: e.len,
                            mtime_sec: e.mtime_sec,
                        })
                        .collect();
                    self.reply(Reply::List(list));
                }
                State::Ready
            }
            (State::PutCreate(p), FsDone::Created(Ok(temp))) => {
                let file = temp.file_ref().clone();
                let len = p.len;
                self.ask(FsOp::Reserve { file, len }, State::PutReserve(p, temp))
            }
            (State::PutReserve(p, temp), FsDone::Reserved(Ok(()))) => {
                self.reply(Reply::Ready);
                self.receive(p, temp)
            }
            (State::PutSync(p, temp), FsDone::Synced(Ok(()))) => {
                let replace = p.replace;
                self.ask(FsOp::Link { temp, replace }, State::PutLink(p))
            }
            (State::PutLink(p), FsDone::Linked(Ok(()))) => {
                self.shared.counters.committed.fetch_add(1, Relaxed);
                self.reply(Reply::Done { len: p.len });
                State::Ready
            }
            (State::PutLink(p), FsDone::Linked(Err(e)))
                if e.raw_os_error() == Some(libc::EEXIST) =>
            {
                self.abort(Code::Exists, format!("{} exists", p.path));
                State::Ready
            }
            (
                State::PutCreate(_)
                | State::PutReserve(..)
                | State::PutSync(..)
                | State::PutLink(_),
                FsDone::Created(Err(e))
                | FsDone::Reserved(Err(e))
                | FsDone::Synced(Err(e))
                | FsDone::Linked(Err(e)),
            ) => {
                // Dropping the state drops the temporary file: nothing becomes visible.
                self.abort(Code::of_io(&e), io_text(&e));
                State::Ready
            }
            (_, FsDone::Listed(Err(e))) => {
                self.error(Code::of_io(&e), io_text(&e));
                State::Ready
            }
            (_, other) => {
                self.fatal(Code::Io, format!("internal: unexpected {other:?}"));
                State::Ready
            }
        };
    }

    fn handle_recv_file(&mut self, result: io::Result<u64>) {
        let state = std::mem::replace(&mut self.state, State::Ready);
        let State::PutBody(p, temp, want) = state else {
            self.state = state;
            return;
        };
        match result {
            Ok(n) if n == want => {
                let file: FileRef = temp.file_ref().clone();
                self.state = self.ask(FsOp::Sync(file), State::PutSync(p, temp));
            }
            Ok(n) => {
                // The peer closed mid-body. Nobody is left to tell; count it.
                let _ = n;
                self.shared
                    .counters
                    .aborted_interrupted
                    .fetch_add(1, Relaxed);
                self.closing = true;
            }
            Err(e) => {
                // The rest of the body is still on its way: the stream is lost.
                let code = Code::of_io(&e);
                let m = match code {
                    Code::Timeout => "no upload bytes arrived for the body timeout".to_string(),
                    _ => format!("writing the upload: {}", io_text(&e)),
                };
                self.abort(code, m);
                self.closing = true;
            }
        }
    }

    fn poll(&mut self, _now: SystemTime) -> Step {
        loop {
            if !self.out.is_empty() {
                return Step::Send(std::mem::take(&mut self.out));
            }
            match std::mem::replace(&mut self.state, State::Ready) {
                State::Ask(step, then) => {
                    self.state = *then;
                    return *step;
                }
                State::Ready => {}
                _ => {
                    // An operation is in flight, and the backend polled before it
                    // answered: a broken contract. End the connection (dropping the
                    // state abandons any temporary file) rather than guess.
                    debug_assert!(false, "polled with an operation in flight");
                    return Step::Close;
                }
            }
            if self.closing {
                return Step::Close;
            }
            if self.next_request() || !self.out.is_empty() || self.closing {
                continue;
            }
            if self.eof || (self.draining && self.input.is_empty()) {
                return Step::Close;
            }
            return Step::Recv(if self.input.is_empty() {
                Wait::Idle
            } else {
                Wait::Request
            });
        }
    }
}

/// An error as a client should read it: "no such file or directory", not
/// "No such file or directory (os error 2)".
fn io_text(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.rfind(" (os error ") {
        Some(i) => &s[..i],
        None => &s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}
