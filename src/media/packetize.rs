//! Packetizing, once per source: a frame → RTP payloads shared by every viewer.
//!
//! A payload is a few bytes of payload header (`head`: FU-A indicator and header, VP8
//! descriptor) and a `body` that is a slice of the frame's own buffer, so packetizing copies
//! no frame data and N viewers share one set of payloads ([`PacketizedFrame`] behind an
//! `Arc`). Each viewer's sender writes its own RTP header, then head and body, into its
//! packet buffer (the one copy SRTP needs anyway).
//!
//! - H.264 ([RFC 6184], packetization-mode 1): parameter sets at the start of a frame go
//!   together in one STAP-A when they fit, other NAL units alone when they fit, else as FU-A
//!   fragments of even size. AUD and filler NAL units are not sent.
//! - VP8 ([RFC 7741]): the one-byte payload descriptor (S bit on the frame's first packet),
//!   the frame cut in even pieces.
//! - Opus ([RFC 7587]): one packet per Opus packet.
//!
//! The marker bit is set on the last packet of a video frame, never for Opus.
//!
//! [RFC 6184]: https://www.rfc-editor.org/rfc/rfc6184
//! [RFC 7741]: https://www.rfc-editor.org/rfc/rfc7741
//! [RFC 7587]: https://www.rfc-editor.org/rfc/rfc7587

use super::codec::Codec;
use super::h264::{nal_type, nal_unit_type};
use bytes::{BufMut, Bytes, BytesMut};
use std::time::Instant;

/// Largest plaintext RTP packet smolrtc sends, RTX's 2-byte OSN included: 1200 bytes. With
/// the SRTP tag (10 or 16 bytes) and UDP/IPv6 headers it stays under 1280, the IPv6
/// minimum MTU, so no path fragments it.
pub const MAX_RTP_PACKET: usize = 1200;
/// RTP header without CSRCs or extensions.
pub const RTP_HEADER_LEN: usize = 12;
/// Payload budget of one packet: [`MAX_RTP_PACKET`] less the RTP header and the RTX OSN.
pub const MAX_PAYLOAD: usize = MAX_RTP_PACKET - RTP_HEADER_LEN - 2;

/// An encoded frame from a source, before packetizing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Timestamp in the codec's clock (90 kHz video, 48 kHz Opus), on the source's timeline.
    pub timestamp: u32,
    /// Decodable on its own (H.264 IDR with its SPS/PPS, VP8 keyframe; every Opus packet).
    pub keyframe: bool,
    /// The data.
    pub data: FrameData,
}

/// A frame's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameData {
    /// H.264 NAL units without start codes.
    Nals(Vec<Bytes>),
    /// A VP8 frame or an Opus packet.
    Whole(Bytes),
    /// RTP payloads as a source sent them (pass-through of `rtp://` input).
    Payloads(Vec<Payload>),
}

impl FrameData {
    /// Total bytes.
    pub fn len(&self) -> usize {
        match self {
            FrameData::Nals(n) => n.iter().map(Bytes::len).sum(),
            FrameData::Whole(b) => b.len(),
            FrameData::Payloads(p) => p.iter().map(Payload::len).sum(),
        }
    }

    /// Whether there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One RTP payload: up to two bytes of payload header and a shared body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    head: [u8; 2],
    head_len: u8,
    body: Bytes,
}

impl Payload {
    /// A payload that is just `body`.
    pub fn new(body: Bytes) -> Payload {
        Payload {
            head: [0; 2],
            head_len: 0,
            body,
        }
    }

    fn with_head(head: &[u8], body: Bytes) -> Payload {
        let mut h = [0; 2];
        h[..head.len()].copy_from_slice(head);
        Payload {
            head: h,
            head_len: head.len() as u8,
            body,
        }
    }

    /// The payload header bytes.
    pub fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }

    /// The shared body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Total length.
    pub fn len(&self) -> usize {
        usize::from(self.head_len) + self.body.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the payload to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.head());
        out.extend_from_slice(&self.body);
    }

    /// The payload as one buffer (tests, depacketizing).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.write_to(&mut v);
        v
    }
}

/// A frame packetized once for all its viewers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketizedFrame {
    /// The frame's number in its source, from 0; a viewer that sees a gap has missed frames.
    pub index: u64,
    /// RTP timestamp on the source's timeline (each viewer adds its own offset).
    pub timestamp: u32,
    /// Decodable on its own.
    pub keyframe: bool,
    /// When the source delivered it (the anchor of the sender reports' NTP/RTP mapping).
    pub arrival: Instant,
    /// The payloads in order.
    pub payloads: Vec<Payload>,
    /// Whether the last packet carries the marker bit (video).
    pub marker: bool,
}

impl PacketizedFrame {
    /// Payload bytes of the frame.
    pub fn bytes(&self) -> usize {
        self.payloads.iter().map(Payload::len).sum()
    }
}

/// Turns frames of one codec into [`PacketizedFrame`]s; see the module doc.
#[derive(Debug)]
pub struct Packetizer {
    codec: Codec,
    max_payload: usize,
    next_index: u64,
}

impl Packetizer {
    /// A packetizer of `codec` with the default payload budget ([`MAX_PAYLOAD`]).
    pub fn new(codec: Codec) -> Packetizer {
        Self::with_max_payload(codec, MAX_PAYLOAD)
    }

    /// A packetizer with payloads of at most `max_payload` bytes (at least 16).
    pub fn with_max_payload(codec: Codec, max_payload: usize) -> Packetizer {
        Packetizer {
            codec,
            max_payload: max_payload.max(16),
            next_index: 0,
        }
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Packetizes one frame that arrived at `arrival`. A frame with nothing to send (only
    /// AUDs, an empty buffer) gives a frame without payloads, which senders skip.
    pub fn packetize(&mut self, arrival: Instant, frame: Frame) -> PacketizedFrame {
        let mut payloads = Vec::new();
        match (self.codec, frame.data) {
            (_, FrameData::Payloads(p)) => payloads = p,
            (Codec::H264, FrameData::Nals(nals)) => self.h264(&nals, &mut payloads),
            (Codec::H264, FrameData::Whole(b)) => self.h264(&[b], &mut payloads),
            (Codec::Vp8, FrameData::Whole(b)) => self.vp8(b, &mut payloads),
            (Codec::Vp8 | Codec::Opus, FrameData::Nals(n)) => {
                // Not a shape these codecs come in; send the bytes as one frame.
                let mut all = BytesMut::new();
                n.iter().for_each(|b| all.put_slice(b));
                let b = all.freeze();
                if self.codec == Codec::Vp8 {
                    self.vp8(b, &mut payloads)
                } else if !b.is_empty() {
                    payloads.push(Payload::new(b))
                }
            }
            (Codec::Opus, FrameData::Whole(b)) => {
                if !b.is_empty() {
                    payloads.push(Payload::new(b));
                }
            }
        }
        let index = self.next_index;
        self.next_index += 1;
        PacketizedFrame {
            index,
            timestamp: frame.timestamp,
            keyframe: frame.keyframe,
            arrival,
            payloads,
            marker: self.codec != Codec::Opus,
        }
    }

    fn h264(&self, nals: &[Bytes], out: &mut Vec<Payload>) {
        let max = self.max_payload;
        let mut i = 0;
        // Leading parameter sets: one STAP-A (1 byte header, 2 byte size before each unit).
        let params = nals
            .iter()
            .take_while(|n| {
                !n.is_empty() && matches!(nal_unit_type(n[0]), nal_type::SPS | nal_type::PPS)
            })
            .count();
        if params >= 2 {
            let size: usize = 1 + nals[..params].iter().map(|n| 2 + n.len()).sum::<usize>();
            if size <= max {
                let mut stap = BytesMut::with_capacity(size);
                let nri = nals[..params]
                    .iter()
                    .map(|n| n[0] & 0x60)
                    .max()
                    .unwrap_or(0);
                let f = nals[..params].iter().fold(0, |a, n| a | (n[0] & 0x80));
                stap.put_u8(f | nri | nal_type::STAP_A);
                for n in &nals[..params] {
                    stap.put_u16(n.len() as u16);
                    stap.put_slice(n);
                }
                out.push(Payload::new(stap.freeze()));
                i = params;
            }
        }
        for nal in &nals[i..] {
            if nal.is_empty() || matches!(nal_unit_type(nal[0]), nal_type::AUD | nal_type::FILLER) {
                continue;
            }
            if nal.len() <= max {
                out.push(Payload::new(nal.clone()));
                continue;
            }
            // FU-A: indicator (F, NRI, type 28) and header (S, E, type), then even pieces of
            // the unit without its header byte.
            let indicator = (nal[0] & 0xe0) | nal_type::FU_A;
            let t = nal_unit_type(nal[0]);
            let data = nal.slice(1..);
            for (k, last, piece) in even_pieces(data, max - 2) {
                let mut header = t;
                if k == 0 {
                    header |= 0x80;
                }
                if last {
                    header |= 0x40;
                }
                out.push(Payload::with_head(&[indicator, header], piece));
            }
        }
    }

    fn vp8(&self, frame: Bytes, out: &mut Vec<Payload>) {
        if frame.is_empty() {
            return;
        }
        // Payload descriptor without extensions: S = 1 on the first packet, PID 0.
        for (k, _, piece) in even_pieces(frame, self.max_payload - 1) {
            out.push(Payload::with_head(
                &[if k == 0 { 0x10 } else { 0x00 }],
                piece,
            ));
        }
    }
}

/// Cuts `data` into the fewest pieces of at most `max` bytes, all of about the same size:
/// (index, is last, piece).
fn even_pieces(data: Bytes, max: usize) -> impl Iterator<Item = (usize, bool, Bytes)> {
    let n = data.len().div_ceil(max.max(1)).max(1);
    let size = data.len().div_ceil(n);
    (0..n).map(move |k| {
        let start = (k * size).min(data.len());
        let end = ((k + 1) * size).min(data.len());
        (k, k + 1 == n, data.slice(start..end))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::{AccessUnitAssembler, AnnexBSplitter};
    use crate::media::testdata;

    fn now() -> Instant {
        Instant::now()
    }

    /// A minimal H.264 depacketizer (RFC 6184 §5.6–5.8), to check what the packetizer sends.
    fn depacketize_h264(payloads: &[Payload]) -> Vec<Vec<u8>> {
        let mut nals = Vec::new();
        let mut fu: Option<Vec<u8>> = None;
        for p in payloads {
            let p = p.to_vec();
            match p[0] & 0x1f {
                24 => {
                    let mut i = 1;
                    while i + 2 <= p.len() {
                        let n = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                        nals.push(p[i + 2..i + 2 + n].to_vec());
                        i += 2 + n;
                    }
                }
                28 => {
                    if p[1] & 0x80 != 0 {
                        fu = Some(vec![(p[0] & 0xe0) | (p[1] & 0x1f)]);
                    }
                    fu.as_mut().unwrap().extend_from_slice(&p[2..]);
                    if p[1] & 0x40 != 0 {
                        nals.push(fu.take().unwrap());
                    }
                }
                _ => nals.push(p),
            }
        }
        assert!(fu.is_none(), "an FU-A without its end");
        nals
    }

    #[test]
    fn h264_single_stap_a_and_fu_a() {
        let sps = Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1e, 0xda]);
        let pps = Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]);
        let aud = Bytes::from_static(&[0x09, 0xf0]);
        let idr = Bytes::from((0..3000u32).map(|i| (i * 7) as u8 | 1).collect::<Vec<u8>>());
        let mut idr = idr.to_vec();
        idr[0] = 0x65;
        let idr = Bytes::from(idr);
        let mut p = Packetizer::with_max_payload(Codec::H264, 1000);
        let f = p.packetize(
            now(),
            Frame {
                timestamp: 90_000,
                keyframe: true,
                data: FrameData::Nals(vec![sps.clone(), pps.clone(), aud, idr.clone()]),
            },
        );
        assert_eq!(
            (f.index, f.timestamp, f.keyframe, f.marker),
            (0, 90_000, true, true)
        );
        // STAP-A, then 3000 - 1 bytes in 4 even FU-A pieces of ≤ 998.
        assert_eq!(f.payloads.len(), 5);
        assert_eq!(f.payloads[0].to_vec()[0], 0x78, "STAP-A with NRI 3");
        let sizes: Vec<usize> = f.payloads[1..].iter().map(Payload::len).collect();
        assert_eq!(sizes, [752, 752, 752, 751]);
        assert!(f.payloads.iter().all(|p| p.len() <= 1000));
        assert_eq!(f.payloads[1].head(), [0x7c, 0x85]);
        assert_eq!(f.payloads[2].head(), [0x7c, 0x05]);
        assert_eq!(f.payloads[4].head(), [0x7c, 0x45]);
        // The bodies are slices of the frame's buffer: no copy.
        assert_eq!(f.payloads[1].body().as_ptr(), idr[1..].as_ptr());
        let nals = depacketize_h264(&f.payloads);
        assert_eq!(nals, [sps.to_vec(), pps.to_vec(), idr.to_vec()]);
        // The second frame: a small P slice alone.
        let slice = Bytes::from_static(&[0x41, 0x9a, 0x01]);
        let f = p.packetize(
            now(),
            Frame {
                timestamp: 93_000,
                keyframe: false,
                data: FrameData::Nals(vec![slice.clone()]),
            },
        );
        assert_eq!(f.index, 1);
        assert_eq!(f.payloads, [Payload::new(slice)]);
    }

    #[test]
    fn vp8_descriptor_and_opus() {
        let frame = Bytes::from(vec![0xab; 2500]);
        let mut p = Packetizer::with_max_payload(Codec::Vp8, 1001);
        let f = p.packetize(
            now(),
            Frame {
                timestamp: 1,
                keyframe: true,
                data: FrameData::Whole(frame.clone()),
            },
        );
        let heads: Vec<&[u8]> = f.payloads.iter().map(Payload::head).collect();
        assert_eq!(heads, [&[0x10][..], &[0x00], &[0x00]]);
        let sizes: Vec<usize> = f.payloads.iter().map(Payload::len).collect();
        assert_eq!(sizes, [835, 835, 833]);
        let body: Vec<u8> = f.payloads.iter().flat_map(|p| p.body().to_vec()).collect();
        assert_eq!(body, frame.to_vec());
        assert!(f.marker);
        let mut p = Packetizer::new(Codec::Opus);
        let f = p.packetize(
            now(),
            Frame {
                timestamp: 960,
                keyframe: true,
                data: FrameData::Whole(Bytes::from_static(&[0xfc, 1, 2])),
            },
        );
        assert_eq!(
            f.payloads,
            [Payload::new(Bytes::from_static(&[0xfc, 1, 2]))]
        );
        assert!(!f.marker);
        let f = p.packetize(
            now(),
            Frame {
                timestamp: 1920,
                keyframe: true,
                data: FrameData::Whole(Bytes::new()),
            },
        );
        assert!(f.payloads.is_empty());
    }

    #[test]
    fn a_real_stream_round_trips_through_fu_a() {
        let Some(path) = testdata::h264("1280x720", "main", 15, 1) else {
            return;
        };
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
        let mut p = Packetizer::new(Codec::H264);
        let mut fragmented = 0;
        for au in aus {
            let want: Vec<Vec<u8>> = au.nals.iter().map(|n| n.to_vec()).collect();
            let f = p.packetize(
                now(),
                Frame {
                    timestamp: 0,
                    keyframe: au.keyframe,
                    data: FrameData::Nals(au.nals),
                },
            );
            assert!(f.payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
            fragmented += f.payloads.iter().filter(|p| p.head().len() == 2).count();
            assert_eq!(depacketize_h264(&f.payloads), want);
        }
        assert!(fragmented > 10);
    }
}
