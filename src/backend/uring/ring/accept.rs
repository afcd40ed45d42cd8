//! Accepting: multishot where the probe saw it work, single-shot re-armed otherwise;
//! EMFILE rests instead of spinning; a new socket is admitted by the driver and given
//! its key.

use super::user_data;
use super::{Conn, Conns, Io};
use crate::backend::driver;
use crate::log::episode::ACCEPT_EMFILE;
use crate::log::Level;
use crate::proto::ProtocolFactory;
use crate::stats::Stats;
use io_uring::{cqueue, opcode, types};
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long accept rests after EMFILE/ENFILE.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);

impl<F: ProtocolFactory> Io<'_, F> {
    pub(super) fn arm_accept(&mut self, li: usize) {
        if self.draining || self.accepting[li] || self.paused_until.is_some() {
            return;
        }
        let fd = types::Fd(self.listeners[li].raw());
        let e = if self.caps.multishot_accept {
            opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        };
        // SAFETY: no address buffer; the listener outlives the ring's accepts (teardown
        // cancels them and waits for their completions, lifecycle.rs).
        unsafe { self.push(&[e.user_data(user_data::accept(li))]) };
        self.accepting[li] = true;
    }

    /// Re-arms an accept whose listener has had a connection waiting since the last
    /// tick. io_uring waits on a listener as an *exclusive* waiter: each connection
    /// wakes one waiter. A waiter woken as it is being cancelled accepts nothing, and
    /// the connection it was woken for then waits with nobody told. That happens when
    /// another process's ring drains in a hand-off (both servers wait on the same
    /// socket for a moment), or another ring here rests after EMFILE. A fresh accept
    /// takes whatever is queued before it waits, so cancelling ours (its completion
    /// re-arms it) brings such a connection in within two ticks. A ring merely behind
    /// on a busy listener pays one cancel per tick. One poll(2) per listener per tick.
    pub(super) fn rearm_stranded(&mut self) {
        for li in 0..self.listeners.len() {
            let waiting = self.accepting[li]
                && !self.draining
                && crate::sys::net::wait_readable(self.listeners[li].fd(), Duration::ZERO)
                    .unwrap_or(false);
            if waiting && self.queued[li] {
                Stats::add(&self.st.accept_rearms, 1);
                self.cancel(user_data::accept(li));
                self.queued[li] = false;
            } else {
                self.queued[li] = waiting;
            }
        }
    }

    pub(super) fn accepted(
        &mut self,
        conns: &mut Conns<F::Proto>,
        li: usize,
        res: i32,
        flags: u32,
    ) {
        if !cqueue::more(flags) && self.accepting.get(li) == Some(&true) {
            self.accepting[li] = false;
        }
        if res >= 0 {
            ACCEPT_EMFILE.ok();
            // SAFETY: the kernel just handed us this descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            self.register(conns, fd);
        } else {
            match -res {
                e @ (libc::EMFILE | libc::ENFILE) => {
                    // Rest instead of spinning; the tick re-arms.
                    Stats::add(&self.st.accept_emfile, 1);
                    ACCEPT_EMFILE.hit(&io::Error::from_raw_os_error(e));
                    self.paused_until = Some(Instant::now() + EMFILE_BACKOFF);
                    if self.accepting[li] {
                        self.cancel(user_data::accept(li));
                    }
                }
                libc::ECANCELED | libc::EINTR | libc::ECONNABORTED | libc::EAGAIN => {}
                // A listener shut for reading at shutdown answers EINVAL.
                _ if self.draining => {}
                e => {
                    crate::log_limited!(
                        Level::Error,
                        "ringserve: accept: {}",
                        io::Error::from_raw_os_error(e)
                    );
                    // A listener that fails every accept (shut by another process
                    // holding it) would otherwise be re-armed in a tight loop.
                    self.paused_until = Some(Instant::now() + EMFILE_BACKOFF);
                    if self.accepting[li] {
                        self.cancel(user_data::accept(li));
                    }
                }
            }
        }
        if !self.accepting[li] {
            self.arm_accept(li);
        }
    }

    /// Gives a new socket a key and starts its protocol (the driver admits it first).
    fn register(&mut self, conns: &mut Conns<F::Proto>, fd: OwnedFd) {
        let ctx = &self.sh.ctx;
        let Ok(peer) = crate::sys::net::peer_addr(fd.as_fd()) else {
            return; // already reset by the peer
        };
        // Accepted before the cancel took: in a hand-off it is served (the successor
        // never saw it), otherwise the server is stopping and it is closed.
        if self.draining && !self.handoff {
            return;
        }
        let Some(fd) = driver::admit(ctx, &self.st, fd) else {
            return;
        };
        let now = self.now;
        let key = conns.vacant_key();
        let Some(core) = driver::open(ctx, &self.st, key, peer, now) else {
            // The factory or the accept hook panicked: no connection.
            driver::unadmit(ctx);
            return;
        };
        let inserted = conns.insert(Box::new(Conn::new(fd, core)));
        debug_assert_eq!(inserted, key);
        self.ready.push(key);
    }
}
