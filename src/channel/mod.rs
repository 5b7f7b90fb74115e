//! Data channels: the user's [`DataChannel`] handle, its options, and the router actor that
//! maps channels onto SCTP streams with DCEP (RFC 8832).
//!
//! Outgoing bytes are bounded where they enter: [`DataChannel::send`] reserves the message's
//! bytes in the channel's buffered amount (at most `SctpConfig::send_buffer_per_channel`)
//! and in the connection's (at most `SctpConfig::send_buffer_per_connection`), or fails
//! with [`Error::Limit`] naming the limit (W3C: `send()` throws `OperationError` when the
//! buffer is full). The bytes stay counted until the peer acknowledges them (or they are
//! abandoned, or the channel is gone), so everything downstream (the router's link, the
//! SCTP actor's send queue, rtc-sctp's queues) holds at most that much user data.
//!
//! A sender that paces itself by its buffered amount can wait for it to fall with
//! [`DataChannel::wait_buffered_amount`]. That wait is fed by the router directly, not by
//! the connection's event stream: a handler that stops reading its channel's messages to
//! let SCTP push back must not depend on an event queued behind those very messages.

pub(crate) mod dcep;
pub(crate) mod router;

use crate::error::{ArgumentError, Error, LimitError, Result, StateError};
use bytes::Bytes;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

/// One data-channel message: text (SCTP PPI 51/56) or binary (PPI 53/57).
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// A UTF-8 string message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(s) => s.len(),
            Message::Binary(b) => b.len(),
        }
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload bytes, whatever the kind.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) => b,
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Text(s) if s.len() <= 64 => write!(f, "Text({s:?})"),
            Message::Text(s) => write!(f, "Text({} bytes)", s.len()),
            Message::Binary(b) => write!(f, "Binary({} bytes)", b.len()),
        }
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::Text(s.to_owned())
    }
}
impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s)
    }
}
impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Message::Binary(b.into())
    }
}
impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message::Binary(b)
    }
}
impl From<&[u8]> for Message {
    fn from(b: &[u8]) -> Self {
        Message::Binary(Bytes::copy_from_slice(b))
    }
}

/// Options for [`crate::PeerConnection::create_data_channel`], as W3C `RTCDataChannelInit`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelInit {
    /// Deliver in order (default) or as messages arrive.
    pub unordered: bool,
    /// Give up on a message after this many retransmissions (partial reliability).
    pub max_retransmits: Option<u16>,
    /// Give up on a message after this many milliseconds (partial reliability).
    pub max_packet_life_time: Option<u16>,
    /// Sub-protocol name, carried in the DCEP OPEN.
    pub protocol: String,
    /// Negotiated out of band on this stream id: no DCEP, both sides create it.
    pub negotiated: Option<u16>,
}

impl ChannelInit {
    /// A negotiated channel on stream `id` (ordered, reliable).
    pub fn negotiated(id: u16) -> Self {
        Self {
            negotiated: Some(id),
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_retransmits.is_some() && self.max_packet_life_time.is_some() {
            return Err(ArgumentError::ConflictingReliability.into());
        }
        if self.protocol.len() > u16::MAX as usize {
            return Err(ArgumentError::TooLong {
                field: "protocol",
                len: self.protocol.len(),
                limit: "DCEP's maximum",
                max: u16::MAX.into(),
            }
            .into());
        }
        if self.negotiated == Some(u16::MAX) {
            return Err(ArgumentError::ReservedStream.into());
        }
        Ok(())
    }
}

/// W3C `RTCDataChannelState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// Waiting for SCTP or for the DCEP ACK.
    Connecting,
    /// Messages can be sent.
    Open,
    /// Close started; waiting for the stream reset to complete.
    Closing,
    /// The stream is reset or the association is gone.
    Closed,
}

impl ChannelState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => ChannelState::Connecting,
            1 => ChannelState::Open,
            2 => ChannelState::Closing,
            _ => ChannelState::Closed,
        }
    }
}

impl fmt::Display for ChannelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChannelState::Connecting => "connecting",
            ChannelState::Open => "open",
            ChannelState::Closing => "closing",
            ChannelState::Closed => "closed",
        })
    }
}

/// Default of `Config::max_channel_label`: the longest channel label, bytes, we create or
/// accept in a peer's DCEP OPEN (W3C allows 65535; a channel keeps its label for its life).
pub const DEFAULT_MAX_CHANNEL_LABEL: usize = 1024;
/// Default of `Config::max_channel_protocol`: the longest sub-protocol name, bytes.
pub const DEFAULT_MAX_CHANNEL_PROTOCOL: usize = 1024;

const NO_ID: u32 = u32::MAX;

/// The send buffer of one peer connection: its bounds and the bytes its channels have
/// queued (the sum of their buffered amounts, less what the router gave back when a channel
/// went away).
pub(crate) struct SendBudget {
    /// Most bytes one channel may have buffered (`SctpConfig::send_buffer_per_channel`).
    pub(crate) per_channel: usize,
    /// Most bytes all channels together may have buffered
    /// (`SctpConfig::send_buffer_per_connection`).
    pub(crate) per_connection: usize,
    /// Bytes reserved by `send` and not yet released.
    pub(crate) queued: AtomicUsize,
}

impl SendBudget {
    pub(crate) fn new(per_channel: usize, per_connection: usize) -> Self {
        Self {
            per_channel,
            per_connection,
            queued: AtomicUsize::new(0),
        }
    }

    /// Gives back `bytes` reserved earlier.
    pub(crate) fn release(&self, bytes: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(bytes))
            });
    }
}

/// Adds `len` to `counter` unless that would pass `max`; the value before on failure.
fn reserve(counter: &AtomicUsize, len: usize, max: usize) -> Result<(), usize> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            n.checked_add(len).filter(|sum| *sum <= max)
        })
        .map(|_| ())
}

/// What the handle and the router share about one channel. The router writes `state`, `id`
/// and releases `buffered`; handles read them and add to `buffered` on send (W3C semantics:
/// bufferedAmount grows synchronously with `send`).
pub(crate) struct ChannelShared {
    pub(crate) key: u32,
    pub(crate) label: String,
    pub(crate) init: ChannelInit,
    id: AtomicU32,
    state: AtomicU8,
    pub(crate) buffered: AtomicUsize,
    pub(crate) low_threshold: AtomicUsize,
    /// The peer connection's negotiated maximum message size (0 until SCTP is up).
    pub(crate) max_message_size: Arc<AtomicUsize>,
    /// The peer connection's send buffer.
    pub(crate) budget: Arc<SendBudget>,
    /// Notified when `buffered` falls or the state changes ([`DataChannel::wait_buffered_amount`]).
    changed: event_listener::Event,
}

impl ChannelShared {
    pub(crate) fn new(
        key: u32,
        label: String,
        init: ChannelInit,
        max_message_size: Arc<AtomicUsize>,
        budget: Arc<SendBudget>,
    ) -> Self {
        Self {
            key,
            label,
            id: AtomicU32::new(init.negotiated.map_or(NO_ID, u32::from)),
            init,
            state: AtomicU8::new(0),
            buffered: AtomicUsize::new(0),
            low_threshold: AtomicUsize::new(0),
            max_message_size,
            budget,
            changed: event_listener::Event::new(),
        }
    }
    pub(crate) fn set_state(&self, s: ChannelState) {
        self.state.store(s as u8, Ordering::Release);
        self.changed.notify(usize::MAX);
    }
    pub(crate) fn set_id(&self, id: u16) {
        self.id.store(u32::from(id), Ordering::Release);
    }

    /// Takes `bytes` off the buffered amount; returns it (before, after).
    pub(crate) fn release(&self, bytes: usize) -> (usize, usize) {
        let before = self
            .buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(bytes))
            })
            .unwrap_or_default();
        self.changed.notify(usize::MAX);
        (before, before.saturating_sub(bytes))
    }

    /// Reserves `len` bytes of the channel's and the connection's send buffer, or says
    /// which bound a message of `len` bytes would pass.
    fn reserve(&self, len: usize) -> Result<()> {
        let budget = &self.budget;
        if let Err(now) = reserve(&self.buffered, len, budget.per_channel) {
            return Err(Error::Limit(LimitError::new(
                "send_buffer_per_channel",
                budget.per_channel,
                format!(
                    "send buffer full: channel {:?} has {now} bytes buffered, a message of \
                     {len} bytes would pass send_buffer_per_channel ({})",
                    self.label, budget.per_channel
                ),
            )));
        }
        if let Err(now) = reserve(&budget.queued, len, budget.per_connection) {
            self.release(len);
            return Err(Error::Limit(LimitError::new(
                "send_buffer_per_connection",
                budget.per_connection,
                format!(
                    "send buffer full: the connection's channels have {now} bytes buffered, \
                     a message of {len} bytes would pass send_buffer_per_connection ({})",
                    budget.per_connection
                ),
            )));
        }
        Ok(())
    }
}

/// Commands from [`DataChannel`] handles (any thread) to the router.
pub(crate) enum ChannelCmd {
    Create(Arc<ChannelShared>),
    Send { key: u32, message: Message },
    Close { key: u32 },
}

/// A data channel. Cheap to clone and `Send`: any thread may send on it. Its events
/// (open, message, buffered-amount-low, close) arrive on the peer connection's event stream.
#[derive(Clone)]
pub struct DataChannel {
    pub(crate) shared: Arc<ChannelShared>,
    pub(crate) cmds: async_channel::Sender<Vec<ChannelCmd>>,
}

impl DataChannel {
    /// A key unique among live channels of the process (for maps of channels).
    pub fn ptr_key(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// The channel's label.
    pub fn label(&self) -> &str {
        &self.shared.label
    }

    /// The sub-protocol.
    pub fn protocol(&self) -> &str {
        &self.shared.init.protocol
    }

    /// The options it was created (or announced) with.
    pub fn init(&self) -> &ChannelInit {
        &self.shared.init
    }

    /// The SCTP stream id, once assigned (negotiated channels have it from the start).
    pub fn id(&self) -> Option<u16> {
        match self.shared.id.load(Ordering::Acquire) {
            NO_ID => None,
            id => Some(id as u16),
        }
    }

    /// Current state. It changes as the router handles SCTP input, and that input waits
    /// while the connection's event stream is not being read: keep reading events.
    pub fn state(&self) -> ChannelState {
        ChannelState::from_u8(self.shared.state.load(Ordering::Acquire))
    }

    /// Bytes handed to [`DataChannel::send`] and not yet acknowledged by the peer.
    pub fn buffered_amount(&self) -> usize {
        self.shared.buffered.load(Ordering::Acquire)
    }

    /// The buffered amount at or below which a buffered-amount-low event fires.
    pub fn buffered_amount_low_threshold(&self) -> usize {
        self.shared.low_threshold.load(Ordering::Acquire)
    }

    /// Sets the buffered-amount-low threshold.
    pub fn set_buffered_amount_low_threshold(&self, bytes: usize) {
        self.shared.low_threshold.store(bytes, Ordering::Release);
    }

    /// The largest message the remote accepts (its `a=max-message-size`), once connected.
    pub fn max_message_size(&self) -> Option<usize> {
        match self.shared.max_message_size.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    /// Waits until the buffered amount is at most `bytes` (at once if it is). This wait does
    /// not go through the event stream, so a sender may stop reading its events while it
    /// waits (see the module documentation). Fails once the channel is closing or closed
    /// with more than `bytes` still buffered.
    pub async fn wait_buffered_amount(&self, bytes: usize) -> Result<()> {
        loop {
            if self.buffered_amount() <= bytes {
                return Ok(());
            }
            let state = self.state();
            if matches!(state, ChannelState::Closing | ChannelState::Closed) {
                return Err(StateError::ChannelClosed {
                    label: self.label().to_owned(),
                    state,
                }
                .into());
            }
            let listener = self.shared.changed.listen();
            // Checked again: a release between the first check and listen() is not missed.
            if self.buffered_amount() <= bytes || self.state() != state {
                continue;
            }
            listener.await;
        }
    }

    /// Queues a message. Fails if the channel is not open, if the message is larger than the
    /// remote accepts, or if it does not fit in the send buffer ([`Error::Limit`] naming
    /// `send_buffer_per_channel` or `send_buffer_per_connection` of
    /// [`crate::sctp::SctpConfig`]; the buffered amount is then unchanged and the channel goes
    /// on); waits only while the router's inbox is full.
    pub async fn send(&self, message: impl Into<Message>) -> Result<()> {
        let message = message.into();
        let state = self.state();
        if state != ChannelState::Open {
            return Err(StateError::ChannelNotOpen {
                label: self.label().to_owned(),
                state,
            }
            .into());
        }
        if let Some(max) = self.max_message_size() {
            if message.len() > max {
                return Err(Error::Limit(LimitError::new(
                    "max-message-size",
                    max,
                    format!(
                        "message of {} bytes exceeds the remote's max-message-size {max}",
                        message.len()
                    ),
                )));
            }
        }
        let len = message.len();
        self.shared.reserve(len)?;
        let cmd = ChannelCmd::Send {
            key: self.shared.key,
            message,
        };
        if self.cmds.send(vec![cmd]).await.is_err() {
            self.shared.release(len);
            self.shared.budget.release(len);
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Blocking [`DataChannel::send`], for threads that do not run an executor.
    pub fn send_blocking(&self, message: impl Into<Message>) -> Result<()> {
        futures_lite::future::block_on(self.send(message))
    }

    /// Starts closing: the stream is reset (RFC 8831 §6.7); a closed event follows.
    pub fn close(&self) {
        if matches!(self.state(), ChannelState::Closing | ChannelState::Closed) {
            return;
        }
        let cmd = vec![ChannelCmd::Close {
            key: self.shared.key,
        }];
        // A full inbox must not lose a close: hand it to a short-lived thread that waits.
        if let Err(async_channel::TrySendError::Full(cmd)) = self.cmds.try_send(cmd) {
            let cmds = self.cmds.clone();
            std::thread::spawn(move || {
                let _ = cmds.send_blocking(cmd);
            });
        }
    }
}

impl PartialEq for DataChannel {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl fmt::Debug for DataChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataChannel")
            .field("label", &self.label())
            .field("id", &self.id())
            .field("state", &self.state())
            .finish()
    }
}

impl fmt::Display for DataChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id() {
            Some(id) => write!(f, "{}#{id}", self.label()),
            None => write!(f, "{}", self.label()),
        }
    }
}
