//! The only file handles a protocol ever holds. Both are opaque: the descriptor inside
//! is reachable through `pub(crate)` accessors that only the backends and `fs.rs` call
//! (a test in this module checks that nothing else under `src/proto/` does), so a
//! protocol, in this crate or outside it, cannot do I/O with them.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// Longest start of a file a [`FileRef`] keeps in memory once a backend has read it
/// (bytes): a small body read once is then sent from memory while the handle lives.
const KEEP_BODY_MAX: usize = 16 * 1024;

/// A file the backend opened or created for the protocol. It can be put in a
/// [`Chunk::File`](super::Chunk::File), a [`RecvFile`](super::RecvFile) or an
/// [`FsOp`](super::FsOp), compared and dropped, but not read, written or seeked.
/// Cloning shares the descriptor, as the open-file cache does.
#[derive(Clone)]
pub struct FileRef(Arc<Shared>);

struct Shared {
    file: File,
    /// The file's first bytes as a backend once read them whole (at most
    /// [`KEEP_BODY_MAX`]). As fresh as the handle: the open-file cache drops a handle
    /// whose file changed (`fstat` at most a loop turn before the request), and a new
    /// handle starts with nothing kept.
    start: OnceLock<Box<[u8]>>,
    /// A backend sent a body of this handle whole: every page of it had been read in
    /// by then (no read-ahead of it still in flight).
    sent: AtomicBool,
    /// Variants of this file a protocol found missing, one bit each (HTTP's
    /// precompressed sidecars, `Coding::bit`): not looked for again through this handle.
    absent: AtomicU8,
}

impl FileRef {
    pub(crate) fn new(file: File) -> FileRef {
        FileRef(Arc::new(Shared {
            file,
            start: OnceLock::new(),
            sent: AtomicBool::new(false),
            absent: AtomicU8::new(0),
        }))
    }

    /// The descriptor, for the backends' system calls.
    pub(crate) fn file(&self) -> &File {
        &self.0.file
    }

    /// Bytes `offset..offset + len` of the file from memory, if a backend kept them.
    pub(crate) fn kept(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = self.0.start.get()?;
        let end = offset.checked_add(len)?;
        start.get(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
    }

    /// Whether a whole read of `len` bytes at `offset` would be kept by
    /// [`keep_start`]: from offset 0, at most [`KEEP_BODY_MAX`], nothing kept yet.
    ///
    /// [`keep_start`]: FileRef::keep_start
    pub(crate) fn would_keep(&self, offset: u64, len: usize) -> bool {
        offset == 0 && len <= KEEP_BODY_MAX && self.0.start.get().is_none()
    }

    /// Keeps `bytes`, read whole from offset 0 through this handle, for [`kept`]
    /// (the first such read only; one longer than [`KEEP_BODY_MAX`] is not kept).
    ///
    /// [`kept`]: FileRef::kept
    pub(crate) fn keep_start(&self, bytes: &[u8]) {
        if self.would_keep(0, bytes.len()) {
            let _ = self.0.start.set(bytes.into());
        }
    }

    /// Notes that a body of this handle went out whole.
    pub(crate) fn mark_sent(&self) {
        self.0.sent.store(true, Ordering::Relaxed);
    }

    /// Whether a body of this handle went out whole before ([`mark_sent`]).
    ///
    /// [`mark_sent`]: FileRef::mark_sent
    pub(crate) fn was_sent(&self) -> bool {
        self.0.sent.load(Ordering::Relaxed)
    }

    /// Notes that the variants in `bits` of this file are missing (or unusable), so a
    /// protocol need not look for them again while it serves through this handle. A
    /// handle lives in the open-file cache for `--open-file-cache-valid` at most, so a
    /// variant added later is looked for at most that late; meanwhile the file itself
    /// is sent. Without the cache every request opens its own handle and looks afresh.
    pub(crate) fn note_absent(&self, bits: u8) {
        self.0.absent.fetch_or(bits, Ordering::Relaxed);
    }

    /// The variants [`FileRef::note_absent`] marked.
    pub(crate) fn absent(&self) -> u8 {
        self.0.absent.load(Ordering::Relaxed)
    }

    /// The file itself when this is its last holder (so a backend can close it its own
    /// way, as IORING_OP_CLOSE); otherwise the handle back.
    pub(crate) fn into_only(self) -> Result<File, FileRef> {
        // A plain load first: while the open-file cache holds its share, as it does for
        // every hot file, the answer is no without a compare-exchange on the count. If
        // the other holder lets go between the load and the caller's drop, that drop is
        // the last one and closes the file itself, which is still correct.
        if Arc::strong_count(&self.0) > 1 {
            return Err(self);
        }
        Arc::try_unwrap(self.0).map(|s| s.file).map_err(FileRef)
    }

    /// How many handles share the descriptor (the cache's among them), for tests.
    #[cfg(test)]
    pub(crate) fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Whether both name the same open file description (not merely the same inode).
    pub fn same(&self, other: &FileRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for FileRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileRef")
    }
}

/// A file made by [`FsOp::Create`](super::FsOp::Create) and not linked yet: write it
/// with [`Step::RecvFile`](super::Step::RecvFile), sync it, then give it its name with
/// [`FsOp::Link`](super::FsOp::Link). Dropping it abandons the file: the driver removes
/// it (a hidden name is unlinked, an `O_TMPFILE` inode simply goes).
#[derive(Debug)]
pub struct TempFile {
    file: FileRef,
    /// Alive while this handle is; the driver watches it through a [`Weak`], which
    /// also says which of the connection's files this is.
    live: Arc<()>,
}

impl TempFile {
    pub(crate) fn new(file: FileRef) -> TempFile {
        TempFile {
            file,
            live: Arc::new(()),
        }
    }

    /// The file, to write and sync.
    pub fn file_ref(&self) -> &FileRef {
        &self.file
    }

    /// A watch that says when this handle has been dropped.
    pub(crate) fn watch(&self) -> Weak<()> {
        Arc::downgrade(&self.live)
    }
}

#[cfg(test)]
mod tests {
    /// "No I/O in proto/" as a checked fact: outside this file (and unit tests, which
    /// play the backend), nothing under src/proto/ reaches a descriptor or the file
    /// system, the clock or the crate's system-call layer.
    #[test]
    fn protocols_cannot_reach_a_descriptor() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/proto");
        if !std::path::Path::new(dir).is_dir() {
            // A kernel-compat guest carries the test binaries, not the sources; the
            // check is about the sources and runs wherever they are (cargo test, CI).
            use std::io::Write;
            let line = format!("SKIP protocols_cannot_reach_a_descriptor: no sources at {dir}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            return;
        }
        let mut checked = 0;
        let mut stack = vec![std::path::PathBuf::from(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if name == "file.rs" || name == "tests.rs" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // A file's own `#[cfg(test)] mod tests` plays the backend.
                let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
                for banned in [
                    ".file()",
                    "into_only",
                    "std::fs",
                    "crate::sys",
                    "crate::fs",
                    "crate::backend",
                    "std::net::TcpStream",
                    "Instant::now",
                    "SystemTime::now",
                    "std::thread",
                    "libc::read",
                    "libc::write",
                ] {
                    assert!(!code.contains(banned), "{} uses {banned}", path.display());
                }
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} files checked");
    }
}
