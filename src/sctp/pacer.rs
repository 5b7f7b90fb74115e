//! A paced sender: rtc-sctp's bursts spread over the round trip.
//!
//! rtc-sctp hands over everything its congestion window lets go at once: a whole window
//! after a SACK that opens it, two or four packets for every SACK in slow start. Sent as
//! they come, these bursts arrive at a bottleneck faster than it drains, and a shallow
//! queue (a few milliseconds on an access link, a browser's socket buffer) drops their
//! tail: slow start ends at half the path's capacity with a burst of losses, and Reno
//! climbs back one MTU per round trip (docs/SCTP.md "Pacing").
//!
//! [`Pacer`] holds packets that carry DATA and lets them go at
//! [`GAIN`] × flight / SRTT, the rate the congestion window allows: `flight` is what the
//! association has handed out and not had acknowledged (it is its window while the
//! window is what limits it), SRTT is rtc-sctp's. rtc-sctp does not expose its window.
//! A token bucket gives a burst allowance of [`BURST_TIME`] at that rate (at least
//! [`BURST_PACKETS`]), so an idle path sends at once and a timer's lateness costs little;
//! with no RTT measured yet (or below rtc-sctp's 1 ms resolution, as on loopback) nothing
//! is held. Packets without DATA (SACKs, handshake, stream resets) are never held: held,
//! a SACK would slow the peer. Sans-IO: the time comes in, [`Pacer::next_release`] says
//! when packets are due (the engine's `poll_timeout`).

use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Rate over window / SRTT: above 1, so the pacer drains faster than the window refills
/// and the delay it adds (which rtc-sctp measures as round trip) stays small; 2 as in
/// Linux's slow start, which is where the bursts come from.
pub(crate) const GAIN: f64 = 2.0;
/// How much may go at once after a pause, in time at the pacing rate.
pub(crate) const BURST_TIME: Duration = Duration::from_millis(1);
/// And at least this many full packets.
pub(crate) const BURST_PACKETS: usize = 4;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// Packets waiting for their turn, oldest first.
    held: VecDeque<Bytes>,
    /// Bytes that may leave now (negative: owed), as of `filled`.
    credit: f64,
    filled: Option<Instant>,
    /// Bytes per second; `None`: unpaced.
    rate: Option<f64>,
    /// Most credit: the burst allowance.
    burst: f64,
    /// Least burst allowance, bytes.
    min_burst: f64,
}

impl Pacer {
    /// A pacer for packets of up to `mtu` bytes.
    pub(crate) fn new(mtu: usize) -> Self {
        let min_burst = (BURST_PACKETS * mtu) as f64;
        Self {
            held: VecDeque::new(),
            credit: min_burst,
            filled: None,
            rate: None,
            burst: min_burst,
            min_burst,
        }
    }

    /// The pacing rate from `flight` bytes unacknowledged over `srtt` (zero: unpaced).
    pub(crate) fn set_rate(&mut self, now: Instant, srtt: Duration, flight: u64) {
        self.refill(now);
        // Never below a few packets a round trip: idle, the flight is empty, and a
        // rate of zero would hold the next burst for good.
        let flight = (flight as f64).max(self.min_burst);
        self.rate = (!srtt.is_zero()).then(|| GAIN * flight / srtt.as_secs_f64());
        self.burst = match self.rate {
            Some(r) => (r * BURST_TIME.as_secs_f64()).max(self.min_burst),
            None => f64::INFINITY,
        };
        self.credit = self.credit.min(self.burst);
    }

    /// Credit earned since it was last counted.
    fn refill(&mut self, now: Instant) {
        let since = self
            .filled
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.filled = Some(now);
        self.credit = match self.rate {
            Some(r) => (self.credit + r * since.as_secs_f64()).min(self.burst),
            None => self.burst,
        };
    }

    /// A packet to send: out now, or held behind earlier ones. `data`: it carries DATA.
    pub(crate) fn send(&mut self, now: Instant, p: Bytes, data: bool, out: &mut dyn FnMut(Bytes)) {
        if !data {
            out(p);
            return;
        }
        self.held.push_back(p);
        self.release(now, out);
    }

    /// Sends the held packets that are due.
    pub(crate) fn release(&mut self, now: Instant, out: &mut dyn FnMut(Bytes)) {
        self.refill(now);
        while self.credit > 0.0 {
            let Some(p) = self.held.pop_front() else {
                break;
            };
            self.credit -= p.len() as f64;
            out(p);
        }
    }

    /// When the next held packet may go.
    pub(crate) fn next_release(&self) -> Option<Instant> {
        if self.held.is_empty() {
            return None;
        }
        let filled = self.filled?;
        match self.rate {
            Some(r) if self.credit <= 0.0 => {
                // Rounded up: at that instant the credit is positive.
                let wait = (-self.credit / r).max(0.0) + 1e-9;
                Some(filled + Duration::from_secs_f64(wait))
            }
            _ => Some(filled),
        }
    }

    /// Packets held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// Drops what is held (the association is gone).
    pub(crate) fn clear(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(pacer: &mut Pacer, now: Instant, n: usize, len: usize) -> usize {
        let mut sent = 0;
        for _ in 0..n {
            pacer.send(now, Bytes::from(vec![0u8; len]), true, &mut |_| sent += 1);
        }
        sent
    }

    #[test]
    fn an_empty_flight_still_lets_packets_go() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1200);
        p.set_rate(t0, Duration::from_millis(20), 0);
        packets(&mut p, t0, 10, 1200);
        let mut sent = 0;
        while let Some(at) = p.next_release() {
            p.release(at, &mut |_| sent += 1);
        }
        assert_eq!(sent, 10 - BURST_PACKETS);
    }

    #[test]
    fn unpaced_without_an_rtt() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1200);
        p.set_rate(t0, Duration::ZERO, 1 << 20);
        assert_eq!(packets(&mut p, t0, 1000, 1200), 1000);
        assert_eq!(p.next_release(), None);
    }

    #[test]
    fn a_window_is_spread_over_half_the_round_trip() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1200);
        // 100 packets in flight over 20 ms: 12 MB/s at GAIN 2.
        let flight = 100 * 1200;
        p.set_rate(t0, Duration::from_millis(20), flight);
        let now = packets(&mut p, t0, 100, 1200);
        assert_eq!(now, BURST_PACKETS, "the first burst goes at once");
        let mut sent = now;
        let mut last = t0;
        while let Some(at) = p.next_release() {
            assert!(at > last, "the release time moves on");
            last = at;
            p.release(at, &mut |_| sent += 1);
        }
        assert_eq!(sent, 100);
        let spread = last - t0;
        assert!(
            spread > Duration::from_millis(8) && spread < Duration::from_millis(10),
            "{spread:?}"
        );
    }

    #[test]
    fn control_packets_are_never_held_and_idle_refills_the_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1200);
        p.set_rate(t0, Duration::from_millis(20), 12_000);
        packets(&mut p, t0, 20, 1200);
        assert!(p.held() > 0);
        let mut sent = 0;
        p.send(t0, Bytes::from_static(b"sack"), false, &mut |_| sent += 1);
        assert_eq!(sent, 1);
        let mut last = t0;
        while let Some(at) = p.next_release() {
            last = at;
            p.release(at, &mut |_| {});
        }
        assert_eq!(p.held(), 0);
        let later = last + Duration::from_secs(1);
        assert_eq!(packets(&mut p, later, 4, 1200), 4, "idle: a burst at once");
    }
}
