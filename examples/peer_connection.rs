//! Copy/paste signaling with rawrtc's `peer-connection` command line, on the library alone:
//!
//! ```text
//! cargo run --example peer_connection -- <1|0>
//! ```
//!
//! `1` makes the offer (ICE controlling), `0` answers. The local description is printed as
//! one JSON line once gathering is complete; paste the other side's line (another run of
//! this example, `smolrtc peer`, or the page's "copy/paste" mode) and press Enter. Both sides
//! open rawrtc's pre-negotiated `cat-noises` channel (id 0), send 8192 bytes of `M` on it
//! and print what arrives. `smolrtc peer` runs rawrtc's whole channel flow.

use futures_lite::future::block_on;
use smolrtc::{ChannelInit, Config, Description, Event, PeerConnection, SdpType};
use std::process::ExitCode;

fn main() -> ExitCode {
    smolrtc::logging::init();
    let offering = match std::env::args().nth(1).as_deref() {
        Some("1") => true,
        Some("0") => false,
        _ => {
            eprintln!("usage: peer_connection <1|0>  (1 = offering, ICE controlling)");
            return ExitCode::from(2);
        }
    };
    match run(offering) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer_connection: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(offering: bool) -> Result<(), Box<dyn std::error::Error>> {
    let pc = PeerConnection::new(Config {
        name: if offering { "A" } else { "B" }.into(),
        ..Config::default()
    })?;
    let mut events = pc.events();
    let cat = block_on(pc.create_data_channel("cat-noises", ChannelInit::negotiated(0)))?;
    if offering {
        let offer = block_on(pc.create_offer())?;
        block_on(pc.set_local_description(offer))?;
        print_when_gathered(&pc, &mut events);
        block_on(pc.set_remote_description(read_remote(SdpType::Answer)?))?;
    } else {
        block_on(pc.set_remote_description(read_remote(SdpType::Offer)?))?;
        let answer = block_on(pc.create_answer())?;
        block_on(pc.set_local_description(answer))?;
        print_when_gathered(&pc, &mut events);
    }
    while let Some(e) = events.next_blocking() {
        match e {
            Event::ChannelOpen(ch) if ch == cat => {
                eprintln!("{ch} open: sending 8192 bytes");
                cat.send_blocking(vec![b'M'; 8192])?;
            }
            Event::ChannelMessage(ch, m) => eprintln!("{ch}: {} bytes", m.len()),
            Event::ConnectionState(s) => eprintln!("connection {s}"),
            Event::Error(e) => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// Waits for the end of gathering, then prints the complete local description.
fn print_when_gathered(pc: &PeerConnection, events: &mut smolrtc::EventStream) {
    while let Some(e) = events.next_blocking() {
        if matches!(e, Event::IceCandidate(None)) {
            break;
        }
    }
    if let Some(d) = block_on(pc.local_description()) {
        println!("{}", d.to_json());
    }
}

/// Reads pasted lines until one is a description of the `expected` type.
fn read_remote(expected: SdpType) -> Result<Description, std::io::Error> {
    eprintln!("Paste the remote description (JSON) and press Enter:");
    for line in std::io::stdin().lines() {
        match Description::parse_line(&line?, Some(expected)) {
            Ok(d) => return Ok(d),
            Err(why) => eprintln!("not that: {why}; paste again:"),
        }
    }
    Err(std::io::ErrorKind::UnexpectedEof.into())
}
