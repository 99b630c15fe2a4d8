//! The development key: created on first run in the state directory, reused afterwards.
//!
//! It is stored as `dev.env`, two `NAME=value` lines that a shell can `source`, so the SDK and
//! the CLI (which read `PULSEBEAM_API_KEY` / `PULSEBEAM_API_SECRET`) mint tokens this dev server
//! accepts. The file is created owner-only (mode 0600) in an owner-only directory, and refused
//! when other users can read it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use pulsebeam_token::{AccessToken, KeyPair};
use zeroize::Zeroizing;

use crate::error::DevError;

/// Name of the key file inside the state directory.
pub const KEY_FILE_NAME: &str = "dev.env";

const API_KEY_VAR: &str = "PULSEBEAM_API_KEY";
const API_SECRET_VAR: &str = "PULSEBEAM_API_SECRET";
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The loaded key, and whether this run created it.
pub(crate) struct DevKey {
    pub(crate) minter: AccessToken,
    pub(crate) path: PathBuf,
    pub(crate) created: bool,
}

/// Loads `<state_dir>/dev.env`, creating the directory and a fresh key pair when absent.
pub(crate) fn load_or_create(state_dir: &Path) -> Result<DevKey, DevError> {
    let path = state_dir.join(KEY_FILE_NAME);
    match fs::symlink_metadata(&path) {
        Ok(_) => {
            let minter = load(&path)?;
            Ok(DevKey {
                minter,
                path,
                created: false,
            })
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            create_state_dir(state_dir)?;
            match create(&path) {
                Ok(minter) => Ok(DevKey {
                    minter,
                    path,
                    created: true,
                }),
                // Another dev server started at the same moment and wrote it first: use theirs.
                Err(DevError::KeyFileIo { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists =>
                {
                    let minter = load(&path)?;
                    Ok(DevKey {
                        minter,
                        path,
                        created: false,
                    })
                }
                Err(err) => Err(err),
            }
        }
        Err(source) => Err(DevError::KeyFileIo { path, source }),
    }
}

fn create_state_dir(dir: &Path) -> Result<(), DevError> {
    let io_err = |source| DevError::StateDir {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(io_err)?;
        // Keep the key out of version control by default.
        fs::write(
            dir.join(".gitignore"),
            "# PulseBeam dev state: keys for local development only\n*\n",
        )
        .map_err(io_err)?;
    }
    Ok(())
}

fn create(path: &Path) -> Result<AccessToken, DevError> {
    let io_err = |source| DevError::KeyFileIo {
        path: path.to_path_buf(),
        source,
    };
    let pair = KeyPair::generate().map_err(|source| DevError::Key {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = pair.api_secret();
    let contents = Zeroizing::new(format!(
        "# PulseBeam development key, made by `pulsebeam dev`. For local development only:\n\
         # anyone who can read this file can mint tokens for this dev server.\n\
         {API_KEY_VAR}={}\n{API_SECRET_VAR}={}\n",
        pair.api_key(),
        secret.as_str()
    ));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    // Written whole under a private name, then linked into place: the link fails if the file
    // appeared meanwhile, and a reader never sees a half-written key.
    static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);
    let staging = path.with_extension(format!(
        "env.new-{}-{}",
        std::process::id(),
        STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = options
        .open(&staging)
        .and_then(|mut file| {
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| fs::hard_link(&staging, path));
    let _ = fs::remove_file(&staging);
    written.map_err(io_err)?;
    AccessToken::new(pair.api_key(), &secret).map_err(|source| DevError::Key {
        path: path.to_path_buf(),
        source,
    })
}

fn load(path: &Path) -> Result<AccessToken, DevError> {
    let io_err = |source| DevError::KeyFileIo {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io_err)?;
    if !meta.is_file() {
        return Err(DevError::KeyFileInvalid {
            path: path.to_path_buf(),
            reason: "it is not a regular file".to_owned(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(DevError::KeyFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(DevError::KeyFileInvalid {
            path: path.to_path_buf(),
            reason: format!("it is {} bytes, more than a key file ever is", meta.len()),
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err)?);
    let (api_key, api_secret) = parse(&text).map_err(|reason| DevError::KeyFileInvalid {
        path: path.to_path_buf(),
        reason,
    })?;
    AccessToken::new(api_key, &api_secret).map_err(|source| DevError::Key {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the two variables out of `NAME=value` lines (blank lines and `#` comments allowed).
fn parse(text: &str) -> Result<(&str, Zeroizing<String>), String> {
    let mut api_key = None;
    let mut api_secret = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "line {} is not `NAME=value`; delete the file to get a fresh key",
                index + 1
            ));
        };
        let slot = match name.trim() {
            API_KEY_VAR => &mut api_key,
            API_SECRET_VAR => &mut api_secret,
            other => {
                return Err(format!(
                    "line {} sets unknown variable `{other}`; only {API_KEY_VAR} and {API_SECRET_VAR} belong here",
                    index + 1
                ))
            }
        };
        if slot.replace(value.trim()).is_some() {
            return Err(format!(
                "line {} sets `{}` a second time",
                index + 1,
                name.trim()
            ));
        }
    }
    match (api_key, api_secret) {
        (Some(key), Some(secret)) => Ok((key, Zeroizing::new(secret.to_owned()))),
        (None, _) => Err(format!(
            "{API_KEY_VAR} is missing; delete the file to get a fresh key"
        )),
        (_, None) => Err(format!(
            "{API_SECRET_VAR} is missing; delete the file to get a fresh key"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_blank_lines_and_export() {
        let text =
            "# c\n\nexport PULSEBEAM_API_KEY=kid_0011223344556677\nPULSEBEAM_API_SECRET = sk_ab\n";
        let (key, secret) = parse(text).unwrap();
        assert_eq!(key, "kid_0011223344556677");
        assert_eq!(secret.as_str(), "sk_ab");
    }

    #[test]
    fn refuses_broken_files_with_the_reason() {
        let cases = [
            ("PULSEBEAM_API_KEY=k\n", "PULSEBEAM_API_SECRET is missing"),
            ("PULSEBEAM_API_SECRET=s\n", "PULSEBEAM_API_KEY is missing"),
            ("garbage\n", "line 1 is not `NAME=value`"),
            ("OTHER=1\n", "unknown variable `OTHER`"),
            (
                "PULSEBEAM_API_KEY=a\nPULSEBEAM_API_KEY=b\n",
                "line 2 sets `PULSEBEAM_API_KEY` a second time",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
