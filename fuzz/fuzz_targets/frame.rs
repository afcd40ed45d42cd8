//! The xfer frame decoder (src/proto/xfer/frame.rs): any bytes in, with the request and
//! the reply bound. Asserted:
//!
//! - nothing panics;
//! - `decode` is `Partial | Complete(n)` in the style of httparse: every prefix of the
//!   input is `Partial` or already the input's own answer, and a `Complete` frame is
//!   exactly `HEADER_LEN + len` bytes, within the bound;
//! - a complete frame re-encodes (`encode`) to exactly its bytes;
//! - a typed request re-encodes to exactly its frame when its flags are the ones the
//!   kind carries (only `Put` has one), and decodes back to itself;
//! - a typed reply's encoding is a fixed point (encode, decode, encode gives the same
//!   bytes), and a reply in canonical form (no stray flag or bit, a known error code, a
//!   UTF-8 message within 1024 bytes) re-encodes to exactly its frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringserve::proto::xfer::frame::{
    decode, encode, Header, Kind, Reply, Request, Status, FLAG_REPLACE, HEADER_LEN, MAX_REPLY,
    MAX_REQUEST,
};

fn whole(frame: &[u8], max: u32) -> (Header, &[u8]) {
    match decode(frame, max) {
        Ok(Status::Complete(h, n)) if n == frame.len() => (h, &frame[HEADER_LEN..]),
        other => panic!("an encoded frame decodes as {other:?}"),
    }
}

fn canonical_reply(h: &Header, payload: &[u8], rep: &Reply) -> bool {
    h.flags() == 0
        && match rep {
            Reply::Hello { .. } => payload[1] & !3 == 0,
            Reply::Error { message, .. } => {
                let code = u16::from_le_bytes([payload[0], payload[1]]);
                ringserve::proto::xfer::frame::Code::from_u16(code).is_some()
                    && message.len() <= 1024
                    && message.as_bytes() == &payload[2..]
            }
            _ => true,
        }
}

fuzz_target!(|data: &[u8]| {
    for max in [MAX_REQUEST, MAX_REPLY] {
        let got = decode(data, max);
        for k in 0..data.len().min(HEADER_LEN + 1) {
            let p = decode(&data[..k], max);
            let ok = p == Ok(Status::Partial)
                || p == got && !matches!(got, Ok(Status::Complete(_, n)) if n > k);
            assert!(ok, "prefix {k}: {p:?}, whole: {got:?}");
        }
        let Ok(Status::Complete(h, n)) = got else {
            continue;
        };
        assert_eq!(n, HEADER_LEN + h.len() as usize);
        assert!(n <= data.len() && h.len() <= max);
        assert_eq!(decode(&data[..n - 1], max), Ok(Status::Partial));
        let (frame, payload) = (&data[..n], &data[HEADER_LEN..n]);
        assert_eq!(encode(h.kind(), h.flags(), payload), frame);

        if let Some(req) = Request::decode(&h, payload) {
            assert!(h.kind().is_request());
            let again = req.encode();
            let (h2, p2) = whole(&again, MAX_REQUEST);
            assert_eq!(Request::decode(&h2, p2).as_ref(), Some(&req));
            let carried = if h.kind() == Kind::Put {
                FLAG_REPLACE
            } else {
                0
            };
            if h.flags() & !carried == 0 {
                assert_eq!(again, frame, "{req:?}");
            }
        }
        if let Some(rep) = Reply::decode(&h, payload) {
            assert!(!h.kind().is_request());
            let once = rep.encode();
            let (h2, p2) = whole(&once, MAX_REPLY);
            let rep2 = Reply::decode(&h2, p2).expect("an encoded reply decodes");
            assert_eq!(
                rep2.encode(),
                once,
                "not a fixed point: {rep:?} -> {rep2:?}"
            );
            if canonical_reply(&h, payload, &rep) {
                assert_eq!(once, frame, "{rep:?}");
                assert_eq!(rep2, rep);
            }
        }
    }
});
