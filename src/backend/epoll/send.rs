//! Promise 2 on epoll: the blocking send.
//!
//! Every byte of a [`Step::Send`](crate::proto::Step::Send) goes out in order. Memory
//! chunks go by gathered `sendmsg` (MSG_MORE while more follows), file chunks by
//! `sendfile`, looping past its per-call cap. On EAGAIN the owning worker waits for
//! writability with `poll(2)`, bounded by the send timeout, which restarts whenever
//! bytes move: a slow reader is served, a stalled one is dropped after `send_timeout`
//! and costs only its own connection and this worker (the pool grows around it).

use crate::backend::chunks::{advance, gather, more_after};
use crate::backend::CloseReason;
use crate::proto::Chunk;
use crate::stats::Stats;
use crate::sys::epoll::EventFd;
use crate::sys::net::{self, Writable};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// Bytes read per step when a file must be copied out.
const COPY_CHUNK: usize = 256 * 1024;

/// Sends `chunks` completely or fails with the reason to close the connection.
/// `before_wait` runs each time the send is about to block on the peer: the pool
/// uses it to decide whether to grow.
pub(crate) fn send_all(
    fd: BorrowedFd<'_>,
    chunks: &[Chunk],
    timeout: Duration,
    abort: &EventFd,
    stats: &Stats,
    before_wait: &dyn Fn(),
) -> Result<(), CloseReason> {
    let mut i = 0; // current chunk
    let mut off = 0u64; // bytes of chunk i already sent
    let mut last_progress = Instant::now();
    // The copy fallback's buffer, made the first time sendfile refuses.
    let mut copy: Option<Vec<u8>> = None;
    while i < chunks.len() {
        let res = match &chunks[i] {
            Chunk::File { file, offset, len } => {
                if off == *len {
                    i += 1;
                    off = 0;
                    continue;
                }
                let mut pos = offset.saturating_add(off);
                let r = if copy.is_some() {
                    Err(io::Error::from_raw_os_error(libc::EINVAL))
                } else {
                    net::sendfile(fd, file.file().as_fd(), &mut pos, len - off)
                };
                match r {
                    Ok(0) => return Err(CloseReason::FileShrunk),
                    Ok(n) => {
                        Stats::add(&stats.bytes_sendfile, n as u64);
                        off += n as u64;
                        Ok(())
                    }
                    // A file sendfile cannot read (EINVAL: some FUSE and special
                    // files; ENOSYS): the same bytes by pread and send.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                        let buf = copy.get_or_insert_with(|| vec![0; COPY_CHUNK]);
                        let want = (len - off).min(buf.len() as u64) as usize;
                        let at = offset.saturating_add(off);
                        match file.file().read_at(&mut buf[..want], at) {
                            Ok(0) => return Err(CloseReason::FileShrunk),
                            Ok(n) => {
                                match net::send_vectored(fd, &[io::IoSlice::new(&buf[..n])], false)
                                {
                                    Ok(sent) => {
                                        Stats::add(&stats.bytes_copy, sent as u64);
                                        off += sent as u64;
                                        Ok(())
                                    }
                                    Err(e) => Err(e),
                                }
                            }
                            Err(e) => return Err(CloseReason::Error(e.kind())),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            _ => {
                let (slices, end) = gather(chunks, i, off);
                let more = more_after(chunks, end);
                if slices.is_empty() {
                    i = end;
                    off = 0;
                    continue;
                }
                match net::send_vectored(fd, &slices, more) {
                    Ok(n) => {
                        Stats::add(&stats.bytes_copy, n as u64);
                        (i, off) = advance(chunks, i, off, n as u64);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match res {
            Ok(()) => last_progress = Instant::now(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                before_wait();
                let left = timeout.saturating_sub(last_progress.elapsed());
                match net::wait_writable(fd, abort.as_fd(), left) {
                    Ok(Writable::Ready) => {}
                    Ok(Writable::Aborted) => return Err(CloseReason::Shutdown),
                    Ok(Writable::TimedOut) => {
                        Stats::add(&stats.send_timeouts, 1);
                        return Err(CloseReason::SendTimeout);
                    }
                    Err(e) => return Err(CloseReason::Error(e.kind())),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CloseReason::Error(e.kind())),
        }
    }
    Ok(())
}

/// One non-blocking attempt to send the memory chunks at the head of `chunks`, for a
/// connection about to be closed anyway (a 408 after a timeout). Never waits.
pub(super) fn send_once(fd: BorrowedFd<'_>, chunks: &[Chunk]) {
    let (slices, _) = gather(chunks, 0, 0);
    let _ = net::send_vectored(fd, &slices, false);
}
