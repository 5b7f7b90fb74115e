//! The smolrtc thread: one `LocalExecutor` that runs every actor of every peer connection
//! handed to it. Other threads reach it only through channels (the `Send` handles).

use async_channel::{Receiver, Sender};
use smol::LocalExecutor;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce(&Rc<LocalExecutor<'static>>) + Send>;

/// How long the thread keeps running actors after the last handle is gone, so closing peers
/// can still send their SCTP ABORT and DTLS close_notify.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A handle to a smolrtc thread. Cloning is cheap; the thread ends (after letting running
/// actors finish, at most `DRAIN_GRACE`, 2 s) when the last clone is dropped.
#[derive(Clone)]
pub struct Runtime {
    jobs: Arc<Sender<Job>>,
}

impl Runtime {
    /// Starts a new smolrtc thread.
    pub fn new() -> std::io::Result<Self> {
        let (tx, rx) = async_channel::unbounded::<Job>();
        std::thread::Builder::new()
            .name("smolrtc".into())
            .spawn(move || run(rx))?;
        Ok(Self { jobs: Arc::new(tx) })
    }

    /// The process-wide default thread, started on first use.
    pub fn global() -> &'static Runtime {
        static GLOBAL: OnceLock<Runtime> = OnceLock::new();
        // A failed thread spawn at start-up leaves nothing to run peers on.
        GLOBAL.get_or_init(|| Runtime::new().expect("cannot start the smolrtc thread"))
    }

    /// Runs `build` on the smolrtc thread with its executor, to spawn a set of actors.
    pub(crate) fn spawn_actors<F>(&self, build: F)
    where
        F: FnOnce(&Rc<LocalExecutor<'static>>) + Send + 'static,
    {
        let job: Job = Box::new(move |ex| build(ex));
        let _ = self.jobs.try_send(job);
    }

    /// Runs `make()` on the smolrtc thread and spawns the (non-`Send`) future it returns.
    pub fn spawn<F, Fut>(&self, make: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let job: Job = Box::new(move |ex| ex.spawn(make()).detach());
        // The receiver lives as long as any Runtime clone (we hold one), so this cannot fail.
        let _ = self.jobs.try_send(job);
    }
}

fn run(jobs: Receiver<Job>) {
    let ex = Rc::new(LocalExecutor::new());
    let ex2 = ex.clone();
    // async-io's block_on: this thread polls the reactor itself while idle. With
    // futures-lite's, every socket event went through async-io's fallback thread and a
    // futex wake-up (measured: 2-3x the CPU per byte and bimodal throughput).
    async_io::block_on(ex.run(async move {
        while let Ok(job) = jobs.recv().await {
            job(&ex2);
        }
        let until = Instant::now() + DRAIN_GRACE;
        while !ex2.is_empty() && Instant::now() < until {
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
    }));
}
