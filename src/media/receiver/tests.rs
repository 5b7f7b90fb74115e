//! The receive engine against packets from our own packetizer: in order, reordered,
//! duplicated, lost and repaired by RTX, lost for good; wrong payload types, SSRC changes,
//! garbage; the RTCP it writes.

use super::*;
use crate::media::negotiate::Feedback;
use crate::media::packetize::{Frame, FrameData, Packetizer};
use crate::media::rtcp::{read_feedback, Feedback as Fb};

const PT: u8 = 102;
const RTX: u8 = 103;
const SSRC: u32 = 0x1234_5678;

fn config(codec: Codec) -> ReceiverConfig {
    let n = Negotiated {
        codec,
        pt: PT,
        rtx_pt: Some(RTX),
        feedback: Feedback {
            nack: true,
            pli: true,
            fir: true,
            transport_cc: false,
            remb: true,
        },
        profile_level_id: None,
        level_above_offer: false,
    };
    ReceiverConfig::new(&n, 42, None)
}

/// Makes the RTP packets of a stream of H.264 frames (every `gop`th one an IDR).
struct Source {
    packetizer: Packetizer,
    seq: u16,
    ts: u32,
    n: u32,
}

impl Source {
    fn new(seq: u16) -> Self {
        Source {
            packetizer: Packetizer::with_max_payload(Codec::H264, 500),
            seq,
            ts: 1000,
            n: 0,
        }
    }

    /// The next frame's packets (a keyframe when `key`), `size` bytes of slice.
    fn frame(&mut self, key: bool, size: usize) -> Vec<RtpIn> {
        let mut nal = vec![if key { 0x65 } else { 0x41 }];
        nal.extend((0..size).map(|i| (i as u32 + self.n) as u8 | 1));
        self.n += 1;
        self.ts = self.ts.wrapping_add(3000);
        let f = self.packetizer.packetize(
            Instant::now(),
            Frame {
                timestamp: self.ts,
                keyframe: key,
                data: FrameData::Nals(vec![Bytes::from(nal)]),
            },
        );
        let n = f.payloads.len();
        f.payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                self.seq = self.seq.wrapping_add(1);
                RtpIn {
                    pt: PT,
                    marker: i + 1 == n,
                    seq: self.seq,
                    timestamp: self.ts,
                    ssrc: SSRC,
                    payload: Bytes::from(p.to_vec()),
                }
            })
            .collect()
    }
}

fn rtx_of(p: &RtpIn, rtx_seq: u16) -> RtpIn {
    let mut payload = p.seq.to_be_bytes().to_vec();
    payload.extend_from_slice(&p.payload);
    RtpIn {
        pt: RTX,
        marker: p.marker,
        seq: rtx_seq,
        timestamp: p.timestamp,
        ssrc: SSRC + 1,
        payload: Bytes::from(payload),
    }
}

fn frames(r: &mut Receiver) -> Vec<ReceivedFrame> {
    std::iter::from_fn(|| r.poll_frame()).collect()
}

fn feedback(r: &mut Receiver) -> Vec<Fb> {
    std::iter::from_fn(|| r.poll_rtcp())
        .flat_map(|p| read_feedback(&p).0)
        .collect()
}

#[test]
fn in_order_reordered_and_duplicated_packets_make_whole_frames() {
    let t0 = Instant::now();
    let mut r = Receiver::new(config(Codec::H264));
    // Sequence numbers wrap inside the run.
    let mut src = Source::new(65530);
    for p in src.frame(true, 2000) {
        r.handle_rtp(t0, p);
    }
    let f = frames(&mut r);
    assert_eq!(f.len(), 1);
    assert!(f[0].keyframe && f[0].data.starts_with(&[0, 0, 0, 1, 0x65]));
    // Reordered (two packets swapped) and one duplicated: same frame out, nothing lost.
    let mut pk = src.frame(false, 2000);
    pk.swap(1, 2);
    let dup = pk[0].clone();
    pk.insert(1, dup);
    for p in pk {
        r.handle_rtp(t0, p);
    }
    let f = frames(&mut r);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].data.len(), 4 + 2001);
    let s = r.stats();
    assert_eq!((s.lost, s.late, s.frames, s.frames_dropped), (0, 1, 2, 0));
    // The swap made a hole for a moment: one NACK may have gone out, never a PLI.
    assert!(feedback(&mut r)
        .iter()
        .all(|f| !matches!(f, Fb::Pli { .. })));
}

#[test]
fn a_lost_packet_is_nacked_and_repaired_by_rtx() {
    let t0 = Instant::now();
    let mut r = Receiver::new(config(Codec::H264));
    let mut src = Source::new(100);
    for p in src.frame(true, 1500) {
        r.handle_rtp(t0, p);
    }
    frames(&mut r);
    let pk = src.frame(false, 1500);
    let lost = pk[1].clone();
    for (i, p) in pk.into_iter().enumerate() {
        if i != 1 {
            r.handle_rtp(t0, p);
        }
    }
    assert!(frames(&mut r).is_empty(), "held behind the hole");
    let fb = feedback(&mut r);
    assert!(
        fb.iter()
            .any(|f| matches!(f, Fb::Nack { media_ssrc: SSRC, seqs } if seqs == &[lost.seq])),
        "{fb:?}"
    );
    // Not answered: asked again after the interval, at most the retry count.
    let mut t = t0;
    for _ in 0..5 {
        t += DEFAULT_NACK_INTERVAL;
        r.handle_timeout(t);
    }
    assert_eq!(r.stats().nacks_sent, u64::from(DEFAULT_NACK_RETRIES));
    // The retransmission (RTX) arrives inside the depth: the frame is whole.
    r.handle_rtp(t0 + Duration::from_millis(260), rtx_of(&lost, 7));
    let f = frames(&mut r);
    assert_eq!(f.len(), 1);
    let s = r.stats();
    assert_eq!((s.recovered, s.lost, s.frames_dropped), (1, 0, 0));
}

#[test]
fn loss_beyond_repair_drops_the_frame_and_asks_for_a_keyframe() {
    let t0 = Instant::now();
    let mut r = Receiver::new(config(Codec::H264));
    let mut src = Source::new(1);
    // Join on a delta frame: dropped, PLI.
    for p in src.frame(false, 100) {
        r.handle_rtp(t0, p);
    }
    assert!(frames(&mut r).is_empty());
    assert!(feedback(&mut r).iter().any(|f| matches!(f, Fb::Pli { .. })));
    for p in src.frame(true, 1500) {
        r.handle_rtp(t0, p);
    }
    assert_eq!(frames(&mut r).len(), 1);
    // A packet lost for good: after the depth the frame is dropped, a PLI goes out and
    // delta frames wait for the next keyframe.
    let pk = src.frame(false, 1500);
    for (i, p) in pk.into_iter().enumerate() {
        if i != 0 {
            r.handle_rtp(t0, p);
        }
    }
    let t1 = t0 + DEFAULT_DEPTH + PLI_INTERVAL;
    r.handle_timeout(t1);
    assert!(frames(&mut r).is_empty());
    assert_eq!(r.stats().lost, 1);
    assert!(feedback(&mut r).iter().any(|f| matches!(f, Fb::Pli { .. })));
    for p in src.frame(false, 100) {
        r.handle_rtp(t1, p);
    }
    assert!(frames(&mut r).is_empty());
    for p in src.frame(true, 100) {
        r.handle_rtp(t1, p);
    }
    let f = frames(&mut r);
    assert!(f.len() == 1 && f[0].keyframe);
    let s = r.stats();
    assert_eq!((s.frames, s.frames_dropped, s.plis_sent), (2, 3, 2));
    // The application asks (a new file): one PLI, not two within the interval.
    let t2 = t1 + PLI_INTERVAL;
    r.request_keyframe_now(t2);
    r.request_keyframe_now(t2);
    assert_eq!(r.stats().plis_sent, 3);
    assert!(feedback(&mut r).iter().any(|f| matches!(f, Fb::Pli { .. })));
}

#[test]
fn wrong_payload_types_ssrc_changes_and_garbage_are_counted() {
    let t0 = Instant::now();
    let mut r = Receiver::new(config(Codec::H264));
    let mut src = Source::new(1);
    for p in src.frame(true, 100) {
        r.handle_rtp(t0, p);
    }
    let mut p = src.frame(false, 100).remove(0);
    p.pt = 96;
    r.handle_rtp(t0, p);
    assert_eq!(r.stats().wrong_payload_type, 1);
    // The encoder restarted: new SSRC, new numbering; a keyframe is awaited.
    let mut other = Source::new(40000);
    for mut p in other.frame(false, 100) {
        p.ssrc = 99;
        r.handle_rtp(t0, p);
    }
    for mut p in other.frame(true, 100) {
        p.ssrc = 99;
        r.handle_rtp(t0, p);
    }
    assert_eq!(r.stats().ssrc_changes, 1);
    assert_eq!(r.remote_ssrc(), Some(99));
    assert_eq!(frames(&mut r).len(), 2);
    // Garbage never panics: not RTP, truncated extensions, padding past the end.
    let mut seed = 7u64;
    for len in 0..400 {
        let bytes: Vec<u8> = (0..len % 40)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                (seed >> 33) as u8
            })
            .collect();
        let mut b = bytes.clone();
        if let Some(x) = b.first_mut() {
            *x = 0x80 | (*x & 0x3f);
        }
        for d in [bytes, b] {
            if let Some(mut p) = RtpIn::parse(&Bytes::from(d)) {
                p.pt = if len % 2 == 0 { PT } else { RTX };
                r.handle_rtp(t0, p);
            }
        }
    }
    r.handle_timeout(t0 + Duration::from_secs(5));
}

#[test]
fn reports_carry_loss_jitter_and_remb() {
    let t0 = Instant::now();
    let mut r = Receiver::new(config(Codec::H264));
    let mut src = Source::new(500);
    let mut t = t0;
    let mut sent = 0;
    for i in 0..30 {
        t += Duration::from_millis(33);
        for (j, p) in src.frame(i % 10 == 0, 3000).into_iter().enumerate() {
            sent += 1;
            // Every 20th packet lost for good.
            if (sent % 20) != 0 || j == 0 {
                r.handle_rtp(t, p);
            }
        }
        r.handle_timeout(t);
    }
    r.handle_timeout(t + Duration::from_secs(1));
    let fb = feedback(&mut r);
    let report = fb
        .iter()
        .rev()
        .find_map(|f| match f {
            Fb::Report(rr) if rr.ssrc == SSRC => Some(rr.clone()),
            _ => None,
        })
        .expect("a receiver report");
    assert!(report.total_lost > 0);
    assert!(
        fb.iter()
            .any(|f| matches!(f, Fb::Remb(b) if *b >= 150_000.0)),
        "{fb:?}"
    );
    assert!(r.remb().is_some());
}

#[test]
fn rtp_mode_delivers_packets_in_order() {
    let t0 = Instant::now();
    let mut r = Receiver::new(config(Codec::H264));
    r.set_outputs(false, true);
    let mut src = Source::new(10);
    let mut pk = src.frame(false, 2000);
    let want: Vec<u16> = pk.iter().map(|p| p.seq).collect();
    pk.reverse();
    for p in pk {
        r.handle_rtp(t0, p);
    }
    let got: Vec<u16> = std::iter::from_fn(|| r.poll_rtp())
        .map(|p| p.sequence_number)
        .collect();
    // The first packet seen starts the stream; the earlier ones count as late.
    assert_eq!(got, want[want.len() - 1..]);
    let mut pk = src.frame(false, 2000);
    let want: Vec<u16> = pk.iter().map(|p| p.seq).collect();
    pk.swap(0, 1);
    for p in pk {
        r.handle_rtp(t0, p);
    }
    let got: Vec<u16> = std::iter::from_fn(|| r.poll_rtp())
        .map(|p| p.sequence_number)
        .collect();
    assert_eq!(got, want);
    assert!(r.poll_frame().is_none());
}

#[test]
fn padding_packets_and_huge_jumps_are_harmless() {
    let t0 = Instant::now();
    let mut r = Receiver::new(config(Codec::H264));
    let mut src = Source::new(1);
    let key = src.frame(true, 1500);
    let (first, rest) = key.split_at(1);
    r.handle_rtp(t0, first[0].clone());
    // A padding-only packet in the middle of the frame's numbering.
    src.seq = src.seq.wrapping_add(1);
    let mut pad = first[0].clone();
    pad.seq = first[0].seq.wrapping_add(1);
    pad.payload = Bytes::new();
    for mut p in rest.iter().cloned() {
        p.seq = p.seq.wrapping_add(1);
        r.handle_rtp(t0, p);
    }
    r.handle_rtp(t0, pad);
    let f = frames(&mut r);
    assert!(f.len() == 1 && f[0].keyframe, "{:?}", r.stats());
    assert_eq!(r.stats().malformed, 0);
    // Jumps of 2999 again and again: the missing set never grows past the buffer's bound.
    let mut p = src.frame(false, 10).remove(0);
    for _ in 0..100 {
        p.seq = p.seq.wrapping_add(2999);
        r.handle_rtp(t0, p.clone());
        assert!(r.missing.len() <= MAX_BUFFERED);
    }
}
