//! A camera in an embedding program: the application's own encoder output goes to a
//! browser through `PeerConnection::add_track` and `TrackSender::write_frame`.
//!
//! Here the "encoder" is an H.264 Annex-B file (made e.g. by
//! `ffmpeg -f lavfi -i testsrc=size=640x480:rate=30 -c:v libx264 -profile:v baseline -bf 0 -g 30 -f h264 cam.h264`),
//! played in real time and looped. Signaling is by hand, as in `examples/peer_connection.rs`:
//! paste the browser's offer (one JSON line, `{"type":"offer","sdp":..}` with a recvonly
//! video transceiver), get the answer back as one JSON line.
//!
//! Run: `cargo run --example camera -- cam.h264 [fps]`

use futures_lite::future::block_on;
use smolrtc::media::{Codec, TrackInit};
use smolrtc::{Config, Description, Event, PeerConnection};
use std::io::BufRead;
use std::time::{Duration, Instant};

fn main() -> Result<(), smolrtc::Error> {
    smolrtc::logging::init();
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: camera FILE.h264 [fps]");
    let fps: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let frames: Vec<Vec<u8>> = smolrtc::media::h264::access_units(&data)
        .iter()
        .map(|au| au.to_annexb())
        .collect();
    assert!(!frames.is_empty(), "{path}: no H.264 access units");

    let pc = PeerConnection::new(Config::default())?;
    let mut events = pc.events();
    let mut track = block_on(pc.add_track(TrackInit::new(Codec::H264)))?;

    eprintln!("paste the browser's offer (one JSON line):");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");
    let offer = Description::from_json(line.trim())?;
    block_on(pc.set_remote_description(offer))?;
    let answer = block_on(pc.create_answer())?;
    block_on(pc.set_local_description(answer))?;
    while let Some(e) = events.next_blocking() {
        if matches!(e, Event::IceCandidate(None)) {
            break;
        }
    }
    let answer = block_on(pc.local_description()).expect("local description");
    println!("{}", answer.to_json());

    // The "encoder": one access unit per frame interval, looped. Keyframe requests would
    // go to a real encoder (the viewer already got the cached keyframe).
    let interval = Duration::from_secs(1) / fps;
    let start = Instant::now();
    for (n, frame) in frames.iter().cycle().enumerate() {
        while let Some(e) = events.try_next() {
            match e {
                Event::KeyframeRequest { track, cause } => {
                    eprintln!("track {track}: keyframe request ({cause:?})")
                }
                Event::ConnectionState(s) => eprintln!("connection: {s}"),
                _ => {}
            }
        }
        if !track.write_frame(frame, interval)? {
            eprintln!("frame {n} dropped (the connection is behind)");
        }
        let next = start + interval * (n as u32 + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(())
}
