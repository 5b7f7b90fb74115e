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
//! rtc-sctp also measures maxPacketLifeTime on this clock, so an association that carries
//! such a channel stops running ahead (lifetimes would otherwise end early; tests/lossy.rs
//! `max_packet_life_time_is_not_cut_short`) and keeps rtc-sctp's own 1 s floor. The right
//! fix is a configurable minimum RTO in rtc-sctp.

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
    /// False once a channel with a lifetime (maxPacketLifeTime) exists: rtc-sctp measures
    /// lifetimes on the association's clock, so it must not run ahead any more.
    enabled: bool,
}

impl RtoClock {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            ahead: Duration::ZERO,
            outstanding: 0,
            progress: now,
            backoff: 0,
            enabled: true,
        }
    }

    /// Stops forcing retransmissions for the rest of the association (the clock keeps
    /// whatever lead it has, so it never goes back).
    pub(crate) fn disable(&mut self) {
        self.enabled = false;
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
        if self.outstanding == 0 || !self.enabled {
            return None;
        }
        let ours = self.progress + self.rto(srtt);
        let theirs = self.real(engine?);
        (ours < theirs && self.rto(srtt) < ENGINE_RTO_MIN * (1 << self.backoff.min(6)))
            .then_some(ours)
    }

    /// Runs the association's clock ahead to its next timers until one of them was a
    /// retransmission timer (or a few jumps were made).
    pub(crate) fn force(&mut self, now: Instant, engine: &mut impl Timers) {
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
        self.progress = now;
        self.backoff += 1;
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
    fn disabled_never_forces() {
        let t0 = Instant::now();
        let mut c = RtoClock::new(t0);
        c.sent(t0, 1000);
        c.disable();
        assert_eq!(c.deadline(Duration::ZERO, Some(t0 + ENGINE_RTO_MIN)), None);
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
