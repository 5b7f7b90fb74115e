//! [`Link`]: a one-way, batching, never-blocking connection to another actor's inbox.

use async_channel::{Sender, TrySendError};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
