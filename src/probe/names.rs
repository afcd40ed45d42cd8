//! Names for the numbers the kernel hands back: io_uring opcodes and errnos.
//!
//! Reports name things the way the kernel does (`IORING_OP_SPLICE` → `"SPLICE"`,
//! `EPERM`), so a report can be grepped against the uapi header and man pages.

use std::sync::OnceLock;

/// `enum io_uring_op` from `include/uapi/linux/io_uring.h`, index = opcode, without the
/// `IORING_OP_` prefix. Checked against the io-uring crate's `opcode::*::CODE` in the
/// tests; the kernel only ever appends to this enum.
pub const OP_NAMES: [&str; 63] = [
    "NOP",              // 0   5.1
    "READV",            // 1   5.1
    "WRITEV",           // 2   5.1
    "FSYNC",            // 3   5.1
    "READ_FIXED",       // 4   5.1
    "WRITE_FIXED",      // 5   5.1
    "POLL_ADD",         // 6   5.1
    "POLL_REMOVE",      // 7   5.1
    "SYNC_FILE_RANGE",  // 8   5.2
    "SENDMSG",          // 9   5.3
    "RECVMSG",          // 10  5.3
    "TIMEOUT",          // 11  5.4
    "TIMEOUT_REMOVE",   // 12  5.5
    "ACCEPT",           // 13  5.5
    "ASYNC_CANCEL",     // 14  5.5
    "LINK_TIMEOUT",     // 15  5.5
    "CONNECT",          // 16  5.5
    "FALLOCATE",        // 17  5.6
    "OPENAT",           // 18  5.6
    "CLOSE",            // 19  5.6
    "FILES_UPDATE",     // 20  5.6
    "STATX",            // 21  5.6
    "READ",             // 22  5.6
    "WRITE",            // 23  5.6
    "FADVISE",          // 24  5.6
    "MADVISE",          // 25  5.6
    "SEND",             // 26  5.6
    "RECV",             // 27  5.6
    "OPENAT2",          // 28  5.6
    "EPOLL_CTL",        // 29  5.6
    "SPLICE",           // 30  5.7
    "PROVIDE_BUFFERS",  // 31  5.7
    "REMOVE_BUFFERS",   // 32  5.7
    "TEE",              // 33  5.8
    "SHUTDOWN",         // 34  5.11
    "RENAMEAT",         // 35  5.11
    "UNLINKAT",         // 36  5.11
    "MKDIRAT",          // 37  5.15
    "SYMLINKAT",        // 38  5.15
    "LINKAT",           // 39  5.15
    "MSG_RING",         // 40  5.18
    "FSETXATTR",        // 41  5.19
    "SETXATTR",         // 42  5.19
    "FGETXATTR",        // 43  5.19
    "GETXATTR",         // 44  5.19
    "SOCKET",           // 45  5.19
    "URING_CMD",        // 46  5.19
    "SEND_ZC",          // 47  6.0
    "SENDMSG_ZC",       // 48  6.1
    "READ_MULTISHOT",   // 49  6.7
    "WAITID",           // 50  6.7
    "FUTEX_WAIT",       // 51  6.7
    "FUTEX_WAKE",       // 52  6.7
    "FUTEX_WAITV",      // 53  6.7
    "FIXED_FD_INSTALL", // 54  6.8
    "FTRUNCATE",        // 55  6.9
    "BIND",             // 56  6.11
    "LISTEN",           // 57  6.11
    "RECV_ZC",          // 58  6.15
    "EPOLL_WAIT",       // 59  6.15
    "READV_FIXED",      // 60  6.15
    "WRITEV_FIXED",     // 61  6.15
    "PIPE",             // 62  6.16
];

/// The kernel name of an opcode, or `OP_<n>` for one newer than this table.
pub fn op_name(code: u8) -> &'static str {
    if let Some(name) = OP_NAMES.get(usize::from(code)) {
        return name;
    }
    // A newer kernel than this table: name it by number. The 256 strings are built once
    // and live in a static, so the `&'static str` costs no leak per probe.
    static UNKNOWN: OnceLock<Vec<String>> = OnceLock::new();
    let table = UNKNOWN.get_or_init(|| (0..=255u16).map(|n| format!("OP_{n}")).collect());
    &table[usize::from(code)]
}

/// The opcode number for a kernel name from [`OP_NAMES`].
pub fn op_code(name: &str) -> Option<u8> {
    OP_NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// The symbolic name of an errno (`EPERM`), for the errnos an io_uring setup or register
/// can plausibly return; others print as `errno <n>`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENXIO => "ENXIO",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::ETIME => "ETIME",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EALREADY => "EALREADY",
        libc::ECANCELED => "ECANCELED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => return format!("errno {errno}"),
    };
    name.to_owned()
}

/// `EPERM (Operation not permitted)`: the name for grepping, the message for reading.
pub fn errno_display(errno: i32) -> String {
    let msg = std::io::Error::from_raw_os_error(errno).to_string();
    // std appends " (os error N)"; the name already carries the number's meaning.
    let msg = match msg.rfind(" (os error ") {
        Some(i) => &msg[..i],
        None => &msg,
    };
    format!("{} ({msg})", errno_name(errno))
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    /// The table against the crate's bindings (generated from the kernel uapi header):
    /// every opcode the crate knows must carry the kernel's name at its number.
    #[test]
    fn op_names_match_crate_opcodes() {
        let crate_ops: &[(u8, &str)] = &[
            (opcode::Nop::CODE, "NOP"),
            (opcode::Readv::CODE, "READV"),
            (opcode::Writev::CODE, "WRITEV"),
            (opcode::Fsync::CODE, "FSYNC"),
            (opcode::ReadFixed::CODE, "READ_FIXED"),
            (opcode::WriteFixed::CODE, "WRITE_FIXED"),
            (opcode::PollAdd::CODE, "POLL_ADD"),
            (opcode::PollRemove::CODE, "POLL_REMOVE"),
            (opcode::SyncFileRange::CODE, "SYNC_FILE_RANGE"),
            (opcode::SendMsg::CODE, "SENDMSG"),
            (opcode::RecvMsg::CODE, "RECVMSG"),
            (opcode::Timeout::CODE, "TIMEOUT"),
            (opcode::TimeoutRemove::CODE, "TIMEOUT_REMOVE"),
            (opcode::Accept::CODE, "ACCEPT"),
            (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
            (opcode::LinkTimeout::CODE, "LINK_TIMEOUT"),
            (opcode::Connect::CODE, "CONNECT"),
            (opcode::Fallocate::CODE, "FALLOCATE"),
            (opcode::OpenAt::CODE, "OPENAT"),
            (opcode::Close::CODE, "CLOSE"),
            (opcode::FilesUpdate::CODE, "FILES_UPDATE"),
            (opcode::Statx::CODE, "STATX"),
            (opcode::Read::CODE, "READ"),
            (opcode::Write::CODE, "WRITE"),
            (opcode::Fadvise::CODE, "FADVISE"),
            (opcode::Madvise::CODE, "MADVISE"),
            (opcode::Send::CODE, "SEND"),
            (opcode::Recv::CODE, "RECV"),
            (opcode::OpenAt2::CODE, "OPENAT2"),
            (opcode::EpollCtl::CODE, "EPOLL_CTL"),
            (opcode::Splice::CODE, "SPLICE"),
            (opcode::ProvideBuffers::CODE, "PROVIDE_BUFFERS"),
            (opcode::RemoveBuffers::CODE, "REMOVE_BUFFERS"),
            (opcode::Tee::CODE, "TEE"),
            (opcode::Shutdown::CODE, "SHUTDOWN"),
            (opcode::RenameAt::CODE, "RENAMEAT"),
            (opcode::UnlinkAt::CODE, "UNLINKAT"),
            (opcode::MkDirAt::CODE, "MKDIRAT"),
            (opcode::SymlinkAt::CODE, "SYMLINKAT"),
            (opcode::LinkAt::CODE, "LINKAT"),
            (opcode::MsgRingData::CODE, "MSG_RING"),
            (opcode::FSetXattr::CODE, "FSETXATTR"),
            (opcode::SetXattr::CODE, "SETXATTR"),
            (opcode::FGetXattr::CODE, "FGETXATTR"),
            (opcode::GetXattr::CODE, "GETXATTR"),
            (opcode::Socket::CODE, "SOCKET"),
            (opcode::UringCmd16::CODE, "URING_CMD"),
            (opcode::SendZc::CODE, "SEND_ZC"),
            (opcode::SendMsgZc::CODE, "SENDMSG_ZC"),
            (opcode::ReadMulti::CODE, "READ_MULTISHOT"),
            (opcode::WaitId::CODE, "WAITID"),
            (opcode::FutexWait::CODE, "FUTEX_WAIT"),
            (opcode::FutexWake::CODE, "FUTEX_WAKE"),
            (opcode::FutexWaitV::CODE, "FUTEX_WAITV"),
            (opcode::FixedFdInstall::CODE, "FIXED_FD_INSTALL"),
            (opcode::Ftruncate::CODE, "FTRUNCATE"),
            (opcode::Bind::CODE, "BIND"),
            (opcode::Listen::CODE, "LISTEN"),
            (opcode::RecvZc::CODE, "RECV_ZC"),
            (opcode::EpollWait::CODE, "EPOLL_WAIT"),
            (opcode::ReadvFixed::CODE, "READV_FIXED"),
            (opcode::WritevFixed::CODE, "WRITEV_FIXED"),
            (opcode::Pipe::CODE, "PIPE"),
        ];
        assert_eq!(crate_ops.len(), OP_NAMES.len());
        for &(code, name) in crate_ops {
            assert_eq!(op_name(code), name, "opcode {code}");
            assert_eq!(op_code(name), Some(code));
        }
    }

    #[test]
    fn unknown_opcodes_are_named_by_number() {
        assert_eq!(op_name(63), "OP_63");
        assert_eq!(op_name(255), "OP_255");
        assert_eq!(op_code("OP_63"), None);
    }

    #[test]
    fn errno_display_names_and_explains() {
        assert_eq!(
            errno_display(libc::EPERM),
            "EPERM (Operation not permitted)"
        );
        assert_eq!(errno_name(libc::EOPNOTSUPP), "EOPNOTSUPP");
        assert_eq!(errno_name(4095), "errno 4095");
    }
}
