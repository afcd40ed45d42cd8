//! Zero-downtime hand-off of listening sockets from a running server to its successor,
//! over a Unix SOCK_SEQPACKET control socket with SCM_RIGHTS (the seed's
//! `sendFd`/`recvFd`, for HAProxy's `-x` job).
//!
//! One session, successor (new) and predecessor (old):
//!
//! ```text
//! new → old   TAKEOVER ringserve-handoff 1          (old checks SO_PEERCRED: same uid)
//! old → new   LISTENERS n
//! old → new   FDS + "scheme\torigin" lines, with those descriptors   (≤ 250 a message)
//! old → new   END
//!             new binds what it was not given, starts serving on all of it
//! new → old   READY                 or   FAILED reason   (or the session just ends)
//!             old: every server stops accepting and drains (`Control::hand_off`)
//! old → new   DRAINING
//! ```
//!
//! The listening sockets are the same kernel objects in both processes, so a
//! connection in an accept queue at any moment is accepted by whichever process
//! accepts next: nothing queued is lost, and none is refused, because neither process
//! ever closes or shuts a listener the other uses. Until READY the old server has not
//! changed anything, so a successor that fails leaves it serving.

use crate::listener::Listener;
use crate::sys::seqpacket::{self, UnixAddr, MAX_FDS};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const HELLO: &str = "TAKEOVER ringserve-handoff 1";

/// A control socket: where a running server waits for a successor. A path is made
/// 0600 (the uid check is the real guard, since abstract names have no permissions)
/// and removed on drop only while it is still ours: a successor that bound the same
/// path has replaced it, and its socket must stay.
pub struct ControlSocket {
    fd: OwnedFd,
    /// The path, its device and inode, while it is ours to remove.
    path: std::sync::Mutex<Option<(PathBuf, u64, u64)>>,
}

impl ControlSocket {
    /// Binds `addr` (a path, or `@name` for the abstract namespace). A stale socket
    /// file (nobody accepting) is replaced; a live one is EADDRINUSE.
    pub fn bind(addr: &str) -> io::Result<ControlSocket> {
        Self::bind_inner(addr, false)
    }

    /// Binds `addr`, replacing whatever socket is there, live or not: a successor
    /// takes over its predecessor's control socket path at the end of a hand-off.
    pub fn bind_replacing(addr: &str) -> io::Result<ControlSocket> {
        Self::bind_inner(addr, true)
    }

    fn bind_inner(addr: &str, replace: bool) -> io::Result<ControlSocket> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let ua = UnixAddr::parse(addr);
        let UnixAddr::Path(p) = ua else {
            let fd = seqpacket::listen(&ua)?;
            return Ok(ControlSocket {
                fd,
                path: Default::default(),
            });
        };
        if let Ok(m) = std::fs::symlink_metadata(p) {
            if !m.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists and is not a socket", p.display()),
                ));
            }
            if !replace {
                match seqpacket::connect(&ua) {
                    Ok(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("{}: another server is listening on it", p.display()),
                        ))
                    }
                    // Only a refused connect says the file is stale.
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
                    Err(e) => {
                        return Err(io::Error::new(e.kind(), format!("{}: {e}", p.display())))
                    }
                }
            }
            // Gone meanwhile (its server removed it on the way out) is as good.
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let fd = seqpacket::listen(&ua)?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))?;
        let m = std::fs::metadata(p)?;
        Ok(ControlSocket {
            fd,
            path: std::sync::Mutex::new(Some((p.to_path_buf(), m.dev(), m.ino()))),
        })
    }

    /// The path, if this is a socket file.
    pub fn path(&self) -> Option<PathBuf> {
        let p = self.path.lock().unwrap_or_else(|e| e.into_inner());
        p.as_ref().map(|(p, _, _)| p.clone())
    }

    /// Removes the path now if it is still ours (the successor, once told, binds its
    /// own there: removing it later could remove the successor's). Idempotent.
    pub fn unlink(&self) {
        use std::os::unix::fs::MetadataExt;
        let mut p = self.path.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((path, dev, ino)) = p.take() {
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.dev() == dev && m.ino() == ino) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// The next connection, waiting up to `timeout` (`None`: no connection in time).
    pub fn accept(&self, timeout: Duration) -> io::Result<Option<OwnedFd>> {
        if !crate::sys::net::wait_readable(self.fd.as_fd(), timeout)? {
            return Ok(None);
        }
        seqpacket::accept(self.fd.as_fd()).map(Some)
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// One server's listeners, offered under its protocol's scheme.
pub struct Offer<'a> {
    pub scheme: &'a str,
    pub listeners: &'a [Listener],
}

/// An accepted hand-off: the successor is serving. The predecessor drains its servers,
/// then [`Session::release`]s it.
pub struct Session {
    conn: OwnedFd,
    /// The successor's process id.
    pub pid: i32,
}

impl Session {
    /// Tells the successor that every server here has stopped accepting.
    pub fn release(self) {
        let _ = seqpacket::send(self.conn.as_fd(), b"DRAINING", &[]);
    }
}

fn text(m: &[u8]) -> String {
    String::from_utf8_lossy(m).into_owned()
}

fn recv_text(conn: &OwnedFd, timeout: Duration) -> Result<Option<String>, String> {
    match seqpacket::recv(conn.as_fd(), timeout) {
        Ok(Some((m, fds))) if fds.is_empty() => Ok(Some(text(&m))),
        Ok(Some(_)) => Err("unexpected descriptors".into()),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The peer on `conn` is a process of our own user (or root, who may do anything: a
/// server that dropped privileges made its control socket as root, and SO_PEERCRED
/// names the credentials of that listen), or an error saying who it is.
fn same_user(conn: &OwnedFd) -> Result<i32, String> {
    let (pid, uid, _) =
        seqpacket::peer_cred(conn.as_fd()).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let me = crate::sys::user::effective_uid();
    if uid != me && uid != 0 {
        return Err(format!("refused pid {pid}: uid {uid} is not ours ({me})"));
    }
    Ok(pid)
}

/// The predecessor's side of one session on `conn`: checks that the peer is our own
/// user, calls `sharing` just before the first descriptor leaves (the listeners are
/// the successor's too from then on), sends every listener of `offers`, and waits up
/// to `ready_timeout` for the successor to say it serves. Any error leaves this
/// process serving.
pub fn offer(
    conn: OwnedFd,
    offers: &[Offer<'_>],
    ready_timeout: Duration,
    sharing: impl FnOnce(),
) -> Result<Session, String> {
    let refuse = |conn: &OwnedFd, why: String| {
        let _ = seqpacket::send(conn.as_fd(), format!("REFUSED {why}").as_bytes(), &[]);
        why
    };
    // The request is read before anything is decided: a socket closed with its
    // request unread would reach the peer as a reset, not as our answer.
    let hello = recv_text(&conn, Duration::from_secs(5));
    let pid = same_user(&conn).map_err(|e| refuse(&conn, e))?;
    match hello? {
        Some(h) if h == HELLO => {}
        other => {
            return Err(refuse(
                &conn,
                format!("pid {pid}: not a hand-off request ({other:?})"),
            ))
        }
    }
    let all: Vec<(&str, &Listener)> = offers
        .iter()
        .flat_map(|o| o.listeners.iter().map(move |l| (o.scheme, l)))
        .collect();
    let send = |m: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]| {
        seqpacket::send(conn.as_fd(), m, fds).map_err(|e| format!("sending to pid {pid}: {e}"))
    };
    send(format!("LISTENERS {}", all.len()).as_bytes(), &[])?;
    sharing();
    for batch in all.chunks(MAX_FDS) {
        let mut m = String::from("FDS");
        for (scheme, l) in batch {
            m.push('\n');
            m.push_str(scheme);
            m.push('\t');
            m.push_str(l.origin());
        }
        let fds: Vec<_> = batch.iter().map(|(_, l)| l.fd()).collect();
        send(m.as_bytes(), &fds)?;
    }
    send(b"END", &[])?;
    match recv_text(&conn, ready_timeout) {
        Ok(Some(r)) if r == "READY" => Ok(Session { conn, pid }),
        Ok(Some(r)) => Err(format!(
            "the new server (pid {pid}) did not start: {}",
            r.strip_prefix("FAILED ").unwrap_or(&r)
        )),
        Ok(None) => Err(format!(
            "the new server (pid {pid}) went away before it was ready"
        )),
        Err(e) => Err(format!("the new server (pid {pid}): {e}")),
    }
}

/// The successor's side, until it serves: the predecessor's listeners, each with its
/// scheme.
pub struct Taken {
    conn: OwnedFd,
    /// The predecessor's process id.
    pub from_pid: i32,
    listeners: Vec<(String, Listener)>,
    started: Instant,
}

/// Connects to the control socket at `addr` and receives the running server's
/// listeners (waiting up to `timeout` for each message).
pub fn take(addr: &str, timeout: Duration) -> Result<Taken, String> {
    let started = Instant::now();
    let conn = seqpacket::connect(&UnixAddr::parse(addr)).map_err(|e| format!("{addr}: {e}"))?;
    let from_pid = same_user(&conn)?;
    seqpacket::send(conn.as_fd(), HELLO.as_bytes(), &[]).map_err(|e| format!("{addr}: {e}"))?;
    let mut expected = None;
    let mut listeners = Vec::new();
    loop {
        let (m, fds) = match seqpacket::recv(conn.as_fd(), timeout) {
            Ok(Some(x)) => x,
            Ok(None) => return Err(format!("pid {from_pid} closed the hand-off")),
            Err(e) => return Err(format!("from pid {from_pid}: {e}")),
        };
        let m = text(&m);
        if let Some(why) = m.strip_prefix("REFUSED ") {
            return Err(format!("pid {from_pid} refused: {why}"));
        } else if let Some(n) = m.strip_prefix("LISTENERS ") {
            expected = n.parse::<usize>().ok();
        } else if let Some(lines) = m.strip_prefix("FDS\n") {
            let names: Vec<&str> = lines.split('\n').collect();
            if names.len() != fds.len() {
                return Err(format!(
                    "pid {from_pid}: {} names for {} descriptors",
                    names.len(),
                    fds.len()
                ));
            }
            for (name, fd) in names.into_iter().zip(fds) {
                let (scheme, origin) = name.split_once('\t').unwrap_or(("http", name));
                let l = Listener::inherited(fd, origin.to_string())
                    .map_err(|e| format!("a listener from pid {from_pid} ({origin}): {e}"))?;
                listeners.push((scheme.to_string(), l));
            }
        } else if m == "END" {
            break;
        } else {
            return Err(format!("pid {from_pid}: unexpected message {m:?}"));
        }
    }
    if expected != Some(listeners.len()) {
        return Err(format!(
            "pid {from_pid} announced {expected:?} listeners and sent {}",
            listeners.len()
        ));
    }
    Ok(Taken {
        conn,
        from_pid,
        listeners: std::mem::take(&mut listeners),
        started,
    })
}

impl Taken {
    /// The listeners, taken out (the session stays).
    pub fn take_listeners(&mut self) -> Vec<(String, Listener)> {
        std::mem::take(&mut self.listeners)
    }

    /// Says we serve, and waits up to `timeout` for the predecessor to stop accepting.
    /// Returns how long the whole hand-off took, from the connect.
    pub fn ready(self, timeout: Duration) -> Result<Duration, String> {
        seqpacket::send(self.conn.as_fd(), b"READY", &[])
            .map_err(|e| format!("telling pid {} we serve: {e}", self.from_pid))?;
        match recv_text(&self.conn, timeout) {
            Ok(Some(m)) if m == "DRAINING" => Ok(self.started.elapsed()),
            Ok(other) => Err(format!("pid {} answered {other:?}", self.from_pid)),
            Err(e) => Err(format!("pid {}: {e}", self.from_pid)),
        }
    }

    /// Says we could not start; the predecessor keeps serving.
    pub fn failed(self, why: &str) {
        let _ = seqpacket::send(self.conn.as_fd(), format!("FAILED {why}").as_bytes(), &[]);
    }
}
