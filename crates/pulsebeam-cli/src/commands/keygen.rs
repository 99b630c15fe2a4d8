//! `pulsebeam keygen`: a new API key and secret, and the public key that verifies its tokens.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use pulsebeam_token::{KeyPair, KeySet};
use serde_json::json;
use zeroize::Zeroizing;

use crate::credentials::{API_KEY_VAR, API_SECRET_VAR};
use crate::error::CliError;
use crate::{Session, Status};

const EXAMPLES: &str = "\
Examples:
  pulsebeam keygen > .env                      # print a .env file
  pulsebeam keygen --out .env                  # write it, readable by you only
  pulsebeam keygen --out .env --jwks-out jwks.json
  pulsebeam keygen --json";

/// Arguments of `pulsebeam keygen`.
#[derive(Debug, Clone, Default, Args)]
#[command(after_help = EXAMPLES)]
pub struct KeygenArgs {
    /// Write the PULSEBEAM_API_KEY=/PULSEBEAM_API_SECRET= lines to this file, readable by its
    /// owner only, instead of printing the secret.
    #[arg(short, long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Also write the public key as a JWK Set, for servers and `pulsebeam verify --jwks`.
    #[arg(long, value_name = "PATH")]
    pub jwks_out: Option<PathBuf>,

    /// Replace files that already exist (their old keys are lost).
    #[arg(long)]
    pub force: bool,

    /// Print JSON: api_key, api_secret (unless --out is given), public_key, jwk.
    #[arg(long)]
    pub json: bool,
}

/// Runs `pulsebeam keygen`.
pub(crate) fn run(args: &KeygenArgs, session: &mut Session<'_, '_>) -> Result<Status, CliError> {
    if let (Some(out), Some(jwks)) = (&args.out, &args.jwks_out) {
        if out == jwks {
            return Err(CliError::Usage(
                "--out and --jwks-out name the same file; give them different paths".to_owned(),
            ));
        }
    }
    if !args.force {
        // Check both before writing either, so that a refusal leaves nothing half done.
        for path in args.out.iter().chain(&args.jwks_out) {
            if path.exists() {
                return Err(CliError::Usage(format!(
                    "`{}` already exists; pass --force to replace it (the key it holds will be lost)",
                    path.display()
                )));
            }
        }
    }
    let pair = KeyPair::generate().map_err(|source| CliError::Key {
        context: "cannot generate a key".to_owned(),
        source,
    })?;
    let public_key = pair.public_key().to_hex();
    let jwk = pair.to_jwk();
    let jwk_json = jwk.to_json();
    let secret = pair.api_secret();

    let env_text = Zeroizing::new(format!(
        "# PulseBeam API credentials. Keep PULSEBEAM_API_SECRET private: it mints tokens.\n\
         {API_KEY_VAR}={key}\n\
         {API_SECRET_VAR}={secret}\n\
         # Public key, for servers and verifiers (safe to share):\n\
         # hex: {public_key}\n\
         # jwk: {jwk_json}\n\
         # For `pulsebeam serve`, under the project's [[projects]] in its config file:\n\
         #   [[projects.keys]]\n\
         #   kid = \"{key}\"\n\
         #   public_key = \"{public_key}\"\n",
        key = pair.api_key(),
        secret = secret.as_str(),
    ));

    if let Some(path) = &args.out {
        write_new_file(path, env_text.as_bytes(), args.force, true)?;
    }
    if let Some(path) = &args.jwks_out {
        let jwks = KeySet::new()
            .with(pair.api_key(), pair.public_key())
            .map_err(|source| CliError::Key {
                context: "cannot build the key set".to_owned(),
                source,
            })?
            .to_jwks();
        let mut text = serde_json::to_string_pretty(&jwks)
            .map_err(|e| CliError::Usage(format!("cannot encode the key set as JSON: {e}")))?;
        text.push('\n');
        write_new_file(path, text.as_bytes(), args.force, false)?;
    }

    if args.json {
        let mut doc = json!({
            "api_key": pair.api_key(),
            "public_key": public_key,
            "jwk": jwk,
        });
        if let Some(object) = doc.as_object_mut() {
            match &args.out {
                Some(path) => {
                    object.insert("env_file".into(), json!(path.display().to_string()));
                }
                None => {
                    object.insert("api_secret".into(), json!(secret.as_str()));
                }
            }
            if let Some(path) = &args.jwks_out {
                object.insert("jwks_file".into(), json!(path.display().to_string()));
            }
        }
        let text = Zeroizing::new(format!("{doc}\n"));
        return session.out(&text).map(|()| Status::Success);
    }

    match &args.out {
        None => session.out(&env_text)?,
        Some(path) => {
            let mut text = format!(
                "wrote {API_KEY_VAR} and {API_SECRET_VAR} to {} (readable by its owner only)\n\
                 api key:    {}\n\
                 public key: {public_key}\n\
                 jwk:        {jwk_json}\n",
                path.display(),
                pair.api_key(),
            );
            if let Some(jwks) = &args.jwks_out {
                text.push_str(&format!("jwks:       written to {}\n", jwks.display()));
            }
            session.out(&text)?;
        }
    }
    Ok(Status::Success)
}

/// Writes `contents` to `path`. Without `force` the file must not exist yet; with it, the
/// file is replaced atomically. `private` files are created with mode 0600 on Unix.
fn write_new_file(
    path: &Path,
    contents: &[u8],
    force: bool,
    private: bool,
) -> Result<(), CliError> {
    let what = || format!("`{}`", path.display());
    if !force {
        return create_and_write(path, contents, private).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                CliError::Usage(format!(
                    "{} already exists; pass --force to replace it (the key it holds will be lost)",
                    what()
                ))
            } else {
                CliError::Write {
                    what: what(),
                    source,
                }
            }
        });
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| CliError::Usage(format!("{} does not name a file", what())))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let written = create_and_write(&temp, contents, private).and_then(|()| fs::rename(&temp, path));
    written.map_err(|source| {
        // Best effort: do not leave a half-written copy of a secret behind.
        let _ = fs::remove_file(&temp);
        CliError::Write {
            what: what(),
            source,
        }
    })
}

fn create_and_write(path: &Path, contents: &[u8], private: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
