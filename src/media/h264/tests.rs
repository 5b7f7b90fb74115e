//! The splitter, assembler and SPS parser on real x264 streams made by ffmpeg.

use super::*;
use crate::media::codec::H264Profile;
use crate::media::testdata;

/// A small xorshift generator: deterministic randomized tests without a dependency.
pub(crate) struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Splits `data` in random chunks and assembles access units, collecting errors.
fn assemble(data: &[u8], seed: u64) -> (Vec<AccessUnit>, Vec<H264Error>) {
    let mut rng = Rng(seed);
    let mut split = AnnexBSplitter::default();
    let mut asm = AccessUnitAssembler::new();
    let (mut aus, mut errs) = (Vec::new(), Vec::new());
    let mut rest = data;
    fn take(
        aus: &mut Vec<AccessUnit>,
        errs: &mut Vec<H264Error>,
        r: Result<Option<AccessUnit>, H264Error>,
    ) {
        match r {
            Ok(Some(au)) => aus.push(au),
            Ok(None) => {}
            Err(e) => errs.push(e),
        }
    }
    while !rest.is_empty() {
        let n = 1 + rng.below(if seed == 0 { 1 << 20 } else { 5000 });
        let (chunk, r) = rest.split_at(n.min(rest.len()));
        rest = r;
        split.push(chunk);
        while let Some(nal) = split.poll() {
            match nal {
                Ok(nal) => take(&mut aus, &mut errs, asm.push(nal)),
                Err(_) => errs.push(H264Error::AccessUnitTooLarge),
            }
        }
    }
    if let Some(nal) = split.flush() {
        take(&mut aus, &mut errs, asm.push(nal));
    }
    take(&mut aus, &mut errs, asm.flush());
    (aus, errs)
}

fn read(path: Option<std::path::PathBuf>) -> Option<Vec<u8>> {
    Some(std::fs::read(path?).expect("read test media"))
}

fn check_stream(data: &[u8], frames: usize, gop: usize) -> Arc<Sps> {
    let (aus, errs) = assemble(data, 0);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(aus.len(), frames);
    for (i, au) in aus.iter().enumerate() {
        assert_eq!(au.keyframe, i % gop == 0, "frame {i}");
        let types: Vec<u8> = au.nals.iter().map(|n| nal_unit_type(n[0])).collect();
        assert!(!types.contains(&nal_type::AUD) && !types.contains(&nal_type::FILLER));
        if au.keyframe {
            assert_eq!(
                types[..2],
                [nal_type::SPS, nal_type::PPS],
                "frame {i}: {types:?}"
            );
            assert!(types.contains(&nal_type::IDR));
        } else {
            assert!(
                types.iter().all(|t| *t == nal_type::SLICE),
                "frame {i}: {types:?}"
            );
        }
    }
    // The same units whatever the chunking.
    for seed in [1, 2, 3] {
        let (again, errs) = assemble(data, seed);
        assert!(errs.is_empty());
        assert_eq!(again, aus, "seed {seed}");
    }
    aus[0].sps.clone().expect("a keyframe carries its SPS")
}

#[test]
fn baseline_640x480() {
    let Some(data) = read(testdata::h264("640x480", "baseline", 30, 2)) else {
        return;
    };
    let sps = check_stream(&data, 60, 30);
    assert_eq!((sps.width, sps.height), (640, 480));
    assert_eq!(
        sps.profile_level_id.profile(),
        Some(H264Profile::ConstrainedBaseline)
    );
    assert_eq!(
        sps.profile_level_id.level(),
        30,
        "x264 picks 3.0 for 480p30"
    );
    assert_eq!(sps.frame_rate, Some((30, 1)));
}

#[test]
fn main_1280x720() {
    let Some(data) = read(testdata::h264("1280x720", "main", 15, 1)) else {
        return;
    };
    let sps = check_stream(&data, 30, 15);
    assert_eq!((sps.width, sps.height), (1280, 720));
    assert_eq!(sps.profile_level_id.profile(), Some(H264Profile::Main));
    assert_eq!(sps.profile_level_id.level(), 31);
}

#[test]
fn cropping_318x242() {
    let Some(data) = read(testdata::h264("318x242", "baseline", 10, 1)) else {
        return;
    };
    let sps = check_stream(&data, 30, 10);
    assert_eq!(
        (sps.width, sps.height),
        (318, 242),
        "coded 320x256, cropped"
    );
}

#[test]
fn high_1080p_with_a_pps_scaling_matrix_and_high444() {
    let Some(path) = testdata::make(
        "1920x1080-high-cqm.h264",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=1920x1080:rate=30",
            "-t",
            "0.2",
            "-c:v",
            "libx264",
            "-profile:v",
            "high",
            "-x264-params",
            "cqm=jvt",
            "-bf",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "h264",
        ],
    ) else {
        return;
    };
    let data = std::fs::read(path).unwrap();
    let sps = check_stream(&data, 6, 250);
    assert_eq!((sps.width, sps.height), (1920, 1080));
    assert_eq!(sps.profile_level_id.profile(), Some(H264Profile::High));
    assert_eq!(sps.profile_level_id.level(), 40);

    let Some(path) = testdata::make(
        "318x242-high444.h264",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=318x242:rate=30",
            "-t",
            "0.2",
            "-c:v",
            "libx264",
            "-profile:v",
            "high444",
            "-bf",
            "0",
            "-pix_fmt",
            "yuv444p",
            "-f",
            "h264",
        ],
    ) else {
        return;
    };
    let data = std::fs::read(path).unwrap();
    let sps = check_stream(&data, 6, 250);
    assert_eq!(sps.chroma_format_idc, 3);
    assert_eq!(
        (sps.width, sps.height),
        (318, 242),
        "4:4:4 crops in single pixels"
    );
    assert_eq!(
        sps.profile_level_id.profile(),
        Some(H264Profile::HighOther(244))
    );
}

/// Splits `data` into NAL units.
fn nals(data: &[u8]) -> Vec<Bytes> {
    let mut s = AnnexBSplitter::default();
    s.push(data);
    let mut out: Vec<Bytes> = std::iter::from_fn(|| s.poll().map(|r| r.unwrap())).collect();
    out.extend(s.flush());
    out
}

#[test]
fn keyframes_get_cached_parameter_sets_and_a_mid_stream_start_waits_for_them() {
    let Some(data) = read(testdata::h264("640x480", "baseline", 30, 2)) else {
        return;
    };
    let all = nals(&data);
    // Only the first keyframe carries SPS/PPS: the second must get them from the cache.
    let mut seen_idr = 0;
    let stripped: Vec<Bytes> = all
        .iter()
        .filter(|n| {
            let t = nal_unit_type(n[0]);
            if t == nal_type::IDR {
                seen_idr += 1;
            }
            !(seen_idr >= 1 && matches!(t, nal_type::SPS | nal_type::PPS)) || (seen_idr == 0)
        })
        .cloned()
        .collect();
    let mut asm = AccessUnitAssembler::new();
    let mut aus = Vec::new();
    for n in stripped {
        aus.extend(asm.push(n).unwrap());
    }
    aus.extend(asm.flush().unwrap());
    assert_eq!(aus.len(), 60);
    let second = &aus[30];
    assert!(second.keyframe);
    assert_eq!(nal_unit_type(second.nals[0][0]), nal_type::SPS);
    assert_eq!(nal_unit_type(second.nals[1][0]), nal_type::PPS);
    assert_eq!(second.nals[0], aus[0].nals[0]);

    // Joined mid-way (no parameter sets ever): keyframes are dropped with a clear error,
    // delta frames pass (a viewer starts at a keyframe anyway).
    let mut asm = AccessUnitAssembler::new();
    let mut errs = Vec::new();
    let mut keyframes = 0;
    for n in all
        .iter()
        .filter(|n| !matches!(nal_unit_type(n[0]), nal_type::SPS | nal_type::PPS))
    {
        match asm.push(n.clone()) {
            Ok(Some(au)) => keyframes += usize::from(au.keyframe),
            Ok(None) => {}
            Err(e) => errs.push(e),
        }
    }
    assert_eq!(keyframes, 0);
    assert_eq!(errs.len(), 2);
    assert!(errs[0].to_string().contains("PPS 0"), "{}", errs[0]);
}

#[test]
fn access_unit_boundaries_by_rule() {
    // Hand-made slices: first_mb_in_slice 0 → ue "1" bit; 5 → "00110".
    let sps = nals(
        &std::fs::read(testdata::h264("640x480", "baseline", 30, 2).unwrap_or_default())
            .unwrap_or_default(),
    );
    if sps.is_empty() {
        return;
    }
    let (sps, pps) = (sps[0].clone(), sps[1].clone());
    // slice header: first_mb ue, slice_type ue(7)=0001000, pps_id ue(0)=1
    let idr0 = Bytes::from_static(&[0x65, 0b1000_1000, 0b1000_0000]);
    let p0 = Bytes::from_static(&[0x41, 0b1000_1000, 0b1000_0000]);
    let p5 = Bytes::from_static(&[0x41, 0b0011_0000, 0b1000_1000]);
    let aud = Bytes::from_static(&[0x09, 0xf0]);
    let sei = Bytes::from_static(&[0x06, 0x05, 0x01, 0x00, 0x80]);
    let mut asm = AccessUnitAssembler::new();
    let mut out = Vec::new();
    for n in [
        aud.clone(),
        sps,
        pps,
        idr0,
        aud.clone(),
        p0.clone(),
        p5.clone(), // second slice of the same picture
        sei,        // SEI starts the next unit
        p0.clone(),
        p0.clone(),                              // first_mb 0 again: a new picture
        Bytes::from_static(&[0x0c, 0xff, 0xff]), // filler, dropped
    ] {
        out.extend(asm.push(n).unwrap());
    }
    out.extend(asm.flush().unwrap());
    let shape: Vec<(bool, usize)> = out.iter().map(|a| (a.keyframe, a.nals.len())).collect();
    assert_eq!(shape, [(true, 3), (false, 2), (false, 2), (false, 1)]);
    assert_eq!(asm.flush(), Ok(None));
    assert_eq!(
        asm.push(Bytes::from_static(&[0x85, 0])),
        Err(H264Error::ForbiddenBit)
    );
    assert_eq!(
        asm.push(Bytes::from_static(&[0x18, 0])),
        Err(H264Error::UnexpectedType(24))
    );
    assert!(matches!(
        asm.push(Bytes::from_static(&[0x67, 0x42])),
        Err(H264Error::BadNal(7, ParamSetError::Truncated))
    ));
    assert!(matches!(
        asm.push(Bytes::from_static(&[0x41])),
        Err(H264Error::BadNal(1, ParamSetError::Truncated))
    ));
}

#[test]
fn corrupted_and_truncated_streams_never_panic() {
    let Some(data) = read(testdata::h264("318x242", "baseline", 10, 1)) else {
        return;
    };
    let mut rng = Rng(42);
    for round in 0..60 {
        let mut d = data.clone();
        match round % 3 {
            0 => {
                for _ in 0..1 + rng.below(50) {
                    let i = rng.below(d.len());
                    d[i] = rng.next() as u8;
                }
            }
            1 => d.truncate(rng.below(d.len())),
            _ => {
                // Splice a random window elsewhere: NAL units cut mid-way.
                let a = rng.below(d.len());
                let b = rng.below(d.len());
                let (lo, hi) = (a.min(b), a.max(b));
                d.drain(lo..hi.min(lo + 3000));
            }
        }
        let (aus, _errs) = assemble(&d, round);
        assert!(aus.len() <= 40, "round {round}");
        for au in &aus {
            assert!(!au.nals.is_empty() && au.nals.iter().all(|n| !n.is_empty()));
        }
    }
}

/// `access_units` gives the stream's frames; written back with `to_annexb` and read again
/// they are the same units.
#[test]
fn access_units_of_a_whole_stream_round_trip_as_annexb() {
    let Some(data) = read(testdata::h264("640x480", "baseline", 30, 2)) else {
        return;
    };
    let units = access_units(&data);
    assert_eq!(units.len(), 60);
    assert!(units[0].keyframe && units[30].keyframe && !units[1].keyframe);
    let mut written = Vec::new();
    for au in &units {
        let bytes = au.to_annexb();
        assert_eq!(bytes.len(), au.len() + 4 * au.nals.len());
        written.extend(bytes);
    }
    assert_eq!(access_units(&written), units);
}
