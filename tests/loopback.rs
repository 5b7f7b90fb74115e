//! Two smolrtc peers over real UDP on 127.0.0.1: ICE, DTLS, SCTP and DCEP end to end.

mod common;

use common::*;
use smolrtc::{ChannelInit, ConnectionState, Event, Message};

#[test]
fn negotiated_channel_carries_messages_both_ways() {
    init_log();
    block_on(async {
        let mut a = Peer::new("A");
        let mut b = Peer::new("B");
        let ca = a.pc.create_data_channel("cat-noises", ChannelInit::negotiated(0)).await.unwrap();
        let cb = b.pc.create_data_channel("cat-noises", ChannelInit::negotiated(0)).await.unwrap();
        connect(&mut a, &mut b).await;
        a.expect("A connected", |e| matches!(e, Event::ConnectionState(ConnectionState::Connected)).then_some(())).await;
        a.expect("A cat open", |e| matches!(e, Event::ChannelOpen(_)).then_some(())).await;
        b.expect("B cat open", |e| matches!(e, Event::ChannelOpen(_)).then_some(())).await;
        ca.send(vec![b'M'; 8192]).await.unwrap();
        let got = b.expect("B message", |e| match e {
            Event::ChannelMessage(_, m) => Some(m.clone()),
            _ => None,
        }).await;
        assert_eq!(got, Message::Binary(vec![b'M'; 8192].into()));
        cb.send("meow").await.unwrap();
        let got = a.expect("A message", |e| match e {
            Event::ChannelMessage(_, m) => Some(m.clone()),
            _ => None,
        }).await;
        assert_eq!(got, Message::Text("meow".into()));
    });
}
