//! The embedded HTTP/1.1 server (hyper 1 on smol): the page, and signaling three ways.
//!
//! | request | what |
//! | --- | --- |
//! | `GET /` (`/app.js`, `/style.css`, `/mqtt.js`, `/broker.js`, `/sinks.js`) | the page from `web/`, compiled in gzipped, sent `Content-Encoding: gzip` (`406` if `Accept-Encoding` refuses gzip) |
//! | `POST /api/offer` `application/json` `{"type":"offer","sdp":..}` | `200` `{"type":"answer","sdp":..}`, every candidate in it |
//! | `POST /whip` `application/sdp` | `201`, the answer, `Location: /whip/<id>` (RFC 9725) |
//! | `PATCH /whip/<id>` `application/trickle-ice-sdpfrag` | `204`, candidates added |
//! | `DELETE /whip/<id>` | `200`, session closed |
//! | `GET /ws` (`?role=offer`: the service offers) | WebSocket, rawrtc's `{"type","value"}` messages, trickle both ways (see [`ws`]) |
//! | `GET /api/sessions` | the live sessions, JSON |
//! | `GET /api/ice-servers` | the W3C `iceServers` for the page: STUN servers, TURN servers with fresh TURN REST credentials |
//! | `POST /api/report` `application/json` | a page's self-test results (JSON), logged and kept for the host program |
//! | `GET /api/streams`, `POST /whep/NAME`, `PATCH`/`DELETE /whep/NAME/<id>` | media streams and WHEP (feature `media`, see `streams`) |
//! | `GET /api/sinks`, `POST /whip/NAME`, `PATCH`/`DELETE /whip/NAME/<id>` | media sinks and WHIP ingest (feature `media`, see `sinks`) |
//! | `GET /metrics` | Prometheus text (see [`super::metrics`]), behind the token like the API |
//!
//! With [`tls`](super::ServiceConfig::tls) every connection is HTTPS ([`super::tls`]): the
//! handshake is bounded like the first request's headers, plain HTTP gets a redirect.
//!
//! Every refusal is a 4xx/5xx with `{"error": "..."}` naming the problem, and a log line,
//! at most one a second per kind of refusal (route and status).
//!
//! Before anything else, every request but the page's own (GET of `/`, `/index.html`,
//! `/app.js`, `/style.css`) must name the device in `Host`: an IP literal, `localhost`,
//! the machine's host name or `<hostname>.local`, or an
//! [`allow_hosts`](super::ServiceConfig::allow_hosts) name; else `421` (a DNS-rebinding page
//! names its own domain). HTTP/1.1 without `Host` gets `400`. A WebSocket upgrade or a
//! state-changing request (any method but GET, HEAD, OPTIONS) whose `Origin` is not
//! `http://<Host>` nor an [`allow_origins`](super::ServiceConfig::allow_origins) entry
//! gets `403` (a cross-site page); one without `Origin` (curl, native clients) is let
//! through. `POST /api/offer` and `/api/report` take `application/json` only, so a
//! cross-site form (no CORS preflight) cannot post them (`415`).
//!
//! With a token ([`ServiceConfig::token`](super::ServiceConfig::token)), `/api/*`, `/whip*`
//! and `/ws` need `Authorization: Bearer <token>` (`/ws` also takes `?token=`), else `401`.
//! Slow clients meet `header_timeout`, `body_timeout` (`408`) and `write_timeout`; the
//! connections themselves are capped by `max_connections` and `max_websockets` (`503`).
//!
//! One client address gets at most `max_connections_per_address` of the connections, of
//! which at most `max_slow_connections_per_address` still sending their first request's
//! headers, and at most `max_websockets_per_address` WebSockets and
//! `max_sessions_per_address` sessions (`429` past each). The defaults (32 of 128
//! connections, 16 slow, 16 of 64 WebSockets, a quarter of the sessions) leave at least
//! three quarters of each global pool to other addresses, so slowloris or dead offers from
//! one address cannot lock the others out; refused connections are answered at most 4 per
//! address (16 in all) at a time, the rest closed unanswered. (Several addresses can still
//! share out the global pools between them.)

use super::error::{Held, ServiceError};
use super::ws;
use super::{client_address, Counter, Shared};
use async_io::Async;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, VARY,
    WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::api::{api_offer, report, sessions, whip_delete, whip_patch, whip_post};
use super::guard::{authorize, check_host_and_origin};

// The page, gzipped at build time (build.rs): embedded and served compressed, about a
// quarter of the text's size in the binary. Only clients refusing gzip miss out (see
// `page_response`).
macro_rules! page_file {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/web/", $name, ".gz"))
    };
}
const INDEX_HTML: &[u8] = page_file!("index.html");
const APP_JS: &[u8] = page_file!("app.js");
const STYLE_CSS: &[u8] = page_file!("style.css");
// The page's "via broker" mode: its MQTT-over-WebSocket client and the mode itself.
const MQTT_JS: &[u8] = page_file!("mqtt.js");
const BROKER_JS: &[u8] = page_file!("broker.js");
// The page's sinks part: publish the camera (WHIP), talk-back.
const SINKS_JS: &[u8] = page_file!("sinks.js");

pub(super) type Body = Full<Bytes>;

/// Connections answered `503`/`429` (with a short header timeout) while a connection limit
/// is reached; past this many, further ones are closed unanswered.
const REFUSING_CONNECTIONS: usize = 16;
/// Of [`REFUSING_CONNECTIONS`], how many one client address may hold, so that one flooding
/// address leaves answers for the others.
const REFUSING_PER_ADDRESS: usize = 4;
/// How long a refused connection may take to send its request and read the `503`.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts connections forever; each is served in its own task, at most `max_connections`
/// at once, and from one client address at most `max_connections_per_address`, of which
/// at most `max_slow_connections_per_address` before their first request's headers are in.
pub(crate) async fn serve(shared: Rc<Shared>, listener: Async<TcpListener>) {
    let refusing = Counter::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                shared.quiet.warn("accept", 0, || format!("accept: {e}"));
                async_io::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        match admit(&shared, peer) {
            Ok(slots) => serve_connection(&shared, stream, peer, slots),
            Err(why) => refuse(&shared, &refusing, stream, peer, why),
        }
    }
}

/// Serves one admitted connection in its own task, holding its places until it ends.
/// With TLS the handshake comes first, within `header_timeout` (it counts as the slow
/// part of the first request); plain HTTP to the TLS port is redirected to `https://`.
fn serve_connection(
    shared: &Rc<Shared>,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    (slow, per_address, slot): Admitted,
) {
    let shared2 = shared.clone();
    shared
        .ex
        .spawn(async move {
            let shared = shared2;
            let _slots = (slot, per_address);
            let activity = Arc::new(Activity::default());
            // Given back once the first request's headers are in (or with the connection).
            let slow = Rc::new(RefCell::new(Some(slow)));
            let Some(tls) = shared.config.tls.clone() else {
                let io = Timed::new(stream, shared.config.write_timeout, activity.clone());
                return serve_http(&shared, io, peer, slow, activity).await;
            };
            // The first byte and the whole handshake within one header_timeout.
            let limit = shared.config.header_timeout;
            let started = std::time::Instant::now();
            let first = match first_byte(&stream, limit).await {
                Ok(b) => b,
                Err(e) => return log_tls_end(&shared, peer, &e),
            };
            let io = Timed::new(stream, shared.config.write_timeout, activity.clone());
            let left = limit.saturating_sub(started.elapsed());
            match super::tls::accept(&tls.config, io, first, left).await {
                Ok(super::tls::Accepted::Tls(io)) => {
                    serve_http(&shared, *io, peer, slow, activity).await
                }
                Ok(super::tls::Accepted::PlainHttp(io)) => redirect_to_https(&shared, io).await,
                Err(e) => log_tls_end(&shared, peer, &e),
            }
        })
        .detach();
}

/// The connection's first byte, waited for at most `limit`.
async fn first_byte(stream: &Async<TcpStream>, limit: Duration) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    let n = futures_lite::future::or(stream.peek(&mut b), async {
        async_io::Timer::after(limit).await;
        Err(std::io::Error::new(
            ErrorKind::TimedOut,
            format!(
                "sent nothing for {:.1} s (header_timeout)",
                limit.as_secs_f64()
            ),
        ))
    })
    .await?;
    if n == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    Ok(b[0])
}

/// Why a TLS connection ended before HTTP: slow ones warned (rate-limited), like slow
/// headers; failed handshakes warned (rate-limited): the service goes on.
fn log_tls_end(shared: &Shared, peer: SocketAddr, e: &std::io::Error) {
    if e.kind() != ErrorKind::UnexpectedEof {
        crate::stats::add(&crate::stats::TLS_HANDSHAKE_FAILURES, 1);
    }
    match e.kind() {
        ErrorKind::TimedOut => shared.quiet.warn("slow tls", 0, || {
            format!("https {peer}: slow client dropped: {e}")
        }),
        ErrorKind::UnexpectedEof => log::debug!("https {peer}: closed before TLS"),
        _ => shared.quiet.warn("bad tls", 0, || {
            format!("https {peer}: TLS handshake failed: {e}")
        }),
    }
}

/// HTTP/1.1 on `io` (plain or TLS) until the client or a timeout ends it.
async fn serve_http<I>(
    shared: &Rc<Shared>,
    io: I,
    peer: SocketAddr,
    slow: Rc<RefCell<Option<super::AddressSlot>>>,
    activity: Arc<Activity>,
) where
    I: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin + Send + 'static,
{
    let shared2 = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        slow.borrow_mut().take();
        let shared = shared2.clone();
        async move { Ok::<_, Infallible>(route(shared, peer, req).await) }
    });
    let header_timeout = shared.config.header_timeout;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(smol_hyper::rt::SmolTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(smol_hyper::rt::FuturesIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        log_connection_end(shared, peer, &e, &activity, header_timeout);
    }
}

/// Plain HTTP to the TLS port: one answer, `308` to the same URL over `https://` when the
/// `Host` names the device, else `400` saying the port speaks HTTPS; then closed.
async fn redirect_to_https<I>(shared: &Rc<Shared>, io: I)
where
    I: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin + Send + 'static,
{
    let shared2 = shared.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let r = match super::guard::https_url(&shared2, &req) {
            Some(url) => {
                let mut r = Response::new(Full::new(Bytes::from(format!(
                    "this port speaks HTTPS: {url}\n"
                ))));
                *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
                if let Ok(v) = HeaderValue::from_str(&url) {
                    r.headers_mut().insert(hyper::header::LOCATION, v);
                }
                r
            }
            None => {
                let mut r = Response::new(Full::new(Bytes::from_static(
                    b"this port speaks HTTPS: use https://\n",
                )));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                r
            }
        };
        async move { Ok::<_, Infallible>(r) }
    });
    let limit = shared.config.header_timeout;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(smol_hyper::rt::SmolTimer::new())
        .header_read_timeout(limit)
        .keep_alive(false)
        .serve_connection(smol_hyper::rt::FuturesIo::new(io), service);
    let _ = conn.await;
}

type Admitted = (super::AddressSlot, super::AddressSlot, super::Slot);

/// The places a new connection from `peer` takes (slow, per address, global), or the
/// limit that is reached ([`ServiceError::TooMany`]).
fn admit(shared: &Shared, peer: SocketAddr) -> Result<Admitted, ServiceError> {
    let c = &shared.config;
    let ip = client_address(peer);
    let too_many = |held, limit, max| ServiceError::TooMany { held, limit, max };
    let slow = shared
        .slow_per_address
        .take(ip, c.max_slow_connections_per_address)
        .ok_or_else(|| {
            too_many(
                Held::SlowConnectionsFromAddress,
                "max_slow_connections_per_address",
                c.max_slow_connections_per_address,
            )
        })?;
    let per_address = shared
        .connections_per_address
        .take(ip, c.max_connections_per_address)
        .ok_or_else(|| {
            too_many(
                Held::ConnectionsFromAddress,
                "max_connections_per_address",
                c.max_connections_per_address,
            )
        })?;
    let slot = shared
        .connections
        .take(c.max_connections)
        .ok_or_else(|| too_many(Held::Connections, "max_connections", c.max_connections))?;
    Ok((slow, per_address, slot))
}

/// Says why a connection ended early: a slow client (warn, rate-limited), an idle one
/// (info), the rest (debug: resets and the like are a client's business).
fn log_connection_end(
    shared: &Shared,
    peer: SocketAddr,
    e: &hyper::Error,
    activity: &Activity,
    header: Duration,
) {
    if e.is_timeout() {
        if activity.mid_request() {
            shared.quiet.warn("slow client", 0, || {
                format!(
                    "http {peer}: slow client dropped: request headers not complete after \
                     {:.1} s (header_timeout)",
                    header.as_secs_f64()
                )
            });
        } else {
            log::info!(
                "http {peer}: idle connection closed after {:.1} s (header_timeout)",
                header.as_secs_f64()
            );
        }
    } else if let Some(io) = source_io_error(e).filter(|io| io.kind() == ErrorKind::TimedOut) {
        shared.quiet.warn("slow reader", 0, || {
            format!("http {peer}: slow client dropped: {io}")
        });
    } else {
        log::debug!("http {peer}: {e}");
    }
}

fn source_io_error(e: &hyper::Error) -> Option<&std::io::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

/// A connection over a connection limit: answered `503` (global) or `429` (per address)
/// with a log line while few are being refused (overall, and from its address), else
/// closed at once.
fn refuse(
    shared: &Rc<Shared>,
    refusing: &Counter,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    why: ServiceError,
) {
    let ServiceError::TooMany {
        limit: name, max, ..
    } = why
    else {
        return;
    };
    let status = why.status().as_u16();
    let slots = refusing.take(REFUSING_CONNECTIONS).and_then(|global| {
        shared
            .refusing_per_address
            .take(client_address(peer), REFUSING_PER_ADDRESS)
            .map(|mine| (global, mine))
    });
    let Some(slots) = slots else {
        shared.quiet.warn(name, 0, || {
            format!("http {peer}: connection closed unanswered: {name} ({max}) reached")
        });
        return;
    };
    shared.quiet.warn(name, status, || {
        format!("http {peer}: {status}: {name} ({max}) reached")
    });
    let why = Rc::new(why);
    let service = hyper::service::service_fn(move |_req| {
        let why = why.clone();
        async move { Ok::<_, Infallible>(refusal(&why)) }
    });
    let io = Timed::new(stream, REFUSAL_TIMEOUT, Arc::default());
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(smol_hyper::rt::SmolTimer::new())
        .header_read_timeout(REFUSAL_TIMEOUT)
        .keep_alive(false)
        .serve_connection(smol_hyper::rt::FuturesIo::new(io), service);
    shared
        .ex
        .spawn(async move {
            let _slots = slots;
            let _ = conn.await;
        })
        .detach();
}

/// What a connection's bytes have done lately, for its closing log line.
#[derive(Default)]
pub(crate) struct Activity {
    /// Bytes came in since the last bytes went out: a request is under way.
    read_since_write: AtomicBool,
}

impl Activity {
    fn mid_request(&self) -> bool {
        self.read_since_write.load(Ordering::Relaxed)
    }
}

/// A TCP stream whose writes may stall at most `limit`: a client that reads nothing (so
/// its receive window stays shut) gets a `TimedOut` error instead of holding its task and
/// buffers forever.
pub(crate) struct Timed<T> {
    io: T,
    limit: Duration,
    stalled: Option<async_io::Timer>,
    activity: Arc<Activity>,
}

impl<T> Timed<T> {
    fn new(io: T, limit: Duration, activity: Arc<Activity>) -> Self {
        Self {
            io,
            limit,
            stalled: None,
            activity,
        }
    }

    /// After the stream said Pending to a write: Pending until `limit` has passed since the
    /// first such answer, then the error.
    fn stall<R>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| async_io::Timer::after(limit));
        match Pin::new(timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!(
                    "it read nothing of our answer for {:.1} s (write_timeout)",
                    limit.as_secs_f64()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn done<R>(
        &mut self,
        r: Poll<std::io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<R>> {
        match r {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: futures_io::AsyncRead + Unpin> futures_io::AsyncRead for Timed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.activity
                    .read_since_write
                    .store(true, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<T: futures_io::AsyncWrite + Unpin> futures_io::AsyncWrite for Timed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.activity
                    .read_since_write
                    .store(false, Ordering::Relaxed);
            }
        }
        self.done(r, cx)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.done(r, cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_close(cx);
        self.done(r, cx)
    }
}

pub(super) fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The answer to a refused request: [`ServiceError::status`], the error as JSON, and the
/// headers its kind asks for (a token challenge, when to retry).
pub(super) fn refusal(e: &ServiceError) -> Response<Body> {
    let mut r = json_response(e.status(), e.body());
    let h = r.headers_mut();
    match e {
        ServiceError::Unauthorized(why) => {
            h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(why.challenge()));
        }
        ServiceError::TooMany { held, .. } if held.is_connection() => {
            h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    r
}

/// The refusal, and a warning (at most one a second per kind of refusal: route or token,
/// and status).
pub(super) fn error_response(
    shared: &Shared,
    method: &Method,
    path: &str,
    peer: SocketAddr,
    e: ServiceError,
) -> Response<Body> {
    let status = e.status().as_u16();
    let kind = match e {
        ServiceError::Unauthorized(_) => "token",
        _ => route_kind(path),
    };
    shared.quiet.warn(kind, status, || {
        format!(
            "{method} {}: {status} {} (from {peer})",
            clip(path),
            e.log_text()
        )
    });
    refusal(&e)
}

/// The route a path falls under, naming a kind of refusal for the log (never client text).
fn route_kind(path: &str) -> &'static str {
    match path {
        "/" | "/index.html" | "/app.js" | "/style.css" | "/mqtt.js" | "/broker.js"
        | "/sinks.js" => "page",
        "/api/offer" => "/api/offer",
        "/api/report" => "/api/report",
        "/api/sessions" => "/api/sessions",
        "/api/ice-servers" => "/api/ice-servers",
        "/metrics" => "/metrics",
        "/whip" => "/whip",
        "/ws" => "/ws",
        p if p.starts_with("/whip/") => "/whip/<id>",
        "/api/streams" => "/api/streams",
        "/api/sinks" => "/api/sinks",
        p if p.starts_with("/whep/") => "/whep",
        _ => "other",
    }
}

/// At most 100 bytes of a client's path or host name (both ASCII once parsed), for a log
/// line or an error message.
pub(super) fn clip(path: &str) -> &str {
    path.get(..100).unwrap_or(path)
}

/// A page file, as the gzip bytes it is stored as. No inflater is in the binary, so the
/// page goes out compressed: to a request that accepts gzip, and to one without
/// `Accept-Encoding` (which, RFC 9110 12.5.3, accepts any coding; every browser sends the
/// header). A request whose `Accept-Encoding` leaves gzip out gets `406`.
fn page_response(
    req: &Request<Incoming>,
    content_type: &'static str,
    gzip: &'static [u8],
) -> Result<Response<Body>, ServiceError> {
    if !accepts_gzip(req.headers()) {
        return Err(ServiceError::NotAcceptable);
    }
    let mut r = Response::new(Full::new(Bytes::from_static(gzip)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    h.insert(VARY, HeaderValue::from_static("accept-encoding"));
    Ok(r)
}

/// Whether `Accept-Encoding` lets gzip through: no header at all, or `gzip`/`x-gzip` (else
/// `*`) with a q-value above 0.
fn accepts_gzip(headers: &hyper::HeaderMap) -> bool {
    let mut fields = headers.get_all(ACCEPT_ENCODING).iter().peekable();
    if fields.peek().is_none() {
        return true;
    }
    let (mut gzip, mut any) = (None, None);
    for field in fields {
        let Ok(field) = field.to_str() else { continue };
        for item in field.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            // q=0 (0.0, 0.000) refuses; a q-value that does not parse counts as 1.
            let allowed = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .all(|q| q.trim().parse::<f32>().map_or(true, |q| q > 0.0));
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(gzip.unwrap_or(false) || allowed),
                "*" => any = Some(any.unwrap_or(false) || allowed),
                _ => {}
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// The whole body, at most `max_body` bytes, within `body_timeout`.
pub(super) async fn read_body(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Bytes, ServiceError> {
    let max = shared.config.max_body;
    if let Some(len) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > max {
            return Err(ServiceError::BodyTooLarge {
                len: Some(len),
                max,
            });
        }
    }
    let limit = shared.config.body_timeout;
    let body = futures_lite::future::or(
        async { Some(Limited::new(req.into_body(), max).collect().await) },
        async {
            async_io::Timer::after(limit).await;
            None
        },
    )
    .await;
    match body {
        None => Err(ServiceError::BodyTimeout(limit)),
        Some(Ok(b)) => Ok(b.to_bytes()),
        Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ServiceError::BodyTooLarge { len: None, max })
        }
        Some(Err(e)) => Err(ServiceError::BadBody(format!("cannot read body: {e}"))),
    }
}

/// `415` unless the request's media type (parameters aside) is `expected`.
pub(super) fn require_content_type(
    req: &Request<Incoming>,
    expected: &'static str,
) -> Result<(), ServiceError> {
    let got = content_type(req);
    if got != expected {
        return Err(ServiceError::UnsupportedMediaType { expected, got });
    }
    Ok(())
}

fn content_type(req: &Request<Incoming>) -> String {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// The signaling API: what a token guards. The page's files (and 404s, such as a browser's
/// `/favicon.ico`) are served to anyone; the page asks for the token.
fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
        || path == "/whip"
        || path.starts_with("/whip/")
        || path.starts_with("/whep/")
        || path == "/ws"
        || path == "/metrics"
}

/// The page itself: served whatever the `Host`, so that a device reached by a name it does
/// not know still shows its page (and the page shows the API's `421`).
pub(super) fn is_page(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && matches!(
            path,
            "/" | "/index.html"
                | "/app.js"
                | "/style.css"
                | "/mqtt.js"
                | "/broker.js"
                | "/sinks.js"
        )
}

/// One request through the guard (Host, Origin, token) to its handler; any refusal
/// becomes its status and JSON body in [`error_response`].
async fn route(shared: Rc<Shared>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    log::debug!("{method} {path}");
    let result = match guard(&shared, &path, &req) {
        Ok(()) => handle(&shared, peer, &method, &path, req).await,
        Err(e) => Err(e),
    };
    let response = result.unwrap_or_else(|e| error_response(&shared, &method, &path, peer, e));
    super::metrics::count_response(response.status().as_u16());
    response
}

/// Who may ask: the DNS-rebinding and cross-site checks, then the token for the API.
fn guard(shared: &Shared, path: &str, req: &Request<Incoming>) -> Result<(), ServiceError> {
    check_host_and_origin(shared, req)?;
    if is_api(path) {
        authorize(shared, req)?;
    }
    Ok(())
}

/// The handler for a method and path.
async fn handle(
    shared: &Rc<Shared>,
    peer: SocketAddr,
    method: &Method,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ServiceError> {
    match (method, path) {
        (&Method::GET, "/" | "/index.html") => {
            page_response(&req, "text/html; charset=utf-8", INDEX_HTML)
        }
        (&Method::GET, "/app.js") => page_response(&req, "text/javascript; charset=utf-8", APP_JS),
        (&Method::GET, "/style.css") => page_response(&req, "text/css; charset=utf-8", STYLE_CSS),
        (&Method::GET, "/mqtt.js") => {
            page_response(&req, "text/javascript; charset=utf-8", MQTT_JS)
        }
        (&Method::GET, "/broker.js") => {
            page_response(&req, "text/javascript; charset=utf-8", BROKER_JS)
        }
        (&Method::GET, "/sinks.js") => {
            page_response(&req, "text/javascript; charset=utf-8", SINKS_JS)
        }
        (&Method::GET, "/api/sessions") => Ok(sessions(shared)),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(super::metrics::render(shared))));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(r)
        }
        (&Method::GET, "/api/ice-servers") => Ok(json_response(
            StatusCode::OK,
            crate::turn_rest::for_clients(&shared.config),
        )),
        (&Method::POST, "/api/report") => report(shared, req).await,
        (&Method::POST, "/api/offer") => api_offer(shared, peer, req).await,
        (&Method::POST, "/whip") => whip_post(shared, peer, req).await,
        (&Method::GET, "/ws") => ws::upgrade(shared, peer, req),
        #[cfg(feature = "media")]
        (_, p) if p == "/api/streams" || p.starts_with("/whep/") => {
            super::streams::route(shared, peer, req, p).await
        }
        #[cfg(feature = "media")]
        (m, p) if p == "/api/sinks" || is_sink_route(m, p) => {
            super::sinks::route(shared, peer, req, p).await
        }
        (&Method::PATCH, p) if p.starts_with("/whip/") => {
            whip_patch(shared, &p["/whip/".len()..], req).await
        }
        (&Method::DELETE, p) if p.starts_with("/whip/") => {
            whip_delete(shared, &p["/whip/".len()..]).await
        }
        (m, p) if p.starts_with("/whip/") || is_route(p) => Err(ServiceError::MethodNotAllowed {
            method: m.to_string(),
            path: clip(p).to_owned(),
        }),
        (_, p) => Err(ServiceError::NotFound(clip(p).to_owned())),
    }
}

/// `POST /whip/NAME` (WHIP ingest to sink NAME) and `/whip/NAME/<id>` are the sinks';
/// `/whip/<id>` stays the data-only WHIP session's.
#[cfg(feature = "media")]
fn is_sink_route(method: &Method, path: &str) -> bool {
    path.strip_prefix("/whip/")
        .is_some_and(|rest| *method == Method::POST || rest.contains('/'))
}

/// The fixed paths (a wrong method on one is `405`, not `404`).
fn is_route(path: &str) -> bool {
    matches!(
        path,
        "/" | "/api/offer" | "/whip" | "/ws" | "/api/sessions" | "/api/report" | "/metrics"
    )
}
