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

use super::service::{complete_description, ApiError, Shared, Via};
use super::ws;
use crate::sdp::{self, Description, IceCandidateInit, SdpType};
use async_io::Async;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::TcpListener;
use std::rc::Rc;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

type Body = Full<Bytes>;

/// Accepts connections forever; each is served in its own task.
pub(crate) async fn serve(shared: Rc<Shared>, listener: Async<TcpListener>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                log::warn!("accept: {e}");
                async_io::Timer::after(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared2 = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared2.clone();
            async move { Ok::<_, Infallible>(route(shared, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(smol_hyper::rt::SmolTimer::new())
            .header_read_timeout(shared.config.header_timeout)
            .serve_connection(smol_hyper::rt::FuturesIo::new(stream), service)
            .with_upgrades();
        shared
            .ex
            .spawn(async move {
                if let Err(e) = conn.await {
                    log::debug!("http {peer}: {e}");
                }
            })
            .detach();
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
    log::warn!("{method} {path}: {} {}", e.0, e.1);
    json_response(e.0, serde_json::json!({ "error": e.1 }))
}

fn static_response(content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, ApiError> {
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
    match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError(
            413,
            format!("body exceeds max_body ({max} bytes)"),
        )),
        Err(e) => Err(ApiError(400, format!("cannot read body: {e}"))),
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

async fn route(shared: Rc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    log::debug!("{method} {path}");
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
    let body = read_body(req, shared.config.max_body).await?;
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
    let body = read_body(req, shared.config.max_body).await?;
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
    let body = read_body(req, shared.config.max_body).await?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError(400, "body is not UTF-8".into()))?;
    let (_ufrag, candidates, end) = sdp::parse_candidate_fragment(text)
        .map_err(|e| ApiError(400, format!("bad fragment: {e}")))?;
    let n = candidates.len();
    for c in candidates {
        pc.add_ice_candidate(IceCandidateInit {
            candidate: c,
            sdp_mid: None,
            sdp_mline_index: Some(0),
            username_fragment: None,
        })
        .await?;
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
    let body = read_body(req, shared.config.max_body).await?;
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
