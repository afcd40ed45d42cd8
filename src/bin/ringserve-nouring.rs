//! `ringserve-nouring [--errno NAME|NUMBER] -- CMD ARGS...`: runs CMD with io_uring
//! blocked by a seccomp filter, for CMD and every process it starts. io_uring_setup,
//! io_uring_enter and io_uring_register fail with the chosen errno (default EPERM, as
//! Docker's default profile answers; ENOSYS is what gVisor answers, EOPNOTSUPP what some
//! Kubernetes profiles answer). Needs no root: the filter sets PR_SET_NO_NEW_PRIVS.
//! The kernel-compat matrix uses it for its "io_uring blocked" cells.
//!
//! `--drop-ipc-lock` also drops CAP_IPC_LOCK from the bounding set before the exec, so
//! even root runs CMD without it: kernels before 5.12 then charge io_uring ring memory
//! to RLIMIT_MEMLOCK, which is what the matrix's low-memlock cell needs to see.
//! `--errno none` installs no filter (for that cell, where io_uring must stay usable).

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

const USAGE: &str =
    "usage: ringserve-nouring [--errno EPERM|ENOSYS|EOPNOTSUPP|<number>|none] [--drop-ipc-lock] -- CMD [ARGS...]";

/// CAP_IPC_LOCK's number (linux/capability.h); libc does not export it.
const CAP_IPC_LOCK: u32 = 14;

/// Exit code for bad usage, as `ringserve` itself uses.
const EXIT_USAGE: u8 = 2;

fn parse_errno(s: &str) -> Option<u16> {
    let n = match s.to_ascii_uppercase().as_str() {
        "EPERM" => libc::EPERM,
        "ENOSYS" => libc::ENOSYS,
        "EOPNOTSUPP" => libc::EOPNOTSUPP,
        "EACCES" => libc::EACCES,
        "ENOMEM" => libc::ENOMEM,
        other => other.parse().ok()?,
    };
    // SECCOMP_RET_DATA keeps 16 bits, but errno 0 would mean "succeed" and numbers above
    // 4095 are not errnos: refuse both rather than install a filter that lies.
    u16::try_from(n).ok().filter(|&n| (1..4096).contains(&n))
}

fn usage(why: &str) -> ExitCode {
    eprintln!("ringserve-nouring: {why}\n{USAGE}");
    ExitCode::from(EXIT_USAGE)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut errno = Some(libc::EPERM as u16);
    let mut drop_ipc_lock = false;
    let mut rest = args.as_slice();
    loop {
        match rest {
            [flag, value, tail @ ..] if flag == "--errno" => {
                errno = match (value.as_str(), parse_errno(value)) {
                    ("none", _) => None,
                    (_, Some(n)) => Some(n),
                    (_, None) => return usage(&format!("bad errno `{value}`")),
                };
                rest = tail;
            }
            [flag, tail @ ..] if flag == "--drop-ipc-lock" => {
                drop_ipc_lock = true;
                rest = tail;
            }
            [help, ..] if help == "-h" || help == "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            [dashes, cmd, tail @ ..] if dashes == "--" => {
                let mut command = Command::new(cmd);
                command.args(tail);
                if drop_ipc_lock {
                    if let Err(e) = ringserve::sys::probe::drop_bounding_cap(CAP_IPC_LOCK) {
                        eprintln!("ringserve-nouring: dropping CAP_IPC_LOCK: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                if let Some(errno) = errno {
                    if let Err(e) = ringserve::sys::probe::deny_io_uring_with_seccomp(errno) {
                        eprintln!("ringserve-nouring: installing the seccomp filter: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                // exec only returns on failure.
                let e = command.exec();
                eprintln!("ringserve-nouring: cannot run `{cmd}`: {e}");
                return ExitCode::from(127);
            }
            [flag] if flag == "--errno" => return usage("--errno needs a value"),
            [] => return usage("no command given"),
            [dashes] if dashes == "--" => return usage("no command given"),
            [other, ..] => return usage(&format!("unexpected argument `{other}`")),
        }
    }
}
