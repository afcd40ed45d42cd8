//! HTTP dates. `httpdate` panics outside 1970..=9999, and file times and clocks can lie
//! outside that, so every conversion here clamps first.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z, the last second an IMF-fixdate can name.
const MAX_SECS: u64 = 253_402_300_799;

/// Seconds since the epoch, clamped to what an HTTP date can express.
pub fn clamp(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).min(MAX_SECS)
}

/// The IMF-fixdate of `secs` (already clamped), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn format(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs.min(MAX_SECS)))
}

/// Seconds since the epoch named by an HTTP date in any of the three RFC 9110 forms.
pub fn parse(value: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(value.trim_matches([' ', '\t'])).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// `now` in the seconds a `Date` header says.
pub fn secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(MAX_SECS)
}

/// The `Date` header value, formatted at most once per second of `now`.
#[derive(Debug, Default)]
pub struct DateCache {
    secs: u64,
    text: String,
}

impl DateCache {
    pub fn get(&mut self, now: SystemTime) -> &str {
        let secs = secs(now);
        if self.text.is_empty() || secs != self.secs {
            self.secs = secs;
            self.text = format(secs);
        }
        &self.text
    }
}

/// An IMF-fixdate, copied out of the per-thread cache (always 29 bytes).
#[derive(Clone, Copy)]
pub struct Imf([u8; 29]);

impl Imf {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("Thu, 01 Jan 1970 00:00:00 GMT")
    }
}

/// The `Date` header value for `now`, formatted at most once per second per thread:
/// one cache for every connection a thread serves, not a string per connection (an
/// idle connection holds none).
pub fn http_date(now: SystemTime) -> Imf {
    thread_local! {
        static CACHE: std::cell::RefCell<DateCache> = std::cell::RefCell::new(DateCache::default());
    }
    CACHE.with(|c| {
        let mut out = [b' '; 29];
        let mut c = c.borrow_mut();
        let text = c.get(now).as_bytes();
        let n = text.len().min(29);
        out[..n].copy_from_slice(&text[..n]);
        Imf(out)
    })
}

/// Appends the IMF-fixdate of `secs` (a Last-Modified), from a one-entry per-thread
/// cache: a hot file's mtime is formatted once, not per response.
pub fn push_imf_cached(out: &mut String, secs: u64) {
    thread_local! {
        static LAST: std::cell::RefCell<DateCache> = std::cell::RefCell::new(DateCache::default());
    }
    LAST.with(|c| {
        let mut c = c.borrow_mut();
        out.push_str(c.get(UNIX_EPOCH + Duration::from_secs(secs.min(MAX_SECS))));
    });
}

/// An IMF-fixdate rewritten as the access log's `06/Nov/1994:08:49:37 +0000`.
pub fn log_stamp(imf: &str) -> String {
    // IMF-fixdate is fixed-width: "Sun, 06 Nov 1994 08:49:37 GMT".
    let field = |r: std::ops::Range<usize>| imf.get(r).unwrap_or("?");
    format!(
        "{}/{}/{}:{} +0000",
        field(5..7),
        field(8..11),
        field(12..16),
        field(17..25)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_instead_of_panicking() {
        assert_eq!(format(clamp(-5)), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(format(clamp(i64::MAX)), "Fri, 31 Dec 9999 23:59:59 GMT");
        let mut c = DateCache::default();
        assert_eq!(
            c.get(UNIX_EPOCH + Duration::from_secs(u64::MAX / 2)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn cache_follows_the_second() {
        let mut c = DateCache::default();
        let t = UNIX_EPOCH + Duration::from_secs(784111777);
        assert_eq!(c.get(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            c.get(t + Duration::from_millis(999)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            c.get(t + Duration::from_secs(1)),
            "Sun, 06 Nov 1994 08:49:38 GMT"
        );
        assert_eq!(c.get(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn parses_all_three_forms_and_rejects_junk() {
        for d in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse(d), Some(784111777), "{d}");
        }
        assert_eq!(parse("yesterday"), None);
    }

    #[test]
    fn log_stamp_rearranges_fields() {
        assert_eq!(
            log_stamp("Sun, 06 Nov 1994 08:49:37 GMT"),
            "06/Nov/1994:08:49:37 +0000"
        );
    }
}
