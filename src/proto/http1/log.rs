//! Access-log lines in nginx's "combined" format.

use super::date;
use super::status::Status;
use crate::proto::{path_bytes, Fault, LogLine};
use std::fmt::Write;
use std::io;
use std::net::IpAddr;

/// The request's part of a log line, escaped when the head is parsed. Captured only when
/// logging is on, so a server without a log allocates nothing for it.
#[derive(Debug)]
pub struct LogFields {
    request: String,
    referer: String,
    agent: String,
}

impl LogFields {
    pub fn new(
        method: &str,
        target: &str,
        minor: u8,
        referer: Option<&[u8]>,
        agent: Option<&[u8]>,
    ) -> Box<Self> {
        let request = request_line(method, target, minor);
        let field = |v: Option<&[u8]>| {
            let mut s = String::new();
            escape(&mut s, v.unwrap_or(b"-"));
            s
        };
        Box::new(LogFields {
            request,
            referer: field(referer),
            agent: field(agent),
        })
    }
}

/// `PEER - - [time] "request" status bytes "referer" "agent"`, bytes being the body
/// bytes that reached the kernel, which the driver fills in once the send has ended
/// (`head` header bytes precede a body of `body` bytes). Without fields (a request
/// rejected before its request line was understood) the quoted parts are `-`.
pub fn line(
    peer: IpAddr,
    imf_date: &str,
    fields: Option<&LogFields>,
    status: Status,
    head: u64,
    body: u64,
) -> LogLine {
    let (request, referer, agent) =
        fields.map_or(("-", "-", "-"), |f| (&f.request, &f.referer, &f.agent));
    LogLine {
        before: format!(
            "{peer} - - [{}] \"{request}\" {} ",
            date::log_stamp(imf_date),
            status.code()
        ),
        after: format!(" \"{referer}\" \"{agent}\""),
        head,
        body,
    }
}

/// `METHOD TARGET HTTP/1.x`, escaped.
fn request_line(method: &str, target: &str, minor: u8) -> String {
    let mut request = String::with_capacity(method.len() + target.len() + 10);
    escape(&mut request, method.as_bytes());
    request.push(' ');
    escape(&mut request, target.as_bytes());
    let _ = write!(request, " HTTP/1.{minor}");
    request
}

/// The error log's account of `op` on `rel` (a path beneath the root, as `FsOp` names
/// it) failing with `error` for the request `method target HTTP/1.minor`.
pub fn fault(
    op: &'static str,
    rel: &str,
    error: io::Error,
    (method, target, minor): (&str, &str, u8),
) -> Fault {
    let mut path = String::from("/");
    escape(&mut path, &path_bytes(rel).unwrap_or(rel.as_bytes().into()));
    Fault {
        op,
        path,
        error,
        request: request_line(method, target, minor),
    }
}

/// Appends `bytes` with `"`, `\`, control and non-ASCII bytes as `\xHH`, as nginx does,
/// so a client cannot forge log lines or fields.
fn escape(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_response_logs_the_body_bytes_that_went_out() {
        let l = line(
            [10, 0, 0, 1].into(),
            "Mon, 23 Nov 2026 04:27:00 GMT",
            None,
            Status::Ok,
            100,
            209_715_200,
        );
        assert!(l.finish(0).contains("\" 200 0 \""), "{}", l.finish(0));
        assert!(l.finish(60).contains(" 200 0 "));
        assert!(l.finish(100 + 65_536).contains(" 200 65536 "));
        assert!(l.finish(u64::MAX).contains(" 200 209715200 "));
    }

    #[test]
    fn combined_format_escapes_fields() {
        let f = LogFields::new("GET", "/a\"b", 1, Some(b"http://r/\n"), None);
        let l = line(
            [10, 0, 0, 1].into(),
            "Mon, 23 Nov 2026 04:27:00 GMT",
            Some(&f),
            Status::Ok,
            100,
            1234,
        )
        .finish(100 + 1234);
        assert_eq!(
            l,
            r#"10.0.0.1 - - [23/Nov/2026:04:27:00 +0000] "GET /a\x22b HTTP/1.1" 200 1234 "http://r/\x0A" "-""#
        );
        let l = line(
            [10, 0, 0, 1].into(),
            "Mon, 23 Nov 2026 04:27:00 GMT",
            None,
            Status::BadRequest,
            80,
            0,
        )
        .finish(80);
        assert_eq!(
            l,
            r#"10.0.0.1 - - [23/Nov/2026:04:27:00 +0000] "-" 400 0 "-" "-""#
        );
    }
}
