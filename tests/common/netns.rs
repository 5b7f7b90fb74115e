//! A network-namespace harness for NAT and TURN tests: a small "internet" with two NATed
//! sites, one un-NATed host and a coturn server, built from `ip netns`, veth pairs, a
//! bridge and iptables MASQUERADE. Needs root (tests skip, with a message, without it).
//!
//! ```text
//!                      pub  (bridge br0, 192.0.2.10 = coturn)
//!          .-------------------+-------------------.
//!        vA|                 vP|                 vB|
//!   wan 192.0.2.1       eth0 192.0.2.20      wan 192.0.2.2
//!       natA                hostP                natB
//!   lan 10.0.1.1          (no NAT)            lan 10.0.2.1
//!          |                                       |
//!   eth0 10.0.1.2                           eth0 10.0.2.2
//!       hostA  (default via 10.0.1.1)           hostB  (default via 10.0.2.1)
//! ```
//!
//! Every device is created directly inside its namespace (`ip -n NS link add ... peer name
//! X netns OTHER`), so nothing appears in, and no packet crosses, the root namespace.
//! IPv6 is disabled in every namespace (no link-local candidates, no DAD noise). The NATs
//! have endpoint-independent mapping (Linux keeps the source port when it can) and
//! address-and-port-dependent filtering: unsolicited packets arriving on `wan` are
//! silently dropped (no ICMP, and no conntrack entry is confirmed, which would otherwise
//! make the next outgoing mapping to that peer pick a new port and break hole punching).
//! [`Nat::Symmetric`] adds `--random-fully`: a new random port per destination, so only
//! TURN gets through two of them.
//!
//! # Running code in a namespace
//! [`in_ns`] / [`spawn_in_ns`] run a closure on a new thread that first `setns(2)`s into
//! the namespace. On Linux the network namespace is per *thread* (per task `nsproxy`), so:
//! - sockets belong to the namespace of the thread that *created* them, for their whole
//!   life: a socket made in `in_ns` can be returned and used from any thread;
//! - threads and processes started from that thread inherit its namespace. So build a
//!   smolrtc [`smolrtc::Runtime`] with `Runtime::new()` *inside* `in_ns` and pass it to
//!   `PeerConnection::with_runtime`: its thread then gathers and binds there. Never use
//!   `PeerConnection::new` (the process-wide `Runtime::global()`, whose thread lives in
//!   whichever namespace first touched it), nor any other lazily started global worker
//!   (e.g. `smol::unblock`'s pool) to create sockets;
//! - `getifaddrs` (netlink) answers for the thread's namespace, but `/proc/net/*` and
//!   `/proc/self/net` show the *main* thread's (use `/proc/thread-self/net`), and `/sys`
//!   is not remounted (use [`ns_exec`] for tools that read it).
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// coturn's address, on the `pub` bridge: listening and relay address.
pub const TURN_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// natA's outside address: hostA's server-reflexive address.
pub const NAT_A_PUBLIC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// natB's outside address: hostB's server-reflexive address.
pub const NAT_B_PUBLIC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// hostP's address, directly on the bridge (no NAT).
pub const HOST_P_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
/// natA's inside address, hostA's gateway.
pub const NAT_A_PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
/// natB's inside address, hostB's gateway.
pub const NAT_B_PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
/// hostA's (private) address.
pub const HOST_A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
/// hostB's (private) address.
pub const HOST_B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// coturn's plain STUN/TURN port (UDP and TCP).
pub const TURN_PORT: u16 = 3478;
/// coturn's TLS (TCP) and DTLS (UDP) port.
pub const TURNS_PORT: u16 = 5349;
/// The long-term credential coturn accepts by default ([`CoturnOpts::default`]).
pub const TURN_USER: &str = "user";
pub const TURN_PASSWORD: &str = "pass";
pub const TURN_REALM: &str = "smolrtc.test";

/// How a NAT namespace maps its inside hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Nat {
    /// Endpoint-independent mapping, address-and-port-dependent filtering ("port
    /// restricted cone"): hole punching works.
    #[default]
    Cone,
    /// `MASQUERADE --random-fully`: a new random port per destination; only a relay works
    /// between two of these.
    Symmetric,
}

/// The namespaces of a [`Topology`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Pub,
    NatA,
    NatB,
    HostA,
    HostB,
    HostP,
}

const ROLES: [Role; 6] = [
    Role::Pub,
    Role::NatA,
    Role::NatB,
    Role::HostA,
    Role::HostB,
    Role::HostP,
];

impl Role {
    fn suffix(self) -> &'static str {
        match self {
            Role::Pub => "pub",
            Role::NatA => "natA",
            Role::NatB => "natB",
            Role::HostA => "hostA",
            Role::HostB => "hostB",
            Role::HostP => "hostP",
        }
    }

    /// The address this namespace's traffic has on the bridge.
    fn public_ip(self) -> Ipv4Addr {
        match self {
            Role::Pub => TURN_IP,
            Role::NatA | Role::HostA => NAT_A_PUBLIC,
            Role::NatB | Role::HostB => NAT_B_PUBLIC,
            Role::HostP => HOST_P_IP,
        }
    }
}

/// Protocols for [`Topology::block_to_turn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

const NETNS_DIR: &str = "/var/run/netns";
/// Namespace names are `sr<pid>_<counter>_<role>`: unique per process and topology.
const PREFIX: &str = "sr";
static COUNTER: AtomicUsize = AtomicUsize::new(0);
/// coturn's private directories are `<temp>/smolrtc-coturn-<namespace>-<n>`.
const COTURN_DIR_PREFIX: &str = "smolrtc-coturn-";

/// The namespaces and links above; everything is deleted on drop (processes still running
/// in the namespaces, such as a [`Coturn`], are killed first).
pub struct Topology {
    prefix: String,
    names: Vec<(Role, String)>,
}

impl Topology {
    /// Two cone NATs. `None` (after printing why) when namespaces cannot be made here
    /// (not root, no `ip`): the caller should return, skipping the test.
    pub fn new() -> Option<Self> {
        Self::with_nats(Nat::Cone, Nat::Cone)
    }

    /// Like [`Topology::new`], with the kind of each NAT.
    pub fn with_nats(nat_a: Nat, nat_b: Nat) -> Option<Self> {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: network-namespace tests need root");
            return None;
        }
        SWEEP.call_once(sweep_stale);

        let prefix = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut topo = Topology {
            prefix: prefix.clone(),
            names: Vec::new(),
        };
        for role in ROLES {
            let name = format!("{prefix}_{}", role.suffix());
            if Path::new(NETNS_DIR).join(&name).exists() {
                remove_ns(&name);
            }
            match Command::new("ip").args(["netns", "add", &name]).output() {
                Ok(o) if o.status.success() => topo.names.push((role, name)),
                Ok(o) if topo.names.is_empty() => {
                    eprintln!(
                        "skipping: `ip netns add` failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    return None;
                }
                Err(e) if topo.names.is_empty() => {
                    eprintln!("skipping: cannot run `ip` ({e}): install iproute2");
                    return None;
                }
                Ok(o) => panic!(
                    "ip netns add {name}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => panic!("ip netns add {name}: {e}"),
            }
        }
        // From here on a panic drops `topo`, which deletes what was made.
        topo.build(nat_a, nat_b);
        Some(topo)
    }

    fn build(&self, nat_a: Nat, nat_b: Nat) {
        let (pb, na, nb) = (self.pub_ns(), self.nat_a(), self.nat_b());
        for (_, ns) in &self.names {
            sysctl(
                ns,
                &[
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            );
            ip_batch(ns, &["link set dev lo up".into()]);
        }
        ip_batch(
            pb,
            &[
                "link add name br0 type bridge".into(),
                format!("addr add {TURN_IP}/24 dev br0"),
                "link set dev br0 up".into(),
            ],
        );
        // Outside legs: natA, natB, hostP to the bridge.
        for (ns, ip, port) in [
            (na, NAT_A_PUBLIC, "vA"),
            (nb, NAT_B_PUBLIC, "vB"),
            (self.host_p(), HOST_P_IP, "vP"),
        ] {
            let dev = if ns == self.host_p() { "eth0" } else { "wan" };
            self.outside_leg(ns, ip, dev, port);
        }
        // Inside legs: hostA behind natA, hostB behind natB.
        inside_leg((self.host_a(), HOST_A_IP), (na, NAT_A_PRIVATE), nat_a);
        inside_leg((self.host_b(), HOST_B_IP), (nb, NAT_B_PRIVATE), nat_b);
    }

    /// `ns`'s device `dev` at `ip`, to the public bridge's port `port`.
    fn outside_leg(&self, ns: &str, ip: Ipv4Addr, dev: &str, port: &str) {
        let pb = self.pub_ns();
        ip_batch(
            ns,
            &[
                format!("link add name {dev} type veth peer name {port} netns {pb}"),
                format!("addr add {ip}/24 dev {dev}"),
                format!("link set dev {dev} up"),
            ],
        );
        ip_batch(
            pb,
            &[
                format!("link set dev {port} master br0"),
                format!("link set dev {port} up"),
            ],
        );
    }

    /// The `sr<pid>_<n>` prefix of this topology's namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace name of `role`.
    pub fn ns(&self, role: Role) -> &str {
        &self
            .names
            .iter()
            .find(|(r, _)| *r == role)
            .expect("namespace of role")
            .1
    }

    /// The role of the namespace called `ns` (panics if it is not one of ours).
    pub fn role(&self, ns: &str) -> Role {
        self.names
            .iter()
            .find(|(_, n)| n == ns)
            .unwrap_or_else(|| panic!("{ns} is not a namespace of topology {}", self.prefix))
            .0
    }

    /// The "internet": the bridge and coturn's address.
    pub fn pub_ns(&self) -> &str {
        self.ns(Role::Pub)
    }
    pub fn nat_a(&self) -> &str {
        self.ns(Role::NatA)
    }
    pub fn nat_b(&self) -> &str {
        self.ns(Role::NatB)
    }
    pub fn host_a(&self) -> &str {
        self.ns(Role::HostA)
    }
    pub fn host_b(&self) -> &str {
        self.ns(Role::HostB)
    }
    /// A host directly on the bridge, reachable without NAT.
    pub fn host_p(&self) -> &str {
        self.ns(Role::HostP)
    }

    /// coturn's address (192.0.2.10).
    pub fn turn_addr(&self) -> IpAddr {
        TURN_IP.into()
    }
    /// natA's outside address (192.0.2.1).
    pub fn nat_a_public(&self) -> IpAddr {
        NAT_A_PUBLIC.into()
    }
    /// natB's outside address (192.0.2.2).
    pub fn nat_b_public(&self) -> IpAddr {
        NAT_B_PUBLIC.into()
    }
    /// hostA's private address (10.0.1.2).
    pub fn host_a_ip(&self) -> IpAddr {
        HOST_A_IP.into()
    }
    /// hostB's private address (10.0.2.2).
    pub fn host_b_ip(&self) -> IpAddr {
        HOST_B_IP.into()
    }
    /// hostP's address (192.0.2.20).
    pub fn host_p_ip(&self) -> IpAddr {
        HOST_P_IP.into()
    }
    /// The source address `ns`'s packets have on the bridge (its NAT's, for a host behind
    /// one).
    pub fn public_ip(&self, ns: &str) -> IpAddr {
        self.role(ns).public_ip().into()
    }

    /// Runs `iptables -w ARGS` in `ns`, panicking with its stderr on failure.
    pub fn iptables(&self, ns: &str, args: &[&str]) {
        self.role(ns);
        let mut all = vec!["-w"];
        all.extend_from_slice(args);
        run(ns_exec(ns, "iptables", &all));
    }

    /// Silently drops `proto` packets from `ns` (a host, or its NAT: the rule matches the
    /// public source address) to coturn's address, all ports: coturn's `pub` namespace
    /// drops them in INPUT, so the client's sends still succeed. Relayed traffic from
    /// other sources is untouched.
    pub fn block_to_turn(&self, ns: &str, proto: Proto) {
        self.turn_rule("-I", ns, proto);
    }

    /// Undoes [`Topology::block_to_turn`].
    pub fn unblock_to_turn(&self, ns: &str, proto: Proto) {
        self.turn_rule("-D", ns, proto);
    }

    /// [`Topology::block_to_turn`] for UDP: TURN only over TCP/TLS from `ns`.
    pub fn block_udp_to_turn(&self, ns: &str) {
        self.block_to_turn(ns, Proto::Udp);
    }

    /// [`Topology::block_to_turn`] for TCP (TURN-over-TCP and TLS).
    pub fn block_tcp_to_turn(&self, ns: &str) {
        self.block_to_turn(ns, Proto::Tcp);
    }

    fn turn_rule(&self, op: &str, ns: &str, proto: Proto) {
        let role = self.role(ns);
        assert!(role != Role::Pub, "block_to_turn: coturn's own namespace");
        let src = role.public_ip().to_string();
        let dst = TURN_IP.to_string();
        let rule = [
            op,
            "INPUT",
            "-s",
            &src,
            "-d",
            &dst,
            "-p",
            proto.name(),
            "-j",
            "DROP",
        ];
        self.iptables(self.pub_ns(), &rule);
    }

    /// Cuts every packet to and from `ns` (a host, or a NAT with its whole site) by taking
    /// the far end of its uplink down (natA's `lan` for hostA, the bridge port for the
    /// others). `ns` itself only sees its carrier go: addresses, routes, sockets and NAT
    /// mappings stay, and sends still succeed (the packets are lost), as on a dead link.
    pub fn cut(&self, ns: &str) {
        let (up, dev) = self.uplink(ns);
        ip_batch(up, &[format!("link set dev {dev} down")]);
    }

    /// Undoes [`Topology::cut`].
    pub fn restore(&self, ns: &str) {
        let (up, dev) = self.uplink(ns);
        ip_batch(up, &[format!("link set dev {dev} up")]);
    }

    fn uplink(&self, ns: &str) -> (&str, &'static str) {
        match self.role(ns) {
            Role::Pub => panic!("cut/restore: the pub namespace has no uplink"),
            Role::HostA => (self.nat_a(), "lan"),
            Role::HostB => (self.nat_b(), "lan"),
            Role::NatA => (self.pub_ns(), "vA"),
            Role::NatB => (self.pub_ns(), "vB"),
            Role::HostP => (self.pub_ns(), "vP"),
        }
    }

    /// coturn with [`CoturnOpts::default`] in the `pub` namespace, ready.
    pub fn coturn(&self) -> Coturn {
        Coturn::start(self.pub_ns(), CoturnOpts::default())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for (_, ns) in &self.names {
            kill_ns_pids(ns);
        }
        for (_, ns) in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// `ip netns exec NS CMD ARGS`: a command run in `ns` (a fresh mount namespace with `/sys`
/// for `ns`, as `ip netns exec` does; `ip` execs CMD, so the child's pid is CMD's).
pub fn ns_exec(ns: &str, cmd: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, cmd]).args(args);
    c
}

/// Runs `f` on a new thread in network namespace `ns` and returns its result (a panic in
/// `f` is resumed here). See the module docs for what does and does not follow the thread.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match spawn_in_ns(ns, f).join() {
        Ok(t) => t,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Starts `f` on a new thread that first joins network namespace `ns` (`setns(2)` on
/// `/var/run/netns/<ns>` with `CLONE_NEWNET`); threads it starts are in `ns` too.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = Path::new(NETNS_DIR).join(ns);
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let ns = ns.to_owned();
    std::thread::Builder::new()
        .name(format!("ns {ns}"))
        .spawn(move || {
            // SAFETY: `file` is an open namespace file for the duration of the call;
            // setns only changes this thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                panic!("setns({ns}): {}", io::Error::last_os_error());
            }
            drop(file);
            f()
        })
        .expect("spawn a thread")
}

/// Options for [`Coturn::start`]; the default is coturn on [`TURN_IP`] with user
/// `user:pass`, realm `smolrtc.test`, TLS/DTLS on 5349 and coturn's default lifetimes.
#[derive(Clone, Debug)]
pub struct CoturnOpts {
    /// Listening and relay address (must be an address of the namespace).
    pub ip: Ipv4Addr,
    pub user: String,
    pub password: String,
    pub realm: String,
    /// TLS (TCP) and DTLS (UDP) on [`TURNS_PORT`], with a fresh self-signed certificate.
    pub tls: bool,
    /// `max-allocate-lifetime` (s): caps every allocation's and refresh's lifetime, so a
    /// client must refresh sooner than the usual 600 s (coturn's default cap is 3600 s).
    pub max_allocate_lifetime: Option<u32>,
    /// `channel-lifetime` (s; default 600).
    pub channel_lifetime: Option<u32>,
    /// `permission-lifetime` (s; default 300).
    pub permission_lifetime: Option<u32>,
    /// More `turnserver.conf` lines, verbatim.
    pub extra: Vec<String>,
}

impl Default for CoturnOpts {
    fn default() -> Self {
        Self {
            ip: TURN_IP,
            user: TURN_USER.into(),
            password: TURN_PASSWORD.into(),
            realm: TURN_REALM.into(),
            tls: true,
            max_allocate_lifetime: None,
            channel_lifetime: None,
            permission_lifetime: None,
            extra: Vec::new(),
        }
    }
}

/// A `turnserver` running in a namespace, with its config, certificate and log in a
/// private temporary directory. Killed on drop (the directory is removed, or kept with the
/// log tail printed if the thread is panicking).
pub struct Coturn {
    child: Child,
    dir: PathBuf,
    opts: CoturnOpts,
}

impl Coturn {
    /// Writes the config (and, with `tls`, a self-signed certificate for `turn.test` and
    /// the IP), starts `turnserver -c` in `ns` and waits (at most 10 s) until it answers a
    /// STUN Binding on UDP and accepts TCP (and TLS) connections.
    pub fn start(ns: &str, opts: CoturnOpts) -> Coturn {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "{COTURN_DIR_PREFIX}{ns}-{}",
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("coturn temp dir");
        if opts.tls {
            // A CA (what clients trust, `ca.pem`) and a server certificate it signed
            // (`cert.pem`, CA:FALSE): webpki refuses a self-signed CA as the server's.
            let mut ca = Command::new("openssl");
            ca.args(["req", "-x509", "-newkey", "ec"])
                .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
                .args(["-days", "2", "-subj", "/CN=smolrtc test CA"])
                .arg("-keyout")
                .arg(dir.join("ca-key.pem"))
                .arg("-out")
                .arg(dir.join("ca.pem"));
            run(ca);
            let mut csr = Command::new("openssl");
            csr.args(["req", "-new", "-newkey", "ec"])
                .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
                .args(["-subj", "/CN=turn.test"])
                .arg("-keyout")
                .arg(dir.join("key.pem"))
                .arg("-out")
                .arg(dir.join("server.csr"));
            run(csr);
            std::fs::write(
                dir.join("server.ext"),
                format!(
                    "basicConstraints=critical,CA:FALSE\nkeyUsage=digitalSignature\n\
                     extendedKeyUsage=serverAuth\nsubjectAltName=IP:{},DNS:turn.test\n",
                    opts.ip
                ),
            )
            .expect("server.ext");
            let mut sign = Command::new("openssl");
            sign.args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(dir.join("server.csr"))
                .arg("-CA")
                .arg(dir.join("ca.pem"))
                .arg("-CAkey")
                .arg(dir.join("ca-key.pem"))
                .arg("-extfile")
                .arg(dir.join("server.ext"))
                .arg("-out")
                .arg(dir.join("cert.pem"));
            run(sign);
        }
        let config = config_text(&opts, &dir);
        let conf_path = dir.join("turnserver.conf");
        std::fs::write(&conf_path, &config).expect("write turnserver.conf");
        let out = File::create(dir.join("stdout.log")).expect("coturn stdout file");
        let err = out.try_clone().expect("dup");
        let conf_arg = conf_path.to_str().expect("utf-8 temp dir");
        let child = ns_exec(ns, "turnserver", &["-c", conf_arg])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start turnserver ({e}): run .ci/setup to install coturn"));
        let mut coturn = Coturn { child, dir, opts };
        coturn.wait_ready(ns, Duration::from_secs(10));
        coturn
    }

    fn wait_ready(&mut self, ns: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (udp, tcp, tls) = (self.udp_addr(), self.tcp_addr(), self.tls_addr());
        let want_tls = self.opts.tls;
        let sock = in_ns(ns, || UdpSocket::bind("0.0.0.0:0")).expect("bind probe socket");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "turnserver exited ({status}) before it was ready\n{}",
                    self.diagnostics()
                );
            }
            let udp_ok = stun_binding(&sock, udp, Duration::from_millis(200)).is_ok();
            let tcp_ok = udp_ok
                && in_ns(ns, move || {
                    let t = Duration::from_millis(200);
                    TcpStream::connect_timeout(&tcp, t).is_ok()
                        && (!want_tls || TcpStream::connect_timeout(&tls, t).is_ok())
                });
            if tcp_ok {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "turnserver not ready after {timeout:?} (STUN on {udp}: {udp_ok})\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The config file, its stdout/stderr and the tail of its log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let stdout = std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
        format!(
            "--- {} ---\n{}\n--- turnserver stdout/stderr ---\n{}\n--- log tail ---\n{}",
            self.dir.join("turnserver.conf").display(),
            self.config(),
            stdout.trim(),
            self.log_tail(40)
        )
    }

    /// The process id of `turnserver`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Listening (and relay) address.
    pub fn ip(&self) -> IpAddr {
        self.opts.ip.into()
    }
    /// STUN/TURN over UDP: `ip:3478`.
    pub fn udp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), TURN_PORT)
    }
    /// TURN over TCP: `ip:3478`.
    pub fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), TURN_PORT)
    }
    /// TURN over TLS (and DTLS on UDP): `ip:5349`.
    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), TURNS_PORT)
    }
    pub fn user(&self) -> &str {
        &self.opts.user
    }
    pub fn password(&self) -> &str {
        &self.opts.password
    }
    pub fn realm(&self) -> &str {
        &self.opts.realm
    }
    pub fn opts(&self) -> &CoturnOpts {
        &self.opts
    }
    /// This server as STUN (`stun:ip:3478`).
    pub fn stun(&self) -> smolrtc::IceServer {
        smolrtc::IceServer::parse(&format!("stun:{}", self.udp_addr())).unwrap()
    }
    /// This server as TURN over `transport` (`udp` or `tcp`), with its user's credentials.
    pub fn turn(&self, transport: &str) -> smolrtc::IceServer {
        let url = format!(
            "turn:{}:{}@{}?transport={transport}",
            self.user(),
            self.password(),
            self.udp_addr()
        );
        smolrtc::IceServer::parse(&url).unwrap()
    }
    /// The private directory (config, cert, key, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The self-signed server certificate (PEM) for a TLS client to trust (`tls` only).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// [`Coturn::cert_path`]'s contents.
    pub fn cert_pem(&self) -> String {
        std::fs::read_to_string(self.cert_path()).expect("coturn cert.pem (tls off?)")
    }
    /// The `turnserver.conf` it runs with.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.join("turnserver.conf")).unwrap_or_default()
    }
    /// The whole log so far (`verbose`: one line per ALLOCATE, REFRESH, CREATE_PERMISSION,
    /// CHANNEL_BIND, ... with its outcome, e.g. "incoming packet REFRESH processed,
    /// success").
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turn.log")).unwrap_or_default()
    }
    /// The last `n` non-empty log lines.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }
    /// Waits (bounded) until the log has a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_count(needle) > 0 {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "coturn files kept in {}; log tail:\n{}",
                self.dir.display(),
                self.log_tail(40)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn config_text(opts: &CoturnOpts, dir: &Path) -> String {
    let d = dir.display();
    let mut lines = vec![
        format!("listening-ip={}", opts.ip),
        format!("relay-ip={}", opts.ip),
        format!("listening-port={TURN_PORT}"),
        "lt-cred-mech".to_owned(),
        format!("user={}:{}", opts.user, opts.password),
        format!("realm={}", opts.realm),
        "fingerprint".to_owned(),
        "no-cli".to_owned(),
        "no-multicast-peers".to_owned(),
        // coturn 4.6 denies no private range by default, but a distribution config or a
        // later version may: the peers here are all in these ranges.
        "allowed-peer-ip=192.0.2.0-192.0.2.255".to_owned(),
        // As public TURN servers are set up: no relaying into private ranges. It matters
        // here too: coturn's relay socket dies on the ENETUNREACH a send to a peer's
        // (unroutable) host candidate gets, and every later datagram to it is lost.
        "denied-peer-ip=10.0.0.0-10.255.255.255".to_owned(),
        // Keep everything in the private directory (the defaults are system-wide paths).
        format!("log-file={d}/turn.log"),
        "simple-log".to_owned(),
        "verbose".to_owned(),
        "no-stdout-log".to_owned(),
        format!("pidfile={d}/turnserver.pid"),
        format!("userdb={d}/turndb"),
    ];
    if opts.tls {
        lines.push(format!("tls-listening-port={TURNS_PORT}"));
        lines.push(format!("cert={d}/cert.pem"));
        lines.push(format!("pkey={d}/key.pem"));
    } else {
        lines.push("no-tls".to_owned());
        lines.push("no-dtls".to_owned());
    }
    for (key, value) in [
        ("max-allocate-lifetime", opts.max_allocate_lifetime),
        ("channel-lifetime", opts.channel_lifetime),
        ("permission-lifetime", opts.permission_lifetime),
    ] {
        if let Some(v) = value {
            lines.push(format!("{key}={v}"));
        }
    }
    lines.extend(opts.extra.iter().cloned());
    lines.join("\n") + "\n"
}

const MAGIC_COOKIE: u32 = 0x2112_a442;

fn transaction_id() -> [u8; 12] {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut id = [0u8; 12];
    for (i, chunk) in id.chunks_mut(6).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(N.fetch_add(1, Ordering::Relaxed) + i);
        chunk.copy_from_slice(&h.finish().to_be_bytes()[..6]);
    }
    id
}

fn binding_request(id: &[u8; 12]) -> [u8; 20] {
    let mut req = [0u8; 20];
    req[..2].copy_from_slice(&0x0001u16.to_be_bytes());
    // Length 0: no attributes.
    req[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    req[8..].copy_from_slice(id);
    req
}

/// The mapped address in a Binding success response for transaction `id` (`None`: not a
/// response to it; `Err`: an error response or a malformed one).
fn parse_binding_response(msg: &[u8], id: &[u8; 12]) -> Option<io::Result<SocketAddr>> {
    if msg.len() < 20 || msg[4..8] != MAGIC_COOKIE.to_be_bytes() || msg[8..20] != id[..] {
        return None;
    }
    let bad = |what: &str| Some(Err(io::Error::new(io::ErrorKind::InvalidData, what)));
    match u16::from_be_bytes([msg[0], msg[1]]) {
        0x0101 => {}
        0x0111 => return bad("STUN Binding error response"),
        _ => return None,
    }
    let len = u16::from_be_bytes([msg[2], msg[3]]) as usize;
    let Some(mut attrs) = msg.get(20..20 + len) else {
        return bad("truncated STUN message");
    };
    let mut mapped = None;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = u16::from_be_bytes([attrs[2], attrs[3]]) as usize;
        let Some(value) = attrs.get(4..4 + alen) else {
            return bad("truncated STUN attribute");
        };
        let xor = match kind {
            0x0020 => true,
            0x0001 => false,
            _ => {
                attrs = attrs.get(4 + alen.next_multiple_of(4)..).unwrap_or(&[]);
                continue;
            }
        };
        if value.len() < 8 {
            return bad("short mapped address");
        }
        let mut port = u16::from_be_bytes([value[2], value[3]]);
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        key[4..].copy_from_slice(id);
        let ip: IpAddr = match (value[1], value.len()) {
            (1, _) => {
                let mut b = [value[4], value[5], value[6], value[7]];
                if xor {
                    b.iter_mut().zip(key).for_each(|(x, k)| *x ^= k);
                }
                Ipv4Addr::from(b).into()
            }
            (2, 20..) => {
                let mut b: [u8; 16] = value[4..20].try_into().expect("16 bytes");
                if xor {
                    b.iter_mut().zip(key).for_each(|(x, k)| *x ^= k);
                }
                std::net::Ipv6Addr::from(b).into()
            }
            _ => return bad("bad mapped address family"),
        };
        if xor {
            port ^= (MAGIC_COOKIE >> 16) as u16;
        }
        // XOR-MAPPED-ADDRESS wins over MAPPED-ADDRESS.
        if xor || mapped.is_none() {
            mapped = Some(SocketAddr::new(ip, port));
        }
        attrs = attrs.get(4 + alen.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Some(mapped.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no mapped address")))
}

/// A STUN Binding request on `sock` to `server`, sent again every 250 ms until a matching
/// success response arrives or `timeout` passes (`ErrorKind::TimedOut`); returns the
/// (XOR-)MAPPED-ADDRESS. Other datagrams are discarded. Leaves `sock`'s read timeout set.
pub fn stun_binding(
    sock: &UdpSocket,
    server: SocketAddr,
    timeout: Duration,
) -> io::Result<SocketAddr> {
    let id = transaction_id();
    let req = binding_request(&id);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no STUN Binding response from {server} in {timeout:?}"),
            ));
        }
        sock.send_to(&req, server)?;
        let resend = (now + Duration::from_millis(250)).min(deadline);
        while let Some(left) = resend.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == server => {
                    if let Some(result) = parse_binding_response(&buf[..n], &id) {
                        return result;
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // ICMP errors reported on the socket (e.g. port unreachable): retry.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A STUN Binding request over a connected TCP stream (RFC 5389 framing: messages back
/// to back); returns the mapped address, i.e. the connection's public source address.
pub fn stun_binding_tcp(stream: &mut TcpStream, timeout: Duration) -> io::Result<SocketAddr> {
    let id = transaction_id();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&binding_request(&id))?;
    let mut header = [0u8; 20];
    stream.read_exact(&mut header)?;
    let len = u16::from_be_bytes([header[2], header[3]]) as usize;
    let mut msg = header.to_vec();
    msg.resize(20 + len, 0);
    stream.read_exact(&mut msg[20..])?;
    parse_binding_response(&msg, &id).unwrap_or_else(|| {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a response to our Binding request",
        ))
    })
}

fn run(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_stdin(mut cmd: Command, input: &str) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}): {}\ninput:\n{input}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// `ip -n NS -batch -` with `lines` (one process for several changes).
fn ip_batch(ns: &str, lines: &[String]) {
    let mut cmd = Command::new("ip");
    cmd.args(["-n", ns, "-batch", "-"]);
    run_stdin(cmd, &(lines.join("\n") + "\n"));
}

/// `host` (its `eth0` at `host_ip`) behind `nat` (its `lan` at `gw`, the host's default
/// route), which masquerades onto its `wan` as `kind` says and lets nothing unsolicited in.
fn inside_leg((host, host_ip): (&str, Ipv4Addr), (nat, gw): (&str, Ipv4Addr), kind: Nat) {
    ip_batch(
        host,
        &[format!(
            "link add name eth0 type veth peer name lan netns {nat}"
        )],
    );
    ip_batch(
        nat,
        &[
            format!("addr add {gw}/24 dev lan"),
            "link set dev lan up".into(),
        ],
    );
    ip_batch(
        host,
        &[
            format!("addr add {host_ip}/24 dev eth0"),
            "link set dev eth0 up".into(),
            format!("route add default via {gw}"),
        ],
    );
    sysctl(nat, &["net.ipv4.ip_forward=1"]);
    let random = match kind {
        Nat::Cone => "",
        Nat::Symmetric => " --random-fully",
    };
    // Unsolicited packets from outside are dropped in filter, before conntrack
    // confirms an entry for them (see the module docs).
    let rules = format!(
        "*nat\n\
         -A POSTROUTING -o wan -j MASQUERADE{random}\n\
         COMMIT\n\
         *filter\n\
         -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         -A INPUT -i wan -j DROP\n\
         -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         -A FORWARD -i wan -j DROP\n\
         COMMIT\n"
    );
    run_stdin(ns_exec(nat, "iptables-restore", &["-w"]), &rules);
}

fn sysctl(ns: &str, settings: &[&str]) {
    let mut args = vec!["-qw"];
    args.extend_from_slice(settings);
    run(ns_exec(ns, "sysctl", &args));
}

/// SIGKILLs every process whose network namespace is `ns` (never this one).
fn kill_ns_pids(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    let me = std::process::id();
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|&p| p != me && p > 1)
    {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

fn remove_ns(ns: &str) {
    kill_ns_pids(ns);
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
}

/// Deletes namespaces (and kills what runs in them) and coturn directories left by
/// earlier test processes that died before dropping their [`Topology`] or [`Coturn`]:
/// names `sr<pid>_<n>_<role>` (`smolrtc-coturn-sr<pid>_...` in the temp dir) whose pid is
/// gone.
fn sweep_stale() {
    let me = std::process::id();
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return false;
        };
        let mut parts = rest.splitn(3, '_');
        let (Some(pid), Some(n), Some(role)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            return false;
        };
        let role = role.split('-').next().unwrap_or_default();
        ROLES.iter().any(|r| r.suffix() == role)
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && pid != me
            && !Path::new(&format!("/proc/{pid}")).exists()
    };
    for (name, _) in dir_entries(Path::new(NETNS_DIR)) {
        if dead(&name) {
            eprintln!("netns: removing stale namespace {name}");
            remove_ns(&name);
        }
    }
    for (name, path) in dir_entries(&std::env::temp_dir()) {
        if name.strip_prefix(COTURN_DIR_PREFIX).is_some_and(dead) {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// The names and paths in `dir` (none if it cannot be read).
fn dir_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect()
}
