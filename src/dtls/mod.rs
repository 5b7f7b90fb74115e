//! The DTLS transport actor (RFC 8842 roles, RFC 8122 fingerprints), around rtc-dtls.
//!
//! Input: DTLS records demultiplexed by the ICE agent, SCTP packets to protect, and the
//! role + remote fingerprints from the remote description. The DTLS client starts the
//! handshake once ICE has a selected pair; the remote certificate must hash to one of the
//! SDP fingerprints or the connection fails with [`Error::FingerprintMismatch`].

mod cert;

pub(crate) use cert::provider as crypto_provider;

pub use cert::Certificate;

use crate::error::{DtlsError, Error};
use crate::ice::IceMsg;
use crate::peer::PeerMsg;
use crate::runtime::{self, Actor, Link};
use crate::sctp::SctpMsg;
use crate::sdp::Fingerprint;
use bytes::{Bytes, BytesMut};
use rtc_dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig,
    VerifyPeerCertificateFn,
};
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::TransportProtocol;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Inputs of the DTLS actor.
pub(crate) enum DtlsMsg {
    /// A DTLS record datagram from the ICE agent.
    Datagram(BytesMut),
    /// An SCTP packet to protect and send.
    Send(Bytes),
    /// From the remote description: our role and the fingerprints to accept.
    Start {
        client: bool,
        remote_fingerprints: Vec<Fingerprint>,
        /// The answer has a data section: start SCTP after the handshake.
        data: bool,
        /// The answer has audio or video: key SRTP after the handshake (DTLS-SRTP).
        media: bool,
    },
    /// ICE selected a pair: the client may send its ClientHello.
    IceConnected,
    /// Send close_notify, then pass Close on to ICE.
    Close,
}

/// What the DTLS actor reports to the peer connection.
#[derive(Debug)]
pub(crate) enum DtlsReport {
    Connecting,
    Connected,
    Failed(Error),
    Closed,
}

// ICE routes the datagrams; rtc-dtls only needs a stable key for the one association.
const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);
const REMOTE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2);
const EARLY_DATAGRAMS: usize = 16;
/// DTLS record content type of handshake messages.
const CONTENT_HANDSHAKE: u8 = 22;
/// DTLS record content type of ChangeCipherSpec.
const CONTENT_CHANGE_CIPHER_SPEC: u8 = 20;
/// DTLS record header: type, version (2), epoch (2), sequence number (6), length (2).
const RECORD_HEADER: usize = 13;
/// At most one resent server flight per this long (a client repeats every second).
const RESEND_SPACING: std::time::Duration = std::time::Duration::from_millis(250);

pub(crate) struct DtlsActor {
    name: Arc<str>,
    cert: Certificate,
    endpoint: Option<Endpoint>,
    client_config: Option<Arc<HandshakeConfig>>,
    client: bool,
    ice_ready: bool,
    connecting: bool,
    handshake_done: bool,
    /// Server: our last handshake flight, resent when the client repeats its own.
    last_flight: Vec<BytesMut>,
    last_resend: Option<Instant>,
    mismatch: Arc<AtomicBool>,
    early: Vec<BytesMut>,
    closed: bool,
    /// Start SCTP after the handshake (the answer has a data section).
    data: bool,
    /// Key SRTP after the handshake (the answer has audio or video).
    media_wanted: bool,
    ice: Link<IceMsg>,
    sctp: Link<SctpMsg>,
    #[cfg(feature = "media")]
    media: Link<crate::media::actor::MediaMsg>,
    peer: Link<PeerMsg>,
}

impl DtlsActor {
    pub(crate) fn new(
        name: Arc<str>,
        cert: Certificate,
        ice: Link<IceMsg>,
        sctp: Link<SctpMsg>,
        #[cfg(feature = "media")] media: Link<crate::media::actor::MediaMsg>,
        peer: Link<PeerMsg>,
    ) -> Self {
        Self {
            name,
            cert,
            endpoint: None,
            client_config: None,
            client: false,
            ice_ready: false,
            connecting: false,
            handshake_done: false,
            last_flight: Vec::new(),
            last_resend: None,
            mismatch: Arc::new(AtomicBool::new(false)),
            early: Vec::new(),
            closed: false,
            data: true,
            media_wanted: false,
            ice,
            sctp,
            #[cfg(feature = "media")]
            media,
            peer,
        }
    }

    fn handle_msg(&mut self, now: Instant, msg: DtlsMsg) {
        if self.closed {
            return;
        }
        match msg {
            DtlsMsg::Datagram(d) => self.datagram(now, d),
            DtlsMsg::Send(p) => {
                if !self.handshake_done {
                    log::debug!("[{}] DTLS: SCTP packet before handshake dropped", self.name);
                    return;
                }
                if let Some(ep) = self.endpoint.as_mut() {
                    if let Err(e) = ep.write(now, REMOTE, &p) {
                        log::warn!("[{}] DTLS: write failed: {e}", self.name);
                    }
                }
            }
            DtlsMsg::Start {
                client,
                remote_fingerprints,
                data,
                media,
            } => {
                self.data = data;
                self.media_wanted = media;
                self.start(now, client, remote_fingerprints)
            }
            DtlsMsg::IceConnected => {
                self.ice_ready = true;
                self.connect(now);
            }
            DtlsMsg::Close => self.close(now),
        }
    }

    fn config(
        &self,
        client: bool,
        fingerprints: Vec<Fingerprint>,
    ) -> Result<HandshakeConfig, Error> {
        let provider = cert::provider()?;
        let verify_provider = provider.clone();
        let mismatch = self.mismatch.clone();
        let verify: VerifyPeerCertificateFn =
            Arc::new(move |certs: &[Vec<u8>], _| match certs.first() {
                Some(der) if cert::matches(&verify_provider, der, &fingerprints) => Ok(()),
                _ => {
                    mismatch.store(true, Ordering::Release);
                    Err(rtc_shared::error::Error::Other(
                        "remote certificate does not match the SDP fingerprint".into(),
                    ))
                }
            });
        ConfigBuilder::default()
            .with_crypto_provider(provider)
            .with_certificates(vec![self.cert.dtls.clone()])
            .with_insecure_skip_verify(true)
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .with_verify_peer_certificate(Some(verify))
            // Browsers offer use_srtp even for data-only sessions, and rtc-dtls as a server
            // refuses a ClientHello whose SRTP profiles it cannot match. No SRTP is ever keyed.
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            .build(client, Some(REMOTE))
            .map_err(|e| DtlsError::Config(e.to_string()).into())
    }

    fn start(&mut self, now: Instant, client: bool, fingerprints: Vec<Fingerprint>) {
        if self.endpoint.is_some() {
            return; // renegotiation keeps the running association
        }
        let config = match self.config(client, fingerprints) {
            Ok(c) => Arc::new(c),
            Err(e) => return self.fail(now, e),
        };
        self.client = client;
        let server = (!client).then(|| config.clone());
        self.endpoint = Some(Endpoint::new(LOCAL, TransportProtocol::UDP, server));
        if client {
            self.client_config = Some(config);
            self.connect(now);
        } else {
            self.peer.push(PeerMsg::Dtls(DtlsReport::Connecting));
        }
        for d in std::mem::take(&mut self.early) {
            self.datagram(now, d);
        }
    }

    fn connect(&mut self, now: Instant) {
        if !self.client || !self.ice_ready || self.connecting {
            return;
        }
        let (Some(ep), Some(cfg)) = (self.endpoint.as_mut(), self.client_config.clone()) else {
            return;
        };
        self.connecting = true;
        self.peer.push(PeerMsg::Dtls(DtlsReport::Connecting));
        if let Err(e) = ep.connect(now, REMOTE, cfg, None) {
            self.fail(now, DtlsError::Connect(e.to_string()).into());
        }
    }

    fn datagram(&mut self, now: Instant, d: BytesMut) {
        let d = drop_forged_ccs(d);
        if d.is_empty() {
            log::debug!(
                "[{}] DTLS: ChangeCipherSpec outside epoch 0 dropped",
                self.name
            );
            return;
        }
        let Some(ep) = self.endpoint.as_mut() else {
            if self.early.len() < EARLY_DATAGRAMS {
                self.early.push(d);
            }
            return;
        };
        if self.client && !self.connecting {
            return; // nothing to say to a server before our ClientHello
        }
        let handshake_record = d.first() == Some(&CONTENT_HANDSHAKE);
        match ep.read(now, REMOTE, None, d) {
            Ok(events) => {
                if !self.client && !self.handshake_done {
                    self.server_retransmit(now, handshake_record);
                }
                for ev in events {
                    match ev {
                        EndpointEvent::HandshakeComplete => {
                            self.handshake_done = true;
                            self.last_flight.clear();
                            log::info!(
                                "[{}] DTLS handshake complete ({})",
                                self.name,
                                if self.client { "client" } else { "server" }
                            );
                            self.peer.push(PeerMsg::Dtls(DtlsReport::Connected));
                            if self.data {
                                self.sctp.push(SctpMsg::Start {
                                    client: self.client,
                                });
                            }
                            if self.media_wanted {
                                self.key_srtp();
                            }
                        }
                        EndpointEvent::ApplicationData(data) => {
                            self.sctp.push(SctpMsg::Packet(data));
                        }
                        EndpointEvent::PeerClosed => {
                            log::info!("[{}] DTLS close_notify from the peer", self.name);
                            self.peer.push(PeerMsg::Dtls(DtlsReport::Closed));
                            self.sctp.push(SctpMsg::Close);
                            self.closed = true;
                            self.ice.push(IceMsg::Close);
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => {
                if self.mismatch.load(Ordering::Acquire) {
                    self.fail(now, Error::FingerprintMismatch);
                } else if !self.handshake_done && ep.get_connection_state(REMOTE).is_none() {
                    self.fail(now, DtlsError::Handshake(e.to_string()).into());
                } else {
                    // A stray or forged record must not end a working association.
                    log::debug!("[{}] DTLS: datagram ignored: {e}", self.name);
                }
            }
        }
    }

    /// RFC 6347 §4.2.4 on the server side, which rtc-dtls leaves out: a client that
    /// repeats its flight has lost ours, so ours goes again. A server flight is only ever
    /// an answer, so what an input produced is the flight; an input that produced nothing
    /// is the client repeating itself.
    /// DTLS-SRTP (RFC 5764 §4.2): the negotiated `use_srtp` profile, the keying material
    /// exported with its label, and an SRTP session in our role for the media actor.
    #[cfg(feature = "media")]
    fn key_srtp(&mut self) {
        use crate::media::srtp::{DtlsRole, SrtpProfile, SrtpSession, EXPORTER_LABEL};
        let Some(state) = self
            .endpoint
            .as_ref()
            .and_then(|ep| ep.get_connection_state(REMOTE))
        else {
            return;
        };
        let negotiated = state.srtp_protection_profile();
        let Some(profile) = SrtpProfile::from_dtls(negotiated) else {
            log::warn!(
                "[{}] DTLS: the peer negotiated no SRTP profile we offer ({negotiated:?}); no media",
                self.name
            );
            return;
        };
        let role = if self.client {
            DtlsRole::Client
        } else {
            DtlsRole::Server
        };
        let keyed = state
            .export_keying_material(EXPORTER_LABEL, &[], profile.keying_material_len())
            .map_err(|e| e.to_string())
            .and_then(|m| SrtpSession::new(profile, m.as_ref(), role).map_err(|e| e.to_string()));
        match keyed {
            Ok(srtp) => self
                .media
                .push(crate::media::actor::MediaMsg::Keys(Box::new(srtp))),
            Err(e) => log::warn!("[{}] DTLS-SRTP keying failed: {e}; no media", self.name),
        }
    }

    #[cfg(not(feature = "media"))]
    fn key_srtp(&mut self) {}

    fn server_retransmit(&mut self, now: Instant, handshake_record: bool) {
        let Some(ep) = self.endpoint.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some(t) = ep.poll_transmit() {
            out.push(t.message);
        }
        if !out.is_empty() {
            self.last_flight = out.clone();
        } else if handshake_record
            && !self.last_flight.is_empty()
            && self
                .last_resend
                .is_none_or(|t| now.duration_since(t) >= RESEND_SPACING)
        {
            log::debug!(
                "[{}] DTLS: the client repeated its flight; resending ours",
                self.name
            );
            self.last_resend = Some(now);
            out = self.last_flight.clone();
        }
        for m in out {
            self.ice.push(IceMsg::Transmit(m));
        }
    }

    fn drain_engine(&mut self) {
        if let Some(ep) = self.endpoint.as_mut() {
            while let Some(t) = ep.poll_transmit() {
                self.ice.push(IceMsg::Transmit(t.message));
            }
        }
    }

    fn fail(&mut self, now: Instant, e: Error) {
        if self.closed {
            return;
        }
        log::warn!("[{}] DTLS failed: {e}", self.name);
        crate::stats::add(&crate::stats::DTLS_FAILURES, 1);
        self.peer.push(PeerMsg::Dtls(DtlsReport::Failed(e)));
        self.sctp.push(SctpMsg::Close);
        self.close(now);
    }

    /// Shutdown step 3 (docs/ARCHITECTURE.md): close_notify, then ICE told to close.
    fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Some(ep) = self.endpoint.as_mut() {
            let _ = ep.close(now);
        }
        self.drain_engine();
        self.peer.push(PeerMsg::Dtls(DtlsReport::Closed));
        self.ice.push(IceMsg::Close);
    }
}

impl Actor for DtlsActor {
    type Msg = DtlsMsg;

    async fn drain(&mut self) {
        self.drain_engine();
        self.ice.flush();
        self.sctp.flush();
        #[cfg(feature = "media")]
        self.media.flush();
        self.peer.flush();
    }

    /// Closed, and close_notify handed to ICE.
    fn finished(&self) -> bool {
        self.closed && !self.ice.is_backlogged()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.endpoint.as_ref().and_then(|e| e.poll_timeout(&REMOTE))
    }

    fn handle(&mut self, now: Instant, batch: Vec<DtlsMsg>) {
        for msg in batch {
            self.handle_msg(now, msg);
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        if let Some(ep) = self.endpoint.as_mut() {
            if let Err(e) = ep.handle_timeout(REMOTE, now) {
                self.fail(now, DtlsError::Timeout(e.to_string()).into());
            }
        }
    }

    fn shutdown(&mut self, now: Instant) {
        self.close(now);
    }

    fn poll_links(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        runtime::poll_links(&mut [&mut self.ice, &mut self.sctp, &mut self.peer], cx)
    }
}

/// The datagram without its ChangeCipherSpec records of epochs other than 0.
///
/// Without renegotiation (rtc-dtls has none) a ChangeCipherSpec is only ever sent in epoch
/// 0. rtc-dtls takes one in any epoch as plaintext, without authentication, and moves the
/// peer to the next epoch, after which it discards every genuine record: one forged 14-byte
/// record from the peer's address silenced an established association (found by the
/// `datagram` fuzz target). Other records, and framing rtc-dtls will refuse, pass as they are.
fn drop_forged_ccs(d: BytesMut) -> BytesMut {
    // A whole header, content type ChangeCipherSpec, epoch other than 0.
    let forged = |r: &[u8]| {
        r.len() >= RECORD_HEADER && r[0] == CONTENT_CHANGE_CIPHER_SPEC && (r[3], r[4]) != (0, 0)
    };
    if !records(&d).any(forged) {
        return d;
    }
    let mut out = BytesMut::with_capacity(d.len());
    for r in records(&d).filter(|r| !forged(r)) {
        out.extend_from_slice(r);
    }
    out
}

/// The records of a datagram by their length fields; a truncated tail is one last piece.
fn records(d: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= d.len() {
            return None;
        }
        let start = at;
        at = match d.get(start + 11..start + RECORD_HEADER) {
            Some(len) => {
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                (start + RECORD_HEADER + len).min(d.len())
            }
            None => d.len(),
        };
        Some(&d[start..at])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
        let mut r = vec![content, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0, 0, 7]);
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn forged_change_cipher_spec_is_dropped() {
        // The fuzzer's find: a ChangeCipherSpec in epoch 1 with garbage after it.
        let forged = record(20, 1, &[0xbd; 201]);
        assert!(drop_forged_ccs(BytesMut::from(&forged[..])).is_empty());
        // In a datagram of several records, only it goes.
        let app = record(23, 1, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let alert = record(21, 1, &[9; 26]);
        let d = [app.clone(), record(20, 3, &[1]), alert.clone()].concat();
        assert_eq!(
            &drop_forged_ccs(BytesMut::from(&d[..]))[..],
            &[app, alert].concat()[..]
        );
    }

    #[test]
    fn genuine_records_pass_unchanged() {
        // The client's final flight: ChangeCipherSpec in epoch 0, then Finished in epoch 1.
        let flight = [record(20, 0, &[1]), record(22, 1, &[0x14; 40])].concat();
        assert_eq!(
            &drop_forged_ccs(BytesMut::from(&flight[..]))[..],
            &flight[..]
        );
        // Truncated or garbage framing is left for rtc-dtls to refuse; no prefix panics.
        let d = [record(23, 1, &[5; 30]), record(20, 1, &[1])].concat();
        for n in 0..d.len() {
            let out = drop_forged_ccs(BytesMut::from(&d[..n]));
            assert!(out.len() <= n);
        }
        assert_eq!(
            &drop_forged_ccs(BytesMut::from(&[20u8, 0xfe][..]))[..],
            &[20u8, 0xfe]
        );
    }
}
