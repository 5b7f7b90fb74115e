//! Actor plumbing: the smolrtc thread, links between actors, and the one actor driver.
//!
//! Every actor is an async task on one `smol::LocalExecutor`. It owns one engine, reads one
//! bounded inbox of batches, and talks to its neighbours through [`Link`]s; [`drive`] runs
//! it (see [`Actor`] for the loop every actor shares). A link never makes its owner wait:
//! items are queued locally and handed over with `try_send`; when the neighbour's inbox is
//! full, one send stays in flight and the actor keeps serving its own inbox meanwhile
//! (docs/ARCHITECTURE.md, "Backpressure"). App-ward actors look at
//! [`Link::is_backlogged`] to stop pulling data from their engine, so a slow application
//! shrinks the SCTP receive window instead of stalling the executor.

mod actor;
mod link;
mod thread;

pub(crate) use actor::{drive, Actor};
pub(crate) use link::{poll_links, Link};
pub use thread::Runtime;

use async_channel::Sender;

/// Capacity of every actor inbox, counted in batches (each up to 256 items). async-channel
/// allocates every slot when an inbox is made, so this is paid by each idle connection: 16
/// instead of 64 took 10 KiB off each (84.5 -> 74.3 KiB at 1000, `benches/memory`) with the
/// same throughput (docs/FOOTPRINT.md, "Memory"); a full inbox only merges more per batch.
pub(crate) const INBOX_BATCHES: usize = 16;
/// App-ward queues hold whole messages, so they are kept short: inbox capacity (batches)
/// and batch size of the SCTP → router and router → application hops. At most
/// `APP_BATCHES * APP_BATCH` messages wait in each before SCTP stops reading.
pub(crate) const APP_BATCHES: usize = 4;
/// See [`APP_BATCHES`].
pub(crate) const APP_BATCH: usize = 16;

/// One-shot reply channel used by API calls that wait for an actor's answer.
pub(crate) type Reply<T> = Sender<T>;

/// Makes a reply channel and the receiver to await on.
pub(crate) fn reply_channel<T>() -> (Reply<T>, async_channel::Receiver<T>) {
    async_channel::bounded(1)
}
