//! Tracks the remote sends (issue 17): [`TrackReceiver`], handed to the application in
//! [`crate::Event::Track`], and what it reads.
//!
//! The connection's media actor runs one [`super::receiver::Receiver`] per received track
//! (reorder buffer, NACK, PLI, receiver reports, REMB, depacketizing) and offers what comes
//! out to the track's bounded queue with `try_send`: the smolrtc thread never waits for the
//! application. A reader that falls behind loses whole frames (counted in
//! [`ReceiverStats::frames_dropped`]); video then waits for the next keyframe, which the
//! receiver asks the sender for (PLI), so the application never sees a frame that refers to
//! a lost one.
//!
//! # One mode per receiver
//! A receiver delivers either **frames** ([`TrackReceiver::read_frame`] and its `try_` and
//! `_blocking` forms: H.264 access units in Annex-B, VP8 frames, Opus packets) or **RTP**
//! ([`TrackReceiver::read_rtp`]: the packets in sequence order, SRTP removed, RTX unwrapped,
//! duplicates dropped). The first read picks the mode; a read of the other kind afterwards
//! returns `None` (and logs why). Until the first read both are queued.

use super::codec::{Codec, MediaKind};
use crate::sdp::Direction;
use async_channel::{Receiver, Sender, TrySendError};
use bytes::{BufMut, Bytes};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// How [`crate::PeerConnection::add_transceiver`] receives: W3C's `RTCRtpTransceiverInit`
/// (the direction) plus the codecs to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransceiverInit {
    /// Only [`Direction::RecvOnly`]: a track smolrtc sends is added with `add_track`.
    pub direction: Direction,
    /// Codecs to accept, in preference order; empty = every codec of the kind smolrtc
    /// depacketizes (H.264 and VP8 for video, Opus for audio), the offer's order deciding.
    pub codecs: Vec<Codec>,
}

impl From<Direction> for TransceiverInit {
    fn from(direction: Direction) -> Self {
        TransceiverInit {
            direction,
            codecs: Vec::new(),
        }
    }
}

impl TransceiverInit {
    /// Receive a track of the kind in any codec smolrtc depacketizes.
    pub fn recv_only() -> Self {
        Direction::RecvOnly.into()
    }

    /// Receive only in these codecs.
    pub fn with_codecs(codecs: &[Codec]) -> Self {
        TransceiverInit {
            direction: Direction::RecvOnly,
            codecs: codecs.to_vec(),
        }
    }

    /// The codecs accepted for `kind`.
    pub fn codecs_for(&self, kind: MediaKind) -> Vec<Codec> {
        if self.codecs.is_empty() {
            match kind {
                MediaKind::Video => vec![Codec::H264, Codec::Vp8],
                MediaKind::Audio => vec![Codec::Opus],
            }
        } else {
            self.codecs.clone()
        }
    }

    /// A clear error for what `add_transceiver` cannot do.
    pub(crate) fn check(&self, kind: MediaKind) -> crate::error::Result<()> {
        if self.direction != Direction::RecvOnly {
            return Err(crate::Error::invalid(format!(
                "add_transceiver({}, {}): only recvonly; a track smolrtc sends is added with add_track (both of one kind make a sendrecv section)",
                kind.as_str(),
                self.direction
            )));
        }
        if let Some(c) = self.codecs.iter().find(|c| c.kind() != kind) {
            return Err(crate::Error::invalid(format!(
                "add_transceiver({}): {c:?} is not a {} codec",
                kind.as_str(),
                kind.as_str()
            )));
        }
        Ok(())
    }
}

/// Frames or packets waiting for the application at most; beyond, they are dropped.
pub const TRACK_QUEUE: usize = 1024;

/// One received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFrame {
    /// The codec.
    pub codec: Codec,
    /// The sender's RTP timestamp (90 kHz video, 48 kHz Opus).
    pub rtp_timestamp: u32,
    /// Decodable on its own: an H.264 access unit with an IDR slice, a VP8 keyframe; every
    /// Opus packet.
    pub keyframe: bool,
    /// H.264: one access unit in Annex-B (`00 00 00 01` before each NAL unit; parameter
    /// sets kept where they arrived, and the last ones seen put before an IDR that came
    /// without them). VP8: one frame. Opus: one packet.
    pub data: Bytes,
    /// The picture size, when this frame says it (an H.264 SPS in it, a VP8 keyframe).
    pub width_height: Option<(u32, u32)>,
}

/// One received RTP packet, in order, SRTP removed (header extensions and CSRCs dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// The negotiated payload type of the media (RTX already unwrapped).
    pub payload_type: u8,
    /// The sender's sequence number.
    pub sequence_number: u16,
    /// The sender's RTP timestamp.
    pub timestamp: u32,
    /// The sender's SSRC.
    pub ssrc: u32,
    /// The marker bit (last packet of a video frame).
    pub marker: bool,
    /// The payload (payload header included: FU-A, STAP-A, VP8 descriptor).
    pub payload: Bytes,
}

impl RtpPacket {
    /// The packet as plain RTP bytes (a 12-byte header, then the payload), e.g. to hand to
    /// ffmpeg or GStreamer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.payload.len());
        out.put_u8(0x80);
        out.put_u8(self.payload_type & 0x7f | if self.marker { 0x80 } else { 0 });
        out.put_u16(self.sequence_number);
        out.put_u32(self.timestamp);
        out.put_u32(self.ssrc);
        out.extend_from_slice(&self.payload);
        out
    }
}

/// A received track's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// RTP packets received (media and retransmissions, duplicates excluded).
    pub packets: u64,
    /// Payload bytes of those packets.
    pub bytes: u64,
    /// Packets given up on (never arrived, even after NACKs).
    pub lost: u64,
    /// Packets recovered by retransmission after a NACK.
    pub recovered: u64,
    /// NACK packets sent.
    pub nacks_sent: u64,
    /// PLIs sent.
    pub plis_sent: u64,
    /// Frames delivered to the application (or RTP packets, in RTP mode).
    pub frames: u64,
    /// Frames dropped: with a hole, waiting for a keyframe, or a full queue.
    pub frames_dropped: u64,
    /// Packets with a payload type of neither the media nor its RTX, dropped.
    pub wrong_payload_type: u64,
    /// Times the sender's SSRC changed.
    pub ssrc_changes: u64,
    /// Packets that could not be read (truncated, bad payload header), dropped.
    pub malformed: u64,
    /// Duplicates and packets older than the reorder window, dropped.
    pub late: u64,
}

/// The stats cells the media actor writes and the handle reads.
#[derive(Debug, Default)]
pub(crate) struct SharedStats([AtomicU64; 12]);

impl SharedStats {
    pub(crate) fn store(&self, s: &ReceiverStats) {
        let v = [
            s.packets,
            s.bytes,
            s.lost,
            s.recovered,
            s.nacks_sent,
            s.plis_sent,
            s.frames,
            s.frames_dropped,
            s.wrong_payload_type,
            s.ssrc_changes,
            s.malformed,
            s.late,
        ];
        for (cell, v) in self.0.iter().zip(v) {
            cell.store(v, Ordering::Relaxed);
        }
    }

    fn load(&self) -> ReceiverStats {
        let v: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        ReceiverStats {
            packets: v[0],
            bytes: v[1],
            lost: v[2],
            recovered: v[3],
            nacks_sent: v[4],
            plis_sent: v[5],
            frames: v[6],
            frames_dropped: v[7],
            wrong_payload_type: v[8],
            ssrc_changes: v[9],
            malformed: v[10],
            late: v[11],
        }
    }
}

const MODE_UNSET: u8 = 0;
const MODE_FRAMES: u8 = 1;
const MODE_RTP: u8 = 2;

/// What the media actor hands a track's queue.
#[derive(Debug)]
pub(crate) enum Delivery {
    Frame(ReceivedFrame),
    Rtp(RtpPacket),
}

/// The media actor's end of a received track.
#[derive(Debug, Clone)]
pub(crate) struct TrackOutlet {
    tx: Sender<Delivery>,
    mode: Arc<AtomicU8>,
    keyframe: Arc<AtomicBool>,
    pub(crate) stats: Arc<SharedStats>,
}

/// What [`TrackOutlet::offer_frame`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    Taken,
    /// The queue is full (the application is behind).
    Full,
    /// Not wanted in this mode, or nobody reads any more.
    Unwanted,
}

impl TrackOutlet {
    /// Whether the application reads frames (or has not chosen yet).
    pub(crate) fn wants_frames(&self) -> bool {
        self.mode.load(Ordering::Relaxed) != MODE_RTP && !self.tx.is_closed()
    }

    /// Whether the application reads RTP (or has not chosen yet).
    pub(crate) fn wants_rtp(&self) -> bool {
        self.mode.load(Ordering::Relaxed) != MODE_FRAMES && !self.tx.is_closed()
    }

    pub(crate) fn offer_frame(&self, f: ReceivedFrame) -> Offered {
        if !self.wants_frames() {
            return Offered::Unwanted;
        }
        match self.tx.try_send(Delivery::Frame(f)) {
            Ok(()) => Offered::Taken,
            Err(TrySendError::Full(_)) => Offered::Full,
            Err(TrySendError::Closed(_)) => Offered::Unwanted,
        }
    }

    pub(crate) fn offer_rtp(&self, p: RtpPacket) -> Offered {
        if !self.wants_rtp() {
            return Offered::Unwanted;
        }
        match self.tx.try_send(Delivery::Rtp(p)) {
            Ok(()) => Offered::Taken,
            Err(TrySendError::Full(_)) => Offered::Full,
            Err(TrySendError::Closed(_)) => Offered::Unwanted,
        }
    }

    /// Whether the application asked for a keyframe since the last call.
    pub(crate) fn take_keyframe_request(&self) -> bool {
        self.keyframe.swap(false, Ordering::Relaxed)
    }

    /// Ends the track: the application's reads return `None` once the queue is empty.
    pub(crate) fn close(&self) {
        self.tx.close();
    }
}

/// Identity of a received track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrackInfo {
    pub(crate) id: usize,
    pub(crate) mid: String,
    pub(crate) codec: Codec,
}

/// A track's two ends: the media actor's outlet and the application's receiver.
pub(crate) fn track(info: TrackInfo) -> (TrackOutlet, TrackReceiver) {
    let (tx, rx) = async_channel::bounded(TRACK_QUEUE);
    let mode = Arc::new(AtomicU8::new(MODE_UNSET));
    let stats = Arc::new(SharedStats::default());
    let keyframe = Arc::new(AtomicBool::new(false));
    (
        TrackOutlet {
            tx,
            mode: mode.clone(),
            keyframe: keyframe.clone(),
            stats: stats.clone(),
        },
        TrackReceiver {
            info,
            rx,
            mode,
            keyframe,
            stats,
            pending: VecDeque::new(),
        },
    )
}

/// A track the remote sends; see the module doc. `Send`: read it from any thread.
pub struct TrackReceiver {
    info: TrackInfo,
    rx: Receiver<Delivery>,
    mode: Arc<AtomicU8>,
    keyframe: Arc<AtomicBool>,
    stats: Arc<SharedStats>,
    pending: VecDeque<Delivery>,
}

impl fmt::Debug for TrackReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackReceiver")
            .field("id", &self.info.id)
            .field("mid", &self.info.mid)
            .field("codec", &self.info.codec)
            .finish()
    }
}

impl TrackReceiver {
    /// The track's number among this connection's received tracks (0, 1, ... in the order
    /// of their sections).
    pub fn id(&self) -> usize {
        self.info.id
    }

    /// The mid of its section.
    pub fn mid(&self) -> &str {
        &self.info.mid
    }

    /// Video or audio.
    pub fn kind(&self) -> MediaKind {
        self.info.codec.kind()
    }

    /// The negotiated codec.
    pub fn codec(&self) -> Codec {
        self.info.codec
    }

    /// The RTP clock rate (90000 video, 48000 Opus).
    pub fn clock_rate(&self) -> u32 {
        self.info.codec.clock_rate()
    }

    /// Counters, as of the media actor's last input.
    pub fn stats(&self) -> ReceiverStats {
        self.stats.load()
    }

    /// Asks the sender for a keyframe (a PLI, when negotiated; at most every 500 ms), e.g.
    /// when a new file or decoder starts. Sent with the media actor's next input (the next
    /// packet). Video only; harmless for audio.
    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }

    /// Picks `mode`; false when the other one was picked already.
    fn choose(&self, mode: u8) -> bool {
        match self
            .mode
            .compare_exchange(MODE_UNSET, mode, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => true,
            Err(m) if m == mode => true,
            Err(_) => {
                log::warn!(
                    "track {}: frames and RTP were both read; a receiver delivers one of them (the first read's)",
                    self.info.id
                );
                false
            }
        }
    }

    /// The next frame; `None` once the track ended (the connection closed) or when this
    /// receiver reads RTP.
    pub async fn read_frame(&mut self) -> Option<ReceivedFrame> {
        if !self.choose(MODE_FRAMES) {
            return None;
        }
        loop {
            if let Some(f) = self.take_frame() {
                return Some(f);
            }
            let d = self.rx.recv().await.ok()?;
            self.pending.push_back(d);
        }
    }

    /// The next frame if one is there now.
    pub fn try_read_frame(&mut self) -> Option<ReceivedFrame> {
        if !self.choose(MODE_FRAMES) {
            return None;
        }
        loop {
            if let Some(f) = self.take_frame() {
                return Some(f);
            }
            self.pending.push_back(self.rx.try_recv().ok()?);
        }
    }

    /// Blocking [`TrackReceiver::read_frame`], for threads without an executor.
    pub fn read_frame_blocking(&mut self) -> Option<ReceivedFrame> {
        futures_lite::future::block_on(self.read_frame())
    }

    /// The next RTP packet, in sequence order; `None` once the track ended or when this
    /// receiver reads frames.
    pub async fn read_rtp(&mut self) -> Option<RtpPacket> {
        if !self.choose(MODE_RTP) {
            return None;
        }
        loop {
            if let Some(p) = self.take_rtp() {
                return Some(p);
            }
            let d = self.rx.recv().await.ok()?;
            self.pending.push_back(d);
        }
    }

    /// The next RTP packet if one is there now.
    pub fn try_read_rtp(&mut self) -> Option<RtpPacket> {
        if !self.choose(MODE_RTP) {
            return None;
        }
        loop {
            if let Some(p) = self.take_rtp() {
                return Some(p);
            }
            self.pending.push_back(self.rx.try_recv().ok()?);
        }
    }

    /// Blocking [`TrackReceiver::read_rtp`].
    pub fn read_rtp_blocking(&mut self) -> Option<RtpPacket> {
        futures_lite::future::block_on(self.read_rtp())
    }

    /// The first queued frame; the other kind, queued before the mode was chosen, is
    /// dropped.
    fn take_frame(&mut self) -> Option<ReceivedFrame> {
        while let Some(d) = self.pending.pop_front() {
            if let Delivery::Frame(f) = d {
                return Some(f);
            }
        }
        None
    }

    fn take_rtp(&mut self) -> Option<RtpPacket> {
        while let Some(d) = self.pending.pop_front() {
            if let Delivery::Rtp(p) = d {
                return Some(p);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ts: u32) -> ReceivedFrame {
        ReceivedFrame {
            codec: Codec::Opus,
            rtp_timestamp: ts,
            keyframe: true,
            data: Bytes::from_static(&[0xfc, 1]),
            width_height: None,
        }
    }

    #[test]
    fn one_mode_per_receiver_and_none_once_closed() {
        let (out, mut rx) = track(TrackInfo {
            id: 3,
            mid: "a".into(),
            codec: Codec::Opus,
        });
        assert_eq!((rx.id(), rx.mid(), rx.clock_rate()), (3, "a", 48000));
        assert_eq!(out.offer_frame(frame(1)), Offered::Taken);
        let p = RtpPacket {
            payload_type: 111,
            sequence_number: 7,
            timestamp: 1,
            ssrc: 9,
            marker: false,
            payload: Bytes::from_static(&[0xfc, 1]),
        };
        assert_eq!(out.offer_rtp(p.clone()), Offered::Taken);
        assert_eq!(rx.try_read_frame(), Some(frame(1)));
        // Frames were chosen: RTP is no longer queued, and reading it is refused.
        assert_eq!(out.offer_rtp(p.clone()), Offered::Unwanted);
        assert_eq!(rx.try_read_rtp(), None);
        assert_eq!(rx.try_read_frame(), None);
        assert_eq!(out.offer_frame(frame(2)), Offered::Taken);
        out.stats.store(&ReceiverStats {
            frames: 2,
            ..Default::default()
        });
        assert_eq!(rx.stats().frames, 2);
        out.close();
        assert_eq!(rx.read_frame_blocking(), Some(frame(2)));
        assert_eq!(rx.read_frame_blocking(), None);
        let b = p.to_bytes();
        assert_eq!(&b[..4], &[0x80, 111, 0, 7]);
        assert_eq!(b.len(), 14);
    }
}
