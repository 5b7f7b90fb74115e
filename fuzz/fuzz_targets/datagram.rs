//! Whole UDP datagrams into a connected peer: STUN, DTLS records and garbage, from the
//! address of the connected peer and from a stranger's.
//!
//! # The set-up, made once per process
//!
//! Two smolrtc peer connections, A (offerer: ICE controlling, DTLS server) and B (answerer:
//! ICE controlled, DTLS client), each on 127.0.0.1, with a negotiated channel on which B
//! echoes every message. The descriptions are edited in transit so that each peer's only
//! remote candidate is the harness's relay socket R: everything between A and B crosses
//! R, so R *is* the peer's address, the remote end of the selected pair. A fuzz input is
//! sent from R (it reaches ICE, and DTLS, exactly as the real peer's datagrams do) or from
//! a stranger socket U (an address no candidate names).
//!
//! After every input (every `SMOLRTC_FUZZ_ECHO_EVERY` inputs) a message goes A → B → A on
//! the channel: it must come back within 5 s. Both peers read their sockets in order, so
//! when the echo is back every datagram sent before it has been handled. A peer that
//! stops echoing, fails or closes after an input the fuzzer could not have authenticated
//! is a bug: the input panics the harness, and libFuzzer saves it. (STUN that carries a
//! valid MESSAGE-INTEGRITY is the real peer speaking, and may legitimately change ICE's
//! state — roles, nomination; if the pair breaks after one, it is rebuilt and counted.)
//!
//! # Input layout
//!
//! ```text
//! byte 0: flags   bit 0      0: to B (DTLS client)      1: to A (DTLS server)
//!                 bit 1      0: from R (the peer)       1: from U (a stranger)
//!                 bits 2..=4 shape, modulo 5:
//!                   0 raw     the rest, as it is
//!                   1 stun    a STUN header is made: type = rest[0..2] & 0x3fff, magic
//!                             cookie, transaction id = rest[2..14], length fixed; the
//!                             attributes are rest[14..]
//!                   2 auth    as stun, plus USERNAME, MESSAGE-INTEGRITY (the target's
//!                             ICE password) and FINGERPRINT: checks and consent requests
//!                             as the real peer would send them
//!                   3 dtls    records: each 13-byte header has its content type forced
//!                             into 20..=63 and its length clipped to what follows
//!                   4 replay  rest[0] picks one of the last 16 datagrams R delivered to
//!                             the target; then (offset:u16, xor:u8) triples flip bytes
//!                 bit 5      dtls: keep the declared record lengths
//! ```

#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;
use smolrtc::{ChannelInit, Config, ConnectionState, DataChannel, Event, EventStream};
use smolrtc::{Message, PeerConnection};
use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

#[global_allocator]
static ALLOC: alloc_limit::Limited = alloc_limit::Limited;

/// How long an echo may take before the peer is declared stuck.
const ECHO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long setting up a pair may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Datagrams R remembers per direction, for replays.
const REPLAY_RING: usize = 16;
const STUN_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_FINGERPRINT: u16 = 0x8028;

/// ICE credentials read from a description.
#[derive(Clone)]
struct Creds {
    ufrag: String,
    pwd: String,
}

/// What R delivered to each peer (index 0: to A, 1: to B): the latest datagrams, for
/// replays, and the first ones (the handshake), for seeds.
#[derive(Default)]
struct Seen {
    recent: [VecDeque<Vec<u8>>; 2],
    first: [Vec<Vec<u8>>; 2],
}

type Rings = Arc<Mutex<Seen>>;

/// First datagrams per direction kept for seeds.
const SEED_DATAGRAMS: usize = 8;

struct Pair {
    a: PeerConnection,
    b: PeerConnection,
    channel: DataChannel,
    events_a: EventStream,
    /// Set by B's event thread when B fails or closes.
    b_down: Arc<AtomicBool>,
    relay: Arc<UdpSocket>,
    stop_relay: Arc<AtomicBool>,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    a_creds: Creds,
    b_creds: Creds,
    rings: Rings,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop_relay.store(true, Ordering::Relaxed);
        block_on_timeout(Duration::from_secs(2), async {
            self.a.close().await;
            self.b.close().await;
        });
    }
}

struct Harness {
    pair: Option<Pair>,
    stranger: UdpSocket,
    inputs: u64,
    echo_every: u64,
    rebuilt: u64,
}

fn harness() -> &'static Mutex<Harness> {
    static H: OnceLock<Mutex<Harness>> = OnceLock::new();
    H.get_or_init(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = env_logger::builder().is_test(false).try_init();
        }
        let echo_every = std::env::var("SMOLRTC_FUZZ_ECHO_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        let pair = Pair::new();
        if let Some(dir) = std::env::var_os("SMOLRTC_FUZZ_WRITE_SEEDS") {
            write_seeds(&pair, std::path::Path::new(&dir));
        }
        Mutex::new(Harness {
            pair: Some(pair),
            stranger: UdpSocket::bind("127.0.0.1:0").expect("stranger socket"),
            inputs: 0,
            echo_every,
            rebuilt: 0,
        })
    })
}

fn block_on_timeout<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    async_io::block_on(futures_lite::future::or(async { Some(f.await) }, async {
        async_io::Timer::after(limit).await;
        None
    }))
}

/// The next event `f` maps to `Some`, others dropped; `None` on timeout or close.
fn wait_for<T>(
    events: &mut EventStream,
    limit: Duration,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> Option<T> {
    block_on_timeout(limit, async {
        while let Some(e) = events.next().await {
            if let Some(t) = f(&e) {
                return Some(t);
            }
        }
        None
    })
    .flatten()
}

fn creds(sdp: &str) -> Creds {
    let s = smolrtc::sdp::parse(sdp).expect("our own description parses");
    Creds {
        ufrag: s.ice_ufrag,
        pwd: s.ice_pwd,
    }
}

/// The address of the 127.0.0.1 UDP host candidate in `sdp`.
fn host_addr(sdp: &str) -> SocketAddr {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|c| c.split_ascii_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 7 && f[2].eq_ignore_ascii_case("udp") && f[4] == "127.0.0.1")
        .map(|f| {
            format!("{}:{}", f[4], f[5])
                .parse()
                .expect("candidate address")
        })
        .expect("a 127.0.0.1 udp host candidate")
}

/// `sdp` with its candidates replaced by one host candidate at `addr`.
fn via(sdp: &str, addr: SocketAddr) -> String {
    let mut lines: Vec<String> = sdp
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("a=candidate") && !l.starts_with("a=end-of-candidates"))
        .map(str::to_owned)
        .collect();
    lines.push(format!(
        "a=candidate:1 1 udp 2130706431 {} {} typ host",
        addr.ip(),
        addr.port()
    ));
    lines.push("a=end-of-candidates".into());
    lines.join("\r\n") + "\r\n"
}

fn complete(pc: &PeerConnection, events: &mut EventStream) -> String {
    wait_for(events, SETUP_TIMEOUT, |e| {
        matches!(e, Event::IceCandidate(None)).then_some(())
    })
    .expect("gathering completes");
    block_on_timeout(SETUP_TIMEOUT, pc.local_description())
        .flatten()
        .expect("local description")
        .sdp
}

impl Pair {
    fn new() -> Pair {
        let a = PeerConnection::new(Config::loopback("A")).expect("peer A");
        let b = PeerConnection::new(Config::loopback("B")).expect("peer B");
        let (mut events_a, mut events_b) = (a.events(), b.events());
        let setup = |pc: &PeerConnection| {
            block_on_timeout(
                SETUP_TIMEOUT,
                pc.create_data_channel("fuzz-echo", ChannelInit::negotiated(0)),
            )
            .expect("create channel in time")
            .expect("create channel")
        };
        let channel = setup(&a);
        let _b_channel = setup(&b);

        let relay = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("relay socket"));
        let r_addr = relay.local_addr().expect("relay address");

        let offer = block_on_timeout(SETUP_TIMEOUT, async {
            let offer = a.create_offer().await.expect("offer");
            a.set_local_description(offer).await.expect("local offer");
        });
        offer.expect("offer in time");
        let offer = complete(&a, &mut events_a);
        let (a_addr, a_creds) = (host_addr(&offer), creds(&offer));
        let offer_to_b = smolrtc::Description {
            kind: smolrtc::SdpType::Offer,
            sdp: via(&offer, r_addr),
        };
        block_on_timeout(SETUP_TIMEOUT, async {
            b.set_remote_description(offer_to_b)
                .await
                .expect("remote offer");
            let answer = b.create_answer().await.expect("answer");
            b.set_local_description(answer).await.expect("local answer");
        })
        .expect("answer in time");
        let answer = complete(&b, &mut events_b);
        let (b_addr, b_creds) = (host_addr(&answer), creds(&answer));

        let rings: Rings = Arc::default();
        let stop_relay = Arc::new(AtomicBool::new(false));
        spawn_relay(
            relay.clone(),
            a_addr,
            b_addr,
            rings.clone(),
            stop_relay.clone(),
        );

        let answer_to_a = smolrtc::Description {
            kind: smolrtc::SdpType::Answer,
            sdp: via(&answer, r_addr),
        };
        block_on_timeout(SETUP_TIMEOUT, a.set_remote_description(answer_to_a))
            .expect("set answer in time")
            .expect("remote answer");

        let open = |events: &mut EventStream| {
            wait_for(events, SETUP_TIMEOUT, |e| {
                matches!(e, Event::ChannelOpen(_)).then_some(())
            })
            .expect("channel opens")
        };
        open(&mut events_a);
        open(&mut events_b);

        let b_down = Arc::new(AtomicBool::new(false));
        let down = b_down.clone();
        std::thread::Builder::new()
            .name("echo-b".into())
            .spawn(move || echo(events_b, down))
            .expect("echo thread");

        Pair {
            a,
            b,
            channel,
            events_a,
            b_down,
            relay,
            stop_relay,
            a_addr,
            b_addr,
            a_creds,
            b_creds,
            rings,
        }
    }

    /// Sends one probe A → B → A; true if it came back in time and nothing went down.
    fn echoes(&mut self, n: u64) -> Result<(), String> {
        let probe = format!("probe {n}");
        self.channel
            .send_blocking(probe.as_str())
            .map_err(|e| format!("send on A: {e}"))?;
        let mut down = None;
        let back = wait_for(&mut self.events_a, ECHO_TIMEOUT, |e| match e {
            Event::ChannelMessage(_, Message::Text(t)) if *t == probe => Some(true),
            Event::ConnectionState(
                s @ (ConnectionState::Failed
                | ConnectionState::Closed
                | ConnectionState::Disconnected),
            ) => {
                down = Some(format!("A went {s:?}"));
                Some(false)
            }
            Event::Error(e) => {
                down = Some(format!("A reported an error: {e}"));
                Some(false)
            }
            _ => None,
        });
        if self.b_down.load(Ordering::Relaxed) {
            return Err("B failed or closed".into());
        }
        match (back, down) {
            (Some(true), _) => Ok(()),
            (_, Some(why)) => Err(why),
            _ => Err(format!("no echo within {ECHO_TIMEOUT:?}")),
        }
    }
}

/// B's side: echo every channel message; note when B goes down.
fn echo(mut events: EventStream, down: Arc<AtomicBool>) {
    while let Some(e) = events.next_blocking() {
        match e {
            Event::ChannelMessage(ch, m) => {
                let _ = ch.send_blocking(m);
            }
            Event::ConnectionState(
                ConnectionState::Failed | ConnectionState::Closed | ConnectionState::Disconnected,
            )
            | Event::Error(_) => down.store(true, Ordering::Relaxed),
            _ => {}
        }
    }
}

/// R: forwards A ↔ B by source address, remembering what it delivered.
fn spawn_relay(
    sock: Arc<UdpSocket>,
    a: SocketAddr,
    b: SocketAddr,
    rings: Rings,
    stop: Arc<AtomicBool>,
) {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("relay timeout");
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let (to, ring) = if from == a {
                    (b, 1)
                } else if from == b {
                    (a, 0)
                } else {
                    continue;
                };
                let _ = sock.send_to(&buf[..n], to);
                let mut seen = rings.lock().unwrap_or_else(|p| p.into_inner());
                if seen.first[ring].len() < SEED_DATAGRAMS {
                    seen.first[ring].push(buf[..n].to_vec());
                }
                let r = &mut seen.recent[ring];
                if r.len() == REPLAY_RING {
                    r.pop_front();
                }
                r.push_back(buf[..n].to_vec());
            }
        })
        .expect("relay thread");
}

/// A STUN message: header made from `rest`, then its attributes, then (when `auth`)
/// USERNAME, MESSAGE-INTEGRITY and FINGERPRINT as RFC 8445 checks carry them.
fn stun(rest: &[u8], auth: Option<(&Creds, &Creds)>) -> Vec<u8> {
    let mut head = [0u8; 14];
    let n = rest.len().min(14);
    head[..n].copy_from_slice(&rest[..n]);
    let mut attrs = rest[n..].to_vec();
    attrs.truncate(1200);
    let mut m = Vec::with_capacity(20 + attrs.len() + 64);
    m.extend_from_slice(&[head[0] & 0x3f, head[1]]);
    m.extend_from_slice(&[0, 0]); // length, below
    m.extend_from_slice(&STUN_COOKIE);
    m.extend_from_slice(&head[2..14]);
    m.extend_from_slice(&attrs);
    if let Some((to, from)) = auth {
        while !m.len().is_multiple_of(4) {
            m.push(0);
        }
        let user = format!("{}:{}", to.ufrag, from.ufrag);
        push_attr(&mut m, ATTR_USERNAME, user.as_bytes());
        // MESSAGE-INTEGRITY over everything before it, with the length counting it.
        let len = m.len() - 20 + 24;
        set_len(&mut m, len);
        let key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, to.pwd.as_bytes());
        let mac = ring::hmac::sign(&key, &m);
        push_attr(&mut m, ATTR_MESSAGE_INTEGRITY, mac.as_ref());
        let len = m.len() - 20 + 8;
        set_len(&mut m, len);
        let crc = crc32(&m) ^ 0x5354_554e;
        push_attr(&mut m, ATTR_FINGERPRINT, &crc.to_be_bytes());
    }
    let len = m.len() - 20;
    set_len(&mut m, len);
    m
}

fn set_len(m: &mut [u8], len: usize) {
    m[2..4].copy_from_slice(&(len as u16).to_be_bytes());
}

fn push_attr(m: &mut Vec<u8>, typ: u16, value: &[u8]) {
    m.extend_from_slice(&typ.to_be_bytes());
    m.extend_from_slice(&(value.len() as u16).to_be_bytes());
    m.extend_from_slice(value);
    while !m.len().is_multiple_of(4) {
        m.push(0);
    }
}

/// CRC-32 (ISO-HDLC, reflected 0xEDB88320), bit by bit: STUN messages are short.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// DTLS records: content types forced into 20..=63, lengths clipped unless `keep_len`.
fn dtls(rest: &[u8], keep_len: bool) -> Vec<u8> {
    let mut out = rest.to_vec();
    let mut at = 0;
    while at < out.len() {
        if !(20..=63).contains(&out[at]) {
            out[at] = 20 + out[at] % 44;
        }
        if at + 13 > out.len() {
            break;
        }
        let declared = usize::from(u16::from_be_bytes([out[at + 11], out[at + 12]]));
        let avail = out.len() - at - 13;
        let len = if keep_len {
            declared
        } else {
            declared.min(avail)
        };
        if !keep_len {
            out[at + 11..at + 13].copy_from_slice(&(len as u16).to_be_bytes());
        }
        at += 13 + len;
    }
    out
}

/// A past datagram to the target, with some bytes flipped. `None` when R saw none yet.
fn replay(rings: &Rings, to_a: bool, rest: &[u8]) -> Option<Vec<u8>> {
    let seen = rings.lock().unwrap_or_else(|p| p.into_inner());
    let ring = &seen.recent[usize::from(!to_a)];
    if ring.is_empty() {
        return None;
    }
    let pick = usize::from(rest.first().copied().unwrap_or(0)) % ring.len();
    let mut d = ring[ring.len() - 1 - pick].clone();
    for flip in rest.get(1..).unwrap_or(&[]).chunks_exact(3) {
        if d.is_empty() {
            break;
        }
        let at = usize::from(u16::from_be_bytes([flip[0], flip[1]])) % d.len();
        d[at] ^= flip[2];
    }
    Some(d)
}

/// What an input puts on the wire, and whether it speaks with the peer's credentials.
fn shape(pair: &Pair, data: &[u8]) -> Option<(Vec<u8>, bool)> {
    let (&flags, rest) = data.split_first()?;
    let to_a = flags & 1 != 0;
    let (to, from) = if to_a {
        (&pair.a_creds, &pair.b_creds)
    } else {
        (&pair.b_creds, &pair.a_creds)
    };
    Some(match ((flags >> 2) & 7) % 5 {
        0 => (rest.to_vec(), false),
        1 => (stun(rest, None), false),
        2 => (stun(rest, Some((to, from))), true),
        3 => (dtls(rest, flags & 0x20 != 0), false),
        _ => {
            let d = replay(&pair.rings, to_a, rest)?;
            // An unchanged STUN message keeps its valid integrity.
            let authed = d.first().is_some_and(|b| *b < 4);
            (d, authed)
        }
    })
}

/// Seeds for the corpus, from the first datagrams of a real set-up (ICE checks, the DTLS
/// handshake, the first records): each as it was, and in the `auth`/`dtls` shape; the
/// first two also from a stranger; and two replays.
fn write_seeds(pair: &Pair, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("seed directory");
    let first = pair.rings.lock().expect("seen").first.clone();
    let mut n = 0;
    let mut put = |bytes: Vec<u8>| {
        std::fs::write(dir.join(format!("seed-{n:02}")), bytes).expect("write seed");
        n += 1;
    };
    for (to_a, datagrams) in [(1u8, &first[0]), (0u8, &first[1])] {
        for (i, d) in datagrams.iter().enumerate() {
            let from = if i < 2 { &[0u8, 2][..] } else { &[0u8][..] };
            for stranger in from {
                put([&[to_a | stranger][..], d].concat());
            }
            match d.first() {
                Some(0..=3) if d.len() >= 20 => put(auth_seed(to_a, d)),
                Some(20..=63) => put([&[to_a | (3 << 2)][..], d].concat()),
                _ => {}
            }
        }
        // Replays: the latest, and one with a byte flipped.
        put(vec![to_a | (4 << 2), 0]);
        put(vec![to_a | (4 << 2), 3, 0, 40, 0x01]);
    }
}

/// A STUN message as an `auth` input: its type, transaction id, and its attributes but
/// USERNAME, MESSAGE-INTEGRITY and FINGERPRINT (the harness adds fresh ones).
fn auth_seed(to_a: u8, d: &[u8]) -> Vec<u8> {
    let mut s = vec![to_a | (2 << 2), d[0], d[1]];
    s.extend_from_slice(&d[8..20]);
    let mut at = 20;
    while at + 4 <= d.len() {
        let typ = u16::from_be_bytes([d[at], d[at + 1]]);
        let len = usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]]));
        let end = (at + 4 + len.div_ceil(4) * 4).min(d.len());
        if ![ATTR_USERNAME, ATTR_MESSAGE_INTEGRITY, ATTR_FINGERPRINT].contains(&typ) {
            s.extend_from_slice(&d[at..end]);
        }
        at = end;
    }
    s
}

fuzz_target!(|data: &[u8]| {
    let mut h = harness().lock().unwrap_or_else(|p| p.into_inner());
    if h.pair.is_none() {
        h.pair = Some(Pair::new());
    }
    h.inputs += 1;
    let n = h.inputs;
    let pair = h.pair.as_ref().expect("pair");
    let mut authed = false;
    if let Some((bytes, auth)) = shape(pair, data) {
        authed = auth;
        let to = if data[0] & 1 != 0 {
            pair.a_addr
        } else {
            pair.b_addr
        };
        let _ = if data[0] & 2 != 0 {
            h.stranger.send_to(&bytes, to)
        } else {
            pair.relay.send_to(&bytes, to)
        };
    }
    if !n.is_multiple_of(h.echo_every) && !authed {
        return;
    }
    let pair = h.pair.as_mut().expect("pair");
    if let Err(why) = pair.echoes(n) {
        if authed {
            // The real peer's credentials may legitimately steer ICE: start afresh.
            h.rebuilt += 1;
            eprintln!(
                "datagram: authenticated input {n} broke the pair ({why}); rebuilding ({} so far)",
                h.rebuilt
            );
            h.pair = None;
            return;
        }
        panic!(
            "after input {n} ({} bytes, flags 0x{:02x}) the connection {why}",
            data.len(),
            data.first().copied().unwrap_or(0)
        );
    }
});
