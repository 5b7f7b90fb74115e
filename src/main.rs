//! The `smolrtc` command: console peer, loopback benchmark (and, later, the service).

use clap::{parser::ValueSource, ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use smolrtc::signal::service;
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
    /// Read settings from this TOML file; keys are the flags' names (`listen`,
    /// `ice-servers = ["turn:user:pass@host"]`, `single-port`, ...). Flags given on the
    /// command line win.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Address and port of the HTTP server.
    #[arg(long, default_value = "127.0.0.1:8888")]
    listen: std::net::SocketAddr,
    /// ICE: host candidates, STUN/TURN servers, transport policy.
    #[command(flatten)]
    ice: smolrtc::signal::IceOptions,
    /// Most peer connections at once (default: the board profile's).
    #[arg(long, default_value_t = board_max_sessions())]
    max_sessions: usize,
    /// Largest signaling request body (and WebSocket message), bytes; larger get 413.
    #[arg(long, value_name = "BYTES", default_value_t = service::DEFAULT_MAX_BODY)]
    max_body: usize,
    /// Most data channels per session; channels the browser opens beyond it are closed
    /// at once (the session and its other channels go on).
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_CHANNELS)]
    max_channels: usize,
    /// Most remote ICE candidates per session, from its description, trickle (WHIP PATCH,
    /// WebSocket) and checks from new addresses (peer-reflexive); past it trickled ones get
    /// an error naming the limit and checks from new addresses are dropped.
    #[arg(long, value_name = "N", default_value_t = smolrtc::ice::DEFAULT_MAX_REMOTE_CANDIDATES)]
    max_remote_candidates: usize,
    /// Most bytes a handler may have queued on one channel, not yet acknowledged by the
    /// browser; a send past it fails (echo and chargen then close the channel).
    #[arg(long, value_name = "BYTES", default_value_t = service::DEFAULT_SEND_BUFFER_PER_CHANNEL)]
    send_buffer_per_channel: usize,
    /// Most bytes the handlers of one session may have queued, all channels together.
    #[arg(long, value_name = "BYTES", default_value_t = service::DEFAULT_SEND_BUFFER_PER_SESSION)]
    send_buffer_per_session: usize,
    /// Longest channel label the browser may open a channel with (DCEP); a longer one is
    /// refused (its stream reset), the session goes on.
    #[arg(long, value_name = "BYTES", default_value_t = smolrtc::channel::DEFAULT_MAX_CHANNEL_LABEL)]
    max_channel_label: usize,
    /// Longest channel sub-protocol name, likewise.
    #[arg(long, value_name = "BYTES", default_value_t = smolrtc::channel::DEFAULT_MAX_CHANNEL_PROTOCOL)]
    max_channel_protocol: usize,
    /// Most HTTP connections at once; more get 503 and are closed.
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Most WebSocket signaling connections at once; more get 503.
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_WEBSOCKETS)]
    max_websockets: usize,
    /// Most HTTP connections at once from one client address; more get 429 (keep it
    /// below --max-connections, so one address cannot hold them all).
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)]
    max_connections_per_address: usize,
    /// Most connections at once from one client address that have not yet sent their first
    /// request's headers (slowloris); more get 429.
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_SLOW_CONNECTIONS_PER_ADDRESS)]
    max_slow_connections_per_address: usize,
    /// Most sessions at once signaled from one client address; more get 429 (default: a
    /// quarter of --max-sessions, at least 1).
    #[arg(long, value_name = "N")]
    max_sessions_per_address: Option<usize>,
    /// Most WebSocket signaling connections at once from one client address; more get 429.
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_WEBSOCKETS_PER_ADDRESS)]
    max_websockets_per_address: usize,
    /// Also accept requests whose Host names the device as NAME (repeatable). IP
    /// literals, localhost, the machine's host name and <hostname>.local always work; any
    /// other Host gets 421 (but for the page itself), which stops DNS rebinding.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Also let pages from ORIGIN (e.g. https://device.example) open WebSockets and send
    /// POST/PATCH/DELETE (repeatable). The service's own origin (http://<Host>) and
    /// clients without an Origin header always may; other origins get 403.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// Seconds a client may take to send a request's headers (counted from the connection's
    /// start or the previous response, so also how long an idle keep-alive connection is
    /// kept); a slower one is dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = service::DEFAULT_HEADER_TIMEOUT.as_secs_f64())]
    header_timeout: f64,
    /// Seconds a client may take to send a request's body; a slower one gets 408 and is
    /// dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = service::DEFAULT_BODY_TIMEOUT.as_secs_f64())]
    body_timeout: f64,
    /// Seconds a client may leave the service's answer unread (HTTP or WebSocket) before it
    /// is dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = service::DEFAULT_WRITE_TIMEOUT.as_secs_f64())]
    write_timeout: f64,
    /// Seconds a new session may take to connect (ICE + DTLS) before it is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = service::DEFAULT_CONNECT_TIMEOUT.as_secs_f64())]
    connect_timeout: f64,
    /// Require `Authorization: Bearer TOKEN` on every API request (the page still loads;
    /// open it as http://device:8888/#token=TOKEN). Visible in `ps`: prefer --token-file,
    /// the SMOLRTC_TOKEN environment variable or `token` in --config. Never logged.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Read the bearer token from this file (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
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
    /// One side of a throughput benchmark against another peer speaking the same
    /// stdin/stdout protocol (another `bench peer`, benches/peers/aiortc_peer.py): the
    /// offer/answer as JSON lines, then `--bytes` checked bytes one way; ends with a
    /// `{"result":..}` line.
    Peer(smolrtc::signal::bench_peer::PeerOptions),
    /// A UDP impairment relay (delay, jitter, loss, bursts, duplication, reordering) for
    /// benchmarks and tests of bad links; prints its addresses as JSON, runs until stdin
    /// closes.
    Relay(smolrtc::signal::impair::RelayOptions),
    /// A load generator for `smolrtc serve`: opens --connections peer connections through
    /// POST /api/offer, each with one echo channel, prints one JSON line once they are up,
    /// holds them until stdin closes (or --hold seconds), then closes them.
    Load(smolrtc::signal::bench_load::LoadOptions),
}

fn main() -> ExitCode {
    smolrtc::signal::init_logging();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Serve(opts) => {
            let m = matches.subcommand_matches("serve").expect("serve");
            serve(opts, m)
        }
        Command::Peer(opts) => smolrtc::signal::console::run(opts),
        Command::Bench(BenchCommand::Loopback(opts)) => smolrtc::signal::bench::loopback(opts),
        Command::Bench(BenchCommand::Peer(opts)) => smolrtc::signal::bench_peer::peer(opts),
        Command::Bench(BenchCommand::Relay(opts)) => smolrtc::signal::impair::relay(opts),
        Command::Bench(BenchCommand::Load(opts)) => smolrtc::signal::bench_load::load(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smolrtc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(mut opts: ServeOptions, m: &ArgMatches) -> smolrtc::Result<()> {
    if let Some(path) = &opts.config {
        let file = smolrtc::signal::config_file::ServeFile::load(path)
            .map_err(smolrtc::Error::InvalidArgument)?;
        // A value from the file unless the flag was given.
        let unset = |id: &str| m.value_source(id) != Some(ValueSource::CommandLine);
        macro_rules! take {
            ($id:literal, $field:expr, $value:expr) => {
                if let Some(v) = $value {
                    if unset($id) {
                        $field = v;
                    }
                }
            };
        }
        take!("listen", opts.listen, file.listen);
        take!("max_sessions", opts.max_sessions, file.max_sessions);
        take!("max_body", opts.max_body, file.max_body);
        take!("max_channels", opts.max_channels, file.max_channels);
        take!(
            "max_remote_candidates",
            opts.max_remote_candidates,
            file.max_remote_candidates
        );
        take!(
            "send_buffer_per_channel",
            opts.send_buffer_per_channel,
            file.send_buffer_per_channel
        );
        take!(
            "send_buffer_per_session",
            opts.send_buffer_per_session,
            file.send_buffer_per_session
        );
        take!(
            "max_channel_label",
            opts.max_channel_label,
            file.max_channel_label
        );
        take!(
            "max_channel_protocol",
            opts.max_channel_protocol,
            file.max_channel_protocol
        );
        take!(
            "max_connections",
            opts.max_connections,
            file.max_connections
        );
        take!("max_websockets", opts.max_websockets, file.max_websockets);
        take!(
            "max_connections_per_address",
            opts.max_connections_per_address,
            file.max_connections_per_address
        );
        take!(
            "max_slow_connections_per_address",
            opts.max_slow_connections_per_address,
            file.max_slow_connections_per_address
        );
        take!(
            "max_sessions_per_address",
            opts.max_sessions_per_address,
            file.max_sessions_per_address.map(Some)
        );
        take!(
            "max_websockets_per_address",
            opts.max_websockets_per_address,
            file.max_websockets_per_address
        );
        take!("allow_hosts", opts.allow_hosts, file.allow_hosts);
        take!("allow_origins", opts.allow_origins, file.allow_origins);
        take!("header_timeout", opts.header_timeout, file.header_timeout);
        take!("body_timeout", opts.body_timeout, file.body_timeout);
        take!("write_timeout", opts.write_timeout, file.write_timeout);
        take!(
            "connect_timeout",
            opts.connect_timeout,
            file.connect_timeout
        );
        // One token source: the command line's (--token or --token-file) wins.
        if unset("token") && unset("token_file") {
            if let Some(t) = file.token {
                opts.token = Some(t.0);
            } else if let Some(f) = file.token_file {
                opts.token_file = Some(f);
            }
        }
        take!("single_port", opts.single_port, file.single_port.map(Some));
        take!(
            "no_rawrtc_flow",
            opts.no_rawrtc_flow,
            file.rawrtc_flow.map(|f| !f)
        );
        take!("ice_servers", opts.ice.ice_servers, file.ice_servers);
        take!(
            "ice_transport_policy",
            opts.ice.ice_transport_policy,
            file.ice_transport_policy
        );
        take!("ice_addresses", opts.ice.ice_addresses, file.ice_addresses);
        take!("loopback", opts.ice.loopback, file.loopback);
        take!(
            "ice_ports",
            opts.ice.ice_ports,
            file.ice_ports
                .map(|p| smolrtc::signal::ice_options::parse_port_range(&p).ok())
        );
        take!(
            "gather_timeout",
            opts.ice.gather_timeout,
            file.gather_timeout
        );
        take!("tls_roots", opts.ice.tls_roots, file.tls_roots);
        log::info!("settings from {}", path.display());
    }
    let token = match (opts.token.take(), &opts.token_file) {
        (Some(t), _) => Some(t),
        (None, Some(path)) => Some(read_token_file(path)?),
        // The environment, so the token needs neither the command line nor a file.
        (None, None) => std::env::var("SMOLRTC_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let mut config = smolrtc::signal::ServiceConfig {
        listen: opts.listen,
        max_sessions: opts.max_sessions,
        max_body: opts.max_body,
        max_connections: opts.max_connections,
        max_websockets: opts.max_websockets,
        max_connections_per_address: opts.max_connections_per_address,
        max_slow_connections_per_address: opts.max_slow_connections_per_address,
        max_sessions_per_address: opts
            .max_sessions_per_address
            .unwrap_or((opts.max_sessions / 4).max(1)),
        max_websockets_per_address: opts.max_websockets_per_address,
        allow_hosts: opts.allow_hosts,
        allow_origins: opts.allow_origins,
        header_timeout: seconds("header-timeout", opts.header_timeout)?,
        body_timeout: seconds("body-timeout", opts.body_timeout)?,
        write_timeout: seconds("write-timeout", opts.write_timeout)?,
        connect_timeout: seconds("connect-timeout", opts.connect_timeout)?,
        token,
        rawrtc_flow: !opts.no_rawrtc_flow,
        single_port: opts.single_port,
        ..Default::default()
    };
    for (flag, v) in [
        ("max-channels", opts.max_channels),
        ("send-buffer-per-channel", opts.send_buffer_per_channel),
        ("send-buffer-per-session", opts.send_buffer_per_session),
        ("max-channel-label", opts.max_channel_label),
        ("max-channel-protocol", opts.max_channel_protocol),
    ] {
        if v == 0 {
            return Err(smolrtc::Error::InvalidArgument(format!(
                "--{flag} must be at least 1"
            )));
        }
    }
    config.peer.max_channels = opts.max_channels;
    if opts.max_remote_candidates == 0 {
        return Err(smolrtc::Error::InvalidArgument(
            "--max-remote-candidates must be at least 1".into(),
        ));
    }
    config.peer.ice.max_remote_candidates = opts.max_remote_candidates;
    config.peer.sctp.send_buffer_per_channel = opts.send_buffer_per_channel;
    config.peer.sctp.send_buffer_per_connection = opts.send_buffer_per_session;
    config.peer.max_channel_label = opts.max_channel_label;
    config.peer.max_channel_protocol = opts.max_channel_protocol;
    config.peer.sctp.receive_buffer = board_sctp_receive_buffer();
    opts.ice.apply(&mut config.peer.ice);
    for s in &config.peer.ice.servers {
        log::info!("ICE server {s}");
    }
    smolrtc::signal::Service::new(config).run()
}

/// A timeout flag's value: seconds above 0 and at most a day.
fn seconds(flag: &str, s: f64) -> smolrtc::Result<std::time::Duration> {
    if !(s.is_finite() && s > 0.0 && s <= 86_400.0) {
        return Err(smolrtc::Error::InvalidArgument(format!(
            "--{flag}: expected seconds above 0 (at most 86400), got {s}"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(s))
}

/// The token in `path`: its first line, without surrounding whitespace. Errors name the
/// file, never its content.
fn read_token_file(path: &std::path::Path) -> smolrtc::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        smolrtc::Error::InvalidArgument(format!("--token-file {}: {e}", path.display()))
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(smolrtc::Error::InvalidArgument(format!(
            "--token-file {}: the file is empty",
            path.display()
        )));
    }
    Ok(token)
}
