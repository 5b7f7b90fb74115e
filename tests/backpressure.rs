//! A slow application must slow the remote sender through SCTP's receive window, not by
//! stalling the shared executor or by queueing without bound.

mod common;

use common::*;
use smolrtc::{ChannelInit, Event, Message};
use std::time::Duration;

#[test]
fn slow_consumer_closes_the_window_and_the_executor_stays_responsive() {
    init_log();
    block_on(async {
        let mut a = Peer::new("A");
        let mut b = Peer::new("B");
        let tx =
            a.pc.create_data_channel("flood", ChannelInit::default())
                .await
                .unwrap();
        connect(&mut a, &mut b).await;
        a.expect("open", |e| matches!(e, Event::ChannelOpen(_)).then_some(()))
            .await;

        // A fast producer: 16 MiB queued at once, no pacing.
        const MSG: usize = 16 * 1024;
        const TOTAL: usize = 16 * 1024 * 1024;
        for i in 0..TOTAL / MSG {
            tx.send(vec![(i % 251) as u8; MSG]).await.unwrap();
        }

        // B's application reads nothing for a while. Meanwhile another pair on the same
        // smolrtc thread must still connect and talk.
        let mut c = Peer::new("C");
        let mut d = Peer::new("D");
        let ping =
            c.pc.create_data_channel("ping", ChannelInit::default())
                .await
                .unwrap();
        connect(&mut c, &mut d).await;
        c.expect("ping open", |e| {
            matches!(e, Event::ChannelOpen(_)).then_some(())
        })
        .await;
        ping.send("ping").await.unwrap();
        let got = d
            .expect("ping", |e| match e {
                Event::ChannelMessage(_, m) => Some(m.clone()),
                _ => None,
            })
            .await;
        assert_eq!(got, Message::Text("ping".into()));
        async_io::Timer::after(Duration::from_millis(500)).await;

        // Most of the 16 MiB is still the sender's: only the receive window (1 MiB) and a few
        // short queues can hold data the application has not read.
        let waiting = tx.buffered_amount();
        assert!(
            waiting > TOTAL / 2,
            "only {waiting} bytes still buffered at the sender: the receiver queued the rest"
        );

        // The application catches up: every byte arrives, in order.
        let mut n = 0;
        while n < TOTAL / MSG {
            let m = b
                .expect("data", |e| match e {
                    Event::ChannelMessage(_, m) => Some(m.clone()),
                    _ => None,
                })
                .await;
            assert_eq!(m.as_bytes(), &vec![(n % 251) as u8; MSG][..], "message {n}");
            n += 1;
        }
    });
}
