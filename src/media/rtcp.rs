//! RTCP helpers: NTP time, splitting compound packets, and reading the feedback a media
//! sender acts on (RFC 3550, RFC 4585, RFC 5104), with rtc-rtcp parsing each packet.

use rtc_rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc_rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1900 (NTP era 0) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A wall-clock time as a 64-bit NTP timestamp (32.32 fixed point seconds since 1900).
pub fn ntp(wall: SystemTime) -> u64 {
    let d = wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp: an SR's id in a receiver's LSR field.
pub fn ntp_mid32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Splits a compound RTCP packet at the length fields of its packets' common headers.
/// A packet whose header is not RTCP version 2, or whose length runs past the end, ends the
/// walk (its bytes are returned as an error).
pub fn split_compound(data: &[u8]) -> impl Iterator<Item = Result<&[u8], &[u8]>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = if rest.len() >= 4 && rest[0] >> 6 == 2 {
            (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4
        } else {
            usize::MAX
        };
        if len > rest.len() {
            return Some(Err(std::mem::take(&mut rest)));
        }
        let (one, r) = rest.split_at(len);
        rest = r;
        Some(Ok(one))
    })
}

/// One piece of feedback a sender acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Feedback {
    /// A reception report block about `ssrc` (from an RR or an SR).
    Report(ReceptionReport),
    /// Generic NACK: these sequence numbers of `media_ssrc` are missing.
    Nack {
        /// The media source.
        media_ssrc: u32,
        /// Missing sequence numbers.
        seqs: Vec<u16>,
    },
    /// Picture loss indication for `media_ssrc`.
    Pli {
        /// The media source.
        media_ssrc: u32,
    },
    /// Full intra request entries: (ssrc, command sequence number).
    Fir(Vec<(u32, u8)>),
    /// Receiver estimated maximum bitrate, bits per second.
    Remb(f32),
}

/// Reads the feedback in a compound RTCP packet. Returns what was understood and how many
/// packets could not be parsed (skipped; the rest is still read).
pub fn read_feedback(data: &[u8]) -> (Vec<Feedback>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for one in split_compound(data) {
        let Ok(mut one) = one else {
            bad += 1;
            continue;
        };
        let Ok(packets) = rtc_rtcp::packet::unmarshal(&mut one) else {
            bad += 1;
            continue;
        };
        for p in packets {
            let any = p.as_any();
            if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                out.extend(rr.reports.iter().cloned().map(Feedback::Report));
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                out.extend(sr.reports.iter().cloned().map(Feedback::Report));
            } else if let Some(n) = any.downcast_ref::<TransportLayerNack>() {
                let seqs: Vec<u16> = n
                    .nacks
                    .iter()
                    .flat_map(|pair| *pair)
                    .take(MAX_NACKS_PER_PACKET)
                    .collect();
                out.push(Feedback::Nack {
                    media_ssrc: n.media_ssrc,
                    seqs,
                });
            } else if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                out.push(Feedback::Pli {
                    media_ssrc: pli.media_ssrc,
                });
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                out.push(Feedback::Fir(
                    fir.fir
                        .iter()
                        .take(16)
                        .map(|e| (e.ssrc, e.sequence_number))
                        .collect(),
                ));
            } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                out.push(Feedback::Remb(remb.bitrate));
            }
        }
    }
    (out, bad)
}

/// Most sequence numbers taken from one NACK packet (a hostile NACK can name 17 per 4 bytes).
pub const MAX_NACKS_PER_PACKET: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    #[test]
    fn ntp_of_known_times() {
        assert_eq!(ntp(UNIX_EPOCH) >> 32, NTP_UNIX_OFFSET);
        let t = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(ntp(t), ((NTP_UNIX_OFFSET + 1) << 32) | (1 << 31));
        assert_eq!(ntp_mid32(0x1234_5678_9abc_def0), 0x5678_9abc);
    }

    #[test]
    fn compound_with_a_bad_member_keeps_the_rest() {
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        };
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 2,
            nacks: vec![NackPair {
                packet_id: 100,
                lost_packets: 0b101,
            }],
        };
        let mut data = rtc_rtcp::packet::marshal(&[Box::new(pli), Box::new(nack)])
            .unwrap()
            .to_vec();
        // An APP packet with garbage, well framed, in the middle: rtc-rtcp keeps it raw.
        let mut with_app = data[..12].to_vec();
        with_app.extend([0x80, 204, 0, 1, 9, 9, 9, 9]);
        with_app.extend(&data[12..]);
        let (fb, bad) = read_feedback(&with_app);
        assert_eq!(bad, 0);
        assert_eq!(
            fb,
            [
                Feedback::Pli { media_ssrc: 2 },
                Feedback::Nack {
                    media_ssrc: 2,
                    seqs: vec![100, 101, 103]
                }
            ]
        );
        // A truncated last packet: the PLI is still read.
        data.truncate(data.len() - 2);
        let (fb, bad) = read_feedback(&data);
        assert_eq!((fb.len(), bad), (1, 1));
        assert_eq!(read_feedback(&[0x00, 1, 2]).1, 1);
        assert_eq!(read_feedback(&[]).1, 0);
    }

    #[test]
    fn random_rtcp_never_panics() {
        let mut x: u64 = 7;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let mut d: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
            if len >= 4 {
                d[0] = 0x80 | (d[0] & 0x3f);
                d[1] = [200, 201, 202, 203, 205, 206, 207][(x % 7) as usize];
                d[2] = 0;
                d[3] = ((len / 4) as u8).saturating_sub(1);
            }
            let _ = read_feedback(&d);
        }
    }
}
