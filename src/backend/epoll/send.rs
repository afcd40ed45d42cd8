//! Promise 2 on epoll: the blocking send.
//!
//! Every byte of a [`Step::Send`](crate::proto::Step::Send) goes out in order. Memory
//! chunks go by gathered `sendmsg` (MSG_MORE while more follows), file chunks by
//! `sendfile`, looping past its per-call cap. On EAGAIN the owning worker waits for
//! writability with `poll(2)`, bounded by the send timeout, which restarts whenever
//! bytes move: a slow reader is served, a stalled one is dropped after `send_timeout`
//! and costs only its own connection and this worker (the pool grows around it).

use crate::backend::CloseReason;
use crate::proto::Chunk;
use crate::stats::Stats;
use crate::sys::epoll::EventFd;
use crate::sys::net::{self, Writable};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// How many memory chunks one sendmsg gathers.
const MAX_IOV: usize = 64;

/// Sends `chunks` completely or fails with the reason to close the connection.
/// `before_wait` runs each time the send is about to block on the peer: the pool
/// uses it to decide whether to grow.
pub(super) fn send_all(
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
    while i < chunks.len() {
        let res = match &chunks[i] {
            Chunk::File { file, offset, len } => {
                if off == *len {
                    i += 1;
                    off = 0;
                    continue;
                }
                let mut pos = offset.saturating_add(off);
                match net::sendfile(fd, file.as_fd(), &mut pos, len - off) {
                    Ok(0) => return Err(CloseReason::FileShrunk),
                    Ok(n) => {
                        Stats::add(&stats.bytes_sendfile, n as u64);
                        off += n as u64;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            _ => {
                let (slices, end) = gather(chunks, i, off);
                let more = chunks[end..].iter().any(|c| !c.is_empty());
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

fn mem(c: &Chunk) -> Option<&[u8]> {
    match c {
        Chunk::Mem(v) => Some(v),
        Chunk::Static(s) => Some(s),
        Chunk::File { .. } => None,
    }
}

/// The run of memory chunks from chunk `i` (skipping its first `off` bytes), up to
/// [`MAX_IOV`] of them; and the index just past the run.
fn gather(chunks: &[Chunk], i: usize, off: u64) -> (Vec<IoSlice<'_>>, usize) {
    let mut slices = Vec::new();
    let mut j = i;
    while j < chunks.len() && slices.len() < MAX_IOV {
        let Some(b) = mem(&chunks[j]) else { break };
        let b = if j == i { &b[off as usize..] } else { b };
        if !b.is_empty() {
            slices.push(IoSlice::new(b));
        }
        j += 1;
    }
    (slices, j)
}

/// Moves the cursor `(i, off)` forward by `n` bytes, stepping over chunks that are
/// finished or empty.
fn advance(chunks: &[Chunk], mut i: usize, mut off: u64, mut n: u64) -> (usize, u64) {
    while i < chunks.len() {
        let left = chunks[i].len() - off;
        if n < left {
            return (i, off + n);
        }
        n -= left;
        i += 1;
        off = 0;
    }
    (i, off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks() -> Vec<Chunk> {
        vec![
            Chunk::Mem(b"abc".to_vec()),
            Chunk::Static(b""),
            Chunk::Static(b"de"),
            Chunk::Mem(b"f".to_vec()),
        ]
    }

    #[test]
    fn advance_crosses_chunks_and_skips_empty_ones() {
        let c = chunks();
        assert_eq!(advance(&c, 0, 0, 2), (0, 2));
        assert_eq!(advance(&c, 0, 0, 3), (2, 0));
        assert_eq!(advance(&c, 0, 2, 2), (2, 1));
        assert_eq!(advance(&c, 0, 0, 6), (4, 0));
    }

    #[test]
    fn gather_starts_mid_chunk() {
        let c = chunks();
        let (s, end) = gather(&c, 0, 1);
        let all: Vec<u8> = s.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(all, b"bcdef");
        assert_eq!(end, 4);
    }
}
