//! The SCTP engine: rtc-sctp's association and what smolrtc adds around it, sans-IO.
//!
//! Inputs: packets from the peer, stream commands (open, write, reset), the time
//! (`handle_timeout`). Outputs, through [`SctpIo`]: packets to send and [`SctpEvent`]s.
//! Messages are read out of the association only while [`SctpIo::backlogged`] says the
//! application keeps up, so a slow application closes the receive window. The actor in
//! `mod.rs` wraps it with the links to DTLS, the router and the peer connection; tests
//! drive two of them over the simulated network (`testkit::simnet`, tests/sctp_sim.rs).

use super::pacer::Pacer;
use super::reset_gate::ResetGate;
use super::rto::{self, RtoClock, Timers};
use super::send_queue::{Item, SendQueue, CHUNK_DATA};
use super::{chunk_walk, Ppi, Reliability, SctpConfig, DEFAULT_REMOTE_MAX_MESSAGE_SIZE};
use crate::error::SctpError;
use bytes::{Bytes, BytesMut};
use rtc_sctp::{
    Association, AssociationError, AssociationHandle, ClientConfig, DatagramEvent, Endpoint,
    EndpointConfig, Event, Payload, PayloadProtocolIdentifier, ReliabilityType, ServerConfig,
    StreamEvent, TimerConfig, TransportConfig,
};
use rtc_shared::TransportProtocol;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The DTLS actor is our one transport: rtc-sctp needs addresses, so it gets fixed ones.
const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);
const REMOTE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2);
/// Messages read out of SCTP before the application is asked whether it keeps up.
const READ_BATCH: usize = crate::runtime::APP_BATCH;
/// Packets kept while the association is not started yet.
const EARLY_PACKETS: usize = 32;
/// Most rounds of handing messages over and sending what left, per pass.
const PUMP_ROUNDS: usize = 8;

/// smolrtc's workarounds for rtc-sctp 0.21.1 defects, one named piece each (its module
/// names the defect; docs/SCTP-UPSTREAM.md the upstream change that would delete it).
/// Always all on; tests switch one off to show the test that pins it fails
/// (`workaround_tests.rs`). The engine runs the first four; the router the fifth.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Workarounds {
    /// `rto.rs`: retransmit sooner than rtc-sctp's fixed 1 s RTO.min.
    pub(crate) rto_clock: bool,
    /// `reset_gate.rs`: stream resets answered and resent.
    pub(crate) reset_gate: bool,
    /// `send_queue.rs` 1: rtc-sctp's own queue kept short.
    pub(crate) queue_depth: bool,
    /// `send_queue.rs` 2: streams share the link by bytes.
    pub(crate) fair: bool,
    /// `channel::router` `free_stream`: a freed stream id is reused last (off: the lowest
    /// free id, which rtc-sctp's redundant reset can close again).
    pub(crate) stream_ids: bool,
}

impl Workarounds {
    pub(crate) const ALL: Self = Self {
        rto_clock: true,
        reset_gate: true,
        queue_depth: true,
        fair: true,
        stream_ids: true,
    };
}

/// What the engine reports.
#[derive(Debug)]
pub(crate) enum SctpEvent {
    /// The association is up.
    Connected {
        dtls_client: bool,
        max_streams: u16,
        /// The peer's max-message-size (`usize::MAX`: unlimited).
        max_message_size: usize,
    },
    /// One whole message.
    Message { stream: u16, ppi: Ppi, data: Bytes },
    /// Bytes of a stream acknowledged, abandoned or dropped unsent: no longer buffered.
    Released { stream: u16, bytes: usize },
    /// The stream was reset (by the peer, or ours could not be).
    StreamClosed { stream: u16 },
    /// The association could not be started.
    Failed(SctpError),
    /// The association ended (once); `report` when it ended by itself (ABORT or SHUTDOWN,
    /// either side) rather than by [`SctpEngine::close`].
    Closed { report: Option<SctpError> },
}

/// Where the engine's outputs go.
pub(crate) trait SctpIo {
    /// One SCTP packet for the peer.
    fn transmit(&mut self, packet: Bytes);
    fn event(&mut self, event: SctpEvent);
    /// Whether the application is behind: no more messages are read out while it is.
    fn backlogged(&self) -> bool;
    /// A batch of messages was handed over.
    fn flush(&mut self) {}
}

impl Timers for Association {
    fn next_timer(&self) -> Option<Instant> {
        self.poll_timeout()
    }

    fn fire(&mut self, at: Instant) -> bool {
        let before = self.stats().get_num_t3timeouts();
        self.handle_timeout(at);
        self.stats().get_num_t3timeouts() > before
    }
}

fn to_engine(ppi: Ppi) -> PayloadProtocolIdentifier {
    match ppi {
        Ppi::Dcep => PayloadProtocolIdentifier::Dcep,
        Ppi::String => PayloadProtocolIdentifier::String,
        Ppi::Binary => PayloadProtocolIdentifier::Binary,
        Ppi::StringEmpty => PayloadProtocolIdentifier::StringEmpty,
        Ppi::BinaryEmpty => PayloadProtocolIdentifier::BinaryEmpty,
        Ppi::Unknown => PayloadProtocolIdentifier::Unknown,
    }
}

fn from_engine(ppi: PayloadProtocolIdentifier) -> Ppi {
    match ppi {
        PayloadProtocolIdentifier::Dcep => Ppi::Dcep,
        PayloadProtocolIdentifier::String => Ppi::String,
        PayloadProtocolIdentifier::Binary => Ppi::Binary,
        PayloadProtocolIdentifier::StringEmpty => Ppi::StringEmpty,
        PayloadProtocolIdentifier::BinaryEmpty => Ppi::BinaryEmpty,
        // Non-exhaustive upstream.
        _ => Ppi::Unknown,
    }
}

/// See the module documentation.
pub(crate) struct SctpEngine {
    name: Arc<str>,
    config: SctpConfig,
    remote_max_message_size: usize,
    endpoint: Option<Endpoint>,
    assoc: Option<(AssociationHandle, Association)>,
    client: bool,
    connected: bool,
    closed: bool,
    readable: VecDeque<u16>,
    early: Vec<BytesMut>,
    /// What the router asked to send, handed to the association fairly across streams
    /// (and, before it is up, kept: a DCEP ACK to an OPEN that came with the server's
    /// first DATA while our COOKIE ACK was lost).
    queue: SendQueue,
    /// The association's clock, run ahead to retransmit sooner than rtc-sctp's 1 s floor.
    clock: RtoClock,
    /// When the early retransmission is due (see `rto.rs`), as last computed.
    early_rtx: Option<Instant>,
    /// Holds the peer's stream resets until their data is in, so rtc-sctp answers them.
    resets: ResetGate,
    /// Each stream's reliability as given to the association (unordered, type, value).
    params: HashMap<u16, (bool, ReliabilityType, u32)>,
    /// Which workarounds run (all but in tests).
    work: Workarounds,
    /// Spreads DATA packets over the round trip (`SctpConfig::pacing`).
    pacer: Option<Pacer>,
}

impl SctpEngine {
    pub(crate) fn new(name: Arc<str>, config: SctpConfig, now: Instant) -> Self {
        Self::with_workarounds(name, config, now, Workarounds::ALL)
    }

    /// With only the workarounds `work` (all but in tests, which show each is needed).
    pub(crate) fn with_workarounds(
        name: Arc<str>,
        config: SctpConfig,
        now: Instant,
        work: Workarounds,
    ) -> Self {
        let pacer = config.pacing.then(|| Pacer::new(config.mtu as usize));
        Self {
            name,
            config,
            remote_max_message_size: DEFAULT_REMOTE_MAX_MESSAGE_SIZE,
            endpoint: None,
            assoc: None,
            client: false,
            connected: false,
            closed: false,
            readable: VecDeque::new(),
            early: Vec::new(),
            queue: SendQueue::new(work.queue_depth, work.fair),
            clock: RtoClock::new(now),
            early_rtx: None,
            resets: ResetGate::default(),
            params: HashMap::new(),
            work,
            pacer,
        }
    }

    /// From the remote description: its max-message-size (0 = unlimited).
    pub(crate) fn configure(&mut self, remote_max_message_size: usize) {
        self.remote_max_message_size = remote_max_message_size;
    }

    /// Creates or configures an outgoing stream.
    pub(crate) fn open(&mut self, stream: u16, unordered: bool, rel: Reliability) {
        self.queue.push(stream, Item::Open { unordered, rel });
    }

    /// Sends one message.
    pub(crate) fn write(&mut self, now: Instant, stream: u16, ppi: Ppi, data: Bytes) {
        let item = Item::Message {
            ppi,
            data,
            queued: now,
        };
        self.queue.push(stream, item);
    }

    /// Resets an outgoing stream (after what is queued on it).
    pub(crate) fn reset(&mut self, stream: u16) {
        self.queue.push(stream, Item::Reset);
    }

    /// Closed: ended, and reported.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    fn transport(&self) -> TransportConfig {
        let max_out = match self.remote_max_message_size {
            0 => u32::MAX,
            n => u32::try_from(n).unwrap_or(u32::MAX),
        };
        // ICE consent freshness decides when the peer is gone (RFC 7675: failed 29 s after
        // its last answer). rtc-sctp's default gives up retransmitting DATA and stream
        // resets after 6 timeouts and then just stops, silently: with our shorter
        // retransmission timeout that came 8 s into an outage, and the association never
        // sent again after the network came back (tests/faults.rs, a 10 s cut).
        let timers = TimerConfig {
            max_t3_rtx_retrans: usize::MAX,
            max_reconfig_retrans: usize::MAX,
            ..TimerConfig::default()
        };
        TransportConfig::default()
            .with_timer_config(timers)
            .with_max_receive_buffer_size(self.config.receive_buffer)
            .with_max_message_size(max_out)
            .with_max_num_inbound_streams(self.config.max_streams)
            .with_max_num_outbound_streams(self.config.max_streams)
    }

    /// DTLS is up: starts the association (the DTLS client sends INIT).
    pub(crate) fn start(&mut self, now: Instant, client: bool, io: &mut dyn SctpIo) {
        if self.endpoint.is_some() {
            return;
        }
        self.client = client;
        let mut ep_config = EndpointConfig::new();
        ep_config.max_payload_size(rtc_sctp::max_payload_size_for_mtu(self.config.mtu));
        let server = (!client).then(|| Arc::new(ServerConfig::new(self.transport())));
        let mut endpoint =
            Endpoint::new(LOCAL, TransportProtocol::UDP, Arc::new(ep_config), server);
        if client {
            match endpoint.connect(
                self.clock.at(now),
                ClientConfig::new(self.transport()),
                REMOTE,
            ) {
                Ok(pair) => self.assoc = Some(pair),
                Err(e) => {
                    let e = SctpError::Connect(e.to_string());
                    io.event(SctpEvent::Failed(e));
                    return;
                }
            }
        }
        self.endpoint = Some(endpoint);
        for p in std::mem::take(&mut self.early) {
            self.packet(now, p);
        }
    }

    /// One decrypted SCTP packet from the peer.
    pub(crate) fn packet(&mut self, now: Instant, p: BytesMut) {
        if self.endpoint.is_none() {
            if self.early.len() < EARLY_PACKETS {
                self.early.push(p);
            }
            return;
        }
        // The one walk of a packet on our side (rtc-sctp parses it again; it tells
        // nothing of what a packet held): the send queue's SACKs, the gate's interest.
        let (mut moved, mut gate) = (false, false);
        for (ty, _, chunk) in chunk_walk(&p) {
            moved |= self.queue.received_chunk(ty, chunk);
            gate |= ResetGate::wants(ty);
        }
        if moved {
            self.clock.progressed(now);
        }
        if self.queue.take_gap_report() {
            self.clock.hole(now);
        }
        let p = match gate && self.work.reset_gate {
            true => self.resets.inspect(now, p),
            false => Some(p),
        };
        if let Some(p) = p {
            self.feed(now, p);
        }
    }

    /// Hands one packet from the peer to the association.
    fn feed(&mut self, now: Instant, p: BytesMut) {
        let Some(endpoint) = self.endpoint.as_mut() else {
            return;
        };
        match endpoint.handle(self.clock.at(now), REMOTE, None, p.freeze()) {
            Some((ch, DatagramEvent::NewAssociation(a))) if self.assoc.is_none() => {
                self.assoc = Some((ch, a));
            }
            Some((ch, DatagramEvent::AssociationEvent(ev))) => {
                if let Some((h, a)) = self.assoc.as_mut() {
                    if *h == ch {
                        a.handle_event(ev);
                    }
                }
            }
            _ => {}
        }
    }

    /// Pulls everything the association has to say, after every input: its endpoint
    /// events, its events, the messages the router can take, the packets to send; again
    /// while held stream resets come due (our SACKs may have covered their data); then
    /// whether it closed.
    pub(crate) fn drain(&mut self, now: Instant, io: &mut dyn SctpIo) {
        if self.endpoint.is_none() || self.assoc.is_none() {
            return;
        }
        loop {
            self.endpoint_events();
            while let Some(ev) = self.assoc.as_mut().and_then(|(_, a)| a.poll()) {
                self.association_event(ev, io);
            }
            self.read_messages(io);
            self.send_packets(now, io);
            let due = self.resets.due(now);
            if due.is_empty() {
                break;
            }
            for p in due {
                self.feed(now, p);
            }
        }
        self.check_closed(io);
    }

    /// The association's notes to its endpoint (rtc-sctp's own bookkeeping).
    fn endpoint_events(&mut self) {
        let (Some(endpoint), Some((ch, a))) = (self.endpoint.as_mut(), self.assoc.as_mut()) else {
            return;
        };
        while let Some(ev) = a.poll_endpoint_event() {
            endpoint.handle_event(*ch, ev);
        }
    }

    fn association_event(&mut self, ev: Event, io: &mut dyn SctpIo) {
        let Some((_, a)) = self.assoc.as_mut() else {
            return;
        };
        match ev {
            Event::Connected => {
                self.connected = true;
                let max_streams = a
                    .negotiated_max_streams()
                    .unwrap_or(self.config.max_streams);
                log::info!(
                    "[{}] SCTP association up ({}, {max_streams} streams)",
                    self.name,
                    if self.client { "client" } else { "server" }
                );
                io.event(SctpEvent::Connected {
                    dtls_client: self.client,
                    max_streams,
                    max_message_size: match self.remote_max_message_size {
                        0 => usize::MAX,
                        n => n,
                    },
                });
            }
            Event::Stream(StreamEvent::Readable { id }) if !self.readable.contains(&id) => {
                self.readable.push_back(id);
            }
            Event::Stream(StreamEvent::Opened { .. }) => {
                // Accepted streams are addressed by id; empty rtc-sctp's accept queue.
                while a.accept_stream().is_some() {}
            }
            Event::Stream(StreamEvent::BufferedAmountReleased { id, n_bytes }) => {
                self.clock.released(n_bytes);
                self.queue.released(n_bytes);
                io.event(SctpEvent::Released {
                    stream: id,
                    bytes: n_bytes,
                });
            }
            Event::AssociationLost {
                reason: AssociationError::Reset,
                id,
            } => {
                // What is still queued for the stream can never be sent: freed now, not
                // when the association ends (a peer resetting streams with data stuck
                // behind its closed window would pile it up otherwise).
                let dropped = self.queue.drop_stream(id);
                log::debug!(
                    "[{}] SCTP: stream {id} reset ({dropped} queued bytes dropped)",
                    self.name
                );
                io.event(SctpEvent::StreamClosed { stream: id });
            }
            Event::HandshakeFailed { reason } => {
                log::warn!("[{}] SCTP handshake failed: {reason}", self.name);
                self.connected = true; // let the close below run
            }
            _ => {}
        }
    }

    /// Reads whole messages for the router while it keeps up (module docs).
    fn read_messages(&mut self, io: &mut dyn SctpIo) {
        let Some((_, a)) = self.assoc.as_mut() else {
            return;
        };
        while !io.backlogged() && !self.readable.is_empty() {
            let mut n = 0;
            while n < READ_BATCH {
                let Some(&id) = self.readable.front() else {
                    break;
                };
                match a.stream(id).and_then(|mut s| s.read_sctp()) {
                    Ok(Some(chunks)) => {
                        let ppi = from_engine(chunks.ppi);
                        match chunks.to_payload(usize::MAX) {
                            Ok(data) => io.event(SctpEvent::Message {
                                stream: id,
                                ppi,
                                data: data.freeze(),
                            }),
                            Err(e) => log::warn!("[{}] SCTP: stream {id}: {e}", self.name),
                        }
                        n += 1;
                    }
                    Ok(None) | Err(_) => {
                        self.readable.pop_front();
                    }
                }
            }
            io.flush();
        }
    }

    /// Hands queued messages over as the window lets them leave (a few rounds per pass),
    /// sends the packets, and resends held stream resets that are due.
    fn send_packets(&mut self, now: Instant, io: &mut dyn SctpIo) {
        let Some((_, a)) = self.assoc.as_mut() else {
            return;
        };
        let rto = self.clock.rto(a.rtt());
        let srtt = a.rtt();
        if let Some(pacer) = self.pacer.as_mut() {
            pacer.set_rate(now, srtt, self.queue.in_flight());
            pacer.release(now, &mut |p| io.transmit(p));
        }
        for _ in 0..PUMP_ROUNDS {
            if self.connected {
                pump(
                    &self.name,
                    now,
                    a,
                    &mut self.queue,
                    &mut self.params,
                    &mut self.clock,
                    io,
                );
            }
            let mut fresh = 0;
            while let Some(t) = a.poll_transmit(self.clock.at(now)) {
                let Payload::RawEncode(packets) = t.message else {
                    continue;
                };
                for p in packets {
                    // The one walk of a packet we send, for the queue, the gate and the
                    // pacer.
                    let mut data = false;
                    for (ty, len, chunk) in chunk_walk(&p) {
                        fresh += self.queue.sent_chunk(ty, len, chunk);
                        data |= ty == CHUNK_DATA;
                        if self.work.reset_gate {
                            self.resets.sent_chunk(now, &p, ty, chunk, rto);
                        }
                    }
                    match self.pacer.as_mut() {
                        Some(pacer) => pacer.send(now, p, data, &mut |p| io.transmit(p)),
                        None => io.transmit(p),
                    }
                }
            }
            if fresh == 0 {
                break;
            }
        }
        if let Some(pacer) = self.pacer.as_mut() {
            // Again with what was just handed over in flight: a burst after an idle
            // spell is paced at its own size.
            pacer.set_rate(now, srtt, self.queue.in_flight());
            pacer.release(now, &mut |p| io.transmit(p));
        }
        self.clock.set_unacked(now, self.queue.unacknowledged());
        if self.work.reset_gate {
            for p in self.resets.resend(now, rto) {
                io.transmit(p.freeze());
            }
        }
    }

    /// Reports the association's end once (ABORT or SHUTDOWN, either side) and passes the
    /// teardown on to DTLS. A server association sits in CLOSED until COOKIE-ECHO: only a
    /// live one can close.
    fn check_closed(&mut self, io: &mut dyn SctpIo) {
        let Some((_, a)) = self.assoc.as_ref() else {
            return;
        };
        if self.connected && a.is_closed() && !self.closed {
            self.closed = true;
            log::info!("[{}] SCTP association closed", self.name);
            io.event(SctpEvent::Closed {
                report: Some(SctpError::Closed),
            });
        }
    }

    /// Shutdown step 2 (docs/ARCHITECTURE.md): ABORT, the router told the association is
    /// gone (it closes every channel), DTLS told to close.
    pub(crate) fn close(&mut self, now: Instant, io: &mut dyn SctpIo) {
        if self.closed {
            return;
        }
        self.queue.clear();
        if let Some(pacer) = self.pacer.as_mut() {
            pacer.clear();
        }
        if let Some((_, a)) = self.assoc.as_mut() {
            // W3C close(): an ABORT, no round trip. drain() sends it and reports the close.
            let _ = a.abort();
            self.drain(now, io);
        }
        if !self.closed {
            self.closed = true;
            io.event(SctpEvent::Closed { report: None });
        }
    }

    /// When [`Self::handle_timeout`] is next due.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let engine = self.assoc.as_ref().and_then(|(_, a)| a.poll_timeout());
        let srtt = self.assoc.as_ref().map_or(Duration::ZERO, |(_, a)| a.rtt());
        self.early_rtx = self
            .clock
            .deadline(srtt, engine)
            .filter(|_| self.work.rto_clock);
        self.early_rtx
            .or(engine.map(|t| self.clock.real(t)))
            .into_iter()
            .chain(self.resets.deadline())
            .chain(self.pacer.as_ref().and_then(Pacer::next_release))
            .min()
    }

    /// How losses were repaired so far (tests and the loss figures in docs/SCTP.md).
    #[cfg(test)]
    pub(crate) fn recovery_stats(&self) -> rto::RecoveryStats {
        let Some((_, a)) = self.assoc.as_ref() else {
            return rto::RecoveryStats::default();
        };
        let mut s = a.stats();
        rto::RecoveryStats {
            t3_timeouts: s.get_num_t3timeouts(),
            fast_retransmits: s.get_num_fast_retrans(),
            sacks_received: s.get_num_sacks(),
            data_received: s.get_num_datas(),
            ack_timeouts: s.get_num_ack_timeouts(),
            forced: self.clock.forced().0,
            forced_for_hole: self.clock.forced().1,
        }
    }

    /// Bytes in flight and SRTT, as the pacer sees them (tests).
    #[cfg(test)]
    pub(crate) fn flight(&self) -> (u64, Duration) {
        let srtt = self.assoc.as_ref().map_or(Duration::ZERO, |(_, a)| a.rtt());
        (self.queue.in_flight(), srtt)
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let Some((_, a)) = self.assoc.as_mut() else {
            return;
        };
        if self.early_rtx.is_some_and(|t| t <= now) {
            log::debug!(
                "[{}] SCTP: no acknowledgement in {:?}: retransmitting",
                self.name,
                self.clock.rto(a.rtt())
            );
            self.clock.force(now, a);
        } else {
            a.handle_timeout(self.clock.at(now));
        }
    }
}

/// Hands the association what the queue lets go now (see `send_queue`).
fn pump(
    name: &str,
    now: Instant,
    a: &mut Association,
    queue: &mut SendQueue,
    params: &mut HashMap<u16, (bool, ReliabilityType, u32)>,
    clock: &mut RtoClock,
    io: &mut dyn SctpIo,
) {
    let mut p = Pump {
        name,
        now,
        a,
        params,
        clock,
        io,
    };
    queue.tick(now);
    while let Some((stream, item)) = queue.next() {
        match item {
            Item::Open { unordered, rel } => p.open(stream, unordered, rel),
            // DCEP messages are not user data: they go whatever the channel's lifetime.
            Item::Message { ppi, data, queued }
                if ppi != Ppi::Dcep && queue.expired(stream, queued, now) =>
            {
                log::trace!("[{name}] SCTP: message on stream {stream} outlived its lifetime");
                p.io.event(SctpEvent::Released {
                    stream,
                    bytes: data.len(),
                });
            }
            Item::Message { ppi, data, .. } => p.write(queue, stream, ppi, &data),
            Item::Reset => p.reset(stream),
        }
    }
}

/// What one `pump` works on, but the queue it takes items from.
struct Pump<'a> {
    name: &'a str,
    now: Instant,
    a: &'a mut Association,
    params: &'a mut HashMap<u16, (bool, ReliabilityType, u32)>,
    clock: &'a mut RtoClock,
    io: &'a mut dyn SctpIo,
}

impl Pump<'_> {
    /// Creates stream `stream` or sets its reliability; the queue remembers the parameters.
    fn open(&mut self, stream: u16, unordered: bool, rel: Reliability) {
        let (rel, value) = match rel {
            Reliability::Reliable => (ReliabilityType::Reliable, 0),
            Reliability::Rexmit(n) => (ReliabilityType::Rexmit, n),
            Reliability::Timed(ms) => (ReliabilityType::Timed, ms),
        };
        // Lifetimes run on the association's clock, which may run ahead by up to
        // LIFETIME_SLACK within one (rto.rs): rtc-sctp gets them that much longer.
        let long = u128::from(value) > rto::SHORT_LIFETIME.as_millis();
        let value = match rel {
            ReliabilityType::Timed if long => {
                let slack = rto::LIFETIME_SLACK.as_millis() as u32;
                value.saturating_add(slack)
            }
            _ => value,
        };
        let res = match self.a.stream(stream) {
            Ok(mut s) => s.set_reliability_params(unordered, rel, value),
            Err(_) => self
                .a
                .open_stream(stream, PayloadProtocolIdentifier::Binary)
                .and_then(|mut s| s.set_reliability_params(unordered, rel, value)),
        };
        match res {
            Ok(()) => {
                self.params.insert(stream, (unordered, rel, value));
            }
            Err(e) => log::warn!("[{}] SCTP: cannot open stream {stream}: {e}", self.name),
        }
    }

    /// Writes one message; one that cannot be written is released back to the router.
    fn write(&mut self, queue: &mut SendQueue, stream: u16, ppi: Ppi, data: &Bytes) {
        let len = data.len();
        let at = self.clock.at(self.now);
        // DCEP messages go ordered and reliable whatever the channel is (RFC 8832
        // §6; as browsers send them): a lost OPEN given up after the channel's
        // lifetime or retransmission limit left the channel unopened for good.
        // rtc-sctp takes a message's reliability from its stream when written.
        let channel = self.params.get(&stream).copied();
        let control =
            ppi == Ppi::Dcep && channel.is_some_and(|p| p != (false, ReliabilityType::Reliable, 0));
        let res = self.a.stream(stream).and_then(|mut s| match channel {
            Some((unordered, rel, value)) if control => {
                s.set_reliability_params(false, ReliabilityType::Reliable, 0)?;
                let res = s.write_sctp(at, data, to_engine(ppi));
                s.set_reliability_params(unordered, rel, value)?;
                res
            }
            _ => s.write_sctp(at, data, to_engine(ppi)),
        });
        match res {
            Ok(_) => {
                queue.wrote(
                    len,
                    control || channel.is_none_or(|(unordered, ..)| !unordered),
                );
                self.clock.sent(self.now, len);
                // rtc-sctp times lifetimes on the clock the early retransmission runs
                // ahead: it must not reach this message's deadline too soon (rto.rs).
                if let Some((_, ReliabilityType::Timed, value)) = channel.filter(|_| !control) {
                    let life = Duration::from_millis(u64::from(value));
                    if life > rto::SHORT_LIFETIME + rto::LIFETIME_SLACK {
                        self.clock.wrote_timed(self.now, life - rto::LIFETIME_SLACK);
                    }
                }
            }
            Err(e) => {
                log::warn!(
                    "[{}] SCTP: message of {len} bytes on stream {stream} not sent: {e}",
                    self.name
                );
                self.io.event(SctpEvent::Released { stream, bytes: len });
            }
        }
    }

    /// Resets the outgoing stream; if that fails the router hears the stream is closed.
    fn reset(&mut self, stream: u16) {
        let name = self.name;
        log::debug!("[{name}] SCTP: resetting stream {stream}");
        let at = self.clock.at(self.now);
        if let Err(e) = self.a.stream(stream).and_then(|mut s| s.close(at)) {
            log::debug!("[{name}] SCTP: reset of stream {stream}: {e}");
            self.io.event(SctpEvent::StreamClosed { stream });
        }
    }
}
