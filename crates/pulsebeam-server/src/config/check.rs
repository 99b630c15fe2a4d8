//! Small checks and readers that several sections share.

use std::net::SocketAddr;

use serde::Deserialize;

/// Whether `s` holds whitespace or a control character, which no URL or origin may.
pub(super) fn has_space(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Why `listen` or `admin.listen` was refused. The value is not repeated: a parse error never
/// quotes the file (see `parse`), which recognises this message by its text.
pub(super) const SOCKET_ADDR_PROBLEM: &str = "not an IP:PORT address";

/// How to write an address `socket_addr` accepts.
pub(super) const SOCKET_ADDR_FIX: &str = "write e.g. \"0.0.0.0:3000\" (all interfaces) or \"127.0.0.1:3000\" (host names are not accepted)";

/// Reads an `IP:PORT` string (`listen`, `admin.listen`).
pub(super) fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|_| serde::de::Error::custom(SOCKET_ADDR_PROBLEM))
}

pub(super) fn default_true() -> bool {
    true
}
