//! Optional io_uring features: the ones the uring backend can do without but uses when
//! present. Each is detected the cheapest honest way: an opcode in the kernel's probe
//! when it is an opcode, a setup with the flag when it is a setup flag, and an actual
//! try when it is a request flag the probe cannot show (multishot).

use super::trial;
use super::OptionalFeature;

/// One optional feature. The uring backend reads these as fields of its `Caps`
/// (`caps.multishot_accept`), which `Caps::from_probe` fills once from the probe's
/// verdicts: [`UringProbe::uses`](super::UringProbe::uses), or
/// [`UringProbe::has`](super::UringProbe::has) for the opt-in multishot recv. Never
/// from a kernel version: distributions backport, and sandboxes take away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Optional {
    /// `IORING_OP_OPENAT2`, 5.6: open with `RESOLVE_BENEATH` inside the ring.
    Openat2,
    /// `IORING_OP_STATX`, 5.6: stat inside the ring.
    Statx,
    /// `IORING_OP_PROVIDE_BUFFERS`, 5.7: the first, per-SQE way to hand the kernel buffers.
    ProvideBuffers,
    /// `IORING_ACCEPT_MULTISHOT`, 5.19: one ACCEPT SQE yields a CQE per connection.
    /// A request flag, so only a try shows it; 5.10 answers the CQE with -EINVAL.
    MultishotAccept,
    /// `IORING_RECV_MULTISHOT`, 6.0: one RECV SQE with buffer select yields a CQE per
    /// arrival. Tried like multishot accept.
    MultishotRecv,
    /// `IORING_REGISTER_PBUF_RING`, 5.19: provided buffers as a shared ring instead of
    /// PROVIDE_BUFFERS SQEs. Tried by registering one.
    BufRing,
    /// `IORING_OP_MSG_RING`, 5.18: post a CQE to another ring (cross-thread wakeup).
    MsgRing,
    /// `IORING_OP_SEND_ZC`, 6.0: zero-copy send.
    SendZc,
    /// `IORING_SETUP_SINGLE_ISSUER`, 6.0: one task submits, so the kernel skips locking.
    SingleIssuer,
    /// `IORING_SETUP_DEFER_TASKRUN`, 6.1 (needs SINGLE_ISSUER): completions run only when
    /// the owner enters the kernel, batching task work.
    DeferTaskrun,
    /// `IORING_SETUP_COOP_TASKRUN`, 5.19: no IPI to interrupt the task for completions.
    CoopTaskrun,
    /// `IORING_SETUP_SUBMIT_ALL`, 5.18: keep submitting the batch after a failing SQE.
    SubmitAll,
    /// `cachestat(2)`, 6.5: a system call, not a ring feature, listed here because only
    /// the uring backend uses it. It tells whether a body is wholly in the page cache;
    /// when it is, the ring sends it with sendfile on its own thread instead of splicing
    /// it through an io-wq worker ("Measured choices" in docs/ARCHITECTURE.md). Tried
    /// on a memfd; a seccomp profile that does not know it answers ENOSYS or EPERM.
    Cachestat,
}

/// How a feature is detected.
#[derive(Clone, Copy)]
enum Detect {
    Opcode(u8),
    SetupFlag(trial::SetupFlag),
    Try(fn() -> Result<(), String>),
}

/// `how` for features seen in the register probe.
pub const HOW_OPCODE: &str = "opcode probe";
/// `how` for request flags and registrations detected by doing them.
pub const HOW_TRIED: &str = "tried";
/// `how` for setup flags detected by setting up a ring with them.
pub const HOW_SETUP_FLAG: &str = "setup flag";
/// `how` for features turned off by the environment.
pub const HOW_DISABLED: &str = "disabled by RINGSERVE_URING_DISABLE";

impl Optional {
    /// Every optional feature, in report order.
    pub const ALL: [Optional; 13] = [
        Optional::Openat2,
        Optional::Statx,
        Optional::ProvideBuffers,
        Optional::MultishotAccept,
        Optional::MultishotRecv,
        Optional::BufRing,
        Optional::MsgRing,
        Optional::SendZc,
        Optional::SingleIssuer,
        Optional::DeferTaskrun,
        Optional::CoopTaskrun,
        Optional::SubmitAll,
        Optional::Cachestat,
    ];

    /// Stable snake_case name, used in reports, JSON and `RINGSERVE_URING_DISABLE`.
    pub const fn name(self) -> &'static str {
        match self {
            Optional::Openat2 => "openat2",
            Optional::Statx => "statx",
            Optional::ProvideBuffers => "provide_buffers",
            Optional::MultishotAccept => "multishot_accept",
            Optional::MultishotRecv => "multishot_recv",
            Optional::BufRing => "buf_ring",
            Optional::MsgRing => "msg_ring",
            Optional::SendZc => "send_zc",
            Optional::SingleIssuer => "single_issuer",
            Optional::DeferTaskrun => "defer_taskrun",
            Optional::CoopTaskrun => "coop_taskrun",
            Optional::SubmitAll => "submit_all",
            Optional::Cachestat => "cachestat",
        }
    }

    /// Why the uring backend leaves this feature alone even when present, or `None`
    /// when it uses it. Reported by `ringserve probe` so "present" is never mistaken for
    /// "used".
    pub const fn unused_because(self) -> Option<&'static str> {
        match self {
            Optional::ProvideBuffers => {
                Some("superseded by buf_ring; without it, per-connection buffers held only while a recv is in flight")
            }
            Optional::MultishotRecv => Some(
                "opt-in (--uring-multishot-recv): no measurable gain for HTTP keep-alive (see \"Measured choices\" in docs/ARCHITECTURE.md)",
            ),
            Optional::SendZc => Some("pays off only for large sends over real NICs; bodies go by sendfile or splice"),
            _ => None,
        }
    }

    /// The first mainline kernel with the feature.
    pub const fn min_kernel(self) -> &'static str {
        match self {
            Optional::Openat2 | Optional::Statx => "5.6",
            Optional::ProvideBuffers => "5.7",
            Optional::MsgRing | Optional::SubmitAll => "5.18",
            Optional::MultishotAccept | Optional::BufRing | Optional::CoopTaskrun => "5.19",
            Optional::MultishotRecv | Optional::SendZc | Optional::SingleIssuer => "6.0",
            Optional::DeferTaskrun => "6.1",
            Optional::Cachestat => "6.5",
        }
    }

    fn detect(self) -> Detect {
        use io_uring::opcode;
        match self {
            Optional::Openat2 => Detect::Opcode(opcode::OpenAt2::CODE),
            Optional::Statx => Detect::Opcode(opcode::Statx::CODE),
            Optional::ProvideBuffers => Detect::Opcode(opcode::ProvideBuffers::CODE),
            Optional::MsgRing => Detect::Opcode(opcode::MsgRingData::CODE),
            Optional::SendZc => Detect::Opcode(opcode::SendZc::CODE),
            Optional::MultishotAccept => Detect::Try(trial::multishot_accept),
            Optional::MultishotRecv => Detect::Try(trial::multishot_recv),
            Optional::BufRing => Detect::Try(trial::buf_ring),
            Optional::SingleIssuer => Detect::SetupFlag(trial::SetupFlag::SingleIssuer),
            Optional::DeferTaskrun => Detect::SetupFlag(trial::SetupFlag::DeferTaskrun),
            Optional::CoopTaskrun => Detect::SetupFlag(trial::SetupFlag::CoopTaskrun),
            Optional::SubmitAll => Detect::SetupFlag(trial::SetupFlag::SubmitAll),
            Optional::Cachestat => Detect::Try(trial::cachestat),
        }
    }

    /// The `how` a report gives when the feature is detected (not disabled).
    pub fn how(self) -> &'static str {
        match self.detect() {
            Detect::Opcode(_) => HOW_OPCODE,
            Detect::SetupFlag(_) => HOW_SETUP_FLAG,
            Detect::Try(_) => HOW_TRIED,
        }
    }

    /// The feature with this snake_case name.
    pub fn from_name(name: &str) -> Option<Optional> {
        Optional::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// What `RINGSERVE_URING_DISABLE` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisableSet {
    /// Features to report absent without detecting them.
    pub disabled: Vec<Optional>,
    /// Names that matched no feature; reported as a warning, not an error, so an old
    /// binary still starts under a newer deployment's setting.
    pub unknown: Vec<String>,
}

/// Parses `RINGSERVE_URING_DISABLE`: comma-separated feature names or `all`;
/// case-insensitive, blanks and empty items ignored.
pub fn parse_disable(spec: &str) -> DisableSet {
    let mut set = DisableSet::default();
    for item in spec.split(',') {
        let item = item.trim().to_ascii_lowercase();
        if item.is_empty() {
            continue;
        }
        if item == "all" {
            set.disabled = Optional::ALL.to_vec();
            continue;
        }
        match Optional::from_name(&item) {
            Some(f) if !set.disabled.contains(&f) => set.disabled.push(f),
            Some(_) => {}
            None => set.unknown.push(item),
        }
    }
    set
}

/// Detects every optional feature on a ring that already worked, given its opcode probe.
pub fn detect_all(probe: &io_uring::Probe, disable: &DisableSet) -> Vec<OptionalFeature> {
    let mut found = Optional::ALL
        .into_iter()
        .map(|f| {
            if disable.disabled.contains(&f) {
                return feature(f, false, HOW_DISABLED, None);
            }
            let outcome = match f.detect() {
                Detect::Opcode(code) => match probe.is_supported(code) {
                    true => Ok(()),
                    false => Err("not in IORING_REGISTER_PROBE".to_owned()),
                },
                Detect::SetupFlag(flag) => trial::setup_flag(flag),
                Detect::Try(try_it) => try_it(),
            };
            feature(f, outcome.is_ok(), f.how(), outcome.err())
        })
        .collect::<Vec<_>>();
    // COOP_TASKRUN is what a ring gets instead of SINGLE_ISSUER|DEFER_TASKRUN.
    let single_issuer = found
        .iter()
        .any(|o| o.name == Optional::SingleIssuer.name() && o.present);
    for o in &mut found {
        if o.name == Optional::CoopTaskrun.name() && single_issuer {
            o.used = false;
        }
    }
    found
}

/// Every feature absent, for when io_uring itself is not.
pub fn all_absent(disable: &DisableSet) -> Vec<OptionalFeature> {
    Optional::ALL
        .into_iter()
        .map(|f| match disable.disabled.contains(&f) {
            true => feature(f, false, HOW_DISABLED, None),
            false => feature(f, false, f.how(), Some("io_uring unavailable".to_owned())),
        })
        .collect()
}

fn feature(
    f: Optional,
    present: bool,
    how: &'static str,
    detail: Option<String>,
) -> OptionalFeature {
    OptionalFeature {
        name: f.name(),
        min_kernel: f.min_kernel(),
        present,
        used: present && f.unused_because().is_none(),
        how,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_snake_case() {
        for f in Optional::ALL {
            assert_eq!(Optional::from_name(f.name()), Some(f));
            assert!(f
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
        }
    }

    #[test]
    fn disable_parsing() {
        assert_eq!(parse_disable(""), DisableSet::default());
        assert_eq!(parse_disable(" , ,"), DisableSet::default());
        let s = parse_disable("multishot_accept, BUF_RING ,msg_ring,multishot_accept");
        assert_eq!(
            s.disabled,
            [
                Optional::MultishotAccept,
                Optional::BufRing,
                Optional::MsgRing
            ]
        );
        assert!(s.unknown.is_empty());
        let s = parse_disable("all");
        assert_eq!(s.disabled, Optional::ALL);
        let s = parse_disable("send_zc,frobnicate,all");
        assert_eq!(s.disabled, Optional::ALL);
        assert_eq!(s.unknown, ["frobnicate"]);
    }

    #[test]
    fn disabled_features_are_reported_absent_without_trying() {
        let disable = parse_disable("all");
        let probe = io_uring::Probe::new();
        let report = detect_all(&probe, &disable);
        assert_eq!(report.len(), Optional::ALL.len());
        assert!(report.iter().all(|f| !f.present && f.how == HOW_DISABLED));
    }
}
