//! Kernel and io_uring capability detection, done once at startup.
//!
//! The probe answers three questions and explains each answer:
//! - Does io_uring work in this process at all? If not, why: the errno from
//!   `io_uring_setup` and its likely cause (seccomp, `kernel.io_uring_disabled`,
//!   RLIMIT_MEMLOCK, no io_uring in the kernel).
//! - Which opcodes does it have (by name, from `IORING_REGISTER_PROBE`), and does it have
//!   every opcode the uring backend cannot do without ([`REQUIRED_OPS`])?
//! - Which optional features does it have ([`Optional`]), detected by opcode, by setting
//!   up a ring with the flag, or by trying the request?
//!
//! [`choose`] turns a probe and the user's `--backend` into a backend and a reason.
//! Any setup or probe failure means epoll under `auto`; a forced backend that cannot
//! start is an error, never a silent switch.

mod host;
mod names;
mod optional;
mod trial;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde_json::{json, Value};

pub use host::{parse_status, register_probe_error_cause, setup_error_cause};
pub use host::{HostFacts, SeccompMode};
pub use names::{errno_name, op_code, op_name, OP_NAMES};
pub use optional::{parse_disable, DisableSet, Optional};

/// The opcodes the uring backend submits unconditionally, with the kernel that added
/// each (in that order). A kernel missing any of them gets epoll under `auto`. Opcodes
/// the backend uses only when present (OPENAT2, STATX, MSG_RING, ...) are [`Optional`]
/// features instead; LINK_TIMEOUT is not used at all.
pub const REQUIRED_OPS: &[(&str, u8, &str)] = &[
    ("FSYNC", io_uring::opcode::Fsync::CODE, "5.1"),
    ("SENDMSG", io_uring::opcode::SendMsg::CODE, "5.3"),
    ("TIMEOUT", io_uring::opcode::Timeout::CODE, "5.4"),
    ("ACCEPT", io_uring::opcode::Accept::CODE, "5.5"),
    ("ASYNC_CANCEL", io_uring::opcode::AsyncCancel::CODE, "5.5"),
    ("CLOSE", io_uring::opcode::Close::CODE, "5.6"),
    ("READ", io_uring::opcode::Read::CODE, "5.6"),
    ("WRITE", io_uring::opcode::Write::CODE, "5.6"),
    ("RECV", io_uring::opcode::Recv::CODE, "5.6"),
    ("SEND", io_uring::opcode::Send::CODE, "5.6"),
    ("SPLICE", io_uring::opcode::Splice::CODE, "5.7"),
];

/// The environment variable that turns optional features off (`all`, or
/// comma-separated [`Optional::name`]s), for testing the paths without them.
pub const DISABLE_ENV: &str = "RINGSERVE_URING_DISABLE";

/// The backend that serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Per-thread io_uring rings.
    Uring,
    /// The one-shot epoll worker pool; works everywhere.
    Epoll,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Uring => "uring",
            BackendKind::Epoll => "epoll",
        })
    }
}

/// What the user asked for with `--backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendRequest {
    /// io_uring when it works and has the required ops; epoll otherwise.
    #[default]
    Auto,
    /// io_uring or an error.
    Uring,
    /// epoll, even where io_uring works.
    Epoll,
}

impl FromStr for BackendRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(BackendRequest::Auto),
            "uring" => Ok(BackendRequest::Uring),
            "epoll" => Ok(BackendRequest::Epoll),
            _ => Err(format!(
                "unknown backend `{s}`: expected auto, uring or epoll"
            )),
        }
    }
}

impl fmt::Display for BackendRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendRequest::Auto => "auto",
            BackendRequest::Uring => "uring",
            BackendRequest::Epoll => "epoll",
        })
    }
}

/// What io_uring can do in this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringProbe {
    /// `io_uring_setup` worked and `IORING_REGISTER_PROBE` registered.
    pub available: bool,
    /// Why not, as `call: ERRNO (message): likely cause`.
    pub error: Option<String>,
    /// The errno behind `error`, when there was one.
    pub errno: Option<i32>,
    /// Supported opcodes by kernel name, in opcode order.
    pub ops: Vec<&'static str>,
    /// `IORING_FEAT_*` bits from `io_uring_params.features`, as far as the io-uring crate
    /// exposes them (it keeps `REG_REG_RING` and `RW_ATTR` private).
    pub features: Vec<&'static str>,
    /// Every [`Optional`] feature, present or not, and how that was found out.
    pub optional: Vec<OptionalFeature>,
}

/// One optional feature's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionalFeature {
    /// [`Optional::name`].
    pub name: &'static str,
    /// The first mainline kernel with it.
    pub min_kernel: &'static str,
    /// Whether the kernel has it here (and it was not disabled).
    pub present: bool,
    /// Whether the uring backend uses it here: present, and not left alone on purpose
    /// ([`Optional::unused_because`]; COOP_TASKRUN only without SINGLE_ISSUER).
    pub used: bool,
    /// `opcode probe`, `tried`, `setup flag`, or `disabled by RINGSERVE_URING_DISABLE`.
    pub how: &'static str,
    /// Why it is absent, when detection said so (`ACCEPT CQE: EINVAL`).
    pub detail: Option<String>,
}

impl UringProbe {
    /// An unusable io_uring, with the reason.
    pub fn unavailable(error: String, errno: Option<i32>, disable: &DisableSet) -> UringProbe {
        UringProbe {
            available: false,
            error: Some(error),
            errno,
            ops: Vec::new(),
            features: Vec::new(),
            optional: optional::all_absent(disable),
        }
    }

    /// Whether `op` (kernel name) is supported.
    pub fn has_op(&self, op: &str) -> bool {
        self.ops.contains(&op)
    }

    /// Whether the uring backend uses the optional feature `f` here.
    pub fn uses(&self, f: Optional) -> bool {
        self.optional.iter().any(|o| o.name == f.name() && o.used)
    }

    /// Whether the optional feature `f` is present (and not disabled).
    pub fn has(&self, f: Optional) -> bool {
        self.optional
            .iter()
            .any(|o| o.name == f.name() && o.present)
    }

    /// The [`REQUIRED_OPS`] this io_uring lacks, as `(name, min kernel)`. Meaningful only
    /// when `available`.
    pub fn missing_required(&self) -> Vec<(&'static str, &'static str)> {
        REQUIRED_OPS
            .iter()
            .filter(|(name, _, _)| !self.has_op(name))
            .map(|&(name, _, kernel)| (name, kernel))
            .collect()
    }

    /// `Ok(summary)` if the uring backend could run on this io_uring, else `Err(why)`.
    fn usable(&self) -> Result<String, String> {
        if !self.available {
            return Err(self
                .error
                .clone()
                .unwrap_or_else(|| "io_uring unavailable".to_owned()));
        }
        let missing = self.missing_required();
        if !missing.is_empty() {
            let list: Vec<String> = missing
                .iter()
                .map(|(name, kernel)| format!("{name} ({kernel})"))
                .collect();
            return Err(format!(
                "io_uring lacks required ops: {} (kernel too old?)",
                list.join(", ")
            ));
        }
        Ok(format!(
            "io_uring available: {} ops, all {} required present",
            self.ops.len(),
            REQUIRED_OPS.len()
        ))
    }
}

/// Everything the probe found, and what `auto` makes of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `uname -r`.
    pub kernel: String,
    /// io_uring's verdict.
    pub uring: UringProbe,
    /// Facts about the process that explain io_uring failures.
    pub host: HostFacts,
    /// What [`BackendRequest::Auto`] chooses.
    pub backend: BackendKind,
    /// Why.
    pub reason: String,
    /// Things worth a log line that changed nothing (an unknown name in
    /// `RINGSERVE_URING_DISABLE`).
    pub warnings: Vec<String>,
}

/// The probe, computed on first call and cached: probing (a few throw-away rings, about
/// a millisecond) runs once per process.
pub fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(probe_fresh)
}

/// Probes now, uncached.
pub fn probe_fresh() -> Probe {
    let disable_spec = std::env::var_os(DISABLE_ENV)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    let disable = parse_disable(&disable_spec);
    let host = HostFacts::read();
    let kernel = crate::sys::probe::kernel_release().unwrap_or_else(|e| format!("unknown ({e})"));
    let uring = probe_uring(&host, &disable);
    let warnings = disable
        .unknown
        .iter()
        .map(|name| format!("{DISABLE_ENV}: unknown feature `{name}` ignored"))
        .collect();
    with_choice(kernel, uring, host, warnings)
}

/// Builds a [`Probe`] and fills in what `auto` chooses for it; for tests and tools that
/// construct probes.
pub fn with_choice(
    kernel: String,
    uring: UringProbe,
    host: HostFacts,
    warnings: Vec<String>,
) -> Probe {
    let mut p = Probe {
        kernel,
        uring,
        host,
        backend: BackendKind::Epoll,
        reason: String::new(),
        warnings,
    };
    // `auto` never fails; the fallback arm only keeps this panic-free.
    let (backend, reason) =
        choose(BackendRequest::Auto, &p).unwrap_or_else(|e| (BackendKind::Epoll, e));
    p.backend = backend;
    p.reason = reason;
    p
}

fn probe_uring(host: &HostFacts, disable: &DisableSet) -> UringProbe {
    let ring = match io_uring::IoUring::new(8) {
        Ok(ring) => ring,
        Err(e) => {
            let errno = e.raw_os_error();
            let error = match errno {
                Some(n) => host::describe("io_uring_setup", n, &setup_error_cause(n, host)),
                None => format!("io_uring_setup: {e}"),
            };
            return UringProbe::unavailable(error, errno, disable);
        }
    };
    let mut kprobe = io_uring::Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut kprobe) {
        let errno = e.raw_os_error();
        let call = "io_uring_register(IORING_REGISTER_PROBE)";
        let error = match errno {
            Some(n) => host::describe(call, n, &register_probe_error_cause(n, host)),
            None => format!("{call}: {e}"),
        };
        return UringProbe::unavailable(error, errno, disable);
    }
    let ops = (0..=u8::MAX)
        .filter(|&code| kprobe.is_supported(code))
        .map(op_name)
        .collect();
    let features = ring_features(ring.params());
    drop(ring);
    UringProbe {
        available: true,
        error: None,
        errno: None,
        ops,
        features,
        optional: optional::detect_all(&kprobe, disable),
    }
}

/// `IORING_FEAT_*` names, in bit order.
fn ring_features(p: &io_uring::Parameters) -> Vec<&'static str> {
    [
        ("SINGLE_MMAP", p.is_feature_single_mmap()),
        ("NODROP", p.is_feature_nodrop()),
        ("SUBMIT_STABLE", p.is_feature_submit_stable()),
        ("RW_CUR_POS", p.is_feature_rw_cur_pos()),
        ("CUR_PERSONALITY", p.is_feature_cur_personality()),
        ("FAST_POLL", p.is_feature_fast_poll()),
        ("POLL_32BITS", p.is_feature_poll_32bits()),
        ("SQPOLL_NONFIXED", p.is_feature_sqpoll_nonfixed()),
        ("EXT_ARG", p.is_feature_ext_arg()),
        ("NATIVE_WORKERS", p.is_feature_native_workers()),
        ("RSRC_TAGS", p.is_feature_resource_tagging()),
        ("CQE_SKIP", p.is_feature_skip_cqe_on_success()),
        ("LINKED_FILE", p.is_feature_linked_file()),
        ("RECVSEND_BUNDLE", p.is_feature_recvsend_bundle()),
        ("MIN_TIMEOUT", p.is_feature_min_timeout()),
        ("NO_IOWAIT", p.is_feature_no_iowait()),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

/// The backend for `req` on this probe, with the reason; `Err` when a forced backend
/// cannot run. `auto` always succeeds.
pub fn choose(req: BackendRequest, p: &Probe) -> Result<(BackendKind, String), String> {
    match req {
        BackendRequest::Epoll => Ok((BackendKind::Epoll, "forced by --backend epoll".to_owned())),
        BackendRequest::Uring => match p.uring.usable() {
            Ok(why) => Ok((
                BackendKind::Uring,
                format!("forced by --backend uring; {why}"),
            )),
            Err(why) => Err(format!("--backend uring: {why}")),
        },
        BackendRequest::Auto => Ok(match p.uring.usable() {
            Ok(why) => (BackendKind::Uring, why),
            Err(why) => (BackendKind::Epoll, why),
        }),
    }
}

impl Probe {
    /// The machine-readable report. Other tools parse it: keep keys stable.
    pub fn to_json(&self) -> Value {
        let u = &self.uring;
        let optional: Vec<Value> = u
            .optional
            .iter()
            .map(|o| {
                json!({
                    "name": o.name,
                    "present": o.present,
                    "used": o.used,
                    "min_kernel": o.min_kernel,
                    "how": o.how,
                    "detail": o.detail,
                })
            })
            .collect();
        // Unknown, not empty, when io_uring itself is unavailable.
        let missing_required = u.available.then(|| {
            u.missing_required()
                .into_iter()
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
        });
        let memlock = match self.host.memlock {
            Some((Some(soft), _)) => json!(soft),
            Some((None, _)) => json!("unlimited"),
            None => Value::Null,
        };
        json!({
            "kernel": self.kernel,
            "io_uring": {
                "available": u.available,
                "error": u.error,
                "errno": u.errno,
                "ops": u.ops,
                "features": u.features,
                "optional": optional,
                "missing_required": missing_required,
            },
            "backend": self.backend.to_string(),
            "reason": self.reason,
            "seccomp": self.host.seccomp.as_str(),
            "io_uring_disabled": self.host.io_uring_disabled,
            "cap_sys_admin": self.host.cap_sys_admin,
            "memlock_limit": memlock,
            "warnings": self.warnings,
        })
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let u = &self.uring;
        let mut out = String::new();
        let mut line = |label: &str, value: &str| {
            let text = format!("{label:<20}{value}");
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line("kernel:", &self.kernel);
        match (&u.error, u.available) {
            (_, true) => line("io_uring:", "available"),
            (Some(e), false) => line("io_uring:", &format!("unavailable: {e}")),
            (None, false) => line("io_uring:", "unavailable"),
        }
        if u.available {
            line(&format!("ops ({}):", u.ops.len()), &wrap(&u.ops, 20));
            line(
                &format!("features ({}):", u.features.len()),
                &wrap(&u.features, 20),
            );
            let missing = u.missing_required();
            if missing.is_empty() {
                line(
                    "required ops:",
                    &format!("all {} present", REQUIRED_OPS.len()),
                );
            } else {
                let list: Vec<String> = missing.iter().map(|(n, k)| format!("{n} ({k})")).collect();
                line("required ops:", &format!("missing {}", list.join(", ")));
            }
        }
        line("optional:", "");
        for o in &u.optional {
            let mark = match (o.present, o.used) {
                (true, true) => "used",
                (true, false) => "yes ",
                _ => "no  ",
            };
            let unused = Optional::ALL
                .into_iter()
                .find(|f| f.name() == o.name)
                .and_then(Optional::unused_because)
                .filter(|_| o.present);
            let detail = match (o.detail.as_deref(), unused) {
                (Some(d), _) => format!(": {d}"),
                (None, Some(why)) => format!(": not used: {why}"),
                (None, None) => String::new(),
            };
            line(
                "",
                &format!("{mark} {:<17}{:<6}{}{detail}", o.name, o.min_kernel, o.how),
            );
        }
        line("seccomp:", self.host.seccomp.as_str());
        line(
            "io_uring_disabled:",
            &self
                .host
                .io_uring_disabled
                .map_or("absent".to_owned(), |n| n.to_string()),
        );
        line(
            "RLIMIT_MEMLOCK:",
            &self
                .host
                .memlock
                .map_or("unknown".to_owned(), |(soft, _)| host::limit_text(soft)),
        );
        for w in &self.warnings {
            line("warning:", w);
        }
        line(
            "auto would choose:",
            &format!("{} because {}", self.backend, self.reason),
        );
        out
    }
}

/// Space-separated words, wrapped at 80 columns with `indent` spaces on later lines.
fn wrap(words: &[&str], indent: usize) -> String {
    let mut out = String::new();
    let mut col = indent;
    for w in words {
        if col > indent && col + 1 + w.len() > 80 {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            col = indent;
        } else if col > indent {
            out.push(' ');
            col += 1;
        }
        out.push_str(w);
        col += w.len();
    }
    out
}

#[cfg(test)]
mod tests;
