//! Entry points for the fuzz targets in `fuzz/` (hidden; not a stable API).
//!
//! Everything the fuzzers reach through the public API is used that way; this module only
//! opens the crate-internal parsers that have no public door.

use crate::channel::{dcep, ChannelInit};
use crate::sctp::reset_gate::{ResetGate, MAX_HOLD};
use crate::sctp::send_queue::SendQueue;
use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};

/// A DCEP message as [`dcep_parse`] read it.
#[derive(Debug, PartialEq, Eq)]
pub enum DcepMessage {
    /// DATA_CHANNEL_OPEN: the label and the channel's options.
    Open {
        /// The channel label.
        label: String,
        /// Ordering, reliability and protocol (never `negotiated`).
        init: ChannelInit,
    },
    /// DATA_CHANNEL_ACK.
    Ack,
}

/// Parses one DCEP message (the payload of an SCTP message with PPI 50), as the channel
/// router does.
pub fn dcep_parse(data: &[u8]) -> Result<DcepMessage, String> {
    Ok(
        match dcep::parse(data, dcep::Caps::default()).map_err(|e| e.to_string())? {
            dcep::Dcep::Open { label, init } => DcepMessage::Open { label, init },
            dcep::Dcep::Ack => DcepMessage::Ack,
        },
    )
}

/// The DATA_CHANNEL_OPEN the router sends for a channel.
pub fn dcep_open(label: &str, init: &ChannelInit) -> Bytes {
    dcep::open(label, init)
}

/// The DATA_CHANNEL_ACK the router sends.
pub fn dcep_ack() -> Bytes {
    dcep::ack()
}

/// The SCTP actor's own readers of decrypted SCTP packets (the stream-reset gate and the
/// send queue's SACK / DATA / FORWARD TSN scans), fed packets as a peer would send them and
/// as rtc-sctp would: what a signaled but hostile peer reaches below rtc-sctp.
#[derive(Default)]
pub struct SctpPackets {
    gate: ResetGate,
    queue: SendQueue,
}

impl SctpPackets {
    /// A packet from the peer: what goes on to the association now (the packet, or it
    /// without the reset requests held back).
    pub fn from_peer(&mut self, now: Instant, p: &[u8]) -> Option<Vec<u8>> {
        self.queue.received_packet(p);
        self.gate
            .incoming(now, BytesMut::from(p))
            .map(|b| b.to_vec())
    }

    /// A packet the association sends.
    pub fn to_peer(&mut self, now: Instant, p: &[u8]) {
        self.gate.outgoing(now, p, Duration::from_millis(300));
        self.queue.sent_packet(p);
    }

    /// Held requests due at `now` and our requests to resend: how many packets.
    pub fn timers(&mut self, now: Instant) -> usize {
        self.gate.due(now).len() + self.gate.resend(now, Duration::from_millis(300)).len()
    }

    /// Reset requests from the peer held now.
    pub fn held(&self) -> usize {
        self.gate.held()
    }

    /// How long a request may be held.
    pub const MAX_HOLD: Duration = MAX_HOLD;
}

/// The single-port demultiplexer's routing table ([`crate::ice::SharedPort`]) driven by
/// `input`: registrations (and re-registrations with new credentials, as an ICE restart
/// makes), checks sent, selected pairs, unregistrations, and datagrams from a small set of
/// addresses on two sockets (checks authenticated with a session's password or not,
/// answers authenticated with its peer's, DTLS-looking and raw bytes), on a table of at
/// most 8 routes. Panics when one of these fails:
/// - a datagram goes to a session only from an address that session has authenticated
///   (a check with its password, an answer with its peer's from where it sent a check, or
///   its own selected pair);
/// - at most 8 routes in all, and no session over its own `max_routes` (routes and
///   addresses checked);
/// - a session's selected route stays routed to it, as selected, until it selects another
///   or unregisters.
pub fn shared_port_routes(input: &[u8]) {
    port_model::run(input)
}

mod port_model {
    use crate::ice::port::{MuxMsg, Routes};
    use crate::ice::IceMsg;
    use async_channel::{Receiver, Sender};
    use rtc_stun::attributes::{AttrType, ATTR_USERNAME};
    use rtc_stun::message::{Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
    use std::collections::{HashMap, HashSet};
    use std::net::SocketAddr;

    const SLOTS: usize = 4;
    const MAX_ROUTES: usize = 8;
    type Key = (usize, SocketAddr);

    struct Session {
        inbox: Sender<Vec<IceMsg>>,
        _rx: Receiver<Vec<IceMsg>>,
        generation: u32,
        max_routes: usize,
        remote_known: bool,
        /// Addresses this session has authenticated (what may be routed to it).
        proven: HashSet<Key>,
        /// Addresses it sent checks to.
        checked: HashSet<Key>,
        pinned: Option<Key>,
    }

    fn creds(slot: usize, generation: u32) -> (String, String, String) {
        (
            format!("uf{slot}g{generation}"),
            format!("local-password-{slot}-{generation}-xxxxxx"),
            format!("remote-password-{slot}-{generation}-xxxxx"),
        )
    }

    struct Raw(AttrType, Vec<u8>);
    impl Setter for Raw {
        fn add_to(&self, m: &mut Message) -> rtc_shared::error::Result<()> {
            m.add(self.0, &self.1);
            Ok(())
        }
    }

    /// A Binding request (`answer`: success response) with USERNAME `username` and a
    /// MESSAGE-INTEGRITY keyed with `key`.
    fn stun(answer: bool, username: &str, key: &str) -> Vec<u8> {
        let provider = crate::dtls::crypto_provider().expect("crypto");
        let mut m = Message::new();
        let kind = if answer {
            BINDING_SUCCESS
        } else {
            BINDING_REQUEST
        };
        m.build(&[
            Box::new(kind),
            Box::new(TransactionId::new()),
            Box::new(Raw(ATTR_USERNAME, username.as_bytes().to_vec())),
            Box::new(
                rtc_stun::integrity::MessageIntegrity::new_short_term_integrity_with_provider(
                    key.to_owned(),
                    provider.crypto(),
                ),
            ),
        ])
        .expect("a STUN message");
        m.raw
    }

    /// The port under test and the sessions the model expects it to serve.
    struct Model {
        routes: Routes,
        sessions: HashMap<usize, Session>,
        generations: [u32; SLOTS],
    }

    /// The route key an input byte names: one of 2 sockets, 24 remote ports.
    fn key(b: u8) -> Key {
        (
            (b & 1) as usize,
            SocketAddr::from(([127, 0, 0, 1], 1000 + (b >> 1) as u16 % 24)),
        )
    }

    impl Model {
        /// Register (again: new credentials, as after an ICE restart).
        fn register(&mut self, slot: usize, arg: u8) {
            let max_routes = 1 + (arg as usize >> 2) % 4;
            let with_remote = arg & 0x40 != 0;
            self.generations[slot] += 1;
            let generation = self.generations[slot];
            let (ufrag, pwd, remote) = creds(slot, generation);
            let s = self.sessions.entry(slot).or_insert_with(|| {
                let (inbox, rx) = async_channel::bounded(1);
                Session {
                    inbox,
                    _rx: rx,
                    generation,
                    max_routes,
                    remote_known: false,
                    proven: HashSet::new(),
                    checked: HashSet::new(),
                    pinned: None,
                }
            });
            s.generation = generation;
            s.max_routes = max_routes;
            s.remote_known = with_remote;
            self.routes.apply(MuxMsg::Register {
                ufrag,
                pwd,
                remote_pwd: with_remote.then_some(remote),
                max_routes,
                inbox: s.inbox.clone(),
            });
        }

        fn checking(&mut self, slot: usize, k: Key) {
            if let Some(s) = self.sessions.get_mut(&slot) {
                s.checked.insert(k);
                self.routes.apply(MuxMsg::Checking {
                    socket: k.0,
                    remote: k.1,
                    inbox: s.inbox.clone(),
                });
            }
        }

        /// An agent selects only pairs it authenticated.
        fn select(&mut self, slot: usize, pick: u8) {
            let Some(s) = self.sessions.get_mut(&slot) else {
                return;
            };
            let mut proven: Vec<Key> = s.proven.iter().copied().collect();
            proven.sort();
            if proven.is_empty() {
                return;
            }
            let k = proven[pick as usize % proven.len()];
            self.routes.apply(MuxMsg::Selected {
                socket: k.0,
                remote: k.1,
                inbox: s.inbox.clone(),
            });
            match self.routes.lookup(k) {
                Some((to, true)) if to.same_channel(&s.inbox) => s.pinned = Some(k),
                // Not pinned (another session's selected route, or no room): the previous
                // pin stays.
                _ => {}
            }
        }

        fn unregister(&mut self, slot: usize) {
            if let Some(s) = self.sessions.remove(&slot) {
                self.routes.apply(MuxMsg::Unregister { inbox: s.inbox });
            }
        }

        /// A datagram of `kind` (4: an authenticated check, 5: a check with a wrong
        /// password, 6: an answer, 7: DTLS, else: bytes from the input) from `k`; `None`
        /// when the input ends.
        fn datagram(
            &mut self,
            slot: usize,
            kind: u8,
            next: &mut impl FnMut() -> Option<u8>,
        ) -> Option<()> {
            let k = key(next()?);
            let generation = self
                .sessions
                .get(&slot)
                .map_or(self.generations[slot], |s| s.generation);
            let (ufrag, pwd, remote) = creds(slot, generation);
            let data = match kind {
                4 => stun(false, &format!("{ufrag}:peer"), &pwd),
                5 => stun(
                    false,
                    &format!("{ufrag}:peer"),
                    "some-other-password-xxxxxx",
                ),
                6 => stun(true, "", &remote),
                7 => vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
                _ => {
                    let n = next().unwrap_or(0) as usize % 64;
                    (0..n).map_while(|_| next()).collect()
                }
            };
            // What this datagram proves, before it is routed.
            if let Some(s) = self.sessions.get_mut(&slot) {
                if kind == 4 || (kind == 6 && s.remote_known && s.checked.contains(&k)) {
                    s.proven.insert(k);
                }
            }
            if let Some(to) = self.routes.route(k.0, k.1, &data) {
                let (owner, s) = self
                    .sessions
                    .iter()
                    .find(|(_, s)| s.inbox.same_channel(&to))
                    .expect("routed to a registered session");
                assert!(
                    s.proven.contains(&k),
                    "{k:?} routed to session {owner}, which never authenticated it"
                );
            }
            Some(())
        }

        /// The properties of [`super::shared_port_routes`], after every step.
        fn check(&self) {
            let routes = &self.routes;
            assert!(routes.len() <= MAX_ROUTES, "{} routes", routes.len());
            for (slot, s) in &self.sessions {
                let (held, checked) = routes.counts(&s.inbox);
                assert!(held <= s.max_routes, "session {slot}: {held} routes");
                assert!(checked <= s.max_routes, "session {slot}: {checked} checked");
                if let Some(k) = s.pinned {
                    match routes.lookup(k) {
                        Some((to, true)) if to.same_channel(&s.inbox) => {}
                        other => panic!(
                            "session {slot}'s selected route {k:?} was lost: {:?}",
                            other.map(|(_, pinned)| pinned)
                        ),
                    }
                }
            }
        }
    }

    pub(super) fn run(input: &[u8]) {
        let provider = crate::dtls::crypto_provider().expect("crypto");
        let mut model = Model {
            routes: Routes::new(MAX_ROUTES, provider),
            sessions: HashMap::new(),
            generations: [0; SLOTS],
        };
        let mut bytes = input.iter().copied();
        let mut next = move || bytes.next();
        while let Some(op) = next() {
            let Some(arg) = next() else { break };
            let slot = arg as usize % SLOTS;
            // Datagrams (authenticated checks most) more often than the other events.
            let kind = match op % 16 {
                0 | 1 => 0,
                2 | 3 => 1,
                4 | 5 => 2,
                6 => 3,
                7..=10 => 4,
                11 => 5,
                12 | 13 => 6,
                14 => 7,
                _ => 8,
            };
            let more = match kind {
                0 => {
                    model.register(slot, arg);
                    Some(())
                }
                1 => next().map(|b| model.checking(slot, key(b))),
                2 => next().map(|pick| model.select(slot, pick)),
                3 => {
                    model.unregister(slot);
                    Some(())
                }
                kind => model.datagram(slot, kind, &mut next),
            };
            if more.is_none() {
                break;
            }
            model.check();
        }
    }
}
