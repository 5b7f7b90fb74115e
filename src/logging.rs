//! A stderr logger for the `smolrtc` command, the examples and the tests (feature
//! `logging`): one line per event with a millisecond timestamp; `RUST_LOG` filters (default
//! `info`, with the rtc-* engines quieter). Secrets stay out: rtc-ice's debug line with the
//! remote ICE password is redacted ([`crate::sdp::redact_secrets`]).

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    use std::io::Write;
    let env = env_logger::Env::default().default_filter_or(
        "info,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,rtc_turn=error,rtc_datachannel=warn",
    );
    let _ = env_logger::Builder::from_env(env)
        .format(|buf, record| {
            let ts = buf.timestamp_millis();
            let level = record.level();
            if record.target().starts_with("rtc_ice") {
                let text = crate::sdp::redact_secrets(&record.args().to_string());
                writeln!(buf, "[{ts} {level:<5}] {text}")
            } else {
                writeln!(buf, "[{ts} {level:<5}] {}", record.args())
            }
        })
        .try_init();
}
