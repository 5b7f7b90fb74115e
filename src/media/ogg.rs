//! A push reader for Opus in Ogg (RFC 7845): bytes in arbitrary chunks in, Opus packets with
//! their durations and timestamps out.
//!
//! ```text
//! page header (27 bytes + segment table, little-endian)
//!  0 "OggS"  4 version=0  5 flags (1 continued, 2 first, 4 last)  6 granule position (i64)
//! 14 serial  18 page sequence  22 CRC-32  26 segment count  27 segment sizes (lacing)
//! ```
//!
//! A packet is the concatenation of segments up to one shorter than 255 bytes; it may
//! continue on the next page. The first Opus stream's `OpusHead` and `OpusTags` packets are
//! read and not returned; other logical streams are skipped. Pages with a bad CRC are
//! skipped and the reader resynchronises on the next `OggS`.
//!
//! Durations: each packet's duration comes from its TOC byte ([`super::opus`]), which is
//! what its RTP timestamp advances by. The page's granule position (48 kHz samples since
//! the start, pre-skip included) is the cross-check and the fallback: a packet whose TOC
//! cannot be read gets what the granule leaves for it.

use super::opus::packet_samples;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::fmt;

/// Most bytes of one Opus packet (RFC 6716 allows 1275 per frame, 120 ms at most).
pub const MAX_PACKET_BYTES: usize = 64 * 1024;
/// Bytes searched for the next page before input is declared not Ogg.
const MAX_RESYNC_BYTES: usize = 64 * 1024;

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            k += 1;
        }
        t[i] = r;
        i += 1;
    }
    t
}

static CRC: [u32; 256] = crc_table();

/// The Ogg CRC-32 (polynomial 0x04c11db7, MSB first, no reflection, initial 0).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |crc, &b| {
        (crc << 8) ^ CRC[usize::from(((crc >> 24) as u8) ^ b)]
    })
}

/// The `OpusHead` identification header (RFC 7845 §5.1), the fields smolrtc uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusHead {
    /// Output channels (1 or 2 for RTP).
    pub channels: u8,
    /// Samples (48 kHz) to drop from the decoder's start.
    pub pre_skip: u16,
    /// The encoder's input sample rate (informational).
    pub input_rate: u32,
}

/// One Opus packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    /// The packet.
    pub data: Bytes,
    /// Its duration in 48 kHz samples.
    pub duration: u32,
    /// 48 kHz samples since the stream's first packet, at this packet's start.
    pub timestamp: u64,
}

/// Why Ogg input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OggError {
    /// No `OggS` page in the first bytes, or none for a long stretch.
    NotOgg,
    /// The first packet of the stream is not `OpusHead` (another codec: Vorbis, FLAC, ...).
    NotOpus,
    /// A page failed its CRC and was skipped (the reader goes on).
    BadCrc,
    /// A packet over [`MAX_PACKET_BYTES`] (dropped; the reader goes on).
    PacketTooLarge,
    /// The input ended inside a page or packet.
    Truncated(usize),
}

impl fmt::Display for OggError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OggError::NotOgg => f.write_str("not an Ogg stream (no OggS page)"),
            OggError::NotOpus => f.write_str("the Ogg stream is not Opus (no OpusHead)"),
            OggError::BadCrc => f.write_str("Ogg page with a bad CRC skipped"),
            OggError::PacketTooLarge => {
                write!(f, "Opus packet over {MAX_PACKET_BYTES} bytes dropped")
            }
            OggError::Truncated(n) => write!(f, "Ogg input ends inside a page ({n} bytes left)"),
        }
    }
}

impl std::error::Error for OggError {}

/// Reads Opus packets from pushed Ogg bytes; see the module doc.
#[derive(Debug, Default)]
pub struct OggOpusReader {
    buf: BytesMut,
    serial: Option<u32>,
    head: Option<OpusHead>,
    tags_seen: bool,
    partial: BytesMut,
    partial_oversized: bool,
    /// Samples of packets returned so far.
    position: u64,
    /// The previous page's granule position (pre-skip included).
    last_granule: Option<u64>,
    ready: VecDeque<OpusPacket>,
    skipped: usize,
    fatal: Option<OggError>,
    synced: bool,
}

impl OggOpusReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends input.
    pub fn push(&mut self, data: &[u8]) {
        if self.fatal.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The stream's `OpusHead`, once read.
    pub fn head(&self) -> Option<&OpusHead> {
        self.head.as_ref()
    }

    /// The next packet, `None` until more input arrives, or an error: [`OggError::BadCrc`]
    /// and [`OggError::PacketTooLarge`] are reported and reading goes on; [`OggError::NotOgg`]
    /// and [`OggError::NotOpus`] stop the reader and are returned again on every call.
    pub fn poll(&mut self) -> Result<Option<OpusPacket>, OggError> {
        loop {
            if let Some(e) = &self.fatal {
                return Err(e.clone());
            }
            if let Some(p) = self.ready.pop_front() {
                return Ok(Some(p));
            }
            match self.page() {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e @ (OggError::NotOgg | OggError::NotOpus)) => {
                    self.fatal = Some(e.clone());
                    self.buf = BytesMut::new();
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The end of input: an error if a page or packet was cut.
    pub fn finish(&self) -> Result<(), OggError> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        let left = self.buf.len() + self.partial.len();
        if left > 0 {
            return Err(OggError::Truncated(left));
        }
        if self.head.is_none() {
            return Err(OggError::NotOpus);
        }
        Ok(())
    }

    /// Reads one page if a whole one is buffered.
    fn page(&mut self) -> Result<bool, OggError> {
        if !self.sync()? {
            return Ok(false);
        }
        let Some((page, header_len)) = self.take_page()? else {
            return Ok(false);
        };
        let flags = page[5];
        let granule = i64::from_le_bytes(page[6..14].try_into().expect("8 bytes"));
        let serial = u32::from_le_bytes([page[14], page[15], page[16], page[17]]);
        match self.serial {
            None if flags & 2 != 0 => self.serial = Some(serial),
            None => return Ok(true), // not at a stream's start: wait for one
            Some(s) if s != serial => return Ok(true), // another logical stream
            Some(_) => {}
        }
        if flags & 1 == 0 && !self.partial.is_empty() {
            // A packet was cut by a lost page: drop its start.
            self.partial.clear();
            self.partial_oversized = false;
        }
        let (packets, too_large) = self.packets(page, header_len);
        let audio = self.headers_or_audio(packets)?;
        self.timestamp_page(audio, granule);
        if too_large {
            return Err(OggError::PacketTooLarge);
        }
        Ok(true)
    }

    /// Skips to the next "OggS": whether the buffer starts with one now.
    fn sync(&mut self) -> Result<bool, OggError> {
        match self.buf.windows(4).position(|w| w == b"OggS") {
            Some(0) => {}
            Some(n) => {
                self.buf.advance(n);
                self.skipped += n;
            }
            None => {
                let keep = self.buf.len().min(3);
                let drop = self.buf.len() - keep;
                self.buf.advance(drop);
                self.skipped += drop;
                if (!self.synced && self.skipped > 0) || self.skipped > MAX_RESYNC_BYTES {
                    return Err(OggError::NotOgg);
                }
                return Ok(false);
            }
        }
        if !self.synced && self.skipped > 0 {
            return Err(OggError::NotOgg);
        }
        Ok(true)
    }

    /// The page at the start of the buffer and its header's length, once it is all
    /// buffered and its CRC checks.
    fn take_page(&mut self) -> Result<Option<(BytesMut, usize)>, OggError> {
        if self.buf.len() < 27 {
            return Ok(None);
        }
        let nsegs = usize::from(self.buf[26]);
        let header_len = 27 + nsegs;
        if self.buf.len() < header_len {
            return Ok(None);
        }
        let body_len: usize = self.buf[27..header_len]
            .iter()
            .map(|&b| usize::from(b))
            .sum();
        if self.buf.len() < header_len + body_len {
            return Ok(None);
        }
        let mut page = self.buf.split_to(header_len + body_len);
        let stored = u32::from_le_bytes([page[22], page[23], page[24], page[25]]);
        page[22..26].fill(0);
        if page[4] != 0 || crc32(&page) != stored {
            // Not a page after all (or a damaged one): resume the search one byte further.
            let mut rest = page.split_off(1);
            rest.unsplit(std::mem::take(&mut self.buf));
            self.buf = rest;
            self.skipped += 1;
            return Err(OggError::BadCrc);
        }
        self.synced = true;
        self.skipped = 0;
        Ok(Some((page, header_len)))
    }

    /// The packets a page completes (a packet carried over from earlier pages first), and
    /// whether one of them was over [`MAX_PACKET_BYTES`] (dropped).
    fn packets(&mut self, mut page: BytesMut, header_len: usize) -> (Vec<Bytes>, bool) {
        let lacing = page[27..header_len].to_vec();
        let body = page.split_off(header_len).freeze();
        let mut packets: Vec<Bytes> = Vec::new();
        let mut pos = 0;
        let mut too_large = false;
        for len in lacing {
            let len = usize::from(len);
            let seg = body.slice(pos..pos + len);
            pos += len;
            if self.partial.len() + len > MAX_PACKET_BYTES {
                self.partial_oversized = true;
                self.partial.clear();
            } else if !self.partial_oversized {
                self.partial.extend_from_slice(&seg);
            }
            if len < 255 {
                if std::mem::take(&mut self.partial_oversized) {
                    too_large = true;
                } else {
                    packets.push(self.partial.split().freeze());
                }
            }
        }
        (packets, too_large)
    }

    /// Reads OpusHead and OpusTags from the stream's first packets; the rest is audio.
    fn headers_or_audio(&mut self, packets: Vec<Bytes>) -> Result<Vec<Bytes>, OggError> {
        let mut audio = Vec::new();
        for p in packets {
            if self.head.is_none() {
                if p.len() < 19 || &p[..8] != b"OpusHead" {
                    return Err(OggError::NotOpus);
                }
                self.head = Some(OpusHead {
                    channels: p[9],
                    pre_skip: u16::from_le_bytes([p[10], p[11]]),
                    input_rate: u32::from_le_bytes([p[12], p[13], p[14], p[15]]),
                });
            } else if !self.tags_seen {
                self.tags_seen = true; // OpusTags (RFC 7845 §5.2), whatever it holds
            } else if !p.is_empty() {
                audio.push(p);
            }
        }
        Ok(audio)
    }

    /// Gives the packets of one page their durations and timestamps.
    fn timestamp_page(&mut self, packets: Vec<Bytes>, granule: i64) {
        let granule = u64::try_from(granule).ok(); // -1: no packet ends on this page
        let known: u64 = packets
            .iter()
            .filter_map(|p| packet_samples(p))
            .map(u64::from)
            .sum();
        let unknown = packets
            .iter()
            .filter(|p| packet_samples(p).is_none())
            .count() as u64;
        // What the granule leaves for packets whose TOC is unreadable.
        let share = match (granule, self.last_granule, unknown) {
            (Some(g), Some(last), n) if n > 0 => g.saturating_sub(last + known) / n,
            _ => 960,
        };
        for p in packets {
            let duration = packet_samples(&p).unwrap_or(share.min(5760) as u32);
            self.ready.push_back(OpusPacket {
                data: p,
                duration,
                timestamp: self.position,
            });
            self.position += u64::from(duration);
        }
        if granule.is_some() {
            self.last_granule = granule;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testdata;

    fn page(flags: u8, granule: i64, serial: u32, seq: u32, packets: &[&[u8]]) -> Vec<u8> {
        let mut lacing = Vec::new();
        let mut body = Vec::new();
        for p in packets {
            let mut n = p.len();
            while n >= 255 {
                lacing.push(255);
                n -= 255;
            }
            lacing.push(n as u8);
            body.extend_from_slice(p);
        }
        let mut v = b"OggS".to_vec();
        v.push(0);
        v.push(flags);
        v.extend(granule.to_le_bytes());
        v.extend(serial.to_le_bytes());
        v.extend(seq.to_le_bytes());
        v.extend([0; 4]);
        v.push(lacing.len() as u8);
        v.extend(lacing);
        v.extend(body);
        let crc = crc32(&v);
        v[22..26].copy_from_slice(&crc.to_le_bytes());
        v
    }

    fn head() -> Vec<u8> {
        let mut h = b"OpusHead".to_vec();
        h.extend([1, 2]);
        h.extend(312u16.to_le_bytes());
        h.extend(48000u32.to_le_bytes());
        h.extend([0, 0, 0]);
        h
    }

    fn read_all(data: &[u8], chunk: usize) -> (Vec<OpusPacket>, Vec<OggError>, OggOpusReader) {
        let mut r = OggOpusReader::new();
        let (mut out, mut errs) = (Vec::new(), Vec::new());
        for c in data.chunks(chunk.max(1)) {
            r.push(c);
            loop {
                match r.poll() {
                    Ok(Some(p)) => out.push(p),
                    Ok(None) => break,
                    Err(e @ (OggError::NotOgg | OggError::NotOpus)) => {
                        errs.push(e);
                        return (out, errs, r);
                    }
                    Err(e) => errs.push(e),
                }
            }
        }
        (out, errs, r)
    }

    #[test]
    fn crc_matches_a_known_value() {
        // The CRC of "OggS" with this polynomial and no reflection.
        assert_eq!(crc32(b"123456789"), 0x89a1897f);
    }

    #[test]
    fn packets_across_pages_other_streams_and_bad_crc() {
        let big = vec![0xfc; 600]; // spans pages: 255 + 255 + 90
        let mut s = page(2, 0, 7, 0, &[&head()]);
        s.extend(page(2, 0, 9, 0, &[b"\x7fFLAC"])); // another logical stream: skipped
        s.extend(page(0, 0, 7, 1, &[b"OpusTags\0\0\0\0\0\0\0\0"]));
        s.extend(page(0, 312 + 960 * 2, 7, 2, &[&[0xfc, 1], &[0xfc, 2]]));
        // The big packet: the first page ends with a 255 segment, the next continues it.
        let mut p = page(0, -1, 7, 3, &[&big[..255]]);
        // page() ends a 255-byte packet with a 0 segment: drop it so the packet continues.
        p.remove(28);
        p[26] = 1;
        p[22..26].fill(0);
        let crc = crc32(&p);
        p[22..26].copy_from_slice(&crc.to_le_bytes());
        s.extend(p);
        s.extend(page(1, 312 + 960 * 3, 7, 4, &[&big[255..]]));
        let mut corrupt = page(0, 312 + 960 * 4, 7, 5, &[&[0xfc, 3]]);
        corrupt[28] ^= 1;
        s.extend(corrupt);
        s.extend(page(4, 312 + 960 * 5, 7, 6, &[&[0xfc, 4]]));
        for chunk in [1, 7, 100, 10_000] {
            let (pkts, errs, r) = read_all(&s, chunk);
            assert_eq!(errs, [OggError::BadCrc], "chunk {chunk}");
            assert_eq!(r.finish(), Ok(()));
            assert_eq!(r.head().unwrap().pre_skip, 312);
            assert_eq!(r.head().unwrap().channels, 2);
            let got: Vec<(usize, u32, u64)> = pkts
                .iter()
                .map(|p| (p.data.len(), p.duration, p.timestamp))
                .collect();
            assert_eq!(
                got,
                [(2, 960, 0), (2, 960, 960), (600, 960, 1920), (2, 960, 2880)]
            );
        }
        let (_, _, r) = read_all(&s[..s.len() - 3], 50);
        assert!(matches!(r.finish(), Err(OggError::Truncated(_))));
    }

    #[test]
    fn not_ogg_not_opus() {
        let (_, errs, _) = read_all(b"RIFF\0\0\0\0WAVEfmt ", 4);
        assert_eq!(errs, [OggError::NotOgg]);
        let s = page(
            2,
            0,
            1,
            0,
            &[b"\x01vorbis\0\0\0\0\x01\x80\xbb\0\0\0\0\0\0\0\0\0\0\0\0\x01"],
        );
        let (_, errs, _) = read_all(&s, 9);
        assert_eq!(errs, [OggError::NotOpus]);
        assert!(
            OggOpusReader::new().finish().is_err(),
            "nothing read is not Opus"
        );
    }

    #[test]
    fn ffmpeg_opus_durations_match_the_granule() {
        let Some(path) = testdata::opus(2) else {
            return;
        };
        let data = std::fs::read(path).unwrap();
        let (pkts, errs, r) = read_all(&data, 777);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(r.finish(), Ok(()));
        let head = *r.head().unwrap();
        assert_eq!(head.channels, 1);
        assert!(
            pkts.iter().all(|p| p.duration == 960),
            "libopus default 20 ms"
        );
        // 2 s of audio plus the pre-skip, in 20 ms packets.
        let total: u64 = pkts.iter().map(|p| u64::from(p.duration)).sum();
        assert!(total >= 96_000 && total < 96_000 + u64::from(head.pre_skip) + 960);
        // The timestamps are the sum of the durations: what the granule says.
        for w in pkts.windows(2) {
            assert_eq!(w[1].timestamp, w[0].timestamp + u64::from(w[0].duration));
        }
        // A corrupted byte loses its page, and the reader goes on after it.
        let mut bad = data.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x5a;
        let (pkts2, errs2, _) = read_all(&bad, 512);
        assert_eq!(errs2, [OggError::BadCrc]);
        assert!(pkts2.len() < pkts.len());
        assert_eq!(pkts2.last().unwrap().data, pkts.last().unwrap().data);
        // Every other truncation point ends cleanly or as Truncated.
        for cut in (0..data.len()).step_by(1013) {
            let (_, errs, r) = read_all(&data[..cut], 300);
            assert!(errs.is_empty() || errs == [OggError::NotOgg], "{errs:?}");
            let _ = r.finish();
        }
    }
}
