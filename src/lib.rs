//! ringserve: an io_uring-first Linux file server with an epoll one-shot worker-pool
//! fallback. See `docs/ARCHITECTURE.md` for the layers and the two promises.

/// Writes one line to stderr and ignores failure: `eprintln!` panics when stderr is a
/// closed pipe, and a server must not die because its log reader went away. The line
/// is formatted first and written in one `write(2)`: stderr is unbuffered, so
/// `writeln!` would write it piece by piece, and two processes sharing the stream (a
/// server and the successor it re-executed) would interleave their pieces.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

pub mod backend;
pub mod client;
#[cfg(feature = "compress")]
pub mod compress;
pub mod config;
pub mod conn;
pub mod fs;
pub mod handoff;
pub mod hints;
pub mod listener;
pub mod log;
pub mod open_cache;
pub mod privs;
pub mod probe;
pub mod proto;
pub mod server;
pub mod stats;
pub mod status;
pub mod sys;
pub mod systemd;

pub use backend::{CloseReason, Control, Hooks, NoHooks};
pub use config::Config;
pub use server::{Server, StartError};
