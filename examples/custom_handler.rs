//! A device service with a handler of your own next to the built-in ones.
//!
//! Channels labelled `shout` get every text message back in capitals, and a binary message
//! back as its length. Everything else (`echo`, `discard`, `chargen`, the page) is as in
//! `smolrtc serve`.
//!
//! Run: `cargo run --example custom_handler`, open http://127.0.0.1:8888, and open a channel
//! labelled `shout` from the page's send box (or any client).

use smolrtc::service::apps::{ChannelEvent, ChannelEvents};
use smolrtc::service::{Service, ServiceConfig};
use smolrtc::{DataChannel, Message};

/// The handler: runs for as long as the channel is open.
async fn shout(channel: DataChannel, events: ChannelEvents) {
    while let Ok(event) = events.recv().await {
        let reply = match event {
            ChannelEvent::Message(Message::Text(t)) => Message::Text(t.to_uppercase()),
            ChannelEvent::Message(Message::Binary(b)) => {
                Message::Text(format!("{} bytes", b.len()))
            }
            ChannelEvent::BufferedAmountLow => continue,
        };
        if channel.send(reply).await.is_err() {
            break;
        }
    }
}

fn main() -> smolrtc::Result<()> {
    smolrtc::logging::init();
    let mut service = Service::new(ServiceConfig::default());
    service.handle("shout", shout);
    service.run()
}
