//! Numbers written into a response head without `core::fmt`: a hot file's head is
//! its ETag (four numbers in hex) and Content-Length, every response, and the
//! formatting machinery was the largest single cost of building one (`bench/profile.sh
//! 1k-256 uring`: `core::fmt::write` under `Reply::file`).

/// Appends `v` in lowercase hex, as `{:x}` does.
pub fn hex(out: &mut String, v: u64) {
    hex_min(out, v, 1);
}

/// Appends `v` in lowercase hex, zero-padded to at least `width` digits (`{:0width$x}`).
pub fn hex_min(out: &mut String, v: u64, width: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = HEX[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    for _ in (buf.len() - i)..width.min(16) {
        out.push('0');
    }
    push_ascii(out, &buf[i..]);
}

/// Appends `v` in decimal, as `{}` does.
pub fn dec(out: &mut String, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    push_ascii(out, &buf[i..]);
}

/// Appends ASCII digits (no UTF-8 check of the whole: each is one byte).
fn push_ascii(out: &mut String, digits: &[u8]) {
    out.reserve(digits.len());
    for &d in digits {
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn they_write_what_core_fmt_writes(v in any::<u64>(), w in 0usize..20) {
            let mut s = String::from("x");
            hex(&mut s, v);
            prop_assert_eq!(&s, &format!("x{v:x}"));
            let mut s = String::new();
            hex_min(&mut s, v, w);
            prop_assert_eq!(&s, &format!("{v:0w$x}", w = w.min(16)));
            let mut s = String::new();
            dec(&mut s, v);
            prop_assert_eq!(s, v.to_string());
        }
    }

    #[test]
    fn edges() {
        for v in [0, 1, 9, 10, 15, 16, u64::MAX] {
            let (mut h, mut d) = (String::new(), String::new());
            hex(&mut h, v);
            dec(&mut d, v);
            assert_eq!((h, d), (format!("{v:x}"), v.to_string()));
        }
    }
}
