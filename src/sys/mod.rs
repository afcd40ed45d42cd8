//! Raw system calls. Every `unsafe` that calls the kernel directly lives under
//! `src/sys/`; the rest of the crate calls these safe wrappers. (The io_uring submit
//! edge, `src/backend/uring/ring/` and `src/probe/trial.rs`, pushes SQEs through the
//! io-uring crate: its `unsafe` is about the memory an SQE names, not a syscall.)

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
pub mod io;
pub mod mem;
pub mod net;
pub mod pipe;
pub mod probe;
pub mod seqpacket;
pub mod unix;
pub mod user;
