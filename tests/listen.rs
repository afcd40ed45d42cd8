//! The --listen forms (issue 12), each bound and served on every backend: `:PORT` and
//! `PORT` (all interfaces, IPv4 and IPv6), `NAME:PORT` (every address the name
//! resolves to), `[V6]:PORT`, `unix:/path` (fetched with `curl --unix-socket`), scheme
//! prefixes, and the same flags from RINGSERVE_* variables.

mod common;

use common::*;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// Whether this host can listen on IPv6 loopback (some CI containers cannot).
fn have_v6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

fn fetch_all(b: &str, srv: &Srv, want: usize) {
    assert!(srv.addrs.len() >= want, "[{b}] {}", srv.banner);
    for a in &srv.addrs {
        let to: SocketAddr = match a {
            SocketAddr::V4(v) if v.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], v.port()))
            }
            SocketAddr::V6(v) if v.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v.port()))
            }
            a => *a,
        };
        assert_eq!(get(to, "/a").body, b"a", "[{b}] {a} via {to}");
    }
}

backend_test! {
    fn every_interface_forms_listen_on_v4_and_v6(b) {
        for form in [":0", "0", "http://:0"] {
            let root = temp_dir("listen-any");
            std::fs::write(root.join("a"), "a").unwrap();
            let srv = Srv::start(b, &root, &["--listen", form]);
            assert!(srv.banner.contains("http://0.0.0.0:"), "[{b}] {form}: {}", srv.banner);
            if have_v6() {
                assert!(srv.banner.contains("http://[::]:"), "[{b}] {form}: {}", srv.banner);
                fetch_all(b, &srv, 2);
            } else {
                skip(&test_name(), "no IPv6 here: only the IPv4 half checked");
                fetch_all(b, &srv, 1);
            }
        }
    }

    fn a_name_listens_on_every_address_it_resolves_to(b) {
        let root = temp_dir("listen-name");
        std::fs::write(root.join("a"), "a").unwrap();
        let srv = Srv::start(b, &root, &["--listen", "localhost:0"]);
        let want: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 0))
            .unwrap()
            .collect();
        assert!(srv.banner.contains("127.0.0.1:") || srv.banner.contains("[::1]:"), "{}", srv.banner);
        assert!(!srv.addrs.is_empty() && srv.addrs.len() <= want.len(), "[{b}] {}", srv.banner);
        fetch_all(b, &srv, 1);
    }

    fn a_bracketed_v6_address(b) {
        if !have_v6() {
            return skip(&test_name(), "no IPv6 loopback here");
        }
        let root = temp_dir("listen-v6");
        std::fs::write(root.join("a"), "a").unwrap();
        let srv = Srv::start(b, &root, &["--listen", "[::1]:0"]);
        assert!(srv.banner.contains("http://[::1]:"), "{}", srv.banner);
        fetch_all(b, &srv, 1);
    }

    /// HTTP over a Unix socket, with the mode knob, fetched with curl --unix-socket.
    fn a_unix_socket_serves_http(b) {
        if !have("curl") {
            return;
        }
        let dir = temp_dir("listen-unix-sock");
        for (mode, want) in [(None, 0o660), (Some("600"), 0o600)] {
            let root = temp_dir("listen-unix");
            std::fs::write(root.join("a"), "hello unix").unwrap();
            let path = dir.join("r.sock");
            let spec = format!("unix:{}", path.display());
            let mut args = vec!["--listen", &spec, "--listen", "127.0.0.1:0"];
            if let Some(m) = mode {
                args.extend(["--unix-socket-mode", m]);
            }
            let mut srv = Srv::start(b, &root, &args);
            assert!(srv.banner.contains(&format!("http://{spec}")), "{}", srv.banner);
            let got = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(got, want, "[{b}] socket mode");
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "10", "--unix-socket"])
                .arg(&path)
                .arg("http://localhost/a")
                .output()
                .unwrap();
            assert!(out.status.success(), "[{b}] {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.stdout, b"hello unix");
            assert_eq!(srv.stop_with(libc::SIGTERM), Some(0));
            // The stale socket file is replaced by the next server (the loop's second run).
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Containers configure with variables: every flag has its RINGSERVE_* form.
    fn flags_come_from_ringserve_variables(b) {
        let root = temp_dir("listen-env");
        std::fs::write(root.join("a"), "a").unwrap();
        let srv = Srv::start_cmd(b, &root, &["--listen", "127.0.0.1:0"], |c| {
            c.env("RINGSERVE_LISTING", "true");
        });
        let r = get(srv.addr, "/");
        assert_eq!(r.status, 200, "[{b}] RINGSERVE_LISTING=true serves a listing");
        drop(srv);
        let root = temp_dir("listen-env2");
        std::fs::write(root.join("a"), "a").unwrap();
        // No --listen and no --backend: both from the environment.
        let mut cmd = Command::new(bin());
        cmd.arg("serve").arg(&root)
            .env("RINGSERVE_LISTEN", "127.0.0.1:0")
            .env("RINGSERVE_BACKEND", b)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stderr.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(line.contains(&format!("with backend {b} (")), "[{b}] {line}");
        let addrs = parse_addrs(&line);
        assert!(addrs.len() == 1 && addrs[0].ip().is_loopback(), "{line}");
        remove_temp_tree(&root);
    }
}

#[test]
fn bad_listen_values_are_exit_2_with_one_line() {
    for bad in [
        "70000",
        ":70000",
        "unix:",
        "nosuch.invalid:80",
        "ftp://:80",
        "1.2.3.4",
    ] {
        let out = Command::new(bin())
            .args(["serve", ".", "--listen", bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{bad}: {err}");
    }
}
