//! A source that changes H.264 profile mid-stream (issue 16: `profile-level-id` of the
//! actual SPS). What happens, and what this test holds:
//! - each WHEP answer is negotiated from the stream's latest SPS, so a viewer joining after
//!   the change gets the new `profile-level-id` (when its offer has that profile);
//! - a viewer already watching is not renegotiated (WHEP has no server-initiated offer):
//!   it keeps the answer it got, and the new SPS and PPS reach it in band before the next
//!   IDR; whether its decoder takes the new profile is up to the decoder.
//!
//! - a High-profile stream plays in Chromium, whose offer lists High 4:4:4 Predictive
//!   (`f4001f`) but no plain High: a High 4:4:4 Predictive decoder decodes High streams
//!   (H.264 Annex A.2), so that payload type is answered.
//!
//! Needs ffmpeg (`.ci/setup`); the Chromium case also root, `unshare` and chromium.

mod common;

use common::browser::{
    in_namespace, reexec_in_namespace, wait_report, Browser, BrowserKind, StopService,
};
use common::http::request;
use smolrtc::media::MediaKind;
use smolrtc::service::StreamConfig;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CHROMIUM_RECVONLY: &str = include_str!("fixtures/sdp/chromium_recvonly.sdp");

/// 2 s of 320x240 H.264 in `profile` (no B-frames, a keyframe a second).
fn part(dir: &std::path::Path, profile: &str) -> Vec<u8> {
    #[rustfmt::skip]
    let path = common::media::make(&dir.join(format!("{profile}.h264")), [
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "2",
        "-c:v", "libx264", "-profile:v", profile, "-bf", "0", "-g", "30",
        "-pix_fmt", "yuv420p", "-f", "h264",
    ]);
    std::fs::read(path).expect("media")
}

/// The stream's `profile_level_id` once `ready` holds (at most 20 s).
fn profile_when(addr: SocketAddr, ready: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let r = request(addr, "GET", "/api/streams", None, b"");
        let p = r.json()["streams"][0]["video"]["profile_level_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if ready(&p) {
            return p;
        }
        assert!(Instant::now() < until, "profile-level-id stayed {p:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The H.264 `profile-level-id` of a WHEP answer to Chromium's recvonly offer.
fn answered_profile(addr: SocketAddr) -> String {
    let r = request(
        addr,
        "POST",
        "/whep/cam",
        Some("application/sdp"),
        CHROMIUM_RECVONLY.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = r.text();
    let at = answer
        .find("profile-level-id=")
        .unwrap_or_else(|| panic!("no profile-level-id: {answer}"));
    answer[at + 17..at + 23].to_owned()
}

/// profile_idc of the SPS NAL units in an Annex-B access unit.
fn sps_profiles(au: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..au.len().saturating_sub(4) {
        if au[i..i + 3] == [0, 0, 1] && au[i + 3] & 0x1f == 7 {
            out.push(au[i + 4]);
        }
    }
    out
}

#[test]
fn a_profile_change_reaches_new_answers_and_watching_viewers_in_band() {
    let dir = common::media::temp_dir("profile-change");
    let both = dir.join("baseline-then-main.h264");
    std::fs::write(&both, [part(&dir, "baseline"), part(&dir, "main")].concat()).unwrap();
    let (_rt, h) = common::service::start(|c| {
        let source = format!("file:{}", both.display());
        StreamConfig::add_source(&mut c.streams, MediaKind::Video, "cam", &source).unwrap();
    });
    let addr = h.addr;
    // Baseline (profile_idc 66): Chromium's offer gets a baseline answer.
    let p = profile_when(addr, |p| p.starts_with("42"));
    assert!(answered_profile(addr).starts_with("42"), "stream at {p}");

    // A library viewer joins now and reads on across the change.
    let profiles = common::run(async {
        let (viewer, mut rx, _) = common::whep_viewer(addr, "cam", "viewer").await;
        // 5 s: at least one whole loop, so both parts' keyframes come by.
        let mut seen = Vec::new();
        for _ in 0..150 {
            let f = rx.read_frame().await.expect("frames go on");
            for p in sps_profiles(&f.data) {
                assert!(f.keyframe, "an SPS outside a keyframe");
                if seen.last() != Some(&p) {
                    seen.push(p);
                }
            }
        }
        viewer.pc.close().await;
        seen
    });
    assert!(
        profiles.contains(&66) && profiles.contains(&77),
        "the watching viewer's SPS profiles in band: {profiles:?}"
    );

    // Main (profile_idc 77): a new viewer's answer says so.
    let p = profile_when(addr, |p| p.starts_with("4d"));
    let answered = answered_profile(addr);
    assert!(
        answered.starts_with("4d"),
        "stream at {p}, answered {answered}"
    );
    h.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Chromium plays an x264 High-profile stream through WHEP (its offer has no `64..`
/// format, so the stream goes out on its `f4001f` one).
#[test]
fn chromium_plays_a_high_profile_stream() {
    const NAME: &str = "chromium_plays_a_high_profile_stream";
    if !in_namespace(NAME) {
        return reexec_in_namespace(NAME);
    }
    smolrtc::logging::init();
    let dir = common::media::temp_dir("profile-high");
    let high = dir.join("high.h264");
    std::fs::write(&high, part(&dir, "high")).unwrap();
    let mut config = common::service::config(|c| c.peer = smolrtc::Config::loopback("service"));
    let source = format!("file:{}", high.display());
    StreamConfig::add_source(&mut config.streams, MediaKind::Video, "cam", &source).unwrap();
    let runtime = smolrtc::Runtime::new().expect("runtime");
    let service = smolrtc::service::Service::new(config)
        .start(&runtime)
        .expect("service start");
    let service = StopService(service);
    let addr = service.0.addr;
    let p = profile_when(addr, |p| p.starts_with("64"));
    let url = format!(
        "http://{addr}/?watch=cam&auto=1&via=whep&codec=H264&frames=30&wait=60&report=/api/report"
    );
    let mut failures = Vec::new();
    let mut browser = Browser::launch(BrowserKind::Chromium, &url);
    let report = wait_report(&service.0, &mut browser, &mut failures);
    println!("stream {p}: {report:?}");
    let r = report.unwrap_or_else(|| panic!("no report: {failures:?}"));
    let s = &r["streams"]["cam"];
    assert!(r["ok"] == true, "{s}\n{}", browser.log_tail(40));
    assert_eq!(s["codec"], "video/H264", "{s}");
    assert_eq!(
        (s["frameWidth"].as_u64(), s["frameHeight"].as_u64()),
        (Some(320), Some(240))
    );
    browser.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
