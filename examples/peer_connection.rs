//! rawrtc's `peer-connection` tool, with rawrtc's command line:
//!
//! ```text
//! cargo run --example peer_connection -- <1|0> [host|srflx|relay ...]
//! ```
//!
//! `1` makes the offer (ICE controlling), `0` answers. The candidate type words choose what
//! to gather; only `host` candidates exist yet, so `srflx` and `relay` draw a warning.
//! Everything else is `smolrtc peer` (see `smolrtc::signal::console`).

use smolrtc::signal::console::{self, Options};
use std::process::ExitCode;

const USAGE: &str = "usage: peer_connection <1|0> [host|srflx|relay ...]\n  \
                     1 = offering (ICE controlling), 0 = answering";

fn main() -> ExitCode {
    smolrtc::signal::init_logging();
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(why) => {
            eprintln!("peer_connection: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match console::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer_connection: {e}");
            ExitCode::FAILURE
        }
    }
}

/// rawrtc's positional arguments: the ICE role, then candidate types.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let offering = match args.next().as_deref() {
        Some("1") => true,
        Some("0") => false,
        Some(other) => return Err(format!("ICE role must be 1 or 0, not {other:?}")),
        None => return Err("missing ICE role".into()),
    };
    for kind in args {
        match kind.as_str() {
            "host" => {}
            "srflx" | "relay" => {
                log::warn!(
                    "{kind} candidates are not supported yet; gathering host candidates only"
                )
            }
            other => return Err(format!("unknown candidate type {other:?}")),
        }
    }
    Ok(Options {
        offer: offering,
        answer: !offering,
        ..Options::default()
    })
}
