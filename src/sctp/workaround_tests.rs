//! One test per workaround for rtc-sctp 0.21.1 (`engine::Workarounds`), on the simulated
//! network (`sim_tests::Pair`: two engines, a virtual clock, seeded impairments, so every
//! run gives the same answer; the router's stream id choice with two engines and routers,
//! `stack_sim::StackPair`). Each fails with its workaround switched off: the `_off`
//! variants expect that failure, so the day an rtc-sctp release fixes a defect, its
//! `_off` test stops failing and says the workaround can go (docs/SCTP-UPSTREAM.md).

use super::engine::Workarounds;
use super::sim_tests::{message, Pair, Sim, SIZES};
use super::stack_sim::{keep_writing, StackPair};
use super::{Ppi, Reliability, SctpConfig};
use crate::channel::{ChannelInit, DataChannel};
use crate::testkit::impair::Impairment;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// A link on which the receiver's window (256 KiB a round trip) bounds a busy channel,
/// which keeps more than that queued.
const NARROW: &str = "delay=10ms";
const WINDOW: u32 = 256 * 1024;
const RTT: Duration = Duration::from_millis(20);

fn pair(imp: &str, work: Workarounds) -> Pair {
    let config = SctpConfig {
        receive_buffer: WINDOW,
        ..SctpConfig::default()
    };
    let mut p = Pair::with_config(1, Impairment::parse(imp).unwrap(), work, config);
    p.connect();
    p
}

/// Keeps `backlog` bytes of 16 KiB messages written and not yet released on A's
/// `stream` (an application filling its send buffer).
fn keep_busy(p: &mut Pair, stream: u16, backlog: usize, written: &mut usize) {
    let released = p.a.out.released.get(&stream).copied().unwrap_or(0);
    while *written - released < backlog {
        let now = p.net.now();
        p.a.engine
            .write(now, stream, Ppi::Binary, Bytes::from(vec![7u8; 16 * 1024]));
        *written += 16 * 1024;
    }
}

fn received(p: &Pair, stream: u16, since: Instant) -> usize {
    p.b.out.got.get(&stream).map_or(0, |g| {
        g.iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, m)| m.len())
            .sum()
    })
}

/// `queue_depth`: a DCEP OPEN written beside a busy unordered channel with 4 MiB queued
/// is answered within a few round trips, not after the backlog (rtc-sctp sends every
/// queued unordered message first).
fn open_beside_a_full_queue(work: Workarounds) {
    let mut p = pair(NARROW, work);
    p.a.engine.open(1, true, Reliability::Reliable);
    let mut written = 0;
    let warm = p.net.now() + Duration::from_secs(1);
    p.run_until(Duration::from_secs(2), |p| {
        keep_busy(p, 1, 4 << 20, &mut written);
        p.wake = Some(warm);
        p.net.now() >= warm
    });
    let asked = p.net.now();
    p.a.engine.open(3, false, Reliability::Reliable);
    p.a.engine
        .write(asked, 3, Ppi::Dcep, Bytes::from_static(b"open"));
    let mut acked = false;
    let answered = p.run_until(Duration::from_secs(20), |p| {
        keep_busy(p, 1, 4 << 20, &mut written);
        if !acked && p.b.out.got.contains_key(&3) {
            // B's router answers with an ACK on the same stream.
            acked = true;
            p.b.engine.open(3, false, Reliability::Reliable);
            let now = p.net.now();
            p.b.engine
                .write(now, 3, Ppi::Dcep, Bytes::from_static(b"ack"));
        }
        p.a.out.got.contains_key(&3)
    });
    let took = p.net.now() - asked;
    println!("DCEP OPEN beside 4 MiB queued: answered {answered} after {took:?}");
    assert!(answered, "no DCEP ACK in 20 s");
    assert!(
        took < 10 * RTT,
        "DCEP OPEN answered after {took:?}, over 10 RTTs"
    );
}

#[test]
fn a_channel_opens_beside_a_full_queue() {
    open_beside_a_full_queue(Workarounds::ALL);
}

#[test]
#[should_panic(expected = "over 10 RTTs")]
fn a_channel_opens_beside_a_full_queue_off() {
    open_beside_a_full_queue(Workarounds {
        queue_depth: false,
        ..Workarounds::ALL
    });
}

/// `fair`: an ordered and an unordered channel, both with more queued than the link
/// carries, each get at least 30% of the bytes (rtc-sctp sends the unordered one's
/// first; without fair turns the one written first keeps the link).
fn share_beside_a_busy_unordered_one(work: Workarounds) {
    let mut p = pair(NARROW, work);
    p.a.engine.open(1, true, Reliability::Reliable);
    p.a.engine.open(3, false, Reliability::Reliable);
    let (mut w1, mut w3) = (0, 0);
    let start = p.net.now() + Duration::from_secs(1);
    let end = start + Duration::from_secs(2);
    p.run_until(Duration::from_secs(4), |p| {
        keep_busy(p, 1, 2 << 20, &mut w1);
        keep_busy(p, 3, 2 << 20, &mut w3);
        p.wake = Some(end);
        p.net.now() >= end
    });
    let (unordered, ordered) = (received(&p, 1, start), received(&p, 3, start));
    let total = (unordered + ordered).max(1);
    println!("2 s: unordered {unordered} B, ordered {ordered} B");
    assert!(total > 1 << 20, "too little moved: {total} B");
    assert!(
        ordered * 10 >= total * 3,
        "ordered got {ordered} of {total} B"
    );
    assert!(
        unordered * 10 >= total * 3,
        "unordered got {unordered} of {total} B"
    );
}

#[test]
fn an_ordered_channel_gets_its_share_beside_a_busy_unordered_one() {
    share_beside_a_busy_unordered_one(Workarounds::ALL);
}

#[test]
#[should_panic(expected = "ordered got")]
fn an_ordered_channel_gets_its_share_beside_a_busy_unordered_one_off() {
    share_beside_a_busy_unordered_one(Workarounds {
        fair: false,
        ..Workarounds::ALL
    });
}

/// `reset_gate`: channels closed one after another beside a busy one, under loss, are
/// closed on both sides: B hears A's reset and A hears B's reset back (rtc-sctp never
/// answers a request that came ahead of its data, nor resends one answered "in
/// progress").
fn closes_beside_a_busy_one(work: Workarounds) {
    let mut p = pair("loss=5%,delay=5ms", work);
    p.a.engine.open(1, false, Reliability::Reliable);
    let mut written = 0;
    let channels: Vec<u16> = (0..20).map(|i| 3 + 2 * i).collect();
    let mut closed_at: Vec<Instant> = Vec::new();
    let t0 = p.net.now();
    let done = p.run_until(Duration::from_secs(60), |p| {
        keep_busy(p, 1, 1 << 20, &mut written);
        let now = p.net.now();
        // One channel opened, used and closed every 200 ms.
        let next = t0 + Duration::from_millis(200) * closed_at.len() as u32;
        if closed_at.len() < channels.len() && now >= next {
            let s = channels[closed_at.len()];
            p.a.engine.open(s, false, Reliability::Reliable);
            p.a.engine
                .write(now, s, Ppi::Binary, Bytes::from_static(b"hi"));
            p.a.engine.reset(s);
            closed_at.push(now);
        }
        if closed_at.len() < channels.len() {
            p.wake = Some(next.max(now));
        }
        let both = |s: &u16| {
            p.a.out.reset.iter().any(|(r, _)| r == s) && p.b.out.reset.iter().any(|(r, _)| r == s)
        };
        closed_at.len() == channels.len() && channels.iter().all(both)
    });
    let mut worst = Duration::ZERO;
    for (s, at) in channels.iter().zip(&closed_at) {
        let a =
            p.a.out
                .reset
                .iter()
                .find(|(r, _)| r == s)
                .map(|(_, t)| *t - *at);
        let b =
            p.b.out
                .reset
                .iter()
                .find(|(r, _)| r == s)
                .map(|(_, t)| *t - *at);
        println!("stream {s}: closed on B after {b:?}, on A after {a:?}");
        worst = worst
            .max(a.unwrap_or(Duration::MAX))
            .max(b.unwrap_or(Duration::MAX));
    }
    assert!(done, "not every channel closed on both sides in 60 s");
    // A lost DATA chunk is resent within our retransmission timeout (250 ms, doubling).
    assert!(worst < Duration::from_secs(3), "slowest close {worst:?}");
}

#[test]
fn channels_closed_beside_a_busy_one_close_on_both_sides() {
    closes_beside_a_busy_one(Workarounds::ALL);
}

#[test]
#[should_panic(expected = "not every channel closed")]
fn channels_closed_beside_a_busy_one_close_on_both_sides_off() {
    closes_beside_a_busy_one(Workarounds {
        reset_gate: false,
        ..Workarounds::ALL
    });
}

/// `rto_clock`: under loss, no message waits for rtc-sctp's 1 s minimum retransmission
/// timeout: the longest gap between two deliveries of a reliable transfer stays under
/// 800 ms (our timeout starts at 250 ms).
fn no_one_second_stalls(work: Workarounds) {
    let mut p = pair("loss=5%,delay=1ms", work);
    p.a.engine.open(1, false, Reliability::Reliable);
    let count = 600;
    let mut n = 0;
    p.run_until(Duration::from_secs(600), |p| {
        let released = p.a.out.released.get(&1).copied().unwrap_or(0);
        while n < count && n * 1000 - released < 64 * 1024 {
            let now = p.net.now();
            p.a.engine
                .write(now, 1, Ppi::Binary, Bytes::from(vec![1u8; 1000]));
            n += 1;
        }
        p.b.out.got.get(&1).map_or(0, Vec::len) == count
    });
    let got = &p.b.out.got[&1];
    assert_eq!(got.len(), count);
    let gaps = got.windows(2).map(|w| w[1].0 - w[0].0);
    let longest = gaps.max().unwrap_or_default();
    println!("{count} messages at 5% loss: longest gap {longest:?}");
    assert!(longest < Duration::from_millis(800), "a {longest:?} stall");
}

#[test]
fn no_stall_waits_for_rtc_sctps_one_second_timeout() {
    no_one_second_stalls(Workarounds::ALL);
}

#[test]
#[should_panic(expected = "stall")]
fn no_stall_waits_for_rtc_sctps_one_second_timeout_off() {
    no_one_second_stalls(Workarounds {
        rto_clock: false,
        ..Workarounds::ALL
    });
}

/// `stream_ids` (the router's): B closes a channel A opened, beside a busy one, and A
/// opens a new channel the moment it hears of the close. B's rtc-sctp answers A's reset
/// back with a redundant reset of the same stream, still in flight then: a new channel on
/// the freed id (the lowest free one, as browsers pick) is reset by it on A, while B,
/// which hears of the new channel after, keeps it open with none of its messages
/// (docs/SCTP-UPSTREAM.md 6). The new channel must stay open and carry all of them.
fn new_channel_beside_a_redundant_reset(work: Workarounds) {
    let mut p = StackPair::new(1, "delay=10ms", work, false);
    p.connect();
    let bulk = p.a.create("bulk", ChannelInit::default());
    let old = p.a.create("old", ChannelInit::default());
    let opened = p.run_until(Duration::from_secs(5), |p| {
        p.a.opened("old").is_some() && p.b.announced("old").is_some()
    });
    assert!(opened, "channels not open in 5 s");
    p.b.announced("old").expect("announced").close();
    let (mut busy, mut next, count) = (0, 0, 20);
    let mut new: Option<DataChannel> = None;
    p.run_until(Duration::from_secs(10), |p| {
        keep_writing(&bulk, &mut busy, u32::MAX, 64 * 1024);
        if new.is_none() && p.a.closed("old").is_some() {
            new = Some(p.a.create("new", ChannelInit::default()));
        }
        if let Some(ch) = &new {
            keep_writing(ch, &mut next, count, usize::MAX);
        }
        let closed = p.a.closed("new").or(p.b.closed("new"));
        closed.is_some() || p.b.messages("new").count() == count as usize
    });
    let new = new.expect("the old channel closed on A");
    // What B makes of it a little later.
    let later = p.net.now() + Duration::from_millis(200);
    p.run_until(Duration::from_secs(1), |p| {
        p.wake = Some(later);
        p.net.now() >= later
    });
    // Since A heard of the old channel's close.
    let heard = p.a.closed("old").expect("closed");
    let (a, b) = (p.a.closed("new"), p.b.closed("new"));
    let (a, b) = (a.map(|t| t - heard), b.map(|t| t - heard));
    let on_b = p.b.announced("new").map(|h| h.state());
    println!(
        "old channel on stream {:?}, new one on {:?}: closed on A after {a:?}, on B after \
         {b:?}; on B {on_b:?} with {} messages",
        old.id(),
        new.id(),
        p.b.messages("new").count()
    );
    assert!(
        a.is_none() && b.is_none(),
        "the new channel (stream {:?}) was reset",
        new.id()
    );
    let got: Vec<Bytes> =
        p.b.messages("new")
            .map(|m| Bytes::copy_from_slice(m.as_bytes()))
            .collect();
    let want: Vec<Bytes> = (0..count).map(|i| message(i, SIZES)).collect();
    assert_eq!(got, want, "the new channel's messages");
}

#[test]
fn a_new_channel_survives_the_redundant_reset_of_a_closed_one() {
    new_channel_beside_a_redundant_reset(Workarounds::ALL);
}

#[test]
#[should_panic(expected = "was reset")]
fn a_new_channel_survives_the_redundant_reset_of_a_closed_one_off() {
    new_channel_beside_a_redundant_reset(Workarounds {
        stream_ids: false,
        ..Workarounds::ALL
    });
}
