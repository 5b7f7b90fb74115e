//! The wiring of one peer connection: every actor's inbox, the links between them, and
//! the actors spawned on the smolrtc thread.
//!
//! ```text
//!            ┌──────────────── reports (PeerMsg) ────────────────┐
//!            ▼                                                    │
//!   handles ─► peer ─► ICE ◄──► DTLS ◄──► SCTP ─► router (data, ctl) ─► events ─► app
//!                      ▲                         ▲
//!                      └ sockets                  └ channel commands (DataChannel handles)
//! ```
//!
//! Media (feature `media`, issue 16): a media actor with its own inbox, fed by the ICE
//! agent with the datagrams RFC 7983 gives to (S)RTP (first byte 128–191 from a validated
//! address), keyed by the DTLS actor's DTLS-SRTP export once the handshake is done, given
//! its tracks by the peer actor (the answer plan) and its frames by the stream's task
//! (`try_send` on the inbox), and sending its packets through ICE like DTLS does.

use super::actor::{self, PeerActor, PeerMsg};
use super::{Config, Event};
use crate::channel::dcep::Caps;
use crate::channel::router::{Limits, Router, RouterCtl, RouterMsg, DEFAULT_MAX_CHANNELS};
use crate::channel::{
    ChannelCmd, SendBudget, DEFAULT_MAX_CHANNEL_LABEL, DEFAULT_MAX_CHANNEL_PROTOCOL,
};
use crate::dtls::{Certificate, DtlsActor, DtlsMsg};
use crate::error::Result;
use crate::ice::{IceActor, IceMsg};
use crate::runtime::{self, Link, Runtime, APP_BATCH, APP_BATCHES, INBOX_BATCHES};
use crate::sctp::{SctpActor, SctpMsg};
use async_channel::{Receiver, Sender};
use smol::LocalExecutor;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::Arc;

/// What the handles keep of a spawned pipeline.
pub(super) struct Handles {
    pub(super) peer: Sender<Vec<PeerMsg>>,
    pub(super) channel_cmds: Sender<Vec<ChannelCmd>>,
    pub(super) events: Receiver<Vec<Event>>,
    pub(super) next_key: Arc<AtomicU32>,
    pub(super) max_message_size: Arc<AtomicUsize>,
    pub(super) budget: Arc<SendBudget>,
    pub(super) dcep_caps: Caps,
    /// The media actor's inbox (frames in).
    #[cfg(feature = "media")]
    pub(super) media: Sender<Vec<crate::media::actor::MediaMsg>>,
    #[cfg(feature = "media")]
    pub(super) events_tx: Sender<Vec<Event>>,
}

/// One bounded inbox: its senders are handed out as links, its receiver to the actor.
struct Inbox<T> {
    tx: Sender<Vec<T>>,
    rx: Receiver<Vec<T>>,
}

impl<T: 'static> Inbox<T> {
    fn new(batches: usize) -> Self {
        let (tx, rx) = async_channel::bounded(batches);
        Self { tx, rx }
    }

    fn link(&self) -> Link<T> {
        Link::new(self.tx.clone())
    }

    /// A link whose batches hold at most `batch` items (app-ward hops, see runtime).
    fn link_batched(&self, batch: usize) -> Link<T> {
        Link::with_batch(self.tx.clone(), batch)
    }
}

/// Every inbox of one connection, made before any actor so each can get its neighbours.
struct Inboxes {
    peer: Inbox<PeerMsg>,
    ice: Inbox<IceMsg>,
    dtls: Inbox<DtlsMsg>,
    sctp: Inbox<SctpMsg>,
    /// SCTP → router: whole messages (short: a slow application closes SCTP's window).
    router: Inbox<RouterMsg>,
    /// SCTP → router: released bytes and the association's end, read even when backlogged.
    router_ctl: Inbox<RouterCtl>,
    /// `DataChannel` handles → router.
    cmds: Inbox<ChannelCmd>,
    /// Router and peer actor → the application.
    events: Inbox<Event>,
    /// Streams' frames, ICE's SRTP datagrams, DTLS's keys → the media actor.
    #[cfg(feature = "media")]
    media: Inbox<crate::media::actor::MediaMsg>,
}

impl Inboxes {
    fn new() -> Self {
        Self {
            peer: Inbox::new(INBOX_BATCHES),
            ice: Inbox::new(INBOX_BATCHES),
            dtls: Inbox::new(INBOX_BATCHES),
            sctp: Inbox::new(INBOX_BATCHES),
            router: Inbox::new(APP_BATCHES),
            router_ctl: Inbox::new(INBOX_BATCHES),
            cmds: Inbox::new(INBOX_BATCHES),
            events: Inbox::new(APP_BATCHES),
            #[cfg(feature = "media")]
            media: Inbox::new(INBOX_BATCHES),
        }
    }
}

/// What the handles and the router share (the next channel key, the peer's
/// max-message-size, the send budget, DCEP's caps).
struct Shared {
    next_key: Arc<AtomicU32>,
    max_message_size: Arc<AtomicUsize>,
    budget: Arc<SendBudget>,
    dcep: Caps,
}

/// The connection's identity: its certificate and its first ICE credentials.
struct Identity {
    certificate: Certificate,
    ufrag: String,
    pwd: String,
}

/// Makes a connection's inboxes and spawns its five actors (six with media) on `runtime`.
pub(super) fn spawn(runtime: &Runtime, config: Config) -> Result<Handles> {
    let certificate = match &config.certificate {
        Some(c) => c.clone(),
        None => Certificate::generate()?,
    };
    let (ufrag, pwd) = actor::ice_credentials()?;
    let me = Identity {
        certificate,
        ufrag,
        pwd,
    };
    let inboxes = Inboxes::new();
    let handles = Handles::new(&config, &inboxes);
    let shared = Shared {
        next_key: handles.next_key.clone(),
        max_message_size: handles.max_message_size.clone(),
        budget: handles.budget.clone(),
        dcep: handles.dcep_caps,
    };
    runtime.spawn_actors(move |ex| {
        let tag: Arc<str> = Arc::from(config.name.as_str());
        let ice_ok = spawn_ice(ex, &inboxes, &config, &tag, &me);
        spawn_dtls_and_media(ex, &inboxes, &tag, &me);
        spawn_sctp_and_router(ex, &inboxes, &config, tag, shared);
        spawn_peer(ex, &inboxes, config, me, ice_ok);
    });
    Ok(handles)
}

/// `n`, or `default` where `n` is 0 (a setting left at 0 means "the default").
fn or(n: usize, default: usize) -> usize {
    if n == 0 {
        default
    } else {
        n
    }
}

impl Handles {
    fn new(config: &Config, i: &Inboxes) -> Self {
        Self {
            peer: i.peer.tx.clone(),
            channel_cmds: i.cmds.tx.clone(),
            events: i.events.rx.clone(),
            next_key: Arc::new(AtomicU32::new(1)),
            max_message_size: Arc::new(AtomicUsize::new(0)),
            budget: Arc::new(SendBudget::new(
                config.sctp.send_buffer_per_channel,
                config.sctp.send_buffer_per_connection,
            )),
            dcep_caps: Caps {
                label: or(config.max_channel_label, DEFAULT_MAX_CHANNEL_LABEL),
                protocol: or(config.max_channel_protocol, DEFAULT_MAX_CHANNEL_PROTOCOL),
            },
            #[cfg(feature = "media")]
            media: i.media.tx.clone(),
            #[cfg(feature = "media")]
            events_tx: i.events.tx.clone(),
        }
    }
}

/// The ICE agent; false if it could not be made (the peer actor then fails the connection).
fn spawn_ice(
    ex: &Rc<LocalExecutor<'static>>,
    i: &Inboxes,
    config: &Config,
    tag: &Arc<str>,
    me: &Identity,
) -> bool {
    let ice = IceActor::new(
        tag.clone(),
        config.ice.clone(),
        me.ufrag.clone(),
        me.pwd.clone(),
        i.dtls.link(),
        #[cfg(feature = "media")]
        i.media.link(),
        i.peer.link(),
        &i.ice.tx,
        ex.clone(),
    );
    match ice {
        Ok(ice) => {
            ex.spawn(runtime::drive(ice, i.ice.rx.clone())).detach();
            true
        }
        Err(e) => {
            log::error!("[{tag}] ICE agent: {e}");
            false
        }
    }
}

/// The DTLS transport, and the media actor it keys (feature `media`).
fn spawn_dtls_and_media(
    ex: &Rc<LocalExecutor<'static>>,
    i: &Inboxes,
    tag: &Arc<str>,
    me: &Identity,
) {
    let dtls = DtlsActor::new(
        tag.clone(),
        me.certificate.clone(),
        i.ice.link(),
        i.sctp.link(),
        #[cfg(feature = "media")]
        i.media.link(),
        i.peer.link(),
    );
    ex.spawn(runtime::drive(dtls, i.dtls.rx.clone())).detach();
    #[cfg(feature = "media")]
    {
        let media = crate::media::actor::MediaActor::new(tag.clone(), i.ice.link());
        ex.spawn(runtime::drive(media, i.media.rx.clone())).detach();
    }
}

/// The SCTP association and the channel router above it.
fn spawn_sctp_and_router(
    ex: &Rc<LocalExecutor<'static>>,
    i: &Inboxes,
    config: &Config,
    tag: Arc<str>,
    shared: Shared,
) {
    let sctp = SctpActor::new(
        tag.clone(),
        config.sctp.clone(),
        i.router.link_batched(APP_BATCH),
        i.router_ctl.link(),
        i.dtls.link(),
        i.peer.link(),
    );
    ex.spawn(runtime::drive(sctp, i.sctp.rx.clone())).detach();
    let router = Router::new(
        tag,
        i.sctp.link(),
        i.events.link_batched(APP_BATCH),
        i.cmds.tx.clone(),
        shared.next_key,
        shared.max_message_size,
        Limits {
            max_channels: or(config.max_channels, DEFAULT_MAX_CHANNELS),
            local_max_message_size: config.sctp.max_message_size,
            budget: shared.budget,
            dcep: shared.dcep,
        },
    );
    ex.spawn(router.run(
        i.router.rx.clone(),
        i.router_ctl.rx.clone(),
        i.cmds.rx.clone(),
    ))
    .detach();
}

/// The peer actor, which orders the others.
fn spawn_peer(
    ex: &Rc<LocalExecutor<'static>>,
    i: &Inboxes,
    config: Config,
    me: Identity,
    ice_ok: bool,
) {
    let fingerprint = me.certificate.fingerprint().clone();
    let peer = PeerActor::new(
        config.name.clone(),
        config,
        fingerprint,
        me.ufrag,
        me.pwd,
        ice_ok,
        i.ice.link(),
        i.dtls.link(),
        i.sctp.link(),
        #[cfg(feature = "media")]
        (i.media.link(), i.media.tx.clone()),
        i.events.link(),
    );
    ex.spawn(runtime::drive(peer, i.peer.rx.clone())).detach();
}
