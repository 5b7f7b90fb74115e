//! Sinks (feature `media`): `--sink NAME=DEST`, where a browser's camera and microphone go
//! (the other direction of [`super::streams`]): WHIP ingest at `/whip/NAME`, talk-back
//! (`?sink=NAME` beside `?stream=NAME`), and `GET /api/sinks`.
//!
//! | request | what |
//! | --- | --- |
//! | `GET /api/sinks` | every sink: its DESTs, kinds and codecs, the sessions writing to it, bytes and frames written, errors, and the SDP text for `rtp://` sinks |
//! | `POST /whip/NAME` `application/sdp` (sendonly offer) | `404` unknown sink, `415` another type, `400` bad SDP, `409` an `rtp://` sink already taken by a session, `422` nothing the sink takes, else `201`, the answer, `Location: /whip/NAME/<id>` |
//! | `PATCH`/`DELETE /whip/NAME/<id>` | trickle and teardown, as for WHIP |
//!
//! Each received track of a session bound to a sink runs as one task that reads its frames
//! and writes them to the track's output: a new file (`create_new`, never overwriting:
//! written as `NAME.part` by a writer thread of its own, renamed to NAME when finished), a
//! COMMAND's stdin (a non-blocking pipe fed by a writer task), or repacketized RTP to a
//! local port. Files and commands take frames through a bounded queue, so a slow disk or
//! command never blocks the service's thread: what does not fit is dropped, counted
//! (`dropped`) and logged. A failing output (disk full, permissions, the command exited)
//! is one log line and an `error` in `/api/sinks`; the session goes on.

mod output;

use super::error::ServiceError;
use super::http::{json_response, Body};
use super::{Shared, Via};
use crate::error::{Error, Result};
use crate::media::sink;
use crate::media::{Codec, MediaKind, SinkSpec};
use crate::sdp::{Description, SdpType};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use output::{Output, OutputStats};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// Most sinks one service has.
pub const MAX_SINKS: usize = 32;

/// One sink: a name and where its video and audio go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    /// Letters, digits, `-`, `_` and `.`, at most 64 (a URL path segment, as a stream's).
    pub name: String,
    /// The video DEST and its text as given.
    pub video: Option<(String, SinkSpec)>,
    /// The audio DEST and its text as given.
    pub audio: Option<(String, SinkSpec)>,
}

impl SinkConfig {
    /// Adds `--sink NAME=DEST` to `sinks`: a DEST of one kind (`file:x.ivf`,
    /// `rtp://..?codec=opus`) fills that kind, any other both. Errors name the flag, the
    /// sink and what is wrong.
    pub fn add(sinks: &mut Vec<SinkConfig>, flag: &str) -> Result<()> {
        let Some((name, dest)) = flag.split_once('=') else {
            return Err(Error::InvalidArgument(
                format!("--sink {flag:?}: expected NAME=DEST, e.g. --sink cam=file:/var/lib/smolrtc/cam")
                    .into(),
            ));
        };
        Self::add_dest(sinks, None, name.trim(), dest.trim())
    }

    /// Adds DEST to sink `name` for `kind`, or for the kinds it takes when `kind` is
    /// `None` (from a flag, `[sinks.NAME] video = ..`, or `[sinks] NAME = ..`).
    pub fn add_dest(
        sinks: &mut Vec<SinkConfig>,
        kind: Option<MediaKind>,
        name: &str,
        dest: &str,
    ) -> Result<()> {
        super::check_stream_name(name).map_err(|_| {
            Error::InvalidArgument(
                format!("sink name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'").into(),
            )
        })?;
        let invalid = |e: String| Error::InvalidArgument(format!("sink {name}: {e}").into());
        let spec = SinkSpec::parse(dest).map_err(|e| invalid(format!("{dest:?}: {e}")))?;
        if let Some(k) = kind {
            spec.check_kind(k)
                .map_err(|e| invalid(format!("{} {dest:?}: {e}", k.as_str())))?;
        }
        let kinds: Vec<MediaKind> = match kind.or(spec.kind()) {
            Some(k) => vec![k],
            None => vec![MediaKind::Video, MediaKind::Audio],
        };
        let i = match sinks.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                if sinks.len() >= MAX_SINKS {
                    return Err(Error::InvalidArgument(
                        format!("more than {MAX_SINKS} sinks").into(),
                    ));
                }
                sinks.push(SinkConfig {
                    name: name.to_owned(),
                    video: None,
                    audio: None,
                });
                sinks.len() - 1
            }
        };
        for k in kinds {
            let slot = match k {
                MediaKind::Video => &mut sinks[i].video,
                MediaKind::Audio => &mut sinks[i].audio,
            };
            if let Some((old, _)) = slot {
                return Err(invalid(format!(
                    "two {} DESTs ({old:?} and {dest:?}); a sink has at most one of each kind",
                    k.as_str()
                )));
            }
            *slot = Some((dest.to_owned(), spec.clone()));
        }
        Ok(())
    }

    /// The DEST of `kind`.
    pub fn dest(&self, kind: MediaKind) -> Option<&(String, SinkSpec)> {
        match kind {
            MediaKind::Video => self.video.as_ref(),
            MediaKind::Audio => self.audio.as_ref(),
        }
    }
}

/// Checks what can be checked before serving: unique names, no two `rtp://` tracks to one
/// address, and that a `file:` sink's directory exists and is a directory (a file that
/// cannot be written later is a log line; a typo in the directory fails the start).
pub(crate) fn check_sinks(sinks: &[SinkConfig]) -> Result<()> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (i, s) in sinks.iter().enumerate() {
        super::check_stream_name(&s.name)?;
        if sinks[..i].iter().any(|o| o.name == s.name) {
            return Err(Error::InvalidArgument(
                format!("sink {} is given twice", s.name).into(),
            ));
        }
        if s.video.is_none() && s.audio.is_none() {
            return Err(Error::InvalidArgument(
                format!("sink {}: no DEST", s.name).into(),
            ));
        }
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let Some((text, spec)) = s.dest(kind) else {
                continue;
            };
            if let Some(addr) = spec.rtp_addr(kind) {
                if addrs.contains(&addr) {
                    return Err(Error::InvalidArgument(
                        format!(
                            "sink {}: {} {text}: {addr} is taken by another sink track",
                            s.name,
                            kind.as_str()
                        )
                        .into(),
                    ));
                }
                addrs.push(addr);
            }
            if let SinkSpec::File { path, .. } = spec {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => std::path::Path::new("."),
                };
                if !dir.is_dir() {
                    return Err(Error::InvalidArgument(
                        format!(
                            "sink {}: {text}: {} is not a directory",
                            s.name,
                            dir.display()
                        )
                        .into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// One session's track written to a sink.
struct TrackOut {
    kind: MediaKind,
    codec: Codec,
    /// The file, command or address.
    target: String,
    stats: OutputStats,
    /// The last keyframe's size, when the codec says it.
    resolution: Option<(u32, u32)>,
    /// The receiver's figures (loss, NACKs, PLIs, wrong payload types, SSRC changes).
    received: crate::media::ReceiverStats,
    /// Still receiving.
    live: bool,
}

/// A session bound to a sink.
struct SinkSession {
    id: String,
    started: Instant,
    tracks: Vec<Rc<RefCell<TrackOut>>>,
}

/// A sink at run time.
struct Sink {
    config: SinkConfig,
    /// Sessions bound now and the last few that ended (their figures stay readable).
    sessions: Vec<SinkSession>,
    /// Totals over every session.
    frames: u64,
    bytes: u64,
    /// The last output failure, for `/api/sinks`.
    error: Option<String>,
}

/// Ended sessions kept per sink for `/api/sinks`.
const ENDED_KEPT: usize = 8;

impl Sink {
    fn active(&self) -> usize {
        self.sessions
            .iter()
            .filter(|s| s.tracks.is_empty() || s.tracks.iter().any(|t| t.borrow().live))
            .count()
    }

    /// The SDP for an `rtp://` sink: its tracks, the codecs fixed by the URL, or the
    /// first codec of each kind it takes (what a browser sends by default: VP8 and Opus).
    fn rtp_sdp(&self) -> Option<String> {
        let mut tracks = Vec::new();
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let Some((_, spec)) = self.config.dest(kind) else {
                continue;
            };
            let Some(addr) = spec.rtp_addr(kind) else {
                continue;
            };
            // The codec of the live session's track, else what the sink takes first.
            let live = self
                .sessions
                .iter()
                .rev()
                .flat_map(|s| &s.tracks)
                .find(|t| t.borrow().kind == kind)
                .map(|t| t.borrow().codec);
            let codec = live.or_else(|| spec.codecs(kind).first().copied())?;
            tracks.push((codec, sink::rtp_payload_type(codec), addr));
        }
        (!tracks.is_empty()).then(|| sink::rtp_sdp(&self.config.name, &tracks))
    }

    fn json(&self, now: Instant) -> serde_json::Value {
        let dest = |kind| {
            self.config.dest(kind).map(|(text, spec)| {
                serde_json::json!({
                    "dest": text,
                    "kind": kind.as_str(),
                    "codecs": spec.codecs(kind).iter().map(|c| c.encoding_name()).collect::<Vec<_>>(),
                })
            })
        };
        let sessions: Vec<_> = self
            .sessions
            .iter()
            .map(|s| {
                let tracks: Vec<_> = s
                    .tracks
                    .iter()
                    .map(|t| {
                        let t = t.borrow();
                        serde_json::json!({
                            "kind": t.kind.as_str(),
                            "codec": t.codec.encoding_name(),
                            "target": t.target,
                            "resolution": t.resolution.map(|(w, h)| format!("{w}x{h}")),
                            "received": received_json(&t.received),
                            "frames": t.stats.frames,
                            "bytes": t.stats.bytes,
                            "dropped": t.stats.dropped,
                            "state": if t.stats.error.is_some() { "failed" } else if t.live { "live" } else { "ended" },
                            "error": t.stats.error,
                        })
                    })
                    .collect();
                let live = s.tracks.is_empty() || s.tracks.iter().any(|t| t.borrow().live);
                serde_json::json!({
                    "id": s.id,
                    "active": live,
                    "age_s": now.saturating_duration_since(s.started).as_secs_f64(),
                    "tracks": tracks,
                })
            })
            .collect();
        let kind = match (&self.config.video, &self.config.audio) {
            (Some(_), Some(_)) => "video+audio",
            (Some(_), None) => "video",
            _ => "audio",
        };
        serde_json::json!({
            "name": self.config.name,
            "kind": kind,
            "video": dest(MediaKind::Video),
            "audio": dest(MediaKind::Audio),
            "active_sessions": self.active(),
            "sessions": sessions,
            "frames": self.frames,
            "bytes": self.bytes,
            "error": self.error,
            "sdp": self.rtp_sdp(),
        })
    }
}

/// A receiver's figures in `/api/sinks`.
fn received_json(r: &crate::media::ReceiverStats) -> serde_json::Value {
    serde_json::json!({
        "packets": r.packets,
        "bytes": r.bytes,
        "lost": r.lost,
        "recovered": r.recovered,
        "nacks_sent": r.nacks_sent,
        "plis_sent": r.plis_sent,
        "frames_dropped": r.frames_dropped,
        "wrong_payload_type": r.wrong_payload_type,
        "ssrc_changes": r.ssrc_changes,
        "malformed": r.malformed,
    })
}

/// The service's sinks, and which session writes to which.
pub(crate) struct Sinks {
    list: Vec<RefCell<Sink>>,
    /// Session id → its sink's index in `list`.
    bound: RefCell<HashMap<String, usize>>,
}

impl Sinks {
    pub(crate) fn new(configs: &[SinkConfig]) -> Sinks {
        for c in configs {
            let dests: Vec<&str> = c
                .video
                .iter()
                .chain(&c.audio)
                .map(|d| d.0.as_str())
                .collect();
            log::info!("sink {}: {}", c.name, dests.join(", "));
        }
        Sinks {
            list: configs
                .iter()
                .map(|c| {
                    RefCell::new(Sink {
                        config: c.clone(),
                        sessions: Vec::new(),
                        frames: 0,
                        bytes: 0,
                        error: None,
                    })
                })
                .collect(),
            bound: RefCell::new(HashMap::new()),
        }
    }

    fn find(&self, name: &str) -> std::result::Result<usize, ServiceError> {
        self.list
            .iter()
            .position(|s| s.borrow().config.name == name)
            .ok_or_else(|| ServiceError::UnknownSink(super::http::clip(name).to_owned()))
    }

    /// The codecs sink `name` takes, per kind (empty: that kind is not taken).
    fn codecs(&self, i: usize) -> (Vec<Codec>, Vec<Codec>) {
        let s = self.list[i].borrow();
        let of = |kind| {
            s.config
                .dest(kind)
                .map(|(_, spec)| spec.codecs(kind))
                .unwrap_or_default()
        };
        (of(MediaKind::Video), of(MediaKind::Audio))
    }

    /// `409` when sink `i` sends RTP to a port and a session is bound to it already (two
    /// senders on one port would garble what ffmpeg or GStreamer reads there).
    fn check_free(&self, i: usize) -> std::result::Result<(), ServiceError> {
        let s = self.list[i].borrow();
        let rtp = [MediaKind::Video, MediaKind::Audio]
            .into_iter()
            .filter_map(|k| s.config.dest(k))
            .find(|(_, spec)| matches!(spec, SinkSpec::Rtp { .. }));
        let Some((dest, _)) = rtp else {
            return Ok(());
        };
        match self.bound.borrow().iter().find(|(_, &b)| b == i) {
            Some((other, _)) => Err(ServiceError::SinkBusy(format!(
                "sink {}: {dest} takes one session at a time, and session {other} is sending to it",
                s.config.name
            ))),
            None => Ok(()),
        }
    }

    /// Session `id` writes what it receives to sink `i` from now on.
    fn bind(&self, id: &str, i: usize) -> std::result::Result<(), ServiceError> {
        self.check_free(i)?;
        self.bound.borrow_mut().insert(id.to_owned(), i);
        let mut s = self.list[i].borrow_mut();
        s.sessions.push(SinkSession {
            id: id.to_owned(),
            started: Instant::now(),
            tracks: Vec::new(),
        });
        // Ended sessions beyond the last few are forgotten.
        let mut ended = s.sessions.len() - s.active();
        while ended > ENDED_KEPT {
            let Some(pos) = s
                .sessions
                .iter()
                .position(|x| !x.tracks.is_empty() && x.tracks.iter().all(|t| !t.borrow().live))
            else {
                break;
            };
            s.sessions.remove(pos);
            ended -= 1;
        }
        Ok(())
    }

    /// Waits (at most `within`) until no track is being written: files synced and
    /// renamed into place, commands' stdin closed. At shutdown, after the sessions closed.
    pub(crate) async fn finished(&self, within: std::time::Duration) {
        let until = Instant::now() + within;
        while Instant::now() < until {
            let live = self.list.iter().any(|s| {
                s.borrow()
                    .sessions
                    .iter()
                    .any(|x| x.tracks.iter().any(|t| t.borrow().live))
            });
            if !live {
                return;
            }
            async_io::Timer::after(std::time::Duration::from_millis(20)).await;
        }
        log::warn!("shutting down: a sink is still writing; its file may stay as NAME.part");
    }

    /// The session ended: its tracks end with their receivers; only the binding goes.
    pub(crate) fn unbind(&self, id: &str) {
        let Some(i) = self.bound.borrow_mut().remove(id) else {
            return;
        };
        let mut s = self.list[i].borrow_mut();
        // A session that never got a track is not worth keeping.
        s.sessions.retain(|x| x.id != id || !x.tracks.is_empty());
    }
}

/// `GET /api/sinks`, `POST /whip/NAME` and `PATCH`/`DELETE /whip/NAME/<id>`.
pub(super) async fn route(
    shared: &Rc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
    path: &str,
) -> std::result::Result<Response<Body>, ServiceError> {
    let paths = ("/api/sinks", "/whip/");
    super::api::media_route(shared, peer, req, path, paths, list, whip_post).await
}

fn list(shared: &Shared) -> Response<Body> {
    let now = Instant::now();
    let list: Vec<_> = shared
        .sinks
        .list
        .iter()
        .map(|s| s.borrow().json(now))
        .collect();
    json_response(StatusCode::OK, serde_json::json!({ "sinks": list }))
}

/// `POST /whip/NAME`: a browser publishes its camera and microphone to sink NAME.
async fn whip_post(
    shared: &Rc<Shared>,
    peer: SocketAddr,
    name: &str,
    req: Request<Incoming>,
) -> std::result::Result<Response<Body>, ServiceError> {
    let sink = shared.sinks.find(name)?;
    let text = super::api::sdp_body(shared, req).await?;
    check_offer(shared, sink, &text, false)?;
    let offer = Description {
        kind: SdpType::Offer,
        sdp: text,
    };
    let (id, answer) = super::api::answer_in_session(shared, Via::Whip, peer, offer, async |s| {
        receive_into(shared, sink, &s.id, &s.pc).await
    })
    .await?;
    log::info!("[{id}] answered POST /whip/{name}");
    Ok(super::api::created(answer, &format!("/whip/{name}/{id}")))
}

/// `POST /api/offer?sink=NAME` (without `?stream=`): an offer that sends audio/video (and
/// maybe a data channel) to sink NAME.
pub(super) async fn answer_offer_with_sink(
    shared: &Rc<Shared>,
    via: Via,
    peer: SocketAddr,
    name: &str,
    offer: Description,
) -> std::result::Result<(String, Description), ServiceError> {
    let sink = shared.sinks.find(name)?;
    check_offer(shared, sink, &offer.sdp, true)?;
    super::api::answer_in_session(shared, via, peer, offer, async |s| {
        receive_into(shared, sink, &s.id, &s.pc).await
    })
    .await
}

/// Plans the answer to `sdp` for sink `i` before a session is spent on it: `400` bad SDP,
/// `422` nothing the sink takes (a recvonly offer, no codec in common; the body says why).
/// The peer connection plans it again with the same inputs.
fn check_offer(
    shared: &Shared,
    i: usize,
    sdp: &str,
    data: bool,
) -> std::result::Result<(), ServiceError> {
    let offer = crate::sdp::parse_description(sdp).map_err(ServiceError::BadSdp)?;
    shared.sinks.check_free(i)?;
    let (video, audio) = shared.sinks.codecs(i);
    let receive = crate::sdp::ReceiveCodecs { video, audio };
    let name = shared.sinks.list[i].borrow().config.name.clone();
    let plan = crate::sdp::plan_answer_media(&offer, None, &receive, data, &Default::default())
        .map_err(|e| ServiceError::Unplayable(format!("sink {name}: {e}")))?;
    for why in &plan.rejected {
        log::info!("sink {name}: {why}");
    }
    if plan.receivers.is_empty() {
        return Err(ServiceError::Unplayable(format!(
            "sink {name}: the offer sends nothing it takes ({}); publish with sendonly or sendrecv audio/video",
            takes(&receive)
        )));
    }
    Ok(())
}

/// "video VP8 or H.264, audio Opus": what a sink takes, for an error message.
fn takes(r: &crate::sdp::ReceiveCodecs) -> String {
    let names = |c: &[Codec]| {
        c.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let mut parts = Vec::new();
    if !r.video.is_empty() {
        parts.push(format!("video {}", names(&r.video)));
    }
    if !r.audio.is_empty() {
        parts.push(format!("audio {}", names(&r.audio)));
    }
    parts.join(", ")
}

/// `?sink=NAME` on `/ws` (without `?stream=`): session `id` (before its offer is set)
/// sends what it receives to sink `name`.
pub(super) async fn attach_sink(
    shared: &Rc<Shared>,
    name: &str,
    id: &str,
    pc: &crate::PeerConnection,
) -> std::result::Result<(), ServiceError> {
    let sink = shared.sinks.find(name)?;
    receive_into(shared, sink, id, pc).await
}

/// What sink `name` takes, for a plan that also sends a stream (talk-back).
pub(super) fn receive_codecs(
    shared: &Shared,
    name: &str,
) -> std::result::Result<crate::sdp::ReceiveCodecs, ServiceError> {
    let i = shared.sinks.find(name)?;
    shared.sinks.check_free(i)?;
    let (video, audio) = shared.sinks.codecs(i);
    Ok(crate::sdp::ReceiveCodecs { video, audio })
}

/// Binds session `id`, whose plan receives what sink `name` takes (talk-back), to it.
pub(super) fn bind_sink(
    shared: &Shared,
    name: &str,
    id: &str,
) -> std::result::Result<(), ServiceError> {
    let i = shared.sinks.find(name)?;
    shared.sinks.bind(id, i)
}

/// Makes `pc` (session `id`, before its offer is set) receive what sink `i` takes (one
/// receiver per kind, limited to the sink's codecs), and binds the session to the sink:
/// its received tracks are written there.
async fn receive_into(
    shared: &Rc<Shared>,
    i: usize,
    id: &str,
    pc: &crate::PeerConnection,
) -> std::result::Result<(), ServiceError> {
    let (video, audio) = shared.sinks.codecs(i);
    for (kind, codecs) in [(MediaKind::Video, video), (MediaKind::Audio, audio)] {
        if !codecs.is_empty() {
            pc.add_transceiver(kind, crate::media::TransceiverInit::with_codecs(&codecs))
                .await?;
        }
    }
    shared.sinks.bind(id, i)
}

impl Sinks {
    /// A track session `id` receives: written to its sink by a task of its own, or
    /// dropped (logged) when the session has no sink or the sink no DEST of its kind.
    pub(crate) fn on_track(&self, shared: &Rc<Shared>, id: &str, rx: crate::media::TrackReceiver) {
        let Some(i) = self.bound.borrow().get(id).copied() else {
            log::info!(
                "[{id}] a received {} track and no sink: ignored",
                rx.kind().as_str()
            );
            return;
        };
        if let Some(writer) = self.track_writer(shared, i, id, rx) {
            shared.ex.spawn(writer.run()).detach();
        }
    }

    /// The writer of session `id`'s track `rx` to sink `i`: the track listed in the
    /// session's and its output opened. `None` (logged) when the sink takes no track of its
    /// kind or the output does not open (the error kept in the track and the sink).
    fn track_writer(
        &self,
        shared: &Rc<Shared>,
        i: usize,
        id: &str,
        rx: crate::media::TrackReceiver,
    ) -> Option<TrackWriter> {
        let kind = rx.kind();
        let codec = rx.codec();
        let mut sink = self.list[i].borrow_mut();
        let name = sink.config.name.clone();
        let Some((_, spec)) = sink.config.dest(kind).cloned() else {
            log::info!(
                "[{id}] sink {name} takes no {}: the track is ignored",
                kind.as_str()
            );
            return None;
        };
        let track = Rc::new(RefCell::new(TrackOut {
            kind,
            codec,
            target: String::new(),
            stats: OutputStats::default(),
            resolution: None,
            received: Default::default(),
            live: true,
        }));
        if let Some(s) = sink.sessions.iter_mut().find(|s| s.id == id) {
            s.tracks.push(track.clone());
        }
        let max = shared.config.max_sink_file_bytes;
        let out = match Output::open(&spec, &name, id, (kind, codec), max, &shared.ex) {
            Ok(out) => out,
            Err(why) => {
                log::warn!("[{id}] sink {name}: {why}; the session goes on without it");
                let mut t = track.borrow_mut();
                t.live = false;
                t.stats.error = Some(why.clone());
                sink.error = Some(why);
                return None;
            }
        };
        let target = out.target();
        log::info!("[{id}] sink {name}: {} {codec} to {target}", kind.as_str());
        track.borrow_mut().target = target.clone();
        Some(TrackWriter {
            shared: shared.clone(),
            sink: i,
            id: id.to_owned(),
            name,
            target,
            rx,
            out,
            track,
        })
    }
}

/// The task that writes one received track to its sink's output.
struct TrackWriter {
    shared: Rc<Shared>,
    /// The sink's index in `Sinks::list`.
    sink: usize,
    /// The session's id.
    id: String,
    /// The sink's name.
    name: String,
    /// The output's file, command or address.
    target: String,
    rx: crate::media::TrackReceiver,
    out: Output,
    track: Rc<RefCell<TrackOut>>,
}

impl TrackWriter {
    /// Writes every frame until the track ends or the output fails, then finishes it.
    async fn run(mut self) {
        while let Some(f) = self.rx.read_frame().await {
            if !self.write(&f) {
                break;
            }
        }
        self.finish().await;
    }

    /// One frame to the output, counted (written, or dropped when its queue is full);
    /// `false` when the output failed (logged, the error kept) and takes no more.
    fn write(&mut self, f: &crate::media::ReceivedFrame) -> bool {
        let sink = &self.shared.sinks.list[self.sink];
        {
            let mut t = self.track.borrow_mut();
            t.received = self.rx.stats();
            if f.width_height.is_some() {
                t.resolution = f.width_height;
            }
        }
        match self.out.write(f) {
            Ok(None) => self.track.borrow_mut().stats.dropped += 1,
            Ok(Some(n)) => {
                let mut t = self.track.borrow_mut();
                t.stats.frames += 1;
                t.stats.bytes += n as u64;
                let mut s = sink.borrow_mut();
                s.frames += 1;
                s.bytes += n as u64;
            }
            Err(why) => {
                // The output is done; the session (and its other track) go on.
                let (id, name) = (&self.id, &self.name);
                let kind = self.track.borrow().kind;
                log::warn!(
                    "[{id}] sink {name}: {why}; no more {} written",
                    kind.as_str()
                );
                self.track.borrow_mut().stats.error = Some(why.clone());
                sink.borrow_mut().error = Some(why);
                return false;
            }
        }
        true
    }

    /// Finishes the output (a file renamed into place, a command's stdin closed) and logs
    /// the track's figures; the track is no longer live.
    async fn finish(mut self) {
        let (id, name) = (&self.id, &self.name);
        if let Err(why) = self.out.finish().await {
            log::warn!("[{id}] sink {name}: {why}");
            self.track.borrow_mut().stats.error = Some(why);
        }
        let mut t = self.track.borrow_mut();
        t.live = false;
        t.received = self.rx.stats();
        let r = &t.received;
        log::info!(
            "[{id}] sink {name}: {} track ended: {} frames, {} bytes to {} \
             (received {} packets, {} lost, {} recovered, {} frames dropped)",
            t.kind.as_str(),
            t.stats.frames,
            t.stats.bytes,
            self.target,
            r.packets,
            r.lost,
            r.recovered,
            r.frames_dropped
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_fill_kinds() {
        let mut sinks = Vec::new();
        SinkConfig::add(&mut sinks, "cam=file:/tmp/cam.ivf").unwrap();
        SinkConfig::add(&mut sinks, "cam=rtp://127.0.0.1:5006?codec=opus").unwrap();
        SinkConfig::add(&mut sinks, "door=file:/tmp/door").unwrap();
        assert_eq!(sinks.len(), 2);
        assert_eq!(sinks[0].video.as_ref().unwrap().0, "file:/tmp/cam.ivf");
        assert_eq!(
            sinks[0].audio.as_ref().unwrap().0,
            "rtp://127.0.0.1:5006?codec=opus"
        );
        // A DEST of no fixed kind takes both.
        assert!(sinks[1].video.is_some() && sinks[1].audio.is_some());
        check_sinks(&sinks).unwrap();
    }

    #[test]
    fn bad_sinks_say_why() {
        let err = |flags: &[&str]| {
            let mut sinks = Vec::new();
            for f in flags {
                if let Err(e) = SinkConfig::add(&mut sinks, f) {
                    return e.to_string();
                }
            }
            check_sinks(&sinks).unwrap_err().to_string()
        };
        assert!(err(&["cam"]).contains("expected NAME=DEST"));
        assert!(err(&["c/m=file:x.ivf"]).contains("sink name \"c/m\""));
        assert!(err(&["cam=file:x.mp4"]).contains("unknown file extension"));
        assert!(err(&["cam=file:x", "cam=file:y.ivf"]).contains("two video DESTs"));
        assert!(err(&[
            "cam=rtp://127.0.0.1:5004",
            "mic=rtp://127.0.0.1:5006?codec=opus"
        ])
        .contains("127.0.0.1:5006 is taken"));
        assert!(err(&["cam=file:/no/such/dir/cam.ivf"]).contains("/no/such/dir is not a directory"));
        let mut sinks = Vec::new();
        let e = SinkConfig::add_dest(&mut sinks, Some(MediaKind::Video), "cam", "file:a.ogg")
            .unwrap_err();
        assert!(e.to_string().contains("Opus is not video"), "{e}");
    }
}
