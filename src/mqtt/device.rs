//! The service task that signals sessions over MQTT.
