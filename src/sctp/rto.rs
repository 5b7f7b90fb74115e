//! A shorter retransmission timeout than rtc-sctp's.
//!
//! rtc-sctp clamps its RTO to at least one second (RFC 9260's RTO.Min, a constant it does
//! not let us configure). Every loss that fast retransmit misses (the last packets of a
//! burst, a lost retransmission) then stalls a channel for a whole second: at 1% loss a
//! reliable transfer on loopback fell to about 25 Mbit/s. Browsers' SCTP stacks use a
//! floor of a few hundred milliseconds (dcsctp: 220-400 ms, above the peer's 200 ms
//! delayed SACK).
//!
//! [`RtoClock`] gives the association a clock that may run ahead of the real one. When
//! sent data has seen no acknowledgement for [`RtoClock::rto`] (at least `RTO_FLOOR`, and
//! more than the peer's delayed SACK plus two round trips), the clock jumps to the
//! association's next timer, which is then its T3-rtx timer, so it retransmits as its own
//! timer would have. The clock only ever moves forward, so the association sees time
//! pass faster, never backwards. Each early retransmission without progress doubles
//! our timeout (RFC 9260 §6.3.3 E2), and an acknowledgement resets it.
//!
//! rtc-sctp also measures maxPacketLifeTime on this clock: run ahead freely, lifetimes
//! would end early (tests/lossy.rs `max_packet_life_time_is_not_cut_short`). On an
//! association with a channel whose lifetime is over [`SHORT_LIFETIME`], the clock may
//! gain at most [`LIFETIME_SLACK`] within the longest lifetime, and rtc-sctp is given
//! those lifetimes longer by that much: such a message is never given up before its
//! lifetime, and at most [`LIFETIME_SLACK`] after it (our send queue drops it at its
//! lifetime if it has not left yet). Shorter lifetimes are over by the time our timeout
//! retransmits; they are left as they are. Stopping the early
//! retransmission altogether, as before, left such associations with rtc-sctp's 1 s
//! floor and its doubling: after a loss burst, every channel on them stalled for several
//! seconds. The right fix is a configurable minimum RTO in rtc-sctp.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Least time without an acknowledgement before a retransmission is forced: above the
/// 200 ms delayed SACK of rtc-sctp and browsers, so a lone packet is not resent while its
/// SACK is merely being held.
const RTO_FLOOR: Duration = Duration::from_millis(250);
/// The peer's delayed-SACK time that [`RtoClock::rto`] stays above.
const PEER_ACK_DELAY: Duration = Duration::from_millis(200);
/// rtc-sctp's own minimum: no point in forcing what it would do anyway.
const ENGINE_RTO_MIN: Duration = Duration::from_secs(1);
/// Most doublings of our timeout (8 × 250 ms = 2 s): a probe every 2 s at most through an
/// outage costs one packet, and the data moves again within 2 s of the network's return
/// (with 6 doublings a 10 s cut took 6 s to resume). ICE consent, not SCTP, decides when
/// the peer is gone.
const MAX_BACKOFF: u32 = 3;
/// With a maxPacketLifeTime channel: the most the clock may gain within the longest
/// lifetime, and what rtc-sctp's lifetimes are lengthened by. A jump is the engine's RTO
/// less ours (about 750 ms), so this allows one per lifetime.
pub(crate) const LIFETIME_SLACK: Duration = Duration::from_secs(1);
/// Lifetimes up to this are left alone (no slack, no limit on the lead): a message
/// retransmitted by our timeout has outlived them anyway, and giving it up at the jump,
/// up to this much early for a message younger than the rest, beats retransmitting it
/// a second late.
pub(crate) const SHORT_LIFETIME: Duration = RTO_FLOOR;
/// Most timer jumps per forced retransmission (the ACK timer may come before T3-rtx).
const MAX_JUMPS: usize = 4;

/// The timers of the association, as [`RtoClock::force`] drives them.
pub(crate) trait Timers {
    /// The next deadline, in the association's time.
    fn next_timer(&self) -> Option<Instant>;
    /// Runs the timers due at `at`; true when a retransmission timer went off.
    fn fire(&mut self, at: Instant) -> bool;
}

impl Timers for rtc_sctp::Association {
    fn next_timer(&self) -> Option<Instant> {
        self.poll_timeout()
    }

    fn fire(&mut self, at: Instant) -> bool {
        let before = self.stats().get_num_t3timeouts();
        self.handle_timeout(at);
        self.stats().get_num_t3timeouts() > before
    }
}

/// The association's clock, and the bookkeeping that decides when to run it ahead.
#[derive(Debug)]
pub(crate) struct RtoClock {
    /// How far the association's clock is ahead of the real one.
    ahead: Duration,
    /// Bytes written to the association and not yet acknowledged (or abandoned).
    outstanding: u64,
    /// Last acknowledgement, or the first write after an idle spell, or the last forced
    /// retransmission (real time).
    progress: Instant,
    /// Forced retransmissions since the last acknowledgement.
    backoff: u32,
    /// The longest maxPacketLifeTime of the association's channels, if any: within any
    /// span this long the clock gains at most `LIFETIME_SLACK`.
    lifetime: Option<Duration>,
    /// Recent jumps (real time, lead gained), within `lifetime`.
    jumps: VecDeque<(Instant, Duration)>,
    /// The association has sent DATA the peer has not acknowledged, even if none of it
    /// is ours any more: data given up still needs its FORWARD TSN through, which
    /// rtc-sctp resends only on its own timer.
    unacked: bool,
}

impl RtoClock {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            ahead: Duration::ZERO,
            outstanding: 0,
            progress: now,
            backoff: 0,
            lifetime: None,
            jumps: VecDeque::new(),
            unacked: false,
        }
    }

    /// Whether the association has unacknowledged DATA (see `unacked`).
    pub(crate) fn set_unacked(&mut self, now: Instant, unacked: bool) {
        if unacked && !self.unacked && self.outstanding == 0 {
            self.progress = now;
        }
        self.unacked = unacked;
    }

    /// The peer's cumulative acknowledgement moved on.
    pub(crate) fn progressed(&mut self, now: Instant) {
        self.progress = now;
        self.backoff = 0;
    }

    /// A channel with this maxPacketLifeTime exists: from now on the clock gains at most
    /// `LIFETIME_SLACK` within the longest such lifetime. rtc-sctp must be given the
    /// lifetime plus `LIFETIME_SLACK`.
    pub(crate) fn limit_lead(&mut self, lifetime: Duration) {
        self.lifetime = Some(self.lifetime.map_or(lifetime, |l| l.max(lifetime)));
    }

    /// The earliest real time from `at` on when a jump of `jump` keeps the lead gained
    /// within the lifetime window at most `LIFETIME_SLACK`.
    fn lead_allows(&self, at: Instant, jump: Duration) -> Option<Instant> {
        let Some(window) = self.lifetime else {
            return Some(at);
        };
        if jump > LIFETIME_SLACK {
            return None;
        }
        // Drop the oldest jumps from the window until the rest and this one fit.
        let mut recent: Duration = self
            .jumps
            .iter()
            .filter(|(t, _)| *t + window > at)
            .map(|(_, d)| *d)
            .sum();
        let mut when = at;
        for (t, d) in &self.jumps {
            if recent + jump <= LIFETIME_SLACK {
                break;
            }
            if *t + window > at {
                recent = recent.saturating_sub(*d);
                when = when.max(*t + window);
            }
        }
        Some(when)
    }

    /// The association's time at real time `now`.
    pub(crate) fn at(&self, now: Instant) -> Instant {
        now + self.ahead
    }

    /// Real time of the association's deadline `at` (in its own time).
    pub(crate) fn real(&self, at: Instant) -> Instant {
        at.checked_sub(self.ahead).unwrap_or(at)
    }

    /// `bytes` of user data accepted by the association.
    pub(crate) fn sent(&mut self, now: Instant, bytes: usize) {
        if self.outstanding == 0 {
            self.progress = now;
        }
        self.outstanding += bytes as u64;
    }

    /// `bytes` acknowledged or abandoned.
    pub(crate) fn released(&mut self, now: Instant, bytes: usize) {
        self.outstanding = self.outstanding.saturating_sub(bytes as u64);
        self.progress = now;
        self.backoff = 0;
    }

    /// Our retransmission timeout for smoothed round-trip time `srtt`.
    pub(crate) fn rto(&self, srtt: Duration) -> Duration {
        let base = (PEER_ACK_DELAY + srtt * 2).max(RTO_FLOOR);
        base.saturating_mul(1 << self.backoff.min(MAX_BACKOFF))
    }

    /// Real time at which a retransmission is due to be forced, if data is outstanding
    /// and that is before the association's own deadline `engine` (in its time).
    pub(crate) fn deadline(&self, srtt: Duration, engine: Option<Instant>) -> Option<Instant> {
        if self.outstanding == 0 && !self.unacked {
            return None;
        }
        let ours = self.progress + self.rto(srtt);
        let theirs = self.real(engine?);
        if ours >= theirs || self.rto(srtt) >= ENGINE_RTO_MIN * (1 << self.backoff.min(6)) {
            return None;
        }
        // With lifetimes, perhaps later: when enough of the lead gained has aged out.
        self.lead_allows(ours, theirs - ours)
            .filter(|t| *t < theirs)
    }

    /// Runs the association's clock ahead to its next timers until one of them was a
    /// retransmission timer (or a few jumps were made).
    pub(crate) fn force(&mut self, now: Instant, engine: &mut impl Timers) {
        let before = self.ahead;
        self.jump(now, engine);
        if let Some(window) = self.lifetime {
            self.jumps.retain(|(t, _)| *t + window > now);
            self.jumps.push_back((now, self.ahead - before));
        }
        self.progress = now;
        self.backoff += 1;
    }

    fn jump(&mut self, now: Instant, engine: &mut impl Timers) {
        for _ in 0..MAX_JUMPS {
            let Some(at) = engine.next_timer() else {
                break;
            };
            let virtual_now = self.at(now);
            if at > virtual_now {
                self.ahead += at - virtual_now;
            }
            if engine.fire(self.at(now)) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timers at fixed times; `t3` says whether each one is a retransmission timer.
    struct Engine {
        next: Vec<Instant>,
        fired: Vec<Instant>,
        t3: bool,
    }

    impl Timers for Engine {
        fn next_timer(&self) -> Option<Instant> {
            self.next.get(self.fired.len()).copied()
        }
        fn fire(&mut self, at: Instant) -> bool {
            self.fired.push(at);
            self.t3
        }
    }

    #[test]
    fn no_deadline_without_outstanding_data() {
        let t0 = Instant::now();
        let c = RtoClock::new(t0);
        assert_eq!(c.deadline(Duration::ZERO, Some(t0 + ENGINE_RTO_MIN)), None);
    }

    #[test]
    fn forces_before_the_engine_and_backs_off() {
        let t0 = Instant::now();
        let mut c = RtoClock::new(t0);
        c.sent(t0, 1000);
        let engine = t0 + ENGINE_RTO_MIN;
        let d = c.deadline(Duration::from_millis(1), Some(engine)).unwrap();
        assert_eq!(d - t0, RTO_FLOOR);
        // Jump: the engine's timer fires at its own deadline, now in the past of its clock.
        let mut e = Engine {
            next: vec![engine],
            fired: vec![],
            t3: true,
        };
        c.force(d, &mut e);
        assert_eq!(e.fired, vec![engine]);
        assert_eq!(c.at(d), engine);
        // Time never goes back for the engine, and the next forced retransmission waits
        // twice as long.
        assert!(c.at(d + Duration::from_millis(1)) > engine);
        assert_eq!(c.rto(Duration::ZERO), RTO_FLOOR * 2);
        // An acknowledgement resets the backoff.
        c.released(d, 500);
        assert_eq!(c.rto(Duration::ZERO), RTO_FLOOR);
        c.released(d, 500);
        assert_eq!(
            c.deadline(Duration::ZERO, Some(c.at(d) + ENGINE_RTO_MIN)),
            None
        );
    }

    #[test]
    fn backoff_is_capped() {
        let t0 = Instant::now();
        let mut c = RtoClock::new(t0);
        c.sent(t0, 1);
        for _ in 0..10 {
            let mut e = Engine {
                next: vec![c.at(t0) + Duration::from_secs(1)],
                fired: vec![],
                t3: true,
            };
            c.force(t0, &mut e);
        }
        assert_eq!(c.rto(Duration::ZERO), RTO_FLOOR * 8);
    }

    #[test]
    fn with_lifetimes_the_lead_gained_per_lifetime_is_bounded() {
        let t0 = Instant::now();
        let mut c = RtoClock::new(t0);
        c.sent(t0, 1000);
        c.limit_lead(Duration::from_millis(500));
        // A jump of 750 ms fits the slack: forced at our timeout.
        let engine = c.at(t0) + ENGINE_RTO_MIN;
        let d = c.deadline(Duration::ZERO, Some(engine)).unwrap();
        assert_eq!(d - t0, RTO_FLOOR);
        let mut e = Engine {
            next: vec![engine],
            fired: vec![],
            t3: true,
        };
        c.force(d, &mut e);
        assert_eq!(c.ahead, ENGINE_RTO_MIN - RTO_FLOOR);
        // The next one would gain as much again within 500 ms of the first: it waits
        // until the first has aged out of the window.
        let engine = c.at(d) + ENGINE_RTO_MIN;
        let d2 = c.deadline(Duration::ZERO, Some(engine)).unwrap();
        assert_eq!(d2, d + Duration::from_millis(500));
        // A lifetime longer than the engine's own timer leaves it to the engine.
        c.limit_lead(Duration::from_secs(5));
        assert_eq!(c.deadline(Duration::ZERO, Some(engine)), None);
    }

    #[test]
    fn leaves_long_round_trips_to_the_engine() {
        let t0 = Instant::now();
        let mut c = RtoClock::new(t0);
        c.sent(t0, 1);
        // 200 ms + 2 × 400 ms = 1 s: no earlier than the engine's own floor.
        assert_eq!(
            c.deadline(Duration::from_millis(400), Some(t0 + ENGINE_RTO_MIN)),
            None
        );
    }

    #[test]
    fn stops_jumping_after_a_few_timers() {
        let t0 = Instant::now();
        let mut c = RtoClock::new(t0);
        c.sent(t0, 1);
        let mut e = Engine {
            next: (1..10)
                .map(|i| t0 + Duration::from_millis(200 * i))
                .collect(),
            fired: vec![],
            t3: false,
        };
        c.force(t0, &mut e);
        assert_eq!(e.fired.len(), MAX_JUMPS);
    }
}
