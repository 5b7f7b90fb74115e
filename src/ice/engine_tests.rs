//! The ICE engine driven with datagrams, no sockets: two engines check each other through
//! a loop that carries their `Send`s, with time passed in.

use super::*;
use std::time::Duration;

const A_ADDR: &str = "127.0.0.1:40001";
const B_ADDR: &str = "127.0.0.1:40002";

fn engine(name: &str, ufrag: &str, config: IceConfig) -> IceEngine {
    let pwd = format!("{ufrag}-password-0123456789");
    IceEngine::new(Arc::from(name), config, ufrag.into(), pwd, Instant::now()).unwrap()
}

fn pwd(ufrag: &str) -> String {
    format!("{ufrag}-password-0123456789")
}

/// Every output queued so far.
fn outputs(e: &mut IceEngine, now: Instant) -> Vec<IceOutput> {
    e.poll_agent(now);
    std::iter::from_fn(|| e.poll_output()).collect()
}

fn candidates(out: &[IceOutput]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            IceOutput::Report(IceReport::Candidate(c)) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// Two engines on 127.0.0.1 (A controlling), gathered, candidates exchanged, checks
/// started; then every datagram carried until both have selected a pair. Returns the
/// engines, the time reached and what each said on the way (datagrams left out).
fn connected() -> (
    IceEngine,
    IceEngine,
    Instant,
    Vec<IceOutput>,
    Vec<IceOutput>,
) {
    let (a_addr, b_addr) = (A_ADDR.parse().unwrap(), B_ADDR.parse().unwrap());
    let mut a = engine("A", "aaaa", IceConfig::default());
    let mut b = engine("B", "bbbb", IceConfig::default());
    let mut now = Instant::now();
    a.gather(now, vec![LocalSocket::host(a_addr, false)]);
    b.gather(now, vec![LocalSocket::host(b_addr, false)]);
    let (mut said_a, mut said_b) = (outputs(&mut a, now), outputs(&mut b, now));
    for c in candidates(&said_a) {
        b.remote_candidate(&c).unwrap();
    }
    for c in candidates(&said_b) {
        a.remote_candidate(&c).unwrap();
    }
    a.start(now, true, "bbbb".into(), pwd("bbbb"));
    b.start(now, false, "aaaa".into(), pwd("aaaa"));
    let done = |said: &[IceOutput]| said.iter().any(|o| matches!(o, IceOutput::Connected));
    for _ in 0..400 {
        carry(&mut a, &mut b, a_addr, now, &mut said_a);
        carry(&mut b, &mut a, b_addr, now, &mut said_b);
        if done(&said_a) && done(&said_b) {
            return (a, b, now, said_a, said_b);
        }
        now += Duration::from_millis(10);
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    panic!("no pair selected in 4 s of simulated time");
}

/// `from`'s datagrams to `to` (arriving from `from_addr`); the rest of its outputs to `said`.
fn carry(
    from: &mut IceEngine,
    to: &mut IceEngine,
    from_addr: SocketAddr,
    now: Instant,
    said: &mut Vec<IceOutput>,
) {
    for o in outputs(from, now) {
        match o {
            IceOutput::Send(Via::Socket(0), _, data) => to.socket_datagram(now, 0, from_addr, data),
            other => said.push(other),
        }
    }
}

#[test]
fn gathering_without_servers_announces_the_host_candidate_then_completes() {
    let mut a = engine("A", "aaaa", IceConfig::default());
    a.gather(
        Instant::now(),
        vec![LocalSocket::host(A_ADDR.parse().unwrap(), false)],
    );
    let out = outputs(&mut a, Instant::now());
    let cands = candidates(&out);
    assert_eq!(cands.len(), 1, "{out:?}");
    assert!(cands[0].contains("127.0.0.1 40001 typ host"), "{cands:?}");
    assert!(matches!(
        out.last(),
        Some(IceOutput::Report(IceReport::GatheringComplete))
    ));
}

#[test]
fn two_engines_connect_and_carry_dtls_records_over_the_selected_pair() {
    let (mut a, mut b, now, said_a, said_b) = connected();
    for said in [&said_a, &said_b] {
        assert!(said.iter().any(|o| matches!(
            o,
            IceOutput::Report(IceReport::State(IceConnectionState::Connected))
        )));
        assert!(said
            .iter()
            .any(|o| matches!(o, IceOutput::Report(IceReport::SelectedPair { .. }))));
    }
    // A DTLS record from DTLS goes out on the pair; from there B hands it up.
    let record = BytesMut::from(&[22u8, 0xfe, 0xfd, 0, 1, 2, 3][..]);
    a.transmit(now, record.clone());
    let out = outputs(&mut a, now);
    let [IceOutput::Send(Via::Socket(0), to, data)] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(*to, B_ADDR.parse::<SocketAddr>().unwrap());
    b.socket_datagram(now, 0, A_ADDR.parse().unwrap(), data.clone());
    let out = outputs(&mut b, now);
    assert!(
        matches!(&out[..], [IceOutput::Dtls(d)] if *d == record),
        "{out:?}"
    );
}

#[test]
fn dtls_and_unknown_first_bytes_from_strangers_go_nowhere() {
    let (_a, mut b, now, _, _) = connected();
    let stranger: SocketAddr = "127.0.0.1:40009".parse().unwrap();
    for first in [22u8, 100, 250] {
        b.socket_datagram(
            now,
            0,
            stranger,
            BytesMut::from(&[first, 0xfe, 0xfd, 0][..]),
        );
    }
    b.socket_datagram(now, 0, stranger, BytesMut::new());
    assert!(outputs(&mut b, now).is_empty());
}

#[test]
fn a_tampered_check_is_dropped_before_the_agent_and_gets_no_answer() {
    let (mut a, mut b, mut now, _, _) = connected();
    // A's next consent check, once as sent and once with its MESSAGE-INTEGRITY broken.
    let check = loop {
        now += Duration::from_millis(500);
        a.handle_timeout(now);
        let found = outputs(&mut a, now).into_iter().find_map(|o| match o {
            IceOutput::Send(_, _, d) if is_binding_request(&d) => Some(d),
            _ => None,
        });
        if let Some(d) = found {
            break d;
        }
    };
    let a_addr: SocketAddr = A_ADDR.parse().unwrap();
    let mut tampered = check.clone();
    // FINGERPRINT is the last 8 bytes; the HMAC the 20 before them.
    let n = tampered.len();
    tampered[n - 12] ^= 0xff;
    b.socket_datagram(now, 0, a_addr, tampered);
    assert_eq!(answers(&outputs(&mut b, now)), 0);
    b.socket_datagram(now, 0, a_addr, check);
    assert_eq!(
        answers(&outputs(&mut b, now)),
        1,
        "the untouched check is answered"
    );
}

/// Binding success responses (type 0x0101) among the outputs.
fn answers(out: &[IceOutput]) -> usize {
    out.iter()
        .filter(|o| matches!(o, IceOutput::Send(_, _, d) if d.starts_with(&[0x01, 0x01])))
        .count()
}

#[test]
fn remote_candidates_are_checked_and_capped() {
    let config = IceConfig {
        max_remote_candidates: 2,
        ..Default::default()
    };
    let mut a = engine("A", "aaaa", config);
    let line = |port: u16| format!("candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host");
    a.remote_candidate(&line(5000)).unwrap();
    // The same again is no new candidate; an mDNS name is ignored.
    a.remote_candidate(&format!("a={}", line(5000))).unwrap();
    a.remote_candidate("candidate:1 1 udp 2130706431 x.local 5000 typ host")
        .unwrap();
    a.remote_candidate(&line(5001)).unwrap();
    let e = a.remote_candidate(&line(5002)).unwrap_err();
    assert!(matches!(e, crate::Error::Limit(ref l) if l.name() == "max_remote_candidates"));
    let e = a.remote_candidate("candidate:garbage").unwrap_err();
    assert!(matches!(e, crate::Error::InvalidArgument(_)), "{e}");
    let out = outputs(&mut a, Instant::now());
    assert!(matches!(
        &out[..],
        [IceOutput::Report(IceReport::BadCandidate(_))]
    ));
}

#[test]
fn nothing_is_sent_before_a_pair_is_selected() {
    let mut a = engine("A", "aaaa", IceConfig::default());
    a.transmit(Instant::now(), BytesMut::from(&[22u8, 1, 2][..]));
    assert!(outputs(&mut a, Instant::now()).is_empty());
}

#[test]
fn servers_are_asked_and_gathering_ends_when_they_fail_or_time_out() {
    let config = IceConfig {
        servers: vec![
            IceServer::parse("stun:127.0.0.1:3478").unwrap(),
            IceServer::parse("turn:u:p@127.0.0.1:3478?transport=tcp").unwrap(),
            IceServer::parse("stun:stun.example.invalid").unwrap(),
        ],
        ..Default::default()
    };
    let mut a = engine("A", "aaaa", config);
    let now = Instant::now();
    a.gather(now, vec![LocalSocket::host(A_ADDR.parse().unwrap(), false)]);
    let out = outputs(&mut a, now);
    let stun: SocketAddr = "127.0.0.1:3478".parse().unwrap();
    assert!(out
        .iter()
        .any(|o| matches!(o, IceOutput::Send(Via::Socket(0), to, d) if *to == stun && d[0] < 4)));
    assert!(out
        .iter()
        .any(|o| matches!(o, IceOutput::Connect { id: 0, addr, .. } if *addr == stun)));
    assert!(out
        .iter()
        .any(|o| matches!(o, IceOutput::Resolve(2, h) if h == "stun.example.invalid:3478")));
    let complete = |out: &[IceOutput]| {
        out.iter()
            .any(|o| matches!(o, IceOutput::Report(IceReport::GatheringComplete)))
    };
    assert!(!complete(&out));
    // The stream fails and the name does not resolve: the STUN server is still asked.
    a.stream_news(now, 0, StreamNews::Down("refused".into()));
    a.resolved(now, 2, Err("no such host".into()));
    let out = outputs(&mut a, now);
    assert!(out.iter().any(|o| matches!(o, IceOutput::EndStream(0))));
    assert!(!complete(&out));
    // Silence until the gathering deadline: it completes without the server.
    let deadline = a.poll_timeout().unwrap();
    assert!(deadline <= now + IceConfig::default().gather_timeout);
    let late = now + IceConfig::default().gather_timeout;
    a.handle_timeout(late);
    assert!(complete(&outputs(&mut a, late)));
}

#[test]
fn close_ends_streams_and_reports_closed_once() {
    let config = IceConfig {
        servers: vec![IceServer::parse("turn:u:p@127.0.0.1:3478?transport=tcp").unwrap()],
        ..Default::default()
    };
    let mut a = engine("A", "aaaa", config);
    let now = Instant::now();
    a.gather(now, vec![LocalSocket::host(A_ADDR.parse().unwrap(), false)]);
    outputs(&mut a, now);
    a.close(now);
    assert!(a.is_closed());
    let out: Vec<_> = std::iter::from_fn(|| a.poll_output()).collect();
    let at = |f: fn(&IceOutput) -> bool| out.iter().position(f).expect("in the outputs");
    let ended = at(|o| matches!(o, IceOutput::EndStream(0)));
    let closed = at(|o| matches!(o, IceOutput::Closed));
    let reported = at(|o| {
        matches!(
            o,
            IceOutput::Report(IceReport::State(IceConnectionState::Closed))
        )
    });
    assert!(ended < closed && closed < reported, "{out:?}");
    a.close(now);
    assert!(a.poll_output().is_none());
    // A stream that comes up after the close is ended at once, asks nothing.
    a.stream_news(now, 0, StreamNews::Up(A_ADDR.parse().unwrap()));
    let out: Vec<_> = std::iter::from_fn(|| a.poll_output()).collect();
    assert!(matches!(&out[..], [IceOutput::EndStream(0)]), "{out:?}");
}
