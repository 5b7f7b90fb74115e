//! One UDP port for many peer connections, so a device needs one firewall hole.
//!
//! A [`SharedPort`] binds one socket per host address, all on the same port, and a small
//! demultiplexer task reads them. A datagram goes to the peer connection that owns its
//! (socket, remote address) route. Routes are learned two ways:
//! - from a STUN Binding request whose USERNAME (`<our ufrag>:<their ufrag>`, RFC 8445
//!   §7.2.2) names a registered connection;
//! - from the connection itself when it first sends to an address (so answers to its own
//!   checks find their way back).
//!
//! Anything else (an unknown address with no valid USERNAME) is dropped, so strangers never
//! reach a session. Peer connections send straight on the shared sockets.

use super::agent::IceMsg;
use super::gather::{self, HostPolicy};
use crate::runtime::Runtime;
use async_channel::{Receiver, Sender};
use async_io::Async;
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::task::Poll;

/// Most (socket, remote) routes at once; beyond it, the oldest learned are forgotten
/// (bounded memory against spoofed STUN floods that carry a valid ufrag).
const MAX_ROUTES: usize = 4096;
/// Datagrams read per socket per wake-up.
const READ_BUDGET: usize = 256;

pub(crate) enum MuxMsg {
    /// Datagrams whose STUN USERNAME starts with `ufrag:` go to `inbox`.
    Register {
        ufrag: String,
        inbox: Sender<Vec<IceMsg>>,
    },
    /// Datagrams from `remote` on socket `socket` go to `inbox`.
    Learn {
        socket: usize,
        remote: SocketAddr,
        inbox: Sender<Vec<IceMsg>>,
    },
    /// Forget every route to `inbox`.
    Unregister { inbox: Sender<Vec<IceMsg>> },
}

/// A UDP port shared by every peer connection configured with it (see the module docs).
/// Cheap to clone; the sockets close when the last clone and the last connection using it
/// are gone.
#[derive(Clone)]
pub struct SharedPort {
    sockets: Arc<Vec<(SocketAddr, Arc<Async<UdpSocket>>)>>,
    mux: Sender<MuxMsg>,
}

impl std::fmt::Debug for SharedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<_> = self.sockets.iter().map(|(a, _)| a).collect();
        write!(f, "SharedPort({addrs:?})")
    }
}

impl SharedPort {
    /// Binds `port` on every address `hosts` selects (`hosts.ports` is ignored) and starts
    /// the demultiplexer on `runtime`. Port 0 picks one free port and uses it on every
    /// address.
    pub fn bind(runtime: &Runtime, hosts: &HostPolicy, port: u16) -> crate::Result<Self> {
        let addresses = gather::host_addresses(hosts);
        let mut sockets = Vec::new();
        let mut port = port;
        for ip in addresses {
            let sock = Async::<UdpSocket>::bind(SocketAddr::new(ip, port))
                .map_err(|e| crate::Error::Ice(format!("cannot bind {ip} port {port}: {e}")))?;
            let addr = sock.get_ref().local_addr()?;
            port = addr.port();
            gather::grow_buffers(sock.get_ref(), addr);
            sockets.push((addr, Arc::new(sock)));
        }
        if sockets.is_empty() {
            return Err(crate::Error::Ice("no address to bind".into()));
        }
        log::info!(
            "ICE: one UDP port for every peer connection: {:?}",
            sockets.iter().map(|(a, _)| *a).collect::<Vec<_>>()
        );
        let (mux, inbox) = async_channel::bounded(crate::runtime::INBOX_BATCHES);
        let sockets = Arc::new(sockets);
        let for_task = sockets.clone();
        runtime.spawn(move || demux(for_task, inbox));
        Ok(Self { sockets, mux })
    }

    /// The bound addresses (one per host address, one port).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|(a, _)| *a).collect()
    }

    pub(crate) fn sockets(&self) -> &[(SocketAddr, Arc<Async<UdpSocket>>)] {
        &self.sockets
    }

    pub(crate) fn tell(&self, msg: MuxMsg) {
        // Registration must not be lost: the queue is short-lived and rarely full, but a
        // full one is waited for off the caller's path.
        if let Err(async_channel::TrySendError::Full(msg)) = self.mux.try_send(msg) {
            let mux = self.mux.clone();
            std::thread::spawn(move || {
                let _ = mux.send_blocking(msg);
            });
        }
    }
}

struct Routes {
    by_ufrag: HashMap<String, Sender<Vec<IceMsg>>>,
    by_addr: HashMap<(usize, SocketAddr), Sender<Vec<IceMsg>>>,
}

async fn demux(sockets: Arc<Vec<(SocketAddr, Arc<Async<UdpSocket>>)>>, inbox: Receiver<MuxMsg>) {
    let mut routes = Routes {
        by_ufrag: HashMap::new(),
        by_addr: HashMap::new(),
    };
    let mut buf = vec![0u8; 2048];
    loop {
        enum Wake {
            Msg(Option<MuxMsg>),
            Readable,
        }
        let wake = futures_lite::future::poll_fn(|cx| {
            if let Poll::Ready(m) = std::pin::pin!(inbox.recv()).poll(cx) {
                return Poll::Ready(Wake::Msg(m.ok()));
            }
            for (_, s) in sockets.iter() {
                if s.poll_readable(cx).is_ready() {
                    return Poll::Ready(Wake::Readable);
                }
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Msg(None) => return,
            Wake::Msg(Some(msg)) => routes.apply(msg),
            Wake::Readable => {
                let mut batches: Vec<(Sender<Vec<IceMsg>>, Vec<IceMsg>)> = Vec::new();
                for (i, (_, sock)) in sockets.iter().enumerate() {
                    for _ in 0..READ_BUDGET {
                        match sock.get_ref().recv_from(&mut buf) {
                            Ok((n, from)) => {
                                let Some(to) = routes.route(i, from, &buf[..n]) else {
                                    log::debug!("ICE port: datagram from unknown {from} dropped");
                                    continue;
                                };
                                let msg = IceMsg::PortDatagram {
                                    socket: i,
                                    from,
                                    data: BytesMut::from(&buf[..n]),
                                };
                                match batches.iter_mut().find(|(s, _)| s.same_channel(&to)) {
                                    Some((_, b)) => b.push(msg),
                                    None => batches.push((to, vec![msg])),
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                log::debug!("ICE port: recv: {e}");
                                break;
                            }
                        }
                    }
                }
                for (to, batch) in batches {
                    // A full inbox drops the batch, as a full socket buffer would.
                    if let Err(async_channel::TrySendError::Closed(_)) = to.try_send(batch) {
                        routes.forget(&to);
                    }
                }
            }
        }
    }
}

use std::future::Future;

impl Routes {
    fn apply(&mut self, msg: MuxMsg) {
        match msg {
            MuxMsg::Register { ufrag, inbox } => {
                self.by_ufrag.insert(ufrag, inbox);
            }
            MuxMsg::Learn {
                socket,
                remote,
                inbox,
            } => self.learn(socket, remote, inbox),
            MuxMsg::Unregister { inbox } => self.forget(&inbox),
        }
    }

    fn learn(&mut self, socket: usize, remote: SocketAddr, inbox: Sender<Vec<IceMsg>>) {
        if self.by_addr.len() >= MAX_ROUTES && !self.by_addr.contains_key(&(socket, remote)) {
            // Drop routes of closed connections first, then an arbitrary one.
            self.by_addr.retain(|_, s| !s.is_closed());
            if self.by_addr.len() >= MAX_ROUTES {
                let k = *self.by_addr.keys().next().expect("not empty");
                self.by_addr.remove(&k);
            }
        }
        self.by_addr.insert((socket, remote), inbox);
    }

    fn forget(&mut self, inbox: &Sender<Vec<IceMsg>>) {
        self.by_ufrag.retain(|_, s| !s.same_channel(inbox));
        self.by_addr.retain(|_, s| !s.same_channel(inbox));
    }

    fn route(
        &mut self,
        socket: usize,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<Sender<Vec<IceMsg>>> {
        if let Some(s) = self.by_addr.get(&(socket, from)) {
            return Some(s.clone());
        }
        let ufrag = binding_request_ufrag(data)?;
        let to = self.by_ufrag.get(ufrag)?.clone();
        self.learn(socket, from, to.clone());
        Some(to)
    }
}

/// The local ufrag of a STUN Binding request's USERNAME (`<ours>:<theirs>`), read without
/// decoding the whole message; the ICE agent checks the integrity afterwards.
fn binding_request_ufrag(data: &[u8]) -> Option<&str> {
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const USERNAME: u16 = 0x0006;
    if data.len() < 20 || data[0..2] != [0x00, 0x01] || data[4..8] != MAGIC {
        return None;
    }
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let body = data.get(20..20 + len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let alen = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + alen)?;
        if typ == USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next();
        }
        at += 4 + ((alen + 3) & !3);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::binding_request_ufrag;

    fn request(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn ufrag_from_username() {
        let m = request(&[(0x0024, &[0, 0, 0, 1]), (0x0006, b"abcd:wxyz")]);
        assert_eq!(binding_request_ufrag(&m), Some("abcd"));
        // Not a Binding request, truncated, or no USERNAME: no route.
        let mut resp = m.clone();
        resp[0..2].copy_from_slice(&[0x01, 0x01]);
        assert_eq!(binding_request_ufrag(&resp), None);
        assert_eq!(binding_request_ufrag(&m[..m.len() - 4]), None);
        assert_eq!(binding_request_ufrag(&request(&[(0x0024, &[0; 4])])), None);
        assert_eq!(binding_request_ufrag(&[0x17, 0xfe, 0xfd]), None);
    }
}
