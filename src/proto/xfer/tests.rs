//! The protocol in memory: the client machine paired with the server machine through
//! the real driver (`backend::memory`, its in-memory lowering), with no sockets. Bytes
//! one side sends land in the other's inbox and are handed over in pieces of any size;
//! files are real files in a temporary directory, reached only through the backend's
//! calls, as in production.

use super::frame::{self, Code, EntryKind, Identity, Request, Status};
use super::{Op, Outcome, XferClient, XferConfig, XferFactory};
use crate::backend::memory::Memory;
use crate::fs::Root;
use crate::proto::{FileRef, ProtocolFactory};
use proptest::prelude::*;
use std::path::PathBuf;

fn temp(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("rs-xfer-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A client and a server side by side, each in the driver's in-memory lowering: bytes
/// one side sends land in the other's inbox.
struct Pair {
    client: Memory<XferClient>,
    server: Memory<super::XferServer>,
}

fn side<P: crate::proto::Protocol>(proto: P, root: &std::path::Path) -> Memory<P> {
    Memory::new(proto, Root::open(root).unwrap())
}

impl Pair {
    fn new(served: &std::path::Path, local: &std::path::Path, cfg: XferConfig) -> Pair {
        let server = XferFactory::new(cfg).new_conn("127.0.0.1:1".parse().unwrap());
        Pair {
            client: side(XferClient::new(), local),
            server: side(server, served),
        }
    }

    /// Runs `op` to its outcome, moving bytes both ways.
    fn run(&mut self, op: Op) -> Outcome {
        self.client.proto().start(op);
        for _ in 0..10_000 {
            let c = self.client.run();
            self.server.push(&c);
            if let Some(o) = self.client.proto().take_outcome() {
                // The client waits for its next operation: drop the armed receive.
                self.client.drop_recv();
                return o;
            }
            let s = self.server.run();
            self.client.push(&s);
            if self.client.closed() {
                break;
            }
        }
        self.client.proto().take_outcome().expect("no outcome")
    }
}

fn fref(f: std::fs::File) -> FileRef {
    FileRef::new(f)
}

fn uploads() -> XferConfig {
    XferConfig {
        allow_upload: true,
        allow_replace: true,
        max_upload: 1 << 20,
        ..XferConfig::default()
    }
}

#[test]
fn a_client_and_a_server_move_files_both_ways_in_memory() {
    let (served, local) = (temp("srv"), temp("cli"));
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(served.join("f.bin"), &body).unwrap();
    std::fs::create_dir(served.join("d")).unwrap();
    std::fs::write(served.join("d/é x"), b"1").unwrap();
    let mut p = Pair::new(&served, &local, uploads());
    p.client.piece = 7000;
    p.server.piece = 3000;

    assert!(matches!(
        p.run(Op::Hello),
        Outcome::Hello {
            version: 1,
            uploads: true,
            ..
        }
    ));
    let Outcome::Stat(m) = p.run(Op::Stat(b"f.bin".to_vec())) else {
        panic!()
    };
    assert_eq!((m.kind, m.len), (EntryKind::File, body.len() as u64));

    // Download, then resume the second half with the identity.
    let out = std::fs::File::create(local.join("f.bin")).unwrap();
    let op = Op::Get {
        path: b"f.bin".to_vec(),
        offset: 0,
        identity: m.identity,
        file: fref(out),
    };
    assert!(matches!(p.run(op), Outcome::Got { .. }));
    assert_eq!(std::fs::read(local.join("f.bin")).unwrap(), body);
    let half = std::fs::OpenOptions::new()
        .write(true)
        .open(local.join("f.bin"))
        .unwrap();
    half.set_len(1000).unwrap();
    let op = Op::Get {
        path: b"f.bin".to_vec(),
        offset: 1000,
        identity: m.identity,
        file: fref(half),
    };
    assert!(matches!(p.run(op), Outcome::Got { offset: 1000, .. }));
    assert_eq!(std::fs::read(local.join("f.bin")).unwrap(), body);

    // A stale identity is refused.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(local.join("f.bin"))
        .unwrap();
    let stale = Identity::of(1, 2, 3, 4);
    let op = Op::Get {
        path: b"f.bin".to_vec(),
        offset: 5,
        identity: stale,
        file: fref(f),
    };
    assert!(matches!(
        p.run(op),
        Outcome::Refused {
            code: Code::Changed,
            ..
        }
    ));

    let Outcome::List(l) = p.run(Op::List(b"d".to_vec())) else {
        panic!()
    };
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].name, "é x".as_bytes());

    // Upload, then the same name again without and with replace.
    let src = std::fs::File::open(local.join("f.bin")).unwrap();
    let len = body.len() as u64;
    let put = |replace| Op::Put {
        path: b"d/up.bin".to_vec(),
        file: fref(src.try_clone().unwrap()),
        len,
        replace,
    };
    assert!(matches!(p.run(put(false)), Outcome::Put { len: l } if l == len));
    assert_eq!(std::fs::read(served.join("d/up.bin")).unwrap(), body);
    assert!(matches!(
        p.run(put(false)),
        Outcome::Refused {
            code: Code::Exists,
            ..
        }
    ));
    assert!(matches!(p.run(put(true)), Outcome::Put { .. }));
    // An empty upload: READY and DONE come back together.
    let empty = std::fs::File::create(local.join("empty")).unwrap();
    let op = Op::Put {
        path: b"e".to_vec(),
        file: fref(empty),
        len: 0,
        replace: false,
    };
    assert!(matches!(p.run(op), Outcome::Put { len: 0 }));
    assert_eq!(std::fs::read(served.join("e")).unwrap(), b"");
    // Over the limit: refused before any body byte.
    let big = Op::Put {
        path: b"big".to_vec(),
        file: fref(src.try_clone().unwrap()),
        len: 2 << 20,
        replace: false,
    };
    assert!(matches!(
        p.run(big),
        Outcome::Refused {
            code: Code::TooLarge,
            ..
        }
    ));
    assert!(!served.join("big").exists());
    // Climbing out of the root, for every operation.
    for op in [
        Op::Stat(b"../x".to_vec()),
        Op::List(b"d/../..".to_vec()),
        Op::Put {
            path: b"../x".to_vec(),
            file: fref(src.try_clone().unwrap()),
            len: 1,
            replace: false,
        },
    ] {
        assert!(matches!(
            p.run(op),
            Outcome::Refused {
                code: Code::Forbidden,
                ..
            }
        ));
    }
    let _ = std::fs::remove_dir_all(&served);
    let _ = std::fs::remove_dir_all(&local);
}

#[test]
fn uploads_are_refused_unless_allowed() {
    let (served, local) = (temp("srv"), temp("cli"));
    std::fs::write(local.join("a"), b"abc").unwrap();
    let mut p = Pair::new(&served, &local, XferConfig::default());
    let f = fref(std::fs::File::open(local.join("a")).unwrap());
    let op = Op::Put {
        path: b"a".to_vec(),
        file: f,
        len: 3,
        replace: false,
    };
    assert!(matches!(
        p.run(op),
        Outcome::Refused {
            code: Code::UploadsDisabled,
            ..
        }
    ));
    assert_eq!(std::fs::read_dir(&served).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&served);
    let _ = std::fs::remove_dir_all(&local);
}

/// A request stream the split property runs on: every kind, errors included, ending
/// in garbage (which is answered, then closed).
fn script() -> Vec<u8> {
    let mut s = Vec::new();
    let path = |p: &str| p.as_bytes().to_vec();
    for r in [
        Request::Hello {
            lowest: 1,
            highest: 1,
        },
        Request::Stat { path: path("f") },
        Request::List { path: path("") },
        Request::Get {
            path: path("f"),
            offset: 0,
            identity: Identity::default(),
        },
        Request::Get {
            path: path("f"),
            offset: 3,
            identity: Identity::default(),
        },
        Request::Get {
            path: path("missing"),
            offset: 0,
            identity: Identity::default(),
        },
        Request::Stat {
            path: path("../etc"),
        },
        Request::Put {
            path: path("p"),
            len: 4,
            replace: false,
        },
    ] {
        s.extend(r.encode());
    }
    s.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    s
}

/// Everything a server answers to `input` handed over in `pieces`.
fn answers(root: &std::path::Path, input: &[u8], piece: usize) -> Vec<u8> {
    let server = XferFactory::new(XferConfig::default()).new_conn("127.0.0.1:1".parse().unwrap());
    let mut s = side(server, root);
    s.piece = piece;
    s.push(input);
    let mut out = Vec::new();
    for _ in 0..100_000 {
        out.extend(s.run());
        if s.closed() || s.idle() {
            break;
        }
    }
    assert!(s.closed(), "the garbage at the end closes the connection");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_split_of_the_input_gives_the_same_replies(piece in 1usize..200) {
        let root = std::env::temp_dir().join(format!("rs-xfer-split-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("f"), b"0123456789").unwrap();
        let input = script();
        let whole = answers(&root, &input, usize::MAX);
        let split = answers(&root, &input, piece);
        prop_assert_eq!(&whole, &split);
        // And the replies are what the script asks for: 9 frames (the two GETs with
        // their bytes), the last an error.
        let mut rest = &whole[..];
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            let Ok(Status::Complete(h, n)) = frame::decode(rest, frame::MAX_REPLY) else { panic!() };
            kinds.push(h.kind());
            let body = match frame::Reply::decode(&h, &rest[frame::HEADER_LEN..n]).unwrap() {
                frame::Reply::Data { meta, offset } => (meta.len - offset) as usize,
                _ => 0,
            };
            rest = &rest[n + body..];
        }
        use frame::Kind::*;
        prop_assert_eq!(kinds, vec![HelloOk, StatOk, ListOk, Data, Data, Error, Error, Error, Error]);
    }
}

#[test]
fn oversized_and_unknown_frames_get_an_error_and_a_close() {
    let root = temp("bad");
    for input in [
        {
            let mut h = frame::encode(frame::Kind::Stat, 0, &[]);
            h[8..12].copy_from_slice(&(frame::MAX_REQUEST + 1).to_le_bytes());
            h
        },
        {
            let mut h = frame::encode(frame::Kind::Stat, 0, &[]);
            h[5] = 0x33;
            h
        },
        frame::encode(frame::Kind::HelloOk, 0, &[]),
        frame::encode(frame::Kind::Get, 0, &[1, 2, 3]),
    ] {
        let out = answers(&root, &input, usize::MAX);
        let Ok(Status::Complete(h, n)) = frame::decode(&out, frame::MAX_REPLY) else {
            panic!()
        };
        assert_eq!(h.kind(), frame::Kind::Error);
        assert_eq!(n, out.len(), "one error frame, then the close");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A directory bigger than the backend lists is refused, never sent as if whole.
#[test]
fn a_listing_cut_at_the_backends_cap_is_refused_not_sent_as_whole() {
    let (served, local) = (temp("srv-many"), temp("cli-many"));
    std::fs::create_dir(served.join("many")).unwrap();
    for i in 0..=100 {
        std::fs::File::create(served.join(format!("many/{i}"))).unwrap();
    }
    let server = XferFactory::new(XferConfig::default()).new_conn("127.0.0.1:1".parse().unwrap());
    let mut p = Pair {
        client: side(XferClient::new(), &local),
        server: Memory::new(server, Root::open(&served).unwrap().with_max_entries(100)),
    };
    let o = p.run(Op::List(b"many".to_vec()));
    let Outcome::Refused {
        code: Code::TooLarge,
        message,
    } = o
    else {
        panic!("{o:?}")
    };
    assert!(message.contains("101 entries"), "{message}");
    let _ = std::fs::remove_dir_all(&served);
    let _ = std::fs::remove_dir_all(&local);
}
