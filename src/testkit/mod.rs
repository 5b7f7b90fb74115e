//! What tests and benchmarks share: the user-space impairment relay (delay, jitter, loss,
//! bursts, duplication, reordering, rate). Behind the `testkit` feature; the `smolrtc bench
//! relay` command runs it.

pub mod impair;
