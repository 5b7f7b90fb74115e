//! Decrypted SCTP packets through the SCTP actor's own readers (the stream-reset gate and
//! the send queue's scans), as a signaled but hostile peer could send them and as rtc-sctp
//! sends: no panic, a packet passed on is the packet or a well-formed one with a correct
//! CRC32c, and nothing is held past MAX_HOLD.
//!
//! Input: packets, each as one direction byte (even: from the peer) and a 16-bit length.
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;
use smolrtc::fuzzing::SctpPackets;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: alloc_limit::Limited = alloc_limit::Limited;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut wire = SctpPackets::default();
    let mut rest = data;
    let mut now = t0;
    while rest.len() >= 3 {
        let (dir, len) = (rest[0], usize::from(u16::from_be_bytes([rest[1], rest[2]])));
        let len = len.min(rest.len() - 3);
        let p = &rest[3..3 + len];
        rest = &rest[3 + len..];
        now += Duration::from_millis(u64::from(dir >> 1));
        if dir % 2 == 0 {
            if let Some(out) = wire.from_peer(now, p) {
                if out != p {
                    assert!(out.len() >= 16 && out[..8] == p[..8], "re-packed header");
                    let mut zeroed = out.clone();
                    zeroed[8..12].fill(0);
                    assert_eq!(
                        crc32c::crc32c(&zeroed).to_le_bytes(),
                        out[8..12],
                        "re-packed CRC"
                    );
                }
            }
        } else {
            wire.to_peer(now, p);
        }
        wire.timers(now);
    }
    // Everything held goes on by MAX_HOLD.
    wire.timers(now + SctpPackets::MAX_HOLD);
    assert_eq!(wire.held(), 0, "a reset request held past MAX_HOLD");
});
