//! The MQTT 3.1.1 client task: connect, keep alive, reconnect with jittered backoff,
//! resubscribe, resend QoS 1 publishes in flight, hand received publishes on.

use super::state::{Frame, Framer, Session};
use super::transport::Conn;
use super::url::MqttUrl;
use bytes::Bytes;
use mqtt_proto::v3::{Connect, ConnectReturnCode, LastWill, Packet, Subscribe};
use mqtt_proto::{Pid, QoS, QosPid, TopicFilter, TopicName};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The message the broker publishes for the client when its connection is lost (LWT).
#[derive(Clone, Debug)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

/// How to reach the broker and behave there.
#[derive(Clone, Debug)]
pub struct MqttOptions {
    pub url: MqttUrl,
    /// The client id (also the session name on the broker).
    pub client_id: String,
    /// The password (the URL's, a file's); never logged.
    pub password: Option<String>,
    /// PINGREQ after this long without sending; the connection is dropped when nothing
    /// comes back within 1.5 times it.
    pub keep_alive: Duration,
    pub will: Option<Will>,
    /// PEM certificate authorities for mqtts:// and wss:// (default: the system's).
    pub ca: Option<PathBuf>,
    /// Largest packet accepted from the broker; a larger PUBLISH is acknowledged and
    /// dropped unread ([`MqttEvent::Oversized`]).
    pub max_packet: usize,
    /// Most QoS 1 publishes waiting for their PUBACK; past it `publish` waits.
    pub max_inflight: usize,
    /// Ask the broker to keep the session (subscriptions, queued QoS 1 messages) across
    /// disconnections.
    pub persistent: bool,
    /// Longest wait between reconnection attempts (they start at 0.5 s and double).
    pub max_backoff: Duration,
}

impl MqttOptions {
    pub fn new(url: MqttUrl, client_id: &str) -> Self {
        Self {
            password: url.password.clone(),
            url,
            client_id: client_id.to_owned(),
            keep_alive: Duration::from_secs(30),
            will: None,
            ca: None,
            max_packet: 64 * 1024 + 1024,
            max_inflight: 64,
            persistent: true,
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What the client reports.
#[derive(Debug)]
pub enum MqttEvent {
    /// Connected (again): subscriptions renewed, publishes in flight resent.
    Connected,
    /// The connection is gone (reason); the client reconnects by itself.
    Disconnected(String),
    /// A publish on a subscribed topic (duplicates already dropped).
    Message { topic: String, payload: Bytes },
    /// A publish above `max_packet`, acknowledged and dropped.
    Oversized { topic: String, len: usize },
    /// The broker answered a subscription: granted or refused (an ACL), per filter.
    Subscribed(Vec<bool>),
}

enum Command {
    Publish(String, Bytes, bool),
    Subscribe(String),
    /// Clean stop: publish this (the offline status) if set, then DISCONNECT (no will).
    Stop(Option<(String, Bytes, bool)>, async_channel::Sender<()>),
}

/// A handle on the client task; cheap to clone.
#[derive(Clone)]
pub struct MqttClient {
    commands: async_channel::Sender<Command>,
}

/// Bounded queue of commands to the client task.
const COMMANDS: usize = 256;
/// Bounded queue of events from it: awaiting a full one stops reading from the broker.
const EVENTS: usize = 256;

impl MqttClient {
    /// A client, its events, and the task to run on any executor (it ends once every
    /// handle is dropped or [`MqttClient::stop`] is called).
    pub fn new(
        options: MqttOptions,
    ) -> (
        Self,
        async_channel::Receiver<MqttEvent>,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (ctx, crx) = async_channel::bounded(COMMANDS);
        let (etx, erx) = async_channel::bounded(EVENTS);
        (Self { commands: ctx }, erx, run(options, crx, etx))
    }

    /// Publishes with QoS 1; waits only for room in the queue, not for the broker.
    pub async fn publish(&self, topic: &str, payload: Bytes, retain: bool) -> crate::Result<()> {
        TopicName::try_from(topic)
            .map_err(|e| crate::Error::invalid(format!("topic {topic:?}: {e}")))?;
        self.commands
            .send(Command::Publish(topic.to_owned(), payload, retain))
            .await
            .map_err(|_| crate::Error::Closed)
    }

    /// Subscribes (QoS 1) now and on every reconnection.
    pub async fn subscribe(&self, filter: &str) -> crate::Result<()> {
        TopicFilter::try_from(filter)
            .map_err(|e| crate::Error::invalid(format!("filter {filter:?}: {e}")))?;
        self.commands
            .send(Command::Subscribe(filter.to_owned()))
            .await
            .map_err(|_| crate::Error::Closed)
    }

    /// Publishes `last` (if any, QoS 1, waiting at most a few seconds for the broker), then
    /// disconnects cleanly: the broker does not send the will.
    pub async fn stop(&self, last: Option<(&str, Bytes, bool)>) {
        let (tx, rx) = async_channel::bounded(1);
        let last = last.map(|(t, p, r)| (t.to_owned(), p, r));
        if self.commands.send(Command::Stop(last, tx)).await.is_ok() {
            let _ = rx.recv().await;
        }
    }
}

/// Why a connection ended.
enum End {
    Lost(String),
    Stopped,
}

async fn run(
    options: MqttOptions,
    commands: async_channel::Receiver<Command>,
    events: async_channel::Sender<MqttEvent>,
) {
    let options = Arc::new(options);
    let mut session = Session::new();
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        let end = match connection(&options, &mut session, &commands, &events).await {
            Ok(end) => end,
            Err(e) => End::Lost(e),
        };
        let reason = match end {
            End::Stopped => return,
            End::Lost(r) => r,
        };
        if commands.is_closed() && commands.is_empty() {
            return;
        }
        // A connection that lasted resets the backoff.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(500);
        }
        // Jitter, so a fleet that lost its broker does not come back in one wave.
        let wait = backoff.mul_f64(0.5 + fastrand::f64());
        log::warn!(
            "MQTT {}: {reason}; reconnecting in {:.1} s",
            options.url,
            wait.as_secs_f64()
        );
        let _ = events.try_send(MqttEvent::Disconnected(reason));
        backoff = (backoff * 2).min(options.max_backoff);
        // Waiting, still honour a stop.
        let stop = futures_lite::future::or(
            async {
                async_io::Timer::after(wait).await;
                None
            },
            async {
                loop {
                    match commands.recv().await {
                        Ok(Command::Stop(_, done)) => return Some(done),
                        // Queue publishes made while down: sent once connected.
                        Ok(Command::Publish(t, p, r)) => {
                            if let Ok(t) = TopicName::try_from(t.as_str()) {
                                session.publish(t, p, r);
                            }
                            if session.inflight_len() >= options.max_inflight {
                                futures_lite::future::pending::<()>().await;
                            }
                        }
                        Ok(Command::Subscribe(f)) => {
                            if !session.subscriptions.contains(&f) {
                                session.subscriptions.push(f);
                            }
                        }
                        Err(_) => futures_lite::future::pending::<()>().await,
                    }
                }
            },
        )
        .await;
        if let Some(done) = stop {
            let _ = done.try_send(());
            return;
        }
    }
}

enum Input {
    Read(Result<(), String>),
    Command(Option<Command>),
    Tick,
}

/// The CONNECT packet of `options`: client id, keep-alive, credentials, will.
fn connect_packet(options: &MqttOptions) -> Result<Connect, String> {
    let mut connect = Connect::new(
        Arc::from(options.client_id.as_str()),
        options.keep_alive.as_secs().clamp(1, 65_535) as u16,
    );
    connect.clean_session = !options.persistent;
    connect.username = options.url.user.as_deref().map(Arc::from);
    connect.password = options.password.clone().map(Bytes::from);
    if let Some(w) = &options.will {
        let topic =
            TopicName::try_from(w.topic.as_str()).map_err(|e| format!("will topic: {e}"))?;
        let mut will = LastWill::new(QoS::Level1, topic, w.payload.clone());
        will.retain = w.retain;
        connect.last_will = Some(will);
    }
    Ok(connect)
}

/// Waits (bounded) for the broker's first frame, which must be an accepting CONNACK.
async fn connack(
    conn: &mut Conn,
    framer: &mut Framer,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), String> {
    let connack = with_timeout(timeout, async {
        loop {
            if let Some(f) = framer.next()? {
                return Ok::<_, String>(f);
            }
            buf.clear();
            conn.read(buf).await?;
            if buf.is_empty() {
                return Err("closed by the broker before CONNACK".into());
            }
            framer.push(buf);
        }
    })
    .await
    .ok_or("no CONNACK within 10 s")??;
    match connack {
        Frame::Packet(Packet::Connack(c)) if c.code == ConnectReturnCode::Accepted => Ok(()),
        Frame::Packet(Packet::Connack(c)) => {
            let why = match c.code {
                ConnectReturnCode::BadUserNameOrPassword => "bad user name or password",
                ConnectReturnCode::NotAuthorized => "not authorized",
                ConnectReturnCode::IdentifierRejected => "client id rejected",
                ConnectReturnCode::ServerUnavailable => "server unavailable",
                _ => "protocol version refused",
            };
            Err(format!("the broker refused the connection: {why}"))
        }
        other => Err(format!("expected CONNACK, got {other:?}")),
    }
}

async fn connection(
    options: &MqttOptions,
    session: &mut Session,
    commands: &async_channel::Receiver<Command>,
    events: &async_channel::Sender<MqttEvent>,
) -> Result<End, String> {
    let timeout = Duration::from_secs(10);
    let mut conn = with_timeout(
        timeout,
        Conn::open(&options.url, options.ca.as_deref(), options.max_packet),
    )
    .await
    .ok_or("connection timed out")??;
    send(&mut conn, Packet::Connect(connect_packet(options)?)).await?;
    let mut framer = Framer::new(options.max_packet);
    let mut buf = Vec::new();
    connack(&mut conn, &mut framer, &mut buf, timeout).await?;
    log::info!("MQTT connected to {} as {}", options.url, options.client_id);
    if !session.subscriptions.is_empty() {
        let pid = session.pid();
        send(&mut conn, subscribe(pid, &session.subscriptions)?).await?;
    }
    for p in session.resend() {
        send(&mut conn, Packet::Publish(p)).await?;
    }
    let _ = events.try_send(MqttEvent::Connected);
    let mut live = Live {
        options,
        conn,
        framer,
        buf,
        last_sent: Instant::now(),
        last_heard: Instant::now(),
        stopping: None,
        stop_by: Instant::now() + Duration::from_secs(86_400),
    };
    loop {
        let step = match live.next_input(session, commands).await {
            Input::Tick => live.tick().await?,
            Input::Command(c) => live.command(c, session).await?,
            Input::Read(r) => live.read(r, session, events).await?,
        };
        match step {
            ControlFlow::Continue(()) => {}
            ControlFlow::Break(None) => break,
            ControlFlow::Break(Some(end)) => return Ok(end),
        }
    }
    let Live {
        mut conn, stopping, ..
    } = live;
    let _ = send(&mut conn, Packet::Disconnect).await;
    conn.close().await;
    if let Some(done) = stopping {
        let _ = done.try_send(());
    }
    log::info!("MQTT disconnected from {}", options.url);
    Ok(End::Stopped)
}

/// What one step of a live connection says: go on, leave (disconnecting), or end now.
type Step = ControlFlow<Option<End>>;

/// A connection past its CONNACK.
struct Live<'a> {
    options: &'a MqttOptions,
    conn: Conn,
    framer: Framer,
    buf: Vec<u8>,
    last_sent: Instant,
    last_heard: Instant,
    /// Set by a stop: told once its last message is acknowledged.
    stopping: Option<async_channel::Sender<()>>,
    /// A stop waits this long at most for the PUBACK of its last message.
    stop_by: Instant,
}

impl Live<'_> {
    /// Bytes from the broker, a command (while there is room in flight and no stop), or
    /// the next timer (ping, keep-alive, stop), whichever comes first.
    async fn next_input(
        &mut self,
        session: &Session,
        commands: &async_channel::Receiver<Command>,
    ) -> Input {
        let keep_alive = self.options.keep_alive;
        let room = session.inflight_len() < self.options.max_inflight && self.stopping.is_none();
        let at = (self.last_sent + keep_alive)
            .min(self.last_heard + keep_alive.mul_f64(1.5))
            .min(self.stop_by);
        let Self { conn, buf, .. } = self;
        futures_lite::future::or(
            async {
                buf.clear();
                Input::Read(conn.read(buf).await)
            },
            futures_lite::future::or(
                async {
                    if room {
                        Input::Command(commands.recv().await.ok())
                    } else {
                        futures_lite::future::pending().await
                    }
                },
                async {
                    async_io::Timer::at(at).await;
                    Input::Tick
                },
            ),
        )
        .await
    }

    /// A timer: a stop's deadline, the broker's silence, or our ping.
    async fn tick(&mut self) -> Result<Step, String> {
        let keep_alive = self.options.keep_alive;
        if self.stopping.is_some() && Instant::now() >= self.stop_by {
            log::warn!("MQTT: no PUBACK for the last message; disconnecting anyway");
            return Ok(ControlFlow::Break(None));
        }
        if self.last_heard.elapsed() >= keep_alive.mul_f64(1.5) {
            return Err(format!(
                "nothing from the broker for {:.0} s (keep-alive)",
                self.last_heard.elapsed().as_secs_f64()
            ));
        }
        if self.last_sent.elapsed() >= keep_alive {
            send(&mut self.conn, Packet::Pingreq).await?;
            self.last_sent = Instant::now();
        }
        Ok(ControlFlow::Continue(()))
    }

    /// A command from a handle (`None`: every handle dropped).
    async fn command(
        &mut self,
        command: Option<Command>,
        session: &mut Session,
    ) -> Result<Step, String> {
        match command {
            None => {
                // Every handle dropped: leave as on a stop, without a last message.
                let _ = send(&mut self.conn, Packet::Disconnect).await;
                self.conn.close().await;
                return Ok(ControlFlow::Break(Some(End::Stopped)));
            }
            Some(Command::Publish(t, p, r)) => {
                let topic = TopicName::try_from(t.as_str()).map_err(|e| format!("topic: {e}"))?;
                let p = session.publish(topic, p, r);
                send(&mut self.conn, Packet::Publish(p)).await?;
                self.last_sent = Instant::now();
            }
            Some(Command::Subscribe(f)) => {
                if !session.subscriptions.contains(&f) {
                    session.subscriptions.push(f.clone());
                }
                let pid = session.pid();
                send(&mut self.conn, subscribe(pid, &[f])?).await?;
                self.last_sent = Instant::now();
            }
            Some(Command::Stop(last, done)) => {
                if let Some((t, p, r)) = last {
                    let topic =
                        TopicName::try_from(t.as_str()).map_err(|e| format!("topic: {e}"))?;
                    let p = session.publish(topic, p, r);
                    send(&mut self.conn, Packet::Publish(p)).await?;
                }
                self.stopping = Some(done);
                if session.inflight_len() == 0 {
                    return Ok(ControlFlow::Break(None));
                }
                self.stop_by = Instant::now() + Duration::from_secs(3);
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Bytes read from the broker (in `buf`): every whole frame handled.
    async fn read(
        &mut self,
        read: Result<(), String>,
        session: &mut Session,
        events: &async_channel::Sender<MqttEvent>,
    ) -> Result<Step, String> {
        read?;
        if self.buf.is_empty() {
            return Err("closed by the broker".into());
        }
        self.last_heard = Instant::now();
        self.framer.push(&self.buf);
        while let Some(frame) = self.framer.next()? {
            on_frame(frame, &mut self.conn, session, events).await?;
        }
        if self.stopping.is_some() && session.inflight_len() == 0 {
            return Ok(ControlFlow::Break(None));
        }
        Ok(ControlFlow::Continue(()))
    }
}

async fn on_frame(
    frame: Frame,
    conn: &mut Conn,
    session: &mut Session,
    events: &async_channel::Sender<MqttEvent>,
) -> Result<(), String> {
    match frame {
        Frame::Packet(Packet::Publish(p)) => {
            let pid = p.qos_pid.pid();
            let new = session.is_new(&p);
            if new {
                let ev = MqttEvent::Message {
                    topic: p.topic_name.to_string(),
                    payload: p.payload,
                };
                // Awaiting a full queue is the backpressure (the broker's TCP window).
                if events.send(ev).await.is_err() {
                    return Err("events receiver dropped".into());
                }
            }
            match (pid, p.qos_pid) {
                (Some(pid), QosPid::Level1(_)) => send(conn, Packet::Puback(pid)).await?,
                (Some(pid), QosPid::Level2(_)) => send(conn, Packet::Pubrec(pid)).await?,
                _ => {}
            }
        }
        Frame::Oversized { topic, pid, len } => {
            log::warn!("MQTT: dropped a publish of {len} bytes on {topic} (above max_packet)");
            let _ = events.try_send(MqttEvent::Oversized { topic, len });
            if let Some(pid) = pid {
                send(conn, Packet::Puback(pid)).await?;
            }
        }
        Frame::Packet(Packet::Puback(pid)) => {
            session.acked(pid);
        }
        Frame::Packet(Packet::Pubrel(pid)) => send(conn, Packet::Pubcomp(pid)).await?,
        Frame::Packet(Packet::Suback(s)) => {
            let granted: Vec<bool> = s
                .topics
                .iter()
                .map(|c| *c != mqtt_proto::v3::SubscribeReturnCode::Failure)
                .collect();
            if granted.contains(&false) {
                log::warn!("MQTT: the broker refused a subscription (its ACL?)");
            }
            let _ = events.try_send(MqttEvent::Subscribed(granted));
        }
        Frame::Packet(Packet::Pingresp | Packet::Unsuback(_) | Packet::Pubcomp(_)) => {}
        Frame::Packet(other) => {
            return Err(format!("unexpected {:?} from the broker", other.get_type()));
        }
    }
    Ok(())
}

fn subscribe(pid: Pid, filters: &[String]) -> Result<Packet, String> {
    let topics = filters
        .iter()
        .map(|f| {
            TopicFilter::try_from(f.as_str())
                .map(|t| (t, QoS::Level1))
                .map_err(|e| format!("filter {f:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Packet::Subscribe(Subscribe::new(pid, topics)))
}

async fn send(conn: &mut Conn, p: Packet) -> Result<(), String> {
    let bytes = p.encode().map_err(|e| format!("encode: {e}"))?;
    with_timeout(Duration::from_secs(10), conn.write(bytes.as_ref()))
        .await
        .ok_or("the broker reads nothing (write timed out)")?
}

async fn with_timeout<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        async_io::Timer::after(d).await;
        None
    })
    .await
}
