//! A bit reader over an H.264 RBSP: fixed-width fields and Exp-Golomb codes (H.264 §7.2, §9.1).

/// Reading ran past the end of the data, or an Exp-Golomb code was longer than 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBits;

/// Removes emulation prevention bytes (`00 00 03` → `00 00`, H.264 §7.4.1), giving the RBSP of
/// a NAL unit's payload. At most `limit` input bytes are read.
pub fn unescape(nal: &[u8], limit: usize) -> Vec<u8> {
    let nal = &nal[..nal.len().min(limit)];
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Reads bits most significant first.
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// One bit.
    pub fn bit(&mut self) -> Result<bool, OutOfBits> {
        let byte = *self.data.get(self.pos / 8).ok_or(OutOfBits)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// `n` bits (at most 32) as an unsigned number: `u(n)`.
    pub fn bits(&mut self, n: u32) -> Result<u32, OutOfBits> {
        debug_assert!(n <= 32);
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Ok(v as u32)
    }

    /// Skips `n` bits.
    pub fn skip(&mut self, n: usize) -> Result<(), OutOfBits> {
        if self.pos + n > self.data.len() * 8 {
            return Err(OutOfBits);
        }
        self.pos += n;
        Ok(())
    }

    /// An unsigned Exp-Golomb code: `ue(v)`.
    pub fn ue(&mut self) -> Result<u32, OutOfBits> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return Err(OutOfBits);
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    /// A signed Exp-Golomb code: `se(v)`.
    pub fn se(&mut self) -> Result<i32, OutOfBits> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        Ok(v as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 → ue 0, 1, 2, 3, 4
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data);
        let got: Vec<u32> = (0..5).map(|_| r.ue().unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
        // se: ue 1 → 1, ue 2 → -1, ue 3 → 2, ue 4 → -2
        let mut r = BitReader::new(&data);
        r.ue().unwrap();
        let got: Vec<i32> = (0..4).map(|_| r.se().unwrap()).collect();
        assert_eq!(got, [1, -1, 2, -2]);
        assert_eq!(r.bits(7), Ok(0));
        assert_eq!(r.bit(), Err(OutOfBits));
    }

    #[test]
    fn long_codes_and_zeros_end_cleanly() {
        assert_eq!(BitReader::new(&[0; 8]).ue(), Err(OutOfBits));
        assert_eq!(BitReader::new(&[0, 0]).ue(), Err(OutOfBits));
        // 31 zeros, a one, 31 ones: the largest ue a 32-bit field holds.
        let data = [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe];
        assert_eq!(BitReader::new(&data).ue(), Ok(u32::MAX - 1));
        let mut r = BitReader::new(&[0xff]);
        assert_eq!(r.skip(9), Err(OutOfBits));
        assert_eq!(r.skip(8), Ok(()));
    }

    #[test]
    fn emulation_prevention() {
        assert_eq!(
            unescape(&[0, 0, 3, 1, 0, 0, 3, 0, 3], 100),
            [0, 0, 1, 0, 0, 0, 3]
        );
        assert_eq!(unescape(&[0, 0, 3, 1], 2), [0, 0]);
    }
}
