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
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Frames queued for a command's stdin at most; more are dropped (a command that does not
/// keep up loses frames, the service's thread never waits for it).
const EXEC_QUEUE: usize = 64;
/// Frames queued for a file's writer thread at most; more are dropped and counted.
const FILE_QUEUE: usize = 64;
/// How long a command's writer may take to drain its queue and see the command exit
/// when the track ends, before the command's group is killed.
const EXEC_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);
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

    /// Ends the output: the container's last bytes; the file synced and renamed into
    /// place, or the command's queue drained into its stdin and the stdin closed (a
    /// command gets [`EXEC_DRAIN`] for that, then its process group is killed).
    pub(crate) async fn finish(&mut self) -> Result<(), String> {
        match self {
            Output::File(f) => f.finish().await,
            Output::Exec(e) => e.finish().await,
            Output::Rtp(_) => Ok(()),
        }
    }
}

/// A new file per session and track; never an existing one. It is written as `NAME.part`
/// by a thread of its own (a slow or stuck disk never holds up the service's thread: what
/// its bounded queue cannot take is dropped and counted) and renamed to NAME when the track
/// ends, once the IVF header has its frame count and the data is synced: a finished
/// recording appears whole, and is never rewritten where a reader could see it.
pub(crate) struct FileOut {
    /// The finished file's name.
    pub(crate) path: PathBuf,
    enc: Encoder,
    /// To the writer thread; `None` once finished.
    jobs: Option<async_channel::Sender<Job>>,
    /// Why the thread stopped writing (disk full, permissions), once it has.
    failed: Arc<Mutex<Option<String>>>,
    /// That failure was returned by `write` already (logged once).
    reported: bool,
    /// Closed when the thread is done (the file renamed into place, or left as `.part`).
    done: async_channel::Receiver<()>,
    /// Bytes queued, and the most this file may hold (then `capped`).
    written: u64,
    max: u64,
    capped: bool,
    /// A frame was dropped: video waits for a keyframe, so the file never holds frames
    /// that refer to a missing one.
    resync: bool,
    /// Frames dropped since the queue was last full (one log line per such run).
    dropping: u64,
}

/// What a file's writer thread is given.
enum Job {
    /// One frame's bytes (the container's header before the first).
    Frame(Vec<u8>),
    /// The container's last bytes; then the file is finished.
    Finish(Vec<u8>),
}

/// `NAME.part`: where NAME is written until it is finished.
fn part_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

impl FileOut {
    fn create(
        path: &Path,
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
            if name.symlink_metadata().is_ok() {
                last = Some(name);
                continue;
            }
            let part = part_name(&name);
            // create_new: an existing file (another session's, a link planted there) is
            // never opened, let alone truncated.
            match File::options().write(true).create_new(true).open(&part) {
                Ok(file) => return Self::start(file, name, part, format, max),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(part),
                Err(e) => return Err(format!("cannot create {}: {e}", part.display())),
            }
        }
        Err(format!(
            "cannot create a new file next to {}: {} and {NAME_ATTEMPTS} others exist",
            path.display(),
            last.unwrap_or_default().display()
        ))
    }

    /// Starts the writer thread of `file` (at `part`, renamed to `path` at the end).
    fn start(
        file: File,
        path: PathBuf,
        part: PathBuf,
        format: FileFormat,
        max: u64,
    ) -> Result<FileOut, String> {
        let (jobs, rx) = async_channel::bounded(FILE_QUEUE);
        let (done_tx, done) = async_channel::bounded(1);
        let failed = Arc::new(Mutex::new(None));
        let writer = FileWriter {
            file,
            part: part.clone(),
            path: path.clone(),
            ivf: format == FileFormat::Ivf,
            failed: failed.clone(),
            _done: done_tx,
        };
        let spawned = std::thread::Builder::new()
            .name("smolrtc-sink".into())
            .stack_size(WRITER_STACK)
            .spawn(move || writer.run(rx));
        if let Err(e) = spawned {
            let _ = std::fs::remove_file(&part);
            return Err(format!(
                "{}: cannot start a writer thread: {e}",
                path.display()
            ));
        }
        Ok(FileOut {
            path,
            enc: Encoder::new(format),
            jobs: Some(jobs),
            failed,
            reported: false,
            done,
            written: 0,
            max,
            capped: false,
            resync: false,
            dropping: 0,
        })
    }

    fn write(&mut self, frame: &ReceivedFrame) -> Result<Option<usize>, String> {
        if let Some(why) = lock(&self.failed).clone() {
            self.reported = true;
            return Err(why);
        }
        let Some(jobs) = &self.jobs else {
            return Err(format!("{} is finished", self.path.display()));
        };
        if self.capped {
            return Err(format!("{} is at its size cap", self.path.display()));
        }
        if self.resync && !frame.keyframe {
            self.dropping += 1;
            return Ok(None);
        }
        let mut buf = Vec::new();
        let written = self
            .enc
            .encode(frame, &mut buf)
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        let n = buf.len();
        if self.written + n as u64 > self.max {
            self.capped = true;
            return Err(format!(
                "{} reached {} bytes (max_sink_file_bytes): no more is recorded this session",
                self.path.display(),
                self.written
            ));
        }
        if n == 0 {
            return Ok(written.then_some(0));
        }
        match jobs.try_send(Job::Frame(buf)) {
            Ok(()) => {
                self.written += n as u64;
                self.resync = false;
                if self.dropping > 0 {
                    log::info!(
                        "{}: writing again after {} dropped frames",
                        self.path.display(),
                        self.dropping
                    );
                    self.dropping = 0;
                }
                Ok(written.then_some(n))
            }
            Err(async_channel::TrySendError::Full(_)) => {
                // The disk does not keep up: this frame (and, for video, those up to the
                // next keyframe) is dropped and counted, the service goes on.
                if self.dropping == 0 {
                    log::warn!(
                        "{}: the disk does not keep up ({FILE_QUEUE} frames queued): dropping \
                         frames until it does",
                        self.path.display()
                    );
                }
                self.dropping += 1;
                self.resync = frame.codec != Codec::Opus;
                Ok(None)
            }
            Err(async_channel::TrySendError::Closed(_)) => {
                self.reported = true;
                Err(lock(&self.failed)
                    .clone()
                    .unwrap_or_else(|| format!("{}: the writer ended", self.path.display())))
            }
        }
    }

    /// Queues the container's last bytes and waits (without blocking the thread) for the
    /// writer to finish: the file is in place, or the error says why not.
    async fn finish(&mut self) -> Result<(), String> {
        let Some(jobs) = self.jobs.take() else {
            return Ok(());
        };
        let mut tail = Vec::new();
        if !self.capped && lock(&self.failed).is_none() {
            let _ = self.enc.finish(&mut tail);
        }
        let _ = jobs.send(Job::Finish(tail)).await;
        drop(jobs);
        let _ = self.done.recv().await;
        match lock(&self.failed).clone() {
            Some(why) if !std::mem::replace(&mut self.reported, true) => Err(why),
            _ => Ok(()),
        }
    }
}

/// The writer threads' stack: they only copy bytes to a file.
const WRITER_STACK: usize = 64 * 1024;

fn lock(m: &Mutex<Option<String>>) -> std::sync::MutexGuard<'_, Option<String>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A file's writer thread.
struct FileWriter {
    file: File,
    part: PathBuf,
    path: PathBuf,
    ivf: bool,
    failed: Arc<Mutex<Option<String>>>,
    /// Dropped when the thread ends: `FileOut::finish` waits for that.
    _done: async_channel::Sender<()>,
}

impl FileWriter {
    /// Writes the frames as they come; at `Finish` (or when the output is dropped) the
    /// IVF frame count, a sync and the rename. A write error stops the writing (what was
    /// written stays, and is still finished and renamed).
    fn run(mut self, jobs: async_channel::Receiver<Job>) {
        let mut frames: u32 = 0;
        let mut ok = true;
        while let Ok(job) = jobs.recv_blocking() {
            let (bytes, last) = match job {
                Job::Frame(b) => (b, false),
                Job::Finish(b) => (b, true),
            };
            if ok && !bytes.is_empty() {
                match self.file.write_all(&bytes) {
                    Ok(()) => frames += u32::from(!last),
                    Err(e) => {
                        ok = false;
                        self.fail(format!("writing {}: {e}", self.part.display()));
                    }
                }
            }
            if last {
                break;
            }
        }
        drop(jobs);
        if let Err(e) = self.end(frames) {
            self.fail(format!("finishing {}: {e}", self.part.display()));
        }
        // Closed before the rename; `_done` goes last, when the file is in place.
        let FileWriter {
            file,
            part,
            path,
            failed,
            ..
        } = self;
        drop(file);
        if let Err(e) = place(&part, &path) {
            lock(&failed).get_or_insert(format!(
                "cannot rename {} to {}: {e}; the recording stays there",
                part.display(),
                path.display()
            ));
        }
    }

    /// The IVF header's frame count (bytes 24..28), then the data synced.
    fn end(&mut self, frames: u32) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.ivf && frames > 0 {
            self.file.write_all_at(&frames.to_le_bytes(), 24)?;
        }
        self.file.sync_data()
    }

    /// Keeps the first failure (the one that stopped the writing).
    fn fail(&self, why: String) {
        lock(&self.failed).get_or_insert(why);
    }
}

/// Renames `part` to `path`, never replacing a file there: a hard link (which fails when
/// `path` exists) then the unlink; on a file system without links (FAT), a rename after
/// checking that `path` is still free.
fn place(part: &Path, path: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(part, path) {
        Ok(()) => std::fs::remove_file(part),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if path.symlink_metadata().is_ok() => Err(std::io::ErrorKind::AlreadyExists.into()),
        Err(_) => std::fs::rename(part, path),
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
    /// Frames dropped since the queue was last full (one log line per such run).
    dropping: u64,
    /// `None` once finished.
    writer: Option<Task<()>>,
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
            dropping: 0,
            writer: Some(writer),
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
            self.dropping += 1;
            return Ok(None);
        }
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
            Ok(()) => {
                self.resync = false;
                if self.dropping > 0 {
                    log::info!(
                        "`{}` reads again after {} dropped frames",
                        self.command,
                        self.dropping
                    );
                    self.dropping = 0;
                }
                Ok(written.then_some(n))
            }
            // Dropped for this command only; the count says so. (An Ogg page or the
            // first frame's header lost this way leaves the command a broken stream; a
            // command too slow for its own input has one anyway.)
            Err(async_channel::TrySendError::Full(_)) => {
                if self.dropping == 0 {
                    log::warn!(
                        "`{}` does not keep up with its stdin ({EXEC_QUEUE} frames queued): \
                         dropping frames until it does",
                        self.command
                    );
                }
                self.dropping += 1;
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

    /// The last bytes queued, then the writer drains the queue, closes stdin and waits
    /// for the command, for [`EXEC_DRAIN`] at most: then the writer is dropped, and with
    /// it the command's process group (killed), so a command that never reads its stdin
    /// cannot hold a finished track.
    async fn finish(&mut self) -> Result<(), String> {
        if let Some(q) = self.queue.take() {
            let mut buf = Vec::new();
            if self.enc.finish(&mut buf).is_ok() && !buf.is_empty() {
                let _ = q.try_send(buf);
            }
        }
        if let Some(writer) = self.writer.take() {
            futures_lite::future::or(writer, async {
                async_io::Timer::after(EXEC_DRAIN).await;
            })
            .await;
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
    use futures_lite::future::block_on;

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
            // Written as NAME.part until finished, then renamed into place.
            let name = PathBuf::from(out.target());
            assert!(!name.exists() && part_name(&name).exists(), "{name:?}");
            block_on(out.finish()).unwrap();
            assert!(name.exists() && !part_name(&name).exists(), "{name:?}");
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
        block_on(out.finish()).unwrap();
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
            out.finish().await.unwrap();
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

    /// A VP8 keyframe of `w`x`h` (the 10-byte header the writer reads the size from).
    fn vp8_keyframe(w: u16, h: u16, ts: u32) -> ReceivedFrame {
        let mut data = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        data.extend(w.to_le_bytes());
        data.extend(h.to_le_bytes());
        data.extend([0u8; 20]);
        ReceivedFrame {
            codec: Codec::Vp8,
            rtp_timestamp: ts,
            keyframe: true,
            data: Bytes::from(data),
            width_height: Some((u32::from(w), u32::from(h))),
        }
    }

    #[test]
    fn an_ivf_file_gets_its_frame_count_when_finished() {
        let dir = temp_dir("sink-ivf");
        let spec = SinkSpec::parse(&format!("file:{}/cam.ivf", dir.display())).unwrap();
        let ex = Rc::new(LocalExecutor::new());
        let mut out = Output::open(
            &spec,
            "cam",
            "s1",
            (MediaKind::Video, Codec::Vp8),
            u64::MAX,
            &ex,
        )
        .unwrap();
        for i in 0..7 {
            assert!(out
                .write(&vp8_keyframe(320, 240, i * 3000))
                .unwrap()
                .is_some());
        }
        block_on(out.finish()).unwrap();
        let bytes = std::fs::read(out.target()).unwrap();
        assert_eq!(&bytes[..4], b"DKIF");
        assert_eq!(u16::from_le_bytes([bytes[12], bytes[13]]), 320);
        // The header's frame count (bytes 24..28) is the frames written.
        assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 7);
        assert_eq!(bytes.len(), 32 + 7 * (12 + 30));
        // A second finish (or drop) changes nothing.
        block_on(out.finish()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_in_place_is_never_replaced_by_the_rename() {
        let dir = temp_dir("sink-place");
        let (part, name) = (dir.join("a.ivf.part"), dir.join("a.ivf"));
        std::fs::write(&part, b"new").unwrap();
        std::fs::write(&name, b"old").unwrap();
        let e = place(&part, &name).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&name).unwrap(), b"old");
        std::fs::remove_file(&name).unwrap();
        place(&part, &name).unwrap();
        assert_eq!(std::fs::read(&name).unwrap(), b"new");
        assert!(!part.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_command_that_never_reads_fills_its_queue_and_frames_are_dropped_and_counted() {
        let ex = Rc::new(LocalExecutor::new());
        // 16 KiB access units: the pipe (64 KiB) and the queue fill after ~70 of them.
        let mut au = vec![0, 0, 0, 1, 0x65];
        au.resize(16 * 1024, 0x42);
        let au = Bytes::from(au);
        let spec = SinkSpec::parse("exec:sleep 30").unwrap();
        futures_lite::future::block_on(ex.run(async {
            let mut out = Output::open(
                &spec,
                "cam",
                "s1",
                (MediaKind::Video, Codec::H264),
                u64::MAX,
                &ex,
            )
            .unwrap();
            let (mut queued, mut dropped) = (0, 0);
            for _ in 0..400 {
                // Every write returns at once (the thread never waits on the command).
                match out.write(&frame(Codec::H264, &au, 0)).unwrap() {
                    Some(_) => queued += 1,
                    None => dropped += 1,
                }
                futures_lite::future::yield_now().await;
            }
            assert!(queued >= EXEC_QUEUE, "{queued} queued");
            assert!(
                dropped > 0 && queued + dropped == 400,
                "{queued} + {dropped}"
            );
            // The track ends: the command that never read is killed, finish returns.
            out.finish().await.unwrap();
        }));
    }

    #[test]
    fn a_write_error_is_reported_once_and_the_file_still_finished() {
        // A file opened read-only: every write fails (EBADF, standing in for ENOSPC/EIO).
        let dir = temp_dir("sink-fail");
        let (name, part) = (dir.join("cam.h264"), dir.join("cam.h264.part"));
        std::fs::write(&part, b"").unwrap();
        let file = File::open(&part).unwrap();
        let mut out = FileOut::start(
            file,
            name.clone(),
            part.clone(),
            FileFormat::AnnexB,
            u64::MAX,
        )
        .unwrap();
        let au = Bytes::from_static(&[0, 0, 0, 1, 0x65, 1, 2, 3]);
        let mut why = None;
        for _ in 0..200 {
            match out.write(&frame(Codec::H264, &au, 0)) {
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(e) => {
                    why = Some(e);
                    break;
                }
            }
        }
        let why = why.expect("the failed write is reported");
        assert!(
            why.starts_with("writing ") && why.contains("cam.h264.part"),
            "{why}"
        );
        // Logged once: finish does not repeat it, and what there is goes into place.
        block_on(out.finish()).unwrap();
        assert!(name.exists() && !part.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
