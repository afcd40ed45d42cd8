//! What a service manager hands a process: descriptors it inherited (socket
//! activation), whether each is a listening socket, and CLOCK_MONOTONIC in
//! microseconds (the clock `sd_notify`'s MONOTONIC_USEC= is read on).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Takes ownership of an inherited descriptor: checks it is open (F_GETFD) and sets
/// FD_CLOEXEC, so no program we later run inherits it by accident.
///
/// # Safety
///
/// The caller must own `raw`: nothing else in the process may use or close it
/// (`sd_listen_fds(3)`: the descriptors the manager passed, each taken once).
pub unsafe fn adopt_inherited(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags; EBADF if it is not open.
    let flags = unsafe { syscall!(fcntl(raw, libc::F_GETFD)) }?;
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: F_SETFD on a descriptor F_GETFD just showed is open.
        unsafe { syscall!(fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC)) }?;
    }
    // SAFETY: the descriptor is open and the caller says it is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Whether `fd` is a socket that listen(2) was called on (SO_ACCEPTCONN). ENOTSOCK
/// when it is no socket at all.
pub fn accepts_connections(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut val: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` is a live c_int and `len` is its exact size; `fd` is borrowed.
    unsafe {
        syscall!(getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut val as *mut libc::c_int).cast(),
            &mut len
        ))
    }?;
    Ok(val != 0)
}

/// CLOCK_MONOTONIC in microseconds: what systemd compares a `MONOTONIC_USEC=` with.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec the kernel fills; CLOCK_MONOTONIC always exists.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(r, 0);
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}
