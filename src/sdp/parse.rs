//! Reading a remote session description, line by line.
//!
//! rtc-sdp's parser does not say which line failed, so this module does its
//! own pass: every error names the 1-based line and quotes it.

use std::net::IpAddr;
use std::str::FromStr;

use super::error::{quote, SdpError};
use super::media::{Direction, RemoteFormats, RemoteMedia};
use super::types::{DataSection, Fingerprint, MediaSection, RemoteDescription, Setup};
use super::{DATACHANNEL_FMT, DEFAULT_SCTP_PORT, MAX_CANDIDATES, MAX_SDP_BYTES};

/// One non-blank SDP line: `<kind>=<value>`.
#[derive(Clone, Copy, Debug)]
struct Line<'a> {
    /// 1-based line number in the input.
    no: usize,
    /// The whole line without trailing whitespace (and `\r`).
    raw: &'a str,
    /// The type letter.
    kind: u8,
    /// Everything after `=`.
    value: &'a str,
}

impl<'a> Line<'a> {
    fn err(&self, problem: impl Into<String>) -> SdpError {
        SdpError::line(self.no, self.raw, problem)
    }

    /// For `a=` lines: the attribute name and its value (after the first
    /// `:`), if any.
    fn attribute(&self) -> Option<(&'a str, Option<&'a str>)> {
        if self.kind != b'a' {
            return None;
        }
        Some(match self.value.split_once(':') {
            Some((name, value)) => (name, Some(value)),
            None => (self.value, None),
        })
    }
}

/// Splits `text` into lines (CRLF or LF; trailing whitespace dropped; blank
/// lines skipped) and checks that each has the shape `<letter>=<value>`.
fn split_lines(text: &str) -> Result<Vec<Line<'_>>, SdpError> {
    let mut lines = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let raw = raw.trim_end();
        if raw.is_empty() {
            continue;
        }
        let bytes = raw.as_bytes();
        if bytes.len() < 2 || !bytes[0].is_ascii_lowercase() || bytes[1] != b'=' {
            return Err(SdpError::line(i + 1, raw, "expected <type>=<value>"));
        }
        lines.push(Line {
            no: i + 1,
            raw,
            kind: bytes[0],
            // Index 2 is a char boundary: bytes 0 and 1 are ASCII.
            value: &raw[2..],
        });
    }
    Ok(lines)
}

fn check_size(text: &str) -> Result<(), SdpError> {
    if text.len() > MAX_SDP_BYTES {
        return Err(SdpError::TooLarge {
            len: text.len(),
            max: MAX_SDP_BYTES,
        });
    }
    Ok(())
}

/// Parses a decimal number made of ASCII digits only (no sign, no spaces).
fn parse_num<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// RFC 8839 `ice-char`: ALPHA / DIGIT / "+" / "/".
fn is_ice_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

fn check_ice_string(what: &str, value: &str, min: usize, max: usize) -> Result<(), String> {
    if !value.bytes().all(is_ice_char) {
        return Err(format!(
            "{what} may hold only letters, digits, '+' and '/' (RFC 8839 ice-char)"
        ));
    }
    if value.len() < min || value.len() > max {
        return Err(format!(
            "{what} must be {min} to {max} characters long, not {}",
            value.len()
        ));
    }
    Ok(())
}

/// Reads the value of `a=fingerprint:` (`<hash-function> <AA:BB:..>`).
fn parse_fingerprint(value: &str) -> Result<Fingerprint, String> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(algorithm), Some(hex), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected a=fingerprint:<hash-function> <colon-separated hex>".into());
    };
    let algorithm = algorithm.to_ascii_lowercase();
    let mut bytes = Vec::new();
    for part in hex.split(':') {
        let ok = part.len() == 2 && part.bytes().all(|b| b.is_ascii_hexdigit());
        let byte = if ok {
            u8::from_str_radix(part, 16).ok()
        } else {
            None
        };
        match byte {
            Some(b) => bytes.push(b),
            None => return Err("fingerprint is not colon-separated hex".into()),
        }
    }
    if let Some(expected) = Fingerprint::expected_len(&algorithm) {
        if bytes.len() != expected {
            return Err(format!(
                "{algorithm} fingerprint has {} bytes, expected {expected}",
                bytes.len()
            ));
        }
    }
    Ok(Fingerprint {
        algorithm,
        value: bytes,
    })
}

/// A host name (e.g. an mDNS `<uuid>.local`) or an IP literal.
fn is_address(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

/// Checks an `a=candidate` value (`candidate:<foundation> <component>
/// <transport> <priority> <address> <port> typ <type> [raddr <a>] [rport
/// <p>] [tcptype <t>] *(<name> <value>)`), RFC 8839 section 5.1.
/// Returns the problem in words.
pub(crate) fn check_candidate_value(value: &str) -> Result<(), String> {
    let Some(rest) = value.strip_prefix("candidate:") else {
        return Err("expected candidate:<foundation> ...".into());
    };
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    if f.len() < 8 {
        return Err(
            "candidate needs <foundation> <component> <transport> <priority> <address> <port> typ <type>"
                .into(),
        );
    }
    if f[0].len() > 32 || !f[0].bytes().all(is_ice_char) {
        return Err(format!("bad candidate foundation `{}`", quote(f[0])));
    }
    match parse_num::<u16>(f[1]) {
        Some(1..=256) => {}
        _ => return Err(format!("bad candidate component id `{}`", quote(f[1]))),
    }
    if !is_token(f[2]) {
        return Err(format!("bad candidate transport `{}`", quote(f[2])));
    }
    if parse_num::<u32>(f[3]).is_none() {
        return Err(format!(
            "bad candidate priority `{}` (expected 0..4294967295)",
            quote(f[3])
        ));
    }
    if !is_address(f[4]) {
        return Err(format!("bad candidate address `{}`", quote(f[4])));
    }
    if parse_num::<u16>(f[5]).is_none() {
        return Err(format!(
            "bad candidate port `{}` (expected 0..65535)",
            quote(f[5])
        ));
    }
    if f[6] != "typ" {
        return Err(format!(
            "expected `typ` after the candidate port, found `{}`",
            quote(f[6])
        ));
    }
    if !["host", "srflx", "prflx", "relay"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(f[7]))
    {
        return Err(format!(
            "unknown candidate type `{}` (expected host, srflx, prflx or relay)",
            quote(f[7])
        ));
    }
    let mut ext = f[8..].chunks(2);
    for pair in ext.by_ref() {
        let [name, value] = pair else {
            return Err(format!(
                "candidate extension `{}` has no value",
                quote(pair[0])
            ));
        };
        let ok = match *name {
            "raddr" => is_address(value),
            "rport" => parse_num::<u16>(value).is_some(),
            "tcptype" => ["active", "passive", "so"].contains(value),
            _ => true,
        };
        if !ok {
            return Err(format!("bad candidate {name} `{}`", quote(value)));
        }
    }
    Ok(())
}

/// Checks a trickled candidate (`candidate:...`, or `a=candidate:...`) with
/// the same rules as `a=candidate` lines in [`parse`]: RFC 8839 syntax,
/// IPv4, IPv6 or host-name (mDNS) addresses, `raddr`/`rport`/`tcptype`
/// and any further `<name> <value>` extensions.
pub fn check_candidate(candidate: &str) -> Result<(), SdpError> {
    let c = candidate.trim();
    let c = c.strip_prefix("a=").unwrap_or(c);
    check_candidate_value(c).map_err(|problem| SdpError::BadCandidate {
        candidate: quote(candidate),
        problem,
    })
}

/// Reads an m= line into a [`MediaSection`] (mid and is_data not yet set).
fn parse_m_line(line: &Line<'_>) -> Result<MediaSection, SdpError> {
    let f: Vec<&str> = line.value.split_ascii_whitespace().collect();
    if f.len() < 4 {
        return Err(line.err("m= line needs <media> <port> <proto> <fmt> ..."));
    }
    if !f[0]
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || !f[0].as_bytes()[0].is_ascii_lowercase()
    {
        return Err(line.err(format!("unknown media type `{}`", quote(f[0]))));
    }
    // <port> or <port>/<number of ports>
    let (port, count) = match f[1].split_once('/') {
        Some((p, n)) => (p, Some(n)),
        None => (f[1], None),
    };
    let port = parse_num::<u16>(port)
        .filter(|_| count.is_none_or(|n| parse_num::<u16>(n).is_some()))
        .ok_or_else(|| {
            line.err(format!(
                "bad port `{}` in m= line (expected 0..65535)",
                quote(f[1])
            ))
        })?;
    if !f[2]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
    {
        return Err(line.err(format!("bad transport protocol `{}`", quote(f[2]))));
    }
    Ok(MediaSection {
        kind: f[0].to_owned(),
        port,
        proto: f[2].to_owned(),
        fmts: f[3..].iter().map(|s| (*s).to_owned()).collect(),
        mid: None,
        is_data: false,
    })
}

/// Which data m-line form a section uses: `Some(false)` RFC 8841,
/// `Some(true)` legacy, `None` not a data section.
fn data_form(m: &MediaSection, attrs: &[Line<'_>]) -> Option<bool> {
    if m.kind != "application" {
        return None;
    }
    let proto = m.proto.as_str();
    if (proto.eq_ignore_ascii_case("UDP/DTLS/SCTP") || proto.eq_ignore_ascii_case("TCP/DTLS/SCTP"))
        && m.fmts.iter().any(|f| f == DATACHANNEL_FMT)
    {
        return Some(false);
    }
    if proto.eq_ignore_ascii_case("DTLS/SCTP") {
        let has_sctpmap = attrs.iter().any(|l| match l.attribute() {
            Some(("sctpmap", Some(v))) => v
                .split_ascii_whitespace()
                .nth(1)
                .is_some_and(|p| p.eq_ignore_ascii_case(DATACHANNEL_FMT)),
            _ => false,
        });
        if has_sctpmap {
            return Some(true);
        }
    }
    None
}

/// Attributes that may appear at session level or in the data m-line.
#[derive(Default)]
struct Level {
    ufrag: Option<String>,
    pwd: Option<String>,
    ice_options: Option<Vec<String>>,
    fingerprints: Vec<Fingerprint>,
    setup: Option<Setup>,
    end_of_candidates: bool,
}

fn once<T>(slot: &mut Option<T>, line: &Line<'_>, name: &str, value: T) -> Result<(), SdpError> {
    if slot.is_some() {
        return Err(line.err(format!("a={name} appears twice")));
    }
    *slot = Some(value);
    Ok(())
}

fn require<'a>(line: &Line<'a>, name: &str, value: Option<&'a str>) -> Result<&'a str, SdpError> {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(line.err(format!("a={name} needs a value"))),
    }
}

impl Level {
    /// Handles the attributes shared by both levels; returns false for
    /// others.
    fn apply(
        &mut self,
        line: &Line<'_>,
        name: &str,
        value: Option<&str>,
    ) -> Result<bool, SdpError> {
        match name {
            "ice-ufrag" => {
                let v = require(line, name, value)?;
                check_ice_string("ice-ufrag", v, 4, 256).map_err(|p| line.err(p))?;
                once(&mut self.ufrag, line, name, v.to_owned())?;
            }
            "ice-pwd" => {
                let v = require(line, name, value)?;
                check_ice_string("ice-pwd", v, 22, 256).map_err(|p| line.err(p))?;
                once(&mut self.pwd, line, name, v.to_owned())?;
            }
            "ice-options" => {
                let v = require(line, name, value)?;
                let options = self.ice_options.get_or_insert_with(Vec::new);
                for opt in v.split_ascii_whitespace() {
                    if !is_token(opt) {
                        return Err(line.err(format!("bad ICE option `{}`", quote(opt))));
                    }
                    if !options.iter().any(|o| o == opt) {
                        options.push(opt.to_owned());
                    }
                }
            }
            "fingerprint" => {
                let v = value.unwrap_or("");
                let fp = parse_fingerprint(v).map_err(|p| line.err(p))?;
                self.fingerprints.push(fp);
            }
            "setup" => {
                let v = require(line, name, value)?;
                let setup = v.parse::<Setup>().map_err(|()| {
                    line.err(format!(
                        "bad a=setup value `{}` (expected active, passive, actpass or holdconn)",
                        quote(v)
                    ))
                })?;
                once(&mut self.setup, line, name, setup)?;
            }
            "end-of-candidates" => self.end_of_candidates = true,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A mid (RFC 5888 identification-tag): visible ASCII, no spaces, 1..256.
fn check_mid(line: &Line<'_>, value: Option<&str>) -> Result<String, SdpError> {
    let v = require(line, "mid", value)?;
    if v.len() > 256 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(line.err("a=mid must be 1 to 256 visible ASCII characters"));
    }
    Ok(v.to_owned())
}

/// Parses a remote session description (offer or answer) for a data
/// channel.
///
/// Accepts CRLF or bare LF line endings, trailing whitespace and blank
/// lines. Reads the session level and the first data m-line
/// (`m=application` with `UDP/DTLS/SCTP` or `TCP/DTLS/SCTP` and format
/// `webrtc-datachannel`, or legacy `DTLS/SCTP <port>` with
/// `a=sctpmap:<port> webrtc-datachannel <streams>`). Other m-lines are
/// listed in [`RemoteDescription::sections`] but their attributes are not read
/// (apart from `a=mid`); [`parse_description`] reads audio and video too.
///
/// # Errors
///
/// [`SdpError::Empty`], [`SdpError::TooLarge`] (over 64 KiB),
/// [`SdpError::TooManyCandidates`] (over 64 in the data m-line),
/// [`SdpError::Line`] for any ill-formed line (line shape, `v=0` first,
/// m= line, ICE credentials, fingerprint, setup, mid, sctp-port,
/// max-message-size, sctpmap, candidate), [`SdpError::NoDataSection`],
/// and [`SdpError::Missing`] when ICE credentials or fingerprints are
/// absent.
pub fn parse(sdp: &str) -> Result<RemoteDescription, SdpError> {
    parse_sections(sdp, true)
}

/// Parses a remote description with audio and video sections as well as (or instead of)
/// a data section: a WHEP player's recvonly offer, or a browser's offer with a camera and a
/// data channel.
///
/// The transport (ICE credentials, fingerprints, `a=setup`, candidates) is read, strictly as
/// in [`parse`], from the data m-line when there is one, else from the first audio or video
/// section that is not rejected (the BUNDLE group's first mid preferred): one transport
/// carries every bundled section. Each audio and video section is read tolerantly into a
/// [`RemoteMedia`] (codecs, `a=rtcp-fb`, direction, mid, `a=rtcp-mux`, `a=ssrc`, `a=msid`;
/// `a=extmap` counted and ignored); a value it cannot read is skipped, never an error.
///
/// # Errors
///
/// As [`parse`], but [`SdpError::NoMediaSection`] instead of [`SdpError::NoDataSection`]
/// when there is neither a data section nor an audio or video section that is not rejected.
pub fn parse_description(sdp: &str) -> Result<RemoteDescription, SdpError> {
    parse_sections(sdp, false)
}

/// The lines of one m-section.
struct Section<'a> {
    m_line: Line<'a>,
    media: MediaSection,
    attrs: Vec<Line<'a>>,
}

/// Step 1: size, emptiness, line shapes, `v=0` first.
fn read_lines(sdp: &str) -> Result<Vec<Line<'_>>, SdpError> {
    check_size(sdp)?;
    if sdp.trim().is_empty() {
        return Err(SdpError::Empty);
    }
    let lines = split_lines(sdp)?;
    let first = &lines[0];
    if first.kind != b'v' || first.value != "0" {
        return Err(SdpError::Line {
            line: first.no,
            text: String::new(),
            problem: "SDP must start with v=0".into(),
        });
    }
    Ok(lines)
}

/// Step 2: the session level's lines and the m-sections (m= lines checked).
fn split_sections<'a>(lines: &[Line<'a>]) -> Result<(Vec<Line<'a>>, Vec<Section<'a>>), SdpError> {
    let mut session: Vec<Line<'_>> = Vec::new();
    let mut sections: Vec<Section<'_>> = Vec::new();
    for line in &lines[1..] {
        match line.kind {
            b'v' => return Err(line.err("v= may appear only once, on the first line")),
            b'm' => sections.push(Section {
                m_line: *line,
                media: parse_m_line(line)?,
                attrs: Vec::new(),
            }),
            _ => match sections.last_mut() {
                Some(s) => s.attrs.push(*line),
                None => session.push(*line),
            },
        }
    }
    Ok((session, sections))
}

/// Step 3: every section's mid; the first data section and its form (legacy or not).
fn read_mids(sections: &mut [Section<'_>]) -> Result<Option<(usize, bool)>, SdpError> {
    let mut data: Option<(usize, bool)> = None;
    for (i, s) in sections.iter_mut().enumerate() {
        for line in &s.attrs {
            if let Some(("mid", value)) = line.attribute() {
                let mid = check_mid(line, value)?;
                once(&mut s.media.mid, line, "mid", mid)?;
            }
        }
        if data.is_none() {
            if let Some(legacy) = data_form(&s.media, &s.attrs) {
                s.media.is_data = true;
                data = Some((i, legacy));
            }
        }
    }
    Ok(data)
}

/// What the session level says.
#[derive(Default)]
struct SessionLevel {
    level: Level,
    ice_lite: bool,
    groups: Vec<Vec<String>>,
}

/// Step 4: the session level's attributes (ICE, DTLS, BUNDLE groups).
fn read_session_level(session: &[Line<'_>]) -> Result<SessionLevel, SdpError> {
    let mut s = SessionLevel::default();
    for line in session {
        match line.kind {
            b'o' if line.value.split_ascii_whitespace().count() != 6 => {
                return Err(line.err(
                    "o= line needs <username> <sess-id> <sess-version> <nettype> <addrtype> <address>",
                ));
            }
            b'a' => {
                let Some((name, value)) = line.attribute() else {
                    continue;
                };
                if s.level.apply(line, name, value)? {
                    continue;
                }
                match name {
                    "ice-lite" => s.ice_lite = true,
                    "group" => {
                        let mut f = value.unwrap_or("").split_ascii_whitespace();
                        if f.next().is_some_and(|g| g.eq_ignore_ascii_case("BUNDLE")) {
                            s.groups.push(f.map(str::to_owned).collect());
                        }
                    }
                    _ => log::trace!("sdp: ignoring session attribute on line {}", line.no),
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

/// What the transport section (the data m-line, or the first audio/video one) says.
#[derive(Default)]
struct TransportSection {
    level: Level,
    candidates: Vec<String>,
    bundle_only: bool,
    sctp_port: Option<u16>,
    legacy_port: Option<u16>,
    max_message_size: Option<u64>,
}

/// Step 5: the transport section's attributes, strictly (a bad one is an error).
fn read_transport_section(
    section: &Section<'_>,
    legacy: bool,
) -> Result<TransportSection, SdpError> {
    let mut t = TransportSection::default();
    for line in &section.attrs {
        let Some((name, value)) = line.attribute() else {
            continue;
        };
        if t.level.apply(line, name, value)? {
            continue;
        }
        match name {
            "candidate" => push_candidate(&mut t.candidates, line)?,
            "sctp-port" => {
                let v = value.unwrap_or("").trim();
                let port = parse_num::<u16>(v).filter(|p| *p != 0).ok_or_else(|| {
                    line.err(format!(
                        "bad a=sctp-port value `{}` (expected 1..65535)",
                        quote(v)
                    ))
                })?;
                once(&mut t.sctp_port, line, name, port)?;
            }
            "max-message-size" => {
                let v = value.unwrap_or("").trim();
                let size = parse_num::<u64>(v).ok_or_else(|| {
                    line.err(format!(
                        "bad a=max-message-size value `{}` (expected a decimal number, 0 for unlimited)",
                        quote(v)
                    ))
                })?;
                once(&mut t.max_message_size, line, name, size)?;
            }
            "sctpmap" if legacy => {
                if let Some(port) = read_sctpmap(line, value, &section.media)? {
                    t.legacy_port.get_or_insert(port);
                }
            }
            "bundle-only" => t.bundle_only = true,
            _ => {}
        }
    }
    Ok(t)
}

/// Checks an `a=candidate` line and adds it, at most [`MAX_CANDIDATES`].
fn push_candidate(candidates: &mut Vec<String>, line: &Line<'_>) -> Result<(), SdpError> {
    if candidates.len() >= MAX_CANDIDATES {
        return Err(SdpError::TooManyCandidates {
            line: line.no,
            max: MAX_CANDIDATES,
        });
    }
    check_candidate_value(line.value).map_err(|p| line.err(p))?;
    candidates.push(line.value.to_owned());
    Ok(())
}

/// The candidates (and end-of-candidates) of the BUNDLE group's tagged section, where
/// RFC 8843 puts them, for a transport section that has none (smolrtc's own answers).
fn tagged_candidates(sections: &[Section<'_>], bundle: &[String], t: &mut TransportSection) {
    let tagged = bundle
        .first()
        .and_then(|mid| sections.iter().find(|s| s.media.mid.as_ref() == Some(mid)));
    for line in tagged.map_or(&[][..], |s| &s.attrs[..]) {
        match line.attribute() {
            // Read as tolerantly as the rest of a non-transport section.
            Some(("candidate", _))
                if t.candidates.len() < MAX_CANDIDATES
                    && check_candidate_value(line.value).is_ok() =>
            {
                t.candidates.push(line.value.to_owned());
            }
            Some(("end-of-candidates", _)) => t.level.end_of_candidates = true,
            _ => {}
        }
    }
}

/// `a=sctpmap:<port> webrtc-datachannel <streams>`: the port when it names a data channel.
fn read_sctpmap(
    line: &Line<'_>,
    value: Option<&str>,
    media: &MediaSection,
) -> Result<Option<u16>, SdpError> {
    let f: Vec<&str> = value.unwrap_or("").split_ascii_whitespace().collect();
    let Some(port) = f.first().and_then(|p| parse_num::<u16>(p)) else {
        return Err(line.err("expected a=sctpmap:<port> webrtc-datachannel <streams>"));
    };
    if f.get(2).is_some_and(|s| parse_num::<u32>(s).is_none()) {
        return Err(line.err("bad a=sctpmap stream count"));
    }
    if !f
        .get(1)
        .is_some_and(|p| p.eq_ignore_ascii_case(DATACHANNEL_FMT))
    {
        return Ok(None);
    }
    if !media.fmts.iter().any(|f| f == &port.to_string()) {
        return Err(line.err(format!(
            "a=sctpmap port {port} is not a format of the m= line"
        )));
    }
    Ok(Some(port))
}

/// Step 6: an audio or video section, tolerantly (unreadable values are skipped).
fn read_media_section(index: usize, section: &Section<'_>) -> RemoteMedia {
    let m = &section.media;
    let mut media = RemoteMedia {
        index,
        kind: m.kind.clone(),
        mid: m.mid.clone(),
        port: m.port,
        proto: m.proto.clone(),
        direction: Direction::default(),
        rtcp_mux: false,
        rtcp_rsize: false,
        bundle_only: false,
        formats: RemoteFormats::default(),
        ssrcs: Vec::new(),
        msid: None,
        extmaps: 0,
    };
    let mut codec_lines: Vec<(&str, &str)> = Vec::new();
    for line in &section.attrs {
        let Some((name, value)) = line.attribute() else {
            continue;
        };
        let value = value.unwrap_or("").trim();
        if let Some(d) = Direction::from_attribute(name) {
            media.direction = d;
            continue;
        }
        match name {
            "rtpmap" | "fmtp" | "rtcp-fb" => codec_lines.push((name, value)),
            "rtcp-mux" => media.rtcp_mux = true,
            "rtcp-rsize" => media.rtcp_rsize = true,
            "bundle-only" => media.bundle_only = true,
            "extmap" => media.extmaps += 1,
            "msid" if !value.is_empty() => media.msid = Some(value.chars().take(256).collect()),
            "ssrc" => {
                let ssrc = value
                    .split_ascii_whitespace()
                    .next()
                    .and_then(parse_num::<u32>);
                if let Some(ssrc) = ssrc {
                    if !media.ssrcs.contains(&ssrc) && media.ssrcs.len() < 16 {
                        media.ssrcs.push(ssrc);
                    }
                }
            }
            _ => {}
        }
    }
    let fmts: Vec<&str> = m.fmts.iter().map(String::as_str).collect();
    media.formats = RemoteFormats::parse(&fmts, codec_lines);
    media
}

/// Which section carries the transport: the data section, else the first enabled audio or
/// video section, the BUNDLE group's first mid preferred.
fn transport_index(
    sections: &[Section<'_>],
    data: Option<usize>,
    groups: &[Vec<String>],
) -> Option<usize> {
    if data.is_some() {
        return data;
    }
    let enabled = |s: &Section<'_>| {
        matches!(s.media.kind.as_str(), "audio" | "video")
            && (s.media.port != 0
                || s.attrs
                    .iter()
                    .any(|l| matches!(l.attribute(), Some(("bundle-only", _)))))
    };
    let tagged = groups.iter().filter_map(|g| g.first()).find_map(|mid| {
        sections
            .iter()
            .position(|s| enabled(s) && s.media.mid.as_ref() == Some(mid))
    });
    tagged.or_else(|| sections.iter().position(enabled))
}

/// The ICE credentials and the certificate fingerprints: the transport section's (`which`
/// m-line's), else the session's.
fn credentials(
    t: &mut Level,
    sess: &mut Level,
    which: &str,
) -> Result<(String, String, Vec<Fingerprint>), SdpError> {
    let ice_ufrag = t.ufrag.take().or(sess.ufrag.take()).ok_or_else(|| {
        SdpError::Missing(format!(
            "a=ice-ufrag (in the {which} m-line or the session)"
        ))
    })?;
    let ice_pwd = t.pwd.take().or(sess.pwd.take()).ok_or_else(|| {
        SdpError::Missing(format!("a=ice-pwd (in the {which} m-line or the session)"))
    })?;
    let fingerprints = if t.fingerprints.is_empty() {
        std::mem::take(&mut sess.fingerprints)
    } else {
        std::mem::take(&mut t.fingerprints)
    };
    if fingerprints.is_empty() {
        return Err(SdpError::Missing("a=fingerprint".into()));
    }
    Ok((ice_ufrag, ice_pwd, fingerprints))
}

/// Whether data section `i` is rejected (port 0, not bundle-only) beside accepted audio or
/// video: an answer that takes media only. It is then no data section, and the transport is
/// the media's.
fn rejected_beside_media(sections: &[Section<'_>], i: usize) -> bool {
    let rejected = sections[i].media.port == 0
        && !sections[i]
            .attrs
            .iter()
            .any(|l| matches!(l.attribute(), Some(("bundle-only", _))));
    let has_media = sections
        .iter()
        .any(|s| matches!(s.media.kind.as_str(), "audio" | "video") && s.media.port != 0);
    rejected && has_media
}

/// Parses with or without a data section required (see [`parse`], [`parse_description`]).
fn parse_sections(sdp: &str, need_data: bool) -> Result<RemoteDescription, SdpError> {
    let lines = read_lines(sdp)?;
    let (session, mut sections) = split_sections(&lines)?;
    let mut data = read_mids(&mut sections)?;
    if need_data && data.is_none() {
        return Err(SdpError::NoDataSection);
    }
    if !need_data && data.is_some_and(|(i, _)| rejected_beside_media(&sections, i)) {
        data = None;
    }
    let mut sess = read_session_level(&session)?;
    let Some(ti) = transport_index(&sections, data.map(|d| d.0), &sess.groups) else {
        return Err(SdpError::NoMediaSection);
    };
    let legacy = data.is_some_and(|d| d.1);
    let mut t = read_transport_section(&sections[ti], legacy)?;
    let transport_mid = sections[ti].media.mid.clone();
    let bundle = sess
        .groups
        .iter()
        .find(|g| transport_mid.as_ref().is_some_and(|m| g.contains(m)))
        .or(sess.groups.first())
        .cloned()
        .unwrap_or_default();
    if t.candidates.is_empty() && !t.level.end_of_candidates {
        tagged_candidates(&sections, &bundle, &mut t);
    }
    if data.is_some() && sections[ti].media.port == 0 && !t.bundle_only {
        return Err(sections[ti]
            .m_line
            .err("the data m-line is rejected (port 0)"));
    }

    let which = if data.is_some() { "data" } else { "first" };
    let (ice_ufrag, ice_pwd, fingerprints) = credentials(&mut t.level, &mut sess.level, which)?;

    let media: Vec<RemoteMedia> = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.media.kind.as_str(), "audio" | "video"))
        .map(|(i, s)| read_media_section(i, s))
        .collect();
    let data = data.map(|(index, legacy)| DataSection {
        index,
        mid: sections[index].media.mid.clone(),
        sctp_port: if legacy { t.legacy_port } else { t.sctp_port }.unwrap_or(DEFAULT_SCTP_PORT),
        max_message_size: t.max_message_size,
        legacy,
    });
    Ok(RemoteDescription {
        ice_ufrag,
        ice_pwd,
        ice_lite: sess.ice_lite,
        ice_options: t
            .level
            .ice_options
            .or(sess.level.ice_options)
            .unwrap_or_default(),
        fingerprints,
        setup: t.level.setup.or(sess.level.setup),
        transport_mid,
        candidates: t.candidates,
        end_of_candidates: t.level.end_of_candidates || sess.level.end_of_candidates,
        sections: sections.into_iter().map(|s| s.media).collect(),
        bundle,
        data,
        media,
    })
}

/// Parses an `application/trickle-ice-sdpfrag` body (RFC 8840, as used by
/// WHIP/WHEP PATCH requests).
///
/// Returns the ICE username fragment (if given), the candidates as
/// `"candidate:..."` values in order, and whether `a=end-of-candidates` is
/// present. All lines must have the `<type>=<value>` shape; `a=ice-ufrag`,
/// `a=ice-pwd`, `a=candidate` and `m=` lines are checked as in [`parse`];
/// other lines are ignored. An empty body gives `(None, [], false)`.
pub fn parse_candidate_fragment(
    fragment: &str,
) -> Result<(Option<String>, Vec<String>, bool), SdpError> {
    check_size(fragment)?;
    let mut ufrag: Option<String> = None;
    let mut end = false;
    let mut candidates = Vec::new();
    for line in split_lines(fragment)? {
        match line.kind {
            b'm' => {
                parse_m_line(&line)?;
            }
            b'a' => match line.attribute() {
                Some(("ice-ufrag", value)) => {
                    let v = require(&line, "ice-ufrag", value)?;
                    check_ice_string("ice-ufrag", v, 4, 256).map_err(|p| line.err(p))?;
                    if ufrag.as_deref().is_some_and(|u| u != v) {
                        return Err(line.err("a=ice-ufrag differs from an earlier one"));
                    }
                    ufrag = Some(v.to_owned());
                }
                Some(("ice-pwd", value)) => {
                    let v = require(&line, "ice-pwd", value)?;
                    check_ice_string("ice-pwd", v, 22, 256).map_err(|p| line.err(p))?;
                }
                Some(("candidate", _)) => push_candidate(&mut candidates, &line)?,
                Some(("end-of-candidates", _)) => end = true,
                _ => {}
            },
            _ => {}
        }
    }
    Ok((ufrag, candidates, end))
}
