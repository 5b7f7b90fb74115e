//! Codecs smolrtc sends, and the SDP facts about them: encoding names, clock rates, `a=rtpmap`
//! and `a=fmtp` values, and H.264's `profile-level-id` ([RFC 6184] §8.1).
//!
//! [RFC 6184]: https://www.rfc-editor.org/rfc/rfc6184

use std::fmt;

/// A codec a source produces and a viewer receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC ([RFC 6184]), sent with `packetization-mode=1` (single NAL, STAP-A, FU-A).
    ///
    /// [RFC 6184]: https://www.rfc-editor.org/rfc/rfc6184
    H264,
    /// VP8 ([RFC 7741]).
    ///
    /// [RFC 7741]: https://www.rfc-editor.org/rfc/rfc7741
    Vp8,
    /// Opus ([RFC 7587]), 48 kHz.
    ///
    /// [RFC 7587]: https://www.rfc-editor.org/rfc/rfc7587
    Opus,
}

/// Whether a codec carries video or audio (the SDP media type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `m=video`.
    Video,
    /// `m=audio`.
    Audio,
}

impl MediaKind {
    /// The SDP media type: `video` or `audio`.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
        }
    }
}

impl Codec {
    /// Every codec, in the order smolrtc lists them.
    pub const ALL: [Codec; 3] = [Codec::H264, Codec::Vp8, Codec::Opus];

    /// The RTP clock rate: 90 kHz for video, 48 kHz for Opus.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::H264 | Codec::Vp8 => 90_000,
            Codec::Opus => 48_000,
        }
    }

    /// Video or audio.
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::H264 | Codec::Vp8 => MediaKind::Video,
            Codec::Opus => MediaKind::Audio,
        }
    }

    /// The encoding name of `a=rtpmap` (compared case-insensitively, RFC 4855 §3).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::Vp8 => "VP8",
            Codec::Opus => "opus",
        }
    }

    /// Channels in `a=rtpmap`: Opus is always `/2` (RFC 7587 §7), video has none.
    pub fn channels(self) -> Option<u16> {
        match self {
            Codec::Opus => Some(2),
            _ => None,
        }
    }

    /// The MIME type browsers report in `getStats()` (`video/H264`, ...).
    pub fn mime_type(self) -> &'static str {
        match self {
            Codec::H264 => "video/H264",
            Codec::Vp8 => "video/VP8",
            Codec::Opus => "audio/opus",
        }
    }

    /// The codec named `name` in a source URL (`h264`, `vp8`, `opus`; any case).
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name))
    }

    /// The `a=rtpmap` value for payload type `pt`: `96 H264/90000`, `111 opus/48000/2`.
    pub fn rtpmap(self, pt: u8) -> String {
        match self.channels() {
            Some(ch) => format!("{pt} {}/{}/{ch}", self.encoding_name(), self.clock_rate()),
            None => format!("{pt} {}/{}", self.encoding_name(), self.clock_rate()),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::H264 => "H.264",
            Codec::Vp8 => "VP8",
            Codec::Opus => "Opus",
        })
    }
}

/// The `a=fmtp` parameters smolrtc writes for H.264 (RFC 6184 §8.1): `packetization-mode=1`,
/// `level-asymmetry-allowed=1` and `profile-level-id`.
pub fn h264_fmtp(pt: u8, plid: ProfileLevelId) -> String {
    format!("{pt} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={plid}")
}

/// The `a=fmtp` parameters smolrtc writes for Opus (RFC 7587 §7).
pub fn opus_fmtp(pt: u8) -> String {
    format!("{pt} minptime=10;useinbandfec=1")
}

/// H.264 profiles as RFC 6184 Table 5 names them by `profile_idc` and `profile-iop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum H264Profile {
    /// Constrained Baseline: the subset every H.264 decoder has (42e0.., 4240.., 4d80.., 58c0..).
    ConstrainedBaseline,
    /// Baseline (42 without constraint_set1): may use FMO/ASO, which Main decoders lack.
    Baseline,
    /// Main (4d).
    Main,
    /// Extended (58 without constraint_set0).
    Extended,
    /// High (64), decodes Main too.
    High,
    /// Constrained High (64 with constraint_set4 and 5).
    ConstrainedHigh,
    /// High 10, High 4:2:2, High 4:4:4 Predictive and the other high-bit-depth profiles.
    HighOther(u8),
}

impl fmt::Display for H264Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H264Profile::ConstrainedBaseline => f.write_str("constrained baseline"),
            H264Profile::Baseline => f.write_str("baseline"),
            H264Profile::Main => f.write_str("main"),
            H264Profile::Extended => f.write_str("extended"),
            H264Profile::High => f.write_str("high"),
            H264Profile::ConstrainedHigh => f.write_str("constrained high"),
            H264Profile::HighOther(idc) => write!(f, "profile_idc {idc}"),
        }
    }
}

/// H.264 `profile-level-id`: `profile_idc`, the constraint flags byte (`profile-iop`) and
/// `level_idc`, written as six hex digits (`42e01f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfileLevelId {
    /// `profile_idc` of the SPS (66 baseline, 77 main, 88 extended, 100 high, ...).
    pub profile_idc: u8,
    /// constraint_set0..5 flags in bits 7..2 (RFC 6184 `profile-iop`).
    pub iop: u8,
    /// `level_idc` (10 × level, so 31 is level 3.1; 11 with constraint_set3 is level 1b for
    /// the baseline, main and extended profiles).
    pub level_idc: u8,
}

impl ProfileLevelId {
    /// What a source with no SPS yet is announced as: constrained baseline, level 3.1.
    pub const DEFAULT: ProfileLevelId = ProfileLevelId {
        profile_idc: 0x42,
        iop: 0xe0,
        level_idc: 0x1f,
    };

    /// Reads six hex digits (any case, surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<ProfileLevelId> {
        let s = s.trim();
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let v = u32::from_str_radix(s, 16).ok()?;
        Some(ProfileLevelId {
            profile_idc: (v >> 16) as u8,
            iop: (v >> 8) as u8,
            level_idc: v as u8,
        })
    }

    /// The profile, as RFC 6184 Table 5 reads `profile_idc` and `profile-iop`; `None` for a
    /// combination the table does not name (such as 42 with reserved bits set).
    pub fn profile(self) -> Option<H264Profile> {
        // Reserved bits 1..0 must be zero; the flags that matter differ per profile_idc.
        if self.iop & 0x03 != 0 {
            return None;
        }
        let set0 = self.iop & 0x80 != 0;
        let set1 = self.iop & 0x40 != 0;
        let set4 = self.iop & 0x08 != 0;
        let set5 = self.iop & 0x04 != 0;
        Some(match self.profile_idc {
            0x42 if set1 => H264Profile::ConstrainedBaseline,
            0x42 => H264Profile::Baseline,
            0x4d if set0 => H264Profile::ConstrainedBaseline,
            0x4d => H264Profile::Main,
            0x58 if set0 && set1 => H264Profile::ConstrainedBaseline,
            0x58 if set0 => H264Profile::Baseline,
            0x58 => H264Profile::Extended,
            0x64 if set4 && set5 => H264Profile::ConstrainedHigh,
            0x64 => H264Profile::High,
            idc @ (0x6e | 0x7a | 0xf4 | 0x2c | 0x53 | 0x56 | 0x76 | 0x80) => {
                H264Profile::HighOther(idc)
            }
            _ => return None,
        })
    }

    /// Level × 10 (`31` for 3.1), with level 1b as 9.
    pub fn level(self) -> u8 {
        let is_1b = self.level_idc == 11
            && self.iop & 0x10 != 0
            && matches!(self.profile_idc, 0x42 | 0x4d | 0x58);
        if is_1b || self.level_idc == 9 {
            9
        } else {
            self.level_idc
        }
    }

    /// Whether a decoder of profile `decoder` (as a receiver offers it) decodes a stream of
    /// this profile: constrained baseline is the common subset of baseline, main and high;
    /// main is a subset of high; a baseline stream (FMO/ASO possible) needs a baseline or
    /// extended decoder. High 10, High 4:2:2 and High 4:4:4 Predictive decoders decode
    /// main and high streams too (H.264 Annex A.2.5–A.2.7): Chromium offers `f4001f` and no
    /// plain high.
    pub fn decodable_by(self, decoder: ProfileLevelId) -> bool {
        use H264Profile::*;
        let (Some(stream), Some(dec)) = (self.profile(), decoder.profile()) else {
            return false;
        };
        let above_high = matches!(dec, HighOther(0x6e | 0x7a | 0xf4));
        match stream {
            ConstrainedBaseline => true,
            Baseline => matches!(dec, Baseline | Extended),
            Main => matches!(dec, Main | High) || above_high,
            Extended => dec == Extended,
            ConstrainedHigh => matches!(dec, ConstrainedHigh | High) || above_high,
            High => dec == High || above_high,
            HighOther(idc) => dec == HighOther(idc),
        }
    }
}

impl fmt::Display for ProfileLevelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}{:02x}{:02x}",
            self.profile_idc, self.iop, self.level_idc
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ProfileLevelId {
        ProfileLevelId::parse(s).unwrap()
    }

    #[test]
    fn rtpmap_and_fmtp_lines() {
        assert_eq!(Codec::H264.rtpmap(102), "102 H264/90000");
        assert_eq!(Codec::Vp8.rtpmap(96), "96 VP8/90000");
        assert_eq!(Codec::Opus.rtpmap(111), "111 opus/48000/2");
        assert_eq!(
            h264_fmtp(102, p("42e01f")),
            "102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
        );
        assert_eq!(opus_fmtp(111), "111 minptime=10;useinbandfec=1");
        assert_eq!(Codec::from_name("H264"), Some(Codec::H264));
        assert_eq!(Codec::from_name("vp8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_name("OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_name("vp9"), None);
    }

    #[test]
    fn profiles_per_rfc_6184_table_5() {
        use H264Profile::*;
        for (s, want) in [
            ("42e01f", ConstrainedBaseline),
            ("42c01e", ConstrainedBaseline),
            ("42401f", ConstrainedBaseline),
            ("42001f", Baseline),
            ("42801f", Baseline),
            ("4d001f", Main),
            ("4d801f", ConstrainedBaseline),
            ("58c01f", ConstrainedBaseline),
            ("58801f", Baseline),
            ("58001f", Extended),
            ("640032", High),
            ("640c1f", ConstrainedHigh),
            ("f4001f", HighOther(0xf4)),
        ] {
            assert_eq!(p(s).profile(), Some(want), "{s}");
        }
        assert_eq!(p("42e11f").profile(), None, "reserved bit set");
        assert_eq!(p("99001f").profile(), None);
        assert_eq!(ProfileLevelId::parse("42e01"), None);
        assert_eq!(ProfileLevelId::parse("42e01g"), None);
        assert_eq!(ProfileLevelId::parse(" 42E01F "), Some(p("42e01f")));
        assert_eq!(p("42E01F").to_string(), "42e01f");
    }

    #[test]
    fn level_1b_and_lowering() {
        assert_eq!(
            p("42f00b").level(),
            9,
            "constraint_set3 with level_idc 11 is 1b"
        );
        assert_eq!(p("42e00b").level(), 11);
        assert_eq!(p("64000b").level(), 11, "high has no 1b spelling via set3");
    }

    #[test]
    fn decodability() {
        let cb = p("42e01f");
        let b = p("42001f");
        let m = p("4d001f");
        let h = p("64001f");
        assert!(cb.decodable_by(b) && cb.decodable_by(m) && cb.decodable_by(h));
        assert!(b.decodable_by(b) && !b.decodable_by(m) && !b.decodable_by(h));
        assert!(m.decodable_by(m) && m.decodable_by(h) && !m.decodable_by(cb));
        assert!(h.decodable_by(h) && !h.decodable_by(m));
        // High 4:4:4 Predictive, High 10 decoders take main and high, not baseline.
        let (h444, h10) = (p("f4001f"), p("6e001f"));
        assert!(h.decodable_by(h444) && m.decodable_by(h444) && h.decodable_by(h10));
        assert!(!b.decodable_by(h444) && !h444.decodable_by(h));
        assert!(!cb.decodable_by(p("42e11f")));
    }
}
