//! The actor skeleton: what every actor does between wake-ups, written once.
//!
//! ```text
//! loop {
//!     drain          every engine output goes to the links, the links are flushed
//!     finished?      return (the inbox closed, or teardown reached this actor's end)
//!     sleep until    a batch in the inbox | the engine's deadline | a link delivered its
//!                    in-flight batch | the actor's own extra source (sockets, a second inbox)
//!     handle(batch) | on_timeout | on_extra | shutdown (every inbox sender gone)
//! }
//! ```
//!
//! A wake-up takes every message that is ready as one batch (`Vec<Msg>`), not one per hop,
//! and after every input all engine outputs are drained before the actor sleeps again: a
//! flight must never wait for the next tick. `now` is stamped once per wake-up, at the
//! input boundary; engines never read the clock.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// An actor: one engine behind one inbox. [`drive`] runs it.
pub(crate) trait Actor {
    /// What its inbox carries.
    type Msg;

    /// Hands every pending output of the engine to the links and flushes them. Runs after
    /// every wake-up (and before the first sleep). Async only for the ICE agent, which
    /// waits on a full socket buffer (the wire's own backpressure).
    async fn drain(&mut self);

    /// True once the actor is done; [`drive`] returns (after a last [`Actor::drain`]).
    fn finished(&self) -> bool;

    /// The engine's next deadline (and the actor's own timers).
    fn poll_timeout(&mut self) -> Option<Instant>;

    /// False while the actor holds its inbox back (a neighbour downstream is backlogged).
    fn read_inbox(&self) -> bool {
        true
    }

    /// One wake-up's batch from the inbox.
    fn handle(&mut self, now: Instant, batch: Vec<Self::Msg>);

    /// The deadline of [`Actor::poll_timeout`] passed.
    fn on_timeout(&mut self, now: Instant);

    /// Every sender of the inbox is gone: the connection is dropped; close down.
    fn shutdown(&mut self, now: Instant);

    /// Ready once any of the actor's links delivered its in-flight batch
    /// (see [`super::poll_links`]).
    fn poll_links(&mut self, cx: &mut Context<'_>) -> Poll<()>;

    /// The actor's own event source besides the inbox (sockets, a second inbox).
    fn poll_extra(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }

    /// [`Actor::poll_extra`] was ready.
    fn on_extra(&mut self, _now: Instant) {}
}

/// What woke an actor up.
enum Wake<M> {
    /// A batch from the inbox, or `None` when every sender is gone.
    Inbox(Option<Vec<M>>),
    /// The deadline passed.
    Timer,
    /// A link delivered its in-flight batch; queued work may move on.
    Link,
    /// The actor's own extra source is ready.
    Extra,
}

/// Runs `actor` on `inbox` until it is finished (the loop in the module docs).
pub(crate) async fn drive<A: Actor>(mut actor: A, inbox: async_channel::Receiver<Vec<A::Msg>>) {
    loop {
        actor.drain().await;
        if actor.finished() {
            return;
        }
        let deadline = actor.poll_timeout();
        let read_inbox = actor.read_inbox();
        let wake = wait(&inbox, read_inbox, deadline, &mut actor).await;
        let now = Instant::now();
        match wake {
            Wake::Inbox(Some(batch)) => actor.handle(now, batch),
            Wake::Inbox(None) => actor.shutdown(now),
            Wake::Timer => actor.on_timeout(now),
            Wake::Extra => actor.on_extra(now),
            Wake::Link => {}
        }
    }
}

/// Sleeps until the inbox has a batch, the deadline passes, a link un-blocks, or the
/// actor's extra source is ready. With `read_inbox == false` the inbox is left alone; the
/// timer, links and the extra source still wake the actor.
async fn wait<A: Actor>(
    inbox: &async_channel::Receiver<Vec<A::Msg>>,
    read_inbox: bool,
    deadline: Option<Instant>,
    actor: &mut A,
) -> Wake<A::Msg> {
    if read_inbox {
        match inbox.try_recv() {
            Ok(batch) => return Wake::Inbox(Some(batch)),
            Err(async_channel::TryRecvError::Closed) => return Wake::Inbox(None),
            Err(async_channel::TryRecvError::Empty) => {}
        }
    }
    if deadline.is_some_and(|d| d <= Instant::now()) {
        return Wake::Timer;
    }
    let mut recv = std::pin::pin!(async {
        if read_inbox {
            inbox.recv().await.ok()
        } else {
            futures_lite::future::pending().await
        }
    });
    let mut timer = match deadline {
        Some(at) => async_io::Timer::at(at),
        None => async_io::Timer::never(),
    };
    std::future::poll_fn(|cx| {
        if let Poll::Ready(batch) = recv.as_mut().poll(cx) {
            return Poll::Ready(Wake::Inbox(batch));
        }
        if actor.poll_links(cx).is_ready() {
            return Poll::Ready(Wake::Link);
        }
        if actor.poll_extra(cx).is_ready() {
            return Poll::Ready(Wake::Extra);
        }
        if Pin::new(&mut timer).poll(cx).is_ready() {
            return Poll::Ready(Wake::Timer);
        }
        Poll::Pending
    })
    .await
}
