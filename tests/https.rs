//! HTTPS (issue 22): `smolrtc cert` checked with openssl, bad certificate files refused at
//! start, the service over TLS with bad TLS input (garbage, no SNI, a wrong SNI, a
//! slowloris handshake, plain HTTP) refused within the limits while others are served,
//! and headless Chromium on a LAN address (a veth pair in a private network namespace)
//! trusting the certificate only through its SPKI pin: the page, a data channel, the fake
//! camera through getUserMedia, a WHEP viewer decoding; and the "needs HTTPS" note over
//! plain http://. Needs openssl, curl, ffmpeg, chromium, unshare and ip (`.ci/setup`).

mod common;

use common::http::{request, request_from};
use smolrtc::media::MediaKind;
use smolrtc::service::tls::{SelfSigned, SELF_SIGNED_VALIDITY};
use smolrtc::service::{Service, ServiceConfig, ServiceHandle, StreamConfig, TlsIdentity};
use smolrtc::Runtime;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Set in the copy of this test binary re-executed inside the namespace.
const NETNS_ENV: &str = "SMOLRTC_HTTPS_IN_NETNS";
/// The device's LAN address inside the namespace (the browser's end is 10.0.0.1).
const DEVICE: &str = "10.0.0.2";

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smolrtc-https-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed? .ci/setup)"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `openssl ARGS` on `input` (stdin); its stdout, checked to succeed.
fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is missing (apt-get install openssl)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(i) = input {
        stdin.write_all(i).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
    out.stdout
}

/// The `key: value` line of the `cert` command's output.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[test]
fn cert_command_output_checked_with_openssl() {
    let dir = temp_dir("cert");
    let out = run(Command::new(env!("CARGO_BIN_EXE_smolrtc")).args([
        "cert",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        "camera.local",
        "--name",
        "camera",
        "--ip",
        "10.0.0.2",
        "--ip",
        "fd00::2",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    assert_eq!(field(&stdout, "certificate"), cert.to_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is for the service only");

    let c = cert.to_str().unwrap();
    let info = text(&openssl(&["x509", "-in", c, "-noout", "-text"], None));
    for want in [
        "ecdsa-with-SHA256",
        "prime256v1",
        "DNS:camera.local",
        "DNS:camera",
        "IP Address:10.0.0.2",
        "IP Address:FD00:0:0:0:0:0:0:2",
    ] {
        assert!(info.contains(want), "{want} not in\n{info}");
    }
    // The validity: from about now, for 825 days.
    let end = text(&openssl(
        &["x509", "-in", c, "-noout", "-checkend", "0"],
        None,
    ));
    assert!(end.contains("will not expire"), "{end}");
    let r = Command::new("openssl")
        .args(["x509", "-in", c, "-noout", "-checkend"])
        .arg((826 * 86_400).to_string())
        .output()
        .unwrap();
    assert!(!r.status.success(), "valid past 826 days");

    // The printed SHA-256 fingerprint is the certificate's.
    let fp = text(&openssl(
        &["x509", "-in", c, "-noout", "-fingerprint", "-sha256"],
        None,
    ));
    let fp = fp.trim().split('=').nth(1).unwrap().to_owned();
    assert_eq!(field(&stdout, "sha-256 fingerprint"), fp);
    // The printed SPKI hash is base64(sha256(SubjectPublicKeyInfo)) of the certificate.
    let pubkey = openssl(&["x509", "-in", c, "-noout", "-pubkey"], None);
    let spki = openssl(&["pkey", "-pubin", "-outform", "der"], Some(&pubkey));
    let digest = openssl(&["dgst", "-sha256", "-binary"], Some(&spki));
    let b64 = text(&openssl(&["base64", "-A"], Some(&digest)));
    assert_eq!(field(&stdout, "spki sha-256"), b64.trim());
    // The key is the certificate's.
    let from_key = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"], None);
    assert_eq!(text(&from_key), text(&pubkey));

    // Nothing to make it for, or zero days: refused, non-zero.
    for args in [
        vec!["--out", c],
        vec!["--out", c, "--name", "x", "--days", "0"],
    ] {
        let out = run(Command::new(env!("CARGO_BIN_EXE_smolrtc"))
            .arg("cert")
            .args(&args));
        assert!(!out.status.success());
        assert!(!out.stderr.is_empty());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `serve` with these TLS arguments: its exit status and stderr (it must exit by itself).
fn serve_fails(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("serve {args:?} did not exit: it should refuse to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "serve {args:?} started");
    text(&out.stderr)
}

#[test]
fn serve_refuses_bad_certificate_files() {
    let dir = temp_dir("bad");
    let a = SelfSigned::generate(&["a.local".into()], &[], SELF_SIGNED_VALIDITY).unwrap();
    let b = SelfSigned::generate(&["b.local".into()], &[], SELF_SIGNED_VALIDITY).unwrap();
    let (ca, _) = a.write(&dir.join("a")).unwrap();
    let (_, kb) = b.write(&dir.join("b")).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, b"not a certificate\n").unwrap();
    // An expired one (made by rcgen, which the service uses too).
    let mut params = rcgen::CertificateParams::new(vec!["old.local".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let old = params.self_signed(&key).unwrap();
    let (old_c, old_k) = (dir.join("old.pem"), dir.join("old.key"));
    std::fs::write(&old_c, old.pem()).unwrap();
    std::fs::write(&old_k, key.serialize_pem()).unwrap();

    let p = |p: &Path| p.to_str().unwrap().to_owned();
    let missing = dir.join("missing.pem");
    let cases: [(Vec<String>, &str); 6] = [
        (
            vec!["--tls-cert".into(), p(&missing), "--tls-key".into(), p(&kb)],
            "No such file",
        ),
        (
            vec!["--tls-cert".into(), p(&garbage), "--tls-key".into(), p(&kb)],
            "no CERTIFICATE",
        ),
        (
            vec!["--tls-cert".into(), p(&ca), "--tls-key".into(), p(&kb)],
            "the key does not belong to the certificate",
        ),
        (
            vec![
                "--tls-cert".into(),
                p(&old_c),
                "--tls-key".into(),
                p(&old_k),
            ],
            "expired",
        ),
        (
            vec!["--tls-cert".into(), p(&ca)],
            "--tls-cert needs --tls-key",
        ),
        (
            vec!["--tls-self-signed".into(), "--tls-cert".into(), p(&ca)],
            "give one",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = serve_fails(&args);
        assert!(err.contains(want), "serve {args:?}: {want:?} not in {err}");
    }
    // An unreadable state directory for --tls-self-signed: a file where the dir should be.
    let err = serve_fails(&[
        "--tls-self-signed",
        "--state-dir",
        garbage.to_str().unwrap(),
    ]);
    assert!(err.contains(garbage.to_str().unwrap()), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--tls-self-signed` makes the certificate once and keeps it: the same fingerprint on the
/// second start, logged both times.
#[test]
fn self_signed_is_made_once_and_kept() {
    let dir = temp_dir("state");
    let mut fingerprints = Vec::new();
    for _ in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
            .args(["serve", "--listen", "127.0.0.1:0", "--tls-self-signed"])
            .arg("--state-dir")
            .arg(&dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let mut log = String::new();
        let mut buf = [0u8; 4096];
        while !log.contains("listening on https://") {
            let n = err.read(&mut buf).unwrap();
            assert!(n > 0, "serve ended: {log}");
            log.push_str(&text(&buf[..n]));
        }
        let _ = child.kill();
        let _ = child.wait();
        let line = log
            .lines()
            .find(|l| l.contains("sha-256"))
            .unwrap()
            .to_owned();
        fingerprints.push(line.split("sha-256 ").nth(1).unwrap().to_owned());
    }
    assert_eq!(fingerprints[0], fingerprints[1]);
    let id = TlsIdentity::load(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    assert!(
        fingerprints[0].starts_with(id.fingerprint()),
        "{fingerprints:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An in-process service over TLS on 127.0.0.1 (certificate for `localhost` and
/// 127.0.0.1), `header_timeout` short so that slow handshakes end soon.
fn tls_service(dir: &Path) -> (Runtime, ServiceHandle, TlsIdentity) {
    let made = SelfSigned::generate(
        &["localhost".into()],
        &["127.0.0.1".parse().unwrap()],
        SELF_SIGNED_VALIDITY,
    )
    .unwrap();
    made.write(dir).unwrap();
    let id = TlsIdentity::from_pem(made.cert_pem.as_bytes(), made.key_pem.as_bytes()).unwrap();
    let rt = Runtime::new().unwrap();
    let config = ServiceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(id.clone()),
        header_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let h = Service::new(config).start(&rt).unwrap();
    (rt, h, id)
}

/// curl with extra arguments; its status code (`000` when the connection failed).
fn curl(args: &[&str]) -> String {
    let out = run(Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .args(args));
    text(&out.stdout)
}

/// True when the server closed `s` without a byte of answer (within the read timeout).
fn closed_unanswered(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// `smolrtc_tls_handshake_failures_total` of the service's `/metrics` (over HTTPS).
fn tls_failures(cacert: &str, port: u16) -> u64 {
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert", cacert])
        .arg(format!("https://127.0.0.1:{port}/metrics")));
    text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("smolrtc_tls_handshake_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("smolrtc_tls_handshake_failures_total in /metrics")
}

#[test]
fn https_with_bad_tls_input_refused_and_others_served() {
    let dir = temp_dir("tls");
    let (_rt, h, id) = tls_service(&dir);
    let port = h.addr.port();
    let cacert = dir.join("cert.pem");
    let cacert = cacert.to_str().unwrap();
    let by_ip = format!("https://127.0.0.1:{port}/api/sessions");
    // The counter is process-wide (other tests' services may add to it): it only rises.
    let failures_before = tls_failures(cacert, port);
    // An IP address: no SNI at all.
    assert_eq!(curl(&["--cacert", cacert, &by_ip]), "200");
    // SNI `localhost`.
    let resolve = format!("localhost:{port}:127.0.0.1");
    let by_name = format!("https://localhost:{port}/api/sessions");
    assert_eq!(
        curl(&["--cacert", cacert, "--resolve", &resolve, &by_name]),
        "200"
    );
    // A wrong SNI: the handshake completes (one certificate for every name; the client
    // pins its key), then the Host check refuses the API.
    let pin = format!("sha256//{}", id.spki_sha256());
    let wrong = format!("wrong.example:{port}:127.0.0.1");
    let url = format!("https://wrong.example:{port}/api/sessions");
    assert_eq!(
        curl(&["-k", "--pinnedpubkey", &pin, "--resolve", &wrong, &url]),
        "421"
    );
    // The pin is what is trusted: another key's pin fails the handshake.
    let other = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(curl(&["-k", "--pinnedpubkey", other, &by_ip]), "000");

    // Plain HTTP to the TLS port: a redirect to the same URL over https://.
    let r = request(h.addr, "GET", "/api/sessions?x=1", None, b"");
    assert_eq!(r.status, 308, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("https://127.0.0.1:{port}/api/sessions?x=1").as_str())
    );
    // ... but never to a name the client chose.
    let r = request_from(h.addr, None, "GET", "/", &["Host: evil.example"], None, b"");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("HTTPS"), "{}", r.text());
    assert!(r.header("location").is_none());

    // Garbage: closed unanswered.
    let mut g = TcpStream::connect(h.addr).unwrap();
    g.write_all(b"\x00\x01\x02garbage\r\n\r\n").unwrap();
    assert!(closed_unanswered(&mut g));
    // A TLS record header claiming a ClientHello that is never sent: garbage too.
    let mut g = TcpStream::connect(h.addr).unwrap();
    g.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    assert!(closed_unanswered(&mut g));
    // Both counted in /metrics (good handshakes and the redirect are not).
    let failures = tls_failures(cacert, port);
    assert!(
        failures >= failures_before + 2,
        "{failures_before} -> {failures}"
    );

    // Slowloris: handshakes begun and left hanging (half a record; nothing at all). Others
    // are served meanwhile; the hanging ones are closed at header_timeout.
    let mut slow: Vec<TcpStream> = (0..6)
        .map(|i| {
            let mut s = TcpStream::connect(h.addr).unwrap();
            if i % 2 == 0 {
                s.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
            }
            s
        })
        .collect();
    assert_eq!(curl(&["--cacert", cacert, &by_ip]), "200");
    for s in &mut slow {
        assert!(closed_unanswered(s), "a hanging handshake was kept");
    }
    assert_eq!(curl(&["--cacert", cacert, &by_ip]), "200");
    // The six slow handshakes are failures too.
    let slow_failures = tls_failures(cacert, port);
    assert!(
        slow_failures >= failures + 6,
        "{failures} -> {slow_failures}"
    );
    h.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ Chromium on a LAN

/// Chromium opens the page at https://10.0.0.2:PORT, trusting the certificate through
/// `--ignore-certificate-errors-spki-list` only: a data channel and the fake camera
/// (getUserMedia, a secure context), a WHEP viewer decoding; over plain http:// the page
/// says it needs HTTPS. Runs inside `unshare -n` with a veth pair 10.0.0.1 <-> 10.0.0.2.
#[test]
fn chromium_over_https_on_a_lan_address() {
    const NAME: &str = "chromium_over_https_on_a_lan_address";
    if std::env::var_os(NETNS_ENV).is_none() {
        return reexec_in_namespace(NAME);
    }
    common::init_log();
    let dir = temp_dir("lan");
    let (_rt, h, plain, id) = lan_services(&dir);
    let base = format!("https://{DEVICE}:{}", h.addr.port());

    // Trusted by the pin: the page is there. Another pin: Chromium refuses the page.
    let dom = chromium_dom(&dir, &format!("{base}/"), Some(id.spki_sha256()));
    assert!(
        dom.contains("data channels to this device"),
        "the page did not load:\n{dom}"
    );
    assert!(
        !dom.contains("needs-https"),
        "a secure page has mediaDevices:\n{dom}"
    );
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let dom = chromium_dom(&dir, &format!("{base}/"), Some(other));
    assert!(
        !dom.contains("data channels to this device"),
        "loaded without trust:\n{dom}"
    );

    // The self-test: a data channel echoing, getUserMedia with the fake camera.
    let url = format!("{base}/?auto=1&mode=http&echo=5&camera=1&report=/api/report");
    let report = chromium_report(&dir, &url, id.spki_sha256(), &h);
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["steps"]["gum"], true, "{report:#}");
    assert_eq!(report["steps"]["camera"], true, "{report:#}");

    // A WHEP viewer of the file stream decodes frames.
    // 150 frames (5 s): long enough for sender reports and the receiver reports answering them.
    let url = format!("{base}/?watch=cam&auto=1&frames=150&report=/api/report");
    let report = chromium_report(&dir, &url, id.spki_sha256(), &h);
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(report["streams"]["cam"]["framesDecoded"].as_u64().unwrap() >= 150);
    // /metrics over HTTPS (curl trusting the certificate file): the viewer's receiver
    // reports gave round-trip times, and media went out.
    let cacert = dir.join("cert.pem");
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&cacert)
        .arg(format!("{base}/metrics")));
    let metrics = text(&out.stdout);
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert!(sample("smolrtc_rtt_seconds_count") > 0.0, "{metrics}");
    assert!(sample("smolrtc_bytes_sent_total") > 20_000.0, "{metrics}");
    assert!(sample("smolrtc_sessions_total") >= 2.0, "{metrics}");

    // Plain http:// on the LAN address: no mediaDevices, and the page says why.
    let dom = chromium_dom(
        &dir,
        &format!("http://{DEVICE}:{}/", plain.addr.port()),
        None,
    );
    assert!(dom.contains("id=\"needs-https\""), "{dom}");
    assert!(dom.contains("Camera and microphone need HTTPS"), "{dom}");
    h.shutdown();
    plain.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// On 10.0.0.2 (inside the namespace): the service over TLS with a file stream `cam`, its
/// certificate (for 10.0.0.2 and camera.local) written to `dir`, and the same service over
/// plain HTTP without streams.
fn lan_services(dir: &Path) -> (Runtime, ServiceHandle, ServiceHandle, TlsIdentity) {
    let device: IpAddr = DEVICE.parse().unwrap();
    let made =
        SelfSigned::generate(&["camera.local".into()], &[device], SELF_SIGNED_VALIDITY).unwrap();
    made.write(dir).unwrap();
    let id = TlsIdentity::from_pem(made.cert_pem.as_bytes(), made.key_pem.as_bytes()).unwrap();
    let rt = Runtime::new().unwrap();
    let mut config = ServiceConfig {
        listen: SocketAddr::new(device, 0),
        ..Default::default()
    };
    config.peer.ice.hosts.addresses = vec![device];
    let plain = Service::new(config.clone()).start(&rt).unwrap();
    config.tls = Some(id.clone());
    let source = format!("file:{}", h264_file(dir).display());
    StreamConfig::add_source(&mut config.streams, MediaKind::Video, "cam", &source).unwrap();
    let h = Service::new(config).start(&rt).unwrap();
    (rt, h, plain, id)
}

/// Firefox ESR with the certificate imported into its profile (`certutil -t C,,`: the
/// self-signed certificate is its own trust anchor for TLS servers; no exception, no
/// blanket override; `P,,`, "trusted peer", is refused by Firefox): the self-test at
/// https://10.0.0.2:PORT passes with a data channel signaled over the WebSocket (wss://)
/// and the fake camera.
#[test]
fn firefox_over_https_trusting_the_imported_certificate() {
    const NAME: &str = "firefox_over_https_trusting_the_imported_certificate";
    if std::env::var_os(NETNS_ENV).is_none() {
        return reexec_in_namespace(NAME);
    }
    common::init_log();
    let dir = temp_dir("firefox");
    let (_rt, h, plain, _id) = lan_services(&dir);
    let exe = "/usr/bin/firefox-esr";
    assert!(Path::new(exe).exists(), "{exe} is missing (.ci/setup)");
    let profile = dir.join("profile");
    std::fs::create_dir_all(&profile).unwrap();
    std::fs::write(profile.join("user.js"), FIREFOX_PREFS).unwrap();
    let db = format!("sql:{}", profile.display());
    let out = run(Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]));
    assert!(out.status.success(), "certutil -N: {}", text(&out.stderr));
    let cert = dir.join("cert.pem");
    let out = run(Command::new("certutil")
        .args(["-A", "-n", "smolrtc", "-t", "C,,", "-d", &db, "-i"])
        .arg(&cert));
    assert!(out.status.success(), "certutil -A: {}", text(&out.stderr));

    let url = format!(
        "https://{DEVICE}:{}/?auto=1&mode=ws&echo=5&camera=1&report=/api/report",
        h.addr.port()
    );
    let log = std::fs::File::create(dir.join("firefox.log")).unwrap();
    let mut child = Command::new("timeout")
        .args([
            "-k",
            "5",
            "150",
            exe,
            "--headless",
            "--no-remote",
            "--profile",
        ])
        .arg(&profile)
        .arg(&url)
        .env("HOME", &profile)
        .env("TMPDIR", &profile)
        .env("MOZ_REMOTE_SETTINGS_DEVTOOLS", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    let report = h.next_report(Duration::from_secs(120));
    // SAFETY: kill(2) on the process group this test made.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
    let report = report.unwrap_or_else(|| {
        let log = std::fs::read_to_string(dir.join("firefox.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!("no report from Firefox; it said:\n{}", tail.join("\n"))
    });
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["mode"], "ws", "{report:#}");
    assert_eq!(report["steps"]["gum"], true, "{report:#}");
    assert_eq!(report["steps"]["camera"], true, "{report:#}");
    h.shutdown();
    plain.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Firefox prefs: fake media and its permission, console on stdout, no background traffic.
const FIREFOX_PREFS: &str = include_str!("fixtures/sdp/firefox-prefs.js");

fn h264_file(dir: &Path) -> PathBuf {
    common::media::video(dir, "H264", "testsrc=size=320x240:rate=30", 4, 0)
}

/// The Chromium command: headless, fresh profile under `dir`, fake media, `timeout`-capped.
fn chromium(dir: &Path, seconds: u64, spki: Option<&str>) -> Command {
    let exe = "/usr/bin/chromium";
    assert!(Path::new(exe).exists(), "{exe} is missing (.ci/setup)");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let profile = dir.join(format!("p{nanos:x}"));
    std::fs::create_dir_all(&profile).unwrap();
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &seconds.to_string(), exe]).args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
    ]);
    // Trust by the certificate's public key only; no blanket --ignore-certificate-errors.
    if let Some(spki) = spki {
        cmd.arg(format!("--ignore-certificate-errors-spki-list={spki}"));
    }
    cmd.arg(format!("--user-data-dir={}", profile.display()))
        .env("HOME", &profile)
        .env("TMPDIR", &profile)
        .stdin(Stdio::null())
        .process_group(0);
    cmd
}

/// The page's DOM after its scripts ran a few seconds (`--dump-dom`).
fn chromium_dom(dir: &Path, url: &str, spki: Option<&str>) -> String {
    let out = run(chromium(dir, 60, spki)
        .args(["--virtual-time-budget=5000", "--dump-dom", url])
        .stderr(Stdio::null()));
    text(&out.stdout)
}

/// Loads `url` (an unattended run that posts to /api/report) and waits for the report.
fn chromium_report(dir: &Path, url: &str, spki: &str, h: &ServiceHandle) -> serde_json::Value {
    let log = std::fs::File::create(dir.join("chromium.log")).unwrap();
    let mut child = chromium(dir, 150, Some(spki))
        .arg(url)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let report = h.next_report(Duration::from_secs(120));
    // SAFETY: kill(2) on the process group this test made.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
    report.unwrap_or_else(|| {
        let log = std::fs::read_to_string(dir.join("chromium.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!("no report from {url}; chromium said:\n{}", tail.join("\n"))
    })
}

/// Runs this test again inside `unshare -n`, with lo up and a veth pair (10.0.0.1 and
/// 10.0.0.2, both ends in the namespace: the page's address is not loopback).
fn reexec_in_namespace(name: &str) {
    let script = "ip link set lo up && \
        ip link add lan0 type veth peer name lan1 && \
        ip addr add 10.0.0.1/24 dev lan0 && ip addr add 10.0.0.2/24 dev lan1 && \
        ip link set lan0 up && ip link set lan1 up && exec \"$0\" \"$@\"";
    let out = run(Command::new("unshare")
        .args(["-n", "sh", "-c", script])
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1"));
    print!("{}", text(&out.stdout));
    eprint!("{}", text(&out.stderr));
    assert!(
        out.status.success(),
        "{name} failed inside `unshare -n` with a veth pair ({}); it needs root, unshare \
         and ip (.ci/setup)",
        out.status
    );
}
