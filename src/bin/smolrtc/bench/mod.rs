//! `smolrtc bench`: the tools `benches/run` drives. `loopback` (two peers in this
//! process), `peer` (one side of a throughput run against another process: another `bench
//! peer`, aiortc, ...), `relay` (the impairment relay between two processes) and `load`
//! (many sessions against a running `smolrtc serve`).

pub mod load;
pub mod loopback;
pub mod peer;
pub mod relay;

use smolrtc::{DataChannel, Error, Result};

/// Refuses a `--message-size` over the max-message-size `ch` negotiated.
fn check_message_size(message_size: usize, ch: &DataChannel) -> Result<()> {
    let max = ch.max_message_size().unwrap_or(usize::MAX);
    if message_size > max {
        return Err(Error::InvalidArgument(
            format!("--message-size {message_size} exceeds the negotiated max-message-size {max}")
                .into(),
        ));
    }
    Ok(())
}
