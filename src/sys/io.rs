//! Writing to a descriptor without std's stream locks (the logs' writers).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Writes all of `bytes` to `fd` with write(2), retrying short writes and EINTR. It
/// blocks as the descriptor does; a closed pipe is an error (EPIPE, never SIGPIPE:
/// Rust ignores the signal).
pub fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is readable for its length during the call; `fd` is borrowed.
        match unsafe { syscall!(write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len())) } {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n as usize..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
