//! The shutdown order (docs/ARCHITECTURE.md, "Shutdown"), seen from both ends over real
//! UDP: `close()` or the last handle dropped on one peer closes every channel of the other
//! and its connection through the protocol (SCTP ABORT, DTLS close_notify). Both peers'
//! ICE would take minutes to notice a silent remote, so a close that came by consent
//! timeout could not arrive inside the wait. On the closing side ICE closes last: after
//! every channel.

mod common;

use common::*;
use smolrtc::ice::IceConnectionState;
use smolrtc::{ChannelInit, ChannelState, ConnectionState, Event};
use std::time::Duration;

/// A peer whose ICE reports a silent remote only after minutes.
fn patient(name: &str) -> Peer {
    let mut config = loopback_config(name);
    config.ice.disconnected_timeout = Duration::from_secs(300);
    config.ice.failed_timeout = Duration::from_secs(600);
    Peer::with_config(config)
}

/// `A` (offering) and `B` connected, with an in-band channel and a negotiated one open on
/// both sides.
async fn two_channels_open() -> (Peer, Peer) {
    let (mut a, mut b) = (patient("A"), patient("B"));
    a.channel("in-band", ChannelInit::default()).await;
    a.channel("negotiated", ChannelInit::negotiated(0)).await;
    b.channel("negotiated", ChannelInit::negotiated(0)).await;
    connect(&mut a, &mut b).await;
    for p in [&mut a, &mut b] {
        opened(p, "in-band").await;
        opened(p, "negotiated").await;
    }
    (a, b)
}

/// Reads `remote`'s events until its connection is closed: both channels must have
/// closed on the way, and nothing must say the connection failed or went quiet.
async fn remote_sees_the_close(remote: &mut Peer) {
    let mut closed = Vec::new();
    let mut went_wrong = Vec::new();
    remote
        .expect("the remote's connection closed", |e| {
            match e {
                Event::ChannelClosed(c) => {
                    assert_eq!(c.state(), ChannelState::Closed);
                    closed.push(c.label().to_owned());
                }
                Event::ConnectionState(ConnectionState::Failed | ConnectionState::Disconnected)
                | Event::IceConnectionState(
                    IceConnectionState::Disconnected | IceConnectionState::Failed,
                )
                | Event::Error(_) => went_wrong.push(format!("{e:?}")),
                _ => {}
            }
            matches!(e, Event::ConnectionState(ConnectionState::Closed)).then_some(())
        })
        .await;
    assert!(went_wrong.is_empty(), "{went_wrong:?}");
    // The channels close as the association does, before DTLS's close_notify ends the
    // connection; any not yet seen must come right after.
    while closed.len() < 2 {
        let c = remote
            .expect("the remote's channels closed", |e| match e {
                Event::ChannelClosed(c) => Some(c.label().to_owned()),
                _ => None,
            })
            .await;
        closed.push(c);
    }
    closed.sort();
    assert_eq!(closed, ["in-band", "negotiated"]);
}

/// The closing side's events after `close()`: every channel closed, then ICE, last.
async fn closer_closes_ice_last(closer: &mut Peer) {
    let mut channels = 0;
    closer
        .expect("the closer's ICE closed", |e| {
            if matches!(e, Event::ChannelClosed(_)) {
                channels += 1;
            }
            matches!(e, Event::IceConnectionState(IceConnectionState::Closed)).then_some(())
        })
        .await;
    assert_eq!(channels, 2, "every channel closes before ICE");
}

/// `close()` on one side (the offerer, or the answerer: DTLS client and server swap).
fn close_reaches_the_other_side(offerer_closes: bool) {
    run(async {
        let (mut a, mut b) = two_channels_open().await;
        let (closer, remote) = if offerer_closes {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        // close() returns once the chain has reached ICE.
        closer.pc.close().await;
        closer_closes_ice_last(closer).await;
        remote_sees_the_close(remote).await;
        assert_eq!(remote.pc.states().await.unwrap().2, ConnectionState::Closed);
    });
}

#[test]
fn close_by_the_offerer_reaches_the_answerer_through_the_protocol() {
    close_reaches_the_other_side(true);
}

#[test]
fn close_by_the_answerer_reaches_the_offerer_through_the_protocol() {
    close_reaches_the_other_side(false);
}

#[test]
fn dropping_the_last_handle_closes_the_remote_too() {
    run(async {
        let (a, mut b) = two_channels_open().await;
        // No close(): the handles, channels and event stream simply go.
        drop(a);
        remote_sees_the_close(&mut b).await;
    });
}
