//! Media made by ffmpeg for the tests (`.ci/setup` installs it): files from lavfi's test
//! sources, each made once per test binary and named by what it holds, and RTP senders.
//! Used as `common::media` and, by test files without `mod common`, through `#[path]`.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// H.264 as browsers take it: baseline without B-frames, a keyframe every 30 frames.
const H264: &[&str] = &[
    "-c:v",
    "libx264",
    "-profile:v",
    "baseline",
    "-bf",
    "0",
    "-g",
    "30",
    "-pix_fmt",
    "yuv420p",
];

const MISSING: &str = "ffmpeg is missing: apt-get install ffmpeg (.ci/setup)";

/// Tests run in parallel: one makes a file, the others wait for it.
static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `smolrtc-TAG-PID` in the temporary directory, made.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smolrtc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("media dir");
    dir
}

/// Makes `path` with ffmpeg from `args` (inputs, codecs, format: all but the output),
/// unless it is there already.
pub fn make<S: AsRef<OsStr>>(path: &Path, args: impl IntoIterator<Item = S>) -> PathBuf {
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let out = Command::new("ffmpeg")
            .args(["-y", "-loglevel", "error", "-nostdin"])
            .args(args)
            .arg(path)
            .output()
            .expect(MISSING);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path.to_owned()
}

/// `secs` seconds of lavfi `source` (e.g. `testsrc=size=320x240:rate=30`) in `codec`
/// (`H264`: an Annex-B `.h264`; `VP8`: an `.ivf` at 1 Mbit/s), in `dir`. `kbps` above 0
/// caps the bit rate (rate control with a buffer of two seconds' worth).
pub fn video(dir: &Path, codec: &str, source: &str, secs: u32, kbps: u32) -> PathBuf {
    let (ext, codec_args): (&str, &[&str]) = match codec {
        "H264" => ("h264", H264),
        "VP8" => ("ivf", &["-c:v", "libvpx", "-g", "30", "-b:v", "1M"]),
        other => panic!("no test media in {other}"),
    };
    let label: String = source
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = dir.join(format!("{label}-{secs}s-{kbps}k.{ext}"));
    let mut args: Vec<String> = ["-f", "lavfi", "-i", source, "-t", &secs.to_string()]
        .into_iter()
        .chain(codec_args.iter().copied())
        .map(String::from)
        .collect();
    if kbps > 0 {
        let (rate, buffer) = (format!("{kbps}k"), format!("{}k", kbps * 2));
        args.extend(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &buffer].map(String::from));
    }
    args.extend([
        "-f".into(),
        if ext == "h264" { "h264" } else { "ivf" }.into(),
    ]);
    make(&path, args)
}

/// `secs` seconds of a 440 Hz sine in Ogg Opus, in `dir`.
pub fn opus(dir: &Path, secs: u32) -> PathBuf {
    let path = dir.join(format!("sine-{secs}s.ogg"));
    make(
        &path,
        [
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
        ]
        .map(String::from)
        .into_iter()
        .chain([secs.to_string()])
        .chain(["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"].map(String::from)),
    )
}

/// An ffmpeg sending `secs` seconds of lavfi `source` as H.264 RTP to 127.0.0.1:`port`
/// (in real time with `realtime`, else as fast as it encodes), quiet; the caller spawns it.
pub fn h264_rtp_sender(source: &str, secs: u32, port: u16, realtime: bool) -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-loglevel", "error", "-nostdin"]);
    if realtime {
        c.arg("-re");
    }
    c.args(["-f", "lavfi", "-i", source, "-t", &secs.to_string()])
        .args(H264)
        .args(["-f", "rtp"])
        .arg(format!("rtp://127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// An H.264 file's access units as Annex-B bytes (what an encoder hands over per frame).
pub fn annexb_units(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).expect("media file");
    smolrtc::media::h264::access_units(&data)
        .iter()
        .map(|au| au.to_annexb())
        .collect()
}

/// ffprobe's view of a recorded file's first stream.
#[derive(Debug)]
pub struct Probe {
    pub codec: String,
    pub width: u64,
    pub height: u64,
    /// Frames (video) or packets (audio) read.
    pub frames: u64,
    /// Seconds from the first to the last timestamp.
    pub duration: f64,
}

pub fn ffprobe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .arg("stream=codec_name,width,height,nb_read_frames,duration:format=duration:packet=pts_time")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe is missing: apt-get install ffmpeg (.ci/setup)");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    let ivf = path.extension().is_some_and(|e| e == "ivf");
    let num = |x: &serde_json::Value| {
        x.as_u64()
            .or_else(|| x.as_str().and_then(|t| t.parse().ok()))
            .unwrap_or(0)
    };
    let secs = |x: &serde_json::Value| {
        x.as_str()
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|d| *d > 0.0)
    };
    Probe {
        codec: s["codec_name"].as_str().unwrap_or_default().to_owned(),
        width: num(&s["width"]),
        height: num(&s["height"]),
        frames: num(&s["nb_read_frames"]),
        // IVF: ffmpeg reads the header's frame count (bytes 24..28, libvpx's meaning) as
        // the length in time-base units, 1/90000 s in smolrtc's files, or none when it is
        // 0 (written to a pipe): the span of the packets' timestamps is the duration.
        duration: (!ivf)
            .then(|| secs(&s["duration"]).or_else(|| secs(&v["format"]["duration"])))
            .flatten()
            .or_else(|| {
                let pts: Vec<f64> = v["packets"]
                    .as_array()?
                    .iter()
                    .filter_map(|p| p["pts_time"].as_str()?.parse::<f64>().ok())
                    .collect();
                Some(pts.last()? - pts.first()?)
            })
            .unwrap_or(0.0),
    }
}

/// The python of the aiortc venv (`benches/setup-aiortc`, run by `.ci/setup`), or `None`
/// with a SKIPPED line when it is missing; under `CI=true` a missing venv fails the test
/// instead (CI must not pass without its aiortc interop tests).
pub fn aiortc_python() -> Option<PathBuf> {
    let cache = std::env::var_os("SMOLRTC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/smolrtc")
        });
    let py = cache.join("venv-aiortc/bin/python");
    if py.exists() {
        return Some(py);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "no aiortc venv at {py:?} under CI: .ci/setup makes it (benches/setup-aiortc)"
    );
    eprintln!(
        "*** SKIPPED: no aiortc venv at {py:?} (.ci/setup or benches/setup-aiortc makes it) ***"
    );
    None
}

/// The frame count in an IVF file's header (bytes 24..28, little-endian).
pub fn ivf_header_frames(path: &Path) -> u32 {
    let bytes = std::fs::read(path).expect("the IVF file");
    assert!(
        bytes.len() >= 32 && &bytes[..4] == b"DKIF",
        "{}: no IVF header",
        path.display()
    );
    u32::from_le_bytes(bytes[24..28].try_into().unwrap())
}
