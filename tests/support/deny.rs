//! An HTTP proxy in front of LocalStack that refuses chosen API operations with
//! `AccessDenied`, as an IAM policy without that permission would, and forwards the rest.
//! One request per connection (it adds `Connection: close`); point only SQS at it
//! (`AWS_ENDPOINT_URL`) and S3/SNS straight at LocalStack (`AWS_ENDPOINT_URL_S3`, `_SNS`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub struct DenyProxy {
    pub url: String,
    /// How many requests were refused.
    pub denied: Arc<AtomicUsize>,
}

impl DenyProxy {
    /// Forward to `target` (host:port) and refuse operations whose `X-Amz-Target` ends with
    /// one of `operations` (e.g. `.DeleteMessageBatch`).
    pub fn start(target: String, operations: &[&str]) -> DenyProxy {
        let ops: Arc<Vec<String>> = Arc::new(operations.iter().map(|s| s.to_string()).collect());
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", std_listener.local_addr().unwrap());
        let denied = Arc::new(AtomicUsize::new(0));
        let d2 = denied.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((client, _)) = listener.accept().await else { return };
                    let (target, ops, denied) = (target.clone(), ops.clone(), d2.clone());
                    tokio::spawn(async move {
                        let _ = one(client, &target, &ops, &denied).await;
                    });
                }
            });
        });
        DenyProxy { url, denied }
    }
}

async fn one(client: TcpStream, target: &str, ops: &[String], denied: &AtomicUsize) -> std::io::Result<()> {
    let (r, mut w) = client.into_split();
    let mut r = BufReader::new(r);
    let mut head = String::new();
    r.read_line(&mut head).await?;
    let mut len = 0usize;
    let mut op = String::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 {
            return Ok(());
        }
        if h.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("x-amz-target") {
                op = v.to_string();
            }
            if k.eq_ignore_ascii_case("connection") {
                continue;
            }
        }
        head.push_str(&h);
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    if ops.iter().any(|o| op.ends_with(o.as_str())) {
        denied.fetch_add(1, Ordering::SeqCst);
        let msg = format!(
            "{{\"__type\":\"com.amazon.coral.service#AccessDeniedException\",\"message\":\"not authorized to perform {op}\"}}"
        );
        let resp = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-query-error: AccessDenied;Sender\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{msg}",
            msg.len()
        );
        w.write_all(resp.as_bytes()).await?;
        return w.shutdown().await;
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(target).await?;
    up.write_all(head.as_bytes()).await?;
    up.write_all(&body).await?;
    tokio::io::copy(&mut up, &mut w).await?;
    w.shutdown().await
}
