//! The per-track receive engine, sans-IO (issue 17): one remote track's RTP in, frames (or
//! in-order RTP) and this side's RTCP out.
//!
//! # What it does with each packet
//! - **Payload type**: the media type, or its RTX type (RFC 4588: the original sequence
//!   number is the payload's first two bytes; unwrapped here). Anything else is counted
//!   ([`ReceiverStats::wrong_payload_type`]) and dropped.
//! - **SSRC**: the first media SSRC seen (or the one the SDP announced) is the track's; a
//!   change (the sender restarted its encoder) is counted and logged, the buffer is reset
//!   and video waits for a keyframe. Never a panic.
//! - **Reorder buffer** ([`ReceiverConfig::depth`]): packets go out in sequence order.
//!   An in-order packet goes straight through; after a hole, later packets wait until the
//!   hole is filled (by reordering or retransmission) or the oldest waiting packet has waited
//!   `depth`, when the missing ones are given up ([`ReceiverStats::lost`]) and the
//!   depacketizer is told ([`Depacketizer::gap`]): the frame with the hole is dropped, not
//!   emitted broken. Duplicates and packets behind the window are dropped.
//! - **NACK** (RFC 4585, when negotiated): each missing sequence number is asked for at once
//!   and again every [`ReceiverConfig::nack_interval`], at most
//!   [`ReceiverConfig::nack_retries`] times.
//! - **PLI** (when negotiated): a video receiver starts waiting for a keyframe (join), and
//!   waits again after a frame it had to drop (loss beyond repair, a reader that fell
//!   behind); while it waits, frames are dropped and a PLI is sent at most every
//!   [`PLI_INTERVAL`].
//! - **Receiver reports** (RFC 3550 §6.4.2) every [`ReceiverConfig::report_interval`]:
//!   fraction and cumulative loss, extended highest sequence number, interarrival jitter,
//!   LSR/DLSR from the sender's last SR (so the sender gets its RTT).
//! - **REMB** (`goog-remb`, when negotiated), with the reports: 1.5× the rate received over
//!   the last interval (0.85× when more than a tenth was lost), within
//!   [`ReceiverConfig::min_bitrate`]..[`ReceiverConfig::max_bitrate`]. It is no estimator,
//!   but it lets the browser's bandwidth estimate climb with what arrives and fall with loss
//!   (without any REMB or transport-cc a browser stays near its start rate).
//!
//! # Driving it
//! Inputs: [`Receiver::handle_rtp`], [`Receiver::handle_rtcp`],
//! [`Receiver::handle_timeout`], [`Receiver::frame_refused`] (the application's queue was
//! full). Outputs, drained after every input: [`Receiver::poll_frame`],
//! [`Receiver::poll_rtp`], [`Receiver::poll_rtcp`], [`Receiver::poll_timeout`].

use super::codec::Codec;
use super::depacketize::Depacketizer;
use super::negotiate::{Feedback, Negotiated};
use super::remote::{ReceivedFrame, ReceiverStats, RtpPacket};
use super::rtcp::ntp_mid32;
use bytes::Bytes;
use rtc_rtcp::packet::Packet;
use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc_rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Default reorder-buffer depth: how long packets after a hole wait for it to be filled.
/// Enough for a few NACK rounds at LAN/Wi-Fi round trips; it only delays anything when a
/// packet is missing.
pub const DEFAULT_DEPTH: Duration = Duration::from_millis(300);
/// Default time between NACKs of one sequence number.
pub const DEFAULT_NACK_INTERVAL: Duration = Duration::from_millis(50);
/// Default NACKs per missing sequence number.
pub const DEFAULT_NACK_RETRIES: u8 = 4;
/// Default receiver report (and REMB) interval.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// PLIs are sent at most this often while a keyframe is awaited.
pub const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// Most packets held in the reorder buffer; beyond, the oldest hole is given up.
pub const MAX_BUFFERED: usize = 4096;
/// A jump in sequence numbers larger than this is a restart of the numbering, not loss.
const MAX_GAP: u64 = 3000;
/// Sequence numbers asked for in one NACK packet at most.
const MAX_NACKS_PER_PACKET: usize = 256;

/// How a receiver is set up; see [`ReceiverConfig::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverConfig {
    /// The codec.
    pub codec: Codec,
    /// The media payload type.
    pub pt: u8,
    /// The RTX payload type, when negotiated.
    pub rtx_pt: Option<u8>,
    /// Negotiated feedback: NACK, PLI (FIR when PLI is not), REMB are sent only if agreed.
    pub feedback: Feedback,
    /// Our SSRC, the sender SSRC of our RTCP.
    pub local_ssrc: u32,
    /// The remote's media SSRC if the SDP said it (else the first one seen).
    pub remote_ssrc: Option<u32>,
    /// See [`DEFAULT_DEPTH`].
    pub depth: Duration,
    /// See [`DEFAULT_NACK_INTERVAL`].
    pub nack_interval: Duration,
    /// See [`DEFAULT_NACK_RETRIES`].
    pub nack_retries: u8,
    /// See [`DEFAULT_REPORT_INTERVAL`].
    pub report_interval: Duration,
    /// REMB floor, bits per second.
    pub min_bitrate: u32,
    /// REMB ceiling, bits per second.
    pub max_bitrate: u32,
}

impl ReceiverConfig {
    /// A receiver for a negotiated track.
    pub fn new(negotiated: &Negotiated, local_ssrc: u32, remote_ssrc: Option<u32>) -> Self {
        ReceiverConfig {
            codec: negotiated.codec,
            pt: negotiated.pt,
            rtx_pt: negotiated.rtx_pt,
            feedback: negotiated.feedback,
            local_ssrc,
            remote_ssrc,
            depth: DEFAULT_DEPTH,
            nack_interval: DEFAULT_NACK_INTERVAL,
            nack_retries: DEFAULT_NACK_RETRIES,
            report_interval: DEFAULT_REPORT_INTERVAL,
            min_bitrate: 150_000,
            max_bitrate: 10_000_000,
        }
    }
}

/// A plaintext RTP packet as the receiver reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpIn {
    /// Payload type.
    pub pt: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// SSRC.
    pub ssrc: u32,
    /// The payload (after CSRCs, extension and padding).
    pub payload: Bytes,
}

impl RtpIn {
    /// Reads an RTP packet (RFC 3550 §5.1): version 2, CSRCs, a header extension and
    /// padding skipped. `None` when it is not one.
    pub fn parse(packet: &Bytes) -> Option<RtpIn> {
        let p = &packet[..];
        if p.len() < 12 || p[0] >> 6 != 2 {
            return None;
        }
        let cc = usize::from(p[0] & 0x0f);
        let mut start = 12 + 4 * cc;
        if p[0] & 0x10 != 0 {
            let ext = p.get(start..start + 4)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        let mut end = p.len();
        if p[0] & 0x20 != 0 {
            let pad = usize::from(*p.last()?);
            end = end.checked_sub(pad)?;
        }
        if start > end {
            return None;
        }
        Some(RtpIn {
            pt: p[1] & 0x7f,
            marker: p[1] & 0x80 != 0,
            seq: u16::from_be_bytes([p[2], p[3]]),
            timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            payload: packet.slice(start..end),
        })
    }
}

#[derive(Debug)]
struct Buffered {
    marker: bool,
    timestamp: u32,
    payload: Bytes,
    arrival: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    tries: u8,
    last: Option<Instant>,
}

/// One remote track; see the module doc.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    ssrc: Option<u32>,
    /// Highest extended sequence number seen.
    highest: Option<u64>,
    /// The next extended sequence number to deliver.
    next_out: u64,
    buffer: BTreeMap<u64, Buffered>,
    missing: BTreeMap<u64, Missing>,
    depack: Depacketizer,
    /// Frames the application was handed, and what the depacketizer had dropped then.
    broken_seen: u64,
    awaiting_keyframe: bool,
    pli_wanted: bool,
    last_pli: Option<Instant>,
    frames: VecDeque<ReceivedFrame>,
    rtp: VecDeque<RtpPacket>,
    rtp_wanted: bool,
    frames_wanted: bool,
    rtcp: VecDeque<Vec<u8>>,
    next_report: Option<Instant>,
    // RFC 3550 A.3 and A.8 state.
    base: Option<u64>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    jitter: f64,
    last_transit: Option<i64>,
    first_arrival: Option<(Instant, u32)>,
    last_sr: Option<(u32, Instant)>,
    bytes_window: u64,
    remb: Option<f64>,
    stats: ReceiverStats,
}

impl Receiver {
    /// A receiver for a track that starts now. Video waits for a keyframe.
    pub fn new(cfg: ReceiverConfig) -> Receiver {
        let video = cfg.codec != Codec::Opus;
        Receiver {
            ssrc: cfg.remote_ssrc,
            highest: None,
            next_out: 0,
            buffer: BTreeMap::new(),
            missing: BTreeMap::new(),
            depack: Depacketizer::new(cfg.codec),
            broken_seen: 0,
            awaiting_keyframe: video,
            pli_wanted: false,
            last_pli: None,
            frames: VecDeque::new(),
            rtp: VecDeque::new(),
            rtp_wanted: true,
            frames_wanted: true,
            rtcp: VecDeque::new(),
            next_report: None,
            base: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter: 0.0,
            last_transit: None,
            first_arrival: None,
            last_sr: None,
            bytes_window: 0,
            remb: None,
            stats: ReceiverStats::default(),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ReceiverConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &ReceiverStats {
        &self.stats
    }

    /// The remote SSRC in use, once known.
    pub fn remote_ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// What the application reads: frames, RTP, or (not chosen yet) both.
    pub fn set_outputs(&mut self, frames: bool, rtp: bool) {
        self.frames_wanted = frames;
        self.rtp_wanted = rtp;
    }

    /// Whether `pt` belongs to this track (its media or RTX type).
    pub fn takes_pt(&self, pt: u8) -> bool {
        pt == self.cfg.pt || Some(pt) == self.cfg.rtx_pt
    }

    /// One plaintext RTP packet of this track.
    pub fn handle_rtp(&mut self, now: Instant, p: RtpIn) {
        let (seq, payload, rtx) = if Some(p.pt) == self.cfg.rtx_pt {
            if p.payload.len() < 2 {
                // RTX padding probes carry no original packet.
                return;
            }
            let osn = u16::from_be_bytes([p.payload[0], p.payload[1]]);
            (osn, p.payload.slice(2..), true)
        } else if p.pt == self.cfg.pt {
            (p.seq, p.payload.clone(), false)
        } else {
            self.stats.wrong_payload_type += 1;
            if self.stats.wrong_payload_type == 1 {
                log::warn!(
                    "media: payload type {} on a track of {} (pt {}): dropped",
                    p.pt,
                    self.cfg.codec.encoding_name(),
                    self.cfg.pt
                );
            }
            return;
        };
        if !rtx {
            match self.ssrc {
                None => self.ssrc = Some(p.ssrc),
                Some(s) if s != p.ssrc => self.ssrc_changed(p.ssrc),
                Some(_) => {}
            }
        } else if self.highest.is_none() {
            // A retransmission before any media: nothing to place it against.
            return;
        }
        let Some(ext) = self.extend(seq, rtx) else {
            self.stats.late += 1;
            return;
        };
        if ext < self.next_out || self.buffer.contains_key(&ext) {
            self.stats.late += 1;
            return;
        }
        if self.missing.remove(&ext).is_some() {
            self.stats.recovered += 1;
        }
        self.stats.packets += 1;
        self.stats.bytes += payload.len() as u64;
        self.bytes_window += payload.len() as u64;
        self.received += 1;
        if !rtx {
            self.update_jitter(now, p.timestamp);
        }
        self.buffer.insert(
            ext,
            Buffered {
                marker: p.marker,
                timestamp: p.timestamp,
                payload,
                arrival: now,
            },
        );
        self.next_report
            .get_or_insert(now + self.cfg.report_interval);
        self.release(now);
        self.request_missing(now);
        self.request_keyframe(now);
    }

    /// The extended sequence number of `seq`, marking the ones skipped as missing; `None`
    /// for a packet too far behind (or an RTX packet too far from anything).
    fn extend(&mut self, seq: u16, rtx: bool) -> Option<u64> {
        let Some(highest) = self.highest else {
            let ext = u64::from(seq) + (1 << 16);
            self.highest = Some(ext);
            self.next_out = ext;
            self.base = Some(ext);
            return Some(ext);
        };
        let delta = seq.wrapping_sub(highest as u16);
        if delta < 0x8000 {
            let ext = highest + u64::from(delta);
            if u64::from(delta) > MAX_GAP {
                if rtx {
                    return None;
                }
                // A jump: the sender restarted its numbering; start again from here.
                self.restart_at(ext);
                return Some(ext);
            }
            if self.missing.len() + usize::from(delta) > MAX_BUFFERED {
                // Holes beyond what the buffer could ever fill: start again from here
                // rather than remember them.
                self.restart_at(ext);
                return Some(ext);
            }
            for m in highest + 1..ext {
                self.missing.insert(
                    m,
                    Missing {
                        tries: 0,
                        last: None,
                    },
                );
            }
            self.highest = Some(ext);
            Some(ext)
        } else {
            let back = u64::from((highest as u16).wrapping_sub(seq));
            highest.checked_sub(back)
        }
    }

    fn restart_at(&mut self, ext: u64) {
        self.buffer.clear();
        self.missing.clear();
        self.depack.reset();
        self.highest = Some(ext);
        self.next_out = ext;
        self.want_keyframe();
    }

    fn ssrc_changed(&mut self, ssrc: u32) {
        self.stats.ssrc_changes += 1;
        log::info!(
            "media: the remote's {} SSRC changed ({:?} -> {ssrc}): starting over",
            self.cfg.codec.encoding_name(),
            self.ssrc
        );
        self.ssrc = Some(ssrc);
        self.highest = None;
        self.buffer.clear();
        self.missing.clear();
        self.depack.reset();
        self.last_transit = None;
        self.want_keyframe();
    }

    fn want_keyframe(&mut self) {
        if self.cfg.codec != Codec::Opus {
            self.awaiting_keyframe = true;
            self.pli_wanted = true;
        }
    }

    /// RFC 3550 A.8, in RTP clock units.
    fn update_jitter(&mut self, now: Instant, ts: u32) {
        let rate = u128::from(self.cfg.codec.clock_rate());
        let (t0, ts0) = *self.first_arrival.get_or_insert((now, ts));
        let arrival = (now.duration_since(t0).as_micros() * rate / 1_000_000) as i64;
        let transit = arrival - i64::from(ts.wrapping_sub(ts0) as i32);
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Delivers what is in order; gives up holes that waited longer than the depth.
    fn release(&mut self, now: Instant) {
        loop {
            if let Some(b) = self.buffer.remove(&self.next_out) {
                self.deliver(self.next_out, b);
                self.next_out += 1;
                continue;
            }
            let Some((&first, b)) = self.buffer.iter().next() else {
                return;
            };
            let waited = now.saturating_duration_since(b.arrival) >= self.cfg.depth;
            if !waited && self.buffer.len() < MAX_BUFFERED {
                return;
            }
            let lost = first - self.next_out;
            self.stats.lost += lost;
            self.missing.retain(|&s, _| s >= first);
            self.depack.gap();
            self.next_out = first;
        }
    }

    fn deliver(&mut self, ext: u64, b: Buffered) {
        // Padding-only packets (a sender probing bandwidth) hold a sequence number, nothing
        // to decode.
        // Nobody reads (the application dropped its receiver): nothing to make.
        if b.payload.is_empty() || !(self.rtp_wanted || self.frames_wanted) {
            return;
        }
        if self.rtp_wanted {
            self.rtp.push_back(RtpPacket {
                payload_type: self.cfg.pt,
                sequence_number: ext as u16,
                timestamp: b.timestamp,
                ssrc: self.ssrc.unwrap_or(0),
                marker: b.marker,
                payload: b.payload.clone(),
            });
            if !self.frames_wanted {
                self.stats.frames += 1;
                return;
            }
        }
        self.depack.push(b.timestamp, b.marker, &b.payload);
        let broken = self.depack.broken();
        if broken > self.broken_seen {
            self.stats.frames_dropped += broken - self.broken_seen;
            self.broken_seen = broken;
            self.want_keyframe();
        }
        self.stats.malformed = self.depack.malformed();
        while let Some(f) = self.depack.poll() {
            if self.awaiting_keyframe {
                if !f.keyframe {
                    self.stats.frames_dropped += 1;
                    self.pli_wanted = true;
                    continue;
                }
                self.awaiting_keyframe = false;
                self.pli_wanted = false;
            }
            self.stats.frames += 1;
            self.frames.push_back(f);
        }
    }

    /// The application's queue was full for a frame the receiver produced: it is lost to
    /// the application, so video waits for a keyframe.
    pub fn frame_refused(&mut self, now: Instant) {
        self.stats.frames = self.stats.frames.saturating_sub(1);
        self.stats.frames_dropped += 1;
        self.want_keyframe();
        self.request_keyframe(now);
    }

    /// The application asks for a keyframe (a new file, a new decoder): a PLI now (rate
    /// limited), frames still delivered. Video only.
    pub fn request_keyframe_now(&mut self, now: Instant) {
        if self.cfg.codec != Codec::Opus {
            self.pli_wanted = true;
            self.request_keyframe(now);
        }
    }

    fn media_ssrc(&self) -> u32 {
        self.ssrc.unwrap_or(0)
    }

    /// NACKs for missing packets due now.
    fn request_missing(&mut self, now: Instant) {
        if !self.cfg.feedback.nack {
            return;
        }
        let mut seqs = Vec::new();
        let (interval, retries) = (self.cfg.nack_interval, self.cfg.nack_retries);
        for (&s, m) in self.missing.iter_mut() {
            if m.tries >= retries || m.last.is_some_and(|t| now.duration_since(t) < interval) {
                continue;
            }
            m.tries += 1;
            m.last = Some(now);
            seqs.push(s);
            if seqs.len() == MAX_NACKS_PER_PACKET {
                break;
            }
        }
        if seqs.is_empty() {
            return;
        }
        let nack = TransportLayerNack {
            sender_ssrc: self.cfg.local_ssrc,
            media_ssrc: self.media_ssrc(),
            nacks: nack_pairs(&seqs),
        };
        self.push_rtcp(Box::new(nack));
        self.stats.nacks_sent += 1;
    }

    /// A PLI when a keyframe is awaited and frames keep coming without one.
    fn request_keyframe(&mut self, now: Instant) {
        if !self.pli_wanted || !(self.cfg.feedback.pli || self.cfg.feedback.fir) {
            return;
        }
        if self
            .last_pli
            .is_some_and(|t| now.duration_since(t) < PLI_INTERVAL)
        {
            return;
        }
        self.pli_wanted = false;
        self.last_pli = Some(now);
        self.stats.plis_sent += 1;
        let pli = PictureLossIndication {
            sender_ssrc: self.cfg.local_ssrc,
            media_ssrc: self.media_ssrc(),
        };
        self.push_rtcp(Box::new(pli));
    }

    /// A compound RTCP packet: an empty receiver report first (RFC 3550 §6.1), then `p`.
    fn push_rtcp(&mut self, p: Box<dyn Packet>) {
        let rr = ReceiverReport {
            ssrc: self.cfg.local_ssrc,
            ..Default::default()
        };
        if let Ok(b) = rtc_rtcp::packet::marshal(&[Box::new(rr), p]) {
            self.rtcp.push_back(b.to_vec());
        }
    }

    /// Decrypted RTCP from the remote: its sender reports (for LSR/DLSR).
    pub fn handle_rtcp(&mut self, now: Instant, data: &[u8]) {
        let Some(ssrc) = self.ssrc else {
            return;
        };
        for one in super::rtcp::split_compound(data).flatten() {
            let mut one = one;
            let Ok(packets) = rtc_rtcp::packet::unmarshal(&mut one) else {
                continue;
            };
            for p in packets {
                if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                    if sr.ssrc == ssrc {
                        self.last_sr = Some((ntp_mid32(sr.ntp_time), now));
                    }
                }
            }
        }
    }

    /// Time passed: holes given up, NACKs again, reports.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.release(now);
        self.request_missing(now);
        self.request_keyframe(now);
        if self.next_report.is_some_and(|t| now >= t) {
            self.next_report = Some(now + self.cfg.report_interval);
            self.report(now);
        }
    }

    /// RR (RFC 3550 A.3) and REMB.
    fn report(&mut self, now: Instant) {
        let (Some(base), Some(highest), Some(ssrc)) = (self.base, self.highest, self.ssrc) else {
            return;
        };
        let expected = highest + 1 - base;
        let lost = expected.saturating_sub(self.received);
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        let (lsr, dlsr) = self.last_sr.map_or((0, 0), |(lsr, at)| {
            let d = now.duration_since(at);
            (lsr, (d.as_micros() * 65536 / 1_000_000) as u32)
        });
        let report = ReceptionReport {
            ssrc,
            fraction_lost: fraction,
            total_lost: lost.min(0x7f_ffff) as u32,
            last_sequence_number: highest as u32,
            jitter: self.jitter as u32,
            last_sender_report: lsr,
            delay: dlsr,
        };
        let rr = ReceiverReport {
            ssrc: self.cfg.local_ssrc,
            reports: vec![report],
            ..Default::default()
        };
        let mut packets: Vec<Box<dyn Packet>> = vec![Box::new(rr)];
        if self.cfg.feedback.remb {
            let rate = self.bytes_window as f64 * 8.0 / self.cfg.report_interval.as_secs_f64();
            let target = if fraction > 25 {
                rate * 0.85
            } else {
                rate * 1.5
            };
            let bitrate = target.clamp(
                f64::from(self.cfg.min_bitrate),
                f64::from(self.cfg.max_bitrate),
            );
            self.remb = Some(bitrate);
            packets.push(Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: self.cfg.local_ssrc,
                bitrate: bitrate as f32,
                ssrcs: vec![ssrc],
            }));
        }
        self.bytes_window = 0;
        if let Ok(b) = rtc_rtcp::packet::marshal(&packets) {
            self.rtcp.push_back(b.to_vec());
        }
    }

    /// The REMB value last sent, bits per second.
    pub fn remb(&self) -> Option<f64> {
        self.remb
    }

    /// When [`Receiver::handle_timeout`] is due: the oldest hole's deadline, the next NACK
    /// or PLI, the next report.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hole = self
            .buffer
            .values()
            .next()
            .filter(|_| !self.buffer.contains_key(&self.next_out))
            .map(|b| b.arrival + self.cfg.depth);
        let nack = if self.cfg.feedback.nack {
            self.missing
                .values()
                .filter(|m| m.tries < self.cfg.nack_retries)
                .filter_map(|m| m.last.map(|t| t + self.cfg.nack_interval))
                .min()
        } else {
            None
        };
        let pli = (self.pli_wanted && (self.cfg.feedback.pli || self.cfg.feedback.fir))
            .then(|| self.last_pli.map(|t| t + PLI_INTERVAL))
            .flatten();
        [hole, nack, pli, self.next_report]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next frame for the application.
    pub fn poll_frame(&mut self) -> Option<ReceivedFrame> {
        self.frames.pop_front()
    }

    /// The next in-order RTP packet for the application.
    pub fn poll_rtp(&mut self) -> Option<RtpPacket> {
        self.rtp.pop_front()
    }

    /// The next plaintext compound RTCP packet to send.
    pub fn poll_rtcp(&mut self) -> Option<Vec<u8>> {
        self.rtcp.pop_front()
    }
}

/// Generic NACK pairs (RFC 4585 §6.2.1) for ascending extended sequence numbers.
fn nack_pairs(seqs: &[u64]) -> Vec<NackPair> {
    let mut pairs: Vec<(u64, NackPair)> = Vec::new();
    for &s in seqs {
        match pairs.last_mut() {
            Some((base, pair)) if s > *base && s - *base <= 16 => {
                pair.lost_packets |= 1 << (s - *base - 1);
            }
            _ => pairs.push((s, NackPair::new(s as u16))),
        }
    }
    pairs.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests;
