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
use super::http::{json_response, read_body, require_content_type, Body};
use super::Shared;
use crate::error::{Error, Result};
use crate::media::source_io::{self, SourceFrame, SourceOptions};
use crate::media::{MediaKind, SendCodec, SourceSpec, Track};
use crate::sdp::{self, PlanError, StreamCodecs};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
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
    Failed(String),
}

/// One track of a running stream.
struct TrackState {
    source: String,
    spec: SourceSpec,
    /// Made on the first frame (an `exec:` source's codec is known only then).
    track: Option<Track>,
    status: Status,
}

impl TrackState {
    fn state(&self, now: Instant) -> &'static str {
        match self.status {
            Status::Starting => "starting",
            Status::Live(t) if now.saturating_duration_since(t) > STALL_AFTER => "stalled",
            Status::Live(_) => "live",
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
        if let Status::Failed(why) = &self.status {
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
        let state = ["failed", "stalled", "starting", "live"]
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
}

impl Streams {
    /// Starts every track's source on `ex`.
    pub(crate) fn start(configs: &[StreamConfig], ex: &Rc<LocalExecutor<'static>>) -> Streams {
        let mut tasks = Vec::new();
        let mut list = Vec::new();
        for c in configs {
            let mut start = |source: &Option<(String, SourceSpec)>| {
                let (text, spec) = source.as_ref()?;
                let state = Rc::new(RefCell::new(TrackState {
                    source: text.clone(),
                    spec: spec.clone(),
                    track: None,
                    status: Status::Starting,
                }));
                tasks.extend(spawn_track(ex, &c.name, spec.clone(), state.clone()));
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
        }
    }

    /// Stops every source.
    pub(crate) fn stop(&self) {
        self.tasks.borrow_mut().clear();
    }

    fn get(&self, name: &str) -> Option<&Stream> {
        self.list.iter().find(|s| s.name == name)
    }
}

/// The source task and the track's task of one track.
fn spawn_track(
    ex: &Rc<LocalExecutor<'static>>,
    name: &str,
    spec: SourceSpec,
    state: Rc<RefCell<TrackState>>,
) -> [Task<()>; 2] {
    let (tx, rx) = async_channel::bounded::<SourceFrame>(SOURCE_QUEUE);
    let failed = state.clone();
    let stream = name.to_owned();
    let source = ex.spawn(async move {
        if let Err(e) = source_io::run(spec, SourceOptions::new(&stream), tx).await {
            log::error!("stream {stream}: source stopped: {e}");
            failed.borrow_mut().status = Status::Failed(e.to_string());
        }
    });
    let track = ex.spawn(async move {
        while let Ok(f) = rx.recv().await {
            let mut s = state.borrow_mut();
            let track = s.track.get_or_insert_with(|| Track::new(f.codec));
            // Packetized once here; the viewers' senders will share it (core hooks).
            let _frame = track.handle_frame(f.arrival, f.frame);
            s.status = Status::Live(f.arrival);
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
    let method = req.method().clone();
    if path == "/api/streams" {
        return match method {
            Method::GET => Ok(list(shared)),
            m => Err(ServiceError::MethodNotAllowed {
                method: m.to_string(),
                path: path.to_owned(),
            }),
        };
    }
    let rest = path.strip_prefix("/whep/").unwrap_or_default();
    match (rest.split_once('/'), method) {
        (None, Method::POST) => whep_post(shared, peer, rest, req).await,
        (Some((_, id)), Method::PATCH) => super::api::whip_patch(shared, id, req).await,
        (Some((_, id)), Method::DELETE) => super::api::whip_delete(shared, id).await,
        (_, m) => Err(ServiceError::MethodNotAllowed {
            method: m.to_string(),
            path: super::http::clip(path).to_owned(),
        }),
    }
}

fn list(shared: &Shared) -> Response<Body> {
    let now = Instant::now();
    let list: Vec<_> = shared.streams.list.iter().map(|s| s.json(now)).collect();
    json_response(StatusCode::OK, serde_json::json!({ "streams": list }))
}

/// `POST /whep/NAME`: checks, negotiation, then [`answer_viewer`].
async fn whep_post(
    shared: &Rc<Shared>,
    peer: SocketAddr,
    name: &str,
    req: Request<Incoming>,
) -> std::result::Result<Response<Body>, ServiceError> {
    let stream = shared
        .streams
        .get(name)
        .ok_or_else(|| ServiceError::UnknownStream(super::http::clip(name).to_owned()))?;
    require_content_type(&req, "application/sdp")?;
    let body = read_body(shared, req).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ServiceError::BadBody("body is not UTF-8".into()))?;
    let offer = sdp::parse_description(text).map_err(ServiceError::BadSdp)?;
    let codecs = stream.codecs().map_err(ServiceError::StreamNotReady)?;
    let plan = sdp::plan_answer(&offer, Some(&codecs), false, &Default::default())
        .map_err(|e: PlanError| ServiceError::Unplayable(format!("stream {name}: {e}")))?;
    for why in &plan.rejected {
        log::info!("whep {name}: {why}");
    }
    answer_viewer(shared, peer, stream, offer, plan).await
}

/// The one point the media transport plugs into: create a peer connection with the plan's
/// tracks (each fed from its stream's track), set the offer, answer with
/// [`sdp::write_answer_sections`], and return `201`, the answer and
/// `Location: /whep/NAME/<id>`. Until the peer connection carries media this says so.
async fn answer_viewer(
    _shared: &Rc<Shared>,
    _peer: SocketAddr,
    stream: &Stream,
    _offer: sdp::RemoteDescription,
    plan: sdp::AnswerPlan,
) -> std::result::Result<Response<Body>, ServiceError> {
    let tracks: Vec<String> = plan
        .tracks
        .iter()
        .map(|t| {
            format!(
                "{} {} (pt {})",
                t.kind.as_str(),
                t.negotiated.codec,
                t.negotiated.pt
            )
        })
        .collect();
    log::info!(
        "whep {}: negotiated {}; media transport not wired yet",
        stream.name,
        tracks.join(", ")
    );
    Ok(json_response(
        StatusCode::NOT_IMPLEMENTED,
        serde_json::json!({
            "error": "media transport not wired yet",
            "negotiated": tracks,
        }),
    ))
}
