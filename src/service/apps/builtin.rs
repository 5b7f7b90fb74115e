//! The built-in handlers.
//!
//! `echo` and `chargen` pace themselves by their channel's buffered amount, waiting with
//! [`DataChannel::wait_buffered_amount`] rather than for buffered-amount-low events: those
//! come through the session's event stream, which stops while a handler reads nothing (the
//! session task waits for the handler to take the next message — that wait is what pushes
//! back on the peer), so a handler waiting for the event would wait for itself. The wait on
//! the handle is fed by the router, which keeps taking SCTP's released bytes meanwhile.

use super::{ChannelEvent, ChannelEvents};
use crate::channel::{DataChannel, Message};
use crate::error::Error;
use bytes::Bytes;

/// chargen's message size.
pub const CHARGEN_MESSAGE: usize = 16 * 1024;
/// chargen keeps at most this much queued, and refills below half of it.
pub const CHARGEN_HIGH_WATER: usize = 4 * 1024 * 1024;
/// echo reads no further message while more than this is buffered on its channel, and
/// resumes at [`ECHO_LOW_WATER`]: a peer that sends to echo but does not read (a closed
/// receive window) finds its messages backing up in its own send buffer and SCTP's receive
/// window, not in the service's memory. So echo holds at most this plus one message.
pub const ECHO_HIGH_WATER: usize = 1024 * 1024;
/// See [`ECHO_HIGH_WATER`].
pub const ECHO_LOW_WATER: usize = 256 * 1024;
/// Largest transfer one chargen request may ask for (16 GiB).
const CHARGEN_MAX: u64 = 16 << 30;

/// Byte `i` of a chargen transfer (and of what the page uploads to discard).
pub fn chargen_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Ends a handler whose send failed: a full send buffer (or a message over the peer's
/// max-message-size) closes the channel with a warning; anything else (the channel or
/// connection closed) ends it quietly.
fn send_failed(handler: &str, ch: &DataChannel, e: Error) {
    if matches!(e, Error::Limit(_)) {
        log::warn!("{handler} on {ch}: {e}; channel closed");
        ch.close();
    } else {
        log::debug!("{handler} on {ch}: {e}");
    }
}

/// Sends every message back as it came: text stays text, binary stays binary. Paced by
/// the buffered amount ([`ECHO_HIGH_WATER`]).
pub async fn echo(ch: DataChannel, events: ChannelEvents) {
    while let Ok(ev) = events.recv().await {
        let ChannelEvent::Message(m) = ev else {
            continue;
        };
        if let Err(e) = ch.send(m).await {
            return send_failed("echo", &ch, e);
        }
        if ch.buffered_amount() > ECHO_HIGH_WATER
            && ch.wait_buffered_amount(ECHO_LOW_WATER).await.is_err()
        {
            return;
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
                if let Err(e) = ch.send(reply).await {
                    return send_failed("discard", &ch, e);
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
/// 16 KiB messages, then the text `end`, paced by the buffered amount
/// ([`CHARGEN_HIGH_WATER`]); messages that arrive meanwhile wait.
pub async fn chargen(ch: DataChannel, events: ChannelEvents) {
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
            if ch.buffered_amount() > CHARGEN_HIGH_WATER
                && ch
                    .wait_buffered_amount(CHARGEN_HIGH_WATER / 2)
                    .await
                    .is_err()
            {
                return;
            }
            let n = (total - sent).min(CHARGEN_MESSAGE as u64) as usize;
            let at = (sent % 251) as usize;
            if let Err(e) = ch.send(period.slice(at..at + n)).await {
                return send_failed("chargen", &ch, e);
            }
            sent += n as u64;
        }
        if let Err(e) = ch.send("end").await {
            return send_failed("chargen", &ch, e);
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
