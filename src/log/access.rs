//! The access log: one line per response, to stdout (`--access-log`) or a file
//! (`--access-log PATH`, reopened on SIGUSR1), through the shared queue ([`super::queue`]).
//!
//! A dropped line is counted in the server's stats too (`log_dropped`, by the thread
//! that dropped it). stdout is one per process, so the writer is too: every server in
//! the process shares it, started by the first line.

use super::queue::{Log, Output};
use crate::stats::Stats;
use std::io;
use std::path::Path;
use std::time::Duration;

/// Lines the queue holds before new ones are dropped, by default: at ~150 bytes a
/// line, a few MB, several seconds of a busy server's log (`--access-log-queue`).
pub const QUEUE_LINES: usize = 16 * 1024;

static LOG: Log = Log::new(
    "access log",
    "ringserve-log",
    QUEUE_LINES,
    Output::Stdout,
    None,
);

/// Sets how many lines the queue holds (at least 1). Takes effect if called before
/// the first line is written, which starts the writer; later calls change nothing.
pub fn set_queue_lines(lines: usize) {
    LOG.set_capacity(lines);
}

/// Writes the log to `path` (`-`: stdout, the default) instead, from the next line on.
pub fn set_path(path: &Path) -> io::Result<()> {
    LOG.set_output(match path.to_str() {
        Some("-") => Output::Stdout,
        _ => Output::file(path)?,
    });
    Ok(())
}

/// Queues one line (without its newline). Never blocks: a full queue drops the line
/// and counts it in the calling thread's `log_dropped`.
pub(crate) fn write(line: String) {
    if !LOG.write(line) {
        Stats::add_here(|s| &s.log_dropped, 1);
    }
}

/// Waits until every queued line is written, or `limit` has passed; true if caught up.
/// For the end of a run: lines of the last responses reach a reader that keeps
/// reading, and a stalled reader costs at most `limit`.
pub fn flush(limit: Duration) -> bool {
    LOG.flush(limit)
}

/// Opens the log's file again (after logrotate moved it); stdout stays stdout.
pub fn reopen() {
    LOG.reopen();
}
