//! The file-transfer protocol of the process-and-thread-pool seed, done properly:
//! length-prefixed frames ([`frame`]), the file's size and identity before its bytes,
//! and file bodies that are never framed, so they go zero-copy both ways (sendfile or
//! splice out of the server, splice into a file on the receiving side).
//!
//! One connection carries any number of operations, in order, pipelined if the client
//! likes:
//!
//! ```text
//!   HELLO lowest highest      -> HELLO_OK version, uploads?, replace?, max upload
//!   STAT path                 -> STAT_OK kind size mtime identity
//!   LIST dir                  -> LIST_OK [kind size mtime name]*
//!   GET offset identity path  -> DATA kind size mtime identity offset, then size-offset raw bytes
//!   PUT size [replace] path   -> READY, then the client sends size raw bytes -> DONE size
//!   any of them               -> ERROR code message
//! ```
//!
//! A GET at an offset with a non-zero identity goes on only while the file is still
//! that version (`Changed` otherwise). A PUT is refused before any body byte is sent
//! when uploads are off, the size is over the limit, the name is taken (and replace
//! was not asked, or is not allowed), or the space cannot be reserved; otherwise the
//! body goes into an invisible file that is fsynced and linked into place without
//! replacing, so a cut, stalled or failed upload leaves nothing visible and two
//! uploads of one name end with one `DONE` and one `Exists`.
//!
//! A malformed, oversized or unknown frame gets an `ERROR` and a close. Like every
//! protocol here it is sans-IO: [`XferServer`] and [`XferClient`] only see bytes and
//! [`FileRef`](crate::proto::FileRef)s.
#![forbid(unsafe_code)]

pub mod client;
pub mod frame;
mod server;

#[cfg(test)]
mod tests;

pub use client::{Op, Outcome, XferClient};
pub use server::XferServer;

use crate::proto::ProtocolFactory;
use frame::Code;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// What the server allows. Uploads are off unless asked for.
#[derive(Debug, Clone)]
pub struct XferConfig {
    /// Accept PUT (`--allow-upload`).
    pub allow_upload: bool,
    /// Let a PUT replace an existing file (`--allow-replace`).
    pub allow_replace: bool,
    /// Largest upload in bytes (`--max-upload-size`).
    pub max_upload: u64,
    /// Most entries a LIST answers with.
    pub max_list: usize,
}

impl Default for XferConfig {
    fn default() -> XferConfig {
        XferConfig {
            allow_upload: false,
            allow_replace: false,
            max_upload: 64 << 30,
            max_list: 100_000,
        }
    }
}

/// The protocol's own counters (the byte counters, zero-copy and copied, are the
/// backend's: `bytes_recv_splice`, `bytes_recv_copy`, `bytes_sendfile`, ...).
#[derive(Debug, Default)]
pub struct Counters {
    pub downloads: AtomicU64,
    pub committed: AtomicU64,
    pub aborted_disabled: AtomicU64,
    pub aborted_too_large: AtomicU64,
    pub aborted_exists: AtomicU64,
    pub aborted_forbidden: AtomicU64,
    pub aborted_no_space: AtomicU64,
    pub aborted_timeout: AtomicU64,
    /// The client went away mid-body.
    pub aborted_interrupted: AtomicU64,
    pub aborted_other: AtomicU64,
}

impl Counters {
    fn aborted(&self, code: Code) {
        let c = match code {
            Code::UploadsDisabled => &self.aborted_disabled,
            Code::TooLarge => &self.aborted_too_large,
            Code::Exists => &self.aborted_exists,
            Code::Forbidden => &self.aborted_forbidden,
            Code::NoSpace => &self.aborted_no_space,
            Code::Timeout => &self.aborted_timeout,
            _ => &self.aborted_other,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Uploads aborted, for every reason.
    pub fn aborted_total(&self) -> u64 {
        self.fields().iter().skip(2).map(|(_, v)| v).sum()
    }

    fn fields(&self) -> [(&'static str, u64); 10] {
        let g = |c: &AtomicU64| c.load(Relaxed);
        [
            ("downloads", g(&self.downloads)),
            ("uploads_committed", g(&self.committed)),
            ("uploads_aborted_disabled", g(&self.aborted_disabled)),
            ("uploads_aborted_too_large", g(&self.aborted_too_large)),
            ("uploads_aborted_exists", g(&self.aborted_exists)),
            ("uploads_aborted_forbidden", g(&self.aborted_forbidden)),
            ("uploads_aborted_no_space", g(&self.aborted_no_space)),
            ("uploads_aborted_timeout", g(&self.aborted_timeout)),
            ("uploads_aborted_interrupted", g(&self.aborted_interrupted)),
            ("uploads_aborted_other", g(&self.aborted_other)),
        ]
    }

    /// `name=value` for every non-zero counter, as the stats lines print them.
    pub fn line(&self) -> String {
        let mut s = String::new();
        for (name, v) in self.fields() {
            if v > 0 {
                let _ = write!(s, "{}{name}={v}", if s.is_empty() { "" } else { " " });
            }
        }
        s
    }
}

/// What every connection of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    cfg: XferConfig,
    counters: Arc<Counters>,
}

/// Makes [`XferServer`] connections.
#[derive(Debug, Clone)]
pub struct XferFactory {
    shared: Arc<Shared>,
}

impl XferFactory {
    pub fn new(cfg: XferConfig) -> XferFactory {
        let counters = Arc::new(Counters::default());
        XferFactory {
            shared: Arc::new(Shared { cfg, counters }),
        }
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }
}

impl ProtocolFactory for XferFactory {
    type Proto = XferServer;
    fn new_conn(&self, _peer: SocketAddr) -> XferServer {
        XferServer::new(self.shared.clone())
    }
    fn overload_response(&self) -> Option<&'static [u8]> {
        // HEADER (kind ERROR, 2 + 22 bytes) + code Unavailable + message.
        Some(b"RSXF\x01\xff\x00\x00\x18\x00\x00\x00\x0b\x00server is at its limit")
    }
}

/// A request's path as the contract wants it: relative, `/`-separated, normalised
/// (`""` is the root). Leading, doubled and trailing slashes and `.` segments go; a
/// `..` segment is refused outright (nothing here needs it, and the resolver refuses
/// escapes again anyway), as are NUL and non-UTF-8 names.
pub fn rel_path(raw: &[u8]) -> Result<String, (Code, String)> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| (Code::BadRequest, "path is not UTF-8".to_string()))?;
    if s.contains('\0') {
        return Err((Code::BadRequest, "path contains NUL".into()));
    }
    let mut parts = Vec::new();
    for seg in s.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err((Code::Forbidden, "path leaves the served root".into())),
            seg => parts.push(seg),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn paths_normalise_and_never_climb() {
        assert_eq!(rel_path(b"/a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(rel_path(b"").unwrap(), "");
        assert_eq!(rel_path(b"a/../../etc").unwrap_err().0, Code::Forbidden);
        assert_eq!(rel_path(b"..").unwrap_err().0, Code::Forbidden);
        assert_eq!(rel_path(b"a\0b").unwrap_err().0, Code::BadRequest);
        assert_eq!(rel_path(b"\xff").unwrap_err().0, Code::BadRequest);
        assert_eq!(rel_path("é x".as_bytes()).unwrap(), "é x");
    }

    #[test]
    fn the_overload_response_is_a_well_formed_error_frame() {
        let f = XferFactory::new(XferConfig::default());
        let bytes = f.overload_response().unwrap();
        let Ok(frame::Status::Complete(h, n)) = frame::decode(bytes, frame::MAX_REPLY) else {
            panic!("not a frame")
        };
        assert_eq!(n, bytes.len());
        let r = frame::Reply::decode(&h, &bytes[frame::HEADER_LEN..]).unwrap();
        assert_eq!(
            r,
            frame::Reply::Error {
                code: Code::Unavailable,
                message: "server is at its limit".into()
            }
        );
    }
}
