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

/// What smolrtc needs from a remote description: the session level merged
/// with the data m-line (media-level values override session-level ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSession {
    /// ICE username fragment (`a=ice-ufrag`).
    pub ice_ufrag: String,
    /// ICE password (`a=ice-pwd`).
    pub ice_pwd: String,
    /// The remote is an ICE-lite agent (session `a=ice-lite`).
    pub ice_lite: bool,
    /// ICE options (`a=ice-options`), e.g. `["trickle"]`.
    pub ice_options: Vec<String>,
    /// Certificate fingerprints: those of the data m-line when it has any,
    /// else those of the session level. Never empty.
    pub fingerprints: Vec<Fingerprint>,
    /// DTLS role (`a=setup`) as written; `None` when absent. Absent means
    /// actpass in an offer and active in an answer: see
    /// [`RemoteSession::setup_or_default`].
    pub setup: Option<Setup>,
    /// `a=mid` of the data m-line.
    pub mid: Option<String>,
    /// The remote's SCTP port: `a=sctp-port`, or the legacy sctpmap/format
    /// number; 5000 when absent.
    pub sctp_port: u16,
    /// `a=max-message-size`; `Some(0)` means the remote accepts messages of
    /// any size (as rawrtc writes it). `None` when absent (RFC 8841 says to
    /// assume 64 KiB then).
    pub max_message_size: Option<u64>,
    /// The data m-line uses the legacy `DTLS/SCTP <port>` + `a=sctpmap` form.
    pub legacy: bool,
    /// Candidates of the data m-line as written after `a=`
    /// (`"candidate:..."`), in order.
    pub candidates: Vec<String>,
    /// `a=end-of-candidates` was present (data m-line or session level).
    pub end_of_candidates: bool,
    /// Every m-line, in order.
    pub media: Vec<MediaSection>,
    /// Index of the data m-line in [`RemoteSession::media`].
    pub data_index: usize,
    /// Mids of the BUNDLE group (`a=group:BUNDLE`) that holds the data mid,
    /// else of the first BUNDLE group; empty when there is none.
    pub bundle: Vec<String>,
}

impl RemoteSession {
    /// The data m-line's [`MediaSection`].
    pub fn data_section(&self) -> &MediaSection {
        &self.media[self.data_index]
    }

    /// The DTLS role with the RFC 8842 default applied: `actpass` when an
    /// offer has no `a=setup`, `active` for an answer (or pranswer).
    pub fn setup_or_default(&self, kind: SdpType) -> Setup {
        setup_or_default(self.setup, kind)
    }
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

/// A whole remote description: the transport, the data section if any, and every audio and
/// video section ([`super::parse_description`]).
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
    /// enabled audio/video section).
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
    /// The data-channel view of this description ([`super::parse`]'s result), when it has
    /// a data section.
    pub fn to_session(&self) -> Option<RemoteSession> {
        self.data.clone().map(|data| self.session(data))
    }

    /// The transport alone, for a description without a data section (media only): the
    /// data-channel fields at their defaults, the transport section's mid.
    pub fn transport_session(&self) -> RemoteSession {
        self.session(DataSection {
            index: 0,
            mid: self.transport_mid.clone(),
            sctp_port: super::DEFAULT_SCTP_PORT,
            max_message_size: None,
            legacy: false,
        })
    }

    fn session(&self, data: DataSection) -> RemoteSession {
        RemoteSession {
            ice_ufrag: self.ice_ufrag.clone(),
            ice_pwd: self.ice_pwd.clone(),
            ice_lite: self.ice_lite,
            ice_options: self.ice_options.clone(),
            fingerprints: self.fingerprints.clone(),
            setup: self.setup,
            mid: data.mid,
            sctp_port: data.sctp_port,
            max_message_size: data.max_message_size,
            legacy: data.legacy,
            candidates: self.candidates.clone(),
            end_of_candidates: self.end_of_candidates,
            media: self.sections.clone(),
            data_index: data.index,
            bundle: self.bundle.clone(),
        }
    }

    /// The DTLS role with the RFC 8842 default applied (see
    /// [`RemoteSession::setup_or_default`]).
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
