//! ringserve: an io_uring-first Linux file server with an epoll one-shot worker-pool
//! fallback. See `docs/ARCHITECTURE.md` for the layers and the two promises.

/// Writes one line to stderr and ignores failure: `eprintln!` panics when stderr is a
/// closed pipe, and a server must not die because its log reader went away.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod backend;
pub mod client;
pub mod config;
pub mod conn;
pub mod fs;
pub mod log;
pub mod open_cache;
pub mod probe;
pub mod proto;
pub mod server;
pub mod stats;
pub mod sys;

pub use backend::{CloseReason, Control, Hooks, NoHooks};
pub use config::Config;
pub use server::{Server, StartError};
