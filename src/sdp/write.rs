//! Writing smolrtc's own offers, answers and candidate fragments.
//!
//! All output uses CRLF line endings and ends with CRLF.

use std::net::IpAddr;

use super::media::LocalMedia;
use super::types::{LocalSession, MediaSection, RemoteDescription, Setup};
use super::DATACHANNEL_FMT;

/// Collects SDP lines and joins them with CRLF.
struct Out(String);

impl Out {
    fn new() -> Self {
        Out(String::with_capacity(1024))
    }

    fn line(&mut self, line: impl AsRef<str>) {
        self.0.push_str(line.as_ref());
        self.0.push_str("\r\n");
    }
}

/// `"candidate:..."` whichever of `a=candidate:...`, `candidate:...` or
/// the bare `<foundation> ...` was given.
fn candidate_value(c: &str) -> String {
    let c = c.trim();
    let c = c.strip_prefix("a=").unwrap_or(c);
    if c.starts_with("candidate:") {
        c.to_owned()
    } else {
        format!("candidate:{c}")
    }
}

/// The m= line port and c= line value from the first candidate, as browsers
/// do; port 9 and `IN IP4 0.0.0.0` without one (or when its address is an
/// mDNS host name).
fn default_address(candidates: &[String]) -> (u16, String) {
    let fallback = (9, "IN IP4 0.0.0.0".to_owned());
    let Some(first) = candidates.first() else {
        return fallback;
    };
    let value = candidate_value(first);
    let f: Vec<&str> = value.split_ascii_whitespace().collect();
    let (Some(addr), Some(port)) = (f.get(4), f.get(5)) else {
        return fallback;
    };
    match (addr.parse::<IpAddr>(), port.parse::<u16>()) {
        (Ok(IpAddr::V4(a)), Ok(p)) => (p, format!("IN IP4 {a}")),
        (Ok(IpAddr::V6(a)), Ok(p)) => (p, format!("IN IP6 {a}")),
        _ => fallback,
    }
}

fn session_header(out: &mut Out, local: &LocalSession, mid: &str) {
    out.line("v=0");
    out.line(format!(
        "o=smolrtc {} {} IN IP4 127.0.0.1",
        local.session_id, local.session_version
    ));
    out.line("s=-");
    out.line("t=0 0");
    // Nothing accepted, nothing bundled (an answer that rejects every section).
    if !mid.is_empty() {
        out.line(format!("a=group:BUNDLE {mid}"));
    }
}

/// ICE, DTLS and mid lines of the data m-line (after its c= line).
fn transport_lines(out: &mut Out, local: &LocalSession, setup: Setup, mid: &str) {
    out.line(format!("a=ice-ufrag:{}", local.ice_ufrag));
    out.line(format!("a=ice-pwd:{}", local.ice_pwd));
    if local.ice_options_trickle {
        out.line("a=ice-options:trickle");
    }
    out.line(format!(
        "a=fingerprint:{}",
        local.fingerprint.to_sdp_value()
    ));
    out.line(format!("a=setup:{setup}"));
    out.line(format!("a=mid:{mid}"));
}

fn candidate_lines(out: &mut Out, candidates: &[String], end: bool) {
    for c in candidates {
        out.line(format!("a={}", candidate_value(c)));
    }
    if end {
        out.line("a=end-of-candidates");
    }
}

/// Writes a data-only offer in the RFC 8841 form that Chromium and Firefox
/// accept:
///
/// ```text
/// v=0
/// o=smolrtc <session_id> <session_version> IN IP4 127.0.0.1
/// s=-
/// t=0 0
/// a=group:BUNDLE <mid>
/// m=application <port> UDP/DTLS/SCTP webrtc-datachannel
/// c=IN IP4 <address>
/// a=ice-ufrag:... / a=ice-pwd:... / [a=ice-options:trickle]
/// a=fingerprint:sha-256 AA:BB:...
/// a=setup:actpass
/// a=mid:<mid>
/// a=sctp-port:<sctp_port>
/// a=max-message-size:<max_message_size>
/// a=candidate:... / [a=end-of-candidates]
/// ```
///
/// `<port>` and `<address>` are those of the first candidate with an IP
/// address, else 9 and 0.0.0.0. An offer always says `a=setup:actpass`
/// (RFC 8842); `local.setup` is only used by [`write_answer`].
pub fn write_offer(local: &LocalSession) -> String {
    let mut out = Out::new();
    session_header(&mut out, local, &local.mid);
    let (port, conn) = default_address(&local.candidates);
    out.line(format!(
        "m=application {port} UDP/DTLS/SCTP {DATACHANNEL_FMT}"
    ));
    out.line(format!("c={conn}"));
    transport_lines(&mut out, local, Setup::ActPass, &local.mid);
    out.line(format!("a=sctp-port:{}", local.sctp_port));
    out.line(format!("a=max-message-size:{}", local.max_message_size));
    candidate_lines(&mut out, &local.candidates, local.end_of_candidates);
    out.0
}

/// Writes the answer to a remote offer.
///
/// The answer has one m-line per offered m-line, in the same order. Every
/// m-line but the data one is rejected: `m=<kind> 0 <proto> <fmts...>`,
/// `c=IN IP4 0.0.0.0`, and its `a=mid` if it had one, nothing else. The
/// data m-line is answered in the form the offer used:
///
/// * RFC 8841: `m=application <port> <proto> webrtc-datachannel` with
///   `a=sctp-port:<local.sctp_port>` (the offered proto is kept:
///   `UDP/DTLS/SCTP` or `TCP/DTLS/SCTP`);
/// * legacy: `m=application <port> DTLS/SCTP <local.sctp_port>` with
///   `a=sctpmap:<local.sctp_port> webrtc-datachannel 65535`;
///
/// both followed by `a=max-message-size`. Its mid is the offer's (or
/// `local.mid` when the offer has none), the BUNDLE group lists only that
/// mid, and `a=setup` is `local.setup` (normally `active`).
pub fn write_answer(local: &LocalSession, remote: &RemoteDescription) -> String {
    let data = remote.data.as_ref().map(|d| d.index);
    let answers: Vec<AnswerSection> = (0..remote.sections.len())
        .map(|i| {
            if Some(i) == data {
                AnswerSection::Data
            } else {
                AnswerSection::Rejected
            }
        })
        .collect();
    write_answer_sections(local, remote, &answers)
}

/// How smolrtc answers one m-line of a remote offer ([`write_answer_sections`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerSection {
    /// Rejected: port 0, only the mid kept.
    Rejected,
    /// The data channel (the offer's data section).
    Data,
    /// A track smolrtc sends (an audio or video section).
    Media(LocalMedia),
}

/// Writes the answer to an offer with audio, video and data sections: one m-line per
/// offered one, answered as `answers` says (one entry per m-line, in order; missing entries
/// are rejected).
///
/// Every accepted section is in one BUNDLE group (in the offer's order) with the same port,
/// ICE and DTLS lines; candidates go in the first accepted one (RFC 8843's tagged m-line).
/// A media section is written with the offer's proto, its direction (normally `sendonly`),
/// `a=rtcp-mux`, the payload types and lines of its [`LocalMedia`], `a=msid`, and `a=ssrc`
/// lines with the CNAME (plus `a=ssrc-group:FID` with the RTX SSRC). The data section is
/// written as by [`write_answer`].
pub fn write_answer_sections(
    local: &LocalSession,
    remote: &RemoteDescription,
    answers: &[AnswerSection],
) -> String {
    let legacy = remote.data.as_ref().is_some_and(|d| d.legacy);
    write_sections(local, &remote.sections, legacy, answers)
}

/// The mid an accepted section is answered with.
fn answer_mid(local: &LocalSession, section: &MediaSection, i: usize) -> String {
    match (&section.mid, section.is_data) {
        (Some(mid), _) => mid.clone(),
        (None, true) => local.mid.clone(),
        (None, false) => i.to_string(),
    }
}

fn write_sections(
    local: &LocalSession,
    sections: &[MediaSection],
    legacy: bool,
    answers: &[AnswerSection],
) -> String {
    let answer = |i: usize| answers.get(i).unwrap_or(&AnswerSection::Rejected);
    let mids: Vec<String> = sections
        .iter()
        .enumerate()
        .filter(|(i, _)| *answer(*i) != AnswerSection::Rejected)
        .map(|(i, m)| answer_mid(local, m, i))
        .collect();
    let mut out = Out::new();
    session_header(&mut out, local, &mids.join(" "));
    let (port, conn) = default_address(&local.candidates);
    let mut first = true;
    for (i, media) in sections.iter().enumerate() {
        let mid = answer_mid(local, media, i);
        match answer(i) {
            AnswerSection::Rejected => {
                out.line(format!(
                    "m={} 0 {} {}",
                    media.kind,
                    media.proto,
                    media.fmts.join(" ")
                ));
                out.line("c=IN IP4 0.0.0.0");
                if let Some(mid) = &media.mid {
                    out.line(format!("a=mid:{mid}"));
                }
                continue;
            }
            AnswerSection::Data => {
                if legacy {
                    out.line(format!(
                        "m=application {port} DTLS/SCTP {}",
                        local.sctp_port
                    ));
                } else {
                    out.line(format!(
                        "m=application {port} {} {DATACHANNEL_FMT}",
                        media.proto
                    ));
                }
                out.line(format!("c={conn}"));
                transport_lines(&mut out, local, local.setup, &mid);
                data_lines(&mut out, local, legacy);
            }
            AnswerSection::Media(m) => {
                media_lines(&mut out, local, local.setup, m, &media.proto, (port, &conn));
            }
        }
        if first {
            candidate_lines(&mut out, &local.candidates, local.end_of_candidates);
            first = false;
        }
    }
    out.0
}

fn data_lines(out: &mut Out, local: &LocalSession, legacy: bool) {
    if legacy {
        out.line(format!(
            "a=sctpmap:{} {DATACHANNEL_FMT} 65535",
            local.sctp_port
        ));
    } else {
        out.line(format!("a=sctp-port:{}", local.sctp_port));
    }
    out.line(format!("a=max-message-size:{}", local.max_message_size));
}

/// An audio or video section: m= and c= lines, transport, direction, codecs, SSRCs.
fn media_lines(
    out: &mut Out,
    local: &LocalSession,
    setup: Setup,
    m: &LocalMedia,
    proto: &str,
    (port, conn): (u16, &str),
) {
    let pts: Vec<String> = m.payload_types.iter().map(u8::to_string).collect();
    out.line(format!("m={} {port} {proto} {}", m.kind, pts.join(" ")));
    out.line(format!("c={conn}"));
    transport_lines(out, local, setup, &m.mid);
    out.line(format!("a={}", m.direction));
    out.line("a=rtcp-mux");
    let (stream, track) = &m.msid;
    // A section we only receive in names no track of ours (no msid, no a=ssrc).
    if m.direction.sends() {
        out.line(format!("a=msid:{stream} {track}"));
    }
    for (name, value) in &m.attributes {
        out.line(format!("a={name}:{value}"));
    }
    if !m.direction.sends() {
        return;
    }
    if let Some(rtx) = m.rtx_ssrc {
        out.line(format!("a=ssrc-group:FID {} {rtx}", m.ssrc));
    }
    for ssrc in std::iter::once(m.ssrc).chain(m.rtx_ssrc) {
        out.line(format!("a=ssrc:{ssrc} cname:{}", m.cname));
        out.line(format!("a=ssrc:{ssrc} msid:{stream} {track}"));
    }
}

/// Writes an offer with smolrtc's own tracks (each `m=audio`/`m=video`, normally sendonly)
/// and, when `data`, a data section last (mid `local.mid`): all in one BUNDLE group, with
/// `a=setup:actpass` and the candidates in the first section.
pub fn write_offer_sections(local: &LocalSession, media: &[LocalMedia], data: bool) -> String {
    let mut mids: Vec<&str> = media.iter().map(|m| m.mid.as_str()).collect();
    if data {
        mids.push(&local.mid);
    }
    let mut out = Out::new();
    session_header(&mut out, local, &mids.join(" "));
    let (port, conn) = default_address(&local.candidates);
    for (i, m) in media.iter().enumerate() {
        media_lines(
            &mut out,
            local,
            Setup::ActPass,
            m,
            "UDP/TLS/RTP/SAVPF",
            (port, &conn),
        );
        if i == 0 {
            candidate_lines(&mut out, &local.candidates, local.end_of_candidates);
        }
    }
    if data {
        out.line(format!(
            "m=application {port} UDP/DTLS/SCTP {DATACHANNEL_FMT}"
        ));
        out.line(format!("c={conn}"));
        transport_lines(&mut out, local, Setup::ActPass, &local.mid);
        data_lines(&mut out, local, false);
        if media.is_empty() {
            candidate_lines(&mut out, &local.candidates, local.end_of_candidates);
        }
    }
    out.0
}

/// The `candidate:...` attribute values of `sdp` (without `a=`), in order: what
/// [`write_candidate_fragment`] takes.
#[cfg(feature = "service")]
pub(crate) fn candidate_attributes(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"))
        .map(str::to_owned)
        .collect()
}

/// Writes an `application/trickle-ice-sdpfrag` body (RFC 8840), in the
/// shape WHIP (RFC 9725) sends in its PATCH requests:
///
/// ```text
/// a=group:BUNDLE <mid>
/// m=application 9 UDP/DTLS/SCTP webrtc-datachannel
/// a=mid:<mid>
/// a=ice-ufrag:<ufrag>
/// a=ice-pwd:<pwd>
/// a=candidate:...
/// a=end-of-candidates
/// ```
///
/// `a=ice-ufrag`/`a=ice-pwd` are left out when empty, `a=end-of-candidates`
/// unless `end`.
pub fn write_candidate_fragment(
    ufrag: &str,
    pwd: &str,
    mid: &str,
    candidates: &[String],
    end: bool,
) -> String {
    let mut out = Out::new();
    // Nothing accepted, nothing bundled (an answer that rejects every section).
    if !mid.is_empty() {
        out.line(format!("a=group:BUNDLE {mid}"));
    }
    out.line(format!("m=application 9 UDP/DTLS/SCTP {DATACHANNEL_FMT}"));
    out.line(format!("a=mid:{mid}"));
    if !ufrag.is_empty() {
        out.line(format!("a=ice-ufrag:{ufrag}"));
    }
    if !pwd.is_empty() {
        out.line(format!("a=ice-pwd:{pwd}"));
    }
    candidate_lines(&mut out, candidates, end);
    out.0
}
