//! The single-port demultiplexer's routing table (`src/ice/port.rs`) under any sequence of
//! registrations, checks sent, selected pairs, unregistrations and datagrams (authenticated
//! checks and answers, forged ones, DTLS-looking and raw bytes) from a few addresses: it
//! never routes an address to a session that has not authenticated it, stays within its
//! bounds, and never loses a selected route (`smolrtc::fuzzing::shared_port_routes` panics
//! otherwise; the input format is documented there).
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: alloc_limit::Limited = alloc_limit::Limited;

fuzz_target!(|data: &[u8]| {
    smolrtc::fuzzing::shared_port_routes(data);
});
