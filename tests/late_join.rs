//! A viewer joining mid-stream (issue 16): its first frame is the stream's cached keyframe
//! with its SPS/PPS, followed at once by the frames since, so it decodes long before the
//! source's next keyframe, whatever the source's keyframe interval.
//!
//! The source is an ffmpeg H.264 file with one keyframe in 10 s (`-g 300` at 30 fps, no
//! scene-cut keyframes), played in a loop. Each case joins 1.5–5 s into a group of pictures
//! and asserts against the group, not a wall-clock budget: the stream's keyframe count (from
//! `GET /api/streams`) must not have moved when the viewer has its first frame, so the test
//! fails if the cached keyframe is not sent first. Needs ffmpeg; the Chromium case also
//! root, `unshare` and chromium (`.ci/setup`).

mod common;

use common::browser::{
    in_namespace, reexec_in_namespace, wait_report, Browser, BrowserKind, StopService,
};
use common::http::request;
use smolrtc::media::MediaKind;
use smolrtc::service::{ServiceConfig, StreamConfig};
use smolrtc::Config;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Frames in the file, and between its keyframes.
const GOP: u64 = 300;
/// RTP ticks between two frames at 30 fps.
const FRAME_TICKS: u32 = 3000;

/// 10 s of 320x240 H.264 baseline at 30 fps with a single keyframe (its first frame).
fn long_gop_file(dir: &Path) -> PathBuf {
    #[rustfmt::skip]
    let path = common::media::make(&dir.join("gop300.h264"), [
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "10",
        "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0",
        "-g", "300", "-keyint_min", "300", "-sc_threshold", "0",
        "-pix_fmt", "yuv420p", "-f", "h264",
    ]);
    // The premise of every case here: exactly one keyframe in the 300 frames.
    let units = common::media::annexb_units(&path);
    let idr = |u: &Vec<u8>| nal_types(u).contains(&5);
    assert_eq!(units.len() as u64, GOP, "frames in {}", path.display());
    assert!(idr(&units[0]), "the file starts with a keyframe");
    assert_eq!(units.iter().filter(|u| idr(u)).count(), 1, "keyframes");
    path
}

/// The NAL unit types of an Annex-B access unit, in order.
fn nal_types(au: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 < au.len() {
        if au[i..i + 3] == [0, 0, 1] {
            out.push(au[i + 3] & 0x1f);
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// A service config (HTTP and ICE on 127.0.0.1) with the video stream `cam` from `file`.
fn cam_config(file: &Path, peer: Config) -> ServiceConfig {
    let mut config = common::service::config(|c| c.peer = peer);
    config.peer.ice.hosts.addresses = vec![Ipv4Addr::LOCALHOST.into()];
    let source = format!("file:{}", file.display());
    StreamConfig::add_source(&mut config.streams, MediaKind::Video, "cam", &source)
        .expect("stream");
    config
}

/// The video track's frame and keyframe counts from `GET /api/streams`.
fn counts(addr: SocketAddr) -> (u64, u64) {
    let r = request(addr, "GET", "/api/streams", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = &r.json()["streams"][0]["video"];
    (
        v["frames"].as_u64().unwrap_or(0),
        v["keyframes"].as_u64().unwrap_or(0),
    )
}

/// Waits until the source is `from..to` frames into a group of pictures (the file loops
/// whole, so frame `n` is `n % GOP` into one); returns that position and the keyframe count.
fn wait_mid_gop(addr: SocketAddr, from: u64, to: u64) -> (u64, u64) {
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        let (frames, keyframes) = counts(addr);
        let pos = frames.saturating_sub(1) % GOP;
        if frames > 0 && (from..to).contains(&pos) {
            assert_eq!(keyframes, frames.div_ceil(GOP), "one keyframe per loop");
            return (pos, keyframes);
        }
        assert!(
            Instant::now() < until,
            "the stream never got {from} frames into a group"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `b` comes after `a` in RTP timestamp order (RFC 3550 wrap-around).
fn after(a: u32, b: u32) -> bool {
    let d = b.wrapping_sub(a);
    d != 0 && d < 1 << 31
}

/// Two library viewers: the first plays from the start, the second joins mid-group. Its
/// first frame is a keyframe with SPS and PPS, read while the source is still in the same
/// group; the catch-up carries the group's frames since, and the live frames follow with
/// timestamps in order and the source's spacing. A PLI later is answered from the cache too.
#[test]
fn a_library_viewer_joining_mid_gop_gets_the_cached_keyframe_first() {
    let dir = common::media::temp_dir("late-join");
    let file = long_gop_file(&dir);
    let (_rt, h) =
        common::service::start_with(cam_config(&file, Config::loopback("service")), |_| {});
    let addr = h.addr;
    wait_mid_gop(addr, 0, GOP);
    common::run(async {
        let (_v1, mut rx1, _) = common::whep_viewer(addr, "cam", "viewer1").await;
        let first = rx1.read_frame().await.expect("viewer 1 frame");
        assert!(first.keyframe, "viewer 1 starts at a keyframe");
        // Viewer 1 keeps reading (a reader that stops would ask for keyframes).
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop1 = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop1.load(std::sync::atomic::Ordering::Relaxed) {
                match rx1.read_frame_blocking() {
                    Some(_) => n += 1,
                    None => break,
                }
            }
            n
        });

        let (pos, keyframes) = wait_mid_gop(addr, 45, 150);
        let (_v2, mut rx2, _) = common::whep_viewer(addr, "cam", "viewer2").await;
        let f = rx2.read_frame().await.expect("viewer 2 frame");
        let (now_frames, now_keyframes) = counts(addr);
        println!(
            "joined {pos} frames into the group; first frame {} bytes, NAL types {:?}; the \
             source at frame {} of the group",
            f.data.len(),
            nal_types(&f.data),
            now_frames.saturating_sub(1) % GOP
        );
        assert_eq!(
            now_keyframes, keyframes,
            "viewer 2 had its first frame only after the source's next keyframe: the \
             cached one was not sent first"
        );
        assert!(f.keyframe, "the first frame is a keyframe");
        let types = nal_types(&f.data);
        let at = |t: u8| types.iter().position(|&x| x == t);
        assert!(
            matches!((at(7), at(8), at(5)), (Some(s), Some(p), Some(i)) if s < i && p < i),
            "SPS and PPS before the IDR slice: {types:?}"
        );
        assert_eq!(f.width_height, Some((320, 240)));

        // The catch-up (the group so far) and then live frames: no other keyframe in
        // between, timestamps always in order.
        let mut stamps = vec![f.rtp_timestamp];
        while (stamps.len() as u64) < pos + 60 {
            let f = rx2.read_frame().await.expect("viewer 2 frames");
            assert!(!f.keyframe, "a keyframe in the middle of the group");
            stamps.push(f.rtp_timestamp);
        }
        for w in stamps.windows(2) {
            assert!(after(w[0], w[1]), "timestamps out of order: {w:?}");
        }
        // The live frames after the catch-up keep the source's spacing.
        let live = &stamps[stamps.len() - 20..];
        for w in live.windows(2) {
            assert_eq!(w[1].wrapping_sub(w[0]), FRAME_TICKS, "live spacing");
        }
        assert_eq!(counts(addr).1, keyframes, "still the same group");

        // A PLI (the viewer asks for a keyframe): answered from the cache, the timestamps
        // still in order across it.
        rx2.request_keyframe();
        let mut last = *stamps.last().unwrap();
        let mut read = 0;
        loop {
            let f = rx2.read_frame().await.expect("frames after the PLI");
            assert!(after(last, f.rtp_timestamp), "out of order after the PLI");
            last = f.rtp_timestamp;
            read += 1;
            if f.keyframe {
                break;
            }
            assert!(read < 30, "no keyframe within 30 frames of the PLI");
        }
        assert_eq!(
            counts(addr).1,
            keyframes,
            "the PLI was answered by the source's next keyframe, not the cache"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let n = reader.join().expect("viewer 1 reader");
        assert!(n > 0, "viewer 1 kept receiving");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Chromium: viewer 1 plays the stream through WHEP (and keeps playing); viewer 2, a second
/// Chromium, joins 1–4 s into a 10 s group through `POST /api/offer?stream=cam` and must
/// decode its first frames while the source is still in that group.
#[test]
fn chromium_late_joiner_decodes_before_the_next_keyframe() {
    browser_late_joiner(
        "chromium_late_joiner_decodes_before_the_next_keyframe",
        BrowserKind::Chromium,
        "H264",
    );
}

/// The same with Firefox ESR and a VP8 stream (offline Firefox has no H.264).
#[test]
fn firefox_late_joiner_decodes_vp8_before_the_next_keyframe() {
    browser_late_joiner(
        "firefox_late_joiner_decodes_vp8_before_the_next_keyframe",
        BrowserKind::Firefox,
        "VP8",
    );
}

/// 10 s of 320x240 VP8 at 30 fps with one keyframe (checked by [`wait_mid_gop`]: one per
/// loop of the stream).
fn long_gop_vp8_file(dir: &Path) -> PathBuf {
    #[rustfmt::skip]
    let path = common::media::make(&dir.join("gop300.ivf"), [
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "10",
        "-c:v", "libvpx", "-g", "300", "-keyint_min", "300", "-b:v", "500k",
        "-f", "ivf",
    ]);
    path
}

fn browser_late_joiner(name: &str, kind: BrowserKind, codec: &str) {
    if !in_namespace(name) {
        return reexec_in_namespace(name);
    }
    smolrtc::logging::init();
    let dir = common::media::temp_dir("late-join-browser");
    let file = match codec {
        "VP8" => long_gop_vp8_file(&dir),
        _ => long_gop_file(&dir),
    };
    let runtime = smolrtc::Runtime::new().expect("runtime");
    let service = smolrtc::service::Service::new(cam_config(&file, Config::loopback("service")))
        .start(&runtime)
        .expect("service start");
    let service = StopService(service);
    let addr = service.0.addr;
    wait_mid_gop(addr, 0, GOP);
    let page = |via: &str, frames: u32| {
        format!(
            "http://{addr}/?watch=cam&auto=1&via={via}&codec={codec}&frames={frames}&wait=60\
             &keep=1&report=/api/report"
        )
    };
    let mut failures = Vec::new();
    let mut b1 = Browser::launch(kind, &page("whep", 30));
    let r1 = wait_report(&service.0, &mut b1, &mut failures);
    println!("viewer 1: {r1:?}");
    assert!(
        r1.as_ref().is_some_and(|r| r["ok"] == true),
        "viewer 1 did not play: {failures:?}\n{}",
        b1.log_tail(40)
    );

    let (pos, keyframes) = wait_mid_gop(addr, 30, 120);
    let mut b2 = Browser::launch(kind, &page("http", 30));
    let r2 = wait_report(&service.0, &mut b2, &mut failures);
    let (frames_now, keyframes_now) = counts(addr);
    println!(
        "viewer 2 launched {pos} frames into the group, reported at frame {} of the group: \
         {r2:?}",
        frames_now.saturating_sub(1) % GOP
    );
    let Some(r2) = r2 else {
        panic!("no report from viewer 2: {failures:?}\n{}", b2.log_tail(60));
    };
    let s = &r2["streams"]["cam"];
    assert!(
        r2["ok"] == true,
        "viewer 2 did not decode: {s}\n{}",
        b2.log_tail(60)
    );
    assert!(
        s["keyFramesDecoded"].as_u64().is_some_and(|n| n >= 1),
        "{s}"
    );
    assert!(s["framesDecoded"].as_u64().is_some_and(|n| n >= 30), "{s}");
    assert_eq!(
        (s["frameWidth"].as_u64(), s["frameHeight"].as_u64()),
        (Some(320), Some(240))
    );
    assert!(
        s["codec"]
            .as_str()
            .is_some_and(|c| c.eq_ignore_ascii_case(&format!("video/{codec}"))),
        "{s}"
    );
    assert_eq!(
        keyframes_now, keyframes,
        "viewer 2 decoded only after the source's next keyframe: the cached one was not \
         sent first ({s})"
    );
    b1.stop();
    b2.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
