//! Values read from, and written to, session descriptions.

use std::fmt;
use std::str::FromStr;

use super::json::SdpType;

/// A certificate fingerprint (`a=fingerprint`, RFC 8122).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Hash function name, lowercased, e.g. `"sha-256"`.
    pub algorithm: String,
    /// The digest bytes.
    pub value: Vec<u8>,
}

impl Fingerprint {
    /// A SHA-256 fingerprint of the given digest (32 bytes are expected).
    pub fn sha256(value: Vec<u8>) -> Self {
        Fingerprint {
            algorithm: "sha-256".to_owned(),
            value,
        }
    }

    /// The digest as uppercase colon-separated hex, e.g. `"AB:0C:..."`.
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(self.value.len() * 3);
        for (i, b) in self.value.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            out.push_str(&format!("{b:02X}"));
        }
        out
    }

    /// The value of an `a=fingerprint:` attribute, e.g. `"sha-256 AB:0C:..."`.
    pub fn to_sdp_value(&self) -> String {
        format!("{} {}", self.algorithm, self.hex())
    }

    /// Digest length in bytes for the hash functions of RFC 8122 (and
    /// sha-224), `None` for others.
    pub fn expected_len(algorithm: &str) -> Option<usize> {
        match algorithm {
            "md2" | "md5" => Some(16),
            "sha-1" => Some(20),
            "sha-224" => Some(28),
            "sha-256" => Some(32),
            "sha-384" => Some(48),
            "sha-512" => Some(64),
            _ => None,
        }
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sdp_value())
    }
}

/// The DTLS role attribute `a=setup` (RFC 8842, RFC 4145).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Setup {
    /// `active`: this side opens the DTLS connection (is the DTLS client).
    Active,
    /// `passive`: this side waits for the DTLS ClientHello (is the server).
    Passive,
    /// `actpass`: either; the answerer chooses. Offers use this.
    ActPass,
    /// `holdconn`: do not connect yet.
    HoldConn,
}

impl Setup {
    /// The attribute value, e.g. `"actpass"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Setup {
    type Err = ();

    /// Reads an attribute value, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.to_ascii_lowercase();
        match s.as_str() {
            "active" => Ok(Setup::Active),
            "passive" => Ok(Setup::Passive),
            "actpass" => Ok(Setup::ActPass),
            "holdconn" => Ok(Setup::HoldConn),
            _ => Err(()),
        }
    }
}

/// One m-line of a remote description, in order of appearance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSection {
    /// Media type: `audio`, `video`, `application`, ...
    pub kind: String,
    /// Port from the m-line (0 means rejected/disabled).
    pub port: u16,
    /// Transport protocol, e.g. `UDP/TLS/RTP/SAVPF` or `UDP/DTLS/SCTP`.
    pub proto: String,
    /// Formats (payload types, `webrtc-datachannel`, or the legacy SCTP port).
    pub fmts: Vec<String>,
    /// `a=mid` of the section, if any.
    pub mid: Option<String>,
    /// True for the one section smolrtc uses as its data channel section
    /// (the first data m-line); false for every other section, including
    /// any later data m-line.
    pub is_data: bool,
}

/// What smolrtc puts in its own offer or answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSession {
    /// `o=` session id (should be random, below 2^63).
    pub session_id: u64,
    /// `o=` session version; increase it on each new description.
    pub session_version: u64,
    /// Local ICE username fragment (4..256 ice-chars).
    pub ice_ufrag: String,
    /// Local ICE password (22..256 ice-chars).
    pub ice_pwd: String,
    /// Fingerprint of the local DTLS certificate (sha-256).
    pub fingerprint: Fingerprint,
    /// DTLS role written in answers. Offers always say `actpass`.
    pub setup: Setup,
    /// Mid of the data m-line in offers, and in answers to offers that have
    /// no mid.
    pub mid: String,
    /// Local SCTP port (normally 5000).
    pub sctp_port: u16,
    /// Largest message we accept (`a=max-message-size`; 0 = unlimited).
    pub max_message_size: u64,
    /// Local candidates as `"candidate:..."` values (an `a=` prefix is
    /// dropped, a missing `candidate:` prefix is added).
    pub candidates: Vec<String>,
    /// Write `a=end-of-candidates` (gathering is complete).
    pub end_of_candidates: bool,
    /// Write `a=ice-options:trickle`.
    pub ice_options_trickle: bool,
}

/// The data m-line of a [`RemoteDescription`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSection {
    /// Index of the m-line in [`RemoteDescription::sections`].
    pub index: usize,
    /// Its `a=mid`.
    pub mid: Option<String>,
    /// The remote's SCTP port (`a=sctp-port`, or the legacy sctpmap/format number; 5000 when
    /// absent).
    pub sctp_port: u16,
    /// `a=max-message-size` (`Some(0)`: any size).
    pub max_message_size: Option<u64>,
    /// The legacy `DTLS/SCTP <port>` + `a=sctpmap` form.
    pub legacy: bool,
}

/// A remote description as smolrtc reads it: the transport (ICE credentials, fingerprints,
/// `a=setup`, candidates: the data section's, else the first bundled audio/video one's,
/// merged with the session level), the data section if any, and every audio and video
/// section. [`super::parse`] (data channels) and [`super::parse_description`] (media too)
/// both return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteDescription {
    /// ICE username fragment of the transport section (or the session).
    pub ice_ufrag: String,
    /// ICE password.
    pub ice_pwd: String,
    /// Session `a=ice-lite`.
    pub ice_lite: bool,
    /// ICE options.
    pub ice_options: Vec<String>,
    /// Certificate fingerprints (never empty).
    pub fingerprints: Vec<Fingerprint>,
    /// `a=setup` as written.
    pub setup: Option<Setup>,
    /// Mid of the section the transport was read from (the data section, else the first
    /// enabled audio/video section); an answer to it keeps this mid for its data section.
    pub transport_mid: Option<String>,
    /// Candidates of the transport section.
    pub candidates: Vec<String>,
    /// `a=end-of-candidates` (transport section or session).
    pub end_of_candidates: bool,
    /// Every m-line, in order.
    pub sections: Vec<MediaSection>,
    /// The BUNDLE group holding the transport section's mid (else the first one).
    pub bundle: Vec<String>,
    /// The first data m-line, if any.
    pub data: Option<DataSection>,
    /// Every `m=audio` and `m=video` section, in order.
    pub media: Vec<super::media::RemoteMedia>,
}

impl RemoteDescription {
    /// The data m-line, when there is one (always after [`super::parse`]).
    pub fn data_section(&self) -> Option<&MediaSection> {
        self.data.as_ref().map(|d| &self.sections[d.index])
    }

    /// The DTLS role with the RFC 8842 default applied: `actpass` when an offer has no
    /// `a=setup`, `active` for an answer (or pranswer).
    pub fn setup_or_default(&self, kind: SdpType) -> Setup {
        setup_or_default(self.setup, kind)
    }
}

/// `setup`, or RFC 8842's default when absent: `actpass` in an offer, `active` in an
/// answer (or pranswer).
fn setup_or_default(setup: Option<Setup>, kind: SdpType) -> Setup {
    setup.unwrap_or(match kind {
        SdpType::Offer | SdpType::Rollback => Setup::ActPass,
        SdpType::Answer | SdpType::Pranswer => Setup::Active,
    })
}
