//! `smolrtc bench peer`: one side of a throughput benchmark against any other peer that
//! speaks the same line protocol on stdin/stdout (another `smolrtc bench peer`, the aiortc
//! peer in `benches/peers/`, ...), so stacks can be compared in one run.
//!
//! Protocol: the offerer prints `{"type":"offer","sdp":..}` (complete SDP) and reads the
//! answer line; the answerer reads the offer and prints the answer. The offerer opens the
//! channel `bench`. The sender sends `--bytes` bytes in `--message-size` messages, byte i
//! of the stream being `i % 251`, paced by its buffered amount, then the text `done`; the
//! receiver checks every byte and answers `ack <bytes>`. Each side ends with one line
//! `{"result":{..}}` (or `{"error":".."}` and exit status 1).

use bytes::Bytes;
use clap::{Args, ValueEnum};
use smolrtc::channel::{ChannelInit, DataChannel, Message};
use smolrtc::peer::{Config, Event, EventStream, PeerConnection};
use smolrtc::sdp::Description;
use smolrtc::{Error, Result};
use std::time::{Duration, Instant};

/// Which side of the offer/answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Makes the offer and opens the channel.
    Offer,
    /// Answers.
    Answer,
}

/// Which way the data goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// This side sends.
    Send,
    /// This side receives and checks.
    Recv,
}

/// Options of `smolrtc bench peer`.
#[derive(Args, Debug, Clone)]
pub struct PeerOptions {
    /// Offer or answer.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Send or receive.
    #[arg(long, value_enum)]
    pub direction: Direction,
    /// Bytes to move.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub bytes: u64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub message_size: usize,
    /// Unordered channel.
    #[arg(long)]
    pub unordered: bool,
    /// Partially reliable: at most this many retransmissions.
    #[arg(long, conflicts_with = "max_packet_life_time")]
    pub max_retransmits: Option<u16>,
    /// Partially reliable: retransmit for at most this many milliseconds.
    #[arg(long)]
    pub max_packet_life_time: Option<u16>,
    /// Keep at most this many bytes buffered in the sending channel. The buffered amount
    /// counts bytes until the peer acknowledges them, so this must exceed the SCTP window
    /// (bandwidth × round-trip time) or it caps throughput.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub high_water: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// SCTP receive window (advertised a_rwnd) in bytes; default: the library's.
    #[arg(long)]
    pub receive_window: Option<u32>,
    /// Pace SCTP DATA at the congestion window's rate (`SctpConfig::pacing`, off by
    /// default).
    #[arg(long)]
    pub pacing: bool,
    /// ICE host candidates, servers.
    #[command(flatten)]
    pub ice: crate::settings::IceSettings,
}

impl PeerOptions {
    fn reliable(&self) -> bool {
        self.max_retransmits.is_none() && self.max_packet_life_time.is_none()
    }
}

/// One side's figures.
#[derive(Debug, serde::Serialize)]
pub struct PeerResult {
    /// "offer" or "answer".
    pub role: &'static str,
    /// "send" or "recv".
    pub direction: &'static str,
    /// Bytes sent, or received and checked.
    pub bytes: u64,
    /// Messages sent or received.
    pub messages: u64,
    /// Sender: first send to the ack; receiver: first to last byte.
    pub seconds: f64,
    /// `bytes * 8 / seconds / 1e6`.
    pub mbps: f64,
    /// Offerer: create_offer to channel open, milliseconds.
    pub setup_ms: Option<f64>,
    /// Every byte checked and (reliable channels) every byte arrived.
    pub intact: bool,
    /// "smolrtc".
    pub peer: &'static str,
    /// The crate version.
    pub version: &'static str,
    /// Peak resident memory of this process, KiB.
    pub rss_kib: Option<u64>,
    /// User + system CPU time of this process, seconds.
    pub cpu_seconds: Option<f64>,
}

/// The stream pattern: byte `i` is `i % 251`; one buffer long enough to slice any message
/// from any offset.
struct Pattern(Bytes);

impl Pattern {
    fn new(message_size: usize) -> Self {
        Self(
            (0..message_size + 251)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>()
                .into(),
        )
    }
    fn at(&self, offset: u64, len: usize) -> Bytes {
        let from = (offset % 251) as usize;
        self.0.slice(from..from + len)
    }
    fn check(&self, offset: u64, data: &[u8]) -> bool {
        let from = (offset % 251) as usize;
        data.len() <= self.0.len() - from && self.0[from..from + data.len()] == *data
    }
}

async fn next_event(events: &mut EventStream, deadline: Instant, what: &str) -> Result<Event> {
    let next = futures_lite::future::or(async { Some(events.next().await) }, async {
        async_io::Timer::at(deadline).await;
        None
    })
    .await;
    match next {
        None => Err(Error::InvalidState(
            format!("timed out waiting for {what}").into(),
        )),
        Some(None) => Err(Error::Closed),
        Some(Some(Event::Error(e))) => Err(e),
        Some(Some(Event::ConnectionState(smolrtc::ConnectionState::Failed))) => Err(
            Error::InvalidState(format!("connection failed while waiting for {what}").into()),
        ),
        Some(Some(e)) => Ok(e),
    }
}

async fn until<T>(
    events: &mut EventStream,
    deadline: Instant,
    what: &str,
    mut f: impl FnMut(Event) -> Option<T>,
) -> Result<T> {
    loop {
        if let Some(t) = f(next_event(events, deadline, what).await?) {
            return Ok(t);
        }
    }
}

/// Prints one JSON line on stdout and flushes it (the stdio protocol's unit).
pub(crate) fn print_line(value: &impl serde::Serialize) -> Result<()> {
    use std::io::Write;
    let text =
        serde_json::to_string(value).map_err(|e| Error::InvalidState(e.to_string().into()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Waits for the end of gathering, then prints the local description (complete SDP).
async fn print_complete_description(
    pc: &PeerConnection,
    events: &mut EventStream,
    deadline: Instant,
) -> Result<()> {
    until(events, deadline, "gathering", |e| {
        matches!(e, Event::IceCandidate(None)).then_some(())
    })
    .await?;
    print_line(&pc.local_description().await.ok_or(Error::Closed)?)
}

/// The next stdin line, read on a thread of its own so the executor is never blocked.
async fn read_description() -> Result<Description> {
    let line = smol::unblock(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await?;
    if line.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "stdin closed before a description".into(),
        ));
    }
    crate::console::parse_remote(line.trim()).map_err(|e| Error::InvalidArgument(e.into()))
}

/// The peer of `opts`: its name, ICE settings and receive window.
fn peer_config(opts: &PeerOptions) -> Result<Config> {
    let mut config = Config {
        name: format!("{:?}", opts.role).to_lowercase(),
        ..Config::default()
    };
    opts.ice
        .apply(&mut config.ice)
        .map_err(|e| Error::InvalidArgument(e.into()))?;
    if let Some(window) = opts.receive_window {
        config.sctp.receive_buffer = window;
    }
    config.sctp.pacing = opts.pacing;
    Ok(config)
}

/// The offerer's set-up: opens the channel, prints the offer, reads the answer; returns the
/// channel once open.
async fn offer(
    opts: &PeerOptions,
    pc: &PeerConnection,
    events: &mut EventStream,
    deadline: Instant,
) -> Result<DataChannel> {
    let init = ChannelInit {
        unordered: opts.unordered,
        max_retransmits: opts.max_retransmits,
        max_packet_life_time: opts.max_packet_life_time,
        ..ChannelInit::default()
    };
    let channel = pc.create_data_channel("bench", init).await?;
    let offer = pc.create_offer().await?;
    pc.set_local_description(offer).await?;
    print_complete_description(pc, events, deadline).await?;
    pc.set_remote_description(read_description().await?).await?;
    until(events, deadline, "channel open", |e| {
        matches!(e, Event::ChannelOpen(_)).then_some(())
    })
    .await?;
    Ok(channel)
}

/// The answerer's set-up: reads the offer, prints the answer; returns the offerer's channel
/// once open.
async fn answer(
    pc: &PeerConnection,
    events: &mut EventStream,
    deadline: Instant,
) -> Result<DataChannel> {
    pc.set_remote_description(read_description().await?).await?;
    let answer = pc.create_answer().await?;
    pc.set_local_description(answer).await?;
    print_complete_description(pc, events, deadline).await?;
    until(events, deadline, "channel open", |e| match e {
        Event::ChannelOpen(c) => Some(c),
        _ => None,
    })
    .await
}

/// Runs one side of the benchmark.
pub async fn run_peer(opts: &PeerOptions) -> Result<PeerResult> {
    if opts.message_size == 0 {
        return Err(Error::InvalidArgument(
            "--message-size must be at least 1".into(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(opts.timeout);
    let pc = PeerConnection::new(peer_config(opts)?)?;
    let mut events = pc.events();
    let started = Instant::now();
    let (channel, setup_ms) = match opts.role {
        Role::Offer => {
            let channel = offer(opts, &pc, &mut events, deadline).await?;
            (channel, Some(started.elapsed().as_secs_f64() * 1000.0))
        }
        Role::Answer => (answer(&pc, &mut events, deadline).await?, None),
    };
    log::info!("bench: channel open");
    let pattern = Pattern::new(opts.message_size);
    let (bytes, messages, seconds, intact) = match opts.direction {
        Direction::Send => send(opts, &channel, &mut events, &pattern, deadline).await?,
        Direction::Recv => receive(opts, &channel, &mut events, &pattern, deadline).await?,
    };
    pc.close().await;
    let (rss_kib, cpu_seconds) = process_usage();
    Ok(PeerResult {
        role: match opts.role {
            Role::Offer => "offer",
            Role::Answer => "answer",
        },
        direction: match opts.direction {
            Direction::Send => "send",
            Direction::Recv => "recv",
        },
        bytes,
        messages,
        seconds,
        mbps: bytes as f64 * 8.0 / seconds.max(1e-9) / 1e6,
        setup_ms,
        intact,
        peer: "smolrtc",
        version: env!("CARGO_PKG_VERSION"),
        rss_kib,
        cpu_seconds,
    })
}

async fn send(
    opts: &PeerOptions,
    ch: &DataChannel,
    events: &mut EventStream,
    pattern: &Pattern,
    deadline: Instant,
) -> Result<(u64, u64, f64, bool)> {
    super::check_message_size(opts.message_size, ch)?;
    ch.set_buffered_amount_low_threshold(opts.high_water / 2);
    let began = Instant::now();
    let (mut sent, mut messages) = (0u64, 0u64);
    while sent < opts.bytes {
        while ch.buffered_amount() > opts.high_water {
            until(events, deadline, "buffered amount low", |e| {
                matches!(e, Event::ChannelBufferedAmountLow(_)).then_some(())
            })
            .await?;
        }
        let n = (opts.message_size as u64).min(opts.bytes - sent) as usize;
        ch.send(pattern.at(sent, n)).await?;
        sent += n as u64;
        messages += 1;
    }
    ch.send("done").await?;
    let acked = until(events, deadline, "ack", |e| match e {
        Event::ChannelMessage(_, Message::Text(t)) => t
            .strip_prefix("ack ")
            .and_then(|n| n.trim().parse::<u64>().ok()),
        _ => None,
    })
    .await?;
    let seconds = began.elapsed().as_secs_f64();
    let intact = !opts.reliable() || acked == sent;
    Ok((sent, messages, seconds, intact))
}

async fn receive(
    opts: &PeerOptions,
    ch: &DataChannel,
    events: &mut EventStream,
    pattern: &Pattern,
    deadline: Instant,
) -> Result<(u64, u64, f64, bool)> {
    let ordered_reliable = !opts.unordered && opts.reliable();
    let (mut got, mut messages, mut intact) = (0u64, 0u64, true);
    let mut done = false;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    loop {
        // Partially reliable: the last messages (or `done`) may never come.
        let wait = if opts.reliable() {
            deadline
        } else if first.is_some() {
            (Instant::now() + Duration::from_secs(2)).min(deadline)
        } else {
            deadline
        };
        let event = match next_event(events, wait, "data").await {
            Ok(e) => e,
            Err(Error::InvalidState(_)) if !opts.reliable() && first.is_some() => break,
            Err(e) => return Err(e),
        };
        match event {
            Event::ChannelMessage(_, Message::Binary(b)) => {
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
                // In order, byte i is i % 251; out of order, each message is still a run
                // of the pattern.
                let ok = if ordered_reliable {
                    pattern.check(got, &b)
                } else {
                    b.is_empty() || pattern.check(u64::from(b[0]), &b)
                };
                if !ok {
                    log::error!("bench: corrupt message at byte {got}");
                    intact = false;
                }
                got += b.len() as u64;
                messages += 1;
                if done && got >= opts.bytes {
                    break;
                }
            }
            // Unordered, `done` may overtake the last data: reliable waits for every byte.
            Event::ChannelMessage(_, Message::Text(t)) if t == "done" => {
                if !opts.reliable() || got >= opts.bytes {
                    break;
                }
                done = true;
            }
            Event::ChannelClosed(_) => break,
            _ => {}
        }
    }
    if opts.reliable() && got != opts.bytes {
        intact = false;
    }
    ch.send(format!("ack {got}")).await?;
    // The sender hangs up once it has the ack; closing first could abort the ack while
    // SCTP still retransmits it on a lossy link.
    let hang_up = (Instant::now() + Duration::from_secs(15)).min(deadline);
    let _ = until(events, hang_up, "the sender to close", |e| {
        matches!(
            e,
            Event::ChannelClosed(_)
                | Event::ConnectionState(
                    smolrtc::ConnectionState::Closed | smolrtc::ConnectionState::Failed
                )
        )
        .then_some(())
    })
    .await;
    let seconds = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    Ok((got, messages, seconds, intact))
}

/// Peak RSS (KiB) and CPU seconds of this process, from getrusage-like /proc files.
fn process_usage() -> (Option<u64>, Option<f64>) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        });
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the ")" of the command name: utime is 14th, stime 15th overall.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        });
    (rss, cpu)
}

/// `smolrtc bench peer`: runs one side, prints `{"result":..}` (or `{"error":..}`).
pub fn peer(opts: PeerOptions) -> Result<()> {
    match futures_lite::future::block_on(run_peer(&opts)) {
        Ok(result) => {
            log::info!(
                "bench: {} {} bytes in {:.3} s: {:.1} Mbit/s",
                result.direction,
                result.bytes,
                result.seconds,
                result.mbps
            );
            print_line(&serde_json::json!({ "result": result }))
        }
        Err(e) => {
            let _ = print_line(&serde_json::json!({ "error": e.to_string() }));
            Err(e)
        }
    }
}
