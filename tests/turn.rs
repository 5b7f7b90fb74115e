//! ICE across real NATs with a real coturn (Debian's), in network namespaces these tests
//! build (tests/common/netns.rs): peer A behind NAT A, peer B behind NAT B, coturn and an
//! un-NATed host on the "public" segment between them. Nothing leaves those namespaces.
//!
//! Needs root for `ip netns`; without it each test prints why and returns.

mod common;

use common::netns::{in_ns, Topology};
use common::*;
use smolrtc::{ChannelInit, ConnectionState, Event, IceServer, Message, Runtime};
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn server(url: &str) -> IceServer {
    IceServer::parse(url).unwrap()
}

/// B answers A's complete offer; A applies the complete answer, returned.
async fn answer(a: &mut Peer, b: &mut Peer) -> smolrtc::Description {
    let offer = a.pc.local_description().await.unwrap();
    b.pc.set_remote_description(offer).await.unwrap();
    let answer = b.pc.create_answer().await.unwrap();
    b.pc.set_local_description(answer).await.unwrap();
    let answer = b.complete_description().await;
    a.pc.set_remote_description(answer.clone()).await.unwrap();
    answer
}

/// Every local candidate until end-of-candidates, and how long gathering took.
async fn gathered(p: &mut Peer) -> (Vec<String>, Duration) {
    let start = Instant::now();
    let offer = p.pc.create_offer().await.unwrap();
    p.pc.set_local_description(offer).await.unwrap();
    let out = p.local_candidates().await;
    (out, start.elapsed())
}

/// `(type, ip, port)` of a `candidate:` line.
fn parts(line: &str) -> (String, IpAddr, u16) {
    let f: Vec<&str> = line.split_whitespace().collect();
    let typ = f.iter().position(|w| *w == "typ").expect("typ");
    (
        f[typ + 1].to_owned(),
        f[4].parse().unwrap(),
        f[5].parse().unwrap(),
    )
}

fn of_type(cands: &[String], typ: &str) -> Vec<(IpAddr, u16)> {
    cands
        .iter()
        .map(|c| parts(c))
        .filter(|(t, _, _)| t == typ)
        .map(|(_, ip, port)| (ip, port))
        .collect()
}

/// Offer from `a` (its channel `label` made first), answer from `b`, complete SDP.
async fn connect_with_channel(a: &mut Peer, b: &mut Peer, label: &str) -> smolrtc::DataChannel {
    let ch = a.channel(label, ChannelInit::default()).await;
    connect(a, b).await;
    ch
}

async fn selected(p: &mut Peer) -> (String, String) {
    p.expect("selected pair", |e| match e {
        Event::SelectedCandidatePair { local, remote } => Some((local.clone(), remote.clone())),
        _ => None,
    })
    .await
}

/// Sends `total` bytes in 16 KiB messages from `ch` and checks every byte at `rx`.
async fn transfer(ch: &smolrtc::DataChannel, rx: &mut Peer, label: &str, total: usize) {
    let chunk = 16 * 1024;
    let pattern = |i: usize| (i % 251) as u8;
    let mut sent = 0;
    let mut got = 0;
    let send = async {
        while sent < total {
            let n = chunk.min(total - sent);
            let msg: Vec<u8> = (sent..sent + n).map(pattern).collect();
            ch.send(msg).await.unwrap();
            sent += n;
        }
    };
    let recv = async {
        while got < total {
            match message(rx, label).await {
                Message::Binary(b) => {
                    for (k, byte) in b.iter().enumerate() {
                        assert_eq!(*byte, pattern(got + k), "byte {}", got + k);
                    }
                    got += b.len();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    futures_lite::future::zip(send, recv).await;
}

/// STUN through NAT: the server-reflexive candidate is the NAT's public address, and two
/// cone NATs are traversed (host candidates cannot reach each other).
#[test]
fn srflx_candidates_are_the_nats_and_two_nats_are_traversed() {
    let Some((topo, coturn)) = with_coturn() else {
        return;
    };
    let stun = coturn.stun();
    let (_ra, mut a) = peer_in(topo.host_a(), "A", |c| c.ice.servers = vec![stun.clone()]);
    let (_rb, mut b) = peer_in(topo.host_b(), "B", |c| c.ice.servers = vec![stun.clone()]);
    block_on(async {
        let ch = a.channel("nat", ChannelInit::default()).await;
        let (cands, took) = gathered(&mut a).await;
        let srflx = of_type(&cands, "srflx");
        assert_eq!(srflx.len(), 1, "{cands:?}");
        assert_eq!(srflx[0].0, topo.nat_a_public(), "{cands:?}");
        assert_eq!(of_type(&cands, "host")[0].0, topo.host_a_ip());
        assert!(took < Duration::from_secs(2), "gathering took {took:?}");
        let answer = answer(&mut a, &mut b).await;
        let b_srflx: Vec<_> = answer
            .sdp
            .lines()
            .filter(|l| l.contains("typ srflx"))
            .map(|l| parts(l.trim_start_matches("a=candidate:")).1)
            .collect();
        assert_eq!(b_srflx, vec![topo.nat_b_public()], "{}", answer.sdp);
        let (local, remote) = selected(&mut a).await;
        // A reaches B at NAT B's public address; nothing went through coturn.
        assert_eq!(
            parts(&remote).1,
            topo.nat_b_public(),
            "{local} <-> {remote}"
        );
        assert_ne!(parts(&local).0, "relay");
        opened(&mut a, "nat").await;
        transfer(&ch, &mut b, "nat", 1 << 20).await;
        a.pc.close().await;
    });
    assert_eq!(coturn.log_count("ALLOCATE processed, success"), 0);
}

/// `iceTransportPolicy: relay`: only relay candidates, the pair is relay on A's side, every
/// byte goes through coturn (allocation, permission, channel binding seen in its log), and
/// closing deallocates.
#[test]
fn relay_policy_goes_through_coturn() {
    let Some((topo, coturn)) = with_coturn() else {
        return;
    };
    let turn = coturn.turn("udp");
    let (_ra, mut a) = peer_in(topo.host_a(), "A", relay_only(vec![turn.clone()]));
    let stun = coturn.stun();
    let (_rb, mut b) = peer_in(topo.host_b(), "B", |c| c.ice.servers = vec![stun]);
    block_on(async {
        let ch = connect_with_channel(&mut a, &mut b, "relayed").await;
        let offer = a.pc.local_description().await.unwrap();
        let cands: Vec<&str> = offer
            .sdp
            .lines()
            .filter(|l| l.starts_with("a=candidate"))
            .collect();
        assert!(!cands.is_empty());
        for c in &cands {
            assert!(c.contains("typ relay"), "non-relay candidate offered: {c}");
            // No local or public address of A is revealed.
            assert!(!c.contains("10.0.1.2") && !c.contains("192.0.2.1 "), "{c}");
        }
        let (local, remote) = selected(&mut a).await;
        assert_eq!(parts(&local).0, "relay", "{local} <-> {remote}");
        assert_eq!(parts(&local).1, coturn.ip());
        let (_, b_remote) = selected(&mut b).await;
        assert_eq!(parts(&b_remote).1, coturn.ip(), "B must see A at coturn");
        opened(&mut a, "relayed").await;
        transfer(&ch, &mut b, "relayed", 1 << 20).await;
        a.pc.close().await;
    });
    assert!(
        coturn.log_count("ALLOCATE processed, success") >= 1,
        "{}",
        coturn.log_tail(30)
    );
    assert!(coturn.log_count("CREATE_PERMISSION processed, success") >= 1);
    assert!(coturn.log_count("CHANNEL_BIND processed, success") >= 1);
    // The Refresh with lifetime 0 (deallocation) reached coturn.
    assert!(
        coturn.wait_for_log("REFRESH processed, success", Duration::from_secs(5)),
        "no deallocation: {}",
        coturn.log_tail(30)
    );
}

/// UDP to coturn is dropped: the UDP server times out (gathering goes on, bounded) and
/// TURN over TCP carries the connection.
#[test]
fn turn_over_tcp_when_udp_is_blocked() {
    let Some((topo, coturn)) = with_coturn() else {
        return;
    };
    topo.block_udp_to_turn(topo.host_a());
    let servers = vec![coturn.turn("udp"), coturn.turn("tcp")];
    let (_ra, mut a) = peer_in(topo.host_a(), "A", |c| {
        c.ice.servers = servers.clone();
        c.ice.transport_policy = smolrtc::TransportPolicy::Relay;
        c.ice.gather_timeout = Duration::from_secs(2);
    });
    let turn = coturn.turn("udp");
    let (_rb, mut b) = peer_in(topo.host_b(), "B", |c| c.ice.servers = vec![turn]);
    block_on(async {
        let ch = a.channel("tcp", ChannelInit::default()).await;
        let (cands, took) = gathered(&mut a).await;
        assert_eq!(of_type(&cands, "relay").len(), 1, "{cands:?}");
        // Bounded by the 2 s gather timeout that the UDP server ran into.
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
            "gathering took {took:?}"
        );
        answer(&mut a, &mut b).await;
        let (local, _) = selected(&mut a).await;
        assert_eq!(parts(&local).0, "relay");
        opened(&mut a, "tcp").await;
        transfer(&ch, &mut b, "tcp", 1 << 20).await;
        a.pc.close().await;
    });
    assert!(coturn.log().contains("TCP"), "{}", coturn.log_tail(30));
}

/// `turns:` (TLS to coturn's 5349), the certificate checked against the CA file given.
#[test]
fn turn_over_tls() {
    let Some((topo, coturn)) = with_coturn() else {
        return;
    };
    let turns = server(&format!(
        "turns:{}:{}@{}",
        coturn.user(),
        coturn.password(),
        coturn.tls_addr()
    ));
    let roots = coturn.cert_path();
    let (_ra, mut a) = peer_in(topo.host_a(), "A", |c| {
        c.ice.servers = vec![turns.clone()];
        c.ice.transport_policy = smolrtc::TransportPolicy::Relay;
        c.ice.tls_roots = roots.clone();
    });
    let (_rb, mut b) = peer_in(topo.host_b(), "B", |c| {
        c.ice.servers = vec![turns.clone()];
        c.ice.tls_roots = roots.clone();
    });
    // Without trusting coturn's certificate there is no relay candidate.
    let (_rc, mut c) = peer_in(topo.host_b(), "C", relay_only(vec![turns.clone()]));
    block_on(async {
        let (untrusted, _) = gathered(&mut c).await;
        assert!(untrusted.is_empty(), "{untrusted:?}");
        let ch = connect_with_channel(&mut a, &mut b, "tls").await;
        let (local, _) = selected(&mut a).await;
        assert_eq!(parts(&local).0, "relay");
        opened(&mut a, "tls").await;
        transfer(&ch, &mut b, "tls", 256 << 10).await;
        a.pc.close().await;
    });
}

/// Servers that never answer (an address nobody has) are given up after the gather
/// timeout, with what the others gave.
#[test]
fn unreachable_servers_do_not_stall_gathering() {
    let Some((topo, coturn)) = with_coturn() else {
        return;
    };
    let servers = vec![
        server("turn:u:p@192.0.2.99:3478?transport=udp"),
        server("turn:u:p@192.0.2.99:3478?transport=tcp"),
        server("stun:192.0.2.99"),
        coturn.stun(),
    ];
    let (_ra, mut a) = peer_in(topo.host_a(), "A", |c| {
        c.ice.servers = servers.clone();
        c.ice.gather_timeout = Duration::from_millis(1500);
    });
    block_on(async {
        let (cands, took) = gathered(&mut a).await;
        assert!(took < Duration::from_secs(3), "gathering took {took:?}");
        assert_eq!(of_type(&cands, "host").len(), 1, "{cands:?}");
        assert_eq!(
            of_type(&cands, "srflx"),
            vec![(topo.nat_a_public(), of_type(&cands, "srflx")[0].1)]
        );
        assert!(of_type(&cands, "relay").is_empty());
    });
}

/// Wrong TURN credentials: refused by coturn, logged, gathering completes at once.
#[test]
fn wrong_turn_credentials_fail_fast() {
    let Some((topo, coturn)) = with_coturn() else {
        return;
    };
    let bad = server(&format!(
        "turn:{}:wrong@{}",
        coturn.user(),
        coturn.udp_addr()
    ));
    let (_ra, mut a) = peer_in(topo.host_a(), "A", |c| {
        c.ice.servers = vec![bad];
        c.ice.gather_timeout = Duration::from_secs(10);
    });
    block_on(async {
        let (cands, took) = gathered(&mut a).await;
        assert!(of_type(&cands, "relay").is_empty(), "{cands:?}");
        assert!(took < Duration::from_secs(3), "gathering took {took:?}");
    });
}

/// An ICE restart through relays: new credentials, new checks, the channel stays open.
#[test]
fn ice_restart_through_turn_keeps_the_channel() {
    let Some((topo, coturn)) = with_coturn() else {
        return;
    };
    let turn = coturn.turn("udp");
    let (_ra, mut a) = peer_in(topo.host_a(), "A", relay_only(vec![turn.clone()]));
    let (_rb, mut b) = peer_in(topo.host_b(), "B", |c| c.ice.servers = vec![turn.clone()]);
    block_on(async {
        let ch = connect_with_channel(&mut a, &mut b, "restart").await;
        selected(&mut a).await;
        opened(&mut a, "restart").await;
        ch.send("before").await.unwrap();
        a.pc.restart_ice().await.unwrap();
        // Candidates stay; the descriptions carry them with the new credentials.
        let offer = a.pc.create_offer().await.unwrap();
        a.pc.set_local_description(offer.clone()).await.unwrap();
        b.pc.set_remote_description(offer).await.unwrap();
        let answer = b.pc.create_answer().await.unwrap();
        b.pc.set_local_description(answer.clone()).await.unwrap();
        a.pc.set_remote_description(answer).await.unwrap();
        let (local, _) = selected(&mut a).await;
        assert_eq!(parts(&local).0, "relay");
        ch.send("after").await.unwrap();
        assert_eq!(
            message(&mut b, "restart").await,
            Message::Text("before".into())
        );
        assert_eq!(
            message(&mut b, "restart").await,
            Message::Text("after".into())
        );
        transfer(&ch, &mut b, "restart", 256 << 10).await;
        a.pc.close().await;
    });
}

/// RFC 7675: A's site goes dark; B declares the connection failed inside 30 s.
#[test]
fn consent_loss_fails_the_connection_within_30_s() {
    let Some((topo, coturn)) = with_coturn() else {
        return;
    };
    let stun = coturn.stun();
    let (_ra, mut a) = peer_in(topo.host_a(), "A", |c| c.ice.servers = vec![stun.clone()]);
    let (_rb, mut b) = peer_in(topo.host_b(), "B", |c| c.ice.servers = vec![stun.clone()]);
    block_on(async {
        let _ch = connect_with_channel(&mut a, &mut b, "consent").await;
        opened(&mut a, "consent").await;
        b.expect("connected", |e| {
            matches!(e, Event::ConnectionState(ConnectionState::Connected)).then_some(())
        })
        .await;
        topo.cut(topo.nat_a());
        let cut = Instant::now();
        // `expect` waits 20 s at most per call: disconnected first, then failed.
        b.expect("disconnected", |e| {
            matches!(e, Event::ConnectionState(ConnectionState::Disconnected)).then_some(())
        })
        .await;
        b.expect_within(Duration::from_secs(40), "failed", |e| {
            matches!(e, Event::ConnectionState(ConnectionState::Failed)).then_some(())
        })
        .await;
        let took = cut.elapsed();
        assert!(
            took > Duration::from_secs(20) && took <= Duration::from_secs(31),
            "failed after {took:?}"
        );
        topo.restore(topo.nat_a());
    });
}

/// The same as seen by `smolrtc serve` on the public host: the session of a client whose
/// site goes dark is freed; and with `single_port`, clients behind two different NATs share
/// the service's one UDP port.
#[test]
fn service_frees_a_silent_session_and_serves_nat_clients_on_one_port() {
    init_log();
    let Some(topo) = Topology::new() else { return };
    let _coturn = topo.coturn();
    let service_ns = topo.host_p().to_owned();
    let (rt, handle) = in_ns(&service_ns, move || {
        let rt = Runtime::new().unwrap();
        let mut config = smolrtc::service::ServiceConfig {
            listen: "0.0.0.0:8888".parse().unwrap(),
            single_port: Some(0),
            rawrtc_flow: false,
            ..Default::default()
        };
        config.peer.ice.failed_timeout = Duration::from_secs(10);
        let h = smolrtc::service::Service::new(config).start(&rt).unwrap();
        (rt, h)
    });
    let _rt = rt;
    let api = std::net::SocketAddr::new(topo.host_p_ip(), 8888);
    let sessions = {
        let ns = service_ns.clone();
        move || {
            in_ns(&ns, move || {
                let r = common::http::request(api, "GET", "/api/sessions", None, b"");
                r.json()["sessions"].as_array().unwrap().clone()
            })
        }
    };
    let mut clients = Vec::new();
    for (ns, name) in [(topo.host_a(), "A"), (topo.host_b(), "B")] {
        let (rt, mut p) = peer_in(ns, name, |_| {});
        let ns = ns.to_owned();
        block_on(async {
            let ch = p.channel("echo", ChannelInit::default()).await;
            let offer = p.pc.create_offer().await.unwrap();
            p.pc.set_local_description(offer).await.unwrap();
            let offer = p.complete_description().await;
            let body = serde_json::to_vec(&offer).unwrap();
            let reply = in_ns(&ns, move || {
                common::http::request(api, "POST", "/api/offer", Some("application/json"), &body)
            });
            assert_eq!(
                reply.status,
                200,
                "{}",
                String::from_utf8_lossy(&reply.body)
            );
            let answer: smolrtc::Description = serde_json::from_slice(&reply.body).unwrap();
            p.pc.set_remote_description(answer).await.unwrap();
            opened(&mut p, "echo").await;
            send_expect(&ch, &mut p, format!("hello from {name}")).await;
            let (_, remote) = selected(&mut p).await;
            clients.push((rt, p, ch, parts(&remote).2));
        });
    }
    assert_eq!(clients[0].3, clients[1].3, "sessions on different ports");
    assert_eq!(sessions().len(), 2);
    // B's site goes dark: its session goes (failed after 5 + 10 s here), A's stays.
    topo.cut(topo.nat_b());
    let until = Instant::now() + Duration::from_secs(25);
    while sessions().len() != 1 {
        assert!(
            Instant::now() < until,
            "silent session not freed: {:?}",
            sessions()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    block_on(async {
        let (_, p, ch, _) = &mut clients[0];
        send_expect(ch, p, "still here").await;
    });
    topo.restore(topo.nat_b());
    handle.shutdown();
}

/// RFC 8656 §7: allocations are refreshed before they expire (here every 5 s, capped, as a
/// NAT keep-alive would; by default at half the 600 s lifetime), and data still flows
/// through the refreshed allocation.
#[test]
fn allocation_is_refreshed_while_in_use() {
    let Some((topo, coturn)) = with_coturn() else {
        return;
    };
    let turn = coturn.turn("udp");
    let (_ra, mut a) = peer_in(topo.host_a(), "A", |c| {
        c.ice.servers = vec![turn.clone()];
        c.ice.transport_policy = smolrtc::TransportPolicy::Relay;
        c.ice.turn_refresh_interval = Some(Duration::from_secs(5));
    });
    let (_rb, mut b) = peer_in(topo.host_b(), "B", |c| c.ice.servers = vec![turn.clone()]);
    block_on(async {
        let ch = connect_with_channel(&mut a, &mut b, "long").await;
        opened(&mut a, "long").await;
        assert!(
            coturn.wait_for_log("REFRESH processed, success", Duration::from_secs(10)),
            "no refresh: {}",
            coturn.log_tail(20)
        );
        async_io::Timer::after(Duration::from_secs(6)).await;
        assert!(coturn.log_count("REFRESH processed, success") >= 2);
        send_expect(&ch, &mut b, "after refreshes").await;
        a.pc.close().await;
    });
}
