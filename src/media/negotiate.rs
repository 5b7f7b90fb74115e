//! Codec negotiation: which of a remote offer's payload types a stream is sent with.
//!
//! The input is what a media section of the offer says about its payload types, read by the SDP
//! module into [`RemoteFormats`] from the `m=` line's format list and the section's `a=rtpmap`, `a=fmtp`
//! and `a=rtcp-fb` values. Values are read tolerantly: surrounding and repeated whitespace is
//! ignored (pion writes `a=rtcp-fb:96 nack ` with a trailing space), names compare
//! case-insensitively, and lines that cannot be read are skipped, never fatal.
//!
//! [`negotiate`] picks the offer's payload type for what a source produces ([`SendCodec`]):
//! - H.264: `packetization-mode=1` and a profile that decodes the stream (RFC 6184 §8.2.2;
//!   constrained baseline fits baseline, main and high decoders, main and high fit high 10,
//!   4:2:2 and 4:4:4 decoders: Chromium offers `f4001f`, no `64..`), an exact profile preferred;
//!   the answer keeps the offer's profile and says the stream's level when lower. A stream
//!   above the offer's level is still sent (browsers decode it) and flagged
//!   ([`Negotiated::level_above_offer`]) so it can be logged.
//! - VP8 at 90 kHz; Opus at 48 kHz.
//! - RTX ([RFC 4588]) bound to the chosen type by `apt=`, and `nack`, `nack pli`, `ccm fir`,
//!   `transport-cc` feedback, each only when both the offer and our [`Capabilities`] have it.
//!
//! Nothing fitting is a [`NegotiateError`] naming what the stream needs and what the offer
//! has (Firefox without its OpenH264 plug-in offers no H.264).
//!
//! [RFC 4588]: https://www.rfc-editor.org/rfc/rfc4588

use super::codec::{h264_fmtp, opus_fmtp, Codec, MediaKind, ProfileLevelId};
pub use crate::sdp::{RemoteFormat, RemoteFormats, MAX_REMOTE_FORMATS};
use std::fmt;

/// What a source produces, as negotiation needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendCodec {
    /// The codec.
    pub codec: Codec,
    /// H.264 only: the `profile-level-id` of the stream's SPS ([`ProfileLevelId::DEFAULT`]
    /// when the source has not produced one yet).
    pub profile_level_id: Option<ProfileLevelId>,
}

impl SendCodec {
    /// A source of `codec` with nothing more known about it.
    pub fn new(codec: Codec) -> SendCodec {
        SendCodec {
            codec,
            profile_level_id: None,
        }
    }

    fn plid(&self) -> ProfileLevelId {
        self.profile_level_id.unwrap_or(ProfileLevelId::DEFAULT)
    }

    fn describe(&self) -> String {
        match self.codec {
            Codec::H264 => {
                let p = self.plid();
                let profile = p
                    .profile()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "unknown profile".into());
                format!("H.264 {profile} (profile-level-id={p}, packetization-mode=1)")
            }
            Codec::Vp8 => "VP8/90000".into(),
            Codec::Opus => "opus/48000/2".into(),
        }
    }
}

/// The RTCP feedback and retransmission smolrtc can do; negotiation keeps what both sides
/// have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Generic NACK (RFC 4585) answered from the send history.
    pub nack: bool,
    /// Picture loss indication (RFC 4585) answered with a keyframe.
    pub pli: bool,
    /// Full intra request (RFC 5104) answered with a keyframe.
    pub fir: bool,
    /// Transport-wide congestion control feedback (off by default: without a send-side
    /// bandwidth estimator it would only cost the viewer's uplink).
    pub transport_cc: bool,
    /// RTX retransmission (RFC 4588) when the offer binds one by `apt=`.
    pub rtx: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            nack: true,
            pli: true,
            fir: true,
            transport_cc: false,
            rtx: true,
        }
    }
}

/// The RTCP feedback both sides agreed on for the chosen payload type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Feedback {
    /// `nack`.
    pub nack: bool,
    /// `nack pli`.
    pub pli: bool,
    /// `ccm fir`.
    pub fir: bool,
    /// `transport-cc`.
    pub transport_cc: bool,
    /// `goog-remb`: the receiver sends REMB (receiving only; a sender reads REMB anyway).
    pub remb: bool,
}

/// The outcome of [`negotiate`]: what a track is sent with, and the lines of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec.
    pub codec: Codec,
    /// The offer's payload type the media goes with.
    pub pt: u8,
    /// The offer's RTX payload type bound to `pt`, when RTX is used.
    pub rtx_pt: Option<u8>,
    /// Agreed feedback.
    pub feedback: Feedback,
    /// H.264: the `profile-level-id` of the answer (the offer's profile, the lower level).
    pub profile_level_id: Option<ProfileLevelId>,
    /// H.264: the stream's level is above what the offer announced (sent anyway; worth a log
    /// line if a receiver then fails to decode).
    pub level_above_offer: bool,
}

impl Negotiated {
    /// The clock rate of the media (and of RTX).
    pub fn clock_rate(&self) -> u32 {
        self.codec.clock_rate()
    }

    /// The answer's attributes for this track, as `(name, value)` of `a=name:value`:
    /// `rtpmap`, `fmtp`, `rtcp-fb` of the media type, then `rtpmap` and `fmtp` of RTX.
    pub fn answer_attributes(&self) -> Vec<(&'static str, String)> {
        let pt = self.pt;
        let mut out = vec![("rtpmap", self.codec.rtpmap(pt))];
        match self.codec {
            Codec::H264 => out.push((
                "fmtp",
                h264_fmtp(pt, self.profile_level_id.unwrap_or(ProfileLevelId::DEFAULT)),
            )),
            Codec::Opus => out.push(("fmtp", opus_fmtp(pt))),
            Codec::Vp8 => {}
        }
        let fb = self.feedback;
        for (on, name) in [
            (fb.nack, "nack"),
            (fb.pli, "nack pli"),
            (fb.fir, "ccm fir"),
            (fb.transport_cc, "transport-cc"),
            (fb.remb, "goog-remb"),
        ] {
            if on {
                out.push(("rtcp-fb", format!("{pt} {name}")));
            }
        }
        if let Some(rtx) = self.rtx_pt {
            out.push(("rtpmap", format!("{rtx} rtx/{}", self.clock_rate())));
            out.push(("fmtp", format!("{rtx} apt={pt}")));
        }
        out
    }

    /// The payload types of the answer's `m=` line.
    pub fn payload_types(&self) -> Vec<u8> {
        std::iter::once(self.pt).chain(self.rtx_pt).collect()
    }
}

/// Nothing in the offer fits the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiateError {
    /// Video or audio.
    pub kind: MediaKind,
    /// What the stream needs (`H.264 constrained baseline (profile-level-id=42e01f, ...)`).
    pub wanted: String,
    /// What the offer has, one entry per payload type (RTX, RED and FEC types left out).
    pub offered: Vec<String>,
}

impl fmt::Display for NegotiateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the offer's {} section has no codec this stream can be sent with: the stream is {}; the offer has ",
            self.kind.as_str(),
            self.wanted
        )?;
        if self.offered.is_empty() {
            f.write_str("no payload types")
        } else {
            f.write_str(&self.offered.join(", "))
        }
    }
}

impl std::error::Error for NegotiateError {}

/// Picks the offer's payload type for `send`; see the module doc for the rules.
pub fn negotiate(
    offer: &RemoteFormats,
    send: SendCodec,
    caps: &Capabilities,
) -> Result<Negotiated, NegotiateError> {
    let codec = send.codec;
    let clock = codec.clock_rate();
    let chosen = match codec {
        Codec::H264 => choose_h264(offer, &send),
        Codec::Vp8 => offer
            .formats
            .iter()
            .find(|f| f.is("VP8", clock))
            .map(|f| (f, None)),
        Codec::Opus => offer
            .formats
            .iter()
            .find(|f| f.is("opus", clock) && f.channels.unwrap_or(2) == 2)
            .map(|f| (f, None)),
    };
    let Some((f, plid)) = chosen else {
        return Err(not_offered(offer, &send));
    };
    let feedback = Feedback {
        nack: caps.nack && f.has_feedback("nack"),
        pli: caps.pli && f.has_feedback("nack pli"),
        fir: caps.fir && f.has_feedback("ccm fir"),
        transport_cc: caps.transport_cc && f.has_feedback("transport-cc"),
        remb: false,
    };
    // RTX only repairs NACKed losses, so it goes with NACK.
    let rtx_pt = if caps.rtx && feedback.nack {
        offer.find_rtx(f.pt, clock)
    } else {
        None
    };
    let level_above_offer = match (codec, plid) {
        (Codec::H264, Some(answer)) => send.plid().level() > answer.level(),
        _ => false,
    };
    Ok(Negotiated {
        codec,
        pt: f.pt,
        rtx_pt,
        feedback,
        profile_level_id: plid,
        level_above_offer,
    })
}

/// The H.264 format of the offer to answer `send` with, and the profile-level-id of the
/// answer: packetization-mode 1, decodable as the stream is, the same profile preferred.
fn choose_h264<'a>(
    offer: &'a RemoteFormats,
    send: &SendCodec,
) -> Option<(&'a RemoteFormat, Option<ProfileLevelId>)> {
    let clock = send.codec.clock_rate();
    let stream = send.plid();
    let mut fallback = None;
    for f in offer.formats.iter().filter(|f| f.is("H264", clock)) {
        if f.param("packetization-mode").map(str::trim) != Some("1") {
            continue;
        }
        // RFC 6184 §8.1: no profile-level-id means baseline, level 1 (42000a).
        let Some(offered) = ProfileLevelId::parse(f.param("profile-level-id").unwrap_or("42000a"))
        else {
            continue;
        };
        if !stream.decodable_by(offered) {
            continue;
        }
        // Same profile as offered (RFC 6184 §8.2.2), the stream's level when lower.
        let mut answer = offered;
        if stream.level() < offered.level() {
            answer.level_idc = stream.level_idc;
            // Level 1b is spelled with constraint_set3 on these profiles.
            answer.iop = (answer.iop & !0x10) | (stream.iop & 0x10);
        }
        if offered.profile() == stream.profile() {
            return Some((f, Some(answer)));
        }
        if fallback.is_none() {
            fallback = Some((f, Some(answer)));
        }
    }
    fallback
}

/// The error for an offer with no format for `send`: what it does offer (repair formats
/// left out).
fn not_offered(offer: &RemoteFormats, send: &SendCodec) -> NegotiateError {
    NegotiateError {
        kind: send.codec.kind(),
        wanted: send.describe(),
        offered: offer
            .formats
            .iter()
            .filter(|f| {
                !["rtx", "red", "ulpfec", "flexfec-03"]
                    .iter()
                    .any(|e| f.encoding.eq_ignore_ascii_case(e))
            })
            .map(RemoteFormat::describe)
            .collect(),
    }
}

/// The codec a payload type carries, if smolrtc depacketizes it (H.264 only with
/// `packetization-mode=1`).
fn receivable(f: &RemoteFormat) -> Option<Codec> {
    if f.is("H264", 90000) {
        (f.param("packetization-mode").map(str::trim) == Some("1")).then_some(Codec::H264)
    } else if f.is("VP8", 90000) {
        Some(Codec::Vp8)
    } else if f.is("opus", 48000) {
        Some(Codec::Opus)
    } else {
        None
    }
}

/// Picks the payload type a remote sends with, for a receiver that takes `accept`: the
/// first of the offer's types (its preference) in one of those codecs, its RTX and the
/// feedback both sides have, plus `goog-remb` (the receiver sends REMB when the offer
/// lists it). H.264 keeps the offer's `profile-level-id` (smolrtc does not decode).
pub fn negotiate_receive(
    offer: &RemoteFormats,
    accept: &[Codec],
    caps: &Capabilities,
) -> Result<Negotiated, NegotiateError> {
    let kind = accept.first().map_or(MediaKind::Video, |c| c.kind());
    let found = offer
        .formats
        .iter()
        .find_map(|f| receivable(f).filter(|c| accept.contains(c)).map(|c| (f, c)));
    let Some((f, codec)) = found else {
        let wanted: Vec<String> = accept
            .iter()
            .map(|c| SendCodec::new(*c).describe())
            .collect();
        return Err(NegotiateError {
            kind,
            wanted: format!("received as one of {}", wanted.join(", ")),
            offered: offer.formats.iter().map(RemoteFormat::describe).collect(),
        });
    };
    let plid = (codec == Codec::H264)
        .then(|| ProfileLevelId::parse(f.param("profile-level-id").unwrap_or("42000a")))
        .flatten();
    let mut n = negotiate(
        &RemoteFormats {
            formats: offer
                .formats
                .iter()
                .filter(|o| o.pt == f.pt || o.is("rtx", f.clock_rate))
                .cloned()
                .collect(),
        },
        SendCodec {
            codec,
            profile_level_id: plid,
        },
        caps,
    )?;
    n.feedback.remb = f.has_feedback("goog-remb");
    n.level_above_offer = false;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits SDP text (one media section's lines) into the m-line formats and attributes.
    fn section(sdp: &str) -> RemoteFormats {
        let mut fmts = Vec::new();
        let mut attrs = Vec::new();
        for line in sdp.lines() {
            let line = line.trim_start();
            if let Some(m) = line.strip_prefix("m=") {
                fmts = m.split_whitespace().skip(3).collect();
            } else if let Some(a) = line.strip_prefix("a=") {
                let (n, v) = a.split_once(':').unwrap_or((a, ""));
                attrs.push((n, v));
            }
        }
        RemoteFormats::parse(&fmts, attrs)
    }

    /// The video section of a Chromium offer (shortened, order kept).
    const CHROME_VIDEO: &str = include_str!("../../tests/fixtures/sdp/chromium_video_section.sdp");

    /// The video section of an offline Firefox ESR offer: no H.264.
    const FIREFOX_VIDEO: &str = include_str!("../../tests/fixtures/sdp/firefox_video_section.sdp");

    #[test]
    fn chrome_h264_constrained_baseline_gets_its_exact_profile_with_rtx() {
        let offer = section(CHROME_VIDEO);
        let send = SendCodec {
            codec: Codec::H264,
            profile_level_id: ProfileLevelId::parse("42c01e"),
        };
        let n = negotiate(&offer, send, &Capabilities::default()).unwrap();
        assert_eq!(n.pt, 106, "42e01f pm=1, not 42001f (102) nor pm=0 (108)");
        assert_eq!(n.rtx_pt, Some(107));
        assert_eq!(
            n.feedback,
            Feedback {
                nack: true,
                pli: true,
                fir: true,
                transport_cc: false,
                remb: false,
            }
        );
        // The offer's profile, the stream's lower level.
        assert_eq!(n.profile_level_id, ProfileLevelId::parse("42e01e"));
        assert!(!n.level_above_offer);
        let lines: Vec<String> = n
            .answer_attributes()
            .into_iter()
            .map(|(k, v)| format!("a={k}:{v}"))
            .collect();
        assert_eq!(
            lines,
            [
                "a=rtpmap:106 H264/90000",
                "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01e",
                "a=rtcp-fb:106 nack",
                "a=rtcp-fb:106 nack pli",
                "a=rtcp-fb:106 ccm fir",
                "a=rtpmap:107 rtx/90000",
                "a=fmtp:107 apt=106",
            ]
        );
        assert_eq!(n.payload_types(), [106, 107]);
    }

    #[test]
    fn h264_main_and_high_and_baseline_streams() {
        let offer = section(CHROME_VIDEO);
        let caps = Capabilities::default();
        let pick = |plid: &str| {
            negotiate(
                &offer,
                SendCodec {
                    codec: Codec::H264,
                    profile_level_id: ProfileLevelId::parse(plid),
                },
                &caps,
            )
        };
        // Main 4.0 (a 1080p stream) goes to 4d001f, level above the offer's 3.1 flagged.
        let main = pick("4d0028").unwrap();
        assert_eq!((main.pt, main.rtx_pt), (127, Some(125)));
        assert_eq!(main.profile_level_id, ProfileLevelId::parse("4d001f"));
        assert!(main.level_above_offer);
        // High goes to 64001f, which has nack but no pli in this offer.
        let high = pick("640028").unwrap();
        assert_eq!(high.pt, 39);
        assert!(high.feedback.nack && !high.feedback.pli && !high.feedback.fir);
        // Baseline (FMO possible) only to a baseline decoder: 42001f.
        assert_eq!(pick("42001e").unwrap().pt, 102);
        // High 4:4:4 has no taker.
        let err = pick("f4001f").unwrap_err();
        assert!(err.to_string().contains("profile-level-id=f4001f"), "{err}");
    }

    #[test]
    fn h264_high_goes_to_a_high_444_format_when_no_high_is_offered() {
        // Debian's Chromium offers 42001f, 42e01f, 4d001f and f4001f, no 64001f.
        let offer =
            section(&CHROME_VIDEO.replace("profile-level-id=64001f", "profile-level-id=f4001f"));
        let high = negotiate(
            &offer,
            SendCodec {
                codec: Codec::H264,
                profile_level_id: ProfileLevelId::parse("64001e"),
            },
            &Capabilities::default(),
        )
        .unwrap();
        assert_eq!(high.pt, 39);
        // The offer's profile, the stream's lower level.
        assert_eq!(high.profile_level_id, ProfileLevelId::parse("f4001e"));
    }

    #[test]
    fn firefox_offline_h264_is_a_clear_error_and_vp8_plays() {
        let offer = section(FIREFOX_VIDEO);
        let err = negotiate(
            &offer,
            SendCodec::new(Codec::H264),
            &Capabilities::default(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind, MediaKind::Video);
        assert!(
            msg.contains("H.264 constrained baseline (profile-level-id=42e01f"),
            "{msg}"
        );
        assert!(msg.contains("VP8/90000 (pt 120)"), "{msg}");
        assert!(msg.contains("VP9/90000 (pt 121)"), "{msg}");
        assert!(
            !msg.contains("rtx"),
            "RTX types are noise in the list: {msg}"
        );
        let vp8 = negotiate(&offer, SendCodec::new(Codec::Vp8), &Capabilities::default()).unwrap();
        assert_eq!((vp8.pt, vp8.rtx_pt), (120, Some(124)));
        assert!(vp8.feedback.nack && vp8.feedback.pli && vp8.feedback.fir);
    }

    #[test]
    fn pion_trailing_spaces_and_wildcards() {
        // pion writes "nack " with a trailing space; aiortc then dropped NACK. We must not.
        let offer = section(
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97\n\
             a=rtpmap:96  VP8/90000 \n\
             a=rtcp-fb:96 nack \n\
             a=rtcp-fb:96  nack   pli \n\
             a=rtcp-fb:* ccm  fir\n\
             a=rtpmap:97 rtx/90000\n\
             a=fmtp:97 apt=96 \n",
        );
        let n = negotiate(&offer, SendCodec::new(Codec::Vp8), &Capabilities::default()).unwrap();
        assert_eq!(n.pt, 96);
        assert!(n.feedback.nack && n.feedback.pli && n.feedback.fir);
        assert_eq!(n.rtx_pt, Some(97));
    }

    #[test]
    fn rtx_needs_nack_and_capabilities_are_respected() {
        let offer = section(CHROME_VIDEO);
        let caps = Capabilities {
            nack: false,
            ..Capabilities::default()
        };
        let n = negotiate(&offer, SendCodec::new(Codec::Vp8), &caps).unwrap();
        assert_eq!(n.rtx_pt, None);
        assert!(!n.feedback.nack && n.feedback.pli);
        let caps = Capabilities {
            transport_cc: true,
            rtx: false,
            ..Capabilities::default()
        };
        let n = negotiate(&offer, SendCodec::new(Codec::Vp8), &caps).unwrap();
        assert!(n.feedback.transport_cc);
        assert_eq!(n.rtx_pt, None);
    }

    #[test]
    fn opus_and_odd_lines() {
        let offer = section(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126 300 x\n\
             a=rtpmap:111 opus/48000/2\n\
             a=rtcp-fb:111 transport-cc\n\
             a=fmtp:111 minptime=10;useinbandfec=1\n\
             a=rtpmap:63 red/48000/2\n\
             a=rtpmap:9 G722/8000\n\
             a=rtpmap:abc opus/48000/2\n\
             a=rtpmap:0\n\
             a=fmtp:\n\
             a=rtcp-fb:\n",
        );
        assert_eq!(offer.formats.len(), 8, "300 and x are not payload types");
        let n = negotiate(
            &offer,
            SendCodec::new(Codec::Opus),
            &Capabilities::default(),
        )
        .unwrap();
        assert_eq!(n.pt, 111);
        assert_eq!(n.rtx_pt, None);
        assert_eq!(
            n.answer_attributes()[..2],
            [
                ("rtpmap", "111 opus/48000/2".to_string()),
                ("fmtp", "111 minptime=10;useinbandfec=1".to_string())
            ]
        );
        let err =
            negotiate(&offer, SendCodec::new(Codec::Vp8), &Capabilities::default()).unwrap_err();
        assert!(err.to_string().contains("opus/48000 (pt 111)"), "{err}");
        let empty = RemoteFormats::parse(&[], []);
        let err = negotiate(
            &empty,
            SendCodec::new(Codec::Opus),
            &Capabilities::default(),
        )
        .unwrap_err();
        assert!(err.to_string().ends_with("no payload types"), "{err}");
    }

    #[test]
    fn h264_without_profile_level_id_is_baseline_level_1() {
        let offer = section(
            "m=video 9 UDP/TLS/RTP/SAVPF 98\na=rtpmap:98 H264/90000\na=fmtp:98 packetization-mode=1\n",
        );
        let n = negotiate(
            &offer,
            SendCodec::new(Codec::H264),
            &Capabilities::default(),
        )
        .unwrap();
        assert_eq!(n.pt, 98);
        assert_eq!(n.profile_level_id, ProfileLevelId::parse("42000a"));
        assert!(n.level_above_offer);
        // packetization-mode absent means 0: not for us.
        let offer = section("m=video 9 UDP/TLS/RTP/SAVPF 98\na=rtpmap:98 H264/90000\n");
        assert!(negotiate(
            &offer,
            SendCodec::new(Codec::H264),
            &Capabilities::default()
        )
        .is_err());
    }
}
