//! The media of one peer connection, sans-IO: one [`Sender`] per negotiated track, the
//! transport's [`SrtpSession`], and the datagrams between them.
//!
//! Inputs: the stream's shared frames per track ([`MediaSession::handle_frame`],
//! [`MediaSession::handle_catch_up`]), the SRTP/SRTCP datagrams the ICE agent demultiplexed
//! (RFC 7983: first byte 128–191, [`MediaSession::handle_datagram`]), the keys once DTLS is
//! done ([`MediaSession::set_srtp`]) and time ([`MediaSession::handle_timeout`]). Outputs,
//! drained after every input: protected datagrams for the selected ICE pair
//! ([`MediaSession::poll_datagram`]) and keyframe requests per track
//! ([`MediaSession::poll_keyframe_request`]), which the stream answers with its cached
//! group of pictures.
//!
//! Until the keys are there nothing is sent and frames are not queued (they would only
//! pile up in the senders); the first request of each video track (its join) is held back
//! until then, so a viewer's first picture is the cached keyframe that follows the keys.

use super::receiver::{Receiver, ReceiverConfig, RtpIn};
use super::sender::{KeyframeCause, Sender, SenderConfig, SenderEvent, SenderStats, Transmit};
use super::srtp::SrtpSession;
use super::PacketizedFrame;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Protected datagrams waiting for the owner at most; beyond, the oldest media is dropped
/// (the senders' own queues bound what a slow viewer holds; this bounds one drain).
const MAX_OUT: usize = 8192;

/// Counters of the session itself (each track's are its [`SenderStats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Frames that arrived before the SRTP keys and were not queued.
    pub frames_before_keys: u64,
    /// Incoming datagrams that failed SRTP/SRTCP (tag, replay) or came before the keys.
    pub srtp_errors: u64,
    /// Incoming RTP packets.
    pub rtp_received: u64,
    /// Incoming RTP packets no receiver takes (unknown SSRC and payload type, or nothing
    /// is received), dropped.
    pub rtp_unrouted: u64,
    /// Incoming datagrams that decrypted but are not RTP.
    pub rtp_malformed: u64,
    /// Incoming RTCP packets read.
    pub rtcp_received: u64,
    /// Outgoing packets SRTP refused.
    pub protect_errors: u64,
}

/// The media half of a peer connection; see the module doc.
#[derive(Debug)]
pub struct MediaSession {
    senders: Vec<Sender>,
    receivers: Vec<Receiver>,
    srtp: Option<SrtpSession>,
    out: VecDeque<BytesMut>,
    buf: Vec<u8>,
    stats: SessionStats,
}

/// RFC 5761 §4: a muxed RTCP packet's second byte is 192–223 (payload types 64–95 with the
/// marker bit): SR 200, RR 201, SDES 202, BYE 203, APP 204, RTPFB 205, PSFB 206, XR 207.
pub fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram.get(1), Some(192..=223))
}

/// RFC 7983: a first byte of 128–191 is RTP or RTCP.
pub fn is_rtp_or_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(128..=191))
}

impl MediaSession {
    /// A session sending one track per configuration (index = track number).
    pub fn new(tracks: Vec<SenderConfig>) -> MediaSession {
        MediaSession {
            senders: tracks.into_iter().map(Sender::new).collect(),
            receivers: Vec::new(),
            srtp: None,
            out: VecDeque::new(),
            buf: Vec::with_capacity(1500),
            stats: SessionStats::default(),
        }
    }

    /// Sends these tracks from now on (the keys stay).
    pub fn set_tracks(&mut self, tracks: Vec<SenderConfig>) {
        self.senders = tracks.into_iter().map(Sender::new).collect();
    }

    /// Receives these remote tracks from now on (index = received track number).
    pub fn set_receivers(&mut self, receivers: Vec<ReceiverConfig>) {
        self.receivers = receivers.into_iter().map(Receiver::new).collect();
    }

    /// Number of received tracks.
    pub fn receivers(&self) -> usize {
        self.receivers.len()
    }

    /// A received track's engine: its frames, RTP and figures ([`Receiver::poll_frame`],
    /// [`Receiver::poll_rtp`], [`Receiver::frame_refused`]).
    pub fn receiver_mut(&mut self, track: usize) -> Option<&mut Receiver> {
        self.receivers.get_mut(track)
    }

    /// The received track a packet belongs to: by SSRC (announced or seen), else by
    /// payload type (the first packet of a track, an RTX stream, a new SSRC).
    fn route(&self, p: &RtpIn) -> Option<usize> {
        self.receivers
            .iter()
            .position(|r| r.remote_ssrc() == Some(p.ssrc) && r.takes_pt(p.pt))
            .or_else(|| self.receivers.iter().position(|r| r.takes_pt(p.pt)))
    }

    /// Number of tracks.
    pub fn tracks(&self) -> usize {
        self.senders.len()
    }

    /// A track's sender (configuration and figures).
    pub fn sender(&self, track: usize) -> Option<&Sender> {
        self.senders.get(track)
    }

    /// Every track's figures.
    pub fn sender_stats(&self) -> Vec<SenderStats> {
        self.senders.iter().map(|s| s.stats().clone()).collect()
    }

    /// The session's own counters.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Whether the keys are there.
    pub fn keyed(&self) -> bool {
        self.srtp.is_some()
    }

    /// The DTLS transport's SRTP session: from now on packets flow.
    pub fn set_srtp(&mut self, srtp: SrtpSession) {
        self.srtp = Some(srtp);
    }

    /// A frame of track `track`'s source (shared by every viewer).
    pub fn handle_frame(&mut self, now: Instant, track: usize, frame: &PacketizedFrame) {
        if self.srtp.is_none() {
            self.stats.frames_before_keys += 1;
            return;
        }
        if let Some(s) = self.senders.get_mut(track) {
            s.handle_frame(now, frame);
        }
    }

    /// The stream's answer to a keyframe request of track `track`: its cached keyframe and
    /// the frames since.
    pub fn handle_catch_up(&mut self, now: Instant, track: usize, frames: &[Arc<PacketizedFrame>]) {
        if self.srtp.is_none() {
            return;
        }
        if let Some(s) = self.senders.get_mut(track) {
            s.handle_catch_up(now, frames);
        }
    }

    /// An SRTP or SRTCP datagram from the peer. RTP goes to the received track it belongs
    /// to (by SSRC, else payload type; none: counted and dropped). RTCP goes to every sender
    /// (each reads the reports and feedback about its own SSRC) and every receiver (the
    /// remote's sender reports).
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        let Some(srtp) = self.srtp.as_mut() else {
            self.stats.srtp_errors += 1;
            return;
        };
        if !is_rtcp(datagram) {
            let plain = match srtp.unprotect_rtp(datagram) {
                Ok(p) => p.freeze(),
                Err(_) => {
                    self.stats.srtp_errors += 1;
                    return;
                }
            };
            self.stats.rtp_received += 1;
            self.handle_rtp(now, plain);
            return;
        }
        match srtp.unprotect_rtcp(datagram) {
            Ok(plain) => {
                self.stats.rtcp_received += 1;
                for s in &mut self.senders {
                    s.handle_rtcp(now, &plain);
                }
                for r in &mut self.receivers {
                    r.handle_rtcp(now, &plain);
                }
            }
            Err(_) => self.stats.srtp_errors += 1,
        }
    }

    fn handle_rtp(&mut self, now: Instant, plain: Bytes) {
        let Some(p) = RtpIn::parse(&plain) else {
            self.stats.rtp_malformed += 1;
            return;
        };
        match self.route(&p) {
            Some(i) => self.receivers[i].handle_rtp(now, p),
            None => {
                self.stats.rtp_unrouted += 1;
                if self.stats.rtp_unrouted == 1 && !self.receivers.is_empty() {
                    log::warn!(
                        "media: RTP with payload type {} from SSRC {} fits no received track: dropped",
                        p.pt,
                        p.ssrc
                    );
                }
            }
        }
    }

    /// Time passed: sender reports.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        if self.srtp.is_none() {
            return;
        }
        for s in &mut self.senders {
            s.handle_timeout(now, wall);
        }
        for r in &mut self.receivers {
            r.handle_timeout(now);
        }
    }

    /// The next sender report is due, or a paced catch-up may send more.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.srtp.as_ref()?;
        let senders = self.senders.iter().filter_map(Sender::poll_timeout);
        senders
            .chain(self.receivers.iter().filter_map(Receiver::poll_timeout))
            .min()
    }

    /// A track asks for a keyframe (answer with [`MediaSession::handle_catch_up`]); held
    /// back until the keys are there.
    pub fn poll_keyframe_request(&mut self) -> Option<(usize, KeyframeCause)> {
        self.srtp.as_ref()?;
        self.senders.iter_mut().enumerate().find_map(|(i, s)| {
            s.poll_event()
                .map(|SenderEvent::KeyframeRequest(cause)| (i, cause))
        })
    }

    /// The next protected datagram for the wire: every sender's RTCP, retransmissions and
    /// media, in turn (one packet per sender per round, so one track's burst does not hold
    /// up the other's).
    pub fn poll_datagram(&mut self, now: Instant) -> Option<BytesMut> {
        if self.out.is_empty() {
            self.fill(now);
        }
        self.out.pop_front()
    }

    fn fill(&mut self, now: Instant) {
        let Some(srtp) = self.srtp.as_mut() else {
            return;
        };
        // The receivers' feedback first: NACKs and PLIs are worth more than media.
        for r in &mut self.receivers {
            while let Some(p) = r.poll_rtcp() {
                match srtp.protect_rtcp(&p) {
                    Ok(p) => self.out.push_back(p),
                    Err(_) => self.stats.protect_errors += 1,
                }
            }
        }
        loop {
            let mut any = false;
            for s in &mut self.senders {
                let Some(kind) = s.poll_transmit(now, &mut self.buf) else {
                    continue;
                };
                any = true;
                let protected = match kind {
                    Transmit::Rtp => srtp.protect_rtp(&self.buf),
                    Transmit::Rtcp => srtp.protect_rtcp(&self.buf),
                };
                match protected {
                    Ok(p) => self.out.push_back(p),
                    Err(e) => {
                        self.stats.protect_errors += 1;
                        log::debug!("media: SRTP refused an outgoing packet: {e}");
                    }
                }
            }
            if !any || self.out.len() >= MAX_OUT {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
