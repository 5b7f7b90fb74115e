//! A media session against a second SrtpSession playing the viewer: what it sends
//! decrypts, NACKs through SRTCP are answered with RTX, PLIs become keyframe requests.

use super::*;
use crate::media::negotiate::{Feedback, Negotiated};
use crate::media::packetize::{Frame, FrameData, Packetizer};
use crate::media::srtp::{DtlsRole, SrtpProfile};
use crate::media::Codec;
use bytes::Bytes;
use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc_rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc_shared::marshal::Unmarshal;
use std::time::Duration;

const VIDEO: u32 = 0x0101_0101;
const RTX: u32 = 0x0202_0202;
const AUDIO: u32 = 0x0303_0303;

fn config(codec: Codec, pt: u8, ssrc: u32, rtx: Option<u8>) -> SenderConfig {
    let n = Negotiated {
        codec,
        pt,
        rtx_pt: rtx,
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
    SenderConfig::new(&n, ssrc, RTX, "cname", 0x1234_0000_0000_1000)
}

/// The session (DTLS server) and the viewer's SRTP (DTLS client), keyed alike.
fn pair(profile: SrtpProfile) -> (MediaSession, SrtpSession) {
    let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
    let mut s = MediaSession::new(vec![
        config(Codec::H264, 102, VIDEO, Some(103)),
        config(Codec::Opus, 111, AUDIO, None),
    ]);
    s.set_srtp(SrtpSession::new(profile, &material, DtlsRole::Server).unwrap());
    let viewer = SrtpSession::new(profile, &material, DtlsRole::Client).unwrap();
    (s, viewer)
}

fn h264(p: &mut Packetizer, index: u32, key: bool, size: usize) -> Arc<PacketizedFrame> {
    let mut data = vec![0x41u8; size];
    data[0] = if key { 0x65 } else { 0x41 };
    Arc::new(p.packetize(
        Instant::now(),
        Frame {
            timestamp: index * 3000,
            keyframe: key,
            data: FrameData::Nals(vec![Bytes::from(data)]),
        },
    ))
}

fn opus(p: &mut Packetizer, index: u32) -> Arc<PacketizedFrame> {
    Arc::new(p.packetize(
        Instant::now(),
        Frame {
            timestamp: index * 960,
            keyframe: true,
            data: FrameData::Whole(Bytes::from_static(&[0xfc, 1, 2, 3])),
        },
    ))
}

/// Everything the session sends, decrypted by the viewer: (RTP packets, RTCP count).
fn receive(
    s: &mut MediaSession,
    viewer: &mut SrtpSession,
    now: Instant,
) -> (Vec<rtc_rtp::Packet>, usize) {
    let (mut rtp, mut rtcp) = (Vec::new(), 0);
    while let Some(d) = s.poll_datagram(now) {
        assert!(is_rtp_or_rtcp(&d));
        if is_rtcp(&d) {
            viewer.unprotect_rtcp(&d).expect("SRTCP decrypts");
            rtcp += 1;
        } else {
            let plain = viewer.unprotect_rtp(&d).expect("SRTP decrypts");
            rtp.push(rtc_rtp::Packet::unmarshal(&mut &plain[..]).unwrap());
        }
    }
    (rtp, rtcp)
}

#[test]
fn packets_decrypt_at_the_viewer_and_a_nack_gets_rtx() {
    for profile in [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::AeadAes128Gcm] {
        let (mut s, mut viewer) = pair(profile);
        let t0 = Instant::now();
        let (mut v, mut a) = (
            Packetizer::with_max_payload(Codec::H264, 100),
            Packetizer::new(Codec::Opus),
        );
        // The video track joins: it asks for a keyframe; the stream answers with its cache.
        assert_eq!(s.poll_keyframe_request(), Some((0, KeyframeCause::Join)));
        assert_eq!(s.poll_keyframe_request(), None, "audio needs none");
        s.handle_catch_up(t0, 0, &[h264(&mut v, 0, true, 250)]);
        s.handle_frame(t0, 0, &h264(&mut v, 1, false, 50));
        s.handle_frame(t0, 1, &opus(&mut a, 0));
        let (rtp, _) = receive(&mut s, &mut viewer, t0);
        let video: Vec<_> = rtp.iter().filter(|p| p.header.ssrc == VIDEO).collect();
        let audio: Vec<_> = rtp.iter().filter(|p| p.header.ssrc == AUDIO).collect();
        assert_eq!(
            video.len(),
            4,
            "3 FU-A packets of the keyframe and the next frame"
        );
        assert!(video.iter().all(|p| p.header.payload_type == 102));
        assert_eq!(audio.len(), 1);
        assert_eq!(audio[0].header.payload_type, 111);
        assert_eq!(&audio[0].payload[..], &[0xfc, 1, 2, 3]);
        // The viewer lost the second packet and says so through SRTCP.
        let lost = video[1].clone();
        let nack = TransportLayerNack {
            sender_ssrc: 7,
            media_ssrc: VIDEO,
            nacks: vec![NackPair::new(lost.header.sequence_number)],
        };
        let plain =
            rtc_rtcp::packet::marshal(&[Box::new(nack) as Box<dyn rtc_rtcp::packet::Packet>])
                .unwrap();
        let wire = viewer.protect_rtcp(&plain).unwrap();
        s.handle_datagram(t0, &wire);
        let (again, _) = receive(&mut s, &mut viewer, t0);
        assert_eq!(again.len(), 1);
        let rtx = &again[0];
        assert_eq!((rtx.header.ssrc, rtx.header.payload_type), (RTX, 103));
        assert_eq!(
            u16::from_be_bytes([rtx.payload[0], rtx.payload[1]]),
            lost.header.sequence_number
        );
        assert_eq!(&rtx.payload[2..], &lost.payload[..]);
        assert_eq!(s.sender_stats()[0].retransmits, 1);
        assert_eq!(s.stats().rtcp_received, 1);
        // A PLI, well past the join's request: a keyframe request for the video track.
        let pli = rtc_rtcp::packet::marshal(&[Box::new(PictureLossIndication {
            sender_ssrc: 7,
            media_ssrc: VIDEO,
        }) as Box<dyn rtc_rtcp::packet::Packet>])
        .unwrap();
        let later = t0 + Duration::from_secs(1);
        s.handle_datagram(later, &viewer.protect_rtcp(&pli).unwrap());
        assert_eq!(s.poll_keyframe_request(), Some((0, KeyframeCause::Pli)));
        // Sender reports go out for both tracks and decrypt.
        s.handle_timeout(later, std::time::SystemTime::now());
        let (_, rtcp) = receive(&mut s, &mut viewer, later);
        assert_eq!(rtcp, 2);
    }
}

#[test]
fn nothing_flows_before_the_keys_and_bad_input_is_counted() {
    let profile = SrtpProfile::Aes128CmHmacSha1_80;
    let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
    let mut s = MediaSession::new(vec![config(Codec::Vp8, 96, VIDEO, None)]);
    let mut v = Packetizer::new(Codec::Vp8);
    let t0 = Instant::now();
    let key = Arc::new(v.packetize(
        t0,
        Frame {
            timestamp: 0,
            keyframe: true,
            data: FrameData::Whole(Bytes::from(vec![
                0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0, 0, 0, 0,
            ])),
        },
    ));
    s.handle_frame(t0, 0, &key);
    assert_eq!(s.poll_keyframe_request(), None, "held until keyed");
    assert!(s.poll_datagram(t0).is_none());
    assert_eq!(s.poll_timeout(), None);
    s.handle_datagram(t0, &[0x80, 200, 0, 1]);
    assert_eq!(s.stats().frames_before_keys, 1);
    assert_eq!(s.stats().srtp_errors, 1);
    s.set_srtp(SrtpSession::new(profile, &material, DtlsRole::Client).unwrap());
    assert!(s.keyed());
    assert_eq!(s.poll_keyframe_request(), Some((0, KeyframeCause::Join)));
    // Garbage, truncated and wrongly keyed datagrams: counted, never a panic.
    for junk in [
        &[0x80u8][..],
        &[0x80, 0xc9],
        &[0x90; 40],
        &[0x81, 201, 0, 7, 1, 2, 3],
    ] {
        s.handle_datagram(t0, junk);
    }
    assert_eq!(s.stats().srtp_errors, 5);
    // Frames for a track that does not exist are ignored.
    s.handle_frame(t0, 5, &key);
    s.handle_catch_up(t0, 0, std::slice::from_ref(&key));
    let mut viewer = SrtpSession::new(profile, &material, DtlsRole::Server).unwrap();
    let (rtp, _) = receive(&mut s, &mut viewer, t0);
    assert_eq!(rtp.len(), 1);
    assert_eq!(rtp[0].header.payload_type, 96);
    assert!(rtp[0].header.marker);
}
