//! A simulated network for deterministic tests: two endpoints, a virtual clock, and each
//! direction impaired as an [`Impairment`] says (seeded loss and bursts, delay, jitter,
//! reordering, duplication, a rate limit with a finite tail-drop queue). Sans-IO: no
//! sockets, no sleeping; the caller moves the clock. The same seed and the same inputs
//! give the same deliveries at the same virtual times ([`SimNet::digest`]).
//!
//! [`Link`] is one direction on its own, time passed in; the UDP relay in
//! [`super::impair`] runs the same one on real time, so both impair alike.
//!
//! Driving two engines over it (the shape of quinn-proto's test `Pair`):
//! ```text
//! loop {
//!     each engine's packets -> net.send(side, packet)
//!     while let Some((to, p)) = net.deliver() { that engine handles p at net.now() }
//!     next = earliest of net.next_due() and both engines' timeouts (None: idle, done)
//!     net.advance(next); engines whose timeout is due handle it
//! }
//! ```

use super::impair::Impairment;
use std::collections::BinaryHeap;
use std::hash::Hasher;
use std::time::{Duration, Instant};

/// A copy waiting for its time.
struct Due<T> {
    at: Instant,
    seq: u64,
    data: T,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Due<T> {}
impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Due<T> {
    // Earliest first out of the max-heap; ties in sending order.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Counts of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams given to the link.
    pub sent: u64,
    /// Dropped by the loss models.
    pub lost: u64,
    /// Dropped because the rate-limited queue was full.
    pub tail_dropped: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Held back to be overtaken.
    pub reordered: u64,
    /// Handed out at the far end.
    pub delivered: u64,
}

/// One direction of a link: seeded fates for datagrams given at explicit times. Draws in
/// the same order for the same datagrams, so a seed replays a run.
pub struct Link<T> {
    imp: Impairment,
    rng: fastrand::Rng,
    /// In the burst model's bad state (every datagram lost).
    bad: bool,
    /// Ties datagrams due at the same instant to their sending order.
    seq: u64,
    /// When the rate-limited link has sent everything queued on it.
    link_free: Option<Instant>,
    heap: BinaryHeap<Due<T>>,
    stats: LinkStats,
}

impl<T: AsRef<[u8]> + Clone> Link<T> {
    pub fn new(imp: Impairment, seed: u64) -> Self {
        Self {
            imp,
            rng: fastrand::Rng::with_seed(seed),
            bad: false,
            seq: 0,
            link_free: None,
            heap: BinaryHeap::new(),
            stats: LinkStats::default(),
        }
    }

    /// Whether anything holds datagrams back (else each is due the instant it is sent).
    pub fn delays(&self) -> bool {
        let imp = &self.imp;
        !imp.delay.is_zero() || !imp.jitter.is_zero() || imp.reorder > 0.0 || imp.rate > 0
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Gives the link a datagram at `now`: lost, queued once, or queued twice.
    pub fn send(&mut self, now: Instant, data: T) {
        self.stats.sent += 1;
        if let Some((enter, leave)) = self.imp.burst {
            self.bad = if self.bad {
                self.rng.f64() >= leave
            } else {
                self.rng.f64() < enter
            };
        }
        if self.bad || self.rng.f64() < self.imp.loss {
            self.stats.lost += 1;
            return;
        }
        if self.rng.f64() < self.imp.duplicate {
            self.stats.duplicated += 1;
            self.hold(now, data.clone());
        }
        self.hold(now, data);
    }

    /// Queues one copy: first the rate-limited queue (tail drop when full), then delay,
    /// jitter and reordering.
    fn hold(&mut self, now: Instant, data: T) {
        let imp = self.imp;
        let mut left = now;
        if imp.rate > 0 {
            let free = self.link_free.unwrap_or(now).max(now);
            let backlog = (free - now).as_secs_f64() * imp.rate as f64 / 8.0;
            let len = data.as_ref().len();
            if imp.queue > 0 && backlog + len as f64 > imp.queue as f64 {
                self.stats.tail_dropped += 1;
                return;
            }
            left = free + Duration::from_secs_f64(len as f64 * 8.0 / imp.rate as f64);
            self.link_free = Some(left);
        }
        let mut at = left + imp.delay;
        if !imp.jitter.is_zero() {
            at += imp.jitter.mul_f64(self.rng.f64());
        }
        // Drawn only where something delays (as the relay always did): a seed keeps
        // its loss pattern whatever the other settings.
        if self.delays() && self.rng.f64() < imp.reorder {
            self.stats.reordered += 1;
            at += imp.delay + Duration::from_millis(1);
        }
        self.seq += 1;
        self.heap.push(Due {
            at,
            seq: self.seq,
            data,
        });
    }

    /// When the next datagram is due at the far end.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|d| d.at)
    }

    /// The next datagram due by `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<T> {
        if self.heap.peek()?.at > now {
            return None;
        }
        self.stats.delivered += 1;
        self.heap.pop().map(|d| d.data)
    }

    /// Drops everything on the way (the link is cut); returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.heap.len();
        self.heap.clear();
        n
    }
}

/// One of the two endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// Which of `a` and `b` is this side's.
    pub fn of<'a, T>(self, a: &'a mut T, b: &'a mut T) -> &'a mut T {
        match self {
            Side::A => a,
            Side::B => b,
        }
    }
}

/// Two endpoints joined by two [`Link`]s, on a virtual clock (see the module docs).
pub struct SimNet<T> {
    start: Instant,
    now: Instant,
    a_to_b: Link<T>,
    b_to_a: Link<T>,
    /// Every delivery (time, direction, bytes) folded in.
    trace: std::collections::hash_map::DefaultHasher,
}

impl<T: AsRef<[u8]> + Clone> SimNet<T> {
    /// A network whose clock starts at `start`; `seed` decides every random fate.
    pub fn new(start: Instant, seed: u64, a_to_b: Impairment, b_to_a: Impairment) -> Self {
        Self {
            start,
            now: start,
            a_to_b: Link::new(a_to_b, seed),
            b_to_a: Link::new(b_to_a, seed ^ 0x9e37_79b9_7f4a_7c15),
            trace: Default::default(),
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Moves the clock to `to` (never back).
    pub fn advance(&mut self, to: Instant) {
        self.now = self.now.max(to);
    }

    fn link(&mut self, from: Side) -> &mut Link<T> {
        match from {
            Side::A => &mut self.a_to_b,
            Side::B => &mut self.b_to_a,
        }
    }

    /// `from` sends a datagram now.
    pub fn send(&mut self, from: Side, data: T) {
        let now = self.now;
        self.link(from).send(now, data);
    }

    /// When the next datagram arrives (either way).
    pub fn next_due(&self) -> Option<Instant> {
        [self.a_to_b.next_due(), self.b_to_a.next_due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next datagram that has arrived by now, and the side it arrived at; the
    /// earlier first, A's on a tie.
    pub fn deliver(&mut self) -> Option<(Side, T)> {
        let now = self.now;
        let from = match (self.a_to_b.next_due(), self.b_to_a.next_due()) {
            (Some(a), Some(b)) if a <= b => Side::A,
            (Some(_), Some(_)) | (None, Some(_)) => Side::B,
            (Some(_), None) => Side::A,
            (None, None) => return None,
        };
        let data = self.link(from).poll(now)?;
        let nanos = (now - self.start).as_nanos();
        self.trace.write_u128(nanos);
        self.trace.write_u8(from as u8);
        // Lengths, not contents: engines draw random tags and initial sequence numbers.
        self.trace.write_usize(data.as_ref().len());
        Some((from.other(), data))
    }

    /// A digest of every delivery so far (time, direction, length): equal for equal
    /// runs.
    pub fn digest(&self) -> u64 {
        self.trace.finish()
    }

    /// Counts of the direction from `from`.
    pub fn stats(&self, from: Side) -> LinkStats {
        match from {
            Side::A => self.a_to_b.stats(),
            Side::B => self.b_to_a.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(s: &str) -> Impairment {
        Impairment::parse(s).unwrap()
    }

    /// Sends `n` numbered datagrams from A, one every `gap`, and delivers everything:
    /// (arrival time since start, number) in arrival order.
    fn run(net: &mut SimNet<Vec<u8>>, n: u32, gap: Duration, size: usize) -> Vec<(Duration, u32)> {
        let t0 = net.now();
        let mut got = Vec::new();
        let mut collect = |net: &mut SimNet<Vec<u8>>| {
            while let Some((to, d)) = net.deliver() {
                assert_eq!(to, Side::B);
                let k = u32::from_be_bytes(d[..4].try_into().unwrap());
                got.push((net.now() - t0, k));
            }
        };
        for i in 0..n {
            net.advance(t0 + gap * i);
            collect(net);
            let mut d = vec![0u8; size.max(4)];
            d[..4].copy_from_slice(&i.to_be_bytes());
            net.send(Side::A, d);
            // Deliver what is due before the next send (in order of due time).
            while let Some(at) = net.next_due().filter(|t| *t < t0 + gap * (i + 1)) {
                net.advance(at);
                collect(net);
            }
        }
        while let Some(at) = net.next_due() {
            net.advance(at);
            collect(net);
        }
        got
    }

    fn net(seed: u64, s: &str) -> SimNet<Vec<u8>> {
        SimNet::new(Instant::now(), seed, imp(s), Impairment::default())
    }

    #[test]
    fn delay_is_exact_and_order_kept() {
        let mut n = net(1, "delay=10ms");
        let got = run(&mut n, 50, Duration::from_millis(1), 100);
        assert_eq!(got.len(), 50);
        for (i, (t, k)) in got.iter().enumerate() {
            assert_eq!(*k, i as u32);
            assert_eq!(*t, Duration::from_millis(10 + i as u64));
        }
    }

    #[test]
    fn loss_is_seeded_and_near_its_rate() {
        let mut a = net(7, "loss=10%");
        let mut b = net(7, "loss=10%");
        let ga = run(&mut a, 5000, Duration::from_micros(100), 100);
        let gb = run(&mut b, 5000, Duration::from_micros(100), 100);
        assert_eq!(ga, gb);
        assert_eq!(a.digest(), b.digest());
        let lost = a.stats(Side::A).lost;
        assert!((400..600).contains(&lost), "{lost} of 5000 lost at 10%");
        assert_eq!(ga.len() as u64, 5000 - lost);
        let mut c = net(8, "loss=10%");
        run(&mut c, 5000, Duration::from_micros(100), 100);
        assert_ne!(a.digest(), c.digest(), "another seed, another run");
    }

    #[test]
    fn bursts_lose_runs_of_datagrams() {
        let mut n = net(3, "burst=1%/30%");
        let got = run(&mut n, 10_000, Duration::from_micros(100), 100);
        let nums: Vec<u32> = got.iter().map(|g| g.1).collect();
        let longest_gap = nums.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap();
        let lost = n.stats(Side::A).lost;
        // Mean burst 1/0.3 ≈ 3.3 datagrams, one entry per 100: about 3% lost.
        assert!((150..600).contains(&lost), "{lost} lost");
        assert!(longest_gap >= 4, "longest run lost {longest_gap}");
    }

    #[test]
    fn duplicates_and_reordering() {
        let mut n = net(5, "dup=5%,reorder=5%,delay=2ms");
        let got = run(&mut n, 2000, Duration::from_micros(100), 100);
        let s = n.stats(Side::A);
        assert_eq!(got.len() as u64, 2000 + s.duplicated);
        assert!((50..150).contains(&s.duplicated), "{s:?}");
        assert!(s.reordered > 50, "{s:?}");
        let overtaken = got.windows(2).filter(|w| w[1].1 < w[0].1).count();
        assert!(
            overtaken > 50,
            "{overtaken} arrivals before an earlier number"
        );
        // Without reordering or jitter, never.
        let mut n = net(5, "dup=5%,delay=2ms");
        let got = run(&mut n, 2000, Duration::from_micros(100), 100);
        assert!(got.windows(2).all(|w| w[1].1 >= w[0].1));
    }

    #[test]
    fn rate_spaces_datagrams_and_a_full_queue_drops_the_tail() {
        // 1000-byte datagrams at 8 Mbit/s: 1 ms each on the wire.
        let mut n = net(1, "rate=8mbit");
        let got = run(&mut n, 20, Duration::ZERO, 1000);
        let times: Vec<Duration> = got.iter().map(|g| g.0).collect();
        let want: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(times, want);
        // A 5000-byte queue holds five of a burst of twenty.
        let mut n = net(1, "rate=8mbit,queue=5000");
        let got = run(&mut n, 20, Duration::ZERO, 1000);
        assert_eq!(got.len(), 5);
        assert_eq!(n.stats(Side::A).tail_dropped, 15);
        // Sent at the link's rate, nothing is dropped.
        let mut n = net(1, "rate=8mbit,queue=5000");
        assert_eq!(run(&mut n, 20, Duration::from_millis(1), 1000).len(), 20);
    }

    #[test]
    fn the_clock_only_moves_forward_and_both_ways_work() {
        let t0 = Instant::now();
        let mut n: SimNet<Vec<u8>> = SimNet::new(t0, 1, imp("delay=5ms"), imp("delay=7ms"));
        n.send(Side::A, vec![1]);
        n.send(Side::B, vec![2]);
        assert_eq!(n.next_due(), Some(t0 + Duration::from_millis(5)));
        n.advance(t0 + Duration::from_millis(6));
        n.advance(t0);
        assert_eq!(n.elapsed(), Duration::from_millis(6));
        assert_eq!(n.deliver(), Some((Side::B, vec![1])));
        assert_eq!(n.deliver(), None);
        n.advance(t0 + Duration::from_millis(7));
        assert_eq!(n.deliver(), Some((Side::A, vec![2])));
        assert_eq!(n.next_due(), None);
    }
}
