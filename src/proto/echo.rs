//! Echo: every byte received is sent back. The seed's default handler.

use super::{Protocol, ProtocolFactory, Step, Wait};
use std::net::SocketAddr;
use std::time::SystemTime;

/// Echo state: bytes received but not yet handed back, and whether the peer is done.
#[derive(Debug, Default)]
pub struct Echo {
    pending: Vec<u8>,
    done: bool,
}

impl Protocol for Echo {
    fn handle_recv(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }
    fn handle_eof(&mut self) {
        self.done = true;
    }
    fn handle_timeout(&mut self) {
        self.done = true;
    }
    fn handle_drain(&mut self) {
        self.done = true;
    }
    fn poll(&mut self, _now: SystemTime) -> Step {
        if !self.pending.is_empty() {
            return Step::Send(vec![super::Chunk::Mem(std::mem::take(&mut self.pending))]);
        }
        if self.done {
            Step::Close
        } else {
            Step::Recv(Wait::Idle)
        }
    }
}

/// Makes [`Echo`] connections.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoFactory;

impl ProtocolFactory for EchoFactory {
    type Proto = Echo;
    fn new_conn(&self, _peer: SocketAddr) -> Echo {
        Echo::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Chunk;

    #[test]
    fn echoes_in_order_then_closes_on_eof() {
        let mut e = Echo::default();
        assert!(matches!(
            e.poll(SystemTime::UNIX_EPOCH),
            Step::Recv(Wait::Idle)
        ));
        e.handle_recv(b"ab");
        e.handle_recv(b"c");
        match e.poll(SystemTime::UNIX_EPOCH) {
            Step::Send(c) => assert!(matches!(&c[..], [Chunk::Mem(v)] if v == b"abc")),
            s => panic!("{s:?}"),
        }
        e.handle_eof();
        assert!(matches!(e.poll(SystemTime::UNIX_EPOCH), Step::Close));
    }
}
