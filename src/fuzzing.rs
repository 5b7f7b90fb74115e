//! Entry points for the fuzz targets in `fuzz/` (hidden; not a stable API).
//!
//! Everything the fuzzers reach through the public API is used that way; this module only
//! opens the crate-internal parsers that have no public door.

use crate::channel::{dcep, ChannelInit};
use bytes::Bytes;

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
    Ok(match dcep::parse(data)? {
        dcep::Dcep::Open { label, init } => DcepMessage::Open { label, init },
        dcep::Dcep::Ack => DcepMessage::Ack,
    })
}

/// The DATA_CHANNEL_OPEN the router sends for a channel.
pub fn dcep_open(label: &str, init: &ChannelInit) -> Bytes {
    dcep::open(label, init)
}

/// The DATA_CHANNEL_ACK the router sends.
pub fn dcep_ack() -> Bytes {
    dcep::ack()
}
