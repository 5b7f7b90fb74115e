//! qemu-system boot test: Debian's arm64 kernel boots under
//! `qemu-system-aarch64 -M virt -cpu cortex-a72` (or `-M raspi3b`) with an initramfs whose
//! /init runs the static aarch64 `smolrtc serve`; a native smolrtc peer (this test) signals
//! over HTTP and sends data over UDP through qemu's user-net port forwards, opens channels,
//! and checks every byte.
//!
//! Gated: runs only with `SMOLRTC_QEMU_SYSTEM=1` and the guest files prepared by
//! `cross/qemu-test` (which `cross/ci` runs):
//! - `SMOLRTC_QEMU_KERNEL`: the kernel image (Debian's `vmlinuz-*-arm64`),
//! - `SMOLRTC_QEMU_INITRD`: the initramfs from `cross/initramfs`, whose service listens on
//!   `0.0.0.0:8888` and binds ICE to `10.0.2.15` on ports `50000-50001`,
//! - `SMOLRTC_QEMU_MACHINE`: `virt` (default; virtio-net) or `raspi3b` (usb-net on the dwc2
//!   USB controller; needs the initramfs built with `--machine raspi3b`),
//! - `SMOLRTC_QEMU_DTB`: for `raspi3b`, the kernel package's `bcm2837-rpi-3-b.dtb`.
//!
//! `arm64_guest_memory_per_connection_and_viewer` (gated by `SMOLRTC_QEMU_MEMORY=1`, run by
//! `cross/qemu-test --memory`) measures instead: see [`memory`].
//!
//! Everything runs in a private network namespace (the test re-executes itself under
//! `unshare -n`), so the forwarded ports exist only there and nothing leaves loopback.
//! The guest's host candidate says 10.0.2.15:PORT; qemu forwards 127.0.0.1:PORT to it, so the
//! test rewrites the candidate address in the answer to 127.0.0.1 before applying it. The
//! guest sees the test's packets as coming from 10.0.2.2 and learns that address as a
//! peer-reflexive candidate.

mod common;
#[path = "qemu/memory.rs"]
mod memory;

use common::http::request;
use common::{block_on, init_log, message, opened, Peer};
use smolrtc::{ChannelInit, Description, Event, Message};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HTTP_PORT: u16 = 8888;
/// The guest's second service: HTTPS with `--tls-self-signed` (`cross/qemu-test`).
const HTTPS_PORT: u16 = 8443;
const ICE_PORTS: [u16; 2] = [50000, 50001];
const GUEST_ADDRESS: &str = "10.0.2.15";
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// raspi3b boots in about 17 s (4 emulated cores, USB enumeration): a wider bound.
const RASPI_BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const TEST_NAME: &str = "arm64_guest_serves_channels_to_a_native_peer";

/// qemu, killed (and reaped) when dropped, whatever happens in the test.
struct Qemu {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

/// The emulated machine (`SMOLRTC_QEMU_MACHINE`).
enum Machine {
    /// `-M virt -cpu cortex-a72`, virtio-net-pci (eth0 in the guest).
    Virt,
    /// `-M raspi3b` (BCM2837: 4x cortex-a53, 1 GiB, fixed) with the kernel package's device
    /// tree; qemu's usb-net on the SoC's dwc2 USB controller (usb0 in the guest). It cannot
    /// power off: qemu is killed at the end like on virt.
    Raspi3b { dtb: String },
}

impl Qemu {
    fn boot(machine: &Machine, kernel: &str, initrd: &str) -> Qemu {
        let mut netdev = String::from("user,id=n");
        netdev += &format!(",hostfwd=tcp:127.0.0.1:{HTTP_PORT}-{GUEST_ADDRESS}:{HTTP_PORT}");
        netdev += &format!(",hostfwd=tcp:127.0.0.1:{HTTPS_PORT}-{GUEST_ADDRESS}:{HTTPS_PORT}");
        for p in ICE_PORTS {
            netdev += &format!(",hostfwd=udp:127.0.0.1:{p}-{GUEST_ADDRESS}:{p}");
        }
        let mut cmd = Command::new("qemu-system-aarch64");
        match machine {
            Machine::Virt => cmd
                .args(["-M", "virt", "-cpu", "cortex-a72", "-m", "256", "-smp", "1"])
                // romfile=: no iPXE option ROM (not installed, and the kernel boots directly).
                .args([
                    "-netdev",
                    &netdev,
                    "-device",
                    "virtio-net-pci,netdev=n,romfile=",
                ]),
            Machine::Raspi3b { dtb } => cmd.args(["-M", "raspi3b", "-dtb", dtb]).args([
                "-netdev",
                &netdev,
                "-device",
                "usb-net,netdev=n",
            ]),
        };
        let mut child = cmd
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .args(["-no-reboot", "-kernel", kernel, "-initrd", initrd])
            .args(["-append", "console=ttyAMA0 panic=-1 quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run qemu-system-aarch64 (apt-get install qemu-system-arm)");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Qemu {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits (bounded) for a console line containing `what`; panics with the console log.
    fn wait_for(&mut self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("guest| {line}");
                    self.log.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                    if line.contains("SMOLRTC-GUEST-EXIT") || line.contains("Kernel panic") {
                        panic!("guest stopped while waiting for {what:?}: {line}");
                    }
                }
                Err(_) => panic!("no {what:?} on the guest console within {timeout:?}"),
            }
        }
    }

    /// Console lines printed so far (without waiting).
    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            eprintln!("guest| {line}");
            self.log.push(line);
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.drain();
    }
}

/// Re-runs this test in a private network namespace with loopback up; false when already
/// inside one (then the caller runs the test body).
fn reexec_in_netns(test_name: &str) -> bool {
    if std::env::var_os("SMOLRTC_IN_NETNS").is_some() {
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", r#"ip link set lo up && exec "$0" "$@""#])
        .arg(&exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env("SMOLRTC_IN_NETNS", "1")
        .status()
        .expect("run unshare -n (needs root or user namespaces)");
    assert!(status.success(), "the test failed in its network namespace");
    true
}

/// The answer as the test can use it: the guest's candidates (10.0.2.15:PORT) rewritten to
/// the forwarded 127.0.0.1:PORT. Ports stay the same (hostfwd uses the same numbers).
fn through_forwards(answer: &Description) -> Description {
    let mut rewritten = 0;
    let sdp: Vec<String> = answer
        .sdp
        .split("\r\n")
        .map(|line| {
            if line.starts_with("a=candidate:") && line.contains(&format!(" {GUEST_ADDRESS} ")) {
                rewritten += 1;
                line.replace(&format!(" {GUEST_ADDRESS} "), " 127.0.0.1 ")
            } else if line.starts_with("c=IN IP4 ") {
                line.replace(GUEST_ADDRESS, "127.0.0.1")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(
        rewritten > 0,
        "no {GUEST_ADDRESS} candidate in the answer:\n{}",
        answer.sdp
    );
    Description {
        kind: answer.kind,
        sdp: sdp.join("\r\n"),
    }
}

/// The payload of message `n` of `len` bytes: every byte depends on both.
fn payload(n: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ n.wrapping_mul(131)) as u8)
        .collect()
}

#[test]
fn arm64_guest_serves_channels_to_a_native_peer() {
    if std::env::var("SMOLRTC_QEMU_SYSTEM").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set SMOLRTC_QEMU_SYSTEM=1 (cross/qemu-test prepares the kernel and \
             initramfs and does)"
        );
        return;
    }
    let kernel = std::env::var("SMOLRTC_QEMU_KERNEL").expect("SMOLRTC_QEMU_KERNEL: vmlinuz path");
    let initrd = std::env::var("SMOLRTC_QEMU_INITRD").expect("SMOLRTC_QEMU_INITRD: initramfs");
    let (machine, boot_timeout) = match std::env::var("SMOLRTC_QEMU_MACHINE").as_deref() {
        Err(_) | Ok("") | Ok("virt") => (Machine::Virt, BOOT_TIMEOUT),
        Ok("raspi3b") => {
            let dtb = std::env::var("SMOLRTC_QEMU_DTB").expect("SMOLRTC_QEMU_DTB: raspi3b's dtb");
            (Machine::Raspi3b { dtb }, RASPI_BOOT_TIMEOUT)
        }
        Ok(other) => panic!("SMOLRTC_QEMU_MACHINE={other}: virt or raspi3b"),
    };
    if reexec_in_netns(TEST_NAME) {
        return;
    }
    init_log();
    let started = Instant::now();
    let mut qemu = Qemu::boot(&machine, &kernel, &initrd);
    let up = qemu.wait_for("SMOLRTC-GUEST-UP", boot_timeout);
    eprintln!("guest userland up after {:?}: {up}", started.elapsed());
    qemu.wait_for("listening on", Duration::from_secs(30));
    let http: SocketAddr = ([127, 0, 0, 1], HTTP_PORT).into();
    let r = request(http, "GET", "/api/sessions", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    eprintln!("service answers HTTP after {:?}", started.elapsed());
    let idle = qemu.wait_for("SMOLRTC-MEM", Duration::from_secs(10));

    block_on(async {
        let mut p = Peer::new("host");
        let echo = p.channel("echo", ChannelInit::default()).await;
        let echo2 = p.channel("echo", ChannelInit::default()).await;
        let chargen = p.channel("chargen", ChannelInit::default()).await;
        let answer = p.offer_to_service(http).await;
        p.pc.set_remote_description(through_forwards(&answer))
            .await
            .unwrap();
        // Every channel must be open before it is used (the raspi3b guest is slow enough
        // for the second one to lag the first).
        for ch in [&echo, &echo2] {
            p.expect("channel open", |e| {
                matches!(e, Event::ChannelOpen(c) if c == ch).then_some(())
            })
            .await;
        }
        eprintln!("channel open after {:?}", started.elapsed());

        // Two echo channels interleaved: text and binary, small to 64 KiB, every byte checked.
        let sizes = [1usize, 100, 1200, 5000, 16 * 1024, 65536];
        let mut sent = 0;
        for (n, len) in sizes.iter().enumerate() {
            let data = payload(n, *len);
            echo.send(data.clone()).await.unwrap();
            echo2
                .send(format!("text {n} {}", "x".repeat(*len / 4)))
                .await
                .unwrap();
            sent += len;
        }
        let mut got1 = Vec::new();
        let mut got2 = Vec::new();
        while got1.len() < sizes.len() || got2.len() < sizes.len() {
            let (c, m) = p
                .expect("echo", |e| match e {
                    Event::ChannelMessage(c, m) if c.label() == "echo" => Some((c.id(), m.clone())),
                    _ => None,
                })
                .await;
            if c == echo.id() {
                got1.push(m)
            } else {
                got2.push(m)
            }
        }
        for (n, len) in sizes.iter().enumerate() {
            assert_eq!(
                got1[n],
                Message::Binary(payload(n, *len).into()),
                "echo #{n}"
            );
            assert_eq!(
                got2[n],
                Message::Text(format!("text {n} {}", "x".repeat(*len / 4))),
                "second echo #{n}"
            );
        }
        eprintln!("echoed {sent} bytes after {:?}", started.elapsed());

        // chargen: 256 KiB from the guest, byte i = i % 251, then "end".
        opened(&mut p, "chargen").await;
        chargen.send("262144").await.unwrap();
        let mut got = 0u64;
        loop {
            match message(&mut p, "chargen").await {
                Message::Binary(b) => {
                    for (k, byte) in b.iter().enumerate() {
                        assert_eq!(*byte, smolrtc::service::apps::chargen_byte(got + k as u64));
                    }
                    got += b.len() as u64;
                }
                Message::Text(t) => {
                    assert_eq!(t, "end");
                    break;
                }
            }
        }
        assert_eq!(got, 262144);
        eprintln!("chargen 256 KiB checked after {:?}", started.elapsed());

        let r = request(http, "GET", "/api/sessions", None, b"");
        let sessions = r.json();
        assert_eq!(sessions["sessions"][0]["state"], "connected", "{sessions}");
        // A report printed after the traffic (older ones are drained first).
        qemu.drain();
        let busy = qemu.wait_for("SMOLRTC-MEM", Duration::from_secs(10));
        eprintln!("guest memory of smolrtc serve (kB): idle {idle} | one connection {busy}");
        p.pc.close().await;
    });
    https_metrics(&mut qemu);
    qemu.drain();
    eprintln!("boot + test: {:?}", started.elapsed());
}

/// The guest's `--tls-self-signed` service: the certificate it made at boot is trusted by
/// the key it logged (curl's `--pinnedpubkey`, as a user pins it), and `/metrics` answers.
fn https_metrics(qemu: &mut Qemu) {
    qemu.drain();
    let logged = |l: &String| l.contains("TLS: new self-signed certificate");
    let line = match qemu.log.iter().find(|l| logged(l)).cloned() {
        Some(l) => l,
        None => qemu.wait_for("TLS: new self-signed certificate", Duration::from_secs(30)),
    };
    let spki = line.rsplit("spki ").next().unwrap().trim().to_owned();
    let url = format!("https://127.0.0.1:{HTTPS_PORT}/metrics");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-k", "--pinnedpubkey"])
        .arg(format!("sha256//{spki}"))
        .arg(&url)
        .output()
        .expect("curl (.ci/setup)");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && body.contains("smolrtc_sessions 0"),
        "{url}: {} {body}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains("smolrtc_resident_memory_bytes"), "{body}");
    eprintln!("guest's HTTPS /metrics fetched, pinned to spki {spki}");
}
