//! Media, device → browser: the sans-IO core of H.264 / VP8 / Opus over SRTP (issue 16).
//!
//! The pieces are engines and parsers with no I/O, no clock reads and no executor (time
//! is passed in as `now`), except [`source_io`] (reads sources with async-io), `actor`
//! (the media actor) and [`local`]'s track task. How they are wired is at the end.
//!
//! # The pieces
//!
//! ```text
//!  source bytes ──► SourceReader ──► Frame ──► Track ──► Arc<PacketizedFrame> ──► Sender ×N ──► RTP/RTCP ──► SrtpSession
//!  (file, exec,     (Annex-B → AUs,         (packetize  (shared by all viewers)   (per viewer: SSRC, seq,   (per DTLS
//!   stdin)           IVF, Ogg/Opus)          once, GOP                             offset, history, SR/RR,    transport)
//!  rtp:// ────────► RtpFramer ─────► Frame ─ cache, stats)                        NACK/RTX, PLI, queue)
//! ```
//!
//! - [`codec`]: codecs, clock rates, `a=rtpmap`/`a=fmtp` values, H.264 `profile-level-id`.
//! - [`mod@negotiate`]: picks a remote offer's payload type (and RTX, feedback) for a stream,
//!   or says clearly why nothing fits.
//! - [`h264`]: streaming Annex-B splitter, access units, SPS parser, parameter-set cache;
//!   [`vp8`] keyframe headers; [`opus`] packet durations; [`ivf`] and [`ogg`] push readers.
//! - [`packetize`]: frames → RTP payloads (single NAL / STAP-A / FU-A, VP8 descriptor,
//!   Opus), made once per source, bodies sliced from the frame's buffer.
//! - [`sender`]: the per-viewer engine (`handle_*` / `poll_*`).
//! - [`rtcp`]: compound RTCP walking and the feedback a sender reads.
//! - [`srtp`]: SRTP contexts keyed from DTLS-SRTP exported material.
//! - Receiving (issue 17): [`depacketize`] (RTP payloads → frames; a frame with a hole is
//!   dropped), [`receiver`] (the per-track engine: reorder buffer, NACK, PLI, RR, REMB),
//!   [`remote`] ([`TrackReceiver`], what `Event::Track` hands the application), [`writer`]
//!   (IVF, Annex-B and Ogg files).
//! - [`fanout`]: the source side of a track (packetize once, catch-up cache, stats) and an
//!   in-process fan-out to N senders.
//! - [`rtp_in`]: RTP input grouped into frames for pass-through.
//! - [`source`]: SOURCE URL parsing, the reader (loops, restarts, timestamps), pacing,
//!   backoff; [`source_io`]: the I/O that drives them.
//!
//! # How it is wired
//!
//! - **A track task per stream track** (the service's `streams`, or [`local`] for an
//!   application's own encoder through `PeerConnection::add_track`) owns the
//!   [`fanout::Track`]: each frame becomes one `Arc<PacketizedFrame>`, offered to every
//!   viewer's media inbox with `try_send` (a full inbox drops the frame for that viewer
//!   only; its sender sees the gap in [`packetize::PacketizedFrame::index`] and waits for a
//!   keyframe). Keyframe requests are answered with [`fanout::Track::catch_up`] to that
//!   viewer alone.
//! - **A media actor per peer connection** (`actor` around [`session::MediaSession`]):
//!   one [`sender::Sender`] per planned track, the decrypted RTCP of its transport, and
//!   `poll_transmit` drained through the SRTP session out to the ICE agent.
//! - **The ICE agent demultiplexes by first byte (RFC 7983)**: 0–3 STUN, 20–63 DTLS,
//!   128–191 RTP/RTCP (RTCP when the second byte is 192–223: RFC 5761 §4), from validated
//!   remotes only, to the media actor.
//! - **The DTLS actor keys SRTP** after the handshake: the negotiated `use_srtp` profile
//!   ([`srtp::SrtpProfile::from_dtls`]), [`srtp::SrtpProfile::keying_material_len`] bytes
//!   exported with [`srtp::EXPORTER_LABEL`], an [`srtp::SrtpSession`] in its role.
//! - **The peer actor** answers with `sdp::write_answer_sections` of the plan
//!   (`sdp::plan_answer`): each accepted section `sendonly` with rtcp-mux in the BUNDLE
//!   group, `a=ssrc` lines with the CNAME and `msid` (and `a=ssrc-group:FID` with RTX).

pub(crate) mod actor;
pub mod codec;
pub mod depacketize;
pub mod fanout;
pub mod h264;
pub mod ivf;
pub mod local;
pub mod negotiate;
pub mod ogg;
pub mod opus;
pub mod packetize;
pub mod receiver;
pub mod remote;
pub mod rtcp;
pub mod rtp_in;
pub mod sender;
pub mod session;
pub mod sink;
pub mod source;
pub mod source_io;
pub mod srtp;
#[cfg(test)]
mod testdata;
pub mod vp8;
pub mod writer;

pub use crate::sdp::Direction;
pub use codec::{Codec, MediaKind, ProfileLevelId};
pub use fanout::{Fanout, Track, TrackStats};
pub use local::{TrackInit, TrackSender};
pub use negotiate::{
    negotiate, negotiate_receive, Capabilities, NegotiateError, Negotiated, RemoteFormats,
    SendCodec,
};
pub use packetize::{Frame, FrameData, PacketizedFrame, Packetizer, Payload};
pub use remote::{ReceivedFrame, ReceiverStats, RtpPacket, TrackReceiver, TransceiverInit};
pub use sender::{KeyframeCause, Sender, SenderConfig, SenderEvent, SenderStats};
pub use session::MediaSession;
pub use sink::{SinkSpec, SinkSpecError};
pub use source::{SourceSpec, SourceSpecError};
pub use srtp::{DtlsRole, SrtpProfile, SrtpSession};
