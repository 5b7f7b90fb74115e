//! Offering media (smolrtc as the offerer): the sections of an offer with the application's
//! tracks (`add_track`, sent) and receivers (`add_transceiver`, received), and the plan read
//! back from the answer.
//!
//! One section per kind: `sendonly` with the track's codec (and RTX for video),
//! `recvonly` with every accepted codec (each video codec with its RTX), or `sendrecv` with
//! the track's codec when the kind is both sent and received in it. Video sections offer
//! `nack`, `nack pli`, `ccm fir` (and `goog-remb` when receiving). Payload types: H.264 102
//! (RTX 103), VP8 96 (RTX 97), Opus 111.

use super::{AnswerPlan, Ids, PlanError, PlannedReceiver, PlannedTrack, ReceiveCodecs};
use crate::media::codec::{h264_fmtp, opus_fmtp};
use crate::media::{negotiate, negotiate_receive, Capabilities, Codec, MediaKind, SendCodec};
use crate::sdp::media::{Direction, LocalMedia};
use crate::sdp::types::RemoteDescription;
use crate::sdp::write::AnswerSection;

/// One section of our offer and what it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedSection {
    /// Video or audio.
    pub kind: MediaKind,
    /// What we send in it.
    pub send: Option<SendCodec>,
    /// What we accept to receive in it (empty: nothing).
    pub receive: Vec<Codec>,
    /// The section as written.
    pub media: LocalMedia,
}

fn payload_types(codec: Codec) -> (u8, Option<u8>) {
    match codec {
        Codec::H264 => (102, Some(103)),
        Codec::Vp8 => (96, Some(97)),
        Codec::Opus => (111, None),
    }
}

/// The sections of an offer sending `send` (at most one per kind) and receiving `receive`;
/// mids `1`, `2` (the data section keeps its own).
pub fn plan_offer(send: &[SendCodec], receive: &ReceiveCodecs) -> Vec<OfferedSection> {
    let mut ids = Ids {
        cname: super::new_cname(),
        ssrcs: Vec::new(),
        name: "smolrtc",
    };
    let mut out = Vec::new();
    for kind in [MediaKind::Video, MediaKind::Audio] {
        let s = send.iter().copied().find(|s| s.codec.kind() == kind);
        let r = receive.of(kind).to_vec();
        if s.is_none() && r.is_empty() {
            continue;
        }
        let direction = match (&s, r.is_empty()) {
            (Some(_), false) => Direction::SendRecv,
            (Some(_), true) => Direction::SendOnly,
            _ => Direction::RecvOnly,
        };
        let codecs: Vec<(Codec, Option<crate::media::ProfileLevelId>)> = match s {
            Some(s) => vec![(s.codec, s.profile_level_id)],
            None => r.iter().map(|c| (*c, None)).collect(),
        };
        let mut pts = Vec::new();
        let mut attributes = Vec::new();
        let mut attr = |n: &str, v: String| attributes.push((n.to_owned(), v));
        for (codec, plid) in &codecs {
            let (pt, rtx) = payload_types(*codec);
            pts.push(pt);
            attr("rtpmap", codec.rtpmap(pt));
            match codec {
                Codec::H264 => attr(
                    "fmtp",
                    h264_fmtp(pt, plid.unwrap_or(crate::media::ProfileLevelId::DEFAULT)),
                ),
                Codec::Opus => attr("fmtp", opus_fmtp(pt)),
                Codec::Vp8 => {}
            }
            if kind == MediaKind::Video {
                for fb in ["nack", "nack pli", "ccm fir"] {
                    attr("rtcp-fb", format!("{pt} {fb}"));
                }
                if !r.is_empty() {
                    attr("rtcp-fb", format!("{pt} goog-remb"));
                }
            }
            if let Some(rtx) = rtx {
                pts.push(rtx);
                attr("rtpmap", format!("{rtx} rtx/{}", codec.clock_rate()));
                attr("fmtp", format!("{rtx} apt={pt}"));
            }
        }
        let ssrc = super::new_ssrc(&mut ids.ssrcs);
        let rtx_ssrc = s
            .filter(|s| s.codec != Codec::Opus)
            .map(|_| super::new_ssrc(&mut ids.ssrcs));
        out.push(OfferedSection {
            kind,
            send: s,
            receive: r,
            media: LocalMedia {
                kind: kind.as_str().to_owned(),
                mid: (out.len() + 1).to_string(),
                direction,
                payload_types: pts,
                attributes,
                ssrc,
                rtx_ssrc,
                cname: ids.cname.clone(),
                msid: (ids.name.to_owned(), kind.as_str().to_owned()),
            },
        });
    }
    out
}

/// The plan an answer to our offer makes: each offered section the answer accepts (same
/// mid, not rejected) carries our track when the answerer receives there, and a receiver
/// when it sends there, in the answer's payload types. `sections` are ours (for the
/// candidates' mid), indexed as in the answer.
pub fn plan_from_answer(
    offered: &[OfferedSection],
    answer: &RemoteDescription,
    caps: &Capabilities,
) -> Result<AnswerPlan, PlanError> {
    let mut plan = AnswerPlan {
        sections: vec![AnswerSection::Rejected; answer.sections.len()],
        tracks: Vec::new(),
        receivers: Vec::new(),
        data: answer.data.is_some(),
        rejected: Vec::new(),
    };
    if let Some(d) = &answer.data {
        plan.sections[d.index] = AnswerSection::Data;
    }
    for o in offered {
        let Some(m) = answer
            .media
            .iter()
            .find(|m| m.mid.as_deref() == Some(o.media.mid.as_str()))
        else {
            plan.rejected
                .push(format!("section {}: not in the answer", o.media.mid));
            continue;
        };
        if !m.is_enabled() {
            plan.rejected
                .push(format!("section {}: rejected by the answer", o.media.mid));
            continue;
        }
        let kind = o.kind;
        if let Some(send) = o.send.filter(|_| m.direction.receives()) {
            let n = negotiate(&m.formats, send, caps).map_err(PlanError::NoCodec)?;
            let rtx_ssrc = n.rtx_pt.and(o.media.rtx_ssrc);
            let mut n = n;
            if rtx_ssrc.is_none() {
                n.rtx_pt = None;
            }
            plan.tracks.push(PlannedTrack {
                index: m.index,
                mid: o.media.mid.clone(),
                kind,
                negotiated: n,
                ssrc: o.media.ssrc,
                rtx_ssrc,
            });
        }
        if !o.receive.is_empty() && m.direction.sends() {
            let n = negotiate_receive(&m.formats, &o.receive, caps).map_err(PlanError::NoCodec)?;
            plan.receivers.push(PlannedReceiver {
                index: m.index,
                mid: o.media.mid.clone(),
                kind,
                negotiated: n,
                remote_ssrcs: m.ssrcs.clone(),
                ssrc: o.media.ssrc,
            });
        }
        plan.sections[m.index] = AnswerSection::Media(o.media.clone());
    }
    Ok(plan)
}
