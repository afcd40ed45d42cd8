//! The ring's own paths, driven one turn at a time on a real ring with socketpairs for
//! connections: a stale completion through `complete`, teardown with operations armed,
//! and a close request while an open is in the kernel.

use super::*;
use crate::backend::{Control, Ctx, NoHooks};
use crate::config::Config;
use crate::fs::Root;
use crate::proto::echo::EchoFactory;
use crate::proto::http1::{HttpConfig, HttpFactory};
use crate::stats::StatsHub;
use io_uring::opcode;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// A served directory for one test, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("ringserve-ring-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The context a ring is started with, with multishot receive off as it is by default.
fn shared<F: ProtocolFactory>(factory: F, root: &Dir, mut caps: Caps) -> Shared<F> {
    caps.multishot_recv = false;
    Shared {
        ctx: Ctx {
            cfg: Config::new(&root.0),
            listeners: Vec::new().into(),
            root: Root::open(&root.0).unwrap(),
            factory,
            hooks: Arc::new(NoHooks),
            stats: Arc::new(StatsHub::default()),
            control: Arc::new(Control::default()),
            replaced: Default::default(),
        },
        caps,
    }
}

/// A ring, or `None` (with the reason written where a plain `cargo test` shows it)
/// where io_uring cannot run.
fn ring() -> Option<IoUring> {
    match IoUring::new(64) {
        Ok(r) => Some(r),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIP ring unit test: io_uring_setup: {e}"
            );
            None
        }
    }
}

/// Adds a connection on one end of a socketpair; returns its key and the other end.
fn connect<F: ProtocolFactory>(
    io: &mut Io<'_, F>,
    conns: &mut Conns<F::Proto>,
) -> (Key, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (
        add_conn(io, conns, ours.into(), "192.0.2.9:1".parse().unwrap()),
        theirs,
    )
}

/// Puts a connection on `fd` from `peer` into the table; returns its key.
fn add_conn<F: ProtocolFactory>(
    io: &mut Io<'_, F>,
    conns: &mut Conns<F::Proto>,
    fd: std::os::fd::OwnedFd,
    peer: std::net::SocketAddr,
) -> Key {
    let key = conns.vacant_key();
    let core = Core::new(io.sh.ctx.factory.new_conn(peer), peer, io.now);
    let k = conns.insert(Box::new(Conn::new(fd, core)));
    assert_eq!(k, key);
    key
}

/// Adds a connection on the server's end of a loopback TCP connection (for what only
/// TCP has, such as TCP_CORK); returns its key and the peer's end.
fn connect_tcp<F: ProtocolFactory>(
    io: &mut Io<'_, F>,
    conns: &mut Conns<F::Proto>,
) -> (Key, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let theirs = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, peer) = l.accept().unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (add_conn(io, conns, ours.into(), peer), theirs)
}

/// This process's descriptors open on `path`.
fn open_on(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l == path)
        .count()
}

/// Turns the ring until `done` or 5 s.
fn turn_until<F: ProtocolFactory>(
    io: &mut Io<'_, F>,
    conns: &mut Conns<F::Proto>,
    mut done: impl FnMut(&mut Io<'_, F>, &mut Conns<F::Proto>) -> bool,
) -> bool {
    let limit = Instant::now() + Duration::from_secs(5);
    let mut cqes = Vec::new();
    while Instant::now() < limit {
        if done(io, conns) {
            return true;
        }
        if io.inflight == 0 && io.backlog.is_empty() {
            return done(io, conns);
        }
        io.turn(conns, &mut cqes).unwrap();
    }
    false
}

/// A completion still in flight for a connection that left the table comes back with
/// the old key. It goes through the real completion path: it is dropped and counted,
/// its provided buffer goes back to the kernel (a later receive still finds one), and
/// an opened descriptor it carries is closed.
#[test]
fn a_stale_completion_through_complete_gives_back_its_buffer_and_descriptor() {
    let Some(r) = ring() else { return };
    let dir = Dir::new("stale");
    let caps = Caps::from_probe();
    let sh = shared(EchoFactory, &dir, caps);
    let inbox = Notifier::new().unwrap();
    let bufs = match caps.buf_ring {
        true => Some(BufRing::register(&r, 1, recv::RECV_BUF).unwrap()),
        false => None,
    };
    let st = Arc::new(Stats::default());
    let mut io = Io::new(&sh, &inbox, 0, r, Vec::new(), bufs, st.clone());
    let mut conns: Conns<crate::proto::echo::Echo> = ConnTable::shard(4, 0);
    let target = dir.0.join("opened-by-a-stale-openat");
    std::fs::write(&target, "").unwrap();
    let target = target.canonicalize().unwrap();
    let path = std::ffi::CString::new(target.to_str().unwrap()).unwrap();

    // A receive armed, then its connection gone from the table (as if retired early).
    let (old, mut old_peer) = connect(&mut io, &mut conns);
    let conn = conns.get_mut(old).unwrap();
    io.arm_recv(old, conn);
    let gone = conns.remove(old).unwrap();
    old_peer.write_all(b"x").unwrap();
    // And an open that names the same retired key.
    let e = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
        .flags(libc::O_RDONLY | libc::O_CLOEXEC)
        .build()
        .user_data(Op::Open.ud(old.to_u64()));
    // SAFETY: the path lives until the end of the test, past this CQE; OPENAT names
    // no other memory.
    unsafe { io.push(&[e]) };
    assert!(turn_until(&mut io, &mut conns, |io, _| io.inflight == 0));
    assert_eq!(
        st.stale_dropped.load(Ordering::Relaxed),
        2,
        "both were stale"
    );
    assert_eq!(
        open_on(&target),
        0,
        "the stale OPENAT's descriptor was not closed"
    );
    drop(gone);
    drop(old_peer);

    // The one provided buffer came back: a new connection's receive gets it.
    let (key, mut peer) = connect(&mut io, &mut conns);
    let conn = conns.get_mut(key).unwrap();
    io.drive(key, conn);
    peer.write_all(b"echo").unwrap();
    let mut got = [0u8; 4];
    let done = turn_until(&mut io, &mut conns, |_, _| {
        peer.set_nonblocking(true).unwrap();
        let ok = matches!(peer.read(&mut got), Ok(4));
        peer.set_nonblocking(false).unwrap();
        ok
    });
    assert!(done && &got == b"echo", "the new connection was not served");
    assert_eq!(
        st.recv_enobufs.load(Ordering::Relaxed),
        0,
        "the buffer was lost"
    );
    io.teardown(&mut conns);
}

/// B3 and B4: whatever way the loop ends, teardown cancels every operation still in
/// the kernel (here a receive into a per-connection buffer, the tick and the wakeup
/// READ), reaps until none is left within its bound, and only then closes and drops
/// the connections.
#[test]
fn teardown_drains_every_armed_operation_before_the_table_goes() {
    let Some(r) = ring() else { return };
    let dir = Dir::new("teardown");
    let mut caps = Caps::from_probe();
    caps.buf_ring = false; // per-connection buffers: the memory at stake
    let sh = shared(EchoFactory, &dir, caps);
    let inbox = Notifier::new().unwrap();
    let st = Arc::new(Stats::default());
    let mut io = Io::new(&sh, &inbox, 0, r, Vec::new(), None, st.clone());
    let mut conns: Conns<crate::proto::echo::Echo> = ConnTable::shard(4, 0);
    io.arm_tick();
    io.arm_wake();
    let mut peers = Vec::new();
    for _ in 0..3 {
        let (key, peer) = connect(&mut io, &mut conns);
        let conn = conns.get_mut(key).unwrap();
        io.drive(key, conn); // Echo asks to receive: a RECV into its own buffer
        assert_ne!(conn.ops & Op::Recv.bit(), 0);
        assert!(conn.recv_buf.is_some());
        peers.push(peer);
    }
    io.flush_backlog();
    let _ = io.ring.submit();
    assert!(
        io.inflight >= 5,
        "tick, wake and three receives in the kernel"
    );
    let t = Instant::now();
    io.teardown(&mut conns);
    assert!(t.elapsed() < lifecycle::TEARDOWN_LIMIT + Duration::from_millis(500));
    assert_eq!(io.inflight, 0, "an operation was left in the kernel");
    assert!(conns.is_empty(), "the connections were not closed");
    for mut p in peers {
        let mut b = [0u8; 1];
        assert_eq!(p.read(&mut b).unwrap(), 0, "the socket was not closed");
    }
}

/// B10: a `Control::close` that arrives while the request's open is in the kernel
/// still gets the response sent, then the close.
#[test]
fn a_close_asked_during_an_open_on_the_ring_still_answers_first() {
    let Some(r) = ring() else { return };
    let caps = Caps::from_probe();
    if !caps.openat2 {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP a_close_asked_during_an_open_on_the_ring_still_answers_first: no OPENAT2 on the ring here"
        );
        return;
    }
    let dir = Dir::new("close-open");
    std::fs::write(dir.0.join("f"), "the body").unwrap();
    let sh = shared(HttpFactory::new(HttpConfig::default()), &dir, caps);
    let inbox = Notifier::new().unwrap();
    let st = Arc::new(Stats::default());
    let mut io = Io::new(&sh, &inbox, 0, r, Vec::new(), None, st);
    let mut conns = ConnTable::shard(4, 0);
    let (key, mut peer) = connect(&mut io, &mut conns);
    let conn = conns.get_mut(key).unwrap();
    io.drive(key, conn);
    peer.write_all(b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let opening = |_: &mut Io<'_, _>, c: &mut Conns<_>| {
        c.get(key)
            .is_some_and(|c| c.ops & (Op::Open.bit() | Op::Stat.bit()) != 0)
    };
    assert!(
        turn_until(&mut io, &mut conns, opening),
        "the open never went to the ring"
    );
    io.close_asked(&mut conns, key);
    assert!(turn_until(&mut io, &mut conns, |_, c| c.is_empty()));
    let mut got = String::new();
    peer.read_to_string(&mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got:?}");
    assert!(got.ends_with("\r\n\r\nthe body"), "{got:?}");
    io.teardown(&mut conns);
}

/// ETags come from dev/ino/size/mtime: STATX on the ring and the fstat fallback
/// must agree on every one of them.
#[test]
fn statx_and_fstat_give_the_same_metadata() {
    let f = std::fs::File::open("/proc/self/exe").unwrap();
    let stx = crate::sys::fs::statx(std::os::fd::AsFd::as_fd(&f)).unwrap();
    assert_eq!(
        crate::fs::meta_of_statx(&stx),
        crate::fs::meta_of(&f).unwrap()
    );
}

/// One response from `peer`: its head and a Content-Length body.
fn read_response(peer: &mut impl Read) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(got[..end + 4].to_vec()).unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .expect("a Content-Length")
                .parse()
                .unwrap();
            if got.len() >= end + 4 + len {
                return (head, got[end + 4..end + 4 + len].to_vec());
            }
        }
        let n = peer.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed mid-response: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// A small body READ whole through a cached handle is kept by the handle: the next
/// response of the same file goes from memory, with no READ. A rewrite the cache sees
/// (here the size changes) brings a new handle, read again: nothing stale is sent.
#[test]
fn a_small_body_read_once_is_sent_from_memory_until_the_file_changes() {
    let Some(r) = ring() else { return };
    let dir = Dir::new("kept-body");
    std::fs::write(dir.0.join("f"), "the first body").unwrap();
    let mut sh = shared(
        HttpFactory::new(HttpConfig::default()),
        &dir,
        Caps::from_probe(),
    );
    // An entry that expires between two GETs (a slow host) would be opened again and
    // keep nothing: only a change of the file may bring a new handle here.
    sh.ctx.cfg.open_file_cache_valid = Duration::from_secs(3600);
    let inbox = Notifier::new().unwrap();
    let st = Arc::new(Stats::default());
    let mut io = Io::new(&sh, &inbox, 0, r, Vec::new(), None, st.clone());
    let mut conns = ConnTable::shard(4, 0);
    let (key, mut peer) = connect(&mut io, &mut conns);
    let conn = conns.get_mut(key).unwrap();
    io.drive(key, conn);
    let mut get = |io: &mut Io<'_, _>, conns: &mut Conns<_>, want: &str| {
        peer.write_all(b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let before = st.responses.load(Ordering::Relaxed);
        let answered = |_: &mut Io<'_, _>, c: &mut Conns<_>| {
            st.responses.load(Ordering::Relaxed) > before
                && c.get(key).is_some_and(|c| c.send.is_none())
        };
        assert!(turn_until(io, conns, answered), "no response");
        let (head, body) = read_response(&mut peer);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
        assert_eq!(String::from_utf8(body).unwrap(), want);
        st.bodies_kept.load(Ordering::Relaxed)
    };
    assert_eq!(
        get(&mut io, &mut conns, "the first body"),
        0,
        "read, then kept"
    );
    assert_eq!(get(&mut io, &mut conns, "the first body"), 1, "from memory");
    std::fs::write(dir.0.join("f"), "a second, longer body").unwrap();
    assert_eq!(
        get(&mut io, &mut conns, "a second, longer body"),
        1,
        "read again"
    );
    assert_eq!(
        get(&mut io, &mut conns, "a second, longer body"),
        2,
        "and kept"
    );
    io.teardown(&mut conns);
}

/// A large body the page cache holds goes with sendfile on the ring thread until the
/// socket is full, and the rest is spliced: both counters move, and every byte arrives
/// in order; with the pipe pool at its bound the rest is copied instead. Only once a
/// body of the handle went out whole: the first response is all spliced (its pages may
/// still be being read). Without cachestat (kernels before 6.5, or
/// `RINGSERVE_URING_DISABLE`) every body is spliced.
#[test]
fn a_cached_large_body_goes_by_sendfile_until_the_socket_fills_then_by_splice() {
    let Some(_) = ring() else { return };
    if !Caps::from_probe().cachestat {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP its sendfile half: no cachestat(2) here (before 6.5, or filtered)"
        );
    }
    let dir = Dir::new("sendfile-hot");
    // 4 MiB: more than a socketpair's send buffer, so the socket fills mid-body.
    let body: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.0.join("big"), &body).unwrap();
    // (cachestat, pipes): the pool at its bound (no pipe) makes the rest a copy.
    for (cachestat, pipes) in [(true, true), (true, false), (false, true)] {
        let mut caps = Caps::from_probe();
        if cachestat && !caps.cachestat {
            continue;
        }
        caps.cachestat = cachestat;
        let sh = shared(HttpFactory::new(HttpConfig::default()), &dir, caps);
        let inbox = Notifier::new().unwrap();
        let st = Arc::new(Stats::default());
        let r = ring().unwrap();
        let mut io = Io::new(&sh, &inbox, 0, r, Vec::new(), None, st.clone());
        if !pipes {
            io.pipes = PipePool::new(0);
        }
        let mut conns = ConnTable::shard(4, 0);
        let (key, peer) = connect(&mut io, &mut conns);
        let conn = conns.get_mut(key).unwrap();
        io.drive(key, conn);
        let mut peer = Some(peer);
        // Each GET: the bytes that went by sendfile and the other way.
        let mut get = |io: &mut Io<'_, _>, conns: &mut Conns<_>| {
            let mut p = peer.take().unwrap();
            p.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let before = (
                st.responses.load(Ordering::Relaxed),
                st.bytes_sendfile.load(Ordering::Relaxed),
                st.bytes_splice.load(Ordering::Relaxed),
                st.bytes_copy.load(Ordering::Relaxed),
            );
            let reader = std::thread::spawn(move || {
                let r = read_response(&mut p);
                (r, p)
            });
            let answered = |_: &mut Io<'_, _>, c: &mut Conns<_>| {
                st.responses.load(Ordering::Relaxed) > before.0
                    && c.get(key).is_some_and(|c| c.send.is_none())
            };
            assert!(turn_until(io, conns, answered), "no response");
            let ((head, got), p) = reader.join().unwrap();
            peer = Some(p);
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
            assert!(
                got == body,
                "the body arrived changed ({} bytes)",
                got.len()
            );
            let sendfile = st.bytes_sendfile.load(Ordering::Relaxed) - before.1;
            // The rest: spliced, or copied (less the head) when no pipe could be had.
            let rest = match pipes {
                true => st.bytes_splice.load(Ordering::Relaxed) - before.2,
                false => st.bytes_copy.load(Ordering::Relaxed) - before.3 - head.len() as u64,
            };
            assert_eq!(sendfile + rest, body.len() as u64, "{sendfile} + {rest}");
            (sendfile, rest)
        };
        let (first, _) = get(&mut io, &mut conns);
        assert_eq!(
            first, 0,
            "the first body of a handle is never sent by sendfile"
        );
        let (sendfile, rest) = get(&mut io, &mut conns);
        if cachestat {
            assert!(sendfile > 0, "nothing went by sendfile");
            assert!(sendfile <= 4 << 20, "at most the budget per turn");
            assert!(
                rest > 0,
                "the socket never filled: nothing went the other way"
            );
        } else {
            assert_eq!(sendfile, 0, "sendfile without cachestat");
        }
        io.teardown(&mut conns);
    }
}

/// A body of at least CORK_MIN goes under TCP_CORK from its header on, and the cork is
/// off once its last byte is in the kernel (so its last partial segment goes at once,
/// not after the kernel's 200 ms); a small response after it on the same connection
/// is not corked. Every byte arrives.
#[test]
fn a_large_body_is_corked_until_its_last_byte_is_in() {
    let Some(r) = ring() else { return };
    let dir = Dir::new("cork");
    let body: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.0.join("big"), &body).unwrap();
    std::fs::write(dir.0.join("small"), b"small").unwrap();
    let sh = shared(
        HttpFactory::new(HttpConfig::default()),
        &dir,
        Caps::from_probe(),
    );
    let inbox = Notifier::new().unwrap();
    let st = Arc::new(Stats::default());
    let mut io = Io::new(&sh, &inbox, 0, r, Vec::new(), None, st.clone());
    let mut conns = ConnTable::shard(4, 0);
    let (key, mut peer) = connect_tcp(&mut io, &mut conns);
    let conn = conns.get_mut(key).unwrap();
    io.drive(key, conn);
    let corked = |c: &Conns<_>| crate::sys::net::corked(c.get(key).unwrap().fd.as_fd()).unwrap();
    // (Counted when the response starts.)
    let mut before = st.responses.load(Ordering::Relaxed);
    peer.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // Nobody reads yet: the body is in flight, corked.
    let mid = |_: &mut Io<'_, _>, c: &mut Conns<_>| c.get(key).unwrap().send.is_some() && corked(c);
    assert!(turn_until(&mut io, &mut conns, mid), "not corked mid-body");
    for (path, want) in [("big", &body[..]), ("small", b"small")] {
        if path == "small" {
            before = st.responses.load(Ordering::Relaxed);
            peer.write_all(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
        }
        let reader = std::thread::spawn(move || (read_response(&mut peer), peer));
        let answered = |_: &mut Io<'_, _>, c: &mut Conns<_>| {
            st.responses.load(Ordering::Relaxed) > before && c.get(key).unwrap().send.is_none()
        };
        assert!(
            turn_until(&mut io, &mut conns, answered),
            "no response to {path}"
        );
        assert!(!corked(&conns), "still corked after /{path}");
        let ((head, got), p) = reader.join().unwrap();
        peer = p;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
        assert!(got == want, "/{path} arrived changed ({} bytes)", got.len());
    }
}
