//! Sinks (feature `media`): `--sink NAME=DEST`, where a browser's camera and microphone go
//! (the other direction of [`super::streams`]): WHIP ingest at `/whip/NAME`, talk-back
//! (`?sink=NAME` beside `?stream=NAME`), and `GET /api/sinks`.
//!
//! | request | what |
//! | --- | --- |
//! | `GET /api/sinks` | every sink: its DESTs, kinds and codecs, the sessions writing to it, bytes and frames written, errors, and the SDP text for `rtp://` sinks |
//! | `POST /whip/NAME` `application/sdp` (sendonly offer) | `404` unknown sink, `415` another type, `400` bad SDP, `409` an `rtp://` sink already taken, `422` nothing the sink takes, else `201`, the answer, `Location: /whip/NAME/<id>` |
//! | `PATCH`/`DELETE /whip/NAME/<id>` | trickle and teardown, as for WHIP |
//!
//! Each received track of a session bound to a sink runs as one task that reads its frames
//! and writes them to the track's output: a new file (`create_new`, never overwriting), a
//! COMMAND's stdin (through a bounded queue and a writer task, so a slow or dead command
//! never blocks the service's thread), or repacketized RTP to a local port. A failing
//! output (disk full, permissions, the command exited) is one log line and an `error` in
//! `/api/sinks`; the session goes on.

use super::error::ServiceError;
use crate::error::{Error, Result};
use crate::media::{MediaKind, SinkSpec};
use std::net::SocketAddr;

/// Most sinks one service has.
pub const MAX_SINKS: usize = 32;

/// One sink: a name and where its video and audio go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    /// Letters, digits, `-`, `_` and `.`, at most 64 (a URL path segment, as a stream's).
    pub name: String,
    /// The video DEST and its text as given.
    pub video: Option<(String, SinkSpec)>,
    /// The audio DEST and its text as given.
    pub audio: Option<(String, SinkSpec)>,
}

impl SinkConfig {
    /// Adds `--sink NAME=DEST` to `sinks`: a DEST of one kind (`file:x.ivf`,
    /// `rtp://..?codec=opus`) fills that kind, any other both. Errors name the flag, the
    /// sink and what is wrong.
    pub fn add(sinks: &mut Vec<SinkConfig>, flag: &str) -> Result<()> {
        let Some((name, dest)) = flag.split_once('=') else {
            return Err(Error::InvalidArgument(
                format!("--sink {flag:?}: expected NAME=DEST, e.g. --sink cam=file:/var/lib/smolrtc/cam")
                    .into(),
            ));
        };
        Self::add_dest(sinks, None, name.trim(), dest.trim())
    }

    /// Adds DEST to sink `name` for `kind`, or for the kinds it takes when `kind` is
    /// `None` (from a flag, `[sinks.NAME] video = ..`, or `[sinks] NAME = ..`).
    pub fn add_dest(
        sinks: &mut Vec<SinkConfig>,
        kind: Option<MediaKind>,
        name: &str,
        dest: &str,
    ) -> Result<()> {
        super::check_stream_name(name).map_err(|_| {
            Error::InvalidArgument(
                format!("sink name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'").into(),
            )
        })?;
        let invalid = |e: String| Error::InvalidArgument(format!("sink {name}: {e}").into());
        let spec = SinkSpec::parse(dest).map_err(|e| invalid(format!("{dest:?}: {e}")))?;
        if let Some(k) = kind {
            spec.check_kind(k)
                .map_err(|e| invalid(format!("{} {dest:?}: {e}", k.as_str())))?;
        }
        let kinds: Vec<MediaKind> = match kind.or(spec.kind()) {
            Some(k) => vec![k],
            None => vec![MediaKind::Video, MediaKind::Audio],
        };
        let i = match sinks.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                if sinks.len() >= MAX_SINKS {
                    return Err(Error::InvalidArgument(
                        format!("more than {MAX_SINKS} sinks").into(),
                    ));
                }
                sinks.push(SinkConfig {
                    name: name.to_owned(),
                    video: None,
                    audio: None,
                });
                sinks.len() - 1
            }
        };
        for k in kinds {
            let slot = match k {
                MediaKind::Video => &mut sinks[i].video,
                MediaKind::Audio => &mut sinks[i].audio,
            };
            if let Some((old, _)) = slot {
                return Err(invalid(format!(
                    "two {} DESTs ({old:?} and {dest:?}); a sink has at most one of each kind",
                    k.as_str()
                )));
            }
            *slot = Some((dest.to_owned(), spec.clone()));
        }
        Ok(())
    }

    /// The DEST of `kind`.
    pub fn dest(&self, kind: MediaKind) -> Option<&(String, SinkSpec)> {
        match kind {
            MediaKind::Video => self.video.as_ref(),
            MediaKind::Audio => self.audio.as_ref(),
        }
    }
}

/// Checks what can be checked before serving: unique names, no two `rtp://` tracks to one
/// address, and that a `file:` sink's directory exists and is a directory (a file that
/// cannot be written later is a log line; a typo in the directory fails the start).
pub(crate) fn check_sinks(sinks: &[SinkConfig]) -> Result<()> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (i, s) in sinks.iter().enumerate() {
        super::check_stream_name(&s.name)?;
        if sinks[..i].iter().any(|o| o.name == s.name) {
            return Err(Error::InvalidArgument(
                format!("sink {} is given twice", s.name).into(),
            ));
        }
        if s.video.is_none() && s.audio.is_none() {
            return Err(Error::InvalidArgument(
                format!("sink {}: no DEST", s.name).into(),
            ));
        }
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let Some((text, spec)) = s.dest(kind) else {
                continue;
            };
            if let Some(addr) = spec.rtp_addr(kind) {
                if addrs.contains(&addr) {
                    return Err(Error::InvalidArgument(
                        format!(
                            "sink {}: {} {text}: {addr} is taken by another sink track",
                            s.name,
                            kind.as_str()
                        )
                        .into(),
                    ));
                }
                addrs.push(addr);
            }
            if let SinkSpec::File { path, .. } = spec {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => std::path::Path::new("."),
                };
                if !dir.is_dir() {
                    return Err(Error::InvalidArgument(
                        format!(
                            "sink {}: {text}: {} is not a directory",
                            s.name,
                            dir.display()
                        )
                        .into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[allow(dead_code)]
fn unknown_sink(name: &str) -> ServiceError {
    ServiceError::UnknownSink(super::http::clip(name).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_fill_kinds() {
        let mut sinks = Vec::new();
        SinkConfig::add(&mut sinks, "cam=file:/tmp/cam.ivf").unwrap();
        SinkConfig::add(&mut sinks, "cam=rtp://127.0.0.1:5006?codec=opus").unwrap();
        SinkConfig::add(&mut sinks, "door=file:/tmp/door").unwrap();
        assert_eq!(sinks.len(), 2);
        assert_eq!(sinks[0].video.as_ref().unwrap().0, "file:/tmp/cam.ivf");
        assert_eq!(
            sinks[0].audio.as_ref().unwrap().0,
            "rtp://127.0.0.1:5006?codec=opus"
        );
        // A DEST of no fixed kind takes both.
        assert!(sinks[1].video.is_some() && sinks[1].audio.is_some());
        check_sinks(&sinks).unwrap();
    }

    #[test]
    fn bad_sinks_say_why() {
        let err = |flags: &[&str]| {
            let mut sinks = Vec::new();
            for f in flags {
                if let Err(e) = SinkConfig::add(&mut sinks, f) {
                    return e.to_string();
                }
            }
            check_sinks(&sinks).unwrap_err().to_string()
        };
        assert!(err(&["cam"]).contains("expected NAME=DEST"));
        assert!(err(&["c/m=file:x.ivf"]).contains("sink name \"c/m\""));
        assert!(err(&["cam=file:x.mp4"]).contains("unknown file extension"));
        assert!(err(&["cam=file:x", "cam=file:y.ivf"]).contains("two video DESTs"));
        assert!(err(&[
            "cam=rtp://127.0.0.1:5004",
            "mic=rtp://127.0.0.1:5006?codec=opus"
        ])
        .contains("127.0.0.1:5006 is taken"));
        assert!(err(&["cam=file:/no/such/dir/cam.ivf"]).contains("/no/such/dir is not a directory"));
        let mut sinks = Vec::new();
        let e = SinkConfig::add_dest(&mut sinks, Some(MediaKind::Video), "cam", "file:a.ogg")
            .unwrap_err();
        assert!(e.to_string().contains("Opus is not video"), "{e}");
    }
}
