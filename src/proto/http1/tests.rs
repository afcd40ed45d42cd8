//! Whole exchanges, driven against an in-memory backend that opens real temp files.

use super::*;
use crate::proto::{DirEntry, FileMeta, FileRef, Listing};
use proptest::prelude::*;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Mon, 21 Sep 2026 14:13:20 GMT, fixed so that output is reproducible.
const NOW_SECS: u64 = 1_790_000_000;
/// Tue, 14 Nov 2023 22:13:20 GMT.
const MTIME: i64 = 1_700_000_000;
const MTIME_HTTP: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn peer() -> SocketAddr {
    "192.0.2.7:4242".parse().unwrap()
}

/// Bytes that differ from position to position, so a wrong offset shows.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

enum Node {
    File(PathBuf, FileMeta),
    Dir(Vec<DirEntry>),
    Other,
    Fail(i32),
}

/// The backend's view of the served tree: paths to temp files, directories, special
/// files and open errors (as raw OS errors).
pub struct Fs {
    dir: PathBuf,
    nodes: HashMap<String, Node>,
    /// Directories that open but fail to list, with the errno.
    unlistable: HashMap<String, i32>,
    next_ino: u64,
}

impl Fs {
    pub fn new() -> Fs {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ringserve-http1-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = HashMap::new();
        nodes.insert(String::new(), Node::Dir(Vec::new()));
        Fs {
            dir,
            nodes,
            unlistable: HashMap::new(),
            next_ino: 100,
        }
    }

    fn meta(&mut self, kind: FileKind, len: u64) -> FileMeta {
        self.next_ino += 1;
        FileMeta {
            kind,
            len,
            mtime_sec: MTIME,
            mtime_nsec: 5,
            dev: 0x801,
            ino: self.next_ino,
        }
    }

    pub fn file(mut self, rel: &str, bytes: &[u8]) -> Fs {
        let path = self.dir.join(format!("f{}", self.next_ino));
        std::fs::write(&path, bytes).unwrap();
        let meta = self.meta(FileKind::File, bytes.len() as u64);
        self.nodes.insert(rel.into(), Node::File(path, meta));
        self
    }

    /// Gives the file at `rel` another modification time.
    pub fn mtime(mut self, rel: &str, secs: i64) -> Fs {
        if let Some(Node::File(_, meta)) = self.nodes.get_mut(rel) {
            meta.mtime_sec = secs;
        }
        self
    }

    /// A sparse file: large without using disk.
    pub fn sparse(mut self, rel: &str, len: u64) -> Fs {
        let path = self.dir.join(format!("f{}", self.next_ino));
        File::create(&path).unwrap().set_len(len).unwrap();
        let meta = self.meta(FileKind::File, len);
        self.nodes.insert(rel.into(), Node::File(path, meta));
        self
    }

    pub fn dir(mut self, rel: &str, entries: Vec<DirEntry>) -> Fs {
        self.nodes.insert(rel.into(), Node::Dir(entries));
        self
    }

    pub fn other(mut self, rel: &str) -> Fs {
        self.nodes.insert(rel.into(), Node::Other);
        self
    }

    pub fn fail_listing(mut self, rel: &str, errno: i32) -> Fs {
        self.unlistable.insert(rel.into(), errno);
        self
    }

    pub fn fail(mut self, rel: &str, errno: i32) -> Fs {
        self.nodes.insert(rel.into(), Node::Fail(errno));
        self
    }

    fn open(&mut self, rel: &str) -> io::Result<Opened> {
        let kind_meta = |s: &mut Fs, kind| s.meta(kind, 4096);
        match self.nodes.get(rel) {
            None => Err(io::ErrorKind::NotFound.into()),
            Some(Node::Fail(errno)) => Err(io::Error::from_raw_os_error(*errno)),
            Some(Node::File(path, meta)) => Ok(Opened {
                file: FileRef::new(File::open(path)?),
                meta: *meta,
            }),
            Some(Node::Dir(_)) => Ok(Opened {
                file: FileRef::new(File::open(&self.dir)?),
                meta: kind_meta(self, FileKind::Dir),
            }),
            Some(Node::Other) => Ok(Opened {
                file: FileRef::new(File::open(&self.dir)?),
                meta: kind_meta(self, FileKind::Other),
            }),
        }
    }

    fn read_dir(&self, rel: &str) -> io::Result<Listing> {
        if let Some(errno) = self.unlistable.get(rel) {
            return Err(io::Error::from_raw_os_error(*errno));
        }
        match self.nodes.get(rel) {
            Some(Node::Dir(entries)) => Ok(Listing {
                entries: entries.clone(),
                omitted: 0,
            }),
            Some(Node::Fail(errno)) => Err(io::Error::from_raw_os_error(*errno)),
            _ => Err(io::ErrorKind::NotFound.into()),
        }
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a connection did.
#[derive(Debug, Default, PartialEq)]
pub struct Transcript {
    /// One entry per response, with file slices read in (a `Step::Send` of a
    /// pipelined burst is split into its responses).
    pub sends: Vec<Vec<u8>>,
    /// How many responses each `Step::Send` carried.
    pub batches: Vec<u32>,
    pub logs: Vec<String>,
    /// Each response's fault for the error log: operation, path, errno, request.
    pub faults: Vec<(&'static str, String, Option<i32>, String)>,
    pub opens: Vec<String>,
    /// The last wait asked for, or `None` once closed.
    pub wait: Option<Wait>,
}

impl Transcript {
    pub fn closed(&self) -> bool {
        self.wait.is_none()
    }

    pub fn resp(&self, i: usize) -> Resp {
        Resp::parse(&self.sends[i])
    }

    pub fn only(&self) -> Resp {
        assert_eq!(
            self.sends.len(),
            1,
            "{:?}",
            self.sends
                .iter()
                .map(|s| String::from_utf8_lossy(s))
                .collect::<Vec<_>>()
        );
        self.resp(0)
    }
}

/// A connection under test with its backend.
pub struct Driver {
    pub p: Http1,
    pub fs: Fs,
    pub t: Transcript,
}

impl Driver {
    pub fn new(cfg: HttpConfig, fs: Fs) -> Driver {
        let p = HttpFactory::new(cfg).new_conn(peer());
        let mut d = Driver {
            p,
            fs,
            t: Transcript::default(),
        };
        d.run();
        d
    }

    /// Polls until the protocol wants input or closes.
    pub fn run(&mut self) {
        loop {
            match self.p.poll(now()) {
                Step::Send(chunks) => {
                    let bytes = flatten(chunks);
                    let lens = self.p.sent_lens.clone();
                    assert_eq!(lens.len() as u32, self.p.sent_responses());
                    assert_eq!(
                        lens.iter().sum::<u64>(),
                        bytes.len() as u64,
                        "the responses make up the send"
                    );
                    self.t.batches.push(self.p.sent_responses());
                    let mut at = 0;
                    for len in lens {
                        let end = at + len as usize;
                        self.t.sends.push(bytes[at..end].to_vec());
                        // Each line completed with its own response's bytes.
                        if let Some(l) = self.p.take_log_line() {
                            self.t.logs.push(l.finish(len));
                        }
                        at = end;
                    }
                    assert!(
                        self.p.take_log_line().is_none(),
                        "one line per response at most"
                    );
                    while let Some(f) = self.p.take_fault() {
                        self.t
                            .faults
                            .push((f.op, f.path, f.error.raw_os_error(), f.request));
                    }
                }
                Step::Fs(FsOp::Open(path)) => {
                    let r = self.fs.open(&path);
                    self.t.opens.push(path);
                    self.p.handle_fs(FsDone::Opened(r));
                }
                Step::Fs(FsOp::ReadDir(path)) => {
                    let r = self.fs.read_dir(&path);
                    self.p.handle_fs(FsDone::Listed(r));
                }
                Step::Fs(op) => panic!("HTTP asked for {op:?}"),
                Step::RecvFile(r) => panic!("HTTP asked to receive into a file: {r:?}"),
                Step::Recv(w) => {
                    self.t.wait = Some(w);
                    return;
                }
                Step::Close => {
                    self.t.wait = None;
                    return;
                }
            }
        }
    }

    /// Feeds bytes (if the connection still reads) and runs.
    pub fn recv(&mut self, data: &[u8]) -> &mut Self {
        if !self.t.closed() {
            self.p.handle_recv(data);
            self.run();
        }
        self
    }
}

/// A backend's send: every chunk's bytes, in order.
fn flatten(chunks: Vec<Chunk>) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        match c {
            Chunk::Mem(v) => out.extend_from_slice(&v),
            Chunk::Static(s) => out.extend_from_slice(s),
            Chunk::File { file, offset, len } => {
                let mut buf = vec![0; len as usize];
                file.file().read_exact_at(&mut buf, offset).unwrap();
                out.extend_from_slice(&buf);
            }
        }
    }
    out
}

/// One response, split up.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    fn parse(bytes: &[u8]) -> Resp {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("complete head")
            + 4;
        let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| l.split_once(": ").unwrap())
            .map(|(n, v)| (n.into(), v.into()))
            .collect();
        Resp {
            status,
            head,
            headers,
            body: bytes[end..].to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let v = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "{name} repeated");
        v
    }

    /// Checks the fields every response carries, and that Content-Length is the body's.
    fn check(&self, head_request: bool) {
        assert_eq!(self.header("server"), Some("ringserve"));
        assert_eq!(self.header("date"), Some(date::format(NOW_SECS).as_str()));
        if self.status == 304 || self.status == 204 {
            assert_eq!(self.header("content-length"), None);
            assert!(self.body.is_empty());
        } else if head_request {
            assert!(self.body.is_empty());
        } else {
            assert_eq!(
                self.header("content-length"),
                Some(self.body.len().to_string().as_str()),
                "{}",
                self.head
            );
        }
    }
}

fn fs() -> Fs {
    Fs::new()
        .file("a.txt", &content(100))
        .file("empty.txt", b"")
        .file("d/index.html", b"<p>index</p>")
        .dir("d", Vec::new())
        .dir(
            "bare",
            vec![DirEntry {
                name: b"x y.bin".to_vec(),
                kind: FileKind::File,
                len: 3,
                mtime_sec: MTIME,
            }],
        )
}

/// Sends `raw` in one piece on a fresh connection with `cfg`.
fn exchange_with(cfg: HttpConfig, fs: Fs, raw: &[u8]) -> Transcript {
    let mut d = Driver::new(cfg, fs);
    d.recv(raw);
    d.t
}

fn exchange(raw: &str) -> Transcript {
    exchange_with(HttpConfig::default(), fs(), raw.as_bytes())
}

/// A GET for `path` with extra header lines.
fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n")
}

fn one(raw: &str) -> Resp {
    let t = exchange(raw);
    let r = t.only();
    r.check(raw.starts_with("HEAD"));
    r
}

fn etag_of(path: &str) -> String {
    one(&get(path, "")).header("etag").unwrap().to_owned()
}

// ---- basics ----------------------------------------------------------------------

#[test]
fn get_serves_file_with_validators() {
    let r = one(&get("/a.txt", ""));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, content(100));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("last-modified"), Some(MTIME_HTTP));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("connection"), None);
    // mtime (seconds, then 8 digits of nanoseconds) and size, in hex: no inode.
    assert_eq!(r.header("etag"), Some("\"6553f10000000005-64\""));
}

#[test]
fn inode_etags_on_request() {
    let t = exchange_with(
        HttpConfig {
            etag: Etag::Inode,
            ..HttpConfig::default()
        },
        fs(),
        get("/a.txt", "").as_bytes(),
    );
    let etag = t.only().header("etag").unwrap().to_owned();
    assert!(
        etag.starts_with("\"801-") && etag.ends_with("-6553f10000000005-64\""),
        "{etag}"
    );
}

#[test]
fn a_future_mtime_is_last_modified_now_and_keeps_its_etag() {
    let future = NOW_SECS as i64 + 3600;
    let t = exchange_with(
        HttpConfig::default(),
        Fs::new().file("f", b"x").mtime("f", future),
        get("/f", "").as_bytes(),
    );
    let r = t.only();
    assert_eq!(r.header("last-modified"), r.header("date"));
    assert_eq!(
        r.header("last-modified"),
        Some(date::format(NOW_SECS).as_str())
    );
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{future:x}00000005-1\"").as_str())
    );
    // Validated against the clamped time, as the client was told.
    let lm = date::format(NOW_SECS);
    let t = exchange_with(
        HttpConfig::default(),
        Fs::new().file("f", b"x").mtime("f", future),
        get("/f", &format!("If-Modified-Since: {lm}\r\n")).as_bytes(),
    );
    assert_eq!(t.only().status, 304);
}

#[test]
fn get_body_is_a_shared_file_slice() {
    let mut d = Driver::new(HttpConfig::default(), fs());
    d.p.handle_recv(get("/a.txt", "").as_bytes());
    let Step::Fs(FsOp::Open(path)) = d.p.poll(now()) else {
        panic!()
    };
    d.p.handle_fs(FsDone::Opened(d.fs.open(&path)));
    match d.p.poll(now()) {
        Step::Send(chunks) => assert!(matches!(
            &chunks[..],
            [
                Chunk::Mem(_),
                Chunk::File {
                    offset: 0,
                    len: 100,
                    ..
                }
            ]
        )),
        s => panic!("{s:?}"),
    }
}

#[test]
fn head_has_get_headers_without_body() {
    for path in ["/a.txt", "/missing", "/d/"] {
        let g = one(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        let h = one(&format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(g.head, h.head, "{path}");
        assert!(h.body.is_empty());
    }
    let t = exchange("HEAD /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(t.sends[0].len(), t.only().head.len());
}

#[test]
fn other_methods_get_405_and_keep_the_connection() {
    let t = exchange(&format!(
        "POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc{}",
        get("/a.txt", "")
    ));
    let r = t.resp(0);
    r.check(false);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(t.resp(1).status, 200);
    assert_eq!(t.wait, Some(Wait::Idle));
}

#[test]
fn known_methods_get_405_unknown_ones_501_and_options_star_200() {
    for m in [
        "POST", "PUT", "DELETE", "PATCH", "TRACE", "OPTIONS", "PROPFIND",
    ] {
        let t = exchange(&format!("{m} /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"));
        let r = t.only();
        assert_eq!(
            (r.status, r.header("allow")),
            (405, Some("GET, HEAD")),
            "{m}"
        );
        assert_eq!(t.wait, Some(Wait::Idle), "{m}");
    }
    for m in ["BREW", "get", "Head", "FOO"] {
        let t = exchange(&format!("{m} /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"));
        let r = t.only();
        r.check(false);
        assert_eq!((r.status, r.header("allow")), (501, None), "{m}");
        assert_eq!(t.wait, Some(Wait::Idle), "{m}");
    }
    let t = exchange("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = t.only();
    r.check(false);
    assert_eq!((r.status, r.header("allow")), (200, Some("GET, HEAD")));
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(t.opens.is_empty());
    assert_eq!(one("GET * HTTP/1.1\r\nHost: x\r\n\r\n").status, 400);
}

#[test]
fn transfer_codings_it_cannot_undo_are_501() {
    for te in ["gzip, chunked", "x-custom, chunked", "deflate,chunked"] {
        let raw =
            format!("GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
        let t = exchange(&raw);
        assert_eq!(t.only().status, 501, "{te}");
        assert!(t.closed(), "{te}");
    }
    // Without chunked last the body's length cannot be known: 400 (RFC 9112 §6.3).
    for te in ["gzip", "chunked, gzip", "chunked, chunked"] {
        let raw = format!("GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(exchange(&raw).only().status, 400, "{te}");
    }
}

#[test]
fn the_header_field_limit_is_a_knob() {
    let head = |n: usize| {
        let fields: String = (0..n).map(|i| format!("X-{i}: v\r\n")).collect();
        format!("GET /a.txt HTTP/1.1\r\nHost: x\r\n{fields}\r\n")
    };
    // Host plus 99 is the default's 100.
    assert_eq!(one(&head(99)).status, 200);
    assert_eq!(exchange(&head(100)).only().status, 431);
    for (max, ok, over) in [(5, 4, 5), (300, 299, 300)] {
        let cfg = HttpConfig {
            max_header_fields: max,
            ..HttpConfig::default()
        };
        let status = |n| {
            exchange_with(cfg.clone(), fs(), head(n).as_bytes())
                .only()
                .status
        };
        assert_eq!((status(ok), status(over)), (200, 431), "{max}");
    }
}

#[test]
fn http10_closes_unless_keep_alive() {
    let t = exchange("GET /a.txt HTTP/1.0\r\n\r\n");
    assert_eq!(t.only().header("connection"), Some("close"));
    assert!(t.closed());
    let t = exchange("GET /a.txt HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert_eq!(t.only().header("connection"), Some("keep-alive"));
    assert_eq!(t.wait, Some(Wait::Idle));
}

#[test]
fn other_versions() {
    for (line, status) in [
        ("GET / HTTP/2.0", 505),
        ("GET / HTTP/0.9", 505),
        ("GET / HTTP/3.1", 505),
        ("GET / HTTX/1.1", 400),
        ("GET /", 400),
        ("GET / HTTP/1.1x", 400),
    ] {
        let t = exchange(&format!("{line}\r\nHost: x\r\n\r\n"));
        assert_eq!(t.only().status, status, "{line}");
        assert_eq!(t.only().header("connection"), Some("close"));
        assert!(t.closed());
    }
}

#[test]
fn later_http1_minor_versions_are_read_as_1_1() {
    for v in ["1.2", "1.9"] {
        let t = exchange(&format!(
            "GET /a.txt HTTP/{v}\r\nHost: x\r\n\r\n{}",
            get("/a.txt", "")
        ));
        assert_eq!((t.resp(0).status, t.resp(0).body.len()), (200, 100), "{v}");
        assert_eq!(
            t.resp(0).header("connection"),
            None,
            "{v}: kept alive as 1.1"
        );
        assert_eq!(t.resp(1).status, 200, "{v}: the next request follows");
        // 1.1 rules: Host is required.
        let t = exchange(&format!("GET /a.txt HTTP/{v}\r\n\r\n"));
        assert_eq!(t.only().status, 400, "{v}");
    }
    // Split anywhere, the answer is the same.
    let mut d = Driver::new(HttpConfig::default(), fs());
    d.recv(b"GET /a.txt HTTP/1.2\r\nHo");
    assert!(d.t.sends.is_empty());
    d.recv(b"st: x\r\n\r\n");
    assert_eq!(d.t.only().status, 200);
}

#[test]
fn version_is_judged_once_the_request_line_is_complete() {
    let mut d = Driver::new(HttpConfig::default(), fs());
    d.recv(b"GET / HTTP/3");
    assert!(d.t.sends.is_empty());
    d.recv(b".0\r\n");
    assert_eq!(d.t.only().status, 505);
}

#[test]
fn connection_close_is_a_case_insensitive_token_list() {
    let t = exchange(&format!(
        "{}{}",
        get("/a.txt", "Connection: foo, CLOSE\r\n"),
        get("/a.txt", "")
    ));
    assert_eq!(t.only().header("connection"), Some("close"));
    assert!(t.closed());
    let t = exchange(&get("/a.txt", "Connection: closed\r\n"));
    assert_eq!(t.only().header("connection"), None);
}

#[test]
fn pipelined_requests_answered_in_order_in_one_send() {
    let raw = [
        get("/a.txt", ""),
        get("/missing", ""),
        get("/a.txt", "Range: bytes=0-1\r\n"),
        "HEAD /a.txt HTTP/1.1\r\nHost: x\r\n\r\n".into(),
    ]
    .concat();
    let t = exchange(&raw);
    let statuses: Vec<u16> = (0..t.sends.len()).map(|i| t.resp(i).status).collect();
    assert_eq!(statuses, [200, 404, 206, 200]);
    assert_eq!(t.resp(2).body, b"ab");
    assert_eq!(t.batches, [4], "one send for the burst");
    assert_eq!(t.wait, Some(Wait::Idle));
}

#[test]
fn a_pipelined_burst_is_sent_in_sends_of_at_most_max_batch() {
    let raw = get("/a.txt", "").repeat(MAX_BATCH as usize * 2 + 3);
    let t = exchange(&raw);
    assert_eq!(t.sends.len(), MAX_BATCH as usize * 2 + 3);
    assert!(t.sends.iter().all(|s| Resp::parse(s).status == 200));
    assert_eq!(t.batches, [MAX_BATCH, MAX_BATCH, 3]);
}

#[test]
fn a_burst_ending_in_a_partial_request_is_sent_before_the_wait() {
    let raw = [get("/a.txt", ""), get("/a.txt", ""), "GET /a.t".into()].concat();
    let mut d = Driver::new(HttpConfig::default(), fs());
    d.recv(raw.as_bytes());
    assert_eq!(d.t.batches, [2]);
    assert_eq!(d.t.wait, Some(Wait::Request));
    d.recv(b"xt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(d.t.batches, [2, 1]);
}

#[test]
fn a_burst_ending_in_a_close_keeps_every_response_and_closes() {
    let raw = [
        get("/a.txt", ""),
        get("/missing", ""),
        get("/a.txt", "Connection: close\r\n"),
        get("/a.txt", ""),
    ]
    .concat();
    let t = exchange(&raw);
    let statuses: Vec<u16> = (0..t.sends.len()).map(|i| t.resp(i).status).collect();
    assert_eq!(
        statuses,
        [200, 404, 200],
        "nothing after the close is answered"
    );
    assert_eq!(t.batches, [3]);
    assert_eq!(t.resp(2).header("connection"), Some("close"));
    assert!(t.closed());
}

#[test]
fn waits_and_buffer_memory() {
    let mut d = Driver::new(HttpConfig::default(), fs());
    assert_eq!(d.t.wait, Some(Wait::Request));
    d.recv(b"GET /a.txt HTTP/1.1\r\nHo");
    assert_eq!(d.t.wait, Some(Wait::Request));
    assert!(d.p.reader.capacity() > 0);
    d.recv(b"st: x\r\n\r\n");
    assert_eq!(d.t.sends.len(), 1);
    assert_eq!(d.t.wait, Some(Wait::Idle));
    assert_eq!(d.p.reader.capacity(), 0);
    // Parsed straight from the slice: a whole request never touches the buffer.
    d.recv(get("/a.txt", "").as_bytes());
    assert_eq!(d.t.wait, Some(Wait::Idle));
    assert_eq!(d.p.reader.capacity(), 0);
    d.recv(b"\r\n");
    assert_eq!(d.t.wait, Some(Wait::Request));
}

// ---- strict parsing --------------------------------------------------------------

fn assert_rejected(raw: &[u8], status: u16) {
    let t = exchange_with(HttpConfig::default(), fs(), raw);
    let r = t.only();
    r.check(false);
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(raw));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(t.closed());
}

#[test]
fn malformed_heads_are_400_and_close() {
    for raw in [
        &b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: b\0c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x01c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x7fc\r\n\r\n",
        b"GET / HTTP/1.1\rHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\rA: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        assert_rejected(raw, 400);
    }
}

#[test]
fn rejected_head_requests_get_no_body() {
    let t =
        exchange("HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    let r = t.only();
    r.check(true);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.header("content-length"),
        Some(Status::BadRequest.page().len().to_string().as_str())
    );
}

#[test]
fn bare_lf_is_accepted_bare_cr_is_not() {
    let t = exchange("GET /a.txt HTTP/1.1\nHost: x\n\n");
    assert_eq!(t.only().status, 200);
    assert_rejected(b"GET /a.txt HTTP/1.1\nHost: x\r\r\n", 400);
}

#[test]
fn identical_content_lengths_are_one() {
    let t = exchange(&format!(
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nab{}",
        get("/a.txt", "")
    ));
    assert_eq!(t.sends.len(), 2);
    assert_eq!(t.resp(1).status, 200);
}

#[test]
fn size_limits() {
    let cfg = || HttpConfig {
        max_uri_bytes: 64,
        max_header_bytes: 256,
        ..HttpConfig::default()
    };
    let long = "/".repeat(65);
    let run = |raw: &[u8]| exchange_with(cfg(), fs(), raw);
    let t = run(get(&long, "").as_bytes());
    assert_eq!((t.only().status, t.closed()), (414, true));
    // Detected before the request line ends.
    let t = run(format!("GET {long}").as_bytes());
    assert_eq!((t.only().status, t.closed()), (414, true));
    let t = run(get("/a.txt", &format!("A: {}\r\n", "b".repeat(256))).as_bytes());
    assert_eq!((t.only().status, t.closed()), (431, true));
    let t = run(format!("GET / HTTP/1.1\r\nA: {}", "b".repeat(256)).as_bytes());
    assert_eq!((t.only().status, t.closed()), (431, true));
    let many: String = (0..101).map(|i| format!("H{i}: v\r\n")).collect();
    let t = exchange(&get("/a.txt", &many));
    assert_eq!((t.only().status, t.closed()), (431, true));
    // Trickled byte by byte, the limits still hold.
    let mut d = Driver::new(cfg(), fs());
    for b in format!("GET / HTTP/1.1\r\nA: {}", "b".repeat(300)).bytes() {
        d.recv(&[b]);
    }
    assert_eq!((d.t.only().status, d.t.closed()), (431, true));
}

// ---- request bodies --------------------------------------------------------------

#[test]
fn bodies_are_discarded_in_any_split() {
    let raw = [
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        "4;ext=\"v\"\r\nGET \r\n0\r\nTrailer: t\r\n\r\n",
        &get("/missing", ""),
    ]
    .concat();
    for step in [1, 2, 3, 7, raw.len()] {
        let mut d = Driver::new(HttpConfig::default(), fs());
        for piece in raw.as_bytes().chunks(step) {
            d.recv(piece);
        }
        let statuses: Vec<u16> = (0..d.t.sends.len()).map(|i| d.t.resp(i).status).collect();
        assert_eq!(statuses, [200, 200, 404], "{step}");
        assert_eq!(d.t.wait, Some(Wait::Idle));
    }
}

#[test]
fn response_waits_for_the_whole_body() {
    let mut d = Driver::new(HttpConfig::default(), fs());
    d.recv(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab");
    assert!(d.t.sends.is_empty());
    assert_eq!(d.t.wait, Some(Wait::Request));
    d.recv(b"cd");
    assert_eq!(d.t.only().status, 200);
}

#[test]
fn too_large_bodies_get_413_without_being_read() {
    let cfg = || HttpConfig {
        max_body_discard: 10,
        ..HttpConfig::default()
    };
    let t = exchange_with(
        cfg(),
        fs(),
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n",
    );
    assert_eq!((t.only().status, t.closed()), (413, true));
    let t = exchange_with(
        cfg(),
        fs(),
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n",
    );
    assert_eq!((t.only().status, t.closed()), (413, true));
    let huge = format!(
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: {}0\r\n\r\n",
        u64::MAX
    );
    assert_rejected(huge.as_bytes(), 413);
    let t = exchange(
        &get("/a.txt", "Transfer-Encoding: chunked\r\n")
            .replace("\r\n\r\n", "\r\n\r\nffffffffffffffffff\r\n"),
    );
    assert_eq!((t.only().status, t.closed()), (413, true));
}

#[test]
fn expect_100_continue_is_answered_at_once_then_closed() {
    let t = exchange(&get(
        "/a.txt",
        "Expect: 100-continue\r\nContent-Length: 1000\r\n",
    ));
    let r = t.only();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(t.closed());
    let t = exchange(&get("/a.txt", "Expect: 100-continue\r\n"));
    assert_eq!((t.only().status, t.wait), (200, Some(Wait::Idle)));
}

// ---- paths, directories, open errors ---------------------------------------------

#[test]
fn targets_are_decoded_and_normalised() {
    let t = exchange(
        &[
            get("/x/../a%2Etxt?q=1", ""),
            get("http://other/./a.txt", ""),
            get("/%C3%A9", ""),
            get("/a%5c%FF", ""),
        ]
        .concat(),
    );
    // Raw bytes reach the backend: `\` as itself, a non-UTF-8 byte escaped.
    assert_eq!(t.opens, ["a.txt", "a.txt", "é", "a\\\0ff"]);
    for bad in ["/a%00", "/..", "/a%zz", "*"] {
        let t = exchange(&get(bad, ""));
        assert_eq!((t.only().status, t.wait), (400, Some(Wait::Idle)), "{bad}");
        assert!(t.opens.is_empty());
    }
}

#[test]
fn directories_redirect_index_list_or_forbid() {
    let r = one(&get("/d?x=1&y", ""));
    assert_eq!((r.status, r.header("location")), (301, Some("/d/?x=1&y")));
    assert_eq!(one(&get("//a%20b/./c/../d", "")).status, 404);
    let t = exchange(&get("/d/", ""));
    assert_eq!(t.opens, ["d", "d/index.html"]);
    assert_eq!(
        (t.only().status, t.only().body.as_slice()),
        (200, &b"<p>index</p>"[..])
    );
    assert_eq!(
        t.only().header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(one(&get("/bare/", "")).status, 403);
    let t = exchange_with(
        HttpConfig {
            listing: true,
            ..HttpConfig::default()
        },
        fs(),
        get("/bare/", "").as_bytes(),
    );
    let r = t.only();
    r.check(false);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("<a href=\"x%20y.bin\">x y.bin</a>"));
    let t = exchange_with(
        HttpConfig {
            listing: true,
            ..HttpConfig::default()
        },
        fs(),
        get("/", "").as_bytes(),
    );
    assert_eq!(t.opens, ["", "index.html"]);
    assert!(!String::from_utf8_lossy(&t.only().body).contains("../"));
}

#[test]
fn dotfiles_are_404_unless_allowed_and_well_known_is_served() {
    let tree = || {
        Fs::new()
            .file(".git/config", b"[core]")
            .file("a/.env", b"SECRET=1")
            .file(".well-known/security.txt", b"Contact: x")
    };
    for path in [
        "/.git/config",
        "/%2Egit/config",
        "/a/.env",
        "/.git/",
        "/x/../.git/config",
    ] {
        let t = exchange_with(HttpConfig::default(), tree(), get(path, "").as_bytes());
        assert_eq!(t.only().status, 404, "{path}");
        assert!(
            t.opens.is_empty(),
            "{path}: asked the backend {:?}",
            t.opens
        );
    }
    let t = exchange_with(
        HttpConfig::default(),
        tree(),
        get("/.well-known/security.txt", "").as_bytes(),
    );
    assert_eq!(t.only().status, 200);
    let allow = HttpConfig {
        dotfiles: Dotfiles::Allow,
        ..HttpConfig::default()
    };
    for path in ["/.git/config", "/a/.env"] {
        let t = exchange_with(allow.clone(), tree(), get(path, "").as_bytes());
        assert_eq!(t.only().status, 200, "{path}");
    }
}

#[test]
fn a_file_with_a_trailing_slash_is_not_found() {
    for path in ["/a.txt/", "/a.txt/.", "/a.txt/./", "/d/index.html/"] {
        let r = one(&get(path, ""));
        assert_eq!(r.status, 404, "{path}");
    }
    assert_eq!(one(&get("/a.txt/x/..", "")).status, 404);
    assert_eq!(one(&get("/a.txt", "")).status, 200);
}

#[test]
fn redirect_is_rebuilt_not_echoed() {
    let t = exchange_with(
        HttpConfig::default(),
        Fs::new().dir("evil.example", vec![]),
        get("//evil.example", "").as_bytes(),
    );
    assert_eq!(t.only().header("location"), Some("/evil.example/"));
}

#[test]
fn special_files_are_forbidden() {
    let t = exchange_with(
        HttpConfig::default(),
        Fs::new().other("fifo"),
        get("/fifo", "").as_bytes(),
    );
    assert_eq!((t.only().status, t.wait), (403, Some(Wait::Idle)));
}

#[test]
fn open_errors_map_to_statuses() {
    for (errno, status) in [
        (libc::ENOENT, 404),
        (libc::ENOTDIR, 404),
        (libc::EACCES, 403),
        (libc::EPERM, 403),
        (libc::EXDEV, 403),
        (libc::ELOOP, 403),
        (libc::ENAMETOOLONG, 404),
        (libc::EILSEQ, 404),
        (libc::ENXIO, 403),
        (libc::ENODEV, 403),
        (libc::EMFILE, 503),
        (libc::ENFILE, 503),
        (libc::ENOMEM, 503),
        (libc::EAGAIN, 503),
        (libc::EIO, 500),
        (libc::EINVAL, 500),
    ] {
        let t = exchange_with(
            HttpConfig::default(),
            Fs::new().fail("f", errno),
            get("/f", "").as_bytes(),
        );
        let r = t.only();
        r.check(false);
        assert_eq!((r.status, t.wait), (status, Some(Wait::Idle)), "{errno}");
        assert_eq!(r.header("retry-after").is_some(), status == 503);
        // What is not simply missing is the operator's to hear of, with its cause.
        let fault = (
            "open",
            "/f".to_string(),
            Some(errno),
            "GET /f HTTP/1.1".into(),
        );
        let faults = if status == 404 { vec![] } else { vec![fault] };
        assert_eq!(t.faults, faults, "{errno}");
    }
}

#[test]
fn a_fault_names_the_file_opened_escaped_and_the_request() {
    // The index of a directory, for a HEAD over HTTP/1.0, with a quote in the name.
    let t = exchange_with(
        HttpConfig::default(),
        Fs::new()
            .dir("a\"b", Vec::new())
            .fail("a\"b/index.html", libc::EACCES),
        b"HEAD /a%22b/ HTTP/1.0\r\n\r\n",
    );
    assert_eq!(t.only().status, 403);
    let request = r#"HEAD /a%22b/ HTTP/1.0"#.to_string();
    let path = r#"/a\x22b/index.html"#.to_string();
    assert_eq!(t.faults, [("open", path, Some(libc::EACCES), request)]);
    // A listing that fails is an opendir.
    let cfg = HttpConfig {
        listing: true,
        ..HttpConfig::default()
    };
    let fs = Fs::new().dir("d", Vec::new()).fail_listing("d", libc::EIO);
    let t = exchange_with(cfg, fs, get("/d/", "").as_bytes());
    assert_eq!(t.only().status, 500);
    let request = "GET /d/ HTTP/1.1".to_string();
    assert_eq!(
        t.faults,
        [("opendir", "/d".into(), Some(libc::EIO), request)]
    );
    // Neither a 404 nor a success has one.
    let t = exchange(&get("/a.txt", ""));
    assert_eq!((t.only().status, t.faults.len()), (200, 0));
    let t = exchange(&get("/nothing", ""));
    assert_eq!((t.only().status, t.faults.len()), (404, 0));
}

// ---- conditionals ----------------------------------------------------------------

#[test]
fn conditionals_in_rfc_order() {
    let etag = etag_of("/a.txt");
    let status = |extra: String| one(&get("/a.txt", &extra)).status;
    assert_eq!(status(format!("If-Match: \"x\", {etag}\r\n")), 200);
    assert_eq!(status("If-Match: \"x\"\r\n".into()), 412);
    assert_eq!(status(format!("If-Match: W/{etag}\r\n")), 412);
    assert_eq!(
        status("If-Unmodified-Since: Tue, 14 Nov 2023 22:13:19 GMT\r\n".into()),
        412
    );
    assert_eq!(
        status(format!("If-Unmodified-Since: {MTIME_HTTP}\r\n")),
        200
    );
    assert_eq!(status(format!("If-None-Match: W/{etag}\r\n")), 304);
    assert_eq!(status("If-None-Match: *\r\n".into()), 304);
    assert_eq!(
        status(format!(
            "If-None-Match: \"x\"\r\nIf-Modified-Since: {MTIME_HTTP}\r\n"
        )),
        200
    );
    assert_eq!(status(format!("If-Modified-Since: {MTIME_HTTP}\r\n")), 304);
    assert_eq!(
        status("If-Modified-Since: Tue, 14 Nov 2023 22:13:19 GMT\r\n".into()),
        200
    );
    assert_eq!(
        status("If-Modified-Since: soon\r\nIf-Unmodified-Since: never\r\n".into()),
        200
    );
    assert_eq!(
        status(format!("If-Match: \"x\"\r\nIf-None-Match: {etag}\r\n")),
        412
    );
}

#[test]
fn not_modified_carries_validators_only() {
    let etag = etag_of("/a.txt");
    for method in ["GET", "HEAD"] {
        let r = one(&format!(
            "{method} /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"
        ));
        assert_eq!(r.status, 304);
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("last-modified"), Some(MTIME_HTTP));
        assert_eq!(r.header("content-type"), None);
    }
}

// ---- ranges ----------------------------------------------------------------------

#[test]
fn single_ranges() {
    let r = one(&get("/a.txt", "Range: bytes=10-19\r\n"));
    assert_eq!(
        (r.status, r.header("content-range")),
        (206, Some("bytes 10-19/100"))
    );
    assert_eq!(r.body, &content(100)[10..20]);
    let r = one(&get("/a.txt", "Range: bytes=-5\r\n"));
    assert_eq!(
        (r.header("content-range"), r.body.as_slice()),
        (Some("bytes 95-99/100"), &content(100)[95..])
    );
    let r = one(&get("/a.txt", "Range: Bytes=98-1000\r\n"));
    assert_eq!(r.header("content-range"), Some("bytes 98-99/100"));
    let r = one(&get("/a.txt", "Range: bytes=0-9, 5-14,15-19\r\n"));
    assert_eq!(
        (r.header("content-range"), r.body.as_slice()),
        (Some("bytes 0-19/100"), &content(100)[..20])
    );
    let r = one(&get("/a.txt", "Range: bytes=0-9, 1000-\r\n"));
    assert_eq!(r.header("content-range"), Some("bytes 0-9/100"));
}

#[test]
fn several_ranges_are_multipart() {
    let r = one(&get("/a.txt", "Range: bytes=90-,0-1\r\n"));
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let c = content(100);
    let expected = [
        format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-1/100\r\n\r\n").as_bytes(),
        &c[..2],
        format!("\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 90-99/100\r\n\r\n").as_bytes(),
        &c[90..],
        format!("\r\n--{boundary}--\r\n").as_bytes(),
    ]
    .concat();
    assert_eq!(r.body, expected);
    assert!(!c.windows(boundary.len()).any(|w| w == boundary.as_bytes()));
    let h = one("HEAD /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=90-,0-1\r\n\r\n");
    assert_eq!(
        h.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
}

#[test]
fn unsatisfiable_and_ignored_ranges() {
    let r = one(&get("/a.txt", "Range: bytes=100-\r\n"));
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some("bytes */100"))
    );
    let r = one(&get("/empty.txt", "Range: bytes=0-\r\n"));
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some("bytes */0"))
    );
    for range in ["bytes=5-1", "lines=1-2", "bytes=x", "bytes=0-0,2-2,4-4"] {
        let t = exchange_with(
            HttpConfig {
                max_ranges: 2,
                ..HttpConfig::default()
            },
            fs(),
            get("/a.txt", &format!("Range: {range}\r\n")).as_bytes(),
        );
        assert_eq!(
            (t.only().status, t.only().body.len()),
            (200, 100),
            "{range}"
        );
    }
}

#[test]
fn if_range_needs_a_strong_match() {
    let etag = etag_of("/a.txt");
    let status = |if_range: &str| {
        one(&get(
            "/a.txt",
            &format!("Range: bytes=0-0\r\nIf-Range: {if_range}\r\n"),
        ))
        .status
    };
    assert_eq!(status(&etag), 206);
    assert_eq!(status(&format!("W/{etag}")), 200);
    assert_eq!(status("\"other\""), 200);
    assert_eq!(status(MTIME_HTTP), 206);
    assert_eq!(status("Tue, 14 Nov 2023 22:13:21 GMT"), 200);
}

#[test]
fn files_over_4_gib() {
    const LEN: u64 = 5 << 30;
    let fs = || Fs::new().sparse("big.bin", LEN);
    let t = exchange_with(
        HttpConfig::default(),
        fs(),
        b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(t.only().header("content-length"), Some("5368709120"));
    let t = exchange_with(
        HttpConfig::default(),
        fs(),
        get("/big.bin", "Range: bytes=-3, 4294967296-4294967297\r\n").as_bytes(),
    );
    let r = t.only();
    r.check(false);
    assert!(String::from_utf8_lossy(&r.body)
        .contains("Content-Range: bytes 4294967296-4294967297/5368709120"));
    assert!(String::from_utf8_lossy(&r.body)
        .contains("Content-Range: bytes 5368709117-5368709119/5368709120"));
}

// ---- timeouts, EOF, drain --------------------------------------------------------

#[test]
fn timeouts() {
    let mut d = Driver::new(HttpConfig::default(), fs());
    d.p.handle_timeout();
    d.run();
    assert!(d.t.closed() && d.t.sends.is_empty());
    for partial in [
        &b"GET / HT"[..],
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab",
    ] {
        let mut d = Driver::new(HttpConfig::default(), fs());
        d.recv(partial);
        d.p.handle_timeout();
        d.run();
        let r = d.t.only();
        assert_eq!((r.status, r.header("connection")), (408, Some("close")));
        assert!(d.t.closed());
    }
}

#[test]
fn eof_closes_dropping_partial_requests() {
    let mut d = Driver::new(HttpConfig::default(), fs());
    d.recv(get("/a.txt", "").as_bytes())
        .recv(b"GET /a.txt HTTP/1.1\r\n");
    d.p.handle_eof();
    d.run();
    assert_eq!(d.t.sends.len(), 1);
    assert!(d.t.closed());
}

#[test]
fn drain_closes_idle_or_after_the_next_response() {
    let mut d = Driver::new(HttpConfig::default(), fs());
    d.p.handle_drain();
    d.run();
    assert!(d.t.closed() && d.t.sends.is_empty());
    let mut d = Driver::new(HttpConfig::default(), fs());
    d.recv(b"GET /a.txt HTTP/1.1\r\n");
    d.p.handle_drain();
    d.run();
    assert_eq!(d.t.wait, Some(Wait::Request));
    d.recv(b"Host: x\r\n\r\n");
    assert_eq!(
        (d.t.only().status, d.t.only().header("connection")),
        (200, Some("close"))
    );
    assert!(d.t.closed());
}

// ---- log, overload ---------------------------------------------------------------

#[test]
fn access_log_lines() {
    let cfg = HttpConfig {
        access_log: true,
        ..HttpConfig::default()
    };
    let raw = [
        get("/a.txt", "Referer: http://r/\r\nUser-Agent: t \"1\"\r\n"),
        "HEAD /a.txt HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "BAD\r\n\r\n".into(),
    ]
    .concat();
    let t = exchange_with(cfg, fs(), raw.as_bytes());
    assert_eq!(
        t.logs,
        [
            r#"192.0.2.7 - - [21/Sep/2026:14:13:20 +0000] "GET /a.txt HTTP/1.1" 200 100 "http://r/" "t \x221\x22""#,
            r#"192.0.2.7 - - [21/Sep/2026:14:13:20 +0000] "HEAD /a.txt HTTP/1.1" 200 0 "-" "-""#,
            r#"192.0.2.7 - - [21/Sep/2026:14:13:20 +0000] "-" 400 111 "-" "-""#,
        ]
    );
    let t = exchange(&get("/a.txt", ""));
    assert!(t.logs.is_empty());
}

#[test]
fn overload_response_is_a_complete_503() {
    let bytes = HttpFactory::default().overload_response().unwrap();
    let r = Resp::parse(bytes);
    assert_eq!(
        (r.status, r.header("retry-after"), r.header("connection")),
        (503, Some("1"), Some("close"))
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
}

// ---- properties ------------------------------------------------------------------

/// Pipelined requests exercising every path that reads input.
fn stream() -> Vec<u8> {
    [
        get("/a.txt", ""),
        "HEAD /a.txt HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        get("/a.txt", "Range: bytes=1-3,50-\r\n"),
        get("/a.txt", "If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT\r\n"),
        get("/missing", ""),
        "POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\npayload".into(),
        "GET /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n".into(),
        get("/d/", "Range: bytes=-4\r\n"),
        get("/a.txt", "Connection: close\r\n"),
    ]
    .concat()
    .into_bytes()
}

fn run_pieces(input: &[u8], cuts: &[usize]) -> Transcript {
    let mut d = Driver::new(
        HttpConfig {
            access_log: true,
            ..HttpConfig::default()
        },
        fs(),
    );
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut start = 0;
    for end in cuts.into_iter().chain([input.len()]) {
        d.recv(&input[start..end]);
        start = end;
    }
    d.t.opens.clear();
    // How responses were grouped into sends depends on how the input was split.
    assert_eq!(d.t.batches.iter().sum::<u32>() as usize, d.t.sends.len());
    d.t.batches.clear();
    d.t
}

proptest! {
    // Regressions would be saved outside this module's directory; failures print the
    // minimal case instead.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_split_gives_identical_output(cuts in prop::collection::vec(any::<usize>(), 0..24)) {
        let input = stream();
        let whole = run_pieces(&input, &[]);
        prop_assert_eq!(whole.sends.len(), 9);
        prop_assert!(whole.closed());
        let split = run_pieces(&input, &cuts);
        prop_assert_eq!(whole.sends.concat(), split.sends.concat());
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn arbitrary_input_never_panics(
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
        prefix in prop::sample::select(vec!["", "GET / HTTP/1.1\r\n", "GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"]),
    ) {
        let mut d = Driver::new(HttpConfig { max_header_bytes: 128, max_uri_bytes: 32, ..HttpConfig::default() }, fs());
        d.recv(prefix.as_bytes());
        for p in &pieces {
            d.recv(p);
        }
        d.p.handle_timeout();
        d.run();
        d.p.handle_eof();
        d.run();
    }
}

#[test]
fn unsolicited_backend_answers_are_ignored() {
    let mut d = Driver::new(HttpConfig::default(), fs());
    d.recv(get("/a.txt", "Connection: close\r\n").as_bytes());
    assert!(d.t.closed());
    d.p.handle_fs(FsDone::Opened(Err(io::ErrorKind::NotFound.into())));
    d.p.handle_fs(FsDone::Listed(Ok(Listing::default())));
    assert!(matches!(d.p.poll(now()), Step::Close));
    let mut d = Driver::new(HttpConfig::default(), fs());
    d.p.handle_recv(get("/a.txt", "").as_bytes());
    assert!(matches!(d.p.poll(now()), Step::Fs(FsOp::Open(p)) if p == "a.txt"));
    d.p.handle_fs(FsDone::Listed(Ok(Listing::default())));
    assert!(matches!(d.p.poll(now()), Step::Fs(FsOp::Open(p)) if p == "a.txt"));
}

// ---- precompressed sidecars --------------------------------------------------------

fn sidecar_cfg() -> HttpConfig {
    HttpConfig {
        precompressed: vec![Coding::Br, Coding::Zstd, Coding::Gzip],
        ..HttpConfig::default()
    }
}

/// `app.js` with `.br` and `.gz` sidecars (no `.zst`), each its own bytes.
fn sidecar_fs() -> Fs {
    Fs::new()
        .file("app.js", b"the original script, uncompressed")
        .file("app.js.br", b"BR bytes")
        .file("app.js.gz", b"GZIP bytes, longer")
        .file("logo.png", b"PNG")
        .file("logo.png.br", b"not for a png")
        .file("lonely.js.br", b"a sidecar with no original")
        .file("d/index.html", b"<p>index</p>")
        .file("d/index.html.gz", b"GZ index")
        .dir("d", Vec::new())
}

/// A GET of `path` with `fields` (`Accept-Encoding: ...` and the like): the response,
/// checked, and the paths the backend was asked to open.
fn coded(path: &str, fields: &str) -> (Resp, Vec<String>) {
    let t = exchange_with(sidecar_cfg(), sidecar_fs(), get(path, fields).as_bytes());
    let r = t.only();
    r.check(false);
    (r, t.opens)
}

#[test]
fn a_sidecar_is_chosen_by_q_value_then_by_the_servers_order() {
    let (r, opens) = coded("/app.js", "Accept-Encoding: gzip, deflate, br, zstd\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"BR bytes");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(opens, ["app.js", "app.js.br"]);
    // The client prefers gzip.
    let (r, _) = coded("/app.js", "Accept-Encoding: br;q=0.5, gzip\r\n");
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"GZIP bytes, longer"[..], Some("gzip"))
    );
    // zstd first, but there is no app.js.zst: the next, br.
    let (r, opens) = coded("/app.js", "Accept-Encoding: zstd, br;q=0.9\r\n");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(opens, ["app.js", "app.js.zst", "app.js.br"]);
    // An index.html has its sidecar too.
    let (r, _) = coded("/d/", "Accept-Encoding: gzip\r\n");
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"GZ index"[..], Some("gzip"))
    );
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
}

#[test]
fn refused_codings_and_no_accept_encoding_get_the_original_with_vary() {
    for fields in [
        "",
        "Accept-Encoding: \r\n",
        "Accept-Encoding: identity\r\n",
        "Accept-Encoding: br;q=0, gzip;q=0\r\n",
        "Accept-Encoding: *;q=0\r\n",
        "Accept-Encoding: zstd\r\n", // accepted, but there is none
    ] {
        let (r, _) = coded("/app.js", fields);
        assert_eq!(r.body, b"the original script, uncompressed", "{fields:?}");
        assert_eq!(r.header("content-encoding"), None, "{fields:?}");
        // The response depends on Accept-Encoding, whatever this request sent.
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{fields:?}");
    }
    // identity;q=0 refuses only the original: a sidecar it accepts is served.
    let (r, _) = coded("/app.js", "Accept-Encoding: identity;q=0, gzip\r\n");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    // No Accept-Encoding: no sidecar is even looked for.
    let (_, opens) = coded("/app.js", "");
    assert_eq!(opens, ["app.js"]);
}

#[test]
fn a_stale_sidecar_is_passed_over() {
    let fs = sidecar_fs().mtime("app.js.br", MTIME - 1);
    let t = exchange_with(
        sidecar_cfg(),
        fs,
        get("/app.js", "Accept-Encoding: br, gzip\r\n").as_bytes(),
    );
    let r = t.only();
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "the older .br is not served"
    );
    let fs = sidecar_fs()
        .mtime("app.js.br", MTIME - 1)
        .mtime("app.js.gz", MTIME - 1);
    let t = exchange_with(
        sidecar_cfg(),
        fs,
        get("/app.js", "Accept-Encoding: br, gzip\r\n").as_bytes(),
    );
    assert_eq!(t.only().body, b"the original script, uncompressed");
}

#[test]
fn a_sidecar_without_its_original_is_not_served_as_it() {
    let (r, opens) = coded("/lonely.js", "Accept-Encoding: br\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(opens, ["lonely.js"]);
    // Asked for by its own name it is just a file, uncoded.
    let (r, _) = coded("/lonely.js.br", "Accept-Encoding: br\r\n");
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
}

#[test]
fn types_that_do_not_compress_have_no_sidecar_and_no_vary() {
    let (r, opens) = coded("/logo.png", "Accept-Encoding: br\r\n");
    assert_eq!(r.body, b"PNG");
    assert_eq!(
        (r.header("content-encoding"), r.header("vary")),
        (None, None)
    );
    assert_eq!(opens, ["logo.png"]);
    // And with --precompressed off, nothing changes for a script either.
    let t = exchange_with(
        HttpConfig::default(),
        sidecar_fs(),
        get("/app.js", "Accept-Encoding: br\r\n").as_bytes(),
    );
    let r = t.only();
    assert_eq!(
        (r.header("content-encoding"), r.header("vary")),
        (None, None)
    );
    assert_eq!(t.opens, ["app.js"]);
}

#[test]
fn ranges_and_conditionals_apply_to_the_sidecar() {
    let (r, _) = coded("/app.js", "Accept-Encoding: gzip\r\nRange: bytes=5-9\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"bytes");
    assert_eq!(
        r.header("content-range"),
        Some("bytes 5-9/18"),
        "the sidecar's length"
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    // Each representation has its own tag.
    let (gz, _) = coded("/app.js", "Accept-Encoding: gzip\r\n");
    let (br, _) = coded("/app.js", "Accept-Encoding: br\r\n");
    let (plain, _) = coded("/app.js", "");
    let tags = [
        gz.header("etag").unwrap(),
        br.header("etag").unwrap(),
        plain.header("etag").unwrap(),
    ];
    assert!(
        tags[0].ends_with("-gzip\"") && tags[1].ends_with("-br\""),
        "{tags:?}"
    );
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "{tags:?}"
    );
    // The sidecar's tag revalidates the sidecar: 304, still saying how it is coded.
    let inm = format!("Accept-Encoding: gzip\r\nIf-None-Match: {}\r\n", tags[0]);
    let (r, _) = coded("/app.js", &inm);
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(tags[0]));
    assert_eq!(
        (r.header("content-encoding"), r.header("vary")),
        (Some("gzip"), Some("Accept-Encoding"))
    );
    // The same tag from a client that now takes no coding matches nothing: 200, plain.
    let (r, _) = coded("/app.js", &format!("If-None-Match: {}\r\n", tags[0]));
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    // A Range with an If-Range of the other representation's tag gets the whole sidecar.
    let f = format!(
        "Accept-Encoding: gzip\r\nRange: bytes=0-1\r\nIf-Range: {}\r\n",
        tags[2]
    );
    let (r, _) = coded("/app.js", &f);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"GZIP bytes, longer"[..])
    );
    // A 416 past the sidecar's end and a 412 against its tag depend on the coding too.
    let (r, _) = coded("/app.js", "Accept-Encoding: gzip\r\nRange: bytes=100-\r\n");
    assert_eq!(
        (r.status, r.header("content-range"), r.header("vary")),
        (416, Some("bytes */18"), Some("Accept-Encoding"))
    );
    let (r, _) = coded(
        "/app.js",
        "Accept-Encoding: gzip\r\nIf-Match: \"other\"\r\n",
    );
    assert_eq!((r.status, r.header("vary")), (412, Some("Accept-Encoding")));
    // Where no sidecar applies, a 412 says nothing of Accept-Encoding.
    let (r, _) = coded(
        "/logo.png",
        "Accept-Encoding: gzip\r\nIf-Match: \"other\"\r\n",
    );
    assert_eq!((r.status, r.header("vary")), (412, None));
}

// ---- fallback and 404 pages ----------------------------------------------------------

fn spa_cfg(fallback: Option<&str>, page404: Option<&str>) -> HttpConfig {
    HttpConfig {
        fallback: fallback.map(|p| served_path(p).unwrap()),
        page404: page404.map(|p| served_path(p).unwrap()),
        ..HttpConfig::default()
    }
}

fn spa_fs() -> Fs {
    Fs::new()
        .file("index.html", b"<div id=app></div>")
        .file("404.html", b"<h1>Nothing here</h1>")
        .file("app.js", b"js")
        .file("d/f", b"f")
        .dir("d", Vec::new())
        .dir("empty", Vec::new())
}

fn spa(cfg: HttpConfig, raw: &str) -> (Resp, Vec<String>) {
    let t = exchange_with(cfg, spa_fs(), raw.as_bytes());
    let r = t.only();
    r.check(raw.starts_with("HEAD"));
    (r, t.opens)
}

#[test]
fn a_missing_route_gets_the_fallback_and_a_missing_asset_the_404() {
    let cfg = || spa_cfg(Some("index.html"), None);
    let (r, opens) = spa(cfg(), &get("/users/42", ""));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"<div id=app></div>"[..])
    );
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(opens, ["users/42", "index.html"]);
    // With an extension it looks like an asset: 404, unless the client wants a page.
    assert_eq!(spa(cfg(), &get("/missing.js", "")).0.status, 404);
    let (r, _) = spa(
        cfg(),
        &get(
            "/blog/post.html",
            "Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n",
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        spa(cfg(), &get("/x.png", "Accept: image/avif,*/*\r\n"))
            .0
            .status,
        404
    );
    assert_eq!(
        spa(cfg(), &get("/x.png", "Accept: text/html;q=0\r\n"))
            .0
            .status,
        404
    );
    // What exists is served as it is; HEAD falls back as GET does.
    assert_eq!(spa(cfg(), &get("/app.js", "")).0.body, b"js");
    let (r, _) = spa(cfg(), "HEAD /a/b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (200, Some("18")));
    // A directory without index.html is not missing: 403 as before.
    assert_eq!(spa(cfg(), &get("/empty/", "")).0.status, 403);
    // A fallback that is missing itself is a 404, asked for once.
    let (r, opens) = spa(spa_cfg(Some("nope.html"), None), &get("/route", ""));
    assert_eq!(r.status, 404);
    assert_eq!(opens, ["route", "nope.html"]);
    // Other methods are not served at all.
    let (r, _) = spa(
        cfg(),
        "POST /route HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 405);
}

#[test]
fn the_404_page_comes_from_a_file() {
    let cfg = || spa_cfg(None, Some("/404.html"));
    let (r, opens) = spa(cfg(), &get("/missing.txt", ""));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (404, &b"<h1>Nothing here</h1>"[..])
    );
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!((r.header("etag"), r.header("accept-ranges")), (None, None));
    assert_eq!(opens, ["missing.txt", "404.html"]);
    // A file asked for as a directory is missing too; a Range changes nothing.
    assert_eq!(
        spa(cfg(), &get("/d/f/", "")).0.body,
        b"<h1>Nothing here</h1>"
    );
    let (r, _) = spa(cfg(), &get("/nope", "Range: bytes=0-1\r\n"));
    assert_eq!((r.status, r.body.len()), (404, 21));
    // HEAD: the page's length, no body.
    let (r, _) = spa(cfg(), "HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (404, Some("21")));
    // Missing itself: the built-in page.
    let (r, _) = spa(spa_cfg(None, Some("gone.html")), &get("/nope", ""));
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("404"));
    // With both: routes fall back, assets get the page.
    let both = || spa_cfg(Some("index.html"), Some("404.html"));
    assert_eq!(spa(both(), &get("/route", "")).0.status, 200);
    assert_eq!(
        spa(both(), &get("/a.css", "")).0.body,
        b"<h1>Nothing here</h1>"
    );
    let (r, _) = spa(
        spa_cfg(Some("nope.html"), Some("404.html")),
        &get("/route", ""),
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (404, &b"<h1>Nothing here</h1>"[..])
    );
}

#[test]
fn fallback_and_404_paths_are_normalised_beneath_the_root() {
    assert_eq!(served_path("index.html").unwrap(), "index.html");
    assert_eq!(served_path("/app/index.html").unwrap(), "app/index.html");
    // Dot segments cannot climb out: above the root is no path at all.
    assert!(served_path("../../etc/passwd").is_err());
    assert_eq!(served_path("a/./b/../c.html").unwrap(), "a/c.html");
    assert!(served_path("").is_err());
    assert!(served_path("/").is_err());
    assert!(served_path("dir/").is_err());
}

// ---- header rules and CORS -------------------------------------------------------------

fn rules_cfg() -> HttpConfig {
    use rules::{CacheRule, Cors, HeaderRule, Rules};
    let mut cors = Cors::default();
    cors.add("https://app.example").unwrap();
    HttpConfig {
        rules: Rules::new(
            vec![
                HeaderRule::parse("X-Content-Type-Options: nosniff").unwrap(),
                HeaderRule::parse("d/**:X-Robots-Tag: noindex").unwrap(),
            ],
            vec![CacheRule::parse("d/**=public, max-age=31536000, immutable").unwrap()],
            Some(cors),
        ),
        ..HttpConfig::default()
    }
}

#[test]
fn header_and_cache_rules_apply_by_path() {
    let t = exchange_with(rules_cfg(), fs(), get("/d/index.html", "").as_bytes());
    let r = t.only();
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-robots-tag"), Some("noindex"));
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let r = exchange_with(rules_cfg(), fs(), get("/a.txt", "").as_bytes()).only();
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        (r.header("x-robots-tag"), r.header("cache-control")),
        (None, None)
    );
    // A 404 under d/ keeps the headers but is not made cacheable.
    let r = exchange_with(rules_cfg(), fs(), get("/d/gone.js", "").as_bytes()).only();
    assert_eq!(r.status, 404);
    assert_eq!(
        (r.header("x-robots-tag"), r.header("cache-control")),
        (Some("noindex"), None)
    );
    // A request that names no path gets only the rules without a glob.
    let r = exchange_with(rules_cfg(), fs(), b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n").only();
    assert_eq!(r.status, 400);
    assert_eq!(
        (r.header("x-content-type-options"), r.header("x-robots-tag")),
        (Some("nosniff"), None)
    );
}

#[test]
fn cors_answers_allowed_origins_and_their_preflights() {
    let r = exchange_with(
        rules_cfg(),
        fs(),
        get("/a.txt", "Origin: https://app.example\r\n").as_bytes(),
    )
    .only();
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    let r = exchange_with(
        rules_cfg(),
        fs(),
        get("/a.txt", "Origin: https://evil.example\r\n").as_bytes(),
    )
    .only();
    assert_eq!(r.header("access-control-allow-origin"), None);
    let pre = "OPTIONS /a.txt HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: range\r\n\r\n";
    let t = exchange_with(rules_cfg(), fs(), pre.as_bytes());
    let r = t.only();
    r.check(false);
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("content-length"),
        None,
        "a 204 has no Content-Length"
    );
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, HEAD, OPTIONS")
    );
    assert_eq!(r.header("access-control-allow-headers"), Some("range"));
    assert!(!t.closed(), "the connection goes on");
    // Not a preflight, or not an allowed origin: 405 as without --cors.
    let r = exchange_with(
        rules_cfg(),
        fs(),
        b"OPTIONS /a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .only();
    assert_eq!(r.status, 405);
    let bad = pre.replace("app.example", "evil.example");
    assert_eq!(
        exchange_with(rules_cfg(), fs(), bad.as_bytes())
            .only()
            .status,
        405
    );
}

#[test]
fn rules_match_a_directory_by_its_index_or_its_slash() {
    let cfg = || {
        let mut c = rules_cfg();
        c.listing = true;
        c.rules = rules::Rules::new(
            vec![
                rules::HeaderRule::parse("d/**:X-Robots-Tag: noindex").unwrap(),
                rules::HeaderRule::parse("bare/**:X-Listing: yes").unwrap(),
            ],
            vec![rules::CacheRule::parse("index.html=no-store").unwrap()],
            None,
        );
        c
    };
    // /d/ serves d/index.html: d/** matches it, the root's index.html rule does not.
    let r = exchange_with(cfg(), fs(), get("/d/", "").as_bytes()).only();
    assert_eq!(
        (r.header("x-robots-tag"), r.header("cache-control")),
        (Some("noindex"), None)
    );
    // A listing and a directory's redirect are the directory with its slash.
    let r = exchange_with(cfg(), fs(), get("/bare/", "").as_bytes()).only();
    assert_eq!(r.header("x-listing"), Some("yes"), "{}", r.head);
    let r = exchange_with(cfg(), fs(), get("/bare", "").as_bytes()).only();
    assert_eq!((r.status, r.header("x-listing")), (301, Some("yes")));
}

#[test]
fn review_fixes_preflight_hidden_404_and_vary_accept() {
    // Access-Control-Request-Headers alone is no preflight.
    let raw = "OPTIONS /a.txt HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Headers: range\r\n\r\n";
    assert_eq!(
        exchange_with(rules_cfg(), fs(), raw.as_bytes())
            .only()
            .status,
        405
    );
    // A dotfile refused under deny gets the same 404 page as any missing file.
    let cfg = || spa_cfg(Some("index.html"), Some("404.html"));
    let (r, _) = spa(cfg(), &get("/.env", ""));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (404, &b"<h1>Nothing here</h1>"[..])
    );
    // Where Accept chose between the fallback and the 404, the response says so.
    let (r, _) = spa(cfg(), &get("/gone.js", ""));
    assert_eq!((r.status, r.header("vary")), (404, Some("Accept")));
    let (r, _) = spa(cfg(), &get("/page.html", "Accept: text/html\r\n"));
    assert_eq!((r.status, r.header("vary")), (200, Some("Accept")));
    // A route without an extension falls back whatever Accept says: no Vary.
    let (r, _) = spa(cfg(), &get("/route", ""));
    assert_eq!((r.status, r.header("vary")), (200, None));
}

/// Through the real driver and open-file cache: a sidecar found missing is not looked
/// for again while the file's handle is cached, and one that exists is taken from the
/// cache too, so the second request opens nothing at all.
#[test]
fn sidecars_found_missing_are_not_looked_for_again_through_the_same_handle() {
    use crate::backend::memory::Memory;
    let dir = std::env::temp_dir().join(format!("ringserve-absent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.js"), "the script").unwrap();
    std::fs::write(dir.join("app.js.gz"), "GZ").unwrap();
    let proto = HttpFactory::new(sidecar_cfg()).new_conn("127.0.0.1:9".parse().unwrap());
    let mut conn = Memory::new(proto, crate::fs::Root::open(&dir).unwrap());
    let req = b"GET /app.js HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br, zstd, gzip\r\n\r\n";
    for _ in 0..3 {
        conn.push(req);
        let out = String::from_utf8(conn.run()).unwrap();
        assert!(
            out.contains("Content-Encoding: gzip") && out.ends_with("GZ"),
            "{out}"
        );
    }
    // The file, then .br and .zst (missing) and .gz, once.
    assert_eq!(
        conn.looked(),
        ["app.js", "app.js.br", "app.js.zst", "app.js.gz"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
