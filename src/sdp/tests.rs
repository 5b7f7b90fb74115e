//! Unit tests of the SDP module, on fixtures shaped like what Chromium,
//! Firefox and rawrtc send.

use super::*;

/// The data section of a description [`parse`] accepted.
fn data(r: &RemoteDescription) -> &DataSection {
    r.data.as_ref().expect("a data section")
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

const CHROMIUM_FP: &str = "75:2B:03:87:20:CC:FB:B6:3C:7B:6B:90:80:72:EF:16:16:F7:AD:19:EB:99:32:24:6A:0B:81:1B:CC:80:67:AF";

/// Chromium data-channel-only offer (RFC 8841 form). Line numbers:
/// 8 m=, 10..13 candidates, 14 ufrag, 15 pwd, 16 ice-options, 17
/// fingerprint, 18 setup, 19 mid, 20 sctp-port, 21 max-message-size.
const CHROMIUM_OFFER: &str = concat!(
    "v=0\r\n",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n",
    "s=-\r\n",
    "t=0 0\r\n",
    "a=group:BUNDLE 0\r\n",
    "a=extmap-allow-mixed\r\n",
    "a=msid-semantic: WMS\r\n",
    "m=application 54321 UDP/DTLS/SCTP webrtc-datachannel\r\n",
    "c=IN IP4 192.168.1.20\r\n",
    "a=candidate:2999745851 1 udp 2122260223 192.168.1.20 54321 typ host generation 0 network-id 1 network-cost 10\r\n",
    "a=candidate:1606226947 1 udp 2122194687 fd00::1c2a:4bff:fe1e:73c2 56143 typ host generation 0 network-id 2 network-cost 10\r\n",
    "a=candidate:3130178574 1 udp 2113937151 674bc544-3d59-42ed-9576-f7c0dbfdd1a0.local 50877 typ host generation 0 network-cost 999\r\n",
    "a=candidate:4233069003 1 tcp 1518280447 192.168.1.20 9 typ host tcptype active generation 0 ufrag WDFv network-id 1 network-cost 10\r\n",
    "a=ice-ufrag:WDFv\r\n",
    "a=ice-pwd:WDFvEUw55GPVg29bmKpMy/yr\r\n",
    "a=ice-options:trickle\r\n",
    "a=fingerprint:sha-256 75:2B:03:87:20:CC:FB:B6:3C:7B:6B:90:80:72:EF:16:16:F7:AD:19:EB:99:32:24:6A:0B:81:1B:CC:80:67:AF\r\n",
    "a=setup:actpass\r\n",
    "a=mid:0\r\n",
    "a=sctp-port:5000\r\n",
    "a=max-message-size:262144\r\n",
);

/// Firefox data-channel-only offer: session-level fingerprint and
/// ice-options, uppercase transports, end-of-candidates.
const FIREFOX_OFFER: &str = concat!(
    "v=0\r\n",
    "o=mozilla...THIS_IS_SDPARTA-128.0 5174838215472158209 0 IN IP4 0.0.0.0\r\n",
    "s=-\r\n",
    "t=0 0\r\n",
    "a=fingerprint:sha-256 63:F2:66:0F:E9:BC:D7:C0:F4:CC:EF:72:43:E4:62:14:54:6C:16:84:C8:5F:28:12:AD:E8:06:9E:D3:23:32:10\r\n",
    "a=group:BUNDLE 0\r\n",
    "a=ice-options:trickle\r\n",
    "a=msid-semantic:WMS *\r\n",
    "m=application 46027 UDP/DTLS/SCTP webrtc-datachannel\r\n",
    "c=IN IP4 192.168.1.33\r\n",
    "a=candidate:0 1 UDP 2122252543 192.168.1.33 46027 typ host\r\n",
    "a=candidate:2 1 TCP 2105524479 192.168.1.33 9 typ host tcptype active\r\n",
    "a=candidate:1 1 UDP 1686052863 203.0.113.7 46027 typ srflx raddr 192.168.1.33 rport 46027\r\n",
    "a=sendrecv\r\n",
    "a=end-of-candidates\r\n",
    "a=ice-pwd:9bacf5e570ad222f388db1e8790b564f\r\n",
    "a=ice-ufrag:133b0070\r\n",
    "a=mid:0\r\n",
    "a=setup:actpass\r\n",
    "a=sctp-port:5000\r\n",
    "a=max-message-size:1073741823\r\n",
);

/// rawrtc's offer, as printed by its tool (note the JSON escape `\/`).
const RAWRTC_OFFER_JSON: &str = r#"{"type":"offer","sdp":"v=0\r\no=sdpartanic-rawrtc-0.2.2 3824215037 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-options:trickle\r\na=group:BUNDLE rawrtc-sctp-dc\r\nm=application 9 DTLS\/SCTP 5000\r\nc=IN IP4 0.0.0.0\r\na=mid:rawrtc-sctp-dc\r\na=sendrecv\r\na=ice-ufrag:J0qwYvwbKp0jxlza\r\na=ice-pwd:vDbkovacQgHJACzkIyfFNReybetTc5BO\r\na=setup:actpass\r\na=fingerprint:sha-256 8C:09:4D:9F:ED:88:05:E2:97:89:4F:96:9D:17:84:54:13:CC:9D:77:03:B3:A0:C0:BA:84:75:96:8C:D1:60:D4\r\na=tls-id:PLjwVVcqiGSl9aMO9JGb0HHhNjvPXiuH\r\na=sctpmap:5000 webrtc-datachannel 65535\r\na=max-message-size:0\r\na=candidate:0a2235b9 1 udp 1 10.34.53.185 40914 typ host\r\na=candidate:d97653b4 1 udp 1 217.118.83.181 27070 typ srflx raddr 10.34.53.185 rport 40914\r\na=end-of-candidates\r\n"}"#;

/// Chromium's answer to rawrtc's offer (legacy form).
const CHROMIUM_ANSWER_TO_RAWRTC_JSON: &str = r#"{"type":"answer","sdp":"v=0\r\no=- 180606819526618186 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE rawrtc-sctp-dc\r\na=msid-semantic: WMS\r\nm=application 34259 DTLS/SCTP 5000\r\nc=IN IP4 10.34.53.185\r\nb=AS:30\r\na=candidate:3948008002 1 udp 2113937151 10.34.53.185 34259 typ host generation 0 network-cost 50\r\na=ice-ufrag:C6sp\r\na=ice-pwd:usnUy9ktd9TB9cgJzeovN5WQ\r\na=ice-options:trickle\r\na=fingerprint:sha-256 D0:44:C3:3E:BC:D9:3B:A4:45:F4:69:EF:C8:8D:5F:7E:4A:DD:62:0D:0C:6E:C2:60:98:9A:1C:73:BD:B6:5B:F5\r\na=setup:active\r\na=mid:rawrtc-sctp-dc\r\na=sctpmap:5000 webrtc-datachannel 1024\r\n"}"#;

/// Chromium offer with audio, video and a data channel, all bundled.
const AV_DATA_OFFER: &str = concat!(
    "v=0\r\n",
    "o=- 7372323423540183271 2 IN IP4 127.0.0.1\r\n",
    "s=-\r\n",
    "t=0 0\r\n",
    "a=group:BUNDLE 0 1 2\r\n",
    "a=extmap-allow-mixed\r\n",
    "a=msid-semantic: WMS 3f1c2b\r\n",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n",
    "c=IN IP4 0.0.0.0\r\n",
    "a=rtcp:9 IN IP4 0.0.0.0\r\n",
    "a=ice-ufrag:yRsK\r\n",
    "a=ice-pwd:yRsKz+ZMvDVu5Uqbo/LBsNws\r\n",
    "a=ice-options:trickle\r\n",
    "a=fingerprint:sha-256 2A:50:D1:CA:88:B8:20:B3:BA:D7:1D:F1:FC:EB:7C:B0:6A:82:A8:7A:4C:CC:EB:87:CB:F0:CE:A8:4E:4C:5F:CF\r\n",
    "a=setup:actpass\r\n",
    "a=mid:0\r\n",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n",
    "a=sendrecv\r\n",
    "a=msid:3f1c2b 8a9d7e\r\n",
    "a=rtcp-mux\r\n",
    "a=rtpmap:111 opus/48000/2\r\n",
    "a=rtcp-fb:111 transport-cc\r\n",
    "a=fmtp:111 minptime=10;useinbandfec=1\r\n",
    "a=rtpmap:63 red/48000/2\r\n",
    "a=fmtp:63 111/111\r\n",
    "a=rtpmap:9 G722/8000\r\n",
    "a=rtpmap:0 PCMU/8000\r\n",
    "a=rtpmap:8 PCMA/8000\r\n",
    "a=rtpmap:13 CN/8000\r\n",
    "a=rtpmap:110 telephone-event/48000\r\n",
    "a=rtpmap:126 telephone-event/8000\r\n",
    "a=ssrc:2951836404 cname:Yq3lM0xV2m5wYh4N\r\n",
    "a=ssrc:2951836404 msid:3f1c2b 8a9d7e\r\n",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\n",
    "c=IN IP4 0.0.0.0\r\n",
    "a=rtcp:9 IN IP4 0.0.0.0\r\n",
    "a=ice-ufrag:yRsK\r\n",
    "a=ice-pwd:yRsKz+ZMvDVu5Uqbo/LBsNws\r\n",
    "a=ice-options:trickle\r\n",
    "a=fingerprint:sha-256 2A:50:D1:CA:88:B8:20:B3:BA:D7:1D:F1:FC:EB:7C:B0:6A:82:A8:7A:4C:CC:EB:87:CB:F0:CE:A8:4E:4C:5F:CF\r\n",
    "a=setup:actpass\r\n",
    "a=mid:1\r\n",
    "a=sendrecv\r\n",
    "a=msid:3f1c2b 1b2c3d\r\n",
    "a=rtcp-mux\r\n",
    "a=rtcp-rsize\r\n",
    "a=rtpmap:96 VP8/90000\r\n",
    "a=rtcp-fb:96 goog-remb\r\n",
    "a=rtcp-fb:96 nack\r\n",
    "a=rtcp-fb:96 nack pli\r\n",
    "a=rtpmap:97 rtx/90000\r\n",
    "a=fmtp:97 apt=96\r\n",
    "a=rtpmap:102 H264/90000\r\n",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n",
    "a=rtpmap:103 rtx/90000\r\n",
    "a=fmtp:103 apt=102\r\n",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
    "c=IN IP4 0.0.0.0\r\n",
    "a=ice-ufrag:yRsK\r\n",
    "a=ice-pwd:yRsKz+ZMvDVu5Uqbo/LBsNws\r\n",
    "a=ice-options:trickle\r\n",
    "a=fingerprint:sha-256 2A:50:D1:CA:88:B8:20:B3:BA:D7:1D:F1:FC:EB:7C:B0:6A:82:A8:7A:4C:CC:EB:87:CB:F0:CE:A8:4E:4C:5F:CF\r\n",
    "a=setup:actpass\r\n",
    "a=mid:2\r\n",
    "a=sctp-port:5000\r\n",
    "a=max-message-size:262144\r\n",
);

/// The data m-line comes second, bare LF endings with trailing whitespace,
/// session-level credentials overridden in part by the data m-line, and a
/// second data m-line that must not be used.
const APP_SECOND_OFFER: &str = concat!(
    "v=0\n",
    "o=- 1 1 IN IP4 0.0.0.0 \n",
    "s=-\n",
    "t=0 0\t\n",
    "a=ice-ufrag:sessUfrag\n",
    "a=ice-pwd:sessionPasswordIsLong1234\n",
    "a=fingerprint:sha-256 B3:0E:FC:81:4A:CB:01:B3:3E:83:84:B3:6A:F2:50:4E:A7:ED:8E:F7:93:68:BF:63:DB:65:0E:27:4A:65:70:8A  \n",
    "a=group:BUNDLE a0 data v1\n",
    "a=ice-options:trickle\n",
    "\n",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\n",
    "c=IN IP4 0.0.0.0\n",
    "a=mid:a0\n",
    "a=rtpmap:111 opus/48000/2\n",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel   \n",
    "c=IN IP4 0.0.0.0\n",
    "a=mid:data\n",
    "a=ice-ufrag:mediaUfrag\n",
    "a=ice-options:trickle ice2\n",
    "a=setup:passive\n",
    "a=sctp-port:5001\n",
    "m=video 0 UDP/TLS/RTP/SAVPF 96\n",
    "c=IN IP4 0.0.0.0\n",
    "a=mid:v1\n",
    "a=rtpmap:96 VP8/90000\n",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\n",
    "a=mid:extra\n",
);

fn rawrtc_offer() -> String {
    Description::from_json(RAWRTC_OFFER_JSON).unwrap().sdp
}

fn chromium_answer_to_rawrtc() -> String {
    Description::from_json(CHROMIUM_ANSWER_TO_RAWRTC_JSON)
        .unwrap()
        .sdp
}

fn hex(s: &str) -> Vec<u8> {
    s.split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn local() -> LocalSession {
    LocalSession {
        session_id: 4_962_303_333_179_871_722,
        session_version: 1,
        ice_ufrag: "sMrT".into(),
        ice_pwd: "p4ssw0rdP4ssw0rdP4ssw0".into(),
        fingerprint: Fingerprint::sha256((0u8..32).map(|i| i.wrapping_mul(37) ^ 0xA5).collect()),
        setup: Setup::Active,
        mid: "dc".into(),
        sctp_port: 5000,
        max_message_size: 262_144,
        candidates: vec![
            "candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host".into(),
            "a=candidate:2 1 udp 1694498815 198.51.100.7 61000 typ srflx raddr 192.0.2.10 rport 50000"
                .into(),
            "3 1 udp 2130706175 2001:db8::10 50002 typ host".into(),
        ],
        end_of_candidates: true,
        ice_options_trickle: true,
    }
}

/// Lines of a written SDP (without the final empty piece).
fn lines_of(sdp: &str) -> Vec<&str> {
    assert!(sdp.ends_with("\r\n"), "must end with CRLF: {sdp:?}");
    let body = &sdp[..sdp.len() - 2];
    assert!(!body.contains('\n') || body.split("\r\n").all(|l| !l.contains('\n')));
    body.split("\r\n").collect()
}

/// Replaces the first line starting with `prefix` by `new` (or deletes it
/// when `new` is None); returns the SDP and the 1-based line number.
fn edit(sdp: &str, prefix: &str, new: Option<&str>) -> (String, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    for (i, line) in sdp.split("\r\n").enumerate() {
        if at == 0 && line.starts_with(prefix) {
            at = i + 1;
            if let Some(n) = new {
                out.push(n.to_owned());
            }
        } else {
            out.push(line.to_owned());
        }
    }
    assert!(at > 0, "no line starts with {prefix}");
    (out.join("\r\n"), at)
}

fn err_of(sdp: &str) -> String {
    match parse(sdp) {
        Ok(r) => panic!("expected an error, parsed {r:?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that editing `prefix` to `new` gives an error naming that line
/// and containing `problem`.
fn assert_line_error(base: &str, prefix: &str, new: &str, problem: &str) {
    let (sdp, no) = edit(base, prefix, Some(new));
    let msg = err_of(&sdp);
    let head = format!("line {no} \"");
    assert!(msg.starts_with(&head), "{msg:?} should start with {head:?}");
    assert!(msg.contains(problem), "{msg:?} should contain {problem:?}");
}

// ---------------------------------------------------------------------------
// Parsing fixtures
// ---------------------------------------------------------------------------

#[test]
fn chromium_offer_fields() {
    let r = parse(CHROMIUM_OFFER).unwrap();
    assert_eq!(r.ice_ufrag, "WDFv");
    assert_eq!(r.ice_pwd, "WDFvEUw55GPVg29bmKpMy/yr");
    assert!(!r.ice_lite);
    assert_eq!(r.ice_options, vec!["trickle"]);
    assert_eq!(r.fingerprints, vec![Fingerprint::sha256(hex(CHROMIUM_FP))]);
    assert_eq!(r.setup, Some(Setup::ActPass));
    assert_eq!(r.transport_mid.as_deref(), Some("0"));
    assert_eq!(data(&r).sctp_port, 5000);
    assert_eq!(data(&r).max_message_size, Some(262_144));
    assert!(!data(&r).legacy);
    assert_eq!(r.candidates.len(), 4);
    assert!(r.candidates[0].starts_with("candidate:2999745851 1 udp 2122260223 192.168.1.20"));
    assert!(r.candidates[1].contains("fd00::1c2a:4bff:fe1e:73c2"));
    assert!(r.candidates[2].contains("674bc544-3d59-42ed-9576-f7c0dbfdd1a0.local"));
    assert!(r.candidates[3].contains("tcptype active"));
    assert!(!r.end_of_candidates);
    assert_eq!(
        r.sections,
        vec![MediaSection {
            kind: "application".into(),
            port: 54321,
            proto: "UDP/DTLS/SCTP".into(),
            fmts: vec!["webrtc-datachannel".into()],
            mid: Some("0".into()),
            is_data: true,
        }]
    );
    assert_eq!(data(&r).index, 0);
    assert_eq!(r.data_section().unwrap().port, 54321);
    assert_eq!(r.bundle, vec!["0"]);
}

#[test]
fn firefox_offer_fields() {
    let r = parse(FIREFOX_OFFER).unwrap();
    assert_eq!(r.ice_ufrag, "133b0070");
    assert_eq!(r.ice_pwd, "9bacf5e570ad222f388db1e8790b564f");
    assert_eq!(r.ice_options, vec!["trickle"]); // session level
    assert_eq!(r.fingerprints.len(), 1); // session level
    assert_eq!(r.fingerprints[0].algorithm, "sha-256");
    assert_eq!(r.fingerprints[0].value[..2], [0x63, 0xF2]);
    assert_eq!(r.fingerprints[0].value.len(), 32);
    assert_eq!(r.setup, Some(Setup::ActPass));
    assert_eq!(r.transport_mid.as_deref(), Some("0"));
    assert_eq!(data(&r).sctp_port, 5000);
    assert_eq!(data(&r).max_message_size, Some(1_073_741_823));
    assert!(!data(&r).legacy);
    assert_eq!(r.candidates.len(), 3);
    assert_eq!(
        r.candidates[2],
        "candidate:1 1 UDP 1686052863 203.0.113.7 46027 typ srflx raddr 192.168.1.33 rport 46027"
    );
    assert!(r.end_of_candidates);
    assert_eq!(r.bundle, vec!["0"]);
    assert_eq!(r.sections.len(), 1);
}

#[test]
fn rawrtc_legacy_offer_fields() {
    let d = Description::from_json(RAWRTC_OFFER_JSON).unwrap();
    assert_eq!(d.kind, SdpType::Offer);
    assert!(d.sdp.contains("m=application 9 DTLS/SCTP 5000\r\n"));
    let r = parse(&d.sdp).unwrap();
    assert_eq!(r.ice_ufrag, "J0qwYvwbKp0jxlza");
    assert_eq!(r.ice_pwd, "vDbkovacQgHJACzkIyfFNReybetTc5BO");
    assert_eq!(r.ice_options, vec!["trickle"]);
    assert_eq!(
        r.fingerprints,
        vec![Fingerprint::sha256(hex(
            "8C:09:4D:9F:ED:88:05:E2:97:89:4F:96:9D:17:84:54:13:CC:9D:77:03:B3:A0:C0:BA:84:75:96:8C:D1:60:D4"
        ))]
    );
    assert_eq!(r.setup, Some(Setup::ActPass));
    assert_eq!(r.transport_mid.as_deref(), Some("rawrtc-sctp-dc"));
    assert_eq!(data(&r).sctp_port, 5000);
    assert_eq!(data(&r).max_message_size, Some(0)); // unlimited
    assert!(data(&r).legacy);
    assert_eq!(
        r.candidates,
        vec![
            "candidate:0a2235b9 1 udp 1 10.34.53.185 40914 typ host",
            "candidate:d97653b4 1 udp 1 217.118.83.181 27070 typ srflx raddr 10.34.53.185 rport 40914",
        ]
    );
    assert!(r.end_of_candidates);
    assert_eq!(r.sections[0].proto, "DTLS/SCTP");
    assert_eq!(r.sections[0].fmts, vec!["5000"]);
    assert_eq!(r.bundle, vec!["rawrtc-sctp-dc"]);
}

#[test]
fn chromium_answer_to_rawrtc_fields() {
    let d = Description::from_json(CHROMIUM_ANSWER_TO_RAWRTC_JSON).unwrap();
    assert_eq!(d.kind, SdpType::Answer);
    let r = parse(&d.sdp).unwrap();
    assert_eq!(r.ice_ufrag, "C6sp");
    assert_eq!(r.ice_pwd, "usnUy9ktd9TB9cgJzeovN5WQ");
    assert_eq!(r.ice_options, vec!["trickle"]);
    assert_eq!(r.fingerprints[0].value[0], 0xD0);
    assert_eq!(r.setup, Some(Setup::Active));
    assert_eq!(r.setup_or_default(SdpType::Answer), Setup::Active);
    assert_eq!(r.transport_mid.as_deref(), Some("rawrtc-sctp-dc"));
    assert!(data(&r).legacy);
    assert_eq!(data(&r).sctp_port, 5000);
    assert_eq!(data(&r).max_message_size, None);
    assert_eq!(r.candidates.len(), 1);
    assert!(r.candidates[0].ends_with("generation 0 network-cost 50"));
    assert!(!r.end_of_candidates);
    assert_eq!(r.sections[0].port, 34259);
}

#[test]
fn av_data_offer_fields() {
    let r = parse(AV_DATA_OFFER).unwrap();
    let kinds: Vec<_> = r.sections.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["audio", "video", "application"]);
    let mids: Vec<_> = r.sections.iter().map(|m| m.mid.as_deref()).collect();
    assert_eq!(mids, [Some("0"), Some("1"), Some("2")]);
    let is_data: Vec<_> = r.sections.iter().map(|m| m.is_data).collect();
    assert_eq!(is_data, [false, false, true]);
    assert_eq!(data(&r).index, 2);
    assert_eq!(r.sections[0].fmts.len(), 8);
    assert_eq!(r.sections[1].proto, "UDP/TLS/RTP/SAVPF");
    assert_eq!(r.bundle, vec!["0", "1", "2"]);
    assert_eq!(r.transport_mid.as_deref(), Some("2"));
    assert_eq!(r.ice_ufrag, "yRsK");
    assert_eq!(data(&r).max_message_size, Some(262_144));
    assert!(r.candidates.is_empty());
}

#[test]
fn app_second_offer_fields() {
    let r = parse(APP_SECOND_OFFER).unwrap();
    assert_eq!(data(&r).index, 1);
    assert_eq!(r.sections.len(), 4);
    assert_eq!(r.sections[2].port, 0);
    assert!(!r.sections[3].is_data, "only the first data m-line is used");
    assert_eq!(r.sections[3].mid.as_deref(), Some("extra"));
    assert_eq!(r.transport_mid.as_deref(), Some("data"));
    assert_eq!(r.ice_ufrag, "mediaUfrag"); // media overrides session
    assert_eq!(r.ice_pwd, "sessionPasswordIsLong1234"); // from the session
    assert_eq!(r.ice_options, vec!["trickle", "ice2"]);
    assert_eq!(r.fingerprints[0].value[31], 0x8A);
    assert_eq!(r.setup, Some(Setup::Passive));
    assert_eq!(data(&r).sctp_port, 5001);
    assert_eq!(data(&r).max_message_size, None);
    assert_eq!(r.bundle, vec!["a0", "data", "v1"]);
}

#[test]
fn session_level_details() {
    // ice-lite, session-level setup and end-of-candidates, BUNDLE choice,
    // media-level fingerprints override session-level ones.
    let sdp = concat!(
        "v=0\r\n",
        "o=- 1 1 IN IP4 0.0.0.0\r\n",
        "s=-\r\n",
        "t=0 0\r\n",
        "a=ice-lite\r\n",
        "a=setup:passive\r\n",
        "a=end-of-candidates\r\n",
        "a=group:BUNDLE x y\r\n",
        "a=group:LS d\r\n",
        "a=group:BUNDLE d\r\n",
        "a=fingerprint:sha-1 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33\r\n",
        "m=application 9 TCP/DTLS/SCTP webrtc-datachannel\r\n",
        "a=mid:d\r\n",
        "a=ice-ufrag:abcd\r\n",
        "a=ice-pwd:abcdefghijklmnopqrstuv\r\n",
        "a=fingerprint:SHA-512 ",
        "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:",
        "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:ff\r\n",
        "a=fingerprint:sha-256 ",
        "75:2B:03:87:20:CC:FB:B6:3C:7B:6B:90:80:72:EF:16:16:F7:AD:19:EB:99:32:24:6A:0B:81:1B:CC:80:67:AF\r\n",
    );
    let r = parse(sdp).unwrap();
    assert!(r.ice_lite);
    assert_eq!(r.setup, Some(Setup::Passive));
    assert!(r.end_of_candidates);
    assert_eq!(r.bundle, vec!["d"]);
    assert_eq!(r.fingerprints.len(), 2);
    assert_eq!(r.fingerprints[0].algorithm, "sha-512");
    assert_eq!(r.fingerprints[0].value.len(), 64);
    assert_eq!(r.fingerprints[1].algorithm, "sha-256");
    assert_eq!(r.sections[0].proto, "TCP/DTLS/SCTP");
    assert_eq!(data(&r).sctp_port, 5000); // default
    assert!(r.ice_options.is_empty());
}

#[test]
fn setup_defaults() {
    let mut r = parse(CHROMIUM_OFFER).unwrap();
    r.setup = None;
    assert_eq!(r.setup_or_default(SdpType::Offer), Setup::ActPass);
    assert_eq!(r.setup_or_default(SdpType::Answer), Setup::Active);
    assert_eq!(r.setup_or_default(SdpType::Pranswer), Setup::Active);
    for s in [
        Setup::Active,
        Setup::Passive,
        Setup::ActPass,
        Setup::HoldConn,
    ] {
        assert_eq!(s.as_str().parse::<Setup>(), Ok(s));
        assert_eq!(s.as_str().to_uppercase().parse::<Setup>(), Ok(s));
    }
}

#[test]
fn legacy_sctpmap_with_other_port() {
    let sdp = rawrtc_offer()
        .replace("DTLS/SCTP 5000", "DTLS/SCTP 5001")
        .replace("a=sctpmap:5000", "a=sctpmap:5001");
    let r = parse(&sdp).unwrap();
    assert!(data(&r).legacy);
    assert_eq!(data(&r).sctp_port, 5001);
}

#[test]
fn legacy_form_needs_sctpmap() {
    let sdp = rawrtc_offer().replace("a=sctpmap:5000 webrtc-datachannel 65535\r\n", "");
    assert_eq!(
        err_of(&sdp),
        "no data-channel m-line (m=application ... webrtc-datachannel)"
    );
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

#[test]
fn offer_round_trip() {
    let l = local();
    let sdp = write_offer(&l);
    let lines = lines_of(&sdp);
    assert_eq!(lines[0], "v=0");
    assert_eq!(lines[1], "o=smolrtc 4962303333179871722 1 IN IP4 127.0.0.1");
    assert_eq!(lines[2], "s=-");
    assert_eq!(lines[3], "t=0 0");
    assert_eq!(lines[4], "a=group:BUNDLE dc");
    assert_eq!(
        lines[5],
        "m=application 50000 UDP/DTLS/SCTP webrtc-datachannel"
    );
    assert_eq!(lines[6], "c=IN IP4 192.0.2.10");
    assert!(lines.contains(&"a=setup:actpass"));
    assert!(lines.contains(&"a=ice-options:trickle"));
    assert!(lines.contains(&"a=sctp-port:5000"));
    assert!(lines.contains(&"a=max-message-size:262144"));
    assert_eq!(*lines.last().unwrap(), "a=end-of-candidates");
    let fp_line = format!("a=fingerprint:{}", l.fingerprint.to_sdp_value());
    assert!(lines.contains(&fp_line.as_str()));
    assert!(fp_line.starts_with("a=fingerprint:sha-256 A5:"));
    let hex_part = fp_line.rsplit(' ').next().unwrap();
    assert_eq!(hex_part, hex_part.to_uppercase());

    let r = parse(&sdp).unwrap();
    assert_eq!(r.ice_ufrag, l.ice_ufrag);
    assert_eq!(r.ice_pwd, l.ice_pwd);
    assert_eq!(r.fingerprints, vec![l.fingerprint.clone()]);
    assert_eq!(r.setup, Some(Setup::ActPass));
    assert_eq!(r.transport_mid.as_deref(), Some("dc"));
    assert_eq!(data(&r).sctp_port, 5000);
    assert_eq!(data(&r).max_message_size, Some(262_144));
    assert!(!data(&r).legacy);
    assert_eq!(r.ice_options, vec!["trickle"]);
    assert_eq!(
        r.candidates,
        vec![
            "candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host",
            "candidate:2 1 udp 1694498815 198.51.100.7 61000 typ srflx raddr 192.0.2.10 rport 50000",
            "candidate:3 1 udp 2130706175 2001:db8::10 50002 typ host",
        ]
    );
    assert!(r.end_of_candidates);
    assert_eq!(r.bundle, vec!["dc"]);
    assert_eq!(r.sections[0].port, 50000);
}

#[test]
fn offer_without_candidates_uses_discard_port() {
    let mut l = local();
    l.candidates.clear();
    l.end_of_candidates = false;
    l.ice_options_trickle = false;
    l.max_message_size = 0;
    l.sctp_port = 5001;
    let sdp = write_offer(&l);
    assert!(sdp
        .contains("\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"));
    assert!(!sdp.contains("ice-options"));
    assert!(!sdp.contains("end-of-candidates"));
    assert!(!sdp.contains("a=candidate"));
    let r = parse(&sdp).unwrap();
    assert!(r.candidates.is_empty());
    assert!(!r.end_of_candidates);
    assert!(r.ice_options.is_empty());
    assert_eq!(data(&r).max_message_size, Some(0));
    assert_eq!(data(&r).sctp_port, 5001);
}

#[test]
fn offer_address_from_ipv6_or_mdns_candidate() {
    let mut l = local();
    l.candidates = vec!["candidate:3 1 udp 2130706175 2001:db8::10 50002 typ host".into()];
    let sdp = write_offer(&l);
    assert!(sdp.contains(
        "m=application 50002 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP6 2001:db8::10\r\n"
    ));
    parse(&sdp).unwrap();
    l.candidates = vec![
        "candidate:3 1 udp 2130706175 674bc544-3d59-42ed-9576-f7c0dbfdd1a0.local 50002 typ host"
            .into(),
    ];
    let sdp = write_offer(&l);
    assert!(
        sdp.contains("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n")
    );
    parse(&sdp).unwrap();
}

#[test]
fn answer_to_legacy_offer_is_legacy() {
    let remote = parse(&rawrtc_offer()).unwrap();
    let l = local();
    let sdp = write_answer(&l, &remote);
    let lines = lines_of(&sdp);
    assert_eq!(lines[4], "a=group:BUNDLE rawrtc-sctp-dc");
    assert_eq!(lines[5], "m=application 50000 DTLS/SCTP 5000");
    assert!(lines.contains(&"a=sctpmap:5000 webrtc-datachannel 65535"));
    assert!(lines.contains(&"a=max-message-size:262144"));
    assert!(lines.contains(&"a=mid:rawrtc-sctp-dc"));
    assert!(lines.contains(&"a=setup:active"));
    assert!(!sdp.contains("sctp-port"));
    assert!(!sdp.contains("UDP/DTLS/SCTP"));
    assert_eq!(lines.iter().filter(|l| l.starts_with("m=")).count(), 1);

    let back = parse(&sdp).unwrap();
    assert!(data(&back).legacy);
    assert_eq!(data(&back).sctp_port, 5000);
    assert_eq!(back.setup, Some(Setup::Active));
    assert_eq!(back.transport_mid.as_deref(), Some("rawrtc-sctp-dc"));
    assert_eq!(back.bundle, vec!["rawrtc-sctp-dc"]);
    assert_eq!(back.candidates.len(), 3);
}

#[test]
fn answer_to_modern_offer_is_modern() {
    for offer in [CHROMIUM_OFFER, FIREFOX_OFFER] {
        let remote = parse(offer).unwrap();
        let mut l = local();
        l.setup = Setup::Passive;
        let sdp = write_answer(&l, &remote);
        let lines = lines_of(&sdp);
        assert_eq!(lines[4], "a=group:BUNDLE 0");
        assert_eq!(
            lines[5],
            "m=application 50000 UDP/DTLS/SCTP webrtc-datachannel"
        );
        assert!(lines.contains(&"a=sctp-port:5000"));
        assert!(lines.contains(&"a=setup:passive"));
        assert!(lines.contains(&"a=mid:0"));
        assert!(!sdp.contains("sctpmap"));
        let back = parse(&sdp).unwrap();
        assert!(!data(&back).legacy);
        assert_eq!(back.setup, Some(Setup::Passive));
        assert_eq!(back.transport_mid.as_deref(), Some("0"));
    }
}

#[test]
fn answer_keeps_tcp_proto() {
    let offer = CHROMIUM_OFFER.replace("UDP/DTLS/SCTP", "TCP/DTLS/SCTP");
    let sdp = write_answer(&local(), &parse(&offer).unwrap());
    assert!(sdp.contains("m=application 50000 TCP/DTLS/SCTP webrtc-datachannel\r\n"));
}

#[test]
fn answer_rejects_audio_and_video_in_order() {
    let remote = parse(AV_DATA_OFFER).unwrap();
    let sdp = write_answer(&local(), &remote);
    let lines = lines_of(&sdp);
    let m: Vec<_> = lines.iter().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(
        m,
        [
            &"m=audio 0 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
            &"m=video 0 UDP/TLS/RTP/SAVPF 96 97 102 103",
            &"m=application 50000 UDP/DTLS/SCTP webrtc-datachannel",
        ]
    );
    assert_eq!(lines[4], "a=group:BUNDLE 2");
    // A rejected section has only c= and its mid.
    let audio = lines.iter().position(|l| l.starts_with("m=audio")).unwrap();
    assert_eq!(lines[audio + 1], "c=IN IP4 0.0.0.0");
    assert_eq!(lines[audio + 2], "a=mid:0");
    assert!(lines[audio + 3].starts_with("m=video"));
    assert_eq!(lines[audio + 5], "a=mid:1");
    assert!(lines[audio + 6].starts_with("m=application"));
    assert!(!sdp.contains("rtpmap"));

    let back = parse(&sdp).unwrap();
    assert_eq!(data(&back).index, 2);
    let ports: Vec<_> = back.sections.iter().map(|m| m.port).collect();
    assert_eq!(ports, [0, 0, 50000]);
    let mids: Vec<_> = back
        .sections
        .iter()
        .map(|m| m.mid.clone().unwrap())
        .collect();
    assert_eq!(mids, ["0", "1", "2"]);
    assert_eq!(back.bundle, vec!["2"]);
}

#[test]
fn answer_to_app_second_offer() {
    let remote = parse(APP_SECOND_OFFER).unwrap();
    let mut l = local();
    l.candidates.clear();
    let sdp = write_answer(&l, &remote);
    let m: Vec<_> = lines_of(&sdp)
        .into_iter()
        .filter(|l| l.starts_with("m=") || l.starts_with("a=mid"))
        .collect();
    assert_eq!(
        m,
        [
            "m=audio 0 UDP/TLS/RTP/SAVPF 111",
            "a=mid:a0",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "a=mid:data",
            "m=video 0 UDP/TLS/RTP/SAVPF 96",
            "a=mid:v1",
            "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
            "a=mid:extra",
        ]
    );
    let back = parse(&sdp).unwrap();
    assert_eq!(data(&back).index, 1);
    assert_eq!(back.bundle, vec!["data"]);
}

#[test]
fn answer_uses_our_mid_when_offer_has_none() {
    let offer = rawrtc_offer()
        .replace("a=mid:rawrtc-sctp-dc\r\n", "")
        .replace("a=group:BUNDLE rawrtc-sctp-dc\r\n", "");
    let remote = parse(&offer).unwrap();
    assert_eq!(remote.transport_mid, None);
    assert!(remote.bundle.is_empty());
    let sdp = write_answer(&local(), &remote);
    assert!(sdp.contains("a=group:BUNDLE dc\r\n"));
    assert!(sdp.contains("a=mid:dc\r\n"));
    assert_eq!(parse(&sdp).unwrap().transport_mid.as_deref(), Some("dc"));
}

#[test]
fn rtc_sdp_accepts_what_we_write() {
    use std::io::Cursor;
    let mut written = vec![write_offer(&local())];
    for offer in [
        CHROMIUM_OFFER.to_owned(),
        rawrtc_offer(),
        AV_DATA_OFFER.to_owned(),
    ] {
        written.push(write_answer(&local(), &parse(&offer).unwrap()));
    }
    for sdp in written {
        let desc = rtc_sdp::SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
            .unwrap_or_else(|e| panic!("rtc-sdp refused {sdp}: {e:?}"));
        assert!(!desc.media_descriptions.is_empty());
    }
}

#[test]
fn fingerprint_helpers() {
    let fp = Fingerprint::sha256(vec![0x0a, 0xff, 0x00]);
    assert_eq!(fp.algorithm, "sha-256");
    assert_eq!(fp.hex(), "0A:FF:00");
    assert_eq!(fp.to_sdp_value(), "sha-256 0A:FF:00");
    assert_eq!(fp.to_string(), "sha-256 0A:FF:00");
    assert_eq!(Fingerprint::expected_len("sha-256"), Some(32));
    assert_eq!(Fingerprint::expected_len("blake3"), None);
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn error_empty_and_too_large() {
    assert_eq!(parse("").unwrap_err(), SdpError::Empty);
    assert_eq!(parse(" \r\n\n\t").unwrap_err(), SdpError::Empty);
    assert_eq!(err_of(""), "empty SDP");
    let big = format!("{CHROMIUM_OFFER}{}", "a=x-pad:0123456789\r\n".repeat(4000));
    assert!(matches!(
        parse(&big).unwrap_err(),
        SdpError::TooLarge { max: 65536, .. }
    ));
    assert!(err_of(&big).contains("over the 65536-byte limit"));
    // Just under the limit is fine.
    let pad = MAX_SDP_BYTES - CHROMIUM_OFFER.len();
    let ok = format!("{CHROMIUM_OFFER}a=x{}", "y".repeat(pad - 3));
    assert_eq!(ok.len(), MAX_SDP_BYTES);
    parse(&ok).unwrap();
}

#[test]
fn error_too_many_candidates() {
    let cand = "a=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\n";
    let ok = format!("{CHROMIUM_OFFER}{}", cand.repeat(60)); // 4 + 60
    assert_eq!(parse(&ok).unwrap().candidates.len(), 64);
    let bad = format!("{ok}{cand}");
    let e = parse(&bad).unwrap_err();
    assert_eq!(e, SdpError::TooManyCandidates { line: 82, max: 64 });
    assert_eq!(e.line_number(), Some(82));
    assert_eq!(e.to_string(), "line 82: more than 64 candidates");
}

#[test]
fn error_line_shape() {
    let (sdp, no) = edit(CHROMIUM_OFFER, "s=-", Some("x"));
    assert_eq!(no, 3);
    assert_eq!(err_of(&sdp), "line 3 \"x\": expected <type>=<value>");
    let (sdp, _) = edit(CHROMIUM_OFFER, "a=mid", Some("A=mid:0"));
    assert_eq!(err_of(&sdp), "line 19 \"A=mid:0\": expected <type>=<value>");
    let (sdp, _) = edit(CHROMIUM_OFFER, "a=mid", Some(" a=mid:0"));
    assert!(err_of(&sdp).starts_with("line 19 \" a=mid:0\": expected"));
    let (sdp, _) = edit(CHROMIUM_OFFER, "t=", Some("t 0 0"));
    assert!(err_of(&sdp).starts_with("line 4 \"t 0 0\": expected <type>=<value>"));
    assert!(err_of("v=0\r\n=\r\n").starts_with("line 2 \"=\""));
}

#[test]
fn error_v_first() {
    let (sdp, _) = edit(CHROMIUM_OFFER, "v=0", None);
    assert_eq!(err_of(&sdp), "line 1: SDP must start with v=0");
    let (sdp, _) = edit(CHROMIUM_OFFER, "v=0", Some("v=1"));
    assert_eq!(err_of(&sdp), "line 1: SDP must start with v=0");
    // Blank lines are skipped but counted.
    let sdp = format!("\r\n\r\no=- 1 1 IN IP4 0.0.0.0\r\n{CHROMIUM_OFFER}");
    assert_eq!(err_of(&sdp), "line 3: SDP must start with v=0");
    let (sdp, _) = edit(CHROMIUM_OFFER, "s=-", Some("v=0"));
    assert!(err_of(&sdp).starts_with("line 3 \"v=0\": v= may appear only once"));
}

#[test]
fn error_m_line() {
    let m = "m=application";
    assert_line_error(
        CHROMIUM_OFFER,
        m,
        "m=application 9 UDP/DTLS/SCTP",
        "m= line needs <media> <port> <proto> <fmt> ...",
    );
    assert_line_error(
        CHROMIUM_OFFER,
        m,
        "m=Application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "unknown media type `Application`",
    );
    assert_line_error(
        CHROMIUM_OFFER,
        m,
        "m=application 70000 UDP/DTLS/SCTP webrtc-datachannel",
        "bad port `70000` in m= line (expected 0..65535)",
    );
    assert_line_error(
        CHROMIUM_OFFER,
        m,
        "m=application -1 UDP/DTLS/SCTP webrtc-datachannel",
        "bad port `-1`",
    );
    assert_line_error(
        CHROMIUM_OFFER,
        m,
        "m=application 9/x UDP/DTLS/SCTP webrtc-datachannel",
        "bad port `9/x`",
    );
    assert_line_error(
        CHROMIUM_OFFER,
        m,
        "m=application 9 UDP/DTLS/SCTP;x webrtc-datachannel",
        "bad transport protocol",
    );
    // Ill-formed audio m-lines are errors too (we answer them).
    assert_line_error(
        AV_DATA_OFFER,
        "m=video",
        "m=video 9",
        "m= line needs <media> <port> <proto> <fmt> ...",
    );
    // A data m-line with port 0 is rejected.
    assert_line_error(
        CHROMIUM_OFFER,
        m,
        "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
        "the data m-line is rejected (port 0)",
    );
    // ...unless it is bundle-only.
    let sdp = CHROMIUM_OFFER
        .replace("application 54321", "application 0")
        .replace("a=mid:0\r\n", "a=mid:0\r\na=bundle-only\r\n");
    assert_eq!(parse(&sdp).unwrap().sections[0].port, 0);
}

/// An answer that takes the media and rejects the data section (WHEP to an offer with a
/// data channel): read as media only, its transport the first bundled media section's.
#[test]
fn a_rejected_data_section_beside_media_is_no_data_section() {
    let sdp = AV_DATA_OFFER.replacen("m=application 9", "m=application 0", 1);
    assert!(
        sdp.contains("m=application 0"),
        "the fixture has a data section at port 9"
    );
    let d = parse_description(&sdp).unwrap();
    assert!(d.data.is_none(), "no data section");
    assert!(!d.sections.is_empty());
    // The data-channel parser still refuses it.
    assert!(parse(&sdp).is_err());
}

#[test]
fn error_no_data_section() {
    // Audio only.
    let audio_only: String = AV_DATA_OFFER
        .split_inclusive("\r\n")
        .take_while(|l| !l.starts_with("m=video"))
        .collect();
    assert_eq!(
        err_of(&audio_only),
        "no data-channel m-line (m=application ... webrtc-datachannel)"
    );
    // Wrong proto or fmt.
    for (from, to) in [
        ("UDP/DTLS/SCTP webrtc-datachannel", "UDP/DTLS/SCTP 5000"),
        ("UDP/DTLS/SCTP", "RTP/AVP"),
        ("m=application", "m=text"),
    ] {
        let sdp = CHROMIUM_OFFER.replace(from, to);
        assert!(matches!(parse(&sdp), Err(SdpError::NoDataSection)), "{to}");
    }
    // Session only.
    assert_eq!(
        parse("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n").unwrap_err(),
        SdpError::NoDataSection
    );
}

#[test]
fn error_ice_credentials() {
    assert_line_error(
        CHROMIUM_OFFER,
        "a=ice-ufrag",
        "a=ice-ufrag:abc",
        "ice-ufrag must be 4 to 256 characters long, not 3",
    );
    assert_line_error(
        CHROMIUM_OFFER,
        "a=ice-ufrag",
        "a=ice-ufrag:ab_cd",
        "ice-ufrag may hold only letters, digits, '+' and '/' (RFC 8839 ice-char)",
    );
    assert_line_error(
        CHROMIUM_OFFER,
        "a=ice-ufrag",
        "a=ice-ufrag:",
        "a=ice-ufrag needs a value",
    );
    let long = format!("a=ice-ufrag:{}", "u".repeat(257));
    assert_line_error(CHROMIUM_OFFER, "a=ice-ufrag", &long, "not 257");
    assert_line_error(
        CHROMIUM_OFFER,
        "a=ice-pwd",
        "a=ice-pwd:tooShortPassword",
        "ice-pwd must be 22 to 256 characters long, not 16",
    );
    assert_line_error(
        CHROMIUM_OFFER,
        "a=ice-pwd",
        "a=ice-pwd:WDFvEUw55GPVg29bmKpMy-yr",
        "ice-pwd may hold only",
    );
    assert_line_error(
        CHROMIUM_OFFER,
        "a=ice-options",
        "a=ice-options:trickle ic€",
        "bad ICE option",
    );
    // Long lines are quoted cut short.
    let (sdp, _) = edit(CHROMIUM_OFFER, "a=ice-ufrag", Some(&long));
    let msg = err_of(&sdp);
    let quoted = msg.split('"').nth(1).unwrap();
    assert_eq!(quoted.chars().count(), 80);
    assert!(quoted.ends_with("..."));
    // Repeated.
    let sdp = CHROMIUM_OFFER.replace("a=mid:0\r\n", "a=mid:0\r\na=ice-ufrag:WDFv\r\n");
    assert_eq!(
        err_of(&sdp),
        "line 20 \"a=ice-ufrag:WDFv\": a=ice-ufrag appears twice"
    );
    // A password is never quoted.
    let sdp = CHROMIUM_OFFER.replace(
        "a=mid:0\r\n",
        "a=mid:0\r\na=ice-pwd:s3cr3tpassword0123456789\r\n",
    );
    assert_eq!(
        err_of(&sdp),
        "line 20 \"a=ice-pwd:***\": a=ice-pwd appears twice"
    );
}

#[test]
fn error_missing_required() {
    let (sdp, _) = edit(CHROMIUM_OFFER, "a=ice-ufrag", None);
    assert_eq!(
        err_of(&sdp),
        "missing a=ice-ufrag (in the data m-line or the session)"
    );
    let (sdp, _) = edit(CHROMIUM_OFFER, "a=ice-pwd", None);
    assert_eq!(
        err_of(&sdp),
        "missing a=ice-pwd (in the data m-line or the session)"
    );
    let (sdp, _) = edit(CHROMIUM_OFFER, "a=fingerprint", None);
    assert_eq!(err_of(&sdp), "missing a=fingerprint");
    assert_eq!(
        parse(&sdp).unwrap_err(),
        SdpError::Missing("a=fingerprint".into())
    );
    // Credentials in an audio section do not count for the data section.
    let (head, tail) = AV_DATA_OFFER.split_at(AV_DATA_OFFER.find("m=application").unwrap());
    let av = format!("{head}{}", tail.replace("a=ice-ufrag:yRsK\r\n", ""));
    assert!(err_of(&av).starts_with("missing a=ice-ufrag"));
}

#[test]
fn error_fingerprint() {
    let fp = "a=fingerprint";
    let (sdp, no) = edit(
        CHROMIUM_OFFER,
        fp,
        Some("a=fingerprint:sha-256 ZZ:2B:03:87:20:CC:FB:B6:3C:7B:6B:90:80:72:EF:16:16:F7:AD:19:EB:99:32:24:6A:0B:81:1B:CC:80:67:AF"),
    );
    assert_eq!(no, 17);
    let line = sdp.split("\r\n").nth(16).unwrap();
    let cut: String = line.chars().take(77).collect();
    assert_eq!(
        err_of(&sdp),
        format!("line 17 \"{cut}...\": fingerprint is not colon-separated hex")
    );
    assert!(cut.starts_with("a=fingerprint:sha-256 ZZ:2B:"));
    for bad in [
        "a=fingerprint:sha-256 752B0387",
        "a=fingerprint:sha-256 75:2B:",
        "a=fingerprint:sha-256 7:2B",
        "a=fingerprint:sha-256 +7:2B",
        "a=fingerprint:sha-256 75;2B",
    ] {
        assert_line_error(
            CHROMIUM_OFFER,
            fp,
            bad,
            "fingerprint is not colon-separated hex",
        );
    }
    assert_line_error(
        CHROMIUM_OFFER,
        fp,
        "a=fingerprint:sha-256 75:2B",
        "sha-256 fingerprint has 2 bytes, expected 32",
    );
    for bad in [
        "a=fingerprint:sha-256",
        "a=fingerprint",
        "a=fingerprint:sha-256 75:2B 75:2B",
    ] {
        assert_line_error(
            CHROMIUM_OFFER,
            fp,
            bad,
            "expected a=fingerprint:<hash-function> <colon-separated hex>",
        );
    }
    // Session-level fingerprints are checked too.
    assert_line_error(
        FIREFOX_OFFER,
        fp,
        "a=fingerprint:sha-256 XY",
        "fingerprint is not colon-separated hex",
    );
}

#[test]
fn error_setup() {
    assert_line_error(
        CHROMIUM_OFFER,
        "a=setup",
        "a=setup:both",
        "bad a=setup value `both` (expected active, passive, actpass or holdconn)",
    );
    assert_line_error(
        CHROMIUM_OFFER,
        "a=setup",
        "a=setup",
        "a=setup needs a value",
    );
}

#[test]
fn error_sctp_numbers() {
    for bad in [
        "a=sctp-port:abc",
        "a=sctp-port:0",
        "a=sctp-port:70000",
        "a=sctp-port:+5000",
        "a=sctp-port:",
    ] {
        assert_line_error(CHROMIUM_OFFER, "a=sctp-port", bad, "bad a=sctp-port value");
    }
    for bad in [
        "a=max-message-size:-1",
        "a=max-message-size:1e6",
        "a=max-message-size:18446744073709551616",
        "a=max-message-size",
    ] {
        assert_line_error(
            CHROMIUM_OFFER,
            "a=max-message-size",
            bad,
            "bad a=max-message-size value",
        );
    }
    let big = CHROMIUM_OFFER.replace("262144", "18446744073709551615");
    assert_eq!(data(&parse(&big).unwrap()).max_message_size, Some(u64::MAX));

    let raw = rawrtc_offer().replace("\r\n", "\n");
    let raw = raw.replace('\n', "\r\n");
    assert_line_error(
        &raw,
        "a=sctpmap",
        "a=sctpmap:5001 webrtc-datachannel 65535",
        "a=sctpmap port 5001 is not a format of the m= line",
    );
    assert_line_error(
        &raw,
        "a=sctpmap",
        "a=sctpmap:50x webrtc-datachannel 65535",
        "expected a=sctpmap:<port> webrtc-datachannel <streams>",
    );
    assert_line_error(
        &raw,
        "a=sctpmap",
        "a=sctpmap:5000 webrtc-datachannel lots",
        "bad a=sctpmap stream count",
    );
}

#[test]
fn error_mid() {
    assert_line_error(CHROMIUM_OFFER, "a=mid", "a=mid:", "a=mid needs a value");
    assert_line_error(
        CHROMIUM_OFFER,
        "a=mid",
        "a=mid:dä",
        "a=mid must be 1 to 256 visible ASCII characters",
    );
    let sdp = CHROMIUM_OFFER.replace("a=mid:0\r\n", "a=mid:0\r\na=mid:1\r\n");
    assert_eq!(err_of(&sdp), "line 20 \"a=mid:1\": a=mid appears twice");
}

#[test]
fn error_origin() {
    assert_line_error(
        CHROMIUM_OFFER,
        "o=",
        "o=- 1 IN IP4 127.0.0.1",
        "o= line needs <username> <sess-id> <sess-version> <nettype> <addrtype> <address>",
    );
}

#[test]
fn error_candidates() {
    let c = "a=candidate:2999745851";
    let cases = [
        ("a=candidate:", "candidate needs <foundation> <component> <transport> <priority> <address> <port> typ <type>"),
        ("a=candidate:1 1 udp 2122260223 192.168.1.20 54321 typ", "candidate needs"),
        ("a=candidate:1 1 udp 2122260223 192.168.1.20 54321 type host", "expected `typ` after the candidate port, found `type`"),
        ("a=candidate:1 1 udp 2122260223 192.168.1.20 65536 typ host", "bad candidate port `65536` (expected 0..65535)"),
        ("a=candidate:1 1 udp 2122260223 192.168.1.20 x typ host", "bad candidate port `x`"),
        ("a=candidate:1 1 udp 4294967296 192.168.1.20 5 typ host", "bad candidate priority `4294967296`"),
        ("a=candidate:1 0 udp 1 192.168.1.20 5 typ host", "bad candidate component id `0`"),
        ("a=candidate:1 257 udp 1 192.168.1.20 5 typ host", "bad candidate component id `257`"),
        ("a=candidate:f_o 1 udp 1 192.168.1.20 5 typ host", "bad candidate foundation `f_o`"),
        ("a=candidate:1 1 u:dp 1 192.168.1.20 5 typ host", "bad candidate transport `u:dp`"),
        ("a=candidate:1 1 udp 1 192.168.1.20:5 5 typ host", "bad candidate address `192.168.1.20:5`"),
        ("a=candidate:1 1 udp 1 .local 5 typ host", "bad candidate address `.local`"),
        ("a=candidate:1 1 udp 1 1.2.3.4 5 typ relayed", "unknown candidate type `relayed`"),
        ("a=candidate:1 1 udp 1 1.2.3.4 5 typ srflx raddr", "candidate extension `raddr` has no value"),
        ("a=candidate:1 1 udp 1 1.2.3.4 5 typ srflx raddr 1.2.3.4 rport 99999", "bad candidate rport `99999`"),
        ("a=candidate:1 1 udp 1 1.2.3.4 5 typ srflx raddr a/b rport 9", "bad candidate raddr `a/b`"),
        ("a=candidate:1 1 tcp 1 1.2.3.4 5 typ host tcptype both", "bad candidate tcptype `both`"),
        ("a=candidate:1 1 udp 1 1.2.3.4 5 typ host generation", "candidate extension `generation` has no value"),
    ];
    for (bad, problem) in cases {
        assert_line_error(CHROMIUM_OFFER, c, bad, problem);
    }
}

#[test]
fn candidates_accepted() {
    for ok in [
        "candidate:1 1 udp 2122260223 192.168.1.20 54321 typ host generation 0 ufrag WDFv network-id 1 network-cost 10",
        "candidate:1 1 udp 2122260223 fe80::1 54321 typ host",
        "candidate:1 2 UDP 2122260223 [::1] 1 typ host".replace("[::1]", "::1").as_str(),
        "candidate:1 1 udp 2113937151 674bc544-3d59-42ed-9576-f7c0dbfdd1a0.local 50877 typ host generation 0 network-cost 999",
        "candidate:1 1 udp 1677729535 203.0.113.7 50877 typ srflx raddr 0.0.0.0 rport 0 generation 0 network-cost 999",
        "candidate:1 1 tcp 1518280447 192.168.1.20 9 typ host tcptype active",
        "candidate:1 1 tcp 1518280447 192.168.1.20 9 typ host tcptype passive",
        "candidate:1 1 TCP 1518280447 192.168.1.20 9 typ host tcptype so",
        "candidate:xY+/ 1 udp 41885439 198.51.100.1 3478 typ relay raddr 203.0.113.7 rport 50877",
        "candidate:1 1 udp 1 1.2.3.4 5 typ prflx",
        "a=candidate:1 1 udp 1 1.2.3.4 5 typ host",
    ] {
        check_candidate(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let e = check_candidate("candidate:1 1 udp 1 1.2.3.4 5 typ").unwrap_err();
    assert!(e
        .to_string()
        .starts_with("bad candidate \"candidate:1 1 udp 1 1.2.3.4 5 typ\": candidate needs"));
    assert!(check_candidate("1 1 udp 1 1.2.3.4 5 typ host").is_err());
}

#[test]
fn unknown_and_media_attributes_are_tolerated() {
    // Attributes we do not know, and odd ones in audio/video sections.
    let sdp = AV_DATA_OFFER.replace(
        "a=rtcp-mux\r\n",
        "a=rtcp-mux\r\na=setup:whatever\r\na=candidate:garbage\r\na=x-foo\r\nb=AS:30\r\ni=info\r\n",
    );
    parse(&sdp).unwrap();
}

// ---------------------------------------------------------------------------
// No panic, whatever the input
// ---------------------------------------------------------------------------

/// xorshift64*: a small deterministic generator for the mutation test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Runs every entry point on `text` and checks a successful parse can be
/// answered and the answer read back.
fn exercise(text: &str) {
    if let Ok(remote) = parse(text) {
        assert!(data(&remote).index < remote.sections.len());
        assert!(remote.sections[data(&remote).index].is_data);
        assert!(!remote.fingerprints.is_empty());
        let answer = write_answer(&local(), &remote);
        if let Err(e) = parse(&answer) {
            panic!("answer to\n{text}\ndoes not parse: {e}\n{answer}");
        }
    }
    let _ = parse_candidate_fragment(text);
    let json = serde_json::json!({"type": "offer", "sdp": text}).to_string();
    let _ = Description::from_json(&json).map(|d| parse(&d.sdp));
    let _ = Description::from_json(text);
    let _ = IceCandidateInit::from_json(text);
    for line in text.lines().take(200) {
        let _ = check_candidate(line);
        if let Err(e) = parse(line) {
            let _ = e.to_string();
        }
    }
}

/// What the random edits of [`no_panic_on_mutated_input`] insert.
const PALETTE: &[&str] = &[
    "\r",
    "\n",
    "\r\n",
    " ",
    "\t",
    ":",
    "=",
    "/",
    "0",
    "9",
    "65536",
    "-",
    ".",
    "a",
    "Z",
    "m=",
    "a=",
    "v=0",
    "é",
    "€",
    "\u{0}",
    "\u{feff}",
    "\"",
    "\\",
    "candidate:",
    "typ",
    "::",
    "18446744073709551616",
    "webrtc-datachannel",
    "DTLS/SCTP",
    "a=sctpmap:5000 ",
];

/// The descriptions [`no_panic_on_mutated_input`] mutates.
fn mutation_bases() -> [String; 8] {
    [
        CHROMIUM_OFFER.to_owned(),
        FIREFOX_OFFER.to_owned(),
        rawrtc_offer(),
        chromium_answer_to_rawrtc(),
        AV_DATA_OFFER.to_owned(),
        APP_SECOND_OFFER.to_owned(),
        write_offer(&local()),
        write_candidate_fragment(
            "abcd",
            "abcdefghijklmnopqrstuv",
            "0",
            &local().candidates,
            true,
        ),
    ]
}

/// Every truncation of `base` on a char boundary, from either end; returns the count.
fn exercise_truncations(base: &str) -> usize {
    let mut runs = 0;
    for (i, _) in base.char_indices() {
        exercise(&base[..i]);
        exercise(&base[i..]);
        runs += 2;
    }
    runs
}

/// Each line of `base` removed, doubled, or moved to the front; returns the count.
fn exercise_line_moves(base: &str) -> usize {
    let lines: Vec<&str> = base.split_inclusive('\n').collect();
    for i in 0..lines.len() {
        let mut v = lines.clone();
        v.remove(i);
        exercise(&v.concat());
        let mut v = lines.clone();
        v.insert(i, lines[i]);
        exercise(&v.concat());
        let mut v = lines.clone();
        let l = v.remove(i);
        v.insert(0, l);
        exercise(&v.concat());
    }
    3 * lines.len()
}

/// One to four random edits of `s`: a [`PALETTE`] piece inserted, or put in place of a
/// few chars, or a few chars deleted.
fn random_edits(s: &mut String, rng: &mut Rng) {
    for _ in 0..=rng.below(4) {
        let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
        let at = bounds[rng.below(bounds.len())];
        let piece = PALETTE[rng.below(PALETTE.len())];
        match rng.below(3) {
            0 => s.insert_str(at, piece),
            1 => {
                let end = bounds
                    [(bounds.binary_search(&at).unwrap() + 1 + rng.below(8)).min(bounds.len() - 1)];
                s.replace_range(at..end, piece);
            }
            _ => {
                let end = bounds
                    [(bounds.binary_search(&at).unwrap() + 1 + rng.below(3)).min(bounds.len() - 1)];
                s.replace_range(at..end, "");
            }
        }
    }
}

#[test]
fn no_panic_on_mutated_input() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut runs = 0usize;
    for base in &mutation_bases() {
        exercise(base);
        runs += exercise_truncations(base);
        runs += exercise_line_moves(base);
        for _ in 0..1500 {
            let mut s = base.clone();
            random_edits(&mut s, &mut rng);
            exercise(&s);
            runs += 1;
        }
    }
    // Oversized and degenerate inputs.
    for s in [
        "v=0".repeat(30_000),
        "\n".repeat(100_000),
        "a=".to_owned(),
        "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n".repeat(500),
        "é".repeat(1000),
    ] {
        exercise(&s);
        runs += 1;
    }
    assert!(runs > 10_000, "{runs}");
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

#[test]
fn description_json_round_trip() {
    let d = Description {
        kind: SdpType::Answer,
        sdp: write_offer(&local()),
    };
    let json = d.to_json();
    assert!(json.starts_with("{\"type\":\"answer\",\"sdp\":\"v=0\\r\\no=smolrtc "));
    assert_eq!(Description::from_json(&json).unwrap(), d);
    assert_eq!(serde_json::from_str::<Description>(&json).unwrap(), d);
    for (k, s) in [
        (SdpType::Offer, "offer"),
        (SdpType::Answer, "answer"),
        (SdpType::Pranswer, "pranswer"),
        (SdpType::Rollback, "rollback"),
    ] {
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{s}\""));
        assert_eq!(k.as_str(), s);
        let j = format!("{{\"type\":\"{s}\",\"sdp\":\"\"}}");
        assert_eq!(Description::from_json(&j).unwrap().kind, k);
    }
    // Rollback may omit sdp; unknown fields are ignored.
    let r = Description::from_json(r#"{"type":"rollback","extra":1}"#).unwrap();
    assert_eq!(r.sdp, "");
}

#[test]
fn description_json_errors() {
    let msg = |j: &str| Description::from_json(j).unwrap_err().to_string();
    assert!(msg("v=0").starts_with("not JSON: "), "{}", msg("v=0"));
    assert!(msg("{\"type\":\"offer\"").starts_with("not JSON: "));
    assert!(msg("").starts_with("not JSON: "));
    assert_eq!(msg("[1]"), "not a JSON object");
    assert_eq!(msg(r#"{"type":"offer"}"#), "missing field `sdp`");
    assert_eq!(msg(r#"{"type":"offer","sdp":null}"#), "missing field `sdp`");
    assert_eq!(msg(r#"{"sdp":"v=0"}"#), "missing field `type`");
    assert_eq!(
        msg(r#"{"type":"foo","sdp":"v=0"}"#),
        "unknown type `foo`, expected offer or answer"
    );
    assert_eq!(
        msg(r#"{"type":"Offer","sdp":"v=0"}"#),
        "unknown type `Offer`, expected offer or answer"
    );
    assert_eq!(
        msg(r#"{"type":1,"sdp":"v=0"}"#),
        "field `type` must be a string"
    );
    assert_eq!(
        msg(r#"{"type":"offer","sdp":[]}"#),
        "field `sdp` must be a string"
    );
}

#[test]
fn ice_candidate_init_json() {
    let c = IceCandidateInit {
        candidate: "candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    let json = c.to_json();
    assert_eq!(
        json,
        r#"{"candidate":"candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host","sdpMid":"0","sdpMLineIndex":0}"#
    );
    assert_eq!(IceCandidateInit::from_json(&json).unwrap(), c);
    assert_eq!(serde_json::from_str::<IceCandidateInit>(&json).unwrap(), c);
    assert!(!c.is_end_of_candidates());
    assert_eq!(c.sdp_value(), c.candidate);

    // Chromium's form, with usernameFragment and an a= prefix.
    let j = r#"{"candidate":"a=candidate:3948008002 1 udp 2113937151 10.34.53.185 34259 typ host generation 0 ufrag C6sp network-cost 50","sdpMid":"rawrtc-sctp-dc","sdpMLineIndex":null,"usernameFragment":"C6sp"}"#;
    let c = IceCandidateInit::from_json(j).unwrap();
    assert_eq!(c.username_fragment.as_deref(), Some("C6sp"));
    assert_eq!(c.sdp_mline_index, None);
    assert!(c.sdp_value().starts_with("candidate:3948008002 "));

    // End of candidates.
    let end = IceCandidateInit::from_json(r#"{"candidate":"","sdpMid":"0"}"#).unwrap();
    assert!(end.is_end_of_candidates());
    assert_eq!(
        IceCandidateInit {
            candidate: String::new(),
            ..Default::default()
        }
        .to_json(),
        r#"{"candidate":""}"#
    );

    let msg = |j: &str| IceCandidateInit::from_json(j).unwrap_err().to_string();
    assert_eq!(msg(r#"{"sdpMid":"0"}"#), "missing field `candidate`");
    assert!(msg("nope").starts_with("not JSON: "));
    assert_eq!(
        msg(r#"{"candidate":"","sdpMLineIndex":70000}"#),
        "field `sdpMLineIndex` must be an integer 0..65535 or null"
    );
    assert_eq!(
        msg(r#"{"candidate":"","sdpMid":5}"#),
        "field `sdpMid` must be a string or null"
    );
    assert_eq!(
        msg(r#"{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ bogus"}"#),
        "bad candidate \"candidate:1 1 udp 1 1.2.3.4 5 typ bogus\": unknown candidate type `bogus` (expected host, srflx, prflx or relay)"
    );
}

// ---------------------------------------------------------------------------
// Trickle fragments (RFC 8840)
// ---------------------------------------------------------------------------

#[test]
fn candidate_fragment_round_trip() {
    let l = local();
    let frag = write_candidate_fragment(&l.ice_ufrag, &l.ice_pwd, "0", &l.candidates, true);
    let lines = lines_of(&frag);
    assert_eq!(
        &lines[..5],
        [
            "a=group:BUNDLE 0",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "a=mid:0",
            "a=ice-ufrag:sMrT",
            "a=ice-pwd:p4ssw0rdP4ssw0rdP4ssw0",
        ]
    );
    assert_eq!(
        lines[5],
        "a=candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host"
    );
    assert_eq!(*lines.last().unwrap(), "a=end-of-candidates");
    let (ufrag, cands, end) = parse_candidate_fragment(&frag).unwrap();
    assert_eq!(ufrag.as_deref(), Some("sMrT"));
    assert_eq!(cands.len(), 3);
    assert!(cands.iter().all(|c| c.starts_with("candidate:")));
    assert_eq!(
        cands[2],
        "candidate:3 1 udp 2130706175 2001:db8::10 50002 typ host"
    );
    assert!(end);

    // No credentials, no end.
    let frag = write_candidate_fragment("", "", "dc", &l.candidates[..1], false);
    assert!(!frag.contains("ice-"));
    assert_eq!(
        parse_candidate_fragment(&frag).unwrap(),
        (None, vec![l.candidates[0].clone()], false)
    );
    // Empty body.
    assert_eq!(parse_candidate_fragment("").unwrap(), (None, vec![], false));
}

#[test]
fn candidate_fragment_rfc8840_shape() {
    // Session-level credentials, LF endings, as in RFC 8840 section 4.4.
    let frag = "a=ice-pwd:asd88fgpdd777uzjYhagZg\na=ice-ufrag:8hhY\nm=audio 9 RTP/AVP 0\na=mid:1\na=candidate:1 1 UDP 1658497328 192.0.2.3 5000 typ host\na=end-of-candidates\n";
    let (ufrag, cands, end) = parse_candidate_fragment(frag).unwrap();
    assert_eq!(ufrag.as_deref(), Some("8hhY"));
    assert_eq!(
        cands,
        ["candidate:1 1 UDP 1658497328 192.0.2.3 5000 typ host"]
    );
    assert!(end);
}

#[test]
fn candidate_fragment_errors() {
    let msg = |f: &str| parse_candidate_fragment(f).unwrap_err().to_string();
    assert_eq!(
        msg("a=mid:0\r\na=candidate:1 1 udp 1 1.2.3.4 x typ host\r\n"),
        "line 2 \"a=candidate:1 1 udp 1 1.2.3.4 x typ host\": bad candidate port `x` (expected 0..65535)"
    );
    assert_eq!(
        msg("a=ice-ufrag:ab\r\n"),
        "line 1 \"a=ice-ufrag:ab\": ice-ufrag must be 4 to 256 characters long, not 2"
    );
    assert_eq!(
        msg("a=ice-ufrag:abcd\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:efgh\r\n"),
        "line 3 \"a=ice-ufrag:efgh\": a=ice-ufrag differs from an earlier one"
    );
    assert_eq!(
        msg("hello\r\n"),
        "line 1 \"hello\": expected <type>=<value>"
    );
    assert_eq!(
        msg("m=application\r\n"),
        "line 1 \"m=application\": m= line needs <media> <port> <proto> <fmt> ..."
    );
    let many = "a=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\n".repeat(65);
    assert_eq!(msg(&many), "line 65: more than 64 candidates");
    assert!(matches!(
        parse_candidate_fragment(&"a=x\r\n".repeat(20_000)),
        Err(SdpError::TooLarge { .. })
    ));
}
