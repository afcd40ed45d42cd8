//! Memory and pipes a ring hands to the kernel.
//!
//! - [`BufRing`]: a provided-buffer ring (5.19+). RECV picks a buffer only when data
//!   arrives, so an idle connection with a receive armed holds no buffer at all; the
//!   buffer comes back to the ring as soon as the protocol has looked at the bytes.
//! - [`PipePool`]: the pipes file bodies are spliced through, per ring and bounded, so
//!   thousands of connections cannot exhaust the user's pipe pages.
//!
//! Both are owned by the ring's `Io`, which declares the ring before them: the ring's
//! descriptor is closed first, and teardown has unregistered the buffer ring and reaped
//! every receive by then (the rule of `ring/lifecycle.rs`).

use crate::sys::mem::AnonPages;
pub(super) use crate::sys::pipe::Pipe;
use io_uring::IoUring;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// The buffer group id of a ring's provided buffers.
pub(super) const BGID: u16 = 0x7273;

/// `struct io_uring_buf`, as the kernel lays it out. Ours, so that an entry's fields
/// are written through raw pointers one by one: the first entry's `resv` *is* the
/// ring's tail, which the kernel reads concurrently, and a `&mut` over it would alias.
#[repr(C)]
struct RawEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawEntry>() == 16);

/// A provided-buffer ring registered with one io_uring.
pub(super) struct BufRing {
    /// The ring of `io_uring_buf` entries the kernel reads. Registered until
    /// `unregister`, which teardown calls once no receive is in flight.
    entries: AnonPages,
    /// The buffers themselves, `count * size` bytes the kernel writes received bytes
    /// into. Raw mapped memory, not a Rust allocation: a slice of one buffer is made
    /// only while the kernel has handed that buffer to us and will not touch it.
    data: AnonPages,
    count: u16,
    size: u32,
    tail: u16,
}

impl BufRing {
    /// Registers `count` (a power of two) buffers of `size` bytes with `ring`.
    pub(super) fn register(ring: &IoUring, count: u16, size: u32) -> io::Result<BufRing> {
        if !count.is_power_of_two() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let entries = AnonPages::new(usize::from(count) * std::mem::size_of::<RawEntry>())?;
        // The kernel hands buffers out in ring order, so within `count` receives every
        // one is touched: populated now, the whole pool is a start-up cost (1 MiB at
        // the default 256) instead of RSS that grows under the first traffic and reads
        // as per-connection memory.
        let data = AnonPages::populated(usize::from(count) * size as usize)?;
        let mut br = BufRing {
            entries,
            data,
            count,
            size,
            tail: 0,
        };
        // SAFETY: `entries` is page-aligned, zeroed and `count` entries long; it stays
        // mapped for as long as `self` lives, and `self` lives until after teardown
        // unregisters it (field order in `Io`, and lifecycle.rs).
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

    /// Unregisters from `ring`. Called by teardown, with no receive in flight.
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
        let len = len.min(self.size as usize);
        // SAFETY: the range lies inside `data` (bid < count, len <= size). The kernel
        // filled buffer `bid` and handed it to us with this completion; it writes it
        // again only after `recycle(bid)`, which takes `&mut self` and so cannot happen
        // while this borrow lives.
        unsafe { std::slice::from_raw_parts((self.data.addr() as *const u8).add(start), len) }
    }

    /// Gives buffer `bid` back to the kernel.
    pub(super) fn recycle(&mut self, bid: u16) {
        self.push(bid % self.count);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let base = self.entries.addr() as *mut RawEntry;
        let slot = usize::from(self.tail & (self.count - 1));
        let addr = self.data.addr() + u64::from(bid) * u64::from(self.size);
        // SAFETY: `slot < count`, so the entry is inside the mapping. The kernel reads
        // entries only below the published tail, and this one is past it until
        // `publish`, so no one else reads or writes these three fields now. `resv` (the
        // tail, in entry 0) is not touched.
        unsafe {
            let e = base.add(slot);
            std::ptr::addr_of_mut!((*e).addr).write(addr);
            std::ptr::addr_of_mut!((*e).len).write(self.size);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes pushed entries visible to the kernel.
    fn publish(&self) {
        let base = self.entries.addr() as *const RawEntry;
        // SAFETY: the tail lives in the first entry's `resv`, inside the mapping and
        // 2-byte aligned; the kernel reads it atomically, so we store it atomically,
        // with Release so the entries written before are visible first.
        let tail = unsafe { &*(std::ptr::addr_of!((*base).resv) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }
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
    /// instead of waiting).
    pub(super) fn take(&mut self) -> Option<Pipe> {
        self.used = true;
        if let Some(p) = self.free.pop() {
            return Some(p);
        }
        if self.live >= self.max {
            return None;
        }
        let pipe = crate::sys::pipe::pipe(PIPE_SIZE).ok()?;
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
