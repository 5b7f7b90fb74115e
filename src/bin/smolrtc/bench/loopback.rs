//! `smolrtc bench loopback`: two peers in this process, each on its own smolrtc thread,
//! over real UDP on 127.0.0.1.
//!
//! Measures connection setup (create_offer → channel open on both sides, complete SDP
//! exchanged in-process) and the throughput of one reliable ordered in-band channel, the
//! sender paced by its buffered amount as a browser page would be. Every received byte is
//! counted and the pattern checked, so a fast wrong answer cannot pass.

use bytes::Bytes;
use clap::Args;
use smolrtc::channel::{ChannelInit, Message};
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
    let tx = a
        .create_data_channel("bench", ChannelInit::default())
        .await?;
    let offer = a.create_offer().await?;
    a.set_local_description(offer).await?;
    until(&mut ea, "offerer gathering", |e| {
        matches!(e, Event::IceCandidate(None)).then_some(())
    })
    .await?;
    let offer = a.local_description().await.ok_or(Error::Closed)?;
    b.set_remote_description(offer).await?;
    let answer = b.create_answer().await?;
    b.set_local_description(answer).await?;
    until(&mut eb, "answerer gathering", |e| {
        matches!(e, Event::IceCandidate(None)).then_some(())
    })
    .await?;
    let answer = b.local_description().await.ok_or(Error::Closed)?;
    a.set_remote_description(answer).await?;
    until(&mut ea, "channel open (offerer)", |e| {
        matches!(e, Event::ChannelOpen(_)).then_some(())
    })
    .await?;
    until(&mut eb, "channel open (answerer)", |e| {
        matches!(e, Event::ChannelOpen(_)).then_some(())
    })
    .await?;
    let setup = start.elapsed();

    let max = tx.max_message_size().unwrap_or(usize::MAX);
    if opts.message_size > max {
        return Err(Error::InvalidArgument(
            format!(
                "--message-size {} exceeds the negotiated max-message-size {max}",
                opts.message_size
            )
            .into(),
        ));
    }
    // One buffer, sliced: the pattern lets the receiver check every byte cheaply.
    let pattern: Bytes = (0..opts.message_size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    tx.set_buffered_amount_low_threshold(opts.high_water / 2);

    let total = opts.bytes;
    let began = Instant::now();
    let sender = async {
        let mut sent = 0;
        while sent < total {
            while tx.buffered_amount() > opts.high_water {
                until(&mut ea, "buffered amount low", |e| {
                    matches!(e, Event::ChannelBufferedAmountLow(_)).then_some(())
                })
                .await?;
            }
            let n = opts.message_size.min(total - sent);
            tx.send(pattern.slice(..n)).await?;
            sent += n;
        }
        Ok::<_, Error>(())
    };
    let receiver = async {
        let mut got = 0;
        while got < total {
            let m = until(&mut eb, "data", |e| match e {
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
        Ok::<_, Error>(got)
    };
    let (sent, got) = futures_lite::future::zip(sender, receiver).await;
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
