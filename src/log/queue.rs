//! The one mechanism behind both logs: a bounded queue in front of one writer thread.
//!
//! Rings and pool workers must never block on a log. A reader that stops reading (`|
//! less`, journald under load, Docker's blocking log driver) fills the pipe, and a
//! thread in `write(2)` there would stop every connection it owns. So a line is handed
//! to a queue with a non-blocking `try_send`, and one writer thread per log, the only
//! thread that may block on its output, writes what the queue holds in batches.
//!
//! When the queue is full the line is dropped and counted here, so that when the writer
//! catches up it says once, through the error log, how many lines it lost (the error
//! log's own writer says it into its own queue, which it has just emptied). Shutdown
//! never waits on a log: [`Log::flush`] waits a bounded time for the queue to empty, and
//! the writer is detached, so a process whose reader has stalled still exits.
//!
//! An output that is a file can be reopened ([`Log::reopen`], on SIGUSR1): the new
//! file replaces the old one between two batches; one that cannot be opened leaves the
//! old one in place and says so. The writer alone holds the output it writes to, and
//! takes a new one from a slot that no one holds across I/O, so a writer stalled in
//! `write(2)` stalls nobody else: not a reopen, not a flush, not a connection.

use crate::log::Level;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Most bytes the writer gathers into one `write(2)`.
const BATCH_BYTES: usize = 64 * 1024;
/// How often an idle writer runs its log's `tick`.
const TICK: Duration = Duration::from_secs(1);

/// Where a log's lines go.
#[derive(Debug)]
pub enum Output {
    Stdout,
    Stderr,
    /// A file opened for appending, and its path, to reopen.
    File(PathBuf, File),
}

impl Output {
    /// Opens `path` as a log file: appending (lines from several writers, or a
    /// logrotate `copytruncate`, stay whole), created if missing with mode 0640,
    /// close-on-exec (std opens every file so).
    pub fn file(path: &Path) -> io::Result<Output> {
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)?;
        Ok(Output::File(path.to_path_buf(), f))
    }

    /// Writes straight to the descriptor, never through std's `Stdout`/`Stderr`: those
    /// hold a process-wide lock for the whole write, which `say!` and the panic hook
    /// also take, so a reader that stalls this (blocking) write would stall a ring or
    /// worker thread whose handler panicked. Only this writer thread may block here.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        use std::os::fd::AsFd;
        match self {
            Output::Stdout => crate::sys::io::write_all(io::stdout().as_fd(), bytes),
            Output::Stderr => crate::sys::io::write_all(io::stderr().as_fd(), bytes),
            Output::File(_, f) => f.write_all(bytes),
        }
    }
}

/// One log: its queue, its writer, its output and its counters. Lives in a `static`;
/// the writer starts with the first line.
pub(crate) struct Log {
    /// What the log calls itself in its messages ("access log").
    what: &'static str,
    /// The writer thread's name.
    thread: &'static str,
    /// The queue's size in lines, read when the first line starts the writer.
    capacity: AtomicUsize,
    /// Called by the writer when it has been idle for [`TICK`].
    tick: Option<fn()>,
    /// The output for the writer to switch to before its next batch.
    next: Mutex<Option<Output>>,
    /// The output's path, when it is a file: what a reopen opens again.
    path: Mutex<Option<PathBuf>>,
    stderr: AtomicBool,
    /// The queue; `None` if the writer could not be started.
    tx: OnceLock<Option<SyncSender<String>>>,
    /// Lines dropped since the writer last reported it.
    dropped: AtomicU64,
    /// Lines queued and lines written (or failed to write): equal when caught up.
    queued: AtomicU64,
    written: AtomicU64,
}

impl Log {
    pub(crate) const fn new(
        what: &'static str,
        thread: &'static str,
        capacity: usize,
        out: Output,
        tick: Option<fn()>,
    ) -> Log {
        Log {
            what,
            thread,
            capacity: AtomicUsize::new(capacity),
            tick,
            stderr: AtomicBool::new(matches!(out, Output::Stderr)),
            next: Mutex::new(Some(out)),
            path: Mutex::new(None),
            tx: OnceLock::new(),
            dropped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Sets how many lines the queue holds (at least 1). Takes effect if called before
    /// the first line starts the writer; later calls change nothing.
    pub(crate) fn set_capacity(&self, lines: usize) {
        self.capacity.store(lines.max(1), Ordering::Relaxed);
    }

    /// Where lines go from the next batch on.
    pub(crate) fn set_output(&self, out: Output) {
        *lock(&self.path) = match &out {
            Output::File(path, _) => Some(path.clone()),
            Output::Stdout | Output::Stderr => None,
        };
        self.stderr
            .store(matches!(out, Output::Stderr), Ordering::Relaxed);
        *lock(&self.next) = Some(out);
    }

    /// Whether lines go to stderr.
    pub(crate) fn is_stderr(&self) -> bool {
        self.stderr.load(Ordering::Relaxed)
    }

    /// The queue, starting the writer on first use.
    fn sender(&'static self) -> Option<&'static SyncSender<String>> {
        self.tx
            .get_or_init(|| {
                let (tx, rx) = sync_channel(self.capacity.load(Ordering::Relaxed));
                let spawned = std::thread::Builder::new()
                    .name(self.thread.into())
                    .spawn(move || self.writer(rx));
                match spawned {
                    Ok(_) => Some(tx),
                    Err(e) => {
                        crate::say!("ringserve: cannot start the {} writer: {e}", self.what);
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Queues one line (without its newline). Never blocks: a full queue (or a writer
    /// that could not start) drops the line, counts it, and returns false.
    pub(crate) fn write(&'static self, line: String) -> bool {
        let Some(tx) = self.sender() else {
            return false;
        };
        self.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn caught_up(&self) -> bool {
        self.written.load(Ordering::Acquire) >= self.queued.load(Ordering::Acquire)
    }

    /// Waits until every queued line is written, or `limit` has passed; true if caught
    /// up. A log that never started is caught up.
    pub(crate) fn flush(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while !self.caught_up() {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Opens the output's file again by its path and writes there from the next batch
    /// on; the old file is closed once the writer lets go of it. Failure keeps the old
    /// file and says so in the error log. Stdout and stderr are left as they are.
    pub(crate) fn reopen(&self) {
        let Some(path) = lock(&self.path).clone() else {
            return;
        };
        match Output::file(&path) {
            Ok(new) => *lock(&self.next) = Some(new),
            Err(e) => crate::log_error!(
                "ringserve: reopening the {} {}: {e}; still writing to the old file",
                self.what,
                path.display()
            ),
        }
    }

    /// The writer thread: takes what the queue holds, writes it in one go, and says how
    /// many lines were dropped once it has caught up.
    fn writer(&'static self, rx: Receiver<String>) {
        let mut batch = Vec::with_capacity(BATCH_BYTES);
        let mut out = Output::Stderr;
        loop {
            let first = match rx.recv_timeout(TICK) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(tick) = self.tick {
                        tick();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut n = 1u64;
            batch.extend_from_slice(first.as_bytes());
            batch.push(b'\n');
            while batch.len() < BATCH_BYTES {
                let Ok(line) = rx.try_recv() else { break };
                batch.extend_from_slice(line.as_bytes());
                batch.push(b'\n');
                n += 1;
            }
            if let Some(new) = lock(&self.next).take() {
                out = new; // the old file, if any, is closed here
            }
            // A reader that went away (EPIPE) loses the lines; nothing else can be done.
            let _ = out.write_all(&batch);
            batch.clear();
            self.written.fetch_add(n, Ordering::Release);
            if self.caught_up() {
                let lost = self.dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    crate::log_at!(
                        Level::Warn,
                        "ringserve: {}: {lost} lines dropped: its reader was not keeping up",
                        self.what
                    );
                }
            }
        }
    }
}

/// A lock no one holds across I/O, poison-tolerant: a panic elsewhere must not end
/// the logging.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringserve-queue-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn lines_reach_the_file_and_a_reopen_follows_the_path() {
        static LOG: Log = Log::new("test log", "ringserve-test-log", 16, Output::Stderr, None);
        let d = temp("reopen");
        let path = d.join("log");
        LOG.set_output(Output::file(&path).unwrap());
        assert!(LOG.write("one".into()));
        assert!(LOG.flush(Duration::from_secs(5)));
        std::fs::rename(&path, d.join("log.1")).unwrap();
        assert!(LOG.write("two".into()));
        assert!(LOG.flush(Duration::from_secs(5)));
        LOG.reopen();
        assert!(LOG.write("three".into()));
        assert!(LOG.flush(Duration::from_secs(5)));
        assert_eq!(
            std::fs::read_to_string(d.join("log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{mode:o}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_reopen_that_fails_keeps_the_old_file() {
        static LOG: Log = Log::new("test log", "ringserve-test-log", 16, Output::Stderr, None);
        let d = temp("keep");
        let path = d.join("sub").join("log");
        std::fs::create_dir(d.join("sub")).unwrap();
        LOG.set_output(Output::file(&path).unwrap());
        std::fs::rename(d.join("sub"), d.join("gone")).unwrap();
        LOG.reopen(); // sub/ is gone: the open fails
        assert!(LOG.write("still".into()));
        assert!(LOG.flush(Duration::from_secs(5)));
        assert_eq!(
            std::fs::read_to_string(d.join("gone/log")).unwrap(),
            "still\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        static LOG: Log = Log::new("test log", "ringserve-test-log", 1, Output::Stderr, None);
        let d = temp("full");
        // A stalled reader, as the writer sees it: it cannot get on with its batch.
        LOG.set_output(Output::file(&d.join("log")).unwrap());
        let held = lock(&LOG.next);
        // One line first, and time for the writer to take it and stall on the lock:
        // were the hundred written at once, a writer not yet stalled could drain a
        // dozen of them into its batch (seen on a loaded machine).
        let first = LOG.write("first".into());
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let ok = usize::from(first) + (1..100).filter(|i| LOG.write(format!("{i}"))).count();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(
            ok <= 3,
            "{ok} lines queued in a queue of 1 with the writer stalled"
        );
        assert!(LOG.dropped.load(Ordering::Relaxed) >= 97);
        assert!(!LOG.flush(Duration::from_millis(20)));
        drop(held);
        assert!(LOG.flush(Duration::from_secs(5)));
        let _ = std::fs::remove_dir_all(&d);
    }
}
