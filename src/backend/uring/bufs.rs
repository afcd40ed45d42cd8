//! Memory and pipes a ring hands to the kernel.
//!
//! - [`BufRing`]: a provided-buffer ring (5.19+). RECV picks a buffer only when data
//!   arrives, so an idle connection with a receive armed holds no buffer at all; the
//!   buffer comes back to the ring as soon as the protocol has looked at the bytes.
//! - [`PipePool`]: the pipes file bodies are spliced through, per ring and bounded, so
//!   thousands of connections cannot exhaust the user's pipe pages.

use crate::sys::probe::AnonPages;
use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};

/// The buffer group id of a ring's provided buffers.
pub(super) const BGID: u16 = 0x7273;

/// A provided-buffer ring registered with one io_uring.
pub(super) struct BufRing {
    /// The ring of `io_uring_buf` entries the kernel reads. Registered until drop.
    entries: AnonPages,
    /// The buffers themselves, `count * size` bytes.
    data: Box<[u8]>,
    count: u16,
    size: u32,
    tail: u16,
}

impl BufRing {
    /// Registers `count` (a power of two) buffers of `size` bytes with `ring`.
    pub(super) fn register(ring: &IoUring, count: u16, size: u32) -> io::Result<BufRing> {
        assert!(count.is_power_of_two());
        let entries = AnonPages::new(usize::from(count) * std::mem::size_of::<BufRingEntry>())?;
        let mut br = BufRing {
            entries,
            data: vec![0u8; usize::from(count) * size as usize].into_boxed_slice(),
            count,
            size,
            tail: 0,
        };
        // SAFETY: `entries` is page-aligned, zeroed, `count` entries long, and stays
        // mapped until `unregister` (called before drop, see `Drop` below).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(br.entries.addr(), count, BGID, 0)
        }?;
        for bid in 0..count {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Unregisters from `ring`. Must be called (with no RECV armed) before drop.
    pub(super) fn unregister(&self, ring: &IoUring) {
        let _ = ring.submitter().unregister_buf_ring(BGID);
    }

    /// Buffer size; what a RECV may ask for.
    pub(super) fn size(&self) -> u32 {
        self.size
    }

    /// The first `len` bytes of buffer `bid`, as a completion reported them.
    pub(super) fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid % self.count) * self.size as usize;
        &self.data[start..start + len.min(self.size as usize)]
    }

    /// Gives buffer `bid` back to the kernel.
    pub(super) fn recycle(&mut self, bid: u16) {
        self.push(bid % self.count);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let base = self.entries.addr() as *mut BufRingEntry;
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot < count`, so the entry is inside the mapping. The kernel reads
        // entries only below the published tail, and this one is past it until
        // `publish`, so we are its only user.
        let e = unsafe { &mut *base.add(slot) };
        let addr = self.data.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        e.set_addr(addr);
        e.set_len(self.size);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes pushed entries visible to the kernel.
    fn publish(&self) {
        let base = self.entries.addr() as *const BufRingEntry;
        // SAFETY: the tail lives in the first entry's reserved field, inside the
        // mapping; the kernel reads it atomically, so we write it atomically, with
        // Release so the entries written before are visible first.
        let tail = unsafe { &*(BufRingEntry::tail(base) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }
}

/// A pipe, both ends, and what it holds.
pub(super) struct Pipe {
    pub(super) r: OwnedFd,
    pub(super) w: OwnedFd,
    /// Its capacity: the most one splice into it moves.
    pub(super) cap: u32,
}

/// A bounded per-ring pool of pipes sized with F_SETPIPE_SZ.
pub(super) struct PipePool {
    free: Vec<Pipe>,
    /// Pipes that exist: free ones plus those lent out.
    live: usize,
    max: usize,
    /// A pipe was taken since the last trim.
    used: bool,
}

/// What each pipe asks F_SETPIPE_SZ for. Larger means fewer splice round trips per
/// megabyte: 1 GiB to 4 connections went 1.83-1.87 -> 2.02-2.11 GB/s from 256 KiB.
/// /proc/sys/fs/pipe-max-size (1 MiB by default) caps it, and an unprivileged user
/// past pipe-user-pages-soft keeps the default size (F_GETPIPE_SZ says which).
const PIPE_SIZE: i32 = 1024 * 1024;

impl PipePool {
    pub(super) fn new(max: usize) -> PipePool {
        PipePool {
            free: Vec::new(),
            live: 0,
            max,
            used: false,
        }
    }

    /// A clean pipe, or `None` when the pool is at its bound (the caller then copies
    /// with read+send instead of waiting).
    pub(super) fn take(&mut self) -> Option<Pipe> {
        self.used = true;
        if let Some(p) = self.free.pop() {
            return Some(p);
        }
        if self.live >= self.max {
            return None;
        }
        let mut fds = [0; 2];
        // SAFETY: `fds` is a live array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return None;
        }
        // SAFETY: both descriptors are fresh and ours.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on a pipe we own; on failure (over pipe-max-size or the
        // user's pipe pages) the pipe keeps the size it has, which F_GETPIPE_SZ reads.
        let cap = unsafe {
            libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
            libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let pipe = Pipe {
            r,
            w,
            cap: u32::try_from(cap).unwrap_or(4096).max(4096),
        };
        self.live += 1;
        Some(pipe)
    }

    /// Closes the free pipes if none was taken since the last call: an idle server goes
    /// back to its baseline of descriptors and pipe pages.
    pub(super) fn trim(&mut self) {
        if !std::mem::take(&mut self.used) {
            self.live -= self.free.len();
            self.free.clear();
        }
    }

    /// Returns a pipe. One that may still hold bytes is closed instead of reused.
    pub(super) fn give(&mut self, pipe: Pipe, empty: bool) {
        if empty {
            self.free.push(pipe);
        } else {
            self.live -= 1;
        }
    }
}
