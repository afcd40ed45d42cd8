//! ringserve: an io_uring-first Linux file server with an epoll one-shot worker-pool
//! fallback. See `docs/ARCHITECTURE.md` for the layers and the two promises.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod fs;
pub mod probe;
pub mod proto;
pub mod sys;
