//! HTTP/1.1 static file serving (RFC 9110, RFC 9112), sans-IO.
//!
//! One [`Http1`] per connection. Requests are answered strictly in order. When
//! pipelined requests are already buffered, their responses are held and go to the
//! backend together, as one send (at most [`MAX_BATCH`] responses of
//! [`MAX_BATCH_BYTES`] in all, so only small ones): one trip through the kernel for a
//! burst instead of one per request. A large response goes alone: batching it gains
//! nothing, and would hold back a close or a drain for the responses behind it. The protocol is then not polled until all of it is in the kernel
//! (promise 2), and a burst that ends in a partial request, or a close, is sent first.
//!
//! Modules, in the order a request meets them: `reader` (buffering), `head` (request
//! line and fields), `body` (discarding bodies), `path` (target to file path), `cond`
//! and `range` (conditionals, ranges), `response` (what each answer carries), with
//! `status`, `mime`, `date`, `listing` and `log` as helpers.

mod body;
mod cond;
mod date;
mod digits;
mod encoding;
mod head;
mod listing;
mod log;
mod mime;
// Public for fuzz/ (fuzz_targets/path.rs): a pure function, no part of the API.
#[doc(hidden)]
pub mod path;
mod range;
mod reader;
mod response;
pub mod rules;
mod status;
#[cfg(test)]
mod tests;

use super::pool::{self, free_list, PBox, Pooled};
use super::{
    is_missing, Chunk, Fault, FileKind, FsDone, FsOp, LogLine, Opened, Protocol, ProtocolFactory,
    Step, Wait,
};
pub use encoding::Coding;
use head::{Method, Persist, Request};
use reader::Reader;
use response::Reply;
use status::Status;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Knobs of the HTTP protocol.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Serve an HTML listing for directories without index.html.
    pub listing: bool,
    /// Produce one access-log line per response.
    pub access_log: bool,
    /// Largest request-target accepted; longer gets 414.
    pub max_uri_bytes: usize,
    /// Largest header section (request line included); larger gets 431.
    pub max_header_bytes: usize,
    /// Largest request body read and discarded; larger gets 413 and close.
    pub max_body_discard: u64,
    /// Most field lines in one request head; more gets 431.
    pub max_header_fields: usize,
    /// Most ranges honoured in one Range header; more and the header is ignored.
    pub max_ranges: usize,
    /// Whether names starting with `.` are served and listed.
    pub dotfiles: Dotfiles,
    /// What a file's ETag is made of.
    pub etag: Etag,
    /// Precompressed sidecars served for compressible types (`--precompressed`), in
    /// the server's order of preference; empty: none looked for.
    pub precompressed: Vec<Coding>,
    /// `--fallback`: the file (a normalised path beneath the root) a GET or HEAD for a
    /// missing path gets with 200, when that path's last name has no extension or the
    /// request accepts text/html: a single-page app's index.html, as try_files does.
    pub fallback: Option<String>,
    /// `--page404`: the file (beneath the root) whose bytes are the body of every 404
    /// for a missing file.
    pub page404: Option<String>,
    /// `--header`, `--cache-control` and `--cors`, compiled (`rules.rs`).
    pub rules: rules::Rules,
}

/// What a file's strong ETag is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Etag {
    /// Modification time (ns) and size: what a copy (`cp -a`, rsync `-t`) keeps, so
    /// servers of replicated trees give one file one ETag.
    #[default]
    MtimeSize,
    /// Device and inode too: a file replaced by one with the same size and mtime still
    /// gets a new ETag, but only on this host.
    Inode,
}

/// What HTTP does with dotfiles: a path segment that starts with `.` (`.git`, `.env`,
/// `.htpasswd`). `/.well-known/` is always served (RFC 8615).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dotfiles {
    /// 404 for any path with such a segment, and left out of listings.
    #[default]
    Deny,
    /// Served and listed like any other name.
    Allow,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listing: false,
            access_log: false,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_body_discard: 1024 * 1024,
            max_header_fields: 100,
            max_ranges: 64,
            dotfiles: Dotfiles::Deny,
            etag: Etag::MtimeSize,
            precompressed: Vec::new(),
            fallback: None,
            page404: None,
            rules: rules::Rules::default(),
        }
    }
}

/// Most responses held for one send.
pub const MAX_BATCH: u32 = 16;
/// Most bytes (heads and bodies, from memory or files) of the responses held for one
/// send.
pub const MAX_BATCH_BYTES: u64 = 256 * 1024;

/// Responses held back for the send with the ones after them, in order.
#[derive(Debug, Default)]
struct Held {
    chunks: Vec<Chunk>,
    logs: Vec<LogLine>,
    faults: Vec<Fault>,
    count: u32,
    bytes: u64,
    /// Each held response's length, for the tests to split a send into responses.
    #[cfg(test)]
    lens: Vec<u64>,
}

impl Pooled for Held {
    free_list!(Held);
    fn dead() -> Held {
        Held::default()
    }
}

/// The log lines and faults of the send just returned by `poll`, last first: boxed on
/// first use and kept, so a connection with no access log pays one word.
#[derive(Debug, Default)]
struct Said {
    logs: Vec<LogLine>,
    faults: Vec<Fault>,
}

/// What to look for at a request's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// The path itself.
    Target,
    /// The path is a directory: its index.html.
    Index,
    /// The directory has no index.html: its entries.
    Listing,
    /// The path is missing: `--fallback`'s file, in `rel` now.
    Fallback,
    /// The path is missing: `--page404`'s file, in `rel` now, as the 404's body.
    Page404,
}

/// A request being served.
#[derive(Debug)]
struct Job {
    req: Request,
    /// The normalised path (see [`path::Target`]).
    rel: String,
    dir: bool,
    look: Look,
    /// The backend's answer to [`Job::step`], once it came (an open or a listing).
    answer: Option<FsDone>,
    /// The sidecars being tried for the file opened, which waits here meanwhile.
    side: Option<Sidecars>,
    /// Whether the request's Accept chose this response (a missing path with an
    /// extension, under `--fallback`): the response says `Vary: Accept`.
    vary_accept: bool,
}

/// A file's precompressed sidecars being tried in turn (`encoding.rs`).
#[derive(Debug)]
struct Sidecars {
    original: Opened,
    choice: encoding::Choice,
    /// The one being opened.
    tried: u8,
}

impl Pooled for Job {
    free_list!(Job);
    fn dead() -> Job {
        Job {
            req: Request::dead(),
            rel: String::new(),
            dir: false,
            look: Look::Target,
            answer: None,
            side: None,
            vary_accept: false,
        }
    }
    fn recycle(self) {
        self.req.recycle();
        pool::give_string(self.rel);
    }
}

impl Job {
    /// What to ask of the backend.
    fn step(&self) -> Step {
        let path = self.path();
        Step::Fs(match self.look {
            Look::Listing => FsOp::ReadDir(path),
            _ => FsOp::Open(path),
        })
    }

    /// The path beneath the root that the step opens or lists: the file's, or that of
    /// the sidecar being tried.
    fn path(&self) -> String {
        let mut path = match self.look {
            Look::Index if self.rel.is_empty() => "index.html".into(),
            Look::Index => format!("{}/index.html", self.rel),
            _ => pool::string_of(&self.rel),
        };
        if let Some(c) = self.side.as_ref().and_then(|s| s.choice.get(s.tried)) {
            path.push_str(c.suffix());
        }
        path
    }

    /// The name whose extension gives the Content-Type: the file's, never a sidecar's.
    fn type_path(&self) -> &str {
        match self.look {
            Look::Index => "index.html",
            _ => &self.rel,
        }
    }

    /// The path the header and cache rules match for this job's response: the file
    /// served (a directory's `DIR/index.html`, a fallback's or 404 page's path once it
    /// took the request's place), or for a listing or a directory's redirect the
    /// directory with its slash (`docs/`, which `docs/**` matches).
    fn rule_path(&self) -> String {
        match self.look {
            Look::Index if self.rel.is_empty() => "index.html".into(),
            Look::Index => format!("{}/index.html", self.rel),
            Look::Listing if !self.rel.is_empty() => format!("{}/", self.rel),
            _ => pool::string_of(&self.rel),
        }
    }

    /// The error log's account of the step failing with `e`.
    fn fault(&self, e: io::Error) -> Fault {
        let op = match self.look {
            Look::Listing => "opendir",
            _ => "open",
        };
        let r = &self.req;
        log::fault(op, &self.path(), e, (r.method.name(), &r.target, r.minor))
    }
}

/// Where the connection stands between calls.
#[derive(Debug)]
enum Stage {
    /// Between requests: answer the next one or receive.
    Read,
    /// Waiting for the backend to answer [`Job::step`]. Boxed, so a connection between
    /// requests (`Read`) carries no request-sized state: idle connections are cheap.
    Pending(PBox<Job>),
    /// The backend answered: the answer is in the job (a `Stage` stays two words).
    Answered(PBox<Job>),
    /// The last response asked for the connection to close.
    Closed,
}

/// One HTTP/1.1 connection.
#[derive(Debug)]
pub struct Http1 {
    cfg: Arc<HttpConfig>,
    /// The peer's address, for the access log (the port is not logged).
    ip: IpAddr,
    reader: Reader,
    stage: Stage,
    /// The peer is gone (EOF) or idle too long: close once nothing is left to answer.
    hang_up: bool,
    /// The server is shutting down: the next response is the last.
    draining: bool,
    responses: u64,
    /// The fault behind the response being built.
    fault: Option<Box<Fault>>,
    /// Pipelined responses waiting for the next one; boxed, so only a connection that
    /// pipelines pays for it.
    held: Option<Box<Held>>,
    /// The send just returned by `poll`: how many responses it carries, and their log
    /// lines and faults, last first (taken from the back).
    sent_count: u32,
    said: Option<Box<Said>>,
    /// The length of each response in the send just returned.
    #[cfg(test)]
    sent_lens: Vec<u64>,
}

impl Http1 {
    fn new(cfg: Arc<HttpConfig>, peer: SocketAddr) -> Self {
        Http1 {
            cfg,
            ip: peer.ip(),
            reader: Reader::new(),
            stage: Stage::Read,
            hang_up: false,
            draining: false,
            responses: 0,
            fault: None,
            held: None,
            sent_count: 0,
            said: None,
            #[cfg(test)]
            sent_lens: Vec::new(),
        }
    }

    /// Answers the next complete request, or says what to wait for.
    fn next_request(&mut self, now: SystemTime) -> Step {
        match self.reader.take(&self.cfg) {
            Some(Ok(req)) => self.start(now, req),
            Some(Err(rejected)) => {
                let reply = Reply::error(rejected.status);
                let log = rejected.log.as_deref();
                self.respond(now, reply, rejected.head, Persist::Close, log)
            }
            None if self.hang_up || (self.draining && !self.reader.is_partial()) => self.close(),
            None if self.responses == 0 || self.reader.is_partial() => Step::Recv(Wait::Request),
            None => Step::Recv(Wait::Idle),
        }
    }

    fn start(&mut self, now: SystemTime, req: Request) -> Step {
        let target = match req.method {
            Method::Unknown => return self.reply(now, &req, Reply::error(Status::NotImplemented)),
            // The server as a whole (RFC 9110 §9.3.7): what its resources allow.
            Method::Options if req.target == "*" => return self.reply(now, &req, Reply::options()),
            // A CORS preflight (`--cors`): 204 with what the origin may do.
            Method::Options if self.cfg.rules.cors.is_some() => {
                let c = &req.conditions;
                let headers = c.preflight.as_ref().and_then(|p| p.headers.as_deref());
                let method = c.preflight.as_ref().is_some_and(|p| p.method);
                let fields = self.cfg.rules.preflight(c.cors_origin, method, headers);
                let reply = match fields {
                    Some(fields) => Reply::preflight(fields),
                    None => Reply::error(Status::MethodNotAllowed),
                };
                return self.reply(now, &req, reply);
            }
            // No resource here allows anything but GET and HEAD, OPTIONS included.
            Method::NotAllowed | Method::Options => {
                return self.reply(now, &req, Reply::error(Status::MethodNotAllowed))
            }
            Method::Get | Method::Head => path::resolve(&req.target),
        };
        match target {
            None => self.reply(now, &req, Reply::error(Status::BadRequest)),
            // Not there as far as a client can tell: no hint that something is hidden.
            Some(t) => {
                let hidden = t.dotfile && self.cfg.dotfiles == Dotfiles::Deny;
                let job = PBox::new(Job {
                    req,
                    rel: t.rel,
                    dir: t.dir,
                    look: Look::Target,
                    answer: None,
                    side: None,
                    vary_accept: false,
                });
                if hidden {
                    // Missing as far as a client can tell, the same 404 page included.
                    return self.not_found(now, job);
                }
                self.pending(job)
            }
        }
    }

    fn pending(&mut self, job: PBox<Job>) -> Step {
        let step = job.step();
        self.stage = Stage::Pending(job);
        step
    }

    fn opened(&mut self, now: SystemTime, mut job: PBox<Job>, result: io::Result<Opened>) -> Step {
        if let Some(mut side) = job.side.take() {
            let coding = side.choice.get(side.tried);
            match result {
                // A sidecar older than its file is stale: the file changed since.
                Ok(s) if s.meta.kind == FileKind::File && !older(&s.meta, &side.original.meta) => {
                    return self.file(now, &job, s, coding);
                }
                // Missing, not a file, stale or failing: the next one, or the file.
                // The first three stay so until the file changes (a new handle): the
                // file's handle remembers, so the next request does not look again.
                r => {
                    let unusable = match &r {
                        Ok(_) => true,
                        Err(e) => is_missing(e),
                    };
                    if let (true, Some(c)) = (unusable, coding) {
                        side.original.file.note_absent(c.bit());
                    }
                    side.tried += 1;
                    if side.choice.get(side.tried).is_some() {
                        job.side = Some(side);
                        return self.pending(job);
                    }
                    return self.file(now, &job, side.original, None);
                }
            }
        }
        if job.look == Look::Page404 {
            let reply = match result {
                Ok(o) if o.meta.kind == FileKind::File => {
                    Reply::page(Status::NotFound, o, mime::content_type(&job.rel))
                }
                // Missing or no file itself: the built-in page.
                _ => Reply::error(Status::NotFound),
            };
            return self.answer(now, &job, reply);
        }
        let opened = match result {
            Ok(opened) => opened,
            Err(e) if job.look == Look::Index && is_missing(&e) => return self.list(now, job),
            Err(e) if job.look == Look::Target && is_missing(&e) => return self.missing(now, job),
            Err(e) if job.look == Look::Fallback && is_missing(&e) => {
                return self.not_found(now, job)
            }
            Err(e) => return self.failed(now, job, e),
        };
        match (job.look, opened.meta.kind) {
            // `/file.txt/` or `/file.txt/.`: a file is no directory (POSIX ENOTDIR).
            (Look::Target, FileKind::File) if job.dir => self.not_found(now, job),
            // A fallback that is not a file is no fallback.
            (Look::Fallback, kind) if kind != FileKind::File => self.not_found(now, job),
            (_, FileKind::File) => {
                if self.sidecars_apply(&job) {
                    let choice = job.req.conditions.accept.choose(&self.cfg.precompressed);
                    // Less those already found missing through this handle.
                    let choice = choice.without(opened.file.absent());
                    if choice.get(0).is_some() {
                        job.side = Some(Sidecars {
                            original: opened,
                            choice,
                            tried: 0,
                        });
                        return self.pending(job);
                    }
                }
                self.file(now, &job, opened, None)
            }
            (Look::Target, FileKind::Dir) if !job.dir => {
                let reply = Reply::redirect(&job.rel, &job.req.target);
                self.answer(now, &job, reply)
            }
            (Look::Target, FileKind::Dir) => {
                job.look = Look::Index;
                self.pending(job)
            }
            // An index.html that is not a regular file counts as missing.
            (Look::Index, _) => self.list(now, job),
            _ => self.answer(now, &job, Reply::error(Status::Forbidden)),
        }
    }

    /// A GET or HEAD for a path that is not there: `--fallback`'s file where the path
    /// looks like a page (no extension in its last name, or text/html accepted), or the
    /// 404.
    fn missing(&mut self, now: SystemTime, mut job: PBox<Job>) -> Step {
        if let Some(fallback) = &self.cfg.fallback {
            let ext = job.rel.rsplit('/').next().unwrap_or_default().contains('.');
            // With an extension, Accept decides: the answer varies with it.
            job.vary_accept = ext;
            if !ext || job.req.conditions.accepts_html {
                job.rel.clear();
                job.rel.push_str(fallback);
                (job.dir, job.look) = (false, Look::Fallback);
                return self.pending(job);
            }
        }
        self.not_found(now, job)
    }

    /// A 404: with `--page404`'s file as its body, or the built-in page.
    fn not_found(&mut self, now: SystemTime, mut job: PBox<Job>) -> Step {
        if let Some(page) = &self.cfg.page404 {
            job.rel.clear();
            job.rel.push_str(page);
            (job.dir, job.look, job.side) = (false, Look::Page404, None);
            return self.pending(job);
        }
        self.answer(now, &job, Reply::error(Status::NotFound))
    }

    /// Whether this file may have sidecars: `--precompressed` is on, its type is one
    /// that compresses, and it is no compressed file itself.
    fn sidecars_apply(&self, job: &Job) -> bool {
        !self.cfg.precompressed.is_empty() && precompressible(job.type_path())
    }

    /// A regular file's response: the file, or its sidecar in `coding`. Where sidecars
    /// apply, the response says it varies with Accept-Encoding, whichever was sent.
    fn file(&mut self, now: SystemTime, job: &Job, opened: Opened, coding: Option<Coding>) -> Step {
        let seed = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ self.responses;
        let coded = response::Coded {
            coding,
            vary: self.sidecars_apply(job),
        };
        let reply = Reply::file(
            opened,
            mime::content_type(job.type_path()),
            &job.req.conditions,
            &self.cfg,
            date::secs(now),
            seed,
            coded,
        );
        self.answer(now, job, reply)
    }

    fn list(&mut self, now: SystemTime, mut job: PBox<Job>) -> Step {
        if !self.cfg.listing {
            return self.answer(now, &job, Reply::error(Status::Forbidden));
        }
        job.look = Look::Listing;
        self.pending(job)
    }

    /// The answer to a failed open or listing; a failure that is not simply "not
    /// there" (a 403, a 500, a 503) is kept for the error log.
    fn failed(&mut self, now: SystemTime, job: PBox<Job>, e: io::Error) -> Step {
        let reply = Reply::open_error(&e);
        if reply.status == Status::NotFound {
            // A name too long or not spellable here: missing, with the same 404 page.
            reply.recycle();
            return self.not_found(now, job);
        }
        self.fault = Some(Box::new(job.fault(e)));
        self.answer(now, &job, reply)
    }

    /// The response to a request that names no file (or not yet): only the rules
    /// without a glob apply.
    fn reply(&mut self, now: SystemTime, req: &Request, reply: Reply) -> Step {
        self.reply_for(now, req, None, reply)
    }

    /// The response to a request for a path: the rules for `job`'s file apply (the one
    /// served: a fallback's or a 404 page's path once it took the request's place).
    fn answer(&mut self, now: SystemTime, job: &Job, mut reply: Reply) -> Step {
        if job.vary_accept {
            reply.fields.push_str("Vary: Accept\r\n");
        }
        if self.cfg.rules.is_empty() {
            return self.reply_for(now, &job.req, None, reply);
        }
        let mut rel = job.rule_path();
        if reply.status == Status::MovedPermanently && !rel.is_empty() {
            rel.push('/');
        }
        let step = self.reply_for(now, &job.req, Some(&rel), reply);
        pool::give_string(rel);
        step
    }

    fn reply_for(
        &mut self,
        now: SystemTime,
        req: &Request,
        rel: Option<&str>,
        mut reply: Reply,
    ) -> Step {
        if !self.cfg.rules.is_empty() {
            let origin = req.conditions.cors_origin;
            // Room for the rules' lines at once, not a reallocation per line.
            reply.fields.reserve(512);
            let success = matches!(
                reply.status,
                Status::Ok | Status::PartialContent | Status::NoContent | Status::NotModified
            );
            self.cfg
                .rules
                .apply(&mut reply.fields, rel, origin, success);
        }
        self.respond(
            now,
            reply,
            req.method == Method::Head,
            req.persist,
            req.log.as_deref(),
        )
    }

    /// Frames `reply` and hands it over as one send.
    fn respond(
        &mut self,
        now: SystemTime,
        mut reply: Reply,
        head: bool,
        persist: Persist,
        log: Option<&log::LogFields>,
    ) -> Step {
        let close = persist == Persist::Close || self.draining || self.hang_up;
        let date = date::http_date(now);
        let date = date.as_str();
        let len = reply
            .body
            .iter()
            .fold(0u64, |n, c| n.saturating_add(c.len()));
        let mut out = pool::string();
        out.reserve(reply.fields.len() + 160);
        out.push_str(reply.status.line());
        out.push_str("Server: ringserve\r\nDate: ");
        out.push_str(date);
        out.push_str("\r\n");
        out.push_str(&reply.fields);
        // None on a 304 (RFC 9110 §8.6 allows it) or a 204 (§8.6 forbids it).
        if !matches!(reply.status, Status::NotModified | Status::NoContent) {
            out.push_str("Content-Length: ");
            digits::dec(&mut out, len);
            out.push_str("\r\n");
        }
        out.push_str(match (close, persist) {
            (true, _) => "Connection: close\r\n",
            (false, Persist::EchoKeepAlive) => "Connection: keep-alive\r\n",
            (false, _) => "",
        });
        out.push_str("\r\n");
        let line = self.cfg.access_log.then(|| {
            let body = if head { 0 } else { len };
            let (ip, status) = (self.ip, reply.status);
            log::line(ip, date, log, status, out.len() as u64, body)
        });
        let fault = self.fault.take().map(|f| *f);
        let whole = out.len() as u64 + if head { 0 } else { len };
        self.responses += 1;
        if close {
            self.reader.stop();
            self.stage = Stage::Closed;
        }
        // Another request is already here: hold this response for the same send.
        let held = self.held.as_ref().map_or((0, 0), |h| (h.count, h.bytes));
        if !close
            && self.reader.is_ready()
            && held.0 + 1 < MAX_BATCH
            && held.1 + whole <= MAX_BATCH_BYTES
        {
            let h = self
                .held
                .get_or_insert_with(|| pool::boxed(Held::default()));
            if h.chunks.capacity() == 0 {
                h.chunks = pool::chunks();
            }
            h.chunks.push(Chunk::Mem(out.into_bytes()));
            if !head {
                h.chunks
                    .extend(reply.body.drain(..).filter(|c| !c.is_empty()));
            }
            reply.recycle();
            h.logs.extend(line);
            h.faults.extend(fault);
            h.count += 1;
            h.bytes += whole;
            #[cfg(test)]
            h.lens.push(whole);
            return self.next_request(now);
        }
        let mut chunks = Vec::new();
        let mut count = 1;
        #[cfg(test)]
        self.sent_lens.clear();
        if let Some(h) = self.held.take() {
            let h = pool::unbox(h);
            chunks = h.chunks;
            count += h.count;
            self.note(h.logs, h.faults);
            #[cfg(test)]
            self.sent_lens.extend(h.lens);
        }
        #[cfg(test)]
        self.sent_lens.push(whole);
        if chunks.capacity() == 0 {
            chunks = pool::chunks();
        }
        chunks.push(Chunk::Mem(out.into_bytes()));
        if !head {
            chunks.extend(reply.body.drain(..).filter(|c| !c.is_empty()));
        }
        reply.recycle();
        self.note(line, fault);
        self.sent(count, chunks)
    }

    /// Adds log lines and faults of the send being built, in order. Nothing to add
    /// allocates nothing: without an access log and faults a connection never boxes a
    /// [`Said`].
    fn note(
        &mut self,
        logs: impl IntoIterator<Item = LogLine>,
        faults: impl IntoIterator<Item = Fault>,
    ) {
        let mut logs = logs.into_iter().peekable();
        let mut faults = faults.into_iter().peekable();
        if logs.peek().is_none() && faults.peek().is_none() {
            return;
        }
        let s = self.said.get_or_insert_with(Box::default);
        s.logs.extend(logs);
        s.faults.extend(faults);
    }

    /// Hands over `chunks`, the `count` responses whose lines and faults are in
    /// [`Said`] (in order; reversed here to be taken from the back).
    fn sent(&mut self, count: u32, chunks: Vec<Chunk>) -> Step {
        if let Some(s) = &mut self.said {
            s.logs.reverse();
            s.faults.reverse();
        }
        self.sent_count = count;
        Step::Send(chunks)
    }

    /// Held responses go out before a wait or a close.
    fn flush(&mut self, step: Step) -> Step {
        match (&step, self.held.take()) {
            (Step::Recv(_) | Step::Close, Some(h)) => {
                let h = pool::unbox(h);
                self.note(h.logs, h.faults);
                #[cfg(test)]
                {
                    self.sent_lens = h.lens;
                }
                // The wait or close is asked again once the send is done.
                self.sent(h.count, h.chunks)
            }
            (_, held) => {
                self.held = held;
                step
            }
        }
    }

    fn close(&mut self) -> Step {
        self.reader.stop();
        self.stage = Stage::Closed;
        Step::Close
    }
}

/// A file named on the command line (`--fallback`, `--page404`) as the normalised path
/// beneath the root that a request for `/PATH` would open; an error for one that no
/// request could name, or a directory.
pub fn served_path(path: &str) -> Result<String, String> {
    let t = path::resolve(&format!("/{}", path.trim_start_matches('/')))
        .ok_or_else(|| format!("{path:?} is not a path beneath the root"))?;
    if t.dir || t.rel.is_empty() {
        return Err(format!("{path:?} names a directory, not a file"));
    }
    Ok(t.rel)
}

/// Whether the file at `path` is of a type `--precompressed` serves sidecars for (text,
/// JSON, JavaScript, SVG, WebAssembly, fonts), by its extension: what `ringserve
/// compress` writes sidecars for.
pub fn precompressible(path: &str) -> bool {
    mime::compressible(mime::content_type(path))
}

/// `1023 B`, `1.0 KiB`, `12.3 MiB`, as listings show sizes.
pub fn human_size(n: u64) -> String {
    let mut s = String::new();
    listing::human_size(&mut s, n);
    s
}

/// Whether `a` was modified before `b`.
fn older(a: &super::FileMeta, b: &super::FileMeta) -> bool {
    (a.mtime_sec, a.mtime_nsec) < (b.mtime_sec, b.mtime_nsec)
}

impl Protocol for Http1 {
    fn handle_recv(&mut self, data: &[u8]) {
        self.reader.recv(data, &self.cfg);
    }

    /// Partial request bytes are dropped; a request already complete is still answered.
    fn handle_eof(&mut self) {
        self.hang_up = true;
    }

    /// A partial request gets 408; an idle connection is closed without a word.
    fn handle_timeout(&mut self) {
        if !self.reader.time_out() {
            self.hang_up = true;
        }
    }

    /// Ignored unless it answers what was asked: an open, or a listing.
    fn handle_fs(&mut self, done: FsDone) {
        self.stage = match (std::mem::replace(&mut self.stage, Stage::Read), done) {
            (Stage::Pending(mut job), done @ FsDone::Opened(_)) if job.look != Look::Listing => {
                job.answer = Some(done);
                Stage::Answered(job)
            }
            (Stage::Pending(mut job), done @ FsDone::Listed(_)) if job.look == Look::Listing => {
                job.answer = Some(done);
                Stage::Answered(job)
            }
            (other, _) => other,
        };
    }

    fn handle_drain(&mut self) {
        self.draining = true;
    }

    fn poll(&mut self, now: SystemTime) -> Step {
        // Whatever the driver took of the last send's lines and faults, it is done.
        if let Some(s) = &mut self.said {
            s.logs.clear();
            s.faults.clear();
        }
        let step = match std::mem::replace(&mut self.stage, Stage::Read) {
            Stage::Read => self.next_request(now),
            // Asked again before the answer came: ask again.
            Stage::Pending(job) => self.pending(job),
            Stage::Answered(mut job) => match job.answer.take() {
                Some(FsDone::Opened(result)) => self.opened(now, job, result),
                Some(FsDone::Listed(Ok(listing))) => {
                    let json = job.req.conditions.accepts_json;
                    let view = listing::View::from_query(&job.req.target, json);
                    let reply = Reply::listing(&job.rel, listing, self.cfg.dotfiles, view);
                    self.answer(now, &job, reply)
                }
                Some(FsDone::Listed(Err(e))) => self.failed(now, job, e),
                // handle_fs answers only an open or a listing.
                _ => self.pending(job),
            },
            Stage::Closed => self.close(),
        };
        self.flush(step)
    }

    fn take_log_line(&mut self) -> Option<LogLine> {
        self.said.as_mut()?.logs.pop()
    }

    fn take_fault(&mut self) -> Option<Fault> {
        self.said.as_mut()?.faults.pop()
    }

    fn sent_responses(&self) -> u32 {
        self.sent_count
    }
}

/// Makes [`Http1`] connections that share one config.
#[derive(Debug, Clone, Default)]
pub struct HttpFactory {
    cfg: Arc<HttpConfig>,
}

impl HttpFactory {
    pub fn new(cfg: HttpConfig) -> Self {
        HttpFactory { cfg: Arc::new(cfg) }
    }
}

/// Sent, without reading the request, to a connection refused at the connection limit.
const OVERLOAD: &str = concat!(
    "HTTP/1.1 503 Service Unavailable\r\nServer: ringserve\r\n",
    "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n",
    "Retry-After: 1\r\nConnection: close\r\n\r\n",
    "Server overloaded.\r\n"
);

impl ProtocolFactory for HttpFactory {
    type Proto = Http1;
    fn new_conn(&self, peer: SocketAddr) -> Http1 {
        Http1::new(self.cfg.clone(), peer)
    }
    fn overload_response(&self) -> Option<&'static [u8]> {
        Some(OVERLOAD.as_bytes())
    }
}
