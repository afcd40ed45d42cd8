//! Request-target normalisation (src/proto/http1/path.rs): any string in. Asserted,
//! what `Target` promises:
//!
//! - `rel` is relative (no leading `/`) and has no empty, `.` or `..` segment;
//! - the raw name bytes it stands for (`proto::path_bytes`: bytes that are not UTF-8
//!   travel as NUL and two hex digits) hold no NUL: the decoder refuses one, literal
//!   or escaped. A backslash is an ordinary name byte on Linux (`a\..` is one
//!   component, not a step up), so it may appear;
//! - normalising is idempotent: those raw bytes, percent-encoded back into a target,
//!   resolve to the same `rel` (`dir` set exactly when a `/` is appended).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringserve::proto::http1::path::{push_encoded, resolve};
use ringserve::proto::path_bytes;

fuzz_target!(|data: &[u8]| {
    // Targets reach the resolver as UTF-8 (httparse's token check); other bytes too,
    // lossily, so every input exercises it.
    let target = String::from_utf8_lossy(data);
    let Some(t) = resolve(&target) else { return };
    assert!(
        !t.rel.starts_with('/'),
        "{target:?} -> {:?} is absolute",
        t.rel
    );
    if !t.rel.is_empty() {
        for seg in t.rel.split('/') {
            assert!(
                !matches!(seg, "" | "." | ".."),
                "{target:?} -> {:?} has {seg:?}",
                t.rel
            );
        }
    }
    let raw = path_bytes(&t.rel).unwrap_or_else(|| panic!("{target:?} -> {:?}: a bare NUL", t.rel));
    assert!(!raw.contains(&0), "{target:?} -> {:?}", t.rel);
    if !raw.is_empty() {
        for seg in raw.split(|&b| b == b'/') {
            assert!(
                !matches!(seg, b"" | b"." | b".."),
                "{target:?} -> {:?} has raw segment {seg:?}",
                t.rel
            );
        }
    }

    let mut again = String::from("/");
    push_encoded(&mut again, &raw);
    let r = resolve(&again).expect("an encoded normalised path resolves");
    assert_eq!(
        r.rel, t.rel,
        "not idempotent: {target:?} -> {:?} -> {again:?}",
        t.rel
    );
    assert_eq!(r.dir, t.rel.is_empty());
    if !t.rel.is_empty() {
        again.push('/');
        let r = resolve(&again).expect("with a trailing slash");
        assert_eq!((r.rel.as_str(), r.dir), (t.rel.as_str(), true));
    }
});
