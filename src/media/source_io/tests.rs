//! Sources against real files, real child processes and real RTP from ffmpeg on 127.0.0.1.

use super::*;
use crate::media::fanout::Track;
use crate::media::testdata;

/// Runs `spec` and collects `n` frames (20 s guard against a hang), then drops the receiver
/// and checks the source ended cleanly.
fn collect(spec: &str, opts: SourceOptions, n: usize) -> Vec<SourceFrame> {
    let spec = SourceSpec::parse(spec).unwrap();
    let (tx, rx) = async_channel::bounded(4);
    async_io::block_on(async move {
        let task = async move { run(spec, opts, tx).await };
        let take = async {
            let mut got = Vec::new();
            while got.len() < n {
                got.push(rx.recv().await.expect("the source ended early"));
            }
            drop(rx);
            got
        };
        let guard = async {
            Timer::after(Duration::from_secs(20)).await;
            panic!("source test timed out");
        };
        // The source task runs until the receiver is dropped, then returns Ok.
        let (got, result) = future::or(future::zip(take, task), guard).await;
        assert!(result.is_ok(), "{result:?}");
        got
    })
}

fn fast(name: &str) -> SourceOptions {
    let mut o = SourceOptions::new(name);
    o.backoff = Backoff::with(
        Duration::from_millis(10),
        Duration::from_millis(40),
        Duration::from_secs(10),
    );
    o
}

fn check_timeline(frames: &[SourceFrame], step: u32, gop: usize) {
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.frame.timestamp, step * i as u32, "frame {i}");
        assert_eq!(f.frame.keyframe, i % gop == 0, "frame {i}");
    }
}

#[test]
fn a_file_loops_paced_on_one_timeline() {
    let Some(path) = testdata::h264("318x242", "baseline", 10, 1) else {
        return;
    };
    // 30 frames per pass at 240 fps: 70 frames are two loops and a bit, in ~0.3 s.
    let frames = collect(&format!("file:{}?fps=240", path.display()), fast("f"), 70);
    assert!(frames.iter().all(|f| f.codec == Codec::H264));
    check_timeline(&frames, 375, 10);
    // Paced: 69 frame intervals of 1/240 s cannot arrive faster than ~0.29 s.
    let span = frames[69].arrival - frames[0].arrival;
    assert!(span >= Duration::from_millis(280), "{span:?}");
}

#[test]
fn a_file_that_is_not_its_format_is_an_error() {
    let dir = std::env::temp_dir().join(format!("smolrtc-src-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("noise.h264");
    std::fs::write(&bad, [0x55u8; 5000]).unwrap();
    let (tx, _rx) = async_channel::bounded(4);
    let spec = SourceSpec::parse(&format!("file:{}", bad.display())).unwrap();
    let err = async_io::block_on(run(spec, fast("bad"), tx)).unwrap_err();
    assert!(err.to_string().contains("no frames"), "{err}");
    let spec = SourceSpec::parse(&format!("file:{}/missing.ivf", dir.display())).unwrap();
    let (tx, _rx) = async_channel::bounded(4);
    let err = async_io::block_on(run(spec, fast("missing"), tx)).unwrap_err();
    assert!(err.to_string().contains("No such file"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn exec_restarts_the_command_and_the_timeline_goes_on() {
    let Some(path) = testdata::h264("318x242", "baseline", 10, 1) else {
        return;
    };
    // `cat` ends after 30 frames; 45 frames need one restart.
    let frames = collect(
        &format!("exec:cat {}?fps=240", path.display()),
        fast("e"),
        45,
    );
    check_timeline(&frames, 375, 10);
}

#[test]
fn exec_detects_ivf_and_a_live_pipe_is_not_paced() {
    let (Some(ivf), Some(h264)) = (
        testdata::vp8("320x240", 1),
        testdata::h264("318x242", "baseline", 10, 1),
    ) else {
        return;
    };
    let frames = collect(&format!("exec:cat {}", ivf.display()), fast("i"), 5);
    assert!(frames.iter().all(|f| f.codec == Codec::Vp8));
    assert!(frames[0].frame.keyframe && !frames[1].frame.keyframe);
    assert_eq!(frames[4].frame.timestamp, 4 * 3000);
    // Live Annex-B (no fps): every frame of the file, stamped by arrival, the last one
    // ended by the idle flush or the pipe's end.
    let frames = collect(&format!("exec:cat {}", h264.display()), fast("l"), 30);
    assert!(frames[0].frame.keyframe);
    assert!(frames
        .windows(2)
        .all(|w| w[1].frame.timestamp >= w[0].frame.timestamp));
}

#[test]
fn rtp_from_ffmpeg_is_framed_and_its_port_is_exclusive() {
    if std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_err()
    {
        eprintln!("\n*** SKIPPED: ffmpeg not found ***\n");
        assert!(std::env::var_os("CI").is_none(), "ffmpeg is missing in CI");
        return;
    }
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = SourceSpec::parse(&format!("rtp://127.0.0.1:{port}?codec=h264")).unwrap();
    let (tx, rx) = async_channel::bounded(64);
    let frames = async_io::block_on(async {
        let source = async { run(spec.clone(), fast("rtp"), tx).await };
        let drive = async {
            // The port is ours now: a second source on it fails clearly.
            Timer::after(Duration::from_millis(50)).await;
            let (tx2, _rx2) = async_channel::bounded(4);
            let err = run(spec.clone(), fast("rtp2"), tx2).await.unwrap_err();
            assert!(err.to_string().contains("cannot bind"), "{err}");
            let mut child = std::process::Command::new("ffmpeg")
                .args(["-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i"])
                .arg("testsrc=size=320x240:rate=30")
                .args([
                    "-t",
                    "1",
                    "-c:v",
                    "libx264",
                    "-profile:v",
                    "baseline",
                    "-bf",
                    "0",
                ])
                .args(["-g", "10", "-pix_fmt", "yuv420p", "-f", "rtp"])
                .arg(format!("rtp://127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let mut got = Vec::new();
            while got.len() < 20 {
                got.push(rx.recv().await.unwrap());
            }
            let _ = child.kill();
            let _ = child.wait();
            drop(rx);
            got
        };
        let guard = async {
            Timer::after(Duration::from_secs(20)).await;
            panic!("rtp test timed out");
        };
        // A socket source notices a dropped receiver at its next datagram (or when its task
        // is dropped, as here): it is not awaited to the end.
        let source = async {
            let r = source.await;
            panic!("the source ended: {r:?}");
        };
        future::or(future::or(drive, source), guard).await
    });
    assert!(
        frames[0].frame.keyframe,
        "the first frame handed on is a keyframe"
    );
    // The pass-through frames carry the SPS in band: the track learns the size from it.
    let mut track = Track::new(Codec::H264);
    for f in frames.iter().cloned() {
        track.handle_frame(f.arrival, f.frame);
    }
    let s = track.stats(frames[19].arrival);
    assert_eq!((s.width, s.height), (Some(320), Some(240)));
    assert!(s.keyframes >= 2);
    assert!(frames
        .windows(2)
        .all(|w| w[1].frame.timestamp.wrapping_sub(w[0].frame.timestamp) == 3000));
}
