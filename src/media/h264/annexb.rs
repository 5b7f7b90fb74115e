//! A streaming Annex-B splitter: bytes in arbitrary chunks (a pipe, a file read piecewise) in,
//! NAL units out (H.264 Annex B).
//!
//! NAL units are delimited by start codes `00 00 01` or `00 00 00 01`; a start code may be
//! split across chunks. A NAL unit is complete when the next start code arrives (or at
//! [`AnnexBSplitter::flush`], for the end of a stream or an idle live pipe). Trailing zero
//! bytes (`trailing_zero_8bits`, and the leading zero of a 4-byte start code) are not part
//! of the unit. Bytes before the first start code are skipped and counted. A unit longer than
//! the configured bound is dropped with an error and the splitter resynchronises at the next
//! start code, so memory stays bounded whatever the input.

use bytes::{Bytes, BytesMut};

/// Default bound on one NAL unit: 4 MiB (a 4K intra frame at a high bitrate is ~1–2 MiB).
pub const MAX_NAL_BYTES: usize = 4 * 1024 * 1024;

/// A NAL unit was longer than the splitter's bound and was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NalTooLong {
    /// The bound, in bytes.
    pub limit: usize,
}

impl std::fmt::Display for NalTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NAL unit longer than {} bytes dropped (not Annex-B H.264?)",
            self.limit
        )
    }
}

impl std::error::Error for NalTooLong {}

/// Splits an Annex-B byte stream into NAL units; see the module doc.
#[derive(Debug)]
pub struct AnnexBSplitter {
    buf: BytesMut,
    /// Positions below this were checked as the `01` of a start code.
    scanned: usize,
    /// A start code has been seen: `buf` holds a unit's bytes.
    in_unit: bool,
    /// The current unit overflowed: skip to the next start code.
    skipping: bool,
    limit: usize,
    skipped_bytes: u64,
}

impl Default for AnnexBSplitter {
    fn default() -> Self {
        Self::new(MAX_NAL_BYTES)
    }
}

impl AnnexBSplitter {
    /// A splitter dropping units longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        AnnexBSplitter {
            buf: BytesMut::new(),
            scanned: 0,
            in_unit: false,
            skipping: false,
            limit: limit.max(16),
            skipped_bytes: 0,
        }
    }

    /// Appends input.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes skipped so far: before the first start code, and of overlong units.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_bytes
    }

    /// Bytes held, waiting for the end of their unit.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete NAL unit (without start code), an error for a dropped overlong
    /// one, or `None` until more input arrives. Empty units are never returned.
    pub fn poll(&mut self) -> Option<Result<Bytes, NalTooLong>> {
        loop {
            let Some(one) = self.find_start_code() else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.limit {
                    // Keep two bytes: they may be the zeros of a start code split in two.
                    let drop = self.buf.len() - 2;
                    let _ = self.buf.split_to(drop);
                    self.skipped_bytes += drop as u64;
                    self.scanned = 0;
                    if self.in_unit && !self.skipping {
                        self.skipping = true;
                        return Some(Err(NalTooLong { limit: self.limit }));
                    }
                }
                return None;
            };
            // The unit ends before the start code's zeros, and before trailing zeros.
            let mut end = one - 2;
            while end > 0 && self.buf[end - 1] == 0 {
                end -= 1;
            }
            let mut unit = self.buf.split_to(one + 1);
            self.scanned = 0;
            let was_in_unit = std::mem::replace(&mut self.in_unit, true);
            if std::mem::take(&mut self.skipping) || !was_in_unit {
                self.skipped_bytes += end as u64;
                continue;
            }
            if end == 0 {
                continue;
            }
            unit.truncate(end);
            return Some(Ok(unit.freeze()));
        }
    }

    /// Ends the current unit with what is buffered (the end of a stream, or a live source
    /// gone idle), returning it if it is not empty. A unit that continues after a flush is
    /// cut in two: flush only where the writer has finished a frame.
    pub fn flush(&mut self) -> Option<Bytes> {
        let mut unit = self.buf.split();
        self.scanned = 0;
        if !self.in_unit || std::mem::take(&mut self.skipping) {
            self.skipped_bytes += unit.len() as u64;
            return None;
        }
        let mut end = unit.len();
        while end > 0 && unit[end - 1] == 0 {
            end -= 1;
        }
        unit.truncate(end);
        self.in_unit = false;
        (!unit.is_empty()).then(|| unit.freeze())
    }

    /// Clears everything (a new stream starts, such as a restarted child process).
    pub fn reset(&mut self) {
        *self = AnnexBSplitter::new(self.limit);
    }

    /// The index of the `01` byte of the first start code at or after `scanned`.
    fn find_start_code(&self) -> Option<usize> {
        let b = &self.buf[..];
        let mut i = self.scanned.max(2);
        while i < b.len() {
            // Skip ahead fast: a start code's last byte is 01 and the byte before is 00.
            match b[i] {
                1 if b[i - 1] == 0 && b[i - 2] == 0 => return Some(i),
                0 => i += 1,
                _ => i += 3,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, AnnexBSplitter) {
        let mut s = AnnexBSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c);
            while let Some(u) = s.poll() {
                out.push(u.unwrap().to_vec());
            }
        }
        out.extend(s.flush().map(|b| b.to_vec()));
        (out, s)
    }

    const STREAM: &[u8] = &[
        0xff, 0xee, // garbage before the first start code
        0, 0, 0, 1, 0x67, 1, 2, 3, // SPS, 4-byte start code
        0, 0, 1, 0x68, 4, 5, // PPS, 3-byte start code
        0, 0, 0, 1, 0x65, 0, 0, 3, 0, 9, 0, 0, // IDR with an escape and trailing zeros
        0, 0, 0, 1, 0x41, 7, // last unit ends at the stream's end
    ];

    #[test]
    fn every_chunking_gives_the_same_units() {
        let want: Vec<Vec<u8>> = vec![
            vec![0x67, 1, 2, 3],
            vec![0x68, 4, 5],
            vec![0x65, 0, 0, 3, 0, 9],
            vec![0x41, 7],
        ];
        let (whole, s) = split_all(&[STREAM]);
        assert_eq!(whole, want);
        assert_eq!(s.skipped_bytes(), 2);
        // Every split point, and byte by byte: start codes cut anywhere.
        for cut in 0..STREAM.len() {
            let (a, b) = STREAM.split_at(cut);
            assert_eq!(split_all(&[a, b]).0, want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(split_all(&bytes).0, want);
        let (a, b) = STREAM.split_at(9);
        let (b, c) = b.split_at(7);
        assert_eq!(split_all(&[a, b, c]).0, want);
    }

    #[test]
    fn units_come_out_as_soon_as_the_next_start_code_arrives() {
        let mut s = AnnexBSplitter::default();
        s.push(&[0, 0, 1, 0x67, 1, 2, 0, 0]);
        assert!(s.poll().is_none(), "the SPS may go on");
        s.push(&[1, 0x68]);
        assert_eq!(s.poll().unwrap().unwrap(), &[0x67, 1, 2][..]);
        assert!(s.poll().is_none());
        assert_eq!(s.flush().unwrap(), &[0x68][..]);
        assert!(s.flush().is_none());
    }

    #[test]
    fn overlong_units_are_dropped_and_the_splitter_resyncs() {
        let mut s = AnnexBSplitter::new(64);
        s.push(&[0, 0, 1, 0x65]);
        s.push(&[0x55; 100]);
        assert_eq!(s.poll(), Some(Err(NalTooLong { limit: 64 })));
        s.push(&[0x55; 100]);
        assert_eq!(s.poll(), None, "reported once");
        assert!(s.buffered() <= 64 + 100);
        s.push(&[0, 0, 1, 0x41, 1, 0, 0, 1, 0x41, 2]);
        assert_eq!(s.poll().unwrap().unwrap(), &[0x41, 1][..]);
        assert_eq!(s.flush().unwrap(), &[0x41, 2][..]);
        // Garbage with no start code at all stays bounded too.
        let mut s = AnnexBSplitter::new(64);
        for _ in 0..100 {
            s.push(&[0x12; 50]);
            assert_eq!(s.poll(), None);
        }
        assert!(s.buffered() <= 64 + 50);
        assert!(s.skipped_bytes() > 4000);
    }

    #[test]
    fn randomized_input_never_panics_and_stays_bounded() {
        let mut x: u32 = 0x9e3779b9;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut s = AnnexBSplitter::new(256);
        for _ in 0..2000 {
            let n = (next() % 64) as usize;
            // Mostly zeros and ones, so start codes are frequent.
            let chunk: Vec<u8> = (0..n)
                .map(|_| match next() % 4 {
                    0 | 1 => 0,
                    2 => 1,
                    _ => next() as u8,
                })
                .collect();
            s.push(&chunk);
            while let Some(u) = s.poll() {
                if let Ok(u) = u {
                    assert!(!u.is_empty() && u.len() <= 256);
                    assert_ne!(u[u.len() - 1], 0);
                }
            }
            assert!(s.buffered() <= 256 + 64);
        }
    }
}
