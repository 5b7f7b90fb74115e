//! The channel router actor: maps data channels onto SCTP streams.
//!
//! It owns the channel table. Stream ids follow RFC 8832 §6: the DTLS client takes even ids,
//! the server odd ones; channels created before SCTP is up wait for it. In-band channels open
//! with DCEP OPEN/ACK on PPI 50; negotiated ones open as soon as SCTP does. Close is an SCTP
//! stream reset (RFC 8831 §6.7), never a DCEP message.
//!
//! Three inboxes: messages from the SCTP actor, its control reports ([`RouterCtl`]), and
//! commands from [`DataChannel`] handles. When the user's event stream is backlogged the
//! router stops taking SCTP messages (so unread data stays in SCTP and its receive window
//! closes) but keeps serving commands and control reports: released bytes still lower the
//! buffered amounts (and wake [`DataChannel::wait_buffered_amount`]) and a lost association
//! still closes the channels, so an application that paces its sends by its buffered amount
//! while it reads nothing cannot stall itself. Buffered-amount-low events that come due
//! meanwhile wait (one per channel at most) until the event stream moves again.

use super::dcep::{self, Dcep};
use super::{ChannelCmd, ChannelShared, ChannelState, DataChannel, Message, SendBudget};
use crate::peer::Event;
use crate::runtime::{self, Actor, Link};
use crate::sctp::engine::Workarounds;
use crate::sctp::Ppi;
use crate::sctp::SctpMsg;
use async_channel::{Receiver, Sender};
use bytes::Bytes;
use futures_lite::Stream;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// What the SCTP actor tells the router.
pub(crate) enum RouterMsg {
    /// The association is up.
    Connected {
        dtls_client: bool,
        max_streams: u16,
        max_message_size: usize,
    },
    /// A whole message arrived on a stream.
    Data { stream: u16, ppi: Ppi, data: Bytes },
    /// The stream was reset (both directions) and is gone: after its data.
    StreamClosed { stream: u16 },
}

/// What the SCTP actor tells the router that must not wait behind unread messages (its own
/// inbox, read even while the event stream is backlogged).
pub(crate) enum RouterCtl {
    /// Queued bytes of a stream were acknowledged or abandoned.
    Released { stream: u16, bytes: usize },
    /// The association is gone; every channel is closed.
    AssociationClosed,
}

struct Channel {
    handle: DataChannel,
    stream: Option<u16>,
    state: ChannelState,
    /// Bytes of DCEP control messages in the SCTP send buffer (and the one byte that stands
    /// for an empty message): released before user bytes.
    control_bytes: usize,
    /// User bytes handed to SCTP and not yet released: given back to the connection's send
    /// budget when the channel goes.
    queued: usize,
}

/// Named bound: channels a peer connection may hold at once.
pub const DEFAULT_MAX_CHANNELS: usize = 1024;

/// The bounds the peer's input (and our output) is held to.
pub(crate) struct Limits {
    /// Channels at once; a DCEP OPEN beyond it is answered with a stream reset.
    pub(crate) max_channels: usize,
    /// Our `a=max-message-size` (0: none).
    pub(crate) local_max_message_size: usize,
    /// The connection's send buffer, shared with every channel's handle.
    pub(crate) budget: Arc<SendBudget>,
    /// Longest label and protocol of a peer's DCEP OPEN; longer ones are refused (reset).
    pub(crate) dcep: dcep::Caps,
}

pub(crate) struct Router {
    name: Arc<str>,
    channels: HashMap<u32, Channel>,
    by_stream: HashMap<u16, u32>,
    /// Where the search for a free stream id starts (see `free_stream`).
    next_stream: u16,
    /// A freed stream id is reused last (`free_stream`); off only in tests, which show
    /// the workaround is needed (`Workarounds::stream_ids`).
    reuse_freed_last: bool,
    connected: Option<(bool, u16)>,
    max_channels: usize,
    max_message_size: Arc<AtomicUsize>,
    /// The connection's send buffer, shared with every channel's handle.
    budget: Arc<SendBudget>,
    /// Our `a=max-message-size` (0: no limit): larger messages from the peer break the
    /// negotiation and close their channel.
    local_max_message_size: usize,
    /// Channels whose buffered-amount-low event came due while the event stream was
    /// backlogged (each at most once).
    low_pending: Vec<u32>,
    dcep_caps: dcep::Caps,
    next_key: Arc<AtomicU32>,
    cmds_tx: Sender<Vec<ChannelCmd>>,
    sctp: Link<SctpMsg>,
    events: Link<Event>,
    closed: bool,
    /// A second handle on the data inbox (`drive` reads the first): what SCTP handed over
    /// before it closed is delivered before the channels close.
    data: Option<Receiver<Vec<RouterMsg>>>,
    /// Control reports from SCTP, read whatever the event stream does; `None` once closed.
    ctl: Option<Pin<Box<Receiver<Vec<RouterCtl>>>>>,
    ctl_batch: Option<Vec<RouterCtl>>,
    /// Commands from the handles; `None` once every handle is gone.
    cmds: Option<Pin<Box<Receiver<Vec<ChannelCmd>>>>>,
    cmd_batch: Option<Vec<ChannelCmd>>,
}

impl Router {
    pub(crate) fn new(
        name: Arc<str>,
        sctp: Link<SctpMsg>,
        events: Link<Event>,
        cmds_tx: Sender<Vec<ChannelCmd>>,
        next_key: Arc<AtomicU32>,
        max_message_size: Arc<AtomicUsize>,
        limits: Limits,
    ) -> Self {
        let Limits {
            max_channels,
            local_max_message_size,
            budget,
            dcep,
        } = limits;
        Self {
            name,
            channels: HashMap::new(),
            by_stream: HashMap::new(),
            next_stream: 0,
            reuse_freed_last: Workarounds::ALL.stream_ids,
            connected: None,
            max_channels,
            max_message_size,
            budget,
            local_max_message_size,
            low_pending: Vec::new(),
            dcep_caps: dcep,
            next_key,
            cmds_tx,
            sctp,
            events,
            closed: false,
            data: None,
            ctl: None,
            ctl_batch: None,
            cmds: None,
            cmd_batch: None,
        }
    }

    /// Runs the router on its three inboxes (module docs).
    pub(crate) async fn run(
        mut self,
        inbox: Receiver<Vec<RouterMsg>>,
        ctl: Receiver<Vec<RouterCtl>>,
        cmds: Receiver<Vec<ChannelCmd>>,
    ) {
        self.attach(inbox.clone(), ctl, cmds);
        runtime::drive(self, inbox).await;
    }

    /// Gives the router its second handle on the data inbox and its other two inboxes,
    /// which `drain` reads (`run`; tests that drive the router on a virtual clock).
    pub(crate) fn attach(
        &mut self,
        data: Receiver<Vec<RouterMsg>>,
        ctl: Receiver<Vec<RouterCtl>>,
        cmds: Receiver<Vec<ChannelCmd>>,
    ) {
        self.data = Some(data);
        self.ctl = Some(Box::pin(ctl));
        self.cmds = Some(Box::pin(cmds));
    }

    /// With only the workarounds `work` (all but in tests; the router runs `stream_ids`).
    #[cfg(test)]
    pub(crate) fn with_workarounds(mut self, work: Workarounds) -> Self {
        self.reuse_freed_last = work.stream_ids;
        self
    }

    /// Everything that is ready on the control inbox.
    fn take_ctl(&mut self) {
        while let Some(batch) = self.ctl.as_ref().and_then(|c| c.try_recv().ok()) {
            self.handle_ctl(batch);
        }
    }

    /// Commands that piled up are cheap to take at once.
    fn take_cmds(&mut self) {
        while let Some(batch) = self.cmds.as_ref().and_then(|c| c.try_recv().ok()) {
            for cmd in batch {
                self.handle_cmd(cmd);
            }
        }
    }

    fn emit(&mut self, e: Event) {
        self.events.push(e);
    }

    fn set_state(&mut self, key: u32, state: ChannelState) {
        if let Some(ch) = self.channels.get_mut(&key) {
            ch.state = state;
            ch.handle.shared.set_state(state);
        }
    }

    fn handle_ctl(&mut self, batch: Vec<RouterCtl>) {
        for msg in batch {
            match msg {
                RouterCtl::Released { stream, bytes } => self.released(stream, bytes),
                RouterCtl::AssociationClosed => {
                    // What SCTP handed over before it closed is delivered first (at most
                    // the inbox's APP_BATCHES * APP_BATCH messages), as in one inbox.
                    while let Some(batch) = self.data.as_ref().and_then(|d| d.try_recv().ok()) {
                        for msg in batch {
                            self.handle_sctp(msg);
                        }
                    }
                    self.association_closed();
                }
            }
        }
    }

    fn handle_cmd(&mut self, cmd: ChannelCmd) {
        match cmd {
            ChannelCmd::Create(shared) => self.create(shared),
            ChannelCmd::Send { key, message } => self.send(key, message),
            ChannelCmd::Close { key } => self.close(key),
        }
    }

    fn create(&mut self, shared: Arc<ChannelShared>) {
        let handle = DataChannel {
            shared,
            cmds: self.cmds_tx.clone(),
        };
        let key = handle.shared.key;
        if self.closed {
            handle.shared.set_state(ChannelState::Closed);
            self.emit(Event::ChannelClosed(handle));
            return;
        }
        if self.channels.len() >= self.max_channels {
            log::warn!(
                "[{}] channel {:?} refused: max_channels ({}) reached",
                self.name,
                handle.label(),
                self.max_channels
            );
            handle.shared.set_state(ChannelState::Closed);
            self.emit(Event::ChannelClosed(handle));
            return;
        }
        if let Some(id) = handle.shared.init.negotiated {
            if self.by_stream.contains_key(&id) {
                log::warn!(
                    "[{}] negotiated channel {:?}: stream {id} is taken",
                    self.name,
                    handle.label()
                );
                handle.shared.set_state(ChannelState::Closed);
                self.emit(Event::ChannelClosed(handle));
                return;
            }
        }
        self.channels.insert(
            key,
            Channel {
                handle,
                stream: None,
                state: ChannelState::Connecting,
                control_bytes: 0,
                queued: 0,
            },
        );
        if self.connected.is_some() {
            self.open_local(key);
        } else if let Some(id) = self.channels[&key].handle.shared.init.negotiated {
            // Reserve the id now so an in-band channel cannot take it later.
            self.by_stream.insert(id, key);
        }
    }

    /// The next free stream id of our parity (RFC 8832 §6: even for the DTLS client),
    /// going round the id space rather than taking the lowest: an id just given back is
    /// reused last (the workaround `Workarounds::stream_ids`). rtc-sctp answers the reset
    /// that closes a channel with a second, redundant reset of the same stream (its
    /// `reset_streams_if_any`, called with `respond: true`, answers a reset of a stream it
    /// reset itself; docs/SCTP-UPSTREAM.md 6). A new channel on that id that is open when
    /// the redundant reset arrives is reset with it
    /// (`a_new_channel_survives_the_redundant_reset_of_a_closed_one`; seen in
    /// tests/lossy.rs `long_run_keeps_memory_flat`, one channel a second).
    fn free_stream(&mut self) -> Option<u16> {
        let (dtls_client, max_streams) = self.connected?;
        let parity = u16::from(!dtls_client);
        // Ids of our parity below max_streams.
        let n = ((u32::from(max_streams) + 1).saturating_sub(u32::from(parity)) / 2) as u16;
        let first = match self.reuse_freed_last {
            true => self.next_stream / 2,
            false => 0,
        };
        let id = (0..n)
            .map(|i| ((first + i) % n) * 2 + parity)
            .find(|id| !self.by_stream.contains_key(id))?;
        self.next_stream = id.wrapping_add(2);
        Some(id)
    }

    fn open_local(&mut self, key: u32) {
        let Some(ch) = self.channels.get(&key) else {
            return;
        };
        let init = ch.handle.shared.init.clone();
        let label = ch.handle.shared.label.clone();
        let stream = match init.negotiated {
            Some(id) => id,
            None => match self.free_stream() {
                Some(id) => id,
                None => {
                    log::warn!("[{}] channel {label:?}: no free stream id", self.name);
                    self.drop_channel(key);
                    return;
                }
            },
        };
        self.by_stream.insert(stream, key);
        self.open_stream(stream, &init);
        let ch = self.channels.get_mut(&key).expect("checked above");
        ch.stream = Some(stream);
        ch.handle.shared.set_id(stream);
        if init.negotiated.is_some() {
            self.set_state(key, ChannelState::Open);
            let h = self.channels[&key].handle.clone();
            log::info!(target: crate::EVENT_LOG_TARGET, "[{}] data channel {h} open (negotiated)", self.name);
            self.emit(Event::ChannelOpen(h));
        } else {
            let open = dcep::open(&label, &init);
            ch.control_bytes += open.len();
            self.sctp.push(SctpMsg::Write {
                stream,
                ppi: Ppi::Dcep,
                data: open,
            });
        }
    }

    fn send(&mut self, key: u32, message: Message) {
        let len = message.len();
        let target = self
            .channels
            .get(&key)
            .filter(|ch| ch.state == ChannelState::Open)
            .and_then(|ch| ch.stream);
        // What the handle reserved goes back to the connection's budget now (the channel is
        // gone or not open) or when released or the channel goes (`queued`).
        let Some(stream) = target else {
            // Raced with a close: the bytes will never be sent.
            if let Some(ch) = self.channels.get(&key) {
                ch.handle.shared.release(len);
            }
            self.budget.release(len);
            log::debug!(
                "[{}] message of {len} bytes dropped: channel not open",
                self.name
            );
            return;
        };
        let (ppi, data) = match message {
            Message::Text(s) if s.is_empty() => (Ppi::StringEmpty, Bytes::from_static(&[0])),
            Message::Text(s) => (Ppi::String, Bytes::from(s)),
            Message::Binary(b) if b.is_empty() => (Ppi::BinaryEmpty, Bytes::from_static(&[0])),
            Message::Binary(b) => (Ppi::Binary, b),
        };
        if let Some(ch) = self.channels.get_mut(&key) {
            ch.queued += len;
            // An empty message goes as one byte (RFC 8831 §6.6) that it did not reserve.
            ch.control_bytes += usize::from(len == 0);
        }
        self.sctp.push(SctpMsg::Write { stream, ppi, data });
    }

    fn close(&mut self, key: u32) {
        let Some(ch) = self.channels.get(&key) else {
            return;
        };
        match (ch.state, ch.stream) {
            (ChannelState::Closing | ChannelState::Closed, _) => {}
            (_, Some(stream)) if self.connected.is_some() => {
                log::info!(
                    "[{}] data channel {} closing (stream reset)",
                    self.name,
                    ch.handle
                );
                self.set_state(key, ChannelState::Closing);
                self.sctp.push(SctpMsg::Reset { stream });
            }
            _ => self.drop_channel(key),
        }
    }

    fn drop_channel(&mut self, key: u32) {
        if let Some(ch) = self.channels.remove(&key) {
            // Its buffered amount stays as it is (W3C); its place in the budget is free.
            self.budget.release(ch.queued);
            if let Some(s) = ch.stream.or(ch.handle.shared.init.negotiated) {
                if self.by_stream.get(&s) == Some(&key) {
                    self.by_stream.remove(&s);
                }
            }
            ch.handle.shared.set_state(ChannelState::Closed);
            log::info!(target: crate::EVENT_LOG_TARGET, "[{}] data channel {} closed", self.name, ch.handle);
            self.emit(Event::ChannelClosed(ch.handle));
        }
    }

    fn handle_sctp(&mut self, msg: RouterMsg) {
        match msg {
            RouterMsg::Connected {
                dtls_client,
                max_streams,
                max_message_size,
            } => {
                self.max_message_size
                    .store(max_message_size, Ordering::Release);
                self.connected = Some((dtls_client, max_streams));
                // Negotiated ids were reserved; give them back so open_local can claim them.
                let mut pending: Vec<u32> = self
                    .channels
                    .iter()
                    .filter(|(_, c)| c.stream.is_none())
                    .map(|(k, _)| *k)
                    .collect();
                pending.sort_unstable(); // creation order
                for key in &pending {
                    if let Some(id) = self.channels[key].handle.shared.init.negotiated {
                        self.by_stream.remove(&id);
                    }
                }
                for key in pending {
                    self.open_local(key);
                }
            }
            RouterMsg::Data { stream, ppi, data } => self.data(stream, ppi, data),
            RouterMsg::StreamClosed { stream } => {
                if let Some(key) = self.by_stream.get(&stream).copied() {
                    self.drop_channel(key);
                }
            }
        }
    }

    /// Has the SCTP actor open `stream` with `init`'s reliability.
    fn open_stream(&mut self, stream: u16, init: &super::ChannelInit) {
        let (unordered, rel) = dcep::reliability(init);
        self.sctp.push(SctpMsg::Open {
            stream,
            unordered,
            rel,
        });
    }

    /// Part of shutdown step 2 (docs/ARCHITECTURE.md): every channel closes, each with its
    /// `Event::ChannelClosed`.
    fn association_closed(&mut self) {
        let mut keys: Vec<u32> = self.channels.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            self.drop_channel(key);
        }
        self.closed = true;
        self.sctp.push(SctpMsg::Close);
    }

    fn data(&mut self, stream: u16, ppi: Ppi, data: Bytes) {
        let key = self.by_stream.get(&stream).copied();
        if ppi == Ppi::Dcep {
            return self.dcep(stream, key, &data);
        }
        let Some(key) = key else {
            log::debug!(
                "[{}] stream {stream}: data for no channel dropped",
                self.name
            );
            return;
        };
        // RFC 8832 §6: data before the ACK means the peer got our OPEN.
        if self.channels[&key].state == ChannelState::Connecting {
            self.set_state(key, ChannelState::Open);
            let h = self.channels[&key].handle.clone();
            self.emit(Event::ChannelOpen(h));
        }
        if matches!(
            self.channels[&key].state,
            ChannelState::Closing | ChannelState::Closed
        ) {
            // What was in flight when we closed it is not delivered (W3C: no message
            // events once closing).
            return;
        }
        if self.oversized(key, data.len()) {
            return;
        }
        let Some(message) = self.message(stream, ppi, data) else {
            return;
        };
        let h = self.channels[&key].handle.clone();
        self.emit(Event::ChannelMessage(h, message));
    }

    /// A DCEP message (RFC 8832) on `stream`, whose channel is `key` if it has one.
    fn dcep(&mut self, stream: u16, key: Option<u32>, data: &[u8]) {
        match dcep::parse(data, self.dcep_caps) {
            Ok(Dcep::Open { label, init }) => self.remote_open(stream, key, label, init),
            Err(dcep::ParseError::TooLong(e)) => {
                if self.may_open(stream, key, "") {
                    log::warn!("[{}] DCEP OPEN on stream {stream} refused: {e}", self.name);
                    self.sctp.push(SctpMsg::Reset { stream });
                }
            }
            Ok(Dcep::Ack) => {
                let Some(key) = key else { return };
                if self.channels[&key].state == ChannelState::Connecting {
                    self.set_state(key, ChannelState::Open);
                    let h = self.channels[&key].handle.clone();
                    log::info!(target: crate::EVENT_LOG_TARGET, "[{}] data channel {h} open", self.name);
                    self.emit(Event::ChannelOpen(h));
                }
            }
            Err(e) => log::warn!("[{}] stream {stream}: {e}; ignored", self.name),
        }
    }

    /// True, and channel `key` closed, when a message of `len` bytes exceeds our
    /// max-message-size.
    fn oversized(&mut self, key: u32, len: usize) -> bool {
        let max = self.local_max_message_size;
        if max == 0 || len <= max {
            return false;
        }
        // The peer ignored our a=max-message-size (RFC 8841 §6): the message is dropped
        // and its channel closed; the connection and its other channels go on.
        log::warn!(
            "[{}] data channel {}: message of {len} bytes exceeds our max-message-size \
             ({max}): dropped, channel closed",
            self.name,
            self.channels[&key].handle,
        );
        self.close(key);
        true
    }

    /// The user message a payload of `ppi` carries; none for a PPI that is not user data.
    fn message(&self, stream: u16, ppi: Ppi, data: Bytes) -> Option<Message> {
        Some(match ppi {
            Ppi::String => Message::Text(match String::from_utf8(data.to_vec()) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!(
                        "[{}] stream {stream}: text message is not UTF-8; replaced",
                        self.name
                    );
                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                }
            }),
            Ppi::StringEmpty => Message::Text(String::new()),
            Ppi::Binary => Message::Binary(data),
            Ppi::BinaryEmpty => Message::Binary(Bytes::new()),
            other => {
                log::debug!("[{}] stream {stream}: PPI {other} ignored", self.name);
                return None;
            }
        })
    }

    fn remote_open(
        &mut self,
        stream: u16,
        existing: Option<u32>,
        label: String,
        init: super::ChannelInit,
    ) {
        if !self.may_open(stream, existing, &label) {
            return;
        }
        if self.channels.len() >= self.max_channels {
            log::warn!(
                "[{}] DCEP OPEN {label:?} refused: max_channels ({}) reached",
                self.name,
                self.max_channels
            );
            self.sctp.push(SctpMsg::Reset { stream });
            return;
        }
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(ChannelShared::new(
            key,
            label,
            init.clone(),
            self.max_message_size.clone(),
            self.budget.clone(),
        ));
        shared.set_id(stream);
        shared.set_state(ChannelState::Open);
        let handle = DataChannel {
            shared,
            cmds: self.cmds_tx.clone(),
        };
        self.open_stream(stream, &init);
        let ack = dcep::ack();
        self.sctp.push(SctpMsg::Write {
            stream,
            ppi: Ppi::Dcep,
            data: ack.clone(),
        });
        self.by_stream.insert(stream, key);
        self.channels.insert(
            key,
            Channel {
                handle: handle.clone(),
                stream: Some(stream),
                state: ChannelState::Open,
                control_bytes: ack.len(),
                queued: 0,
            },
        );
        log::info!(
            target: crate::EVENT_LOG_TARGET,
            "[{}] data channel {handle} announced by the peer, open",
            self.name
        );
        self.emit(Event::DataChannel(handle.clone()));
        self.emit(Event::ChannelOpen(handle));
    }

    /// Whether a peer's DCEP OPEN on `stream` may open (or be refused with a reset): not
    /// on a stream of our parity, nor on one in use (logged and ignored).
    fn may_open(&self, stream: u16, existing: Option<u32>, label: &str) -> bool {
        if let Some((dtls_client, _)) = self.connected {
            // The opener uses its own parity: even from the DTLS client.
            let theirs_even = !dtls_client;
            if stream.is_multiple_of(2) != theirs_even {
                log::warn!(
                    "[{}] DCEP OPEN {label:?} on stream {stream} of the wrong parity; ignored",
                    self.name
                );
                return false;
            }
        }
        if existing.is_some() {
            log::warn!(
                "[{}] DCEP OPEN {label:?} on stream {stream} already in use; ignored",
                self.name
            );
            return false;
        }
        true
    }

    fn released(&mut self, stream: u16, bytes: usize) {
        let Some(key) = self.by_stream.get(&stream).copied() else {
            return;
        };
        let Some(ch) = self.channels.get_mut(&key) else {
            return;
        };
        let control = bytes.min(ch.control_bytes);
        ch.control_bytes -= control;
        let user = (bytes - control).min(ch.queued);
        if user == 0 {
            return;
        }
        ch.queued -= user;
        self.budget.release(user);
        let shared = &ch.handle.shared;
        let (before, after) = shared.release(user);
        let threshold = shared.low_threshold.load(Ordering::Acquire);
        if before > threshold && after <= threshold {
            if self.events.is_backlogged() {
                if !self.low_pending.contains(&key) {
                    self.low_pending.push(key);
                }
            } else {
                let h = ch.handle.clone();
                self.emit(Event::ChannelBufferedAmountLow(h));
            }
        }
    }
}

impl Actor for Router {
    type Msg = RouterMsg;

    async fn drain(&mut self) {
        self.take_cmds();
        // Control reports first, whatever the event stream does (module docs).
        self.take_ctl();
        if !self.events.is_backlogged() && !self.low_pending.is_empty() {
            for key in std::mem::take(&mut self.low_pending) {
                if let Some(ch) = self.channels.get(&key) {
                    let h = ch.handle.clone();
                    self.emit(Event::ChannelBufferedAmountLow(h));
                }
            }
        }
        self.sctp.flush();
        self.events.flush();
    }

    fn finished(&self) -> bool {
        self.closed && !self.sctp.is_backlogged() && !self.events.is_backlogged()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }

    /// SCTP's messages wait while the event stream is backlogged (module docs).
    fn read_inbox(&self) -> bool {
        !self.events.is_backlogged()
    }

    fn handle(&mut self, _now: Instant, batch: Vec<RouterMsg>) {
        for msg in batch {
            self.handle_sctp(msg);
        }
    }

    fn on_timeout(&mut self, _now: Instant) {}

    fn shutdown(&mut self, _now: Instant) {
        self.association_closed();
    }

    fn poll_links(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        runtime::poll_links(&mut [&mut self.sctp, &mut self.events], cx)
    }

    /// The control inbox, then the commands.
    fn poll_extra(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if poll_batch(&mut self.ctl, &mut self.ctl_batch, cx)
            || poll_batch(&mut self.cmds, &mut self.cmd_batch, cx)
        {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    fn on_extra(&mut self, _now: Instant) {
        if let Some(batch) = self.ctl_batch.take() {
            self.handle_ctl(batch);
        }
        for cmd in self.cmd_batch.take().unwrap_or_default() {
            self.handle_cmd(cmd);
        }
    }
}

/// Polls an inbox still open for its next batch into `batch`: true when one came (or the
/// inbox closed, which drops it and leaves `batch` empty).
fn poll_batch<T>(
    inbox: &mut Option<Pin<Box<Receiver<Vec<T>>>>>,
    batch: &mut Option<Vec<T>>,
    cx: &mut Context<'_>,
) -> bool {
    let Some(rx) = inbox.as_mut() else {
        return false;
    };
    let Poll::Ready(b) = rx.as_mut().poll_next(cx) else {
        return false;
    };
    if b.is_none() {
        *inbox = None;
    }
    *batch = b;
    true
}
