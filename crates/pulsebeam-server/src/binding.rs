//! Admitting a gRPC-web `Recv` that carries no token.
//!
//! The 0.0.18 to 0.1.0-rc.2 clients add `Authorization: Bearer <token>` to unary calls only;
//! their `Recv` stream goes out without it. Reading a peer's stream must still need that peer's
//! token, or anyone who knows a group and a peer id could read its discovery messages and mail.
//!
//! # The binding
//!
//! A unary call authenticated with a token for peer `(group, peer)` from client address `A`
//! *binds* `(group, peer, A)` to that token until it expires (the latest such token wins). A
//! `Recv` without a token for `src = (group, peer)` from address `A` is then admitted as that
//! token: it is checked again like any call (expiry, revocation, key removal, project), it ends
//! when the token expires, and it is bound to the token's project. Every client calls
//! `Prepare` with its token before it opens `Recv`, so the binding is there when needed.
//!
//! The client address is the TCP peer, or, when the TCP peer is one of
//! `grpc_web.trusted_proxies`, the rightmost address of `X-Forwarded-For` that is not a
//! trusted proxy. IPv6 addresses are bound by their /64 (a host's temporary addresses change
//! within it). A tokenless `Recv` is refused when the address cannot be told: a request with
//! forwarding headers from a proxy that is not trusted, or from a trusted proxy without
//! `X-Forwarded-For`.
//!
//! # Threat model
//!
//! What a stranger needs to read a peer's messages without its token: the peer's group and
//! peer id, *and* the same client address as the peer (its NAT, or the same /64), *while* the
//! peer's token is valid and was used from there. Behind a shared NAT (a campus, a mobile
//! carrier) that is a real exposure; deployments that care set `grpc_web.tokenless_recv =
//! "refuse"` and give clients `baseUrl = https://HOST/grpc/t/<token>`, which authenticates every
//! call, `Recv` included (the token is then in the URL path: keep proxy access logs from
//! recording paths, or accept that they hold short-lived tokens). A token in the path is never
//! logged by this server.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue};

use crate::auth::Identity;
use crate::config::Cidr;
use crate::store::{BindingKey, BindingStore, StoreError};

/// Why a tokenless `Recv` cannot be bound to a client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unresolved {
    /// Forwarding headers from a TCP peer that is not a trusted proxy.
    UntrustedProxy,
    /// A trusted proxy that did not say whom it forwards for.
    NoForwardedFor,
}

impl Unresolved {
    /// What the client (and the operator) is told.
    pub(crate) fn explain(self) -> &'static str {
        match self {
            Unresolved::UntrustedProxy => "this request came through a proxy that is not in grpc_web.trusted_proxies, so its client address is unknown and a Recv without a token cannot be admitted; add the proxy to grpc_web.trusted_proxies, or give the client baseUrl = https://HOST/grpc/t/<token>",
            Unresolved::NoForwardedFor => "the trusted proxy in front of this server sent no X-Forwarded-For, so the client address is unknown and a Recv without a token cannot be admitted; make the proxy send X-Forwarded-For, or give the client baseUrl = https://HOST/grpc/t/<token>",
        }
    }
}

/// The address a request comes from, as far as bindings are concerned; `Ok(None)` when the
/// request did not come over TCP (in-process calls).
pub(crate) fn client_address(
    headers: &HeaderMap,
    remote: Option<SocketAddr>,
    proxies: &[Cidr],
) -> Result<Option<IpAddr>, Unresolved> {
    let Some(remote) = remote else {
        return Ok(None);
    };
    let peer = remote.ip();
    let trusted = |ip: IpAddr| proxies.iter().any(|p| p.contains(ip));
    let forwarded_for: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if !trusted(peer) {
        let forwarded = !forwarded_for.is_empty()
            || headers.contains_key("forwarded")
            || headers.contains_key("x-real-ip");
        return if forwarded {
            Err(Unresolved::UntrustedProxy)
        } else {
            Ok(Some(peer))
        };
    }
    if forwarded_for.is_empty() {
        return Err(Unresolved::NoForwardedFor);
    }
    // The rightmost entries were added by proxies we trust; the first one that is not a trusted
    // proxy is the client as the outermost trusted proxy saw it.
    for entry in forwarded_for.iter().rev() {
        let ip = parse_forwarded(entry).ok_or(Unresolved::NoForwardedFor)?;
        if !trusted(ip) {
            return Ok(Some(ip));
        }
    }
    Err(Unresolved::NoForwardedFor)
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse().ok())
}

/// The part of an address that identifies a client: the address itself for IPv4, the /64 for
/// IPv6.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// A binding as this node last wrote it: (group, peer, client) -> (credential, valid until).
type Written = HashMap<(Arc<str>, Arc<str>, IpAddr), (HeaderValue, u64)>;

/// The bindings a node uses: the store it shares with the other nodes, and what this node
/// last wrote there, so that a peer's every unary call does not write the same binding again.
pub(crate) struct Bindings {
    store: Arc<dyn BindingStore>,
    written: Mutex<Written>,
}

impl std::fmt::Debug for Bindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bindings").finish_non_exhaustive()
    }
}

/// Most bindings a node remembers having written; beyond, it forgets them all and writes again.
const WRITTEN_CAPACITY: usize = 100_000;

impl Bindings {
    /// Bindings kept in `store`.
    pub(crate) fn new(store: Arc<dyn BindingStore>) -> Self {
        Bindings {
            store,
            written: Mutex::default(),
        }
    }

    /// Binds the peer of `identity` at `client` to `credential`, the token it was verified
    /// from, until the token expires. A binding that cannot be written is logged: the peer's
    /// `Recv` without a token is then refused with a retryable status until a later call binds
    /// it.
    pub(crate) async fn note(
        &self,
        identity: &Identity,
        credential: Option<&HeaderValue>,
        client: Option<IpAddr>,
        now: u64,
    ) {
        let (Some(client), Some(credential)) = (client, credential) else {
            return;
        };
        let Ok(text) = credential.to_str() else {
            return;
        };
        let client = client_key(client);
        let cache_key = (
            Arc::clone(&identity.group),
            Arc::clone(&identity.peer),
            client,
        );
        let already = self.written.lock().ok().is_some_and(|written| {
            written
                .get(&cache_key)
                .is_some_and(|(c, until)| c == credential && *until == identity.valid_until)
        });
        if already {
            return;
        }
        let key = BindingKey {
            group: &identity.group,
            peer: &identity.peer,
            client,
        };
        match self.store.put(key, text, identity.valid_until, now).await {
            Ok(()) => {
                if let Ok(mut written) = self.written.lock() {
                    if written.len() >= WRITTEN_CAPACITY {
                        written.clear();
                    }
                    written.insert(cache_key, (credential.clone(), identity.valid_until));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot bind a peer for its Recv without a token");
            }
        }
    }

    /// The token bound to `(group, peer)` at `client`, expired or not (for an hour): admitting
    /// it tells a client whose token expired so (a fatal `unauthenticated`), where no binding at
    /// all is a condition its next unary call mends.
    ///
    /// # Errors
    ///
    /// The store's, when it cannot be reached.
    pub(crate) async fn lookup(
        &self,
        group: &str,
        peer: &str,
        client: IpAddr,
        now: u64,
    ) -> Result<Option<HeaderValue>, StoreError> {
        let key = BindingKey {
            group,
            peer,
            client: client_key(client),
        };
        let found = self.store.get(key, now).await?;
        Ok(found.and_then(|text| HeaderValue::from_str(&text).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn at(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn the_client_is_the_tcp_peer_unless_a_trusted_proxy_says_otherwise() {
        let proxies = [Cidr::parse("10.0.0.0/8").unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            client_address(&headers(&[]), at("203.0.113.7"), &proxies),
            Ok(ip("203.0.113.7"))
        );
        assert_eq!(client_address(&headers(&[]), None, &proxies), Ok(None));
        // A trusted proxy: the rightmost address that is not one of ours.
        let forwarded = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.1.1.1")]);
        assert_eq!(
            client_address(&forwarded, at("10.0.0.2"), &proxies),
            Ok(ip("203.0.113.9"))
        );
        let split = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "[2001:db8::1]:443"),
        ]);
        assert_eq!(
            client_address(&split, at("10.0.0.2"), &proxies),
            Ok(ip("2001:db8::1"))
        );
        // Forwarding headers from someone we do not trust: unknown.
        for (name, value) in [
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
        ] {
            assert_eq!(
                client_address(&headers(&[(name, value)]), at("203.0.113.7"), &proxies),
                Err(Unresolved::UntrustedProxy),
                "{name}"
            );
        }
        // A trusted proxy that forwards for no one, or only for trusted addresses, or garbage.
        assert_eq!(
            client_address(&headers(&[]), at("10.0.0.2"), &proxies),
            Err(Unresolved::NoForwardedFor)
        );
        let inner = headers(&[("x-forwarded-for", "10.2.2.2")]);
        assert_eq!(
            client_address(&inner, at("10.0.0.2"), &proxies),
            Err(Unresolved::NoForwardedFor)
        );
        let garbage = headers(&[("x-forwarded-for", "unknown")]);
        assert_eq!(
            client_address(&garbage, at("10.0.0.2"), &proxies),
            Err(Unresolved::NoForwardedFor)
        );
    }

    #[test]
    fn ipv6_clients_are_bound_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
