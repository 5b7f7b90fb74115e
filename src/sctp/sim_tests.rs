//! Two [`SctpEngine`]s over the simulated network (`testkit::simnet`), on a virtual clock:
//! the impairment matrix, fast and the same every run. No DTLS: SCTP packets go on the
//! simulated wire as they are. tests/lossy.rs keeps a smaller set on real UDP.

use super::engine::{SctpEngine, SctpEvent, SctpIo, Workarounds};
use super::SctpConfig;
use super::{Ppi, Reliability};
use crate::testkit::impair::Impairment;
use crate::testkit::simnet::{Side, SimNet};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One endpoint's outputs.
#[derive(Default)]
pub(super) struct Out {
    /// The virtual time of the step being run (messages are stamped with it).
    now: Option<Instant>,
    packets: Vec<Bytes>,
    pub(super) connected: bool,
    closed: bool,
    /// Messages received, per stream, in arrival order: (virtual time, data).
    pub(super) got: HashMap<u16, Vec<(Instant, Bytes)>>,
    /// Bytes released per stream (acknowledged, abandoned or dropped unsent).
    pub(super) released: HashMap<u16, usize>,
    /// Streams the peer reset (or ours that could not be), with when.
    pub(super) reset: Vec<(u16, Instant)>,
}

impl SctpIo for Out {
    fn transmit(&mut self, packet: Bytes) {
        self.packets.push(packet);
    }

    fn event(&mut self, event: SctpEvent) {
        match event {
            SctpEvent::Connected { .. } => self.connected = true,
            SctpEvent::Message { stream, data, .. } => {
                let at = self.now.expect("set by the pair");
                self.got.entry(stream).or_default().push((at, data));
            }
            SctpEvent::Released { stream, bytes } => {
                *self.released.entry(stream).or_default() += bytes
            }
            SctpEvent::StreamClosed { stream } => self
                .reset
                .push((stream, self.now.expect("set by the pair"))),
            SctpEvent::Failed(e) => panic!("association failed: {e}"),
            SctpEvent::Closed { .. } => self.closed = true,
        }
    }

    fn backlogged(&self) -> bool {
        false
    }
}

pub(super) struct Node {
    pub(super) engine: SctpEngine,
    pub(super) out: Out,
}

/// Two engines, A the DTLS client, over a [`SimNet`].
pub(super) struct Pair {
    pub(super) net: SimNet<Bytes>,
    /// When the application wants to run again (a timer of the test's own).
    pub(super) wake: Option<Instant>,
    pub(super) a: Node,
    pub(super) b: Node,
    /// Watches the packets delivered (the loss-recovery figures).
    trace: Option<loss::Trace>,
}

impl Pair {
    fn new(seed: u64, imp: Impairment) -> Self {
        Self::with(seed, imp, Workarounds::ALL)
    }

    /// Both engines with only the workarounds `work`.
    pub(super) fn with(seed: u64, imp: Impairment, work: Workarounds) -> Self {
        Self::with_config(seed, imp, work, SctpConfig::default())
    }

    /// Both engines with `config` and only the workarounds `work`.
    pub(super) fn with_config(
        seed: u64,
        imp: Impairment,
        work: Workarounds,
        config: SctpConfig,
    ) -> Self {
        let t0 = Instant::now();
        let node = |name: &str| Node {
            engine: SctpEngine::with_workarounds(name.into(), config.clone(), t0, work),
            out: Out::default(),
        };
        let mut p = Pair {
            net: SimNet::new(t0, seed, imp, imp),
            wake: None,
            a: node("A"),
            b: node("B"),
            trace: None,
        };
        p.set_now();
        p.b.engine.start(t0, false, &mut p.b.out);
        p.a.engine.start(t0, true, &mut p.a.out);
        p
    }

    fn set_now(&mut self) {
        let now = Some(self.net.now());
        self.a.out.now = now;
        self.b.out.now = now;
    }

    fn node(&mut self, side: Side) -> &mut Node {
        side.of(&mut self.a, &mut self.b)
    }

    pub(super) fn connect(&mut self) {
        assert!(
            self.run_until(Duration::from_secs(60), |p| p.a.out.connected
                && p.b.out.connected),
            "no association in 60 s"
        );
    }
}

/// Two endpoints stepped on the simulated network's clock ([`Pair`] and
/// `stack_sim::StackPair`).
pub(super) trait Sim {
    fn net(&mut self) -> &mut SimNet<Bytes>;
    /// Takes the test's own wake-up time, if it set one.
    fn wake(&mut self) -> Option<Instant>;
    /// When each side's timer is next due.
    fn timeouts(&mut self) -> [Option<Instant>; 2];
    /// Runs both sides on what they were given and puts what they send on the wire.
    fn flush(&mut self);
    /// `to` receives `packet` at `now`.
    fn deliver(&mut self, now: Instant, to: Side, packet: Bytes);
    /// Both sides handle the timers due by `now`.
    fn on_timeouts(&mut self, now: Instant);

    /// Runs to the next thing that happens (a delivery, a timeout, the test's wake-up);
    /// false when nothing will.
    fn step(&mut self) -> bool {
        self.flush();
        let [a, b] = self.timeouts();
        let next = [self.wake(), self.net().next_due(), a, b];
        let Some(next) = next.into_iter().flatten().min() else {
            return false;
        };
        self.net().advance(next);
        let now = self.net().now();
        while let Some((to, packet)) = self.net().deliver() {
            self.deliver(now, to, packet);
        }
        self.on_timeouts(now);
        true
    }

    /// Steps until `done` or `limit` of virtual time; false on the limit.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool
    where
        Self: Sized,
    {
        let end = self.net().now() + limit;
        while !done(self) {
            if self.net().now() > end || !self.step() {
                return done(self);
            }
        }
        true
    }
}

impl Sim for Pair {
    fn net(&mut self) -> &mut SimNet<Bytes> {
        &mut self.net
    }

    fn wake(&mut self) -> Option<Instant> {
        self.wake.take()
    }

    fn timeouts(&mut self) -> [Option<Instant>; 2] {
        [self.a.engine.poll_timeout(), self.b.engine.poll_timeout()]
    }

    /// Drains both engines and puts their packets on the wire.
    fn flush(&mut self) {
        self.set_now();
        let now = self.net.now();
        for side in [Side::A, Side::B] {
            let n = self.node(side);
            n.engine.drain(now, &mut n.out);
            let packets = std::mem::take(&mut n.out.packets);
            for p in packets {
                self.net.send(side, p);
            }
        }
    }

    fn deliver(&mut self, now: Instant, to: Side, p: Bytes) {
        self.set_now();
        if let Some(t) = self.trace.as_mut() {
            t.delivered(to, &p, now);
        }
        let n = self.node(to);
        n.engine.packet(now, BytesMut::from(&p[..]));
        n.engine.drain(now, &mut n.out);
    }

    fn on_timeouts(&mut self, now: Instant) {
        for side in [Side::A, Side::B] {
            let n = self.node(side);
            if n.engine.poll_timeout().is_some_and(|t| t <= now) {
                n.engine.handle_timeout(now);
            }
        }
    }
}

/// How a channel delivers.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Reliable,
    Unordered,
    Rexmit0,
    UnorderedRexmit0,
    Lifetime(u32),
}

impl Kind {
    fn params(self) -> (bool, Reliability) {
        match self {
            Kind::Reliable => (false, Reliability::Reliable),
            Kind::Unordered => (true, Reliability::Reliable),
            Kind::Rexmit0 => (false, Reliability::Rexmit(0)),
            Kind::UnorderedRexmit0 => (true, Reliability::Rexmit(0)),
            Kind::Lifetime(ms) => (false, Reliability::Timed(ms)),
        }
    }
}

/// Message `i` of a transfer: its index, then bytes that follow from it.
pub(super) fn message(i: u32, sizes: &[usize]) -> Bytes {
    let n = sizes[i as usize % sizes.len()].max(4);
    let mut m = Vec::with_capacity(n);
    m.extend_from_slice(&i.to_be_bytes());
    m.extend((4..n).map(|k| (i as usize * 31 + k) as u8));
    Bytes::from(m)
}

fn raw_index(m: &[u8]) -> u32 {
    u32::from_be_bytes(m[..4].try_into().unwrap())
}

pub(super) fn index(m: &[u8]) -> u32 {
    let i = raw_index(m);
    assert_eq!(m, &message(i, SIZES)[..m.len()], "message {i} corrupted");
    i
}

pub(super) const SIZES: &[usize] = &[4, 100, 1100, 1300, 3000, 9000, 20_000, 600, 50];
/// Most unreleased bytes the sender keeps written (an application's buffered amount).
const WINDOW: usize = 256 * 1024;

/// What one transfer saw.
#[derive(Debug)]
struct Outcome {
    /// Indices received, in order of arrival.
    got: Vec<u32>,
    /// When each message was written.
    sent_at: Vec<Instant>,
    got_at: Vec<Instant>,
    seconds: f64,
    digest: u64,
}

/// The application side of a transfer.
#[derive(Default)]
struct Sender {
    next: u32,
    written: usize,
    sent_at: Vec<Instant>,
}

impl Sender {
    fn write(&mut self, p: &mut Pair) {
        let m = message(self.next, SIZES);
        self.written += m.len();
        self.sent_at.push(p.net.now());
        p.a.engine.write(p.net.now(), 1, Ppi::Binary, m);
        self.next += 1;
    }
}

/// Most messages sent after the `count` of a partially reliable transfer, one every
/// [`TAIL_GAP`] until one of them arrives: what is given up must not stall the channel.
const TAIL: u32 = 50;
const TAIL_GAP: Duration = Duration::from_millis(50);

/// A sends `count` messages on stream 1 of `kind` to B, keeping at most [`WINDOW`]
/// unreleased, and waits for all of them (reliable kinds) or for one of a trickle of
/// [`TAIL`] messages after them and everything released (partially reliable ones).
fn transfer(seed: u64, imp: &str, kind: Kind, count: u32) -> Outcome {
    let mut p = Pair::new(seed, Impairment::parse(imp).unwrap());
    p.connect();
    let (unordered, rel) = kind.params();
    let reliable = rel == Reliability::Reliable;
    p.a.engine.open(1, unordered, rel);
    let began = p.net.now();
    let mut tx = Sender::default();
    let ok = p.run_until(Duration::from_secs(600), |p| {
        let released = p.a.out.released.get(&1).copied().unwrap_or(0);
        let got = p.b.out.got.get(&1).map_or(&[][..], Vec::as_slice);
        let n = got.len();
        let tail_came = got.iter().any(|(_, m)| raw_index(m) >= count);
        while tx.next < count && tx.written - released < WINDOW {
            tx.write(p);
        }
        if reliable {
            return n == count as usize;
        }
        if tx.next >= count && !tail_came && tx.next < count + TAIL {
            let last = *tx.sent_at.last().expect("written");
            if p.net.now() >= last + TAIL_GAP {
                tx.write(p);
            } else {
                // Wake up for the next one even if nothing else happens by then.
                p.wake = Some(last + TAIL_GAP);
            }
        }
        tail_came && released == tx.written
    });
    let sent_at = tx.sent_at;

    let got: Vec<(Instant, Bytes)> = p.b.out.got.remove(&1).unwrap_or_default();
    assert!(
        ok,
        "{imp} {kind:?}: stalled, {} of {count} after {:?}",
        got.len(),
        p.net.now() - began
    );
    Outcome {
        got: got.iter().map(|(_, m)| index(m)).collect(),
        got_at: got.iter().map(|(t, _)| *t).collect(),
        sent_at,
        seconds: (p.net.now() - began).as_secs_f64(),
        digest: p.net.digest(),
    }
}

/// Checks a transfer's delivery against its kind; returns a line for the table.
fn check(imp: &str, kind: Kind, count: u32, o: &Outcome) -> String {
    let n = o.got.len();
    let mut seen = vec![false; (count + TAIL) as usize];
    for &i in &o.got {
        assert!(!seen[i as usize], "{imp} {kind:?}: message {i} twice");
        seen[i as usize] = true;
    }
    let in_order = o.got.windows(2).all(|w| w[0] < w[1]);
    let overtaken = o.got.windows(2).filter(|w| w[1] < w[0]).count();
    match kind {
        Kind::Reliable => {
            assert_eq!(n, count as usize, "{imp}: reliable lost messages");
            assert!(in_order, "{imp}: reliable out of order");
        }
        Kind::Unordered => assert_eq!(n, count as usize, "{imp}: unordered lost messages"),
        Kind::UnorderedRexmit0 => {
            assert!(o.got.iter().any(|i| *i >= count), "{imp} {kind:?}: no tail");
        }
        Kind::Rexmit0 | Kind::Lifetime(_) => {}
    }
    // Sent once, at 5% or 10% loss some are given up.
    let heavy = imp.starts_with("loss=5%") || imp.starts_with("loss=10%");
    if heavy && matches!(kind, Kind::Rexmit0 | Kind::UnorderedRexmit0) {
        assert!(
            !seen[..count as usize].iter().all(|s| *s),
            "{imp} {kind:?}: none given up"
        );
    }
    match kind {
        Kind::Reliable | Kind::Unordered | Kind::UnorderedRexmit0 => {}
        Kind::Rexmit0 | Kind::Lifetime(_) => {
            assert!(in_order, "{imp} {kind:?}: ordered channel out of order");
            // Given-up messages do not stall the channel: a later one still comes.
            assert!(o.got.iter().any(|i| *i >= count), "{imp} {kind:?}: no tail");
        }
    }
    // Lifetimes up to 250 ms may end at an early retransmission (src/sctp/rto.rs).
    if let Kind::Lifetime(ms @ 251..) = kind {
        // Nothing given up before its lifetime: the next message to arrive after one that
        // never did came no sooner than that lifetime after the lost one was sent.
        let life = Duration::from_millis(ms.into());
        for (k, &i) in o.got.iter().enumerate() {
            let first_missing = if k == 0 { 0 } else { o.got[k - 1] + 1 };
            for lost in first_missing..i {
                let waited = o.got_at[k] - o.sent_at[lost as usize];
                assert!(
                    waited >= life,
                    "{imp}: message {lost} given up {waited:?} after it was sent"
                );
            }
        }
    }
    format!(
        "{imp:<28} {kind:<14} {n:>5}/{count:<5} {:>7.2} s  {overtaken} overtaken",
        o.seconds,
        kind = format!("{kind:?}")
    )
}

const CONDITIONS: &[&str] = &[
    "none",
    "loss=1%",
    "loss=5%",
    "loss=10%",
    "reorder=5%,delay=1ms",
    "dup=5%",
    "delay=20ms,jitter=5ms",
    "burst=1%/30%",
    "rate=100mbit,queue=64000,delay=5ms",
    "delay=5ms,jitter=2ms,loss=2%,burst=0.5%/40%,dup=2%,reorder=3%",
];

fn kinds() -> [(Kind, u32); 6] {
    [
        (Kind::Reliable, 400),
        (Kind::Unordered, 400),
        (Kind::Rexmit0, 300),
        (Kind::UnorderedRexmit0, 300),
        (Kind::Lifetime(50), 300),
        (Kind::Lifetime(500), 300),
    ]
}

/// Every condition with every kind of channel (docs/TESTING.md).
#[test]
fn impairment_matrix_on_the_simulated_network() {
    let mut table = Vec::new();
    for (c, imp) in CONDITIONS.iter().enumerate() {
        for (kind, count) in kinds() {
            let o = transfer(c as u64 + 1, imp, kind, count);
            let line = check(imp, kind, count, &o);
            println!("{line}");
            table.push(line);
        }
    }
    assert_eq!(table.len(), CONDITIONS.len() * kinds().len());
}

/// The same seed gives the same run, packet for packet.
#[test]
fn a_simulated_run_repeats_exactly() {
    let imp = CONDITIONS[CONDITIONS.len() - 1];
    let runs: Vec<Outcome> = (0..2)
        .map(|_| transfer(9, imp, Kind::Lifetime(500), 200))
        .collect();
    assert_eq!(runs[0].digest, runs[1].digest);
    assert_eq!(runs[0].got, runs[1].got);
    assert_ne!(
        transfer(10, imp, Kind::Lifetime(500), 200).digest,
        runs[0].digest
    );
}

/// Loss recovery of a bulk transfer (docs/SCTP.md "Loss recovery"): how each loss was
/// repaired, and how long the peer's cumulative acknowledgement stood still meanwhile.
mod loss {
    use super::super::{be16, be32, chunk_walk, tsn_after};
    use super::*;

    /// What A saw of B's SACKs.
    #[derive(Debug, Default)]
    pub(super) struct Trace {
        cum: Option<u32>,
        /// Since when B has reported data above a cumulative acknowledgement that has
        /// not moved (a hole the sender knows of).
        stuck_since: Option<Instant>,
        /// How long each such hole stayed open.
        pub holes: Vec<Duration>,
        /// Highest TSN A sent (seen delivered or not: taken from B's SACKs' gap ends).
        highest: Option<u32>,
        /// Sum and count of (highest acknowledged TSN - cum) at each SACK: the chunks
        /// between the hole and the newest data B has.
        span: (u64, u64),
    }

    impl Trace {
        pub(super) fn delivered(&mut self, to: Side, p: &[u8], now: Instant) {
            if to != Side::A {
                return;
            }
            for (ty, _, c) in chunk_walk(p) {
                if ty != 3 {
                    continue;
                }
                let (Some(cum), Some(gaps)) = (be32(c, 4), be16(c, 12)) else {
                    continue;
                };
                // The last gap block ends highest.
                let top = gaps
                    .checked_sub(1)
                    .and_then(|g| be16(c, 16 + 4 * usize::from(g) + 2))
                    .map(|end| cum.wrapping_add(u32::from(end)));
                if let Some(top) = top {
                    if self.highest.is_none_or(|h| tsn_after(top, h)) {
                        self.highest = Some(top);
                    }
                    self.span.0 += u64::from(top.wrapping_sub(cum));
                    self.span.1 += 1;
                }
                let moved = self.cum.is_none_or(|c| tsn_after(cum, c));
                if moved {
                    self.cum = Some(cum);
                    if let Some(t) = self.stuck_since.take() {
                        self.holes.push(now - t);
                    }
                }
                if gaps > 0 && self.stuck_since.is_none() {
                    self.stuck_since = Some(now);
                }
            }
        }
    }

    /// Figures of one bulk transfer.
    #[derive(Debug)]
    pub(super) struct Figures {
        pub mbit: f64,
        pub stats: crate::sctp::rto::RecoveryStats,
        pub holes: Vec<Duration>,
        pub mean_span: f64,
    }

    /// A sends `mib` MiB in 16 KiB messages to B on one reliable channel, keeping up to
    /// 8 MiB unacknowledged (as the bench peers do).
    pub(super) fn bulk(seed: u64, imp: &str, mib: usize) -> Figures {
        const MSG: usize = 16 * 1024;
        const BUFFERED: usize = 8 << 20;
        let mut p = Pair::new(seed, Impairment::parse(imp).unwrap());
        p.connect();
        p.a.engine.open(1, false, Reliability::Reliable);
        p.trace = Some(Trace::default());
        let total = mib << 20;
        let began = p.net.now();
        let mut written = 0;
        let mut next = 0u32;
        let ok = p.run_until(Duration::from_secs(3600), |p| {
            let released = p.a.out.released.get(&1).copied().unwrap_or(0);
            while written < total && written - released < BUFFERED {
                let mut m = vec![0u8; MSG];
                m[..4].copy_from_slice(&next.to_be_bytes());
                p.a.engine
                    .write(p.net.now(), 1, Ppi::Binary, Bytes::from(m));
                written += MSG;
                next += 1;
            }
            // Received messages are counted and dropped (memory).
            let got = p.b.out.got.get_mut(&1).map_or(0, |v| {
                let n = v.len();
                v.clear();
                n
            });
            p.b.out
                .released
                .entry(u16::MAX)
                .and_modify(|n| *n += got)
                .or_insert(got);
            p.b.out.released[&u16::MAX] == total / MSG
        });
        assert!(ok, "{imp}: stalled");
        let secs = (p.net.now() - began).as_secs_f64();
        let t = p.trace.take().unwrap();
        Figures {
            mbit: (total * 8) as f64 / secs / 1e6,
            stats: p.a.engine.recovery_stats(),
            holes: t.holes,
            mean_span: t.span.0 as f64 / t.span.1.max(1) as f64,
        }
    }

    /// A bulk transfer at 1% loss, short and long round trips: every hole is repaired by
    /// fast retransmit or by a retransmission forced because the peer reported the hole;
    /// none waits for a timeout of no progress, ours (250 ms) or rtc-sctp's (1 s), while
    /// later data is acknowledged. Counted from data above a hole, the early timeout never
    /// came while a busy flight was acknowledged, and holes behind one waited for
    /// rtc-sctp's 1 s timer (`rto.rs`).
    #[test]
    fn at_one_percent_loss_no_hole_waits_for_a_timeout() {
        for (seed, imp) in [(3, "loss=1%,delay=0.1ms"), (4, "loss=1%,delay=10ms")] {
            let f = bulk(seed, imp, 4);
            let s = f.stats;
            assert!(s.fast_retransmits > 10, "{imp}: {s:?}");
            assert_eq!(
                s.t3_timeouts, s.forced,
                "{imp}: rtc-sctp's own timer ran out: {s:?}"
            );
            assert_eq!(s.forced, s.forced_for_hole, "{imp}: {s:?}");
            let longest = f.holes.iter().max().copied().unwrap_or_default();
            assert!(
                longest < super::super::rto::RTO_FLOOR,
                "{imp}: a hole stayed open {longest:?}: {s:?}"
            );
        }
    }

    /// The figures behind docs/SCTP.md "Loss recovery" (`cargo test --release --lib
    /// loss_recovery_figures -- --ignored --nocapture`).
    #[test]
    #[ignore = "measurement"]
    fn loss_recovery_figures() {
        let conds = std::env::var("SIM_CONDS").unwrap_or_else(|_| {
            "loss=1%,delay=0.1ms;loss=1%,delay=0.1ms,rate=1gbit;loss=1%,delay=10ms".into()
        });
        let mib: usize = std::env::var("SIM_MIB").map_or(32, |v| v.parse().unwrap());
        for imp in conds.split(';') {
            for seed in 1..=2 {
                let f = bulk(seed, imp, mib);
                let mut h = f.holes.clone();
                h.sort();
                let total: Duration = h.iter().sum();
                let over = |ms: u64| h.iter().filter(|d| **d > Duration::from_millis(ms)).count();
                println!(
                    "{imp:<32} seed {seed}: {:>7.1} Mbit/s  {:?}\n    holes {} (>5 ms {}, >50 ms {}, >200 ms {}), open {:.3} s in all, median {:?}, max {:?}; mean span {:.0} TSNs",
                    f.mbit,
                    f.stats,
                    h.len(),
                    over(5),
                    over(50),
                    over(200),
                    total.as_secs_f64(),
                    h.get(h.len() / 2),
                    h.last(),
                    f.mean_span
                );
            }
        }
    }
}
