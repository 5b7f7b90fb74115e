//! One source to N viewers: the source side of a track ([`Track`]) and an in-process
//! fan-out ([`Fanout`]: a track and its viewers' [`Sender`]s in one place).
//!
//! A [`Track`] packetizes each frame once into an `Arc<PacketizedFrame>` that every viewer
//! shares, caches the current group of pictures (the last keyframe and the frames since) to
//! answer keyframe requests at once ([`Track::catch_up`]), and keeps the stream's stats
//! (codec, resolution from the SPS or VP8 keyframe header, frame rate and bitrate measured
//! over the last two seconds, viewer count) for `GET /api/streams`.
//!
//! In the service the track lives in the source's task and each viewer's sender inside its
//! peer connection; frames go between them through bounded channels, and a frame a full
//! channel could not take shows up at the sender as a gap in the frame numbers (it then
//! waits for a keyframe and asks for one). [`Fanout`] wires the same pieces directly, for
//! library use and tests.

use super::codec::{Codec, ProfileLevelId};
use super::h264::{nal_type, nal_unit_type, Sps};
use super::packetize::{Frame, FrameData, PacketizedFrame, Packetizer};
use super::sender::{Sender, SenderConfig, SenderEvent, Transmit};
use super::vp8;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most frames in the catch-up cache (10 s at 30 fps); a longer group of pictures is not
/// cached, and a joining viewer waits for the next keyframe.
pub const MAX_CATCH_UP_FRAMES: usize = 300;
/// Most bytes in the catch-up cache: 4 MiB (a 2 s group at 16 Mbit/s).
pub const MAX_CATCH_UP_BYTES: usize = 4 * 1024 * 1024;
/// The window over which frame rate and bitrate are measured.
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// Keyframe requests passed to the source at most this often.
const SOURCE_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// A track's figures, as `GET /api/streams` lists them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackStats {
    /// `H264`, `VP8` or `opus`.
    pub codec: &'static str,
    /// Picture width from the latest SPS or VP8 keyframe.
    pub width: Option<u32>,
    /// Picture height.
    pub height: Option<u32>,
    /// H.264 `profile-level-id` of the latest SPS.
    pub profile_level_id: Option<String>,
    /// Frames per second over the last two seconds.
    pub fps: f64,
    /// Payload bits per second over the last two seconds.
    pub bitrate: u64,
    /// Frames since the start.
    pub frames: u64,
    /// Keyframes since the start.
    pub keyframes: u64,
    /// Viewers now.
    pub viewers: usize,
}

/// The source side of one track; see the module doc.
#[derive(Debug)]
pub struct Track {
    packetizer: Packetizer,
    gop: Vec<Arc<PacketizedFrame>>,
    gop_bytes: usize,
    size: Option<(u32, u32)>,
    sps: Option<Arc<Sps>>,
    window: VecDeque<(Instant, usize)>,
    frames: u64,
    keyframes: u64,
    viewers: usize,
    last_source_request: Option<Instant>,
    source_request: bool,
}

impl Track {
    /// A track of `codec`.
    pub fn new(codec: Codec) -> Track {
        Track {
            packetizer: Packetizer::new(codec),
            gop: Vec::new(),
            gop_bytes: 0,
            size: None,
            sps: None,
            window: VecDeque::new(),
            frames: 0,
            keyframes: 0,
            viewers: 0,
            last_source_request: None,
            source_request: false,
        }
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.packetizer.codec()
    }

    /// The `profile-level-id` of the latest SPS (for the SDP answer).
    pub fn profile_level_id(&self) -> Option<ProfileLevelId> {
        self.sps.as_ref().map(|s| s.profile_level_id)
    }

    /// Packetizes a frame from the source, once for all viewers.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) -> Arc<PacketizedFrame> {
        if frame.keyframe {
            self.learn(&frame.data);
        }
        let f = Arc::new(self.packetizer.packetize(now, frame));
        self.frames += 1;
        if f.keyframe {
            self.keyframes += 1;
        }
        let bytes = f.bytes();
        while self
            .window
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > RATE_WINDOW)
            || self.window.len() >= 1024
        {
            self.window.pop_front();
        }
        self.window.push_back((now, bytes));
        if self.codec() != Codec::Opus && !f.payloads.is_empty() {
            if f.keyframe {
                self.gop.clear();
                self.gop_bytes = 0;
            }
            if f.keyframe || !self.gop.is_empty() {
                self.gop_bytes += bytes;
                self.gop.push(f.clone());
                if self.gop.len() > MAX_CATCH_UP_FRAMES || self.gop_bytes > MAX_CATCH_UP_BYTES {
                    self.gop.clear();
                    self.gop_bytes = 0;
                }
            }
        }
        f
    }

    /// Reads the picture size (and SPS) from a keyframe.
    fn learn(&mut self, data: &FrameData) {
        match (self.codec(), data) {
            (Codec::H264, FrameData::Nals(nals)) => {
                for n in nals {
                    if n.first().map(|b| nal_unit_type(*b)) == Some(nal_type::SPS) {
                        self.set_sps(n);
                    }
                }
            }
            (Codec::H264, FrameData::Payloads(payloads)) => {
                for p in payloads {
                    for n in h264_nals_in_payload(&p.to_vec()) {
                        if n.first().map(|b| nal_unit_type(*b)) == Some(nal_type::SPS) {
                            self.set_sps(n);
                        }
                    }
                }
            }
            (Codec::Vp8, FrameData::Whole(b)) => self.set_vp8(b),
            (Codec::Vp8, FrameData::Payloads(p)) => {
                if let Some(first) = p.first() {
                    let v = first.to_vec();
                    if let Some(off) = vp8_descriptor_len(&v) {
                        self.set_vp8(&v[off..]);
                    }
                }
            }
            _ => {}
        }
    }

    fn set_sps(&mut self, nal: &[u8]) {
        if let Ok(s) = Sps::parse(nal) {
            self.size = Some((s.width, s.height));
            self.sps = Some(Arc::new(s));
        }
    }

    fn set_vp8(&mut self, frame: &[u8]) {
        if let Ok(vp8::Vp8Header {
            size: Some((w, h)), ..
        }) = vp8::parse_header(frame)
        {
            self.size = Some((u32::from(w), u32::from(h)));
        }
    }

    /// The cached last keyframe and the frames since (empty when none is cached): what a
    /// joining viewer, or one that sent a PLI, gets at once. An empty answer also flags a
    /// keyframe request for the source ([`Track::poll_source_keyframe_request`]).
    pub fn catch_up(&mut self, now: Instant) -> Vec<Arc<PacketizedFrame>> {
        if self.gop.is_empty() {
            self.request_source_keyframe(now);
        }
        self.gop.clone()
    }

    /// Asks the source for a keyframe (at most once per second).
    pub fn request_source_keyframe(&mut self, now: Instant) {
        if self
            .last_source_request
            .is_none_or(|t| now.saturating_duration_since(t) >= SOURCE_REQUEST_INTERVAL)
        {
            self.last_source_request = Some(now);
            self.source_request = true;
        }
    }

    /// Whether the source should make a keyframe now (an encoder the embedder drives, an
    /// RTP source that takes PLI); cleared by reading.
    pub fn poll_source_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.source_request)
    }

    /// Counts a viewer in.
    pub fn add_viewer(&mut self) {
        self.viewers += 1;
    }

    /// Counts a viewer out.
    pub fn remove_viewer(&mut self) {
        self.viewers = self.viewers.saturating_sub(1);
    }

    /// The track's figures at `now`.
    pub fn stats(&self, now: Instant) -> TrackStats {
        let recent: Vec<&(Instant, usize)> = self
            .window
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= RATE_WINDOW)
            .collect();
        let bytes: usize = recent.iter().map(|(_, b)| b).sum();
        let secs = RATE_WINDOW.as_secs_f64();
        TrackStats {
            codec: self.codec().encoding_name(),
            width: self.size.map(|s| s.0),
            height: self.size.map(|s| s.1),
            profile_level_id: self.profile_level_id().map(|p| p.to_string()),
            fps: recent.len() as f64 / secs,
            bitrate: (bytes as f64 * 8.0 / secs) as u64,
            frames: self.frames,
            keyframes: self.keyframes,
            viewers: self.viewers,
        }
    }
}

/// The NAL units in one H.264 RTP payload: a single unit, or those of a STAP-A; none for a
/// fragment. Never an empty one.
pub fn h264_nals_in_payload(p: &[u8]) -> Vec<&[u8]> {
    let Some(&h) = p.first() else {
        return vec![];
    };
    match nal_unit_type(h) {
        nal_type::STAP_A => {
            let mut out = Vec::new();
            let mut i = 1;
            while i + 2 <= p.len() {
                let n = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                let Some(nal) = p.get(i + 2..i + 2 + n) else {
                    break;
                };
                if !nal.is_empty() {
                    out.push(nal);
                }
                i += 2 + n;
            }
            out
        }
        1..=23 => vec![p],
        _ => vec![],
    }
}

/// The length of a VP8 payload descriptor (RFC 7741 §4.2), `None` if the payload is shorter.
pub fn vp8_descriptor_len(p: &[u8]) -> Option<usize> {
    let b0 = *p.first()?;
    let mut len = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(1)?;
        len += 1;
        if x & 0x80 != 0 {
            // I: PictureID, 7 or 15 bits.
            len += if *p.get(len)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            len += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            len += 1; // T or K: TID/Y/KEYIDX
        }
    }
    (p.len() >= len).then_some(len)
}

/// Names a viewer of a [`Fanout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewerId(pub u64);

/// A track and its viewers' senders in one place; see the module doc.
#[derive(Debug)]
pub struct Fanout {
    track: Track,
    viewers: Vec<(ViewerId, Sender)>,
    next_id: u64,
}

impl Fanout {
    /// A fan-out of a `codec` source with no viewers.
    pub fn new(codec: Codec) -> Fanout {
        Fanout {
            track: Track::new(codec),
            viewers: Vec::new(),
            next_id: 0,
        }
    }

    /// The source side.
    pub fn track(&self) -> &Track {
        &self.track
    }

    /// The source side, to read [`Track::poll_source_keyframe_request`].
    pub fn track_mut(&mut self) -> &mut Track {
        &mut self.track
    }

    /// A viewer's sender.
    pub fn sender(&self, id: ViewerId) -> Option<&Sender> {
        self.viewers.iter().find(|(v, _)| *v == id).map(|(_, s)| s)
    }

    /// Adds a viewer; a video viewer gets the cached group of pictures at once.
    pub fn add_viewer(&mut self, now: Instant, cfg: SenderConfig) -> ViewerId {
        let id = ViewerId(self.next_id);
        self.next_id += 1;
        self.viewers.push((id, Sender::new(cfg)));
        self.track.add_viewer();
        self.serve(now);
        id
    }

    /// Removes a viewer.
    pub fn remove_viewer(&mut self, id: ViewerId) {
        let before = self.viewers.len();
        self.viewers.retain(|(v, _)| *v != id);
        if self.viewers.len() < before {
            self.track.remove_viewer();
        }
    }

    /// A frame from the source: packetized once, queued for every viewer.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        let f = self.track.handle_frame(now, frame);
        for (_, s) in &mut self.viewers {
            s.handle_frame(now, &f);
        }
        self.serve(now);
    }

    /// RTCP from one viewer.
    pub fn handle_rtcp(&mut self, now: Instant, id: ViewerId, data: &[u8]) {
        if let Some((_, s)) = self.viewers.iter_mut().find(|(v, _)| *v == id) {
            s.handle_rtcp(now, data);
        }
        self.serve(now);
    }

    /// Time passed (sender reports).
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        for (_, s) in &mut self.viewers {
            s.handle_timeout(now, wall);
        }
    }

    /// The earliest timeout of the senders.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.viewers
            .iter()
            .filter_map(|(_, s)| s.poll_timeout())
            .min()
    }

    /// The next packet for viewer `id` (see [`Sender::poll_transmit`]).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        id: ViewerId,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let (_, s) = self.viewers.iter_mut().find(|(v, _)| *v == id)?;
        s.poll_transmit(now, buf)
    }

    /// Answers the senders' keyframe requests from the track's cache.
    fn serve(&mut self, now: Instant) {
        for (_, s) in &mut self.viewers {
            while let Some(SenderEvent::KeyframeRequest(_)) = s.poll_event() {
                let frames = self.track.catch_up(now);
                s.handle_catch_up(now, &frames);
            }
        }
    }
}

#[cfg(test)]
mod tests;
