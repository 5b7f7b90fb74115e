//! Bad input at the service's edges, over real sockets against a real service on
//! 127.0.0.1: slow HTTP clients (headers, bodies, unread answers, idle keep-alive), too many
//! connections, WebSockets, sessions and channels, oversized and malformed requests, the
//! bearer token, and a peer that sends messages over our max-message-size. Each refusal is
//! checked on the wire and in the log, and the other clients keep being served.

mod common;

use common::http::{
    connect_from, get_from, parse, request_from, ws_read_text, ws_text_frame, ws_upgrade_from,
    Reply,
};
use common::*;
use smolrtc::service::{ServiceConfig, ServiceHandle};
use smolrtc::{ChannelInit, ChannelState, DataChannel, Event, Message, Runtime};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ log capture

/// Every log line of the process (smolrtc's at debug and above, the rest at warn), kept so
/// the tests can check that refusals are logged and secrets are not.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn || m.target().starts_with("smolrtc")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!("{} {}: {}", r.level(), r.target(), r.args());
            if std::env::var_os("LIMITS_LOG").is_some() {
                eprintln!("{line}");
            }
            LINES.lock().unwrap().push(line);
        }
    }
    fn flush(&self) {}
}

fn init_capture() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("no other logger");
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// Waits (up to 3 s) for a log line holding every one of `words`.
fn logged(words: &[&str]) -> String {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(l) = LINES
            .lock()
            .unwrap()
            .iter()
            .find(|l| words.iter().all(|w| l.contains(w)))
        {
            return l.clone();
        }
        assert!(Instant::now() < until, "no log line with {words:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------ service and HTTP helpers

fn start(tweak: impl FnOnce(&mut ServiceConfig)) -> (Runtime, ServiceHandle) {
    init_capture();
    common::service::start(tweak)
}

/// Retries `attempt` until it answers `status` (a place given back), for 5 s at most.
fn until_freed(status: u16, mut attempt: impl FnMut() -> u16) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let got = attempt();
        if got == status {
            return;
        }
        assert!(Instant::now() < until, "place never freed: {got}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    connect_from(addr, None)
}

/// One request with extra header lines (`"Name: value"`), `Connection: close`; the reply.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    request_from(addr, None, method, path, headers, content_type, body)
}

fn get(addr: SocketAddr, path: &str, headers: &[&str]) -> Reply {
    get_from(addr, None, path, headers)
}

/// Reads until the server closes; `Ok(bytes)` on EOF or reset, `Err` if it is still open
/// after the socket's read timeout.
fn read_until_closed(s: &mut TcpStream) -> Result<usize, String> {
    let mut total = 0;
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("still open after {total} bytes"))
            }
            Err(_) => return Ok(total), // reset
        }
    }
}

/// The head of the reply to a WebSocket upgrade of `path`; the stream stays open.
fn ws_upgrade(addr: SocketAddr, path: &str, headers: &[&str]) -> (TcpStream, Reply) {
    ws_upgrade_from(addr, None, path, headers)
}

fn sessions(h: &ServiceHandle, headers: &[&str]) -> usize {
    let r = get(h.addr, "/api/sessions", headers);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["sessions"].as_array().unwrap().len()
}

fn wait_sessions(h: &ServiceHandle, headers: &[&str], n: usize, within: Duration) {
    let until = Instant::now() + within;
    while sessions(h, headers) != n {
        assert!(Instant::now() < until, "sessions never became {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client offering `labels` (in-band channels) through `POST /api/offer`.
async fn http_client(
    h: &ServiceHandle,
    labels: &[&str],
    headers: &[&str],
) -> (Peer, Vec<DataChannel>) {
    http_client_from(h, None, labels, headers).await
}

/// [`http_client`] signaling from the local address `from`.
async fn http_client_from(
    h: &ServiceHandle,
    from: Option<IpAddr>,
    labels: &[&str],
    headers: &[&str],
) -> (Peer, Vec<DataChannel>) {
    let mut p = Peer::new("client");
    let mut chans = Vec::new();
    for l in labels {
        chans.push(p.channel(l, ChannelInit::default()).await);
    }
    let answer = p.offer_to_service_from(h.addr, from, headers).await;
    p.pc.set_remote_description(answer).await.unwrap();
    (p, chans)
}

/// A trickle offer (no candidates) to `POST /whip`: a session that can never connect.
async fn whip_offer(h: &ServiceHandle) -> Reply {
    let p = Peer::new("whip");
    p.channel("echo", ChannelInit::default()).await;
    let offer = p.pc.create_offer().await.unwrap();
    request(
        h.addr,
        "POST",
        "/whip",
        &[],
        Some("application/sdp"),
        offer.sdp.as_bytes(),
    )
}

fn error_of(r: &Reply) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_owned()
}

// ------------------------------------------------------------------ slow clients

/// A client that trickles its request headers a byte at a time is dropped at
/// header_timeout (the trickle does not extend it), with a warning; another client is served
/// meanwhile.
#[test]
fn slowloris_headers_are_cut_off_while_others_are_served() {
    let (_rt, h) = start(|c| c.header_timeout = Duration::from_secs(2));
    let mut slow = connect(h.addr);
    let port = slow.local_addr().unwrap().port().to_string();
    let started = Instant::now();
    slow.write_all(b"GET /api/sessions HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let mut dripper = slow.try_clone().unwrap();
    let drip = std::thread::spawn(move || {
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(100));
            if dripper.write_all(b"X").is_err() {
                break;
            }
        }
    });
    // Meanwhile, a normal client is answered, long before the slow one is dropped.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(h.addr, "/api/sessions", &[]).status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "served only after {:?}",
        started.elapsed()
    );
    let got = read_until_closed(&mut slow).expect("slow client dropped");
    let took = started.elapsed();
    assert_eq!(got, 0, "no answer for a request that never ended");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(3500),
        "dropped after {took:?}, header_timeout is 2 s"
    );
    let line = logged(&[
        &format!(":{port}:"),
        "slow client dropped",
        "header_timeout",
    ]);
    assert!(line.starts_with("WARN"), "{line}");
    drip.join().unwrap();
}

/// A keep-alive connection left idle after its answer is closed at header_timeout, logged
/// as idle (not as a slow client).
#[test]
fn idle_keep_alive_connections_are_closed() {
    let (_rt, h) = start(|c| c.header_timeout = Duration::from_secs(1));
    let mut s = connect(h.addr);
    let port = s.local_addr().unwrap().port().to_string();
    s.write_all(b"GET /style.css HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    let reply = parse(&head);
    assert_eq!(reply.status, 200);
    let len: usize = reply.header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    let idle = Instant::now();
    assert_eq!(read_until_closed(&mut s), Ok(0), "idle connection closed");
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
    let line = logged(&[&format!(":{port}:"), "idle connection closed"]);
    assert!(line.starts_with("INFO"), "{line}");
}

/// A body that does not arrive within body_timeout gets `408` (JSON) and the connection is
/// closed; the service goes on.
#[test]
fn slow_body_gets_408() {
    let (_rt, h) = start(|c| c.body_timeout = Duration::from_secs(1));
    let mut s = connect(h.addr);
    let started = Instant::now();
    s.write_all(
        b"POST /api/offer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"type\":\"offer\",",
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let took = started.elapsed();
    let r = parse(&raw);
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(error_of(&r).contains("body_timeout"), "{}", r.text());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    logged(&["POST /api/offer", "408", "body_timeout"]);
    assert_eq!(get(h.addr, "/api/sessions", &[]).status, 200);
}

/// A client that sends requests but never reads the answers (a slow reader) is dropped
/// write_timeout after our writes stall, while others are served.
#[test]
fn client_reading_nothing_is_dropped_at_write_timeout() {
    let (_rt, h) = start(|c| {
        c.write_timeout = Duration::from_secs(1);
        c.header_timeout = Duration::from_secs(30);
    });
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&h.addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = s.local_addr().unwrap().port().to_string();
    let one = get(h.addr, "/app.js", &[]).body.len();
    // ~20 MB of answers (app.js is served gzipped, ~17 KB): far more than socket buffers hold
    const REQUESTS: usize = 1200;
    let pipelined = "GET /app.js HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(REQUESTS);
    s.write_all(pipelined.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get(h.addr, "/api/sessions", &[]).status, 200);
    let line = logged(&[&format!(":{port}:"), "slow client dropped", "write_timeout"]);
    assert!(line.starts_with("WARN"), "{line}");
    let got = read_until_closed(&mut s).expect("connection closed");
    assert!(got < REQUESTS * one, "got every answer ({got} bytes)");
}

// ------------------------------------------------------------------ counts

/// With max_connections busy, one more connection is answered `503` (JSON) and closed;
/// once one is freed, requests are served again.
#[test]
fn connections_over_max_connections_get_503() {
    let (_rt, h) = start(|c| c.max_connections = 2);
    let idle1 = connect(h.addr);
    let _idle2 = connect(h.addr);
    std::thread::sleep(Duration::from_millis(200));
    let r = get(h.addr, "/api/sessions", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(error_of(&r).contains("max_connections = 2"), "{}", r.text());
    logged(&["503", "max_connections (2) reached"]);
    drop(idle1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(h.addr, "/api/sessions", &[]).status, 200);
}

/// Past max_websockets, an upgrade gets `503` instead of `101`; a freed place is reused.
#[test]
fn websockets_over_max_websockets_get_503() {
    let (_rt, h) = start(|c| c.max_websockets = 1);
    let (first, r) = ws_upgrade(h.addr, "/ws", &[]);
    assert_eq!(r.status, 101);
    let (_, r) = ws_upgrade(h.addr, "/ws", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(error_of(&r).contains("max_websockets = 1"), "{}", r.text());
    logged(&["GET /ws", "503", "max_websockets"]);
    drop(first);
    until_freed(101, || ws_upgrade(h.addr, "/ws", &[]).1.status);
}

/// max_sessions refuses further sessions on every path (`503` JSON, or an error message on
/// the WebSocket) with a log line; the session it holds keeps working; and a session that
/// never connects is closed at connect_timeout, giving its place back.
#[test]
fn sessions_over_max_sessions_are_refused_and_unconnected_ones_expire() {
    let (_rt, h) = start(|c| {
        c.max_sessions = 1;
        c.connect_timeout = Duration::from_secs(2);
    });
    block_on(async {
        let (mut p, chans) = http_client(&h, &["echo"], &[]).await;
        opened(&mut p, "echo").await;
        let r = whip_offer(&h).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(error_of(&r).contains("max_sessions = 1"), "{}", r.text());
        logged(&["session refused", "max_sessions (1)"]);
        let (mut ws, r) = ws_upgrade(h.addr, "/ws?role=offer", &[]);
        assert_eq!(r.status, 101);
        let mut frame = vec![0u8; 256];
        let n = ws.read(&mut frame).unwrap();
        let text = String::from_utf8_lossy(&frame[..n]);
        assert!(text.contains("max_sessions"), "{text}");
        // The connected session outlives connect_timeout and still echoes.
        std::thread::sleep(Duration::from_millis(2200));
        send_expect(&chans[0], &mut p, "still here").await;
        p.pc.close().await;
    });
    wait_sessions(&h, &[], 0, Duration::from_secs(5));
    // A session that is offered but never connects holds its place connect_timeout only.
    let r = block_on(whip_offer(&h));
    assert_eq!(r.status, 201, "{}", r.text());
    let opened_at = Instant::now();
    assert_eq!(block_on(whip_offer(&h)).status, 503);
    wait_sessions(&h, &[], 0, Duration::from_secs(5));
    let took = opened_at.elapsed();
    assert!(took >= Duration::from_millis(1800), "{took:?}");
    logged(&["not connected within 2.0 s", "connect_timeout"]);
    assert_eq!(block_on(whip_offer(&h)).status, 201);
}

/// A browser opening more channels than max_channels gets the extra ones closed; the
/// session and the channels it has keep working.
#[test]
fn channels_over_max_channels_are_refused_and_the_rest_echo() {
    let (_rt, h) = start(|c| c.peer.max_channels = 3);
    block_on(async {
        let labels = ["echo"; 5];
        let (mut p, chans) = http_client(&h, &labels, &[]).await;
        let mut open = Vec::new();
        let mut closed = 0;
        while open.len() + closed < chans.len() {
            let ev = p
                .expect("channel open or closed", |e| match e {
                    Event::ChannelOpen(c) => Some((c.clone(), true)),
                    Event::ChannelClosed(c) => Some((c.clone(), false)),
                    _ => None,
                })
                .await;
            match ev {
                (c, true) => open.push(c),
                (_, false) => closed += 1,
            }
        }
        assert_eq!((open.len(), closed), (3, 2));
        logged(&["DCEP OPEN", "refused: max_channels (3)"]);
        for (i, c) in open.iter().enumerate() {
            c.send(format!("ch {i}")).await.unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..open.len() {
            let m = p
                .expect("echo", |e| match e {
                    Event::ChannelMessage(c, Message::Text(t)) => Some((c.id(), t.clone())),
                    _ => None,
                })
                .await;
            got.push(m);
        }
        for (i, c) in open.iter().enumerate() {
            assert!(got.contains(&(c.id(), format!("ch {i}"))), "{got:?}");
            assert_eq!(c.state(), ChannelState::Open);
        }
        assert!(chans
            .iter()
            .filter(|c| c.state() == ChannelState::Closed)
            .all(|c| !open.contains(c)));
        p.pc.close().await;
    });
}

/// `n` distinct host candidates (`a=candidate:` lines' values), from number `from` on.
fn fake_candidates(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            format!(
                "candidate:{i} 1 udp 2122260223 127.0.{}.{} 9 typ host",
                i / 250,
                i % 250 + 1
            )
        })
        .collect()
}

/// Lines the capture holds with every one of `words`.
fn count_logged(words: &[&str]) -> usize {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

/// The attack of issue 13: 3,000 trickled candidates in 60 PATCHes of 50. The first 100
/// (the default max_remote_candidates) are taken; the 101st and every later PATCH get
/// `422` naming the limit, and the log has one line about it for the session, no line per
/// refused PATCH and none per candidate at info level.
#[test]
fn trickled_candidates_over_max_remote_candidates_get_422() {
    let (_rt, h) = start(|_| {});
    let r = block_on(whip_offer(&h));
    assert_eq!(r.status, 201, "{}", r.text());
    let location = r.header("location").expect("Location").to_owned();
    let id = location.trim_start_matches("/whip/").to_owned();
    let mut statuses = Vec::new();
    for patch in 0..60 {
        let body: String = fake_candidates(patch * 50, 50)
            .iter()
            .map(|c| format!("a={c}\r\n"))
            .collect();
        let r = request(
            h.addr,
            "PATCH",
            &location,
            &[],
            Some("application/trickle-ice-sdpfrag"),
            body.as_bytes(),
        );
        if r.status != 204 {
            let e = error_of(&r);
            assert!(e.contains("max_remote_candidates = 100"), "{}", r.text());
        }
        statuses.push(r.status);
    }
    assert_eq!(
        statuses[..2],
        [204, 204],
        "the first 100 candidates were refused"
    );
    assert!(
        statuses[2..].iter().all(|s| *s == 422),
        "candidates past the 100th were not refused with 422: {statuses:?}"
    );
    logged(&[&id, "max_remote_candidates", "logged once"]);
    assert_eq!(count_logged(&[&id, "max_remote_candidates"]), 1);
    assert_eq!(
        count_logged(&["PATCH", &id, "422"]),
        0,
        "a line per refused PATCH"
    );
    assert_eq!(
        count_logged(&["INFO", &id, "remote candidate"]),
        0,
        "a line per candidate at info level"
    );
    // The service is fine, and so is the next session.
    assert_eq!(block_on(whip_offer(&h)).status, 201);
}

/// Candidates trickled over a WebSocket meet the same cap: past the 100th each gets an
/// `{"type":"error"}` message naming the limit, the WebSocket stays open, and the log
/// has one line about it.
#[test]
fn websocket_candidates_over_max_remote_candidates_get_errors() {
    use async_tungstenite::tungstenite::Message as Ws;
    use futures_lite::StreamExt;
    let (_rt, h) = start(|_| {});
    block_on(async {
        let tcp = async_io::Async::<TcpStream>::connect(h.addr).await.unwrap();
        let url = format!("ws://{}/ws", h.addr);
        let (mut ws, _) = async_tungstenite::client_async(url, tcp).await.unwrap();
        let p = Peer::new("ws-client");
        p.channel("echo", ChannelInit::default()).await;
        let offer = p.pc.create_offer().await.unwrap();
        let msg = serde_json::json!({"type": "description", "value": {"type": "offer", "sdp": offer.sdp}});
        ws.send(Ws::text(msg.to_string())).await.unwrap();
        for c in fake_candidates(0, 130) {
            let value = serde_json::json!({"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0});
            let msg = serde_json::json!({"type": "candidate", "value": value});
            ws.send(Ws::text(msg.to_string())).await.unwrap();
        }
        let mut errors = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while errors.len() < 30 {
            assert!(Instant::now() < deadline, "only {} errors", errors.len());
            let next = futures_lite::future::or(async { ws.next().await }, async {
                async_io::Timer::after(Duration::from_millis(200)).await;
                None
            })
            .await;
            if let Some(Ok(Ws::Text(t))) = next {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "error" {
                    errors.push(v["value"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        assert!(
            errors
                .iter()
                .all(|e| e.contains("max_remote_candidates = 100")),
            "{errors:?}"
        );
        // Nothing more than the 30 refused ones.
        let more = futures_lite::future::or(
            async {
                loop {
                    match ws.next().await {
                        Some(Ok(Ws::Text(t))) if t.as_str().contains("\"error\"") => return true,
                        Some(Ok(_)) => {}
                        _ => return false,
                    }
                }
            },
            async {
                async_io::Timer::after(Duration::from_millis(500)).await;
                false
            },
        )
        .await;
        assert!(!more, "more than 30 candidates refused");
        let line = logged(&["max_remote_candidates", "logged once"]);
        let id = line
            .split('[')
            .nth(1)
            .and_then(|s| s.split(']').next())
            .unwrap()
            .to_owned();
        assert_eq!(count_logged(&[&id, "max_remote_candidates"]), 1);
        assert_eq!(
            count_logged(&[&id, "ws:"]),
            0,
            "a line per refused candidate"
        );
    });
}

// ------------------------------------------------------------------ bad requests

/// Oversized bodies get `413`, malformed ones `400` naming the problem, in JSON; a bad SDP
/// line quoting an ICE password is answered but its password is not logged; the session
/// already up is not touched.
#[test]
fn oversized_and_malformed_requests_get_clear_errors() {
    let (_rt, h) = start(|c| c.max_body = 8 * 1024);
    block_on(async {
        let (mut p, chans) = http_client(&h, &["echo"], &[]).await;
        opened(&mut p, "echo").await;
        let post =
            |path: &str, ct: &str, body: &[u8]| request(h.addr, "POST", path, &[], Some(ct), body);
        // Declared too large: refused before reading.
        let r = post("/api/offer", "application/json", &[b' '; 9 * 1024]);
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(error_of(&r).contains("max_body (8192)"), "{}", r.text());
        // Chunked, no length: cut off once past max_body.
        let mut s = connect(h.addr);
        s.write_all(
            b"POST /whip HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/sdp\r\n\
              Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        for _ in 0..3 {
            let _ = s.write_all(b"1000\r\n");
            let _ = s.write_all(&[b'a'; 4096]);
            let _ = s.write_all(b"\r\n");
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let r = parse(&raw);
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(error_of(&r).contains("max_body"), "{}", r.text());
        logged(&["POST /whip", "413"]);

        let r = post("/api/offer", "application/json", b"{\"type\":\"offer\",");
        assert_eq!(r.status, 400);
        assert!(error_of(&r).contains("not JSON"), "{}", r.text());
        let r = post("/api/offer", "application/json", &[0xff, 0xfe]);
        assert_eq!(r.status, 400);
        assert!(error_of(&r).contains("UTF-8"), "{}", r.text());
        let secret = "Zq9sECRETpwdXXXXXXXXXXXXXXX";
        let bad_sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:{secret}\r\na=ice-pwd:{secret}\r\n"
        );
        let r = post("/whip", "application/sdp", bad_sdp.as_bytes());
        assert_eq!(r.status, 400, "{}", r.text());
        let e = error_of(&r);
        assert!(e.contains("line 8") && e.contains("twice"), "{e}");
        let line = logged(&["POST /whip", "400", "line 8"]);
        assert!(!line.contains(secret), "{line}");
        let r = post("/whip", "application/sdp", b"hello");
        assert_eq!(r.status, 400);
        assert!(error_of(&r).contains("bad SDP"), "{}", r.text());

        // The same bad SDP on a WebSocket: an error message back, the password not logged.
        let (mut ws, r) = ws_upgrade(h.addr, "/ws", &[]);
        assert_eq!(r.status, 101);
        let msg =
            serde_json::json!({"type": "description", "value": {"type": "offer", "sdp": bad_sdp}});
        ws.write_all(&ws_text_frame(&msg.to_string())).unwrap();
        let mut frame = vec![0u8; 4096];
        let n = ws.read(&mut frame).unwrap();
        let text = String::from_utf8_lossy(&frame[..n]);
        assert!(
            text.contains("\"error\"") && text.contains("line 8"),
            "{text}"
        );
        let line = logged(&["ws: bad SDP", "line 8"]);
        assert!(!line.contains(secret), "{line}");
        // A WebSocket message over max_body ends that WebSocket only.
        // One masked binary frame header announcing 64 KiB (> max_body).
        let mut frame = vec![0x82u8, 0xff];
        frame.extend_from_slice(&(64u64 * 1024).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        ws.write_all(&frame).unwrap();
        assert!(read_until_closed(&mut ws).is_ok(), "WebSocket closed");
        logged(&["ws:", "too long"]);

        send_expect(&chans[0], &mut p, "unharmed").await;
        p.pc.close().await;
    });
    assert!(
        LINES
            .lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains("Zq9sECRET")),
        "an ICE password was logged"
    );
}

// ------------------------------------------------------------------ bearer token

/// With a token, the page still loads but every API request needs it (`401` with
/// `WWW-Authenticate: Bearer` and a JSON error otherwise), WebSockets may carry it as
/// `?token=`, and it never reaches the log.
#[test]
fn bearer_token_guards_the_api() {
    const TOKEN: &str = "tOk3n-for+limits/test==";
    let auth = format!("Authorization: Bearer {TOKEN}");
    let auth = auth.as_str();
    let (_rt, h) = start(|c| c.token = Some(TOKEN.into()));
    // The page and its files load without it (and what is not there is simply not there).
    for path in ["/", "/app.js", "/style.css"] {
        assert_eq!(get(h.addr, path, &[]).status, 200, "{path}");
    }
    assert_eq!(get(h.addr, "/favicon.ico", &[]).status, 404);
    // Missing, wrong, wrong scheme, or in the query of a non-WebSocket path: 401.
    let refused = [
        get(h.addr, "/api/sessions", &[]),
        get(h.addr, "/api/sessions", &["Authorization: Bearer nope"]),
        get(
            h.addr,
            "/api/sessions",
            &[&format!("Authorization: Basic {TOKEN}")],
        ),
        get(
            h.addr,
            &format!("/api/sessions?token={}", urlencode(TOKEN)),
            &[],
        ),
        request(
            h.addr,
            "POST",
            "/api/offer",
            &[],
            Some("application/json"),
            b"{}",
        ),
        request(
            h.addr,
            "POST",
            "/whip",
            &[],
            Some("application/sdp"),
            b"v=0",
        ),
        request(h.addr, "DELETE", "/whip/0123", &[], None, b""),
        request(
            h.addr,
            "POST",
            "/api/report",
            &[],
            Some("application/json"),
            b"{}",
        ),
        get(h.addr, "/api/nope", &[]),
        ws_upgrade(h.addr, "/ws", &[]).1,
        ws_upgrade(h.addr, "/ws?token=nope", &[]).1,
    ];
    for (i, r) in refused.iter().enumerate() {
        assert_eq!(r.status, 401, "case {i}: {}", r.text());
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "case {i}"
        );
        assert!(error_of(r).contains("token"), "case {i}: {}", r.text());
    }
    assert!(error_of(&refused[1]).contains("wrong token"));
    assert!(refused[1]
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    logged(&["401", "no token"]);
    // The right token: in the header, or in a WebSocket URL.
    assert_eq!(get(h.addr, "/api/sessions", &[auth]).status, 200);
    block_on(async {
        let (mut p, chans) = http_client(&h, &["echo"], &[auth]).await;
        opened(&mut p, "echo").await;
        send_expect(&chans[0], &mut p, "authorized").await;
        p.pc.close().await;
    });
    for (path, headers) in [
        (format!("/ws?role=offer&token={}", urlencode(TOKEN)), vec![]),
        ("/ws?role=offer".to_owned(), vec![auth]),
    ] {
        let (mut ws, r) = ws_upgrade(h.addr, &path, &headers);
        assert_eq!(r.status, 101, "{path}: {}", r.text());
        // role=offer: the service's offer comes at once.
        let mut frame = vec![0u8; 4096];
        let n = ws.read(&mut frame).unwrap();
        let text = String::from_utf8_lossy(&frame[..n]);
        assert!(text.contains("\"description\""), "{text}");
    }
    let whip = request(
        h.addr,
        "POST",
        "/whip",
        &[auth],
        Some("application/sdp"),
        block_on(async {
            let p = Peer::new("w");
            p.channel("echo", ChannelInit::default()).await;
            p.pc.create_offer().await.unwrap().sdp
        })
        .as_bytes(),
    );
    assert_eq!(whip.status, 201, "{}", whip.text());
    let location = whip.header("location").unwrap().to_owned();
    assert_eq!(
        request(h.addr, "DELETE", &location, &[], None, b"").status,
        401
    );
    assert_eq!(
        request(h.addr, "DELETE", &location, &[auth], None, b"").status,
        200
    );
    let lines = LINES.lock().unwrap();
    assert!(
        lines.iter().all(|l| !l.contains("tOk3n")),
        "the token was logged"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ------------------------------------------------------------------ oversized messages

/// A peer that ignores our a=max-message-size (here: its copy of our description was
/// edited to advertise 1 MiB while we accept 64 KiB) gets the channel that carried the
/// oversized message closed, with a log line; smaller messages before it arrive, and the
/// connection's other channel keeps working both ways.
#[test]
fn remote_message_over_our_max_message_size_closes_its_channel() {
    init_capture();
    block_on(async {
        let mut a = Peer::new("sender");
        let mut cfg = loopback_config("small");
        cfg.sctp.max_message_size = 64 * 1024;
        let mut b = Peer::with_config(cfg);
        let big = a.channel("big", ChannelInit::default()).await;
        let other = a.channel("other", ChannelInit::default()).await;
        connect_editing(
            &mut a,
            &mut b,
            |_| {},
            |answer| {
                assert!(answer.sdp.contains("a=max-message-size:65536"));
                answer.sdp = answer
                    .sdp
                    .replace("a=max-message-size:65536", "a=max-message-size:1048576");
            },
        )
        .await;
        opened(&mut a, "big").await;
        opened(&mut a, "other").await;
        assert_eq!(big.max_message_size(), Some(1 << 20), "A believes the edit");
        big.send(vec![7u8; 64 * 1024]).await.unwrap();
        big.send(vec![8u8; 200 * 1024]).await.unwrap();
        big.send(vec![9u8; 10]).await.unwrap();
        let first = message(&mut b, "big").await;
        assert_eq!(first.len(), 64 * 1024, "a message at the limit arrives");
        let next = b
            .expect("big closed", |e| match e {
                Event::ChannelMessage(c, m) if c.label() == "big" => Some(Err(m.len())),
                Event::ChannelClosed(c) if c.label() == "big" => Some(Ok(())),
                _ => None,
            })
            .await;
        assert_eq!(next, Ok(()), "no message after the oversized one");
        logged(&[
            "[small]",
            "big",
            "message of 204800 bytes exceeds our max-message-size (65536)",
        ]);
        a.expect("big closed at the sender", |e| {
            matches!(e, Event::ChannelClosed(c) if c.label() == "big").then_some(())
        })
        .await;
        send_expect(&other, &mut b, "still open").await;
        let b_other = b
            .expect("other at b", |e| match e {
                Event::DataChannel(c) if c.label() == "other" => Some(c.clone()),
                _ => None,
            })
            .await;
        send_expect(&b_other, &mut a, "back").await;
    });
}

// ------------------------------------------------------------------ per client address

const ADDRESS_1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const ADDRESS_2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const ADDRESS_3: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// The reply to a request on `s` (an open connection), read up to `Content-Length`.
fn reply_on(s: &mut TcpStream, request: &str) -> Reply {
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before the answer");
        raw.push(byte[0]);
    }
    let mut r = parse(&raw);
    let n: usize = r.header("content-length").unwrap().parse().unwrap();
    r.body = vec![0u8; n];
    s.read_exact(&mut r.body).unwrap();
    r
}

/// Connections still sending their first request count under
/// max_slow_connections_per_address, every connection under max_connections_per_address
/// (`429` JSON past each, logged); another address is not affected.
#[test]
fn connections_per_address_are_capped() {
    let (_rt, h) = start(|c| {
        c.max_slow_connections_per_address = 2;
        c.max_connections_per_address = 3;
    });
    let mut first = connect_from(h.addr, Some(ADDRESS_1));
    let _second = connect_from(h.addr, Some(ADDRESS_1));
    // Two connections without a request yet: a third from there is refused...
    let r = get_from(h.addr, Some(ADDRESS_1), "/api/sessions", &[]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        error_of(&r).contains("max_slow_connections_per_address = 2"),
        "{}",
        r.text()
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    logged(&["127.0.0.1", "429", "max_slow_connections_per_address (2)"]);
    // ...not one from another address.
    let r = get_from(h.addr, Some(ADDRESS_2), "/api/sessions", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    // Once the first has sent a request it is no longer slow: room for one more, and then
    // max_connections_per_address (3) is reached.
    let get = format!("GET /api/sessions HTTP/1.1\r\nHost: {}\r\n\r\n", h.addr);
    assert_eq!(reply_on(&mut first, &get).status, 200);
    let mut third = connect_from(h.addr, Some(ADDRESS_1));
    assert_eq!(reply_on(&mut third, &get).status, 200);
    let r = get_from(h.addr, Some(ADDRESS_1), "/api/sessions", &[]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        error_of(&r).contains("max_connections_per_address = 3"),
        "{}",
        r.text()
    );
    logged(&["127.0.0.1", "429", "max_connections_per_address (3)"]);
    drop(third);
    until_freed(200, || {
        get_from(h.addr, Some(ADDRESS_1), "/api/sessions", &[]).status
    });
}

/// The slowloris: 400 half-open connections (headers never finished) from one
/// address, with the default limits, do not stop a client at another address from loading
/// the page and connecting a session.
#[test]
fn slowloris_from_one_address_leaves_the_service_to_others() {
    let (_rt, h) = start(|_| {});
    let mut slow = Vec::new();
    for _ in 0..400 {
        let mut s = connect_from(h.addr, Some(ADDRESS_1));
        // A refused one may already be closed.
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
        slow.push(s);
    }
    let r = request_from(h.addr, Some(ADDRESS_2), "GET", "/", &[], None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    // The page (served gzipped: tests/page_encoding.rs checks the bytes).
    assert_eq!(r.header("content-encoding"), Some("gzip"), "the page");
    block_on(async {
        let (mut p, chans) = http_client_from(&h, Some(ADDRESS_2), &["echo"], &[]).await;
        opened(&mut p, "echo").await;
        send_expect(&chans[0], &mut p, "through").await;
        p.pc.close().await;
    });
    logged(&["127.0.0.1", "max_slow_connections_per_address (16)"]);
    drop(slow);
}

/// The dead offers: one offer that never connects, posted 64 times from one
/// address, takes at most max_sessions_per_address sessions (the rest get `429`), and a
/// client at another address still gets a session.
#[test]
fn dead_offers_from_one_address_leave_sessions_to_others() {
    let (_rt, h) = start(|_| {});
    let per = smolrtc::service::DEFAULT_MAX_SESSIONS_PER_ADDRESS;
    let offer = block_on(async {
        let mut p = Peer::new("dead");
        p.channel("echo", ChannelInit::default()).await;
        let offer = p.pc.create_offer().await.unwrap();
        p.pc.set_local_description(offer).await.unwrap();
        p.complete_description().await.to_json()
    });
    let mut statuses = Vec::new();
    for _ in 0..64 {
        let r = request_from(
            h.addr,
            Some(ADDRESS_1),
            "POST",
            "/api/offer",
            &[],
            Some("application/json"),
            offer.as_bytes(),
        );
        if r.status != 200 {
            assert_eq!(r.status, 429, "{}", r.text());
            assert!(
                error_of(&r).contains(&format!("max_sessions_per_address = {per}")),
                "{}",
                r.text()
            );
        }
        statuses.push(r.status);
    }
    block_on(async {
        let (mut p, chans) = http_client_from(&h, Some(ADDRESS_2), &["echo"], &[]).await;
        opened(&mut p, "echo").await;
        send_expect(&chans[0], &mut p, "mine").await;
        p.pc.close().await;
    });
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), per);
    logged(&["session refused", "127.0.0.1", "max_sessions_per_address"]);
}

/// The idle WebSockets: a WebSocket holds no session until its offer, so idle ones
/// (here more than max_sessions) leave the sessions to real clients; a candidate before
/// the offer gets an error. With `?role=offer` the session starts at connect and counts
/// under max_sessions_per_address.
#[test]
fn idle_websockets_take_no_session() {
    let (_rt, h) = start(|c| {
        c.max_sessions = 3;
        c.max_sessions_per_address = 1;
    });
    let mut idle = Vec::new();
    for _ in 0..4 {
        let (mut ws, r) = ws_upgrade(h.addr, "/ws", &[]);
        assert_eq!(r.status, 101, "{}", r.text());
        // Answered: the signaling task runs (and took no session).
        let c = serde_json::json!({"type": "candidate", "value": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMLineIndex": 0}});
        ws.write_all(&ws_text_frame(&c.to_string())).unwrap();
        let text = ws_read_text(&mut ws);
        assert!(
            text.contains("\"error\"") && text.contains("before candidates"),
            "{text}"
        );
        idle.push(ws);
    }
    assert_eq!(sessions(&h, &[]), 0);
    block_on(async {
        let (mut p, chans) = http_client(&h, &["echo"], &[]).await;
        opened(&mut p, "echo").await;
        send_expect(&chans[0], &mut p, "not blocked").await;
        // role=offer: a session at connect, counted for its address (which holds one).
        let (mut ws, r) = ws_upgrade_from(h.addr, Some(ADDRESS_2), "/ws?role=offer", &[]);
        assert_eq!(r.status, 101);
        assert!(ws_read_text(&mut ws).contains("\"description\""));
        let (mut ws2, r) = ws_upgrade_from(h.addr, Some(ADDRESS_2), "/ws?role=offer", &[]);
        assert_eq!(r.status, 101);
        let text = ws_read_text(&mut ws2);
        assert!(text.contains("max_sessions_per_address = 1"), "{text}");
        p.pc.close().await;
    });
}

/// A WebSocket that sends no offer is closed at connect_timeout, with an error message.
#[test]
fn websocket_without_an_offer_is_closed_at_connect_timeout() {
    let (_rt, h) = start(|c| c.connect_timeout = Duration::from_secs(1));
    let (mut ws, r) = ws_upgrade(h.addr, "/ws", &[]);
    assert_eq!(r.status, 101);
    let text = ws_read_text(&mut ws);
    assert!(
        text.contains("no offer within 1.0 s (connect_timeout)"),
        "{text}"
    );
    assert!(read_until_closed(&mut ws).is_ok(), "closed");
    logged(&["GET /ws", "no offer within 1.0 s"]);
}

/// max_websockets_per_address: past it an upgrade gets `429`; another address is not
/// affected.
#[test]
fn websockets_per_address_are_capped() {
    let (_rt, h) = start(|c| c.max_websockets_per_address = 2);
    let (_a, r) = ws_upgrade_from(h.addr, Some(ADDRESS_1), "/ws", &[]);
    assert_eq!(r.status, 101);
    let (_b, r) = ws_upgrade_from(h.addr, Some(ADDRESS_1), "/ws", &[]);
    assert_eq!(r.status, 101);
    let (_, r) = ws_upgrade_from(h.addr, Some(ADDRESS_1), "/ws", &[]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        error_of(&r).contains("max_websockets_per_address = 2"),
        "{}",
        r.text()
    );
    logged(&["GET /ws", "429", "max_websockets_per_address"]);
    let (_c, r) = ws_upgrade_from(h.addr, Some(ADDRESS_2), "/ws", &[]);
    assert_eq!(r.status, 101);
}

// ------------------------------------------------------------------ log floods

/// The log flood: 10,000 refused requests of four kinds (foreign Host, foreign
/// Origin, wrong Content-Type, no such path) and 1,000 bad WebSocket messages write at
/// most one warning per kind a second (each kind at least once).
#[test]
fn refused_requests_do_not_flood_the_log() {
    let (_rt, h) = start(|_| {});
    let started = Instant::now();
    let host = h.addr;
    let kinds = [
        "GET /api/sessions HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_string(),
        format!(
            "DELETE /whip/0123 HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\n\r\n"
        ),
        format!(
            "POST /api/offer HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\n\
             Content-Length: 0\r\n\r\n"
        ),
        format!("GET /nope HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    ];
    let mut answers = std::collections::HashMap::<u16, usize>::new();
    // 100 connections of 100 pipelined requests each.
    for i in 0..100 {
        let mut s = connect_from(h.addr, Some(ADDRESS_3));
        let mut batch: String = (0..99).map(|j| kinds[(i + j) % 4].as_str()).collect();
        // The last one closes the connection once answered.
        batch.push_str(&kinds[(i + 99) % 4].replacen("\r\n", "\r\nConnection: close\r\n", 1));
        s.write_all(batch.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw);
        for status in text.split("HTTP/1.1 ").skip(1) {
            *answers.entry(status[..3].parse().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(
        answers,
        std::collections::HashMap::from([(421, 2500), (403, 2500), (415, 2500), (404, 2500)]),
        "every request answered"
    );
    let (mut ws, r) = ws_upgrade_from(h.addr, Some(ADDRESS_3), "/ws", &[]);
    assert_eq!(r.status, 101);
    for _ in 0..1000 {
        ws.write_all(&ws_text_frame("{\"type\":\"bogus\"}"))
            .unwrap();
        assert!(ws_read_text(&mut ws).contains("unknown message type"));
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    let lines: Vec<String> = LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("WARN") && l.contains("127.0.0.3"))
        .cloned()
        .collect();
    for what in ["421", "403", "415", "404", "unknown message type"] {
        let n = lines.iter().filter(|l| l.contains(what)).count();
        assert!(
            (1..=seconds).contains(&n),
            "{n} lines with {what:?} in {seconds} s: {lines:#?}"
        );
    }
    assert!(lines.len() <= 5 * seconds, "{} lines", lines.len());
}

// ------------------------------------------------------------------ DCEP label and protocol

/// A peer opening channels whose label or protocol passes the service's caps (1 KiB each by
/// default; the wire allows 64 KiB, kept for the channel's life) gets those channels
/// refused — their streams reset, one log line each — while its session and its other
/// channel go on. Locally, `create_data_channel` refuses what passes our own caps.
#[test]
fn dcep_labels_and_protocols_past_the_caps_are_refused() {
    let (_rt, h) = start(|_| {});
    block_on(async {
        let long = "l".repeat(2048);
        let mut cfg = loopback_config("client");
        cfg.max_channel_label = 4096;
        cfg.max_channel_protocol = 4096;
        let mut p = Peer::with_config(cfg);
        let echo = p.channel("echo", ChannelInit::default()).await;
        let by_label = p.channel(&long, ChannelInit::default()).await;
        let by_protocol = p
            .channel(
                "echo",
                ChannelInit {
                    protocol: long.clone(),
                    ..Default::default()
                },
            )
            .await;
        let answer = p.offer_to_service(h.addr).await;
        p.pc.set_remote_description(answer).await.unwrap();
        opened(&mut p, "echo").await;
        for ch in [&by_label, &by_protocol] {
            p.expect("refused channel closed", |e| match e {
                Event::ChannelClosed(c) if c == ch => Some(()),
                Event::ChannelOpen(c) if c == ch => panic!(
                    "opened: label of {} bytes, protocol of {}",
                    c.label().len(),
                    c.protocol().len()
                ),
                _ => None,
            })
            .await;
        }
        logged(&[
            "DCEP OPEN on stream",
            "refused: label of 2048 bytes exceeds max_channel_label (1024)",
        ]);
        logged(&[
            "DCEP OPEN on stream",
            "refused: protocol of 2048 bytes exceeds max_channel_protocol (1024)",
        ]);
        send_expect(&echo, &mut p, "still here").await;

        // Locally: the default caps refuse the same label and protocol.
        let plain = Peer::new("plain");
        let e = plain
            .pc
            .create_data_channel(&long, ChannelInit::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("label of 2048 bytes exceeds max_channel_label (1024)"),
            "{e}"
        );
        let e = plain
            .pc
            .create_data_channel(
                "x",
                ChannelInit {
                    protocol: long.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_channel_protocol (1024)"), "{e}");
        p.pc.close().await;
    });
}
