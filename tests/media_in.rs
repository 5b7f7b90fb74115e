//! Media, receiving (issue 17): smolrtc ↔ smolrtc over real UDP on 127.0.0.1. One peer
//! sends a file made by ffmpeg through `add_track`'s `TrackSender` (paced in real time),
//! the other receives it through `add_transceiver` → `Event::Track` → `TrackReceiver` and
//! writes it with `media::writer` (IVF, Annex-B, Ogg); ffprobe (Debian's ffmpeg) then checks
//! the recording: codec, frame count within 10% of what was sent (duration × fps), picture
//! size. Both offer directions, H.264, VP8 and Opus; and H.264 through a forwarder that
//! drops every 50th RTP packet toward the receiver (2% loss, retransmissions included),
//! where NACK recovery is counted and the fraction of frames dropped is printed and
//! bounded. Needs ffmpeg (`.ci/setup`).

mod common;

use common::forward::{route_candidate, Forwarder};
use common::media::{ffprobe, Probe};
use common::*;
use smolrtc::media::h264::annexb::AnnexBSplitter;
use smolrtc::media::h264::AccessUnitAssembler;
use smolrtc::media::ivf::IvfReader;
use smolrtc::media::ogg::OggOpusReader;
use smolrtc::media::writer::{AnnexBWriter, IvfWriter, OggOpusWriter};
use smolrtc::media::{Codec, Direction, ReceiverStats, TrackInit, TrackReceiver};
use smolrtc::Event;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A file made once per test binary by ffmpeg from `args`.
fn media(name: &str, args: &[&str]) -> PathBuf {
    common::media::make(&common::media::temp_dir("media-in").join(name), args)
}

const SECS: u32 = 3;
const FPS: u32 = 30;

#[rustfmt::skip]
fn source(codec: Codec) -> PathBuf {
    match codec {
        Codec::H264 => media("cam.h264", &["-f", "lavfi", "-i", "testsrc=size=640x480:rate=30",
            "-t", "3", "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "30",
            "-b:v", "1500k", "-pix_fmt", "yuv420p", "-f", "h264"]),
        Codec::Vp8 => media("cam.ivf", &["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
            "-t", "3", "-c:v", "libvpx", "-g", "30", "-b:v", "800k", "-f", "ivf"]),
        Codec::Opus => media("mic.ogg", &["-f", "lavfi", "-i",
            "sine=frequency=440:sample_rate=48000", "-t", "3", "-c:a", "libopus", "-b:a", "64k",
            "-f", "ogg"]),
    }
}

/// H.264 at about 4 Mbit/s (noise keeps x264 from compressing it away: ~1300 packets in
/// 3 s) for the loss test.
#[rustfmt::skip]
fn big_h264() -> PathBuf {
    media("big.h264", &["-f", "lavfi", "-i", "testsrc=size=640x480:rate=30", "-t", "3",
        "-vf", "noise=alls=20:allf=t", "-c:v", "libx264", "-profile:v", "baseline",
        "-bf", "0", "-g", "30", "-b:v", "4000k", "-maxrate", "4000k", "-bufsize", "1000k",
        "-pix_fmt", "yuv420p", "-f", "h264"])
}

/// The file's frames as `write_frame` takes them, with their durations.
fn frames_of(codec: Codec, path: &Path) -> Vec<(Vec<u8>, Duration)> {
    let data = std::fs::read(path).unwrap();
    let frame = Duration::from_secs(1) / FPS;
    match codec {
        Codec::H264 => {
            let mut split = AnnexBSplitter::new(4 << 20);
            split.push(&data);
            let mut nals: Vec<_> =
                std::iter::from_fn(|| split.poll().map(Result::unwrap)).collect();
            nals.extend(split.flush());
            let mut asm = AccessUnitAssembler::new();
            let mut aus: Vec<_> = nals
                .into_iter()
                .filter_map(|n| asm.push(n).unwrap())
                .collect();
            aus.extend(asm.flush().unwrap());
            aus.into_iter()
                .map(|au| {
                    let b = au.nals.iter().flat_map(|n| [&[0, 0, 0, 1][..], n].concat());
                    (b.collect(), frame)
                })
                .collect()
        }
        Codec::Vp8 => {
            let mut r = IvfReader::default();
            r.push(&data);
            std::iter::from_fn(|| r.poll().unwrap())
                .map(|f| (f.data.to_vec(), frame))
                .collect()
        }
        Codec::Opus => {
            let mut r = OggOpusReader::new();
            r.push(&data);
            std::iter::from_fn(|| r.poll().unwrap())
                .map(|p| {
                    let d = Duration::from_micros(u64::from(p.duration) * 1_000_000 / 48_000);
                    (p.data.to_vec(), d)
                })
                .collect()
        }
    }
}

/// Reads every frame of `rx` into a file at `path` until the track ends.
fn record(mut rx: TrackReceiver, path: PathBuf) -> std::thread::JoinHandle<ReceiverStats> {
    std::thread::spawn(move || {
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        match rx.codec() {
            Codec::H264 => {
                let mut w = AnnexBWriter::new(file);
                while let Some(f) = rx.read_frame_blocking() {
                    w.write_frame(&f).unwrap();
                }
                w.into_inner().unwrap();
            }
            Codec::Vp8 => {
                let mut w = IvfWriter::new(file);
                while let Some(f) = rx.read_frame_blocking() {
                    w.write_frame(&f).unwrap();
                    if w.frames() == 1 {
                        // As a recorder starting a new file would: the sender hears a PLI.
                        rx.request_keyframe();
                    }
                }
                w.into_inner().unwrap();
            }
            Codec::Opus => {
                let mut w = OggOpusWriter::new(file);
                while let Some(f) = rx.read_frame_blocking() {
                    w.write_frame(&f).unwrap();
                }
                w.finish().unwrap();
            }
        }
        rx.stats()
    })
}

struct Outcome {
    sent: usize,
    /// The sender saw a PLI from the receiver (`Event::KeyframeRequest`).
    pli_heard: bool,
    dropped: u64,
    stats: ReceiverStats,
    probe: Probe,
}

/// Sends `codec`'s file from one peer to the other; `receiver_offers` picks who offers;
/// `lossy` puts the 2% dropper in front of the receiver.
async fn session(codec: Codec, receiver_offers: bool, lossy: bool) -> Outcome {
    let mut tx = Peer::new("send");
    // The lossy run sets its own reorder depth (what a NACK round trip has to fit in).
    let mut rx = Peer::with_config(smolrtc::Config {
        receive_depth: if lossy {
            Duration::from_millis(250)
        } else {
            Duration::ZERO
        },
        ..loopback_config("recv")
    });
    let mut track = tx.pc.add_track(TrackInit::new(codec)).await.unwrap();
    rx.pc
        .add_transceiver(codec.kind(), Direction::RecvOnly)
        .await
        .unwrap();
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
    let mut n = 0u64;
    let dropper = move |d: &[u8]| {
        // SRTP (not SRTCP) toward the receiver: every 50th dropped.
        let rtp = matches!(d.first(), Some(128..=191)) && !matches!(d.get(1), Some(192..=223));
        if !lossy || !rtp {
            return true;
        }
        n += 1;
        if n.is_multiple_of(50) {
            counter.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    };
    let route = |sdp: &mut String| {
        route_candidate(sdp, |target| {
            Forwarder::start(target, dropper, |_| {}).front()
        })
    };
    if receiver_offers {
        connect_editing(&mut rx, &mut tx, |o| route(&mut o.sdp), |_| {}).await;
    } else {
        connect_editing(&mut tx, &mut rx, |_| {}, |a| route(&mut a.sdp)).await;
    }
    let receiver = rx
        .take("the track", |e| match e {
            Event::Track(t) => Ok(t),
            e => Err(e),
        })
        .await;
    assert_eq!(receiver.codec(), codec);
    assert_eq!(receiver.kind(), codec.kind());
    let ext = match codec {
        Codec::H264 => "h264",
        Codec::Vp8 => "ivf",
        Codec::Opus => "ogg",
    };
    let out = std::env::temp_dir().join(format!(
        "smolrtc-media-in-{}-{ext}-{receiver_offers}-{lossy}.{ext}",
        std::process::id()
    ));
    let recorder = record(receiver, out.clone());
    tx.connected().await;
    let file = if lossy { big_h264() } else { source(codec) };
    let frames = frames_of(codec, &file);
    let sent = frames.len();
    let sender = std::thread::spawn(move || {
        for (data, d) in frames {
            // A full queue drops (false): pacing in real time keeps it from filling.
            track.write_frame(&data, d).unwrap();
            std::thread::sleep(d);
        }
        track
    });
    let track = sender.join().unwrap();
    // What is in flight lands; then both ends close and the track ends.
    async_io::Timer::after(Duration::from_millis(800)).await;
    let mut pli_heard = false;
    while let Some(e) = tx.events.try_next() {
        pli_heard |= matches!(
            e,
            Event::KeyframeRequest {
                cause: smolrtc::media::KeyframeCause::Pli,
                ..
            }
        );
    }
    rx.pc.close().await;
    let stats = recorder.join().unwrap();
    tx.pc.close().await;
    drop(track);
    let probe = ffprobe(&out);
    println!("{codec:?} receiver_offers={receiver_offers} lossy={lossy}: sent {sent}, {stats:?}, {probe:?}");
    Outcome {
        sent,
        pli_heard,
        dropped: dropped.load(Ordering::Relaxed),
        stats,
        probe,
    }
}

/// The recording has the codec, about every frame sent (within 10%) and the size.
fn check(o: &Outcome, codec: &str, size: (u64, u64)) {
    assert_eq!(o.probe.codec, codec, "{o:?}", o = o.probe);
    let expected = (SECS * FPS) as f64;
    let sent = o.sent as f64;
    if codec != "opus" {
        assert!(
            (sent - expected).abs() <= expected * 0.1,
            "the source has {sent} frames"
        );
        assert_eq!((o.probe.width, o.probe.height), size);
    }
    let got = o.probe.frames as f64;
    assert!(
        (got - sent).abs() <= sent * 0.1,
        "recorded {got} of {sent} frames: {:?}",
        o.stats
    );
}

#[test]
fn h264_answerer_receives() {
    let o = run(session(Codec::H264, false, false));
    check(&o, "h264", (640, 480));
}

#[test]
fn h264_offerer_receives() {
    let o = run(session(Codec::H264, true, false));
    check(&o, "h264", (640, 480));
}

/// VP8; the recorder asks for a keyframe after its first frame (`request_keyframe`), which
/// reaches the sender as a PLI.
#[test]
fn vp8_answerer_receives() {
    let o = run(session(Codec::Vp8, false, false));
    check(&o, "vp8", (320, 240));
    assert!(o.pli_heard && o.stats.plis_sent >= 1, "{:?}", o.stats);
}

#[test]
fn vp8_offerer_receives() {
    let o = run(session(Codec::Vp8, true, false));
    check(&o, "vp8", (320, 240));
    assert!(o.pli_heard, "{:?}", o.stats);
}

#[test]
fn opus_answerer_receives() {
    let o = run(session(Codec::Opus, false, false));
    check(&o, "opus", (0, 0));
    // 3 s of 20 ms packets.
    assert!(o.sent >= 140, "{}", o.sent);
}

#[test]
fn opus_offerer_receives() {
    let o = run(session(Codec::Opus, true, false));
    check(&o, "opus", (0, 0));
}

/// 2% of the RTP toward the receiver dropped (every 50th packet, retransmissions
/// included): NACKs bring the packets back, and the recording keeps (almost) every frame.
#[test]
fn h264_through_two_percent_loss_is_repaired_by_nack() {
    let o = run(session(Codec::H264, false, true));
    let s = o.stats;
    let broken = s.frames_dropped as f64 / (s.frames + s.frames_dropped).max(1) as f64;
    println!(
        "2% loss: {} packets dropped by the relay, {} NACKs sent, {} recovered, {} lost for good, {} of {} frames dropped ({:.1}%)",
        o.dropped,
        s.nacks_sent,
        s.recovered,
        s.lost,
        s.frames_dropped,
        s.frames + s.frames_dropped,
        broken * 100.0
    );
    assert!(o.dropped >= 10, "the relay dropped {} packets", o.dropped);
    assert!(s.nacks_sent > 0 && s.recovered > 0, "{s:?}");
    // Stated bound: at most 5% of the frames dropped.
    assert!(broken <= 0.05, "{s:?}");
    check(&o, "h264", (640, 480));
}

/// `examples/record.rs` as a user runs it: smolrtc offers a VP8 track (the offer pasted as
/// one JSON line), the example answers, records, and writes `OUT.ivf`, which ffprobe reads.
#[test]
fn the_record_example_writes_a_playable_file() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let example = common::example("record");
    let dir = std::env::temp_dir().join(format!("smolrtc-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("visitor");
    run(async {
        let mut tx = Peer::new("send");
        let mut track = tx.pc.add_track(TrackInit::new(Codec::Vp8)).await.unwrap();
        let offer = tx.pc.create_offer().await.unwrap();
        tx.pc.set_local_description(offer).await.unwrap();
        let offer = tx.complete_description().await;
        // ffmpeg makes the source first: the example records for 5 s from its start.
        let frames = frames_of(Codec::Vp8, &source(Codec::Vp8));
        let mut child = Command::new(&example)
            .arg(&out)
            .arg("5")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{}", offer.to_json()).unwrap();
        let mut answer = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut answer)
            .unwrap();
        let answer = smolrtc::Description::from_json(answer.trim()).unwrap();
        tx.pc.set_remote_description(answer).await.unwrap();
        tx.connected().await;
        let sent = frames.len();
        std::thread::spawn(move || {
            for (data, d) in frames {
                track.write_frame(&data, d).unwrap();
                std::thread::sleep(d);
            }
        })
        .join()
        .unwrap();
        assert!(child.wait().unwrap().success());
        let probe = ffprobe(&out.with_extension("ivf"));
        assert_eq!(probe.codec, "vp8");
        assert_eq!((probe.width, probe.height), (320, 240));
        // `IvfWriter::finish` wrote the frame count into the header.
        let n = common::media::ivf_header_frames(&out.with_extension("ivf"));
        assert_eq!(u64::from(n), probe.frames, "{probe:?}");
        let got = probe.frames as f64;
        assert!((got - sent as f64).abs() <= sent as f64 * 0.1, "{probe:?}");
    });
}

/// Talk-back: each side sends its microphone and hears the other's in one sendrecv audio
/// section (the offer's and the answer's direction both `sendrecv`).
#[test]
fn sendrecv_audio_flows_both_ways_in_one_section() {
    run(async {
        let (mut a, mut b) = pair();
        let mut tracks = Vec::new();
        for p in [&a, &b] {
            tracks.push(p.pc.add_track(TrackInit::new(Codec::Opus)).await.unwrap());
            p.pc.add_transceiver(smolrtc::media::MediaKind::Audio, Direction::RecvOnly)
                .await
                .unwrap();
        }
        let offer = a.pc.create_offer().await.unwrap();
        assert_eq!(offer.sdp.matches("m=audio").count(), 1);
        assert!(offer.sdp.contains("a=sendrecv"), "{}", offer.sdp);
        connect(&mut a, &mut b).await;
        let answer = b.pc.local_description().await.unwrap();
        assert!(answer.sdp.contains("a=sendrecv"), "{}", answer.sdp);
        let mut recorders = Vec::new();
        for (p, name) in [(&mut a, "a"), (&mut b, "b")] {
            let t = p
                .take("the track", |e| match e {
                    Event::Track(t) => Ok(t),
                    e => Err(e),
                })
                .await;
            let out = std::env::temp_dir()
                .join(format!("smolrtc-talk-{}-{name}.ogg", std::process::id()));
            recorders.push((record(t, out.clone()), out));
        }
        a.connected().await;
        b.connected().await;
        let frames = frames_of(Codec::Opus, &source(Codec::Opus));
        let sent = frames.len();
        let senders: Vec<_> = tracks
            .into_iter()
            .map(|mut t| {
                let frames = frames.clone();
                std::thread::spawn(move || {
                    for (data, d) in frames {
                        t.write_frame(&data, d).unwrap();
                        std::thread::sleep(d);
                    }
                    t
                })
            })
            .collect();
        let tracks: Vec<_> = senders.into_iter().map(|s| s.join().unwrap()).collect();
        async_io::Timer::after(Duration::from_millis(800)).await;
        a.pc.close().await;
        b.pc.close().await;
        drop(tracks);
        for (r, out) in recorders {
            let stats = r.join().unwrap();
            let probe = ffprobe(&out);
            assert_eq!(probe.codec, "opus");
            let got = probe.frames as f64;
            assert!(
                (got - sent as f64).abs() <= sent as f64 * 0.1,
                "{probe:?} {stats:?}"
            );
        }
    });
}

/// aiortc (the benches' venv, `benches/setup-aiortc`) as the sender: it offers a VP8 or
/// H.264 video track and an Opus track, sendonly, for 3 s; smolrtc answers with
/// `add_transceiver` for both and records them. Skipped with a message when the venv is
/// missing (`.ci/setup` makes it), failed under `CI=true`.
fn aiortc_sends(codec: &str) {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let Some(py) = common::media::aiortc_python() else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aiortc_send.py");
    let mut child = Command::new(py)
        .arg(script)
        .args(["--codec", codec, "--secs", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let offer = smolrtc::Description::from_json(&lines.next().unwrap().unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("smolrtc-aiortc-{}-{codec}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (recorders, result) = run(async {
        let mut rx = Peer::new("recv");
        for kind in [
            smolrtc::media::MediaKind::Video,
            smolrtc::media::MediaKind::Audio,
        ] {
            rx.pc
                .add_transceiver(kind, Direction::RecvOnly)
                .await
                .unwrap();
        }
        rx.pc.set_remote_description(offer).await.unwrap();
        let answer = rx.pc.create_answer().await.unwrap();
        rx.pc.set_local_description(answer).await.unwrap();
        let answer = rx.complete_description().await;
        writeln!(child.stdin.take().unwrap(), "{}", answer.to_json()).unwrap();
        let mut recorders = Vec::new();
        for _ in 0..2 {
            let t = rx
                .take("a track", |e| match e {
                    Event::Track(t) => Ok(t),
                    e => Err(e),
                })
                .await;
            let ext = match t.codec() {
                Codec::H264 => "h264",
                Codec::Vp8 => "ivf",
                Codec::Opus => "ogg",
            };
            let out = dir.join(format!("{}.{ext}", t.id()));
            recorders.push((t.codec(), record(t, out.clone()), out));
        }
        let result = smol::unblock(move || {
            let line = lines.next().unwrap().unwrap();
            let _ = child.wait();
            line
        })
        .await;
        async_io::Timer::after(Duration::from_millis(500)).await;
        rx.pc.close().await;
        (recorders, result)
    });
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    println!("aiortc {codec}: {result}");
    for (c, r, out) in recorders {
        let stats = r.join().unwrap();
        let probe = ffprobe(&out);
        println!("{c:?}: {stats:?} {probe:?}");
        let sent = if c == Codec::Opus {
            assert_eq!(probe.codec, "opus");
            result["result"]["audio_frames"].as_u64().unwrap()
        } else {
            assert_eq!(probe.codec, codec);
            assert_eq!((probe.width, probe.height), (640, 480));
            result["result"]["video_frames"].as_u64().unwrap()
        } as f64;
        let got = probe.frames as f64;
        assert!(
            sent >= 60.0 && (got - sent).abs() <= sent * 0.1,
            "{got} of {sent}: {stats:?}"
        );
    }
}

#[test]
fn aiortc_sends_vp8_and_opus() {
    aiortc_sends("vp8");
}

#[test]
fn aiortc_sends_h264_and_opus() {
    aiortc_sends("h264");
}
