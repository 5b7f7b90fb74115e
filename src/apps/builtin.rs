//! The built-in handlers.

use super::{ChannelEvent, ChannelEvents};
use crate::channel::{DataChannel, Message};
use bytes::Bytes;

/// chargen's message size.
pub const CHARGEN_MESSAGE: usize = 16 * 1024;
/// chargen keeps at most this much queued, and refills below half of it.
const CHARGEN_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Largest transfer one chargen request may ask for (16 GiB).
const CHARGEN_MAX: u64 = 16 << 30;

/// Byte `i` of a chargen transfer (and of what the page uploads to discard).
pub fn chargen_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Sends every message back as it came: text stays text, binary stays binary.
pub async fn echo(ch: DataChannel, events: ChannelEvents) {
    while let Ok(ev) = events.recv().await {
        if let ChannelEvent::Message(m) = ev {
            if let Err(e) = ch.send(m).await {
                log::debug!("echo on {ch}: {e}");
                return;
            }
        }
    }
}

/// Drops data; answers the text `stats` with `{"bytes":N,"messages":M}`.
pub async fn discard(ch: DataChannel, events: ChannelEvents) {
    let (mut bytes, mut messages) = (0u64, 0u64);
    while let Ok(ev) = events.recv().await {
        match ev {
            ChannelEvent::Message(Message::Text(t)) if t.trim() == "stats" => {
                let reply = format!("{{\"bytes\":{bytes},\"messages\":{messages}}}");
                log::info!("discard on {ch}: {reply}");
                if ch.send(reply).await.is_err() {
                    return;
                }
            }
            ChannelEvent::Message(m) => {
                bytes += m.len() as u64;
                messages += 1;
            }
            ChannelEvent::BufferedAmountLow => {}
        }
    }
}

/// Answers a decimal byte count N with N bytes of binary data (byte i is `i % 251`) in
/// 16 KiB messages, then the text `end`, paced by the buffered amount.
pub async fn chargen(ch: DataChannel, events: ChannelEvents) {
    ch.set_buffered_amount_low_threshold(CHARGEN_HIGH_WATER / 2);
    // One period of the pattern, long enough to slice any message from any offset.
    let period: Bytes = (0..(251 + CHARGEN_MESSAGE) as u64)
        .map(chargen_byte)
        .collect::<Vec<_>>()
        .into();
    while let Ok(ev) = events.recv().await {
        let ChannelEvent::Message(Message::Text(t)) = ev else {
            continue;
        };
        let total: u64 = match t.trim().parse() {
            Ok(n) if n <= CHARGEN_MAX => n,
            _ => {
                let _ = ch
                    .send(format!(
                        "error: expected a byte count from 0 to {CHARGEN_MAX}, got {:?}",
                        t.chars().take(40).collect::<String>()
                    ))
                    .await;
                continue;
            }
        };
        log::info!("chargen on {ch}: sending {total} bytes");
        let mut sent = 0u64;
        while sent < total {
            while ch.buffered_amount() > CHARGEN_HIGH_WATER {
                // Wait for the low-water event; other messages meanwhile are ignored.
                match events.recv().await {
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            let n = (total - sent).min(CHARGEN_MESSAGE as u64) as usize;
            let at = (sent % 251) as usize;
            if ch.send(period.slice(at..at + n)).await.is_err() {
                return;
            }
            sent += n as u64;
        }
        if ch.send("end").await.is_err() {
            return;
        }
    }
}

/// rawrtc's noisy channels: bytes of `M` sent when the channel opens; whatever arrives is
/// logged by the service.
pub(crate) const NOISES: &[(&str, usize)] = &[
    ("cat-noises", 8192),
    ("lion-noises", 8192),
    ("bear-noises", 16384),
    ("dinosaur-noises", 0),
];

pub(crate) async fn noise(ch: DataChannel, events: ChannelEvents, on_open: usize) {
    if on_open > 0 {
        log::info!("{ch}: sending {on_open} bytes");
        if ch.send(vec![b'M'; on_open]).await.is_err() {
            return;
        }
    }
    while events.recv().await.is_ok() {}
}
