//! Request bodies, read only to be thrown away: a static server has no use for them, but
//! must find where each ends so the next request on the connection is parsed in step.

/// Why a body could not be discarded.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Chunked framing is broken: 400, then close.
    Framing,
    /// More than the discard budget: 413, then close.
    TooLarge,
}

/// Where a body discard stands.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Bytes left of a Content-Length body, or of the current chunk's data.
    Length(u64),
    /// Chunk-size hex digits; `any` once one has been seen.
    Size {
        size: u64,
        any: bool,
    },
    /// Chunk extensions, skipped up to CR.
    Ext {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    LastLf,
    Done,
}

/// A body being discarded.
///
/// Chunked framing requires CRLF: the bare-LF leniency of RFC 9112 §2.2 covers the start
/// line and fields only, and lenient chunk parsing is a known smuggling vector.
#[derive(Debug)]
pub struct Discard {
    state: State,
    /// Wire bytes a chunked body may still use, framing included, so endless extensions
    /// or trailers cost no more than a large body.
    budget: u64,
}

impl Discard {
    /// A Content-Length body; the caller has checked `len` against the limit.
    pub fn length(len: u64) -> Self {
        Discard {
            state: if len == 0 {
                State::Done
            } else {
                State::Length(len)
            },
            budget: len,
        }
    }

    /// A chunked body of at most `budget` wire bytes.
    pub fn chunked(budget: u64) -> Self {
        Discard {
            state: State::Size {
                size: 0,
                any: false,
            },
            budget,
        }
    }

    /// Consumes what belongs to the body from `input`: returns how much, and whether
    /// the body is complete. Bytes after the body are left alone.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, bool), BodyError> {
        let mut used = 0;
        while let Some(rest) = input.get(used..).filter(|r| !r.is_empty()) {
            if self.state == State::Done {
                break;
            }
            let n = match &mut self.state {
                State::Length(left) | State::Data(left) => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = match self.state {
                            State::Data(_) => State::DataCr,
                            _ => State::Done,
                        };
                    }
                    n
                }
                _ => {
                    self.state = self.byte(rest[0])?;
                    1
                }
            };
            self.budget = self
                .budget
                .checked_sub(n as u64)
                .ok_or(BodyError::TooLarge)?;
            used += n;
        }
        Ok((used, self.state == State::Done))
    }

    /// The framing state machine, one byte at a time outside chunk data.
    fn byte(&self, b: u8) -> Result<State, BodyError> {
        use State::*;
        let ctl = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
        Ok(match (&self.state, b) {
            (&Size { size, .. }, _) if b.is_ascii_hexdigit() => {
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                let size = size.checked_mul(16).and_then(|s| s.checked_add(digit));
                Size {
                    size: size.ok_or(BodyError::TooLarge)?,
                    any: true,
                }
            }
            (&Size { size, any: true }, b' ' | b'\t' | b';') => Ext { size },
            (&Size { size, any: true } | &Ext { size }, b'\r') => SizeLf { size },
            (&Ext { size }, _) if !ctl(b) => Ext { size },
            (&SizeLf { size: 0 }, b'\n') => TrailerStart,
            (&SizeLf { size }, b'\n') if size > self.budget => return Err(BodyError::TooLarge),
            (&SizeLf { size }, b'\n') => Data(size),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size {
                size: 0,
                any: false,
            },
            (TrailerStart, b'\r') => LastLf,
            (TrailerLine, b'\r') => TrailerLf,
            (TrailerStart | TrailerLine, _) if !ctl(b) => TrailerLine,
            (TrailerLf, b'\n') => TrailerStart,
            (LastLf, b'\n') => Done,
            _ => return Err(BodyError::Framing),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the bytes consumed once the
    /// body is complete, or `None` if it never completes.
    fn run(mut d: Discard, input: &[u8], step: usize) -> Result<Option<usize>, BodyError> {
        let mut used = 0;
        for piece in input.chunks(step) {
            let (n, done) = d.feed(piece)?;
            used += n;
            if done {
                return Ok(Some(used));
            }
        }
        Ok(None)
    }

    const CHUNKED: &[u8] = b"5;name=\"v\"\r\nhello\r\n1A \t;x\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\nNEXT";

    #[test]
    fn chunked_any_split() {
        for step in 1..CHUNKED.len() {
            assert_eq!(
                run(Discard::chunked(1000), CHUNKED, step),
                Ok(Some(CHUNKED.len() - 4)),
                "{step}"
            );
        }
    }

    #[test]
    fn length_stops_at_end() {
        assert_eq!(run(Discard::length(3), b"abcGET", 2), Ok(Some(3)));
        assert_eq!(Discard::length(0).feed(b"x"), Ok((0, true)));
    }

    #[test]
    fn bad_framing() {
        for body in [
            &b"x\r\n"[..],
            b"\r\n",
            b";\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r\r",
            b"0\r\n\n",
            b"0\r\nA: b\n",
            b"1;\x00\r\n",
            b"0\r\nA: \x01\r\n\r\n",
        ] {
            assert_eq!(
                run(Discard::chunked(1000), body, 1),
                Err(BodyError::Framing),
                "{body:?}"
            );
        }
    }

    #[test]
    fn budget_counts_framing_and_huge_sizes() {
        assert_eq!(
            run(Discard::chunked(10), b"10\r\n", 100),
            Err(BodyError::TooLarge)
        );
        assert_eq!(
            run(Discard::chunked(8), b"0;aaaaaaaaaaaaaaaa\r\n", 100),
            Err(BodyError::TooLarge)
        );
        assert_eq!(
            run(Discard::chunked(u64::MAX), b"fffffffffffffffff\r\n", 100),
            Err(BodyError::TooLarge)
        );
        assert_eq!(
            run(Discard::chunked(u64::MAX), b"ffffffffffff0000\r\nab", 100),
            Ok(None)
        );
    }
}
