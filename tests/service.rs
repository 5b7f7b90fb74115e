//! `smolrtc serve` against smolrtc client peers over real sockets: the three signaling paths,
//! the built-in handlers, bad input, and sessions freed when they end.

mod common;

use common::http::{request, Reply};
use common::*;
use smolrtc::service::{Service, ServiceConfig, ServiceHandle};
use smolrtc::{
    ChannelInit, ConnectionState, DataChannel, Description, Event, Message, Runtime, SdpType,
};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

fn start(max_sessions: usize) -> (Runtime, ServiceHandle) {
    start_with(max_sessions, |_| {})
}

fn start_with(
    max_sessions: usize,
    tweak: impl FnOnce(&mut ServiceConfig),
) -> (Runtime, ServiceHandle) {
    common::service::start(|c| {
        // These tests run rawrtc's flow too.
        c.rawrtc_flow = true;
        c.max_sessions = max_sessions;
        tweak(c);
    })
}

fn sessions(h: &ServiceHandle) -> Vec<serde_json::Value> {
    let r = request(h.addr, "GET", "/api/sessions", None, b"");
    assert_eq!(r.status, 200);
    r.json()["sessions"].as_array().unwrap().clone()
}

fn wait_freed(h: &ServiceHandle) {
    let until = Instant::now() + Duration::from_secs(15);
    while !sessions(h).is_empty() {
        assert!(
            Instant::now() < until,
            "session not freed: {:?}",
            sessions(h)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `init_log`, a service with `max_sessions`, `test` run against it, then every session
/// freed.
fn serve(max_sessions: usize, test: impl AsyncFnOnce(&ServiceHandle)) {
    init_log();
    let (_rt, h) = start(max_sessions);
    block_on(test(&h));
    wait_freed(&h);
}

/// A client with rawrtc's cat-noises and the channels named in `labels`, offering through
/// `POST /api/offer` (complete SDP both ways).
async fn http_client(h: &ServiceHandle, labels: &[&str]) -> (Peer, Vec<DataChannel>) {
    let mut p = Peer::new("client");
    p.channel("cat-noises", ChannelInit::negotiated(0)).await;
    let mut chans = Vec::new();
    for l in labels {
        chans.push(
            p.pc.create_data_channel(l, ChannelInit::default())
                .await
                .unwrap(),
        );
    }
    let answer = p.offer_to_service(h.addr).await;
    assert!(
        answer.sdp.contains("a=candidate:"),
        "non-trickle answer carries candidates"
    );
    p.pc.set_remote_description(answer).await.unwrap();
    (p, chans)
}

/// Reads one chargen answer on `p`'s `chargen` channel: messages of at most
/// `CHARGEN_MESSAGE` bytes, byte i being `chargen_byte(i)`, then "end". Returns the bytes.
async fn receive_chargen(p: &mut Peer) -> u64 {
    use smolrtc::service::apps::{chargen_byte, CHARGEN_MESSAGE};
    let mut got = 0u64;
    loop {
        match message(p, "chargen").await {
            Message::Binary(b) => {
                assert!(b.len() <= CHARGEN_MESSAGE);
                for (k, byte) in b.iter().enumerate() {
                    let i = got + k as u64;
                    assert_eq!(*byte, chargen_byte(i), "byte {i}");
                }
                got += b.len() as u64;
            }
            Message::Text(t) => {
                assert_eq!(t, "end");
                return got;
            }
        }
    }
}

#[test]
fn http_offer_runs_the_builtin_handlers_and_frees_the_session() {
    serve(8, async |h| {
        let (mut p, chans) = http_client(h, &["echo", "discard", "chargen", "mystery"]).await;
        let (echo, discard, chargen, mystery) = (&chans[0], &chans[1], &chans[2], &chans[3]);
        opened(&mut p, "echo").await;
        // rawrtc's flow: cat-noises (id 0) brings 8192 bytes; the service opens lion-noises.
        assert_eq!(message(&mut p, "cat-noises").await.len(), 8192);
        let lion = p
            .expect("lion-noises", |e| match e {
                Event::DataChannel(c) if c.label() == "lion-noises" => Some(c.clone()),
                _ => None,
            })
            .await;
        assert_eq!(lion.state(), smolrtc::ChannelState::Open);
        assert_eq!(message(&mut p, "lion-noises").await.len(), 8192);
        // A label with no handler is refused: the service closes it.
        p.expect("mystery closed", |e| {
            matches!(e, Event::ChannelClosed(c) if c.label() == "mystery").then_some(())
        })
        .await;
        assert!(mystery.send("hello?").await.is_err());

        // echo: text stays text, binary stays binary.
        send_expect(echo, &mut p, "hello").await;
        send_expect(echo, &mut p, vec![1u8, 2, 3]).await;

        // discard counts what it got.
        opened(&mut p, "discard").await;
        for _ in 0..10 {
            discard.send(vec![0u8; 1000]).await.unwrap();
        }
        discard.send("abc").await.unwrap();
        discard.send("stats").await.unwrap();
        let stats = message(&mut p, "discard").await;
        let Message::Text(stats) = stats else {
            panic!("stats is text")
        };
        let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(v, serde_json::json!({"bytes": 10003, "messages": 11}));

        // chargen: 1 MiB in 16 KiB messages, byte i = i % 251, then "end".
        opened(&mut p, "chargen").await;
        chargen.send("1048576").await.unwrap();
        assert_eq!(receive_chargen(&mut p).await, 1 << 20);
        chargen.send("not a number").await.unwrap();
        let Message::Text(err) = message(&mut p, "chargen").await else {
            panic!()
        };
        assert!(err.starts_with("error:"), "{err}");

        let list = sessions(h);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["state"], "connected");
        assert_eq!(list[0]["via"], "http");
        p.pc.close().await;
    });
}

#[test]
fn whip_answers_takes_trickled_candidates_and_deletes() {
    serve(8, async |h| {
        let mut p = Peer::new("whip-client");
        let echo = p.channel("echo", ChannelInit::default()).await;
        let (offer, r) = p.whip_to_service(h.addr, |_| {}).await;
        // Trickle: the offer went out before any candidate.
        assert!(!offer.sdp.contains("a=candidate"));
        assert_eq!(r.header("content-type"), Some("application/sdp"));
        let location = r.header("location").expect("Location").to_owned();
        assert!(location.starts_with("/whip/"));
        // Our candidates, then end-of-candidates, in one PATCH.
        let cands = p.local_candidates().await;
        let offer_sdp = smolrtc::sdp::parse(&offer.sdp).unwrap();
        let frag = smolrtc::sdp::write_candidate_fragment(
            &offer_sdp.ice_ufrag,
            &offer_sdp.ice_pwd,
            "0",
            &cands,
            true,
        );
        let r = request(
            h.addr,
            "PATCH",
            &location,
            Some("application/trickle-ice-sdpfrag"),
            frag.as_bytes(),
        );
        assert_eq!(r.status, 204, "{}", r.text());
        opened(&mut p, "echo").await;
        send_expect(&echo, &mut p, "via whip").await;
        assert_eq!(sessions(h)[0]["via"], "whip");
        // DELETE ends the session; the client hears the close.
        let r = request(h.addr, "DELETE", &location, None, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        p.expect("closed", |e| {
            matches!(e, Event::ConnectionState(ConnectionState::Closed)).then_some(())
        })
        .await;
        let r = request(
            h.addr,
            "PATCH",
            &location,
            Some("application/trickle-ice-sdpfrag"),
            frag.as_bytes(),
        );
        assert_eq!(r.status, 404);
    });
}

#[test]
fn websocket_signaling_with_the_service_offering() {
    use async_tungstenite::tungstenite::Message as Ws;
    use futures_lite::StreamExt;
    serve(8, async |h| {
        let tcp = async_io::Async::<std::net::TcpStream>::connect(h.addr)
            .await
            .unwrap();
        let url = format!("ws://{}/ws?role=offer", h.addr);
        let (mut ws, _) = async_tungstenite::client_async(url, tcp).await.unwrap();
        let mut p = Peer::new("ws-client");
        let cat = p.channel("cat-noises", ChannelInit::negotiated(0)).await;
        let mut answered = false;
        let mut remote_done = false;
        let mut local_done = false;
        let deadline = Instant::now() + TIMEOUT;
        while !(answered && remote_done && local_done) {
            assert!(Instant::now() < deadline, "signaling did not finish");
            // Server messages first, then our trickled candidates.
            let next = futures_lite::future::or(async { Some(ws.next().await) }, async {
                async_io::Timer::after(Duration::from_millis(20)).await;
                None
            })
            .await;
            if let Some(Some(Ok(Ws::Text(t)))) = next {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                match v["type"].as_str().unwrap() {
                    "description" => {
                        let d = Description::from_json(&v["value"].to_string()).unwrap();
                        assert_eq!(d.kind, SdpType::Offer);
                        p.pc.set_remote_description(d).await.unwrap();
                        let answer = p.pc.create_answer().await.unwrap();
                        p.pc.set_local_description(answer.clone()).await.unwrap();
                        let msg = serde_json::json!({"type": "description", "value": {"type": "answer", "sdp": answer.sdp}});
                        ws.send(Ws::text(msg.to_string())).await.unwrap();
                        answered = true;
                    }
                    "candidate" if v["value"].is_null() => remote_done = true,
                    "candidate" => {
                        let c =
                            smolrtc::IceCandidateInit::from_json(&v["value"].to_string()).unwrap();
                        p.pc.add_ice_candidate(c).await.unwrap();
                    }
                    other => panic!("unexpected {other}: {v}"),
                }
            }
            while answered && !local_done {
                let Some(ev) = p.events.try_next() else { break };
                if let Event::IceCandidate(c) = ev {
                    local_done = c.is_none();
                    let value = c
                        .map(|c| serde_json::to_value(c).unwrap())
                        .unwrap_or(serde_json::Value::Null);
                    let msg = serde_json::json!({"type": "candidate", "value": value});
                    ws.send(Ws::text(msg.to_string())).await.unwrap();
                }
            }
        }
        // A bad message gets an error back, and the session carries on.
        ws.send(Ws::text("{\"type\":\"bogus\"}")).await.unwrap();
        let Some(Ok(Ws::Text(t))) = ws.next().await else {
            panic!("error reply")
        };
        assert!(t.as_str().contains("\"error\""), "{t}");
        // The service offered, so it opens bear-noises (16384 bytes); cat-noises brings 8192.
        opened(&mut p, "cat-noises").await;
        assert_eq!(message(&mut p, "cat-noises").await.len(), 8192);
        assert_eq!(message(&mut p, "bear-noises").await.len(), 16384);
        cat.send("meow").await.unwrap();
        assert_eq!(sessions(h)[0]["via"], "ws");
        let _ = ws.close(None).await;
        // Closing the WebSocket after connecting leaves the session up.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(sessions(h).len(), 1);
        p.pc.close().await;
    });
}

#[test]
fn bad_requests_get_clear_errors_and_leave_sessions_alone() {
    serve(1, async |h| {
        let (mut p, chans) = http_client(h, &["echo"]).await;
        opened(&mut p, "echo").await;
        let post =
            |path: &str, ct: Option<&str>, body: &[u8]| request(h.addr, "POST", path, ct, body);
        let cases: Vec<(Reply, u16, &str)> = vec![
            (post("/api/offer", Some("application/json"), b"not json"), 400, "not JSON"),
            (post("/api/offer", Some("application/json"), br#"{"type":"answer","sdp":"v=0"}"#), 400, "expected an offer"),
            (post("/api/offer", Some("application/json"), br#"{"type":"offer","sdp":"v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nbroken line\r\n"}"#), 400, "line 3"),
            (post("/api/offer", Some("application/json"), br#"{"sdp":"v=0"}"#), 400, "type"),
            (post("/api/offer", Some("application/json"), &vec![b' '; 70 * 1024]), 413, "max_body"),
            (post("/whip", Some("text/plain"), b"v=0"), 415, "application/sdp"),
            (request(h.addr, "PATCH", "/whip/0123456789abcdef", Some("application/trickle-ice-sdpfrag"), b"a=end-of-candidates\r\n"), 404, "unknown session"),
            (request(h.addr, "DELETE", "/whip/nope", None, b""), 404, "unknown session"),
            (request(h.addr, "GET", "/nope", None, b""), 404, "no such resource"),
            (request(h.addr, "PUT", "/api/offer", None, b""), 405, "not allowed"),
            (request(h.addr, "GET", "/ws", None, b""), 426, "WebSocket"),
        ];
        for (i, (r, status, words)) in cases.iter().enumerate() {
            assert_eq!(r.status, *status, "case {i}: {}", r.text());
            let err = r.json()["error"].as_str().unwrap_or_default().to_owned();
            assert!(
                err.contains(words),
                "case {i}: {err:?} should mention {words:?}"
            );
        }
        // A valid offer beyond max_sessions is refused with 503...
        let mut extra = Peer::new("extra");
        extra
            .pc
            .create_data_channel("echo", ChannelInit::default())
            .await
            .unwrap();
        let offer = extra.pc.create_offer().await.unwrap();
        extra.pc.set_local_description(offer).await.unwrap();
        let offer = extra.complete_description().await;
        let r = post(
            "/api/offer",
            Some("application/json"),
            offer.to_json().as_bytes(),
        );
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.json()["error"].as_str().unwrap().contains("max_sessions"));
        // ...and the one session still works.
        send_expect(&chans[0], &mut p, "still fine").await;
        assert_eq!(sessions(h).len(), 1);
        // The page's index is served.
        let r = request(h.addr, "GET", "/", None, b"");
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        p.pc.close().await;
    });
}

/// A browser that hides its addresses (mDNS names the service cannot use) is reached as a
/// peer-reflexive candidate, learned from its own connectivity checks.
#[test]
fn client_whose_candidates_never_arrive_is_reached_as_peer_reflexive() {
    serve(8, async |h| {
        let mut p = Peer::new("hidden-client");
        let echo = p.channel("echo", ChannelInit::default()).await;
        // An mDNS-style candidate the service cannot resolve, and nothing else.
        p.whip_to_service(h.addr, |sdp| {
            sdp.push_str("a=candidate:1 1 udp 2122260223 0f6d6a2e-1b39-4d5b-9b3a-6c4a1c1e1f00.local 50000 typ host\r\n");
        })
        .await;
        opened(&mut p, "echo").await;
        send_expect(&echo, &mut p, "found you").await;
        p.pc.close().await;
    });
}

/// A peer that vanishes without a word (process killed) is noticed through ICE consent
/// checks going unanswered, and its session is freed.
#[test]
fn vanished_peer_is_detected_and_its_session_freed() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    init_log();
    let (_rt, h) = start_with(8, |c| {
        c.peer.ice.disconnected_timeout = Duration::from_secs(1);
        c.peer.ice.failed_timeout = Duration::from_secs(3);
        c.peer.ice.keepalive_interval = Duration::from_millis(500);
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_smolrtc"))
        .args(["peer", "--offer", "--ice-address", "127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut offer = String::new();
    out.read_line(&mut offer).unwrap();
    let r = request(
        h.addr,
        "POST",
        "/api/offer",
        Some("application/json"),
        offer.trim().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", r.text()).unwrap();
    let until = Instant::now() + TIMEOUT;
    while sessions(&h)
        .first()
        .map(|s| s["state"] != "connected")
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < until,
            "never connected: {:?}",
            sessions(&h)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL: no SCTP ABORT, no close_notify
    let _ = child.wait();
    let killed = Instant::now();
    wait_freed(&h);
    assert!(
        killed.elapsed() < Duration::from_secs(12),
        "{:?}",
        killed.elapsed()
    );
}

#[test]
fn a_registered_handler_answers_its_label() {
    init_log();
    let rt = Runtime::new().unwrap();
    let mut config = ServiceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    config.peer.ice.hosts.addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let mut service = Service::new(config);
    service.handle(
        "shout",
        |ch: DataChannel, events: smolrtc::service::apps::ChannelEvents| async move {
            while let Ok(smolrtc::service::apps::ChannelEvent::Message(Message::Text(t))) =
                events.recv().await
            {
                let _ = ch.send(t.to_uppercase()).await;
            }
        },
    );
    let h = service.start(&rt).unwrap();
    block_on(async {
        let (mut p, chans) = http_client(&h, &["shout"]).await;
        opened(&mut p, "shout").await;
        chans[0].send("quiet please").await.unwrap();
        assert_eq!(
            message(&mut p, "shout").await,
            Message::Text("QUIET PLEASE".into())
        );
        p.pc.close().await;
    });
    wait_freed(&h);
}

/// Many clients at once, all on the one smolrtc thread: each gets its own session and its
/// own answers, and every session is freed when its client leaves.
#[test]
fn many_clients_at_once_each_get_their_own_session() {
    init_log();
    let (_rt, h) = start(16);
    const CLIENTS: usize = 6;
    block_on(async {
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(http_client(&h, &["echo"]).await);
        }
        assert_eq!(sessions(&h).len(), CLIENTS);
        echo_each_and_close(&h, &mut clients).await;
    });
    wait_freed(&h);
}

/// Each client sends `client <i>` on its `echo` channel and gets its own text back; then
/// every client's session is listed as connected, and the clients close.
async fn echo_each_and_close(h: &ServiceHandle, clients: &mut [(Peer, Vec<DataChannel>)]) {
    for (i, (p, chans)) in clients.iter_mut().enumerate() {
        opened(p, "echo").await;
        chans[0].send(format!("client {i}")).await.unwrap();
    }
    for (i, (p, _)) in clients.iter_mut().enumerate() {
        assert_eq!(
            message(p, "echo").await,
            Message::Text(format!("client {i}"))
        );
    }
    let list = sessions(h);
    assert_eq!(list.len(), clients.len());
    assert!(list.iter().all(|s| s["state"] == "connected"), "{list:?}");
    for (p, _) in clients.iter() {
        p.pc.close().await;
    }
}

/// `single_port`: every session's ICE on one UDP port, demultiplexed by ufrag and remote
/// address; concurrent clients each reach their own session, and the stray datagrams of a
/// stranger on that port go nowhere.
#[test]
fn single_port_serves_many_clients() {
    init_log();
    let rt = Runtime::new().unwrap();
    let mut config = ServiceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        single_port: Some(0),
        ..Default::default()
    };
    config.peer.ice.hosts.addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let h = Service::new(config).start(&rt).unwrap();
    const CLIENTS: usize = 5;
    block_on(async {
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(http_client(&h, &["echo"]).await);
        }
        let mut ports = std::collections::HashSet::new();
        for (p, _) in clients.iter_mut() {
            let remote = p
                .expect("selected pair", |e| match e {
                    Event::SelectedCandidatePair { remote, .. } => Some(remote.clone()),
                    _ => None,
                })
                .await;
            // "<foundation> 1 udp <prio> <ip> <port> typ host"
            let port: u16 = remote.split_whitespace().nth(5).unwrap().parse().unwrap();
            ports.insert(port);
        }
        assert_eq!(ports.len(), 1, "sessions on several ports: {ports:?}");
        let port = *ports.iter().next().unwrap();
        // A stranger's STUN and DTLS-looking datagrams on the shared port are dropped.
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        for first in [0u8, 22, 0x80] {
            stranger.send_to(&[first; 64], ("127.0.0.1", port)).unwrap();
        }
        echo_each_and_close(&h, &mut clients).await;
    });
    wait_freed(&h);
}

/// chargen paces itself by its buffered amount (4 MiB high-water mark) without reading its
/// channel's messages meanwhile: a request sent while a transfer waits is kept and served
/// after it (it used to be read and dropped while chargen waited for its low-water event).
#[test]
fn chargen_keeps_requests_sent_during_a_paced_transfer() {
    serve(8, async |h| {
        let (mut p, chans) = http_client(h, &["chargen"]).await;
        let chargen = &chans[0];
        opened(&mut p, "chargen").await;
        let first = 2 * smolrtc::service::apps::CHARGEN_HIGH_WATER as u64;
        chargen.send(first.to_string()).await.unwrap();
        chargen.send("1000").await.unwrap();
        for total in [first, 1000] {
            assert_eq!(receive_chargen(&mut p).await, total);
        }
        p.pc.close().await;
    });
}
