//! SOURCE parsing, the reader on real ffmpeg files (looping, pipes), pacing, backoff.

use super::*;
use crate::media::testdata;

fn parse(s: &str) -> Result<SourceSpec, SourceSpecError> {
    SourceSpec::parse(s)
}

#[test]
fn the_issue_forms_parse() {
    assert_eq!(
        parse("rtp://127.0.0.1:5004?codec=h264"),
        Ok(SourceSpec::Rtp {
            addr: "127.0.0.1:5004".parse().unwrap(),
            codec: Codec::H264
        })
    );
    assert_eq!(
        parse("rtp://[::1]:5006?codec=OPUS").unwrap().codec(),
        Some(Codec::Opus)
    );
    assert_eq!(
        parse("file:/tmp/cam.h264?fps=25"),
        Ok(SourceSpec::File {
            path: "/tmp/cam.h264".into(),
            format: FileFormat::AnnexB,
            fps: Some(Fps { num: 25, den: 1 })
        })
    );
    assert_eq!(parse("file:cam.264").unwrap().codec(), Some(Codec::H264));
    assert_eq!(parse("file:cam.IVF").unwrap().codec(), Some(Codec::Vp8));
    assert_eq!(parse("file:mic.ogg").unwrap().codec(), Some(Codec::Opus));
    assert_eq!(parse("file:mic.opus").unwrap().codec(), Some(Codec::Opus));
    assert_eq!(
        parse("exec:rpicam-vid -t 0 --inline --intra 30 -o -"),
        Ok(SourceSpec::Exec {
            command: "rpicam-vid -t 0 --inline --intra 30 -o -".into(),
            fps: None
        })
    );
    assert_eq!(
        parse("exec:cat /tmp/a.h264?fps=30000/1001"),
        Ok(SourceSpec::Exec {
            command: "cat /tmp/a.h264".into(),
            fps: Some(Fps {
                num: 30000,
                den: 1001
            })
        })
    );
    // A '?' inside a command that is not a query stays in the command.
    assert_eq!(
        parse("exec:curl -s http://cam/stream?raw"),
        Ok(SourceSpec::Exec {
            command: "curl -s http://cam/stream?raw".into(),
            fps: None
        })
    );
    assert_eq!(parse("stdin:"), Ok(SourceSpec::Stdin { fps: None }));
    assert_eq!(
        parse("stdin:?fps=30"),
        Ok(SourceSpec::Stdin {
            fps: Some(Fps::DEFAULT)
        })
    );
}

#[test]
fn bad_sources_are_clear_errors() {
    use SourceSpecError::*;
    let cases: &[(&str, SourceSpecError, &str)] = &[
        (
            "http://cam/x",
            UnknownScheme("http://cam/x".into()),
            "expected rtp://",
        ),
        ("cam.h264", UnknownScheme("cam.h264".into()), "file:PATH"),
        ("rtp://127.0.0.1:5004", MissingCodec, "?codec=h264|vp8|opus"),
        (
            "rtp://127.0.0.1:5004?codec=av1",
            UnknownCodec("av1".into()),
            "h264, vp8 or opus",
        ),
        (
            "rtp://localhost:5004?codec=h264",
            BadAddress("localhost:5004".into()),
            "IP:PORT",
        ),
        (
            "rtp://127.0.0.1:0?codec=h264",
            BadAddress("127.0.0.1:0".into()),
            "IP:PORT",
        ),
        (
            "rtp://127.0.0.1:5004?codec=h264&x=1",
            UnknownParameter("x".into()),
            "\"x\"",
        ),
        (
            "file:cam.mp4",
            UnknownExtension(".mp4".into()),
            ".ivf (VP8)",
        ),
        ("file:cam", UnknownExtension(".".into()), ".h264"),
        ("file:cam.h264?fps=0", BadFps("0".into()), "(0, 240]"),
        ("file:cam.h264?fps=abc", BadFps("abc".into()), "29.97"),
        ("file:cam.h264?fps=241", BadFps("241".into()), "240"),
        (
            "file:cam.ivf?fps=30",
            FpsNotApplicable(FileFormat::Ivf),
            "IVF files",
        ),
        (
            "file:cam.h264?speed=2",
            UnknownParameter("speed".into()),
            "speed",
        ),
        ("file:", Empty("file path"), "empty file path"),
        ("exec:  ", Empty("exec command"), "empty exec command"),
        ("stdin:foo", UnknownScheme("stdin:foo".into()), "stdin:"),
    ];
    for (src, want, text) in cases {
        let got = parse(src).unwrap_err();
        assert_eq!(&got, want, "{src}");
        assert!(got.to_string().contains(text), "{src}: {got}");
    }
    assert!(parse("file:a.h264")
        .unwrap()
        .check_kind(MediaKind::Video)
        .is_ok());
    assert!(parse("exec:x")
        .unwrap()
        .check_kind(MediaKind::Video)
        .is_ok());
    let e = parse("file:a.h264")
        .unwrap()
        .check_kind(MediaKind::Audio)
        .unwrap_err();
    assert!(e.to_string().contains("--video"), "{e}");
    let e = parse("file:a.ogg")
        .unwrap()
        .check_kind(MediaKind::Video)
        .unwrap_err();
    assert!(e.to_string().contains("--audio"), "{e}");
}

#[test]
fn fps_forms() {
    let f = |s| Fps::parse(s).map(|f| (f.num, f.den));
    assert_eq!(f("30"), Some((30, 1)));
    assert_eq!(f("29.97"), Some((2997, 100)));
    assert_eq!(f("30000/1001"), Some((30000, 1001)));
    assert_eq!(f(".5"), Some((5, 10)));
    assert_eq!(f("240"), Some((240, 1)));
    for bad in [
        "0",
        "241",
        "30/0",
        "-1",
        "1e3",
        "30.",
        "1.2345",
        "",
        "4294967295.9",
    ] {
        assert_eq!(f(bad), None, "{bad}");
    }
    assert_eq!(Fps::DEFAULT.ticks(2, 90_000), 6000);
    assert_eq!(Fps::parse("30000/1001").unwrap().ticks(30, 90_000), 90_090);
    assert_eq!(Fps::parse("29.97").unwrap().to_string(), "2997/100");
}

/// Reads `data` in `chunk`-sized pieces, `passes` times (a looping file).
fn read(r: &mut SourceReader, data: &[u8], chunk: usize, passes: usize) -> Vec<TimedFrame> {
    let now = Instant::now();
    let mut out = Vec::new();
    for pass in 0..passes {
        if pass > 0 {
            r.restart();
        }
        for c in data.chunks(chunk) {
            r.push(c);
            while let Some(f) = r.poll(now) {
                out.push(f.unwrap());
            }
        }
        out.extend(r.end_of_input(now).into_iter().map(Result::unwrap));
    }
    out
}

#[test]
fn an_h264_file_loops_on_one_timeline_at_its_vui_rate() {
    let Some(path) = testdata::h264("318x242", "baseline", 10, 1) else {
        return;
    };
    let data = std::fs::read(path).unwrap();
    let mut r = SourceReader::file(FileFormat::AnnexB, None);
    let frames = read(&mut r, &data, 1000, 2);
    assert_eq!(frames.len(), 60);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.position, 3000 * i as u64, "30 fps from the SPS's VUI");
        assert_eq!(f.frame.timestamp, 3000 * i as u32);
        assert_eq!(f.frame.keyframe, i % 10 == 0);
        assert!(f.paced);
    }
    // fps given: it wins.
    let mut r = SourceReader::file(FileFormat::AnnexB, Fps::parse("10"));
    let frames = read(&mut r, &data, 4096, 1);
    assert_eq!(frames[1].position, 9000);
}

#[test]
fn ivf_and_ogg_files_loop_on_their_own_timestamps() {
    let (Some(ivf), Some(ogg)) = (testdata::vp8("320x240", 1), testdata::opus(1)) else {
        return;
    };
    let mut r = SourceReader::file(FileFormat::Ivf, None);
    let frames = read(&mut r, &std::fs::read(ivf).unwrap(), 333, 2);
    assert_eq!(frames.len(), 60);
    assert!(frames
        .iter()
        .enumerate()
        .all(|(i, f)| f.position == 3000 * i as u64));
    assert!(frames[0].frame.keyframe && frames[30].frame.keyframe && !frames[1].frame.keyframe);
    let mut r = SourceReader::file(FileFormat::Ogg, None);
    let packets = read(&mut r, &std::fs::read(ogg).unwrap(), 500, 2);
    let per_pass = packets.len() / 2;
    assert!(per_pass >= 50);
    assert!(packets
        .windows(2)
        .all(|w| w[1].position == w[0].position + 960));
    assert_eq!(packets[per_pass].position, 960 * per_pass as u64);
}

#[test]
fn pipes_detect_ivf_and_live_annex_b_takes_arrival_time() {
    let (Some(ivf), Some(h264)) = (
        testdata::vp8("320x240", 1),
        testdata::h264("318x242", "baseline", 10, 1),
    ) else {
        return;
    };
    let mut r = SourceReader::pipe(None);
    let frames = read(&mut r, &std::fs::read(ivf).unwrap(), 3, 1);
    assert_eq!(r.codec(), Some(Codec::Vp8));
    assert_eq!(frames.len(), 30);
    // Live Annex-B: the position is the arrival time since the first frame.
    let data = std::fs::read(h264).unwrap();
    let mut r = SourceReader::pipe(None);
    let t0 = Instant::now();
    r.push(&data[..data.len() / 2]);
    let first = r.poll(t0).unwrap().unwrap();
    assert_eq!(r.codec(), Some(Codec::H264));
    assert_eq!(first.position, 0);
    assert!(!first.paced);
    let second = r.poll(t0 + Duration::from_millis(100)).unwrap().unwrap();
    assert_eq!(second.position, 9000);
    // The pipe goes idle: the complete access units and the pending one come out now.
    let mut complete = 0;
    while r.poll(t0).is_some() {
        complete += 1;
    }
    let pending = r.flush_idle(t0 + Duration::from_millis(200));
    assert_eq!(pending.len(), 1);
    assert!(complete > 5);
    // A restarted command: detection again, the timeline goes on.
    r.restart();
    r.push(&data);
    let again = r.poll(t0 + Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(again.position, 90_000);
    assert!(again.frame.keyframe);
}

#[test]
fn garbage_pipes_give_errors_not_panics() {
    let mut r = SourceReader::pipe(Fps::parse("30"));
    let mut x = 1u32;
    let now = Instant::now();
    let mut errors = 0;
    for _ in 0..200 {
        let chunk: Vec<u8> = (0..97)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if x >> 30 == 0 {
                    0
                } else {
                    (x >> 16) as u8
                }
            })
            .collect();
        r.push(&chunk);
        while let Some(f) = r.poll(now) {
            errors += usize::from(f.is_err());
        }
    }
    let _ = r.end_of_input(now);
    assert!(errors > 0);
    let mut r = SourceReader::file(FileFormat::Ogg, None);
    r.push(b"this is not ogg at all");
    assert!(matches!(r.poll(now), Some(Err(_))));
}

#[test]
fn pacing_follows_the_timeline_and_never_accumulates_lateness() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut p = Pacer::new(90_000, ms(100));
    assert_eq!(p.due(1_000, t0), t0);
    assert_eq!(
        p.due(1_000 + 3000, t0),
        t0 + ms(33) + Duration::from_micros(333)
    );
    assert_eq!(p.due(1_000 + 90_000, t0 + ms(500)), t0 + ms(1000));
    // 150 ms behind: re-anchored at now, and the next frame is paced from there.
    let late = t0 + ms(1150) + ms(34);
    assert_eq!(p.due(1_000 + 93_000 + 3000, late), late);
    assert_eq!(
        p.due(1_000 + 99_000, late),
        late + ms(33) + Duration::from_micros(333)
    );
    // Slightly late (within max_late) keeps the anchor.
    assert_eq!(
        p.due(1_000 + 102_000, late + ms(80)),
        late + ms(66) + Duration::from_micros(666)
    );
}

#[test]
fn backoff_doubles_and_resets_after_a_healthy_run() {
    let s = Duration::from_secs;
    let mut b = Backoff::with(Duration::from_millis(500), s(4), s(10));
    let got: Vec<Duration> = (0..6).map(|_| b.exited(s(1))).collect();
    assert_eq!(
        got,
        [Duration::from_millis(500), s(1), s(2), s(4), s(4), s(4)]
    );
    assert_eq!(b.exited(s(60)), Duration::from_millis(500));
}

#[test]
fn a_file_of_the_wrong_format_errs_once_then_stays_quiet() {
    let not_it = [0x00u8, 0x00, 0x00, 0x01, 0x67, 0x42].repeat(20);
    let t0 = Instant::now();
    for format in [FileFormat::Ivf, FileFormat::Ogg] {
        let mut r = SourceReader::file(format, None);
        r.push(&not_it);
        // One error, then nothing (IVF and Ogg readers repeat theirs forever).
        assert!(matches!(r.poll(t0), Some(Err(_))), "{format:?}");
        assert!(r.poll(t0).is_none(), "{format:?}");
        r.push(&not_it);
        assert!(r.poll(t0).is_none(), "{format:?}");
        assert!(r.end_of_input(t0).is_empty(), "{format:?}");
        assert_eq!(r.frames_this_pass(), 0);
        // The next pass reads again (and fails again).
        r.restart();
        r.push(&not_it);
        assert!(matches!(r.poll(t0), Some(Err(_))), "{format:?}");
    }
}
