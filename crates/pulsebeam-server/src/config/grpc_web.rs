//! The `[grpc_web]` section: the gRPC-web `pulsebeam.v1.Signaling` service of the 0.0.18 to
//! 0.1.0-rc.2 clients: keep-alives on `Recv` streams, how long a stream lives, and how a `Recv`
//! that carries no token is admitted.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// How a gRPC-web `Recv` without a token is admitted (`grpc_web.tokenless_recv`). The clients
/// add the token to unary calls only; a `Recv` with the token in the path
/// (`baseUrl = https://HOST/grpc/t/<token>`) or in an `Authorization` header is always checked
/// like any other call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenlessRecv {
    /// Admitted for a peer whose token authenticated a unary call (`Prepare`, `Send`,
    /// `AnalyticsReport`) from the same client address, as that token, until it expires.
    #[default]
    Bound,
    /// Refused: every `Recv` must carry the token, in the path or a header.
    Refuse,
}

/// gRPC-web settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GrpcWebConfig {
    /// Seconds between keep-alive `Ping` messages on an idle `Recv` stream
    /// (`grpc_web.keepalive_secs`), so that proxies with 30 to 60 s idle timeouts keep it open.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// Longest life of a `Recv` stream, in seconds (`grpc_web.max_stream_secs`); the client's
    /// own `grpc-timeout` (15 minutes) ends it sooner, and the token's expiry always does. A
    /// stream that ends with status OK is reopened by the client at once.
    #[serde(default = "default_max_stream")]
    pub max_stream_secs: u64,
    /// How a `Recv` without a token is admitted (`grpc_web.tokenless_recv`): `"bound"` (the
    /// default) or `"refuse"`.
    #[serde(default)]
    pub tokenless_recv: TokenlessRecv,
    /// Proxies whose `X-Forwarded-For` is believed (`grpc_web.trusted_proxies`): addresses or
    /// CIDR blocks such as `"10.0.0.0/8"`. A tokenless `Recv` is bound to the client's address,
    /// which behind a proxy only the proxy can tell.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

fn default_keepalive() -> u64 {
    20
}

fn default_max_stream() -> u64 {
    3600
}

impl Default for GrpcWebConfig {
    fn default() -> Self {
        GrpcWebConfig {
            keepalive_secs: default_keepalive(),
            max_stream_secs: default_max_stream(),
            tokenless_recv: TokenlessRecv::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// An address block: an address and how many leading bits of it must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Reads `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or `addr/n`.
    pub(crate) fn parse(text: &str) -> Option<Cidr> {
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(bits) => bits.trim().parse::<u8>().ok().filter(|b| *b <= max)?,
            None => max,
        };
        Some(Cidr { addr, bits })
    }

    /// Whether `ip` is in the block (an IPv4 address mapped into IPv6 counts as IPv4).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()),
                u128::from(ip.to_bits()),
                32,
                self.bits,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), 128, self.bits)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, width: u32, bits: u8) -> bool {
    let bits = u32::from(bits);
    if bits == 0 {
        return true;
    }
    let shift = width - bits.min(width);
    (a >> shift) == (b >> shift)
}

impl GrpcWebConfig {
    /// The trusted proxies, parsed (validation refuses a config where one does not parse).
    pub(crate) fn proxies(&self) -> Vec<Cidr> {
        self.trusted_proxies
            .iter()
            .filter_map(|p| Cidr::parse(p))
            .collect()
    }

    /// Checks the bounds and the proxy blocks.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=300).contains(&self.keepalive_secs) {
            return Err(ConfigError::invalid(
                "grpc_web.keepalive_secs",
                format!("{} is out of range", self.keepalive_secs),
                "give 1 to 300 seconds; below the shortest idle timeout of the proxies in front of the server (20 suits most)",
            ));
        }
        if !(10..=86_400).contains(&self.max_stream_secs) {
            return Err(ConfigError::invalid(
                "grpc_web.max_stream_secs",
                format!("{} is out of range", self.max_stream_secs),
                "give 10 to 86400 seconds",
            ));
        }
        for (i, proxy) in self.trusted_proxies.iter().enumerate() {
            if Cidr::parse(proxy).is_none() {
                return Err(ConfigError::invalid(
                    format!("grpc_web.trusted_proxies[{i}]"),
                    format!("{proxy:?} is not an address or CIDR block"),
                    "write an address (\"10.0.0.5\", \"::1\") or a block (\"10.0.0.0/8\", \"fd00::/8\")",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_match_their_addresses() {
        let cases = [
            ("10.0.0.0/8", "10.200.3.4", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.5", "10.0.0.5", true),
            ("10.0.0.5", "10.0.0.6", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("127.0.0.1", "::ffff:127.0.0.1", true),
            ("::1", "127.0.0.1", false),
        ];
        for (block, ip, inside) in cases {
            let cidr = Cidr::parse(block).unwrap();
            assert_eq!(cidr.contains(ip.parse().unwrap()), inside, "{block} {ip}");
        }
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "example.com",
            "10.0.0/8",
            "",
            "1.2.3.4/x",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn bounds_and_blocks_are_checked_naming_the_key() {
        let bad = [
            (
                GrpcWebConfig {
                    keepalive_secs: 0,
                    ..GrpcWebConfig::default()
                },
                "grpc_web.keepalive_secs",
            ),
            (
                GrpcWebConfig {
                    max_stream_secs: 5,
                    ..GrpcWebConfig::default()
                },
                "grpc_web.max_stream_secs",
            ),
            (
                GrpcWebConfig {
                    trusted_proxies: vec!["10.0.0.0/8".into(), "nope".into()],
                    ..GrpcWebConfig::default()
                },
                "grpc_web.trusted_proxies[1]",
            ),
        ];
        for (config, key) in bad {
            assert_eq!(config.validate().unwrap_err().key(), Some(key));
        }
        assert!(GrpcWebConfig::default().validate().is_ok());
    }
}
