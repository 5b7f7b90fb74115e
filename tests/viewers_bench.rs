//! Media benchmarks with native viewers (BENCHMARKS.md, "Media viewers"): the real
//! `smolrtc serve` binary in its own process, smolrtc library peer connections with a
//! recvonly video track in this one, all on loopback. Ignored: run each explicitly with
//! `cargo test --release --test viewers_bench -- --ignored --nocapture NAME`. Each checks
//! that the work it times was done (frames received), and prints a table.
//!
//! - `viewers_cpu_and_memory`: the service's CPU and RSS at 1, 10 and 50 viewers of one
//!   1080p ~8 Mbit/s H.264 file source.
//! - `rtp_source_latency`: the delay from a frame's last RTP packet sent to the service's
//!   `rtp://` source socket to that frame's last packet read by a viewer (`read_rtp`), p50 /
//!   p99, at 1 and 10 viewers.
//! - `late_join_time_to_first_frame`: `POST /whep/cam` to the first frame read, over N joins
//!   at random points of a 10 s group of pictures.

mod common;

use common::http::request;
use smolrtc::media::{Codec, Frame, FrameData, Packetizer};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name: utime and stime are fields 14 and 15.
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

/// `smolrtc serve` with `--video cam=SOURCE` on 127.0.0.1; killed when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    fn start(source: &str) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--ice-address",
                "127.0.0.1",
            ])
            .args(["--max-sessions", "128", "--max-sessions-per-address", "128"])
            .arg("--video")
            .arg(format!("cam={source}"))
            .env("RUST_LOG", "warn,smolrtc::service=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("smolrtc serve");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
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
        Serve { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The video track's `GET /api/streams` entry once it has a keyframe (at most 20 s).
    fn live(&self) -> serde_json::Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let r = request(self.addr, "GET", "/api/streams", None, b"");
            let v = r.json()["streams"][0]["video"].clone();
            if v["keyframes"].as_u64().is_some_and(|k| k > 0) {
                return v;
            }
            assert!(Instant::now() < until, "the stream never went live: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 1080p ~8 Mbit/s H.264 file (baseline, no B-frames, a keyframe a second), 4 s.
fn hd_file(dir: &Path) -> PathBuf {
    common::media::video(dir, "H264", "testsrc2=size=1920x1080:rate=30", 4, 8000)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU and memory of the service per viewer: N library viewers of one 1080p ~8 Mbit/s
/// H.264 file; 3 s to settle, then the service's CPU over 10 s and its RSS above the idle
/// service. Every viewer must have read at least 90% of the frames of those 10 s.
#[test]
#[ignore = "benchmark: run explicitly"]
fn viewers_cpu_and_memory() {
    let dir = common::media::temp_dir("viewers-bench");
    let file = hd_file(&dir);
    let counts: Vec<usize> = std::env::var("BENCH_VIEWERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10, 50]);
    let mut rows = Vec::new();
    for n in counts {
        let serve = Serve::start(&format!("file:{}", file.display()));
        let pid = serve.pid();
        serve.live();
        std::thread::sleep(Duration::from_millis(500));
        let idle = rss_kib(pid);
        let row = common::run(async {
            let mut peers = Vec::new();
            let stop = Arc::new(AtomicBool::new(false));
            let mut readers = Vec::new();
            for i in 0..n {
                let (p, mut rx, _) = common::whep_viewer(serve.addr, "cam", &format!("v{i}")).await;
                peers.push(p);
                // Each viewer reads its frames on a thread and counts them; `measuring`
                // turns on for the measured window.
                let stop = stop.clone();
                let counted = Arc::new(Mutex::new((0u64, 0u64)));
                let c = counted.clone();
                let reader = std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match rx.read_frame_blocking() {
                            Some(f) => {
                                let mut c = c.lock().unwrap();
                                c.0 += 1;
                                c.1 += f.data.len() as u64;
                            }
                            None => break,
                        }
                    }
                    rx.stats()
                });
                readers.push((reader, counted));
            }
            async_io::Timer::after(Duration::from_secs(3)).await;
            let before: Vec<u64> = readers.iter().map(|(_, c)| c.lock().unwrap().0).collect();
            let (t0, ticks0) = (Instant::now(), cpu_ticks(pid));
            async_io::Timer::after(Duration::from_secs(10)).await;
            let secs = t0.elapsed().as_secs_f64();
            let cpu = (cpu_ticks(pid) - ticks0) as f64 / 100.0 / secs;
            let rss = rss_kib(pid);
            let got: Vec<u64> = readers
                .iter()
                .zip(&before)
                .map(|((_, c), b)| c.lock().unwrap().0 - b)
                .collect();
            stop.store(true, Ordering::Relaxed);
            for p in &peers {
                p.pc.close().await;
            }
            let stats: Vec<_> = readers
                .into_iter()
                .map(|(r, _)| r.join().expect("reader"))
                .collect();
            let lost: u64 = stats.iter().map(|s| s.lost).sum();
            let nacks: u64 = stats.iter().map(|s| s.nacks_sent).sum();
            let plis: u64 = stats.iter().map(|s| s.plis_sent).sum();
            let min = *got.iter().min().unwrap_or(&0);
            let expected = (secs * 30.0) as u64;
            println!(
                "{n} viewers: {:.1}% CPU, RSS {rss} KiB ({idle} idle), frames per viewer in \
                 {secs:.1} s: min {min} of ~{expected}; viewers' totals: {lost} lost, {nacks} \
                 NACKs, {plis} PLIs",
                cpu * 100.0
            );
            assert!(
                min * 10 >= expected * 9,
                "a viewer read only {min} of ~{expected} frames: {got:?}"
            );
            (n, cpu, rss, idle)
        });
        rows.push(row);
        drop(serve);
    }
    println!("source: {}", file.display());
    println!(
        "| viewers | service CPU (one core) | per viewer | service RSS | above idle | per viewer |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (n, cpu, rss, idle) in rows {
        let above = rss.saturating_sub(idle);
        println!(
            "| {n} | {:.1}% | {:.2}% | {:.1} MiB | {:.1} MiB | {:.0} KiB |",
            cpu * 100.0,
            cpu * 100.0 / n as f64,
            rss as f64 / 1024.0,
            above as f64 / 1024.0,
            above as f64 / n as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The frames of an Annex-B H.264 file, as a source hands them over.
fn h264_frames(path: &Path) -> Vec<Frame> {
    use smolrtc::media::h264::{AccessUnitAssembler, AnnexBSplitter, MAX_NAL_BYTES};
    let data = std::fs::read(path).expect("media file");
    let mut split = AnnexBSplitter::new(MAX_NAL_BYTES);
    split.push(&data);
    let mut nals = Vec::new();
    while let Some(n) = split.poll() {
        nals.extend(n.ok());
    }
    nals.extend(split.flush());
    let mut asm = AccessUnitAssembler::new();
    let mut units: Vec<_> = nals
        .into_iter()
        .filter_map(|n| asm.push(n).ok().flatten())
        .collect();
    units.extend(asm.flush().ok().flatten());
    units
        .into_iter()
        .map(|au| Frame {
            timestamp: 0,
            keyframe: au.keyframe,
            data: FrameData::Nals(au.nals),
        })
        .collect()
}

/// Latency through the service: this process sends a 1080p ~8 Mbit/s H.264 file as RTP
/// to `serve --video cam=rtp://...` in real time (30 fps, each frame's packets back to
/// back) and N library viewers read the packets (`read_rtp`). A frame's delay is from its
/// last packet's `send` to the source socket to a viewer reading that frame's last packet:
/// what the service adds (it forwards a frame once its last packet is in), plus loopback
/// and the viewer library's own receive path (SRTP decrypt, its actors), so an upper bound.
/// Frames are matched by RTP timestamp (each viewer's is the source's plus a constant
/// offset, found as the most common difference). 20 s, the first 2 s left out.
#[test]
#[ignore = "benchmark: run explicitly"]
fn rtp_source_latency() {
    let dir = common::media::temp_dir("latency-bench");
    let frames = h264_frames(&hd_file(&dir));
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port();
    let counts: Vec<usize> = std::env::var("BENCH_VIEWERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10]);
    let mut rows = Vec::new();
    for n in counts {
        let serve = Serve::start(&format!("rtp://127.0.0.1:{port}?codec=h264"));
        // The sender: frame k has timestamp k × 3000; the send time of its last packet is
        // kept by timestamp.
        let sent = Arc::new(Mutex::new(std::collections::HashMap::<u32, Instant>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (sent, stop, frames) = (sent.clone(), stop.clone(), frames.clone());
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
                let mut pk = Packetizer::new(Codec::H264);
                let ssrc = 0x1234_5678u32;
                let (mut seq, mut buf) = (0u16, Vec::with_capacity(1500));
                let t0 = Instant::now();
                for (k, f) in frames.iter().cycle().enumerate() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let due = t0 + Duration::from_micros(k as u64 * 1_000_000 / 30);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let ts = (k as u32).wrapping_mul(3000);
                    let p = pk.packetize(
                        Instant::now(),
                        Frame {
                            timestamp: ts,
                            ..f.clone()
                        },
                    );
                    let last = p.payloads.len().saturating_sub(1);
                    for (i, payload) in p.payloads.iter().enumerate() {
                        buf.clear();
                        buf.push(0x80);
                        buf.push(if i == last { 0x80 | 96 } else { 96 });
                        buf.extend_from_slice(&seq.to_be_bytes());
                        buf.extend_from_slice(&ts.to_be_bytes());
                        buf.extend_from_slice(&ssrc.to_be_bytes());
                        payload.write_to(&mut buf);
                        seq = seq.wrapping_add(1);
                        let _ = sock.send_to(&buf, ("127.0.0.1", port));
                        if i == last {
                            sent.lock().unwrap().insert(ts, Instant::now());
                        }
                    }
                }
            })
        };
        serve.live();
        let delays = common::run(async {
            let mut peers = Vec::new();
            let mut readers = Vec::new();
            for i in 0..n {
                let (p, mut rx, _) = common::whep_viewer(serve.addr, "cam", &format!("v{i}")).await;
                peers.push(p);
                let stop = stop.clone();
                readers.push(std::thread::spawn(move || {
                    let mut marks = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match rx.read_rtp_blocking() {
                            Some(p) if p.marker => marks.push((p.timestamp, Instant::now())),
                            Some(_) => {}
                            None => break,
                        }
                    }
                    marks
                }));
            }
            async_io::Timer::after(Duration::from_secs(20)).await;
            stop.store(true, Ordering::Relaxed);
            for p in &peers {
                p.pc.close().await;
            }
            let sent = sent.lock().unwrap();
            let mut delays = Vec::new();
            for r in readers {
                let marks = r.join().expect("reader");
                let skip = marks.len().min(60);
                let marks = &marks[skip..];
                // The offset: the most common difference to a frame sent just before.
                let mut diffs = std::collections::HashMap::<u32, usize>::new();
                for (ts, at) in marks {
                    let near = sent
                        .iter()
                        .filter(|(_, s)| **s <= *at)
                        .max_by_key(|(_, s)| **s)
                        .map(|(t, _)| *t);
                    if let Some(t) = near {
                        *diffs.entry(ts.wrapping_sub(t)).or_default() += 1;
                    }
                }
                let (offset, hits) = diffs.into_iter().max_by_key(|(_, c)| *c).unwrap_or((0, 0));
                assert!(
                    hits * 2 > marks.len(),
                    "no steady timestamp offset ({hits} of {})",
                    marks.len()
                );
                for (ts, at) in marks {
                    if let Some(s) = sent.get(&ts.wrapping_sub(offset)) {
                        delays.push(at.saturating_duration_since(*s).as_secs_f64() * 1000.0);
                    }
                }
            }
            delays
        });
        stop.store(true, Ordering::Relaxed);
        let _ = sender.join();
        let mut d = delays;
        d.sort_by(f64::total_cmp);
        assert!(
            d.len() as u64 >= n as u64 * 400,
            "{} frames matched",
            d.len()
        );
        println!(
            "{n} viewers: {} frames, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            d.len(),
            percentile(&d, 0.5),
            percentile(&d, 0.99),
            d[d.len() - 1]
        );
        rows.push((n, d.len(), percentile(&d, 0.5), percentile(&d, 0.99)));
        drop(serve);
    }
    println!("| viewers | frames | p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    for (n, count, p50, p99) in rows {
        println!("| {n} | {count} | {p50:.2} ms | {p99:.2} ms |");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Time to first frame of a late joiner: `POST /whep/cam` (ICE, DTLS, the catch-up) to the
/// first frame read, over `BENCH_JOINS` (default 20) joins, one at a time at random points
/// of a 10 s group of pictures (640x480 H.264 ~1 Mbit/s, one keyframe per 300 frames).
/// Every first frame must be a keyframe read while the source was still in the group it
/// joined (the cached keyframe, not the next one). Also timed: to the first live frame
/// after the (paced) catch-up.
#[test]
#[ignore = "benchmark: run explicitly"]
fn late_join_time_to_first_frame() {
    let dir = common::media::temp_dir("join-bench");
    #[rustfmt::skip]
    let file = common::media::make(&dir.join("gop300-640.h264"), [
        "-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30", "-t", "10",
        "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0",
        "-g", "300", "-keyint_min", "300", "-sc_threshold", "0",
        "-b:v", "1M", "-maxrate", "1M", "-bufsize", "2M",
        "-pix_fmt", "yuv420p", "-f", "h264",
    ]);
    let joins: usize = std::env::var("BENCH_JOINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let serve = Serve::start(&format!("file:{}", file.display()));
    serve.live();
    let keyframes = |addr| {
        let r = request(addr, "GET", "/api/streams", None, b"");
        let v = &r.json()["streams"][0]["video"];
        (
            v["frames"].as_u64().unwrap_or(0),
            v["keyframes"].as_u64().unwrap_or(0),
        )
    };
    let mut ttff = Vec::new();
    let mut to_live = Vec::new();
    let mut positions = Vec::new();
    common::run(async {
        for i in 0..joins {
            async_io::Timer::after(Duration::from_millis(fastrand::u64(100..1500))).await;
            let (frames, k0) = keyframes(serve.addr);
            let (p, mut rx, posted) =
                common::whep_viewer(serve.addr, "cam", &format!("j{i}")).await;
            let f = rx.read_frame().await.expect("first frame");
            let took = posted.elapsed().as_secs_f64() * 1000.0;
            let (_, k1) = keyframes(serve.addr);
            assert!(f.keyframe, "join {i}: the first frame is not a keyframe");
            // Live: the first frame 3000 ticks after the one before (the catch-up's are
            // one tick apart).
            let mut last = f.rtp_timestamp;
            loop {
                let g = rx.read_frame().await.expect("frames");
                let d = g.rtp_timestamp.wrapping_sub(last);
                last = g.rtp_timestamp;
                if d >= 3000 {
                    break;
                }
            }
            let live = posted.elapsed().as_secs_f64() * 1000.0;
            if k1 != k0 {
                println!("join {i}: a source keyframe came meanwhile; not counted");
            } else {
                ttff.push(took);
                to_live.push(live);
                positions.push(frames.saturating_sub(1) % 300);
            }
            p.pc.close().await;
        }
    });
    let mut d = ttff.clone();
    d.sort_by(f64::total_cmp);
    assert!(d.len() * 2 > joins, "only {} joins counted", d.len());
    let mut l = to_live.clone();
    l.sort_by(f64::total_cmp);
    println!("GOP positions at join (frames): {positions:?}");
    println!("times to first frame (ms): {ttff:.1?}");
    println!("times to the first live frame after the catch-up (ms): {to_live:.1?}");
    println!(
        "to live: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        percentile(&l, 0.5),
        percentile(&l, 0.9),
        l[l.len() - 1]
    );
    println!(
        "| joins | p50 | p90 | max |\n| --- | --- | --- | --- |\n| {} | {:.0} ms | {:.0} ms | {:.0} ms |",
        d.len(),
        percentile(&d, 0.5),
        percentile(&d, 0.9),
        d[d.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
