//! H.264 in Annex-B form: NAL units, access units, parameter sets.
//!
//! The pipeline from a byte stream to frames:
//! [`AnnexBSplitter`] (bytes → NAL units) → [`AccessUnitAssembler`] (NAL units → access
//! units, one per coded picture, keyframe = IDR, parameter sets cached and prepended to every
//! keyframe so any keyframe can start a decoder). [`Sps`] gives the picture size and the SDP
//! `profile-level-id`.

pub mod annexb;
pub(crate) mod bits;
pub mod sps;

pub use annexb::{AnnexBSplitter, NalTooLong, MAX_NAL_BYTES};
pub use sps::{ParamSetError, Sps};

use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// NAL unit types smolrtc looks at (H.264 Table 7-1).
pub mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: u8 = 1;
    /// Coded slice data partition A.
    pub const PARTITION_A: u8 = 2;
    /// Coded slice data partition C.
    pub const PARTITION_C: u8 = 4;
    /// Coded slice of an IDR picture: a keyframe.
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
    /// End of sequence.
    pub const END_OF_SEQUENCE: u8 = 10;
    /// End of stream.
    pub const END_OF_STREAM: u8 = 11;
    /// Filler data.
    pub const FILLER: u8 = 12;
    /// STAP-A aggregation (RFC 6184; RTP only).
    pub const STAP_A: u8 = 24;
    /// FU-A fragment (RFC 6184; RTP only).
    pub const FU_A: u8 = 28;
}

/// The type of a NAL unit from its header byte.
pub fn nal_unit_type(header: u8) -> u8 {
    header & 0x1f
}

/// Most NAL units in one access unit (a picture cut in many slices has tens).
pub const MAX_NALS_PER_AU: usize = 1024;
/// Most bytes in one access unit: 8 MiB.
pub const MAX_AU_BYTES: usize = 8 * 1024 * 1024;

/// Why a NAL unit or access unit was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H264Error {
    /// The NAL unit's forbidden_zero_bit is set: not H.264, or corrupted.
    ForbiddenBit,
    /// A NAL unit type that has no place in an Annex-B H.264 stream (0, 24..=31).
    UnexpectedType(u8),
    /// A parameter set or slice header could not be read.
    BadNal(u8, ParamSetError),
    /// A keyframe refers to a parameter set the stream has not sent yet; it cannot be
    /// decoded and is dropped (the stream was joined mid-way: wait for SPS/PPS).
    MissingParamSets {
        /// The PPS id the keyframe's slice names.
        pps: u8,
    },
    /// An access unit exceeded [`MAX_NALS_PER_AU`] or [`MAX_AU_BYTES`].
    AccessUnitTooLarge,
}

impl fmt::Display for H264Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H264Error::ForbiddenBit => f.write_str("NAL unit with forbidden_zero_bit set"),
            H264Error::UnexpectedType(t) => write!(f, "unexpected NAL unit type {t}"),
            H264Error::BadNal(t, e) => write!(f, "NAL unit type {t}: {e}"),
            H264Error::MissingParamSets { pps } => write!(
                f,
                "keyframe refers to PPS {pps}, which the stream has not sent: dropped"
            ),
            H264Error::AccessUnitTooLarge => write!(
                f,
                "access unit over {MAX_NALS_PER_AU} NAL units or {MAX_AU_BYTES} bytes: dropped"
            ),
        }
    }
}

impl std::error::Error for H264Error {}

/// One coded picture: its NAL units in decoding order, without start codes, without access
/// unit delimiters and filler data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// The NAL units. A keyframe starts with the SPS and PPS it uses.
    pub nals: Vec<Bytes>,
    /// Whether the picture is an IDR picture (decodable on its own).
    pub keyframe: bool,
    /// The SPS in force for a keyframe (size, profile, level).
    pub sps: Option<Arc<Sps>>,
}

impl AccessUnit {
    /// Total NAL bytes.
    pub fn len(&self) -> usize {
        self.nals.iter().map(Bytes::len).sum()
    }

    /// Whether the unit has no NAL units.
    pub fn is_empty(&self) -> bool {
        self.nals.is_empty()
    }

    /// The unit as Annex-B bytes, a 4-byte start code before each NAL unit: what an encoder
    /// hands [`TrackSender::write_frame`](crate::media::TrackSender::write_frame) per frame.
    pub fn to_annexb(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() + 4 * self.nals.len());
        for nal in &self.nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
        out
    }
}

/// A whole Annex-B stream held in memory (an `.h264` file) as its access units, in order.
/// NAL units over [`MAX_NAL_BYTES`] and units the assembler refuses are left out: a
/// damaged stream yields what can be decoded of it.
pub fn access_units(data: &[u8]) -> Vec<AccessUnit> {
    let mut split = AnnexBSplitter::new(MAX_NAL_BYTES);
    split.push(data);
    let mut asm = AccessUnitAssembler::new();
    let mut units = Vec::new();
    let nals = std::iter::from_fn(|| split.poll())
        .flatten()
        .collect::<Vec<_>>();
    for nal in nals.into_iter().chain(split.flush()) {
        units.extend(asm.push(nal).ok().flatten());
    }
    units.extend(asm.flush().ok().flatten());
    units
}

/// A NAL unit of the access unit being assembled, with what the assembler learnt of it.
#[derive(Debug)]
struct Held {
    nal: Bytes,
    /// For parameter sets: (type, id).
    param: Option<(u8, u8)>,
}

/// Groups NAL units into access units (H.264 §7.4.1.2.3) and caches parameter sets.
///
/// An access unit ends when, after one of its slices, there comes an access unit
/// delimiter, an SPS, a PPS, an SEI, a type 14–18 unit, or a slice with
/// `first_mb_in_slice == 0` (the first slice of the next picture). Units are therefore
/// complete one NAL unit late; [`AccessUnitAssembler::flush`] ends the current one at once
/// (end of stream, or an idle live source).
#[derive(Debug, Default)]
pub struct AccessUnitAssembler {
    current: Vec<Held>,
    bytes: usize,
    has_vcl: bool,
    keyframe_pps: Option<u8>,
    oversized: bool,
    sps: HashMap<u8, (Bytes, Arc<Sps>)>,
    pps: HashMap<u8, (Bytes, u8)>,
}

impl AccessUnitAssembler {
    /// An assembler with empty caches.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most recent SPS with `id`.
    pub fn sps(&self, id: u8) -> Option<&Arc<Sps>> {
        self.sps.get(&id).map(|(_, s)| s)
    }

    /// Takes one NAL unit (without start code). Returns the access unit it completed, if
    /// any; an error when the unit was dropped, or when the completed access unit was (a
    /// keyframe without its parameter sets, an oversized unit).
    pub fn push(&mut self, nal: Bytes) -> Result<Option<AccessUnit>, H264Error> {
        let header = *nal.first().ok_or(H264Error::UnexpectedType(0))?;
        if header & 0x80 != 0 {
            return Err(H264Error::ForbiddenBit);
        }
        let t = nal_unit_type(header);
        let mut param = None;
        let mut first_slice_of_picture = false;
        let mut slice_pps = None;
        let mut new_sps = None;
        let mut new_pps = None;
        match t {
            nal_type::SLICE | nal_type::IDR => {
                let s = sps::slice_start(&nal).map_err(|e| H264Error::BadNal(t, e))?;
                first_slice_of_picture = s.first_mb == 0;
                slice_pps = Some(s.pps_id);
            }
            nal_type::SPS => {
                let s = Sps::parse(&nal).map_err(|e| H264Error::BadNal(t, e))?;
                param = Some((t, s.id));
                new_sps = Some(s);
            }
            nal_type::PPS => {
                let (pps, sps) = sps::pps_ids(&nal).map_err(|e| H264Error::BadNal(t, e))?;
                param = Some((t, pps));
                new_pps = Some((pps, sps));
            }
            0 | 24..=31 => return Err(H264Error::UnexpectedType(t)),
            _ => {}
        }
        let starts_new = match t {
            nal_type::AUD | nal_type::SPS | nal_type::PPS | nal_type::SEI | 14..=18 => true,
            nal_type::SLICE | nal_type::IDR => first_slice_of_picture,
            _ => false,
        };
        let completed = if self.has_vcl && starts_new {
            self.finish()
        } else {
            Ok(None)
        };
        // Parameter sets go to the cache as they arrive, so the unit they lead finds them.
        if let Some(s) = new_sps {
            self.sps.insert(s.id, (nal.clone(), Arc::new(s)));
        }
        if let Some((pps, sps)) = new_pps {
            self.pps.insert(pps, (nal.clone(), sps));
        }
        match t {
            nal_type::AUD | nal_type::FILLER => return completed,
            nal_type::SLICE..=nal_type::IDR => self.has_vcl = true,
            _ => {}
        }
        if t == nal_type::IDR && self.keyframe_pps.is_none() {
            self.keyframe_pps = slice_pps;
        }
        self.bytes += nal.len();
        if self.current.len() >= MAX_NALS_PER_AU || self.bytes > MAX_AU_BYTES {
            self.oversized = true;
        } else {
            self.current.push(Held { nal, param });
        }
        completed
    }

    /// Ends the current access unit now, returning it if it holds a picture.
    pub fn flush(&mut self) -> Result<Option<AccessUnit>, H264Error> {
        if self.has_vcl {
            self.finish()
        } else {
            Ok(None)
        }
    }

    /// Forgets the unit being assembled (a new stream starts); parameter sets stay cached.
    pub fn reset(&mut self) {
        self.current.clear();
        self.bytes = 0;
        self.has_vcl = false;
        self.keyframe_pps = None;
        self.oversized = false;
    }

    fn finish(&mut self) -> Result<Option<AccessUnit>, H264Error> {
        let held = std::mem::take(&mut self.current);
        let keyframe_pps = self.keyframe_pps.take();
        let oversized = std::mem::take(&mut self.oversized);
        self.bytes = 0;
        self.has_vcl = false;
        if oversized {
            return Err(H264Error::AccessUnitTooLarge);
        }
        let Some(pps_id) = keyframe_pps else {
            return Ok(Some(AccessUnit {
                nals: held.into_iter().map(|h| h.nal).collect(),
                keyframe: false,
                sps: None,
            }));
        };
        // A keyframe: its SPS and PPS first, from the cache (which holds the unit's own).
        let missing = H264Error::MissingParamSets { pps: pps_id };
        let (pps_nal, sps_id) = self.pps.get(&pps_id).ok_or(missing.clone())?;
        let (sps_nal, sps) = self.sps.get(sps_id).ok_or(missing)?;
        let mut nals = Vec::with_capacity(held.len() + 2);
        nals.push(sps_nal.clone());
        nals.push(pps_nal.clone());
        nals.extend(
            held.into_iter()
                .filter(|h| {
                    h.param != Some((nal_type::SPS, *sps_id))
                        && h.param != Some((nal_type::PPS, pps_id))
                })
                .map(|h| h.nal),
        );
        Ok(Some(AccessUnit {
            nals,
            keyframe: true,
            sps: Some(sps.clone()),
        }))
    }
}

#[cfg(test)]
mod tests;
