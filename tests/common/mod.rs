//! Shared test harness: one helper enumerates the backends, one starts a real server
//! process, one speaks just enough HTTP/1.1 to check responses byte for byte.
#![allow(dead_code)] // each test binary uses a different part of this module

use ringserve::probe::BackendRequest;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Every backend this machine can run, each with its `--backend` name. A backend that
/// cannot run here is kept with its reason (see [`runs_here`]), never silently dropped.
/// `RINGSERVE_TEST_BACKENDS=epoll` (a comma list) narrows the set, for CI cells that
/// force one backend.
pub fn backends() -> Vec<&'static str> {
    chosen().run.clone()
}

/// The backends this test binary runs, and the ones it skips with the reason.
struct Chosen {
    run: Vec<&'static str>,
    skipped: Vec<(&'static str, String)>,
}

fn chosen() -> &'static Chosen {
    // Decided once per test binary: deciding sets up (and drops) a full-size ring in
    // the calling thread, whose teardown can interrupt that thread's next blocking call.
    static CHOSEN: std::sync::OnceLock<Chosen> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(choose_backends)
}

fn choose_backends() -> Chosen {
    let only = std::env::var("RINGSERVE_TEST_BACKENDS").ok();
    let mut out = Chosen {
        run: Vec::new(),
        skipped: Vec::new(),
    };
    for (name, req) in [
        ("epoll", BackendRequest::Epoll),
        ("uring", BackendRequest::Uring),
    ] {
        if let Some(only) = &only {
            if !only.split(',').any(|b| b.trim() == name) {
                out.skipped
                    .push((name, format!("not in RINGSERVE_TEST_BACKENDS={only}")));
                continue;
            }
        }
        let mut cfg = ringserve::Config::new(".");
        cfg.backend = req;
        match ringserve::server::select_backend(&cfg) {
            Ok(_) => out.run.push(name),
            Err(why) => out.skipped.push((name, why)),
        }
    }
    assert!(!out.run.is_empty(), "no backend can run on this machine");
    out
}

/// Whether `backend` runs here. If not, writes `SKIP TEST: reason` (see [`skip`]) and
/// the caller returns: what [`backend_test!`] and [`uring_test!`] start each test with.
pub fn runs_here(backend: &str, test: &str) -> bool {
    let c = chosen();
    if c.run.contains(&backend) {
        return true;
    }
    let (_, why) = c
        .skipped
        .iter()
        .find(|(n, _)| *n == backend)
        .unwrap_or_else(|| panic!("no backend named {backend:?}"));
    skip(test, why);
    false
}

/// Reports that `what` (a test, or one check of it) did not run here, and `why`, as one
/// line `SKIP what: why` that a plain `cargo test` shows: libtest captures only the
/// `print!`/`eprint!` family, so this writes to the process's stderr directly.
/// kernel-compat/report.py counts these lines.
pub fn skip(what: &str, why: &str) {
    let line = format!("SKIP {what}: {why}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Whether the multi-GiB bodies are left out here (`RINGSERVE_TEST_SKIP_HUGE`, set by
/// the kernel-compat cells; the plain `cargo test` sends them): says so as a SKIP of
/// `what` when they are.
pub fn huge_skipped(what: &str) -> bool {
    let set = std::env::var_os("RINGSERVE_TEST_SKIP_HUGE").is_some();
    if set {
        let why = "RINGSERVE_TEST_SKIP_HUGE is set (the kernel-compat cells: the plain cargo test runs it)";
        skip(what, why);
    }
    set
}

/// The running test's name, as libtest names its thread (`NAME::uring`).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string()
}

/// One `#[test]` per backend, so a failure on one backend hides nothing on the other
/// and `cargo test uring` / `cargo test epoll` selects one:
///
/// ```ignore
/// backend_test! {
///     /// Doc comments and attributes are kept on each generated test.
///     fn pipelined_responses_are_byte_exact(b) {
///         let srv = Srv::start(b, &root, &[]); // b: &'static str, "epoll" or "uring"
///     }
/// }
/// ```
///
/// expands to `mod pipelined_responses_are_byte_exact { use super::*; #[test] fn
/// epoll() {..} #[test] fn uring() {..} }`. A backend that cannot run here (or that
/// `RINGSERVE_TEST_BACKENDS` leaves out) makes its test print `SKIP NAME::uring: why`
/// and return (so a skipped `#[should_panic]` test would fail: none is one). Several
/// tests may share one invocation. [`uring_test!`] and [`epoll_test!`] are the
/// one-backend forms.
#[allow(unused_macros)] // each test binary uses some of them
macro_rules! backend_test {
    // One backend's test inside the test's module: attributes, the skip, the binding.
    (@fn $backend:ident $name:ident [$($attr:tt)*] ($($b:ident)?) $body:block) => {
        #[test]
        $($attr)*
        fn $backend() {
            let test = concat!(stringify!($name), "::", stringify!($backend));
            if !$crate::common::runs_here(stringify!($backend), test) {
                return;
            }
            $(let $b: &'static str = stringify!($backend);)?
            $body
        }
    };
    // The one-backend forms: `fn name()` or `fn name(b)`.
    (@only $backend:ident $($(#[$m:meta])* fn $name:ident($($b:ident)?) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::common::backend_test!(@fn $backend $name [$(#[$m])*] ($($b)?) $body);
        }
    )*};
    ($($(#[$m:meta])* fn $name:ident($b:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::common::backend_test!(@fn epoll $name [$(#[$m])*] ($b) $body);
            $crate::common::backend_test!(@fn uring $name [$(#[$m])*] ($b) $body);
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use backend_test;

/// [`backend_test!`] for the io_uring backend only: `uring_test! { fn name() {..} }`
/// (or `fn name(b)`) is the one test `name::uring`.
#[allow(unused_macros)] // each test binary uses some of them
macro_rules! uring_test {
    ($($t:tt)*) => {
        $crate::common::backend_test!(@only uring $($t)*);
    };
}
#[allow(unused_imports)]
pub(crate) use uring_test;

/// [`backend_test!`] for the epoll backend only: the one test `name::epoll`.
#[allow(unused_macros)] // each test binary uses some of them
macro_rules! epoll_test {
    ($($t:tt)*) => {
        $crate::common::backend_test!(@only epoll $($t)*);
    };
}
#[allow(unused_imports)]
pub(crate) use epoll_test;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringserve")
}

/// A fresh directory under the target dir's tmp.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "ringserve-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic, position-dependent bytes, so a misplaced byte shows.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 32) as u8
                ^ seed
        })
        .collect()
}

/// A server process. Killed on drop if still running.
pub struct Srv {
    pub child: Child,
    pub addr: SocketAddr,
    pub addrs: Vec<SocketAddr>,
    pub banner: String,
    pub root: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Srv {
    /// Starts `ringserve serve ROOT --listen 127.0.0.1:0 --backend B ARGS...` and waits
    /// for its banner.
    pub fn start(backend: &str, root: &Path, args: &[&str]) -> Srv {
        Self::start_cmd(backend, root, args, |_| {})
    }

    pub fn start_cmd(
        backend: &str,
        root: &Path,
        args: &[&str],
        tweak: impl FnOnce(&mut Command),
    ) -> Srv {
        let mut cmd = Command::new(bin());
        cmd.arg("serve").arg(root).args(["--backend", backend]);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        tweak(&mut cmd);
        Self::spawn(cmd, root)
    }

    /// Spawns `cmd`, a server whose stderr is piped (a wrapper that execs ringserve,
    /// such as setpriv, will do), and waits for its banner.
    pub fn spawn(mut cmd: Command, root: &Path) -> Srv {
        let mut child = cmd.spawn().expect("spawn ringserve");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut banner = String::new();
        err.read_line(&mut banner).unwrap();
        // Keep draining stderr so the server never blocks on a full pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while err.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                eprint!("  [server] {sink}");
                lines.lock().unwrap().push(sink.trim_end().to_string());
                sink.clear();
            }
        });
        let addrs = parse_addrs(&banner);
        assert!(!addrs.is_empty(), "no address in banner: {banner:?}");
        Srv {
            child,
            addr: addrs[0],
            addrs,
            banner,
            root: root.to_path_buf(),
            log,
        }
    }

    /// The stderr lines after the banner so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Open descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Threads of the server process.
    /// The server's own threads: not the io_uring io-wq workers the kernel runs in its
    /// thread group (`iou-wrk-*`, see [`Srv::iowq_count`]), which it starts and retires
    /// itself (it keeps one alive once STATX or a splice has used it).
    pub fn thread_count(&self) -> usize {
        self.tasks().filter(|c| !c.starts_with("iou-")).count()
    }

    /// The kernel's io-wq workers in the server's thread group.
    pub fn iowq_count(&self) -> usize {
        self.tasks().filter(|c| c.starts_with("iou-")).count()
    }

    fn tasks(&self) -> impl Iterator<Item = String> {
        let dir = format!("/proc/{}/task", self.pid());
        std::fs::read_dir(dir).unwrap().filter_map(|e| {
            let comm = e.ok()?.path().join("comm");
            Some(std::fs::read_to_string(comm).ok()?.trim().to_string())
        })
    }

    /// User + system CPU time of the server process, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Sets the server's open-file limit (soft `cur`, hard 20000) from outside, as
    /// an operator's `prlimit` would.
    pub fn set_nofile(&self, cur: u64) {
        let lim = libc::rlimit {
            rlim_cur: cur,
            rlim_max: 20000,
        };
        // SAFETY: prlimit on our own child with a live rlimit struct.
        let r = unsafe {
            libc::prlimit(
                self.pid() as i32,
                libc::RLIMIT_NOFILE,
                &lim,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Sends `sig` and waits (bounded) for the exit status.
    pub fn stop_with(&mut self, sig: i32) -> Option<i32> {
        self.signal(sig);
        self.wait_exit(Duration::from_secs(20))
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not exit within {limit:?}");
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_temp_tree(&self.root);
    }
}

/// Runs `ringserve serve ARGS` and waits up to 10 s for it to exit: its exit code
/// and stderr. -2 when it was still running then (it started serving, which is the
/// failure for a caller expecting a refusal; it is killed).
pub fn serve_to_exit<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String) {
    let mut child = Command::new(bin())
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break -2;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err)
}

/// Removes the [`temp_dir`] a path lives in. Tests serve multi-gigabyte sparse files
/// from tmpfs, and some kernels (5.10) fill a sparse file's holes when it is spliced:
/// left behind, one test's file starves the next of space.
pub fn remove_temp_tree(path: &Path) {
    let prefix = format!("ringserve-test-{}-", std::process::id());
    if let Some(dir) = path.ancestors().find(|a| {
        a.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
    }) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Every `http://IP:PORT`, `xfer://IP:PORT` or `tcp://IP:PORT` in the banner.
pub fn parse_addrs(banner: &str) -> Vec<SocketAddr> {
    banner
        .split_whitespace()
        .filter_map(|w| {
            w.strip_prefix("http://")
                .or_else(|| w.strip_prefix("xfer://"))
                .or_else(|| w.strip_prefix("tcp://"))
        })
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// Polls `f` until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response. `head` says the request was HEAD (no body follows).
pub fn read_resp(r: &mut impl BufRead, head: bool) -> std::io::Result<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header colon");
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    let no_body = head || status == 304 || status == 204 || (100..200).contains(&status);
    if !no_body {
        let len: usize = resp
            .header("content-length")
            .expect("content-length")
            .parse()
            .unwrap();
        resp.body.resize(len, 0);
        r.read_exact(&mut resp.body)?;
    }
    Ok(resp)
}

/// One request on a fresh connection; returns the response.
pub fn request(addr: SocketAddr, raw: &str) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let head = raw.starts_with("HEAD ");
    read_resp(&mut BufReader::new(s), head).unwrap()
}

/// `GET path` with Host and Connection: close.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    try_get(addr, path).unwrap()
}

/// `GET path` on a fresh connection, reporting failure instead of panicking: for
/// probing whether a server serves (again).
pub fn try_get(addr: SocketAddr, path: &str) -> std::io::Result<Resp> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    (&s).write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    read_resp(&mut BufReader::new(s), false)
}

/// One `read`, retried when interrupted (a signal or io_uring task work is no answer).
pub fn read_some(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// One datagram into `buf`, retried when interrupted: a recv with a timeout is not
/// restarted after a signal or io_uring task work on this thread (the backend probe
/// runs on one of the test threads).
pub fn recv_datagram(
    sock: &std::os::unix::net::UnixDatagram,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    loop {
        match sock.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// True if the peer closed the connection (EOF or reset) within the read timeout.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match read_some(s, &mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Raises this test process's open-file limit (tests open thousands of sockets).
pub fn raise_nofile() {
    let _ = ringserve::sys::epoll::raise_nofile_limit();
}

/// Whether an external tool is on PATH; reports the running test skipped (see [`skip`])
/// if not.
pub fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        skip(
            &test_name(),
            &format!("{tool} is not installed (.ci/run installs it with apt-get)"),
        );
    }
    ok
}

/// Everything in `dir` and below, as sorted relative paths, hidden names included:
/// what the write-path tests compare, so a leftover temporary file shows.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}
