//! Real browsers against the service: headless Chromium and Firefox ESR load the page from
//! an in-process `smolrtc serve`, run its unattended self-test (`?auto=1`) and post the
//! report back; the test checks the report and that the server freed the session.
//!
//! Every case runs inside a private network namespace with only `lo` up: under plain
//! `cargo test` a case re-executes its own test binary under
//! `unshare -n sh -c 'ip link set lo up && exec ...'` with `SMOLRTC_IN_NETNS=1` set, and the
//! re-executed copy does the work. Needs root, `unshare`, `ip`, `/usr/bin/chromium` and
//! `firefox-esr` (`.ci/setup` installs them).

#[path = "common/browser.rs"]
#[allow(dead_code)]
mod browser_kit;
#[path = "common/media.rs"]
mod media;
use browser_kit::{
    reexec_in_namespace, wait_report, Browser, BrowserKind, KillGroup, StopService, NETNS_ENV,
    NETNS_MARKER, ONE_AT_A_TIME, REPORT_TIMEOUT,
};

use smolrtc::service::{Service, ServiceConfig};
use smolrtc::testkit::impair::{Impairment, Relay};
use smolrtc::{Config, Runtime};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for `GET /api/sessions` to show no session after the page closed.
const FREED_TIMEOUT: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;
/// What every case asks the page to do.
const ECHO: u64 = 20;
const UPLOAD_MIB: u64 = 16;
const DOWNLOAD_MIB: u64 = 16;

#[test]
fn chromium_http_offer() {
    run_case("chromium_http_offer", BrowserKind::Chromium, "http", true);
}

#[test]
fn chromium_whip() {
    run_case("chromium_whip", BrowserKind::Chromium, "whip", true);
}

#[test]
fn chromium_ws_page_offers() {
    run_case("chromium_ws_page_offers", BrowserKind::Chromium, "ws", true);
}

#[test]
fn chromium_ws_service_offers() {
    run_case(
        "chromium_ws_service_offers",
        BrowserKind::Chromium,
        "ws",
        false,
    );
}

#[test]
fn firefox_ws_page_offers() {
    run_case("firefox_ws_page_offers", BrowserKind::Firefox, "ws", true);
}

#[test]
fn firefox_ws_service_offers() {
    run_case(
        "firefox_ws_service_offers",
        BrowserKind::Firefox,
        "ws",
        false,
    );
}

/// `serve --single-port`: Chromium and Firefox at the same time, both sessions on the
/// service's one UDP port (each page's selected pair names the same remote port).
#[test]
fn chromium_and_firefox_at_once_on_one_port() {
    let name = "chromium_and_firefox_at_once_on_one_port";
    if std::env::var_os(NETNS_ENV).is_some() {
        single_port_in_namespace(name);
    } else {
        reexec_in_namespace(name);
    }
}

fn single_port_in_namespace(name: &str) {
    println!("{NETNS_MARKER} ({name})");
    smolrtc::logging::init();
    let runtime = Runtime::new().expect("smolrtc runtime");
    let config = ServiceConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        peer: Config::loopback("service"),
        single_port: Some(0),
        ..Default::default()
    };
    let service = StopService(Service::new(config).start(&runtime).expect("service start"));
    let addr = service.0.addr;
    let url = format!(
        "http://{addr}/?auto=1&mode=http&offering=1&echo={ECHO}&upload=4&download=4\
         &report=/api/report"
    );
    let mut browsers: Vec<Browser> = [BrowserKind::Chromium, BrowserKind::Firefox]
        .into_iter()
        .map(|k| Browser::launch(k, &url))
        .collect();
    let mut failures = Vec::new();
    let mut ports = Vec::new();
    for browser in browsers.iter_mut() {
        let Some(r) = wait_report(&service.0, browser, &mut failures) else {
            failures.push("a page sent no report".into());
            break;
        };
        if r["ok"] != true {
            failures.push(format!("report not ok: {}", r["error"]));
        }
        // "selected pair: host udp 127.0.0.1:5000 <-> host udp 127.0.0.1:PORT"
        let port = r["log"].as_array().and_then(|lines| {
            lines.iter().find_map(|l| {
                let l = l.as_str()?;
                let remote = l.split("selected pair:").nth(1)?.split("<->").nth(1)?;
                remote.trim().rsplit(':').next()?.parse::<u16>().ok()
            })
        });
        match port {
            Some(p) => ports.push(p),
            None => failures.push(format!("no selected pair in the page's log: {}", r["log"])),
        }
    }
    println!("{name}: service ports seen by the pages: {ports:?}");
    if ports.len() == 2 && ports[0] != ports[1] {
        failures.push(format!("sessions on different ports: {ports:?}"));
    }
    for b in &mut browsers {
        b.stop();
    }
    if !failures.is_empty() {
        for b in &browsers {
            eprintln!("---- {name}: browser output ----\n{}", b.log_tail(60));
        }
        panic!("{name}: {}", failures.join("; "));
    }
}

/// Chromium's default on a LAN: no media permission, so its host address hides behind a
/// `<uuid>.local` mDNS name the service cannot resolve. The service must still connect, by
/// learning the browser as a peer-reflexive candidate from its checks. Runs on a veth pair
/// inside the private namespace (Chromium gathers nothing on a loopback-only host without
/// the media permission).
#[test]
fn chromium_mdns_hidden_addresses() {
    const NAME: &str = "chromium_mdns_hidden_addresses";
    if std::env::var_os(NETNS_ENV).is_none() {
        return reexec_in_namespace(NAME);
    }
    println!("{NETNS_MARKER} ({NAME})");
    smolrtc::logging::init();
    for cmd in [
        "ip link add smolrtc0 type veth peer name smolrtc1",
        "ip addr add 10.77.0.1/24 dev smolrtc0",
        "ip addr add 10.77.0.2/24 dev smolrtc1",
        "ip link set smolrtc0 up",
        "ip link set smolrtc1 up",
        "ip route add default dev smolrtc0",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        let st = Command::new(args[0]).args(&args[1..]).status().expect(cmd);
        assert!(st.success(), "{cmd}: {st}");
    }
    let device = Ipv4Addr::new(10, 77, 0, 1);
    let runtime = Runtime::new().expect("smolrtc runtime");
    let mut config = ServiceConfig {
        listen: SocketAddr::from((device, 0)),
        ..Default::default()
    };
    config.peer.ice.hosts.addresses = vec![IpAddr::V4(device)];
    let service = StopService(Service::new(config).start(&runtime).expect("service start"));
    let addr = service.0.addr;
    // gum=0: no getUserMedia, no media permission: Chromium's default privacy mode.
    let url = format!(
        "http://{addr}/?auto=1&mode=http&offering=1&gum=0&echo={ECHO}&upload=1&download=1\
         &report=/api/report"
    );
    let mut browser = Browser::launch(BrowserKind::Chromium, &url);
    let mut failures = Vec::new();
    let report = wait_report(&service.0, &mut browser, &mut failures);
    let Some(r) = report else {
        panic!("{NAME}: no report: {failures:?}\n{}", browser.log_tail(60));
    };
    let log: Vec<&str> = r["log"]
        .as_array()
        .map(|l| l.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let hidden = log
        .iter()
        .any(|l| l.contains("local candidate") && l.contains(".local"));
    if !hidden {
        failures.push("Chromium did not hide its address behind an mDNS name".into());
    }
    if log
        .iter()
        .any(|l| l.contains("local candidate") && l.contains("10.77.0."))
    {
        failures.push("Chromium exposed a plain address: not the hidden-address case".into());
    }
    let steps = &r["steps"];
    if r["ok"] != true {
        failures.push(format!("report not ok: {}", r["error"]));
    }
    if steps["echo"]["all_matched"] != true || steps["download"]["checked"] != true {
        failures.push(format!("data checks failed: {}", steps));
    }
    if let Err(last) = wait_sessions_empty(addr, FREED_TIMEOUT) {
        failures.push(format!("session not freed: {last}"));
    }
    browser.stop();
    if !failures.is_empty() {
        for l in &log {
            eprintln!("page: {l}");
        }
        panic!("{NAME}: {}", failures.join("; "));
    }
    println!(
        "{NAME}: connected to a browser that hid its address: {}",
        steps["selected_pair"]
    );
}

/// Browser ↔ smolrtc throughput each way and setup time (median of 5, 64 MiB in 16 KiB
/// messages), beside Chromium ↔ Chromium in one page, in one run. A benchmark, not a test:
/// `cargo test --release --test browser -- --ignored --nocapture chromium_throughput`
/// prints the figures as one `BENCH {json}` line.
#[test]
#[ignore = "benchmark: run explicitly"]
fn chromium_throughput_benchmark() {
    if std::env::var_os(NETNS_ENV).is_none() {
        return reexec_in_namespace("chromium_throughput_benchmark");
    }
    println!("{NETNS_MARKER} (benchmark)");
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mib: u64 = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    // BENCH_IMPAIR (e.g. `delay=10ms` or `loss=1%`): the page's datagrams to the service
    // go through the impairment relay, both ways. The service runs on one known UDP port,
    // and an iptables DNAT rule in this namespace turns Chromium's datagrams to that port
    // towards the relay's front (conntrack makes the relay's answers look as if they came
    // from the service); the relay's own datagrams to the service are left alone, so the
    // service sees Chromium at the relay's back and answers it there. (Chromium <-> Chromium
    // in one page cannot be put behind the relay: that reference runs only without it.)
    let impair = std::env::var("BENCH_IMPAIR").ok().filter(|v| !v.is_empty());
    let single_port = impair.as_ref().map(|_| {
        std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.local_addr())
            .expect("free UDP port")
            .port()
    });
    let _relay = impair
        .as_ref()
        .map(|spec| impair_port(spec, single_port.expect("set with impair")));
    let runtime = Runtime::new().expect("smolrtc runtime");
    let config = ServiceConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        peer: Config::loopback("bench"),
        single_port,
        ..Default::default()
    };
    let service = StopService(Service::new(config).start(&runtime).expect("service start"));
    let addr = service.0.addr;
    let (mut up, mut down, mut setup) = (Vec::new(), Vec::new(), Vec::new());
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    for i in 0..runs {
        let url = format!(
            "http://{addr}/?auto=1&mode=http&offering=1&echo=0&upload={mib}&download={mib}\
             &transfer_timeout=300&report=/api/report"
        );
        let mut browser = Browser::launch(BrowserKind::Chromium, &url);
        let mut failures = Vec::new();
        let r = wait_report(&service.0, &mut browser, &mut failures)
            .unwrap_or_else(|| panic!("run {i}: no report: {failures:?}"));
        assert_eq!(r["ok"], true, "run {i}: {}", r["error"]);
        let s = &r["steps"];
        assert_eq!(s["upload"]["server_bytes"].as_u64(), Some(mib * MIB));
        assert_eq!(s["download"]["checked"], true);
        up.push(s["upload"]["mbit_per_s"].as_f64().unwrap_or(0.0));
        down.push(s["download"]["mbit_per_s"].as_f64().unwrap_or(0.0));
        setup.push(s["connected_ms"].as_f64().unwrap_or(0.0));
        println!(
            "run {i}: up {:.1} Mbit/s, down {:.1} Mbit/s, page start to open {:.0} ms",
            up[i], down[i], setup[i]
        );
        browser.stop();
        wait_sessions_empty(addr, FREED_TIMEOUT).expect("session freed");
    }
    if let Some(relay) = &_relay {
        let (f, b) = (&relay.forward, &relay.backward);
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        // Proof that the transfers went through the relay (and were impaired).
        println!(
            "relay: to service {} received / {} dropped, to page {} received / {} dropped",
            n(&f.received),
            n(&f.dropped),
            n(&b.received),
            n(&b.dropped)
        );
        assert!(
            n(&f.received) > mib * MIB / 1500 && n(&b.received) > mib * MIB / 1500,
            "the transfers did not go through the relay"
        );
        // Datagrams the kernel dropped for full receive buffers in this namespace (the page's,
        // the relay's or the service's sockets): the relay delivers bursts unpaced.
        let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
        let rcvbuf_errors = udp.first().zip(udp.get(1)).and_then(|(names, values)| {
            let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
            values.split_whitespace().nth(i)?.parse::<u64>().ok()
        });
        println!("UDP receive-buffer drops in the namespace: {rcvbuf_errors:?}");
        let result = serde_json::json!({
            "runs": runs, "mib": mib, "impairment": impair,
            "udp_rcvbuf_drops": rcvbuf_errors,
            "chromium_to_smolrtc_mbit_per_s": median(&mut up),
            "smolrtc_to_chromium_mbit_per_s": median(&mut down),
            "page_start_to_channel_open_ms": median(&mut setup),
        });
        println!("BENCH {result}");
        return;
    }
    // The reference: two RTCPeerConnections in one Chromium page, same transfer.
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/c2c.html");
    let url = format!("file://{}?mib={mib}&runs={runs}", page.display());
    let mut browser = Browser::launch(BrowserKind::Chromium, &url);
    let deadline = Instant::now() + Duration::from_secs(120 + 20 * runs as u64 * mib / 16);
    let c2c: serde_json::Value = loop {
        let log = std::fs::read_to_string(&browser.log).unwrap_or_default();
        if let Some(line) = log.lines().find_map(|l| l.split("SMOLRTC_C2C ").nth(1)) {
            let json = line
                .split("\", source")
                .next()
                .unwrap_or(line)
                .trim_end_matches('"');
            break serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("c2c result {json:?}: {e}"));
        }
        assert!(
            Instant::now() < deadline,
            "no c2c result: {}",
            browser.log_tail(30)
        );
        assert!(
            browser.exited().is_none(),
            "browser exited: {}",
            browser.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    browser.stop();
    let runs_c2c = c2c.as_array().unwrap_or_else(|| panic!("c2c: {c2c}"));
    let c2c_rate: Vec<f64> = runs_c2c
        .iter()
        .map(|r| r["mbit_per_s"].as_f64().unwrap_or(0.0))
        .collect();
    let c2c_setup: Vec<f64> = runs_c2c
        .iter()
        .map(|r| r["setup_ms"].as_f64().unwrap_or(0.0))
        .collect();
    assert!(
        runs_c2c.iter().all(|r| r["checked"] == true),
        "c2c data corrupt: {c2c}"
    );
    let result = serde_json::json!({
        "runs": runs, "mib": mib,
        "chromium_to_smolrtc_mbit_per_s": median(&mut up),
        "smolrtc_to_chromium_mbit_per_s": median(&mut down),
        "page_start_to_channel_open_ms": median(&mut setup),
        "chromium_to_chromium_mbit_per_s": median(&mut c2c_rate.clone()),
        "chromium_to_chromium_setup_ms": median(&mut c2c_setup.clone()),
    });
    println!("BENCH {result}");
}

/// Puts the impairment relay (`spec`, both ways) between the page and the service's UDP
/// `port` in this namespace: an iptables DNAT rule turns Chromium's datagrams to that port
/// towards the relay's front (conntrack makes the relay's answers look as if they came from
/// the service); the relay's own datagrams to the service are left alone, so the service
/// sees the browser at the relay's back and answers it there.
fn impair_port(spec: &str, port: u16) -> Relay {
    let imp = Impairment::parse(spec).unwrap_or_else(|e| panic!("impairment {spec}: {e}"));
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let relay =
        Relay::start(Ipv4Addr::LOCALHOST.into(), target, imp, imp, 7).expect("impairment relay");
    let status = Command::new("iptables")
        .args([
            "-w",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "-d",
            "127.0.0.1",
        ])
        .args(["--dport", &port.to_string(), "!", "--sport"])
        .arg(relay.back().port().to_string())
        .args(["-j", "DNAT", "--to-destination"])
        .arg(relay.front().to_string())
        .status()
        .expect("iptables");
    assert!(status.success(), "iptables DNAT rule");
    // The service may only talk to the relay: its checks straight to the page's own
    // candidates would otherwise set up conntrack entries that the page's datagrams then
    // match as replies, bypassing the DNAT rule.
    let status = Command::new("iptables")
        .args([
            "-w",
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "--sport",
            &port.to_string(),
        ])
        .args(["!", "--dport"])
        .arg(relay.back().port().to_string())
        .args(["-j", "DROP"])
        .status()
        .expect("iptables");
    assert!(status.success(), "iptables DROP rule");
    println!(
        "impairment {spec}: service port {port}, relay {} / {}",
        relay.front(),
        relay.back()
    );
    relay
}

// ------------------------------------------------------------------------ media (WHEP)

/// One media case: the stream's video codec, the signaling path (`whep`, or `http` for
/// `/api/offer?stream=` with an echo channel), viewers in the page, frames each must
/// decode, and an impairment between page and service.
#[derive(Clone, Copy)]
struct MediaCase {
    codec: &'static str,
    via: &'static str,
    viewers: u32,
    frames: u32,
    impair: Option<&'static str>,
    /// The video comes from ffmpeg as RTP (`rtp://`) instead of a file.
    rtp: bool,
    /// Video size and bitrate (kbit/s, 0: ffmpeg's default) of the file source.
    size: (u32, u32),
    kbps: u32,
    /// The H.264 file source is broken: a truncated NAL unit and garbage ones come before
    /// the whole file, on every loop.
    garbage: bool,
}

const WHEP: MediaCase = MediaCase {
    codec: "H264",
    via: "whep",
    viewers: 1,
    frames: 60,
    impair: None,
    rtp: false,
    size: (320, 240),
    kbps: 0,
    garbage: false,
};

#[test]
fn chromium_whep_h264() {
    run_whep_case("chromium_whep_h264", BrowserKind::Chromium, WHEP);
}

#[test]
fn chromium_whep_vp8() {
    let case = MediaCase {
        codec: "VP8",
        ..WHEP
    };
    run_whep_case("chromium_whep_vp8", BrowserKind::Chromium, case);
}

#[test]
fn firefox_whep_vp8() {
    let case = MediaCase {
        codec: "VP8",
        ..WHEP
    };
    run_whep_case("firefox_whep_vp8", BrowserKind::Firefox, case);
}

/// `POST /api/offer?stream=cam`: video, audio and an echo data channel on one transport.
#[test]
fn chromium_api_offer_stream_with_data_channel() {
    let case = MediaCase {
        via: "http",
        ..WHEP
    };
    run_whep_case(
        "chromium_api_offer_stream_with_data_channel",
        BrowserKind::Chromium,
        case,
    );
}

/// `/ws?stream=cam`: the page's offer over the WebSocket, media and an echo channel.
#[test]
fn chromium_ws_stream_with_data_channel() {
    let case = MediaCase { via: "ws", ..WHEP };
    run_whep_case(
        "chromium_ws_stream_with_data_channel",
        BrowserKind::Chromium,
        case,
    );
}

/// An `rtp://` source: ffmpeg sends H.264 RTP (its payload type rewritten to the
/// negotiated one, packets regrouped into frames and packetized again).
#[test]
fn chromium_whep_rtp_source() {
    let case = MediaCase { rtp: true, ..WHEP };
    run_whep_case("chromium_whep_rtp_source", BrowserKind::Chromium, case);
}

/// Ten viewers of one stream at once, each with its own SSRCs and SRTP context.
#[test]
fn chromium_whep_ten_viewers() {
    let case = MediaCase {
        viewers: 10,
        ..WHEP
    };
    run_whep_case("chromium_whep_ten_viewers", BrowserKind::Chromium, case);
}

/// The service's CPU and memory with N viewers (`BENCH_VIEWERS`, default 10) of one 1080p
/// ~8 Mbit/s H.264 stream for ~10 s: a benchmark, not a test:
/// `BENCH_VIEWERS=10 cargo test --release --test browser -- --ignored --nocapture
/// chromium_whep_viewers_benchmark` prints one `BENCH {json}` line.
#[test]
#[ignore = "benchmark: run explicitly"]
fn chromium_whep_viewers_benchmark() {
    let viewers = std::env::var("BENCH_VIEWERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let case = MediaCase {
        viewers,
        frames: 300,
        size: (1920, 1080),
        kbps: 8000,
        ..WHEP
    };
    run_whep_case(
        "chromium_whep_viewers_benchmark",
        BrowserKind::Chromium,
        case,
    );
}

/// A file source with a NAL unit cut short and garbage NAL units before the whole file:
/// the viewer goes on decoding past them, loop after loop (issue 16, bad input).
#[test]
fn chromium_whep_garbage_in_the_source() {
    let case = MediaCase {
        frames: 240,
        garbage: true,
        ..WHEP
    };
    run_whep_case(
        "chromium_whep_garbage_in_the_source",
        BrowserKind::Chromium,
        case,
    );
}

/// 2% loss both ways through the impairment relay: video keeps decoding, the browser's
/// NACKs are answered with retransmissions (RTX).
#[test]
fn chromium_whep_lossy() {
    let case = MediaCase {
        frames: 240,
        impair: Some("loss=2%"),
        ..WHEP
    };
    run_whep_case("chromium_whep_lossy", BrowserKind::Chromium, case);
}

fn run_whep_case(name: &str, kind: BrowserKind, case: MediaCase) {
    if std::env::var_os(NETNS_ENV).is_some() {
        whep_in_namespace(name, kind, case);
    } else {
        reexec_in_namespace(name);
    }
}

/// A file source made by ffmpeg (H.264 baseline without B-frames, or VP8 IVF) at `size`.
fn test_media(dir: &Path, codec: &str, size: &str, kbps: u32) -> PathBuf {
    media::video(
        dir,
        codec,
        &format!("testsrc2=size={size}:rate=30"),
        4,
        kbps,
    )
}

/// The page plays stream `cam` (a file source in `codec`) through WHEP: its report must
/// show frames and keyframes decoded at the source's size, in that codec.
fn whep_in_namespace(name: &str, kind: BrowserKind, case: MediaCase) {
    println!("{NETNS_MARKER} ({name})");
    let MediaCase {
        codec,
        via,
        viewers,
        frames,
        impair,
        rtp,
        size: (width, height),
        kbps,
        garbage,
    } = case;
    let single_port = impair.map(|_| {
        std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.local_addr())
            .expect("free UDP port")
            .port()
    });
    let _relay = impair
        .zip(single_port)
        .map(|(spec, port)| impair_port(spec, port));
    smolrtc::logging::init();
    let dir = media::temp_dir("whep");
    let (video, _sender) = if rtp {
        let port = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.local_addr())
            .expect("free UDP port")
            .port();
        let source = format!("testsrc=size={width}x{height}:rate=30");
        let ffmpeg = media::h264_rtp_sender(&source, 120, port, true)
            .process_group(0)
            .spawn()
            .expect("ffmpeg is missing: apt-get install ffmpeg (.ci/setup)");
        let guard = KillGroup(ffmpeg.id());
        (
            format!("rtp://127.0.0.1:{port}?codec=h264"),
            Some((ffmpeg, guard)),
        )
    } else {
        let mut file = test_media(&dir, codec, &format!("{width}x{height}"), kbps);
        if garbage {
            let good = std::fs::read(&file).expect("media");
            let cut = &good[..good.len() / 3 + 7];
            // Forbidden bit, a reserved type, an empty one, random bytes.
            let mut noise = vec![0u8, 0, 0, 1, 0xff, 0xff, 0, 0, 1, 0x1f, 1, 2, 0, 0, 1];
            noise.extend([0, 0, 1, 0x80 | fastrand::u8(..)]);
            noise.extend((0..4000).map(|_| fastrand::u8(1..)));
            file = dir.join("broken.h264");
            std::fs::write(&file, [cut, &noise, &good].concat()).expect("media");
        }
        (format!("file:{}", file.display()), None)
    };
    let runtime = Runtime::new().expect("smolrtc runtime");
    let mut config = ServiceConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        peer: Config::loopback("service"),
        single_port,
        ..Default::default()
    };
    // All the viewers come from the one page's address.
    config.max_sessions_per_address = config.max_sessions_per_address.max(viewers as usize);
    config.max_sessions = config.max_sessions.max(viewers as usize);
    smolrtc::service::StreamConfig::add_source(
        &mut config.streams,
        smolrtc::media::MediaKind::Video,
        "cam",
        &video,
    )
    .expect("stream");
    // With an audio track too: its samples must arrive.
    let audio = media::opus(&dir, 4);
    smolrtc::service::StreamConfig::add_source(
        &mut config.streams,
        smolrtc::media::MediaKind::Audio,
        "cam",
        &format!("file:{}", audio.display()),
    )
    .expect("audio");
    let service = Service::new(config).start(&runtime).expect("service start");
    let service = StopService(service);
    let addr = service.0.addr;
    // The codec must be known (H.264: its SPS, which gives the resolution) before an offer
    // is answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    let size = format!("\"resolution\":\"{width}x{height}\"");
    while !http_get(addr, "/api/streams")
        .map(|(_, b)| b.contains(&size))
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "{name}: the stream never went live"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!(
        "http://{addr}/?watch=cam&auto=1&via={via}&codec={codec}&count={viewers}&frames={frames}\
         &wait=60&report=/api/report"
    );
    println!("{name}: {kind:?} -> {url}");
    let rss_before = rss_kib();
    let cpu_before = cpu_ticks();
    let t0 = Instant::now();
    let mut browser = Browser::launch(kind, &url);
    let mut failures = Vec::new();
    let report = wait_report(&service.0, &mut browser, &mut failures);
    // The service's own cost while the viewers played (this process runs it; the browser
    // is another): CPU share of one core, and memory with the viewers still connected.
    let cpu = (cpu_ticks() - cpu_before) as f64 / ticks_per_s() / t0.elapsed().as_secs_f64();
    let rss = rss_kib();
    println!(
        "BENCH {}",
        serde_json::json!({
            "case": name, "viewers": viewers, "size": format!("{width}x{height}"), "kbps": kbps,
            "service_cpu_percent": (cpu * 1000.0).round() / 10.0,
            "service_rss_kib": rss, "rss_growth_kib": rss.saturating_sub(rss_before),
        })
    );
    if let Some(r) = &report {
        println!("{name}: report {r}");
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(what);
            }
        };
        check(r["ok"] == true, "report not ok".into());
        let all = r["streams"].as_object().cloned().unwrap_or_default();
        check(
            all.len() == viewers as usize,
            format!("{} viewers reported, expected {viewers}", all.len()),
        );
        for (key, s) in &all {
            let mut check = |ok: bool, what: String| check(ok, format!("{key}: {what}"));
            check(s["error"].is_null(), format!("error {}", s["error"]));
            check(
                s["framesDecoded"]
                    .as_u64()
                    .is_some_and(|n| n >= u64::from(frames)),
                format!("framesDecoded {}", s["framesDecoded"]),
            );
            check(
                s["keyFramesDecoded"].as_u64().is_some_and(|n| n >= 1),
                format!("keyFramesDecoded {}", s["keyFramesDecoded"]),
            );
            check(
                s["frameWidth"] == width && s["frameHeight"] == height,
                format!("frame size {}x{}", s["frameWidth"], s["frameHeight"]),
            );
            check(
                s["totalSamplesReceived"].as_u64().is_some_and(|n| n > 0),
                format!("audio samples {}", s["totalSamplesReceived"]),
            );
            if via != "whep" {
                check(
                    s["echo"] == true,
                    format!("echo on the data channel: {}", s["echo"]),
                );
            }
            if impair.is_some() {
                check(
                    s["nackCount"].as_u64().is_some_and(|n| n > 0)
                        && s["retransmittedPacketsReceived"]
                            .as_u64()
                            .is_some_and(|n| n > 0),
                    format!(
                        "under loss: {} NACKs sent, {} retransmissions received",
                        s["nackCount"], s["retransmittedPacketsReceived"]
                    ),
                );
            }
            check(
                s["codec"]
                    .as_str()
                    .is_some_and(|c| c.eq_ignore_ascii_case(&format!("video/{codec}"))),
                format!("codec {}", s["codec"]),
            );
        }
        // The page stopped watching (DELETE): the session goes, and so does the viewer.
        if let Err(last) = wait_sessions_empty(addr, FREED_TIMEOUT) {
            failures.push(format!("the WHEP session was not freed: {last}"));
        }
        let deadline = Instant::now() + FREED_TIMEOUT;
        loop {
            let streams = http_get(addr, "/api/streams")
                .map(|(_, b)| b)
                .unwrap_or_default();
            if streams.contains("\"viewers\":0") {
                break;
            }
            if Instant::now() > deadline {
                failures.push(format!("the viewer was not removed: {streams}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    } else if failures.is_empty() {
        failures.push(format!("no report from the page within {REPORT_TIMEOUT:?}"));
    }
    browser.stop();
    let _ = std::fs::remove_dir_all(&dir);
    if !failures.is_empty() {
        eprintln!(
            "---- {name}: {kind:?} output (last lines) ----\n{}",
            browser.log_tail(80)
        );
        panic!("{name}: {}", failures.join("; "));
    }
}

/// Outside the namespace: re-executes this one test inside a fresh one. Inside: runs it.
fn run_case(name: &str, kind: BrowserKind, mode: &str, offering: bool) {
    if std::env::var_os(NETNS_ENV).is_some() {
        in_namespace(name, kind, mode, offering);
    } else {
        reexec_in_namespace(name);
    }
}

// ------------------------------------------------------------------------ inside

fn in_namespace(name: &str, kind: BrowserKind, mode: &str, offering: bool) {
    println!("{NETNS_MARKER} ({name})");
    // /proc/net/dev lists this process's namespace (/sys/class/net would show the host's).
    let interfaces: Vec<String> = std::fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned()))
        .collect();
    assert_eq!(
        interfaces,
        ["lo"],
        "{name}: expected a namespace with only lo, found {interfaces:?}"
    );
    smolrtc::logging::init();

    let runtime = Runtime::new().expect("smolrtc runtime");
    let config = ServiceConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        peer: Config::loopback("service"),
        ..Default::default()
    };
    let service = Service::new(config).start(&runtime).expect("service start");
    let service = StopService(service);
    let addr = service.0.addr;
    let url = format!(
        "http://{addr}/?auto=1&mode={mode}&offering={}&echo={ECHO}&upload={UPLOAD_MIB}\
         &download={DOWNLOAD_MIB}&report=/api/report",
        u8::from(offering)
    );
    println!("{name}: {kind:?} -> {url}");

    let mut browser = Browser::launch(kind, &url);
    let started = Instant::now();
    let mut failures = Vec::new();
    let report = wait_report(&service.0, &mut browser, &mut failures);
    match &report {
        Some(r) => {
            println!(
                "{name}: report after {:.1} s: ok={} error={} steps={}",
                started.elapsed().as_secs_f64(),
                r["ok"],
                r["error"],
                r["steps"]
            );
            failures.extend(check_report(r, offering, mode));
        }
        None if failures.is_empty() => {
            failures.push(format!("no report from the page within {REPORT_TIMEOUT:?}"))
        }
        None => {}
    }
    // The page closed its side; the server must free the session while the browser lives
    // (killing the browser first would let ICE consent expiry hide a missed close).
    if report.is_some() {
        let t = Instant::now();
        match wait_sessions_empty(addr, FREED_TIMEOUT) {
            Ok(()) => println!(
                "{name}: server freed the session {:.1} s after the report",
                t.elapsed().as_secs_f64()
            ),
            Err(last) => failures.push(format!(
                "the server did not free the session within {FREED_TIMEOUT:?}: GET /api/sessions \
                 last said {last}"
            )),
        }
    }
    browser.stop();
    if !failures.is_empty() {
        let tail = browser.log_tail(80);
        eprintln!(
            "---- {name}: {kind:?} output (last lines of {}) ----\n{tail}",
            browser.log.display()
        );
        if let Some(lines) = report.as_ref().and_then(|r| r["log"].as_array()) {
            eprintln!("---- {name}: the page's log ----");
            for l in lines {
                eprintln!("page: {}", l.as_str().unwrap_or_default());
            }
        }
        drop(browser);
        panic!("{name}: {}", failures.join("; "));
    }
}

/// What the page's report must say; returns every failed check.
fn check_report(r: &serde_json::Value, offering: bool, mode: &str) -> Vec<String> {
    let steps = &r["steps"];
    let mut bad = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            bad.push(what);
        }
    };
    check(
        r["ok"] == true,
        format!("report not ok: error {}", r["error"]),
    );
    check(
        r["mode"] == mode && r["offering"] == offering,
        format!(
            "report is for mode {} offering {}",
            r["mode"], r["offering"]
        ),
    );
    check(
        steps["connected_ms"].is_number(),
        "never connected (no connected_ms)".into(),
    );
    check(
        steps["cat_noises_rx_bytes"] == 8192,
        format!(
            "cat-noises received {} bytes, expected the server's 8192",
            steps["cat_noises_rx_bytes"]
        ),
    );
    check(
        steps["dinosaur_open"] == true,
        "dinosaur-noises did not open".into(),
    );
    let in_band = if offering {
        "lion-noises"
    } else {
        "bear-noises"
    };
    let server_channels = steps["server_channels"].as_array();
    check(
        server_channels.is_some_and(|v| v.iter().any(|l| l == in_band)),
        format!(
            "the server's in-band {in_band} was not seen (server_channels {})",
            steps["server_channels"]
        ),
    );
    let echo = &steps["echo"];
    check(
        echo["all_matched"] == true && echo["count"] == ECHO,
        format!("echo: {echo}"),
    );
    let upload = &steps["upload"];
    check(
        upload["server_bytes"] == UPLOAD_MIB * MIB,
        format!("upload: {upload}"),
    );
    let download = &steps["download"];
    check(
        download["checked"] == true && download["bytes"] == DOWNLOAD_MIB * MIB,
        format!("download: {download}"),
    );
    if mode == "whip" {
        check(
            steps["whip_patch_errors"] == 0,
            format!("WHIP PATCH errors: {}", steps["whip_patch_errors"]),
        );
    }
    check(
        steps["closed"] == true,
        format!("closed: {}", steps["closed"]),
    );
    bad
}

/// Polls `GET /api/sessions` until it lists none; `Err` holds the last answer.
fn wait_sessions_empty(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http_get(addr, "/api/sessions") {
            Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(v) if v["sessions"].as_array().is_some_and(|s| s.is_empty()) => return Ok(()),
                _ => body,
            },
            Ok((status, body)) => format!("HTTP {status}: {body}"),
            Err(e) => format!("error: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A minimal HTTP/1.1 GET: status and body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad response: {text:?}"),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

// ------------------------------------------------------------------------ library tracks

/// The library's own track API: a `PeerConnection` with `add_track` (no service) answers a
/// Chromium page's recvonly offer, fed frame by frame with `TrackSender::write_frame` from
/// an ffmpeg-made H.264 file; the page's `getStats()` must show the frames decoded.
#[test]
fn chromium_add_track_write_frame() {
    if std::env::var_os(NETNS_ENV).is_none() {
        return reexec_in_namespace("chromium_add_track_write_frame");
    }
    println!("{NETNS_MARKER} (add_track)");
    smolrtc::logging::init();
    let dir = media::temp_dir("track");
    let frames = media::annexb_units(&test_media(&dir, "H264", "320x240", 0));
    let runtime = Runtime::new().expect("smolrtc runtime");
    let pc = smolrtc::PeerConnection::with_runtime(&runtime, Config::loopback("camera"))
        .expect("peer connection");
    let mut events = pc.events();
    let init = smolrtc::media::TrackInit::new(smolrtc::media::Codec::H264);
    let mut track = futures_lite::future::block_on(pc.add_track(init)).expect("add_track");
    let track_id = track.id();
    // A second video track is refused clearly.
    let again = futures_lite::future::block_on(pc.add_track(init));
    assert!(again.is_err(), "a second video track");

    // The "encoder": one access unit every 33 ms, looped, until the test ends.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let interval = Duration::from_millis(33);
            for f in frames.iter().cycle() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if track.write_frame(f, interval).is_err() {
                    break;
                }
                std::thread::sleep(interval);
            }
        })
    };

    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("page server");
    let addr = listener.local_addr().expect("addr");
    let mut browser = Browser::launch(BrowserKind::Chromium, &format!("http://{addr}/"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut report = None;
    listener.set_nonblocking(true).expect("nonblocking");
    while report.is_none() && Instant::now() < deadline {
        let Ok((mut s, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let Some((head, body)) = read_request(&mut s) else {
            continue;
        };
        let (status, kind, reply) = if head.starts_with("GET / ") {
            (200, "text/html", TRACK_PAGE.to_owned())
        } else if head.starts_with("POST /offer ") {
            let offer = smolrtc::Description {
                kind: smolrtc::SdpType::Offer,
                sdp: body,
            };
            let answer = futures_lite::future::block_on(async {
                pc.set_remote_description(offer).await?;
                let a = pc.create_answer().await?;
                pc.set_local_description(a).await?;
                while let Some(e) = events.next().await {
                    if matches!(e, smolrtc::Event::IceCandidate(None)) {
                        break;
                    }
                }
                Ok::<_, smolrtc::Error>(pc.local_description().await)
            });
            match answer {
                Ok(Some(a)) => (200, "application/sdp", a.sdp),
                other => (500, "text/plain", format!("{other:?}")),
            }
        } else if head.starts_with("POST /report ") {
            report = serde_json::from_str::<serde_json::Value>(&body).ok();
            (200, "text/plain", String::new())
        } else {
            (404, "text/plain", String::new())
        };
        let _ = write!(
            s,
            "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{reply}",
            reply.len()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = feeder.join();
    browser.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let r = report.unwrap_or_else(|| {
        panic!(
            "no report from the page within 60 s; Chromium said:\n{}",
            browser.log_tail(60)
        )
    });
    println!("add_track: report {r}");
    assert!(r["framesDecoded"].as_u64().is_some_and(|n| n >= 60), "{r}");
    assert!(
        r["keyFramesDecoded"].as_u64().is_some_and(|n| n >= 1),
        "{r}"
    );
    assert_eq!(
        (r["frameWidth"].as_u64(), r["frameHeight"].as_u64()),
        (Some(320), Some(240)),
        "{r}"
    );
    assert_eq!(r["codec"], "video/H264", "{r}");
    // The viewer's keyframe requests (its join, and any PLI) reach the application, whose
    // encoder could make a fresh keyframe.
    let causes: Vec<_> = std::iter::from_fn(|| events.try_next())
        .filter_map(|e| match e {
            smolrtc::Event::KeyframeRequest { track, cause } if track == track_id => Some(cause),
            _ => None,
        })
        .collect();
    assert!(
        causes.contains(&smolrtc::media::KeyframeCause::Join),
        "keyframe requests seen: {causes:?}"
    );
}

/// This process's user + system CPU time, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: fields 14 and 15 (utime, stime) are 12 and 13.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn ticks_per_s() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on Linux everywhere this runs.
    100.0
}

/// This process's resident memory, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One HTTP/1.1 request: its head and body (by Content-Length).
fn read_request(s: &mut TcpStream) -> Option<(String, String)> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((head, String::from_utf8_lossy(&body).into_owned()))
}

/// The page of `chromium_add_track_write_frame`: a recvonly offer to /offer, the answer
/// set, then getStats() until 60 frames decode; the figures posted to /report.
const TRACK_PAGE: &str = r#"<!doctype html><video id=v autoplay muted playsinline></video><script>
(async () => {
  try { (await navigator.mediaDevices.getUserMedia({ audio: true })).getTracks().forEach((t) => t.stop()); } catch (_) {}
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.ontrack = (e) => { document.getElementById('v').srcObject = new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { if (pc.iceGatheringState === 'complete') r(); pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); setTimeout(r, 5000); });
  const res = await fetch('/offer', { method: 'POST', body: pc.localDescription.sdp });
  await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  let out = {};
  for (let i = 0; i < 200; i++) {
    const stats = await pc.getStats();
    const codecs = new Map();
    stats.forEach((s) => { if (s.type === 'codec') codecs.set(s.id, s.mimeType); });
    stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') out = { framesDecoded: s.framesDecoded, keyFramesDecoded: s.keyFramesDecoded, frameWidth: s.frameWidth, frameHeight: s.frameHeight, codec: codecs.get(s.codecId) }; });
    if (out.framesDecoded >= 60) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  await fetch('/report', { method: 'POST', body: JSON.stringify(out) });
})();
</script>"#;

// ------------------------------------------------------------------------ via a broker

#[path = "fleet/broker.rs"]
mod broker;

/// The page's "via broker" mode (web/broker.js over web/mqtt.js): mosquitto with
/// deploy/mosquitto's configuration and its WebSocket listener; the device (`serve --mqtt
/// ws://.. --listen PORT`, in process) signals through it; Chromium loads the page from the
/// device, lists the devices from their retained statuses (dev2 offline, published here),
/// picks the online one, signals over MQTT-over-WebSocket (hello -> ice-servers, offer,
/// candidates, bye), echoes and transfers on data channels; the device frees the session
/// on the page's bye. Prints the session's traffic through the broker (`BROKER_SESSION`).
/// Then a wrong password, an offline device and an unknown one: each run ends with an
/// error that names the fault.
#[test]
fn chromium_via_broker() {
    const NAME: &str = "chromium_via_broker";
    if std::env::var_os(NETNS_ENV).is_none() {
        return reexec_in_namespace(NAME);
    }
    println!("{NETNS_MARKER} ({NAME})");
    smolrtc::logging::init();
    let b = broker::Broker::start("browser");
    // Another device of the fleet, offline: listed by the page, not picked.
    let (ok, err) = b.publish(
        broker::DEVICE2,
        broker::DEVICE2.0,
        "smolrtc/dev2/status",
        r#"{"online":false,"streams":[],"version":"0"}"#,
        true,
    );
    assert!(ok, "retained status of dev2: {err}");
    let runtime = Runtime::new().expect("smolrtc runtime");
    let service = StopService(
        Service::new(device_config(&b, "127.0.0.1:0"))
            .start(&runtime)
            .expect("service start"),
    );
    wait_device_online(&b);
    let addr = service.0.addr;
    let url = format!(
        "http://{addr}/?auto=1&mode=broker&{}&echo={ECHO}&upload=1&download=1&report=/api/report",
        page_broker_params(&b)
    );
    println!("{NAME}: Chromium -> {url}");
    let mut browser = Browser::launch(BrowserKind::Chromium, &url);
    let mut failures = Vec::new();
    let report = wait_report(&service.0, &mut browser, &mut failures);
    match &report {
        Some(r) => failures.extend(check_broker_report(r)),
        None if failures.is_empty() => failures.push("no report from the page".into()),
        None => {}
    }
    if report.is_some() {
        if let Err(last) = wait_sessions_empty(addr, FREED_TIMEOUT) {
            failures.push(format!("the device did not free the session: {last}"));
        }
    }
    browser.stop();
    // What a user gets wrong: the page says what, and ends its run.
    for (params, expected) in [
        (
            format!(
                "broker=ws://127.0.0.1:{}&user={}&password=wrong",
                b.ws,
                broker::BROWSER.0
            ),
            "connection refused",
        ),
        (
            format!("{}&device=dev2", page_broker_params(&b)),
            "device \"dev2\" is offline",
        ),
        (
            format!("{}&device=nowhere", page_broker_params(&b)),
            "no status from device \"nowhere\"",
        ),
    ] {
        let url = format!("http://{addr}/?auto=1&mode=broker&{params}&echo=1&report=/api/report");
        let mut page = Browser::launch(BrowserKind::Chromium, &url);
        let mut errs = Vec::new();
        match wait_report(&service.0, &mut page, &mut errs) {
            Some(r) if r["ok"] == false && r["error"].as_str().unwrap_or("").contains(expected) => {
                println!("{NAME}: {params}: the page said {}", r["error"]);
            }
            Some(r) => failures.push(format!(
                "{params}: expected {expected:?}, got {}",
                r["error"]
            )),
            None => failures.push(format!("{params}: no report {errs:?}")),
        }
        page.stop();
    }
    finish_broker_case(NAME, &browser, report.as_ref(), failures);
}

/// The device's service settings: MQTT over the broker's WebSocket listener as dev1.
fn device_config(b: &broker::Broker, listen: &str) -> ServiceConfig {
    device_config_at("127.0.0.1", b.ws, listen)
}

fn device_config_at(host: &str, ws: u16, listen: &str) -> ServiceConfig {
    let url = format!("ws://{}:{}@{host}:{ws}", broker::DEVICE.0, broker::DEVICE.1);
    let mqtt = smolrtc::mqtt::MqttConfig::new(smolrtc::mqtt::MqttUrl::parse(&url).unwrap());
    ServiceConfig {
        listen: listen.parse().unwrap(),
        peer: Config::loopback("dev1"),
        device_id: broker::DEVICE.0.into(),
        mqtt: Some(mqtt),
        ..Default::default()
    }
}

/// Waits (mosquitto_sub, bounded) for dev1's status to say online.
fn wait_device_online(b: &broker::Broker) {
    wait_device_online_at(b.tcp);
}

/// The same, for a broker listening on loopback port `tcp` of this thread's namespace.
fn wait_device_online_at(tcp: u16) {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &tcp.to_string()])
        .args(["-u", broker::BROWSER.0, "-P", broker::BROWSER.1])
        .args(["-i", "watcher", "-q", "1", "-t", "smolrtc/dev1/status"])
        .args(["-C", "1", "-W", "20"])
        .output()
        .expect("mosquitto_sub");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("\"online\":true"),
        "dev1 not online: {line:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The page's broker settings as query parameters (a browser user of deploy/mosquitto's ACL).
fn page_broker_params(b: &broker::Broker) -> String {
    format!(
        "broker=ws://127.0.0.1:{}&user={}&password={}",
        b.ws,
        broker::BROWSER.0,
        broker::BROWSER.1
    )
}

/// What a broker-mode report must say; returns every failed check.
fn check_broker_report(r: &serde_json::Value) -> Vec<String> {
    let steps = &r["steps"];
    let b = &steps["broker"];
    let mut bad = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            bad.push(what);
        }
    };
    check(r["ok"] == true, format!("report not ok: {}", r["error"]));
    check(r["mode"] == "broker", format!("mode {}", r["mode"]));
    check(
        b["device"] == "dev1",
        format!("picked device {}", b["device"]),
    );
    let devices = b["devices"].as_array().cloned().unwrap_or_default();
    let listed = |id: &str, online: bool| {
        devices
            .iter()
            .any(|d| d["id"] == id && d["online"] == online)
    };
    check(
        listed("dev1", true) && listed("dev2", false),
        format!("devices listed: {}", b["devices"]),
    );
    // hello, the offer, the page's candidates (and their end), bye.
    check(
        b["messages"]["sent"].as_u64().unwrap_or(0) >= 4,
        format!("messages: {}", b["messages"]),
    );
    // ice-servers, the answer, at least one candidate of the device's and its end.
    check(
        b["messages"]["received"].as_u64().unwrap_or(0) >= 4,
        format!("messages: {}", b["messages"]),
    );
    check(
        steps["dinosaur_open"] == true && steps["cat_noises_rx_bytes"] == 8192,
        format!("rawrtc channels: {steps}"),
    );
    check(
        steps["server_channels"]
            .as_array()
            .is_some_and(|v| v.iter().any(|l| l == "lion-noises")),
        format!("server channels {}", steps["server_channels"]),
    );
    let echo = &steps["echo"];
    check(
        echo["all_matched"] == true && echo["count"] == ECHO,
        format!("echo: {echo}"),
    );
    check(
        steps["upload"]["server_bytes"] == MIB && steps["download"]["checked"] == true,
        format!("transfers: {} / {}", steps["upload"], steps["download"]),
    );
    check(
        steps["closed"] == true,
        format!("closed: {}", steps["closed"]),
    );
    bad
}

/// Prints the session's broker traffic; panics with the page's log on failures.
fn finish_broker_case(
    name: &str,
    browser: &Browser,
    report: Option<&serde_json::Value>,
    failures: Vec<String>,
) {
    if let Some(r) = report {
        let mut b = r["steps"]["broker"].clone();
        let listed = b["devices"].as_array().map_or(0, |d| d.len());
        b["devices"] = listed.into();
        println!("BROKER_SESSION {b}");
    }
    if !failures.is_empty() {
        eprintln!("---- {name}: browser output ----\n{}", browser.log_tail(80));
        if let Some(lines) = report.and_then(|r| r["log"].as_array()) {
            for l in lines {
                eprintln!("page: {}", l.as_str().unwrap_or_default());
            }
        }
        panic!("{name}: {}", failures.join("; "));
    }
}

/// How many devices the fleet case puts on the broker (one real, the rest statuses only).
const FLEET_DEVICES: usize = 100;

/// The fleet as a user meets it: the device runs `smolrtc serve --mqtt ws://.. --listen
/// none` (no HTTP at all), the page is opened from `file://` (web/ as any static copy), and
/// the broker holds 100 devices' retained statuses (99 simulated, every other one offline).
/// The page lists all 100, picks the first online one by name (dev1, the real one), echoes
/// and closes; it prints its report on the console (nowhere to post it).
#[test]
fn chromium_via_broker_from_file_among_100_devices() {
    const NAME: &str = "chromium_via_broker_from_file_among_100_devices";
    if std::env::var_os(NETNS_ENV).is_none() {
        return reexec_in_namespace(NAME);
    }
    println!("{NETNS_MARKER} ({NAME})");
    let b = broker::Broker::start("browser-fleet");
    let sims: Vec<(String, String)> = (1..FLEET_DEVICES)
        .map(|i| (format!("sim{i:03}"), format!("sim{i:03}-pass")))
        .collect();
    b.add_users(&sims);
    for (i, (u, p)) in sims.iter().enumerate() {
        let status = format!(
            r#"{{"online":{},"streams":["cam"],"version":"0"}}"#,
            i % 2 == 0
        );
        let (ok, err) = b.publish((u, p), u, &format!("smolrtc/{u}/status"), &status, true);
        assert!(ok, "status of {u}: {err}");
    }
    let pass = b.dir.join("dev1.pass");
    std::fs::write(&pass, format!("{}\n", broker::DEVICE.1)).unwrap();
    let mut device = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
        .args(["serve", "--listen", "none", "--loopback"])
        .args(["--ice-address", "127.0.0.1", "--device-id", "dev1"])
        .arg("--mqtt-password-file")
        .arg(&pass)
        .arg("--mqtt")
        .arg(format!("ws://{}@127.0.0.1:{}", broker::DEVICE.0, b.ws))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("smolrtc serve");
    let _stop = KillOnDrop(device.id());
    wait_device_online(&b);
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/index.html");
    let url = format!(
        "file://{}?auto=1&mode=broker&{}&echo={ECHO}",
        page.display(),
        page_broker_params(&b)
    );
    println!("{NAME}: Chromium -> {url}");
    let mut browser = Browser::launch(BrowserKind::Chromium, &url);
    let report = console_report(&mut browser);
    let mut failures = Vec::new();
    match &report {
        None => failures.push("no SMOLRTC_REPORT line on the page's console".into()),
        Some(r) => {
            let steps = &r["steps"];
            let b = &steps["broker"];
            if r["ok"] != true {
                failures.push(format!("report not ok: {}", r["error"]));
            }
            let devices = b["devices"].as_array().map_or(0, |d| d.len());
            if devices != FLEET_DEVICES {
                failures.push(format!("the page listed {devices} devices"));
            }
            if b["device"] != "dev1" {
                failures.push(format!("picked {}", b["device"]));
            }
            if steps["echo"]["all_matched"] != true || steps["echo"]["count"] != ECHO {
                failures.push(format!("echo: {}", steps["echo"]));
            }
            if steps["closed"] != true {
                failures.push("not closed".into());
            }
        }
    }
    browser.stop();
    // The device is still up after the session, and stops cleanly.
    match device.try_wait() {
        Ok(None) => {
            unsafe { libc::kill(device.id() as i32, libc::SIGTERM) };
            let st = device.wait().expect("wait");
            if !st.success() {
                failures.push(format!("the device exited with {st} on SIGTERM"));
            }
        }
        other => failures.push(format!("the device died during the session: {other:?}")),
    }
    finish_broker_case(NAME, &browser, report.as_ref(), failures);
}

/// The report a page printed on its console (`SMOLRTC_REPORT {..}`), waited for (bounded).
fn console_report(browser: &mut Browser) -> Option<serde_json::Value> {
    let deadline = Instant::now() + REPORT_TIMEOUT;
    loop {
        let log = std::fs::read_to_string(&browser.log).unwrap_or_default();
        // Chromium writes `[..:CONSOLE(line)] "TEXT", source: URL (line)`.
        if let Some(line) = log.lines().find_map(|l| l.split("SMOLRTC_REPORT ").nth(1)) {
            let json = line
                .split("\", source")
                .next()
                .unwrap_or(line)
                .trim_end_matches('"');
            return serde_json::from_str(json).ok();
        }
        if Instant::now() > deadline || browser.exited().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGKILLs a child if the test panics before it stopped and reaped the child itself.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

// ------------------------------------------------------------------------ via a broker, NATs

#[path = "common/netns.rs"]
mod netns;

const NAT_TURN_SECRET: &str = "fleet-nat-secret";

/// The issue's fleet picture in the network namespaces of tests/turn.rs: the device
/// (in-process service) behind NAT B, Chromium behind NAT A opening the page from file://,
/// mosquitto on the un-NATed host both reach, coturn with `use-auth-secret`. The device
/// hands the page its STUN server and TURN REST credentials in `ice-servers`. First run:
/// directly, the page's selected pair reaches the device at NAT B's public address, no
/// relay. Second run with `relay=1` (`iceTransportPolicy: "relay"`): the page's side of the
/// pair is coturn's relay address, allocated with the minted credentials.
#[test]
fn chromium_behind_nat_via_broker_direct_and_relay() {
    const NAME: &str = "chromium_behind_nat_via_broker_direct_and_relay";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(topo) = netns::Topology::new() else {
        return;
    };
    smolrtc::logging::init();
    let coturn = netns::Coturn::start(
        topo.pub_ns(),
        netns::CoturnOpts {
            tls: false,
            extra: vec![
                "use-auth-secret".into(),
                format!("static-auth-secret={NAT_TURN_SECRET}"),
            ],
            ..Default::default()
        },
    );
    let b = netns::in_ns(topo.host_p(), || {
        broker::Broker::start_on("browser-nat", "0.0.0.0")
    });
    let (broker_ip, ws, tcp) = (topo.host_p_ip().to_string(), b.ws, b.tcp);
    let turn = coturn.udp_addr();
    let (_rt, service) = netns::in_ns(topo.host_b(), move || {
        let rt = Runtime::new().expect("smolrtc runtime");
        let mut config = device_config_at(&broker_ip, ws, "127.0.0.1:0");
        config.peer = Config {
            name: "dev1".into(),
            ..Default::default()
        };
        config.peer.ice.servers = vec![smolrtc::IceServer::parse(&format!("stun:{turn}")).unwrap()];
        config.turn_rest = Some(
            smolrtc::turn_rest::TurnRest::new(
                vec![format!("turn:{turn}?transport=udp")],
                NAT_TURN_SECRET.as_bytes(),
                Duration::from_secs(3600),
            )
            .unwrap(),
        );
        let h = Service::new(config).start(&rt).expect("service start");
        (rt, StopService(h))
    });
    netns::in_ns(topo.host_p(), move || wait_device_online_at(tcp));
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/index.html");
    let mut failures = Vec::new();
    for relay in [false, true] {
        let url = format!(
            "file://{}?auto=1&mode=broker&broker=ws://{}:{ws}&user={}&password={}&echo={ECHO}\
             &upload=1&download=1&relay={}&connect_timeout=30",
            page.display(),
            topo.host_p_ip(),
            broker::BROWSER.0,
            broker::BROWSER.1,
            u8::from(relay)
        );
        println!("{NAME}: Chromium behind NAT A -> {url}");
        let mut browser = netns::in_ns(topo.host_a(), move || {
            Browser::launch(BrowserKind::Chromium, &url)
        });
        let report = console_report(&mut browser);
        browser.stop();
        let Some(r) = report else {
            failures.push(format!("relay={relay}: no report"));
            finish_broker_case(NAME, &browser, None, failures);
            return;
        };
        let steps = &r["steps"];
        let pair = &steps["selected_pair"];
        println!(
            "{NAME}: relay={relay}: selected pair {pair}, succeeded {}",
            steps["succeeded_pairs"]
        );
        let mut traffic = steps["broker"].clone();
        traffic["devices"] = traffic["devices"].as_array().map_or(0, |d| d.len()).into();
        println!("BROKER_SESSION relay={relay} {traffic}");
        let mut bad = Vec::new();
        if r["ok"] != true {
            bad.push(format!("report not ok: {}", r["error"]));
        }
        if steps["echo"]["all_matched"] != true
            || steps["upload"]["server_bytes"] != MIB
            || steps["download"]["checked"] != true
        {
            bad.push(format!("data: {steps}"));
        }
        // STUN and TURN from the device's ice-servers reply.
        if steps["broker"]["ice_servers"] != 2 {
            bad.push(format!("ice servers: {}", steps["broker"]["ice_servers"]));
        }
        let local = &pair["local"];
        if relay {
            if local["type"] != "relay" || local["address"] != topo.turn_addr().to_string() {
                bad.push(format!("relay=1 but the page's side is {local}"));
            }
        } else {
            // Directly: a pair with no relay on either side, to NAT B's public address, passed
            // its checks. Chromium may keep the relay pair that worked first for a while (it
            // did under CI load), so the selected pair alone is not the test.
            let nat_b = topo.nat_b_public().to_string();
            let direct = |p: &serde_json::Value| {
                p["local"]["type"] != "relay"
                    && p["remote"]["type"] != "relay"
                    && p["remote"]["address"] == nat_b.as_str()
            };
            let succeeded = steps["succeeded_pairs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !direct(pair) && !succeeded.iter().any(direct) {
                bad.push(format!(
                    "no direct pair to NAT B's public address succeeded: selected {pair}, \
                     succeeded {}",
                    steps["succeeded_pairs"]
                ));
            }
        }
        if !bad.is_empty() {
            failures.extend(bad.into_iter().map(|f| format!("relay={relay}: {f}")));
            finish_broker_case(NAME, &browser, Some(&r), failures);
            return;
        }
    }
    assert!(
        coturn.log_count("ALLOCATE processed, success") >= 1,
        "{}",
        coturn.log_tail(30)
    );
    drop(service);
    drop(b);
}
