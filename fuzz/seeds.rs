//! Writes the fuzz targets' seed corpus (fuzz/corpus/<target>/): real requests and the
//! attacks each target exists for, and xfer frames made by the crate's own encoder.
//! A plain example of the main crate (stable, no libFuzzer), so the seeds can be
//! remade after a protocol change:
//!
//! ```text
//! cargo run --example fuzz-seeds -- fuzz/corpus
//! ```

use ringserve::proto::xfer::frame::{
    encode, Code, Entry, EntryKind, Identity, Kind, Meta, Reply, Request,
};
use std::path::Path;

/// Request-targets: ordinary ones, then every way of trying to leave the root.
const TARGETS: &[&str] = &[
    "/",
    "/a.txt",
    "/d/",
    "/d",
    "/d/e/",
    "/d/b.txt?x=1",
    "http://h/a.txt",
    "HTTPS://h",
    "/a%20b/%C3%A9",
    "//a/./b//c/../d",
    "/../outside/canary.txt",
    "/%2e%2e/outside/canary.txt",
    "/%2E%2e%2Foutside%2Fcanary.txt",
    "/d/..%2f..%2foutside/canary.txt",
    "/d/%2e%2e/%2e%2e/x",
    "/escape/canary.txt",
    "/canary",
    "/abscanary",
    "/abs/etc/passwd",
    "/d/upup/outside/canary.txt",
    "/d/up/a.txt",
    "/inside",
    "/loop",
    "/la",
    "/fifo",
    "/.ringserve-part-x",
    "/a.txt%00.html",
    "/a%5c..%5c..%5coutside",
    "/%c0%ae%c0%ae/%c0%ae%c0%ae/outside",
    "/a%",
    "/a#frag",
    "http://h/../../outside",
    "*",
];

fn http_seeds() -> Vec<(String, Vec<u8>)> {
    let get = |t: &str, extra: &str| format!("GET {t} HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
    let mut s: Vec<(String, String)> = TARGETS
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("target-{i:02}"), get(t, "")))
        .collect();
    let more = [
        ("head", "HEAD /a.txt HTTP/1.1\r\nHost: h\r\n\r\n".to_string()),
        ("http10", "GET /a.txt HTTP/1.0\r\n\r\n".into()),
        ("http10-keepalive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /d/ HTTP/1.0\r\n\r\n".into()),
        ("close", get("/a.txt", "Connection: close\r\n")),
        ("pipelined", [get("/a.txt", ""), get("/d/b.txt", ""), get("/escape/canary.txt", ""), get("/d/e/", "")].concat()),
        ("range", get("/d/b.txt", "Range: bytes=1-5\r\n")),
        ("range-suffix", get("/d/b.txt", "Range: bytes=-3\r\n")),
        ("range-multi", get("/d/b.txt", "Range: bytes=0-0,2-3,10-\r\n")),
        ("range-unsatisfiable", get("/a.txt", "Range: bytes=100-200\r\n")),
        ("if-none-match", get("/a.txt", "If-None-Match: *\r\n")),
        ("if-modified-since", get("/a.txt", "If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT\r\n")),
        ("if-range", get("/d/b.txt", "Range: bytes=0-3\r\nIf-Range: \"x\"\r\n")),
        ("post-body", "POST /a.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET /a.txt HTTP/1.1\r\n\r\n".into()),
        ("chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into()),
        ("expect", "PUT /x HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n".into()),
        ("bare-lf", "GET /a.txt HTTP/1.1\nHost: h\n\n".into()),
        ("overlong-uri", get(&format!("/{}", "a/".repeat(4200)), "")),
        ("many-headers", get("/a.txt", &"X-A: b\r\n".repeat(2100))),
        ("nul-in-header", "GET /a.txt HTTP/1.1\r\nHost: h\0x\r\n\r\n".into()),
    ];
    s.extend(more.into_iter().map(|(n, r)| (n.to_string(), r)));
    s.into_iter().map(|(n, r)| (n, r.into_bytes())).collect()
}

fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    let id = Identity::of(7, 1 << 33, 1_700_000_000, 5);
    let meta = Meta {
        kind: EntryKind::File,
        len: 5,
        mtime_sec: 1_700_000_000,
        identity: id,
    };
    let reqs = [
        Request::Hello {
            lowest: 1,
            highest: 1,
        },
        Request::Stat {
            path: b"a.txt".to_vec(),
        },
        Request::Stat {
            path: b"../outside/canary.txt".to_vec(),
        },
        Request::List { path: Vec::new() },
        Request::List {
            path: b"d/e".to_vec(),
        },
        Request::Get {
            path: b"d/b.txt".to_vec(),
            offset: 3,
            identity: id,
        },
        Request::Get {
            path: b"x".to_vec(),
            offset: 0,
            identity: Identity::default(),
        },
        Request::Put {
            path: b"new.txt".to_vec(),
            len: 5,
            replace: false,
        },
        Request::Put {
            path: b"a.txt".to_vec(),
            len: 5 << 30,
            replace: true,
        },
    ];
    let reps = [
        Reply::Hello {
            version: 1,
            uploads: true,
            replace: false,
            max_upload: 1 << 30,
        },
        Reply::Stat(meta.clone()),
        Reply::List(vec![
            Entry {
                name: b"a.txt".to_vec(),
                kind: EntryKind::File,
                len: 5,
                mtime_sec: 1,
            },
            Entry {
                name: "é x".into(),
                kind: EntryKind::Dir,
                len: 0,
                mtime_sec: -1,
            },
        ]),
        Reply::List(Vec::new()),
        Reply::Data { meta, offset: 2 },
        Reply::Ready,
        Reply::Done { len: 5 },
        Reply::Error {
            code: Code::NotFound,
            message: "not found: d/é".into(),
        },
        Reply::Error {
            code: Code::Unavailable,
            message: String::new(),
        },
        // The longest message the encoder sends (it cuts at 1024 bytes).
        Reply::Error {
            code: Code::Exists,
            message: format!("{} exists", "d/".repeat(600)),
        },
    ];
    let mut s: Vec<(String, Vec<u8>)> = Vec::new();
    s.extend(
        reqs.iter()
            .enumerate()
            .map(|(i, r)| (format!("request-{i}"), r.encode())),
    );
    s.extend(
        reps.iter()
            .enumerate()
            .map(|(i, r)| (format!("reply-{i}"), r.encode())),
    );
    let hello = reqs[0].encode();
    let mut bad_version = hello.clone();
    bad_version[4] = 2;
    s.extend([
        (
            "two-frames".to_string(),
            [reqs[1].encode(), reqs[5].encode()].concat(),
        ),
        ("partial".into(), reqs[5].encode()[..20].to_vec()),
        ("header-only".into(), hello[..12].to_vec()),
        ("bad-magic".into(), b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("bad-version".into(), bad_version),
        (
            "unknown-kind".into(),
            [&hello[..5], &[0x42], &hello[6..]].concat(),
        ),
        ("too-large".into(), encode(Kind::Stat, 0, &[b'a'; 4200])),
        ("stray-flags".into(), encode(Kind::Stat, 0x8001, b"a")),
        // Longer than the encoder sends, a character across byte 1024: the encoder
        // used to cut inside it (frame.rs, long_error_messages_are_cut_...).
        (
            "long-error-multibyte".into(),
            encode(
                Kind::Error,
                0,
                &[
                    &2u16.to_le_bytes()[..],
                    "a".repeat(1023).as_bytes(),
                    "é exists".as_bytes(),
                ]
                .concat(),
            ),
        ),
    ]);
    s
}

fn write(dir: &Path, seeds: Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let out = Path::new(&out);
    write(&out.join("http"), http_seeds())?;
    let targets = TARGETS.iter().enumerate();
    write(
        &out.join("path"),
        targets
            .map(|(i, t)| (format!("target-{i:02}"), t.as_bytes().to_vec()))
            .collect(),
    )?;
    write(&out.join("frame"), frame_seeds())
}
