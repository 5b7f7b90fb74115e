//! WebSocket signaling in rawrtc's page format, trickle ICE both ways.
//!
//! Messages are JSON text frames `{"type":"description","value":{"type":..,"sdp":..}}` and
//! `{"type":"candidate","value":{"candidate":..,"sdpMid":..,"sdpMLineIndex":..}}`
//! (`"value": null` is end-of-candidates). Errors go back as `{"type":"error","value":".."}`
//! and leave the session as it was. `GET /ws` waits for the page's offer;
//! `GET /ws?role=offer` makes the service the offerer.
//!
//! A WebSocket's session starts with its first description, the client's offer: until
//! then it holds only its place under `max_websockets` (and
//! `max_websockets_per_address`), and a candidate gets an error. One that sends no
//! offer within `connect_timeout` is closed. With `?role=offer` the service sends its
//! offer right after connecting, so that session starts at connect; it counts under
//! `max_sessions_per_address` like any other.

use super::error::{Held, ServiceError};
use super::{client_address, NewSession, Shared, Via};
use crate::sdp::{Description, IceCandidateInit, SdpType};
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::tungstenite::Message as WsMessage;
use async_tungstenite::WebSocketStream;
use bytes::Bytes;
use futures_lite::StreamExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Answers the upgrade request and starts the signaling task on the upgraded connection.
pub(crate) fn upgrade(
    shared: &Rc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ServiceError> {
    let is_upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).filter(|_| is_upgrade) else {
        return Err(ServiceError::UpgradeRequired);
    };
    let client = client_address(peer);
    let per = shared.config.max_websockets_per_address;
    let Some(mine) = shared.websockets_per_address.take(client, per) else {
        return Err(ServiceError::TooMany {
            held: Held::WebSocketsFromAddress,
            limit: "max_websockets_per_address",
            max: per,
        });
    };
    let max_ws = shared.config.max_websockets;
    let Some(slot) = shared.websockets.take(max_ws) else {
        return Err(ServiceError::TooMany {
            held: Held::WebSockets,
            limit: "max_websockets",
            max: max_ws,
        });
    };
    let accept = derive_accept_key(key.as_bytes());
    let server_offers =
        super::guard::query_value(req.uri().query(), "role").is_some_and(|r| r == "offer");
    let shared = shared.clone();
    let max = shared.config.max_body;
    shared
        .ex
        .clone()
        .spawn(async move {
            let _slots = (slot, mine);
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let mut config = WebSocketConfig::default();
                    config.max_message_size = Some(max);
                    config.max_frame_size = Some(max);
                    let ws = WebSocketStream::from_raw_socket(
                        HyperIo(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    signal(shared, ws, server_offers, client).await;
                }
                Err(e) => shared
                    .quiet
                    .warn("ws upgrade", 0, || format!("GET /ws: upgrade failed: {e}")),
            }
        })
        .detach();
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    Ok(r)
}

type Ws = WebSocketStream<HyperIo<hyper::upgrade::Upgraded>>;

async fn send(ws: &mut Ws, kind: &str, value: serde_json::Value) -> bool {
    let text = serde_json::json!({ "type": kind, "value": value }).to_string();
    ws.send(WsMessage::text(text)).await.is_ok()
}

enum Input {
    Ws(Option<Result<WsMessage, async_tungstenite::tungstenite::Error>>),
    Candidate(Option<IceCandidateInit>),
    CandidatesDone,
    /// No offer within `connect_timeout`.
    NoOffer,
}

/// A message that cannot be signaled: the error sent back, and whether the WebSocket ends
/// (its session was refused).
struct Refusal(ServiceError, bool);

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Self {
        Refusal(e, false)
    }
}

impl From<crate::Error> for Refusal {
    fn from(e: crate::Error) -> Self {
        Refusal(e.into(), false)
    }
}

/// A message that is not what the protocol says.
fn bad(e: impl ToString) -> Refusal {
    Refusal(ServiceError::BadBody(e.to_string()), false)
}

/// Opens the session of a WebSocket, or says why not (logged, rate-limited).
async fn open(
    shared: &Rc<Shared>,
    server_offers: bool,
    client: IpAddr,
) -> Result<NewSession, ServiceError> {
    let s = shared.open(Via::WebSocket, server_offers, client).await;
    if let Err(e) = &s {
        let status = e.status().as_u16();
        shared.quiet.warn("/ws", status, || {
            format!("GET /ws: {status} {e} (from {client})")
        });
    }
    s
}

async fn signal(shared: Rc<Shared>, mut ws: Ws, server_offers: bool, client: IpAddr) {
    let mut session: Option<NewSession> = None;
    if server_offers {
        // The client waits for our offer right after connecting: the session starts now.
        let s = match open(&shared, true, client).await {
            Ok(s) => s,
            Err(e) => {
                send(&mut ws, "error", e.to_string().into()).await;
                let _ = ws.close(None).await;
                return;
            }
        };
        let offer = async {
            let offer = s.pc.create_offer().await?;
            s.pc.set_local_description(offer.clone()).await?;
            Ok::<_, crate::Error>(offer)
        }
        .await;
        match offer {
            Ok(offer) => {
                send(
                    &mut ws,
                    "description",
                    serde_json::json!({"type": "offer", "sdp": offer.sdp}),
                )
                .await;
            }
            Err(e) => {
                log::warn!("[{}] offer: {e}", s.id);
                send(&mut ws, "error", e.to_string().into()).await;
                shared.close(&s.id).await;
                return;
            }
        }
        session = Some(s);
    }
    let offer_deadline = Instant::now() + shared.config.connect_timeout;
    let mut candidates_open = true;
    loop {
        let input = futures_lite::future::or(async { Input::Ws(ws.next().await) }, async {
            match &session {
                None => {
                    async_io::Timer::at(offer_deadline).await;
                    Input::NoOffer
                }
                Some(_) if !candidates_open => futures_lite::future::pending().await,
                Some(s) => match s.candidates.recv().await {
                    Ok(c) => Input::Candidate(c),
                    Err(_) => Input::CandidatesDone,
                },
            }
        })
        .await;
        match input {
            Input::NoOffer => {
                let secs = shared.config.connect_timeout.as_secs_f64();
                shared.quiet.warn("ws idle", 0, || {
                    format!(
                        "GET /ws ({client}): no offer within {secs:.1} s (connect_timeout): closed"
                    )
                });
                let e = format!("no offer within {secs:.1} s (connect_timeout)");
                send(&mut ws, "error", e.into()).await;
                let _ = ws.close(None).await;
                return;
            }
            Input::Candidate(c) => {
                let value = match c {
                    Some(c) => serde_json::to_value(&c).unwrap_or_default(),
                    None => serde_json::Value::Null,
                };
                if !send(&mut ws, "candidate", value).await {
                    break;
                }
            }
            Input::CandidatesDone => {
                // The session task dropped its sender: the session is over (closed, failed,
                // not connected within connect_timeout). Nothing left to signal.
                candidates_open = false;
                let id = session.as_ref().map(|s| s.id.clone()).unwrap_or_default();
                if shared.session(&id).is_none() {
                    log::info!("[{id}] session ended: closing its WebSocket");
                    send(&mut ws, "error", "session closed".into()).await;
                    let _ = ws.close(None).await;
                    break;
                }
            }
            Input::Ws(Some(Ok(WsMessage::Text(t)))) => {
                let r = handle_message(&shared, &mut session, client, &mut ws, t.as_str()).await;
                if let Err(Refusal(e, fatal)) = r {
                    if fatal {
                        // Logged where it was refused.
                        send(&mut ws, "error", e.to_string().into()).await;
                        let _ = ws.close(None).await;
                        return;
                    }
                    // A bad SDP line may quote the client's a=ice-pwd.
                    let who = session
                        .as_ref()
                        .map_or(client.to_string(), |s| s.id.clone());
                    shared
                        .quiet
                        .warn("ws message", 0, || format!("[{who}] ws: {}", e.log_text()));
                    if !send(&mut ws, "error", e.to_string().into()).await {
                        break;
                    }
                }
            }
            Input::Ws(Some(Ok(WsMessage::Close(_)))) | Input::Ws(None) => break,
            Input::Ws(Some(Ok(_))) => {}
            Input::Ws(Some(Err(e))) => {
                let who = session
                    .as_ref()
                    .map_or(client.to_string(), |s| s.id.clone());
                shared
                    .quiet
                    .warn("ws stream", 0, || format!("[{who}] ws: {e}"));
                break;
            }
        }
    }
    let Some(s) = session else { return };
    let id = s.id;
    // Signaling is over; a connected session lives on, an unfinished one is dropped.
    let connected = shared.is_connected(&id);
    if shared.session(&id).is_none() {
        // Already gone (and logged).
    } else if !connected {
        log::info!("[{id}] WebSocket closed before the connection was up: closing the session");
        shared.close(&id).await;
    } else {
        log::info!("[{id}] WebSocket closed; the session goes on");
    }
}

async fn handle_message(
    shared: &Rc<Shared>,
    session: &mut Option<NewSession>,
    client: IpAddr,
    ws: &mut Ws,
    text: &str,
) -> Result<(), Refusal> {
    let msg: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let kind = msg
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad("missing \"type\""))?;
    let value = msg.get("value").cloned().unwrap_or(serde_json::Value::Null);
    match kind {
        "description" => {
            let d = Description::from_json(&value.to_string()).map_err(bad)?;
            // Parse here first, so the error (logged redacted) is ours, not the peer's, and
            // a bad offer costs no session.
            crate::sdp::parse(&d.sdp).map_err(ServiceError::BadSdp)?;
            let fresh = session.is_none();
            if fresh {
                if d.kind != SdpType::Offer {
                    return Err(bad(format!(
                        "expected an offer first, got {:?} (or connect to /ws?role=offer for \
                         the service's offer)",
                        d.kind.as_str()
                    )));
                }
                let s = open(shared, false, client)
                    .await
                    .map_err(|e| Refusal(e, true))?;
                *session = Some(s);
            }
            let Some(s) = session.as_ref() else {
                return Ok(());
            };
            let result = async {
                s.pc.set_remote_description(d.clone()).await?;
                if d.kind == SdpType::Offer {
                    let answer = s.pc.create_answer().await?;
                    s.pc.set_local_description(answer.clone()).await?;
                    send(
                        ws,
                        "description",
                        serde_json::json!({"type": "answer", "sdp": answer.sdp}),
                    )
                    .await;
                }
                Ok::<_, crate::Error>(())
            }
            .await;
            if let (Err(_), true) = (&result, fresh) {
                // The offer that started the session was refused: so is the session.
                if let Some(s) = session.take() {
                    shared.close(&s.id).await;
                }
            }
            result.map_err(Refusal::from)
        }
        "candidate" => {
            let Some(s) = session.as_ref() else {
                return Err(bad("send the offer (a description) before candidates"));
            };
            let c = if value.is_null() {
                IceCandidateInit {
                    candidate: String::new(),
                    sdp_mid: None,
                    sdp_mline_index: None,
                    username_fragment: None,
                }
            } else {
                IceCandidateInit::from_json(&value.to_string()).map_err(bad)?
            };
            match s.pc.add_ice_candidate(c).await {
                // The session logged reaching the cap once; no line per refused candidate.
                Err(e @ crate::Error::Limit(_)) => {
                    send(ws, "error", e.to_string().into()).await;
                    Ok(())
                }
                r => r.map_err(Refusal::from),
            }
        }
        other => Err(bad(format!(
            "unknown message type {other:?}; expected description or candidate"
        ))),
    }
}

/// hyper's upgraded connection seen through futures-io, which tungstenite reads.
pub(crate) struct HyperIo<T>(T);

impl<T: hyper::rt::Read + Unpin> futures_io::AsyncRead for HyperIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut rb = hyper::rt::ReadBuf::new(buf);
        match Pin::new(&mut self.0).poll_read(cx, rb.unfilled()) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: hyper::rt::Write + Unpin> futures_io::AsyncWrite for HyperIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
