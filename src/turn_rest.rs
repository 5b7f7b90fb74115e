//! TURN REST credentials (coturn `use-auth-secret`, the "TURN REST API" draft): from a
//! secret shared with the TURN server, anyone holding it mints time-limited long-term
//! credentials, `username = EXPIRY:ID` (Unix seconds) and
//! `credential = base64(HMAC-SHA1(secret, username))`; the server checks the HMAC and the
//! expiry, so nothing is stored per client and a leaked credential dies on its own.
//!
//! The device mints them for its own TURN allocations and for each client (the MQTT
//! `ice-servers` reply, `GET /api/ice-servers`).

use crate::error::{Error, Result};
use crate::ice::{IceServer, ServerKind};
use base64::Engine as _;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default of [`TurnRest::ttl`]: one hour.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// TURN servers sharing a secret with this device.
#[derive(Clone)]
pub struct TurnRest {
    /// `turn:HOST[:PORT][?transport=udp|tcp]` or `turns:HOST[:PORT]`, without credentials.
    pub urls: Vec<String>,
    secret: Vec<u8>,
    /// How long a minted credential is valid.
    pub ttl: Duration,
}

impl fmt::Debug for TurnRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnRest")
            .field("urls", &self.urls)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Credentials minted for one user of the TURN servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub credential: String,
}

impl TurnRest {
    /// Checks every URL (TURN, no credentials inside) and the secret (not empty).
    pub fn new(urls: Vec<String>, secret: &[u8], ttl: Duration) -> Result<Self> {
        let invalid = |e: String| Error::invalid(e);
        if urls.is_empty() {
            return Err(invalid("turn-url: at least one is needed".into()));
        }
        if secret.is_empty() {
            return Err(invalid("turn-secret-file: the secret is empty".into()));
        }
        if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(7 * 86_400) {
            return Err(invalid("turn-ttl: between 60 s and 7 days".into()));
        }
        for u in &urls {
            let s = IceServer::parse_with(u, Some("u"), Some("p")).map_err(invalid)?;
            if s.kind != ServerKind::Turn {
                return Err(invalid(format!("turn-url {u:?}: expected turn: or turns:")));
            }
            if u.contains('@') {
                return Err(invalid(format!(
                    "turn-url: no credentials in the URL with a secret ({})",
                    s.host_port()
                )));
            }
        }
        Ok(Self {
            urls,
            secret: secret.to_vec(),
            ttl,
        })
    }

    /// Reads the secret from a file (its first line, trimmed).
    pub fn with_secret_file(
        urls: Vec<String>,
        path: &std::path::Path,
        ttl: Duration,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("turn-secret-file {}: {e}", path.display())))?;
        let secret = text.lines().next().unwrap_or_default().trim();
        Self::new(urls, secret.as_bytes(), ttl)
    }

    /// Credentials for `id`, valid until `now + ttl`.
    pub fn mint(&self, id: &str, now: SystemTime) -> Credentials {
        let expiry = (now + self.ttl)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let username = format!("{expiry}:{id}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.secret);
        let tag = ring::hmac::sign(&key, username.as_bytes());
        Credentials {
            username,
            credential: base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        }
    }

    /// The servers with fresh credentials for `id`, for this device's own ICE agent.
    pub fn ice_servers(&self, id: &str) -> Vec<IceServer> {
        let c = self.mint(id, SystemTime::now());
        self.urls
            .iter()
            .filter_map(|u| IceServer::parse_with(u, Some(&c.username), Some(&c.credential)).ok())
            .collect()
    }

    /// One W3C `RTCIceServer` (`{"urls":[..],"username":..,"credential":..}`) with fresh
    /// credentials for `id`, for a browser.
    pub fn rtc_ice_server(&self, id: &str) -> serde_json::Value {
        let c = self.mint(id, SystemTime::now());
        serde_json::json!({
            "urls": self.urls,
            "username": c.username,
            "credential": c.credential,
        })
    }
}

/// The W3C `iceServers` a client gets (`GET /api/ice-servers`, the MQTT `ice-servers`
/// reply): the device's STUN servers, and its TURN servers with fresh credentials.
pub(crate) fn for_clients(config: &crate::service::ServiceConfig) -> serde_json::Value {
    let mut v: Vec<serde_json::Value> = config
        .peer
        .ice
        .servers
        .iter()
        .filter(|s| s.kind == ServerKind::Stun)
        .map(|s| serde_json::json!({ "urls": format!("stun:{}", s.host_port()) }))
        .collect();
    if let Some(t) = &config.turn_rest {
        v.push(t.rtc_ice_server(&config.device_id));
    }
    serde_json::Value::Array(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        let t = TurnRest::new(
            vec!["turn:turn.example:3478?transport=udp".into()],
            b"north",
            Duration::from_secs(3600),
        )
        .unwrap();
        let c = t.mint("dev1", UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert_eq!(c.username, "1700003600:dev1");
        // openssl: printf 1700003600:dev1 | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(c.credential, "pQIuFU2IMi4T+qqhj2XaVXfRmHc=");
        let servers = t.ice_servers("dev1");
        assert_eq!(servers.len(), 1);
        assert!(servers[0].username.ends_with(":dev1"));
        let v = t.rtc_ice_server("c1");
        assert_eq!(v["urls"][0], "turn:turn.example:3478?transport=udp");
        assert!(v["username"].as_str().unwrap().ends_with(":c1"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let ttl = DEFAULT_TTL;
        assert!(TurnRest::new(vec![], b"s", ttl).is_err());
        assert!(TurnRest::new(vec!["turn:h".into()], b"", ttl).is_err());
        assert!(TurnRest::new(vec!["stun:h".into()], b"s", ttl).is_err());
        assert!(TurnRest::new(vec!["turn:u:p@h".into()], b"s", ttl).is_err());
        assert!(TurnRest::new(vec!["turn:h".into()], b"s", Duration::from_secs(1)).is_err());
        let e = format!(
            "{:?}",
            TurnRest::new(vec!["turns:h".into()], b"topsecret", ttl)
        );
        assert!(!e.contains("topsecret"), "{e}");
    }
}
