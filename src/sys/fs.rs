//! File-system system calls: openat2, the O_NOFOLLOW walk's openat/readlinkat, fstat,
//! directory reading, and the write path's create/link/rename/unlink/fsync. Thin, safe
//! wrappers; the policy (what may be resolved, created or replaced) lives in `crate::fs`.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

// `libc::stat` is read as the 64-bit layout (sizes past 4 GiB, `dev_t`/`ino_t` as u64);
// refuse to build where libc's plain `stat` is the 32-bit one.
const _: () = assert!(std::mem::size_of::<libc::off_t>() == 8);

/// `struct open_how`, first version (Linux 5.6). Ours because `libc::open_how` is
/// `#[non_exhaustive]`; the kernel learns which version from the size we pass.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(2)` with `how = {flags, mode: 0, resolve}`.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: `dir` is a live descriptor for the borrow, `path` is NUL-terminated, and
    // `how` is a valid v0 `open_how` whose exact size we pass; the kernel only reads them.
    let fd = unsafe {
        syscall!(syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        ))
    }?;
    // SAFETY: on success the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `openat(2)`. The caller chooses the flags, including `O_CLOEXEC`.
pub fn openat(dir: BorrowedFd<'_>, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    openat_mode(dir, path, flags, 0)
}

/// `openat(2)` with a creation mode, for `O_CREAT` and `O_TMPFILE`.
pub fn openat_mode(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is a live descriptor for the borrow and `path` is NUL-terminated;
    // the variadic mode is passed as the `c_uint` the kernel reads.
    let fd = unsafe {
        syscall!(openat(
            dir.as_raw_fd(),
            path.as_ptr(),
            flags,
            mode as libc::c_uint
        ))
    }?;
    // SAFETY: on success the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `linkat(2)`. `old_dir` may be `None` for `AT_FDCWD` (a `/proc/self/fd` path).
pub fn linkat(
    old_dir: Option<BorrowedFd<'_>>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: libc::c_int,
) -> io::Result<()> {
    let old_dir = old_dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: both descriptors are live for the borrows (or AT_FDCWD) and both paths
    // are NUL-terminated; the kernel only reads them.
    unsafe {
        syscall!(linkat(
            old_dir,
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags
        ))
    }?;
    Ok(())
}

/// `renameat2(2)` within one directory; `flags` 0 replaces, `RENAME_NOREPLACE` does not.
pub fn renameat2(dir: BorrowedFd<'_>, old: &CStr, new: &CStr, flags: u32) -> io::Result<()> {
    // SAFETY: `dir` is live for the borrow and both paths are NUL-terminated; the
    // kernel only reads them.
    unsafe {
        syscall!(syscall(
            libc::SYS_renameat2,
            dir.as_raw_fd(),
            old.as_ptr(),
            dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        ))
    }?;
    Ok(())
}

/// `unlinkat(2)` of a non-directory.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `dir` is live for the borrow and `name` is NUL-terminated.
    unsafe { syscall!(unlinkat(dir.as_raw_fd(), name.as_ptr(), 0)) }?;
    Ok(())
}

/// `fsync(2)`.
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is live for the borrow.
    unsafe { syscall!(fsync(fd.as_raw_fd())) }?;
    Ok(())
}

/// `fallocate(2)` of `len` bytes from 0 with `FALLOC_FL_KEEP_SIZE`, retried on EINTR:
/// tmpfs gives up when a signal is pending, and before 5.11 io_uring's task work makes
/// one look pending on a ring's thread (TWA_SIGNAL), so a ring would see EINTR often.
/// Space already reserved stays, so each retry finishes the job.
pub fn fallocate_keep_size(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: `fd` is live for the borrow; no memory is passed.
        match unsafe { syscall!(fallocate(fd.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len)) } {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map(drop),
        }
    }
}

/// cachestat(2)'s number: 451 in the unified table every architecture but alpha and
/// MIPS uses since 5.1 (where it is not, the probe's try gets ENOSYS and the feature is
/// absent). The libc crate names it only for a few targets.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// `cachestat(2)` (6.5): whether every page of bytes `off..off + len` of `file` is in
/// the page cache. A page whose read is still in flight counts as in it (cachestat
/// looks only at the cache's index), so a caller that must not wait also needs to know
/// the pages were read (`FileRef::was_sent`). ENOSYS before 6.5 (or where a sandbox
/// filters it). An empty range asks nothing and is `Ok(true)`.
pub fn all_cached(file: BorrowedFd<'_>, off: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    // SAFETY: sysconf only reads the process's auxiliary vector.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => 4096,
    };
    let range = CachestatRange { off, len };
    let mut cs = Cachestat::default();
    // SAFETY: the kernel reads one range and writes one cachestat, both live locals of
    // the layouts uapi/linux/mman.h gives; the descriptor is borrowed.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut cs as *mut Cachestat,
            0u32,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    // The kernel counts the pages from off's through the one holding the last byte. A
    // page it does not count as cached (absent, evicted, or past the end) would be read.
    let want = off.saturating_add(len).div_ceil(page) - off / page;
    Ok(cs.nr_cache >= want)
}

/// Whether the file system holding `fd` is one whose reads can wait on a network or a
/// user-space daemon even for cached pages (revalidation, leases): NFS, SMB/CIFS,
/// FUSE, Ceph, 9P, AFS, Coda. `fstatfs(2)` of a descriptor; an error counts as remote.
pub fn remote_fs(fd: BorrowedFd<'_>) -> bool {
    const REMOTE: [i64; 10] = [
        0x6969,                 // NFS
        0x517B,                 // SMB
        0xFF53_4D42_u32 as i64, // CIFS
        0xFE53_4D42_u32 as i64, // SMB2
        0x6573_5546,            // FUSE
        0x00C3_6400,            // Ceph
        0x0102_1997,            // 9P
        0x5346_414F,            // AFS
        0x6B41_4653,            // kAFS
        0x7375_7245,            // Coda
    ];
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `fd` is live for the borrow and `st` is valid for writing one `statfs`.
    if unsafe { syscall!(fstatfs(fd.as_raw_fd(), st.as_mut_ptr())) }.is_err() {
        return true;
    }
    // f_type is a long on x86-64 and an int or unsigned elsewhere: compare 32 bits.
    #[allow(clippy::unnecessary_cast)]
    // SAFETY: fstatfs succeeded, so the kernel filled `st`.
    let kind = unsafe { st.assume_init() }.f_type as i64 & 0xFFFF_FFFF;
    REMOTE.contains(&kind)
}

/// `fstat(2)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is live for the borrow and `st` is valid for writing one `stat`.
    unsafe { syscall!(fstat(fd.as_raw_fd(), st.as_mut_ptr())) }?;
    // SAFETY: fstat succeeded, so the kernel filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `statx(2)` of an open descriptor (`AT_EMPTY_PATH`, STATX_BASIC_STATS): what the
/// io_uring backend's STATX asks, for checking it against `fstat`.
pub fn statx(fd: BorrowedFd<'_>) -> io::Result<libc::statx> {
    let mut st = MaybeUninit::<libc::statx>::uninit();
    // SAFETY: `fd` is live for the borrow, the empty path is NUL-terminated, and `st`
    // is valid for writing one `statx`.
    unsafe {
        syscall!(statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_BASIC_STATS,
            st.as_mut_ptr(),
        ))
    }?;
    // SAFETY: statx succeeded, so the kernel filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW`: what `name` in `dir` is, not what it points to.
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `dir` is live for the borrow, `name` is NUL-terminated, and `st` is valid
    // for writing one `stat`.
    unsafe {
        syscall!(fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        ))
    }?;
    // SAFETY: fstatat succeeded, so the kernel filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// The target of the symlink that `link` (an `O_PATH|O_NOFOLLOW` descriptor) refers to.
/// A target that fills `PATH_MAX` is refused with `ENAMETOOLONG` rather than truncated.
pub fn readlink_fd(link: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `link` is live for the borrow, the empty path is NUL-terminated (an empty
    // path names `link` itself), and `buf` is valid for writing `buf.len()` bytes.
    let n = unsafe {
        syscall!(readlinkat(
            link.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        ))
    }?;
    let n = n as usize;
    if n == buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(buf)
}

/// A `getdents64` buffer, aligned as the kernel lays out `struct linux_dirent64`.
#[repr(C, align(8))]
struct DirentBuf([u8; 32 * 1024]);

/// Reads the names in `dir` (a directory opened for reading, at its start), without
/// `.` and `..` and without those `keep` refuses, keeping the first `max`; returns them
/// and how many more there were. Those are only counted (the rest of the directory is
/// read, nothing is kept), so a listing can say how much it leaves out.
pub fn dir_names(
    dir: BorrowedFd<'_>,
    max: usize,
    keep: impl Fn(&CStr) -> bool,
) -> io::Result<(Vec<CString>, u64)> {
    let mut buf = Box::new(DirentBuf([0; 32 * 1024]));
    let mut names = Vec::new();
    let mut more = 0u64;
    loop {
        // SAFETY: `dir` is live for the borrow and `buf` is valid for writing its length.
        let n = unsafe {
            syscall!(syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.0.as_mut_ptr(),
                buf.0.len(),
            ))
        }?;
        if n == 0 {
            break;
        }
        let filled = &buf.0[..n as usize];
        let batch = dirent_names(filled)
            .filter(|name| !matches!(name.to_bytes(), b"." | b".."))
            .filter(|name| keep(name));
        for name in batch {
            if names.len() < max {
                names.push(name.to_owned());
            } else {
                more += 1;
            }
        }
    }
    Ok((names, more))
}

/// The names in a buffer `getdents64` filled. Each record is `d_ino: u64, d_off: i64,
/// d_reclen: u16, d_type: u8`, then the NUL-terminated name, padded to `d_reclen`.
fn dirent_names(mut rest: &[u8]) -> impl Iterator<Item = &CStr> {
    const NAME: usize = 19;
    std::iter::from_fn(move || {
        let reclen = u16::from_ne_bytes(rest.get(16..18)?.try_into().ok()?) as usize;
        let name = rest.get(NAME..reclen)?;
        rest = &rest[reclen..];
        CStr::from_bytes_until_nul(name).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// cachestat sees a range leave the page cache and come back: after
    /// POSIX_FADV_DONTNEED of a synced file it is not all cached, after a read it is.
    /// That is what keeps the ring from a sendfile that would wait for a disk.
    #[test]
    fn all_cached_follows_the_page_cache() {
        let path = std::env::temp_dir().join(format!("ringserve-cachestat-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        // Straight to stderr (libtest captures eprintln!), so a plain `cargo test` shows it.
        let skip = |why: &str| {
            use std::io::Write;
            let line = format!("SKIP all_cached_follows_the_page_cache: {why}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
        };
        let f = std::fs::File::open(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        match all_cached(f.as_fd(), 0, 1 << 20) {
            Err(e) => {
                skip(&format!("cachestat: {e}"));
                return;
            }
            Ok(hot) => assert!(hot, "a file just written is in the page cache"),
        }
        assert!(all_cached(f.as_fd(), 0, 0).unwrap(), "an empty range");
        assert!(
            !all_cached(f.as_fd(), (1 << 20) - 10, 4096).unwrap(),
            "a range past the end is not all cached"
        );
        fsync(f.as_fd()).unwrap();
        // SAFETY: advice on a live descriptor; it touches no memory of ours.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0);
        if all_cached(f.as_fd(), 0, 1 << 20).unwrap() {
            skip("its cold half: this filesystem keeps pages past DONTNEED (tmpfs)");
            return;
        }
        assert!(!all_cached(f.as_fd(), 4096, 100).unwrap(), "a page of it");
        let mut buf = vec![0u8; 1 << 20];
        std::io::Read::read_exact(&mut &f, &mut buf).unwrap();
        assert!(all_cached(f.as_fd(), 0, 1 << 20).unwrap(), "read back in");
    }
}
