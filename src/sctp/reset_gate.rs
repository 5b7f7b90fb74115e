//! Stream resets made reliable on top of rtc-sctp 0.21.1.
//!
//! Closing a data channel resets its stream in both directions (RFC 8831 §6.7): the
//! closing side sends an Outgoing SSN Reset Request (RFC 6525 §4.1) naming the last TSN it
//! sent, and the other side, once it has received everything up to that TSN, resets its
//! own outgoing stream back. Two defects of rtc-sctp (`association/mod.rs`) left channels
//! "closing" for good:
//!
//! * When a request arrives ahead of some of its data (usual on a busy association under
//!   loss), `reset_streams_if_any` answers "in progress" and keeps it; the data coming in
//!   later performs it from `handle_peer_last_tsn_and_acknowledgement`, which calls
//!   `reset_streams_if_any(.., respond: false, ..)`: the stream is reset but our own
//!   outgoing stream never is, and the peer is never answered.
//!   [`ResetGate`] keeps such a request from the association until our SACKs show that
//!   all data up to its last TSN has arrived, so rtc-sctp always takes the path that
//!   answers. The request is cut out of its packet (the rest goes on at once) and handed
//!   over later as a packet of its own, with its CRC32c recomputed. A request held longer
//!   than [`MAX_HOLD`] goes on anyway: the old behaviour, never a request lost.
//! * rtc-sctp resends a lost request of its own only when its RE-CONFIG timer runs out,
//!   and every new request restarts that timer (`gather_outbound_data_and_reconfig_packets`
//!   calls `TimerTable::start(Timer::Reconfig, ..)`, whose interval only grows while any
//!   request is unanswered, `association/timer.rs`): with a channel closed every second, a
//!   lost request was never resent. And `handle_reconfig_param` forgets a request on any
//!   response, "in progress" too, so one answered "in progress" is never asked again.
//!   [`ResetGate`] also keeps a copy of each request we send and resends it, unchanged,
//!   after our retransmission timeout (doubling, at most [`MAX_RESEND`]) until the peer
//!   answers it (RFC 6525 §5.1.1: a request is retransmitted until its response, and an
//!   "in progress" answer asks for it again later).
//!
//! Pinned by `sim_tests.rs` `channels_closed_beside_a_busy_one_close_on_both_sides`,
//! which fails with the gate switched off.
//!
//! Only the chunk headers and the fields named below are read; anything malformed passes
//! through untouched for rtc-sctp to refuse.

use super::{be16, be32, chunk_walk, tsn_after};
use bytes::{BufMut, BytesMut};
use std::time::{Duration, Instant};

/// Longest a request is held (a lost DATA chunk is normally resent well within this).
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(10);
/// Requests held at once (and of ours kept for resending); beyond this they go on unheld.
const MAX_HELD: usize = 64;
/// Least wait before one of our requests is resent: above the peer's delayed SACK.
const RESEND_FLOOR: Duration = Duration::from_millis(250);
/// Longest wait between resends of one of our requests.
pub(crate) const MAX_RESEND: Duration = Duration::from_secs(2);

const COMMON_HEADER: usize = 12;
const CHUNK_INIT: u8 = 1;
const CHUNK_INIT_ACK: u8 = 2;
const CHUNK_SACK: u8 = 3;
const CHUNK_RECONFIG: u8 = 130;
const PARAM_OUTGOING_RESET_REQUEST: u16 = 13;
const PARAM_RECONFIG_RESPONSE: u16 = 16;
/// RFC 6525 §4.4 result "In progress".
const RESULT_IN_PROGRESS: u32 = 6;

/// The chunks of an SCTP packet: (type, the whole chunk with its padding). None when the
/// packet does not parse.
fn chunks(packet: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    let mut at = COMMON_HEADER;
    if packet.len() < at {
        return None;
    }
    while at < packet.len() {
        let len = usize::from(be16(packet, at + 2)?);
        if len < 4 || at + len > packet.len() {
            return None;
        }
        let padded = (at + len.next_multiple_of(4)).min(packet.len());
        out.push((packet[at], &packet[at..padded]));
        at = padded;
    }
    Some(out)
}

/// The parameters of a RE-CONFIG chunk: (type, the whole parameter). None when the chunk
/// does not parse.
fn params(chunk: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let len = usize::from(be16(chunk, 2)?).min(chunk.len());
    let mut out = Vec::new();
    let mut at = 4;
    while at + 4 <= len {
        let (ty, plen) = (be16(chunk, at)?, usize::from(be16(chunk, at + 2)?));
        if plen < 4 || at + plen > len {
            return None;
        }
        out.push((ty, &chunk[at..at + plen]));
        at += plen.next_multiple_of(4);
    }
    Some(out)
}

/// The highest sender's-last-TSN among the Outgoing SSN Reset Requests of a RE-CONFIG
/// chunk, if it carries any.
fn reset_request_last_tsn(chunk: &[u8]) -> Option<u32> {
    params(chunk)?
        .into_iter()
        .filter(|(ty, _)| *ty == PARAM_OUTGOING_RESET_REQUEST)
        .filter_map(|(_, p)| be32(p, 12))
        .reduce(|a, b| if tsn_after(b, a) { b } else { a })
}

/// A packet of the given chunks under `header`, with its CRC32c.
fn packet(header: &[u8], chunks: &[&[u8]]) -> BytesMut {
    let len = COMMON_HEADER + chunks.iter().map(|c| c.len()).sum::<usize>();
    let mut p = BytesMut::with_capacity(len);
    p.put_slice(&header[..8]);
    p.put_u32(0);
    for c in chunks {
        p.put_slice(c);
    }
    // RFC 9260 appendix A: CRC32c over the packet with a zero checksum field, sent in
    // little-endian byte order as rtc-sctp checks it.
    let crc = crc32c::crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

struct Held {
    last_tsn: u32,
    since: Instant,
    packet: BytesMut,
}

/// One of our requests, not answered yet.
struct Ours {
    rsn: u32,
    /// The request alone, in a packet of its own.
    packet: BytesMut,
    next: Instant,
    resends: u32,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct ResetGate {
    /// The peer's data we have acknowledged: the cumulative TSN of our latest SACK, or
    /// before any SACK the peer's initial TSN - 1.
    acked: Option<u32>,
    held: Vec<Held>,
    ours: Vec<Ours>,
}

impl ResetGate {
    /// Looks at a packet from the peer. Returns what goes on to the association now: the
    /// packet itself, or the packet without the reset requests held back (None when
    /// nothing is left).
    pub(crate) fn incoming(&mut self, now: Instant, p: BytesMut) -> Option<BytesMut> {
        if chunk_walk(&p).any(|(ty, _, _)| Self::wants(ty)) {
            self.inspect(now, p)
        } else {
            Some(p)
        }
    }

    /// Whether a chunk of this type in a packet from the peer makes the gate look at the
    /// packet ([`Self::inspect`]): most are DATA and SACK, passed on at once.
    pub(crate) fn wants(ty: u8) -> bool {
        matches!(ty, CHUNK_INIT | CHUNK_INIT_ACK | CHUNK_RECONFIG)
    }

    /// [`Self::incoming`] for a packet known to have a chunk the gate [`Self::wants`].
    pub(crate) fn inspect(&mut self, now: Instant, p: BytesMut) -> Option<BytesMut> {
        let Some(list) = chunks(&p) else {
            return Some(p);
        };
        let mut hold: Vec<usize> = Vec::new();
        for (i, (ty, chunk)) in list.iter().enumerate() {
            match *ty {
                CHUNK_INIT | CHUNK_INIT_ACK => {
                    if let Some(initial) = be32(chunk, 16) {
                        self.acked = Some(initial.wrapping_sub(1));
                    }
                }
                CHUNK_RECONFIG => {
                    self.answered(now, chunk);
                    let Some(last_tsn) = reset_request_last_tsn(chunk) else {
                        continue;
                    };
                    let arrived = self.acked.is_some_and(|a| !tsn_after(last_tsn, a));
                    if !arrived && self.held.len() < MAX_HELD {
                        hold.push(i);
                        log::debug!(
                            "SCTP: stream reset request after TSN {last_tsn} held until that \
                             data has arrived (acknowledged: {:?})",
                            self.acked
                        );
                        self.held.push(Held {
                            last_tsn,
                            since: now,
                            packet: packet(&p, &[chunk]),
                        });
                    }
                }
                _ => {}
            }
        }
        if hold.is_empty() {
            return Some(p);
        }
        let rest: Vec<&[u8]> = list
            .iter()
            .enumerate()
            .filter(|(i, _)| !hold.contains(i))
            .map(|(_, (_, c))| *c)
            .collect();
        (!rest.is_empty()).then(|| packet(&p, &rest))
    }

    /// Looks at a packet we send: our SACKs tell how far the peer's data has arrived, and
    /// our reset requests are kept until answered. `rto` is our retransmission timeout.
    pub(crate) fn outgoing(&mut self, now: Instant, p: &[u8], rto: Duration) {
        for (ty, _, chunk) in chunk_walk(p) {
            self.sent_chunk(now, p, ty, chunk, rto);
        }
    }

    /// One chunk of packet `p` we send ([`Self::outgoing`], for an engine that walks the
    /// packet once for everyone).
    pub(crate) fn sent_chunk(
        &mut self,
        now: Instant,
        p: &[u8],
        ty: u8,
        chunk: &[u8],
        rto: Duration,
    ) {
        match ty {
            CHUNK_SACK => {
                if let Some(cum) = be32(chunk, 4) {
                    if self.acked.is_none_or(|a| tsn_after(cum, a)) {
                        self.acked = Some(cum);
                    }
                }
            }
            CHUNK_RECONFIG => self.sent_request(now, p, chunk, rto),
            _ => {}
        }
    }

    /// Keeps a copy of each reset request in a RE-CONFIG chunk we send.
    fn sent_request(&mut self, now: Instant, p: &[u8], chunk: &[u8], rto: Duration) {
        let Some(list) = params(chunk) else { return };
        for (ty, param) in list {
            let Some(rsn) = be32(param, 4).filter(|_| ty == PARAM_OUTGOING_RESET_REQUEST) else {
                continue;
            };
            let wait = rto.max(RESEND_FLOOR).min(MAX_RESEND);
            if let Some(o) = self.ours.iter_mut().find(|o| o.rsn == rsn) {
                // rtc-sctp resent it itself: wait again from now.
                o.next = o.next.max(now + wait);
            } else if self.ours.len() < MAX_HELD {
                self.ours.push(Ours {
                    rsn,
                    packet: packet(p, &[chunk]),
                    next: now + wait,
                    resends: 0,
                });
            }
        }
    }

    /// Forgets our requests that a RE-CONFIG chunk from the peer answers; "in progress"
    /// answers leave them to be asked again.
    fn answered(&mut self, now: Instant, chunk: &[u8]) {
        let Some(list) = params(chunk) else { return };
        for (ty, param) in list {
            if ty != PARAM_RECONFIG_RESPONSE {
                continue;
            }
            let (Some(rsn), Some(result)) = (be32(param, 4), be32(param, 8)) else {
                continue;
            };
            if result == RESULT_IN_PROGRESS {
                if let Some(o) = self.ours.iter_mut().find(|o| o.rsn == rsn) {
                    o.next = o.next.max(now + MAX_RESEND / 2);
                }
            } else {
                self.ours.retain(|o| o.rsn != rsn);
            }
        }
    }

    /// Our unanswered requests due again, to send as they are; each waits twice as long
    /// as before for the next time (at most [`MAX_RESEND`]).
    pub(crate) fn resend(&mut self, now: Instant, rto: Duration) -> Vec<BytesMut> {
        let mut out = Vec::new();
        for o in self.ours.iter_mut().filter(|o| o.next <= now) {
            o.resends += 1;
            let wait = rto
                .max(RESEND_FLOOR)
                .saturating_mul(1 << o.resends.min(4))
                .min(MAX_RESEND);
            o.next = now + wait;
            log::debug!(
                "SCTP: stream reset request {} unanswered: sent again (time {})",
                o.rsn,
                o.resends
            );
            out.push(o.packet.clone());
        }
        out
    }

    /// Requests to hand to the association now: their data has arrived, or they have
    /// waited [`MAX_HOLD`].
    pub(crate) fn due(&mut self, now: Instant) -> Vec<BytesMut> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let acked = self.acked;
        let (due, kept): (Vec<Held>, Vec<Held>) =
            std::mem::take(&mut self.held).into_iter().partition(|h| {
                acked.is_some_and(|a| !tsn_after(h.last_tsn, a))
                    || now.duration_since(h.since) >= MAX_HOLD
            });
        self.held = kept;
        due.into_iter()
            .map(|h| {
                log::debug!(
                    "SCTP: stream reset request after TSN {} handed on after {:?}",
                    h.last_tsn,
                    now.duration_since(h.since)
                );
                if now.duration_since(h.since) >= MAX_HOLD {
                    log::warn!(
                        "SCTP: stream reset request after TSN {} passed on unanswered \
                         data after {MAX_HOLD:?} (acknowledged: {acked:?})",
                        h.last_tsn
                    );
                }
                h.packet
            })
            .collect()
    }

    /// Requests held now.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// When a held request must go on regardless, or one of ours is due again.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let held = self.held.iter().map(|h| h.since + MAX_HOLD);
        held.chain(self.ours.iter().map(|o| o.next)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTO: Duration = Duration::from_millis(300);
    const HEADER: [u8; 12] = [0x13, 0x88, 0x13, 0x88, 1, 2, 3, 4, 0, 0, 0, 0];

    fn chunk(ty: u8, value: &[u8]) -> Vec<u8> {
        let mut c = vec![ty, 0];
        c.extend_from_slice(&u16::try_from(4 + value.len()).unwrap().to_be_bytes());
        c.extend_from_slice(value);
        while !c.len().is_multiple_of(4) {
            c.push(0);
        }
        c
    }

    fn init(initial_tsn: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&7u32.to_be_bytes()); // initiate tag
        v.extend_from_slice(&65536u32.to_be_bytes()); // a_rwnd
        v.extend_from_slice(&[0, 16, 0, 16]); // streams
        v.extend_from_slice(&initial_tsn.to_be_bytes());
        chunk(CHUNK_INIT, &v)
    }

    fn sack(cum: u32) -> Vec<u8> {
        let mut v = cum.to_be_bytes().to_vec();
        v.extend_from_slice(&65536u32.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        chunk(CHUNK_SACK, &v)
    }

    fn reset_request(rsn: u32, last_tsn: u32, streams: &[u16]) -> Vec<u8> {
        let mut param = Vec::new();
        param.extend_from_slice(&PARAM_OUTGOING_RESET_REQUEST.to_be_bytes());
        let len = 16 + 2 * streams.len();
        param.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        param.extend_from_slice(&rsn.to_be_bytes());
        param.extend_from_slice(&0u32.to_be_bytes());
        param.extend_from_slice(&last_tsn.to_be_bytes());
        for s in streams {
            param.extend_from_slice(&s.to_be_bytes());
        }
        chunk(CHUNK_RECONFIG, &param)
    }

    fn data(tsn: u32) -> Vec<u8> {
        let mut v = tsn.to_be_bytes().to_vec();
        v.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 53, b'x']);
        chunk(0, &v)
    }

    fn wire(chunks: &[&[u8]]) -> BytesMut {
        packet(&HEADER, chunks)
    }

    fn checksum_ok(p: &[u8]) -> bool {
        let mut zeroed = p.to_vec();
        zeroed[8..12].fill(0);
        crc32c::crc32c(&zeroed).to_le_bytes() == p[8..12]
    }

    #[test]
    fn a_request_ahead_of_its_data_waits_for_the_sack_that_covers_it() {
        let now = Instant::now();
        let mut gate = ResetGate::default();
        assert!(gate.incoming(now, wire(&[&init(100)])).is_some());
        // TSN 100..=104 sent; 100 and 101 arrived, the request names 104.
        let (d, r) = (data(101), reset_request(9, 104, &[3]));
        let rest = gate
            .incoming(now, wire(&[&d, &r]))
            .expect("the DATA goes on");
        assert_eq!(&rest[12..], &d[..], "the request was cut out of its packet");
        assert!(checksum_ok(&rest));
        assert!(gate.deadline().is_some());
        gate.outgoing(now, &wire(&[&sack(103)]), RTO);
        assert!(gate.due(now).is_empty(), "held while 104 is missing");
        gate.outgoing(now, &wire(&[&sack(104)]), RTO);
        let due = gate.due(now);
        assert_eq!(due.len(), 1);
        assert_eq!(&due[0][12..], &r[..]);
        assert_eq!(
            &due[0][..8],
            &HEADER[..8],
            "same ports and verification tag"
        );
        assert!(checksum_ok(&due[0]));
        assert!(gate.deadline().is_none());
    }

    #[test]
    fn a_request_whose_data_arrived_goes_on_unchanged() {
        let now = Instant::now();
        let mut gate = ResetGate::default();
        gate.incoming(now, wire(&[&init(u32::MAX - 1)]));
        gate.outgoing(now, &wire(&[&sack(2)]), RTO); // across the TSN wrap
        let p = wire(&[&reset_request(1, 1, &[5, 7])]);
        assert_eq!(gate.incoming(now, p.clone()), Some(p));
        assert!(gate.deadline().is_none());
    }

    #[test]
    fn a_request_goes_on_after_max_hold_regardless() {
        let now = Instant::now();
        let mut gate = ResetGate::default();
        gate.incoming(now, wire(&[&init(10)]));
        assert_eq!(
            gate.incoming(now, wire(&[&reset_request(1, 50, &[1])])),
            None
        );
        assert!(gate.due(now + MAX_HOLD / 2).is_empty());
        assert_eq!(gate.deadline(), Some(now + MAX_HOLD));
        assert_eq!(gate.due(now + MAX_HOLD).len(), 1);
    }

    #[test]
    fn packets_that_do_not_parse_pass_untouched() {
        let now = Instant::now();
        let mut gate = ResetGate::default();
        for p in [
            BytesMut::from(&[1u8, 2, 3][..]),
            BytesMut::from(&[0u8; 13][..]),
            {
                let mut p = wire(&[&reset_request(1, 50, &[1])]);
                p[14] = 0xff; // chunk length beyond the packet
                p
            },
        ] {
            assert_eq!(gate.incoming(now, p.clone()), Some(p));
        }
        assert!(gate.deadline().is_none());
    }

    fn response(rsn: u32, result: u32) -> Vec<u8> {
        let mut param = PARAM_RECONFIG_RESPONSE.to_be_bytes().to_vec();
        param.extend_from_slice(&12u16.to_be_bytes());
        param.extend_from_slice(&rsn.to_be_bytes());
        param.extend_from_slice(&result.to_be_bytes());
        chunk(CHUNK_RECONFIG, &param)
    }

    #[test]
    fn our_requests_are_resent_with_backoff_until_answered() {
        let now = Instant::now();
        let mut gate = ResetGate::default();
        let (d, r) = (data(7), reset_request(40, 6, &[9]));
        gate.outgoing(now, &wire(&[&d, &r]), RTO);
        assert_eq!(gate.deadline(), Some(now + RTO));
        assert!(gate.resend(now + RTO / 2, RTO).is_empty());
        let again = gate.resend(now + RTO, RTO);
        assert_eq!(again.len(), 1);
        assert_eq!(&again[0][12..], &r[..], "the request alone, unchanged");
        assert!(checksum_ok(&again[0]));
        // Next time twice the wait; an "in progress" answer keeps it; a result ends it.
        assert_eq!(gate.deadline(), Some(now + RTO + 2 * RTO));
        let later = now + RTO + 2 * RTO;
        assert_eq!(
            gate.incoming(later, wire(&[&response(40, 6)]))
                .map(|p| p.len()),
            Some(28)
        );
        assert!(gate.deadline().unwrap() > later);
        assert_eq!(gate.resend(later + MAX_RESEND, RTO).len(), 1);
        gate.incoming(later, wire(&[&response(41, 1)]));
        assert!(gate.deadline().is_some(), "an answer to another request");
        gate.incoming(later, wire(&[&response(40, 1)]));
        assert_eq!(gate.deadline(), None);
        assert!(gate.resend(later + 10 * MAX_RESEND, RTO).is_empty());
    }

    /// Anything an authenticated but hostile (or broken) peer could send: no panic, and
    /// nothing held for ever.
    #[test]
    fn random_packets_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let now = Instant::now();
        let mut gate = ResetGate::default();
        let mut queue = super::super::send_queue::SendQueue::default();
        let kinds = [0u8, 1, 2, 3, CHUNK_RECONFIG, 192, rng.u8(..)];
        for _ in 0..20_000 {
            let mut p = HEADER.to_vec();
            for _ in 0..rng.usize(0..4) {
                let ty = kinds[rng.usize(..kinds.len())];
                let body: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect();
                let mut c = chunk(ty, &body);
                if rng.bool() {
                    // A lying length, or a cut.
                    c[2..4].copy_from_slice(&rng.u16(..).to_be_bytes());
                }
                c.truncate(rng.usize(0..=c.len()));
                p.extend_from_slice(&c);
            }
            gate.outgoing(now, &p, RTO);
            queue.sent_packet(&p);
            queue.received_packet(&p);
            let _ = gate.incoming(now, BytesMut::from(&p[..]));
        }
        let _ = gate.resend(now + MAX_HOLD, RTO);
        let _ = gate.due(now + MAX_HOLD);
        assert!(gate.held.is_empty());
    }

    #[test]
    fn older_sacks_do_not_move_the_acknowledgement_back() {
        let now = Instant::now();
        let mut gate = ResetGate::default();
        gate.outgoing(now, &wire(&[&sack(20)]), RTO);
        gate.outgoing(now, &wire(&[&sack(15)]), RTO);
        assert_eq!(gate.acked, Some(20));
    }
}
