//! Live counters for profiling runs, tests and `--stats-interval` / SIGUSR1.
//!
//! **Counters are per thread.** Every server thread binds its own [`Stats`] block
//! ([`StatsHub::bind`]), aligned to its own cache lines, and only that thread writes it:
//! an increment is a plain load and store on a line no other core wants (no locked
//! instruction), never a shared counter bouncing between rings. Readers sum the blocks. A thread that exits
//! (an epoll worker the pool shrinks away) folds its counts into `retired`, so totals
//! never go backwards. Built with the `no-counters` feature, increments compile to
//! nothing (bench/ measures the difference).
//!
//! **Gauges are server-wide** ([`Gauges`]): open connections, worker threads, busy
//! workers. They go up on one thread and down on another, and the io_uring backend's
//! connection limit reads `open_conns`, so they are plain shared atomics and always
//! kept.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

macro_rules! stats {
    (counters { $($(#[doc = $doc:literal])* $name:ident),* $(,)? }
     gauges { $($(#[doc = $gdoc:literal])* $gname:ident),* $(,)? }) => {
        /// One thread's counters.
        #[derive(Debug, Default)]
        #[repr(C, align(128))]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            /// Service time: from the turn in which a request's last bytes arrived to
            /// its response handed to the kernel (docs/ARCHITECTURE.md, the counters).
            pub service: Histogram,
        }

        /// Server-wide gauges.
        #[derive(Debug, Default)]
        pub struct Gauges { $($(#[doc = $gdoc])* pub $gname: AtomicU64,)* }

        /// A point-in-time copy: counters summed over threads, and the gauges.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[doc = $doc])* pub $name: u64,)*
            $($(#[doc = $gdoc])* pub $gname: u64,)*
            /// Service times ([`Stats::service`]).
            pub service: HistogramSnapshot,
        }

        /// Every counter's name and description (its doc comment, lines joined), in
        /// declaration order: what `/metrics` says of each (`status.rs`).
        pub const COUNTERS: &[(&str, &str)] = &[$((stringify!($name), concat!($($doc),*)),)*];
        /// Every gauge's name and description.
        pub const GAUGES: &[(&str, &str)] = &[$((stringify!($gname), concat!($($gdoc),*)),)*];

        impl Stats {
            fn add_to(&self, s: &mut Snapshot) {
                $( s.$name = s.$name.wrapping_add(self.$name.load(Relaxed)); )*
                self.service.add_to(&mut s.service);
            }
            fn fold_into(&self, into: &Stats) {
                $( into.$name.fetch_add(self.$name.load(Relaxed), Relaxed); )*
                self.service.fold_into(&into.service);
            }
        }

        impl Gauges {
            fn add_to(&self, s: &mut Snapshot) {
                $( s.$gname = self.$gname.load(Relaxed); )*
            }
        }

        impl Snapshot {
            /// The counters' values, in the order of [`COUNTERS`].
            pub fn counter_values(&self) -> [u64; COUNTERS.len()] {
                [$(self.$name,)*]
            }

            /// The gauges' values, in the order of [`GAUGES`].
            pub fn gauge_values(&self) -> [u64; GAUGES.len()] {
                [$(self.$gname,)*]
            }

            /// The counters' growth since `earlier`; gauges keep their current value.
            pub fn since(&self, earlier: &Snapshot) -> Snapshot {
                Snapshot {
                    $( $name: self.$name.wrapping_sub(earlier.$name), )*
                    $( $gname: self.$gname, )*
                    service: self.service.since(&earlier.service),
                }
            }

            /// Only the counters that are not zero, as `name=value` pairs.
            pub fn counters(&self) -> impl fmt::Display + '_ {
                struct C<'a>(&'a Snapshot);
                impl fmt::Display for C<'_> {
                    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        let mut sep = "";
                        $(
                            if self.0.$name != 0 {
                                write!(f, "{sep}{}={}", stringify!($name), self.0.$name)?;
                                sep = " ";
                            }
                        )*
                        if sep.is_empty() {
                            f.write_str("idle")?;
                        }
                        Ok(())
                    }
                }
                C(self)
            }
        }

        impl fmt::Display for Snapshot {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut sep = "";
                $( write!(f, "{sep}{}={}", stringify!($name), self.$name)?; sep = " "; )*
                $( write!(f, "{sep}{}={}", stringify!($gname), self.$gname)?; )*
                Ok(())
            }
        }
    };
}

stats! {
    counters {
        // The first eight share the block's first cache line (it is repr(C); a test
        // holds them there): a small response touches that line and the service
        // histogram's, three lines in all where declaration order made it five.
        /// Connections accepted.
        accepts,
        /// Responses handed to the kernel (one per `Step::Send`).
        responses,
        /// Bytes sent from memory (headers, small bodies read into memory).
        bytes_copy,
        /// Bytes sent by sendfile (epoll; io_uring for large bodies the page cache
        /// holds, where cachestat(2) is had).
        bytes_sendfile,
        /// Small file bodies sent from the memory of an earlier whole read through the
        /// same open handle, without a READ (io_uring).
        bodies_kept,
        /// io_uring_enter calls (each submits a batch and reaps completions).
        uring_enters,
        /// Submission queue entries queued.
        sqes,
        /// Completions reaped.
        cqes,
        /// Connections refused at the connection limit.
        refused_full,
        /// Accepts that hit EMFILE/ENFILE.
        accept_emfile,
        /// io_uring accepts re-armed because their listener had a connection waiting
        /// for a whole tick: a wake-up another waiter took and dropped (ring/accept.rs).
        accept_rearms,
        /// Connections closed.
        closes,
        /// Worker threads ever started.
        workers_spawned,
        /// epoll_wait returns that carried an event.
        epoll_wakeups,
        /// Events or completions whose key was stale, dropped.
        stale_dropped,
        /// Bytes spliced from a pipe to a socket (io_uring).
        bytes_splice,
        /// Bytes of the connection spliced into a file (socket→pipe→file, both backends).
        bytes_recv_splice,
        /// Bytes of the connection copied into a file (received, then written): a
        /// receive's head, which the protocol already held, and everything where no
        /// pipe could be had.
        bytes_recv_copy,
        /// Receives that found every provided buffer in use and waited.
        recv_enobufs,
        /// Per-connection receive buffers allocated (io_uring without a provided-buffer
        /// ring; each lives while its receive is in flight).
        recv_buf_allocs,
        /// Multishot receive completions held because the protocol was still sending.
        recv_parked,
        /// Multishot receives cancelled because a connection held enough parked input.
        recv_paused,
        /// Sends abandoned after the send timeout.
        send_timeouts,
        /// Header or keep-alive waits that timed out.
        recv_timeouts,
        /// Connection handlers that panicked (the connection was closed, the server lived).
        panics,
        /// Access-log lines dropped because the log's reader was not keeping up (the
        /// queue in front of stdout was full).
        log_dropped,
        /// Responses cut short: the connection ended before every byte of the response
        /// was in the kernel (the access log shows the body bytes that were).
        responses_cut,
    }
    gauges {
        /// Connections open now.
        open_conns,
        /// Worker threads alive now.
        workers,
        /// Workers handling a connection now.
        busy_workers,
    }
}

/// Service-time buckets: bucket `i` counts times of less than 2^i µs (bucket 0: under
/// 1 µs), the last everything longer (2^25 µs is about 33 s).
pub const SERVICE_BUCKETS: usize = 27;

/// A log-bucketed histogram of durations, written by one thread (as every [`Stats`]
/// block is): recording one is a leading-zeros count and two plain stores.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Histogram {
    /// First, beside the low buckets a loop turn's responses land in.
    sum_ns: AtomicU64,
    buckets: [AtomicU64; SERVICE_BUCKETS],
}

/// A copy of a [`Histogram`] (or a sum of several).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per bucket, not cumulative: see [`SERVICE_BUCKETS`].
    pub buckets: [u64; SERVICE_BUCKETS],
    /// Every recorded duration summed, in nanoseconds.
    pub sum_ns: u64,
}

impl Histogram {
    /// Records `d` (the calling thread must be this block's writer).
    #[inline(always)]
    pub fn record(&self, d: std::time::Duration) {
        self.record_n(d, 1);
    }

    /// Records `n` times of `d` each (a pipelined burst answered in one send).
    #[inline(always)]
    pub fn record_n(&self, d: std::time::Duration, n: u64) {
        if cfg!(not(feature = "no-counters")) {
            // No u128 (`as_nanos`): seconds and nanoseconds, saturating.
            let ns = d
                .as_secs()
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::from(d.subsec_nanos()));
            let us = ns / 1000;
            let i = ((u64::BITS - us.leading_zeros()) as usize).min(SERVICE_BUCKETS - 1);
            Stats::add(&self.buckets[i], n);
            Stats::add(&self.sum_ns, ns.wrapping_mul(n));
        }
    }

    fn add_to(&self, s: &mut HistogramSnapshot) {
        for (b, into) in self.buckets.iter().zip(&mut s.buckets) {
            *into = into.wrapping_add(b.load(Relaxed));
        }
        s.sum_ns = s.sum_ns.wrapping_add(self.sum_ns.load(Relaxed));
    }

    fn fold_into(&self, into: &Histogram) {
        for (b, to) in self.buckets.iter().zip(&into.buckets) {
            to.fetch_add(b.load(Relaxed), Relaxed);
        }
        into.sum_ns.fetch_add(self.sum_ns.load(Relaxed), Relaxed);
    }
}

impl HistogramSnapshot {
    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    /// Bucket `i`'s upper bound (exclusive) in seconds; `None` for the last, which is
    /// unbounded.
    pub fn bound_secs(i: usize) -> Option<f64> {
        (i + 1 < SERVICE_BUCKETS).then(|| (1u64 << i) as f64 / 1e6)
    }

    fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let mut d = *self;
        for (b, e) in d.buckets.iter_mut().zip(&earlier.buckets) {
            *b = b.wrapping_sub(*e);
        }
        d.sum_ns = d.sum_ns.wrapping_sub(earlier.sum_ns);
        d
    }
}

impl Stats {
    /// Adds `n` to one of the calling thread's own counters. The block has one writer,
    /// so this is a plain load and store (no locked read-modify-write); readers on other
    /// threads see a value at most one increment old.
    #[inline(always)]
    pub fn add(c: &AtomicU64, n: u64) {
        if cfg!(not(feature = "no-counters")) {
            c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
        }
    }

    /// Adds `n` to the counter `which` picks in the calling thread's own block, for
    /// code that holds no block (a connection's drop, the access log). Every server
    /// thread is bound; an unbound thread's count goes nowhere.
    pub(crate) fn add_here(which: fn(&Stats) -> &AtomicU64, n: u64) {
        let _ = LOCAL.try_with(|l| {
            if let Ok(l) = l.try_borrow() {
                if let Some((_, s)) = &*l {
                    Stats::add(which(s), n);
                }
            }
        });
    }
}

impl Gauges {
    /// Raises a gauge.
    pub fn up(g: &AtomicU64) {
        g.fetch_add(1, Relaxed);
    }
    /// Lowers a gauge.
    pub fn down(g: &AtomicU64) {
        g.fetch_sub(1, Relaxed);
    }
}

/// A server's counters: every thread's block, what exited threads counted, and the
/// gauges.
#[derive(Debug, Default)]
pub struct StatsHub {
    threads: Mutex<Vec<(String, Arc<Stats>)>>,
    /// Counts of threads that have exited.
    retired: Stats,
    /// Counts from threads not bound to this server (a library user's thread calling
    /// in); nothing is lost.
    other: Stats,
    pub gauges: Gauges,
}

thread_local! {
    /// The block the current thread writes, and the hub it belongs to.
    static LOCAL: RefCell<Option<(usize, Arc<Stats>)>> = const { RefCell::new(None) };
}

/// Keeps a thread bound to its block; dropping it (at thread exit) folds the block's
/// counts into the hub's `retired` and unlists it.
#[must_use = "the thread is unbound when this drops"]
pub struct Bound {
    hub: Arc<StatsHub>,
    stats: Arc<Stats>,
}

impl Bound {
    /// The bound thread's block, for code that holds it rather than look it up.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        LOCAL.with(|l| *l.borrow_mut() = None);
        let mut ts = lock(&self.hub.threads);
        ts.retain(|(_, s)| !Arc::ptr_eq(s, &self.stats));
        self.stats.fold_into(&self.hub.retired);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StatsHub {
    fn id(&self) -> usize {
        self as *const StatsHub as usize
    }

    /// Gives the calling thread its own block, listed under `name`.
    pub fn bind(self: &Arc<Self>, name: impl Into<String>) -> Bound {
        let stats = Arc::new(Stats::default());
        lock(&self.threads).push((name.into(), stats.clone()));
        LOCAL.with(|l| *l.borrow_mut() = Some((self.id(), stats.clone())));
        Bound {
            hub: self.clone(),
            stats,
        }
    }

    /// Adds `n` to the counter `which` picks, in the calling thread's block.
    #[inline(always)]
    pub fn add(&self, which: fn(&Stats) -> &AtomicU64, n: u64) {
        if cfg!(feature = "no-counters") {
            return;
        }
        LOCAL.with(|l| match &*l.borrow() {
            Some((id, s)) if *id == self.id() => Stats::add(which(s), n),
            // Shared by every unbound thread: a real atomic add.
            _ => {
                which(&self.other).fetch_add(n, Relaxed);
            }
        });
    }

    /// Counters summed over every thread, living and exited, with the gauges.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for (_, t) in lock(&self.threads).iter() {
            t.add_to(&mut s);
        }
        self.retired.add_to(&mut s);
        self.other.add_to(&mut s);
        self.gauges.add_to(&mut s);
        s
    }

    /// Each living thread's counters by name, and what exited threads and threads
    /// never bound counted, read under one lock: a thread exiting meanwhile moves its
    /// counts from its row to the second part, never counted twice or lost. The rows
    /// and the second part sum to [`StatsHub::snapshot`]'s counters.
    pub fn rows(&self) -> (Vec<(String, Snapshot)>, Snapshot) {
        let threads = lock(&self.threads);
        let rows = threads
            .iter()
            .map(|(name, t)| {
                let mut s = Snapshot::default();
                t.add_to(&mut s);
                (name.clone(), s)
            })
            .collect();
        let mut gone = Snapshot::default();
        self.retired.add_to(&mut gone);
        self.other.add_to(&mut gone);
        (rows, gone)
    }

    /// Each living thread's counters, by name (gauges are server-wide and left 0).
    pub fn per_thread(&self) -> Vec<(String, Snapshot)> {
        self.rows().0
    }
}

/// Hands out thread names with a sequence number: `worker-1`, `worker-2`, ...
#[derive(Debug, Default)]
pub struct Seq(AtomicUsize);

impl Seq {
    pub fn next(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.0.fetch_add(1, Relaxed) + 1)
    }
}

/// The counters a small response touches share the block's first cache line (spread
/// over five lines they cost more than their instructions: docs/ARCHITECTURE.md).
#[test]
fn a_responses_counters_share_one_cache_line() {
    use std::mem::offset_of;
    let hot = [
        offset_of!(Stats, accepts),
        offset_of!(Stats, responses),
        offset_of!(Stats, bytes_copy),
        offset_of!(Stats, bytes_sendfile),
        offset_of!(Stats, bodies_kept),
        offset_of!(Stats, uring_enters),
        offset_of!(Stats, sqes),
        offset_of!(Stats, cqes),
    ];
    assert!(hot.iter().all(|&o| o < 64), "{hot:?}");
    let sum = offset_of!(Stats, service) + offset_of!(Histogram, sum_ns);
    let low = offset_of!(Stats, service) + offset_of!(Histogram, buckets);
    assert_eq!(
        sum / 64,
        low / 64,
        "the histogram's sum beside its first bucket"
    );
}

#[cfg(all(test, not(feature = "no-counters")))]
mod tests {
    use super::*;

    #[test]
    fn each_thread_counts_in_its_own_block_and_exits_keep_their_counts() {
        let hub = Arc::new(StatsHub::default());
        let h = hub.clone();
        std::thread::spawn(move || {
            let _b = h.bind("t-1");
            h.add(|s| &s.accepts, 2);
            assert_eq!(h.per_thread()[0].1.accepts, 2);
        })
        .join()
        .unwrap();
        assert!(hub.per_thread().is_empty(), "an exited thread is unlisted");
        let _b = hub.bind("main");
        hub.add(|s| &s.accepts, 1);
        let all = hub.snapshot();
        assert_eq!(all.accepts, 3, "the exited thread's counts are kept");
        let main = Snapshot {
            accepts: 1,
            ..Default::default()
        };
        assert_eq!(hub.per_thread()[0], ("main".into(), main));
    }

    #[test]
    fn counts_from_another_hubs_thread_are_not_mixed_in() {
        let (a, b) = (Arc::new(StatsHub::default()), Arc::new(StatsHub::default()));
        let _bound = a.bind("a");
        b.add(|s| &s.responses, 5);
        assert_eq!(a.snapshot().responses, 0);
        assert_eq!(b.snapshot().responses, 5, "kept in b's `other` block");
    }

    #[test]
    fn service_times_land_in_log2_microsecond_buckets() {
        let h = Histogram::default();
        for ns in [0, 999, 1_000, 3_500, 1_000_000, u64::MAX] {
            h.record(std::time::Duration::from_nanos(ns));
        }
        let mut s = HistogramSnapshot::default();
        h.add_to(&mut s);
        let mut want = [0u64; SERVICE_BUCKETS];
        want[0] = 2; // under 1 µs
        want[1] = 1; // 1 µs
        want[2] = 1; // 3 µs: under 4
        want[10] = 1; // 1000 µs: under 1024
        want[SERVICE_BUCKETS - 1] = 1; // everything longer
        assert_eq!(s.buckets, want);
        assert_eq!(s.count(), 6);
        assert_eq!(HistogramSnapshot::bound_secs(0), Some(1e-6));
        assert_eq!(HistogramSnapshot::bound_secs(10), Some(1024e-6));
        assert_eq!(HistogramSnapshot::bound_secs(SERVICE_BUCKETS - 1), None);
    }

    #[test]
    fn since_subtracts_counters_and_keeps_gauges() {
        let hub = Arc::new(StatsHub::default());
        hub.add(|s| &s.sqes, 10);
        let before = hub.snapshot();
        hub.add(|s| &s.sqes, 4);
        Gauges::up(&hub.gauges.open_conns);
        let d = hub.snapshot().since(&before);
        assert_eq!((d.sqes, d.open_conns), (4, 1));
        assert_eq!(d.counters().to_string(), "sqes=4");
    }
}
