//! The few libc helpers the bench examples (`limit.rs`, `idle.rs`, `bigget.rs`) need; each includes
//! this file with `#[path = "sys.rs"] mod sys;`.
#![allow(dead_code)] // each example uses some of them

use std::io;

/// Raises RLIMIT_NOFILE to its hard limit (10 000 idle connections need it).
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the local `lim` only.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `setsockopt(fd, level, name, value)`; the error is returned for the caller to judge.
pub fn setsockopt<T>(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live reference and the length passed is its type's size.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One splice(2) of up to `len` bytes between two descriptors, without offsets (a pipe
/// and a socket or /dev/null), with `flags`; the raw return value (-1: see errno).
pub fn splice(from: libc::c_int, to: libc::c_int, len: usize, flags: libc::c_uint) -> isize {
    // SAFETY: null offsets: neither descriptor uses a file position of ours; both are
    // the caller's and open for the call.
    unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    }
}
