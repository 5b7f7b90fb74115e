//! A stderr logger for the `smolrtc` command, the examples and the tests (feature
//! `logging`): one line per event with a millisecond timestamp; `RUST_LOG` filters (default
//! `info`, with the rtc-* engines quieter). Secrets stay out: rtc-ice's debug line with the
//! remote ICE password is redacted ([`crate::sdp::redact_secrets`]).

/// The rtc-* engines log their own view of what smolrtc logs already; quieter by default.
const QUIET_ENGINES: &str =
    "rtc_ice=error,rtc_dtls=error,rtc_sctp=error,rtc_turn=error,rtc_datachannel=warn";

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    let env = env_logger::Env::default().default_filter_or(format!("info,{QUIET_ENGINES}"));
    install(env_logger::Builder::from_env(env));
}

/// The logger for a program that logs every [`crate::Event`] itself (the console peer), so
/// that each event is one line at any level `RUST_LOG` chooses: the library's own line per
/// event ([`crate::EVENT_LOG_TARGET`]) is left out, and the rtc-* engines stay at their
/// quiet defaults unless `RUST_LOG` names them (`RUST_LOG=debug` means more of smolrtc, not
/// each engine's copy of the same state change).
pub fn init_for_event_logger() {
    let chosen = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let mut builder = env_logger::Builder::new();
    builder.parse_write_style(&std::env::var("RUST_LOG_STYLE").unwrap_or_default());
    // Later directives win: the user's level over the default, the user's engine levels
    // over the quiet ones; the event target is off whatever they say.
    builder
        .parse_filters(&format!("info,{QUIET_ENGINES},{chosen}"))
        .filter_module(crate::EVENT_LOG_TARGET, log::LevelFilter::Off);
    install(builder);
}

fn install(mut builder: env_logger::Builder) {
    use std::io::Write;
    let _ = builder
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
