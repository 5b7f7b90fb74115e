//! ICE: host candidate gathering and the agent actor (RFC 8445), around rtc-ice's agent.

mod agent;
pub mod gather;

pub(crate) use agent::{IceActor, IceMsg, IceReport};
pub use gather::HostPolicy;

use std::time::Duration;

/// ICE settings.
#[derive(Clone, Debug)]
pub struct IceConfig {
    /// Which local addresses become host candidates.
    pub hosts: HostPolicy,
    /// No answer for this long: disconnected.
    pub disconnected_timeout: Duration,
    /// No answer for this long: failed (and the peer connection's resources are freed).
    pub failed_timeout: Duration,
    /// Interval of consent/keepalive checks on the selected pair.
    pub keepalive_interval: Duration,
}

impl Default for IceConfig {
    fn default() -> Self {
        Self {
            hosts: HostPolicy::default(),
            disconnected_timeout: Duration::from_secs(5),
            failed_timeout: Duration::from_secs(25),
            keepalive_interval: Duration::from_secs(2),
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
