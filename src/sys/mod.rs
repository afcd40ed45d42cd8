//! Raw system calls. Every `unsafe` that talks to the kernel lives under `src/sys/`
//! (and, later, the io_uring submit edge); the rest of the crate calls these safe
//! wrappers.

/// Calls a libc function and turns its `-1` into the thread's `errno` as an `io::Error`
/// (the shape of mio's `syscall!`). The caller writes the `unsafe` block and its SAFETY.
#[macro_export]
#[doc(hidden)]
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        let res = libc::$fn($($arg),*);
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub mod epoll;
pub mod fs;
pub mod net;
pub mod probe;
