//! SRTP for one DTLS transport: rtc-srtp contexts keyed from DTLS-SRTP keying material.
//!
//! After the DTLS handshake the transport exports `2 × (key + salt)` bytes with the label
//! [`EXPORTER_LABEL`] (RFC 5764 §4.2) and hands them to [`SrtpSession::new`] with its role.
//! The material is `client_write_key | server_write_key | client_write_salt |
//! server_write_salt`: a DTLS client protects with the client key and salt and unprotects
//! with the server's, a server the other way round. Incoming packets go through a replay
//! window (RFC 3711 §3.3.2); outgoing ones are protected in the order they are given.

use bytes::BytesMut;
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;
use std::fmt;

/// The RFC 5705 exporter label of DTLS-SRTP keys.
pub const EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";
/// Packets of the incoming replay window.
const REPLAY_WINDOW: usize = 1024;

/// The SRTP protection profiles smolrtc offers in DTLS `use_srtp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpProfile {
    /// SRTP_AES128_CM_HMAC_SHA1_80 (RFC 5764): 16-byte key, 14-byte salt, 10-byte tag.
    Aes128CmHmacSha1_80,
    /// SRTP_AEAD_AES_128_GCM (RFC 7714): 16-byte key, 12-byte salt, 16-byte tag.
    AeadAes128Gcm,
}

impl SrtpProfile {
    /// The profile DTLS negotiated, if it is one of ours.
    pub fn from_dtls(p: SrtpProtectionProfile) -> Option<SrtpProfile> {
        match p {
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
                Some(SrtpProfile::Aes128CmHmacSha1_80)
            }
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Some(SrtpProfile::AeadAes128Gcm),
            _ => None,
        }
    }

    /// Master key length.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length.
    pub fn salt_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 => 14,
            SrtpProfile::AeadAes128Gcm => 12,
        }
    }

    /// Bytes to export from DTLS: both keys and both salts.
    pub fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }

    /// Bytes SRTP adds to an RTP packet (the tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 => 10,
            SrtpProfile::AeadAes128Gcm => 16,
        }
    }

    fn rtc(self) -> ProtectionProfile {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        }
    }
}

/// This side's DTLS role, which decides which half of the keying material it writes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsRole {
    /// The DTLS client (`a=setup:active`).
    Client,
    /// The DTLS server (`a=setup:passive`).
    Server,
}

/// SRTP keying or a packet failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrtpError {
    /// The keying material is not `keying_material_len()` bytes.
    KeyingMaterialLength {
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// rtc-srtp refused (no crypto provider, a bad packet, a failed tag, a replay).
    Srtp(String),
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SrtpError::KeyingMaterialLength { expected, got } => write!(
                f,
                "DTLS-SRTP keying material of {got} bytes, expected {expected}"
            ),
            SrtpError::Srtp(e) => write!(f, "SRTP: {e}"),
        }
    }
}

impl std::error::Error for SrtpError {}

fn srtp_err(e: impl fmt::Display) -> SrtpError {
    SrtpError::Srtp(e.to_string())
}

/// The two SRTP contexts of one DTLS transport: ours to protect, the peer's to unprotect.
pub struct SrtpSession {
    profile: SrtpProfile,
    local: Context,
    remote: Context,
}

impl fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No key material in logs.
        f.debug_struct("SrtpSession")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl SrtpSession {
    /// Keys both directions from the exported `material` (see the module doc).
    pub fn new(
        profile: SrtpProfile,
        material: &[u8],
        role: DtlsRole,
    ) -> Result<SrtpSession, SrtpError> {
        let expected = profile.keying_material_len();
        if material.len() != expected {
            return Err(SrtpError::KeyingMaterialLength {
                expected,
                got: material.len(),
            });
        }
        let (k, s) = (profile.key_len(), profile.salt_len());
        let client_key = &material[..k];
        let server_key = &material[k..2 * k];
        let client_salt = &material[2 * k..2 * k + s];
        let server_salt = &material[2 * k + s..];
        let ((lk, ls), (rk, rs)) = match role {
            DtlsRole::Client => ((client_key, client_salt), (server_key, server_salt)),
            DtlsRole::Server => ((server_key, server_salt), (client_key, client_salt)),
        };
        let provider = rtc_srtp::crypto::default_provider().map_err(srtp_err)?;
        let local =
            Context::new(lk, ls, profile.rtc(), None, None, provider.crypto()).map_err(srtp_err)?;
        let remote = Context::new(
            rk,
            rs,
            profile.rtc(),
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
            provider.crypto(),
        )
        .map_err(srtp_err)?;
        Ok(SrtpSession {
            profile,
            local,
            remote,
        })
    }

    /// The profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Protects one plaintext RTP packet.
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.local.encrypt_rtp(packet).map_err(srtp_err)
    }

    /// Protects one plaintext (compound) RTCP packet.
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.local.encrypt_rtcp(packet).map_err(srtp_err)
    }

    /// Authenticates and decrypts one SRTP packet from the peer.
    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.remote.decrypt_rtp(packet).map_err(srtp_err)
    }

    /// Authenticates and decrypts one SRTCP packet from the peer.
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.remote.decrypt_rtcp(packet).map_err(srtp_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0x80 | 102];
        p.extend(seq.to_be_bytes());
        p.extend(12345u32.to_be_bytes());
        p.extend(0xdead_beefu32.to_be_bytes());
        p.extend(payload);
        p
    }

    fn pli() -> Vec<u8> {
        // RTCP PSFB PLI: V=2, FMT=1, PT=206, length 2.
        vec![0x81, 206, 0, 2, 0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef]
    }

    #[test]
    fn client_and_server_understand_each_other_with_both_profiles() {
        for profile in [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::AeadAes128Gcm] {
            let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
            let mut client = SrtpSession::new(profile, &material, DtlsRole::Client).unwrap();
            let mut server = SrtpSession::new(profile, &material, DtlsRole::Server).unwrap();
            for seq in [65534u16, 65535, 0, 1] {
                let plain = rtp(seq, b"media payload");
                let wire = server.protect_rtp(&plain).unwrap();
                assert_eq!(wire.len(), plain.len() + profile.rtp_overhead());
                assert_ne!(&wire[12..12 + 13], b"media payload", "encrypted");
                assert_eq!(&client.unprotect_rtp(&wire).unwrap()[..], &plain[..]);
                // The other direction too.
                let back = client.protect_rtp(&plain).unwrap();
                assert_eq!(&server.unprotect_rtp(&back).unwrap()[..], &plain[..]);
            }
            let wire = client.protect_rtcp(&pli()).unwrap();
            assert_eq!(&server.unprotect_rtcp(&wire).unwrap()[..], &pli()[..]);
            // A replayed RTCP packet is refused.
            assert!(server.unprotect_rtcp(&wire).is_err());
            // A replayed or altered RTP packet is refused.
            let wire = server.protect_rtp(&rtp(7, b"x")).unwrap();
            assert!(client.unprotect_rtp(&wire).is_ok());
            assert!(client.unprotect_rtp(&wire).is_err(), "replay");
            let mut bad = server.protect_rtp(&rtp(8, b"x")).unwrap();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(client.unprotect_rtp(&bad).is_err(), "tag");
            // Same role on both ends: keys do not match.
            let mut other = SrtpSession::new(profile, &material, DtlsRole::Server).unwrap();
            let wire = server.protect_rtp(&rtp(9, b"x")).unwrap();
            assert!(other.unprotect_rtp(&wire).is_err());
            assert!(!format!("{server:?}").contains("material"));
        }
    }

    #[test]
    fn material_split_follows_rfc_5764() {
        // Client key 0x11.., server key 0x22.., client salt 0x33.., server salt 0x44..: a
        // server's context with client key/salt alone must read what the client protects.
        let p = SrtpProfile::Aes128CmHmacSha1_80;
        let mut m = vec![0x11; 16];
        m.extend([0x22; 16]);
        m.extend([0x33; 14]);
        m.extend([0x44; 14]);
        let mut client = SrtpSession::new(p, &m, DtlsRole::Client).unwrap();
        let provider = rtc_srtp::crypto::default_provider().unwrap();
        let mut raw = Context::new(
            &[0x11; 16],
            &[0x33; 14],
            p.rtc(),
            None,
            None,
            provider.crypto(),
        )
        .unwrap();
        let wire = client.protect_rtp(&rtp(1, b"abc")).unwrap();
        assert_eq!(&raw.decrypt_rtp(&wire).unwrap()[..], &rtp(1, b"abc")[..]);
        assert_eq!(
            SrtpSession::new(p, &m[1..], DtlsRole::Client).unwrap_err(),
            SrtpError::KeyingMaterialLength {
                expected: 60,
                got: 59
            }
        );
        assert_eq!(
            SrtpProfile::from_dtls(SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm),
            Some(SrtpProfile::AeadAes128Gcm)
        );
        assert_eq!(SrtpProfile::AeadAes128Gcm.keying_material_len(), 56);
    }
}
