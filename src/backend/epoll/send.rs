//! Promise 2 on epoll: the blocking send, without holding a worker hostage.
//!
//! Every byte of a [`Step::Send`](crate::proto::Step::Send) goes out in order. Memory
//! chunks go by gathered `sendmsg` (MSG_MORE while more follows), file chunks by
//! `sendfile`, looping past its per-call cap. On EAGAIN the owning worker waits for
//! writability with `poll(2)`, but only for [`PARK_AFTER`]: a peer that drains its
//! window within that bound (any reader on a LAN or loopback) is served without a park;
//! one that does not is *parked* with its cursor ([`Sending`]) and re-armed
//! EPOLLOUT|EPOLLONESHOT, and whichever worker gets that one-shot event is its one
//! owner and goes on from the cursor. The protocol is still not polled until the last
//! byte is in the kernel, so the semantics are the blocking send's; only the waiting
//! moved from a thread to epoll. A send that makes no progress for `send_timeout`
//! (the seed's BLOCKING_SEND_TIMEOUT, 20 s) ends the connection, whether a worker is
//! waiting on it or it is parked (the coordinator's scan). So a thousand slow readers
//! hold no workers, and the others keep being served.
//!
//! [`send_all`] is the same cursor driven to the end on the calling thread: the xfer
//! client's blocking send, which has nothing else to do meanwhile.

use crate::backend::chunks::{advance, gather, more_after, wants_cork};
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

/// How long a worker waits for a full socket to drain before it parks the send. Long
/// enough that a reader keeping up (loopback, a LAN: the window drains in well under a
/// millisecond) never costs a park's two epoll_ctl and a wakeup; short enough that a
/// slow reader holds a worker for at most this per window it fills.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(10);

/// A response on its way out: the chunks and where the send stands. Moves with the
/// connection when it parks; nothing of it is in the kernel between calls.
pub(crate) struct Sending {
    chunks: Vec<Chunk>,
    /// The chunk being sent, and how many of its bytes are sent.
    i: usize,
    off: u64,
    /// When bytes last moved: `send_timeout` runs from here.
    last_progress: Instant,
    /// The copy fallback's buffer, made the first time sendfile refuses.
    copy: Option<Vec<u8>>,
    /// Whether TCP_CORK is on for this response (a large body, [`wants_cork`]): decided
    /// at its first step (`None` before), cleared when its last byte is in the kernel.
    corked: Option<bool>,
}

/// What [`Sending::advance`] left the send as.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Every byte is in the kernel.
    Done,
    /// The socket stayed full for the wait allowed: park, re-armed for EPOLLOUT.
    Full,
}

/// Where the bytes of a send are reported, as they reach the kernel.
pub(crate) struct Report<'a> {
    pub stats: &'a Stats,
    /// Every byte count handed to the kernel (the access log's bytes sent).
    pub wrote: &'a mut dyn FnMut(u64),
    /// Runs each time the send is about to wait on the peer: the pool uses it to
    /// decide whether to grow.
    pub before_wait: &'a dyn Fn(),
}

impl Sending {
    /// A finished send's buffers, back to this thread's pool for the next response.
    pub(crate) fn recycle(self) {
        crate::proto::pool::give_chunks(self.chunks);
    }

    pub(crate) fn new(chunks: Vec<Chunk>, now: Instant) -> Sending {
        Sending {
            chunks,
            i: 0,
            off: 0,
            last_progress: now,
            copy: None,
            corked: None,
        }
    }

    /// When the send times out if no byte moves before then.
    pub(crate) fn deadline(&self, timeout: Duration) -> Instant {
        self.last_progress + timeout
    }

    /// Sends until every byte is in the kernel (`Done`), the socket has stayed full for
    /// `wait` (`Full`: park it), or the connection must end (the reason). `abort`
    /// readable (the server stopping) ends a wait at once.
    pub(crate) fn advance(
        &mut self,
        fd: BorrowedFd<'_>,
        wait: Duration,
        timeout: Duration,
        abort: &EventFd,
        r: &mut Report<'_>,
    ) -> Result<Sent, CloseReason> {
        let stats = r.stats;
        let chunks = &self.chunks;
        if self.corked.is_none() {
            self.corked = Some(wants_cork(chunks) && net::set_cork(fd, true).is_ok());
        }
        while self.i < chunks.len() {
            let res = match &chunks[self.i] {
                Chunk::File { file, offset, len } => {
                    if self.off == *len {
                        self.i += 1;
                        self.off = 0;
                        continue;
                    }
                    let left = len - self.off;
                    let at = offset.saturating_add(self.off);
                    let r = if self.copy.is_some() {
                        Err(io::Error::from_raw_os_error(libc::EINVAL))
                    } else {
                        let mut pos = at;
                        net::sendfile(fd, file.file().as_fd(), &mut pos, left)
                    };
                    match r {
                        Ok(0) => return Err(CloseReason::FileShrunk),
                        Ok(n) => {
                            Stats::add(&stats.bytes_sendfile, n as u64);
                            Ok(n as u64)
                        }
                        // A file sendfile cannot read (EINVAL: some FUSE and special
                        // files; ENOSYS): the same bytes by pread and send.
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                            let buf = self.copy.get_or_insert_with(|| vec![0; COPY_CHUNK]);
                            let want = left.min(buf.len() as u64) as usize;
                            match file.file().read_at(&mut buf[..want], at) {
                                Ok(0) => return Err(CloseReason::FileShrunk),
                                Ok(n) => {
                                    let slice = [io::IoSlice::new(&buf[..n])];
                                    net::send_vectored(fd, &slice, false).map(|sent| {
                                        Stats::add(&stats.bytes_copy, sent as u64);
                                        sent as u64
                                    })
                                }
                                Err(e) => return Err(CloseReason::Error(e.kind())),
                            }
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => {
                    let (slices, end) = gather(chunks, self.i, self.off);
                    let slices = slices.as_slice();
                    if slices.is_empty() {
                        self.i = end;
                        self.off = 0;
                        continue;
                    }
                    let more = more_after(chunks, end);
                    net::send_vectored(fd, slices, more).map(|n| {
                        Stats::add(&stats.bytes_copy, n as u64);
                        n as u64
                    })
                }
            };
            match res {
                Ok(n) => {
                    (r.wrote)(n);
                    if matches!(chunks[self.i], Chunk::File { .. }) {
                        self.off += n;
                    } else {
                        (self.i, self.off) = advance(chunks, self.i, self.off, n);
                    }
                    self.last_progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = timeout.saturating_sub(self.last_progress.elapsed());
                    if left.is_zero() {
                        Stats::add(&stats.send_timeouts, 1);
                        return Err(CloseReason::SendTimeout);
                    }
                    (r.before_wait)();
                    match net::wait_writable(fd, abort.as_fd(), wait.min(left)) {
                        Ok(Writable::Ready) => {}
                        Ok(Writable::Aborted) => return Err(CloseReason::Shutdown),
                        Ok(Writable::TimedOut) if wait < left => return Ok(Sent::Full),
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
        if self.corked == Some(true) {
            // Pushes the body's last partial segment.
            let _ = net::set_cork(fd, false);
            self.corked = Some(false);
        }
        Ok(Sent::Done)
    }
}

/// Sends `chunks` completely, waiting on the calling thread as long as bytes keep
/// moving, or fails with the reason to close the connection.
pub(crate) fn send_all(
    fd: BorrowedFd<'_>,
    chunks: Vec<Chunk>,
    timeout: Duration,
    abort: &EventFd,
    r: &mut Report<'_>,
) -> Result<(), CloseReason> {
    let mut s = Sending::new(chunks, Instant::now());
    loop {
        // Waiting the whole timeout each time: `Full` cannot come back.
        match s.advance(fd, timeout, timeout, abort, r)? {
            Sent::Done => return Ok(()),
            Sent::Full => continue,
        }
    }
}

/// One non-blocking attempt to send the memory chunks at the head of `chunks`, for a
/// connection about to be closed anyway (a 408 after a timeout). Never waits.
/// Returns the bytes that went.
pub(super) fn send_once(fd: BorrowedFd<'_>, chunks: &[Chunk]) -> u64 {
    let (slices, _) = gather(chunks, 0, 0);
    net::send_vectored(fd, slices.as_slice(), false).map_or(0, |n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::FileRef;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    /// A TCP connection on loopback: the server's end (non-blocking, as accepted
    /// sockets are) and the peer's.
    fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (ours, peer)
    }

    /// A body of at least CORK_MIN goes under TCP_CORK from its header on, through
    /// a park, and the cork is off once its last byte is in (so its last partial
    /// segment goes at once, not after the kernel's 200 ms); a small response is never
    /// corked. Every byte arrives in order.
    #[test]
    fn a_large_body_is_corked_until_its_last_byte_is_in() {
        let path = std::env::temp_dir().join(format!("ringserve-cork-{}", std::process::id()));
        let body: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &body).unwrap();
        let file = FileRef::new(std::fs::File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        let (ours, mut peer) = tcp_pair();
        let (abort, stats) = (EventFd::new().unwrap(), Stats::default());
        let (mut wrote, before_wait) = (|_| {}, || {});
        let mut r = Report {
            stats: &stats,
            wrote: &mut wrote,
            before_wait: &before_wait,
        };
        let len = body.len() as u64;
        let chunks = vec![
            Chunk::Mem(b"head".to_vec()),
            Chunk::File {
                file,
                offset: 0,
                len,
            },
        ];
        let mut s = Sending::new(chunks, Instant::now());
        let wait = Duration::from_millis(10);
        let timeout = Duration::from_secs(5);
        // Nobody reads yet: the socket fills and the send parks, corked.
        let first = s.advance(ours.as_fd(), wait, timeout, &abort, &mut r);
        assert!(matches!(first, Ok(Sent::Full)), "4 MiB fit in the socket");
        assert!(net::corked(ours.as_fd()).unwrap(), "not corked mid-body");
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; body.len() + 4];
            peer.read_exact(&mut got).unwrap();
            (got, body, peer)
        });
        loop {
            match s.advance(ours.as_fd(), wait, timeout, &abort, &mut r) {
                Ok(Sent::Done) => break,
                Ok(Sent::Full) => continue,
                Err(e) => panic!("the send failed: {e:?}"),
            }
        }
        assert!(
            !net::corked(ours.as_fd()).unwrap(),
            "still corked after the body"
        );
        let (got, body, mut peer) = reader.join().unwrap();
        assert!(
            got[..4] == *b"head" && got[4..] == body[..],
            "the bytes changed"
        );
        // A small response: no cork.
        let mut s = Sending::new(vec![Chunk::Mem(b"small".to_vec())], Instant::now());
        let done = s.advance(ours.as_fd(), wait, timeout, &abort, &mut r);
        assert!(matches!(done, Ok(Sent::Done)) && s.corked == Some(false));
        let mut small = [0u8; 5];
        peer.read_exact(&mut small).unwrap();
        assert_eq!(&small, b"small");
    }
}
