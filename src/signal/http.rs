//! The embedded HTTP/1.1 server (hyper 1 on smol): the page, and signaling three ways.
//!
//! | request | what |
//! | --- | --- |
//! | `GET /` (`/app.js`, `/style.css`) | the page from `web/`, compiled in |
//! | `POST /api/offer` `{"type":"offer","sdp":..}` | `200` `{"type":"answer","sdp":..}`, every candidate in it |
//! | `POST /whip` `application/sdp` | `201`, the answer, `Location: /whip/<id>` (RFC 9725) |
//! | `PATCH /whip/<id>` `application/trickle-ice-sdpfrag` | `204`, candidates added |
//! | `DELETE /whip/<id>` | `200`, session closed |
//! | `GET /ws` (`?role=offer`: the service offers) | WebSocket, rawrtc's `{"type","value"}` messages, trickle both ways |
//! | `GET /api/sessions` | the live sessions, JSON |
//! | `POST /api/report` | a page's self-test results (JSON), logged and kept for the host program |
//!
//! Every refusal is a 4xx/5xx with `{"error": "..."}` naming the problem, and a log line.
//! With a token ([`ServiceConfig::token`](super::ServiceConfig::token)), `/api/*`, `/whip*`
//! and `/ws` need `Authorization: Bearer <token>` (`/ws` also takes `?token=`), else `401`.
//! Slow clients meet `header_timeout`, `body_timeout` (`408`) and `write_timeout`; the
//! connections themselves are capped by `max_connections` and `max_websockets` (`503`).

use super::service::{complete_description, ApiError, Counter, Shared, Via};
use super::ws;
use crate::sdp::{self, Description, IceCandidateInit, SdpType};
use async_io::Async;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
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
use subtle::ConstantTimeEq;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

type Body = Full<Bytes>;

/// Connections answered `503` (with a short header timeout) while `max_connections` are
/// busy; past this many, further ones are closed unanswered.
const REFUSING_CONNECTIONS: usize = 16;
/// How long a refused connection may take to send its request and read the `503`.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts connections forever; each is served in its own task, at most `max_connections`
/// at once.
pub(crate) async fn serve(shared: Rc<Shared>, listener: Async<TcpListener>) {
    let refusing = Counter::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                log::warn!("accept: {e}");
                async_io::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let max = shared.config.max_connections;
        let Some(slot) = shared.connections.take(max) else {
            refuse(&shared, &refusing, stream, peer);
            continue;
        };
        let activity = Arc::new(Activity::default());
        let io = Timed::new(stream, shared.config.write_timeout, activity.clone());
        let shared2 = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared2.clone();
            async move { Ok::<_, Infallible>(route(shared, peer, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(smol_hyper::rt::SmolTimer::new())
            .header_read_timeout(shared.config.header_timeout)
            .serve_connection(smol_hyper::rt::FuturesIo::new(io), service)
            .with_upgrades();
        let header_timeout = shared.config.header_timeout;
        shared
            .ex
            .spawn(async move {
                let _slot = slot;
                if let Err(e) = conn.await {
                    log_connection_end(peer, &e, &activity, header_timeout);
                }
            })
            .detach();
    }
}

/// Says why a connection ended early: a slow client (warn), an idle one (info), the rest
/// (debug: resets and the like are a client's business).
fn log_connection_end(peer: SocketAddr, e: &hyper::Error, activity: &Activity, header: Duration) {
    if e.is_timeout() {
        if activity.mid_request() {
            log::warn!(
                "http {peer}: slow client dropped: request headers not complete after {:.1} s \
                 (header_timeout)",
                header.as_secs_f64()
            );
        } else {
            log::info!(
                "http {peer}: idle connection closed after {:.1} s (header_timeout)",
                header.as_secs_f64()
            );
        }
    } else if let Some(io) = source_io_error(e).filter(|io| io.kind() == ErrorKind::TimedOut) {
        log::warn!("http {peer}: slow client dropped: {io}");
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

/// A connection over `max_connections`: answered `503` with a log line (while few are being
/// refused), else closed at once.
fn refuse(shared: &Rc<Shared>, refusing: &Counter, stream: Async<TcpStream>, peer: SocketAddr) {
    let max = shared.config.max_connections;
    let Some(slot) = refusing.take(REFUSING_CONNECTIONS) else {
        shared.refusals.warn(|| {
            format!("http {peer}: connection closed unanswered: max_connections ({max}) reached")
        });
        return;
    };
    shared
        .refusals
        .warn(|| format!("http {peer}: 503: max_connections ({max}) reached"));
    let service = hyper::service::service_fn(move |_req| async move {
        let mut r = json_response(
            503,
            serde_json::json!({
                "error": format!("too many connections (max_connections = {max}); try again")
            }),
        );
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
        Ok::<_, Infallible>(r)
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
            let _slot = slot;
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

fn json_response(status: u16, value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_response(method: &Method, path: &str, e: ApiError) -> Response<Body> {
    // A bad SDP line may quote the client's a=ice-pwd: keep it out of the log.
    log::warn!("{method} {path}: {} {}", e.0, super::redact_secrets(&e.1));
    json_response(e.0, serde_json::json!({ "error": e.1 }))
}

fn static_response(content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The whole body, at most `max_body` bytes, within `body_timeout`.
async fn read_body(shared: &Shared, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let max = shared.config.max_body;
    if let Some(len) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > max {
            return Err(ApiError(
                413,
                format!("body of {len} bytes exceeds max_body ({max})"),
            ));
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
        None => Err(ApiError(
            408,
            format!(
                "request body not received within {:.1} s (body_timeout)",
                limit.as_secs_f64()
            ),
        )),
        Some(Ok(b)) => Ok(b.to_bytes()),
        Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError(
            413,
            format!("body exceeds max_body ({max} bytes)"),
        )),
        Some(Err(e)) => Err(ApiError(400, format!("cannot read body: {e}"))),
    }
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
    path.starts_with("/api/") || path == "/whip" || path.starts_with("/whip/") || path == "/ws"
}

async fn route(shared: Rc<Shared>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    log::debug!("{method} {path}");
    if is_api(&path) {
        if let Err(why) = authorize(&shared, &req) {
            return unauthorized(&shared, &method, &path, peer, why);
        }
    }
    let result = match (&method, path.as_str()) {
        (&Method::GET, "/" | "/index.html") => {
            Ok(static_response("text/html; charset=utf-8", INDEX_HTML))
        }
        (&Method::GET, "/app.js") => Ok(static_response("text/javascript; charset=utf-8", APP_JS)),
        (&Method::GET, "/style.css") => Ok(static_response("text/css; charset=utf-8", STYLE_CSS)),
        (&Method::GET, "/api/sessions") => Ok(sessions(&shared)),
        (&Method::POST, "/api/report") => report(&shared, req).await,
        (&Method::POST, "/api/offer") => api_offer(&shared, req).await,
        (&Method::POST, "/whip") => whip_post(&shared, req).await,
        (&Method::GET, "/ws") => ws::upgrade(&shared, req),
        (m, p) if p.starts_with("/whip/") => {
            let id = p["/whip/".len()..].to_owned();
            match *m {
                Method::PATCH => whip_patch(&shared, &id, req).await,
                Method::DELETE => whip_delete(&shared, &id).await,
                _ => Err(ApiError(405, format!("{m} is not allowed on {p}"))),
            }
        }
        (_, "/" | "/api/offer" | "/whip" | "/ws" | "/api/sessions" | "/api/report") => {
            Err(ApiError(405, format!("{method} is not allowed on {path}")))
        }
        _ => Err(ApiError(404, format!("no such resource: {path}"))),
    };
    result.unwrap_or_else(|e| error_response(&method, &path, e))
}

/// Why a request was not let in.
#[derive(Clone, Copy)]
enum Denied {
    Missing,
    Wrong,
}

/// With a token configured: the request's `Authorization: Bearer` (or, for `/ws`, whose
/// browser API cannot set headers, its `?token=`) must be that token, compared in constant
/// time.
fn authorize(shared: &Shared, req: &Request<Incoming>) -> Result<(), Denied> {
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
        None => Err(Denied::Missing),
        Some(t) if bool::from(t.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        Some(_) => Err(Denied::Wrong),
    }
}

/// The value of `name` in a URL query (percent-decoded).
pub(crate) fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `401` with `WWW-Authenticate: Bearer` (RFC 6750 §3) and a log line without the token.
fn unauthorized(
    shared: &Shared,
    method: &Method,
    path: &str,
    peer: SocketAddr,
    why: Denied,
) -> Response<Body> {
    let (message, challenge) = match why {
        Denied::Missing => (
            "this service needs a token: send Authorization: Bearer <token> (a WebSocket \
             may use ?token=<token>; the page takes it from its address as #token=<token>, \
             or from its Token field)",
            "Bearer realm=\"smolrtc\"",
        ),
        Denied::Wrong => (
            "wrong token",
            "Bearer realm=\"smolrtc\", error=\"invalid_token\"",
        ),
    };
    shared.refusals.warn(|| {
        let what = match why {
            Denied::Missing => "no token",
            Denied::Wrong => "wrong token",
        };
        format!("{method} {path}: 401 from {peer}: {what}")
    });
    let mut r = json_response(401, serde_json::json!({ "error": message }));
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    r
}

fn sessions(shared: &Shared) -> Response<Body> {
    let list: Vec<_> = shared
        .list()
        .into_iter()
        .map(|(id, via, state, age)| serde_json::json!({"id": id, "via": via, "state": state, "age_s": age}))
        .collect();
    json_response(200, serde_json::json!({ "sessions": list }))
}

/// Offer in, session up, answer out with every candidate. On failure the session is closed.
async fn answer_offer(
    shared: &Rc<Shared>,
    via: Via,
    offer: Description,
) -> Result<(String, Description), ApiError> {
    // Parse first: a bad offer must not cost a session.
    sdp::parse(&offer.sdp).map_err(|e| ApiError(400, format!("bad SDP: {e}")))?;
    let s = shared.open(via, false).await?;
    let result = async {
        s.pc.set_remote_description(offer).await?;
        let answer = s.pc.create_answer().await?;
        s.pc.set_local_description(answer).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = result {
        shared.close(&s.id).await;
        return Err(e);
    }
    let answer = complete_description(&s, shared.config.gather_timeout).await?;
    Ok((s.id, answer))
}

async fn api_offer(
    shared: &Rc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body = read_body(shared, req).await?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError(400, "body is not UTF-8".into()))?;
    let offer = Description::from_json(text).map_err(|e| ApiError(400, e.to_string()))?;
    if offer.kind != SdpType::Offer {
        return Err(ApiError(
            400,
            format!("expected an offer, got {:?}", offer.kind.as_str()),
        ));
    }
    let (id, answer) = answer_offer(shared, Via::Http, offer).await?;
    log::info!("[{id}] answered POST /api/offer");
    let mut r = json_response(
        200,
        serde_json::json!({"type": "answer", "sdp": answer.sdp}),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-session-id", v);
    }
    Ok(r)
}

async fn whip_post(
    shared: &Rc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let ct = content_type(&req);
    if ct != "application/sdp" {
        return Err(ApiError(
            415,
            format!("expected Content-Type application/sdp, got {ct:?}"),
        ));
    }
    let body = read_body(shared, req).await?;
    let sdp =
        String::from_utf8(body.to_vec()).map_err(|_| ApiError(400, "body is not UTF-8".into()))?;
    let offer = Description {
        kind: SdpType::Offer,
        sdp,
    };
    let (id, answer) = answer_offer(shared, Via::Whip, offer).await?;
    log::info!("[{id}] answered POST /whip");
    let mut r = Response::new(Full::new(Bytes::from(answer.sdp)));
    *r.status_mut() = StatusCode::CREATED;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&format!("/whip/{id}")) {
        h.insert(LOCATION, v);
    }
    Ok(r)
}

async fn whip_patch(
    shared: &Rc<Shared>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pc = shared
        .session(id)
        .ok_or_else(|| ApiError(404, format!("unknown session {id:?}")))?;
    let ct = content_type(&req);
    if ct != "application/trickle-ice-sdpfrag" {
        return Err(ApiError(
            415,
            format!("expected Content-Type application/trickle-ice-sdpfrag, got {ct:?}"),
        ));
    }
    let body = read_body(shared, req).await?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError(400, "body is not UTF-8".into()))?;
    let (_ufrag, candidates, end) = sdp::parse_candidate_fragment(text)
        .map_err(|e| ApiError(400, format!("bad fragment: {e}")))?;
    let n = candidates.len();
    for c in candidates {
        let added = pc
            .add_ice_candidate(IceCandidateInit {
                candidate: c,
                sdp_mid: None,
                sdp_mline_index: Some(0),
                username_fragment: None,
            })
            .await;
        if let Err(e @ crate::Error::Limit(_)) = added {
            // The session logged reaching the cap once; no line per refused request.
            let e = ApiError::from(e);
            return Ok(json_response(e.0, serde_json::json!({ "error": e.1 })));
        }
        added?;
    }
    if end {
        pc.add_ice_candidate(IceCandidateInit {
            candidate: String::new(),
            sdp_mid: None,
            sdp_mline_index: Some(0),
            username_fragment: None,
        })
        .await?;
    }
    log::info!(
        "[{id}] PATCH: {n} candidates{}",
        if end { ", end-of-candidates" } else { "" }
    );
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

async fn whip_delete(shared: &Rc<Shared>, id: &str) -> Result<Response<Body>, ApiError> {
    if !shared.close(id).await {
        return Err(ApiError(404, format!("unknown session {id:?}")));
    }
    log::info!("[{id}] DELETE: closed");
    Ok(json_response(200, serde_json::json!({ "closed": id })))
}

/// A page's self-test report: logged in one line, handed to the host program.
async fn report(shared: &Rc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body = read_body(shared, req).await?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError(400, format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError(400, "a report is a JSON object".into()));
    }
    log::info!(
        "client report: ok={} mode={} offering={} error={}",
        value["ok"],
        value["mode"],
        value["offering"],
        value["error"]
    );
    // Kept only while someone reads them (a test, a host program); otherwise just logged.
    if shared.reports.try_send(value).is_err() {
        log::debug!("client report not kept: nobody is reading reports");
    }
    Ok(json_response(200, serde_json::json!({ "ok": true })))
}
