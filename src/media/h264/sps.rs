//! Sequence and picture parameter sets: what smolrtc reads from them (H.264 §7.3.2.1–2).
//!
//! From an SPS: the `profile-level-id` the SDP announces, the picture size after frame
//! cropping, and the frame rate from the VUI timing info when present. High profiles'
//! chroma format, bit depths and scaling lists are read (and skipped) so the fields after
//! them are found in the right place. From a PPS, and from a slice header, only the ids that
//! link a slice to its parameter sets.

use super::bits::{unescape, BitReader, OutOfBits};
use crate::media::codec::ProfileLevelId;
use std::fmt;

/// Most bytes of a parameter set read (real ones are tens of bytes; scaling lists make them
/// a few hundred).
const MAX_PARAM_SET_BYTES: usize = 4096;

/// Why a parameter set could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamSetError {
    /// The data ended inside a field.
    Truncated,
    /// A field is outside the range H.264 allows (named, with its value).
    OutOfRange(&'static str, u32),
    /// The NAL unit is not of the expected type.
    WrongType(u8),
}

impl fmt::Display for ParamSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamSetError::Truncated => f.write_str("truncated"),
            ParamSetError::OutOfRange(name, v) => write!(f, "{name} = {v} is out of range"),
            ParamSetError::WrongType(t) => write!(f, "NAL type {t} is not a parameter set"),
        }
    }
}

impl std::error::Error for ParamSetError {}

impl From<OutOfBits> for ParamSetError {
    fn from(_: OutOfBits) -> Self {
        ParamSetError::Truncated
    }
}

/// What smolrtc needs from a sequence parameter set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sps {
    /// `seq_parameter_set_id` (0..=31).
    pub id: u8,
    /// `profile_idc`, constraint flags and `level_idc`: the SDP `profile-level-id`.
    pub profile_level_id: ProfileLevelId,
    /// `chroma_format_idc` (1 = 4:2:0 unless a high profile says otherwise).
    pub chroma_format_idc: u8,
    /// Picture width in pixels, after cropping.
    pub width: u32,
    /// Picture height in pixels, after cropping.
    pub height: u32,
    /// Frames per second from the VUI timing info (`time_scale / (2 × num_units_in_tick)`),
    /// as (numerator, denominator), when present.
    pub frame_rate: Option<(u32, u32)>,
}

fn range(name: &'static str, v: u32, max: u32) -> Result<u32, ParamSetError> {
    if v > max {
        Err(ParamSetError::OutOfRange(name, v))
    } else {
        Ok(v)
    }
}

/// Skips a `scaling_list()` of `size` entries (§7.3.2.1.1.1).
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), ParamSetError> {
    let mut last: i32 = 8;
    let mut next: i32 = 8;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(ParamSetError::OutOfRange("delta_scale", delta as u32));
            }
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

impl Sps {
    /// Parses an SPS NAL unit (header byte included, emulation prevention bytes in place).
    pub fn parse(nal: &[u8]) -> Result<Sps, ParamSetError> {
        let header = *nal.first().ok_or(ParamSetError::Truncated)?;
        if header & 0x1f != 7 {
            return Err(ParamSetError::WrongType(header & 0x1f));
        }
        let rbsp = unescape(&nal[1..], MAX_PARAM_SET_BYTES);
        let mut r = BitReader::new(&rbsp);
        let profile_idc = r.bits(8)? as u8;
        let iop = r.bits(8)? as u8;
        let level_idc = r.bits(8)? as u8;
        let id = range("seq_parameter_set_id", r.ue()?, 31)? as u8;
        let (chroma_format_idc, separate_colour_plane) = read_chroma(&mut r, profile_idc)?;
        range("log2_max_frame_num_minus4", r.ue()?, 12)?;
        skip_pic_order_cnt(&mut r)?;
        r.ue()?; // max_num_ref_frames
        r.bit()?; // gaps_in_frame_num_value_allowed_flag
        let width_mbs = range("pic_width_in_mbs_minus1", r.ue()?, 1023)? + 1;
        let height_map_units = range("pic_height_in_map_units_minus1", r.ue()?, 1023)? + 1;
        let frame_mbs_only = r.bit()?;
        if !frame_mbs_only {
            r.bit()?; // mb_adaptive_frame_field_flag
        }
        r.bit()?; // direct_8x8_inference_flag
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let (mut width, mut height) = (width_mbs * 16, height_map_units * 16 * field_factor);
        if r.bit()? {
            // frame_cropping_flag
            let chroma_array_type = if separate_colour_plane {
                0
            } else {
                chroma_format_idc
            };
            (width, height) = crop(&mut r, (width, height), chroma_array_type, field_factor)?;
        }
        let frame_rate = if r.bit().unwrap_or(false) {
            read_vui_timing(&mut r).ok().flatten()
        } else {
            None
        };
        Ok(Sps {
            id,
            profile_level_id: ProfileLevelId {
                profile_idc,
                iop,
                level_idc,
            },
            chroma_format_idc,
            width,
            height,
            frame_rate,
        })
    }
}

/// `chroma_format_idc` and `separate_colour_plane_flag` (and the rest of the high
/// profiles' fields, skipped); 4:2:0 for the other profiles.
fn read_chroma(r: &mut BitReader<'_>, profile_idc: u8) -> Result<(u8, bool), ParamSetError> {
    if !matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        return Ok((1, false));
    }
    let chroma_format_idc = range("chroma_format_idc", r.ue()?, 3)? as u8;
    let mut separate_colour_plane = false;
    if chroma_format_idc == 3 {
        separate_colour_plane = r.bit()?;
    }
    range("bit_depth_luma_minus8", r.ue()?, 6)?;
    range("bit_depth_chroma_minus8", r.ue()?, 6)?;
    r.bit()?; // qpprime_y_zero_transform_bypass_flag
    if r.bit()? {
        // seq_scaling_matrix_present_flag
        let lists = if chroma_format_idc != 3 { 8 } else { 12 };
        for i in 0..lists {
            if r.bit()? {
                skip_scaling_list(r, if i < 6 { 16 } else { 64 })?;
            }
        }
    }
    Ok((chroma_format_idc, separate_colour_plane))
}

/// Skips `pic_order_cnt_type` and the fields that go with it.
fn skip_pic_order_cnt(r: &mut BitReader<'_>) -> Result<(), ParamSetError> {
    match range("pic_order_cnt_type", r.ue()?, 2)? {
        0 => {
            range("log2_max_pic_order_cnt_lsb_minus4", r.ue()?, 12)?;
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let n = range("num_ref_frames_in_pic_order_cnt_cycle", r.ue()?, 255)?;
            for _ in 0..n {
                r.se()?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The picture size after the frame cropping offsets, which count in crop units
/// (§7.4.2.1.1, Table 6-1); an offset past the picture is an error.
fn crop(
    r: &mut BitReader<'_>,
    (width, height): (u32, u32),
    chroma_array_type: u8,
    field_factor: u32,
) -> Result<(u32, u32), ParamSetError> {
    let (unit_x, unit_y): (u32, u32) = match chroma_array_type {
        0 => (1, field_factor),
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        _ => (1, field_factor),
    };
    let left = r.ue()?;
    let right = r.ue()?;
    let top = r.ue()?;
    let bottom = r.ue()?;
    let crop_x = (u64::from(left) + u64::from(right)) * u64::from(unit_x);
    let crop_y = (u64::from(top) + u64::from(bottom)) * u64::from(unit_y);
    if crop_x >= u64::from(width) || crop_y >= u64::from(height) {
        return Err(ParamSetError::OutOfRange(
            "frame_crop_offset",
            (crop_x.max(crop_y)).min(u64::from(u32::MAX)) as u32,
        ));
    }
    Ok((width - crop_x as u32, height - crop_y as u32))
}

/// Reads the VUI up to its timing info (§E.1.1); `None` when it has none.
fn read_vui_timing(r: &mut BitReader<'_>) -> Result<Option<(u32, u32)>, OutOfBits> {
    if r.bit()? {
        // aspect_ratio_info_present_flag
        if r.bits(8)? == 255 {
            r.skip(32)?; // sar_width, sar_height
        }
    }
    if r.bit()? {
        r.bit()?; // overscan_appropriate_flag
    }
    if r.bit()? {
        // video_signal_type_present_flag
        r.skip(4)?; // video_format, video_full_range_flag
        if r.bit()? {
            r.skip(24)?; // colour_primaries, transfer_characteristics, matrix_coefficients
        }
    }
    if r.bit()? {
        r.ue()?; // chroma_sample_loc_type_top_field
        r.ue()?; // chroma_sample_loc_type_bottom_field
    }
    if !r.bit()? {
        return Ok(None);
    }
    let num_units_in_tick = r.bits(32)?;
    let time_scale = r.bits(32)?;
    if num_units_in_tick == 0 || time_scale == 0 {
        return Ok(None);
    }
    // One frame is two ticks (§E.2.1, frame-based streams).
    let (num, den) = (u64::from(time_scale), 2 * u64::from(num_units_in_tick));
    let g = gcd(num, den);
    let (num, den) = (num / g, den / g);
    if num > u64::from(u32::MAX) || den > u64::from(u32::MAX) {
        return Ok(None);
    }
    Ok(Some((num as u32, den as u32)))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Reads `pic_parameter_set_id` and `seq_parameter_set_id` from a PPS NAL unit.
pub fn pps_ids(nal: &[u8]) -> Result<(u8, u8), ParamSetError> {
    let header = *nal.first().ok_or(ParamSetError::Truncated)?;
    if header & 0x1f != 8 {
        return Err(ParamSetError::WrongType(header & 0x1f));
    }
    let rbsp = unescape(&nal[1..], 16);
    let mut r = BitReader::new(&rbsp);
    let pps = range("pic_parameter_set_id", r.ue()?, 255)? as u8;
    let sps = range("seq_parameter_set_id", r.ue()?, 31)? as u8;
    Ok((pps, sps))
}

/// The start of a slice header (§7.3.3): `first_mb_in_slice`, `slice_type` and
/// `pic_parameter_set_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceStart {
    /// `first_mb_in_slice`: 0 for the first slice of a picture.
    pub first_mb: u32,
    /// `slice_type` (0..=9).
    pub slice_type: u8,
    /// `pic_parameter_set_id`.
    pub pps_id: u8,
}

/// Reads the start of a slice header from a slice NAL unit (types 1 and 5).
pub fn slice_start(nal: &[u8]) -> Result<SliceStart, ParamSetError> {
    let rbsp = unescape(nal.get(1..).ok_or(ParamSetError::Truncated)?, 16);
    let mut r = BitReader::new(&rbsp);
    let first_mb = r.ue()?;
    let slice_type = range("slice_type", r.ue()?, 9)? as u8;
    let pps_id = range("pic_parameter_set_id", r.ue()?, 255)? as u8;
    Ok(SliceStart {
        first_mb,
        slice_type,
        pps_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bits written MSB first, for hand-made parameter sets.
    struct W(Vec<bool>);
    impl W {
        fn u(&mut self, n: u32, v: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.0.push((v >> i) & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u32) -> &mut Self {
            let v = u64::from(v) + 1;
            let len = 64 - v.leading_zeros();
            for _ in 0..len - 1 {
                self.0.push(false);
            }
            for i in (0..len).rev() {
                self.0.push((v >> i) & 1 == 1);
            }
            self
        }
        fn se(&mut self, v: i32) -> &mut Self {
            let k = if v > 0 { 2 * v - 1 } else { -2 * v };
            self.ue(k as u32)
        }
        fn bytes(&self, header: u8) -> Vec<u8> {
            let mut out = vec![header];
            let mut bits = self.0.clone();
            bits.push(true); // rbsp_stop_one_bit
            while !bits.len().is_multiple_of(8) {
                bits.push(false);
            }
            for c in bits.chunks(8) {
                out.push(c.iter().fold(0, |a, &b| (a << 1) | u8::from(b)));
            }
            out
        }
    }

    #[test]
    fn high_profile_with_scaling_lists_and_interlace_cropping() {
        // High 4:2:0, scaling matrix with two lists, interlaced (frame_mbs_only = 0),
        // 1920x1080 coded as 120x34 map units of 32 lines, cropped by 8 lines at the bottom.
        let mut w = W(Vec::new());
        w.u(8, 100).u(8, 0).u(8, 40).ue(0);
        w.ue(1).ue(0).ue(0).u(1, 0).u(1, 1); // chroma 4:2:0, 8-bit, scaling matrix present
        w.u(1, 1); // list 0 present
        for _ in 0..16 {
            w.se(1);
        }
        w.u(1, 0).u(1, 0).u(1, 0).u(1, 0).u(1, 0); // lists 1..5 absent
        w.u(1, 1); // list 6 (8x8) present: delta -8 then 0 means "use default"
        w.se(-8);
        w.u(1, 0);
        w.ue(0).ue(0).ue(4); // log2_max_frame_num, poc type 0, log2 lsb
        w.ue(4).u(1, 0).ue(119).ue(33).u(1, 0).u(1, 1).u(1, 1);
        w.u(1, 1).ue(0).ue(0).ue(0).ue(2); // crop bottom 2 units × 4 lines (4:2:0 field) = 8
        w.u(1, 0); // no VUI
        let sps = Sps::parse(&w.bytes(0x67)).unwrap();
        assert_eq!((sps.width, sps.height), (1920, 1080));
        assert_eq!(sps.profile_level_id.to_string(), "640028");
        assert_eq!(sps.frame_rate, None);
    }

    #[test]
    fn poc_type_1_and_vui_timing() {
        let mut w = W(Vec::new());
        w.u(8, 66).u(8, 0xc0).u(8, 30).ue(3);
        w.ue(0).ue(1).u(1, 0).se(-2).se(3).ue(2).se(5).se(-7); // poc type 1 with a cycle
        w.ue(1).u(1, 0).ue(19).ue(14).u(1, 1).u(1, 1).u(1, 0);
        w.u(1, 1); // VUI
        w.u(1, 1).u(8, 255).u(16, 4).u(16, 3); // extended SAR
        w.u(1, 0).u(1, 1).u(3, 5).u(1, 0).u(1, 1).u(24, 0x010101);
        w.u(1, 1).ue(0).ue(0);
        w.u(1, 1).u(32, 1001).u(32, 60000).u(1, 1);
        let sps = Sps::parse(&w.bytes(0x27)).unwrap();
        assert_eq!(sps.id, 3);
        assert_eq!((sps.width, sps.height), (320, 240));
        assert_eq!(sps.frame_rate, Some((30000, 1001)));
    }

    #[test]
    fn errors_never_panics() {
        assert_eq!(Sps::parse(&[]), Err(ParamSetError::Truncated));
        assert_eq!(Sps::parse(&[0x68, 1, 2]), Err(ParamSetError::WrongType(8)));
        assert_eq!(
            Sps::parse(&[0x67, 0x42, 0xe0]),
            Err(ParamSetError::Truncated)
        );
        // seq_parameter_set_id 32
        let mut w = W(Vec::new());
        w.u(8, 66).u(8, 0).u(8, 30).ue(32);
        assert_eq!(
            Sps::parse(&w.bytes(0x67)),
            Err(ParamSetError::OutOfRange("seq_parameter_set_id", 32))
        );
        // cropping everything away
        let mut w = W(Vec::new());
        w.u(8, 66)
            .u(8, 0)
            .u(8, 30)
            .ue(0)
            .ue(0)
            .ue(2)
            .ue(1)
            .u(1, 0)
            .ue(0)
            .ue(0);
        w.u(1, 1).u(1, 1).u(1, 1).ue(4).ue(4).ue(0).ue(0);
        assert!(matches!(
            Sps::parse(&w.bytes(0x67)),
            Err(ParamSetError::OutOfRange("frame_crop_offset", _))
        ));
        for len in 0..40 {
            for seed in 0..50u32 {
                let mut x = seed.wrapping_mul(2654435761).wrapping_add(len);
                let mut nal = vec![0x67];
                for _ in 0..len {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    nal.push(x as u8);
                }
                let _ = Sps::parse(&nal);
                let _ = slice_start(&nal);
                nal[0] = 0x68;
                let _ = pps_ids(&nal);
            }
        }
    }

    #[test]
    fn pps_and_slice_ids() {
        let mut w = W(Vec::new());
        w.ue(7).ue(2);
        assert_eq!(pps_ids(&w.bytes(0x68)), Ok((7, 2)));
        let mut w = W(Vec::new());
        w.ue(0).ue(7).ue(7);
        assert_eq!(
            slice_start(&w.bytes(0x65)),
            Ok(SliceStart {
                first_mb: 0,
                slice_type: 7,
                pps_id: 7
            })
        );
        assert_eq!(slice_start(&[0x65]), Err(ParamSetError::Truncated));
    }
}
