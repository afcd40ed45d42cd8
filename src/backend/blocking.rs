//! The driver's third lowering: one connection on the calling thread, with blocking
//! semantics (the `get`/`put`/`ls` client). The same [`Core`] that serves every
//! server connection interprets the protocol's steps; this file only says how each
//! [`Action`] reaches the kernel on a plain non-blocking socket:
//!
//! - `Send`: the epoll pool's blocking send (gathered `sendmsg`, `sendfile` for file
//!   chunks with a copy fallback), bounded by the send timeout;
//! - `Recv`: `recv`, waiting with `poll(2)` up to the deadline;
//! - `RecvFile`: the readiness sink (socket→pipe→file by splice, copy fallback);
//! - `Open`/`Sync`: the calls themselves.
//!
//! Nothing here is handed to the kernel asynchronously, so nothing outlives a call.

use super::driver::{Action, Core, Env, Timeouts};
use super::epoll::send::{send_all, Report};
use super::sink::{Poll, Sink};
use super::CloseReason;
use crate::fs::Root;
use crate::open_cache::OpenCache;
use crate::proto::Protocol;
use crate::stats::Stats;
use crate::sys::epoll::EventFd;
use crate::sys::net;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a blocking connection waits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connecting, and each reply's wait.
    pub reply: Duration,
    /// A body (either way) that makes no progress for this long fails.
    pub body: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            reply: Duration::from_secs(30),
            body: Duration::from_secs(60),
        }
    }
}

/// One connection driven on the calling thread.
pub struct Blocking<P> {
    fd: OwnedFd,
    core: Core<P>,
    root: Root,
    cache: OpenCache,
    timeouts: Timeouts,
    send_timeout: Duration,
    stats: Arc<Stats>,
    /// Never notified: a blocking send is ended only by its timeout.
    abort: EventFd,
    buf: Vec<u8>,
}

impl<P: Protocol> Blocking<P> {
    /// Connects to `addr` (within `limits.reply`) and makes `proto` its protocol.
    pub fn connect(addr: SocketAddr, proto: P, limits: Limits) -> io::Result<Blocking<P>> {
        let stream = TcpStream::connect_timeout(&addr, limits.reply)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let fd = OwnedFd::from(stream);
        Ok(Blocking {
            fd,
            core: Core::new(proto, addr, Instant::now()),
            // Only for the driver's `Env`: a client asks for no file-system operation
            // beneath a root (its files are opened by the caller).
            root: Root::open(std::path::Path::new("/"))?,
            cache: OpenCache::new(0, Duration::ZERO),
            timeouts: Timeouts {
                header: limits.reply,
                keepalive: limits.reply,
                body: limits.body,
            },
            send_timeout: limits.body,
            stats: Arc::new(Stats::default()),
            abort: EventFd::new()?,
            buf: vec![0; 256 * 1024],
        })
    }

    /// The protocol, to start an operation or read its answer.
    pub fn proto(&mut self) -> &mut P {
        &mut self.core.proto
    }

    /// This connection's counters (bytes by path), live: a progress bar reads them
    /// from another thread.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Drives the protocol until `done` says so (`Ok`), or the connection closes
    /// (`Err` with the reason).
    pub fn drive_until(&mut self, done: impl Fn(&P) -> bool) -> Result<(), CloseReason> {
        loop {
            if done(&self.core.proto) {
                return Ok(());
            }
            let mut e = Env::single(&self.timeouts, &self.root, &mut self.cache, &self.stats);
            match self.core.next(&mut e) {
                Action::Send(chunks) => {
                    let core = &mut self.core;
                    let mut report = Report {
                        stats: &self.stats,
                        wrote: &mut |n| core.wrote(n),
                        before_wait: &|| {},
                    };
                    let fd = self.fd.as_fd();
                    send_all(fd, chunks, self.send_timeout, &self.abort, &mut report)?;
                    self.core.sent();
                }
                Action::Recv { deadline } => {
                    if done(&self.core.proto) {
                        self.core.recv_dropped();
                        return Ok(());
                    }
                    self.recv(deadline)?;
                }
                Action::RecvFile { sink, timeout } => {
                    let mut sink = Sink::new(sink, timeout, Instant::now());
                    let r = loop {
                        let now = Instant::now();
                        if now >= sink.deadline() {
                            break Err(io::ErrorKind::TimedOut.into());
                        }
                        match sink.advance(self.fd.as_fd(), &mut self.buf, &self.stats) {
                            Poll::Done(r) => break r,
                            Poll::Pending => {
                                let left = sink.deadline().saturating_duration_since(now);
                                net::wait_readable(self.fd.as_fd(), left)
                                    .map_err(|e| CloseReason::Error(e.kind()))?;
                            }
                        }
                    };
                    self.core.recv_file_done(r);
                }
                Action::Open(path) => {
                    let r = self.root.open_beneath(&path);
                    let mut e =
                        Env::single(&self.timeouts, &self.root, &mut self.cache, &self.stats);
                    self.core.opened(&mut e, &path, r);
                }
                Action::Sync(file) => {
                    let r = crate::fs::sync(&file);
                    let mut e =
                        Env::single(&self.timeouts, &self.root, &mut self.cache, &self.stats);
                    self.core.synced(&mut e, r);
                }
                Action::Close(why) => return Err(why),
            }
        }
    }

    /// One receive, waiting up to `deadline`.
    fn recv(&mut self, deadline: Instant) -> Result<(), CloseReason> {
        loop {
            match net::recv(self.fd.as_fd(), &mut self.buf) {
                Ok(0) => {
                    self.core.eof();
                    return Ok(());
                }
                Ok(n) => {
                    // Frames, not file bytes: the body counters are the sink's.
                    self.core.recv(&self.buf[..n], Instant::now());
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ready = net::wait_readable(self.fd.as_fd(), left)
                        .map_err(|e| CloseReason::Error(e.kind()))?;
                    if !ready {
                        self.core.timed_out(&self.stats);
                        return Ok(());
                    }
                }
                Err(e) => return Err(CloseReason::Error(e.kind())),
            }
        }
    }
}
