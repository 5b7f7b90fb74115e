//! Streams in the real service (issue 16): `GET /api/streams` from file and RTP sources made
//! by ffmpeg, WHEP's refusals, and bad `--video`/`--audio` input. Needs ffmpeg (`.ci/setup`).

mod common;

use common::http::{request, ws_upgrade_from, Reply};
use common::media;
use smolrtc::media::MediaKind;
use smolrtc::service::{Service, ServiceConfig, ServiceHandle, StreamConfig};
use smolrtc::Runtime;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FIREFOX_RECVONLY: &str = include_str!("fixtures/sdp/firefox_recvonly.sdp");
const CHROMIUM_RECVONLY: &str = include_str!("fixtures/sdp/chromium_recvonly.sdp");

/// A file made once per test binary by ffmpeg: `secs` of lavfi `source` in `codec`.
fn video(codec: &str, source: &str, secs: u32) -> PathBuf {
    media::video(&media::temp_dir("streams"), codec, source, secs, 0)
}

fn h264_file() -> PathBuf {
    video("H264", "testsrc=size=640x480:rate=30", 4)
}

fn vp8_file() -> PathBuf {
    video("VP8", "testsrc=size=320x240:rate=30", 4)
}

fn opus_file() -> PathBuf {
    media::opus(&media::temp_dir("streams"), 4)
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

/// A `file:` source for stream `name`.
fn file(name: &'static str, kind: MediaKind, path: &Path) -> (&'static str, MediaKind, String) {
    (name, kind, format!("file:{}", path.display()))
}

/// An H.264 `rtp://` source for stream `name` on 127.0.0.1:`port`.
fn rtp(name: &'static str, port: u16) -> (&'static str, MediaKind, String) {
    let source = format!("rtp://127.0.0.1:{port}?codec=h264");
    (name, MediaKind::Video, source)
}

/// A UDP port free a moment ago.
fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// `POST path` (WHEP) with `offer` as `application/sdp`.
fn whep(h: &ServiceHandle, path: &str, offer: &str) -> Reply {
    request(
        h.addr,
        "POST",
        path,
        Some("application/sdp"),
        offer.as_bytes(),
    )
}

/// `POST path` (`/api/offer?stream=..`) with `sdp` as a JSON offer.
fn api_offer(h: &ServiceHandle, path: &str, sdp: &str) -> Reply {
    let body = serde_json::json!({"type": "offer", "sdp": sdp}).to_string();
    request(
        h.addr,
        "POST",
        path,
        Some("application/json"),
        body.as_bytes(),
    )
}

/// The service with one video stream, `cam`, from `source`.
fn start_cam(source: String) -> (Runtime, ServiceHandle) {
    start(&[("cam", MediaKind::Video, source)]).unwrap()
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
        file("cam", MediaKind::Video, &h264_file()),
        file("door", MediaKind::Video, &vp8_file()),
        file("door", MediaKind::Audio, &opus_file()),
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
    let port = free_udp_port();
    let (_rt, h) = start(&[rtp("cam", port)]).unwrap();
    let ffmpeg = media::h264_rtp_sender("testsrc=size=640x360:rate=30", 30, port, true)
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
        file("cam", MediaKind::Video, &h264_file()),
        file("door", MediaKind::Video, &vp8_file()),
        // Never produces a frame: its codec stays unknown.
        ("late", MediaKind::Video, "exec:sleep 60".into()),
    ])
    .unwrap();
    let sdp = Some("application/sdp");
    let r = whep(&h, "/whep/nope", CHROMIUM_RECVONLY);
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("unknown stream"), "{}", r.text());
    let r = request(h.addr, "POST", "/whep/cam", Some("text/plain"), b"v=0");
    assert_eq!(r.status, 415, "{}", r.text());
    let r = request(h.addr, "POST", "/whep/cam", sdp, b"v=0\r\nnonsense\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = whep(&h, "/whep/late", CHROMIUM_RECVONLY);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("first keyframe"), "{}", r.text());

    stream_when(&h, "cam", |s| s["resolution"].is_string());
    // Offline Firefox offers no H.264.
    let r = whep(&h, "/whep/cam", FIREFOX_RECVONLY);
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
    let r = whep(&h, "/whep/cam", &audio_only);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("no video section"), "{}", r.text());
    // What fits is answered: 201, a sendonly section, the viewer's Location.
    stream_when(&h, "door", |s| s["resolution"].is_string());
    let r = whep(&h, "/whep/door", FIREFOX_RECVONLY);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let answer = r.text();
    assert!(answer.contains("VP8/90000"), "{answer}");
    assert!(answer.contains("a=sendonly"), "{answer}");
    assert!(!answer.contains("m=application"), "{answer}");
    let location = r.header("location").unwrap().to_owned();
    assert!(location.starts_with("/whep/door/"), "{location}");
    let r = whep(&h, "/whep/cam", CHROMIUM_RECVONLY);
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
    let (_rt, h) = start(&[file("cam", MediaKind::Video, &h264_file())]).unwrap();
    stream_when(&h, "cam", |s| s["resolution"].is_string());
    let r = api_offer(&h, "/api/offer?stream=nope", CHROMIUM_RECVONLY);
    assert_eq!(r.status, 404, "{}", r.text());
    let r = api_offer(&h, "/api/offer?stream=cam", FIREFOX_RECVONLY);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("H.264"), "{}", r.text());
    let r = api_offer(&h, "/api/offer?stream=cam", CHROMIUM_RECVONLY);
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
    let e = start(&[rtp("cam", port)])
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

fn small_h264_file() -> PathBuf {
    video("H264", "testsrc=size=320x240:rate=30", 1)
}

/// A file made of `parts` one after the other (for bad and changing input).
fn joined(name: &str, parts: &[&[u8]]) -> PathBuf {
    let path = h264_file().with_file_name(name);
    std::fs::write(&path, parts.concat()).unwrap();
    path
}

fn video_frames(s: &serde_json::Value) -> u64 {
    s["video"]["frames"].as_u64().unwrap_or(0)
}

#[test]
fn garbage_and_truncated_nal_units_in_a_file_do_not_stop_the_stream() {
    let good = std::fs::read(h264_file()).unwrap();
    // A third of the file, cut inside a NAL unit; NAL units with the forbidden bit set, of
    // a reserved type, empty, and random bytes after a start code; then the whole file.
    let cut = &good[..good.len() / 3 + 7];
    let mut noise = vec![
        0u8, 0, 0, 1, 0xff, 0xff, 0xff, 0, 0, 1, 0x1f, 1, 2, 3, 0, 0, 1,
    ];
    // Random bytes with no start code in them, led by a header with the forbidden bit.
    noise.extend([0, 0, 1, 0x80 | fastrand::u8(..)]);
    noise.extend((0..4000).map(|_| fastrand::u8(1..)));
    let bad = joined("bad.h264", &[cut, &noise, &good]);
    // Nothing but noise: no frame in a whole pass.
    let noise_only = joined("noise.h264", &[&noise]);
    let (_rt, h) = start(&[
        (
            "bad",
            MediaKind::Video,
            format!("file:{}?fps=120", bad.display()),
        ),
        file("noise", MediaKind::Video, &noise_only),
    ])
    .unwrap();
    stream_when(&h, "bad", |s| s["resolution"].is_string());
    // A viewer joins before the garbage comes round.
    let r = request(
        h.addr,
        "POST",
        "/whep/bad",
        Some("application/sdp"),
        CHROMIUM_RECVONLY.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // More frames than one pass holds: the stream went through the garbage and looped.
    let frames_per_pass = 120 + 40;
    let s = stream_when(&h, "bad", |s| video_frames(s) > 2 * frames_per_pass);
    assert_eq!(s["state"], "live", "{s}");
    assert_eq!(s["resolution"], "640x480", "{s}");
    assert_eq!(s["viewers"], 1, "the viewer is still there: {s}");
    assert!(s["video"]["error"].is_null(), "{s}");
    let noise = stream_when(&h, "noise", |s| s["state"] == "failed");
    let e = noise["video"]["error"].as_str().unwrap();
    assert!(e.contains("no frames"), "{e}");
    // The service still answers, and the broken stream refuses viewers clearly.
    let r = request(
        h.addr,
        "POST",
        "/whep/noise",
        Some("application/sdp"),
        CHROMIUM_RECVONLY.as_bytes(),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("failed"), "{}", r.text());
    h.shutdown();
}

#[test]
fn a_resolution_change_mid_stream_shows_in_api_streams() {
    let big = std::fs::read(h264_file()).unwrap();
    let small = std::fs::read(small_h264_file()).unwrap();
    let both = joined("both.h264", &[&big, &small]);
    let (_rt, h) = start_cam(format!("file:{}?fps=120", both.display()));
    stream_when(&h, "cam", |s| s["resolution"] == "640x480");
    let s = stream_when(&h, "cam", |s| s["resolution"] == "320x240");
    assert_eq!(s["state"], "live", "{s}");
    assert_eq!(s["video"]["width"], 320, "{s}");
    // Looped: back to the first size.
    stream_when(&h, "cam", |s| s["resolution"] == "640x480");
    h.shutdown();
}

#[test]
fn an_exec_source_that_exits_is_restarted_and_shown_restarting() {
    let file = small_h264_file();
    let (_rt, h) = start_cam(format!("exec:cat {}?fps=30", file.display()));
    let first = stream_when(&h, "cam", |s| s["state"] == "live");
    assert_eq!(first["codec"], "H264");
    // `cat` ends after one second of frames: the command is started again after a backoff.
    let restarting = stream_when(&h, "cam", |s| s["state"] == "restarting");
    let e = restarting["video"]["error"].as_str().unwrap();
    assert!(
        e.contains("ended after") && e.contains("starting it again"),
        "{e}"
    );
    let before = video_frames(&restarting);
    let again = stream_when(&h, "cam", |s| {
        s["state"] == "live" && video_frames(s) > before
    });
    assert!(again["video"]["error"].is_null(), "{again}");
    assert_eq!(again["resolution"], "320x240");
    h.shutdown();
}

#[test]
fn an_exec_source_that_stalls_is_shown_stalled() {
    let file = small_h264_file();
    let (_rt, h) = start_cam(format!("exec:cat {}; sleep 60?fps=30", file.display()));
    let live = stream_when(&h, "cam", |s| s["state"] == "live");
    // One second of frames, then the command is alive and silent.
    let stalled = stream_when(&h, "cam", |s| s["state"] == "stalled");
    assert!(video_frames(&stalled) >= video_frames(&live));
    assert_eq!(stalled["resolution"], "320x240");
    h.shutdown();
}

/// `smolrtc serve --video cam=SOURCE` with `stdin`, and its address.
fn serve_stdin(source: &str, stdin: Stdio) -> (Sender, std::net::SocketAddr) {
    let (server, addr, _log) = serve_binary(&format!("cam={source}"), stdin);
    (server, addr)
}

/// `smolrtc serve --video VIDEO` with `stdin`: the process, its address and its log lines.
fn serve_binary(
    video: &str,
    stdin: Stdio,
) -> (
    Sender,
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
        .args(["serve", "--listen", "127.0.0.1:0", "--video"])
        .arg(video)
        .env("RUST_LOG", "info")
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let server = Sender(child);
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() && err.read_line(&mut line).unwrap_or(0) > 0 {
        addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|a| a.split_whitespace().next()?.parse().ok());
        line.clear();
    }
    let addr = addr.expect("no 'listening on' line");
    // Keep reading the log so the service never blocks on a full pipe.
    let (tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while err.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = tx.send(std::mem::take(&mut line));
        }
    });
    (server, addr, log)
}

/// The service at `addr`'s stream `cam` once `ready` holds (at most 20 s).
fn cam_when(
    addr: std::net::SocketAddr,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let r = request(addr, "GET", "/api/streams", None, b"");
        assert_eq!(r.status, 200);
        let cam = r.json()["streams"][0].clone();
        if ready(&cam) {
            return cam;
        }
        assert!(Instant::now() < until, "never got ready: {cam}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `smolrtc serve` fed Annex-B H.264 on its standard input from a pipe, as from
/// `rpicam-vid ... -o - | smolrtc serve --video cam=stdin:`, and redirected from a file
/// (which epoll cannot poll: read like `file:`).
#[test]
fn a_stdin_source_is_served() {
    use std::io::Write;
    let data = std::fs::read(h264_file()).unwrap();
    let (mut server, addr) = serve_stdin("stdin:?fps=30", Stdio::piped());
    let mut stdin = server.0.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // Until the service is killed (a broken pipe then).
        while stdin.write_all(&data).is_ok() {}
    });
    let cam = cam_when(addr, |c| c["resolution"].is_string());
    assert_eq!(cam["name"], "cam");
    assert_eq!(cam["codec"], "H264");
    assert_eq!(cam["resolution"], "640x480");
    assert_eq!(cam["state"], "live");
    assert_eq!(cam["video"]["source"], "stdin:?fps=30");
    drop(server);
    let _ = feeder.join();

    let file = std::fs::File::open(h264_file()).unwrap();
    // Without `fps`: paced like a file (30 fps), not sent in one burst of 120 frames.
    let (_server, addr) = serve_stdin("stdin:", Stdio::from(file));
    let cam = cam_when(addr, |c| video_frames(c) >= 30);
    assert_eq!(cam["resolution"], "640x480", "{cam}");
    assert!(cam["video"]["error"].is_null(), "{cam}");
    assert!(video_frames(&cam) < 120, "all at once: {cam}");
}

/// H.264 in files named `.ivf` and `.ogg` (the wrong codec for the URL): each stream shows
/// `failed` with the reason, and the service goes on answering (the IVF and Ogg readers
/// once returned their error forever: a busy loop that took the whole thread).
#[test]
fn a_file_of_the_wrong_format_fails_clearly() {
    let h264 = std::fs::read(h264_file()).unwrap();
    let ivf = joined("h264.ivf", &[&h264]);
    let ogg = joined("h264.ogg", &[&h264]);
    let (_rt, h) = start(&[
        file("door", MediaKind::Video, &ivf),
        file("mic", MediaKind::Audio, &ogg),
        file("cam", MediaKind::Video, &h264_file()),
    ])
    .unwrap();
    for name in ["door", "mic"] {
        let s = stream_when(&h, name, |s| s["state"] == "failed");
        let track = if name == "door" { "video" } else { "audio" };
        let e = s[track]["error"].as_str().unwrap();
        assert!(e.contains("no frames"), "{name}: {e}");
    }
    // The good stream beside them plays on.
    let cam = stream_when(&h, "cam", |s| video_frames(s) > 10);
    assert_eq!(cam["state"], "live", "{cam}");
    h.shutdown();
}

/// H.264 RTP sent to an `rtp://...?codec=vp8` source: no frame ever passes, and the log
/// says to check the sender's codec (rather than the stream staying `starting` silently).
#[test]
fn an_rtp_source_of_the_wrong_codec_says_so() {
    let port = free_udp_port();
    let (_server, addr, log) = serve_binary(
        &format!("cam=rtp://127.0.0.1:{port}?codec=vp8"),
        Stdio::null(),
    );
    // As fast as ffmpeg makes them: 600 frames.
    let ffmpeg = media::h264_rtp_sender("testsrc=size=320x240:rate=30", 20, port, false)
        .spawn()
        .expect("ffmpeg");
    let _sender = Sender(ffmpeg);
    let until = Instant::now() + Duration::from_secs(30);
    let warning = loop {
        let left = until.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(l) if l.contains("no VP8 keyframe yet") => break l,
            Ok(_) => {}
            Err(e) => panic!("no warning about the codec in 30 s: {e}"),
        }
    };
    assert!(warning.contains("is the sender's codec vp8?"), "{warning}");
    let r = request(addr, "GET", "/api/streams", None, b"");
    let cam = &r.json()["streams"][0];
    assert_eq!(cam["state"], "starting", "{cam}");
    assert!(cam["resolution"].is_null(), "{cam}");
}
