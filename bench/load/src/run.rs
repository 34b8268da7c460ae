//! Sending a workload: `connections` keep-alive HTTP/1.1 connections, one request in flight on
//! each, taking the next batch in order until the batches or the time run out.
//!
//! Batches are claimed in order and a claimed batch is always sent, so the batches sent are
//! always the first ones of the workload, whose expected counts and totals are known.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::workload::Workload;

/// How to send.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub addr: SocketAddr,
    /// Concurrent connections (each with one request in flight).
    pub connections: usize,
    /// No batch is started after this long.
    pub duration: Option<Duration>,
    /// A request that takes longer fails.
    pub request_timeout: Duration,
}

/// The 200 answer of `POST /v1/events`.
#[derive(Deserialize)]
struct Answer {
    accepted: u64,
    duplicates: u64,
    rejected: Vec<serde_json::Value>,
}

/// What came back.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    /// Batches sent (the first ones of the workload).
    pub batches_sent: usize,
    pub elapsed: Duration,
    /// Time of every request that got an answer, from sending to the whole body received.
    pub latencies: Vec<Duration>,
    /// Sums over the 200 answers.
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection refused or reset, timeout).
    pub transport_errors: u64,
    /// 200 answers whose body was not the expected JSON, or whose counts did not add up to the
    /// batch's events.
    pub inconsistent_answers: u64,
    /// The first problem seen, for the report.
    pub first_problem: Option<String>,
}

impl RunResult {
    fn merge(&mut self, o: RunResult) {
        self.latencies.extend(o.latencies);
        self.accepted += o.accepted;
        self.duplicates += o.duplicates;
        self.rejected += o.rejected;
        for (s, n) in o.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.transport_errors += o.transport_errors;
        self.inconsistent_answers += o.inconsistent_answers;
        if self.first_problem.is_none() {
            self.first_problem = o.first_problem;
        }
    }

    fn problem(&mut self, p: impl FnOnce() -> String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(p());
        }
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Drives the connection; ends when the sender is dropped or the peer closes.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one batch and returns the status and the body.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    content_type: &'static str,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await?;
    let req = http::Request::post("/v1/events")
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(body))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

async fn connection(
    cfg: Arc<RunConfig>,
    workload: Arc<Workload>,
    next: Arc<AtomicUsize>,
    deadline: Option<Instant>,
) -> RunResult {
    let mut out = RunResult::default();
    let host = cfg.addr.to_string();
    let content_type = workload.format.content_type();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(batch) = workload.batches.get(i) else {
            break;
        };
        let started = Instant::now();
        let attempt = async {
            let s = match sender.as_mut() {
                Some(s) => s,
                None => sender.insert(connect(cfg.addr).await?),
            };
            send(s, &host, content_type, batch.body.clone()).await
        };
        let result = match tokio::time::timeout(cfg.request_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "no answer within {:?}",
                cfg.request_timeout
            )),
        };
        match result {
            Ok((status, body)) => {
                out.latencies.push(started.elapsed());
                *out.statuses.entry(status).or_default() += 1;
                if status != 200 {
                    out.problem(|| {
                        format!(
                            "batch {i}: status {status}: {}",
                            String::from_utf8_lossy(&body)
                        )
                    });
                    continue;
                }
                match serde_json::from_slice::<Answer>(&body) {
                    Ok(a) => {
                        out.accepted += a.accepted;
                        out.duplicates += a.duplicates;
                        out.rejected += a.rejected.len() as u64;
                        if a.accepted + a.duplicates + a.rejected.len() as u64 != batch.events {
                            out.inconsistent_answers += 1;
                            out.problem(|| {
                                format!(
                                    "batch {i}: {} events, answer {}",
                                    batch.events,
                                    String::from_utf8_lossy(&body)
                                )
                            });
                        } else if !a.rejected.is_empty() {
                            out.problem(|| {
                                format!(
                                    "batch {i}: rejected {}",
                                    serde_json::Value::Array(a.rejected)
                                )
                            });
                        }
                    }
                    Err(e) => {
                        out.inconsistent_answers += 1;
                        out.problem(|| format!("batch {i}: unexpected answer ({e})"));
                    }
                }
            }
            Err(e) => {
                out.transport_errors += 1;
                out.problem(|| format!("batch {i}: {e:#}"));
                // Start the next batch on a fresh connection.
                sender = None;
            }
        }
    }
    out
}

/// Sends the workload and gathers the answers.
pub async fn run(cfg: RunConfig, workload: Arc<Workload>) -> anyhow::Result<RunResult> {
    anyhow::ensure!(cfg.connections > 0, "at least one connection");
    let cfg = Arc::new(cfg);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = cfg.duration.map(|d| started + d);
    let tasks: Vec<_> = (0..cfg.connections)
        .map(|_| {
            tokio::spawn(connection(
                Arc::clone(&cfg),
                Arc::clone(&workload),
                Arc::clone(&next),
                deadline,
            ))
        })
        .collect();
    let mut out = RunResult::default();
    for t in tasks {
        out.merge(t.await.context("a connection task failed")?);
    }
    out.elapsed = started.elapsed();
    out.batches_sent = next.load(Ordering::Relaxed).min(workload.batches.len());
    Ok(out)
}
