//! Session descriptions for a data-channel-only WebRTC peer.
//!
//! This module reads a remote peer's SDP ([RFC 8866]) and writes smolrtc's
//! own offers and answers: one SCTP association over DTLS over ICE
//! ([RFC 8831], [RFC 8832]) and, for media, sendonly `m=video`/`m=audio`
//! sections with rtcp-mux in the same BUNDLE group ([`parse_description`],
//! [`write_answer_sections`], [`write_offer_sections`]; the codec choice is
//! the media module's). [`parse`] and [`write_answer`] are the data-only
//! view: audio and video sections are answered rejected (port 0).
//!
//! # The two forms of the data m-line
//!
//! * **RFC 8841** (current browsers, and what smolrtc writes in its offers):
//!
//!   ```text
//!   m=application 9 UDP/DTLS/SCTP webrtc-datachannel
//!   a=sctp-port:5000
//!   a=max-message-size:262144
//!   ```
//!
//!   `TCP/DTLS/SCTP` is read too.
//!
//! * **Legacy** (draft-ietf-mmusic-sctp-sdp-05, still offered by rawrtc and
//!   by old browsers):
//!
//!   ```text
//!   m=application 9 DTLS/SCTP 5000
//!   a=sctpmap:5000 webrtc-datachannel 65535
//!   a=max-message-size:0
//!   ```
//!
//!   The format number is the SCTP port. A remote that offers this form is
//!   answered in this form ([`write_answer`]).
//!
//! # What is read
//!
//! [`parse`] takes the session level and the first data m-line and returns a
//! [`RemoteDescription`] (its [`DataSection`] set): ICE credentials and options ([RFC 8839]), certificate
//! fingerprints ([RFC 8122]), the DTLS role (`a=setup`, [RFC 8842]), the mid
//! and BUNDLE group ([RFC 5888], [RFC 8843]), the SCTP port and maximum
//! message size ([RFC 8841]), candidates and `a=end-of-candidates`
//! ([RFC 8840]). Each problem is reported with the 1-based line number and
//! the line itself (see [`SdpError`]). Input is bounded: at most
//! [`MAX_SDP_BYTES`] bytes and [`MAX_CANDIDATES`] candidates. No input makes
//! the parser panic.
//!
//! # JSON
//!
//! Browsers and signalling servers carry descriptions as W3C
//! `RTCSessionDescriptionInit` JSON (`{"type":"offer","sdp":"v=0\r\n..."}`,
//! see [`Description`]) and trickled candidates as `RTCIceCandidateInit`
//! ([`IceCandidateInit`]). WHIP-style trickle uses the
//! `application/trickle-ice-sdpfrag` body of [RFC 8840]
//! ([`write_candidate_fragment`], [`parse_candidate_fragment`]).
//!
//! [RFC 5888]: https://www.rfc-editor.org/rfc/rfc5888
//! [RFC 8122]: https://www.rfc-editor.org/rfc/rfc8122
//! [RFC 8831]: https://www.rfc-editor.org/rfc/rfc8831
//! [RFC 8832]: https://www.rfc-editor.org/rfc/rfc8832
//! [RFC 8839]: https://www.rfc-editor.org/rfc/rfc8839
//! [RFC 8840]: https://www.rfc-editor.org/rfc/rfc8840
//! [RFC 8841]: https://www.rfc-editor.org/rfc/rfc8841
//! [RFC 8842]: https://www.rfc-editor.org/rfc/rfc8842
//! [RFC 8843]: https://www.rfc-editor.org/rfc/rfc8843
//! [RFC 8866]: https://www.rfc-editor.org/rfc/rfc8866

#![deny(missing_docs)]

mod error;
mod json;
mod media;
mod parse;
#[cfg(feature = "media")]
mod plan;
mod types;
mod write;

#[cfg(test)]
mod media_tests;
#[cfg(test)]
mod tests;

pub use error::{redact_secrets, SdpError};
pub use json::{Description, IceCandidateInit, SdpType};
pub use media::{Direction, LocalMedia, RemoteFormat, RemoteFormats, RemoteMedia};
pub use parse::{check_candidate, parse, parse_candidate_fragment, parse_description};
#[cfg(feature = "media")]
pub use plan::{
    plan_answer, plan_answer_media, plan_from_answer, plan_offer, AnswerPlan, OfferedSection,
    PlanError, PlannedReceiver, PlannedTrack, ReceiveCodecs, StreamCodecs,
};
pub use types::{DataSection, Fingerprint, LocalSession, MediaSection, RemoteDescription, Setup};
#[cfg(feature = "service")]
pub(crate) use write::candidate_attributes;
pub use write::{
    write_answer, write_answer_sections, write_candidate_fragment, write_offer,
    write_offer_sections, AnswerSection,
};

/// Largest SDP text [`parse`] accepts, in bytes (64 KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Most candidates [`parse`] accepts in the data section (and
/// [`parse_candidate_fragment`] in one fragment).
pub const MAX_CANDIDATES: usize = 64;

/// Most payload types read from one media section (browsers offer about 40 for video).
pub const MAX_REMOTE_FORMATS: usize = 128;

/// SCTP port used when the remote names none (RFC 8841 default).
pub const DEFAULT_SCTP_PORT: u16 = 5000;

/// The `fmt` of an RFC 8841 data m-line.
pub const DATACHANNEL_FMT: &str = "webrtc-datachannel";
