//! DCEP (RFC 8832) messages as the channel router reads them off PPI 50: any bytes are
//! refused or accepted without a panic, and an accepted OPEN writes back to the same OPEN.
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;
use smolrtc::fuzzing::{dcep_ack, dcep_open, dcep_parse, DcepMessage};

#[global_allocator]
static ALLOC: alloc_limit::Limited = alloc_limit::Limited;

fuzz_target!(|data: &[u8]| {
    match dcep_parse(data) {
        Ok(DcepMessage::Open { label, init }) => {
            assert!(
                init.negotiated.is_none(),
                "an in-band channel is not negotiated"
            );
            assert!(
                init.max_retransmits.is_none() || init.max_packet_life_time.is_none(),
                "one reliability limit at most"
            );
            assert!(label.len() + init.protocol.len() <= data.len());
            let wire = dcep_open(&label, &init);
            assert_eq!(
                dcep_parse(&wire),
                Ok(DcepMessage::Open { label, init }),
                "an OPEN we read must read back the same once written"
            );
        }
        Ok(DcepMessage::Ack) => assert_eq!(dcep_parse(&dcep_ack()), Ok(DcepMessage::Ack)),
        Err(e) => assert!(!e.is_empty() && e.len() < 256, "error message: {e:?}"),
    }
});
