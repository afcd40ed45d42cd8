//! The connection table: a slab whose keys carry a generation.
//!
//! A [`Key`] names one connection for its whole life: the slab index plus the generation
//! the slot had when the connection was inserted. The key, never a pointer, is what goes
//! into epoll's `data` and io_uring's `user_data`. When a connection is removed its key is
//! retired: a late event, completion, timer or notification that still carries it finds a
//! different generation (or an empty slot) and is dropped, even after the slot is reused.
//! This is nginx's `instance` bit made wide, and the answer to the dangling-handler
//! problem of ACE's notification pipe.

use slab::Slab;

/// Generations are 24 bits wide, so a packed key fits in [`KEY_BITS`] bits and io_uring
/// `user_data` keeps its top byte for the operation kind. A stale key is mistaken for a
/// live one only if its slot was reused exactly 2^24 inserts later while the stale event
/// was still in flight (nginx's `instance` is one bit).
const GEN_MASK: u32 = (1 << 24) - 1;

/// Bits a packed [`Key`] occupies: generation in 32..56, index in 0..32.
pub const KEY_BITS: u32 = 56;

/// Names one connection: slab index plus generation. Generation 0 is never issued, so
/// the values with a zero generation are free for the backends' internal tokens
/// (listeners, wakeups), which [`Key::from_u64`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    index: u32,
    gen: u32,
}

impl Key {
    /// The table (io_uring ring) that issued this key.
    pub const fn shard(self) -> u8 {
        (self.index >> SHARD_SHIFT) as u8
    }

    /// Packs the key for the kernel: generation in the high half, index in the low half.
    pub const fn to_u64(self) -> u64 {
        ((self.gen as u64) << 32) | self.index as u64
    }

    /// Unpacks a kernel word (bits above [`KEY_BITS`] are ignored). `None` for the
    /// reserved values (generation 0).
    pub const fn from_u64(v: u64) -> Option<Key> {
        let gen = (v >> 32) as u32 & GEN_MASK;
        if gen == 0 {
            None
        } else {
            Some(Key {
                index: v as u32,
                gen,
            })
        }
    }

    /// The slab index, for logs.
    pub const fn index(self) -> u32 {
        self.index
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.index, self.gen)
    }
}

/// Index bits below the shard number: 16M connections per table.
const SHARD_SHIFT: u32 = 24;
const SLOT_MASK: u32 = (1 << SHARD_SHIFT) - 1;

struct Slot<T> {
    gen: u32,
    val: T,
}

/// A slab of connections addressed by generation-checked [`Key`]s. Not synchronised:
/// an io_uring ring owns its table outright; the epoll pool wraps one in a mutex.
///
/// Each table has a shard number (one per ring) in the top byte of its keys' index, so
/// keys from different rings never collide: a key names one connection server-wide.
pub struct ConnTable<T> {
    slab: Slab<Slot<T>>,
    next_gen: u32,
    shard: u32,
}

impl<T> ConnTable<T> {
    /// A table with room for `cap` connections before it reallocates.
    pub fn with_capacity(cap: usize) -> Self {
        Self::shard(cap, 0)
    }

    /// Table number `shard` of several (an io_uring ring's).
    pub fn shard(cap: usize, shard: u8) -> Self {
        ConnTable {
            slab: Slab::with_capacity(cap),
            next_gen: 1,
            shard: u32::from(shard) << SHARD_SHIFT,
        }
    }

    fn slot(&self, key: Key) -> Option<usize> {
        (key.index & !SLOT_MASK == self.shard).then_some((key.index & SLOT_MASK) as usize)
    }

    /// Inserts a connection and returns its fresh key.
    pub fn insert(&mut self, val: T) -> Key {
        let gen = self.next_gen;
        // Skip 0 on wrap-around: it marks reserved tokens.
        self.next_gen = match (self.next_gen + 1) & GEN_MASK {
            0 => 1,
            g => g,
        };
        let slot = self.slab.vacant_key();
        assert!(slot <= SLOT_MASK as usize, "connection table full");
        self.slab.insert(Slot { gen, val });
        Key {
            index: self.shard | slot as u32,
            gen,
        }
    }

    /// The key the next [`ConnTable::insert`] will return, for work that must name a
    /// connection before it exists (its lifecycle hook).
    pub fn vacant_key(&self) -> Key {
        Key {
            index: self.shard | self.slab.vacant_key() as u32,
            gen: self.next_gen,
        }
    }

    /// The live connection `key` names, or `None` if the key is stale.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.slot(key).and_then(|i| self.slab.get_mut(i)) {
            Some(slot) if slot.gen == key.gen => Some(&mut slot.val),
            _ => None,
        }
    }

    /// The live connection `key` names, or `None` if the key is stale.
    pub fn get(&self, key: Key) -> Option<&T> {
        match self.slot(key).and_then(|i| self.slab.get(i)) {
            Some(slot) if slot.gen == key.gen => Some(&slot.val),
            _ => None,
        }
    }

    /// Removes the connection and retires its key. `None` if the key was stale.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let i = self.slot(key)?;
        match self.slab.get(i) {
            Some(slot) if slot.gen == key.gen => Some(self.slab.remove(i).val),
            _ => None,
        }
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every live connection with its key.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut T)> {
        let shard = self.shard;
        self.slab.iter_mut().map(move |(i, s)| {
            (
                Key {
                    index: shard | i as u32,
                    gen: s.gen,
                },
                &mut s.val,
            )
        })
    }

    /// Removes every connection.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.slab.drain().map(|s| s.val)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_key_misses_after_slot_reuse() {
        let mut t = ConnTable::with_capacity(2);
        let next = t.vacant_key();
        let a = t.insert("a");
        assert_eq!(next, a, "vacant_key names what insert gives");
        assert_eq!(t.remove(a), Some("a"));
        let b = t.insert("b");
        assert_eq!(a.index(), b.index(), "slab reuses the slot");
        assert_ne!(a, b);
        assert!(t.get_mut(a).is_none());
        assert!(t.remove(a).is_none());
        assert_eq!(t.get(b), Some(&"b"));
    }

    #[test]
    fn shards_issue_distinct_keys_and_refuse_each_others() {
        let mut a = ConnTable::shard(1, 0);
        let mut b = ConnTable::shard(1, 3);
        let ka = a.insert('a');
        let kb = b.insert('b');
        assert_ne!(ka, kb);
        assert_eq!(kb.index() >> SHARD_SHIFT, 3);
        assert!(a.get(kb).is_none() && b.get(ka).is_none());
        assert_eq!(b.iter_mut().next().map(|(k, _)| k), Some(kb));
        assert_eq!(b.remove(kb), Some('b'));
    }

    #[test]
    fn packing_round_trips_and_reserves_generation_zero() {
        let mut t = ConnTable::with_capacity(1);
        let k = t.insert(());
        assert_eq!(Key::from_u64(k.to_u64()), Some(k));
        for reserved in [0u64, 1, 7, u32::MAX as u64, 0xFF << KEY_BITS] {
            assert_eq!(Key::from_u64(reserved), None);
        }
    }

    #[test]
    fn generation_skips_zero_on_wrap() {
        let mut t: ConnTable<()> = ConnTable::with_capacity(1);
        t.next_gen = GEN_MASK;
        let a = t.insert(());
        let b = t.insert(());
        assert_eq!(a.gen, GEN_MASK);
        assert_eq!(b.gen, 1);
        assert!(Key::from_u64(b.to_u64()).is_some());
        assert!(a.to_u64() < 1 << KEY_BITS);
        // The top byte (an io_uring operation kind) does not change the key.
        assert_eq!(Key::from_u64(a.to_u64() | 0xAB << KEY_BITS), Some(a));
    }
}
