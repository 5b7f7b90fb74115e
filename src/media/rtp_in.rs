//! RTP from a local encoder (`rtp://127.0.0.1:PORT?codec=..`), grouped into frames without
//! depacketizing: the payloads pass through unchanged and only the RTP header is rewritten
//! per viewer (SSRC, sequence number, timestamp offset, payload type).
//!
//! A frame is the packets of one timestamp, ending at the marker bit (video) or at the next
//! timestamp; an Opus packet is a frame. Keyframes are recognised in the payloads (an IDR
//! in a single NAL unit, STAP-A or starting FU-A; a VP8 keyframe in the first packet). A
//! lost, reordered or duplicated packet breaks its frame: broken frames are dropped and,
//! for video, so is everything up to the next keyframe (no viewer decodes a picture with a
//! hole). H.264 parameter sets seen in-band are cached and sent as one STAP-A before any
//! keyframe that comes without them.

use super::codec::Codec;
use super::fanout::{h264_nals_in_payload, vp8_descriptor_len};
use super::h264::{nal_type, nal_unit_type};
use super::packetize::{Frame, FrameData, Payload};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;

/// Most packets in one frame (a 4K keyframe at a high bitrate is a few thousand).
pub const MAX_PACKETS_PER_FRAME: usize = 8192;

/// Counters of an [`RtpFramer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpInStats {
    /// Packets taken.
    pub packets: u64,
    /// Datagrams that were not RTP version 2 (or too short).
    pub malformed: u64,
    /// Packets missing by sequence number.
    pub lost: u64,
    /// Packets older than the last one (reordered or duplicated), dropped.
    pub late: u64,
    /// Frames dropped: broken, or waiting for a keyframe.
    pub frames_dropped: u64,
    /// SSRC changes (the encoder restarted).
    pub ssrc_changes: u64,
}

#[derive(Debug)]
struct Building {
    timestamp: u32,
    payloads: Vec<Payload>,
    keyframe: bool,
    has_sps: bool,
    broken: bool,
}

impl Building {
    /// Marks an H.264 packet's IDR (whole, in a STAP-A or a starting FU-A) and SPS, and
    /// caches its parameter sets in `sps` and `pps` (slices of `payload`, not copies).
    #[inline]
    fn scan_h264(&mut self, payload: &Bytes, sps: &mut Option<Bytes>, pps: &mut Option<Bytes>) {
        let h = payload[0];
        let units = h264_nals_in_payload(payload);
        for n in &units {
            match nal_unit_type(n[0]) {
                nal_type::IDR => self.keyframe = true,
                nal_type::SPS => {
                    self.has_sps = true;
                    *sps = Some(payload.slice_ref(n));
                }
                nal_type::PPS => *pps = Some(payload.slice_ref(n)),
                _ => {}
            }
        }
        if nal_unit_type(h) == nal_type::FU_A
            && payload.len() > 1
            && payload[1] & 0x80 != 0
            && payload[1] & 0x1f == nal_type::IDR
        {
            self.keyframe = true;
        }
    }
}

/// Whether a VP8 frame's first packet starts a keyframe; `None` when its payload
/// descriptor does not parse.
#[inline]
fn vp8_keyframe(payload: &[u8]) -> Option<bool> {
    let off = vp8_descriptor_len(payload)?;
    // S bit and partition 0 start the frame; bit 0 of the frame tag is 0 for a keyframe.
    let start = payload[0] & 0x1f == 0x10;
    Some(start && payload.get(off).is_some_and(|b| b & 1 == 0))
}

/// Groups RTP packets of one codec into frames; see the module doc.
#[derive(Debug)]
pub struct RtpFramer {
    codec: Codec,
    ssrc: Option<u32>,
    last_seq: Option<u16>,
    current: Option<Building>,
    need_keyframe: bool,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    ready: VecDeque<Frame>,
    stats: RtpInStats,
}

impl RtpFramer {
    /// A framer for RTP carrying `codec`.
    pub fn new(codec: Codec) -> RtpFramer {
        RtpFramer {
            codec,
            ssrc: None,
            last_seq: None,
            current: None,
            need_keyframe: codec != Codec::Opus,
            sps: None,
            pps: None,
            ready: VecDeque::new(),
            stats: RtpInStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> RtpInStats {
        self.stats
    }

    /// Takes one datagram. Malformed ones are counted and dropped.
    pub fn push(&mut self, datagram: Bytes) {
        let Some((ssrc, seq, ts, marker, payload)) = parse_rtp(&datagram) else {
            self.stats.malformed += 1;
            return;
        };
        self.stats.packets += 1;
        self.follow_ssrc(ssrc);
        if !self.in_sequence(seq) {
            return;
        }
        let payload = datagram.slice(payload);
        if payload.is_empty() {
            return;
        }
        if self.codec == Codec::Opus {
            self.ready.push_back(Frame {
                timestamp: ts,
                keyframe: true,
                data: FrameData::Whole(payload),
            });
            return;
        }
        self.push_video(ts, marker, payload);
    }

    /// A new SSRC (the encoder restarted) drops the frame being built and, for video,
    /// waits for a keyframe; sequence numbers start over.
    #[inline]
    fn follow_ssrc(&mut self, ssrc: u32) {
        if self.ssrc != Some(ssrc) {
            if self.ssrc.is_some() {
                self.stats.ssrc_changes += 1;
                self.drop_current();
                self.need_keyframe = self.codec != Codec::Opus;
            }
            self.ssrc = Some(ssrc);
            self.last_seq = None;
        }
    }

    /// Takes `seq` as the last sequence number: `false` for a late or duplicated packet
    /// (counted, dropped); a gap is counted as lost and breaks the frame being built.
    #[inline]
    fn in_sequence(&mut self, seq: u16) -> bool {
        if let Some(last) = self.last_seq {
            let d = seq.wrapping_sub(last);
            if d == 0 || d >= 0x8000 {
                self.stats.late += 1;
                return false;
            }
            if d > 1 {
                self.stats.lost += u64::from(d - 1);
                if let Some(c) = &mut self.current {
                    c.broken = true;
                }
                if self.codec != Codec::Opus {
                    // The lost packets may have held a whole frame: wait for a keyframe.
                    self.need_keyframe = true;
                }
            }
        }
        self.last_seq = Some(seq);
        true
    }

    /// A video packet into the frame of timestamp `ts` (a new timestamp finishes the last
    /// frame); the marker bit finishes it.
    #[inline]
    fn push_video(&mut self, ts: u32, marker: bool, payload: Bytes) {
        if self.current.as_ref().is_some_and(|c| c.timestamp != ts) {
            // A new timestamp without the last frame's marker: the frame is complete as is.
            self.finish();
        }
        let first = self.current.is_none();
        let c = self.current.get_or_insert_with(|| Building {
            timestamp: ts,
            payloads: Vec::new(),
            keyframe: false,
            has_sps: false,
            broken: false,
        });
        match self.codec {
            Codec::H264 => c.scan_h264(&payload, &mut self.sps, &mut self.pps),
            Codec::Vp8 => {
                if first {
                    if let Some(keyframe) = vp8_keyframe(&payload) {
                        c.keyframe = keyframe;
                    }
                }
            }
            Codec::Opus => {}
        }
        if c.payloads.len() < MAX_PACKETS_PER_FRAME {
            c.payloads.push(Payload::new(payload));
        } else {
            c.broken = true;
        }
        if marker {
            self.finish();
        }
    }

    /// The next complete frame.
    pub fn poll(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    fn drop_current(&mut self) {
        if self.current.take().is_some() {
            self.stats.frames_dropped += 1;
        }
    }

    fn finish(&mut self) {
        let Some(mut c) = self.current.take() else {
            return;
        };
        if c.broken || (self.need_keyframe && !c.keyframe) {
            self.stats.frames_dropped += 1;
            return;
        }
        if c.keyframe {
            self.need_keyframe = false;
            if self.codec == Codec::H264 && !c.has_sps {
                if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
                    let mut stap = BytesMut::with_capacity(5 + sps.len() + pps.len());
                    stap.put_u8(0x78);
                    for n in [sps, pps] {
                        stap.put_u16(n.len() as u16);
                        stap.put_slice(n);
                    }
                    c.payloads.insert(0, Payload::new(stap.freeze()));
                }
            }
        }
        self.ready.push_back(Frame {
            timestamp: c.timestamp,
            keyframe: c.keyframe,
            data: FrameData::Payloads(c.payloads),
        });
    }
}

/// Reads an RTP header: (ssrc, seq, timestamp, marker, payload range).
fn parse_rtp(d: &[u8]) -> Option<(u32, u16, u32, bool, std::ops::Range<usize>)> {
    if d.len() < 12 || d[0] >> 6 != 2 {
        return None;
    }
    let cc = usize::from(d[0] & 0x0f);
    let mut start = 12 + 4 * cc;
    if d[0] & 0x10 != 0 {
        let ext = d.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = d.len();
    if d[0] & 0x20 != 0 {
        let pad = usize::from(*d.last()?);
        end = end.checked_sub(pad)?;
    }
    if start > end {
        return None;
    }
    let seq = u16::from_be_bytes([d[2], d[3]]);
    let ts = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    Some((ssrc, seq, ts, d[1] & 0x80 != 0, start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ssrc: u32, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Bytes {
        let mut v = vec![0x80, if marker { 0xe0 } else { 0x60 }];
        v.extend(seq.to_be_bytes());
        v.extend(ts.to_be_bytes());
        v.extend(ssrc.to_be_bytes());
        v.extend(payload);
        Bytes::from(v)
    }

    fn frames(f: &mut RtpFramer) -> Vec<(u32, bool, usize)> {
        std::iter::from_fn(|| f.poll())
            .map(|fr| match fr.data {
                FrameData::Payloads(p) => (fr.timestamp, fr.keyframe, p.len()),
                _ => (fr.timestamp, fr.keyframe, 1),
            })
            .collect()
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e];
    const PPS: &[u8] = &[0x68, 0xce];

    #[test]
    fn h264_frames_keyframes_and_parameter_sets() {
        let mut f = RtpFramer::new(Codec::H264);
        // A delta frame before any keyframe is dropped.
        f.push(pkt(1, 10, 0, true, &[0x41, 1]));
        // SPS, PPS alone, then an IDR in two FU-A pieces.
        f.push(pkt(1, 11, 3000, false, SPS));
        f.push(pkt(1, 12, 3000, false, PPS));
        f.push(pkt(1, 13, 3000, false, &[0x7c, 0x85, 1]));
        f.push(pkt(1, 14, 3000, true, &[0x7c, 0x45, 2]));
        f.push(pkt(1, 15, 6000, true, &[0x41, 2]));
        assert_eq!(frames(&mut f), [(3000, true, 4), (6000, false, 1)]);
        // A keyframe without parameter sets gets the cached ones as a STAP-A.
        f.push(pkt(1, 16, 9000, true, &[0x65, 3]));
        let fr = f.poll().unwrap();
        let FrameData::Payloads(p) = fr.data else {
            panic!()
        };
        assert_eq!(
            p[0].to_vec(),
            [0x78, 0, 4, 0x67, 0x42, 0xc0, 0x1e, 0, 2, 0x68, 0xce]
        );
        assert_eq!(p[1].to_vec(), [0x65, 3]);
        // A frame without its marker ends at the next timestamp.
        f.push(pkt(1, 17, 12000, false, &[0x41, 4]));
        f.push(pkt(1, 18, 15000, true, &[0x41, 5]));
        assert_eq!(frames(&mut f), [(12000, false, 1), (15000, false, 1)]);
        assert_eq!(f.stats().frames_dropped, 1);
    }

    #[test]
    fn loss_drops_to_the_next_keyframe_and_late_packets_are_dropped() {
        let mut f = RtpFramer::new(Codec::H264);
        f.push(pkt(1, 1, 0, true, &[0x65, 0]));
        f.push(pkt(1, 2, 3000, false, &[0x7c, 0x81, 0]));
        f.push(pkt(1, 4, 3000, true, &[0x7c, 0x41, 0])); // 3 lost
        f.push(pkt(1, 5, 6000, true, &[0x41, 0]));
        f.push(pkt(1, 5, 6000, true, &[0x41, 0])); // duplicate
        f.push(pkt(1, 3, 3000, true, &[0x41, 0])); // late
        f.push(pkt(1, 6, 9000, true, &[0x18, 0, 2, 0x65, 0])); // IDR in a STAP-A
        assert_eq!(frames(&mut f), [(0, true, 1), (9000, true, 1)]);
        let s = f.stats();
        assert_eq!((s.lost, s.late, s.frames_dropped), (1, 2, 2));
        // The encoder restarts: new SSRC, wait for its keyframe.
        f.push(pkt(2, 500, 1, true, &[0x41, 0]));
        f.push(pkt(2, 501, 2, true, &[0x65, 0]));
        assert_eq!(frames(&mut f), [(2, true, 1)]);
        assert_eq!(f.stats().ssrc_changes, 1);
    }

    #[test]
    fn vp8_and_opus_and_malformed() {
        let mut f = RtpFramer::new(Codec::Vp8);
        // ffmpeg's descriptor: X, S, PictureID 15 bits; keyframe tag bit 0 = 0.
        f.push(pkt(1, 1, 0, false, &[0x90, 0x80, 0x80, 0x01, 0x50, 0x42]));
        f.push(pkt(1, 2, 0, true, &[0x80, 0x80, 0x80, 0x01, 0xaa]));
        f.push(pkt(1, 3, 3000, true, &[0x90, 0x80, 0x80, 0x02, 0x51, 0x42]));
        assert_eq!(frames(&mut f), [(0, true, 2), (3000, false, 1)]);
        let mut a = RtpFramer::new(Codec::Opus);
        a.push(pkt(1, 1, 0, false, &[0xfc, 1]));
        a.push(pkt(1, 3, 1920, false, &[0xfc, 2])); // loss does not stop audio
        assert_eq!(frames(&mut a).len(), 2);
        a.push(Bytes::from_static(&[0x40; 20]));
        a.push(Bytes::from_static(&[0x80; 5]));
        // Padding longer than the packet; extension running past the end.
        let mut padded = pkt(1, 4, 0, false, &[0xff]).to_vec();
        padded[0] |= 0x20;
        a.push(padded.into());
        a.push(Bytes::from_static(&[
            0x90, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde,
        ]));
        assert_eq!(a.stats().malformed, 4);
        assert_eq!(frames(&mut a).len(), 0);
    }
}
