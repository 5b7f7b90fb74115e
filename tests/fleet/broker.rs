//! A real mosquitto for the fleet tests, run with deploy/mosquitto's configuration (the
//! ports, paths and TLS files replaced by the test's own), on free loopback ports.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    pub dir: PathBuf,
    pub tcp: u16,
    pub tls: u16,
    pub ws: u16,
    child: Option<Child>,
}

/// Users made in every broker: (name, password).
pub const DEVICE: (&str, &str) = ("dev1", "dev1-pass");
pub const DEVICE2: (&str, &str) = ("dev2", "dev2-pass");
pub const BROWSER: (&str, &str) = ("browser-alice", "alice-pass");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn have_mosquitto() -> bool {
    Path::new("/usr/sbin/mosquitto").exists() && Path::new("/usr/bin/mosquitto_passwd").exists()
}

impl Broker {
    /// Starts mosquitto in a fresh temporary directory, listening on loopback.
    pub fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1")
    }

    /// Starts mosquitto listening on `bind` (and loopback, when `bind` is 0.0.0.0), in the
    /// calling thread's network namespace.
    pub fn start_on(name: &str, bind: &str) -> Self {
        assert!(
            have_mosquitto(),
            "mosquitto is not installed: run .ci/setup (apt-get install mosquitto mosquitto-clients)"
        );
        let dir = std::env::temp_dir().join(format!("smolrtc-mqtt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mosquitto");
        // TLS: a CA and a server certificate for localhost.
        let ok = Command::new("sh")
            .current_dir(&dir)
            .arg("-c")
            .arg(
                "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca \
                 -keyout ca.key -out ca.pem && \
                 openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
                 -keyout server.key -out server.csr && \
                 printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext && \
                 openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                 -days 2 -extfile ext -out server.crt",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl failed");
        let passwd = dir.join("passwd");
        std::fs::write(&passwd, "").unwrap();
        for (u, p) in [DEVICE, DEVICE2, BROWSER] {
            let ok = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&passwd)
                .args([u, p])
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
        std::fs::copy(deploy.join("smolrtc.acl"), dir.join("acl")).unwrap();
        let conf = std::fs::read_to_string(deploy.join("mosquitto.conf")).unwrap();
        let (tcp, tls, ws) = (free_port(), free_port(), free_port());
        let d = dir.display();
        let conf = conf
            .replace("/etc/mosquitto/smolrtc.passwd", &format!("{d}/passwd"))
            .replace("/etc/mosquitto/smolrtc.acl", &format!("{d}/acl"))
            .replace("/var/lib/mosquitto/", &format!("{d}/"))
            .replace("/etc/mosquitto/certs/", &format!("{d}/"))
            .replace("listener 1883", &format!("listener {tcp} {bind}"))
            .replace("listener 8883", &format!("listener {tls} {bind}"))
            .replace("listener 8083", &format!("listener {ws} {bind}"));
        // Run as root is the test's: mosquitto would switch to its own user, which cannot
        // read the test's files.
        let conf = format!("user root\n{conf}");
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut b = Self {
            dir,
            tcp,
            tls,
            ws,
            child: None,
        };
        b.run();
        b
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .arg("-v")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [self.tcp, self.tls, self.ws] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "mosquitto did not listen on {port}: {}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops mosquitto (SIGTERM: it saves its persistent sessions).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Adds users to the password file (the ACL's patterns give each its own subtree) and
    /// has mosquitto reload it (SIGHUP).
    pub fn add_users(&self, users: &[(String, String)]) {
        let passwd = self.dir.join("passwd");
        for (u, p) in users {
            let ok = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&passwd)
                .args([u, p])
                .status()
                .unwrap()
                .success();
            assert!(ok, "mosquitto_passwd {u}");
        }
        let pid = self.child.as_ref().expect("mosquitto running").id();
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        // The reload is done once the new users can log in.
        let (u, p) = users.last().expect("a user");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.tcp.to_string()])
            .args(["-u", u, "-P", p, "-t", &format!("smolrtc/{u}/probe"), "-E"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not reload its users"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn url(&self, scheme: &str, user: (&str, &str)) -> String {
        let (host, port) = match scheme {
            "mqtt" => ("127.0.0.1", self.tcp),
            "mqtts" => ("localhost", self.tls),
            "ws" => ("127.0.0.1", self.ws),
            _ => panic!("{scheme}"),
        };
        format!("{scheme}://{}:{}@{host}:{port}", user.0, user.1)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// mosquitto_sub: waits for `count` messages on `topic` (at most `secs`), returns
    /// the lines (`-v`: topic payload).
    pub fn sub(&self, user: (&str, &str), id: &str, topic: &str, count: usize, secs: u32) -> Child {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.tcp.to_string()])
            .args(["-u", user.0, "-P", user.1, "-i", id, "-q", "1", "-v"])
            .args([
                "-t",
                topic,
                "-C",
                &count.to_string(),
                "-W",
                &secs.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// mosquitto_pub of one message; returns whether it exited 0 and its stderr.
    pub fn publish(
        &self,
        user: (&str, &str),
        id: &str,
        topic: &str,
        msg: &str,
        retain: bool,
    ) -> (bool, String) {
        let mut c = Command::new("mosquitto_pub");
        c.args(["-h", "127.0.0.1", "-p", &self.tcp.to_string()])
            .args(["-u", user.0, "-P", user.1, "-i", id, "-q", "1"])
            .args(["-t", topic, "-m", msg]);
        if retain {
            c.arg("-r");
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
