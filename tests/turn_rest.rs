//! TURN REST credentials (src/turn_rest.rs) against a real coturn run with
//! `use-auth-secret` + `static-auth-secret`, in the network namespaces of tests/turn.rs:
//! credentials minted from the shared secret allocate and carry a connection through the
//! relay; credentials minted from another secret, and expired ones, are refused.
//!
//! Needs root for `ip netns`; without it each test prints why and returns.

mod common;

use common::netns::{in_ns, Coturn, CoturnOpts, Topology};
use common::*;
use smolrtc::turn_rest::TurnRest;
use smolrtc::{ChannelInit, Config, IceServer, Message, Runtime, TransportPolicy};
use std::time::{Duration, SystemTime};

const SECRET: &str = "fleet-shared-secret";

/// coturn in the `pub` namespace checking TURN REST credentials against `SECRET`.
fn coturn_with_secret(topo: &Topology) -> Coturn {
    let opts = CoturnOpts {
        tls: false,
        extra: vec![
            "use-auth-secret".into(),
            format!("static-auth-secret={SECRET}"),
        ],
        ..CoturnOpts::default()
    };
    Coturn::start(topo.pub_ns(), opts)
}

fn rest(coturn: &Coturn, secret: &str) -> TurnRest {
    let url = format!("turn:{}?transport=udp", coturn.udp_addr());
    TurnRest::new(vec![url], secret.as_bytes(), Duration::from_secs(3600)).unwrap()
}

/// A peer in namespace `ns` that may only use relay candidates from `servers`.
fn relay_peer(ns: &str, name: &str, servers: Vec<IceServer>) -> (Runtime, Peer) {
    peer_in(ns, name, servers, TransportPolicy::Relay)
}

fn peer_in(
    ns: &str,
    name: &str,
    servers: Vec<IceServer>,
    policy: TransportPolicy,
) -> (Runtime, Peer) {
    let rt = in_ns(ns, || Runtime::new().expect("runtime"));
    let mut config = Config {
        name: name.into(),
        ..Config::default()
    };
    config.ice.gather_timeout = Duration::from_secs(3);
    config.ice.servers = servers;
    config.ice.transport_policy = policy;
    let peer = Peer::with_runtime(&rt, config);
    (rt, peer)
}

/// The relay candidates `p` gathers (with the relay policy, every candidate).
fn relay_candidates(p: &mut Peer) -> Vec<String> {
    block_on(async {
        let _ch = p.channel("probe", ChannelInit::default()).await;
        let offer = p.pc.create_offer().await.unwrap();
        p.pc.set_local_description(offer).await.unwrap();
        p.local_candidates().await
    })
    .into_iter()
    .filter(|c| c.contains("typ relay"))
    .collect()
}

/// The device's own servers (`TurnRest::ice_servers`) allocate on coturn, and a client
/// given the W3C `RTCIceServer` the device hands out (`rtc_ice_server`, as in the MQTT
/// `ice-servers` reply and `GET /api/ice-servers`) allocates too: both peers relay-only,
/// behind two NATs (the client relay-only, the device gathering a relay candidate beside
/// its others), a channel opens and carries data through coturn.
#[test]
fn minted_credentials_allocate_and_relay() {
    init_log();
    let Some(topo) = Topology::new() else { return };
    let coturn = coturn_with_secret(&topo);
    let t = rest(&coturn, SECRET);
    let device_servers = t.ice_servers("dev1");
    assert_eq!(device_servers.len(), 1);
    // What a browser gets, turned back into a server the way a browser reads it.
    let w3c = t.rtc_ice_server("client-7");
    let client_server = IceServer::parse_with(
        w3c["urls"][0].as_str().unwrap(),
        w3c["username"].as_str(),
        w3c["credential"].as_str(),
    )
    .unwrap();
    assert!(client_server.username.ends_with(":client-7"));
    let (_ra, mut a) = relay_peer(topo.host_a(), "client", vec![client_server]);
    let (_rb, mut b) = peer_in(
        topo.host_b(),
        "device",
        device_servers,
        TransportPolicy::All,
    );
    block_on(async {
        let ch = a.channel("rest", ChannelInit::default()).await;
        connect(&mut a, &mut b).await;
        opened(&mut a, "rest").await;
        for i in 0..20 {
            let text = format!("through the relay {i}");
            ch.send(text.as_str()).await.unwrap();
            assert_eq!(message(&mut b, "rest").await, Message::Text(text));
        }
        a.pc.close().await;
    });
    // One allocation per peer, both authenticated by the REST credentials.
    assert!(
        coturn.log_count("ALLOCATE processed, success") >= 2,
        "{}",
        coturn.log_tail(40)
    );
    let log = coturn.log();
    assert!(log.contains(":client-7"), "{}", coturn.log_tail(40));
    assert!(log.contains(":dev1"), "{}", coturn.log_tail(40));
}

/// Credentials minted from another secret: coturn refuses the allocation (401 after the
/// HMAC check), so no relay candidate; gathering still ends.
#[test]
fn a_wrong_secret_is_refused() {
    init_log();
    let Some(topo) = Topology::new() else { return };
    let coturn = coturn_with_secret(&topo);
    let wrong = rest(&coturn, "not-the-secret");
    let (_ra, mut a) = relay_peer(topo.host_a(), "A", wrong.ice_servers("dev1"));
    let relays = relay_candidates(&mut a);
    assert!(relays.is_empty(), "{relays:?}");
    assert_eq!(coturn.log_count("ALLOCATE processed, success"), 0);
    assert!(
        coturn.log().contains("401"),
        "no refusal in coturn's log: {}",
        coturn.log_tail(40)
    );
    // The same server with the right secret allocates: the refusal was the secret's.
    let right = rest(&coturn, SECRET);
    let (_rb, mut b) = relay_peer(topo.host_a(), "B", right.ice_servers("dev1"));
    assert_eq!(relay_candidates(&mut b).len(), 1);
}

/// A credential whose expiry (the user name's timestamp) is past: refused, although its
/// HMAC is right.
#[test]
fn an_expired_credential_is_refused() {
    init_log();
    let Some(topo) = Topology::new() else { return };
    let coturn = coturn_with_secret(&topo);
    let t = rest(&coturn, SECRET);
    // Minted two hours ago with a one-hour TTL: expired an hour ago.
    let c = t.mint("dev1", SystemTime::now() - Duration::from_secs(7200));
    let expiry: u64 = c.username.split(':').next().unwrap().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expiry < now, "{} is not in the past", c.username);
    let server = IceServer::parse_with(
        &t.urls[0],
        Some(c.username.as_str()),
        Some(c.credential.as_str()),
    )
    .unwrap();
    let (_ra, mut a) = relay_peer(topo.host_a(), "A", vec![server]);
    let relays = relay_candidates(&mut a);
    assert!(relays.is_empty(), "{relays:?}");
    assert_eq!(
        coturn.log_count("ALLOCATE processed, success"),
        0,
        "{}",
        coturn.log_tail(40)
    );
}
