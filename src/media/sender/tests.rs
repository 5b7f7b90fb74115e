//! The sender engine against hand-made frames and real RTCP packets (rtc-rtcp built),
//! on a simulated clock.

use super::*;
use crate::media::negotiate::Feedback as Fb;
use crate::media::packetize::{Frame, FrameData, Packetizer};
use rtc_rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc_shared::marshal::Unmarshal;

const SSRC: u32 = 0x1111_1111;
const RTX_SSRC: u32 = 0x2222_2222;

fn negotiated(codec: Codec, rtx: bool) -> Negotiated {
    Negotiated {
        codec,
        pt: 102,
        rtx_pt: rtx.then_some(103),
        feedback: Fb {
            nack: true,
            pli: true,
            fir: true,
            transport_cc: false,
            remb: false,
        },
        profile_level_id: None,
        level_above_offer: false,
    }
}

fn sender(codec: Codec, rtx: bool) -> Sender {
    // seed: initial seq 0xfffe (wraps soon), initial timestamp 0xffff_fff0.
    let cfg = SenderConfig::new(
        &negotiated(codec, rtx),
        SSRC,
        RTX_SSRC,
        "cname-1",
        0xfffe_0000_ffff_fff0,
    );
    Sender::new(cfg)
}

/// Frames from one packetizer: `sizes` bytes each, keyframes where `key`.
struct Source {
    p: Packetizer,
    ts: u32,
}

impl Source {
    fn new(codec: Codec) -> Source {
        Source {
            p: Packetizer::with_max_payload(codec, 100),
            ts: 1_000_000,
        }
    }
    fn frame(&mut self, at: Instant, key: bool, size: usize) -> Arc<PacketizedFrame> {
        let mut data = vec![0x41u8; size];
        data[0] = if key { 0x65 } else { 0x41 };
        let f = self.p.packetize(
            at,
            Frame {
                timestamp: self.ts,
                keyframe: key,
                data: FrameData::Nals(vec![Bytes::from(data)]),
            },
        );
        self.ts = self.ts.wrapping_add(3000);
        Arc::new(f)
    }
}

fn drain(s: &mut Sender, now: Instant) -> Vec<(Transmit, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(t) = s.poll_transmit(now, &mut buf) {
        out.push((t, buf.clone()));
    }
    out
}

fn rtp(b: &[u8]) -> rtc_rtp::Packet {
    rtc_rtp::Packet::unmarshal(&mut &b[..]).expect("valid RTP")
}

fn rtcp_bytes(p: Vec<Box<dyn rtc_rtcp::packet::Packet>>) -> Vec<u8> {
    rtc_rtcp::packet::marshal(&p).unwrap().to_vec()
}

#[test]
fn a_joining_viewer_gets_the_cached_group_then_the_live_stream() {
    let t0 = Instant::now();
    let mut src = Source::new(Codec::H264);
    let mut s = sender(Codec::H264, true);
    assert_eq!(
        s.poll_event(),
        Some(SenderEvent::KeyframeRequest(KeyframeCause::Join))
    );
    assert!(s.awaiting_keyframe());
    // The stream's cache: a keyframe (3 packets) and two delta frames (1 packet each).
    let key = src.frame(t0, true, 250);
    let d1 = src.frame(t0, false, 50);
    let d2 = src.frame(t0, false, 50);
    s.handle_catch_up(t0, &[key.clone(), d1.clone(), d2.clone()]);
    // A frame the catch-up already had comes late through the channel: ignored.
    s.handle_frame(t0, &d2);
    let d3 = src.frame(t0 + Duration::from_millis(33), false, 50);
    s.handle_frame(t0 + Duration::from_millis(33), &d3);
    let out = drain(&mut s, t0);
    let pkts: Vec<rtc_rtp::Packet> = out.iter().map(|(_, b)| rtp(b)).collect();
    let shape: Vec<(u16, u32, bool)> = pkts
        .iter()
        .map(|p| {
            (
                p.header.sequence_number,
                p.header.timestamp,
                p.header.marker,
            )
        })
        .collect();
    let base = 0xffff_fff0u32;
    assert_eq!(
        shape,
        [
            (0xfffe, base, false),
            (0xffff, base, false),
            (0x0000, base, true),
            (0x0001, base.wrapping_add(1), true),
            (0x0002, base.wrapping_add(2), true),
            // Live again: the source's 3000 ticks after d2.
            (0x0003, base.wrapping_add(2 + 3000), true),
        ]
    );
    assert!(pkts
        .iter()
        .all(|p| p.header.ssrc == SSRC && p.header.payload_type == 102));
    assert_eq!(&pkts[0].payload[..], &key.payloads[0].to_vec()[..]);
    assert_eq!(s.stats().catch_ups, 1);
    assert_eq!(s.stats().packets_sent, 6);
    // A catch-up must start with a keyframe.
    let mut s2 = sender(Codec::H264, false);
    s2.handle_catch_up(t0, &[d1]);
    assert!(s2.awaiting_keyframe() && s2.queued() == 0);
}

#[test]
fn without_a_cache_the_viewer_starts_at_the_next_live_keyframe() {
    let t0 = Instant::now();
    let mut src = Source::new(Codec::H264);
    let mut s = sender(Codec::H264, false);
    let d = src.frame(t0, false, 50);
    s.handle_frame(t0, &d);
    assert_eq!(s.queued(), 0, "no decoding from mid-GOP");
    assert_eq!(s.stats().frames_dropped, 1);
    let k = src.frame(t0, true, 50);
    s.handle_frame(t0, &k);
    let out = drain(&mut s, t0);
    assert_eq!(out.len(), 1);
    assert_eq!(rtp(&out[0].1).header.timestamp, 0xffff_fff0);
}

#[test]
fn nack_is_answered_with_rtx_carrying_the_original_sequence_number() {
    let t0 = Instant::now();
    let mut src = Source::new(Codec::H264);
    for rtx in [true, false] {
        let mut s = sender(Codec::H264, rtx);
        s.handle_frame(t0, &src.frame(t0, true, 250));
        let sent = drain(&mut s, t0);
        let second = rtp(&sent[1].1);
        let nack = TransportLayerNack {
            sender_ssrc: 9,
            media_ssrc: SSRC,
            nacks: vec![NackPair {
                packet_id: second.header.sequence_number,
                lost_packets: 0b10, // and 2 after it: never sent
            }],
        };
        let nack = rtcp_bytes(vec![Box::new(nack)]);
        s.handle_rtcp(t0, &nack);
        let again = drain(&mut s, t0);
        assert_eq!(again.len(), 1);
        let p = rtp(&again[0].1);
        if rtx {
            assert_eq!((p.header.ssrc, p.header.payload_type), (RTX_SSRC, 103));
            assert_eq!(
                u16::from_be_bytes([p.payload[0], p.payload[1]]),
                second.header.sequence_number,
                "OSN"
            );
            assert_eq!(&p.payload[2..], &second.payload[..]);
        } else {
            assert_eq!(p, second, "the same packet again");
        }
        assert_eq!(p.header.timestamp, second.header.timestamp);
        assert_eq!(s.stats().retransmits, 1);
        assert_eq!(s.stats().retransmits_missed, 1);
        // The same NACK right away (it crossed the retransmission): not resent twice.
        s.handle_rtcp(t0, &nack);
        assert_eq!(drain(&mut s, t0 + Duration::from_millis(1)).len(), 0);
        // Later it is.
        s.handle_rtcp(t0, &nack);
        assert_eq!(drain(&mut s, t0 + Duration::from_millis(50)).len(), 1);
        // A NACK for another SSRC is not ours.
        let other = rtcp_bytes(vec![Box::new(TransportLayerNack {
            sender_ssrc: 9,
            media_ssrc: SSRC + 1,
            nacks: vec![NackPair::new(second.header.sequence_number)],
        })]);
        s.handle_rtcp(t0 + Duration::from_secs(1), &other);
        assert_eq!(drain(&mut s, t0 + Duration::from_secs(1)).len(), 0);
    }
}

#[test]
fn nack_not_negotiated_is_ignored_and_history_is_bounded() {
    let t0 = Instant::now();
    let mut src = Source::new(Codec::H264);
    let mut n = negotiated(Codec::H264, false);
    n.feedback.nack = false;
    let mut s = Sender::new(SenderConfig::new(&n, SSRC, 0, "c", 0));
    s.handle_frame(t0, &src.frame(t0, true, 50));
    let first = rtp(&drain(&mut s, t0)[0].1).header.sequence_number;
    let nack = rtcp_bytes(vec![Box::new(TransportLayerNack {
        sender_ssrc: 9,
        media_ssrc: SSRC,
        nacks: vec![NackPair::new(first)],
    })]);
    s.handle_rtcp(t0, &nack);
    assert_eq!(drain(&mut s, t0).len(), 0);
    // Negotiated, but the packet has left the history.
    let mut s = sender(Codec::H264, false);
    s.handle_frame(t0, &src.frame(t0, true, 50));
    let first = rtp(&drain(&mut s, t0)[0].1).header.sequence_number;
    for _ in 0..HISTORY_PACKETS {
        s.handle_frame(t0, &src.frame(t0, false, 50));
        drain(&mut s, t0);
    }
    let nack = rtcp_bytes(vec![Box::new(TransportLayerNack {
        sender_ssrc: 9,
        media_ssrc: SSRC,
        nacks: vec![NackPair::new(first)],
    })]);
    s.handle_rtcp(t0, &nack);
    assert_eq!(drain(&mut s, t0).len(), 0);
    assert_eq!(s.stats().retransmits_missed, 1);
}

#[test]
fn a_packet_older_than_the_history_age_is_not_resent() {
    let t0 = Instant::now();
    let mut src = Source::new(Codec::H264);
    let nack_of = |seq| {
        rtcp_bytes(vec![Box::new(TransportLayerNack {
            sender_ssrc: 9,
            media_ssrc: SSRC,
            nacks: vec![NackPair::new(seq)],
        })])
    };
    let mut s = sender(Codec::H264, false);
    s.handle_frame(t0, &src.frame(t0, true, 50));
    let first = rtp(&drain(&mut s, t0)[0].1).header.sequence_number;
    // Within the age, a later packet leaves the first one in the history.
    let t1 = t0 + HISTORY_AGE / 2;
    s.handle_frame(t1, &src.frame(t1, false, 50));
    drain(&mut s, t1);
    s.handle_rtcp(t1, &nack_of(first));
    assert_eq!(drain(&mut s, t1).len(), 1, "resent within the age");
    // Past the age, the next packet sent pushes it out.
    let t2 = t0 + HISTORY_AGE + Duration::from_millis(100);
    s.handle_frame(t2, &src.frame(t2, false, 50));
    drain(&mut s, t2);
    s.handle_rtcp(t2, &nack_of(first));
    assert_eq!(drain(&mut s, t2).len(), 0);
    assert_eq!(s.stats().retransmits_missed, 1);
}

#[test]
fn pli_and_fir_ask_for_a_keyframe_once_per_interval() {
    let t0 = Instant::now();
    let mut s = sender(Codec::H264, false);
    assert!(s.poll_event().is_some()); // join
    let pli = rtcp_bytes(vec![Box::new(PictureLossIndication {
        sender_ssrc: 9,
        media_ssrc: SSRC,
    })]);
    s.handle_rtcp(t0, &pli);
    assert_eq!(
        s.poll_event(),
        Some(SenderEvent::KeyframeRequest(KeyframeCause::Pli))
    );
    s.handle_rtcp(t0 + Duration::from_millis(100), &pli);
    assert_eq!(s.poll_event(), None, "within the interval");
    let fir = |seq| {
        rtcp_bytes(vec![Box::new(FullIntraRequest {
            sender_ssrc: 9,
            media_ssrc: 0,
            fir: vec![FirEntry {
                ssrc: SSRC,
                sequence_number: seq,
            }],
        })])
    };
    let later = t0 + Duration::from_secs(1);
    s.handle_rtcp(later, &fir(5));
    assert_eq!(
        s.poll_event(),
        Some(SenderEvent::KeyframeRequest(KeyframeCause::Fir))
    );
    s.handle_rtcp(later + Duration::from_secs(1), &fir(5));
    assert_eq!(s.poll_event(), None, "a repeated FIR command");
    assert_eq!((s.stats().plis, s.stats().firs), (2, 1));
}

#[test]
fn sender_report_maps_ntp_to_rtp_and_receiver_reports_give_rtt() {
    let t0 = Instant::now();
    let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut src = Source::new(Codec::H264);
    let mut s = sender(Codec::H264, false);
    assert_eq!(s.poll_timeout(), None, "no report before media");
    let k = src.frame(t0, true, 250);
    s.handle_frame(t0, &k);
    let media = drain(&mut s, t0);
    assert_eq!(media.len(), 3);
    assert_eq!(s.poll_timeout(), Some(t0));
    // 500 ms after the frame came: the RTP time is the frame's plus 45000 ticks.
    let t1 = t0 + Duration::from_millis(500);
    let wall1 = wall0 + Duration::from_millis(500);
    s.handle_timeout(t1, wall1);
    assert_eq!(s.poll_timeout(), Some(t1 + SR_INTERVAL));
    let out = drain(&mut s, t1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Transmit::Rtcp);
    let pkts = rtc_rtcp::packet::unmarshal(&mut &out[0].1[..]).unwrap();
    let sr = pkts[0]
        .as_any()
        .downcast_ref::<rtc_rtcp::sender_report::SenderReport>()
        .unwrap();
    assert_eq!(sr.ssrc, SSRC);
    assert_eq!(sr.ntp_time, ntp(wall1));
    assert_eq!(sr.rtp_time, 0xffff_fff0u32.wrapping_add(45_000));
    // 249 bytes after the NAL header in three FU-A pieces of 83, each with 2 header bytes.
    assert_eq!((sr.packet_count, sr.octet_count), (3, 249 + 6));
    let sdes = pkts[1]
        .as_any()
        .downcast_ref::<SourceDescription>()
        .unwrap();
    assert_eq!(&sdes.chunks[0].items[0].text[..], b"cname-1");
    // The viewer answers 100 ms later, having held the SR for 30 ms (DLSR 1/65536 s units).
    let rr = ReceiverReport {
        ssrc: 9,
        reports: vec![ReceptionReport {
            ssrc: SSRC,
            fraction_lost: 64,
            total_lost: 7,
            last_sequence_number: 5,
            jitter: 900,
            last_sender_report: ntp_mid32(sr.ntp_time),
            delay: 65_536 * 30 / 1000,
        }],
        profile_extensions: Bytes::new(),
    };
    s.handle_rtcp(
        t1 + Duration::from_millis(100),
        &rtcp_bytes(vec![Box::new(rr)]),
    );
    let st = s.stats();
    let rtt = st.rtt.unwrap();
    assert!(
        rtt >= Duration::from_millis(69) && rtt <= Duration::from_millis(71),
        "{rtt:?}"
    );
    assert_eq!((st.fraction_lost, st.cumulative_lost), (0.25, 7));
    assert_eq!(st.jitter, 0.01);
    // Not due yet: nothing.
    s.handle_timeout(t1 + Duration::from_millis(10), wall1);
    assert_eq!(drain(&mut s, t1).len(), 0);
}

#[test]
fn a_slow_viewer_is_bounded_and_skips_to_the_next_keyframe() {
    let t0 = Instant::now();
    let mut src = Source::new(Codec::H264);
    let mut cfg = SenderConfig::new(&negotiated(Codec::H264, false), SSRC, 0, "c", 0);
    cfg.queue_limit = 10;
    let mut s = Sender::new(cfg);
    s.poll_event();
    s.handle_frame(t0, &src.frame(t0, true, 250)); // 3 packets
    for _ in 0..7 {
        s.handle_frame(t0, &src.frame(t0, false, 50));
    }
    assert_eq!(s.queued(), 10);
    // The owner never polls: the next frame overflows the queue.
    s.handle_frame(t0, &src.frame(t0, false, 50));
    assert_eq!(s.queued(), 0);
    assert!(s.awaiting_keyframe());
    assert_eq!(
        s.poll_event(),
        Some(SenderEvent::KeyframeRequest(KeyframeCause::Overflow))
    );
    for _ in 0..100 {
        s.handle_frame(t0, &src.frame(t0, false, 50));
        assert!(s.queued() <= 10);
    }
    assert_eq!(s.queued(), 0);
    s.handle_frame(t0, &src.frame(t0, true, 250));
    assert_eq!(s.queued(), 3);
    assert_eq!(s.stats().overflows, 1);
    assert_eq!(s.stats().frames_dropped, 101);
    // Sequence numbers stay contiguous: the viewer sees no loss to NACK.
    let seqs: Vec<u16> = drain(&mut s, t0)
        .iter()
        .map(|(_, b)| rtp(b).header.sequence_number)
        .collect();
    assert_eq!(seqs, [0, 1, 2]);
}

#[test]
fn a_missed_frame_waits_for_a_keyframe_but_audio_goes_on() {
    let t0 = Instant::now();
    let mut src = Source::new(Codec::H264);
    let mut s = sender(Codec::H264, false);
    s.poll_event();
    s.handle_frame(t0, &src.frame(t0, true, 50));
    let _lost = src.frame(t0, false, 50);
    s.handle_frame(t0, &src.frame(t0, false, 50));
    assert!(s.awaiting_keyframe());
    assert_eq!(
        s.poll_event(),
        Some(SenderEvent::KeyframeRequest(KeyframeCause::Gap))
    );
    assert_eq!(drain(&mut s, t0).len(), 1);

    let mut src = Source::new(Codec::Opus);
    let mut a = sender(Codec::Opus, false);
    assert_eq!(a.poll_event(), None, "no keyframes in Opus");
    let mut f = |key| {
        let mut p = Packetizer::new(Codec::Opus);
        let _ = key;
        src.ts = src.ts.wrapping_add(960);
        let mut f = p.packetize(
            t0,
            Frame {
                timestamp: src.ts,
                keyframe: true,
                data: FrameData::Whole(Bytes::from_static(&[0xfc, 1])),
            },
        );
        f.index = u64::from(src.ts / 960);
        Arc::new(f)
    };
    let a1 = f(true);
    let _skipped = f(true);
    let a3 = f(true);
    a.handle_frame(t0, &a1);
    a.handle_frame(t0, &a3);
    let out = drain(&mut a, t0);
    assert_eq!(out.len(), 2);
    let (p1, p3) = (rtp(&out[0].1), rtp(&out[1].1));
    assert!(!p1.header.marker);
    assert_eq!(p3.header.timestamp.wrapping_sub(p1.header.timestamp), 1920);
}

#[test]
fn garbage_rtcp_is_counted_not_fatal() {
    let t0 = Instant::now();
    let mut s = sender(Codec::Vp8, false);
    s.handle_rtcp(t0, &[0x80, 201, 0, 10, 1, 2]);
    s.handle_rtcp(t0, &[]);
    s.handle_rtcp(t0, &[0xff; 40]);
    assert_eq!(s.stats().rtcp_errors, 2);
}

#[test]
fn a_big_catch_up_is_paced_after_its_keyframe() {
    let t0 = Instant::now();
    let mut src = Source::new(Codec::H264);
    let mut s = sender(Codec::H264, false);
    // A 10 s group: a 20 KB keyframe and 299 frames of 1 KB (100-byte payloads), about
    // 330 KB, so 8x its rate is below the 10 Mbit/s floor: paced at 1.25 MB/s.
    let mut group = vec![src.frame(t0, true, 20_000)];
    group.extend((0..299).map(|_| src.frame(t0, false, 1000)));
    let packets: usize = group.iter().map(|f| f.payloads.len()).sum();
    s.handle_catch_up(t0, &group);
    let rtp_only = |v: Vec<(Transmit, Vec<u8>)>| -> Vec<Vec<u8>> {
        v.into_iter()
            .filter(|(t, _)| *t == Transmit::Rtp)
            .map(|(_, b)| b)
            .collect()
    };
    let first = rtp_only(drain(&mut s, t0));
    let key_packets = group[0].payloads.len();
    let sent: usize = first.iter().map(Vec::len).sum();
    // The keyframe and about CATCH_UP_BURST more; not the whole group.
    assert!(first.len() > key_packets, "{} packets", first.len());
    assert!(
        first.len() < packets,
        "{} of {packets} at once",
        first.len()
    );
    let cap = group[0].bytes() as f64 + 12.0 * key_packets as f64 + CATCH_UP_BURST;
    assert!(
        sent as f64 <= cap + 200.0,
        "{sent} bytes at once, cap {cap}"
    );
    // The rest as time passes, each step when poll_timeout says (sender reports too, as
    // the media actor does).
    let mut now = t0;
    let mut total = first.len();
    let mut steps = 0;
    while total < packets {
        let due = s.poll_timeout().expect("a pacing deadline");
        assert!(due >= now, "a deadline in the past");
        now = due;
        s.handle_timeout(now, SystemTime::now());
        total += rtp_only(drain(&mut s, now)).len();
        steps += 1;
        assert!(steps < 100_000, "stuck at {total} of {packets}");
    }
    let took = now - t0;
    assert!(
        took > Duration::from_millis(150) && took < Duration::from_millis(400),
        "{took:?}"
    );
    // Then no pacing: a live frame goes at once.
    let live = src.frame(now, false, 1000);
    s.handle_frame(now, &live);
    assert_eq!(rtp_only(drain(&mut s, now)).len(), live.payloads.len());
    // Only the next sender report is left to wait for.
    let next = s.poll_timeout().expect("sender report");
    assert!(next > now + Duration::from_millis(500), "{:?}", next - now);
}
