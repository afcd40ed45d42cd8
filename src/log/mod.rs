//! The server's two logs, neither of which a connection's thread ever waits on: the
//! access log ([`access`], one line per response, stdout or a file) and the error log
//! ([`error`], levelled runtime events, stderr or a file). Both are a [`queue::Log`]: a
//! bounded queue in front of one detached writer thread, `try_send` or drop and count.
//!
//! [`Level`] filters the error log (`--log-level`); the macros below format a line only
//! when its level is enabled. `say!` stays for what is said before a server runs (usage
//! and configuration errors) and for the client commands: those must reach the terminal
//! before the process exits, and nothing else is running that could be blocked.

pub mod access;
pub mod episode;
pub mod error;
pub(crate) mod queue;
pub mod rate;

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// An error-log line's severity, numbered as syslog numbers its priorities (what a
/// journald stream's `<N>` prefix carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Something failed: a request's file (403, 500), an accept, a thread.
    Error = 3,
    /// Something degraded: descriptors ran out, log lines were dropped.
    Warn = 4,
    /// What an operator should see once: start, stop.
    Notice = 5,
    /// Routine: statistics, the write path, configuration notes.
    Info = 6,
    Debug = 7,
}

impl Level {
    /// Every level, most severe first.
    pub const ALL: [Level; 5] = [
        Level::Error,
        Level::Warn,
        Level::Notice,
        Level::Info,
        Level::Debug,
    ];

    /// The syslog priority (err=3 ... debug=7).
    pub fn priority(self) -> u8 {
        self as u8
    }

    /// Whether a line at `line` is written when this is the configured level.
    pub fn admits(self, line: Level) -> bool {
        line <= self
    }

    /// The level of a syslog priority; any other number is debug.
    pub fn from_priority(p: u8) -> Level {
        Level::ALL
            .into_iter()
            .find(|l| l.priority() == p)
            .unwrap_or(Level::Debug)
    }
}

/// The configured level's priority: one relaxed load per check.
static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the error log's level (`--log-level`); `Info` until set.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The error log's level.
pub fn level() -> Level {
    Level::from_priority(LEVEL.load(Ordering::Relaxed))
}

/// Whether a line at `line` would be written: what the macros check before formatting.
#[inline]
pub fn enabled(line: Level) -> bool {
    level().admits(line)
}

/// Reopens both logs' files, if they write to files (SIGUSR1, after logrotate moved
/// them). A file that cannot be opened keeps the old one and says so in the error log.
pub fn reopen() {
    access::reopen();
    error::reopen();
}

/// Waits, at most `limit` for each, until both logs have written what they hold: for
/// the end of a run, so the last responses and the last message reach their readers
/// and a stalled reader costs the exit a bounded time. The access log goes first: its
/// writer may report dropped lines through the error log. True if both caught up.
pub fn flush(limit: Duration) -> bool {
    let access = access::flush(limit);
    error::flush(limit) && access
}

/// Writes a line to the error log at `level` if that level is enabled; never blocks.
/// The text is formatted only when it will be written; like `say!`, it carries its own
/// `ringserve: ` prefix (a journald stream's `<N>` goes before it).
#[macro_export]
macro_rules! log_at {
    // The one expansion: check the level, then format into `error::$emit`.
    (@via $emit:ident, $level:expr, $($arg:tt)*) => {{
        let level: $crate::log::Level = $level;
        if $crate::log::enabled(level) {
            $crate::log::error::$emit(level, format_args!($($arg)*));
        }
    }};
    ($level:expr, $($arg:tt)*) => { $crate::log_at!(@via emit, $level, $($arg)*) };
}

/// [`log_at!`] through the process-wide rate limit ([`rate::RateLimit`]): for lines a
/// client can cause at will (the cause of a 403, an accept error), so a flood of them
/// stays a bounded trickle plus a count of what was suppressed.
#[macro_export]
macro_rules! log_limited {
    ($level:expr, $($arg:tt)*) => { $crate::log_at!(@via emit_limited, $level, $($arg)*) };
}

/// [`log_at!`] at [`Level::Error`].
#[macro_export]
macro_rules! log_error {
    ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($arg)*) };
}

/// [`log_at!`] at [`Level::Warn`].
#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warn, $($arg)*) };
}

/// [`log_at!`] at [`Level::Notice`].
#[macro_export]
macro_rules! log_notice {
    ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Notice, $($arg)*) };
}

/// [`log_at!`] at [`Level::Info`].
#[macro_export]
macro_rules! log_info {
    ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Info, $($arg)*) };
}

#[cfg(test)]
mod tests {
    use super::Level;

    #[test]
    fn a_level_admits_itself_and_everything_more_severe() {
        for (i, set) in Level::ALL.iter().enumerate() {
            for (j, line) in Level::ALL.iter().enumerate() {
                assert_eq!(set.admits(*line), j <= i, "{set:?} admits {line:?}?");
            }
        }
        assert!(!Level::Error.admits(Level::Warn));
        assert!(Level::Info.admits(Level::Notice));
        assert!(!Level::Info.admits(Level::Debug));
    }

    #[test]
    fn priorities_are_syslogs() {
        let p: Vec<u8> = Level::ALL.iter().map(|l| l.priority()).collect();
        assert_eq!(p, [3, 4, 5, 6, 7]);
        for l in 3..=7 {
            assert_eq!(Level::from_priority(l).priority(), l);
        }
    }
}
