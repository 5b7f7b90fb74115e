//! The `smolrtc` command: the device service (`serve`), the console peer (`peer`), and
//! the benchmark tools (`bench`).

mod bench;
mod console;
mod settings;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use settings::ServeSettings;
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
    Serve(Box<ServeSettings>),
    /// Console peer: print the local description as one JSON line, read the remote one
    /// from stdin, and run rawrtc's data-channel flow (cat/bear/lion-noises).
    Peer(console::Options),
    /// Make a self-signed certificate and key (ECDSA P-256, PEM) for `serve --tls-cert
    /// DIR/cert.pem --tls-key DIR/key.pem`; prints its SHA-256 fingerprint and SPKI hash
    /// (for Chromium's --ignore-certificate-errors-spki-list, curl's --pinnedpubkey).
    Cert(CertOptions),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(clap::Args)]
struct CertOptions {
    /// Directory to write cert.pem and key.pem (0600) into; made if missing.
    #[arg(long, value_name = "DIR")]
    out: std::path::PathBuf,
    /// A DNS name the certificate is for (repeatable), e.g. camera.local.
    #[arg(long = "name", value_name = "HOST")]
    names: Vec<String>,
    /// An IP address the certificate is for (repeatable), e.g. 192.168.1.50.
    #[arg(long = "ip", value_name = "ADDR")]
    ips: Vec<std::net::IpAddr>,
    /// Days the certificate is valid.
    #[arg(long, value_name = "N", default_value_t = 825)]
    days: u32,
}

/// `smolrtc cert`: writes the pair and prints what a user pins or compares.
fn cert(o: CertOptions) -> smolrtc::Result<()> {
    use smolrtc::service::tls::{SelfSigned, TlsIdentity};
    if o.days == 0 {
        return Err(smolrtc::Error::invalid("--days must be at least 1"));
    }
    if o.names.is_empty() && o.ips.is_empty() {
        return Err(smolrtc::Error::invalid(
            "give the device's names and addresses: --name HOST and/or --ip ADDR",
        ));
    }
    let validity = std::time::Duration::from_secs(u64::from(o.days) * 86_400);
    let made = SelfSigned::generate(&o.names, &o.ips, validity)?;
    let (cert, key) = made.write(&o.out)?;
    let id = TlsIdentity::load(&cert, &key)?;
    println!("certificate: {}", cert.display());
    println!("key: {}", key.display());
    println!("sha-256 fingerprint: {}", id.fingerprint());
    println!("spki sha-256: {}", id.spki_sha256());
    println!(
        "chromium: --ignore-certificate-errors-spki-list={}",
        id.spki_sha256()
    );
    Ok(())
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Two peers in this process over real UDP on 127.0.0.1: connection setup time and
    /// throughput of one reliable ordered channel. The last stdout line is JSON.
    Loopback(bench::loopback::LoopbackOptions),
    /// One side of a throughput benchmark against another peer speaking the same
    /// stdin/stdout protocol (another `bench peer`, benches/peers/aiortc_peer.py): the
    /// offer/answer as JSON lines, then `--bytes` checked bytes one way; ends with a
    /// `{"result":..}` line.
    Peer(bench::peer::PeerOptions),
    /// A UDP impairment relay (delay, jitter, loss, bursts, duplication, reordering) for
    /// benchmarks and tests of bad links; prints its addresses as JSON, runs until stdin
    /// closes.
    Relay(bench::relay::RelayOptions),
    /// A load generator for `smolrtc serve`: opens --connections peer connections through
    /// POST /api/offer, each with one echo channel, prints one JSON line once they are up,
    /// holds them until stdin closes (or --hold seconds), then closes them.
    Load(bench::load::LoadOptions),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    if matches.subcommand_name() == Some("peer") {
        // The console logs each event itself, as rawrtc's tool does: one line per event.
        smolrtc::logging::init_for_event_logger();
    } else {
        smolrtc::logging::init();
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Serve(opts) => {
            let m = matches.subcommand_matches("serve").expect("serve");
            serve(*opts, m)
        }
        Command::Peer(opts) => console::run(opts),
        Command::Cert(opts) => cert(opts),
        Command::Bench(BenchCommand::Loopback(opts)) => bench::loopback::loopback(opts),
        Command::Bench(BenchCommand::Peer(opts)) => bench::peer::peer(opts),
        Command::Bench(BenchCommand::Relay(opts)) => bench::relay::relay(opts),
        Command::Bench(BenchCommand::Load(opts)) => bench::load::load(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smolrtc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: ServeSettings, m: &ArgMatches) -> smolrtc::Result<()> {
    let from_file = settings.config.clone();
    let settings = settings
        .resolve(m)
        .map_err(|e| smolrtc::Error::InvalidArgument(e.into()))?;
    if let Some(path) = from_file {
        log::info!("settings from {}", path.display());
    }
    let config = settings.into_config()?;
    for s in &config.peer.ice.servers {
        log::info!("ICE server {s}");
    }
    smolrtc::service::Service::new(config).run()
}
