//! A slow application must slow the remote sender through SCTP's receive window, not by
//! stalling the shared executor or by queueing without bound: not in the library (a slow
//! consumer; a sender past its send buffer), not in the service (a peer that uploads to
//! `echo` and never reads what comes back).

mod common;

use common::*;
use smolrtc::service::apps::{ChannelEvents, ECHO_HIGH_WATER, ECHO_LOW_WATER};
use smolrtc::{ChannelInit, DataChannel, Event, Message};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn slow_consumer_closes_the_window_and_the_executor_stays_responsive() {
    run(async {
        let (mut a, mut b) = pair();
        let tx = a.channel("flood", ChannelInit::default()).await;
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
        let ping = c.channel("ping", ChannelInit::default()).await;
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
    run(async {
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
        let one = a.channel("one", ChannelInit::default()).await;
        let two = a.channel("two", ChannelInit::default()).await;
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
        send_expect(&one, &mut b, "after").await;
    });
}

async fn future_or_timeout<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::or(f, async {
        async_io::Timer::after(TIMEOUT).await;
        panic!("timed out")
    })
    .await
}

/// This process's resident set, KiB (for the log: not asserted).
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// Polls `cond` every 10 ms until it holds (at most TIMEOUT).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
}

/// Sends messages of `msg` bytes (message n all `n % 251`) until the channel refuses one;
/// returns the bytes sent and the refusal.
async fn send_until_refused(ch: &DataChannel, msg: usize) -> (usize, String) {
    let mut sent = 0;
    loop {
        match ch.send(vec![(sent / msg % 251) as u8; msg]).await {
            Ok(()) => sent += msg,
            Err(e) => return (sent, e.to_string()),
        }
    }
}

/// The most `ch` had buffered, sampled every 10 ms for `watch`.
async fn most_buffered(ch: &DataChannel, watch: Duration) -> usize {
    let mut most = 0;
    let until = Instant::now() + watch;
    while Instant::now() < until {
        most = most.max(ch.buffered_amount());
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
    most
}

/// A new session with the service at `addr` echoes `text` on its `echo` channel; then it
/// closes.
async fn echoed_once(addr: std::net::SocketAddr, text: &str) {
    let mut other = Peer::new("other");
    let ch = other.channel("echo", ChannelInit::default()).await;
    let answer = other.offer_to_service(addr).await;
    other.pc.set_remote_description(answer).await.unwrap();
    opened(&mut other, "echo").await;
    send_expect(&ch, &mut other, text).await;
    other.pc.close().await;
}

/// Reads what [`send_until_refused`] sent (`sent` bytes in `msg`-byte messages) back from
/// `a`'s events, in order.
async fn expect_back(a: &mut Peer, sent: usize, msg: usize) {
    let mut got = 0;
    while got < sent {
        let m = a
            .expect("echoed data", |e| match e {
                Event::ChannelMessage(_, m) => Some(m.clone()),
                _ => None,
            })
            .await;
        let n = got / msg;
        assert_eq!(m.as_bytes(), &vec![(n % 251) as u8; msg][..], "message {n}");
        got += msg;
    }
}

/// Issue 13's attack: a peer uploads to the service's `echo` as fast as it can while its
/// application reads nothing behind a 64 KiB receive window (a window that closes and stays
/// shut). The service's echo stops reading at its high-water mark, so what it holds for the
/// peer stays under ECHO_HIGH_WATER plus a message, far below its send buffer; the
/// peer's messages back up in the peer's own send buffer (its buffered amount stays high);
/// another session is served meanwhile; and once the peer reads again, every byte comes
/// back in order. The attack's part runs for a fixed 500 ms: "nothing more moves" is no
/// event to wait for.
#[test]
fn a_peer_uploading_to_echo_without_reading_cannot_grow_the_service() {
    init_log();
    const MSG: usize = 16 * 1024;
    const UPLOAD: usize = 12 * 1024 * 1024;
    let config = common::service::config(|c| c.peer.sctp.receive_buffer = 256 * 1024);
    let bound = config.peer.sctp.send_buffer_per_channel;
    assert!(
        bound > UPLOAD / 2,
        "the test needs echo, not the bound, to stop"
    );
    // The built-in echo, its channels kept to watch their buffered amounts.
    let echoes: Arc<Mutex<Vec<DataChannel>>> = Arc::default();
    let seen = echoes.clone();
    let (_rt, h) = common::service::start_with(config, |service| {
        service.handle("echo", move |ch: DataChannel, events: ChannelEvents| {
            seen.lock().unwrap().push(ch.clone());
            smolrtc::service::apps::echo(ch, events)
        });
    });
    let served = |i: usize| echoes.lock().unwrap().get(i).cloned();
    block_on(async {
        let mut cfg = loopback_config("attacker");
        cfg.sctp.receive_buffer = 64 * 1024;
        cfg.sctp.send_buffer_per_channel = UPLOAD;
        let mut a = Peer::with_config(cfg);
        let up = a.channel("echo", ChannelInit::default()).await;
        let answer = a.offer_to_service(h.addr).await;
        a.pc.set_remote_description(answer).await.unwrap();
        opened(&mut a, "echo").await;
        until("the service's echo", || served(0).is_some()).await;
        let echo = served(0).unwrap();
        let rss_before = rss_kib();

        // From here the attacker's application reads nothing; it sends until its own send
        // buffer is full.
        let (sent, refused) = send_until_refused(&up, MSG).await;
        assert!(refused.contains("send_buffer_per_channel"), "{refused}");
        // Echo is busy (it may already have passed its high-water mark and fallen back a
        // little as the attacker's short queues took some: it then waits for its low-water
        // mark, so no peak is there to catch).
        until("echo to hold data", || {
            echo.buffered_amount() > ECHO_LOW_WATER
        })
        .await;
        let mut most = most_buffered(&echo, Duration::from_millis(500)).await;
        // Another session connects and is echoed meanwhile.
        echoed_once(h.addr, "still here").await;
        most = most.max(echo.buffered_amount());
        let held = up.buffered_amount();
        eprintln!(
            "attacker sent {sent} bytes; still buffered at the attacker: {held}; most \
             buffered by the service's echo: {most} (bound {bound}); process RSS \
             {rss_before} -> {} KiB",
            rss_kib()
        );
        assert!(
            most <= ECHO_HIGH_WATER + MSG,
            "the service's echo held {most} bytes for a peer that reads nothing"
        );
        // The service holds at most echo's high water, its 256 KiB receive window and its
        // short queues (~2.5 MiB of 16 KiB messages): the rest is still the attacker's.
        assert!(
            held > UPLOAD / 2,
            "only {held} of {sent} bytes still at the attacker: the service took the rest"
        );

        // The attacker reads again: everything comes back, in order.
        expect_back(&mut a, sent, MSG).await;
        a.pc.close().await;
    });
    h.shutdown();
}
