//! ICE (RFC 8445): candidate gathering (host, server-reflexive via STUN, relay via TURN
//! over UDP, TCP or TLS) and the agent actor, around rtc-ice's agent and rtc-turn's client.

mod agent;
mod engine;
mod gather;
pub(crate) mod port;
pub mod server;
mod turn;
pub(crate) mod turn_stream;
mod udp;

pub(crate) use agent::{IceActor, IceMsg};
pub(crate) use engine::IceReport;
#[cfg(feature = "service")]
pub(crate) use gather::host_addresses;
pub use gather::HostPolicy;
pub use port::SharedPort;
pub use server::{IceServer, ServerKind, ServerTransport, TransportPolicy};
/// The MQTT client's TLS settings are the TURN client's.
#[cfg(feature = "mqtt")]
pub(crate) use turn_stream::tls_config as tls_client_config;

use std::time::Duration;

/// Where `turns:` server certificates are checked against by default (Debian's bundle).
pub const DEFAULT_TLS_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Default of [`IceConfig::max_remote_candidates`].
pub const DEFAULT_MAX_REMOTE_CANDIDATES: usize = 100;

/// ICE settings.
#[derive(Clone, Debug)]
pub struct IceConfig {
    /// Which local addresses become host candidates.
    pub hosts: HostPolicy,
    /// No answer for this long: disconnected.
    pub disconnected_timeout: Duration,
    /// No answer for this long after `disconnected_timeout`: failed (and the peer
    /// connection's resources are freed).
    pub failed_timeout: Duration,
    /// Interval of consent/keepalive checks on the selected pair.
    pub keepalive_interval: Duration,
    /// STUN and TURN servers (W3C `iceServers`).
    pub servers: Vec<IceServer>,
    /// Which candidates may be used (W3C `iceTransportPolicy`).
    pub transport_policy: TransportPolicy,
    /// Longest wait for a server's answer while gathering; a server that does not answer in
    /// time is left out (logged) and gathering completes without it.
    pub gather_timeout: Duration,
    /// PEM file of the certificate authorities trusted for `turns:` servers.
    pub tls_roots: std::path::PathBuf,
    /// Refresh TURN allocations at least this often (default: at half their lifetime, as
    /// RFC 8656 suggests). Shorter keeps a NAT's mapping to the TURN server alive while
    /// the relay is idle.
    pub turn_refresh_interval: Option<Duration>,
    /// Run this connection on a UDP port shared with others (host candidates are the
    /// port's addresses; `hosts` is not used).
    pub shared_port: Option<SharedPort>,
    /// Most remote candidates held at once (0 = [`DEFAULT_MAX_REMOTE_CANDIDATES`]), whatever
    /// brought them: the remote description, `add_ice_candidate` (trickle), or checks from
    /// new addresses (peer-reflexive). Past it `add_ice_candidate` fails with
    /// [`crate::Error::Limit`], a description's further candidates are left out (the first
    /// ones are kept), and checks from new addresses are dropped unanswered; one log line
    /// per connection says so. Duplicates and mDNS (`.local`) candidates, which smolrtc does
    /// not resolve, take no place. An ICE restart starts afresh.
    pub max_remote_candidates: usize,
}

impl Default for IceConfig {
    fn default() -> Self {
        Self {
            hosts: HostPolicy::default(),
            disconnected_timeout: Duration::from_secs(5),
            // Failed 29 s after the last answer: inside RFC 7675's 30 s consent lifetime.
            failed_timeout: Duration::from_secs(24),
            keepalive_interval: Duration::from_secs(2),
            servers: Vec::new(),
            transport_policy: TransportPolicy::All,
            gather_timeout: Duration::from_secs(5),
            tls_roots: DEFAULT_TLS_ROOTS.into(),
            turn_refresh_interval: None,
            shared_port: None,
            max_remote_candidates: DEFAULT_MAX_REMOTE_CANDIDATES,
        }
    }
}

/// W3C `RTCIceConnectionState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceConnectionState {
    /// Not started.
    New,
    /// Checks running.
    Checking,
    /// A pair works.
    Connected,
    /// Checks done, a pair works.
    Completed,
    /// Consent lost for a while; may come back.
    Disconnected,
    /// No pair works.
    Failed,
    /// Closed.
    Closed,
}

/// W3C `RTCIceGatheringState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatheringState {
    /// Not started.
    New,
    /// Gathering.
    Gathering,
    /// All candidates gathered.
    Complete,
}
