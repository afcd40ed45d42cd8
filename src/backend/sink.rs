//! [`RecvFile`] for a readiness backend (the epoll pool, and any driver on a plain
//! socket): the connection's bytes go socket→pipe→file by splice, so they never enter
//! user memory; where no pipe can be had, they are received into a buffer and written.
//!
//! [`Sink::advance`] moves what the socket has now and says `Pending` when it has no
//! more, so a pool worker can park the connection (EPOLLIN, one-shot) instead of
//! waiting; whoever drives it next calls `advance` again. The pipe and the file stay
//! owned by the sink until it is finished or dropped.

use crate::proto::RecvFile;
use crate::stats::Stats;
use crate::sys::pipe::{self, Pipe};
use std::io;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::time::{Duration, Instant};

/// What each upload pipe asks F_SETPIPE_SZ for: as the send path's pipes.
const PIPE_SIZE: i32 = 1024 * 1024;

/// A receive into a file in progress.
#[derive(Debug)]
pub(crate) struct Sink {
    want: RecvFile,
    /// Bytes of the connection written to the file so far.
    got: u64,
    pipe: Option<Pipe>,
    /// Bytes in the pipe not yet written to the file.
    in_pipe: usize,
    /// No pipe could be had: receive and write.
    copy: bool,
    /// The file is a stream (a pipe, a terminal, a socket: a client's `-o -`), which
    /// is written in order without offsets.
    stream: bool,
    /// When a byte last arrived: the body timeout runs from here.
    pub(crate) progress: Instant,
    pub(crate) timeout: Duration,
}

/// Where a sink stands after [`Sink::advance`].
#[derive(Debug)]
pub(crate) enum Poll {
    /// Finished: the bytes of the connection written (fewer than asked: the peer
    /// closed), or why it failed.
    Done(io::Result<u64>),
    /// The socket has nothing more now; drive again when it is readable, or end the
    /// receive at [`Sink::deadline`].
    Pending,
}

impl Sink {
    pub(crate) fn new(want: RecvFile, timeout: Duration, now: Instant) -> Sink {
        let pipe = pipe::pipe(PIPE_SIZE).ok();
        let stream = want
            .file
            .file()
            .metadata()
            .is_ok_and(|m| !m.is_file() && !m.file_type().is_char_device());
        Sink {
            copy: pipe.is_none(),
            stream,
            want,
            got: 0,
            pipe,
            in_pipe: 0,
            progress: now,
            timeout,
        }
    }

    /// When the receive ends for want of bytes.
    pub(crate) fn deadline(&self) -> Instant {
        self.progress + self.timeout
    }

    /// Moves bytes from `sock` (non-blocking) into the file until done or the socket
    /// has none now. `buf` is the copy path's buffer.
    pub(crate) fn advance(&mut self, sock: BorrowedFd<'_>, buf: &mut [u8], st: &Stats) -> Poll {
        match self.run(sock, buf, st) {
            Ok(true) => Poll::Done(Ok(self.got)),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Done(Err(e)),
        }
    }

    fn run(&mut self, sock: BorrowedFd<'_>, buf: &mut [u8], st: &Stats) -> io::Result<bool> {
        let file = self.want.file.file();
        if !self.want.head.is_empty() {
            self.write_at(&self.want.head, self.want.offset)?;
            Stats::add(&st.bytes_recv_copy, self.want.head.len() as u64);
            self.want.offset += self.want.head.len() as u64;
            self.want.head = Vec::new();
        }
        loop {
            let pos = self.want.offset + self.got;
            if self.in_pipe > 0 {
                let p = self.pipe.as_ref().expect("bytes in a pipe");
                let mut at = i64::try_from(pos).map_err(|_| efbig())?;
                let at = if self.stream { None } else { Some(&mut at) };
                let (r, n) = (p.r.as_fd(), self.in_pipe);
                match pipe::splice(r, None, file.as_fd(), at, n, libc::SPLICE_F_MOVE) {
                    Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
                    Ok(n) => {
                        Stats::add(&st.bytes_recv_splice, n as u64);
                        self.in_pipe -= n;
                        self.got += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            let left = self.want.len - self.got;
            if left == 0 {
                return Ok(true);
            }
            let n = if let (Some(p), false) = (&self.pipe, self.copy) {
                let want = left.min(u64::from(p.cap)) as usize;
                let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
                match pipe::splice(sock, None, p.w.as_fd(), None, want, flags) {
                    Ok(n) => {
                        self.in_pipe = n;
                        n
                    }
                    Err(e) => match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(false),
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(e),
                    },
                }
            } else {
                let want = left.min(buf.len() as u64) as usize;
                match crate::sys::net::recv(sock, &mut buf[..want]) {
                    Ok(n) => {
                        self.write_at(&buf[..n], pos)?;
                        Stats::add(&st.bytes_recv_copy, n as u64);
                        self.got += n as u64;
                        n
                    }
                    Err(e) => match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(false),
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(e),
                    },
                }
            };
            if n == 0 {
                return Ok(true); // the peer closed before the end
            }
            self.progress = Instant::now();
        }
    }
}

impl Sink {
    /// Writes `bytes` at `pos` of the file, or next on a stream.
    fn write_at(&self, bytes: &[u8], pos: u64) -> io::Result<()> {
        let mut f = self.want.file.file();
        if self.stream {
            f.write_all(bytes)
        } else {
            f.write_all_at(bytes, pos)
        }
    }
}

fn efbig() -> io::Error {
    io::Error::from_raw_os_error(libc::EFBIG)
}
