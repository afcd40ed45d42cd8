//! `ringserve get`, `put` and `ls`: the file-transfer protocol's client.
//!
//! The protocol is the sans-IO [`XferClient`]; [`Blocking`] drives it on one socket
//! with the same driver the servers use, so a download goes socket→pipe→file by
//! splice and an upload file→socket by sendfile (each with a copy fallback). This file
//! is the command around it: files, resume records, the progress bar and messages.
//! Errors carry context with anyhow; the command prints the chain on one line.

use crate::backend::blocking::{Blocking, Limits};
use crate::proto::xfer::frame::{Code, EntryKind, Identity, Meta};
use crate::proto::xfer::{Op, Outcome, XferClient};
use crate::proto::FileRef;
use crate::stats::Stats;
use anyhow::{anyhow, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A failure the command reports: bad usage (exit 2) or a failed transfer (exit 1).
#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Failed(e)
    }
}

/// A refusal from the server, as an error that keeps its code.
#[derive(Debug)]
pub struct Refused {
    pub code: Code,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server: {} ({})", self.message, self.code.name())
    }
}

impl std::error::Error for Refused {}

/// One client connection.
pub struct Conn {
    b: Blocking<XferClient>,
    addr: SocketAddr,
    /// What the server said in HELLO.
    pub uploads: bool,
    pub replace: bool,
    pub max_upload: u64,
}

/// Resolves `host:port`, with or without an `xfer://` in front.
pub fn resolve(addr: &str) -> std::result::Result<SocketAddr, String> {
    let bare = addr
        .strip_prefix("xfer://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    if bare.contains("://") {
        return Err(format!(
            "{addr}: only xfer:// addresses are served by this client"
        ));
    }
    let mut it = bare
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: not HOST:PORT ({e})"))?;
    it.next().ok_or_else(|| format!("{addr}: no address"))
}

impl Conn {
    /// Connects and says HELLO.
    pub fn connect(addr: SocketAddr, limits: Limits) -> Result<Conn> {
        let b = Blocking::connect(addr, XferClient::new(), limits)
            .with_context(|| format!("connecting to {addr}"))?;
        let mut c = Conn {
            b,
            addr,
            uploads: false,
            replace: false,
            max_upload: 0,
        };
        match c.run(Op::Hello)? {
            Outcome::Hello {
                uploads,
                replace,
                max_upload,
                ..
            } => {
                c.uploads = uploads;
                c.replace = replace;
                c.max_upload = max_upload;
                Ok(c)
            }
            other => Err(c.unexpected(other)),
        }
    }

    /// The connection's live byte counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.b.stats()
    }

    /// Runs one operation to its outcome; a refusal is an error with its code.
    fn run(&mut self, op: Op) -> Result<Outcome> {
        self.b.proto().start(op);
        let driven = self.b.drive_until(XferClient::has_outcome);
        match self.b.proto().take_outcome() {
            Some(Outcome::Refused { code, message }) => Err(Refused { code, message }.into()),
            Some(Outcome::Failed(why)) => Err(anyhow!("{why}")),
            Some(o) => Ok(o),
            None => match driven {
                Err(why) => Err(anyhow!(
                    "connection to {} lost: {}",
                    self.addr,
                    close_text(why)
                )),
                Ok(()) => Err(anyhow!("the operation ended without an answer")),
            },
        }
    }

    fn unexpected(&self, o: Outcome) -> anyhow::Error {
        anyhow!("{} answered out of turn: {o:?}", self.addr)
    }

    pub fn stat(&mut self, path: &str) -> Result<Meta> {
        match self.run(Op::Stat(path.as_bytes().to_vec()))? {
            Outcome::Stat(m) => Ok(m),
            o => Err(self.unexpected(o)),
        }
    }

    pub fn list(&mut self, dir: &str) -> Result<Vec<crate::proto::xfer::frame::Entry>> {
        match self.run(Op::List(dir.as_bytes().to_vec()))? {
            Outcome::List(l) => Ok(l),
            o => Err(self.unexpected(o)),
        }
    }

    /// Downloads `path` from `offset` into `file`, on the condition that it is still
    /// `identity` (unless that is zero).
    pub fn get(
        &mut self,
        path: &str,
        file: &File,
        offset: u64,
        identity: Identity,
    ) -> Result<Meta> {
        let file = FileRef::new(file.try_clone().context("duplicating the local file")?);
        let op = Op::Get {
            path: path.as_bytes().to_vec(),
            offset,
            identity,
            file,
        };
        match self.run(op)? {
            Outcome::Got { meta, .. } => Ok(meta),
            o => Err(self.unexpected(o)),
        }
    }

    /// Uploads the first `len` bytes of `file` as `path`.
    pub fn put(&mut self, path: &str, file: &File, len: u64, replace: bool) -> Result<u64> {
        let file = FileRef::new(file.try_clone().context("duplicating the local file")?);
        let op = Op::Put {
            path: path.as_bytes().to_vec(),
            file,
            len,
            replace,
        };
        match self.run(op)? {
            Outcome::Put { len } => Ok(len),
            o => Err(self.unexpected(o)),
        }
    }
}

fn close_text(why: crate::CloseReason) -> String {
    use crate::CloseReason::*;
    match why {
        Done => "the server closed it".into(),
        Timeout => "timed out waiting for the server".into(),
        SendTimeout => "the server stopped reading".into(),
        FileShrunk => "the local file shrank while it was being sent".into(),
        Error(kind) => std::io::Error::from(kind).to_string(),
        other => format!("{other:?}"),
    }
}

/// What `get` was asked.
pub struct GetArgs {
    pub addr: String,
    pub remote: String,
    pub local: Option<PathBuf>,
    pub resume: bool,
    pub force: bool,
    pub limits: Limits,
}

/// What `put` was asked.
pub struct PutArgs {
    pub addr: String,
    pub local: PathBuf,
    pub remote: Option<String>,
    pub replace: bool,
    pub limits: Limits,
}

/// The record an interrupted download leaves beside its file: the identity of the
/// version being fetched, so `--continue` goes on only with the same version.
fn record_path(local: &Path) -> PathBuf {
    let mut s = local.as_os_str().to_owned();
    s.push(".ringserve-resume");
    PathBuf::from(s)
}

fn last_segment(p: &str) -> Option<&str> {
    p.rsplit('/')
        .find(|s| !s.is_empty() && *s != "." && *s != "..")
}

/// `ringserve get ADDR REMOTE [-o LOCAL] [-c] [--force]`.
pub fn get(a: GetArgs) -> std::result::Result<(), Failure> {
    let addr = resolve(&a.addr).map_err(Failure::Usage)?;
    let local = match &a.local {
        Some(l) => l.clone(),
        None => PathBuf::from(last_segment(&a.remote).ok_or_else(|| {
            Failure::Usage(format!("{}: no file name in it; give -o LOCAL", a.remote))
        })?),
    };
    // `-o -` is stdout; a device or a FIFO (`-o /dev/null`) is written as it is.
    // Neither is a file to keep, resume or clobber.
    let special = local.as_os_str() == "-"
        || std::fs::metadata(&local).is_ok_and(|m| !m.is_file() && !m.is_dir());
    if special {
        if a.resume {
            return Err(Failure::Usage(format!(
                "{}: --continue needs a regular file",
                local.display()
            )));
        }
        return get_to_stream(a, addr, &local);
    }
    let exists = local.exists();
    if exists && !a.resume && !a.force {
        return Err(Failure::Usage(format!(
            "{} exists; --continue resumes it, --force replaces it",
            local.display()
        )));
    }
    let mut conn = Conn::connect(addr, a.limits)?;
    let meta = conn.stat(&a.remote).with_context(|| a.remote.clone())?;
    if meta.kind != EntryKind::File {
        return Err(anyhow!("{}: not a regular file", a.remote).into());
    }
    let record = record_path(&local);
    let mut offset = 0;
    let mut identity = meta.identity;
    let mut file = None;
    if exists && a.resume {
        let have = std::fs::metadata(&local)
            .with_context(|| format!("{}", local.display()))?
            .len();
        match std::fs::read_to_string(&record).ok().and_then(|s| Identity::from_hex(&s)) {
            Some(id) if id == meta.identity && have <= meta.len => {
                offset = have;
                identity = id;
                file = Some(OpenOptions::new().write(true).open(&local).with_context(|| format!("{}", local.display()))?);
            }
            Some(_) if !a.force => {
                return Err(anyhow!(
                    "{}: the remote file changed since {} was started; --force downloads it again",
                    a.remote,
                    local.display()
                )
                .into())
            }
            None if have == meta.len && !a.force => {
                say_line(&format!("{}: already complete ({have} bytes)", local.display()));
                return Ok(());
            }
            None if !a.force => {
                return Err(anyhow!(
                    "{}: no resume record ({} is missing), so it cannot be continued safely; --force downloads it again",
                    local.display(),
                    record.display()
                )
                .into())
            }
            _ => {} // --force: start over
        }
    }
    let file = match file {
        Some(f) => f,
        None => {
            let mut o = OpenOptions::new();
            o.write(true);
            if exists {
                o.truncate(true);
            } else {
                o.create_new(true);
            }
            o.open(&local)
                .with_context(|| format!("creating {}", local.display()))?
        }
    };
    std::fs::write(&record, meta.identity.to_hex())
        .with_context(|| format!("writing the resume record {}", record.display()))?;
    let total = meta.len - offset;
    let r = tracked(conn, total, Direction::Down, &a.remote, |c| {
        c.get(&a.remote, &file, offset, identity)
    });
    match r {
        Ok(_) => {
            let _ = std::fs::remove_file(&record);
            Ok(())
        }
        Err(e) => {
            if let Some(Refused {
                code: Code::Changed,
                ..
            }) = e.downcast_ref()
            {
                return Err(anyhow!(
                    "{}: the remote file changed since {} was started; --force downloads it again",
                    a.remote,
                    local.display()
                )
                .into());
            }
            Err(e.context(format!("downloading {}", a.remote)).into())
        }
    }
}

/// `get` into stdout, a device or a FIFO: no resume record, nothing truncated.
fn get_to_stream(a: GetArgs, addr: SocketAddr, local: &Path) -> std::result::Result<(), Failure> {
    let file = if local.as_os_str() == "-" {
        use std::os::fd::AsFd;
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stdout")?;
        File::from(fd)
    } else {
        OpenOptions::new()
            .write(true)
            .open(local)
            .with_context(|| format!("{}", local.display()))?
    };
    let mut conn = Conn::connect(addr, a.limits)?;
    let meta = conn.stat(&a.remote).with_context(|| a.remote.clone())?;
    if meta.kind != EntryKind::File {
        return Err(anyhow!("{}: not a regular file", a.remote).into());
    }
    tracked(conn, meta.len, Direction::Down, &a.remote, |c| {
        c.get(&a.remote, &file, 0, meta.identity)
    })
    .map(drop)
    .map_err(|e| e.context(format!("downloading {}", a.remote)).into())
}

/// `ringserve put ADDR LOCAL [REMOTE] [--replace]`.
pub fn put(a: PutArgs) -> std::result::Result<(), Failure> {
    let addr = resolve(&a.addr).map_err(Failure::Usage)?;
    let remote = match &a.remote {
        Some(r) => r.clone(),
        None => a
            .local
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                Failure::Usage(format!("{}: no file name; give REMOTE", a.local.display()))
            })?
            .to_string(),
    };
    let file = File::open(&a.local).with_context(|| format!("{}", a.local.display()))?;
    let m = file
        .metadata()
        .with_context(|| format!("{}", a.local.display()))?;
    if !m.is_file() {
        return Err(anyhow!("{}: not a regular file", a.local.display()).into());
    }
    let len = m.len();
    let conn = Conn::connect(addr, a.limits)?;
    if !conn.uploads {
        return Err(
            anyhow!("{addr} does not accept uploads (it runs without --allow-upload)").into(),
        );
    }
    if a.replace && !conn.replace {
        return Err(anyhow!("{addr} does not allow replacing files (--allow-replace)").into());
    }
    if len > conn.max_upload {
        let max = conn.max_upload;
        return Err(anyhow!(
            "{}: {len} bytes is over the server's upload limit of {max}",
            a.local.display()
        )
        .into());
    }
    tracked(conn, len, Direction::Up, &remote, |c| {
        c.put(&remote, &file, len, a.replace)
    })
    .map(drop)
    .map_err(|e| {
        e.context(format!("uploading {} as {remote}", a.local.display()))
            .into()
    })
}

/// Runs one transfer of `total` bytes on `conn` under a progress bar (or its summary
/// line), then closes the connection: the bar finishes on success and is abandoned on
/// failure. What all three transfer commands share.
fn tracked<T>(
    mut conn: Conn,
    total: u64,
    d: Direction,
    name: &str,
    run: impl FnOnce(&mut Conn) -> Result<T>,
) -> Result<T> {
    let progress = Progress::start(conn.stats(), total, d, name);
    let r = run(&mut conn);
    let stats = conn.stats();
    drop(conn);
    match &r {
        Ok(_) => progress.finish(total, &stats, d),
        Err(_) => progress.abandon(),
    }
    r
}

/// `ringserve ls ADDR [DIR] [--json]`.
pub fn ls(addr: &str, dir: &str, json: bool, limits: Limits) -> std::result::Result<(), Failure> {
    let addr = resolve(addr).map_err(Failure::Usage)?;
    let mut conn = Conn::connect(addr, limits)?;
    let entries = conn
        .list(dir)
        .with_context(|| format!("listing {}", if dir.is_empty() { "/" } else { dir }))?;
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": String::from_utf8_lossy(&e.name),
                    "kind": kind_name(e.kind),
                    "size": e.len,
                    "mtime": e.mtime_sec,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(v)).context("writing to stdout")?;
    } else {
        for e in &entries {
            let name = String::from_utf8_lossy(&e.name);
            let slash = if e.kind == EntryKind::Dir { "/" } else { "" };
            let when = httpdate::fmt_http_date(
                std::time::UNIX_EPOCH + Duration::from_secs(e.mtime_sec.max(0) as u64),
            );
            writeln!(
                out,
                "{:<4} {:>14}  {when}  {name}{slash}",
                kind_name(e.kind),
                e.len
            )
            .context("writing to stdout")?;
        }
    }
    Ok(())
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Other => "other",
    }
}

fn say_line(s: &str) {
    let _ = writeln!(std::io::stderr(), "{s}");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Down,
    Up,
}

/// Body bytes moved so far, by way: (zero-copy, copied).
fn moved(st: &Stats, d: Direction) -> (u64, u64) {
    let g = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
    match d {
        Direction::Down => (g(&st.bytes_recv_splice), g(&st.bytes_recv_copy)),
        Direction::Up => (g(&st.bytes_sendfile), g(&st.bytes_copy)),
    }
}

/// A bar of `total` bytes named `name`: the one style of the client and `compress`.
pub(crate) fn byte_bar(total: u64, name: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(name.to_string());
    bar
}

/// A progress bar on a terminal (drawn from a ticker thread that reads the
/// connection's counters), or, when stderr is not a terminal, one summary line.
struct Progress {
    started: Instant,
    bar: Option<(
        indicatif::ProgressBar,
        Arc<AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Progress {
    fn start(st: Arc<Stats>, total: u64, d: Direction, name: &str) -> Progress {
        let started = Instant::now();
        if !std::io::stderr().is_terminal() {
            return Progress { started, bar: None };
        }
        let bar = byte_bar(total, name);
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bar.clone(), stop.clone());
        let base = moved(&st, d);
        let ticker = std::thread::spawn(move || {
            while !s.load(Relaxed) {
                let (z, c) = moved(&st, d);
                b.set_position((z + c).saturating_sub(base.0 + base.1).min(total));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Progress {
            started,
            bar: Some((bar, stop, ticker)),
        }
    }

    fn stop(&mut self) -> Option<indicatif::ProgressBar> {
        let (bar, stop, ticker) = self.bar.take()?;
        stop.store(true, Relaxed);
        let _ = ticker.join();
        Some(bar)
    }

    fn finish(mut self, bytes: u64, st: &Stats, d: Direction) {
        let secs = self.started.elapsed().as_secs_f64();
        let (zero, _) = moved(st, d);
        let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
        let how = match d {
            Direction::Down => "spliced",
            Direction::Up => "by sendfile",
        };
        let line = format!(
            "{} {bytes} bytes in {secs:.2} s ({:.1} MB/s), {} {how}",
            if d == Direction::Down {
                "received"
            } else {
                "sent"
            },
            rate / 1e6,
            zero.min(bytes)
        );
        match self.stop() {
            Some(bar) => {
                bar.set_position(bytes);
                bar.finish();
            }
            None => say_line(&line),
        }
    }

    fn abandon(mut self) {
        if let Some(bar) = self.stop() {
            bar.abandon();
        }
    }
}

/// Sizes as `--max-upload-size` takes them: bytes, or with K, M, G, T (powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some(c @ ('k' | 'K' | 'm' | 'M' | 'g' | 'G' | 't' | 'T')) => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                _ => 40,
            };
            (&t[..t.len() - 1], 1u64 << shift)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s}: not a size (bytes, or with K/M/G/T)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("{s}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_addresses_parse() {
        assert_eq!(parse_size("10"), Ok(10));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(resolve("xfer://127.0.0.1:9/").unwrap().port(), 9);
        assert!(resolve("http://127.0.0.1:9").is_err());
        assert!(resolve("nope").is_err());
        assert_eq!(last_segment("a/b/"), Some("b"));
        assert_eq!(last_segment("/"), None);
    }
}
