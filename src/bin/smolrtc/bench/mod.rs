//! `smolrtc bench`: the tools `benches/run` drives. `loopback` (two peers in this
//! process), `peer` (one side of a throughput run against another process: another `bench
//! peer`, aiortc, ...), `relay` (the impairment relay between two processes) and `load`
//! (many sessions against a running `smolrtc serve`).

pub mod load;
pub mod loopback;
pub mod peer;
pub mod relay;
