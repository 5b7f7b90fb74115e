//! The WHIP client's HTTP: one request per connection (POST, PATCH, DELETE are rare) with
//! hyper's HTTP/1.1 client over async-io, `https://` through rustls (ring) verifying the
//! endpoint's certificate; and RFC 9725 §4.4's `Link: <turn:..>; rel="ice-server"` headers.

use crate::ice::IceServer;
use bytes::Bytes;
use futures_rustls::{rustls, TlsConnector};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use smol::LocalExecutor;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Longest body read from an endpoint (an SDP answer is a few KiB).
const MAX_BODY: usize = 64 << 10;
/// Longest a request may take, connecting included.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoint's answer to one request.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: String,
}

/// Checks a publish URL: `http://` or `https://` with a host.
pub(super) fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?}: expected http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?}: no host"));
    }
    Ok(uri)
}

/// TLS settings for `https://` endpoints: the system roots (`system`, when readable) and
/// the PEM certificates of `extra` (`--publish-ca`, which must hold at least one).
pub(super) fn tls_config(
    system: &Path,
    extra: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut store = rustls::RootCertStore::empty();
    if let Ok(certs) = CertificateDer::pem_file_iter(system) {
        // A bad certificate among many system roots is skipped, not fatal.
        for cert in certs.flatten() {
            let _ = store.add(cert);
        }
    }
    if let Some(path) = extra {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("--publish-ca {}: {e}", path.display()))?;
        let mut n = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("--publish-ca {}: {e}", path.display()))?;
            store
                .add(cert)
                .map_err(|e| format!("--publish-ca {}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("--publish-ca {}: no certificate", path.display()));
        }
    }
    if store.is_empty() {
        return Err(format!(
            "no certificate authorities for https:// endpoints ({} unreadable; give --publish-ca)",
            system.display()
        ));
    }
    crate::ice::turn_stream::client_config(store)
}

/// The stream a request goes over.
trait Io: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin {}
impl<T: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin> Io for T {}

/// A request's extra header fields (`If-Match: *` of an ICE restart).
pub(super) type Extra<'a> = &'a [(HeaderName, &'static str)];

/// One request to `uri`, within [`REQUEST_TIMEOUT`].
pub(super) async fn request(
    ex: &LocalExecutor<'static>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: Method,
    uri: &Uri,
    token: Option<&str>,
    body: Option<(&'static str, String)>,
    extra: Extra<'_>,
) -> Result<Reply, String> {
    futures_lite::future::or(send(ex, tls, method, uri, token, body, extra), async {
        async_io::Timer::after(REQUEST_TIMEOUT).await;
        Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))
    })
    .await
}

async fn send(
    ex: &LocalExecutor<'static>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: Method,
    uri: &Uri,
    token: Option<&str>,
    body: Option<(&'static str, String)>,
    extra: Extra<'_>,
) -> Result<Reply, String> {
    let io = open(uri, tls).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(smol_hyper::rt::FuturesIo::new(io))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
    // Runs the connection while the request is answered; dropped (cancelled) after.
    let _conn = ex.spawn(async move {
        let _ = conn.await;
    });
    let req = build_request(method, uri, token, body, extra)?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    read_reply(resp).await
}

/// A connection to `uri`'s host: TCP to the first address that takes it, then TLS for
/// `https://` (the name checked against the certificate).
async fn open(uri: &Uri, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Box<dyn Io>, String> {
    let host = uri.host().unwrap_or_default();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // `[::1]` in a URL is `::1` to the resolver and to rustls.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = connect_tcp(host, bare, port).await?;
    let _ = tcp.get_ref().set_nodelay(true);
    if !https {
        return Ok(Box::new(tcp));
    }
    let config = tls.ok_or("https:// without TLS settings")?;
    let name = rustls::pki_types::ServerName::try_from(bare.to_owned())
        .map_err(|e| format!("{host}: {e}"))?;
    let s = TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))?;
    Ok(Box::new(s))
}

/// TCP to the first of `bare`'s addresses that answers; the error names the last failure
/// (`host` as the URL writes it).
async fn connect_tcp(
    host: &str,
    bare: &str,
    port: u16,
) -> Result<async_io::Async<TcpStream>, String> {
    let addrs = smol::net::resolve((bare, port))
        .await
        .map_err(|e| format!("resolve {host}: {e}"))?;
    let mut last = format!("resolve {host}: no address");
    for a in addrs {
        match async_io::Async::<TcpStream>::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    Err(last)
}

/// The request to `uri`'s path: `Host`, `Authorization: Bearer` with a token, the `extra`
/// fields, and the body with its `Content-Type`.
fn build_request(
    method: Method,
    uri: &Uri,
    token: Option<&str>,
    body: Option<(&'static str, String)>,
    extra: Extra<'_>,
) -> Result<Request<Full<Bytes>>, String> {
    let host = uri.host().unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, uri.authority().map_or(host, |a| a.as_str()));
    if let Some(t) = token {
        let v = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| "the publish token is not a valid header value")?;
        req = req.header(AUTHORIZATION, v);
    }
    for (k, v) in extra {
        req = req.header(k, *v);
    }
    let body = match body {
        Some((kind, text)) => {
            req = req.header(CONTENT_TYPE, kind);
            Bytes::from(text)
        }
        None => Bytes::new(),
    };
    req.body(Full::new(body)).map_err(|e| format!("HTTP: {e}"))
}

/// The answer's status, header fields and body (at most [`MAX_BODY`], as text).
async fn read_reply(resp: hyper::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let (parts, body) = resp.into_parts();
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// The longest `Retry-After` honoured: an endpoint asking for more is asked again then.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// A `Retry-After` (RFC 9110 §10.2.3: seconds, or an HTTP date, `now` being the time of
/// the answer), at most [`MAX_RETRY_AFTER`]; `None` when absent or unreadable.
pub(super) fn retry_after(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let v = headers
        .get(hyper::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match v.parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => {
            let at = time::PrimitiveDateTime::parse(v, HTTP_DATE).ok()?;
            let at = std::time::SystemTime::from(at.assume_utc());
            at.duration_since(now).unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// RFC 9110's preferred date form, `Sun, 06 Nov 1994 08:49:37 GMT`.
const HTTP_DATE: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// The resource URL from a `Location` (absolute, or relative to `base`).
pub(super) fn resolve_location(base: &Uri, location: &str) -> Result<Uri, String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return parse_url(location);
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    let path = if location.starts_with('/') {
        location.to_owned()
    } else {
        // Relative to the endpoint's directory.
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| format!("Location {location:?}: {e}"))
}

/// The ICE servers of RFC 9725 §4.4's `Link` headers
/// (`<turn:host?transport=udp>; rel="ice-server"; username="u"; credential="p"`); links
/// of another `rel` or with a URL that is not STUN/TURN are skipped.
pub(super) fn link_ice_servers(headers: &HeaderMap) -> Vec<IceServer> {
    let mut out = Vec::new();
    for value in headers.get_all(hyper::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for link in split_outside_quotes(value, ',') {
            let link = link.trim();
            let Some(rest) = link.strip_prefix('<') else {
                continue;
            };
            let Some((url, params)) = rest.split_once('>') else {
                continue;
            };
            let mut rel = false;
            let (mut user, mut cred) = (None, None);
            for p in split_outside_quotes(params, ';') {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "rel" => rel = v.split_ascii_whitespace().any(|r| r == "ice-server"),
                    "username" => user = Some(v.to_owned()),
                    "credential" => cred = Some(v.to_owned()),
                    _ => {}
                }
            }
            if !rel {
                continue;
            }
            match IceServer::parse_with(url.trim(), user.as_deref(), cred.as_deref()) {
                Ok(s) if !out.contains(&s) => out.push(s),
                Ok(_) => {}
                Err(e) => log::info!("WHIP Link header: {e}"),
            }
        }
    }
    out
}

/// `s` split at `sep` where it is not inside double quotes or `<...>`.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut angle, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            c if c == sep && !quoted && !angle => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ice::ServerKind;

    #[test]
    fn link_headers_give_ice_servers() {
        let mut h = HeaderMap::new();
        h.append(
            hyper::header::LINK,
            HeaderValue::from_static(
                "<stun:stun.example.net>; rel=\"ice-server\", \
                 <turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"user\"; credential=\"a;b,c\"; credential-type=\"password\"",
            ),
        );
        h.append(
            hyper::header::LINK,
            HeaderValue::from_static("</other>; rel=\"alternate\", <turn:x>; rel=ice-server; username=u; credential=p, <turn:nocred>; rel=\"ice-server\""),
        );
        let s = link_ice_servers(&h);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(
            (s[0].kind, s[0].host.as_str()),
            (ServerKind::Stun, "stun.example.net")
        );
        assert_eq!(s[1].kind, ServerKind::Turn);
        assert_eq!(
            (s[1].username.as_str(), s[1].credential.as_str()),
            ("user", "a;b,c")
        );
        assert_eq!(s[2].host, "x");
    }

    #[test]
    fn retry_after_in_seconds_or_a_date() {
        let at = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(hyper::header::RETRY_AFTER, HeaderValue::from_static(v));
            // Sun, 06 Nov 1994 08:49:37 GMT less 20 s.
            let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777 - 20);
            retry_after(&h, now)
        };
        assert_eq!(at("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            at("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::from_secs(20))
        );
        assert_eq!(at("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(at("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), std::time::UNIX_EPOCH), None);
    }

    #[test]
    fn urls_and_locations() {
        assert!(parse_url("ftp://x/whip").is_err());
        assert!(parse_url("http:///whip").is_err());
        assert!(parse_url("not a url").is_err());
        let base = parse_url("https://sfu.example:8443/whip/cam").unwrap();
        let at = |l| resolve_location(&base, l).unwrap().to_string();
        assert_eq!(at("/whip/cam/abc"), "https://sfu.example:8443/whip/cam/abc");
        assert_eq!(at("abc"), "https://sfu.example:8443/whip/abc");
        assert_eq!(at("http://other/r/1"), "http://other/r/1");
    }
}
