//! smolrtc: a small WebRTC data-channel peer for Linux devices.
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

pub mod apps;
pub mod channel;
pub mod dtls;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod ice;
pub mod media;
pub mod peer;
pub mod runtime;
pub mod sctp;
pub mod sdp;
pub mod signal;

pub use channel::{ChannelInit, ChannelState, DataChannel, Message};
pub use error::{Error, Result};
pub use ice::{IceConfig, IceServer, TransportPolicy};
pub use peer::{Config, ConnectionState, Event, EventStream, PeerConnection, SignalingState};
pub use runtime::Runtime;
pub use sdp::{Description, IceCandidateInit, SdpType};
