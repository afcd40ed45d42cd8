//! The wire format: a fixed 12-byte header, then the payload.
//!
//! ```text
//!   0      4        5     6       8              12
//!   +------+--------+-----+-------+--------------+----------------
//!   | RSXF | version| kind| flags |  payload len | payload ...
//!   +------+--------+-----+-------+--------------+----------------
//!           u8       u8    u16 LE   u32 LE
//! ```
//!
//! Every multi-byte field is little-endian and stored as a byte array, so [`Header`]
//! has alignment 1 and `bytemuck` can view any 12 bytes of a receive buffer as one,
//! wherever they sit. A file body is never framed: the reply that announces it
//! ([`Kind::Data`], or the [`Kind::Ready`] that invites an upload) gives its length,
//! and exactly that many raw bytes follow, so they can go by sendfile/splice on one
//! side and splice into a file on the other.
//!
//! [`decode`] is `Partial | Complete(n)`, in the style of httparse: it never consumes
//! input, and it checks the header (magic, version, kind, payload bound) as soon as
//! the header is in, so a hostile length is refused before anything is buffered.

use bytemuck::{Pod, Zeroable};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"RSXF";
/// The protocol version this build speaks (and the only one so far).
pub const VERSION: u8 = 1;
/// Bytes in a [`Header`].
pub const HEADER_LEN: usize = 12;
/// Longest path a request may name, in bytes (Linux's PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Largest request payload: a path and the fixed fields before it.
pub const MAX_REQUEST: u32 = MAX_PATH as u32 + 64;
/// Largest reply payload (a listing is the big one).
pub const MAX_REPLY: u32 = 64 << 20;
/// Bytes in a file's identity.
pub const IDENTITY_LEN: usize = 24;

/// Flag on [`Kind::Put`]: replace an existing file (the server must allow it).
pub const FLAG_REPLACE: u16 = 1;

/// The frame header, as it is on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Header {
    magic: [u8; 4],
    version: u8,
    kind: u8,
    flags: [u8; 2],
    len: [u8; 4],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_LEN);

impl Header {
    pub fn new(kind: Kind, flags: u16, len: u32) -> Header {
        Header {
            magic: MAGIC,
            version: VERSION,
            kind: kind as u8,
            flags: flags.to_le_bytes(),
            len: len.to_le_bytes(),
        }
    }
    pub fn kind(&self) -> Kind {
        Kind::from_u8(self.kind).expect("decode checked the kind")
    }
    pub fn flags(&self) -> u16 {
        u16::from_le_bytes(self.flags)
    }
    pub fn len(&self) -> u32 {
        u32::from_le_bytes(self.len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a frame is. Requests have the high bit clear, replies set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 0x01,
    Stat = 0x02,
    List = 0x03,
    Get = 0x04,
    Put = 0x05,
    HelloOk = 0x81,
    StatOk = 0x82,
    ListOk = 0x83,
    /// A download's metadata; the file's bytes follow raw.
    Data = 0x84,
    /// The server will take the upload: send the bytes.
    Ready = 0x85,
    /// The upload is durable under its name.
    Done = 0x86,
    Error = 0xff,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Hello,
            0x02 => Kind::Stat,
            0x03 => Kind::List,
            0x04 => Kind::Get,
            0x05 => Kind::Put,
            0x81 => Kind::HelloOk,
            0x82 => Kind::StatOk,
            0x83 => Kind::ListOk,
            0x84 => Kind::Data,
            0x85 => Kind::Ready,
            0x86 => Kind::Done,
            0xff => Kind::Error,
            _ => return None,
        })
    }
    pub fn is_request(self) -> bool {
        (self as u8) & 0x80 == 0
    }
}

/// Why bytes are not a frame. Each is answered with an error frame and a close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    BadMagic,
    Version(u8),
    UnknownKind(u8),
    TooLarge(u32),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadMagic => f.write_str("not an xfer frame (bad magic)"),
            FrameError::Version(v) => write!(f, "unsupported protocol version {v}"),
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k:#04x}"),
            FrameError::TooLarge(n) => write!(f, "frame payload of {n} bytes is too large"),
        }
    }
}

/// The result of [`decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// More bytes are needed.
    Partial,
    /// A whole frame: its header, and how many bytes of input it takes (header and
    /// payload).
    Complete(Header, usize),
}

/// Looks for one frame at the start of `input`, with a payload of at most `max`.
pub fn decode(input: &[u8], max: u32) -> Result<Status, FrameError> {
    // The magic is checked byte by byte as it arrives, so garbage fails fast.
    let have = input.len().min(4);
    if input[..have] != MAGIC[..have] {
        return Err(FrameError::BadMagic);
    }
    if input.len() < HEADER_LEN {
        return Ok(Status::Partial);
    }
    let h: Header = bytemuck::pod_read_unaligned(&input[..HEADER_LEN]);
    if h.version != VERSION {
        return Err(FrameError::Version(h.version));
    }
    if Kind::from_u8(h.kind).is_none() {
        return Err(FrameError::UnknownKind(h.kind));
    }
    if h.len() > max {
        return Err(FrameError::TooLarge(h.len()));
    }
    let total = HEADER_LEN + h.len() as usize;
    if input.len() < total {
        return Ok(Status::Partial);
    }
    Ok(Status::Complete(h, total))
}

/// A whole frame: the header for `kind` and `flags`, then `payload`.
pub fn encode(kind: Kind, flags: u16, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("payloads are bounded");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(bytemuck::bytes_of(&Header::new(kind, flags, len)));
    out.extend_from_slice(payload);
    out
}

/// Typed error codes. The numbers are part of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Code {
    NotFound = 1,
    Exists = 2,
    Forbidden = 3,
    TooLarge = 4,
    NoSpace = 5,
    UploadsDisabled = 6,
    BadRequest = 7,
    /// A resumed download's file is no longer the version the client started with.
    Changed = 8,
    /// The server's file system failed otherwise (EIO, ...).
    Io = 9,
    /// The peer took too long (a frame or a body).
    Timeout = 10,
    /// The server is shutting down.
    Unavailable = 11,
}

impl Code {
    pub fn from_u16(v: u16) -> Option<Code> {
        Some(match v {
            1 => Code::NotFound,
            2 => Code::Exists,
            3 => Code::Forbidden,
            4 => Code::TooLarge,
            5 => Code::NoSpace,
            6 => Code::UploadsDisabled,
            7 => Code::BadRequest,
            8 => Code::Changed,
            9 => Code::Io,
            10 => Code::Timeout,
            11 => Code::Unavailable,
            _ => return None,
        })
    }

    /// A short name, for messages and counters.
    pub fn name(self) -> &'static str {
        match self {
            Code::NotFound => "not found",
            Code::Exists => "exists",
            Code::Forbidden => "forbidden",
            Code::TooLarge => "too large",
            Code::NoSpace => "no space",
            Code::UploadsDisabled => "uploads disabled",
            Code::BadRequest => "bad request",
            Code::Changed => "changed",
            Code::Io => "i/o error",
            Code::Timeout => "timeout",
            Code::Unavailable => "unavailable",
        }
    }

    /// The code for a file-system error.
    pub fn of_io(e: &std::io::Error) -> Code {
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => Code::NotFound,
            Some(libc::EEXIST) => Code::Exists,
            Some(libc::EACCES | libc::EPERM | libc::EXDEV | libc::ELOOP | libc::EISDIR) => {
                Code::Forbidden
            }
            Some(libc::ENOSPC | libc::EDQUOT) => Code::NoSpace,
            Some(libc::EFBIG | libc::ENAMETOOLONG) => Code::TooLarge,
            _ => match e.kind() {
                std::io::ErrorKind::NotFound => Code::NotFound,
                std::io::ErrorKind::PermissionDenied => Code::Forbidden,
                std::io::ErrorKind::TimedOut => Code::Timeout,
                _ => Code::Io,
            },
        }
    }
}

/// What the kind of a listed or stat'ed path is, on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    File = 1,
    Dir = 2,
    Other = 3,
}

impl EntryKind {
    fn from_u8(b: u8) -> Option<EntryKind> {
        Some(match b {
            1 => EntryKind::File,
            2 => EntryKind::Dir,
            3 => EntryKind::Other,
            _ => return None,
        })
    }
}

/// The version of a file: inode, size and modification time in nanoseconds. A resumed
/// download goes on only while it is unchanged (as an HTTP `If-Range` with an ETag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Identity(pub [u8; IDENTITY_LEN]);

impl Identity {
    pub fn of(ino: u64, len: u64, mtime_sec: i64, mtime_nsec: u32) -> Identity {
        let ns = (mtime_sec as i128 * 1_000_000_000 + i128::from(mtime_nsec)) as u64;
        let mut b = [0; IDENTITY_LEN];
        b[..8].copy_from_slice(&ino.to_le_bytes());
        b[8..16].copy_from_slice(&len.to_le_bytes());
        b[16..].copy_from_slice(&ns.to_le_bytes());
        Identity(b)
    }
    pub fn is_any(&self) -> bool {
        self.0 == [0; IDENTITY_LEN]
    }
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    pub fn from_hex(s: &str) -> Option<Identity> {
        let s = s.trim();
        if s.len() != IDENTITY_LEN * 2 || !s.is_ascii() {
            return None;
        }
        let mut b = [0; IDENTITY_LEN];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(Identity(b))
    }
}

/// What STAT, and the head of a download, say about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: EntryKind,
    pub len: u64,
    pub mtime_sec: i64,
    pub identity: Identity,
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: EntryKind,
    pub len: u64,
    pub mtime_sec: i64,
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Hello {
        lowest: u8,
        highest: u8,
    },
    Stat {
        path: Vec<u8>,
    },
    List {
        path: Vec<u8>,
    },
    Get {
        path: Vec<u8>,
        offset: u64,
        identity: Identity,
    },
    Put {
        path: Vec<u8>,
        len: u64,
        replace: bool,
    },
}

/// A decoded reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Hello {
        version: u8,
        uploads: bool,
        replace: bool,
        max_upload: u64,
    },
    Stat(Meta),
    List(Vec<Entry>),
    /// `meta.len - offset` raw bytes follow.
    Data {
        meta: Meta,
        offset: u64,
    },
    Ready,
    Done {
        len: u64,
    },
    Error {
        code: Code,
        message: String,
    },
}

/// A payload reader that fails (rather than panics) past the end.
struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

fn meta_into(out: &mut Vec<u8>, m: &Meta) {
    out.push(m.kind as u8);
    out.extend_from_slice(&m.len.to_le_bytes());
    out.extend_from_slice(&m.mtime_sec.to_le_bytes());
    out.extend_from_slice(&m.identity.0);
}

fn meta_from(r: &mut Rd<'_>) -> Option<Meta> {
    Some(Meta {
        kind: EntryKind::from_u8(r.u8()?)?,
        len: r.u64()?,
        mtime_sec: r.u64()? as i64,
        identity: Identity(r.take(IDENTITY_LEN)?.try_into().ok()?),
    })
}

fn path_ok(p: &[u8]) -> Option<Vec<u8>> {
    (p.len() <= MAX_PATH).then(|| p.to_vec())
}

impl Request {
    /// The whole frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        let (kind, flags) = match self {
            Request::Hello { lowest, highest } => {
                p.extend_from_slice(&[*lowest, *highest]);
                (Kind::Hello, 0)
            }
            Request::Stat { path } => {
                p.extend_from_slice(path);
                (Kind::Stat, 0)
            }
            Request::List { path } => {
                p.extend_from_slice(path);
                (Kind::List, 0)
            }
            Request::Get {
                path,
                offset,
                identity,
            } => {
                p.extend_from_slice(&offset.to_le_bytes());
                p.extend_from_slice(&identity.0);
                p.extend_from_slice(path);
                (Kind::Get, 0)
            }
            Request::Put { path, len, replace } => {
                p.extend_from_slice(&len.to_le_bytes());
                p.extend_from_slice(path);
                (Kind::Put, if *replace { FLAG_REPLACE } else { 0 })
            }
        };
        encode(kind, flags, &p)
    }

    /// The request in a complete frame; `None` when the payload does not fit its kind
    /// (or the frame is a reply).
    pub fn decode(h: &Header, payload: &[u8]) -> Option<Request> {
        let mut r = Rd(payload);
        let req = match h.kind() {
            Kind::Hello => {
                let (lowest, highest) = (r.u8()?, r.u8()?);
                r.end()?;
                Request::Hello { lowest, highest }
            }
            Kind::Stat => Request::Stat {
                path: path_ok(r.rest())?,
            },
            Kind::List => Request::List {
                path: path_ok(r.rest())?,
            },
            Kind::Get => Request::Get {
                offset: r.u64()?,
                identity: Identity(r.take(IDENTITY_LEN)?.try_into().ok()?),
                path: path_ok(r.rest())?,
            },
            Kind::Put => Request::Put {
                len: r.u64()?,
                path: path_ok(r.rest())?,
                replace: h.flags() & FLAG_REPLACE != 0,
            },
            _ => return None,
        };
        Some(req)
    }
}

impl Reply {
    /// The whole frame (for [`Reply::Data`], only its head: the bytes follow).
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        let kind = match self {
            Reply::Hello {
                version,
                uploads,
                replace,
                max_upload,
            } => {
                p.push(*version);
                p.push(u8::from(*uploads) | u8::from(*replace) << 1);
                p.extend_from_slice(&max_upload.to_le_bytes());
                Kind::HelloOk
            }
            Reply::Stat(m) => {
                meta_into(&mut p, m);
                Kind::StatOk
            }
            Reply::List(entries) => {
                p.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for e in entries {
                    p.push(e.kind as u8);
                    p.extend_from_slice(&e.len.to_le_bytes());
                    p.extend_from_slice(&e.mtime_sec.to_le_bytes());
                    let name = &e.name[..e.name.len().min(u16::MAX as usize)];
                    p.extend_from_slice(&(name.len() as u16).to_le_bytes());
                    p.extend_from_slice(name);
                }
                Kind::ListOk
            }
            Reply::Data { meta, offset } => {
                meta_into(&mut p, meta);
                p.extend_from_slice(&offset.to_le_bytes());
                Kind::Data
            }
            Reply::Ready => Kind::Ready,
            Reply::Done { len } => {
                p.extend_from_slice(&len.to_le_bytes());
                Kind::Done
            }
            Reply::Error { code, message } => {
                p.extend_from_slice(&(*code as u16).to_le_bytes());
                // At most 1024 bytes, cut where a character begins: the peer decodes
                // the message as UTF-8, and half a character would read as U+FFFD.
                let mut cut = message.len().min(1024);
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                p.extend_from_slice(&message.as_bytes()[..cut]);
                Kind::Error
            }
        };
        encode(kind, 0, &p)
    }

    /// The reply in a complete frame; `None` when the payload does not fit its kind.
    pub fn decode(h: &Header, payload: &[u8]) -> Option<Reply> {
        let mut r = Rd(payload);
        let rep = match h.kind() {
            Kind::HelloOk => {
                let version = r.u8()?;
                let bits = r.u8()?;
                Reply::Hello {
                    version,
                    uploads: bits & 1 != 0,
                    replace: bits & 2 != 0,
                    max_upload: r.u64()?,
                }
            }
            Kind::StatOk => Reply::Stat(meta_from(&mut r)?),
            Kind::ListOk => {
                let n = r.u32()?;
                let mut entries = Vec::with_capacity((n as usize).min(payload.len() / 19));
                for _ in 0..n {
                    let kind = EntryKind::from_u8(r.u8()?)?;
                    let len = r.u64()?;
                    let mtime_sec = r.u64()? as i64;
                    let name_len = r.u16()? as usize;
                    let name = r.take(name_len)?.to_vec();
                    entries.push(Entry {
                        name,
                        kind,
                        len,
                        mtime_sec,
                    });
                }
                Reply::List(entries)
            }
            Kind::Data => Reply::Data {
                meta: meta_from(&mut r)?,
                offset: r.u64()?,
            },
            Kind::Ready => Reply::Ready,
            Kind::Done => Reply::Done { len: r.u64()? },
            Kind::Error => {
                let code = Code::from_u16(r.u16()?).unwrap_or(Code::Io);
                let message = String::from_utf8_lossy(r.rest()).into_owned();
                Reply::Error { code, message }
            }
            _ => return None,
        };
        r.end()?;
        Some(rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_and_reply_round_trips() {
        let id = Identity::of(7, 1 << 33, 1_700_000_000, 5);
        let reqs = [
            Request::Hello {
                lowest: 1,
                highest: 3,
            },
            Request::Stat {
                path: b"a b/\xc3\xa9".to_vec(),
            },
            Request::List { path: Vec::new() },
            Request::Get {
                path: b"x".to_vec(),
                offset: 9,
                identity: id,
            },
            Request::Put {
                path: b"y".to_vec(),
                len: 5 << 30,
                replace: true,
            },
        ];
        for q in reqs {
            let f = q.encode();
            let Ok(Status::Complete(h, n)) = decode(&f, MAX_REQUEST) else {
                panic!()
            };
            assert_eq!(n, f.len());
            assert_eq!(Request::decode(&h, &f[HEADER_LEN..]), Some(q));
        }
        let meta = Meta {
            kind: EntryKind::File,
            len: 3,
            mtime_sec: -1,
            identity: id,
        };
        let reps = [
            Reply::Hello {
                version: 1,
                uploads: true,
                replace: false,
                max_upload: 9,
            },
            Reply::Stat(meta.clone()),
            Reply::List(vec![Entry {
                name: b"n".to_vec(),
                kind: EntryKind::Dir,
                len: 0,
                mtime_sec: 4,
            }]),
            Reply::Data { meta, offset: 1 },
            Reply::Ready,
            Reply::Done { len: 3 },
            Reply::Error {
                code: Code::Exists,
                message: "x exists".into(),
            },
        ];
        for r in reps {
            let f = r.encode();
            let Ok(Status::Complete(h, _)) = decode(&f, MAX_REPLY) else {
                panic!()
            };
            assert_eq!(Reply::decode(&h, &f[HEADER_LEN..]), Some(r));
        }
    }

    #[test]
    fn the_decoder_waits_for_whole_frames_and_refuses_bad_headers_early() {
        let f = Request::Stat {
            path: b"abc".to_vec(),
        }
        .encode();
        for cut in 0..f.len() {
            assert_eq!(
                decode(&f[..cut], MAX_REQUEST),
                Ok(Status::Partial),
                "cut {cut}"
            );
        }
        assert_eq!(decode(b"GET ", MAX_REQUEST), Err(FrameError::BadMagic));
        assert_eq!(decode(b"RX", MAX_REQUEST), Err(FrameError::BadMagic));
        let mut v = f.clone();
        v[4] = 9;
        assert_eq!(decode(&v, MAX_REQUEST), Err(FrameError::Version(9)));
        let mut k = f.clone();
        k[5] = 0x42;
        assert_eq!(decode(&k, MAX_REQUEST), Err(FrameError::UnknownKind(0x42)));
        let huge = encode(Kind::Stat, 0, &[]);
        let mut huge = huge[..8].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&huge, MAX_REQUEST),
            Err(FrameError::TooLarge(u32::MAX))
        );
    }

    #[test]
    fn payloads_that_do_not_fit_their_kind_are_refused_not_panicked_on() {
        for kind in [Kind::Hello, Kind::Get, Kind::Put] {
            for len in 0..40 {
                let f = encode(kind, 0, &vec![0xAB; len]);
                let Ok(Status::Complete(h, _)) = decode(&f, MAX_REQUEST) else {
                    panic!()
                };
                let _ = Request::decode(&h, &f[HEADER_LEN..]);
            }
        }
        let f = encode(Kind::ListOk, 0, &[5, 0, 0, 0, 1]);
        let Ok(Status::Complete(h, _)) = decode(&f, MAX_REPLY) else {
            panic!()
        };
        assert_eq!(Reply::decode(&h, &f[HEADER_LEN..]), None);
        assert_eq!(Request::decode(&h, &f[HEADER_LEN..]), None);
    }

    /// An error message is cut to 1024 bytes on the wire, at a character boundary: a
    /// long path with a multi-byte character across byte 1024 (`"{path} exists"`) used
    /// to be cut inside it, so the peer read a U+FFFD that was never sent and the
    /// encoding was no fixed point (the frame fuzz target's assertion fails on such a
    /// frame; seen while writing it, the input is this one).
    #[test]
    fn long_error_messages_are_cut_at_a_character_boundary() {
        let message = format!("{}é exists", "a".repeat(1023));
        let f = Reply::Error {
            code: Code::Exists,
            message: message.clone(),
        }
        .encode();
        let Ok(Status::Complete(h, _)) = decode(&f, MAX_REPLY) else {
            panic!()
        };
        let Some(Reply::Error { message: got, .. }) = Reply::decode(&h, &f[HEADER_LEN..]) else {
            panic!()
        };
        assert_eq!(got, "a".repeat(1023));
        assert!(message.starts_with(&got));
    }

    #[test]
    fn identity_hex_round_trips() {
        let id = Identity::of(1, 2, 3, 4);
        assert_eq!(Identity::from_hex(&id.to_hex()), Some(id));
        assert_eq!(Identity::from_hex("zz"), None);
    }
}
