//! Dropping root: `--user USER[:GROUP]`. The server binds its listeners as root (or
//! is handed them), then becomes an unprivileged user before it serves a byte, and
//! checks that it really did: a drop that half happened is an error, never a
//! warning.
//!
//! The supplementary groups become exactly the one target group (`setgroups(1,
//! [gid])`), not the user's memberships from the group database (`initgroups`): the
//! server's rights are then `USER` and `GROUP` and nothing an administrator added to
//! that user for another purpose, and the result is one list we can verify. Give
//! the files to be served to that group (or make them world-readable).
//!
//! glibc applies setuid/setgid/setgroups to every thread of the process (SIGSETXID),
//! but `ringserve serve` calls [`drop_to`] before it starts any server thread, so
//! no thread ever runs with other credentials than the rest.
#![forbid(unsafe_code)]

use crate::sys::user;
use std::fmt;
use std::str::FromStr;

/// `USER[:GROUP]`, each a name or a numeric id. Without a group, the user's primary
/// group (from the passwd database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: String,
    pub group: Option<String>,
}

impl FromStr for UserSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        if user.is_empty() {
            return Err(format!("{s:?}: no user (USER[:GROUP])"));
        }
        if group.is_some_and(str::is_empty) {
            return Err(format!("{s:?}: empty group (USER[:GROUP])"));
        }
        if group.is_some_and(|g| g.contains(':')) {
            return Err(format!("{s:?}: more than one ':' (USER[:GROUP])"));
        }
        Ok(UserSpec {
            user: user.to_string(),
            group: group.map(str::to_string),
        })
    }
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{}:{g}", self.user),
            None => write!(f, "{}", self.user),
        }
    }
}

/// The ids a [`UserSpec`] names here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// A name is looked up first; a name that is all digits and not in the database is
/// taken as the id (as chown(1) does).
fn numeric(s: &str) -> Option<u32> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Resolves `spec` with the passwd and group databases.
pub fn resolve(spec: &UserSpec) -> Result<Ids, String> {
    let db = |e: std::io::Error| format!("reading the user database: {e}");
    let pw = match user::passwd_by_name(&spec.user).map_err(db)? {
        Some(pw) => Some(pw),
        None => match numeric(&spec.user) {
            Some(uid) => user::passwd_by_uid(uid).map_err(db)?,
            None => return Err("no such user".into()),
        },
    };
    let uid = match &pw {
        Some(pw) => pw.uid,
        None => numeric(&spec.user).expect("numeric: looked up by uid above"),
    };
    let gid = match &spec.group {
        Some(g) => match user::group_by_name(g).map_err(db)? {
            Some(gid) => gid,
            None => match numeric(g) {
                Some(gid) => gid,
                None => return Err(format!("no such group {g}")),
            },
        },
        None => match &pw {
            Some(pw) => pw.gid,
            None => {
                return Err(format!(
                    "uid {uid} has no passwd entry, so no primary group: give USER:GROUP"
                ))
            }
        },
    };
    Ok(Ids { uid, gid })
}

/// What [`drop_to`] left the process as, read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub uid: u32,
    pub gid: u32,
    /// The supplementary groups.
    pub groups: Vec<u32>,
    /// False when the process already ran as exactly these ids (a re-exec that had
    /// dropped already): nothing was called.
    pub changed: bool,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        write!(
            f,
            "uid {} gid {} groups {}",
            self.uid,
            self.gid,
            groups.join(",")
        )
    }
}

/// Becomes `spec`: setgroups(1, [gid]), setgid, setuid, in that order (each later
/// call needs the privilege the earlier ones keep), then verifies with the kernel:
/// real, effective and saved uid and gid are the targets, the group list is
/// `[gid]`, and setuid(0)/setgid(0) now fail (unless the target is 0). Any failure
/// or mismatch is an `Err` with one line saying which. A process already running as
/// exactly `uid`/`gid` (all three of each) succeeds without calling anything, its
/// group list as it is (an unprivileged process could not change it anyway).
///
/// Call it before starting threads (see the module doc).
pub fn drop_to(spec: &UserSpec) -> Result<Dropped, String> {
    let ids = resolve(spec)?;
    drop_to_ids(ids)
}

/// Gives `paths` (what the server made as root: sockets, log files) to `ids`, when we
/// are root; a server already running as the user (re-executed by SIGHUP) owns them.
pub fn give(ids: Ids, paths: &[std::path::PathBuf]) -> Result<(), String> {
    if user::effective_uid() != 0 {
        return Ok(());
    }
    for p in paths {
        std::os::unix::fs::chown(p, Some(ids.uid), Some(ids.gid))
            .map_err(|e| format!("chown {}: {e}", p.display()))?;
    }
    Ok(())
}

/// [`drop_to`] with the ids already resolved.
pub fn drop_to_ids(Ids { uid, gid }: Ids) -> Result<Dropped, String> {
    let read = |what: &str, e: std::io::Error| format!("reading back {what}: {e}");
    let now_uid = user::res_uid().map_err(|e| read("the uids", e))?;
    let now_gid = user::res_gid().map_err(|e| read("the gids", e))?;
    let already = now_uid == (uid, uid, uid) && now_gid == (gid, gid, gid);
    if !already {
        let hint = |call: &str, e: std::io::Error| {
            if e.raw_os_error() == Some(libc::EPERM) {
                format!("{call}: {e} (only root, or CAP_SETUID and CAP_SETGID, can change user)")
            } else {
                format!("{call}: {e}")
            }
        };
        user::set_groups(&[gid]).map_err(|e| hint(&format!("setgroups([{gid}])"), e))?;
        user::set_gid(gid).map_err(|e| hint(&format!("setgid({gid})"), e))?;
        user::set_uid(uid).map_err(|e| hint(&format!("setuid({uid})"), e))?;
    }
    let got_uid = user::res_uid().map_err(|e| read("the uids", e))?;
    let got_gid = user::res_gid().map_err(|e| read("the gids", e))?;
    let groups = user::groups().map_err(|e| read("the groups", e))?;
    if got_uid != (uid, uid, uid) {
        return Err(format!(
            "after setuid({uid}) the real, effective and saved uids are {got_uid:?}"
        ));
    }
    if got_gid != (gid, gid, gid) {
        return Err(format!(
            "after setgid({gid}) the real, effective and saved gids are {got_gid:?}"
        ));
    }
    if !already && groups != [gid] {
        return Err(format!(
            "after setgroups([{gid}]) the supplementary groups are {groups:?}"
        ));
    }
    // Root stays able to become root again; anyone else must not be.
    if uid != 0 {
        if user::set_uid(0).is_ok() {
            return Err(format!(
                "setuid(0) still succeeds after dropping to uid {uid}"
            ));
        }
        if gid != 0 && user::set_gid(0).is_ok() {
            return Err(format!(
                "setgid(0) still succeeds after dropping to gid {gid}"
            ));
        }
    }
    Ok(Dropped {
        uid,
        gid,
        groups,
        changed: !already,
    })
}
