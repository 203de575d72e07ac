//! An HTTP proxy in front of LocalStack that refuses chosen API operations with
//! `AccessDenied`, as an IAM policy without that permission would (or holds them until
//! released, as a throttled or stalled endpoint would), and forwards the rest.
//! One request per connection (it adds `Connection: close`); point only SQS at it
//! (`AWS_ENDPOINT_URL`) and S3/SNS straight at LocalStack (`AWS_ENDPOINT_URL_S3`, `_SNS`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub struct DenyProxy {
    pub url: String,
    /// How many requests were refused (or, when holding, held).
    pub denied: Arc<AtomicUsize>,
    /// Holding mode: matching requests wait while this is true.
    held: Option<Arc<AtomicBool>>,
}

impl DenyProxy {
    /// Forward to `target` (host:port) and refuse operations whose `X-Amz-Target` ends with
    /// one of `operations` (e.g. `.DeleteMessageBatch`).
    pub fn start(target: String, operations: &[&str]) -> DenyProxy {
        Self::run(target, operations, None)
    }

    /// Forward to `target`, holding requests for `operations` until [`DenyProxy::release`].
    pub fn hold(target: String, operations: &[&str]) -> DenyProxy {
        Self::run(target, operations, Some(Arc::new(AtomicBool::new(true))))
    }

    /// Let held requests (and later ones) through.
    pub fn release(&self) {
        if let Some(h) = &self.held {
            h.store(false, Ordering::SeqCst);
        }
    }

    fn run(target: String, operations: &[&str], held: Option<Arc<AtomicBool>>) -> DenyProxy {
        let ops: Arc<Vec<String>> = Arc::new(operations.iter().map(|s| s.to_string()).collect());
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", std_listener.local_addr().unwrap());
        let denied = Arc::new(AtomicUsize::new(0));
        let (d2, h2) = (denied.clone(), held.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((client, _)) = listener.accept().await else { return };
                    let (target, ops, denied, held) = (target.clone(), ops.clone(), d2.clone(), h2.clone());
                    tokio::spawn(async move {
                        let _ = one(client, &target, &ops, &denied, held.as_deref()).await;
                    });
                }
            });
        });
        DenyProxy { url, denied, held }
    }
}

async fn one(
    client: TcpStream,
    target: &str,
    ops: &[String],
    denied: &AtomicUsize,
    held: Option<&AtomicBool>,
) -> std::io::Result<()> {
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
    let matched = ops.iter().any(|o| op.ends_with(o.as_str()));
    if let (true, Some(held)) = (matched, held) {
        denied.fetch_add(1, Ordering::SeqCst);
        while held.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    } else if matched {
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
