//! Sinks, sans-IO: the DEST forms of `--sink NAME=DEST` (where a browser's camera and
//! microphone go), and the names of the files a sink writes. The writing itself is the
//! service's (`service::sinks`).
//!
//! | DEST | what the sink gets | kinds |
//! |---|---|---|
//! | `rtp://IP:PORT[?codec=h264\|vp8\|opus]` | the frames repacketized as plain RTP to IP:PORT (video to PORT, audio to PORT+2 when one DEST takes both), with an SDP description for ffmpeg / GStreamer | both, or the codec's |
//! | `file:PATH` | `.ivf` (VP8), `.h264`/`.264` (Annex-B), `.ogg`/`.opus` (Opus); without one of these extensions PATH is a name prefix and the extension follows the codec | the extension's, or both |
//! | `exec:COMMAND[?codec=..]` | one COMMAND (`sh -c`) per track and session, the track on its stdin: Annex-B H.264, IVF (VP8) or Ogg (Opus) | both, or the codec's |
//!
//! A file sink never overwrites: each session's track gets a new file,
//! `STEM-SESSION-YYYYMMDDTHHMMSSZ.EXT` next to PATH, created with `create_new`.

use super::codec::{Codec, MediaKind};
use super::source::{split_query, FileFormat};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A parsed DEST; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// `rtp://IP:PORT[?codec=..]`.
    Rtp {
        /// Where the RTP goes (video; audio at port + 2 when the sink takes both).
        addr: SocketAddr,
        /// The one codec this sink takes, if the URL names one.
        codec: Option<Codec>,
    },
    /// `file:PATH`.
    File {
        /// The path as given; the files written are named after it.
        path: PathBuf,
        /// The container its extension names; `None`: a prefix, the codec decides.
        format: Option<FileFormat>,
    },
    /// `exec:COMMAND[?codec=..]`.
    Exec {
        /// Run with `sh -c`, once per track and session.
        command: String,
        /// The one codec this sink takes, if the URL names one.
        codec: Option<Codec>,
    },
}

/// A DEST that cannot be used, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpecError {
    /// No `scheme:` or an unknown one.
    UnknownScheme(String),
    /// A codec name that is not h264, vp8 or opus.
    UnknownCodec(String),
    /// An `rtp://` address that is not `IP:PORT` with a port from 1 (and below 65534, so
    /// that audio fits at port + 2).
    BadAddress(String),
    /// A query parameter this scheme does not take.
    UnknownParameter(String),
    /// A file extension that names no supported container.
    UnknownExtension(String),
    /// `file:` without a path, `exec:` without a command.
    Empty(&'static str),
    /// A video DEST for audio, or the other way round.
    WrongKind {
        /// The kind asked for.
        want: MediaKind,
        /// The codec the DEST is fixed to.
        codec: Codec,
    },
}

impl fmt::Display for SinkSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpecError::UnknownScheme(s) => write!(
                f,
                "unknown sink {s:?}: expected rtp://IP:PORT[?codec=h264|vp8|opus], file:PATH (.ivf, .h264, .ogg, or a name prefix) or exec:COMMAND[?codec=h264|vp8|opus]"
            ),
            SinkSpecError::UnknownCodec(c) => {
                write!(f, "unknown codec {c:?}: expected h264, vp8 or opus")
            }
            SinkSpecError::BadAddress(a) => write!(
                f,
                "bad rtp:// address {a:?}: expected IP:PORT such as 127.0.0.1:5004 (port 1 to 65533)"
            ),
            SinkSpecError::UnknownParameter(p) => write!(f, "unknown sink parameter {p:?}"),
            SinkSpecError::UnknownExtension(e) => write!(
                f,
                "unknown file extension {e:?}: expected .ivf (VP8), .h264 or .264 (H.264 Annex-B), .ogg or .opus (Opus), or none (a name prefix; the extension follows the codec)"
            ),
            SinkSpecError::Empty(what) => write!(f, "empty {what}"),
            SinkSpecError::WrongKind { want, codec } => write!(
                f,
                "{codec} is not {}: this DEST takes {} only",
                want.as_str(),
                codec.kind().as_str()
            ),
        }
    }
}

impl std::error::Error for SinkSpecError {}

fn codec_of(params: &[(&str, &str)]) -> Result<Option<Codec>, SinkSpecError> {
    let mut codec = None;
    for (k, v) in params {
        match *k {
            "codec" => {
                codec = Some(
                    Codec::from_name(v)
                        .ok_or_else(|| SinkSpecError::UnknownCodec(v.to_string()))?,
                )
            }
            other => return Err(SinkSpecError::UnknownParameter(other.to_string())),
        }
    }
    Ok(codec)
}

impl SinkSpec {
    /// Parses a DEST.
    pub fn parse(s: &str) -> Result<SinkSpec, SinkSpecError> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("rtp://") {
            let (addr, params) = split_query(rest);
            let codec = codec_of(&params)?;
            let addr: SocketAddr = addr
                .parse()
                .ok()
                .filter(|a: &SocketAddr| a.port() != 0 && a.port() < 65534)
                .ok_or_else(|| SinkSpecError::BadAddress(addr.to_string()))?;
            return Ok(SinkSpec::Rtp { addr, codec });
        }
        if let Some(path) = s.strip_prefix("file:") {
            // No query: a file name may hold a '?'.
            if path.is_empty() || path.ends_with('/') {
                return Err(SinkSpecError::Empty("file name"));
            }
            let ext = Path::new(path)
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            let format = match ext.as_deref() {
                None => None,
                Some("h264" | "264") => Some(FileFormat::AnnexB),
                Some("ivf") => Some(FileFormat::Ivf),
                Some("ogg" | "opus") => Some(FileFormat::Ogg),
                Some(e) => return Err(SinkSpecError::UnknownExtension(format!(".{e}"))),
            };
            return Ok(SinkSpec::File {
                path: PathBuf::from(path),
                format,
            });
        }
        if let Some(rest) = s.strip_prefix("exec:") {
            let (command, params) = split_query(rest);
            let command = command.trim();
            if command.is_empty() {
                return Err(SinkSpecError::Empty("exec command"));
            }
            return Ok(SinkSpec::Exec {
                command: command.to_string(),
                codec: codec_of(&params)?,
            });
        }
        Err(SinkSpecError::UnknownScheme(s.to_string()))
    }

    /// The one codec this DEST takes, when it names one.
    pub fn codec(&self) -> Option<Codec> {
        match self {
            SinkSpec::Rtp { codec, .. } | SinkSpec::Exec { codec, .. } => *codec,
            SinkSpec::File { format, .. } => format.map(FileFormat::codec),
        }
    }

    /// The one kind this DEST takes, or `None` when it takes both.
    pub fn kind(&self) -> Option<MediaKind> {
        self.codec().map(Codec::kind)
    }

    /// Checks the DEST can take a track of `kind`.
    pub fn check_kind(&self, kind: MediaKind) -> Result<(), SinkSpecError> {
        match self.codec() {
            Some(codec) if codec.kind() != kind => {
                Err(SinkSpecError::WrongKind { want: kind, codec })
            }
            _ => Ok(()),
        }
    }

    /// The codecs of `kind` this DEST takes, in the order the answer prefers them.
    pub fn codecs(&self, kind: MediaKind) -> Vec<Codec> {
        match self.codec() {
            Some(c) if c.kind() == kind => vec![c],
            Some(_) => Vec::new(),
            None => match kind {
                MediaKind::Video => vec![Codec::Vp8, Codec::H264],
                MediaKind::Audio => vec![Codec::Opus],
            },
        }
    }

    /// The address a track of `kind` goes to, for `rtp://`: the URL's, or port + 2 for
    /// audio when one DEST takes both kinds (ffmpeg's and GStreamer's habit: RTP on even
    /// ports, RTCP beside it).
    pub fn rtp_addr(&self, kind: MediaKind) -> Option<SocketAddr> {
        let SinkSpec::Rtp { addr, codec } = self else {
            return None;
        };
        let mut addr = *addr;
        if codec.is_none() && kind == MediaKind::Audio {
            addr.set_port(addr.port() + 2);
        }
        Some(addr)
    }
}

/// The container a track of `codec` is written in (files and `exec:` stdin).
pub fn container(codec: Codec) -> FileFormat {
    match codec {
        Codec::H264 => FileFormat::AnnexB,
        Codec::Vp8 => FileFormat::Ivf,
        Codec::Opus => FileFormat::Ogg,
    }
}

/// The extension a file of `format` is given.
pub fn extension(format: FileFormat) -> &'static str {
    match format {
        FileFormat::AnnexB => "h264",
        FileFormat::Ivf => "ivf",
        FileFormat::Ogg => "ogg",
    }
}

/// The file a `file:PATH` sink writes one session's `codec` track to:
/// `STEM-SESSION-TIME.EXT` in PATH's directory, `TIME` as `YYYYMMDDTHHMMSSZ` (UTC) of
/// `unix_secs`. The extension is PATH's own when it has a known one, else the codec's.
/// `attempt` > 0 adds `-N` (a name taken already: files are never overwritten).
pub fn file_name(
    path: &Path,
    session: &str,
    unix_secs: u64,
    codec: Codec,
    attempt: u32,
) -> PathBuf {
    let known = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .filter(|e| matches!(e.as_str(), "h264" | "264" | "ivf" | "ogg" | "opus"));
    let (stem, ext) = match known {
        Some(ext) => (
            path.file_stem().map(|s| s.to_string_lossy().into_owned()),
            ext,
        ),
        None => (
            path.file_name().map(|s| s.to_string_lossy().into_owned()),
            extension(container(codec)).to_owned(),
        ),
    };
    let stem = stem.unwrap_or_else(|| "sink".into());
    // Session ids are the service's own (hex); anything else is kept out of a file name.
    let session: String = session
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    let suffix = if attempt > 0 {
        format!("-{attempt}")
    } else {
        String::new()
    };
    let name = format!("{stem}-{session}-{}{suffix}.{ext}", utc_stamp(unix_secs));
    path.with_file_name(name)
}

/// `YYYYMMDDTHHMMSSZ` of seconds since 1970 (UTC; civil-from-days, proleptic Gregorian).
pub fn utc_stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The SDP description ffmpeg (`-protocol_whitelist file,udp,rtp -i sink.sdp`) or
/// GStreamer needs to receive what an `rtp://` sink sends: one section per `(kind, codec,
/// payload type, address)`.
pub fn rtp_sdp(name: &str, tracks: &[(Codec, u8, SocketAddr)]) -> String {
    let ip = tracks
        .first()
        .map_or("127.0.0.1".to_owned(), |t| t.2.ip().to_string());
    let family = if ip.contains(':') { "IP6" } else { "IP4" };
    let mut s = format!(
        "v=0\r\no=- 0 0 IN {family} {ip}\r\ns=smolrtc sink {name}\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    );
    for (codec, pt, addr) in tracks {
        s.push_str(&format!(
            "m={} {} RTP/AVP {pt}\r\na=rtpmap:{}\r\n",
            codec.kind().as_str(),
            addr.port(),
            codec.rtpmap(*pt)
        ));
        match codec {
            Codec::H264 => s.push_str(&format!("a=fmtp:{pt} packetization-mode=1\r\n")),
            Codec::Opus => s.push_str(&format!("a=fmtp:{pt} sprop-stereo=1\r\n")),
            Codec::Vp8 => {}
        }
    }
    s
}

/// The payload type an `rtp://` sink sends `codec` with (dynamic, fixed per codec so that
/// the SDP file stays true across sessions).
pub fn rtp_payload_type(codec: Codec) -> u8 {
    match codec {
        Codec::H264 => 96,
        Codec::Vp8 => 97,
        Codec::Opus => 111,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dests_parse() {
        assert_eq!(
            SinkSpec::parse("rtp://127.0.0.1:5004").unwrap(),
            SinkSpec::Rtp {
                addr: "127.0.0.1:5004".parse().unwrap(),
                codec: None
            }
        );
        let s = SinkSpec::parse("rtp://127.0.0.1:5006?codec=opus").unwrap();
        assert_eq!(s.kind(), Some(MediaKind::Audio));
        assert_eq!(s.rtp_addr(MediaKind::Audio).unwrap().port(), 5006);
        let both = SinkSpec::parse("rtp://127.0.0.1:5004").unwrap();
        assert_eq!(both.rtp_addr(MediaKind::Video).unwrap().port(), 5004);
        assert_eq!(both.rtp_addr(MediaKind::Audio).unwrap().port(), 5006);
        assert_eq!(both.kind(), None);
        assert_eq!(
            SinkSpec::parse("file:/rec/cam.ivf").unwrap(),
            SinkSpec::File {
                path: "/rec/cam.ivf".into(),
                format: Some(FileFormat::Ivf)
            }
        );
        assert_eq!(
            SinkSpec::parse("file:/rec/door")
                .unwrap()
                .codecs(MediaKind::Video),
            vec![Codec::Vp8, Codec::H264]
        );
        assert_eq!(
            SinkSpec::parse("file:mic.OPUS").unwrap().codec(),
            Some(Codec::Opus)
        );
        assert_eq!(
            SinkSpec::parse("exec:ffplay -nodisp -?codec=opus").unwrap(),
            SinkSpec::Exec {
                command: "ffplay -nodisp -".into(),
                codec: Some(Codec::Opus)
            }
        );
        // A '?' that is no query stays in the command.
        assert_eq!(
            SinkSpec::parse("exec:ls ? x").unwrap(),
            SinkSpec::Exec {
                command: "ls ? x".into(),
                codec: None
            }
        );
    }

    #[test]
    fn bad_dests_say_what_is_wrong() {
        let err = |s: &str| SinkSpec::parse(s).unwrap_err().to_string();
        assert!(err("udp://1.2.3.4:5").contains("expected rtp://IP:PORT"));
        assert!(err("rtp://localhost:5004").contains("bad rtp:// address"));
        assert!(err("rtp://127.0.0.1:0").contains("bad rtp:// address"));
        assert!(err("rtp://127.0.0.1:65535").contains("65533"));
        assert!(err("rtp://127.0.0.1:5004?codec=av1").contains("unknown codec \"av1\""));
        assert!(err("rtp://127.0.0.1:5004?fps=3").contains("unknown sink parameter \"fps\""));
        assert!(err("file:/rec/cam.mp4").contains("unknown file extension \".mp4\""));
        assert!(err("file:").contains("empty file name"));
        assert!(err("file:/rec/").contains("empty file name"));
        assert!(err("exec:  ").contains("empty exec command"));
        let e = SinkSpec::parse("file:a.ogg")
            .unwrap()
            .check_kind(MediaKind::Video)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Opus is not video: this DEST takes audio only"
        );
    }

    #[test]
    fn file_names_are_per_session_and_time() {
        let t = 1_780_000_000; // 2026-05-28T20:26:40Z
        assert_eq!(utc_stamp(t), "20260528T202640Z");
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        let p = file_name(Path::new("/rec/cam.ivf"), "ab12", t, Codec::Vp8, 0);
        assert_eq!(p, Path::new("/rec/cam-ab12-20260528T202640Z.ivf"));
        let p = file_name(Path::new("/rec/door"), "ab12", t, Codec::Opus, 2);
        assert_eq!(p, Path::new("/rec/door-ab12-20260528T202640Z-2.ogg"));
        let p = file_name(Path::new("door"), "../x", t, Codec::H264, 0);
        assert_eq!(p, Path::new("door-x-20260528T202640Z.h264"));
    }

    #[test]
    fn the_sdp_names_each_track() {
        let sdp = rtp_sdp(
            "cam",
            &[
                (Codec::H264, 96, "127.0.0.1:5004".parse().unwrap()),
                (Codec::Opus, 111, "127.0.0.1:5006".parse().unwrap()),
            ],
        );
        assert!(sdp.contains("c=IN IP4 127.0.0.1\r\n"), "{sdp}");
        assert!(
            sdp.contains("m=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"),
            "{sdp}"
        );
        assert!(
            sdp.contains("m=audio 5006 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"),
            "{sdp}"
        );
    }
}
