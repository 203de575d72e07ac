//! `sqskit health`: ask a running poller's metrics listener whether it is live (or ready), for
//! container health checks in images without curl. Exit 0: healthy; 1: not (the reason and the
//! poller's report on stderr).

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The poller's --metrics-addr, as reachable from here: HOST:PORT (127.0.0.1:9090,
    /// [::1]:9090) or http://HOST[:PORT][/] (port 80 by default); the path is always /healthz
    /// (or /readyz), so a URL with another path, or https, is refused.
    #[arg(long, default_value = "127.0.0.1:9090", value_parser = parse_addr)]
    pub addr: String,
    /// Check readiness (/readyz) instead of liveness (/healthz).
    #[arg(long)]
    pub ready: bool,
    /// Give up after this many seconds (1–3600).
    #[arg(long, default_value_t = 5, value_parser = crate::args::secs(1..=3600))]
    pub timeout: u64,
}

/// `--addr` as the `HOST:PORT` to connect to.
pub fn parse_addr(s: &str) -> Result<String, String> {
    let s = s.trim();
    let (authority, url) = match s.split_once("://") {
        Some(("http", rest)) => (rest.strip_suffix('/').unwrap_or(rest), true),
        Some((scheme, _)) => {
            return Err(format!("{s:?}: only http:// (the listener speaks plain HTTP), not {scheme}://"));
        }
        None => (s, false),
    };
    if authority.contains('/') {
        return Err(format!("{s:?}: no path, please: the check asks for /healthz or /readyz itself"));
    }
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
        return Err(format!("{s:?}: expected HOST:PORT or http://HOST:PORT"));
    }
    // a port after the host (an IPv6 address is in brackets)
    let port = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => Some(port),
        _ => None,
    };
    match port {
        Some(p) => {
            p.parse::<u16>().map_err(|_| format!("{s:?}: the port {p:?} is not a number from 0 to 65535"))?;
            Ok(authority.to_string())
        }
        None if url => Ok(format!("{authority}:80")),
        None => Err(format!("{s:?}: no port: use HOST:PORT (e.g. 127.0.0.1:9090) or http://HOST:PORT")),
    }
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
pub async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_urls() {
        for (given, want) in [
            ("127.0.0.1:9090", "127.0.0.1:9090"),
            ("http://127.0.0.1:9090", "127.0.0.1:9090"),
            ("http://127.0.0.1:9090/", "127.0.0.1:9090"),
            ("http://localhost", "localhost:80"),
            ("[::1]:9090", "[::1]:9090"),
            ("http://[::1]", "[::1]:80"),
        ] {
            assert_eq!(parse_addr(given).as_deref(), Ok(want), "{given}");
        }
        for bad in ["https://h:1", "http://h:1/metrics", "localhost", "h:99999", "http://", "::1", "h:1 x"] {
            assert!(parse_addr(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_addr_is_parsed_into_host_and_port_or_refused(s in "\\PC{0,24}|(http://)?[a-z0-9.:\\[\\]/]{0,20}") {
            if let Ok(a) = parse_addr(&s) {
                let (host, port) = a.rsplit_once(':').unwrap();
                proptest::prop_assert!(!host.is_empty() && port.parse::<u16>().is_ok(), "{}", a);
            }
        }
    }
}
