//! TURN over TCP or TLS (RFC 8656 §3.1): a small task per server connection, for networks
//! that drop UDP. It frames the byte stream into STUN messages and ChannelData
//! (RFC 8656 §12.5: on streams ChannelData is padded to 4 bytes) and hands them to the ICE
//! actor; what the actor queues for the server goes out in order.

use super::agent::IceMsg;
use async_channel::{Receiver, Sender};
use async_io::Async;
use bytes::{Buf, Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::rustls;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Largest frame accepted from a server (a STUN message or ChannelData, with padding).
const MAX_FRAME: usize = 4 + 65535 + 3;

/// What the stream task tells the ICE actor.
pub(crate) enum StreamNews {
    /// Connected (and, for TLS, handshaken) from this local address.
    Up(SocketAddr),
    /// One STUN message or ChannelData frame from the server.
    Frame(BytesMut),
    /// The connection failed or ended.
    Down(String),
}

/// TLS settings for `turns:` servers.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry (its host name or IP address).
    pub(crate) name: rustls::pki_types::ServerName<'static>,
}

/// Builds the TLS client configuration from the PEM roots at `roots`.
pub(crate) fn tls_config(roots: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut store = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(roots)
        .map_err(|e| format!("TLS roots {}: {e}", roots.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("TLS roots {}: {e}", roots.display()))?;
        // A bad certificate among many system roots is skipped, not fatal.
        let _ = store.add(cert);
    }
    if store.is_empty() {
        return Err(format!("TLS roots {}: no certificate", roots.display()));
    }
    client_config(store)
}

/// A rustls client configuration (ring, safe protocol versions, no client certificate)
/// trusting `roots`: TURN over TLS and the WHIP client's `https://`.
pub(crate) fn client_config(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to `server` and relays frames until either side ends. `id` tags every message.
pub(crate) async fn run(
    id: usize,
    server: SocketAddr,
    tls: Option<Tls>,
    connect_timeout: Duration,
    to_ice: Sender<Vec<IceMsg>>,
    writes: Receiver<Bytes>,
) {
    let news = |n: StreamNews| {
        let to_ice = to_ice.clone();
        async move {
            let _ = to_ice.send(vec![IceMsg::Stream(id, n)]).await;
        }
    };
    let connect = async {
        let tcp = Async::<TcpStream>::connect(server)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.get_ref().set_nodelay(true);
        let local = tcp.get_ref().local_addr().map_err(|e| e.to_string())?;
        Ok::<_, String>((tcp, local))
    };
    let timeout = async {
        async_io::Timer::after(connect_timeout).await;
        Err(format!("connect: no answer in {connect_timeout:?}"))
    };
    let (tcp, local) = match futures_lite::future::or(connect, timeout).await {
        Ok(v) => v,
        Err(e) => return news(StreamNews::Down(e)).await,
    };
    let result = match tls {
        None => {
            news(StreamNews::Up(local)).await;
            pump(tcp, &to_ice, id, &writes).await
        }
        Some(tls) => {
            let connector = futures_rustls::TlsConnector::from(tls.config);
            let handshake = async {
                connector
                    .connect(tls.name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))
            };
            let timeout = async {
                async_io::Timer::after(connect_timeout).await;
                Err(format!("TLS: no handshake in {connect_timeout:?}"))
            };
            match futures_lite::future::or(handshake, timeout).await {
                Ok(stream) => {
                    news(StreamNews::Up(local)).await;
                    pump(stream, &to_ice, id, &writes).await
                }
                Err(e) => Err(e),
            }
        }
    };
    let why = result.err().unwrap_or_else(|| "closed".into());
    news(StreamNews::Down(why)).await;
}

async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    to_ice: &Sender<Vec<IceMsg>>,
    id: usize,
    writes: &Receiver<Bytes>,
) -> Result<(), String> {
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let read = async {
        let mut buf = BytesMut::with_capacity(8192);
        let mut chunk = vec![0u8; 8192];
        loop {
            while let Some(len) = frame_len(&buf)? {
                if buf.len() < len {
                    break;
                }
                let frame = buf.split_to(len);
                if to_ice
                    .send(vec![IceMsg::Stream(id, StreamNews::Frame(frame))])
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            let n = reader
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed by the server".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let write = async {
        // The actor closes `writes` when it is done: flush and end.
        while let Ok(mut data) = writes.recv().await {
            while data.has_remaining() {
                let n = writer
                    .write(&data)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                data.advance(n);
            }
            if writes.is_empty() {
                writer.flush().await.map_err(|e| format!("write: {e}"))?;
            }
        }
        let _ = writer.close().await;
        Ok(())
    };
    futures_lite::future::or(write, read).await
}

/// The length of the frame at the start of `buf`, once its header is in; an error for a
/// byte that starts neither STUN nor ChannelData.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let body = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let len = match buf[0] >> 6 {
        0 => 20 + body,
        1 => (4 + body + 3) & !3,
        _ => {
            return Err(format!(
                "not STUN or ChannelData (first byte {:#04x})",
                buf[0]
            ))
        }
    };
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes"));
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::frame_len;

    #[test]
    fn frames() {
        assert_eq!(frame_len(&[0, 1, 0]).unwrap(), None);
        // STUN: 20-byte header + body.
        assert_eq!(frame_len(&[0x01, 0x01, 0, 12]).unwrap(), Some(32));
        // ChannelData 0x4000 with 5 bytes: padded to 12.
        assert_eq!(frame_len(&[0x40, 0x00, 0, 5]).unwrap(), Some(12));
        assert_eq!(frame_len(&[0x40, 0x00, 0, 4]).unwrap(), Some(8));
        assert!(frame_len(&[0x80, 0, 0, 0]).is_err());
        assert!(frame_len(&[0x16, 3, 1, 0]).unwrap() == Some(20 + 256));
    }
}
