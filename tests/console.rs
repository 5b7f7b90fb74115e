//! The console peer end to end: two `smolrtc peer` processes on 127.0.0.1, the copy and
//! paste of descriptions scripted through their stdin and stdout, the rawrtc flow checked
//! in their stderr logs (the stable lines listed in `smolrtc peer`'s source, src/bin/smolrtc/console.rs).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A `smolrtc peer` child, killed when dropped (also when a check panics).
struct Peer {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Peer {
    fn start(name: &'static str, role: &str) -> Peer {
        Peer::start_at(name, role, "info")
    }

    /// A peer logging at `level` (`RUST_LOG`).
    fn start_at(name: &'static str, role: &str, level: &str) -> Peer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
            .args(["peer", role, "--ice-address", "127.0.0.1"])
            .env("RUST_LOG", level)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start smolrtc peer");
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let err = child.stderr.take().unwrap();
        let log2 = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let (lines, cv) = &*log2;
                lines.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        Peer {
            name,
            child,
            stdin,
            stdout,
            log,
        }
    }

    fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").expect("write to peer stdin");
        stdin.flush().unwrap();
    }

    fn read_description(&self) -> String {
        let line = self
            .stdout
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("{}: no description on stdout\n{}", self.name, self.dump()));
        assert!(line.starts_with('{'), "{}: stdout line {line:?}", self.name);
        line
    }

    /// Waits for `count` stderr lines containing every one of `parts`.
    fn wait_for_n(&self, parts: &[&str], count: usize) {
        let deadline = Instant::now() + TIMEOUT;
        let (lines, cv) = &*self.log;
        let mut guard = lines.lock().unwrap();
        loop {
            let found = guard
                .iter()
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .count();
            if found >= count {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                drop(guard);
                panic!("{}: no log line with {parts:?}\n{}", self.name, self.dump());
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    fn wait_for(&self, parts: &[&str]) {
        self.wait_for_n(parts, 1)
    }

    fn dump(&self) -> String {
        let lines = self.log.0.lock().unwrap();
        format!("--- {} stderr ---\n{}", self.name, lines.join("\n"))
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit, at most `within`.
    fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(code) = self.child.try_wait().unwrap() {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {within:?}\n{}",
                self.name,
                self.dump()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many stderr lines hold every one of `parts` and none of `not`, case aside.
    fn count(&self, parts: &[&str], not: &[&str]) -> usize {
        let lines = self.log.0.lock().unwrap();
        lines
            .iter()
            .map(|l| l.to_lowercase())
            .filter(|l| parts.iter().all(|p| l.contains(p)) && !not.iter().any(|n| l.contains(n)))
            .count()
    }

    /// Offerer `a` and answerer `b` exchange descriptions.
    fn connect(a: &mut Peer, b: &mut Peer) {
        let offer = a.read_description();
        b.write_line(&offer);
        let answer = b.read_description();
        a.write_line(&answer);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_console_peers_run_the_rawrtc_flow() {
    let mut a = Peer::start("offerer", "--offer");
    let mut b = Peer::start("answerer", "--answer");

    let offer = a.read_description();
    assert!(offer.contains(r#""type":"offer""#), "{offer}");

    // Bad pastes are reported and the answerer keeps waiting.
    b.write_line("this is not json");
    b.wait_for(&["Invalid remote description: not JSON"]);
    b.write_line(r#"{"type":"offer","sdp":"v=0\r\nbogus line\r\n"}"#);
    b.wait_for(&["Invalid remote description: bad SDP: line 2"]);
    b.write_line("");
    b.write_line(r#"{"type":"answer","sdp":"v=0"}"#);
    b.wait_for(&["Invalid remote description: expected an offer, got an answer"]);
    assert!(b.running(), "answerer exited on bad input\n{}", b.dump());
    b.wait_for_n(&["Paste the remote description"], 4);

    b.write_line(&offer);
    let answer = b.read_description();
    assert!(answer.contains(r#""type":"answer""#), "{answer}");
    a.write_line(&answer);

    for p in [&a, &b] {
        p.wait_for(&["Connection state: connected"]);
        p.wait_for(&["Data channel open: cat-noises"]);
        p.wait_for(&["Incoming message for data channel cat-noises: 8192 bytes"]);
    }
    b.wait_for(&["(B) New data channel instance: bear-noises"]);
    b.wait_for(&["(B) Incoming message for data channel bear-noises: 16384 bytes"]);
    a.wait_for(&["(A) New data channel instance: lion-noises"]);
    a.wait_for(&["(A) Incoming message for data channel lion-noises: 8192 bytes"]);
    a.wait_for(&["(A) Data channel closed: bear-noises"]);
    b.wait_for(&["(B) Data channel closed: bear-noises"]);

    // Ctrl-C: the offerer closes everything and exits 0.
    let status = Command::new("kill")
        .args(["-INT", &a.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let code = a.exit_status(Duration::from_secs(5));
    assert!(code.success(), "offerer exited with {code}\n{}", a.dump());
    a.wait_for(&["(A) Closing (SIGINT)"]);
    a.wait_for(&["(A) Connection state: closed"]);
    a.wait_for(&["(A) bye"]);
    // The answerer hears the close_notify and ends too.
    b.wait_for(&["(B) Connection state: closed"]);
    b.wait_for(&["(B) bye"]);
}

#[test]
fn end_of_input_before_a_description_is_an_error() {
    let mut b = Peer::start("answerer", "--answer");
    b.write_line("garbage");
    drop(b.stdin.take());
    let code = b.exit_status(TIMEOUT);
    assert!(!code.success(), "exit {code}\n{}", b.dump());
    b.wait_for(&["standard input closed before a valid remote description"]);
}

/// Each event is one line at the level chosen with `RUST_LOG`: at `debug` the library's
/// own detail shows, but no event twice (not the library's per-event line, not rtc-ice's
/// copy of a state change); at `warn` no event lines at all.
#[test]
fn each_event_is_one_line_at_the_chosen_level() {
    let mut a = Peer::start_at("offerer", "--offer", "debug");
    let mut b = Peer::start_at("answerer", "--answer", "warn");
    Peer::connect(&mut a, &mut b);
    a.wait_for(&["(A) Incoming message for data channel lion-noises: 8192 bytes"]);
    a.wait_for(&["(A) Data channel closed: bear-noises"]);
    a.wait_for(&["(A) ICE selected candidate pair: "]);
    // The library's own detail is there at debug...
    assert!(
        a.count(&["dtls handshake complete"], &[]) == 1,
        "{}",
        a.dump()
    );
    assert!(a.count(&["debug"], &[]) > 0, "{}", a.dump());
    // ...and each event once.
    let once: [(&[&str], &[&str]); 10] = [
        (&["negotiation needed"], &[]),
        (&["signaling state: stable"], &[]),
        (&["gather", "complete"], &[]),
        (&["ice connection state: connected"], &[]),
        (&["connection state: connected"], &["ice connection"]),
        (&["connection state: checking"], &[]),
        (&["selected", "pair"], &[]),
        (&["cat-noises", "open"], &[]),
        (&["lion-noises", "open"], &[]),
        (&["bear-noises", "closed"], &[]),
    ];
    for (parts, not) in once {
        assert_eq!(a.count(parts, not), 1, "{parts:?}\n{}", a.dump());
    }
    let local = a.count(&["(a) ice candidate: candidate:"], &[]);
    assert!(local >= 1, "{}", a.dump());
    assert_eq!(
        a.count(&["candidate", "typ host"], &["remote", "pair"]),
        local,
        "{}",
        a.dump()
    );
    // The answerer at warn: it worked (the offerer heard its channel) and said nothing.
    assert_eq!(b.count(&["info"], &[]), 0, "{}", b.dump());
    assert_eq!(b.count(&["debug"], &[]), 0, "{}", b.dump());
}
