//! Real browsers in a private network namespace, for the test files that drive the page
//! (shared by tests/browser.rs, tests/ingest.rs and tests/https.rs).
//!
//! Under plain `cargo test` a case re-executes its own test binary under
//! `unshare -n sh -c 'ip link set lo up && exec ...'` with `SMOLRTC_IN_NETNS=1` set, and the
//! re-executed copy does the work ([`in_namespace`] says which copy this is). Needs root,
//! `unshare`, `ip`, `/usr/bin/chromium` and `firefox-esr` (`.ci/setup` installs them).

use smolrtc::service::ServiceHandle;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Set in the re-executed copy that runs inside the namespace.
pub const NETNS_ENV: &str = "SMOLRTC_IN_NETNS";
/// Printed by the re-executed copy first thing, so the parent can tell that `unshare` worked.
pub const NETNS_MARKER: &str = "browser test: inside a private network namespace";
/// Longest wait for the page's report.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(150);
/// Hard cap on a browser's life (enforced by `timeout`, also if this process is killed).
const BROWSER_LIFETIME_S: u64 = 300;
/// Hard cap on one re-executed case, as seen by the parent.
const CASE_TIMEOUT: Duration = Duration::from_secs(330);

/// The browser cases run one at a time (2 cores): each holds this while it runs.
pub static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrowserKind {
    Chromium,
    Firefox,
}

/// Whether this is the copy inside the namespace; if so, prints the marker and checks that
/// only `lo` is up.
pub fn in_namespace(name: &str) -> bool {
    if std::env::var_os(NETNS_ENV).is_none() {
        return false;
    }
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
    true
}

// ------------------------------------------------------------------------ outside

pub fn reexec_in_namespace(name: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(&exe)
        .args([
            name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(NETNS_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!(
            "{name}: cannot run `unshare` ({e}): the browser tests need util-linux's unshare \
             and iproute2's ip (run .ci/setup)"
        ),
    };
    let guard = KillGroup(child.id());
    // Stream both outputs through print!, so that libtest shows them live with --nocapture
    // and keeps them for a failure report without it.
    let out = child.stdout.take().map(|s| forward(s, false));
    let err = child.stderr.take().map(|s| forward(s, true));
    let status = wait_bounded(&mut child, CASE_TIMEOUT);
    drop(guard);
    let saw_marker = [out, err]
        .into_iter()
        .flatten()
        .any(|h| h.join().unwrap_or(false));
    match status {
        None => panic!("{name}: the re-executed test did not finish in {CASE_TIMEOUT:?}: killed"),
        Some(s) if !saw_marker => panic!(
            "{name}: `unshare -n` + `ip link set lo up` failed ({s}); the browser tests need \
             root (CAP_SYS_ADMIN) for a private network namespace"
        ),
        Some(s) => assert!(
            s.success(),
            "{name}: failed inside the network namespace ({s})"
        ),
    }
}

/// Copies a child's output to ours line by line; returns whether the marker was seen.
fn forward<R: Read + Send + 'static>(r: R, stderr: bool) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let mut seen = false;
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            seen |= line.contains(NETNS_MARKER);
            // Prefixed, so the inner run's own "test result" lines are not counted twice.
            if stderr {
                eprintln!("netns| {line}");
            } else {
                println!("netns| {line}");
            }
        }
        seen
    })
}

pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => return None,
        }
    }
}

/// Kills a process group when dropped (a no-op once it is gone).
pub struct KillGroup(pub u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        signal_group(self.0, "KILL");
    }
}

pub fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops the service when dropped.
pub struct StopService(pub ServiceHandle);

impl Drop for StopService {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// Waits for the page's report; gives up early (with a failure) if the browser exits.
pub fn wait_report(
    service: &ServiceHandle,
    browser: &mut Browser,
    failures: &mut Vec<String>,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + REPORT_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(r) = service.next_report(Duration::from_secs(1)) {
            return Some(r);
        }
        if let Some(status) = browser.exited() {
            // A report posted just before the exit is still taken.
            let r = service.next_report(Duration::from_secs(1));
            if r.is_none() {
                failures.push(format!("the browser exited ({status}) without a report"));
            }
            return r;
        }
    }
    None
}

// ------------------------------------------------------------------------ browsers

/// A headless browser in its own process group, with a fresh profile in a temp dir; killed
/// (group) and its dir removed when dropped.
pub struct Browser {
    child: Option<Child>,
    dir: PathBuf,
    pub log: PathBuf,
}

impl Browser {
    pub fn launch(kind: BrowserKind, url: &str) -> Self {
        Self::launch_with(kind, url, &[])
    }

    /// [`Browser::launch`] with extra command-line arguments (Chromium's
    /// `--host-resolver-rules`, say).
    pub fn launch_with(kind: BrowserKind, url: &str, extra: &[&str]) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        // Short: Chromium's singleton socket goes under $TMPDIR and must fit in 108 bytes.
        let dir = std::env::temp_dir().join(format!("smolrtc-{}-{nanos:x}", std::process::id()));
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).expect("browser temp dir");
        let log = dir.join("browser.log");
        let log_file = std::fs::File::create(&log).expect("browser log file");
        let log_err = log_file.try_clone().expect("browser log file");

        // `timeout` caps the browser's life even if this process dies; it also makes its
        // own process group, which holds every process of the browser.
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &BROWSER_LIFETIME_S.to_string()]);
        match kind {
            BrowserKind::Chromium => {
                let exe = "/usr/bin/chromium";
                assert!(
                    Path::new(exe).exists(),
                    "{exe} is missing: install it (apt-get install chromium; see .ci/setup)"
                );
                cmd.arg(exe).args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--allow-loopback-in-peer-connection",
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    "--enable-logging=stderr",
                    "--v=0",
                ]);
                cmd.arg(format!("--user-data-dir={}", profile.display()));
                cmd.args(extra);
            }
            BrowserKind::Firefox => {
                let exe = "/usr/bin/firefox-esr";
                assert!(
                    Path::new(exe).exists(),
                    "{exe} is missing: install it (apt-get install firefox-esr; see .ci/setup)"
                );
                std::fs::write(profile.join("user.js"), FIREFOX_PREFS).expect("user.js");
                cmd.arg(exe)
                    .args(["--headless", "--no-remote", "--profile"])
                    .arg(&profile)
                    .env("MOZ_REMOTE_SETTINGS_DEVTOOLS", "1");
            }
        }
        cmd.arg(url)
            .env("HOME", &profile)
            .env("XDG_RUNTIME_DIR", &profile)
            .env("TMPDIR", &dir)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {kind:?}: {e}"));
        Self {
            child: Some(child),
            dir,
            log,
        }
    }

    /// `Some` once the browser's main process (under `timeout`) has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// TERM the browser's process group, KILL it after a few seconds.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id();
        signal_group(pgid, "TERM");
        if wait_bounded(&mut child, Duration::from_secs(5)).is_none() {
            signal_group(pgid, "KILL");
            let _ = child.wait();
        }
        // Stragglers of the group (helpers that outlived the main process).
        signal_group(pgid, "KILL");
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Firefox prefs for a loopback-only namespace: loopback candidates, a media permission
/// (without one Firefox gathers only the default route's address, and there is none), fake
/// media, console on stdout, and no background traffic.
/// The same file `tests/fixtures/sdp/capture.py` gives the Firefox it captures offers from.
const FIREFOX_PREFS: &str = include_str!("../fixtures/sdp/firefox-prefs.js");
