//! Opus packets: the duration a packet's TOC byte says it holds (RFC 6716 §3.1).

/// The duration of an Opus packet in 48 kHz samples, from its TOC byte (and, for code 3,
/// its frame count byte). `None` for an empty packet, a code 3 packet without its count, or
/// more than 120 ms (RFC 6716 §3.2.5).
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes in 48 kHz samples: SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let samples = frame * frames;
    (frames > 0 && samples <= 5760).then_some(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_durations() {
        // config 31 (CELT FB 20 ms), code 0: what libopus sends at 20 ms.
        assert_eq!(packet_samples(&[0xfc, 0]), Some(960));
        // config 1 (SILK NB 20 ms), code 1: two frames.
        assert_eq!(packet_samples(&[0x09]), Some(1920));
        // config 3 (SILK 60 ms), code 3 with two frames: 120 ms, the maximum.
        assert_eq!(packet_samples(&[0x1b, 0x02]), Some(5760));
        assert_eq!(packet_samples(&[0x1b, 0x03]), None, "180 ms");
        assert_eq!(packet_samples(&[0x1b, 0x00]), None, "zero frames");
        assert_eq!(packet_samples(&[0x1b]), None);
        assert_eq!(packet_samples(&[]), None);
        // config 16 (CELT NB 2.5 ms).
        assert_eq!(packet_samples(&[0x80]), Some(120));
        // config 13 (hybrid SWB 20 ms).
        assert_eq!(packet_samples(&[0x68]), Some(960));
    }
}
