//! Media into the device through the real service (issue 17): `--sink NAME=DEST`, WHIP
//! ingest at `/whip/NAME`, talk-back (`?stream=` with `?sink=`), `GET /api/sinks`.
//!
//! The refusals run in-process. The browser cases run headless Chromium / Firefox ESR with
//! fake camera and microphone inside a private network namespace (tests/common/browser.rs):
//! the page's unattended `?publish=NAME` (or `?talk=NAME&stream=..`) run publishes for a
//! few seconds and posts a report; the files the sink wrote are then checked with ffprobe
//! (codec, frame count, dimensions, audio duration). Needs ffmpeg, chromium, firefox-esr,
//! unshare and ip (`.ci/setup`).

mod common;

use common::browser::{
    in_namespace, reexec_in_namespace, wait_report, Browser, BrowserKind, StopService,
};
use common::http::request;
use common::media::{ffprobe, Probe};
use common::{whip_answer, whip_offer};
use smolrtc::media::{Codec, MediaKind, TrackSender};
use smolrtc::service::{Service, ServiceConfig, ServiceHandle, SinkConfig};
use smolrtc::{Config, Runtime};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CHROMIUM_RECVONLY: &str = include_str!("fixtures/sdp/chromium_recvonly.sdp");
const CHROMIUM_SENDRECV: &str = include_str!("fixtures/sdp/chromium_sendrecv.sdp");

/// How long the page publishes in the browser cases.
const PUBLISH_S: u32 = 6;

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smolrtc-ingest-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(sinks: &[&str]) -> smolrtc::Result<ServiceConfig> {
    let mut config = ServiceConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        peer: Config::loopback("service"),
        ..Default::default()
    };
    for s in sinks {
        SinkConfig::add(&mut config.sinks, s)?;
    }
    Ok(config)
}

fn start(config: ServiceConfig) -> (Runtime, ServiceHandle) {
    let rt = Runtime::new().unwrap();
    let h = Service::new(config).start(&rt).expect("service start");
    (rt, h)
}

fn sinks(h: &ServiceHandle) -> serde_json::Value {
    let r = request(h.addr, "GET", "/api/sinks", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Sink `name` in `/api/sinks`.
fn sink_of(h: &ServiceHandle, name: &str) -> serde_json::Value {
    let v = sinks(h);
    let s = v["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned();
    s.unwrap_or_else(|| panic!("no sink {name}: {v}"))
}

/// How many sessions the service has (`/api/sessions`).
fn session_count(h: &ServiceHandle) -> usize {
    let r = request(h.addr, "GET", "/api/sessions", None, b"");
    r.json()["sessions"].as_array().unwrap().len()
}

/// `POST path` of an SDP offer.
fn post_sdp(addr: SocketAddr, path: &str, sdp: &str) -> common::http::Reply {
    request(addr, "POST", path, Some("application/sdp"), sdp.as_bytes())
}

/// An even port from `base` on, one per process (test binaries run at once).
fn port_from(base: u16) -> u16 {
    base + (std::process::id() % 200) as u16 * 2
}

/// Where the source media are made (each once per test binary; see `common::media`).
fn media_dir() -> PathBuf {
    common::media::temp_dir("ingest-media")
}

/// Publishes a `codec` track of `p` to sink `sink` (`POST /whip/NAME`): the 201 checked,
/// the answer applied, connected. The track and the 201.
async fn whip_publish(
    p: &mut common::Peer,
    addr: SocketAddr,
    sink: &str,
    codec: Codec,
) -> (TrackSender, common::http::Reply) {
    let (track, offer) = whip_offer(p, codec).await;
    let r = post_sdp(addr, &format!("/whip/{sink}"), &offer);
    assert_eq!(r.status, 201, "{}", r.text());
    whip_answer(p, r.text()).await;
    (track, r)
}

/// Writes each of `units` to every track at 30 fps, after 300 ms (SRTP is keyed just after
/// the connection: frames before it are dropped by design); `before(i)` runs before frame
/// `i`. Returns how many writes were queued.
async fn play<'u>(
    tracks: &mut [TrackSender],
    units: impl IntoIterator<Item = &'u Vec<u8>>,
    mut before: impl FnMut(usize),
) -> usize {
    async_io::Timer::after(Duration::from_millis(300)).await;
    let mut queued = 0;
    for (i, au) in units.into_iter().enumerate() {
        before(i);
        for t in tracks.iter_mut() {
            queued += usize::from(t.write_frame(au, Duration::from_millis(33)).unwrap());
        }
        async_io::Timer::after(Duration::from_millis(33)).await;
    }
    queued
}

/// The access units of `secs` s of lavfi `source` in H.264 (`kbps` above 0 caps the rate).
fn h264_units(source: &str, secs: u32, kbps: u32) -> Vec<Vec<u8>> {
    let file = common::media::video(&media_dir(), "H264", source, secs, kbps);
    common::media::annexb_units(&file)
}

/// 4 s of a 320x240 test pattern at 30 fps in VP8 (IVF).
fn vp8_source() -> PathBuf {
    common::media::video(&media_dir(), "VP8", "testsrc=size=320x240:rate=30", 4, 0)
}

/// Adds stream `name` playing `file` as its `kind` to `config`.
fn add_file_stream(config: &mut ServiceConfig, kind: MediaKind, name: &str, file: &Path) {
    smolrtc::service::StreamConfig::add_source(
        &mut config.streams,
        kind,
        name,
        &format!("file:{}", file.display()),
    )
    .unwrap();
}

#[test]
fn whip_ingest_refusals_and_api_sinks() {
    let dir = temp_dir("refusals");
    let (_rt, h) = start(
        config(&[
            &format!("cam=file:{}/cam.ivf", dir.display()),
            "intercom=rtp://127.0.0.1:5300",
        ])
        .unwrap(),
    );
    let sdp = Some("application/sdp");
    let r = request(h.addr, "POST", "/whip/nope", sdp, b"v=0\r\n");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"], "unknown sink \"nope\"");
    let r = request(h.addr, "POST", "/whip/cam", Some("text/plain"), b"v=0");
    assert_eq!(r.status, 415, "{}", r.text());
    let r = request(h.addr, "POST", "/whip/cam", sdp, b"v=0\r\nnonsense\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    // A recvonly offer sends nothing to record.
    let r = request(
        h.addr,
        "POST",
        "/whip/cam",
        sdp,
        CHROMIUM_RECVONLY.as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let e = r.json()["error"].as_str().unwrap().to_owned();
    assert!(e.contains("sink cam") && e.contains("recvonly"), "{e}");
    // ?sink= of a sink that does not exist, on /api/offer.
    let body = serde_json::json!({"type": "offer", "sdp": CHROMIUM_SENDRECV}).to_string();
    let r = request(
        h.addr,
        "POST",
        "/api/offer?sink=nope",
        Some("application/json"),
        body.as_bytes(),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    // A refused offer costs no session.
    assert_eq!(session_count(&h), 0);

    let v = sinks(&h);
    let list = v["sinks"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{v}");
    assert_eq!(list[0]["name"], "cam");
    assert_eq!(list[0]["kind"], "video");
    assert_eq!(list[0]["video"]["codecs"], serde_json::json!(["VP8"]));
    assert!(
        list[0]["audio"].is_null() && list[0]["sdp"].is_null(),
        "{v}"
    );
    assert_eq!(list[1]["kind"], "video+audio");
    assert_eq!(list[1]["active_sessions"], 0);
    // The SDP ffmpeg needs: video at the port, audio at port + 2.
    let sdp = list[1]["sdp"].as_str().unwrap();
    assert!(
        sdp.contains("m=video 5300 RTP/AVP 97\r\na=rtpmap:97 VP8/90000"),
        "{sdp}"
    );
    assert!(sdp.contains("m=audio 5302 RTP/AVP 111"), "{sdp}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_sinks_fail_the_start_clearly() {
    let e = config(&["cam=file:/no/such/dir/cam.ivf"])
        .and_then(|c| Service::new(c).start(&Runtime::new()?))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/no/such/dir is not a directory"), "{e}");
    let e = config(&["cam=file:x.mp4"]).err().unwrap().to_string();
    assert!(e.contains("unknown file extension \".mp4\""), "{e}");
    let e = config(&[
        "a=rtp://127.0.0.1:5400",
        "b=rtp://127.0.0.1:5402?codec=opus",
    ])
    .and_then(|c| Service::new(c).start(&Runtime::new()?))
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("127.0.0.1:5402 is taken"), "{e}");
}

// ------------------------------------------------------------------------ browsers

/// The files in `dir` whose name ends with `ext`.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == ext));
    v.sort();
    v
}

/// The one file in `dir` whose name ends with `ext`.
fn only_file(dir: &Path, ext: &str) -> PathBuf {
    let files = files(dir, ext);
    assert_eq!(files.len(), 1, "one .{ext} file: {files:?}");
    files[0].clone()
}

/// The one recording in `dir` whose name ends with `ext`, probed (printed).
fn probe_recording(dir: &Path, ext: &str) -> Probe {
    let file = only_file(dir, ext);
    let p = ffprobe(&file);
    println!("{}: {p:?}", file.display());
    p
}

/// A recording is named after its sink and session: `NAME-<session id>-..`.
fn assert_session_file(file: &Path, sink: &serde_json::Value) {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let session = sink["sessions"][0]["id"].as_str().unwrap();
    let prefix = format!("{}-{session}-", sink["name"].as_str().unwrap());
    assert!(name.starts_with(&prefix), "{name}");
}

/// Waits until `/api/sinks` shows sink `name` with a session whose tracks all ended
/// (printed).
fn sink_done(h: &ServiceHandle, name: &str) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let s = sink_of(h, name);
        let ended = s["sessions"].as_array().is_some_and(|ss| {
            !ss.is_empty()
                && ss.iter().all(|x| {
                    x["tracks"]
                        .as_array()
                        .is_some_and(|t| !t.is_empty() && t.iter().all(|t| t["state"] != "live"))
                })
        });
        if ended {
            println!("sink {name}: {s}");
            return s;
        }
        assert!(Instant::now() < until, "sink {name} never ended: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One browser case inside the namespace: the service with `sinks` (and streams), the page
/// at `query`, the report, then `check` on the service (sinks written).
fn browser_case<P>(
    name: &str,
    kind: BrowserKind,
    config: ServiceConfig,
    query: &str,
    prepare: impl FnOnce(&ServiceHandle) -> P,
    check: impl FnOnce(&ServiceHandle, &serde_json::Value, P),
) {
    browser_case_at(name, kind, config, ("", &[]), query, prepare, check, true)
}

/// [`browser_case`] with the page at `host` (empty: the service's address) and extra
/// browser arguments; `want_ok` is what the report's `ok` must be.
#[allow(clippy::too_many_arguments)]
fn browser_case_at<P>(
    name: &str,
    kind: BrowserKind,
    config: ServiceConfig,
    (host, args): (&str, &[&str]),
    query: &str,
    prepare: impl FnOnce(&ServiceHandle) -> P,
    check: impl FnOnce(&ServiceHandle, &serde_json::Value, P),
    want_ok: bool,
) {
    if !in_namespace(name) {
        reexec_in_namespace(name);
        return;
    }
    smolrtc::logging::init();
    let runtime = Runtime::new().expect("smolrtc runtime");
    let service = StopService(Service::new(config).start(&runtime).expect("service start"));
    let prepared = prepare(&service.0);
    let at = if host.is_empty() {
        service.0.addr.to_string()
    } else {
        format!("{host}:{}", service.0.addr.port())
    };
    let url = format!("http://{at}/?{query}&auto=1&report=/api/report");
    println!("{name}: {kind:?} -> {url}");
    let mut browser = Browser::launch_with(kind, &url, args);
    let mut failures = Vec::new();
    let report = wait_report(&service.0, &mut browser, &mut failures);
    let ok = report.as_ref().is_some_and(|r| r["ok"] == want_ok);
    if !ok {
        let tail = browser.log_tail(60);
        browser.stop();
        panic!("{name}: the page's report: {report:?} {failures:?}\n---- browser ----\n{tail}");
    }
    let report = report.unwrap();
    println!("{name}: report {report}");
    check(&service.0, &report, prepared);
    browser.stop();
}

/// Checks a recorded video file against what the browser says it sent.
fn check_video(path: &Path, codec: &str, report: &serde_json::Value) -> Probe {
    let p = ffprobe(path);
    println!("{}: {p:?}", path.display());
    assert_eq!(p.codec, codec, "{}", path.display());
    let f = &report["figures"];
    let (w, h) = (
        f["frameWidth"].as_u64().unwrap(),
        f["frameHeight"].as_u64().unwrap(),
    );
    assert_eq!(
        (p.width, p.height),
        (w, h),
        "dimensions of {}",
        path.display()
    );
    // Every frame the browser encoded is in the file, give or take those in flight at the
    // start and end (10%).
    let sent = f["framesSent"].as_u64().unwrap() as f64;
    assert!(
        (p.frames as f64 - sent).abs() <= sent * 0.1 + 3.0,
        "{}: {} frames recorded, {sent} sent",
        path.display(),
        p.frames
    );
    // The IVF header counts the frames (written when the file is finished).
    if codec == "vp8" {
        let n = common::media::ivf_header_frames(path);
        assert_eq!(
            u64::from(n),
            p.frames,
            "{}: header frame count",
            path.display()
        );
    }
    // And they span the time they were sent in: frames ≈ duration × fps (the fake camera's
    // rate as encoded: sent / seconds published). Annex-B carries no timestamps.
    if codec == "h264" {
        return p;
    }
    let fps = sent / f64::from(PUBLISH_S);
    let expected = p.duration * fps;
    assert!(
        (p.frames as f64 - expected).abs() <= expected * 0.1 + 3.0,
        "{}: {} frames over {:.2} s at {fps:.1} fps",
        path.display(),
        p.frames,
        p.duration
    );
    p
}

/// Chromium publishes its fake camera through WHIP to an H.264 file sink.
#[test]
fn chromium_whip_to_an_h264_file() {
    let dir = temp_dir("chromium-h264");
    let d = dir.clone();
    browser_case(
        "chromium_whip_to_an_h264_file",
        BrowserKind::Chromium,
        config(&[&format!("cam=file:{}/cam.h264", dir.display())]).unwrap(),
        &format!("publish=cam&audio=0&seconds={PUBLISH_S}"),
        |_| (),
        |h, report, ()| {
            let s = sink_done(h, "cam");
            let file = only_file(&d, "h264");
            assert_session_file(&file, &s);
            check_video(&file, "h264", report);
            assert!(
                s["frames"].as_u64().unwrap() > 0 && s["error"].is_null(),
                "{s}"
            );
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Checks a recorded Opus file: its duration is the time the page published, give or
/// take the start and end of the session.
fn check_audio(path: &Path, report: &serde_json::Value) -> Probe {
    let p = ffprobe(path);
    println!("{}: {p:?}", path.display());
    assert_eq!(p.codec, "opus", "{}", path.display());
    let secs = f64::from(PUBLISH_S);
    assert!(
        p.duration > secs - 1.5 && p.duration < secs + 1.0,
        "{}: {:.2} s of audio for {secs} s published",
        path.display(),
        p.duration
    );
    // 20 ms packets: as many as the page sent, give or take those in flight.
    let sent = report["figures"]["audioPacketsSent"].as_f64().unwrap();
    assert!(
        (p.frames as f64 - sent).abs() <= sent * 0.1 + 3.0,
        "{}: {} packets recorded, {sent} sent",
        path.display(),
        p.frames
    );
    p
}

/// Camera and microphone through WHIP to a `file:` prefix sink: a new `.ivf` (VP8) and
/// `.ogg` (Opus) per session, checked with ffprobe.
fn file_sink_case(name: &str, kind: BrowserKind) {
    let dir = temp_dir(name);
    let d = dir.clone();
    browser_case(
        name,
        kind,
        config(&[&format!("door=file:{}/door", dir.display())]).unwrap(),
        &format!("publish=door&seconds={PUBLISH_S}"),
        |_| (),
        |h, report, ()| {
            let s = sink_done(h, "door");
            let (ivf, ogg) = (only_file(&d, "ivf"), only_file(&d, "ogg"));
            assert_session_file(&ivf, &s);
            assert_session_file(&ogg, &s);
            check_video(&ivf, "vp8", report);
            check_audio(&ogg, report);
            assert!(s["error"].is_null(), "{s}");
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chromium_whip_to_ivf_and_ogg_files() {
    file_sink_case("chromium_whip_to_ivf_and_ogg_files", BrowserKind::Chromium);
}

#[test]
fn firefox_whip_to_ivf_and_ogg_files() {
    file_sink_case("firefox_whip_to_ivf_and_ogg_files", BrowserKind::Firefox);
}

/// An `rtp://` sink received by ffmpeg: the SDP from `GET /api/sinks`, the RTP copied into
/// an IVF file by ffmpeg, checked with ffprobe.
#[test]
fn chromium_whip_to_an_rtp_sink_read_by_ffmpeg() {
    rtp_sink_case(
        "chromium_whip_to_an_rtp_sink_read_by_ffmpeg",
        BrowserKind::Chromium,
    );
}

/// Firefox ESR (fake camera: `media.navigator.streams.fake`) publishes VP8 likewise.
#[test]
fn firefox_whip_to_an_rtp_sink_read_by_ffmpeg() {
    rtp_sink_case(
        "firefox_whip_to_an_rtp_sink_read_by_ffmpeg",
        BrowserKind::Firefox,
    );
}

fn rtp_sink_case(name: &str, kind: BrowserKind) {
    let dir = temp_dir(name);
    let d = dir.clone();
    let port = port_from(5500);
    browser_case(
        name,
        kind,
        config(&[&format!("cam=rtp://127.0.0.1:{port}?codec=vp8")]).unwrap(),
        &format!("publish=cam&audio=0&seconds={PUBLISH_S}"),
        |h| {
            // ffmpeg listens before the page publishes.
            let sdp = sinks(h)["sinks"][0]["sdp"].as_str().unwrap().to_owned();
            let sdp_file = d.join("cam.sdp");
            std::fs::write(&sdp_file, sdp).unwrap();
            let out = d.join("got.ivf");
            let child = Command::new("ffmpeg")
                .args(["-y", "-loglevel", "error", "-nostdin"])
                .args(["-protocol_whitelist", "file,udp,rtp", "-i"])
                .arg(&sdp_file)
                .args(["-t", "3", "-c", "copy"])
                .arg(&out)
                .spawn()
                .expect("ffmpeg is missing: apt-get install ffmpeg (.ci/setup)");
            (child, out)
        },
        |h, report, (mut child, out)| {
            let s = sink_done(h, "cam");
            let status = common::browser::wait_bounded(&mut child, Duration::from_secs(20));
            if status.is_none() {
                let _ = child.kill();
            }
            assert!(status.is_some_and(|s| s.success()), "ffmpeg: {status:?}");
            let p = ffprobe(&out);
            println!("ffmpeg got {p:?}");
            assert_eq!(p.codec, "vp8");
            let f = &report["figures"];
            assert_eq!(
                (p.width, p.height),
                (
                    f["frameWidth"].as_u64().unwrap(),
                    f["frameHeight"].as_u64().unwrap()
                )
            );
            // Three seconds of it, at the rate the page sent.
            let fps = f["framesSent"].as_f64().unwrap() / f64::from(PUBLISH_S);
            assert!(p.frames as f64 >= 3.0 * fps * 0.8, "{p:?} at {fps:.1} fps");
            let track = &s["sessions"][0]["tracks"][0];
            assert_eq!(track["target"], format!("127.0.0.1:{port}"));
            assert!(track["frames"].as_u64().unwrap() >= p.frames, "{s}");
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad sinks do not end the session: a file sink whose directory is gone (the file cannot
/// be created) and an exec sink whose command exits after its first bytes are each a log
/// line and an `error` in `/api/sinks`, while the page publishes to the end.
#[test]
fn chromium_whip_to_failing_sinks_goes_on() {
    let dir = temp_dir("failing");
    let gone = dir.join("gone");
    std::fs::create_dir_all(&gone).unwrap();
    let g = gone.clone();
    let mut cfg = config(&[]).unwrap();
    SinkConfig::add_dest(
        &mut cfg.sinks,
        Some(MediaKind::Video),
        "bad",
        "exec:head -c 2000 >/dev/null?codec=h264",
    )
    .unwrap();
    SinkConfig::add_dest(
        &mut cfg.sinks,
        Some(MediaKind::Audio),
        "bad",
        &format!("file:{}/mic.ogg", gone.display()),
    )
    .unwrap();
    browser_case(
        "chromium_whip_to_failing_sinks_goes_on",
        BrowserKind::Chromium,
        cfg,
        &format!("publish=bad&seconds={PUBLISH_S}"),
        // Checked at start; gone before the session.
        |_| std::fs::remove_dir_all(&g).unwrap(),
        |h, report, ()| {
            let s = sink_done(h, "bad");
            let f = &report["figures"];
            // The session went on: the page sent all along (some 6 s of frames).
            assert!(f["framesSent"].as_u64().unwrap() > 30, "{report}");
            let tracks = s["sessions"][0]["tracks"].as_array().unwrap();
            let of = |kind: &str| tracks.iter().find(|t| t["kind"] == kind).unwrap().clone();
            let video = of("video");
            let e = video["error"].as_str().unwrap();
            assert!(e.contains("`head -c 2000 >/dev/null`"), "{video}");
            // Some frames went in before the command quit.
            assert!(video["frames"].as_u64().unwrap() > 0, "{video}");
            let audio = of("audio");
            let e = audio["error"].as_str().unwrap();
            assert!(
                e.contains("cannot create") && e.contains("No such file"),
                "{audio}"
            );
            assert!(!s["error"].is_null(), "{s}");
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Talk-back: one session plays the device's stream (VP8 + Opus files) and sends the
/// page's microphone to an `rtp://` sink; the page must hear the device, the sink must get
/// the page's Opus.
#[test]
fn chromium_talk_back_in_one_session() {
    talk_back_case("chromium_talk_back_in_one_session", BrowserKind::Chromium);
}

/// The same with Firefox ESR (its fake microphone: `media.navigator.streams.fake`).
#[test]
fn firefox_talk_back_in_one_session() {
    talk_back_case("firefox_talk_back_in_one_session", BrowserKind::Firefox);
}

fn talk_back_case(name: &str, kind: BrowserKind) {
    let port = port_from(5900);
    let mut config = config(&[&format!("intercom=rtp://127.0.0.1:{port}?codec=opus")]).unwrap();
    if in_namespace_copy() {
        add_file_stream(&mut config, MediaKind::Video, "door", &vp8_source());
        let audio = common::media::opus(&media_dir(), 4);
        add_file_stream(&mut config, MediaKind::Audio, "door", &audio);
    }
    browser_case(
        name,
        kind,
        config,
        &format!("talk=intercom&stream=door&seconds={PUBLISH_S}"),
        |_| {
            // The sink's RTP lands here (as ffmpeg or aplay would read it).
            let rx = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
            rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            // Read as it comes (a socket buffer holds only some 250 of them); done after
            // 2 s of silence once packets came, or 60 s of none.
            std::thread::spawn(move || {
                let (mut buf, mut opus, mut idle) = ([0u8; 1500], 0u64, 0);
                while idle < 30 {
                    match rx.recv(&mut buf) {
                        Ok(n) if n > 12 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 111 => opus += 1,
                        Ok(_) => {}
                        Err(_) if opus > 0 => break,
                        Err(_) => idle += 1,
                    }
                }
                opus
            })
        },
        |h, report, counter| {
            let f = &report["figures"];
            assert!(f["audioSamplesReceived"].as_u64().unwrap() > 0, "{report}");
            let s = sink_done(h, "intercom");
            let track = &s["sessions"][0]["tracks"][0];
            assert_eq!(track["codec"], "opus");
            let opus = counter.join().unwrap();
            // 20 ms packets for most of the time the page talked.
            assert!(opus >= 100, "{opus} Opus packets at the sink");
            assert_eq!(track["frames"].as_u64().unwrap(), opus, "{s}");
        },
    );
}

/// Whether this is the test's copy inside the namespace (where files are made).
fn in_namespace_copy() -> bool {
    std::env::var_os(common::browser::NETNS_ENV).is_some()
}

// ------------------------------------------------------------------------ smolrtc <-> smolrtc

/// smolrtc to smolrtc: a library peer (`add_track`, fed with `write_frame` from an
/// ffmpeg-made H.264 file) offers through `POST /whip/cam` to a service whose sink records
/// to a file; every frame written after the connection is up is in the file, the file
/// decodes at the source's size.
#[test]
fn a_smolrtc_peer_publishes_through_whip_to_a_file_sink() {
    let dir = temp_dir("peer");
    let units = h264_units("testsrc=size=320x240:rate=30", 3, 0);
    assert_eq!(units.len(), 90);
    let (_rt, h) = start(config(&[&format!("cam=file:{}/cam.h264", dir.display())]).unwrap());
    common::run(async {
        let mut p = common::Peer::new("publisher");
        let (mut track, r) = whip_publish(&mut p, h.addr, "cam", Codec::H264).await;
        assert!(r.header("location").unwrap().starts_with("/whip/cam/"));
        let queued = play(std::slice::from_mut(&mut track), &units, |_| {}).await;
        assert_eq!(queued, units.len());
        async_io::Timer::after(Duration::from_millis(500)).await;
        p.pc.close().await;
    });
    sink_done(&h, "cam");
    let p = probe_recording(&dir, "h264");
    assert_eq!((p.codec.as_str(), p.width, p.height), ("h264", 320, 240));
    assert!(p.frames >= 81 && p.frames <= 90, "{p:?} of 90 sent");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sink whose command never reads its stdin (`exec:sleep 60`): its bounded queue fills
/// and frames are dropped and counted (`dropped` in `/api/sinks`), never waited for. That
/// session keeps receiving (its packets counted to the end, no error, `live`) and another
/// session of the same service records every frame to a file sink meanwhile; when the
/// track ends the command is killed and the track shows `ended`.
#[test]
fn a_command_that_never_reads_drops_frames_and_the_sessions_go_on() {
    let dir = temp_dir("stuck");
    // Noise at 8 Mbit/s, ~30 KB frames: the pipe (64 KiB) and the queue (64 frames) are
    // full after ~66.
    let units = h264_units("testsrc=size=640x480:rate=30,noise=alls=40:allf=t", 4, 8000);
    assert_eq!(units.len(), 120);
    let (_rt, h) = start(
        config(&[
            "stuck=exec:sleep 60",
            &format!("rec=file:{}/rec.h264", dir.display()),
        ])
        .unwrap(),
    );
    let track_of = |name: &str| sink_of(&h, name)["sessions"][0]["tracks"][0].clone();
    let mid = common::run(async {
        let mut peers = Vec::new();
        let mut tracks = Vec::new();
        for sink in ["stuck", "rec"] {
            let mut p = common::Peer::new(sink);
            let (track, _) = whip_publish(&mut p, h.addr, sink, Codec::H264).await;
            peers.push(p);
            tracks.push(track);
        }
        let mut mid = serde_json::Value::Null;
        // Frames 0 to 100 written.
        let queued = play(&mut tracks, &units, |i| {
            if i == 101 {
                mid = track_of("stuck");
            }
        })
        .await;
        assert_eq!(queued, 2 * units.len());
        async_io::Timer::after(Duration::from_millis(500)).await;
        let end = track_of("stuck");
        println!("stuck at frame 100: {mid}\nstuck at the end: {end}");
        // Dropped and counted, the output still there, the session still receiving.
        assert_eq!(end["state"], "live", "{end}");
        assert!(end["error"].is_null(), "{end}");
        assert!(end["dropped"].as_u64().unwrap() >= 20, "{end}");
        assert!(end["frames"].as_u64().unwrap() >= 60, "{end}");
        let packets = |t: &serde_json::Value| t["received"]["packets"].as_u64().unwrap();
        assert!(packets(&end) > packets(&mid), "{mid}\n{end}");
        for p in &peers {
            p.pc.close().await;
        }
        mid
    });
    assert!(mid["dropped"].as_u64().unwrap() > 0, "{mid}");
    // Each track ends: the stuck command killed after its drain time, the file in place.
    let stuck = sink_done(&h, "stuck");
    assert_eq!(
        stuck["sessions"][0]["tracks"][0]["state"], "ended",
        "{stuck}"
    );
    sink_done(&h, "rec");
    let p = probe_recording(&dir, "h264");
    assert!(p.frames >= 108, "{p:?} of 120 sent");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Opus packets of an Ogg file, with their durations.
fn opus_packets(path: &Path) -> Vec<(Vec<u8>, Duration)> {
    let mut r = smolrtc::media::ogg::OggOpusReader::new();
    r.push(&std::fs::read(path).unwrap());
    std::iter::from_fn(|| r.poll().unwrap())
        .map(|p| {
            let d = Duration::from_micros(u64::from(p.duration) * 1_000_000 / 48_000);
            (p.data.to_vec(), d)
        })
        .collect()
}

/// How a talk-back offer reaches the service.
#[derive(Clone, Copy, Debug)]
enum Via {
    ApiOffer,
    WebSocket,
    /// `POST /api/offer?sink=` alone: the page's Talk with no stream to play.
    ApiOfferSinkOnly,
}

/// The service's answer to `offer` at `query`, through `POST /api/offer` or `/ws` (its
/// socket, kept open as long as the session).
fn answer_via(
    via: Via,
    addr: SocketAddr,
    query: &str,
    offer: &smolrtc::Description,
) -> (smolrtc::Description, Option<std::net::TcpStream>) {
    if !matches!(via, Via::WebSocket) {
        let r = request(
            addr,
            "POST",
            &format!("/api/offer{query}"),
            Some("application/json"),
            offer.to_json().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        return (smolrtc::Description::from_json(&r.text()).unwrap(), None);
    }
    let (mut s, r) = common::http::ws_upgrade_from(addr, None, &format!("/ws{query}"), &[]);
    assert_eq!(r.status, 101, "{}", r.text());
    let msg = serde_json::json!({"type": "description",
        "value": {"type": "offer", "sdp": offer.sdp}});
    std::io::Write::write_all(&mut s, &common::http::ws_text_frame(&msg.to_string())).unwrap();
    let reply: serde_json::Value =
        serde_json::from_str(&common::http::ws_read_text(&mut s)).unwrap();
    assert_eq!(reply["type"], "description", "{reply}");
    let answer = smolrtc::Description {
        kind: smolrtc::SdpType::Answer,
        sdp: reply["value"]["sdp"].as_str().unwrap().to_owned(),
    };
    (answer, Some(s))
}

/// Talk-back between smolrtc peers: a library peer with an Opus track (`add_track`) and an
/// audio receiver (`add_transceiver`) offers one sendrecv audio section with
/// `?stream=door&sink=intercom`, through `POST /api/offer` and through `/ws`; it hears the
/// stream's audio while the sink records what it sends (a new .ogg per session, ffprobe:
/// Opus, the duration sent). Then `?sink=intercom` alone: a sendonly offer, recorded too.
#[test]
fn a_smolrtc_peer_talks_back_over_api_offer_and_ws() {
    use smolrtc::media::TrackInit;
    let dir = temp_dir("peer-talk");
    let ogg = common::media::opus(&media_dir(), 3);
    let packets = opus_packets(&ogg);
    let mut cfg = config(&[&format!("intercom=file:{}/talk.ogg", dir.display())]).unwrap();
    add_file_stream(&mut cfg, MediaKind::Audio, "door", &ogg);
    let (_rt, h) = start(cfg);
    for via in [Via::ApiOffer, Via::WebSocket, Via::ApiOfferSinkOnly] {
        common::run(async {
            let talk = !matches!(via, Via::ApiOfferSinkOnly);
            let mut p = common::Peer::new("talker");
            let mut track = p.pc.add_track(TrackInit::new(Codec::Opus)).await.unwrap();
            if talk {
                p.pc.add_transceiver(MediaKind::Audio, smolrtc::media::Direction::RecvOnly)
                    .await
                    .unwrap();
            }
            let offer = p.complete_offer().await;
            let (offered, answered) = if talk {
                ("a=sendrecv", "a=sendrecv")
            } else {
                ("a=sendonly", "a=recvonly")
            };
            assert!(offer.sdp.contains(offered), "{}", offer.sdp);
            let path = if talk {
                "?stream=door&sink=intercom"
            } else {
                "?sink=intercom"
            };
            let (answer, ws) = answer_via(via, h.addr, path, &offer);
            assert!(answer.sdp.contains(answered), "{}", answer.sdp);
            p.pc.set_remote_description(answer).await.unwrap();
            // The stream's audio arrives as a track of this peer's (a sendrecv section).
            let mut heard = None;
            let until = Instant::now() + Duration::from_secs(20);
            while let common::Next::Event(ev) = common::next_until(&mut p.events, until).await {
                match ev {
                    smolrtc::Event::Track(t) => heard = Some(t),
                    smolrtc::Event::ConnectionState(smolrtc::ConnectionState::Connected) => break,
                    _ => {}
                }
            }
            assert_eq!(heard.is_some(), talk, "a track to hear only with ?stream=");
            let listener = heard.map(|mut rx| {
                assert_eq!(rx.codec(), Codec::Opus);
                std::thread::spawn(move || std::iter::from_fn(|| rx.read_frame_blocking()).count())
            });
            async_io::Timer::after(Duration::from_millis(300)).await;
            for (data, d) in &packets {
                track.write_frame(data, *d).unwrap();
                async_io::Timer::after(*d).await;
            }
            async_io::Timer::after(Duration::from_millis(500)).await;
            p.pc.close().await;
            drop(ws);
            // 3 s of the device's audio (20 ms packets) heard meanwhile.
            if let Some(listener) = listener {
                let frames = listener.join().unwrap();
                assert!(frames >= 100, "{via:?}: {frames} Opus frames heard");
            }
        });
        // The sink's new file for this session.
        println!("{via:?}:");
        sink_done(&h, "intercom");
    }
    let got = files(&dir, "ogg");
    assert_eq!(got.len(), 3, "one file per session: {got:?}");
    for f in &got {
        let p = ffprobe(f);
        println!("{}: {p:?}", f.display());
        assert_eq!(p.codec, "opus");
        assert!(p.duration > 2.5 && p.duration < 3.5, "{p:?}: 3 s sent");
        assert!(
            p.frames as usize + 10 >= packets.len(),
            "{p:?} of {}",
            packets.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An `rtp://` sink takes one session at a time (two senders on one port would garble what
/// ffmpeg reads there): a second publisher gets `409` naming the first, and is taken once
/// the first session is gone.
#[test]
fn an_rtp_sink_takes_one_session_at_a_time() {
    use smolrtc::media::TrackInit;
    let port = port_from(6500);
    let (_rt, h) = start(config(&[&format!("cam=rtp://127.0.0.1:{port}?codec=vp8")]).unwrap());
    common::run(async {
        let offer_of = async |p: &mut common::Peer| {
            p.pc.add_track(TrackInit::new(Codec::Vp8)).await.unwrap();
            p.complete_offer().await.sdp
        };
        let whip = |sdp: &str| post_sdp(h.addr, "/whip/cam", sdp);
        let (mut first, mut second) = (common::Peer::new("first"), common::Peer::new("second"));
        let (a, b) = (offer_of(&mut first).await, offer_of(&mut second).await);
        let r = whip(&a);
        assert_eq!(r.status, 201, "{}", r.text());
        let id = r
            .header("location")
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let r = whip(&b);
        assert_eq!(r.status, 409, "{}", r.text());
        let e = r.json()["error"].as_str().unwrap().to_owned();
        assert!(
            e.contains("one session at a time") && e.contains(&id),
            "{e}"
        );
        // The first one ends (WHIP DELETE at /whip/NAME/<id>): the port is free again.
        let r = request(h.addr, "DELETE", &format!("/whip/cam/{id}"), None, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let r = whip(&b);
            if r.status == 201 {
                break;
            }
            assert_eq!(r.status, 409, "{}", r.text());
            assert!(Instant::now() < until, "still busy: {}", r.text());
            async_io::Timer::after(Duration::from_millis(100)).await;
        }
    });
}

/// A page that is not a secure context (plain http:// to a name other than localhost) has
/// no `navigator.mediaDevices`: publishing fails at once with the page's "needs HTTPS"
/// message, which the report carries, and no session is opened.
#[test]
fn chromium_on_an_insecure_origin_says_it_needs_https() {
    let mut cfg = config(&["cam=file:/tmp/cam.h264"]).unwrap();
    cfg.allow_hosts = vec!["device.test".into()];
    browser_case_at(
        "chromium_on_an_insecure_origin_says_it_needs_https",
        BrowserKind::Chromium,
        cfg,
        (
            "device.test",
            &["--host-resolver-rules=MAP device.test 127.0.0.1"],
        ),
        "publish=cam",
        |_| (),
        |h, report, ()| {
            let e = report["error"].as_str().unwrap();
            assert!(
                e.contains("secure pages") && e.contains("https://"),
                "{report}"
            );
            assert_eq!(session_count(h), 0);
        },
        false,
    );
}

/// smolrtc to smolrtc through two services: one `serve --video cam=file:...` streams a
/// file source over WHEP to a library peer, which relays each frame it receives
/// (`Event::Track` → `read_frame` → `TrackSender::write_frame`) through WHIP to a second
/// service's `--sink rec=file:...`; the recording decodes at the source's size, its frames
/// those relayed.
#[test]
fn a_stream_of_one_service_recorded_by_another_through_a_relay() {
    let dir = temp_dir("relay");
    let mut a = config(&[]).unwrap();
    add_file_stream(&mut a, MediaKind::Video, "cam", &vp8_source());
    let (_ra, device) = start(a);
    let (_rb, recorder) = start(config(&[&format!("rec=file:{}/rec.ivf", dir.display())]).unwrap());
    let relayed = common::run(async {
        // The viewer of the first service.
        let mut viewer = common::Peer::new("viewer");
        viewer
            .pc
            .add_transceiver(MediaKind::Video, smolrtc::media::Direction::RecvOnly)
            .await
            .unwrap();
        // A channel too: without one, create_offer writes its data section with port 0
        // (and no bundle-only), which parse_description refuses (left to the SDP code).
        viewer
            .channel("relay", smolrtc::ChannelInit::default())
            .await;
        let offer = viewer.complete_offer().await;
        // The source shows its codec once its first keyframe is read.
        let until = Instant::now() + Duration::from_secs(20);
        let answer = loop {
            let r = post_sdp(device.addr, "/whep/cam", &offer.sdp);
            if r.status == 201 {
                break r.text();
            }
            assert_eq!(r.status, 503, "{}", r.text());
            assert!(Instant::now() < until, "{}", r.text());
            async_io::Timer::after(Duration::from_millis(100)).await;
        };
        viewer
            .pc
            .set_remote_description(smolrtc::Description {
                kind: smolrtc::SdpType::Answer,
                sdp: answer,
            })
            .await
            .unwrap();
        let mut rx = viewer
            .take("the stream's track", |e| match e {
                smolrtc::Event::Track(t) => Ok(t),
                other => Err(other),
            })
            .await;
        assert_eq!(rx.codec(), Codec::Vp8);

        // The publisher to the second service.
        let mut publisher = common::Peer::new("publisher");
        let (mut track, _) = whip_publish(&mut publisher, recorder.addr, "rec", Codec::Vp8).await;

        async_io::Timer::after(Duration::from_millis(300)).await;
        // Relay 90 frames (3 s), from a keyframe on: the recording starts decodable.
        let (mut relayed, mut last) = (0u32, None::<u32>);
        while relayed < 90 {
            let f = rx.read_frame().await.expect("the stream goes on");
            if relayed == 0 && !f.keyframe {
                continue;
            }
            let ticks = last.map_or(3000, |l| f.rtp_timestamp.wrapping_sub(l));
            last = Some(f.rtp_timestamp);
            let d = Duration::from_micros(u64::from(ticks) * 1_000_000 / 90_000);
            assert!(
                track.write_frame(&f.data, d).unwrap(),
                "frame {relayed} queued"
            );
            relayed += 1;
        }
        async_io::Timer::after(Duration::from_millis(500)).await;
        publisher.pc.close().await;
        viewer.pc.close().await;
        relayed
    });
    sink_done(&recorder, "rec");
    let p = probe_recording(&dir, "ivf");
    assert_eq!((p.codec.as_str(), p.width, p.height), ("vp8", 320, 240));
    assert!(
        p.frames + 5 >= u64::from(relayed) && p.frames <= u64::from(relayed),
        "{p:?} of {relayed}"
    );
    // 90 frames at 30 fps: 3 s, less what the device's catch-up for a joining viewer (its
    // cached frames since the keyframe, sent at once) squeezed together.
    assert!(p.duration > 2.5 && p.duration < 3.3, "{p:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// WHIP ingest through the impairment relay at 2% loss both ways: a library peer publishes
/// 150 H.264 frames (5 s, 640x480 at 1 Mbit/s: several packets a frame) to a file sink; the
/// sink's receiver NACKs what is missing and the publisher resends it. The recording holds
/// at least 95% of the frames (a frame with a hole left after the retries is dropped, not
/// recorded broken: every recorded frame decodes), and the recovery is printed.
#[test]
fn whip_ingest_through_two_percent_loss_recovers_by_nack() {
    use smolrtc::testkit::impair::{Impairment, Relay};
    let dir = temp_dir("lossy");
    let units = h264_units("testsrc=size=640x480:rate=30", 5, 1000);
    assert_eq!(units.len(), 150);
    let (_rt, h) = start(config(&[&format!("cam=file:{}/cam.h264", dir.display())]).unwrap());
    let _relay = common::run(async {
        let mut p = common::Peer::new("publisher");
        let (mut track, offer) = whip_offer(&mut p, Codec::H264).await;
        // The service learns the publisher only at the relay's back (peer-reflexive).
        let offer = common::strip_candidates(&offer);
        let r = post_sdp(h.addr, "/whip/cam", &offer);
        assert_eq!(r.status, 201, "{}", r.text());
        let answer = r.text();
        let line = answer
            .split("\r\n")
            .find(|l| l.starts_with("a=candidate") && l.contains(" 127.0.0.1 "))
            .expect("a 127.0.0.1 candidate in the answer")
            .to_owned();
        let f: Vec<&str> = line.split_whitespace().collect();
        let target = format!("{}:{}", f[4], f[5]).parse().unwrap();
        let loss = Impairment::parse("loss=2%").unwrap();
        let relay = Relay::start("127.0.0.1".parse().unwrap(), target, loss, loss, 17).unwrap();
        let cand = format!(
            "a=candidate:1 1 udp 2130706431 127.0.0.1 {} typ host",
            relay.front().port()
        );
        let answer = common::strip_candidates(&answer).replacen(
            "a=mid:",
            &format!("{cand}\r\na=end-of-candidates\r\na=mid:"),
            1,
        );
        whip_answer(&mut p, answer).await;
        play(std::slice::from_mut(&mut track), &units, |_| {}).await;
        // Time for the last retransmissions.
        async_io::Timer::after(Duration::from_millis(1500)).await;
        p.pc.close().await;
        relay
    });
    let s = sink_done(&h, "cam");
    let track = &s["sessions"][0]["tracks"][0];
    let received = &track["received"];
    let recorded = track["frames"].as_u64().unwrap();
    println!(
        "LOSSY_INGEST: 150 frames sent through 2% loss: {recorded} recorded ({:.1}% missing), \
         {} NACKs sent, {} packets recovered, {} lost for good, {} frames dropped: {received}",
        (150 - recorded.min(150)) as f64 / 1.5,
        received["nacks_sent"],
        received["recovered"],
        received["lost"],
        received["frames_dropped"]
    );
    assert!(recorded >= 143, "{recorded} of 150 frames recorded: {s}");
    assert!(
        received["nacks_sent"].as_u64().unwrap() > 0,
        "no NACK at 2% loss: {received}"
    );
    assert!(
        received["recovered"].as_u64().unwrap() > 0,
        "nothing recovered: {received}"
    );
    let p = probe_recording(&dir, "h264");
    assert_eq!((p.width, p.height), (640, 480));
    // Every recorded frame decodes: no frame went in with a hole.
    assert_eq!(p.frames, recorded, "{p:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------ benchmark

/// utime + stime of process `pid`, in clock ticks (100 a second).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU and memory of `smolrtc serve --sink` per ingest session (BENCHMARKS.md): the real
/// binary records 1, 5 and 10 library publishers at once, each 640x480 H.264 at 1 Mbit/s,
/// 30 fps, to a `file:` sink (a new file each); the service's CPU over 10 s and its RSS
/// above idle, per session. `cargo test --release --test ingest -- --ignored
/// ingest_sessions_benchmark --nocapture`.
#[test]
#[ignore]
fn ingest_sessions_benchmark() {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir("bench");
    let units = h264_units("testsrc=size=640x480:rate=30", 4, 1000);
    let rec = dir.join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    println!("| sessions | service CPU | CPU per session | RSS above idle | RSS per session |");
    println!("| --- | --- | --- | --- | --- |");
    for n in [1usize, 5, 10] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--ice-address",
                "127.0.0.1",
            ])
            .args(["--max-sessions", "64", "--max-sessions-per-address", "64"])
            .arg("--sink")
            .arg(format!("cam=file:{}/cam", rec.display()))
            .env("RUST_LOG", "warn,smolrtc::service=info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let mut addr: Option<SocketAddr> = None;
        while addr.is_none() && err.read_line(&mut line).unwrap_or(0) > 0 {
            addr = line
                .split("listening on http://")
                .nth(1)
                .and_then(|a| a.split_whitespace().next()?.parse().ok());
            line.clear();
        }
        let addr = addr.expect("no 'listening on' line");
        std::thread::spawn(move || {
            while err.read_line(&mut line).unwrap_or(0) > 0 {
                line.clear()
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let idle = rss_kib(pid);
        let (cpu, rss) = common::run(async {
            let mut peers = Vec::new();
            let mut tracks = Vec::new();
            for i in 0..n {
                let mut p = common::Peer::new(&format!("pub{i}"));
                let (track, _) = whip_publish(&mut p, addr, "cam", Codec::H264).await;
                tracks.push(track);
                peers.push(p);
            }
            let mut t0 = None;
            // 2 s to settle, then 10 s measured.
            play(&mut tracks, units.iter().cycle().take(12 * 30), |k| {
                if k == 60 {
                    t0 = Some((Instant::now(), cpu_ticks(pid)));
                }
            })
            .await;
            let (at, ticks) = t0.unwrap();
            let cpu = (cpu_ticks(pid) - ticks) as f64 / 100.0 / at.elapsed().as_secs_f64();
            let rss = rss_kib(pid);
            // The figures are of real work: every session's frames were written.
            let r = request(addr, "GET", "/api/sinks", None, b"");
            let frames = r.json()["sinks"][0]["frames"].as_u64().unwrap();
            assert!(
                frames >= (n * 12 * 30 * 9 / 10) as u64,
                "{frames} frames written by {n}"
            );
            for p in &peers {
                p.pc.close().await;
            }
            (cpu, rss)
        });
        let above = rss.saturating_sub(idle);
        println!(
            "| {n} | {:.1}% | {:.2}% | {:.1} MiB | {:.0} KiB |",
            cpu * 100.0,
            cpu * 100.0 / n as f64,
            above as f64 / 1024.0,
            above as f64 / n as f64
        );
        // The same, one JSON line, for benches/run's "Ingest sessions" section.
        println!(
            "INGEST_ROW {}",
            serde_json::json!({
                "sessions": n,
                "cpu_percent": cpu * 100.0,
                "idle_rss_kib": idle,
                "rss_above_idle_kib": above,
            })
        );
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
