//! The SCTP association actor (RFC 8261 over DTLS), around rtc-sctp's sans-IO association.
//!
//! Input: decrypted SCTP packets from the DTLS actor, stream commands from the router.
//! Output: SCTP packets to the DTLS actor, whole messages and stream resets to the router
//! (`RouterMsg`), released bytes and the association's end on a second link the router
//! always reads (`RouterCtl`). Messages are read out of SCTP only while the router keeps
//! up, so a slow application closes the receive window (docs/ARCHITECTURE.md, "Backpressure").
//! What is sent is bounded before it gets here (see [`crate::channel`]).

use crate::channel::router::{RouterCtl, RouterMsg};
use crate::dtls::DtlsMsg;
use crate::error::SctpError;
use crate::peer::PeerMsg;
use crate::runtime::{self, Actor, Link};
use bytes::{Bytes, BytesMut};
use rtc_sctp::{
    Association, AssociationError, AssociationHandle, ClientConfig, DatagramEvent, Endpoint,
    EndpointConfig, Event, Payload, PayloadProtocolIdentifier as Ppi, ReliabilityType,
    ServerConfig, StreamEvent, TimerConfig, TransportConfig,
};
use rtc_shared::TransportProtocol;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub(crate) mod reset_gate;
mod rto;
pub(crate) mod send_queue;
use reset_gate::ResetGate;
use rto::RtoClock;
use send_queue::{Item, SendQueue};

/// TSN serial comparison (RFC 1982 on 32 bits): `a` is after `b`.
fn tsn_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The chunks of an SCTP packet, walked by their length fields without allocating (the
/// send queue and the reset gate look at every packet): (type, length field, the chunk
/// with its padding, cut at the packet's end). Stops at a length under 4.
fn chunk_walk(p: &[u8]) -> impl Iterator<Item = (u8, usize, &[u8])> {
    let mut at = 12;
    std::iter::from_fn(move || {
        let len = usize::from(be16(p, at + 2)?);
        if len < 4 {
            return None;
        }
        let start = at;
        at += len.next_multiple_of(4);
        Some((p[start], len, &p[start..at.min(p.len())]))
    })
}

/// SCTP settings (defaults in docs/ARCHITECTURE.md, "Defaults").
#[derive(Clone, Debug)]
pub struct SctpConfig {
    /// Inbound and outbound streams offered (Chrome uses 1024).
    pub max_streams: u16,
    /// Receive buffer (advertised window), bytes: at most this much unacknowledged data
    /// in flight towards us, so it bounds throughput at window / RTT (3 MiB: 1.2 Gbit/s
    /// at 20 ms) and memory per association when the application reads slowly.
    pub receive_buffer: u32,
    /// Our `a=max-message-size`: the largest message we accept.
    pub max_message_size: usize,
    /// SCTP packet size budget (the whole SCTP packet, before DTLS).
    pub mtu: u32,
    /// Send buffer of one channel, bytes: most its buffered amount may reach; a send past
    /// it fails (W3C `OperationError`). See [`DEFAULT_SEND_BUFFER_PER_CHANNEL`].
    pub send_buffer_per_channel: usize,
    /// Send buffer of the whole connection, bytes: most all its channels' buffered amounts
    /// together may reach; a send past it fails. See [`DEFAULT_SEND_BUFFER_PER_CONNECTION`].
    pub send_buffer_per_connection: usize,
}

/// Default of [`SctpConfig::send_buffer_per_channel`]: twice the most this crate's tests
/// and benchmarks queue on one channel (16 MiB at once in `tests/backpressure.rs`; the
/// bench tools pace at 8 MiB).
pub const DEFAULT_SEND_BUFFER_PER_CHANNEL: usize = 32 * 1024 * 1024;
/// Default of [`SctpConfig::send_buffer_per_connection`].
pub const DEFAULT_SEND_BUFFER_PER_CONNECTION: usize = 64 * 1024 * 1024;

impl Default for SctpConfig {
    fn default() -> Self {
        Self {
            max_streams: 1024,
            receive_buffer: 3 * 1024 * 1024,
            max_message_size: 256 * 1024,
            mtu: 1200,
            send_buffer_per_channel: DEFAULT_SEND_BUFFER_PER_CHANNEL,
            send_buffer_per_connection: DEFAULT_SEND_BUFFER_PER_CONNECTION,
        }
    }
}

/// The remote's max-message-size when its description has none (RFC 8841 §6.1).
pub const DEFAULT_REMOTE_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Inputs of the SCTP actor.
pub(crate) enum SctpMsg {
    /// One decrypted SCTP packet.
    Packet(BytesMut),
    /// DTLS is up: start the association (the DTLS client sends INIT).
    Start { client: bool },
    /// From the remote description: its max-message-size (0 = unlimited).
    Configure { remote_max_message_size: usize },
    /// Create or configure an outgoing stream.
    Open {
        stream: u16,
        unordered: bool,
        rel: ReliabilityType,
        value: u32,
    },
    /// Send one message.
    Write { stream: u16, ppi: Ppi, data: Bytes },
    /// Reset an outgoing stream (closes the channel).
    Reset { stream: u16 },
    /// Abort the association, then pass Close on to DTLS.
    Close,
}

/// What the SCTP actor reports to the peer connection.
#[derive(Debug)]
pub(crate) enum SctpReport {
    Connected,
    Closed(SctpError),
}

// The DTLS actor is our one transport: rtc-sctp needs addresses, so it gets fixed ones.
const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);
const REMOTE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2);
/// Messages read out of SCTP before the router link is flushed.
const READ_BATCH: usize = crate::runtime::APP_BATCH;
/// Packets kept while the association is not started yet.
const EARLY_PACKETS: usize = 32;
/// Most rounds of handing messages over and sending what left, per pass.
const PUMP_ROUNDS: usize = 8;

pub(crate) struct SctpActor {
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
    router: Link<RouterMsg>,
    router_ctl: Link<RouterCtl>,
    dtls: Link<DtlsMsg>,
    peer: Link<PeerMsg>,
    /// The association's clock, run ahead to retransmit sooner than rtc-sctp's 1 s floor.
    clock: RtoClock,
    /// When the early retransmission is due (see `rto.rs`), as last computed.
    early_rtx: Option<Instant>,
    /// Holds the peer's stream resets until their data is in, so rtc-sctp answers them.
    resets: ResetGate,
}

impl SctpActor {
    pub(crate) fn new(
        name: Arc<str>,
        config: SctpConfig,
        router: Link<RouterMsg>,
        router_ctl: Link<RouterCtl>,
        dtls: Link<DtlsMsg>,
        peer: Link<PeerMsg>,
    ) -> Self {
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
            queue: SendQueue::default(),
            router,
            router_ctl,
            dtls,
            peer,
            clock: RtoClock::new(Instant::now()),
            early_rtx: None,
            resets: ResetGate::default(),
        }
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

    fn handle_msg(&mut self, now: Instant, msg: SctpMsg) {
        match msg {
            SctpMsg::Packet(p) => self.packet(now, p),
            SctpMsg::Start { client } => self.start(now, client),
            SctpMsg::Configure {
                remote_max_message_size,
            } => self.remote_max_message_size = remote_max_message_size,
            SctpMsg::Open {
                stream,
                unordered,
                rel,
                value,
            } => {
                let item = Item::Open {
                    unordered,
                    rel,
                    value,
                };
                self.queue.push(stream, item);
            }
            SctpMsg::Write { stream, ppi, data } => {
                let item = Item::Message {
                    ppi,
                    data,
                    queued: now,
                };
                self.queue.push(stream, item);
            }
            SctpMsg::Reset { stream } => self.queue.push(stream, Item::Reset),
            SctpMsg::Close => self.close(),
        }
    }

    fn start(&mut self, now: Instant, client: bool) {
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
                    self.peer.push(PeerMsg::Sctp(SctpReport::Closed(e)));
                    return;
                }
            }
        }
        self.endpoint = Some(endpoint);
        for p in std::mem::take(&mut self.early) {
            self.packet(now, p);
        }
    }

    fn packet(&mut self, now: Instant, p: BytesMut) {
        if self.endpoint.is_none() {
            if self.early.len() < EARLY_PACKETS {
                self.early.push(p);
            }
            return;
        }
        if let Some(p) = self.resets.incoming(now, p) {
            self.feed(now, p);
        }
    }

    /// Hands one packet from the peer to the association.
    fn feed(&mut self, now: Instant, p: BytesMut) {
        let Some(endpoint) = self.endpoint.as_mut() else {
            return;
        };
        if self.queue.received_packet(&p) {
            self.clock.progressed(now);
        }
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
    fn drain_at(&mut self, now: Instant) {
        if self.endpoint.is_none() || self.assoc.is_none() {
            return;
        }
        loop {
            self.endpoint_events();
            while let Some(ev) = self.assoc.as_mut().and_then(|(_, a)| a.poll()) {
                self.association_event(now, ev);
            }
            self.read_messages();
            self.send_packets(now);
            let due = self.resets.due(now);
            if due.is_empty() {
                break;
            }
            for p in due {
                self.feed(now, p);
            }
        }
        self.check_closed();
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

    fn association_event(&mut self, now: Instant, ev: Event) {
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
                self.router.push(RouterMsg::Connected {
                    dtls_client: self.client,
                    max_streams,
                    max_message_size: match self.remote_max_message_size {
                        0 => usize::MAX,
                        n => n,
                    },
                });
                self.peer.push(PeerMsg::Sctp(SctpReport::Connected));
            }
            Event::Stream(StreamEvent::Readable { id }) if !self.readable.contains(&id) => {
                self.readable.push_back(id);
            }
            Event::Stream(StreamEvent::Opened { .. }) => {
                // Accepted streams are addressed by id; empty rtc-sctp's accept queue.
                while a.accept_stream().is_some() {}
            }
            Event::Stream(StreamEvent::BufferedAmountReleased { id, n_bytes }) => {
                self.clock.released(now, n_bytes);
                self.queue.released(n_bytes);
                self.router_ctl.push(RouterCtl::Released {
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
                self.router.push(RouterMsg::StreamClosed { stream: id });
            }
            Event::HandshakeFailed { reason } => {
                log::warn!("[{}] SCTP handshake failed: {reason}", self.name);
                self.connected = true; // let the close below run
            }
            _ => {}
        }
    }

    /// Reads whole messages for the router while it keeps up (module docs).
    fn read_messages(&mut self) {
        let Some((_, a)) = self.assoc.as_mut() else {
            return;
        };
        while !self.router.is_backlogged() && !self.readable.is_empty() {
            let mut n = 0;
            while n < READ_BATCH {
                let Some(&id) = self.readable.front() else {
                    break;
                };
                match a.stream(id).and_then(|mut s| s.read_sctp()) {
                    Ok(Some(chunks)) => {
                        let ppi = chunks.ppi;
                        match chunks.to_payload(usize::MAX) {
                            Ok(data) => self.router.push(RouterMsg::Data {
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
            self.router.flush();
        }
    }

    /// Hands queued messages over as the window lets them leave (a few rounds per pass),
    /// sends the packets, and resends held stream resets that are due.
    fn send_packets(&mut self, now: Instant) {
        let Some((_, a)) = self.assoc.as_mut() else {
            return;
        };
        let rto = self.clock.rto(a.rtt());
        for _ in 0..PUMP_ROUNDS {
            if self.connected {
                pump(
                    &self.name,
                    now,
                    a,
                    &mut self.queue,
                    &mut self.clock,
                    &mut self.router,
                    &mut self.router_ctl,
                );
            }
            let mut fresh = 0;
            while let Some(t) = a.poll_transmit(self.clock.at(now)) {
                if let Payload::RawEncode(packets) = t.message {
                    for p in packets {
                        self.resets.outgoing(now, &p, rto);
                        fresh += self.queue.sent_packet(&p);
                        self.dtls.push(DtlsMsg::Send(p));
                    }
                }
            }
            if fresh == 0 {
                break;
            }
        }
        self.clock.set_unacked(now, self.queue.unacknowledged());
        for p in self.resets.resend(now, rto) {
            self.dtls.push(DtlsMsg::Send(p.freeze()));
        }
    }

    /// Reports the association's end once (ABORT or SHUTDOWN, either side) and passes the
    /// teardown on to DTLS. A server association sits in CLOSED until COOKIE-ECHO: only a
    /// live one can close.
    fn check_closed(&mut self) {
        let Some((_, a)) = self.assoc.as_ref() else {
            return;
        };
        if self.connected && a.is_closed() && !self.closed {
            self.closed = true;
            log::info!("[{}] SCTP association closed", self.name);
            self.router_ctl.push(RouterCtl::AssociationClosed);
            self.peer
                .push(PeerMsg::Sctp(SctpReport::Closed(SctpError::Closed)));
            self.dtls.push(DtlsMsg::Close);
        }
    }

    /// Shutdown step 2 (docs/ARCHITECTURE.md): ABORT, the router told the association is
    /// gone (it closes every channel), DTLS told to close.
    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.queue.clear();
        if let Some((_, a)) = self.assoc.as_mut() {
            // W3C close(): an ABORT, no round trip. drain() sends it and reports the close.
            let _ = a.abort();
            let now = Instant::now();
            self.drain_at(now);
        }
        if !self.closed {
            self.closed = true;
            self.router_ctl.push(RouterCtl::AssociationClosed);
            self.dtls.push(DtlsMsg::Close);
        }
    }
}

impl Actor for SctpActor {
    type Msg = SctpMsg;

    async fn drain(&mut self) {
        self.drain_at(Instant::now());
        self.router_ctl.flush();
        self.router.flush();
        self.dtls.flush();
        self.peer.flush();
    }

    /// Closed, and the ABORT and the router's notice handed over.
    fn finished(&self) -> bool {
        self.closed && !self.dtls.is_backlogged() && !self.router_ctl.is_backlogged()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let engine = self.assoc.as_ref().and_then(|(_, a)| a.poll_timeout());
        let srtt = self.assoc.as_ref().map_or(Duration::ZERO, |(_, a)| a.rtt());
        self.early_rtx = self.clock.deadline(srtt, engine);
        self.early_rtx
            .or(engine.map(|t| self.clock.real(t)))
            .into_iter()
            .chain(self.resets.deadline())
            .min()
    }

    fn handle(&mut self, now: Instant, batch: Vec<SctpMsg>) {
        // Drain every second input, not once per batch: the peer's window only moves with
        // our SACKs, and one SACK per batch of hundreds of packets starves it (measured:
        // 146 -> 713 Mbit/s across two threads). Every second packet is also when RFC 9260
        // §6.2 wants a SACK.
        let n = batch.len();
        for (i, msg) in batch.into_iter().enumerate() {
            self.handle_msg(now, msg);
            if i % 2 == 1 && i + 1 < n {
                self.drain_at(now);
            }
        }
    }

    fn on_timeout(&mut self, now: Instant) {
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

    fn shutdown(&mut self, _now: Instant) {
        self.close();
    }

    fn poll_links(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        runtime::poll_links(
            &mut [
                &mut self.router,
                &mut self.router_ctl,
                &mut self.dtls,
                &mut self.peer,
            ],
            cx,
        )
    }
}

/// Hands the association what the queue lets go now (see `send_queue`).
fn pump(
    name: &str,
    now: Instant,
    a: &mut Association,
    queue: &mut SendQueue,
    clock: &mut RtoClock,
    router: &mut Link<RouterMsg>,
    ctl: &mut Link<RouterCtl>,
) {
    let mut p = Pump {
        name,
        now,
        a,
        clock,
        router,
        ctl,
    };
    while let Some((stream, item)) = queue.next() {
        match item {
            Item::Open {
                unordered,
                rel,
                value,
            } => p.open(queue, stream, (unordered, rel, value)),
            // DCEP messages are not user data: they go whatever the channel's lifetime.
            Item::Message { ppi, data, queued }
                if ppi != Ppi::Dcep && queue.expired(stream, queued, now) =>
            {
                log::trace!("[{name}] SCTP: message on stream {stream} outlived its lifetime");
                p.ctl.push(RouterCtl::Released {
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
    clock: &'a mut RtoClock,
    router: &'a mut Link<RouterMsg>,
    ctl: &'a mut Link<RouterCtl>,
}

impl Pump<'_> {
    /// Creates stream `stream` or sets its reliability; the queue remembers the parameters.
    fn open(&mut self, queue: &mut SendQueue, stream: u16, params: (bool, ReliabilityType, u32)) {
        let (unordered, rel, value) = params;
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
                .open_stream(stream, Ppi::Binary)
                .and_then(|mut s| s.set_reliability_params(unordered, rel, value)),
        };
        match res {
            Ok(()) => {
                queue.params.insert(stream, (unordered, rel, value));
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
        let channel = queue.params.get(&stream).copied();
        let control =
            ppi == Ppi::Dcep && channel.is_some_and(|p| p != (false, ReliabilityType::Reliable, 0));
        let res = self.a.stream(stream).and_then(|mut s| match channel {
            Some((unordered, rel, value)) if control => {
                s.set_reliability_params(false, ReliabilityType::Reliable, 0)?;
                let res = s.write_sctp(at, data, ppi);
                s.set_reliability_params(unordered, rel, value)?;
                res
            }
            _ => s.write_sctp(at, data, ppi),
        });
        match res {
            Ok(_) => {
                queue.wrote(len);
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
                self.ctl.push(RouterCtl::Released { stream, bytes: len });
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
            self.router.push(RouterMsg::StreamClosed { stream });
        }
    }
}
