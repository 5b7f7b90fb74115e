//! DCEP (RFC 8832) messages on PPI 50, through rtc-datachannel's codec.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Message Type |  Channel Type |            Priority           |
//! |                    Reliability Parameter                      |
//! |         Label Length          |       Protocol Length         |
//! |                 Label ...     |        Protocol ...           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! OPEN is type 0x03, ACK is 0x02. Only these two exist on the wire; rtc-datachannel's
//! "close"/"threshold" messages are library-internal and are refused here.
//!
//! Label and protocol may each be 65535 bytes on the wire, and a channel keeps both for its
//! life: an OPEN whose label or protocol is longer than our caps ([`Caps`], from
//! `Config::max_channel_label` / `max_channel_protocol`) is refused before either is
//! copied ([`ParseError::TooLong`]); the router answers it with a stream reset.

use super::ChannelInit;
use crate::sctp::Reliability;
use bytes::Bytes;
use rtc_datachannel::message::message_channel_ack::DataChannelAck;
use rtc_datachannel::message::message_channel_open::{ChannelType, DataChannelOpen};
use rtc_datachannel::message::Message as DcepMessage;
use rtc_shared::marshal::{Marshal, Unmarshal};

/// The longest label and protocol an OPEN may carry, bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caps {
    pub(crate) label: usize,
    pub(crate) protocol: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            label: super::DEFAULT_MAX_CHANNEL_LABEL,
            protocol: super::DEFAULT_MAX_CHANNEL_PROTOCOL,
        }
    }
}

/// Why a DCEP message was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Not a well-formed OPEN or ACK: ignored.
    Malformed(String),
    /// A well-formed OPEN whose label or protocol passes our caps: its channel is refused.
    TooLong(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Malformed(e) | ParseError::TooLong(e) => f.write_str(e),
        }
    }
}

impl From<String> for ParseError {
    fn from(e: String) -> Self {
        ParseError::Malformed(e)
    }
}

impl From<&str> for ParseError {
    fn from(e: &str) -> Self {
        ParseError::Malformed(e.into())
    }
}

/// A parsed DCEP message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dcep {
    Open { label: String, init: ChannelInit },
    Ack,
}

/// How a channel maps onto an SCTP stream: (unordered, reliability).
pub(crate) fn reliability(init: &ChannelInit) -> (bool, Reliability) {
    let rel = match (init.max_retransmits, init.max_packet_life_time) {
        (Some(n), _) => Reliability::Rexmit(u32::from(n)),
        (None, Some(ms)) => Reliability::Timed(u32::from(ms)),
        (None, None) => Reliability::Reliable,
    };
    (init.unordered, rel)
}

/// Fixed part of an OPEN message, before label and protocol.
const OPEN_HEADER: usize = 12;

pub(crate) fn parse(data: &[u8], caps: Caps) -> Result<Dcep, ParseError> {
    // rtc-datachannel's decoder panics on truncated input (it advances past the end), and
    // this is network input: check the framing here and hand it only well-formed messages.
    match data.first() {
        None => return Err("empty DCEP message".into()),
        Some(0x02) => return Ok(Dcep::Ack),
        Some(0x03) => {
            if data.len() < OPEN_HEADER {
                return Err(format!("DCEP OPEN of {} bytes is truncated", data.len()).into());
            }
            let label = usize::from(u16::from_be_bytes([data[8], data[9]]));
            let protocol = usize::from(u16::from_be_bytes([data[10], data[11]]));
            if OPEN_HEADER + label + protocol > data.len() {
                return Err(format!(
                    "DCEP OPEN declares {label}+{protocol} bytes of label and protocol, has {}",
                    data.len() - OPEN_HEADER
                )
                .into());
            }
            if !matches!(data[1], 0x00 | 0x01 | 0x02 | 0x80 | 0x81 | 0x82) {
                return Err(format!("unknown DCEP channel type 0x{:02x}", data[1]).into());
            }
            for (what, len, cap, name) in [
                ("label", label, caps.label, "max_channel_label"),
                ("protocol", protocol, caps.protocol, "max_channel_protocol"),
            ] {
                if len > cap {
                    return Err(ParseError::TooLong(format!(
                        "{what} of {len} bytes exceeds {name} ({cap})"
                    )));
                }
            }
        }
        Some(t) => return Err(format!("DCEP message type 0x{t:02x} is not OPEN or ACK").into()),
    }
    let mut buf = data;
    match DcepMessage::unmarshal(&mut buf).map_err(|e| format!("bad DCEP message: {e}"))? {
        DcepMessage::DataChannelAck(_) => Ok(Dcep::Ack),
        DcepMessage::DataChannelOpen(open) => {
            let label =
                String::from_utf8(open.label).map_err(|_| "DCEP OPEN label is not UTF-8")?;
            let protocol =
                String::from_utf8(open.protocol).map_err(|_| "DCEP OPEN protocol is not UTF-8")?;
            let p = open.reliability_parameter;
            // Values above u16 are clamped: W3C exposes both as unsigned short.
            let p16 = p.min(u32::from(u16::MAX)) as u16;
            let (unordered, max_retransmits, max_packet_life_time) = match open.channel_type {
                ChannelType::Reliable => (false, None, None),
                ChannelType::ReliableUnordered => (true, None, None),
                ChannelType::PartialReliableRexmit => (false, Some(p16), None),
                ChannelType::PartialReliableRexmitUnordered => (true, Some(p16), None),
                ChannelType::PartialReliableTimed => (false, None, Some(p16)),
                ChannelType::PartialReliableTimedUnordered => (true, None, Some(p16)),
                _ => return Err("unknown DCEP channel type".into()),
            };
            Ok(Dcep::Open {
                label,
                init: ChannelInit {
                    unordered,
                    max_retransmits,
                    max_packet_life_time,
                    protocol,
                    negotiated: None,
                },
            })
        }
        _ => Err("DCEP message type is not OPEN or ACK".into()),
    }
}

pub(crate) fn open(label: &str, init: &ChannelInit) -> Bytes {
    let (unordered, rel) = reliability(init);
    let (channel_type, value) = match (rel, unordered) {
        (Reliability::Reliable, false) => (ChannelType::Reliable, 0),
        (Reliability::Reliable, true) => (ChannelType::ReliableUnordered, 0),
        (Reliability::Rexmit(n), false) => (ChannelType::PartialReliableRexmit, n),
        (Reliability::Rexmit(n), true) => (ChannelType::PartialReliableRexmitUnordered, n),
        (Reliability::Timed(ms), false) => (ChannelType::PartialReliableTimed, ms),
        (Reliability::Timed(ms), true) => (ChannelType::PartialReliableTimedUnordered, ms),
    };
    let msg = DcepMessage::DataChannelOpen(DataChannelOpen {
        channel_type,
        priority: 256,
        reliability_parameter: value,
        label: label.as_bytes().to_vec(),
        protocol: init.protocol.as_bytes().to_vec(),
    });
    // Marshalling into a buffer sized by marshal_size cannot fail.
    msg.marshal().map(|b| b.freeze()).unwrap_or_default()
}

pub(crate) fn ack() -> Bytes {
    DcepMessage::DataChannelAck(DataChannelAck {})
        .marshal()
        .map(|b| b.freeze())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_round_trips_every_reliability_mode() {
        let cases = [
            ChannelInit::default(),
            ChannelInit {
                unordered: true,
                ..Default::default()
            },
            ChannelInit {
                max_retransmits: Some(3),
                protocol: "chat".into(),
                ..Default::default()
            },
            ChannelInit {
                unordered: true,
                max_packet_life_time: Some(150),
                ..Default::default()
            },
        ];
        for init in cases {
            let wire = open("bear-noises", &init);
            assert_eq!(wire[0], 0x03, "OPEN message type");
            assert_eq!(
                parse(&wire, Caps::default()).unwrap(),
                Dcep::Open {
                    label: "bear-noises".into(),
                    init: init.clone()
                }
            );
        }
    }

    #[test]
    fn ack_is_one_byte_0x02() {
        assert_eq!(&ack()[..], &[0x02]);
        assert_eq!(parse(&[0x02], Caps::default()).unwrap(), Dcep::Ack);
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        for bad in [
            &[][..],
            &[0x03],
            &[0x03, 0, 0, 0],
            &[0x04],
            &[0xff; 40],
            &[0x00],
        ] {
            assert!(parse(bad, Caps::default()).is_err(), "{bad:?}");
        }
        // Label length pointing past the end.
        assert!(parse(
            &[0x03, 0, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0],
            Caps::default()
        )
        .is_err());
        // Unknown channel type with valid framing.
        assert!(parse(&[0x03, 0x7f, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], Caps::default()).is_err());
        // Every truncation of a real OPEN is refused, never a panic.
        let open = open("bear-noises", &ChannelInit::default());
        for n in 0..open.len() {
            assert!(parse(&open[..n], Caps::default()).is_err(), "{n}");
        }
        // Short label and protocol at the exact end are fine.
        assert!(parse(
            &[0x03, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, b'a', b'b'],
            Caps::default()
        )
        .is_ok());
    }

    #[test]
    fn label_and_protocol_past_the_caps_are_refused_as_too_long() {
        let caps = Caps {
            label: 1024,
            protocol: 16,
        };
        let at_cap = ChannelInit {
            protocol: "p".repeat(16),
            ..Default::default()
        };
        let Ok(Dcep::Open { label, init }) = parse(&open(&"l".repeat(1024), &at_cap), caps) else {
            panic!("an OPEN at the caps is taken")
        };
        assert_eq!((label.len(), init.protocol.len()), (1024, 16));
        assert_eq!(
            parse(&open(&"l".repeat(1025), &at_cap), caps),
            Err(ParseError::TooLong(
                "label of 1025 bytes exceeds max_channel_label (1024)".into()
            ))
        );
        let long_protocol = ChannelInit {
            protocol: "p".repeat(17),
            ..Default::default()
        };
        assert_eq!(
            parse(&open("ok", &long_protocol), caps),
            Err(ParseError::TooLong(
                "protocol of 17 bytes exceeds max_channel_protocol (16)".into()
            ))
        );
        // The default caps: 1 KiB each; the wire's 64 KiB is refused.
        let wire = open(&"l".repeat(65_535), &ChannelInit::default());
        assert!(matches!(
            parse(&wire, Caps::default()),
            Err(ParseError::TooLong(_))
        ));
        // A truncated OPEN stays malformed whatever its declared lengths.
        assert!(matches!(
            parse(&wire[..100], Caps::default()),
            Err(ParseError::Malformed(_))
        ));
    }
}
