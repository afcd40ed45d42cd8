//! The status, fields and body of each kind of response. The connection adds the fields
//! every response carries (Date, Content-Length, Connection) and drops the body for HEAD.

use super::cond::{self, Conditions, Precondition, Validators};
use super::listing;
use super::path::push_encoded;
use super::range::{self, ByteRange, Ranges};
use super::status::Status;
use super::{date, digits};
use super::{Coding, Dotfiles, Etag, HttpConfig};
use crate::proto::{path_bytes, pool, Chunk, FileMeta, Listing, Opened};
use std::fmt::Write;
use std::io;

const HTML: &str = "Content-Type: text/html; charset=utf-8\r\n";

/// How a file response is coded: a precompressed sidecar's coding, and whether the
/// response varies with Accept-Encoding (it does wherever sidecars are looked for).
#[derive(Debug, Clone, Copy, Default)]
pub struct Coded {
    pub coding: Option<Coding>,
    pub vary: bool,
}

/// A response before framing.
#[derive(Debug)]
pub struct Reply {
    pub status: Status,
    /// Field lines particular to this response, each ending in CRLF.
    pub fields: String,
    /// Sent for GET; HEAD reports its length only.
    pub body: Vec<Chunk>,
}

impl Reply {
    /// A status with its fixed HTML page.
    pub fn error(status: Status) -> Reply {
        let mut fields = pool::string_of(HTML);
        match status {
            Status::MethodNotAllowed => fields.push_str("Allow: GET, HEAD\r\n"),
            Status::ServiceUnavailable => fields.push_str("Retry-After: 1\r\n"),
            _ => {}
        }
        let mut body = pool::chunks();
        body.push(Chunk::Static(status.page()));
        Reply {
            status,
            fields,
            body,
        }
    }

    /// The fields and body lists back to the pool, once framed.
    pub fn recycle(self) {
        pool::give_string(self.fields);
        pool::give_chunks(self.body);
    }

    /// 204 to a CORS preflight, with the fields `rules::Rules::preflight` gave.
    pub fn preflight(mut fields: String) -> Reply {
        fields.push_str("Allow: GET, HEAD, OPTIONS\r\n");
        Reply {
            status: Status::NoContent,
            fields,
            body: Vec::new(),
        }
    }

    /// `OPTIONS *`: what the server's resources allow, and no body.
    pub fn options() -> Reply {
        Reply {
            status: Status::Ok,
            fields: "Allow: GET, HEAD\r\n".into(),
            body: Vec::new(),
        }
    }

    /// The answer to a failed open or listing. A 5xx means the server failed; what the
    /// request asked for (a name too long, a path through a file, a symlink loop, a
    /// file it may not read) is the client's problem, a 4xx.
    pub fn open_error(e: &io::Error) -> Reply {
        let status = match e.raw_os_error() {
            // Nothing there by that name: missing, through a non-directory, longer than
            // NAME_MAX or PATH_MAX, or a name this file system cannot spell.
            Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG | libc::EILSEQ) => {
                Status::NotFound
            }
            // There, but not to be served: permissions, an escape from the root, a
            // symlink loop, a special file that cannot be opened (a socket, a device
            // without its driver).
            Some(
                libc::EACCES | libc::EPERM | libc::EXDEV | libc::ELOOP | libc::ENXIO | libc::ENODEV,
            ) => Status::Forbidden,
            // Out of descriptors or memory, or a lease in the way: transient, so ask the
            // client to come back.
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN) => {
                Status::ServiceUnavailable
            }
            // EIO, ESTALE, EINVAL (a path the HTTP layer should never have sent), ...
            _ => match e.kind() {
                io::ErrorKind::NotFound => Status::NotFound,
                io::ErrorKind::PermissionDenied => Status::Forbidden,
                _ => Status::InternalServerError,
            },
        };
        Reply::error(status)
    }

    /// 301 to directory `rel` with its trailing slash, keeping the query. The location is
    /// rebuilt from the normalised path, never echoed: `//evil.example` must not become a
    /// scheme-relative redirect.
    pub fn redirect(rel: &str, target: &str) -> Reply {
        let mut fields = String::from(HTML);
        fields.push_str("Location: /");
        push_encoded(&mut fields, &path_bytes(rel).unwrap_or_default());
        if !rel.is_empty() {
            fields.push('/');
        }
        if let Some(q) = target.find('?') {
            fields.push_str(target.get(q..).unwrap_or_default());
        }
        fields.push_str("\r\n");
        let status = Status::MovedPermanently;
        Reply {
            status,
            fields,
            body: vec![Chunk::Static(status.page())],
        }
    }

    /// `status` with a file's bytes as its page (`--page404`): no validators, no
    /// ranges, as for any error page.
    pub fn page(status: Status, opened: Opened, content_type: &str) -> Reply {
        let mut fields = pool::string();
        fields.push_str("Content-Type: ");
        fields.push_str(content_type);
        fields.push_str("\r\n");
        let mut body = pool::chunks();
        if opened.meta.len > 0 {
            body.push(Chunk::File {
                file: opened.file,
                offset: 0,
                len: opened.meta.len,
            });
        }
        Reply {
            status,
            fields,
            body,
        }
    }

    /// A directory's listing, HTML or JSON as `view` says.
    pub fn listing(rel: &str, listing: Listing, dotfiles: Dotfiles, view: listing::View) -> Reply {
        let (body, content_type) = listing::render(rel, listing, dotfiles, view);
        // HTML or JSON by Accept: a cache must keep them apart.
        let mut fields = String::from(content_type);
        fields.push_str("Vary: Accept\r\n");
        Reply {
            status: Status::Ok,
            fields,
            body: vec![Chunk::Mem(body)],
        }
    }

    /// A regular file, after preconditions and ranges. `now` is the response's Date in
    /// seconds; `seed` varies the multipart boundary between responses. A sidecar
    /// (`coded.coding`) is the selected representation: its own length, ranges and
    /// validators, an ETag that names the coding, and the original's Content-Type.
    #[allow(clippy::too_many_arguments)]
    pub fn file(
        opened: Opened,
        content_type: &str,
        c: &Conditions,
        cfg: &HttpConfig,
        now: u64,
        seed: u64,
        coded: Coded,
    ) -> Reply {
        let meta = opened.meta;
        let v = validators(&meta, cfg.etag, now, coded.coding);
        let mut fields = pool::string();
        fields.reserve(256);
        fields.push_str("ETag: ");
        fields.push_str(&v.etag);
        fields.push_str("\r\nLast-Modified: ");
        date::push_imf_cached(&mut fields, v.modified);
        fields.push_str("\r\n");
        // On a 304 too: it describes the representation a 200 would have sent.
        if let Some(coding) = coded.coding {
            fields.push_str("Content-Encoding: ");
            fields.push_str(coding.token());
            fields.push_str("\r\n");
        }
        let vary = coded.vary || coded.coding.is_some();
        if vary {
            fields.push_str("Vary: Accept-Encoding\r\n");
        }
        let mut reply =
            Reply::file_after(opened, content_type, c, cfg.max_ranges, &v, fields, seed);
        pool::give_string(v.etag);
        // A 412 or 416 of the chosen representation depends on Accept-Encoding as much
        // as a 200 does (the sidecar's ETag and length decided it): a cache must know.
        let refused = matches!(
            reply.status,
            Status::PreconditionFailed | Status::RangeNotSatisfiable
        );
        if vary && refused {
            reply.fields.push_str("Vary: Accept-Encoding\r\n");
        }
        reply
    }

    /// [`Reply::file`] once the validators are known and written into `fields`.
    fn file_after(
        opened: Opened,
        content_type: &str,
        c: &Conditions,
        max_ranges: usize,
        v: &Validators,
        mut fields: String,
        seed: u64,
    ) -> Reply {
        let meta = opened.meta;
        match cond::evaluate(c, v) {
            Precondition::Failed => {
                pool::give_string(fields);
                return Reply::error(Status::PreconditionFailed);
            }
            // No Content-Length: a 304 has no body, and RFC 9110 §8.6 allows omitting it.
            Precondition::NotModified => {
                return Reply {
                    status: Status::NotModified,
                    fields,
                    body: Vec::new(),
                }
            }
            Precondition::Proceed => {}
        }
        fields.push_str("Accept-Ranges: bytes\r\n");
        let ranges = match &c.range {
            Some(r)
                if c.if_range
                    .as_deref()
                    .map_or(true, |ir| cond::if_range_holds(ir, v)) =>
            {
                range::resolve(r, meta.len, max_ranges)
            }
            _ => Ranges::Whole,
        };
        let file = opened.file;
        let slice = |r: ByteRange| Chunk::File {
            file: file.clone(),
            offset: r.first,
            len: r.len(),
        };
        let (status, body) = match ranges {
            Ranges::Whole => {
                let mut body = pool::chunks();
                if meta.len > 0 {
                    // The handle itself moves into the chunk: a clone and a drop would
                    // be two atomic operations on its count per response.
                    body.push(Chunk::File {
                        file,
                        offset: 0,
                        len: meta.len,
                    });
                }
                (Status::Ok, body)
            }
            Ranges::Unsatisfiable => {
                pool::give_string(fields);
                let mut reply = Reply::error(Status::RangeNotSatisfiable);
                let _ = write!(reply.fields, "Content-Range: bytes */{}\r\n", meta.len);
                return reply;
            }
            Ranges::Parts(parts) => match parts[..] {
                [r] => {
                    let _ = write!(
                        fields,
                        "Content-Range: bytes {}-{}/{}\r\n",
                        r.first, r.last, meta.len
                    );
                    (Status::PartialContent, vec![slice(r)])
                }
                _ => {
                    let boundary =
                        format!("{:016x}", mix(seed ^ meta.ino ^ meta.dev.rotate_left(32)));
                    let _ = write!(
                        fields,
                        "Content-Type: multipart/byteranges; boundary={boundary}\r\n"
                    );
                    let mut body = Vec::with_capacity(parts.len() * 2 + 1);
                    for (i, r) in parts.iter().enumerate() {
                        let part = format!(
                            "{}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{}\r\n\r\n",
                            if i == 0 { "" } else { "\r\n" },
                            r.first,
                            r.last,
                            meta.len
                        );
                        body.push(Chunk::Mem(part.into_bytes()));
                        body.push(slice(*r));
                    }
                    body.push(Chunk::Mem(format!("\r\n--{boundary}--\r\n").into_bytes()));
                    return Reply {
                        status: Status::PartialContent,
                        fields,
                        body,
                    };
                }
            },
        };
        fields.push_str("Content-Type: ");
        fields.push_str(content_type);
        fields.push_str("\r\n");
        Reply {
            status,
            fields,
            body,
        }
    }
}

/// The validators of a file's version. The strong ETag is its modification time to the
/// nanosecond and its size, in hex (`"<sec><nsec as 8 digits>-<size>"`, nginx's
/// mtime-size with nanoseconds): what `cp -a` and rsync `-t` keep, so replicas of one
/// tree agree. [`Etag::Inode`] puts the device and inode first, as before.
/// Last-Modified is never later than `now`, the response's Date (RFC 9110 §8.8.2.1: a
/// file with a future mtime); the ETag keeps the real time.
fn validators(m: &FileMeta, form: Etag, now: u64, coding: Option<Coding>) -> Validators {
    // One allocation, sized for the longest (four u64s in hex and the punctuation):
    // `format!` of the pieces cost six per response (bench/allocs.rs).
    let mut etag = pool::string();
    etag.reserve(72);
    etag.push('"');
    // As `{:x}-{:x}-` and `{:x}{:08x}-{:x}` would write them (an i64 in hex is its
    // two's complement, as the u64 of the same bits).
    if form == Etag::Inode {
        digits::hex(&mut etag, m.dev);
        etag.push('-');
        digits::hex(&mut etag, m.ino);
        etag.push('-');
    }
    digits::hex(&mut etag, m.mtime_sec as u64);
    digits::hex_min(&mut etag, u64::from(m.mtime_nsec), 8);
    etag.push('-');
    digits::hex(&mut etag, m.len);
    // A sidecar's tag names its coding, so no two representations ever share one.
    if let Some(c) = coding {
        etag.push('-');
        etag.push_str(c.token());
    }
    etag.push('"');
    Validators {
        etag,
        modified: date::clamp(m.mtime_sec).min(now),
    }
}

/// splitmix64's finaliser: spreads a seed over all bits of a boundary.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
