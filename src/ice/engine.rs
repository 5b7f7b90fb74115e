//! The ICE agent's sans-IO engine: rtc-ice's agent, the STUN/TURN server sessions, the
//! local sockets' addresses and every decision about a datagram, with time passed in. It
//! owns no socket and spawns nothing: inputs are method calls, and what must happen in
//! the world (a datagram to send, a record for DTLS, a report, a name to resolve, a TCP/TLS
//! connection to open, a shared-port route) comes out of [`IceEngine::poll_output`]. The
//! actor around it (`agent.rs`) owns the sockets and the tasks.
//!
//! Every datagram is demultiplexed first by where it came from: a configured server's
//! traffic goes to that server's session (and relayed data comes back out of it as if it
//! had arrived on the relayed address). The rest by its first byte (RFC 7983): 0–3 is STUN
//! and stays here, 20–63 is DTLS and goes up to the DTLS actor, 128–191 (S)RTP to the media
//! actor — but only from an address that ICE knows as a remote candidate (checked or
//! learned as peer-reflexive), so strangers never reach a session. Wire-ward DTLS records
//! leave on the selected pair.
//!
//! STUN Binding requests are authenticated here before rtc-ice sees them: USERNAME must be
//! `<our ufrag>:<their ufrag>` and MESSAGE-INTEGRITY an HMAC-SHA1 with our password. rtc-ice
//! 0.21.1 settles ICE-CONTROLLING/CONTROLLED role conflicts (RFC 8445 §7.3.1.1: a 487 answer,
//! a role switch) before it checks either, so without this a forged request could flip our
//! role; dropped here, it gets no answer and changes nothing.
//!
//! The gatherer lives here rather than apart: it shares the host sockets with the agent,
//! and relayed traffic passes both, so one owner saves a hop per relayed datagram.

use super::server::{IceServer, ServerTransport, TransportPolicy};
use super::turn::{ServerSession, SessionEvent, Via};
use super::turn_stream::StreamNews;
use super::{IceConfig, IceConnectionState};
use bytes::BytesMut;
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
use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// What the ICE engine reports to the peer connection.
#[derive(Debug)]
pub(crate) enum IceReport {
    /// A local candidate (`candidate:` attribute value, without `a=`).
    Candidate(String),
    /// Gathering started again (servers added to a running connection).
    Gathering,
    GatheringComplete,
    State(IceConnectionState),
    SelectedPair {
        local: String,
        remote: String,
    },
    BadCandidate(String),
}

/// What the engine asks of the world, in order. One per datagram on the hot path: the rare
/// variants box their server so that each stays as small as a `Send`.
#[derive(Debug)]
pub(crate) enum IceOutput {
    /// A datagram (or a TURN stream frame) for the wire.
    Send(Via, SocketAddr, BytesMut),
    /// A DTLS record from a validated remote, for the DTLS actor.
    Dtls(BytesMut),
    /// The first pair was selected: DTLS may start.
    Connected,
    /// An SRTP/SRTCP packet from a validated remote, for the media actor.
    #[cfg(feature = "media")]
    Media(BytesMut),
    /// The connection closes: the media actor stops.
    #[cfg(feature = "media")]
    MediaClose,
    /// For the peer actor.
    Report(IceReport),
    /// For the shared port's demultiplexer (only with a shared port).
    Port(PortNote),
    /// Resolve configured server `n`'s `host:port`; answer with [`IceEngine::resolved`].
    Resolve(usize, String),
    /// Bind a socket of our own on `ip` to reach `server` at `addr` from (beside a shared
    /// port); answer with [`IceEngine::add_socket`] (if bound) and
    /// [`IceEngine::server_socket_ready`].
    BindServerSocket {
        ip: IpAddr,
        server: Box<IceServer>,
        addr: SocketAddr,
    },
    /// Open TURN-over-TCP/TLS stream `id` to `server` at `addr`; its news goes to
    /// [`IceEngine::stream_news`], its frames come out as `Send(Via::Stream(id), ..)`.
    Connect {
        id: usize,
        server: Box<IceServer>,
        addr: SocketAddr,
    },
    /// Stream `id` is done with: let its task write what is queued, then end.
    EndStream(usize),
    /// Closed: the sockets can go.
    Closed,
}

/// What the shared port must learn about this connection (see [`super::SharedPort`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PortNote {
    /// Our credentials (and the peer's password, once known).
    Register {
        ufrag: String,
        pwd: String,
        remote_pwd: Option<String>,
        max_routes: usize,
    },
    /// We sent a check from shared socket `socket` to `remote`.
    Checking { socket: usize, remote: SocketAddr },
    /// The selected pair uses shared socket `socket` and `remote`.
    Selected { socket: usize, remote: SocketAddr },
    /// The connection is gone.
    Unregister,
}

/// A local UDP socket as the engine sees it: its address and what it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LocalSocket {
    pub(crate) addr: SocketAddr,
    /// One of a [`super::SharedPort`]'s (read by its task, routed by credentials).
    pub(crate) shared: bool,
    /// Bound only to reach servers from (beside a shared port): not a host candidate.
    pub(crate) servers_only: bool,
}

impl LocalSocket {
    pub(crate) fn host(addr: SocketAddr, shared: bool) -> Self {
        Self {
            addr,
            shared,
            servers_only: false,
        }
    }
}

/// Where the selected pair's datagrams leave from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// A host socket (host, server- and peer-reflexive candidates).
    Socket(usize),
    /// Through the allocation of server session `n`.
    Relay(usize),
}

/// A TURN-over-TCP/TLS connection while it connects and afterwards.
struct Stream {
    server: IceServer,
    server_addr: SocketAddr,
    session: Option<usize>,
}

pub(crate) struct IceEngine {
    name: Arc<str>,
    config: IceConfig,
    agent: Agent,
    /// Indexed like the actor's sockets: `Via::Socket(n)` is `sockets[n]`.
    sockets: Vec<LocalSocket>,
    /// Shared-port routes already announced to the demultiplexer.
    learned: HashSet<(usize, SocketAddr)>,
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
    /// Name resolutions, socket binds and stream connections still under way.
    pending: usize,
    gather_deadline: Option<Instant>,
    gathering_done: bool,
    selected: Option<(Path, SocketAddr)>,
    /// An ICE restart is under way: the old pair carries traffic until a new one is chosen.
    restarting: bool,
    gathered: bool,
    closed: bool,
    out: VecDeque<IceOutput>,
}

impl IceEngine {
    pub(crate) fn new(
        name: Arc<str>,
        config: IceConfig,
        ufrag: String,
        pwd: String,
        now: Instant,
    ) -> crate::Result<Self> {
        let max_remote = match config.max_remote_candidates {
            0 => super::DEFAULT_MAX_REMOTE_CANDIDATES,
            n => n,
        };
        let agent_config = agent_config(&config, ufrag.clone(), pwd.clone());
        let provider = crate::dtls::crypto_provider()?;
        let agent = Agent::new(now, Arc::new(agent_config), provider.clone())
            .map_err(|e| crate::error::IceError::Agent(e.to_string()))?;
        Ok(Self {
            name,
            config,
            agent,
            sockets: Vec::new(),
            learned: HashSet::new(),
            ufrag,
            pwd,
            max_remote,
            cap_logged: false,
            crypto: provider,
            sessions: Vec::new(),
            streams: Vec::new(),
            pending: 0,
            gather_deadline: None,
            gathering_done: false,
            selected: None,
            restarting: false,
            gathered: false,
            closed: false,
            out: VecDeque::new(),
        })
    }

    /// The next thing to do in the world.
    pub(crate) fn poll_output(&mut self) -> Option<IceOutput> {
        self.out.pop_front()
    }

    pub(crate) fn is_gathered(&self) -> bool {
        self.gathered
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The earliest of the agent's, the sessions' and the gathering deadlines.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
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

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
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
            self.gathering_timed_out();
        }
    }

    /// The gathering deadline passed: servers that have not answered are left behind.
    fn gathering_timed_out(&mut self) {
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

    // ---- inputs from the peer actor and DTLS ----

    /// A DTLS record or an SRTP/SRTCP packet to send on the selected pair.
    pub(crate) fn transmit(&mut self, now: Instant, data: BytesMut) {
        match self.selected {
            Some((Path::Socket(i), to)) => {
                self.out
                    .push_back(IceOutput::Send(Via::Socket(i), to, data))
            }
            Some((Path::Relay(s), to)) => {
                self.sessions[s].relay_send(now, to, &data);
                self.flush_session(s);
            }
            None => log::debug!("[{}] ICE: no selected pair; datagram dropped", self.name),
        }
    }

    /// Remote credentials are known: checks start.
    pub(crate) fn start(&mut self, now: Instant, controlling: bool, ufrag: String, pwd: String) {
        let role = if controlling {
            "controlling"
        } else {
            "controlled"
        };
        log::info!("[{}] ICE checks start ({role})", self.name);
        if let Err(e) = self
            .agent
            .start_connectivity_checks(now, controlling, ufrag, pwd)
        {
            log::warn!("[{}] ICE: cannot start checks: {e}", self.name);
            self.report(IceReport::State(IceConnectionState::Failed));
        } else if self.gathered {
            // The shared port now learns the peer's password too.
            self.register_ufrag();
        }
    }

    /// ICE restart: new local credentials; checks start again with the next `start`.
    pub(crate) fn restart(&mut self, now: Instant, ufrag: String, pwd: String) {
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

    /// The host sockets are bound (or the shared port's taken): they become host
    /// candidates, and the servers are asked.
    pub(crate) fn gather(&mut self, now: Instant, sockets: Vec<LocalSocket>) {
        if self.gathered {
            return;
        }
        self.gathered = true;
        self.sockets = sockets;
        if self.config.shared_port.is_some() {
            self.register_ufrag();
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
        self.ask_servers(now, 0);
    }

    /// Asks configured servers `first..` (by address, or after resolving their name).
    fn ask_servers(&mut self, now: Instant, first: usize) {
        if first < self.config.servers.len() {
            self.gather_deadline = Some(now + self.config.gather_timeout);
        }
        for idx in first..self.config.servers.len() {
            let server = self.config.servers[idx].clone();
            if let Ok(ip) = server.host.parse::<IpAddr>() {
                self.start_server(now, &server, SocketAddr::new(ip, server.port));
            } else {
                self.pending += 1;
                self.out
                    .push_back(IceOutput::Resolve(idx, server.host_port()));
            }
        }
        self.check_gathered();
    }

    /// More STUN/TURN servers for a running connection (W3C `setConfiguration`): those not
    /// configured yet are asked from the existing sockets, their candidates are announced
    /// like the first ones and paired with the remote candidates (checks run on them), and
    /// gathering completes again. Before gathering they simply join the configuration.
    pub(crate) fn add_servers(&mut self, now: Instant, servers: Vec<IceServer>) {
        if self.closed {
            return;
        }
        let first = self.config.servers.len();
        for s in servers {
            if !self.config.servers.contains(&s) {
                self.config.servers.push(s);
            }
        }
        if first == self.config.servers.len() || !self.gathered {
            return;
        }
        log::info!(
            "[{}] ICE: {} more server(s); gathering again",
            self.name,
            self.config.servers.len() - first
        );
        if self.gathering_done {
            self.gathering_done = false;
            self.report(IceReport::Gathering);
        }
        self.ask_servers(now, first);
    }

    /// Configured server `idx`'s host name was resolved (or not).
    pub(crate) fn resolved(
        &mut self,
        now: Instant,
        idx: usize,
        result: Result<Vec<SocketAddr>, String>,
    ) {
        self.pending = self.pending.saturating_sub(1);
        let Some(server) = self.config.servers.get(idx).cloned() else {
            return;
        };
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

    /// Adds a local socket (a server socket the world bound on our asking); its index is
    /// the next `Via::Socket`.
    pub(crate) fn add_socket(&mut self, socket: LocalSocket) -> usize {
        self.sockets.push(socket);
        self.sockets.len() - 1
    }

    /// Our own server socket on `ip` (beside a shared port), if one is bound.
    pub(crate) fn server_socket_on(&self, ip: IpAddr) -> Option<usize> {
        self.sockets
            .iter()
            .position(|s| s.servers_only && s.addr.ip() == ip)
    }

    /// The answer to `BindServerSocket`: ask `server` from the socket on `ip`, if any.
    pub(crate) fn server_socket_ready(
        &mut self,
        now: Instant,
        ip: IpAddr,
        server: IceServer,
        addr: SocketAddr,
    ) {
        self.pending = self.pending.saturating_sub(1);
        if let Some(i) = self.server_socket_on(ip) {
            if !self.closed && !self.gathering_done {
                let base = self.sockets[i].addr;
                let want_mapped = self.config.transport_policy == TransportPolicy::All;
                self.open_session(now, server, addr, Via::Socket(i), base, want_mapped);
            }
        }
        self.check_gathered();
    }

    /// Starts gathering from `server` at `addr`: a session per host socket of the same
    /// family (UDP), or a stream (TCP/TLS).
    fn start_server(&mut self, now: Instant, server: &IceServer, addr: SocketAddr) {
        if self.closed || self.gathering_done {
            return;
        }
        if server.transport != ServerTransport::Udp {
            let id = self.streams.len();
            self.streams.push(Stream {
                server: server.clone(),
                server_addr: addr,
                session: None,
            });
            self.pending += 1;
            log::info!("[{}] ICE: connecting to {server} at {addr}", self.name);
            self.out.push_back(IceOutput::Connect {
                id,
                server: Box::new(server.clone()),
                addr,
            });
            return;
        }
        let want_mapped = self.config.transport_policy == TransportPolicy::All;
        let bases: Vec<LocalSocket> = self
            .sockets
            .iter()
            .filter(|s| !s.servers_only)
            .copied()
            .collect();
        for base in bases {
            // A socket bound to loopback cannot reach another host, nor v4 reach v6.
            if base.addr.is_ipv4() != addr.is_ipv4()
                || base.addr.ip().is_loopback() != addr.ip().is_loopback()
            {
                continue;
            }
            // A shared port's 5-tuple to a server would be every connection's: each
            // connection asks servers from a socket of its own instead.
            let i = if !base.shared {
                self.sockets.iter().position(|s| s.addr == base.addr)
            } else {
                self.server_socket_on(base.addr.ip())
            };
            match i {
                Some(i) => {
                    let base = self.sockets[i].addr;
                    self.open_session(now, server.clone(), addr, Via::Socket(i), base, want_mapped);
                }
                None => {
                    self.pending += 1;
                    self.out.push_back(IceOutput::BindServerSocket {
                        ip: base.addr.ip(),
                        server: Box::new(server.clone()),
                        addr,
                    });
                }
            }
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

    /// News from TURN stream `id`.
    pub(crate) fn stream_news(&mut self, now: Instant, id: usize, news: StreamNews) {
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
                    self.out.push_back(IceOutput::EndStream(id));
                    return;
                }
                let (server, addr) = (stream.server.clone(), stream.server_addr);
                log::info!("[{}] ICE: connected to {server} from {local}", self.name);
                let s = self.open_session(now, server, addr, Via::Stream(id), local, false);
                self.streams[id].session = s;
                self.check_gathered();
            }
            StreamNews::Frame(frame) => {
                if let Some(s) = stream.session {
                    let events = self.sessions[s].input(now, frame);
                    self.session_events(now, s, events);
                }
            }
            StreamNews::Down(why) => {
                let server = stream.server.clone();
                let session = stream.session.take();
                self.out.push_back(IceOutput::EndStream(id));
                match session {
                    None => {
                        self.pending = self.pending.saturating_sub(1);
                        log::warn!("[{}] ICE: {server}: {why}", self.name);
                    }
                    Some(s) => {
                        if !self.closed {
                            log::warn!("[{}] ICE: {server}: connection lost: {why}", self.name);
                        }
                        self.sessions[s].give_up();
                    }
                }
                self.check_gathered();
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
            self.out
                .push_back(IceOutput::Send(session.via, session.server_addr, data));
        }
    }

    fn add_local(&mut self, cand: Result<Candidate, rtc_shared::error::Error>, addr: SocketAddr) {
        match cand {
            Ok(c) => {
                let line = c.marshal();
                match self.agent.add_local_candidate(c) {
                    Ok(true) => {
                        log::info!(target: crate::EVENT_LOG_TARGET, "[{}] ICE local candidate {line}", self.name);
                        self.report(IceReport::Candidate(format!("candidate:{line}")));
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
        self.report(IceReport::GatheringComplete);
    }

    // ---- datagrams ----

    /// A datagram on socket `i` (ours or a shared port's): a server's, or a peer's.
    pub(crate) fn socket_datagram(
        &mut self,
        now: Instant,
        i: usize,
        from: SocketAddr,
        data: BytesMut,
    ) {
        let Some(local) = self.sockets.get(i).map(|s| s.addr) else {
            return;
        };
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

    /// A datagram the shared port routed to us, on its socket `socket`.
    pub(crate) fn port_datagram(
        &mut self,
        now: Instant,
        socket: usize,
        from: SocketAddr,
        data: BytesMut,
    ) {
        if self.sockets.get(socket).is_some_and(|s| s.shared) {
            self.socket_datagram(now, socket, from, data);
        }
    }

    /// A datagram for the agent, DTLS or media, arrived on local candidate address `local`.
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
            0..=3 => self.stun(now, transport, data),
            20..=63 => {
                if let Some(data) = self.validated(now, transport, "DTLS", data) {
                    self.out.push_back(IceOutput::Dtls(data));
                }
            }
            #[cfg(feature = "media")]
            128..=191 => {
                if let Some(data) = self.validated(now, transport, "RTP/RTCP", data) {
                    self.out.push_back(IceOutput::Media(data));
                }
            }
            _ => log::debug!(
                "[{}] ICE: datagram from {from} with first byte {first} dropped",
                self.name
            ),
        }
    }

    /// `data`, if it came from a remote ICE has validated (strangers never reach a session).
    fn validated(
        &mut self,
        now: Instant,
        transport: TransportContext,
        what: &str,
        data: BytesMut,
    ) -> Option<BytesMut> {
        if self.agent.is_valid_non_stun_traffic(now, transport) {
            return Some(data);
        }
        let from = transport.peer_addr;
        log::debug!(
            "[{}] ICE: {what} from unknown address {from} dropped",
            self.name
        );
        None
    }

    /// A STUN message for the agent: authenticated first, within the remote-candidate cap.
    fn stun(&mut self, now: Instant, transport: TransportContext, data: BytesMut) {
        let from = transport.peer_addr;
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

    // ---- remote candidates ----

    /// Adds a signaled remote candidate, within `max_remote_candidates`.
    pub(crate) fn remote_candidate(&mut self, line: &str) -> crate::Result<()> {
        let raw = line.trim();
        let raw = raw.strip_prefix("a=").unwrap_or(raw);
        let raw = raw.strip_prefix("candidate:").unwrap_or(raw);
        let c = match unmarshal_candidate(raw) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("[{}] ICE: bad remote candidate {raw:?}: {e}", self.name);
                self.report(IceReport::BadCandidate(format!("{raw:?}: {e}")));
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

    // ---- the agent's outputs ----

    /// Queues what the agent wants sent and what it has to say (call after every input).
    pub(crate) fn poll_agent(&mut self, now: Instant) {
        self.agent_writes(now);
        while let Some(ev) = self.agent.poll_event() {
            match ev.event {
                Event::ConnectionStateChange(s) => self.state_changed(s),
                Event::SelectedCandidatePairChange(local, remote) => {
                    self.pair_selected(&local, &remote)
                }
                _ => {}
            }
        }
    }

    /// The agent's checks and answers, each on the socket (or relay) of its local address.
    fn agent_writes(&mut self, now: Instant) {
        while let Some(t) = self.agent.poll_write() {
            let local = t.transport.local_addr;
            let to = t.transport.peer_addr;
            if let Some(i) = self.sockets.iter().position(|s| s.addr == local) {
                // The shared port takes authenticated answers from where we sent checks.
                if self.sockets[i].shared
                    && self.config.shared_port.is_some()
                    && self.learned.insert((i, to))
                {
                    self.out.push_back(IceOutput::Port(PortNote::Checking {
                        socket: i,
                        remote: to,
                    }));
                }
                self.out
                    .push_back(IceOutput::Send(Via::Socket(i), to, t.message));
            } else if let Some(s) = self.sessions.iter().position(|s| s.relayed == Some(local)) {
                self.sessions[s].relay_send(now, to, &t.message);
                self.flush_session(s);
            } else {
                log::debug!("[{}] ICE: no socket for {local}", self.name);
            }
        }
    }

    fn state_changed(&mut self, s: ConnectionState) {
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
            return;
        }
        self.report(IceReport::State(state));
    }

    fn pair_selected(&mut self, local: &Candidate, remote: &Candidate) {
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
        let Some(path) = path else {
            log::warn!(
                "[{}] ICE: selected pair on unknown local address {}",
                self.name,
                local.addr()
            );
            return;
        };
        self.restarting = false;
        let first = self.selected.is_none();
        self.selected = Some((path, remote.addr()));
        self.pin_route(path, remote.addr());
        self.report(IceReport::SelectedPair {
            local: local.marshal(),
            remote: remote.marshal(),
        });
        if first {
            self.out.push_back(IceOutput::Connected);
        }
    }

    // ---- the shared port ----

    /// Tells the shared port that our selected pair's route must stay.
    fn pin_route(&mut self, path: Path, remote: SocketAddr) {
        let Path::Socket(i) = path else { return };
        if self.config.shared_port.is_some() && self.sockets.get(i).is_some_and(|s| s.shared) {
            self.out
                .push_back(IceOutput::Port(PortNote::Selected { socket: i, remote }));
        }
    }

    /// Tells the shared port (if any) our credentials: checks naming our ufrag and
    /// authenticated with our password are ours, and so are answers authenticated with the
    /// peer's password from addresses we checked.
    fn register_ufrag(&mut self) {
        if self.config.shared_port.is_some() {
            self.out.push_back(IceOutput::Port(PortNote::Register {
                ufrag: self.ufrag.clone(),
                pwd: self.pwd.clone(),
                remote_pwd: self.agent.get_remote_credentials().map(|c| c.pwd.clone()),
                max_routes: self.max_remote,
            }));
        }
    }

    // ---- close ----

    /// Closes the agent, deallocates relays (one Refresh with lifetime 0 each, not waited
    /// for), ends the streams, leaves the shared port and reports `Closed`.
    pub(crate) fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.closed = true;
        #[cfg(feature = "media")]
        self.out.push_back(IceOutput::MediaClose);
        let _ = self.agent.close();
        while self.agent.poll_write().is_some() {}
        for s in 0..self.sessions.len() {
            self.sessions[s].close(now);
            self.flush_session(s);
        }
        for id in 0..self.streams.len() {
            self.out.push_back(IceOutput::EndStream(id));
        }
        if self.config.shared_port.is_some() {
            self.out.push_back(IceOutput::Port(PortNote::Unregister));
        }
        self.sockets.clear();
        self.out.push_back(IceOutput::Closed);
        self.report(IceReport::State(IceConnectionState::Closed));
    }

    fn report(&mut self, r: IceReport) {
        self.out.push_back(IceOutput::Report(r));
    }
}

fn agent_config(config: &IceConfig, ufrag: String, pwd: String) -> AgentConfig {
    let candidate_types = match config.transport_policy {
        TransportPolicy::All => vec![
            CandidateType::Host,
            CandidateType::ServerReflexive,
            CandidateType::PeerReflexive,
            CandidateType::Relay,
        ],
        TransportPolicy::Relay => vec![CandidateType::Relay],
    };
    AgentConfig {
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

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
