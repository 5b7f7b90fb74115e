//! Fleet signaling end to end: `smolrtc serve --mqtt --listen none` behind Debian's
//! mosquitto (deploy/mosquitto's configuration), a native smolrtc peer playing the browser
//! through the broker's WebSocket listener, echoing on a data channel; a broker restart
//! mid-session; a device restart (status offline, then online); bad messages.

#[path = "fleet/broker.rs"]
mod broker;
#[path = "common/media.rs"]
mod media;

use broker::{Broker, BROWSER, DEVICE};
use bytes::Bytes;
use smolrtc::mqtt::{MqttClient, MqttEvent, MqttOptions, MqttUrl};
use smolrtc::{ChannelInit, Config, Description, Event, IceCandidateInit, Message, PeerConnection};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A short VP8 file made by ffmpeg: the device's stream `cam`, named in its status.
fn camera_file(broker: &Broker) -> std::path::PathBuf {
    media::video(&broker.dir, "VP8", "testsrc=size=160x120:rate=15", 1, 0)
}

/// The device process, killed when the test ends either way: a panicking test must not
/// leave it running (it would hold the test's stderr, and so `cargo test`'s pipe, open).
struct Device(Child);

impl std::ops::Deref for Device {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Device {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn device(broker: &Broker) -> Device {
    let pass = broker.dir.join("dev1.pass");
    std::fs::write(&pass, format!("{}\n", DEVICE.1)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_smolrtc"))
        .args([
            "serve",
            "--listen",
            "none",
            "--loopback",
            "--ice-address",
            "127.0.0.1",
        ])
        .args([
            "--video",
            &format!("cam=file:{}", camera_file(broker).display()),
        ])
        .args(["--device-id", "dev1", "--mqtt-password-file"])
        .arg(&pass)
        .args([
            "--mqtt",
            &format!("mqtt://{}@127.0.0.1:{}", DEVICE.0, broker.tcp),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Device)
        .unwrap()
}

struct Browser {
    id: String,
    c: MqttClient,
    events: async_channel::Receiver<MqttEvent>,
}

impl Browser {
    fn new(broker: &Broker, id: &str) -> Self {
        let url = format!("ws://{}:{}@127.0.0.1:{}", BROWSER.0, BROWSER.1, broker.ws);
        let mut o = MqttOptions::new(MqttUrl::parse(&url).unwrap(), id);
        o.max_backoff = Duration::from_millis(500);
        let (c, events, task) = MqttClient::new(o);
        std::thread::spawn(move || smol::block_on(task));
        let b = Self {
            id: id.into(),
            c,
            events,
        };
        smol::block_on(b.c.subscribe("smolrtc/+/status")).unwrap();
        smol::block_on(b.c.subscribe(&format!("smolrtc/dev1/out/{id}"))).unwrap();
        b
    }

    /// The next message `f` picks.
    async fn expect<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&str, serde_json::Value) -> Option<T>,
    ) -> T {
        futures_lite::future::or(
            async {
                while let Ok(e) = self.events.recv().await {
                    if let MqttEvent::Message { topic, payload } = e {
                        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                        if let Some(t) = f(&topic, v) {
                            return t;
                        }
                    }
                }
                panic!("{what}: client ended")
            },
            async {
                async_io::Timer::after(WAIT).await;
                panic!("{what}: not within {WAIT:?}")
            },
        )
        .await
    }

    async fn reply(&self, kind: &str) -> serde_json::Value {
        let out = format!("smolrtc/dev1/out/{}", self.id);
        self.expect(kind, |t, v| (t == out && v["type"] == kind).then_some(v))
            .await
    }

    async fn status(&self, online: bool) -> serde_json::Value {
        self.expect("status", |t, v| {
            (t == "smolrtc/dev1/status" && v["online"] == online).then_some(v)
        })
        .await
    }

    async fn send(&self, v: serde_json::Value) {
        let topic = format!("smolrtc/dev1/in/{}", self.id);
        self.c
            .publish(&topic, Bytes::from(v.to_string()), false)
            .await
            .unwrap();
    }

    /// Signals a native peer through the broker; returns it once its echo channel is open.
    async fn connect(&self) -> (PeerConnection, smolrtc::DataChannel) {
        let pc = PeerConnection::new(Config::loopback(&self.id)).unwrap();
        let mut events = pc.events();
        let ch = pc
            .create_data_channel("echo", ChannelInit::default())
            .await
            .unwrap();
        let offer = pc.create_offer().await.unwrap();
        pc.set_local_description(offer.clone()).await.unwrap();
        self.send(
            serde_json::json!({"type":"description","value":{"type":"offer","sdp":offer.sdp}}),
        )
        .await;
        let answer = self.reply("description").await;
        let answer = Description::from_json(&answer["value"].to_string()).unwrap();
        pc.set_remote_description(answer).await.unwrap();
        let out = format!("smolrtc/dev1/out/{}", self.id);
        let opened = futures_lite::future::or(
            async {
                loop {
                    match events.next().await {
                        Some(Event::IceCandidate(c)) => {
                            let v = c.map_or(serde_json::Value::Null, |c| {
                                serde_json::to_value(c).unwrap()
                            });
                            self.send(serde_json::json!({"type":"candidate","value":v}))
                                .await;
                        }
                        // Ours: the service's rawrtc flow opens its own channels too.
                        Some(Event::ChannelOpen(c)) if c.label() == "echo" => return true,
                        Some(_) => {}
                        None => return false,
                    }
                }
            },
            async {
                loop {
                    let v = self
                        .expect("candidate", |t, v| {
                            (t == out && v["type"] == "candidate").then_some(v)
                        })
                        .await;
                    let c = if v["value"].is_null() {
                        IceCandidateInit {
                            candidate: String::new(),
                            sdp_mid: None,
                            sdp_mline_index: None,
                            username_fragment: None,
                        }
                    } else {
                        IceCandidateInit::from_json(&v["value"].to_string()).unwrap()
                    };
                    let _ = pc.add_ice_candidate(c).await;
                }
            },
        );
        let opened = futures_lite::future::or(opened, async {
            async_io::Timer::after(WAIT).await;
            false
        })
        .await;
        assert!(opened, "{}: the echo channel did not open", self.id);
        let (pc2, ch2) = (pc.clone(), ch.clone());
        drop(events);
        (pc2, ch2)
    }
}

async fn echo(pc: &PeerConnection, ch: &smolrtc::DataChannel, text: &str) {
    let mut events = pc.events();
    ch.send(Message::Text(text.into())).await.unwrap();
    let got = futures_lite::future::or(
        async {
            loop {
                match events.next().await {
                    Some(Event::ChannelMessage(_, Message::Text(t))) => return t,
                    Some(_) => {}
                    None => panic!("peer ended"),
                }
            }
        },
        async {
            async_io::Timer::after(WAIT).await;
            panic!("no echo of {text}")
        },
    )
    .await;
    assert_eq!(got, text);
}

#[test]
fn a_browser_reaches_the_device_through_the_broker_and_survives_restarts() {
    let mut broker = Broker::start("fleet-e2e");
    let mut dev = device(&broker);
    smol::block_on(async {
        let c1 = Browser::new(&broker, "c1");
        let st = c1.status(true).await;
        assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(st["streams"], serde_json::json!(["cam"]), "{st}");

        c1.send(serde_json::json!({"type":"hello"})).await;
        let servers = c1.reply("ice-servers").await;
        assert!(servers["value"].is_array(), "{servers}");

        // Bad input gets an error reply naming the fault; the device goes on.
        c1.send(serde_json::json!({"type":"shout"})).await;
        assert!(c1.reply("error").await["value"]
            .as_str()
            .unwrap()
            .contains("unknown message type"));
        c1.send(serde_json::json!({"type":"candidate","value":null}))
            .await;
        assert!(c1.reply("error").await["value"]
            .as_str()
            .unwrap()
            .contains("unknown session"));

        let (pc, ch) = c1.connect().await;
        echo(&pc, &ch, "through the broker").await;

        // The broker restarts mid-session: the peer-to-peer session goes on; signaling
        // resumes for the same client, and a new client connects.
        broker.restart();
        echo(&pc, &ch, "during the broker restart").await;
        c1.send(serde_json::json!({"type":"hello"})).await;
        c1.reply("ice-servers").await;
        let c2 = Browser::new(&broker, "c2");
        let (pc2, ch2) = c2.connect().await;
        echo(&pc2, &ch2, "a new session after the restart").await;

        // A bye ends the session on the device: the channel closes.
        c2.send(serde_json::json!({"type":"bye"})).await;
        pc2.close().await;

        // The device dies: the broker publishes its will; it comes back online.
        let watcher = Browser::new(&broker, "c3");
        watcher.status(true).await;
        dev.kill().unwrap();
        dev.wait().unwrap();
        watcher.status(false).await;
        dev = device(&broker);
        watcher.status(true).await;
        pc.close().await;
    });
    // A clean stop publishes offline (no will needed).
    unsafe { libc::kill(dev.id() as i32, libc::SIGTERM) };
    assert!(dev.wait().unwrap().success());
    let sub = broker.sub(BROWSER, "c4", "smolrtc/dev1/status", 1, 10);
    let out = sub.wait_with_output().unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("\"online\":false"), "{line}");
}
