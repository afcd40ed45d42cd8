//! Zero-downtime hand-off (issue 12): a successor started with --takeover receives the
//! running server's listening sockets over its --control-socket, serves on them, and
//! the old server drains and exits 0; SIGHUP does the same by re-executing itself.
//! Under a keep-alive load plus a connection-per-request load, nothing may fail.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server process this test manages itself (its successors outlive it, so the
/// common `Srv`, which removes the root when dropped, does not fit): its stderr lines
/// are collected as they come.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(root: &Path, backend: &str, args: &[&str]) -> Proc {
        Self::spawn_env(root, backend, args, &[])
    }

    fn spawn_env(root: &Path, backend: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::run(
            Command::new(bin())
                .arg("serve")
                .arg(root)
                .args(["--backend", backend])
                .args(args)
                .envs(env.iter().copied()),
        )
    }

    /// Runs `cmd` (a server, or a launcher that becomes one) and collects its stderr.
    fn run(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = BufReader::new(child.stderr.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in err.lines() {
                let Ok(l) = l else { break };
                eprintln!("  [server] {l}");
                sink.lock().unwrap().push(l);
            }
        });
        Proc { child, lines }
    }

    /// The first line containing `needle`, waiting up to `limit`.
    fn line(&self, needle: &str, limit: Duration) -> Option<String> {
        let t = Instant::now();
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return Some(l.clone());
            }
            if t.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn exit(&mut self, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a server this test did not spawn itself (one its server re-executed) when
/// the test ends, failed or not.
struct Reaped(i32);

impl Drop for Reaped {
    fn drop(&mut self) {
        kill_pid(self.0, libc::SIGKILL);
    }
}

fn kill_pid(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a server process this test started (or its re-executed child).
    unsafe { libc::kill(pid, sig) };
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 {
            e.push(what);
        }
    }
}

/// The files the load fetches, each with distinct bytes.
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, len) in [0usize, 1, 1000, 16 << 10, 100 << 10, 300 << 10]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{i}.bin");
        let body = pattern(i as u8 + 1, len);
        std::fs::write(root.join(&name), &body).unwrap();
        out.push((format!("/{name}"), body));
    }
    out
}

/// The load: `keepalive` clients each reusing one connection until the server says
/// `Connection: close` (then a new one), and `fresh` clients opening a connection per
/// request. Every response must be a 200 with exactly the file's bytes; a connect
/// error, reset, early EOF or timeout is a failure. Never retried.
fn load(
    addr: SocketAddr,
    files: Arc<Vec<(String, Vec<u8>)>>,
    keepalive: usize,
    fresh: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut ts = Vec::new();
    for c in 0..keepalive + fresh {
        let (files, stop, tally) = (files.clone(), stop.clone(), tally.clone());
        let reuse = c < keepalive;
        ts.push(std::thread::spawn(move || {
            let mut conn: Option<BufReader<TcpStream>> = None;
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (path, body) = &files[i % files.len()];
                if conn.is_none() {
                    match TcpStream::connect(addr) {
                        Ok(s) => {
                            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                            conn = Some(BufReader::new(s));
                        }
                        Err(e) => {
                            tally.fail(format!("connect: {e}"));
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    }
                }
                let r = conn.as_mut().unwrap();
                let close = if reuse { "" } else { "Connection: close\r\n" };
                let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{close}\r\n");
                let got = r
                    .get_mut()
                    .write_all(req.as_bytes())
                    .and_then(|()| read_resp(r, false));
                match got {
                    Ok(resp) if resp.status == 200 && resp.body == *body => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        let closing = resp
                            .header("connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                        if closing || !reuse {
                            conn = None;
                        }
                    }
                    Ok(resp) => {
                        tally.fail(format!(
                            "{path}: status {} len {}",
                            resp.status,
                            resp.body.len()
                        ));
                        conn = None;
                    }
                    Err(e) => {
                        tally.fail(format!("{path}: {e}"));
                        conn = None;
                    }
                }
            }
        }));
    }
    ts
}

/// The address the banner names first.
fn banner_addr(p: &Proc) -> SocketAddr {
    let banner = p
        .line("ringserve: serving", Duration::from_secs(20))
        .expect("no banner");
    parse_addrs(&banner)[0]
}

fn pid_in(line: &str, after: &str) -> i32 {
    let rest = &line[line.find(after).expect(after) + after.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn ctl(dir: &Path) -> String {
    dir.join("ctl.sock").display().to_string()
}

fn hand_off_dir(tag: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(tag);
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    (dir, root)
}

/// A server of ROOT (holding `/a`) on a fresh port with a --control-socket: its dir
/// and root, the control socket's path, the process and its address.
fn controlled(tag: &str, b: &str) -> (PathBuf, PathBuf, String, Proc, SocketAddr) {
    let (dir, root) = hand_off_dir(tag);
    std::fs::write(root.join("a"), "a").unwrap();
    let sock = ctl(&dir);
    let p = Proc::spawn(
        &root,
        b,
        &["--listen", "127.0.0.1:0", "--control-socket", &sock],
    );
    let addr = banner_addr(&p);
    (dir, root, sock, p, addr)
}

backend_test! {
    /// Three takeovers in a row under load (this backend first, then each backend in
    /// turn: epoll → uring and back where both run). Zero failed requests, every
    /// response byte-exact, each old server exits 0.
    fn three_takeovers_under_load_lose_nothing(b) {
        let (dir, root) = hand_off_dir("handoff");
        let files = Arc::new(files(&root));
        let sock = ctl(&dir);
        let args = ["--listen", "127.0.0.1:0", "--control-socket", &sock, "--shutdown-timeout", "10s"];
        let mut old = Proc::spawn(&root, b, &args);
        let addr = banner_addr(&old);
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let clients = load(addr, files.clone(), 4, 2, stop.clone(), tally.clone());
        std::thread::sleep(Duration::from_millis(500));
        let all = backends();
        let at = all.iter().position(|x| *x == b).unwrap();
        for round in 1..=3 {
            let next = all[(at + round) % all.len()];
            let before = tally.ok.load(Ordering::Relaxed);
            let t = Instant::now();
            let mut args_next: Vec<&str> = args.to_vec();
            args_next.extend(["--takeover", &sock]);
            let new = Proc::spawn(&root, next, &args_next);
            let took = new
                .line("ringserve: took over from pid", Duration::from_secs(20))
                .unwrap_or_else(|| panic!("[{b}] round {round}: no takeover by {next}"));
            assert_eq!(banner_addr(&new), addr, "the same socket, the same address");
            let code = old.exit(Duration::from_secs(20));
            let during = tally.ok.load(Ordering::Relaxed) - before;
            eprintln!(
                "hand-off {round} ({b} run, to {next}): {took}; old exited {code:?} after {:.0} ms; {during} requests meanwhile",
                t.elapsed().as_secs_f64() * 1e3
            );
            assert_eq!(code, Some(0), "[{b}] round {round}: the old server's exit");
            assert!(during > 0, "[{b}] round {round}: no request was served meanwhile");
            std::thread::sleep(Duration::from_millis(300));
            old = new;
        }
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
        eprintln!("[{b}] load: {ok} requests, {failed} failed");
        assert_eq!(failed, 0, "[{b}] failures: {:?}", tally.errors.lock().unwrap());
        assert!(ok > 100, "[{b}] too little load to mean anything: {ok}");
        old.child.kill().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

backend_test! {
    /// A successor that cannot start (its root does not exist, or a second address it
    /// wants is taken) says why and exits; the old server keeps serving, says so, and
    /// still hands off to a successor that can.
    fn a_takeover_that_cannot_start_leaves_the_old_server_serving(b) {
        let (dir, root, sock, mut old, addr) = controlled("handoff-fail", b);
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = busy.local_addr().unwrap().to_string();
        let missing = dir.join("missing");
        let cases: [(&Path, Vec<&str>); 2] = [
            (&missing, vec!["--listen", "127.0.0.1:0"]),
            (&root, vec!["--listen", "127.0.0.1:0", "--listen", &busy]),
        ];
        for (i, (r, extra)) in cases.iter().enumerate() {
            let mut a = extra.clone();
            a.extend(["--takeover", &sock]);
            let mut new = Proc::spawn(r, b, &a);
            let code = new.exit(Duration::from_secs(20));
            assert!(matches!(code, Some(1 | 2)), "[{b}] case {i}: exit {code:?}");
            let said = old.line("hand-off failed", Duration::from_secs(5));
            assert!(said.as_deref().is_some_and(|l| l.contains("still serving")), "[{b}] {said:?}");
            old.lines.lock().unwrap().clear();
            assert_eq!(get(addr, "/a").body, b"a", "[{b}] case {i}: the old server serves on");
            assert_eq!(old.child.try_wait().unwrap(), None, "[{b}] case {i}: the old server exited");
        }
        let new = Proc::spawn(&root, b, &["--listen", "127.0.0.1:0", "--takeover", &sock]);
        assert!(new.line("took over from pid", Duration::from_secs(20)).is_some());
        assert_eq!(old.exit(Duration::from_secs(20)), Some(0));
        assert_eq!(get(addr, "/a").body, b"a");
        drop(new);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

backend_test! {
    /// SIGHUP re-executes the binary with the same arguments through the same
    /// hand-off, under load: no failed request, a new pid serves, the old exits 0.
    fn sighup_re_executes_with_no_failed_request(b) {
        let (dir, root) = hand_off_dir("sighup");
        let files = Arc::new(files(&root));
        let mut old = Proc::spawn(&root, b, &["--listen", "127.0.0.1:0"]);
        let addr = banner_addr(&old);
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let clients = load(addr, files, 3, 1, stop.clone(), tally.clone());
        std::thread::sleep(Duration::from_millis(300));
        kill_pid(old.child.id() as i32, libc::SIGHUP);
        let line = old
            .line("reloaded: pid", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("[{b}] no reload"));
        let new_pid = pid_in(&line, "reloaded: pid ");
        let _reaped = Reaped(new_pid);
        assert_ne!(new_pid as u32, old.child.id());
        assert_eq!(old.exit(Duration::from_secs(20)), Some(0), "[{b}] the old server's exit");
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
        eprintln!("[{b}] SIGHUP under load: {ok} requests, {failed} failed");
        assert_eq!(failed, 0, "[{b}] {:?}", tally.errors.lock().unwrap());
        // The re-executed server serves, and stops on SIGTERM like any other.
        assert_eq!(get(addr, "/f2.bin").body.len(), 1000);
        kill_pid(new_pid, libc::SIGTERM);
        assert!(eventually(Duration::from_secs(15), || {
            // SAFETY: kill(2) with signal 0 only asks whether the pid exists.
            let alive = unsafe { libc::kill(new_pid, 0) };
            alive != 0
        }), "[{b}] the re-executed server did not stop");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

backend_test! {
    /// Only our own uid may take the listeners: another uid is refused (SO_PEERCRED)
    /// and the server serves on.
    fn another_uid_is_refused(b) {
        // SAFETY: getuid(2) cannot fail.
        if unsafe { libc::getuid() } != 0 {
            return skip(&test_name(), "needs root to connect as another uid");
        }
        if !have("setpriv") {
            return;
        }
        let (dir, root) = hand_off_dir("handoff-uid");
        std::fs::write(root.join("a"), "a").unwrap();
        let sock = dir.join("ctl").display().to_string();
        // Abstract: no file permission stands between nobody and the socket.
        let abs = format!("@ringserve-test-{}-{b}", std::process::id());
        let mut old = Proc::spawn(&root, b, &["--listen", "127.0.0.1:0", "--control-socket", &abs]);
        let addr = banner_addr(&old);
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin(), "serve"])
            .arg(&root)
            .args(["--backend", b, "--listen", "127.0.0.1:0", "--takeover", &abs])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "[{b}] {err}");
        assert!(err.contains("uid"), "[{b}] {err}");
        assert!(old.line("is not ours", Duration::from_secs(5)).is_some(), "[{b}]");
        assert_eq!(get(addr, "/a").body, b"a");
        assert_eq!(old.child.try_wait().unwrap(), None);
        let _ = sock;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

backend_test! {
    /// Under systemd (a NOTIFY_SOCKET the test listens on): READY=1 at start; on
    /// SIGHUP, RELOADING=1, then the successor announced as MAINPID with READY=1;
    /// the old server says no STOPPING=1 (the service goes on), the new one does on
    /// SIGTERM.
    fn sighup_announces_the_new_main_pid_to_systemd(b) {
        let (dir, root) = hand_off_dir("notify");
        std::fs::write(root.join("a"), "a").unwrap();
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let next = || {
            let mut buf = [0u8; 4096];
            let n = recv_datagram(&sock, &mut buf).expect("a notification");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let notify = path.display().to_string();
        let mut old = Proc::spawn_env(&root, b, &["--listen", "127.0.0.1:0"], &[("NOTIFY_SOCKET", &notify)]);
        let addr = banner_addr(&old);
        assert_eq!(next(), "READY=1");
        kill_pid(old.child.id() as i32, libc::SIGHUP);
        assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
        let mut seen = vec![next()];
        if !seen[0].starts_with("MAINPID=") {
            // The successor's own READY=1 may come first.
            seen.push(next());
        }
        let main = seen.iter().find(|m| m.starts_with("MAINPID=")).expect("MAINPID").clone();
        let pid: i32 = main["MAINPID=".len()..].split('\n').next().unwrap().parse().unwrap();
        let _reaped = Reaped(pid);
        assert!(main.ends_with("\nREADY=1"), "{main:?}");
        assert_eq!(old.exit(Duration::from_secs(20)), Some(0));
        assert_eq!(get(addr, "/a").body, b"a", "[{b}] pid {pid} serves");
        kill_pid(pid, libc::SIGTERM);
        let mut rest = Vec::new();
        while let Ok(m) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(next)) {
            let stop = m == "STOPPING=1";
            rest.push(m);
            if stop {
                break;
            }
        }
        assert_eq!(rest.last().map(String::as_str), Some("STOPPING=1"), "[{b}] {seen:?} {rest:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

backend_test! {
    /// `systemctl reload` under socket activation: systemd's socket (fd 3, named
    /// `http`) passes through the SIGHUP re-exec to the new process, which serves on it
    /// without LISTEN_FDS of its own and binds nothing (no `--listen`).
    fn sighup_under_socket_activation_keeps_systemds_socket(b) {
        if !have("systemd-socket-activate") {
            return;
        }
        let (dir, root) = hand_off_dir("activated-reload");
        std::fs::write(root.join("a"), "a").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let old = Proc::run(
            Command::new("systemd-socket-activate")
                .args(["-l", &listen, "--fdname=http", bin(), "serve"])
                .arg(&root)
                .args(["--backend", b]),
        );
        let addr: SocketAddr = listen.parse().unwrap();
        // systemd-socket-activate says when it listens, and execs the server at the
        // first connection.
        assert!(old.line("Listening on", Duration::from_secs(20)).is_some());
        assert_eq!(get(addr, "/a").body, b"a", "[{b}] activated");
        let banner = old.line("ringserve: serving", Duration::from_secs(20)).unwrap();
        assert!(banner.contains(&format!("http://{listen}")), "{banner}");
        let mut old = old;
        kill_pid(old.child.id() as i32, libc::SIGHUP);
        let line = old.line("reloaded: pid", Duration::from_secs(20)).expect("reloaded");
        let new_pid = pid_in(&line, "reloaded: pid ");
        let _reaped = Reaped(new_pid);
        assert_eq!(old.exit(Duration::from_secs(20)), Some(0));
        assert_eq!(get(addr, "/a").body, b"a", "[{b}] the new process serves systemd's socket");
        // The successor's banner went to the same stderr pipe; the reader thread may
        // not have reached it yet when the old process has been reaped.
        let banners = || -> Vec<String> {
            old.lines.lock().unwrap().iter().filter(|l| l.contains("ringserve: serving")).cloned().collect()
        };
        eventually(Duration::from_secs(10), || banners().len() >= 2);
        let banners = banners();
        assert_eq!(banners.len(), 2, "{banners:?}");
        assert!(banners[1].contains(&format!("http://{listen}")) && !banners[1].contains("8080"), "{banners:?}");
        kill_pid(new_pid, libc::SIGTERM);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

backend_test! {
    /// A control socket another server listens on is a configuration error for a
    /// server that is not taking over (exit 2, one line), and the first serves on.
    fn a_control_socket_in_use_is_exit_2(b) {
        let (dir, root, sock, first, addr) = controlled("ctl-busy", b);
        let out = Command::new(bin())
            .args(["serve"])
            .arg(&root)
            .args(["--backend", b, "--listen", "127.0.0.1:0", "--control-socket", &sock])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "[{b}] {err}");
        assert_eq!(err.trim().lines().count(), 1, "[{b}] {err}");
        assert!(err.contains("another server is listening on it"), "[{b}] {err}");
        assert_eq!(get(addr, "/a").body, b"a");
        // A stale socket file (its server gone) is simply replaced.
        drop(first);
        let again = Proc::spawn(&root, b, &["--listen", "127.0.0.1:0", "--control-socket", &sock]);
        assert!(again.line("ringserve: serving", Duration::from_secs(20)).is_some());
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

backend_test! {
    /// SIGTERM reaching the old server while a successor holds its listeners but has
    /// not said READY: the old one stops, and must not shut the sockets the successor
    /// now holds. The successor here is this test, speaking the protocol through the
    /// library: after the old server has exited, a connection to the address is
    /// accepted on the listener the test received.
    fn a_shutdown_during_a_hand_off_leaves_the_sockets_to_the_successor(b) {
        let (dir, _root, sock, mut old, addr) = controlled("handoff-term", b);
        let mut taken = ringserve::handoff::take(&sock, Duration::from_secs(10)).unwrap();
        let ls = taken.take_listeners();
        assert!(!ls.is_empty() && ls.iter().all(|(s, _)| s == "http"));
        kill_pid(old.child.id() as i32, libc::SIGTERM);
        assert_eq!(old.exit(Duration::from_secs(20)), Some(0));
        drop(taken);
        // The kernel queues a connection on a listening socket nobody shut.
        let c = TcpStream::connect(addr).expect("the listener survived the old server");
        let fd = ls[0].1.fd();
        let ok = eventually(Duration::from_secs(5), || {
            ls.iter().any(|(_, l)| ringserve::sys::net::accept(l.fd()).is_ok())
        });
        assert!(ok, "[{b}] nothing to accept on {fd:?}");
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two protocols in one process (HTTP and xfer), and a Unix-socket listener: all
    /// handed over, each under its scheme, and an idle keep-alive client of the old
    /// server gets its next answer with `Connection: close`, then finds the new one.
    fn every_listener_kind_is_handed_over_and_idle_clients_are_told_to_go(b) {
        let (dir, root) = hand_off_dir("handoff-kinds");
        std::fs::write(root.join("a"), "a").unwrap();
        let sock = ctl(&dir);
        let unix = dir.join("http.sock");
        let unix_spec = format!("unix:{}", unix.display());
        let args = [
            "--listen", "http://127.0.0.1:0", "--listen", "xfer://127.0.0.1:0",
            "--listen", &unix_spec, "--control-socket", &sock,
        ];
        let mut old = Proc::spawn(&root, b, &args);
        let banner = old.line("ringserve: serving", Duration::from_secs(20)).unwrap();
        let addrs = parse_addrs(&banner);
        assert_eq!(addrs.len(), 2, "{banner}");
        let mut idle = BufReader::new(TcpStream::connect(addrs[0]).unwrap());
        idle.get_ref().set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        idle.get_mut().write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = read_resp(&mut idle, false).unwrap();
        assert!(r.header("connection").is_none(), "kept alive before the hand-off");
        let mut a = args.to_vec();
        a.extend(["--takeover", &sock]);
        let new = Proc::spawn(&root, b, &a);
        let took = new.line("took over from pid", Duration::from_secs(20)).expect("took over");
        assert!(new.line("ringserve: serving", Duration::from_secs(5)).unwrap().contains(&unix_spec));
        // The idle client's next request: answered by the old server, with close.
        idle.get_mut().write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = read_resp(&mut idle, false).unwrap();
        assert_eq!((r.status, r.header("connection")), (200, Some("close")), "[{b}] {took}");
        assert_eq!(old.exit(Duration::from_secs(20)), Some(0));
        assert_eq!(get(addrs[0], "/a").body, b"a");
        let ls = Command::new(bin()).args(["ls", &addrs[1].to_string()]).output().unwrap();
        assert!(ls.status.success() && String::from_utf8_lossy(&ls.stdout).contains('a'), "[{b}] xfer");
        if have("curl") {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "10", "--unix-socket"])
                .arg(&unix)
                .arg("http://x/a")
                .output()
                .unwrap();
            assert_eq!(out.stdout, b"a", "[{b}] {}", String::from_utf8_lossy(&out.stderr));
        }
        drop(new);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// With --user, what root made for the server is the user's: a successor running
    /// as that user reaches the control socket, takes over and replaces it.
    fn a_successor_running_as_the_dropped_user_takes_over(b) {
        // SAFETY: getuid(2) cannot fail.
        if unsafe { libc::getuid() } != 0 {
            return skip(&test_name(), "needs root");
        }
        if !have("setpriv") {
            return;
        }
        let (dir, root) = hand_off_dir("handoff-user");
        std::fs::write(root.join("a"), "a").unwrap();
        for d in [&dir, &root] {
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        }
        let sock = ctl(&dir);
        let args = ["--listen", "127.0.0.1:0", "--control-socket", &sock, "--user", "nobody"];
        let mut old = Proc::spawn(&root, b, &args);
        let addr = banner_addr(&old);
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&sock).unwrap());
        assert_eq!(owner, 65534, "the control socket is the user's");
        let as_nobody = || {
            Proc::run(
                Command::new("setpriv")
                    .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin(), "serve"])
                    .arg(&root)
                    .args(["--backend", b])
                    .args(args)
                    .args(["--takeover", &sock]),
            )
        };
        let mut new = as_nobody();
        assert!(new.line("took over from pid", Duration::from_secs(20)).is_some(), "[{b}]");
        assert_eq!(old.exit(Duration::from_secs(20)), Some(0));
        assert_eq!(get(addr, "/a").body, b"a");
        // And the successor's control socket, which it bound as the user, works for
        // the next one.
        let third = as_nobody();
        assert!(third.line("took over from pid", Duration::from_secs(20)).is_some(), "[{b}] third");
        assert_eq!(new.exit(Duration::from_secs(20)), Some(0));
        drop(new);
        drop(third);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

backend_test! {
    /// SIGHUP with --status-listen: the old server closes its status endpoint just
    /// before it says DRAINING, and the successor binds the same address then, so the
    /// endpoint moves over with the listeners (a scrape in the gap of a few
    /// milliseconds is refused, never answered by a server on its way out).
    fn the_status_endpoint_moves_to_the_successor(b) {
        let (dir, root) = hand_off_dir("status-reload");
        std::fs::write(root.join("a"), "a").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let st: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let status = st.to_string();
        let mut old = Proc::spawn(&root, b, &["--listen", "127.0.0.1:0", "--status-listen", &status]);
        let addr = banner_addr(&old);
        assert!(old.line("status on http://", Duration::from_secs(20)).is_some());
        assert_eq!(get(st, "/healthz").status, 200);
        kill_pid(old.child.id() as i32, libc::SIGHUP);
        let line = old.line("reloaded: pid", Duration::from_secs(20)).expect("reloaded");
        let new_pid = pid_in(&line, "reloaded: pid ");
        let _reaped = Reaped(new_pid);
        assert_eq!(old.exit(Duration::from_secs(20)), Some(0));
        let statuses = || old.lines.lock().unwrap().iter().filter(|l| l.contains("status on http://")).count();
        assert!(eventually(Duration::from_secs(10), || statuses() == 2), "[{b}] the successor has no status endpoint");
        let m = get(st, "/metrics");
        assert_eq!(m.status, 200);
        assert!(String::from_utf8_lossy(&m.body).contains(&format!("backend=\"{b}\"")));
        assert_eq!(get(st, "/healthz").status, 200, "[{b}] the successor is healthy");
        assert_eq!(get(addr, "/a").body, b"a");
        kill_pid(new_pid, libc::SIGTERM);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
