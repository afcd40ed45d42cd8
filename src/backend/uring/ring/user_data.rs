//! What a completion's `user_data` says: the operation kind in the top byte, and below
//! it the connection's [`Key`] (or, for the ring's own operations, a fixed value named
//! here, as monoio names its `*_USERDATA`).

use crate::conn::{ConnTable, Key, KEY_BITS};

/// Operation kinds, the top byte of `user_data`. A connection's `ops` has one bit per
/// kind (`u32`: room for 31).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Op {
    Accept = 1,
    Recv,
    SendMsg,
    SpliceIn,
    SpliceOut,
    Read,
    Send,
    Open,
    Close,
    Cancel,
    Tick,
    Wake,
    Stat,
    Fsync,
    /// Receive into a file: SPLICE socket→pipe.
    SinkIn,
    /// Receive into a file: SPLICE pipe→file.
    SinkOut,
    /// Receive into a file without a pipe: RECV into the copy buffer.
    SinkRecv,
    /// Receive into a file: WRITE of the head or the copy buffer.
    SinkWrite,
    /// The bound on a teardown wait.
    Teardown,
}

impl Op {
    pub(super) const ALL: [Op; 19] = [
        Op::Accept,
        Op::Recv,
        Op::SendMsg,
        Op::SpliceIn,
        Op::SpliceOut,
        Op::Read,
        Op::Send,
        Op::Open,
        Op::Close,
        Op::Cancel,
        Op::Tick,
        Op::Wake,
        Op::Stat,
        Op::Fsync,
        Op::SinkIn,
        Op::SinkOut,
        Op::SinkRecv,
        Op::SinkWrite,
        Op::Teardown,
    ];

    /// The kind a completion's `user_data` names, and the rest of it.
    pub(super) fn of(ud: u64) -> (Option<Op>, u64) {
        let kind = (ud >> KEY_BITS) as u8;
        (
            Op::ALL.into_iter().find(|o| *o as u8 == kind),
            ud & ((1 << KEY_BITS) - 1),
        )
    }

    /// This kind's bit in a connection's `ops`.
    pub(super) const fn bit(self) -> u32 {
        1 << (self as u8)
    }

    pub(super) const fn ud(self, low: u64) -> u64 {
        (self as u64) << KEY_BITS | low
    }

    /// The operations of a send step (what the send timeout cancels).
    pub(super) const SEND_STEP: u32 = Op::SendMsg.bit()
        | Op::Send.bit()
        | Op::SpliceIn.bit()
        | Op::SpliceOut.bit()
        | Op::Read.bit();

    /// The operations of a receive into a file.
    pub(super) const SINK_STEP: u32 =
        Op::SinkIn.bit() | Op::SinkOut.bit() | Op::SinkRecv.bit() | Op::SinkWrite.bit();
}

/// The ring's TIMEOUT, every tick.
pub(super) const TICK: u64 = Op::Tick.ud(0);
/// The READ armed on the notifier's eventfd.
pub(super) const WAKE_READ: u64 = Op::Wake.ud(0);
/// A MSG_RING wakeup from the coordinator: a CQE this ring never submitted.
pub(super) const WAKE_MSG: u64 = Op::Wake.ud(1);
/// ASYNC_CANCELs (their own results are not needed: the cancelled operation's CQE
/// says what happened).
pub(super) const CANCEL: u64 = Op::Cancel.ud(0);
/// IORING_OP_CLOSE of a file a response no longer needs.
pub(super) const CLOSE: u64 = Op::Close.ud(0);
/// The TIMEOUT that bounds each teardown wait.
pub(super) const TEARDOWN: u64 = Op::Teardown.ud(0);

/// The `user_data` of the ACCEPT armed on listener `li`.
pub(super) const fn accept(li: usize) -> u64 {
    Op::Accept.ud(li as u64)
}

/// The `user_data` a MSG_RING wakeup arrives with.
pub(in crate::backend::uring) fn wake_user_data() -> u64 {
    WAKE_MSG
}

/// The live connection a completion's key names, or `None` for a retired key (its
/// slot empty, or reused under a newer generation).
pub(super) fn lookup<T>(conns: &mut ConnTable<T>, low: u64) -> Option<(Key, &mut T)> {
    let key = Key::from_u64(low)?;
    conns.get_mut(key).map(|c| (key, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_keeps_the_op_and_the_whole_key() {
        let mut conns: ConnTable<()> = ConnTable::shard(1, 200);
        let k = conns.insert(());
        for op in Op::ALL {
            let (got, low) = Op::of(op.ud(k.to_u64()));
            assert_eq!(got, Some(op));
            assert_eq!(Key::from_u64(low), Some(k));
        }
        assert!(Op::ALL.len() < 32, "ops bits fit a u32");
        for reserved in [
            TICK,
            WAKE_READ,
            WAKE_MSG,
            CANCEL,
            CLOSE,
            TEARDOWN,
            accept(3),
        ] {
            assert_eq!(Key::from_u64(Op::of(reserved).1), None, "{reserved:#x}");
        }
    }
}
