//! The console peer (rawrtc's `peer-connection` tool).
//!
//! Descriptions are exchanged by copy and paste: the local description is printed as one
//! JSON line (`{"type":"offer","sdp":"..."}`) on stdout once gathering is complete, and the
//! remote one is read as one JSON line from stdin. Everything else goes to stderr.
//!
//! # The flow
//!
//! 1. Create the peer connection (`A` when offering, `B` when answering) and the
//!    pre-negotiated channel `cat-noises` (stream id 0).
//! 2. Offering: create and set the offer, wait for gathering, print it, read the answer.
//!    Answering: read the offer, set it, create and set the answer, wait for gathering,
//!    print it.
//! 3. When `cat-noises` opens, send 8192 bytes of `M` (binary).
//! 4. When the connection is connected, create the in-band channel `bear-noises`
//!    (offering) or `lion-noises` (answering). `lion-noises` sends 8192 bytes when it opens;
//!    `bear-noises` sends 16384 bytes one second after it opens and then, when offering, is
//!    closed (stream reset).
//! 5. Channels the peer opens in-band are announced and their messages logged (not echoed).
//! 6. Ctrl-C, SIGTERM, or the end of stdin once the remote description is set: every channel
//!    is closed, then the peer connection; after at most a second, `bye` and exit 0.
//!
//! Bad input on stdin (not JSON, not a description, bad SDP, refused by
//! `setRemoteDescription`) is reported on stderr as `Invalid remote description: <why>` and
//! the prompt is repeated; empty lines are ignored. The end of stdin before a valid remote
//! description is an error.
//!
//! # Log lines
//!
//! Each event is one line, at `info` (errors at `warn`), with the connection's name in
//! parentheses, `(A)` or `(B)`; `RUST_LOG` chooses the level (`warn`: errors only; `debug`:
//! the library's own detail too, such as DTLS and SCTP progress, but never a second line
//! for an event: the library's per-event lines, target `smolrtc::event`, are left out, and
//! the rtc-* engines stay quiet unless `RUST_LOG` names them). These texts are stable; tests
//! and scripts grep for them:
//!
//! | line | when |
//! | --- | --- |
//! | `(A) ICE gatherer state: <new\|gathering\|complete>` | gathering state changes |
//! | `(A) ICE candidate: <candidate:...>` | a local candidate is gathered |
//! | `(A) ICE gatherer last local candidate` | gathering is complete |
//! | `(A) Local description printed on stdout` | the JSON line was written |
//! | `(A) Applying remote description` | a valid remote description is being set |
//! | `(A) Signaling state: <state>` | W3C signaling state, e.g. `have-local-offer` |
//! | `(A) ICE connection state: <state>` | W3C ICE connection state |
//! | `(A) ICE selected candidate pair: <local> <-> <remote>` | the pair in use (candidate lines without `candidate:`) |
//! | `(A) Connection state: <state>` | W3C connection state, e.g. `connected` |
//! | `(A) Negotiation needed` | |
//! | `(A) New data channel instance: <label>` | the peer opened a channel in-band |
//! | `(A) Data channel open: <label>` | |
//! | `(A) Sending <n> bytes on <label>` | |
//! | `(A) Incoming message for data channel <label>: <n> bytes` | |
//! | `(A) Data channel buffered amount low: <label>` | |
//! | `(A) Closing data channel <label>` | a close (stream reset) starts |
//! | `(A) Data channel closed: <label>` | |
//! | `(A) Error: <error>` | an error reported by the connection |
//! | `(A) Closing (<reason>)` | shutdown starts |
//! | `(A) bye` | shutdown is done |
//!
//! Written on stderr directly (not through the logger, so always shown):
//! [`PROMPT`] and `Invalid remote description: <why>`.

use async_channel::Receiver;
use async_io::Timer;
use async_signal::{Signal, Signals};
use clap::Args;
use futures_lite::{future, StreamExt};
use smolrtc::channel::{ChannelInit, ChannelState, DataChannel, Message};
use smolrtc::ice::IceConnectionState;
use smolrtc::peer::{Config, ConnectionState, Event, EventStream, PeerConnection};
use smolrtc::sdp::{Description, SdpType};
use smolrtc::{Error, Result};
use std::io::{BufRead, Write};
use std::time::Duration;

/// The pre-negotiated channel (stream id 0) both sides create.
pub const CAT_NOISES: &str = "cat-noises";
/// The in-band channel the offering side creates once connected.
pub const BEAR_NOISES: &str = "bear-noises";
/// The in-band channel the answering side creates once connected.
pub const LION_NOISES: &str = "lion-noises";
/// Printed on stderr whenever a remote description is expected.
pub const PROMPT: &str = "Paste the remote description (JSON) and press Enter:";

/// Size of the messages `cat-noises` and `lion-noises` send when they open.
const SMALL_MESSAGE: usize = 8192;
/// Size of the message `bear-noises` sends.
const LARGE_MESSAGE: usize = 16384;
/// How long `bear-noises` waits after opening before it sends.
const BEAR_DELAY: Duration = Duration::from_secs(1);
/// How long shutdown waits for the closed events.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Options of `smolrtc peer`.
#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Make the offer (ICE controlling); the default.
    #[arg(long, conflicts_with = "answer")]
    pub offer: bool,
    /// Wait for an offer and answer it.
    #[arg(long)]
    pub answer: bool,
    /// ICE: host candidates, STUN/TURN servers, transport policy.
    #[command(flatten)]
    pub ice: crate::settings::IceSettings,
}

impl Options {
    /// True when this side makes the offer (`--answer` not given).
    pub fn offering(&self) -> bool {
        !self.answer
    }

    /// The peer connection settings these options ask for.
    pub fn config(&self) -> Result<Config> {
        let mut config = Config {
            name: if self.offering() { "A" } else { "B" }.into(),
            ..Config::default()
        };
        self.ice
            .apply(&mut config.ice)
            .map_err(|e| Error::InvalidArgument(e.into()))?;
        Ok(config)
    }
}

/// Reads one pasted line as a remote description ([`Description::parse_line`]).
pub fn parse_remote(line: &str) -> std::result::Result<Description, String> {
    Description::parse_line(line, None)
}

/// [`parse_remote`], and the description must be of the `expected` type.
pub fn parse_remote_as(line: &str, expected: SdpType) -> std::result::Result<Description, String> {
    Description::parse_line(line, Some(expected))
}

/// Runs the console peer until Ctrl-C, SIGTERM, or stdin closes.
pub fn run(opts: Options) -> smolrtc::Result<()> {
    // Registered first, so that a Ctrl-C during setup is handled like any other.
    let signals = Signals::new([Signal::Int, Signal::Term])?;
    let lines = spawn_stdin_reader()?;
    async_io::block_on(async move {
        let pc = PeerConnection::new(opts.config()?)?;
        let events = pc.events();
        let mut console = Console::new(&opts, pc);
        console.run(events, lines, signals).await
    })
}

/// Reads stdin on a plain thread, one line per message; the channel closes at end of input.
fn spawn_stdin_reader() -> Result<Receiver<String>> {
    let (tx, rx) = async_channel::unbounded();
    std::thread::Builder::new()
        .name("smolrtc-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if tx.send_blocking(line).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("stdin: {e}");
                        break;
                    }
                }
            }
        })?;
    Ok(rx)
}

/// Where the exchange of descriptions stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the remote description from stdin.
    AwaitRemote,
    /// Waiting for gathering to complete, to print the local description.
    Gathering,
    /// Both descriptions are set: the data-channel flow runs.
    Running,
}

/// One thing the event loop reacts to.
enum Input {
    /// A peer connection event; `None` once its stream has ended.
    Event(Option<Event>),
    /// A line from stdin; `None` at end of input.
    Line(Option<String>),
    /// SIGINT or SIGTERM.
    Signal(Signal),
    /// `bear-noises`' delay is over.
    BearTimer,
}

/// What the event loop does next.
enum Step {
    Continue,
    /// Shut down, then return this.
    Stop(&'static str, Result<()>),
}

struct Console {
    name: &'static str,
    offering: bool,
    pc: PeerConnection,
    phase: Phase,
    stdin_open: bool,
    /// Channels this side created: the flow acts on their open events.
    own: Vec<DataChannel>,
    /// Every channel seen (own and the peer's) and not closed yet, to close at the end.
    channels: Vec<DataChannel>,
    inband_created: bool,
    /// The connection state `closed` was seen.
    connection_closed: bool,
    /// The ICE connection state `closed` was seen: the last step of the teardown, after
    /// DTLS close_notify went out. Exiting before it can leave the peer uninformed.
    ice_closed: bool,
    bear: Option<(Timer, DataChannel)>,
}

impl Console {
    fn new(opts: &Options, pc: PeerConnection) -> Self {
        let offering = opts.offering();
        Self {
            name: if offering { "A" } else { "B" },
            offering,
            pc,
            phase: if offering {
                Phase::Gathering
            } else {
                Phase::AwaitRemote
            },
            stdin_open: true,
            own: Vec::new(),
            channels: Vec::new(),
            inband_created: false,
            connection_closed: false,
            ice_closed: false,
            bear: None,
        }
    }

    async fn run(
        &mut self,
        mut events: EventStream,
        lines: Receiver<String>,
        mut signals: Signals,
    ) -> Result<()> {
        let cat = self
            .pc
            .create_data_channel(CAT_NOISES, ChannelInit::negotiated(0))
            .await?;
        self.own.push(cat.clone());
        self.channels.push(cat);
        if self.offering {
            let offer = self.pc.create_offer().await?;
            self.pc.set_local_description(offer).await?;
        } else {
            prompt();
        }
        loop {
            let input = self.next_input(&mut events, &lines, &mut signals).await;
            let step = match input {
                Input::Event(Some(event)) => self.on_event(event).await?,
                Input::Event(None) => Step::Stop("the connection is gone", Ok(())),
                Input::Line(Some(line)) => self.on_line(&line).await?,
                Input::Line(None) => self.on_eof(),
                Input::Signal(signal) => Step::Stop(signal_name(signal), Ok(())),
                Input::BearTimer => {
                    self.on_bear_timer().await;
                    Step::Continue
                }
            };
            if let Step::Stop(reason, result) = step {
                self.shutdown(reason, &mut events, &mut signals).await;
                return result;
            }
        }
    }

    /// Waits for the next input. Stdin is read only while a description is expected or the
    /// flow runs; lines typed meanwhile wait in the channel.
    async fn next_input(
        &mut self,
        events: &mut EventStream,
        lines: &Receiver<String>,
        signals: &mut Signals,
    ) -> Input {
        let read_stdin = self.stdin_open && self.phase != Phase::Gathering;
        let bear = &mut self.bear;
        let signal = async {
            match signals.next().await {
                Some(Ok(signal)) => Input::Signal(signal),
                _ => future::pending().await,
            }
        };
        let event = async { Input::Event(events.next().await) };
        let line = async {
            if read_stdin {
                Input::Line(lines.recv().await.ok())
            } else {
                future::pending().await
            }
        };
        let timer = async {
            match bear {
                Some((timer, _)) => {
                    timer.await;
                    Input::BearTimer
                }
                None => future::pending().await,
            }
        };
        future::or(signal, future::or(event, future::or(line, timer))).await
    }

    /// Logs one event (the stable lines listed in the module documentation).
    fn log_event(&self, event: &Event) {
        let n = self.name;
        match event {
            Event::NegotiationNeeded => log::info!("({n}) Negotiation needed"),
            Event::IceGatheringState(s) => log::info!("({n}) ICE gatherer state: {s}"),
            Event::IceCandidate(Some(c)) => log::info!("({n}) ICE candidate: {}", c.candidate),
            Event::IceCandidate(None) => log::info!("({n}) ICE gatherer last local candidate"),
            Event::SignalingState(s) => log::info!("({n}) Signaling state: {s}"),
            Event::IceConnectionState(s) => log::info!("({n}) ICE connection state: {s}"),
            Event::ConnectionState(s) => log::info!("({n}) Connection state: {s}"),
            Event::Error(e) => log::warn!("({n}) Error: {e}"),
            Event::DataChannel(ch) => {
                log::info!("({n}) New data channel instance: {}", ch.label())
            }
            Event::ChannelOpen(ch) => log::info!("({n}) Data channel open: {}", ch.label()),
            Event::ChannelMessage(ch, message) => log::info!(
                "({n}) Incoming message for data channel {}: {} bytes",
                ch.label(),
                message.len()
            ),
            Event::ChannelBufferedAmountLow(ch) => {
                log::info!("({n}) Data channel buffered amount low: {}", ch.label())
            }
            Event::ChannelClosed(ch) => log::info!("({n}) Data channel closed: {}", ch.label()),
            Event::SelectedCandidatePair { local, remote } => {
                log::info!("({n}) ICE selected candidate pair: {local} <-> {remote}")
            }
            // Event is non_exhaustive: a variant added later is logged, not a build error.
            #[allow(unreachable_patterns)]
            other => log::debug!("({n}) {other:?}"),
        }
    }

    /// Logs an event and moves the flow on.
    async fn on_event(&mut self, event: Event) -> Result<Step> {
        self.log_event(&event);
        match event {
            Event::IceCandidate(None) if self.phase == Phase::Gathering => {
                self.print_local_description().await?;
            }
            Event::ConnectionState(ConnectionState::Connected) if !self.inband_created => {
                self.inband_created = true;
                let label = if self.offering {
                    BEAR_NOISES
                } else {
                    LION_NOISES
                };
                let ch = self
                    .pc
                    .create_data_channel(label, ChannelInit::default())
                    .await?;
                self.own.push(ch.clone());
                self.channels.push(ch);
            }
            Event::ConnectionState(ConnectionState::Failed) => {
                return Ok(Step::Stop(
                    "the connection failed",
                    Err(Error::InvalidState("the peer connection failed".into())),
                ))
            }
            Event::ConnectionState(ConnectionState::Closed) => {
                self.connection_closed = true;
                return Ok(Step::Stop("the connection was closed", Ok(())));
            }
            Event::IceConnectionState(IceConnectionState::Closed) => self.ice_closed = true,
            Event::DataChannel(ch) => self.channels.push(ch),
            Event::ChannelClosed(ch) => self.channels.retain(|c| *c != ch),
            Event::ChannelOpen(ch) if self.own.contains(&ch) => match ch.label() {
                CAT_NOISES | LION_NOISES => self.send(&ch, SMALL_MESSAGE).await,
                BEAR_NOISES => self.bear = Some((Timer::after(BEAR_DELAY), ch)),
                _ => {}
            },
            _ => {}
        }
        Ok(Step::Continue)
    }

    async fn on_line(&mut self, line: &str) -> Result<Step> {
        if line.trim().is_empty() {
            return Ok(Step::Continue);
        }
        if self.phase != Phase::AwaitRemote {
            eprintln!("Ignoring input: the remote description is already set.");
            return Ok(Step::Continue);
        }
        let expected = if self.offering {
            SdpType::Answer
        } else {
            SdpType::Offer
        };
        let description = match parse_remote_as(line, expected) {
            Ok(d) => d,
            Err(why) => {
                invalid(&why);
                return Ok(Step::Continue);
            }
        };
        log::info!("({}) Applying remote description", self.name);
        if let Err(e) = self.pc.set_remote_description(description).await {
            invalid(&e.to_string());
            return Ok(Step::Continue);
        }
        if self.offering {
            self.phase = Phase::Running;
        } else {
            let answer = self.pc.create_answer().await?;
            self.pc.set_local_description(answer).await?;
            self.phase = Phase::Gathering;
        }
        Ok(Step::Continue)
    }

    fn on_eof(&mut self) -> Step {
        self.stdin_open = false;
        if self.phase == Phase::AwaitRemote {
            Step::Stop(
                "end of input",
                Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "standard input closed before a valid remote description was read",
                ))),
            )
        } else {
            Step::Stop("end of input", Ok(()))
        }
    }

    async fn on_bear_timer(&mut self) {
        let Some((_, ch)) = self.bear.take() else {
            return;
        };
        self.send(&ch, LARGE_MESSAGE).await;
        if self.offering {
            log::info!("({}) Closing data channel {}", self.name, ch.label());
            ch.close();
        }
    }

    async fn print_local_description(&mut self) -> Result<()> {
        let description = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| Error::InvalidState("no local description".into()))?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", description.to_json())?;
        stdout.flush()?;
        drop(stdout);
        log::info!("({}) Local description printed on stdout", self.name);
        if self.offering {
            self.phase = Phase::AwaitRemote;
            prompt();
        } else {
            self.phase = Phase::Running;
        }
        Ok(())
    }

    async fn send(&self, ch: &DataChannel, len: usize) {
        log::info!("({}) Sending {len} bytes on {}", self.name, ch.label());
        if let Err(e) = ch.send(Message::from(vec![b'M'; len])).await {
            log::warn!("({}) Cannot send on {}: {e}", self.name, ch.label());
        }
    }

    /// Closes every channel and the connection, logs the closing events for up to
    /// [`CLOSE_WAIT`], and says bye. A second signal cuts the wait short.
    async fn shutdown(&mut self, reason: &str, events: &mut EventStream, signals: &mut Signals) {
        let n = self.name;
        log::info!("({n}) Closing ({reason})");
        self.bear = None;
        for ch in &self.channels {
            if !matches!(ch.state(), ChannelState::Closing | ChannelState::Closed) {
                log::info!("({n}) Closing data channel {}", ch.label());
                ch.close();
            }
        }
        self.pc.close().await;
        let wait = async {
            while !(self.connection_closed && self.ice_closed && self.channels.is_empty()) {
                let Some(event) = events.next().await else {
                    break;
                };
                // Only logging from here: the flow is over.
                self.log_event(&event);
                match event {
                    Event::ConnectionState(ConnectionState::Closed) => {
                        self.connection_closed = true
                    }
                    Event::IceConnectionState(IceConnectionState::Closed) => self.ice_closed = true,
                    Event::ChannelClosed(ch) => self.channels.retain(|c| *c != ch),
                    _ => {}
                }
            }
        };
        let deadline = async {
            Timer::after(CLOSE_WAIT).await;
        };
        let second_signal = async {
            while let Some(s) = signals.next().await {
                if s.is_ok() {
                    break;
                }
            }
        };
        future::or(wait, future::or(deadline, second_signal)).await;
        log::info!("({n}) bye");
    }
}

fn prompt() {
    eprintln!("{PROMPT}");
}

fn invalid(why: &str) {
    eprintln!("Invalid remote description: {why}");
    prompt();
}

fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Int => "SIGINT",
        Signal::Term => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_remote_names_the_problem() {
        assert!(parse_remote("hello").unwrap_err().contains("not JSON"));
        assert!(parse_remote("[1]")
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(parse_remote(r#"{"type":"rollback"}"#)
            .unwrap_err()
            .contains("expected offer or answer"));
        let bad = parse_remote(r#"{"type":"offer","sdp":"v=0\r\nbogus\r\n"}"#).unwrap_err();
        assert!(bad.starts_with("bad SDP: "), "{bad}");
        assert!(bad.contains("line"), "{bad}");
        let wrong = parse_remote_as(r#"{"type":"offer","sdp":"v=0"}"#, SdpType::Answer);
        assert!(wrong
            .unwrap_err()
            .starts_with("expected an answer, got an offer"));
    }
}
