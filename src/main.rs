//! The `smolrtc` command: console peer, loopback benchmark (and, later, the service).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "smolrtc",
    version,
    about = "A small WebRTC data-channel peer for Linux devices",
    long_about = "A small WebRTC data-channel peer for Linux devices.\n\n\
                  Logs go to stderr; set RUST_LOG (error, warn, info, debug, trace) to choose \
                  how much. Default: info."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Console peer: print the local description as one JSON line, read the remote one
    /// from stdin, and run rawrtc's data-channel flow (cat/bear/lion-noises).
    Peer(smolrtc::signal::console::Options),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Two peers in this process over real UDP on 127.0.0.1: connection setup time and
    /// throughput of one reliable ordered channel. The last stdout line is JSON.
    Loopback(smolrtc::signal::bench::LoopbackOptions),
}

fn main() -> ExitCode {
    smolrtc::signal::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Peer(opts) => smolrtc::signal::console::run(opts),
        Command::Bench(BenchCommand::Loopback(opts)) => smolrtc::signal::bench::loopback(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smolrtc: {e}");
            ExitCode::FAILURE
        }
    }
}
