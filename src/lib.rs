//! smolrtc: a small WebRTC peer for Linux devices — data channels and media.
//!
//! One peer connection is a set of actors on a single-threaded executor, each owning one
//! sans-IO engine from the `rtc-*` crates:
//!
//! ```text
//!  UDP sockets ─► ICE agent ─► DTLS transport ─► SCTP association ─► channel router ─► you
//!              ◄─ (rtc-ice)  ◄─  (rtc-dtls)   ◄─    (rtc-sctp)     ◄─  (DCEP)
//! ```
//!
//! Start with [`PeerConnection`]: create an offer or take one, exchange descriptions
//! (JSON `{"type","sdp"}` via [`sdp::Description`]), open [`DataChannel`]s, read
//! [`Event`]s. The handle is `Send`: drive it from any thread.
//!
//! Cargo features (all on by default): `service` (the device service: HTTP, WHIP,
//! WebSocket, channel handlers), `media` (the media core), `testkit` (the impairment relay
//! shared by tests and benchmarks), `mqtt` (fleet signaling through an MQTT broker), `logging` (a stderr logger that keeps secrets out),
//! `cli` (the `smolrtc` command). `default-features = false` leaves the peer connection
//! alone: no HTTP server, CLI parser or logger is compiled.
//!
//! `docs/ARCHITECTURE.md` in the repository maps the code.

pub mod channel;
pub mod dtls;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod ice;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "media")]
pub mod media;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod peer;
mod runtime;
pub mod sctp;
pub mod sdp;
#[cfg(feature = "service")]
pub mod service;
mod stats;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "service")]
pub mod turn_rest;

/// The log target of the library's one line per [`Event`] (state changes, local
/// candidates, channels opened and closed): a program that logs events itself, like the
/// console peer, leaves this target out so that each event is one line.
pub const EVENT_LOG_TARGET: &str = "smolrtc::event";

pub use channel::{ChannelInit, ChannelState, DataChannel, Message};
pub use error::{
    ArgumentError, DtlsError, Error, IceError, LimitError, Result, SctpError, StateError,
};
pub use ice::{IceConfig, IceServer, TransportPolicy};
pub use peer::{Config, ConnectionState, Event, EventStream, PeerConnection, SignalingState};
pub use runtime::Runtime;
pub use sdp::{Description, IceCandidateInit, SdpType};
