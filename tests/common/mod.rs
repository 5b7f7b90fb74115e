//! Shared helpers for the loopback tests: two real peer connections over real UDP on
//! 127.0.0.1, signaled in-process.
#![allow(dead_code)]

use smolrtc::{Config, Description, Event, EventStream, PeerConnection};
use std::time::Duration;

pub mod http;
pub mod netns;

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub fn init_log() {
    let _ = env_logger::builder()
        .is_test(true)
        .parse_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
}

pub fn loopback_config(name: &str) -> Config {
    Config::loopback(name)
}

pub struct Peer {
    pub pc: PeerConnection,
    pub events: EventStream,
    /// Events read while looking for another one, kept for later `expect`s.
    backlog: std::collections::VecDeque<Event>,
}

impl Peer {
    pub fn new(name: &str) -> Self {
        Self::with_config(loopback_config(name))
    }

    pub fn with_config(config: Config) -> Self {
        Self::from_pc(PeerConnection::new(config).expect("peer connection"))
    }

    /// A peer on its own smolrtc thread (made in a network namespace, say).
    pub fn with_runtime(rt: &smolrtc::Runtime, config: Config) -> Self {
        Self::from_pc(PeerConnection::with_runtime(rt, config).expect("peer connection"))
    }

    fn from_pc(pc: PeerConnection) -> Self {
        let events = pc.events();
        Self {
            pc,
            events,
            backlog: Default::default(),
        }
    }

    /// Waits (bounded) for the first event `f` maps to `Some`, in arrival order; events
    /// passed over stay in a backlog for later calls.
    pub async fn expect<T>(&mut self, what: &str, f: impl FnMut(&Event) -> Option<T>) -> T {
        self.expect_within(TIMEOUT, what, f).await
    }

    /// [`Peer::expect`] with its own time limit.
    pub async fn expect_within<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        for i in 0..self.backlog.len() {
            if let Some(t) = f(&self.backlog[i]) {
                self.backlog.remove(i);
                return t;
            }
        }
        let deadline = async_io::Timer::after(limit);
        let events = &mut self.events;
        let backlog = &mut self.backlog;
        let found = futures_lite::future::or(
            async {
                while let Some(e) = events.next().await {
                    if let Some(t) = f(&e) {
                        return Some(t);
                    }
                    backlog.push_back(e);
                }
                None
            },
            async {
                deadline.await;
                None
            },
        )
        .await;
        found.unwrap_or_else(|| panic!("timed out or closed waiting for {what}"))
    }

    /// Every local candidate line trickled until end-of-candidates.
    pub async fn local_candidates(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let c = self
                .expect("candidate", |e| match e {
                    Event::IceCandidate(c) => Some(c.clone()),
                    _ => None,
                })
                .await;
            match c {
                Some(c) => out.push(c.candidate),
                None => return out,
            }
        }
    }

    /// The local description once gathering is complete (non-trickle, as rawrtc's tool).
    pub async fn complete_description(&mut self) -> Description {
        self.expect("gathering complete", |e| {
            matches!(e, Event::IceCandidate(None)).then_some(())
        })
        .await;
        self.pc
            .local_description()
            .await
            .expect("local description")
    }
}

/// Offer from `a`, answer from `b`, complete descriptions both ways.
pub async fn connect(a: &mut Peer, b: &mut Peer) {
    connect_editing(a, b, |_| {}, |_| {}).await;
}

/// [`connect`], with the descriptions changed in transit (as a signaling path might).
pub async fn connect_editing(
    a: &mut Peer,
    b: &mut Peer,
    edit_offer: impl FnOnce(&mut Description),
    edit_answer: impl FnOnce(&mut Description),
) {
    let offer = a.pc.create_offer().await.unwrap();
    a.pc.set_local_description(offer).await.unwrap();
    let mut offer = a.complete_description().await;
    edit_offer(&mut offer);
    b.pc.set_remote_description(offer).await.unwrap();
    let answer = b.pc.create_answer().await.unwrap();
    b.pc.set_local_description(answer).await.unwrap();
    let mut answer = b.complete_description().await;
    edit_answer(&mut answer);
    a.pc.set_remote_description(answer).await.unwrap();
}

pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(f)
}

/// The channel `label` once it is open.
pub async fn opened(p: &mut Peer, label: &str) -> smolrtc::DataChannel {
    let label = label.to_owned();
    p.expect(&format!("{label} open"), |e| match e {
        Event::ChannelOpen(c) if c.label() == label => Some(c.clone()),
        _ => None,
    })
    .await
}

/// The next message on the channel `label`.
pub async fn message(p: &mut Peer, label: &str) -> smolrtc::Message {
    let label = label.to_owned();
    p.expect(&format!("message on {label}"), |e| match e {
        Event::ChannelMessage(c, m) if c.label() == label => Some(m.clone()),
        _ => None,
    })
    .await
}
