//! The ICE agent actor: owns the UDP sockets, the STUN/TURN server sessions (the gatherer's
//! srflx and relay candidates) and rtc-ice's agent.
//!
//! Every datagram is demultiplexed first by where it came from: a configured server's
//! traffic goes to that server's session (and relayed data comes back out of it as if it
//! had arrived on the relayed address). The rest by its first byte (RFC 7983): 0–3 is STUN
//! and stays here, 20–63 is DTLS and goes up to the DTLS actor — but only from an address
//! that ICE knows as a remote candidate (checked or learned as peer-reflexive), so strangers
//! never reach a session. Wire-ward DTLS records leave on the selected pair.
//!
//! STUN Binding requests are authenticated here before rtc-ice sees them: USERNAME must be
//! `<our ufrag>:<their ufrag>` and MESSAGE-INTEGRITY an HMAC-SHA1 with our password. rtc-ice
//! 0.21.1 settles ICE-CONTROLLING/CONTROLLED role conflicts (RFC 8445 §7.3.1.1: a 487 answer,
//! a role switch) before it checks either, so without this a forged request could flip our
//! role; dropped here, it gets no answer and changes nothing.
//!
//! The gatherer lives in this task rather than its own: it shares the host sockets with the
//! agent, and relayed traffic passes both, so one owner saves a hop per relayed datagram.

use super::gather;
use super::server::{IceServer, ServerTransport, TransportPolicy};
use super::turn::{ServerSession, SessionEvent, Via};
use super::turn_stream::{self, StreamNews};
use super::{IceConfig, IceConnectionState};
use crate::dtls::DtlsMsg;
use crate::peer::PeerMsg;
use crate::runtime::{self, Actor, Link};
use async_channel::{Sender, WeakSender};
use async_io::Async;
use bytes::{Bytes, BytesMut};
use rtc_ice::agent::agent_config::AgentConfig;
use rtc_ice::candidate::candidate_host::CandidateHostConfig;
use rtc_ice::candidate::candidate_relay::CandidateRelayConfig;
use rtc_ice::candidate::candidate_server_reflexive::CandidateServerReflexiveConfig;
use rtc_ice::candidate::{unmarshal_candidate, Candidate, CandidateConfig, CandidateType};
use rtc_ice::mdns::MulticastDnsMode;
use rtc_ice::state::ConnectionState;
use rtc_ice::{Agent, Event};
use rtc_shared::{TransportContext, TransportMessage, TransportProtocol};
use sansio::Protocol;
use smol::LocalExecutor;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Inputs of the ICE actor.
pub(crate) enum IceMsg {
    /// A DTLS record or an SRTP/SRTCP packet to send on the selected pair.
    Transmit(BytesMut),
    /// Bind host sockets, ask the servers, and announce the candidates.
    Gather,
    /// Remote credentials are known: start checks.
    Start {
        controlling: bool,
        ufrag: String,
        pwd: String,
    },
    /// ICE restart: new local credentials; checks start again with the next `Start`.
    Restart { ufrag: String, pwd: String },
    /// A remote `candidate:` attribute value, and where to answer whether it was taken (an
    /// `add_ice_candidate` call; `None` for a description's candidates).
    RemoteCandidate(String, Option<runtime::Reply<crate::Result<()>>>),
    /// The remote has no more candidates.
    EndOfCandidates,
    /// A server's host name was resolved (index into the configured servers).
    Resolved(usize, Result<Vec<SocketAddr>, String>),
    /// A datagram on shared-port socket `socket` (see [`super::SharedPort`]).
    PortDatagram {
        socket: usize,
        from: SocketAddr,
        data: BytesMut,
    },
    /// News from a TURN-over-TCP/TLS stream task.
    Stream(usize, StreamNews),
    /// Close the agent and the sockets.
    Close,
}

/// What the ICE actor reports to the peer connection.
#[derive(Debug)]
pub(crate) enum IceReport {
    /// A local candidate (`candidate:` attribute value, without `a=`).
    Candidate(String),
    GatheringComplete,
    State(IceConnectionState),
    SelectedPair {
        local: String,
        remote: String,
    },
    BadCandidate(String),
}

/// Datagrams read from one socket per wake-up, so one busy socket cannot starve the rest.
const READ_BUDGET: usize = 256;
/// Frames queued for one TURN stream before more are dropped (as a full socket would).
const STREAM_QUEUE: usize = 256;

/// Where the selected pair's datagrams leave from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// A host socket (host, server- and peer-reflexive candidates).
    Socket(usize),
    /// Through the allocation of server session `n`.
    Relay(usize),
}

/// A local UDP socket: our own, or one of a [`super::SharedPort`]'s (read by its task).
struct HostSocket {
    addr: SocketAddr,
    sock: Arc<Async<UdpSocket>>,
    shared: bool,
    /// Bound only to reach servers from (beside a shared port): not a host candidate.
    servers_only: bool,
}

/// A TURN-over-TCP/TLS connection while it connects and afterwards.
struct Stream {
    server: IceServer,
    server_addr: SocketAddr,
    writes: Sender<Bytes>,
    session: Option<usize>,
}

pub(crate) struct IceActor {
    name: Arc<str>,
    config: IceConfig,
    agent: Agent,
    sockets: Vec<HostSocket>,
    /// Shared-port routes already announced to the demultiplexer.
    learned: std::collections::HashSet<(usize, SocketAddr)>,
    /// Our current ufrag (the shared port routes checks by it).
    ufrag: String,
    /// Our current ICE password (checks must carry a MESSAGE-INTEGRITY made with it).
    pwd: String,
    /// `config.max_remote_candidates`, 0 replaced by its default.
    max_remote: usize,
    /// The remote-candidate cap was hit and logged (once per connection).
    cap_logged: bool,
    /// HMAC-SHA1 for the MESSAGE-INTEGRITY checks.
    crypto: Arc<dyn rtc_dtls::crypto_provider::RTCCryptoProvider>,
    sessions: Vec<ServerSession>,
    streams: Vec<Stream>,
    /// Name resolutions and stream connections still under way.
    pending: usize,
    /// Datagrams for the wire: (path, destination, bytes); sent in `drain`.
    outbox: Vec<(Via, SocketAddr, BytesMut)>,
    gather_deadline: Option<Instant>,
    gathering_done: bool,
    selected: Option<(Path, SocketAddr)>,
    /// An ICE restart is under way: the old pair carries traffic until a new one is chosen.
    restarting: bool,
    gathered: bool,
    closed: bool,
    dtls: Link<DtlsMsg>,
    /// SRTP/SRTCP (RFC 7983: first byte 128–191) to the connection's media actor.
    #[cfg(feature = "media")]
    media: Link<crate::media::actor::MediaMsg>,
    peer: Link<PeerMsg>,
    /// Our own inbox, for the tasks we spawn (weak, so the inbox still closes when the
    /// peer connection's actors are gone).
    me: WeakSender<Vec<IceMsg>>,
    ex: Rc<LocalExecutor<'static>>,
    /// Receive buffer for the sockets.
    buf: Vec<u8>,
}

impl IceActor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: Arc<str>,
        config: IceConfig,
        ufrag: String,
        pwd: String,
        dtls: Link<DtlsMsg>,
        #[cfg(feature = "media")] media: Link<crate::media::actor::MediaMsg>,
        peer: Link<PeerMsg>,
        me: &Sender<Vec<IceMsg>>,
        ex: Rc<LocalExecutor<'static>>,
    ) -> crate::Result<Self> {
        let candidate_types = match config.transport_policy {
            TransportPolicy::All => vec![
                CandidateType::Host,
                CandidateType::ServerReflexive,
                CandidateType::PeerReflexive,
                CandidateType::Relay,
            ],
            TransportPolicy::Relay => vec![CandidateType::Relay],
        };
        let (ufrag_copy, pwd_copy) = (ufrag.clone(), pwd.clone());
        let max_remote = match config.max_remote_candidates {
            0 => super::DEFAULT_MAX_REMOTE_CANDIDATES,
            n => n,
        };
        let agent_config = AgentConfig {
            local_ufrag: ufrag,
            local_pwd: pwd,
            multicast_dns_mode: MulticastDnsMode::Disabled,
            candidate_types,
            disconnected_timeout: Some(config.disconnected_timeout),
            failed_timeout: Some(config.failed_timeout),
            keepalive_interval: Some(config.keepalive_interval),
            // Browsers hide host addresses behind mDNS names, so a peer-reflexive pair is
            // often the only one: nominate it as soon as it works, not a second later.
            prflx_acceptance_min_wait: Some(std::time::Duration::ZERO),
            // Checks (and the nominating one after the first success) every 50 ms rather
            // than rtc-ice's 200: RFC 8445's pacing is Ta = 50 ms, and a controlled peer
            // that waits for our nomination before its DTLS starts waits for this.
            check_interval: std::time::Duration::from_millis(50),
            // Relay-only: no better pair can come, so do not wait for one.
            relay_acceptance_min_wait: (config.transport_policy == TransportPolicy::Relay)
                .then_some(std::time::Duration::ZERO),
            ..Default::default()
        };
        let provider = crate::dtls::crypto_provider()?;
        let agent = Agent::new(Instant::now(), Arc::new(agent_config), provider.clone())
            .map_err(|e| crate::error::IceError::Agent(e.to_string()))?;
        Ok(Self {
            name,
            config,
            agent,
            sockets: Vec::new(),
            learned: Default::default(),
            ufrag: ufrag_copy,
            pwd: pwd_copy,
            max_remote,
            cap_logged: false,
            crypto: provider,
            sessions: Vec::new(),
            streams: Vec::new(),
            pending: 0,
            outbox: Vec::new(),
            gather_deadline: None,
            gathering_done: false,
            selected: None,
            restarting: false,
            gathered: false,
            closed: false,
            dtls,
            #[cfg(feature = "media")]
            media,
            peer,
            me: me.downgrade(),
            ex,
            buf: vec![0u8; 2048],
        })
    }

    fn deadline(&mut self) -> Option<Instant> {
        let mut d = self.agent.poll_timeout();
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |d| d.min(t)));
            }
        };
        earliest(self.gather_deadline);
        for s in &mut self.sessions {
            earliest(s.poll_timeout());
        }
        d
    }

    fn timeout(&mut self, now: Instant) {
        if let Err(e) = self.agent.handle_timeout(now) {
            log::debug!("[{}] ICE timeout: {e}", self.name);
        }
        for i in 0..self.sessions.len() {
            if self.sessions[i].poll_timeout().is_some_and(|t| t <= now) {
                let events = self.sessions[i].handle_timeout(now);
                self.session_events(now, i, events);
            }
        }
        if self.gather_deadline.is_some_and(|t| t <= now) {
            self.gather_deadline = None;
            for s in &mut self.sessions {
                if s.give_up() {
                    log::warn!(
                        "[{}] ICE: {} (from {}): no answer in {:?}; gathering goes on without it",
                        self.name,
                        s.server,
                        s.base,
                        self.config.gather_timeout
                    );
                }
            }
            if self.pending > 0 {
                log::warn!(
                    "[{}] ICE: {} server lookup(s) or connection(s) unfinished after {:?}; \
                     gathering goes on without them",
                    self.name,
                    self.pending,
                    self.config.gather_timeout
                );
                self.pending = 0;
            }
            self.check_gathered();
        }
    }

    fn read_sockets(&mut self, buf: &mut [u8]) {
        for i in 0..self.sockets.len() {
            if self.sockets[i].shared {
                continue;
            }
            for _ in 0..READ_BUDGET {
                let local = self.sockets[i].addr;
                match self.sockets[i].sock.get_ref().recv_from(buf) {
                    Ok((n, from)) => {
                        let data = BytesMut::from(&buf[..n]);
                        self.socket_datagram(Instant::now(), i, local, from, data);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // ICMP errors surface here (ECONNREFUSED); they are not fatal.
                        log::debug!("[{}] ICE: recv on {local}: {e}", self.name);
                        break;
                    }
                }
            }
        }
    }

    /// A datagram on host socket `i`: a server's, or a peer's.
    fn socket_datagram(
        &mut self,
        now: Instant,
        i: usize,
        local: SocketAddr,
        from: SocketAddr,
        data: BytesMut,
    ) {
        crate::stats::add(&crate::stats::BYTES_RECEIVED, data.len() as u64);
        let session = self
            .sessions
            .iter()
            .position(|s| s.via == Via::Socket(i) && s.server_addr == from);
        if let Some(s) = session {
            let events = self.sessions[s].input(now, data);
            self.session_events(now, s, events);
        } else if self.config.transport_policy == TransportPolicy::Relay {
            log::debug!(
                "[{}] ICE: relay-only: direct datagram from {from} dropped",
                self.name
            );
        } else {
            self.datagram(now, local, from, data);
        }
    }

    /// A datagram for the agent or DTLS, arrived on local candidate address `local`.
    fn datagram(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: BytesMut) {
        let Some(&first) = data.first() else {
            return;
        };
        let transport = TransportContext {
            local_addr: local,
            peer_addr: from,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        };
        match first {
            0..=3 => {
                if let Err(why) = self.authenticate(&data) {
                    log::debug!(
                        "[{}] ICE: binding request from {from} dropped: {why}",
                        self.name
                    );
                    return;
                }
                // A check from a new address would make it a peer-reflexive candidate.
                if self.remote_full()
                    && is_binding_request(&data)
                    && !self
                        .agent
                        .get_remote_candidates()
                        .iter()
                        .any(|c| c.addr() == from)
                {
                    self.cap_hit();
                    log::debug!(
                        "[{}] ICE: check from new address {from} dropped: \
                         max_remote_candidates reached",
                        self.name
                    );
                    return;
                }
                let msg = TransportMessage {
                    now,
                    transport,
                    message: data,
                };
                if let Err(e) = self.agent.handle_read(msg) {
                    log::debug!("[{}] ICE: STUN from {from} ignored: {e}", self.name);
                }
            }
            20..=63 => {
                if self.agent.is_valid_non_stun_traffic(now, transport) {
                    self.dtls.push(DtlsMsg::Datagram(data));
                } else {
                    log::debug!(
                        "[{}] ICE: DTLS from unknown address {from} dropped",
                        self.name
                    );
                }
            }
            #[cfg(feature = "media")]
            128..=191 => {
                if self.agent.is_valid_non_stun_traffic(now, transport) {
                    self.media
                        .push(crate::media::actor::MediaMsg::Datagram(data));
                } else {
                    log::debug!(
                        "[{}] ICE: RTP/RTCP from unknown address {from} dropped",
                        self.name
                    );
                }
            }
            _ => log::debug!(
                "[{}] ICE: datagram from {from} with first byte {first} dropped",
                self.name
            ),
        }
    }

    fn handle_msg(&mut self, now: Instant, msg: IceMsg) {
        match msg {
            IceMsg::Transmit(data) => match self.selected {
                Some((Path::Socket(i), to)) => self.outbox.push((Via::Socket(i), to, data)),
                Some((Path::Relay(s), to)) => {
                    self.sessions[s].relay_send(now, to, &data);
                    self.flush_session(s);
                }
                None => log::debug!("[{}] ICE: no selected pair; datagram dropped", self.name),
            },
            IceMsg::Gather => self.gather(now),
            IceMsg::Start {
                controlling,
                ufrag,
                pwd,
            } => {
                log::info!(
                    "[{}] ICE checks start ({})",
                    self.name,
                    if controlling {
                        "controlling"
                    } else {
                        "controlled"
                    }
                );
                if let Err(e) = self
                    .agent
                    .start_connectivity_checks(now, controlling, ufrag, pwd)
                {
                    log::warn!("[{}] ICE: cannot start checks: {e}", self.name);
                    self.peer
                        .push(PeerMsg::Ice(IceReport::State(IceConnectionState::Failed)));
                } else if self.gathered {
                    // The shared port now learns the peer's password too.
                    self.register_ufrag();
                }
            }
            IceMsg::Restart { ufrag, pwd } => {
                let restarted = self
                    .agent
                    .generate_restart_credentials(ufrag, pwd)
                    .and_then(|()| self.agent.apply_restart(now, true));
                match restarted {
                    Ok(()) => {
                        log::info!("[{}] ICE restart applied", self.name);
                        let creds = self.agent.get_local_credentials();
                        (self.ufrag, self.pwd) = (creds.ufrag.clone(), creds.pwd.clone());
                        self.register_ufrag();
                        self.restarting = self.selected.is_some();
                    }
                    Err(e) => log::warn!("[{}] ICE restart failed: {e}", self.name),
                }
            }
            IceMsg::RemoteCandidate(line, reply) => {
                let result = self.remote_candidate(&line);
                if let Some(r) = reply {
                    let _ = r.try_send(result);
                }
            }
            IceMsg::EndOfCandidates => log::debug!("[{}] ICE: remote end-of-candidates", self.name),
            IceMsg::Resolved(idx, result) => {
                self.pending = self.pending.saturating_sub(1);
                let server = self.config.servers[idx].clone();
                match result {
                    Ok(addrs) if !addrs.is_empty() => {
                        for addr in addrs {
                            self.start_server(now, &server, addr);
                        }
                    }
                    Ok(_) => log::warn!("[{}] ICE: {server}: no address", self.name),
                    Err(e) => log::warn!("[{}] ICE: {server}: cannot resolve: {e}", self.name),
                }
                self.check_gathered();
            }
            IceMsg::Stream(id, news) => self.stream_news(now, id, news),
            IceMsg::PortDatagram { socket, from, data } => {
                if let Some(s) = self.sockets.get(socket).filter(|s| s.shared) {
                    let local = s.addr;
                    self.socket_datagram(now, socket, local, from, data);
                }
            }
            IceMsg::Close => self.close(),
        }
    }

    fn gather(&mut self, now: Instant) {
        if self.gathered {
            return;
        }
        self.gathered = true;
        if let Some(port) = &self.config.shared_port {
            self.sockets = port
                .sockets()
                .iter()
                .map(|(addr, sock)| HostSocket {
                    addr: *addr,
                    sock: sock.clone(),
                    shared: true,
                    servers_only: false,
                })
                .collect();
            self.register_ufrag();
        } else {
            let addresses = gather::host_addresses(&self.config.hosts);
            self.sockets = gather::bind(&addresses, self.config.hosts.ports.as_ref())
                .into_iter()
                .map(|(addr, sock)| HostSocket {
                    addr,
                    sock: Arc::new(sock),
                    shared: false,
                    servers_only: false,
                })
                .collect();
        }
        if self.config.transport_policy == TransportPolicy::All {
            for i in 0..self.sockets.len() {
                let addr = self.sockets[i].addr;
                let cand = CandidateHostConfig {
                    base_config: udp_candidate(addr),
                    ..Default::default()
                }
                .new_candidate_host();
                self.add_local(cand, addr);
            }
        }
        if !self.config.servers.is_empty() {
            self.gather_deadline = Some(now + self.config.gather_timeout);
        }
        for idx in 0..self.config.servers.len() {
            let server = self.config.servers[idx].clone();
            if let Ok(ip) = server.host.parse::<IpAddr>() {
                self.start_server(now, &server, SocketAddr::new(ip, server.port));
                continue;
            }
            let Some(me) = self.me.upgrade() else {
                return;
            };
            self.pending += 1;
            let host_port = server.host_port();
            self.ex
                .spawn(async move {
                    let result = smol::net::resolve(host_port.as_str())
                        .await
                        .map_err(|e| e.to_string());
                    let _ = me.send(vec![IceMsg::Resolved(idx, result)]).await;
                })
                .detach();
        }
        self.check_gathered();
    }

    /// Starts gathering from `server` at `addr`: a session per host socket of the same
    /// family (UDP), or a stream task (TCP/TLS).
    fn start_server(&mut self, now: Instant, server: &IceServer, addr: SocketAddr) {
        if self.closed || self.gathering_done {
            return;
        }
        let want_mapped = self.config.transport_policy == TransportPolicy::All;
        if server.transport == ServerTransport::Udp {
            let bases: Vec<SocketAddr> = self
                .sockets
                .iter()
                .filter(|s| !s.servers_only)
                .map(|s| s.addr)
                .collect();
            for base in bases {
                // A socket bound to loopback cannot reach another host, nor v4 reach v6.
                if base.is_ipv4() != addr.is_ipv4()
                    || base.ip().is_loopback() != addr.ip().is_loopback()
                {
                    continue;
                }
                // A shared port's 5-tuple to a server would be every connection's: each
                // connection asks servers from a socket of its own instead.
                let Some(i) = self.server_socket(base) else {
                    continue;
                };
                let base = self.sockets[i].addr;
                self.open_session(now, server.clone(), addr, Via::Socket(i), base, want_mapped);
            }
            return;
        }
        let tls = if server.transport == ServerTransport::Tls {
            let name = match rustls_name(&server.host) {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("[{}] ICE: {server}: {e}", self.name);
                    return;
                }
            };
            match turn_stream::tls_config(&self.config.tls_roots) {
                Ok(config) => Some(turn_stream::Tls { config, name }),
                Err(e) => {
                    log::warn!("[{}] ICE: {server}: {e}", self.name);
                    return;
                }
            }
        } else {
            None
        };
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let (writes_tx, writes_rx) = async_channel::bounded(STREAM_QUEUE);
        let id = self.streams.len();
        self.streams.push(Stream {
            server: server.clone(),
            server_addr: addr,
            writes: writes_tx,
            session: None,
        });
        self.pending += 1;
        log::info!("[{}] ICE: connecting to {server} at {addr}", self.name);
        self.ex
            .spawn(turn_stream::run(
                id,
                addr,
                tls,
                self.config.gather_timeout,
                me,
                writes_rx,
            ))
            .detach();
    }

    /// The socket to reach servers from, for host socket address `base`: the socket itself,
    /// or for a shared port, a socket of our own on the same address (bound on first use).
    fn server_socket(&mut self, base: SocketAddr) -> Option<usize> {
        let i = self.sockets.iter().position(|s| s.addr == base)?;
        if !self.sockets[i].shared {
            return Some(i);
        }
        if let Some(j) = self
            .sockets
            .iter()
            .position(|s| s.servers_only && s.addr.ip() == base.ip())
        {
            return Some(j);
        }
        let (addr, sock) = gather::bind(&[base.ip()], None).pop()?;
        self.sockets.push(HostSocket {
            addr,
            sock: Arc::new(sock),
            shared: false,
            servers_only: true,
        });
        Some(self.sockets.len() - 1)
    }

    /// Adds a signaled remote candidate, within `max_remote_candidates`.
    fn remote_candidate(&mut self, line: &str) -> crate::Result<()> {
        let raw = line.trim();
        let raw = raw.strip_prefix("a=").unwrap_or(raw);
        let raw = raw.strip_prefix("candidate:").unwrap_or(raw);
        let c = match unmarshal_candidate(raw) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("[{}] ICE: bad remote candidate {raw:?}: {e}", self.name);
                self.peer.push(PeerMsg::Ice(IceReport::BadCandidate(format!(
                    "{raw:?}: {e}"
                ))));
                return Err(crate::error::ArgumentError::Candidate {
                    candidate: raw.to_owned(),
                    reason: e.to_string(),
                }
                .into());
            }
        };
        if c.address().ends_with(".local") {
            // rtc-ice would only warn about each (mDNS is off): nothing to keep.
            log::debug!(
                "[{}] ICE: mDNS remote candidate {} ignored",
                self.name,
                c.marshal()
            );
            return Ok(());
        }
        if self
            .agent
            .get_remote_candidates()
            .iter()
            .any(|known| known.equal(&c))
        {
            return Ok(());
        }
        if self.remote_full() {
            self.cap_hit();
            return Err(crate::error::LimitError::new(
                "max_remote_candidates",
                self.max_remote,
                format!(
                    "too many remote candidates (max_remote_candidates = {})",
                    self.max_remote
                ),
            )
            .into());
        }
        log::debug!("[{}] ICE remote candidate {}", self.name, c.marshal());
        if let Err(e) = self.agent.add_remote_candidate(c) {
            log::warn!("[{}] ICE: remote candidate refused: {e}", self.name);
        }
        Ok(())
    }

    /// The agent holds `max_remote_candidates` remote candidates.
    fn remote_full(&self) -> bool {
        self.agent.get_remote_candidates().len() >= self.max_remote
    }

    /// Logs, once per connection, that the remote-candidate cap was hit.
    fn cap_hit(&mut self) {
        if !self.cap_logged {
            self.cap_logged = true;
            log::warn!(
                "[{}] ICE: {} remote candidates held (max_remote_candidates): further \
                 candidates and checks from new addresses are refused (logged once)",
                self.name,
                self.max_remote
            );
        }
    }

    /// Checks a STUN message before rtc-ice sees it: a Binding request must carry USERNAME
    /// `<our ufrag>:<their ufrag>` and a MESSAGE-INTEGRITY made with our password, exactly
    /// what rtc-ice checks itself, but only after it has acted on a role conflict. Other
    /// STUN (answers to our checks, indications) passes: rtc-ice authenticates answers
    /// before it uses them.
    fn authenticate(&self, data: &[u8]) -> Result<(), &'static str> {
        if !is_binding_request(data) {
            return Ok(());
        }
        let remote = self
            .agent
            .get_remote_credentials()
            .ok_or("remote credentials not known yet")?;
        let username = format!("{}:{}", self.ufrag, remote.ufrag);
        check_stun(
            data,
            Some(&username),
            self.pwd.as_bytes(),
            self.crypto.crypto(),
        )
    }

    /// Tells the shared port that our selected pair's route must stay.
    fn pin_route(&self, path: Path, remote: SocketAddr) {
        let Path::Socket(i) = path else { return };
        if !self.sockets.get(i).is_some_and(|s| s.shared) {
            return;
        }
        if let (Some(port), Some(me)) = (&self.config.shared_port, self.me.upgrade()) {
            port.tell(super::port::MuxMsg::Selected {
                socket: i,
                remote,
                inbox: me,
            });
        }
    }

    /// Tells the shared port (if any) our credentials: checks naming our ufrag and
    /// authenticated with our password are ours, and so are answers authenticated with the
    /// peer's password from addresses we checked.
    fn register_ufrag(&mut self) {
        if let (Some(port), Some(me)) = (&self.config.shared_port, self.me.upgrade()) {
            port.tell(super::port::MuxMsg::Register {
                ufrag: self.ufrag.clone(),
                pwd: self.pwd.clone(),
                remote_pwd: self.agent.get_remote_credentials().map(|c| c.pwd.clone()),
                max_routes: self.max_remote,
                inbox: me,
            });
        }
    }

    fn open_session(
        &mut self,
        now: Instant,
        server: IceServer,
        addr: SocketAddr,
        via: Via,
        base: SocketAddr,
        want_mapped: bool,
    ) -> Option<usize> {
        let shown = server.to_string();
        let cap = self.config.turn_refresh_interval;
        match ServerSession::start(
            self.name.clone(),
            server,
            (addr, via, base),
            want_mapped,
            cap,
            now,
        ) {
            Ok(s) => {
                log::debug!("[{}] ICE: asking {shown} at {addr} from {base}", self.name);
                self.sessions.push(s);
                let i = self.sessions.len() - 1;
                self.flush_session(i);
                Some(i)
            }
            Err(e) => {
                log::warn!("[{}] ICE: {shown}: {e}", self.name);
                None
            }
        }
    }

    fn stream_news(&mut self, now: Instant, id: usize, news: StreamNews) {
        let Some(stream) = self.streams.get_mut(id) else {
            return;
        };
        match news {
            StreamNews::Up(local) => {
                if stream.session.is_some() {
                    return;
                }
                self.pending = self.pending.saturating_sub(1);
                if self.gathering_done || self.closed {
                    // Too late for this gathering: let the task end.
                    stream.writes.close();
                    return;
                }
                let (server, addr) = (stream.server.clone(), stream.server_addr);
                log::info!("[{}] ICE: connected to {server} from {local}", self.name);
                let s = self.open_session(now, server, addr, Via::Stream(id), local, false);
                self.streams[id].session = s;
                self.check_gathered();
            }
            StreamNews::Frame(frame) => {
                crate::stats::add(&crate::stats::BYTES_RECEIVED, frame.len() as u64);
                if let Some(s) = stream.session {
                    let events = self.sessions[s].input(now, frame);
                    self.session_events(now, s, events);
                }
            }
            StreamNews::Down(why) => {
                let server = stream.server.clone();
                stream.writes.close();
                match stream.session.take() {
                    None => {
                        self.pending = self.pending.saturating_sub(1);
                        log::warn!("[{}] ICE: {server}: {why}", self.name);
                        self.check_gathered();
                    }
                    Some(s) => {
                        if !self.closed {
                            log::warn!("[{}] ICE: {server}: connection lost: {why}", self.name);
                        }
                        self.sessions[s].give_up();
                        self.check_gathered();
                    }
                }
            }
        }
    }

    /// Acts on what session `s` learned, then queues what it wants sent.
    fn session_events(&mut self, now: Instant, s: usize, events: Vec<SessionEvent>) {
        for ev in events {
            match ev {
                SessionEvent::Mapped(addr) => {
                    let base = self.sessions[s].base;
                    if addr == base || self.config.transport_policy != TransportPolicy::All {
                        continue;
                    }
                    let cand = CandidateServerReflexiveConfig {
                        base_config: udp_candidate(addr),
                        rel_addr: base.ip().to_string(),
                        rel_port: base.port(),
                        url: None,
                    }
                    .new_candidate_server_reflexive();
                    self.add_local(cand, addr);
                }
                SessionEvent::Relayed(addr) => {
                    log::info!(
                        "[{}] ICE: {} allocated {addr}",
                        self.name,
                        self.sessions[s].server
                    );
                    // raddr 0.0.0.0 as browsers do: a relay candidate reveals no local address.
                    let cand = CandidateRelayConfig {
                        base_config: udp_candidate(addr),
                        rel_addr: "0.0.0.0".into(),
                        rel_port: 0,
                        url: None,
                    }
                    .new_candidate_relay();
                    self.add_local(cand, addr);
                }
                SessionEvent::Data(peer, data) => {
                    if let Some(relayed) = self.sessions[s].relayed {
                        self.datagram(now, relayed, peer, data);
                    }
                }
                SessionEvent::Permitted(peer) => {
                    log::debug!("[{}] ICE: relay permission for {peer}", self.name)
                }
                SessionEvent::Failed(why) => {
                    let s = &self.sessions[s];
                    log::warn!("[{}] ICE: {} (from {}): {why}", self.name, s.server, s.base);
                }
            }
        }
        self.flush_session(s);
        self.check_gathered();
    }

    fn flush_session(&mut self, s: usize) {
        let session = &mut self.sessions[s];
        while let Some(data) = session.poll_transmit() {
            self.outbox.push((session.via, session.server_addr, data));
        }
    }

    fn add_local(&mut self, cand: Result<Candidate, rtc_shared::error::Error>, addr: SocketAddr) {
        match cand {
            Ok(c) => {
                let line = c.marshal();
                match self.agent.add_local_candidate(c) {
                    Ok(true) => {
                        log::info!(target: crate::EVENT_LOG_TARGET, "[{}] ICE local candidate {line}", self.name);
                        self.peer.push(PeerMsg::Ice(IceReport::Candidate(format!(
                            "candidate:{line}"
                        ))));
                    }
                    Ok(false) => {}
                    Err(e) => {
                        log::warn!("[{}] ICE: local candidate {addr} refused: {e}", self.name)
                    }
                }
            }
            Err(e) => log::warn!("[{}] ICE: candidate for {addr}: {e}", self.name),
        }
    }

    fn check_gathered(&mut self) {
        if self.gathering_done
            || !self.gathered
            || self.pending > 0
            || self.sessions.iter().any(|s| s.gathering())
        {
            return;
        }
        self.gathering_done = true;
        self.gather_deadline = None;
        self.peer.push(PeerMsg::Ice(IceReport::GatheringComplete));
    }

    /// Sends the outbox and what the agent queued, and reports the agent's events.
    async fn drain_agent(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.agent.poll_write() {
            let local = t.transport.local_addr;
            let to = t.transport.peer_addr;
            if let Some(i) = self.sockets.iter().position(|s| s.addr == local) {
                // The shared port takes authenticated answers from where we sent checks.
                if self.sockets[i].shared && self.learned.insert((i, to)) {
                    if let (Some(port), Some(me)) = (&self.config.shared_port, self.me.upgrade()) {
                        port.tell(super::port::MuxMsg::Checking {
                            socket: i,
                            remote: to,
                            inbox: me,
                        });
                    }
                }
                self.outbox.push((Via::Socket(i), to, t.message));
            } else if let Some(s) = self.sessions.iter().position(|s| s.relayed == Some(local)) {
                self.sessions[s].relay_send(now, to, &t.message);
                self.flush_session(s);
            } else {
                log::debug!("[{}] ICE: no socket for {local}", self.name);
            }
        }
        for (via, to, data) in std::mem::take(&mut self.outbox) {
            self.send(via, to, data).await;
        }
        while let Some(ev) = self.agent.poll_event() {
            match ev.event {
                Event::ConnectionStateChange(s) => {
                    let state = match s {
                        ConnectionState::Checking => IceConnectionState::Checking,
                        ConnectionState::Connected => IceConnectionState::Connected,
                        ConnectionState::Completed => IceConnectionState::Completed,
                        ConnectionState::Disconnected => IceConnectionState::Disconnected,
                        ConnectionState::Failed => IceConnectionState::Failed,
                        ConnectionState::Closed => IceConnectionState::Closed,
                        _ => IceConnectionState::New,
                    };
                    // During a restart the old pair still works: no step back to checking.
                    if self.restarting && state == IceConnectionState::Checking {
                        continue;
                    }
                    self.peer.push(PeerMsg::Ice(IceReport::State(state)));
                }
                Event::SelectedCandidatePairChange(local, remote) => {
                    let path = if local.candidate_type() == CandidateType::Relay {
                        self.sessions
                            .iter()
                            .position(|s| s.relayed == Some(local.addr()))
                            .map(Path::Relay)
                    } else {
                        self.sockets
                            .iter()
                            .position(|s| s.addr == local.base_addr() || s.addr == local.addr())
                            .map(Path::Socket)
                    };
                    match path {
                        Some(path) => {
                            self.restarting = false;
                            let first = self.selected.is_none();
                            self.selected = Some((path, remote.addr()));
                            self.pin_route(path, remote.addr());
                            self.peer.push(PeerMsg::Ice(IceReport::SelectedPair {
                                local: local.marshal(),
                                remote: remote.marshal(),
                            }));
                            if first {
                                self.dtls.push(DtlsMsg::IceConnected);
                            }
                        }
                        None => log::warn!(
                            "[{}] ICE: selected pair on unknown local address {}",
                            self.name,
                            local.addr()
                        ),
                    }
                }
                _ => {}
            }
        }
    }

    async fn send(&mut self, via: Via, to: SocketAddr, data: BytesMut) {
        match via {
            Via::Socket(i) => {
                let Some(s) = self.sockets.get(i) else {
                    return;
                };
                let (local, sock) = (s.addr, &s.sock);
                match sock.get_ref().send_to(&data, to) {
                    Ok(n) => crate::stats::add(&crate::stats::BYTES_SENT, n as u64),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Socket buffer full: this is the wire's own backpressure.
                        match sock.send_to(&data, to).await {
                            Ok(n) => crate::stats::add(&crate::stats::BYTES_SENT, n as u64),
                            Err(e) => {
                                log::debug!("[{}] ICE: send {local} -> {to}: {e}", self.name)
                            }
                        }
                    }
                    Err(e) => log::debug!("[{}] ICE: send {local} -> {to}: {e}", self.name),
                }
            }
            Via::Stream(id) => {
                if let Some(stream) = self.streams.get(id) {
                    crate::stats::add(&crate::stats::BYTES_SENT, data.len() as u64);
                    if stream.writes.try_send(data.freeze()).is_err() {
                        log::debug!("[{}] ICE: TURN stream {id} full; frame dropped", self.name);
                    }
                }
            }
        }
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let now = Instant::now();
        #[cfg(feature = "media")]
        self.media.push(crate::media::actor::MediaMsg::Close);
        let _ = self.agent.close();
        while self.agent.poll_write().is_some() {}
        // Deallocate relays: the Refresh(0) goes out once, without waiting for an answer.
        for s in 0..self.sessions.len() {
            self.sessions[s].close(now);
            self.flush_session(s);
        }
        for (via, to, data) in std::mem::take(&mut self.outbox) {
            match via {
                Via::Socket(i) => {
                    if let Some(s) = self.sockets.get(i) {
                        let _ = s.sock.get_ref().send_to(&data, to);
                    }
                }
                Via::Stream(id) => {
                    if let Some(stream) = self.streams.get(id) {
                        let _ = stream.writes.try_send(data.freeze());
                    }
                }
            }
        }
        // Closing the queues lets each stream task write what is queued, then end.
        for stream in &self.streams {
            stream.writes.close();
        }
        if let (Some(port), Some(me)) = (&self.config.shared_port, self.me.upgrade()) {
            port.tell(super::port::MuxMsg::Unregister { inbox: me });
        }
        self.sockets.clear();
        self.peer
            .push(PeerMsg::Ice(IceReport::State(IceConnectionState::Closed)));
    }
}

impl Actor for IceActor {
    type Msg = IceMsg;

    async fn drain(&mut self) {
        self.drain_agent().await;
        self.dtls.flush();
        #[cfg(feature = "media")]
        self.media.flush();
        self.peer.flush();
    }

    fn finished(&self) -> bool {
        self.closed
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.deadline()
    }

    fn handle(&mut self, now: Instant, batch: Vec<IceMsg>) {
        for msg in batch {
            self.handle_msg(now, msg);
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.timeout(now);
    }

    fn shutdown(&mut self, _now: Instant) {
        self.close();
    }

    fn poll_links(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        #[cfg(feature = "media")]
        if self.media.poll_inflight(cx).is_ready() {
            return Poll::Ready(());
        }
        runtime::poll_links(&mut [&mut self.dtls, &mut self.peer], cx)
    }

    /// Our own sockets (a shared port's are read by its task). Held back while DTLS is
    /// backlogged: the kernel buffers meanwhile.
    fn poll_extra(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.dtls.is_backlogged() {
            return Poll::Pending;
        }
        for s in self.sockets.iter().filter(|s| !s.shared) {
            if s.sock.poll_readable(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }

    fn on_extra(&mut self, _now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        self.read_sockets(&mut buf);
        self.buf = buf;
    }
}

/// True for a STUN Binding request (message type 0x0001 with the magic cookie).
pub(super) fn is_binding_request(data: &[u8]) -> bool {
    data.len() >= 20 && data[0..2] == [0x00, 0x01] && data[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

/// A STUN message's USERNAME (when `username` is given) and MESSAGE-INTEGRITY (short-term
/// credentials: HMAC-SHA1 keyed with the password `key`, RFC 8489 §14.5).
pub(super) fn check_stun(
    data: &[u8],
    username: Option<&str>,
    key: &[u8],
    crypto: &dyn rtc_stun::crypto::RTCCrypto,
) -> Result<(), &'static str> {
    let mut m = rtc_stun::message::Message {
        raw: data.to_vec(),
        ..Default::default()
    };
    m.decode().map_err(|_| "not a valid STUN message")?;
    if let Some(expected) = username {
        let got = m
            .get(rtc_stun::attributes::ATTR_USERNAME)
            .map_err(|_| "no USERNAME")?;
        if got != expected.as_bytes() {
            return Err("wrong USERNAME");
        }
    }
    rtc_stun::integrity::MessageIntegrity::check(&mut m, key, crypto)
        .map_err(|_| "no valid MESSAGE-INTEGRITY")
}

fn udp_candidate(addr: SocketAddr) -> CandidateConfig {
    CandidateConfig {
        network: "udp".to_owned(),
        address: addr.ip().to_string(),
        port: addr.port(),
        component: 1,
        ..Default::default()
    }
}

fn rustls_name(
    host: &str,
) -> Result<futures_rustls::rustls::pki_types::ServerName<'static>, String> {
    futures_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("bad TLS server name {host:?}: {e}"))
}
