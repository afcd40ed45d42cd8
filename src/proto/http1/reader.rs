//! Input buffering: received bytes in, complete requests out, one at a time.
//!
//! Bytes are parsed straight from the backend's slice when nothing is buffered; only a
//! partial head and bytes of later pipelined requests are copied. Bodies are discarded
//! as they pass. When nothing is buffered the buffer's memory is returned, so an idle
//! connection holds none.

use super::body::{BodyError, Discard};
use super::head::{self, Framing, Persist, Rejected, Request};
use super::status::Status;
use super::HttpConfig;
use crate::proto::pool::{free_list, PBox, Pooled};
use std::mem;

type Item = Result<Request, Rejected>;

impl Pooled for Item {
    free_list!(Item);
    fn dead() -> Item {
        Err(Status::BadRequest.into())
    }
    fn recycle(self) {
        if let Ok(req) = self {
            req.recycle();
        }
    }
}

/// What the reader is doing.
#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Discarding the body of a request that is answered once it is gone. Requests are
    /// boxed so a reader between requests (`Head`) is a few words: idle connections
    /// hold no request-sized state.
    Body(Box<(Request, Discard)>),
    /// A request, or the rejection of one, waits to be taken.
    Ready(PBox<Item>),
    /// The connection closes after the current exchange: input is ignored.
    Stopped,
}

/// Turns received bytes into requests.
#[derive(Debug)]
pub struct Reader {
    /// Unconsumed input is `buf[pos..]`; consumed bytes are dropped on the next receive,
    /// so many pipelined requests cost no repeated shifting.
    buf: Vec<u8>,
    pos: usize,
    state: State,
}

impl Reader {
    pub fn new() -> Self {
        Reader {
            buf: Vec::new(),
            pos: 0,
            state: State::Head,
        }
    }

    /// Takes received bytes, copying only what cannot be consumed now.
    pub fn recv(&mut self, data: &[u8], cfg: &HttpConfig) {
        let buffered = self.pos < self.buf.len();
        match self.state {
            State::Stopped => return,
            // A head can only complete at an LF. Until one arrives just check the limits,
            // so a client trickling bytes does not make each one re-parse the whole head.
            State::Head if buffered && !data.contains(&b'\n') => {
                self.append(data);
                if let Err(r) = head::check_partial(self.unconsumed(), cfg) {
                    self.fail(r);
                }
                return;
            }
            _ => {}
        }
        if buffered {
            self.append(data);
            self.advance_buffered(cfg);
        } else {
            let used = self.advance(data, cfg);
            self.append(data.get(used..).unwrap_or_default());
        }
    }

    /// The next request (or rejection), if one is complete.
    pub fn take(&mut self, cfg: &HttpConfig) -> Option<Result<Request, Rejected>> {
        let item = match mem::replace(&mut self.state, State::Head) {
            State::Ready(item) => item.into_inner(),
            other => {
                self.state = other;
                return None;
            }
        };
        if closes(&item) {
            self.stop();
        } else {
            self.advance_buffered(cfg);
        }
        Some(item)
    }

    /// Whether a complete request (or a rejection) is waiting to be taken.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready(_))
    }

    /// Whether part of a request has arrived (and no complete one is waiting).
    pub fn is_partial(&self) -> bool {
        match self.state {
            State::Head => self.pos < self.buf.len(),
            State::Body(..) => true,
            State::Ready(_) | State::Stopped => false,
        }
    }

    /// The receive timed out: a partial request becomes a 408; returns whether there was one.
    pub fn time_out(&mut self) -> bool {
        if !self.is_partial() {
            return false;
        }
        let status = Status::RequestTimeout;
        let rejected = match mem::replace(&mut self.state, State::Stopped) {
            State::Body(b) => b.0.reject(status),
            _ => status.into(),
        };
        self.fail(rejected);
        true
    }

    /// Ignores all further input and frees the buffer.
    pub fn stop(&mut self) {
        self.state = State::Stopped;
        crate::proto::pool::give_bytes(mem::take(&mut self.buf));
        self.pos = 0;
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn fail(&mut self, r: Rejected) {
        self.stop();
        self.state = State::Ready(PBox::new(Err(r)));
    }

    fn unconsumed(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn append(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos.min(self.buf.len()));
            self.pos = 0;
        }
        if self.buf.capacity() == 0 {
            // The rest of a pipelined burst, or a head in pieces: held on the thread's
            // buffer, which goes back once consumed (an idle reader holds none).
            self.buf = crate::proto::pool::bytes();
        }
        self.buf.extend_from_slice(data);
    }

    fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.buf.len());
        if self.pos == self.buf.len() {
            crate::proto::pool::give_bytes(mem::take(&mut self.buf));
            self.pos = 0;
        }
    }

    fn advance_buffered(&mut self, cfg: &HttpConfig) {
        let buf = mem::take(&mut self.buf);
        let used = self.advance(buf.get(self.pos..).unwrap_or_default(), cfg);
        self.buf = buf;
        self.consume(used);
    }

    /// Parses heads and discards bodies from `input` until a request is ready or the input
    /// runs out; returns the bytes consumed.
    fn advance(&mut self, input: &[u8], cfg: &HttpConfig) -> usize {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            self.state = match mem::replace(&mut self.state, State::Stopped) {
                State::Head => match head::parse(rest, cfg) {
                    Ok(None) => State::Head,
                    Ok(Some((req, len))) => {
                        used += len;
                        match req.framing {
                            Framing::None => State::Ready(PBox::new(Ok(req))),
                            Framing::Length(n) => State::Body(Box::new((req, Discard::length(n)))),
                            Framing::Chunked => {
                                let discard = Discard::chunked(cfg.max_body_discard);
                                State::Body(Box::new((req, discard)))
                            }
                        }
                    }
                    Err(r) => State::Ready(PBox::new(Err(r))),
                },
                State::Body(mut b) => match b.1.feed(rest) {
                    Ok((n, done)) => {
                        used += n;
                        if done {
                            State::Ready(PBox::new(Ok((*b).0)))
                        } else {
                            State::Body(b)
                        }
                    }
                    Err(e) => {
                        let status = match e {
                            BodyError::Framing => Status::BadRequest,
                            BodyError::TooLarge => Status::ContentTooLarge,
                        };
                        State::Ready(PBox::new(Err(b.0.reject(status))))
                    }
                },
                other => other,
            };
            match &self.state {
                // The connection closes after this exchange: nothing after it matters, so
                // claim it all rather than copy it.
                State::Ready(item) if closes(item) => {
                    return input.len();
                }
                // A head just parsed into a body, which may already be here.
                State::Body(..) if used < input.len() => {}
                _ => return used,
            }
        }
    }
}

/// Whether the connection closes after answering `item`.
fn closes(item: &Result<Request, Rejected>) -> bool {
    item.as_ref().map_or(true, |r| r.persist == Persist::Close)
}
