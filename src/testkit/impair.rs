//! A user-space UDP impairment relay (the kernels here have no netem): delay, jitter,
//! random and bursty loss, duplication and reordering, each direction on its own, for
//! benchmarks (`smolrtc bench relay`) and tests of lossy links.
//!
//! The relay stands between two peers like a one-host NAT: datagrams that arrive on its
//! `front` address go to `target` from its `back` address, and what `target` sends to
//! `back` goes to whoever last sent to `front`. Give the far peer `front` as the near
//! peer's candidate (and hide the near peer's real candidates from it): ICE then runs
//! through the relay, the near peer seeing the far one as peer-reflexive at `back`.
//!
//! [`Relay::set_blackhole`] cuts the link both ways (every datagram dropped, those already
//! delayed in the relay too) until it is turned off again: a network outage for fault tests.

use super::simnet::Link;
use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::future;

/// What happens to datagrams going one way.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairment {
    /// One-way delay (half the added round-trip time when both ways have it).
    pub delay: Duration,
    /// Extra random delay, uniform in 0..jitter (reorders datagrams).
    pub jitter: Duration,
    /// Probability a datagram is dropped, 0..1 (while in the good state of a burst model).
    pub loss: f64,
    /// Bursty loss (Gilbert–Elliott): probability of entering the bad state per datagram,
    /// and of leaving it; in the bad state every datagram is dropped.
    pub burst: Option<(f64, f64)>,
    /// Probability a datagram is sent twice.
    pub duplicate: f64,
    /// Probability a datagram is held back by an extra `delay + 1 ms` (reordering).
    pub reorder: f64,
    /// Link rate in bits per second (0: unlimited): datagrams leave no closer together
    /// than their size at this rate, as on a real bottleneck link, instead of in the
    /// sender's bursts (which overflow a receiver's socket buffer on loopback).
    pub rate: u64,
    /// With a rate: most bytes waiting for the link; a datagram that does not fit is
    /// dropped (tail drop). 0: no limit.
    pub queue: usize,
}

impl Impairment {
    /// Parses `delay=10ms,jitter=2ms,loss=1%,burst=1%/30%,dup=0.5%,reorder=1%,rate=1gbit,
    /// queue=64000` (any subset, queue in bytes; `none` for no impairment).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut imp = Impairment::default();
        if s.trim() == "none" || s.trim().is_empty() {
            return Ok(imp);
        }
        let ms = |v: &str| -> Result<Duration, String> {
            let n = v.strip_suffix("ms").unwrap_or(v);
            n.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0 && *n <= 60_000.0)
                .map(|n| Duration::from_secs_f64(n / 1000.0))
                .ok_or_else(|| format!("bad duration {v:?} (milliseconds, e.g. 10ms)"))
        };
        let pct = |v: &str| -> Result<f64, String> {
            let (n, scale) = match v.strip_suffix('%') {
                Some(n) => (n, 100.0),
                None => (v, 1.0),
            };
            n.parse::<f64>()
                .ok()
                .map(|n| n / scale)
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| format!("bad probability {v:?} (e.g. 1% or 0.01)"))
        };
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got {part:?}"))?;
            match k.trim() {
                "delay" => imp.delay = ms(v.trim())?,
                "jitter" => imp.jitter = ms(v.trim())?,
                "loss" => imp.loss = pct(v.trim())?,
                "dup" | "duplicate" => imp.duplicate = pct(v.trim())?,
                "reorder" => imp.reorder = pct(v.trim())?,
                "rate" => imp.rate = bits_per_second(v.trim())?,
                "queue" => {
                    imp.queue = v
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad queue {v:?} (bytes, e.g. 64000)"))?
                }
                "burst" => {
                    let (enter, leave) = v
                        .split_once('/')
                        .ok_or_else(|| format!("burst is ENTER/LEAVE, got {v:?}"))?;
                    imp.burst = Some((pct(enter.trim())?, pct(leave.trim())?));
                }
                other => return Err(format!("unknown impairment {other:?}")),
            }
        }
        Ok(imp)
    }
}

/// `100mbit`, `1gbit`, `500kbit` or plain bits per second.
fn bits_per_second(v: &str) -> Result<u64, String> {
    let lower = v.to_ascii_lowercase();
    let (n, scale) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|(suffix, scale)| lower.strip_suffix(suffix).map(|n| (n.to_string(), *scale)))
        .unwrap_or((lower.clone(), 1.0));
    n.trim()
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|r| r.is_finite() && *r >= 1000.0 && *r <= 1e12)
        .map(|r| r as u64)
        .ok_or_else(|| format!("bad rate {v:?} (e.g. 100mbit or 1gbit, at least 1kbit)"))
}

/// Datagram counts of one direction.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Dropped by the loss models.
    pub dropped: AtomicU64,
    /// Sent (duplicates included).
    pub sent: AtomicU64,
    /// Dropped because the link was cut ([`Relay::set_blackhole`]).
    pub blackholed: AtomicU64,
}

/// A running relay; stops when dropped.
pub struct Relay {
    front: SocketAddr,
    back: SocketAddr,
    /// Dropped to stop the relay thread.
    stop: Option<async_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Counters of the front → target direction.
    pub forward: Arc<Counters>,
    /// Counters of the target → front direction.
    pub backward: Arc<Counters>,
    /// While set, every datagram is dropped (both ways).
    blackhole: Arc<AtomicBool>,
}

impl Relay {
    /// Binds `front` and `back` on `ip` (any free ports) and relays to `target`, with
    /// `forward` applied to front → target and `backward` to target → front. `seed` makes
    /// the random decisions repeatable.
    pub fn start(
        ip: std::net::IpAddr,
        target: SocketAddr,
        forward: Impairment,
        backward: Impairment,
        seed: u64,
    ) -> std::io::Result<Self> {
        let front = UdpSocket::bind((ip, 0))?;
        let back = UdpSocket::bind((ip, 0))?;
        for s in [&front, &back] {
            let r = socket2::SockRef::from(s);
            let _ = r.set_recv_buffer_size(4 << 20);
            let _ = r.set_send_buffer_size(4 << 20);
        }
        let (front_addr, back_addr) = (front.local_addr()?, back.local_addr()?);
        let (front, back) = (Async::new(front)?, Async::new(back)?);
        let (fc, bc) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let (fc2, bc2) = (fc.clone(), bc.clone());
        let blackhole = Arc::new(AtomicBool::new(false));
        let cut = blackhole.clone();
        // One thread runs both directions as async loops: the relay must not be the
        // bottleneck, and a thread hop per datagram (reader → queue → writer) made it one
        // at about 230 Mbit/s on a 2-core machine shared with both peers.
        let thread = std::thread::Builder::new()
            .name("impair".into())
            .spawn(move || {
                let peer = Cell::new(None);
                let both = future::zip(
                    direction(
                        &front,
                        &back,
                        Dest::Fixed(target),
                        Some(&peer),
                        forward,
                        seed,
                        &fc2,
                        &cut,
                    ),
                    direction(
                        &back,
                        &front,
                        Dest::Learned(&peer),
                        None,
                        backward,
                        seed ^ 0x9e37_79b9_7f4a_7c15,
                        &bc2,
                        &cut,
                    ),
                );
                async_io::block_on(future::or(
                    async {
                        both.await;
                    },
                    async {
                        let _ = stopped.recv().await;
                    },
                ));
            })?;
        Ok(Self {
            front: front_addr,
            back: back_addr,
            stop: Some(stop),
            thread: Some(thread),
            forward: fc,
            backward: bc,
            blackhole,
        })
    }

    /// The address the far peer sends to.
    pub fn front(&self) -> SocketAddr {
        self.front
    }

    /// The address the target sees the far peer at.
    pub fn back(&self) -> SocketAddr {
        self.back
    }

    /// Cuts the link (`true`: every datagram either way is dropped, including those the
    /// relay is still delaying) or restores it (`false`). Takes effect at the next datagram.
    pub fn set_blackhole(&self, cut: bool) {
        self.blackhole.store(cut, Ordering::Relaxed);
    }

    /// Whether the link is cut.
    pub fn is_blackholed(&self) -> bool {
        self.blackhole.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum Dest<'a> {
    Fixed(SocketAddr),
    /// The last source seen on `front`.
    Learned(&'a Cell<Option<SocketAddr>>),
}

/// The next datagram on `rx`, or `None` when `until` comes first.
async fn receive(
    rx: &Async<UdpSocket>,
    buf: &mut [u8],
    until: Option<Instant>,
) -> Option<std::io::Result<(usize, SocketAddr)>> {
    match until {
        Some(at) => {
            future::or(async { Some(rx.recv_from(buf).await) }, async {
                Timer::at(at).await;
                None
            })
            .await
        }
        None => Some(rx.recv_from(buf).await),
    }
}

/// One direction: receives, applies loss and duplication, and sends each datagram when
/// it is due (at once when nothing delays it); drops everything while `cut` is set.
#[allow(clippy::too_many_arguments)]
async fn direction(
    rx: &Async<UdpSocket>,
    tx: &Async<UdpSocket>,
    dest: Dest<'_>,
    learn: Option<&Cell<Option<SocketAddr>>>,
    imp: Impairment,
    seed: u64,
    counters: &Counters,
    cut: &AtomicBool,
) {
    let mut fate = Link::new(imp, seed);
    let mut buf = vec![0u8; 65536];
    let delays = fate.delays();
    let dest = &dest;
    let send = move |data: Vec<u8>| async move {
        let to = match dest {
            Dest::Fixed(a) => Some(*a),
            Dest::Learned(p) => p.get(),
        };
        if cut.load(Ordering::Relaxed) {
            // Cut while it was delayed here: lost with the link.
            counters.blackholed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(to) = to {
            if tx.send_to(&data, to).await.is_ok() {
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    loop {
        while let Some(data) = fate.poll(Instant::now()) {
            send(data).await;
        }
        let next = fate.next_due();
        let (n, from) = match receive(rx, &mut buf, next).await {
            None => continue,
            Some(Ok(v)) => v,
            // ICMP errors (a peer gone) and the like: keep relaying.
            Some(Err(_)) => continue,
        };
        counters.received.fetch_add(1, Ordering::Relaxed);
        if cut.load(Ordering::Relaxed) {
            // No random decision is drawn for it, so a cut does not shift the seeded
            // sequence of the datagrams after it.
            counters.blackholed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if let Some(peer) = learn {
            peer.set(Some(from));
        }
        let before = fate.stats();
        fate.send(Instant::now(), buf[..n].to_vec());
        let after = fate.stats();
        let dropped = (after.lost + after.tail_dropped) - (before.lost + before.tail_dropped);
        counters.dropped.fetch_add(dropped, Ordering::Relaxed);
        if !delays {
            // Due at once: on now, without a turn through the timer.
            while let Some(data) = fate.poll(Instant::now()) {
                send(data).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let i = Impairment::parse("delay=10ms,jitter=2,loss=1%,burst=1%/30%,dup=0.5%,reorder=0.02")
            .unwrap();
        assert_eq!(i.delay, Duration::from_millis(10));
        assert_eq!(i.jitter, Duration::from_millis(2));
        assert!((i.loss - 0.01).abs() < 1e-12);
        assert_eq!(i.burst, Some((0.01, 0.3)));
        assert!((i.duplicate - 0.005).abs() < 1e-12 && (i.reorder - 0.02).abs() < 1e-12);
        assert_eq!(Impairment::parse("none").unwrap(), Impairment::default());
        assert_eq!(Impairment::parse("rate=1gbit").unwrap().rate, 1_000_000_000);
        assert_eq!(Impairment::parse("rate=2.5Mbit").unwrap().rate, 2_500_000);
        assert_eq!(
            Impairment::parse("rate=1mbit,queue=9000").unwrap().queue,
            9000
        );
        assert!(Impairment::parse("queue=lots").is_err());
        assert!(Impairment::parse("rate=fast").is_err());
        assert!(Impairment::parse("rate=10").is_err());
        for bad in ["delay=-1ms", "loss=200%", "foo=1", "delay", "burst=1%"] {
            assert!(Impairment::parse(bad).is_err(), "{bad}");
        }
    }

    /// Real sockets: delay is applied, loss drops about the asked share, and replies find
    /// their way back.
    #[test]
    fn relays_with_delay_and_loss() {
        let target = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let fwd = Impairment {
            delay: Duration::from_millis(20),
            loss: 0.3,
            ..Impairment::default()
        };
        let relay = Relay::start(
            "127.0.0.1".parse().unwrap(),
            target.local_addr().unwrap(),
            fwd,
            Impairment::default(),
            7,
        )
        .unwrap();
        let t0 = Instant::now();
        client.send_to(b"first", relay.front()).unwrap();
        target
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 64];
        // The first may be lost (30%): send until one arrives.
        let (n, from) = loop {
            match target.recv_from(&mut buf) {
                Ok(v) => break v,
                Err(_) => {
                    client.send_to(b"first", relay.front()).unwrap();
                }
            }
        };
        assert_eq!(&buf[..n], b"first");
        assert_eq!(from, relay.back());
        assert!(t0.elapsed() >= Duration::from_millis(20));
        target.send_to(b"reply", from).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"reply"[..], relay.front()));
        for _ in 0..2000 {
            client.send_to(b"x", relay.front()).unwrap();
            std::thread::sleep(Duration::from_micros(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        let got = relay.forward.received.load(Ordering::Relaxed) as f64;
        let dropped = relay.forward.dropped.load(Ordering::Relaxed) as f64;
        let share = dropped / got;
        assert!((0.25..0.35).contains(&share), "dropped {share}");
    }

    /// A cut drops everything both ways, datagrams already delayed in the relay too, and
    /// the link works again once restored.
    #[test]
    fn blackhole_cuts_both_ways_and_restores() {
        let target = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&target, &client] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        let delayed = Impairment {
            delay: Duration::from_millis(100),
            ..Impairment::default()
        };
        let relay = Relay::start(
            "127.0.0.1".parse().unwrap(),
            target.local_addr().unwrap(),
            delayed,
            Impairment::default(),
            3,
        )
        .unwrap();
        let mut buf = [0u8; 64];
        client.send_to(b"before", relay.front()).unwrap();
        let (n, back) = target.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"before");
        // In flight (delayed 100 ms) when the link is cut: lost with it.
        client.send_to(b"in flight", relay.front()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        relay.set_blackhole(true);
        assert!(relay.is_blackholed());
        client.send_to(b"forward", relay.front()).unwrap();
        target.send_to(b"backward", back).unwrap();
        assert!(
            target.recv_from(&mut buf).is_err(),
            "forward datagram crossed a cut"
        );
        assert!(
            client.recv_from(&mut buf).is_err(),
            "backward datagram crossed a cut"
        );
        assert_eq!(relay.forward.blackholed.load(Ordering::Relaxed), 2);
        assert_eq!(relay.backward.blackholed.load(Ordering::Relaxed), 1);
        relay.set_blackhole(false);
        client.send_to(b"after", relay.front()).unwrap();
        let (n, _) = target.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");
        target.send_to(b"reply", back).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"reply"[..], relay.front()));
        assert_eq!(relay.forward.dropped.load(Ordering::Relaxed), 0);
    }
}
