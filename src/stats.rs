//! Process-wide counters for monitoring (the service's `GET /metrics`): each is one
//! relaxed atomic, bumped where its event already happens (a datagram sent or read by an
//! ICE agent, a DTLS failure, an RTCP report read by a media sender), so counting costs no
//! lock and no allocation. They cover every peer connection in the process.

#![cfg_attr(not(feature = "service"), allow(dead_code))]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bytes of UDP/TCP payload ICE agents sent (STUN, TURN, DTLS, SRTP).
pub(crate) static BYTES_SENT: AtomicU64 = AtomicU64::new(0);
/// Bytes of payload ICE agents received on their sockets.
pub(crate) static BYTES_RECEIVED: AtomicU64 = AtomicU64::new(0);
/// DTLS handshakes or transports that failed (a wrong fingerprint included).
pub(crate) static DTLS_FAILURES: AtomicU64 = AtomicU64::new(0);
/// HTTPS connections whose TLS handshake failed or was too slow (not TLS, a bad
/// ClientHello, a slowloris handshake).
pub(crate) static TLS_HANDSHAKE_FAILURES: AtomicU64 = AtomicU64::new(0);
/// RTP packets viewers reported lost (increase of each receiver report's cumulative loss).
pub(crate) static RTP_PACKETS_LOST: AtomicU64 = AtomicU64::new(0);
/// NACK feedback packets viewers sent.
pub(crate) static NACK_RECEIVED: AtomicU64 = AtomicU64::new(0);
/// PLI feedback packets viewers sent.
pub(crate) static PLI_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Upper bounds (seconds) of the round-trip-time histogram's buckets; the last, +Inf, is
/// the count.
pub(crate) const RTT_BUCKETS: [f64; 9] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Round-trip times from viewers' receiver reports (RFC 3550 LSR/DLSR).
pub(crate) struct RttHistogram {
    /// Cumulative counts per bucket (`le`), as Prometheus has them.
    pub(crate) buckets: [AtomicU64; RTT_BUCKETS.len()],
    pub(crate) count: AtomicU64,
    pub(crate) sum_micros: AtomicU64,
}

pub(crate) static RTT: RttHistogram = RttHistogram {
    buckets: [const { AtomicU64::new(0) }; RTT_BUCKETS.len()],
    count: AtomicU64::new(0),
    sum_micros: AtomicU64::new(0),
};

impl RttHistogram {
    #[cfg_attr(not(feature = "media"), allow(dead_code))]
    pub(crate) fn observe(&self, rtt: Duration) {
        let s = rtt.as_secs_f64();
        for (b, le) in self.buckets.iter().zip(RTT_BUCKETS) {
            if s <= le {
                b.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(rtt.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
    }
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

pub(crate) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}
