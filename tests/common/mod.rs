//! Shared helpers for the loopback tests: two real peer connections over real UDP on
//! 127.0.0.1, signaled in-process.
#![allow(dead_code)]

use smolrtc::{
    ChannelInit, Config, DataChannel, Description, Event, EventStream, Message, PeerConnection,
};
use std::time::Duration;

pub mod browser;
pub mod forward;
pub mod http;
pub mod media;
pub mod netns;
pub mod service;

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub fn init_log() {
    let _ = env_logger::builder()
        .is_test(true)
        .parse_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
}

pub fn loopback_config(name: &str) -> Config {
    Config::loopback(name)
}

pub struct Peer {
    pub pc: PeerConnection,
    pub events: EventStream,
    /// Events read while looking for another one, kept for later `expect`s.
    backlog: std::collections::VecDeque<Event>,
}

impl Peer {
    pub fn new(name: &str) -> Self {
        Self::with_config(loopback_config(name))
    }

    pub fn with_config(config: Config) -> Self {
        Self::from_pc(PeerConnection::new(config).expect("peer connection"))
    }

    /// A peer on its own smolrtc thread (made in a network namespace, say).
    pub fn with_runtime(rt: &smolrtc::Runtime, config: Config) -> Self {
        Self::from_pc(PeerConnection::with_runtime(rt, config).expect("peer connection"))
    }

    /// Waits (bounded) until the connection state is `connected`.
    pub async fn connected(&mut self) {
        self.expect("connected", |e| {
            matches!(
                e,
                Event::ConnectionState(smolrtc::ConnectionState::Connected)
            )
            .then_some(())
        })
        .await;
    }

    fn from_pc(pc: PeerConnection) -> Self {
        let events = pc.events();
        Self {
            pc,
            events,
            backlog: Default::default(),
        }
    }

    /// Waits (bounded) for the first event `f` maps to `Some`, in arrival order; events
    /// passed over stay in a backlog for later calls.
    pub async fn expect<T>(&mut self, what: &str, f: impl FnMut(&Event) -> Option<T>) -> T {
        self.expect_within(TIMEOUT, what, f).await
    }

    /// [`Peer::expect`] with its own time limit.
    pub async fn expect_within<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        for i in 0..self.backlog.len() {
            if let Some(t) = f(&self.backlog[i]) {
                self.backlog.remove(i);
                return t;
            }
        }
        let deadline = async_io::Timer::after(limit);
        let events = &mut self.events;
        let backlog = &mut self.backlog;
        let found = futures_lite::future::or(
            async {
                while let Some(e) = events.next().await {
                    if let Some(t) = f(&e) {
                        return Some(t);
                    }
                    backlog.push_back(e);
                }
                None
            },
            async {
                deadline.await;
                None
            },
        )
        .await;
        found.unwrap_or_else(|| panic!("timed out or closed waiting for {what}"))
    }

    /// [`Peer::expect`] that takes the event (e.g. `Event::Track`'s receiver): `f` gives
    /// back the events it does not want (`Err`), which stay in the backlog.
    pub async fn take<T>(&mut self, what: &str, mut f: impl FnMut(Event) -> Result<T, Event>) -> T {
        let mut kept = std::collections::VecDeque::new();
        let mut found = None;
        while let Some(e) = self.backlog.pop_front() {
            match (found.is_some(), e) {
                (true, e) => kept.push_back(e),
                (false, e) => match f(e) {
                    Ok(t) => found = Some(t),
                    Err(e) => kept.push_back(e),
                },
            }
        }
        self.backlog = kept;
        if let Some(t) = found {
            return t;
        }
        let deadline = async_io::Timer::after(TIMEOUT);
        let events = &mut self.events;
        let backlog = &mut self.backlog;
        futures_lite::future::or(
            async {
                while let Some(e) = events.next().await {
                    match f(e) {
                        Ok(t) => return Some(t),
                        Err(e) => backlog.push_back(e),
                    }
                }
                None
            },
            async {
                deadline.await;
                None
            },
        )
        .await
        .unwrap_or_else(|| panic!("timed out or closed waiting for {what}"))
    }

    /// Creates the channel `label`.
    pub async fn channel(&self, label: &str, init: ChannelInit) -> DataChannel {
        self.pc
            .create_data_channel(label, init)
            .await
            .unwrap_or_else(|e| panic!("channel {label}: {e}"))
    }

    /// Every local candidate line trickled until end-of-candidates.
    pub async fn local_candidates(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let c = self
                .expect("candidate", |e| match e {
                    Event::IceCandidate(c) => Some(c.clone()),
                    _ => None,
                })
                .await;
            match c {
                Some(c) => out.push(c.candidate),
                None => return out,
            }
        }
    }

    /// The local description once gathering is complete (non-trickle, as rawrtc's tool).
    pub async fn complete_description(&mut self) -> Description {
        self.expect("gathering complete", |e| {
            matches!(e, Event::IceCandidate(None)).then_some(())
        })
        .await;
        self.pc
            .local_description()
            .await
            .expect("local description")
    }

    /// Creates an offer, sets it, and returns it once gathering is complete.
    pub async fn complete_offer(&mut self) -> Description {
        let offer = self.pc.create_offer().await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        self.complete_description().await
    }

    /// Offers to a smolrtc service at `addr` through `POST /api/offer` (the complete
    /// offer, non-trickle): its answer, the 200 and the answer's type checked. The
    /// answer is not applied (callers may edit it first).
    pub async fn offer_to_service(&mut self, addr: std::net::SocketAddr) -> Description {
        self.offer_to_service_from(addr, None, &[]).await
    }

    /// [`Peer::offer_to_service`] from the local address `from`, with extra header lines.
    pub async fn offer_to_service_from(
        &mut self,
        addr: std::net::SocketAddr,
        from: Option<std::net::IpAddr>,
        headers: &[&str],
    ) -> Description {
        let offer = self.complete_offer().await;
        let r = http::request_from(
            addr,
            from,
            "POST",
            "/api/offer",
            headers,
            Some("application/json"),
            offer.to_json().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let answer = Description::from_json(&r.text()).unwrap();
        assert_eq!(answer.kind, smolrtc::SdpType::Answer);
        answer
    }

    /// Offers to a service's WHIP endpoint (`POST /whip`, trickle: before any candidate),
    /// `edit` applied to the offer's SDP as sent: the 201 checked and the answer applied.
    /// Returns the offer as made and the reply (its `Location` names the session).
    pub async fn whip_to_service(
        &mut self,
        addr: std::net::SocketAddr,
        edit: impl FnOnce(&mut String),
    ) -> (Description, http::Reply) {
        let offer = self.pc.create_offer().await.unwrap();
        self.pc.set_local_description(offer.clone()).await.unwrap();
        let mut sdp = offer.sdp.clone();
        edit(&mut sdp);
        let r = http::request(
            addr,
            "POST",
            "/whip",
            Some("application/sdp"),
            sdp.as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        self.pc
            .set_remote_description(Description {
                kind: smolrtc::SdpType::Answer,
                sdp: r.text(),
            })
            .await
            .unwrap();
        (offer, r)
    }
}

/// Offer from `a`, answer from `b`, complete descriptions both ways.
pub async fn connect(a: &mut Peer, b: &mut Peer) {
    connect_editing(a, b, |_| {}, |_| {}).await;
}

/// [`connect`], with the descriptions changed in transit (as a signaling path might).
pub async fn connect_editing(
    a: &mut Peer,
    b: &mut Peer,
    edit_offer: impl FnOnce(&mut Description),
    edit_answer: impl FnOnce(&mut Description),
) {
    let offer = a.pc.create_offer().await.unwrap();
    a.pc.set_local_description(offer).await.unwrap();
    let mut offer = a.complete_description().await;
    edit_offer(&mut offer);
    b.pc.set_remote_description(offer).await.unwrap();
    let answer = b.pc.create_answer().await.unwrap();
    b.pc.set_local_description(answer).await.unwrap();
    let mut answer = b.complete_description().await;
    edit_answer(&mut answer);
    a.pc.set_remote_description(answer).await.unwrap();
}

pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(f)
}

/// A test's body: the log set up, then `f` run to its end.
pub fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    init_log();
    block_on(f)
}

/// Two loopback peers, `A` (which will offer) and `B`.
pub fn pair() -> (Peer, Peer) {
    (Peer::new("A"), Peer::new("B"))
}

/// `A` and `B` connected, with the channel `label` created on `A` before the offer and
/// open on `A`: the shape most tests start from.
pub async fn connected_pair(label: &str, init: ChannelInit) -> (Peer, Peer, DataChannel) {
    let (mut a, mut b) = pair();
    let ch = a.channel(label, init).await;
    connect(&mut a, &mut b).await;
    opened(&mut a, label).await;
    (a, b, ch)
}

/// Sends `m` on `ch` and checks that `to` receives it, unchanged, on the same label.
pub async fn send_expect(ch: &DataChannel, to: &mut Peer, m: impl Into<Message>) {
    let m = m.into();
    ch.send(m.clone()).await.expect("send");
    assert_eq!(message(to, ch.label()).await, m, "on {}", ch.label());
}

/// The channel `label` once it is open.
pub async fn opened(p: &mut Peer, label: &str) -> smolrtc::DataChannel {
    let label = label.to_owned();
    p.expect(&format!("{label} open"), |e| match e {
        Event::ChannelOpen(c) if c.label() == label => Some(c.clone()),
        _ => None,
    })
    .await
}

/// The next message on the channel `label`.
pub async fn message(p: &mut Peer, label: &str) -> smolrtc::Message {
    let label = label.to_owned();
    p.expect(&format!("message on {label}"), |e| match e {
        Event::ChannelMessage(c, m) if c.label() == label => Some(m.clone()),
        _ => None,
    })
    .await
}

/// `sdp` without its candidate and end-of-candidates lines.
pub fn strip_candidates(sdp: &str) -> String {
    sdp.split("\r\n")
        .filter(|l| !l.starts_with("a=candidate") && !l.starts_with("a=end-of-candidates"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// [`connect`] through a [`smolrtc::testkit::impair::Relay`] (`forward` applied to `a` → `b`,
/// `backward` to `b` → `a`, seeded): `b`'s 127.0.0.1 host candidate is replaced by the
/// relay's front, and `a`'s candidates are hidden from `b`, which learns `a` as
/// peer-reflexive at the relay's back. Every datagram between them crosses the relay.
pub async fn connect_through_relay(
    a: &mut Peer,
    b: &mut Peer,
    forward: smolrtc::testkit::impair::Impairment,
    backward: smolrtc::testkit::impair::Impairment,
    seed: u64,
) -> smolrtc::testkit::impair::Relay {
    let mut relay = None;
    connect_editing(
        a,
        b,
        |offer| offer.sdp = strip_candidates(&offer.sdp),
        |answer| {
            let line = answer
                .sdp
                .split("\r\n")
                .find(|l| l.starts_with("a=candidate") && l.contains(" 127.0.0.1 "))
                .expect("a 127.0.0.1 host candidate in the answer")
                .to_owned();
            let f: Vec<&str> = line.split_whitespace().collect();
            let target = format!("{}:{}", f[4], f[5]).parse().unwrap();
            let r = smolrtc::testkit::impair::Relay::start(
                "127.0.0.1".parse().unwrap(),
                target,
                forward,
                backward,
                seed,
            )
            .expect("relay");
            let front = r.front();
            relay = Some(r);
            let mut sdp = strip_candidates(&answer.sdp);
            let cand = format!(
                "a=candidate:1 1 udp 2130706431 127.0.0.1 {} typ host",
                front.port()
            );
            // At the end of the (only) media section.
            sdp = format!("{}\r\n{cand}\r\na=end-of-candidates\r\n", sdp.trim_end());
            answer.sdp = sdp;
        },
    )
    .await;
    relay.expect("relay started")
}

// ---- Checked transfers (lossy links, faults) ----

/// What [`next_until`] saw.
pub enum Next {
    Event(Event),
    Timeout,
    /// The event stream ended (the connection's actors are gone).
    Ended,
}

/// The next event of `events`, or [`Next::Timeout`] at `until`.
pub async fn next_until(events: &mut EventStream, until: std::time::Instant) -> Next {
    futures_lite::future::or(
        async {
            match events.next().await {
                Some(e) => Next::Event(e),
                None => Next::Ended,
            }
        },
        async {
            async_io::Timer::at(until).await;
            Next::Timeout
        },
    )
    .await
}

/// Byte `offset` of a checked stream: no short period, so a lost, repeated or shifted
/// stretch shows in the bytes themselves.
pub fn stream_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// `n` bytes of the checked stream from `offset`.
pub fn stream_bytes(offset: u64, n: usize) -> Vec<u8> {
    (0..n as u64).map(|j| stream_byte(offset + j)).collect()
}

/// Where `data` departs from the checked stream at `offset`, if it does.
pub fn stream_mismatch(offset: u64, data: &[u8]) -> Option<usize> {
    data.iter()
        .enumerate()
        .position(|(j, b)| *b != stream_byte(offset + j as u64))
}

/// Message sizes of a checked stream, the same sequence on both sides for one seed:
/// tiny ones, ones just under and over one SCTP packet (1200 bytes), and ones of many
/// packets, up to just under the default 256 KiB max-message-size.
pub struct MessageSizes(fastrand::Rng);

impl MessageSizes {
    pub fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    pub fn next(&mut self) -> usize {
        const POOL: [usize; 14] = [
            1, 2, 17, 64, 300, 1000, 1150, 1300, 4000, 16_384, 16_384, 40_000, 100_000, 250_000,
        ];
        POOL[self.0.usize(..POOL.len())]
    }
}

/// Connection states seen, with when.
pub type States = std::cell::RefCell<Vec<(std::time::Instant, smolrtc::ConnectionState)>>;

/// Waits (reading the sender's events, which it must) until `ch`'s buffered amount is at
/// most `high`. Fails on a dead connection or at `deadline`.
pub async fn pace(
    ch: &smolrtc::DataChannel,
    events: &mut EventStream,
    high: usize,
    deadline: std::time::Instant,
    states: &States,
) -> Result<(), String> {
    use std::time::Instant;
    while ch.buffered_amount() > high {
        if Instant::now() >= deadline {
            return Err(format!(
                "sender's buffered amount stuck at {} bytes",
                ch.buffered_amount()
            ));
        }
        let poll = (Instant::now() + Duration::from_millis(20)).min(deadline);
        watch_sender(next_until(events, poll).await, states)?;
    }
    Ok(())
}

/// Keeps the sender's events flowing (its SCTP input waits on them) until the connection
/// dies; never returns otherwise.
pub async fn drain_sender(events: &mut EventStream, states: &States) -> String {
    let far = std::time::Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        if let Err(e) = watch_sender(next_until(events, far).await, states) {
            return e;
        }
    }
}

fn watch_sender(n: Next, states: &States) -> Result<(), String> {
    use smolrtc::ConnectionState as S;
    match n {
        Next::Ended => Err("sender's event stream ended".into()),
        Next::Event(Event::ConnectionState(s)) => {
            states.borrow_mut().push((std::time::Instant::now(), s));
            match s {
                S::Failed | S::Closed => Err(format!("sender's connection {s}")),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// The figures of one checked transfer.
#[derive(Debug, Default)]
pub struct Transfer {
    /// `None` when every check passed.
    pub error: Option<String>,
    pub sent_bytes: u64,
    pub sent_messages: u64,
    pub got_bytes: u64,
    pub got_messages: u64,
    /// From the first send to the last byte checked.
    pub seconds: f64,
    /// Connection states the sender and the receiver reported meanwhile.
    pub sender_states: Vec<(std::time::Instant, smolrtc::ConnectionState)>,
    pub receiver_states: Vec<(std::time::Instant, smolrtc::ConnectionState)>,
}

impl Transfer {
    pub fn mbit_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.got_bytes as f64 * 8.0 / self.seconds / 1e6
        } else {
            0.0
        }
    }
}

/// Checks message `msgs` of the stream, which starts at byte `got` and should be `want`
/// bytes long: binary, that long, the stream's bytes. Returns its length.
fn check_message(m: &Message, want: usize, got: u64, msgs: u64) -> Result<usize, String> {
    let Message::Binary(data) = m else {
        return Err(format!("message {msgs} is text"));
    };
    if data.len() != want {
        return Err(format!(
            "message {msgs} at byte {got}: {} bytes, expected {want}",
            data.len()
        ));
    }
    if let Some(j) = stream_mismatch(got, data) {
        return Err(format!("byte {} (message {msgs}) is wrong", got + j as u64));
    }
    Ok(data.len())
}

/// The sending half of [`reliable_transfer`]: `total` bytes in messages of
/// [`MessageSizes`]`(seed)`, paced at `high` buffered bytes until `deadline`, counted in
/// `out`; then reads the sender's events until the connection dies (the error returned).
async fn send_stream(
    ch: &smolrtc::DataChannel,
    events: &mut EventStream,
    (total, seed): (u64, u64),
    (high, deadline): (usize, std::time::Instant),
    states: &States,
    out: &std::cell::RefCell<Transfer>,
) -> Result<(), String> {
    let mut sizes = MessageSizes::new(seed);
    let (mut off, mut msgs) = (0u64, 0u64);
    while off < total {
        let n = (sizes.next() as u64).min(total - off) as usize;
        pace(ch, events, high, deadline, states).await?;
        if let Err(e) = ch.send(stream_bytes(off, n)).await {
            return Err(format!("send at byte {off}: {e}"));
        }
        off += n as u64;
        msgs += 1;
        let mut o = out.borrow_mut();
        o.sent_bytes = off;
        o.sent_messages = msgs;
    }
    Err(drain_sender(events, states).await)
}

/// Sends `total` bytes of the checked stream on `ch` (a reliable ordered channel of
/// `a`, paced at `high` buffered bytes) in messages of [`MessageSizes`]`(seed)`; `b`
/// checks that each message arrives once, whole, in order, with the right bytes, until
/// all `total` bytes are in or `limit` passes. `progress` follows the bytes checked.
#[allow(clippy::too_many_arguments)]
pub async fn reliable_transfer(
    a: &mut Peer,
    b: &mut Peer,
    ch: &smolrtc::DataChannel,
    total: u64,
    seed: u64,
    high: usize,
    limit: Duration,
    progress: &std::cell::Cell<u64>,
) -> Transfer {
    use smolrtc::ConnectionState as S;
    use std::cell::RefCell;
    use std::time::Instant;
    let began = Instant::now();
    let deadline = began + limit;
    let label = ch.label().to_owned();
    ch.set_buffered_amount_low_threshold(high / 2);
    let out = RefCell::new(Transfer::default());
    let sender_states = States::default();
    let send = send_stream(
        ch,
        &mut a.events,
        (total, seed),
        (high, deadline),
        &sender_states,
        &out,
    );
    let receive = async {
        let mut states = Vec::new();
        let mut sizes = MessageSizes::new(seed);
        let (mut got, mut msgs) = (0u64, 0u64);
        let result = loop {
            if got == total {
                break Ok(());
            }
            let event = match next_until(&mut b.events, deadline).await {
                Next::Event(e) => e,
                Next::Timeout => {
                    break Err(format!(
                        "stalled: {got} of {total} bytes after {:.1} s",
                        began.elapsed().as_secs_f64()
                    ))
                }
                Next::Ended => break Err("receiver's event stream ended".into()),
            };
            match event {
                Event::ChannelMessage(c, m) if c.label() == label => {
                    let want = (sizes.next() as u64).min(total - got) as usize;
                    match check_message(&m, want, got, msgs) {
                        Ok(n) => got += n as u64,
                        Err(e) => break Err(e),
                    }
                    msgs += 1;
                    progress.set(got);
                    let mut o = out.borrow_mut();
                    o.got_bytes = got;
                    o.got_messages = msgs;
                }
                Event::ChannelClosed(c) if c.label() == label => {
                    break Err(format!("channel closed at byte {got}"))
                }
                Event::ConnectionState(s) => {
                    states.push((Instant::now(), s));
                    if matches!(s, S::Failed | S::Closed) {
                        break Err(format!("receiver's connection {s} at byte {got}"));
                    }
                }
                _ => {}
            }
        };
        out.borrow_mut().receiver_states = states;
        result
    };
    let result = futures_lite::future::or(receive, send).await;
    let mut t = out.into_inner();
    t.sender_states = sender_states.into_inner();
    t.error = result.err();
    t.seconds = began.elapsed().as_secs_f64();
    t
}

/// Waits until `a` has opened its channels `labels` and `b` has been announced each of
/// them, reading both event streams meanwhile (an unread stream holds back the peer's DCEP
/// answers). Returns `b`'s handles, in the order of `labels`.
pub async fn open_channels(
    a: &mut Peer,
    b: &mut Peer,
    labels: &[&str],
    limit: Duration,
) -> Vec<smolrtc::DataChannel> {
    let opened = async {
        for label in labels {
            a.expect_within(limit, &format!("{label} open"), |e| {
                matches!(e, Event::ChannelOpen(c) if c.label() == *label).then_some(())
            })
            .await;
        }
    };
    let announced = async {
        let mut out = Vec::new();
        for label in labels {
            out.push(
                b.expect_within(limit, &format!("{label} announced"), |e| match e {
                    Event::DataChannel(c) if c.label() == *label => Some(c.clone()),
                    _ => None,
                })
                .await,
            );
        }
        out
    };
    futures_lite::future::zip(opened, announced).await.1
}

/// `examples/NAME.rs`, built by `cargo build --example NAME` into this test's own target
/// directory and profile: `cargo test --test FILE` alone does not build the examples.
pub fn example(name: &str) -> std::path::PathBuf {
    // The test binary is TARGET/PROFILE/deps/TEST-HASH.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut build = std::process::Command::new(cargo);
    // Cargo's per-package variables, set for this test, would make build scripts that
    // watch them (ring's CARGO_MANIFEST_DIR) rebuild here and again in the next `cargo test`.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&key.as_ref())
        {
            build.env_remove(key.as_ref());
        }
    }
    // build.rs hands SMOLRTC_BOARD to the tests too; "native" is its value when unset.
    if std::env::var("SMOLRTC_BOARD").as_deref() == Ok("native") {
        build.env_remove("SMOLRTC_BOARD");
    }
    let status = build
        .args(["build", "--quiet", "--example", name, "--profile", profile])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --example {name}: {status}");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{path:?} after cargo build --example {name}");
    path
}

/// Puts one track of `codec` on `p` (H.264 at profile-level-id 42e01f, what a browser's
/// camera offers) and sets its offer: the track and the complete offer SDP, to POST to a
/// WHIP endpoint.
pub async fn whip_offer(
    p: &mut Peer,
    codec: smolrtc::media::Codec,
) -> (smolrtc::media::TrackSender, String) {
    let mut init = smolrtc::media::TrackInit::new(codec);
    if codec == smolrtc::media::Codec::H264 {
        init.profile_level_id = smolrtc::media::ProfileLevelId::parse("42e01f");
    }
    let track = p.pc.add_track(init).await.unwrap();
    (track, p.complete_offer().await.sdp)
}

/// A library viewer (`name`) of the video of stream `stream` at the service `addr`, through
/// WHEP: its peer, its video track once the answer is applied, and when the POST was sent.
pub async fn whep_viewer(
    addr: std::net::SocketAddr,
    stream: &str,
    name: &str,
) -> (Peer, smolrtc::media::TrackReceiver, std::time::Instant) {
    whep_viewer_through(addr, stream, name, |answer| answer).await
}

/// [`whep_viewer`] with `edit` applied to the answer before it is set (the qemu guest's
/// candidates rewritten to its port forwards, say).
pub async fn whep_viewer_through(
    addr: std::net::SocketAddr,
    stream: &str,
    name: &str,
    edit: impl FnOnce(Description) -> Description,
) -> (Peer, smolrtc::media::TrackReceiver, std::time::Instant) {
    let mut viewer = Peer::new(name);
    viewer
        .pc
        .add_transceiver(
            smolrtc::media::MediaKind::Video,
            smolrtc::media::Direction::RecvOnly,
        )
        .await
        .expect("transceiver");
    // A channel too: without one, create_offer writes a rejected data section.
    viewer.channel("c", ChannelInit::default()).await;
    let offer = viewer.pc.create_offer().await.expect("offer");
    viewer.pc.set_local_description(offer).await.expect("local");
    let offer = viewer.complete_description().await;
    let posted = std::time::Instant::now();
    let r = http::request(
        addr,
        "POST",
        &format!("/whep/{stream}"),
        Some("application/sdp"),
        offer.sdp.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = Description {
        kind: smolrtc::SdpType::Answer,
        sdp: r.text(),
    };
    viewer
        .pc
        .set_remote_description(edit(answer))
        .await
        .expect("answer");
    let track = viewer
        .take("video track", |e| match e {
            Event::Track(t) => Ok(t),
            other => Err(other),
        })
        .await;
    (viewer, track, posted)
}

/// A peer named `name` whose smolrtc thread (and so its sockets) lives in namespace `ns`:
/// a 3 s gather timeout, then `edit`. Keep the runtime as long as the peer.
pub fn peer_in(
    ns: &str,
    name: &str,
    edit: impl FnOnce(&mut smolrtc::Config),
) -> (smolrtc::Runtime, Peer) {
    let rt = netns::in_ns(ns, || smolrtc::Runtime::new().expect("runtime"));
    let mut config = smolrtc::Config {
        name: name.into(),
        ..smolrtc::Config::default()
    };
    config.ice.gather_timeout = Duration::from_secs(3);
    edit(&mut config);
    let peer = Peer::with_runtime(&rt, config);
    (rt, peer)
}

/// A configuration edit for [`peer_in`]: only relay candidates, from `servers`.
pub fn relay_only(servers: Vec<smolrtc::IceServer>) -> impl FnOnce(&mut smolrtc::Config) {
    move |c| {
        c.ice.servers = servers;
        c.ice.transport_policy = smolrtc::TransportPolicy::Relay;
    }
}

/// The usual start of a NAT test: logging, the [`netns::Topology`] and its coturn (`None`
/// without root: the test returns).
pub fn with_coturn() -> Option<(netns::Topology, netns::Coturn)> {
    init_log();
    let topo = netns::Topology::new()?;
    let coturn = topo.coturn();
    Some((topo, coturn))
}

/// Sets a WHIP endpoint's answer on `p` and waits until it is connected.
pub async fn whip_answer(p: &mut Peer, answer: String) {
    let answer = smolrtc::Description {
        kind: smolrtc::SdpType::Answer,
        sdp: answer,
    };
    p.pc.set_remote_description(answer).await.unwrap();
    p.connected().await;
}
