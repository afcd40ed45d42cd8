//! epoll, eventfd, signals and resource limits.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub use libc::{EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLONESHOT, EPOLLOUT, EPOLLRDHUP};

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain epoll_create1; the result is checked before it is wrapped.
        let raw = unsafe { syscall!(epoll_create1(libc::EPOLL_CLOEXEC)) }?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: i32, fd: BorrowedFd<'_>, events: i32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: data,
        };
        // SAFETY: `ev` is a live epoll_event; both descriptors are valid.
        unsafe { syscall!(epoll_ctl(self.fd.as_raw_fd(), op, fd.as_raw_fd(), &mut ev)) }.map(drop)
    }

    /// Registers `fd` with `events`; `data` comes back with each event.
    pub fn add(&self, fd: BorrowedFd<'_>, events: i32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, data)
    }

    /// Re-arms a one-shot registration. The kernel re-checks readiness here, so bytes
    /// that arrived while the owner worked still raise an event.
    pub fn modify(&self, fd: BorrowedFd<'_>, events: i32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, data)
    }

    /// Deregisters `fd`.
    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for one event: `(events, data)`, or `None` on timeout. One at a time is
    /// the seed's model: each ready connection goes to exactly one waiting worker.
    pub fn wait_one(&self, timeout: Option<Duration>) -> io::Result<Option<(u32, u64)>> {
        let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        loop {
            // SAFETY: room for exactly one event, as we say.
            match unsafe { syscall!(epoll_wait(self.fd.as_raw_fd(), &mut ev, 1, ms)) } {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some((ev.events, ev.u64))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// An eventfd: a counter other threads bump to wake whoever polls it.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain eventfd(2); the result is checked before it is wrapped.
        let raw = unsafe { syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)) }?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(EventFd { fd })
    }

    /// Makes the eventfd readable (and keeps it so: nobody reads it back).
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) is already
        // readable, which is all a wakeup needs, so the result is ignored.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A set of signals.
pub struct SigSet(libc::sigset_t);

impl SigSet {
    pub fn of(signals: &[i32]) -> SigSet {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a live sigset_t; the signal numbers are valid constants.
        unsafe {
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
        }
        SigSet(set)
    }

    /// Blocks these signals in the calling thread and in every thread it starts later,
    /// so they stay pending until [`SigSet::wait`] takes them. No handler ever runs.
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: `self.0` is an initialised set; the old mask is not wanted.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(r))
        }
    }

    /// Waits for one of these (blocked) signals and returns its number.
    pub fn wait(&self) -> io::Result<i32> {
        let mut sig = 0;
        // SAFETY: `self.0` is an initialised set and `sig` a live out-parameter.
        let r = unsafe { libc::sigwait(&self.0, &mut sig) };
        if r == 0 {
            Ok(sig)
        } else {
            Err(io::Error::from_raw_os_error(r))
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, as servers do at start (nginx's
/// worker_rlimit_nofile). Returns the soft limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    raise_soft_limit(libc::RLIMIT_NOFILE)
}

/// Raises the soft RLIMIT_MEMLOCK to the hard limit: io_uring on kernels before 5.12
/// charges ring memory to it. Returns the soft limit now in force.
pub fn raise_memlock_limit() -> io::Result<u64> {
    raise_soft_limit(libc::RLIMIT_MEMLOCK)
}

fn raise_soft_limit(resource: libc::__rlimit_resource_t) -> io::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a live rlimit out-parameter.
    unsafe { syscall!(getrlimit(resource, &mut rl)) }?;
    if rl.rlim_cur < rl.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: `raised` is a live rlimit; raising soft up to hard needs no privilege.
        if unsafe { syscall!(setrlimit(resource, &raised)) }.is_ok() {
            return Ok(rl.rlim_max);
        }
    }
    Ok(rl.rlim_cur)
}

/// Opens /dev/null: the spare descriptor a server keeps so that, at EMFILE, it can
/// still accept a connection to close it instead of leaving it in the backlog.
pub fn open_spare_fd() -> io::Result<OwnedFd> {
    // SAFETY: the path is a NUL-terminated literal; the result is checked.
    let raw = unsafe {
        syscall!(open(
            c"/dev/null".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC
        ))
    }?;
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
