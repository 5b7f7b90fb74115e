//! The service's settings ([`ServiceConfig`]), their defaults, and the checks of the values
//! a person types (token, allowed hosts and origins).

use crate::error::{Error, Result};
use crate::peer::Config;
use std::net::SocketAddr;
use std::time::Duration;

/// Service settings; every limit is named here (and has a `smolrtc serve` flag of the same
/// name, dashed, and a config-file key).
#[derive(Clone)]
pub struct ServiceConfig {
    /// Address of the HTTP server (page + signaling).
    pub listen: SocketAddr,
    /// Template for every session's peer connection (its name is replaced by the session id).
    /// Its `max_channels` bounds the data channels of one session (default
    /// [`DEFAULT_MAX_CHANNELS`]): a channel the browser opens beyond it is closed at once.
    /// Its `ice.max_remote_candidates` bounds the remote candidates of one session (default
    /// [`crate::ice::DEFAULT_MAX_REMOTE_CANDIDATES`]): past it a trickled candidate gets
    /// `422` naming the limit (WebSocket: an error message).
    /// Its `sctp.send_buffer_per_channel` and `sctp.send_buffer_per_connection` bound what
    /// a session's handlers may queue (defaults [`DEFAULT_SEND_BUFFER_PER_CHANNEL`],
    /// [`DEFAULT_SEND_BUFFER_PER_SESSION`]).
    pub peer: Config,
    /// Most sessions at once; more get `503`.
    pub max_sessions: usize,
    /// Largest signaling request body (and WebSocket message), bytes; larger get `413`.
    pub max_body: usize,
    /// Longest wait for ICE gathering before a non-trickle answer goes out as it is.
    pub gather_timeout: Duration,
    /// Longest wait for a request's complete headers, from the connection's start or the
    /// end of the previous response: slow clients are dropped, and so are keep-alive
    /// connections idle that long.
    pub header_timeout: Duration,
    /// Longest wait for a request's body once its headers are in; slower gets `408` and the
    /// connection is closed.
    pub body_timeout: Duration,
    /// Longest a client may leave our writes blocked (by reading nothing); then it is
    /// dropped. Also applies to WebSocket connections.
    pub write_timeout: Duration,
    /// A session whose connection is not up this long after the offer (no ICE pair, no
    /// DTLS) is closed, so half-signaled sessions do not hold a place under `max_sessions`.
    pub connect_timeout: Duration,
    /// Most HTTP connections at once (WebSocket connections count under `max_websockets`
    /// once upgraded); more get `503` and are closed.
    pub max_connections: usize,
    /// Most WebSocket signaling connections at once; more get `503` instead of the upgrade.
    pub max_websockets: usize,
    /// Most HTTP connections at once from one client address; more get `429` and are
    /// closed. Below `max_connections`, so that one address cannot hold them all.
    pub max_connections_per_address: usize,
    /// Most connections at once from one client address that have not yet sent the
    /// complete headers of their first request (slowloris); more get `429` and are closed.
    /// A connection leaves this count once its first request's headers are in; later
    /// requests on it are bounded by `header_timeout` and `max_connections_per_address`.
    pub max_slow_connections_per_address: usize,
    /// Most sessions at once signaled from one client address; more get `429`. Below
    /// `max_sessions`, so that one address cannot hold them all.
    pub max_sessions_per_address: usize,
    /// Most WebSocket signaling connections at once from one client address; more get
    /// `429` instead of the upgrade.
    pub max_websockets_per_address: usize,
    /// Host names (besides IP literals, `localhost`, the machine's host name and
    /// `<hostname>.local`) that a request's `Host` may name; any other `Host` gets `421`
    /// everywhere but the page itself (DNS rebinding). Lowercase, no port.
    pub allow_hosts: Vec<String>,
    /// Origins (`http://name[:port]`, `https://...`) besides the service's own
    /// (`http://` + the request's `Host`) from which a page may upgrade to a WebSocket or
    /// send a state-changing request (anything but GET, HEAD, OPTIONS); another `Origin`
    /// gets `403`. A request without `Origin` (curl, native clients) is let through;
    /// `Origin: null` is not.
    pub allow_origins: Vec<String>,
    /// When set, every API request must carry `Authorization: Bearer <token>` (a WebSocket
    /// may put `?token=<token>` in its URL instead); the page itself still loads. Letters,
    /// digits and `-._~+/` (RFC 6750), then optional `=`; never logged.
    pub token: Option<String>,
    /// Run every session's ICE over this one UDP port (on each host address; 0 picks a free
    /// port), so the device needs one firewall hole; `None`: a port per session.
    pub single_port: Option<u16>,
    /// Run rawrtc's channel flow on every session (negotiated `cat-noises` id 0, and an
    /// in-band `bear-noises`/`lion-noises` once connected).
    pub rawrtc_flow: bool,
    /// Media streams (`--video NAME=SOURCE`, `--audio NAME=SOURCE`), served by WHEP at
    /// `/whep/NAME` and listed at `/api/streams`.
    #[cfg(feature = "media")]
    pub streams: Vec<super::StreamConfig>,
    /// Media sinks (`--sink NAME=DEST`): where a browser's camera and microphone go (WHIP
    /// at `/whip/NAME`, `?sink=NAME`), listed at `/api/sinks`.
    #[cfg(feature = "media")]
    pub sinks: Vec<super::SinkConfig>,
    /// Largest file a `file:` sink writes for one session's track, bytes; past it that
    /// track stops recording (a log line; the session goes on).
    #[cfg(feature = "media")]
    pub max_sink_file_bytes: u64,
    /// Streams pushed to WHIP endpoints (`--publish NAME=URL`): see `service::publish`.
    #[cfg(feature = "media")]
    pub publish: Vec<super::PublishConfig>,
    /// Serve HTTP on `listen` (`smolrtc serve --listen none`: no, signaling only through
    /// the MQTT broker).
    pub serve_http: bool,
    /// Serve everything on `listen` over HTTPS with this certificate (`--tls-cert`/
    /// `--tls-key`, `--tls-self-signed`); a plain-HTTP request there is redirected to
    /// `https://`. The page's own origin is then `https://<Host>`.
    pub tls: Option<super::TlsIdentity>,
    /// This device's name: its MQTT topics and TURN REST user name (empty: the host name).
    pub device_id: String,
    /// TURN servers sharing a secret with this device: credentials minted for its own ICE
    /// agent and for each client (`GET /api/ice-servers`, the MQTT `ice-servers` reply).
    pub turn_rest: Option<crate::turn_rest::TurnRest>,
    /// Signal through an MQTT broker too (fleet mode).
    #[cfg(feature = "mqtt")]
    pub mqtt: Option<crate::mqtt::MqttConfig>,
}

/// Default of [`ServiceConfig::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: usize = 64;
/// Default of [`ServiceConfig::max_body`], bytes.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Default [`ServiceConfig::max_sink_file_bytes`]: 1 GiB (over two hours of 1 Mbit/s video).
#[cfg(feature = "media")]
pub const DEFAULT_MAX_SINK_FILE_BYTES: u64 = 1 << 30;
/// Default data channels per session (the service's `peer.max_channels`).
pub const DEFAULT_MAX_CHANNELS: usize = 256;
/// Default send buffer of one channel, bytes (the service's
/// `peer.sctp.send_buffer_per_channel`): above what the built-in handlers keep queued
/// (chargen 4 MiB, echo 1 MiB, plus a message).
pub const DEFAULT_SEND_BUFFER_PER_CHANNEL: usize = 8 * 1024 * 1024;
/// Default send buffer of one session, all its channels, bytes (the service's
/// `peer.sctp.send_buffer_per_connection`).
pub const DEFAULT_SEND_BUFFER_PER_SESSION: usize = 16 * 1024 * 1024;
/// Default of [`ServiceConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
/// Default of [`ServiceConfig::max_websockets`].
pub const DEFAULT_MAX_WEBSOCKETS: usize = 64;
/// Default of [`ServiceConfig::max_connections_per_address`]: a quarter of the
/// connections, so that one address leaves three quarters to the others.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = DEFAULT_MAX_CONNECTIONS / 4;
/// Default of [`ServiceConfig::max_slow_connections_per_address`]: a browser opens at most
/// six connections to a host at once.
pub const DEFAULT_MAX_SLOW_CONNECTIONS_PER_ADDRESS: usize = 16;
/// Default of [`ServiceConfig::max_sessions_per_address`]: a quarter of the default
/// sessions (`smolrtc serve` takes a quarter of its `--max-sessions`).
pub const DEFAULT_MAX_SESSIONS_PER_ADDRESS: usize = DEFAULT_MAX_SESSIONS / 4;
/// Default of [`ServiceConfig::max_websockets_per_address`]: a quarter of the WebSockets.
pub const DEFAULT_MAX_WEBSOCKETS_PER_ADDRESS: usize = DEFAULT_MAX_WEBSOCKETS / 4;
/// Default of [`ServiceConfig::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServiceConfig::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServiceConfig::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServiceConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ServiceConfig {
    fn default() -> Self {
        let mut peer = Config {
            max_channels: DEFAULT_MAX_CHANNELS,
            ..Config::default()
        };
        peer.sctp.send_buffer_per_channel = DEFAULT_SEND_BUFFER_PER_CHANNEL;
        peer.sctp.send_buffer_per_connection = DEFAULT_SEND_BUFFER_PER_SESSION;
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8888)),
            peer,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_body: DEFAULT_MAX_BODY,
            gather_timeout: Duration::from_secs(5),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_websockets: DEFAULT_MAX_WEBSOCKETS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_slow_connections_per_address: DEFAULT_MAX_SLOW_CONNECTIONS_PER_ADDRESS,
            max_sessions_per_address: DEFAULT_MAX_SESSIONS_PER_ADDRESS,
            max_websockets_per_address: DEFAULT_MAX_WEBSOCKETS_PER_ADDRESS,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
            token: None,
            rawrtc_flow: true,
            single_port: None,
            #[cfg(feature = "media")]
            streams: Vec::new(),
            #[cfg(feature = "media")]
            sinks: Vec::new(),
            #[cfg(feature = "media")]
            max_sink_file_bytes: DEFAULT_MAX_SINK_FILE_BYTES,
            #[cfg(feature = "media")]
            publish: Vec::new(),
            serve_http: true,
            tls: None,
            device_id: String::new(),
            turn_rest: None,
            #[cfg(feature = "mqtt")]
            mqtt: None,
        }
    }
}

impl ServiceConfig {
    /// Checks the settings that can be wrong (a token the `Authorization` header cannot
    /// carry, a zero limit, a host name or origin that cannot match).
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.token {
            check_token(t)?;
        }
        for h in &self.allow_hosts {
            check_allowed_host(h)?;
        }
        for o in &self.allow_origins {
            check_allowed_origin(o)?;
        }
        for (name, v) in [
            ("max-sessions", self.max_sessions),
            ("max-body", self.max_body),
            ("max-connections", self.max_connections),
            ("max-websockets", self.max_websockets),
            (
                "max-connections-per-address",
                self.max_connections_per_address,
            ),
            (
                "max-slow-connections-per-address",
                self.max_slow_connections_per_address,
            ),
            ("max-sessions-per-address", self.max_sessions_per_address),
            (
                "max-websockets-per-address",
                self.max_websockets_per_address,
            ),
        ] {
            if v == 0 {
                return Err(Error::InvalidArgument(
                    format!("{name} must be at least 1").into(),
                ));
            }
        }
        for (name, v) in [
            ("header-timeout", self.header_timeout),
            ("body-timeout", self.body_timeout),
            ("write-timeout", self.write_timeout),
            ("connect-timeout", self.connect_timeout),
        ] {
            if v.is_zero() {
                return Err(Error::InvalidArgument(
                    format!("{name} must be above 0").into(),
                ));
            }
        }
        Ok(())
    }
}

/// A bearer token as RFC 6750 §2.1 spells one (`b64token`): letters, digits, `-._~+/`,
/// then optional `=` padding. The error never quotes the token.
pub fn check_token(token: &str) -> Result<()> {
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !ok {
        return Err(Error::InvalidArgument(
            "token: use letters, digits and -._~+/ only (RFC 6750 b64token), at least one".into(),
        ));
    }
    if token.len() < 16 {
        log::warn!(
            "token: only {} characters; 32 random ones (openssl rand -base64 24) are better",
            token.len()
        );
    }
    Ok(())
}

/// An `--allow-host` name: letters, digits, `-` and `.` (an IP literal is allowed anyway).
pub fn check_allowed_host(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !ok {
        return Err(Error::InvalidArgument(
            format!(
            "allow-host {name:?}: expected a host name (letters, digits, - and .), without a port"
        )
            .into(),
        ));
    }
    Ok(())
}

/// An `--allow-origin`: `http://` or `https://`, a host, an optional port, nothing else.
pub fn check_allowed_origin(origin: &str) -> Result<()> {
    if super::guard::Origin::parse(origin).is_none() {
        return Err(Error::InvalidArgument(
            format!("allow-origin {origin:?}: expected http://HOST[:PORT] or https://HOST[:PORT]")
                .into(),
        ));
    }
    Ok(())
}
