//! Faults (issue 7, item 5): a remote peer killed mid-transfer, the network cut and
//! restored within the consent window, cut for good, and the service restarted. Each must
//! be detected, reported as a state change, and free what it held; a restarted service
//! must take new sessions at once.
//!
//! Consent timeouts are shortened through `IceConfig` (`disconnected_timeout` 1 s,
//! `failed_timeout` 3 s, `keepalive_interval` 500 ms: failed about 4 s after the last
//! answer) so the tests take seconds; the defaults are 5 s + 24 s (failed 29 s after the
//! last answer, inside RFC 7675's 30 s). The network is cut with the impairment relay's
//! black hole (`Relay::set_blackhole`).
//!
//! "Frees what it held" is checked through the surviving peer's UDP port: while the
//! connection lives, binding its host candidate's address fails (EADDRINUSE); once the
//! connection has failed, the ICE agent has closed the socket and the bind succeeds, with
//! the `PeerConnection` handle still alive. Channels must report closed.
//!
//! The service side of a killed peer (a SIGKILLed console peer's session freed from
//! `/api/sessions`) is `tests/service.rs` `vanished_peer_is_detected_and_its_session_freed`.

mod common;

use common::http::request;
use common::*;
use futures_lite::future;
use smolrtc::ice::IceConnectionState;
use smolrtc::testkit::impair::Impairment;
use smolrtc::{
    ChannelInit, ChannelState, Config, ConnectionState, DataChannel, Description, Event, Runtime,
};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DISCONNECTED: Duration = Duration::from_secs(1);
const FAILED: Duration = Duration::from_secs(3);
const KEEPALIVE: Duration = Duration::from_millis(500);

/// Loopback peer whose consent runs out quickly (see the file's header).
fn quick_consent(name: &str, failed: Duration) -> Config {
    let mut c = Config::loopback(name);
    c.ice.disconnected_timeout = DISCONNECTED;
    c.ice.failed_timeout = failed;
    c.ice.keepalive_interval = KEEPALIVE;
    c
}

fn peer(name: &str, failed: Duration) -> Peer {
    Peer::with_runtime(&Runtime::new().unwrap(), quick_consent(name, failed))
}

/// The 127.0.0.1 host candidate's address in `sdp`.
fn host_address(sdp: &str) -> SocketAddr {
    let line = sdp
        .split("\r\n")
        .find(|l| {
            l.starts_with("a=candidate") && l.contains(" 127.0.0.1 ") && l.contains("typ host")
        })
        .unwrap_or_else(|| panic!("no 127.0.0.1 host candidate in {sdp}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    format!("{}:{}", f[4], f[5]).parse().unwrap()
}

async fn local_address(p: &Peer) -> SocketAddr {
    host_address(
        &p.pc
            .local_description()
            .await
            .expect("local description")
            .sdp,
    )
}

fn port_in_use(addr: SocketAddr) -> bool {
    UdpSocket::bind(addr).is_err()
}

/// Waits (bounded) until nothing holds `addr` any more.
async fn port_freed(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if !port_in_use(addr) {
            return Some(t0.elapsed());
        }
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
    None
}

/// What a peer reported after a fault, timed from the fault.
#[derive(Debug, Default)]
struct Seen {
    connection: Vec<(f64, ConnectionState)>,
    ice: Vec<(f64, IceConnectionState)>,
    closed_channels: Vec<String>,
}

impl Seen {
    fn first(&self, s: ConnectionState) -> Option<f64> {
        self.connection
            .iter()
            .find(|(_, c)| *c == s)
            .map(|(t, _)| *t)
    }
}

/// Reads `p`'s events until `stop` says so or `limit` passes, noting state changes and
/// closed channels (times in seconds from `t0`).
async fn watch(
    p: &mut Peer,
    t0: Instant,
    limit: Duration,
    seen: &mut Seen,
    mut stop: impl FnMut(&Seen) -> bool,
) {
    let until = Instant::now() + limit;
    while !stop(seen) {
        match next_until(&mut p.events, until).await {
            Next::Event(e) => {
                let t = t0.elapsed().as_secs_f64();
                match e {
                    Event::ConnectionState(s) => seen.connection.push((t, s)),
                    Event::IceConnectionState(s) => seen.ice.push((t, s)),
                    Event::ChannelClosed(c) => seen.closed_channels.push(c.label().to_owned()),
                    _ => {}
                }
            }
            Next::Timeout | Next::Ended => return,
        }
    }
}

/// A peer that lost its remote for good: it reported disconnected, then failed within
/// `bound` of the fault, closed `channels`, refuses sends on them and freed its socket.
async fn assert_failed_and_freed(
    who: &str,
    p: &mut Peer,
    channels: &[DataChannel],
    addr: SocketAddr,
    t0: Instant,
    bound: Duration,
) {
    let mut seen = Seen::default();
    let labels: Vec<String> = channels.iter().map(|c| c.label().to_owned()).collect();
    watch(p, t0, bound + Duration::from_secs(3), &mut seen, |s| {
        s.first(ConnectionState::Failed).is_some()
            && labels.iter().all(|l| s.closed_channels.contains(l))
    })
    .await;
    let freed = port_freed(addr, Duration::from_secs(5)).await;
    println!(
        "{who}: connection states {:?}; ICE states {:?}; channels closed {:?}; socket {addr} freed {:?} after that",
        seen.connection, seen.ice, seen.closed_channels, freed
    );
    let disconnected = seen.first(ConnectionState::Disconnected);
    let failed = seen.first(ConnectionState::Failed);
    assert!(
        disconnected.is_some(),
        "{who}: no disconnected state: {seen:?}"
    );
    let failed = failed.unwrap_or_else(|| panic!("{who}: no failed state: {seen:?}"));
    assert!(disconnected.unwrap() < failed, "{who}: {seen:?}");
    assert!(
        failed <= bound.as_secs_f64(),
        "{who}: failed {failed:.1} s after the fault (bound {bound:?})"
    );
    for c in channels {
        assert!(
            seen.closed_channels.iter().any(|l| l == c.label()),
            "{who}: no closed event for {}",
            c.label()
        );
        assert_eq!(c.state(), ChannelState::Closed, "{who}: {}", c.label());
        assert!(
            c.send("after").await.is_err(),
            "{who}: send on a dead channel"
        );
    }
    assert!(
        freed.is_some(),
        "{who}: socket {addr} still bound 5 s after failing"
    );
}

// ---- (a) the remote peer killed mid-transfer ----

/// Kills the child on drop, whatever happened.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The receiving side is another process (`smolrtc bench peer`), SIGKILLed while 1 GiB is
/// on its way: no SCTP ABORT, no close_notify. The sender here must report disconnected,
/// then failed (consent: 1 s + 3 s here), close its channel and free its socket.
#[test]
fn remote_killed_mid_transfer_is_detected_and_freed() {
    init_log();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_smolrtc"))
            .args([
                "bench",
                "peer",
                "--role",
                "answer",
                "--direction",
                "recv",
                "--bytes",
                "1073741824",
                "--ice-address",
                "127.0.0.1",
            ])
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    block_on(async {
        let mut a = peer("sender", FAILED);
        let ch = a.channel("bench", ChannelInit::default()).await;
        let offer = a.pc.create_offer().await.unwrap();
        a.pc.set_local_description(offer).await.unwrap();
        let offer = a.complete_description().await;
        writeln!(stdin, "{}", offer.to_json()).unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let answer = Description::from_json(line.trim()).expect("answer line");
        a.pc.set_remote_description(answer).await.unwrap();
        a.expect("bench open", |e| {
            matches!(e, Event::ChannelOpen(c) if c.label() == "bench").then_some(())
        })
        .await;
        let addr = local_address(&a).await;
        assert!(port_in_use(addr), "the check below would prove nothing");
        // The bench peer's stream: byte i is i % 251. Send for a second, then kill it.
        ch.set_buffered_amount_low_threshold(512 * 1024);
        let states = States::default();
        let began = Instant::now();
        let mut off = 0u64;
        while began.elapsed() < Duration::from_secs(1) {
            pace(
                &ch,
                &mut a.events,
                1 << 20,
                began + Duration::from_secs(10),
                &states,
            )
            .await
            .unwrap();
            let m: Vec<u8> = (off..off + 16_384).map(|i| (i % 251) as u8).collect();
            ch.send(m).await.unwrap();
            off += 16_384;
        }
        let killed = Instant::now();
        child.0.kill().unwrap(); // SIGKILL
        let _ = child.0.wait();
        println!("killed the receiver after {off} bytes sent");
        // About a MiB is still unacknowledged: the transfer was live.
        println!("{} bytes unacknowledged", ch.buffered_amount());
        let bound = DISCONNECTED + FAILED + KEEPALIVE * 2 + Duration::from_secs(1);
        assert_failed_and_freed("sender", &mut a, &[ch], addr, killed, bound).await;
        a.pc.close().await;
    });
}

// ---- (b), (c) the network cut ----

/// Two peers through the relay (no impairment), each on its own smolrtc thread, with one
/// reliable channel open: its handles on both sides.
async fn cut_pair(
    config: impl Fn(&str) -> Config,
) -> (
    Peer,
    Peer,
    [DataChannel; 2],
    smolrtc::testkit::impair::Relay,
) {
    let mut a = Peer::with_runtime(&Runtime::new().unwrap(), config("A"));
    let mut b = Peer::with_runtime(&Runtime::new().unwrap(), config("B"));
    let ch = a.channel("bulk", ChannelInit::default()).await;
    let relay = connect_through_relay(
        &mut a,
        &mut b,
        Impairment::default(),
        Impairment::default(),
        1,
    )
    .await;
    let theirs = open_channels(&mut a, &mut b, &["bulk"], TIMEOUT).await;
    (a, b, [ch, theirs[0].clone()], relay)
}

/// The network is cut for 3 s in the middle of a 24 MiB transfer (consent window here:
/// disconnected after 1 s, failed after 1 + 10 s). Both sides report disconnected during
/// the cut and connected after it, never failed, and every byte arrives, once, in order.
#[test]
fn network_cut_within_the_consent_window_recovers() {
    init_log();
    cut_and_restore(Duration::from_secs(3), Duration::from_secs(10));
}

/// As [`network_cut_within_the_consent_window_recovers`], with a 10 s cut inside a 21 s
/// window (1 s + 20 s; the default window is 29 s). rtc-sctp gives up retransmitting
/// after its sixth T3-rtx expiry (`TimerConfig::max_t3_rtx_retrans` defaults to 5, not
/// unlimited as its doc says; `handle_timeout` then leaves the timer stopped), which with
/// smolrtc's 250 ms retransmission floor comes about 8 s into an outage: ICE reports
/// connected again but the association never sends its outstanding data, and the transfer
/// hangs for good.
#[test]
fn network_cut_of_10_s_within_the_consent_window_recovers() {
    init_log();
    cut_and_restore(Duration::from_secs(10), Duration::from_secs(20));
}

/// What [`cut_for`] did.
struct Cut {
    at: Instant,
    at_byte: u64,
    restored: Instant,
    /// From the restore to when data flowed again (30 s at most).
    resumed: Duration,
}

/// Once `progress` reaches `at`, cuts the link for `outage`, then waits for data to flow
/// again.
async fn cut_for(
    relay: &smolrtc::testkit::impair::Relay,
    outage: Duration,
    progress: &Cell<u64>,
    at: u64,
) -> Cut {
    while progress.get() < at {
        async_io::Timer::after(Duration::from_millis(5)).await;
    }
    relay.set_blackhole(true);
    let (cut, at_byte) = (Instant::now(), progress.get());
    async_io::Timer::after(outage).await;
    relay.set_blackhole(false);
    let restored = Instant::now();
    // When data flows again.
    let stalled = progress.get();
    let t0 = Instant::now();
    while progress.get() == stalled && t0.elapsed() < Duration::from_secs(30) {
        async_io::Timer::after(Duration::from_millis(5)).await;
    }
    Cut {
        at: cut,
        at_byte,
        restored,
        resumed: t0.elapsed(),
    }
}

/// `who`'s connection states across a cut from `cut` to `restored`: disconnected during
/// it, connected again after it, never failed. `shown` is them for the messages.
fn assert_recovered(
    who: &str,
    states: &[(Instant, ConnectionState)],
    (cut, restored): (Instant, Instant),
    shown: &[(String, ConnectionState)],
) {
    let when = |s: ConnectionState| states.iter().find(|(_, x)| *x == s).map(|(i, _)| *i);
    let down = when(ConnectionState::Disconnected)
        .unwrap_or_else(|| panic!("{who}: no disconnected state: {shown:?}"));
    assert!(
        down > cut && down < restored,
        "{who}: disconnected outside the cut"
    );
    let up = states
        .iter()
        .find(|(i, s)| *i > down && *s == ConnectionState::Connected)
        .unwrap_or_else(|| panic!("{who}: not connected again: {shown:?}"));
    assert!(up.0 >= restored, "{who}");
    assert!(
        !states.iter().any(|(_, s)| *s == ConnectionState::Failed),
        "{who}: failed inside the consent window"
    );
}

fn cut_and_restore(outage: Duration, failed: Duration) {
    block_on(async {
        let (mut a, mut b, [ch, _], relay) = cut_pair(|n| quick_consent(n, failed)).await;
        const TOTAL: u64 = 24 << 20;
        let progress = Cell::new(0u64);
        let t = future::zip(
            reliable_transfer(
                &mut a,
                &mut b,
                &ch,
                TOTAL,
                3,
                1 << 20,
                outage + Duration::from_secs(30),
                &progress,
            ),
            cut_for(&relay, outage, &progress, TOTAL / 4),
        )
        .await;
        let (t, c) = t;
        let (cut, at_byte, restored, resumed) = (c.at, c.at_byte, c.restored, c.resumed);
        let rel = |i: Instant| {
            i.checked_duration_since(cut)
                .map_or(-(cut.duration_since(i).as_secs_f64()), |d| d.as_secs_f64())
        };
        let show = |v: &[(Instant, ConnectionState)]| -> Vec<(String, ConnectionState)> {
            v.iter()
                .map(|(i, s)| (format!("{:+.2}", rel(*i)), *s))
                .collect()
        };
        println!(
            "cut at byte {at_byte} for {:.1} s; data again {:.2} s after the restore; transfer {:?} in {:.1} s ({} of {TOTAL} bytes); relay blackholed {} + {} datagrams",
            rel(restored),
            resumed.as_secs_f64(),
            t.error,
            t.seconds,
            t.got_bytes,
            relay.forward.blackholed.load(std::sync::atomic::Ordering::Relaxed),
            relay.backward.blackholed.load(std::sync::atomic::Ordering::Relaxed),
        );
        println!(
            "sender states (s from the cut): {:?}",
            show(&t.sender_states)
        );
        println!(
            "receiver states (s from the cut): {:?}",
            show(&t.receiver_states)
        );
        assert_eq!(t.error, None, "the transfer did not survive the cut");
        assert_eq!(t.got_bytes, TOTAL);
        assert!(
            relay
                .forward
                .blackholed
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
        for (who, states) in [
            ("sender", &t.sender_states),
            ("receiver", &t.receiver_states),
        ] {
            assert_recovered(who, states, (cut, restored), &show(states));
        }
        future::zip(a.pc.close(), b.pc.close()).await;
    });
}

/// The network is cut for good in the middle of a transfer: each side on its own reports
/// disconnected, then failed (1 s + 3 s here), closes the channel and frees its socket.
#[test]
fn network_cut_beyond_the_consent_window_fails_and_frees() {
    init_log();
    let bound = DISCONNECTED + FAILED + KEEPALIVE * 2 + Duration::from_secs(1);
    cut_for_good(|n| quick_consent(n, FAILED), bound);
}

/// [`network_cut_beyond_the_consent_window_fails_and_frees`] with the default consent
/// timeouts: failed 29 s after the last answer, inside RFC 7675's 30 s.
#[test]
#[ignore = "takes 30 s; run with --ignored"]
fn network_cut_with_default_consent_timeouts_fails_within_30_s() {
    init_log();
    cut_for_good(Config::loopback, Duration::from_secs(30));
}

fn cut_for_good(config: impl Fn(&str) -> Config, bound: Duration) {
    block_on(async {
        let (mut a, mut b, [ch, b_ch], relay) = cut_pair(config).await;
        let (addr_a, addr_b) = (local_address(&a).await, local_address(&b).await);
        assert!(port_in_use(addr_a) && port_in_use(addr_b));
        let progress = Cell::new(0u64);
        let cut: Cell<Option<Instant>> = Cell::new(None);
        let t = future::or(
            reliable_transfer(
                &mut a,
                &mut b,
                &ch,
                1 << 30,
                4,
                1 << 20,
                Duration::from_secs(60),
                &progress,
            ),
            async {
                while progress.get() < 4 << 20 {
                    async_io::Timer::after(Duration::from_millis(5)).await;
                }
                relay.set_blackhole(true);
                cut.set(Some(Instant::now()));
                // Hand over to the checks below once the cut is in place.
                async_io::Timer::after(Duration::from_millis(10)).await;
                Transfer::default()
            },
        )
        .await;
        let t0 = cut.get().expect("cut");
        println!("cut after {} bytes", progress.get());
        assert_eq!(t.error, None, "the transfer broke before the cut");
        future::zip(
            assert_failed_and_freed("A (sender)", &mut a, &[ch], addr_a, t0, bound),
            assert_failed_and_freed("B (receiver)", &mut b, &[b_ch], addr_b, t0, bound),
        )
        .await;
        drop(relay);
    });
}

// ---- (d) the service restarted ----

/// `smolrtc serve` on `port`.
fn serve(port: u16) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_smolrtc"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--ice-address",
                "127.0.0.1",
            ])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Waits until the service answers `GET /api/sessions`; fails if it exited.
fn ready(service: &mut Killed, addr: SocketAddr, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if let Some(status) = service.0.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(service.0.stderr.as_mut().unwrap(), &mut err);
            panic!("the service exited ({status}): {err}");
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            let r = request(addr, "GET", "/api/sessions", None, b"");
            if r.status == 200 {
                return t0.elapsed();
            }
        }
        assert!(
            t0.elapsed() < limit,
            "the service did not answer within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A client of the service at `addr` with an `echo` channel (complete SDP through
/// `POST /api/offer`), its echo checked.
async fn client(addr: SocketAddr, name: &str) -> (Peer, DataChannel) {
    let mut p = peer(name, FAILED);
    let echo = p.channel("echo", ChannelInit::default()).await;
    let answer = p.offer_to_service(addr).await;
    p.pc.set_remote_description(answer).await.unwrap();
    opened(&mut p, "echo").await;
    send_expect(&echo, &mut p, format!("hello from {name}")).await;
    (p, echo)
}

/// The service (the real binary) is SIGKILLed with a client connected and started again
/// at once on the same HTTP port: it must bind it (no EADDRINUSE from the old listener or
/// its connections), take a new client straight away, and the old client must notice its
/// peer is gone (failed, channel closed, socket freed).
#[test]
fn restarted_service_takes_new_sessions_at_once_and_old_clients_fail() {
    init_log();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut first = serve(port);
    let up = ready(&mut first, addr, Duration::from_secs(20));
    block_on(async {
        let (mut old, old_echo) = client(addr, "old").await;
        let old_addr = local_address(&old).await;
        let sessions = request(addr, "GET", "/api/sessions", None, b"").json();
        assert_eq!(
            sessions["sessions"].as_array().map(Vec::len),
            Some(1),
            "{sessions}"
        );

        first.0.kill().unwrap(); // SIGKILL: no goodbye to the client
        let _ = first.0.wait();
        let killed = Instant::now();
        let mut second = serve(port);
        let again = ready(&mut second, addr, Duration::from_secs(5));
        let (mut new, new_echo) = client(addr, "new").await;
        let new_session = killed.elapsed();
        let sessions = request(addr, "GET", "/api/sessions", None, b"").json();
        println!(
            "first start answered in {:.0} ms; restart answered {:.0} ms after the kill; a new client's echo worked {:.0} ms after it",
            up.as_secs_f64() * 1000.0,
            again.as_secs_f64() * 1000.0,
            new_session.as_secs_f64() * 1000.0
        );
        assert_eq!(
            sessions["sessions"].as_array().map(Vec::len),
            Some(1),
            "{sessions}"
        );
        assert!(again < Duration::from_secs(2), "restart took {again:?}");

        let bound = DISCONNECTED + FAILED + KEEPALIVE * 2 + Duration::from_secs(1);
        assert_failed_and_freed("old client", &mut old, &[old_echo], old_addr, killed, bound).await;
        // The new one is unaffected.
        send_expect(&new_echo, &mut new, "still here").await;
        new.pc.close().await;
        drop(second);
    });
}
