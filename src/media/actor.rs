//! The media actor of one peer connection: a thin task around [`MediaSession`].
//!
//! Its inbox takes the stream's frames per track (offered with `try_send` by the stream's
//! task: a full inbox drops that frame for this viewer only, whose sender sees the gap and
//! waits for a keyframe; the source and the other viewers never wait), the SRTP/SRTCP
//! datagrams the ICE agent demultiplexed (RFC 7983), the [`SrtpSession`] the DTLS actor
//! keyed after its handshake, and the tracks to send (from the peer actor, with the answer
//! plan). Its outputs: protected datagrams to the ICE agent (sent on the selected pair, like
//! DTLS records) and keyframe requests to whoever feeds it.

use super::receiver::ReceiverConfig;
use super::remote::{Offered, TrackOutlet};
use super::sender::{KeyframeCause, SenderConfig};
use super::session::MediaSession;
use super::srtp::SrtpSession;
use super::PacketizedFrame;
use crate::ice::IceMsg;
use crate::runtime::{self, Actor, Link};
use bytes::BytesMut;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

/// Datagrams handed to ICE per round of [`Actor::drain`] before its link is checked again.
const DRAIN_ROUND: usize = 256;

/// Where a connection's keyframe requests go: (track number, cause). The stream answers
/// with [`MediaMsg::CatchUp`].
pub(crate) type KeyframeSink = Box<dyn FnMut(usize, KeyframeCause) + Send>;

/// Inputs of the media actor.
pub(crate) enum MediaMsg {
    /// The tracks to send (one per planned track, in plan order) and where their keyframe
    /// requests go.
    Configure {
        tracks: Vec<SenderConfig>,
        keyframes: KeyframeSink,
        /// The tracks to receive (plan order) and where their frames go.
        receivers: Vec<(ReceiverConfig, TrackOutlet)>,
    },
    /// A frame of track `.0`'s source.
    Frame(usize, Arc<PacketizedFrame>),
    /// The answer to a keyframe request of track `.0`: the cached keyframe and the frames
    /// since.
    CatchUp(usize, Vec<Arc<PacketizedFrame>>),
    /// SRTP or SRTCP from the remote (ICE: first byte 128–191 from a validated address).
    Datagram(BytesMut),
    /// DTLS is done: the keys.
    Keys(Box<SrtpSession>),
    /// The connection closes.
    Close,
}

pub(crate) struct MediaActor {
    name: Arc<str>,
    session: MediaSession,
    keyframes: Option<KeyframeSink>,
    /// Each received track's queue to the application, by receiver index.
    outlets: Vec<TrackOutlet>,
    /// The time of the last input (engines never read the clock; drain uses this).
    now: Instant,
    closed: bool,
    ice: Link<IceMsg>,
}

impl MediaActor {
    pub(crate) fn new(name: Arc<str>, ice: Link<IceMsg>) -> Self {
        Self {
            name,
            session: MediaSession::new(Vec::new()),
            keyframes: None,
            outlets: Vec::new(),
            now: Instant::now(),
            closed: false,
            ice,
        }
    }

    fn handle_msg(&mut self, now: Instant, msg: MediaMsg) {
        match msg {
            MediaMsg::Configure {
                tracks,
                keyframes,
                receivers,
            } => {
                log::debug!(
                    "[{}] media: {} tracks sent, {} received",
                    self.name,
                    tracks.len(),
                    receivers.len()
                );
                self.session.set_tracks(tracks);
                self.keyframes = Some(keyframes);
                let (configs, outlets) = receivers.into_iter().unzip();
                self.session.set_receivers(configs);
                self.outlets = outlets;
            }
            MediaMsg::Frame(track, f) => self.session.handle_frame(now, track, &f),
            MediaMsg::CatchUp(track, frames) => self.session.handle_catch_up(now, track, &frames),
            MediaMsg::Datagram(d) => self.session.handle_datagram(now, &d),
            MediaMsg::Keys(srtp) => {
                log::info!("[{}] media: SRTP keyed ({:?})", self.name, srtp.profile());
                self.session.set_srtp(*srtp);
            }
            MediaMsg::Close => self.close(),
        }
    }

    /// Each receiver told what its application reads (and whether it wants a keyframe),
    /// before packets come in.
    fn set_outputs(&mut self) {
        for (i, o) in self.outlets.iter().enumerate() {
            if let Some(r) = self.session.receiver_mut(i) {
                r.set_outputs(o.wants_frames(), o.wants_rtp());
                if o.take_keyframe_request() {
                    r.request_keyframe_now(self.now);
                }
            }
        }
    }

    /// Hands the receivers' frames and packets to the application's queues (full: the
    /// frame is lost to it, and video waits for a keyframe), and updates their figures.
    fn deliver(&mut self) {
        for (i, o) in self.outlets.iter().enumerate() {
            let Some(r) = self.session.receiver_mut(i) else {
                continue;
            };
            while let Some(f) = r.poll_frame() {
                if o.offer_frame(f) == Offered::Full {
                    r.frame_refused(self.now);
                }
            }
            while let Some(p) = r.poll_rtp() {
                let _ = o.offer_rtp(p);
            }
            o.stats.store(r.stats());
        }
    }

    fn close(&mut self) {
        if !self.closed {
            for o in &self.outlets {
                o.close();
            }
            self.closed = true;
            let s = self.session.stats();
            log::debug!("[{}] media closed: {s:?}", self.name);
        }
    }
}

impl Actor for MediaActor {
    type Msg = MediaMsg;

    async fn drain(&mut self) {
        self.deliver();
        if let Some(sink) = self.keyframes.as_mut() {
            while let Some((track, cause)) = self.session.poll_keyframe_request() {
                sink(track, cause);
            }
        }
        // Held while ICE is backlogged: packets wait in the senders' bounded queues (a slow
        // link then skips to a keyframe) instead of in an unbounded link queue.
        while !self.closed && !self.ice.is_backlogged() {
            let mut n = 0;
            while n < DRAIN_ROUND {
                let Some(d) = self.session.poll_datagram(self.now) else {
                    break;
                };
                self.ice.push(IceMsg::Transmit(d));
                n += 1;
            }
            self.ice.flush();
            if n < DRAIN_ROUND {
                break;
            }
        }
        self.ice.flush();
    }

    fn finished(&self) -> bool {
        self.closed
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    fn handle(&mut self, now: Instant, batch: Vec<MediaMsg>) {
        self.now = now;
        self.set_outputs();
        for msg in batch {
            self.handle_msg(now, msg);
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.now = now;
        self.session.handle_timeout(now, SystemTime::now());
    }

    fn shutdown(&mut self, _now: Instant) {
        self.close();
    }

    fn poll_links(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        runtime::poll_links(&mut [&mut self.ice], cx)
    }
}
