//! `PeerConnection::add_ice_servers` on a running connection, with a real coturn in the
//! network namespaces of tests/common/netns.rs (needs root; without it the test returns).
//! Peer A may use relay candidates only and starts with no server, so it has no
//! candidate and cannot connect; the TURN server added afterwards gives it a relay
//! candidate, trickled to B, and the connection comes up through coturn.

mod common;

use common::netns::{in_ns, Topology};
use common::*;
use smolrtc::ice::GatheringState;
use smolrtc::{ChannelInit, Config, Event, IceServer, Runtime};
use std::time::Duration;

fn peer_in(ns: &str, name: &str, edit: impl FnOnce(&mut Config)) -> (Runtime, Peer) {
    let rt = in_ns(ns, || Runtime::new().expect("runtime"));
    let mut config = Config {
        name: name.into(),
        ..Config::default()
    };
    config.ice.gather_timeout = Duration::from_secs(3);
    edit(&mut config);
    let peer = Peer::with_runtime(&rt, config);
    (rt, peer)
}

#[test]
fn a_turn_server_added_later_connects_a_relay_only_peer() {
    init_log();
    let Some(topo) = Topology::new() else { return };
    let coturn = topo.coturn();
    let turn = IceServer::parse(&format!(
        "turn:{}:{}@{}?transport=udp",
        coturn.user(),
        coturn.password(),
        coturn.udp_addr()
    ))
    .unwrap();
    let stun = IceServer::parse(&format!("stun:{}", coturn.udp_addr())).unwrap();
    let (_ra, mut a) = peer_in(topo.host_a(), "A", |c| {
        c.ice.transport_policy = smolrtc::TransportPolicy::Relay;
    });
    let (_rb, mut b) = peer_in(topo.host_b(), "B", |c| c.ice.servers = vec![stun]);
    block_on(async {
        let _ch = a.channel("late", ChannelInit::default()).await;
        connect(&mut a, &mut b).await;
        let offer = a.pc.local_description().await.unwrap();
        assert!(
            !offer.sdp.contains("a=candidate"),
            "A has no candidate before the server is added: {}",
            offer.sdp
        );
        assert_eq!(coturn.log_count("ALLOCATE processed, success"), 0);
        a.pc.add_ice_servers(vec![turn.clone()]).await.unwrap();
        a.expect("gathering again", |e| {
            matches!(e, Event::IceGatheringState(GatheringState::Gathering)).then_some(())
        })
        .await;
        let mut relays = 0;
        loop {
            let c = a
                .expect("candidate", |e| match e {
                    Event::IceCandidate(c) => Some(c.clone()),
                    _ => None,
                })
                .await;
            let Some(c) = c else { break };
            assert!(c.candidate.contains("typ relay"), "{}", c.candidate);
            relays += 1;
            b.pc.add_ice_candidate(c).await.unwrap();
        }
        assert!(relays >= 1);
        opened(&mut a, "late").await;
        a.pc.close().await;
    });
    assert!(
        coturn.log_count("ALLOCATE processed, success") >= 1,
        "{}",
        coturn.log_tail(30)
    );
}
