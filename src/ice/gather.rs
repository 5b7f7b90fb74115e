//! Host candidate gathering: one UDP socket per local address (RFC 8445 §5.1.1.1).

use async_io::Async;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Which local addresses become host candidates.
#[derive(Clone, Debug)]
pub struct HostPolicy {
    /// Bind exactly these addresses; empty means every address of every up interface.
    pub addresses: Vec<IpAddr>,
    /// Only these interfaces (by name, e.g. `eth0`); empty means all.
    pub interfaces: Vec<String>,
    /// Include loopback addresses (always done when nothing else is up).
    pub include_loopback: bool,
    /// Include (non-link-local) IPv6 addresses (the default).
    pub ipv6: bool,
    /// Bind host sockets to a port of this range (the first free one), for firewalls and
    /// port forwards; any port when `None`.
    pub ports: Option<std::ops::RangeInclusive<u16>>,
}

impl Default for HostPolicy {
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            interfaces: Vec::new(),
            include_loopback: false,
            ipv6: true,
            ports: None,
        }
    }
}

/// The addresses to bind under `policy`, in a stable order (IPv4 first).
pub(crate) fn host_addresses(policy: &HostPolicy) -> Vec<IpAddr> {
    if !policy.addresses.is_empty() {
        return policy.addresses.clone();
    }
    let mut all: Vec<IpAddr> = match rtc_shared::ifaces::ifaces() {
        Ok(ifs) => ifs
            .into_iter()
            .filter(|i| policy.interfaces.is_empty() || policy.interfaces.contains(&i.name))
            .filter_map(|i| i.addr.map(|a| a.ip()))
            .filter(|ip| !ip.is_unspecified() && !ip.is_multicast())
            .filter(|ip| match ip {
                IpAddr::V4(_) => true,
                // Link-local v6 needs a scope id on every send; skip it.
                IpAddr::V6(v6) => policy.ipv6 && (v6.segments()[0] & 0xffc0) != 0xfe80,
            })
            .collect(),
        Err(e) => {
            log::warn!("ICE: cannot list interfaces: {e}; using loopback");
            Vec::new()
        }
    };
    all.sort_by_key(|ip| (ip.is_ipv6(), ip.is_loopback(), *ip));
    all.dedup();
    let non_loopback = all.iter().any(|ip| !ip.is_loopback());
    if non_loopback && !policy.include_loopback {
        all.retain(|ip| !ip.is_loopback());
    }
    if all.is_empty() {
        if !policy.interfaces.is_empty() {
            log::warn!(
                "ICE: no usable address on interface(s) {:?}; using loopback",
                policy.interfaces
            );
        }
        all.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    all
}

/// Binds one non-blocking UDP socket per address (on the first free port of `ports`, if
/// given); failures are logged and skipped.
pub(crate) fn bind(
    addresses: &[IpAddr],
    ports: Option<&std::ops::RangeInclusive<u16>>,
) -> Vec<(SocketAddr, Async<UdpSocket>)> {
    let mut out = Vec::new();
    for ip in addresses {
        let bound = match ports {
            None => Async::<UdpSocket>::bind(SocketAddr::new(*ip, 0)),
            Some(range) => range
                .clone()
                .find_map(|port| Async::<UdpSocket>::bind(SocketAddr::new(*ip, port)).ok())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!("no free port in {}-{}", range.start(), range.end()),
                    )
                }),
        };
        match bound {
            Ok(sock) => match sock.get_ref().local_addr() {
                Ok(addr) => {
                    grow_buffers(sock.get_ref(), addr);
                    out.push((addr, sock));
                }
                Err(e) => log::warn!("ICE: {ip}: {e}"),
            },
            Err(e) => log::warn!("ICE: cannot bind {ip}: {e}"),
        }
    }
    out
}

/// Receive buffer asked for: room for a 3 MiB SCTP window arriving in one burst (the
/// kernel counts about twice the payload per datagram). The kernel caps it at
/// net.core.rmem_max; where allowed (CAP_NET_ADMIN) the cap is lifted with SO_RCVBUFFORCE.
const RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

/// Smaller granted buffers are logged once, with the sysctl that lifts the cap.
const RECEIVE_BUFFER_WARN: usize = 1024 * 1024;

/// The default UDP receive buffer (about 200 KiB) overflows when a window's worth of
/// datagrams arrives faster than the smolrtc thread decrypts them, and every drop costs
/// SCTP a retransmission (a whole second when the fast-retransmit rule misses it).
/// Measured through a 20 ms RTT relay with a 3 MiB window: 1 MiB buffers dropped 750
/// datagrams and moved 42-128 Mbit/s; 4 MiB buffers dropped none and moved 680.
pub(crate) fn grow_buffers(sock: &UdpSocket, addr: SocketAddr) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let s = socket2::SockRef::from(sock);
    if let Err(e) = s.set_recv_buffer_size(RECEIVE_BUFFER) {
        log::debug!("ICE: {addr}: receive buffer: {e}");
    }
    // Linux reports twice the size asked for (its bookkeeping share).
    let granted = || s.recv_buffer_size().map(|n| n / 2).unwrap_or(0);
    if granted() < RECEIVE_BUFFER {
        force_recv_buffer(sock, RECEIVE_BUFFER);
    }
    let got = granted();
    log::debug!("ICE: {addr}: receive buffer {got} bytes");
    if got < RECEIVE_BUFFER_WARN && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::info!(
            "ICE: UDP receive buffers are capped at {got} bytes by net.core.rmem_max; \
             for full throughput run `sysctl -w net.core.rmem_max={RECEIVE_BUFFER}` \
             (or start smolrtc with CAP_NET_ADMIN)"
        );
    }
}

/// SO_RCVBUFFORCE: like SO_RCVBUF but past net.core.rmem_max, for a privileged process.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn force_recv_buffer(sock: &UdpSocket, size: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket descriptor, and a pointer to a c_int with its exact length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::trace!("SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn force_recv_buffer(_: &UdpSocket, _: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_and_family_filters() {
        let lo_v4 = HostPolicy {
            interfaces: vec!["lo".into()],
            include_loopback: true,
            ipv6: false,
            ..HostPolicy::default()
        };
        assert_eq!(host_addresses(&lo_v4), vec![IpAddr::from([127, 0, 0, 1])]);
        // Every other interface's addresses are left out by the name filter.
        let all = host_addresses(&HostPolicy {
            include_loopback: true,
            ..HostPolicy::default()
        });
        assert!(all.contains(&IpAddr::from([127, 0, 0, 1])), "{all:?}");
        let v6 = host_addresses(&HostPolicy {
            ipv6: false,
            ..HostPolicy::default()
        });
        assert!(v6.iter().all(|ip| ip.is_ipv4()), "{v6:?}");
    }
}
