//! Listening sockets: where each listens, and where it came from (bound here, handed
//! over by a predecessor, or passed by systemd). A leaf: the server binds them, the
//! backends accept on them, the hand-off sends them.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// A Unix stream socket; `None` for one with no path (unnamed, or abstract).
    Unix(Option<PathBuf>),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            ListenAddr::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

/// One address to listen on, and the `--listen` text it came from. A successor that
/// is handed our listeners matches them to its own `--listen` values by that text (so
/// `127.0.0.1:0` is the same listener again, whatever port it got). An `optional` one
/// (the IPv6 half of `:PORT`, a name's second address) that the host cannot have
/// (no IPv6: EAFNOSUPPORT, EADDRNOTAVAIL) is noted and left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub addr: ListenAddr,
    pub origin: String,
    pub optional: bool,
}

impl Bind {
    /// A TCP address whose origin is its own text.
    pub fn tcp(addr: SocketAddr) -> Bind {
        Bind {
            addr: ListenAddr::Tcp(addr),
            origin: addr.to_string(),
            optional: false,
        }
    }
}

/// A listening socket: bound here, handed over by a predecessor, or passed by
/// systemd. Several may share one address (SO_REUSEPORT: one per io_uring ring).
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    addr: ListenAddr,
    origin: String,
}

impl Listener {
    pub(crate) fn new(fd: OwnedFd, addr: ListenAddr, origin: &str) -> Listener {
        Listener {
            fd,
            addr,
            origin: origin.to_string(),
        }
    }

    /// A listening socket we were given, checked (a stream socket, listening) and made
    /// non-blocking; `origin` names where it came from.
    pub fn inherited(fd: OwnedFd, origin: String) -> io::Result<Listener> {
        let addr = match crate::sys::net::inherited_listener(fd.as_fd())? {
            Ok(a) => ListenAddr::Tcp(a),
            Err(path) => ListenAddr::Unix(path),
        };
        Ok(Listener { fd, addr, origin })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// The `--listen` text (or `systemd:NAME`) this listener was made for.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// One `--listen` value: its scheme (`http://`, `xfer://`, ...: the caller checks it)
/// and what to bind. The forms:
///
/// - `ADDR:PORT`, `[V6]:PORT`: that address;
/// - `:PORT` and `PORT`: every interface, `0.0.0.0:PORT` and `[::]:PORT` (the second
///   left out where the host has no IPv6);
/// - `NAME:PORT` (`localhost:8080`): every address the name resolves to, in the
///   resolver's order, the first required;
/// - `unix:/path`: a Unix stream socket.
///
/// Each bind's origin is the whole value as written.
pub fn parse_listen(value: &str) -> Result<(Option<&str>, Vec<Bind>), String> {
    let (scheme, rest) = match value.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, value),
    };
    let rest = rest.trim_end_matches('/');
    let bind = |addr: ListenAddr, optional: bool| Bind {
        addr,
        origin: value.to_string(),
        optional,
    };
    if let Some(path) = rest.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!(
                "{value}: unix: needs a path (unix:/run/ringserve.sock)"
            ));
        }
        return Ok((
            scheme,
            vec![bind(ListenAddr::Unix(Some(PathBuf::from(path))), false)],
        ));
    }
    if let Ok(a) = rest.parse::<SocketAddr>() {
        return Ok((scheme, vec![bind(ListenAddr::Tcp(a), false)]));
    }
    let port_only = rest.strip_prefix(':').unwrap_or(rest);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port_only
            .parse()
            .map_err(|_| format!("{value}: port must be 0 to 65535"))?;
        let v4 = SocketAddr::from(([0, 0, 0, 0], port));
        let v6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        return Ok((
            scheme,
            vec![
                bind(ListenAddr::Tcp(v4), false),
                bind(ListenAddr::Tcp(v6), true),
            ],
        ));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(format!(
            "{value}: not ADDR:PORT, :PORT, PORT, NAME:PORT, [V6]:PORT or unix:/path"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{value}: {port:?} is not a port (0 to 65535)"))?;
    if host.is_empty() || host.contains(['[', ']', '/', ' ']) {
        return Err(format!("{value}: {host:?} is not an address or host name"));
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let found = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("{value}: cannot resolve {host}: {e}"))?;
    for a in found {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(format!("{value}: {host} resolves to no address"));
    }
    Ok((
        scheme,
        addrs
            .into_iter()
            .enumerate()
            .map(|(i, a)| bind(ListenAddr::Tcp(a), i > 0))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(v: &str) -> Vec<String> {
        parse_listen(v)
            .unwrap()
            .1
            .iter()
            .map(|b| format!("{}{}", b.addr, if b.optional { "?" } else { "" }))
            .collect()
    }

    #[test]
    fn listen_forms() {
        assert_eq!(addrs("127.0.0.1:80"), ["127.0.0.1:80"]);
        assert_eq!(addrs(":8080"), ["0.0.0.0:8080", "[::]:8080?"]);
        assert_eq!(addrs("8080"), ["0.0.0.0:8080", "[::]:8080?"]);
        assert_eq!(addrs("[::1]:9"), ["[::1]:9"]);
        assert_eq!(addrs("unix:/run/r.sock"), ["unix:/run/r.sock"]);
        let local = addrs("localhost:8080");
        assert!(
            local.first().is_some_and(|a| a.ends_with(":8080")),
            "{local:?}"
        );
        assert!(
            local.iter().any(|a| a.starts_with("127.0.0.1:")),
            "{local:?}"
        );
        let (scheme, b) = parse_listen("xfer://:9090/").unwrap();
        assert_eq!(scheme, Some("xfer"));
        assert_eq!(b[0].origin, "xfer://:9090/");
        assert_eq!(
            parse_listen("http://unix:/x").unwrap().1[0].addr,
            ListenAddr::Unix(Some("/x".into()))
        );
        for bad in [
            "", ":", "unix:", "70000", ":70000", "host:x", "[::1]", "a b:80", "1.2.3.4",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }
}
