//! Access-log lines in nginx's "combined" format.

use super::date;
use super::status::Status;
use std::fmt::Write;
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
        let mut request = String::with_capacity(method.len() + target.len() + 10);
        escape(&mut request, method.as_bytes());
        request.push(' ');
        escape(&mut request, target.as_bytes());
        let _ = write!(request, " HTTP/1.{minor}");
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

/// `PEER - - [time] "request" status bytes "referer" "agent"`. Without fields (a request
/// rejected before its request line was understood) the quoted parts are `-`.
pub fn line(
    peer: IpAddr,
    imf_date: &str,
    fields: Option<&LogFields>,
    status: Status,
    bytes: u64,
) -> String {
    let (request, referer, agent) =
        fields.map_or(("-", "-", "-"), |f| (&f.request, &f.referer, &f.agent));
    format!(
        "{peer} - - [{}] \"{request}\" {} {bytes} \"{referer}\" \"{agent}\"",
        date::log_stamp(imf_date),
        status.code()
    )
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
    fn combined_format_escapes_fields() {
        let f = LogFields::new("GET", "/a\"b", 1, Some(b"http://r/\n"), None);
        let l = line(
            [10, 0, 0, 1].into(),
            "Mon, 23 Nov 2026 04:27:00 GMT",
            Some(&f),
            Status::Ok,
            1234,
        );
        assert_eq!(
            l,
            r#"10.0.0.1 - - [23/Nov/2026:04:27:00 +0000] "GET /a\x22b HTTP/1.1" 200 1234 "http://r/\x0A" "-""#
        );
        let l = line(
            [10, 0, 0, 1].into(),
            "Mon, 23 Nov 2026 04:27:00 GMT",
            None,
            Status::BadRequest,
            0,
        );
        assert_eq!(
            l,
            r#"10.0.0.1 - - [23/Nov/2026:04:27:00 +0000] "-" 400 0 "-" "-""#
        );
    }
}
