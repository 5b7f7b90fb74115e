//! Publish (feature `media`): `--publish NAME=URL` pushes stream NAME to a WHIP endpoint
//! (RFC 9725): an SFU or a cloud media service that fans it out to more viewers than the
//! board could serve.
//!
//! One task per publish runs one peer connection at a time: the stream's tracks offered
//! `sendonly` (`create_offer`), `POST` `application/sdp` with `Authorization: Bearer`,
//! `201` + `Location` + the answer; candidates gathered after the POST go by `PATCH`
//! (`application/trickle-ice-sdpfrag`); `DELETE` of the resource on shutdown. The leg is
//! one more viewer of the stream's tracks ([`LegViewer`]): the same packetized frames, the
//! same sender (NACK answered, RTX), a PLI/FIR answered with the cached keyframe.
//!
//! ICE disconnected for [`DISCONNECTED_GRACE`] while the connection was up is an ICE
//! restart by `PATCH` (§4.3.2: new credentials and candidates with `If-Match: *`, the
//! endpoint's new ones in its `200`); DTLS and the media go on over the new pair.
//!
//! A refusal (an HTTP status other than `201`, the endpoint unreachable) or a connection
//! that ends (the ICE restart refused or not connected within [`RESTART_WAIT`], ICE/DTLS
//! failed, closed by the endpoint) is one log line, a `DELETE` and a new `POST` after the
//! next step of [`BACKOFF`]; the schedule starts over once a connection was up for
//! [`STABLE`]. ICE servers (§4.6, `Link` headers) are asked for by an `OPTIONS` before each
//! `POST` and used by that connection; those of the `201` not asked yet are added to the
//! running connection (`add_ice_servers`), their candidates trickled by `PATCH`. The
//! state is in `GET /api/streams` (`publish`) and `/metrics`.

mod client;

use super::streams::{stream_codecs, LegViewer};
use super::Shared;
use crate::error::{Error, Result};
use crate::ice::{IceConnectionState, IceServer};
use crate::media::local::TrackInput;
use crate::media::{MediaKind, TrackInit};
use crate::peer::{ConnectionState, Event, PeerConnection};
use crate::sdp::{Description, SdpType};
use futures_rustls::rustls;
use hyper::{Method, StatusCode, Uri};
use smol::Task;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Waits between attempts: each failure takes the next step, the last one repeats.
pub const BACKOFF: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(30),
];
/// ICE disconnected this long (consent lost: the path or the endpoint is gone) restarts
/// ICE by PATCH, long before ICE's own failure (29 s).
const DISCONNECTED_GRACE: Duration = Duration::from_secs(3);
/// An ICE restart not connected within this long ends the connection (DELETE, a new POST).
const RESTART_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for the endpoint's answer to the OPTIONS before a POST.
const OPTIONS_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for local candidates before the POST (host candidates come at once; later
/// ones are trickled).
const GATHER_WAIT: Duration = Duration::from_secs(1);
/// A connection up at least this long starts the backoff schedule over when it ends;
/// one that ends sooner takes the next step (an endpoint that accepts and drops at once
/// is not retried in a loop).
const STABLE: Duration = Duration::from_secs(30);
/// Longest a DELETE may hold up shutdown.
const DELETE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The endpoint's body as logged at most (bytes).
const LOGGED_BODY: usize = 200;

/// One `--publish NAME=URL` (or `[publish.NAME] url = .., token-file = ..`).
#[derive(Clone, PartialEq, Eq)]
pub struct PublishConfig {
    /// The stream published (a `--video`/`--audio` NAME).
    pub name: String,
    /// The WHIP endpoint, `http://` or `https://`.
    pub url: String,
    /// Sent as `Authorization: Bearer` (never logged).
    pub token: Option<String>,
    /// Extra certificate authorities (PEM) for an `https://` endpoint, beside the system's
    /// (`IceConfig::tls_roots`).
    pub ca: Option<PathBuf>,
}

impl std::fmt::Debug for PublishConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "..."))
            .field("ca", &self.ca)
            .finish()
    }
}

impl PublishConfig {
    /// Parses `--publish NAME=URL`; errors name the flag and what is wrong.
    pub fn parse(flag: &str) -> Result<Self> {
        let Some((name, url)) = flag.split_once('=') else {
            return Err(Error::InvalidArgument(
                format!(
                    "--publish {flag:?}: expected NAME=URL, e.g. --publish cam=https://sfu.example/whip/cam"
                )
                .into(),
            ));
        };
        let c = Self {
            name: name.trim().to_owned(),
            url: url.trim().to_owned(),
            token: None,
            ca: None,
        };
        c.check()?;
        Ok(c)
    }

    /// The name and the URL are well formed.
    pub fn check(&self) -> Result<()> {
        super::check_stream_name(&self.name)?;
        client::parse_url(&self.url)
            .map_err(|e| Error::InvalidArgument(format!("publish {}: {e}", self.name).into()))?;
        Ok(())
    }
}

/// Checks before serving: each publish names a stream, once.
pub(crate) fn check_publish(
    publish: &[PublishConfig],
    streams: &[super::StreamConfig],
) -> Result<()> {
    for (i, p) in publish.iter().enumerate() {
        p.check()?;
        if !streams.iter().any(|s| s.name == p.name) {
            return Err(Error::InvalidArgument(
                format!(
                    "publish {}: no stream of that name (give --video {}=SOURCE or --audio)",
                    p.name, p.name
                )
                .into(),
            ));
        }
        if publish[..i].iter().any(|o| o.name == p.name) {
            return Err(Error::InvalidArgument(
                format!("publish {} is given twice", p.name).into(),
            ));
        }
    }
    Ok(())
}

/// Where a publish is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The stream's codec is not known yet (H.264: no SPS seen).
    Waiting,
    /// POSTed or about to; ICE and DTLS not up yet.
    Connecting,
    Connected,
    /// Waiting before the next attempt.
    Retrying,
    Stopped,
}

impl State {
    const ALL: [State; 5] = [
        State::Waiting,
        State::Connecting,
        State::Connected,
        State::Retrying,
        State::Stopped,
    ];

    fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Retrying => "retrying",
            State::Stopped => "stopped",
        }
    }
}

/// One publish's figures, for `/api/streams` and `/metrics`.
struct Status {
    url: String,
    state: State,
    since: SystemTime,
    last_error: Option<String>,
    /// Attempts after the first.
    reconnects: u64,
    /// The endpoint's resource of the current connection (`Location`).
    resource: Option<String>,
}

impl Status {
    fn set(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            self.since = SystemTime::now();
        }
    }
}

/// The service's publishes and their tasks.
pub(crate) struct Publishers {
    list: Vec<(PublishConfig, Rc<RefCell<Status>>)>,
    tasks: RefCell<Vec<Task<()>>>,
    /// Closed to stop every publisher (each DELETEs its resource).
    stop: RefCell<Option<async_channel::Sender<()>>>,
    stopped: async_channel::Receiver<()>,
}

impl Publishers {
    pub(crate) fn new(configs: &[PublishConfig]) -> Self {
        let (stop, stopped) = async_channel::bounded(1);
        let list = configs
            .iter()
            .map(|c| {
                let status = Status {
                    url: c.url.clone(),
                    state: State::Waiting,
                    since: SystemTime::now(),
                    last_error: None,
                    reconnects: 0,
                    resource: None,
                };
                (c.clone(), Rc::new(RefCell::new(status)))
            })
            .collect();
        Self {
            list,
            tasks: RefCell::new(Vec::new()),
            stop: RefCell::new(Some(stop)),
            stopped,
        }
    }

    /// `publish` of stream `name` in `/api/streams`.
    pub(crate) fn json(&self, name: &str) -> Option<serde_json::Value> {
        let (_, s) = self.list.iter().find(|(c, _)| c.name == name)?;
        let s = s.borrow();
        let since = s
            .since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Some(serde_json::json!({
            "url": s.url,
            "state": s.state.as_str(),
            "since": since,
            "last_error": s.last_error,
            "reconnects": s.reconnects,
            "resource": s.resource,
        }))
    }

    /// The metrics lines (`smolrtc_publish_state`, `smolrtc_publish_reconnects_total`).
    pub(crate) fn render(&self, o: &mut String) {
        use std::fmt::Write;
        if self.list.is_empty() {
            return;
        }
        let _ = writeln!(
            o,
            "# HELP smolrtc_publish_state The state of each --publish (1 = current).\n# TYPE smolrtc_publish_state gauge"
        );
        for (c, s) in &self.list {
            let now = s.borrow().state;
            for st in State::ALL {
                let _ = writeln!(
                    o,
                    "smolrtc_publish_state{{stream=\"{}\",state=\"{}\"}} {}",
                    c.name,
                    st.as_str(),
                    u8::from(st == now)
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP smolrtc_publish_reconnects_total Connection attempts after the first, per --publish.\n# TYPE smolrtc_publish_reconnects_total counter"
        );
        for (c, s) in &self.list {
            let _ = writeln!(
                o,
                "smolrtc_publish_reconnects_total{{stream=\"{}\"}} {}",
                c.name,
                s.borrow().reconnects
            );
        }
    }

    /// Stops every publisher: each DELETEs its resource and closes its connection; returns
    /// when all are done or after a few seconds.
    pub(crate) async fn stop(&self) {
        self.stop.borrow_mut().take();
        let tasks: Vec<Task<()>> = self.tasks.borrow_mut().drain(..).collect();
        if tasks.is_empty() {
            return;
        }
        futures_lite::future::or(
            async {
                for t in tasks {
                    t.await;
                }
            },
            async {
                async_io::Timer::after(DELETE_TIMEOUT + Duration::from_millis(500)).await;
            },
        )
        .await;
    }
}

/// Starts a task per publish on the service's executor.
pub(crate) fn start(shared: &Rc<Shared>) {
    let tls = match tls_for(shared) {
        Ok(t) => t,
        Err(e) => {
            // Checked at start (`Service::prepare`); here only if the files changed since.
            log::error!("publish: {e}");
            return;
        }
    };
    for (config, status) in &shared.publish.list {
        log::info!("publish {} to {}", config.name, config.url);
        let task = shared.ex.spawn(run(
            shared.clone(),
            config.clone(),
            status.clone(),
            tls.clone(),
            shared.publish.stopped.clone(),
        ));
        shared.publish.tasks.borrow_mut().push(task);
    }
}

/// The TLS settings when a publish URL is `https://`.
pub(crate) fn tls_for(shared: &Shared) -> Result<Option<Arc<rustls::ClientConfig>>> {
    check_tls(&shared.config.publish, &shared.config.peer.ice.tls_roots)
}

/// Builds the TLS settings `https://` endpoints need (an error names the bad file).
pub(crate) fn check_tls(
    publish: &[PublishConfig],
    roots: &std::path::Path,
) -> Result<Option<Arc<rustls::ClientConfig>>> {
    let Some(p) = publish.iter().find(|p| p.url.starts_with("https://")) else {
        return Ok(None);
    };
    client::tls_config(roots, p.ca.as_deref())
        .map(Some)
        .map_err(|e| Error::InvalidArgument(e.into()))
}

/// Why a connection attempt ended.
enum Ended {
    /// The service is stopping.
    Stopped,
    /// It was up for `.1`, then ended (why).
    Dropped(String, Duration),
    /// It never came up (why).
    Failed(String),
    /// Refused with `503`/`429` and a `Retry-After` (why, how long the endpoint asks).
    Busy(String, Duration),
}

/// One publisher: attempts, waits, attempts again, until the service stops.
async fn run(
    shared: Rc<Shared>,
    config: PublishConfig,
    status: Rc<RefCell<Status>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    stop: async_channel::Receiver<()>,
) {
    let name = config.name.clone();
    // Checked at start.
    let Ok(url) = client::parse_url(&config.url) else {
        return;
    };
    let mut step = 0;
    let mut attempts = 0u64;
    let mut link_servers: Vec<IceServer> = Vec::new();
    let mut waiting_logged = false;
    loop {
        let Some(codecs) = stream_ready(&shared, &name, &status, &stop, &mut waiting_logged).await
        else {
            break;
        };
        if attempts > 0 {
            status.borrow_mut().reconnects += 1;
        }
        attempts += 1;
        status.borrow_mut().set(State::Connecting);
        let mut leg = Leg {
            shared: &shared,
            name: &name,
            url: &url,
            token: config.token.as_deref(),
            tls: tls.as_ref(),
            status: &status,
            link_servers: &mut link_servers,
            in_use: Vec::new(),
        };
        let ended = leg.connect(&codecs, &stop).await;
        status.borrow_mut().resource = None;
        let Some(wait) = wait_after(ended, &mut step, &config, &status) else {
            break;
        };
        status.borrow_mut().set(State::Retrying);
        if stopped_within(&stop, wait).await {
            break;
        }
    }
    status.borrow_mut().set(State::Stopped);
}

/// The stream's codecs once it has them (H.264: an SPS seen), checked every 500 ms
/// (logged once per publisher); `None` when the service stops first.
async fn stream_ready(
    shared: &Rc<Shared>,
    name: &str,
    status: &RefCell<Status>,
    stop: &async_channel::Receiver<()>,
    waiting_logged: &mut bool,
) -> Option<crate::sdp::StreamCodecs> {
    loop {
        match stream_codecs(shared, name) {
            Ok(c) => return Some(c),
            Err(why) => {
                if !*waiting_logged {
                    log::info!("publish {name}: waiting for the stream: {why}");
                    *waiting_logged = true;
                }
                status.borrow_mut().set(State::Waiting);
                if stopped_within(stop, Duration::from_millis(500)).await {
                    return None;
                }
            }
        }
    }
}

/// The wait before the next attempt after `ended` (the backoff's next `step`), logged and
/// kept as the last error; `None` when the service stops.
fn wait_after(
    ended: Ended,
    step: &mut usize,
    config: &PublishConfig,
    status: &RefCell<Status>,
) -> Option<Duration> {
    let name = &config.name;
    let backoff = |step: usize| BACKOFF[step.min(BACKOFF.len() - 1)];
    let (why, wait) = match ended {
        Ended::Stopped => return None,
        Ended::Dropped(why, up_for) => {
            // Up for a while: the schedule starts over.
            if up_for >= STABLE {
                *step = 0;
            }
            let wait = backoff(*step);
            log::warn!(
                "publish {name}: the connection to {} ended: {why}; reconnecting in {} s",
                config.url,
                wait.as_secs()
            );
            (why, wait)
        }
        Ended::Failed(why) => {
            let wait = backoff(*step);
            log::warn!("publish {name}: {why}; retrying in {} s", wait.as_secs());
            (why, wait)
        }
        Ended::Busy(why, asked) => {
            // The endpoint's wait when longer than the backoff's (RFC 9110 §10.2.3).
            let wait = backoff(*step).max(asked);
            log::warn!(
                "publish {name}: {why}; retrying in {} s (Retry-After)",
                wait.as_secs()
            );
            (why, wait)
        }
    };
    *step += 1;
    status.borrow_mut().last_error = Some(why);
    Some(wait)
}

/// Waits `d`; `true` when the service stops meanwhile.
async fn stopped_within(stop: &async_channel::Receiver<()>, d: Duration) -> bool {
    futures_lite::future::or(
        async {
            let _ = stop.recv().await;
            true
        },
        async {
            async_io::Timer::after(d).await;
            false
        },
    )
    .await
}

/// One connection attempt of a publisher.
struct Leg<'a> {
    shared: &'a Rc<Shared>,
    name: &'a str,
    url: &'a Uri,
    token: Option<&'a str>,
    tls: Option<&'a Arc<rustls::ClientConfig>>,
    status: &'a Rc<RefCell<Status>>,
    link_servers: &'a mut Vec<IceServer>,
    /// The ICE servers of this connection.
    in_use: Vec<IceServer>,
}

/// A connection whose offer the endpoint took (its `201`): what `run_connected` follows.
struct Posted<'a> {
    pc: &'a PeerConnection,
    events: &'a mut crate::peer::EventStream,
    /// Events seen while gathering, before the POST.
    early: Vec<Event>,
    offer: &'a Description,
    /// The endpoint's answer (the `201`'s body).
    answer: &'a str,
    /// The endpoint's resource for this connection (`Location`).
    resource: &'a Uri,
    stop: &'a async_channel::Receiver<()>,
}

/// A connection's state between its events (`run_connected`).
struct Live {
    /// The endpoint's answer as set (an ICE restart changes its credentials).
    answer: String,
    /// Our ufrag, pwd and mid, for trickle fragments.
    ice: (String, String, String),
    /// Late candidates are PATCHed (until the endpoint refuses them).
    trickle: bool,
    /// When it first connected.
    up: Option<Instant>,
    /// When waiting ends: to connect, to reconnect (ICE disconnected), or for a restart.
    deadline: Option<Instant>,
    /// An ICE restart is under way (PATCHed, not connected yet).
    restarting: bool,
}

/// What wakes a connected leg.
enum Wake {
    Event(Option<Event>),
    Stop,
    Deadline,
}

impl Leg<'_> {
    async fn request(
        &self,
        method: Method,
        uri: &Uri,
        body: Option<(&'static str, String)>,
    ) -> std::result::Result<client::Reply, String> {
        self.request_with(method, uri, body, &[]).await
    }

    async fn request_with(
        &self,
        method: Method,
        uri: &Uri,
        body: Option<(&'static str, String)>,
        extra: client::Extra<'_>,
    ) -> std::result::Result<client::Reply, String> {
        client::request(
            &self.shared.ex,
            self.tls,
            method,
            uri,
            self.token,
            body,
            extra,
        )
        .await
    }

    /// The ICE servers the endpoint names in `Link` headers of its answer to an OPTIONS
    /// (RFC 9725 §4.6 allows it before the POST, as mediamtx's client does): used by this
    /// connection. An endpoint that does not answer OPTIONS gives none.
    async fn options_servers(&self) -> Vec<IceServer> {
        let reply = futures_lite::future::or(
            async { Some(self.request(Method::OPTIONS, self.url, None).await) },
            async {
                async_io::Timer::after(OPTIONS_TIMEOUT).await;
                None
            },
        )
        .await;
        match reply {
            Some(Ok(r)) if r.status.is_success() => client::link_ice_servers(&r.headers),
            Some(Ok(r)) => {
                log::debug!("publish {}: OPTIONS {}: {}", self.name, self.url, r.status);
                Vec::new()
            }
            Some(Err(e)) => {
                log::debug!("publish {}: OPTIONS {}: {e}", self.name, self.url);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Offers, POSTs, and runs the connection until it ends or the service stops.
    async fn connect(
        &mut self,
        codecs: &crate::sdp::StreamCodecs,
        stop: &async_channel::Receiver<()>,
    ) -> Ended {
        let name = self.name;
        let mut config = self.shared.peer_config(&format!("publish-{name}"));
        let now = self.options_servers().await;
        if !now.is_empty() {
            log::info!(
                "publish {name}: the endpoint names {} ICE servers (Link, OPTIONS); used by this connection",
                now.len()
            );
        }
        for s in now.into_iter().chain(self.link_servers.iter().cloned()) {
            if !config.ice.servers.contains(&s) {
                config.ice.servers.push(s);
            }
        }
        self.in_use = config.ice.servers.clone();
        let pc = match PeerConnection::with_runtime(self.shared.runtime(), config) {
            Ok(pc) => pc,
            Err(e) => return Ended::Failed(format!("peer connection: {e}")),
        };
        let ended = self.negotiate_and_run(&pc, codecs, stop).await;
        pc.close().await;
        ended
    }

    async fn negotiate_and_run(
        &mut self,
        pc: &PeerConnection,
        codecs: &crate::sdp::StreamCodecs,
        stop: &async_channel::Receiver<()>,
    ) -> Ended {
        let mut events = pc.events();
        let legs = match self.add_tracks(pc, codecs).await {
            Ok(legs) => legs,
            Err(ended) => return ended,
        };
        let (offer, early) = match self.offer_and_gather(pc, &mut events, stop).await {
            Ok(o) => o,
            Err(ended) => return ended,
        };
        let (reply, resource) = match self.post_offer(&offer.sdp, stop).await {
            Ok(r) => r,
            Err(ended) => return ended,
        };
        self.status.borrow_mut().resource = Some(resource.to_string());
        self.take_link_servers(pc, &reply.headers).await;
        let posted = Posted {
            pc,
            events: &mut events,
            early,
            offer: &offer,
            answer: &reply.body,
            resource: &resource,
            stop,
        };
        let ended = self.run_connected(posted).await;
        self.delete_resource(&resource).await;
        drop(legs);
        ended
    }

    /// The stream's tracks, sent as one more viewer of each.
    async fn add_tracks(
        &self,
        pc: &PeerConnection,
        codecs: &crate::sdp::StreamCodecs,
    ) -> std::result::Result<Vec<Task<()>>, Ended> {
        let mut legs = Vec::new();
        for (kind, c) in [
            (MediaKind::Video, codecs.video),
            (MediaKind::Audio, codecs.audio),
        ] {
            let Some(c) = c else { continue };
            let init = TrackInit {
                codec: c.codec,
                profile_level_id: c.profile_level_id,
            };
            match pc.add_stream_track(init).await {
                Ok(rx) => legs.push(self.shared.ex.spawn(feed(
                    self.shared.clone(),
                    self.name.to_owned(),
                    kind,
                    rx,
                ))),
                Err(e) => return Err(Ended::Failed(format!("add_track: {e}"))),
            }
        }
        Ok(legs)
    }

    /// Sets the offer and waits (at most GATHER_WAIT) for its host candidates, which go in
    /// the offer; later ones trickle. Returns the offer and the events seen meanwhile.
    async fn offer_and_gather(
        &self,
        pc: &PeerConnection,
        events: &mut crate::peer::EventStream,
        stop: &async_channel::Receiver<()>,
    ) -> std::result::Result<(Description, Vec<Event>), Ended> {
        let offer = match pc.create_offer().await {
            Ok(o) => o,
            Err(e) => return Err(Ended::Failed(format!("create_offer: {e}"))),
        };
        if let Err(e) = pc.set_local_description(offer).await {
            return Err(Ended::Failed(format!("set_local_description: {e}")));
        }
        let deadline = Instant::now() + GATHER_WAIT;
        let mut early = Vec::new();
        let mut gathered = false;
        while !gathered {
            match next_or(events, stop, Some(deadline)).await {
                Wake::Event(Some(Event::IceCandidate(None))) => gathered = true,
                Wake::Event(Some(Event::IceCandidate(Some(_)))) => {}
                Wake::Event(Some(e)) => early.push(e),
                Wake::Event(None) => {
                    return Err(Ended::Failed("the peer connection closed".into()))
                }
                Wake::Stop => return Err(Ended::Stopped),
                Wake::Deadline => break,
            }
        }
        match pc.local_description().await {
            Some(offer) => Ok((offer, early)),
            None => Err(Ended::Failed("no local description".into())),
        }
    }

    /// POSTs the offer; a 201 gives the reply and the resource it names in `Location`.
    async fn post_offer(
        &self,
        sdp: &str,
        stop: &async_channel::Receiver<()>,
    ) -> std::result::Result<(client::Reply, Uri), Ended> {
        let reply = futures_lite::future::or(
            async {
                Some(
                    self.request(
                        Method::POST,
                        self.url,
                        Some(("application/sdp", sdp.to_owned())),
                    )
                    .await,
                )
            },
            async {
                let _ = stop.recv().await;
                None
            },
        )
        .await;
        let reply = match reply {
            None => return Err(Ended::Stopped),
            Some(Err(e)) => return Err(Ended::Failed(format!("POST {}: {e}", self.url))),
            Some(Ok(r)) => r,
        };
        if reply.status != StatusCode::CREATED {
            let why = format!(
                "POST {}: {}: {}",
                self.url,
                reply.status,
                one_line(&reply.body)
            );
            let busy = matches!(
                reply.status,
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
            );
            return Err(
                match client::retry_after(&reply.headers, SystemTime::now()) {
                    Some(asked) if busy => Ended::Busy(why, asked),
                    _ => Ended::Failed(why),
                },
            );
        }
        let location = reply
            .headers
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| client::resolve_location(self.url, l));
        match location {
            Some(Ok(u)) => Ok((reply, u)),
            Some(Err(e)) => Err(Ended::Failed(format!("POST {}: {e}", self.url))),
            None => Err(Ended::Failed(format!(
                "POST {}: 201 without a Location",
                self.url
            ))),
        }
    }

    /// The ICE servers the 201 names in `Link` headers: kept for later connections.
    async fn take_link_servers(&mut self, pc: &PeerConnection, headers: &hyper::HeaderMap) {
        let name = self.name;
        let servers = client::link_ice_servers(headers);
        if servers.is_empty() {
            return;
        }
        // RFC 9725 §4.4: the 201's servers are for this connection; their candidates
        // trickle by PATCH like any late one (run_connected).
        let new: Vec<IceServer> = servers
            .iter()
            .filter(|s| !self.in_use.contains(s))
            .cloned()
            .collect();
        if !new.is_empty() {
            log::info!(
                "publish {name}: the endpoint names {} new ICE servers (Link, 201); used by this connection",
                new.len()
            );
            if let Err(e) = pc.add_ice_servers(new.clone()).await {
                log::warn!("publish {name}: add_ice_servers: {e}");
            }
            self.in_use.extend(new);
        }
        *self.link_servers = servers;
    }

    /// The endpoint's resource is freed whatever ended the connection (best effort: an
    /// endpoint that went away answers nothing).
    async fn delete_resource(&self, resource: &Uri) {
        let name = self.name;
        let deleted = futures_lite::future::or(
            async { Some(self.request(Method::DELETE, resource, None).await) },
            async {
                async_io::Timer::after(DELETE_TIMEOUT).await;
                None
            },
        )
        .await;
        match deleted {
            Some(Ok(r)) => log::info!("publish {name}: DELETE {resource}: {}", r.status),
            Some(Err(e)) => log::debug!("publish {name}: DELETE {resource}: {e}"),
            None => log::debug!("publish {name}: DELETE {resource}: no answer"),
        }
    }

    /// Sets the answer and follows the connection: trickles late candidates, restarts ICE
    /// by PATCH when it stays disconnected, ends when it fails, closes, or the restart is
    /// refused or does not connect.
    async fn run_connected(&mut self, posted: Posted<'_>) -> Ended {
        let Posted {
            pc,
            events,
            early,
            offer,
            answer,
            resource,
            stop,
        } = posted;
        let set = Description {
            kind: SdpType::Answer,
            sdp: answer.to_owned(),
        };
        if let Err(e) = pc.set_remote_description(set).await {
            return Ended::Failed(format!("the endpoint's answer: {e}"));
        }
        let mut live = Live {
            answer: answer.to_owned(),
            ice: ice_of(&offer.sdp),
            trickle: true,
            up: None,
            deadline: Some(Instant::now() + self.shared.config.connect_timeout),
            restarting: false,
        };
        let mut queued = early.into_iter();
        loop {
            let wake = match queued.next() {
                Some(e) => Wake::Event(Some(e)),
                None => next_or(events, stop, live.deadline).await,
            };
            let event = match wake {
                Wake::Stop => return Ended::Stopped,
                Wake::Deadline => match self.on_deadline(&mut live, pc, resource).await {
                    Some(ended) => return ended,
                    None => continue,
                },
                Wake::Event(None) => return ended("the peer connection closed".into(), live.up),
                Wake::Event(Some(e)) => e,
            };
            if let Some(ended) = self.on_event(&mut live, event, resource).await {
                return ended;
            }
        }
    }

    /// The deadline passed: the end of a restart that did not connect or of a connection
    /// that never came up, or (ICE disconnected too long) an ICE restart, `None` when
    /// it is under way.
    async fn on_deadline(
        &self,
        live: &mut Live,
        pc: &PeerConnection,
        resource: &Uri,
    ) -> Option<Ended> {
        if live.restarting {
            let why = format!(
                "the ICE restart did not connect within {} s",
                RESTART_WAIT.as_secs()
            );
            return Some(ended(why, live.up));
        }
        if live.up.is_none() {
            return Some(Ended::Failed(format!(
                "not connected within {} s",
                self.shared.config.connect_timeout.as_secs()
            )));
        }
        log::info!(
            "publish {}: ICE disconnected for {} s; restarting ICE (PATCH)",
            self.name,
            DISCONNECTED_GRACE.as_secs()
        );
        match self.restart_ice(pc, &mut live.answer, resource).await {
            Ok(new) => {
                live.ice = new;
                live.restarting = true;
                live.deadline = Some(Instant::now() + RESTART_WAIT);
                None
            }
            Err(e) => {
                let why = format!("ICE disconnected and the restart failed: {e}");
                Some(ended(why, live.up))
            }
        }
    }

    /// One event of the connection; `Some` when it ends the connection.
    async fn on_event(&self, live: &mut Live, event: Event, resource: &Uri) -> Option<Ended> {
        let name = self.name;
        match event {
            Event::IceCandidate(c) if live.trickle => self.trickle(live, c, resource).await,
            Event::ConnectionState(ConnectionState::Connected) => {
                if live.up.is_none() {
                    log::info!("publish {name}: connected to {}", self.url);
                    live.up = Some(Instant::now());
                }
                live.deadline = None;
                let mut s = self.status.borrow_mut();
                s.set(State::Connected);
                s.last_error = None;
            }
            Event::ConnectionState(ConnectionState::Failed) => {
                return Some(ended("ICE or DTLS failed".into(), live.up))
            }
            Event::ConnectionState(ConnectionState::Closed) => {
                return Some(ended("closed by the endpoint".into(), live.up))
            }
            Event::IceConnectionState(IceConnectionState::Disconnected)
                if live.up.is_some() && !live.restarting =>
            {
                live.deadline = Some(Instant::now() + DISCONNECTED_GRACE);
            }
            Event::IceConnectionState(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) if live.up.is_some() => {
                if live.restarting {
                    log::info!("publish {name}: the ICE restart connected");
                    live.restarting = false;
                }
                live.deadline = None;
            }
            Event::Error(e) => {
                self.status.borrow_mut().last_error = Some(e.to_string());
            }
            _ => {}
        }
        None
    }

    /// A late local candidate (`None`: the end of them) PATCHed to the resource; an
    /// endpoint that refuses trickle gets no more.
    async fn trickle(
        &self,
        live: &mut Live,
        candidate: Option<crate::sdp::IceCandidateInit>,
        resource: &Uri,
    ) {
        let name = self.name;
        let (cands, end) = match candidate {
            Some(c) => (vec![c.candidate], false),
            None => (Vec::new(), true),
        };
        let (ufrag, pwd, mid) = &live.ice;
        let frag = crate::sdp::write_candidate_fragment(ufrag, pwd, mid, &cands, end);
        match self
            .request(
                Method::PATCH,
                resource,
                Some(("application/trickle-ice-sdpfrag", frag)),
            )
            .await
        {
            Ok(r) if r.status.is_success() => {}
            Ok(r) => {
                // RFC 9725: an endpoint may not take trickle (405/501).
                log::info!(
                    "publish {name}: PATCH (trickle) answered {}; not trickling",
                    r.status
                );
                live.trickle = false;
            }
            Err(e) => log::info!("publish {name}: PATCH (trickle): {e}"),
        }
    }

    /// An ICE restart by PATCH (RFC 9725 §4.3.2): an offer with new credentials set
    /// locally, its credentials and candidates PATCHed with `If-Match: *`, the endpoint's
    /// new ones (its `200`) applied as a new answer (`answer` becomes it). Returns the new
    /// credentials and mid, for trickle; an error when the endpoint refuses.
    async fn restart_ice(
        &self,
        pc: &PeerConnection,
        answer: &mut String,
        resource: &Uri,
    ) -> std::result::Result<(String, String, String), String> {
        pc.restart_ice().await.map_err(|e| e.to_string())?;
        let offer = pc.create_offer().await.map_err(|e| e.to_string())?;
        let text = offer.sdp.clone();
        pc.set_local_description(offer)
            .await
            .map_err(|e| e.to_string())?;
        let (ufrag, pwd, mid) = ice_of(&text);
        let ours = crate::sdp::candidate_attributes(&text);
        let end = text.lines().any(|l| l.trim_end() == "a=end-of-candidates");
        let frag = crate::sdp::write_candidate_fragment(&ufrag, &pwd, &mid, &ours, end);
        let r = self
            .request_with(
                Method::PATCH,
                resource,
                Some(("application/trickle-ice-sdpfrag", frag)),
                &[(hyper::header::IF_MATCH, "*")],
            )
            .await
            .map_err(|e| format!("PATCH {resource}: {e}"))?;
        if r.status != StatusCode::OK {
            return Err(format!(
                "PATCH {resource}: {}: {}",
                r.status,
                one_line(&r.body)
            ));
        }
        let bad = |why: &str| format!("PATCH {resource}: the answer fragment {why}");
        let (their_ufrag, their_pwd) =
            super::api::ice_credentials(&r.body).ok_or_else(|| bad("has no new credentials"))?;
        let (_, theirs, their_end) = crate::sdp::parse_candidate_fragment(&r.body)
            .map_err(|e| bad(&format!("does not parse: {e}")))?;
        let new = super::api::with_ice_credentials(answer, &their_ufrag, &their_pwd);
        let set = Description {
            kind: SdpType::Answer,
            sdp: new.clone(),
        };
        pc.set_remote_description(set)
            .await
            .map_err(|e| bad(&format!("is refused: {e}")))?;
        let ends = their_end.then(String::new);
        for candidate in theirs.into_iter().chain(ends) {
            let init = crate::sdp::IceCandidateInit {
                candidate,
                sdp_mid: None,
                sdp_mline_index: Some(0),
                username_fragment: None,
            };
            if let Err(e) = pc.add_ice_candidate(init).await {
                log::info!("publish {}: the endpoint's candidate: {e}", self.name);
            }
        }
        *answer = new;
        log::info!(
            "publish {}: ICE restart: PATCH {resource}: {}",
            self.name,
            r.status
        );
        Ok((ufrag, pwd, mid))
    }
}

/// A connection's end: dropped when it was up (since `up`), else failed.
fn ended(why: String, up: Option<Instant>) -> Ended {
    match up {
        Some(t) => Ended::Dropped(why, t.elapsed()),
        None => Ended::Failed(why),
    }
}

/// The next event, the stop, or the deadline.
async fn next_or(
    events: &mut crate::peer::EventStream,
    stop: &async_channel::Receiver<()>,
    deadline: Option<Instant>,
) -> Wake {
    futures_lite::future::or(
        futures_lite::future::or(async { Wake::Event(events.next().await) }, async {
            let _ = stop.recv().await;
            Wake::Stop
        }),
        async {
            match deadline {
                Some(d) => {
                    async_io::Timer::at(d).await;
                    Wake::Deadline
                }
                None => futures_lite::future::pending().await,
            }
        },
    )
    .await
}

/// A publish track's queue: where the plan put it, then the endpoint's keyframe requests
/// (answered by the stream's track with its cached keyframe, as for any viewer).
async fn feed(
    shared: Rc<Shared>,
    name: String,
    kind: MediaKind,
    rx: async_channel::Receiver<TrackInput>,
) {
    let mut viewer: Option<LegViewer> = None;
    while let Ok(input) = rx.recv().await {
        match input {
            TrackInput::Bind { index, inbox } => {
                viewer = LegViewer::attach(&shared, &name, kind, index, inbox);
            }
            TrackInput::KeyframeRequest(_) => {
                if let Some(v) = &viewer {
                    v.keyframe();
                }
            }
            // No TrackSender: frames come from the stream's track.
            TrackInput::Frame(..) => {}
        }
    }
}

/// The offer's `a=ice-ufrag`, `a=ice-pwd` and first `a=mid`, for trickle fragments.
fn ice_of(sdp: &str) -> (String, String, String) {
    let find = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_default()
            .to_owned()
    };
    (find("a=ice-ufrag:"), find("a=ice-pwd:"), find("a=mid:"))
}

/// An endpoint's body on one log line, clipped.
fn one_line(body: &str) -> String {
    let s: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return "(no body)".into();
    }
    let mut end = s.len().min(LOGGED_BODY);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].to_owned();
    if end < s.len() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        let p = PublishConfig::parse("cam=https://sfu.example/whip/cam").unwrap();
        assert_eq!(
            (p.name.as_str(), p.url.as_str()),
            ("cam", "https://sfu.example/whip/cam")
        );
        for bad in ["cam", "cam=ftp://x/y", "c a m=http://x/", "cam=http://"] {
            assert!(PublishConfig::parse(bad).is_err(), "{bad}");
        }
        let streams = vec![super::super::StreamConfig {
            name: "cam".into(),
            video: None,
            audio: None,
        }];
        let other = PublishConfig::parse("door=http://x/whip").unwrap();
        let e = check_publish(&[other], &streams).unwrap_err().to_string();
        assert!(e.contains("no stream"), "{e}");
        let e = check_publish(&[p.clone(), p.clone()], &streams)
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let token = PublishConfig {
            token: Some("s3cret".into()),
            ..p
        };
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn bodies_are_logged_on_one_clipped_line() {
        assert_eq!(one_line("a\nb\r\n"), "a b");
        assert_eq!(one_line(""), "(no body)");
        let long = "é".repeat(300);
        let l = one_line(&long);
        assert!(l.ends_with("...") && l.len() <= LOGGED_BODY + 3);
    }
}
