//! The media core's parsers on arbitrary input: what a source (a file, a command's output,
//! an RTP port, a remote sender's RTP into the receive engine) or a viewer (RTCP, an SDP
//! offer's media section) can feed smolrtc. The first
//! byte picks the parser, the second the chunk size for the streaming ones (bytes arrive in
//! arbitrary pieces from pipes), the rest is the input. Properties: no panic, bounded output,
//! and what is produced is well formed (NAL units non-empty, keyframes led by SPS and PPS,
//! Opus durations at most 120 ms, frames no larger than the input).
#![no_main]

mod alloc_limit;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use smolrtc::media::codec::Codec;
use smolrtc::media::h264::{nal_type, nal_unit_type, AccessUnitAssembler, AnnexBSplitter, Sps};
use smolrtc::media::ivf::IvfReader;
use smolrtc::media::negotiate::{negotiate, Capabilities, RemoteFormats, SendCodec};
use smolrtc::media::ogg::OggOpusReader;
use smolrtc::media::packetize::{FrameData, Packetizer};
use smolrtc::media::receiver::{Receiver, ReceiverConfig, RtpIn};
use smolrtc::media::rtp_in::RtpFramer;
use smolrtc::media::sender::{Sender, SenderConfig};
use smolrtc::media::source::SourceSpec;
use std::time::Instant;

#[global_allocator]
static ALLOC: alloc_limit::Limited = alloc_limit::Limited;

fuzz_target!(|data: &[u8]| {
    let [which, chunk, input @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk).max(1);
    match which % 8 {
        0 => annex_b(input, chunk),
        1 => {
            if let Ok(s) = Sps::parse(input) {
                assert!(s.width > 0 && s.height > 0 && s.width <= 16384 && s.height <= 32768);
            }
        }
        2 => {
            let mut r = IvfReader::default();
            let mut total = 0;
            for c in input.chunks(chunk) {
                r.push(c);
                while let Ok(Some(f)) = r.poll() {
                    total += f.data.len();
                }
            }
            assert!(total <= input.len());
            let _ = r.finish();
        }
        3 => {
            let mut r = OggOpusReader::new();
            for c in input.chunks(chunk) {
                r.push(c);
                loop {
                    match r.poll() {
                        Ok(Some(p)) => assert!(p.duration <= 5760 && p.data.len() <= input.len()),
                        Ok(None) => break,
                        Err(_) if r.finish().is_err() && r.head().is_none() => break,
                        Err(_) => {}
                    }
                }
            }
        }
        4 => {
            // RTCP from a viewer into a sender.
            let n = smolrtc::media::negotiate::Negotiated {
                codec: Codec::H264,
                pt: 96,
                rtx_pt: Some(97),
                feedback: smolrtc::media::negotiate::Feedback {
                    nack: true,
                    pli: true,
                    fir: true,
                    transport_cc: false,
                    remb: false,
                },
                profile_level_id: None,
                level_above_offer: false,
            };
            let mut s = Sender::new(SenderConfig::new(&n, 1, 2, "c", 0));
            let now = Instant::now();
            for c in input.chunks(chunk) {
                s.handle_rtcp(now, c);
            }
            let mut buf = Vec::new();
            while s.poll_transmit(now, &mut buf).is_some() {}
        }
        5 => {
            // RTP datagrams (lengths from the chunk byte) into the pass-through framer.
            for codec in [Codec::H264, Codec::Vp8, Codec::Opus] {
                let mut f = RtpFramer::new(codec);
                let mut total = 0;
                for c in input.chunks(chunk) {
                    f.push(Bytes::copy_from_slice(c));
                    while let Some(fr) = f.poll() {
                        total += fr.data.len();
                    }
                }
                // Frames are payloads of the input, plus at most one STAP-A of cached
                // parameter sets per keyframe.
                assert!(total <= 3 * input.len() + 16);
                receive(codec, input, chunk);
            }
        }
        6 => {
            // An SDP media section's attribute lines.
            let text = String::from_utf8_lossy(input);
            let mut fmts = Vec::new();
            let mut attrs = Vec::new();
            for line in text.lines() {
                if let Some(m) = line.strip_prefix("m=") {
                    fmts = m.split_whitespace().skip(3).collect();
                } else if let Some(a) = line.strip_prefix("a=") {
                    attrs.push(a.split_once(':').unwrap_or((a, "")));
                }
            }
            let offer = RemoteFormats::parse(&fmts, attrs);
            for codec in [Codec::H264, Codec::Vp8, Codec::Opus] {
                match negotiate(&offer, SendCodec::new(codec), &Capabilities::default()) {
                    Ok(n) => assert!(offer.formats.iter().any(|f| f.pt == n.pt)),
                    Err(e) => assert!(e.to_string().len() < 64 * 1024),
                }
            }
        }
        _ => {
            if let Ok(s) = std::str::from_utf8(input) {
                if let Ok(spec) = SourceSpec::parse(s) {
                    let _ = spec.codec();
                }
            }
        }
    }
});

/// RTP datagrams into the receive engine (reorder buffer, NACK, depacketizer): no panic,
/// frames made of the input's bytes (start codes added: 4 bytes per NAL unit, at most one
/// per 2 input bytes), RTCP bounded.
fn receive(codec: Codec, input: &[u8], chunk: usize) {
    let n = smolrtc::media::negotiate::Negotiated {
        codec,
        pt: 96,
        rtx_pt: Some(97),
        feedback: smolrtc::media::negotiate::Feedback {
            nack: true,
            pli: true,
            fir: true,
            transport_cc: false,
            remb: true,
        },
        profile_level_id: None,
        level_above_offer: false,
    };
    let mut r = Receiver::new(ReceiverConfig::new(&n, 1, None));
    let mut now = Instant::now();
    let mut total = 0;
    for c in input.chunks(chunk) {
        if let Some(mut p) = RtpIn::parse(&Bytes::copy_from_slice(c)) {
            // Both payload types, so RTX is reached too.
            p.pt = 96 + (p.pt & 1);
            r.handle_rtp(now, p);
        }
        now += std::time::Duration::from_millis(u64::from(c[0] & 0x3f) * 10);
        r.handle_timeout(now);
        while let Some(f) = r.poll_frame() {
            total += f.data.len();
        }
        while r.poll_rtp().is_some() {}
        while let Some(p) = r.poll_rtcp() {
            assert!(p.len() <= 2048);
        }
    }
    assert!(total <= 3 * input.len() + 16);
}

fn annex_b(input: &[u8], chunk: usize) {
    let mut split = AnnexBSplitter::new(64 * 1024);
    let mut asm = AccessUnitAssembler::new();
    let mut pk = Packetizer::new(Codec::H264);
    let now = Instant::now();
    let mut check = |au: smolrtc::media::h264::AccessUnit| {
        assert!(!au.nals.is_empty() && au.nals.iter().all(|n| !n.is_empty()));
        if au.keyframe {
            assert_eq!(nal_unit_type(au.nals[0][0]), nal_type::SPS);
            assert_eq!(nal_unit_type(au.nals[1][0]), nal_type::PPS);
        }
        let f = pk.packetize(
            now,
            smolrtc::media::packetize::Frame {
                timestamp: 0,
                keyframe: au.keyframe,
                data: FrameData::Nals(au.nals),
            },
        );
        assert!(f.payloads.iter().all(|p| p.len() <= smolrtc::media::packetize::MAX_PAYLOAD));
    };
    for c in input.chunks(chunk) {
        split.push(c);
        while let Some(n) = split.poll() {
            if let Ok(n) = n {
                assert!(!n.is_empty() && n.len() <= 64 * 1024);
                if let Ok(Some(au)) = asm.push(n) {
                    check(au);
                }
            }
        }
    }
    if let Some(n) = split.flush() {
        if let Ok(Some(au)) = asm.push(n) {
            check(au);
        }
    }
    if let Ok(Some(au)) = asm.flush() {
        check(au);
    }
}
