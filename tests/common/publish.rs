//! The `serve --publish` fixtures (tests/publish.rs, tests/publish_restart.rs): `smolrtc
//! serve` processes of the built binary on 127.0.0.1, their sinks' frames and publish
//! state, the recordings checked with ffprobe, and a WHIP endpoint standing in front of a
//! receiver. Used through `#[path]` beside `common/http.rs`, `common/media.rs` and
//! `common/forward.rs` (as `http`, `media`, `forward`).
#![allow(dead_code)]

use super::http::request;
use super::media;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every wait is bounded by this, so a broken publisher fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A `smolrtc serve` process; its stderr goes to `log`. Killed when dropped.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Serve {
    /// Starts `serve` on `port` (0: a free one) with ICE on 127.0.0.1 and `args`; returns
    /// once it answers HTTP (or HTTPS: `tls`).
    pub fn start(dir: &Path, tag: &str, port: u16, tls: bool, args: &[&str]) -> Serve {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        let r = request(self.addr, "GET", path, None, b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()
    }

    pub fn metrics(&self) -> String {
        request(self.addr, "GET", "/metrics", None, b"").text()
    }

    /// SIGTERM, then waits for the exit (the clean shutdown: DELETE sent).
    pub fn stop(mut self) -> String {
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

/// A receiver: `serve` on `port` (0: a free one) whose file sink `cam` writes H.264 into
/// `rec`, with `extra` arguments.
pub fn receiver(dir: &Path, tag: &str, port: u16, rec: &Path, extra: &[&str]) -> Serve {
    let sink = format!("cam=file:{}/cam.h264", rec.display());
    let mut args = vec!["--sink", sink.as_str()];
    args.extend_from_slice(extra);
    Serve::start(dir, tag, port, false, &args)
}

/// A publisher: `serve` with the stream `cam` from the file `src` published to `url`, with
/// `extra` arguments.
pub fn publisher(dir: &Path, tag: &str, src: &Path, url: &str, extra: &[&str]) -> Serve {
    let video = format!("cam=file:{}", src.display());
    let publish = format!("cam={url}");
    let mut args = vec!["--video", video.as_str(), "--publish", publish.as_str()];
    args.extend_from_slice(extra);
    Serve::start(dir, tag, 0, false, &args)
}

/// The WHIP URL of stream `cam` at `addr`.
pub fn whip(addr: SocketAddr) -> String {
    format!("http://{addr}/whip/cam")
}

/// Waits until `receiver`'s sink `cam` wrote `frames` frames (`what`: the frames awaited).
pub fn wait_frames(what: &str, publisher: &Serve, receiver: &Serve, frames: u64) {
    wait_for(what, &[publisher, receiver], || {
        sink_frames(receiver, "cam") >= frames
    });
}

/// Stops both cleanly, then checks the recordings in `rec` (at least `frames` frames).
pub fn stop_and_check(publisher: Serve, receiver: Serve, rec: &Path, frames: u64) {
    let _ = publisher.stop();
    let _ = receiver.stop();
    check_recordings(rec, frames);
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smolrtc-publish-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 320x240 H.264 camera stand-in (looped by the `file:` source).
pub fn source() -> PathBuf {
    media::video(
        &media::temp_dir("publish-media"),
        "H264",
        "testsrc=size=320x240:rate=30",
        4,
        0,
    )
}

/// Frames sink `name` of `serve` wrote so far.
pub fn sink_frames(serve: &Serve, name: &str) -> u64 {
    let v = serve.get("/api/sinks");
    v["sinks"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .and_then(|s| s["frames"].as_u64())
        .unwrap_or(0)
}

/// Waits until `f` holds, or fails with `what` and the logs.
pub fn wait_for(what: &str, logs: &[&Serve], mut f: impl FnMut() -> bool) {
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
pub fn publish_state(serve: &Serve, name: &str) -> serde_json::Value {
    let v = serve.get("/api/streams");
    v["streams"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .map(|s| s["publish"].clone())
        .unwrap_or_default()
}

/// Video files in `dir`: finished (`.h264`) or cut short by a killed service
/// (`.h264.part`, never renamed into place).
pub fn recordings(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".h264") || name.ends_with(".h264.part")
        })
        .collect();
    v.sort();
    v
}

/// Every recording in `dir` decodes as the source: H.264 at 320x240, at least `frames`
/// frames in all.
pub fn check_recordings(dir: &Path, frames: u64) {
    let files = recordings(dir);
    assert!(!files.is_empty(), "no recording in {}", dir.display());
    let mut total = 0;
    for f in &files {
        let p = media::ffprobe(f);
        let n = p.frames;
        println!(
            "{}: {} {}x{}, {n} frames",
            f.display(),
            p.codec,
            p.width,
            p.height
        );
        assert_eq!(
            (p.codec.as_str(), p.width, p.height),
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

/// What a test endpoint does with its request `n` (from 0) whose head (lower case) is
/// `head` and body `body`: `Some(reply)` is the whole HTTP reply; `None` takes the usual
/// way.
pub type Hook = Box<dyn FnMut(usize, &str, &[u8]) -> Option<String> + Send>;

/// A WHIP endpoint in front of `receiver` (a thread): POSTs are passed to the receiver
/// and answered with its reply (its `Location` made absolute, so PATCH and DELETE go to
/// the receiver itself), the answer edited by `edit`. With `link`, the answers to OPTIONS
/// (`204`) and POST carry a `Link` header naming that STUN server.
pub fn endpoint(
    receiver: SocketAddr,
    link: Option<SocketAddr>,
    edit: impl FnMut(&mut String) + Send + 'static,
) -> SocketAddr {
    endpoint_with(receiver, link, Box::new(|_, _, _| None), edit)
}

/// [`endpoint`], with `hook` answering the requests it chooses.
pub fn endpoint_with(
    receiver: SocketAddr,
    link: Option<SocketAddr>,
    mut hook: Hook,
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
            let reply = if let Some(r) = hook(n, &head, &body) {
                r
            } else if head.starts_with("options") && link.is_some() {
                format!("HTTP/1.1 204 No Content\r\n{link_header}Connection: close\r\n\r\n")
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
