//! Precompressed sidecars (`--precompressed`): content codings a file can also be had
//! in, as `NAME.br`, `NAME.zst` or `NAME.gz` beside it, and the request's
//! Accept-Encoding (RFC 9110 §12.5.3) reduced to a choice among them.
//!
//! The choice: the acceptable codings (q > 0) in order of the client's q-value, ties
//! going to the server's order. A request without Accept-Encoding gets the original:
//! RFC 9110 would allow any coding then, but curl, wget and scripts send none and
//! expect the file as it is, which is what nginx's gzip_static and Caddy do too.
//! `identity` is never refused outright: with no acceptable sidecar the original is
//! sent, as §12.5.3 lets a server do (nginx and Caddy do the same; a 406 would break
//! more clients than it helps).

use super::head::trim;

/// A coding a sidecar can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    pub const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The Content-Encoding token.
    pub const fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// This coding's bit in a set of codings ([`crate::proto::FileRef::note_absent`]).
    pub const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The sidecar's suffix.
    pub const fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }

    /// The coding a `--precompressed` item names: its token (`br`, `zstd`, `gzip`).
    pub fn from_name(name: &str) -> Option<Coding> {
        Coding::ALL
            .into_iter()
            .find(|c| c.token().eq_ignore_ascii_case(name))
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a request's Accept-Encoding says of the codings sidecars can carry, q-values in
/// thousandths (RFC 9110 §12.4.2: at most three decimals).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    /// The field was present (any number of lines, an empty one included).
    present: bool,
    q: [Option<u16>; 3],
    /// `*`: any coding not named.
    star: Option<u16>,
}

impl Accept {
    /// Adds one Accept-Encoding field line. Repeated lines are one list (RFC 9110
    /// §5.3); a coding named twice keeps its first q. Members that do not parse are
    /// skipped, not fatal: an odd client should still get its file.
    pub fn add(&mut self, value: &[u8]) {
        self.present = true;
        for member in value.split(|&b| b == b',') {
            let mut parts = member.split(|&b| b == b';');
            let name = trim(parts.next().unwrap_or_default());
            if name.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in parts {
                let param = trim(param);
                if let Some(v) = param
                    .strip_prefix(b"q=")
                    .or_else(|| param.strip_prefix(b"Q="))
                {
                    q = qvalue(trim(v));
                }
            }
            let Some(q) = q else { continue };
            let slot = if name == b"*" {
                &mut self.star
            } else {
                match Coding::ALL
                    .into_iter()
                    .find(|c| name.eq_ignore_ascii_case(c.token().as_bytes()))
                {
                    Some(c) => &mut self.q[c.index()],
                    // `x-gzip` is gzip (RFC 9110 §8.4.1.3).
                    None if name.eq_ignore_ascii_case(b"x-gzip") => {
                        &mut self.q[Coding::Gzip.index()]
                    }
                    // identity and codings with no sidecar kind.
                    None => continue,
                }
            };
            slot.get_or_insert(q);
        }
    }

    fn q(&self, c: Coding) -> u16 {
        self.q[c.index()].or(self.star).unwrap_or(0)
    }

    /// The sidecars worth trying, best first: of `offered` (the server's order), those
    /// the client accepts, by its q-value, ties in the server's order.
    pub fn choose(&self, offered: &[Coding]) -> Choice {
        let mut out = Choice::default();
        if !self.present {
            return out;
        }
        for &c in offered {
            if self.q(c) > 0 && !out.list[..usize::from(out.len)].contains(&c) {
                out.list[usize::from(out.len)] = c;
                out.len += 1;
            }
        }
        // A stable sort: equal q-values keep the server's order.
        out.list[..usize::from(out.len)].sort_by_key(|&c| std::cmp::Reverse(self.q(c)));
        out
    }
}

/// The codings to try, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    list: [Coding; 3],
    len: u8,
}

impl Default for Choice {
    fn default() -> Self {
        Choice {
            list: [Coding::Br; 3],
            len: 0,
        }
    }
}

impl Choice {
    /// The `i`th best, if there is one.
    pub fn get(&self, i: u8) -> Option<Coding> {
        (i < self.len).then(|| self.list[usize::from(i)])
    }

    /// This choice without the codings in `bits` ([`Coding::bit`]), in the same order.
    pub fn without(mut self, bits: u8) -> Choice {
        let mut n = 0;
        for i in 0..usize::from(self.len) {
            let c = self.list[i];
            if bits & c.bit() == 0 {
                self.list[n] = c;
                n += 1;
            }
        }
        self.len = n as u8;
        self
    }
}

/// A qvalue (RFC 9110 §12.4.2): `0`, `1`, `0.` to three digits, `1.` then zeros.
fn qvalue(v: &[u8]) -> Option<u16> {
    match v {
        [b'0'] | [b'0', b'.'] => Some(0),
        [b'1'] | [b'1', b'.'] => Some(1000),
        [b'1', b'.', zeros @ ..] if zeros.len() <= 3 && zeros.iter().all(|&b| b == b'0') => {
            Some(1000)
        }
        [b'0', b'.', digits @ ..] if digits.len() <= 3 && digits.iter().all(u8::is_ascii_digit) => {
            let mut n = 0u16;
            for i in 0..3 {
                n = n * 10 + digits.get(i).map_or(0, |d| u16::from(d - b'0'));
            }
            Some(n)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::*;

    fn choose(fields: &[&str], offered: &[Coding]) -> Vec<Coding> {
        let mut a = Accept::default();
        for f in fields {
            a.add(f.as_bytes());
        }
        let c = a.choose(offered);
        (0..3).filter_map(|i| c.get(i)).collect()
    }

    #[test]
    fn q_values_order_the_choice_and_ties_go_to_the_server() {
        let all = [Br, Zstd, Gzip];
        assert_eq!(choose(&["gzip, deflate, br, zstd"], &all), [Br, Zstd, Gzip]);
        assert_eq!(
            choose(&["gzip, deflate, br, zstd"], &[Gzip, Br]),
            [Gzip, Br]
        );
        assert_eq!(choose(&["br;q=0.5, gzip;q=0.8"], &all), [Gzip, Br]);
        assert_eq!(
            choose(&["br;q=0.5, gzip;q=0.8, zstd;q=1.0"], &all),
            [Zstd, Gzip, Br]
        );
        assert_eq!(choose(&["br;q=0.001"], &all), [Br]);
        // Case and blanks do not matter; parameters other than q are ignored.
        assert_eq!(choose(&[" GZip ; Q=0.9 ;x=y , BR"], &all), [Br, Gzip]);
        // Two lines are one list.
        assert_eq!(choose(&["br;q=0.2", "gzip"], &all), [Gzip, Br]);
        assert_eq!(choose(&["x-gzip"], &all), [Gzip]);
    }

    #[test]
    fn q_zero_refuses_and_star_covers_the_rest() {
        let all = [Br, Zstd, Gzip];
        assert_eq!(choose(&["br;q=0, gzip"], &all), [Gzip]);
        assert_eq!(choose(&["*"], &all), [Br, Zstd, Gzip]);
        assert_eq!(choose(&["*;q=0.5, br;q=0"], &all), [Zstd, Gzip]);
        assert_eq!(choose(&["gzip;q=0, *"], &all), [Br, Zstd]);
        // identity says nothing of sidecars, refused or not.
        assert_eq!(choose(&["identity;q=0, br"], &all), [Br]);
        assert_eq!(choose(&["identity;q=0"], &all), []);
        assert_eq!(choose(&["identity"], &all), []);
    }

    #[test]
    fn no_field_or_an_empty_one_gets_the_original() {
        assert_eq!(choose(&[], &[Br, Gzip]), []);
        assert_eq!(choose(&[""], &[Br, Gzip]), []);
        // Unparseable q-values drop the member, not the field.
        assert_eq!(
            choose(
                &["br;q=2, gzip;q=0.5000, zstd;q=.5, gzip"],
                &[Br, Zstd, Gzip]
            ),
            [Gzip]
        );
    }

    #[test]
    fn qvalues_follow_the_grammar() {
        assert_eq!(qvalue(b"0"), Some(0));
        assert_eq!(qvalue(b"0.5"), Some(500));
        assert_eq!(qvalue(b"0.05"), Some(50));
        assert_eq!(qvalue(b"0.123"), Some(123));
        assert_eq!(qvalue(b"1.000"), Some(1000));
        assert_eq!(qvalue(b"1.001"), None);
        assert_eq!(qvalue(b"0.1234"), None);
        assert_eq!(qvalue(b""), None);
        assert_eq!(qvalue(b"-1"), None);
    }

    #[test]
    fn names_round_trip() {
        for c in Coding::ALL {
            assert_eq!(Coding::from_name(c.token()), Some(c));
        }
        assert_eq!(Coding::from_name("deflate"), None);
    }
}
