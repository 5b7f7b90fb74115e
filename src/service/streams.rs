//! Streams (feature `media`): `--video NAME=SOURCE` / `--audio NAME=SOURCE`, one source task
//! per track feeding its [`Track`], `GET /api/streams`, and WHEP (`POST /whep/NAME`).
//!
//! | request | what |
//! | --- | --- |
//! | `GET /api/streams` | every stream: name, codec, resolution (from the SPS or VP8 keyframe), bitrate, viewers, state, and each track's figures |
//! | `POST /whep/NAME` `application/sdp` (recvonly offer) | `404` unknown stream, `415` another type, `400` bad SDP, `503` while the source's codec (H.264: its SPS) is not known yet, `422` when the offer has nothing the stream fits (the body says why), else the answer (see [`answer_viewer`]) |
//! | `PATCH`/`DELETE /whep/NAME/<id>` | trickle and teardown, as for WHIP |
//!
//! A track's source runs as two tasks on the service's executor: [`source_io::run`] (reads,
//! paces, restarts `exec:` commands) into a bounded channel, and the track's task that
//! packetizes each frame once ([`Track::handle_frame`]) and keeps the figures. A source that
//! fails for good (a file that cannot be read) leaves its stream `failed` with the reason.

use super::error::ServiceError;
use super::http::{json_response, Body};
use super::{Shared, Via};
use crate::error::{Error, Result};
use crate::media::actor::MediaMsg;
use crate::media::source_io::{self, SourceFrame, SourceOptions};
use crate::media::{MediaKind, SendCodec, SourceSpec, Track};
use crate::peer::PeerConnection;
use crate::sdp::{self, PlanError, StreamCodecs};
use crate::sdp::{Description, SdpType};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use smol::{LocalExecutor, Task};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Most streams one service serves.
pub const MAX_STREAMS: usize = 32;
/// A stream whose source sent nothing this long is `stalled`.
const STALL_AFTER: Duration = Duration::from_secs(2);
/// Frames queued between a source and its track.
const SOURCE_QUEUE: usize = 16;

/// One stream: a name and at most one video and one audio source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Letters, digits, `-`, `_` and `.`, at most 64.
    pub name: String,
    /// The video source and its text as given.
    pub video: Option<(String, SourceSpec)>,
    /// The audio source and its text as given.
    pub audio: Option<(String, SourceSpec)>,
}

/// A stream name: 1 to 64 letters, digits, `-`, `_` or `.` (it is a URL path segment).
pub fn check_stream_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(Error::InvalidArgument(
            format!("stream name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'").into(),
        ));
    }
    Ok(())
}

impl StreamConfig {
    /// Adds `--video NAME=SOURCE` (or `--audio`) to `streams`: a new stream or the other
    /// track of an existing one. Errors name the flag, the stream and what is wrong.
    pub fn add(streams: &mut Vec<StreamConfig>, kind: MediaKind, flag: &str) -> Result<()> {
        let what = kind.as_str();
        let Some((name, source)) = flag.split_once('=') else {
            return Err(Error::InvalidArgument(
                format!("--{what} {flag:?}: expected NAME=SOURCE, e.g. --{what} cam=file:cam.h264")
                    .into(),
            ));
        };
        Self::add_source(streams, kind, name.trim(), source.trim())
    }

    /// Adds the `kind` source of stream `name` (from a flag or `[streams.NAME]`).
    pub fn add_source(
        streams: &mut Vec<StreamConfig>,
        kind: MediaKind,
        name: &str,
        source: &str,
    ) -> Result<()> {
        let what = kind.as_str();
        check_stream_name(name)?;
        let spec = SourceSpec::parse(source)
            .and_then(|s| s.check_kind(kind).map(|()| s))
            .map_err(|e| {
                Error::InvalidArgument(format!("stream {name}: {what} {source:?}: {e}").into())
            })?;
        let i = match streams.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                if streams.len() >= MAX_STREAMS {
                    return Err(Error::InvalidArgument(
                        format!("more than {MAX_STREAMS} streams").into(),
                    ));
                }
                streams.push(StreamConfig {
                    name: name.to_owned(),
                    video: None,
                    audio: None,
                });
                streams.len() - 1
            }
        };
        let slot = match kind {
            MediaKind::Video => &mut streams[i].video,
            MediaKind::Audio => &mut streams[i].audio,
        };
        if let Some((old, _)) = slot {
            return Err(Error::InvalidArgument(format!(
                "stream {name}: two {what} sources ({old:?} and {source:?}); a stream has at most one {what} track"
            ).into()));
        }
        *slot = Some((source.to_owned(), spec));
        Ok(())
    }
}

/// Checks what can be checked before serving: unique names, and that every `rtp://` port
/// can be bound (a port in use fails the start, not a stream later).
pub(crate) fn check_streams(streams: &[StreamConfig]) -> Result<()> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        check_stream_name(&s.name)?;
        if streams[..i].iter().any(|o| o.name == s.name) {
            return Err(Error::InvalidArgument(
                format!("stream {} is given twice", s.name).into(),
            ));
        }
        for (text, spec) in s.video.iter().chain(&s.audio) {
            if let SourceSpec::Rtp { addr, .. } = spec {
                if addrs.contains(addr) {
                    return Err(Error::InvalidArgument(
                        format!(
                            "stream {}: {text}: the port is used by another stream",
                            s.name
                        )
                        .into(),
                    ));
                }
                addrs.push(*addr);
                std::net::UdpSocket::bind(addr).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "stream {}: {text}: cannot bind {addr}: {e} (is another program sending to or listening on it?)",
                        s.name
                    ).into())
                })?;
            }
        }
    }
    Ok(())
}

/// Where a track's source is.
enum Status {
    Starting,
    Live(Instant),
    /// An `exec:` command ended at `.1`; it is started again after a backoff (`.0`, why).
    Restarting(String, Instant),
    Failed(String),
}

/// Keyframe requests queued from viewers to a track's task at most (more are dropped: the
/// track answers each viewer once anyway).
const REQUEST_QUEUE: usize = 64;

/// A viewer of one track: its connection's media inbox and the track's number there.
struct Viewer {
    id: u64,
    inbox: async_channel::Sender<Vec<MediaMsg>>,
    track: usize,
}

/// One track of a running stream.
struct TrackState {
    source: String,
    spec: SourceSpec,
    /// Made on the first frame (an `exec:` source's codec is known only then).
    track: Option<Track>,
    status: Status,
    viewers: Vec<Viewer>,
    /// Viewers' keyframe requests (by viewer id) to the track's task.
    requests: async_channel::Sender<u64>,
}

impl TrackState {
    /// Offers `msg` to a viewer without waiting: a full inbox drops it for that viewer only
    /// (its sender sees the gap and waits for a keyframe); a closed one (the session ended)
    /// removes the viewer.
    fn offer(&mut self, viewer: Option<u64>, msg: impl Fn(usize) -> MediaMsg) {
        let mut gone = Vec::new();
        for v in &self.viewers {
            if viewer.is_some_and(|id| id != v.id) {
                continue;
            }
            match v.inbox.try_send(vec![msg(v.track)]) {
                Ok(()) => {}
                Err(async_channel::TrySendError::Full(_)) => {
                    log::debug!("viewer {}: inbox full, frame dropped", v.id)
                }
                Err(async_channel::TrySendError::Closed(_)) => gone.push(v.id),
            }
        }
        for id in gone {
            self.remove_viewer(id);
        }
    }

    fn add_viewer(&mut self, id: u64, inbox: async_channel::Sender<Vec<MediaMsg>>, track: usize) {
        self.viewers.push(Viewer { id, inbox, track });
        if let Some(t) = self.track.as_mut() {
            t.add_viewer();
        }
    }

    fn remove_viewer(&mut self, id: u64) {
        let before = self.viewers.len();
        self.viewers.retain(|v| v.id != id);
        if self.viewers.len() < before {
            if let Some(t) = self.track.as_mut() {
                t.remove_viewer();
            }
        }
    }
}

impl TrackState {
    /// A frame from the source: packetized once (every viewer's sender shares it) and
    /// offered to every viewer.
    fn on_frame(&mut self, stream: &str, f: SourceFrame) {
        let viewers = self.viewers.len();
        let track = self.track.get_or_insert_with(|| {
            let mut t = Track::new(f.codec);
            (0..viewers).for_each(|_| t.add_viewer());
            t
        });
        let before = track.profile_level_id();
        let frame = track.handle_frame(f.arrival, f.frame);
        if let (Some(old), Some(new)) = (before, track.profile_level_id()) {
            if old != new {
                // No server-initiated renegotiation in WHEP: viewers keep their
                // answer, the new SPS reaches their decoders in band.
                log::warn!(
                    "stream {stream}: the source's H.264 profile-level-id changed from {old} to {new}; viewers watching keep the one they negotiated, new viewers negotiate for {new}"
                );
            }
        }
        // Frames of the ended run still queued do not make it live again.
        if !matches!(self.status, Status::Restarting(_, at) if f.arrival <= at) {
            self.status = Status::Live(f.arrival);
        }
        self.offer(None, |i| MediaMsg::Frame(i, frame.clone()));
    }

    /// A new viewer `id` asks for the catch-up from the cached keyframe.
    fn on_request(&mut self, stream: &str, id: u64) {
        let now = Instant::now();
        let Some(track) = self.track.as_mut() else {
            return;
        };
        let frames = track.catch_up(now);
        if frames.is_empty() {
            // No keyframe cached yet: the next live one serves it. None of the
            // service's sources makes one on demand (a file or pipe has its own
            // keyframe interval), so the request is only logged (once a second).
            if track.poll_source_keyframe_request() {
                log::info!(
                    "stream {stream}: a viewer waits for a keyframe (none cached yet); {} sends one at its own interval",
                    self.source
                );
            }
            return;
        }
        self.offer(Some(id), |i| MediaMsg::CatchUp(i, frames.clone()));
    }
}

impl TrackState {
    fn state(&self, now: Instant) -> &'static str {
        match self.status {
            Status::Starting => "starting",
            Status::Live(t) if now.saturating_duration_since(t) > STALL_AFTER => "stalled",
            Status::Live(_) => "live",
            Status::Restarting(..) => "restarting",
            Status::Failed(_) => "failed",
        }
    }

    /// What negotiation needs; `None` until it is known (H.264: its SPS).
    fn send_codec(&self) -> Option<SendCodec> {
        let codec = self
            .track
            .as_ref()
            .map(Track::codec)
            .or_else(|| self.spec.codec())?;
        let profile_level_id = self.track.as_ref().and_then(Track::profile_level_id);
        if codec == crate::media::Codec::H264 && profile_level_id.is_none() {
            return None;
        }
        Some(SendCodec {
            codec,
            profile_level_id,
        })
    }

    fn json(&self, now: Instant) -> serde_json::Value {
        let mut v = match &self.track {
            Some(t) => serde_json::to_value(t.stats(now)).unwrap_or_default(),
            None => serde_json::json!({
                "codec": self.spec.codec().map(|c| c.encoding_name()),
            }),
        };
        v["source"] = self.source.clone().into();
        v["state"] = self.state(now).into();
        if let Status::Failed(why) | Status::Restarting(why, _) = &self.status {
            v["error"] = why.clone().into();
        }
        v
    }
}

/// A running stream.
struct Stream {
    name: String,
    video: Option<Rc<RefCell<TrackState>>>,
    audio: Option<Rc<RefCell<TrackState>>>,
}

impl Stream {
    fn json(&self, now: Instant) -> serde_json::Value {
        let video = self.video.as_ref().map(|t| t.borrow().json(now));
        let audio = self.audio.as_ref().map(|t| t.borrow().json(now));
        let main = video.as_ref().or(audio.as_ref());
        let resolution = video.as_ref().and_then(|v| {
            Some(format!(
                "{}x{}",
                v["width"].as_u64()?,
                v["height"].as_u64()?
            ))
        });
        let bitrate: u64 = [&video, &audio]
            .iter()
            .filter_map(|t| t.as_ref()?["bitrate"].as_u64())
            .sum();
        let viewers = main.and_then(|m| m["viewers"].as_u64()).unwrap_or(0);
        // The stream is as well as its worst track.
        let state = ["failed", "restarting", "stalled", "starting", "live"]
            .into_iter()
            .find(|s| {
                [&video, &audio]
                    .iter()
                    .any(|t| t.as_ref().is_some_and(|t| t["state"] == *s))
            })
            .unwrap_or("starting");
        serde_json::json!({
            "name": self.name,
            "codec": main.map(|m| m["codec"].clone()),
            "resolution": resolution,
            "bitrate": bitrate,
            "viewers": viewers,
            "state": state,
            "video": video,
            "audio": audio,
        })
    }

    /// The codecs a viewer can be offered now, or why not yet.
    fn codecs(&self) -> std::result::Result<StreamCodecs, String> {
        let mut out = StreamCodecs {
            name: self.name.clone(),
            video: None,
            audio: None,
        };
        for (slot, track) in [(&mut out.video, &self.video), (&mut out.audio, &self.audio)] {
            let Some(track) = track else { continue };
            let t = track.borrow();
            if let Status::Failed(why) = &t.status {
                return Err(format!("stream {}: its source failed: {why}", self.name));
            }
            *slot = Some(t.send_codec().ok_or_else(|| {
                format!(
                    "stream {}: its source ({}) has not produced its first keyframe yet; try again shortly",
                    self.name, t.source
                )
            })?);
        }
        Ok(out)
    }
}

/// The service's streams and their source tasks (stopped when this is dropped or stopped).
pub(crate) struct Streams {
    list: Vec<Stream>,
    tasks: RefCell<Vec<Task<()>>>,
    /// The next viewer's number (keyframe requests name their viewer by it).
    next_viewer: std::cell::Cell<u64>,
}

impl Streams {
    /// Starts every track's source on `ex`.
    pub(crate) fn start(configs: &[StreamConfig], ex: &Rc<LocalExecutor<'static>>) -> Streams {
        let mut tasks = Vec::new();
        let mut list = Vec::new();
        for c in configs {
            let mut start = |source: &Option<(String, SourceSpec)>| {
                let (text, spec) = source.as_ref()?;
                let (requests, requests_rx) = async_channel::bounded(REQUEST_QUEUE);
                let state = Rc::new(RefCell::new(TrackState {
                    source: text.clone(),
                    spec: spec.clone(),
                    track: None,
                    status: Status::Starting,
                    viewers: Vec::new(),
                    requests,
                }));
                tasks.extend(spawn_track(
                    ex,
                    &c.name,
                    spec.clone(),
                    state.clone(),
                    requests_rx,
                ));
                log::info!("stream {}: {}", c.name, text);
                Some(state)
            };
            let video = start(&c.video);
            let audio = start(&c.audio);
            list.push(Stream {
                name: c.name.clone(),
                video,
                audio,
            });
        }
        Streams {
            list,
            tasks: RefCell::new(tasks),
            next_viewer: std::cell::Cell::new(0),
        }
    }

    /// Stops every source.
    pub(crate) fn stop(&self) {
        self.tasks.borrow_mut().clear();
    }

    /// Each stream's name and live viewers (of its video track, else its audio one).
    pub(crate) fn each_viewer_count(&self, mut f: impl FnMut(&str, usize)) {
        for s in &self.list {
            let n = s
                .video
                .as_ref()
                .or(s.audio.as_ref())
                .map_or(0, |t| t.borrow().viewers.len());
            f(&s.name, n);
        }
    }

    fn get(&self, name: &str) -> Option<&Stream> {
        self.list.iter().find(|s| s.name == name)
    }
}

/// What wakes a track's task.
enum TrackInput {
    Frame(SourceFrame),
    Request(u64),
    End,
}

/// The source task and the track's task of one track: each frame is packetized once and
/// offered to every viewer's inbox; a viewer's keyframe request is answered with the
/// cached group of pictures ([`Track::catch_up`]) to that viewer alone.
fn spawn_track(
    ex: &Rc<LocalExecutor<'static>>,
    name: &str,
    spec: SourceSpec,
    state: Rc<RefCell<TrackState>>,
    requests: async_channel::Receiver<u64>,
) -> [Task<()>; 2] {
    let (tx, rx) = async_channel::bounded::<SourceFrame>(SOURCE_QUEUE);
    let failed = state.clone();
    let stream = name.to_owned();
    let source_name = name.to_owned();
    let source = ex.spawn(async move {
        let mut opts = SourceOptions::new(&source_name);
        let restarting = failed.clone();
        opts.on_restart = Some(Rc::new(move |why: &str| {
            restarting.borrow_mut().status = Status::Restarting(why.to_owned(), Instant::now());
        }));
        if let Err(e) = source_io::run(spec, opts, tx).await {
            log::error!("stream {source_name}: source stopped: {e}");
            failed.borrow_mut().status = Status::Failed(e.to_string());
        }
    });
    let track = ex.spawn(async move {
        loop {
            let input = futures_lite::future::or(
                async { rx.recv().await.map_or(TrackInput::End, TrackInput::Frame) },
                async {
                    match requests.recv().await {
                        Ok(id) => TrackInput::Request(id),
                        Err(_) => futures_lite::future::pending().await,
                    }
                },
            )
            .await;
            let mut s = state.borrow_mut();
            match input {
                TrackInput::Frame(f) => s.on_frame(&stream, f),
                TrackInput::Request(id) => s.on_request(&stream, id),
                TrackInput::End => break,
            }
        }
    });
    [source, track]
}

/// `GET /api/streams`, `/whep/NAME` and `/whep/NAME/<id>`.
pub(super) async fn route(
    shared: &Rc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
    path: &str,
) -> std::result::Result<Response<Body>, ServiceError> {
    let paths = ("/api/streams", "/whep/");
    super::api::media_route(shared, peer, req, path, paths, list, whep_post).await
}

fn list(shared: &Shared) -> Response<Body> {
    let now = Instant::now();
    let list: Vec<_> = shared
        .streams
        .list
        .iter()
        .map(|s| {
            let mut v = s.json(now);
            // `--publish NAME=URL`: the publish leg's state.
            if let Some(p) = shared.publish.json(&s.name) {
                v["publish"] = p;
            }
            v
        })
        .collect();
    json_response(StatusCode::OK, serde_json::json!({ "streams": list }))
}

/// `POST /whep/NAME`: checks, negotiation, then [`answer_viewer`].
async fn whep_post(
    shared: &Rc<Shared>,
    peer: SocketAddr,
    name: &str,
    req: Request<Incoming>,
) -> std::result::Result<Response<Body>, ServiceError> {
    let stream = find(shared, name)?;
    let text = super::api::sdp_body(shared, req).await?;
    let plan = plan_for(stream, &text, false)?;
    answer_viewer(shared, peer, stream, text, plan).await
}

fn find<'a>(shared: &'a Shared, name: &str) -> std::result::Result<&'a Stream, ServiceError> {
    shared
        .streams
        .get(name)
        .ok_or_else(|| ServiceError::UnknownStream(super::http::clip(name).to_owned()))
}

/// Plans the answer to offer `sdp` for `stream` (and its data section when `data`): `400`
/// bad SDP, `503` the codec not known yet, `422` nothing fits.
fn plan_for(
    stream: &Stream,
    sdp: &str,
    data: bool,
) -> std::result::Result<sdp::AnswerPlan, ServiceError> {
    let name = &stream.name;
    let offer = sdp::parse_description(sdp).map_err(ServiceError::BadSdp)?;
    let codecs = stream.codecs().map_err(ServiceError::StreamNotReady)?;
    let plan = sdp::plan_answer(&offer, Some(&codecs), data, &Default::default())
        .map_err(|e: PlanError| ServiceError::Unplayable(format!("stream {name}: {e}")))?;
    for why in &plan.rejected {
        log::info!("stream {name}: {why}");
    }
    Ok(plan)
}

/// Plans the answer to `sdp` (an offer with media sections and maybe a data section) for
/// stream `name` and makes the session its viewer: call before the offer is set
/// (`?stream=NAME` on `POST /api/offer` and `/ws`; with `?sink=` too: talk-back).
pub(super) async fn attach_stream(
    shared: &Rc<Shared>,
    name: &str,
    sink: Option<&str>,
    sdp: &str,
    session: &super::NewSession,
) -> std::result::Result<(), ServiceError> {
    let stream = find(shared, name)?;
    let plan = plan_viewer(shared, stream, sink, sdp)?;
    if let Some(sink) = sink {
        super::sinks::bind_sink(shared, sink, &session.id)?;
    }
    attach(shared, stream, &session.pc, plan).await
}

/// Hands `plan` to `pc` and makes it a viewer of the plan's tracks of `stream`.
async fn attach(
    shared: &Rc<Shared>,
    stream: &Stream,
    pc: &PeerConnection,
    plan: sdp::AnswerPlan,
) -> std::result::Result<(), ServiceError> {
    // Viewer ids are per service; keyframe requests name their viewer by it.
    let viewer = shared.streams.next_viewer.get();
    shared.streams.next_viewer.set(viewer + 1);
    let states: Vec<Rc<RefCell<TrackState>>> = plan
        .tracks
        .iter()
        .filter_map(|t| match t.kind {
            MediaKind::Video => stream.video.clone(),
            MediaKind::Audio => stream.audio.clone(),
        })
        .collect();
    let requests: Vec<async_channel::Sender<u64>> =
        states.iter().map(|t| t.borrow().requests.clone()).collect();
    let keyframes = Box::new(move |track: usize, _cause| {
        if let Some(tx) = requests.get(track) {
            let _ = tx.try_send(viewer);
        }
    });
    pc.set_media_plan(plan, keyframes).await?;
    let inbox = pc.media_inbox();
    for (i, t) in states.iter().enumerate() {
        t.borrow_mut().add_viewer(viewer, inbox.clone(), i);
    }
    Ok(())
}

/// `POST /api/offer?stream=NAME`: an offer with media sections (and maybe a data section)
/// answered with the stream's tracks (and the data channel) on one BUNDLE transport.
/// With `sink` (`&sink=NAME`: talk-back), what the offer sends goes to that sink.
pub(super) async fn answer_offer_with_stream(
    shared: &Rc<Shared>,
    via: Via,
    peer: SocketAddr,
    name: &str,
    sink: Option<&str>,
    offer: Description,
) -> std::result::Result<(String, Description), ServiceError> {
    let stream = find(shared, name)?;
    let sdp = offer.sdp.clone();
    // Planned before the session opens: a refused offer costs none.
    let plan = plan_viewer(shared, stream, sink, &sdp)?;
    super::api::answer_in_session(shared, via, peer, offer, async |s| {
        if let Some(sink) = sink {
            super::sinks::bind_sink(shared, sink, &s.id)?;
        }
        attach(shared, stream, &s.pc, plan).await
    })
    .await
}

/// The plan for a viewer of `stream` with a data section; with `sink`, the offer's audio
/// (or video) it sends is received too (talk-back: a sendrecv audio section).
fn plan_viewer(
    shared: &Shared,
    stream: &Stream,
    sink: Option<&str>,
    sdp: &str,
) -> std::result::Result<sdp::AnswerPlan, ServiceError> {
    let Some(sink) = sink else {
        return plan_for(stream, sdp, true);
    };
    let receive = super::sinks::receive_codecs(shared, sink)?;
    let name = &stream.name;
    let offer = sdp::parse_description(sdp).map_err(ServiceError::BadSdp)?;
    let codecs = stream.codecs().map_err(ServiceError::StreamNotReady)?;
    let plan = sdp::plan_answer_media(&offer, Some(&codecs), &receive, true, &Default::default())
        .map_err(|e: PlanError| {
        ServiceError::Unplayable(format!("stream {name}, sink {sink}: {e}"))
    })?;
    for why in &plan.rejected {
        log::info!("stream {name}, sink {sink}: {why}");
    }
    if plan.receivers.is_empty() {
        return Err(ServiceError::Unplayable(format!(
            "sink {sink}: the offer sends nothing it takes (add the microphone: a sendrecv audio section)"
        )));
    }
    Ok(plan)
}

/// WHEP's answer: a session whose peer connection sends the plan's tracks (each fed from
/// its stream's track), `201`, the answer and `Location: /whep/NAME/<id>`.
async fn answer_viewer(
    shared: &Rc<Shared>,
    peer: SocketAddr,
    stream: &Stream,
    offer: String,
    plan: sdp::AnswerPlan,
) -> std::result::Result<Response<Body>, ServiceError> {
    let offer = Description {
        kind: SdpType::Offer,
        sdp: offer,
    };
    let (id, answer) = open_viewer(shared, Via::Whep, peer, stream, offer, plan).await?;
    log::info!("[{id}] answered POST /whep/{}", stream.name);
    let location = format!("/whep/{}/{id}", stream.name);
    Ok(super::api::created(answer, &location))
}

/// Opens a session that answers `offer` with `plan` and makes it a viewer of `stream`'s
/// tracks; returns its id and the complete answer. On failure the session is closed.
async fn open_viewer(
    shared: &Rc<Shared>,
    via: Via,
    peer: SocketAddr,
    stream: &Stream,
    offer: Description,
    plan: sdp::AnswerPlan,
) -> std::result::Result<(String, Description), ServiceError> {
    super::api::answer_in_session(shared, via, peer, offer, async |s| {
        attach(shared, stream, &s.pc, plan).await
    })
    .await
}

/// The codecs stream `name` can be sent with now, or why not yet (the publish leg waits).
pub(super) fn stream_codecs(
    shared: &Shared,
    name: &str,
) -> std::result::Result<StreamCodecs, String> {
    shared
        .streams
        .get(name)
        .ok_or_else(|| format!("no stream {name}"))?
        .codecs()
}

/// One track of a publish leg (`service::publish`) as a viewer of its stream's track: fed
/// by the same fan-out, its keyframe requests answered with the cached group like any
/// viewer's; removed when dropped.
pub(super) struct LegViewer {
    id: u64,
    state: Rc<RefCell<TrackState>>,
}

impl LegViewer {
    /// Makes the media actor `inbox` (its track `index`) a viewer of `kind` of stream
    /// `name`; `None` when the stream has no such track.
    pub(super) fn attach(
        shared: &Shared,
        name: &str,
        kind: MediaKind,
        index: usize,
        inbox: async_channel::Sender<Vec<MediaMsg>>,
    ) -> Option<Self> {
        let stream = shared.streams.get(name)?;
        let state = match kind {
            MediaKind::Video => stream.video.clone(),
            MediaKind::Audio => stream.audio.clone(),
        }?;
        let id = shared.streams.next_viewer.get();
        shared.streams.next_viewer.set(id + 1);
        state.borrow_mut().add_viewer(id, inbox, index);
        Some(Self { id, state })
    }

    /// The remote asked for a keyframe (PLI/FIR): the track's task sends the cached one.
    pub(super) fn keyframe(&self) {
        let _ = self.state.borrow().requests.try_send(self.id);
    }
}

impl Drop for LegViewer {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.try_borrow_mut() {
            s.remove_viewer(self.id);
        }
    }
}
