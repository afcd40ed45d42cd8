//! Response header rules from the command line, compiled once at start: `--header`
//! (every response, or those of paths a glob matches), `--cache-control` (the first
//! rule whose glob matches a path sets its Cache-Control) and `--cors` (CORS response
//! headers, and answers to preflight requests).
//!
//! Globs match the request's normalised path without its leading `/` (`assets/app.js`,
//! `index.html`; the root is the empty path): `*` and `?` within one name, `**` across
//! names (`assets/**`, `**/*.html`), `[abc]` and `[!abc]` sets, as the `glob` crate's
//! `Pattern` with `require_literal_separator`. A response that answers no path (a
//! malformed request's 400) gets only the rules without a glob.

use super::head::trim;
use glob::{MatchOptions, Pattern};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// Fields a rule may not set: the ones the server frames, negotiates or must keep true.
const RESERVED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "date",
    "content-range",
    "content-encoding",
    "content-type",
    "etag",
    "last-modified",
    "location",
    "vary",
    "accept-ranges",
];

/// A compiled glob.
#[derive(Debug, Clone)]
pub struct Glob(Pattern);

impl Glob {
    pub fn new(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("an empty glob matches nothing".into());
        }
        let text = text.strip_prefix('/').unwrap_or(text);
        Pattern::new(text)
            .map(Glob)
            .map_err(|e| format!("bad glob {text:?}: {}", e.msg))
    }

    pub fn matches(&self, rel: &str) -> bool {
        self.0.matches_with(rel, MATCH)
    }
}

/// One `--header`: the field line (`Name: value\r\n`) and where it applies.
#[derive(Debug, Clone)]
pub struct HeaderRule {
    glob: Option<Glob>,
    line: String,
}

impl HeaderRule {
    /// `NAME: VALUE` for every response, or `GLOB:NAME: VALUE` for the paths GLOB
    /// matches. The glob form is the one whose text after its first `:` starts with a
    /// field name and a `:`; a glob has no `:` of its own.
    pub fn parse(spec: &str) -> Result<HeaderRule, String> {
        let (glob, field) = match spec.split_once(':') {
            Some((g, rest)) if starts_with_field(rest) => (Some(Glob::new(g)?), rest),
            _ => (None, spec),
        };
        let (name, value) = field
            .split_once(':')
            .ok_or_else(|| format!("{spec:?} is not NAME: VALUE or GLOB:NAME: VALUE"))?;
        let line = field_line(name, value.trim())?;
        if name.eq_ignore_ascii_case("cache-control") {
            return Err("Cache-Control is set with --cache-control GLOB=VALUE".into());
        }
        Ok(HeaderRule { glob, line })
    }
}

/// One `--cache-control GLOB=VALUE`.
#[derive(Debug, Clone)]
pub struct CacheRule {
    glob: Glob,
    line: String,
}

impl CacheRule {
    pub fn parse(spec: &str) -> Result<CacheRule, String> {
        let (glob, value) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?} is not GLOB=VALUE"))?;
        Ok(CacheRule {
            glob: Glob::new(glob)?,
            line: field_line("Cache-Control", value.trim())?,
        })
    }
}

/// `--cors`: the origins allowed (`*` for any).
#[derive(Debug, Clone, Default)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    /// Adds one `--cors` value: `*`, or an origin (`https://app.example`, a scheme and
    /// a host with an optional port, no path).
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let spec = spec.trim();
        if spec == "*" {
            self.any = true;
            return Ok(());
        }
        if self.origins.len() >= usize::from(u16::MAX) {
            return Err("at most 65535 --cors origins".into());
        }
        let rest = spec
            .strip_prefix("https://")
            .or_else(|| spec.strip_prefix("http://"))
            .ok_or_else(|| format!("{spec:?} is not * or an origin such as https://app.example"))?;
        if rest.is_empty()
            || !rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            return Err(format!(
                "{spec:?} is not an origin (scheme://host[:port], no path)"
            ));
        }
        self.origins.push(spec.to_ascii_lowercase());
        Ok(())
    }

    /// Which allowed origin a request's Origin value is (its index), if any: what a
    /// request keeps of it, so reading it allocates nothing.
    pub fn index_of(&self, origin: &[u8]) -> Option<u16> {
        let origin = trim(origin);
        self.origins
            .iter()
            .position(|o| o.as_bytes().eq_ignore_ascii_case(origin))
            .and_then(|i| u16::try_from(i).ok())
    }

    /// Whether any origin is allowed (`*`): then the request's Origin is not read.
    pub fn any(&self) -> bool {
        self.any
    }

    /// The Allow-Origin value for a request whose Origin is allowed origin `index`.
    fn allow(&self, index: Option<u16>) -> Option<&str> {
        if self.any {
            return Some("*");
        }
        self.origins.get(usize::from(index?)).map(String::as_str)
    }
}

/// Every rule, compiled.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub headers: Vec<HeaderRule>,
    pub cache: Vec<CacheRule>,
    pub cors: Option<Cors>,
    /// This rule set's key in each thread's cache of glob matches ([`Rules::apply`]).
    id: OnceLock<u64>,
}

/// Entries a thread's cache of glob matches holds before it starts over.
const MATCH_CACHE: usize = 4096;
/// Longest path whose matches are cached (longer ones are matched each time): with
/// [`MATCH_CACHE`], at most about 1 MiB per thread, whatever paths clients invent.
const MATCH_CACHE_PATH: usize = 200;

/// A thread's glob matches: per rule set and success, path to the field lines.
type Matches = HashMap<(u64, bool), HashMap<Box<str>, Box<str>>>;

thread_local! {
    /// A hot path's globs are matched once per thread, not per response.
    static MATCHES: RefCell<Matches> = RefCell::new(HashMap::new());
}

impl Rules {
    pub fn new(headers: Vec<HeaderRule>, cache: Vec<CacheRule>, cors: Option<Cors>) -> Rules {
        Rules {
            headers,
            cache,
            cors,
            id: OnceLock::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.cache.is_empty() && self.cors.is_none()
    }

    /// The lines of the glob rules for `rel`: header rules with a glob, and the first
    /// matching cache rule on a success.
    fn path_lines(&self, out: &mut String, rel: &str, success: bool) {
        for h in &self.headers {
            if h.glob.as_ref().is_some_and(|g| g.matches(rel)) {
                out.push_str(&h.line);
            }
        }
        if success {
            if let Some(c) = self.cache.iter().find(|c| c.glob.matches(rel)) {
                out.push_str(&c.line);
            }
        }
    }

    /// Appends the field lines the rules give a response to a request for `rel` (none
    /// for a request that names no path) whose Origin is allowed origin `origin`.
    /// Cache-Control goes only on a `success` (2xx, 304): a 404 under `assets/**` must
    /// not be cached for a year. What the globs give a path is remembered per thread
    /// (at most [`MATCH_CACHE`] paths, then it starts over).
    pub fn apply(&self, out: &mut String, rel: Option<&str>, origin: Option<u16>, success: bool) {
        for h in self.headers.iter().filter(|h| h.glob.is_none()) {
            out.push_str(&h.line);
        }
        let globs = !self.cache.is_empty() || self.headers.iter().any(|h| h.glob.is_some());
        match rel {
            Some(rel) if globs && rel.len() <= MATCH_CACHE_PATH => {
                static IDS: AtomicU64 = AtomicU64::new(1);
                let id = *self.id.get_or_init(|| IDS.fetch_add(1, Ordering::Relaxed));
                MATCHES.with(|m| {
                    let mut m = m.borrow_mut();
                    let held: usize = m.values().map(HashMap::len).sum();
                    if held >= MATCH_CACHE {
                        m.clear();
                    }
                    let paths = m.entry((id, success)).or_default();
                    if let Some(lines) = paths.get(rel) {
                        out.push_str(lines);
                        return;
                    }
                    let mut lines = String::new();
                    self.path_lines(&mut lines, rel, success);
                    out.push_str(&lines);
                    paths.insert(rel.into(), lines.into());
                });
            }
            Some(rel) if globs => self.path_lines(out, rel, success),
            _ => {}
        }
        if let Some(cors) = &self.cors {
            if let Some(allow) = cors.allow(origin) {
                push_line(out, "Access-Control-Allow-Origin", allow);
                out.push_str(
                    "Access-Control-Expose-Headers: Content-Length, Content-Range, ETag, Last-Modified\r\n",
                );
            }
            if !cors.any {
                out.push_str("Vary: Origin\r\n");
            }
        }
    }

    /// The field lines of a 204 answering a CORS preflight (an OPTIONS on a path with
    /// Origin and Access-Control-Request-Method) beyond those [`Rules::apply`] gives
    /// every response to that origin (Allow-Origin, Vary), or `None` when it is no
    /// preflight (`method` false), CORS is off, or the origin is not allowed (the
    /// OPTIONS then gets what it would without `--cors`).
    pub fn preflight(
        &self,
        origin: Option<u16>,
        method: bool,
        headers: Option<&str>,
    ) -> Option<String> {
        let cors = self.cors.as_ref()?;
        if !method {
            return None;
        }
        cors.allow(origin)?;
        let mut out = String::new();
        out.push_str("Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n");
        if let Some(h) = headers.filter(|h| valid_value(h)) {
            push_line(&mut out, "Access-Control-Allow-Headers", h);
        }
        out.push_str("Access-Control-Max-Age: 86400\r\n");
        Some(out)
    }
}

fn push_line(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

/// `Name: value\r\n`, checked: a token for a name (RFC 9110 §5.1) that the server does
/// not keep for itself, and a value of visible characters, spaces and tabs.
fn field_line(name: &str, value: &str) -> Result<String, String> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(format!("{name:?} is not a field name"));
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(format!("{name} is the server's to set"));
    }
    if value.is_empty() || !valid_value(value) {
        return Err(format!(
            "{name}: the value {value:?} is empty or has a control character"
        ));
    }
    let mut line = String::new();
    push_line(&mut line, name, value);
    Ok(line)
}

fn valid_value(v: &str) -> bool {
    v.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

fn starts_with_field(s: &str) -> bool {
    match s.find(':') {
        Some(i) if i > 0 => s[..i].bytes().all(is_tchar),
        _ => false,
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(rules: &Rules, rel: Option<&str>, origin: Option<&str>) -> String {
        let origin = origin.and_then(|o| rules.cors.as_ref()?.index_of(o.as_bytes()));
        let mut out = String::new();
        rules.apply(&mut out, rel, origin, true);
        out
    }

    #[test]
    fn header_rules_parse_both_forms() {
        let r = HeaderRule::parse("X-Frame-Options: DENY").unwrap();
        assert!(r.glob.is_none());
        assert_eq!(r.line, "X-Frame-Options: DENY\r\n");
        let r = HeaderRule::parse("assets/**:X-Robots-Tag: noindex").unwrap();
        assert!(r.glob.unwrap().matches("assets/a/b.js"));
        assert_eq!(r.line, "X-Robots-Tag: noindex\r\n");
        // A value with colons of its own stays whole.
        let r = HeaderRule::parse("Link: <https://cdn.example>; rel=preconnect").unwrap();
        assert_eq!(r.line, "Link: <https://cdn.example>; rel=preconnect\r\n");
        let r = HeaderRule::parse("*.html:Content-Security-Policy: default-src 'self'").unwrap();
        assert_eq!(r.line, "Content-Security-Policy: default-src 'self'\r\n");
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        for bad in [
            "NoColon",
            "Bad Name: x",
            "X-Empty:",
            "X-Ctl: a\u{7}b",
            "Content-Length: 5",
            "assets/**:Transfer-Encoding: chunked",
            "Cache-Control: no-store",
            "[:X-A: b",
        ] {
            assert!(HeaderRule::parse(bad).is_err(), "{bad:?}");
        }
        for bad in ["no-equals", "=max-age=1", "a/[=x", "*.js="] {
            assert!(CacheRule::parse(bad).is_err(), "{bad:?}");
        }
        let mut c = Cors::default();
        for bad in [
            "example.com",
            "https://a.example/path",
            "https://",
            "ftp://x",
        ] {
            assert!(c.add(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn globs_match_names_and_paths() {
        let g = |p: &str| Glob::new(p).unwrap();
        assert!(g("assets/**").matches("assets/x.js"));
        assert!(g("assets/**").matches("assets/a/b/c.css"));
        assert!(!g("assets/**").matches("other/assets/x.js"));
        assert!(g("*.html").matches("index.html"));
        assert!(
            !g("*.html").matches("blog/post.html"),
            "* stays within a name"
        );
        assert!(g("**/*.html").matches("blog/post.html"));
        assert!(g("**/*.html").matches("index.html"));
        assert!(
            g("/index.html").matches("index.html"),
            "a leading / is the root"
        );
    }

    #[test]
    fn the_first_cache_rule_that_matches_wins() {
        let rules = Rules::new(
            Vec::new(),
            vec![
                CacheRule::parse("assets/**=public, max-age=31536000, immutable").unwrap(),
                CacheRule::parse("**/*.html=no-cache").unwrap(),
                CacheRule::parse("**=public, max-age=60").unwrap(),
            ],
            None,
        );
        assert_eq!(
            applied(&rules, Some("assets/a.js"), None),
            "Cache-Control: public, max-age=31536000, immutable\r\n"
        );
        assert_eq!(
            applied(&rules, Some("assets/a.html"), None),
            "Cache-Control: public, max-age=31536000, immutable\r\n"
        );
        assert_eq!(
            applied(&rules, Some("index.html"), None),
            "Cache-Control: no-cache\r\n"
        );
        assert_eq!(
            applied(&rules, Some("robots.txt"), None),
            "Cache-Control: public, max-age=60\r\n"
        );
        assert_eq!(applied(&rules, None, None), "", "no path, no glob rule");
        let mut out = String::new();
        rules.apply(&mut out, Some("assets/missing.js"), None, false);
        assert_eq!(out, "", "not on an error");
    }

    #[test]
    fn cors_names_an_allowed_origin_or_any() {
        let mut c = Cors::default();
        c.add("https://app.example").unwrap();
        c.add("http://localhost:5173").unwrap();
        let rules = Rules::new(Vec::new(), Vec::new(), Some(c));
        let out = applied(&rules, Some("a.json"), Some("https://app.example"));
        assert!(
            out.starts_with("Access-Control-Allow-Origin: https://app.example\r\n"),
            "{out}"
        );
        assert!(out.ends_with("Vary: Origin\r\n"));
        let out = applied(&rules, Some("a.json"), Some("https://evil.example"));
        assert_eq!(
            out, "Vary: Origin\r\n",
            "not allowed: no Allow-Origin, still Vary"
        );
        let cors = rules.cors.as_ref().unwrap();
        let local = cors.index_of(b" http://LOCALHOST:5173 ");
        assert_eq!(local, Some(1), "origins compare without case or blanks");
        let pre = rules
            .preflight(local, true, Some("range, if-none-match"))
            .unwrap();
        assert!(pre.contains("Access-Control-Allow-Headers: range, if-none-match\r\n"));
        let evil = cors.index_of(b"https://evil.example");
        assert_eq!(evil, None);
        assert!(rules.preflight(evil, true, None).is_none());
        assert!(
            rules.preflight(Some(0), false, None).is_none(),
            "no method: no preflight"
        );
        let mut any = Cors::default();
        any.add("*").unwrap();
        let rules = Rules::new(Vec::new(), Vec::new(), Some(any));
        assert!(applied(&rules, Some("x"), None).starts_with("Access-Control-Allow-Origin: *\r\n"));
        assert!(!applied(&rules, Some("x"), None).contains("Vary"));
    }

    #[test]
    fn header_rules_apply_by_glob() {
        let rules = Rules::new(
            vec![
                HeaderRule::parse("X-Content-Type-Options: nosniff").unwrap(),
                HeaderRule::parse("assets/**:X-Robots-Tag: noindex").unwrap(),
            ],
            Vec::new(),
            None,
        );
        assert_eq!(
            applied(&rules, Some("assets/a.js"), None),
            "X-Content-Type-Options: nosniff\r\nX-Robots-Tag: noindex\r\n"
        );
        assert_eq!(
            applied(&rules, Some("index.html"), None),
            "X-Content-Type-Options: nosniff\r\n"
        );
        assert_eq!(
            applied(&rules, None, None),
            "X-Content-Type-Options: nosniff\r\n"
        );
    }
}
