//! What the configuration file decides at run time, built once per (re)load and swapped whole,
//! so a call sees one consistent configuration from start to end.

use std::sync::Arc;

use axum::http::HeaderValue;
use pulsebeam_token::Clock;

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError};
use crate::limiter::CallLimiter;

/// The configuration in force and what is derived from it.
pub(crate) struct Live {
    pub(crate) config: Arc<Config>,
    pub(crate) auth: Authenticator,
    pub(crate) limiter: Arc<CallLimiter>,
    pub(crate) cors: Cors,
    /// Counts loads: 1 for the configuration the server started with.
    pub(crate) generation: u64,
}

impl Live {
    /// Validates `config` and derives what calls need from it. The rate limiter's budgets are
    /// kept from `previous` when the rate is unchanged, so a reload does not refill them.
    pub(crate) fn build(
        config: Config,
        clock: Arc<dyn Clock>,
        previous: Option<&Live>,
    ) -> Result<Live, ConfigError> {
        let key_sets = config.key_sets()?;
        config.validate_without_keys()?;
        let limits = &config.limits;
        let ids: Vec<Arc<str>> = config
            .projects
            .iter()
            .map(|p| Arc::from(p.id.as_str()))
            .collect();
        let auth = Authenticator::new(
            &key_sets,
            &ids,
            clock,
            limits.token_leeway_secs,
            limits.token_cache_capacity,
            limits.max_token_lifetime_secs,
        );
        let limiter = match previous {
            Some(old)
                if old.config.limits.rate_per_sec == limits.rate_per_sec
                    && old.config.limits.rate_burst == limits.rate_burst =>
            {
                Arc::clone(&old.limiter)
            }
            _ => Arc::new(CallLimiter::new(limits.rate_per_sec, limits.rate_burst)),
        };
        let cors = Cors::new(&config.cors.allowed_origins);
        Ok(Live {
            auth,
            limiter,
            cors,
            generation: previous.map_or(1, |p| p.generation + 1),
            config: Arc::new(config),
        })
    }
}

/// Keys read once when the server starts: a reload that changes them keeps the running values
/// (and says so), since applying them needs a restart.
pub(crate) fn keep_fixed(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! fixed {
        ($($path:ident).+, $name:literal) => {
            if running.$($path).+ != new.$($path).+ {
                new.$($path).+ = running.$($path).+.clone();
                kept.push($name);
            }
        };
    }
    fixed!(listen, "listen");
    // The runtime's threads are started with the process.
    fixed!(workers, "workers");
    fixed!(limits.max_open_connections, "limits.max_open_connections");
    fixed!(limits.header_timeout_secs, "limits.header_timeout_secs");
    fixed!(limits.max_header_bytes, "limits.max_header_bytes");
    fixed!(limits.mailbox_capacity, "limits.mailbox_capacity");
    fixed!(limits.message_ttl_secs, "limits.message_ttl_secs");
    fixed!(limits.connection_idle_secs, "limits.connection_idle_secs");
    fixed!(
        limits.max_connections_per_peer,
        "limits.max_connections_per_peer"
    );
    fixed!(
        limits.max_connections_per_project,
        "limits.max_connections_per_project"
    );
    fixed!(admin, "admin");
    fixed!(audit, "audit");
    // The mailbox store is built once, at start.
    fixed!(store, "store");
    // coturn's statistics are read by a task started with the server.
    fixed!(usage, "usage");
    // The listener speaks HTTPS or plain HTTP from its start; the `[tls]` files themselves reload.
    if running.tls.is_some() != new.tls.is_some() {
        new.tls.clone_from(&running.tls);
        kept.push("tls");
    }
    kept
}

/// Allowed origins.
pub(crate) struct Cors {
    any: bool,
    origins: Vec<HeaderValue>,
}

impl Cors {
    fn new(origins: &[String]) -> Self {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    pub(crate) fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.any {
            Some(HeaderValue::from_static("*"))
        } else {
            self.origins.iter().find(|o| *o == origin).cloned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_keeps_the_running_workers_and_says_so() {
        let running = Config {
            workers: Some(2),
            ..Config::default()
        };
        let mut new = Config {
            workers: Some(8),
            ..Config::default()
        };
        assert_eq!(keep_fixed(&running, &mut new), ["workers"]);
        assert_eq!(new.workers, Some(2));
        let mut same = running.clone();
        assert!(keep_fixed(&running, &mut same).is_empty());
    }
}
