//! Where one received track of one session goes: a new file, a command's stdin, or RTP to
//! a local port. Each output takes frames as they come and says once, in a line, why it
//! stopped (the caller logs it and goes on: a sink's failure never ends the session).

use crate::media::h264::AnnexBSplitter;
use crate::media::packetize::{FrameData, Packetizer};
use crate::media::sink::{self, SinkSpec};
use crate::media::source::FileFormat;
use crate::media::writer::{AnnexBWriter, IvfWriter, OggOpusWriter};
use crate::media::{Codec, MediaKind, ReceivedFrame};
use async_io::Async;
use futures_lite::AsyncWriteExt;
use smol::{LocalExecutor, Task};
use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Frames queued for a command's stdin at most; more are dropped (a command that does not
/// keep up loses frames, the service's thread never waits for it).
const EXEC_QUEUE: usize = 64;
/// Names tried for a new file before giving up (each taken one gets `-N`).
const NAME_ATTEMPTS: u32 = 16;

/// What the library's writers write into; the output takes the bytes out after each frame
/// (to a file, or to a command's queue: the same bytes either way).
#[derive(Clone, Default)]
struct Buffer(Rc<RefCell<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A track's container, written by the library's writers ([`crate::media::writer`]):
/// Annex-B, IVF (VP8) or Ogg (Opus).
pub(crate) struct Encoder {
    writer: Writer,
    buf: Buffer,
}

enum Writer {
    AnnexB(AnnexBWriter<Buffer>),
    Ivf(IvfWriter<Buffer>),
    /// `None` once finished.
    Ogg(Option<OggOpusWriter<Buffer>>),
}

impl Encoder {
    pub(crate) fn new(format: FileFormat) -> Encoder {
        let buf = Buffer::default();
        let writer = match format {
            FileFormat::AnnexB => Writer::AnnexB(AnnexBWriter::new(buf.clone())),
            FileFormat::Ivf => Writer::Ivf(IvfWriter::new(buf.clone())),
            FileFormat::Ogg => Writer::Ogg(Some(OggOpusWriter::new(buf.clone()))),
        };
        Encoder { writer, buf }
    }

    /// Appends `frame`'s bytes (a header before the first) to `out`; `false` when it was
    /// skipped (before the first keyframe: a file starts decodable).
    fn encode(&mut self, frame: &ReceivedFrame, out: &mut Vec<u8>) -> std::io::Result<bool> {
        let written = match &mut self.writer {
            Writer::AnnexB(w) => w.write_frame(frame)?,
            Writer::Ivf(w) => w.write_frame(frame)?,
            Writer::Ogg(Some(w)) => w.write_frame(frame).map(|()| true)?,
            Writer::Ogg(None) => false,
        };
        out.append(&mut self.buf.0.borrow_mut());
        Ok(written)
    }

    /// The bytes that end the stream (Ogg's last page).
    fn finish(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        if let Writer::Ogg(w) = &mut self.writer {
            if let Some(w) = w.take() {
                w.finish()?;
            }
        }
        out.append(&mut self.buf.0.borrow_mut());
        Ok(())
    }
}

/// What an output has done, for `/api/sinks`.
#[derive(Debug, Default, Clone)]
pub(crate) struct OutputStats {
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    /// Frames not written: before the first keyframe, or a full command queue.
    pub(crate) dropped: u64,
    /// Why it stopped, once it has.
    pub(crate) error: Option<String>,
}

/// One track's output.
pub(crate) enum Output {
    File(FileOut),
    Exec(ExecOut),
    Rtp(RtpOut),
}

impl Output {
    /// Opens the output of a `codec` track of session `session` to `spec`. The error is
    /// the line to log.
    pub(crate) fn open(
        spec: &SinkSpec,
        sink: &str,
        session: &str,
        (kind, codec): (MediaKind, Codec),
        max_file_bytes: u64,
        ex: &Rc<LocalExecutor<'static>>,
    ) -> Result<Output, String> {
        match spec {
            SinkSpec::File { path, format } => {
                let format = format.unwrap_or(sink::container(codec));
                FileOut::create(path, session, codec, format, max_file_bytes).map(Output::File)
            }
            SinkSpec::Exec { command, .. } => {
                ExecOut::spawn(command, sink, session, codec, ex).map(Output::Exec)
            }
            SinkSpec::Rtp { .. } => {
                let addr = spec.rtp_addr(kind).ok_or("no rtp:// address")?;
                RtpOut::open(addr, codec).map(Output::Rtp)
            }
        }
    }

    /// Where it goes, for `/api/sinks` and log lines: the file, the command, the address.
    pub(crate) fn target(&self) -> String {
        match self {
            Output::File(f) => f.path.display().to_string(),
            Output::Exec(e) => e.command.clone(),
            Output::Rtp(r) => r.addr.to_string(),
        }
    }

    /// Writes one frame: the bytes it took (`None`: skipped or dropped); the error says
    /// why the output stopped (it takes nothing more).
    pub(crate) fn write(&mut self, frame: &ReceivedFrame) -> Result<Option<usize>, String> {
        match self {
            Output::File(f) => f.write(frame),
            Output::Exec(e) => e.write(frame),
            Output::Rtp(r) => r.write(frame),
        }
    }

    /// Ends the output: the container's last bytes, the file flushed, the command's stdin
    /// closed.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        match self {
            Output::File(f) => f.finish(),
            Output::Exec(e) => e.finish(),
            Output::Rtp(_) => Ok(()),
        }
    }
}

/// A new file per session and track; never an existing one.
pub(crate) struct FileOut {
    pub(crate) path: PathBuf,
    file: Option<File>,
    enc: Encoder,
    buf: Vec<u8>,
    /// Bytes written, and the most this file may hold.
    written: u64,
    max: u64,
}

impl FileOut {
    fn create(
        path: &std::path::Path,
        session: &str,
        codec: Codec,
        format: FileFormat,
        max: u64,
    ) -> Result<FileOut, String> {
        if format.codec() != codec {
            return Err(format!(
                "{}: a .{} file takes {}, the track is {codec}",
                path.display(),
                sink::extension(format),
                format.codec()
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut last = None;
        for attempt in 0..NAME_ATTEMPTS {
            let name = sink::file_name(path, session, now, codec, attempt);
            // create_new: an existing file (another session's, a link planted there) is
            // never opened, let alone truncated.
            match File::options().write(true).create_new(true).open(&name) {
                Ok(file) => {
                    return Ok(FileOut {
                        path: name,
                        file: Some(file),
                        enc: Encoder::new(format),
                        buf: Vec::new(),
                        written: 0,
                        max,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(name),
                Err(e) => return Err(format!("cannot create {}: {e}", name.display())),
            }
        }
        Err(format!(
            "cannot create a new file next to {}: {} and {NAME_ATTEMPTS} others exist",
            path.display(),
            last.unwrap_or_default().display()
        ))
    }

    fn write(&mut self, frame: &ReceivedFrame) -> Result<Option<usize>, String> {
        self.buf.clear();
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.enc.encode(frame, &mut buf);
        let n = buf.len();
        if self.written + n as u64 > self.max {
            self.file = None;
            return Err(format!(
                "{} reached {} bytes (max_sink_file_bytes): no more is recorded this session",
                self.path.display(),
                self.written
            ));
        }
        self.written += n as u64;
        let r = r.and_then(|written| self.put(&buf).map(|()| written.then_some(n)));
        self.buf = buf;
        r.map_err(|e| self.fail(e))
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Err(std::io::Error::other("closed")),
        }
    }

    fn fail(&mut self, e: std::io::Error) -> String {
        // What was written stays; nothing more is tried on this file.
        self.file = None;
        format!("writing {}: {e}", self.path.display())
    }

    fn finish(&mut self) -> Result<(), String> {
        if self.file.is_none() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let r = self
            .enc
            .finish(&mut buf)
            .and_then(|()| self.put(&buf))
            .and_then(|()| self.file.as_mut().map_or(Ok(()), |f| f.sync_data()));
        self.file = None;
        r.map_err(|e| format!("finishing {}: {e}", self.path.display()))
    }
}

/// A child in its own process group, killed with its group when dropped (as an `exec:`
/// source's).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals the process group the child leads
        // (process_group(0) in ExecOut::spawn); no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// A command (`sh -c`) per session and track, the track on its stdin. A writer task owns
/// the pipe; frames reach it through a bounded queue.
pub(crate) struct ExecOut {
    pub(crate) command: String,
    queue: Option<async_channel::Sender<Vec<u8>>>,
    enc: Encoder,
    /// Why the writer stopped (the command exited, its stdin closed).
    ended: Rc<RefCell<Option<String>>>,
    /// A frame was dropped (the queue was full): video waits for a keyframe, so the
    /// command never gets frames that refer to a missing one.
    resync: bool,
    _writer: Task<()>,
}

impl ExecOut {
    fn spawn(
        command: &str,
        sink: &str,
        session: &str,
        codec: Codec,
        ex: &Rc<LocalExecutor<'static>>,
    ) -> Result<ExecOut, String> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("SMOLRTC_SINK", sink)
            .env("SMOLRTC_SESSION", session)
            .env("SMOLRTC_CODEC", codec.encoding_name())
            .env("SMOLRTC_KIND", codec.kind().as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run `{command}`: {e}"))?;
        let stdin = child.stdin.take();
        let group = Group(child);
        let stdin = stdin
            .ok_or_else(|| std::io::Error::other("no stdin pipe"))
            .and_then(Async::new)
            .map_err(|e| format!("`{command}`: {e}"))?;
        let (tx, rx) = async_channel::bounded::<Vec<u8>>(EXEC_QUEUE);
        let ended = Rc::new(RefCell::new(None));
        let why = ended.clone();
        let cmd = command.to_owned();
        let writer = ex.spawn(async move {
            let mut group = group;
            let mut stdin = stdin;
            let mut failed = None;
            while let Ok(bytes) = rx.recv().await {
                if let Err(e) = stdin.write_all(&bytes).await {
                    failed = Some(e);
                    break;
                }
            }
            // Closing stdin lets the command finish what it has.
            drop(stdin);
            if let Some(e) = failed {
                let status = match group.0.try_wait() {
                    Ok(Some(s)) => format!("exited ({s})"),
                    _ => format!("stopped reading its stdin ({e})"),
                };
                *why.borrow_mut() = Some(format!("`{cmd}` {status}"));
                return;
            }
            // The track ended: give the command a moment to finish, then its group goes.
            for _ in 0..20 {
                if let Ok(Some(_)) = group.0.try_wait() {
                    return;
                }
                async_io::Timer::after(std::time::Duration::from_millis(100)).await;
            }
            drop(group);
        });
        Ok(ExecOut {
            command: command.to_owned(),
            queue: Some(tx),
            enc: Encoder::new(sink::container(codec)),
            ended,
            resync: false,
            _writer: writer,
        })
    }

    fn write(&mut self, frame: &ReceivedFrame) -> Result<Option<usize>, String> {
        if let Some(why) = self.ended.borrow_mut().take() {
            self.queue = None;
            return Err(why);
        }
        let Some(q) = &self.queue else {
            return Err(format!("`{}` is not running", self.command));
        };
        if self.resync && !frame.keyframe {
            return Ok(None);
        }
        self.resync = false;
        let mut buf = Vec::new();
        let written = self
            .enc
            .encode(frame, &mut buf)
            .map_err(|e| format!("`{}`: {e}", self.command))?;
        let n = buf.len();
        if buf.is_empty() {
            return Ok(written.then_some(0));
        }
        match q.try_send(buf) {
            Ok(()) => Ok(written.then_some(n)),
            // Dropped for this command only; the count says so. (An Ogg page or the
            // first frame's header lost this way leaves the command a broken stream; a
            // command too slow for its own input has one anyway.)
            Err(async_channel::TrySendError::Full(_)) => {
                self.resync = frame.codec != Codec::Opus;
                Ok(None)
            }
            Err(async_channel::TrySendError::Closed(_)) => {
                self.queue = None;
                Err(self
                    .ended
                    .borrow_mut()
                    .take()
                    .unwrap_or_else(|| format!("`{}` ended", self.command)))
            }
        }
    }

    fn finish(&mut self) -> Result<(), String> {
        if let Some(q) = self.queue.take() {
            let mut buf = Vec::new();
            if self.enc.finish(&mut buf).is_ok() && !buf.is_empty() {
                let _ = q.try_send(buf);
            }
        }
        Ok(())
    }
}

/// Repacketized RTP to a local port (for ffmpeg or GStreamer), with its own SSRC and
/// sequence numbers and the payload type of [`sink::rtp_payload_type`].
pub(crate) struct RtpOut {
    pub(crate) addr: SocketAddr,
    socket: UdpSocket,
    packetizer: Packetizer,
    splitter: AnnexBSplitter,
    pt: u8,
    ssrc: u32,
    seq: u16,
    buf: Vec<u8>,
}

impl RtpOut {
    fn open(addr: SocketAddr, codec: Codec) -> Result<RtpOut, String> {
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| format!("rtp://{addr}: cannot open a socket: {e}"))?;
        Ok(RtpOut {
            addr,
            socket,
            packetizer: Packetizer::new(codec),
            splitter: AnnexBSplitter::new(crate::media::h264::MAX_NAL_BYTES),
            pt: sink::rtp_payload_type(codec),
            ssrc: fastrand::u32(..),
            seq: fastrand::u16(..),
            buf: Vec::with_capacity(1500),
        })
    }

    fn write(&mut self, frame: &ReceivedFrame) -> Result<Option<usize>, String> {
        let data = match frame.codec {
            Codec::H264 => {
                self.splitter.push(&frame.data);
                let mut nals = Vec::new();
                while let Some(n) = self.splitter.poll() {
                    nals.extend(n.ok());
                }
                nals.extend(self.splitter.flush());
                FrameData::Nals(nals)
            }
            Codec::Vp8 | Codec::Opus => FrameData::Whole(frame.data.clone()),
        };
        let packetized = self.packetizer.packetize(
            std::time::Instant::now(),
            crate::media::Frame {
                timestamp: frame.rtp_timestamp,
                keyframe: frame.keyframe,
                data,
            },
        );
        let last = packetized.payloads.len().saturating_sub(1);
        let mut sent = 0;
        for (i, p) in packetized.payloads.iter().enumerate() {
            self.buf.clear();
            let marker = i == last && packetized.marker;
            crate::media::sender::write_header(
                &mut self.buf,
                marker,
                self.pt,
                self.seq,
                frame.rtp_timestamp,
                self.ssrc,
            );
            self.seq = self.seq.wrapping_add(1);
            p.write_to(&mut self.buf);
            match self.socket.send_to(&self.buf, self.addr) {
                Ok(n) => sent += n,
                // A full socket buffer or nobody listening (ICMP): the packet is lost, as
                // on any UDP path; the receiver's jitter buffer copes.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(format!("rtp://{}: {e}", self.addr)),
            }
        }
        Ok(Some(sent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(codec: Codec, data: &Bytes, ts: u32) -> ReceivedFrame {
        ReceivedFrame {
            codec,
            rtp_timestamp: ts,
            keyframe: true,
            data: data.clone(),
            width_height: None,
        }
    }

    /// `Output::open` for sink `cam`'s video in `session`, with no size cap.
    fn open_video(
        spec: &SinkSpec,
        session: &str,
        codec: Codec,
        ex: &Rc<LocalExecutor<'static>>,
    ) -> Result<Output, String> {
        Output::open(
            spec,
            "cam",
            session,
            (MediaKind::Video, codec),
            u64::MAX,
            ex,
        )
    }

    fn temp_dir(what: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("smolrtc-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_file_output_never_overwrites() {
        let dir = temp_dir("sink-file");
        let spec = SinkSpec::parse(&format!("file:{}/cam.h264", dir.display())).unwrap();
        let ex = Rc::new(LocalExecutor::new());
        let au = Bytes::from_static(&[0, 0, 0, 1, 0x65, 1, 2, 3]);
        let mut paths = Vec::new();
        for _ in 0..3 {
            let mut out = open_video(&spec, "s1", Codec::H264, &ex).unwrap();
            assert_eq!(out.write(&frame(Codec::H264, &au, 0)).unwrap(), Some(8));
            out.finish().unwrap();
            paths.push(out.target());
        }
        // Same session, same second: three files, none overwritten.
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 3, "{paths:?}");
        for p in &paths {
            assert_eq!(std::fs::read(p).unwrap(), &au[..]);
            assert!(p.contains("/cam-s1-"), "{p}");
        }
        // The wrong codec for the extension, and a directory that is not one.
        let e = open_video(&spec, "s1", Codec::Vp8, &ex).err().unwrap();
        assert!(
            e.contains("a .h264 file takes H.264, the track is VP8"),
            "{e}"
        );
        let gone = SinkSpec::parse(&format!("file:{}/nope/cam", dir.display())).unwrap();
        let e = open_video(&gone, "s1", Codec::H264, &ex).err().unwrap();
        assert!(
            e.contains("cannot create") && e.contains("No such file"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_output_stops_at_its_cap_keeping_what_it_wrote() {
        let dir = temp_dir("sink-cap");
        let spec = SinkSpec::parse(&format!("file:{}/cam.h264", dir.display())).unwrap();
        let ex = Rc::new(LocalExecutor::new());
        let au = Bytes::from_static(&[0, 0, 0, 1, 0x65, 1, 2, 3]);
        let mut out =
            Output::open(&spec, "cam", "s1", (MediaKind::Video, Codec::H264), 12, &ex).unwrap();
        assert_eq!(out.write(&frame(Codec::H264, &au, 0)).unwrap(), Some(8));
        let e = out.write(&frame(Codec::H264, &au, 0)).unwrap_err();
        assert!(e.contains("reached 8 bytes (max_sink_file_bytes)"), "{e}");
        out.finish().unwrap();
        assert_eq!(std::fs::read(out.target()).unwrap(), &au[..]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_rtp_output_sends_repacketized_rtp() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let port = rx.local_addr().unwrap().port();
        let spec = SinkSpec::parse(&format!("rtp://127.0.0.1:{port}?codec=h264")).unwrap();
        let ex = Rc::new(LocalExecutor::new());
        let mut out = open_video(&spec, "s1", Codec::H264, &ex).unwrap();
        // SPS-like, PPS-like and a 3000-byte slice: STAP-A or singles, then FU-A.
        let mut au = vec![
            0, 0, 0, 1, 0x67, 0x42, 0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65,
        ];
        au.extend(std::iter::repeat_n(0x11, 3000));
        let au = Bytes::from(au);
        assert!(out.write(&frame(Codec::H264, &au, 9000)).unwrap().unwrap() > 3000);
        let mut buf = [0u8; 2000];
        let mut got = Vec::new();
        loop {
            let n = rx.recv(&mut buf).unwrap();
            let p = &buf[..n];
            assert_eq!(p[0], 0x80);
            assert_eq!(p[1] & 0x7f, 96);
            assert_eq!(u32::from_be_bytes([p[4], p[5], p[6], p[7]]), 9000);
            got.push(p[12] & 0x1f);
            if p[1] & 0x80 != 0 {
                break;
            }
        }
        // The slice went out as FU-A (28) fragments, the last one marked.
        assert_eq!(*got.last().unwrap(), 28, "{got:?}");
        assert!(got.len() >= 3, "{got:?}");
    }

    #[test]
    fn an_exec_output_feeds_the_command_and_says_when_it_exits() {
        let dir = temp_dir("sink-exec");
        let file = dir.join("out.h264");
        let ex = Rc::new(LocalExecutor::new());
        let au = Bytes::from_static(&[0, 0, 0, 1, 0x65, 9, 9, 9]);
        let spec = SinkSpec::parse(&format!("exec:cat > {}", file.display())).unwrap();
        futures_lite::future::block_on(ex.run(async {
            let mut out = open_video(&spec, "s1", Codec::H264, &ex).unwrap();
            for _ in 0..3 {
                out.write(&frame(Codec::H264, &au, 0)).unwrap();
            }
            out.finish().unwrap();
            // The writer drains its queue, closes stdin, and cat ends.
            for _ in 0..50 {
                if std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) == 24 {
                    break;
                }
                async_io::Timer::after(std::time::Duration::from_millis(50)).await;
            }
            assert_eq!(std::fs::read(&file).unwrap().len(), 24);

            // A command that exits at once: the output says so, and stops.
            let spec = SinkSpec::parse("exec:exit 3").unwrap();
            let mut out = open_video(&spec, "s2", Codec::H264, &ex).unwrap();
            let mut why = None;
            for _ in 0..100 {
                match out.write(&frame(Codec::H264, &au, 0)) {
                    Ok(_) => async_io::Timer::after(std::time::Duration::from_millis(20)).await,
                    Err(e) => {
                        why = Some(e);
                        break;
                    }
                };
            }
            let why = why.expect("the exit is noticed");
            assert!(why.contains("`exit 3`"), "{why}");
            assert!(out.write(&frame(Codec::H264, &au, 0)).is_err());
        }));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
