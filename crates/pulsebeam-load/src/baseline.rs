//! `baseline`: the same clients calling an empty handler behind the same HTTP stack, for the
//! rate a relay run is compared with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::client::Connection;
use crate::keys::ProjectKey;
use crate::process::{ServerKind, ServerProcess};
use crate::stats::Percentiles;
use crate::LoadError;

/// The figures of a baseline run.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// Keep-alive connections, each calling in a closed loop.
    pub connections: usize,
    /// Seconds measured.
    pub duration_s: f64,
    /// Requests answered.
    pub requests: u64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Round-trip time of one request.
    pub latency: Percentiles,
}

impl BaselineReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        format!(
            "baseline (empty handler, same stack): {c} connections, {d:.1} s\n\
             \x20 requests/s        {rps:>10.0}\n\
             \x20 requests          {n:>10}\n\
             \x20 latency p50       {p50:>10.2} ms\n\
             \x20 latency p99       {p99:>10.2} ms\n",
            c = self.connections,
            d = self.duration_s,
            rps = self.requests_per_s,
            n = self.requests,
            p50 = self.latency.p50_ms,
            p99 = self.latency.p99_ms,
        )
    }
}

/// Starts the server with its `/empty` route in a child process and measures it.
///
/// # Errors
///
/// A [`LoadError`] when the server cannot start or a call fails.
pub async fn run(connections: usize, duration: Duration) -> Result<BaselineReport, LoadError> {
    crate::process::ensure_open_files(connections as u64 * 2 + 64)?;
    let key = ProjectKey::generate()?;
    let server = ServerProcess::spawn(
        ServerKind::Empty,
        &key,
        20_000,
        connections,
        &crate::process::Store::Memory,
    )
    .await?;
    let result = drive(server.addr(), &key, connections, duration).await;
    server.stop().await;
    result
}

/// Calls `POST /empty` on `addr` from `connections` connections for `duration`, with the
/// headers and body size of a relay `Send`.
///
/// # Errors
///
/// A [`LoadError`] when a call fails or is not answered 200.
pub async fn drive(
    addr: SocketAddr,
    key: &ProjectKey,
    connections: usize,
    duration: Duration,
) -> Result<BaselineReport, LoadError> {
    let stop = Arc::new(AtomicBool::new(false));
    // A body the size of the relay's SendReq, so both move the same bytes.
    let body = Bytes::from(vec![0u8; 200]);
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let bearer = key.bearer(&format!("b{i}"))?;
        let mut connection = Connection::open(addr).await?;
        let (stop, body) = (Arc::clone(&stop), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let reply = connection.post("/empty", &bearer, body.clone()).await?;
                if reply.status != 200 {
                    return Err(LoadError::Protocol(format!(
                        "the empty handler answered {}",
                        reply.status
                    )));
                }
                latencies.push(started.elapsed().as_micros() as u64);
            }
            Ok::<_, LoadError>(latencies)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(
            task.await
                .map_err(|e| LoadError::Protocol(format!("a client task failed: {e}")))??,
        );
    }
    let duration_s = started.elapsed().as_secs_f64();
    Ok(BaselineReport {
        connections,
        duration_s,
        requests: latencies.len() as u64,
        requests_per_s: latencies.len() as f64 / duration_s,
        latency: Percentiles::of(&mut latencies),
    })
}
