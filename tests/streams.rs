//! Streams in the real service (issue 16): `GET /api/streams` from file and RTP sources made
//! by ffmpeg, WHEP's refusals, and bad `--video`/`--audio` input. Needs ffmpeg (`.ci/setup`).

mod common;

use common::http::{request, ws_upgrade_from};
use smolrtc::media::MediaKind;
use smolrtc::service::{Service, ServiceConfig, ServiceHandle, StreamConfig};
use smolrtc::Runtime;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FIREFOX_RECVONLY: &str = include_str!("fixtures/sdp/firefox_recvonly.sdp");
const CHROMIUM_RECVONLY: &str = include_str!("fixtures/sdp/chromium_recvonly.sdp");

static MADE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A file made once per test binary by ffmpeg from `args`.
fn media(name: &str, args: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smolrtc-streams-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    // Tests run in parallel: one makes the file, the others wait for it.
    let _made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let out = Command::new("ffmpeg")
            .args(["-y", "-loglevel", "error", "-nostdin"])
            .args(args)
            .arg(&path)
            .output()
            .expect("ffmpeg is missing: apt-get install ffmpeg (.ci/setup)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path
}

#[rustfmt::skip]
fn h264_file() -> PathBuf {
    media("cam.h264", &["-f", "lavfi", "-i", "testsrc=size=640x480:rate=30", "-t", "4",
        "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "30",
        "-pix_fmt", "yuv420p", "-f", "h264"])
}

#[rustfmt::skip]
fn vp8_file() -> PathBuf {
    media("door.ivf", &["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "4",
        "-c:v", "libvpx", "-g", "30", "-b:v", "1M", "-f", "ivf"])
}

#[rustfmt::skip]
fn opus_file() -> PathBuf {
    media("mic.ogg", &["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "4",
        "-c:a", "libopus", "-b:a", "64k", "-f", "ogg"])
}

fn start(streams: &[(&str, MediaKind, String)]) -> smolrtc::Result<(Runtime, ServiceHandle)> {
    let rt = Runtime::new()?;
    let mut config = ServiceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    for (name, kind, source) in streams {
        StreamConfig::add_source(&mut config.streams, *kind, name, source)?;
    }
    let h = Service::new(config).start(&rt)?;
    Ok((rt, h))
}

/// `GET /api/streams`' entry for `name` once `ready` holds (at most 20 s).
fn stream_when(
    h: &ServiceHandle,
    name: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let r = request(h.addr, "GET", "/api/streams", None, b"");
        assert_eq!(r.status, 200);
        let s = r.json()["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no stream {name}: {}", r.text()));
        if ready(&s) {
            return s;
        }
        assert!(Instant::now() < until, "stream {name} never got ready: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn file_sources_show_codec_and_resolution() {
    let (_rt, h) = start(&[
        (
            "cam",
            MediaKind::Video,
            format!("file:{}", h264_file().display()),
        ),
        (
            "door",
            MediaKind::Video,
            format!("file:{}", vp8_file().display()),
        ),
        (
            "door",
            MediaKind::Audio,
            format!("file:{}", opus_file().display()),
        ),
    ])
    .unwrap();
    let cam = stream_when(&h, "cam", |s| {
        s["resolution"].is_string() && s["bitrate"].as_u64() > Some(0)
    });
    assert_eq!(cam["codec"], "H264");
    assert_eq!(cam["resolution"], "640x480");
    assert_eq!(cam["state"], "live");
    assert_eq!(cam["viewers"], 0);
    assert_eq!(cam["video"]["profile_level_id"], "42c01e");
    assert!(cam["audio"].is_null());
    let door = stream_when(&h, "door", |s| {
        s["resolution"].is_string() && s["audio"]["frames"].as_u64() > Some(0)
    });
    assert_eq!(door["codec"], "VP8");
    assert_eq!(door["resolution"], "320x240");
    assert_eq!(door["audio"]["codec"], "opus");
    h.shutdown();
}

/// ffmpeg sending H.264 over RTP to `port`, killed when dropped.
struct Sender(Child);

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rtp_source_fed_by_ffmpeg_shows_codec_and_resolution() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_rt, h) = start(&[(
        "cam",
        MediaKind::Video,
        format!("rtp://127.0.0.1:{port}?codec=h264"),
    )])
    .unwrap();
    #[rustfmt::skip]
    let ffmpeg = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
            "testsrc=size=640x360:rate=30", "-t", "30", "-c:v", "libx264", "-profile:v",
            "baseline", "-bf", "0", "-g", "30", "-pix_fmt", "yuv420p", "-f", "rtp"])
        .arg(format!("rtp://127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    let _sender = Sender(ffmpeg);
    let cam = stream_when(&h, "cam", |s| s["resolution"].is_string());
    assert_eq!(cam["codec"], "H264");
    assert_eq!(cam["resolution"], "640x360");
    assert_eq!(cam["state"], "live");
    h.shutdown();
}

#[test]
fn whep_refusals_are_clear() {
    let (_rt, h) = start(&[
        (
            "cam",
            MediaKind::Video,
            format!("file:{}", h264_file().display()),
        ),
        (
            "door",
            MediaKind::Video,
            format!("file:{}", vp8_file().display()),
        ),
        // Never produces a frame: its codec stays unknown.
        ("late", MediaKind::Video, "exec:sleep 60".into()),
    ])
    .unwrap();
    let sdp = Some("application/sdp");
    let r = request(
        h.addr,
        "POST",
        "/whep/nope",
        sdp,
        CHROMIUM_RECVONLY.as_bytes(),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("unknown stream"), "{}", r.text());
    let r = request(h.addr, "POST", "/whep/cam", Some("text/plain"), b"v=0");
    assert_eq!(r.status, 415, "{}", r.text());
    let r = request(h.addr, "POST", "/whep/cam", sdp, b"v=0\r\nnonsense\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(
        h.addr,
        "POST",
        "/whep/late",
        sdp,
        CHROMIUM_RECVONLY.as_bytes(),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("first keyframe"), "{}", r.text());

    stream_when(&h, "cam", |s| s["resolution"].is_string());
    // Offline Firefox offers no H.264.
    let r = request(
        h.addr,
        "POST",
        "/whep/cam",
        sdp,
        FIREFOX_RECVONLY.as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let e = r.json()["error"].as_str().unwrap().to_owned();
    assert!(e.contains("H.264") && e.contains("VP8/90000"), "{e}");
    // An offer without video (its video section rejected).
    let port = CHROMIUM_RECVONLY
        .split("m=video ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let audio_only = CHROMIUM_RECVONLY.replacen(&format!("m=video {port} "), "m=video 0 ", 1);
    let r = request(h.addr, "POST", "/whep/cam", sdp, audio_only.as_bytes());
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("no video section"), "{}", r.text());
    // What fits is answered: 201, a sendonly section, the viewer's Location.
    stream_when(&h, "door", |s| s["resolution"].is_string());
    let r = request(
        h.addr,
        "POST",
        "/whep/door",
        sdp,
        FIREFOX_RECVONLY.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let answer = r.text();
    assert!(answer.contains("VP8/90000"), "{answer}");
    assert!(answer.contains("a=sendonly"), "{answer}");
    assert!(!answer.contains("m=application"), "{answer}");
    let location = r.header("location").unwrap().to_owned();
    assert!(location.starts_with("/whep/door/"), "{location}");
    let r = request(
        h.addr,
        "POST",
        "/whep/cam",
        sdp,
        CHROMIUM_RECVONLY.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.text().contains("H264/90000"), "{}", r.text());
    // The viewer is counted (its session lives until ICE gives up or DELETE).
    stream_when(&h, "door", |s| s["viewers"] == 1);
    let r = request(h.addr, "DELETE", &location, None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    // Trickle and teardown of an unknown viewer.
    let frag = Some("application/trickle-ice-sdpfrag");
    let r = request(h.addr, "PATCH", "/whep/cam/abc", frag, b"");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = request(h.addr, "DELETE", "/whep/cam/abc", None, b"");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = request(h.addr, "GET", "/whep/cam", None, b"");
    assert_eq!(r.status, 405, "{}", r.text());
    h.shutdown();
}

#[test]
fn api_offer_with_stream_is_planned_like_whep() {
    let (_rt, h) = start(&[(
        "cam",
        MediaKind::Video,
        format!("file:{}", h264_file().display()),
    )])
    .unwrap();
    stream_when(&h, "cam", |s| s["resolution"].is_string());
    let json = Some("application/json");
    let offer = |sdp: &str| serde_json::json!({"type": "offer", "sdp": sdp}).to_string();
    let r = request(
        h.addr,
        "POST",
        "/api/offer?stream=nope",
        json,
        offer(CHROMIUM_RECVONLY).as_bytes(),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = request(
        h.addr,
        "POST",
        "/api/offer?stream=cam",
        json,
        offer(FIREFOX_RECVONLY).as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("H.264"), "{}", r.text());
    let r = request(
        h.addr,
        "POST",
        "/api/offer?stream=cam",
        json,
        offer(CHROMIUM_RECVONLY).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json()["sdp"].as_str().unwrap().to_owned();
    assert!(
        answer.contains("H264/90000") && answer.contains("a=sendonly"),
        "{answer}"
    );
    assert!(answer.contains("a=group:BUNDLE"), "{answer}");
    stream_when(&h, "cam", |s| s["viewers"] == 1);
    // The WebSocket takes ?stream= with the client's offer only.
    let (_ws, r) = ws_upgrade_from(h.addr, None, "/ws?stream=cam&role=offer", &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("?stream="), "{}", r.text());
    h.shutdown();
}

#[test]
fn an_rtp_port_in_use_fails_the_start() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = start(&[(
        "cam",
        MediaKind::Video,
        format!("rtp://127.0.0.1:{port}?codec=h264"),
    )])
    .err()
    .expect("the start must fail");
    let e = e.to_string();
    assert!(e.contains("stream cam") && e.contains("cannot bind"), "{e}");
}

#[test]
fn bad_sources_are_refused_at_start_with_a_clear_message() {
    let exe = env!("CARGO_BIN_EXE_smolrtc");
    for (args, expect) in [
        (&["--video", "cam=ftp://host/x"][..], "unknown source"),
        (&["--video", "cam"][..], "expected NAME=SOURCE"),
        (&["--video", "cam=rtp://127.0.0.1:5004"][..], "codec"),
        (
            &["--video", "cam=rtp://127.0.0.1:5004?codec=h265"][..],
            "unknown codec",
        ),
        (&["--video", "cam=file:x.mp4"][..], "unknown file extension"),
        (&["--audio", "cam=file:x.h264"][..], "use --video"),
        (&["--video", "c a=file:x.ivf"][..], "stream name"),
        (
            &["--video", "cam=file:a.ivf", "--video", "cam=file:b.ivf"][..],
            "two video sources",
        ),
    ] {
        let out = Command::new(exe)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}
