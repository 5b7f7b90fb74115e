//! The console peer (rawrtc's `peer-connection` tool).

use clap::Args;

/// Options of `smolrtc peer`.
#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Make the offer (ICE controlling); the default.
    #[arg(long, conflicts_with = "answer")]
    pub offer: bool,
    /// Wait for an offer and answer it.
    #[arg(long)]
    pub answer: bool,
}

/// Runs the console peer until Ctrl-C or stdin closes.
pub fn run(_opts: Options) -> crate::Result<()> {
    Err(crate::Error::InvalidState("not yet".into()))
}
