//! The per-viewer sender: one track to one viewer, sans-IO.
//!
//! A [`Sender`] takes the source's shared [`PacketizedFrame`]s and turns them into this
//! viewer's plaintext RTP and RTCP: its own SSRC, sequence numbers, timestamp offset and
//! negotiated payload type. It keeps a bounded history for NACK (answered with RTX, RFC 4588,
//! when negotiated, else by sending the packet again), asks for a keyframe on PLI, FIR, a
//! missed frame or a queue overflow ([`SenderEvent::KeyframeRequest`]), writes sender
//! reports with the NTP/RTP mapping of the newest frame, and reads receiver reports (loss,
//! jitter, RTT from LSR/DLSR).
//!
//! # Starting at a keyframe, and catching up
//! A video viewer starts waiting for a keyframe: frames before one are dropped, so no
//! decoder ever starts mid-GOP. Its first event is a keyframe request ([`KeyframeCause::Join`]);
//! the stream answers with [`Sender::handle_catch_up`]: its cached last keyframe (SPS/PPS
//! first) and the frames since, which this sender queues at once with timestamps one tick
//! apart after what the viewer already has, then carries on with the live frames. The
//! viewer decodes the whole group at once and shows the live picture: time to first frame
//! does not depend on the source's keyframe interval, and nothing is decoded against a
//! missing reference. A PLI or FIR is answered the same way. The keyframe and
//! [`CATCH_UP_BURST`] bytes go at once, the rest of the catch-up at [`CATCH_UP_SPEEDUP`]
//! times the group's bit rate (at least [`CATCH_UP_MIN_RATE`]): [`Sender::poll_timeout`]
//! says when more may go.
//!
//! # A slow viewer
//! Packets wait in a queue bounded by [`SenderConfig::queue_limit`] until the owner polls
//! them. A frame that does not fit empties the queue and the viewer waits for the next
//! keyframe (and asks for one): a slow viewer loses pictures, never delays the source or
//! the other viewers, and never holds unbounded memory. A missed frame (a gap in
//! [`PacketizedFrame::index`], as when the channel that brings frames was full) is treated
//! the same way.
//!
//! # Driving it
//! Inputs: [`Sender::handle_frame`], [`Sender::handle_catch_up`], [`Sender::handle_rtcp`],
//! [`Sender::handle_timeout`]. Outputs, drained after every input: [`Sender::poll_event`],
//! [`Sender::poll_transmit`] (RTCP first, then retransmissions, then media), and
//! [`Sender::poll_timeout`] for the next sender report. Time is always passed in.

use super::codec::Codec;
use super::negotiate::{Feedback, Negotiated};
use super::packetize::{PacketizedFrame, Payload, RTP_HEADER_LEN};
use super::rtcp::{self, ntp, ntp_mid32};
use bytes::Bytes;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most packets kept for retransmission per viewer: 1024, about a second of a 10 Mbit/s
/// stream. Payloads are shared with the source, so the cost is ~64 bytes each.
pub const HISTORY_PACKETS: usize = 1024;
/// Packets older than this leave the history even below [`HISTORY_PACKETS`]: a NACK comes
/// within a round trip or two, and the history's memory follows the stream's packet rate
/// (a 200 kbit/s viewer keeps a few dozen packets, not 1024 slots).
pub const HISTORY_AGE: Duration = Duration::from_secs(1);
/// Packets that may wait to be sent per viewer before it is considered slow: 4096, enough
/// for a catch-up burst of a ~4 MB group of pictures.
pub const QUEUE_PACKETS: usize = 4096;
/// Interval of sender reports.
pub const SR_INTERVAL: Duration = Duration::from_secs(1);
/// Keyframe requests from one viewer closer than this are answered once (a PLI sent again
/// before the answer arrived asks for nothing new).
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);
/// A catch-up goes out at this multiple of its group's own bit rate (a 10 s group reaches
/// live in about 1.25 s)...
pub const CATCH_UP_SPEEDUP: f64 = 8.0;
/// ...but at least this many bytes per second (10 Mbit/s)...
pub const CATCH_UP_MIN_RATE: f64 = 1_250_000.0;
/// ...after its keyframe and this many bytes more at once: a group sent in one burst
/// overflowed Firefox's socket on loopback (130 packets of a 110 KB catch-up lost).
pub const CATCH_UP_BURST: f64 = 64.0 * 1024.0;
/// Sequence numbers waiting for retransmission at once; NACKs beyond it are dropped.
const MAX_PENDING_RETRANSMITS: usize = 1024;
/// Sender reports remembered for RTT computation.
const SR_MEMORY: usize = 8;

/// How a sender is set up; see [`SenderConfig::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// The codec.
    pub codec: Codec,
    /// Media SSRC.
    pub ssrc: u32,
    /// Media payload type.
    pub pt: u8,
    /// RTX payload type and SSRC, when RTX was negotiated.
    pub rtx: Option<(u8, u32)>,
    /// Negotiated feedback; NACKs, PLIs and FIRs that were not negotiated are ignored.
    pub feedback: Feedback,
    /// RTCP CNAME (one per peer connection, so audio and video of one viewer are grouped).
    pub cname: String,
    /// First sequence number (random, RFC 3550 §5.1).
    pub initial_seq: u16,
    /// First RTP timestamp (random).
    pub initial_timestamp: u32,
    /// See [`QUEUE_PACKETS`].
    pub queue_limit: usize,
    /// See [`SR_INTERVAL`].
    pub sr_interval: Duration,
}

impl SenderConfig {
    /// A configuration for a negotiated track. `seed` supplies the random initial sequence
    /// number and timestamp (callers pass a random number; tests a fixed one).
    pub fn new(
        negotiated: &Negotiated,
        ssrc: u32,
        rtx_ssrc: u32,
        cname: &str,
        seed: u64,
    ) -> SenderConfig {
        SenderConfig {
            codec: negotiated.codec,
            ssrc,
            pt: negotiated.pt,
            rtx: negotiated.rtx_pt.map(|pt| (pt, rtx_ssrc)),
            feedback: negotiated.feedback,
            cname: cname.to_owned(),
            initial_seq: (seed >> 48) as u16,
            initial_timestamp: seed as u32,
            queue_limit: QUEUE_PACKETS,
            sr_interval: SR_INTERVAL,
        }
    }
}

/// Why a sender asks for a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeCause {
    /// The viewer just joined.
    Join,
    /// The viewer sent a PLI.
    Pli,
    /// The viewer sent a FIR.
    Fir,
    /// Frames were missed before reaching this sender.
    Gap,
    /// The viewer's queue overflowed.
    Overflow,
}

/// What a sender tells its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderEvent {
    /// Answer with [`Sender::handle_catch_up`] (the stream's cached group of pictures), and
    /// ask the source for a keyframe if it can make one.
    KeyframeRequest(KeyframeCause),
}

/// What [`Sender::poll_transmit`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// An RTP packet (protect with SRTP's RTP transform).
    Rtp,
    /// A compound RTCP packet (protect with SRTCP).
    Rtcp,
}

/// Counters and the viewer's latest reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SenderStats {
    /// RTP packets sent, retransmissions excluded.
    pub packets_sent: u64,
    /// Payload bytes sent, retransmissions excluded.
    pub payload_bytes: u64,
    /// Frames queued for sending.
    pub frames_sent: u64,
    /// Frames dropped: waiting for a keyframe, or an overflowing queue.
    pub frames_dropped: u64,
    /// Times the queue overflowed.
    pub overflows: u64,
    /// Catch-ups (cached keyframe and the frames since) queued.
    pub catch_ups: u64,
    /// NACK packets received.
    pub nacks: u64,
    /// Packets retransmitted.
    pub retransmits: u64,
    /// NACKed packets no longer (or never) in the history.
    pub retransmits_missed: u64,
    /// PLIs received.
    pub plis: u64,
    /// FIRs received (new command sequence numbers only).
    pub firs: u64,
    /// RTCP packets that could not be read.
    pub rtcp_errors: u64,
    /// Sender reports sent.
    pub srs: u64,
    /// Round-trip time from the latest report that carried LSR/DLSR.
    pub rtt: Option<Duration>,
    /// Fraction lost in the latest report (0..=1).
    pub fraction_lost: f32,
    /// Cumulative packets lost in the latest report.
    pub cumulative_lost: u32,
    /// Interarrival jitter in the latest report, in seconds.
    pub jitter: f64,
    /// The viewer's REMB estimate, bits per second.
    pub remb: Option<f32>,
}

#[derive(Debug, Clone)]
struct Queued {
    payload: Payload,
    timestamp: u32,
    marker: bool,
}

#[derive(Debug, Clone)]
struct Sent {
    seq: u16,
    timestamp: u32,
    marker: bool,
    payload: Payload,
    /// Milliseconds since the sender's first packet ([`Sender::ms`]): a history slot stays
    /// as small as the fixed 1024-slot ring it replaced (~64 bytes).
    sent_ms: u32,
    resent_ms: Option<u32>,
}

/// A token bucket over the catch-up's packets at the front of the queue.
#[derive(Debug, Clone)]
struct Pace {
    /// Catch-up packets still queued.
    left: usize,
    /// Bytes per second.
    rate: f64,
    /// Bytes that may go now, as of `at`, at most `cap`.
    tokens: f64,
    cap: f64,
    at: Instant,
}

impl Pace {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.cap);
        self.at = self.at.max(now);
    }

    /// When `len` bytes may go.
    fn due(&self, len: f64) -> Instant {
        let wait = ((len - self.tokens).max(0.0) / self.rate).min(1.0);
        self.at + Duration::from_secs_f64(wait) + Duration::from_micros(1)
    }
}

/// One track to one viewer; see the module doc.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    seq: u16,
    rtx_seq: u16,
    offset: u32,
    started: bool,
    last_ts: u32,
    /// (this viewer's timestamp, arrival) of the newest frame: the SR's NTP/RTP anchor.
    anchor: Option<(u32, Instant)>,
    awaiting_keyframe: bool,
    last_index: Option<u64>,
    queue: VecDeque<Queued>,
    pace: Option<Pace>,
    retransmit: VecDeque<u16>,
    /// Packets sent, oldest first, with consecutive sequence numbers.
    history: VecDeque<Sent>,
    /// The time [`Sender::ms`] counts from.
    epoch: Option<Instant>,
    rtcp_out: VecDeque<Vec<u8>>,
    events: VecDeque<SenderEvent>,
    next_sr: Option<Instant>,
    srs: VecDeque<(u32, Instant)>,
    last_request: Option<Instant>,
    last_fir_seq: Option<u8>,
    stats: SenderStats,
}

impl Sender {
    /// A sender for a viewer that joins now. A video sender starts waiting for a keyframe
    /// and with a [`KeyframeCause::Join`] request queued.
    pub fn new(cfg: SenderConfig) -> Sender {
        let video = cfg.codec != Codec::Opus;
        let mut events = VecDeque::new();
        if video {
            events.push_back(SenderEvent::KeyframeRequest(KeyframeCause::Join));
        }
        Sender {
            seq: cfg.initial_seq,
            rtx_seq: cfg.initial_seq ^ 0x5555,
            offset: 0,
            started: false,
            last_ts: cfg.initial_timestamp,
            anchor: None,
            awaiting_keyframe: video,
            last_index: None,
            queue: VecDeque::new(),
            pace: None,
            retransmit: VecDeque::new(),
            history: VecDeque::new(),
            epoch: None,
            rtcp_out: VecDeque::new(),
            events,
            next_sr: None,
            srs: VecDeque::new(),
            last_request: None,
            last_fir_seq: None,
            stats: SenderStats::default(),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    /// Counters and the latest reports.
    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }

    /// Whether the sender drops frames until a keyframe.
    pub fn awaiting_keyframe(&self) -> bool {
        self.awaiting_keyframe
    }

    /// Packets waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn is_video(&self) -> bool {
        self.cfg.codec != Codec::Opus
    }

    fn request_keyframe(&mut self, now: Instant, cause: KeyframeCause) {
        if cause != KeyframeCause::Join {
            if let Some(t) = self.last_request {
                if now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL {
                    return;
                }
            }
        }
        self.last_request = Some(now);
        self.events.push_back(SenderEvent::KeyframeRequest(cause));
    }

    /// A new frame of the source.
    pub fn handle_frame(&mut self, now: Instant, frame: &PacketizedFrame) {
        if let Some(last) = self.last_index {
            if frame.index <= last {
                return; // already had it (in a catch-up)
            }
            if frame.index > last + 1 && self.is_video() && !frame.keyframe {
                self.stats.frames_dropped += frame.index - last - 1;
                self.awaiting_keyframe = true;
                self.request_keyframe(now, KeyframeCause::Gap);
            }
        }
        self.last_index = Some(frame.index);
        if frame.payloads.is_empty() {
            return;
        }
        if self.awaiting_keyframe && !frame.keyframe {
            self.stats.frames_dropped += 1;
            return;
        }
        if self.queue.len() + frame.payloads.len() > self.cfg.queue_limit {
            self.stats.overflows += 1;
            self.stats.frames_dropped += 1;
            self.queue.clear();
            self.pace = None;
            if self.is_video() {
                self.awaiting_keyframe = true;
                self.request_keyframe(now, KeyframeCause::Overflow);
                if !frame.keyframe || frame.payloads.len() > self.cfg.queue_limit {
                    return;
                }
            }
        }
        self.awaiting_keyframe = false;
        if !self.started {
            self.offset = self.cfg.initial_timestamp.wrapping_sub(frame.timestamp);
            self.started = true;
        }
        let ts = frame.timestamp.wrapping_add(self.offset);
        self.enqueue(frame, ts);
        self.anchor = Some((ts, frame.arrival));
        self.last_ts = ts;
        if self.next_sr.is_none() {
            self.next_sr = Some(now);
        }
    }

    fn enqueue(&mut self, frame: &PacketizedFrame, ts: u32) {
        let n = frame.payloads.len();
        for (i, p) in frame.payloads.iter().enumerate() {
            self.queue.push_back(Queued {
                payload: p.clone(),
                timestamp: ts,
                marker: frame.marker && i + 1 == n,
            });
        }
        self.stats.frames_sent += 1;
    }

    /// The stream's answer to a keyframe request: its cached keyframe and the frames since,
    /// oldest first (see the module doc). Ignored unless it starts with a keyframe.
    pub fn handle_catch_up(&mut self, now: Instant, frames: &[Arc<PacketizedFrame>]) {
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            return;
        };
        if !first.keyframe || !self.is_video() {
            return;
        }
        self.queue.clear();
        // Paced past its keyframe (see CATCH_UP_SPEEDUP): the keyframe goes at once.
        let bytes: usize = frames.iter().map(|f| f.bytes()).sum();
        let span = f64::from(last.timestamp.wrapping_sub(first.timestamp))
            / f64::from(self.cfg.codec.clock_rate());
        let group_rate = if span > 0.0 { bytes as f64 / span } else { 0.0 };
        let cap = (first.bytes() + first.payloads.len() * RTP_HEADER_LEN) as f64 + CATCH_UP_BURST;
        self.pace = Some(Pace {
            left: frames.iter().map(|f| f.payloads.len()).sum(),
            rate: (group_rate * CATCH_UP_SPEEDUP).max(CATCH_UP_MIN_RATE),
            tokens: cap,
            cap,
            at: now,
        });
        // One tick apart, after everything this viewer was given: the decoder gets the
        // group at once and the live frames continue right after.
        let base = if self.started {
            self.last_ts.wrapping_add(1)
        } else {
            self.cfg.initial_timestamp
        };
        for (i, f) in frames.iter().enumerate() {
            self.enqueue(f, base.wrapping_add(i as u32));
        }
        let last_ts = base.wrapping_add(frames.len() as u32 - 1);
        self.offset = last_ts.wrapping_sub(last.timestamp);
        self.started = true;
        self.last_ts = last_ts;
        self.anchor = Some((last_ts, last.arrival));
        self.last_index = Some(last.index);
        self.awaiting_keyframe = false;
        self.stats.catch_ups += 1;
        self.last_request = Some(now);
        if self.next_sr.is_none() {
            self.next_sr = Some(now);
        }
    }

    /// A (decrypted) compound RTCP packet from the viewer. Feedback about other SSRCs is
    /// ignored, so the owner may hand every RTCP packet of a connection to all its senders.
    pub fn handle_rtcp(&mut self, now: Instant, data: &[u8]) {
        let (feedback, bad) = rtcp::read_feedback(data);
        self.stats.rtcp_errors += bad as u64;
        let ssrc = self.cfg.ssrc;
        for fb in feedback {
            match fb {
                rtcp::Feedback::Report(r) if r.ssrc == ssrc => {
                    // Counted as it grows (a report repeats the total so far).
                    let more = r.total_lost.saturating_sub(self.stats.cumulative_lost);
                    crate::stats::add(&crate::stats::RTP_PACKETS_LOST, u64::from(more));
                    self.stats.fraction_lost = f32::from(r.fraction_lost) / 256.0;
                    self.stats.cumulative_lost = r.total_lost;
                    self.stats.jitter =
                        f64::from(r.jitter) / f64::from(self.cfg.codec.clock_rate());
                    if r.last_sender_report != 0 {
                        if let Some(&(_, sent)) =
                            self.srs.iter().find(|(id, _)| *id == r.last_sender_report)
                        {
                            let dlsr =
                                Duration::from_micros(u64::from(r.delay) * 1_000_000 / 65_536);
                            if let Some(rtt) = now.saturating_duration_since(sent).checked_sub(dlsr)
                            {
                                self.stats.rtt = Some(rtt);
                                crate::stats::RTT.observe(rtt);
                            }
                        }
                    }
                }
                rtcp::Feedback::Nack { media_ssrc, seqs }
                    if media_ssrc == ssrc && self.cfg.feedback.nack =>
                {
                    self.stats.nacks += 1;
                    crate::stats::add(&crate::stats::NACK_RECEIVED, 1);
                    for s in seqs {
                        if self.retransmit.len() < MAX_PENDING_RETRANSMITS
                            && !self.retransmit.contains(&s)
                        {
                            self.retransmit.push_back(s);
                        }
                    }
                }
                rtcp::Feedback::Pli { media_ssrc }
                    if media_ssrc == ssrc && self.cfg.feedback.pli =>
                {
                    self.stats.plis += 1;
                    crate::stats::add(&crate::stats::PLI_RECEIVED, 1);
                    self.request_keyframe(now, KeyframeCause::Pli);
                }
                rtcp::Feedback::Fir(entries) if self.cfg.feedback.fir => {
                    for (s, n) in entries {
                        if s == ssrc && self.last_fir_seq != Some(n) {
                            self.last_fir_seq = Some(n);
                            self.stats.firs += 1;
                            self.request_keyframe(now, KeyframeCause::Fir);
                        }
                    }
                }
                rtcp::Feedback::Remb(bps) => self.stats.remb = Some(bps),
                _ => {}
            }
        }
    }

    /// Time passed: a sender report is built when one is due. `wall` is the wall clock at
    /// `now`, for the report's NTP timestamp.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        let Some(due) = self.next_sr else { return };
        if now < due {
            return;
        }
        let Some((ts, arrival)) = self.anchor else {
            return;
        };
        if self.stats.packets_sent == 0 {
            return; // nothing sent yet: the report waits for the first packet
        }
        self.next_sr = Some(now + self.cfg.sr_interval);
        // The RTP time of `now`: the newest frame's timestamp plus the time since it came.
        let elapsed = now.saturating_duration_since(arrival);
        let ticks = elapsed.as_micros() * u128::from(self.cfg.codec.clock_rate()) / 1_000_000;
        let rtp_time = ts.wrapping_add(ticks as u32);
        let ntp_time = ntp(wall);
        let sr = rtc_rtcp::sender_report::SenderReport {
            ssrc: self.cfg.ssrc,
            ntp_time,
            rtp_time,
            packet_count: self.stats.packets_sent as u32,
            octet_count: self.stats.payload_bytes as u32,
            reports: vec![],
            profile_extensions: Bytes::new(),
        };
        let sdes = SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: self.cfg.ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::copy_from_slice(self.cfg.cname.as_bytes()),
                }],
            }],
        };
        if let Ok(b) = rtc_rtcp::packet::marshal(&[Box::new(sr), Box::new(sdes)]) {
            self.rtcp_out.push_back(b.to_vec());
            if self.srs.len() == SR_MEMORY {
                self.srs.pop_front();
            }
            self.srs.push_back((ntp_mid32(ntp_time), now));
            self.stats.srs += 1;
        }
    }

    /// When [`Sender::handle_timeout`] should be called next (the next sender report), or
    /// [`Sender::poll_transmit`] again (a paced catch-up may send more).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sr = if self.stats.packets_sent == 0 {
            None
        } else {
            self.next_sr
        };
        let paced = self
            .pace
            .as_ref()
            .zip(self.queue.front())
            .map(|(p, q)| p.due((q.payload.len() + RTP_HEADER_LEN) as f64));
        sr.into_iter().chain(paced).min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }

    /// Writes the next packet to send into `buf` (cleared first): RTCP first, then
    /// retransmissions, then media. `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        if let Some(p) = self.rtcp_out.pop_front() {
            buf.extend_from_slice(&p);
            return Some(Transmit::Rtcp);
        }
        while let Some(seq) = self.retransmit.pop_front() {
            let min_gap = self
                .stats
                .rtt
                .unwrap_or(Duration::from_millis(20))
                .max(Duration::from_millis(5));
            let now_ms = self.ms(now);
            let Some(sent) = self.sent_mut(seq) else {
                self.stats.retransmits_missed += 1;
                continue;
            };
            if sent
                .resent_ms
                .is_some_and(|t| u128::from(now_ms.wrapping_sub(t)) < min_gap.as_millis())
            {
                continue; // just resent: this NACK crossed it
            }
            sent.resent_ms = Some(now_ms);
            let (timestamp, marker) = (sent.timestamp, sent.marker);
            let payload = sent.payload.clone();
            match self.cfg.rtx {
                Some((pt, ssrc)) => {
                    let rtx_seq = self.rtx_seq;
                    self.rtx_seq = self.rtx_seq.wrapping_add(1);
                    write_header(buf, marker, pt, rtx_seq, timestamp, ssrc);
                    buf.extend_from_slice(&seq.to_be_bytes()); // OSN, RFC 4588 §4
                }
                None => write_header(buf, marker, self.cfg.pt, seq, timestamp, self.cfg.ssrc),
            }
            payload.write_to(buf);
            self.stats.retransmits += 1;
            return Some(Transmit::Rtp);
        }
        if let Some(p) = self.pace.as_mut() {
            let len = (self.queue.front()?.payload.len() + RTP_HEADER_LEN) as f64;
            p.refill(now);
            if p.tokens + 1e-6 < len {
                return None; // poll_timeout says when
            }
            p.tokens -= len;
            p.left = p.left.saturating_sub(1);
            if p.left == 0 {
                self.pace = None;
            }
        }
        let q = self.queue.pop_front()?;
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        write_header(buf, q.marker, self.cfg.pt, seq, q.timestamp, self.cfg.ssrc);
        q.payload.write_to(buf);
        self.stats.packets_sent += 1;
        self.stats.payload_bytes += q.payload.len() as u64;
        let sent_ms = self.ms(now);
        self.remember(Sent {
            seq,
            timestamp: q.timestamp,
            marker: q.marker,
            payload: q.payload,
            sent_ms,
            resent_ms: None,
        });
        Some(Transmit::Rtp)
    }

    /// Keeps a sent packet for NACKs; forgets those past [`HISTORY_PACKETS`] or
    /// [`HISTORY_AGE`].
    fn remember(&mut self, sent: Sent) {
        let now = sent.sent_ms;
        if self.history.len() >= HISTORY_PACKETS {
            self.history.pop_front(); // before the push: the deque never grows past the cap
        }
        self.history.push_back(sent);
        while self
            .history
            .front()
            .is_some_and(|s| u128::from(now.wrapping_sub(s.sent_ms)) > HISTORY_AGE.as_millis())
        {
            self.history.pop_front();
        }
    }

    /// `now` in milliseconds since the first packet this sender sent (wrapping after 49
    /// days; only differences of recent times are used).
    fn ms(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_millis() as u32
    }

    /// The sent packet `seq` if the history still has it (its sequence numbers run on
    /// from the oldest one's).
    fn sent_mut(&mut self, seq: u16) -> Option<&mut Sent> {
        let first = self.history.front()?.seq;
        let sent = self.history.get_mut(usize::from(seq.wrapping_sub(first)))?;
        (sent.seq == seq).then_some(sent)
    }
}

/// Writes a 12-byte RTP header (version 2, no padding, extension or CSRC).
pub(crate) fn write_header(buf: &mut Vec<u8>, marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    buf.reserve(RTP_HEADER_LEN + 1200);
    buf.push(0x80);
    buf.push(if marker { 0x80 } else { 0 } | (pt & 0x7f));
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&ts.to_be_bytes());
    buf.extend_from_slice(&ssrc.to_be_bytes());
}

#[cfg(test)]
mod tests;
