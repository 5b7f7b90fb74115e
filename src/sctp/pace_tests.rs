//! The paced sender (`pacer.rs`) on a simulated access link: one or more associations
//! sending bulk data through one rate-limited link with a shallow tail-drop queue
//! (`testkit::simnet::Link`, the relay's model), on a virtual clock. How much of the
//! link each fills, with pacing on and off, on the same seed.

use super::engine::{SctpEngine, SctpEvent, SctpIo, Workarounds};
use super::{Ppi, Reliability, SctpConfig};
use crate::testkit::impair::Impairment;
use crate::testkit::simnet::{Link, LinkStats};
use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};

/// A packet of flow `.0` on the shared link.
#[derive(Clone)]
struct Tagged(usize, Bytes);

impl AsRef<[u8]> for Tagged {
    fn as_ref(&self) -> &[u8] {
        &self.1
    }
}

/// One endpoint's outputs: packets to send, bytes received and released.
#[derive(Default)]
struct Io {
    packets: Vec<Bytes>,
    connected: bool,
    received: usize,
    released: usize,
}

impl SctpIo for Io {
    fn transmit(&mut self, packet: Bytes) {
        self.packets.push(packet);
    }

    fn event(&mut self, event: SctpEvent) {
        match event {
            SctpEvent::Connected { .. } => self.connected = true,
            SctpEvent::Message { data, .. } => self.received += data.len(),
            SctpEvent::Released { bytes, .. } => self.released += bytes,
            SctpEvent::Failed(e) => panic!("association failed: {e}"),
            _ => {}
        }
    }

    fn backlogged(&self) -> bool {
        false
    }
}

/// One association: A sends `total` bytes to B.
struct Flow {
    a: (SctpEngine, Io),
    b: (SctpEngine, Io),
    total: usize,
    written: usize,
    /// When B had everything.
    done: Option<Instant>,
}

/// Messages of the transfer, and most bytes kept written and unreleased (as the bench
/// peers do).
const MSG: usize = 16 * 1024;
const BUFFERED: usize = 8 << 20;

/// What one run measured.
#[derive(Debug)]
pub(super) struct Run {
    /// Each flow's Mbit/s over its own transfer.
    pub mbit: Vec<f64>,
    /// Each flow's share of the bytes delivered until the first one finished.
    pub share: Vec<f64>,
    /// All flows' bytes over the time until the last finished, as a fraction of the
    /// link's rate.
    pub fill: f64,
    /// The A → B link's counts.
    pub link: LinkStats,
    /// Most packets an A handed over at once.
    pub burst: usize,
}

/// `flows` associations through one link impaired as `imp` (both ways), each sending
/// `mib` MiB from A to B, all starting together.
pub(super) fn run(seed: u64, imp: &str, mib: usize, flows: usize, pacing: bool) -> Run {
    let imp = Impairment::parse(imp).unwrap();
    let t0 = Instant::now();
    let config = SctpConfig {
        pacing,
        ..SctpConfig::default()
    };
    let engine = |name: String| {
        SctpEngine::with_workarounds(name.into(), config.clone(), t0, Workarounds::ALL)
    };
    let mut fl: Vec<Flow> = (0..flows)
        .map(|i| Flow {
            a: (engine(format!("A{i}")), Io::default()),
            b: (engine(format!("B{i}")), Io::default()),
            total: mib << 20,
            written: 0,
            done: None,
        })
        .collect();
    let mut up: Link<Tagged> = Link::new(imp, seed);
    let mut down: Link<Tagged> = Link::new(imp, seed ^ 0x9e37_79b9_7f4a_7c15);
    for f in &mut fl {
        f.b.0.start(t0, false, &mut f.b.1);
        f.a.0.start(t0, true, &mut f.a.1);
    }
    let mut now = t0;
    let mut began = None;
    let mut first_done: Option<Vec<usize>> = None;
    let mut burst = 0;
    let limit = t0 + Duration::from_secs(3600);
    let trace = std::env::var("SIM_TRACE").is_ok();
    let mut next_trace = t0;
    loop {
        let connected = fl.iter().all(|f| f.a.1.connected && f.b.1.connected);
        if connected && began.is_none() {
            began = Some(now);
            for f in &mut fl {
                f.a.0.open(1, false, Reliability::Reliable);
            }
        }
        for f in fl.iter_mut().filter(|_| connected) {
            write(f, now);
            if f.done.is_none() && f.b.1.received >= f.total {
                f.done = Some(now);
            }
        }
        if first_done.is_none() && fl.iter().any(|f| f.done.is_some()) {
            first_done = Some(fl.iter().map(|f| f.b.1.received).collect());
        }
        if fl.iter().all(|f| f.done.is_some()) {
            break;
        }
        assert!(now < limit, "stalled: {:?}", up.stats());
        if trace && now >= next_trace {
            next_trace = now + Duration::from_millis(100);
            let f = &fl[0];
            let (flight, srtt) = f.a.0.flight();
            let s = f.a.0.recovery_stats();
            println!(
                "{:>6.2} s flight {:>7} srtt {:>3?} got {:>9} drops {:>4} fr {:>4} t3 {:>3}",
                (now - t0).as_secs_f64(),
                flight,
                srtt,
                f.b.1.received,
                up.stats().tail_dropped,
                s.fast_retransmits,
                s.t3_timeouts
            );
        }
        for (i, f) in fl.iter_mut().enumerate() {
            f.a.0.drain(now, &mut f.a.1);
            f.b.0.drain(now, &mut f.b.1);
            burst = burst.max(f.a.1.packets.len());
            send(&mut up, i, &mut f.a.1, now);
            send(&mut down, i, &mut f.b.1, now);
        }
        let next = fl
            .iter_mut()
            .flat_map(|f| [f.a.0.poll_timeout(), f.b.0.poll_timeout()])
            .chain([up.next_due(), down.next_due()])
            .flatten()
            .min()
            .expect("something to wait for");
        now = now.max(next);
        while let Some(Tagged(i, p)) = up.poll(now) {
            let b = &mut fl[i].b;
            b.0.packet(now, BytesMut::from(&p[..]));
            b.0.drain(now, &mut b.1);
            send(&mut down, i, &mut b.1, now);
        }
        while let Some(Tagged(i, p)) = down.poll(now) {
            let a = &mut fl[i].a;
            a.0.packet(now, BytesMut::from(&p[..]));
            a.0.drain(now, &mut a.1);
            burst = burst.max(a.1.packets.len());
            send(&mut up, i, &mut a.1, now);
        }
        for f in &mut fl {
            for e in [&mut f.a.0, &mut f.b.0] {
                if e.poll_timeout().is_some_and(|t| t <= now) {
                    e.handle_timeout(now);
                }
            }
        }
    }
    let first_done = first_done.expect("finished");
    let mut r = summary(&fl, began.expect("connected"), first_done, imp, up.stats());
    r.burst = burst;
    r
}

/// Puts what `io` has to send on `link`, as flow `i`'s.
fn send(link: &mut Link<Tagged>, i: usize, io: &mut Io, now: Instant) {
    for p in io.packets.drain(..) {
        link.send(now, Tagged(i, p));
    }
}

/// Keeps up to [`BUFFERED`] of `f`'s transfer written and unreleased.
fn write(f: &mut Flow, now: Instant) {
    while f.written < f.total && f.written - f.a.1.released < BUFFERED {
        f.a.0
            .write(now, 1, Ppi::Binary, Bytes::from(vec![0u8; MSG]));
        f.written += MSG;
    }
}

fn summary(
    fl: &[Flow],
    began: Instant,
    at_first: Vec<usize>,
    imp: Impairment,
    link: LinkStats,
) -> Run {
    let secs = |f: &Flow| (f.done.unwrap() - began).as_secs_f64();
    let mbit = fl
        .iter()
        .map(|f| (f.total * 8) as f64 / secs(f) / 1e6)
        .collect();
    let sum: usize = at_first.iter().sum();
    let share = at_first.iter().map(|n| *n as f64 / sum as f64).collect();
    let last = fl.iter().map(secs).fold(0.0, f64::max);
    let bytes: usize = fl.iter().map(|f| f.total).sum();
    Run {
        mbit,
        share,
        fill: (bytes * 8) as f64 / last / imp.rate as f64,
        link,
        burst: 0,
    }
}

/// The access link of issue 20: 100 Mbit/s, 20 ms round trip, 5 ms of tail-drop queue.
const ACCESS: &str = "rate=100mbit,delay=10ms,queue=62500";

/// Paced, a bulk transfer through a shallow queue arrives whole, and no window leaves
/// as one burst: the most packets handed over at one instant is a fraction of what the
/// same transfer unpaced sends at once, on the same seed. (Fewer tail drops is not among
/// what holds: rtc-sctp's slow start overshoots the queue either way, see
/// docs/SCTP.md "Pacing".)
#[test]
fn pacing_spreads_the_windows_of_a_bulk_transfer() {
    let paced = run(1, ACCESS, 4, 1, true);
    let unpaced = run(1, ACCESS, 4, 1, false);
    assert!(
        paced.burst * 2 < unpaced.burst,
        "paced {paced:?}, unpaced {unpaced:?}"
    );
}

/// Two paced associations through one link both finish, neither starved.
#[test]
fn two_paced_flows_share_one_link() {
    let r = run(2, ACCESS, 2, 2, true);
    assert_eq!(r.share.len(), 2);
    assert!(r.share.iter().all(|s| *s > 0.1), "{r:?}");
}

/// The figures behind docs/SCTP.md "Pacing" and BENCHMARKS.md (`cargo test --release
/// --lib pacing_figures -- --ignored --nocapture`; `SIM_CONDS`, `SIM_MIB` (a list) and
/// `SIM_FLOWS` to change them).
#[test]
#[ignore = "measurement"]
fn pacing_figures() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.into());
    let conds = env(
        "SIM_CONDS",
        "rate=100mbit,delay=10ms,queue=62500;rate=10mbit,delay=25ms,queue=6250",
    );
    let mibs = env("SIM_MIB", "16,128");
    let flows: usize = env("SIM_FLOWS", "1").parse().unwrap();
    for imp in conds.split(';') {
        for mib in mibs.split(',').map(|m| m.parse::<usize>().unwrap()) {
            for pacing in [false, true] {
                let r = run(1, imp, mib, flows, pacing);
                println!(
                    "{imp:<40} {mib:>4} MiB x {flows} pacing {:<5}: fill {:>5.1}%  Mbit/s {:.1?}  shares {:.2?}  tail drops {} of {}, burst {}",
                    pacing,
                    r.fill * 100.0,
                    r.mbit,
                    r.share,
                    r.link.tail_dropped,
                    r.link.sent,
                    r.burst
                );
            }
        }
    }
}
