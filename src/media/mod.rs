//! Media, device → browser: the sans-IO core (work in progress; see the module list).

pub mod codec;
pub mod fanout;
pub mod h264;
pub mod ivf;
pub mod negotiate;
pub mod ogg;
pub mod opus;
pub mod packetize;
pub mod rtcp;
pub mod rtp_in;
pub mod sender;
pub mod source;
pub mod source_io;
pub mod srtp;
#[cfg(test)]
mod testdata;
pub mod vp8;
