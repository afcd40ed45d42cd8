//! Counters for profiling runs and tests. Relaxed atomics: each is a monotonic count or
//! a gauge read for reporting, never used to synchronise anything.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters shared by a backend's threads.
        #[derive(Debug, Default)]
        pub struct Stats { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A point-in-time copy of [`Stats`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Snapshot { $($(#[$doc])* pub $name: u64,)* }

        impl Stats {
            /// Copies every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl fmt::Display for Snapshot {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut sep = "";
                $( write!(f, "{sep}{}={}", stringify!($name), self.$name)?; sep = " "; )*
                Ok(())
            }
        }
    };
}

counters! {
    /// Connections accepted.
    accepts,
    /// Connections refused at the connection limit.
    refused_full,
    /// Accepts that hit EMFILE/ENFILE.
    accept_emfile,
    /// Connections closed.
    closes,
    /// Responses handed to the kernel (one per `Step::Send`).
    responses,
    /// Connections open now (gauge).
    open_conns,
    /// Worker threads alive now (gauge).
    workers,
    /// Workers handling a connection now (gauge).
    busy_workers,
    /// Worker threads ever started.
    workers_spawned,
    /// epoll_wait returns that carried an event.
    epoll_wakeups,
    /// Events or completions whose key was stale, dropped.
    stale_dropped,
    /// Bytes sent from memory.
    bytes_copy,
    /// Bytes sent by sendfile (epoll).
    bytes_sendfile,
    /// Bytes spliced from a pipe to a socket (io_uring).
    bytes_splice,
    /// io_uring_enter calls (each submits a batch and reaps completions).
    uring_enters,
    /// Submission queue entries queued.
    sqes,
    /// Completions reaped.
    cqes,
    /// Receives that found every provided buffer in use and waited.
    recv_enobufs,
    /// Sends abandoned after the send timeout.
    send_timeouts,
    /// Header or keep-alive waits that timed out.
    recv_timeouts,
    /// Connection handlers that panicked (the connection was closed, the server lived).
    panics,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    /// Subtracts `n` from a gauge.
    pub fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Relaxed);
    }
}
