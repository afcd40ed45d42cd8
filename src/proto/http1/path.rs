//! Request-target to served path: the only place a URL becomes a file name, so every
//! check that keeps a request beneath the root starts here (the resolver checks again).

use crate::proto::path_from_bytes;
use std::fmt::Write;

/// A request-target reduced to a normalised path relative to the served root.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// `/`-separated, no empty, `.` or `..` segments; `""` is the root. The raw bytes
    /// the escapes stood for, in the contract's form (`proto::path_from_bytes`), so a
    /// name that is not UTF-8 is still found.
    pub rel: String,
    /// The path named a directory: it ended in `/` (or a dot segment, which RFC 3986
    /// §5.2.4 resolves to one). A directory asked for without it is redirected, a file
    /// asked for with it is not found.
    pub dir: bool,
    /// A segment names a dotfile (`.git`, `.env`): one that starts with `.`, except
    /// `.well-known` at the top (RFC 8615).
    pub dotfile: bool,
}

/// Parses an origin-form (`/p?q`) or absolute-form (`http://h/p?q`) target. `None` means
/// 400: another form, a bad escape or a NUL, or `..` above the root. Any other byte,
/// escaped or not, is a name's byte: `\` is an ordinary character on Linux, and a name
/// need not be UTF-8.
pub fn resolve(target: &str) -> Option<Target> {
    let path = if target.starts_with('/') {
        target
    } else {
        absolute_path(target)?
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.contains('#') {
        return None;
    }
    plain(path).or_else(|| general(path))
}

/// Any path: decoded, then its dot segments resolved.
fn general(path: &str) -> Option<Target> {
    let decoded = decode(path)?;
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop()?;
            }
            s => segments.push(s),
        }
    }
    let dir = matches!(
        decoded.rsplit(|&b| b == b'/').next(),
        Some(b"" | b"." | b"..")
    );
    let dotfile = segments
        .iter()
        .enumerate()
        .any(|(i, s)| s.first() == Some(&b'.') && !(i == 0 && *s == b".well-known"));
    Some(Target {
        rel: path_from_bytes(&segments.join(&b'/')),
        dir,
        dotfile,
    })
}

/// The common case without a copy per step: no escape, no NUL, no empty, `.` or `..`
/// segment (but a trailing `/`). Such a path already is its normal form, so `rel` is
/// the path itself, one pooled string. Anything else goes the general way.
fn plain(path: &str) -> Option<Target> {
    let inner = path.strip_prefix('/')?;
    if inner.bytes().any(|b| b == b'%' || b == 0) {
        return None;
    }
    let (body, dir) = match inner.strip_suffix('/') {
        Some(b) => (b, true),
        None => (inner, inner.is_empty()),
    };
    let mut dotfile = false;
    if !body.is_empty() {
        for (i, seg) in body.split('/').enumerate() {
            if matches!(seg, "" | "." | "..") {
                return None;
            }
            dotfile |= seg.starts_with('.') && !(i == 0 && seg == ".well-known");
        }
    }
    Some(Target {
        rel: crate::proto::pool::string_of(body),
        dir,
        dotfile,
    })
}

/// The path of an absolute-form target; an empty path is `/` (RFC 9112 §3.2.2).
fn absolute_path(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let path = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
    Some(if path.starts_with('/') { path } else { "/" })
}

/// Percent-decodes to raw bytes, refusing malformed escapes and NUL (literal or
/// escaped): no Linux name holds one.
fn decode(path: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        let b = if b == b'%' {
            hex(bytes.next()?)? << 4 | hex(bytes.next()?)?
        } else {
            b
        };
        if b == 0 {
            return None;
        }
        out.push(b);
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Appends `bytes` percent-encoded, keeping only unreserved characters and `/`. The
/// result is safe unquoted in a header and inside an HTML attribute, and a name such as
/// `javascript:x` cannot turn into a scheme.
pub fn push_encoded(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path of up to five pieces from an alphabet of the awkward ones: wherever
    /// the fast path answers, the general one answers the same.
    #[test]
    fn the_plain_path_agrees_with_the_general_one() {
        let pieces = [
            "/",
            "a",
            ".",
            "..",
            ".git",
            ".well-known",
            "%2e",
            "b/",
            "é",
            "//",
        ];
        let mut paths = vec![String::new()];
        let mut checked = 0;
        for _ in 0..5 {
            let mut next = Vec::new();
            for p in &paths {
                for piece in pieces {
                    next.push(format!("{p}{piece}"));
                }
            }
            for p in &next {
                let p = format!("/{p}");
                if let Some(fast) = plain(&p) {
                    assert_eq!(Some(fast), general(&p), "{p}");
                    checked += 1;
                }
            }
            paths = next;
        }
        assert!(checked > 1000, "{checked}");
    }

    fn rel(t: &str) -> Option<(String, bool)> {
        resolve(t).map(|t| (t.rel, t.dir))
    }

    #[test]
    fn origin_and_absolute_forms() {
        assert_eq!(rel("/"), Some(("".into(), true)));
        assert_eq!(rel("/a/b.txt?x=1/../.."), Some(("a/b.txt".into(), false)));
        assert_eq!(rel("/a/?q"), Some(("a".into(), true)));
        assert_eq!(rel("http://h:80/a/b"), Some(("a/b".into(), false)));
        assert_eq!(rel("HTTPS://h"), Some(("".into(), true)));
        assert_eq!(rel("http://h?q"), Some(("".into(), true)));
        assert_eq!(rel("*"), None);
        assert_eq!(rel("h:80"), None);
        assert_eq!(rel("ftp://h/a"), None);
    }

    #[test]
    fn decodes_then_normalises() {
        assert_eq!(rel("/a%20b/%C3%A9"), Some(("a b/é".into(), false)));
        assert_eq!(rel("//a/./b//c/../d"), Some(("a/b/d".into(), false)));
        assert_eq!(rel("/a/b/.."), Some(("a".into(), true)));
        assert_eq!(rel("/a/%2e%2E/b"), Some(("b".into(), false)));
        assert_eq!(rel("/a%2Fb"), Some(("a/b".into(), false)));
        assert_eq!(rel("/a/../.."), None);
        assert_eq!(rel("/%2e%2e/etc/passwd"), None);
    }

    #[test]
    fn refuses_bad_escapes_and_nul() {
        for t in ["/a%", "/a%2", "/a%zz", "/a%00b", "/a#f"] {
            assert_eq!(resolve(t), None, "{t}");
        }
    }

    #[test]
    fn backslash_and_non_utf8_are_name_bytes() {
        assert_eq!(rel("/a\\b"), Some(("a\\b".into(), false)));
        assert_eq!(rel("/a%5Cb"), Some(("a\\b".into(), false)));
        assert_eq!(rel("/d/%FF%FE.bin"), Some(("d/\0ff\0fe.bin".into(), false)));
        assert_eq!(rel("/%C3%28"), Some(("\0c3(".into(), false)));
        // The fuzz target's first find (its own assertion was wrong, the resolver right):
        // an escaped backslash between dots is one name, not two steps up.
        assert_eq!(
            rel("/a%5c..%5c..%5coutside"),
            Some(("a\\..\\..\\outside".into(), false))
        );
    }

    #[test]
    fn dotfiles_are_flagged_but_well_known_is_not() {
        let dot = |t: &str| resolve(t).unwrap().dotfile;
        for t in [
            "/.git/config",
            "/a/.env",
            "/%2egit/",
            "/.well-known/x/.h",
            "/a/.well-known/",
        ] {
            assert!(dot(t), "{t}");
        }
        for t in [
            "/",
            "/a/b.txt",
            "/.well-known/",
            "/.well-known/acme/x",
            "/a/./b",
            "/a/b/..",
            "/a..b",
        ] {
            assert!(!dot(t), "{t}");
        }
    }

    #[test]
    fn encodes_everything_but_unreserved_and_slash() {
        let mut s = String::new();
        push_encoded(&mut s, b"a b/\"<>&'?#%:\xff~");
        assert_eq!(s, "a%20b/%22%3C%3E%26%27%3F%23%25%3A%FF~");
    }
}
