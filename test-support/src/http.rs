//! A tiny HTTP/1.1 server for the `--http` handler tests (keep-alive, Content-Length bodies).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The body as received (binary bodies: OTLP protobuf).
    pub raw: Vec<u8>,
}

/// A response: status and extra headers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// Serves on 127.0.0.1:0 from its own thread; `status(body)` picks the response status
/// (and optional Retry-After).
pub fn serve(
    status: impl Fn(&str) -> (u16, Option<u64>) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Request>>>) {
    serve_with(move |req| {
        let (status, retry_after) = status(&req.body);
        Reply { status, headers: retry_after.map(|s| ("Retry-After".to_string(), s.to_string())).into_iter().collect() }
    })
}

/// Like [`serve`], but `reply(request)` decides status and headers (e.g. a redirect).
pub fn serve_with(reply: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> (String, Arc<Mutex<Vec<Request>>>) {
    let status = reply;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(status, s2, tx));
    });
    let addr: std::net::SocketAddr = rx.recv().unwrap();
    (format!("http://{addr}/work"), seen)
}

/// Read one HTTP/1.1 request (request line, headers, a `Content-Length` body) from `r`; `None`
/// at the end of the connection or on a short body.
pub async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut raw = vec![0u8; len];
    r.read_exact(&mut raw).await.ok()?;
    let body = String::from_utf8_lossy(&raw).to_string();
    Some(Request { method, path, headers, body, raw })
}

async fn run(
    status: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    s2: Arc<Mutex<Vec<Request>>>,
    tx: std::sync::mpsc::Sender<std::net::SocketAddr>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tx.send(listener.local_addr().unwrap()).unwrap();
    let status = Arc::new(status);
    {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            let (seen, status) = (s2.clone(), status.clone());
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let Some(req) = read_request(&mut r).await else { return };
                    let reply = status(&req);
                    seen.lock().unwrap().push(req);
                    let extra: String = reply.headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
                    let resp = format!("HTTP/1.1 {} X\r\nContent-Length: 0\r\n{extra}\r\n", reply.status);
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}
