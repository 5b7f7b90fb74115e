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
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Service settings; every limit is named here (and has a `smolrtc serve` flag of the same
/// name, dashed, and a config-file key).
#[derive(Clone)]
pub struct ServiceConfig {
    /// Address of the HTTP server (page + signaling).
    pub listen: SocketAddr,
    /// Template for every session's peer connection (its name is replaced by the session id).
    /// Its `max_channels` bounds the data channels of one session (default
    /// [`DEFAULT_MAX_CHANNELS`]): a channel the browser opens beyond it is closed at once.
    /// Its `ice.max_remote_candidates` bounds the remote candidates of one session (default
    /// [`crate::ice::DEFAULT_MAX_REMOTE_CANDIDATES`]): past it a trickled candidate gets
    /// `422` naming the limit (WebSocket: an error message).
    /// Its `sctp.send_buffer_per_channel` and `sctp.send_buffer_per_connection` bound what
    /// a session's handlers may queue (defaults [`DEFAULT_SEND_BUFFER_PER_CHANNEL`],
    /// [`DEFAULT_SEND_BUFFER_PER_SESSION`]).
    pub peer: Config,
    /// Most sessions at once; more get `503`.
    pub max_sessions: usize,
    /// Largest signaling request body (and WebSocket message), bytes; larger get `413`.
    pub max_body: usize,
    /// Longest wait for ICE gathering before a non-trickle answer goes out as it is.
    pub gather_timeout: Duration,
    /// Longest wait for a request's complete headers, from the connection's start or the
    /// end of the previous response: slow clients are dropped, and so are keep-alive
    /// connections idle that long.
    pub header_timeout: Duration,
    /// Longest wait for a request's body once its headers are in; slower gets `408` and the
    /// connection is closed.
    pub body_timeout: Duration,
    /// Longest a client may leave our writes blocked (by reading nothing); then it is
    /// dropped. Also applies to WebSocket connections.
    pub write_timeout: Duration,
    /// A session whose connection is not up this long after the offer (no ICE pair, no
    /// DTLS) is closed, so half-signaled sessions do not hold a place under `max_sessions`.
    pub connect_timeout: Duration,
    /// Most HTTP connections at once (WebSocket connections count under `max_websockets`
    /// once upgraded); more get `503` and are closed.
    pub max_connections: usize,
    /// Most WebSocket signaling connections at once; more get `503` instead of the upgrade.
    pub max_websockets: usize,
    /// Most HTTP connections at once from one client address; more get `429` and are
    /// closed. Below `max_connections`, so that one address cannot hold them all.
    pub max_connections_per_address: usize,
    /// Most connections at once from one client address that have not yet sent the
    /// complete headers of their first request (slowloris); more get `429` and are closed.
    /// A connection leaves this count once its first request's headers are in; later
    /// requests on it are bounded by `header_timeout` and `max_connections_per_address`.
    pub max_slow_connections_per_address: usize,
    /// Most sessions at once signaled from one client address; more get `429`. Below
    /// `max_sessions`, so that one address cannot hold them all.
    pub max_sessions_per_address: usize,
    /// Most WebSocket signaling connections at once from one client address; more get
    /// `429` instead of the upgrade.
    pub max_websockets_per_address: usize,
    /// Host names (besides IP literals, `localhost`, the machine's host name and
    /// `<hostname>.local`) that a request's `Host` may name; any other `Host` gets `421`
    /// everywhere but the page itself (DNS rebinding). Lowercase, no port.
    pub allow_hosts: Vec<String>,
    /// Origins (`http://name[:port]`, `https://...`) besides the service's own
    /// (`http://` + the request's `Host`) from which a page may upgrade to a WebSocket or
    /// send a state-changing request (anything but GET, HEAD, OPTIONS); another `Origin`
    /// gets `403`. A request without `Origin` (curl, native clients) is let through;
    /// `Origin: null` is not.
    pub allow_origins: Vec<String>,
    /// When set, every API request must carry `Authorization: Bearer <token>` (a WebSocket
    /// may put `?token=<token>` in its URL instead); the page itself still loads. Letters,
    /// digits and `-._~+/` (RFC 6750), then optional `=`; never logged.
    pub token: Option<String>,
    /// Run every session's ICE over this one UDP port (on each host address; 0 picks a free
    /// port), so the device needs one firewall hole; `None`: a port per session.
    pub single_port: Option<u16>,
    /// Run rawrtc's channel flow on every session (negotiated `cat-noises` id 0, and an
    /// in-band `bear-noises`/`lion-noises` once connected).
    pub rawrtc_flow: bool,
}

/// Default of [`ServiceConfig::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: usize = 64;
/// Default of [`ServiceConfig::max_body`], bytes.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Default data channels per session (the service's `peer.max_channels`).
pub const DEFAULT_MAX_CHANNELS: usize = 256;
/// Default send buffer of one channel, bytes (the service's
/// `peer.sctp.send_buffer_per_channel`): above what the built-in handlers keep queued
/// (chargen 4 MiB, echo 1 MiB, plus a message).
pub const DEFAULT_SEND_BUFFER_PER_CHANNEL: usize = 8 * 1024 * 1024;
/// Default send buffer of one session, all its channels, bytes (the service's
/// `peer.sctp.send_buffer_per_connection`).
pub const DEFAULT_SEND_BUFFER_PER_SESSION: usize = 16 * 1024 * 1024;
/// Default of [`ServiceConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
/// Default of [`ServiceConfig::max_websockets`].
pub const DEFAULT_MAX_WEBSOCKETS: usize = 64;
/// Default of [`ServiceConfig::max_connections_per_address`]: a quarter of the
/// connections, so that one address leaves three quarters to the others.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = DEFAULT_MAX_CONNECTIONS / 4;
/// Default of [`ServiceConfig::max_slow_connections_per_address`]: a browser opens at most
/// six connections to a host at once.
pub const DEFAULT_MAX_SLOW_CONNECTIONS_PER_ADDRESS: usize = 16;
/// Default of [`ServiceConfig::max_sessions_per_address`]: a quarter of the default
/// sessions (`smolrtc serve` takes a quarter of its `--max-sessions`).
pub const DEFAULT_MAX_SESSIONS_PER_ADDRESS: usize = DEFAULT_MAX_SESSIONS / 4;
/// Default of [`ServiceConfig::max_websockets_per_address`]: a quarter of the WebSockets.
pub const DEFAULT_MAX_WEBSOCKETS_PER_ADDRESS: usize = DEFAULT_MAX_WEBSOCKETS / 4;
/// Default of [`ServiceConfig::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServiceConfig::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServiceConfig::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServiceConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ServiceConfig {
    fn default() -> Self {
        let mut peer = Config {
            max_channels: DEFAULT_MAX_CHANNELS,
            ..Config::default()
        };
        peer.sctp.send_buffer_per_channel = DEFAULT_SEND_BUFFER_PER_CHANNEL;
        peer.sctp.send_buffer_per_connection = DEFAULT_SEND_BUFFER_PER_SESSION;
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8888)),
            peer,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_body: DEFAULT_MAX_BODY,
            gather_timeout: Duration::from_secs(5),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_websockets: DEFAULT_MAX_WEBSOCKETS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_slow_connections_per_address: DEFAULT_MAX_SLOW_CONNECTIONS_PER_ADDRESS,
            max_sessions_per_address: DEFAULT_MAX_SESSIONS_PER_ADDRESS,
            max_websockets_per_address: DEFAULT_MAX_WEBSOCKETS_PER_ADDRESS,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
            token: None,
            rawrtc_flow: true,
            single_port: None,
        }
    }
}

impl ServiceConfig {
    /// Checks the settings that can be wrong (a token the `Authorization` header cannot
    /// carry, a zero limit, a host name or origin that cannot match).
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.token {
            check_token(t)?;
        }
        for h in &self.allow_hosts {
            check_allowed_host(h)?;
        }
        for o in &self.allow_origins {
            check_allowed_origin(o)?;
        }
        for (name, v) in [
            ("max-sessions", self.max_sessions),
            ("max-body", self.max_body),
            ("max-connections", self.max_connections),
            ("max-websockets", self.max_websockets),
            (
                "max-connections-per-address",
                self.max_connections_per_address,
            ),
            (
                "max-slow-connections-per-address",
                self.max_slow_connections_per_address,
            ),
            ("max-sessions-per-address", self.max_sessions_per_address),
            (
                "max-websockets-per-address",
                self.max_websockets_per_address,
            ),
        ] {
            if v == 0 {
                return Err(Error::InvalidArgument(format!("{name} must be at least 1")));
            }
        }
        for (name, v) in [
            ("header-timeout", self.header_timeout),
            ("body-timeout", self.body_timeout),
            ("write-timeout", self.write_timeout),
            ("connect-timeout", self.connect_timeout),
        ] {
            if v.is_zero() {
                return Err(Error::InvalidArgument(format!("{name} must be above 0")));
            }
        }
        Ok(())
    }
}

/// A bearer token as RFC 6750 §2.1 spells one (`b64token`): letters, digits, `-._~+/`,
/// then optional `=` padding. The error never quotes the token.
pub fn check_token(token: &str) -> Result<()> {
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !ok {
        return Err(Error::InvalidArgument(
            "token: use letters, digits and -._~+/ only (RFC 6750 b64token), at least one".into(),
        ));
    }
    if token.len() < 16 {
        log::warn!(
            "token: only {} characters; 32 random ones (openssl rand -base64 24) are better",
            token.len()
        );
    }
    Ok(())
}

/// An `--allow-host` name: letters, digits, `-` and `.` (an IP literal is allowed anyway).
pub fn check_allowed_host(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "allow-host {name:?}: expected a host name (letters, digits, - and .), without a port"
        )));
    }
    Ok(())
}

/// An `--allow-origin`: `http://` or `https://`, a host, an optional port, nothing else.
pub fn check_allowed_origin(origin: &str) -> Result<()> {
    if super::http::Origin::parse(origin).is_none() {
        return Err(Error::InvalidArgument(format!(
            "allow-origin {origin:?}: expected http://HOST[:PORT] or https://HOST[:PORT]"
        )));
    }
    Ok(())
}

/// A count of live things (connections, WebSockets) and a slot in it, freed on drop.
#[derive(Clone, Default)]
pub(crate) struct Counter(Rc<Cell<usize>>);

impl Counter {
    /// A slot, unless `max` are taken.
    pub(crate) fn take(&self, max: usize) -> Option<Slot> {
        (self.0.get() < max).then(|| {
            self.0.set(self.0.get() + 1);
            Slot(self.0.clone())
        })
    }
}

/// One place in a [`Counter`], given back when dropped.
pub(crate) struct Slot(Rc<Cell<usize>>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Counts of live things per client address, and a slot in one, freed on drop. The map
/// holds only addresses with something live, so it is bounded by the live things.
#[derive(Clone, Default)]
pub(crate) struct PerAddress(Rc<RefCell<HashMap<IpAddr, usize>>>);

impl PerAddress {
    /// A slot for `ip`, unless `max` are taken by it.
    pub(crate) fn take(&self, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut map = self.0.borrow_mut();
        let n = map.entry(ip).or_default();
        if *n >= max {
            if *n == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.0.clone(), ip))
    }
}

/// One place in a [`PerAddress`] count, given back when dropped.
pub(crate) struct AddressSlot(Rc<RefCell<HashMap<IpAddr, usize>>>, IpAddr);

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.0.borrow_mut();
        if let Some(n) = map.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// The address a client is counted under: an IPv4-mapped IPv6 address (a dual-stack
/// listener's view of an IPv4 client) as the IPv4 address.
pub(crate) fn client_address(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Logs a kind of refusal at most once a second, counting the lines it held back, so a
/// flood (of connections, of wrong tokens) cannot flood the log.
#[derive(Default)]
pub(crate) struct QuietLog {
    last: Cell<Option<Instant>>,
    held: Cell<u64>,
}

impl QuietLog {
    pub(crate) fn warn(&self, line: impl FnOnce() -> String) {
        let now = Instant::now();
        if self
            .last
            .get()
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.held.set(self.held.get() + 1);
            return;
        }
        self.last.set(Some(now));
        match self.held.replace(0) {
            0 => log::warn!("{}", line()),
            n => log::warn!(
                "{} ({n} more like it in the last second not logged)",
                line()
            ),
        }
    }
}

/// One [`QuietLog`] per kind of refusal (a route and a status, say), so a flood of one
/// kind neither floods the log nor hides the first line of another. Kinds are `'static`
/// names, never client text, so the map stays small.
#[derive(Default)]
pub(crate) struct QuietLogs(RefCell<HashMap<(&'static str, u16), QuietLog>>);

impl QuietLogs {
    pub(crate) fn warn(&self, kind: &'static str, status: u16, line: impl FnOnce() -> String) {
        self.0
            .borrow_mut()
            .entry((kind, status))
            .or_default()
            .warn(line);
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
    /// Its place under `max_sessions_per_address`, freed with the session.
    _address: AddressSlot,
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

/// Which errors are the client's (4xx) and which the service's (5xx):
///
/// | error | status |
/// | --- | --- |
/// | `Sdp`, `InvalidArgument`, `InvalidState`: the request is wrong or out of turn | 400 |
/// | `Limit`: the request would pass a per-session limit (remote candidates, channels); the message names it | 422 |
/// | `Closed`: the session's peer connection has closed meanwhile | 409 |
/// | `FingerprintMismatch`, `Dtls`, `Ice`, `Sctp`, `Io`: the service failed | 500 |
///
/// Service-wide limits (`max_sessions`, connections) are refused before any of these, with
/// `503`.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e {
            Error::Sdp(_) | Error::InvalidArgument(_) | Error::InvalidState(_) => 400,
            Error::Limit(_) => 422,
            Error::Closed => 409,
            Error::FingerprintMismatch
            | Error::Dtls(_)
            | Error::Ice(_)
            | Error::Sctp(_)
            | Error::Io(_) => 500,
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
        let host_names = host_names(&config.allow_hosts);
        log::info!(
            "API requests must name this device in Host: an IP literal or {}",
            host_names.join(", ")
        );
        Rc::new(Self {
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

    /// Creates a session for a client at `client`; `offerer` says whether the service
    /// makes the offer.
    pub(crate) async fn open(
        self: &Rc<Self>,
        via: Via,
        offerer: bool,
        client: IpAddr,
    ) -> Result<NewSession, ApiError> {
        let max = self.config.max_sessions;
        if self.sessions.borrow().len() >= max {
            self.quiet.warn("session", 503, || {
                format!("session refused ({client}): max_sessions ({max}) reached")
            });
            return Err(ApiError(
                503,
                format!("too many sessions (max_sessions = {max})"),
            ));
        }
        let per = self.config.max_sessions_per_address;
        let Some(address) = self.sessions_per_address.take(client, per) else {
            self.quiet.warn("session", 429, || {
                format!("session refused: {client} has max_sessions_per_address ({per})")
            });
            return Err(ApiError(
                429,
                format!("too many sessions from your address (max_sessions_per_address = {per})"),
            ));
        };
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
fn machine_host_name() -> Option<String> {
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
    // Until the connection is first up, the session lives at most connect_timeout.
    let connect_timeout = shared.config.connect_timeout;
    let mut deadline = Some(Instant::now() + connect_timeout);
    loop {
        let ev = match deadline {
            Some(at) => {
                futures_lite::future::or(async { Some(events.next().await) }, async {
                    async_io::Timer::at(at).await;
                    None
                })
                .await
            }
            None => Some(events.next().await),
        };
        let Some(ev) = ev else {
            log::warn!(
                "[{id}] not connected within {:.1} s (connect_timeout): closing the session",
                connect_timeout.as_secs_f64()
            );
            break;
        };
        let Some(ev) = ev else { break };
        match ev {
            Event::IceCandidate(c) => {
                let _ = candidates.try_send(c);
            }
            Event::ConnectionState(s) => {
                *state.borrow_mut() = s;
                if s == ConnectionState::Connected {
                    deadline = None;
                }
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
        self.config.validate()?;
        if let Some(port) = self.config.single_port {
            let shared = crate::ice::SharedPort::bind(runtime, &self.config.peer.ice.hosts, port)?;
            self.config.peer.ice.shared_port = Some(shared);
        }
        // A non-trickle answer waits for the servers' answers (or their timeout).
        self.config.gather_timeout = self
            .config
            .gather_timeout
            .max(self.config.peer.ice.gather_timeout + Duration::from_secs(1));
        let token = self.config.token.is_some();
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
        log::info!(
            "listening on http://{addr}{}",
            if token {
                " (API behind a bearer token)"
            } else {
                ""
            }
        );
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
