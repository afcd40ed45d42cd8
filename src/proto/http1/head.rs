//! The request head (RFC 9112 §2-§3, §5-§7): `httparse` checks the syntax, this module the
//! rules about fields that decide framing and persistence, where leniency desynchronises
//! a connection.

use std::mem::MaybeUninit;

use super::cond::Conditions;
use super::log::LogFields;
use super::status::Status;
use super::HttpConfig;

/// Field slots kept on the stack; a larger `max_header_fields` takes them from the heap.
const STACK_HEADERS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    /// A method this server knows but no resource here allows: 405.
    NotAllowed,
    /// A method it does not know (methods are case-sensitive): 501.
    Unknown,
}

impl Method {
    fn of(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            // RFC 9110 §9, PATCH (RFC 5789) and WebDAV's (RFC 4918): registered methods
            // that a static file server refuses.
            "POST" | "PUT" | "DELETE" | "CONNECT" | "TRACE" | "PATCH" | "PROPFIND"
            | "PROPPATCH" | "MKCOL" | "COPY" | "MOVE" | "LOCK" | "UNLOCK" => Method::NotAllowed,
            _ => Method::Unknown,
        }
    }

    /// The name of a method that reaches the file system (the others are answered
    /// before any file is looked at, and keep theirs only in the access log).
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::NotAllowed | Method::Unknown => "-",
        }
    }
}

/// Whether the connection outlives this exchange, and what the response says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1's default: nothing to say.
    KeepAlive,
    /// An HTTP/1.0 client asked to keep the connection: say `Connection: keep-alive`.
    EchoKeepAlive,
    /// Say `Connection: close`, then close.
    Close,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head, owning what the response needs.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The request-target as received.
    pub target: String,
    /// HTTP/1.x's x.
    pub minor: u8,
    pub persist: Persist,
    pub framing: Framing,
    pub conditions: Conditions,
    pub log: Option<Box<LogFields>>,
}

impl Request {
    /// A request that owns no memory: what a kept box holds.
    pub fn dead() -> Request {
        Request {
            method: Method::Get,
            target: String::new(),
            minor: 1,
            persist: Persist::Close,
            framing: Framing::None,
            conditions: Conditions::default(),
            log: None,
        }
    }

    /// Its target's buffer back to the thread's pool.
    pub fn recycle(self) {
        crate::proto::pool::give_string(self.target);
    }

    /// Turns a request whose body went wrong into its rejection.
    pub fn reject(self, status: Status) -> Rejected {
        Rejected {
            status,
            head: self.method == Method::Head,
            log: self.log,
        }
    }
}

/// A request answered with an error status without being served; always closes.
#[derive(Debug)]
pub struct Rejected {
    pub status: Status,
    /// The request was a HEAD: the error page's length is sent, not the page.
    pub head: bool,
    pub log: Option<Box<LogFields>>,
}

impl From<Status> for Rejected {
    fn from(status: Status) -> Self {
        Rejected {
            status,
            head: false,
            log: None,
        }
    }
}

/// Parses a head at the start of `input`: `Ok(None)` until it is complete, then the
/// request and the head's length.
pub fn parse(input: &[u8], cfg: &HttpConfig) -> Result<Option<(Request, usize)>, Rejected> {
    // Uninitialised slots: httparse writes the ones it fills and hands back only those.
    // Zeroing all 100 (3.2 KiB) was the single largest cost of parsing a short head.
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let headers = if cfg.max_header_fields <= STACK_HEADERS {
        &mut stack[..cfg.max_header_fields]
    } else {
        heap.resize_with(cfg.max_header_fields, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(input, headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return check_partial(input, cfg).map(|()| None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Status::RequestHeaderFieldsTooLarge.into())
        }
        Err(httparse::Error::Version) => return bad_version(input, cfg),
        Err(_) => return Err(Status::BadRequest.into()),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Status::BadRequest.into());
    };
    if target.len() > cfg.max_uri_bytes {
        return Err(Status::UriTooLong.into());
    }
    if len > cfg.max_header_bytes {
        return Err(Status::RequestHeaderFieldsTooLarge.into());
    }
    let log = cfg.access_log.then(|| {
        let field = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        LogFields::new(method, target, minor, field("referer"), field("user-agent"))
    });
    let method = Method::of(method);
    match fields(req.headers, minor, cfg) {
        Ok((persist, framing, conditions)) => Ok(Some((
            Request {
                method,
                target: crate::proto::pool::string_of(target),
                minor,
                persist,
                framing,
                conditions,
                log,
            },
            len,
        ))),
        Err(status) => Err(Rejected {
            status,
            head: method == Method::Head,
            log,
        }),
    }
}

/// The limits that an incomplete head can already break: 414 as soon as the
/// request-target seen so far is too long, 431 once the head is.
pub fn check_partial(input: &[u8], cfg: &HttpConfig) -> Result<(), Rejected> {
    let (line, _) = request_line(input);
    let target = line.splitn(3, |&b| b == b' ').nth(1).unwrap_or_default();
    if target.len() > cfg.max_uri_bytes {
        return Err(Status::UriTooLong.into());
    }
    if input.len() > cfg.max_header_bytes {
        return Err(Status::RequestHeaderFieldsTooLarge.into());
    }
    Ok(())
}

/// httparse knows only 1.0 and 1.1. Another HTTP/1 minor version is read as 1.1, the
/// highest this server speaks (RFC 9110 §6.2, RFC 9112 §2.3); any other well-formed
/// version (2.0 and up, 0.x) is 505, and anything else 400. Until the line is complete,
/// there is nothing to decide.
fn bad_version(input: &[u8], cfg: &HttpConfig) -> Result<Option<(Request, usize)>, Rejected> {
    let (start, line, complete) = request_line_at(input);
    if !complete {
        return check_partial(input, cfg).map(|()| None);
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = match (parts.next(), parts.next(), parts.next()) {
        (
            Some([_, ..]),
            Some([_, ..]),
            Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor]),
        ) if major.is_ascii_digit() && minor.is_ascii_digit() => Some((*major, *minor)),
        _ => None,
    };
    match version {
        Some((b'1', minor)) if minor > b'1' => {
            // The same head, naming 1.1: the same length, parsed as 1.1.
            let mut as_11 = input.to_vec();
            if let Some(b) = as_11.get_mut(start + line.len() - 1) {
                *b = b'1';
            }
            parse(&as_11, cfg)
        }
        Some(_) => Err(Status::HttpVersionNotSupported.into()),
        None => Err(Status::BadRequest.into()),
    }
}

/// The request line, without its LF, after any leading empty lines (which RFC 9112 §2.2
/// lets a server skip); and whether its LF has arrived.
fn request_line(input: &[u8]) -> (&[u8], bool) {
    let (_, line, complete) = request_line_at(input);
    (line, complete)
}

/// [`request_line`], with where in `input` the line starts.
fn request_line_at(input: &[u8]) -> (usize, &[u8], bool) {
    let start = input
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(input.len());
    let rest = input.get(start..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(end) => (start, rest.split_at(end).0, true),
        None => (start, rest, false),
    }
}

/// Checks the fields that matter for framing and persistence, and collects the
/// conditional ones.
fn fields(
    headers: &[httparse::Header],
    minor: u8,
    cfg: &HttpConfig,
) -> Result<(Persist, Framing, Conditions), Status> {
    let mut hosts = 0;
    let mut length = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    // A coding other than chunked (gzip, or one never heard of): this server decodes none.
    let mut other_coding = false;
    let (mut close, mut keep_alive, mut expect_continue) = (false, false, false);
    let mut c = Conditions::default();
    for h in headers {
        let (name, value) = (h.name, h.value);
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("host") {
            hosts += 1;
            if !value
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
            {
                return Err(Status::BadRequest);
            }
        } else if is("content-length") {
            let n = content_length(value)?;
            if length.is_some_and(|l| l != n) {
                return Err(Status::BadRequest);
            }
            length = Some(n);
        } else if is("transfer-encoding") {
            transfer_encoding = true;
            for coding in list(value) {
                // chunked must be the last coding, applied once (RFC 9112 §6.1).
                if chunked {
                    return Err(Status::BadRequest);
                }
                chunked = coding.eq_ignore_ascii_case(b"chunked");
                other_coding |= !chunked;
            }
        } else if is("connection") {
            for token in list(value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if is("expect") {
            expect_continue |= trim(value).eq_ignore_ascii_case(b"100-continue");
        } else if is("if-match") {
            join(&mut c.if_match, value);
        } else if is("if-none-match") {
            join(&mut c.if_none_match, value);
        } else if is("if-modified-since") {
            first(&mut c.if_modified_since, value);
        } else if is("if-unmodified-since") {
            first(&mut c.if_unmodified_since, value);
        } else if is("if-range") {
            first(&mut c.if_range, value);
        } else if is("range") {
            first(&mut c.range, value);
        } else if is("accept-encoding") && !cfg.precompressed.is_empty() {
            c.accept.add(value);
        } else if is("accept") && (cfg.fallback.is_some() || cfg.listing) {
            c.accepts_html |= accepts(value, b"text/html");
            c.accepts_json |= accepts(value, b"application/json");
        } else if let Some(cors) = &cfg.rules.cors {
            if is("origin") && !cors.any() {
                c.cors_origin = c.cors_origin.or(cors.index_of(value));
            } else if is("access-control-request-method") {
                c.preflight.get_or_insert_with(Box::default).method = true;
            } else if is("access-control-request-headers") {
                first(
                    &mut c.preflight.get_or_insert_with(Box::default).headers,
                    value,
                );
            }
        }
    }
    if (minor == 1 && hosts == 0) || hosts > 1 {
        return Err(Status::BadRequest);
    }
    let framing = match (transfer_encoding, length) {
        // Both: a smuggling attempt or a broken intermediary (RFC 9112 §6.3). HTTP/1.0
        // has no chunked coding, so its framing cannot be trusted (§6.1).
        (true, Some(_)) => return Err(Status::BadRequest),
        (true, None) if minor == 0 || !chunked => return Err(Status::BadRequest),
        // Framed, but in a coding it cannot undo: 501 (RFC 9112 §6.1). Without chunked
        // last the length is unknowable, which stays 400 (§6.3), as above.
        (true, None) if other_coding => return Err(Status::NotImplemented),
        (true, None) => Framing::Chunked,
        (false, Some(n)) if n > 0 => Framing::Length(n),
        (false, _) => Framing::None,
    };
    let mut persist = match (close, minor, keep_alive) {
        (true, _, _) | (false, 0, false) => Persist::Close,
        (false, 0, true) => Persist::EchoKeepAlive,
        _ => Persist::KeepAlive,
    };
    if framing != Framing::None && expect_continue {
        // Answer at once without reading the body, and close: the client may or may not
        // send the body, so the connection cannot be resynchronised (RFC 9110 §10.1.1).
        persist = Persist::Close;
        return Ok((persist, Framing::None, c));
    }
    if let Framing::Length(n) = framing {
        if n > cfg.max_body_discard {
            return Err(Status::ContentTooLarge);
        }
    }
    Ok((persist, framing, c))
}

/// Whether an Accept value names `media` (text/html, application/json) with a q-value
/// above 0 (`text/*` and `*/*` do not count: every fetch sends those).
fn accepts(value: &[u8], media_type: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|member| {
        let mut parts = member.split(|&b| b == b';');
        let media = trim(parts.next().unwrap_or_default());
        media.eq_ignore_ascii_case(media_type)
            && !parts.any(|p| {
                let p = trim(p);
                matches!(p, [b'q' | b'Q', b'=', b'0', rest @ ..] if rest.iter().all(|&b| b == b'.' || b == b'0'))
            })
    })
}

/// A Content-Length value: `1*DIGIT`, or a list of identical ones (RFC 9110 §8.6). A
/// number beyond u64 saturates, to be refused as too large.
fn content_length(value: &[u8]) -> Result<u64, Status> {
    let mut n = None;
    for item in value.split(|&b| b == b',').map(trim) {
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return Err(Status::BadRequest);
        }
        let v = item.iter().fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        if n.is_some_and(|n| n != v) {
            return Err(Status::BadRequest);
        }
        n = Some(v);
    }
    n.ok_or(Status::BadRequest)
}

/// The non-empty elements of a comma-separated list (RFC 9110 §5.6.1).
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

/// `v` without its leading and trailing optional whitespace (spaces and tabs).
pub(super) fn trim(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// Keeps a singleton field's first line; like nginx, later ones are ignored.
fn first(slot: &mut Option<String>, value: &[u8]) {
    slot.get_or_insert_with(|| String::from_utf8_lossy(value).into_owned());
}

/// Appends a list field's line to what earlier lines gave.
fn join(slot: &mut Option<String>, value: &[u8]) {
    let value = String::from_utf8_lossy(value);
    match slot {
        Some(s) => {
            s.push_str(", ");
            s.push_str(&value);
        }
        None => *slot = Some(value.into_owned()),
    }
}
