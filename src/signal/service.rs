//! `smolrtc serve`: sessions (one peer connection per browser) and what runs on them.
//!
//! Everything here lives on the smolrtc thread next to the peers' actors: the HTTP server,
//! the session table, one task per session that reads its events and feeds its channel
//! handlers. A session ends when its connection fails (ICE consent lost, DTLS failure) or
//! closes (the browser's SCTP ABORT / close_notify, `DELETE /whip/<id>`); then its peer
//! connection is closed and every resource it held is freed.

use crate::apps::{ChannelEvent, Registry};
use crate::channel::{ChannelInit, DataChannel};
use crate::error::{Error, Result};
use crate::peer::{Config, ConnectionState, Event, EventStream, PeerConnection};
use crate::runtime::Runtime;
use crate::sdp::{Description, IceCandidateInit};
use async_channel::{Receiver, Sender};
use smol::LocalExecutor;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Service settings; every limit is named here.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Address of the HTTP server (page + signaling).
    pub listen: SocketAddr,
    /// Template for every session's peer connection (its name is replaced by the session id).
    pub peer: Config,
    /// Most sessions at once; more get `503`.
    pub max_sessions: usize,
    /// Largest signaling request body, bytes; larger get `413`.
    pub max_body: usize,
    /// Longest wait for ICE gathering before a non-trickle answer goes out as it is.
    pub gather_timeout: Duration,
    /// Longest wait for a request's headers (slow clients are cut off).
    pub header_timeout: Duration,
    /// Run every session's ICE over this one UDP port (on each host address; 0 picks a free
    /// port), so the device needs one firewall hole; `None`: a port per session.
    pub single_port: Option<u16>,
    /// Run rawrtc's channel flow on every session (negotiated `cat-noises` id 0, and an
    /// in-band `bear-noises`/`lion-noises` once connected).
    pub rawrtc_flow: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8888)),
            peer: Config::default(),
            max_sessions: 64,
            max_body: 64 * 1024,
            gather_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            rawrtc_flow: true,
            single_port: None,
        }
    }
}

/// How a session was signaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    Http,
    Whip,
    WebSocket,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Whip => "whip",
            Via::WebSocket => "ws",
        }
    }
}

pub(crate) struct Session {
    pub(crate) pc: PeerConnection,
    via: Via,
    started: Instant,
    state: Rc<RefCell<ConnectionState>>,
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
}

/// A new session: its peer connection and its local candidates as they are gathered
/// (`None` = end-of-candidates).
pub(crate) struct NewSession {
    pub(crate) id: String,
    pub(crate) pc: PeerConnection,
    pub(crate) candidates: Receiver<Option<IceCandidateInit>>,
}

/// An error answered to a signaling client: HTTP status and message.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) u16, pub(crate) String);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e {
            Error::Sdp(_) | Error::InvalidArgument(_) | Error::InvalidState(_) => 400,
            Error::Limit(_) => 503,
            _ => 500,
        };
        ApiError(status, e.to_string())
    }
}

impl Shared {
    pub(crate) fn new(
        config: ServiceConfig,
        registry: Registry,
        runtime: Runtime,
        ex: Rc<LocalExecutor<'static>>,
        reports: Sender<serde_json::Value>,
    ) -> Rc<Self> {
        Rc::new(Self {
            config,
            registry,
            runtime,
            ex,
            sessions: RefCell::new(HashMap::new()),
            reports,
        })
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

    /// Creates a session; `offerer` says whether the service makes the offer.
    pub(crate) async fn open(
        self: &Rc<Self>,
        via: Via,
        offerer: bool,
    ) -> Result<NewSession, ApiError> {
        let max = self.config.max_sessions;
        if self.sessions.borrow().len() >= max {
            log::warn!("session refused: max_sessions ({max}) reached");
            return Err(ApiError(
                503,
                format!("too many sessions (max_sessions = {max})"),
            ));
        }
        let id = session_id()?;
        let mut config = self.config.peer.clone();
        config.name = id.clone();
        let pc = PeerConnection::with_runtime(&self.runtime, config)?;
        let events = pc.events();
        if self.config.rawrtc_flow {
            pc.create_data_channel("cat-noises", ChannelInit::negotiated(0))
                .await?;
        }
        let state = Rc::new(RefCell::new(ConnectionState::New));
        self.sessions.borrow_mut().insert(
            id.clone(),
            Session {
                pc: pc.clone(),
                via,
                started: Instant::now(),
                state: state.clone(),
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

fn session_id() -> Result<String> {
    let provider = crate::dtls::crypto_provider()?;
    let mut raw = [0u8; 8];
    provider
        .random()
        .fill(&mut raw)
        .map_err(|e| Error::InvalidState(format!("random: {e}")))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Waits (bounded) for the end of gathering, then returns the local description.
pub(crate) async fn complete_description(
    s: &NewSession,
    timeout: Duration,
) -> Result<Description, ApiError> {
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
        .ok_or_else(|| ApiError(500, "no local description".into()))
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
    let mut channels: HashMap<usize, Sender<ChannelEvent>> = HashMap::new();
    let key = |c: &DataChannel| c.ptr_key();
    while let Some(ev) = events.next().await {
        match ev {
            Event::IceCandidate(c) => {
                let _ = candidates.try_send(c);
            }
            Event::ConnectionState(s) => {
                *state.borrow_mut() = s;
                match s {
                    ConnectionState::Connected if shared.config.rawrtc_flow => {
                        let label = if offerer {
                            "bear-noises"
                        } else {
                            "lion-noises"
                        };
                        if let Err(e) = pc.create_data_channel(label, ChannelInit::default()).await
                        {
                            log::warn!("[{id}] {label}: {e}");
                        }
                    }
                    ConnectionState::Failed | ConnectionState::Closed => break,
                    _ => {}
                }
            }
            Event::ChannelOpen(ch) => {
                let (tx, rx) = async_channel::bounded(16);
                match shared.registry.start(&ch, rx) {
                    Some(task) => {
                        log::info!("[{id}] data channel {ch} open: handler started");
                        channels.insert(key(&ch), tx);
                        shared.ex.spawn(task).detach();
                    }
                    None => {
                        log::warn!("[{id}] data channel {ch} has no handler: refused (closed)");
                        ch.close();
                    }
                }
            }
            Event::ChannelMessage(ch, m) => {
                log::debug!("[{id}] {ch}: message of {} bytes", m.len());
                if let Some(tx) = channels.get(&key(&ch)) {
                    // Awaiting here is the backpressure: a busy handler slows this session only.
                    if tx.send(ChannelEvent::Message(m)).await.is_err() {
                        channels.remove(&key(&ch));
                    }
                }
            }
            Event::ChannelBufferedAmountLow(ch) => {
                if let Some(tx) = channels.get(&key(&ch)) {
                    let _ = tx.try_send(ChannelEvent::BufferedAmountLow);
                }
            }
            Event::ChannelClosed(ch) => {
                channels.remove(&key(&ch));
            }
            Event::Error(e) => log::warn!("[{id}] {e}"),
            _ => {}
        }
    }
    drop(channels);
    pc.close().await;
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

/// The device service: an HTTP server with the page and the signaling API, and channel
/// handlers chosen by label. See [`super::http`] for the endpoints.
pub struct Service {
    config: ServiceConfig,
    registry: Registry,
}

/// A running service.
pub struct ServiceHandle {
    /// The address the HTTP server is bound to.
    pub addr: SocketAddr,
    stop: Sender<Sender<()>>,
    reports: Receiver<serde_json::Value>,
}

/// Most client reports kept for [`ServiceHandle::next_report`]; older ones are dropped.
const REPORTS_KEPT: usize = 16;

impl ServiceHandle {
    /// The next report a page posted to `POST /api/report` (its self-test results), waiting
    /// at most `timeout`.
    pub fn next_report(&self, timeout: Duration) -> Option<serde_json::Value> {
        futures_lite::future::block_on(futures_lite::future::or(
            async { self.reports.recv().await.ok() },
            async {
                async_io::Timer::after(timeout).await;
                None
            },
        ))
    }

    /// Closes every session (channels, SCTP ABORT, DTLS close_notify) and stops accepting;
    /// returns when done or after a few seconds.
    pub fn shutdown(&self) {
        let (tx, rx) = async_channel::bounded(1);
        if self.stop.try_send(tx).is_ok() {
            futures_lite::future::block_on(futures_lite::future::or(
                async {
                    let _ = rx.recv().await;
                },
                async {
                    async_io::Timer::after(Duration::from_secs(3)).await;
                },
            ));
        }
    }
}

impl Service {
    /// A service with the built-in handlers (`echo`, `discard`, `chargen`, rawrtc's noises).
    pub fn new(config: ServiceConfig) -> Self {
        Self {
            config,
            registry: Registry::builtin(),
        }
    }

    /// Runs `handler` for channels labelled `label` (see [`crate::apps`]).
    pub fn handle<F, Fut>(&mut self, label: &str, handler: F) -> &mut Self
    where
        F: Fn(DataChannel, crate::apps::ChannelEvents) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        self.registry.register(label, handler);
        self
    }

    /// The handler registry, to add or replace handlers.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Binds the listener (errors now, not later) and serves on `runtime`'s thread.
    pub fn start(mut self, runtime: &Runtime) -> Result<ServiceHandle> {
        if let Some(port) = self.config.single_port {
            let shared = crate::ice::SharedPort::bind(runtime, &self.config.peer.ice.hosts, port)?;
            self.config.peer.ice.shared_port = Some(shared);
        }
        // A non-trickle answer waits for the servers' answers (or their timeout).
        self.config.gather_timeout = self
            .config
            .gather_timeout
            .max(self.config.peer.ice.gather_timeout + Duration::from_secs(1));
        let listener = std::net::TcpListener::bind(self.config.listen)?;
        let addr = listener.local_addr()?;
        let listener = async_io::Async::new(listener)?;
        let (stop_tx, stop_rx) = async_channel::bounded::<Sender<()>>(1);
        let (reports_tx, reports_rx) = async_channel::bounded(REPORTS_KEPT);
        let rt = runtime.clone();
        runtime.spawn_actors(move |ex| {
            let shared = Shared::new(self.config, self.registry, rt, ex.clone(), reports_tx);
            let s2 = shared.clone();
            ex.spawn(async move {
                let stopped = futures_lite::future::or(
                    async {
                        super::http::serve(s2.clone(), listener).await;
                        None
                    },
                    async { stop_rx.recv().await.ok() },
                )
                .await;
                let ids: Vec<String> = s2.list().into_iter().map(|s| s.0).collect();
                log::info!("shutting down: closing {} sessions", ids.len());
                for id in ids {
                    s2.close(&id).await;
                }
                if let Some(done) = stopped {
                    let _ = done.try_send(());
                }
            })
            .detach();
        });
        log::info!("listening on http://{addr}");
        Ok(ServiceHandle {
            addr,
            stop: stop_tx,
            reports: reports_rx,
        })
    }

    /// Serves on the process-wide smolrtc thread until SIGINT or SIGTERM, then closes every
    /// session cleanly.
    pub fn run(self) -> Result<()> {
        let handle = self.start(Runtime::global())?;
        let mut signals =
            async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])?;
        let sig = futures_lite::future::block_on(futures_lite::StreamExt::next(&mut signals));
        match sig {
            Some(Ok(sig)) => log::info!("{sig:?}: stopping"),
            _ => log::info!("stopping"),
        }
        handle.shutdown();
        Ok(())
    }
}
