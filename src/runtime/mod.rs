//! Actor plumbing: the smolrtc thread, links between actors, and the wake-up select.
//!
//! Every actor is an async task on one `smol::LocalExecutor`. It owns one engine, reads one
//! (or two) bounded inboxes, and talks to its neighbours through [`Link`]s. A link never makes
//! its owner wait: items are queued locally and handed over with `try_send`; when the
//! neighbour's inbox is full, one send stays in flight and the actor keeps serving its own
//! inbox meanwhile (docs/ARCHITECTURE.md, "Backpressure"). App-ward actors look at
//! [`Link::is_backlogged`] to stop pulling data from their engine, so a slow application
//! shrinks the SCTP receive window instead of stalling the executor.

mod thread;

pub use thread::Runtime;

use async_channel::{Sender, TrySendError};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Capacity of every actor inbox, counted in batches.
pub(crate) const INBOX_BATCHES: usize = 64;
/// App-ward queues hold whole messages, so they are kept short: inbox capacity (batches)
/// and batch size of the SCTP → router and router → application hops. At most
/// `APP_BATCHES * APP_BATCH` messages wait in each before SCTP stops reading.
pub(crate) const APP_BATCHES: usize = 4;
/// See [`APP_BATCHES`].
pub(crate) const APP_BATCH: usize = 16;
/// Most items merged into one batch before a new one is started.
const BATCH_MAX: usize = 256;

type InFlight = Pin<Box<dyn Future<Output = bool>>>;

/// A one-way, batching, never-blocking connection to another actor's inbox.
pub(crate) struct Link<T: 'static> {
    tx: Sender<Vec<T>>,
    batch_max: usize,
    queue: VecDeque<Vec<T>>,
    inflight: Option<InFlight>,
    closed: bool,
}

impl<T: 'static> Link<T> {
    /// Wraps the sending side of a neighbour's inbox.
    pub fn new(tx: Sender<Vec<T>>) -> Self {
        Self::with_batch(tx, BATCH_MAX)
    }

    /// Like [`Link::new`], with at most `batch_max` items per batch: with the inbox's
    /// capacity this bounds how many items can wait in the neighbour's inbox.
    pub fn with_batch(tx: Sender<Vec<T>>, batch_max: usize) -> Self {
        Self {
            tx,
            batch_max: batch_max.max(1),
            queue: VecDeque::new(),
            inflight: None,
            closed: false,
        }
    }

    /// Queues one item; it leaves with the next [`Link::flush`].
    pub fn push(&mut self, item: T) {
        if self.closed {
            return;
        }
        match self.queue.back_mut() {
            Some(batch) if batch.len() < self.batch_max => batch.push(item),
            _ => {
                let mut batch = Vec::with_capacity(8);
                batch.push(item);
                self.queue.push_back(batch);
            }
        }
    }

    /// Hands queued batches to the neighbour without waiting. When its inbox is full, the
    /// oldest batch stays in flight until [`Link::poll_inflight`] completes it.
    pub fn flush(&mut self) {
        while self.inflight.is_none() {
            let Some(batch) = self.queue.pop_front() else {
                return;
            };
            match self.tx.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(batch)) => {
                    let tx = self.tx.clone();
                    self.inflight = Some(Box::pin(async move { tx.send(batch).await.is_err() }));
                }
                Err(TrySendError::Closed(_)) => {
                    self.closed = true;
                    self.queue.clear();
                }
            }
        }
    }

    /// True while a batch waits for room in the neighbour's inbox.
    pub fn is_backlogged(&self) -> bool {
        self.inflight.is_some()
    }

    /// True once the neighbour's inbox is gone.
    pub fn is_closed(&self) -> bool {
        self.closed || self.tx.is_closed()
    }

    /// Drives the in-flight send; ready once it has been delivered (or the inbox closed).
    pub fn poll_inflight(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(fut) = self.inflight.as_mut() else {
            return Poll::Pending;
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(closed) => {
                self.inflight = None;
                if closed {
                    self.closed = true;
                    self.queue.clear();
                }
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Pending until any of `links` finishes its in-flight send.
pub(crate) fn poll_links(links: &mut [&mut dyn PollInflight], cx: &mut Context<'_>) -> Poll<()> {
    for link in links.iter_mut() {
        if link.poll_inflight_dyn(cx).is_ready() {
            return Poll::Ready(());
        }
    }
    Poll::Pending
}

/// Object-safe view of [`Link::poll_inflight`], so one select can watch links of any type.
pub(crate) trait PollInflight {
    /// See [`Link::poll_inflight`].
    fn poll_inflight_dyn(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

impl<T: 'static> PollInflight for Link<T> {
    fn poll_inflight_dyn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_inflight(cx)
    }
}

/// What woke an actor up.
pub(crate) enum Wake<M> {
    /// A batch from the inbox, or `None` when every sender is gone.
    Inbox(Option<Vec<M>>),
    /// The engine's deadline passed.
    Timer,
    /// A link delivered its in-flight batch; queued work may move on.
    Link,
    /// The actor's own extra source is ready.
    Extra,
}

/// One-shot reply channel used by API calls that wait for an actor's answer.
pub(crate) type Reply<T> = Sender<T>;

/// Makes a reply channel and the receiver to await on.
pub(crate) fn reply_channel<T>() -> (Reply<T>, async_channel::Receiver<T>) {
    async_channel::bounded(1)
}

/// Sleeps until the inbox has a batch, the deadline passes, a link un-blocks, or `extra`
/// (an actor's own event source, such as its sockets or a second inbox) is ready.
///
/// With `read_inbox == false` the inbox is left alone (the actor is holding back input
/// because a neighbour is backlogged); the timer, links and `extra` still wake it.
pub(crate) async fn wait<M>(
    inbox: &async_channel::Receiver<Vec<M>>,
    read_inbox: bool,
    deadline: Option<std::time::Instant>,
    links: &mut [&mut dyn PollInflight],
    extra: &mut dyn FnMut(&mut Context<'_>) -> Poll<()>,
) -> Wake<M> {
    if read_inbox {
        match inbox.try_recv() {
            Ok(batch) => return Wake::Inbox(Some(batch)),
            Err(async_channel::TryRecvError::Closed) => return Wake::Inbox(None),
            Err(async_channel::TryRecvError::Empty) => {}
        }
    }
    if deadline.is_some_and(|d| d <= std::time::Instant::now()) {
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
        if poll_links(links, cx).is_ready() {
            return Poll::Ready(Wake::Link);
        }
        if extra(cx).is_ready() {
            return Poll::Ready(Wake::Extra);
        }
        if Pin::new(&mut timer).poll(cx).is_ready() {
            return Poll::Ready(Wake::Timer);
        }
        Poll::Pending
    })
    .await
}

/// An `extra` source for [`wait`] that never fires.
pub(crate) fn no_extra(_: &mut Context<'_>) -> Poll<()> {
    Poll::Pending
}
