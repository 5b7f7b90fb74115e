//! Monitoring (issue 22): `GET /metrics` during a real session (a data channel) and a WHEP
//! viewer, behind the token; the numbers move as they should. And systemd's notify
//! protocol: the real binary sends READY=1 and WATCHDOG=1 to a socket this test binds.
//! Needs ffmpeg for the stream's file (`.ci/setup`).

mod common;

use common::http::{request, request_from};
use common::{block_on, opened, send_expect, Peer};
use smolrtc::media::MediaKind;
use smolrtc::service::{Service, ServiceConfig, ServiceHandle, StreamConfig};
use smolrtc::{ChannelInit, Runtime};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "metrics-token-1";
const AUTH: &str = "Authorization: Bearer metrics-token-1";
const CHROMIUM_RECVONLY: &str = include_str!("fixtures/sdp/chromium_recvonly.sdp");

fn h264_file() -> PathBuf {
    let dir = common::media::temp_dir("metrics");
    common::media::video(&dir, "H264", "testsrc=size=320x240:rate=30", 2, 0)
}

fn start() -> (Runtime, ServiceHandle) {
    let rt = Runtime::new().unwrap();
    let mut config = ServiceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(TOKEN.into()),
        ..Default::default()
    };
    let source = format!("file:{}", h264_file().display());
    StreamConfig::add_source(&mut config.streams, MediaKind::Video, "cam", &source).unwrap();
    let h = Service::new(config).start(&rt).unwrap();
    (rt, h)
}

/// The scrape, checked to be 200 and the Prometheus text format.
fn scrape(h: &ServiceHandle) -> String {
    let r = request_from(h.addr, None, "GET", "/metrics", &[AUTH], None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.header("content-type")
    );
    r.text()
}

/// The value of the sample line `name` (with its labels, as written).
fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// Scrapes until `ok` holds on the text (at most 20 s); the last text.
fn scrape_until(h: &ServiceHandle, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let t = scrape(h);
        if ok(&t) {
            return t;
        }
        assert!(Instant::now() < until, "{what} never held:\n{t}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_move_with_a_session_and_a_viewer() {
    common::init_log();
    let (_rt, h) = start();
    // The token guards the metrics like the API.
    let r = request(h.addr, "GET", "/metrics", None, b"");
    assert_eq!(r.status, 401, "{}", r.text());

    let before = scrape(&h);
    assert_eq!(value(&before, "smolrtc_sessions"), 0.0);
    for name in [
        "smolrtc_sessions_total",
        "smolrtc_bytes_sent_total",
        "smolrtc_bytes_received_total",
        "smolrtc_rtp_packets_lost_total",
        "smolrtc_nack_received_total",
        "smolrtc_pli_received_total",
        "smolrtc_dtls_failures_total",
        "smolrtc_rtt_seconds_count",
        "smolrtc_rtt_seconds_sum",
        "smolrtc_resident_memory_bytes",
        "smolrtc_cpu_seconds_total",
    ] {
        value(&before, name);
    }
    assert!(value(&before, "smolrtc_resident_memory_bytes") > 1e6);
    assert!(before.contains("# TYPE smolrtc_rtt_seconds histogram"));
    assert!(value(&before, "smolrtc_http_requests_total{code=\"401\"}") >= 1.0);
    assert_eq!(value(&before, "smolrtc_viewers{stream=\"cam\"}"), 0.0);

    // One session with a data channel, echoing.
    let mut p = Peer::new("client");
    block_on(async {
        let echo = p.channel("echo", ChannelInit::default()).await;
        let answer = p.offer_to_service_from(h.addr, None, &[AUTH]).await;
        p.pc.set_remote_description(answer).await.unwrap();
        opened(&mut p, "echo").await;
        for i in 0..20 {
            send_expect(&echo, &mut p, vec![i as u8; 1000]).await;
        }
    });
    // A WHEP viewer of the stream (its offer from a capture: it never connects).
    let ready = Instant::now() + Duration::from_secs(20);
    let viewer = loop {
        let r = request_from(
            h.addr,
            None,
            "POST",
            "/whep/cam",
            &[AUTH],
            Some("application/sdp"),
            CHROMIUM_RECVONLY.as_bytes(),
        );
        if r.status == 201 {
            break r.header("location").unwrap().to_owned();
        }
        assert!(r.status == 503 && Instant::now() < ready, "{}", r.text());
        std::thread::sleep(Duration::from_millis(100));
    };
    let during = scrape(&h);
    assert_eq!(value(&during, "smolrtc_sessions"), 2.0, "{during}");
    assert_eq!(value(&during, "smolrtc_viewers{stream=\"cam\"}"), 1.0);
    // Other tests in this binary may open sessions too: at least ours.
    let total = |t: &str| value(t, "smolrtc_sessions_total");
    assert!(total(&during) >= total(&before) + 2.0);
    for name in ["smolrtc_bytes_sent_total", "smolrtc_bytes_received_total"] {
        assert!(
            value(&during, name) >= value(&before, name) + 20_000.0,
            "{name}: {} then {}",
            value(&before, name),
            value(&during, name)
        );
    }
    assert!(value(&during, "smolrtc_http_requests_total{code=\"200\"}") >= 2.0);
    assert!(value(&during, "smolrtc_http_requests_total{code=\"201\"}") >= 1.0);

    // Both closed: the gauges go back to 0, the counters stay.
    let r = request_from(h.addr, None, "DELETE", &viewer, &[AUTH], None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    block_on(p.pc.close());
    // The viewer count falls when the stream lets the viewer go, a step after the session.
    let after = scrape_until(&h, "sessions and viewers back to 0", |t| {
        value(t, "smolrtc_sessions") == 0.0 && value(t, "smolrtc_viewers{stream=\"cam\"}") == 0.0
    });
    assert!(total(&after) >= total(&during));
    assert!(
        value(&after, "smolrtc_bytes_sent_total") >= value(&during, "smolrtc_bytes_sent_total")
    );
    h.shutdown();
}

/// The real binary under a notify socket bound here: READY=1 once it serves (the port is
/// open by then), WATCHDOG=1 pings at half WATCHDOG_USEC, STOPPING=1 on SIGTERM.
#[test]
fn systemd_notify_ready_watchdog_stopping() {
    let dir = std::env::temp_dir().join(format!("smolrtc-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notify datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let m = next();
        if m == "STOPPING=1" {
            break;
        }
        assert_eq!(m, "WATCHDOG=1");
        assert!(Instant::now() < until);
    }
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The abstract-namespace form of NOTIFY_SOCKET (`@name`) works too.
#[test]
fn systemd_notify_to_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("smolrtc-notify-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");
    child.kill().unwrap();
    let _ = child.wait();
}
