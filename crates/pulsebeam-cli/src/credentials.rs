//! API credentials for minting: from flags, an env file, or the environment, in that order.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use pulsebeam_token::{AccessToken, KeyError};
use zeroize::Zeroizing;

use crate::error::CliError;
use crate::input::read_file;
use crate::Session;

/// The environment variable holding the API key.
pub(crate) const API_KEY_VAR: &str = "PULSEBEAM_API_KEY";
/// The environment variable holding the API secret.
pub(crate) const API_SECRET_VAR: &str = "PULSEBEAM_API_SECRET";

/// Where the API key and secret come from.
#[derive(Debug, Clone, Default, Args)]
pub struct CredentialArgs {
    /// The API key (kid_…). Default: from --env-file, else $PULSEBEAM_API_KEY.
    #[arg(long, value_name = "KEY", help_heading = "Credentials")]
    pub api_key: Option<String>,

    /// The API secret (sk_…). Prefer --env-file or $PULSEBEAM_API_SECRET: other users of this
    /// machine can read command lines. Default: from --env-file, else $PULSEBEAM_API_SECRET.
    #[arg(long, value_name = "SECRET", help_heading = "Credentials")]
    pub api_secret: Option<String>,

    /// A .env file with PULSEBEAM_API_KEY= and PULSEBEAM_API_SECRET= lines, such as the one
    /// `pulsebeam keygen --out` writes. Flags override it; it overrides the environment.
    #[arg(long, value_name = "PATH", help_heading = "Credentials")]
    pub env_file: Option<PathBuf>,
}

/// Where one credential value was found, for messages (never the value itself).
#[derive(Debug, Clone)]
enum Origin {
    Flag(&'static str),
    File(PathBuf),
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::File(path) => write!(f, "--env-file `{}`", path.display()),
            Origin::Env(name) => write!(f, "${name}"),
        }
    }
}

/// The values of an env file that matter here.
#[derive(Default)]
struct EnvFile {
    api_key: Option<Zeroizing<String>>,
    api_secret: Option<Zeroizing<String>>,
}

/// Parses `NAME=VALUE` lines; blank lines, `#` comments and an `export ` prefix are allowed,
/// values may be quoted. Other names are ignored. Errors never quote a value.
fn parse_env_file(text: &str, path: &Path) -> Result<EnvFile, CliError> {
    let mut file = EnvFile::default();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((name, value)) = line.split_once('=') else {
            return Err(CliError::Usage(format!(
                "--env-file `{}`: line {} is not NAME=VALUE; the file takes NAME=VALUE lines and # comments",
                path.display(),
                index + 1
            )));
        };
        let value = Zeroizing::new(unquote(value.trim()).to_owned());
        match name.trim() {
            API_KEY_VAR => file.api_key = Some(value),
            API_SECRET_VAR => file.api_secret = Some(value),
            _ => {}
        }
    }
    Ok(file)
}

/// Strips matching quotes, or a trailing ` # comment` from an unquoted value.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    match value.find(" #") {
        Some(at) => value.get(..at).unwrap_or(value).trim_end(),
        None => value,
    }
}

impl CredentialArgs {
    /// The flags given, by name: `--api-key`, `--api-secret`, `--env-file`.
    pub(crate) fn given_flags(&self) -> Vec<&'static str> {
        [
            ("--api-key", self.api_key.is_some()),
            ("--api-secret", self.api_secret.is_some()),
            ("--env-file", self.env_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }

    /// Whether any credential flag was given.
    pub(crate) fn is_given(&self) -> bool {
        !self.given_flags().is_empty()
    }

    /// These flags (given after the subcommand) together with `before` (given before it). A flag
    /// may be given in one place only: two values would leave it unclear which one is meant.
    pub(crate) fn merged_with(&self, before: &CredentialArgs) -> Result<CredentialArgs, CliError> {
        let twice: Vec<&str> = before
            .given_flags()
            .into_iter()
            .filter(|flag| self.given_flags().contains(flag))
            .collect();
        if !twice.is_empty() {
            return Err(CliError::Usage(format!(
                "{} given both before and after the subcommand; give each once, either place",
                twice.join(", ")
            )));
        }
        Ok(CredentialArgs {
            api_key: self.api_key.clone().or_else(|| before.api_key.clone()),
            api_secret: self
                .api_secret
                .clone()
                .or_else(|| before.api_secret.clone()),
            env_file: self.env_file.clone().or_else(|| before.env_file.clone()),
        })
    }

    /// Resolves and parses the credentials: flag, then env file, then environment.
    pub(crate) fn access_token(&self, session: &Session<'_, '_>) -> Result<AccessToken, CliError> {
        let file = match &self.env_file {
            Some(path) => {
                let text = Zeroizing::new(read_file(path, "--env-file")?);
                Some((parse_env_file(&text, path)?, path.clone()))
            }
            None => None,
        };
        let pick = |flag: &Option<String>,
                    flag_name: &'static str,
                    from_file: Option<&Zeroizing<String>>,
                    var: &'static str|
         -> Result<Option<(Zeroizing<String>, Origin)>, CliError> {
            if let Some(value) = flag {
                return Ok(Some((
                    Zeroizing::new(value.clone()),
                    Origin::Flag(flag_name),
                )));
            }
            if let (Some(value), Some((_, path))) = (from_file, &file) {
                return Ok(Some((value.clone(), Origin::File(path.clone()))));
            }
            Ok(session
                .env(var)?
                .map(|value| (Zeroizing::new(value), Origin::Env(var))))
        };
        let missing = |what: &str, flag: &str, var: &str| {
            CliError::Usage(format!(
                "no {what}: pass {flag}, set {var}, or name a file with a {var}= line with --env-file (`pulsebeam keygen --out .env` writes one)"
            ))
        };
        let (key, key_origin) = pick(
            &self.api_key,
            "--api-key",
            file.as_ref().and_then(|(f, _)| f.api_key.as_ref()),
            API_KEY_VAR,
        )?
        .ok_or_else(|| missing("API key", "--api-key", API_KEY_VAR))?;
        let (secret, secret_origin) = pick(
            &self.api_secret,
            "--api-secret",
            file.as_ref().and_then(|(f, _)| f.api_secret.as_ref()),
            API_SECRET_VAR,
        )?
        .ok_or_else(|| missing("API secret", "--api-secret", API_SECRET_VAR))?;
        AccessToken::new(&key, &secret).map_err(|source| {
            let context = match source {
                KeyError::InvalidApiKey(_) => format!("invalid API key from {key_origin}"),
                _ => format!("invalid API secret from {secret_origin}"),
            };
            CliError::Key { context, source }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn env_file_errors_never_quote_the_file(text in "[^\\n=]{1,40}") {
            // A line without `=` is refused, and the message does not repeat it.
            let line = format!("x{text}");
            match parse_env_file(&line, Path::new("f")) {
                Err(CliError::Usage(message)) => proptest::prop_assert!(!message.contains(line.trim())),
                Ok(_) => proptest::prop_assert!(line.trim().is_empty() || line.trim().starts_with('#')),
                Err(other) => proptest::prop_assert!(false, "unexpected {other:?}"),
            }
        }

        #[test]
        fn env_file_values_round_trip(value in "[0-9a-zA-Z_]{1,70}") {
            let file = parse_env_file(&format!("PULSEBEAM_API_SECRET={value}\n"), Path::new("f")).unwrap();
            proptest::prop_assert_eq!(file.api_secret.as_deref().map(String::as_str), Some(value.as_str()));
        }
    }

    #[test]
    fn env_file_lines() {
        let text = "# comment\n\nexport PULSEBEAM_API_KEY=\"kid_1\"\nPULSEBEAM_API_SECRET = sk_ab # trailing\nOTHER=x\n";
        let file = parse_env_file(text, Path::new("f")).unwrap();
        assert_eq!(file.api_key.as_deref().map(String::as_str), Some("kid_1"));
        assert_eq!(
            file.api_secret.as_deref().map(String::as_str),
            Some("sk_ab")
        );

        let file = parse_env_file("PULSEBEAM_API_SECRET='sk_#x'\n", Path::new("f")).unwrap();
        assert_eq!(
            file.api_secret.as_deref().map(String::as_str),
            Some("sk_#x")
        );

        let Err(CliError::Usage(message)) = parse_env_file("A=1\nsk_secretvalue\n", Path::new("f"))
        else {
            panic!("a line without `=` must be refused");
        };
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains("secretvalue"), "{message}");
    }
}
