//! The peer actor: signaling state, descriptions, and the connection state derived from
//! the ICE and DTLS actors' reports. It wires the remote description into the pipeline:
//! ICE credentials and candidates, the DTLS role (RFC 8842) and fingerprints, and the
//! remote's max-message-size for SCTP.

use super::{ConnectionState, Event, SignalingState};
use crate::dtls::{DtlsMsg, DtlsReport};
use crate::error::{ArgumentError, IceError, Result, StateError};
use crate::ice::{GatheringState, IceConnectionState, IceMsg, IceReport};
use crate::runtime::{self, Actor, Link, Reply};
use crate::sctp::{SctpMsg, SctpReport, DEFAULT_REMOTE_MAX_MESSAGE_SIZE};
use crate::sdp::{
    self, Description, Fingerprint, IceCandidateInit, LocalSession, RemoteDescription, SdpType,
    Setup,
};
use std::task::{Context, Poll};
use std::time::Instant;

/// Inputs of the peer actor: API calls and the other actors' reports.
pub(crate) enum PeerMsg {
    Cmd(PeerCmd),
    Ice(IceReport),
    Dtls(DtlsReport),
    Sctp(SctpReport),
}

pub(crate) enum PeerCmd {
    CreateOffer(Reply<Result<Description>>),
    CreateAnswer(Reply<Result<Description>>),
    SetLocal(Description, Reply<Result<()>>),
    SetRemote(Description, Reply<Result<()>>),
    AddCandidate(IceCandidateInit, Reply<Result<()>>),
    LocalDescription(Reply<Option<Description>>),
    RemoteDescription(Reply<Option<Description>>),
    States(Reply<(SignalingState, GatheringState, ConnectionState)>),
    ChannelCreated,
    RestartIce(Reply<Result<()>>),
    AddIceServers(Vec<crate::ice::IceServer>, Reply<Result<()>>),
    Close(Option<Reply<()>>),
    /// Answer the next remote offer with this plan (its audio/video tracks, its data
    /// section or none): the media actor gets the tracks and where keyframe requests go.
    /// A track of the application's (`add_track`); answers its number.
    #[cfg(feature = "media")]
    AddTrack(
        crate::media::TrackInit,
        async_channel::Sender<crate::media::local::TrackInput>,
        Reply<Result<usize>>,
    ),
    /// A track to receive (`add_transceiver`).
    #[cfg(feature = "media")]
    AddTransceiver(
        crate::media::MediaKind,
        crate::media::TransceiverInit,
        Reply<Result<()>>,
    ),
    #[cfg(feature = "media")]
    MediaPlan(
        Box<sdp::AnswerPlan>,
        crate::media::actor::KeyframeSink,
        Reply<Result<()>>,
    ),
}

/// ICE credentials from the crypto RNG: 16-char ufrag, 32-char password (RFC 8839 ice-char).
pub(crate) fn ice_credentials() -> Result<(String, String)> {
    const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let provider = crate::dtls::crypto_provider()?;
    let mut raw = [0u8; 48];
    provider
        .random()
        .fill(&mut raw)
        .map_err(|e| IceError::Random(e.to_string()))?;
    let s: String = raw
        .iter()
        .map(|b| ICE_CHARS[(b & 63) as usize] as char)
        .collect();
    Ok((s[..16].to_owned(), s[16..].to_owned()))
}

const DEFAULT_MID: &str = "0";
/// Longest `close()` waits for SCTP ABORT, DTLS close_notify and the sockets to go.
const TEARDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The transport (ICE checks, DTLS), started by the first remote description.
enum Transport {
    NotStarted,
    Started {
        /// Our ICE role.
        controlling: bool,
        /// The remote ICE credentials in use (a change in an offer is an ICE restart).
        remote_creds: (String, String),
    },
}

/// An ICE restart we asked for (`restart_ice()`); a restart the remote starts is applied
/// at once.
enum IceRestart {
    Idle,
    /// The next offer carries new credentials.
    Wanted,
    /// An offer with these new credentials was created, not yet set locally.
    Offered(String, String),
    /// Our offer with new credentials is set: the answer's credentials start new checks.
    Applied,
}

/// Whether the data section needs an offer/answer exchange.
#[derive(PartialEq)]
enum Negotiation {
    /// Nothing negotiated, nothing asked for.
    Initial,
    /// A channel was created: `NegotiationNeeded` was sent.
    Needed,
    /// An offer/answer exchange completed.
    Done,
}

/// The DTLS transport as its reports tell it; a later report never moves it back (a
/// failure stays a failure).
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Dtls {
    New,
    Connecting,
    Connected,
    Failed,
}

/// The ordered teardown (docs/ARCHITECTURE.md, "Shutdown"): started by failure or close, done once ICE, the
/// last of the chain, has closed its sockets.
enum Teardown {
    NotStarted,
    Running {
        /// `close()` calls waiting for it to finish.
        waiters: Vec<Reply<()>>,
        /// When they are answered anyway.
        deadline: Option<Instant>,
    },
    Done,
}

pub(crate) struct PeerActor {
    name: String,
    config: super::Config,
    fingerprint: Fingerprint,
    ufrag: String,
    pwd: String,
    session_id: u64,
    session_version: u64,
    signaling: SignalingState,
    /// Our last created offer/answer kind and setup role, for an implicit set_local.
    pending_local: Option<(SdpType, Setup, String)>,
    /// The description set locally: kind, setup and mid (candidates are added on read).
    local: Option<(SdpType, Setup, String)>,
    remote: Option<(Description, RemoteDescription)>,
    /// How to answer audio, video and data sections (the service's streams).
    #[cfg(feature = "media")]
    plan: Option<sdp::AnswerPlan>,
    #[cfg(feature = "media")]
    media: Link<crate::media::actor::MediaMsg>,
    /// The media actor's inbox, handed to the application's tracks.
    #[cfg(feature = "media")]
    media_tx: async_channel::Sender<Vec<crate::media::actor::MediaMsg>>,
    /// The application's tracks (`add_track`), in order.
    #[cfg(feature = "media")]
    local_tracks: Vec<(
        crate::media::TrackInit,
        async_channel::Sender<crate::media::local::TrackInput>,
    )>,
    /// The media sections of our offer (tracks and receivers), once one was created.
    #[cfg(feature = "media")]
    offered: Vec<sdp::OfferedSection>,
    /// The tracks to receive (`add_transceiver`), one per kind.
    #[cfg(feature = "media")]
    receive: Vec<(crate::media::MediaKind, crate::media::TransceiverInit)>,
    /// ICE checks and DTLS: not started, or started with our role and the remote's
    /// credentials.
    transport: Transport,
    /// An ICE restart we asked for.
    restart: IceRestart,
    negotiation: Negotiation,
    candidates: Vec<String>,
    gathering: GatheringState,
    ice_state: IceConnectionState,
    dtls: Dtls,
    connection: ConnectionState,
    teardown: Teardown,
    /// Every handle is gone: the last flush is done and the actor ends.
    done: bool,
    ice: Link<IceMsg>,
    dtls_link: Link<DtlsMsg>,
    sctp: Link<SctpMsg>,
    events: Link<Event>,
}

impl PeerActor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        config: super::Config,
        fingerprint: Fingerprint,
        ufrag: String,
        pwd: String,
        ice_ok: bool,
        ice: Link<IceMsg>,
        dtls: Link<DtlsMsg>,
        sctp: Link<SctpMsg>,
        #[cfg(feature = "media")] (media, media_tx): (
            Link<crate::media::actor::MediaMsg>,
            async_channel::Sender<Vec<crate::media::actor::MediaMsg>>,
        ),
        events: Link<Event>,
    ) -> Self {
        let session_id = u64::from_le_bytes(ufrag.as_bytes()[..8].try_into().unwrap_or([1; 8]))
            & 0x3fff_ffff_ffff_ffff;
        Self {
            name,
            config,
            fingerprint,
            ufrag,
            pwd,
            session_id,
            session_version: 1,
            signaling: SignalingState::Stable,
            pending_local: None,
            local: None,
            remote: None,
            #[cfg(feature = "media")]
            plan: None,
            #[cfg(feature = "media")]
            media,
            #[cfg(feature = "media")]
            media_tx,
            #[cfg(feature = "media")]
            local_tracks: Vec::new(),
            #[cfg(feature = "media")]
            receive: Vec::new(),
            #[cfg(feature = "media")]
            offered: Vec::new(),
            transport: Transport::NotStarted,
            restart: IceRestart::Idle,
            negotiation: Negotiation::Initial,
            candidates: Vec::new(),
            gathering: GatheringState::New,
            ice_state: if ice_ok {
                IceConnectionState::New
            } else {
                IceConnectionState::Failed
            },
            dtls: Dtls::New,
            connection: ConnectionState::New,
            teardown: Teardown::NotStarted,
            done: false,
            ice,
            dtls_link: dtls,
            sctp,
            events,
        }
    }

    /// Answers the `close()` calls waiting for the teardown.
    fn release_close_waiters(&mut self) {
        if let Teardown::Running { waiters, deadline } = &mut self.teardown {
            *deadline = None;
            for r in waiters.drain(..) {
                let _ = r.try_send(());
            }
        }
    }

    fn closed(&self) -> bool {
        self.signaling == SignalingState::Closed
    }

    fn log_state(&self, what: &str, value: &dyn std::fmt::Display) {
        log::info!(target: crate::EVENT_LOG_TARGET, "[{}] {what}: {value}", self.name);
    }

    fn handle_msg(&mut self, msg: PeerMsg) {
        match msg {
            PeerMsg::Cmd(cmd) => self.command(cmd),
            PeerMsg::Ice(r) => self.ice_report(r),
            PeerMsg::Dtls(r) => self.dtls_report(r),
            PeerMsg::Sctp(r) => match r {
                SctpReport::Connected => log::info!("[{}] SCTP connected", self.name),
                SctpReport::Closed(why) => log::info!("[{}] SCTP closed: {why}", self.name),
            },
        }
    }

    fn command(&mut self, cmd: PeerCmd) {
        match cmd {
            PeerCmd::CreateOffer(r) => {
                let _ = r.try_send(self.create_offer());
            }
            PeerCmd::CreateAnswer(r) => {
                let _ = r.try_send(self.create_answer());
            }
            PeerCmd::SetLocal(d, r) => {
                let _ = r.try_send(self.set_local(d));
            }
            PeerCmd::SetRemote(d, r) => {
                let res = self.set_remote(d);
                if let Err(e) = &res {
                    log::warn!("[{}] remote description refused: {e}", self.name);
                }
                let _ = r.try_send(res);
            }
            PeerCmd::AddCandidate(c, r) => match self.add_candidate(c) {
                // The ICE actor answers: it knows whether the candidate fits.
                Ok(Some(line)) => self.ice.push(IceMsg::RemoteCandidate(line, Some(r))),
                Ok(None) => {
                    let _ = r.try_send(Ok(()));
                }
                Err(e) => {
                    let _ = r.try_send(Err(e));
                }
            },
            PeerCmd::LocalDescription(r) => {
                let _ = r.try_send(self.local_description());
            }
            PeerCmd::RemoteDescription(r) => {
                let _ = r.try_send(self.remote.as_ref().map(|(d, _)| d.clone()));
            }
            PeerCmd::States(r) => {
                let _ = r.try_send((self.signaling, self.gathering, self.connection));
            }
            PeerCmd::ChannelCreated => self.channel_created(),
            PeerCmd::RestartIce(r) => {
                let _ = r.try_send(self.restart_ice());
            }
            PeerCmd::AddIceServers(servers, r) => {
                let res = self.check_open();
                if res.is_ok() {
                    self.ice.push(IceMsg::AddServers(servers));
                }
                let _ = r.try_send(res);
            }
            PeerCmd::Close(r) => {
                self.close();
                if let Some(r) = r {
                    self.wait_for_teardown(r);
                }
            }
            #[cfg(feature = "media")]
            PeerCmd::AddTrack(init, tx, r) => {
                let _ = r.try_send(self.add_track(init, tx));
            }
            #[cfg(feature = "media")]
            PeerCmd::AddTransceiver(kind, init, r) => {
                let _ = r.try_send(self.add_transceiver(kind, init));
            }
            #[cfg(feature = "media")]
            PeerCmd::MediaPlan(plan, keyframes, r) => {
                let _ = r.try_send(self.set_media_plan(*plan, keyframes));
            }
        }
    }

    /// The first channel of a connection not negotiated yet asks for negotiation.
    fn channel_created(&mut self) {
        if self.negotiation == Negotiation::Initial && !self.closed() {
            self.negotiation = Negotiation::Needed;
            log::info!(target: crate::EVENT_LOG_TARGET, "[{}] negotiation needed", self.name);
            self.events.push(Event::NegotiationNeeded);
        }
    }

    /// `restartIce()`: the next offer restarts ICE (asked for once while one is pending).
    fn restart_ice(&mut self) -> Result<()> {
        let res = self.check_open();
        if res.is_ok() && matches!(self.restart, IceRestart::Idle) {
            self.restart = IceRestart::Wanted;
            log::info!("[{}] ICE restart requested", self.name);
            if matches!(self.transport, Transport::Started { .. }) {
                self.events.push(Event::NegotiationNeeded);
            }
        }
        res
    }

    /// Answers `r` once ICE (the last actor of the chain) has closed its sockets.
    fn wait_for_teardown(&mut self, r: Reply<()>) {
        let ice_gone = self.ice_state == IceConnectionState::Closed || self.ice.is_closed();
        match &mut self.teardown {
            Teardown::Running { waiters, deadline } if !ice_gone => {
                waiters.push(r);
                deadline.get_or_insert(Instant::now() + TEARDOWN_TIMEOUT);
            }
            _ => {
                let _ = r.try_send(());
            }
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed() {
            Err(StateError::PeerClosed.into())
        } else {
            Ok(())
        }
    }

    fn local_session(&self, setup: Setup, mid: &str) -> LocalSession {
        LocalSession {
            session_id: self.session_id,
            session_version: self.session_version,
            ice_ufrag: self.ufrag.clone(),
            ice_pwd: self.pwd.clone(),
            fingerprint: self.fingerprint.clone(),
            setup,
            mid: mid.to_owned(),
            sctp_port: 5000,
            max_message_size: self.config.sctp.max_message_size as u64,
            candidates: self.candidates.clone(),
            end_of_candidates: self.gathering == GatheringState::Complete,
            ice_options_trickle: true,
        }
    }

    fn create_offer(&mut self) -> Result<Description> {
        self.check_open()?;
        if self.signaling == SignalingState::HaveRemoteOffer {
            return Err(StateError::OfferWhileRemoteOffer.into());
        }
        let mid = self
            .local
            .as_ref()
            .map(|(_, _, m)| m.clone())
            .unwrap_or_else(|| DEFAULT_MID.to_owned());
        let started = matches!(self.transport, Transport::Started { .. });
        if started && matches!(self.restart, IceRestart::Wanted | IceRestart::Applied) {
            let (ufrag, pwd) = ice_credentials()?;
            self.restart = IceRestart::Offered(ufrag, pwd);
        }
        let mut session = self.local_session(Setup::ActPass, &mid);
        if let IceRestart::Offered(ufrag, pwd) = &self.restart {
            session.ice_ufrag = ufrag.clone();
            session.ice_pwd = pwd.clone();
        }
        self.pending_local = Some((SdpType::Offer, Setup::ActPass, mid.clone()));
        #[cfg(feature = "media")]
        self.plan_offer();
        Ok(Description {
            kind: SdpType::Offer,
            sdp: self.write_offer(&session),
        })
    }

    /// Our DTLS role when answering `remote` (RFC 8842 §5.3): active unless it is.
    fn answer_setup(remote: &RemoteDescription) -> Setup {
        match remote.setup {
            Some(Setup::Active) => Setup::Passive,
            _ => Setup::Active,
        }
    }

    fn create_answer(&mut self) -> Result<Description> {
        self.check_open()?;
        if self.signaling != SignalingState::HaveRemoteOffer {
            return Err(StateError::AnswerWithoutOffer(self.signaling).into());
        }
        let (_, remote) = self
            .remote
            .as_ref()
            .expect("have-remote-offer has a remote");
        let setup = Self::answer_setup(remote);
        let mid = remote
            .transport_mid
            .clone()
            .unwrap_or_else(|| DEFAULT_MID.to_owned());
        let sdp = self.write_answer(&self.local_session(setup, &mid), remote);
        self.pending_local = Some((SdpType::Answer, setup, mid));
        Ok(Description {
            kind: SdpType::Answer,
            sdp,
        })
    }

    fn set_signaling(&mut self, s: SignalingState) {
        if self.signaling != s {
            self.signaling = s;
            self.log_state("signaling state", &s);
            self.events.push(Event::SignalingState(s));
        }
    }

    fn set_local(&mut self, d: Description) -> Result<()> {
        self.check_open()?;
        let (kind, setup, mid) = match &self.pending_local {
            Some(p) if p.0 == d.kind => p.clone(),
            _ => return Err(StateError::NotCreated(d.kind).into()),
        };
        // Our own text is regenerated from state; a caller's edits are not supported.
        if !d.sdp.is_empty() {
            sdp::parse_description(&d.sdp)?;
        }
        match (kind, self.signaling) {
            (SdpType::Offer, SignalingState::Stable | SignalingState::HaveLocalOffer) => {
                if let IceRestart::Offered(ufrag, pwd) = &self.restart {
                    let (ufrag, pwd) = (ufrag.clone(), pwd.clone());
                    self.restart = IceRestart::Applied;
                    self.apply_local_restart(ufrag, pwd);
                }
                self.set_signaling(SignalingState::HaveLocalOffer);
            }
            (SdpType::Answer, SignalingState::HaveRemoteOffer) => {
                self.set_signaling(SignalingState::Stable);
                self.negotiated();
            }
            (kind, state) => return Err(StateError::LocalDescription { kind, state }.into()),
        }
        self.local = Some((kind, setup, mid));
        self.pending_local = None;
        if self.gathering == GatheringState::New {
            self.gathering = GatheringState::Gathering;
            self.log_state("ICE gathering state", &self.gathering);
            self.events
                .push(Event::IceGatheringState(GatheringState::Gathering));
            self.ice.push(IceMsg::Gather);
        }
        Ok(())
    }

    fn negotiated(&mut self) {
        self.negotiation = Negotiation::Done;
        self.session_version += 1;
    }

    /// `setRemoteDescription`: checked, then the transport started (or ICE restarted), the
    /// candidates handed to ICE, and the signaling state moved on.
    fn set_remote(&mut self, d: Description) -> Result<()> {
        self.check_open()?;
        let remote = sdp::parse_description(&d.sdp)?;
        #[cfg(feature = "media")]
        if d.kind == SdpType::Offer && self.remote.is_none() {
            self.plan_local_tracks(&remote)?;
        }
        #[cfg(feature = "media")]
        if d.kind == SdpType::Answer && self.remote.is_none() {
            self.plan_answered(&remote)?;
        }
        self.check_data_section(&remote)?;
        check_fingerprints(&remote)?;
        let is_offer = match (d.kind, self.signaling) {
            (SdpType::Offer, SignalingState::Stable) => true,
            (SdpType::Answer, SignalingState::HaveLocalOffer) => false,
            (kind, state) => return Err(StateError::RemoteDescription { kind, state }.into()),
        };
        let dtls_client = Self::dtls_client(is_offer, &remote)?;
        let creds = (remote.ice_ufrag.clone(), remote.ice_pwd.clone());
        if matches!(self.transport, Transport::Started { .. }) {
            self.renegotiate_ice(is_offer, creds)?;
        } else {
            self.start_transport(is_offer, dtls_client, &remote, creds);
        }
        // One BUNDLE transport with rtcp-mux: component 2 (a separate RTCP port) is unused.
        for c in remote.candidates.iter().filter(|c| is_component_1(c)) {
            self.ice.push(IceMsg::RemoteCandidate(c.clone(), None));
        }
        if remote.end_of_candidates {
            self.ice.push(IceMsg::EndOfCandidates);
        }
        self.remote = Some((d, remote));
        if is_offer {
            self.set_signaling(SignalingState::HaveRemoteOffer);
        } else {
            self.set_signaling(SignalingState::Stable);
            self.negotiated();
        }
        Ok(())
    }

    /// Whether we are the DTLS client (RFC 8842): as we will answer an offer, or as an
    /// answer to our `actpass` offer says.
    fn dtls_client(is_offer: bool, remote: &RemoteDescription) -> Result<bool> {
        if is_offer {
            return Ok(Self::answer_setup(remote) == Setup::Active);
        }
        match remote.setup {
            Some(Setup::Active) | None => Ok(false),
            Some(Setup::Passive) => Ok(true),
            Some(s) => Err(ArgumentError::AnswerSetup(s).into()),
        }
    }

    /// The first remote description: ICE checks start in our role (the offerer controls,
    /// and so does anyone facing an ICE-lite peer), SCTP learns the remote's
    /// max-message-size, DTLS its role and the fingerprints to accept.
    fn start_transport(
        &mut self,
        is_offer: bool,
        dtls_client: bool,
        remote: &RemoteDescription,
        creds: (String, String),
    ) {
        let controlling = !is_offer || remote.ice_lite;
        self.start_checks(controlling, creds);
        self.sctp.push(SctpMsg::Configure {
            remote_max_message_size: remote
                .data
                .as_ref()
                .and_then(|d| d.max_message_size)
                .map_or(DEFAULT_REMOTE_MAX_MESSAGE_SIZE, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
        });
        log::info!(
            "[{}] DTLS role: {}",
            self.name,
            if dtls_client {
                "client (active)"
            } else {
                "server (passive)"
            }
        );
        let (data, media) = self.answer_carries();
        self.dtls_link.push(DtlsMsg::Start {
            client: dtls_client,
            remote_fingerprints: remote.fingerprints.clone(),
            data,
            media,
        });
    }

    /// A later remote description: new remote credentials in an offer restart ICE (RFC
    /// 8445 §9: so do we, with new credentials); the answer to our restarting offer starts
    /// the new checks. DTLS and SCTP carry on.
    fn renegotiate_ice(&mut self, is_offer: bool, creds: (String, String)) -> Result<()> {
        let Transport::Started {
            controlling,
            remote_creds,
        } = &self.transport
        else {
            return Ok(());
        };
        let (controlling, changed) = (*controlling, *remote_creds != creds);
        if is_offer && changed {
            let (ufrag, pwd) = ice_credentials()?;
            self.restart = IceRestart::Idle;
            self.apply_local_restart(ufrag, pwd);
            self.start_checks(controlling, creds);
        } else if !is_offer && matches!(self.restart, IceRestart::Applied) {
            // The restart is done: later offers keep these credentials, and a new
            // restart_ice() asks for negotiation again.
            self.restart = IceRestart::Idle;
            self.start_checks(controlling, creds);
        } else if changed {
            log::warn!(
                "[{}] remote ICE credentials changed in an answer to an offer without \
                 an ICE restart; keeping the old ones",
                self.name
            );
        }
        Ok(())
    }

    /// Installs new local ICE credentials; candidates and the selected pair stay in use
    /// until new checks pick a pair, so open channels carry on.
    fn apply_local_restart(&mut self, ufrag: String, pwd: String) {
        log::info!("[{}] ICE restart (new local credentials)", self.name);
        self.ufrag = ufrag.clone();
        self.pwd = pwd.clone();
        self.ice.push(IceMsg::Restart { ufrag, pwd });
    }

    fn start_checks(&mut self, controlling: bool, creds: (String, String)) {
        self.ice.push(IceMsg::Start {
            controlling,
            ufrag: creds.0.clone(),
            pwd: creds.1.clone(),
        });
        self.transport = Transport::Started {
            controlling,
            remote_creds: creds,
        };
    }

    /// Checks a trickled candidate: the line for the ICE actor, or `None` for
    /// end-of-candidates (passed on here).
    fn add_candidate(&mut self, c: IceCandidateInit) -> Result<Option<String>> {
        self.check_open()?;
        if self.remote.is_none() {
            return Err(StateError::NoRemoteDescription.into());
        }
        let line = c.candidate.trim();
        if line.is_empty() {
            self.ice.push(IceMsg::EndOfCandidates);
            return Ok(None);
        }
        let raw = line.strip_prefix("a=").unwrap_or(line);
        let raw = raw.strip_prefix("candidate:").unwrap_or(raw);
        rtc_ice::candidate::unmarshal_candidate(raw).map_err(|e| ArgumentError::Candidate {
            candidate: line.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Some(raw.to_owned()))
    }

    /// A description without a data section is taken only when a media plan answers it.
    fn check_data_section(&self, remote: &RemoteDescription) -> Result<()> {
        if remote.data.is_some() {
            return Ok(());
        }
        #[cfg(feature = "media")]
        if self.plan.is_some() {
            return Ok(());
        }
        Err(sdp::SdpError::NoDataSection.into())
    }

    /// Whether the answer carries a data channel and media (DTLS then starts SCTP, keys
    /// SRTP, or both).
    fn answer_carries(&self) -> (bool, bool) {
        #[cfg(feature = "media")]
        if let Some(plan) = &self.plan {
            return (
                plan.data,
                !plan.tracks.is_empty() || !plan.receivers.is_empty(),
            );
        }
        (true, false)
    }

    /// Our answer: the plan's sections when there is one, else the data-only answer.
    fn write_answer(&self, local: &LocalSession, remote: &RemoteDescription) -> String {
        #[cfg(feature = "media")]
        if let Some(plan) = &self.plan {
            return sdp::write_answer_sections(local, remote, &plan.sections);
        }
        sdp::write_answer(local, remote)
    }

    /// `add_track`: one track per kind, before the first remote description.
    #[cfg(feature = "media")]
    fn add_track(
        &mut self,
        init: crate::media::TrackInit,
        tx: async_channel::Sender<crate::media::local::TrackInput>,
    ) -> Result<usize> {
        self.check_open()?;
        if self.remote.is_some() || self.plan.is_some() {
            return Err(crate::Error::invalid(
                "add_track after the remote description: tracks are negotiated with the first offer",
            ));
        }
        let kind = init.codec.kind();
        if self
            .local_tracks
            .iter()
            .any(|(t, _)| t.codec.kind() == kind)
        {
            return Err(crate::Error::invalid(format!(
                "a second {} track: at most one video and one audio track",
                kind.as_str()
            )));
        }
        self.local_tracks.push((init, tx));
        Ok(self.local_tracks.len() - 1)
    }

    /// What `add_transceiver` asked to receive.
    #[cfg(feature = "media")]
    fn receive_codecs(&self) -> sdp::ReceiveCodecs {
        use crate::media::MediaKind;
        let of = |kind| {
            self.receive
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, init)| init.codecs_for(kind))
                .unwrap_or_default()
        };
        sdp::ReceiveCodecs {
            video: of(MediaKind::Video),
            audio: of(MediaKind::Audio),
        }
    }

    /// `add_transceiver`: one receiver per kind, before the first remote description.
    #[cfg(feature = "media")]
    fn add_transceiver(
        &mut self,
        kind: crate::media::MediaKind,
        init: crate::media::TransceiverInit,
    ) -> Result<()> {
        self.check_open()?;
        if self.remote.is_some() || self.plan.is_some() {
            return Err(crate::Error::invalid(
                "add_transceiver after the remote description: tracks are negotiated with the first offer",
            ));
        }
        if self.receive.iter().any(|(k, _)| *k == kind) {
            return Err(crate::Error::invalid(format!(
                "a second {} receiver: at most one video and one audio track are received",
                kind.as_str()
            )));
        }
        self.receive.push((kind, init));
        Ok(())
    }

    /// The application's tracks answer the first offer: planned like a service stream
    /// (one section per kind, a codec that fits, or a clear error), each track told its
    /// place in the media actor, keyframe requests sent back to the track.
    #[cfg(feature = "media")]
    fn plan_local_tracks(&mut self, offer: &sdp::RemoteDescription) -> Result<()> {
        if (self.local_tracks.is_empty() && self.receive.is_empty()) || self.plan.is_some() {
            return Ok(());
        }
        let send = |kind| {
            self.local_tracks
                .iter()
                .find(|(t, _)| t.codec.kind() == kind)
                .map(|(t, _)| crate::media::SendCodec {
                    codec: t.codec,
                    profile_level_id: t.profile_level_id,
                })
        };
        let codecs = sdp::StreamCodecs {
            name: self.name.clone(),
            video: send(crate::media::MediaKind::Video),
            audio: send(crate::media::MediaKind::Audio),
        };
        let receive = self.receive_codecs();
        let plan = sdp::plan_answer_media(
            offer,
            Some(&codecs),
            &receive,
            offer.data.is_some(),
            &Default::default(),
        )
        .map_err(|e| crate::Error::invalid(format!("the offer cannot carry the tracks: {e}")))?;
        self.adopt_plan(plan)
    }

    /// Takes a plan for the application's tracks and receivers: each track told its place
    /// in the media actor, keyframe requests sent back to the track.
    #[cfg(feature = "media")]
    fn adopt_plan(&mut self, plan: sdp::AnswerPlan) -> Result<()> {
        use crate::media::local::TrackInput;
        let txs: Vec<_> = plan
            .tracks
            .iter()
            .filter_map(|p| {
                self.local_tracks
                    .iter()
                    .find(|(t, _)| t.codec.kind() == p.kind)
                    .map(|(_, tx)| tx.clone())
            })
            .collect();
        for (index, tx) in txs.iter().enumerate() {
            // Forced: a queue full of the application's frames must not lose the binding
            // (the oldest frame goes instead).
            let _ = tx.force_send(TrackInput::Bind {
                index,
                inbox: self.media_tx.clone(),
            });
        }
        let keyframes = Box::new(move |index: usize, cause| {
            if let Some(tx) = txs.get(index) {
                let _ = tx.try_send(TrackInput::KeyframeRequest(cause));
            }
        });
        self.set_media_plan(plan, keyframes)
    }

    /// The plan's received tracks: an engine configuration and queue each for the media
    /// actor, and an [`Event::Track`] each for the application.
    #[cfg(feature = "media")]
    fn receivers_of(
        &mut self,
        plan: &sdp::AnswerPlan,
    ) -> Vec<(
        crate::media::receiver::ReceiverConfig,
        crate::media::remote::TrackOutlet,
    )> {
        use crate::media::remote::{track, TrackInfo};
        plan.receivers
            .iter()
            .enumerate()
            .map(|(id, r)| {
                let mut cfg = crate::media::receiver::ReceiverConfig::new(
                    &r.negotiated,
                    r.ssrc,
                    r.remote_ssrcs.first().copied(),
                );
                if !self.config.receive_depth.is_zero() {
                    cfg.depth = self.config.receive_depth;
                }
                let (outlet, receiver) = track(TrackInfo {
                    id,
                    mid: r.mid.clone(),
                    codec: r.negotiated.codec,
                });
                log::info!(
                    "[{}] receiving {} in section {} ({})",
                    self.name,
                    r.negotiated.codec.encoding_name(),
                    r.mid,
                    r.kind.as_str()
                );
                self.events.push(Event::Track(receiver));
                (cfg, outlet)
            })
            .collect()
    }

    /// Takes the plan for the next remote offer and hands its tracks to the media actor.
    #[cfg(feature = "media")]
    fn set_media_plan(
        &mut self,
        plan: sdp::AnswerPlan,
        keyframes: crate::media::actor::KeyframeSink,
    ) -> Result<()> {
        self.check_open()?;
        if self.remote.is_some() {
            return Err(StateError::LocalDescription {
                kind: SdpType::Answer,
                state: self.signaling,
            }
            .into());
        }
        // The CNAME written in the answer's a=ssrc lines, so the reports carry the same.
        let cname = plan
            .sections
            .iter()
            .find_map(|s| match s {
                sdp::AnswerSection::Media(m) => Some(m.cname.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let tracks = plan
            .tracks
            .iter()
            .map(|t| {
                crate::media::SenderConfig::new(
                    &t.negotiated,
                    t.ssrc,
                    t.rtx_ssrc.unwrap_or(0),
                    &cname,
                    fastrand::u64(..),
                )
            })
            .collect();
        let receivers = self.receivers_of(&plan);
        self.media.push(crate::media::actor::MediaMsg::Configure {
            tracks,
            keyframes,
            receivers,
        });
        self.plan = Some(plan);
        Ok(())
    }

    /// The m-line trickled candidates belong to: with a media plan the first accepted
    /// section (BUNDLE's tagged one, whose transport every section shares), else ours.
    fn candidate_section(&self) -> (String, u16) {
        #[cfg(feature = "media")]
        if let (Some(plan), Some((_, full))) = (&self.plan, &self.remote) {
            let first = plan
                .sections
                .iter()
                .position(|a| *a != sdp::AnswerSection::Rejected);
            if let Some(i) = first {
                let mid = match &plan.sections[i] {
                    sdp::AnswerSection::Media(m) => Some(m.mid.clone()),
                    _ => full.sections.get(i).and_then(|m| m.mid.clone()),
                };
                if let Some(mid) = mid {
                    return (mid, u16::try_from(i).unwrap_or(0));
                }
            }
        }
        let mid = self
            .local
            .as_ref()
            .map(|(_, _, m)| m.clone())
            .unwrap_or_else(|| DEFAULT_MID.to_owned());
        (mid, 0)
    }

    /// Our offer: with the media sections when the application has tracks or receivers.
    fn write_offer(&self, local: &LocalSession) -> String {
        #[cfg(feature = "media")]
        if !self.offered.is_empty() {
            let media: Vec<sdp::LocalMedia> =
                self.offered.iter().map(|o| o.media.clone()).collect();
            return sdp::write_offer_sections(local, &media, true);
        }
        sdp::write_offer(local)
    }

    /// The media sections of the first offer: the application's tracks (sent) and
    /// receivers (received), one section per kind.
    #[cfg(feature = "media")]
    fn plan_offer(&mut self) {
        if !self.offered.is_empty() || self.plan.is_some() || self.remote.is_some() {
            return;
        }
        let send: Vec<crate::media::SendCodec> = self
            .local_tracks
            .iter()
            .map(|(t, _)| crate::media::SendCodec {
                codec: t.codec,
                profile_level_id: t.profile_level_id,
            })
            .collect();
        self.offered = sdp::plan_offer(&send, &self.receive_codecs());
    }

    /// The answer to our media offer: the tracks it accepted are sent, the ones it sends
    /// are received.
    #[cfg(feature = "media")]
    fn plan_answered(&mut self, answer: &sdp::RemoteDescription) -> Result<()> {
        if self.offered.is_empty() || self.plan.is_some() {
            return Ok(());
        }
        let plan =
            sdp::plan_from_answer(&self.offered, answer, &Default::default()).map_err(|e| {
                crate::Error::invalid(format!("the answer cannot carry the tracks: {e}"))
            })?;
        for r in &plan.rejected {
            log::info!("[{}] {r}", self.name);
        }
        self.adopt_plan(plan)
    }

    fn local_description(&self) -> Option<Description> {
        let (kind, setup, mid) = self.local.as_ref()?;
        let local = self.local_session(*setup, mid);
        let sdp = match (kind, &self.remote) {
            (SdpType::Answer, Some((_, remote))) => self.write_answer(&local, remote),
            _ => self.write_offer(&local),
        };
        Some(Description { kind: *kind, sdp })
    }

    fn ice_report(&mut self, r: IceReport) {
        match r {
            IceReport::Candidate(c) => {
                self.candidates.push(c.clone());
                let (mid, index) = self.candidate_section();
                self.events.push(Event::IceCandidate(Some(IceCandidateInit {
                    candidate: c,
                    sdp_mid: Some(mid),
                    sdp_mline_index: Some(index),
                    username_fragment: Some(self.ufrag.clone()),
                })));
            }
            IceReport::Gathering => {
                if self.gathering != GatheringState::Gathering {
                    self.gathering = GatheringState::Gathering;
                    self.log_state("ICE gathering state", &self.gathering);
                    self.events
                        .push(Event::IceGatheringState(GatheringState::Gathering));
                }
            }
            IceReport::GatheringComplete => {
                self.gathering = GatheringState::Complete;
                self.log_state("ICE gathering state", &self.gathering);
                self.events.push(Event::IceCandidate(None));
                self.events
                    .push(Event::IceGatheringState(GatheringState::Complete));
            }
            IceReport::State(s) => {
                if s == IceConnectionState::Closed {
                    self.release_close_waiters();
                    self.teardown = Teardown::Done;
                }
                if self.ice_state != s {
                    self.ice_state = s;
                    self.log_state("ICE connection state", &s);
                    self.events.push(Event::IceConnectionState(s));
                    self.update_connection();
                }
            }
            IceReport::SelectedPair { local, remote } => {
                log::info!(target: crate::EVENT_LOG_TARGET, "[{}] ICE selected pair: {local} <-> {remote}", self.name);
                self.events
                    .push(Event::SelectedCandidatePair { local, remote });
            }
            IceReport::BadCandidate(why) => {
                log::warn!("[{}] remote candidate ignored: {why}", self.name);
            }
        }
    }

    fn dtls_report(&mut self, r: DtlsReport) {
        match r {
            DtlsReport::Connecting => self.dtls_reached(Dtls::Connecting),
            DtlsReport::Connected => self.dtls_reached(Dtls::Connected),
            DtlsReport::Failed(e) => {
                self.dtls_reached(Dtls::Failed);
                log::warn!("[{}] {e}", self.name);
                self.events.push(Event::Error(e));
            }
            DtlsReport::Closed => {
                if !self.closed() && self.dtls == Dtls::Connected {
                    // The peer said goodbye (close_notify): the connection is over.
                    self.set_signaling(SignalingState::Closed);
                }
            }
        }
        self.update_connection();
    }

    fn dtls_reached(&mut self, state: Dtls) {
        if state > self.dtls {
            self.dtls = state;
        }
    }

    fn update_connection(&mut self) {
        let next = if self.closed() {
            ConnectionState::Closed
        } else if self.dtls == Dtls::Failed || self.ice_state == IceConnectionState::Failed {
            ConnectionState::Failed
        } else if self.ice_state == IceConnectionState::Disconnected {
            ConnectionState::Disconnected
        } else if matches!(
            self.ice_state,
            IceConnectionState::Connected | IceConnectionState::Completed
        ) && self.dtls == Dtls::Connected
        {
            ConnectionState::Connected
        } else if self.ice_state == IceConnectionState::Checking || self.dtls == Dtls::Connecting {
            ConnectionState::Connecting
        } else {
            self.connection
        };
        if next != self.connection {
            self.connection = next;
            self.log_state("connection state", &next);
            self.events.push(Event::ConnectionState(next));
        }
        if matches!(next, ConnectionState::Failed | ConnectionState::Closed) {
            self.teardown();
        }
    }

    /// Shutdown step 1 (docs/ARCHITECTURE.md): frees the pipeline in order. SCTP is told
    /// first; it passes the teardown on to DTLS, DTLS to ICE.
    fn teardown(&mut self) {
        if matches!(self.teardown, Teardown::NotStarted) {
            self.teardown = Teardown::Running {
                waiters: Vec::new(),
                deadline: None,
            };
            self.sctp.push(SctpMsg::Close);
            // Media stops now (ICE tells it again when it closes; an agent that never
            // started would not).
            #[cfg(feature = "media")]
            self.media.push(crate::media::actor::MediaMsg::Close);
        }
    }

    fn close(&mut self) {
        if self.closed() {
            return;
        }
        log::info!("[{}] closing", self.name);
        self.set_signaling(SignalingState::Closed);
        self.update_connection();
    }
}

impl Actor for PeerActor {
    type Msg = PeerMsg;

    async fn drain(&mut self) {
        self.ice.flush();
        #[cfg(feature = "media")]
        self.media.flush();
        self.dtls_link.flush();
        self.sctp.flush();
        self.events.flush();
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        match self.teardown {
            Teardown::Running { deadline, .. } => deadline,
            _ => None,
        }
    }

    fn handle(&mut self, _now: Instant, batch: Vec<PeerMsg>) {
        for msg in batch {
            self.handle_msg(msg);
        }
    }

    fn on_timeout(&mut self, _now: Instant) {
        log::warn!("[{}] teardown did not finish in time", self.name);
        self.release_close_waiters();
    }

    fn shutdown(&mut self, _now: Instant) {
        self.close();
        self.done = true;
    }

    fn poll_links(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        runtime::poll_links(
            &mut [
                &mut self.ice,
                &mut self.dtls_link,
                &mut self.sctp,
                &mut self.events,
            ],
            cx,
        )
    }
}

/// A candidate (`candidate:` value) of component 1 (RTP, or everything with rtcp-mux).
fn is_component_1(c: &str) -> bool {
    c.split_whitespace().nth(1) == Some("1")
}

/// A remote description must carry a fingerprint smolrtc can check (RFC 8122: sha-256).
fn check_fingerprints(remote: &RemoteDescription) -> Result<()> {
    if remote.fingerprints.is_empty() {
        return Err(ArgumentError::NoFingerprint.into());
    }
    if !remote.fingerprints.iter().any(|f| f.algorithm == "sha-256") {
        return Err(ArgumentError::NoSha256Fingerprint.into());
    }
    Ok(())
}
