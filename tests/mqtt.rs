//! The MQTT client against Debian's real mosquitto, run with deploy/mosquitto's
//! configuration on free loopback ports: TCP, TLS and WebSocket; a broker restart (nothing
//! lost, nothing duplicated, subscriptions renewed); wrong credentials; the ACL; oversized
//! payloads.

#[path = "fleet/broker.rs"]
mod broker;

use broker::{Broker, BROWSER, DEVICE, DEVICE2};
use bytes::Bytes;
use smolrtc::mqtt::{MqttClient, MqttEvent, MqttOptions, MqttUrl};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

struct Client {
    c: MqttClient,
    events: async_channel::Receiver<MqttEvent>,
}

fn client(url: &str, id: &str, tweak: impl FnOnce(&mut MqttOptions)) -> Client {
    let mut o = MqttOptions::new(MqttUrl::parse(url).unwrap(), id);
    o.max_backoff = Duration::from_millis(500);
    tweak(&mut o);
    let (c, events, task) = MqttClient::new(o);
    std::thread::spawn(move || smol::block_on(task));
    Client { c, events }
}

impl Client {
    /// The next event `f` picks (others skipped), within WAIT.
    fn expect<T>(&self, what: &str, mut f: impl FnMut(MqttEvent) -> Option<T>) -> T {
        smol::block_on(async {
            futures_lite::future::or(
                async {
                    while let Ok(e) = self.events.recv().await {
                        if let Some(t) = f(e) {
                            return t;
                        }
                    }
                    panic!("{what}: client ended");
                },
                async {
                    async_io::Timer::after(WAIT).await;
                    panic!("{what}: not within {WAIT:?}");
                },
            )
            .await
        })
    }

    fn subscribe(&self, filter: &str) -> bool {
        smol::block_on(self.c.subscribe(filter)).unwrap();
        self.expect("SUBACK", |e| match e {
            MqttEvent::Subscribed(g) => Some(g[0]),
            _ => None,
        })
    }

    fn publish(&self, topic: &str, payload: &str) {
        smol::block_on(
            self.c
                .publish(topic, Bytes::from(payload.to_owned()), false),
        )
        .unwrap();
    }

    fn message(&self) -> (String, String) {
        self.expect("a message", |e| match e {
            MqttEvent::Message { topic, payload } => {
                Some((topic, String::from_utf8_lossy(&payload).into_owned()))
            }
            _ => None,
        })
    }

    /// Messages arriving within `d` (none expected, say).
    fn messages_within(&self, d: Duration) -> Vec<(String, String)> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + d;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let e = smol::block_on(futures_lite::future::or(
                async { self.events.recv().await.ok() },
                async {
                    async_io::Timer::after(left).await;
                    None
                },
            ));
            match e {
                Some(MqttEvent::Message { topic, payload }) => {
                    got.push((topic, String::from_utf8_lossy(&payload).into_owned()))
                }
                Some(_) => {}
                None => break,
            }
        }
        got
    }
}

#[test]
fn tcp_tls_and_websocket_carry_messages_both_ways() {
    let broker = Broker::start("schemes");
    for scheme in ["mqtt", "mqtts", "ws"] {
        let ca = broker.ca();
        let dev = client(&broker.url(scheme, DEVICE), "dev1", |o| {
            o.ca = Some(ca.clone())
        });
        let web = client(&broker.url(scheme, BROWSER), "c1", |o| o.ca = Some(ca));
        assert!(dev.subscribe("smolrtc/dev1/in/+"), "{scheme}");
        assert!(web.subscribe("smolrtc/dev1/out/c1"), "{scheme}");
        web.publish("smolrtc/dev1/in/c1", r#"{"type":"hello"}"#);
        assert_eq!(
            dev.message(),
            ("smolrtc/dev1/in/c1".into(), r#"{"type":"hello"}"#.into()),
            "{scheme}"
        );
        dev.publish("smolrtc/dev1/out/c1", "reply");
        assert_eq!(web.message().1, "reply", "{scheme}");
        smol::block_on(dev.c.stop(None));
        smol::block_on(web.c.stop(None));
    }
}

#[test]
fn a_broker_restart_loses_and_duplicates_nothing() {
    let mut broker = Broker::start("restart");
    let dev = client(&broker.url("mqtt", DEVICE), "dev1", |_| {});
    let web = client(&broker.url("ws", BROWSER), "c1", |_| {});
    assert!(dev.subscribe("smolrtc/dev1/in/+"));
    assert!(web.subscribe("smolrtc/dev1/out/c1"));
    dev.publish("smolrtc/dev1/out/c1", "before");
    assert_eq!(web.message().1, "before");

    broker.stop();
    for c in [&dev, &web] {
        c.expect("disconnected", |e| {
            matches!(e, MqttEvent::Disconnected(_)).then_some(())
        });
    }
    // Published while the broker is down: kept, sent once it is back.
    for i in 0..3 {
        dev.publish("smolrtc/dev1/out/c1", &format!("down-{i}"));
        web.publish("smolrtc/dev1/in/c1", &format!("up-{i}"));
    }
    broker.restart();
    for c in [&dev, &web] {
        c.expect("reconnected", |e| {
            matches!(e, MqttEvent::Connected).then_some(())
        });
    }
    let got_web: Vec<String> = (0..3).map(|_| web.message().1).collect();
    let got_dev: Vec<String> = (0..3).map(|_| dev.message().1).collect();
    assert_eq!(got_web, ["down-0", "down-1", "down-2"]);
    assert_eq!(got_dev, ["up-0", "up-1", "up-2"]);
    // Subscriptions renewed: new messages flow; no duplicate of the old ones arrives.
    web.publish("smolrtc/dev1/in/c1", "after");
    assert_eq!(dev.message().1, "after");
    assert!(web.messages_within(Duration::from_millis(500)).is_empty());
}

#[test]
fn wrong_credentials_are_refused_with_a_clear_reason() {
    let broker = Broker::start("auth");
    for (scheme, user) in [("mqtt", (DEVICE.0, "wrong")), ("ws", ("nobody", "x"))] {
        let c = client(&broker.url(scheme, user), "dev1", |_| {});
        let why = c.expect("refusal", |e| match e {
            MqttEvent::Disconnected(r) => Some(r),
            MqttEvent::Connected => panic!("{scheme}: connected with wrong credentials"),
            _ => None,
        });
        assert!(why.contains("refused the connection"), "{scheme}: {why}");
        assert!(!why.contains("wrong"), "the password shows: {why}");
    }
}

#[test]
fn the_acl_keeps_devices_and_browsers_to_their_topics() {
    let broker = Broker::start("acl");
    let dev = client(&broker.url("mqtt", DEVICE), "dev1", |_| {});
    assert!(dev.subscribe("smolrtc/dev1/#"));
    // (mosquitto_pub below is another client, c1: the same id would take this one's place.)
    let web = client(&broker.url("ws", BROWSER), "c3", |_| {});
    // A browser reads only its own replies and the status topics: mosquitto grants the
    // subscriptions and delivers nothing the ACL does not let it read.
    for f in [
        "smolrtc/dev1/in/+",
        "smolrtc/dev1/out/+",
        "smolrtc/#",
        "smolrtc/+/status",
    ] {
        web.subscribe(f);
    }
    // Refused publishes (mosquitto acknowledges them and drops them).
    for (user, id, topic) in [
        (BROWSER, "c1", "smolrtc/dev1/in/c2"),
        (BROWSER, "c1", "smolrtc/dev1/out/c1"),
        (BROWSER, "c1", "smolrtc/dev1/status"),
        (DEVICE2, "dev2", "smolrtc/dev1/status"),
        (DEVICE2, "dev2", "smolrtc/dev1/out/c1"),
    ] {
        let (ok, err) = broker.publish(user, id, topic, "forged", false);
        assert!(ok, "{err}");
    }
    // What is allowed arrives, and only that.
    let (ok, err) = broker.publish(BROWSER, "c1", "smolrtc/dev1/in/c1", "legit", false);
    assert!(ok, "{err}");
    assert_eq!(dev.message(), ("smolrtc/dev1/in/c1".into(), "legit".into()));
    assert!(dev.messages_within(Duration::from_millis(300)).is_empty());
    // The browser got none of it (not even its own in/ message), nor another client's
    // reply; its own reply arrives.
    dev.publish("smolrtc/dev1/out/c2", "for c2");
    dev.publish("smolrtc/dev1/out/c3", "for c3");
    assert_eq!(
        web.message(),
        ("smolrtc/dev1/out/c3".into(), "for c3".into())
    );
    assert!(web.messages_within(Duration::from_millis(300)).is_empty());
    // A device may not read another device's topics.
    let dev2 = client(&broker.url("mqtt", DEVICE2), "dev2", |_| {});
    dev2.subscribe("smolrtc/dev1/#");
    assert!(
        broker
            .publish(BROWSER, "c1", "smolrtc/dev1/in/c1", "again", false)
            .0
    );
    // (dev1 also reads back its own replies above, on smolrtc/dev1/#.)
    let again = dev.expect("again", |e| match e {
        MqttEvent::Message { topic, payload } if topic.contains("/in/") => Some(payload),
        _ => None,
    });
    assert_eq!(&again[..], b"again");
    assert!(dev2.messages_within(Duration::from_millis(300)).is_empty());
}

#[test]
fn an_oversized_publish_is_dropped_and_the_next_one_read() {
    let broker = Broker::start("oversized");
    let dev = client(&broker.url("mqtt", DEVICE), "dev1", |o| o.max_packet = 2000);
    assert!(dev.subscribe("smolrtc/dev1/in/+"));
    let big = "x".repeat(20_000);
    assert!(
        broker
            .publish(BROWSER, "c1", "smolrtc/dev1/in/c1", &big, false)
            .0
    );
    assert!(
        broker
            .publish(BROWSER, "c1", "smolrtc/dev1/in/c1", "small", false)
            .0
    );
    let (topic, len) = dev.expect("oversized", |e| match e {
        MqttEvent::Oversized { topic, len } => Some((topic, len)),
        MqttEvent::Message { .. } => panic!("the big message came through"),
        _ => None,
    });
    assert_eq!(topic, "smolrtc/dev1/in/c1");
    assert!(len > 20_000);
    assert_eq!(dev.message().1, "small");
}
