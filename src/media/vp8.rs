//! VP8 frame headers (RFC 6386 §9.1): the keyframe bit and, for keyframes, the picture size.

use std::fmt;

/// What the first bytes of a VP8 frame say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Header {
    /// A keyframe (decodable on its own).
    pub keyframe: bool,
    /// Width and height in pixels, for keyframes.
    pub size: Option<(u16, u16)>,
}

/// A VP8 frame too short for its header, or a keyframe without the start code `9d 01 2a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vp8Error {
    /// Fewer bytes than the frame tag (3) or a keyframe header (10).
    Truncated,
    /// A keyframe whose start code is not `9d 01 2a`.
    BadStartCode,
}

impl fmt::Display for Vp8Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Vp8Error::Truncated => f.write_str("VP8 frame shorter than its header"),
            Vp8Error::BadStartCode => f.write_str("VP8 keyframe without start code 9d 01 2a"),
        }
    }
}

impl std::error::Error for Vp8Error {}

/// Reads the frame tag (and a keyframe's start code and size) of a VP8 frame.
pub fn parse_header(frame: &[u8]) -> Result<Vp8Header, Vp8Error> {
    let tag = frame.get(..3).ok_or(Vp8Error::Truncated)?;
    // Bit 0 of the frame tag is 0 for a keyframe.
    if tag[0] & 1 != 0 {
        return Ok(Vp8Header {
            keyframe: false,
            size: None,
        });
    }
    let k = frame.get(3..10).ok_or(Vp8Error::Truncated)?;
    if k[..3] != [0x9d, 0x01, 0x2a] {
        return Err(Vp8Error::BadStartCode);
    }
    // 14 bits of size, 2 bits of upscaling.
    let width = u16::from_le_bytes([k[3], k[4]]) & 0x3fff;
    let height = u16::from_le_bytes([k[5], k[6]]) & 0x3fff;
    Ok(Vp8Header {
        keyframe: true,
        size: Some((width, height)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_and_interframe() {
        let key = [
            0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x40, 0xaa,
        ];
        assert_eq!(
            parse_header(&key),
            Ok(Vp8Header {
                keyframe: true,
                size: Some((320, 240))
            })
        );
        assert_eq!(
            parse_header(&[0x51, 0x02, 0x00]),
            Ok(Vp8Header {
                keyframe: false,
                size: None
            })
        );
        assert_eq!(parse_header(&[0x50, 0x42]), Err(Vp8Error::Truncated));
        assert_eq!(parse_header(&key[..9]), Err(Vp8Error::Truncated));
        let mut bad = key;
        bad[4] = 0;
        assert_eq!(parse_header(&bad), Err(Vp8Error::BadStartCode));
    }
}
