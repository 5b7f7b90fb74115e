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
use std::ops::ControlFlow;
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
    // ?stream=NAME: the client's offer receives that stream (the service offers no media).
    let stream = super::guard::query_value(req.uri().query(), "stream");
    // ?sink=NAME: what the client's offer sends goes to that sink.
    let sink = super::guard::query_value(req.uri().query(), "sink");
    if server_offers && (stream.is_some() || sink.is_some()) {
        return Err(ServiceError::BadBody(
            "?stream= and ?sink= need the client's offer (with its audio/video); drop role=offer"
                .into(),
        ));
    }
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
                    signal(shared, ws, server_offers, (stream, sink), client).await;
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

/// A WebSocket's signaling, from the upgrade to its close.
async fn signal(
    shared: Rc<Shared>,
    ws: Ws,
    server_offers: bool,
    (stream, sink): (Option<String>, Option<String>),
    client: IpAddr,
) {
    let offer_deadline = Instant::now() + shared.config.connect_timeout;
    let mut sig = Signaling {
        shared,
        ws,
        client,
        stream,
        sink,
        session: None,
        candidates_open: true,
        offer_deadline,
    };
    if server_offers && sig.offer_first().await.is_break() {
        return;
    }
    loop {
        let step = match sig.next_input().await {
            Input::NoOffer => sig.no_offer().await,
            Input::Candidate(c) => sig.local_candidate(c).await,
            Input::CandidatesDone => sig.candidates_done().await,
            Input::Ws(Some(Ok(WsMessage::Text(t)))) => sig.message(t.as_str()).await,
            Input::Ws(Some(Ok(WsMessage::Close(_)))) | Input::Ws(None) => ControlFlow::Break(()),
            Input::Ws(Some(Ok(_))) => ControlFlow::Continue(()),
            Input::Ws(Some(Err(e))) => {
                let who = sig.who();
                sig.shared
                    .quiet
                    .warn("ws stream", 0, || format!("[{who}] ws: {e}"));
                ControlFlow::Break(())
            }
        };
        if step.is_break() {
            break;
        }
    }
    sig.end().await;
}

/// One WebSocket's signaling state: its session once there is one.
struct Signaling {
    shared: Rc<Shared>,
    ws: Ws,
    client: IpAddr,
    /// `?stream=NAME`: the stream the first offer receives.
    stream: Option<String>,
    /// `?sink=NAME`: the sink what the first offer sends goes to.
    sink: Option<String>,
    session: Option<NewSession>,
    /// The session's local candidates are still coming.
    candidates_open: bool,
    /// Without a session by then (no offer), the WebSocket is closed.
    offer_deadline: Instant,
}

impl Signaling {
    /// `?role=offer`: the client waits for our offer right after connecting, so the session
    /// starts now. `Break` when it could not.
    async fn offer_first(&mut self) -> ControlFlow<()> {
        let s = match open(&self.shared, true, self.client).await {
            Ok(s) => s,
            Err(e) => return self.refuse(&e).await,
        };
        let offer = async {
            let offer = s.pc.create_offer().await?;
            s.pc.set_local_description(offer.clone()).await?;
            Ok::<_, crate::Error>(offer)
        }
        .await;
        match offer {
            Ok(offer) => {
                let value = serde_json::json!({"type": "offer", "sdp": offer.sdp});
                send(&mut self.ws, "description", value).await;
                self.session = Some(s);
                ControlFlow::Continue(())
            }
            Err(e) => {
                log::warn!("[{}] offer: {e}", s.id);
                send(&mut self.ws, "error", e.to_string().into()).await;
                self.shared.close(&s.id).await;
                ControlFlow::Break(())
            }
        }
    }

    /// A message from the client, a local candidate, the end of the session's candidates,
    /// or the offer's deadline.
    async fn next_input(&mut self) -> Input {
        let ws = &mut self.ws;
        let session = &self.session;
        let candidates_open = self.candidates_open;
        let offer_deadline = self.offer_deadline;
        futures_lite::future::or(async { Input::Ws(ws.next().await) }, async {
            match session {
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
        .await
    }

    /// The session's id, or (before there is one) the client's address, for log lines.
    fn who(&self) -> String {
        self.session
            .as_ref()
            .map_or(self.client.to_string(), |s| s.id.clone())
    }

    /// Sends the error and closes the WebSocket.
    async fn refuse(&mut self, e: &ServiceError) -> ControlFlow<()> {
        send(&mut self.ws, "error", e.to_string().into()).await;
        let _ = self.ws.close(None).await;
        ControlFlow::Break(())
    }

    async fn no_offer(&mut self) -> ControlFlow<()> {
        let secs = self.shared.config.connect_timeout.as_secs_f64();
        let client = self.client;
        self.shared.quiet.warn("ws idle", 0, || {
            format!("GET /ws ({client}): no offer within {secs:.1} s (connect_timeout): closed")
        });
        let e = format!("no offer within {secs:.1} s (connect_timeout)");
        send(&mut self.ws, "error", e.into()).await;
        let _ = self.ws.close(None).await;
        ControlFlow::Break(())
    }

    async fn local_candidate(&mut self, c: Option<IceCandidateInit>) -> ControlFlow<()> {
        let value = match c {
            Some(c) => serde_json::to_value(&c).unwrap_or_default(),
            None => serde_json::Value::Null,
        };
        if send(&mut self.ws, "candidate", value).await {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }

    /// The session task dropped its sender: the session is over (closed, failed, not
    /// connected within connect_timeout). Nothing left to signal.
    async fn candidates_done(&mut self) -> ControlFlow<()> {
        self.candidates_open = false;
        let id = self
            .session
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        if self.shared.session(&id).is_some() {
            return ControlFlow::Continue(());
        }
        log::info!("[{id}] session ended: closing its WebSocket");
        send(&mut self.ws, "error", "session closed".into()).await;
        let _ = self.ws.close(None).await;
        ControlFlow::Break(())
    }

    /// A text message: handled, or its error sent back (and the WebSocket closed when its
    /// session was refused).
    async fn message(&mut self, text: &str) -> ControlFlow<()> {
        let Err(Refusal(e, fatal)) = self.handle_message(text).await else {
            return ControlFlow::Continue(());
        };
        if fatal {
            // Logged where it was refused.
            return self.refuse(&e).await;
        }
        let who = self.who();
        self.shared.quiet.warn("ws message", 0, || {
            // A bad SDP line may quote the client's a=ice-pwd: log_text leaves it out.
            format!("[{who}] ws: {}", e.log_text())
        });
        if send(&mut self.ws, "error", e.to_string().into()).await {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }

    async fn handle_message(&mut self, text: &str) -> Result<(), Refusal> {
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
                self.remote_description(d).await
            }
            "candidate" => self.remote_candidate(value).await,
            other => Err(bad(format!(
                "unknown message type {other:?}; expected description or candidate"
            ))),
        }
    }

    /// The client's description: the first one (an offer) starts the session; an offer is
    /// answered.
    async fn remote_description(&mut self, d: Description) -> Result<(), Refusal> {
        // Parse here first, so the error (logged redacted) is ours, not the peer's, and a
        // bad offer costs no session.
        if self.stream.is_some() || self.sink.is_some() {
            crate::sdp::parse_description(&d.sdp).map_err(ServiceError::BadSdp)?;
        } else {
            crate::sdp::parse(&d.sdp).map_err(ServiceError::BadSdp)?;
        }
        let fresh = self.session.is_none();
        if fresh {
            if d.kind != SdpType::Offer {
                return Err(bad(format!(
                    "expected an offer first, got {:?} (or connect to /ws?role=offer for the \
                     service's offer)",
                    d.kind.as_str()
                )));
            }
            let s = open(&self.shared, false, self.client)
                .await
                .map_err(|e| Refusal(e, true))?;
            if self.stream.is_some() || self.sink.is_some() {
                if let Err(e) = self.attach_media(&d.sdp, &s).await {
                    self.shared.close(&s.id).await;
                    return Err(Refusal(e, true));
                }
            }
            self.session = Some(s);
        }
        let Some(s) = self.session.as_ref() else {
            return Ok(());
        };
        let ws = &mut self.ws;
        let result = async {
            s.pc.set_remote_description(d.clone()).await?;
            if d.kind == SdpType::Offer {
                let answer = s.pc.create_answer().await?;
                s.pc.set_local_description(answer.clone()).await?;
                let value = serde_json::json!({"type": "answer", "sdp": answer.sdp});
                send(ws, "description", value).await;
            }
            Ok::<_, crate::Error>(())
        }
        .await;
        if let (Err(_), true) = (&result, fresh) {
            // The offer that started the session was refused: so is the session.
            if let Some(s) = self.session.take() {
                self.shared.close(&s.id).await;
            }
        }
        result.map_err(Refusal::from)
    }

    /// Makes the new session a viewer of `?stream=` and a sender to `?sink=` before its
    /// offer is set.
    #[cfg(feature = "media")]
    async fn attach_media(&self, sdp: &str, s: &NewSession) -> Result<(), ServiceError> {
        let sink = self.sink.as_deref();
        match &self.stream {
            Some(name) => super::streams::attach_stream(&self.shared, name, sink, sdp, s).await,
            None => {
                let sink = sink.unwrap_or_default();
                super::sinks::attach_sink(&self.shared, sink, &s.id, &s.pc).await
            }
        }
    }

    #[cfg(not(feature = "media"))]
    async fn attach_media(&self, _sdp: &str, _s: &NewSession) -> Result<(), ServiceError> {
        match (&self.stream, &self.sink) {
            (Some(name), _) => Err(ServiceError::UnknownStream(name.clone())),
            (None, sink) => Err(ServiceError::UnknownSink(sink.clone().unwrap_or_default())),
        }
    }

    /// A candidate of the client's (`null`: end-of-candidates).
    async fn remote_candidate(&mut self, value: serde_json::Value) -> Result<(), Refusal> {
        let Some(s) = self.session.as_ref() else {
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
                send(&mut self.ws, "error", e.to_string().into()).await;
                Ok(())
            }
            r => r.map_err(Refusal::from),
        }
    }

    /// Signaling is over; a connected session lives on, an unfinished one is dropped.
    async fn end(self) {
        let Some(s) = self.session else { return };
        let id = s.id;
        let connected = self.shared.is_connected(&id);
        if self.shared.session(&id).is_none() {
            // Already gone (and logged).
        } else if !connected {
            log::info!("[{id}] WebSocket closed before the connection was up: closing the session");
            self.shared.close(&id).await;
        } else {
            log::info!("[{id}] WebSocket closed; the session goes on");
        }
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
