//! An open-file cache in the spirit of nginx's `open_file_cache` (and lighttpd's stat
//! cache): descriptors and metadata of recently served paths, so a hot file costs no
//! open, no stat and no close per request.
//!
//! An entry is kept for `valid` after it was opened and then dropped; the next
//! request opens the path again. Within `valid`, the driver checks every hit against
//! an `fstat` of its descriptor (one syscall, no path walk) and serves it only if the
//! size, mtime, inode and device are those it was cached with; otherwise it drops the
//! entry and opens the path again. An io_uring ring checks an entry once per loop turn
//! ([`OpenCache::get_fresh`]), after the turn's completions were reaped, so for every
//! request of the turn the check is later than its arrival. So the metadata a hit
//! carries (the length, the ETag, Last-Modified) is always what a fresh open of the
//! same inode would report when the request arrived: a file rewritten in place is never sent with its old length or ETag.
//! What the cache can still lag on, by at most `valid` (1 s by default,
//! `--open-file-cache-valid`), is *which* inode a path names: a file replaced by
//! rename or deleted behind the server's back keeps being served whole and
//! self-consistent, old bytes with old metadata, as nginx's `open_file_cache_valid`
//! does. (Changes made through this server forget the path at once.) A file that
//! changes between that check and the send is the same race every server has: one that
//! shrinks ends the connection, never padded. Only successful opens are cached: a 404
//! is never stale. A small body an io_uring ring keeps on a cached handle
//! ([`crate::proto::FileRef`], read whole once) goes with the handle: a change `fstat`
//! sees drops both; one it cannot see (the same size within one mtime tick) is sent as
//! the kept bytes with the metadata they were read under, for at most `valid`.
//!
//! Keys are the protocol's normalised relative paths, and every cached descriptor was
//! opened beneath the root by [`crate::fs::Root`], so a hit can never reach anything a
//! miss could not. The cache is a plain single-threaded map: each io_uring ring owns
//! one (shared nothing), the epoll pool shares one behind a mutex.

use crate::proto::Opened;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many paths the caches of one server have forgotten ([`OpenCache::forget`]).
/// Every cache of the server shares one and compares it on each lookup, emptying
/// itself when it moved, so no ring's cache serves the descriptor of a file another
/// ring has just replaced. Such changes are rare next to lookups; a lookup pays one
/// load.
pub type Replaced = Arc<AtomicU64>;

/// Recently opened files by path.
#[derive(Debug)]
pub struct OpenCache {
    map: HashMap<Box<str>, Entry>,
    cap: usize,
    valid: Duration,
    /// The server's forget count, and the value this cache's entries are older than.
    replaced: Replaced,
    seen: u64,
}

#[derive(Debug)]
struct Entry {
    opened: Opened,
    born: Instant,
    /// The caller's turn in which `fresh` last said yes (0: never).
    checked: u64,
}

impl OpenCache {
    /// A cache of at most `cap` entries (0 turns it off), each trusted for `valid`,
    /// on its own.
    pub fn new(cap: usize, valid: Duration) -> OpenCache {
        OpenCache::sharing(cap, valid, Replaced::default())
    }

    /// A cache that forgets whatever any cache sharing `replaced` forgets.
    pub fn sharing(cap: usize, valid: Duration, replaced: Replaced) -> OpenCache {
        OpenCache {
            map: HashMap::new(),
            cap: if valid.is_zero() { 0 } else { cap },
            valid,
            seen: replaced.load(Ordering::Acquire),
            replaced,
        }
    }

    /// The cached open of `path`, if it is still valid at `now`. A hit shares the
    /// descriptor; the caller may send from it for as long as it likes.
    pub fn get(&mut self, path: &str, now: Instant) -> Option<Opened> {
        self.get_fresh(path, now, None, |_| true)
    }

    /// [`OpenCache::get`], and the hit still what its descriptor says: `fresh` (an
    /// `fstat` of it) is asked, and a hit it rejects is dropped, so the caller opens the
    /// path again. `turn` names the caller's batch of input (an io_uring loop turn:
    /// nonzero, one value per reap of completions): every request of the batch arrived
    /// before the batch was reaped, so one check made while handling the batch is as
    /// late as a check per request, and a hit already checked in `turn` is trusted
    /// without another. `None` checks every hit.
    pub fn get_fresh(
        &mut self,
        path: &str,
        now: Instant,
        turn: Option<u64>,
        fresh: impl FnOnce(&Opened) -> bool,
    ) -> Option<Opened> {
        // Acquire: pairs with the Release in `forget`, which follows the link or
        // unlink, so a lookup that sees the count also sees the new directory entry.
        let replaced = self.replaced.load(Ordering::Acquire);
        if replaced != self.seen {
            self.seen = replaced;
            self.map.clear();
            return None;
        }
        let valid = self.valid;
        // One lookup per hit: an expired or stale entry is removed after it.
        let e = self.map.get_mut(path)?;
        let hit = now.saturating_duration_since(e.born) < valid
            && (turn.is_some_and(|t| t != 0 && e.checked == t) || {
                let ok = fresh(&e.opened);
                if ok {
                    e.checked = turn.unwrap_or(0);
                }
                ok
            });
        if hit {
            return Some(e.opened.clone());
        }
        self.map.remove(path);
        None
    }

    /// Remembers a successful open of `path` made at `now`. When full, expired entries
    /// go first, then the oldest.
    pub fn put(&mut self, path: &str, opened: &Opened, now: Instant) {
        if self.cap == 0 {
            return;
        }
        if self.map.len() >= self.cap && !self.map.contains_key(path) {
            self.sweep(now);
            if self.map.len() >= self.cap {
                let oldest = self.map.iter().min_by_key(|(_, e)| e.born);
                if let Some(k) = oldest.map(|(k, _)| k.clone()) {
                    self.map.remove(&k);
                }
            }
        }
        let entry = Entry {
            opened: opened.clone(),
            born: now,
            checked: 0,
        };
        self.map.insert(path.into(), entry);
    }

    /// Forgets `path`: its file was just replaced or removed through this server, so
    /// the next open must look again, in this cache and in every other one of the
    /// server (through [`Replaced`]). Changes made behind the server's back are still
    /// seen at most `valid` late.
    pub fn forget(&mut self, path: &str) {
        let before = self.replaced.fetch_add(1, Ordering::AcqRel);
        if before == self.seen {
            self.map.remove(path);
        } else {
            // Another cache forgot something since this one last looked.
            self.map.clear();
        }
        self.seen = before + 1;
    }

    /// Drops this cache's entry for `path` (its file changed in place): the next
    /// lookup misses and opens the path again.
    pub fn remove(&mut self, path: &str) {
        self.map.remove(path);
    }

    /// Drops every entry expired at `now`, closing descriptors nothing else holds, so an
    /// idle server keeps no file open longer than `valid` plus one sweep.
    pub fn sweep(&mut self, now: Instant) {
        let valid = self.valid;
        self.map
            .retain(|_, e| now.saturating_duration_since(e.born) < valid);
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{FileKind, FileMeta};

    fn opened(len: u64) -> Opened {
        Opened {
            file: crate::proto::FileRef::new(std::fs::File::open("/dev/null").unwrap()),
            meta: FileMeta {
                kind: FileKind::File,
                len,
                mtime_sec: 0,
                mtime_nsec: 0,
                dev: 0,
                ino: len,
            },
        }
    }

    #[test]
    fn a_hit_is_checked_once_a_turn_and_dropped_when_stale() {
        let t0 = Instant::now();
        let mut c = OpenCache::new(8, Duration::from_secs(1));
        c.put("a", &opened(1), t0);
        let asked = std::cell::Cell::new(0);
        let mut look = |turn, ok| {
            c.get_fresh("a", t0, turn, |_| {
                asked.set(asked.get() + 1);
                ok
            })
            .is_some()
        };
        assert!(look(Some(1), true));
        assert!(look(Some(1), false), "checked this turn: trusted");
        assert_eq!(asked.get(), 1);
        assert!(look(Some(2), true), "a new turn asks again");
        assert_eq!(asked.get(), 2);
        assert!(
            look(None, true) && look(None, true),
            "no turn: every hit asks"
        );
        assert_eq!(asked.get(), 4);
        // A check with no turn trusts nothing later either.
        assert!(look(Some(2), true));
        assert_eq!(asked.get(), 5);
        assert!(!look(Some(3), false), "a stale hit is refused");
        assert!(
            !look(Some(3), true),
            "and dropped: the path is opened again"
        );
        assert_eq!(asked.get(), 6);
        assert!(c.is_empty());
    }

    #[test]
    fn a_hit_shares_the_descriptor_until_it_expires() {
        let t0 = Instant::now();
        let mut c = OpenCache::new(8, Duration::from_secs(1));
        assert!(c.get("a", t0).is_none());
        let o = opened(1);
        c.put("a", &o, t0);
        let hit = c.get("a", t0 + Duration::from_millis(999)).unwrap();
        assert!(hit.file.same(&o.file));
        assert!(c.get("a", t0 + Duration::from_secs(1)).is_none());
        assert!(c.is_empty(), "an expired entry is dropped when found");
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_oldest() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = OpenCache::new(2, 10 * s);
        c.put("a", &opened(1), t0);
        c.put("b", &opened(2), t0 + s);
        c.put("c", &opened(3), t0 + 2 * s);
        assert_eq!(c.len(), 2);
        assert!(c.get("a", t0 + 2 * s).is_none(), "the oldest went");
        assert!(c.get("b", t0 + 2 * s).is_some());
        c.sweep(t0 + 11 * s);
        assert_eq!(c.len(), 1, "b expired; c is still valid");
        assert!(c.get("c", t0 + 11 * s).is_some());
    }

    #[test]
    fn zero_capacity_or_validity_turns_it_off() {
        let t0 = Instant::now();
        for mut c in [
            OpenCache::new(0, Duration::from_secs(1)),
            OpenCache::new(8, Duration::ZERO),
        ] {
            c.put("a", &opened(1), t0);
            assert!(c.get("a", t0).is_none());
        }
    }

    #[test]
    fn sweeping_closes_descriptors_nothing_else_holds() {
        let t0 = Instant::now();
        let mut c = OpenCache::new(8, Duration::from_secs(1));
        let o = opened(1);
        c.put("a", &o, t0);
        assert_eq!(o.file.holders(), 2);
        c.sweep(t0 + Duration::from_secs(2));
        assert_eq!(o.file.holders(), 1);
    }

    #[test]
    fn a_path_replaced_through_one_cache_is_forgotten_by_every_cache() {
        let now = Instant::now();
        let valid = Duration::from_secs(60);
        let r = Replaced::default();
        let (mut a, mut b, mut c) = (
            OpenCache::sharing(8, valid, r.clone()),
            OpenCache::sharing(8, valid, r.clone()),
            OpenCache::sharing(8, valid, r),
        );
        a.put("x", &opened(1), now);
        c.put("y", &opened(2), now);
        b.forget("x");
        assert!(a.get("x", now).is_none(), "a served a replaced path");
        // c forgets another path after b's change: it must still drop what b's
        // change made stale, not only its own.
        c.put("x", &opened(1), now);
        b.forget("y");
        c.forget("z");
        assert!(c.get("y", now).is_none());
        assert!(a.get("x", now).is_none());
        a.put("x", &opened(3), now);
        assert_eq!(a.get("x", now).unwrap().meta.len, 3, "lookups work again");
    }
}
