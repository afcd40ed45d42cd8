//! HTTP/1.1 through the `Protocol` trait, with the real driver and a real `Root` on a
//! tree full of escaping symlinks. The input is the byte stream a client sends; it is
//! handed over in pieces whose sizes come from the input itself (so a crash replays),
//! then the peer closes. Asserted, for both resolvers (openat2 and the walk):
//!
//! - nothing panics;
//! - no response contains the canary, the content of a file outside the root;
//! - every file the backend opens is one of the tree's own inodes (beneath the root),
//!   and never the canary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringserve::backend::memory::Memory;
use ringserve::fs::{Resolve, Root};
use ringserve::proto::http1::{HttpConfig, HttpFactory};
use ringserve::proto::ProtocolFactory;
use std::collections::HashSet;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The content of the file outside the root. A NUL cannot be in a decoded path and
/// the server escapes every control byte it echoes (Location, listings), so these
/// bytes can only reach a response from the file itself.
const CANARY: &[u8] = b"\0canary\x01outside-the-root\x02q7Zr4Kx9Lm2Wp8Tv\0";

struct Tree {
    root: PathBuf,
    /// The walk always; openat2 where the kernel (or sandbox) has it.
    methods: Vec<Resolve>,
    /// (dev, ino) of every entry beneath the root, found without following a symlink.
    inside: HashSet<(u64, u64)>,
    canary: (u64, u64),
}

fn id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// The served tree, made once per process under $TMPDIR (fuzz/run.sh points it at a
/// scratch directory it removes):
///
/// ```text
/// outside/canary.txt            CANARY
/// root/a.txt, root/index.html   plain files
/// root/d/b.txt, root/d/index.html, root/d/e/ (empty)
/// root/inside -> a.txt          stays beneath: allowed
/// root/d/up -> ..               stays beneath: allowed
/// root/escape -> ../outside     climbs out
/// root/canary -> ../outside/canary.txt
/// root/d/upup -> ../..          climbs out
/// root/abs -> /                 absolute
/// root/abscanary -> <absolute path of outside/canary.txt>
/// root/loop -> loop, root/la -> lb, root/lb -> la
/// root/.ringserve-part-x        a hidden upload name
/// root/fifo                     a FIFO
/// ```
fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ringserve-fuzz-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        let outside = dir.join("outside");
        for d in [root.join("d/e"), outside.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        let canary = outside.join("canary.txt");
        std::fs::write(&canary, CANARY).unwrap();
        for (name, body) in [
            ("a.txt", &b"aaaa\n"[..]),
            ("index.html", b"<p>root index</p>\n"),
            (
                "d/b.txt",
                b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n",
            ),
            ("d/index.html", b"<p>d index</p>\n"),
            (".ringserve-part-x", b"half an upload\n"),
        ] {
            std::fs::write(root.join(name), body).unwrap();
        }
        let links: [(&str, &Path); 10] = [
            ("inside", Path::new("a.txt")),
            ("d/up", Path::new("..")),
            ("escape", Path::new("../outside")),
            ("canary", Path::new("../outside/canary.txt")),
            ("d/upup", Path::new("../..")),
            ("abs", Path::new("/")),
            ("abscanary", &canary),
            ("loop", Path::new("loop")),
            ("la", Path::new("lb")),
            ("lb", Path::new("la")),
        ];
        for (name, to) in links {
            symlink(to, root.join(name)).unwrap();
        }
        // A FIFO without unsafe: mkfifo(1). Without it the tree has one file kind less.
        let _ = std::process::Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status();

        let mut inside = HashSet::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            inside.insert(id(&std::fs::symlink_metadata(&d).unwrap()));
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                } else if !m.file_type().is_symlink() {
                    inside.insert(id(&m));
                }
            }
        }
        let mut methods = vec![Resolve::Walk];
        if Root::open_with(&root, Resolve::Openat2).is_ok() {
            methods.push(Resolve::Openat2);
        }
        Tree {
            root,
            methods,
            inside,
            canary: id(&std::fs::metadata(&canary).unwrap()),
        }
    })
}

/// Piece sizes from the input: a small generator seeded with its FNV-1a hash, so the
/// same input always splits the same way.
fn pieces(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut x = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Mostly small pieces (a header split anywhere), sometimes the rest at once.
        let n = match x % 8 {
            0 => rest.len(),
            k => 1 + (x >> 8) as usize % (k as usize * 16),
        }
        .min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        Some(piece)
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let t = tree();
    let factory = HttpFactory::new(HttpConfig {
        listing: true,
        ..HttpConfig::default()
    });
    for &method in &t.methods {
        let root = Root::open_with(&t.root, method).unwrap();
        let mut conn = Memory::new(factory.new_conn("127.0.0.1:9".parse().unwrap()), root);
        let mut out = Vec::new();
        for piece in pieces(data) {
            conn.push(piece);
            out.extend(conn.run());
            if conn.closed() {
                break;
            }
        }
        conn.shut();
        out.extend(conn.run());
        assert!(
            !contains(&out, CANARY),
            "a response carries the canary: a file outside the root was served"
        );
        for (path, meta) in conn.opened() {
            let at = (meta.dev, meta.ino);
            assert_ne!(at, t.canary, "opened the canary as {path:?}");
            assert!(
                t.inside.contains(&at),
                "{path:?} opened something outside the root"
            );
        }
    }
});
