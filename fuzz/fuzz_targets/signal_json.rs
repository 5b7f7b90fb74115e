//! The signaling bodies the service and the console accept, through the same parse steps:
//!
//! * `POST /api/offer`: UTF-8, then `Description::from_json`, then the SDP;
//! * `POST /whip` (the SDP itself) and `PATCH /whip/<id>` (a trickle-ice-sdpfrag);
//! * `POST /api/report`: any JSON object;
//! * WebSocket text messages `{"type":"description"|"candidate","value":..}`, whose value
//!   goes through `Description::from_json` / `IceCandidateInit::from_json`;
//! * a line pasted into the console peer (`Description::parse_line`).
//!
//! No input panics, error messages stay short, and what is accepted writes back to JSON
//! that reads back the same.
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use smolrtc::sdp::{self, Description, IceCandidateInit, SdpType};

#[global_allocator]
static ALLOC: alloc_limit::Limited = alloc_limit::Limited;

const MAX_ERROR_LEN: usize = 1024;

fn short(e: impl ToString) {
    let msg = e.to_string();
    assert!(
        !msg.is_empty() && msg.len() <= MAX_ERROR_LEN,
        "error message of {} bytes: {:?}",
        msg.len(),
        &msg[..msg.len().min(200)]
    );
}

/// `POST /api/offer`, and a WebSocket `description` value.
fn description(json: &str) {
    match Description::from_json(json) {
        Ok(d) => {
            assert_eq!(Description::from_json(&d.to_json()).as_ref(), Ok(&d));
            if let Err(e) = sdp::parse(&d.sdp) {
                short(e);
            }
        }
        Err(e) => short(e),
    }
}

/// A WebSocket `candidate` value (what `add_ice_candidate` then does with it).
fn candidate(json: &str) {
    match IceCandidateInit::from_json(json) {
        Ok(c) => {
            assert_eq!(IceCandidateInit::from_json(&c.to_json()).as_ref(), Ok(&c));
            if !c.is_end_of_candidates() {
                assert!(sdp::check_candidate(&c.candidate).is_ok());
                let raw = c.sdp_value();
                let raw = raw.strip_prefix("candidate:").unwrap_or(raw);
                let _ = rtc_ice::candidate::unmarshal_candidate(raw);
            }
        }
        Err(e) => short(e),
    }
}

/// A WebSocket text message, read as `service::ws` reads it.
fn ws_message(text: &str) {
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(kind) = msg.get("type").and_then(|t| t.as_str()) else {
        return;
    };
    let value = msg.get("value").cloned().unwrap_or(Value::Null);
    match kind {
        "description" => description(&value.to_string()),
        "candidate" if !value.is_null() => candidate(&value.to_string()),
        _ => {}
    }
}

/// `POST /api/report`: a JSON object, logged field by field.
fn report(body: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        if value.is_object() {
            let line = format!(
                "ok={} mode={} offering={} error={}",
                value["ok"], value["mode"], value["offering"], value["error"]
            );
            assert!(line.len() <= 4 * body.len() + 64);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    report(data);
    // Every other door refuses a body that is not UTF-8 first.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    description(text);
    candidate(text);
    ws_message(text);
    // WHIP: the body is the SDP; PATCH: a fragment.
    if let Err(e) = sdp::parse(text) {
        short(e);
    }
    if let Err(e) = sdp::parse_candidate_fragment(text) {
        short(e);
    }
    // The console peer: one pasted line.
    for expected in [None, Some(SdpType::Answer)] {
        let r = match expected {
            None => Description::parse_line(text, None),
            Some(t) => Description::parse_line(text, Some(t)),
        };
        match r {
            Ok(d) => assert!(matches!(d.kind, SdpType::Offer | SdpType::Answer)),
            Err(e) => short(e),
        }
    }
});
