//! The console peer end to end: two `smolrtc peer` processes on 127.0.0.1, the copy and
//! paste of descriptions scripted through their stdin and stdout, the rawrtc flow checked
//! in their stderr logs (the stable lines listed in `smolrtc peer`'s source, src/bin/smolrtc/console.rs).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
            .args(["peer", role, "--ice-address", "127.0.0.1"])
            .env("RUST_LOG", "info")
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
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        if let Some(code) = a.child.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "offerer still running 5 s after SIGINT\n{}",
            a.dump()
        );
        thread::sleep(Duration::from_millis(20));
    };
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
    let deadline = Instant::now() + TIMEOUT;
    let code = loop {
        if let Some(code) = b.child.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "answerer still running after EOF\n{}",
            b.dump()
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(!code.success(), "exit {code}\n{}", b.dump());
    b.wait_for(&["standard input closed before a valid remote description"]);
}
