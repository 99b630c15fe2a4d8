//! `idle`: thousands of peers each holding a `Recv` long-poll open; the server's memory per
//! idle peer.
//!
//! The clients are raw sockets that write one request each and wait, in this process; the
//! server runs in a child process, so its resident memory is its own.

use std::time::Duration;

use prost::Message as _;
use pulsebeam_server::proto::{PeerInfo, RecvReq};
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::keys::{ProjectKey, GROUP};
use crate::process::{ServerKind, ServerProcess};
use crate::LoadError;

/// The figures of an idle run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// What served: `pulsebeam`, or `pending` (bare axum + hyper, never answering).
    pub server: &'static str,
    /// Long-polls open when measured.
    pub peers: usize,
    /// Server RSS before the peers connected, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with every peer polling, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / peers, bytes.
    pub bytes_per_peer: f64,
}

impl IdleReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        format!(
            "idle ({server}): {peers} long-polling peers\n\
             \x20 server RSS        {before:>10} KiB -> {after} KiB\n\
             \x20 per idle peer     {per:>10.0} bytes ({kib:.1} KiB)\n",
            server = self.server,
            peers = self.peers,
            before = self.rss_before_kib,
            after = self.rss_after_kib,
            per = self.bytes_per_peer,
            kib = self.bytes_per_peer / 1024.0,
        )
    }
}

/// Opens `peers` long-polls against a server child process and measures its memory.
///
/// `stack_only` serves them with bare axum + hyper instead (a handler that never answers), to
/// show what the HTTP stack alone costs.
///
/// # Errors
///
/// [`LoadError::FileLimit`] when the open-file limit is too low for `peers` connections, or
/// another [`LoadError`] when the server cannot start or a connection fails.
pub async fn run(peers: usize, stack_only: bool) -> Result<IdleReport, LoadError> {
    crate::process::ensure_open_files(peers as u64 + 64)?;
    let key = ProjectKey::generate()?;
    let kind = if stack_only {
        ServerKind::Pending
    } else {
        ServerKind::Pulsebeam
    };
    // The longest poll the server allows, so none returns while they are counted.
    let server = ServerProcess::spawn(kind, &key, 120_000, peers).await?;
    let addr = server.addr();
    let requests = (0..peers)
        .map(|i| recv_request(&key, addr, i))
        .collect::<Result<Vec<_>, _>>()?;
    // The server has answered a call (`/metrics`) before `before` is read, so its runtime's and
    // allocator's first-use costs are not counted against the peers.
    crate::relay::wait_for_polls(addr, 0).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = server.rss_kib()?;
    let mut sockets = Vec::with_capacity(peers);
    for request in &requests {
        let mut socket = TcpStream::connect(addr).await?;
        socket.write_all(request).await?;
        sockets.push(socket);
    }
    crate::relay::wait_for_polls(addr, peers).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server.rss_kib()?;
    drop(sockets);
    server.stop().await;
    Ok(IdleReport {
        server: if stack_only { "pending" } else { "pulsebeam" },
        peers,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        bytes_per_peer: rss_after.saturating_sub(rss_before) as f64 * 1024.0 / peers as f64,
    })
}

fn recv_request(
    key: &ProjectKey,
    addr: std::net::SocketAddr,
    i: usize,
) -> Result<Vec<u8>, LoadError> {
    let peer = format!("i{i}");
    let bearer = key.bearer(&peer)?;
    let body = RecvReq {
        src: Some(PeerInfo {
            group_id: GROUP.into(),
            peer_id: peer,
            conn_id: 1_000,
        }),
    }
    .encode_to_vec();
    let mut request = format!(
        "POST /twirp/pulsebeam.v1.Tunnel/Recv HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/protobuf\r\nauthorization: {bearer}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    Ok(request)
}
