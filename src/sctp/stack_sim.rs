//! Two whole stacks over the simulated network (`testkit::simnet`), on its virtual clock:
//! on each side the DTLS actor (or none: SCTP packets go on the wire as they are), the
//! SCTP actor and the channel router, with channels opened, written and closed through
//! real [`DataChannel`] handles.
//!
//! Each actor is driven through its sans-IO methods (`handle(now, ..)`, `on_timeout(now)`,
//! `poll_timeout`), not by `runtime::drive`, which reads the wall clock to stamp its
//! inputs; so does `SctpActor::drain`, whose `flush_at(now)` is called instead. rtc-dtls
//! and rtc-sctp take every instant from the caller (docs/TESTING.md). The wire stands
//! in for ICE: what the DTLS actor hands ICE to send goes on the simulated network.

use super::engine::{SctpEngine, Workarounds};
use super::sim_tests::Sim;
use super::{SctpActor, SctpConfig, SctpMsg, SctpReport};
use crate::channel::dcep::Caps;
use crate::channel::router::{Limits, Router, RouterCtl, RouterMsg, DEFAULT_MAX_CHANNELS};
use crate::channel::{ChannelCmd, ChannelInit, ChannelShared, DataChannel, Message, SendBudget};
use crate::dtls::{Certificate, DtlsActor, DtlsMsg, DtlsReport};
use crate::ice::IceMsg;
use crate::peer::{Event, PeerMsg};
use crate::runtime::{Actor, Link};
use crate::testkit::impair::Impairment;
use crate::testkit::simnet::{Side, SimNet};
use async_channel::{unbounded, Receiver, Sender};
use bytes::{Bytes, BytesMut};
use futures_lite::future::block_on;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An inbox of unbounded capacity (a link to it never waits): its link and its receiver.
fn inbox<T: 'static>() -> (Link<T>, Receiver<Vec<T>>) {
    let (tx, rx) = unbounded();
    (Link::new(tx), rx)
}

/// Everything waiting in `rx`, in order.
fn take<T>(rx: &Receiver<Vec<T>>) -> impl Iterator<Item = T> + '_ {
    std::iter::from_fn(|| rx.try_recv().ok()).flatten()
}

/// One side: its actors and the far ends of their links.
pub(super) struct Stack {
    name: &'static str,
    dtls: Option<DtlsActor>,
    sctp: SctpActor,
    router: Router,
    to_sctp: Receiver<Vec<SctpMsg>>,
    to_dtls: Receiver<Vec<DtlsMsg>>,
    to_router: Receiver<Vec<RouterMsg>>,
    /// Second handles on the router's control and command inboxes: whether it has work.
    ctl: Receiver<Vec<RouterCtl>>,
    cmd_rx: Receiver<Vec<ChannelCmd>>,
    cmds: Sender<Vec<ChannelCmd>>,
    to_ice: Receiver<Vec<IceMsg>>,
    to_peer: Receiver<Vec<PeerMsg>>,
    events: Receiver<Vec<Event>>,
    #[cfg(feature = "media")]
    _media: Receiver<Vec<crate::media::actor::MediaMsg>>,
    next_key: Arc<AtomicU32>,
    max_message_size: Arc<AtomicUsize>,
    budget: Arc<SendBudget>,
    /// When the DTLS handshake completed.
    pub(super) secure: Option<Instant>,
    /// The SCTP association is up.
    pub(super) up: bool,
    /// What the application was told, with the virtual time.
    pub(super) log: Vec<(Instant, Event)>,
}

impl Stack {
    /// A stack whose clock starts at `t0`, with DTLS when `cert` is given.
    fn new(name: &'static str, t0: Instant, work: Workarounds, cert: Option<Certificate>) -> Self {
        let config = SctpConfig::default();
        let (sctp_tx, to_sctp) = unbounded();
        let (dtls_link, to_dtls) = inbox();
        let (router_link, to_router) = inbox();
        let (ctl_link, ctl) = inbox();
        let (ice_link, to_ice) = inbox();
        let (peer_tx, to_peer) = unbounded();
        let (events_link, events) = inbox();
        let (cmds, cmd_rx) = unbounded();
        let next_key = Arc::new(AtomicU32::new(1));
        let max_message_size = Arc::new(AtomicUsize::new(0));
        let budget = Arc::new(SendBudget::new(
            config.send_buffer_per_channel,
            config.send_buffer_per_connection,
        ));
        #[cfg(feature = "media")]
        let (media_link, _media) = inbox();
        let dtls = cert.map(|cert| {
            DtlsActor::new(
                name.into(),
                cert,
                ice_link,
                Link::new(sctp_tx.clone()),
                #[cfg(feature = "media")]
                media_link,
                Link::new(peer_tx.clone()),
            )
        });
        let sctp = SctpActor {
            engine: SctpEngine::with_workarounds(name.into(), config.clone(), t0, work),
            router: router_link,
            router_ctl: ctl_link,
            dtls: dtls_link,
            peer: Link::new(peer_tx),
        };
        let limits = Limits {
            max_channels: DEFAULT_MAX_CHANNELS,
            local_max_message_size: config.max_message_size,
            budget: budget.clone(),
            dcep: Caps::default(),
        };
        let mut router = Router::new(
            name.into(),
            Link::new(sctp_tx),
            events_link,
            cmds.clone(),
            next_key.clone(),
            max_message_size.clone(),
            limits,
        )
        .with_workarounds(work);
        router.attach(to_router.clone(), ctl.clone(), cmd_rx.clone());
        Self {
            name,
            dtls,
            sctp,
            router,
            to_sctp,
            to_dtls,
            to_router,
            ctl,
            cmd_rx,
            cmds,
            to_ice,
            to_peer,
            events,
            #[cfg(feature = "media")]
            _media,
            next_key,
            max_message_size,
            budget,
            secure: None,
            up: false,
            log: Vec::new(),
        }
    }

    /// Starts DTLS in role `client` accepting `remote` (or SCTP at once, without DTLS).
    fn start(&mut self, now: Instant, client: bool, remote: Option<&Certificate>) {
        match (self.dtls.as_mut(), remote) {
            (Some(dtls), Some(remote)) => {
                let start = DtlsMsg::Start {
                    client,
                    remote_fingerprints: vec![remote.fingerprint().clone()],
                    data: true,
                    media: false,
                };
                dtls.handle(now, vec![start, DtlsMsg::IceConnected]);
            }
            _ => self.sctp.handle(now, vec![SctpMsg::Start { client }]),
        }
    }

    /// A datagram from the wire.
    fn datagram(&mut self, now: Instant, d: &[u8]) {
        let d = BytesMut::from(d);
        match self.dtls.as_mut() {
            Some(dtls) => dtls.handle(now, vec![DtlsMsg::Datagram(d)]),
            None => self.sctp.handle(now, vec![SctpMsg::Packet(d)]),
        }
    }

    /// Runs the actors until nothing moves between them; what is to be sent goes to `wire`.
    fn settle(&mut self, now: Instant, wire: &mut Vec<Bytes>) {
        loop {
            block_on(self.router.drain());
            let mut moved = false;
            while let Ok(batch) = self.to_sctp.try_recv() {
                self.sctp.handle(now, batch);
                moved = true;
            }
            self.sctp.flush_at(now);
            while let Ok(batch) = self.to_router.try_recv() {
                self.router.handle(now, batch);
                moved = true;
            }
            while let Ok(batch) = self.to_dtls.try_recv() {
                moved = true;
                match self.dtls.as_mut() {
                    Some(dtls) => dtls.handle(now, batch),
                    None => wire.extend(batch.into_iter().filter_map(|m| match m {
                        DtlsMsg::Send(p) => Some(p),
                        _ => None,
                    })),
                }
            }
            if let Some(dtls) = self.dtls.as_mut() {
                block_on(dtls.drain());
            }
            for m in take(&self.to_ice) {
                if let IceMsg::Transmit(d) = m {
                    wire.push(d.freeze());
                }
            }
            for m in take(&self.to_peer) {
                match m {
                    PeerMsg::Dtls(DtlsReport::Failed(e)) => {
                        panic!("{}: DTLS failed: {e}", self.name)
                    }
                    PeerMsg::Dtls(DtlsReport::Connected) => self.secure = Some(now),
                    PeerMsg::Sctp(SctpReport::Connected) => self.up = true,
                    _ => {}
                }
            }
            self.log.extend(take(&self.events).map(|e| (now, e)));
            if !moved && self.ctl.is_empty() && self.cmd_rx.is_empty() {
                return;
            }
        }
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let dtls = self.dtls.as_mut().and_then(|d| d.poll_timeout());
        dtls.into_iter().chain(self.sctp.poll_timeout()).min()
    }

    fn on_timeout(&mut self, now: Instant) {
        if let Some(dtls) = self.dtls.as_mut() {
            if dtls.poll_timeout().is_some_and(|t| t <= now) {
                dtls.on_timeout(now);
            }
        }
        if self.sctp.poll_timeout().is_some_and(|t| t <= now) {
            self.sctp.on_timeout(now);
        }
    }

    /// Creates a channel, as `PeerConnection::create_data_channel` does.
    pub(super) fn create(&mut self, label: &str, init: ChannelInit) -> DataChannel {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(ChannelShared::new(
            key,
            label.to_owned(),
            init,
            self.max_message_size.clone(),
            self.budget.clone(),
        ));
        let handle = DataChannel {
            shared: shared.clone(),
            cmds: self.cmds.clone(),
        };
        self.cmds
            .try_send(vec![ChannelCmd::Create(shared)])
            .expect("unbounded");
        handle
    }

    /// The first event `what` picks on the channel labelled `label`: when, and the channel.
    fn first(
        &self,
        label: &str,
        what: fn(&Event) -> Option<&DataChannel>,
    ) -> Option<(Instant, &DataChannel)> {
        let on = |h: &&DataChannel| h.label() == label;
        self.log
            .iter()
            .find_map(|(t, e)| what(e).filter(on).map(|h| (*t, h)))
    }

    /// The channel labelled `label` the peer announced, once it has.
    pub(super) fn announced(&self, label: &str) -> Option<DataChannel> {
        let what: fn(&Event) -> Option<&DataChannel> = |e| match e {
            Event::DataChannel(h) => Some(h),
            _ => None,
        };
        self.first(label, what).map(|(_, h)| h.clone())
    }

    /// When the channel labelled `label` opened.
    pub(super) fn opened(&self, label: &str) -> Option<Instant> {
        let what: fn(&Event) -> Option<&DataChannel> = |e| match e {
            Event::ChannelOpen(h) => Some(h),
            _ => None,
        };
        self.first(label, what).map(|(t, _)| t)
    }

    /// When the channel labelled `label` closed.
    pub(super) fn closed(&self, label: &str) -> Option<Instant> {
        let what: fn(&Event) -> Option<&DataChannel> = |e| match e {
            Event::ChannelClosed(h) => Some(h),
            _ => None,
        };
        self.first(label, what).map(|(t, _)| t)
    }

    /// The messages received on the channel labelled `label`, in order.
    pub(super) fn messages<'a>(&'a self, label: &'a str) -> impl Iterator<Item = &'a Message> {
        self.log.iter().filter_map(move |(_, e)| match e {
            Event::ChannelMessage(h, m) if h.label() == label => Some(m),
            _ => None,
        })
    }
}

/// Two stacks, A the DTLS client (even stream ids), over a [`SimNet`].
pub(super) struct StackPair {
    pub(super) net: SimNet<Bytes>,
    /// When the application wants to run again (a timer of the test's own).
    pub(super) wake: Option<Instant>,
    pub(super) a: Stack,
    pub(super) b: Stack,
}

impl StackPair {
    /// Two stacks with only the workarounds `work`, with DTLS or without.
    pub(super) fn new(seed: u64, imp: &str, work: Workarounds, dtls: bool) -> Self {
        let imp = Impairment::parse(imp).expect("impairment");
        let t0 = Instant::now();
        let certs = dtls.then(|| {
            let cert = || Certificate::generate().expect("certificate");
            (cert(), cert())
        });
        let (ca, cb) = certs.clone().unzip();
        let mut p = Self {
            net: SimNet::new(t0, seed, imp, imp),
            wake: None,
            a: Stack::new("A", t0, work, ca),
            b: Stack::new("B", t0, work, cb),
        };
        let (ca, cb) = certs.unzip();
        p.b.start(t0, false, ca.as_ref());
        p.a.start(t0, true, cb.as_ref());
        p
    }

    /// Runs until both associations are up.
    pub(super) fn connect(&mut self) {
        let up = self.run_until(Duration::from_secs(60), |p| p.a.up && p.b.up);
        assert!(up, "no association in 60 s");
    }
}

impl Sim for StackPair {
    fn net(&mut self) -> &mut SimNet<Bytes> {
        &mut self.net
    }

    fn wake(&mut self) -> Option<Instant> {
        self.wake.take()
    }

    fn timeouts(&mut self) -> [Option<Instant>; 2] {
        [self.a.poll_timeout(), self.b.poll_timeout()]
    }

    /// Settles both sides and puts what they send on the wire.
    fn flush(&mut self) {
        let now = self.net.now();
        for side in [Side::A, Side::B] {
            let mut wire = Vec::new();
            side.of(&mut self.a, &mut self.b).settle(now, &mut wire);
            for d in wire {
                self.net.send(side, d);
            }
        }
    }

    fn deliver(&mut self, now: Instant, to: Side, packet: Bytes) {
        to.of(&mut self.a, &mut self.b).datagram(now, &packet);
        self.flush();
    }

    fn on_timeouts(&mut self, now: Instant) {
        self.a.on_timeout(now);
        self.b.on_timeout(now);
        self.flush();
    }
}

/// Keeps writing messages `next..count` on `ch` while less than `window` is buffered.
pub(super) fn keep_writing(ch: &DataChannel, next: &mut u32, count: u32, window: usize) {
    use crate::channel::ChannelState;
    while *next < count && ch.state() == ChannelState::Open && ch.buffered_amount() < window {
        let m = super::sim_tests::message(*next, super::sim_tests::SIZES);
        ch.send_blocking(m).expect("send");
        *next += 1;
    }
}

/// The indices of the messages received on `label`, every byte of each checked.
fn indices(s: &Stack, label: &str) -> Vec<u32> {
    use super::sim_tests::{index, message, SIZES};
    let whole = |m: &Message| {
        let i = index(m.as_bytes());
        assert_eq!(m.as_bytes(), &message(i, SIZES)[..], "{label}: message {i}");
        i
    };
    s.messages(label).map(whole).collect()
}

/// The whole pipeline on both sides, DTLS → SCTP → router, over a lossy, delayed network
/// on the virtual clock: the handshake (every flight may be lost), a channel opened each
/// way (A's ordered, B's unordered) and a transfer on each, every byte checked.
#[test]
fn dtls_sctp_router_stacks_carry_every_byte_over_a_lossy_network() {
    let count = 300;
    let window = 256 * 1024;
    let conditions = [
        (1, "loss=2%,delay=5ms,jitter=2ms"),
        (2, "loss=10%,delay=20ms,reorder=2%,dup=1%"),
    ];
    for (seed, imp) in conditions {
        let mut p = StackPair::new(seed, imp, Workarounds::ALL, true);
        p.connect();
        let up = p.net.elapsed();
        let t0 = p.net.now() - up;
        let secure = p.a.secure.max(p.b.secure).map(|t| t - t0);
        let a = p.a.create("from-a", ChannelInit::default());
        let unordered = ChannelInit {
            unordered: true,
            ..ChannelInit::default()
        };
        let b = p.b.create("from-b", unordered);
        let (mut na, mut nb) = (0, 0);
        let done = p.run_until(Duration::from_secs(120), |p| {
            keep_writing(&a, &mut na, count, window);
            keep_writing(&b, &mut nb, count, window);
            let got = |s: &Stack, label| s.messages(label).count() == count as usize;
            got(&p.b, "from-a") && got(&p.a, "from-b")
        });
        let (to_b, to_a) = (indices(&p.b, "from-a"), indices(&p.a, "from-b"));
        println!(
            "{imp}: DTLS up after {secure:?}, SCTP after {up:?}, {} + {} messages after {:?}, {:?}",
            to_b.len(),
            to_a.len(),
            p.net.elapsed(),
            p.net.stats(Side::A)
        );
        assert!(
            done,
            "{imp}: {} and {} of {count} in 120 s",
            to_b.len(),
            to_a.len()
        );
        assert_eq!(
            to_b,
            (0..count).collect::<Vec<_>>(),
            "{imp}: ordered channel"
        );
        let mut to_a = to_a;
        to_a.sort_unstable();
        assert_eq!(
            to_a,
            (0..count).collect::<Vec<_>>(),
            "{imp}: unordered channel"
        );
        assert!(p.net.stats(Side::A).lost > 0 && p.net.stats(Side::B).lost > 0);
    }
}
