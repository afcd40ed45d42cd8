//! What to do about an error, where the error alone does not say.
#![forbid(unsafe_code)]

use std::io;

/// For a bind that failed with EACCES on a port below 1024: how to give the server
/// CAP_NET_BIND_SERVICE (or lower the privileged range). `None` for any other port
/// or error.
pub fn low_port_hint(port: u16, err: &io::Error) -> Option<String> {
    if port == 0 || port >= 1024 || err.raw_os_error() != Some(libc::EACCES) {
        return None;
    }
    Some(format!(
        "ports below 1024 need CAP_NET_BIND_SERVICE: run as root with --user, \
         `setcap cap_net_bind_service=+ep $(command -v ringserve)`, \
         AmbientCapabilities=CAP_NET_BIND_SERVICE in the unit, \
         or sysctl net.ipv4.ip_unprivileged_port_start={port}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eacces_below_1024_gets_the_hint() {
        let e = io::Error::from_raw_os_error(libc::EACCES);
        let h = low_port_hint(80, &e).unwrap();
        assert!(
            h.starts_with("ports below 1024 need CAP_NET_BIND_SERVICE"),
            "{h}"
        );
        assert!(h.contains("--user"), "{h}");
        assert!(h.contains("setcap cap_net_bind_service=+ep"), "{h}");
        assert!(
            h.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"),
            "{h}"
        );
        assert!(h.ends_with("ip_unprivileged_port_start=80"), "{h}");
        assert!(low_port_hint(1023, &e).is_some());
    }

    #[test]
    fn other_ports_and_errors_get_none() {
        let eacces = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(low_port_hint(1024, &eacces), None);
        assert_eq!(low_port_hint(8080, &eacces), None);
        // Port 0 asks the kernel for an unprivileged port: no hint can help.
        assert_eq!(low_port_hint(0, &eacces), None);
        for errno in [libc::EADDRINUSE, libc::EPERM, libc::EADDRNOTAVAIL] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(low_port_hint(80, &e), None, "{e}");
        }
        assert_eq!(low_port_hint(80, &io::Error::other("no errno")), None);
    }
}
