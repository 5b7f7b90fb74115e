//! The device's signaling protocol over MQTT topics (sans-IO): see [`super::device`].
