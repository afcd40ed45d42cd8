//! What the process's surroundings say about io_uring: seccomp mode, the
//! `kernel.io_uring_disabled` sysctl, CAP_SYS_ADMIN and RLIMIT_MEMLOCK. Read once per
//! probe; the errno → cause mapping is a pure function of these facts, so every branch
//! can be tested on any host.

use super::names::errno_display;

/// `Seccomp:` in `/proc/self/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeccompMode {
    /// 0: no seccomp.
    Disabled,
    /// 1: strict mode (read/write/exit only); a process in it could not even get here.
    Strict,
    /// 2: a BPF filter is installed, as container runtimes and sandboxes do.
    Filter,
    /// `/proc` unreadable or the line absent (kernel without CONFIG_SECCOMP).
    Unknown,
}

impl SeccompMode {
    /// Lower-case name used in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SeccompMode::Disabled => "disabled",
            SeccompMode::Strict => "strict",
            SeccompMode::Filter => "filter",
            SeccompMode::Unknown => "unknown",
        }
    }
}

/// The facts that explain an io_uring failure. Public so tests and tools can build them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// This process's seccomp mode.
    pub seccomp: SeccompMode,
    /// `/proc/sys/kernel/io_uring_disabled` (6.6+): 0 allowed, 1 only CAP_SYS_ADMIN or
    /// `kernel.io_uring_group`, 2 nobody. `None`: absent (older kernel) or unreadable.
    pub io_uring_disabled: Option<u32>,
    /// CAP_SYS_ADMIN in the effective set: what `io_uring_disabled=1` checks, not uid 0.
    pub cap_sys_admin: bool,
    /// RLIMIT_MEMLOCK `(soft, hard)` in bytes, `None` inside meaning unlimited; the outer
    /// `None` means getrlimit failed.
    pub memlock: Option<(Option<u64>, Option<u64>)>,
}

const CAP_SYS_ADMIN: u32 = 21;

impl HostFacts {
    /// Reads the facts for this process. Never fails: what cannot be read is unknown.
    pub fn read() -> HostFacts {
        // Seccomp filters are per thread; thread-self (3.17+) is this thread's view.
        let status = std::fs::read_to_string("/proc/thread-self/status")
            .or_else(|_| std::fs::read_to_string("/proc/self/status"))
            .unwrap_or_default();
        let (seccomp, cap_sys_admin) = parse_status(&status);
        let io_uring_disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        HostFacts {
            seccomp,
            io_uring_disabled,
            cap_sys_admin,
            memlock: crate::sys::probe::memlock_limit().ok(),
        }
    }
}

/// Seccomp mode and CAP_SYS_ADMIN from the text of `/proc/<pid>/status`.
pub fn parse_status(status: &str) -> (SeccompMode, bool) {
    let mut seccomp = SeccompMode::Unknown;
    let mut cap_sys_admin = false;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("Seccomp:") {
            seccomp = match v.trim() {
                "0" => SeccompMode::Disabled,
                "1" => SeccompMode::Strict,
                "2" => SeccompMode::Filter,
                _ => SeccompMode::Unknown,
            };
        } else if let Some(v) = line.strip_prefix("CapEff:") {
            cap_sys_admin = u64::from_str_radix(v.trim(), 16)
                .map(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
                .unwrap_or(false);
        }
    }
    (seccomp, cap_sys_admin)
}

/// `io_uring_setup: EPERM (Operation not permitted): <cause>`.
pub fn describe(call: &str, errno: i32, cause: &str) -> String {
    format!("{call}: {}: {cause}", errno_display(errno))
}

/// The likely cause of an `io_uring_setup` failure with `errno`, given the host facts.
pub fn setup_error_cause(errno: i32, facts: &HostFacts) -> String {
    let filter_note = if facts.seccomp == SeccompMode::Filter {
        " (a seccomp filter is active in this process)"
    } else {
        ""
    };
    match errno {
        libc::EPERM => eperm_cause(facts),
        libc::ENOSYS => format!(
            "kernel without io_uring (older than 5.1 or CONFIG_IO_URING=n), or a sandbox \
             such as gVisor / a seccomp filter returning ENOSYS{filter_note}"
        ),
        libc::ENOMEM => match facts.memlock {
            Some((soft, hard)) => format!(
                "RLIMIT_MEMLOCK is {} (hard {}); kernels up to 5.11 charge ring memory to \
                 it: raise it (ulimit -l, systemd LimitMEMLOCK=) or use a newer kernel",
                limit_text(soft),
                limit_text(hard)
            ),
            None => "out of memory, or RLIMIT_MEMLOCK too low (kernels up to 5.11 charge \
                     ring memory to it; getrlimit failed)"
                .to_owned(),
        },
        libc::EOPNOTSUPP => {
            format!("refused by a seccomp profile, as some Kubernetes setups do{filter_note}")
        }
        libc::EINVAL => "the kernel rejects these setup parameters (8 entries, no flags) \
                         as unsupported"
            .to_owned(),
        libc::EMFILE | libc::ENFILE => "out of file descriptors".to_owned(),
        libc::EACCES => format!("denied by a security module (SELinux, AppArmor){filter_note}"),
        _ => format!("unexpected{filter_note}"),
    }
}

/// EPERM has three sources; check them in the order they are most telling.
fn eperm_cause(facts: &HostFacts) -> String {
    let filter = facts.seccomp == SeccompMode::Filter;
    let also_filter = if filter {
        " (a seccomp filter is also active and may be what refused)"
    } else {
        ""
    };
    match facts.io_uring_disabled {
        Some(2) => format!(
            "kernel.io_uring_disabled=2: io_uring is off for every process, root included\
             {also_filter}"
        ),
        Some(1) if !facts.cap_sys_admin => format!(
            "kernel.io_uring_disabled=1: io_uring is allowed only to CAP_SYS_ADMIN and \
             members of kernel.io_uring_group, and this process is neither{also_filter}"
        ),
        _ if filter => {
            "blocked by seccomp (filter mode), as Docker/containerd default profiles do".to_owned()
        }
        sysctl => format!(
            "neither kernel.io_uring_disabled ({}) nor seccomp (mode {}) explains it; \
             perhaps a security module (SELinux, AppArmor)",
            match sysctl {
                Some(n) => n.to_string(),
                None => "absent".to_owned(),
            },
            facts.seccomp.as_str()
        ),
    }
}

/// The likely cause of an `IORING_REGISTER_PROBE` failure after setup worked.
pub fn register_probe_error_cause(errno: i32, facts: &HostFacts) -> String {
    match errno {
        libc::EINVAL => "kernel older than 5.6 (no IORING_REGISTER_PROBE)".to_owned(),
        libc::EPERM | libc::ENOSYS | libc::EOPNOTSUPP | libc::EACCES
            if facts.seccomp == SeccompMode::Filter =>
        {
            "io_uring_register blocked by seccomp".to_owned()
        }
        libc::EPERM | libc::EACCES => "denied by a security module".to_owned(),
        _ => "unexpected".to_owned(),
    }
}

/// Bytes, or `unlimited`.
pub fn limit_text(limit: Option<u64>) -> String {
    match limit {
        Some(n) => format!("{n} bytes"),
        None => "unlimited".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(seccomp: SeccompMode, sysctl: Option<u32>, cap: bool) -> HostFacts {
        HostFacts {
            seccomp,
            io_uring_disabled: sysctl,
            cap_sys_admin: cap,
            memlock: Some((Some(65536), Some(65536))),
        }
    }

    #[test]
    fn status_parsing() {
        let s = "Name:\tx\nCapEff:\t000001fffeffffff\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(parse_status(s), (SeccompMode::Filter, true));
        let s = "CapEff:\t0000000000000000\nSeccomp:\t0\n";
        assert_eq!(parse_status(s), (SeccompMode::Disabled, false));
        assert_eq!(parse_status(""), (SeccompMode::Unknown, false));
        assert_eq!(
            parse_status("Seccomp:\t1\nCapEff:\tzz"),
            (SeccompMode::Strict, false)
        );
    }

    #[test]
    fn eperm_sysctl_2_wins_even_for_root() {
        for mode in [SeccompMode::Disabled, SeccompMode::Filter] {
            let c = setup_error_cause(libc::EPERM, &facts(mode, Some(2), true));
            assert!(c.starts_with("kernel.io_uring_disabled=2"), "{c}");
        }
    }

    #[test]
    fn eperm_sysctl_1_depends_on_cap_sys_admin() {
        let c = setup_error_cause(libc::EPERM, &facts(SeccompMode::Disabled, Some(1), false));
        assert!(c.starts_with("kernel.io_uring_disabled=1"), "{c}");
        assert!(!c.contains("seccomp"), "{c}");
        let c = setup_error_cause(libc::EPERM, &facts(SeccompMode::Filter, Some(1), false));
        assert!(
            c.starts_with("kernel.io_uring_disabled=1") && c.contains("seccomp"),
            "{c}"
        );
        // With CAP_SYS_ADMIN the sysctl allows us, so it must be seccomp.
        let c = setup_error_cause(libc::EPERM, &facts(SeccompMode::Filter, Some(1), true));
        assert!(c.starts_with("blocked by seccomp"), "{c}");
    }

    #[test]
    fn eperm_with_sysctl_0_or_absent_is_seccomp_when_filtered() {
        for sysctl in [Some(0), None] {
            let c = setup_error_cause(libc::EPERM, &facts(SeccompMode::Filter, sysctl, false));
            assert_eq!(
                c,
                "blocked by seccomp (filter mode), as Docker/containerd default profiles do"
            );
            let c = setup_error_cause(libc::EPERM, &facts(SeccompMode::Disabled, sysctl, false));
            assert!(c.starts_with("neither kernel.io_uring_disabled"), "{c}");
            assert!(c.contains("mode disabled"), "{c}");
        }
        let c = setup_error_cause(libc::EPERM, &facts(SeccompMode::Unknown, None, true));
        assert!(c.contains("(absent)") && c.contains("mode unknown"), "{c}");
    }

    #[test]
    fn other_errnos() {
        let f = facts(SeccompMode::Disabled, None, false);
        let c = setup_error_cause(libc::ENOSYS, &f);
        assert!(
            c.contains("gVisor") && !c.contains("filter is active"),
            "{c}"
        );
        let c = setup_error_cause(libc::ENOSYS, &facts(SeccompMode::Filter, None, false));
        assert!(c.contains("seccomp filter is active"), "{c}");
        let c = setup_error_cause(libc::ENOMEM, &f);
        assert!(
            c.starts_with("RLIMIT_MEMLOCK is 65536 bytes (hard 65536 bytes)"),
            "{c}"
        );
        let unlimited = HostFacts {
            memlock: Some((None, None)),
            ..f.clone()
        };
        assert!(setup_error_cause(libc::ENOMEM, &unlimited).contains("is unlimited"));
        let c = setup_error_cause(libc::EOPNOTSUPP, &f);
        assert!(c.contains("Kubernetes"), "{c}");
        assert!(setup_error_cause(libc::EINVAL, &f).contains("setup parameters"));
        assert_eq!(setup_error_cause(libc::EIO, &f), "unexpected");
    }

    #[test]
    fn describe_names_errno_and_cause() {
        assert_eq!(
            describe("io_uring_setup", libc::EPERM, "blocked by seccomp"),
            "io_uring_setup: EPERM (Operation not permitted): blocked by seccomp"
        );
        let f = facts(SeccompMode::Disabled, None, false);
        assert!(register_probe_error_cause(libc::EINVAL, &f).contains("5.6"));
    }
}
