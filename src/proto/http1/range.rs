//! `Range: bytes=...` (RFC 9110 §14.1.2), resolved against a representation's length.

/// An inclusive byte range that lies inside the representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    pub fn len(self) -> u64 {
        self.last - self.first + 1
    }
}

/// What a Range header asks of a representation.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// No usable Range: invalid syntax, another unit, or too many specs. Send 200.
    Whole,
    /// Valid, but no spec overlaps the representation: 416.
    Unsatisfiable,
    /// Sorted, disjoint, non-adjacent and never empty: 206.
    Parts(Vec<ByteRange>),
}

/// Resolves `header` against `len` bytes, honouring at most `max` range specs. Positions
/// saturate instead of overflowing: a position past `u64::MAX` is past any end.
pub fn resolve(header: &str, len: u64, max: usize) -> Ranges {
    let Some((unit, set)) = header.split_once('=') else {
        return Ranges::Whole;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return Ranges::Whole;
    }
    let mut parts = Vec::new();
    let mut specs = 0;
    // Empty list elements are allowed (RFC 9110 §5.6.1.2).
    for spec in set
        .split(',')
        .map(|s| s.trim_matches([' ', '\t']))
        .filter(|s| !s.is_empty())
    {
        specs += 1;
        if specs > max {
            return Ranges::Whole;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Whole;
        };
        let range = if first.is_empty() {
            let Some(suffix) = number(last) else {
                return Ranges::Whole;
            };
            (suffix > 0 && len > 0).then(|| ByteRange {
                first: len.saturating_sub(suffix),
                last: len - 1,
            })
        } else {
            let (Some(first), Some(last)) = (number(first), optional(last)) else {
                return Ranges::Whole;
            };
            if last.is_some_and(|l| l < first) {
                return Ranges::Whole;
            }
            (first < len).then(|| ByteRange {
                first,
                last: last.unwrap_or(u64::MAX).min(len - 1),
            })
        };
        parts.extend(range);
    }
    if specs == 0 {
        return Ranges::Whole;
    }
    if parts.is_empty() {
        return Ranges::Unsatisfiable;
    }
    Ranges::Parts(coalesce(parts))
}

/// `1*DIGIT`, saturating at `u64::MAX`.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// An optional `last-pos`: `Some(None)` when absent, `None` when malformed.
fn optional(s: &str) -> Option<Option<u64>> {
    if s.is_empty() {
        Some(None)
    } else {
        number(s).map(Some)
    }
}

/// Merges overlapping and adjacent ranges, so no byte is sent twice and a client cannot
/// multiply the response with many tiny overlapping specs.
fn coalesce(mut parts: Vec<ByteRange>) -> Vec<ByteRange> {
    parts.sort_unstable_by_key(|r| r.first);
    let mut out: Vec<ByteRange> = Vec::with_capacity(parts.len());
    for r in parts {
        match out.last_mut() {
            Some(prev) if r.first <= prev.last.saturating_add(1) => {
                prev.last = prev.last.max(r.last)
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(v: &[(u64, u64)]) -> Ranges {
        Ranges::Parts(
            v.iter()
                .map(|&(first, last)| ByteRange { first, last })
                .collect(),
        )
    }

    #[test]
    fn single_forms() {
        assert_eq!(resolve("bytes=0-4", 10, 8), parts(&[(0, 4)]));
        assert_eq!(resolve("BYTES=5-", 10, 8), parts(&[(5, 9)]));
        assert_eq!(resolve("bytes=-3", 10, 8), parts(&[(7, 9)]));
        assert_eq!(resolve("bytes=-30", 10, 8), parts(&[(0, 9)]));
        assert_eq!(resolve("bytes=8-100", 10, 8), parts(&[(8, 9)]));
    }

    #[test]
    fn lists_coalesce() {
        assert_eq!(
            resolve("bytes=0-1, 4-5 ,,8-", 10, 8),
            parts(&[(0, 1), (4, 5), (8, 9)])
        );
        assert_eq!(resolve("bytes=4-6,0-2,3-3", 10, 8), parts(&[(0, 6)]));
        assert_eq!(resolve("bytes=0-5,2-3,-2", 10, 8), parts(&[(0, 5), (8, 9)]));
        assert_eq!(resolve("bytes=0-0,20-30", 10, 8), parts(&[(0, 0)]));
    }

    #[test]
    fn invalid_is_ignored() {
        for h in [
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1",
            "bytes=",
            "bytes=,",
            "items=0-1",
            "bytes 0-1",
            "bytes=-",
            "bytes=0-1-2",
            "bytes=+1-2",
            "bytes=0-1,x",
        ] {
            assert_eq!(resolve(h, 10, 8), Ranges::Whole, "{h}");
        }
        assert_eq!(resolve("bytes=0-0,2-2,4-4", 10, 2), Ranges::Whole);
        assert_eq!(resolve("bytes=0-0", 10, 0), Ranges::Whole);
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(resolve("bytes=10-", 10, 8), Ranges::Unsatisfiable);
        assert_eq!(resolve("bytes=-0", 10, 8), Ranges::Unsatisfiable);
        assert_eq!(resolve("bytes=0-", 0, 8), Ranges::Unsatisfiable);
        assert_eq!(resolve("bytes=-5", 0, 8), Ranges::Unsatisfiable);
    }

    #[test]
    fn huge_numbers_saturate() {
        let big = "99999999999999999999999999";
        assert_eq!(
            resolve(&format!("bytes={big}-"), u64::MAX, 8),
            Ranges::Unsatisfiable
        );
        assert_eq!(
            resolve(&format!("bytes=0-{big}"), u64::MAX, 8),
            parts(&[(0, u64::MAX - 1)])
        );
        assert_eq!(
            resolve(&format!("bytes=-{big}"), 5 << 30, 8),
            parts(&[(0, (5 << 30) - 1)])
        );
        let near = format!("bytes={}-{}", u64::MAX - 1, u64::MAX);
        assert_eq!(
            resolve(&near, u64::MAX, 8),
            parts(&[(u64::MAX - 1, u64::MAX - 1)])
        );
        assert_eq!(
            resolve("bytes=5368709100-", 5 << 30, 8),
            parts(&[(5368709100, (5 << 30) - 1)])
        );
    }
}
