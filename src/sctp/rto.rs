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
//! would end early (tests/lossy.rs `max_packet_life_time_is_not_cut_short`). rtc-sctp is
//! given lifetimes over [`SHORT_LIFETIME`] longer by [`LIFETIME_SLACK`], and the clock
//! remembers where each such message's engine deadline lies: a jump never reaches the
//! deadline of a message still inside its lifetime in real time. Such a message is never
//! given up before its lifetime, and at most [`LIFETIME_SLACK`] after it (our send queue
//! drops it at its lifetime if it has not left yet). Messages past their lifetime do not
//! hold a jump back. Shorter lifetimes are over by the time our timeout retransmits;
//! they are left as they are.
//!
//! An earlier bound, "at most `LIFETIME_SLACK` gained within the longest lifetime", held
//! every jump over 1 s back: after one forced retransmission rtc-sctp's own timeout is
//! 2 s (it doubles on every T3 timeout and only comes back with a fresh RTT sample), so
//! the next jump was 1.5 s and was left to rtc-sctp, whose timeouts then doubled on
//! through each lost retransmission: 2, 4, 8, 16 s. At 10% loss half the runs of the
//! test had 2–2.5 s gaps, and one CI run stalled for its whole 30 s. A stalled association takes
//! no new messages, so after one lifetime nothing holds the jump back any more. The
//! right fix is a configurable minimum RTO in rtc-sctp (its `association/timer.rs`
//! `RTO_MIN`, applied in `RtoManager::set_new_rtt`; docs/SCTP-UPSTREAM.md). Switched
//! off (`Workarounds::rto_clock`), `workaround_tests.rs`
//! `no_stall_waits_for_rtc_sctps_one_second_timeout` fails.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Least time without an acknowledgement before a retransmission is forced: above the
/// 200 ms delayed SACK of rtc-sctp and browsers, so a lone packet is not resent while its
/// SACK is merely being held.
pub(crate) const RTO_FLOOR: Duration = Duration::from_millis(250);
/// Least time a hole the peer reports stays open before a retransmission is forced: the
/// peer acknowledges at once while it has a gap (RFC 9260 §6.7), so no delayed SACK is
/// waited for, only fast retransmit's own repair (about two round trips) and jitter.
const HOLE_FLOOR: Duration = Duration::from_millis(20);
/// The peer's delayed-SACK time that [`RtoClock::rto`] stays above.
const PEER_ACK_DELAY: Duration = Duration::from_millis(200);
/// rtc-sctp's own minimum: no point in forcing what it would do anyway.
const ENGINE_RTO_MIN: Duration = Duration::from_secs(1);
/// Most doublings of our timeout (8 × 250 ms = 2 s): a probe every 2 s at most through an
/// outage costs one packet, and the data moves again within 2 s of the network's return
/// (with 6 doublings a 10 s cut took 6 s to resume). ICE consent, not SCTP, decides when
/// the peer is gone.
const MAX_BACKOFF: u32 = 3;
/// What rtc-sctp's lifetimes over [`SHORT_LIFETIME`] are lengthened by: how far the clock
/// may run ahead within one such lifetime. A jump is the engine's RTO less ours (about
/// 750 ms), so this allows one per lifetime even while messages are written all along.
pub(crate) const LIFETIME_SLACK: Duration = Duration::from_secs(1);
/// Lifetimes up to this are left alone (no slack, no limit on the lead): a message
/// retransmitted by our timeout has outlived them anyway, and giving it up at the jump,
/// up to this much early for a message younger than the rest, beats retransmitting it
/// a second late.
pub(crate) const SHORT_LIFETIME: Duration = RTO_FLOOR;
/// Most timer jumps per forced retransmission (the ACK timer may come before T3-rtx).
const MAX_JUMPS: usize = 4;
/// Messages written within this fraction of their lifetime share one [`Deadline`] entry
/// (the earliest deadline, the latest end): a few dozen entries per lifetime at most.
const DEADLINE_GRAIN: u32 = 32;

/// Engine deadlines of timed messages written close together, while one of them is
/// still inside its lifetime.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    /// Real time of the first write.
    first: Instant,
    /// Real time until which one of them is inside its lifetime.
    until: Instant,
    /// The earliest time, on the association's clock, at which rtc-sctp gives one up.
    engine: Instant,
}

/// How losses were repaired: rtc-sctp's counters and ours.
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryStats {
    /// T3-rtx timeouts, rtc-sctp's own and forced ones.
    pub t3_timeouts: u64,
    /// Chunks sent again by fast retransmit.
    pub fast_retransmits: u64,
    /// SACK chunks received.
    pub sacks_received: u64,
    /// DATA chunks received.
    pub data_received: u64,
    /// Delayed SACKs sent when the ACK timer ran out.
    pub ack_timeouts: u64,
    /// Retransmissions forced by [`RtoClock`].
    pub forced: u64,
    /// Of those, forced while the peer reported a hole.
    pub forced_for_hole: u64,
}

/// The timers of the association, as [`RtoClock::force`] drives them.
pub(crate) trait Timers {
    /// The next deadline, in the association's time.
    fn next_timer(&self) -> Option<Instant>;
    /// Runs the timers due at `at`; true when a retransmission timer went off.
    fn fire(&mut self, at: Instant) -> bool;
}

/// The association's clock, and the bookkeeping that decides when to run it ahead.
#[derive(Debug)]
pub(crate) struct RtoClock {
    /// How far the association's clock is ahead of the real one.
    ahead: Duration,
    /// Bytes written to the association and not yet acknowledged (or abandoned).
    outstanding: u64,
    /// Last move of the peer's cumulative acknowledgement, or the first write after an
    /// idle spell, or the last forced retransmission (real time). Data acknowledged
    /// above a hole (gap blocks) is no progress: rtc-sctp restarts its T3-rtx timer only
    /// when the earliest outstanding TSN is acknowledged either.
    progress: Instant,
    /// Since when the peer has reported a hole (a SACK with gap blocks) that the
    /// cumulative acknowledgement has not passed since `progress`.
    hole_since: Option<Instant>,
    /// Forced retransmissions since the last acknowledgement.
    backoff: u32,
    /// Where rtc-sctp would give up messages still inside their lifetime: no jump may
    /// reach the earliest of these. Oldest first.
    deadlines: VecDeque<Deadline>,
    /// The association has sent DATA the peer has not acknowledged, even if none of it
    /// is ours any more: data given up still needs its FORWARD TSN through, which
    /// rtc-sctp resends only on its own timer.
    unacked: bool,
    /// Retransmissions forced so far, and of those while the peer reported a hole.
    forced: (u64, u64),
}

impl RtoClock {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            ahead: Duration::ZERO,
            outstanding: 0,
            progress: now,
            hole_since: None,
            backoff: 0,
            deadlines: VecDeque::new(),
            unacked: false,
            forced: (0, 0),
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
        self.hole_since = None;
        self.backoff = 0;
    }

    /// The peer's SACK reported data above a hole (gap blocks).
    pub(crate) fn hole(&mut self, now: Instant) {
        self.hole_since.get_or_insert(now);
    }

    /// A message with maxPacketLifeTime `lifetime` (over [`SHORT_LIFETIME`]) was written
    /// at `now`; rtc-sctp was given `lifetime + LIFETIME_SLACK` for it.
    pub(crate) fn wrote_timed(&mut self, now: Instant, lifetime: Duration) {
        let until = now + lifetime;
        let engine = self.at(now) + lifetime + LIFETIME_SLACK;
        match self.deadlines.back_mut() {
            Some(d) if now < d.first + lifetime / DEADLINE_GRAIN => {
                d.until = d.until.max(until);
                d.engine = d.engine.min(engine);
            }
            _ => {
                self.deadlines.retain(|d| d.until > now);
                self.deadlines.push_back(Deadline {
                    first: now,
                    until,
                    engine,
                });
            }
        }
    }

    /// The earliest engine deadline of a message still inside its lifetime at `now`: the
    /// association's clock must stay before it.
    fn limit(&mut self, now: Instant) -> Option<Instant> {
        self.deadlines.retain(|d| d.until > now);
        self.deadlines.iter().map(|d| d.engine).min()
    }

    /// The earliest real time from `at` on when the clock may be run ahead to `target`
    /// (its own time): when every message it would give up early is past its lifetime.
    fn jump_allowed(&self, at: Instant, target: Instant) -> Instant {
        self.deadlines
            .iter()
            .filter(|d| d.engine <= target)
            .map(|d| d.until)
            .fold(at, Instant::max)
    }

    /// Retransmissions forced so far, and of those while the peer reported a hole.
    #[cfg(test)]
    pub(crate) fn forced(&self) -> (u64, u64) {
        self.forced
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

    /// `bytes` acknowledged (perhaps above a hole) or abandoned. Only the cumulative
    /// acknowledgement is progress ([`Self::progressed`]): counted from any release, a
    /// hole behind a busy flight was never retransmitted early, and waited for rtc-sctp's
    /// own 1 s timer.
    pub(crate) fn released(&mut self, bytes: usize) {
        self.outstanding = self.outstanding.saturating_sub(bytes as u64);
    }

    /// Our retransmission timeout for smoothed round-trip time `srtt`.
    pub(crate) fn rto(&self, srtt: Duration) -> Duration {
        let base = (PEER_ACK_DELAY + srtt * 2).max(RTO_FLOOR);
        base.saturating_mul(1 << self.backoff.min(MAX_BACKOFF))
    }

    /// How long a hole the peer reports may stay open before a retransmission is
    /// forced: fast retransmit repairs one in about two round trips.
    pub(crate) fn hole_rto(&self, srtt: Duration) -> Duration {
        (HOLE_FLOOR + srtt * 3).saturating_mul(1 << self.backoff.min(MAX_BACKOFF))
    }

    /// Real time at which a retransmission is due to be forced, if data is outstanding
    /// and that is before the association's own deadline `engine` (in its time): our
    /// timeout after the last progress, or sooner while the peer reports a hole.
    pub(crate) fn deadline(&self, srtt: Duration, engine: Option<Instant>) -> Option<Instant> {
        if self.outstanding == 0 && !self.unacked {
            return None;
        }
        let mut ours = self.progress + self.rto(srtt);
        if let Some(h) = self.hole_since {
            ours = ours.min(h + self.hole_rto(srtt));
        }
        let theirs = self.real(engine?);
        if ours >= theirs || self.rto(srtt) >= ENGINE_RTO_MIN * (1 << self.backoff.min(6)) {
            return None;
        }
        // With lifetimes, perhaps later: once the messages it would cut short are past
        // their lifetimes.
        Some(self.jump_allowed(ours, engine?)).filter(|t| *t < theirs)
    }

    /// Runs the association's clock ahead to its next timers until one of them was a
    /// retransmission timer (or a few jumps were made).
    pub(crate) fn force(&mut self, now: Instant, engine: &mut impl Timers) {
        self.jump(now, engine);
        self.forced.0 += 1;
        self.forced.1 += u64::from(self.hole_since.is_some());
        self.progress = now;
        self.hole_since = None;
        self.backoff += 1;
    }

    fn jump(&mut self, now: Instant, engine: &mut impl Timers) {
        let limit = self.limit(now);
        for _ in 0..MAX_JUMPS {
            let Some(at) = engine.next_timer() else {
                break;
            };
            if limit.is_some_and(|l| at >= l) {
                break;
            }
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
        c.released(500);
        c.progressed(d);
        assert_eq!(c.rto(Duration::ZERO), RTO_FLOOR);
        c.released(500);
        assert_eq!(
            c.deadline(Duration::ZERO, Some(c.at(d) + ENGINE_RTO_MIN)),
            None
        );
    }

    #[test]
    fn a_reported_hole_is_retransmitted_sooner() {
        let t0 = Instant::now();
        let mut c = RtoClock::new(t0);
        c.sent(t0, 10_000);
        let engine = t0 + ENGINE_RTO_MIN;
        let srtt = Duration::from_millis(2);
        // Data above the hole acknowledged: released, but no progress.
        let t1 = t0 + Duration::from_millis(5);
        c.released(5_000);
        assert_eq!(c.deadline(srtt, Some(engine)), Some(t0 + RTO_FLOOR));
        c.hole(t1);
        c.hole(t1 + srtt); // the same hole, still open
        assert_eq!(
            c.deadline(srtt, Some(engine)),
            Some(t1 + HOLE_FLOOR + srtt * 3)
        );
        // The cumulative acknowledgement passing it closes it.
        c.progressed(t1 + srtt);
        assert_eq!(c.deadline(srtt, Some(engine)), Some(t1 + srtt + RTO_FLOOR));
        // Forced: the next hole waits twice as long.
        c.hole(t1 + srtt);
        let mut e = Engine {
            next: vec![engine],
            fired: vec![],
            t3: true,
        };
        c.force(t1 + srtt + c.hole_rto(srtt), &mut e);
        assert_eq!(c.forced(), (1, 1));
        assert_eq!(c.hole_rto(srtt), (HOLE_FLOOR + srtt * 3) * 2);
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

    const LIFE: Duration = Duration::from_millis(500);

    #[test]
    fn a_jump_never_gives_up_a_message_inside_its_lifetime() {
        let t0 = Instant::now();
        let mut c = RtoClock::new(t0);
        c.sent(t0, 1000);
        c.wrote_timed(t0, LIFE);
        // rtc-sctp gives it up at t0 + 1.5 s of its clock; a jump to its 1 s timer fits:
        // forced at our timeout.
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
        // A timer past that deadline is not reached while the message is in its lifetime,
        // even when forced.
        let late = t0 + LIFE + LIFETIME_SLACK;
        let mut e = Engine {
            next: vec![late],
            fired: vec![],
            t3: true,
        };
        c.force(d + Duration::from_millis(1), &mut e);
        assert!(e.fired.is_empty());
        assert_eq!(c.ahead, ENGINE_RTO_MIN - RTO_FLOOR);
        // Once it is past its lifetime the jump is allowed, and then made.
        assert_eq!(c.jump_allowed(d, late), t0 + LIFE);
        c.force(t0 + LIFE, &mut e);
        assert_eq!(e.fired, vec![late]);
    }

    /// After one forced retransmission rtc-sctp's own timeout is 2 s: the next jump
    /// (1.5 s, more than the slack) must still be forced once the messages it would cut
    /// short are past their lifetimes, not left to rtc-sctp's doubling timer.
    #[test]
    fn a_doubled_engine_timeout_is_still_forced_beside_lifetimes() {
        let t0 = Instant::now();
        let mut c = RtoClock::new(t0);
        c.sent(t0, 1000);
        c.wrote_timed(t0, LIFE);
        let engine = c.at(t0) + ENGINE_RTO_MIN;
        let d = c.deadline(Duration::ZERO, Some(engine)).unwrap();
        let mut e = Engine {
            next: vec![engine],
            fired: vec![],
            t3: true,
        };
        c.force(d, &mut e);
        // A message written just after the jump; rtc-sctp's timer now 2 s away.
        c.wrote_timed(d, LIFE);
        let engine = c.at(d) + ENGINE_RTO_MIN * 2;
        let ours = d + c.rto(Duration::ZERO);
        let at = c.deadline(Duration::ZERO, Some(engine)).unwrap();
        assert_eq!(at, ours.max(d + LIFE));
        assert!(at < c.real(engine), "left to rtc-sctp's 2 s timer");
    }

    #[test]
    fn deadlines_of_messages_written_together_share_an_entry() {
        let t0 = Instant::now();
        let mut c = RtoClock::new(t0);
        for i in 0..100 {
            c.wrote_timed(t0 + Duration::from_millis(i), LIFE);
        }
        assert!(c.deadlines.len() <= 100 / (500 / DEADLINE_GRAIN as usize) + 1);
        // The earliest engine deadline and the latest end are kept.
        assert_eq!(c.limit(t0), Some(t0 + LIFE + LIFETIME_SLACK));
        let last = t0 + Duration::from_millis(99);
        assert_eq!(
            c.jump_allowed(t0, last + LIFE + LIFETIME_SLACK),
            last + LIFE
        );
        // Past their lifetimes they are dropped.
        assert_eq!(c.limit(last + LIFE), None);
        assert!(c.deadlines.is_empty());
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
