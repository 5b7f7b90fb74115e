//! `GET /metrics`: the Prometheus text format (version 0.0.4), written by hand: a dozen
//! metrics read from relaxed atomics ([`crate::stats`], the request counters below) and
//! the session table, into one string per scrape. A metrics crate would bring a registry
//! behind a lock and label maps; nothing here needs them.

use super::Shared;
use crate::stats::{self, RTT, RTT_BUCKETS};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Sessions opened since start.
pub(crate) static SESSIONS_TOTAL: AtomicU64 = AtomicU64::new(0);

/// HTTP responses by status code (100–599), counted as each goes out.
static HTTP_RESPONSES: [AtomicU64; 500] = [const { AtomicU64::new(0) }; 500];

/// Counts one response with `status`.
pub(crate) fn count_response(status: u16) {
    if let Some(c) = status
        .checked_sub(100)
        .and_then(|i| HTTP_RESPONSES.get(usize::from(i)))
    {
        c.fetch_add(1, Relaxed);
    }
}

/// The metrics page.
pub(crate) fn render(shared: &Shared) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    metric(o, "sessions", "gauge", "Live sessions (peer connections).");
    let _ = writeln!(o, "smolrtc_sessions {}", shared.session_count());
    metric(
        o,
        "sessions_total",
        "counter",
        "Sessions opened since start.",
    );
    let _ = writeln!(o, "smolrtc_sessions_total {}", SESSIONS_TOTAL.load(Relaxed));
    #[cfg(feature = "media")]
    {
        metric(o, "viewers", "gauge", "Live viewers of each stream.");
        // Stream names are letters, digits, '-', '_', '.' (check_stream_name): nothing to
        // escape in a label value.
        shared.streams.each_viewer_count(|name, n| {
            let _ = writeln!(o, "smolrtc_viewers{{stream=\"{name}\"}} {n}");
        });
        shared.publish.render(o);
    }
    counters(o);
    rtt(o);
    http_responses(o);
    process_usage(o);
    out
}

/// The `# HELP` and `# TYPE` lines of metric `smolrtc_NAME`.
fn metric(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        o,
        "# HELP smolrtc_{name} {help}\n# TYPE smolrtc_{name} {kind}"
    );
}

/// The process-wide counters of [`stats`].
fn counters(o: &mut String) {
    for (name, help, counter) in [
        (
            "bytes_sent_total",
            "Bytes sent by ICE agents (STUN, TURN, DTLS, SRTP).",
            &stats::BYTES_SENT,
        ),
        (
            "bytes_received_total",
            "Bytes received by ICE agents.",
            &stats::BYTES_RECEIVED,
        ),
        (
            "rtp_packets_lost_total",
            "RTP packets viewers reported lost.",
            &stats::RTP_PACKETS_LOST,
        ),
        (
            "nack_received_total",
            "NACKs received from viewers.",
            &stats::NACK_RECEIVED,
        ),
        (
            "pli_received_total",
            "PLIs received from viewers.",
            &stats::PLI_RECEIVED,
        ),
        (
            "dtls_failures_total",
            "DTLS handshakes or transports that failed.",
            &stats::DTLS_FAILURES,
        ),
        (
            "tls_handshake_failures_total",
            "HTTPS connections whose TLS handshake failed or timed out.",
            &stats::TLS_HANDSHAKE_FAILURES,
        ),
    ] {
        metric(o, name, "counter", help);
        let _ = writeln!(o, "smolrtc_{name} {}", stats::get(counter));
    }
}

/// The RTT histogram.
fn rtt(o: &mut String) {
    metric(
        o,
        "rtt_seconds",
        "histogram",
        "Round-trip times from viewers' receiver reports.",
    );
    for (b, le) in RTT.buckets.iter().zip(RTT_BUCKETS) {
        let _ = writeln!(
            o,
            "smolrtc_rtt_seconds_bucket{{le=\"{le}\"}} {}",
            stats::get(b)
        );
    }
    let count = stats::get(&RTT.count);
    let _ = writeln!(o, "smolrtc_rtt_seconds_bucket{{le=\"+Inf\"}} {count}");
    let sum = stats::get(&RTT.sum_micros) as f64 / 1e6;
    let _ = writeln!(o, "smolrtc_rtt_seconds_sum {sum}");
    let _ = writeln!(o, "smolrtc_rtt_seconds_count {count}");
}

/// HTTP responses by status code.
fn http_responses(o: &mut String) {
    metric(
        o,
        "http_requests_total",
        "counter",
        "HTTP requests answered, by status code.",
    );
    for (i, c) in HTTP_RESPONSES.iter().enumerate() {
        let n = c.load(Relaxed);
        if n > 0 {
            let _ = writeln!(o, "smolrtc_http_requests_total{{code=\"{}\"}} {n}", i + 100);
        }
    }
}

/// The process's memory and CPU time.
fn process_usage(o: &mut String) {
    let (rss, cpu) = process();
    metric(
        o,
        "resident_memory_bytes",
        "gauge",
        "Resident memory of the process.",
    );
    let _ = writeln!(o, "smolrtc_resident_memory_bytes {rss}");
    metric(
        o,
        "cpu_seconds_total",
        "counter",
        "CPU time of the process, user and system.",
    );
    let _ = writeln!(o, "smolrtc_cpu_seconds_total {cpu}");
}

/// The process's resident bytes (`/proc/self/statm`, read into a stack buffer) and CPU
/// seconds (`getrusage`).
fn process() -> (u64, f64) {
    use std::io::Read;
    let mut buf = [0u8; 128];
    let rss_pages = std::fs::File::open("/proc/self/statm")
        .and_then(|mut f| f.read(&mut buf))
        .ok()
        .and_then(|n| std::str::from_utf8(&buf[..n]).ok())
        .and_then(|s| s.split_ascii_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    // SAFETY: `usage` is a valid out-parameter of the right type.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let cpu = if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(usage.ru_utime) + t(usage.ru_stime)
    } else {
        0.0
    };
    (rss_pages * page, cpu)
}
