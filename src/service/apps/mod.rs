//! Channel handlers: what the service does with a data channel, chosen by its label.
//!
//! A handler is an async function started when a channel opens. It gets the channel (to
//! send on) and a [`ChannelEvents`] stream of what arrives. It runs on the smolrtc thread;
//! while it is busy with one message, the next ones wait — that wait reaches the remote
//! sender as SCTP backpressure. It stops the session's whole event stream, though, so a
//! handler that paces its sends waits with [`DataChannel::wait_buffered_amount`], never
//! for [`ChannelEvent::BufferedAmountLow`] while it leaves messages unread (see `builtin`).
//!
//! Built in: [`echo`], [`discard`], [`chargen`], and rawrtc's noisy channels (`cat-noises`,
//! `bear-noises`, `lion-noises`, `dinosaur-noises`).

mod builtin;

pub use builtin::{
    chargen, chargen_byte, discard, echo, CHARGEN_HIGH_WATER, CHARGEN_MESSAGE, ECHO_HIGH_WATER,
    ECHO_LOW_WATER,
};

use crate::channel::{DataChannel, Message};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a handler hears about its channel.
#[derive(Debug)]
pub enum ChannelEvent {
    /// A message arrived.
    Message(Message),
    /// The channel's buffered amount fell to its low threshold.
    BufferedAmountLow,
}

/// The events of one channel, in order; ends when the channel closes.
pub type ChannelEvents = async_channel::Receiver<ChannelEvent>;

type BoxedHandler =
    Arc<dyn Fn(DataChannel, ChannelEvents) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

/// Label → handler. Cloning is cheap; the service looks labels up when channels open.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, BoxedHandler>,
}

impl Registry {
    /// An empty registry: every channel is refused.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in handlers: `echo`, `discard`, `chargen` and rawrtc's noises.
    pub fn builtin() -> Self {
        let mut r = Self::default();
        r.register("echo", builtin::echo);
        r.register("discard", builtin::discard);
        r.register("chargen", builtin::chargen);
        for (label, on_open) in builtin::NOISES {
            r.register(label, move |ch, ev| builtin::noise(ch, ev, *on_open));
        }
        r
    }

    /// Runs `handler` for every channel labelled `label` (replacing a built-in one).
    pub fn register<F, Fut>(&mut self, label: &str, handler: F)
    where
        F: Fn(DataChannel, ChannelEvents) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.handlers.insert(
            label.to_owned(),
            Arc::new(move |ch, ev| Box::pin(handler(ch, ev))),
        );
    }

    /// Labels with a handler.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// Starts the handler for `channel`, if its label has one.
    pub(crate) fn start(
        &self,
        channel: &DataChannel,
        events: ChannelEvents,
    ) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
        self.handlers
            .get(channel.label())
            .map(|h| h(channel.clone(), events))
    }
}
