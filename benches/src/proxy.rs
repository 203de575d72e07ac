//! A counting TCP proxy between the measured process and LocalStack: bytes pass unchanged both
//! ways; the client -> server stream is scanned for HTTP/1.1 request lines (one per request) and
//! `X-Amz-Target: AmazonSQS.<Operation>` headers (the SQS JSON protocol, which the Rust SDK,
//! AWS SDK for JavaScript v3 and botocore all use), so each run's SQS requests are counted by
//! operation without touching the code under test (it only gets `AWS_ENDPOINT_URL` = the proxy).
//! Requests without the header (another protocol) count in the total as "other".

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default, Debug, Clone)]
pub struct Counts {
    pub total: u64,
    pub by_op: BTreeMap<String, u64>,
}

pub struct Proxy {
    pub addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to `upstream` (host:port).
    pub async fn start(upstream: String) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let c = counts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, counts) = (upstream.clone(), c.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = pipe(client, server, counts).await;
                    }
                });
            }
        });
        Ok(Proxy { addr, counts })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counts since the last call, and zero them.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

async fn pipe(client: TcpStream, server: TcpStream, counts: Arc<Mutex<Counts>>) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut scan = Scanner::default();
    loop {
        let n = cr.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let found = scan.feed(&buf[..n]);
        if found.total > 0 {
            let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
            c.total += found.total;
            for (k, v) in found.by_op {
                *c.by_op.entry(k).or_default() += v;
            }
        }
        sw.write_all(&buf[..n]).await?;
    }
    let _ = sw.shutdown().await;
    let _ = down.await;
    Ok(())
}

/// Finds request lines and target headers in a byte stream that arrives in arbitrary pieces
/// (keeps the unfinished last line).
#[derive(Default)]
struct Scanner {
    line: Vec<u8>,
    /// Requests seen whose target header has not been seen yet (counted as "other" at the next
    /// request line).
    pending: bool,
}

impl Scanner {
    fn feed(&mut self, bytes: &[u8]) -> Counts {
        let mut out = Counts::default();
        for &b in bytes {
            if b != b'\n' {
                // Request and header lines are short. A body has no line end of its own, so the next
                // request line follows it on the same "line": keep the tail of long lines only.
                if self.line.len() >= 1024 {
                    self.line.drain(..768);
                }
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.ends_with(b" HTTP/1.1") {
                if self.pending {
                    *out.by_op.entry("other".into()).or_default() += 1;
                }
                out.total += 1;
                self.pending = true;
            } else if self.pending && line.len() > 13 && line[..13].eq_ignore_ascii_case(b"x-amz-target:") {
                let value = String::from_utf8_lossy(&line[13..]).trim().to_string();
                let op = value.rsplit('.').next().unwrap_or(&value).to_string();
                *out.by_op.entry(op).or_default() += 1;
                self.pending = false;
            } else if self.pending && line.is_empty() {
                // end of headers without a target
                *out.by_op.entry("other".into()).or_default() += 1;
                self.pending = false;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_split_anywhere() {
        let req = |op: &str, body: &str| {
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\nX-Amz-Target: AmazonSQS.{op}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let long = format!("{{\"b\":\"{}\"}}", "y".repeat(5000));
        let stream = [req("ReceiveMessage", "{\"a\":1}"), req("DeleteMessageBatch", &long), req("ReceiveMessage", "")]
            .concat()
            + "GET /health HTTP/1.1\r\nhost: x\r\n\r\n";
        for split in [1, 3, 7, 1000] {
            let mut s = Scanner::default();
            let mut total = Counts::default();
            for chunk in stream.as_bytes().chunks(split) {
                let c = s.feed(chunk);
                total.total += c.total;
                for (k, v) in c.by_op {
                    *total.by_op.entry(k).or_default() += v;
                }
            }
            assert_eq!(total.total, 4);
            assert_eq!(total.by_op["ReceiveMessage"], 2);
            assert_eq!(total.by_op["DeleteMessageBatch"], 1);
            assert_eq!(total.by_op["other"], 1);
        }
    }
}
