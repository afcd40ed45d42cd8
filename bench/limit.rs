//! The limit reference for `bench/run.sh`: the least work an HTTP/1.1 file server can do
//! on this machine, so every contender can be read as a fraction of it.
//!
//! `limit ADDR FILE` serves FILE, whatever the request asks for, on one thread with
//! level-triggered epoll:
//! - FILE of at most 64 KiB: the whole response (headers + body) is built once in memory
//!   and each request costs one `read` and one `send`;
//! - larger FILE: per request the header goes out, then the body with `sendfile(2)`
//!   from one descriptor opened at start, all under TCP_CORK (nginx's `tcp_nopush`):
//!   the kernel sends only full segments until the response is whole, where a bare
//!   `sendfile` pushes a partial one at the end of every call. Measured 1.5× on 1 GiB
//!   bodies into a zero-copy receiver (issue 13), so without it this is no limit.
//!
//! Requests are not parsed: every `\r\n\r\n` in the byte stream (tracked across reads)
//! is one request owed a response, so keep-alive and pipelining work and request bodies
//! are not supported. Partial sends wait for `EPOLLOUT`; a peer that shuts down its side
//! still gets the responses it is owed, then the connection closes; any socket error
//! closes it at once. SIGTERM ends the process (the default action). Only libc + std.
//!
//! The xfer workloads' limit is a raw byte stream instead — no framing, no names, no
//! sizes: one transfer per connection, blocking descriptors, one at a time. The sender
//! pushes the file with `sendfile(2)`; the receiver moves what the socket delivers
//! socket→pipe→destination with `splice(2)` through a 1 MiB pipe (as ringserve's
//! receive path does), so neither side copies through user memory:
//! - `limit --send ADDR FILE` serves: every connection gets FILE, then the close;
//! - `limit --fetch ADDR DEST` is its client: the stream into DEST (created or
//!   truncated; `/dev/null` works) until the server closes;
//! - `limit --recv ADDR DEST [RESERVE]` serves the other way: each connection's stream
//!   into DEST (created or truncated; with RESERVE, that many bytes reserved first with
//!   `fallocate(FALLOC_FL_KEEP_SIZE)`, as ringserve reserves an upload's size) until the
//!   client shuts its side, then the close, which tells the client every byte is in DEST;
//! - `limit --push ADDR FILE` is its client: FILE, the shutdown, then it waits for the
//!   server's close.
//!
//! The clients print `limit: fetched N bytes` / `limit: pushed N bytes` on stderr.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

#[path = "sys.rs"]
mod sys;

/// Bodies up to this size are answered from memory; larger ones with sendfile.
const IN_MEMORY_MAX: u64 = 64 * 1024;
/// epoll `data` of the listener; connections use their descriptor.
const LISTENER: u64 = u64::MAX;
const BACKLOG: libc::c_int = 4096;
const READ_BUF: usize = 64 * 1024;
const READ_INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;

enum Response {
    /// Header and body, one buffer.
    Memory(Vec<u8>),
    /// Header in memory, body from `fd` (`len` bytes).
    File {
        header: Vec<u8>,
        fd: libc::c_int,
        len: u64,
    },
}

impl Response {
    fn total(&self) -> u64 {
        match self {
            Response::Memory(buf) => buf.len() as u64,
            Response::File { header, len, .. } => header.len() as u64 + len,
        }
    }
}

struct Conn {
    fd: libc::c_int,
    /// Requests seen and not yet fully answered.
    owed: u64,
    /// Bytes of the current response already sent.
    sent: u64,
    /// How many bytes of `\r\n\r\n` the input seen so far ends with (0..=3).
    matched: u8,
    /// The peer shut down its side (read returned 0) with responses still owed: finish
    /// sending them, then close.
    peer_done: bool,
    /// The epoll interest registered now.
    interest: u32,
}

/// Counts request ends (`\r\n\r\n`) in `data`, continuing the partial match in `matched`.
fn count_request_ends(matched: &mut u8, data: &[u8]) -> u64 {
    let mut ends = 0;
    for &b in data {
        *matched = match (*matched, b) {
            (1, b'\n') => 2,
            (2, b'\r') => 3,
            (3, b'\n') => {
                ends += 1;
                0
            }
            (_, b'\r') => 1,
            _ => 0,
        };
    }
    ends
}

fn check(ret: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(ret)
    }
}

fn errno() -> libc::c_int {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The HTTP date of now (IMF-fixdate), fixed for the life of the process.
fn http_date() -> String {
    // SAFETY: time(NULL) only returns the current time.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: `tm` is plain data; an all-zero value is valid and gmtime_r overwrites it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let mut out = [0u8; 64];
    // SAFETY: gmtime_r reads `now` and writes `tm`, both live locals; strftime writes at
    // most `out.len()` bytes into `out` and the format is NUL-terminated. The process
    // never calls setlocale, so the names are the C locale's English ones.
    let n = unsafe {
        libc::gmtime_r(&now, &mut tm);
        libc::strftime(
            out.as_mut_ptr().cast(),
            out.len(),
            c"%a, %d %b %Y %H:%M:%S GMT".as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&out[..n]).into_owned()
}

fn build_response(path: &str) -> io::Result<Response> {
    let len = std::fs::metadata(path)?.len();
    let date = http_date();
    let header = format!(
        "HTTP/1.1 200 OK\r\nServer: limit\r\nDate: {date}\r\nLast-Modified: {date}\r\n\
         Accept-Ranges: bytes\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    let header_len = header.len() as u64;
    if len <= IN_MEMORY_MAX {
        let mut buf = header;
        buf.extend_from_slice(&std::fs::read(path)?);
        if buf.len() as u64 != header_len + len {
            return Err(io::Error::other("file changed while reading it"));
        }
        return Ok(Response::Memory(buf));
    }
    let cpath = CString::new(std::path::Path::new(path).as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `cpath` is a valid NUL-terminated string that outlives the call.
    let fd = check(
        unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) },
        "open",
    )?;
    Ok(Response::File { header, fd, len })
}

fn set_int_opt(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    if let Err(e) = sys::setsockopt(fd, level, name, &value) {
        eprintln!("limit: setsockopt({level}, {name}): {e}");
    }
}

fn listen_on(addr: SocketAddrV4) -> io::Result<libc::c_int> {
    // SAFETY: socket() takes no pointers.
    let fd = check(
        unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        },
        "socket",
    )?;
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    check(
        // SAFETY: `sin` is a live sockaddr_in and the length passed is its size.
        unsafe {
            libc::bind(
                fd,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        },
        "bind",
    )?;
    // SAFETY: listen() takes no pointers.
    check(unsafe { libc::listen(fd, BACKLOG) }, "listen")?;
    Ok(fd)
}

fn epoll_set(ep: libc::c_int, op: libc::c_int, fd: libc::c_int, events: u32, data: u64) {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a live epoll_event for the duration of the call.
    let ret = unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) };
    if ret < 0 {
        eprintln!("limit: epoll_ctl: {}", io::Error::last_os_error());
    }
}

enum Progress {
    /// Nothing more is owed.
    Done,
    /// The socket is full; wait for EPOLLOUT.
    Blocked,
    /// The connection is finished (error or peer gone).
    Close,
}

/// Sends as much of what `c` is owed as the socket takes.
fn send_owed(c: &mut Conn, resp: &Response) -> Progress {
    let total = resp.total();
    while c.owed > 0 {
        let ret: isize = match resp {
            Response::Memory(buf) => {
                let rest = &buf[c.sent as usize..];
                // SAFETY: `rest` is a live slice and the length passed is its length.
                unsafe { libc::send(c.fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) }
            }
            Response::File { header, .. } if (c.sent as usize) < header.len() => {
                if c.sent == 0 {
                    // Corked from the header to the body's last byte (uncorked below).
                    let _ = sys::setsockopt(c.fd, libc::IPPROTO_TCP, libc::TCP_CORK, &1i32);
                }
                let rest = &header[c.sent as usize..];
                // SAFETY: as above; MSG_MORE keeps the header for the body's first segment.
                unsafe {
                    libc::send(
                        c.fd,
                        rest.as_ptr().cast(),
                        rest.len(),
                        libc::MSG_NOSIGNAL | libc::MSG_MORE,
                    )
                }
            }
            Response::File { header, fd, len } => {
                let mut off = (c.sent - header.len() as u64) as libc::off_t;
                let left = (len - off as u64).min(1 << 30) as usize;
                // SAFETY: `off` is a live local that sendfile updates; `fd` stays open for
                // the life of the process. SIGPIPE is ignored (see main).
                unsafe { libc::sendfile(c.fd, *fd, &mut off, left) }
            }
        };
        if ret < 0 {
            return match errno() {
                libc::EAGAIN => Progress::Blocked,
                libc::EINTR => continue,
                _ => Progress::Close,
            };
        }
        if ret == 0 {
            // sendfile at EOF before `len`: the file shrank under us.
            return Progress::Close;
        }
        c.sent += ret as u64;
        if c.sent == total {
            if let Response::File { .. } = resp {
                // The response is whole: out goes its last partial segment.
                let _ = sys::setsockopt(c.fd, libc::IPPROTO_TCP, libc::TCP_CORK, &0i32);
            }
            c.sent = 0;
            c.owed -= 1;
        }
    }
    Progress::Done
}

fn close_conn(conns: &mut [Option<Conn>], fd: libc::c_int) {
    if let Some(c) = conns.get_mut(fd as usize).and_then(Option::take) {
        // SAFETY: `c.fd` is a descriptor this process accepted and has not closed yet;
        // closing it also drops it from the epoll set.
        unsafe { libc::close(c.fd) };
    }
}

fn accept_all(ep: libc::c_int, listener: libc::c_int, conns: &mut Vec<Option<Conn>>) {
    loop {
        // SAFETY: null address pointers are allowed: the peer address is not wanted.
        let fd = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            match errno() {
                libc::EAGAIN | libc::ECONNABORTED => return,
                libc::EINTR => continue,
                e => {
                    eprintln!("limit: accept4: {}", io::Error::from_raw_os_error(e));
                    return;
                }
            }
        }
        set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        let idx = fd as usize;
        if conns.len() <= idx {
            conns.resize_with(idx + 1, || None);
        }
        conns[idx] = Some(Conn {
            fd,
            owed: 0,
            sent: 0,
            matched: 0,
            peer_done: false,
            interest: READ_INTEREST,
        });
        epoll_set(ep, libc::EPOLL_CTL_ADD, fd, READ_INTEREST, fd as u64);
    }
}

/// Handles one readiness event on a connection.
fn on_conn_event(
    ep: libc::c_int,
    conns: &mut [Option<Conn>],
    fd: libc::c_int,
    events: u32,
    buf: &mut [u8],
    resp: &Response,
) {
    let Some(c) = conns.get_mut(fd as usize).and_then(Option::as_mut) else {
        return;
    };
    if events & libc::EPOLLERR as u32 != 0 {
        return close_conn(conns, fd);
    }
    if !c.peer_done && events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
        // SAFETY: `buf` is a live, writable buffer of the length passed.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            if c.owed == 0 {
                return close_conn(conns, fd);
            }
            c.peer_done = true;
        } else if n < 0 {
            if !matches!(errno(), libc::EAGAIN | libc::EINTR) {
                return close_conn(conns, fd);
            }
        } else {
            c.owed += count_request_ends(&mut c.matched, &buf[..n as usize]);
        }
    }
    let want_out = match send_owed(c, resp) {
        Progress::Done if c.peer_done => return close_conn(conns, fd),
        Progress::Done => false,
        Progress::Blocked => true,
        Progress::Close => return close_conn(conns, fd),
    };
    // A half-closed peer is only written to; EPOLLHUP and EPOLLERR are always reported.
    let mut interest = if c.peer_done { 0 } else { READ_INTEREST };
    if want_out {
        interest |= libc::EPOLLOUT as u32;
    }
    if interest != c.interest {
        c.interest = interest;
        epoll_set(ep, libc::EPOLL_CTL_MOD, fd, interest, fd as u64);
    }
}

fn run(addr: SocketAddrV4, path: &str) -> io::Result<()> {
    // SAFETY: setting SIGPIPE to SIG_IGN installs no handler code; sends then fail with
    // EPIPE instead of killing the process (sendfile has no MSG_NOSIGNAL).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    sys::raise_nofile();
    let resp = build_response(path)?;
    let listener = listen_on(addr)?;
    // SAFETY: epoll_create1 takes no pointers.
    let ep = check(
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
        "epoll_create1",
    )?;
    epoll_set(
        ep,
        libc::EPOLL_CTL_ADD,
        listener,
        libc::EPOLLIN as u32,
        LISTENER,
    );
    let how = match &resp {
        Response::Memory(_) => "from memory",
        Response::File { .. } => "header + sendfile, corked",
    };
    let total = resp.total();
    eprintln!("limit: serving {path} ({total}-byte responses, {how}) on http://{addr}");

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    loop {
        // SAFETY: `events` is a live buffer of the length passed.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(io::Error::last_os_error());
        }
        for ev in &events[..n as usize] {
            let (flags, data) = (ev.events, ev.u64);
            if data == LISTENER {
                accept_all(ep, listener, &mut conns);
            } else {
                on_conn_event(ep, &mut conns, data as libc::c_int, flags, &mut buf, &resp);
            }
        }
    }
}

// ------------------------------------------------------------------ raw streams

/// What the receiving pipe asks F_SETPIPE_SZ for (ringserve's pipes ask the same).
const STREAM_PIPE: libc::c_int = 1024 * 1024;
/// Most bytes one sendfile is asked for.
const STREAM_CHUNK: usize = 1 << 30;

/// `ret` of a call that returns a count: the count, or the error (`Ok(None)`: EINTR).
fn count(ret: isize, what: &str) -> io::Result<Option<usize>> {
    if ret >= 0 {
        return Ok(Some(ret as usize));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted {
        return Ok(None);
    }
    Err(io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Sends all of `file` to `sock` with sendfile; returns the bytes sent.
fn send_all(sock: RawFd, file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut off: libc::off_t = 0;
    while (off as u64) < len {
        let left = ((len - off as u64) as usize).min(STREAM_CHUNK);
        // SAFETY: `off` is a live local that sendfile updates; both descriptors are open.
        let ret = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, left) };
        if count(ret, "sendfile")? == Some(0) {
            return Err(io::Error::other("the file shrank while it was sent"));
        }
    }
    Ok(len)
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
    count(sys::splice(from, to, len, libc::SPLICE_F_MOVE), "splice")
}

/// Moves what `sock` delivers until its end into `dest`, socket→pipe→file by splice;
/// returns the bytes moved.
fn recv_all(sock: RawFd, dest: &File) -> io::Result<u64> {
    let mut fds: [libc::c_int; 2] = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the live array.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(ret, "pipe2")?;
    // SAFETY: pipe2 succeeded, so both are new descriptors that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ / F_GETPIPE_SZ on our own pipe take and return ints. A pipe
    // that stays smaller (pipe-max-size) is slower, not wrong.
    let cap = unsafe {
        libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, STREAM_PIPE);
        libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ)
    }
    .max(4096) as usize;
    let mut total = 0u64;
    loop {
        let Some(n) = splice(sock, w.as_raw_fd(), cap)? else {
            continue;
        };
        if n == 0 {
            return Ok(total);
        }
        let mut left = n;
        while left > 0 {
            match splice(r.as_raw_fd(), dest.as_raw_fd(), left)? {
                Some(0) => {
                    return Err(io::Error::other(
                        "splice into the destination moved nothing",
                    ))
                }
                Some(m) => left -= m,
                None => {}
            }
        }
        total += n as u64;
    }
}

fn create(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

fn accept(l: &TcpListener) -> io::Result<TcpStream> {
    loop {
        match l.accept() {
            Ok((s, _)) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `--send`: FILE to every connection, one after the other, then the close.
fn stream_send(addr: SocketAddrV4, path: &str) -> io::Result<()> {
    let file = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    let l = TcpListener::bind(addr)?;
    let len = file.metadata()?.len();
    eprintln!("limit: sending {path} ({len} bytes, sendfile) to every connection on {addr}");
    loop {
        let s = accept(&l)?;
        if let Err(e) = send_all(s.as_raw_fd(), &file) {
            eprintln!("limit: {e}");
        }
    }
}

/// Reserves `len` bytes of `f` without changing its size.
fn reserve(f: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("RESERVE too large"))?;
    // SAFETY: fallocate on a descriptor we own takes no pointers.
    let ret = unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    check(ret, "fallocate").map(drop)
}

/// `--recv`: each connection's stream into DEST (`reserve` bytes reserved first), then
/// the close.
fn stream_recv(addr: SocketAddrV4, dest: &str, reserve_len: u64) -> io::Result<()> {
    let l = TcpListener::bind(addr)?;
    eprintln!(
        "limit: receiving every connection's stream into {dest} (splice; {reserve_len} bytes reserved) on {addr}"
    );
    loop {
        let s = accept(&l)?;
        let got = create(dest).and_then(|f| {
            if reserve_len > 0 {
                reserve(&f, reserve_len)?;
            }
            recv_all(s.as_raw_fd(), &f)
        });
        if let Err(e) = got {
            eprintln!("limit: {e}");
        }
    }
}

/// `--fetch`: the server's stream into DEST.
fn stream_fetch(addr: SocketAddrV4, dest: &str) -> io::Result<()> {
    let f = create(dest)?;
    let s = TcpStream::connect(addr)?;
    let n = recv_all(s.as_raw_fd(), &f)?;
    eprintln!("limit: fetched {n} bytes");
    Ok(())
}

/// `--push`: FILE into the stream, the shutdown, then the server's close.
fn stream_push(addr: SocketAddrV4, path: &str) -> io::Result<()> {
    let file = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    let mut s = TcpStream::connect(addr)?;
    let n = send_all(s.as_raw_fd(), &file)?;
    s.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    eprintln!("limit: pushed {n} bytes");
    Ok(())
}

const USAGE: &str = "usage: limit 127.0.0.1:PORT FILE          (HTTP: FILE for every request)
       limit --send 127.0.0.1:PORT FILE   (raw stream: FILE to every connection)
       limit --fetch 127.0.0.1:PORT DEST  (its client: the stream into DEST)
       limit --recv 127.0.0.1:PORT DEST [RESERVE]  (raw stream: each connection into DEST)
       limit --push 127.0.0.1:PORT FILE   (its client: FILE into the stream)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, rest) = match args.first().map(String::as_str) {
        Some(m @ ("--send" | "--fetch" | "--recv" | "--push")) => (m, &args[1..]),
        _ => ("http", &args[..]),
    };
    // Only --recv takes a third argument: the bytes to reserve.
    let reserve_len = match (mode, rest.get(2)) {
        ("--recv", Some(n)) => n.parse::<u64>().ok(),
        (_, None) => Some(0),
        _ => None,
    };
    let (Some(addr), Some(path), Some(reserve_len), 2..=3) = (
        rest.first().and_then(|a| a.parse::<SocketAddrV4>().ok()),
        rest.get(1),
        reserve_len,
        rest.len(),
    ) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if mode != "http" {
        // SAFETY: as in run(): SIG_IGN installs no handler code; sendfile to a closed
        // peer then fails with EPIPE instead of killing the process.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    }
    let done = match mode {
        "--send" => stream_send(addr, path),
        "--fetch" => stream_fetch(addr, path),
        "--recv" => stream_recv(addr, path, reserve_len),
        "--push" => stream_push(addr, path),
        _ => run(addr, path),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("limit: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::count_request_ends;

    #[test]
    fn request_ends_split_across_reads() {
        let mut m = 0;
        assert_eq!(
            count_request_ends(&mut m, b"GET / HTTP/1.1\r\nHost: x\r\n\r"),
            0
        );
        assert_eq!(count_request_ends(&mut m, b"\n"), 1);
        assert_eq!(count_request_ends(&mut m, b"GET /\r\n\r\nGET /\r\n\r\n"), 2);
        assert_eq!(count_request_ends(&mut m, b"\r\r\n\r\n"), 1);
        assert_eq!(count_request_ends(&mut m, b"\n\n\r\n\n"), 0);
    }
}
