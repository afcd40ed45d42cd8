//! Resolving request paths beneath the served root.
//!
//! The root is held open by descriptor and every lookup is relative to it, so renaming or
//! replacing the root's path after startup changes nothing. Containment is the kernel's
//! job where it can do it: `openat2(RESOLVE_BENEATH)` refuses, atomically, any lookup that
//! would leave the root (`..` past it, absolute symlinks, magic links). Where `openat2`
//! is missing (Linux < 5.6) or filtered (seccomp), an equivalent walk does the same one
//! component at a time with `O_NOFOLLOW`, reading each symlink and splicing its target
//! into the remaining path. Both are meant to give the same answer for every path; the
//! tests hold them to that.
//!
//! Errors stay raw OS errors so the HTTP layer can map errno: `EXDEV`/`ELOOP` for escapes
//! and loops (403), `ENOENT`/`ENOTDIR` (404), `EINVAL` for a path that should never have
//! got here (absolute, NUL, `..`).
//!
//! **Writing** (the write path of INVARIANTS §3) resolves the same way: the directory a
//! new file goes in is opened beneath the root like any lookup, and the file is then
//! created, linked, renamed or removed by one `*at` call on a single name in it, which
//! never follows a symlink in that last component. So no create, link, replace or
//! remove can reach outside the root. A new file is invisible until it is linked: an
//! `O_TMPFILE` inode where the file system has them, otherwise a [`HIDDEN_PREFIX`] name
//! that no open or listing here ever shows.
#![forbid(unsafe_code)]

use crate::proto::{DirEntry, FileKind, FileMeta, FileRef, Listing, Opened};
use crate::sys::fs as sys;
use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Flags every served open uses. `O_NONBLOCK` keeps a FIFO in the tree from blocking the
/// opener (regular files ignore it); `O_NOCTTY` keeps a tty from becoming ours.
const OPEN_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;

/// What `openat2` must refuse: leaving the root, and `/proc` magic links.
const RESOLVE: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;

/// Symlinks one lookup may follow before `ELOOP`: the kernel's `MAXSYMLINKS`.
const MAX_LINKS: u32 = 40;

/// A listing keeps this many entries by default ([`Root::with_max_entries`],
/// `--max-dir-entries`), so one request cannot make the server allocate and stat without
/// bound. Beyond it the listing is partial (which entries make it is up to the file
/// system's order) and says how many it left out ([`Listing::omitted`]).
/// At the cap an HTML listing is about 10 MB and takes about 0.2 s to build on the
/// thread that serves it (a ring's, or an epoll worker's), as nginx's autoindex does on
/// its worker; 20,000 entries, the size issue 14 names, take about what nginx takes.
pub const MAX_DIR_ENTRIES: usize = 50_000;

/// Names beginning with this are upload files not yet linked (the fallback where
/// `O_TMPFILE` is missing): every lookup refuses them (`ENOENT`) and listings skip them.
pub const HIDDEN_PREFIX: &str = ".ringserve-part-";

/// Mode of created files, before the umask: what `creat(2)` by a shell gives.
const CREATE_MODE: libc::mode_t = 0o644;

/// How [`Root`] keeps lookups beneath the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// One `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` per lookup.
    Openat2,
    /// A component-by-component `O_NOFOLLOW` walk that resolves symlinks itself.
    Walk,
}

impl fmt::Display for Resolve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resolve::Openat2 => "openat2",
            Resolve::Walk => "O_NOFOLLOW walk",
        })
    }
}

/// The served directory, held open by descriptor: every lookup is relative to it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    method: Resolve,
    /// Entries a listing keeps at most.
    max_entries: usize,
}

impl Root {
    /// Opens `path` as the root, resolving with `openat2` if this kernel allows it and
    /// with the walk otherwise.
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = open_root(path)?;
        let method = match probe_openat2(&fd) {
            Ok(()) => Resolve::Openat2,
            Err(_) => Resolve::Walk,
        };
        Ok(Root {
            fd,
            method,
            max_entries: MAX_DIR_ENTRIES,
        })
    }

    /// Opens `path` as the root with a chosen method. Asking for `Openat2` where it does
    /// not work fails with the probe's error (`ENOSYS`, or `EPERM` under seccomp).
    pub fn open_with(path: &Path, method: Resolve) -> io::Result<Root> {
        let fd = open_root(path)?;
        if method == Resolve::Openat2 {
            probe_openat2(&fd)?;
        }
        Ok(Root {
            fd,
            method,
            max_entries: MAX_DIR_ENTRIES,
        })
    }

    /// This root, with listings cut at `n` entries instead of [`MAX_DIR_ENTRIES`].
    pub fn with_max_entries(mut self, n: usize) -> Root {
        self.max_entries = n;
        self
    }

    /// Whether the root is on a network or FUSE file system
    /// ([`crate::sys::fs::remote_fs`]).
    pub fn is_remote(&self) -> bool {
        crate::sys::fs::remote_fs(self.fd.as_fd())
    }

    /// The method this root resolves with.
    pub fn resolve_method(&self) -> Resolve {
        self.method
    }

    /// Opens the file or directory at `rel` beneath the root for reading. Symlinks are
    /// followed while they stay beneath the root. A FIFO, socket or device opens without
    /// blocking and reports [`FileKind::Other`]; serving it is the caller's refusal.
    pub fn open_beneath(&self, rel: &str) -> io::Result<Opened> {
        let fd = self.resolve(rel, 0)?;
        let meta = meta(&sys::fstat(fd.as_fd())?);
        Ok(Opened {
            file: FileRef::new(File::from(fd)),
            meta,
        })
    }

    /// How uploads beneath this root will be written, found by trying (nothing is left
    /// behind): the file system decides, not only the kernel.
    pub fn write_path(&self) -> WritePath {
        let unnamed = libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC;
        let tmp = sys::openat_mode(self.fd.as_fd(), c".", unnamed, CREATE_MODE);
        let reserve = tmp.as_ref().ok().map(|fd| {
            let r = sys::fallocate_keep_size(fd.as_fd(), 1);
            !matches!(r, Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)))
        });
        // A rename of a name that does not exist: ENOENT once the flag is understood.
        let probe = c".ringserve-part-probe-absent";
        let noreplace = !matches!(
            sys::renameat2(self.fd.as_fd(), probe, probe, libc::RENAME_NOREPLACE),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
        );
        WritePath {
            tmpfile: tmp.is_ok(),
            noreplace,
            reserve,
        }
    }

    /// Creates an empty file, invisible until [`Root::link`], that will become `rel`.
    /// Its directory is resolved beneath the root as any lookup is; it must exist.
    pub fn create(&self, rel: &str) -> io::Result<Temp> {
        self.create_as(rel, true)
    }

    /// [`Root::create`], trying `O_TMPFILE` first only if `tmpfile` (the tests take
    /// the hidden-name path on purpose).
    fn create_as(&self, rel: &str, tmpfile: bool) -> io::Result<Temp> {
        let (dir, name) = self.parent_of(rel)?;
        let unnamed = libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC;
        let tried = match tmpfile {
            true => sys::openat_mode(dir.as_fd(), c".", unnamed, CREATE_MODE),
            false => Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
        };
        let (file, hidden) = match tried {
            Ok(fd) => (fd, None),
            // No O_TMPFILE on this file system (EOPNOTSUPP), or a kernel that does not
            // know the flag (EISDIR, EINVAL): a hidden name, created exclusively.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                let flags = libc::O_WRONLY
                    | libc::O_CREAT
                    | libc::O_EXCL
                    | libc::O_NOFOLLOW
                    | libc::O_CLOEXEC;
                let (fd, hidden) =
                    with_hidden_name(|h| sys::openat_mode(dir.as_fd(), h, flags, CREATE_MODE))?;
                (fd, Some(hidden))
            }
            Err(e) => return Err(e),
        };
        Ok(Temp {
            file: FileRef::new(File::from(file)),
            dir: FileRef::new(File::from(dir)),
            rel: rel.to_owned(),
            name,
            hidden,
            linked: false,
        })
    }

    /// Gives a [`Root::create`]d file its name durably: fsyncs the file, links it
    /// ([`Root::link_entry`]), fsyncs the directory. A backend that fsyncs on its own
    /// (io_uring) runs the three steps itself.
    pub fn link(&self, temp: &mut Temp, replace: bool) -> io::Result<()> {
        sync(temp.file())?;
        let dir = self.link_entry(temp, replace)?;
        sync(&dir)
    }

    /// Gives a [`Root::create`]d file its name, atomically: without `replace` an
    /// existing name is never replaced (`EEXIST`). Linking twice is `EINVAL`. Returns
    /// the directory, which the caller fsyncs before it calls the name durable.
    pub fn link_entry(&self, temp: &mut Temp, replace: bool) -> io::Result<FileRef> {
        if temp.linked {
            return Err(einval());
        }
        let dir = temp.dir.file().as_fd();
        match (&temp.hidden, replace) {
            (None, false) => link_tmpfile(temp.file.file(), dir, &temp.name)?,
            (None, true) => {
                // Link under a hidden name first, then rename over the target: a
                // rename is the only atomic replace.
                let ((), hidden) = with_hidden_name(|h| link_tmpfile(temp.file.file(), dir, h))?;
                if let Err(e) = sys::renameat2(dir, &hidden, &temp.name, 0) {
                    let _ = sys::unlinkat(dir, &hidden);
                    return Err(e);
                }
            }
            (Some(hidden), false) => {
                match sys::renameat2(dir, hidden, &temp.name, libc::RENAME_NOREPLACE) {
                    Ok(()) => {}
                    // A file system without RENAME_NOREPLACE: link (which never
                    // replaces) and drop the hidden name.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                        sys::linkat(Some(dir), hidden, dir, &temp.name, 0)?;
                        if sys::unlinkat(dir, hidden).is_err() {
                            // Linked under its name; the hidden one stays for Drop to
                            // try again.
                            temp.linked = true;
                            return Ok(temp.dir.clone());
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            (Some(hidden), true) => sys::renameat2(dir, hidden, &temp.name, 0)?,
        }
        temp.hidden = None;
        temp.linked = true;
        Ok(temp.dir.clone())
    }

    /// Removes the file (not a directory) at `rel` beneath the root, durably.
    pub fn remove(&self, rel: &str) -> io::Result<()> {
        let dir = self.remove_entry(rel)?;
        sync(&dir)
    }

    /// Removes the file (not a directory) at `rel` beneath the root. Returns the
    /// directory, which the caller fsyncs before it calls the removal durable.
    pub fn remove_entry(&self, rel: &str) -> io::Result<FileRef> {
        let (dir, name) = self.parent_of(rel)?;
        sys::unlinkat(dir.as_fd(), &name)?;
        Ok(FileRef::new(File::from(dir)))
    }

    /// The directory `rel` would be in, opened beneath the root, and its last name. The
    /// name must be a plain one: not empty, `.` or `..`, and not hidden.
    fn parent_of(&self, rel: &str) -> io::Result<(OwnedFd, CString)> {
        let rel = validate(rel)?;
        let rel = rel.as_bytes();
        let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        if matches!(name, b"" | b"." | b"..") {
            return Err(einval());
        }
        let dir =
            CString::new(if dir.is_empty() { &b"."[..] } else { dir }).map_err(|_| einval())?;
        let dir = self.resolve_path(&dir, libc::O_DIRECTORY)?;
        Ok((dir, CString::new(name).map_err(|_| einval())?))
    }

    /// Lists the directory at `rel` beneath the root, without `.` and `..`, sorted by
    /// name bytes and capped at [`Root::with_max_entries`]'s count. Entries are not followed: a symlink
    /// is listed as [`FileKind::Other`] with its own `lstat`, so a listing never stats what
    /// an escaping link points at. An entry removed while listing is left out.
    pub fn read_dir(&self, rel: &str) -> io::Result<Listing> {
        let dir = self.resolve(rel, libc::O_DIRECTORY)?;
        let (names, omitted) = sys::dir_names(dir.as_fd(), self.max_entries, |name| {
            !name.to_bytes().starts_with(HIDDEN_PREFIX.as_bytes())
        })?;
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let st = match sys::lstatat(dir.as_fd(), &name) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            let m = meta(&st);
            entries.push(DirEntry {
                name: name.into_bytes(),
                kind: m.kind,
                len: m.len,
                mtime_sec: m.mtime_sec,
            });
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(Listing { entries, omitted })
    }

    /// The arguments of the `openat2` that [`Root::open_beneath`] would make, for a
    /// backend that opens on its ring (io_uring's OPENAT2). `None` when this root
    /// resolves by walking: then there is no single call to hand over, and the caller
    /// uses `open_beneath`.
    pub fn openat2_args(&self, rel: &str) -> Option<io::Result<Openat2Args<'_>>> {
        if self.method != Resolve::Openat2 {
            return None;
        }
        Some(validate(rel).map(|path| Openat2Args {
            dir: self.fd.as_fd(),
            path,
            flags: OPEN_FLAGS as u64,
            resolve: RESOLVE,
        }))
    }

    /// Opens `rel` beneath the root with [`OPEN_FLAGS`] plus `extra`.
    fn resolve(&self, rel: &str, extra: libc::c_int) -> io::Result<OwnedFd> {
        self.resolve_path(&validate(rel)?, extra)
    }

    /// [`Root::resolve`] of a path already validated: raw bytes, "." for the root.
    fn resolve_path(&self, path: &CStr, extra: libc::c_int) -> io::Result<OwnedFd> {
        match self.method {
            Resolve::Openat2 => sys::openat2(self.fd.as_fd(), path, OPEN_FLAGS | extra, RESOLVE),
            Resolve::Walk => self.walk(path.to_bytes(), extra),
        }
    }

    /// `RESOLVE_BENEATH` by hand. Each component is opened `O_PATH|O_NOFOLLOW` from the
    /// directory before it and `fstat`ed. A symlink's target replaces it in the pending
    /// components: an absolute target, or a `..` with nothing left to pop, would leave the
    /// root and fails with `EXDEV`. `dirs` holds a descriptor per directory descended
    /// into, so `..` is a pop, never a lookup that a concurrent rename could redirect.
    ///
    /// A directory at the end is reopened as `.` of its held descriptor. A file at the end
    /// is reopened by name with `O_NOFOLLOW`: if it was swapped for a symlink since it was
    /// checked, that open fails (`ELOOP`) rather than follow it.
    fn walk(&self, rel: &[u8], extra: libc::c_int) -> io::Result<OwnedFd> {
        let flags = OPEN_FLAGS | libc::O_NOFOLLOW | extra;
        let mut dirs: Vec<OwnedFd> = Vec::new();
        // Components still to resolve, the next one last.
        let mut todo: Vec<Vec<u8>> = rel
            .split(|&b| b == b'/')
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut links = 0;
        while let Some(comp) = todo.pop() {
            match comp.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    dirs.pop().ok_or_else(exdev)?;
                    continue;
                }
                _ => {}
            }
            let name = CString::new(comp).map_err(|_| einval())?;
            let parent = dirs.last().unwrap_or(&self.fd).as_fd();
            let fd = sys::openat(
                parent,
                &name,
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )?;
            let mode = sys::fstat(fd.as_fd())?.st_mode & libc::S_IFMT;
            if mode == libc::S_IFLNK {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = sys::readlink_fd(fd.as_fd())?;
                if target.first() == Some(&b'/') {
                    return Err(exdev());
                }
                todo.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
            } else if mode == libc::S_IFDIR {
                dirs.push(fd);
            } else if todo.is_empty() {
                return sys::openat(parent, &name, flags);
            } else {
                // Even a trailing "/" or "/." asks for a directory.
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
        }
        // The path ended on a directory: the one descended into last, or the root.
        sys::openat(dirs.last().unwrap_or(&self.fd).as_fd(), c".", flags)
    }
}

/// Opens the root as an `O_PATH` directory descriptor: all that lookups beneath it need.
fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(path)?;
    Ok(file.into())
}

/// Whether `openat2` with our resolve flags works here: it is missing before Linux 5.6
/// (`ENOSYS`) and some seccomp filters refuse it (`EPERM`, `ENOSYS`).
fn probe_openat2(root: &OwnedFd) -> io::Result<()> {
    sys::openat2(root.as_fd(), c".", libc::O_PATH | libc::O_CLOEXEC, RESOLVE).map(drop)
}

/// Refuses, without resolving, what the HTTP layer should already have removed: an
/// absolute path, a NUL that is no escape, a `..` component. Returns the path to open,
/// as the raw bytes it stands for (`proto::path_bytes`): "" is the root, ".".
fn validate(rel: &str) -> io::Result<CString> {
    let bytes = crate::proto::path_bytes(rel).ok_or_else(einval)?;
    let comps = || bytes.split(|&b| b == b'/');
    if bytes.first() == Some(&b'/') || comps().any(|c| c == b"..") {
        return Err(einval());
    }
    if comps().any(|c| c.starts_with(HIDDEN_PREFIX.as_bytes())) {
        // An upload not yet linked is not there, whatever the name says.
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let path = if bytes.is_empty() { &b"."[..] } else { &bytes };
    // An escape may have produced a NUL: no name holds one.
    CString::new(path).map_err(|_| einval())
}

/// A file [`Root::create`] made, waiting to be linked. Dropping it unlinked abandons
/// it: the hidden name (if any) is removed, an `O_TMPFILE` inode simply goes.
#[derive(Debug)]
pub struct Temp {
    file: FileRef,
    /// The directory it goes in, opened beneath the root.
    dir: FileRef,
    /// Its path beneath the root once linked.
    rel: String,
    /// Its name in `dir` once linked.
    name: CString,
    /// Its hidden name, where it has one (no `O_TMPFILE`).
    hidden: Option<CString>,
    linked: bool,
}

impl Temp {
    /// The file, for writing.
    pub fn file(&self) -> &FileRef {
        &self.file
    }

    /// Its path beneath the root once linked (the open-file cache's key).
    pub fn rel(&self) -> &str {
        &self.rel
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(hidden) = &self.hidden {
            let _ = sys::unlinkat(self.dir.file().as_fd(), hidden);
        }
    }
}

/// Runs `make` with fresh hidden names until one is not taken (`EEXIST`).
fn with_hidden_name<T>(mut make: impl FnMut(&CStr) -> io::Result<T>) -> io::Result<(T, CString)> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    // The clock as well as the pid and a count: a restarted server (a container's
    // pid 1 again) does not walk into names its predecessor left.
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..16 {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{HIDDEN_PREFIX}{}-{epoch:x}-{n}", std::process::id());
        let name = CString::new(name).expect("no NUL");
        match make(&name) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            r => return r.map(|t| (t, name)),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}

/// Links an `O_TMPFILE` file as `name` in `dir`. `AT_EMPTY_PATH` needs
/// CAP_DAC_READ_SEARCH; without it (ENOENT) the `/proc/self/fd` link does the same.
fn link_tmpfile(file: &File, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    match sys::linkat(Some(file.as_fd()), c"", dir, name, libc::AT_EMPTY_PATH) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
            let proc = CString::new(proc).expect("no NUL");
            sys::linkat(None, &proc, dir, name, libc::AT_SYMLINK_FOLLOW)
        }
        r => r,
    }
}

/// fsyncs a file the protocol wrote.
pub fn sync(file: &FileRef) -> io::Result<()> {
    sys::fsync(file.file().as_fd())
}

/// Reserves `len` bytes for a file about to be written, keeping its size, so a full
/// disk is known before the bytes arrive. A file system that cannot reserve
/// (`EOPNOTSUPP`, as some network and FUSE file systems answer) is no error: the
/// writes themselves will tell.
pub fn reserve(file: &FileRef, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match sys::fallocate_keep_size(file.file().as_fd(), len) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => Ok(()),
        r => r,
    }
}

/// What [`Root::write_path`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePath {
    /// `O_TMPFILE` works here: an upload is an unnamed inode until linked.
    pub tmpfile: bool,
    /// `renameat2(RENAME_NOREPLACE)` works here (the hidden-name path's atomic link).
    pub noreplace: bool,
    /// `fallocate` reserves space here (known only with `O_TMPFILE`: `None` without).
    pub reserve: Option<bool>,
}

impl std::fmt::Display for WritePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tmpfile {
            f.write_str("O_TMPFILE, linked in place with linkat")?;
        } else {
            write!(f, "hidden {HIDDEN_PREFIX}* names (no O_TMPFILE here), ")?;
            f.write_str(match self.noreplace {
                true => "renamed in place with RENAME_NOREPLACE",
                false => "linked in place then unlinked (no RENAME_NOREPLACE here)",
            })?;
        }
        match self.reserve {
            Some(true) => f.write_str("; space reserved with fallocate"),
            Some(false) => f.write_str("; no fallocate here: a full disk shows mid-upload"),
            None => Ok(()),
        }
    }
}

/// See [`Root::openat2_args`].
#[derive(Debug)]
pub struct Openat2Args<'a> {
    pub dir: BorrowedFd<'a>,
    pub path: CString,
    pub flags: u64,
    pub resolve: u64,
}

/// `fstat` of an open file, in the protocol's terms.
pub fn meta_of(file: &File) -> io::Result<FileMeta> {
    Ok(meta(&sys::fstat(file.as_fd())?))
}

/// What `statx` (STATX_BASIC_STATS) says, in the protocol's terms: the same values
/// [`meta_of`] gives for the same file, so ETags do not depend on which was used.
pub fn meta_of_statx(st: &libc::statx) -> FileMeta {
    FileMeta {
        kind: match u32::from(st.stx_mode) & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            _ => FileKind::Other,
        },
        len: st.stx_size,
        mtime_sec: st.stx_mtime.tv_sec,
        mtime_nsec: st.stx_mtime.tv_nsec,
        dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
    }
}

/// What `stat` says, in the protocol's terms.
fn meta(st: &libc::stat) -> FileMeta {
    FileMeta {
        kind: match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            _ => FileKind::Other,
        },
        len: st.st_size as u64,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as u32,
        dev: st.st_dev,
        ino: st.st_ino,
    }
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

fn exdev() -> io::Error {
    io::Error::from_raw_os_error(libc::EXDEV)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{symlink, MetadataExt};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{mpsc, Mutex, MutexGuard, PoisonError};
    use std::time::Duration;

    /// Serialises the fs tests so the descriptor-leak count sees only its own opens.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
    }

    const BIG: u64 = 5 << 30;

    /// `base/` holds `secret` and `outside/` next to `root/`, the served tree.
    struct Tree {
        base: PathBuf,
    }

    impl Tree {
        fn new(test: &str) -> Tree {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let base = std::env::temp_dir()
                .join(format!("ringserve-fs-{test}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            let tree = Tree { base };
            tree.build().unwrap();
            tree
        }

        fn root(&self) -> PathBuf {
            self.base.join("root")
        }

        fn build(&self) -> io::Result<()> {
            let b = &self.base;
            let r = self.root();
            std::fs::create_dir_all(r.join("sub/deep"))?;
            std::fs::create_dir_all(b.join("outside"))?;
            std::fs::create_dir(r.join("emptydir"))?;
            std::fs::write(b.join("secret"), "SECRET")?;
            std::fs::write(b.join("outside/file"), "SECRET")?;
            std::fs::write(r.join("hello.txt"), "hello")?;
            std::fs::write(r.join("sub/file.txt"), "in sub")?;
            std::fs::write(r.join("sub/deep/x.txt"), "deep")?;
            std::fs::write(r.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "latin-1")?;
            File::create(r.join("big"))?.set_len(BIG)?;
            let status = std::process::Command::new("mkfifo")
                .arg(r.join("fifo"))
                .status()?;
            assert!(status.success(), "mkfifo failed");
            let links: &[(&str, &str)] = &[
                // Inside the root.
                ("link_rel", "hello.txt"),
                ("link_sub", "sub"),
                ("link_dot", "."),
                ("link_fifo", "fifo"),
                ("sub/link_up", "../hello.txt"),
                ("sub/to_root", ".."),
                ("sub/deep/link_via_up", "../../link_sub/file.txt"),
                // Leaving it.
                ("abs_passwd", "/etc/passwd"),
                ("to_slash", "/"),
                ("up_secret", "../secret"),
                ("parent", ".."),
                ("up_outside", "../outside"),
                ("tricky", "sub/../../secret"),
                ("chain1", "chain2"),
                ("chain2", "sub/link_out"),
                ("sub/link_out", "../../secret"),
                ("deep_escape", "sub/deep/../../../secret"),
                // Loops.
                ("loop_a", "loop_b"),
                ("loop_b", "loop_a"),
                ("self_loop", "self_loop/x"),
            ];
            for (link, target) in links {
                symlink(target, r.join(link))?;
            }
            // n0 -> hello.txt, nK -> n(K-1): opening nK follows K + 1 links.
            symlink("hello.txt", r.join("n0"))?;
            for k in 1..=MAX_LINKS {
                symlink(format!("n{}", k - 1), r.join(format!("n{k}")))?;
            }
            Ok(())
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    /// A root for each method this kernel supports.
    fn roots(tree: &Tree) -> Vec<Root> {
        let mut roots = Vec::new();
        match Root::open_with(&tree.root(), Resolve::Openat2) {
            Ok(root) => roots.push(root),
            Err(e) => crate::say!("SKIP openat2 half of this test: {e}"),
        }
        roots.push(Root::open_with(&tree.root(), Resolve::Walk).unwrap());
        roots
    }

    /// What a lookup came to, in comparable form: the kind, length and contents (files
    /// of reasonable size only), or the errno.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        Ok(FileKind, u64, Option<Vec<u8>>),
        Err(i32),
    }
    use Outcome::Err as E;

    fn ok(content: &str) -> Outcome {
        Outcome::Ok(FileKind::File, content.len() as u64, Some(content.into()))
    }

    fn outcome(root: &Root, rel: &str) -> Outcome {
        match root.open_beneath(rel) {
            Ok(o) => {
                let body = (o.meta.kind == FileKind::File && o.meta.len < 1024).then(|| {
                    let mut v = Vec::new();
                    o.file.file().read_to_end(&mut v).unwrap();
                    v
                });
                Outcome::Ok(o.meta.kind, o.meta.len, body)
            }
            Err(e) => Outcome::Err(e.raw_os_error().expect("a raw OS error")),
        }
    }

    #[test]
    fn root_must_be_a_directory() {
        let _g = serial();
        let tree = Tree::new("rootdir");
        let err = Root::open(&tree.root().join("hello.txt")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        let err = Root::open(&tree.root().join("missing")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn open_prefers_openat2_when_it_works() {
        let _g = serial();
        let tree = Tree::new("probe");
        let chosen = Root::open(&tree.root()).unwrap().resolve_method();
        let works = Root::open_with(&tree.root(), Resolve::Openat2).is_ok();
        assert_eq!(chosen == Resolve::Openat2, works);
    }

    #[test]
    fn both_methods_agree_on_every_case() {
        let _g = serial();
        let tree = Tree::new("cases");
        let dir = |len| Outcome::Ok(FileKind::Dir, len, None);
        let root_len = std::fs::metadata(tree.root()).unwrap().len();
        let sub_len = std::fs::metadata(tree.root().join("sub")).unwrap().len();
        let (last_link, one_too_many) = (format!("n{}", MAX_LINKS - 1), format!("n{MAX_LINKS}"));
        let cases: Vec<(&str, Outcome)> = vec![
            // Plain lookups.
            ("", dir(root_len)),
            (".", dir(root_len)),
            ("hello.txt", ok("hello")),
            ("./hello.txt", ok("hello")),
            ("sub/file.txt", ok("in sub")),
            ("sub//file.txt", ok("in sub")),
            ("sub", dir(sub_len)),
            ("sub/", dir(sub_len)),
            ("sub/.", dir(sub_len)),
            ("sub/deep/x.txt", ok("deep")),
            ("big", Outcome::Ok(FileKind::File, BIG, None)),
            ("fifo", Outcome::Ok(FileKind::Other, 0, None)),
            ("missing", E(libc::ENOENT)),
            ("sub/missing/x", E(libc::ENOENT)),
            ("hello.txt/x", E(libc::ENOTDIR)),
            ("hello.txt/", E(libc::ENOTDIR)),
            ("hello.txt/.", E(libc::ENOTDIR)),
            // Refused before any lookup.
            ("..", E(libc::EINVAL)),
            ("../secret", E(libc::EINVAL)),
            ("sub/../hello.txt", E(libc::EINVAL)),
            ("sub/..", E(libc::EINVAL)),
            ("/etc/passwd", E(libc::EINVAL)),
            ("hello.txt\0", E(libc::EINVAL)),
            // Symlinks that stay inside are followed.
            ("link_rel", ok("hello")),
            ("link_sub", dir(sub_len)),
            ("link_sub/file.txt", ok("in sub")),
            ("link_dot/link_dot/hello.txt", ok("hello")),
            ("link_fifo", Outcome::Ok(FileKind::Other, 0, None)),
            ("sub/link_up", ok("hello")),
            ("sub/to_root", dir(root_len)),
            ("sub/to_root/hello.txt", ok("hello")),
            ("sub/deep/link_via_up", ok("in sub")),
            ("link_rel/", E(libc::ENOTDIR)),
            (&last_link, ok("hello")),
            // Symlinks that leave are not.
            ("abs_passwd", E(libc::EXDEV)),
            ("to_slash", E(libc::EXDEV)),
            ("to_slash/etc/passwd", E(libc::EXDEV)),
            ("up_secret", E(libc::EXDEV)),
            ("parent", E(libc::EXDEV)),
            ("parent/secret", E(libc::EXDEV)),
            ("parent/root/hello.txt", E(libc::EXDEV)),
            ("up_outside/file", E(libc::EXDEV)),
            ("tricky", E(libc::EXDEV)),
            ("chain1", E(libc::EXDEV)),
            ("sub/link_out", E(libc::EXDEV)),
            ("link_sub/link_out", E(libc::EXDEV)),
            ("deep_escape", E(libc::EXDEV)),
            // Loops.
            ("loop_a", E(libc::ELOOP)),
            ("self_loop", E(libc::ELOOP)),
            (&one_too_many, E(libc::ELOOP)),
        ];
        for root in roots(&tree) {
            for (rel, want) in &cases {
                let got = outcome(&root, rel);
                assert_eq!(&got, want, "{:?} with {}", rel, root.resolve_method());
            }
        }
    }

    #[test]
    fn methods_report_the_same_meta() {
        let _g = serial();
        let tree = Tree::new("meta");
        let roots = roots(&tree);
        for rel in ["", "hello.txt", "link_sub/file.txt", "big", "fifo"] {
            let metas: Vec<FileMeta> = roots
                .iter()
                .map(|r| r.open_beneath(rel).unwrap().meta)
                .collect();
            assert!(metas.windows(2).all(|w| w[0] == w[1]), "{rel:?}: {metas:?}");
            let std = std::fs::metadata(tree.root().join(rel)).unwrap();
            assert_eq!(
                (metas[0].dev, metas[0].ino),
                (std.dev(), std.ino()),
                "{rel:?}"
            );
            assert_eq!(metas[0].mtime_sec, std.mtime(), "{rel:?}");
            assert_eq!(i64::from(metas[0].mtime_nsec), std.mtime_nsec(), "{rel:?}");
        }
    }

    #[test]
    fn fifo_opens_without_blocking() {
        let _g = serial();
        let tree = Tree::new("fifo");
        for root in roots(&tree) {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                tx.send(root.open_beneath("link_fifo").map(|o| o.meta.kind))
            });
            let kind = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("opening a FIFO blocked");
            assert_eq!(kind.unwrap(), FileKind::Other);
        }
    }

    #[test]
    fn read_dir_lists_sorted_raw_names_without_following() {
        let _g = serial();
        let tree = Tree::new("readdir");
        for root in roots(&tree) {
            let entries = root.read_dir("").unwrap().entries;
            let names: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
            assert!(
                names.windows(2).all(|w| w[0] < w[1]),
                "sorted, no duplicates"
            );
            assert!(!names.contains(&&b"."[..]) && !names.contains(&&b".."[..]));
            // 6 files and directories, 16 named links, the chain n0..=n40.
            assert_eq!(entries.len(), 6 + 16 + MAX_LINKS as usize + 1);
            let get = |n: &[u8]| entries.iter().find(|e| e.name == n).unwrap();
            assert_eq!(
                (get(b"hello.txt").kind, get(b"hello.txt").len),
                (FileKind::File, 5)
            );
            assert_eq!((get(b"big").kind, get(b"big").len), (FileKind::File, BIG));
            assert_eq!(get(b"sub").kind, FileKind::Dir);
            assert_eq!(get(b"fifo").kind, FileKind::Other);
            assert_eq!(get(b"link_sub").kind, FileKind::Other);
            assert_eq!(get(b"abs_passwd").kind, FileKind::Other);
            assert_eq!(get(b"caf\xe9").kind, FileKind::File);

            let sub: Vec<Vec<u8>> = root
                .read_dir("link_sub")
                .unwrap()
                .entries
                .into_iter()
                .map(|e| e.name)
                .collect();
            let want: [&[u8]; 5] = [b"deep", b"file.txt", b"link_out", b"link_up", b"to_root"];
            assert_eq!(sub, want);
            assert_eq!(root.read_dir("emptydir").unwrap(), Listing::default());
            assert_eq!(root.read_dir("sub/to_root").unwrap().entries, entries);

            let err = |rel| root.read_dir(rel).unwrap_err().raw_os_error();
            assert_eq!(err("hello.txt"), Some(libc::ENOTDIR));
            assert_eq!(err("link_rel"), Some(libc::ENOTDIR));
            assert_eq!(err("fifo"), Some(libc::ENOTDIR));
            assert_eq!(err("missing"), Some(libc::ENOENT));
            assert_eq!(err("parent"), Some(libc::EXDEV));
            assert_eq!(err("to_slash"), Some(libc::EXDEV));
            assert_eq!(err("up_outside"), Some(libc::EXDEV));
            assert_eq!(err("loop_a"), Some(libc::ELOOP));
            assert_eq!(err(".."), Some(libc::EINVAL));
        }
    }

    #[test]
    fn dir_names_stops_at_the_cap() {
        let _g = serial();
        let tree = Tree::new("cap");
        for root in roots(&tree) {
            let dir = root.resolve("", libc::O_DIRECTORY).unwrap();
            let (names, more) = sys::dir_names(dir.as_fd(), 3, |_| true).unwrap();
            let all = std::fs::read_dir(tree.root()).unwrap().count() as u64;
            assert_eq!((names.len() as u64, more), (3, all - 3));
        }
    }

    /// What a directory holds, names only, sorted; hidden upload names included (the
    /// test looks behind the listing's back).
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn write_temp(t: &Temp, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        t.file().file().write_all_at(bytes, 0).unwrap();
        sync(t.file()).unwrap();
    }

    #[test]
    fn created_files_are_invisible_until_linked_with_either_kind_of_temp() {
        let _g = serial();
        let tree = Tree::new("create");
        for root in roots(&tree) {
            for tmpfile in [true, false] {
                let how = format!("{} tmpfile={tmpfile}", root.resolve_method());
                let before = names(&tree.root().join("sub"));
                let mut t = root.create_as("sub/new.txt", tmpfile).unwrap();
                write_temp(&t, b"fresh");
                // Not there yet, by any lookup or listing.
                assert_eq!(outcome(&root, "sub/new.txt"), E(libc::ENOENT), "{how}");
                let listed = root.read_dir("sub").unwrap().entries;
                assert!(listed.iter().all(|e| e.name != b"new.txt"), "{how}");
                assert!(
                    listed
                        .iter()
                        .all(|e| !e.name.starts_with(HIDDEN_PREFIX.as_bytes())),
                    "{how}: a hidden name was listed"
                );
                if let Some(h) = names(&tree.root().join("sub"))
                    .into_iter()
                    .find(|n| n.starts_with(HIDDEN_PREFIX))
                {
                    assert!(!tmpfile, "{how}: O_TMPFILE made a name");
                    assert_eq!(outcome(&root, &format!("sub/{h}")), E(libc::ENOENT));
                }
                root.link(&mut t, false).unwrap();
                assert_eq!(outcome(&root, "sub/new.txt"), ok("fresh"), "{how}");
                let mut after = before.clone();
                after.push("new.txt".into());
                after.sort();
                assert_eq!(names(&tree.root().join("sub")), after, "{how}: leftovers");
                assert_eq!(
                    root.link(&mut t, false).unwrap_err().raw_os_error(),
                    Some(libc::EINVAL)
                );
                root.remove("sub/new.txt").unwrap();
                assert_eq!(names(&tree.root().join("sub")), before, "{how}");
            }
        }
    }

    #[test]
    fn linking_never_replaces_unless_asked_and_abandoned_files_leave_nothing() {
        let _g = serial();
        let tree = Tree::new("replace");
        for root in roots(&tree) {
            for tmpfile in [true, false] {
                let how = format!("{} tmpfile={tmpfile}", root.resolve_method());
                let before = names(&tree.root());
                let mut t = root.create_as("hello.txt", tmpfile).unwrap();
                write_temp(&t, b"other");
                let e = root.link(&mut t, false).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{how}");
                assert_eq!(outcome(&root, "hello.txt"), ok("hello"), "{how}");
                drop(t);
                assert_eq!(names(&tree.root()), before, "{how}");
                assert!(
                    before.iter().all(|n| !n.starts_with(HIDDEN_PREFIX)),
                    "{how}: {before:?}"
                );
                // A directory is never replaced, with or without `replace`.
                let mut t = root.create_as("sub", tmpfile).unwrap();
                assert!(root.link(&mut t, true).is_err(), "{how}");
                drop(t);
                let mut t = root.create_as("hello.txt", tmpfile).unwrap();
                write_temp(&t, b"other");
                root.link(&mut t, true).unwrap();
                assert_eq!(outcome(&root, "hello.txt"), ok("other"), "{how}");
                std::fs::write(tree.root().join("hello.txt"), "hello").unwrap();
                assert_eq!(names(&tree.root()), before, "{how}: leftovers");
            }
        }
    }

    /// No path may create, replace or remove anything outside the root, whichever way
    /// the root resolves: `..`, absolute paths, and directories that are symlinks out
    /// are refused as lookups are; a symlink *as the last name* is replaced or removed
    /// itself, never followed.
    #[test]
    fn writes_never_leave_the_root() {
        let _g = serial();
        let tree = Tree::new("write-escape");
        let outside = tree.base.join("outside");
        let secret = tree.base.join("secret");
        for root in roots(&tree) {
            let how = root.resolve_method();
            let out_before = names(&outside);
            for rel in [
                "../x",
                "/tmp/x",
                "sub/../../x",
                "parent/x",
                "up_outside/x",
                "to_slash/tmp/x",
                "sub/link_out/x",
                "",
                ".",
                "sub/",
                "hello.txt/x",
                "a\0b",
                ".ringserve-part-1-2",
                "sub/.ringserve-part-1-2",
            ] {
                let got = root.create(rel).map(drop);
                assert!(got.is_err(), "{how}: create({rel:?}) was allowed");
                let got = root.remove(rel);
                assert!(got.is_err(), "{how}: remove({rel:?}) was allowed");
            }
            // The last name a symlink out: replaced and removed as a link.
            let mut t = root.create("up_secret").unwrap();
            write_temp(&t, b"mine");
            assert_eq!(
                root.link(&mut t, false).unwrap_err().raw_os_error(),
                Some(libc::EEXIST)
            );
            drop(t);
            assert_eq!(std::fs::read(&secret).unwrap(), b"SECRET", "{how}");
            assert_eq!(names(&outside), out_before, "{how}");
        }
        // Replacing or removing the link itself leaves its target alone.
        let root = Root::open(&tree.root()).unwrap();
        let mut t = root.create("up_secret").unwrap();
        write_temp(&t, b"mine");
        root.link(&mut t, true).unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"SECRET");
        assert_eq!(
            std::fs::read(tree.root().join("up_secret")).unwrap(),
            b"mine"
        );
        root.remove("abs_passwd").unwrap();
        assert!(Path::new("/etc/passwd").exists());
        assert_eq!(
            root.remove("sub").unwrap_err().raw_os_error(),
            Some(libc::EISDIR)
        );
    }

    #[test]
    fn no_descriptor_leaks() {
        let _g = serial();
        let tree = Tree::new("leak");
        let roots = roots(&tree);
        let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let before = open_fds();
        for _ in 0..200 {
            for root in &roots {
                drop(root.open_beneath("link_sub/file.txt").unwrap());
                drop(root.open_beneath("sub/deep/link_via_up").unwrap());
                root.open_beneath("chain1").unwrap_err();
                root.open_beneath("loop_a").unwrap_err();
                root.open_beneath("sub/missing").unwrap_err();
                drop(root.read_dir("sub").unwrap());
                root.read_dir("hello.txt").unwrap_err();
                root.read_dir("parent").unwrap_err();
            }
        }
        // Tests elsewhere in the crate may hold a few descriptors; a leak here is >= 200.
        let after = open_fds();
        assert!(
            after < before + 10,
            "{before} descriptors before, {after} after"
        );
    }

    #[test]
    fn probing_the_write_path_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("rs-fs-wp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = Root::open(&dir).unwrap();
        let w = root.write_path();
        assert!(!w.to_string().is_empty());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{w}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
