//! STUN and TURN servers (W3C `RTCIceServer`), their URLs, and the transport policy.
//!
//! The command line takes one URL per server, with TURN credentials inline:
//! `stun:host[:port]`, `turn:user:pass@host[:port][?transport=udp|tcp]`,
//! `turns:user:pass@host[:port]` (TLS over TCP). RFC 7064/7065 URLs with the credentials
//! given separately (as the W3C API does) are accepted too. Credentials are never printed:
//! `Display` and `Debug` show `***` in their place, so servers can be logged as they are.

use std::fmt;

/// Default port of `stun:` and `turn:` (RFC 8489, RFC 8656).
pub const DEFAULT_PORT: u16 = 3478;
/// Default port of `turns:` (RFC 8656).
pub const DEFAULT_TLS_PORT: u16 = 5349;

/// What a server is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// STUN: server-reflexive candidates.
    Stun,
    /// TURN: relay candidates (and server-reflexive ones, when reached over UDP).
    Turn,
}

/// How the TURN server itself is reached (the relayed traffic is always UDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerTransport {
    /// UDP (the default).
    Udp,
    /// TCP, for networks that drop UDP.
    Tcp,
    /// TLS over TCP (`turns:`).
    Tls,
}

impl fmt::Display for ServerTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        })
    }
}

/// One STUN or TURN server.
#[derive(Clone, PartialEq, Eq)]
pub struct IceServer {
    /// STUN or TURN.
    pub kind: ServerKind,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// UDP/TCP port.
    pub port: u16,
    /// How the server is reached.
    pub transport: ServerTransport,
    /// TURN long-term credential: user name.
    pub username: String,
    /// TURN long-term credential: password.
    pub credential: String,
}

/// W3C `iceTransportPolicy`: which local candidates may be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportPolicy {
    /// Host, server-reflexive and relay candidates.
    #[default]
    All,
    /// Relay candidates only: every byte goes through a TURN server, and neither the local
    /// addresses nor the NAT's public one are revealed to the remote peer.
    Relay,
}

impl std::str::FromStr for TransportPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "relay" => Ok(Self::Relay),
            _ => Err(format!("unknown ICE transport policy {s:?} (all or relay)")),
        }
    }
}

impl fmt::Display for TransportPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::All => "all",
            Self::Relay => "relay",
        })
    }
}

impl IceServer {
    /// Parses one server URL (see the module documentation).
    pub fn parse(url: &str) -> Result<Self, String> {
        Self::parse_with(url, None, None)
    }

    /// Parses a W3C `urls` entry whose credentials are given apart (`username`,
    /// `credential`); credentials inside the URL win.
    pub fn parse_with(
        url: &str,
        username: Option<&str>,
        credential: Option<&str>,
    ) -> Result<Self, String> {
        // Errors name the server without its credentials.
        let shown = redact(url);
        let bad = |why: &str| format!("bad ICE server {shown:?}: {why}");
        let (scheme, rest) = url
            .split_once(':')
            .ok_or_else(|| bad("expected stun:, turn: or turns:"))?;
        let (kind, mut transport, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "stun" => (ServerKind::Stun, ServerTransport::Udp, DEFAULT_PORT),
            "turn" => (ServerKind::Turn, ServerTransport::Udp, DEFAULT_PORT),
            "turns" => (ServerKind::Turn, ServerTransport::Tls, DEFAULT_TLS_PORT),
            "stuns" => return Err(bad("stuns: is not supported; use stun:")),
            _ => return Err(bad("expected stun:, turn: or turns:")),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        if let Some(q) = query {
            for pair in q.split('&') {
                match pair.split_once('=') {
                    Some(("transport", "udp")) if transport != ServerTransport::Tls => {
                        transport = ServerTransport::Udp
                    }
                    Some(("transport", "tcp")) if transport == ServerTransport::Tls => {}
                    Some(("transport", "tcp")) => transport = ServerTransport::Tcp,
                    Some(("transport", t)) => {
                        return Err(bad(&format!(
                            "transport={t} is not possible here (udp or tcp; turns: is tcp)"
                        )))
                    }
                    _ => return Err(bad(&format!("unknown parameter {pair:?}"))),
                }
            }
            if kind == ServerKind::Stun && transport != ServerTransport::Udp {
                return Err(bad("STUN is supported over UDP only"));
            }
        }
        let (creds, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        let hostport = hostport.trim_start_matches("//");
        let (host, port) = split_host_port(hostport).map_err(|e| bad(&e))?;
        let port = port.unwrap_or(default_port);
        let (mut user, mut pass) = (
            username.unwrap_or_default().to_owned(),
            credential.unwrap_or_default().to_owned(),
        );
        if let Some(c) = creds {
            let (u, p) = c
                .split_once(':')
                .ok_or_else(|| bad("credentials must be user:password@"))?;
            user = u.to_owned();
            pass = p.to_owned();
        }
        if kind == ServerKind::Turn && (user.is_empty() || pass.is_empty()) {
            return Err(bad(
                "TURN needs a user name and password (turn:user:pass@host)",
            ));
        }
        if kind == ServerKind::Stun && creds.is_some() {
            return Err(bad("STUN servers take no credentials"));
        }
        Ok(Self {
            kind,
            host,
            port,
            transport,
            username: user,
            credential: pass,
        })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad port {p:?}"))
    };
    if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("missing ] after an IPv6 address")?;
        match after.strip_prefix(':') {
            Some(p) => Ok((host.to_owned(), Some(port(p)?))),
            None if after.is_empty() => Ok((host.to_owned(), None)),
            None => Err(format!("unexpected {after:?} after the address")),
        }
    } else {
        let (host, p) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(port(p)?)),
            None => (s, None),
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        if host.contains(':') {
            return Err("IPv6 addresses go in brackets: [2001:db8::1]:3478".into());
        }
        Ok((host.to_owned(), p))
    }
}

/// The URL with any `user:pass@` replaced by `***@`, for messages.
fn redact(url: &str) -> String {
    match (url.split_once(':'), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}:***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

impl fmt::Display for IceServer {
    /// The URL without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.transport) {
            (ServerKind::Stun, _) => write!(f, "stun:{}", self.host_port()),
            (ServerKind::Turn, ServerTransport::Tls) => write!(f, "turns:***@{}", self.host_port()),
            (ServerKind::Turn, t) => write!(f, "turn:***@{}?transport={t}", self.host_port()),
        }
    }
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IceServer({self})")
    }
}

impl std::str::FromStr for IceServer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_defaults_and_ports() {
        let s = IceServer::parse("stun:stun.example.org").unwrap();
        assert_eq!(s.kind, ServerKind::Stun);
        assert_eq!((s.host.as_str(), s.port), ("stun.example.org", 3478));
        let s = IceServer::parse("stun:[2001:db8::1]:19302").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("2001:db8::1", 19302));
        assert_eq!(s.host_port(), "[2001:db8::1]:19302");
        assert_eq!(s.to_string(), "stun:[2001:db8::1]:19302");
    }

    #[test]
    fn turn_forms() {
        let t = IceServer::parse("turn:alice:s3cret@192.0.2.10:3479?transport=tcp").unwrap();
        assert_eq!(t.kind, ServerKind::Turn);
        assert_eq!(t.transport, ServerTransport::Tcp);
        assert_eq!(
            (t.username.as_str(), t.credential.as_str()),
            ("alice", "s3cret")
        );
        assert_eq!((t.host.as_str(), t.port), ("192.0.2.10", 3479));
        let t = IceServer::parse("turns:alice:s3cret@turn.example.org").unwrap();
        assert_eq!((t.transport, t.port), (ServerTransport::Tls, 5349));
        let t = IceServer::parse_with("turn:192.0.2.10", Some("bob"), Some("pw")).unwrap();
        assert_eq!(
            (t.transport, t.username.as_str()),
            (ServerTransport::Udp, "bob")
        );
        // A password may contain ':' and '@' is split at the last one.
        let t = IceServer::parse("turn:u:p:w@x@h:1").unwrap();
        assert_eq!((t.username.as_str(), t.credential.as_str()), ("u", "p:w@x"));
    }

    #[test]
    fn credentials_never_shown() {
        let t = IceServer::parse("turn:alice:s3cret@192.0.2.10?transport=udp").unwrap();
        for shown in [t.to_string(), format!("{t:?}")] {
            assert!(
                !shown.contains("s3cret") && !shown.contains("alice"),
                "{shown}"
            );
        }
        let e = IceServer::parse("turn:alice:s3cret@host:99999").unwrap_err();
        assert!(e.contains("bad port") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn clear_errors() {
        for (url, want) in [
            ("http://x", "expected stun:"),
            ("turn:host", "needs a user name"),
            ("stun:u:p@host", "no credentials"),
            ("stun:host?transport=tcp", "UDP only"),
            ("turn:u:p@host?transport=sctp", "transport=sctp"),
            ("turn:u:p@host?foo=1", "unknown parameter"),
            ("stun:2001:db8::1", "brackets"),
            ("stun:", "missing host"),
            ("stun:[::1", "missing ]"),
        ] {
            let e = IceServer::parse(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
    }
}
