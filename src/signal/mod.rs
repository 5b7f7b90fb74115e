//! Signaling and front ends: the device service (HTTP, WHIP, WebSocket), the console
//! copy/paste peer, the loopback benchmark, logging.

pub mod bench;
pub mod config_file;
pub mod console;
mod http;
pub mod ice_options;
pub mod service;
mod ws;

pub use ice_options::IceOptions;
pub use service::{Service, ServiceConfig, ServiceHandle};

/// Logs to stderr, one line per event with a millisecond timestamp; `RUST_LOG` filters
/// (default `info`, with the rtc-* engines quieter).
pub fn init_logging() {
    let env = env_logger::Env::default().default_filter_or(
        "info,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,rtc_turn=error,rtc_datachannel=warn",
    );
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .format_target(false)
        .try_init();
}
