//! Opening files on the ring (OPENAT2 beneath the root, then STATX of the new
//! descriptor) and fsync (FSYNC). The open-file cache is the driver's: a hit never
//! gets here.

use super::user_data::Op;
use super::{Conn, Io, Job};
use crate::conn::Key;
use crate::proto::{FileMeta, FileRef, Opened, ProtocolFactory};
use io_uring::{opcode, types};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An open in flight: what OPENAT2 points at, and the protocol's path it is cached
/// under; then the file it opened and the buffer STATX of it fills. Boxed in the
/// connection until the last of its CQEs.
pub(super) struct Opening {
    rel: String,
    path: CString,
    how: types::OpenHow,
    file: Option<File>,
    stx: libc::statx,
}

impl<F: ProtocolFactory> Io<'_, F> {
    /// The driver asked to open `path`: on the ring where this root resolves with one
    /// openat2 and the kernel has OPENAT2 (true: submitted), otherwise here (false: the
    /// driver has its answer).
    pub(super) fn open(&mut self, key: Key, conn: &mut Conn<F::Proto>, path: String) -> bool {
        let root = &self.sh.ctx.root;
        match root.openat2_args(&path) {
            Some(Ok(args)) if self.caps.openat2 => {
                let dir = args.dir.as_raw_fd();
                let op = Box::new(Opening {
                    rel: path,
                    path: args.path,
                    how: types::OpenHow::new()
                        .flags(args.flags)
                        .resolve(args.resolve),
                    file: None,
                    // SAFETY: statx is plain data; all-zero is a valid value.
                    stx: unsafe { std::mem::zeroed() },
                });
                let e = opcode::OpenAt2::new(types::Fd(dir), op.path.as_ptr(), &op.how)
                    .build()
                    .user_data(Op::Open.ud(key.to_u64()));
                // The box moves into the connection; its heap contents do not move.
                conn.job = Some(Job::Open(op));
                // SAFETY: the path and open_how live in the boxed `Opening`, which the
                // connection keeps until this CQE (`ops`); the root descriptor lives in
                // the shared context, which outlives the ring.
                unsafe { self.push(&[e]) };
                conn.ops |= Op::Open.bit();
                true
            }
            Some(Err(e)) => {
                conn.core.opened(&mut self.env(), &path, Err(e));
                false
            }
            _ => {
                let r = root.open_beneath(&path);
                conn.core.opened(&mut self.env(), &path, r);
                false
            }
        }
    }

    /// OPENAT2 completed. The new descriptor is stat'ed with STATX on the ring where
    /// the kernel has it (AT_EMPTY_PATH: this very file, no second lookup), so nothing
    /// on this thread can block on a slow filesystem's getattr (NFS, FUSE). The kernel
    /// runs STATX in an io-wq worker, a thread hop, which the open-file cache pays once
    /// per file per validity period. Without STATX, `fstat` of the new descriptor.
    pub(super) fn opened(&mut self, key: Key, conn: &mut Conn<F::Proto>, res: i32) {
        let Some(mut op) = conn.take_open() else {
            return;
        };
        if res < 0 {
            let e = Err(io::Error::from_raw_os_error(-res));
            return conn.core.opened(&mut self.env(), &op.rel, e);
        }
        // SAFETY: the kernel just handed us this descriptor.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(res) });
        if conn.closing.is_some() {
            return; // dropping `file` closes it
        }
        if self.caps.statx {
            let e = opcode::Statx::new(
                types::Fd(file.as_raw_fd()),
                c"".as_ptr(),
                std::ptr::addr_of_mut!(op.stx).cast::<types::statx>(),
            )
            .flags(libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT)
            .mask(libc::STATX_BASIC_STATS)
            .build()
            .user_data(Op::Stat.ud(key.to_u64()));
            op.file = Some(file);
            // The box, and the buffer in it, do not move when it goes back.
            conn.job = Some(Job::Open(op));
            // SAFETY: the statx buffer and the descriptor live in the boxed `Opening`,
            // which the connection keeps until this CQE (`ops`); the path is a static
            // empty string.
            unsafe { self.push(&[e]) };
            conn.ops |= Op::Stat.bit();
            return;
        }
        let r = crate::fs::meta_of(&file);
        self.open_done(conn, &op.rel, file, r);
    }

    /// STATX of a just-opened file completed.
    pub(super) fn stated(&mut self, conn: &mut Conn<F::Proto>, res: i32) {
        let Some(mut op) = conn.take_open() else {
            return;
        };
        let Some(file) = op.file.take() else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        let r = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(crate::fs::meta_of_statx(&op.stx))
        };
        self.open_done(conn, &op.rel, file, r);
    }

    /// Hands an open file and its metadata to the driver (which caches them).
    fn open_done(
        &mut self,
        conn: &mut Conn<F::Proto>,
        rel: &str,
        file: File,
        meta: io::Result<FileMeta>,
    ) {
        let r = meta.map(|meta| Opened {
            file: FileRef::new(file),
            meta,
        });
        conn.core.opened(&mut self.env(), rel, r);
    }

    /// FSYNC on the ring: a slow disk never stalls the other connections.
    pub(super) fn submit_fsync(&mut self, key: Key, conn: &mut Conn<F::Proto>, file: FileRef) {
        let e = opcode::Fsync::new(types::Fd(file.file().as_raw_fd()))
            .build()
            .user_data(Op::Fsync.ud(key.to_u64()));
        conn.job = Some(Job::Sync(file));
        // SAFETY: FSYNC points at no memory; the descriptor is held in `syncing` until
        // this CQE (`ops`).
        unsafe { self.push(&[e]) };
        conn.ops |= Op::Fsync.bit();
    }

    pub(super) fn synced(&mut self, conn: &mut Conn<F::Proto>, res: i32) {
        conn.job = None;
        if conn.closing.is_some() {
            return;
        }
        let r = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(())
        };
        conn.core.synced(&mut self.env(), r);
    }
}
