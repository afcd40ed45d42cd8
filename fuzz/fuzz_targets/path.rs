//! Request-target normalisation (src/proto/http1/path.rs): any string in. Asserted,
//! what `Target` promises:
//!
//! - `rel` is relative (no leading `/`) and has no empty, `.` or `..` segment;
//! - it holds no NUL and no backslash (the decoder refuses both, literal or escaped);
//! - normalising is idempotent: `rel`, percent-encoded back into a target, resolves
//!   to itself (`dir` set exactly when a `/` is appended).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringserve::proto::http1::path::{push_encoded, resolve};

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
    assert!(!t.rel.contains(['\0', '\\']), "{target:?} -> {:?}", t.rel);

    let mut again = String::from("/");
    push_encoded(&mut again, t.rel.as_bytes());
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
