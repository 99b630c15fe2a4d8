//! HTTPS: the `[tls]` certificate, read from PEM files and replaceable while serving.
//!
//! One rustls [`ServerConfig`] is built at startup (TLS 1.3 and 1.2 on the aws-lc-rs provider,
//! ALPN `h2` then `http/1.1`). Its certificate resolver hands each new handshake the current
//! [`CertifiedKey`]; [`Tls::reload`] replaces that key only once the new files have been read,
//! parsed and checked to belong together, so a bad file never takes the server off the air.
//! Connections already open keep the certificate they started with.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use zeroize::Zeroizing;

use crate::config::{ConfigError, TlsConfig};

/// Largest PEM file read: a chain or a key is a few KiB, so a larger file is the wrong file
/// (and `/dev/zero` by mistake does not fill memory).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// ALPN protocols offered, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

const CERT_KEY: &str = "tls.cert_file";
const KEY_KEY: &str = "tls.key_file";

/// Why the `[tls]` files cannot be used. On [`Server::reload_tls`](crate::Server::reload_tls)
/// the certificate already in use stays in use.
///
/// Messages name the config key, the file and the fix; they never contain key material.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// `tls.cert_file` or `tls.key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is larger than any certificate chain or key (1 MiB).
    TooLarge {
        /// `tls.cert_file` or `tls.key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A file is not valid PEM.
    Pem {
        /// `tls.cert_file` or `tls.key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is broken, without the file's content.
        problem: &'static str,
    },
    /// `tls.cert_file` has no `CERTIFICATE` section.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// `tls.key_file` has no private key section.
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The first certificate of `tls.cert_file` cannot be parsed.
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// The private key is of a kind or size that cannot sign TLS handshakes.
    BadKey {
        /// The file.
        path: PathBuf,
        /// rustls's reason (never the key).
        reason: String,
    },
    /// The private key is not the key of the first certificate.
    KeyMismatch {
        /// `tls.cert_file`.
        cert_file: PathBuf,
        /// `tls.key_file`.
        key_file: PathBuf,
    },
    /// TLS could not be set up with this build's crypto provider.
    Provider {
        /// rustls's reason.
        reason: String,
    },
    /// The server was built without `[tls]`, so there is no certificate to reload.
    NotEnabled,
}

impl TlsError {
    /// The config key the error is about, when it is about one.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            TlsError::Read { key, .. }
            | TlsError::TooLarge { key, .. }
            | TlsError::Pem { key, .. } => Some(key),
            TlsError::NoCertificate { .. } | TlsError::BadCertificate { .. } => Some(CERT_KEY),
            TlsError::NoPrivateKey { .. }
            | TlsError::BadKey { .. }
            | TlsError::KeyMismatch { .. } => Some(KEY_KEY),
            TlsError::Provider { .. } | TlsError::NotEnabled => None,
        }
    }

    /// What is wrong, and how to fix it.
    fn problem_and_fix(&self) -> (String, &'static str) {
        match self {
            TlsError::Read { path, source, .. } => (
                format!("cannot read {}: {source}", path.display()),
                "check the path and that the server's user may read the file",
            ),
            TlsError::TooLarge { path, .. } => (
                format!("{} is larger than {MAX_PEM_BYTES} bytes", path.display()),
                "name the PEM file itself: a certificate chain or a key is a few KiB",
            ),
            TlsError::Pem { path, problem, .. } => (
                format!("{} is not valid PEM: {problem}", path.display()),
                "give the file as issued, with its -----BEGIN …----- and -----END …----- lines intact",
            ),
            TlsError::NoCertificate { path } => (
                format!("{} holds no certificate", path.display()),
                "give the PEM certificate chain (-----BEGIN CERTIFICATE-----), the server's own certificate first, e.g. fullchain.pem",
            ),
            TlsError::NoPrivateKey { path } => (
                format!("{} holds no private key", path.display()),
                "give the PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY), e.g. privkey.pem",
            ),
            TlsError::BadCertificate { path, reason } => (
                format!(
                    "the first certificate in {} cannot be used: {reason}",
                    path.display()
                ),
                "put the server's own certificate first, then its intermediates",
            ),
            TlsError::BadKey { path, reason } => (
                format!(
                    "the private key in {} cannot be used: {reason}",
                    path.display()
                ),
                "use an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key",
            ),
            TlsError::KeyMismatch {
                cert_file,
                key_file,
            } => (
                format!(
                    "the key in {} is not the key of the first certificate in {}",
                    key_file.display(),
                    cert_file.display()
                ),
                "give the key the certificate was issued for, and put that certificate first in tls.cert_file",
            ),
            TlsError::Provider { reason } => (
                format!("TLS cannot be set up: {reason}"),
                "this build lacks TLS support; build the server with its default features",
            ),
            TlsError::NotEnabled => (
                "the server was started without [tls]".to_owned(),
                "add [tls] and restart: a running listener does not switch to HTTPS",
            ),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (problem, fix) = self.problem_and_fix();
        match self.key() {
            Some(key) => write!(f, "config key `{key}`: {problem}; {fix}"),
            None => write!(f, "{problem}; {fix}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<TlsError> for ConfigError {
    fn from(err: TlsError) -> Self {
        let (problem, fix) = err.problem_and_fix();
        ConfigError::Invalid {
            key: err.key().unwrap_or("tls").to_owned(),
            problem,
            fix: fix.to_owned(),
        }
    }
}

/// The listener's TLS state; clones share it, so a reload through one is seen by all.
#[derive(Clone)]
pub(crate) struct Tls {
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
}

struct Shared {
    provider: Arc<CryptoProvider>,
    /// The files the certificate was read from; held while reloading so reloads do not race.
    files: Mutex<TlsConfig>,
    current: Arc<CurrentCert>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// The certificate every new handshake gets, whatever name the client asked for.
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentCert").finish_non_exhaustive()
    }
}

impl CurrentCert {
    fn get(&self) -> Arc<CertifiedKey> {
        // The lock only guards an `Arc` swap, so a poisoned lock still holds a whole value.
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn set(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl Tls {
    /// Reads `files` and builds the rustls configuration.
    pub(crate) fn new(files: &TlsConfig) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = load(files, &provider)?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(key))));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|err| TlsError::Provider {
                reason: err.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Tls {
            config: Arc::new(config),
            shared: Arc::new(Shared {
                provider,
                files: Mutex::new(files.clone()),
                current,
            }),
        })
    }

    /// The acceptor for new connections.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }

    /// Re-reads the files and, if they are usable, serves them to new handshakes.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let files = self
            .shared
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = load(&files, &self.shared.provider)?;
        self.shared.current.set(key);
        Ok(())
    }

    /// As [`Tls::reload`], from other files, which later reloads then read.
    pub(crate) fn reload_from(&self, new: &TlsConfig) -> Result<(), TlsError> {
        let mut files = self
            .shared
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = load(new, &self.shared.provider)?;
        self.shared.current.set(key);
        *files = new.clone();
        Ok(())
    }
}

/// Reads the chain and the key, and checks that the key is the first certificate's.
fn load(files: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_path = files.cert_file.as_path();
    let key_path = files.key_file.as_path();
    let cert_pem = read_pem(CERT_KEY, cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(CERT_KEY, cert_path, &err))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key_pem = read_pem(KEY_KEY, key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: key_path.to_owned(),
        },
        other => pem_error(KEY_KEY, key_path, &other),
    })?;
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|err| TlsError::BadKey {
                path: key_path.to_owned(),
                reason: err.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot show its public half, so there is nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert_file: cert_path.to_owned(),
                key_file: key_path.to_owned(),
            })
        }
        Err(other) => Err(TlsError::BadCertificate {
            path: cert_path.to_owned(),
            reason: other.to_string(),
        }),
    }
}

/// The file's bytes, at most [`MAX_PEM_BYTES`], wiped from memory when dropped (key files).
fn read_pem(key: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    let read_error = |source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            key,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// A PEM syntax error, described without any of the file's bytes (they may be a key's).
fn pem_error(key: &'static str, path: &Path, err: &pem::Error) -> TlsError {
    let problem = match err {
        pem::Error::MissingSectionEnd { .. } => "a section has no -----END line",
        pem::Error::IllegalSectionStart { .. } => "a -----BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        pem::Error::NoItemsFound => "no section of the expected kind",
        _ => "the file cannot be parsed",
    };
    TlsError::Pem {
        key,
        path: path.to_owned(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_error_reads_like_the_tls_error() {
        let err = TlsError::KeyMismatch {
            cert_file: "/etc/tls/fullchain.pem".into(),
            key_file: "/etc/tls/privkey.pem".into(),
        };
        let text = err.to_string();
        assert!(text.starts_with("config key `tls.key_file`: "), "{text}");
        let config: ConfigError = err.into();
        assert_eq!(config.key(), Some("tls.key_file"));
        assert_eq!(config.to_string(), text);
    }

    #[test]
    fn errors_without_a_key_say_what_to_do() {
        let text = TlsError::NotEnabled.to_string();
        assert!(text.contains("[tls]") && text.contains("restart"), "{text}");
        let config: ConfigError = TlsError::NotEnabled.into();
        assert_eq!(config.key(), Some("tls"));
    }
}
