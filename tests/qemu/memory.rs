//! The service's memory on the board (issue 19 item 4), measured in the qemu-system guest:
//! `smolrtc serve` (every session on UDP port 50000, `--single-port`) with 1, 10 and 100
//! idle data-channel connections from native peers, then, booted again with a looped
//! 320x240 15 fps H.264 file (`--video cam=file:/cam.h264`), 1, 10 and 50 WHEP viewers. The guest
//! prints the service's VmRSS and VmHWM every second; the test prints them for each count,
//! with the per-connection and per-viewer slopes, against the targets. A
//! measurement, not a check of the figures: it asserts only that every connection echoes
//! and every viewer reads frames while measured.
//!
//! Gated by `SMOLRTC_QEMU_MEMORY=1` with `SMOLRTC_QEMU_KERNEL`,
//! `SMOLRTC_QEMU_INITRD_CHANNELS` and `SMOLRTC_QEMU_INITRD_VIDEO` (`cross/qemu-test --memory`
//! makes both initramfs images).

use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The test's path in this test binary (`reexec_in_netns` runs it by exact name).
const MEMORY_TEST_NAME: &str = "memory::arm64_guest_memory_per_connection_and_viewer";
const CONNECTIONS: [usize; 3] = [1, 10, 100];
const VIEWERS: [usize; 3] = [1, 10, 50];
/// Issue 19's targets: idle service, each idle connection, each viewer (KiB).
const IDLE_TARGET_KIB: u64 = 2 * 1024;
const CONNECTION_TARGET_KIB: u64 = 50;
const VIEWER_TARGET_KIB: u64 = 200;
/// After the sessions are up: time for their setup garbage to be freed and their timers to
/// have run once, before the figure is read.
const SETTLE: Duration = Duration::from_secs(3);

/// The service's memory as the guest kernel counts it (kB = KiB).
#[derive(Clone, Copy, Debug)]
struct GuestMemory {
    rss: u64,
    hwm: u64,
}

impl GuestMemory {
    /// From a `SMOLRTC-MEM VmHWM: 2652 kB VmRSS: 2600 kB` console line.
    fn parse(line: &str) -> GuestMemory {
        let field = |name: &str| -> u64 {
            line.split(name)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        };
        GuestMemory {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
        }
    }
}

/// A report printed after `SETTLE` from now (older ones are drained first).
fn settled(qemu: &mut Qemu) -> GuestMemory {
    std::thread::sleep(SETTLE);
    qemu.drain();
    GuestMemory::parse(&qemu.wait_for("SMOLRTC-MEM", Duration::from_secs(10)))
}

/// Boots `initrd` and waits until its service answers HTTP.
fn boot_service(kernel: &str, initrd: &str) -> Qemu {
    let mut qemu = Qemu::boot(&Machine::Virt, kernel, initrd);
    qemu.wait_for("SMOLRTC-GUEST-UP", BOOT_TIMEOUT);
    qemu.wait_for("listening on", Duration::from_secs(30));
    let r = request(http(), "GET", "/api/sessions", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    qemu
}

fn http() -> SocketAddr {
    ([127, 0, 0, 1], HTTP_PORT).into()
}

/// Sessions the service lists, and how many of them are connected.
fn sessions() -> (usize, usize) {
    let r = request(http(), "GET", "/api/sessions", None, b"");
    let list = r.json()["sessions"].as_array().cloned().unwrap_or_default();
    let connected = list.iter().filter(|s| s["state"] == "connected").count();
    (list.len(), connected)
}

/// A native peer with one open `echo` channel to the guest, checked with one echo.
async fn idle_connection(n: usize) -> Peer {
    let mut p = Peer::new(&format!("idle{n}"));
    let echo = p.channel("echo", ChannelInit::default()).await;
    let answer = p.offer_to_service(http()).await;
    p.pc.set_remote_description(through_forwards(&answer))
        .await
        .unwrap();
    opened(&mut p, "echo").await;
    echo.send(format!("ping {n}")).await.unwrap();
    assert_eq!(
        message(&mut p, "echo").await,
        Message::Text(format!("ping {n}"))
    );
    p
}

/// Idle memory and the memory at each count of idle data-channel connections.
fn measure_connections(kernel: &str, initrd: &str) -> (GuestMemory, Vec<(usize, GuestMemory)>) {
    let mut qemu = boot_service(kernel, initrd);
    let idle = settled(&mut qemu);
    let rows = block_on(async {
        let mut peers = Vec::new();
        let mut rows = Vec::new();
        for n in CONNECTIONS {
            while peers.len() < n {
                peers.push(idle_connection(peers.len()).await);
            }
            let m = settled(&mut qemu);
            assert_eq!(sessions(), (n, n), "sessions listed, connected");
            eprintln!("{n} connections: {m:?}");
            rows.push((n, m));
        }
        for p in &peers {
            p.pc.close().await;
        }
        rows
    });
    (idle, rows)
}

/// The frames one viewer has read so far, counted on its own thread.
struct Viewer {
    peer: Peer,
    frames: Arc<AtomicU64>,
    reader: std::thread::JoinHandle<()>,
}

/// A WHEP viewer of `cam` reading frames, or `None` when it read none within 30 s (the
/// emulated guest saturated; the viewer is closed again).
async fn viewer(n: usize, stop: &Arc<AtomicBool>) -> Option<Viewer> {
    let (peer, mut track, _) =
        common::whep_viewer_through(http(), "cam", &format!("viewer{n}"), |a| {
            through_forwards(&a)
        })
        .await;
    let frames = Arc::new(AtomicU64::new(0));
    let (count, stop) = (frames.clone(), stop.clone());
    let reader = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) && track.read_frame_blocking().is_some() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Live before the next one joins: the emulated guest sets up one session at a time.
    let until = Instant::now() + Duration::from_secs(30);
    while frames.load(Ordering::Relaxed) == 0 {
        if Instant::now() > until {
            eprintln!("viewer {n} read no frame in 30 s: the guest is saturated");
            peer.pc.close().await;
            reader.join().expect("reader");
            return None;
        }
        async_io::Timer::after(Duration::from_millis(100)).await;
    }
    Some(Viewer {
        peer,
        frames,
        reader,
    })
}

/// Waits (bounded) until the guest's stream `cam` has a keyframe to give viewers.
fn stream_live() {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let r = request(http(), "GET", "/api/streams", None, b"");
        let video = r.json()["streams"][0]["video"].clone();
        if video["keyframes"].as_u64().is_some_and(|k| k > 0) {
            return;
        }
        assert!(
            Instant::now() < until,
            "the stream never went live: {video}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Idle memory (the stream live, no viewer) and the memory at each count of viewers; every
/// viewer must read frames while its count is measured. When the emulated guest cannot
/// start one more viewer, the count it reached is measured and is the last row.
fn measure_viewers(kernel: &str, initrd: &str) -> (GuestMemory, Vec<(usize, GuestMemory)>) {
    let mut qemu = boot_service(kernel, initrd);
    stream_live();
    let idle = settled(&mut qemu);
    let stop = Arc::new(AtomicBool::new(false));
    let rows = block_on(async {
        let mut viewers = Vec::new();
        let mut rows = Vec::new();
        for n in VIEWERS {
            let mut saturated = false;
            while viewers.len() < n && !saturated {
                match viewer(viewers.len(), &stop).await {
                    Some(v) => viewers.push(v),
                    None => saturated = true,
                }
            }
            let n = viewers.len();
            let before: Vec<u64> = viewers
                .iter()
                .map(|v| v.frames.load(Ordering::Relaxed))
                .collect();
            let m = settled(&mut qemu);
            let read: Vec<u64> = viewers
                .iter()
                .zip(&before)
                .map(|(v, b)| v.frames.load(Ordering::Relaxed) - b)
                .collect();
            assert!(
                read.iter().all(|&r| r > 0),
                "a viewer read nothing: {read:?}"
            );
            let min = read.iter().min().copied().unwrap_or(0);
            eprintln!("{n} viewers: {m:?}; frames read per viewer while measured: min {min}");
            rows.push((n, m));
            if saturated {
                println!("the guest started no viewer beyond {n}: measured there");
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for v in viewers {
            v.peer.pc.close().await;
            v.reader.join().expect("reader");
        }
        rows
    });
    (idle, rows)
}

/// The table for one kind of session: memory at each count, above idle per session, and
/// the slope from the previous count (what one more session costs there).
fn table(what: &str, idle: GuestMemory, rows: &[(usize, GuestMemory)], target_kib: u64) {
    println!("| {what} | VmRSS KiB | VmHWM KiB | RSS above idle per {what} | slope from the previous row |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    println!("| 0 (idle) | {} | {} | – | – |", idle.rss, idle.hwm);
    let mut previous = (0, idle);
    for &(n, m) in rows {
        let per = m.rss.saturating_sub(idle.rss) as f64 / n as f64;
        let slope = m.rss.saturating_sub(previous.1.rss) as f64 / (n - previous.0) as f64;
        println!("| {n} | {} | {} | {per:.1} | {slope:.1} |", m.rss, m.hwm);
        previous = (n, m);
    }
    let (n, last) = rows[rows.len() - 1];
    let per = last.rss.saturating_sub(idle.rss) as f64 / n as f64;
    let met = if per < target_kib as f64 {
        "met"
    } else {
        "MISSED"
    };
    println!("per {what} at {n}: {per:.1} KiB, target under {target_kib} KiB: {met}");
}

#[test]
fn arm64_guest_memory_per_connection_and_viewer() {
    if std::env::var("SMOLRTC_QEMU_MEMORY").as_deref() != Ok("1") {
        eprintln!("skipped: set SMOLRTC_QEMU_MEMORY=1 (cross/qemu-test --memory does)");
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let kernel = var("SMOLRTC_QEMU_KERNEL");
    let (channels, video) = (
        var("SMOLRTC_QEMU_INITRD_CHANNELS"),
        var("SMOLRTC_QEMU_INITRD_VIDEO"),
    );
    if reexec_in_netns(MEMORY_TEST_NAME) {
        return;
    }
    init_log();
    let (idle, connections) = measure_connections(&kernel, &channels);
    let (stream_idle, viewers) = measure_viewers(&kernel, &video);
    let met = if idle.hwm < IDLE_TARGET_KIB {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "idle service: VmRSS {} KiB, VmHWM {} KiB, target under {IDLE_TARGET_KIB} KiB: {met}",
        idle.rss, idle.hwm
    );
    table("connection", idle, &connections, CONNECTION_TARGET_KIB);
    table("viewer", stream_idle, &viewers, VIEWER_TARGET_KIB);
}
