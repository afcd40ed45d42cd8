//! The access log's one writer: a bounded queue in front of stdout.
//!
//! Rings and pool workers must never block on the log. A reader that stops reading
//! (`| less`, journald under load, Docker's blocking log driver) fills the pipe, and a
//! thread in `write(2)` there would stop every connection it owns. So a line is handed
//! to a queue with a non-blocking `try_send`, and one writer thread, the only thread
//! that may block on stdout, writes what the queue holds in batches.
//!
//! When the queue is full the line is dropped and counted: in the server's stats
//! (`log_dropped`, by the thread that dropped it) and here, so that when the writer
//! catches up it says once, on stderr, how many lines it lost. Shutdown never waits on
//! the log: [`flush`] waits a bounded time for the queue to empty, and the writer is
//! detached, so a process whose reader has stalled still exits.
//!
//! stdout is one per process, so the writer is too: every server in the process shares
//! it, started by the first line.

use crate::stats::Stats;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lines the queue holds before new ones are dropped, by default: at ~150 bytes a
/// line, a few MB, several seconds of a busy server's log (`--access-log-queue`).
pub const QUEUE_LINES: usize = 16 * 1024;

/// The queue's size, read when the first line starts the writer.
static CAPACITY: AtomicUsize = AtomicUsize::new(QUEUE_LINES);

/// Sets how many lines the queue holds (at least 1). Takes effect if called before
/// the first line is written, which starts the writer; later calls change nothing.
pub fn set_queue_lines(lines: usize) {
    CAPACITY.store(lines.max(1), Ordering::Relaxed);
}

/// Most bytes the writer gathers into one `write(2)`.
const BATCH_BYTES: usize = 64 * 1024;

struct Log {
    tx: SyncSender<String>,
    /// Lines dropped since the writer last reported it.
    dropped: AtomicU64,
    /// Lines queued and lines written (or failed to write): equal when caught up.
    queued: AtomicU64,
    written: AtomicU64,
}

static LOG: OnceLock<Option<Log>> = OnceLock::new();

fn log() -> Option<&'static Log> {
    LOG.get_or_init(|| {
        let (tx, rx) = sync_channel(CAPACITY.load(Ordering::Relaxed));
        let spawned = std::thread::Builder::new()
            .name("ringserve-log".into())
            .spawn(move || writer(rx));
        match spawned {
            Ok(_) => Some(Log {
                tx,
                dropped: AtomicU64::new(0),
                queued: AtomicU64::new(0),
                written: AtomicU64::new(0),
            }),
            Err(e) => {
                crate::say!("ringserve: cannot start the access-log writer: {e}; no access log");
                None
            }
        }
    })
    .as_ref()
}

/// Queues one line (without its newline). Never blocks: a full queue drops the line
/// and counts it in the calling thread's `log_dropped`.
pub(crate) fn write(line: String) {
    let Some(log) = log() else {
        Stats::add_here(|s| &s.log_dropped, 1);
        return;
    };
    log.queued.fetch_add(1, Ordering::Relaxed);
    match log.tx.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            log.queued.fetch_sub(1, Ordering::Relaxed);
            log.dropped.fetch_add(1, Ordering::Relaxed);
            Stats::add_here(|s| &s.log_dropped, 1);
        }
    }
}

/// Waits until every queued line is written, or `limit` has passed; true if caught up.
/// For the end of a run: lines of the last responses reach a reader that keeps
/// reading, and a stalled reader costs at most `limit`.
pub fn flush(limit: Duration) -> bool {
    let Some(log) = LOG.get().and_then(Option::as_ref) else {
        return true;
    };
    let until = Instant::now() + limit;
    loop {
        if log.written.load(Ordering::Acquire) >= log.queued.load(Ordering::Acquire) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The writer thread: takes what the queue holds, writes it in one go, and says how
/// many lines were dropped once it has caught up.
fn writer(rx: Receiver<String>) {
    let log = || LOG.get().and_then(Option::as_ref);
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut out = std::io::stdout();
    while let Ok(first) = rx.recv() {
        let mut n = 1u64;
        batch.extend_from_slice(first.as_bytes());
        batch.push(b'\n');
        while batch.len() < BATCH_BYTES {
            let Ok(line) = rx.try_recv() else { break };
            batch.extend_from_slice(line.as_bytes());
            batch.push(b'\n');
            n += 1;
        }
        // A reader that went away (EPIPE) loses the lines; nothing else can be done.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        let Some(log) = log() else { continue };
        log.written.fetch_add(n, Ordering::Release);
        if log.written.load(Ordering::Acquire) >= log.queued.load(Ordering::Acquire) {
            let lost = log.dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                crate::say!(
                    "ringserve: access log: {lost} lines dropped: its reader was not keeping up"
                );
            }
        }
    }
}
