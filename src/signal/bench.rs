//! `smolrtc bench loopback`.

use clap::Args;

/// Options of `smolrtc bench loopback`.
#[derive(Args, Debug, Clone)]
pub struct LoopbackOptions {
    /// Bytes to move.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub bytes: usize,
    /// Message size.
    #[arg(long, default_value_t = 16 * 1024)]
    pub message_size: usize,
}

/// Runs the benchmark and prints the JSON result line.
pub fn loopback(_opts: LoopbackOptions) -> crate::Result<()> {
    Err(crate::Error::InvalidState("not yet".into()))
}
