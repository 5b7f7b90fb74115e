//! Smoke tests of the network-namespace harness (tests/common/netns.rs), with no smolrtc
//! code at all: the topology routes and NATs as documented, coturn answers STUN and TURN
//! through the NATs, and the blocking/cutting helpers do what they say. Need root; they
//! skip (pass, with a message) without it.

mod common;

use common::netns::*;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(3);
/// How long "nothing arrives" is waited for.
const QUIET: Duration = Duration::from_millis(400);

fn udp_in(ns: &str) -> UdpSocket {
    in_ns(ns, || UdpSocket::bind("0.0.0.0:0")).expect("bind UDP socket")
}

fn tcp_in(ns: &str, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    in_ns(ns, move || TcpStream::connect_timeout(&to, timeout))
}

/// The next datagram on `sock` within `timeout`.
fn recv(sock: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 1500];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(_) => None,
    }
}

#[test]
fn stun_from_behind_a_nat_maps_to_the_nat_address() {
    let Some(topo) = Topology::new() else { return };
    let turn = topo.coturn();

    let a = udp_in(topo.host_a());
    let local = a.local_addr().unwrap();
    let mapped = stun_binding(&a, turn.udp_addr(), T).unwrap();
    println!("hostA {local} is {mapped} to coturn");
    assert_eq!(mapped.ip(), topo.nat_a_public());
    // Linux MASQUERADE keeps the source port when it is free.
    assert_eq!(mapped.port(), local.port());
    // Endpoint-independent mapping: the same to another port of the server (coturn
    // answers plain STUN on its DTLS port too).
    assert_eq!(stun_binding(&a, turn.tls_addr(), T).unwrap(), mapped);

    // coturn's own client agrees, from the other site.
    let out = ns_exec(topo.host_b(), "turnutils_stunclient", &["192.0.2.10"])
        .output()
        .expect("run turnutils_stunclient");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let reflexive: SocketAddr = text
        .lines()
        .find_map(|l| l.split("UDP reflexive addr: ").nth(1))
        .unwrap_or_else(|| panic!("no reflexive address in:\n{text}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(reflexive.ip(), topo.nat_b_public());

    // hostP has no NAT.
    let p = udp_in(topo.host_p());
    let mapped = stun_binding(&p, turn.udp_addr(), T).unwrap();
    assert_eq!(
        mapped,
        SocketAddr::new(topo.host_p_ip(), p.local_addr().unwrap().port())
    );
}

#[test]
fn symmetric_nat_maps_each_destination_to_its_own_port() {
    let Some(topo) = Topology::with_nats(Nat::Symmetric, Nat::Cone) else {
        return;
    };
    let turn = topo.coturn();
    let a = udp_in(topo.host_a());
    let m1 = stun_binding(&a, turn.udp_addr(), T).unwrap();
    let m2 = stun_binding(&a, turn.tls_addr(), T).unwrap();
    println!("hostA maps to {m1} and {m2}");
    assert_eq!(m1.ip(), topo.nat_a_public());
    assert_eq!(m2.ip(), topo.nat_a_public());
    // Random ports: equal once in ~30000 runs.
    assert_ne!(m1.port(), m2.port());
}

#[test]
fn in_ns_threads_and_processes_inherit_the_namespace() {
    let Some(topo) = Topology::new() else { return };
    let host_a_ip = topo.host_a_ip();
    let (bound, addrs) = in_ns(topo.host_a(), move || {
        // A thread started from the namespace thread (as smolrtc's runtime thread would be).
        let bound = std::thread::spawn(move || UdpSocket::bind((host_a_ip, 0)).map(|_| ()))
            .join()
            .unwrap();
        // A process started from it.
        let out = std::process::Command::new("ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .unwrap();
        (bound, String::from_utf8_lossy(&out.stdout).into_owned())
    });
    bound.expect("hostA's address is bindable from a nested thread");
    assert!(addrs.contains("10.0.1.2/24"), "{addrs}");
    assert!(!addrs.contains("192.0.2."), "{addrs}");
    // A private address of the other site is unreachable (natA has no route to it).
    let a = udp_in(topo.host_a());
    let b = in_ns(topo.host_b(), || UdpSocket::bind("10.0.2.2:0")).unwrap();
    let _ = a.send_to(b"private", b.local_addr().unwrap());
    assert!(recv(&b, QUIET).is_none());
}

#[test]
fn hole_punching_opens_both_nats_only_once_both_sides_sent() {
    let Some(topo) = Topology::new() else { return };
    // (Also covers starting coturn without TLS.)
    let turn = Coturn::start(
        topo.pub_ns(),
        CoturnOpts {
            tls: false,
            ..Default::default()
        },
    );
    let a = udp_in(topo.host_a());
    let b = udp_in(topo.host_b());
    let ma = stun_binding(&a, turn.udp_addr(), T).unwrap();
    let mb = stun_binding(&b, turn.udp_addr(), T).unwrap();
    assert_eq!(ma.ip(), topo.nat_a_public());
    assert_eq!(mb.ip(), topo.nat_b_public());

    // A's first packet is unsolicited at natB: dropped (silently: no ICMP, no conntrack).
    a.send_to(b"a1", mb).unwrap();
    assert!(
        recv(&b, QUIET).is_none(),
        "natB let an unsolicited packet in"
    );
    // B's packet to A's mapping matches the mapping A's send made at natA...
    b.send_to(b"b1", ma).unwrap();
    assert_eq!(recv(&a, T), Some((b"b1".to_vec(), mb)));
    // ...and now natB has one for A, with the same port as to coturn.
    a.send_to(b"a2", mb).unwrap();
    assert_eq!(recv(&b, T), Some((b"a2".to_vec(), ma)));
}

#[test]
fn turnutils_uclient_allocates_through_a_nat_with_long_term_credentials() {
    let Some(topo) = Topology::new() else { return };
    let turn = Coturn::start(
        topo.pub_ns(),
        CoturnOpts {
            max_allocate_lifetime: Some(30),
            ..Default::default()
        },
    );
    let started = Instant::now();
    let uclient = |password: &str| {
        ns_exec(
            topo.host_a(),
            "turnutils_uclient",
            // -y: the client sends to its own second relay (client to client), so
            // ALLOCATE, CREATE_PERMISSION, CHANNEL_BIND and relayed data all happen.
            &[
                "-u",
                turn.user(),
                "-w",
                password,
                "-y",
                "-n",
                "3",
                "-m",
                "1",
                "-z",
                "5",
                "192.0.2.10",
            ],
        )
        .output()
        .expect("run turnutils_uclient")
    };
    let out = uclient(turn.password());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("uclient took {:?}", started.elapsed());
    assert!(
        out.status.success() && text.contains("Total lost packets 0"),
        "uclient ({}):\n{text}\n{}",
        out.status,
        turn.diagnostics()
    );
    let log = turn.log();
    for needle in [
        "username=<user>, lifetime=30",
        "ALLOCATE processed, success",
        "CHANNEL_BIND processed, success",
        "REFRESH processed, success",
    ] {
        assert!(
            log.contains(needle),
            "no {needle:?} in coturn's log:\n{log}"
        );
    }

    // A wrong password gets no allocation.
    let before = turn.log_count("ALLOCATE processed, success");
    let started = Instant::now();
    let out = uclient("wrong");
    println!("uclient with a wrong password took {:?}", started.elapsed());
    assert!(
        !out.status.success(),
        "uclient with a wrong password succeeded"
    );
    assert!(turn.log_count("401") > 0);
    assert_eq!(turn.log_count("ALLOCATE processed, success"), before);
}

#[test]
fn blocked_udp_to_turn_times_out_while_tcp_still_works() {
    let Some(topo) = Topology::new() else { return };
    let turn = topo.coturn();
    let host_a = topo.host_a();
    let a = udp_in(host_a);
    stun_binding(&a, turn.udp_addr(), T).unwrap();

    topo.block_udp_to_turn(host_a);
    let err = stun_binding(&a, turn.udp_addr(), Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    let fresh = udp_in(host_a);
    assert!(stun_binding(&fresh, turn.udp_addr(), Duration::from_secs(1)).is_err());
    // TCP (and TLS's port) still connect, and STUN over TCP sees the NAT address.
    let mut tcp = tcp_in(host_a, turn.tcp_addr(), T).expect("TCP to coturn");
    let mapped = stun_binding_tcp(&mut tcp, T).unwrap();
    assert_eq!(mapped.ip(), topo.nat_a_public());
    tcp_in(host_a, turn.tls_addr(), T).expect("TCP to coturn's TLS port");
    // TLS on it verifies against the exported certificate, by IP and by name.
    let cert = turn.cert_path();
    let out = ns_exec(
        host_a,
        "openssl",
        &["s_client", "-connect", "192.0.2.10:5349"],
    )
    .arg("-CAfile")
    .arg(&cert)
    .args(["-verify_return_error", "-verify_ip", "192.0.2.10"])
    .args(["-verify_hostname", "turn.test", "-brief"])
    .stdin(std::process::Stdio::null())
    .output()
    .expect("run openssl s_client");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Verification: OK"),
        "openssl s_client ({}):\n{text}",
        out.status
    );
    // The other site is not affected.
    stun_binding(&udp_in(topo.host_b()), turn.udp_addr(), T).unwrap();

    topo.unblock_to_turn(host_a, Proto::Udp);
    stun_binding(&a, turn.udp_addr(), T).unwrap();

    topo.block_tcp_to_turn(host_a);
    assert!(tcp_in(host_a, turn.tcp_addr(), Duration::from_millis(500)).is_err());
    stun_binding(&a, turn.udp_addr(), T).unwrap();
}

#[test]
fn cut_host_loses_everything_silently_and_restore_brings_it_back() {
    let Some(topo) = Topology::new() else { return };
    let turn = topo.coturn();
    let quick = Duration::from_millis(600);
    for ns in [topo.host_a(), topo.host_p(), topo.nat_b()] {
        // A host behind natB when cutting natB (its whole site).
        let client = if ns == topo.nat_b() {
            topo.host_b()
        } else {
            ns
        };
        let sock = udp_in(client);
        let before = stun_binding(&sock, turn.udp_addr(), T).unwrap();
        topo.cut(ns);
        // Sends still succeed; nothing comes back.
        let err = stun_binding(&sock, turn.udp_addr(), quick).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{ns}: {err}");
        // Everyone else still gets through.
        let other = if client == topo.host_a() {
            topo.host_b()
        } else {
            topo.host_a()
        };
        stun_binding(&udp_in(other), turn.udp_addr(), T).unwrap();
        topo.restore(ns);
        // Same socket, same mapping: routes and NAT state survived.
        let after = stun_binding(&sock, turn.udp_addr(), T).unwrap();
        assert_eq!(after, before, "{ns}");
    }
    assert_eq!(topo.public_ip(topo.host_b()), IpAddr::from(NAT_B_PUBLIC));
}
