//! Depacketizing, the inverse of [`super::packetize`]: in-order RTP payloads in, whole
//! frames out (RFC 6184 H.264, RFC 7741 VP8, RFC 7587 Opus), sans-IO.
//!
//! The input comes from the receiver's reorder buffer, so it is in sequence order without
//! duplicates; a packet it gave up on is announced with [`Depacketizer::gap`]. A frame with
//! a hole is never emitted broken: it is dropped and counted ([`Depacketizer::broken`]),
//! and the caller (the receiver) waits for a keyframe.
//!
//! - H.264: single NAL units, STAP-A (split) and FU-A (reassembled, its NAL header rebuilt
//!   from the indicator and the FU header); STAP-B, MTAP and FU-B (interleaved mode, never
//!   negotiated) are malformed. An access unit is the packets of one timestamp, ending at
//!   the marker bit (or at the next timestamp); it comes out in Annex-B, each NAL unit
//!   behind a 4-byte start code, parameter sets where they arrived; an IDR that came without
//!   them gets the last SPS and PPS seen put in front. An FU-A continuation
//!   without its start, or a new NAL unit while a fragment is open, breaks the unit.
//! - VP8: the payload descriptor is read (X, S, PID; I, L, T, K extensions); a frame starts
//!   at S=1 with partition 0 and ends at the marker bit; a frame whose first packet is not
//!   such a start is broken. The keyframe bit and size come from the frame's own header.
//! - Opus: every payload is a frame.

use super::codec::Codec;
use super::fanout::vp8_descriptor_len;
use super::h264::sps::Sps;
use super::h264::{nal_type, nal_unit_type, MAX_AU_BYTES};
use super::remote::ReceivedFrame;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;

const START_CODE: [u8; 4] = [0, 0, 0, 1];

#[derive(Debug)]
struct Assembly {
    timestamp: u32,
    data: BytesMut,
    keyframe: bool,
    broken: bool,
    size: Option<(u32, u32)>,
    /// H.264: an FU-A fragment is open (its start seen, its end not yet).
    fu_open: bool,
    /// H.264: the parameter sets this unit carries.
    sps: Option<Bytes>,
    pps: Option<Bytes>,
}

/// Payloads in sequence order → frames; see the module doc.
#[derive(Debug)]
pub struct Depacketizer {
    codec: Codec,
    current: Option<Assembly>,
    /// Packets were lost before the next frame's first packet: it may lack its start.
    next_broken: bool,
    ready: VecDeque<ReceivedFrame>,
    broken: u64,
    malformed: u64,
    /// H.264: the last parameter sets seen, put before an IDR that comes without them.
    sps: Option<(Bytes, Option<(u32, u32)>)>,
    pps: Option<Bytes>,
}

impl Depacketizer {
    /// A depacketizer for `codec`.
    pub fn new(codec: Codec) -> Depacketizer {
        Depacketizer {
            codec,
            current: None,
            next_broken: false,
            ready: VecDeque::new(),
            broken: 0,
            malformed: 0,
            sps: None,
            pps: None,
        }
    }

    /// Frames dropped because of a hole (or a malformed payload in them).
    pub fn broken(&self) -> u64 {
        self.broken
    }

    /// Payloads that could not be read.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Packets were lost here (the reorder buffer gave up on them): the frame being built
    /// is broken, and so is the next one if it had not started.
    pub fn gap(&mut self) {
        match &mut self.current {
            Some(c) => c.broken = true,
            None => self.next_broken = true,
        }
    }

    /// Forgets the frame being built (the sender changed SSRC), without counting it.
    pub fn reset(&mut self) {
        self.current = None;
        self.next_broken = false;
    }

    /// The next whole frame.
    pub fn poll(&mut self) -> Option<ReceivedFrame> {
        self.ready.pop_front()
    }

    /// Takes the next payload in sequence order.
    pub fn push(&mut self, timestamp: u32, marker: bool, payload: &Bytes) {
        if self.codec == Codec::Opus {
            if payload.is_empty() {
                self.malformed += 1;
                return;
            }
            self.ready.push_back(ReceivedFrame {
                codec: Codec::Opus,
                rtp_timestamp: timestamp,
                keyframe: true,
                data: payload.clone(),
                width_height: None,
            });
            return;
        }
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.timestamp != timestamp)
        {
            // A new timestamp without the last frame's marker: that frame lost its end.
            if let Some(c) = &mut self.current {
                c.broken = true;
            }
            self.finish();
        }
        let first = self.current.is_none();
        let broken_start = std::mem::take(&mut self.next_broken) && first;
        let c = self.current.get_or_insert_with(|| Assembly {
            timestamp,
            data: BytesMut::new(),
            keyframe: false,
            broken: broken_start,
            size: None,
            fu_open: false,
            sps: None,
            pps: None,
        });
        let ok = match self.codec {
            Codec::H264 => h264_payload(c, payload),
            _ => vp8_payload(c, payload, first),
        };
        if !ok {
            self.malformed += 1;
            c.broken = true;
        }
        if c.data.len() > MAX_AU_BYTES {
            c.broken = true;
            c.data.clear();
        }
        if marker {
            self.finish();
        }
    }

    fn finish(&mut self) {
        let Some(mut c) = self.current.take() else {
            return;
        };
        if self.codec == Codec::H264 && c.fu_open {
            c.broken = true;
        }
        if self.codec == Codec::Vp8 && !c.broken {
            match super::vp8::parse_header(&c.data) {
                Ok(h) => {
                    c.keyframe = h.keyframe;
                    c.size = h.size.map(|(w, h)| (u32::from(w), u32::from(h)));
                }
                Err(_) => {
                    self.malformed += 1;
                    c.broken = true;
                }
            }
        }
        if c.broken || c.data.is_empty() {
            self.broken += 1;
            return;
        }
        if self.codec == Codec::H264 {
            self.parameter_sets(&mut c);
        }
        self.ready.push_back(ReceivedFrame {
            codec: self.codec,
            rtp_timestamp: c.timestamp,
            keyframe: c.keyframe,
            data: c.data.freeze(),
            width_height: c.size,
        });
    }
}

impl Depacketizer {
    /// Remembers the unit's parameter sets; an IDR without them gets the last ones seen
    /// (a sender that sends them once, or only out of band, still makes every keyframe
    /// decodable on its own, as a recording or a late decoder needs).
    fn parameter_sets(&mut self, c: &mut Assembly) {
        if let Some(sps) = c.sps.take() {
            self.sps = Some((sps, c.size));
        }
        if let Some(pps) = c.pps.take() {
            self.pps = Some(pps);
        }
        let starts_with_sps = c
            .data
            .get(4)
            .is_some_and(|h| nal_unit_type(*h) == nal_type::SPS);
        if !c.keyframe || starts_with_sps {
            return;
        }
        if let (Some((sps, size)), Some(pps)) = (&self.sps, &self.pps) {
            let mut data = BytesMut::with_capacity(c.data.len() + sps.len() + pps.len() + 8);
            for n in [sps, pps] {
                data.put_slice(&START_CODE);
                data.put_slice(n);
            }
            data.put_slice(&c.data);
            c.data = data;
            c.size = c.size.or(*size);
        }
    }
}

/// Appends one whole NAL unit in Annex-B, noting IDR and SPS.
fn h264_nal(c: &mut Assembly, nal: &[u8]) {
    match nal_unit_type(nal[0]) {
        nal_type::IDR => c.keyframe = true,
        nal_type::SPS => {
            if let Ok(s) = Sps::parse(nal) {
                c.size = Some((s.width, s.height));
            }
            c.sps = Some(Bytes::copy_from_slice(nal));
        }
        nal_type::PPS => c.pps = Some(Bytes::copy_from_slice(nal)),
        _ => {}
    }
    c.data.put_slice(&START_CODE);
    c.data.put_slice(nal);
}

/// One H.264 payload into the access unit; false when it cannot be read.
fn h264_payload(c: &mut Assembly, p: &[u8]) -> bool {
    let Some(&h) = p.first() else {
        return false;
    };
    // F bit: the sender says the unit is corrupt.
    if h & 0x80 != 0 {
        return false;
    }
    match nal_unit_type(h) {
        0 => false,
        1..=23 => {
            if c.fu_open {
                c.broken = true;
                c.fu_open = false;
            }
            h264_nal(c, p);
            true
        }
        nal_type::STAP_A => {
            if c.fu_open {
                c.broken = true;
                c.fu_open = false;
            }
            let mut i = 1;
            let mut any = false;
            while i + 2 <= p.len() {
                let n = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                let Some(nal) = p.get(i + 2..i + 2 + n) else {
                    return false;
                };
                if nal.is_empty() {
                    return false;
                }
                h264_nal(c, nal);
                any = true;
                i += 2 + n;
            }
            any && i == p.len()
        }
        nal_type::FU_A => {
            let Some(&fu) = p.get(1) else {
                return false;
            };
            let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
            if start {
                if c.fu_open {
                    c.broken = true;
                }
                let header = (h & 0xe0) | (fu & 0x1f);
                if nal_unit_type(header) == nal_type::IDR {
                    c.keyframe = true;
                }
                c.data.put_slice(&START_CODE);
                c.data.put_u8(header);
                c.fu_open = true;
            } else if !c.fu_open {
                // A continuation without its start: the start was lost (or this frame's
                // first packets were).
                c.broken = true;
                return true;
            }
            c.data.put_slice(&p[2..]);
            if end {
                c.fu_open = false;
            }
            true
        }
        // STAP-B, MTAP16/24, FU-B: interleaved mode, never negotiated.
        _ => false,
    }
}

/// One VP8 payload into the frame; false when its descriptor cannot be read.
fn vp8_payload(c: &mut Assembly, p: &[u8], first: bool) -> bool {
    let Some(off) = vp8_descriptor_len(p) else {
        return false;
    };
    let start = p[0] & 0x10 != 0 && p[0] & 0x07 == 0;
    if first && !start {
        c.broken = true;
    }
    c.data.put_slice(&p[off..]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::packetize::{Frame, FrameData, Packetizer};
    use std::time::Instant;

    /// Packetizes `frame` with our own packetizer: (marker, payload) per packet.
    fn packets(codec: Codec, max: usize, frame: Frame) -> Vec<(bool, Bytes)> {
        let mut p = Packetizer::with_max_payload(codec, max);
        let f = p.packetize(Instant::now(), frame);
        let n = f.payloads.len();
        f.payloads
            .iter()
            .enumerate()
            .map(|(i, pl)| (f.marker && i + 1 == n, Bytes::from(pl.to_vec())))
            .collect()
    }

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&START_CODE[..], n].concat())
            .collect()
    }

    const SPS_320X240: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80,
    ];

    fn idr(len: usize) -> Vec<u8> {
        let mut v = vec![0x65];
        v.extend((0..len).map(|i| (i % 251) as u8 | 1));
        v
    }

    #[test]
    fn h264_round_trip_single_stap_a_and_fu_a() {
        let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
        let big = idr(5000);
        let small: &[u8] = &[0x41, 0x9a, 0x02];
        let frame = Frame {
            timestamp: 3000,
            keyframe: true,
            data: FrameData::Nals(vec![
                Bytes::from_static(SPS_320X240),
                Bytes::from_static(pps),
                Bytes::from(big.clone()),
            ]),
        };
        let pk = packets(Codec::H264, 1000, frame);
        // STAP-A (SPS+PPS), then FU-A fragments.
        assert_eq!(pk[0].1[0] & 0x1f, nal_type::STAP_A);
        assert!(pk.len() > 3 && pk[1].1[0] & 0x1f == nal_type::FU_A);
        let mut d = Depacketizer::new(Codec::H264);
        for (m, p) in &pk {
            d.push(3000, *m, p);
        }
        let f = d.poll().expect("one access unit");
        assert!(f.keyframe);
        assert_eq!(f.rtp_timestamp, 3000);
        assert_eq!(f.width_height, Some((320, 240)));
        assert_eq!(&f.data[..], &annexb(&[SPS_320X240, pps, &big])[..]);
        // A single NAL unit frame.
        for (m, p) in packets(
            Codec::H264,
            1000,
            Frame {
                timestamp: 6000,
                keyframe: false,
                data: FrameData::Nals(vec![Bytes::from_static(small)]),
            },
        ) {
            d.push(6000, m, &p);
        }
        let f = d.poll().unwrap();
        assert!(!f.keyframe);
        assert_eq!(&f.data[..], &annexb(&[small])[..]);
        assert_eq!((d.broken(), d.malformed()), (0, 0));
        // An IDR alone (its parameter sets came before): the last ones are put in front.
        for (m, p) in packets(
            Codec::H264,
            1000,
            Frame {
                timestamp: 9000,
                keyframe: true,
                data: FrameData::Nals(vec![Bytes::from(big.clone())]),
            },
        ) {
            d.push(9000, m, &p);
        }
        let f = d.poll().unwrap();
        assert!(f.keyframe);
        assert_eq!(f.width_height, Some((320, 240)));
        assert_eq!(&f.data[..], &annexb(&[SPS_320X240, pps, &big])[..]);
    }

    #[test]
    fn h264_holes_drop_the_access_unit_never_emit_it_broken() {
        let frame = |ts| Frame {
            timestamp: ts,
            keyframe: true,
            data: FrameData::Nals(vec![Bytes::from(idr(4000))]),
        };
        let pk = packets(Codec::H264, 1000, frame(0));
        let mut d = Depacketizer::new(Codec::H264);
        // A middle fragment lost: the gap breaks the unit.
        for (i, (m, p)) in pk.iter().enumerate() {
            if i == 2 {
                d.gap();
                continue;
            }
            d.push(0, *m, p);
        }
        assert_eq!(d.poll(), None);
        assert_eq!(d.broken(), 1);
        // The first fragment lost (between frames): the next unit is broken.
        d.gap();
        for (m, p) in pk.iter().skip(1) {
            d.push(90, *m, p);
        }
        assert_eq!(d.poll(), None);
        // The marker packet lost: the next timestamp ends the unit, broken.
        for (m, p) in &pk[..pk.len() - 1] {
            d.push(180, *m, p);
        }
        for (m, p) in &pk {
            d.push(270, *m, p);
        }
        assert_eq!(d.poll().map(|f| f.rtp_timestamp), Some(270));
        assert_eq!(d.poll(), None);
        assert_eq!(d.broken(), 3);
        // Garbage: an empty payload, FU-B, a STAP-A whose length runs past the end, an
        // F bit.
        for bad in [&[][..], &[29, 0x85, 1], &[24, 0, 9, 0x67], &[0xe5, 1]] {
            d.push(360, true, &Bytes::copy_from_slice(bad));
        }
        assert_eq!(d.poll(), None);
        assert_eq!(d.malformed(), 4);
    }

    #[test]
    fn vp8_round_trip_and_a_missing_start() {
        // A 320x240 keyframe header and a body.
        let mut key = vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        key.extend((0..3000).map(|i| i as u8));
        let frame = Frame {
            timestamp: 9,
            keyframe: true,
            data: FrameData::Whole(Bytes::from(key.clone())),
        };
        let pk = packets(Codec::Vp8, 1000, frame);
        assert!(pk.len() >= 3);
        let mut d = Depacketizer::new(Codec::Vp8);
        for (m, p) in &pk {
            d.push(9, *m, p);
        }
        let f = d.poll().unwrap();
        assert!(f.keyframe);
        assert_eq!(f.width_height, Some((320, 240)));
        assert_eq!(&f.data[..], &key[..]);
        // Without its first packet (S bit), the frame is dropped.
        for (m, p) in pk.iter().skip(1) {
            d.push(18, *m, p);
        }
        assert_eq!(d.poll(), None);
        assert_eq!(d.broken(), 1);
        // An extended descriptor (X, I with a 15-bit PictureID) as browsers send.
        let p = Bytes::from(vec![0x90, 0x80, 0x81, 0x23, 0x51, 0x02, 0x00, 7, 7]);
        d.push(27, true, &p);
        let f = d.poll().unwrap();
        assert!(!f.keyframe);
        assert_eq!(&f.data[..], &[0x51, 0x02, 0x00, 7, 7]);
    }

    #[test]
    fn opus_passes_through() {
        let mut d = Depacketizer::new(Codec::Opus);
        d.gap();
        d.push(960, false, &Bytes::from_static(&[0xfc, 0xff, 0xfe]));
        let f = d.poll().unwrap();
        assert_eq!(
            (f.rtp_timestamp, f.keyframe, &f.data[..]),
            (960, true, &[0xfc, 0xff, 0xfe][..])
        );
        d.push(1920, false, &Bytes::new());
        assert_eq!((d.poll(), d.malformed()), (None, 1));
    }
}
