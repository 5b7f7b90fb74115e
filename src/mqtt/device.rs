//! The service task that signals sessions through the MQTT broker ([`super::signal`] names
//! the topics and messages). Sessions are opened through the same code path as the
//! WebSocket's ([`Shared::open`]), keyed by the client id, several at once; they expire
//! like every session (not connected within `connect_timeout`: closed).

use super::signal::{self, Inbound, RateLimits, Refused, Topics};
use super::{MqttClient, MqttEvent, MqttOptions, MqttUrl, Will};
use crate::peer::PeerConnection;
use crate::sdp::{IceCandidateInit, SdpType};
use crate::service::{NewSession, Shared, Via};
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

/// Fleet mode: how the device reaches its broker.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    pub url: MqttUrl,
    /// Overrides the URL's password (`--mqtt-password-file`); never logged.
    pub password: Option<String>,
    /// First topic level (`--mqtt-prefix`, default `smolrtc`).
    pub prefix: String,
    /// PEM certificate authorities for `mqtts://`/`wss://` (`--mqtt-ca`).
    pub ca: Option<PathBuf>,
    /// Stream names announced in the status.
    pub streams: Vec<String>,
    /// Messages a client id may send at once, and refilled per second after that.
    pub burst: u32,
    pub per_second: f64,
    /// Most client ids tracked at once (a flood of new ids is refused past it).
    pub max_clients: usize,
}

/// Default of [`MqttConfig::prefix`].
pub const DEFAULT_PREFIX: &str = "smolrtc";

impl MqttConfig {
    pub fn new(url: MqttUrl) -> Self {
        Self {
            url,
            password: None,
            prefix: DEFAULT_PREFIX.into(),
            ca: None,
            streams: Vec::new(),
            burst: 200,
            per_second: 20.0,
            max_clients: 1024,
        }
    }
}

/// The running MQTT side of a service.
pub(crate) struct Device {
    client: MqttClient,
    status: String,
    offline: Bytes,
}

impl Device {
    /// Publishes the offline status and disconnects (the broker then sends no will).
    pub(crate) async fn stop(&self) {
        self.client
            .stop(Some((&self.status, self.offline.clone(), true)))
            .await;
    }
}

/// Checks the topic names the settings make.
pub(crate) fn check(config: &MqttConfig, device: &str) -> crate::Result<()> {
    Topics::new(&config.prefix, device).map_err(crate::Error::invalid)?;
    Ok(())
}

/// Starts the MQTT client and the signaling task on the service's executor.
pub(crate) fn start(shared: &Rc<Shared>) -> Option<Device> {
    let config = shared.config.mqtt.clone()?;
    let device = shared.config.device_id.clone();
    let topics = Topics::new(&config.prefix, &device).ok()?;
    let version = env!("CARGO_PKG_VERSION");
    let offline = signal::status(false, &config.streams, version);
    let mut o = MqttOptions::new(config.url.clone(), &device);
    if config.password.is_some() {
        o.password = config.password.clone();
    }
    o.ca = config.ca.clone();
    // A message as large as the HTTP API takes, plus its topic.
    o.max_packet = shared.config.max_body + 1024;
    o.will = Some(Will {
        topic: topics.status(),
        payload: offline.clone(),
        retain: true,
    });
    let (client, events, task) = MqttClient::new(o);
    log::info!(
        "fleet: device {device} through {} (topics {}/{device}/..)",
        config.url,
        config.prefix
    );
    shared.ex.spawn(task).detach();
    let signaling = Signaling {
        shared: shared.clone(),
        client: client.clone(),
        topics: topics.clone(),
        limits: RefCell::new(RateLimits::new(
            config.burst,
            config.per_second,
            config.max_clients,
        )),
        sessions: Rc::new(RefCell::new(HashMap::new())),
        online: signal::status(true, &config.streams, version),
    };
    shared.ex.spawn(signaling.run(events)).detach();
    Some(Device {
        client,
        status: topics.status(),
        offline,
    })
}

/// A session signaled over MQTT: the service's session and the offer it was made from.
struct Entry {
    id: String,
    pc: PeerConnection,
    offer: String,
}

type Sessions = Rc<RefCell<HashMap<String, Entry>>>;

struct Signaling {
    shared: Rc<Shared>,
    client: MqttClient,
    topics: Topics,
    limits: RefCell<RateLimits>,
    /// By client id.
    sessions: Sessions,
    online: Bytes,
}

impl Signaling {
    async fn run(self, events: async_channel::Receiver<MqttEvent>) {
        let _ = self.client.subscribe(&self.topics.inbound()).await;
        while let Ok(ev) = events.recv().await {
            match ev {
                MqttEvent::Connected => {
                    let _ = self
                        .client
                        .publish(&self.topics.status(), self.online.clone(), true)
                        .await;
                }
                MqttEvent::Message { topic, payload } => self.on_message(&topic, &payload).await,
                MqttEvent::Oversized { topic, len } => {
                    if let Some(client) = self.topics.session_of(&topic) {
                        let max = self.shared.config.max_body;
                        self.error(
                            client,
                            &format!("message of {len} bytes, above max-body ({max})"),
                        )
                        .await;
                    }
                }
                MqttEvent::Disconnected(_) | MqttEvent::Subscribed(_) => {}
            }
        }
    }

    async fn reply(&self, client: &str, payload: Bytes) {
        let _ = self
            .client
            .publish(&self.topics.outbound(client), payload, false)
            .await;
    }

    async fn error(&self, client: &str, e: &str) {
        self.reply(client, signal::message("error", e.into())).await;
    }

    async fn on_message(&self, topic: &str, payload: &[u8]) {
        let Some(client) = self.topics.session_of(topic) else {
            self.shared.quiet.warn("mqtt topic", 0, || {
                format!("MQTT: message on {topic:?} ignored (not in/<client id>)")
            });
            return;
        };
        let limited = self.limits.borrow_mut().take(client, Instant::now());
        match limited {
            Ok(()) => {}
            Err(Refused::Flood { first }) => {
                self.shared.quiet.warn("mqtt flood", 0, || {
                    format!("MQTT [{client}]: too many messages; dropping them")
                });
                if first {
                    self.error(client, "too many messages: slow down").await;
                }
                return;
            }
            Err(Refused::Full) => {
                self.shared.quiet.warn("mqtt clients", 0, || {
                    format!("MQTT [{client}]: too many clients at once; message dropped")
                });
                return;
            }
        }
        let msg = match signal::parse(payload, self.shared.config.max_body) {
            Ok(m) => m,
            Err(e) => {
                // A bad SDP line may quote the client's a=ice-pwd.
                let shown = crate::sdp::redact_secrets(&e);
                self.shared
                    .quiet
                    .warn("mqtt message", 0, || format!("MQTT [{client}]: {shown}"));
                self.error(client, &e).await;
                return;
            }
        };
        if let Err(e) = self.handle(client, msg).await {
            let shown = crate::sdp::redact_secrets(&e);
            self.shared
                .quiet
                .warn("mqtt message", 0, || format!("MQTT [{client}]: {shown}"));
            self.error(client, &e).await;
        }
    }

    async fn handle(&self, client: &str, msg: Inbound) -> Result<(), String> {
        match msg {
            Inbound::Hello => {
                let servers = crate::turn_rest::for_clients(&self.shared.config);
                self.reply(client, signal::message("ice-servers", servers))
                    .await;
                Ok(())
            }
            Inbound::Description(d) => {
                let existing = self
                    .sessions
                    .borrow()
                    .get(client)
                    .map(|e| (e.pc.clone(), e.offer == d.sdp));
                let fresh = existing.is_none();
                let pc = match existing {
                    // A redelivered offer (QoS 1 after a broker restart): answered already.
                    Some((_, true)) => return Ok(()),
                    Some((pc, false)) => pc,
                    None => self.open(client, &d.sdp).await?,
                };
                let answer = async {
                    pc.set_remote_description(d.clone()).await?;
                    let a = pc.create_answer().await?;
                    pc.set_local_description(a.clone()).await?;
                    Ok::<_, crate::Error>(a)
                }
                .await;
                match answer {
                    Ok(a) => {
                        if let Some(e) = self.sessions.borrow_mut().get_mut(client) {
                            e.offer = d.sdp;
                        }
                        debug_assert_eq!(a.kind, SdpType::Answer);
                        let value = serde_json::json!({"type": "answer", "sdp": a.sdp});
                        self.reply(client, signal::message("description", value))
                            .await;
                        Ok(())
                    }
                    Err(e) => {
                        if fresh {
                            // The offer that started the session was refused: so is it.
                            let gone = self.sessions.borrow_mut().remove(client);
                            if let Some(g) = gone {
                                self.shared.close(&g.id).await;
                            }
                        }
                        Err(e.to_string())
                    }
                }
            }
            Inbound::Candidate(c) => {
                let pc = self.sessions.borrow().get(client).map(|e| e.pc.clone());
                let Some(pc) = pc else {
                    return Err("unknown session: send the offer (a description) first".into());
                };
                let c = c.unwrap_or(IceCandidateInit {
                    candidate: String::new(),
                    sdp_mid: None,
                    sdp_mline_index: None,
                    username_fragment: None,
                });
                pc.add_ice_candidate(c).await.map_err(|e| e.to_string())
            }
            Inbound::Bye => {
                let gone = self.sessions.borrow_mut().remove(client);
                match gone {
                    Some(e) => {
                        log::info!("[{}] MQTT client {client} said bye", e.id);
                        self.shared.close(&e.id).await;
                        Ok(())
                    }
                    None => Err("unknown session".into()),
                }
            }
        }
    }

    /// Opens a session for `client` and starts sending its candidates.
    async fn open(&self, client: &str, offer: &str) -> Result<PeerConnection, String> {
        let s = self
            .shared
            .open(Via::Mqtt, false, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            .await
            .map_err(|e| e.to_string())?;
        log::info!("[{}] MQTT client {client}", s.id);
        let pc = s.pc.clone();
        self.sessions.borrow_mut().insert(
            client.to_owned(),
            Entry {
                id: s.id.clone(),
                pc: pc.clone(),
                offer: offer.to_owned(),
            },
        );
        let forward = forward(
            s,
            client.to_owned(),
            self.client.clone(),
            self.topics.clone(),
            self.sessions.clone(),
        );
        self.shared.ex.spawn(forward).detach();
        Ok(pc)
    }
}

/// Sends a session's candidates to its client; when the session ends, forgets it and
/// tells the client (`bye`), unless the client ended it.
async fn forward(
    s: NewSession,
    client: String,
    mqtt: MqttClient,
    topics: Topics,
    sessions: Sessions,
) {
    let out = topics.outbound(&client);
    while let Ok(c) = s.candidates.recv().await {
        let value = match c {
            Some(c) => serde_json::to_value(&c).unwrap_or_default(),
            None => serde_json::Value::Null,
        };
        let _ = mqtt
            .publish(&out, signal::message("candidate", value), false)
            .await;
    }
    let ours = sessions.borrow().get(&client).is_some_and(|e| e.id == s.id);
    if ours {
        sessions.borrow_mut().remove(&client);
        log::info!("[{}] session over: bye to MQTT client {client}", s.id);
        let _ = mqtt.publish(&out, signal::bare("bye"), false).await;
    }
}
