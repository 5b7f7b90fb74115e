//! The SDP reader (`smolrtc::sdp`): offers and answers as `set_remote_description`, the
//! HTTP API, WHIP and the console read them, trickle fragments (WHIP PATCH) and single
//! candidates. No input panics; whatever is accepted can be answered, and smolrtc's own
//! answer and offer to it read back with the same shape.
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;
use smolrtc::sdp::{
    self, Fingerprint, LocalSession, RemoteDescription, SdpError, SdpType, Setup, MAX_CANDIDATES,
};

#[global_allocator]
static ALLOC: alloc_limit::Limited = alloc_limit::Limited;

/// Error messages quote at most ~80 characters of the input: they go to logs and to
/// HTTP error bodies, so they must not grow with it.
const MAX_ERROR_LEN: usize = 1024;

fn check_error(e: &SdpError) {
    let msg = e.to_string();
    assert!(
        !msg.is_empty() && msg.len() <= MAX_ERROR_LEN,
        "error message of {} bytes",
        msg.len()
    );
}

/// What the peer actor and the ICE agent hand to rtc-ice for each accepted candidate.
fn to_ice(candidate: &str) {
    let raw = candidate.trim();
    let raw = raw.strip_prefix("a=").unwrap_or(raw);
    let raw = raw.strip_prefix("candidate:").unwrap_or(raw);
    let _ = rtc_ice::candidate::unmarshal_candidate(raw);
}

fn local(setup: Setup) -> LocalSession {
    LocalSession {
        session_id: 4_611_686_018_427_387_903,
        session_version: 2,
        ice_ufrag: "fUzZ".into(),
        ice_pwd: "fuzzfuzzfuzzfuzzfuzzfuzz".into(),
        fingerprint: Fingerprint::sha256(vec![0xab; 32]),
        setup,
        mid: "0".into(),
        sctp_port: 5000,
        max_message_size: 262_144,
        candidates: vec![
            "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host".into(),
            "candidate:2 1 udp 1694498815 203.0.113.7 41000 typ srflx raddr 127.0.0.1 rport 50000"
                .into(),
        ],
        end_of_candidates: true,
        ice_options_trickle: true,
    }
}

fn check_session(remote: &RemoteDescription) {
    let data = remote.data.as_ref().expect("parse gives a data section");
    assert!(data.index < remote.sections.len());
    assert!(remote.data_section().is_some_and(|m| m.is_data));
    assert_eq!(remote.sections.iter().filter(|m| m.is_data).count(), 1);
    assert!(!remote.fingerprints.is_empty());
    assert!(remote.candidates.len() <= MAX_CANDIDATES);
    for c in &remote.candidates {
        assert!(sdp::check_candidate(c).is_ok(), "accepted candidate {c:?}");
        to_ice(c);
    }
    let _ = remote.setup_or_default(SdpType::Offer);
    let _ = remote.setup_or_default(SdpType::Answer);
}

fuzz_target!(|data: &[u8]| {
    // Every door takes text: a body that is not UTF-8 is refused before the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    // A single trickled candidate.
    match sdp::check_candidate(text) {
        Ok(()) => to_ice(text),
        Err(e) => check_error(&e),
    }

    // A WHIP PATCH body: re-written and re-read, it gives the same candidates.
    match sdp::parse_candidate_fragment(text) {
        Ok((ufrag, candidates, end)) => {
            assert!(candidates.len() <= MAX_CANDIDATES);
            for c in &candidates {
                to_ice(c);
            }
            let ufrag = ufrag.unwrap_or_default();
            let again = sdp::write_candidate_fragment(&ufrag, "", "0", &candidates, end);
            let (ufrag2, candidates2, end2) =
                sdp::parse_candidate_fragment(&again).expect("our fragment reads back");
            assert_eq!(ufrag2.unwrap_or_default(), ufrag);
            assert_eq!(candidates2, candidates);
            assert_eq!(end2, end);
        }
        Err(e) => check_error(&e),
    }

    // An offer or an answer.
    let remote = match sdp::parse(text) {
        Ok(remote) => remote,
        Err(e) => return check_error(&e),
    };
    check_session(&remote);

    // smolrtc's answer to it (as an offer) reads back with the same sections.
    let me = local(Setup::Active);
    let answer = sdp::write_answer(&me, &remote);
    let back = sdp::parse(&answer)
        .unwrap_or_else(|e| panic!("our answer does not read back: {e}\n{answer}"));
    check_session(&back);
    let (back_data, remote_data) = (back.data.clone().unwrap(), remote.data.clone().unwrap());
    assert_eq!(back.sections.len(), remote.sections.len());
    assert_eq!(back_data.index, remote_data.index);
    assert_eq!(back_data.legacy, remote_data.legacy);
    assert_eq!(
        back_data.mid.as_deref(),
        Some(remote_data.mid.as_deref().unwrap_or(&me.mid))
    );
    assert_eq!(back.ice_ufrag, me.ice_ufrag);
    assert_eq!(back.ice_pwd, me.ice_pwd);
    assert_eq!(back.fingerprints, vec![me.fingerprint.clone()]);
    assert_eq!(back.setup, Some(Setup::Active));
    assert_eq!(back_data.sctp_port, me.sctp_port);
    assert_eq!(back_data.max_message_size, Some(me.max_message_size));
    assert_eq!(back.candidates, me.candidates);
    for (a, b) in back.sections.iter().zip(&remote.sections) {
        assert_eq!(a.kind, b.kind);
        // The legacy data m-line is written `DTLS/SCTP` whatever case the offer used.
        assert!(a.proto.eq_ignore_ascii_case(&b.proto), "{a:?} / {b:?}");
        if !b.is_data {
            assert_eq!(a.proto, b.proto);
            assert_eq!(a.mid, b.mid);
            assert_eq!(
                (a.port, &a.fmts),
                (0, &b.fmts),
                "other sections are rejected"
            );
        }
    }
});
