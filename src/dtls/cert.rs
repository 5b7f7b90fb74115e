//! The DTLS certificate: ECDSA P-256, self-signed, identified by its SHA-256 fingerprint
//! (RFC 8122 `a=fingerprint`).

use crate::error::{DtlsError, Result};
use crate::sdp::Fingerprint;
use rtc_dtls::crypto::Certificate as DtlsCertificate;
use rtc_dtls::crypto_provider::{self, HashAlgorithm, RTCCryptoProvider};
use std::sync::Arc;

/// A peer connection's certificate and the fingerprint its SDP advertises.
#[derive(Clone)]
pub struct Certificate {
    pub(crate) dtls: DtlsCertificate,
    fingerprint: Fingerprint,
}

impl Certificate {
    /// Generates a fresh ECDSA P-256 self-signed certificate.
    pub fn generate() -> Result<Self> {
        let provider = provider()?;
        let dtls =
            DtlsCertificate::generate_self_signed(vec!["smolrtc".to_owned()], provider.crypto())
                .map_err(|e| DtlsError::Certificate(e.to_string()))?;
        let der = dtls
            .certificate
            .first()
            .ok_or_else(|| DtlsError::Certificate("empty chain".into()))?;
        let fingerprint = Fingerprint::sha256(sha256(&provider, der.as_ref())?);
        Ok(Self { dtls, fingerprint })
    }

    /// The `sha-256` fingerprint of the DER certificate.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }
}

pub(crate) fn provider() -> Result<Arc<dyn RTCCryptoProvider>> {
    crypto_provider::default_provider().map_err(|e| DtlsError::CryptoProvider(e.to_string()).into())
}

pub(crate) fn sha256(provider: &Arc<dyn RTCCryptoProvider>, data: &[u8]) -> Result<Vec<u8>> {
    provider
        .crypto()
        .hash(HashAlgorithm::Sha256, data)
        .map_err(|e| DtlsError::Certificate(format!("sha-256: {e}")).into())
}

/// True when `der`'s hash matches one of `expected` (only sha-256 is computed; browsers use it).
pub(crate) fn matches(
    provider: &Arc<dyn RTCCryptoProvider>,
    der: &[u8],
    expected: &[Fingerprint],
) -> bool {
    let Ok(actual) = sha256(provider, der) else {
        return false;
    };
    expected
        .iter()
        .any(|f| f.algorithm == "sha-256" && f.value == actual)
}
