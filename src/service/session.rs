//! Sessions: the table of live peer connections, how one is opened, answered and closed,
//! and the task that runs each one (its events to channel handlers, its end).

use super::config::*;
use super::error::{Held, ServiceError};
use super::limits::*;
use crate::channel::{ChannelInit, DataChannel};
use crate::error::Result;
use crate::peer::{ConnectionState, Event, EventStream, PeerConnection};
use crate::runtime::Runtime;
use crate::sdp::{Description, IceCandidateInit};
use crate::service::apps::{ChannelEvent, Registry};
use async_channel::{Receiver, Sender};
use smol::LocalExecutor;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How a session was signaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    Http,
    Whip,
    /// A WHEP viewer of a stream (`POST /whep/NAME`).
    #[cfg(feature = "media")]
    Whep,
    WebSocket,
    /// Through the MQTT broker: counted per client id by the MQTT task, not per address.
    #[cfg(feature = "mqtt")]
    Mqtt,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Whip => "whip",
            #[cfg(feature = "media")]
            Via::Whep => "whep",
            Via::WebSocket => "ws",
            #[cfg(feature = "mqtt")]
            Via::Mqtt => "mqtt",
        }
    }
}

pub(crate) struct Session {
    pub(crate) pc: PeerConnection,
    via: Via,
    started: Instant,
    state: Rc<RefCell<ConnectionState>>,
    /// Its place under `max_sessions_per_address`, freed with the session.
    _address: Option<AddressSlot>,
}

/// The service's state, shared by its tasks on the smolrtc thread.
pub(crate) struct Shared {
    pub(crate) config: ServiceConfig,
    registry: Registry,
    runtime: Runtime,
    pub(crate) ex: Rc<LocalExecutor<'static>>,
    sessions: RefCell<HashMap<String, Session>>,
    /// Client reports (`POST /api/report`) for whoever holds the [`ServiceHandle`].
    pub(crate) reports: Sender<serde_json::Value>,
    /// Live HTTP connections (`max_connections`).
    pub(crate) connections: Counter,
    /// Live WebSocket signaling connections (`max_websockets`).
    pub(crate) websockets: Counter,
    /// Live HTTP connections per client address (`max_connections_per_address`).
    pub(crate) connections_per_address: PerAddress,
    /// Connections per client address still sending their first request's headers
    /// (`max_slow_connections_per_address`).
    pub(crate) slow_per_address: PerAddress,
    /// Connections being refused with an answer, per client address.
    pub(crate) refusing_per_address: PerAddress,
    /// Sessions per client address (`max_sessions_per_address`).
    sessions_per_address: PerAddress,
    /// Live WebSockets per client address (`max_websockets_per_address`).
    pub(crate) websockets_per_address: PerAddress,
    /// Names a `Host` may give besides IP literals: `localhost`, the machine's host name
    /// (when the service started) with and without `.local`, and `allow_hosts`. Lowercase.
    pub(crate) host_names: Vec<String>,
    /// Refused requests and other noisy warnings, by kind, logged without flooding.
    pub(crate) quiet: QuietLogs,
    /// Media streams and their sources.
    #[cfg(feature = "media")]
    pub(crate) streams: super::streams::Streams,
    /// Media sinks and the sessions writing to them.
    #[cfg(feature = "media")]
    pub(crate) sinks: super::sinks::Sinks,
    /// `--publish`: streams pushed to WHIP endpoints.
    #[cfg(feature = "media")]
    pub(crate) publish: super::publish::Publishers,
}

/// A new session: its peer connection and its local candidates as they are gathered
/// (`None` = end-of-candidates).
pub(crate) struct NewSession {
    pub(crate) id: String,
    pub(crate) pc: PeerConnection,
    pub(crate) candidates: Receiver<Option<IceCandidateInit>>,
}

impl Shared {
    pub(crate) fn new(
        config: ServiceConfig,
        registry: Registry,
        runtime: Runtime,
        ex: Rc<LocalExecutor<'static>>,
        reports: Sender<serde_json::Value>,
    ) -> Rc<Self> {
        let host_names = host_names(&config.allow_hosts);
        log::info!(
            "API requests must name this device in Host: an IP literal or {}",
            host_names.join(", ")
        );
        #[cfg(feature = "media")]
        let streams = super::streams::Streams::start(&config.streams, &ex);
        #[cfg(feature = "media")]
        let sinks = super::sinks::Sinks::new(&config.sinks);
        #[cfg(feature = "media")]
        let publish = super::publish::Publishers::new(&config.publish);
        Rc::new(Self {
            #[cfg(feature = "media")]
            publish,
            #[cfg(feature = "media")]
            streams,
            #[cfg(feature = "media")]
            sinks,
            config,
            registry,
            runtime,
            ex,
            sessions: RefCell::new(HashMap::new()),
            reports,
            connections: Counter::default(),
            websockets: Counter::default(),
            connections_per_address: PerAddress::default(),
            slow_per_address: PerAddress::default(),
            refusing_per_address: PerAddress::default(),
            sessions_per_address: PerAddress::default(),
            websockets_per_address: PerAddress::default(),
            host_names,
            quiet: QuietLogs::default(),
        })
    }

    /// The runtime the sessions' actors run on.
    #[cfg(feature = "media")]
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub(crate) fn session(&self, id: &str) -> Option<PeerConnection> {
        self.sessions.borrow().get(id).map(|s| s.pc.clone())
    }

    /// True while session `id` exists and its connection is up.
    pub(crate) fn is_connected(&self, id: &str) -> bool {
        self.sessions
            .borrow()
            .get(id)
            .is_some_and(|s| *s.state.borrow() == ConnectionState::Connected)
    }

    /// `(id, via, connection state, age in seconds)` of every session.
    /// How many sessions are live.
    pub(crate) fn session_count(&self) -> usize {
        self.sessions.borrow().len()
    }

    pub(crate) fn list(&self) -> Vec<(String, &'static str, String, f64)> {
        let mut v: Vec<_> = self
            .sessions
            .borrow()
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    s.via.as_str(),
                    s.state.borrow().to_string(),
                    s.started.elapsed().as_secs_f64(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Checks `max_sessions` and (but for MQTT clients, counted per client id)
    /// `max_sessions_per_address`; returns the address's slot a new session holds.
    fn admit(&self, via: Via, client: IpAddr) -> Result<Option<AddressSlot>, ServiceError> {
        let max = self.config.max_sessions;
        if self.sessions.borrow().len() >= max {
            let e = ServiceError::TooMany {
                held: Held::Sessions,
                limit: "max_sessions",
                max,
            };
            self.quiet.warn("session", e.status().as_u16(), || {
                format!("session refused ({client}): max_sessions ({max}) reached")
            });
            return Err(e);
        }
        let per = self.config.max_sessions_per_address;
        let per_address = match via {
            #[cfg(feature = "mqtt")]
            Via::Mqtt => false,
            _ => true,
        };
        if !per_address {
            return Ok(None);
        }
        let Some(slot) = self.sessions_per_address.take(client, per) else {
            let e = ServiceError::TooMany {
                held: Held::SessionsFromAddress,
                limit: "max_sessions_per_address",
                max: per,
            };
            self.quiet.warn("session", e.status().as_u16(), || {
                format!("session refused: {client} has max_sessions_per_address ({per})")
            });
            return Err(e);
        };
        Ok(Some(slot))
    }

    /// The peer configuration of session `id`.
    pub(crate) fn peer_config(&self, id: &str) -> crate::peer::Config {
        let mut config = self.config.peer.clone();
        config.name = id.to_owned();
        if let Some(t) = &self.config.turn_rest {
            // Fresh credentials for each session's own allocations.
            config
                .ice
                .servers
                .extend(t.ice_servers(&self.config.device_id));
        }
        config
    }

    /// Creates a session for a client at `client`; `offerer` says whether the service
    /// makes the offer.
    pub(crate) async fn open(
        self: &Rc<Self>,
        via: Via,
        offerer: bool,
        client: IpAddr,
    ) -> Result<NewSession, ServiceError> {
        let address = self.admit(via, client)?;
        let id = session_id()?;
        let pc = PeerConnection::with_runtime(&self.runtime, self.peer_config(&id))?;
        let events = pc.events();
        if self.config.rawrtc_flow {
            pc.create_data_channel("cat-noises", ChannelInit::negotiated(0))
                .await?;
        }
        let state = Rc::new(RefCell::new(ConnectionState::New));
        super::metrics::SESSIONS_TOTAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sessions.borrow_mut().insert(
            id.clone(),
            Session {
                pc: pc.clone(),
                via,
                started: Instant::now(),
                state: state.clone(),
                _address: address,
            },
        );
        log::info!(
            "[{id}] session opened via {} ({} sessions)",
            via.as_str(),
            self.sessions.borrow().len()
        );
        let (cand_tx, cand_rx) = async_channel::unbounded();
        let task = run_session(
            self.clone(),
            id.clone(),
            pc.clone(),
            events,
            cand_tx,
            state,
            offerer,
        );
        self.ex.spawn(task).detach();
        Ok(NewSession {
            id,
            pc,
            candidates: cand_rx,
        })
    }

    /// Closes a session now (DELETE, a failed signaling exchange).
    pub(crate) async fn close(&self, id: &str) -> bool {
        let pc = self.sessions.borrow().get(id).map(|s| s.pc.clone());
        match pc {
            Some(pc) => {
                pc.close().await;
                true
            }
            None => false,
        }
    }
}

/// The names a `Host` may give (see [`Shared::host_names`]).
fn host_names(allowed: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    if let Some(h) = machine_host_name() {
        let short = h.split('.').next().unwrap_or_default().to_owned();
        for n in [h.clone(), short] {
            if !n.is_empty() {
                names.push(format!("{n}.local"));
                names.push(n);
            }
        }
    }
    names.extend(
        allowed
            .iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase()),
    );
    names.sort();
    names.dedup();
    names
}

/// gethostname(2), lowercase; `None` if it fails or is not a plain name.
pub(crate) fn machine_host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for `buf.len()` bytes; on success it holds a name,
    // NUL-terminated unless truncated (then no NUL is found below and it is not used).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&buf[..end]).ok()?;
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    check_allowed_host(&name).ok().map(|_| name)
}

fn session_id() -> Result<String, ServiceError> {
    let provider = crate::dtls::crypto_provider()?;
    let mut raw = [0u8; 8];
    provider
        .random()
        .fill(&mut raw)
        .map_err(|e| ServiceError::Internal(format!("random: {e}")))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Waits (bounded) for the end of gathering, then returns the local description.
pub(crate) async fn complete_description(
    s: &NewSession,
    timeout: Duration,
) -> Result<Description, ServiceError> {
    let done = async {
        while let Ok(c) = s.candidates.recv().await {
            if c.is_none() {
                return;
            }
        }
    };
    let timed_out = futures_lite::future::or(
        async {
            done.await;
            false
        },
        async {
            async_io::Timer::after(timeout).await;
            true
        },
    )
    .await;
    if timed_out {
        log::warn!(
            "[{}] gathering not complete after {timeout:?}; answering with what we have",
            s.id
        );
    }
    s.pc.local_description()
        .await
        .ok_or_else(|| ServiceError::Internal("no local description".into()))
}

/// One session's life: routes its events to channel handlers, logs them, frees it at the end.
async fn run_session(
    shared: Rc<Shared>,
    id: String,
    pc: PeerConnection,
    mut events: EventStream,
    candidates: Sender<Option<IceCandidateInit>>,
    state: Rc<RefCell<ConnectionState>>,
    offerer: bool,
) {
    let mut task = SessionTask {
        shared,
        id,
        pc,
        candidates,
        state,
        offerer,
        channels: HashMap::new(),
    };
    // Until the connection is first up, the session lives at most connect_timeout.
    let mut deadline = Some(Instant::now() + task.shared.config.connect_timeout);
    loop {
        let ev = match next_event(&mut events, deadline).await {
            Next::Event(ev) => ev,
            Next::Ended => break,
            Next::Deadline => {
                log::warn!(
                    "[{}] not connected within {:.1} s (connect_timeout): closing the session",
                    task.id,
                    task.shared.config.connect_timeout.as_secs_f64()
                );
                break;
            }
        };
        if let Event::ConnectionState(ConnectionState::Connected) = ev {
            deadline = None;
        }
        if task.on_event(ev).await.is_break() {
            break;
        }
    }
    task.free().await;
}

/// What a session's task waits for next.
enum Next {
    Event(Event),
    /// The event stream ended: the connection's actors are gone.
    Ended,
    /// `connect_timeout` passed before the connection was up.
    Deadline,
}

async fn next_event(events: &mut EventStream, deadline: Option<Instant>) -> Next {
    let event = async {
        match events.next().await {
            Some(ev) => Next::Event(ev),
            None => Next::Ended,
        }
    };
    match deadline {
        Some(at) => {
            futures_lite::future::or(event, async {
                async_io::Timer::at(at).await;
                Next::Deadline
            })
            .await
        }
        None => event.await,
    }
}

/// A session's task: its connection, and the queues of its channels' handlers.
struct SessionTask {
    shared: Rc<Shared>,
    id: String,
    pc: PeerConnection,
    candidates: Sender<Option<IceCandidateInit>>,
    state: Rc<RefCell<ConnectionState>>,
    offerer: bool,
    /// Each open channel's handler queue, by the channel's [`DataChannel::ptr_key`].
    channels: HashMap<usize, Sender<ChannelEvent>>,
}

impl SessionTask {
    /// Handles one event; `Break` once the session is over.
    async fn on_event(&mut self, ev: Event) -> ControlFlow<()> {
        let id = &self.id;
        match ev {
            Event::IceCandidate(c) => {
                let _ = self.candidates.try_send(c);
            }
            Event::ConnectionState(s) => return self.on_state(s).await,
            Event::ChannelOpen(ch) => self.start_handler(ch),
            Event::ChannelMessage(ch, m) => {
                log::debug!("[{id}] {ch}: message of {} bytes", m.len());
                if let Some(tx) = self.channels.get(&ch.ptr_key()) {
                    // Awaiting here is the backpressure: a busy handler slows this session only.
                    if tx.send(ChannelEvent::Message(m)).await.is_err() {
                        self.channels.remove(&ch.ptr_key());
                    }
                }
            }
            Event::ChannelBufferedAmountLow(ch) => {
                if let Some(tx) = self.channels.get(&ch.ptr_key()) {
                    let _ = tx.try_send(ChannelEvent::BufferedAmountLow);
                }
            }
            Event::ChannelClosed(ch) => {
                self.channels.remove(&ch.ptr_key());
            }
            Event::Error(e) => log::warn!("[{id}] {e}"),
            // A browser's camera or microphone: to the session's sink (`/whip/NAME`, `?sink=`).
            #[cfg(feature = "media")]
            Event::Track(t) => self.shared.sinks.on_track(&self.shared, id, t),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    /// Records the connection state; with rawrtc's flow, opens the in-band noisy channel
    /// once connected. `Break` when the connection failed or closed.
    async fn on_state(&mut self, s: ConnectionState) -> ControlFlow<()> {
        *self.state.borrow_mut() = s;
        match s {
            ConnectionState::Connected if self.shared.config.rawrtc_flow => {
                let label = if self.offerer {
                    "bear-noises"
                } else {
                    "lion-noises"
                };
                let created = self
                    .pc
                    .create_data_channel(label, ChannelInit::default())
                    .await;
                if let Err(e) = created {
                    log::warn!("[{}] {label}: {e}", self.id);
                }
            }
            ConnectionState::Failed | ConnectionState::Closed => return ControlFlow::Break(()),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    /// Starts the channel's handler by its label, or closes a channel nobody handles.
    fn start_handler(&mut self, ch: DataChannel) {
        let (tx, rx) = async_channel::bounded(16);
        match self.shared.registry.start(&ch, rx) {
            Some(task) => {
                log::info!("[{}] data channel {ch} open: handler started", self.id);
                self.channels.insert(ch.ptr_key(), tx);
                self.shared.ex.spawn(task).detach();
            }
            None => {
                log::warn!(
                    "[{}] data channel {ch} has no handler: refused (closed)",
                    self.id
                );
                ch.close();
            }
        }
    }

    /// The end: handlers' queues dropped, the connection closed, the session's places freed.
    async fn free(self) {
        let Self {
            shared,
            id,
            pc,
            channels,
            ..
        } = self;
        drop(channels);
        pc.close().await;
        #[cfg(feature = "media")]
        shared.sinks.unbind(&id);
        let age = shared
            .sessions
            .borrow_mut()
            .remove(&id)
            .map(|s| s.started.elapsed());
        log::info!(
            "[{id}] session freed after {:.1} s ({} sessions)",
            age.unwrap_or_default().as_secs_f64(),
            shared.sessions.borrow().len()
        );
    }
}
