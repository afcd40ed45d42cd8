//! Pipes and splice(2): what file bodies go through on their way between a file and a
//! socket without entering user memory.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A pipe, both ends, and its capacity: the most one splice into it moves.
#[derive(Debug)]
pub struct Pipe {
    pub r: OwnedFd,
    pub w: OwnedFd,
    pub cap: u32,
}

/// A new close-on-exec pipe, asked to hold `size` bytes (F_SETPIPE_SZ). When the
/// kernel refuses the size (over /proc/sys/fs/pipe-max-size, or the user's pipe pages
/// past pipe-user-pages-soft) the pipe keeps the size it has, which `cap` reports.
pub fn pipe(size: i32) -> io::Result<Pipe> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints for pipe2 to fill.
    unsafe { syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)) }?;
    // SAFETY: both descriptors are fresh and ours.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ and F_GETPIPE_SZ on a pipe we own take and return ints.
    let cap = unsafe {
        libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size);
        libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ)
    };
    Ok(Pipe {
        r,
        w,
        cap: u32::try_from(cap).unwrap_or(4096).max(4096),
    })
}

/// One splice(2) of up to `len` bytes from `from` to `to`. An offset applies to a side
/// that is a file (advanced by the kernel); a pipe or socket side has none. `flags`
/// are SPLICE_F_*. `Ok(0)` is end of input.
pub fn splice(
    from: BorrowedFd<'_>,
    from_off: Option<&mut i64>,
    to: BorrowedFd<'_>,
    to_off: Option<&mut i64>,
    len: usize,
    flags: u32,
) -> io::Result<usize> {
    let p = |o: Option<&mut i64>| o.map_or(std::ptr::null_mut(), |o| o as *mut i64);
    let (fo, to_o) = (p(from_off), p(to_off));
    // SAFETY: both descriptors are borrowed for the call; each offset pointer is null
    // or points at a live i64 the kernel reads and updates.
    let n = unsafe {
        syscall!(splice(
            from.as_raw_fd(),
            fo,
            to.as_raw_fd(),
            to_o,
            len,
            flags
        ))
    }?;
    Ok(n as usize)
}
