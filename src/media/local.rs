//! Tracks an application sends from its own encoder: [`TrackSender`] (from
//! `PeerConnection::add_track`), and the track's task on the smolrtc thread.
//!
//! `write_frame` and `write_rtp` run on the caller's thread: they split the data into a
//! [`Frame`] (Annex-B → NAL units; VP8 and Opus whole) and hand it with `try_send` to the
//! track's task, which owns the [`Track`] (packetizing once, the cached group of pictures)
//! and offers each packetized frame to the connection's media actor. A keyframe request of
//! the viewer is answered there at once with the cached group, and reported to the
//! application as [`crate::Event::KeyframeRequest`] so its encoder can make a fresh one.

use super::actor::MediaMsg;
use super::h264::annexb::AnnexBSplitter;
use super::packetize::{Frame, FrameData};
use super::rtp_in::RtpFramer;
use super::{Codec, KeyframeCause, ProfileLevelId, Track};
use crate::error::{Error, Result};
use async_channel::{Receiver, Sender, TrySendError};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Frames waiting for the track's task at most; beyond, `write_*` drops them (the encoder
/// runs ahead of the connection).
const TRACK_QUEUE: usize = 64;
/// Longest NAL unit `write_frame` takes (as the sources).
const MAX_NAL: usize = 4 << 20;

/// What a track sends: its codec and, for H.264, the `profile-level-id` to offer
/// (42e01f, constrained baseline 3.1, when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInit {
    /// The codec the encoder produces.
    pub codec: Codec,
    /// H.264 only: the encoder's profile and level.
    pub profile_level_id: Option<ProfileLevelId>,
}

impl TrackInit {
    /// A track of `codec`.
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            profile_level_id: None,
        }
    }
}

/// Inputs of a track's task.
pub(crate) enum TrackInput {
    /// A frame from the application.
    Frame(Frame, Instant),
    /// The answer plan placed this track at `index` of the connection's media actor.
    Bind {
        index: usize,
        inbox: Sender<Vec<MediaMsg>>,
    },
    /// The viewer asked for a keyframe.
    KeyframeRequest(KeyframeCause),
}

/// Feeds one track of a peer connection from the application's encoder; see the module doc.
/// Dropping it ends the track's task (the connection then sends nothing more on it).
#[derive(Debug)]
pub struct TrackSender {
    id: usize,
    codec: Codec,
    tx: Sender<TrackInput>,
    /// The next frame's RTP timestamp.
    timestamp: u32,
    /// Clock ticks not yet whole (durations that are not a whole number of ticks).
    remainder_ns: u128,
    framer: Option<RtpFramer>,
}

impl TrackSender {
    pub(crate) fn new(id: usize, codec: Codec, tx: Sender<TrackInput>) -> Self {
        Self {
            id,
            codec,
            tx,
            timestamp: fastrand::u32(..),
            remainder_ns: 0,
            framer: None,
        }
    }

    /// The track's number in this connection (as in [`crate::Event::KeyframeRequest`]).
    pub fn id(&self) -> usize {
        self.id
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Sends one encoded frame lasting `duration`: an H.264 access unit in Annex-B (start
    /// codes; SPS and PPS before each IDR), a VP8 frame, or an Opus packet. Returns `false`
    /// when the frame was dropped because the track's queue is full (the viewer then
    /// waits for a keyframe). Frames before the connection is up are dropped too: a viewer
    /// starts at the cached keyframe.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the connection is gone; an argument error for an empty frame
    /// or an H.264 frame without a NAL unit.
    pub fn write_frame(&mut self, data: &[u8], duration: Duration) -> Result<bool> {
        let timestamp = self.advance(duration);
        let (keyframe, data) = match self.codec {
            Codec::H264 => {
                let mut split = AnnexBSplitter::new(MAX_NAL);
                split.push(data);
                let mut nals = Vec::new();
                while let Some(n) = split.poll() {
                    nals.push(n.map_err(|e| Error::invalid(format!("H.264 frame: {e}")))?);
                }
                nals.extend(split.flush());
                if nals.is_empty() {
                    return Err(Error::invalid(
                        "H.264 frame without a NAL unit (Annex-B start codes expected)",
                    ));
                }
                let idr = nals.iter().any(|n| {
                    n.first()
                        .is_some_and(|h| super::h264::nal_unit_type(*h) == 5)
                });
                (idr, FrameData::Nals(nals))
            }
            Codec::Vp8 => {
                let header = super::vp8::parse_header(data)
                    .map_err(|e| Error::invalid(format!("VP8 frame: {e}")))?;
                (
                    header.keyframe,
                    FrameData::Whole(Bytes::copy_from_slice(data)),
                )
            }
            Codec::Opus => {
                if data.is_empty() {
                    return Err(Error::invalid("empty Opus packet"));
                }
                (true, FrameData::Whole(Bytes::copy_from_slice(data)))
            }
        };
        self.send(Frame {
            timestamp,
            keyframe,
            data,
        })
    }

    /// Sends RTP from an encoder that packetizes itself (GStreamer, ffmpeg `-f rtp`): the
    /// packets are grouped into frames and sent with this connection's own SSRC, sequence
    /// numbers and payload type. Returns `false` when a frame was dropped (full queue).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the connection is gone.
    pub fn write_rtp(&mut self, packet: &[u8]) -> Result<bool> {
        let codec = self.codec;
        let framer = self.framer.get_or_insert_with(|| RtpFramer::new(codec));
        framer.push(Bytes::copy_from_slice(packet));
        let mut frames = Vec::new();
        while let Some(f) = framer.poll() {
            frames.push(f);
        }
        let mut all = true;
        for f in frames {
            all &= self.send(f)?;
        }
        Ok(all)
    }

    fn advance(&mut self, duration: Duration) -> u32 {
        let ts = self.timestamp;
        let ns = duration.as_nanos() * u128::from(self.codec.clock_rate()) + self.remainder_ns;
        self.timestamp = ts.wrapping_add((ns / 1_000_000_000) as u32);
        self.remainder_ns = ns % 1_000_000_000;
        ts
    }

    fn send(&mut self, frame: Frame) -> Result<bool> {
        match self.tx.try_send(TrackInput::Frame(frame, Instant::now())) {
            Ok(()) => Ok(true),
            Err(TrySendError::Full(_)) => Ok(false),
            Err(TrySendError::Closed(_)) => Err(Error::Closed),
        }
    }
}

/// A new track's queue.
pub(crate) fn channel() -> (Sender<TrackInput>, Receiver<TrackInput>) {
    async_channel::bounded(TRACK_QUEUE)
}

/// The track's task: packetizes each frame once and offers it to the media actor; answers
/// keyframe requests from the cached group and tells the application (`on_request`).
pub(crate) async fn run(
    codec: Codec,
    rx: Receiver<TrackInput>,
    mut on_request: impl FnMut(KeyframeCause),
) {
    let mut track = Track::new(codec);
    let mut bound: Option<(usize, Sender<Vec<MediaMsg>>)> = None;
    while let Ok(input) = rx.recv().await {
        match input {
            TrackInput::Frame(frame, arrival) => {
                let f = track.handle_frame(arrival, frame);
                if let Some((index, inbox)) = &bound {
                    // Full: dropped for this connection; its sender sees the gap.
                    if let Err(TrySendError::Closed(_)) =
                        inbox.try_send(vec![MediaMsg::Frame(*index, f)])
                    {
                        return;
                    }
                }
            }
            TrackInput::Bind { index, inbox } => bound = Some((index, inbox)),
            TrackInput::KeyframeRequest(cause) => {
                let frames = track.catch_up(Instant::now());
                if let (Some((index, inbox)), false) = (&bound, frames.is_empty()) {
                    let _ = inbox.try_send(vec![MediaMsg::CatchUp(*index, frames)]);
                }
                on_request(cause);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_timestamped_and_refused_clearly() {
        let (tx, rx) = channel();
        let mut t = TrackSender::new(0, Codec::H264, tx);
        let start = t.timestamp;
        // SPS, PPS and an IDR slice: a keyframe of three NAL units.
        let au = [
            &[0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f][..],
            &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80],
            &[0, 0, 1, 0x65, 0x88, 0x84],
        ]
        .concat();
        assert!(t.write_frame(&au, Duration::from_millis(40)).unwrap());
        assert!(t
            .write_frame(&[0, 0, 1, 0x41, 0x9a], Duration::from_millis(40))
            .unwrap());
        let frames: Vec<Frame> = std::iter::from_fn(|| match rx.try_recv() {
            Ok(TrackInput::Frame(f, _)) => Some(f),
            _ => None,
        })
        .collect();
        assert_eq!(frames.len(), 2);
        assert!(frames[0].keyframe && !frames[1].keyframe);
        assert!(matches!(&frames[0].data, FrameData::Nals(n) if n.len() == 3 && n[2][0] == 0x65));
        assert_eq!(frames[0].timestamp, start);
        // 40 ms at 90 kHz.
        assert_eq!(frames[1].timestamp, start.wrapping_add(3600));
        assert!(t.write_frame(b"no start code", Duration::ZERO).is_err());
        // A full queue drops (false), a closed one is an error.
        let (tx, rx) = async_channel::bounded(1);
        let mut t = TrackSender::new(1, Codec::Opus, tx);
        assert!(t
            .write_frame(&[0xfc, 1], Duration::from_millis(20))
            .unwrap());
        assert!(!t
            .write_frame(&[0xfc, 1], Duration::from_millis(20))
            .unwrap());
        assert!(t.write_frame(&[], Duration::from_millis(20)).is_err());
        drop(rx);
        assert!(matches!(
            t.write_frame(&[0xfc, 1], Duration::from_millis(20)),
            Err(Error::Closed)
        ));
        // VP8: the frame tag says keyframe or not; garbage is refused.
        let (tx, rx) = channel();
        let mut t = TrackSender::new(2, Codec::Vp8, tx);
        let key = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        assert!(t.write_frame(&key, Duration::from_millis(33)).unwrap());
        assert!(t.write_frame(&[0x9d], Duration::from_millis(33)).is_err());
        assert!(matches!(rx.try_recv(), Ok(TrackInput::Frame(f, _)) if f.keyframe));
    }
}
