//! An HTTP/1.1 webhook endpoint whose answers take their time: an async closure picks each
//! request's status (after a sleep, once another request arrived, or never), and every request
//! is recorded with when it arrived, when it was answered and when the client gave up on it
//! (closed the connection before the answer): a cancelled call, seen from the server.
//!
//! Include it by path (`#[path = "…/tests/support/hooks.rs"] mod hooks;`); it needs tokio's
//! `net`, `io-util` and `rt` features.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the closure sees of a request.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    /// The `X-Webhook-Delivery` header.
    pub delivery: Option<String>,
    pub body: String,
}

/// A request and what became of it.
#[derive(Debug, Clone)]
pub struct Call {
    pub request: Request,
    pub arrived: SystemTime,
    pub answered: Option<SystemTime>,
    /// The client closed the connection before the answer.
    pub abandoned: Option<SystemTime>,
}

type Reply = Pin<Box<dyn Future<Output = u16> + Send>>;

/// The endpoint (serves until the test process ends).
pub struct Hooks {
    base: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Hooks {
    /// Serve on 127.0.0.1:0; `reply(request)` is the status to answer with, when it resolves
    /// (a future that never resolves: no answer).
    pub fn start(reply: impl Fn(Request) -> Reply + Send + Sync + 'static) -> Hooks {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let c = calls.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let reply = Arc::new(reply);
                while let Ok((sock, _)) = listener.accept().await {
                    tokio::spawn(connection(sock, reply.clone(), c.clone()));
                }
            });
        });
        let addr: std::net::SocketAddr = rx.recv().unwrap();
        Hooks { base: format!("http://{addr}"), calls }
    }

    /// The URL of `path` (starting with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every request so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls of delivery `id`.
    pub fn calls_of(&self, id: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.request.delivery.as_deref() == Some(id)).collect()
    }

    /// Wait until `cond(calls)` holds (up to `limit`); panics with the calls after that.
    pub fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn(&[Call]) -> bool) {
        let start = Instant::now();
        while !cond(&self.calls()) {
            assert!(start.elapsed() < limit, "waited {limit:?} for {what}; calls: {:#?}", self.calls());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn connection(
    sock: tokio::net::TcpStream,
    reply: Arc<impl Fn(Request) -> Reply + Send + Sync + 'static>,
    calls: Arc<Mutex<Vec<Call>>>,
) {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let (mut len, mut delivery) = (0usize, None);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let Some((k, v)) = h.trim_end().split_once(':') else { break };
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("x-webhook-delivery") {
                delivery = Some(v.trim().to_string());
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).await.is_err() {
            return;
        }
        let request = Request { path, delivery, body: String::from_utf8_lossy(&body).into_owned() };
        let index = {
            let mut calls = calls.lock().unwrap();
            calls.push(Call { request: request.clone(), arrived: SystemTime::now(), answered: None, abandoned: None });
            calls.len() - 1
        };
        // the client sends nothing more before our answer (no pipelining): data or EOF while
        // we wait means it gave up
        let status = tokio::select! {
            status = reply(request) => status,
            _ = r.fill_buf() => {
                calls.lock().unwrap()[index].abandoned = Some(SystemTime::now());
                return;
            }
        };
        calls.lock().unwrap()[index].answered = Some(SystemTime::now());
        let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        if w.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A reply after `delay` with `status`.
pub fn after(delay: Duration, status: u16) -> Reply {
    Box::pin(async move {
        tokio::time::sleep(delay).await;
        status
    })
}

/// No reply, ever.
pub fn never() -> Reply {
    Box::pin(std::future::pending())
}
