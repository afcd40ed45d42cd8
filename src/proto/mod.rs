//! Sans-IO protocols.
//!
//! A protocol never touches a file descriptor, a clock or a thread. A backend drives it
//! (through the one driver, `src/backend/driver.rs`):
//!
//! ```text
//!   loop {
//!       match proto.poll(now) {
//!           Step::Send(chunks)   => hand every byte to the kernel, in order, then poll again
//!           Step::Fs(op)         => do the file-system operation beneath the root,
//!                                   answer with handle_fs
//!           Step::Recv(wait)     => receive; answer with handle_recv, handle_eof or
//!                                   handle_timeout
//!           Step::RecvFile(sink) => move the next bytes of the socket into a file (zero
//!                                   copy where the kernel can); answer with handle_recv_file
//!           Step::Close          => close the connection
//!       }
//!   }
//! ```
//!
//! The protocol owns only what it must keep between calls (a partial request). Received
//! bytes arrive as a borrowed slice, so a backend can return its receive buffer to the
//! kernel (a provided-buffer ring) as soon as `handle_recv` returns. Output moves to the
//! backend by value in [`Step::Send`]: from then on the backend owns it until the kernel
//! is done with it.
//!
//! Files reach a protocol only as [`FileRef`]s: an opaque handle with a length and an
//! identity, which it can name in a [`Chunk::File`] or a [`RecvFile`] but cannot read,
//! write or seek. The backend is the only one that does I/O with it.
//!
//! Promise 2 (blocking-send semantics) is the backend's half of this contract: it polls
//! again only once the whole of a `Send` has been handed to the kernel. That is what
//! keeps pipelined responses in order without any queue in the protocol.
#![forbid(unsafe_code)]

pub mod echo;
pub mod http1;
pub mod pool;
pub mod xfer;

mod file;
mod name;

pub use file::{FileRef, TempFile};
pub use name::{path_bytes, path_from_bytes};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// One piece of a response. A backend sends the chunks of one [`Step::Send`] in order.
#[derive(Debug)]
pub enum Chunk {
    /// Bytes the protocol built.
    Mem(Vec<u8>),
    /// Bytes that live forever (fixed error bodies).
    Static(&'static [u8]),
    /// `len` bytes of `file` from `offset`. Sent zero-copy where the backend can. If the
    /// file turns out shorter than `offset + len` the backend ends the connection: it
    /// never pads and never waits.
    File {
        file: FileRef,
        offset: u64,
        len: u64,
    },
}

impl Chunk {
    /// Bytes this chunk puts on the wire.
    pub fn len(&self) -> u64 {
        match self {
            Chunk::Mem(v) => v.len() as u64,
            Chunk::Static(s) => s.len() as u64,
            Chunk::File { len, .. } => *len,
        }
    }

    /// True when the chunk carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a protocol waits for when it asks to receive. The backend maps it to a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Between requests on a kept-alive connection: the keep-alive idle timeout.
    Idle,
    /// Inside a request, or before the first one: the header timeout. The backend
    /// measures it from the start of the wait, not per received byte, so a client that
    /// trickles one byte at a time (slowloris) still runs out of time.
    Request,
    /// Inside a request body the protocol streams (an upload): the body timeout, which
    /// restarts whenever bytes arrive, so a long transfer lives as long as bytes flow
    /// and a stalled one ends (nginx's `client_body_timeout`).
    Body,
}

/// The next thing a protocol wants done.
#[derive(Debug)]
#[must_use]
pub enum Step {
    /// Hand all these bytes to the kernel, in order, then poll again.
    Send(Vec<Chunk>),
    /// Do this file-system operation beneath the served root and answer with
    /// [`Protocol::handle_fs`].
    Fs(FsOp),
    /// Receive more bytes, then call [`Protocol::handle_recv`], or
    /// [`Protocol::handle_eof`] when the peer has closed, or
    /// [`Protocol::handle_timeout`] when the wait outlasts its timeout.
    Recv(Wait),
    /// Write bytes the protocol holds, then move the next bytes of the connection
    /// straight into a file, and answer with [`Protocol::handle_recv_file`]. The
    /// mirror of [`Chunk::File`]: socket→pipe→file by splice where the kernel can, a
    /// copy otherwise. It is the connection's one receive while it runs, and it waits
    /// as [`Wait::Body`] does.
    RecvFile(RecvFile),
    /// Close the connection. Everything asked for before has been sent.
    Close,
}

/// What [`Step::RecvFile`] writes: `head` (bytes the protocol already received, such as
/// the start of a body that arrived with its header) at `offset`, then exactly `len`
/// bytes from the connection right after it.
#[derive(Debug)]
pub struct RecvFile {
    pub file: FileRef,
    pub offset: u64,
    pub head: Vec<u8>,
    pub len: u64,
}

/// A file-system operation. Every path is relative, `/`-separated and already
/// normalised ("" is the root itself), with any byte of a name that is not UTF-8
/// escaped as [`path_from_bytes`] does; the backend resolves it beneath the root exactly
/// as it opens files (`openat2(RESOLVE_BENEATH)` or the safe walk) and still refuses any
/// escape. One enum rather than a trait method per operation, so the contract grows in
/// one place.
#[derive(Debug)]
pub enum FsOp {
    /// Open a file or directory for reading: [`FsDone::Opened`].
    Open(String),
    /// List a directory: [`FsDone::Listed`].
    ReadDir(String),
    /// Create a new, empty file that will become `path` once linked: [`FsDone::Created`].
    /// Until then it is invisible: an `O_TMPFILE` inode in `path`'s directory where the
    /// file system has them, otherwise a hidden name that no open or listing shows. The
    /// directory must exist. A temporary file never linked is removed when its
    /// [`TempFile`] is dropped or the connection ends.
    Create(String),
    /// Give a created file its name, atomically. Without `replace` an existing name is
    /// never replaced (`EEXIST`). The directory entry is fsynced before the answer
    /// ([`FsDone::Linked`]), so a success is durable once the file's data is too.
    Link { temp: TempFile, replace: bool },
    /// Remove a file (not a directory): [`FsDone::Removed`].
    Remove(String),
    /// fsync a file: [`FsDone::Synced`].
    Sync(FileRef),
    /// Reserve space for `len` bytes of a file about to be written (`fallocate`,
    /// keeping its size), so a full disk is known before a byte is received:
    /// [`FsDone::Reserved`]. Where the file system cannot reserve, it succeeds and the
    /// writes themselves find out.
    Reserve { file: FileRef, len: u64 },
}

/// Whether an open failed only because nothing is there: `ENOENT`, or `ENOTDIR` (a
/// file where the path needs a directory).
pub fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// The answer to an [`FsOp`], in the same order as its variants.
#[derive(Debug)]
pub enum FsDone {
    Opened(io::Result<Opened>),
    Listed(io::Result<Listing>),
    Created(io::Result<TempFile>),
    Linked(io::Result<()>),
    Removed(io::Result<()>),
    Synced(io::Result<()>),
    Reserved(io::Result<()>),
}

/// The kind of a resolved path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    /// FIFO, socket, device: never served.
    Other,
}

/// What `stat` said about a resolved path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub kind: FileKind,
    pub len: u64,
    /// Modification time: seconds since the epoch, and nanoseconds.
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub dev: u64,
    pub ino: u64,
}

/// A path the backend opened for the protocol. The descriptor is shared: the backend's
/// open-file cache may hold it too.
#[derive(Debug, Clone)]
pub struct Opened {
    pub file: FileRef,
    pub meta: FileMeta,
}

/// A directory's entries, as many as the backend keeps (`--max-dir-entries`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub entries: Vec<DirEntry>,
    /// Entries the directory has beyond those kept: 0 when the listing is whole.
    pub omitted: u64,
}

impl Listing {
    /// The entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The raw name. Linux names are bytes, not always UTF-8.
    pub name: Vec<u8>,
    pub kind: FileKind,
    pub len: u64,
    pub mtime_sec: i64,
}

/// A sans-IO connection protocol. One value per connection.
pub trait Protocol: Send + 'static {
    /// Bytes received from the peer. The protocol copies what it must keep.
    fn handle_recv(&mut self, data: &[u8]);
    /// The peer closed its sending side.
    fn handle_eof(&mut self);
    /// The wait announced by [`Step::Recv`] outlasted its timeout.
    fn handle_timeout(&mut self);
    /// The answer to [`Step::Fs`].
    fn handle_fs(&mut self, _done: FsDone) {}
    /// The answer to [`Step::RecvFile`]: how many bytes of the connection went into the
    /// file (`head` not counted). Fewer than `len` means the peer closed first. An error
    /// is the file's (`ENOSPC`, `EIO`: raw OS errors), the connection's, or
    /// [`io::ErrorKind::TimedOut`] when no byte arrived for the body timeout.
    fn handle_recv_file(&mut self, _result: io::Result<u64>) {}
    /// The server is shutting down: finish what is in flight, then ask to close.
    fn handle_drain(&mut self) {}
    /// The next step. `now` is the wall clock, for protocols that stamp dates.
    fn poll(&mut self, now: SystemTime) -> Step;
    /// The access-log lines of the responses just returned by `poll` as a
    /// [`Step::Send`], in order, one per call until `None`, if this protocol keeps a
    /// log. The driver completes each with the body bytes that reached the kernel
    /// (the send's bytes go to its responses in order) and writes them once the send
    /// has ended.
    fn take_log_line(&mut self) -> Option<LogLine> {
        None
    }
    /// Why a response just returned by `poll` failed on the file system, if it did in
    /// a way the server's operator should hear of (a file it may not read: 403; an I/O
    /// error: 500): one per call until `None`. The driver writes each to the error
    /// log, rate-limited.
    fn take_fault(&mut self) -> Option<Fault> {
        None
    }
    /// How many responses the [`Step::Send`] just returned carries: more than one when
    /// a protocol answers pipelined requests in one send. For the counters.
    fn sent_responses(&self) -> u32 {
        1
    }
}

/// A file-system failure behind a response, for the error log: nothing here does I/O,
/// so the cause travels out beside the response and the driver says it.
#[derive(Debug)]
pub struct Fault {
    /// The operation as the log names it: `open`, `opendir`.
    pub op: &'static str,
    /// The path beneath the root, from `/`, escaped for a log line.
    pub path: String,
    pub error: io::Error,
    /// The request line, escaped for a log line.
    pub request: String,
}

/// An access-log line waiting for its byte count. The driver writes `before`, the
/// number of body bytes actually handed to the kernel, then `after`: the response's
/// bytes sent, less `head` (the header bytes the send starts with), at most `body`.
/// So a download cut short logs what went out, as nginx's `$body_bytes_sent` does, not
/// what was planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub before: String,
    pub after: String,
    /// Bytes of the send before the body (the status line and fields).
    pub head: u64,
    /// The body's length as planned (0 for HEAD and 304).
    pub body: u64,
}

impl LogLine {
    /// The finished line, for a send that handed `sent` bytes to the kernel.
    pub fn finish(&self, sent: u64) -> String {
        let body = sent.saturating_sub(self.head).min(self.body);
        format!("{}{body}{}", self.before, self.after)
    }
}

/// Makes one protocol value per accepted connection.
pub trait ProtocolFactory: Send + Sync + 'static {
    type Proto: Protocol;
    /// A fresh protocol for a connection from `peer`.
    fn new_conn(&self, peer: SocketAddr) -> Self::Proto;
    /// Bytes written, best effort and without blocking, to a connection that is refused
    /// because the server is at its connection limit.
    fn overload_response(&self) -> Option<&'static [u8]> {
        None
    }
}

/// Lets a shared factory serve as a factory.
impl<F: ProtocolFactory> ProtocolFactory for Arc<F> {
    type Proto = F::Proto;
    fn new_conn(&self, peer: SocketAddr) -> Self::Proto {
        (**self).new_conn(peer)
    }
    fn overload_response(&self) -> Option<&'static [u8]> {
        (**self).overload_response()
    }
}
