//! One real x264 stream to several viewers: late joiners, PLI, a slow viewer, stats.

use super::*;
use crate::media::h264::{AccessUnitAssembler, AnnexBSplitter};
use crate::media::ivf::IvfReader;
use crate::media::negotiate::{Feedback, Negotiated};
use crate::media::testdata;
use bytes::Bytes;
use rtc_shared::marshal::Unmarshal;

fn cfg(codec: Codec, ssrc: u32) -> SenderConfig {
    let n = Negotiated {
        codec,
        pt: 96,
        rtx_pt: None,
        feedback: Feedback {
            nack: true,
            pli: true,
            fir: true,
            transport_cc: false,
            remb: false,
        },
        profile_level_id: None,
        level_above_offer: false,
    };
    SenderConfig::new(&n, ssrc, 0, "c", u64::from(ssrc) * 7919)
}

fn h264_frames(path: std::path::PathBuf) -> Vec<Frame> {
    let data = std::fs::read(path).unwrap();
    let mut s = AnnexBSplitter::default();
    s.push(&data);
    let mut asm = AccessUnitAssembler::new();
    let mut aus = Vec::new();
    while let Some(n) = s.poll() {
        aus.extend(asm.push(n.unwrap()).unwrap());
    }
    aus.extend(asm.push(s.flush().unwrap()).unwrap());
    aus.extend(asm.flush().unwrap());
    aus.into_iter()
        .enumerate()
        .map(|(i, au)| Frame {
            timestamp: 3000 * i as u32,
            keyframe: au.keyframe,
            data: FrameData::Nals(au.nals),
        })
        .collect()
}

/// Drains a viewer: (timestamp, NAL units completed by the packet) per RTP packet.
fn drain(f: &mut Fanout, now: Instant, id: ViewerId, fu: &mut Vec<u8>) -> Vec<(u32, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(t) = f.poll_transmit(now, id, &mut buf) {
        if t != Transmit::Rtp {
            continue;
        }
        let p = rtc_rtp::Packet::unmarshal(&mut &buf[..]).unwrap();
        let pl = &p.payload[..];
        let nals = if nal_unit_type(pl[0]) == nal_type::FU_A {
            if pl[1] & 0x80 != 0 {
                fu.clear();
                fu.push((pl[0] & 0xe0) | (pl[1] & 0x1f));
            }
            fu.extend_from_slice(&pl[2..]);
            if pl[1] & 0x40 != 0 {
                vec![std::mem::take(fu)]
            } else {
                vec![]
            }
        } else {
            h264_nals_in_payload(pl)
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect()
        };
        out.push((p.header.timestamp, nals));
    }
    out
}

#[test]
fn late_joiner_starts_with_the_keyframe_and_catches_up_and_a_slow_viewer_harms_none() {
    let Some(path) = testdata::h264("640x480", "baseline", 30, 2) else {
        return;
    };
    let frames = h264_frames(path);
    assert_eq!(frames.len(), 60);
    let t0 = Instant::now();
    let mut f = Fanout::new(Codec::H264);
    let a = f.add_viewer(t0, cfg(Codec::H264, 1));
    let mut slow_cfg = cfg(Codec::H264, 3);
    slow_cfg.queue_limit = 50;
    let slow = f.add_viewer(t0, slow_cfg);
    let mut b = None;
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let (mut fu_a, mut fu_b) = (Vec::new(), Vec::new());
    for (i, frame) in frames.into_iter().enumerate() {
        let now = t0 + Duration::from_millis(33 * i as u64);
        if i == 45 {
            b = Some(f.add_viewer(now, cfg(Codec::H264, 2)));
        }
        f.handle_frame(now, frame);
        got_a.extend(drain(&mut f, now, a, &mut fu_a));
        if let Some(b) = b {
            got_b.extend(drain(&mut f, now, b, &mut fu_b));
        }
        assert!(f.sender(slow).unwrap().queued() <= 50);
    }
    let nal_types = |got: &[(u32, Vec<Vec<u8>>)]| -> Vec<u8> {
        got.iter()
            .flat_map(|(_, n)| n.iter().map(|n| nal_unit_type(n[0])))
            .collect()
    };
    let starts_with_keyframe = |t: &[u8]| {
        let idr = t.iter().position(|t| *t == 5).unwrap();
        t[..2] == [7, 8] && t[..idr].iter().all(|t| matches!(t, 6..=8))
    };
    let ta = nal_types(&got_a);
    assert!(
        starts_with_keyframe(&ta),
        "A starts at the first keyframe: {ta:?}"
    );
    assert_eq!(ta.iter().filter(|t| **t == 5).count(), 2);
    // B joined before frame 45: the keyframe of frame 30 first, 31..=44 caught up, live on.
    let tb = nal_types(&got_b);
    assert!(
        starts_with_keyframe(&tb),
        "B starts with SPS, PPS, IDR: {tb:?}"
    );
    assert_eq!(tb.iter().filter(|t| **t == 5).count(), 1);
    assert_eq!(tb.iter().filter(|t| **t == 1).count(), 29, "frames 31..=59");
    // B's timestamps never go back; the catch-up is one tick apart, live 3000 apart.
    let ts: Vec<u32> = got_b.iter().map(|(t, _)| *t).collect();
    let mut frame_ts = ts.clone();
    frame_ts.dedup();
    let steps: Vec<u32> = frame_ts
        .windows(2)
        .map(|w| w[1].wrapping_sub(w[0]))
        .collect();
    assert!(steps[..14].iter().all(|s| *s == 1), "{steps:?}");
    assert!(steps[14..].iter().all(|s| *s == 3000), "{steps:?}");
    // The slow viewer overflowed and was dropped to a keyframe, without touching A or B.
    let st = f.sender(slow).unwrap().stats();
    assert!(st.overflows >= 1 && st.frames_dropped > 0, "{st:?}");
    // Stats for GET /api/streams.
    let now = t0 + Duration::from_millis(33 * 59);
    let s = f.track().stats(now);
    assert_eq!((s.width, s.height), (Some(640), Some(480)));
    assert_eq!(s.codec, "H264");
    assert_eq!((s.frames, s.keyframes, s.viewers), (60, 2, 3));
    assert!(s.fps > 29.0 && s.fps <= 31.0, "{}", s.fps);
    assert!(s.bitrate > 50_000, "{}", s.bitrate);
    assert!(s.profile_level_id.unwrap().starts_with("42c0"));
    f.remove_viewer(slow);
    assert_eq!(f.track().stats(now).viewers, 2);
}

#[test]
fn pli_is_answered_at_once_from_the_cache() {
    let Some(path) = testdata::h264("318x242", "baseline", 10, 1) else {
        return;
    };
    let t0 = Instant::now();
    let mut f = Fanout::new(Codec::H264);
    let a = f.add_viewer(t0, cfg(Codec::H264, 1));
    assert!(
        f.track_mut().poll_source_keyframe_request(),
        "nothing cached for the joiner: ask the source"
    );
    let mut fu = Vec::new();
    for (i, frame) in h264_frames(path).into_iter().take(15).enumerate() {
        f.handle_frame(t0 + Duration::from_millis(33 * i as u64), frame);
    }
    drain(&mut f, t0, a, &mut fu);
    let pli = rtc_rtcp::packet::marshal(&[Box::new(
        rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 9,
            media_ssrc: 1,
        },
    ) as Box<dyn rtc_rtcp::packet::Packet>])
    .unwrap();
    f.handle_rtcp(t0 + Duration::from_secs(1), a, &pli);
    let again = drain(&mut f, t0, a, &mut fu);
    let types: Vec<u8> = again
        .iter()
        .flat_map(|(_, n)| n.iter().map(|n| nal_unit_type(n[0])))
        .collect();
    // The keyframe of frame 10 with its parameter sets, then frames 11..=14.
    assert_eq!(types[..3], [7, 8, 5]);
    assert_eq!(types.iter().filter(|t| **t == 1).count(), 4);
    assert_eq!(f.sender(a).unwrap().stats().catch_ups, 1);
    assert!(!f.track_mut().poll_source_keyframe_request());
}

#[test]
fn long_groups_are_not_cached_and_the_source_is_asked() {
    let t0 = Instant::now();
    let mut t = Track::new(Codec::Vp8);
    let key = Bytes::from_static(&[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
    t.handle_frame(
        t0,
        Frame {
            timestamp: 0,
            keyframe: true,
            data: FrameData::Whole(key),
        },
    );
    assert_eq!(t.stats(t0).width, Some(320));
    assert_eq!(t.catch_up(t0).len(), 1);
    for i in 0..MAX_CATCH_UP_FRAMES {
        t.handle_frame(
            t0,
            Frame {
                timestamp: i as u32,
                keyframe: false,
                data: FrameData::Whole(Bytes::from_static(&[0x51, 0, 0])),
            },
        );
    }
    assert!(t.catch_up(t0).is_empty());
    assert!(t.poll_source_keyframe_request());
    assert!(!t.poll_source_keyframe_request(), "read once");
    assert!(t.catch_up(t0 + Duration::from_millis(10)).is_empty());
    assert!(!t.poll_source_keyframe_request(), "once a second");
}

#[test]
fn vp8_file_resolution_and_opus_has_no_cache() {
    let Some(path) = testdata::vp8("320x240", 1) else {
        return;
    };
    let mut r = IvfReader::default();
    r.push(&std::fs::read(path).unwrap());
    let t0 = Instant::now();
    let mut f = Fanout::new(Codec::Vp8);
    let v = f.add_viewer(t0, cfg(Codec::Vp8, 5));
    let mut n = 0;
    while let Some(fr) = r.poll().unwrap() {
        let keyframe = vp8::parse_header(&fr.data).unwrap().keyframe;
        f.handle_frame(
            t0,
            Frame {
                timestamp: 3000 * fr.timestamp as u32,
                keyframe,
                data: FrameData::Whole(fr.data),
            },
        );
        n += 1;
    }
    assert_eq!(n, 30);
    let s = f.track().stats(t0);
    assert_eq!((s.width, s.height, s.codec), (Some(320), Some(240), "VP8"));
    assert!(f.sender(v).unwrap().queued() > 30);
    let mut a = Track::new(Codec::Opus);
    a.handle_frame(
        t0,
        Frame {
            timestamp: 0,
            keyframe: true,
            data: FrameData::Whole(Bytes::from_static(&[0xfc, 0])),
        },
    );
    assert!(a.gop.is_empty());
}

#[test]
fn payload_helpers() {
    assert_eq!(vp8_descriptor_len(&[0x10, 0xaa]), Some(1));
    assert_eq!(vp8_descriptor_len(&[0x90, 0x80, 0x81, 0x23, 0xaa]), Some(4));
    assert_eq!(vp8_descriptor_len(&[0x90, 0xe0, 0x05, 0x01, 0x20]), Some(5));
    assert_eq!(vp8_descriptor_len(&[0x90, 0x80]), None);
    assert_eq!(vp8_descriptor_len(&[]), None);
    let stap = [24, 0, 2, 0x67, 1, 0, 1, 0x68, 0, 9];
    assert_eq!(h264_nals_in_payload(&stap), [&[0x67, 1][..], &[0x68]]);
    // A zero-length unit inside a STAP-A (found by the fuzzer: it crashed the RTP framer).
    let stap = [24, 0, 0, 0, 2, 0x67, 1, 0, 9];
    assert_eq!(h264_nals_in_payload(&stap), [&[0x67, 1][..]]);
    let mut f = crate::media::rtp_in::RtpFramer::new(Codec::H264);
    let mut p = vec![0x80, 0xe0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5];
    p.extend([24, 0, 0, 0, 2, 0x67, 1]);
    f.push(Bytes::from(p));
    assert_eq!(h264_nals_in_payload(&[28, 0x85, 1]), Vec::<&[u8]>::new());
    assert_eq!(h264_nals_in_payload(&[0x41, 1]), [&[0x41, 1][..]]);
}
