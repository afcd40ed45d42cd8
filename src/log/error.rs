//! The error log: levelled runtime events (start, stop, the cause of a 403 or 500,
//! accept errors, descriptor exhaustion, dropped log lines, statistics) to stderr or a
//! file (`--error-log PATH`, reopened on SIGUSR1), through the shared queue
//! ([`super::queue`]): a ring or a pool worker never waits on it.
//!
//! Under journald (stderr is the stream `JOURNAL_STREAM` names) each line starts with
//! its syslog priority, `<3>` for an error ... `<7>` for debug, which journald strips
//! and records as the entry's priority (sd-daemon(3)). Lines a client can cause at will
//! go through one process-wide [`RateLimit`] (10 a second, 20 at once).

use super::queue::{Log, Output};
use super::rate::RateLimit;
use super::Level;
use std::fmt::{self, Write as _};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Lines the queue holds: a burst of events is small, and a flood is rate-limited.
const QUEUE_LINES: usize = 4096;

static LOG: Log = Log::new(
    "error log",
    "ringserve-errlog",
    QUEUE_LINES,
    Output::Stderr,
    Some(tick),
);

/// Whether lines carry the `<N>` prefix: decided once, by [`set_path`] or the first line.
static JOURNALD: OnceLock<bool> = OnceLock::new();

/// The rate limit, and the most severe level it suppressed (reported at that level).
static LIMIT: Mutex<RateLimit> = Mutex::new(RateLimit::new(10, 20));
static LIMITED_LEVEL: AtomicU8 = AtomicU8::new(Level::Debug as u8);

/// Writes the log to `path` (`-`: stderr, the default) from the next line on; a file
/// never carries journald's prefix. For `main`, before the server starts.
pub fn set_path(path: &Path) -> io::Result<()> {
    match path.to_str() {
        Some("-") => LOG.set_output(Output::Stderr),
        _ => LOG.set_output(Output::file(path)?),
    }
    let _ = JOURNALD.set(LOG.is_stderr() && stderr_is_journal());
    Ok(())
}

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`, `DEVICE:INODE` in decimal)
/// names the file whose device and inode are `stderr`: how a process learns that
/// systemd connected its stderr to the journal and not, say, to a pipe it inherited
/// from something run under systemd.
pub fn is_journal_stream(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(v), Some((dev, ino))) = (journal_stream, stderr) else {
        return false;
    };
    let Some((d, i)) = v.trim().split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// stderr's device and inode (through a duplicate of the descriptor, so no raw call).
fn stderr_id() -> Option<(u64, u64)> {
    let fd = io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

fn stderr_is_journal() -> bool {
    let env = std::env::var("JOURNAL_STREAM").ok();
    is_journal_stream(env.as_deref(), stderr_id())
}

fn journald() -> bool {
    *JOURNALD.get_or_init(|| LOG.is_stderr() && stderr_is_journal())
}

/// Formats one line at `level`, whatever the configured level (the macros check it;
/// the startup line calls this directly, so it shows at every level), and queues it.
/// Never blocks: a full queue drops the line and counts it.
pub fn emit(level: Level, args: fmt::Arguments<'_>) {
    let mut line = String::with_capacity(128);
    if journald() {
        let _ = write!(line, "<{}>", level.priority());
    }
    let _ = line.write_fmt(args);
    LOG.write(line);
}

/// [`emit`] through the rate limit: a line let through is preceded by the count of
/// those suppressed before it, if any.
pub fn emit_limited(level: Level, args: fmt::Arguments<'_>) {
    let verdict = LIMIT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .admit(Instant::now());
    match verdict {
        Some(0) => emit(level, args),
        Some(n) => {
            report_suppressed(n);
            emit(level, args);
        }
        None => {
            LIMITED_LEVEL.fetch_min(level as u8, Ordering::Relaxed);
        }
    }
}

fn report_suppressed(n: u64) {
    let p = LIMITED_LEVEL.swap(Level::Debug as u8, Ordering::Relaxed);
    let level = Level::from_priority(p);
    emit(
        level,
        format_args!("ringserve: {n} similar messages suppressed"),
    );
}

/// The writer's idle tick: a flood that has ended has its count reported once the
/// bucket has refilled, not held until the next line.
fn tick() {
    let refilled = LIMIT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .refilled(Instant::now());
    if let Some(n) = refilled {
        report_suppressed(n);
    }
}

/// An I/O error as nginx prints one: `13: Permission denied` (without std's
/// `(os error 13)`), or std's text when it is no OS error.
pub fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(n) => {
            let suffix = format!(" (os error {n})");
            format!("{n}: {}", text.strip_suffix(&suffix).unwrap_or(&text))
        }
        None => text,
    }
}

/// Waits until every queued line is written, or `limit` has passed; true if caught up.
/// A count of suppressed lines still held is queued first.
pub fn flush(limit: Duration) -> bool {
    tick();
    LOG.flush(limit)
}

/// Opens the log's file again (after logrotate moved it); stderr stays stderr.
pub fn reopen() {
    LOG.reopen();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journald_is_the_stream_it_names_and_no_other() {
        let me = Some((64769, 1234567));
        assert!(is_journal_stream(Some("64769:1234567"), me));
        assert!(is_journal_stream(Some("64769:1234567\n"), me));
        assert!(
            !is_journal_stream(Some("64769:1234568"), me),
            "another stream"
        );
        assert!(!is_journal_stream(Some("1:1234567"), me), "another device");
        assert!(!is_journal_stream(None, me), "not under systemd");
        assert!(
            !is_journal_stream(Some("64769:1234567"), None),
            "stderr closed"
        );
        for bad in [
            "",
            ":",
            "64769",
            "64769:",
            "x:1234567",
            "64769:1234567:1",
            "-1:5",
        ] {
            assert!(!is_journal_stream(Some(bad), me), "{bad:?}");
        }
    }

    #[test]
    fn errors_read_like_nginxs() {
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(describe(&e), "13: Permission denied");
        let e = io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(describe(&e), "5: Input/output error");
        let e = io::Error::other("no such thing");
        assert_eq!(describe(&e), "no such thing");
    }
}
