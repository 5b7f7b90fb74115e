//! Broker addresses: `mqtt://`, `mqtts://`, `ws://`, `wss://`
//! `[USER[:PASS]@]HOST[:PORT][/PATH]`.

use std::fmt;

/// How the client reaches the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// MQTT over TCP (default port 1883).
    Mqtt,
    /// MQTT over TLS (default port 8883).
    Mqtts,
    /// MQTT over WebSocket (default port 80, path `/mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS (default port 443, path `/mqtt`).
    Wss,
}

impl Scheme {
    /// True for the schemes that run over TLS.
    pub fn tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }
    /// True for the WebSocket schemes.
    pub fn websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
}

/// A broker address. The password, when given in it, is never shown by `Display`/`Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub scheme: Scheme,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    /// The WebSocket path (`/mqtt` unless given); empty for TCP and TLS.
    pub path: String,
}

impl MqttUrl {
    /// Parses `SCHEME://[USER[:PASS]@]HOST[:PORT][/PATH]`; the error never quotes the
    /// password.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("MQTT URL: expected mqtt://, mqtts://, ws:// or wss://HOST[:PORT]")?;
        let scheme = parse_scheme(scheme)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = parse_userinfo(userinfo)?;
        let (host, port) = parse_host_port(hostport)?;
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("MQTT URL: bad port {p:?}"))?,
            None => match scheme {
                Scheme::Mqtt => 1883,
                Scheme::Mqtts => 8883,
                Scheme::Ws => 80,
                Scheme::Wss => 443,
            },
        };
        Ok(Self {
            scheme,
            user,
            password,
            host: host.to_owned(),
            port,
            path: parse_path(scheme, path)?,
        })
    }
}

fn parse_scheme(scheme: &str) -> Result<Scheme, String> {
    Ok(match scheme.to_ascii_lowercase().as_str() {
        "mqtt" | "tcp" => Scheme::Mqtt,
        "mqtts" | "ssl" => Scheme::Mqtts,
        "ws" => Scheme::Ws,
        "wss" => Scheme::Wss,
        other => {
            return Err(format!(
                "MQTT URL: unknown scheme {other:?} (mqtt, mqtts, ws or wss)"
            ))
        }
    })
}

/// `USER[:PASS]` before the '@': the user and password, if any.
type UserInfo = (Option<String>, Option<String>);

fn parse_userinfo(userinfo: Option<&str>) -> Result<UserInfo, String> {
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
            None => (Some(u.to_owned()), None),
        },
        None => (None, None),
    };
    if user.as_deref() == Some("") {
        return Err("MQTT URL: empty user name before '@'".into());
    }
    Ok((user, password))
}

/// `HOST[:PORT]` or `[V6][:PORT]`: the host (checked) and the port as written.
fn parse_host_port(hostport: &str) -> Result<(&str, Option<&str>), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("MQTT URL: unclosed '[' in the host")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(format!("MQTT URL: bad host {host:?}"));
    }
    Ok((host, port))
}

/// The WebSocket path (`/mqtt` unless given); TCP and TLS take none.
fn parse_path(scheme: Scheme, path: &str) -> Result<String, String> {
    if scheme.websocket() {
        Ok(if path.is_empty() {
            "/mqtt".to_owned()
        } else {
            path.to_owned()
        })
    } else if path.is_empty() || path == "/" {
        Ok(String::new())
    } else {
        Err(format!(
            "MQTT URL: a path ({path:?}) only goes with ws:// or wss://"
        ))
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "{}:{}{}", self.host, self.port, self.path)
        }
    }
}

impl fmt::Debug for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_with_defaults() {
        let u = MqttUrl::parse("mqtt://broker.example").unwrap();
        assert_eq!(
            (u.scheme, u.port, u.path.as_str()),
            (Scheme::Mqtt, 1883, "")
        );
        let u = MqttUrl::parse("mqtts://b").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Mqtts, 8883));
        let u = MqttUrl::parse("ws://b:9001").unwrap();
        assert_eq!(
            (u.scheme, u.port, u.path.as_str()),
            (Scheme::Ws, 9001, "/mqtt")
        );
        let u = MqttUrl::parse("wss://b/x/y").unwrap();
        assert_eq!(
            (u.scheme, u.port, u.path.as_str()),
            (Scheme::Wss, 443, "/x/y")
        );
    }

    #[test]
    fn user_and_password_are_parsed_and_never_shown() {
        let u = MqttUrl::parse("mqtt://dev1:s3cr:et@[::1]:1884").unwrap();
        assert_eq!(u.user.as_deref(), Some("dev1"));
        assert_eq!(u.password.as_deref(), Some("s3cr:et"));
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 1884);
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
        assert_eq!(u.to_string(), "mqtt://dev1@[::1]:1884");
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for (s, why) in [
            ("broker:1883", "expected mqtt://"),
            ("http://b", "unknown scheme"),
            ("mqtt://b:0", "bad port"),
            ("mqtt://b:99999", "bad port"),
            ("mqtt://", "bad host"),
            ("mqtt://b/path", "only goes with ws"),
            ("mqtt://:pw@b", "empty user"),
            ("mqtt://a b", "bad host"),
        ] {
            let e = MqttUrl::parse(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
            assert!(!e.contains("pw"), "{e}");
        }
    }
}
