//! A UDP forwarder in front of a peer on 127.0.0.1, for tests that watch, drop or inject
//! datagrams on a live connection: what arrives on its `front` socket goes on to `target`
//! from a second socket, and what `target` answers goes back from `front` to whoever sent
//! to it last.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

pub struct Forwarder {
    front: Arc<UdpSocket>,
    /// The address that last sent to `front` (the far peer), learned from its datagrams.
    far: Arc<Mutex<Option<SocketAddr>>>,
}

impl Forwarder {
    /// Starts forwarding to `target`: `inward` sees each datagram toward `target` and
    /// passes it (true) or drops it (false); `outward` sees each one coming back. Both
    /// run on the forwarder's threads, which end with the test process.
    pub fn start(
        target: SocketAddr,
        inward: impl FnMut(&[u8]) -> bool + Send + 'static,
        mut outward: impl FnMut(&[u8]) + Send + 'static,
    ) -> Self {
        Self::start_filtered(target, inward, move |d| {
            outward(d);
            true
        })
    }

    /// [`Forwarder::start`], with `outward` passing (true) or dropping (false) each
    /// datagram coming back too.
    pub fn start_filtered(
        target: SocketAddr,
        mut inward: impl FnMut(&[u8]) -> bool + Send + 'static,
        mut outward: impl FnMut(&[u8]) -> bool + Send + 'static,
    ) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let far: Arc<Mutex<Option<SocketAddr>>> = Default::default();
        let (f, b, far2) = (front.clone(), back.clone(), far.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = f.recv_from(&mut buf) {
                *far2.lock().unwrap() = Some(from);
                if inward(&buf[..n]) {
                    let _ = b.send_to(&buf[..n], target);
                }
            }
        });
        let (f, far2) = (front.clone(), far.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, _)) = back.recv_from(&mut buf) {
                if !outward(&buf[..n]) {
                    continue;
                }
                if let Some(to) = *far2.lock().unwrap() {
                    let _ = f.send_to(&buf[..n], to);
                }
            }
        });
        Self { front, far }
    }

    /// The address the far peer is to send to.
    pub fn front(&self) -> SocketAddr {
        self.front.local_addr().unwrap()
    }

    /// The far peer's address; panics (naming `who`) before it sent anything.
    pub fn far(&self, who: &str) -> SocketAddr {
        self.far.lock().unwrap().expect(who)
    }

    /// Sends `data` to the far peer from `front`, as if `target` had sent it.
    pub fn inject(&self, data: &[u8]) {
        let to = self.far("the far peer's address");
        self.front.send_to(data, to).unwrap();
    }
}

/// Points the first 127.0.0.1 host candidate of `sdp` at a forwarder: `start` gets the
/// candidate's address and returns the forwarder's front, which the candidate then names.
pub fn route_candidate(sdp: &mut String, start: impl FnOnce(SocketAddr) -> SocketAddr) {
    let line = sdp
        .split("\r\n")
        .find(|l| l.starts_with("a=candidate") && l.contains("127.0.0.1"))
        .expect("a 127.0.0.1 candidate")
        .to_owned();
    let f: Vec<&str> = line.split_whitespace().collect();
    let front = start(format!("{}:{}", f[4], f[5]).parse().unwrap());
    let new = line.replace(
        &format!(" {} {} ", f[4], f[5]),
        &format!(" 127.0.0.1 {} ", front.port()),
    );
    *sdp = sdp.replace(&line, &new);
}
