//! TLS to Redis: `rediss://` with `[store.tls]`, against the TLS-only redis-server that
//! `scripts/redis.sh start` runs with a throwaway CA (`PULSEBEAM_TEST_REDIS_TLS_*`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pulsebeam_server::store::{Envelope, PeerAddr, StoreError};
use pulsebeam_server::{BuildError, Limits, MailboxStore, RedisStore, Server, StoreTls};

use crate::common::{node_config, store_config, unique_prefix, NOW};

/// The TLS server's URL, CA, client certificate and key, or `None` after a SKIP line (a failure
/// with `PULSEBEAM_REQUIRE_REDIS=1`).
fn tls_env(test: &str) -> Option<(String, PathBuf, PathBuf, PathBuf)> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (
        get("PULSEBEAM_TEST_REDIS_TLS_URL"),
        get("PULSEBEAM_TEST_REDIS_TLS_CA"),
        get("PULSEBEAM_TEST_REDIS_TLS_CERT"),
        get("PULSEBEAM_TEST_REDIS_TLS_KEY"),
    ) {
        (Some(url), Some(ca), Some(cert), Some(key)) => {
            Some((url, ca.into(), cert.into(), key.into()))
        }
        _ => {
            assert!(
                std::env::var("PULSEBEAM_REQUIRE_REDIS").as_deref() != Ok("1"),
                "PULSEBEAM_TEST_REDIS_TLS_* are not set but PULSEBEAM_REQUIRE_REDIS=1; run `eval \"$(scripts/redis.sh start)\"` first"
            );
            eprintln!("SKIP {test}: PULSEBEAM_TEST_REDIS_TLS_URL is not set; run `eval \"$(scripts/redis.sh start)\"`");
            None
        }
    }
}

fn tls(ca: PathBuf, client: Option<(PathBuf, PathBuf)>) -> StoreTls {
    let mut tls = StoreTls::default();
    tls.ca_file = Some(ca);
    if let Some((cert, key)) = client {
        tls.cert_file = Some(cert);
        tls.key_file = Some(key);
    }
    tls
}

fn bob() -> PeerAddr<'static> {
    PeerAddr {
        project: "main",
        group: "g",
        peer: "bob",
    }
}

fn envelope() -> Envelope {
    Envelope {
        src_group: Arc::from("g"),
        src_peer: Arc::from("alice"),
        message: Bytes::from_static(b"over tls"),
    }
}

async fn relays(store: &RedisStore) {
    let start = Instant::now();
    while let Err(err) = store.health().await {
        assert!(start.elapsed() < Duration::from_secs(10), "{err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.deliver(bob(), 100, envelope()).await.unwrap();
    let polled = store.poll(bob(), 100, NOW).await.unwrap();
    assert_eq!(polled.messages, [envelope()]);
}

/// Mail goes through a Redis that speaks only TLS, trusting the configured CA, with and
/// without a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_relayed_over_tls_with_the_configured_ca() {
    let Some((url, ca, cert, key)) = tls_env("mail_is_relayed_over_tls_with_the_configured_ca")
    else {
        return;
    };
    let mut config = store_config(std::slice::from_ref(&url), &unique_prefix("tls"));
    config.tls = Some(tls(ca.clone(), None));
    relays(&RedisStore::new(&config, &Limits::default()).unwrap()).await;
    config.key_prefix = unique_prefix("mtls");
    config.tls = Some(tls(ca, Some((cert, key))));
    relays(&RedisStore::new(&config, &Limits::default()).unwrap()).await;
}

/// A CA that did not sign Redis's certificate: no connection, `unavailable` within the call
/// timeout, never plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_certificate_the_ca_did_not_sign_is_refused() {
    let Some((url, _, cert, _)) = tls_env("a_redis_certificate_the_ca_did_not_sign_is_refused")
    else {
        return;
    };
    // The client certificate is no CA of Redis's certificate.
    let mut config = store_config(&[url], &unique_prefix("tls-wrong-ca"));
    config.tls = Some(tls(cert, None));
    let store = RedisStore::new(&config, &Limits::default()).unwrap();
    let start = Instant::now();
    let err = store.deliver(bob(), 100, envelope()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// A `[store.tls]` file that cannot be read stops the server from starting, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_tls_file_is_a_configuration_error_naming_its_key() {
    let Some((url, ca, _, _)) =
        tls_env("an_unreadable_tls_file_is_a_configuration_error_naming_its_key")
    else {
        return;
    };
    let mut store = store_config(&[url], &unique_prefix("tls-missing"));
    store.tls = Some(tls(
        ca,
        Some((
            "/nonexistent/client.crt".into(),
            "/nonexistent/client.key".into(),
        )),
    ));
    let (config, _) = node_config(store, None);
    let err = match Server::new(config.clone()) {
        Err(err) => err,
        Ok(_) => panic!("a server started with a missing client certificate"),
    };
    assert!(matches!(err, BuildError::Config(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("store.tls.cert_file"), "{text}");
    let checked = pulsebeam_server::check(&config).unwrap_err().to_string();
    assert!(checked.contains("store.tls.cert_file"), "{checked}");
}
