//! The byte pipes to a broker: TCP, TLS (futures-rustls), WebSocket (async-tungstenite,
//! subprotocol `mqtt`, binary frames) and WebSocket over TLS.

use super::url::MqttUrl;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use futures_rustls::rustls;
use std::path::Path;
use std::sync::Arc;

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection to the broker.
pub(crate) enum Conn {
    Stream(Box<dyn Io>),
    Ws(Box<WebSocketStream<Box<dyn Io>>>),
}

impl Conn {
    /// Opens the transport `url` names; `ca` replaces the system roots for TLS.
    pub(crate) async fn open(url: &MqttUrl, ca: Option<&Path>, max: usize) -> Result<Self, String> {
        let tcp = smol::net::TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", url.host, url.port))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if url.scheme.tls() {
            let roots = ca.unwrap_or(Path::new(crate::ice::DEFAULT_TLS_ROOTS));
            let config = tls_config(roots)?;
            let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                .map_err(|e| format!("TLS server name {:?}: {e}", url.host))?;
            let tls = futures_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}:{}: {e}", url.host, url.port))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        if !url.scheme.websocket() {
            return Ok(Conn::Stream(io));
        }
        let scheme = if url.scheme.tls() { "wss" } else { "ws" };
        let host = if url.host.contains(':') {
            format!("[{}]", url.host)
        } else {
            url.host.clone()
        };
        let mut req = format!("{scheme}://{host}:{}{}", url.port, url.path)
            .into_client_request()
            .map_err(|e| format!("WebSocket request: {e}"))?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(max);
        config.max_frame_size = Some(max);
        let (ws, _) = async_tungstenite::client_async_with_config(req, io, Some(config))
            .await
            .map_err(|e| format!("WebSocket upgrade at {}: {e}", url))?;
        Ok(Conn::Ws(Box::new(ws)))
    }

    /// Bytes from the broker; empty at the end of the stream.
    pub(crate) async fn read(&mut self, buf: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Conn::Stream(s) => {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
                buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        buf.extend_from_slice(&b);
                        return Ok(());
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                }
            },
        }
    }

    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        match self {
            Conn::Stream(s) => {
                s.write_all(data).await.map_err(|e| e.to_string())?;
                s.flush().await.map_err(|e| e.to_string())
            }
            Conn::Ws(ws) => ws
                .send(Message::binary(data.to_vec()))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub(crate) async fn close(&mut self) {
        match self {
            Conn::Stream(s) => {
                let _ = s.close().await;
            }
            Conn::Ws(ws) => {
                let _ = ws.close(None).await;
            }
        }
    }
}

/// TLS client settings trusting the PEM certificates in `roots`.
fn tls_config(roots: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    crate::ice::tls_client_config(roots)
}
