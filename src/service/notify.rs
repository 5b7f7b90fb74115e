//! systemd's notify protocol (`Type=notify`, sd_notify(3)) without libsystemd: each state
//! is one datagram to the Unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract
//! name written with a leading `@`). `READY=1` once the listener serves, `WATCHDOG=1`
//! every half `$WATCHDOG_USEC` from a task on the smolrtc thread (a wedged executor stops
//! the pings and systemd restarts the service), `STOPPING=1` at shutdown. Without
//! `$NOTIFY_SOCKET` nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (`KEY=VALUE` lines) to systemd, if it listens; errors are logged once at
/// debug level (a notify socket that went away must not stop the service).
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
        return;
    };
    if let Err(e) = send(&path, state.as_bytes()) {
        log::debug!("systemd notify {state:?}: {e}");
    }
}

fn send(path: &std::ffi::OsStr, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(data, &addr)?;
    } else {
        sock.send_to(data, std::path::Path::new(path))?;
    }
    Ok(())
}

/// How often to ping systemd's watchdog: half of `$WATCHDOG_USEC`, when it is set for
/// this process (`$WATCHDOG_PID` absent or ours) and a notify socket is given.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty())?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().filter(|p| !p.is_empty()) {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog every `every`, forever (run on the smolrtc thread's executor).
pub(crate) async fn watchdog(every: Duration) {
    loop {
        async_io::Timer::after(every).await;
        notify("WATCHDOG=1");
    }
}
