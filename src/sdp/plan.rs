//! Planning an answer to an offer with audio and video sections: which section carries which
//! of a stream's tracks, with which codec, and why the others are rejected (feature `media`).
//!
//! [`plan_answer`] takes a parsed offer, the codecs a stream sends (as far as they are known:
//! H.264's `profile-level-id` comes from the source's SPS) and whether a data channel is
//! wanted, and returns one [`AnswerSection`] per m-line for [`super::write_answer_sections`]
//! plus the tracks to create. Each of the stream's tracks goes into the first offered
//! section of its kind that can take it: enabled and in the BUNDLE group, receiving
//! (`recvonly` or `sendrecv`), with `a=rtcp-mux`, a mid and a codec that fits
//! ([`crate::media::negotiate`]). A stream with video needs its video accepted; an
//! audio-only stream its audio. Otherwise the plan fails with a [`PlanError`] that says
//! what the offer lacks, e.g. an H.264-only stream and an offline Firefox, which offers no
//! H.264.

use super::media::{Direction, LocalMedia, RemoteMedia};
use super::types::RemoteDescription;
use super::write::AnswerSection;
use crate::media::{
    negotiate, negotiate_receive, Capabilities, Codec, MediaKind, NegotiateError, Negotiated,
    SendCodec,
};
use std::fmt;

/// What one stream can send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCodecs {
    /// The stream's name (the `a=msid` stream id).
    pub name: String,
    /// Its video track's codec, if it has one.
    pub video: Option<SendCodec>,
    /// Its audio track's codec, if it has one.
    pub audio: Option<SendCodec>,
}

/// What a connection receives (`add_transceiver`, or a service sink): the codecs
/// accepted per kind, in preference order; empty = that kind is not received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiveCodecs {
    /// Video codecs accepted (H.264, VP8).
    pub video: Vec<Codec>,
    /// Audio codecs accepted (Opus).
    pub audio: Vec<Codec>,
}

impl ReceiveCodecs {
    fn of(&self, kind: MediaKind) -> &[Codec] {
        match kind {
            MediaKind::Video => &self.video,
            MediaKind::Audio => &self.audio,
        }
    }
}

/// A track the answer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedReceiver {
    /// Index of its m-line.
    pub index: usize,
    /// Its mid.
    pub mid: String,
    /// Video or audio.
    pub kind: MediaKind,
    /// The payload type (and RTX, feedback) the remote sends with.
    pub negotiated: Negotiated,
    /// The SSRCs the remote announced for the section (`a=ssrc`), if any.
    pub remote_ssrcs: Vec<u32>,
    /// Our SSRC for the section's RTCP (the sending track's when the section is sendrecv).
    pub ssrc: u32,
}

/// A track the answer accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTrack {
    /// Index of its m-line.
    pub index: usize,
    /// Its mid.
    pub mid: String,
    /// Video or audio.
    pub kind: MediaKind,
    /// Payload types and feedback agreed.
    pub negotiated: Negotiated,
    /// Our SSRC for it.
    pub ssrc: u32,
    /// Our RTX SSRC, when RTX is agreed.
    pub rtx_ssrc: Option<u32>,
}

/// The outcome of [`plan_answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerPlan {
    /// One entry per m-line of the offer.
    pub sections: Vec<AnswerSection>,
    /// The accepted tracks, in m-line order.
    pub tracks: Vec<PlannedTrack>,
    /// The accepted tracks the remote sends, in m-line order.
    pub receivers: Vec<PlannedReceiver>,
    /// The data section is accepted.
    pub data: bool,
    /// Why sections were rejected (for a log line), e.g. an audio section without Opus.
    pub rejected: Vec<String>,
}

/// Why no answer can be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The offer has no section of this kind that is not rejected.
    NoSection(MediaKind),
    /// The offer's section of this kind does not send (`recvonly` or `inactive`), so
    /// nothing can be received in it.
    NotSending(MediaKind, Direction),
    /// The offer's section of this kind does not receive (`sendonly` or `inactive`).
    NotReceiving(MediaKind, Direction),
    /// The offer's section of this kind has no `a=rtcp-mux` (smolrtc sends RTP and RTCP on
    /// one port only).
    NoRtcpMux(MediaKind),
    /// The offer's section of this kind has no `a=mid` or is outside the BUNDLE group.
    NotBundled(MediaKind),
    /// No codec of the offer's section fits the stream.
    NoCodec(NegotiateError),
    /// Nothing to answer: no track and no data channel asked for.
    Nothing,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::NoSection(k) => write!(
                f,
                "the offer has no {0} section (m={0}) to carry the stream's {0}; add a recvonly {0} transceiver",
                k.as_str()
            ),
            PlanError::NotReceiving(k, d) => write!(
                f,
                "the offer's {} section is {d}: it must be recvonly or sendrecv to receive the stream",
                k.as_str()
            ),
            PlanError::NotSending(k, d) => write!(
                f,
                "the offer's {} section is {d}: it must be sendonly or sendrecv to send media here",
                k.as_str()
            ),
            PlanError::NoRtcpMux(k) => write!(
                f,
                "the offer's {} section has no a=rtcp-mux (RTP and RTCP on one port are required)",
                k.as_str()
            ),
            PlanError::NotBundled(k) => write!(
                f,
                "the offer's {} section has no a=mid or is outside the BUNDLE group (one transport is required)",
                k.as_str()
            ),
            PlanError::NoCodec(e) => e.fmt(f),
            PlanError::Nothing => f.write_str("the offer has no section to answer"),
        }
    }
}

impl std::error::Error for PlanError {}

/// A nonzero random SSRC not yet used in this answer.
fn new_ssrc(used: &mut Vec<u32>) -> u32 {
    loop {
        let s = fastrand::u32(1..);
        if !used.contains(&s) {
            used.push(s);
            return s;
        }
    }
}

/// A random CNAME (RFC 7022: short-term, per connection).
fn new_cname() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(16)
        .collect()
}

/// Checks a section can carry a track of `kind`; the reason when it cannot.
fn check_section(
    offer: &RemoteDescription,
    m: &RemoteMedia,
    kind: MediaKind,
) -> Result<String, PlanError> {
    let Some(mid) = m.mid.clone() else {
        return Err(PlanError::NotBundled(kind));
    };
    let bundled = offer.bundle.contains(&mid) || offer.transport_mid.as_ref() == Some(&mid);
    if !bundled {
        return Err(PlanError::NotBundled(kind));
    }
    if !m.rtcp_mux {
        return Err(PlanError::NoRtcpMux(kind));
    }
    Ok(mid)
}

/// Plans the answer to `offer` for `stream` (none: data only) and, when `data`, the data
/// channel; see the module doc.
pub fn plan_answer(
    offer: &RemoteDescription,
    stream: Option<&StreamCodecs>,
    data: bool,
    caps: &Capabilities,
) -> Result<AnswerPlan, PlanError> {
    plan_answer_media(offer, stream, &ReceiveCodecs::default(), data, caps)
}

/// [`plan_answer`] that also receives: each kind of `receive` takes the first enabled,
/// bundled, rtcp-mux section of that kind the offer sends in (`sendonly` answered
/// `recvonly`; `sendrecv` answered `sendrecv` when the stream sends that kind there in the
/// same codec — talk-back — else `recvonly`).
pub fn plan_answer_media(
    offer: &RemoteDescription,
    stream: Option<&StreamCodecs>,
    receive: &ReceiveCodecs,
    data: bool,
    caps: &Capabilities,
) -> Result<AnswerPlan, PlanError> {
    let mut plan = AnswerPlan {
        sections: vec![AnswerSection::Rejected; offer.sections.len()],
        tracks: Vec::new(),
        receivers: Vec::new(),
        data: false,
        rejected: Vec::new(),
    };
    if let Some(d) = &offer.data {
        if data {
            plan.sections[d.index] = AnswerSection::Data;
            plan.data = true;
        }
    }
    let mut ids = Ids {
        cname: new_cname(),
        ssrcs: Vec::new(),
        name: stream.map_or("smolrtc", |s| s.name.as_str()),
    };
    // The first failure per kind, reported when that kind finds no section at all.
    let mut failure: [Option<PlanError>; 2] = [None, None];
    for m in offer.media.iter().filter(|m| m.is_enabled()) {
        let (kind, send) = match m.kind.as_str() {
            "video" => (MediaKind::Video, stream.and_then(|s| s.video)),
            "audio" => (MediaKind::Audio, stream.and_then(|s| s.audio)),
            _ => continue,
        };
        let slot = usize::from(kind == MediaKind::Audio);
        let send = send.filter(|_| !plan.tracks.iter().any(|t| t.kind == kind));
        let recv = Some(receive.of(kind))
            .filter(|c| !c.is_empty() && !plan.receivers.iter().any(|r| r.kind == kind));
        if send.is_none() && recv.is_none() {
            plan.rejected.push(format!(
                "{} section {}: nothing to send or receive in it",
                kind.as_str(),
                m.index
            ));
            continue;
        }
        let chosen = check_section(offer, m, kind)
            .and_then(|mid| choose(m, kind, send, recv, caps).map(|(s, r)| (mid, s, r)));
        match chosen {
            Ok((mid, s, r)) => plan.accept(m, mid, kind, s, r, &mut ids),
            Err(e) => {
                plan.rejected
                    .push(format!("{} section {}: {e}", kind.as_str(), m.index));
                failure[slot].get_or_insert(e);
            }
        }
    }
    if let Some(kind) = stream.and_then(needed) {
        if !plan.tracks.iter().any(|t| t.kind == kind) {
            return Err(failure[usize::from(kind == MediaKind::Audio)]
                .take()
                .unwrap_or(PlanError::NoSection(kind)));
        }
    }
    if plan.tracks.is_empty() && plan.receivers.is_empty() && !plan.data {
        return Err(failure
            .into_iter()
            .flatten()
            .next()
            .unwrap_or(PlanError::Nothing));
    }
    Ok(plan)
}

/// What one section carries: the send codec and/or the receive codec, by the offer's
/// direction. A sendrecv section that both sends and receives uses one codec both ways.
fn choose(
    m: &RemoteMedia,
    kind: MediaKind,
    send: Option<SendCodec>,
    recv: Option<&[Codec]>,
    caps: &Capabilities,
) -> Result<(Option<Negotiated>, Option<Negotiated>), PlanError> {
    let send = send.filter(|_| m.direction.receives());
    let recv = recv.filter(|_| m.direction.sends());
    let sent = match send {
        Some(s) => Some(negotiate(&m.formats, s, caps).map_err(PlanError::NoCodec)?),
        None => None,
    };
    let received = match (recv, &sent) {
        // Talk-back: the remote sends in the codec we send with, if we take it.
        (Some(accept), Some(n)) => accept.contains(&n.codec).then(|| n.clone()),
        (Some(accept), None) => {
            Some(negotiate_receive(&m.formats, accept, caps).map_err(PlanError::NoCodec)?)
        }
        (None, _) => None,
    };
    if sent.is_none() && received.is_none() {
        return Err(if m.direction.receives() {
            PlanError::NotSending(kind, m.direction)
        } else {
            PlanError::NotReceiving(kind, m.direction)
        });
    }
    Ok((sent, received))
}

/// What the answer's tracks are named by: one CNAME, distinct SSRCs, the stream's name.
struct Ids<'a> {
    cname: String,
    ssrcs: Vec<u32>,
    name: &'a str,
}

impl AnswerPlan {
    /// Answers section `m` with what it sends and/or receives.
    fn accept(
        &mut self,
        m: &RemoteMedia,
        mid: String,
        kind: MediaKind,
        send: Option<Negotiated>,
        recv: Option<Negotiated>,
        ids: &mut Ids<'_>,
    ) {
        let index = m.index;
        let ssrc = new_ssrc(&mut ids.ssrcs);
        let agreed = send.clone().or_else(|| recv.clone()).expect("one of them");
        let rtx_ssrc = send
            .as_ref()
            .and_then(|n| n.rtx_pt)
            .map(|_| new_ssrc(&mut ids.ssrcs));
        let direction = match (&send, &recv) {
            (Some(_), Some(_)) => Direction::SendRecv,
            (Some(_), None) => Direction::SendOnly,
            _ => Direction::RecvOnly,
        };
        self.sections[index] = AnswerSection::Media(LocalMedia {
            kind: kind.as_str().to_owned(),
            mid: mid.clone(),
            direction,
            payload_types: agreed.payload_types(),
            attributes: agreed
                .answer_attributes()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            ssrc,
            rtx_ssrc,
            cname: ids.cname.clone(),
            msid: (ids.name.to_owned(), kind.as_str().to_owned()),
        });
        if let Some(negotiated) = send {
            self.tracks.push(PlannedTrack {
                index,
                mid: mid.clone(),
                kind,
                negotiated,
                ssrc,
                rtx_ssrc,
            });
        }
        if let Some(negotiated) = recv {
            self.receivers.push(PlannedReceiver {
                index,
                mid,
                kind,
                negotiated,
                remote_ssrcs: m.ssrcs.clone(),
                ssrc,
            });
        }
    }
}

/// The kind a stream's answer cannot do without: its video is what a viewer came for; an
/// audio-only stream needs its audio.
fn needed(s: &StreamCodecs) -> Option<MediaKind> {
    if s.video.is_some() {
        Some(MediaKind::Video)
    } else if s.audio.is_some() {
        Some(MediaKind::Audio)
    } else {
        None
    }
}

mod offer;
pub use offer::{plan_from_answer, plan_offer, OfferedSection};

#[cfg(test)]
mod tests;
