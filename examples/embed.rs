//! Embedding smolrtc in a host program, the way rawrtc ran inside a kore task thread.
//!
//! The peer connections live on the smolrtc thread; the host program drives them from its
//! own threads through `Send` handles with plain blocking calls — no executor of its own.
//! Here a "task thread" answers and echoes, while the main thread offers and sends.
//!
//! Run: `cargo run --example embed`

use futures_lite::future::block_on;
use smolrtc::{ChannelInit, Config, Event, PeerConnection};
use std::sync::mpsc;

/// The local description once every candidate is in it (non-trickle signaling).
fn complete(pc: &PeerConnection, events: &mut smolrtc::EventStream) -> smolrtc::Description {
    while let Some(e) = events.next_blocking() {
        if matches!(e, Event::IceCandidate(None)) {
            break;
        }
    }
    block_on(pc.local_description()).expect("local description")
}

fn main() -> Result<(), smolrtc::Error> {
    smolrtc::logging::init();
    let (offer_tx, offer_rx) = mpsc::channel();
    let (answer_tx, answer_rx) = mpsc::channel();

    // The host's task thread: owns an answering peer, echoes every message it gets.
    let task = std::thread::spawn(move || -> Result<(), smolrtc::Error> {
        let pc = PeerConnection::new(Config::loopback("task"))?;
        let mut events = pc.events();
        let offer = offer_rx.recv().expect("offer");
        block_on(pc.set_remote_description(offer))?;
        let answer = block_on(pc.create_answer())?;
        block_on(pc.set_local_description(answer))?;
        answer_tx.send(complete(&pc, &mut events)).expect("answer");
        while let Some(e) = events.next_blocking() {
            match e {
                Event::ChannelMessage(ch, m) => {
                    println!("task thread: got {m:?} on {ch}, echoing");
                    ch.send_blocking(m)?;
                }
                Event::ChannelClosed(_) => break,
                _ => {}
            }
        }
        block_on(pc.close());
        Ok(())
    });

    // The main thread: offers, opens a channel, sends, waits for the echo.
    let pc = PeerConnection::new(Config::loopback("main"))?;
    let mut events = pc.events();
    let channel = block_on(pc.create_data_channel("hello", ChannelInit::default()))?;
    let offer = block_on(pc.create_offer())?;
    block_on(pc.set_local_description(offer))?;
    offer_tx.send(complete(&pc, &mut events)).expect("offer");
    block_on(pc.set_remote_description(answer_rx.recv().expect("answer")))?;
    while let Some(e) = events.next_blocking() {
        match e {
            Event::ChannelOpen(_) => channel.send_blocking("hello from the main thread")?,
            Event::ChannelMessage(_, m) => {
                println!("main thread: echo {m:?}");
                break;
            }
            Event::Error(e) => return Err(e),
            _ => {}
        }
    }
    channel.close();
    task.join().expect("task thread")?;
    block_on(pc.close());
    Ok(())
}
