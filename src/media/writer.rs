//! File writers for received frames (issue 17): IVF for VP8, Annex-B for H.264, Ogg for
//! Opus (RFC 7845), over any [`std::io::Write`]. Counterparts of the [`super::ivf`] and
//! [`super::ogg`] readers (the tests read back what these write).
//!
//! Timestamps come from the frames' RTP timestamps (unwrapped, relative to the first
//! frame), so a lost frame leaves its gap in time instead of shifting the rest.
//!
//! - [`IvfWriter`]: the 32-byte header (`VP80`, the first keyframe's size, timebase
//!   1/90000) before the first frame, a 12-byte header per frame. The header's frame count
//!   is written as 0 unless [`IvfWriter::finish`] can seek back to fix it (libvpx's
//!   meaning of the field; ffmpeg reads it as the length in time-base units, so ffprobe's
//!   `duration` of a finished file is off: it counts the frames right).
//! - [`AnnexBWriter`]: the access units as they are (already Annex-B); it only waits for
//!   the first keyframe so the file starts decodable.
//! - [`OggOpusWriter`]: `OpusHead` and `OpusTags` pages, then pages of up to a second of
//!   packets whose granule positions are the 48 kHz sample count at the end of the page's
//!   last packet (pre-skip included), CRC-32 per page; [`OggOpusWriter::finish`] writes the
//!   last page with the end-of-stream flag.
//!
//! Errors are the writer's (`ENOSPC`, `EACCES`...): returned, never a panic; the caller
//! decides (a sink logs and stops recording).

use super::codec::Codec;
use super::ogg::crc32;
use super::opus::packet_samples;
use super::remote::ReceivedFrame;
use std::io::{self, Seek, SeekFrom, Write};

/// RTP timestamps unwrapped to a 64-bit count from the first one.
#[derive(Debug, Default, Clone, Copy)]
struct Unwrap {
    last: Option<u32>,
    pos: i64,
}

impl Unwrap {
    fn next(&mut self, ts: u32) -> i64 {
        if let Some(last) = self.last {
            self.pos += i64::from(ts.wrapping_sub(last) as i32);
        }
        self.last = Some(ts);
        self.pos
    }
}

fn wrong_codec(want: Codec, got: Codec) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a {got:?} frame for a {want:?} file"),
    )
}

/// VP8 frames to an IVF file; see the module doc.
#[derive(Debug)]
pub struct IvfWriter<W: Write> {
    out: W,
    started: bool,
    frames: u32,
    clock: Unwrap,
}

impl<W: Write> IvfWriter<W> {
    /// A writer into `out` (nothing is written before the first keyframe).
    pub fn new(out: W) -> Self {
        IvfWriter {
            out,
            started: false,
            frames: 0,
            clock: Unwrap::default(),
        }
    }

    /// Frames written.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Writes one VP8 frame; frames before the first keyframe are skipped (`Ok(false)`).
    pub fn write_frame(&mut self, f: &ReceivedFrame) -> io::Result<bool> {
        if f.codec != Codec::Vp8 {
            return Err(wrong_codec(Codec::Vp8, f.codec));
        }
        if !self.started {
            let Some((w, h)) = f.width_height.filter(|_| f.keyframe) else {
                return Ok(false);
            };
            let mut hdr = [0u8; 32];
            hdr[..4].copy_from_slice(b"DKIF");
            hdr[6..8].copy_from_slice(&32u16.to_le_bytes());
            hdr[8..12].copy_from_slice(b"VP80");
            hdr[12..14].copy_from_slice(&(w as u16).to_le_bytes());
            hdr[14..16].copy_from_slice(&(h as u16).to_le_bytes());
            hdr[16..20].copy_from_slice(&90000u32.to_le_bytes());
            hdr[20..24].copy_from_slice(&1u32.to_le_bytes());
            self.out.write_all(&hdr)?;
            self.started = true;
        }
        let ts = self.clock.next(f.rtp_timestamp).max(0) as u64;
        let mut fh = [0u8; 12];
        fh[..4].copy_from_slice(&(f.data.len() as u32).to_le_bytes());
        fh[4..].copy_from_slice(&ts.to_le_bytes());
        self.out.write_all(&fh)?;
        self.out.write_all(&f.data)?;
        self.frames += 1;
        Ok(true)
    }

    /// Flushes and returns the output.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write + Seek> IvfWriter<W> {
    /// Writes the frame count into the header and flushes.
    pub fn finish(mut self) -> io::Result<W> {
        if self.started {
            let end = self.out.stream_position()?;
            self.out.seek(SeekFrom::Start(24))?;
            self.out.write_all(&self.frames.to_le_bytes())?;
            self.out.seek(SeekFrom::Start(end))?;
        }
        self.into_inner()
    }
}

/// H.264 access units to an Annex-B file (`.h264`); see the module doc.
#[derive(Debug)]
pub struct AnnexBWriter<W: Write> {
    out: W,
    started: bool,
    frames: u32,
}

impl<W: Write> AnnexBWriter<W> {
    /// A writer into `out`.
    pub fn new(out: W) -> Self {
        AnnexBWriter {
            out,
            started: false,
            frames: 0,
        }
    }

    /// Frames written.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Writes one access unit; those before the first keyframe are skipped (`Ok(false)`).
    pub fn write_frame(&mut self, f: &ReceivedFrame) -> io::Result<bool> {
        if f.codec != Codec::H264 {
            return Err(wrong_codec(Codec::H264, f.codec));
        }
        if !self.started && !f.keyframe {
            return Ok(false);
        }
        self.started = true;
        self.out.write_all(&f.data)?;
        self.frames += 1;
        Ok(true)
    }

    /// Flushes and returns the output.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Pre-skip written in `OpusHead`: libopus's usual encoder delay (6.5 ms at 48 kHz).
pub const OPUS_PRE_SKIP: u16 = 312;
/// Packets per page at most (a second of 20 ms packets).
const PACKETS_PER_PAGE: usize = 50;

/// Opus packets to an Ogg file (`.ogg`, `.opus`); see the module doc.
#[derive(Debug)]
pub struct OggOpusWriter<W: Write> {
    out: W,
    serial: u32,
    seq: u32,
    started: bool,
    clock: Unwrap,
    /// Packets of the page being filled.
    page: Vec<bytes::Bytes>,
    /// The granule at the end of the page's last packet.
    granule: u64,
    packets: u64,
}

impl<W: Write> OggOpusWriter<W> {
    /// A writer into `out`, with a random stream serial number.
    pub fn new(out: W) -> Self {
        OggOpusWriter {
            out,
            serial: fastrand::u32(..),
            seq: 0,
            started: false,
            clock: Unwrap::default(),
            page: Vec::new(),
            granule: 0,
            packets: 0,
        }
    }

    /// Packets written (or waiting in the current page).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    fn write_page(&mut self, flags: u8, granule: u64, packets: &[&[u8]]) -> io::Result<()> {
        let mut lacing = Vec::new();
        for p in packets {
            lacing.extend(std::iter::repeat_n(255u8, p.len() / 255));
            lacing.push((p.len() % 255) as u8);
        }
        let mut page = Vec::with_capacity(27 + lacing.len() + 1500);
        page.extend_from_slice(b"OggS");
        page.push(0);
        page.push(flags);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.seq.to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.push(lacing.len() as u8);
        page.extend_from_slice(&lacing);
        for p in packets {
            page.extend_from_slice(p);
        }
        let crc = crc32(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.seq += 1;
        self.out.write_all(&page)
    }

    fn start(&mut self) -> io::Result<()> {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 2]);
        head.extend_from_slice(&OPUS_PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&48000u32.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]);
        self.write_page(2, 0, &[&head])?;
        let vendor = b"smolrtc";
        let mut tags = b"OpusTags".to_vec();
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        self.write_page(0, 0, &[&tags])?;
        self.started = true;
        Ok(())
    }

    fn flush_page(&mut self, flags: u8) -> io::Result<()> {
        if self.page.is_empty() && flags == 0 {
            return Ok(());
        }
        let page = std::mem::take(&mut self.page);
        let refs: Vec<&[u8]> = page.iter().map(|p| &p[..]).collect();
        self.write_page(flags, self.granule, &refs)
    }

    /// Writes one Opus packet (a page goes out every 50 packets). Its
    /// place in time is its RTP timestamp; its length, its TOC byte (20 ms if unreadable).
    pub fn write_frame(&mut self, f: &ReceivedFrame) -> io::Result<()> {
        if f.codec != Codec::Opus {
            return Err(wrong_codec(Codec::Opus, f.codec));
        }
        if f.data.is_empty() || f.data.len() > 255 * 255 {
            return Ok(());
        }
        if !self.started {
            self.start()?;
        }
        let start = self.clock.next(f.rtp_timestamp).max(0) as u64;
        let samples = u64::from(packet_samples(&f.data).unwrap_or(960));
        // Never backwards: a reordered or repeated timestamp continues from the last end.
        let end = (start + samples + u64::from(OPUS_PRE_SKIP)).max(self.granule + samples);
        self.granule = end;
        self.page.push(f.data.clone());
        self.packets += 1;
        if self.page.len() >= PACKETS_PER_PAGE {
            self.flush_page(0)?;
        }
        Ok(())
    }

    /// Writes the last page (end of stream), flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if self.started {
            self.flush_page(4)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ivf::IvfReader;
    use crate::media::ogg::OggOpusReader;
    use bytes::Bytes;
    use std::io::Cursor;

    fn frame(codec: Codec, ts: u32, key: bool, data: Vec<u8>) -> ReceivedFrame {
        ReceivedFrame {
            codec,
            rtp_timestamp: ts,
            keyframe: key,
            width_height: key.then_some((320, 240)),
            data: Bytes::from(data),
        }
    }

    #[test]
    fn ivf_round_trip_through_our_reader() {
        let key = vec![
            0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 1, 2,
        ];
        let delta = vec![0x51, 0x02, 0x00, 9];
        let mut w = IvfWriter::new(Cursor::new(Vec::new()));
        // Before the first keyframe nothing is written.
        assert!(!w
            .write_frame(&frame(Codec::Vp8, 10, false, delta.clone()))
            .unwrap());
        // Timestamps wrap around u32 on the way.
        let t0 = u32::MAX - 2999;
        assert!(w
            .write_frame(&frame(Codec::Vp8, t0, true, key.clone()))
            .unwrap());
        assert!(w
            .write_frame(&frame(
                Codec::Vp8,
                t0.wrapping_add(3000),
                false,
                delta.clone()
            ))
            .unwrap());
        assert!(w
            .write_frame(&frame(Codec::Opus, 0, true, vec![1]))
            .is_err());
        let bytes = w.finish().unwrap().into_inner();
        let mut r = IvfReader::default();
        r.push(&bytes);
        let a = r.poll().unwrap().unwrap();
        let b = r.poll().unwrap().unwrap();
        let h = *r.header().unwrap();
        assert_eq!(
            (h.width, h.height, h.frames, h.timebase_den),
            (320, 240, 2, 90000)
        );
        assert_eq!((a.timestamp, &a.data[..]), (0, &key[..]));
        assert_eq!((b.timestamp, &b.data[..]), (3000, &delta[..]));
        r.finish().unwrap();
    }

    #[test]
    fn ogg_round_trip_through_our_reader_with_granules() {
        let mut w = OggOpusWriter::new(Vec::new());
        // 120 packets of 20 ms (TOC config 31, code 0); packet 60 lost.
        let mut ts = 1000u32;
        let mut sent = 0;
        for i in 0..120u32 {
            if i != 60 {
                w.write_frame(&frame(Codec::Opus, ts, true, vec![0xf8, i as u8, 7]))
                    .unwrap();
                sent += 1;
            }
            ts = ts.wrapping_add(960);
        }
        let bytes = w.finish().unwrap();
        let mut r = OggOpusReader::new();
        r.push(&bytes);
        let mut got = Vec::new();
        while let Some(p) = r.poll().unwrap() {
            got.push(p);
        }
        r.finish().unwrap();
        assert_eq!(got.len(), sent);
        assert_eq!(r.head().unwrap().pre_skip, OPUS_PRE_SKIP);
        assert!(got.iter().all(|p| p.duration == 960));
        // The last page's granule: the whole span (the lost packet's time included).
        let last = bytes.windows(4).rposition(|w| w == b"OggS").unwrap();
        let granule = u64::from_le_bytes(bytes[last + 6..last + 14].try_into().unwrap());
        assert_eq!(granule, 120 * 960 + u64::from(OPUS_PRE_SKIP));
        assert_eq!(bytes[last + 5], 4, "end of stream flag");
    }

    #[test]
    fn annexb_starts_at_a_keyframe_and_errors_are_returned() {
        let mut w = AnnexBWriter::new(Vec::new());
        assert!(!w
            .write_frame(&frame(Codec::H264, 0, false, vec![0, 0, 0, 1, 0x41]))
            .unwrap());
        assert!(w
            .write_frame(&frame(Codec::H264, 1, true, vec![0, 0, 0, 1, 0x65]))
            .unwrap());
        assert_eq!(w.into_inner().unwrap(), vec![0, 0, 0, 1, 0x65]);
        // A full disk: the error comes back.
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = OggOpusWriter::new(Full);
        assert!(w
            .write_frame(&frame(Codec::Opus, 0, true, vec![0xf8]))
            .is_err());
    }
}
