//! The command's settings: one struct per command that is both its flags (clap) and, for
//! `serve`, its TOML file (`--config FILE`, keys named as the flags: `listen`,
//! `max-sessions`, `ice-servers = ["turn:user:pass@host"]`, ...). A flag given on the
//! command line wins over the file, the file over the built-in default. Keeping TURN
//! credentials and the token in a file readable by the service only keeps them out of `ps`
//! and shell history.
//!
//! Adding a setting: a field here (its doc comment is the `--help` text, its default the
//! clap default), a field in the library's `ServiceConfig` (or `Config`), and one line in
//! [`ServeSettings::into_config`].

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use serde::{Deserialize, Serialize};
use smolrtc::ice::{IceConfig, IceServer, TransportPolicy};
use smolrtc::service::{self, ServiceConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The board profile's default limits (build.rs reads them from boards/*.toml).
pub fn board_max_sessions() -> usize {
    env!("SMOLRTC_BOARD_MAX_SESSIONS")
        .parse()
        .expect("build.rs checked it")
}

/// The board profile's SCTP receive window.
pub fn board_sctp_receive_buffer() -> u32 {
    env!("SMOLRTC_BOARD_SCTP_RECEIVE_BUFFER")
        .parse()
        .expect("build.rs checked it")
}

/// ICE settings, shared by `serve` and `peer`: host candidates, STUN/TURN servers, policy.
#[derive(Args, Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "kebab-case")]
pub struct IceSettings {
    /// Offer only this local address as an ICE host candidate (repeatable); default: every
    /// address of every interface that is up.
    #[arg(long = "ice-address", value_name = "IP")]
    pub ice_addresses: Vec<IpAddr>,
    /// Offer only addresses of this interface (repeatable), e.g. eth0; default: all.
    #[arg(long = "ice-interface", value_name = "NAME")]
    pub ice_interfaces: Vec<String>,
    /// Also offer loopback addresses (always done when nothing else is up).
    #[arg(long)]
    pub loopback: bool,
    /// Offer IPv4 addresses only (by default global IPv6 addresses are offered too).
    #[arg(long)]
    pub no_ipv6: bool,
    /// Bind ICE sockets to ports in this range, e.g. 50000-50100 (for a firewall or a
    /// port forward); default: any free port.
    #[arg(long, value_name = "FIRST-LAST")]
    pub ice_ports: Option<PortRange>,
    /// A STUN or TURN server (repeatable): stun:HOST[:PORT],
    /// 'turn:USER:PASS@HOST[:PORT][?transport=udp|tcp]' or turns:USER:PASS@HOST[:PORT]
    /// (TLS). Default ports 3478, and 5349 for turns:. Credentials are never logged.
    #[arg(long = "ice-server", value_name = "URL")]
    pub ice_servers: Vec<ServerUrl>,
    /// Which candidates may be used: all, or relay (every byte through a TURN server; no
    /// local or public address revealed).
    #[arg(long, value_name = "all|relay", default_value_t = TransportPolicy::All)]
    #[serde(with = "text")]
    pub ice_transport_policy: TransportPolicy,
    /// Seconds to wait for STUN/TURN servers while gathering; an unanswered server is left
    /// out (and logged).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub gather_timeout: f64,
    /// PEM file of the certificate authorities trusted for turns: servers.
    #[arg(long, value_name = "PEM", default_value = smolrtc::ice::DEFAULT_TLS_ROOTS)]
    pub tls_roots: PathBuf,
}

impl IceSettings {
    /// Writes these settings into `ice`.
    pub fn apply(&self, ice: &mut IceConfig) -> Result<(), String> {
        ice.hosts.addresses = self.ice_addresses.clone();
        ice.hosts.include_loopback = self.loopback;
        ice.hosts.interfaces = self.ice_interfaces.clone();
        ice.hosts.ipv6 = !self.no_ipv6;
        ice.hosts.ports = self.ice_ports.as_ref().map(|p| p.0..=p.1);
        ice.servers = self.ice_servers.iter().map(|s| s.1.clone()).collect();
        ice.transport_policy = self.ice_transport_policy;
        ice.gather_timeout = seconds("gather-timeout", self.gather_timeout.min(300.0))?;
        ice.tls_roots = self.tls_roots.clone();
        Ok(())
    }
}

/// `smolrtc serve`: every flag, and every key of its `--config` file.
#[derive(Args, Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "kebab-case")]
pub struct ServeSettings {
    /// Read settings from this TOML file; keys are the flags' names (`listen`,
    /// `ice-servers = ["turn:user:pass@host"]`, `single-port`, ...). Flags given on the
    /// command line win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address and port of the HTTP server, or `none` (no HTTP: signaling only through
    /// --mqtt).
    #[arg(long, value_name = "ADDR:PORT|none", default_value = "127.0.0.1:8888")]
    #[serde(with = "text")]
    pub listen: Listen,
    /// ICE: host candidates, STUN/TURN servers, transport policy.
    #[command(flatten)]
    #[serde(flatten)]
    pub ice: IceSettings,
    /// Most peer connections at once (default: the board profile's).
    #[arg(long, value_name = "N", default_value_t = board_max_sessions())]
    pub max_sessions: usize,
    /// Largest signaling request body (and WebSocket message), bytes; larger get 413.
    #[arg(long, value_name = "BYTES", default_value_t = service::DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Most data channels per session; channels the browser opens beyond it are closed
    /// at once (the session and its other channels go on).
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_CHANNELS)]
    pub max_channels: usize,
    /// Most remote ICE candidates per session, from its description, trickle (WHIP PATCH,
    /// WebSocket) and checks from new addresses (peer-reflexive); past it trickled ones get
    /// an error naming the limit and checks from new addresses are dropped.
    #[arg(long, value_name = "N", default_value_t = smolrtc::ice::DEFAULT_MAX_REMOTE_CANDIDATES)]
    pub max_remote_candidates: usize,
    /// Most bytes a handler may have queued on one channel, not yet acknowledged by the
    /// browser; a send past it fails (echo and chargen then close the channel).
    #[arg(long, value_name = "BYTES", default_value_t = service::DEFAULT_SEND_BUFFER_PER_CHANNEL)]
    pub send_buffer_per_channel: usize,
    /// Most bytes the handlers of one session may have queued, all channels together.
    #[arg(long, value_name = "BYTES", default_value_t = service::DEFAULT_SEND_BUFFER_PER_SESSION)]
    pub send_buffer_per_session: usize,
    /// Longest channel label the browser may open a channel with (DCEP); a longer one is
    /// refused (its stream reset), the session goes on.
    #[arg(long, value_name = "BYTES", default_value_t = smolrtc::channel::DEFAULT_MAX_CHANNEL_LABEL)]
    pub max_channel_label: usize,
    /// Longest channel sub-protocol name, likewise.
    #[arg(long, value_name = "BYTES", default_value_t = smolrtc::channel::DEFAULT_MAX_CHANNEL_PROTOCOL)]
    pub max_channel_protocol: usize,
    /// Most HTTP connections at once; more get 503 and are closed.
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most WebSocket signaling connections at once; more get 503.
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_WEBSOCKETS)]
    pub max_websockets: usize,
    /// Most HTTP connections at once from one client address; more get 429 (keep it
    /// below --max-connections, so one address cannot hold them all).
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)]
    pub max_connections_per_address: usize,
    /// Most connections at once from one client address that have not yet sent their first
    /// request's headers (slowloris); more get 429.
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_SLOW_CONNECTIONS_PER_ADDRESS)]
    pub max_slow_connections_per_address: usize,
    /// Most sessions at once signaled from one client address; more get 429 (default: a
    /// quarter of --max-sessions, at least 1).
    #[arg(long, value_name = "N")]
    pub max_sessions_per_address: Option<usize>,
    /// Most WebSocket signaling connections at once from one client address; more get 429.
    #[arg(long, value_name = "N", default_value_t = service::DEFAULT_MAX_WEBSOCKETS_PER_ADDRESS)]
    pub max_websockets_per_address: usize,
    /// Also accept requests whose Host names the device as NAME (repeatable). IP
    /// literals, localhost, the machine's host name and <hostname>.local always work; any
    /// other Host gets 421 (but for the page itself), which stops DNS rebinding.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// Also let pages from ORIGIN (e.g. https://device.example) open WebSockets and send
    /// POST/PATCH/DELETE (repeatable). The service's own origin (http://<Host>) and
    /// clients without an Origin header always may; other origins get 403.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
    /// Seconds a client may take to send a request's headers (counted from the connection's
    /// start or the previous response, so also how long an idle keep-alive connection is
    /// kept); a slower one is dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = service::DEFAULT_HEADER_TIMEOUT.as_secs_f64())]
    pub header_timeout: f64,
    /// Seconds a client may take to send a request's body; a slower one gets 408 and is
    /// dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = service::DEFAULT_BODY_TIMEOUT.as_secs_f64())]
    pub body_timeout: f64,
    /// Seconds a client may leave the service's answer unread (HTTP or WebSocket) before it
    /// is dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = service::DEFAULT_WRITE_TIMEOUT.as_secs_f64())]
    pub write_timeout: f64,
    /// Seconds a new session may take to connect (ICE + DTLS) before it is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = service::DEFAULT_CONNECT_TIMEOUT.as_secs_f64())]
    pub connect_timeout: f64,
    /// Require `Authorization: Bearer TOKEN` on every API request (the page still loads;
    /// open it as http://device:8888/#token=TOKEN). Visible in `ps`: prefer --token-file,
    /// the SMOLRTC_TOKEN environment variable or `token` in --config. Never logged.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<Secret>,
    /// Read the bearer token from this file (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Run every session over this one UDP port (on each host address), so the device
    /// needs a single firewall hole; 0 picks a free port. Default: a port per session.
    #[arg(long, value_name = "PORT")]
    pub single_port: Option<u16>,
    /// Do not run rawrtc's channel flow (cat-noises id 0, bear/lion-noises) on sessions
    /// (in the file also `rawrtc-flow = false`).
    #[arg(long)]
    pub no_rawrtc_flow: bool,
    /// A video stream NAME=SOURCE (repeatable), served at /whep/NAME: SOURCE is
    /// rtp://127.0.0.1:PORT?codec=h264|vp8, file:PATH[?fps=N] (.h264/.264 Annex-B, .ivf
    /// VP8), exec:COMMAND[?fps=N] (Annex-B or IVF on its stdout) or stdin:[?fps=N]. In the
    /// file: [streams.NAME] video = "SOURCE".
    #[cfg(feature = "media")]
    #[arg(long = "video", value_name = "NAME=SOURCE")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub video: Vec<String>,
    /// An audio stream NAME=SOURCE (repeatable): rtp://127.0.0.1:PORT?codec=opus or
    /// file:PATH.ogg|.opus. A NAME may have one video and one audio source. In the file:
    /// [streams.NAME] audio = "SOURCE".
    #[cfg(feature = "media")]
    #[arg(long = "audio", value_name = "NAME=SOURCE")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audio: Vec<String>,
    /// `[streams.NAME]` tables of the file.
    #[cfg(feature = "media")]
    #[arg(skip)]
    #[serde(default)]
    pub streams: std::collections::BTreeMap<String, StreamSources>,
    /// A sink NAME=DEST (repeatable): where a browser's camera and microphone go, published
    /// by WHIP to /whip/NAME or sent with ?sink=NAME (talk-back). DEST is
    /// rtp://127.0.0.1:PORT[?codec=..] (RTP for ffmpeg/GStreamer; audio at PORT+2 when one
    /// DEST takes both; the SDP at /api/sinks), file:PATH (.ivf VP8, .h264, .ogg Opus, or a
    /// name prefix; a new file per session, never overwritten) or exec:COMMAND[?codec=..]
    /// (each track to a COMMAND's stdin). In the file: [sinks.NAME] video = "DEST", audio =
    /// "DEST", or [sinks] NAME = "DEST".
    #[cfg(feature = "media")]
    #[arg(long = "sink", value_name = "NAME=DEST")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sink: Vec<String>,
    /// Largest file a file: sink writes for one session's track, bytes; past it that track
    /// stops recording (the session goes on).
    #[cfg(feature = "media")]
    #[arg(long, value_name = "BYTES", default_value_t = service::DEFAULT_MAX_SINK_FILE_BYTES)]
    pub max_sink_file_bytes: u64,
    /// `[sinks.NAME]` tables (or `[sinks] NAME = "DEST"`) of the file.
    #[cfg(feature = "media")]
    #[arg(skip)]
    #[serde(default)]
    pub sinks: std::collections::BTreeMap<String, SinkDests>,
    /// Push stream NAME to a WHIP endpoint (repeatable): an SFU or media service that
    /// serves more viewers than the board can (URL: http:// or https://). Reconnects with
    /// backoff; state in /api/streams and /metrics. In the file: [publish.NAME] url =
    /// "URL", token-file = "PATH".
    #[cfg(feature = "media")]
    #[arg(long = "publish", value_name = "NAME=URL")]
    #[serde(skip)]
    pub publish: Vec<String>,
    /// `[publish.NAME]` tables of the file.
    #[cfg(feature = "media")]
    #[arg(skip)]
    #[serde(default, rename = "publish")]
    pub publish_tables: std::collections::BTreeMap<String, PublishTable>,
    /// The bearer token for --publish endpoints (Authorization: Bearer), first line of this
    /// file; a [publish.NAME] token-file wins for its stream.
    #[cfg(feature = "media")]
    #[arg(long, value_name = "FILE")]
    pub publish_token_file: Option<PathBuf>,
    /// PEM certificate authorities trusted for https:// --publish endpoints, besides the
    /// system's (--tls-roots).
    #[cfg(feature = "media")]
    #[arg(long, value_name = "PEM")]
    pub publish_ca: Option<PathBuf>,
    /// Fleet mode: also signal through this MQTT broker,
    /// mqtt://|mqtts://|ws://|wss://[USER[:PASS]@]HOST[:PORT][/PATH]. The user name is the
    /// device's broker account (see deploy/mosquitto); prefer --mqtt-password-file to a
    /// password in the URL.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<BrokerUrl>,
    /// Read the broker password from this file (its first line).
    #[arg(long, value_name = "FILE")]
    pub mqtt_password_file: Option<PathBuf>,
    /// This device's name in the topics (PREFIX/ID/..), its MQTT client id and its TURN
    /// REST user name; default: the host name.
    #[arg(long, value_name = "ID")]
    pub device_id: Option<String>,
    /// First level of the fleet's topics.
    #[arg(long, value_name = "P", default_value = smolrtc::mqtt::DEFAULT_PREFIX)]
    pub mqtt_prefix: String,
    /// PEM certificate authorities for mqtts:// and wss:// (default: the system's).
    #[arg(long, value_name = "PEM")]
    pub mqtt_ca: Option<PathBuf>,
    /// A TURN server sharing --turn-secret-file with this device (repeatable):
    /// turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]. Credentials are minted
    /// per session (TURN REST, coturn use-auth-secret) for the device and its clients.
    #[arg(long = "turn-url", value_name = "URL")]
    pub turn_urls: Vec<String>,
    /// The TURN REST shared secret (coturn static-auth-secret), first line of this file.
    #[arg(long, value_name = "FILE")]
    pub turn_secret_file: Option<PathBuf>,
    /// Seconds a minted TURN credential is valid.
    #[arg(long, value_name = "SECONDS", default_value_t = smolrtc::turn_rest::DEFAULT_TTL.as_secs_f64())]
    pub turn_ttl: f64,
    /// Serve the page and the API on --listen over HTTPS with this PEM certificate (chain);
    /// give --tls-key too. Browsers give camera and microphone only to secure pages.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// HTTPS with a self-signed certificate made on the first start and kept in
    /// --state-dir (its SHA-256 fingerprint and SPKI hash are logged).
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Where the service keeps what it makes (the --tls-self-signed certificate).
    /// Default: $STATE_DIRECTORY (systemd's StateDirectory=), else /var/lib/smolrtc as
    /// root, else ~/.local/state/smolrtc.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// A `[streams.NAME]` table: `video = "SOURCE"`, `audio = "SOURCE"` (and `[sinks.NAME]`'s,
/// with a DEST each: [`SinkKinds`]).
#[cfg(feature = "media")]
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StreamSources {
    /// The video SOURCE (or DEST).
    pub video: Option<String>,
    /// The audio SOURCE (or DEST).
    pub audio: Option<String>,
}

/// `[sinks.NAME]`: `video = "DEST"`, `audio = "DEST"`; or `[sinks] NAME = "DEST"` (one
/// DEST for both kinds).
#[cfg(feature = "media")]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum SinkDests {
    /// One DEST for every kind it takes.
    Both(String),
    /// A DEST per kind.
    Kinds(SinkKinds),
}

/// `[publish.NAME]`: `url = "URL"`, `token-file = "PATH"`.
#[cfg(feature = "media")]
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PublishTable {
    /// The WHIP endpoint.
    pub url: String,
    /// The bearer token's file (default: --publish-token-file).
    pub token_file: Option<PathBuf>,
}

/// The table form of [`SinkDests`]: a stream's two keys, each a DEST.
#[cfg(feature = "media")]
pub type SinkKinds = StreamSources;

impl ServeSettings {
    /// Settings from the command line (`matches` tells which values were typed) and, with
    /// `--config`, from that file underneath.
    pub fn resolve(self, matches: &ArgMatches) -> Result<Self, String> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = Self::load(&path)?;
        let mut merged = to_map(&file)?;
        let typed = to_map(&self)?;
        for (key, value) in typed {
            // File-only tables (`[streams.NAME]`, `[sinks.NAME]`, `[publish.NAME]`; the
            // `--publish` flags are kept apart below).
            if key == "streams" || key == "sinks" || key == "publish" {
                continue;
            }
            let id = key.replace('-', "_");
            if matches!(
                matches.value_source(&id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                merged.insert(key, value);
            }
        }
        let mut s: Self = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| format!("settings: {e}"))?;
        s.config = Some(path);
        #[cfg(feature = "media")]
        {
            s.publish = self.publish.clone();
        }
        if s.token.is_some() && s.token_file.is_some() {
            // One from the file, the other typed: the typed one wins.
            if matches.value_source("token") == Some(ValueSource::CommandLine) {
                s.token_file = None;
            } else {
                s.token = None;
            }
        }
        Ok(s)
    }

    /// Reads a settings file: every key optional, unknown keys refused, values checked;
    /// errors name the file, the line and the key, never a secret.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    /// [`ServeSettings::load`] on text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let line_of = |start: usize| text[..start.min(text.len())].matches('\n').count() + 1;
        // The message and line only: toml's own rendering quotes the line, and a line may
        // hold a TURN password.
        let toml_error = |e: toml::de::Error| match e.span() {
            Some(s) => format!("line {}: {}", line_of(s.start), e.message().trim()),
            None => e.message().trim().to_owned(),
        };
        let mut table: toml::Table = toml::from_str(text).map_err(toml_error)?;
        let known = Self::keys();
        for key in table.keys() {
            if !known.iter().any(|k| k == key) {
                let line = text
                    .lines()
                    .position(|l| l.trim_start().starts_with(key.as_str()))
                    .map_or(String::new(), |n| format!("line {}: ", n + 1));
                return Err(format!(
                    "{line}unknown key `{key}`; the keys are the flags of `smolrtc serve`: {}",
                    known.join(", ")
                ));
            }
        }
        // The flags' own spellings of list keys.
        for (alias, key) in [
            ("allow-host", "allow-hosts"),
            ("allow-origin", "allow-origins"),
            ("turn-url", "turn-urls"),
        ] {
            if let Some(v) = table.remove(alias) {
                if table.insert(key.into(), v).is_some() {
                    return Err(format!("{alias} and {key}: give one"));
                }
            }
        }
        // The older spelling of --no-rawrtc-flow.
        if let Some(v) = table.remove("rawrtc-flow") {
            let on = v.as_bool().ok_or("rawrtc-flow: expected true or false")?;
            table.insert("no-rawrtc-flow".into(), toml::Value::Boolean(!on));
        }
        // Keys the file leaves out take the flags' defaults.
        let mut map = to_map(&Self::default())?;
        for (key, value) in table {
            let value = serde_json::to_value(value).map_err(|e| format!("{key}: {e}"))?;
            map.insert(key, value);
        }
        let file: Self =
            serde_json::from_value(serde_json::Value::Object(map.clone())).map_err(|e| {
                // serde_json names no key: find the one whose value does not fit.
                let key = map
                    .iter()
                    .find(|(k, v)| {
                        let mut one = to_map(&Self::default()).unwrap_or_default();
                        one.insert((*k).clone(), (*v).clone());
                        serde_json::from_value::<Self>(serde_json::Value::Object(one)).is_err()
                    })
                    .map_or("settings".to_owned(), |(k, _)| k.clone());
                let line = text
                    .lines()
                    .position(|l| l.trim_start().starts_with(key.as_str()))
                    .map_or(String::new(), |n| format!("line {}: ", n + 1));
                format!("{line}{key}: {e}")
            })?;
        if file.token.is_some() && file.token_file.is_some() {
            return Err("token and token-file: give one".into());
        }
        file.check().map_err(|e| e.to_string())?;
        Ok(file)
    }

    /// The file keys: the flags' long names (and the accepted older spellings).
    fn keys() -> Vec<String> {
        let cmd = Self::augment_args(clap::Command::new("serve"));
        let mut keys: Vec<String> = cmd
            .get_arguments()
            .filter(|a| a.get_id() != "config")
            .map(|a| a.get_id().as_str().replace('_', "-"))
            .collect();
        keys.extend(["allow-host", "allow-origin", "turn-url", "rawrtc-flow"].map(String::from));
        #[cfg(feature = "media")]
        keys.extend(["streams".into(), "sinks".into()]);
        // `publish` (the `--publish` flag's key) names the `[publish.NAME]` tables.
        keys
    }

    /// What can be wrong in one value alone (the rest is checked by the service).
    fn check(&self) -> smolrtc::Result<()> {
        if let Some(t) = &self.token {
            service::check_token(&t.0)?;
        }
        for h in &self.allow_hosts {
            service::check_allowed_host(h)?;
        }
        for o in &self.allow_origins {
            service::check_allowed_origin(o)?;
        }
        #[cfg(feature = "media")]
        self.stream_configs()?;
        #[cfg(feature = "media")]
        self.sink_configs()?;
        #[cfg(feature = "media")]
        self.publish_configs(false)?;
        Ok(())
    }

    /// The service configuration these settings ask for.
    pub fn into_config(self) -> smolrtc::Result<ServiceConfig> {
        self.check()?;
        #[cfg(feature = "media")]
        let streams = self.stream_configs()?;
        #[cfg(feature = "media")]
        let sinks = self.sink_configs()?;
        #[cfg(feature = "media")]
        let publish = self.publish_configs(true)?;
        let invalid = |e: String| smolrtc::Error::InvalidArgument(e.into());
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.0.clone()),
            (None, Some(path)) => Some(read_token_file(path, "--token-file")?),
            // The environment, so the token needs neither the command line nor a file.
            (None, None) => std::env::var("SMOLRTC_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        for (flag, v) in [
            ("max-channels", self.max_channels),
            ("max-remote-candidates", self.max_remote_candidates),
            ("send-buffer-per-channel", self.send_buffer_per_channel),
            ("send-buffer-per-session", self.send_buffer_per_session),
            ("max-channel-label", self.max_channel_label),
            ("max-channel-protocol", self.max_channel_protocol),
        ] {
            if v == 0 {
                return Err(invalid(format!("--{flag} must be at least 1")));
            }
        }
        let mut config = ServiceConfig {
            listen: self
                .listen
                .0
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
            serve_http: self.listen.0.is_some(),
            device_id: self.device_id.clone().unwrap_or_default(),
            turn_rest: self.turn_rest()?,
            mqtt: self.mqtt_config()?,
            max_sessions: self.max_sessions,
            max_body: self.max_body,
            max_connections: self.max_connections,
            max_websockets: self.max_websockets,
            max_connections_per_address: self.max_connections_per_address,
            max_slow_connections_per_address: self.max_slow_connections_per_address,
            max_sessions_per_address: self
                .max_sessions_per_address
                .unwrap_or((self.max_sessions / 4).max(1)),
            max_websockets_per_address: self.max_websockets_per_address,
            allow_hosts: self.allow_hosts.clone(),
            allow_origins: self.allow_origins.clone(),
            header_timeout: seconds("header-timeout", self.header_timeout).map_err(invalid)?,
            body_timeout: seconds("body-timeout", self.body_timeout).map_err(invalid)?,
            write_timeout: seconds("write-timeout", self.write_timeout).map_err(invalid)?,
            connect_timeout: seconds("connect-timeout", self.connect_timeout).map_err(invalid)?,
            token,
            rawrtc_flow: !self.no_rawrtc_flow,
            single_port: self.single_port,
            ..Default::default()
        };
        let peer = &mut config.peer;
        peer.max_channels = self.max_channels;
        peer.max_channel_label = self.max_channel_label;
        peer.max_channel_protocol = self.max_channel_protocol;
        peer.ice.max_remote_candidates = self.max_remote_candidates;
        peer.sctp.send_buffer_per_channel = self.send_buffer_per_channel;
        peer.sctp.send_buffer_per_connection = self.send_buffer_per_session;
        peer.sctp.receive_buffer = board_sctp_receive_buffer();
        self.ice.apply(&mut peer.ice).map_err(invalid)?;
        #[cfg(feature = "media")]
        {
            config.streams = streams;
            config.sinks = sinks;
            config.max_sink_file_bytes = self.max_sink_file_bytes;
            config.publish = publish;
        }
        config.tls = self.tls(&config)?;
        Ok(config)
    }

    /// The streams of `--video`/`--audio` and the file's `[streams.NAME]` tables.
    #[cfg(feature = "media")]
    fn stream_configs(&self) -> smolrtc::Result<Vec<service::StreamConfig>> {
        use smolrtc::media::MediaKind;
        let mut streams = Vec::new();
        for v in &self.video {
            service::StreamConfig::add(&mut streams, MediaKind::Video, v)?;
        }
        for a in &self.audio {
            service::StreamConfig::add(&mut streams, MediaKind::Audio, a)?;
        }
        for (name, t) in &self.streams {
            if t.video.is_none() && t.audio.is_none() {
                return Err(smolrtc::Error::InvalidArgument(
                    format!("[streams.{name}]: give video = \"SOURCE\" and/or audio = \"SOURCE\"")
                        .into(),
                ));
            }
            for (kind, source) in [(MediaKind::Video, &t.video), (MediaKind::Audio, &t.audio)] {
                if let Some(source) = source {
                    service::StreamConfig::add_source(&mut streams, kind, name, source)?;
                }
            }
        }
        Ok(streams)
    }

    /// The publishes of `--publish` and the file's `[publish.NAME]` tables; with
    /// `read_tokens`, their token files read.
    #[cfg(feature = "media")]
    fn publish_configs(&self, read_tokens: bool) -> smolrtc::Result<Vec<service::PublishConfig>> {
        let mut out = Vec::new();
        for f in &self.publish {
            out.push((service::PublishConfig::parse(f)?, None));
        }
        for (name, t) in &self.publish_tables {
            let c = service::PublishConfig {
                name: name.clone(),
                url: t.url.clone(),
                token: None,
                ca: None,
            };
            c.check()?;
            out.push((c, t.token_file.as_ref()));
        }
        let mut list = Vec::new();
        for (mut c, own) in out {
            c.ca = self.publish_ca.clone();
            if read_tokens {
                if let Some((path, flag)) = own.map(|p| (p, "[publish.NAME] token-file")).or(self
                    .publish_token_file
                    .as_ref()
                    .map(|p| (p, "--publish-token-file")))
                {
                    c.token = Some(read_token_file(path, flag)?);
                }
            }
            list.push(c);
        }
        Ok(list)
    }

    /// The sinks of `--sink` and the file's `[sinks.NAME]` tables.
    #[cfg(feature = "media")]
    fn sink_configs(&self) -> smolrtc::Result<Vec<service::SinkConfig>> {
        use smolrtc::media::MediaKind;
        let mut sinks = Vec::new();
        for s in &self.sink {
            service::SinkConfig::add(&mut sinks, s)?;
        }
        for (name, d) in &self.sinks {
            match d {
                SinkDests::Both(dest) => {
                    service::SinkConfig::add_dest(&mut sinks, None, name, dest)?
                }
                SinkDests::Kinds(k) => {
                    if k.video.is_none() && k.audio.is_none() {
                        return Err(smolrtc::Error::InvalidArgument(
                            format!(
                                "[sinks.{name}]: give video = \"DEST\" and/or audio = \"DEST\""
                            )
                            .into(),
                        ));
                    }
                    for (kind, dest) in [(MediaKind::Video, &k.video), (MediaKind::Audio, &k.audio)]
                    {
                        if let Some(dest) = dest {
                            service::SinkConfig::add_dest(&mut sinks, Some(kind), name, dest)?;
                        }
                    }
                }
            }
        }
        Ok(sinks)
    }
}

impl ServeSettings {
    fn turn_rest(&self) -> smolrtc::Result<Option<smolrtc::turn_rest::TurnRest>> {
        let invalid = |e: String| smolrtc::Error::invalid(e);
        match (&self.turn_secret_file, self.turn_urls.is_empty()) {
            (None, true) => Ok(None),
            (None, false) => Err(invalid("--turn-url needs --turn-secret-file".into())),
            (Some(_), true) => Err(invalid("--turn-secret-file needs a --turn-url".into())),
            (Some(f), false) => {
                let ttl =
                    seconds("turn-ttl", self.turn_ttl.min(7.0 * 86_400.0)).map_err(invalid)?;
                smolrtc::turn_rest::TurnRest::with_secret_file(self.turn_urls.clone(), f, ttl)
                    .map(Some)
            }
        }
    }

    /// `--tls-cert`/`--tls-key` read and checked, or `--tls-self-signed` kept or made.
    fn tls(&self, config: &ServiceConfig) -> smolrtc::Result<Option<service::TlsIdentity>> {
        let invalid = |e: &str| Err(smolrtc::Error::invalid(e.to_owned()));
        match (&self.tls_cert, &self.tls_key, self.tls_self_signed) {
            (None, None, false) => Ok(None),
            (Some(c), Some(k), false) => {
                let id = service::TlsIdentity::load(c, k)?;
                log::info!(
                    "TLS: certificate {}: sha-256 {} spki {}",
                    c.display(),
                    id.fingerprint(),
                    id.spki_sha256()
                );
                Ok(Some(id))
            }
            (Some(_), None, false) => invalid("--tls-cert needs --tls-key"),
            (None, Some(_), false) => invalid("--tls-key needs --tls-cert"),
            (_, _, true) if self.tls_cert.is_some() || self.tls_key.is_some() => {
                invalid("--tls-self-signed and --tls-cert/--tls-key: give one")
            }
            (_, _, true) => {
                let dir = self.state_dir();
                let (names, ips) = service::tls::device_names(config);
                service::TlsIdentity::self_signed(&dir, &names, &ips).map(Some)
            }
        }
    }

    /// `--state-dir`, or where systemd, root or a user keeps state.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
            // systemd may list several, colon-separated: the first is ours.
            let d = d.to_string_lossy();
            return PathBuf::from(d.split(':').next().unwrap_or(&d));
        }
        // SAFETY: getuid cannot fail.
        if unsafe { libc::getuid() } == 0 {
            return PathBuf::from("/var/lib/smolrtc");
        }
        match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".local/state/smolrtc"),
            None => PathBuf::from("/var/lib/smolrtc"),
        }
    }

    fn mqtt_config(&self) -> smolrtc::Result<Option<smolrtc::mqtt::MqttConfig>> {
        let invalid = |e: String| smolrtc::Error::invalid(e);
        let Some(url) = &self.mqtt else {
            if self.listen.0.is_none() {
                return Err(invalid(
                    "--listen none needs --mqtt (or nothing could reach the device)".into(),
                ));
            }
            return Ok(None);
        };
        let url = smolrtc::mqtt::MqttUrl::parse(&url.0).map_err(invalid)?;
        let mut m = smolrtc::mqtt::MqttConfig::new(url);
        if let Some(f) = &self.mqtt_password_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| invalid(format!("--mqtt-password-file {}: {e}", f.display())))?;
            m.password = Some(text.lines().next().unwrap_or_default().to_owned());
        }
        m.prefix = self.mqtt_prefix.clone();
        m.ca = self.mqtt_ca.clone();
        Ok(Some(m))
    }
}

/// `--listen`: an address, or `none`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(Listen(None));
        }
        s.parse()
            .map(|a| Listen(Some(a)))
            .map_err(|_| format!("{s:?}: expected ADDRESS:PORT (e.g. 0.0.0.0:8888) or none"))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("none"),
        }
    }
}

impl Default for ServeSettings {
    /// The flags' defaults.
    fn default() -> Self {
        let cmd = Self::augment_args(clap::Command::new("serve").no_binary_name(true));
        let m = cmd.get_matches_from(Vec::<String>::new());
        // Every field has a default or is optional: nothing is required.
        Self::from_arg_matches(&m).expect("defaults parse")
    }
}

fn to_map<T: Serialize>(v: &T) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("settings: not a table".into()),
        Err(e) => Err(format!("settings: {e}")),
    }
}

/// A timeout setting's value: seconds above 0 and at most a day.
fn seconds(flag: &str, s: f64) -> Result<Duration, String> {
    if !(s.is_finite() && s > 0.0 && s <= 86_400.0) {
        return Err(format!(
            "--{flag}: expected seconds above 0 (at most 86400), got {s}"
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

/// The token in `path`: its first line, without surrounding whitespace. Errors name the
/// file, never its content.
fn read_token_file(path: &Path, flag: &str) -> smolrtc::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        smolrtc::Error::InvalidArgument(format!("{flag} {}: {e}", path.display()).into())
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(smolrtc::Error::InvalidArgument(
            format!("{flag} {}: the file is empty", path.display()).into(),
        ));
    }
    Ok(token)
}

/// A value kept out of `Debug` output (and so out of logs).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Self(s.to_owned()))
    }
}

/// `--mqtt`'s URL as written; `Debug` shows it with the password (`USER:PASS@`) as `***`,
/// parsed or not, so settings can be logged.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct BrokerUrl(pub String);

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.0;
        let start = s.find("://").map_or(0, |i| i + 3);
        let authority_end = s[start..].find('/').map_or(s.len(), |i| start + i);
        // The user info ends at the authority's last '@'; its password after the first ':'.
        let redacted = match s[start..authority_end].rfind('@') {
            Some(at) => match s[start..start + at].find(':') {
                Some(colon) => format!("{}***{}", &s[..start + colon + 1], &s[start + at..]),
                None => s.clone(),
            },
            None => s.clone(),
        };
        write!(f, "{redacted:?}")
    }
}

impl FromStr for BrokerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Self(s.to_owned()))
    }
}

/// A STUN/TURN server URL as written (credentials included), checked when read; `Debug`
/// shows it without credentials.
#[derive(Clone)]
pub struct ServerUrl(String, IceServer);

impl std::fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.1)
    }
}

impl FromStr for ServerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        IceServer::parse(s).map(|server| Self(s.to_owned(), server))
    }
}

impl Serialize for ServerUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ServerUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let url = String::deserialize(d)?;
        url.parse().map_err(serde::de::Error::custom)
    }
}

/// `FIRST-LAST` (or one port), as `--ice-ports` and `ice-ports` take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a
            .trim()
            .parse()
            .map_err(|_| format!("bad first port {a:?}"))?;
        let b: u16 = b
            .trim()
            .parse()
            .map_err(|_| format!("bad last port {b:?}"))?;
        if a == 0 || a > b {
            return Err(format!(
                "expected FIRST-LAST with 0 < FIRST <= LAST, got {s:?}"
            ));
        }
        Ok(Self(a, b))
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde as text, for values with `Display` and `FromStr`.
mod text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `smolrtc serve`'s settings from its command line `args` (without the program name),
/// with its `--config` file underneath: what `main` does, for tests.
#[cfg(test)]
fn serve_from(args: &[&str]) -> Result<ServeSettings, String> {
    let cmd = ServeSettings::augment_args(clap::Command::new("serve").no_binary_name(true));
    let m = cmd.try_get_matches_from(args).map_err(|e| e.to_string())?;
    let s = ServeSettings::from_arg_matches(&m).map_err(|e| e.to_string())?;
    s.resolve(&m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error `serve` with `args` stops at: the flags parse, the settings do not.
    fn config_err(args: &[&str]) -> String {
        match serve_from(args).unwrap().into_config() {
            Ok(_) => panic!("{args:?} taken"),
            Err(e) => e.to_string(),
        }
    }

    /// A new temporary directory `smolrtc-TAG-PID` and the path of its `serve.toml`,
    /// holding `toml`.
    fn config_file(tag: &str, toml: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("smolrtc-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("serve.toml");
        std::fs::write(&path, toml).unwrap();
        (dir, path)
    }

    #[test]
    fn full_file() {
        let f = ServeSettings::parse(
            r#"
            listen = "0.0.0.0:8888"
            single-port = 50000
            ice-servers = ["stun:192.0.2.10", "turn:u:secret@192.0.2.10?transport=tcp"]
            ice-transport-policy = "relay"
            ice-ports = "50000-50100"
            gather-timeout = 2.5
            "#,
        )
        .unwrap();
        assert_eq!(f.listen, Listen(Some("0.0.0.0:8888".parse().unwrap())));
        assert_eq!(f.single_port, Some(50000));
        assert_eq!(f.ice.ice_servers.len(), 2);
        assert_eq!(f.ice.ice_transport_policy, TransportPolicy::Relay);
        assert_eq!(f.ice.ice_ports, Some(PortRange(50000, 50100)));
        assert_eq!(f.ice.gather_timeout, 2.5);
        // Keys left out keep the flags' defaults.
        assert_eq!(f.max_body, service::DEFAULT_MAX_BODY);
        assert!(!format!("{f:?}").contains("u:secret"));
    }

    #[test]
    fn mqtt_password_not_in_debug() {
        for (url, shown) in [
            (
                "mqtts://dev1:hunter2pw@broker.example:8883",
                "mqtts://dev1:***@broker.example:8883",
            ),
            ("wss://dev1:p@ss:w0rd@b/mqtt", "wss://dev1:***@b/mqtt"),
            ("mqtt://dev1@b", "mqtt://dev1@b"),
            ("mqtt://b/x:y@z", "mqtt://b/x:y@z"),
            // Not a URL the client takes: still no password shown.
            ("dev1:hunter2pw@b", "dev1:***@b"),
        ] {
            let s = ServeSettings::parse(&format!("mqtt = {url:?}")).unwrap();
            let debug = format!("{s:?}");
            assert!(debug.contains(shown), "{debug}");
            assert!(
                !debug.contains("hunter2pw") && !debug.contains("w0rd"),
                "{debug}"
            );
            assert_eq!(s.mqtt.unwrap().0, url);
        }
        let cmd = ServeSettings::augment_args(clap::Command::new("serve").no_binary_name(true));
        let m = cmd.get_matches_from(["--mqtt", "mqtt://dev1:hunter2pw@b"]);
        let s = ServeSettings::from_arg_matches(&m).unwrap();
        assert!(!format!("{s:?}").contains("hunter2pw"));
        assert_eq!(s.mqtt.unwrap().0, "mqtt://dev1:hunter2pw@b");
    }

    #[test]
    fn tls_keys_in_the_file() {
        let dir = std::env::temp_dir().join(format!("smolrtc-settings-tls-{}", std::process::id()));
        let made = service::tls::SelfSigned::generate(
            &["device.local".into()],
            &[],
            service::tls::SELF_SIGNED_VALIDITY,
        )
        .unwrap();
        let (cert, key) = made.write(&dir).unwrap();
        let f = ServeSettings::parse(&format!(
            "tls-cert = {:?}\ntls-key = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ))
        .unwrap();
        let config = f.into_config().unwrap();
        assert!(config.tls.is_some());
        let f = ServeSettings::parse(&format!(
            "tls-self-signed = true\nstate-dir = {:?}\n",
            dir.join("state").display().to_string()
        ))
        .unwrap();
        assert_eq!(f.state_dir(), dir.join("state"));
        assert!(f.into_config().unwrap().tls.is_some());
        assert!(dir.join("state/cert.pem").exists());
        let f = ServeSettings::parse(&format!("tls-key = {:?}\n", key.display().to_string()));
        let Err(e) = f.unwrap().into_config() else {
            panic!("a key without its certificate was taken");
        };
        let e = e.to_string();
        assert!(e.contains("--tls-key needs --tls-cert"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn limits_and_token() {
        let f = ServeSettings::parse(
            r#"
            max-channels = 32
            max-remote-candidates = 50
            max-connections = 20
            max-websockets = 4
            header-timeout = 5
            body-timeout = 2.5
            write-timeout = 3
            connect-timeout = 20
            token = "s3cr3t-t0ken-abcdef"
            "#,
        )
        .unwrap();
        assert_eq!(f.max_channels, 32);
        assert_eq!(f.max_remote_candidates, 50);
        assert_eq!(f.max_connections, 20);
        assert_eq!(f.max_websockets, 4);
        assert_eq!(f.header_timeout, 5.0);
        assert_eq!(f.body_timeout, 2.5);
        assert_eq!(f.write_timeout, 3.0);
        assert_eq!(f.connect_timeout, 20.0);
        assert_eq!(f.token.as_ref().unwrap().0, "s3cr3t-t0ken-abcdef");
        assert!(!format!("{f:?}").contains("s3cr3t"));
        let e = ServeSettings::parse("token = \"has space s3cr3t\"").unwrap_err();
        assert!(e.contains("token") && !e.contains("s3cr3t"), "{e}");
        let e =
            ServeSettings::parse("token = \"abcdefghijklmnop\"\ntoken-file = \"/x\"").unwrap_err();
        assert!(e.contains("give one"), "{e}");
    }

    #[test]
    fn per_address_limits_hosts_and_origins() {
        let f = ServeSettings::parse(
            r#"
            max-connections-per-address = 8
            max-slow-connections-per-address = 4
            max-sessions-per-address = 2
            max-websockets-per-address = 3
            allow-host = ["device.example"]
            allow-origins = ["https://device.example", "http://10.0.0.2:8080"]
            "#,
        )
        .unwrap();
        assert_eq!(f.max_connections_per_address, 8);
        assert_eq!(f.max_slow_connections_per_address, 4);
        assert_eq!(f.max_sessions_per_address, Some(2));
        assert_eq!(f.max_websockets_per_address, 3);
        assert_eq!(f.allow_hosts, ["device.example"]);
        assert_eq!(f.allow_origins.len(), 2);
        let e = ServeSettings::parse("allow-host = [\"device:8888\"]").unwrap_err();
        assert!(
            e.contains("allow-host") && e.contains("without a port"),
            "{e}"
        );
        let e = ServeSettings::parse("allow-origin = [\"null\"]").unwrap_err();
        assert!(e.contains("allow-origin"), "{e}");
        let e = ServeSettings::parse("allow-origin = [\"http://a/path\"]").unwrap_err();
        assert!(e.contains("allow-origin"), "{e}");
    }

    #[test]
    fn channel_limits_and_the_older_rawrtc_flow_key() {
        let f = ServeSettings::parse(
            r#"
            send-buffer-per-channel = 1048576
            send-buffer-per-session = 4194304
            max-channel-label = 64
            max-channel-protocol = 32
            rawrtc-flow = false
            "#,
        )
        .unwrap();
        assert_eq!(f.send_buffer_per_channel, 1 << 20);
        assert_eq!(f.send_buffer_per_session, 4 << 20);
        assert_eq!(f.max_channel_label, 64);
        assert_eq!(f.max_channel_protocol, 32);
        assert!(f.no_rawrtc_flow);
        let c = f.into_config().unwrap();
        assert_eq!(c.peer.sctp.send_buffer_per_connection, 4 << 20);
        assert_eq!(c.peer.max_channel_label, 64);
        assert!(!c.rawrtc_flow);
    }

    #[test]
    fn errors_name_the_key_and_hide_secrets() {
        let e =
            ServeSettings::parse("ice-servers = [\"turn:u:secret@h?transport=x\"]").unwrap_err();
        assert!(e.contains("transport=x") && !e.contains("secret"), "{e}");
        let e = ServeSettings::parse("lissen = \"1.2.3.4:1\"").unwrap_err();
        assert!(e.contains("lissen") && e.contains("line 1"), "{e}");
        let e = ServeSettings::parse("ice-transport-policy = \"some\"").unwrap_err();
        assert!(e.contains("all or relay"), "{e}");
        let e = ServeSettings::parse("ice-ports = \"9-1\"").unwrap_err();
        assert!(e.contains("ice-ports"), "{e}");
        let e = ServeSettings::parse("\n\nmax-sessions = \"many\"").unwrap_err();
        assert!(e.contains("max-sessions") && e.contains("line 3"), "{e}");
        let e = ServeSettings::parse("config = \"/etc/x\"").unwrap_err();
        assert!(e.contains("unknown key `config`"), "{e}");
    }

    #[test]
    fn typed_flags_win_over_the_file_and_the_file_over_defaults() {
        let (dir, path) = config_file(
            "settings",
            "max-sessions = 7\nmax-body = 1000\nice-servers = [\"stun:192.0.2.1\"]\nloopback = true\n",
        );
        let p = path.to_str().unwrap();
        let s = serve_from(&["--config", p, "--max-body", "2000"]).unwrap();
        assert_eq!(s.max_sessions, 7, "from the file");
        assert_eq!(s.max_body, 2000, "typed");
        assert_eq!(s.max_websockets, service::DEFAULT_MAX_WEBSOCKETS, "default");
        assert!(s.ice.loopback);
        assert_eq!(s.ice.ice_servers.len(), 1);
        let s = serve_from(&[
            "--config",
            p,
            "--ice-server",
            "stun:192.0.2.2",
            "--ice-server",
            "stun:192.0.2.3",
        ])
        .unwrap();
        assert_eq!(
            s.ice.ice_servers.len(),
            2,
            "a typed list replaces the file's"
        );
        let c = s.into_config().unwrap();
        assert_eq!(c.max_sessions, 7);
        assert_eq!(c.max_sessions_per_address, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(feature = "media")]
    #[test]
    fn streams_from_flags_and_file() {
        let (dir, path) = config_file(
            "streams",
            "[streams.door]\nvideo = \"file:/door.ivf\"\naudio = \"rtp://127.0.0.1:5006?codec=opus\"\n",
        );
        let s = serve_from(&[
            "--config",
            path.to_str().unwrap(),
            "--video",
            "cam=rtp://127.0.0.1:5004?codec=h264",
            "--audio",
            "cam=file:/mic.ogg",
        ])
        .unwrap();
        let c = s.into_config().unwrap();
        let names: Vec<_> = c.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["cam", "door"]);
        assert!(c
            .streams
            .iter()
            .all(|s| s.video.is_some() && s.audio.is_some()));
        let _ = std::fs::remove_dir_all(&dir);

        let e = config_err(&["--video", "cam"]);
        assert!(e.contains("expected NAME=SOURCE"), "{e}");
        let e = config_err(&["--video", "cam=ftp://x"]);
        assert!(
            e.contains("stream cam") && e.contains("unknown source"),
            "{e}"
        );
        let e = config_err(&["--video", "cam=file:a.ivf", "--video", "cam=file:b.ivf"]);
        assert!(e.contains("two video sources"), "{e}");
        let e = config_err(&["--audio", "cam=file:a.ivf"]);
        assert!(e.contains("use --video"), "{e}");
        let e = config_err(&["--video", "c/a=file:a.ivf"]);
        assert!(e.contains("stream name"), "{e}");
        let e = config_err(&["--video", "cam=rtp://127.0.0.1:5004"]);
        assert!(e.contains("codec"), "{e}");
        let e = ServeSettings::parse("[streams.cam]\nvidoe = \"file:a.ivf\"").unwrap_err();
        assert!(e.contains("vidoe"), "{e}");
        let e = ServeSettings::parse("[streams.cam]\nvideo = \"file:a.txt\"").unwrap_err();
        assert!(e.contains("unknown file extension"), "{e}");
    }

    #[cfg(feature = "media")]
    #[test]
    fn sinks_from_flags_and_file() {
        let (dir, path) = config_file("sinks", "");
        let rec = dir.join("door");
        std::fs::write(
            &path,
            format!(
                "[sinks]\nintercom = \"rtp://127.0.0.1:5004\"\n[sinks.door]\nvideo = \"file:{}\"\naudio = \"exec:cat >/dev/null\"\n",
                rec.display()
            ),
        )
        .unwrap();
        let s = serve_from(&[
            "--config",
            path.to_str().unwrap(),
            "--sink",
            "cam=file:/tmp/cam.ivf",
        ])
        .unwrap();
        let c = s.into_config().unwrap();
        let names: Vec<_> = c.sinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["cam", "door", "intercom"]);
        assert!(c.sinks[0].audio.is_none() && c.sinks[0].video.is_some());
        assert!(c.sinks[1].audio.is_some() && c.sinks[1].video.is_some());
        assert!(c.sinks[2].audio.is_some() && c.sinks[2].video.is_some());
        let _ = std::fs::remove_dir_all(&dir);

        let e = config_err(&["--sink", "cam"]);
        assert!(e.contains("expected NAME=DEST"), "{e}");
        let e = config_err(&["--sink", "cam=ftp://x"]);
        assert!(e.contains("sink cam") && e.contains("unknown sink"), "{e}");
        let e = ServeSettings::parse("[sinks.cam]\nvideo = \"file:a.ogg\"").unwrap_err();
        assert!(e.contains("Opus is not video"), "{e}");
        let e = ServeSettings::parse("[sinks.cam]\nvidoe = \"file:a.ivf\"").unwrap_err();
        assert!(e.contains("sinks"), "{e}");
        let e = ServeSettings::parse("[sinks.cam]\n").unwrap_err();
        assert!(e.contains("[sinks.cam]: give video"), "{e}");
    }

    #[cfg(feature = "media")]
    #[test]
    fn publish_from_flags_and_file() {
        let (dir, path) = config_file("publish", "");
        let (own, shared) = (dir.join("own.token"), dir.join("shared.token"));
        std::fs::write(&own, "door-token\n").unwrap();
        std::fs::write(&shared, "cam-token\n").unwrap();
        std::fs::write(
            &path,
            format!(
                "publish-ca = \"/ca.pem\"\n[publish.door]\nurl = \"https://sfu.example/whip/door\"\ntoken-file = \"{}\"\n",
                own.display()
            ),
        )
        .unwrap();
        let s = serve_from(&[
            "--config",
            path.to_str().unwrap(),
            "--publish",
            "cam=http://127.0.0.1:9/whip/cam",
            "--publish-token-file",
            shared.to_str().unwrap(),
        ])
        .unwrap();
        let c = s.into_config().unwrap();
        let got: Vec<_> = c
            .publish
            .iter()
            .map(|p| (p.name.as_str(), p.url.as_str(), p.token.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("cam", "http://127.0.0.1:9/whip/cam", Some("cam-token")),
                ("door", "https://sfu.example/whip/door", Some("door-token")),
            ]
        );
        assert!(c
            .publish
            .iter()
            .all(|p| p.ca.as_deref() == Some(Path::new("/ca.pem"))));
        let _ = std::fs::remove_dir_all(&dir);

        let e = config_err(&["--publish", "cam"]);
        assert!(e.contains("expected NAME=URL"), "{e}");
        let e = config_err(&[
            "--publish",
            "cam=http://x/",
            "--publish-token-file",
            "/nonexistent",
        ]);
        assert!(e.contains("--publish-token-file /nonexistent"), "{e}");
        let e = ServeSettings::parse("[publish.cam]\nurl = \"ftp://x\"").unwrap_err();
        assert!(e.contains("expected http"), "{e}");
        let e = ServeSettings::parse("[publish.cam]\nurll = \"http://x\"").unwrap_err();
        assert!(e.contains("publish"), "{e}");
    }
}
