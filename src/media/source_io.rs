//! The I/O of sources: reading files, commands, standard input and RTP sockets, pacing, and
//! handing timed frames to the stream's task. This is the only media file that touches the
//! OS; everything it calls into ([`SourceReader`], [`RtpFramer`], [`Pacer`], [`Backoff`]) is
//! sans-IO. It uses async-io (sockets, pipes, timers) and no executor of its own: the
//! caller spawns [`run`] as a task.
//!
//! - `file:` is read in 64 KiB pieces with plain blocking reads (a regular file cannot be
//!   polled; a page-cache read takes microseconds), paced to its timeline and looped. A pass
//!   that yields no frame at all is an error rather than a busy loop.
//! - `exec:` runs `sh -c COMMAND` in its own process group with stdout piped, and when the
//!   command exits (or its output ends) kills the group, waits for it, and starts it again
//!   after a [`Backoff`] delay. `stdin:` reads a duplicate of descriptor 0.
//! - A live pipe without `fps` is not paced: frames go on as they arrive, and an access unit
//!   is ended when the pipe has been quiet for [`SourceOptions::idle_flush`] (one frame less
//!   latency than waiting for the next frame's first NAL unit).
//! - `rtp://` binds a UDP socket with a receive buffer of [`RTP_RECEIVE_BUFFER`] so a
//!   keyframe burst fits while the task is busy, and passes frames through [`RtpFramer`].
//!
//! Frame errors (garbage NAL units, a keyframe without parameter sets, lost RTP packets) are
//! logged at most once per [`LOG_INTERVAL`] with a count, and the source goes on.

use super::codec::Codec;
use super::packetize::Frame;
use super::rtp_in::RtpFramer;
use super::source::{Backoff, FileFormat, Fps, Pacer, ReadError, SourceReader, SourceSpec};
use async_channel::Sender;
use async_io::{Async, Timer};
use bytes::Bytes;
use futures_lite::{future, AsyncReadExt};
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Receive buffer asked for an `rtp://` socket: 4 MiB (the kernel caps it at
/// `net.core.rmem_max`; a warning says so).
pub const RTP_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;
/// A paced frame this late re-anchors the pacer instead of being sent in a burst.
pub const MAX_LATE: Duration = Duration::from_millis(200);
/// Frame errors of one source are logged at most this often.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
const READ_CHUNK: usize = 64 * 1024;
/// An `rtp://` source that dropped this many frames before its first keyframe is told to
/// check its codec (ten seconds at 30 fps: longer than a usual keyframe interval).
const WRONG_CODEC_AFTER: u64 = 300;

/// A frame from a source, as the stream's task receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFrame {
    /// The codec (known once an `exec:`/`stdin:` source's first bytes came).
    pub codec: Codec,
    /// When the frame was handed over.
    pub arrival: Instant,
    /// The frame.
    pub frame: Frame,
}

/// Called when an `exec:` command ended and waits to be started again, with the reason (the
/// text of the log line), so the stream can show it.
pub type RestartHook = std::rc::Rc<dyn Fn(&str)>;

/// Tunables of [`run`].
#[derive(Clone)]
pub struct SourceOptions {
    /// The stream's name, for log lines.
    pub name: String,
    /// Restart delays of `exec:`.
    pub backoff: Backoff,
    /// Quiet time after which a live pipe's pending access unit is ended.
    pub idle_flush: Duration,
    /// Told of each `exec:` restart (none by default).
    pub on_restart: Option<RestartHook>,
}

impl fmt::Debug for SourceOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceOptions")
            .field("name", &self.name)
            .field("backoff", &self.backoff)
            .field("idle_flush", &self.idle_flush)
            .field("on_restart", &self.on_restart.is_some())
            .finish()
    }
}

impl SourceOptions {
    /// Defaults for stream `name`: the default backoff, a 5 ms idle flush.
    pub fn new(name: &str) -> SourceOptions {
        SourceOptions {
            name: name.to_owned(),
            backoff: Backoff::new(),
            idle_flush: Duration::from_millis(5),
            on_restart: None,
        }
    }
}

/// Why a source stopped for good.
#[derive(Debug)]
pub enum SourceError {
    /// The file could not be opened or read.
    File(String, std::io::Error),
    /// A whole pass over the file gave no frame (not the format its extension says).
    NoFrames(String),
    /// The RTP socket could not be bound (a port in use, an address not on this host).
    Bind(String, std::io::Error),
    /// The command could not be started at all, or a pipe could not be set up.
    Io(String, std::io::Error),
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::File(p, e) => write!(f, "file:{p}: {e}"),
            SourceError::NoFrames(p) => write!(f, "file:{p}: no frames in a whole pass"),
            SourceError::Bind(a, e) => write!(f, "rtp://{a}: cannot bind: {e}"),
            SourceError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for SourceError {}

/// Logs frame errors without flooding: the first at once, then a count per interval.
struct Throttle {
    name: String,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn error(&mut self, what: &dyn fmt::Display) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_INTERVAL)
        {
            if self.suppressed > 0 {
                log::warn!(
                    "source {}: {what} (and {} more since the last report)",
                    self.name,
                    self.suppressed
                );
            } else {
                log::warn!("source {}: {what}", self.name);
            }
            self.last = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

/// Hands frames on, pacing those that are paced.
struct Out {
    tx: Sender<SourceFrame>,
    pacer: Option<Pacer>,
    log: Throttle,
}

impl Out {
    /// Delivers frames; `false` when the receiver is gone.
    async fn deliver(
        &mut self,
        codec: Option<Codec>,
        frames: Vec<Result<super::source::TimedFrame, ReadError>>,
    ) -> bool {
        for f in frames {
            let f = match f {
                Ok(f) => f,
                Err(e) => {
                    self.log.error(&e);
                    continue;
                }
            };
            let Some(codec) = codec else { continue };
            if f.paced {
                let pacer = self
                    .pacer
                    .get_or_insert_with(|| Pacer::new(codec.clock_rate(), MAX_LATE));
                let due = pacer.due(f.position, Instant::now());
                if due > Instant::now() {
                    Timer::at(due).await;
                }
            }
            let out = SourceFrame {
                codec,
                arrival: Instant::now(),
                frame: f.frame,
            };
            if self.tx.send(out).await.is_err() {
                return false;
            }
        }
        true
    }
}

fn drain(reader: &mut SourceReader) -> Vec<Result<super::source::TimedFrame, ReadError>> {
    let now = Instant::now();
    std::iter::from_fn(|| reader.poll(now)).collect()
}

/// Runs a source until its receiver is dropped (`Ok`) or it fails for good. A source
/// notices a dropped receiver when it next has a frame to hand over; drop its task to stop it
/// at once.
pub async fn run(
    spec: SourceSpec,
    opts: SourceOptions,
    tx: Sender<SourceFrame>,
) -> Result<(), SourceError> {
    let mut out = Out {
        tx,
        pacer: None,
        log: Throttle {
            name: opts.name.clone(),
            last: None,
            suppressed: 0,
        },
    };
    match spec {
        SourceSpec::File { path, format, fps } => run_file(&path, format, fps, &mut out).await,
        SourceSpec::Exec { command, fps } => run_exec(&command, fps, opts, &mut out).await,
        SourceSpec::Stdin { fps } => {
            use std::os::fd::AsFd;
            let fd = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| SourceError::Io("stdin".into(), e))?;
            match Async::new(std::fs::File::from(fd)) {
                Ok(pipe) => {
                    let mut reader = SourceReader::pipe(fps);
                    read_pipe(pipe, &mut reader, &opts, &mut out).await;
                }
                // `< file` (or /dev/null): epoll refuses it (EPERM), and reading it never
                // blocks, so it is read and paced like `file:` (once: stdin cannot be
                // reopened).
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    let file = std::fs::File::from(
                        std::io::stdin()
                            .as_fd()
                            .try_clone_to_owned()
                            .map_err(|e| SourceError::Io("stdin".into(), e))?,
                    );
                    let mut reader = SourceReader::pipe(fps).paced();
                    read_regular(file, &mut reader, &mut out).await?;
                }
                Err(e) => return Err(SourceError::Io("stdin".into(), e)),
            }
            log::info!("source {}: standard input ended", opts.name);
            Ok(())
        }
        SourceSpec::Rtp { addr, codec } => run_rtp(addr, codec, &mut out).await,
    }
}

async fn run_file(
    path: &Path,
    format: FileFormat,
    fps: Option<Fps>,
    out: &mut Out,
) -> Result<(), SourceError> {
    let name = path.display().to_string();
    let mut reader = SourceReader::file(format, fps);
    let codec = Some(format.codec());
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let mut file = std::fs::File::open(path).map_err(|e| SourceError::File(name.clone(), e))?;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| SourceError::File(name.clone(), e))?;
            if n == 0 {
                break;
            }
            reader.push(&buf[..n]);
            if !out.deliver(codec, drain(&mut reader)).await {
                return Ok(());
            }
        }
        let rest = reader.end_of_input(Instant::now());
        if !out.deliver(codec, rest).await {
            return Ok(());
        }
        if reader.frames_this_pass() == 0 {
            return Err(SourceError::NoFrames(name));
        }
        reader.restart();
    }
}

/// Reads a file that cannot be polled (stdin redirected from one) to its end.
async fn read_regular(
    mut file: std::fs::File,
    reader: &mut SourceReader,
    out: &mut Out,
) -> Result<(), SourceError> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| SourceError::Io("stdin".into(), e))?;
        if n == 0 {
            let rest = reader.end_of_input(Instant::now());
            out.deliver(reader.codec(), rest).await;
            return Ok(());
        }
        reader.push(&buf[..n]);
        if !out.deliver(reader.codec(), drain(reader)).await {
            return Ok(());
        }
    }
}

/// Reads a pipe to its end into `reader`, delivering frames.
async fn read_pipe<R: Read + Unpin>(
    mut pipe: Async<R>,
    reader: &mut SourceReader,
    opts: &SourceOptions,
    out: &mut Out,
) -> bool
where
    Async<R>: futures_lite::AsyncRead,
{
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pending = false;
    loop {
        let read = async { Some(pipe.read(&mut buf).await) };
        let idle = async {
            if pending {
                Timer::after(opts.idle_flush).await;
                None
            } else {
                future::pending().await
            }
        };
        match future::or(read, idle).await {
            Some(Ok(0)) | Some(Err(_)) => {
                let rest = reader.end_of_input(Instant::now());
                return out.deliver(reader.codec(), rest).await;
            }
            Some(Ok(n)) => {
                reader.push(&buf[..n]);
                pending = true;
                if !out.deliver(reader.codec(), drain(reader)).await {
                    return false;
                }
            }
            None => {
                pending = false;
                if reader.is_live() {
                    let frames = reader.flush_idle(Instant::now());
                    if !out.deliver(reader.codec(), frames).await {
                        return false;
                    }
                }
            }
        }
    }
}

/// A child in its own process group, killed with its group when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals the process group the child leads
        // (process_group(0) below); no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

async fn run_exec(
    command: &str,
    fps: Option<Fps>,
    mut opts: SourceOptions,
    out: &mut Out,
) -> Result<(), SourceError> {
    use std::os::unix::process::CommandExt;
    let mut reader = SourceReader::pipe(fps);
    loop {
        let started = Instant::now();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|e| SourceError::Io(format!("exec:{command}"), e))?;
        let stdout = child.stdout.take();
        let group = Group(child);
        let Some(stdout) = stdout else {
            return Err(SourceError::Io(
                format!("exec:{command}"),
                std::io::Error::other("no stdout pipe"),
            ));
        };
        let pipe = Async::new(stdout).map_err(|e| SourceError::Io(format!("exec:{command}"), e))?;
        if !read_pipe(pipe, &mut reader, &opts, out).await {
            return Ok(());
        }
        drop(group);
        let ran = started.elapsed();
        let delay = opts.backoff.exited(ran);
        let why = format!(
            "`{command}` ended after {:.1} s; starting it again in {:.1} s",
            ran.as_secs_f64(),
            delay.as_secs_f64()
        );
        log::warn!("source {}: {why}", opts.name);
        if let Some(hook) = &opts.on_restart {
            hook(&why);
        }
        Timer::after(delay).await;
        reader.restart();
        if out.tx.is_closed() {
            return Ok(());
        }
    }
}

async fn run_rtp(
    addr: std::net::SocketAddr,
    codec: Codec,
    out: &mut Out,
) -> Result<(), SourceError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind_err = |e| SourceError::Bind(addr.to_string(), e);
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(bind_err)?;
    if let Err(e) = sock.set_recv_buffer_size(RTP_RECEIVE_BUFFER) {
        log::warn!("rtp://{addr}: SO_RCVBUF: {e}");
    }
    // Linux reports twice what it grants.
    let granted = sock.recv_buffer_size().unwrap_or(0) / 2;
    if granted < RTP_RECEIVE_BUFFER / 2 {
        log::warn!(
            "rtp://{addr}: receive buffer {granted} bytes (asked {RTP_RECEIVE_BUFFER}); raise net.core.rmem_max so keyframe bursts are not dropped"
        );
    }
    sock.bind(&addr.into()).map_err(bind_err)?;
    let sock = Async::new(std::net::UdpSocket::from(sock)).map_err(bind_err)?;
    let mut framer = RtpFramer::new(codec);
    let mut buf = vec![0u8; 65_536];
    let mut lost_reported = 0;
    let mut framed = false;
    let mut warn_at = WRONG_CODEC_AFTER;
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| SourceError::Io(format!("rtp://{addr}"), e))?;
        framer.push(Bytes::copy_from_slice(&buf[..n]));
        let stats = framer.stats();
        if stats.lost + stats.malformed > lost_reported {
            lost_reported = stats.lost + stats.malformed;
            out.log.error(&format_args!(
                "rtp://{addr}: {} packets lost, {} malformed so far; frames dropped to the next keyframe",
                stats.lost, stats.malformed
            ));
        }
        // Only dropped frames from the start: still waiting for a keyframe, or the sender's
        // codec is not the URL's (H.264 packets read as VP8 never make a keyframe).
        if !framed && stats.frames_dropped >= warn_at {
            warn_at += WRONG_CODEC_AFTER;
            log::warn!(
                "source {}: rtp://{addr}: {} frames and no {} keyframe yet: is the sender's codec {}?",
                out.log.name,
                stats.frames_dropped,
                codec.encoding_name(),
                codec.encoding_name().to_lowercase()
            );
        }
        while let Some(frame) = framer.poll() {
            framed = true;
            let f = SourceFrame {
                codec,
                arrival: Instant::now(),
                frame,
            };
            if out.tx.send(f).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
