//! Media, device → browser: the sans-IO core (work in progress; see the module list).

pub mod codec;
pub mod h264;
pub mod ivf;
pub mod negotiate;
pub mod ogg;
pub mod opus;
#[cfg(test)]
mod testdata;
pub mod vp8;
