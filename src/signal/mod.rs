//! Signaling and front ends: the device service (HTTP, WHIP, WebSocket), the console
//! copy/paste peer, the loopback benchmark, logging.

pub mod bench;
pub mod bench_load;
pub mod bench_peer;
pub mod config_file;
pub mod console;
mod http;
pub mod ice_options;
pub mod impair;
pub mod service;
mod ws;

pub use ice_options::IceOptions;
pub use service::{Service, ServiceConfig, ServiceHandle};

/// Logs to stderr, one line per event with a millisecond timestamp; `RUST_LOG` filters
/// (default `info`, with the rtc-* engines quieter). Secrets stay out: rtc-ice's debug
/// line with the remote ICE password is redacted.
pub fn init_logging() {
    use std::io::Write;
    let env = env_logger::Env::default().default_filter_or(
        "info,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,rtc_turn=error,rtc_datachannel=warn",
    );
    let _ = env_logger::Builder::from_env(env)
        .format(|buf, record| {
            let ts = buf.timestamp_millis();
            let level = record.level();
            if record.target().starts_with("rtc_ice") {
                let text = redact_secrets(&record.args().to_string());
                writeln!(buf, "[{ts} {level:<5}] {text}")
            } else {
                writeln!(buf, "[{ts} {level:<5}] {}", record.args())
            }
        })
        .try_init();
}

/// Replaces the value after `Pwd: ` / `pwd: ` / `password: ` / `ice-pwd:` (an SDP line
/// quoted in an error) with `***`.
pub fn redact_secrets(text: &str) -> String {
    let mut out = text.to_owned();
    for key in ["Pwd: ", "pwd: ", "password: ", "ice-pwd:"] {
        let mut from = 0;
        while let Some(at) = out[from..].find(key) {
            let start = from + at + key.len();
            let end = out[start..]
                .find(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '\\')
                .map_or(out.len(), |n| start + n);
            out.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ice_password_is_redacted() {
        let line =
            "Started agent: isControlling? true, remoteUfrag: abcd, remotePwd: s3cr3tpassword";
        let r = super::redact_secrets(line);
        assert!(
            !r.contains("s3cr3t") && r.contains("remoteUfrag: abcd"),
            "{r}"
        );
        let line =
            r#"bad SDP: line 8 "a=ice-pwd:s3cr3tpassword0123456789": a=ice-pwd appears twice"#;
        let r = super::redact_secrets(line);
        assert_eq!(
            r,
            r#"bad SDP: line 8 "a=ice-pwd:***": a=ice-pwd appears twice"#
        );
    }
}
