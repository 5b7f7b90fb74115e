//! Publish to a second board whose WHEP viewers watch it (issue 22): `serve --publish`
//! pushes a file source to a second `smolrtc serve`, which takes it at `/whip/cam` into an
//! `rtp://` sink and serves that RTP again as stream `relay` (`--video relay=rtp://..`),
//! as a cloud node running the same binary would; a WHEP viewer (a library peer) receives
//! 60 frames from it and ffprobe decodes them. Needs ffmpeg (`.ci/setup`).

mod common;

#[path = "common/publish.rs"]
mod fixture;

use common::{http, media};
use fixture::*;
use smolrtc::media::{Codec, Direction, MediaKind};
use smolrtc::{Description, Event, SdpType};
use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

/// A free UDP port on 127.0.0.1 (the published stream has no audio for the sink's PORT+2).
fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_published_stream_is_watched_over_whep_at_the_second_serve() {
    let dir = temp_dir("whep");
    let port = free_udp_port();
    let receiver = Serve::start(
        &dir,
        "receiver",
        0,
        false,
        &[
            "--sink",
            &format!("cam=rtp://127.0.0.1:{port}"),
            "--video",
            &format!("relay=rtp://127.0.0.1:{port}?codec=h264"),
        ],
    );
    let publisher = publisher(&dir, "publisher", &source(), &whip(receiver.addr), &[]);
    let out = dir.join("watched.h264");
    let frames = common::run(async {
        let mut viewer = common::Peer::new("whep-viewer");
        viewer
            .pc
            .add_transceiver(MediaKind::Video, Direction::RecvOnly)
            .await
            .unwrap();
        // A channel too (see tests/ingest.rs' relay test: a lone rejected data section).
        viewer.channel("x", smolrtc::ChannelInit::default()).await;
        let offer = viewer.pc.create_offer().await.unwrap();
        viewer.pc.set_local_description(offer).await.unwrap();
        let offer = viewer.complete_description().await;
        // `503` until the relayed stream's first keyframe arrived.
        let until = Instant::now() + PATIENCE;
        let answer = loop {
            let r = http::request(
                receiver.addr,
                "POST",
                "/whep/relay",
                Some("application/sdp"),
                offer.sdp.as_bytes(),
            );
            if r.status == 201 {
                break r.text();
            }
            assert_eq!(r.status, 503, "{}", r.text());
            assert!(
                Instant::now() < until,
                "{}\n{}",
                receiver.log(),
                publisher.log()
            );
            async_io::Timer::after(Duration::from_millis(200)).await;
        };
        viewer
            .pc
            .set_remote_description(Description {
                kind: SdpType::Answer,
                sdp: answer,
            })
            .await
            .unwrap();
        let until = Instant::now() + PATIENCE;
        let mut rx = loop {
            match common::next_until(&mut viewer.events, until).await {
                common::Next::Event(Event::Track(t)) => break t,
                common::Next::Event(_) => {}
                _ => panic!("no track: {}", receiver.log()),
            }
        };
        assert_eq!(rx.codec(), Codec::H264);
        // 60 frames from a keyframe on, written as Annex-B for ffprobe.
        let mut file = std::fs::File::create(&out).unwrap();
        let mut n = 0u64;
        while n < 60 {
            let f = futures_lite::future::or(async { rx.read_frame().await }, async {
                async_io::Timer::after(PATIENCE).await;
                None
            })
            .await
            .expect("the relayed stream goes on");
            if n == 0 && !f.keyframe {
                continue;
            }
            file.write_all(&f.data).unwrap();
            n += 1;
        }
        viewer.pc.close().await;
        n
    });
    let media::Probe {
        codec,
        width: w,
        height: h,
        frames: decoded,
        ..
    } = media::ffprobe(&out);
    println!("watched over WHEP: {codec} {w}x{h}, {decoded} of {frames} frames decoded");
    assert_eq!((codec.as_str(), w, h), ("h264", 320, 240));
    assert!(decoded >= frames - 2, "{decoded} of {frames}");
    assert_eq!(publish_state(&publisher, "cam")["state"], "connected");
    let _ = publisher.stop();
    let _ = receiver.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
