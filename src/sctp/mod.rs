//! The SCTP association actor (RFC 8261 over DTLS), around the sans-IO [`engine`]
//! (rtc-sctp's association and smolrtc's workarounds).
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
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

pub(crate) mod engine;
#[cfg(test)]
mod pace_tests;
mod pacer;
pub(crate) mod reset_gate;
mod rto;
pub(crate) mod send_queue;
#[cfg(all(test, feature = "testkit"))]
mod sim_tests;
#[cfg(all(test, feature = "testkit"))]
mod stack_sim;
#[cfg(all(test, feature = "testkit"))]
mod workaround_tests;
use engine::{SctpEngine, SctpEvent, SctpIo};

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
/// engine walks every packet once each way for the send queue and the reset gate):
/// (type, length field, the chunk with its padding, cut at the packet's end). Stops at a
/// length under 4.
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

/// What a message is: its SCTP payload protocol identifier (RFC 8831 §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ppi {
    /// A DCEP control message (50).
    Dcep,
    /// A non-empty UTF-8 string (51).
    String,
    /// A non-empty binary message (53).
    Binary,
    /// An empty string (56; sent as one byte, SCTP has no empty payloads).
    StringEmpty,
    /// An empty binary message (57; likewise).
    BinaryEmpty,
    /// Any other identifier.
    Unknown,
}

impl fmt::Display for Ppi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ppi::Dcep => "WebRTC DCEP",
            Ppi::String => "WebRTC String",
            Ppi::Binary => "WebRTC Binary",
            Ppi::StringEmpty => "WebRTC String (Empty)",
            Ppi::BinaryEmpty => "WebRTC Binary (Empty)",
            Ppi::Unknown => "unknown",
        })
    }
}

/// How a stream delivers (RFC 3758, RFC 8831 §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reliability {
    Reliable,
    /// Given up after this many retransmissions (maxRetransmits).
    Rexmit(u32),
    /// Given up this many milliseconds after it was sent (maxPacketLifeTime).
    Timed(u32),
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
    /// Pace DATA at the congestion window's rate instead of sending each window as one
    /// burst (docs/SCTP.md "Pacing"). Off by default: on the simulated access link it
    /// fills less of the link than unpaced.
    pub pacing: bool,
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
            pacing: false,
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
        rel: Reliability,
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

pub(crate) struct SctpActor {
    engine: SctpEngine,
    router: Link<RouterMsg>,
    router_ctl: Link<RouterCtl>,
    dtls: Link<DtlsMsg>,
    peer: Link<PeerMsg>,
}

/// The engine's outputs, onto the actor's links.
struct ActorIo<'a> {
    router: &'a mut Link<RouterMsg>,
    router_ctl: &'a mut Link<RouterCtl>,
    dtls: &'a mut Link<DtlsMsg>,
    peer: &'a mut Link<PeerMsg>,
}

impl SctpIo for ActorIo<'_> {
    fn transmit(&mut self, packet: Bytes) {
        self.dtls.push(DtlsMsg::Send(packet));
    }

    fn event(&mut self, event: SctpEvent) {
        match event {
            SctpEvent::Connected {
                dtls_client,
                max_streams,
                max_message_size,
            } => {
                self.router.push(RouterMsg::Connected {
                    dtls_client,
                    max_streams,
                    max_message_size,
                });
                self.peer.push(PeerMsg::Sctp(SctpReport::Connected));
            }
            SctpEvent::Message { stream, ppi, data } => {
                self.router.push(RouterMsg::Data { stream, ppi, data });
            }
            SctpEvent::Released { stream, bytes } => {
                self.router_ctl.push(RouterCtl::Released { stream, bytes });
            }
            SctpEvent::StreamClosed { stream } => {
                self.router.push(RouterMsg::StreamClosed { stream });
            }
            SctpEvent::Failed(e) => self.peer.push(PeerMsg::Sctp(SctpReport::Closed(e))),
            SctpEvent::Closed { report } => {
                self.router_ctl.push(RouterCtl::AssociationClosed);
                if let Some(e) = report {
                    self.peer.push(PeerMsg::Sctp(SctpReport::Closed(e)));
                }
                self.dtls.push(DtlsMsg::Close);
            }
        }
    }

    fn backlogged(&self) -> bool {
        self.router.is_backlogged()
    }

    fn flush(&mut self) {
        self.router.flush();
    }
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
            engine: SctpEngine::new(name, config, Instant::now()),
            router,
            router_ctl,
            dtls,
            peer,
        }
    }

    /// The engine and where its outputs go, borrowed apart.
    fn parts(&mut self) -> (&mut SctpEngine, ActorIo<'_>) {
        let io = ActorIo {
            router: &mut self.router,
            router_ctl: &mut self.router_ctl,
            dtls: &mut self.dtls,
            peer: &mut self.peer,
        };
        (&mut self.engine, io)
    }

    fn handle_msg(&mut self, now: Instant, msg: SctpMsg) {
        let (engine, mut io) = self.parts();
        match msg {
            SctpMsg::Packet(p) => engine.packet(now, p),
            SctpMsg::Start { client } => engine.start(now, client, &mut io),
            SctpMsg::Configure {
                remote_max_message_size,
            } => engine.configure(remote_max_message_size),
            SctpMsg::Open {
                stream,
                unordered,
                rel,
            } => engine.open(stream, unordered, rel),
            SctpMsg::Write { stream, ppi, data } => engine.write(now, stream, ppi, data),
            SctpMsg::Reset { stream } => engine.reset(stream),
            SctpMsg::Close => engine.close(now, &mut io),
        }
    }

    fn drain_at(&mut self, now: Instant) {
        let (engine, mut io) = self.parts();
        engine.drain(now, &mut io);
    }

    /// Drains the engine at `now` and hands its outputs to the links.
    fn flush_at(&mut self, now: Instant) {
        self.drain_at(now);
        self.router_ctl.flush();
        self.router.flush();
        self.dtls.flush();
        self.peer.flush();
    }
}

impl Actor for SctpActor {
    type Msg = SctpMsg;

    /// The runtime gives no time here: the wall clock (tests on a virtual clock call
    /// `flush_at`).
    async fn drain(&mut self) {
        self.flush_at(Instant::now());
    }

    /// Closed, and the ABORT and the router's notice handed over.
    fn finished(&self) -> bool {
        self.engine.is_closed() && !self.dtls.is_backlogged() && !self.router_ctl.is_backlogged()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.engine.poll_timeout()
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
        self.engine.handle_timeout(now);
    }

    fn shutdown(&mut self, now: Instant) {
        let (engine, mut io) = self.parts();
        engine.close(now, &mut io);
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
