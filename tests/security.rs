//! What a stranger on the network can and cannot do to an open connection: ICE checks
//! without the signaled credentials get no answer, DTLS from an address ICE has not
//! validated never reaches a session, and a replayed ClientHello on an established
//! association starts no second handshake. (Fingerprint mismatch: tests/loopback.rs
//! `fingerprint_mismatch_is_refused`; garbage of every shape: `garbage_datagrams_...`.)
//!
//! And what a web page the device's owner visits can do to `smolrtc serve` through the
//! owner's browser: DNS rebinding (a foreign `Host`), cross-site WebSockets and requests
//! (a foreign `Origin`), and cross-site forms (`text/plain` posts) are refused.

mod common;

use common::forward::{route_candidate, Forwarder};
use common::*;
use smolrtc::ChannelInit;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc_stun::attributes::{AttrType, ATTR_USERNAME};
use rtc_stun::message::{Message as StunMessage, Setter, TransactionId, BINDING_REQUEST};

const CONTENT_HANDSHAKE: u8 = 22;
/// How long a silence counts as "no answer" (the peers answer within milliseconds here).
const QUIET: Duration = Duration::from_millis(1500);

/// A datagram and when it passed.
type Stamped = (Instant, Vec<u8>);

/// A [`Forwarder`] between the DTLS server (which sends to its front) and the DTLS client
/// at `target`, which records every datagram.
struct Tap {
    fwd: Forwarder,
    /// Datagrams from the client (target → front), in order.
    from_client: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Datagrams from the server (front → target), with when they passed.
    from_server: Arc<Mutex<Vec<Stamped>>>,
}

impl Tap {
    fn start(target: SocketAddr) -> Self {
        let from_client: Arc<Mutex<Vec<Vec<u8>>>> = Default::default();
        let from_server: Arc<Mutex<Vec<Stamped>>> = Default::default();
        let (c, s) = (from_client.clone(), from_server.clone());
        let fwd = Forwarder::start(
            target,
            move |d| {
                s.lock().unwrap().push((Instant::now(), d.to_vec()));
                true
            },
            move |d| c.lock().unwrap().push(d.to_vec()),
        );
        Tap {
            fwd,
            from_client,
            from_server,
        }
    }

    /// The server's address, learned from its first datagram.
    fn server(&self) -> SocketAddr {
        self.fwd.far("the server's address")
    }

    /// The client's first handshake datagram: its ClientHello.
    fn client_hello(&self) -> Vec<u8> {
        self.from_client
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.first() == Some(&CONTENT_HANDSHAKE))
            .expect("a ClientHello passed the tap")
            .clone()
    }

    /// Handshake records the server sent after `since`.
    fn server_handshakes_since(&self, since: Instant) -> usize {
        self.from_server
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, d)| *t >= since && d.first() == Some(&CONTENT_HANDSHAKE))
            .count()
    }
}

/// A connected pair: `a` offers and is the DTLS server, `b` answers (active, the client)
/// and is reached only through the tap; `a` knows `b` only from its checks.
async fn tapped_pair() -> (Peer, Peer, Tap, smolrtc::DataChannel) {
    tapped_pair_seeing_offer(|_| {}).await
}

/// [`tapped_pair`], calling `seen` with `a`'s complete offer before `b` gets it.
async fn tapped_pair_seeing_offer(
    seen: impl FnOnce(&str),
) -> (Peer, Peer, Tap, smolrtc::DataChannel) {
    tapped_pair_editing(Peer::new("A"), seen, |_| {}).await
}

/// [`tapped_pair_seeing_offer`] with `a` made by the caller, and `edit` applied to the
/// answer (after the tap's candidate is put in) before `a` gets it.
async fn tapped_pair_editing(
    mut a: Peer,
    seen: impl FnOnce(&str),
    edit: impl FnOnce(&mut String),
) -> (Peer, Peer, Tap, smolrtc::DataChannel) {
    let mut b = Peer::new("B");
    let ch = a.channel("sec", ChannelInit::default()).await;
    let mut tap = None;
    connect_editing(
        &mut a,
        &mut b,
        |offer| {
            seen(&offer.sdp);
            offer.sdp = strip_candidates(&offer.sdp);
        },
        |answer| {
            route_candidate(&mut answer.sdp, |target| {
                let t = Tap::start(target);
                let front = t.fwd.front();
                tap = Some(t);
                front
            });
            edit(&mut answer.sdp);
        },
    )
    .await;
    opened(&mut a, "sec").await;
    opened(&mut b, "sec").await;
    (a, b, tap.expect("tap"), ch)
}

/// The channel still carries a message from `a` to `b`.
async fn still_works(ch: &smolrtc::DataChannel, b: &mut Peer, text: &str) {
    send_expect(ch, b, text).await;
}

/// RFC 6347 §4.2.8 leaves renegotiation to the application; WebRTC has none. A ClientHello
/// replayed from the client's own (validated) address after the handshake is ignored: the
/// server answers it with no handshake flight, and the association goes on.
#[test]
fn replayed_client_hello_on_an_established_association_starts_no_handshake() {
    run(async {
        let (_a, mut b, tap, ch) = tapped_pair().await;
        still_works(&ch, &mut b, "before").await;
        let hello = tap.client_hello();
        let since = Instant::now();
        for _ in 0..3 {
            tap.fwd.inject(&hello);
            std::thread::sleep(Duration::from_millis(300));
        }
        std::thread::sleep(QUIET);
        assert_eq!(
            tap.server_handshakes_since(since),
            0,
            "the server answered a replayed ClientHello with a handshake flight"
        );
        still_works(&ch, &mut b, "after").await;
    });
}

/// DTLS from an address ICE never validated is dropped before DTLS. A stranger replays a
/// ClientHello (from an earlier session) at a DTLS server all through its handshake: were
/// it let through, the server would take it for its client's (rtc-dtls knows one remote)
/// and the real handshake would break. The session connects, and the stranger never gets
/// an answer.
#[test]
fn dtls_from_an_unknown_address_never_reaches_the_session() {
    run(async {
        let hello = {
            let (_a, _b, tap, _ch) = tapped_pair().await;
            tap.client_hello()
        };
        let stranger = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, stop2) = (stranger.clone(), stop.clone());
        let (_a, mut b, _tap, ch) = tapped_pair_seeing_offer(move |offer| {
            let line = offer
                .split("\r\n")
                .find(|l| l.starts_with("a=candidate") && l.contains("127.0.0.1"))
                .expect("A's loopback candidate");
            let f: Vec<&str> = line.split_whitespace().collect();
            let server: SocketAddr = format!("{}:{}", f[4], f[5]).parse().unwrap();
            std::thread::spawn(move || {
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = s2.send_to(&hello, server);
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        })
        .await;
        still_works(&ch, &mut b, "undisturbed").await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        stranger.set_read_timeout(Some(QUIET)).unwrap();
        let mut buf = [0u8; 2048];
        match stranger.recv_from(&mut buf) {
            Ok((n, from)) => panic!("{n} bytes came back from {from} to a stranger"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
    });
}

/// A raw STUN attribute (PRIORITY, ICE-CONTROLLED) for [`binding_request`].
struct Raw(AttrType, Vec<u8>);

impl Setter for Raw {
    fn add_to(&self, m: &mut StunMessage) -> rtc_shared::error::Result<()> {
        m.add(self.0, &self.1);
        Ok(())
    }
}

/// An ICE connectivity check for the agent whose credentials are `ufrag`/`pwd`, claiming
/// to come from the peer `remote_ufrag`.
fn binding_request(ufrag: &str, remote_ufrag: &str, pwd: &str) -> Vec<u8> {
    let crypto = rtc_crypto::providers::RingCrypto;
    let m = binding_with(
        format!("{ufrag}:{remote_ufrag}"),
        vec![
            Box::new(Raw(AttrType(0x8029), 7u64.to_be_bytes().to_vec())),
            Box::new(
                rtc_stun::integrity::MessageIntegrity::new_short_term_integrity_with_provider(
                    pwd.to_owned(),
                    &crypto,
                ),
            ),
            Box::new(rtc_stun::fingerprint::FINGERPRINT),
        ],
    );
    m.raw.clone()
}

/// A Binding request with USERNAME `username` and a PRIORITY, then `rest` (a role,
/// MESSAGE-INTEGRITY, FINGERPRINT: what the caller forges).
fn binding_with<'a>(username: String, rest: Vec<Box<dyn Setter + 'a>>) -> StunMessage {
    let mut attrs: Vec<Box<dyn Setter + 'a>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(rtc_stun::textattrs::TextAttribute::new(
            ATTR_USERNAME,
            username,
        )),
        Box::new(Raw(
            AttrType(0x0024),
            0x6e00_1eff_u32.to_be_bytes().to_vec(),
        )),
    ];
    attrs.extend(rest);
    let mut m = StunMessage::new();
    m.build(&attrs).unwrap();
    m
}

fn sdp_attr(sdp: &str, name: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix(&format!("a={name}:")))
        .unwrap_or_else(|| panic!("no a={name} in {sdp}"))
        .trim()
        .to_owned()
}

/// Kinds of STUN answers a socket got within [`QUIET`]: (successes, errors).
fn stun_answers(sock: &UdpSocket) -> (usize, usize) {
    sock.set_read_timeout(Some(QUIET)).unwrap();
    let (mut ok, mut err) = (0, 0);
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        match (n >= 20).then(|| u16::from_be_bytes([buf[0], buf[1]])) {
            Some(0x0101) => ok += 1,
            Some(0x0111) => err += 1,
            _ => {}
        }
    }
    (ok, err)
}

/// Connectivity checks need the signaled credentials: a wrong password or a wrong ufrag
/// gets no success answer (so no pair, no path to DTLS), while the same check with the
/// right ones does (which shows the forged checks were well formed).
#[test]
fn stun_checks_without_the_signaled_credentials_get_no_success() {
    run(async {
        let (a, mut b, tap, ch) = tapped_pair().await;
        let local = a.pc.local_description().await.unwrap().sdp;
        let remote = a.pc.remote_description().await.unwrap().sdp;
        let (ufrag, pwd) = (sdp_attr(&local, "ice-ufrag"), sdp_attr(&local, "ice-pwd"));
        let remote_ufrag = sdp_attr(&remote, "ice-ufrag");
        let server = tap.server();
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();

        let wrong_pwd = binding_request(&ufrag, &remote_ufrag, "0123456789abcdefghijkl");
        let wrong_ufrag = binding_request("nope", &remote_ufrag, &pwd);
        for check in [&wrong_pwd, &wrong_ufrag] {
            stranger.send_to(check, server).unwrap();
        }
        assert_eq!(stun_answers(&stranger).0, 0, "a forged check was answered");

        let right = binding_request(&ufrag, &remote_ufrag, &pwd);
        stranger.send_to(&right, server).unwrap();
        assert_eq!(
            stun_answers(&stranger).0,
            1,
            "the control check with the right credentials got no success answer"
        );
        still_works(&ch, &mut b, "after the checks").await;
    });
}

#[test]
fn tap_sees_the_handshake() {
    // The other tests rely on the tap seeing the DTLS handshake both ways.
    run(async {
        let (_a, mut b, tap, ch) = tapped_pair().await;
        assert!(tap.server_handshakes_since(Instant::now() - Duration::from_secs(60)) > 0);
        assert_eq!(tap.client_hello()[0], CONTENT_HANDSHAKE);
        still_works(&ch, &mut b, "tap").await;
    });
}

/// The attribute types of a STUN message (empty if `d` is not STUN).
fn stun_attr_types(d: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    if d.len() < 20 || d[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return out;
    }
    let mut at = 20;
    while at + 4 <= d.len() {
        out.push(u16::from_be_bytes([d[at], d[at + 1]]));
        let len = u16::from_be_bytes([d[at + 2], d[at + 3]]) as usize;
        at += 4 + ((len + 3) & !3);
    }
    out
}

const ICE_CONTROLLED: u16 = 0x8029;
const ICE_CONTROLLING: u16 = 0x802a;

/// rtc-ice 0.21.1 settles an ICE-CONTROLLING/CONTROLLED conflict (RFC 8445 §7.3.1.1) before
/// it checks USERNAME and MESSAGE-INTEGRITY. A binding request from the peer's own address
/// (spoofable by anyone on the path) with a wrong USERNAME, no MESSAGE-INTEGRITY and an
/// ICE-CONTROLLING attribute with the highest tie-breaker would make the controlling agent
/// answer 487 and turn controlled. smolrtc drops such requests before rtc-ice sees them: no
/// answer comes back, A's next checks still say ICE-CONTROLLING, and the channel works.
#[test]
fn unauthenticated_binding_request_does_not_flip_the_ice_role() {
    run(async {
        let (a, mut b, tap, ch) = tapped_pair().await;
        let local = a.pc.local_description().await.unwrap().sdp;
        let ufrag = sdp_attr(&local, "ice-ufrag");
        let m = binding_with(
            format!("{ufrag}:intruder"),
            vec![Box::new(Raw(
                AttrType(ICE_CONTROLLING),
                u64::MAX.to_be_bytes().to_vec(),
            ))],
        );
        // From B's address as A knows it (the tap's front socket): a known remote, so a
        // conflict would be answered with a 487 there.
        let since = Instant::now();
        for _ in 0..3 {
            tap.fwd.inject(&m.raw);
        }
        // A's next binding request (a consent check, every 2 s) after the forged ones.
        let deadline = Instant::now() + Duration::from_secs(6);
        let next_check = loop {
            let found = tap
                .from_server
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _)| *t >= since + Duration::from_millis(100))
                .find(|(_, d)| d.len() >= 20 && d[0..2] == [0x00, 0x01])
                .map(|(_, d)| d.clone());
            if let Some(d) = found {
                break d;
            }
            assert!(
                Instant::now() < deadline,
                "A sent no check after the forged ones"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let errors = tap
            .from_server
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, d)| *t >= since && d.len() >= 20 && d[0..2] == [0x01, 0x11])
            .count();
        assert_eq!(
            errors, 0,
            "A answered the forged request with an error (487)"
        );
        let attrs = stun_attr_types(&next_check);
        assert!(
            attrs.contains(&ICE_CONTROLLING) && !attrs.contains(&ICE_CONTROLLED),
            "A's role flipped: its next check carries {attrs:x?}"
        );
        still_works(&ch, &mut b, "after the forged role").await;
    });
}

/// The remote-candidate cap counts every source: A (max_remote_candidates = 4) gets an
/// answer with 3 candidates (B's, through the tap, and two more), takes one trickled
/// candidate, refuses the next with `Error::Limit` naming the limit, and does not answer
/// a correctly authenticated check from a new address (it would be a fifth, peer-reflexive
/// candidate); the connection goes on.
#[test]
fn remote_candidates_are_capped_across_description_trickle_and_checks() {
    run(async {
        let mut config = loopback_config("A");
        config.ice.max_remote_candidates = 4;
        let extra = |sdp: &mut String| {
            let at = sdp.find("a=candidate").expect("a candidate");
            for port in [9, 13] {
                sdp.insert_str(
                    at,
                    &format!("a=candidate:{port} 1 udp 2122260223 127.0.0.2 {port} typ host\r\n"),
                );
            }
        };
        let (a, mut b, tap, ch) =
            tapped_pair_editing(Peer::with_config(config), |_| {}, extra).await;
        let candidate = |port: u16| smolrtc::IceCandidateInit {
            candidate: format!("candidate:{port} 1 udp 2122260223 127.0.0.3 {port} typ host"),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        };
        a.pc.add_ice_candidate(candidate(17)).await.unwrap();
        // The same one again takes no place.
        a.pc.add_ice_candidate(candidate(17)).await.unwrap();
        match a.pc.add_ice_candidate(candidate(19)).await {
            Err(smolrtc::Error::Limit(e)) => {
                assert_eq!((e.name(), e.value()), ("max_remote_candidates", 4), "{e}")
            }
            other => panic!("a fifth candidate was not refused: {other:?}"),
        }

        let local = a.pc.local_description().await.unwrap().sdp;
        let remote = a.pc.remote_description().await.unwrap().sdp;
        let (ufrag, pwd) = (sdp_attr(&local, "ice-ufrag"), sdp_attr(&local, "ice-pwd"));
        let check = binding_request(&ufrag, &sdp_attr(&remote, "ice-ufrag"), &pwd);
        let server = tap.server();
        let newcomer = UdpSocket::bind("127.0.0.1:0").unwrap();
        newcomer.send_to(&check, server).unwrap();
        assert_eq!(
            stun_answers(&newcomer),
            (0, 0),
            "a check from a new address past the cap was answered"
        );
        still_works(&ch, &mut b, "at the cap").await;
    });
}

/// A client of `h` with an `echo` channel, connected through `POST /api/offer`: the peer,
/// its channel, its own ufrag and the service side's ufrag and password.
async fn echo_client(
    h: &smolrtc::service::ServiceHandle,
    name: &str,
) -> (Peer, smolrtc::DataChannel, String, String, String) {
    let mut p = Peer::new(name);
    let ch = p.channel("echo", ChannelInit::default()).await;
    let answer = p.offer_to_service(h.addr).await;
    let local = p.pc.local_description().await.unwrap().sdp;
    let (srv_ufrag, srv_pwd) = (
        sdp_attr(&answer.sdp, "ice-ufrag"),
        sdp_attr(&answer.sdp, "ice-pwd"),
    );
    p.pc.set_remote_description(answer).await.unwrap();
    (p, ch, sdp_attr(&local, "ice-ufrag"), srv_ufrag, srv_pwd)
}

/// `ch` (labelled `echo`) sends `text` and `p` gets it back.
async fn echoes(p: &mut Peer, ch: &smolrtc::DataChannel, text: &str) {
    send_expect(ch, p, text).await;
}

/// The single-port attack of issue 13: while thousands of binding requests naming a
/// signaled attacker's own session (correctly authenticated, and not) and an in-use
/// victim's session (forged) arrive from as many source addresses on 127.0.0.0/8, three
/// new clients connect through the same port and complete DTLS (their channels echo), and
/// the victim's route, in use, keeps carrying its channel. Before routes needed an
/// authenticated check, each request taught the demultiplexer a route and past 4,096 an
/// arbitrary one (a client's) was forgotten.
#[test]
fn single_port_flood_neither_stops_new_clients_nor_evicts_a_route_in_use() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    init_log();
    let (_rt, h) = common::service::start(|c| c.single_port = Some(0));
    block_on(async {
        let (mut attacker, att_ch, att_ufrag, att_srv_ufrag, att_srv_pwd) =
            echo_client(&h, "attacker").await;
        opened(&mut attacker, "echo").await;
        echoes(&mut attacker, &att_ch, "attacker up").await;
        let (mut victim, v_ch, v_ufrag, v_srv_ufrag, _) = echo_client(&h, "victim").await;
        opened(&mut victim, "echo").await;
        echoes(&mut victim, &v_ch, "victim up").await;
        let port = {
            let remote = victim
                .expect("selected pair", |e| match e {
                    smolrtc::Event::SelectedCandidatePair { remote, .. } => Some(remote.clone()),
                    _ => None,
                })
                .await;
            remote
                .split_whitespace()
                .nth(5)
                .unwrap()
                .parse::<u16>()
                .unwrap()
        };
        let shared: SocketAddr = ([127, 0, 0, 1], port).into();
        let requests = [
            binding_request(&att_srv_ufrag, &att_ufrag, &att_srv_pwd),
            binding_request(&att_srv_ufrag, &att_ufrag, "not-the-password-at-all"),
            binding_request(&v_srv_ufrag, &v_ufrag, "not-the-password-at-all"),
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let flood = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // A new source address (and port) for every request.
                    let ip = [127, 1 + (i >> 16) as u8 % 200, (i >> 8) as u8, i as u8];
                    if let Ok(s) = UdpSocket::bind(SocketAddr::from((ip, 0))) {
                        let _ = s.send_to(&requests[i % requests.len()], shared);
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                    // At most ~6,400 a second: a flood of routes, not of CPU (which a
                    // debug build on a shared 2-core machine would lose to any flood).
                    if i.is_multiple_of(64) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        };
        // Past the old 4,096-route table before the clients come.
        while sent.load(Ordering::Relaxed) < 5000 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut clients = Vec::new();
        for i in 0..3 {
            clients.push(echo_client(&h, &format!("new {i}")).await);
        }
        for (i, (p, ch, ..)) in clients.iter_mut().enumerate() {
            opened(p, "echo").await;
            echoes(p, ch, &format!("new client {i}")).await;
        }
        echoes(&mut victim, &v_ch, "victim during the flood").await;
        stop.store(true, Ordering::Relaxed);
        flood.join().unwrap();
        eprintln!("flood: {} requests", sent.load(Ordering::Relaxed));
        echoes(&mut victim, &v_ch, "victim after the flood").await;
        echoes(&mut attacker, &att_ch, "attacker after the flood").await;
    });
}

// ------------------------------------------------------------------ a web page's attacks

use common::http::{request_from, ws_read_text, ws_upgrade_from, Reply};
use smolrtc::service::{ServiceConfig, ServiceHandle};

fn start_service(tweak: impl FnOnce(&mut ServiceConfig)) -> (smolrtc::Runtime, ServiceHandle) {
    init_log();
    common::service::start(tweak)
}

fn call(h: &ServiceHandle, method: &str, path: &str, headers: &[&str]) -> Reply {
    request_from(h.addr, None, method, path, headers, None, b"")
}

fn error_of(r: &Reply) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_owned()
}

fn session_count(h: &ServiceHandle) -> usize {
    let r = call(h, "GET", "/api/sessions", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["sessions"].as_array().unwrap().len()
}

/// A WHIP session that never connects; its `Location`.
fn whip_session(h: &ServiceHandle) -> String {
    let offer = block_on(async {
        let p = Peer::new("whip");
        p.channel("echo", ChannelInit::default()).await;
        p.pc.create_offer().await.unwrap().sdp
    });
    let r = request_from(
        h.addr,
        None,
        "POST",
        "/whip",
        &[],
        Some("application/sdp"),
        offer.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.header("location").unwrap().to_owned()
}

/// A complete offer, as JSON, from a peer that will not connect.
fn offer_json() -> String {
    block_on(async {
        let mut p = Peer::new("offer");
        p.channel("echo", ChannelInit::default()).await;
        let offer = p.pc.create_offer().await.unwrap();
        p.pc.set_local_description(offer).await.unwrap();
        p.complete_description().await.to_json()
    })
}

/// DNS rebinding: a page at `http://evil.example` whose name now resolves to the device
/// sends `Host: evil.example`. Every request but the page itself gets `421` JSON (and
/// changes nothing); IP literals, localhost, the host name (also `.local`) and
/// `allow_hosts` names are served; HTTP/1.1 without `Host` gets `400`.
#[test]
fn dns_rebinding_host_gets_421_except_for_the_page() {
    let (_rt, h) = start_service(|c| c.allow_hosts = vec!["device.example".into()]);
    let port = h.addr.port();
    let evil = "Host: evil.example";
    let location = whip_session(&h);
    for (method, path) in [
        ("GET", "/api/sessions"),
        ("DELETE", location.as_str()),
        ("POST", "/api/offer"),
        ("GET", "/ws"),
        ("GET", "/favicon.ico"),
    ] {
        let r = call(&h, method, path, &[evil]);
        assert_eq!(r.status, 421, "{method} {path}: {}", r.text());
        let e = error_of(&r);
        assert!(
            e.contains("evil.example") && e.contains("--allow-host"),
            "{e}"
        );
    }
    let (_, r) = ws_upgrade_from(h.addr, None, "/ws", &[evil]);
    assert_eq!(r.status, 421, "{}", r.text());
    // In absolute form, the target's name counts.
    let r = call(&h, "GET", "http://evil.example/api/sessions", &[]);
    assert_eq!(r.status, 421, "{}", r.text());
    assert_eq!(session_count(&h), 1, "the DELETE changed nothing");
    // The page itself loads whatever the name.
    for path in ["/", "/app.js", "/style.css"] {
        assert_eq!(call(&h, "GET", path, &[evil]).status, 200, "{path}");
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_ascii_lowercase();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".into(),
        format!("{name}:{port}"),
        format!("{name}.local:{port}"),
        "device.example".into(),
    ] {
        let r = call(&h, "GET", "/api/sessions", &[&format!("Host: {host}")]);
        assert_eq!(r.status, 200, "Host: {host}: {}", r.text());
    }
    let mut s = common::http::connect_from(h.addr, None);
    use std::io::{Read, Write};
    s.write_all(b"GET /api/sessions HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let r = common::http::parse(&raw);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(error_of(&r).contains("Host"), "{}", r.text());
}

/// A cross-site page (or a sandboxed one, `Origin: null`) can neither open a signaling
/// WebSocket nor POST, PATCH or DELETE (`403` JSON, nothing changed); the service's own
/// origin, an allowed one, and clients without `Origin` can.
#[test]
fn cross_site_origin_is_refused_on_websockets_and_state_changing_requests() {
    let (_rt, h) = start_service(|c| c.allow_origins = vec!["https://device.example".into()]);
    let own = format!("Origin: http://{}", h.addr);
    let evil = "Origin: http://evil.example";
    for origin in [evil, "Origin: null", "Origin: https://evil.example"] {
        let (_, r) = ws_upgrade_from(h.addr, None, "/ws", &[origin]);
        assert_eq!(r.status, 403, "{origin}: {}", r.text());
        assert!(error_of(&r).contains("--allow-origin"), "{}", r.text());
    }
    let offer = offer_json();
    let r = request_from(
        h.addr,
        None,
        "POST",
        "/api/offer",
        &[evil],
        Some("application/json"),
        offer.as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(session_count(&h), 0, "the cross-site POST opened a session");
    let location = whip_session(&h);
    for method in ["DELETE", "PATCH"] {
        let r = call(&h, method, &location, &[evil]);
        assert_eq!(r.status, 403, "{method}: {}", r.text());
    }
    assert_eq!(
        session_count(&h),
        1,
        "the cross-site DELETE closed the session"
    );
    // Reading is not refused (the browser keeps a cross-site page from reading the answer).
    assert_eq!(call(&h, "GET", "/api/sessions", &[evil]).status, 200);
    // Own origin, an allowed one, none at all.
    for headers in [
        vec![own.as_str()],
        vec!["Origin: https://device.example"],
        vec![],
    ] {
        let (mut ws, r) = ws_upgrade_from(h.addr, None, "/ws?role=offer", &headers);
        assert_eq!(r.status, 101, "{headers:?}: {}", r.text());
        assert!(ws_read_text(&mut ws).contains("\"description\""));
    }
    let r = request_from(
        h.addr,
        None,
        "POST",
        "/api/offer",
        &[&own],
        Some("application/json"),
        offer.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(call(&h, "DELETE", &location, &[&own]).status, 200);
}

/// A cross-site form can post `text/plain` without a CORS preflight: `POST /api/offer` and
/// `/api/report` take `application/json` only (`415` naming it, and no session), WHIP
/// `application/sdp` only.
#[test]
fn text_plain_posts_get_415() {
    let (_rt, h) = start_service(|_| {});
    let offer = offer_json();
    for ct in [
        Some("text/plain"),
        None,
        Some("application/x-www-form-urlencoded"),
    ] {
        for path in ["/api/offer", "/api/report"] {
            let body = if path == "/api/offer" {
                offer.as_bytes()
            } else {
                b"{}"
            };
            let r = request_from(h.addr, None, "POST", path, &[], ct, body);
            assert_eq!(r.status, 415, "{path} {ct:?}: {}", r.text());
            assert!(
                error_of(&r).contains("expected Content-Type application/json"),
                "{}",
                r.text()
            );
        }
        let r = request_from(h.addr, None, "POST", "/whip", &[], ct, b"v=0");
        assert_eq!(r.status, 415, "{}", r.text());
    }
    assert_eq!(session_count(&h), 0);
    // Parameters are fine.
    let r = request_from(
        h.addr,
        None,
        "POST",
        "/api/offer",
        &[],
        Some("application/json; charset=utf-8"),
        offer.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request_from(
        h.addr,
        None,
        "POST",
        "/api/report",
        &[],
        Some("Application/JSON"),
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}
