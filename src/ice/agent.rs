//! The ICE agent actor: owns the UDP sockets and rtc-ice's agent.
//!
//! Every datagram is demultiplexed by its first byte (RFC 7983): 0–3 is STUN and stays here,
//! 20–63 is DTLS and goes up to the DTLS actor — but only from an address that ICE knows as a
//! remote candidate (checked or learned as peer-reflexive), so strangers never reach a session.
//! Wire-ward DTLS records leave on the selected pair.

use super::gather;
use super::{IceConfig, IceConnectionState};
use crate::dtls::DtlsMsg;
use crate::peer::PeerMsg;
use crate::runtime::{self, Link, Wake};
use async_channel::Receiver;
use async_io::Async;
use bytes::BytesMut;
use rtc_ice::agent::agent_config::AgentConfig;
use rtc_ice::candidate::candidate_host::CandidateHostConfig;
use rtc_ice::candidate::{unmarshal_candidate, CandidateConfig, CandidateType};
use rtc_ice::mdns::MulticastDnsMode;
use rtc_ice::state::ConnectionState;
use rtc_ice::{Agent, Event};
use rtc_shared::{TransportContext, TransportMessage, TransportProtocol};
use sansio::Protocol;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

/// Inputs of the ICE actor.
pub(crate) enum IceMsg {
    /// A DTLS record to send on the selected pair.
    Transmit(BytesMut),
    /// Bind host sockets and announce the candidates.
    Gather,
    /// Remote credentials are known: start checks.
    Start {
        controlling: bool,
        ufrag: String,
        pwd: String,
    },
    /// A remote `candidate:` attribute value.
    RemoteCandidate(String),
    /// The remote has no more candidates.
    EndOfCandidates,
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

pub(crate) struct IceActor {
    name: Arc<str>,
    config: IceConfig,
    agent: Agent,
    sockets: Vec<(SocketAddr, Async<UdpSocket>)>,
    selected: Option<(usize, SocketAddr)>,
    gathered: bool,
    closed: bool,
    dtls: Link<DtlsMsg>,
    peer: Link<PeerMsg>,
}

impl IceActor {
    pub(crate) fn new(
        name: Arc<str>,
        config: IceConfig,
        ufrag: String,
        pwd: String,
        dtls: Link<DtlsMsg>,
        peer: Link<PeerMsg>,
    ) -> crate::Result<Self> {
        let agent_config = AgentConfig {
            local_ufrag: ufrag,
            local_pwd: pwd,
            multicast_dns_mode: MulticastDnsMode::Disabled,
            candidate_types: vec![CandidateType::Host],
            disconnected_timeout: Some(config.disconnected_timeout),
            failed_timeout: Some(config.failed_timeout),
            keepalive_interval: Some(config.keepalive_interval),
            // Browsers hide host addresses behind mDNS names, so a peer-reflexive pair is
            // often the only one: nominate it as soon as it works, not a second later.
            prflx_acceptance_min_wait: Some(std::time::Duration::ZERO),
            ..Default::default()
        };
        let provider = crate::dtls::crypto_provider()?;
        let agent = Agent::new(Instant::now(), Arc::new(agent_config), provider)
            .map_err(|e| crate::Error::Ice(e.to_string()))?;
        Ok(Self {
            name,
            config,
            agent,
            sockets: Vec::new(),
            selected: None,
            gathered: false,
            closed: false,
            dtls,
            peer,
        })
    }

    pub(crate) async fn run(mut self, inbox: Receiver<Vec<IceMsg>>) {
        let mut buf = vec![0u8; 2048];
        loop {
            self.drain().await;
            self.dtls.flush();
            self.peer.flush();
            if self.closed {
                return;
            }
            let deadline = self.agent.poll_timeout();
            // Hold socket input back while DTLS is backlogged: the kernel buffers meanwhile.
            let read_sockets = !self.dtls.is_backlogged();
            let sockets = &self.sockets;
            let mut readable = |cx: &mut std::task::Context<'_>| {
                if !read_sockets {
                    return Poll::Pending;
                }
                for (_, s) in sockets {
                    if s.poll_readable(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            };
            let wake = runtime::wait(
                &inbox,
                true,
                deadline,
                &mut [&mut self.dtls, &mut self.peer],
                &mut readable,
            )
            .await;
            let now = Instant::now();
            match wake {
                Wake::Inbox(Some(batch)) => {
                    for msg in batch {
                        self.handle(now, msg).await;
                    }
                }
                Wake::Inbox(None) => self.close(),
                Wake::Extra => self.read_sockets(&mut buf),
                Wake::Timer => {
                    if let Err(e) = self.agent.handle_timeout(now) {
                        log::debug!("[{}] ICE timeout: {e}", self.name);
                    }
                }
                Wake::Link => {}
            }
        }
    }

    fn read_sockets(&mut self, buf: &mut [u8]) {
        for i in 0..self.sockets.len() {
            for _ in 0..READ_BUDGET {
                let (local, sock) = &self.sockets[i];
                let local = *local;
                match sock.get_ref().recv_from(buf) {
                    Ok((n, from)) => {
                        let data = BytesMut::from(&buf[..n]);
                        self.datagram(Instant::now(), local, from, data);
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
            _ => log::debug!(
                "[{}] ICE: datagram from {from} with first byte {first} dropped",
                self.name
            ),
        }
    }

    async fn handle(&mut self, now: Instant, msg: IceMsg) {
        match msg {
            IceMsg::Transmit(data) => match self.selected {
                Some((i, to)) => self.send(i, to, &data).await,
                None => log::debug!("[{}] ICE: no selected pair; DTLS record dropped", self.name),
            },
            IceMsg::Gather => self.gather(),
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
                }
            }
            IceMsg::RemoteCandidate(line) => {
                let raw = line.trim();
                let raw = raw.strip_prefix("a=").unwrap_or(raw);
                let raw = raw.strip_prefix("candidate:").unwrap_or(raw);
                match unmarshal_candidate(raw) {
                    Ok(c) => {
                        log::info!("[{}] ICE remote candidate {}", self.name, c.marshal());
                        if let Err(e) = self.agent.add_remote_candidate(c) {
                            log::warn!("[{}] ICE: remote candidate refused: {e}", self.name);
                        }
                    }
                    Err(e) => {
                        log::warn!("[{}] ICE: bad remote candidate {raw:?}: {e}", self.name);
                        self.peer.push(PeerMsg::Ice(IceReport::BadCandidate(format!(
                            "{raw:?}: {e}"
                        ))));
                    }
                }
            }
            IceMsg::EndOfCandidates => log::debug!("[{}] ICE: remote end-of-candidates", self.name),
            IceMsg::Close => self.close(),
        }
    }

    fn gather(&mut self) {
        if self.gathered {
            return;
        }
        self.gathered = true;
        let addresses = gather::host_addresses(&self.config.hosts);
        self.sockets = gather::bind(&addresses, self.config.hosts.ports.as_ref());
        for (addr, _) in &self.sockets {
            let cand = CandidateHostConfig {
                base_config: CandidateConfig {
                    network: "udp".to_owned(),
                    address: addr.ip().to_string(),
                    port: addr.port(),
                    component: 1,
                    ..Default::default()
                },
                ..Default::default()
            }
            .new_candidate_host();
            match cand {
                Ok(c) => {
                    let line = c.marshal();
                    match self.agent.add_local_candidate(c) {
                        Ok(_) => {
                            log::info!("[{}] ICE local candidate {line}", self.name);
                            self.peer.push(PeerMsg::Ice(IceReport::Candidate(format!(
                                "candidate:{line}"
                            ))));
                        }
                        Err(e) => {
                            log::warn!("[{}] ICE: local candidate {addr} refused: {e}", self.name)
                        }
                    }
                }
                Err(e) => log::warn!("[{}] ICE: candidate for {addr}: {e}", self.name),
            }
        }
        self.peer.push(PeerMsg::Ice(IceReport::GatheringComplete));
    }

    async fn send(&mut self, socket: usize, to: SocketAddr, data: &[u8]) {
        let Some((local, sock)) = self.sockets.get(socket) else {
            return;
        };
        match sock.get_ref().send_to(data, to) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Socket buffer full: this is the wire's own backpressure.
                if let Err(e) = sock.send_to(data, to).await {
                    log::debug!("[{}] ICE: send {local} -> {to}: {e}", self.name);
                }
            }
            Err(e) => log::debug!("[{}] ICE: send {local} -> {to}: {e}", self.name),
        }
    }

    /// Sends what the agent queued and reports its events, after every input.
    async fn drain(&mut self) {
        while let Some(t) = self.agent.poll_write() {
            let local = t.transport.local_addr;
            match self.sockets.iter().position(|(a, _)| *a == local) {
                Some(i) => self.send(i, t.transport.peer_addr, &t.message).await,
                None => log::debug!("[{}] ICE: no socket for {local}", self.name),
            }
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
                    self.peer.push(PeerMsg::Ice(IceReport::State(state)));
                }
                Event::SelectedCandidatePairChange(local, remote) => {
                    let socket = self
                        .sockets
                        .iter()
                        .position(|(a, _)| *a == local.base_addr() || *a == local.addr());
                    match socket {
                        Some(i) => {
                            let first = self.selected.is_none();
                            self.selected = Some((i, remote.addr()));
                            self.peer.push(PeerMsg::Ice(IceReport::SelectedPair {
                                local: local.marshal(),
                                remote: remote.marshal(),
                            }));
                            if first {
                                self.dtls.push(DtlsMsg::IceConnected);
                            }
                        }
                        None => log::warn!(
                            "[{}] ICE: selected pair on unknown socket {}",
                            self.name,
                            local.addr()
                        ),
                    }
                }
                _ => {}
            }
        }
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let _ = self.agent.close();
        while self.agent.poll_write().is_some() {}
        self.sockets.clear();
        self.peer
            .push(PeerMsg::Ice(IceReport::State(IceConnectionState::Closed)));
    }
}
