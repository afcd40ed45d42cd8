//! The error log (issue 12), each case on every backend: the cause of a 403 named,
//! a flood of them bounded, `--access-log PATH` reopened on SIGUSR1, `--log-level`, and
//! journald's priority prefixes.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The unprivileged user the server runs as when the tests run as root (who reads any
/// file, so a 0600 file would be served): nobody.
const NOBODY: &str = "65534";

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A root with `ok` (readable) and `secret` (readable by nobody the server runs as).
fn tree_with_secret(tag: &str) -> PathBuf {
    let root = temp_dir(tag);
    std::fs::write(root.join("ok"), "fine").unwrap();
    std::fs::write(root.join("secret"), "hidden").unwrap();
    // Root owns it: nobody may not read 0600. Not root: the owner may not read 000.
    let mode = if is_root() { 0o600 } else { 0o000 };
    std::fs::set_permissions(root.join("secret"), std::fs::Permissions::from_mode(mode)).unwrap();
    root
}

/// Starts the server as a user the file permissions apply to (nobody, through
/// setpriv, when the tests run as root), or `None` if that cannot be done here.
fn start_unprivileged(b: &str, root: &Path, args: &[&str]) -> Option<Srv> {
    let mut cmd = if is_root() {
        if !have("setpriv") {
            return None;
        }
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            bin(),
        ]);
        c
    } else {
        Command::new(bin())
    };
    cmd.arg("serve")
        .arg(root)
        .args(["--backend", b, "--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Some(Srv::spawn(cmd, root))
}

/// The error-log lines naming `path`'s failed open.
fn causes<'a>(log: &'a [String], path: &str) -> Vec<&'a String> {
    let needle = format!("open() \"{path}\" failed");
    log.iter().filter(|l| l.contains(&needle)).collect()
}

/// `n` pipelined GETs of `path` on one connection; the statuses.
fn pipelined(addr: SocketAddr, path: &str, n: usize) -> Vec<u16> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    let writer = std::thread::spawn(move || {
        for _ in 0..n {
            w.write_all(req.as_bytes()).unwrap();
        }
    });
    let mut r = BufReader::new(s);
    let statuses = (0..n)
        .map(|_| read_resp(&mut r, false).unwrap().status)
        .collect();
    writer.join().unwrap();
    statuses
}

backend_test! {
    /// A file the server may not read: 403 to the client, and to the operator what
    /// failed, on which file, why, for whom and for which request.
    fn the_error_log_names_the_cause_of_a_403(b) {
        let root = tree_with_secret("cause");
        let Some(srv) = start_unprivileged(b, &root, &[]) else { return };
        assert_eq!(get(srv.addr, "/ok").status, 200);
        assert_eq!(get(srv.addr, "/secret").status, 403);
        let said = eventually(Duration::from_secs(5), || !causes(&srv.log(), "/secret").is_empty());
        let log = srv.log();
        assert!(said, "[{b}] no cause for the 403 in {log:?}");
        let line = causes(&log, "/secret")[0];
        assert_eq!(
            line,
            "ringserve: open() \"/secret\" failed (13: Permission denied), client: 127.0.0.1, \
             request: \"GET /secret HTTP/1.1\"",
            "[{b}]"
        );
        // A 404 is the client's business: nothing said.
        assert_eq!(get(srv.addr, "/missing").status, 404);
        assert_eq!(get(srv.addr, "/secret").status, 403);
        assert!(eventually(Duration::from_secs(5), || causes(&srv.log(), "/secret").len() == 2));
        assert!(!srv.log().iter().any(|l| l.contains("/missing")), "[{b}] {:?}", srv.log());
    }

    /// A client can cause 403s at will: 2000 of them give a bounded number of lines,
    /// and what was held back is counted, so nothing goes unaccounted for.
    fn a_flood_of_403s_is_rate_limited_and_counted(b) {
        let root = tree_with_secret("flood");
        let Some(srv) = start_unprivileged(b, &root, &[]) else { return };
        let n = 2000;
        let statuses = pipelined(srv.addr, "/secret", n);
        assert!(statuses.iter().all(|&s| s == 403), "[{b}] {statuses:?}");
        // The count of what was suppressed comes once the bucket refills, flood over.
        let suppressed = |log: &[String]| -> u64 {
            log.iter()
                .filter_map(|l| l.strip_prefix("ringserve: "))
                .filter_map(|l| l.strip_suffix(" similar messages suppressed"))
                .map(|n| n.parse::<u64>().unwrap())
                .sum()
        };
        let all = eventually(Duration::from_secs(10), || {
            let log = srv.log();
            causes(&log, "/secret").len() as u64 + suppressed(&log) == n as u64
        });
        let log = srv.log();
        let shown = causes(&log, "/secret").len();
        assert!(all, "[{b}] {shown} shown + {} suppressed != {n}", suppressed(&log));
        assert!((20..100).contains(&shown), "[{b}] {shown} lines for {n} 403s");
        assert!(log.len() < 120, "[{b}] {} lines in all", log.len());
    }

    /// `--access-log PATH`: the lines go to the file; after logrotate renames it,
    /// SIGUSR1 makes the server write to a new file at PATH.
    fn the_access_log_file_is_reopened_on_sigusr1(b) {
        let root = temp_dir("access-file");
        std::fs::write(root.join("f"), "x").unwrap();
        let logs = temp_dir("access-file-logs");
        let path = logs.join("access.log");
        let p = path.to_str().unwrap();
        let srv = Srv::start(b, &root, &["--access-log", p]);
        let lines = |p: &Path| -> Vec<String> {
            std::fs::read_to_string(p)
                .map(|s| s.lines().map(String::from).collect())
                .unwrap_or_default()
        };
        for _ in 0..3 {
            assert_eq!(get(srv.addr, "/f").status, 200);
        }
        assert!(eventually(Duration::from_secs(5), || lines(&path).len() == 3), "[{b}]");
        assert!(lines(&path).iter().all(|l| l.contains("\"GET /f HTTP/1.1\" 200 1 ")));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "[{b}] mode {mode:o}");
        // logrotate: rename, then signal. The stats lines follow the reopen.
        let rotated = logs.join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        srv.signal(libc::SIGUSR1);
        let reopened = eventually(Duration::from_secs(5), || {
            srv.log().iter().any(|l| l.starts_with("ringserve: stats "))
        });
        assert!(reopened, "[{b}] no stats after SIGUSR1: {:?}", srv.log());
        for _ in 0..2 {
            assert_eq!(get(srv.addr, "/f").status, 200);
        }
        assert!(eventually(Duration::from_secs(5), || lines(&path).len() == 2), "[{b}]");
        assert_eq!(lines(&rotated).len(), 3, "[{b}] the rotated file grew");
        remove_temp_tree(&logs);
    }

    /// `--log-level error`: the startup line still comes (tools wait for it), routine
    /// lines do not, errors do.
    fn log_level_error_keeps_the_banner_and_the_errors_only(b) {
        let root = temp_dir("level");
        std::os::unix::fs::symlink("/etc/hostname", root.join("out")).unwrap();
        let srv = Srv::start(b, &root, &["--log-level", "error", "--stats-interval", "1"]);
        assert!(srv.banner.starts_with("ringserve: serving "), "{}", srv.banner);
        // A symlink out of the root: 403 (EXDEV), whoever runs the server.
        assert_eq!(get(srv.addr, "/out").status, 403);
        srv.signal(libc::SIGUSR1);
        let said = eventually(Duration::from_secs(5), || !causes(&srv.log(), "/out").is_empty());
        assert!(said, "[{b}] {:?}", srv.log());
        std::thread::sleep(Duration::from_millis(2500));
        let log = srv.log();
        assert!(!log.iter().any(|l| l.contains("stats")), "[{b}] info lines at error: {log:?}");
        assert_eq!(log.len(), 1, "[{b}] {log:?}");
    }

    /// Under journald (stderr is the stream JOURNAL_STREAM names) every line starts
    /// with its syslog priority; on another stderr, none does.
    fn journald_gets_each_lines_priority(b) {
        let root = temp_dir("journal");
        std::os::unix::fs::symlink("/etc/hostname", root.join("out")).unwrap();
        // The "journal": a file the server's stderr is, named by its device and inode.
        let dir = temp_dir("journal-stream");
        let stream = dir.join("stderr");
        let file = std::fs::File::create(&stream).unwrap();
        let meta = file.metadata().unwrap();
        let mut child = Command::new(bin())
            .arg("serve")
            .arg(&root)
            .args(["--backend", b, "--listen", "127.0.0.1:0"])
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let read = || -> Vec<String> {
            let f = std::fs::File::open(&stream).unwrap();
            BufReader::new(f).lines().map(Result::unwrap).collect()
        };
        assert!(eventually(Duration::from_secs(10), || !read().is_empty()), "[{b}] no banner");
        let banner = read()[0].clone();
        assert!(banner.starts_with("<5>ringserve: serving "), "[{b}] {banner}");
        let addr = parse_addrs(&banner)[0];
        assert_eq!(get(addr, "/out").status, 403);
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
        let has = |prefix: &str| read().iter().any(|l| l.starts_with(prefix));
        let all = eventually(Duration::from_secs(5), || {
            has("<3>ringserve: open() \"/out\" failed") && has("<6>ringserve: stats ")
        });
        assert!(all, "[{b}] {:?}", read());
        // SAFETY: as above.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(child.wait().unwrap().code(), Some(0));
        let log = read();
        assert!(log.iter().any(|l| l == "<5>ringserve: shutting down"), "[{b}] {log:?}");
        assert!(log.iter().all(|l| l.starts_with('<')), "[{b}] {log:?}");
        remove_temp_tree(&dir);

        // The same variable with another stderr (a pipe): no prefix.
        let srv = Srv::start_cmd(b, &root, &[], |c| {
            c.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        });
        assert!(srv.banner.starts_with("ringserve: serving "), "[{b}] {}", srv.banner);
    }
}

backend_test! {
    /// Running out of descriptors at accept is one episode: one warning as it starts,
    /// however many accepts fail, and one, with their count, once it is over.
    fn an_emfile_episode_is_said_once_as_it_starts_and_once_as_it_ends(b) {
        let root = temp_dir("emfile-log");
        std::fs::write(root.join("small"), "small").unwrap();
        let srv = Srv::start(b, &root, &[]);
        assert_eq!(get(srv.addr, "/small").status, 200);
        srv.set_nofile(srv.fd_count() as u64 + 4);
        let conns: Vec<_> = (0..40)
            .filter_map(|_| TcpStream::connect(srv.addr).ok())
            .collect();
        let starts = |log: &[String]| {
            log.iter()
                .filter(|l| l.starts_with("ringserve: accept: ") && l.contains("refused or wait"))
                .count()
        };
        let ends = |log: &[String]| {
            log.iter()
                .filter(|l| l.starts_with("ringserve: accept: descriptors available again after "))
                .count()
        };
        // Whether the kernel refused any accept: io_uring's accept does not always
        // heed a limit lowered from outside (prlimit) once the ring is running.
        std::thread::sleep(Duration::from_millis(300));
        srv.signal(libc::SIGUSR1);
        let emfile = |log: &[String]| {
            log.iter()
                .filter(|l| l.starts_with("ringserve: stats accepts="))
                .find_map(|l| l.split(' ').find_map(|w| w.strip_prefix("accept_emfile=")))
                .map(|n| n.parse::<u64>().unwrap())
        };
        assert!(eventually(Duration::from_secs(5), || emfile(&srv.log()).is_some()));
        if emfile(&srv.log()) == Some(0) {
            let why = "no accept met EMFILE here after prlimit lowered RLIMIT_NOFILE";
            skip(&test_name(), why);
            return;
        }
        assert!(eventually(Duration::from_secs(5), || starts(&srv.log()) == 1), "[{b}] {:?}", srv.log());
        std::thread::sleep(Duration::from_millis(300));
        drop(conns);
        srv.set_nofile(20000);
        // Over once a second has passed without a failure and an accept succeeds.
        std::thread::sleep(Duration::from_millis(1200));
        let ended = eventually(Duration::from_secs(5), || {
            let _ = try_get(srv.addr, "/small");
            ends(&srv.log()) == 1
        });
        let log = srv.log();
        assert!(ended, "[{b}] {log:?}");
        assert_eq!(starts(&log), 1, "[{b}] {log:?}");
        let episode = log.iter().filter(|l| l.starts_with("ringserve: accept: ")).count();
        assert_eq!(episode, 2, "[{b}] {log:?}");
    }
}
