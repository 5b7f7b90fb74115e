//! `smolrtc bench load`: a load generator for `smolrtc serve`, to measure what each peer
//! connection costs the service (benches/memory).
//!
//! It opens `--connections` peer connections to a running service, each through
//! `POST /api/offer` (complete SDP both ways) with one in-band channel `echo`, `--batch` set-ups
//! at a time. A connection counts as opened once its channel is open and one echo round
//! trip (`ping` → `ping`) came back. Then it prints one JSON line on stdout:
//!
//! `{"connections":N,"opened":n,"failed":f,"setup_seconds":s,"client_rss_kib":..,"client_fds":..}`
//!
//! and holds the connections open for `--hold` seconds, or until stdin closes, so a driver
//! can measure the service meanwhile; then it closes every peer and exits. Every step of a
//! set-up is bounded by `--step-timeout`; a connection that fails is counted, logged and
//! closed, the others go on.
//!
//! All client peers share `--threads` smolrtc threads (default one). Each peer needs a UDP
//! socket per host address (one with `--ice-address 127.0.0.1`); for a thousand
//! connections raise the descriptor limit first (`ulimit -n 65536`, as benches/memory does).

use super::peer::print_line;
use async_io::Async;
use clap::Args;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::LocalExecutor;
use smolrtc::channel::{ChannelInit, Message};
use smolrtc::dtls::Certificate;
use smolrtc::peer::{Config, Event, EventStream, PeerConnection};
use smolrtc::sdp::{Description, SdpType};
use smolrtc::Runtime;
use smolrtc::{Error, Result};
use std::cell::Cell;
use std::future::Future;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Options of `smolrtc bench load`.
#[derive(Args, Debug, Clone)]
pub struct LoadOptions {
    /// The service's base URL (plain http).
    #[arg(long, default_value = "http://127.0.0.1:8888")]
    pub url: String,
    /// Peer connections to open.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Set-ups run at once.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Hold the connections this many seconds; default: until stdin closes.
    #[arg(long, value_name = "SECONDS")]
    pub hold: Option<f64>,
    /// Longest wait for each step of a set-up (gathering, the HTTP answer, channel open,
    /// the echo), seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub step_timeout: f64,
    /// smolrtc threads the client peers are spread over.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// ICE host candidates, servers.
    #[command(flatten)]
    pub ice: crate::settings::IceSettings,
}

/// The line printed once every set-up has ended.
#[derive(Debug, serde::Serialize)]
pub struct LoadResult {
    /// Connections asked for.
    pub connections: usize,
    /// Connections whose channel opened and echoed.
    pub opened: usize,
    /// Connections that failed (timed out, refused, closed).
    pub failed: usize,
    /// First set-up started to last set-up ended, seconds.
    pub setup_seconds: f64,
    /// Resident memory of this process (VmRSS), KiB.
    pub client_rss_kib: Option<u64>,
    /// Open file descriptors of this process.
    pub client_fds: Option<usize>,
}

/// Where the service is: its address, the `Host` header and a path prefix.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
    prefix: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            Error::InvalidArgument(format!("--url must start with http://, got {url:?}").into())
        })?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if host.is_empty() {
            return Err(Error::InvalidArgument(
                format!("--url has no host: {url:?}").into(),
            ));
        }
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| Error::InvalidArgument(format!("--url {url:?}: {e}").into()))?
            .next()
            .ok_or_else(|| Error::InvalidArgument(format!("--url {url:?}: no address").into()))?;
        Ok(Self {
            addr,
            host: host.to_owned(),
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// `fut`, or an error naming `what` after `limit`.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    futures_lite::future::or(fut, async {
        async_io::Timer::after(limit).await;
        Err(Error::InvalidState(
            format!(
                "timed out after {:.0} s waiting for {what}",
                limit.as_secs_f64()
            )
            .into(),
        ))
    })
    .await
}

/// The next event `f` picks; an error if the connection ends first.
async fn until<T>(events: &mut EventStream, mut f: impl FnMut(Event) -> Option<T>) -> Result<T> {
    loop {
        match events.next().await {
            None => return Err(Error::Closed),
            Some(Event::Error(e)) => return Err(e),
            Some(e) => {
                if let Some(t) = f(e) {
                    return Ok(t);
                }
            }
        }
    }
}

/// Most bytes of an answer read from the service.
const MAX_REPLY: u64 = 1024 * 1024;

/// `POST <prefix>/api/offer` over HTTP/1.1 with `Connection: close`; the answer.
async fn post_offer(target: &Target, offer: &Description) -> Result<Description> {
    let body = offer.to_json();
    let head = format!(
        "POST {}/api/offer HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        target.prefix,
        target.host,
        body.len()
    );
    let mut stream = Async::<TcpStream>::connect(target.addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    (&mut stream).take(MAX_REPLY).read_to_end(&mut raw).await?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| Error::InvalidState("HTTP answer without a header end".into()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let reply = String::from_utf8_lossy(&raw[end + 4..]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Error::InvalidState("HTTP answer without a status".into()))?;
    if status != 200 {
        return Err(Error::InvalidState(
            format!("POST /api/offer: {status} {}", reply.trim()).into(),
        ));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(Error::InvalidState(
            "POST /api/offer: chunked answers are not supported".into(),
        ));
    }
    let answer = Description::from_json(&reply)?;
    if answer.kind != SdpType::Answer {
        return Err(Error::InvalidState(
            format!(
                "POST /api/offer: expected an answer, got {:?}",
                answer.kind.as_str()
            )
            .into(),
        ));
    }
    Ok(answer)
}

/// One connection, from offer to one echo round trip.
async fn set_up(
    pc: &PeerConnection,
    events: &mut EventStream,
    target: &Target,
    limit: Duration,
) -> Result<()> {
    let channel = pc
        .create_data_channel("echo", ChannelInit::default())
        .await?;
    let offer = pc.create_offer().await?;
    pc.set_local_description(offer).await?;
    bounded(limit, "gathering", async {
        until(events, |e| {
            matches!(e, Event::IceCandidate(None)).then_some(())
        })
        .await
    })
    .await?;
    let offer = pc.local_description().await.ok_or(Error::Closed)?;
    let answer = bounded(limit, "the service's answer", post_offer(target, &offer)).await?;
    pc.set_remote_description(answer).await?;
    bounded(limit, "channel open", async {
        // Our own channel: the service's rawrtc flow opens channels of its own first.
        until(events, |e| match e {
            Event::ChannelOpen(c) if c.label() == channel.label() => Some(()),
            _ => None,
        })
        .await
    })
    .await?;
    channel.send("ping").await?;
    bounded(limit, "the echo", async {
        until(events, |e| match e {
            Event::ChannelMessage(_, Message::Text(t)) if t == "ping" => Some(()),
            _ => None,
        })
        .await
    })
    .await
}

/// VmRSS of this process, KiB.
fn rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Open file descriptors of this process.
fn fd_count() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// Checks the options; returns the bound of each set-up step.
fn step_limit(opts: &LoadOptions) -> Result<Duration> {
    if opts.batch == 0 || opts.threads == 0 {
        return Err(Error::InvalidArgument(
            "--batch and --threads must be at least 1".into(),
        ));
    }
    if !(opts.step_timeout.is_finite() && opts.step_timeout > 0.0) {
        return Err(Error::InvalidArgument(
            "--step-timeout must be a positive number of seconds".into(),
        ));
    }
    Ok(Duration::from_secs_f64(opts.step_timeout.min(3600.0)))
}

/// The configuration every client peer is cloned from.
fn template(opts: &LoadOptions) -> Result<Config> {
    // One certificate for every client peer: the service's side is what is measured.
    let mut template = Config {
        certificate: Some(Certificate::generate()?),
        ..Config::default()
    };
    opts.ice
        .apply(&mut template.ice)
        .map_err(|e| Error::InvalidArgument(e.into()))?;
    Ok(template)
}

/// What the client peers share.
struct Load<'a> {
    ex: &'a Rc<LocalExecutor<'static>>,
    runtimes: Vec<Runtime>,
    template: Config,
    target: Rc<Target>,
    limit: Duration,
    /// Connections closed by the far side while held.
    lost: Rc<Cell<usize>>,
}

impl Load<'_> {
    /// Sets up connections `range` at once; keeps those that opened in `peers`, returns how
    /// many failed.
    async fn open_batch(
        &self,
        range: std::ops::Range<usize>,
        peers: &mut Vec<PeerConnection>,
    ) -> usize {
        let tasks: Vec<_> = range.clone().map(|i| self.spawn_set_up(i)).collect();
        let mut failed = 0;
        for (i, task) in range.zip(tasks) {
            match task.await {
                Ok((pc, events)) => {
                    self.watch(events);
                    peers.push(pc);
                }
                Err(e) => {
                    log::warn!("load{i}: {e}");
                    failed += 1;
                }
            }
        }
        failed
    }

    /// Sets up connection `i` on its own task; a peer that fails is closed.
    fn spawn_set_up(&self, i: usize) -> smol::Task<Result<(PeerConnection, EventStream)>> {
        let mut config = self.template.clone();
        config.name = format!("load{i}");
        let runtime = self.runtimes[i % self.runtimes.len()].clone();
        let target = self.target.clone();
        let limit = self.limit;
        self.ex.spawn(async move {
            let pc = PeerConnection::with_runtime(&runtime, config)?;
            let mut events = pc.events();
            match set_up(&pc, &mut events, &target, limit).await {
                Ok(()) => Ok((pc, events)),
                Err(e) => {
                    close(pc, limit).await;
                    Err(e)
                }
            }
        })
    }

    /// Keeps reading an open peer's events so nothing queues up; counts a lost connection.
    fn watch(&self, mut events: EventStream) {
        let lost = self.lost.clone();
        self.ex
            .spawn(async move {
                while let Some(e) = events.next().await {
                    if let Event::ConnectionState(
                        smolrtc::ConnectionState::Failed | smolrtc::ConnectionState::Closed,
                    ) = e
                    {
                        lost.set(lost.get() + 1);
                        break;
                    }
                }
                // Drain until the connection is gone.
                while events.next().await.is_some() {}
            })
            .detach();
    }

    /// Closes every peer at once; returns how many did not close in time.
    async fn close_all(&self, peers: Vec<PeerConnection>) -> usize {
        let limit = self.limit;
        let closing: Vec<_> = peers
            .into_iter()
            .map(|pc| self.ex.spawn(close(pc, limit)))
            .collect();
        let mut stuck = 0;
        for task in closing {
            if !task.await {
                stuck += 1;
            }
        }
        stuck
    }
}

/// Closes a peer within `limit`; false when it did not.
async fn close(pc: PeerConnection, limit: Duration) -> bool {
    bounded(limit, "close", async {
        pc.close().await;
        Ok(())
    })
    .await
    .is_ok()
}

/// Holds the connections for `--hold` seconds, or until stdin closes.
async fn hold(opts: &LoadOptions, open: usize) {
    match opts.hold {
        Some(s) if s.is_finite() && s >= 0.0 => {
            log::info!("holding {open} connections for {s} s");
            async_io::Timer::after(Duration::from_secs_f64(s.min(1e7))).await;
        }
        _ => {
            log::info!("holding {open} connections until stdin closes");
            smol::unblock(|| std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink()))
                .await
                .ok();
        }
    }
}

/// Runs the load: opens, reports, holds, closes. Returns the figures printed.
pub async fn run_load(opts: &LoadOptions, ex: &Rc<LocalExecutor<'static>>) -> Result<LoadResult> {
    let limit = step_limit(opts)?;
    let target = Rc::new(Target::parse(&opts.url)?);
    let runtimes = (0..opts.threads)
        .map(|_| Runtime::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    let load = Load {
        ex,
        runtimes,
        template: template(opts)?,
        target,
        limit,
        lost: Rc::new(Cell::new(0)),
    };
    log::info!(
        "bench load: {} connections to {} in batches of {}",
        opts.connections,
        opts.url,
        opts.batch
    );

    let mut peers: Vec<PeerConnection> = Vec::with_capacity(opts.connections.min(1 << 16));
    let mut failed = 0;
    let started = Instant::now();
    let mut next = 0;
    while next < opts.connections {
        let end = (next + opts.batch).min(opts.connections);
        failed += load.open_batch(next..end, &mut peers).await;
        next = end;
        log::info!(
            "opened {}/{} ({failed} failed, {:.1} s)",
            peers.len(),
            opts.connections,
            started.elapsed().as_secs_f64()
        );
    }
    let result = LoadResult {
        connections: opts.connections,
        opened: peers.len(),
        failed,
        setup_seconds: started.elapsed().as_secs_f64(),
        client_rss_kib: rss_kib(),
        client_fds: fd_count(),
    };
    print_line(&result)?;

    hold(opts, peers.len()).await;
    if load.lost.get() > 0 {
        log::warn!("{} connections were lost while held", load.lost.get());
    }
    log::info!("closing {} connections", peers.len());
    let stuck = load.close_all(peers).await;
    if stuck > 0 {
        log::warn!("{stuck} connections did not close in time");
    }
    Ok(result)
}

/// `smolrtc bench load`: see the module documentation. Fails only when connections were
/// asked for and none opened.
pub fn load(opts: LoadOptions) -> Result<()> {
    let ex = Rc::new(LocalExecutor::new());
    let result = futures_lite::future::block_on(ex.run(run_load(&opts, &ex)))?;
    log::info!(
        "bench load: {} opened, {} failed in {:.1} s",
        result.opened,
        result.failed,
        result.setup_seconds
    );
    if result.connections > 0 && result.opened == 0 {
        return Err(Error::InvalidState("no connection opened".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn urls_are_parsed() {
        let t = Target::parse("http://127.0.0.1:8888").unwrap();
        assert_eq!(t.addr.to_string(), "127.0.0.1:8888");
        assert_eq!((t.host.as_str(), t.prefix.as_str()), ("127.0.0.1:8888", ""));
        let t = Target::parse("http://127.0.0.1:9/rtc/").unwrap();
        assert_eq!(t.prefix, "/rtc");
        let t = Target::parse("http://127.0.0.1").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert!(Target::parse("https://127.0.0.1").is_err());
        assert!(Target::parse("http:///x").is_err());
    }
}
