//! The io_uring backend: one ring per thread, each owning the connections it accepted.
//!
//! - **Threads and listeners.** `uring_threads` rings (default: one per CPU). By default
//!   each ring has its own SO_REUSEPORT listener per address, so the kernel spreads
//!   connections and no two rings ever contend for one accept queue;
//!   `uring_shared_listener` makes every ring accept on the same socket instead
//!   (measured in docs/ARCHITECTURE.md). Connections never migrate.
//! - **Keys.** Every SQE's `user_data` is an operation kind in the top byte and the
//!   connection's [`Key`](crate::conn::Key) below it. A completion whose key is retired is
//!   dropped and counted (with its buffer recycled or its fd closed, should it carry one).
//! - **Lifetimes.** Everything an operation points at (buffers, msghdrs, open_how,
//!   paths, pipes, files) is owned by its connection's boxed state, or by the ring,
//!   until its last completion, on every exit path: the rule is stated once, in
//!   `ring/lifecycle.rs`.
//! - **Notifications** (shutdown) go through a queue per ring plus a wakeup: MSG_RING
//!   from the coordinator's own ring where the kernel has it, otherwise a write to an
//!   eventfd the ring keeps a READ armed on. Queued, never a bounded pipe; drained before
//!   completions, a bounded number per loop turn.

mod bufs;
mod ring;

use super::{Backend, Ctx, Running, ShutdownLevel};
use crate::config::Config;
use crate::conn::Key;
use crate::probe::{self, Optional};
use crate::proto::ProtocolFactory;
use crate::sys::epoll::EventFd;
use io_uring::{opcode, types, IoUring};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Optional kernel features this backend uses: the probe's `used` verdicts (present,
/// not disabled by `RINGSERVE_URING_DISABLE`, and not left alone on purpose), so the
/// report and the code cannot disagree. Code asks for a capability, never for a kernel
/// version.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Caps {
    pub multishot_accept: bool,
    pub buf_ring: bool,
    pub msg_ring: bool,
    pub single_issuer: bool,
    pub defer_taskrun: bool,
    pub coop_taskrun: bool,
    pub submit_all: bool,
    pub openat2: bool,
    pub multishot_recv: bool,
    pub statx: bool,
    pub cachestat: bool,
}

impl Caps {
    pub(crate) fn from_probe() -> Caps {
        let u = &probe::probe().uring;
        Caps {
            multishot_accept: u.uses(Optional::MultishotAccept),
            buf_ring: u.uses(Optional::BufRing),
            msg_ring: u.uses(Optional::MsgRing),
            single_issuer: u.uses(Optional::SingleIssuer),
            defer_taskrun: u.uses(Optional::DeferTaskrun),
            coop_taskrun: u.uses(Optional::CoopTaskrun),
            submit_all: u.uses(Optional::SubmitAll),
            openat2: u.uses(Optional::Openat2),
            multishot_recv: u.has(Optional::MultishotRecv),
            statx: u.uses(Optional::Statx),
            cachestat: u.uses(Optional::Cachestat),
        }
    }
}

/// Submission queue entries per ring. Chains are at most two SQEs and go in whole
/// (`push_multiple`), so this only bounds how much one loop turn batches.
const SQ_ENTRIES: u32 = 256;
/// Completions one connection can have outstanding at once: a receive, a two-SQE send
/// or file-receive step (splice in, splice out), and cancels, with room to spare.
const CQES_PER_CONN: usize = 6;

/// Builds a ring with the features `caps` allows, its CQ sized so that `max_conns`
/// connections cannot overflow it (NODROP covers the rest). On ENOMEM (kernels before
/// 5.12 charge ring memory to RLIMIT_MEMLOCK) it raises the soft limit to the hard one
/// and tries once more, then fails with the reason.
fn build_ring(caps: &Caps, max_conns: usize) -> io::Result<IoUring> {
    let cq = (max_conns.saturating_mul(CQES_PER_CONN) + 64)
        .next_power_of_two()
        .clamp(1024, 1 << 16) as u32;
    let build = || {
        let mut b = IoUring::builder();
        if caps.single_issuer {
            b.setup_single_issuer();
            if caps.defer_taskrun {
                b.setup_defer_taskrun();
            }
        } else if caps.coop_taskrun {
            b.setup_coop_taskrun();
        }
        if caps.submit_all {
            b.setup_submit_all();
        }
        b.setup_cqsize(cq).setup_clamp();
        b.build(SQ_ENTRIES)
    };
    match build() {
        Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {
            let raised = crate::sys::epoll::raise_memlock_limit();
            build().map_err(|e2| {
                io::Error::new(
                    e2.kind(),
                    format!(
                        "io_uring_setup: {e2} (RLIMIT_MEMLOCK {}; kernels before 5.12 charge ring memory to it)",
                        match raised {
                            Ok(l) => format!("raised to {l} bytes, still too low"),
                            Err(r) => format!("could not be raised: {r}"),
                        }
                    ),
                )
            })
        }
        r => r,
    }
}

/// Connections one ring is sized for.
fn per_ring(cfg: &Config) -> usize {
    cfg.max_connections.div_ceil(cfg.uring_threads.max(1))
}

/// Sets up (and drops) one ring as the backend will, so `--backend auto` can fall back
/// to epoll before anything is bound when it would fail.
pub(crate) fn preflight(cfg: &Config) -> io::Result<()> {
    build_ring(&Caps::from_probe(), per_ring(cfg)).map(drop)
}

/// A cross-ring notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    Shutdown(ShutdownLevel),
    /// [`Control::close`](crate::Control::close) for one of this ring's connections.
    /// A retired key (closed, or its slot reused: the generation differs) is dropped.
    Close(Key),
}

/// One ring's inbox.
pub(crate) struct Notifier {
    queue: Mutex<Inbox>,
    /// Readable when a note waits; the ring keeps a READ armed on it.
    efd: EventFd,
}

struct Inbox {
    notes: VecDeque<Note>,
    /// The ring's fd while the ring exists (-1 before and after), for MSG_RING. Read and
    /// cleared under this lock, so a notifier never sends to a closed, reused number.
    ring_fd: RawFd,
}

impl Notifier {
    fn new() -> io::Result<Notifier> {
        Ok(Notifier {
            queue: Mutex::new(Inbox {
                notes: VecDeque::new(),
                ring_fd: -1,
            }),
            efd: EventFd::new()?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes up to `max` queued notes.
    pub(crate) fn take(&self, max: usize) -> Vec<Note> {
        let mut q = self.lock();
        let n = q.notes.len().min(max);
        q.notes.drain(..n).collect()
    }

    pub(crate) fn set_ring_fd(&self, fd: RawFd) {
        self.lock().ring_fd = fd;
    }

    pub(crate) fn efd(&self) -> &EventFd {
        &self.efd
    }

    /// Queues `note` and wakes the ring: by MSG_RING from `sender` when given and it
    /// works, by the eventfd otherwise.
    fn send(&self, note: Note, sender: Option<&mut IoUring>) {
        let mut q = self.lock();
        q.notes.push_back(note);
        if let (Some(ring), fd) = (sender, q.ring_fd) {
            if fd >= 0 && msg_ring(ring, fd).is_ok() {
                return;
            }
        }
        drop(q);
        self.efd.notify();
    }
}

/// Posts a wakeup CQE into the ring `target` (MSG_RING, 5.18).
fn msg_ring(sender: &mut IoUring, target: RawFd) -> io::Result<()> {
    let e = opcode::MsgRingData::new(types::Fd(target), 0, ring::wake_user_data(), None)
        .build()
        .user_data(0);
    // SAFETY: MSG_RING reads no user memory; `target` is a live ring fd (checked under
    // the inbox lock by our caller).
    unsafe { sender.submission().push(&e) }.map_err(|_| io::Error::other("SQ full"))?;
    sender.submit_and_wait(1)?;
    let cqe = sender
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("no CQE"))?;
    if cqe.result() < 0 {
        return Err(io::Error::from_raw_os_error(-cqe.result()));
    }
    Ok(())
}

/// A listener a ring accepts on: one of the server's, in `Ctx::listeners`.
pub(crate) struct ListenFd(RawFd);

impl ListenFd {
    pub(crate) fn raw(&self) -> RawFd {
        self.0
    }

    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the listener is the server's own, in `Ctx::listeners`, which outlives
        // every ring and so every `ListenFd` of it.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) }
    }
}

/// Which listeners each of `n` rings accepts on. Listeners of one address are its
/// SO_REUSEPORT copies (one per ring when the server bound them) or a single socket
/// (shared listener mode, an epoll predecessor's, systemd's): with at least `n`, each
/// ring takes every n-th; with fewer, rings share them round-robin. So whatever a
/// predecessor handed over is all accepted on, and nothing is bound afresh.
fn spread(all: &[crate::listener::Listener], n: usize) -> Vec<Vec<ListenFd>> {
    let mut rings: Vec<Vec<ListenFd>> = (0..n).map(|_| Vec::new()).collect();
    let mut groups: Vec<(&crate::listener::ListenAddr, Vec<RawFd>)> = Vec::new();
    for l in all {
        match groups.iter_mut().find(|(a, _)| *a == l.addr()) {
            Some((_, fds)) => fds.push(l.fd().as_raw_fd()),
            None => groups.push((l.addr(), vec![l.fd().as_raw_fd()])),
        }
    }
    for (_, fds) in groups {
        if fds.len() >= n {
            for (j, fd) in fds.into_iter().enumerate() {
                rings[j % n].push(ListenFd(fd));
            }
        } else {
            for (r, ring) in rings.iter_mut().enumerate() {
                ring.push(ListenFd(fds[r % fds.len()]));
            }
        }
    }
    rings
}

/// What every ring thread shares.
pub(crate) struct Shared<F> {
    pub ctx: Ctx<F>,
    pub caps: Caps,
}

/// The io_uring backend.
pub(crate) struct UringBackend;

impl Backend for UringBackend {
    fn start<F: ProtocolFactory>(ctx: Ctx<F>) -> io::Result<Box<dyn Running>> {
        let mut caps = Caps::from_probe();
        // Present is not enough: it is slower for request/response HTTP (measured, see
        // docs/ARCHITECTURE.md), so it is opt-in.
        caps.multishot_recv &= ctx.cfg.uring_multishot_recv;
        // A read on NFS or FUSE can wait (revalidation) even when every page is cached:
        // such a root's bodies are always spliced in io-wq, never sent on the ring.
        caps.cachestat &= !ctx.root.is_remote();
        // Config::validate keeps this within the key's one shard byte.
        let n = ctx
            .cfg
            .uring_threads
            .clamp(1, crate::config::MAX_URING_THREADS);
        let listeners = spread(&ctx.listeners, n);
        let notifiers: Vec<Arc<Notifier>> = (0..n)
            .map(|_| Notifier::new().map(Arc::new))
            .collect::<io::Result<_>>()?;
        let max_conns = per_ring(&ctx.cfg);
        let shared = Arc::new(Shared { ctx, caps });
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(n);
        for (i, mine) in listeners.into_iter().enumerate() {
            let sh = shared.clone();
            let inbox = notifiers[i].clone();
            let ready = ready_tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("ringserve-ring{i}"))
                .spawn(move || {
                    // The ring is created on the thread that submits to it: SINGLE_ISSUER.
                    match build_ring(&sh.caps, max_conns) {
                        Ok(r) => ring::run(sh, i, r, mine, inbox, ready),
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        let mut failure = None;
        let mut notes = Vec::new();
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(mut n)) => notes.append(&mut n),
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some(io::Error::other("a ring thread died at start")),
            }
        }
        if let Some(e) = failure {
            for nt in &notifiers {
                nt.send(Note::Shutdown(ShutdownLevel::Immediate), None);
            }
            for t in threads {
                let _ = t.join();
            }
            return Err(e);
        }
        let sh = shared.clone();
        let coordinator = std::thread::Builder::new()
            .name("ringserve-coord".into())
            .spawn(move || coordinate(sh, notifiers, threads))?;
        notes.sort();
        notes.dedup();
        Ok(Box::new(Handle {
            coordinator: Some(coordinator),
            notes,
        }))
    }
}

/// Relays shutdown requests to every ring, then joins them.
fn coordinate<F: ProtocolFactory>(
    sh: Arc<Shared<F>>,
    notifiers: Vec<Arc<Notifier>>,
    threads: Vec<JoinHandle<()>>,
) {
    // Its own counter block, as every server thread has (stale close requests).
    let counting = sh.ctx.stats.bind("coordinator");
    let st = counting.stats().clone();
    let control = sh.ctx.control.clone();
    // A ring of our own to send MSG_RING wakeups from, where the kernel has it.
    let mut sender = if sh.caps.msg_ring {
        IoUring::new(8).ok()
    } else {
        None
    };
    let mut seen = ShutdownLevel::Running;
    loop {
        // Idle until asked; once stopping, look every 50 ms for the rings finishing.
        let wait = if seen == ShutdownLevel::Running {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(50)
        };
        let (level, closes) = control.wait(seen, wait);
        for key in closes {
            // The key's shard is the ring that owns it; a key no ring issued is stale.
            match notifiers.get(usize::from(key.shard())) {
                Some(nt) => nt.send(Note::Close(key), sender.as_mut()),
                None => crate::stats::Stats::add(&st.stale_dropped, 1),
            }
        }
        if level > seen {
            seen = level;
            for nt in &notifiers {
                nt.send(Note::Shutdown(level), sender.as_mut());
            }
        }
        if seen != ShutdownLevel::Running && threads.iter().all(|t| t.is_finished()) {
            break;
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

struct Handle {
    coordinator: Option<JoinHandle<()>>,
    notes: Vec<String>,
}

impl Running for Handle {
    fn wait(mut self: Box<Self>) {
        if let Some(h) = self.coordinator.take() {
            let _ = h.join();
        }
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::spread;
    use crate::listener::{ListenAddr, Listener};
    use std::os::fd::AsRawFd;

    /// `n` listeners on one fresh loopback address (SO_REUSEPORT copies).
    fn copies(n: usize) -> Vec<Listener> {
        let mut at: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        (0..n)
            .map(|_| {
                let fd = crate::sys::net::listen(at, 16, true).unwrap();
                at = crate::sys::net::local_addr(std::os::fd::AsFd::as_fd(&fd)).unwrap();
                Listener::new(fd, ListenAddr::Tcp(at), "test")
            })
            .collect()
    }

    fn raw(rings: &[Vec<super::ListenFd>]) -> Vec<Vec<i32>> {
        rings
            .iter()
            .map(|r| r.iter().map(|l| l.raw()).collect())
            .collect()
    }

    #[test]
    fn every_listener_handed_over_is_accepted_on_by_some_ring() {
        // As many copies as rings: one each. More: every n-th. Fewer: shared.
        let l = copies(2);
        let fds: Vec<i32> = l.iter().map(|l| l.fd().as_raw_fd()).collect();
        assert_eq!(raw(&spread(&l, 2)), [vec![fds[0]], vec![fds[1]]]);
        assert_eq!(raw(&spread(&l, 1)), [vec![fds[0], fds[1]]]);
        assert_eq!(
            raw(&spread(&l, 4)),
            [vec![fds[0]], vec![fds[1]], vec![fds[0]], vec![fds[1]]]
        );
        // Two addresses, one socket and three copies, over two rings.
        let mut two = copies(1);
        two.extend(copies(3));
        let f: Vec<i32> = two.iter().map(|l| l.fd().as_raw_fd()).collect();
        assert_eq!(
            raw(&spread(&two, 2)),
            [vec![f[0], f[1], f[3]], vec![f[0], f[2]]]
        );
    }
}
