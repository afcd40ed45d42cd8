//! The probe's submit edge: throw-away rings that each try one thing the opcode probe
//! cannot show. Every try is bounded by a TIMEOUT request, completes or cancels what it
//! armed before returning, and closes every fd it made (or was handed in a CQE).

use std::io::{self, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::names::{errno_display, errno_name};
use crate::sys::mem::AnonPages;

const ENTRIES: u32 = 8;
/// These tries complete in microseconds, and a kernel without the feature answers at
/// once (EINVAL); the bound only stops a surprise from hanging startup. It is generous
/// because a slow machine must not read as a missing feature: at 20 ms, a 6.12 guest
/// under TCG on a loaded host once reported multishot accept absent. Worst case the
/// whole probe waits 3 × this.
const TRY_TIMEOUT: Duration = Duration::from_millis(500);

// user_data values. The guard and cancel values cannot collide with the small ones.
const GUARD: u64 = u64::MAX;
const CANCEL: u64 = u64::MAX - 1;
const ACCEPT: u64 = 1;
const PROVIDE: u64 = 2;
const RECV: u64 = 3;

/// A setup flag detected by setting up a ring with it: kernels without it answer EINVAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupFlag {
    SingleIssuer,
    /// Tried together with SINGLE_ISSUER, which the kernel requires for it.
    DeferTaskrun,
    CoopTaskrun,
    SubmitAll,
}

/// Sets up (and drops) a ring with `flag`.
pub fn setup_flag(flag: SetupFlag) -> Result<(), String> {
    let mut b = IoUring::<squeue::Entry, cqueue::Entry>::builder();
    match flag {
        SetupFlag::SingleIssuer => b.setup_single_issuer(),
        SetupFlag::DeferTaskrun => b.setup_single_issuer().setup_defer_taskrun(),
        SetupFlag::CoopTaskrun => b.setup_coop_taskrun(),
        SetupFlag::SubmitAll => b.setup_submit_all(),
    };
    b.build(ENTRIES)
        .map(drop)
        .map_err(|e| io_err("io_uring_setup", &e))
}

/// Multishot accept: a listener with one connection already queued, then an ACCEPT
/// with `IORING_ACCEPT_MULTISHOT`. Present if the first CQE accepts and carries
/// `IORING_CQE_F_MORE`; kernels before 5.19 answer -EINVAL.
pub fn multishot_accept() -> Result<(), String> {
    multishot_accept_on(queued_connection()?)
}

fn multishot_accept_on((listener, _client): (OwnedFd, OwnedFd)) -> Result<(), String> {
    // Declared after the sockets, so dropped (and its requests cancelled) before them.
    let mut ring = Ring::new()?;
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .build()
        .user_data(ACCEPT);
    // SAFETY: ACCEPT without an address buffer writes no user memory, and `listener`
    // outlives the ring.
    unsafe { ring.push(&accept) }?;
    let first = ring.next(ACCEPT)?;
    close_accepted(&first);
    check_multishot("ACCEPT", &first)?;
    ring.cancel_and_drain(ACCEPT, close_accepted)
}

/// A listening socket and a connected client, so an accept completes at once.
/// TCP on 127.0.0.1:0 first; where loopback is down or networking is sandboxed away, a
/// Unix socket in the abstract namespace (no file, no network) does the same job.
fn queued_connection() -> Result<(OwnedFd, OwnedFd), String> {
    tcp_connection().or_else(|tcp_err| {
        unix_connection().map_err(|e| {
            format!(
                "no listening socket to try on: {}; {}",
                io_err("127.0.0.1", &tcp_err),
                io_err("abstract unix", &e)
            )
        })
    })
}

fn tcp_connection() -> io::Result<(OwnedFd, OwnedFd)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let client = TcpStream::connect_timeout(&listener.local_addr()?, TRY_TIMEOUT)?;
    Ok((listener.into(), client.into()))
}

fn unix_connection() -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "ringserve-probe-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let listener = UnixListener::bind_addr(&addr)?;
    let client = UnixStream::connect_addr(&addr)?;
    Ok((listener.into(), client.into()))
}

/// Multishot recv: one byte waiting on a Unix stream socket, two provided buffers
/// (PROVIDE_BUFFERS, 5.7, so this also works where the buffer ring does not), then a
/// RECV with `IORING_RECV_MULTISHOT`. Present if the first CQE carries
/// `IORING_CQE_F_MORE`; older kernels reject the flag or do a single-shot recv.
pub fn multishot_recv() -> Result<(), String> {
    const BGID: u16 = 0x7273;
    const BUF_LEN: usize = 16;
    const NBUFS: u16 = 2;
    let (tx, rx) = UnixStream::pair().map_err(|e| io_err("socketpair", &e))?;
    (&tx).write_all(b"x").map_err(|e| io_err("write", &e))?;
    let mut bufs = vec![0u8; BUF_LEN * usize::from(NBUFS)];
    let mut ring = Ring::new()?;
    let outcome = (|| {
        let provide =
            opcode::ProvideBuffers::new(bufs.as_mut_ptr(), BUF_LEN as i32, NBUFS, BGID, 0)
                .build()
                .user_data(PROVIDE);
        // SAFETY: the kernel may write into `bufs` while a recv is armed on this ring;
        // `bufs` outlives the ring, and is leaked below if a recv may still be armed.
        unsafe { ring.push(&provide) }?;
        let provided = ring.next(PROVIDE)?;
        if provided.result() < 0 {
            return Err(format!(
                "PROVIDE_BUFFERS CQE: {}",
                errno_name(-provided.result())
            ));
        }
        let recv = opcode::RecvMulti::new(types::Fd(rx.as_raw_fd()), BGID)
            .build()
            .user_data(RECV);
        // SAFETY: the recv's memory is the buffer group above; `rx` outlives the ring.
        unsafe { ring.push(&recv) }?;
        let first = ring.next(RECV)?;
        check_multishot("RECV", &first)?;
        ring.cancel_and_drain(RECV, |_| {})
    })();
    let armed = ring.timed_out;
    drop(ring);
    if armed {
        // Ring teardown is asynchronous, so a recv still armed could write into the
        // buffers after we return. Leaking 32 bytes on a path that should never run
        // is the safe trade.
        std::mem::forget(bufs);
    }
    outcome
}

/// Provided-buffer ring: register an 8-entry ring on a fresh page, then unregister it.
/// Kernels before 5.19 answer EINVAL.
pub fn buf_ring() -> Result<(), String> {
    const BGID: u16 = 0x7262;
    let pages = AnonPages::new(4096).map_err(|e| io_err("mmap", &e))?;
    let ring = IoUring::new(ENTRIES).map_err(|e| io_err("io_uring_setup", &e))?;
    let submitter = ring.submitter();
    // SAFETY: `pages` stays mapped until after the buffer ring is unregistered below and
    // the ring is dropped (it is declared first, so dropped last).
    unsafe { submitter.register_buf_ring_with_flags(pages.addr(), 8, BGID, 0) }
        .map_err(|e| io_err("IORING_REGISTER_PBUF_RING", &e))?;
    submitter
        .unregister_buf_ring(BGID)
        .map_err(|e| io_err("IORING_UNREGISTER_PBUF_RING", &e))
}

/// cachestat(2) on a fresh memfd: present if the kernel answers at all (6.5+).
pub fn cachestat() -> Result<(), String> {
    let fd = crate::sys::mem::memfd(c"ringserve-probe").map_err(|e| io_err("memfd_create", &e))?;
    crate::sys::fs::all_cached(std::os::fd::AsFd::as_fd(&fd), 0, 1)
        .map(drop)
        .map_err(|e| io_err("cachestat", &e))
}

/// A ring armed with a TIMEOUT guard so no wait on it can outlast [`TRY_TIMEOUT`].
struct Ring {
    ring: IoUring,
    /// Boxed so its address survives moves of `Ring`; the kernel copies it at submit.
    _guard: Box<types::Timespec>,
    /// The guard fired: requests may still be armed until the ring is torn down.
    timed_out: bool,
}

impl Ring {
    fn new() -> Result<Ring, String> {
        let ring = IoUring::new(ENTRIES).map_err(|e| io_err("io_uring_setup", &e))?;
        let guard = Box::new(types::Timespec::from(TRY_TIMEOUT));
        let timeout = opcode::Timeout::new(&*guard).build().user_data(GUARD);
        let mut ring = Ring {
            ring,
            _guard: guard,
            timed_out: false,
        };
        // SAFETY: the timespec is boxed in `ring` and so outlives the submission, where
        // the kernel copies it; a TIMEOUT touches no other memory.
        unsafe { ring.push(&timeout) }?;
        Ok(ring)
    }

    /// Queues and submits one SQE.
    ///
    /// # Safety
    /// As [`io_uring::SubmissionQueue::push`]: memory the entry points at must stay valid
    /// until its last CQE, or until the ring is gone.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> Result<(), String> {
        // SAFETY: forwarded to our caller.
        unsafe { self.ring.submission().push(entry) }
            .map_err(|_| "submission queue full".to_owned())?;
        self.ring
            .submit()
            .map(drop)
            .map_err(|e| io_err("io_uring_enter", &e))
    }

    /// The next CQE, which must belong to `want`; waits at most until the guard fires.
    fn next(&mut self, want: u64) -> Result<cqueue::Entry, String> {
        let cqe = self.next_any()?;
        match cqe.user_data() {
            u if u == want => Ok(cqe),
            u => Err(format!(
                "unexpected CQE for user_data {u}: {}",
                cqe.result()
            )),
        }
    }

    fn next_any(&mut self) -> Result<cqueue::Entry, String> {
        loop {
            if self.timed_out {
                return Err(format!("no CQE within {} ms", TRY_TIMEOUT.as_millis()));
            }
            if let Some(cqe) = self.ring.completion().next() {
                if cqe.user_data() == GUARD {
                    self.timed_out = true;
                    continue;
                }
                return Ok(cqe);
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("io_uring_enter", &e)),
            }
        }
    }

    /// Cancels the multishot request `target` and consumes its CQEs up to the last one
    /// (the one without `IORING_CQE_F_MORE`), handing each to `each`.
    fn cancel_and_drain(
        &mut self,
        target: u64,
        mut each: impl FnMut(&cqueue::Entry),
    ) -> Result<(), String> {
        let cancel = opcode::AsyncCancel::new(target).build().user_data(CANCEL);
        // SAFETY: ASYNC_CANCEL points at no memory.
        unsafe { self.push(&cancel) }?;
        let (mut cancelled, mut finished) = (false, false);
        while !(cancelled && finished) {
            let cqe = self.next_any()?;
            match cqe.user_data() {
                CANCEL => cancelled = true,
                u if u == target => {
                    each(&cqe);
                    finished |= !cqueue::more(cqe.flags());
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Present means the first CQE succeeded and promised more.
fn check_multishot(op: &str, first: &cqueue::Entry) -> Result<(), String> {
    if first.result() < 0 {
        return Err(format!("{op} CQE: {}", errno_name(-first.result())));
    }
    if !cqueue::more(first.flags()) {
        return Err(format!(
            "{op} CQE without IORING_CQE_F_MORE: the flag was ignored"
        ));
    }
    Ok(())
}

fn close_accepted(cqe: &cqueue::Entry) {
    if cqe.result() >= 0 {
        // SAFETY: a successful ACCEPT CQE carries a new fd the kernel installed for this
        // process; nothing else knows it, so this is its only owner.
        drop(unsafe { OwnedFd::from_raw_fd(cqe.result()) });
    }
}

fn io_err(call: &str, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("{call}: {}", errno_display(n)),
        None => format!("{call}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A request that never completes (ACCEPT with nobody connecting) must not hang the
    /// probe: the guard ends the wait and marks the ring as possibly still armed.
    #[test]
    fn guard_bounds_the_wait() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut ring = match Ring::new() {
            Ok(ring) => ring,
            Err(e) => return eprintln!("SKIP: io_uring unavailable here: {e}"),
        };
        let accept = opcode::Accept::new(
            types::Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .build()
        .user_data(ACCEPT);
        let started = Instant::now();
        // SAFETY: no address buffers; `listener` outlives the ring.
        unsafe { ring.push(&accept) }.unwrap();
        let err = ring.next(ACCEPT).unwrap_err();
        let took = started.elapsed();
        assert!(err.starts_with("no CQE within 500 ms"), "{err}");
        assert!(ring.timed_out);
        assert!(
            took >= TRY_TIMEOUT / 2 && took < TRY_TIMEOUT * 4,
            "{took:?}"
        );
        // Later waits return at once instead of blocking on a ring with no timer left.
        assert!(ring.next(ACCEPT).is_err());
    }

    #[test]
    fn each_try_succeeds_on_a_modern_kernel() {
        if IoUring::new(ENTRIES).is_err() {
            return eprintln!("SKIP: io_uring unavailable here");
        }
        let release = crate::sys::probe::kernel_release().unwrap();
        let mut parts = release.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
        if (parts.next(), parts.next()) < (Some(6), Some(1)) {
            return eprintln!("SKIP: kernel {release} is older than 6.1");
        }
        assert_eq!(multishot_accept(), Ok(()));
        // The fallback fixture, for hosts where loopback TCP is unavailable.
        assert_eq!(multishot_accept_on(unix_connection().unwrap()), Ok(()));
        assert_eq!(multishot_recv(), Ok(()));
        assert_eq!(buf_ring(), Ok(()));
        for flag in [
            SetupFlag::SingleIssuer,
            SetupFlag::DeferTaskrun,
            SetupFlag::CoopTaskrun,
            SetupFlag::SubmitAll,
        ] {
            assert_eq!(setup_flag(flag), Ok(()), "{flag:?}");
        }
    }
}
