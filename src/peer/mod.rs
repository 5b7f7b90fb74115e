//! The peer connection: the W3C `RTCPeerConnection` shape over the actors.
//!
//! [`PeerConnection`] is a `Send + Sync` handle. The connection itself — its peer actor,
//! ICE agent, DTLS transport, SCTP association and channel router — lives on a smolrtc
//! thread ([`Runtime`]); the handle only sends commands and reads events, so any thread may
//! drive it (as rawrtc was driven from a kore task thread). Dropping the last handle closes
//! the connection.

mod actor;
mod pipeline;

pub(crate) use actor::PeerMsg;

use crate::channel::dcep::Caps;
use crate::channel::{ChannelCmd, ChannelInit, ChannelShared, DataChannel, Message, SendBudget};
use crate::dtls::Certificate;
use crate::error::{ArgumentError, Error, Result};
use crate::ice::{GatheringState, IceConfig, IceConnectionState};
use crate::runtime::{reply_channel, Runtime};
use crate::sctp::SctpConfig;
use crate::sdp::{Description, IceCandidateInit};
use actor::PeerCmd;
use async_channel::{Receiver, Sender};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// Peer connection settings.
#[derive(Clone, Default)]
pub struct Config {
    /// Name used in log lines (a session id, "A"/"B", ...).
    pub name: String,
    /// ICE settings.
    pub ice: IceConfig,
    /// SCTP settings.
    pub sctp: SctpConfig,
    /// Most data channels at once (0 = 1024, the router's `DEFAULT_MAX_CHANNELS`).
    pub max_channels: usize,
    /// Longest channel label, bytes, in `create_data_channel` and in a peer's DCEP OPEN (a
    /// longer one opened by the peer is refused: its stream is reset). 0 =
    /// [`crate::channel::DEFAULT_MAX_CHANNEL_LABEL`].
    pub max_channel_label: usize,
    /// Longest channel sub-protocol, bytes, likewise. 0 =
    /// [`crate::channel::DEFAULT_MAX_CHANNEL_PROTOCOL`].
    pub max_channel_protocol: usize,
    /// Media received (feature `media`): how long packets after a hole wait for it to be
    /// filled (reordering, a NACKed retransmission) before it is given up. Only loss
    /// delays anything. Zero = `media::receiver::DEFAULT_DEPTH` (300 ms).
    pub receive_depth: std::time::Duration,
    /// The DTLS certificate; a fresh ECDSA P-256 one when `None`.
    pub certificate: Option<Certificate>,
}

impl Config {
    /// Host candidates on 127.0.0.1 only: for peers on one machine (tests, benchmarks,
    /// examples) and for loopback-only network namespaces.
    pub fn loopback(name: &str) -> Self {
        let mut c = Self {
            name: name.into(),
            ..Self::default()
        };
        c.ice.hosts.addresses = vec![std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];
        c
    }
}

/// W3C `RTCSignalingState` (without the provisional-answer states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalingState {
    /// No offer/answer exchange in progress.
    Stable,
    /// A local offer is set; waiting for the answer.
    HaveLocalOffer,
    /// A remote offer is set; an answer is due.
    HaveRemoteOffer,
    /// The connection is closed.
    Closed,
}

/// W3C `RTCPeerConnectionState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Nothing started.
    New,
    /// ICE or DTLS in progress.
    Connecting,
    /// ICE and DTLS up.
    Connected,
    /// ICE lost consent for a while.
    Disconnected,
    /// ICE or DTLS failed; resources are freed.
    Failed,
    /// Closed locally or by the peer.
    Closed,
}

macro_rules! display_lowercase_debug {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let s = format!("{self:?}");
                // CamelCase to the W3C's dashed lowercase: HaveLocalOffer -> have-local-offer.
                let mut out = String::new();
                for (i, c) in s.chars().enumerate() {
                    if c.is_uppercase() && i > 0 {
                        out.push('-');
                    }
                    out.extend(c.to_lowercase());
                }
                f.write_str(&out)
            }
        }
    )*};
}
display_lowercase_debug!(
    SignalingState,
    ConnectionState,
    IceConnectionState,
    GatheringState
);

/// Everything a peer connection reports, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A change needs an offer/answer exchange (the first data channel).
    NegotiationNeeded,
    /// A local candidate to trickle to the peer; `None` is end-of-candidates.
    IceCandidate(Option<IceCandidateInit>),
    /// Gathering state changed.
    IceGatheringState(GatheringState),
    /// ICE connection state changed.
    IceConnectionState(IceConnectionState),
    /// Signaling state changed.
    SignalingState(SignalingState),
    /// Peer connection state changed.
    ConnectionState(ConnectionState),
    /// An error that changed the connection state (fingerprint mismatch, DTLS failure, ...).
    Error(Error),
    /// The peer opened a channel in-band (DCEP); an open event follows.
    DataChannel(DataChannel),
    /// A channel is open.
    ChannelOpen(DataChannel),
    /// A message arrived on a channel.
    ChannelMessage(DataChannel, Message),
    /// A channel's buffered amount fell to its low threshold.
    ChannelBufferedAmountLow(DataChannel),
    /// A channel is closed.
    ChannelClosed(DataChannel),
    /// ICE selected (or switched to) this pair: the local and remote `candidate:` lines.
    SelectedCandidatePair {
        /// The local candidate.
        local: String,
        /// The remote candidate.
        remote: String,
    },
    /// The viewer of track `track` (see [`crate::media::TrackSender::id`]) asked for a
    /// keyframe; it was given the track's cached one already, but the encoder should make
    /// a fresh one soon (a PLI or FIR means the picture is broken now).
    #[cfg(feature = "media")]
    KeyframeRequest {
        /// The track's number.
        track: usize,
        /// Why.
        cause: crate::media::KeyframeCause,
    },
    /// The remote sends a track that this connection receives (a section accepted as
    /// `recvonly` or `sendrecv`: see [`PeerConnection::add_transceiver`]). Fired once per
    /// track when the description that accepts it is set, before its first frame; read its
    /// frames or RTP from the [`crate::media::TrackReceiver`].
    #[cfg(feature = "media")]
    Track(crate::media::TrackReceiver),
}

/// The receiving end of a peer connection's events. Events are delivered once: take one
/// stream per connection.
pub struct EventStream {
    rx: Receiver<Vec<Event>>,
    buf: VecDeque<Event>,
}

impl EventStream {
    /// The next event; `None` once the connection is closed and every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Some(e);
            }
            self.buf.extend(self.rx.recv().await.ok()?);
        }
    }

    /// The next event if one is ready now.
    pub fn try_next(&mut self) -> Option<Event> {
        if self.buf.is_empty() {
            if let Ok(batch) = self.rx.try_recv() {
                self.buf.extend(batch);
            }
        }
        self.buf.pop_front()
    }

    /// Blocking [`EventStream::next`], for threads without an executor.
    pub fn next_blocking(&mut self) -> Option<Event> {
        futures_lite::future::block_on(self.next())
    }
}

struct Inner {
    peer: Sender<Vec<PeerMsg>>,
    channel_cmds: Sender<Vec<ChannelCmd>>,
    events: Receiver<Vec<Event>>,
    next_key: Arc<AtomicU32>,
    max_message_size: Arc<AtomicUsize>,
    budget: Arc<SendBudget>,
    dcep_caps: Caps,
    #[cfg(feature = "media")]
    media: Sender<Vec<crate::media::actor::MediaMsg>>,
    /// The events inbox, for the tracks' keyframe requests.
    #[cfg(feature = "media")]
    events_tx: Sender<Vec<Event>>,
    /// Held so the smolrtc thread outlives the connection; media spawns track tasks on it.
    #[cfg_attr(not(feature = "media"), allow(dead_code))]
    runtime: Runtime,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.peer.try_send(vec![PeerMsg::Cmd(PeerCmd::Close(None))]);
    }
}

/// A WebRTC peer connection for data channels. See the module documentation.
#[derive(Clone)]
pub struct PeerConnection {
    inner: Arc<Inner>,
}

impl PeerConnection {
    /// Creates a peer connection on the process-wide smolrtc thread.
    pub fn new(config: Config) -> Result<Self> {
        Self::with_runtime(Runtime::global(), config)
    }

    /// Creates a peer connection on the given smolrtc thread.
    pub fn with_runtime(runtime: &Runtime, config: Config) -> Result<Self> {
        let handles = pipeline::spawn(runtime, config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                peer: handles.peer,
                channel_cmds: handles.channel_cmds,
                events: handles.events,
                next_key: handles.next_key,
                max_message_size: handles.max_message_size,
                budget: handles.budget,
                dcep_caps: handles.dcep_caps,
                #[cfg(feature = "media")]
                media: handles.media,
                #[cfg(feature = "media")]
                events_tx: handles.events_tx,
                runtime: runtime.clone(),
            }),
        })
    }

    /// The event stream. Take it once, before signaling starts, and keep reading it.
    pub fn events(&self) -> EventStream {
        EventStream {
            rx: self.inner.events.clone(),
            buf: VecDeque::new(),
        }
    }

    async fn call<T>(&self, make: impl FnOnce(Sender<T>) -> PeerCmd) -> Result<T> {
        let (tx, rx) = reply_channel();
        self.inner
            .peer
            .send(vec![PeerMsg::Cmd(make(tx))])
            .await
            .map_err(|_| Error::Closed)?;
        rx.recv().await.map_err(|_| Error::Closed)
    }

    /// W3C `createOffer`: an offer with the candidates gathered so far: the data section,
    /// and with feature `media` a section per kind of the tracks (`add_track`) and
    /// receivers (`add_transceiver`) added before the first offer.
    pub async fn create_offer(&self) -> Result<Description> {
        self.call(PeerCmd::CreateOffer).await?
    }

    /// W3C `createAnswer`, after a remote offer.
    pub async fn create_answer(&self) -> Result<Description> {
        self.call(PeerCmd::CreateAnswer).await?
    }

    /// W3C `setLocalDescription`; starts gathering. An empty `sdp` uses the last created
    /// offer or answer.
    pub async fn set_local_description(&self, description: Description) -> Result<()> {
        self.call(|r| PeerCmd::SetLocal(description, r)).await?
    }

    /// W3C `setRemoteDescription`; starts ICE checks and fixes the DTLS role.
    pub async fn set_remote_description(&self, description: Description) -> Result<()> {
        self.call(|r| PeerCmd::SetRemote(description, r)).await?
    }

    /// W3C `addIceCandidate`; an empty `candidate` is end-of-candidates.
    pub async fn add_ice_candidate(&self, candidate: IceCandidateInit) -> Result<()> {
        self.call(|r| PeerCmd::AddCandidate(candidate, r)).await?
    }

    /// The local description with every candidate gathered so far.
    pub async fn local_description(&self) -> Option<Description> {
        self.call(PeerCmd::LocalDescription).await.ok().flatten()
    }

    /// The remote description as set.
    pub async fn remote_description(&self) -> Option<Description> {
        self.call(PeerCmd::RemoteDescription).await.ok().flatten()
    }

    /// Current signaling, ICE gathering and connection states.
    pub async fn states(&self) -> Result<(SignalingState, GatheringState, ConnectionState)> {
        self.call(PeerCmd::States).await
    }

    /// W3C `createDataChannel`. The channel opens once SCTP is up (negotiated channels) or
    /// the peer acknowledges it (in-band); watch for [`Event::ChannelOpen`]. A label or
    /// protocol longer than [`Config::max_channel_label`] / [`Config::max_channel_protocol`]
    /// is an [`Error::InvalidArgument`] naming the limit (W3C: a TypeError past 65535).
    pub async fn create_data_channel(&self, label: &str, init: ChannelInit) -> Result<DataChannel> {
        init.validate()?;
        if label.len() > u16::MAX as usize {
            return Err(ArgumentError::TooLong {
                field: "label",
                len: label.len(),
                limit: "DCEP's maximum",
                max: u16::MAX.into(),
            }
            .into());
        }
        let caps = self.inner.dcep_caps;
        for (field, len, max, limit) in [
            ("label", label.len(), caps.label, "max_channel_label"),
            (
                "protocol",
                init.protocol.len(),
                caps.protocol,
                "max_channel_protocol",
            ),
        ] {
            if len > max {
                return Err(ArgumentError::TooLong {
                    field,
                    len,
                    limit,
                    max,
                }
                .into());
            }
        }
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(ChannelShared::new(
            key,
            label.to_owned(),
            init,
            self.inner.max_message_size.clone(),
            self.inner.budget.clone(),
        ));
        let channel = DataChannel {
            shared: shared.clone(),
            cmds: self.inner.channel_cmds.clone(),
        };
        self.inner
            .channel_cmds
            .send(vec![ChannelCmd::Create(shared)])
            .await
            .map_err(|_| Error::Closed)?;
        let _ = self
            .inner
            .peer
            .send(vec![PeerMsg::Cmd(PeerCmd::ChannelCreated)])
            .await;
        Ok(channel)
    }

    /// Answers the next remote offer with `plan` (service streams): its audio and video
    /// tracks are sent by the media actor, fed through [`PeerConnection::media_inbox`];
    /// `keyframes` hears their keyframe requests (track number in plan order, cause).
    #[cfg(feature = "media")]
    pub(crate) async fn set_media_plan(
        &self,
        plan: crate::sdp::AnswerPlan,
        keyframes: crate::media::actor::KeyframeSink,
    ) -> Result<()> {
        self.call(|r| PeerCmd::MediaPlan(Box::new(plan), keyframes, r))
            .await?
    }

    /// The media actor's inbox: frames and catch-ups of the planned tracks, offered with
    /// `try_send` (a full inbox drops the frame for this connection only).
    #[cfg(feature = "media")]
    pub(crate) fn media_inbox(&self) -> Sender<Vec<crate::media::actor::MediaMsg>> {
        self.inner.media.clone()
    }

    /// Adds a track the application feeds from its own encoder (call before the remote
    /// offer is set; at most one video and one audio track). As the answerer, the offer
    /// needs a receiving section of that kind with a codec that fits; the answer sends the
    /// track in it, beside the data channels, over one BUNDLE transport. As the offerer,
    /// [`PeerConnection::create_offer`] offers it in a `sendonly` section (`sendrecv` with a
    /// receiver of the kind, see [`PeerConnection::add_transceiver`]).
    ///
    /// # Errors
    ///
    /// A second track of a kind, or a remote description already set.
    #[cfg(feature = "media")]
    pub async fn add_track(
        &self,
        init: crate::media::TrackInit,
    ) -> Result<crate::media::TrackSender> {
        let (tx, rx) = crate::media::local::channel();
        let id = self
            .call(|r| PeerCmd::AddTrack(init, tx.clone(), r))
            .await??;
        let events = self.inner.events_tx.clone();
        let codec = init.codec;
        self.inner.runtime.spawn(move || {
            crate::media::local::run(codec, rx, move |cause| {
                let _ = events.try_send(vec![Event::KeyframeRequest { track: id, cause }]);
            })
        });
        Ok(crate::media::TrackSender::new(id, codec, tx))
    }

    /// A track fed by the service from one of its streams (the publish leg, see
    /// `service::publish`): negotiated as [`PeerConnection::add_track`]'s, but no track
    /// task runs; the returned queue hears where the plan put it (`Bind`) and the remote's
    /// keyframe requests, so the stream's own track feeds it like any viewer.
    #[cfg(all(feature = "media", feature = "service"))]
    pub(crate) async fn add_stream_track(
        &self,
        init: crate::media::TrackInit,
    ) -> Result<Receiver<crate::media::local::TrackInput>> {
        let (tx, rx) = crate::media::local::channel();
        self.call(|r| PeerCmd::AddTrack(init, tx, r)).await??;
        Ok(rx)
    }

    /// W3C `addTransceiver(kind, {direction: "recvonly"})`: this connection receives a
    /// track of `kind` (call before the remote description is set; one per kind). As the
    /// answerer, the offer's first section of that kind that sends (`sendonly` or
    /// `sendrecv`) is accepted `recvonly` — or `sendrecv` when [`PeerConnection::add_track`]
    /// added a track of that kind too (talk-back); as the offerer, [`create_offer`] offers
    /// a `recvonly` section (or one `sendrecv` section with the track).
    /// [`Event::Track`] hands over the [`crate::media::TrackReceiver`] once negotiated.
    ///
    /// `init` is a [`crate::sdp::Direction`] (only `RecvOnly`: the sending half is
    /// `add_track`) or a [`crate::media::TransceiverInit`] that also limits the codecs
    /// (e.g. VP8 only for an IVF recorder).
    ///
    /// [`create_offer`]: PeerConnection::create_offer
    ///
    /// # Errors
    ///
    /// A direction other than `recvonly`, a codec of the other kind, a second receiver of
    /// a kind, or a remote description already set.
    #[cfg(feature = "media")]
    pub async fn add_transceiver(
        &self,
        kind: crate::media::MediaKind,
        init: impl Into<crate::media::TransceiverInit>,
    ) -> Result<()> {
        let init = init.into();
        init.check(kind)?;
        self.call(|r| PeerCmd::AddTransceiver(kind, init, r))
            .await?
    }

    /// W3C `restartIce`: the next offer carries new ICE credentials, and once the answer is
    /// set, new checks run while the current pair keeps carrying the open channels.
    /// [`Event::NegotiationNeeded`] fires when a connection is already up.
    pub async fn restart_ice(&self) -> Result<()> {
        self.call(PeerCmd::RestartIce).await?
    }

    /// More STUN/TURN servers for this connection, the part of W3C `setConfiguration` that
    /// changes `iceServers` (servers already configured are skipped). Once gathering has
    /// run, the new servers are asked from the existing sockets: their server-reflexive
    /// and relay candidates come as [`Event::IceCandidate`] (trickle them to the remote),
    /// the checks pair them with the remote candidates, and gathering completes again
    /// (another `IceCandidate(None)`). Before that they join the configuration.
    pub async fn add_ice_servers(&self, servers: Vec<crate::ice::IceServer>) -> Result<()> {
        self.call(|r| PeerCmd::AddIceServers(servers, r)).await?
    }

    /// W3C `close`: channels close, SCTP aborts, DTLS sends close_notify, sockets close.
    /// Returns once that teardown has happened (at most about two seconds).
    pub async fn close(&self) {
        let _ = self.call(|r| PeerCmd::Close(Some(r))).await;
    }
}

impl fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerConnection")
    }
}
