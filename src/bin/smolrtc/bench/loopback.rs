//! `smolrtc bench loopback`: two peers in this process, each on its own smolrtc thread,
//! over real UDP on 127.0.0.1.
//!
//! Measures connection setup (create_offer → channel open on both sides, complete SDP
//! exchanged in-process) and the throughput of one reliable ordered in-band channel, the
//! sender paced by its buffered amount as a browser page would be. Every received byte is
//! counted and the pattern checked, so a fast wrong answer cannot pass.

use bytes::Bytes;
use clap::Args;
use smolrtc::channel::{ChannelInit, DataChannel, Message};
use smolrtc::peer::{Config, Event, EventStream, PeerConnection};
use smolrtc::Runtime;
use smolrtc::{Error, Result};
use std::time::{Duration, Instant};

/// Options of `smolrtc bench loopback`.
#[derive(Args, Debug, Clone)]
pub struct LoopbackOptions {
    /// Bytes to move.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub bytes: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub message_size: usize,
    /// Keep at most this many bytes buffered in the sending channel. The buffered amount
    /// counts bytes until the peer acknowledges them, so this must exceed the SCTP window
    /// (bandwidth × round-trip time) or it caps throughput.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub high_water: usize,
}

/// What one run measured.
#[derive(Debug, serde::Serialize)]
pub struct LoopbackResult {
    /// create_offer to channel open on both sides, milliseconds.
    pub setup_ms: f64,
    /// Bytes received and checked.
    pub bytes: usize,
    /// Transfer time, first send to last byte received, seconds.
    pub seconds: f64,
    /// Throughput in Mbit/s (10^6 bits).
    pub mbit_per_s: f64,
    /// Message size used.
    pub message_size: usize,
}

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

async fn until<T>(
    events: &mut EventStream,
    what: &str,
    mut f: impl FnMut(Event) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let next = futures_lite::future::or(async { Some(events.next().await) }, async {
            async_io::Timer::at(deadline).await;
            None
        })
        .await;
        match next {
            None => {
                return Err(Error::InvalidState(
                    format!("timed out waiting for {what}").into(),
                ))
            }
            Some(None) => return Err(Error::Closed),
            Some(Some(Event::Error(e))) => return Err(e),
            Some(Some(e)) => {
                if let Some(t) = f(e) {
                    return Ok(t);
                }
            }
        }
    }
}

/// Waits until a peer has gathered all its candidates.
async fn gathered(events: &mut EventStream, what: &str) -> Result<()> {
    until(events, what, |e| {
        matches!(e, Event::IceCandidate(None)).then_some(())
    })
    .await
}

/// Waits until a peer's channel is open.
async fn opened(events: &mut EventStream, what: &str) -> Result<()> {
    until(events, what, |e| {
        matches!(e, Event::ChannelOpen(_)).then_some(())
    })
    .await
}

/// Connects `a` (offerer, with the channel it returns) and `b` (answerer), complete SDP
/// both ways; returns once the channel is open on both sides.
async fn connect(
    (a, ea): (&PeerConnection, &mut EventStream),
    (b, eb): (&PeerConnection, &mut EventStream),
) -> Result<DataChannel> {
    let tx = a
        .create_data_channel("bench", ChannelInit::default())
        .await?;
    let offer = a.create_offer().await?;
    a.set_local_description(offer).await?;
    gathered(ea, "offerer gathering").await?;
    let offer = a.local_description().await.ok_or(Error::Closed)?;
    b.set_remote_description(offer).await?;
    let answer = b.create_answer().await?;
    b.set_local_description(answer).await?;
    gathered(eb, "answerer gathering").await?;
    let answer = b.local_description().await.ok_or(Error::Closed)?;
    a.set_remote_description(answer).await?;
    opened(ea, "channel open (offerer)").await?;
    opened(eb, "channel open (answerer)").await?;
    Ok(tx)
}

/// The message sent: one buffer, sliced; the pattern lets the receiver check every byte
/// cheaply.
fn pattern(opts: &LoopbackOptions, tx: &DataChannel) -> Result<Bytes> {
    super::check_message_size(opts.message_size, tx)?;
    Ok((0..opts.message_size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into())
}

/// Sends `total` bytes of `pattern`, paced by the buffered amount.
async fn send_all(
    tx: &DataChannel,
    ea: &mut EventStream,
    pattern: &Bytes,
    total: usize,
    high_water: usize,
) -> Result<()> {
    let mut sent = 0;
    while sent < total {
        while tx.buffered_amount() > high_water {
            until(ea, "buffered amount low", |e| {
                matches!(e, Event::ChannelBufferedAmountLow(_)).then_some(())
            })
            .await?;
        }
        let n = pattern.len().min(total - sent);
        tx.send(pattern.slice(..n)).await?;
        sent += n;
    }
    Ok(())
}

/// Receives `total` bytes, checking each message against `pattern`; returns the count.
async fn receive_all(eb: &mut EventStream, pattern: &Bytes, total: usize) -> Result<usize> {
    let mut got = 0;
    while got < total {
        let m = until(eb, "data", |e| match e {
            Event::ChannelMessage(_, Message::Binary(b)) => Some(b),
            _ => None,
        })
        .await?;
        if m[..] != pattern[..m.len()] {
            return Err(Error::InvalidState(
                format!("corrupt message at byte {got}").into(),
            ));
        }
        got += m.len();
    }
    Ok(got)
}

/// Runs one loopback benchmark and returns its figures.
pub async fn run_loopback(opts: &LoopbackOptions) -> Result<LoopbackResult> {
    if opts.message_size == 0 {
        return Err(Error::InvalidArgument(
            "--message-size must be at least 1".into(),
        ));
    }
    // Two smolrtc threads, as two devices would have: each peer gets a core of its own.
    let a = PeerConnection::new(Config::loopback("A"))?;
    let b = PeerConnection::with_runtime(&Runtime::new()?, Config::loopback("B"))?;
    let (mut ea, mut eb) = (a.events(), b.events());

    let start = Instant::now();
    let tx = connect((&a, &mut ea), (&b, &mut eb)).await?;
    let setup = start.elapsed();

    let pattern = pattern(opts, &tx)?;
    tx.set_buffered_amount_low_threshold(opts.high_water / 2);
    let total = opts.bytes;
    let began = Instant::now();
    let (sent, got) = futures_lite::future::zip(
        send_all(&tx, &mut ea, &pattern, total, opts.high_water),
        receive_all(&mut eb, &pattern, total),
    )
    .await;
    sent?;
    let got = got?;
    let seconds = began.elapsed().as_secs_f64();
    a.close().await;
    b.close().await;
    Ok(LoopbackResult {
        setup_ms: setup.as_secs_f64() * 1000.0,
        bytes: got,
        seconds,
        mbit_per_s: got as f64 * 8.0 / seconds / 1e6,
        message_size: opts.message_size,
    })
}

/// `smolrtc bench loopback`: runs once, logs progress, prints the JSON result line.
pub fn loopback(opts: LoopbackOptions) -> Result<()> {
    log::info!(
        "bench loopback: {} bytes in {}-byte messages over 127.0.0.1",
        opts.bytes,
        opts.message_size
    );
    let result = futures_lite::future::block_on(run_loopback(&opts))?;
    log::info!(
        "setup {:.1} ms, {:.1} Mbit/s ({} bytes in {:.3} s)",
        result.setup_ms,
        result.mbit_per_s,
        result.bytes,
        result.seconds
    );
    println!(
        "{}",
        serde_json::to_string(&result).map_err(|e| Error::InvalidState(e.to_string().into()))?
    );
    Ok(())
}
