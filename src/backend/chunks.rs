//! A cursor over the chunks of one response, shared by the backends' send paths: which
//! memory chunks to gather into one send, and where a partial send leaves off.

use crate::proto::Chunk;
use std::io::IoSlice;

/// How many memory chunks one gathered send takes.
pub(crate) const MAX_IOV: usize = 64;

pub(crate) fn mem(c: &Chunk) -> Option<&[u8]> {
    match c {
        Chunk::Mem(v) => Some(v),
        Chunk::Static(s) => Some(s),
        Chunk::File { .. } => None,
    }
}

/// A gathered run of memory chunks, on the stack: no allocation per send.
pub(crate) struct Gathered<'a> {
    slices: [IoSlice<'a>; MAX_IOV],
    n: usize,
}

impl<'a> Gathered<'a> {
    pub(crate) fn as_slice(&self) -> &[IoSlice<'a>] {
        &self.slices[..self.n]
    }
}

/// The run of memory chunks from chunk `i` (skipping its first `off` bytes), up to
/// [`MAX_IOV`] of them; and the index just past the run.
pub(crate) fn gather(chunks: &[Chunk], i: usize, off: u64) -> (Gathered<'_>, usize) {
    let mut g = Gathered {
        slices: [IoSlice::new(&[]); MAX_IOV],
        n: 0,
    };
    let end = visit_run(chunks, i, off, |b| {
        g.slices[g.n] = IoSlice::new(b);
        g.n += 1;
    });
    (g, end)
}

/// [`gather`]'s run, each non-empty slice handed to `f` instead of collected: the
/// index just past the run.
pub(crate) fn visit_run<'a>(
    chunks: &'a [Chunk],
    i: usize,
    off: u64,
    mut f: impl FnMut(&'a [u8]),
) -> usize {
    let mut n = 0;
    let mut j = i;
    while j < chunks.len() && n < MAX_IOV {
        let Some(b) = mem(&chunks[j]) else { break };
        let b = if j == i { &b[off as usize..] } else { b };
        if !b.is_empty() {
            f(b);
            n += 1;
        }
        j += 1;
    }
    j
}

/// Moves the cursor `(i, off)` forward by `n` bytes, stepping over chunks that are
/// finished or empty.
pub(crate) fn advance(chunks: &[Chunk], mut i: usize, mut off: u64, mut n: u64) -> (usize, u64) {
    while i < chunks.len() {
        let left = chunks[i].len() - off;
        if n < left {
            return (i, off + n);
        }
        n -= left;
        i += 1;
        off = 0;
    }
    (i, off)
}

/// File bodies of at least this many bytes are sent under TCP_CORK (nginx's
/// `tcp_nopush`), from the header to the last byte: TCP then sends only full segments,
/// where the end of each splice or sendfile call (and a send that waited for room)
/// would push a partial one. Measured on io_uring, 1 GiB into a zero-copy receiver:
/// 1.27x the GB/s at 0.80x the CPU per GB; at 100 KiB the two setsockopt calls cost
/// 5 % of a response and bought nothing (ARCHITECTURE.md, measured choices).
pub(crate) const CORK_MIN: u64 = 1 << 20;

/// Whether a response is sent corked: it carries a file body of at least [`CORK_MIN`].
pub(crate) fn wants_cork(chunks: &[Chunk]) -> bool {
    chunks
        .iter()
        .any(|c| matches!(c, Chunk::File { len, .. } if *len >= CORK_MIN))
}

/// Whether any bytes follow chunk `end`: the send before it may set MSG_MORE.
pub(crate) fn more_after(chunks: &[Chunk], end: usize) -> bool {
    chunks[end..].iter().any(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks() -> Vec<Chunk> {
        vec![
            Chunk::Mem(b"abc".to_vec()),
            Chunk::Static(b""),
            Chunk::Static(b"de"),
            Chunk::Mem(b"f".to_vec()),
        ]
    }

    #[test]
    fn advance_crosses_chunks_and_skips_empty_ones() {
        let c = chunks();
        assert_eq!(advance(&c, 0, 0, 2), (0, 2));
        assert_eq!(advance(&c, 0, 0, 3), (2, 0));
        assert_eq!(advance(&c, 0, 2, 2), (2, 1));
        assert_eq!(advance(&c, 0, 0, 6), (4, 0));
    }

    #[test]
    fn gather_starts_mid_chunk() {
        let c = chunks();
        let (s, end) = gather(&c, 0, 1);
        let all: Vec<u8> = s
            .as_slice()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(all, b"bcdef");
        assert_eq!(end, 4);
    }
}
