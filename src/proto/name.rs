//! Raw file-name bytes in an [`FsOp`](super::FsOp) path.
//!
//! The contract's paths are `String`s, but a Linux name is bytes and need not be UTF-8.
//! A byte that is not part of valid UTF-8 travels as NUL and two lowercase hex digits.
//! NUL never occurs in a Linux path, so the form cannot be mistaken for a real name,
//! and every other character, `\` and `%` included, stands for itself. The backend
//! turns the path back into bytes with [`path_bytes`] (`fs.rs`) before resolving it.

use std::borrow::Cow;

/// The path for raw bytes `name`: valid UTF-8 as it is, any other byte escaped.
pub fn path_from_bytes(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push('\0');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xf));
        }
    }
    out
}

/// The raw bytes a path stands for; `None` if it holds a NUL that is not the start of
/// an escape (such a path names nothing).
pub fn path_bytes(path: &str) -> Option<Cow<'_, [u8]>> {
    if !path.contains('\0') {
        return Some(Cow::Borrowed(path.as_bytes()));
    }
    let mut out = Vec::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        if b == 0 {
            let hi = hex_value(bytes.next()?)?;
            let lo = hex_value(bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Some(Cow::Owned(out))
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n), 16).unwrap_or('0')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_name_without_nul() {
        for name in [
            &b"plain.txt"[..],
            b"\xff\xfe.bin",
            "é/ü".as_bytes(),
            b"a\\b%20c#?\"'",
            b"half\xc3",
            b"",
        ] {
            let p = path_from_bytes(name);
            assert_eq!(path_bytes(&p).as_deref(), Some(name), "{p:?}");
        }
        assert_eq!(path_from_bytes(b"x\xff"), "x\0ff");
        assert!(matches!(path_bytes("a/b"), Some(Cow::Borrowed(b"a/b"))));
    }

    #[test]
    fn a_bare_nul_names_nothing() {
        for p in ["a\0", "a\0f", "a\0zz", "\0FF"] {
            assert_eq!(path_bytes(p), None, "{p:?}");
        }
    }
}
