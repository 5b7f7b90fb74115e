//! Fair sending across streams, in front of rtc-sctp's own queue: two workarounds.
//!
//! rtc-sctp 0.21.1 keeps one queue of messages waiting for the congestion window
//! (`queue/pending_queue.rs`, `PendingQueue`): `front_queue` serves every queued unordered
//! message before any ordered one, ordered ones in the order they were written whatever
//! their stream, and `pop_ready_reset` lets a stream reset go only while no unordered
//! message waits. DCEP messages and stream resets are ordered. So a busy unordered
//! channel shut every ordered channel out, new channels did not open and closes did not
//! complete; and behind a busy ordered channel's megabytes a new channel's DCEP OPEN
//! waited its turn.
//!
//! [`SendQueue`] holds what the router asks to send, one queue per stream, and hands it to
//! the association a message at a time:
//! 1. **Queue depth** ([`SendQueue::has_room`]): only while little is waiting in rtc-sctp's
//!    queue, at most [`MIN_WAITING`] bytes or a quarter of what is in flight. rtc-sctp
//!    does not say how much that is (`Association::buffered_amount` and
//!    `PendingQueue::get_num_bytes` are `pub(crate)`; `Stream::buffered_amount` counts a
//!    stream's bytes in flight too), so it is guessed: what we wrote less what has left
//!    in DATA chunks (new TSNs seen in the packets it sends), never more than what is not
//!    yet acknowledged or abandoned.
//! 2. **Fair scheduling** ([`SendQueue::next`]): the streams share by bytes (deficit round
//!    robin, [`QUANTUM`] a turn), whatever their ordering.
//!
//! Each is pinned by a test on the simulated network that fails with it switched off
//! (`sim_tests.rs`: `a_channel_opens_beside_a_full_queue`,
//! `an_ordered_channel_gets_its_share_beside_a_busy_unordered_one`).
//!
//! The queue itself has no bound of its own: every message in it was reserved by
//! `DataChannel::send` in its channel's and its connection's send buffer (see
//! [`crate::channel`]) and stays counted there until rtc-sctp releases it, so it never
//! holds more user data than `send_buffer_per_connection`. Control items are a few per
//! channel. What a stream still has queued when the stream is reset is dropped at once
//! ([`SendQueue::drop_stream`]).

use super::{be16, be32, chunk_walk, tsn_after};
use super::{Ppi, Reliability};
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How long an ordered message handed to rtc-sctp may hold unordered ones back without
/// any ordered message seen leaving ([`SendQueue::tick`]).
const ORDERED_GUARD_MAX: Duration = Duration::from_secs(1);

/// Bytes allowed to wait in rtc-sctp's queue whatever the flight size: enough to fill
/// the window between two of our passes at a few hundred Mbit/s.
pub(crate) const MIN_WAITING: u64 = 128 * 1024;

/// Bytes a stream may send per turn (deficit round robin): streams share the link by
/// bytes, whatever their message sizes.
pub(crate) const QUANTUM: usize = 16 * 1024;

pub(super) const CHUNK_DATA: u8 = 0;
const CHUNK_SACK: u8 = 3;
const CHUNK_FORWARD_TSN: u8 = 192;
/// DATA chunk flags (RFC 9260 §3.3.1): unordered, last fragment.
const FLAG_UNORDERED: u8 = 4;
const FLAG_END: u8 = 1;
const DATA_HEADER: usize = 16;

/// One thing to do on a stream, in order with the rest of that stream.
#[derive(Debug)]
pub(crate) enum Item {
    /// Create the stream or set its reliability.
    Open { unordered: bool, rel: Reliability },
    Message {
        ppi: Ppi,
        data: Bytes,
        /// When the router asked: a maxPacketLifeTime counts from here.
        queued: Instant,
    },
    /// Reset the outgoing stream (after everything queued before it).
    Reset,
}

#[derive(Debug, Default)]
struct StreamQueue {
    items: VecDeque<Item>,
    /// Bytes this stream may still send before the next one's turn.
    deficit: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct SendQueue {
    /// Workaround 1 (module docs): hand rtc-sctp a message only while [`Self::has_room`].
    /// Off (tests only): everything goes to rtc-sctp at once, as without this queue.
    limit_depth: bool,
    /// Workaround 2: bytes a stream may send per turn, [`QUANTUM`]. Without fair
    /// scheduling (tests only) a stream keeps its turn while it has anything queued.
    quantum: usize,
    streams: HashMap<u16, StreamQueue>,
    /// Streams with something queued, in the order they get their next turn.
    turns: VecDeque<u16>,
    /// Message bytes handed to the association.
    written: u64,
    /// Of those, bytes seen leaving in DATA chunks the first time.
    transmitted: u64,
    /// Bytes the association reported acknowledged or abandoned.
    released: u64,
    /// Highest TSN seen in the DATA chunks we sent.
    highest_tsn: Option<u32>,
    /// maxPacketLifeTime of the streams that have one.
    lifetimes: HashMap<u16, Duration>,
    /// Streams opened unordered.
    unordered: HashSet<u16>,
    /// Ordered messages handed to rtc-sctp and not seen sent yet: while any is, no
    /// unordered message is handed over (rtc-sctp sends every unordered one first,
    /// so a steady flow of them would keep it there for good).
    ordered_waiting: usize,
    /// Since when an ordered message has waited without any being seen leaving (the
    /// guard above lapses after [`ORDERED_GUARD_MAX`]).
    ordered_since: Option<Instant>,
    /// The peer's cumulative TSN acknowledgement, from its latest SACK.
    peer_cum: Option<u32>,
    /// A SACK reported gap blocks since [`SendQueue::take_gap_report`].
    gap_reported: bool,
}

impl Default for SendQueue {
    fn default() -> Self {
        Self::new(true, true)
    }
}

impl SendQueue {
    /// `limit_depth` and `fair`: the two workarounds (module docs), on but in tests.
    pub(crate) fn new(limit_depth: bool, fair: bool) -> Self {
        Self {
            limit_depth,
            quantum: if fair { QUANTUM } else { usize::MAX / 2 },
            streams: HashMap::new(),
            turns: VecDeque::new(),
            written: 0,
            transmitted: 0,
            released: 0,
            highest_tsn: None,
            lifetimes: HashMap::new(),
            unordered: HashSet::new(),
            ordered_waiting: 0,
            ordered_since: None,
            peer_cum: None,
            gap_reported: false,
        }
    }

    pub(crate) fn push(&mut self, stream: u16, item: Item) {
        if let Item::Open { rel, unordered } = &item {
            if *unordered {
                self.unordered.insert(stream);
            } else {
                self.unordered.remove(&stream);
            }
            if let Reliability::Timed(ms) = rel {
                let life = Duration::from_millis(u64::from(*ms));
                self.lifetimes.insert(stream, life);
            } else {
                self.lifetimes.remove(&stream);
            }
        }
        let q = self.streams.entry(stream).or_default();
        if q.items.is_empty() {
            // A stream starts its turn with a quantum to spend.
            q.deficit = self.quantum;
            self.turns.push_back(stream);
        }
        q.items.push_back(item);
    }

    /// Queued bytes of messages, all streams.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.streams
            .values()
            .flat_map(|q| &q.items)
            .map(|i| match i {
                Item::Message { data, .. } => data.len(),
                _ => 0,
            })
            .sum()
    }

    /// Bytes written to the association that it has not sent yet (as far as we can see).
    pub(crate) fn waiting(&self) -> u64 {
        let not_sent = self.written.saturating_sub(self.transmitted);
        let not_released = self.written.saturating_sub(self.released);
        not_sent.min(not_released)
    }

    /// Whether the association may be given another message now (workaround 1, module
    /// docs).
    fn has_room(&self) -> bool {
        if !self.limit_depth {
            return true;
        }
        self.waiting() < MIN_WAITING.max(self.in_flight() / 4)
    }

    /// Bytes the association has sent and not had acknowledged (or abandoned): its
    /// congestion window while that is what holds it back.
    pub(crate) fn in_flight(&self) -> u64 {
        self.transmitted.saturating_sub(self.released)
    }

    /// Lets the ordered guard lapse when no ordered message has been seen leaving for
    /// [`ORDERED_GUARD_MAX`]: one that rtc-sctp drops unsent (its stream reset, its
    /// lifetime over) is never seen leaving, and while unordered data keeps rtc-sctp's
    /// queue from emptying, it would hold every unordered stream back for good.
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.ordered_waiting == 0 {
            self.ordered_since = None;
            return;
        }
        let since = *self.ordered_since.get_or_insert(now);
        if now.saturating_duration_since(since) > ORDERED_GUARD_MAX {
            self.ordered_waiting = 0;
            self.ordered_since = None;
        }
    }

    /// The next item to hand over: control items (Open, Reset) always, a message while
    /// there is room. Streams take turns by bytes (workaround 2, module docs).
    pub(crate) fn next(&mut self) -> Option<(u16, Item)> {
        if self.waiting() == 0 {
            // Nothing waits in rtc-sctp, so no ordered message either (one given up or
            // refused unsent is never seen leaving).
            self.ordered_waiting = 0;
        }
        let room = self.has_room();
        loop {
            let stream = *self.turns.front()?;
            let Some(q) = self.streams.get_mut(&stream) else {
                self.turns.pop_front();
                continue;
            };
            let size = match q.items.front() {
                Some(Item::Message { data, .. }) => Some(data.len()),
                Some(_) => None,
                None => {
                    self.streams.remove(&stream);
                    self.turns.pop_front();
                    continue;
                }
            };
            match size {
                Some(_) if !room => return self.next_control(),
                Some(_) if self.ordered_waiting > 0 && self.unordered.contains(&stream) => {
                    return self.next_control()
                }
                Some(n) if q.deficit < n => {
                    // Its turn is over: the next stream's begins.
                    q.deficit += self.quantum;
                    self.turns.rotate_left(1);
                    continue;
                }
                Some(n) => q.deficit -= n,
                None => {}
            }
            let item = q.items.pop_front()?;
            if q.items.is_empty() {
                self.streams.remove(&stream);
                self.turns.pop_front();
            }
            return Some((stream, item));
        }
    }

    /// Drops everything queued on `stream` (it was reset: nothing more can go on it);
    /// returns the message bytes dropped.
    pub(crate) fn drop_stream(&mut self, stream: u16) -> usize {
        let Some(q) = self.streams.remove(&stream) else {
            return 0;
        };
        self.turns.retain(|s| *s != stream);
        q.items
            .iter()
            .map(|i| match i {
                Item::Message { data, .. } => data.len(),
                _ => 0,
            })
            .sum()
    }

    /// The first stream whose next item is not a message (Open, Reset), if any.
    fn next_control(&mut self) -> Option<(u16, Item)> {
        let i = self.turns.iter().position(|s| {
            self.streams
                .get(s)
                .and_then(|q| q.items.front())
                .is_some_and(|i| !matches!(i, Item::Message { .. }))
        })?;
        let stream = self.turns[i];
        let q = self.streams.get_mut(&stream)?;
        let item = q.items.pop_front()?;
        if q.items.is_empty() {
            self.streams.remove(&stream);
            self.turns.remove(i);
        }
        Some((stream, item))
    }

    /// Whether a message of `stream` queued at `queued` has outlived its stream's
    /// maxPacketLifeTime while waiting here: it is dropped, never sent (no gap for the
    /// peer: rtc-sctp never numbered it).
    pub(crate) fn expired(&self, stream: u16, queued: Instant, now: Instant) -> bool {
        self.lifetimes
            .get(&stream)
            .is_some_and(|life| now.duration_since(queued) > *life)
    }

    /// A message of `bytes` was handed to the association; `ordered` as it was sent (DCEP
    /// messages always are).
    pub(crate) fn wrote(&mut self, bytes: usize, ordered: bool) {
        self.ordered_waiting += usize::from(ordered);
        self.written += bytes as u64;
    }

    pub(crate) fn released(&mut self, bytes: usize) {
        self.released += bytes as u64;
    }

    /// Looks at a packet the association sends (tests, fuzzing; the engine walks each
    /// packet once and calls [`Self::sent_chunk`]). Returns the user data bytes sent for
    /// the first time.
    pub(crate) fn sent_packet(&mut self, p: &[u8]) -> usize {
        chunk_walk(p)
            .map(|(ty, len, chunk)| self.sent_chunk(ty, len, chunk))
            .sum()
    }

    /// A chunk the association sends: new DATA chunks have left the queue. Returns the
    /// user data bytes sent for the first time.
    pub(crate) fn sent_chunk(&mut self, ty: u8, len: usize, chunk: &[u8]) -> usize {
        if ty != CHUNK_DATA && ty != CHUNK_FORWARD_TSN {
            return 0;
        }
        let Some(tsn) = be32(chunk, 4) else { return 0 };
        if self.highest_tsn.is_some_and(|h| !tsn_after(tsn, h)) {
            return 0;
        }
        self.highest_tsn = Some(tsn);
        // A FORWARD TSN (RFC 3758) may name TSNs given up before they were ever sent:
        // unacknowledged until the peer's SACK says so.
        if ty != CHUNK_DATA {
            return 0;
        }
        let flags = chunk.get(1).copied().unwrap_or(0);
        if flags & (FLAG_UNORDERED | FLAG_END) == FLAG_END {
            self.ordered_waiting = self.ordered_waiting.saturating_sub(1);
            self.ordered_since = None;
        }
        let fresh = len.saturating_sub(DATA_HEADER);
        self.transmitted += fresh as u64;
        fresh
    }

    /// Looks at a packet from the peer (tests, fuzzing; the engine calls
    /// [`Self::received_chunk`]): true when its SACK moved the cumulative acknowledgement
    /// on (abandoned data skipped by a FORWARD TSN included).
    pub(crate) fn received_packet(&mut self, p: &[u8]) -> bool {
        let mut moved = false;
        for (ty, _, chunk) in chunk_walk(p) {
            moved |= self.received_chunk(ty, chunk);
        }
        moved
    }

    /// Whether a SACK seen by [`Self::received_chunk`] since the last call reported
    /// gap blocks (data received above a hole).
    pub(crate) fn take_gap_report(&mut self) -> bool {
        std::mem::take(&mut self.gap_reported)
    }

    /// A chunk from the peer: true when it is a SACK that moved the cumulative
    /// acknowledgement on.
    pub(crate) fn received_chunk(&mut self, ty: u8, chunk: &[u8]) -> bool {
        let Some(cum) = be32(chunk, 4).filter(|_| ty == CHUNK_SACK) else {
            return false;
        };
        // Gap blocks in a SACK no older than the last: a hole (rto.rs).
        if self.peer_cum.is_none_or(|c| !tsn_after(c, cum)) {
            self.gap_reported |= be16(chunk, 12).is_some_and(|n| n > 0);
        }
        if self.peer_cum.is_some_and(|c| !tsn_after(cum, c)) {
            return false;
        }
        let moved = self.peer_cum.is_some();
        self.peer_cum = Some(cum);
        moved
    }

    /// Whether the association has sent DATA the peer has not acknowledged yet, given up
    /// or not (given-up data still needs its FORWARD TSN through).
    pub(crate) fn unacknowledged(&self) -> bool {
        match (self.highest_tsn, self.peer_cum) {
            (Some(h), Some(c)) => tsn_after(h, c),
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Everything still queued, dropped (the association is gone): message bytes per
    /// stream, for the router's buffered amounts.
    pub(crate) fn clear(&mut self) -> Vec<(u16, usize)> {
        self.turns.clear();
        self.streams
            .drain()
            .map(|(s, q)| {
                let bytes = q
                    .items
                    .iter()
                    .map(|i| match i {
                        Item::Message { data, .. } => data.len(),
                        _ => 0,
                    })
                    .sum();
                (s, bytes)
            })
            .filter(|(_, b)| *b > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Item {
        Item::Message {
            ppi: Ppi::Binary,
            data: Bytes::from(vec![0u8; n]),
            queued: Instant::now(),
        }
    }

    #[test]
    fn messages_outlive_their_lifetime_only_on_timed_streams() {
        let mut q = SendQueue::default();
        let t0 = Instant::now();
        q.push(
            1,
            Item::Open {
                unordered: false,
                rel: Reliability::Timed(50),
            },
        );
        q.push(
            3,
            Item::Open {
                unordered: false,
                rel: Reliability::Rexmit(0),
            },
        );
        assert!(!q.expired(1, t0, t0 + Duration::from_millis(50)));
        assert!(q.expired(1, t0, t0 + Duration::from_millis(51)));
        assert!(!q.expired(3, t0, t0 + Duration::from_secs(60)));
        // Re-opened reliable: no lifetime any more.
        q.push(
            1,
            Item::Open {
                unordered: false,
                rel: Reliability::Reliable,
            },
        );
        assert!(!q.expired(1, t0, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn an_ordered_message_never_seen_leaving_holds_unordered_ones_back_one_second_at_most() {
        let mut q = SendQueue::default();
        let t0 = Instant::now();
        let unordered = Item::Open {
            unordered: true,
            rel: Reliability::Reliable,
        };
        q.push(2, unordered);
        assert!(matches!(q.next(), Some((2, Item::Open { .. }))));
        // An ordered message handed over and dropped by rtc-sctp unsent (its stream reset):
        // never seen leaving, never released.
        q.wrote(100, true);
        q.push(2, msg(10));
        q.tick(t0);
        assert!(q.next().is_none(), "held back behind the ordered one");
        q.tick(t0 + Duration::from_millis(900));
        assert!(q.next().is_none(), "still inside the guard");
        q.tick(t0 + Duration::from_millis(1100));
        assert!(matches!(q.next(), Some((2, Item::Message { .. }))));
    }

    /// A packet with DATA chunks of the given (tsn, user data length).
    fn data_packet(chunks: &[(u32, usize)]) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        for &(tsn, n) in chunks {
            let len = DATA_HEADER + n;
            p.extend_from_slice(&[CHUNK_DATA, 3]);
            p.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
            p.extend_from_slice(&tsn.to_be_bytes());
            p.extend_from_slice(&[0u8; 8]);
            p.extend(std::iter::repeat_n(7u8, n));
            while !p.len().is_multiple_of(4) {
                p.push(0);
            }
        }
        p
    }

    /// Takes items until the queue gives none; `sent` says whether each message leaves
    /// and is acknowledged at once (an open window) or stays waiting in the association.
    fn take(q: &mut SendQueue, sent: bool) -> Vec<u16> {
        let mut order = Vec::new();
        while let Some((s, item)) = q.next() {
            if let Item::Message { data, .. } = item {
                q.wrote(data.len(), true);
                if sent {
                    q.transmitted += data.len() as u64;
                    q.released(data.len());
                }
            }
            order.push(s);
        }
        order
    }

    fn take_all(q: &mut SendQueue) -> Vec<u16> {
        take(q, false)
    }

    #[test]
    fn streams_share_by_bytes() {
        let mut q = SendQueue::default();
        // Stream 1: messages of a quantum; stream 2: of a quarter; stream 3: two quanta.
        for _ in 0..4 {
            q.push(1, msg(QUANTUM));
            for _ in 0..4 {
                q.push(2, msg(QUANTUM / 4));
            }
        }
        q.push(3, msg(2 * QUANTUM));
        let order = take(&mut q, true);
        assert_eq!(
            &order[..5],
            [1, 2, 2, 2, 2],
            "a quantum each per turn (stream 3 saves up for its large message): {order:?}"
        );
        let at = |s: u16| order.iter().position(|x| *x == s).unwrap();
        assert!(at(3) < 12, "stream 3 sent on its second turn: {order:?}");
        assert_eq!(order.len(), 21);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn a_control_item_is_not_held_behind_the_window() {
        let mut q = SendQueue::default();
        q.push(1, msg(QUANTUM));
        q.push(1, msg(10));
        q.push(2, msg(10));
        q.push(2, Item::Reset);
        q.push(3, Item::Reset);
        assert!(matches!(q.next(), Some((1, Item::Message { .. }))));
        q.wrote(usize::try_from(MIN_WAITING).unwrap(), true);
        // No room for messages: the reset of stream 3 goes, stream 2's waits its message.
        assert!(matches!(q.next(), Some((3, Item::Reset))));
        assert!(q.next().is_none());
    }

    #[test]
    fn messages_wait_while_the_association_has_enough_waiting() {
        let mut q = SendQueue::default();
        let n = usize::try_from(MIN_WAITING).unwrap() / 4;
        for _ in 0..8 {
            q.push(1, msg(n));
        }
        assert_eq!(take_all(&mut q).len(), 4, "a full MIN_WAITING handed over");
        // A control item on another stream still goes; a message does not.
        q.push(2, Item::Reset);
        q.push(2, msg(1));
        assert!(matches!(q.next(), Some((2, Item::Reset))));
        assert!(q.next().is_none());
        // Two of the four leave in DATA chunks (TSNs 10, 11; a resend of 10 counts once).
        let sent = data_packet(&[(10, n), (11, n)]);
        assert_eq!(q.sent_packet(&sent), 2 * n);
        assert_eq!(q.sent_packet(&data_packet(&[(10, n)])), 0);
        assert_eq!(q.waiting(), 2 * n as u64);
        // Room for about two more: stream 2 gets its small one in, stream 1 two.
        let mut order = take_all(&mut q);
        order.sort_unstable();
        assert_eq!(order, [1, 1, 2]);
    }

    fn sack_packet(cum: u32) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&[CHUNK_SACK, 0, 0, 16]);
        p.extend_from_slice(&cum.to_be_bytes());
        p.extend_from_slice(&[0u8; 8]);
        p
    }

    #[test]
    fn unacknowledged_follows_the_peers_sacks() {
        let mut q = SendQueue::default();
        assert!(!q.unacknowledged());
        q.sent_packet(&data_packet(&[(100, 10), (101, 10)]));
        assert!(q.unacknowledged());
        assert!(
            !q.received_packet(&sack_packet(99)),
            "the first SACK is no move"
        );
        assert!(q.received_packet(&sack_packet(100)));
        assert!(q.unacknowledged());
        assert!(!q.received_packet(&sack_packet(100)));
        assert!(q.received_packet(&sack_packet(101)));
        assert!(!q.unacknowledged());
        // TSNs given up unsent and skipped by a FORWARD TSN wait for the peer's SACK too.
        let mut fwd = vec![0u8; 12];
        fwd.extend_from_slice(&[CHUNK_FORWARD_TSN, 0, 0, 8]);
        fwd.extend_from_slice(&105u32.to_be_bytes());
        assert_eq!(q.sent_packet(&fwd), 0);
        assert!(q.unacknowledged());
        assert!(q.received_packet(&sack_packet(105)));
        assert!(!q.unacknowledged());
    }

    #[test]
    fn waiting_never_exceeds_what_is_unacknowledged() {
        let mut q = SendQueue::default();
        q.push(1, msg(1000));
        take_all(&mut q);
        // Abandoned before it was ever sent (a lifetime ran out in rtc-sctp's queue).
        q.released(1000);
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn a_reset_stream_drops_what_it_had_queued_and_the_others_go_on() {
        let mut q = SendQueue::default();
        q.push(1, msg(100));
        q.push(1, msg(200));
        q.push(1, Item::Reset);
        q.push(2, msg(50));
        assert_eq!(q.drop_stream(1), 300);
        assert_eq!(q.drop_stream(1), 0);
        assert_eq!(q.queued_bytes(), 50);
        assert_eq!(take(&mut q, true), [2]);
        assert!(q.next().is_none());
    }

    #[test]
    fn clear_reports_queued_bytes_per_stream() {
        let mut q = SendQueue::default();
        q.push(
            4,
            Item::Open {
                unordered: false,
                rel: Reliability::Reliable,
            },
        );
        q.push(4, msg(5));
        q.push(6, Item::Reset);
        let mut left = q.clear();
        left.sort();
        assert_eq!(left, [(4, 5)]);
        assert!(q.next().is_none());
    }
}
