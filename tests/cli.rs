//! The command line: banner, exit codes, signals, help, probe.

mod common;
use common::*;
use std::process::{Command, Stdio};

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

backend_test! {
    fn banner_names_root_each_address_and_backend_with_reason(b) {
        let root = temp_dir("banner");
        let mut srv = Srv::start(
            b,
            &root,
            &["--listen", "127.0.0.1:0", "--listen", "[::1]:0"],
        );
        let banner = srv.banner.trim().to_string();
        eprintln!("[{b}] {banner}");
        assert!(
            banner.contains(&root.canonicalize().unwrap().display().to_string()),
            "{banner}"
        );
        assert_eq!(srv.addrs.len(), 2, "{banner}");
        assert!(
            srv.addrs.iter().all(|a| a.port() != 0),
            "port 0 resolved: {banner}"
        );
        assert!(srv.addrs[1].is_ipv6());
        assert!(banner.contains(&format!("backend {b} (")), "{banner}");
        for a in srv.addrs.clone() {
            std::fs::write(root.join("x.txt"), "x").unwrap();
            assert_eq!(get(a, "/x.txt").body, b"x");
        }
        assert_eq!(srv.stop_with(libc::SIGTERM), Some(0));
    }
}

backend_test! {
    fn sigterm_and_sigint_stop_cleanly_with_exit_zero(b) {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            let root = temp_dir("sig");
            let mut srv = Srv::start(b, &root, &[]);
            // An idle keep-alive connection must not hold up the exit.
            let _idle = srv.connect();
            assert_eq!(srv.stop_with(sig), Some(0), "[{b}] signal {sig}");
        }
    }
}

fn assert_config_error(args: &[&str], needle: &str) {
    let (code, _, err) = run(args);
    assert_eq!(code, Some(2), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
}

#[test]
fn bad_configuration_exits_2_with_one_line() {
    assert_config_error(
        &[
            "serve",
            "/nonexistent/ringserve-root",
            "--listen",
            "127.0.0.1:0",
        ],
        "/nonexistent/ringserve-root",
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let root = temp_dir("cfg");
    let root = root.to_str().unwrap();
    assert_config_error(
        &["serve", root, "--listen", &addr],
        "address already in use",
    );
    assert_config_error(
        &["serve", root, "--send-timeout", "soon"],
        "invalid duration",
    );
    assert_config_error(&["serve", root, "--listen", "nowhere"], "nowhere");
    assert_config_error(
        &[
            "serve",
            root,
            "--listen",
            "127.0.0.1:0",
            "--workers-min",
            "8",
            "--workers-max",
            "2",
        ],
        "--workers-min",
    );
    // B7: past the kernel's buffer-ring limit, a reason and exit 2, not a dead ring
    // thread and exit 1. B6: a key names its ring in one byte.
    for (flag, value, needle) in [
        (
            "--uring-buffers",
            "40000",
            "--uring-buffers must be 1 to 32768",
        ),
        (
            "--uring-buffers",
            "32769",
            "--uring-buffers must be 1 to 32768",
        ),
        ("--uring-buffers", "0", "--uring-buffers must be 1 to 32768"),
        ("--uring-threads", "257", "--uring-threads must be 1 to 256"),
        ("--uring-threads", "0", "--uring-threads must be 1 to 256"),
    ] {
        for backend in ["auto", "uring", "epoll"] {
            let args = [
                "serve",
                root,
                "--listen",
                "127.0.0.1:0",
                "--backend",
                backend,
            ];
            assert_config_error(&[&args[..], &[flag, value]].concat(), needle);
        }
    }
    let file = temp_dir("cfgfile").join("f");
    std::fs::write(&file, "").unwrap();
    assert_config_error(
        &["serve", file.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        "root",
    );
}

#[test]
fn forced_uring_never_silently_switches() {
    let root = temp_dir("forced");
    let mut cfg = ringserve::Config::new(".");
    cfg.backend = ringserve::probe::BackendRequest::Uring;
    match ringserve::server::select_backend(&cfg) {
        Err(why) => {
            let (code, _, err) = run(&[
                "serve",
                root.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "uring",
            ]);
            assert_eq!(code, Some(2), "{err}");
            assert!(err.contains(why.as_str()), "reason {why:?} in {err}");
        }
        Ok(_) => {
            let mut srv = Srv::start("uring", &root, &[]);
            assert!(srv.banner.contains("backend uring"), "{}", srv.banner);
            assert_eq!(srv.stop_with(libc::SIGTERM), Some(0));
        }
    }
}

#[test]
fn serve_help_documents_every_knob_and_its_default() {
    let (code, out, _) = run(&["serve", "--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--listen",
        "--backend",
        "--protocol",
        "--workers-min",
        "--workers-max",
        "--worker-idle-timeout",
        "--send-timeout",
        "--header-timeout",
        "--keepalive-timeout",
        "--shutdown-timeout",
        "--max-connections",
        "--tcp-keepalive-idle",
        "--tcp-keepalive-interval",
        "--tcp-keepalive-count",
        "--listing",
        "--access-log",
        "--error-log",
        "--log-level",
        "--max-header-bytes",
        "--max-uri-bytes",
        "--max-header-fields",
        "--dotfiles",
        "--etag",
        "--backlog",
        "--sndbuf",
    ] {
        let line = out
            .lines()
            .position(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} missing from help:\n{out}"));
        // The default sits in the flag's paragraph.
        let para: String = out
            .lines()
            .skip(line)
            .enumerate()
            .take_while(|(i, l)| *i == 0 || !l.trim_start().starts_with("--"))
            .map(|(_, l)| l)
            .collect();
        assert!(para.contains("default"), "{flag} has no default:\n{para}");
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let (code, _, err) = run(&["serve", "--no-such-flag"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn probe_json_has_the_documented_keys() {
    let (code, out, err) = run(&["probe", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("probe --json is JSON");
    assert!(v["kernel"].is_string());
    let u = &v["io_uring"];
    assert!(u["available"].is_boolean());
    assert!(u["error"].is_string() || u["error"].is_null());
    assert!(u["ops"].is_array());
    assert!(u["features"].is_array());
    assert!(matches!(v["backend"].as_str(), Some("uring" | "epoll")));
    assert!(!v["reason"].as_str().unwrap().is_empty());
    if u["available"] == true {
        assert!(u["error"].is_null());
        assert!(u["ops"].as_array().unwrap().iter().any(|o| o == "ACCEPT"));
    } else {
        assert!(u["error"].is_string());
    }
}

#[test]
fn probe_text_names_kernel_and_choice() {
    let (code, out, err) = run(&["probe"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.to_lowercase().contains("kernel"), "{out}");
    assert!(out.contains("epoll") || out.contains("uring"), "{out}");
}

backend_test! {
    fn a_closed_stderr_does_not_take_the_server_down(b) {
        let root = temp_dir("nostderr");
        std::fs::write(root.join("x"), "x").unwrap();
        let mut child = Command::new(bin())
            .args([
                "serve",
                root.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--backend",
                b,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut banner = String::new();
        {
            let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
            std::io::BufRead::read_line(&mut err, &mut banner).unwrap();
        } // the log reader goes away
        let addr = parse_addrs(&banner)[0];
        assert_eq!(get(addr, "/x").body, b"x");
        // Shutting down writes to the closed stderr; that must not stop the shutdown.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
        // SAFETY: as above.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t = std::time::Instant::now();
        let code = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.code();
            }
            if t.elapsed() > std::time::Duration::from_secs(10) {
                let _ = child.kill();
                panic!("[{b}] did not exit after SIGTERM with stderr closed");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(code, Some(0), "[{b}]");
    }
}

backend_test! {
    fn stats_are_printed_per_thread_every_interval_and_on_sigusr1(b) {
        use std::time::Duration;
        let root = temp_dir("stats");
        std::fs::write(root.join("x"), "x").unwrap();
        let args = ["--stats-interval", "1", "--uring-threads", "1"];
        let srv = Srv::start(b, &root, &args);
        for _ in 0..3 {
            assert_eq!(get(srv.addr, "/x").body, b"x");
        }
        // The intervals' totals add up to the three responses; thread lines name who
        // served them.
        let thread = if b == "uring" { "ring-0" } else { "worker-" };
        let seen = |f: &dyn Fn(&str) -> bool| srv.log().iter().any(|l| f(l));
        let responses = || -> u64 {
            srv.log()
                .iter()
                .filter_map(|l| l.strip_prefix("ringserve: stats interval: "))
                .flat_map(|l| l.split(' '))
                .filter_map(|kv| kv.strip_prefix("responses="))
                .map(|n| n.parse::<u64>().unwrap())
                .sum()
        };
        let counted = eventually(Duration::from_secs(5), || responses() == 3);
        assert!(
            counted,
            "[{b}] intervals counted {}: {:#?}",
            responses(),
            srv.log()
        );
        assert!(
            seen(
                &|l| l.starts_with(&format!("ringserve: stats {thread}")) && l.contains("accepts=")
            ),
            "[{b}] no per-thread line: {:#?}",
            srv.log()
        );
        srv.signal(libc::SIGUSR1);
        let totals = eventually(Duration::from_secs(5), || {
            seen(&|l| l.starts_with("ringserve: stats accepts=3 ") && l.contains(" responses=3 "))
        });
        assert!(
            totals,
            "[{b}] SIGUSR1 printed no running total: {:#?}",
            srv.log()
        );
    }
}
