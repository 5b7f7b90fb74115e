//! Entry points for the fuzz targets in `fuzz/` (hidden; not a stable API).
//!
//! Everything the fuzzers reach through the public API is used that way; this module only
//! opens the crate-internal parsers that have no public door.

use crate::channel::{dcep, ChannelInit};
use crate::sctp::reset_gate::{ResetGate, MAX_HOLD};
use crate::sctp::send_queue::SendQueue;
use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};

/// A DCEP message as [`dcep_parse`] read it.
#[derive(Debug, PartialEq, Eq)]
pub enum DcepMessage {
    /// DATA_CHANNEL_OPEN: the label and the channel's options.
    Open {
        /// The channel label.
        label: String,
        /// Ordering, reliability and protocol (never `negotiated`).
        init: ChannelInit,
    },
    /// DATA_CHANNEL_ACK.
    Ack,
}

/// Parses one DCEP message (the payload of an SCTP message with PPI 50), as the channel
/// router does.
pub fn dcep_parse(data: &[u8]) -> Result<DcepMessage, String> {
    Ok(
        match dcep::parse(data, dcep::Caps::default()).map_err(|e| e.to_string())? {
            dcep::Dcep::Open { label, init } => DcepMessage::Open { label, init },
            dcep::Dcep::Ack => DcepMessage::Ack,
        },
    )
}

/// The DATA_CHANNEL_OPEN the router sends for a channel.
pub fn dcep_open(label: &str, init: &ChannelInit) -> Bytes {
    dcep::open(label, init)
}

/// The DATA_CHANNEL_ACK the router sends.
pub fn dcep_ack() -> Bytes {
    dcep::ack()
}

/// The SCTP actor's own readers of decrypted SCTP packets (the stream-reset gate and the
/// send queue's SACK / DATA / FORWARD TSN scans), fed packets as a peer would send them and
/// as rtc-sctp would: what a signaled but hostile peer reaches below rtc-sctp.
#[derive(Default)]
pub struct SctpPackets {
    gate: ResetGate,
    queue: SendQueue,
}

impl SctpPackets {
    /// A packet from the peer: what goes on to the association now (the packet, or it
    /// without the reset requests held back).
    pub fn from_peer(&mut self, now: Instant, p: &[u8]) -> Option<Vec<u8>> {
        self.queue.received_packet(p);
        self.gate
            .incoming(now, BytesMut::from(p))
            .map(|b| b.to_vec())
    }

    /// A packet the association sends.
    pub fn to_peer(&mut self, now: Instant, p: &[u8]) {
        self.gate.outgoing(now, p, Duration::from_millis(300));
        self.queue.sent_packet(p);
    }

    /// Held requests due at `now` and our requests to resend: how many packets.
    pub fn timers(&mut self, now: Instant) -> usize {
        self.gate.due(now).len() + self.gate.resend(now, Duration::from_millis(300)).len()
    }

    /// Reset requests from the peer held now.
    pub fn held(&self) -> usize {
        self.gate.held()
    }

    /// How long a request may be held.
    pub const MAX_HOLD: Duration = MAX_HOLD;
}
