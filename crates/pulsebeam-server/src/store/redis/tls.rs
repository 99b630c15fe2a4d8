//! TLS to Redis with `[store.tls]`: a rustls client on the aws-lc-rs provider the server's own
//! TLS uses, trusting only `ca_file` and presenting `cert_file` and `key_file` when given.
//! (`rediss://` without `[store.tls]` is fred's own client, trusting the system's roots.)

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::StoreTls;
use crate::store::StartError;

/// The largest PEM file read.
const MAX_PEM_BYTES: u64 = 1 << 20;

fn problem(key: &'static str, path: &Path, what: impl std::fmt::Display) -> StartError {
    StartError::Tls {
        key,
        problem: format!("{}: {what}", path.display()),
    }
}

fn read(key: &'static str, path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, StartError> {
    let size = std::fs::metadata(path)
        .map_err(|e| problem(key, path, e))?
        .len();
    if size > MAX_PEM_BYTES {
        return Err(problem(key, path, "larger than 1 MiB, not a PEM file"));
    }
    std::fs::read(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| problem(key, path, e))
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, StartError> {
    let pem = read(key, path)?;
    let all = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(key, path, e))?;
    if all.is_empty() {
        return Err(problem(
            key,
            path,
            "no certificate in it (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(all)
}

/// The roots `ca_file` names.
fn roots(files: &StoreTls) -> Result<RootCertStore, StartError> {
    let path = files.ca_file.as_deref().ok_or(StartError::Tls {
        key: "store.tls.ca_file",
        problem: "it is missing".into(),
    })?;
    let mut roots = RootCertStore::empty();
    for cert in certificates("store.tls.ca_file", path)? {
        roots
            .add(cert)
            .map_err(|e| problem("store.tls.ca_file", path, e))?;
    }
    Ok(roots)
}

/// The rustls client `[store.tls]` describes.
///
/// # Errors
///
/// [`StartError::Tls`] naming the key whose file cannot be read or used.
pub(crate) fn connector(files: &StoreTls) -> Result<ClientConfig, StartError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls {
            key: "store.tls",
            problem: e.to_string(),
        })?
        .with_root_certificates(roots(files)?);
    match (&files.cert_file, &files.key_file) {
        (Some(cert_path), Some(key_path)) => {
            let chain = certificates("store.tls.cert_file", cert_path)?;
            let pem = read("store.tls.key_file", key_path)?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                problem(
                    "store.tls.key_file",
                    key_path,
                    format!("no usable private key (-----BEGIN PRIVATE KEY-----): {e}"),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                problem(
                    "store.tls.cert_file",
                    cert_path,
                    format!("unusable with {}: {e}", key_path.display()),
                )
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, b"not pem").unwrap();
        let mut files = StoreTls {
            ca_file: Some(missing),
            ..StoreTls::default()
        };
        let err = connector(&files).unwrap_err();
        assert!(
            matches!(
                err,
                StartError::Tls {
                    key: "store.tls.ca_file",
                    ..
                }
            ),
            "{err}"
        );
        files.ca_file = Some(garbage.clone());
        let err = connector(&files).unwrap_err().to_string();
        assert!(err.contains("no certificate"), "{err}");

        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert.pem()).unwrap();
        files.ca_file = Some(ca_path.clone());
        connector(&files).unwrap();
        files.cert_file = Some(ca_path);
        files.key_file = Some(garbage);
        let err = connector(&files).unwrap_err();
        assert!(
            matches!(
                err,
                StartError::Tls {
                    key: "store.tls.key_file",
                    ..
                }
            ),
            "{err}"
        );
    }
}
