//! `smolrtc bench relay`: the impairment relay (`smolrtc::testkit::impair`) as a process,
//! for benchmarks that put it between two other processes.

use smolrtc::testkit::impair::{Counters, Impairment, Relay};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// Options of `smolrtc bench relay`.
#[derive(clap::Args, Debug, Clone)]
pub struct RelayOptions {
    /// Where datagrams arriving on the front address go.
    #[arg(long)]
    pub to: SocketAddr,
    /// Local address to bind the two relay sockets on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Impairment of front → target, e.g. "delay=10ms,loss=1%" (keys: delay, jitter,
    /// loss, burst=ENTER/LEAVE, dup, reorder, rate=100mbit|1gbit).
    #[arg(long, default_value = "none", value_parser = Impairment::parse)]
    pub forward: Impairment,
    /// Impairment of target → front.
    #[arg(long, default_value = "none", value_parser = Impairment::parse)]
    pub backward: Impairment,
    /// Seed of the random decisions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `smolrtc bench relay`: prints `{"front":..,"back":..}`, relays until stdin closes (or
/// SIGINT), then prints the counters.
pub fn relay(opts: RelayOptions) -> smolrtc::Result<()> {
    let relay = Relay::start(opts.bind, opts.to, opts.forward, opts.backward, opts.seed)?;
    println!(
        "{}",
        serde_json::json!({"front": relay.front().to_string(), "back": relay.back().to_string()})
    );
    log::info!(
        "relay: {} -> {} (from {}), forward {:?}, backward {:?}",
        relay.front(),
        opts.to,
        relay.back(),
        opts.forward,
        opts.backward
    );
    // Runs until stdin reaches its end: the driver closes it (or the process is killed).
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    let load = |c: &Counters| {
        serde_json::json!({
            "received": c.received.load(Ordering::Relaxed),
            "dropped": c.dropped.load(Ordering::Relaxed),
            "sent": c.sent.load(Ordering::Relaxed),
        })
    };
    println!(
        "{}",
        serde_json::json!({"forward": load(&relay.forward), "backward": load(&relay.backward)})
    );
    Ok(())
}
