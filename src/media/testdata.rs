//! Test media made by ffmpeg (Debian's), generated on first use into a cache directory under
//! the system's temp dir and reused by later runs (nothing generated is kept in git).
//!
//! Without ffmpeg the tests that need these files are skipped with a loud message, except
//! under CI (`CI` set), where a missing ffmpeg fails them: CI installs it (.ci/setup).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static LOCK: Mutex<()> = Mutex::new(());

/// Makes (once) the file `name` with `ffmpeg -y -loglevel error ARGS... OUT`; `None` when
/// ffmpeg is not installed and this is not CI.
pub fn make(name: &str, args: &[&str]) -> Option<PathBuf> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // The arguments are part of the name, so changing them makes a new file.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in args.join(" ").bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    let dir = std::env::temp_dir().join("smolrtc-media-testdata");
    let path = dir.join(format!("{h:016x}-{name}"));
    if path.exists() {
        return Some(path);
    }
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("ffmpeg is missing in CI: .ci/setup installs it");
        }
        eprintln!(
            "\n*** SKIPPED: ffmpeg not found; `apt-get install ffmpeg` to run the media file tests ***\n"
        );
        return None;
    }
    std::fs::create_dir_all(&dir).expect("create the test media dir");
    let tmp = dir.join(format!(".{h:016x}-{}-{name}", std::process::id()));
    let out = Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-nostdin"])
        .args(args)
        .arg(&tmp)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &path).expect("move the test media into place");
    Some(path)
}

/// H.264 Annex-B from x264 (`-bf 0`, a keyframe every `gop` frames), `secs` seconds of
/// testsrc at `size` and 30 fps, with `profile` (`baseline`, `main`, `high`).
#[rustfmt::skip]
pub fn h264(size: &str, profile: &str, gop: u32, secs: u32) -> Option<PathBuf> {
    let src = format!("testsrc=size={size}:rate=30");
    let g = gop.to_string();
    let t = secs.to_string();
    make(
        &format!("{size}-{profile}-g{gop}-{secs}s.h264"),
        &[
            "-f", "lavfi", "-i", &src, "-t", &t, "-c:v", "libx264", "-profile:v", profile,
            "-bf", "0", "-g", &g, "-pix_fmt", "yuv420p", "-f", "h264",
        ],
    )
}

/// VP8 in IVF from libvpx: `secs` seconds of testsrc at `size`, 30 fps, a keyframe every 30.
#[rustfmt::skip]
pub fn vp8(size: &str, secs: u32) -> Option<PathBuf> {
    let src = format!("testsrc=size={size}:rate=30");
    let t = secs.to_string();
    make(
        &format!("{size}-{secs}s.ivf"),
        &[
            "-f", "lavfi", "-i", &src, "-t", &t, "-c:v", "libvpx", "-g", "30", "-b:v", "1M",
            "-f", "ivf",
        ],
    )
}

/// Opus in Ogg from libopus: `secs` seconds of a 440 Hz sine at 48 kHz, 20 ms frames.
#[rustfmt::skip]
pub fn opus(secs: u32) -> Option<PathBuf> {
    let t = secs.to_string();
    make(
        &format!("sine-{secs}s.ogg"),
        &[
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", &t, "-c:a",
            "libopus", "-b:a", "64k", "-f", "ogg",
        ],
    )
}
