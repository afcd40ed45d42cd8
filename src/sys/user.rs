//! Users, groups and the process's credentials: the passwd and group databases
//! (getpwnam_r and friends, so NSS modules answer as for any program), setgroups,
//! setgid, setuid, and reading back what the kernel holds (getresuid, getresgid,
//! getgroups).
//!
//! glibc's setuid/setgid/setgroups change every thread of the process (it signals
//! each thread with SIGSETXID and has it make the same call), so calling them while
//! other threads run is correct but costly; the server calls them before it starts
//! any.

use std::ffi::{CStr, CString};
use std::io;

/// One passwd entry: what dropping to a user needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub uid: u32,
    /// The user's primary group.
    pub gid: u32,
}

/// The `*_r` calls return an error number (0 = success, found or not) and ask for a
/// bigger buffer with ERANGE: this retries up to 1 MiB.
fn with_buffer<T>(
    mut call: impl FnMut(&mut [libc::c_char]) -> (i32, Option<T>),
) -> io::Result<Option<T>> {
    let mut len = 1024usize;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        match call(&mut buf) {
            (0, found) => return Ok(found),
            // Several libcs say "not found" with these rather than 0 and a null result.
            (libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM, _) => return Ok(None),
            (libc::ERANGE, _) if len < 1 << 20 => len *= 4,
            (e, _) => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

type PwFn<K> = unsafe extern "C" fn(
    K,
    *mut libc::passwd,
    *mut libc::c_char,
    libc::size_t,
    *mut *mut libc::passwd,
) -> libc::c_int;

fn passwd<K: Copy>(key: K, f: PwFn<K>) -> io::Result<Option<Passwd>> {
    with_buffer(|buf| {
        // SAFETY: passwd is plain old data; all-zero is a valid value.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `f` is getpwnam_r or getpwuid_r; `pw`, `buf` (with its length) and
        // `result` are live for the call, and `key` is a live C string or a uid.
        let r = unsafe { f(key, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
        if r != 0 || result.is_null() {
            return (r, None);
        }
        // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
        let name = unsafe { CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned();
        (
            0,
            Some(Passwd {
                name,
                uid: pw.pw_uid,
                gid: pw.pw_gid,
            }),
        )
    })
}

/// The passwd entry named `name`, if any.
pub fn passwd_by_name(name: &str) -> io::Result<Option<Passwd>> {
    let c = cstring(name)?;
    passwd(c.as_ptr(), libc::getpwnam_r)
}

/// The passwd entry of `uid`, if any.
pub fn passwd_by_uid(uid: u32) -> io::Result<Option<Passwd>> {
    passwd(uid, libc::getpwuid_r)
}

type GrFn<K> = unsafe extern "C" fn(
    K,
    *mut libc::group,
    *mut libc::c_char,
    libc::size_t,
    *mut *mut libc::group,
) -> libc::c_int;

fn group(key: *const libc::c_char, f: GrFn<*const libc::c_char>) -> io::Result<Option<u32>> {
    with_buffer(|buf| {
        // SAFETY: group is plain old data; all-zero is a valid value.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `f` is getgrnam_r or getgrgid_r; `gr`, `buf` (with its length) and
        // `result` are live for the call, and `key` is a live C string or a gid.
        let r = unsafe { f(key, &mut gr, buf.as_mut_ptr(), buf.len(), &mut result) };
        if r != 0 || result.is_null() {
            return (r, None);
        }
        (0, Some(gr.gr_gid))
    })
}

/// The id of the group named `name`, if there is one.
pub fn group_by_name(name: &str) -> io::Result<Option<u32>> {
    let c = cstring(name)?;
    group(c.as_ptr(), libc::getgrnam_r)
}

/// setgroups(2): the supplementary group list becomes exactly `groups`.
pub fn set_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: `groups` is a live array of gid_t (u32) of the length we pass.
    unsafe { syscall!(setgroups(groups.len(), groups.as_ptr())) }.map(drop)
}

/// setgid(2), for every thread (glibc).
pub fn set_gid(gid: u32) -> io::Result<()> {
    // SAFETY: plain setgid(2).
    unsafe { syscall!(setgid(gid)) }.map(drop)
}

/// setuid(2), for every thread (glibc).
pub fn set_uid(uid: u32) -> io::Result<()> {
    // SAFETY: plain setuid(2).
    unsafe { syscall!(setuid(uid)) }.map(drop)
}

/// This process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() }
}

/// The real, effective and saved user ids.
pub fn res_uid() -> io::Result<(u32, u32, u32)> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three live uid_t the kernel fills.
    unsafe { syscall!(getresuid(&mut r, &mut e, &mut s)) }?;
    Ok((r, e, s))
}

/// The real, effective and saved group ids.
pub fn res_gid() -> io::Result<(u32, u32, u32)> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three live gid_t the kernel fills.
    unsafe { syscall!(getresgid(&mut r, &mut e, &mut s)) }?;
    Ok((r, e, s))
}

/// The supplementary group list, as getgroups(2) reports it.
pub fn groups() -> io::Result<Vec<u32>> {
    // SAFETY: a size of 0 only asks how many there are.
    let n = unsafe { syscall!(getgroups(0, std::ptr::null_mut())) }?;
    let mut v = vec![0u32; n as usize];
    // SAFETY: `v` has room for `n` gid_t and we say so.
    let n = unsafe { syscall!(getgroups(n, v.as_mut_ptr())) }?;
    v.truncate(n as usize);
    Ok(v)
}
