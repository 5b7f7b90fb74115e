//! Tests of audio/video sections: parsing real browser offers (captured from headless
//! Chromium and Firefox ESR by `tests/fixtures/sdp/capture.py`) and writing answers and
//! offers that browsers' parsers (and rtc-sdp) accept.

use super::*;

pub(super) const CHROMIUM_RECVONLY: &str =
    include_str!("../../tests/fixtures/sdp/chromium_recvonly.sdp");
pub(super) const CHROMIUM_SENDRECV: &str =
    include_str!("../../tests/fixtures/sdp/chromium_sendrecv.sdp");
pub(super) const CHROMIUM_RECVONLY_DATA: &str =
    include_str!("../../tests/fixtures/sdp/chromium_recvonly_data.sdp");
pub(super) const FIREFOX_RECVONLY: &str =
    include_str!("../../tests/fixtures/sdp/firefox_recvonly.sdp");
pub(super) const FIREFOX_SENDRECV: &str =
    include_str!("../../tests/fixtures/sdp/firefox_sendrecv.sdp");
pub(super) const FIREFOX_RECVONLY_DATA: &str =
    include_str!("../../tests/fixtures/sdp/firefox_recvonly_data.sdp");

pub(super) const FIXTURES: [(&str, &str); 6] = [
    ("chromium_recvonly", CHROMIUM_RECVONLY),
    ("chromium_sendrecv", CHROMIUM_SENDRECV),
    ("chromium_recvonly_data", CHROMIUM_RECVONLY_DATA),
    ("firefox_recvonly", FIREFOX_RECVONLY),
    ("firefox_sendrecv", FIREFOX_SENDRECV),
    ("firefox_recvonly_data", FIREFOX_RECVONLY_DATA),
];

fn local() -> LocalSession {
    LocalSession {
        session_id: 4_962_303_333_179_871_722,
        session_version: 1,
        ice_ufrag: "sMrT".into(),
        ice_pwd: "p4ssw0rdP4ssw0rdP4ssw0".into(),
        fingerprint: Fingerprint::sha256((0u8..32).collect()),
        setup: Setup::Passive,
        mid: "dc".into(),
        sctp_port: 5000,
        max_message_size: 262_144,
        candidates: vec!["candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host".into()],
        end_of_candidates: true,
        ice_options_trickle: false,
    }
}

fn video(mid: &str) -> LocalMedia {
    LocalMedia {
        kind: "video".into(),
        mid: mid.into(),
        direction: Direction::SendOnly,
        payload_types: vec![96, 97],
        attributes: vec![
            ("rtpmap".into(), "96 VP8/90000".into()),
            ("rtcp-fb".into(), "96 nack".into()),
            ("rtcp-fb".into(), "96 nack pli".into()),
            ("rtpmap".into(), "97 rtx/90000".into()),
            ("fmtp".into(), "97 apt=96".into()),
        ],
        ssrc: 0x1234_5678,
        rtx_ssrc: Some(0x0abc_def0),
        cname: "smolrtc-cname".into(),
        msid: ("cam".into(), "video".into()),
    }
}

fn pt_of(m: &RemoteMedia, encoding: &str) -> Vec<u8> {
    m.formats
        .formats
        .iter()
        .filter(|f| f.encoding.eq_ignore_ascii_case(encoding))
        .map(|f| f.pt)
        .collect()
}

#[test]
fn chromium_recvonly_offer() {
    let d = parse_description(CHROMIUM_RECVONLY).unwrap();
    assert!(d.data.is_none());
    assert_eq!(d.media.len(), 2);
    let (v, a) = (&d.media[0], &d.media[1]);
    assert_eq!((v.kind.as_str(), a.kind.as_str()), ("video", "audio"));
    assert_eq!((v.index, a.index), (0, 1));
    assert_eq!(v.mid.as_deref(), Some("0"));
    assert_eq!(v.direction, Direction::RecvOnly);
    assert!(v.rtcp_mux && v.rtcp_rsize && v.is_enabled());
    assert!(v.extmaps > 5, "extmaps counted: {}", v.extmaps);
    assert!(!pt_of(v, "H264").is_empty() && !pt_of(v, "VP8").is_empty());
    let vp8 = pt_of(v, "VP8")[0];
    let f = v.formats.formats.iter().find(|f| f.pt == vp8).unwrap();
    assert!(f.feedback.iter().any(|x| x == "nack pli"), "{f:?}");
    assert!(v.formats.find_rtx(vp8, 90_000).is_some());
    assert_eq!(pt_of(a, "opus").len(), 1);
    assert_eq!(d.bundle, ["0", "1"]);
    assert_eq!(d.transport_mid.as_deref(), Some("0"));
    assert!(!d.candidates.is_empty());
    assert_eq!(d.fingerprints[0].algorithm, "sha-256");
    assert_eq!(d.setup, Some(Setup::ActPass));
    assert_eq!(
        parse(CHROMIUM_RECVONLY).unwrap_err(),
        SdpError::NoDataSection
    );
}

#[test]
fn a_media_only_offer_gives_its_transport_alone() {
    let d = parse_description(FIREFOX_RECVONLY).unwrap();
    assert_eq!(d.data, None);
    assert_eq!(d.data_section(), None);
    assert!(!d.ice_ufrag.is_empty() && !d.ice_pwd.is_empty());
    assert!(!d.fingerprints.is_empty() && !d.candidates.is_empty());
    assert_eq!(d.transport_mid, d.sections[0].mid);
    // With a data section the transport is the data section's.
    let d = parse_description(FIREFOX_RECVONLY_DATA).unwrap();
    assert_eq!(d.transport_mid, d.data.as_ref().unwrap().mid);
    assert!(d.data_section().unwrap().is_data);
    assert!(d.end_of_candidates);
}

#[test]
fn firefox_recvonly_offer_has_no_h264() {
    let d = parse_description(FIREFOX_RECVONLY).unwrap();
    assert!(d.data.is_none());
    let v = &d.media[0];
    assert_eq!(v.direction, Direction::RecvOnly);
    assert!(pt_of(v, "H264").is_empty(), "offline Firefox has no H.264");
    assert_eq!(pt_of(v, "VP8").len(), 1);
    assert_eq!(pt_of(&d.media[1], "opus").len(), 1);
    assert_eq!(d.media[1].ssrcs.len(), 1);
    // Firefox writes its fingerprint at session level.
    assert!(!d.fingerprints.is_empty());
    assert!(d.end_of_candidates);
}

#[test]
fn sendrecv_offers_with_a_data_channel() {
    for (name, sdp) in [
        ("chromium", CHROMIUM_SENDRECV),
        ("firefox", FIREFOX_SENDRECV),
    ] {
        let d = parse_description(sdp).unwrap();
        let data = d.data.as_ref().unwrap_or_else(|| panic!("{name}: data"));
        assert_eq!(data.sctp_port, 5000, "{name}");
        assert!(
            d.media.iter().all(|m| m.direction == Direction::SendRecv),
            "{name}"
        );
        assert!(
            d.media
                .iter()
                .all(|m| !m.ssrcs.is_empty() && m.msid.is_some()),
            "{name}: {:?}",
            d.media
        );
        // parse() reads the same description.
        assert_eq!(parse(sdp).unwrap(), d, "{name}");
    }
}

#[test]
fn recvonly_offers_with_a_data_channel() {
    for (name, sdp) in [
        ("chromium", CHROMIUM_RECVONLY_DATA),
        ("firefox", FIREFOX_RECVONLY_DATA),
    ] {
        let d = parse_description(sdp).unwrap();
        assert_eq!(d.data.as_ref().map(|d| d.index), Some(2), "{name}");
        assert_eq!(d.transport_mid.as_deref(), Some("2"), "{name}");
        assert_eq!(d.bundle, ["0", "1", "2"], "{name}");
        assert_eq!(d.media.len(), 2, "{name}");
        let s = parse(sdp).unwrap();
        assert_eq!(s.data.as_ref().map(|d| d.index), Some(2));
        assert!(!s.candidates.is_empty(), "{name}");
    }
}

#[test]
fn answer_sections_are_bundled_sendonly_and_read_back() {
    use std::io::Cursor;
    for (name, sdp) in FIXTURES {
        let d = parse_description(sdp).unwrap();
        // Video answered with a track, audio rejected, data kept.
        let answers: Vec<AnswerSection> = d
            .sections
            .iter()
            .map(|s| match s.kind.as_str() {
                "video" => AnswerSection::Media(video(s.mid.as_deref().unwrap())),
                _ if s.is_data => AnswerSection::Data,
                _ => AnswerSection::Rejected,
            })
            .collect();
        let answer = write_answer_sections(&local(), &d, &answers);
        let back = parse_description(&answer)
            .unwrap_or_else(|e| panic!("{name}: our answer does not parse: {e}\n{answer}"));
        assert_eq!(back.sections.len(), d.sections.len(), "{name}");
        let v = back.media.iter().find(|m| m.kind == "video").unwrap();
        assert_eq!(v.direction, Direction::SendOnly, "{name}");
        assert!(v.rtcp_mux, "{name}");
        assert_eq!(v.ssrcs, [0x1234_5678, 0x0abc_def0], "{name}");
        assert_eq!(v.formats.find_rtx(96, 90_000), Some(97));
        let audio = back.media.iter().find(|m| m.kind == "audio").unwrap();
        assert_eq!(audio.port, 0, "{name}: audio rejected");
        let bundle: Vec<&str> = d
            .sections
            .iter()
            .filter(|s| s.kind == "video" || s.is_data)
            .map(|s| s.mid.as_deref().unwrap())
            .collect();
        if d.data.is_some() {
            assert_eq!(back.data.as_ref().unwrap().sctp_port, 5000);
        }
        assert_eq!(back.bundle, bundle, "{name}\n{answer}");
        assert_eq!(
            back.candidates.len(),
            1,
            "{name}: candidates in the first section"
        );
        assert!(answer.contains("a=ssrc-group:FID 305419896 180150000\r\n"));
        assert!(answer.contains("a=msid:cam video\r\n"));
        assert!(!answer.contains("extmap"), "no header extensions answered");
        rtc_sdp::SessionDescription::unmarshal(&mut Cursor::new(answer.as_bytes()))
            .unwrap_or_else(|e| panic!("rtc-sdp refused our answer to {name}: {e:?}\n{answer}"));
    }
}

#[test]
fn answer_rejecting_everything_has_no_bundle_group() {
    let d = parse_description(CHROMIUM_RECVONLY).unwrap();
    let answer = write_answer_sections(&local(), &d, &[]);
    assert!(!answer.contains("a=group:BUNDLE"), "{answer}");
    assert_eq!(answer.matches(" 0 UDP/TLS/RTP/SAVPF ").count(), 2);
}

#[test]
fn offer_sections_read_back() {
    use std::io::Cursor;
    let mut audio = video("a");
    audio.kind = "audio".into();
    audio.payload_types = vec![111];
    audio.attributes = vec![("rtpmap".into(), "111 opus/48000/2".into())];
    audio.rtx_ssrc = None;
    audio.ssrc = 42;
    let offer = write_offer_sections(&local(), &[video("v"), audio], true);
    let d = parse_description(&offer).unwrap();
    assert_eq!(d.bundle, ["v", "a", "dc"]);
    assert_eq!(d.setup, Some(Setup::ActPass));
    assert_eq!(d.media.len(), 2);
    assert_eq!(d.media[1].ssrcs, [42]);
    assert_eq!(pt_of(&d.media[1], "opus"), [111]);
    assert_eq!(d.data.as_ref().unwrap().index, 2);
    // The data section is the transport; the candidates are read from the first section.
    assert_eq!(d.candidates.len(), 1);
    assert!(d.end_of_candidates);
    let media_only = write_offer_sections(&local(), &[video("v")], false);
    let d = parse_description(&media_only).unwrap();
    assert!(d.data.is_none());
    assert_eq!(d.candidates.len(), 1);
    for sdp in [offer, media_only] {
        rtc_sdp::SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
            .unwrap_or_else(|e| panic!("rtc-sdp refused {sdp}: {e:?}"));
    }
}

#[test]
fn media_sections_are_read_tolerantly() {
    // pion's trailing spaces, an unreadable ssrc, a stray direction word, no rtcp-mux.
    let sdp = CHROMIUM_RECVONLY
        .replace("a=rtcp-mux\r\n", "a=ssrc:notanumber cname:x\r\na=msid:\r\n")
        .replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96  VP8/90000 ");
    let d = parse_description(&sdp).unwrap();
    assert!(!d.media[0].rtcp_mux);
    assert!(d.media[0].ssrcs.is_empty() && d.media[0].msid.is_none());
    assert_eq!(pt_of(&d.media[0], "VP8"), [96]);
}

#[test]
fn transport_section_errors_name_the_line() {
    let e =
        parse_description(&CHROMIUM_RECVONLY.replacen("a=setup:actpass", "a=setup:sideways", 1))
            .unwrap_err();
    assert!(e.to_string().contains("a=setup:sideways"), "{e}");
    // A rejected first section: the transport comes from the next one.
    let m_video = CHROMIUM_RECVONLY
        .lines()
        .find(|l| l.starts_with("m=video"))
        .unwrap();
    let port = m_video.split(' ').nth(1).unwrap();
    let sdp = CHROMIUM_RECVONLY.replacen(&format!("m=video {port} "), "m=video 0 ", 1);
    let d = parse_description(&sdp).unwrap();
    assert_eq!(d.transport_mid.as_deref(), Some("1"));
    assert_eq!(d.media[0].port, 0);
    assert!(!d.media[0].is_enabled());
    let rejected = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n";
    assert_eq!(
        parse_description(rejected).unwrap_err(),
        SdpError::NoMediaSection
    );
    let no_creds = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n";
    let e = parse_description(no_creds).unwrap_err();
    assert!(
        matches!(e, SdpError::Missing(ref m) if m.contains("ice-ufrag")),
        "{e}"
    );
}

#[test]
fn no_panic_on_cut_or_garbled_fixtures() {
    for (_, sdp) in FIXTURES {
        let mut cut = sdp.len();
        while cut > 0 {
            if let Ok(d) = parse_description(&sdp[..cut]) {
                let _ = write_answer_sections(&local(), &d, &[AnswerSection::Data]);
            }
            cut = cut.saturating_sub(97);
            while !sdp.is_char_boundary(cut) {
                cut -= 1;
            }
        }
        for line in sdp.lines() {
            let garbled = sdp.replace(line, &line.chars().rev().collect::<String>());
            let _ = parse_description(&garbled);
        }
    }
}
