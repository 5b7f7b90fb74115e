//! Media, device → browser: the sans-IO core of H.264 / VP8 / Opus over SRTP (issue 16).
//!
//! Nothing here is wired to the service yet: the pieces are engines and parsers with no
//! I/O, no clock reads and no executor (time is passed in as `now`), except
//! [`source_io`], which reads sources with async-io. The integration points are listed at
//! the end.
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
//! - [`negotiate`]: picks a remote offer's payload type (and RTX, feedback) for a stream,
//!   or says clearly why nothing fits.
//! - [`h264`]: streaming Annex-B splitter, access units, SPS parser, parameter-set cache;
//!   [`vp8`] keyframe headers; [`opus`] packet durations; [`ivf`] and [`ogg`] push readers.
//! - [`packetize`]: frames → RTP payloads (single NAL / STAP-A / FU-A, VP8 descriptor,
//!   Opus), made once per source, bodies sliced from the frame's buffer.
//! - [`sender`]: the per-viewer engine (`handle_*` / `poll_*`).
//! - [`rtcp`]: compound RTCP walking and the feedback a sender reads.
//! - [`srtp`]: SRTP contexts keyed from DTLS-SRTP exported material.
//! - [`fanout`]: the source side of a track (packetize once, catch-up cache, stats) and an
//!   in-process fan-out to N senders.
//! - [`rtp_in`]: RTP input grouped into frames for pass-through.
//! - [`source`]: SOURCE URL parsing, the reader (loops, restarts, timestamps), pacing,
//!   backoff; [`source_io`]: the I/O that drives them.
//!
//! # How it will be wired (after the service restructure)
//!
//! - **A source task per stream track** runs [`source_io::run`] into a bounded channel and
//!   owns the [`fanout::Track`]: each [`source_io::SourceFrame`] becomes one
//!   `Arc<PacketizedFrame>`, offered to every viewer's channel with `try_send` (a full
//!   channel drops the frame for that viewer only; its sender sees the gap in
//!   [`packetize::PacketizedFrame::index`] and waits for a keyframe). The track answers
//!   keyframe requests with [`fanout::Track::catch_up`] and serves `GET /api/streams` from
//!   [`fanout::Track::stats`].
//! - **A track sender per viewer inside each peer connection**: the peer actor owns one
//!   [`sender::Sender`] per negotiated media section, feeds it frames and the decrypted
//!   RTCP of its transport, and drains `poll_transmit` into the SRTP session and out through
//!   the ICE agent (RTCP first; a pacer can sit between if bursts prove too much for weak
//!   links). `KeyframeRequest` events go to the source task, which answers with the cached
//!   group of pictures (`handle_catch_up`) and forwards a request to sources that can make
//!   a keyframe.
//! - **The ICE agent demultiplexes by first byte (RFC 7983)**: 0–3 STUN, 20–63 DTLS,
//!   128–191 RTP/RTCP (RTCP when the second byte is 192–223, i.e. payload types 64–95 with
//!   the marker bit: RFC 5761 §4). RTP/RTCP datagrams go to the peer's media handler instead
//!   of the DTLS transport.
//! - **The DTLS actor keys SRTP**: after the handshake it reads the negotiated `use_srtp`
//!   profile ([`srtp::SrtpProfile::from_dtls`]), exports
//!   [`srtp::SrtpProfile::keying_material_len`] bytes with the label
//!   [`srtp::EXPORTER_LABEL`] and no context (`State::export_keying_material`), and builds
//!   an [`srtp::SrtpSession`] with its role (client = `a=setup:active`).
//! - **The SDP writer** answers each accepted `m=video`/`m=audio` section `sendonly` with
//!   rtcp-mux in the BUNDLE group, the payload types of [`negotiate::Negotiated::payload_types`],
//!   the lines of [`negotiate::Negotiated::answer_attributes`], and `a=ssrc:` lines with
//!   the CNAME and `msid` for the sender's SSRC (and an `a=ssrc-group:FID` with the RTX
//!   SSRC). A section no stream fits is rejected (port 0) with the
//!   [`negotiate::NegotiateError`] as the reason, or a 4xx when it was the only one asked.

pub(crate) mod actor;
pub mod codec;
pub mod fanout;
pub mod h264;
pub mod ivf;
pub mod local;
pub mod negotiate;
pub mod ogg;
pub mod opus;
pub mod packetize;
pub mod rtcp;
pub mod rtp_in;
pub mod sender;
pub mod session;
pub mod source;
pub mod source_io;
pub mod srtp;
#[cfg(test)]
mod testdata;
pub mod vp8;

pub use codec::{Codec, MediaKind, ProfileLevelId};
pub use fanout::{Fanout, Track, TrackStats};
pub use local::{TrackInit, TrackSender};
pub use negotiate::{
    negotiate, Capabilities, NegotiateError, Negotiated, RemoteFormats, SendCodec,
};
pub use packetize::{Frame, FrameData, PacketizedFrame, Packetizer, Payload};
pub use sender::{KeyframeCause, Sender, SenderConfig, SenderEvent, SenderStats};
pub use session::MediaSession;
pub use source::{SourceSpec, SourceSpecError};
pub use srtp::{DtlsRole, SrtpProfile, SrtpSession};
