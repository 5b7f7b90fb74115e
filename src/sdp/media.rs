//! Audio and video sections: what a remote offer says about them, and what smolrtc writes
//! back.
//!
//! The payload types of a section are read into [`RemoteFormats`] tolerantly: surrounding
//! and repeated whitespace is ignored (pion writes `a=rtcp-fb:96 nack ` with a trailing
//! space), names compare case-insensitively, and lines that cannot be read are skipped, never
//! fatal. `a=extmap` lines are counted and left unanswered (smolrtc sends no header
//! extensions), so a browser sends none back.

use super::MAX_REMOTE_FORMATS;
use std::fmt;

/// The direction attribute of a media section (RFC 8866 §6.7); `sendrecv` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `a=sendrecv`.
    #[default]
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Reads an attribute name.
    pub fn from_attribute(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.as_str() == name)
    }

    /// Whether the side that wrote this direction sends media (`sendonly`, `sendrecv`).
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side that wrote this direction takes media (`recvonly`, `sendrecv`).
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `m=audio` or `m=video` section of a remote description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Index of the m-line in the description (its `sdpMLineIndex`).
    pub index: usize,
    /// `audio` or `video`.
    pub kind: String,
    /// `a=mid`, if any.
    pub mid: Option<String>,
    /// Port of the m-line: 0 is a rejected section (unless `bundle_only`).
    pub port: u16,
    /// Transport protocol, e.g. `UDP/TLS/RTP/SAVPF`.
    pub proto: String,
    /// The remote's direction.
    pub direction: Direction,
    /// `a=rtcp-mux`: RTP and RTCP share the transport (RFC 5761); smolrtc needs it.
    pub rtcp_mux: bool,
    /// `a=rtcp-rsize` (RFC 5506).
    pub rtcp_rsize: bool,
    /// `a=bundle-only` (RFC 8843): port 0 but in the BUNDLE group.
    pub bundle_only: bool,
    /// The payload types, in the m-line's order.
    pub formats: RemoteFormats,
    /// SSRCs the remote sends from (`a=ssrc:<ssrc> ...`), first appearance order.
    pub ssrcs: Vec<u32>,
    /// `a=msid` value (`<stream> <track>`), if any.
    pub msid: Option<String>,
    /// Number of `a=extmap` lines (ignored: smolrtc sends no header extensions).
    pub extmaps: usize,
}

impl RemoteMedia {
    /// True unless the section is rejected (port 0 without `a=bundle-only`).
    pub fn is_enabled(&self) -> bool {
        self.port != 0 || self.bundle_only
    }
}

/// A media section smolrtc writes: what it sends and how (one sendonly track).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// `audio` or `video`.
    pub kind: String,
    /// `a=mid`.
    pub mid: String,
    /// Our direction (`sendonly` for a source track, `inactive` when the remote sends only).
    pub direction: Direction,
    /// Payload types of the m-line, in order.
    pub payload_types: Vec<u8>,
    /// `a=rtpmap`, `a=fmtp`, `a=rtcp-fb` lines as `(name, value)`, in order.
    pub attributes: Vec<(String, String)>,
    /// The SSRC we send from.
    pub ssrc: u32,
    /// The RTX SSRC, when RTX is negotiated (written as `a=ssrc-group:FID`).
    pub rtx_ssrc: Option<u32>,
    /// `cname` of our `a=ssrc` lines (RFC 7022: random, per connection).
    pub cname: String,
    /// `a=msid` stream id (the stream's name) and track id.
    pub msid: (String, String),
}

/// One payload type of a remote media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFormat {
    /// The payload type (0..=127).
    pub pt: u8,
    /// The encoding name as written (`H264`, `VP8`, `rtx`, ...); empty without `a=rtpmap`.
    pub encoding: String,
    /// The clock rate of `a=rtpmap` (0 without one).
    pub clock_rate: u32,
    /// The channel count of `a=rtpmap`, if written.
    pub channels: Option<u16>,
    /// `a=fmtp` parameters in order, names lowercased, values trimmed.
    pub fmtp: Vec<(String, String)>,
    /// `a=rtcp-fb` values for this type (and `*`), whitespace collapsed: `nack`, `nack pli`,
    /// `ccm fir`, `transport-cc`, `goog-remb`.
    pub feedback: Vec<String>,
}

impl RemoteFormat {
    /// The value of fmtp parameter `name` (lowercase), if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.fmtp
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// This type is `encoding` (any case) at `clock_rate`.
    pub fn is(&self, encoding: &str, clock_rate: u32) -> bool {
        self.encoding.eq_ignore_ascii_case(encoding) && self.clock_rate == clock_rate
    }

    /// The offer lists this feedback (`nack`, `nack pli`, ...) for this type.
    pub fn has_feedback(&self, fb: &str) -> bool {
        self.feedback.iter().any(|f| f == fb)
    }

    /// `H264/90000 (pt 102, packetization-mode=1, profile-level-id=42e01f)` and the like.
    pub fn describe(&self) -> String {
        let mut s = if self.encoding.is_empty() {
            format!("payload type {}", self.pt)
        } else {
            format!("{}/{} (pt {}", self.encoding, self.clock_rate, self.pt)
        };
        if self.encoding.eq_ignore_ascii_case("H264") {
            s.push_str(&format!(
                ", packetization-mode={}, profile-level-id={}",
                self.param("packetization-mode").unwrap_or("0"),
                self.param("profile-level-id").unwrap_or("(none)")
            ));
        }
        if !self.encoding.is_empty() {
            s.push(')');
        }
        s
    }
}

/// The payload types of one remote media section, in the `m=` line's order (its preference).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteFormats {
    /// The payload types.
    pub formats: Vec<RemoteFormat>,
}

impl RemoteFormats {
    /// Reads the `m=` line's format list and the section's attributes, each as
    /// `(name, value)` of `a=name:value` (`("rtpmap", "96 VP8/90000")`). Unknown attributes,
    /// payload types not on the `m=` line and unreadable values are skipped.
    pub fn parse<'a, I>(fmt_list: &[&str], attributes: I) -> RemoteFormats
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut formats: Vec<RemoteFormat> = Vec::new();
        for f in fmt_list.iter().take(MAX_REMOTE_FORMATS) {
            if let Some(pt) = parse_pt(f) {
                if !formats.iter().any(|r| r.pt == pt) {
                    formats.push(RemoteFormat {
                        pt,
                        encoding: String::new(),
                        clock_rate: 0,
                        channels: None,
                        fmtp: Vec::new(),
                        feedback: Vec::new(),
                    });
                }
            }
        }
        let mut wildcard_fb: Vec<String> = Vec::new();
        for (name, value) in attributes {
            let name = name.trim();
            let value = value.trim();
            let (pt_str, rest) = match value.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((a, b)) => (a, b.trim()),
                None => (value, ""),
            };
            if name.eq_ignore_ascii_case("rtcp-fb") && pt_str == "*" {
                let fb = collapse(rest);
                if !fb.is_empty() && wildcard_fb.len() < 32 {
                    wildcard_fb.push(fb);
                }
                continue;
            }
            let Some(fmt) = parse_pt(pt_str).and_then(|pt| formats.iter_mut().find(|f| f.pt == pt))
            else {
                continue;
            };
            if name.eq_ignore_ascii_case("rtpmap") {
                let mut parts = rest.split('/').map(str::trim);
                let enc = parts.next().unwrap_or("");
                let rate = parts.next().and_then(|r| r.parse::<u32>().ok());
                let channels = parts.next().and_then(|c| c.parse::<u16>().ok());
                if let (false, Some(rate)) = (enc.is_empty(), rate) {
                    fmt.encoding = enc.chars().take(32).collect();
                    fmt.clock_rate = rate;
                    fmt.channels = channels;
                }
            } else if name.eq_ignore_ascii_case("fmtp") {
                for param in rest.split(';').take(32) {
                    let param = param.trim();
                    if param.is_empty() {
                        continue;
                    }
                    let (k, v) = param.split_once('=').unwrap_or((param, ""));
                    fmt.fmtp
                        .push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            } else if name.eq_ignore_ascii_case("rtcp-fb") {
                let fb = collapse(rest);
                if !fb.is_empty() && fmt.feedback.len() < 32 {
                    fmt.feedback.push(fb);
                }
            }
        }
        for fmt in &mut formats {
            for fb in &wildcard_fb {
                if !fmt.feedback.contains(fb) {
                    fmt.feedback.push(fb.clone());
                }
            }
        }
        RemoteFormats { formats }
    }

    /// The RTX type bound to `apt` by `a=fmtp:<rtx> apt=<apt>`, if any.
    pub fn find_rtx(&self, apt: u8, clock_rate: u32) -> Option<u8> {
        self.formats
            .iter()
            .find(|f| f.is("rtx", clock_rate) && f.param("apt").and_then(parse_pt) == Some(apt))
            .map(|f| f.pt)
    }
}

pub(crate) fn parse_pt(s: &str) -> Option<u8> {
    s.trim().parse::<u8>().ok().filter(|pt| *pt <= 127)
}

/// Lowercases and collapses runs of whitespace: `"nack  PLI "` → `"nack pli"`.
fn collapse(s: &str) -> String {
    s.split_ascii_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}
