//! Tests specific to the io_uring backend: buffer exhaustion, bounded pipes, shutdown
//! with splices in flight, and a low RLIMIT_MEMLOCK. Each is `NAME::uring`, and prints
//! `SKIP NAME::uring: why` where io_uring cannot run. They share one lock: two of them
//! count this process's fds.

mod common;
use common::*;
use ringserve::probe::BackendRequest;
use ringserve::proto::http1::{HttpConfig, HttpFactory};
use ringserve::{Config, NoHooks, Server};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's descriptors, as `number->target`.
fn fds() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some(format!(
                "{}->{}",
                e.file_name().to_string_lossy(),
                target.display()
            ))
        })
        .collect()
}

/// An in-process HTTP server on the uring backend.
fn start(cfg: Config) -> Server {
    let factory = HttpFactory::new(HttpConfig::default());
    Server::start(cfg, factory, Arc::new(NoHooks)).unwrap()
}

fn config(root: &std::path::Path) -> Config {
    let mut cfg = Config::new(root);
    cfg.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.backend = BackendRequest::Uring;
    cfg
}

uring_test! {
    fn buffer_exhaustion_delays_reads_but_loses_nothing() {
        let _g = serial();
        raise_nofile();
        let root = temp_dir("enobufs");
        let body = pattern(7, 3000);
        std::fs::write(root.join("f"), &body).unwrap();
        let mut cfg = config(&root);
        cfg.uring_buffers = 1; // one 4 KiB buffer per ring for every connection
        let srv = start(cfg);
        let addr = srv.local_addrs()[0];
        let clients: Vec<_> = (0..200)
            .map(|_| {
                let s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                s
            })
            .collect();
        // Everyone sends at once, so receives complete in batches larger than the buffers.
        let reqs = "GET /f HTTP/1.1\r\nHost: t\r\n\r\n".repeat(10);
        for mut s in &clients {
            s.write_all(reqs.as_bytes()).unwrap();
        }
        for s in clients {
            let mut r = BufReader::new(s);
            for _ in 0..10 {
                let resp = read_resp(&mut r, false).unwrap();
                assert_eq!(resp.status, 200);
                assert!(resp.body == body, "a response lost or mangled bytes");
            }
        }
        let st = srv.stats();
        srv.shutdown();
        remove_temp_tree(&root);
        if ringserve::probe::probe()
            .uring
            .uses(ringserve::probe::Optional::BufRing)
        {
            assert!(
                st.recv_enobufs > 0,
                "the test never ran out of buffers: {st}"
            );
        } else {
            skip(
                &format!("{} (its ENOBUFS check)", test_name()),
                "no provided-buffer ring here (per-connection buffers cannot run out)",
            );
        }
    }
}

uring_test! {
    fn shutdown_with_splices_in_flight_leaks_no_pipes_or_fds() {
        let _g = serial();
        let root = temp_dir("splice-stop");
        std::fs::File::create(root.join("big"))
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        // The harness may hold pipes of its own (output capture, cargo's jobserver).
        let (before, pipes_before) = (fds(), pipe_fds());
        let mut cfg = config(&root);
        cfg.shutdown_timeout = Duration::from_millis(500);
        let srv = start(cfg);
        let addr = srv.local_addrs()[0];
        let clients: Vec<TcpStream> = (0..8)
            .map(|_| {
                let s = TcpStream::connect(addr).unwrap();
                ringserve::sys::net::set_rcvbuf(s.as_fd(), 4096).unwrap();
                (&s).write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                s
            })
            .collect();
        let piped = eventually(Duration::from_secs(5), || srv.stats().bytes_splice > 0);
        assert!(piped, "no splice in flight: {}", srv.stats());
        assert!(
            pipe_fds() > pipes_before,
            "the stalled sends hold no pipes?"
        );
        let t = Instant::now();
        srv.shutdown();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "shutdown took {:?}",
            t.elapsed()
        );
        assert_eq!(pipe_fds(), pipes_before, "pipes left after shutdown");
        drop(clients);
        // New descriptors are leaks; ones other tests' threads closed meanwhile are not.
        let new: Vec<String> = fds().difference(&before).cloned().collect();
        assert!(
            new.is_empty(),
            "descriptors leaked across a server's life: {new:?}"
        );
        remove_temp_tree(&root);
    }
}

fn pipe_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("pipe:"))
        .count()
}

uring_test! {
    fn thousands_of_connections_do_not_exhaust_pipes() {
        let _g = serial();
        raise_nofile();
        let root = temp_dir("many-pipes");
        let body = pattern(4, 100_000); // above the 64 KiB copy threshold: spliced
        std::fs::write(root.join("f"), &body).unwrap();
        // The responses are read one connection after another; under emulation the last
        // ones wait longer than the default send timeout, which would rightly abort them.
        // Pipes are the splice path's: without cachestat the ring splices every large
        // body, where with it a cached body goes by sendfile first and needs a pipe only
        // for what the socket did not take (the ring's unit tests cover that handover).
        let srv = Srv::start_cmd("uring", &root, &["--send-timeout", "300s"], |c| {
            // Added to what the environment turns off (the matrix's host-nofeat cell).
            let off = std::env::var("RINGSERVE_URING_DISABLE").unwrap_or_default();
            c.env("RINGSERVE_URING_DISABLE", format!("{off},cachestat"));
        });
        let pipes_of = |pid: u32| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("pipe:"))
                .count()
        };
        // The server's own pipes (its stderr) are not the pool's.
        let baseline = pipes_of(srv.pid());
        let conns: Vec<TcpStream> = (0..2000)
            .map(|_| {
                let s = srv.connect();
                // Kept alive: 2000 closed sockets holding queued responses would be orphans,
                // and a small (2 GiB) guest resets orphans beyond its TCP memory limits.
                (&s).write_all(b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                s
            })
            .collect();
        let held = || pipes_of(srv.pid()).saturating_sub(baseline);
        // The stalled senders splice, so they hold pipes: none would mean no splicing.
        assert!(
            eventually(Duration::from_secs(10), || held() > 0),
            "no pipe held while 2000 senders are stalled: nothing is spliced?"
        );
        // 32 pipes per ring at most, two descriptors each (plus nothing else is a pipe),
        // all the while the senders stay stalled.
        let rings = std::thread::available_parallelism().map_or(2, |n| n.get());
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(500) {
            let held = held();
            assert!(held <= 2 * 32 * rings, "{held} pipe fds for 2000 senders");
            std::thread::sleep(Duration::from_millis(25));
        }
        for s in conns {
            let mut r = BufReader::new(s);
            let resp = read_resp(&mut r, false).unwrap();
            assert!(resp.body == body, "a body arrived wrong");
        }
        // And the bodies went out by splice: the running totals SIGUSR1 prints
        // (`ringserve: stats accepts=.. bytes_splice=N ..`) count spliced bytes.
        let spliced = || {
            srv.log()
                .iter()
                .filter_map(|l| l.strip_prefix("ringserve: stats accepts="))
                .flat_map(|l| l.split(' '))
                .filter_map(|kv| kv.strip_prefix("bytes_splice="))
                .map(|n| n.parse::<u64>().unwrap())
                .max()
        };
        srv.signal(libc::SIGUSR1);
        assert!(
            eventually(Duration::from_secs(5), || spliced().is_some()),
            "SIGUSR1 printed no running total: {:#?}",
            srv.log()
        );
        let spliced = spliced().unwrap();
        assert!(spliced > 0, "no body byte was spliced: bytes_splice={spliced}");
    }
}

uring_test! {
    fn a_low_memlock_limit_gives_a_clear_error_or_a_fallback_not_a_crash() {
        let _g = serial();
        let root = temp_dir("memlock");
        std::fs::write(root.join("x"), "x").unwrap();
        let lower = |c: &mut std::process::Command| {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only this child.
            unsafe {
                c.pre_exec(|| {
                    let rl = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                })
            };
        };
        // auto: serves, on whichever backend the limit allows, and says which.
        let mut srv = Srv::start_cmd("auto", &root, &[], lower);
        assert!(srv.banner.contains("backend "), "{}", srv.banner);
        assert_eq!(get(srv.addr, "/x").body, b"x");
        assert_eq!(srv.stop_with(libc::SIGTERM), Some(0));
        // uring forced: serves, or exits 2 naming RLIMIT_MEMLOCK; never a crash.
        let mut cmd = std::process::Command::new(bin());
        cmd.args([
            "serve",
            root.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "uring",
        ]);
        lower(&mut cmd);
        let mut child = cmd
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut BufReader::new(child.stderr.take().unwrap()), &mut line)
            .unwrap();
        if line.contains("serving") {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            assert_eq!(child.wait().unwrap().code(), Some(0));
        } else {
            let t = Instant::now();
            let status = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break st;
                }
                if t.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    panic!("neither served nor exited: {line}");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert_eq!(status.code(), Some(2), "{line}");
            assert!(line.contains("RLIMIT_MEMLOCK"), "{line}");
        }
        assert!(!line.contains("panicked"), "{line}");
    }
}

uring_test! {
    /// Requests that arrive one by one while a large response is still being sent:
    /// with a multishot receive they complete during the send and are parked (and past
    /// PARK_MAX the receive is paused); either way every response comes back whole and
    /// in order, and the next request waits for the previous response (promise 2).
    fn requests_arriving_during_a_send_are_held_in_order() {
        let _g = serial();
        let root = temp_dir("parked");
        let big = pattern(3, 1 << 20);
        std::fs::write(root.join("big"), &big).unwrap();
        std::fs::write(root.join("small"), "small").unwrap();
        let mut cfg = config(&root);
        cfg.sndbuf = 4096;
        cfg.uring_threads = 1;
        cfg.uring_multishot_recv = true;
        let srv = start(cfg);
        let mut s = TcpStream::connect(srv.local_addrs()[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        // Not reading: the 1 MiB response stalls in the socket buffers. Each request
        // below is its own segment, arriving while that send is in flight.
        let paths = ["/small", "/big", "/small", "/small", "/big", "/small"];
        for p in paths {
            std::thread::sleep(Duration::from_millis(30));
            write!(s, "GET {p} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        }
        let mut r = BufReader::new(s);
        for p in std::iter::once("/big").chain(paths) {
            let resp = read_resp(&mut r, false).unwrap();
            assert_eq!(resp.status, 200, "{p}");
            let want: &[u8] = if p == "/big" { &big } else { b"small" };
            assert!(resp.body == want, "{p}: body differs");
        }
        let st = srv.stats();
        eprintln!("{st}");
        if ringserve::probe::probe()
            .uring
            .has(ringserve::probe::Optional::MultishotRecv)
        {
            assert!(st.recv_parked >= 2, "nothing was parked: {st}");
            assert!(st.recv_paused >= 1, "the receive was never paused: {st}");
        } else {
            skip(
                &format!("{} (its parked and paused checks)", test_name()),
                "no multishot receive here",
            );
        }
        srv.shutdown();
    }
}

/// CPU ticks (user + system) of this process's thread named `name`.
fn thread_ticks(name: &str) -> Option<u64> {
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = e.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() == name {
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
            return Some(f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?);
        }
    }
    None
}

uring_test! {
    /// B2: a receive that keeps finding every provided buffer in use waits for one to
    /// be recycled, or for the tick, instead of re-arming every loop turn (3.35
    /// million ENOBUFS completions in 3 s before). Two buffers, both held by a
    /// multishot receive's parked input while its connection's response stalls; a
    /// second connection then starves. Its ring must stay nearly idle, and it is
    /// served once the buffers come back.
    fn a_starved_receive_waits_for_a_buffer_without_spinning() {
        let _g = serial();
        let multishot = ringserve::probe::probe()
            .uring
            .has(ringserve::probe::Optional::MultishotRecv);
        let buf_ring = ringserve::probe::probe()
            .uring
            .uses(ringserve::probe::Optional::BufRing);
        if !(multishot && buf_ring) {
            return skip(
                "a_starved_receive_waits_for_a_buffer_without_spinning::uring",
                "needs a provided-buffer ring and multishot receive to hold a buffer",
            );
        }
        let root = temp_dir("starve");
        let big = pattern(3, 4 << 20);
        std::fs::write(root.join("big"), &big).unwrap();
        std::fs::write(root.join("small"), "small").unwrap();
        let mut cfg = config(&root);
        cfg.sndbuf = 4096;
        cfg.uring_threads = 1;
        cfg.uring_buffers = 2;
        cfg.uring_multishot_recv = true;
        let srv = start(cfg);
        let addr = srv.local_addrs()[0];
        // A: a 4 MiB response it does not read, then two requests that arrive while
        // that response is stalled, one at a time: parked, with the ring's two
        // buffers. (Some kernels, 6.1 among them, pick a buffer before they look for
        // data, so a single buffer would end the multishot receive instead.)
        let a = TcpStream::connect(addr).unwrap();
        (&a).write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert!(eventually(Duration::from_secs(5), || srv.stats().responses >= 1));
        for n in 1..=2 {
            (&a).write_all(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            assert!(
                eventually(Duration::from_secs(5), || srv.stats().recv_parked >= n),
                "request {n} was not parked: {}",
                srv.stats()
            );
        }
        // B: finds no buffer.
        let mut b = TcpStream::connect(addr).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        b.write_all(b"GET /small HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert!(
            eventually(Duration::from_secs(5), || srv.stats().recv_enobufs >= 1),
            "B never ran out of buffers: {}",
            srv.stats()
        );
        let (ticks, enobufs) = (thread_ticks("ringserve-ring0").unwrap(), srv.stats().recv_enobufs);
        std::thread::sleep(Duration::from_secs(1));
        let ticks = thread_ticks("ringserve-ring0").unwrap() - ticks;
        let enobufs = srv.stats().recv_enobufs - enobufs;
        eprintln!("starved for 1 s: {ticks} ticks of ring CPU, {enobufs} ENOBUFS");
        assert!(ticks <= 10, "the ring spun: {ticks} ticks in 1 s");
        assert!(enobufs <= 30, "{enobufs} ENOBUFS in 1 s: re-armed in a loop");
        // A reads everything: its parked input is delivered, the buffers recycled,
        // and B is served.
        let mut ra = BufReader::new(a);
        assert!(read_resp(&mut ra, false).unwrap().body == big);
        assert_eq!(read_resp(&mut ra, false).unwrap().body, b"small");
        assert_eq!(read_resp(&mut ra, false).unwrap().body, b"small");
        let resp = read_resp(&mut BufReader::new(&mut b), false).unwrap();
        assert_eq!(resp.body, b"small");
        srv.shutdown();
        remove_temp_tree(&root);
    }
}

uring_test! {
    /// INVARIANTS: idle io_uring connections hold no receive buffer where a
    /// provided-buffer ring exists. 1,000 connections, each with a receive armed and
    /// no request, then a client served: no per-connection buffer was ever made.
    fn idle_connections_hold_no_receive_buffer() {
        let _g = serial();
        raise_nofile();
        let root = temp_dir("idle-bufs");
        std::fs::write(root.join("f"), "f").unwrap();
        let mut cfg = config(&root);
        cfg.uring_buffers = 1;
        let srv = start(cfg);
        let addr = srv.local_addrs()[0];
        let idle: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert!(eventually(Duration::from_secs(10), || srv.stats().accepts == 1000));
        assert_eq!(get(addr, "/f").body, b"f");
        let st = srv.stats();
        if ringserve::probe::probe()
            .uring
            .uses(ringserve::probe::Optional::BufRing)
        {
            assert_eq!(st.recv_buf_allocs, 0, "idle connections got buffers: {st}");
            assert_eq!(st.recv_enobufs, 0, "the one buffer was held: {st}");
        } else {
            skip(
                "idle_connections_hold_no_receive_buffer::uring",
                "no provided-buffer ring here: receives use per-connection buffers",
            );
            assert!(st.recv_buf_allocs >= 1000, "{st}");
        }
        drop(idle);
        srv.shutdown();
        remove_temp_tree(&root);
    }
}
