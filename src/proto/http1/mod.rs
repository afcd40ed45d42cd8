//! HTTP/1.1 static file serving (stub: being written).

use super::{Protocol, ProtocolFactory, Step, Wait};
use std::net::SocketAddr;
use std::time::SystemTime;

/// Knobs of the HTTP protocol.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Serve an HTML listing for directories without index.html.
    pub listing: bool,
    /// Produce one access-log line per response.
    pub access_log: bool,
    /// Largest request-target accepted; longer gets 414.
    pub max_uri_bytes: usize,
    /// Largest header section (request line included); larger gets 431.
    pub max_header_bytes: usize,
    /// Largest request body read and discarded; larger gets 413 and close.
    pub max_body_discard: u64,
    /// Most ranges honoured in one Range header; more and the header is ignored.
    pub max_ranges: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listing: false,
            access_log: false,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_body_discard: 1024 * 1024,
            max_ranges: 64,
        }
    }
}

/// One HTTP/1.1 connection.
#[derive(Debug)]
pub struct Http1 {
    _cfg: std::sync::Arc<HttpConfig>,
}

impl Protocol for Http1 {
    fn handle_recv(&mut self, _data: &[u8]) {}
    fn handle_eof(&mut self) {}
    fn handle_timeout(&mut self) {}
    fn poll(&mut self, _now: SystemTime) -> Step {
        Step::Recv(Wait::Request)
    }
}

/// Makes [`Http1`] connections that share one config.
#[derive(Debug, Clone, Default)]
pub struct HttpFactory {
    cfg: std::sync::Arc<HttpConfig>,
}

impl HttpFactory {
    pub fn new(cfg: HttpConfig) -> Self {
        HttpFactory {
            cfg: std::sync::Arc::new(cfg),
        }
    }
}

impl ProtocolFactory for HttpFactory {
    type Proto = Http1;
    fn new_conn(&self, _peer: SocketAddr) -> Http1 {
        Http1 {
            _cfg: self.cfg.clone(),
        }
    }
}
