//! A recorder in an embedding program: a browser's camera and microphone (or another
//! smolrtc's `add_track`) arrive through `PeerConnection::add_transceiver` and
//! `Event::Track`, and each track is written to a file as it arrives: `OUT.h264` (Annex-B)
//! or `OUT.ivf` (VP8) for video, `OUT.ogg` for Opus.
//!
//! Signaling is by hand, as in `examples/camera.rs`: paste the sender's offer (one JSON
//! line, `{"type":"offer","sdp":..}`; in a browser `pc.addTrack(..)` of a `getUserMedia`
//! stream, or transceivers with `direction: "sendonly"`), get the answer back as one JSON
//! line. It records for SECS seconds (default 10), then closes and finishes the files.
//!
//! Run: `cargo run --example record -- OUT [SECS]`, then check with
//! `ffprobe OUT.ivf` (or `.h264`, `.ogg`).

use futures_lite::future::block_on;
use smolrtc::media::writer::{AnnexBWriter, IvfWriter, OggOpusWriter};
use smolrtc::media::{Codec, Direction, MediaKind, TrackReceiver};
use smolrtc::{Config, Description, Event, PeerConnection};
use std::fs::File;
use std::io::{BufRead, BufWriter};
use std::time::{Duration, Instant};

/// Writes every frame of `track` to `OUT.<ext>` until the track ends.
fn record(mut track: TrackReceiver, out: &str) -> std::io::Result<String> {
    let ext = match track.codec() {
        Codec::H264 => "h264",
        Codec::Vp8 => "ivf",
        Codec::Opus => "ogg",
    };
    let path = format!("{out}.{ext}");
    // A new file, never an existing one overwritten.
    let file = BufWriter::new(File::create_new(&path)?);
    eprintln!("track {} ({:?}) -> {path}", track.id(), track.codec());
    match track.codec() {
        Codec::H264 => {
            let mut w = AnnexBWriter::new(file);
            while let Some(f) = track.read_frame_blocking() {
                w.write_frame(&f)?;
            }
            w.into_inner()?;
        }
        Codec::Vp8 => {
            let mut w = IvfWriter::new(file);
            while let Some(f) = track.read_frame_blocking() {
                w.write_frame(&f)?;
            }
            // Seeks back to write the frame count into the header.
            w.finish()?;
        }
        Codec::Opus => {
            let mut w = OggOpusWriter::new(file);
            while let Some(f) = track.read_frame_blocking() {
                w.write_frame(&f)?;
            }
            w.finish()?;
        }
    }
    let s = track.stats();
    eprintln!(
        "{path}: {} frames, {} dropped, {} packets lost, {} recovered by NACK",
        s.frames, s.frames_dropped, s.lost, s.recovered
    );
    Ok(path)
}

fn main() -> Result<(), smolrtc::Error> {
    smolrtc::logging::init();
    let mut args = std::env::args().skip(1);
    let out = args.next().expect("usage: record OUT [SECS]");
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);

    let pc = PeerConnection::new(Config::default())?;
    let mut events = pc.events();
    // W3C: pc.addTransceiver("video", {direction: "recvonly"}), likewise audio.
    block_on(pc.add_transceiver(MediaKind::Video, Direction::RecvOnly))?;
    block_on(pc.add_transceiver(MediaKind::Audio, Direction::RecvOnly))?;

    eprintln!("paste the sender's offer (one JSON line):");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");
    let offer = Description::from_json(line.trim())?;
    block_on(pc.set_remote_description(offer))?;
    let answer = block_on(pc.create_answer())?;
    block_on(pc.set_local_description(answer))?;

    let mut recorders = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut answered = false;
    while Instant::now() < end {
        let Some(e) = events.try_next() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        match e {
            // One thread per track: each reads its frames and writes its file.
            Event::Track(track) => {
                let out = out.clone();
                recorders.push(std::thread::spawn(move || record(track, &out)));
            }
            Event::IceCandidate(None) if !answered => {
                answered = true;
                let answer = block_on(pc.local_description()).expect("local description");
                println!("{}", answer.to_json());
            }
            Event::ConnectionState(s) => eprintln!("connection: {s}"),
            _ => {}
        }
    }
    // Closing ends the tracks: each recorder finishes its file.
    block_on(pc.close());
    for r in recorders {
        match r.join() {
            Ok(Ok(path)) => eprintln!("wrote {path}"),
            Ok(Err(e)) => eprintln!("recording failed: {e}"),
            Err(_) => eprintln!("a recorder panicked"),
        }
    }
    Ok(())
}
