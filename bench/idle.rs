//! Idle keep-alive client for `bench/run.sh`'s idle workload.
//!
//! `idle ADDR PATH N HOLD_SECS [READY_FILE]` opens N connections to ADDR one after the
//! other, sends one `GET PATH` on each and reads the whole response (status line,
//! headers, Content-Length bytes of body), then holds every connection open and idle
//! for HOLD_SECS and exits. It prints `ready OK FAILED` on stdout (and into READY_FILE,
//! written whole then renamed into place) once all N have been tried, so the harness
//! can read the server's memory while the connections sit idle. Sockets have SO_LINGER
//! 0: exiting (or SIGTERM) resets them, so repeated runs leave no TIME_WAIT behind.
//! Only libc + std.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::io::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;

#[path = "sys.rs"]
mod sys;

/// Per-connection budget for the one request; a server that stalls fails the run.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn linger_zero(s: &TcpStream) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    sys::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, &l)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one whole response; errors unless it is a 200 with a Content-Length body.
fn read_response(s: &mut TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in headers",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("header section over 64 KiB"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(io::Error::other(format!("status line {status:?}")));
    }
    let len: u64 = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Content-Length"))?;
    let mut left = len.saturating_sub((buf.len() - head_end) as u64);
    while left > 0 {
        let want = chunk.len().min(left as usize);
        let n = s.read(&mut chunk[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in body",
            ));
        }
        left -= n as u64;
    }
    Ok(())
}

fn open_one(addr: SocketAddr, request: &[u8]) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    linger_zero(&s)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.write_all(request)?;
    read_response(&mut s)?;
    Ok(s)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2),
        args.get(3).and_then(|a| a.parse::<usize>().ok()),
        args.get(4).and_then(|a| a.parse::<u64>().ok()),
    );
    let (Some(addr), Some(path), Some(n), Some(hold)) = parsed else {
        eprintln!("usage: idle 127.0.0.1:PORT /PATH N HOLD_SECS [READY_FILE]");
        return ExitCode::from(2);
    };
    sys::raise_nofile();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let mut held = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut first_error = None;
    for _ in 0..n {
        match open_one(addr, &request) {
            Ok(s) => held.push(s),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("idle: {failed} of {n} connections failed; first: {e}");
    }
    let line = format!("ready {} {failed}\n", held.len());
    print!("{line}");
    let _ = io::stdout().flush();
    if let Some(ready) = args.get(5) {
        let tmp = format!("{ready}.tmp");
        if let Err(e) = std::fs::write(&tmp, &line).and_then(|()| std::fs::rename(&tmp, ready)) {
            eprintln!("idle: writing {ready}: {e}");
            return ExitCode::FAILURE;
        }
    }
    std::thread::sleep(Duration::from_secs(hold));
    drop(held);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
