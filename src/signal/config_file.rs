//! `smolrtc serve --config FILE`: the service's settings in TOML, keys named as the
//! command-line flags (`ice-servers = ["turn:user:pass@host"]`, `single-port = 50000`, ...).
//! A flag given on the command line wins over the file. Keeping TURN credentials here,
//! readable by the service only, keeps them out of `ps` and shell history.

use crate::ice::{IceServer, TransportPolicy};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The settings a service file may hold; every key is optional.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeFile {
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--max-sessions`
    pub max_sessions: Option<usize>,
    /// `--max-body`
    pub max_body: Option<usize>,
    /// `--max-channels`
    pub max_channels: Option<usize>,
    /// `--max-remote-candidates`
    pub max_remote_candidates: Option<usize>,
    /// `--send-buffer-per-channel`, bytes.
    pub send_buffer_per_channel: Option<usize>,
    /// `--send-buffer-per-session`, bytes.
    pub send_buffer_per_session: Option<usize>,
    /// `--max-channel-label`, bytes.
    pub max_channel_label: Option<usize>,
    /// `--max-channel-protocol`, bytes.
    pub max_channel_protocol: Option<usize>,
    /// `--max-connections`
    pub max_connections: Option<usize>,
    /// `--max-websockets`
    pub max_websockets: Option<usize>,
    /// `--max-connections-per-address`
    pub max_connections_per_address: Option<usize>,
    /// `--max-slow-connections-per-address`
    pub max_slow_connections_per_address: Option<usize>,
    /// `--max-sessions-per-address`
    pub max_sessions_per_address: Option<usize>,
    /// `--max-websockets-per-address`
    pub max_websockets_per_address: Option<usize>,
    /// `--allow-host`, one name per entry (also spelled `allow-host`).
    #[serde(alias = "allow-host")]
    pub allow_hosts: Option<Vec<String>>,
    /// `--allow-origin`, one origin per entry (also spelled `allow-origin`).
    #[serde(alias = "allow-origin")]
    pub allow_origins: Option<Vec<String>>,
    /// `--header-timeout`, seconds.
    pub header_timeout: Option<f64>,
    /// `--body-timeout`, seconds.
    pub body_timeout: Option<f64>,
    /// `--write-timeout`, seconds.
    pub write_timeout: Option<f64>,
    /// `--connect-timeout`, seconds.
    pub connect_timeout: Option<f64>,
    /// `--token`: the API's bearer token.
    pub token: Option<Secret>,
    /// `--token-file`
    pub token_file: Option<PathBuf>,
    /// `--single-port`
    pub single_port: Option<u16>,
    /// The inverse of `--no-rawrtc-flow`.
    pub rawrtc_flow: Option<bool>,
    /// `--ice-server`, one URL per entry.
    pub ice_servers: Option<Vec<IceServer>>,
    /// `--ice-transport-policy`: "all" or "relay".
    pub ice_transport_policy: Option<TransportPolicy>,
    /// `--ice-address`
    pub ice_addresses: Option<Vec<IpAddr>>,
    /// `--loopback`
    pub loopback: Option<bool>,
    /// `--ice-ports`, as "FIRST-LAST".
    pub ice_ports: Option<String>,
    /// `--gather-timeout`, seconds.
    pub gather_timeout: Option<f64>,
    /// `--tls-roots`
    pub tls_roots: Option<PathBuf>,
}

/// A value kept out of `Debug` output (and so out of logs).
#[derive(Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl ServeFile {
    /// Reads and checks `path`; the error names the file, line and key.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        // The message and line only: toml's own rendering quotes the line, and a line may
        // hold a TURN password.
        let file: Self = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => format!("line {l}: {}", e.message().trim()),
                None => e.message().trim().to_owned(),
            }
        })?;
        if file.token.is_some() && file.token_file.is_some() {
            return Err("token and token-file: give one".into());
        }
        if let Some(t) = &file.token {
            crate::signal::service::check_token(&t.0).map_err(|e| e.to_string())?;
        }
        for h in file.allow_hosts.iter().flatten() {
            crate::signal::service::check_allowed_host(h).map_err(|e| e.to_string())?;
        }
        for o in file.allow_origins.iter().flatten() {
            crate::signal::service::check_allowed_origin(o).map_err(|e| e.to_string())?;
        }
        if let Some(p) = &file.ice_ports {
            super::ice_options::parse_port_range(p).map_err(|e| format!("ice-ports: {e}"))?;
        }
        Ok(file)
    }
}

impl<'de> Deserialize<'de> for IceServer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let url = String::deserialize(d)?;
        IceServer::parse(&url).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for TransportPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file() {
        let f = ServeFile::parse(
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
        assert_eq!(f.listen, Some("0.0.0.0:8888".parse().unwrap()));
        assert_eq!(f.single_port, Some(50000));
        assert_eq!(f.ice_servers.as_ref().unwrap().len(), 2);
        assert_eq!(f.ice_transport_policy, Some(TransportPolicy::Relay));
    }

    #[test]
    fn limits_and_token() {
        let f = ServeFile::parse(
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
        assert_eq!(f.max_channels, Some(32));
        assert_eq!(f.max_remote_candidates, Some(50));
        assert_eq!(f.max_connections, Some(20));
        assert_eq!(f.max_websockets, Some(4));
        assert_eq!(f.header_timeout, Some(5.0));
        assert_eq!(f.body_timeout, Some(2.5));
        assert_eq!(f.write_timeout, Some(3.0));
        assert_eq!(f.connect_timeout, Some(20.0));
        assert_eq!(f.token.as_ref().unwrap().0, "s3cr3t-t0ken-abcdef");
        assert!(!format!("{f:?}").contains("s3cr3t"));
        let e = ServeFile::parse("token = \"has space s3cr3t\"").unwrap_err();
        assert!(e.contains("token") && !e.contains("s3cr3t"), "{e}");
        let e = ServeFile::parse("token = \"abc\"\ntoken-file = \"/x\"").unwrap_err();
        assert!(e.contains("give one"), "{e}");
    }

    #[test]
    fn per_address_limits_hosts_and_origins() {
        let f = ServeFile::parse(
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
        assert_eq!(f.max_connections_per_address, Some(8));
        assert_eq!(f.max_slow_connections_per_address, Some(4));
        assert_eq!(f.max_sessions_per_address, Some(2));
        assert_eq!(f.max_websockets_per_address, Some(3));
        assert_eq!(f.allow_hosts.unwrap(), ["device.example"]);
        assert_eq!(f.allow_origins.unwrap().len(), 2);
        let e = ServeFile::parse("allow-host = [\"device:8888\"]").unwrap_err();
        assert!(
            e.contains("allow-host") && e.contains("without a port"),
            "{e}"
        );
        let e = ServeFile::parse("allow-origin = [\"null\"]").unwrap_err();
        assert!(e.contains("allow-origin"), "{e}");
        let e = ServeFile::parse("allow-origin = [\"http://a/path\"]").unwrap_err();
        assert!(e.contains("allow-origin"), "{e}");
    }

    #[test]
    fn channel_limits() {
        let f = ServeFile::parse(
            r#"
            send-buffer-per-channel = 1048576
            send-buffer-per-session = 4194304
            max-channel-label = 64
            max-channel-protocol = 32
            "#,
        )
        .unwrap();
        assert_eq!(f.send_buffer_per_channel, Some(1 << 20));
        assert_eq!(f.send_buffer_per_session, Some(4 << 20));
        assert_eq!(f.max_channel_label, Some(64));
        assert_eq!(f.max_channel_protocol, Some(32));
    }

    #[test]
    fn errors_name_the_key_and_hide_secrets() {
        let e = ServeFile::parse("ice-servers = [\"turn:u:secret@h?transport=x\"]").unwrap_err();
        assert!(e.contains("transport=x") && !e.contains("secret"), "{e}");
        let e = ServeFile::parse("lissen = \"1.2.3.4:1\"").unwrap_err();
        assert!(e.contains("lissen"), "{e}");
        let e = ServeFile::parse("ice-transport-policy = \"some\"").unwrap_err();
        assert!(e.contains("all or relay"), "{e}");
        let e = ServeFile::parse("ice-ports = \"9-1\"").unwrap_err();
        assert!(e.contains("ice-ports"), "{e}");
    }
}
