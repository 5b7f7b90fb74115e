//! HTTPS for the service: the certificate and key (PEM) read and checked at start, a
//! self-signed one made and kept under the state directory, and the accept step that puts
//! a connection through the TLS handshake (or tells a plain-HTTP client where to go).
//!
//! rustls with ring (the provider TURN-TLS and MQTT-TLS already use), HTTP/1.1 only
//! (ALPN `http/1.1`): HTTP/2 would add hyper's `http2` feature and the h2 crate to a
//! binary sized for boards, for a page of a few files and small signaling requests.

use crate::error::{Error, Result};
use base64::Engine as _;
use futures_rustls::rustls;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a certificate made by `smolrtc cert` or `--tls-self-signed` is valid: 825
/// days, the longest some platforms accept for a certificate a user trusts by hand.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(825 * 86_400);
/// A kept self-signed certificate this close to its end is replaced at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// File names under `--out` / the state directory.
pub const CERT_FILE: &str = "cert.pem";
/// See [`CERT_FILE`].
pub const KEY_FILE: &str = "key.pem";

/// The service's TLS certificate and key, checked, ready to serve; with the two hashes a
/// user pins or compares.
#[derive(Clone)]
pub struct TlsIdentity {
    pub(crate) config: Arc<rustls::ServerConfig>,
    fingerprint: String,
    spki_sha256: String,
    not_after: i64,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain and its private key. Missing or unreadable files, no
    /// certificate, a key that does not match it, or a certificate outside its validity:
    /// an error naming the file and the problem.
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        let read = |p: &Path, what: &str| {
            std::fs::read(p).map_err(|e| Error::invalid(format!("TLS {what} {}: {e}", p.display())))
        };
        let cert_pem = read(cert, "certificate")?;
        let key_pem = read(key, "key")?;
        Self::from_pem(&cert_pem, &key_pem).map_err(|e| {
            Error::invalid(format!(
                "TLS certificate {} / key {}: {e}",
                cert.display(),
                key.display()
            ))
        })
    }

    /// [`TlsIdentity::load`] on the files' contents.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> std::result::Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate PEM: {e}"))?;
        let leaf = chain
            .first()
            .ok_or("no CERTIFICATE in the certificate file")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key PEM: {e}"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| format!("certificate: {e}"))?;
        let validity = parsed.validity();
        let now = unix_now();
        let (from, until) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        if now > until {
            return Err(format!(
                "certificate expired on {} (make a new one: smolrtc cert)",
                utc_date(until)
            ));
        }
        if now < from {
            return Err(format!(
                "certificate not valid before {} (is the clock right?)",
                utc_date(from)
            ));
        }
        let spki = parsed.tbs_certificate.subject_pki.raw;
        let fingerprint = hex_colons(ring::digest::digest(&ring::digest::SHA256, leaf.as_ref()));
        let spki_sha256 = base64::engine::general_purpose::STANDARD
            .encode(ring::digest::digest(&ring::digest::SHA256, spki));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // `with_single_cert` checks that the key is the certificate's.
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key does not belong to the certificate".to_owned()
                }
                e => format!("certificate and key refused: {e}"),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            fingerprint,
            spki_sha256,
            not_after: until,
        })
    }

    /// The certificate's SHA-256 fingerprint, `AB:CD:..` (as browsers show it).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo: what Chromium's
    /// `--ignore-certificate-errors-spki-list` and curl's `--pinnedpubkey sha256//` take.
    pub fn spki_sha256(&self) -> &str {
        &self.spki_sha256
    }

    /// `--tls-self-signed`: the certificate kept in `dir`, or a new one for `names` and
    /// `ips` made there (also when the kept one is within 30 days of its end). Logs the
    /// fingerprint and the SPKI hash.
    pub fn self_signed(dir: &Path, names: &[String], ips: &[IpAddr]) -> Result<Self> {
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if cert.exists() || key.exists() {
            match Self::load(&cert, &key) {
                Ok(id) if id.not_after - unix_now() > RENEW_BEFORE.as_secs() as i64 => {
                    log::info!(
                        "TLS: self-signed certificate {}: sha-256 {} spki {}",
                        cert.display(),
                        id.fingerprint,
                        id.spki_sha256
                    );
                    return Ok(id);
                }
                Ok(_) => log::warn!("TLS: {} ends within 30 days: replaced", cert.display()),
                Err(e) => return Err(e),
            }
        }
        let made = SelfSigned::generate(names, ips, SELF_SIGNED_VALIDITY)?;
        made.write(dir)?;
        let id = Self::from_pem(made.cert_pem.as_bytes(), made.key_pem.as_bytes())
            .map_err(Error::invalid)?;
        log::info!(
            "TLS: new self-signed certificate {}: sha-256 {} spki {}",
            cert.display(),
            id.fingerprint,
            id.spki_sha256
        );
        Ok(id)
    }
}

/// The names and addresses a `--tls-self-signed` certificate is made for: `localhost`,
/// the host name (and `<host>.local`), `allow_hosts`, loopback, the listen address and
/// the host addresses ICE would use (as they are at the first start).
pub fn device_names(config: &super::ServiceConfig) -> (Vec<String>, Vec<IpAddr>) {
    let mut names = vec!["localhost".to_owned()];
    if let Some(h) = super::session::machine_host_name() {
        names.push(format!("{h}.local"));
        names.push(h);
    }
    names.extend(config.allow_hosts.iter().cloned());
    let mut policy = config.peer.ice.hosts.clone();
    policy.include_loopback = true;
    let mut ips = crate::ice::host_addresses(&policy);
    ips.extend([
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ]);
    if !config.listen.ip().is_unspecified() {
        ips.push(config.listen.ip());
    }
    names.sort();
    names.dedup();
    ips.sort();
    ips.dedup();
    (names, ips)
}

/// A new self-signed certificate and its key, PEM.
pub struct SelfSigned {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl SelfSigned {
    /// An ECDSA P-256 certificate for `names` (DNS) and `ips`, valid from a day ago (clocks
    /// differ) for `validity`.
    pub fn generate(names: &[String], ips: &[IpAddr], validity: Duration) -> Result<Self> {
        let fail = |e: rcgen::Error| Error::invalid(format!("certificate: {e}"));
        let mut sans: Vec<String> = names.to_vec();
        sans.extend(ips.iter().map(|ip| ip.to_string()));
        if sans.is_empty() {
            return Err(Error::invalid(
                "certificate: give at least one name or address",
            ));
        }
        let mut params = rcgen::CertificateParams::new(sans).map_err(fail)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| ips[0].to_string()),
        );
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::seconds(validity.as_secs() as i64);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
        let cert = params.self_signed(&key).map_err(fail)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `cert.pem` and `key.pem` (mode 0600) into `dir`, made if missing.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |p: &Path, e: std::io::Error| Error::invalid(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        for (path, text, mode) in [(&key, &self.key_pem, 0o600), (&cert, &self.cert_pem, 0o644)] {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(path)
                .map_err(|e| io(path, e))?;
            f.write_all(text.as_bytes()).map_err(|e| io(path, e))?;
        }
        Ok((cert, key))
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM-DD` of a Unix time (the proleptic Gregorian calendar, days counted from
/// 0000-03-01 so that the leap day ends each 4/100/400-year cycle); written here rather
/// than through `time`'s formatting machinery, for one message.
fn utc_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400) + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097; // day of the 400-year era
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153; // month from March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn hex_colons(digest: ring::digest::Digest) -> String {
    let mut s = String::with_capacity(95);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// What the first bytes of a connection to the TLS port were.
pub(crate) enum Accepted<S> {
    /// A completed handshake.
    Tls(Box<futures_rustls::server::TlsStream<S>>),
    /// Plain HTTP (an ASCII letter first): it gets a redirect to https://.
    PlainHttp(S),
}

/// The TLS handshake on `io` within `limit` (the header timeout: a slowloris handshake is
/// dropped like slow headers); `first` is the connection's first byte, already peeked.
pub(crate) async fn accept<S>(
    config: &Arc<rustls::ServerConfig>,
    io: S,
    first: u8,
    limit: Duration,
) -> std::io::Result<Accepted<S>>
where
    S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
{
    // 0x16: a TLS handshake record. A letter: an HTTP method.
    if first.is_ascii_uppercase() {
        return Ok(Accepted::PlainHttp(io));
    }
    if first != 0x16 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not TLS (first byte {first:#04x})"),
        ));
    }
    let acceptor = futures_rustls::TlsAcceptor::from(config.clone());
    futures_lite::future::or(
        async {
            acceptor
                .accept(io)
                .await
                .map(|s| Accepted::Tls(Box::new(s)))
        },
        async {
            async_io::Timer::after(limit).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake not done within header_timeout".to_owned(),
            ))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_and_bad_ones_are_named() {
        let a = SelfSigned::generate(
            &["dev.local".into()],
            &["10.0.0.2".parse().unwrap()],
            SELF_SIGNED_VALIDITY,
        )
        .unwrap();
        let id = TlsIdentity::from_pem(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).unwrap();
        assert_eq!(id.fingerprint().len(), 95);
        assert_eq!(id.spki_sha256().len(), 44);
        let b = SelfSigned::generate(&["x".into()], &[], SELF_SIGNED_VALIDITY).unwrap();
        let e = TlsIdentity::from_pem(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        let e = TlsIdentity::from_pem(b"garbage", a.key_pem.as_bytes()).unwrap_err();
        assert!(e.contains("no CERTIFICATE"), "{e}");
        let e = TlsIdentity::from_pem(a.cert_pem.as_bytes(), b"").unwrap_err();
        assert!(e.contains("key"), "{e}");
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_609_459_199), "2020-12-31");
        assert_eq!(utc_date(1_609_459_200), "2021-01-01");
        assert_eq!(utc_date(4_107_542_400), "2100-03-01");
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let mut params = rcgen::CertificateParams::new(vec!["old.local".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let e = TlsIdentity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .unwrap_err();
        assert!(e.contains("expired on 2021-01-01"), "{e}");
    }
}
