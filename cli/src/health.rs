//! `sqskit health`: ask a running poller's metrics listener whether it is live (or ready), for
//! container health checks in images without curl. Exit 0: healthy; 1: not (the reason and the
//! poller's report on stderr).

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The poller's --metrics-addr, as reachable from here (e.g. 127.0.0.1:9090).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub addr: String,
    /// Check readiness (/readyz) instead of liveness (/healthz).
    #[arg(long)]
    pub ready: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let (status, body) = tokio::time::timeout(Duration::from_secs(args.timeout), get(&args.addr, path))
        .await
        .map_err(|_| anyhow::anyhow!("http://{}{path}: no answer within {} s", args.addr, args.timeout))??;
    println!("{}", body.trim());
    anyhow::ensure!(status == 200, "http://{}{path} answered {status}", args.addr);
    Ok(())
}

/// One `GET` over HTTP/1.0 (the listener closes after answering): (status, body).
async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream =
        tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr} (--addr)"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.take(1 << 20).read_to_end(&mut raw).await.with_context(|| format!("reading the answer from {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{addr} did not answer HTTP: {:?}", head.chars().take(80).collect::<String>()))?;
    Ok((status, body.to_string()))
}
