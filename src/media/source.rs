//! Sources, sans-IO: the SOURCE URL forms of `--video NAME=SOURCE` / `--audio NAME=SOURCE`,
//! the reader that turns a source's bytes into timed frames, pacing, and restart backoff.
//! The I/O that feeds them is in [`super::source_io`].
//!
//! | SOURCE | media | timestamps |
//! |---|---|---|
//! | `rtp://127.0.0.1:PORT?codec=h264\|vp8\|opus` | RTP passed through ([`super::rtp_in`]) | the sender's |
//! | `file:PATH[?fps=N]` (`.h264`/`.264`, `.ivf`, `.ogg`/`.opus`) | Annex-B H.264, VP8 IVF, Opus Ogg; looped | `fps` (default: the SPS's VUI, else 30), IVF's, Ogg's |
//! | `exec:COMMAND[?fps=N]` | Annex-B H.264 or IVF (told by `DKIF`) on COMMAND's stdout | `fps`, or arrival time when absent |
//! | `stdin:[?fps=N]` | Annex-B H.264 or IVF on standard input | as `exec:` |
//!
//! A `?name=value` tail is the query: the last `?` followed by `name=value` pairs with no
//! spaces. Unknown names, a bad `fps` (a number or fraction in (0, 240]), a missing or unknown
//! `codec`, an unknown extension or scheme are errors that name what is accepted.

use super::codec::{Codec, MediaKind};
use super::h264::{AccessUnitAssembler, AnnexBSplitter};
use super::ivf::IvfReader;
use super::ogg::{OggError, OggOpusReader};
use super::packetize::{Frame, FrameData};
use super::vp8;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Frames per second as a fraction (`30`, `29.97` = 2997/100, `30000/1001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fps {
    /// Numerator.
    pub num: u32,
    /// Denominator.
    pub den: u32,
}

impl Fps {
    /// The rate most cameras use when nothing says otherwise.
    pub const DEFAULT: Fps = Fps { num: 30, den: 1 };

    /// Reads `30`, `29.97` or `30000/1001`; `None` unless in (0, 240] fps.
    pub fn parse(s: &str) -> Option<Fps> {
        let (num, den) = if let Some((n, d)) = s.split_once('/') {
            (n.parse::<u32>().ok()?, d.parse::<u32>().ok()?)
        } else if let Some((i, f)) = s.split_once('.') {
            if f.is_empty() || f.len() > 3 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let den = 10u32.pow(f.len() as u32);
            let i: u32 = if i.is_empty() { 0 } else { i.parse().ok()? };
            (i.checked_mul(den)?.checked_add(f.parse().ok()?)?, den)
        } else {
            (s.parse::<u32>().ok()?, 1)
        };
        let ok = num > 0 && den > 0 && u64::from(num) <= 240 * u64::from(den);
        ok.then_some(Fps { num, den })
    }

    /// The clock ticks at `clock_rate` of frame `index`: `index × clock_rate / fps`.
    pub fn ticks(self, index: u64, clock_rate: u32) -> u64 {
        (u128::from(index) * u128::from(clock_rate) * u128::from(self.den) / u128::from(self.num))
            as u64
    }
}

impl fmt::Display for Fps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// The container a file holds, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// `.h264`, `.264`: Annex-B H.264.
    AnnexB,
    /// `.ivf`: VP8.
    Ivf,
    /// `.ogg`, `.opus`: Opus.
    Ogg,
}

impl FileFormat {
    /// The codec of the format.
    pub fn codec(self) -> Codec {
        match self {
            FileFormat::AnnexB => Codec::H264,
            FileFormat::Ivf => Codec::Vp8,
            FileFormat::Ogg => Codec::Opus,
        }
    }
}

/// A parsed SOURCE; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `rtp://ADDR:PORT?codec=..`.
    Rtp {
        /// The address to bind.
        addr: SocketAddr,
        /// What the RTP carries.
        codec: Codec,
    },
    /// `file:PATH[?fps=N]`.
    File {
        /// The file.
        path: PathBuf,
        /// Its container.
        format: FileFormat,
        /// Frame rate for Annex-B files.
        fps: Option<Fps>,
    },
    /// `exec:COMMAND[?fps=N]`.
    Exec {
        /// Run with `sh -c`.
        command: String,
        /// Frame rate for Annex-B output (pacing and timestamps); arrival time when absent.
        fps: Option<Fps>,
    },
    /// `stdin:[?fps=N]`.
    Stdin {
        /// As for `exec:`.
        fps: Option<Fps>,
    },
}

/// A SOURCE that cannot be used, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpecError {
    /// No `scheme:` or an unknown one.
    UnknownScheme(String),
    /// `rtp://` without `?codec=`.
    MissingCodec,
    /// A codec name that is not h264, vp8 or opus.
    UnknownCodec(String),
    /// An `rtp://` address that is not `IP:PORT` with a port from 1.
    BadAddress(String),
    /// A bad `fps` value.
    BadFps(String),
    /// A query parameter this scheme does not take.
    UnknownParameter(String),
    /// A file extension that names no supported container.
    UnknownExtension(String),
    /// `fps` on a file that carries its own timestamps.
    FpsNotApplicable(FileFormat),
    /// `file:` without a path or `exec:` without a command.
    Empty(&'static str),
    /// A video source for an audio track, or the other way round.
    WrongKind {
        /// The track kind asked for.
        want: MediaKind,
        /// The source's codec.
        codec: Codec,
    },
}

impl fmt::Display for SourceSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpecError::UnknownScheme(s) => write!(
                f,
                "unknown source {s:?}: expected rtp://IP:PORT?codec=h264|vp8|opus, file:PATH[?fps=N], exec:COMMAND[?fps=N] or stdin:[?fps=N]"
            ),
            SourceSpecError::MissingCodec => {
                f.write_str("rtp:// source without ?codec=h264|vp8|opus")
            }
            SourceSpecError::UnknownCodec(c) => {
                write!(f, "unknown codec {c:?}: expected h264, vp8 or opus")
            }
            SourceSpecError::BadAddress(a) => {
                write!(f, "bad rtp:// address {a:?}: expected IP:PORT such as 127.0.0.1:5004")
            }
            SourceSpecError::BadFps(v) => {
                write!(f, "bad fps {v:?}: expected a rate in (0, 240] such as 30, 29.97 or 30000/1001")
            }
            SourceSpecError::UnknownParameter(p) => write!(f, "unknown source parameter {p:?}"),
            SourceSpecError::UnknownExtension(e) => write!(
                f,
                "unknown file extension {e:?}: expected .h264 or .264 (H.264 Annex-B), .ivf (VP8) or .ogg or .opus (Opus)"
            ),
            SourceSpecError::FpsNotApplicable(fmt) => write!(
                f,
                "fps applies to Annex-B H.264 only: {} files carry their own timestamps",
                match fmt {
                    FileFormat::Ivf => "IVF",
                    FileFormat::Ogg => "Ogg",
                    FileFormat::AnnexB => "H.264",
                }
            ),
            SourceSpecError::Empty(what) => write!(f, "empty {what}"),
            SourceSpecError::WrongKind { want, codec } => write!(
                f,
                "{codec} is not {} : use --{} for it",
                if *want == MediaKind::Video { "video" } else { "audio" },
                codec.kind().as_str()
            ),
        }
    }
}

impl std::error::Error for SourceSpecError {}

/// Splits a `?k=v&k=v` tail off `s` when it is one (see the module doc); sinks' DEST too.
pub(crate) fn split_query(s: &str) -> (&str, Vec<(&str, &str)>) {
    if let Some((head, tail)) = s.rsplit_once('?') {
        let pairs: Option<Vec<(&str, &str)>> = tail
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=')?;
                let ok = !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !v.contains(char::is_whitespace);
                ok.then_some((k, v))
            })
            .collect();
        if let Some(pairs) = pairs {
            return (head, pairs);
        }
    }
    (s, Vec::new())
}

fn fps_of(params: &[(&str, &str)]) -> Result<Option<Fps>, SourceSpecError> {
    let mut fps = None;
    for (k, v) in params {
        match *k {
            "fps" => {
                fps = Some(Fps::parse(v).ok_or_else(|| SourceSpecError::BadFps(v.to_string()))?)
            }
            other => return Err(SourceSpecError::UnknownParameter(other.to_string())),
        }
    }
    Ok(fps)
}

impl SourceSpec {
    /// Parses a SOURCE.
    pub fn parse(s: &str) -> Result<SourceSpec, SourceSpecError> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("rtp://") {
            let (addr, params) = split_query(rest);
            let mut codec = None;
            for (k, v) in params {
                match k {
                    "codec" => {
                        codec = Some(
                            Codec::from_name(v)
                                .ok_or_else(|| SourceSpecError::UnknownCodec(v.to_string()))?,
                        )
                    }
                    other => return Err(SourceSpecError::UnknownParameter(other.to_string())),
                }
            }
            let addr: SocketAddr = addr
                .parse()
                .ok()
                .filter(|a: &SocketAddr| a.port() != 0)
                .ok_or_else(|| SourceSpecError::BadAddress(addr.to_string()))?;
            let codec = codec.ok_or(SourceSpecError::MissingCodec)?;
            return Ok(SourceSpec::Rtp { addr, codec });
        }
        if let Some(rest) = s.strip_prefix("file:") {
            let (path, params) = split_query(rest);
            if path.is_empty() {
                return Err(SourceSpecError::Empty("file path"));
            }
            let fps = fps_of(&params)?;
            let ext = std::path::Path::new(path)
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            let format = match ext.as_str() {
                "h264" | "264" => FileFormat::AnnexB,
                "ivf" => FileFormat::Ivf,
                "ogg" | "opus" => FileFormat::Ogg,
                _ => return Err(SourceSpecError::UnknownExtension(format!(".{ext}"))),
            };
            if fps.is_some() && format != FileFormat::AnnexB {
                return Err(SourceSpecError::FpsNotApplicable(format));
            }
            return Ok(SourceSpec::File {
                path: PathBuf::from(path),
                format,
                fps,
            });
        }
        if let Some(rest) = s.strip_prefix("exec:") {
            let (command, params) = split_query(rest);
            let command = command.trim();
            if command.is_empty() {
                return Err(SourceSpecError::Empty("exec command"));
            }
            return Ok(SourceSpec::Exec {
                command: command.to_string(),
                fps: fps_of(&params)?,
            });
        }
        if let Some(rest) = s.strip_prefix("stdin:") {
            let (head, params) = split_query(rest);
            if !head.is_empty() {
                return Err(SourceSpecError::UnknownScheme(s.to_string()));
            }
            return Ok(SourceSpec::Stdin {
                fps: fps_of(&params)?,
            });
        }
        Err(SourceSpecError::UnknownScheme(s.to_string()))
    }

    /// The codec, where the URL says it (`exec:` and `stdin:` tell H.264 from IVF by the
    /// first bytes; both are video).
    pub fn codec(&self) -> Option<Codec> {
        match self {
            SourceSpec::Rtp { codec, .. } => Some(*codec),
            SourceSpec::File { format, .. } => Some(format.codec()),
            SourceSpec::Exec { .. } | SourceSpec::Stdin { .. } => None,
        }
    }

    /// Checks the source fits a track of `kind` (`--video` or `--audio`).
    pub fn check_kind(&self, kind: MediaKind) -> Result<(), SourceSpecError> {
        let codec = self.codec().unwrap_or(Codec::H264);
        if codec.kind() == kind {
            Ok(())
        } else {
            Err(SourceSpecError::WrongKind { want: kind, codec })
        }
    }
}

/// A frame with its place on the source's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedFrame {
    /// The frame; its `timestamp` is `position` truncated to 32 bits.
    pub frame: Frame,
    /// Clock ticks since the source started, across loops and restarts (for pacing).
    pub position: u64,
    /// Whether the frame should be paced to `position` (files, `fps` given) or sent at once
    /// (live input with arrival timestamps).
    pub paced: bool,
}

/// A frame that was dropped, or input that is not what the source should carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError(pub String);

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReadError {}

#[derive(Debug)]
enum Demux {
    /// Not known yet (exec/stdin: `DKIF` means IVF, anything else Annex-B).
    Detect(Vec<u8>),
    AnnexB(Box<(AnnexBSplitter, AccessUnitAssembler)>),
    Ivf(IvfReader),
    Ogg(OggOpusReader),
    /// An IVF or Ogg reader hit an error it cannot resynchronise from: reported once, then
    /// input is ignored until the next pass (those readers return the error on every
    /// call, which would otherwise be read forever).
    Stopped,
}

/// Turns a source's bytes into timed frames. Input is pushed as it comes; a new pass over a
/// file (looping) or a restarted command begins with [`SourceReader::restart`], and the
/// timeline goes on after the last frame.
#[derive(Debug)]
pub struct SourceReader {
    demux: Demux,
    format: Option<FileFormat>,
    fps: Option<Fps>,
    /// Live input without `fps`: timestamps from arrival.
    live: bool,
    start: Option<Instant>,
    /// Timeline offset of this pass.
    base: u64,
    /// End of the last frame on the timeline (its position plus one frame).
    end: u64,
    frames_this_pass: u64,
    /// `exec:`/`stdin:` rather than a file.
    pipe: bool,
}

impl SourceReader {
    /// A reader for a file of `format`.
    pub fn file(format: FileFormat, fps: Option<Fps>) -> SourceReader {
        let mut r = Self::detect(fps);
        r.live = false;
        r.pipe = false;
        r.set_format(format);
        r
    }

    /// A reader for `exec:`/`stdin:` output, H.264 or IVF.
    pub fn pipe(fps: Option<Fps>) -> SourceReader {
        Self::detect(fps)
    }

    /// A pipe reader for input that is all there at once (stdin redirected from a file):
    /// paced on its own timeline like a file (`fps`, else the SPS's, else 30), not by
    /// arrival, which would send it all in one burst.
    pub fn paced(mut self) -> SourceReader {
        self.live = false;
        self
    }

    fn detect(fps: Option<Fps>) -> SourceReader {
        SourceReader {
            demux: Demux::Detect(Vec::new()),
            format: None,
            fps,
            live: fps.is_none(),
            start: None,
            base: 0,
            end: 0,
            frames_this_pass: 0,
            pipe: true,
        }
    }

    fn set_format(&mut self, format: FileFormat) {
        self.format = Some(format);
        self.demux = match format {
            FileFormat::AnnexB => Demux::AnnexB(Box::default()),
            FileFormat::Ivf => Demux::Ivf(IvfReader::default()),
            FileFormat::Ogg => Demux::Ogg(OggOpusReader::new()),
        };
    }

    /// The codec, once known.
    pub fn codec(&self) -> Option<Codec> {
        self.format.map(FileFormat::codec)
    }

    /// Whether timestamps come from arrival (a pipe without `fps`).
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Frames read in this pass.
    pub fn frames_this_pass(&self) -> u64 {
        self.frames_this_pass
    }

    /// Input.
    pub fn push(&mut self, data: &[u8]) {
        match &mut self.demux {
            Demux::Detect(head) => {
                head.extend_from_slice(data);
                if head.len() >= 4 {
                    let head = std::mem::take(head);
                    let format = if head.starts_with(b"DKIF") {
                        FileFormat::Ivf
                    } else {
                        FileFormat::AnnexB
                    };
                    self.set_format(format);
                    self.push(&head);
                }
            }
            Demux::AnnexB(b) => b.0.push(data),
            Demux::Ivf(r) => r.push(data),
            Demux::Ogg(r) => r.push(data),
            Demux::Stopped => {}
        }
    }

    /// The end of this pass's input (a file's end, a command's exit): the last NAL unit and
    /// access unit are complete.
    pub fn end_of_input(&mut self, now: Instant) -> Vec<Result<TimedFrame, ReadError>> {
        // Frames already complete come first.
        let mut out: Vec<_> = std::iter::from_fn(|| self.poll(now)).collect();
        if let Demux::AnnexB(b) = &mut self.demux {
            let (split, asm) = &mut **b;
            let mut aus = Vec::new();
            if let Some(n) = split.flush() {
                aus.push(asm.push(n));
            }
            aus.push(asm.flush());
            for au in aus {
                match au {
                    Ok(Some(au)) => out.push(Ok(self.h264_frame(now, au))),
                    Ok(None) => {}
                    Err(e) => out.push(Err(ReadError(e.to_string()))),
                }
            }
        }
        out
    }

    /// A live pipe went idle after a frame: end the pending access unit now instead of at the
    /// next one's first NAL unit (one frame less latency; see [`AnnexBSplitter::flush`]).
    pub fn flush_idle(&mut self, now: Instant) -> Vec<Result<TimedFrame, ReadError>> {
        self.end_of_input(now)
    }

    /// Starts a new pass: the file again from its start, or a restarted command.
    pub fn restart(&mut self) {
        self.base = self.end;
        self.frames_this_pass = 0;
        match (self.pipe, self.format) {
            (false, Some(FileFormat::AnnexB)) => {
                // The same file again: its parameter sets stay cached.
                if let Demux::AnnexB(b) = &mut self.demux {
                    b.0.reset();
                    b.1.reset();
                }
            }
            (false, Some(f)) => self.set_format(f),
            _ => {
                self.demux = Demux::Detect(Vec::new());
                self.format = None;
            }
        }
    }

    fn h264_frame(&mut self, now: Instant, au: super::h264::AccessUnit) -> TimedFrame {
        if self.fps.is_none() {
            if let Some((num, den)) = au.sps.as_ref().and_then(|s| s.frame_rate) {
                if !self.live {
                    self.fps = Fps::parse(&format!("{num}/{den}"));
                }
            }
        }
        let clock = Codec::H264.clock_rate();
        let position = if self.live {
            let start = *self.start.get_or_insert(now);
            let t = now.saturating_duration_since(start).as_micros();
            (t * u128::from(clock) / 1_000_000) as u64
        } else {
            let fps = self.fps.unwrap_or(Fps::DEFAULT);
            self.base + fps.ticks(self.frames_this_pass, clock)
        };
        let step = self.fps.unwrap_or(Fps::DEFAULT).ticks(1, clock);
        self.end = self.end.max(position + step);
        self.frames_this_pass += 1;
        TimedFrame {
            frame: Frame {
                timestamp: position as u32,
                keyframe: au.keyframe,
                data: FrameData::Nals(au.nals),
            },
            position,
            paced: !self.live,
        }
    }

    /// The next frame, `None` until more input comes; errors are dropped frames or input
    /// of the wrong kind (which stops an IVF or Ogg reader: see their docs).
    pub fn poll(&mut self, now: Instant) -> Option<Result<TimedFrame, ReadError>> {
        match &mut self.demux {
            Demux::Detect(_) | Demux::Stopped => None,
            Demux::AnnexB(b) => loop {
                let (split, asm) = &mut **b;
                let nal = match split.poll()? {
                    Ok(n) => n,
                    Err(e) => return Some(Err(ReadError(e.to_string()))),
                };
                match asm.push(nal) {
                    Ok(Some(au)) => return Some(Ok(self.h264_frame(now, au))),
                    Ok(None) => {}
                    Err(e) => return Some(Err(ReadError(e.to_string()))),
                }
            },
            Demux::Ivf(r) => {
                let f = match r.poll() {
                    Ok(f) => f?,
                    Err(e) => {
                        self.demux = Demux::Stopped;
                        return Some(Err(ReadError(e.to_string())));
                    }
                };
                let header = *r.header()?;
                let keyframe = vp8::parse_header(&f.data).is_ok_and(|h| h.keyframe);
                let pass_ts = header.to_clock(f.timestamp, Codec::Vp8.clock_rate());
                // One frame's length from the header's timebase, for the loop's next pass.
                let step = header.to_clock(1, Codec::Vp8.clock_rate()).max(1);
                let position = self.base + pass_ts;
                self.end = self.end.max(position + step);
                self.frames_this_pass += 1;
                Some(Ok(TimedFrame {
                    frame: Frame {
                        timestamp: position as u32,
                        keyframe,
                        data: FrameData::Whole(f.data),
                    },
                    position,
                    paced: true,
                }))
            }
            Demux::Ogg(r) => {
                let p = match r.poll() {
                    Ok(p) => p?,
                    Err(e) => {
                        if matches!(e, OggError::NotOgg | OggError::NotOpus) {
                            self.demux = Demux::Stopped;
                        }
                        return Some(Err(ReadError(e.to_string())));
                    }
                };
                let position = self.base + p.timestamp;
                self.end = self.end.max(position + u64::from(p.duration));
                self.frames_this_pass += 1;
                Some(Ok(TimedFrame {
                    frame: Frame {
                        timestamp: position as u32,
                        keyframe: true,
                        data: FrameData::Whole(p.data),
                    },
                    position,
                    paced: true,
                }))
            }
        }
    }
}

/// When each frame of a paced source is due: the first frame now, each later one at its
/// timeline position after it. A frame more than `max_late` behind (the reader stalled, the
/// machine was busy) moves the anchor instead of bursting to catch up, so lateness never
/// accumulates into latency.
#[derive(Debug, Clone)]
pub struct Pacer {
    clock_rate: u32,
    anchor: Option<(u64, Instant)>,
    max_late: Duration,
}

impl Pacer {
    /// A pacer for a `clock_rate` timeline.
    pub fn new(clock_rate: u32, max_late: Duration) -> Pacer {
        Pacer {
            clock_rate,
            anchor: None,
            max_late,
        }
    }

    /// When the frame at `position` is due, given that it is `now`.
    pub fn due(&mut self, position: u64, now: Instant) -> Instant {
        let (p0, t0) = *self.anchor.get_or_insert((position, now));
        let ticks = position.saturating_sub(p0);
        let at = t0
            + Duration::from_micros(
                (u128::from(ticks) * 1_000_000 / u128::from(self.clock_rate)) as u64,
            );
        if position < p0 || at + self.max_late < now {
            self.anchor = Some((position, now));
            return now;
        }
        at
    }
}

/// Restart delays of a command source: from `min`, doubling to `max`; back to `min` after a
/// run that lasted `healthy` or more.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    healthy: Duration,
    next: Duration,
}

impl Backoff {
    /// The default: 0.5 s doubling to 30 s, reset after 10 s of running.
    pub fn new() -> Backoff {
        Self::with(
            Duration::from_millis(500),
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
    }

    /// Custom delays.
    pub fn with(min: Duration, max: Duration, healthy: Duration) -> Backoff {
        Backoff {
            min,
            max,
            healthy,
            next: min,
        }
    }

    /// The process ran for `ran` and exited: how long to wait before starting it again.
    pub fn exited(&mut self, ran: Duration) -> Duration {
        if ran >= self.healthy {
            self.next = self.min;
        }
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
