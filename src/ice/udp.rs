//! Batched UDP I/O for the ICE sockets: `recvmmsg(2)` / `sendmmsg(2)` on Linux and Android,
//! so a wake-up of the reactor reads (or a drain of the engine sends) up to [`BATCH`]
//! datagrams per system call. Elsewhere, when the kernel refuses the calls (`ENOSYS`,
//! `EPERM` from a seccomp filter, an emulator), or with `SMOLRTC_UDP_BATCH=0`, one datagram
//! per call (`recv_from` / `send_to`), with the same results.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU8, Ordering};

/// Datagrams per system call at most.
pub(crate) const BATCH: usize = 32;
/// Room per received datagram: a datagram longer than this is truncated, as the one-call
/// path's 2048-byte buffer does (ICE, DTLS and SRTP stay far below it).
pub(crate) const SLOT: usize = 2048;

/// 0: not decided yet, 1: batched calls, 2: one datagram per call.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Whether the batched calls are used (read once from `SMOLRTC_UDP_BATCH`; turned off for
/// good when the kernel refuses them).
pub(crate) fn batching() -> bool {
    match MODE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = cfg!(any(target_os = "linux", target_os = "android"))
                && !matches!(std::env::var("SMOLRTC_UDP_BATCH").as_deref(), Ok("0"));
            MODE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
            on
        }
    }
}

/// Turns the batched calls off or on (tests, and a kernel that refuses them).
pub(crate) fn set_batching(on: bool) {
    MODE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether an error means the batched call itself is unavailable here.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM))
}

thread_local! {
    /// One receive batch per thread (64 KiB), shared by every socket the thread reads, so
    /// a connection costs no more memory than before.
    static RECV: std::cell::RefCell<RecvBatch> = std::cell::RefCell::new(RecvBatch::default());
}

/// Runs `f` with this thread's receive batch (a fresh one if it is in use: never, as
/// the readers do not await while they hold it).
pub(crate) fn with_recv_batch<R>(f: impl FnOnce(&mut RecvBatch) -> R) -> R {
    RECV.with(|cell| match cell.try_borrow_mut() {
        Ok(mut b) => f(&mut b),
        Err(_) => f(&mut RecvBatch::default()),
    })
}

/// Receive buffers for one batch, reused across wake-ups.
pub(crate) struct RecvBatch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    froms: [Option<SocketAddr>; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            bufs: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
            froms: [None; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last [`recv`](Self::recv): payload and sender.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        (0..self.count).filter_map(move |k| {
            let from = self.froms[k]?;
            Some((&self.bufs[k * SLOT..k * SLOT + self.lens[k]], from))
        })
    }

    /// Reads what is queued on `sock` (non-blocking): up to [`BATCH`] datagrams in one
    /// call, or one without batching. `Ok(n)` with n ≥ 1; `WouldBlock` when nothing is queued.
    pub(crate) fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if batching() {
            match self.recv_mmsg(sock) {
                Err(e) if unsupported(&e) => {
                    log::debug!("UDP: recvmmsg unavailable ({e}); one datagram per call");
                    set_batching(false);
                }
                other => return other,
            }
        }
        let (n, from) = sock.recv_from(&mut self.bufs[..SLOT])?;
        self.lens[0] = n;
        self.froms[0] = Some(from);
        self.count = 1;
        Ok(1)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn recv_mmsg(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (k, ((iov, msg), name)) in iovs
            .iter_mut()
            .zip(msgs.iter_mut())
            .zip(names.iter_mut())
            .enumerate()
        {
            iov.iov_base = self.bufs[k * SLOT..].as_mut_ptr().cast();
            iov.iov_len = SLOT;
            msg.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live buffer of SLOT bytes inside self.bufs and at
        // its own name storage, all outliving the call; the count matches the arrays.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let got = msgs.iter().zip(names.iter()).take(n);
        for ((len, from), (msg, name)) in self.lens.iter_mut().zip(self.froms.iter_mut()).zip(got) {
            *len = (msg.msg_len as usize).min(SLOT);
            *from = from_storage(name);
        }
        self.count = n;
        Ok(n)
    }
}

/// The socket address in `s` (IPv4 or IPv6; `None` for anything else).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(
                SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )
                .into(),
            )
        }
        _ => None,
    }
}

/// Sends the first datagrams of `out` (non-blocking): up to [`BATCH`] in one call, or one
/// without batching. `Ok(n)`: the first n went out; `WouldBlock`: the socket buffer is full
/// (nothing went out); another error belongs to the first datagram.
pub(crate) fn send(sock: &UdpSocket, out: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let Some((to, data)) = out.first() else {
        return Ok(0);
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if batching() && out.len() > 1 {
        match send_mmsg(sock, out) {
            Err(e) if unsupported(&e) => {
                log::debug!("UDP: sendmmsg unavailable ({e}); one datagram per call");
                set_batching(false);
            }
            other => return other,
        }
    }
    sock.send_to(data, to).map(|_| 1)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_mmsg(sock: &UdpSocket, out: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let count = out.len().min(BATCH);
    let names: Vec<socket2::SockAddr> = out[..count]
        .iter()
        .map(|(to, _)| socket2::SockAddr::from(*to))
        .collect();
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (((iov, msg), name), (_, data)) in iovs.iter_mut().zip(msgs.iter_mut()).zip(&names).zip(out)
    {
        iov.iov_base = data.as_ptr() as *mut libc::c_void;
        iov.iov_len = data.len();
        msg.msg_hdr.msg_name = name.as_ptr() as *mut libc::c_void;
        msg.msg_hdr.msg_namelen = name.len();
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the headers point at the caller's payloads (only read) and at `names`, both
    // alive for the call; `count` headers are initialised.
    let n = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            count as _,
            libc::MSG_DONTWAIT as _,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real loopback sockets, both paths: every datagram arrives intact, in order, with
    /// its sender, and a call reads or sends more than one only when batching.
    fn round_trip(batched: bool) {
        set_batching(batched);
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        a.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..60u32)
            .map(|i| (0..(50 + i * 11)).map(|j| (i * 7 + j) as u8).collect())
            .collect();
        let out: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, p.as_slice())).collect();
        let (mut sent, mut calls) = (0, 0);
        while sent < out.len() {
            sent += send(&a, &out[sent..]).unwrap();
            calls += 1;
        }
        assert_eq!(calls > 1 && calls < 10, batched, "send calls: {calls}");
        let mut batch = RecvBatch::default();
        let (mut got, mut most) = (Vec::new(), 0);
        loop {
            match batch.recv(&b) {
                Ok(n) => {
                    most = most.max(n);
                    for (data, from) in batch.iter() {
                        assert_eq!(from, a.local_addr().unwrap());
                        got.push(data.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert_eq!(got, payloads);
        assert_eq!(most > 1, batched, "most datagrams in one call: {most}");
        set_batching(true);
    }

    #[test]
    fn batched_and_one_per_call_paths() {
        // One test, so the two never run at once (the switch is process-wide).
        round_trip(true);
        round_trip(false);
    }

    #[test]
    fn ipv6_sender_address() {
        let Ok(b) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback here
        };
        let a = UdpSocket::bind("[::1]:0").unwrap();
        b.set_nonblocking(true).unwrap();
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::default();
        let n = loop {
            match batch.recv(&b) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("recv: {e}"),
            }
        };
        assert_eq!(n, 1);
        let (data, from) = batch.iter().next().unwrap();
        assert_eq!((data, from), (&b"x"[..], a.local_addr().unwrap()));
    }
}
