//! `serve --publish NAME=URL` (issue 22): one `smolrtc serve` pushes a stream over WHIP to a
//! second `smolrtc serve`'s `/whip/NAME` ingest (standing in for an SFU), both real
//! processes of the built binary on 127.0.0.1: the file the receiver's sink writes is
//! checked with ffprobe; the receiver killed and restarted mid-stream is published to
//! again; a 401 is logged once per backoff step; an `https://` endpoint is verified
//! (refused without `--publish-ca`, published to with it). Needs ffmpeg (`.ci/setup`).

#[path = "common/forward.rs"]
#[allow(dead_code)]
mod forward;
#[path = "common/http.rs"]
mod http;
#[path = "common/media.rs"]
mod media;

use http::request;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every wait is bounded by this, so a broken publisher fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

/// A `smolrtc serve` process; its stderr goes to `log`. Killed when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Serve {
    /// Starts `serve` on `port` (0: a free one) with ICE on 127.0.0.1 and `args`; returns
    /// once it answers HTTP (or HTTPS: `tls`).
    fn start(dir: &Path, tag: &str, port: u16, tls: bool, args: &[&str]) -> Serve {
        let port = if port == 0 { free_port() } else { port };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = dir.join(format!("{tag}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--ice-address", "127.0.0.1", "--no-rawrtc-flow"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("smolrtc serve");
        let mut s = Serve { child, addr, log };
        let until = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("serve {tag} exited ({status}): {}", s.log());
            }
            if s.log().contains("listening on")
                && (tls || std::net::TcpStream::connect(addr).is_ok())
            {
                break;
            }
            assert!(
                Instant::now() < until,
                "serve {tag} did not start: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let r = request(self.addr, "GET", path, None, b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()
    }

    fn metrics(&self) -> String {
        request(self.addr, "GET", "/metrics", None, b"").text()
    }

    /// SIGTERM, then waits for the exit (the clean shutdown: DELETE sent).
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + PATIENCE;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < until, "serve did not stop: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smolrtc-publish-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 320x240 H.264 camera stand-in (looped by the `file:` source).
fn source() -> PathBuf {
    media::video(
        &media::temp_dir("publish-media"),
        "H264",
        "testsrc=size=320x240:rate=30",
        4,
        0,
    )
}

/// Frames sink `name` of `serve` wrote so far.
fn sink_frames(serve: &Serve, name: &str) -> u64 {
    let v = serve.get("/api/sinks");
    v["sinks"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .and_then(|s| s["frames"].as_u64())
        .unwrap_or(0)
}

/// Waits until `f` holds, or fails with `what` and the logs.
fn wait_for(what: &str, logs: &[&Serve], mut f: impl FnMut() -> bool) {
    let until = Instant::now() + PATIENCE;
    while !f() {
        if Instant::now() > until {
            let logs: Vec<String> = logs.iter().map(|s| s.log()).collect();
            panic!(
                "{what}: not within {PATIENCE:?}\n{}",
                logs.join("\n-----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The stream's `publish` object in `/api/streams`.
fn publish_state(serve: &Serve, name: &str) -> serde_json::Value {
    let v = serve.get("/api/streams");
    v["streams"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .map(|s| s["publish"].clone())
        .unwrap_or_default()
}

/// Video files in `dir`.
fn recordings(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "h264"))
        .collect();
    v.sort();
    v
}

/// Every recording in `dir` decodes as the source: H.264 at 320x240, at least `frames`
/// frames in all.
fn check_recordings(dir: &Path, frames: u64) {
    let files = recordings(dir);
    assert!(!files.is_empty(), "no recording in {}", dir.display());
    let mut total = 0;
    for f in &files {
        let p = media::ffprobe(f);
        let (codec, w, h, n) = (p.codec, p.width, p.height, p.frames);
        println!("{}: {codec} {w}x{h}, {n} frames", f.display());
        assert_eq!(
            (codec.as_str(), w, h),
            ("h264", 320, 240),
            "{}",
            f.display()
        );
        total += n;
    }
    assert!(
        total >= frames,
        "{total} frames in {files:?}, expected {frames}"
    );
}

#[test]
fn publishes_to_a_second_serve_and_reconnects_after_it_restarts() {
    let dir = temp_dir("restart");
    let (first, second) = (dir.join("first"), dir.join("second"));
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let src = source();
    let sink = |d: &Path| format!("cam=file:{}/cam.h264", d.display());
    let port = free_port();
    let receiver = Serve::start(&dir, "receiver", port, false, &["--sink", &sink(&first)]);
    let url = format!("http://127.0.0.1:{port}/whip/cam");
    let publisher = Serve::start(
        &dir,
        "publisher",
        0,
        false,
        &[
            "--video",
            &format!("cam=file:{}", src.display()),
            "--publish",
            &format!("cam={url}"),
        ],
    );
    wait_for(
        "60 frames at the receiver",
        &[&publisher, &receiver],
        || sink_frames(&receiver, "cam") >= 60,
    );
    let p = publish_state(&publisher, "cam");
    assert_eq!(p["state"], "connected", "{p}");
    assert_eq!(p["url"], url.as_str());
    assert!(
        p["resource"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{url}/")),
        "{p}"
    );
    let m = publisher.metrics();
    assert!(
        m.contains("smolrtc_publish_state{stream=\"cam\",state=\"connected\"} 1"),
        "{m}"
    );
    // The publish leg is one more viewer of the stream, with a viewer's RTCP: the
    // receiver's reports are read (round-trip times from them).
    assert!(m.contains("smolrtc_viewers{stream=\"cam\"} 1"), "{m}");
    let rtts = m
        .lines()
        .find_map(|l| l.strip_prefix("smolrtc_rtt_seconds_count "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(rtts.is_some_and(|n| n >= 1), "{m}");

    // The endpoint dies without a word (SIGKILL: no close_notify, no ABORT)...
    drop(receiver);
    wait_for("the publisher notices", &[&publisher], || {
        publish_state(&publisher, "cam")["state"] != "connected"
    });
    // ...and comes back on the same port: the publisher reconnects, frames flow again.
    let receiver = Serve::start(&dir, "receiver2", port, false, &["--sink", &sink(&second)]);
    wait_for(
        "60 frames after the restart",
        &[&publisher, &receiver],
        || sink_frames(&receiver, "cam") >= 60,
    );
    let p = publish_state(&publisher, "cam");
    assert_eq!(p["state"], "connected", "{p}");
    assert!(p["reconnects"].as_u64().unwrap() >= 1, "{p}");
    let m = publisher.metrics();
    assert!(
        !m.contains("smolrtc_publish_reconnects_total{stream=\"cam\"} 0"),
        "{m}"
    );
    let log = publisher.log();
    assert!(log.contains("publish cam: the connection to"), "{log}");

    // A clean stop DELETEs the resource: the receiver's session closes.
    let log = publisher.stop();
    assert!(log.contains("publish cam: DELETE"), "{log}");
    wait_for("the receiver's session closed", &[&receiver], || {
        receiver.log().contains("DELETE: closed")
    });
    let log = receiver.stop();
    assert!(log.contains("sink cam"), "{log}");
    check_recordings(&first, 60);
    check_recordings(&second, 60);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refusing_endpoint_is_logged_once_per_backoff_step() {
    let dir = temp_dir("401");
    let (good, wrong) = (dir.join("good.token"), dir.join("wrong.token"));
    std::fs::write(&good, "the-right-token-0123456789\n").unwrap();
    std::fs::write(&wrong, "a-wrong-token-0123456789\n").unwrap();
    let src = source();
    let receiver = Serve::start(
        &dir,
        "receiver",
        0,
        false,
        &[
            "--token-file",
            good.to_str().unwrap(),
            "--sink",
            &format!("cam=file:{}/cam.h264", dir.display()),
        ],
    );
    let publisher = Serve::start(
        &dir,
        "publisher",
        0,
        false,
        &[
            "--video",
            &format!("cam=file:{}", src.display()),
            "--publish",
            &format!("cam=http://{}/whip/cam", receiver.addr),
            "--publish-token-file",
            wrong.to_str().unwrap(),
        ],
    );
    let refusals = |log: &str| {
        log.lines()
            .filter(|l| l.contains("publish cam: POST") && l.contains("401"))
            .count()
    };
    wait_for("the first refusal", &[&publisher], || {
        refusals(&publisher.log()) >= 1
    });
    let first = Instant::now();
    // A few backoff steps.
    let window = Duration::from_secs(8);
    std::thread::sleep(window);
    let log = publisher.log();
    let n = refusals(&log);
    // Attempts in the window after the first: one per step whose start falls in it.
    let mut at = Duration::ZERO;
    let mut bound = 1;
    for step in smolrtc::service::PUBLISH_BACKOFF {
        at += step;
        if at <= first.elapsed() + Duration::from_secs(1) {
            bound += 1;
        }
    }
    println!(
        "{n} refusals logged in {:?} (at most {bound})",
        first.elapsed()
    );
    assert!(n >= 2, "retried: {log}");
    assert!(n <= bound, "{n} lines, the backoff allows {bound}: {log}");
    // The line says the status and the endpoint's body; the token is never logged.
    let line = log.lines().find(|l| l.contains("401")).unwrap();
    assert!(
        line.contains("Unauthorized") && line.contains("error"),
        "{line}"
    );
    assert!(!log.contains("a-wrong-token"), "{log}");
    let p = publish_state(&publisher, "cam");
    assert!(p["last_error"].as_str().unwrap().contains("401"), "{p}");
    assert_ne!(p["state"], "connected", "{p}");
    // Refused before any session: nothing opened at the receiver.
    assert!(
        !receiver.log().contains("session opened"),
        "{}",
        receiver.log()
    );
    drop(publisher);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_https_endpoint_is_verified() {
    let dir = temp_dir("https");
    let out = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
        .args(["cert", "--out", dir.to_str().unwrap(), "--ip", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let rec = dir.join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let src = source();
    let receiver = Serve::start(
        &dir,
        "receiver",
        0,
        true,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--sink",
            &format!("cam=file:{}/cam.h264", rec.display()),
        ],
    );
    let url = format!("cam=https://{}/whip/cam", receiver.addr);
    let video = format!("cam=file:{}", src.display());
    // The system's roots do not know the self-signed certificate: refused.
    let untrusting = Serve::start(
        &dir,
        "untrusting",
        0,
        false,
        &["--video", &video, "--publish", &url],
    );
    wait_for("a certificate error", &[&untrusting], || {
        untrusting.log().contains("publish cam: POST")
    });
    let log = untrusting.log();
    let line = log
        .lines()
        .find(|l| l.contains("publish cam: POST"))
        .unwrap();
    assert!(
        line.contains("TLS") && line.contains("certificate"),
        "{line}"
    );
    drop(untrusting);
    // With it as --publish-ca: published.
    let trusting = Serve::start(
        &dir,
        "trusting",
        0,
        false,
        &[
            "--video",
            &video,
            "--publish",
            &url,
            "--publish-ca",
            cert.to_str().unwrap(),
        ],
    );
    let frames = || {
        let r = Command::new("curl")
            .args(["-s", "--cacert", cert.to_str().unwrap()])
            .arg(format!("https://{}/api/sinks", receiver.addr))
            .output()
            .expect("curl");
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap_or_default();
        v["sinks"][0]["frames"].as_u64().unwrap_or(0)
    };
    wait_for("30 frames over https", &[&trusting, &receiver], || {
        frames() >= 30
    });
    assert_eq!(publish_state(&trusting, "cam")["state"], "connected");
    let _ = trusting.stop();
    let _ = receiver.stop();
    check_recordings(&rec, 30);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A WHIP endpoint in front of `receiver` (a thread): POSTs are passed to the receiver
/// and answered with its reply (its `Location` made absolute, so PATCH and DELETE go to
/// the receiver itself), the answer edited by `edit`. With `link`, replies carry a `Link`
/// header naming that STUN server and the first POST is answered `201` with an answer
/// that is no SDP.
fn endpoint(
    receiver: SocketAddr,
    link: Option<SocketAddr>,
    mut edit: impl FnMut(&mut String) + Send + 'static,
) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let (head, body) = loop {
                let k = conn.read(&mut buf).unwrap_or(0);
                if k == 0 {
                    break (String::new(), Vec::new());
                }
                raw.extend_from_slice(&buf[..k]);
                let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + len {
                    break (head, raw[end + 4..end + 4 + len].to_vec());
                }
            };
            let link_header = link
                .map(|l| format!("Link: <stun:{l}>; rel=\"ice-server\"\r\n"))
                .unwrap_or_default();
            let reply = if n == 0 && link.is_some() {
                format!(
                    "HTTP/1.1 201 Created\r\nLocation: /whip/cam/none\r\n{link_header}Content-Type: application/sdp\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot sdp\r\n"
                )
            } else if head.starts_with("post") {
                let r = request(
                    receiver,
                    "POST",
                    "/whip/cam",
                    Some("application/sdp"),
                    &body,
                );
                let location = r
                    .header("location")
                    .map(|l| format!("Location: http://{receiver}{l}\r\n"))
                    .unwrap_or_default();
                let mut text = r.text();
                if r.status == 201 {
                    edit(&mut text);
                }
                format!(
                    "HTTP/1.1 {} X\r\n{location}{link_header}Content-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    r.status,
                    text.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    addr
}

#[test]
fn ice_servers_from_link_headers_are_used() {
    let dir = temp_dir("link");
    let src = source();
    // The STUN server the endpoint names: it only notes the Binding requests it gets.
    let stun = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    stun.set_read_timeout(Some(PATIENCE)).unwrap();
    let receiver = Serve::start(
        &dir,
        "receiver",
        0,
        false,
        &["--sink", &format!("cam=file:{}/cam.h264", dir.display())],
    );
    let endpoint = endpoint(receiver.addr, Some(stun.local_addr().unwrap()), |_| {});
    let publisher = Serve::start(
        &dir,
        "publisher",
        0,
        false,
        &[
            "--video",
            &format!("cam=file:{}", src.display()),
            "--publish",
            &format!("cam=http://{endpoint}/whip/cam"),
            "--gather-timeout",
            "1",
        ],
    );
    // The first answer is refused (not SDP); the next connection gathers from the
    // server the Link header named: a STUN Binding request (magic cookie) arrives.
    let mut buf = [0u8; 1500];
    let (n, _) = stun
        .recv_from(&mut buf)
        .expect("a STUN request from the publisher");
    assert!(
        n >= 20 && buf[4..8] == [0x21, 0x12, 0xa4, 0x42],
        "{:?}",
        &buf[..n]
    );
    assert_eq!(&buf[..2], &[0, 1], "a Binding request");
    wait_for(
        "frames through the second connection",
        &[&publisher, &receiver],
        || sink_frames(&receiver, "cam") >= 30,
    );
    let log = publisher.log();
    assert!(log.contains("names 1 ICE servers (Link)"), "{log}");
    assert!(log.contains("the endpoint's answer"), "{log}");
    drop(publisher);
    let _ = std::fs::remove_dir_all(&dir);
}

/// aiortc as the WHIP endpoint (`tests/fixtures/aiortc_whip.py`, the benches' venv;
/// skipped without it): it answers the publisher's offer, decodes 60 frames at the
/// source's size, and gets the DELETE when the publisher stops.
#[test]
fn aiortc_receives_a_published_stream() {
    use std::io::{BufRead, BufReader};
    let cache = std::env::var("SMOLRTC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/smolrtc"));
    let py = cache.join("venv-aiortc/bin/python");
    if !py.exists() {
        eprintln!("*** SKIPPED: no aiortc venv at {py:?} (benches/setup-aiortc makes it) ***");
        return;
    }
    let dir = temp_dir("aiortc");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aiortc_whip.py");
    let mut aiortc = Command::new(py)
        .arg(script)
        .args(["--frames", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Its lines, read on a thread so that every wait here is bounded.
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    let out = aiortc.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&l).unwrap_or_default());
        }
    });
    let next = |what: &str, logs: &[&Serve]| {
        lines.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            let logs: Vec<String> = logs.iter().map(|s| s.log()).collect();
            panic!("aiortc: no {what} line\n{}", logs.join("\n-----\n"))
        })
    };
    let port = next("port", &[])["port"].as_u64().unwrap();
    let src = source();
    let publisher = Serve::start(
        &dir,
        "publisher",
        0,
        false,
        &[
            "--video",
            &format!("cam=file:{}", src.display()),
            "--publish",
            &format!("cam=http://127.0.0.1:{port}/whip/cam"),
        ],
    );
    let decoded = next("decoded", &[&publisher]);
    println!("aiortc: {decoded}");
    assert_eq!(decoded["decoded"], 60, "{decoded}");
    assert_eq!(
        (decoded["width"].as_u64(), decoded["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(decoded["codec"], "H264", "{decoded}");
    assert_eq!(publish_state(&publisher, "cam")["state"], "connected");
    let log = publisher.stop();
    let deleted = next("deleted", &[]);
    assert_eq!(deleted["deleted"], true, "{deleted}\n{log}");
    let _ = aiortc.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The publish leg's RTCP is a viewer's: through a forwarder that drops every 50th SRTP
/// packet toward the receiver, the receiver's NACKs reach the publisher (counted in its
/// `/metrics`) and are answered: the receiver recovers packets by RTX and records.
#[test]
fn a_lossy_leg_is_repaired_by_nack() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let dir = temp_dir("lossy");
    let src = source();
    let receiver = Serve::start(
        &dir,
        "receiver",
        0,
        false,
        &["--sink", &format!("cam=file:{}/cam.h264", dir.display())],
    );
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
    let endpoint = endpoint(receiver.addr, None, move |answer| {
        let counter = counter.clone();
        let mut n = 0u64;
        forward::route_candidate(answer, |target| {
            forward::Forwarder::start(
                target,
                move |d| {
                    // SRTP (not SRTCP) toward the receiver: every 50th dropped.
                    let rtp = matches!(d.first(), Some(128..=191))
                        && !matches!(d.get(1), Some(192..=223));
                    if rtp {
                        n += 1;
                        if n.is_multiple_of(50) {
                            counter.fetch_add(1, Ordering::Relaxed);
                            return false;
                        }
                    }
                    true
                },
                |_| {},
            )
            .front()
        })
    });
    let publisher = Serve::start(
        &dir,
        "publisher",
        0,
        false,
        &[
            "--video",
            &format!("cam=file:{}", src.display()),
            "--publish",
            &format!("cam=http://{endpoint}/whip/cam"),
        ],
    );
    let received = || {
        let v = receiver.get("/api/sinks");
        v["sinks"][0]["sessions"][0]["tracks"][0]["received"].clone()
    };
    wait_for(
        "packets recovered at the receiver",
        &[&publisher, &receiver],
        || {
            received()["recovered"].as_u64().unwrap_or(0) >= 3
                && sink_frames(&receiver, "cam") >= 90
        },
    );
    let r = received();
    println!("dropped {}, receiver: {r}", dropped.load(Ordering::Relaxed));
    assert!(dropped.load(Ordering::Relaxed) >= 3);
    let m = publisher.metrics();
    let nacks = m
        .lines()
        .find_map(|l| l.strip_prefix("smolrtc_nack_received_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(nacks.is_some_and(|n| n >= 1), "{m}");
    let _ = publisher.stop();
    let _ = receiver.stop();
    check_recordings(&dir, 90);
    let _ = std::fs::remove_dir_all(&dir);
}
