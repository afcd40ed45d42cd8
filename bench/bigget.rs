//! The zero-copy HTTP receiver for bench/'s large-file workloads: wrk reads every body
//! into user memory and is 100 % busy at 1 GiB bodies, so it, not the server, sets the
//! rate. This client moves each body socket→pipe→/dev/null with `splice(2)` and parses
//! nothing but the status line and Content-Length, so the server is the bottleneck.
//!
//! `bigget ADDR PATH CONNS SECS`: CONNS keep-alive connections, one thread each, each
//! fetching PATH over and over for SECS seconds (a body in progress at the deadline is
//! finished). Prints one line on stdout:
//! `bigget: R requests, B bytes, E errors in S s: G GB/s`; exit 1 if any request failed
//! (a non-200, a short body, a reset). Only libc + std.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PIPE_SIZE: libc::c_int = 1 << 20;

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// A pipe (read end, write end) of PIPE_SIZE where the kernel allows.
fn pipe() -> io::Result<(libc::c_int, libc::c_int)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETPIPE_SZ on a pipe we own; a refusal keeps the default size.
    unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, PIPE_SIZE) };
    Ok((fds[0], fds[1]))
}

#[path = "sys.rs"]
mod sys;

/// One splice(2) of up to `len` bytes between two descriptors without offsets.
fn splice(from: libc::c_int, to: libc::c_int, len: usize) -> io::Result<usize> {
    let n = sys::splice(from, to, len, libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE);
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads a response head; returns (status, content length, body bytes read past it).
fn head(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(u16, u64, usize)> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let len = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::other("no Content-Length"))?;
            return Ok((status, len, buf.len() - end - 4));
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("response head over 64 KiB"));
        }
    }
}

/// One connection's loop until `until`.
fn fetch(addr: SocketAddr, path: &str, until: Instant, t: &Tally) -> io::Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let (pr, pw) = pipe()?;
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    let mut buf = Vec::with_capacity(8192);
    let result = (|| {
        while Instant::now() < until {
            s.write_all(req.as_bytes())?;
            let (status, len, early) = head(&mut s, &mut buf)?;
            if status != 200 {
                return Err(io::Error::other(format!("status {status}")));
            }
            let mut left = len
                .checked_sub(early as u64)
                .ok_or_else(|| io::Error::other("more body than Content-Length"))?;
            while left > 0 {
                let n = splice(s.as_raw_fd(), pw, left.min(PIPE_SIZE as u64) as usize)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let mut out = 0;
                while out < n {
                    out += splice(pr, null.as_raw_fd(), n - out)?;
                }
                left -= n as u64;
            }
            t.requests.fetch_add(1, Ordering::Relaxed);
            t.bytes.fetch_add(len, Ordering::Relaxed);
        }
        Ok(())
    })();
    // SAFETY: both pipe ends are ours and closed once.
    unsafe {
        libc::close(pr);
        libc::close(pw);
    }
    result
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(path), Some(conns), Some(secs)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
        args.get(3).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: bigget ADDR PATH CONNS SECS");
        return ExitCode::from(2);
    };
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (t, path) = (tally.clone(), path.clone());
            std::thread::spawn(move || {
                if let Err(e) = fetch(addr, &path, until, &t) {
                    eprintln!("bigget: {e}");
                    t.errors.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for th in threads {
        let _ = th.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let (r, b, e) = (
        tally.requests.load(Ordering::Relaxed),
        tally.bytes.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    println!(
        "bigget: {r} requests, {b} bytes, {e} errors in {secs:.3} s: {:.3} GB/s",
        b as f64 / secs / 1e9
    );
    if e > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
