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

/// The send buffer is bounded per channel and per connection (issue 13): a send past
/// either bound fails with a limit error naming it, counts nothing, and the channel and the
/// connection go on. Here B reads nothing (after its channels open) behind a 64 KiB
/// receive window, so what A sends stays A's; afterwards B reads everything, every byte
/// A's sends accepted arrives, and A's buffered amounts come down to exactly 0 — waited for
/// with `wait_buffered_amount` while A reads no events either.
#[test]
fn sends_past_the_send_buffer_fail_naming_the_bound_and_the_channel_goes_on() {
    init_log();
    block_on(async {
        const MSG: usize = 16 * 1024;
        const PER_CHANNEL: usize = 8 * 1024 * 1024;
        const PER_CONNECTION: usize = 12 * 1024 * 1024;
        let mut ca = loopback_config("A");
        ca.sctp.send_buffer_per_channel = PER_CHANNEL;
        ca.sctp.send_buffer_per_connection = PER_CONNECTION;
        let mut cb = loopback_config("B");
        cb.sctp.receive_buffer = 64 * 1024;
        let mut a = Peer::with_config(ca);
        let mut b = Peer::with_config(cb);
        let one =
            a.pc.create_data_channel("one", ChannelInit::default())
                .await
                .unwrap();
        let two =
            a.pc.create_data_channel("two", ChannelInit::default())
                .await
                .unwrap();
        connect(&mut a, &mut b).await;
        for label in ["one", "two"] {
            opened(&mut a, label).await;
            opened(&mut b, label).await;
        }

        // Sends until one fails: the bytes accepted, the buffered amount just before the
        // refused send (acknowledgements only lower it meanwhile) and the error.
        async fn fill(ch: &smolrtc::DataChannel) -> (usize, usize, String) {
            let mut accepted = 0;
            loop {
                assert!(
                    accepted <= 64 * 1024 * 1024,
                    "no bound: {accepted} bytes taken"
                );
                let before = ch.buffered_amount();
                let n = accepted / MSG;
                match ch.send(vec![(n % 251) as u8; MSG]).await {
                    Ok(()) => accepted += MSG,
                    Err(e) => return (accepted, before, e.to_string()),
                }
            }
        }
        let (sent1, before, e1) = fill(&one).await;
        assert!(
            e1.contains("send buffer full") && e1.contains("send_buffer_per_channel (8388608)"),
            "{e1}"
        );
        assert!(before + MSG > PER_CHANNEL, "refused at {before} bytes");
        assert!(one.buffered_amount() <= PER_CHANNEL);
        // B takes at most its window and its short queues: "one" stays well over 4 MiB, so
        // "two" reaches the connection's bound before its own.
        let (sent2, _, e2) = fill(&two).await;
        assert!(
            e2.contains("send buffer full") && e2.contains("send_buffer_per_connection (12582912)"),
            "{e2}"
        );
        assert!(one.buffered_amount() + two.buffered_amount() <= PER_CONNECTION);
        assert_eq!(one.state(), smolrtc::ChannelState::Open);
        assert_eq!(two.state(), smolrtc::ChannelState::Open);

        // B catches up: every accepted byte arrives, in order, and nothing else.
        let mut got = [0usize; 2];
        while got[0] < sent1 || got[1] < sent2 {
            let (k, m) = b
                .expect("data", |e| match e {
                    Event::ChannelMessage(c, m) => {
                        Some((usize::from(c.label() == "two"), m.clone()))
                    }
                    _ => None,
                })
                .await;
            let n = got[k] / MSG;
            assert_eq!(m.as_bytes(), &vec![(n % 251) as u8; MSG][..], "{k}: {n}");
            got[k] += MSG;
        }
        assert_eq!(got, [sent1, sent2]);
        // Acknowledged to the byte: a refused send left nothing behind.
        for ch in [&one, &two] {
            future_or_timeout(ch.wait_buffered_amount(0)).await.unwrap();
            assert_eq!(ch.buffered_amount(), 0);
        }
        // The channels and the connection go on.
        one.send("after").await.unwrap();
        assert_eq!(message(&mut b, "one").await, Message::Text("after".into()));
    });
}

async fn future_or_timeout<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::or(f, async {
        async_io::Timer::after(TIMEOUT).await;
        panic!("timed out")
    })
    .await
}
