//! plan_answer against real browser offers (tests/fixtures/sdp/).

use super::*;
use crate::media::{Codec, ProfileLevelId};
use crate::sdp::{parse_description, write_answer_sections, Fingerprint, LocalSession, Setup};

// The browser offers media_tests.rs reads (tests/fixtures/sdp/).
use crate::sdp::media_tests::{
    CHROMIUM_RECVONLY, CHROMIUM_RECVONLY_DATA, CHROMIUM_SENDRECV, FIREFOX_RECVONLY,
    FIREFOX_RECVONLY_DATA,
};

fn h264(plid: &str) -> SendCodec {
    SendCodec {
        codec: Codec::H264,
        profile_level_id: ProfileLevelId::parse(plid),
    }
}

fn stream(video: Option<SendCodec>, audio: Option<SendCodec>) -> StreamCodecs {
    StreamCodecs {
        name: "cam".into(),
        video,
        audio,
    }
}

fn plan(sdp: &str, s: Option<&StreamCodecs>, data: bool) -> Result<AnswerPlan, PlanError> {
    plan_answer(
        &parse_description(sdp).unwrap(),
        s,
        data,
        &Capabilities::default(),
    )
}

fn local() -> LocalSession {
    LocalSession {
        session_id: 1,
        session_version: 1,
        ice_ufrag: "sMrT".into(),
        ice_pwd: "p4ssw0rdP4ssw0rdP4ssw0".into(),
        fingerprint: Fingerprint::sha256(vec![7; 32]),
        setup: Setup::Passive,
        mid: "dc".into(),
        sctp_port: 5000,
        max_message_size: 262_144,
        candidates: vec!["candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host".into()],
        end_of_candidates: true,
        ice_options_trickle: false,
    }
}

/// The offer's text with only the session level and the sections of `kinds`.
fn only(sdp: &str, kinds: &[&str]) -> String {
    let mut out = String::new();
    let mut keep = true;
    let mut mids = Vec::new();
    for line in sdp.split_inclusive('\n') {
        if let Some(m) = line.strip_prefix("m=") {
            keep = kinds.iter().any(|k| m.starts_with(k));
        }
        if keep {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                mids.push(mid.trim().to_owned());
            }
            out.push_str(line);
        }
    }
    let group = out
        .lines()
        .find(|l| l.starts_with("a=group:BUNDLE"))
        .unwrap()
        .to_owned();
    out.replace(&group, &format!("a=group:BUNDLE {}", mids.join(" ")))
}

#[test]
fn chromium_gets_h264_with_the_sps_profile_and_opus() {
    let s = stream(Some(h264("42c01e")), Some(SendCodec::new(Codec::Opus)));
    let p = plan(CHROMIUM_RECVONLY, Some(&s), false).unwrap();
    assert_eq!(p.tracks.len(), 2);
    let v = &p.tracks[0];
    assert_eq!(
        (v.kind, v.index, v.mid.as_str()),
        (MediaKind::Video, 0, "0")
    );
    assert_eq!(v.negotiated.codec, Codec::H264);
    assert_eq!(
        v.negotiated.profile_level_id,
        ProfileLevelId::parse("42e01e"),
        "the offer's constrained-baseline profile at the stream's level"
    );
    assert!(v.negotiated.rtx_pt.is_some() && v.rtx_ssrc.is_some());
    assert!(v.negotiated.feedback.nack && v.negotiated.feedback.pli);
    assert_eq!(p.tracks[1].negotiated.codec, Codec::Opus);
    assert_ne!(v.ssrc, p.tracks[1].ssrc);
    let d = parse_description(CHROMIUM_RECVONLY).unwrap();
    let answer = write_answer_sections(&local(), &d, &p.sections);
    assert!(
        answer.contains("packetization-mode=1;profile-level-id=42e01e"),
        "{answer}"
    );
    assert!(answer.contains("a=group:BUNDLE 0 1\r\n"));
    let back = parse_description(&answer).unwrap();
    assert!(back
        .media
        .iter()
        .all(|m| m.direction == Direction::SendOnly && m.rtcp_mux));
    assert_eq!(back.media[0].ssrcs.len(), 2, "media and RTX SSRCs");
}

#[test]
fn firefox_without_h264_is_a_clear_error_and_vp8_plays() {
    let s = stream(Some(h264("42e01f")), None);
    let e = plan(FIREFOX_RECVONLY, Some(&s), false).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PlanError::NoCodec(_)), "{e:?}");
    assert!(msg.contains("H.264") && msg.contains("VP8/90000"), "{msg}");
    let s = stream(
        Some(SendCodec::new(Codec::Vp8)),
        Some(SendCodec::new(Codec::Opus)),
    );
    let p = plan(FIREFOX_RECVONLY, Some(&s), false).unwrap();
    assert_eq!(p.tracks[0].negotiated.codec, Codec::Vp8);
    assert_eq!(p.tracks[1].negotiated.codec, Codec::Opus);
}

#[test]
fn an_offer_without_video_is_refused_for_a_video_stream() {
    let audio_only = only(CHROMIUM_RECVONLY, &["audio"]);
    let d = parse_description(&audio_only).unwrap();
    assert_eq!(d.media.len(), 1);
    let s = stream(Some(h264("42e01f")), Some(SendCodec::new(Codec::Opus)));
    let e = plan(&audio_only, Some(&s), false).unwrap_err();
    assert_eq!(e, PlanError::NoSection(MediaKind::Video));
    assert!(e.to_string().contains("no video section"), "{e}");
    // An audio-only stream plays there.
    let s = stream(None, Some(SendCodec::new(Codec::Opus)));
    assert_eq!(plan(&audio_only, Some(&s), false).unwrap().tracks.len(), 1);
    // A video-only offer to an audio-only stream: nothing for it.
    let video_only = only(CHROMIUM_RECVONLY, &["video"]);
    let e = plan(&video_only, Some(&s), false).unwrap_err();
    assert_eq!(e, PlanError::NoSection(MediaKind::Audio));
}

#[test]
fn directions_rtcp_mux_and_bundle_are_checked() {
    let s = stream(Some(SendCodec::new(Codec::Vp8)), None);
    let sendonly = CHROMIUM_RECVONLY.replace("a=recvonly", "a=sendonly");
    let e = plan(&sendonly, Some(&s), false).unwrap_err();
    assert_eq!(
        e,
        PlanError::NotReceiving(MediaKind::Video, Direction::SendOnly)
    );
    let no_mux = CHROMIUM_RECVONLY.replace("a=rtcp-mux\r\n", "");
    assert_eq!(
        plan(&no_mux, Some(&s), false).unwrap_err(),
        PlanError::NoRtcpMux(MediaKind::Video)
    );
    // A sendrecv offer (a camera of its own) still receives the stream.
    let p = plan(CHROMIUM_SENDRECV, Some(&s), true).unwrap();
    assert!(p.data);
    assert_eq!(p.tracks.len(), 1);
}

#[test]
fn data_and_media_in_one_answer() {
    for sdp in [CHROMIUM_RECVONLY_DATA, FIREFOX_RECVONLY_DATA] {
        let d = parse_description(sdp).unwrap();
        let s = stream(Some(SendCodec::new(Codec::Vp8)), None);
        let p = plan_answer(&d, Some(&s), true, &Capabilities::default()).unwrap();
        assert!(p.data);
        assert_eq!(p.sections[2], AnswerSection::Data);
        assert_eq!(p.sections[1], AnswerSection::Rejected, "no audio track");
        assert_eq!(p.rejected.len(), 1, "{:?}", p.rejected);
        let answer = write_answer_sections(&local(), &d, &p.sections);
        let back = parse_description(&answer).unwrap();
        assert_eq!(back.bundle, ["0", "2"]);
        assert_eq!(back.data.map(|d| d.index), Some(2));
        // Data only: the media sections rejected.
        let p = plan_answer(&d, None, true, &Capabilities::default()).unwrap();
        assert!(p.tracks.is_empty() && p.data);
        // Nothing asked for at all.
        let e = plan_answer(&d, None, false, &Capabilities::default()).unwrap_err();
        assert_eq!(e, PlanError::Nothing);
    }
}

fn receive_all() -> ReceiveCodecs {
    ReceiveCodecs {
        video: vec![Codec::H264, Codec::Vp8],
        audio: vec![Codec::Opus],
    }
}

#[test]
fn a_sendonly_offer_is_received_recvonly_and_sendrecv_talks_back() {
    // A browser publishing (WHIP): its sections are sendonly.
    let publish = CHROMIUM_SENDRECV.replace("a=sendrecv", "a=sendonly");
    let offer = parse_description(&publish).unwrap();
    let p = plan_answer_media(
        &offer,
        None,
        &receive_all(),
        false,
        &Capabilities::default(),
    )
    .unwrap();
    assert!(p.tracks.is_empty());
    assert_eq!(p.receivers.len(), 2);
    let video = p
        .receivers
        .iter()
        .find(|r| r.kind == MediaKind::Video)
        .unwrap();
    // The offer's first receivable video type (Chromium lists VP8 first), with REMB.
    assert_eq!(video.negotiated.codec, Codec::Vp8);
    assert!(video.negotiated.feedback.nack && video.negotiated.feedback.remb);
    assert!(!video.remote_ssrcs.is_empty());
    let answer = write_answer_sections(&local(), &offer, &p.sections);
    assert_eq!(answer.matches("a=recvonly").count(), 2, "{answer}");
    assert!(
        !answer.contains("a=ssrc:"),
        "a receive-only answer names no SSRC"
    );
    assert!(answer.contains("goog-remb"));
    // H.264 only: the offer's H.264 type with packetization-mode=1.
    let only_h264 = ReceiveCodecs {
        video: vec![Codec::H264],
        audio: vec![],
    };
    let p = plan_answer_media(&offer, None, &only_h264, false, &Capabilities::default()).unwrap();
    let f = p.receivers[0].negotiated.pt;
    let fmt = offer.media[p.receivers[0].index].formats.formats.iter();
    assert!(fmt
        .clone()
        .any(|x| x.pt == f && x.param("packetization-mode") == Some("1")));
    // A recvonly offer has nothing to receive: a clear error.
    let viewer = parse_description(CHROMIUM_RECVONLY).unwrap();
    let e = plan_answer_media(
        &viewer,
        None,
        &receive_all(),
        false,
        &Capabilities::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("must be sendonly or sendrecv"),
        "{e}"
    );
    // Talk-back: the device sends Opus and hears the browser's microphone in one section.
    let offer = parse_description(CHROMIUM_SENDRECV).unwrap();
    let s = stream(None, Some(SendCodec::new(Codec::Opus)));
    let recv = ReceiveCodecs {
        video: vec![],
        audio: vec![Codec::Opus],
    };
    let p = plan_answer_media(&offer, Some(&s), &recv, false, &Capabilities::default()).unwrap();
    assert_eq!((p.tracks.len(), p.receivers.len()), (1, 1));
    assert_eq!(p.tracks[0].index, p.receivers[0].index);
    assert_eq!(p.tracks[0].ssrc, p.receivers[0].ssrc);
    let answer = write_answer_sections(&local(), &offer, &p.sections);
    assert!(answer.contains("a=sendrecv"), "{answer}");
}
