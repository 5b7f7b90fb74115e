//! One STUN or TURN server as seen from one local base: an rtc-turn client and where its
//! datagrams go. The ICE actor owns these sessions and routes the server's traffic to them.
//!
//! A session gathers at most one server-reflexive address (a Binding request, over UDP) and
//! one relayed address (an Allocate, for TURN), then keeps the allocation alive: rtc-turn
//! refreshes it, its permissions and its channel bindings on its own timers, and
//! [`ServerSession::close`] deallocates it (RFC 8656 §7: a Refresh with lifetime 0).

use super::server::{IceServer, ServerKind, ServerTransport};
use bytes::BytesMut;
use rtc_shared::{TransportContext, TransportMessage, TransportProtocol};
use rtc_stun::message::TransactionId;
use rtc_turn::client::{Client, ClientConfig, Event};
use sansio::Protocol;
use std::net::SocketAddr;
use std::time::Instant;

/// How a session reaches its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// From host socket `n` (index into the ICE actor's sockets).
    Socket(usize),
    /// Over TCP/TLS stream `n` (an id of the ICE actor's stream tasks).
    Stream(usize),
}

/// What a session learned or received.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    /// Our address as the server saw it.
    Mapped(SocketAddr),
    /// A relayed transport address was allocated.
    Relayed(SocketAddr),
    /// Data from `peer` through the relay.
    Data(SocketAddr, BytesMut),
    /// A permission for `peer` is installed: queued data can go.
    Permitted(SocketAddr),
    /// A request failed; the session gathers nothing more (the reason is logged).
    Failed(String),
}

/// Datagrams waiting for a permission, per session (STUN checks are retried anyway).
const MAX_WAITING: usize = 32;

pub(crate) struct ServerSession {
    pub(crate) server: IceServer,
    pub(crate) server_addr: SocketAddr,
    pub(crate) via: Via,
    /// The local address the server sees us from (the base of derived candidates).
    pub(crate) base: SocketAddr,
    client: Client,
    binding: Option<TransactionId>,
    allocate: Option<TransactionId>,
    pub(crate) mapped: Option<SocketAddr>,
    pub(crate) relayed: Option<SocketAddr>,
    waiting: Vec<(SocketAddr, BytesMut)>,
    /// Permission requests in flight, to know whose a refusal is.
    asking: Vec<(TransactionId, SocketAddr)>,
    /// Peers the server refused to relay to (403): not asked again.
    refused: Vec<std::net::IpAddr>,
    name: std::sync::Arc<str>,
}

impl ServerSession {
    /// Creates the client and sends its first requests: a Binding (UDP only, unless
    /// `want_mapped` is false) and, for TURN, an Allocate.
    pub(crate) fn start(
        name: std::sync::Arc<str>,
        server: IceServer,
        (server_addr, via, base): (SocketAddr, Via, SocketAddr),
        want_mapped: bool,
        refresh_cap: Option<std::time::Duration>,
        now: Instant,
    ) -> Result<Self, String> {
        let stream = server.transport != ServerTransport::Udp;
        let turn = server.kind == ServerKind::Turn;
        let config = ClientConfig {
            stun_serv_addr: if turn {
                String::new()
            } else {
                server_addr.to_string()
            },
            turn_serv_addr: if turn {
                server_addr.to_string()
            } else {
                String::new()
            },
            local_addr: base,
            transport_protocol: if stream {
                TransportProtocol::TCP
            } else {
                TransportProtocol::UDP
            },
            username: server.username.clone(),
            password: server.credential.clone(),
            realm: String::new(),
            software: String::new(),
            rto_in_ms: 0,
            allocation_refresh_interval_cap: refresh_cap,
        };
        let provider = crate::dtls::crypto_provider().map_err(|e| e.to_string())?;
        let client = Client::new(config, provider).map_err(|e| e.to_string())?;
        let mut s = Self {
            server,
            server_addr,
            via,
            base,
            client,
            binding: None,
            allocate: None,
            mapped: None,
            relayed: None,
            waiting: Vec::new(),
            asking: Vec::new(),
            refused: Vec::new(),
            name,
        };
        if want_mapped && !stream {
            s.binding = Some(
                s.client
                    .send_binding_request_to(now, server_addr)
                    .map_err(|e| e.to_string())?,
            );
        }
        if turn {
            s.allocate = Some(s.client.allocate(now).map_err(|e| e.to_string())?);
        }
        Ok(s)
    }

    /// Still waiting for an answer that would give a candidate.
    pub(crate) fn gathering(&self) -> bool {
        self.binding.is_some() || self.allocate.is_some()
    }

    /// Gives up the requests still unanswered (the gathering deadline passed).
    pub(crate) fn give_up(&mut self) -> bool {
        let was = self.gathering();
        self.binding = None;
        self.allocate = None;
        was
    }

    /// A datagram (or stream frame) from the server.
    pub(crate) fn input(&mut self, now: Instant, data: BytesMut) -> Vec<SessionEvent> {
        let msg = TransportMessage {
            now,
            transport: TransportContext {
                local_addr: self.base,
                peer_addr: self.server_addr,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        };
        if let Err(e) = self.client.handle_read(msg) {
            log::debug!("[{}] ICE: {}: {e}", self.name, self.server);
        }
        self.events(now)
    }

    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<SessionEvent> {
        if let Err(e) = self.client.handle_timeout(now) {
            log::debug!("[{}] ICE: {} timer: {e}", self.name, self.server);
        }
        self.events(now)
    }

    /// Datagrams for the server.
    pub(crate) fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.client.poll_write().map(|t| t.message)
    }

    /// Sends `data` to `peer` through the relay, asking for a permission first if needed.
    pub(crate) fn relay_send(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        let Some(relayed) = self.relayed else {
            return;
        };
        if self.refused.contains(&peer.ip()) {
            return;
        }
        let Ok(mut relay) = self.client.relay(relayed) else {
            return;
        };
        match relay.send_to(now, data, peer) {
            Ok(()) => log::trace!("[{}] ICE: relay {} bytes to {peer}", self.name, data.len()),
            Err(rtc_shared::error::Error::ErrNoPermission) => {
                log::trace!("[{}] ICE: relay to {peer}: no permission yet", self.name);
                match relay.create_permission(now, peer) {
                    Ok(Some(id)) => self.asking.push((id, peer)),
                    Ok(None) => {}
                    Err(e) => {
                        log::debug!("[{}] ICE: {}: permission: {e}", self.name, self.server);
                        return;
                    }
                }
                if self.waiting.len() < MAX_WAITING {
                    self.waiting.push((peer, BytesMut::from(data)));
                }
            }
            Err(e) => log::debug!("[{}] ICE: relay send to {peer}: {e}", self.name),
        }
    }

    /// Deallocates (a Refresh with lifetime 0); the request is left in the transmit queue.
    pub(crate) fn close(&mut self, now: Instant) {
        if let Some(relayed) = self.relayed.take() {
            if let Ok(mut relay) = self.client.relay(relayed) {
                match relay.close(now) {
                    Ok(()) => {
                        log::info!(
                            "[{}] ICE: {} deallocating {relayed}",
                            self.name,
                            self.server
                        )
                    }
                    Err(e) => log::debug!("[{}] ICE: deallocate: {e}", self.name),
                }
            }
        }
        self.binding = None;
        self.allocate = None;
    }

    fn events(&mut self, now: Instant) -> Vec<SessionEvent> {
        let mut out = Vec::new();
        while let Some(ev) = self.client.poll_event() {
            match ev {
                Event::BindingResponse(id, addr) if self.binding == Some(id) => {
                    self.binding = None;
                    self.mapped = Some(addr);
                    out.push(SessionEvent::Mapped(addr));
                }
                Event::BindingError(id, e) if self.binding == Some(id) => {
                    self.binding = None;
                    out.push(SessionEvent::Failed(format!("binding: {e}")));
                }
                Event::AllocateResponse(id, addr) if self.allocate == Some(id) => {
                    self.allocate = None;
                    self.relayed = Some(addr);
                    out.push(SessionEvent::Relayed(addr));
                }
                Event::AllocateError(id, e) if self.allocate == Some(id) => {
                    self.allocate = None;
                    out.push(SessionEvent::Failed(format!("allocate: {e}")));
                }
                Event::TransactionTimeout(id) => {
                    if self.binding == Some(id) {
                        self.binding = None;
                        out.push(SessionEvent::Failed("binding: no answer".into()));
                    } else if self.allocate == Some(id) {
                        self.allocate = None;
                        out.push(SessionEvent::Failed("allocate: no answer".into()));
                    } else {
                        log::debug!("[{}] ICE: {}: a request timed out", self.name, self.server);
                    }
                }
                Event::CreatePermissionResponse(id, peer) => {
                    self.asking.retain(|(i, _)| *i != id);
                    out.push(SessionEvent::Permitted(peer));
                    let (ready, rest): (Vec<_>, Vec<_>) =
                        self.waiting.drain(..).partition(|(p, _)| *p == peer);
                    self.waiting = rest;
                    for (p, data) in ready {
                        self.relay_send(now, p, &data);
                    }
                }
                Event::CreatePermissionError(id, e) => {
                    let peer = self
                        .asking
                        .iter()
                        .position(|(i, _)| *i == id)
                        .map(|k| self.asking.swap_remove(k).1);
                    match peer {
                        Some(peer) => {
                            // Servers commonly refuse private ranges; one line per peer.
                            log::info!(
                                "[{}] ICE: {} will not relay to {}: {e}",
                                self.name,
                                self.server,
                                peer.ip()
                            );
                            self.refused.push(peer.ip());
                            self.waiting.retain(|(p, _)| p.ip() != peer.ip());
                        }
                        None => log::warn!(
                            "[{}] ICE: {}: permission refused: {e}",
                            self.name,
                            self.server
                        ),
                    }
                }
                Event::DataIndicationOrChannelData(_, peer, data) => {
                    out.push(SessionEvent::Data(peer, data))
                }
                other => log::debug!("[{}] ICE: {}: {other:?}", self.name, self.server),
            }
        }
        out
    }
}
