//! Running under systemd (or anything speaking its protocols): socket activation
//! (`sd_listen_fds(3)`) and readiness notification (`sd_notify(3)`).
//!
//! Hand-rolled rather than the `sd-notify` crate (0.5.0, small and maintained, and it
//! has `listen_fds_with_names` and `notify`), because for this server it falls short
//! where it matters: it needs Rust 1.82 (ringserve's MSRV is 1.80); its `notify`
//! connects to `NOTIFY_SOCKET` as a path, so an abstract `@name` (which
//! `sd_notify(3)` allows and containers and test harnesses use) fails; it re-reads
//! the environment on every call, so there is no value to hold and no way to aim it
//! at a socket a test binds; its descriptors are bare `RawFd`s (adopting them takes
//! `unsafe` here anyway), systemd's "unknown" comes through as a name, nothing checks
//! that a descriptor is a listening socket, and its unset-the-environment forms are
//! `unsafe fn`s. What we need is about a hundred lines: the notification side is
//! plain std (`UnixDatagram`, `SocketAddrExt::from_abstract_name`, no `unsafe`), and
//! the few descriptor calls are in `sys::unix`.

use crate::sys::unix;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

const LISTEN_PID: &str = "LISTEN_PID";
const LISTEN_FDS: &str = "LISTEN_FDS";
const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";

/// One socket the service manager passed, with its `FileDescriptorName=` (`None`
/// where none was set: systemd's "unknown"). The descriptor is as the manager made
/// it, close-on-exec now but otherwise untouched: blocking unless the socket unit
/// says `NonBlocking=yes`, with the manager's socket options.
#[derive(Debug)]
pub struct Activated {
    pub fd: OwnedFd,
    pub name: Option<String>,
}

fn env(name: &str) -> io::Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(invalid(format!("{name} is not UTF-8"))),
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The sockets passed to this process by socket activation, in order (fd 3, 4, ...),
/// each checked to be a listening socket (an error names the descriptor that is
/// not) and made close-on-exec. Empty when nothing was passed, or when `LISTEN_PID`
/// names another process (the variables were inherited, not meant for us).
///
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` are removed from the environment
/// whatever the outcome, so a program we run does not take the sockets for its own
/// and a second call finds none. Removing environment variables races with any
/// other thread reading the environment (getenv in libc included), so call this
/// once, at start, before any thread is spawned.
pub fn listen_fds() -> io::Result<Vec<Activated>> {
    let vars = (env(LISTEN_PID), env(LISTEN_FDS), env(LISTEN_FDNAMES));
    for name in [LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES] {
        std::env::remove_var(name);
    }
    let planned = parse_listen_env(
        std::process::id(),
        vars.0?.as_deref(),
        vars.1?.as_deref(),
        vars.2?.as_deref(),
    )?;
    let mut out = Vec::with_capacity(planned.len());
    for (raw, name) in planned {
        // SAFETY: LISTEN_PID names this process, so the manager passed it fds 3 to
        // 3+LISTEN_FDS-1 and they are ours (sd_listen_fds(3)); each is adopted once,
        // since the variables are gone and no later call sees them.
        let fd = unsafe { unix::adopt_inherited(raw) }.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("socket activation: fd {raw} ({}): {e}", shown(&name)),
            )
        })?;
        ensure_listening(fd.as_fd(), name.as_deref())?;
        out.push(Activated { fd, name });
    }
    Ok(out)
}

fn shown(name: &Option<String>) -> &str {
    name.as_deref().unwrap_or("unnamed")
}

/// Checks that `fd` (named `name`, if it has one) is a listening socket, with an
/// error naming it (its number and name) if not.
pub fn ensure_listening(fd: BorrowedFd<'_>, name: Option<&str>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    let name = name.unwrap_or("unnamed");
    match unix::accepts_connections(fd) {
        Ok(true) => Ok(()),
        Ok(false) => Err(invalid(format!(
            "socket activation: fd {raw} ({name}) is a socket but not listening (a socket unit needs ListenStream= and Accept=no)"
        ))),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => Err(invalid(format!(
            "socket activation: fd {raw} ({name}) is not a socket"
        ))),
        Err(e) => Err(io::Error::new(e.kind(), format!("socket activation: fd {raw} ({name}): {e}"))),
    }
}

/// What `listen_fds` reads from the three variables, as given (`None`: unset), for a
/// process whose pid is `pid`: the descriptor numbers and names it would adopt.
/// The rules of sd_listen_fds(3): no `LISTEN_PID`, or one naming another process,
/// or no `LISTEN_FDS`, is nothing passed; a value that is not a number is an error;
/// `LISTEN_FDNAMES` is colon-separated, one name per descriptor (a count that
/// differs is an error), and "unknown" (systemd's name for unnamed) or an empty
/// name is `None`.
pub fn parse_listen_env(
    pid: u32,
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
) -> io::Result<Vec<(RawFd, Option<String>)>> {
    let Some(listen_pid) = listen_pid else {
        return Ok(Vec::new());
    };
    let for_pid: u32 = listen_pid
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_PID={listen_pid:?} is not a process id")))?;
    if for_pid != pid {
        return Ok(Vec::new());
    }
    let Some(listen_fds) = listen_fds else {
        return Ok(Vec::new());
    };
    let n: RawFd = listen_fds
        .trim()
        .parse()
        .ok()
        .filter(|n: &RawFd| *n >= 0 && n.checked_add(LISTEN_FDS_START).is_some())
        .ok_or_else(|| {
            invalid(format!(
                "LISTEN_FDS={listen_fds:?} is not a count of descriptors"
            ))
        })?;
    let names: Vec<Option<String>> = match listen_fdnames {
        None => vec![None; n as usize],
        Some(s) => {
            let names: Vec<Option<String>> = s
                .split(':')
                .map(|n| (!n.is_empty() && n != "unknown").then(|| n.to_string()))
                .collect();
            if names.len() != n as usize {
                return Err(invalid(format!(
                    "LISTEN_FDNAMES={s:?} has {} names for LISTEN_FDS={n}",
                    names.len()
                )));
            }
            names
        }
    };
    Ok((LISTEN_FDS_START..LISTEN_FDS_START + n)
        .zip(names)
        .collect())
}

/// The protocol a descriptor's name asks for: `http`, `xfer`, or `tcp` (also spelled
/// `echo`), alone or followed by a separator (any character but a letter or digit)
/// and anything: `xfer-uploads`, `http.public`. Letters in any case. `None` for any
/// other name (`httpd`, `web`): the caller's default protocol then.
pub fn scheme_of(name: &str) -> Option<&str> {
    for (prefix, scheme) in [
        ("http", "http"),
        ("xfer", "xfer"),
        ("tcp", "tcp"),
        ("echo", "tcp"),
    ] {
        let Some(head) = name.get(..prefix.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(prefix) {
            continue;
        }
        match name[prefix.len()..].chars().next() {
            None => return Some(scheme),
            Some(c) if !c.is_ascii_alphanumeric() => return Some(scheme),
            Some(_) => {}
        }
    }
    None
}

/// The service manager's notification socket (`NOTIFY_SOCKET`): readiness, reload,
/// stop and status, one datagram each (`sd_notify(3)`).
#[derive(Debug)]
pub struct Notify {
    sock: UnixDatagram,
    addr: SocketAddr,
    target: String,
}

impl Notify {
    /// From `NOTIFY_SOCKET`. `None` when it is unset or empty (not run by a manager
    /// that wants to hear), or names something this cannot send to (systemd's
    /// `vsock:` form, a relative path); [`Notify::new`] says why. The variable is
    /// left set: a process that re-executes itself needs it to tell the manager of
    /// its new main pid and readiness.
    pub fn from_env() -> Option<Notify> {
        let target = std::env::var("NOTIFY_SOCKET").ok()?;
        if target.is_empty() {
            return None;
        }
        Notify::new(&target).ok()
    }

    /// A notifier for `target`: an absolute path, or `@name` for the abstract
    /// namespace (the address is a NUL and the name, its length exactly that).
    pub fn new(target: &str) -> io::Result<Notify> {
        let addr = if let Some(name) = target.strip_prefix('@') {
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if target.starts_with('/') {
            SocketAddr::from_pathname(target)?
        } else {
            return Err(invalid(format!(
                "NOTIFY_SOCKET={target:?}: neither an absolute path nor @abstract"
            )));
        };
        Ok(Notify {
            sock: UnixDatagram::unbound()?,
            addr,
            target: target.to_string(),
        })
    }

    /// Where the datagrams go, as `NOTIFY_SOCKET` spelled it.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Sends `state` (newline-separated `KEY=value` lines) as one datagram.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let n = self.sock.send_to_addr(state.as_bytes(), &self.addr)?;
        if n != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "notification to {} cut at {n} of {} bytes",
                    self.target,
                    state.len()
                ),
            ));
        }
        Ok(())
    }

    /// `READY=1`: startup finished (or a reload did).
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// `STOPPING=1`: shutting down.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` now, as `Type=notify-reload` wants; the
    /// manager waits for the next `READY=1`.
    pub fn reloading(&self) -> io::Result<()> {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            unix::monotonic_usec()
        ))
    }

    /// `MAINPID=pid`: the service's main process is now `pid`.
    pub fn main_pid(&self, pid: u32) -> io::Result<()> {
        self.send(&format!("MAINPID={pid}"))
    }

    /// `STATUS=text`: one line for `systemctl status` (newlines become spaces).
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", text.replace('\n', " ")))
    }
}
