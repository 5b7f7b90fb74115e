//! The crate's error type: one enum collecting each layer's failures.

use crate::sdp::SdpError;

/// Everything a smolrtc call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A session description could not be parsed or does not fit a data-channel session.
    #[error("SDP: {0}")]
    Sdp(#[from] SdpError),
    /// The call is not allowed in the current signaling or channel state (W3C InvalidStateError).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// An argument was out of range or malformed (W3C TypeError / OperationError).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A named, configurable limit was hit.
    #[error("limit reached: {0}")]
    Limit(String),
    /// The remote DTLS certificate does not match the `a=fingerprint` of its description.
    #[error("DTLS: remote certificate fingerprint does not match the SDP a=fingerprint")]
    FingerprintMismatch,
    /// The DTLS handshake or record layer failed.
    #[error("DTLS: {0}")]
    Dtls(String),
    /// The ICE agent failed.
    #[error("ICE: {0}")]
    Ice(String),
    /// The SCTP association failed.
    #[error("SCTP: {0}")]
    Sctp(String),
    /// A socket or the OS failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer connection is closed; its actors are gone.
    #[error("peer connection is closed")]
    Closed,
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
