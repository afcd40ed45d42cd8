//! The raw system calls the kernel probe needs beyond the io-uring crate: the kernel
//! release, the memlock limit, and (for tests and the kernel-compat matrix) a seccomp
//! filter that refuses io_uring and a way to drop a capability from the bounding set.

use std::ffi::CStr;
use std::io;

/// `uname(2)`'s release field, e.g. `6.18.44`. Not `/proc/sys/kernel/osrelease`,
/// because a sandbox may have no `/proc`.
pub fn kernel_release() -> io::Result<String> {
    // SAFETY: `utsname` is plain old data; all-zero bytes are a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable `utsname` for the duration of the call.
    unsafe { crate::syscall!(uname(&mut uts)) }?;
    // SAFETY: the kernel NUL-terminates `release` within its fixed-size array.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    Ok(release.to_string_lossy().into_owned())
}

/// `RLIMIT_MEMLOCK` as `(soft, hard)` in bytes; `None` is unlimited. Kernels up to 5.11
/// charge ring memory to it, so a low soft limit makes `io_uring_setup` fail with ENOMEM.
pub fn memlock_limit() -> io::Result<(Option<u64>, Option<u64>)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` for the duration of the call.
    unsafe { crate::syscall!(getrlimit(libc::RLIMIT_MEMLOCK, &mut lim)) }?;
    let finite = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    Ok((finite(lim.rlim_cur), finite(lim.rlim_max)))
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E; // EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_00B7; // EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE

/// Makes `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with `errno` for
/// this thread and every child, as Docker's default seccomp profile does (EPERM), gVisor
/// does (ENOSYS) or some Kubernetes profiles do (EOPNOTSUPP). Needs no privilege: it sets
/// `PR_SET_NO_NEW_PRIVS` first.
///
/// It allocates nothing and calls only `prctl`, so it is safe to call between `fork` and
/// `exec` (`Command::pre_exec`). Other syscalls and other architectures' calling
/// conventions are allowed through.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn deny_io_uring_with_seccomp(errno: u16) -> io::Result<()> {
    const NR_OFFSET: u32 = 0; // offsetof(struct seccomp_data, nr)
    const ARCH_OFFSET: u32 = 4; // offsetof(struct seccomp_data, arch)
    const fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }
    let ld_w_abs = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let jge = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
    let jgt = libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let (first, last) = (
        libc::SYS_io_uring_setup as u32,
        libc::SYS_io_uring_register as u32,
    );
    let mut filter = [
        stmt(ld_w_abs, ARCH_OFFSET),
        jump(jeq, AUDIT_ARCH_NATIVE, 0, 4), // foreign arch → allow
        stmt(ld_w_abs, NR_OFFSET),
        jump(jge, first, 0, 2), // nr < setup → allow
        jump(jgt, last, 1, 0),  // nr > register → allow
        stmt(
            ret,
            libc::SECCOMP_RET_ERRNO | (u32::from(errno) & libc::SECCOMP_RET_DATA),
        ),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // prctl is variadic: pass full `unsigned long`s, since the kernel insists the unused
    // arguments are zero.
    let (one, zero): (libc::c_ulong, libc::c_ulong) = (1, 0);
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    unsafe { crate::syscall!(prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero)) }?;
    // SAFETY: `prog` points at `filter`, both alive for the call; the kernel copies the
    // program before returning.
    unsafe {
        crate::syscall!(prctl(
            libc::PR_SET_SECCOMP,
            libc::c_ulong::from(libc::SECCOMP_MODE_FILTER),
            &prog as *const libc::sock_fprog
        ))
    }?;
    Ok(())
}

/// Drops capability number `cap` (linux/capability.h, e.g. 14 for CAP_IPC_LOCK) from
/// this thread's bounding set, so nothing it execs afterwards can hold it, not even
/// root. `prctl(PR_CAPBSET_DROP)`; needs CAP_SETPCAP, and fails with EINVAL for a
/// capability the kernel does not know.
pub fn drop_bounding_cap(cap: u32) -> io::Result<()> {
    // prctl is variadic: pass full `unsigned long`s, as for the seccomp calls above.
    let zero: libc::c_ulong = 0;
    // SAFETY: PR_CAPBSET_DROP takes integer arguments only and touches no memory of ours.
    unsafe {
        crate::syscall!(prctl(
            libc::PR_CAPBSET_DROP,
            libc::c_ulong::from(cap),
            zero,
            zero,
            zero
        ))
    }?;
    Ok(())
}
