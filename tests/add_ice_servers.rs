//! `PeerConnection::add_ice_servers` on a running connection, with a real coturn in the
//! network namespaces of tests/common/netns.rs (needs root; without it the test returns).
//! Peer A may use relay candidates only and starts with no server, so it has no
//! candidate and cannot connect; the TURN server added afterwards gives it a relay
//! candidate, trickled to B, and the connection comes up through coturn.

mod common;

use common::*;
use smolrtc::ice::GatheringState;
use smolrtc::{ChannelInit, Event};

#[test]
fn a_turn_server_added_later_connects_a_relay_only_peer() {
    let Some((topo, coturn)) = with_coturn() else {
        return;
    };
    let turn = coturn.turn("udp");
    let stun = coturn.stun();
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
