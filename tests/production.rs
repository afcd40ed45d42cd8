//! Running in production (issue 12): `--user` on every backend, socket activation and
//! readiness notification (the parsing, the datagrams, and end to end under
//! systemd-socket-activate and a launcher of our own), and the example units.

mod common;

use common::*;
use ringserve::privs::{self, UserSpec};
use ringserve::systemd::{self, parse_listen_env, scheme_of, Notify};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn is_root() -> bool {
    ringserve::sys::user::res_uid().unwrap().1 == 0
}

/// A temporary root with `pub` (0644) and `secret` (0600), owned by whoever runs the
/// test, the directory itself 0755 so another user can enter it.
fn root_with_modes(tag: &str) -> std::path::PathBuf {
    let root = temp_dir(tag);
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, mode) in [("pub", 0o644), ("secret", 0o600)] {
        let p = root.join(name);
        std::fs::write(&p, name).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    root
}

/// `Uid:`, `Gid:` or `Groups:` of `/proc/PID/status`, as numbers.
fn status_ids(pid: u32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    line[key.len()..]
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

backend_test! {
    /// `--user nobody` as root: every uid and gid the kernel holds is nobody's, the
    /// only group is nobody's, and a file only root can read is a 403 while a
    /// world-readable one is served (files are opened per request, after the drop).
    fn user_nobody_holds_no_root_id_and_cannot_read_root_only_files(b) {
        if !is_root() {
            skip(&test_name(), "needs root");
            return;
        }
        let root = root_with_modes("user-nobody");
        let srv = Srv::start(b, &root, &["--user", "nobody"]);
        let pid = srv.pid();
        assert_eq!(status_ids(pid, "Uid:"), [65534; 4], "Uid");
        assert_eq!(status_ids(pid, "Gid:"), [65534; 4], "Gid");
        assert_eq!(status_ids(pid, "Groups:"), [65534], "Groups");
        assert_eq!(get(srv.addr, "/pub").status, 200);
        assert_eq!(get(srv.addr, "/pub").body, b"pub");
        assert_eq!(get(srv.addr, "/secret").status, 403);
    }
}

/// A free TCP port below 1024 on loopback, in `ports` (we are root when this is
/// asked). The port is free when asked, not held: tests that run at once look in
/// ranges of their own, or two could find the same port and one lose it.
fn free_low_port(ports: std::ops::Range<u16>) -> Option<u16> {
    ports
        .into_iter()
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
}

backend_test! {
    /// Root binds a port below 1024, then drops: the low port serves as nobody.
    fn user_binds_a_low_port_as_root_then_drops(b) {
        if !is_root() {
            return skip(&test_name(), "needs root");
        }
        let ports = if b == "uring" { 900..940 } else { 940..980 };
        let Some(port) = free_low_port(ports) else {
            return skip(&test_name(), "no free port in its part of 900-979");
        };
        let root = root_with_modes("user-lowport");
        let listen = format!("127.0.0.1:{port}");
        let srv = Srv::start(b, &root, &["--listen", &listen, "--user", "nobody"]);
        assert_eq!(srv.addr.port(), port);
        assert_eq!(status_ids(srv.pid(), "Uid:"), [65534; 4]);
        assert_eq!(get(srv.addr, "/pub").body, b"pub");
    }
}

#[test]
fn a_low_port_refused_for_want_of_the_capability_says_how_to_grant_it() {
    let unprivileged: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    if !is_root() || unprivileged <= 999 {
        return skip(
            &test_name(),
            "needs root (to run as nobody) and ip_unprivileged_port_start above 999",
        );
    }
    if !have("setpriv") {
        return;
    }
    let Some(port) = free_low_port(980..1000) else {
        return skip(&test_name(), "no free port in 980-999");
    };
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin(),
            "serve",
            "/",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("Permission denied") && err.contains("CAP_NET_BIND_SERVICE"),
        "{err}"
    );
}

#[test]
fn an_unknown_user_is_exit_2_with_one_line() {
    let root = temp_dir("user-unknown");
    let root_s = root.to_str().unwrap();
    let (code, err) = serve_to_exit(&[root_s, "--listen", "127.0.0.1:0", "--user", "no-such-user"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err, "ringserve: --user no-such-user: no such user\n");
    let (code, err) = serve_to_exit(&[
        root_s,
        "--listen",
        "127.0.0.1:0",
        "--user",
        "root:no-such-group",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err,
        "ringserve: --user root:no-such-group: no such group no-such-group\n"
    );
    let (code, err) = serve_to_exit(&[root_s, "--user", ":x"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    remove_temp_tree(&root);
}

#[test]
fn user_spec_parses_user_and_optional_group() {
    let s: UserSpec = "www-data".parse().unwrap();
    assert_eq!((s.user.as_str(), s.group.as_deref()), ("www-data", None));
    let s: UserSpec = "1000:100".parse().unwrap();
    assert_eq!((s.user.as_str(), s.group.as_deref()), ("1000", Some("100")));
    assert_eq!(s.to_string(), "1000:100");
    for bad in ["", ":", ":g", "u:", "u:g:h"] {
        assert!(bad.parse::<UserSpec>().is_err(), "{bad:?} parsed");
    }
}

#[test]
fn user_spec_resolves_names_and_numbers() {
    let ids = |s: &str| privs::resolve(&s.parse().unwrap());
    let root = ids("root").unwrap();
    assert_eq!((root.uid, root.gid), (0, 0));
    let by_number = ids("0:0").unwrap();
    assert_eq!((by_number.uid, by_number.gid), (0, 0));
    // A numeric group need not be in the database; a name must.
    assert_eq!(ids("root:4242").unwrap().gid, 4242);
    assert_eq!(ids("no-such-user").unwrap_err(), "no such user");
    assert_eq!(
        ids("root:no-such-group").unwrap_err(),
        "no such group no-such-group"
    );
    // A uid with no passwd entry has no primary group to default to.
    let err = ids("4242424").unwrap_err();
    assert!(err.contains("USER:GROUP"), "{err}");
}

/// A process already running as exactly the target ids (a re-exec that dropped
/// before) succeeds without calling setgroups/setgid/setuid. Run here with this test
/// process's own ids, which makes no change whoever runs it.
#[test]
fn dropping_to_the_ids_we_already_have_changes_nothing() {
    let (uid, euid, suid) = ringserve::sys::user::res_uid().unwrap();
    let (gid, egid, sgid) = ringserve::sys::user::res_gid().unwrap();
    if (euid, suid, egid, sgid) != (uid, uid, gid, gid) {
        skip(
            &test_name(),
            "this process's real, effective and saved ids differ",
        );
        return;
    }
    let groups = ringserve::sys::user::groups().unwrap();
    let d = privs::drop_to_ids(privs::Ids { uid, gid }).unwrap();
    assert_eq!((d.uid, d.gid, d.changed), (uid, gid, false));
    assert_eq!(d.groups, groups, "the group list is left as it was");
}

#[test]
fn listen_env_follows_sd_listen_fds() {
    let p = parse_listen_env;
    // Nothing passed, or passed to someone else.
    assert!(p(42, None, Some("2"), None).unwrap().is_empty());
    assert!(p(42, Some("41"), Some("2"), None).unwrap().is_empty());
    assert!(p(42, Some("42"), None, None).unwrap().is_empty());
    assert!(p(42, Some("42"), Some("0"), None).unwrap().is_empty());
    // Ours: fds from 3, unnamed without LISTEN_FDNAMES.
    assert_eq!(
        p(42, Some("42"), Some("2"), None).unwrap(),
        [(3, None), (4, None)]
    );
    // Names, colon-separated; "unknown" and empty are no name.
    assert_eq!(
        p(
            42,
            Some("42"),
            Some("4"),
            Some("http:unknown:xfer-uploads:")
        )
        .unwrap(),
        [
            (3, Some("http".to_string())),
            (4, None),
            (5, Some("xfer-uploads".to_string())),
            (6, None)
        ]
    );
    // Malformed values are errors that name the variable.
    for (pid, fds, names, var) in [
        ("x", "1", None, "LISTEN_PID"),
        ("42", "one", None, "LISTEN_FDS"),
        ("42", "-1", None, "LISTEN_FDS"),
        ("42", "2147483647", None, "LISTEN_FDS"),
        ("42", "2", Some("http"), "LISTEN_FDNAMES"),
        ("42", "1", Some("http:xfer"), "LISTEN_FDNAMES"),
    ] {
        let e = p(42, Some(pid), Some(fds), names).unwrap_err();
        assert!(e.to_string().contains(var), "{pid} {fds} {names:?}: {e}");
    }
}

#[test]
fn a_descriptor_name_may_carry_a_scheme() {
    for (name, scheme) in [
        ("http", Some("http")),
        ("HTTP", Some("http")),
        ("http.public", Some("http")),
        ("http-8080", Some("http")),
        ("xfer", Some("xfer")),
        ("xfer-uploads", Some("xfer")),
        ("tcp", Some("tcp")),
        ("echo", Some("tcp")),
        ("echo_test", Some("tcp")),
        ("httpd", None),
        ("xferx", None),
        ("web", None),
        ("", None),
        ("ht", None),
        ("unknown", None),
    ] {
        assert_eq!(scheme_of(name), scheme, "{name:?}");
    }
}

#[test]
fn only_listening_sockets_are_accepted_and_the_error_names_the_fd() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    systemd::ensure_listening(l.as_fd(), Some("http")).unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let e = systemd::ensure_listening(u.as_fd(), Some("http")).unwrap_err();
    let fd = u.as_raw_fd();
    assert_eq!(
        e.to_string(),
        format!("socket activation: fd {fd} (http) is a socket but not listening (a socket unit needs ListenStream= and Accept=no)")
    );
    let f = std::fs::File::open("/dev/null").unwrap();
    let e = systemd::ensure_listening(f.as_fd(), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "socket activation: fd {} (unnamed) is not a socket",
            f.as_raw_fd()
        )
    );
}

/// Receives one datagram (bounded).
fn recv_text(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = recv_datagram(sock, &mut buf).expect("a notification datagram");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn notify_sends_one_datagram_to_a_path_socket() {
    let dir = temp_dir("notify-path");
    let path = dir.join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = Notify::new(path.to_str().unwrap()).unwrap();
    assert_eq!(n.target(), path.to_str().unwrap());
    n.ready().unwrap();
    assert_eq!(recv_text(&sock), "READY=1");
    n.stopping().unwrap();
    assert_eq!(recv_text(&sock), "STOPPING=1");
    n.main_pid(1234).unwrap();
    assert_eq!(recv_text(&sock), "MAINPID=1234");
    n.status("serving\n2 listeners").unwrap();
    assert_eq!(recv_text(&sock), "STATUS=serving 2 listeners");
    // RELOADING=1 with the monotonic clock now, in µs, as Type=notify-reload wants.
    let before = ringserve::sys::unix::monotonic_usec();
    n.reloading().unwrap();
    let after = ringserve::sys::unix::monotonic_usec();
    let text = recv_text(&sock);
    let (first, usec) = text.split_once('\n').unwrap();
    assert_eq!(first, "RELOADING=1");
    let usec: u64 = usec
        .strip_prefix("MONOTONIC_USEC=")
        .unwrap()
        .parse()
        .unwrap();
    assert!((before..=after).contains(&usec), "{before} {usec} {after}");
    remove_temp_tree(&dir);
}

#[test]
fn notify_sends_to_an_abstract_socket_with_the_exact_name() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("ringserve-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A name that is ours plus a trailing NUL would be a different address: the
    // datagram arriving shows the length covers exactly the name.
    Notify::new(&format!("@{name}")).unwrap().ready().unwrap();
    assert_eq!(recv_text(&sock), "READY=1");
    // Not an absolute path nor @abstract (systemd's vsock: form, a relative path).
    assert!(Notify::new("vsock:2:1234").is_err());
    assert!(Notify::new("notify.sock").is_err());
}

/// Copies the example units to a temporary directory with ExecStart pointed at the
/// built binary (systemd-analyze checks the executable exists), and verifies them.
#[test]
fn the_example_units_verify() {
    if !have("systemd-analyze") {
        return;
    }
    let dir = temp_dir("units");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    for unit in ["ringserve.socket", "ringserve.service"] {
        let text = std::fs::read_to_string(src.join(unit)).unwrap();
        std::fs::write(
            dir.join(unit),
            text.replace("/usr/local/bin/ringserve", bin()),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("ringserve.socket"))
        .arg(dir.join("ringserve.service"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    // It reports some problems without failing: there must be none about our units.
    assert!(!err.contains("ringserve."), "systemd-analyze verify: {err}");
    remove_temp_tree(&dir);
}

/// A free port on 127.0.0.1 (bound and released: a tiny race other tests accept too).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every stderr line of `child`, as they come, on a channel (echoed for the log).
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines() {
            let Ok(line) = line else { return };
            eprintln!("  [server] {line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line containing `what`.
fn wait_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => continue,
            Err(e) => panic!("no stderr line with {what:?}: {e}"),
        }
    }
}

/// Waits (bounded) for a notification datagram containing `what`; earlier ones
/// (STATUS=, MAINPID=) are skipped.
fn wait_notify(sock: &UnixDatagram, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let text = recv_text(sock);
        if text.lines().any(|l| l == what) {
            return;
        }
    }
    panic!("no {what} notification within 20 s");
}

/// A child reaped within `limit`, or killed and the test failed.
fn exit_code(child: &mut Child, limit: Duration) -> i32 {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("did not exit within {limit:?}");
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

backend_test! {
    /// systemd-socket-activate binds the port, passes it as fd 3 named http with
    /// NOTIFY_SOCKET set, and execs ringserve on the first connection: that
    /// connection is answered, READY=1 arrives, and SIGTERM brings STOPPING=1 and
    /// exit 0.
    fn socket_activation_under_systemd_socket_activate(b) {
        if !have("systemd-socket-activate") {
            skip(&test_name(), "no systemd-socket-activate (apt-get install systemd)");
            return;
        }
        let root = temp_dir("activate");
        std::fs::write(root.join("f"), "activated").unwrap();
        let notify_path = root.join("notify");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let port = free_port();
        let mut child = Command::new("systemd-socket-activate")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg("--fdname=http")
            .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
            .arg(bin())
            .arg("serve")
            .arg(&root)
            .args(["--backend", b])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = stderr_lines(&mut child);
        wait_line(&lines, "Listening on");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // The first connection makes it exec ringserve, which answers it.
        let r = get(addr, "/f");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"activated"[..]));
        let banner = wait_line(&lines, "ringserve: serving");
        assert!(banner.contains(&format!("http://127.0.0.1:{port}")), "{banner}");
        wait_notify(&notify, "READY=1");
        sigterm(&child);
        wait_notify(&notify, "STOPPING=1");
        assert_eq!(exit_code(&mut child, Duration::from_secs(20)), 0);
        remove_temp_tree(&root);
    }
}

/// A command run the way a service manager runs a service: `listener` dup'ed to fd
/// 3, LISTEN_FDS=1 and LISTEN_FDNAMES=`name`, NOTIFY_SOCKET=`notify`, and LISTEN_PID
/// set by a shell that then execs `program` (keeping its pid).
fn activated_command(
    program: &[&std::ffi::OsStr],
    listener: std::os::fd::BorrowedFd<'_>,
    name: &str,
    notify: &str,
) -> Command {
    use std::os::unix::process::CommandExt;
    let raw = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", r#"LISTEN_PID=$$ exec "$@""#, "sh"])
        .args(program)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", name)
        .env("NOTIFY_SOCKET", notify)
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (dup2, fcntl) on descriptors the child inherited:
    // `raw` stays open in the parent until spawn returns (the caller holds the borrow).
    unsafe {
        cmd.pre_exec(move || {
            if raw == 3 {
                // dup2(3, 3) is a no-op that would leave close-on-exec set.
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags == -1 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// `ringserve serve ROOT --backend B`, activated with `listener` (see
/// [`activated_command`]), stderr piped.
fn launch_activated(
    b: &str,
    root: &Path,
    listener: std::os::fd::BorrowedFd<'_>,
    name: &str,
    notify: &str,
) -> Child {
    let program = [
        bin().as_ref(),
        "serve".as_ref(),
        root.as_os_str(),
        "--backend".as_ref(),
        b.as_ref(),
    ];
    activated_command(&program, listener, name, notify)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The launcher the ignored tests below use does what sd_listen_fds(3) expects: the
/// process that runs has LISTEN_PID equal to its own pid and the listener at fd 3.
#[test]
fn our_launcher_passes_the_listener_as_fd_3_with_our_pid() {
    use std::os::unix::fs::MetadataExt;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd()))
        .unwrap()
        .ino();
    let script = r#"echo "$LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES $NOTIFY_SOCKET"; readlink /proc/$$/fd/3"#;
    let program = ["sh".as_ref(), "-c".as_ref(), script.as_ref()];
    let out = activated_command(&program, listener.as_fd(), "http", "@n")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let env: Vec<&str> = lines.next().unwrap().split(' ').collect();
    assert_eq!(env[0], env[1], "LISTEN_PID is the pid that runs: {text}");
    assert_eq!(env[2..], ["1", "http", "@n"], "{text}");
    assert_eq!(
        lines.next(),
        Some(format!("socket:[{inode}]").as_str()),
        "{text}"
    );
}

backend_test! {
    /// Our own launcher passes a listener the test bound: ringserve serves on it
    /// (not on a --listen default), says READY=1 on an abstract NOTIFY_SOCKET, and
    /// drains on SIGTERM with STOPPING=1 and exit 0.
    fn socket_activation_with_our_own_launcher(b) {
        let root = temp_dir("launch");
        std::fs::write(root.join("f"), "launched").unwrap();
        let name = format!("ringserve-test-launch-{}-{b}", std::process::id());
        let notify_addr = {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
        };
        let notify = UnixDatagram::bind_addr(&notify_addr).unwrap();
        notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut child = launch_activated(b, &root, listener.as_fd(), "http", &format!("@{name}"));
        // The child has its copy; ours must not accept the connections.
        drop(listener);
        let lines = stderr_lines(&mut child);
        let banner = wait_line(&lines, "ringserve: serving");
        assert!(banner.contains(&format!("http://{addr}")), "{banner}");
        wait_notify(&notify, "READY=1");
        let r = get(addr, "/f");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"launched"[..]));
        sigterm(&child);
        wait_notify(&notify, "STOPPING=1");
        assert_eq!(exit_code(&mut child, Duration::from_secs(20)), 0);
        remove_temp_tree(&root);
    }

    /// A passed descriptor that is not a listening socket is refused at start, with
    /// a line naming fd 3.
    fn socket_activation_refuses_a_descriptor_that_is_not_listening(b) {
        let root = temp_dir("launch-bad");
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut child = launch_activated(b, &root, udp.as_fd(), "http", "@ringserve-test-unused");
        drop(udp);
        let code = exit_code(&mut child, Duration::from_secs(20));
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_ne!(code, 0, "{err}");
        assert!(err.contains("fd 3 (http) is a socket but not listening"), "{err}");
        remove_temp_tree(&root);
    }
}
