//! Who may use the API: the DNS-rebinding check (`Host` must name the device), the
//! cross-site check (`Origin` must be the service's own for WebSockets and state-changing
//! requests) and the bearer token (see the table in [`super::http`]).

use super::error::{Denied, ServiceError};
use super::http::{clip, is_page};
use super::Shared;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HOST, ORIGIN};
use hyper::{Method, Request, Version};
use std::net::{Ipv4Addr, Ipv6Addr};
use subtle::ConstantTimeEq;

/// The DNS-rebinding and cross-site checks (see the module documentation): `Host` must
/// name the device (but for the page), and a WebSocket upgrade or a state-changing
/// request must come from no page or from the service's own origin (or an allowed one).
pub(super) fn check_host_and_origin(
    shared: &Shared,
    req: &Request<Incoming>,
) -> Result<(), ServiceError> {
    let host = host(req)?;
    if !is_page(req.method(), req.uri().path()) {
        check_names_device(shared, req, host.as_ref())?;
    }
    let checked = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req.uri().path() == "/ws";
    if checked {
        check_origin(shared, req, host)?;
    }
    Ok(())
}

/// The request's one `Host` (none only in HTTP/1.0).
fn host(req: &Request<Incoming>) -> Result<Option<Authority>, ServiceError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ServiceError::BadHost("more than one Host header"));
    }
    match host {
        None if req.version() == Version::HTTP_11 => Err(ServiceError::BadHost(
            "an HTTP/1.1 request needs a Host header",
        )),
        None => Ok(None),
        Some(h) => h
            .to_str()
            .ok()
            .and_then(Authority::parse)
            .map(Some)
            .ok_or(ServiceError::BadHost("malformed Host header")),
    }
}

/// `Host`, and in absolute form (`GET http://name/ HTTP/1.1`) the target's authority too,
/// must name this device.
fn check_names_device(
    shared: &Shared,
    req: &Request<Incoming>,
    host: Option<&Authority>,
) -> Result<(), ServiceError> {
    let target = match req.uri().authority() {
        Some(a) => Some(
            Authority::parse(a.as_str())
                .ok_or(ServiceError::BadHost("malformed request target"))?,
        ),
        None => None,
    };
    for a in host.into_iter().chain(target.as_ref()) {
        if !a.names_device(&shared.host_names) {
            return Err(ServiceError::UnknownHost(clip(&a.host).to_owned()));
        }
    }
    Ok(())
}

/// For a plain-HTTP request to the TLS port: the same URL over `https://`, when its one
/// `Host` names the device (never a redirect to a name a page chose).
pub(super) fn https_url(shared: &Shared, req: &Request<Incoming>) -> Option<String> {
    let host = host(req).ok()??;
    if !host.names_device(&shared.host_names) {
        return None;
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let port = host.port.map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!("https://{}{port}{}", host.host, clip(path)))
}

/// One `Origin`, if any, and it must be `http://<Host>` (`https://` behind TLS) or an
/// allowed one.
fn check_origin(
    shared: &Shared,
    req: &Request<Incoming>,
    host: Option<Authority>,
) -> Result<(), ServiceError> {
    let mut origins = req.headers().get_all(ORIGIN).iter();
    let Some(origin) = origins.next() else {
        return Ok(()); // not sent by a page: curl, native clients
    };
    let origin = origin.to_str().unwrap_or("");
    // Behind TLS the page's own origin is https://.
    let (scheme, default_port) = match shared.config.tls {
        Some(_) => ("https", 443),
        None => ("http", 80),
    };
    let own = host.map(|h| Origin {
        scheme,
        port: h.port.unwrap_or(default_port),
        host: h.host,
    });
    let parsed = Origin::parse(origin);
    let allowed = origins.next().is_none()
        && parsed.as_ref().is_some_and(|o| {
            own.as_ref() == Some(o)
                || shared
                    .config
                    .allow_origins
                    .iter()
                    .any(|a| Origin::parse(a).as_ref() == Some(o))
        });
    if !allowed {
        let shown: String = origin.chars().take(100).collect();
        return Err(ServiceError::BadOrigin(shown));
    }
    Ok(())
}

/// A `Host` (or a URL's authority): a lowercase host name or IP literal (IPv6 in
/// brackets, written canonically), and a port.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest.split_once(']')?;
            let v6: Ipv6Addr = v6.parse().ok()?;
            (format!("[{v6}]"), after)
        } else {
            let (host, port) = match s.rsplit_once(':') {
                Some((h, _)) => (h, &s[h.len()..]),
                None => (s, ""),
            };
            let name = host.strip_suffix('.').unwrap_or(host);
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            if !ok {
                return None;
            }
            (name.to_ascii_lowercase(), port)
        };
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => None,
            None => return None,
            Some("") => None,
            Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse().ok()?)
            }
            Some(_) => return None,
        };
        Some(Self { host, port })
    }

    /// An IP literal, or one of `names` (see `Shared::host_names`).
    fn names_device(&self, names: &[String]) -> bool {
        self.host.starts_with('[')
            || self.host.parse::<Ipv4Addr>().is_ok()
            || names.contains(&self.host)
    }
}

/// A web origin (`scheme://host[:port]`), the port filled in from the scheme.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: &'static str,
    host: String,
    port: u16,
}

impl Origin {
    /// `http://` or `https://` and an authority, nothing after it (one trailing `/`
    /// allowed, for an origin written by hand). `null` and the rest: `None`.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (scheme, rest) = s.split_once("://")?;
        let (scheme, default) = if scheme.eq_ignore_ascii_case("http") {
            ("http", 80)
        } else if scheme.eq_ignore_ascii_case("https") {
            ("https", 443)
        } else {
            return None;
        };
        let a = Authority::parse(rest.strip_suffix('/').unwrap_or(rest))?;
        Some(Self {
            scheme,
            host: a.host,
            port: a.port.unwrap_or(default),
        })
    }
}

/// With a token configured: the request's `Authorization: Bearer` (or, for `/ws`, whose
/// browser API cannot set headers, its `?token=`) must be that token, compared in constant
/// time.
pub(super) fn authorize(shared: &Shared, req: &Request<Incoming>) -> Result<(), ServiceError> {
    let Some(expected) = shared.config.token.as_deref() else {
        return Ok(());
    };
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    let given = header.or_else(|| {
        (req.uri().path() == "/ws")
            .then(|| query_value(req.uri().query(), "token"))
            .flatten()
    });
    match given {
        None => Err(ServiceError::Unauthorized(Denied::Missing)),
        Some(t) if bool::from(t.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        Some(_) => Err(ServiceError::Unauthorized(Denied::Wrong)),
    }
}

/// The value of `name` in a URL query (percent-decoded).
pub(crate) fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::{Authority, Origin};

    fn names() -> Vec<String> {
        ["localhost", "vm", "vm.local", "device.example"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn hosts_that_name_the_device() {
        for h in [
            "127.0.0.1",
            "127.0.0.1:8888",
            "192.168.1.20:80",
            "[::1]",
            "[::1]:8888",
            "[FE80::1]:1",
            "localhost",
            "LocalHost:8888",
            "localhost.:8888",
            "vm",
            "VM.local:8888",
            "device.example:443",
            "localhost:",
        ] {
            let a = Authority::parse(h).unwrap_or_else(|| panic!("{h} did not parse"));
            assert!(a.names_device(&names()), "{h}");
        }
    }

    #[test]
    fn hosts_that_do_not() {
        for h in [
            "evil.example",
            "evil.example:8888",
            "localhost.evil.example",
            "vm.evil.example",
            "127.0.0.1.evil.example",
            "127.1",
            "0x7f000001",
        ] {
            let a = Authority::parse(h).unwrap_or_else(|| panic!("{h} did not parse"));
            assert!(!a.names_device(&names()), "{h}");
        }
        for h in [
            "",
            "::1",
            "[::1",
            "[nope]:80",
            "a b",
            "localhost:99999",
            "localhost:8a",
            "user@localhost",
            "localhost/x",
            ":80",
        ] {
            assert!(Authority::parse(h).is_none(), "{h:?} parsed");
        }
    }

    #[test]
    fn origins() {
        let o = |s: &str| Origin::parse(s);
        assert_eq!(o("http://localhost"), o("HTTP://LOCALHOST:80"));
        assert_eq!(o("https://a.example"), o("https://a.example:443/"));
        assert_ne!(o("http://a.example"), o("https://a.example"));
        assert_ne!(o("http://a.example:8888"), o("http://a.example"));
        assert_eq!(o("http://[::1]:8888"), o("http://[0:0::1]:8888"));
        for bad in [
            "null",
            "",
            "file://",
            "http://",
            "http://a/b",
            "ws://a",
            "http://a?x",
        ] {
            assert!(o(bad).is_none(), "{bad}");
        }
    }
}
