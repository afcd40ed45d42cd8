//! `ringserve compress ROOT`: writes the `.br` and `.zst` sidecars that
//! `serve --precompressed` sends, for users with no build step that makes them.
//!
//! What it promises:
//! - **Only what the server would serve as a sidecar.** Every regular file beneath ROOT
//!   whose type `--precompressed` applies to ([`http1::precompressible`]), at least
//!   `min_size` bytes long. Symlinks are not followed and dotfiles are skipped; every
//!   path is opened and written through [`Root`], so nothing outside ROOT is read or
//!   written, whatever its links say. Names that are not UTF-8 are reached as a request
//!   for them is ([`crate::proto::path_from_bytes`]).
//! - **A sidecar only where it helps.** One that would not be smaller than its file is
//!   not written, and an old one not in step with the file is removed: were the file's
//!   mtime to go back (a rollback), the old one would look current.
//! - **In step with the file.** A sidecar gets its file's mtime, owner, group and
//!   permission bits (no setuid), so the server's "no older than the file" test holds
//!   exactly while the file is unchanged, and a sidecar is readable by exactly those
//!   who can read its file (where the owner cannot be given, its group gets nothing).
//!   A run skips sidecars in step: the same mtime, owner and mode, and a ctime no older
//!   than the file's (content rewritten under a kept mtime, as `tar` and `rsync -t` do,
//!   moves the file's ctime). So running it again after a deploy compresses only what
//!   changed. A file that changes, or is renamed over, while it is compressed is left
//!   for the next run.
//! - **Never half-written.** A sidecar is written as an unnamed file (`O_TMPFILE`, or a
//!   hidden name the server never serves), fsynced, then renamed over the old one: the
//!   server sees the old sidecar or the whole new one. The directory is not fsynced: a
//!   crash may lose the rename, which leaves the old sidecar, stale and ignored.

use crate::client::Failure;
use crate::fs::Root;
use crate::proto::http1::{self, Coding};
use crate::proto::{FileKind, FileMeta};
use anyhow::{anyhow, Context};
use std::fs::{FileTimes, Permissions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// What to compress and how.
#[derive(Debug, Clone)]
pub struct CompressArgs {
    pub root: PathBuf,
    /// Sidecars to write: [`Coding::Br`] and [`Coding::Zstd`].
    pub codings: Vec<Coding>,
    /// Files shorter than this are left alone.
    pub min_size: u64,
    /// Brotli quality, 0 to 11.
    pub brotli_quality: u32,
    /// zstd level, 1 to 22.
    pub zstd_level: i32,
    /// Rewrite sidecars that are already in step.
    pub force: bool,
    /// A line per sidecar written or passed over.
    pub verbose: bool,
    /// Files compressed at once (threads).
    pub jobs: usize,
}

/// What one run did, by sidecar.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Files of a compressible type and size that were looked at.
    pub files: u64,
    /// Sidecars written, the bytes of their files, and their own bytes.
    pub written: u64,
    pub written_from: u64,
    pub written_bytes: u64,
    /// Sidecars already in step with their file.
    pub in_step: u64,
    /// Sidecars not written because they would not be smaller.
    pub not_smaller: u64,
    /// Files that changed while being compressed.
    pub changed: u64,
    /// Files or sidecars that failed (each said on stderr).
    pub failed: u64,
    /// Names too long to take a sidecar's suffix (NAME_MAX).
    pub too_long: u64,
}

impl Summary {
    fn add(&mut self, o: &Summary) {
        self.files += o.files;
        self.written += o.written;
        self.written_from += o.written_from;
        self.written_bytes += o.written_bytes;
        self.in_step += o.in_step;
        self.not_smaller += o.not_smaller;
        self.changed += o.changed;
        self.failed += o.failed;
        self.too_long += o.too_long;
    }

    /// The summary line: `6 files: 12 sidecars written (812 KiB from 3.1 MiB, 26%); ...`.
    pub fn line(&self) -> String {
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut s = format!(
            "{}: {} written",
            plural(self.files, "file", "files"),
            plural(self.written, "sidecar", "sidecars")
        );
        if self.written > 0 {
            let pct = 100.0 * self.written_bytes as f64 / self.written_from.max(1) as f64;
            s += &format!(
                " ({} from {}, {pct:.0}%)",
                http1::human_size(self.written_bytes),
                http1::human_size(self.written_from)
            );
        }
        for (n, what) in [
            (self.in_step, "already in step"),
            (self.not_smaller, "not smaller, not written"),
            (
                self.changed,
                "changed while compressing, left for the next run",
            ),
            (self.too_long, "names too long for a sidecar, skipped"),
            (self.failed, "failed"),
        ] {
            if n > 0 {
                s += &format!("; {n} {what}");
            }
        }
        s
    }
}

/// Compresses every file beneath `args.root` that sidecars apply to. `Usage` for a root
/// that cannot be opened or a bad setting; `Failed` when any file failed (each named on
/// stderr as it happened), after doing all the others.
pub fn compress(args: &CompressArgs) -> Result<Summary, Failure> {
    if args.codings.is_empty() {
        return Err(Failure::Usage("no sidecar formats to write".into()));
    }
    if let Some(c) = args.codings.iter().find(|c| **c == Coding::Gzip) {
        return Err(Failure::Usage(format!(
            "compress writes br and zstd sidecars, not {}: `gzip -k -9 FILE` writes FILE.gz",
            c.token()
        )));
    }
    if args.brotli_quality > 11 {
        return Err(Failure::Usage("--brotli-quality is 0 to 11".into()));
    }
    if !(1..=22).contains(&args.zstd_level) {
        return Err(Failure::Usage("--zstd-level is 1 to 22".into()));
    }
    let root = Root::open(&args.root)
        .map_err(|e| Failure::Usage(format!("root {}: {e}", args.root.display())))?
        .with_max_entries(usize::MAX);
    let mut total = Summary::default();
    let files = walk(&root, args.min_size, &mut total)?;
    total.files = files.len() as u64;
    let next = AtomicUsize::new(0);
    let sum = Mutex::new(total);
    let bar = progress(files.iter().map(|f| f.1).sum());
    std::thread::scope(|s| {
        for _ in 0..args.jobs.clamp(1, files.len().max(1)) {
            s.spawn(|| {
                let mut mine = Summary::default();
                while let Some((rel, len)) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    for &coding in &args.codings {
                        one(&root, rel, coding, args, &mut mine);
                    }
                    if let Some(b) = &bar {
                        b.inc(*len);
                    }
                }
                sum.lock().unwrap_or_else(|e| e.into_inner()).add(&mine);
            });
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let total = sum.into_inner().unwrap_or_else(|e| e.into_inner());
    if total.failed > 0 {
        return Err(Failure::Failed(anyhow!("{}", total.line())));
    }
    Ok(total)
}

/// A byte-count bar on a terminal; nothing otherwise.
fn progress(total: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !io::stderr().is_terminal() {
        return None;
    }
    Some(crate::client::byte_bar(total, "compress"))
}

/// Every regular file beneath the root that sidecars apply to, of at least `min` bytes,
/// with its length, the largest first (so the threads finish together). Symlinks
/// (listed as `Other`) are not followed; dotfiles and names with no room for a suffix
/// are skipped.
fn walk(root: &Root, min: u64, sum: &mut Summary) -> Result<Vec<(String, u64)>, Failure> {
    let mut files = Vec::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let listing = match root.read_dir(&dir) {
            Ok(l) => l,
            Err(e) if dir.is_empty() => {
                return Err(Failure::Usage(format!("root: cannot list it: {e}")))
            }
            Err(e) => {
                crate::say!("ringserve: compress: cannot list {dir}/: {e}");
                sum.failed += 1;
                continue;
            }
        };
        for e in listing.entries {
            if e.name.first() == Some(&b'.') {
                continue;
            }
            // NAME_MAX: a name with no room for `.zst` can have no sidecar.
            if e.kind == FileKind::File && e.name.len() + ".zst".len() > 255 {
                sum.too_long += 1;
                continue;
            }
            // Escaped as a request for it resolves (names that are not UTF-8 too).
            let name = crate::proto::path_from_bytes(&e.name);
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            match e.kind {
                FileKind::Dir => dirs.push(rel),
                FileKind::File if e.len >= min && http1::precompressible(&rel) => {
                    files.push((rel, e.len))
                }
                _ => {}
            }
        }
    }
    files.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(files)
}

/// Writes `rel`'s sidecar in `coding`, if it is worth writing, and counts what happened.
fn one(root: &Root, rel: &str, coding: Coding, args: &CompressArgs, sum: &mut Summary) {
    let side = format!("{rel}{}", coding.suffix());
    match write_sidecar(root, rel, &side, coding, args) {
        Ok(Done::Written { from, to }) => {
            sum.written += 1;
            sum.written_from += from;
            sum.written_bytes += to;
            if args.verbose {
                crate::say!(
                    "{side}: {} from {}",
                    http1::human_size(to),
                    http1::human_size(from)
                );
            }
        }
        Ok(Done::InStep) => sum.in_step += 1,
        Ok(Done::NotSmaller { from, to }) => {
            sum.not_smaller += 1;
            if args.verbose {
                crate::say!("{side}: not written, {to} bytes is no smaller than {from}");
            }
        }
        Ok(Done::Changed) => {
            sum.changed += 1;
            crate::say!(
                "ringserve: compress: {rel} changed while it was compressed; left for the next run"
            );
        }
        Err(e) => {
            sum.failed += 1;
            crate::say!("ringserve: compress: {side}: {e:#}");
        }
    }
}

enum Done {
    Written { from: u64, to: u64 },
    InStep,
    NotSmaller { from: u64, to: u64 },
    Changed,
}

fn write_sidecar(
    root: &Root,
    rel: &str,
    side: &str,
    coding: Coding,
    args: &CompressArgs,
) -> anyhow::Result<Done> {
    let orig = match root.open_beneath(rel) {
        Ok(o) => o,
        // Removed since the walk (a deploy in progress): nothing to be in step with.
        Err(e) if crate::proto::is_missing(&e) => return Ok(Done::Changed),
        Err(e) => return Err(e).context("open"),
    };
    let meta = orig.meta;
    if meta.kind != FileKind::File {
        // Replaced by something else since the walk.
        return Ok(Done::Changed);
    }
    let file = orig.file.file();
    let fmeta = file.metadata().context("fstat")?;
    // An existing sidecar: in step, or to be replaced (or removed, if none is written).
    let old = root
        .open_beneath(side)
        .ok()
        .filter(|s| s.meta.kind == FileKind::File);
    if let (false, Some(s)) = (args.force, &old) {
        if in_step(&fmeta, &meta, s) {
            return Ok(Done::InStep);
        }
    }
    let mut temp = root.create(side).context("create")?;
    let out = temp.file().file();
    let encoded = {
        let mut w = Counting {
            inner: BufWriter::with_capacity(128 * 1024, out),
            n: 0,
        };
        let mut r = io::BufReader::with_capacity(128 * 1024, file).take(meta.len);
        encode(coding, &mut r, &mut w, meta.len, args)
            .and_then(|()| w.inner.flush())
            .map(|()| w.n)
    };
    // The file must be what it was when opened, or the sidecar is of no version of it
    // (one that shrank while being read fails the encoder: the same answer).
    if crate::fs::meta_of(file).ok() != Some(meta) {
        return Ok(Done::Changed);
    }
    let written = encoded.context("compress")?;
    if written >= meta.len {
        // An old sidecar not in step must not stay: were the file's mtime to go back
        // (a rollback), it would look current.
        if old.is_some() {
            root.remove_entry(side).context("remove the old sidecar")?;
        }
        return Ok(Done::NotSmaller {
            from: meta.len,
            to: written,
        });
    }
    // The file's owner and mode, so the sidecar is readable by exactly those who can
    // read the file. Where they cannot be given (a user compressing files not their
    // own), the sidecar's group, which is not the file's, gets nothing.
    let mut mode = fmeta.mode() & 0o777;
    if std::os::unix::fs::fchown(out, Some(fmeta.uid()), Some(fmeta.gid())).is_err() {
        mode &= 0o707;
    }
    out.set_permissions(Permissions::from_mode(mode))
        .context("chmod")?;
    out.set_times(FileTimes::new().set_modified(mtime(&meta)))
        .context("set its mtime")?;
    out.sync_all().context("fsync")?;
    // The path must still name the file compressed (a deploy renames files over).
    match root.open_beneath(rel) {
        Ok(now) if now.meta == meta => {}
        _ => return Ok(Done::Changed),
    }
    root.link_entry(&mut temp, true)
        .context("rename into place")?;
    Ok(Done::Written {
        from: meta.len,
        to: written,
    })
}

/// Whether sidecar `s` is in step with the file (`fmeta`, `meta`): the same mtime, owner
/// and mode, and changed no earlier than the file was (a file rewritten with its mtime
/// kept, as `tar` and `rsync -t` do, has a newer ctime, which nothing can set back).
fn in_step(fmeta: &std::fs::Metadata, meta: &FileMeta, s: &crate::proto::Opened) -> bool {
    let Ok(sm) = s.file.file().metadata() else {
        return false;
    };
    (s.meta.mtime_sec, s.meta.mtime_nsec) == (meta.mtime_sec, meta.mtime_nsec)
        && (sm.uid(), sm.gid()) == (fmeta.uid(), fmeta.gid())
        && sm.mode() & 0o777 == fmeta.mode() & 0o777
        && (sm.ctime(), sm.ctime_nsec()) >= (fmeta.ctime(), fmeta.ctime_nsec())
}

/// Compresses `len` bytes of `r` into `w`.
fn encode(
    coding: Coding,
    r: &mut impl Read,
    w: &mut impl Write,
    len: u64,
    args: &CompressArgs,
) -> io::Result<()> {
    match coding {
        Coding::Br => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: args.brotli_quality as i32,
                // A 4 MiB window (brotli's own default for large input); the
                // size hint lets it pick a smaller one for small files.
                lgwin: 22,
                size_hint: len as usize,
                ..Default::default()
            };
            brotli::BrotliCompress(r, w, &params).map(drop)
        }
        Coding::Zstd => {
            let mut e = zstd::stream::Encoder::new(w, args.zstd_level)?;
            // The frame records the size, so a decoder can size its buffer.
            e.set_pledged_src_size(Some(len))?;
            e.include_contentsize(true)?;
            io::copy(r, &mut e)?;
            e.finish().map(drop)
        }
        Coding::Gzip => Err(io::Error::from(io::ErrorKind::Unsupported)),
    }
}

/// A writer that counts what it was given.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn mtime(m: &FileMeta) -> SystemTime {
    let secs = Duration::from_secs(m.mtime_sec.unsigned_abs());
    let at = if m.mtime_sec >= 0 {
        SystemTime::UNIX_EPOCH + secs
    } else {
        SystemTime::UNIX_EPOCH - secs
    };
    at + Duration::from_nanos(u64::from(m.mtime_nsec))
}
