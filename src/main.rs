//! The `smolrtc` command: console peer, loopback benchmark (and, later, the service).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// `smolrtc --version`: the crate version, the target triple and the board profile
/// (`boards/<board>.toml`, chosen at build time with `SMOLRTC_BOARD`; "native" otherwise).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SMOLRTC_TARGET"),
    ", board ",
    env!("SMOLRTC_BOARD"),
    ")"
);
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ntarget: ",
    env!("SMOLRTC_TARGET"),
    "\nboard: ",
    env!("SMOLRTC_BOARD"),
    " (cpu ",
    env!("SMOLRTC_BOARD_CPU"),
    ")\nserve defaults: max sessions ",
    env!("SMOLRTC_BOARD_MAX_SESSIONS"),
    ", SCTP receive buffer ",
    env!("SMOLRTC_BOARD_SCTP_RECEIVE_BUFFER"),
    " bytes"
);

/// The board profile's default limits for `serve` (build.rs reads them from boards/*.toml).
fn board_max_sessions() -> usize {
    env!("SMOLRTC_BOARD_MAX_SESSIONS")
        .parse()
        .expect("build.rs checked it")
}
fn board_sctp_receive_buffer() -> u32 {
    env!("SMOLRTC_BOARD_SCTP_RECEIVE_BUFFER")
        .parse()
        .expect("build.rs checked it")
}

#[derive(Parser)]
#[command(
    name = "smolrtc",
    version = VERSION,
    long_version = LONG_VERSION,
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
    /// The device service: an HTTP server with the browser page and the signaling API
    /// (POST /api/offer, WHIP at /whip, WebSocket at /ws); channels are answered by the
    /// built-in handlers echo, discard and chargen (and rawrtc's noisy channels).
    Serve(ServeOptions),
    /// Console peer: print the local description as one JSON line, read the remote one
    /// from stdin, and run rawrtc's data-channel flow (cat/bear/lion-noises).
    Peer(smolrtc::signal::console::Options),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(clap::Args)]
struct ServeOptions {
    /// Address and port of the HTTP server.
    #[arg(long, default_value = "127.0.0.1:8888")]
    listen: std::net::SocketAddr,
    /// ICE: host candidates, STUN/TURN servers, transport policy.
    #[command(flatten)]
    ice: smolrtc::signal::IceOptions,
    /// Most peer connections at once (default: the board profile's).
    #[arg(long, default_value_t = board_max_sessions())]
    max_sessions: usize,
    /// Largest signaling request body, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_body: usize,
    /// Run every session over this one UDP port (on each host address), so the device
    /// needs a single firewall hole; 0 picks a free port. Default: a port per session.
    #[arg(long, value_name = "PORT")]
    single_port: Option<u16>,
    /// Do not run rawrtc's channel flow (cat-noises id 0, bear/lion-noises) on sessions.
    #[arg(long)]
    no_rawrtc_flow: bool,
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
        Command::Serve(opts) => serve(opts),
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

fn serve(opts: ServeOptions) -> smolrtc::Result<()> {
    let mut config = smolrtc::signal::ServiceConfig {
        listen: opts.listen,
        max_sessions: opts.max_sessions,
        max_body: opts.max_body,
        rawrtc_flow: !opts.no_rawrtc_flow,
        single_port: opts.single_port,
        ..Default::default()
    };
    config.peer.sctp.receive_buffer = board_sctp_receive_buffer();
    opts.ice.apply(&mut config.peer.ice);
    for s in &config.peer.ice.servers {
        log::info!("ICE server {s}");
    }
    smolrtc::signal::Service::new(config).run()
}
