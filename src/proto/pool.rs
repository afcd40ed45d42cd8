//! Per-thread free lists of the buffers a response is built from: the head's bytes, the
//! chunk list of a [`Step::Send`](super::Step::Send), and the small strings of a
//! request (its target and path).
//!
//! A keep-alive response used to take about twenty heap allocations, most of them the
//! same few buffers made and freed again for every request (bench/allocs.rs). A
//! protocol takes them from here; the backend gives a send's buffers back once the
//! kernel is done with them (promise 1: not before its completion), on the same
//! thread, so the next response on that thread reuses them. A connection holds none of
//! them while it is idle: they belong to the thread, not to the connection, so idle
//! memory does not grow with the pool.
//!
//! Each list is bounded in count and in the capacity it keeps, so a burst of large
//! responses cannot pin memory: at most [`KEEP`] buffers of at most [`MAX_BYTES`]
//! each per thread and [`KEEP_BYTES`] of them in all, and [`KEEP_LISTS`] chunk lists
//! and boxes of each type.
//!
//! The bounds are sized for a loop turn at load, not for one connection: a ring that
//! reaps the send completions of many pipelined bursts (16 responses, a few buffers
//! each) before the requests that reuse them gives back thousands at once. With 32
//! kept the rest went to `free` and came back from `malloc` a moment later: 12 % of
//! the CPU at 256 connections pipelining 16 (`bench/profile.sh p16-256 uring`); with
//! 1 024 and 2 MiB, 7 %; with these, 2 %. What the pool keeps after a burst is no more
//! than the allocator would hold anyway (freed small chunks stay in its free lists,
//! resident), and 8 MiB per thread at most.

use super::Chunk;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Most buffers of each kind one thread keeps.
pub const KEEP: usize = 4096;
/// Most chunk lists, and boxes of each [`Pooled`] type, one thread keeps: one per
/// send in flight on a ring at 256 connections, twice over.
pub const KEEP_LISTS: usize = 512;
/// Most capacity of byte buffers one thread keeps, in all.
pub const KEEP_BYTES: usize = 8 * 1024 * 1024;
/// Largest byte buffer kept (larger ones are freed).
pub const MAX_BYTES: usize = 16 * 1024;
/// Largest chunk list kept, in chunks.
const MAX_CHUNKS: usize = 64;

thread_local! {
    /// The buffers, and the sum of their capacities.
    static BYTES: RefCell<(Vec<Vec<u8>>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    static CHUNKS: RefCell<Vec<Vec<Chunk>>> = const { RefCell::new(Vec::new()) };
}

/// An empty byte buffer, with whatever capacity it last had.
pub fn bytes() -> Vec<u8> {
    BYTES
        .try_with(|b| {
            let (list, kept) = &mut *b.borrow_mut();
            let v = list.pop()?;
            *kept -= v.capacity();
            Some(v)
        })
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// An empty string on a pooled buffer.
pub fn string() -> String {
    // An empty buffer is valid UTF-8.
    String::from_utf8(bytes()).unwrap_or_default()
}

/// An empty string holding `s`.
pub fn string_of(s: &str) -> String {
    let mut out = string();
    out.push_str(s);
    out
}

/// Gives a byte buffer back, cleared (freed if it is too large or the list is full).
pub fn give_bytes(mut v: Vec<u8>) {
    if v.capacity() == 0 || v.capacity() > MAX_BYTES {
        return;
    }
    v.clear();
    let _ = BYTES.try_with(|b| {
        let (list, kept) = &mut *b.borrow_mut();
        if list.len() < KEEP && *kept + v.capacity() <= KEEP_BYTES {
            *kept += v.capacity();
            list.push(v);
        }
    });
}

/// Gives a string's buffer back.
pub fn give_string(s: String) {
    give_bytes(s.into_bytes());
}

/// An empty chunk list.
pub fn chunks() -> Vec<Chunk> {
    CHUNKS
        .try_with(|c| c.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Gives a chunk list back: its memory chunks' buffers go to the byte list, any other
/// chunk is dropped (a file chunk's [`FileRef`](super::FileRef) with it).
pub fn give_chunks(v: Vec<Chunk>) {
    give_chunks_with(v, drop);
}

/// [`give_chunks`], handing each file chunk's [`FileRef`](super::FileRef) to `file`: a
/// backend that closes files its own way (the ring's CLOSE) takes them in the same walk.
pub fn give_chunks_with(mut v: Vec<Chunk>, mut file: impl FnMut(super::FileRef)) {
    for c in v.drain(..) {
        match c {
            Chunk::Mem(b) => give_bytes(b),
            Chunk::File { file: f, .. } => file(f),
            Chunk::Static(_) => {}
        }
    }
    if v.capacity() == 0 || v.capacity() > MAX_CHUNKS {
        return;
    }
    let _ = CHUNKS.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.len() < KEEP_LISTS {
            c.push(v);
        }
    });
}

/// A thread's free list of boxes: the allocations themselves are what it keeps, so
/// they are boxed inside the `Vec`.
#[allow(clippy::vec_box)]
pub type FreeList<T> = RefCell<Vec<Box<T>>>;

/// Implements [`Pooled::with_free_list`] for `$t` on a `thread_local!` list of its own.
macro_rules! free_list {
    ($t:ty) => {
        fn with_free_list<R>(f: impl FnOnce(&$crate::proto::pool::FreeList<$t>) -> R) -> Option<R> {
            thread_local! {
                static LIST: $crate::proto::pool::FreeList<$t> =
                    const { std::cell::RefCell::new(Vec::new()) };
            }
            LIST.try_with(f).ok()
        }
    };
}
pub(crate) use free_list;

/// A type whose boxes each thread keeps for reuse through [`PBox`].
pub trait Pooled: Sized + 'static {
    /// Runs `f` on the thread's free list of this type's boxes (a `thread_local!`'s
    /// `try_with`: `None` while the thread is being torn down).
    fn with_free_list<R>(f: impl FnOnce(&FreeList<Self>) -> R) -> Option<R>;
    /// A value that owns no heap memory: what a kept box holds.
    fn dead() -> Self;
    /// Hands the value's own pooled buffers back as its box is kept.
    fn recycle(self) {}
}

/// A `Box` whose allocation goes back to the thread's free list when it is dropped,
/// and comes from it when one is made: the request and job of every response reuse
/// the last one's.
#[derive(Debug)]
pub struct PBox<T: Pooled>(Option<Box<T>>);

/// `v` in a box from the thread's free list (or a new one): for a field that holds an
/// `Option<Box<T>>`, one word where an `Option<PBox<T>>` takes two. [`unbox`] gives it
/// back.
pub fn boxed<T: Pooled>(v: T) -> Box<T> {
    match T::with_free_list(|l| l.borrow_mut().pop()).flatten() {
        Some(mut b) => {
            *b = v;
            b
        }
        None => Box::new(v),
    }
}

/// The value out of a [`boxed`] box; the box goes back to the thread's free list.
pub fn unbox<T: Pooled>(mut b: Box<T>) -> T {
    let v = std::mem::replace(&mut *b, T::dead());
    keep(b);
    v
}

/// Keeps an emptied box (its value dead) on the thread's free list, if there is room.
fn keep<T: Pooled>(b: Box<T>) {
    T::with_free_list(|l| {
        let mut l = l.borrow_mut();
        if l.len() < KEEP_LISTS {
            l.push(b);
        }
    });
}

impl<T: Pooled> PBox<T> {
    pub fn new(v: T) -> PBox<T> {
        PBox(Some(boxed(v)))
    }

    /// The value, moved out; the box goes back to the free list.
    pub fn into_inner(mut self) -> T {
        std::mem::replace(&mut *self, T::dead())
    }
}

impl<T: Pooled> Deref for PBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0
            .as_deref()
            .expect("a PBox holds its box until dropped")
    }
}

impl<T: Pooled> DerefMut for PBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0
            .as_deref_mut()
            .expect("a PBox holds its box until dropped")
    }
}

impl<T: Pooled> Drop for PBox<T> {
    fn drop(&mut self) {
        let Some(b) = self.0.take() else { return };
        unbox(b).recycle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_with_their_capacity() {
        let mut b = bytes();
        b.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let cap = b.capacity();
        give_bytes(b);
        let again = bytes();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), cap);
    }

    #[test]
    fn large_buffers_and_overflow_are_freed() {
        give_bytes(Vec::with_capacity(MAX_BYTES + 1));
        assert_eq!(bytes().capacity(), 0);
        for _ in 0..KEEP + 5 {
            give_bytes(Vec::with_capacity(8));
        }
        let kept = BYTES.with(|b| b.borrow().0.len());
        assert_eq!(kept, KEEP);
        // And by capacity in all: a few large ones fill the budget.
        while bytes().capacity() != 0 {}
        for _ in 0..KEEP_BYTES / MAX_BYTES + 5 {
            give_bytes(Vec::with_capacity(MAX_BYTES));
        }
        let (n, sum) = BYTES.with(|b| {
            let b = b.borrow();
            (b.0.len(), b.0.iter().map(Vec::capacity).sum::<usize>())
        });
        assert_eq!(n, KEEP_BYTES / MAX_BYTES);
        assert_eq!(BYTES.with(|b| b.borrow().1), sum);
        while bytes().capacity() != 0 {}
        assert_eq!(BYTES.with(|b| b.borrow().1), 0);
    }

    #[derive(Debug, PartialEq)]
    struct Item(String);

    impl Pooled for Item {
        free_list!(Item);
        fn dead() -> Item {
            Item(String::new())
        }
        fn recycle(self) {
            give_string(self.0);
        }
    }

    #[test]
    fn a_pooled_box_is_reused_and_its_value_recycled() {
        BYTES.with(|b| *b.borrow_mut() = (Vec::new(), 0));
        let a = PBox::new(Item(string_of("first")));
        let at = &*a as *const Item;
        drop(a);
        assert_eq!(Item::with_free_list(|l| l.borrow().len()).unwrap(), 1);
        assert!(bytes().capacity() >= 5, "the string went back");
        let b = PBox::new(Item("second".into()));
        assert_eq!(&*b as *const Item, at, "the same allocation");
        assert_eq!(b.into_inner(), Item("second".into()));
        assert_eq!(Item::with_free_list(|l| l.borrow().len()).unwrap(), 1);
    }

    #[test]
    fn a_chunk_list_gives_back_its_memory() {
        BYTES.with(|b| *b.borrow_mut() = (Vec::new(), 0));
        let mut c = chunks();
        c.push(Chunk::Mem(b"head".to_vec()));
        c.push(Chunk::Static(b"body"));
        give_chunks(c);
        let c = chunks();
        assert!(c.is_empty());
        assert!(c.capacity() >= 2);
        assert!(bytes().capacity() >= 4);
    }
}
