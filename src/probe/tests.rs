use super::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn facts() -> HostFacts {
    HostFacts {
        seccomp: SeccompMode::Disabled,
        io_uring_disabled: Some(0),
        cap_sys_admin: false,
        memlock: Some((Some(8 << 20), Some(8 << 20))),
    }
}

fn working_uring(ops: &[&'static str]) -> UringProbe {
    UringProbe {
        available: true,
        error: None,
        errno: None,
        ops: ops.to_vec(),
        features: vec!["SINGLE_MMAP", "NODROP"],
        optional: optional::all_absent(&DisableSet::default()),
    }
}

/// Every required op plus a few others: what 5.10 and later offer.
fn full_ops() -> Vec<&'static str> {
    let mut ops: Vec<&'static str> = REQUIRED_OPS.iter().map(|(n, _, _)| *n).collect();
    ops.extend(["NOP", "READV", "OPENAT2"]);
    ops
}

fn probe_of(uring: UringProbe) -> Probe {
    with_choice("6.1.0-test".to_owned(), uring, facts(), Vec::new())
}

fn seccomp_blocked() -> Probe {
    let f = HostFacts {
        seccomp: SeccompMode::Filter,
        ..facts()
    };
    let error = host::describe(
        "io_uring_setup",
        libc::EPERM,
        &setup_error_cause(libc::EPERM, &f),
    );
    let uring = UringProbe::unavailable(error, Some(libc::EPERM), &DisableSet::default());
    with_choice("6.1.0-test".to_owned(), uring, f, Vec::new())
}

#[test]
fn required_ops_are_named_consistently() {
    for &(name, code, kernel) in REQUIRED_OPS {
        assert_eq!(op_name(code), name);
        assert!(kernel.starts_with("5."), "{name} {kernel}");
    }
}

/// Required means submitted unconditionally: what the backend uses only when present
/// is an optional feature, and LINK_TIMEOUT is not submitted at all.
#[test]
fn required_ops_exclude_optional_and_unused_ones() {
    let names: Vec<&str> = REQUIRED_OPS.iter().map(|(n, _, _)| *n).collect();
    for op in [
        "LINK_TIMEOUT",
        "OPENAT2",
        "STATX",
        "MSG_RING",
        "PROVIDE_BUFFERS",
        "SEND_ZC",
    ] {
        assert!(!names.contains(&op), "{op} in REQUIRED_OPS");
    }
    for op in ["SENDMSG", "WRITE", "FSYNC"] {
        assert!(names.contains(&op), "{op} not in REQUIRED_OPS");
    }
}

#[test]
fn backend_request_parses() {
    assert_eq!("auto".parse(), Ok(BackendRequest::Auto));
    assert_eq!("uring".parse(), Ok(BackendRequest::Uring));
    assert_eq!("epoll".parse(), Ok(BackendRequest::Epoll));
    assert!("io_uring"
        .parse::<BackendRequest>()
        .unwrap_err()
        .contains("auto, uring or epoll"));
    for r in [
        BackendRequest::Auto,
        BackendRequest::Uring,
        BackendRequest::Epoll,
    ] {
        assert_eq!(r.to_string().parse(), Ok(r));
    }
    assert_eq!(BackendKind::Uring.to_string(), "uring");
    assert_eq!(BackendKind::Epoll.to_string(), "epoll");
}

#[test]
fn choose_epoll_is_always_honoured() {
    for p in [probe_of(working_uring(&full_ops())), seccomp_blocked()] {
        assert_eq!(
            choose(BackendRequest::Epoll, &p),
            Ok((BackendKind::Epoll, "forced by --backend epoll".to_owned()))
        );
    }
}

#[test]
fn choose_uring() {
    let ok = choose(BackendRequest::Uring, &probe_of(working_uring(&full_ops())));
    let (kind, why) = ok.unwrap();
    assert_eq!(kind, BackendKind::Uring);
    assert!(why.contains("all 11 required present"), "{why}");

    let err = choose(BackendRequest::Uring, &seccomp_blocked()).unwrap_err();
    assert!(
        err.starts_with("--backend uring: io_uring_setup: EPERM"),
        "{err}"
    );
    assert!(err.contains("seccomp"), "{err}");

    let old = working_uring(&["NOP", "ACCEPT", "TIMEOUT"]);
    let err = choose(BackendRequest::Uring, &probe_of(old)).unwrap_err();
    assert!(
        err.contains("SPLICE (5.7)") && err.contains("RECV (5.6)"),
        "{err}"
    );
}

#[test]
fn choose_auto() {
    let good = probe_of(working_uring(&full_ops()));
    let (kind, why) = choose(BackendRequest::Auto, &good).unwrap();
    assert_eq!(kind, BackendKind::Uring);
    assert_eq!(why, "io_uring available: 14 ops, all 11 required present");
    // The probe's own choice is auto's.
    assert_eq!((good.backend, good.reason.as_str()), (kind, why.as_str()));

    let (kind, why) = choose(BackendRequest::Auto, &seccomp_blocked()).unwrap();
    assert_eq!(kind, BackendKind::Epoll);
    assert!(why.starts_with("io_uring_setup: EPERM (Operation not permitted): blocked by seccomp"));

    let mut no_splice = full_ops();
    no_splice.retain(|op| *op != "SPLICE");
    let (kind, why) = choose(BackendRequest::Auto, &probe_of(working_uring(&no_splice))).unwrap();
    assert_eq!(kind, BackendKind::Epoll);
    assert_eq!(
        why,
        "io_uring lacks required ops: SPLICE (5.7) (kernel too old?)"
    );
}

/// The keys other tools read, with their types.
fn assert_json_shape(v: &Value) {
    assert!(v["kernel"].is_string(), "{v}");
    let u = &v["io_uring"];
    assert!(u["available"].is_boolean());
    assert!(u["error"].is_string() || u["error"].is_null());
    assert!(u["errno"].is_i64() || u["errno"].is_null());
    assert!(u["ops"].as_array().unwrap().iter().all(Value::is_string));
    assert!(u["features"]
        .as_array()
        .unwrap()
        .iter()
        .all(Value::is_string));
    for o in u["optional"].as_array().unwrap() {
        assert!(o["name"].is_string() && o["present"].is_boolean());
        assert!(o["min_kernel"].is_string() && o["how"].is_string());
    }
    assert!(u["missing_required"].is_array() || u["missing_required"].is_null());
    assert!(v["backend"] == "uring" || v["backend"] == "epoll");
    assert!(v["reason"].is_string());
    assert!(v["seccomp"].is_string());
    assert!(v["io_uring_disabled"].is_u64() || v["io_uring_disabled"].is_null());
    let m = &v["memlock_limit"];
    assert!(m.is_u64() || *m == "unlimited" || m.is_null());
}

#[test]
fn json_shape_of_constructed_probes() {
    let v = seccomp_blocked().to_json();
    assert_json_shape(&v);
    assert_eq!(v["io_uring"]["available"], false);
    assert_eq!(v["io_uring"]["errno"], libc::EPERM);
    assert!(v["io_uring"]["missing_required"].is_null());
    assert_eq!(v["seccomp"], "filter");
    assert_eq!(v["backend"], "epoll");

    let v = probe_of(working_uring(&["NOP", "ACCEPT"])).to_json();
    assert_json_shape(&v);
    assert_eq!(
        v["io_uring"]["missing_required"].as_array().unwrap().len(),
        REQUIRED_OPS.len() - 1
    );
    assert_eq!(v["memlock_limit"], 8 << 20);
}

#[test]
fn text_report_explains() {
    let t = seccomp_blocked().to_text();
    assert!(t.contains("unavailable: io_uring_setup: EPERM"), "{t}");
    assert!(t.contains("seccomp:            filter"), "{t}");
    assert!(
        t.contains("auto would choose:  epoll because io_uring_setup: EPERM"),
        "{t}"
    );
    let t = probe_of(working_uring(&full_ops())).to_text();
    assert!(
        t.contains("ops (14):") && t.contains("required ops:       all 11 present"),
        "{t}"
    );
    assert!(t.contains("no   multishot_accept 5.19  tried"), "{t}");
}

#[test]
fn wrap_keeps_lines_short() {
    let words = ["ABCDEFGHIJ"; 20];
    for l in wrap(&words, 20).lines() {
        assert!(l.len() <= 80, "{l}");
    }
}

/// The host this is developed on has a modern io_uring; elsewhere (a container that
/// blocks it) the host-specific asserts are skipped with the reason.
#[test]
fn host_probe() {
    let started = Instant::now();
    let p = probe_fresh();
    let took = started.elapsed();
    eprintln!("{}probe took {took:?}", p.to_text());
    assert_json_shape(&p.to_json());
    assert!(took < Duration::from_millis(500), "probe took {took:?}");
    assert_eq!(
        choose(BackendRequest::Auto, &p),
        Ok((p.backend, p.reason.clone()))
    );
    if !p.uring.available {
        eprintln!(
            "SKIP host io_uring asserts: {}",
            p.uring.error.as_deref().unwrap_or("?")
        );
        return;
    }
    for op in [
        "ACCEPT",
        "SPLICE",
        "RECV",
        "SEND",
        "OPENAT2",
        "STATX",
        "ASYNC_CANCEL",
    ] {
        assert!(p.uring.has_op(op), "{op} missing from {:?}", p.uring.ops);
    }
    assert!(p.uring.missing_required().is_empty());
    assert_eq!(p.uring.optional.len(), Optional::ALL.len());
    if std::env::var_os(DISABLE_ENV).is_none() && kernel_at_least(&p.kernel, 6, 1) {
        for o in &p.uring.optional {
            assert!(
                o.present,
                "{} absent on {}: {:?}",
                o.name, p.kernel, o.detail
            );
        }
        assert!(p.uring.has(Optional::MultishotAccept));
    }
}

#[test]
fn probe_is_cached() {
    assert!(std::ptr::eq(probe(), probe()));
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>());
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) >= (major, minor),
        _ => false,
    }
}

// ----- Tests that need a process of their own -----
//
// The parent re-runs this test binary on `child_entry` alone, optionally under a seccomp
// filter that refuses io_uring; the child prints the probe's JSON on a marked line.

const CHILD_ENV: &str = "RINGSERVE_PROBE_TEST_CHILD";
const MARK: &str = "PROBE_JSON:";

#[test]
fn child_entry() {
    let Some(mode) = std::env::var_os(CHILD_ENV) else {
        return; // Only does something when a test below runs it.
    };
    if mode == "fds" {
        // Alone in its process, the fd count is ours to compare.
        let before = open_fds();
        for _ in 0..3 {
            let _ = probe_fresh();
        }
        let after = open_fds();
        println!("{MARK}{}", json!({ "before": before, "after": after }));
    } else {
        println!("{MARK}{}", probe_fresh().to_json());
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn run_child(mode: &str, deny_errno: Option<u16>) -> Value {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "probe::tests::child_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, mode)
    .env_remove(DISABLE_ENV);
    if let Some(errno) = deny_errno {
        let hook = move || crate::sys::probe::deny_io_uring_with_seccomp(errno);
        // SAFETY: the hook runs between fork and exec; it allocates nothing and calls
        // only prctl, which is async-signal-safe.
        unsafe { cmd.pre_exec(hook) };
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find(MARK).map(|i| &l[i + MARK.len()..]))
        .unwrap_or_else(|| panic!("no {MARK} line in child output: {stdout}"));
    serde_json::from_str(line).unwrap()
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn seccomp_eperm_falls_back_with_the_cause() {
    let v = run_child("probe", Some(libc::EPERM as u16));
    assert_json_shape(&v);
    assert_eq!(v["io_uring"]["available"], false);
    assert_eq!(v["io_uring"]["errno"], libc::EPERM);
    assert_eq!(v["seccomp"], "filter");
    assert_eq!(v["backend"], "epoll");
    let error = v["io_uring"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("io_uring_setup: EPERM (Operation not permitted): "),
        "{error}"
    );
    // The sysctl, when the host sets it, outranks seccomp as the named cause.
    if matches!(v["io_uring_disabled"].as_u64(), None | Some(0)) {
        assert!(error.contains("blocked by seccomp"), "{error}");
    }
    assert_eq!(v["reason"], error);
    assert!(v["io_uring"]["optional"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["present"] == false));
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn seccomp_enosys_and_eopnotsupp_fall_back_too() {
    for (errno, cause) in [(libc::ENOSYS, "gVisor"), (libc::EOPNOTSUPP, "Kubernetes")] {
        let v = run_child("probe", Some(errno as u16));
        assert_eq!(v["io_uring"]["errno"], errno);
        assert_eq!(v["backend"], "epoll");
        let error = v["io_uring"]["error"].as_str().unwrap();
        assert!(error.contains(cause), "{error}");
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn probing_closes_every_fd() {
    let v = run_child("fds", None);
    assert_eq!(v["before"], v["after"], "{v}");
}
