//! MQTT: the client the device keeps to its broker (fleet signaling, `smolrtc serve
//! --mqtt`), on smol, without tokio.
//!
//! Packets are encoded and decoded by `mqtt-proto` (MQTT 3.1.1); everything else is here:
//! the transports (`transport`: TCP, TLS, WebSocket), the sans-IO session state
//! (`state`: framing with a size limit, QoS 1 in flight, duplicates dropped) and the task
//! that drives them (`client`: keep-alive, reconnection with jittered backoff,
//! resubscription, the will). [`signal`] is the device's signaling protocol over topics
//! (sans-IO), `device` the service task that runs it.

mod client;
pub(crate) mod device;
pub mod signal;
mod state;
mod transport;
mod url;

pub use client::{MqttClient, MqttEvent, MqttOptions, Will};
pub use device::{MqttConfig, DEFAULT_PREFIX};
pub use url::{MqttUrl, Scheme};
