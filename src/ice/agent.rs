//! The ICE agent actor: the I/O around [`IceEngine`] (the sans-IO part: rtc-ice, the
//! STUN/TURN sessions and every decision, `engine.rs`). The actor owns the UDP sockets it
//! binds (or the shared port's it is given), reads them, sends what the engine queues,
//! spawns the name lookups and TURN-over-TCP/TLS stream tasks the engine asks for, speaks
//! to the shared port's demultiplexer and passes the engine's records and reports on to
//! DTLS, media and the peer actor.

use super::engine::{IceEngine, IceOutput, LocalSocket, PortNote};
use super::gather;
use super::server::{IceServer, ServerTransport};
use super::turn::Via;
use super::turn_stream::{self, StreamNews};
use super::udp;
use super::IceConfig;
use crate::dtls::DtlsMsg;
use crate::peer::PeerMsg;
use crate::runtime::{self, Actor, Link};
use crate::stats;
use async_channel::{Sender, WeakSender};
use async_io::Async;
use bytes::{Bytes, BytesMut};
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
    /// More STUN/TURN servers (`PeerConnection::add_ice_servers`).
    AddServers(Vec<IceServer>),
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

/// Datagrams read from one socket per wake-up, so one busy socket cannot starve the rest.
const READ_BUDGET: usize = 256;
/// Frames queued for one TURN stream before more are dropped (as a full socket would).
const STREAM_QUEUE: usize = 256;

/// A local UDP socket: our own, or one of a [`super::SharedPort`]'s (read by its task).
struct HostSocket {
    sock: Arc<Async<UdpSocket>>,
    shared: bool,
}

pub(crate) struct IceActor {
    name: Arc<str>,
    engine: IceEngine,
    config: IceConfig,
    /// Indexed like the engine's sockets (`Via::Socket(n)`).
    sockets: Vec<HostSocket>,
    /// Each TURN stream task's write queue, by stream id (`None`: it never started).
    streams: Vec<Option<Sender<Bytes>>>,
    dtls: Link<DtlsMsg>,
    /// SRTP/SRTCP (RFC 7983: first byte 128–191) to the connection's media actor.
    #[cfg(feature = "media")]
    media: Link<crate::media::actor::MediaMsg>,
    peer: Link<PeerMsg>,
    /// Our own inbox, for the tasks we spawn (weak, so the inbox still closes when the
    /// peer connection's actors are gone).
    me: WeakSender<Vec<IceMsg>>,
    ex: Rc<LocalExecutor<'static>>,
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
        let engine = IceEngine::new(name.clone(), config.clone(), ufrag, pwd, Instant::now())?;
        Ok(Self {
            name,
            engine,
            config,
            sockets: Vec::new(),
            streams: Vec::new(),
            dtls,
            #[cfg(feature = "media")]
            media,
            peer,
            me: me.downgrade(),
            ex,
        })
    }

    fn handle_msg(&mut self, now: Instant, msg: IceMsg) {
        let engine = &mut self.engine;
        match msg {
            IceMsg::Transmit(data) => engine.transmit(now, data),
            IceMsg::Gather => self.gather(now),
            IceMsg::AddServers(servers) => engine.add_servers(now, servers),
            IceMsg::Start {
                controlling,
                ufrag,
                pwd,
            } => engine.start(now, controlling, ufrag, pwd),
            IceMsg::Restart { ufrag, pwd } => engine.restart(now, ufrag, pwd),
            IceMsg::RemoteCandidate(line, reply) => {
                let result = engine.remote_candidate(&line);
                if let Some(r) = reply {
                    let _ = r.try_send(result);
                }
            }
            IceMsg::EndOfCandidates => log::debug!("[{}] ICE: remote end-of-candidates", self.name),
            IceMsg::Resolved(idx, result) => engine.resolved(now, idx, result),
            IceMsg::Stream(id, news) => {
                if let StreamNews::Frame(frame) = &news {
                    stats::add(&stats::BYTES_RECEIVED, frame.len() as u64);
                }
                engine.stream_news(now, id, news)
            }
            IceMsg::PortDatagram { socket, from, data } => {
                stats::add(&stats::BYTES_RECEIVED, data.len() as u64);
                engine.port_datagram(now, socket, from, data)
            }
            IceMsg::Close => self.close(now),
        }
    }

    /// Binds the host sockets (or takes the shared port's) and hands them to the engine.
    fn gather(&mut self, now: Instant) {
        if self.engine.is_gathered() {
            return;
        }
        let bound: Vec<(SocketAddr, Arc<Async<UdpSocket>>, bool)> = match &self.config.shared_port {
            Some(port) => port
                .sockets()
                .iter()
                .map(|(addr, sock)| (*addr, sock.clone(), true))
                .collect(),
            None => {
                let addresses = gather::host_addresses(&self.config.hosts);
                gather::bind(&addresses, self.config.hosts.ports.as_ref())
                    .into_iter()
                    .map(|(addr, sock)| (addr, Arc::new(sock), false))
                    .collect()
            }
        };
        let mut locals = Vec::with_capacity(bound.len());
        for (addr, sock, shared) in bound {
            self.sockets.push(HostSocket { sock, shared });
            locals.push(LocalSocket::host(addr, shared));
        }
        self.engine.gather(now, locals);
    }

    /// Reads our own sockets until they would block (at most [`READ_BUDGET`] datagrams
    /// each), a batch per system call (`udp.rs`).
    fn read_sockets(&mut self, now: Instant) {
        for i in 0..self.sockets.len() {
            if self.sockets[i].shared {
                continue;
            }
            let sock = self.sockets[i].sock.clone();
            udp::with_recv_batch(|batch| {
                let mut read = 0;
                while read < READ_BUDGET {
                    match batch.recv(sock.get_ref()) {
                        Ok(n) => {
                            read += n;
                            for (data, from) in batch.iter() {
                                stats::add(&stats::BYTES_RECEIVED, data.len() as u64);
                                let data = BytesMut::from(data);
                                self.engine.socket_datagram(now, i, from, data);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // ICMP errors surface here (ECONNREFUSED); they are not fatal.
                            let local = sock.get_ref().local_addr();
                            log::debug!("[{}] ICE: recv on {local:?}: {e}", self.name);
                            break;
                        }
                    }
                }
            });
        }
    }

    /// Does what the engine asks, in order: datagrams go out (awaiting a full socket
    /// buffer, the wire's own backpressure), the rest is passed on.
    async fn drain_engine(&mut self) {
        self.engine.poll_agent(Instant::now());
        // Datagrams for our sockets are queued and sent a batch per system call.
        let mut queue = Vec::new();
        while let Some(out) = self.engine.poll_output() {
            match out {
                IceOutput::Send(Via::Socket(i), to, data) => {
                    queue.push((i, to, data));
                    if queue.len() >= udp::BATCH {
                        self.send_queued(&mut queue).await;
                    }
                }
                IceOutput::Send(via, to, data) => self.send_now(via, to, data),
                IceOutput::Closed => {
                    self.send_queued(&mut queue).await;
                    self.act(IceOutput::Closed);
                }
                other => self.act(other),
            }
        }
        self.send_queued(&mut queue).await;
    }

    /// Sends `queue` (socket index, destination, datagram) in order, each run for one
    /// socket in as few calls as the kernel takes; a full socket buffer is awaited (the
    /// wire's own backpressure).
    async fn send_queued(&mut self, queue: &mut Vec<(usize, SocketAddr, BytesMut)>) {
        let mut start = 0;
        while start < queue.len() {
            let i = queue[start].0;
            let end = start + queue[start..].iter().take_while(|q| q.0 == i).count();
            let run = &queue[start..end];
            start = end;
            let Some(sock) = self.sockets.get(i).map(|s| s.sock.clone()) else {
                continue;
            };
            let out: Vec<(SocketAddr, &[u8])> =
                run.iter().map(|(_, to, d)| (*to, &d[..])).collect();
            let mut k = 0;
            while k < out.len() {
                match udp::send(sock.get_ref(), &out[k..]) {
                    Ok(n) => {
                        let bytes: usize = out[k..k + n].iter().map(|(_, d)| d.len()).sum();
                        stats::add(&stats::BYTES_SENT, bytes as u64);
                        k += n;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if let Err(e) = sock.writable().await {
                            log::debug!("[{}] ICE: socket {i}: {e}", self.name);
                            break;
                        }
                    }
                    Err(e) => {
                        let local = sock.get_ref().local_addr();
                        log::debug!("[{}] ICE: send {local:?} -> {}: {e}", self.name, out[k].0);
                        k += 1;
                    }
                }
            }
        }
        queue.clear();
    }

    /// Everything but a datagram to send.
    fn act(&mut self, out: IceOutput) {
        match out {
            IceOutput::Send(via, to, data) => self.send_now(via, to, data),
            IceOutput::Dtls(data) => self.dtls.push(DtlsMsg::Datagram(data)),
            IceOutput::Connected => self.dtls.push(DtlsMsg::IceConnected),
            #[cfg(feature = "media")]
            IceOutput::Media(data) => self
                .media
                .push(crate::media::actor::MediaMsg::Datagram(data)),
            #[cfg(feature = "media")]
            IceOutput::MediaClose => self.media.push(crate::media::actor::MediaMsg::Close),
            IceOutput::Report(r) => self.peer.push(PeerMsg::Ice(r)),
            IceOutput::Port(note) => self.tell_port(note),
            IceOutput::Resolve(idx, host_port) => self.resolve(idx, host_port),
            IceOutput::BindServerSocket { ip, server, addr } => {
                self.bind_server_socket(ip);
                self.engine
                    .server_socket_ready(Instant::now(), ip, *server, addr);
            }
            IceOutput::Connect { id, server, addr } => self.connect(id, *server, addr),
            IceOutput::EndStream(id) => {
                if let Some(Some(w)) = self.streams.get(id) {
                    w.close();
                }
            }
            IceOutput::Closed => self.sockets.clear(),
        }
    }

    /// Sends without waiting: a full socket or stream queue drops the datagram.
    fn send_now(&mut self, via: Via, to: SocketAddr, data: BytesMut) {
        match via {
            Via::Socket(i) => {
                if let Some(s) = self.sockets.get(i) {
                    match s.sock.get_ref().send_to(&data, to) {
                        Ok(n) => stats::add(&stats::BYTES_SENT, n as u64),
                        Err(e) => {
                            let local = s.sock.get_ref().local_addr();
                            log::debug!("[{}] ICE: send {local:?} -> {to}: {e}", self.name);
                        }
                    }
                }
            }
            Via::Stream(id) => {
                if let Some(Some(w)) = self.streams.get(id) {
                    stats::add(&stats::BYTES_SENT, data.len() as u64);
                    if w.try_send(data.freeze()).is_err() {
                        log::debug!("[{}] ICE: TURN stream {id} full; frame dropped", self.name);
                    }
                }
            }
        }
    }

    fn tell_port(&self, note: PortNote) {
        let (Some(port), Some(inbox)) = (&self.config.shared_port, self.me.upgrade()) else {
            return;
        };
        use super::port::MuxMsg;
        port.tell(match note {
            PortNote::Register {
                ufrag,
                pwd,
                remote_pwd,
                max_routes,
            } => MuxMsg::Register {
                ufrag,
                pwd,
                remote_pwd,
                max_routes,
                inbox,
            },
            PortNote::Checking { socket, remote } => MuxMsg::Checking {
                socket,
                remote,
                inbox,
            },
            PortNote::Selected { socket, remote } => MuxMsg::Selected {
                socket,
                remote,
                inbox,
            },
            PortNote::Unregister => MuxMsg::Unregister { inbox },
        });
    }

    fn resolve(&self, idx: usize, host_port: String) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        self.ex
            .spawn(async move {
                let result = smol::net::resolve(host_port.as_str())
                    .await
                    .map_err(|e| e.to_string());
                let _ = me.send(vec![IceMsg::Resolved(idx, result)]).await;
            })
            .detach();
    }

    /// A socket of our own on `ip` to reach servers from, beside a shared port (bound on
    /// first use: a shared port's 5-tuple to a server would be every connection's).
    fn bind_server_socket(&mut self, ip: IpAddr) {
        if self.engine.is_closed() || self.engine.server_socket_on(ip).is_some() {
            return;
        }
        if let Some((addr, sock)) = gather::bind(&[ip], None).pop() {
            let sock = Arc::new(sock);
            self.sockets.push(HostSocket {
                sock,
                shared: false,
            });
            let i = self.engine.add_socket(LocalSocket {
                addr,
                shared: false,
                servers_only: true,
            });
            debug_assert_eq!(i + 1, self.sockets.len());
        }
    }

    /// Starts TURN-over-TCP/TLS stream task `id`; what fails before it runs is its news.
    fn connect(&mut self, id: usize, server: IceServer, addr: SocketAddr) {
        debug_assert_eq!(id, self.streams.len());
        let started = self.stream_task(id, &server, addr);
        self.streams.push(started.as_ref().ok().cloned());
        if let Err(why) = started {
            self.engine
                .stream_news(Instant::now(), id, StreamNews::Down(why));
        }
    }

    fn stream_task(
        &self,
        id: usize,
        server: &IceServer,
        addr: SocketAddr,
    ) -> Result<Sender<Bytes>, String> {
        let tls = if server.transport == ServerTransport::Tls {
            let name = rustls_name(&server.host)?;
            let config = turn_stream::tls_config(&self.config.tls_roots)?;
            Some(turn_stream::Tls { config, name })
        } else {
            None
        };
        let me = self.me.upgrade().ok_or("closing")?;
        let (writes_tx, writes_rx) = async_channel::bounded(STREAM_QUEUE);
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
        Ok(writes_tx)
    }

    /// Shutdown step 4 (docs/ARCHITECTURE.md), the last: closes the engine and does at once
    /// what it asks (nothing waits: this is the end).
    fn close(&mut self, now: Instant) {
        self.engine.close(now);
        while let Some(out) = self.engine.poll_output() {
            self.act(out);
        }
    }
}

impl Actor for IceActor {
    type Msg = IceMsg;

    async fn drain(&mut self) {
        self.drain_engine().await;
        self.dtls.flush();
        #[cfg(feature = "media")]
        self.media.flush();
        self.peer.flush();
    }

    fn finished(&self) -> bool {
        self.engine.is_closed()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.engine.poll_timeout()
    }

    fn handle(&mut self, now: Instant, batch: Vec<IceMsg>) {
        for msg in batch {
            self.handle_msg(now, msg);
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
    }

    fn shutdown(&mut self, now: Instant) {
        self.close(now);
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

    fn on_extra(&mut self, now: Instant) {
        self.read_sockets(now);
    }
}

fn rustls_name(
    host: &str,
) -> Result<futures_rustls::rustls::pki_types::ServerName<'static>, String> {
    futures_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("bad TLS server name {host:?}: {e}"))
}
