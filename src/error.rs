//! The crate's error type: one enum whose variants say which layer failed, each holding a
//! kind that says what failed there.
//!
//! Calls a caller made wrongly fail with [`Error::InvalidState`] (W3C `InvalidStateError`),
//! [`Error::InvalidArgument`] (W3C `TypeError`) or [`Error::Limit`] (W3C `OperationError`,
//! naming the setting); a description that does not parse with [`Error::Sdp`] (naming the
//! line). Transport failures are reported as [`crate::Event::Error`] and come as
//! [`Error::Dtls`], [`Error::FingerprintMismatch`], [`Error::Ice`] or [`Error::Sctp`].

use crate::channel::ChannelState;
use crate::peer::SignalingState;
use crate::sdp::{SdpError, SdpType, Setup};
use std::fmt;

/// Everything a smolrtc call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A session description could not be parsed or does not fit a data-channel session.
    #[error("SDP: {0}")]
    Sdp(#[from] SdpError),
    /// The call is not allowed in the current signaling or channel state (W3C InvalidStateError).
    #[error("invalid state: {0}")]
    InvalidState(#[from] StateError),
    /// An argument was out of range or malformed (W3C TypeError).
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] ArgumentError),
    /// A named, configurable limit was hit (W3C OperationError).
    #[error("limit reached: {0}")]
    Limit(#[from] LimitError),
    /// The remote DTLS certificate does not match the `a=fingerprint` of its description.
    #[error("DTLS: remote certificate fingerprint does not match the SDP a=fingerprint")]
    FingerprintMismatch,
    /// The DTLS handshake, record layer or certificate failed.
    #[error("DTLS: {0}")]
    Dtls(#[from] DtlsError),
    /// The ICE agent or its sockets failed.
    #[error("ICE: {0}")]
    Ice(#[from] IceError),
    /// The SCTP association failed.
    #[error("SCTP: {0}")]
    Sctp(#[from] SctpError),
    /// A socket or the OS failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer connection is closed; its actors are gone.
    #[error("peer connection is closed")]
    Closed,
}

impl Error {
    /// An [`Error::InvalidArgument`] with the caller's own description (a setting, a URL,
    /// a file the caller named).
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(ArgumentError::Invalid(message.into()))
    }
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A call the current signaling or channel state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The peer connection was closed (`close()` or the peer's close_notify).
    #[error("peer connection is closed")]
    PeerClosed,
    /// `create_offer` while a remote offer waits for our answer.
    #[error("create_offer while a remote offer awaits an answer")]
    OfferWhileRemoteOffer,
    /// `create_answer` without a remote offer.
    #[error("create_answer needs a remote offer (signaling state is {0})")]
    AnswerWithoutOffer(SignalingState),
    /// `set_local_description` of a kind not created by `create_offer`/`create_answer`.
    #[error("set_local_description({:?}) without a matching create_{}", .0, create_call(*.0))]
    NotCreated(SdpType),
    /// `set_local_description` in a signaling state that does not take this kind.
    #[error("cannot set a local {kind:?} in signaling state {state}")]
    LocalDescription {
        /// Offer or answer.
        kind: SdpType,
        /// The signaling state at the call.
        state: SignalingState,
    },
    /// `set_remote_description` in a signaling state that does not take this kind.
    #[error("cannot set a remote {kind:?} in signaling state {state}")]
    RemoteDescription {
        /// Offer or answer.
        kind: SdpType,
        /// The signaling state at the call.
        state: SignalingState,
    },
    /// `add_ice_candidate` before any remote description.
    #[error("add_ice_candidate before set_remote_description")]
    NoRemoteDescription,
    /// `send` on a channel that is not open.
    #[error("channel {label:?} is {state}, not open")]
    ChannelNotOpen {
        /// The channel's label.
        label: String,
        /// Its state at the call.
        state: ChannelState,
    },
    /// A wait on a channel that closed first.
    #[error("channel {label:?} is {state}")]
    ChannelClosed {
        /// The channel's label.
        label: String,
        /// Its state (closing or closed).
        state: ChannelState,
    },
    /// A state problem of a caller's own (service, command line), described.
    #[error("{0}")]
    Other(String),
}

fn create_call(kind: SdpType) -> &'static str {
    match kind {
        SdpType::Answer => "answer",
        _ => "offer",
    }
}

impl From<String> for StateError {
    fn from(s: String) -> Self {
        Self::Other(s)
    }
}

impl From<&str> for StateError {
    fn from(s: &str) -> Self {
        Self::Other(s.to_owned())
    }
}

/// An argument that is malformed or out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentError {
    /// A [`crate::ChannelInit`] sets both `max_retransmits` and `max_packet_life_time`.
    #[error("max_retransmits and max_packet_life_time are mutually exclusive")]
    ConflictingReliability,
    /// Stream id 65535 is reserved (RFC 8832).
    #[error("stream id 65535 is reserved")]
    ReservedStream,
    /// A channel label or protocol longer than a configured cap or DCEP's 65535 bytes.
    #[error("{field} of {len} bytes exceeds {limit} ({max})")]
    TooLong {
        /// `label` or `protocol`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The setting (or rule) it passes: `max_channel_label`, `DCEP`, ...
        limit: &'static str,
        /// The most that setting allows.
        max: usize,
    },
    /// A remote description without an `a=fingerprint`.
    #[error("remote description has no a=fingerprint")]
    NoFingerprint,
    /// A remote description whose fingerprints use no hash smolrtc checks.
    #[error("remote a=fingerprint uses no sha-256 hash (the only one smolrtc checks)")]
    NoSha256Fingerprint,
    /// An answer whose `a=setup` is neither active nor passive (RFC 8842).
    #[error("answer with a=setup:{0:?}; expected active or passive")]
    AnswerSetup(Setup),
    /// A remote ICE candidate that does not parse.
    #[error("candidate {candidate:?}: {reason}")]
    Candidate {
        /// The candidate as given.
        candidate: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument of a caller's own (service settings, command line), described.
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for ArgumentError {
    fn from(s: String) -> Self {
        Self::Invalid(s)
    }
}

impl From<&str> for ArgumentError {
    fn from(s: &str) -> Self {
        Self::Invalid(s.to_owned())
    }
}

/// A named, configurable limit was reached: [`LimitError::name`] is the setting (as in
/// [`crate::Config`] and the service's flags), [`LimitError::value`] its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    name: &'static str,
    value: usize,
    message: String,
}

impl LimitError {
    /// The limit `name` of `value` was reached; `message` says by what (it should name
    /// the limit too: it is what users read).
    pub fn new(name: &'static str, value: usize, message: impl Into<String>) -> Self {
        Self {
            name,
            value,
            message: message.into(),
        }
    }

    /// The setting that was reached, e.g. `send_buffer_per_channel`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The setting's value.
    pub fn value(&self) -> usize {
        self.value
    }
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LimitError {}

/// What failed in DTLS (the fingerprint check is [`Error::FingerprintMismatch`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DtlsError {
    /// The crypto provider is not available.
    #[error("crypto provider: {0}")]
    CryptoProvider(String),
    /// The certificate could not be made or hashed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// rtc-dtls refused the handshake configuration.
    #[error("config: {0}")]
    Config(String),
    /// The client could not start the handshake.
    #[error("connect: {0}")]
    Connect(String),
    /// The handshake gave up retransmitting.
    #[error("handshake timed out: {0}")]
    Timeout(String),
    /// The handshake failed (an alert, a refused certificate, a bad record).
    #[error("{0}")]
    Handshake(String),
}

/// What failed in ICE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IceError {
    /// rtc-ice refused the agent's configuration.
    #[error("agent: {0}")]
    Agent(String),
    /// The random number generator for the credentials failed.
    #[error("random: {0}")]
    Random(String),
    /// A shared port could not be bound.
    #[error("cannot bind {addr}: {reason}")]
    Bind {
        /// The address and port.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// No local address to bind a shared port on.
    #[error("no address to bind")]
    NoAddress,
}

/// What ended or failed in SCTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SctpError {
    /// The client could not start the association.
    #[error("connect: {0}")]
    Connect(String),
    /// The association handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The association closed (ABORT or SHUTDOWN, from either side).
    #[error("association closed")]
    Closed,
}
