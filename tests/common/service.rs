//! The service fixture: a real `smolrtc` service in this process, on 127.0.0.1.

use smolrtc::service::{Service, ServiceConfig, ServiceHandle};
use smolrtc::Runtime;
use std::net::{IpAddr, Ipv4Addr};

/// A service configuration for tests: HTTP on 127.0.0.1 (any free port), the sessions'
/// ICE on 127.0.0.1 only, rawrtc's flow off (no extra noisy channels); `tweak` changes
/// the rest.
pub fn config(tweak: impl FnOnce(&mut ServiceConfig)) -> ServiceConfig {
    let mut config = ServiceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        rawrtc_flow: false,
        ..Default::default()
    };
    config.peer.ice.hosts.addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    tweak(&mut config);
    config
}

/// A service on its own runtime with [`config`]`(tweak)` and the built-in handlers.
pub fn start(tweak: impl FnOnce(&mut ServiceConfig)) -> (Runtime, ServiceHandle) {
    start_with(config(tweak), |_| {})
}

/// A service with `config`; `handlers` registers channel handlers before it starts.
pub fn start_with(
    config: ServiceConfig,
    handlers: impl FnOnce(&mut Service),
) -> (Runtime, ServiceHandle) {
    let rt = Runtime::new().expect("runtime");
    let mut service = Service::new(config);
    handlers(&mut service);
    let handle = service.start(&rt).expect("service start");
    (rt, handle)
}
