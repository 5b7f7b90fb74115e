//! The ICE command-line options shared by `smolrtc serve` and `smolrtc peer`.

use crate::ice::{IceConfig, IceServer, TransportPolicy};
use clap::Args;
use std::net::IpAddr;
use std::time::Duration;

/// ICE options (host candidates, STUN/TURN servers, transport policy).
#[derive(Args, Debug, Clone, Default)]
pub struct IceOptions {
    /// Offer only this local address as an ICE host candidate (repeatable); default: every
    /// address of every interface that is up.
    #[arg(long = "ice-address", value_name = "IP")]
    pub ice_addresses: Vec<IpAddr>,
    /// Offer only addresses of this interface (repeatable), e.g. eth0; default: all.
    #[arg(long = "ice-interface", value_name = "NAME")]
    pub ice_interfaces: Vec<String>,
    /// Also offer loopback addresses (always done when nothing else is up).
    #[arg(long)]
    pub loopback: bool,
    /// Offer IPv4 addresses only (by default global IPv6 addresses are offered too).
    #[arg(long)]
    pub no_ipv6: bool,
    /// Bind ICE sockets to ports in this range, e.g. 50000-50100 (for a firewall or a
    /// port forward); default: any free port.
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_port_range)]
    pub ice_ports: Option<std::ops::RangeInclusive<u16>>,
    /// A STUN or TURN server (repeatable): stun:HOST[:PORT],
    /// 'turn:USER:PASS@HOST[:PORT][?transport=udp|tcp]' or turns:USER:PASS@HOST[:PORT]
    /// (TLS). Default ports 3478, and 5349 for turns:. Credentials are never logged.
    #[arg(long = "ice-server", value_name = "URL")]
    pub ice_servers: Vec<IceServer>,
    /// Which candidates may be used: all, or relay (every byte through a TURN server; no
    /// local or public address revealed).
    #[arg(long, value_name = "all|relay", default_value_t = TransportPolicy::All)]
    pub ice_transport_policy: TransportPolicy,
    /// Seconds to wait for STUN/TURN servers while gathering; an unanswered server is left
    /// out (and logged).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub gather_timeout: f64,
    /// PEM file of the certificate authorities trusted for turns: servers.
    #[arg(long, value_name = "PEM", default_value = crate::ice::DEFAULT_TLS_ROOTS)]
    pub tls_roots: std::path::PathBuf,
}

impl IceOptions {
    /// Writes these options into `ice`.
    pub fn apply(&self, ice: &mut IceConfig) {
        ice.hosts.addresses = self.ice_addresses.clone();
        ice.hosts.include_loopback = self.loopback;
        ice.hosts.interfaces = self.ice_interfaces.clone();
        ice.hosts.ipv6 = !self.no_ipv6;
        ice.hosts.ports = self.ice_ports.clone();
        ice.servers = self.ice_servers.clone();
        ice.transport_policy = self.ice_transport_policy;
        if self.gather_timeout.is_finite() && self.gather_timeout > 0.0 {
            ice.gather_timeout = Duration::from_secs_f64(self.gather_timeout.min(300.0));
        }
        ice.tls_roots = self.tls_roots.clone();
    }
}

/// Parses `FIRST-LAST` (or one port).
pub fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("bad first port {a:?}"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("bad last port {b:?}"))?;
    if a == 0 || a > b {
        return Err(format!(
            "expected FIRST-LAST with 0 < FIRST <= LAST, got {s:?}"
        ));
    }
    Ok(a..=b)
}
