//! Socket system calls: listening, accepting, socket options, non-blocking send/recv,
//! sendfile, and waiting for writability.

use std::io::{self, IoSlice};
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32, val: i32) -> io::Result<()> {
    // SAFETY: `val` is a live i32 and we pass its exact size; `fd` is a valid descriptor
    // for the duration of the borrow.
    unsafe {
        syscall!(setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&val as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t
        ))
    }
    .map(drop)
}

fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<i32> {
    let mut v: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: `v` is a live i32 and `len` its size; `fd` is valid for the borrow.
    unsafe {
        syscall!(getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut i32).cast(),
            &mut len
        ))
    }?;
    Ok(v)
}

fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn from_sockaddr(ss: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        // A Unix-socket peer has no IP address: hooks and logs see UNIX_PEER.
        libc::AF_UNIX => Ok(UNIX_PEER),
        f => Err(io::Error::other(format!("unexpected address family {f}"))),
    }
}

/// The peer address reported for connections on a Unix-socket listener, which have
/// none: `0.0.0.0:0`.
pub const UNIX_PEER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// A non-blocking, close-on-exec Unix stream listener at `path` with permission bits
/// `mode`. A stale socket file at `path` (nobody accepts on it) is replaced; a live one
/// is EADDRINUSE, as a TCP port in use is.
pub fn listen_unix(path: &std::path::Path, backlog: u32, mode: u32) -> io::Result<OwnedFd> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        // Only a refused connect says nobody listens there; anything else (EACCES on
        // another user's socket) leaves the file alone and is the error.
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::EADDRINUSE)),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
    // The std listener binds and listens (blocking, close-on-exec); we take its
    // descriptor and make it non-blocking like every other listener.
    let l = std::os::unix::net::UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let fd = OwnedFd::from(l);
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    // SAFETY: listen(2) again on our listening socket only changes its backlog.
    unsafe { syscall!(listen(fd.as_raw_fd(), backlog)) }?;
    Ok(fd)
}

/// What a descriptor we were given (by systemd or a predecessor) listens on: a TCP
/// address, or a Unix path (`None` for an unnamed one). Also makes it non-blocking,
/// as every listener here is. Errors name what is wrong: not a socket, not listening,
/// not a stream.
pub fn inherited_listener(
    fd: BorrowedFd<'_>,
) -> io::Result<Result<SocketAddr, Option<std::path::PathBuf>>> {
    let int = |level, name| getsockopt_int(fd, level, name);
    let not = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    match int(libc::SOL_SOCKET, libc::SO_TYPE) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => return Err(not("not a socket")),
        Err(e) => return Err(e),
        Ok(libc::SOCK_STREAM) => {}
        Ok(_) => return Err(not("not a stream socket")),
    }
    if !super::unix::accepts_connections(fd)? {
        return Err(not("not a listening socket"));
    }
    set_nonblocking(fd, true)?;
    let mut ss = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` has room for any address and `len` says so.
    unsafe {
        syscall!(getsockname(
            fd.as_raw_fd(),
            ss.as_mut_ptr().cast(),
            &mut len
        ))
    }?;
    // SAFETY: zero-initialised, then filled by the kernel.
    let ss = unsafe { ss.assume_init_ref() };
    if ss.ss_family as i32 != libc::AF_UNIX {
        return from_sockaddr(ss).map(Ok);
    }
    // SAFETY: the family says the storage holds a sockaddr_un.
    let sun: &libc::sockaddr_un = unsafe { &*(ss as *const _ as *const libc::sockaddr_un) };
    let off = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let n = (len as usize).saturating_sub(off).min(sun.sun_path.len());
    let bytes: Vec<u8> = sun.sun_path[..n].iter().map(|&c| c as u8).collect();
    let name = match bytes.first() {
        None | Some(0) => None, // unnamed or abstract
        Some(_) => {
            use std::os::unix::ffi::OsStrExt;
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            Some(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(
                &bytes[..end],
            )))
        }
    };
    Ok(Err(name))
}

/// A non-blocking, close-on-exec TCP listener on `addr` with SO_REUSEADDR (and
/// IPV6_V6ONLY for v6, so `[::]` and `0.0.0.0` can both be listened on). `reuseport`
/// sets SO_REUSEPORT, so several listeners (one per io_uring ring) share the address
/// and the kernel spreads connections among them.
pub fn listen(addr: SocketAddr, backlog: u32, reuseport: bool) -> io::Result<OwnedFd> {
    let fd = bound(addr, libc::SOCK_NONBLOCK, reuseport)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    // SAFETY: plain listen(2) on a socket we own.
    unsafe { syscall!(listen(fd.as_raw_fd(), backlog)) }?;
    Ok(fd)
}

/// Whether `addr` is free for a listener of our own, whoever holds it: binds a socket
/// *without* SO_REUSEPORT (but with SO_REUSEADDR, as our listeners have, so a
/// connection in TIME_WAIT is no conflict) and closes it. Any listener on the port,
/// a SO_REUSEPORT group of this same user included, makes it fail with EADDRINUSE;
/// without it, a second server of the same user would join the first one's
/// SO_REUSEPORT group and silently take half its connections.
pub fn check_free(addr: SocketAddr) -> io::Result<()> {
    bound(addr, 0, false).map(drop)
}

/// A close-on-exec TCP socket (`flags` added to its type) bound to `addr`, with
/// SO_REUSEADDR, IPV6_V6ONLY for v6, and SO_REUSEPORT if asked.
fn bound(addr: SocketAddr, flags: i32, reuseport: bool) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket(2); the result is checked before it is wrapped.
    let raw = unsafe {
        syscall!(socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags,
            0
        ))
    }?;
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuseport {
        setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    if family == libc::AF_INET6 {
        setsockopt_int(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (ss, len) = to_sockaddr(&addr);
    // SAFETY: `ss` holds a valid address of `len` bytes.
    unsafe {
        syscall!(bind(
            raw,
            (&ss as *const libc::sockaddr_storage).cast(),
            len
        ))
    }?;
    Ok(fd)
}

/// A lock named `name` in the network namespace, held while the descriptor is open:
/// a unix socket bound to that abstract address (no file, gone with the process).
/// `None` when another process holds it now. Abstract names are per network
/// namespace, as TCP ports are, so two servers that could share a port see one lock.
pub fn name_lock(name: &str) -> io::Result<Option<OwnedFd>> {
    // SAFETY: plain socket(2); the result is checked before it is wrapped.
    let raw = unsafe {
        syscall!(socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0
        ))
    }?;
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays 0: the abstract namespace.
    let bytes = name.as_bytes();
    let n = bytes.len().min(sun.sun_path.len() - 1);
    for (d, &b) in sun.sun_path[1..=n].iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + n;
    // SAFETY: `sun` is a valid sockaddr_un; `len` covers the family and the name.
    let r = unsafe {
        syscall!(bind(
            raw,
            (&sun as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t
        ))
    };
    match r {
        Ok(_) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The address a socket is bound to.
pub fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    sockname(fd, libc::getsockname)
}

/// The address of a connected socket's peer.
pub fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    sockname(fd, libc::getpeername)
}

type NameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn sockname(fd: BorrowedFd<'_>, f: NameFn) -> io::Result<SocketAddr> {
    let mut ss = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `f` is getsockname or getpeername; `ss` has room for any address and
    // `len` says so.
    if unsafe { f(fd.as_raw_fd(), ss.as_mut_ptr().cast(), &mut len) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised, then filled by the kernel.
    from_sockaddr(unsafe { ss.assume_init_ref() })
}

/// Accepts one connection, non-blocking and close-on-exec.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, SocketAddr)> {
    let mut ss = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` has room for any address and `len` says so.
    let raw = unsafe {
        syscall!(accept4(
            listener.as_raw_fd(),
            ss.as_mut_ptr().cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
        ))
    }?;
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: zero-initialised, then filled by the kernel.
    let peer = from_sockaddr(unsafe { ss.assume_init_ref() })?;
    Ok((fd, peer))
}

/// SO_KEEPALIVE with the given probe timing (idle time before the first probe, time
/// between probes, unanswered probes before the connection is dropped), TCP_NODELAY
/// (responses are written in whole pieces, headers with MSG_MORE then the body, so
/// Nagle only adds latency), and SO_SNDBUF when set. Applied to the listener: Linux
/// copies these options into every socket it accepts, so no connection pays a
/// setsockopt.
pub fn tune(
    fd: BorrowedFd<'_>,
    (idle, interval, count): (Duration, Duration, u32),
    sndbuf: usize,
) -> io::Result<()> {
    let secs = |d: Duration| i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX);
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(idle))?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(interval))?;
    setsockopt_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPCNT,
        i32::try_from(count).unwrap_or(i32::MAX),
    )?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    if sndbuf > 0 {
        set_sndbuf(fd, sndbuf)?;
    }
    Ok(())
}

/// SO_SNDBUF (the kernel doubles it and applies its minimum).
pub fn set_sndbuf(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let v = i32::try_from(bytes).unwrap_or(i32::MAX);
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, v)
}

/// SO_RCVBUF (the kernel doubles it and applies its minimum).
pub fn set_rcvbuf(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let v = i32::try_from(bytes).unwrap_or(i32::MAX);
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v)
}

/// TCP_CORK (nginx's `tcp_nopush`): while on, TCP sends only full segments; turning it
/// off pushes what is held. Around a large file body, from its header to its last byte.
pub fn set_cork(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_CORK, on.into())
}

/// Whether TCP_CORK is on (the backends' tests).
#[cfg(test)]
pub fn corked(fd: BorrowedFd<'_>) -> io::Result<bool> {
    getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_CORK).map(|v| v != 0)
}

/// SO_LINGER {on, 0}: the next close sends RST instead of FIN. Used by tests that
/// simulate clients resetting mid-transfer.
pub fn set_linger_reset(fd: BorrowedFd<'_>) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `l` is a live linger struct and we pass its exact size.
    unsafe {
        syscall!(setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t
        ))
    }
    .map(drop)
}

/// One non-blocking recv. `Ok(0)` is end of stream.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length for the duration of the call.
    let n = unsafe {
        syscall!(recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT
        ))
    }?;
    Ok(n as usize)
}

/// One non-blocking gathered send. `more` sets MSG_MORE: the caller has more bytes
/// right behind these (a file body after its headers), so the kernel may hold a
/// partial segment. MSG_NOSIGNAL: a reset peer is an error, never a SIGPIPE.
pub fn send_vectored(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
    // SAFETY: msghdr is plain old data; all-zero is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: `msg` points at `bufs`, which stay borrowed and readable during the call.
    let n = unsafe { syscall!(sendmsg(fd.as_raw_fd(), &msg, flags)) }?;
    Ok(n as usize)
}

/// The most sendfile(2) moves in one call.
pub const SENDFILE_MAX: u64 = 0x7fff_f000;

/// One sendfile(2) of up to `count` bytes (capped at [`SENDFILE_MAX`]) from `file` at
/// `*offset`, advancing it. `Ok(0)` with `count > 0` means the file ended early.
pub fn sendfile(
    out: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: &mut u64,
    count: u64,
) -> io::Result<usize> {
    let mut off =
        i64::try_from(*offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    let count = count.min(SENDFILE_MAX) as usize;
    // SAFETY: `off` is a live i64 the kernel updates; both descriptors are borrowed.
    let n = unsafe { syscall!(sendfile(out.as_raw_fd(), file.as_raw_fd(), &mut off, count)) }?;
    *offset = off as u64;
    Ok(n as usize)
}

/// Sets or clears O_NONBLOCK on `fd`'s open file description (one ioctl, FIONBIO).
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let mut v: libc::c_int = on.into();
    // SAFETY: FIONBIO reads one int through the pointer, which lives across the call.
    unsafe { syscall!(ioctl(fd.as_raw_fd(), libc::FIONBIO, &mut v)) }?;
    Ok(())
}

/// What [`wait_writable`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Writable {
    Ready,
    /// `abort` became readable: the server is stopping.
    Aborted,
    TimedOut,
}

/// Waits until `fd` is writable (or has an error to report), `abort` is readable, or
/// `timeout` passes. This is the seed's writability waiter, done with poll(2) on the
/// one socket instead of a second epoll and a condition variable.
pub fn wait_writable(
    fd: BorrowedFd<'_>,
    abort: BorrowedFd<'_>,
    timeout: Duration,
) -> io::Result<Writable> {
    let mut fds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        },
        libc::pollfd {
            fd: abort.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: `fds` is a live array of two pollfds.
        match unsafe { syscall!(poll(fds.as_mut_ptr(), 2, ms)) } {
            Ok(0) => return Ok(Writable::TimedOut),
            Ok(_) if fds[1].revents != 0 => return Ok(Writable::Aborted),
            Ok(_) => return Ok(Writable::Ready),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Waits until `fd` is readable (or has an error or EOF to report) or `timeout`
/// passes: true when readable.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: `p` is one live pollfd.
        match unsafe { syscall!(poll(&mut p, 1, ms)) } {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// shutdown(2). On a listener, SHUT_RD stops it accepting without closing the
/// descriptor, so no other thread can see the number reused.
pub fn shutdown(fd: BorrowedFd<'_>, how: i32) -> io::Result<()> {
    // SAFETY: plain shutdown(2) on a borrowed descriptor.
    unsafe { syscall!(shutdown(fd.as_raw_fd(), how)) }.map(drop)
}

/// Reads and discards whatever input has already arrived, up to `limit` bytes, without
/// waiting. Closing a socket with unread input makes the kernel send RST, which can
/// destroy a response the peer has not read yet (nginx's reason for lingering close).
pub fn discard_pending(fd: BorrowedFd<'_>, limit: usize) {
    let mut buf = [0u8; 4096];
    let mut left = limit;
    while left > 0 {
        match recv(fd, &mut buf[..left.min(4096)]) {
            Ok(0) | Err(_) => return,
            Ok(n) => left -= n,
        }
    }
}
