//! Unix SOCK_SEQPACKET sockets that carry descriptors (SCM_RIGHTS) and say who is on
//! the other end (SO_PEERCRED): the hand-off channel between a running server and its
//! successor. The seed's `sendFd`/`recvFd`, with message boundaries kept by the kernel,
//! the descriptors received close-on-exec, and truncation reported instead of leaking.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// Most descriptors in one message (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS: usize = 250;

/// Where a control socket lives: a file, or (`@name`) the abstract namespace, which
/// has no file and goes away with its last descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixAddr<'a> {
    Path(&'a Path),
    Abstract(&'a str),
}

impl<'a> UnixAddr<'a> {
    /// `@name` is abstract; anything else is a path.
    pub fn parse(s: &'a str) -> UnixAddr<'a> {
        match s.strip_prefix('@') {
            Some(name) => UnixAddr::Abstract(name),
            None => UnixAddr::Path(Path::new(s)),
        }
    }
}

fn sockaddr(addr: &UnixAddr<'_>) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (bytes, skip) = match addr {
        UnixAddr::Path(p) => (p.as_os_str().as_bytes(), 0),
        UnixAddr::Abstract(n) => (n.as_bytes(), 1),
    };
    // A path needs its NUL; an abstract name is counted exactly.
    if bytes.is_empty() || skip + bytes.len() >= sun.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a unix socket address must be 1 to 106 bytes, without NUL",
        ));
    }
    for (d, &b) in sun.sun_path[skip..].iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + skip + bytes.len() + (1 - skip);
    Ok((sun, len as libc::socklen_t))
}

fn socket(kind: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before it is wrapped.
    let raw = unsafe { syscall!(socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0)) }?;
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A blocking, close-on-exec SOCK_SEQPACKET listener bound to `addr`.
pub fn listen(addr: &UnixAddr<'_>) -> io::Result<OwnedFd> {
    let fd = socket(libc::SOCK_SEQPACKET)?;
    let (sun, len) = sockaddr(addr)?;
    // SAFETY: `sun` is a valid sockaddr_un of `len` bytes.
    unsafe {
        syscall!(bind(
            fd.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            len
        ))
    }?;
    // SAFETY: plain listen(2) on a socket we own.
    unsafe { syscall!(listen(fd.as_raw_fd(), 8)) }?;
    Ok(fd)
}

/// A blocking SOCK_SEQPACKET connection to `addr`.
pub fn connect(addr: &UnixAddr<'_>) -> io::Result<OwnedFd> {
    let fd = socket(libc::SOCK_SEQPACKET)?;
    let (sun, len) = sockaddr(addr)?;
    // SAFETY: `sun` is a valid sockaddr_un of `len` bytes.
    unsafe {
        syscall!(connect(
            fd.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            len
        ))
    }?;
    Ok(fd)
}

/// Accepts one connection (blocking), close-on-exec.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: no address wanted; plain accept4(2) on a borrowed listener.
        let r = unsafe {
            syscall!(accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC
            ))
        };
        match r {
            // SAFETY: a fresh descriptor nobody else owns.
            Ok(raw) => return Ok(unsafe { OwnedFd::from_raw_fd(raw) }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Who is connected on `fd`: (pid, uid, gid), as the kernel recorded at connect.
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<(i32, u32, u32)> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `c` is a live ucred and `len` is its size.
    unsafe {
        syscall!(getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len
        ))
    }?;
    Ok((c.pid, c.uid, c.gid))
}

/// Sends one message with `fds` attached (at most [`MAX_FDS`]). The kernel duplicates
/// them into the receiver; ours stay open.
pub fn send(fd: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let bytes = size_of::<RawFd>() * raw.len();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `control` has room for one header and `bytes` of data (CMSG_SPACE),
        // is 8-byte aligned, and `msg` points at it, so CMSG_FIRSTHDR is in bounds.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(c).cast(), raw.len());
        }
    }
    // SAFETY: `msg` points at `iov` (over `data`) and `control`, all live for the call.
    let n = unsafe { syscall!(sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)) }?;
    if n as usize != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short seqpacket send",
        ));
    }
    Ok(())
}

/// Receives one message of at most 64 KiB and the descriptors it carries (close-on-
/// exec), waiting up to `timeout`. `Ok(None)` is the peer gone. A message or a
/// descriptor list the kernel had to cut is an error (the descriptors that did come
/// are closed).
pub fn recv(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    if !super::net::wait_readable(fd, timeout)? {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no message in time",
        ));
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((size_of::<RawFd>() * MAX_FDS) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` (over `buf`) and `control`, writable for the call.
        match unsafe { syscall!(recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC)) } {
            Ok(n) => break n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen; CMSG_FIRSTHDR/NXTHDR walk
    // only within it, and each SCM_RIGHTS payload holds cmsg_len - CMSG_LEN(0) bytes of
    // descriptors that are now ours.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..len / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::other("a hand-off message was cut short"));
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some((buf, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_and_credentials_cross() {
        let name = format!("ringserve-test-seqpacket-{}", std::process::id());
        let addr = UnixAddr::Abstract(&name);
        let l = listen(&addr).unwrap();
        let c = connect(&addr).unwrap();
        let s = accept(l.as_fd()).unwrap();
        let (pid, uid, _) = peer_cred(s.as_fd()).unwrap();
        assert_eq!(pid as u32, std::process::id());
        // SAFETY: plain getuid(2).
        assert_eq!(uid, unsafe { libc::getuid() });
        let crate::sys::pipe::Pipe { r, w, .. } = crate::sys::pipe::pipe(4096).unwrap();
        send(c.as_fd(), b"two", &[r.as_fd(), w.as_fd()]).unwrap();
        let (data, fds) = recv(s.as_fd(), Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!((data.as_slice(), fds.len()), (&b"two"[..], 2));
        // The received write end writes into the pipe whose read end we kept.
        let mut f = std::fs::File::from(fds.into_iter().nth(1).unwrap());
        std::io::Write::write_all(&mut f, b"x").unwrap();
        let mut got = [0u8; 1];
        let mut rf = std::fs::File::from(r);
        std::io::Read::read_exact(&mut rf, &mut got).unwrap();
        assert_eq!(&got, b"x");
        drop(c);
        assert!(recv(s.as_fd(), Duration::from_secs(5)).unwrap().is_none());
    }

    #[test]
    fn addresses() {
        assert_eq!(UnixAddr::parse("@x"), UnixAddr::Abstract("x"));
        assert_eq!(
            UnixAddr::parse("/run/x"),
            UnixAddr::Path(Path::new("/run/x"))
        );
        assert!(sockaddr(&UnixAddr::Abstract("")).is_err());
        assert!(sockaddr(&UnixAddr::Path(Path::new(&"a".repeat(200)))).is_err());
    }
}
