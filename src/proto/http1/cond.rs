//! Conditional requests (RFC 9110 §13): preconditions and If-Range.

use super::date;

/// The request fields that make a GET or HEAD conditional, the Accept-Encoding that
/// chooses among precompressed sidecars and whether Accept names text/html (each read
/// only when `--precompressed` or `--fallback` is on).
/// Values are kept only when present; for a repeated list field the lines are joined,
/// as RFC 9110 §5.3 allows.
#[derive(Debug, Default)]
pub struct Conditions {
    pub accept: super::encoding::Accept,
    /// Accept names text/html (read only when `--fallback` is on).
    pub accepts_html: bool,
    /// Accept names application/json (read only when `--listing` is on).
    pub accepts_json: bool,
    /// Which `--cors` origin the request's Origin is (read only when `--cors` names
    /// origins; nothing is allocated for it).
    pub cors_origin: Option<u16>,
    /// A CORS preflight's Access-Control-Request-Method was sent, and its -Headers
    /// (read only when `--cors` is on; boxed only when there).
    pub preflight: Option<Box<Preflight>>,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub if_unmodified_since: Option<String>,
    pub if_range: Option<String>,
    pub range: Option<String>,
}

/// What a CORS preflight asks: Access-Control-Request-Method was sent, and -Headers.
#[derive(Debug, Default)]
pub struct Preflight {
    pub method: bool,
    pub headers: Option<String>,
}

/// The current validators of a file.
#[derive(Debug)]
pub struct Validators {
    /// A strong entity-tag, quotes included.
    pub etag: String,
    /// `Last-Modified`, in (clamped) seconds since the epoch.
    pub modified: u64,
}

/// The outcome of the preconditions.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// Evaluates the preconditions in the order of RFC 9110 §13.2.2, for GET and HEAD.
/// Unparseable dates are ignored, as §13.1.3 and §13.1.4 require.
pub fn evaluate(c: &Conditions, v: &Validators) -> Precondition {
    if let Some(list) = &c.if_match {
        if !any_tag(list, |weak, tag| !weak && tag == v.etag) {
            return Precondition::Failed;
        }
    } else if let Some(since) = c.if_unmodified_since.as_deref().and_then(date::parse) {
        if v.modified > since {
            return Precondition::Failed;
        }
    }
    if let Some(list) = &c.if_none_match {
        if any_tag(list, |_, tag| tag == v.etag) {
            return Precondition::NotModified;
        }
    } else if let Some(since) = c.if_modified_since.as_deref().and_then(date::parse) {
        if v.modified <= since {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Whether an If-Range value still names the current representation: a strong tag
/// strongly equal to ours, or a date exactly equal to Last-Modified (RFC 9110 §13.1.5).
pub fn if_range_holds(value: &str, v: &Validators) -> bool {
    let value = value.trim_matches([' ', '\t']);
    if value.starts_with('"') || value.starts_with("W/") {
        value == v.etag
    } else {
        date::parse(value) == Some(v.modified)
    }
}

/// Whether `*` or any entity-tag of the list satisfies `matches(weak, "quoted-tag")`. A
/// malformed list matches nothing.
fn any_tag(list: &str, mut matches: impl FnMut(bool, &str) -> bool) -> bool {
    let mut rest = list.trim_matches([' ', '\t']);
    if rest == "*" {
        return true;
    }
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        // An opaque-tag may hold commas, so find its closing quote rather than splitting.
        let Some(end) = rest.strip_prefix('"').and_then(|r| r.find('"')) else {
            return false;
        };
        let (tag, tail) = rest.split_at(end + 2);
        if !tail.is_empty() && !tail.starts_with([' ', '\t', ',']) {
            return false;
        }
        if matches(weak, tag) {
            return true;
        }
        rest = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "\"1-2-3\"";
    /// Sun, 06 Nov 1994 08:49:37 GMT
    const MTIME: u64 = 784111777;

    fn v() -> Validators {
        Validators {
            etag: TAG.into(),
            modified: MTIME,
        }
    }

    fn eval(f: impl FnOnce(&mut Conditions)) -> Precondition {
        let mut c = Conditions::default();
        f(&mut c);
        evaluate(&c, &v())
    }

    fn set(s: &str) -> Option<String> {
        Some(s.into())
    }

    #[test]
    fn if_match_is_strong() {
        use Precondition::*;
        assert_eq!(eval(|c| c.if_match = set(TAG)), Proceed);
        assert_eq!(eval(|c| c.if_match = set("*")), Proceed);
        assert_eq!(eval(|c| c.if_match = set("\"x\", \"1-2-3\"")), Proceed);
        assert_eq!(eval(|c| c.if_match = set("W/\"1-2-3\"")), Failed);
        assert_eq!(eval(|c| c.if_match = set("\"x\"")), Failed);
        assert_eq!(eval(|c| c.if_match = set("1-2-3")), Failed);
    }

    #[test]
    fn if_unmodified_since_only_without_if_match() {
        use Precondition::*;
        assert_eq!(
            eval(|c| c.if_unmodified_since = set("Sun, 06 Nov 1994 08:49:36 GMT")),
            Failed
        );
        assert_eq!(
            eval(|c| c.if_unmodified_since = set("Sun, 06 Nov 1994 08:49:37 GMT")),
            Proceed
        );
        assert_eq!(eval(|c| c.if_unmodified_since = set("garbage")), Proceed);
        assert_eq!(
            eval(|c| {
                c.if_match = set(TAG);
                c.if_unmodified_since = set("Sun, 06 Nov 1994 08:49:36 GMT");
            }),
            Proceed
        );
    }

    #[test]
    fn if_none_match_is_weak_and_beats_if_modified_since() {
        use Precondition::*;
        assert_eq!(eval(|c| c.if_none_match = set("W/\"1-2-3\"")), NotModified);
        assert_eq!(
            eval(|c| c.if_none_match = set("\"a,b\" , \"1-2-3\"")),
            NotModified
        );
        assert_eq!(eval(|c| c.if_none_match = set("*")), NotModified);
        assert_eq!(
            eval(|c| {
                c.if_none_match = set("\"other\"");
                c.if_modified_since = set("Sun, 06 Nov 1994 08:49:37 GMT");
            }),
            Proceed
        );
        assert_eq!(eval(|c| c.if_match = set("\"x\"")), Failed);
    }

    #[test]
    fn if_modified_since() {
        use Precondition::*;
        assert_eq!(
            eval(|c| c.if_modified_since = set("Sun, 06 Nov 1994 08:49:37 GMT")),
            NotModified
        );
        assert_eq!(
            eval(|c| c.if_modified_since = set("Sun, 06 Nov 1994 08:49:36 GMT")),
            Proceed
        );
        assert_eq!(eval(|c| c.if_modified_since = set("not a date")), Proceed);
    }

    #[test]
    fn malformed_tag_lists_match_nothing() {
        for l in ["\"1-2-3", "\"1-2-3\"x", "W/", "W/1", "\"a\" junk \"1-2-3\""] {
            assert!(!any_tag(l, |_, t| t == TAG), "{l}");
        }
    }

    #[test]
    fn if_range() {
        assert!(if_range_holds(TAG, &v()));
        assert!(!if_range_holds("W/\"1-2-3\"", &v()));
        assert!(!if_range_holds("\"other\"", &v()));
        assert!(if_range_holds("Sun, 06 Nov 1994 08:49:37 GMT", &v()));
        assert!(!if_range_holds("Sun, 06 Nov 1994 08:49:38 GMT", &v()));
        assert!(!if_range_holds("bogus", &v()));
    }
}
