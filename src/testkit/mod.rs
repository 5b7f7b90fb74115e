//! What tests and benchmarks share: the user-space impairment relay (delay, jitter, loss,
//! bursts, duplication, reordering, rate) and the simulated network with the same
//! impairments on a virtual clock (`simnet`). Behind the `testkit` feature; the `smolrtc bench
//! relay` command runs it.

pub mod impair;
pub mod simnet;
