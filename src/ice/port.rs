//! One UDP port for many peer connections, so a device needs one firewall hole.
//!
//! A [`SharedPort`] binds one socket per host address, all on the same port, and a small
//! demultiplexer task reads them. A datagram goes to the peer connection that owns its
//! (socket, remote address) route. A route is learned only once that address has proven it
//! holds the connection's ICE credentials, which the demultiplexer checks itself:
//! - a STUN Binding request whose USERNAME (`<our ufrag>:<their ufrag>`, RFC 8445 §7.2.2)
//!   names a registered connection and whose MESSAGE-INTEGRITY verifies with that
//!   connection's password;
//! - a Binding answer (success or error) from an address the connection has sent a check
//!   to, whose MESSAGE-INTEGRITY verifies with the peer's password;
//! - the connection's selected pair (its agent chose it after authenticating it).
//!
//! Why here and not in the agent (with the agent telling the demultiplexer what it
//! authenticated): a datagram that fails the check is dropped before it reaches any
//! session, so a flood naming a connection's ufrag from many addresses costs one HMAC each
//! in this task and leaves no state anywhere (no per-ufrag budget that the flood could use
//! up before the real peer's checks), and a route exists before its first datagram is
//! handed on, so the peer's first DTLS record never races a "learned" message. Connections
//! register their password (and their peer's, once known) for this; the agent checks every
//! request again itself.
//!
//! Bounds: a connection holds at most as many routes as its `max_remote_candidates` (each
//! authenticated address is a remote candidate to it, and it takes no more than that);
//! past it its oldest route is forgotten. All routes together are at most [`MAX_ROUTES`];
//! past it the connection holding the most routes loses its oldest. The route of a
//! connection's selected pair is never forgotten while it is selected, nor taken over by
//! another connection. A check naming a connection moves a route from an address to it
//! (a new peer connection from the address of an old one) unless that route is selected.
//! Anything else (an unknown address, a failed check) is dropped, so strangers never reach
//! a session. Peer connections send straight on the shared sockets.

use super::agent::IceMsg;
use super::engine::{check_stun, is_binding_request};
use super::gather::{self, HostPolicy};
use super::udp;
use crate::error::IceError;
use crate::runtime::Runtime;
use async_channel::{Receiver, Sender};
use async_io::Async;
use bytes::BytesMut;
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::task::Poll;

/// Most (socket, remote) routes at once, all connections together (bounded memory against
/// floods of valid checks from many addresses); beyond it the connection holding the most
/// routes forgets its oldest unselected one.
const MAX_ROUTES: usize = 4096;
/// Datagrams read per socket per wake-up.
const READ_BUDGET: usize = 256;

pub(crate) enum MuxMsg {
    /// Binding requests naming `ufrag` and authenticated with `pwd` (the connection's local
    /// credentials) are for `inbox`; answers from its peer are authenticated with
    /// `remote_pwd`. At most `max_routes` routes are kept for it. Sent again with new
    /// values (remote credentials known, ICE restart): they replace the old ones.
    Register {
        ufrag: String,
        pwd: String,
        remote_pwd: Option<String>,
        max_routes: usize,
        inbox: Sender<Vec<IceMsg>>,
    },
    /// `inbox`'s connection sent a check to `remote` from socket `socket`: an authenticated
    /// answer from there is its.
    Checking {
        socket: usize,
        remote: SocketAddr,
        inbox: Sender<Vec<IceMsg>>,
    },
    /// `inbox`'s connection selected the pair (socket `socket`, `remote`): its route is kept
    /// for as long as it stays selected.
    Selected {
        socket: usize,
        remote: SocketAddr,
        inbox: Sender<Vec<IceMsg>>,
    },
    /// Forget `inbox` and every route to it.
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
            let sock = Async::<UdpSocket>::bind(SocketAddr::new(ip, port)).map_err(|e| {
                IceError::Bind {
                    addr: SocketAddr::new(ip, port),
                    reason: e.to_string(),
                }
            })?;
            let addr = sock.get_ref().local_addr()?;
            port = addr.port();
            gather::grow_buffers(sock.get_ref(), addr);
            sockets.push((addr, Arc::new(sock)));
        }
        if sockets.is_empty() {
            return Err(IceError::NoAddress.into());
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

async fn demux(sockets: Arc<Vec<(SocketAddr, Arc<Async<UdpSocket>>)>>, inbox: Receiver<MuxMsg>) {
    let crypto = match crate::dtls::crypto_provider() {
        Ok(c) => c,
        Err(e) => {
            log::error!("ICE port: {e}; the shared port drops everything");
            return;
        }
    };
    let mut routes = Routes::new(MAX_ROUTES, crypto);
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
                udp::with_recv_batch(|batch| {
                    for (i, (_, sock)) in sockets.iter().enumerate() {
                        let mut read = 0;
                        while read < READ_BUDGET {
                            match batch.recv(sock.get_ref()) {
                                Ok(n) => read += n,
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                Err(e) => {
                                    log::debug!("ICE port: recv: {e}");
                                    break;
                                }
                            }
                            for (data, from) in batch.iter() {
                                let Some(to) = routes.route(i, from, data) else {
                                    continue;
                                };
                                let msg = IceMsg::PortDatagram {
                                    socket: i,
                                    from,
                                    data: BytesMut::from(data),
                                };
                                match batches.iter_mut().find(|(s, _)| s.same_channel(&to)) {
                                    Some((_, b)) => b.push(msg),
                                    None => batches.push((to, vec![msg])),
                                }
                            }
                        }
                    }
                });
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

/// A (socket index, remote address) pair: where a datagram came in and from whom.
type Key = (usize, SocketAddr);

/// One registered connection.
struct Owner {
    inbox: Sender<Vec<IceMsg>>,
    ufrag: String,
    pwd: String,
    remote_pwd: Option<String>,
    max_routes: usize,
    /// Its routes, oldest first.
    routes: VecDeque<Key>,
    /// Where it sent checks to, oldest first (at most `max_routes`).
    checked: VecDeque<Key>,
    selected: Option<Key>,
}

/// The demultiplexer's table (see the module docs for the rules it keeps).
pub(crate) struct Routes {
    owners: HashMap<u64, Owner>,
    next_id: u64,
    by_ufrag: HashMap<String, u64>,
    by_addr: HashMap<Key, u64>,
    /// Who checked an address (usually one connection; more if several peers gave it).
    checked: HashMap<Key, Vec<u64>>,
    max_routes: usize,
    /// HMAC-SHA1 for the MESSAGE-INTEGRITY checks.
    crypto: Arc<dyn rtc_dtls::crypto_provider::RTCCryptoProvider>,
    /// Last time a route could not be kept for want of room (warned at most once a minute).
    full_warned: Option<std::time::Instant>,
}

impl Routes {
    /// An empty table holding at most `max_routes` routes.
    pub(crate) fn new(
        max_routes: usize,
        crypto: Arc<dyn rtc_dtls::crypto_provider::RTCCryptoProvider>,
    ) -> Self {
        Self {
            owners: HashMap::new(),
            next_id: 0,
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            checked: HashMap::new(),
            max_routes: max_routes.max(1),
            crypto,
            full_warned: None,
        }
    }

    fn owner_of(&self, inbox: &Sender<Vec<IceMsg>>) -> Option<u64> {
        self.owners
            .iter()
            .find(|(_, o)| o.inbox.same_channel(inbox))
            .map(|(id, _)| *id)
    }

    pub(crate) fn apply(&mut self, msg: MuxMsg) {
        match msg {
            MuxMsg::Register {
                ufrag,
                pwd,
                remote_pwd,
                max_routes,
                inbox,
            } => self.register(ufrag, pwd, remote_pwd, max_routes, inbox),
            MuxMsg::Checking {
                socket,
                remote,
                inbox,
            } => self.checking((socket, remote), &inbox),
            MuxMsg::Selected {
                socket,
                remote,
                inbox,
            } => self.selected((socket, remote), &inbox),
            MuxMsg::Unregister { inbox } => self.forget(&inbox),
        }
    }

    /// The id of `inbox`'s owner, added (without credentials yet) if it is new.
    fn owner_or_new(&mut self, inbox: Sender<Vec<IceMsg>>) -> u64 {
        if let Some(id) = self.owner_of(&inbox) {
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.owners.insert(
            id,
            Owner {
                inbox,
                ufrag: String::new(),
                pwd: String::new(),
                remote_pwd: None,
                max_routes: 1,
                routes: VecDeque::new(),
                checked: VecDeque::new(),
                selected: None,
            },
        );
        id
    }

    /// [`MuxMsg::Register`]: (re)sets the owner's credentials and trims its routes and
    /// checked pairs to its new `max_routes`.
    fn register(
        &mut self,
        ufrag: String,
        pwd: String,
        remote_pwd: Option<String>,
        max_routes: usize,
        inbox: Sender<Vec<IceMsg>>,
    ) {
        let id = self.owner_or_new(inbox);
        let owner = self.owners.get_mut(&id).expect("just found");
        let old = std::mem::replace(&mut owner.ufrag, ufrag.clone());
        owner.pwd = pwd;
        owner.remote_pwd = remote_pwd;
        owner.max_routes = max_routes.max(1);
        if self.by_ufrag.get(&old) == Some(&id) {
            self.by_ufrag.remove(&old);
        }
        self.by_ufrag.insert(ufrag, id);
        while self.owners[&id].routes.len() > self.owners[&id].max_routes {
            if !self.evict_oldest(id) {
                break;
            }
        }
        let owner = self.owners.get_mut(&id).expect("found");
        let extra = owner.checked.len().saturating_sub(owner.max_routes);
        let gone: Vec<Key> = owner.checked.drain(..extra).collect();
        for key in gone {
            self.unchecked(key, id);
        }
    }

    /// [`MuxMsg::Checking`]: `inbox`'s connection checks `key`; the oldest of its checked
    /// pairs beyond `max_routes` is forgotten.
    fn checking(&mut self, key: Key, inbox: &Sender<Vec<IceMsg>>) {
        let Some(id) = self.owner_of(inbox) else {
            return;
        };
        let who = self.checked.entry(key).or_default();
        if who.contains(&id) {
            return;
        }
        who.push(id);
        let owner = self.owners.get_mut(&id).expect("found");
        owner.checked.push_back(key);
        if owner.checked.len() > owner.max_routes {
            let gone = owner.checked.pop_front().expect("not empty");
            self.unchecked(gone, id);
        }
    }

    /// [`MuxMsg::Selected`]: pins `key` as `inbox`'s selected route, giving up its previous
    /// one if that is what makes room.
    fn selected(&mut self, key: Key, inbox: &Sender<Vec<IceMsg>>) {
        let Some(id) = self.owner_of(inbox) else {
            return;
        };
        let mut pinned = self.learn(key, id);
        if !pinned {
            // Its previous selected route may be the one to give up for this one.
            let was = self.owners.get_mut(&id).expect("found").selected.take();
            pinned = was.is_some() && self.learn(key, id);
            if !pinned {
                // A failed learn changes nothing: the old route is still there.
                self.owners.get_mut(&id).expect("found").selected = was;
            }
        }
        if pinned {
            self.owners.get_mut(&id).expect("found").selected = Some(key);
        } else {
            let (socket, remote) = key;
            log::warn!(
                "ICE port: selected route {remote} (socket {socket}) is another \
                 connection's selected route or there is no room; not pinned"
            );
        }
    }

    /// Takes `id` off the checkers of `key`.
    fn unchecked(&mut self, key: Key, id: u64) {
        if let Some(who) = self.checked.get_mut(&key) {
            who.retain(|w| *w != id);
            if who.is_empty() {
                self.checked.remove(&key);
            }
        }
    }

    /// Forgets `id`'s oldest unselected route; false if it has none.
    fn evict_oldest(&mut self, id: u64) -> bool {
        let owner = self.owners.get_mut(&id).expect("an owner");
        let Some(at) = owner.routes.iter().position(|k| Some(*k) != owner.selected) else {
            return false;
        };
        let key = owner.routes.remove(at).expect("in range");
        self.by_addr.remove(&key);
        true
    }

    /// Routes `key` to `id` (an authenticated address), making room as the module docs
    /// say; false if it cannot (another connection's selected route, or no room).
    /// A learn that fails changes nothing.
    fn learn(&mut self, key: Key, id: u64) -> bool {
        let cur = self.by_addr.get(&key).copied();
        if cur == Some(id) {
            return true;
        }
        if cur.is_some_and(|c| self.owners[&c].selected == Some(key)) {
            return false;
        }
        let owner = &self.owners[&id];
        if owner.routes.len() >= owner.max_routes && !self.evict_oldest(id) {
            return self.no_room(key);
        }
        if let Some(c) = cur {
            // Moved from another connection: the count stays.
            let other = self.owners.get_mut(&c).expect("routes have owners");
            other.routes.retain(|k| *k != key);
            self.by_addr.remove(&key);
        } else if self.by_addr.len() >= self.max_routes {
            // The connection holding the most routes gives one up.
            let biggest = self
                .owners
                .iter()
                .filter(|(_, o)| o.routes.iter().any(|k| Some(*k) != o.selected))
                .max_by_key(|(_, o)| o.routes.len())
                .map(|(id, _)| *id);
            match biggest {
                Some(b) => {
                    self.evict_oldest(b);
                }
                None => return self.no_room(key),
            }
        }
        self.by_addr.insert(key, id);
        self.owners
            .get_mut(&id)
            .expect("an owner")
            .routes
            .push_back(key);
        true
    }

    fn no_room(&mut self, key: Key) -> bool {
        let now = std::time::Instant::now();
        if self
            .full_warned
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(60))
        {
            self.full_warned = Some(now);
            log::warn!(
                "ICE port: no room for a route to {} (the routes left are selected pairs'); \
                 only its authenticated checks are handed on",
                key.1
            );
        }
        false
    }

    /// Forgets the connection of `inbox` and everything routed to it.
    pub(crate) fn forget(&mut self, inbox: &Sender<Vec<IceMsg>>) {
        let Some(id) = self.owner_of(inbox) else {
            return;
        };
        let owner = self.owners.remove(&id).expect("found");
        if self.by_ufrag.get(&owner.ufrag) == Some(&id) {
            self.by_ufrag.remove(&owner.ufrag);
        }
        for key in &owner.routes {
            self.by_addr.remove(key);
        }
        for key in owner.checked {
            self.unchecked(key, id);
        }
    }

    /// Where a datagram from `from` on socket `socket` goes, if anywhere (learning its
    /// route when it authenticates).
    pub(crate) fn route(
        &mut self,
        socket: usize,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<Sender<Vec<IceMsg>>> {
        self.route_id(socket, from, data)
            .map(|id| self.owners[&id].inbox.clone())
    }

    fn route_id(&mut self, socket: usize, from: SocketAddr, data: &[u8]) -> Option<u64> {
        let key = (socket, from);
        let routed = self.by_addr.get(&key).copied();
        if is_binding_request(data) {
            if let Some(id) = binding_request_ufrag(data).and_then(|u| self.by_ufrag.get(u)) {
                let id = *id;
                if routed == Some(id) {
                    // Already proven; the agent checks this one itself.
                    return Some(id);
                }
                if !self.verify(data, &self.owners[&id].pwd) {
                    log::debug!("ICE port: check from {from} failed authentication: dropped");
                    return None;
                }
                self.learn(key, id);
                return Some(id);
            }
        }
        if routed.is_some() {
            return routed;
        }
        if is_binding_answer(data) {
            for &id in self.checked.get(&key).into_iter().flatten() {
                let owner = &self.owners[&id];
                if let Some(pwd) = &owner.remote_pwd {
                    if self.verify(data, pwd) {
                        self.learn(key, id);
                        return Some(id);
                    }
                }
            }
        }
        log::debug!("ICE port: datagram from unknown {from} dropped");
        None
    }

    fn verify(&self, data: &[u8], pwd: &str) -> bool {
        check_stun(data, None, pwd.as_bytes(), self.crypto.crypto()).is_ok()
    }

    /// Routes held now.
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// The connection `key` is routed to (its inbox), and whether it is that connection's
    /// selected route.
    pub(crate) fn lookup(&self, key: Key) -> Option<(Sender<Vec<IceMsg>>, bool)> {
        let id = self.by_addr.get(&key)?;
        let o = &self.owners[id];
        Some((o.inbox.clone(), o.selected == Some(key)))
    }

    /// Routes (and addresses checked) of the connection of `inbox`.
    pub(crate) fn counts(&self, inbox: &Sender<Vec<IceMsg>>) -> (usize, usize) {
        self.owner_of(inbox)
            .map(|id| {
                (
                    self.owners[&id].routes.len(),
                    self.owners[&id].checked.len(),
                )
            })
            .unwrap_or_default()
    }
}

/// A STUN Binding success or error response.
fn is_binding_answer(data: &[u8]) -> bool {
    data.len() >= 20
        && (data[0..2] == [0x01, 0x01] || data[0..2] == [0x01, 0x11])
        && data[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

/// The local ufrag of a STUN Binding request's USERNAME (`<ours>:<theirs>`), read without
/// decoding the whole message (the integrity is checked next).
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

    /// The routing table's properties (see [`crate::fuzzing::shared_port_routes`]) over
    /// random sequences of registrations, checks, selections and datagrams; the
    /// `single_port_routes` fuzz target explores further.
    #[test]
    fn routing_table_properties_hold_for_random_sequences() {
        for seed in 0..300 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let len = rng.usize(16..2000);
            let input: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            crate::fuzzing::shared_port_routes(&input);
        }
    }

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
