//! A push reader for IVF, the VP8 file format: bytes in arbitrary chunks in, frames with
//! their timestamps out.
//!
//! ```text
//! file header (32 bytes, little-endian)          frame header (12 bytes)
//!  0 "DKIF"   4 version=0  6 header size         0 frame size (u32)
//!  8 fourcc  12 width     14 height              4 timestamp (u64, in the timebase)
//! 16 timebase denominator 20 numerator           then the frame
//! 24 frame count          28 unused
//! ```
//!
//! The timebase is `numerator/denominator` seconds (ffmpeg writes 1/30 for 30 fps). A frame
//! size over the reader's bound is an error before anything is allocated for it.

use bytes::{Buf, Bytes, BytesMut};
use std::fmt;

/// IVF file header size.
pub const FILE_HEADER_LEN: usize = 32;
/// IVF frame header size.
pub const FRAME_HEADER_LEN: usize = 12;
/// Default bound on one frame: 8 MiB.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// The IVF file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvfHeader {
    /// The codec (`VP80` for VP8).
    pub fourcc: [u8; 4],
    /// Width in pixels as the header says (the keyframes say it too).
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Timebase denominator (ticks per `numerator` seconds).
    pub timebase_den: u32,
    /// Timebase numerator.
    pub timebase_num: u32,
    /// Frame count the muxer wrote (0 or wrong for live output).
    pub frames: u32,
}

impl IvfHeader {
    /// A timestamp in this file's timebase, in ticks of `clock_rate` Hz (90 000 for video).
    pub fn to_clock(&self, ts: u64, clock_rate: u32) -> u64 {
        let v = u128::from(ts) * u128::from(clock_rate) * u128::from(self.timebase_num)
            / u128::from(self.timebase_den.max(1));
        v.min(u128::from(u64::MAX)) as u64
    }
}

/// One IVF frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvfFrame {
    /// The timestamp, in the file's timebase.
    pub timestamp: u64,
    /// The frame.
    pub data: Bytes,
}

/// Why IVF input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvfError {
    /// The file does not start with `DKIF`.
    NotIvf,
    /// A version other than 0, or a header size below 32.
    BadHeader(&'static str),
    /// The fourcc names another codec than the one expected.
    WrongCodec([u8; 4]),
    /// A frame header announces more bytes than the bound.
    FrameTooLarge(u64),
    /// The input ended inside a header or frame (bytes left over).
    Truncated(usize),
}

impl fmt::Display for IvfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IvfError::NotIvf => f.write_str("not an IVF file (no DKIF signature)"),
            IvfError::BadHeader(what) => write!(f, "bad IVF header: {what}"),
            IvfError::WrongCodec(cc) => {
                write!(
                    f,
                    "IVF codec {} is not VP8 (VP80)",
                    String::from_utf8_lossy(cc)
                )
            }
            IvfError::FrameTooLarge(n) => {
                write!(
                    f,
                    "IVF frame of {n} bytes over the {MAX_FRAME_BYTES} byte bound"
                )
            }
            IvfError::Truncated(n) => write!(f, "IVF input ends inside a frame ({n} bytes left)"),
        }
    }
}

impl std::error::Error for IvfError {}

/// Reads IVF from pushed bytes; see the module doc.
#[derive(Debug)]
pub struct IvfReader {
    buf: BytesMut,
    header: Option<IvfHeader>,
    limit: usize,
    failed: Option<IvfError>,
}

impl Default for IvfReader {
    fn default() -> Self {
        Self::new(MAX_FRAME_BYTES)
    }
}

impl IvfReader {
    /// A reader refusing frames over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        IvfReader {
            buf: BytesMut::new(),
            header: None,
            limit,
            failed: None,
        }
    }

    /// Appends input.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The file header, once read.
    pub fn header(&self) -> Option<&IvfHeader> {
        self.header.as_ref()
    }

    /// The next frame, `None` until more input arrives, or the error that stopped the
    /// reader (returned again on every later call: IVF has no resynchronisation point).
    pub fn poll(&mut self) -> Result<Option<IvfFrame>, IvfError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.poll_inner();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.buf = BytesMut::new();
        }
        r
    }

    /// The end of input: an error if bytes are left over.
    pub fn finish(&self) -> Result<(), IvfError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None if self.buf.is_empty() => Ok(()),
            None => Err(IvfError::Truncated(self.buf.len())),
        }
    }

    fn poll_inner(&mut self) -> Result<Option<IvfFrame>, IvfError> {
        if self.header.is_none() {
            if self.buf.len() >= 4 && &self.buf[..4] != b"DKIF" {
                return Err(IvfError::NotIvf);
            }
            if self.buf.len() < FILE_HEADER_LEN {
                return Ok(None);
            }
            let b = &self.buf[..];
            let le16 = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
            let le32 = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            if le16(4) != 0 {
                return Err(IvfError::BadHeader("version is not 0"));
            }
            let header_len = usize::from(le16(6));
            if header_len < FILE_HEADER_LEN {
                return Err(IvfError::BadHeader("header size below 32"));
            }
            let header = IvfHeader {
                fourcc: [b[8], b[9], b[10], b[11]],
                width: le16(12),
                height: le16(14),
                timebase_den: le32(16),
                timebase_num: le32(20),
                frames: le32(24),
            };
            if header.timebase_den == 0 || header.timebase_num == 0 {
                return Err(IvfError::BadHeader("zero timebase"));
            }
            if !header.fourcc.eq_ignore_ascii_case(b"VP80") {
                return Err(IvfError::WrongCodec(header.fourcc));
            }
            if self.buf.len() < header_len {
                return Ok(None);
            }
            self.buf.advance(header_len);
            self.header = Some(header);
        }
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let size = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if size as usize > self.limit {
            return Err(IvfError::FrameTooLarge(u64::from(size)));
        }
        let size = size as usize;
        if self.buf.len() < FRAME_HEADER_LEN + size {
            return Ok(None);
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&self.buf[4..12]);
        self.buf.advance(FRAME_HEADER_LEN);
        let data = self.buf.split_to(size).freeze();
        Ok(Some(IvfFrame {
            timestamp: u64::from_le_bytes(ts),
            data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{testdata, vp8};

    fn file(frames: &[(u64, &[u8])]) -> Vec<u8> {
        let mut v = b"DKIF".to_vec();
        v.extend(0u16.to_le_bytes());
        v.extend(32u16.to_le_bytes());
        v.extend(b"VP80");
        v.extend(320u16.to_le_bytes());
        v.extend(240u16.to_le_bytes());
        v.extend(30u32.to_le_bytes());
        v.extend(1u32.to_le_bytes());
        v.extend((frames.len() as u32).to_le_bytes());
        v.extend(0u32.to_le_bytes());
        for (ts, f) in frames {
            v.extend((f.len() as u32).to_le_bytes());
            v.extend(ts.to_le_bytes());
            v.extend(*f);
        }
        v
    }

    fn read_all(data: &[u8], chunk: usize) -> (Vec<IvfFrame>, Result<(), IvfError>) {
        let mut r = IvfReader::default();
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            r.push(c);
            loop {
                match r.poll() {
                    Ok(Some(f)) => out.push(f),
                    Ok(None) => break,
                    Err(e) => return (out, Err(e)),
                }
            }
        }
        (out, r.finish())
    }

    #[test]
    fn chunked_and_truncated() {
        let data = file(&[(0, b"abc"), (1, b""), (2, b"defgh")]);
        for chunk in [1, 5, 13, 1000] {
            let (frames, end) = read_all(&data, chunk);
            assert_eq!(end, Ok(()));
            let got: Vec<(u64, &[u8])> =
                frames.iter().map(|f| (f.timestamp, &f.data[..])).collect();
            assert_eq!(got, [(0, &b"abc"[..]), (1, b""), (2, b"defgh")]);
        }
        for cut in [0, 3, 20, 35, 45, data.len() - 1] {
            let (_, end) = read_all(&data[..cut], 7);
            assert!(
                cut == 0 || matches!(end, Err(IvfError::Truncated(_))),
                "cut {cut}: {end:?}"
            );
        }
        let h = IvfReader::default();
        assert_eq!(h.finish(), Ok(()));
    }

    #[test]
    fn bad_headers_and_oversized_frames() {
        let mut data = file(&[(0, b"x")]);
        assert_eq!(read_all(b"RIFF....", 8).1, Err(IvfError::NotIvf));
        data[8..12].copy_from_slice(b"VP90");
        assert_eq!(read_all(&data, 64).1, Err(IvfError::WrongCodec(*b"VP90")));
        let msg = IvfError::WrongCodec(*b"VP90").to_string();
        assert!(msg.contains("VP90"), "{msg}");
        let mut data = file(&[(0, b"x")]);
        data[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            read_all(&data, 64).1,
            Err(IvfError::FrameTooLarge(u64::from(u32::MAX)))
        );
        let mut data = file(&[]);
        data[16..20].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            read_all(&data, 64).1,
            Err(IvfError::BadHeader("zero timebase"))
        );
    }

    #[test]
    fn ffmpeg_vp8_320x240() {
        let Some(path) = testdata::vp8("320x240", 2) else {
            return;
        };
        let data = std::fs::read(path).unwrap();
        let (frames, end) = read_all(&data, 4099);
        assert_eq!(end, Ok(()));
        assert_eq!(frames.len(), 60);
        let mut r = IvfReader::default();
        r.push(&data[..32]);
        assert_eq!(r.poll(), Ok(None));
        let h = *r.header().unwrap();
        assert_eq!((h.width, h.height), (320, 240));
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.timestamp, i as u64);
            assert_eq!(h.to_clock(f.timestamp, 90_000), i as u64 * 3000);
            let v = vp8::parse_header(&f.data).unwrap();
            assert_eq!(v.keyframe, i % 30 == 0, "frame {i}");
            if v.keyframe {
                assert_eq!(v.size, Some((320, 240)));
            }
        }
    }
}
