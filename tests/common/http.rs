//! A deliberately minimal HTTP/1.1 client for tests: it can send exactly the malformed or
//! oversized requests a real client library would refuse to.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    let s = TcpStream::connect(addr).expect("connect");
    // A non-trickle answer waits for gathering: give it longer than connect_from does.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    send_request(s, addr, method, path, &[], content_type, body)
}

/// A connection to `addr` from the local address `from` (any of 127/8 is loopback on
/// Linux, so one test can be several clients), or from the default one.
pub fn connect_from(addr: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    let s = match from {
        None => TcpStream::connect(addr).expect("connect"),
        Some(ip) => {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )
            .unwrap();
            sock.bind(&SocketAddr::new(ip, 0).into()).expect("bind");
            sock.connect(&addr.into()).expect("connect");
            sock.into()
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    s
}

/// One request from `from` with extra header lines (`"Name: value"`; a `Host` line there
/// replaces the default `Host: <addr>`), `Connection: close`; the reply.
pub fn request_from(
    addr: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[&str],
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    send_request(
        connect_from(addr, from),
        addr,
        method,
        path,
        headers,
        content_type,
        body,
    )
}

/// A GET from `from` with extra header lines (see [`request_from`]); the reply.
pub fn get_from(addr: SocketAddr, from: Option<IpAddr>, path: &str, headers: &[&str]) -> Reply {
    request_from(addr, from, "GET", path, headers, None, b"")
}

/// Writes the request on `s` (`Connection: close`) and reads the reply to its end.
fn send_request(
    mut s: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|h| is_host(h)) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    head.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n",
        body.len()
    ));
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    for h in headers {
        head.push_str(&format!("{h}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body; ignore a reset here.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw)
}

/// The head of the reply to a WebSocket upgrade of `path` from `from` (and its body, if
/// it is a refusal); the stream stays open. A `Host` line in `headers` replaces the
/// default `Host: <addr>`.
pub fn ws_upgrade_from(
    addr: SocketAddr,
    from: Option<IpAddr>,
    path: &str,
    headers: &[&str],
) -> (TcpStream, Reply) {
    let mut s = connect_from(addr, from);
    let mut head = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|h| is_host(h)) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    head.push_str(
        "Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    );
    for h in headers {
        head.push_str(&format!("{h}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            _ => break,
        }
    }
    let mut reply = parse(&raw);
    // A refusal has a body: read what Content-Length says.
    if let Some(n) = reply.header("content-length").and_then(|v| v.parse().ok()) {
        let mut body = vec![0u8; n];
        s.read_exact(&mut body).unwrap();
        reply.body = body;
    }
    (s, reply)
}

fn is_host(header: &str) -> bool {
    header.to_ascii_lowercase().starts_with("host:")
}

/// One masked (with a zero mask) WebSocket text frame.
pub fn ws_text_frame(text: &str) -> Vec<u8> {
    let mut f = vec![0x81u8];
    match text.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(text.as_bytes());
    f
}

/// The text of the next (unmasked, server-sent) WebSocket text frame on `s`.
pub fn ws_read_text(s: &mut TcpStream) -> String {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).expect("a frame");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            s.read_exact(&mut n).unwrap();
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0u8; 8];
            s.read_exact(&mut n).unwrap();
            u64::from_be_bytes(n) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    assert_eq!(
        head[0] & 0x0f,
        1,
        "a text frame: {:?}",
        String::from_utf8_lossy(&payload)
    );
    String::from_utf8(payload).unwrap()
}

pub fn parse(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}
