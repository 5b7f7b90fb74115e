//! The device service (`smolrtc serve`): an HTTP server with the page and the signaling
//! API, sessions (one peer connection per browser) and the channel handlers that run on
//! them.
//!
//! Everything here lives on the smolrtc thread next to the peers' actors: the HTTP server
//! (`http`: the routes, admission and slow-client limits, Host/Origin/token checks), the
//! WebSocket signaling, the session table and one task per session that reads its events
//! and feeds its channel handlers ([`apps`]). A session ends when its connection fails (ICE
//! consent lost, DTLS failure) or closes (the browser's SCTP ABORT / close_notify, `DELETE
//! /whip/<id>`); then its peer connection is closed and every resource it held is freed.

mod api;
pub mod apps;
mod config;
mod error;
mod guard;
mod http;
mod limits;
mod metrics;
mod notify;
#[cfg(feature = "media")]
mod publish;
mod session;
#[cfg(feature = "media")]
mod sinks;
#[cfg(feature = "media")]
mod streams;
pub mod tls;
mod ws;

pub use config::*;
pub(crate) use limits::*;
#[cfg(feature = "media")]
pub use publish::{PublishConfig, BACKOFF as PUBLISH_BACKOFF};
pub(crate) use session::*;
#[cfg(feature = "media")]
pub use sinks::{SinkConfig, MAX_SINKS};
#[cfg(feature = "media")]
pub use streams::{check_stream_name, StreamConfig, MAX_STREAMS};
pub use tls::TlsIdentity;

use crate::channel::DataChannel;
use crate::error::Result;
use crate::runtime::Runtime;
use apps::Registry;
use async_channel::{Receiver, Sender};
pub(crate) use session::Shared;
use std::net::SocketAddr;
use std::time::Duration;

/// The MQTT device task, when the service signals through a broker too.
#[cfg(feature = "mqtt")]
type MqttTask = crate::mqtt::device::Device;
#[cfg(not(feature = "mqtt"))]
type MqttTask = std::convert::Infallible;

/// Serves until [`ServiceHandle::shutdown`] asks to stop, then closes every session and
/// says it is done.
async fn serve_until_stopped(
    shared: std::rc::Rc<Shared>,
    listener: Option<async_io::Async<std::net::TcpListener>>,
    stop: Receiver<Sender<()>>,
    mqtt: Option<MqttTask>,
) {
    // The listener is bound and this task serves it from here on.
    notify::notify("READY=1");
    let stopped = futures_lite::future::or(
        async {
            match listener {
                Some(l) => self::http::serve(shared.clone(), l).await,
                // `--listen none`: signaling through the broker only.
                None => futures_lite::future::pending().await,
            }
            None
        },
        async { stop.recv().await.ok() },
    )
    .await;
    notify::notify("STOPPING=1");
    // The publish legs DELETE their resources while the sources still run.
    #[cfg(feature = "media")]
    shared.publish.stop().await;
    #[cfg(feature = "media")]
    shared.streams.stop();
    let ids: Vec<String> = shared.list().into_iter().map(|s| s.0).collect();
    log::info!("shutting down: closing {} sessions", ids.len());
    for id in ids {
        shared.close(&id).await;
    }
    // Recordings are finished (synced, renamed into place) before the process may exit.
    #[cfg(feature = "media")]
    shared.sinks.finished(Duration::from_secs(2)).await;
    if let Some(m) = mqtt {
        #[cfg(feature = "mqtt")]
        m.stop().await;
        #[cfg(not(feature = "mqtt"))]
        match m {}
    }
    if let Some(done) = stopped {
        let _ = done.try_send(());
    }
}

/// The device service: an HTTP server with the page and the signaling API, and channel
/// handlers chosen by label. The endpoints are in `service::http` (and docs/SERVICE.md).
pub struct Service {
    config: ServiceConfig,
    registry: Registry,
}

/// A running service.
pub struct ServiceHandle {
    /// The address the HTTP server is bound to (0.0.0.0:0 without one).
    pub addr: SocketAddr,
    stop: Sender<Sender<()>>,
    reports: Receiver<serde_json::Value>,
}

/// Most client reports kept for [`ServiceHandle::next_report`]; older ones are dropped.
const REPORTS_KEPT: usize = 16;

impl ServiceHandle {
    /// The next report a page posted to `POST /api/report` (its self-test results), waiting
    /// at most `timeout`.
    pub fn next_report(&self, timeout: Duration) -> Option<serde_json::Value> {
        futures_lite::future::block_on(futures_lite::future::or(
            async { self.reports.recv().await.ok() },
            async {
                async_io::Timer::after(timeout).await;
                None
            },
        ))
    }

    /// Closes every session (channels, SCTP ABORT, DTLS close_notify) and stops accepting;
    /// returns when done or after a few seconds.
    pub fn shutdown(&self) {
        let (tx, rx) = async_channel::bounded(1);
        if self.stop.try_send(tx).is_ok() {
            futures_lite::future::block_on(futures_lite::future::or(
                async {
                    let _ = rx.recv().await;
                },
                async {
                    async_io::Timer::after(Duration::from_secs(3)).await;
                },
            ));
        }
    }
}

impl Service {
    /// A service with the built-in handlers (`echo`, `discard`, `chargen`, rawrtc's noises).
    pub fn new(config: ServiceConfig) -> Self {
        Self {
            config,
            registry: Registry::builtin(),
        }
    }

    /// Runs `handler` for channels labelled `label` (see [`crate::service::apps`]).
    pub fn handle<F, Fut>(&mut self, label: &str, handler: F) -> &mut Self
    where
        F: Fn(DataChannel, crate::service::apps::ChannelEvents) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        self.registry.register(label, handler);
        self
    }

    /// The handler registry, to add or replace handlers.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Binds the listener (errors now, not later) and serves on `runtime`'s thread.
    pub fn start(mut self, runtime: &Runtime) -> Result<ServiceHandle> {
        self.prepare(runtime)?;
        let token = self.config.token.is_some();
        if self.config.device_id.is_empty() {
            self.config.device_id =
                session::machine_host_name().unwrap_or_else(|| "smolrtc".into());
        }
        #[cfg(feature = "mqtt")]
        if let Some(m) = &mut self.config.mqtt {
            crate::mqtt::device::check(m, &self.config.device_id)?;
            // The status topic names the streams a client may ask for (`?stream=`).
            #[cfg(feature = "media")]
            if m.streams.is_empty() {
                m.streams = self.config.streams.iter().map(|s| s.name.clone()).collect();
            }
        }
        // `--listen none`: no HTTP server (the address reported is 0.0.0.0:0).
        let (listener, addr) = if self.config.serve_http {
            let listener = std::net::TcpListener::bind(self.config.listen)?;
            let addr = listener.local_addr()?;
            (Some(async_io::Async::new(listener)?), addr)
        } else {
            (None, SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        let http = listener.is_some();
        let tls = self.config.tls.is_some();
        let (stop_tx, stop_rx) = async_channel::bounded::<Sender<()>>(1);
        let (reports_tx, reports_rx) = async_channel::bounded(REPORTS_KEPT);
        let rt = runtime.clone();
        runtime.spawn_actors(move |ex| {
            let shared = Shared::new(self.config, self.registry, rt, ex.clone(), reports_tx);
            #[cfg(feature = "mqtt")]
            let mqtt = crate::mqtt::device::start(&shared);
            #[cfg(not(feature = "mqtt"))]
            let mqtt: Option<MqttTask> = None;
            #[cfg(feature = "media")]
            publish::start(&shared);
            ex.spawn(serve_until_stopped(shared, listener, stop_rx, mqtt))
                .detach();
            if let Some(every) = notify::watchdog_interval() {
                ex.spawn(notify::watchdog(every)).detach();
            }
        });
        if !http {
            log::info!("no HTTP server (listen none)");
        } else {
            log::info!(
                "listening on {}://{addr}{}",
                if tls { "https" } else { "http" },
                if token {
                    " (API behind a bearer token)"
                } else {
                    ""
                }
            );
        }
        Ok(ServiceHandle {
            addr,
            stop: stop_tx,
            reports: reports_rx,
        })
    }

    /// Checks the configuration and fills in what it derives: the single UDP port, the
    /// non-trickle answers' gathering wait.
    fn prepare(&mut self, runtime: &Runtime) -> Result<()> {
        self.config.validate()?;
        #[cfg(feature = "media")]
        streams::check_streams(&self.config.streams)?;
        #[cfg(feature = "media")]
        sinks::check_sinks(&self.config.sinks)?;
        #[cfg(feature = "media")]
        {
            publish::check_publish(&self.config.publish, &self.config.streams)?;
            publish::check_tls(&self.config.publish, &self.config.peer.ice.tls_roots)?;
        }
        if let Some(port) = self.config.single_port {
            let shared = crate::ice::SharedPort::bind(runtime, &self.config.peer.ice.hosts, port)?;
            self.config.peer.ice.shared_port = Some(shared);
        }
        // A non-trickle answer waits for the servers' answers (or their timeout).
        self.config.gather_timeout = self
            .config
            .gather_timeout
            .max(self.config.peer.ice.gather_timeout + Duration::from_secs(1));
        Ok(())
    }

    /// Serves on the process-wide smolrtc thread until SIGINT or SIGTERM, then closes every
    /// session cleanly.
    pub fn run(self) -> Result<()> {
        let handle = self.start(Runtime::global())?;
        let mut signals =
            async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])?;
        let sig = futures_lite::future::block_on(futures_lite::StreamExt::next(&mut signals));
        match sig {
            Some(Ok(sig)) => log::info!("{sig:?}: stopping"),
            _ => log::info!("stopping"),
        }
        handle.shutdown();
        Ok(())
    }
}
