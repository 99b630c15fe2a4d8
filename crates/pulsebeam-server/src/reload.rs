//! Applying a changed configuration without a restart: from a [`Config`] value, from the
//! configuration file (as SIGHUP and the admin API do), and the `[tls]` files with it.

use std::sync::Arc;

use crate::audit::Event;
use crate::config::{Config, ConfigError};
use crate::live::{keep_fixed, Live};
use crate::Server;

impl Server {
    /// Applies `config` without a restart: projects, keys, limits, ICE, CORS and the audit
    /// target's policy take effect for the next call; tokens of removed keys stop working at
    /// once, cached and on open long-polls (which end with `unauthenticated`). Keys that need a
    /// restart (`listen`, the connection and store limits, `[admin]`) keep their running values
    /// and are named in the outcome. With `[tls]` its files are read again and new connections
    /// get the certificate (open ones keep theirs); adding or removing `[tls]` needs a restart.
    /// An invalid `config`, or an unusable certificate or key, changes nothing.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] that makes `config` unusable (for the `[tls]` files, naming
    /// `tls.cert_file` or `tls.key_file`); the running configuration and certificate stay.
    pub fn reload(&self, mut config: Config) -> Result<ReloadOutcome, ConfigError> {
        let state = self.state();
        let _one = state
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let running = state.live.load_full();
        let kept = keep_fixed(&running.config, &mut config);
        let live = Live::build(config, Arc::clone(&state.clock), Some(&running))
            .and_then(|live| self.reload_tls_with(&live.config).map(|()| live));
        let live = match live {
            Ok(live) => live,
            Err(err) => {
                state.metrics.reload(false);
                state.audit.record(
                    Event::new("reload")
                        .with("ok", false)
                        .with("error", err.to_string()),
                );
                tracing::error!(error = %err, "configuration reload refused; the running configuration stays");
                return Err(err);
            }
        };
        let outcome = ReloadOutcome {
            generation: live.generation,
            projects: live.config.projects.iter().map(|p| p.id.clone()).collect(),
            restart_needed: kept.iter().map(|k| (*k).to_owned()).collect(),
        };
        state.usage.set_projects(&project_ids(&live.config));
        state.live.store(Arc::new(live));
        state.epoch.send_modify(|e| *e += 1);
        state.metrics.reload(true);
        state.audit.record(
            Event::new("reload")
                .with("ok", true)
                .with("generation", outcome.generation)
                .with("restart_needed", outcome.restart_needed.clone()),
        );
        if outcome.restart_needed.is_empty() {
            tracing::info!(generation = outcome.generation, projects = ?outcome.projects, "configuration reloaded");
        } else {
            tracing::warn!(generation = outcome.generation, restart_needed = ?outcome.restart_needed, "configuration reloaded; these keys changed but keep their running values until a restart");
        }
        Ok(outcome)
    }

    /// Reads the configuration file again (see [`crate::ServerBuilder::config_file`]) and
    /// [reloads](Server::reload) it.
    ///
    /// # Errors
    ///
    /// [`ReloadError::NoFile`] when the server was not built from a file, else the file's
    /// [`ConfigError`]; the running configuration stays.
    pub fn reload_from_file(&self) -> Result<ReloadOutcome, ReloadError> {
        let path = self
            .state()
            .config_file
            .as_ref()
            .ok_or(ReloadError::NoFile)?;
        let config = Config::from_file(path).map_err(|err| {
            self.state().metrics.reload(false);
            self.state().audit.record(
                Event::new("reload")
                    .with("ok", false)
                    .with("error", err.to_string()),
            );
            tracing::error!(error = %err, "configuration reload refused; the running configuration stays");
            ReloadError::Config(err)
        })?;
        Ok(self.reload(config)?)
    }

    /// A reload's `[tls]`: the files it names are read again (a renewal replaces them in place,
    /// or the paths changed). Adding or removing `[tls]` waits for a restart (`keep_fixed`).
    fn reload_tls_with(&self, config: &Config) -> Result<(), ConfigError> {
        match (&self.state().tls, &config.tls) {
            (Some(tls), Some(files)) => Ok(tls.reload_from(files)?),
            _ => Ok(()),
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ReloadOutcome {
    /// Counts configurations loaded: 1 is the one the server started with.
    pub generation: u64,
    /// The projects now configured.
    pub projects: Vec<String>,
    /// Keys that changed in the file but keep their running values until a restart.
    pub restart_needed: Vec<String>,
}

/// Why a reload from the configuration file did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The server was not built from a file.
    #[error("the server was not started from a configuration file, so there is nothing to reload; start it with `pulsebeam serve --config FILE`")]
    NoFile,
    /// The file is not a usable configuration; the running one stays.
    #[error("{0}; the running configuration stays")]
    Config(#[from] ConfigError),
}

pub(crate) fn project_ids(config: &Config) -> Vec<Arc<str>> {
    config
        .projects
        .iter()
        .map(|p| Arc::from(p.id.as_str()))
        .collect()
}
