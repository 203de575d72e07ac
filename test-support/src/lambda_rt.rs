//! A Lambda Runtime API on 127.0.0.1 that runs a real Lambda binary as a child process.
//!
//! Implements `GET /2018-06-01/runtime/invocation/next`, `POST .../{id}/response`,
//! `POST .../{id}/error` and `POST .../init/error`; std only, one thread per connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the function answered for one invocation.
#[derive(Debug, Clone)]
pub enum Answer {
    Response(serde_json::Value),
    Error(serde_json::Value),
    InitError(serde_json::Value),
    /// The process exited without answering.
    Exited(std::process::ExitStatus),
}

/// An SQS event with these records.
pub fn event(records: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({ "Records": records })
}

/// The response of an answer, or a panic showing the function's output.
pub fn response(a: Answer, output: &str) -> serde_json::Value {
    match a {
        Answer::Response(v) => v,
        other => panic!("expected a response, got {other:?}; output:\n{output}"),
    }
}

/// The `itemIdentifier`s of a partial batch response.
pub fn failures(resp: &serde_json::Value) -> Vec<String> {
    resp["batchItemFailures"]
        .as_array()
        .expect("batchItemFailures")
        .iter()
        .map(|f| f["itemIdentifier"].as_str().expect("itemIdentifier").to_string())
        .collect()
}

/// The CloudWatch EMF lines in a function's output.
pub fn emf_lines(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

struct Shared {
    events: Mutex<Receiver<(String, serde_json::Value, Duration)>>,
    answers: Mutex<HashMap<String, Sender<Answer>>>,
    init_error: Mutex<Option<serde_json::Value>>,
}

pub struct LambdaHarness {
    child: Child,
    events: Sender<(String, serde_json::Value, Duration)>,
    shared: Arc<Shared>,
    pub output: Arc<Mutex<String>>,
    counter: u64,
}

impl LambdaHarness {
    /// Start the Runtime API and the binary with `env` (plus the usual AWS_LAMBDA_* variables).
    pub fn start(binary: &str, function_name: &str, env: &[(&str, String)]) -> LambdaHarness {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = channel();
        let shared =
            Arc::new(Shared { events: Mutex::new(rx), answers: Mutex::default(), init_error: Mutex::default() });
        let s2 = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let s = s2.clone();
                std::thread::spawn(move || serve(conn, s));
            }
        });
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function_name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test-stream")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in super::aws_env() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the Lambda binary");
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        LambdaHarness { child, events: tx, shared, output, counter: 0 }
    }

    /// Invoke the function with `event` and wait for its answer (or its init error).
    pub fn invoke(&mut self, event: serde_json::Value) -> Answer {
        self.invoke_with_deadline(event, Duration::from_secs(60))
    }

    /// As [`LambdaHarness::invoke`], with the invocation's deadline `timeout` from now.
    pub fn invoke_with_deadline(&mut self, event: serde_json::Value, timeout: Duration) -> Answer {
        self.counter += 1;
        let id = format!("req-{}-{}", std::process::id(), self.counter);
        let (atx, arx) = channel();
        self.shared.answers.lock().unwrap().insert(id.clone(), atx);
        self.events.send((id, event, timeout)).unwrap();
        let start = std::time::Instant::now();
        loop {
            if let Ok(a) = arx.recv_timeout(Duration::from_millis(100)) {
                self.settle_output();
                return a;
            }
            if let Some(e) = self.shared.init_error.lock().unwrap().take() {
                return Answer::InitError(e);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200)); // let the output readers finish
                return Answer::Exited(status);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no answer from the Lambda within 60 s; output:\n{}",
                self.output()
            );
        }
    }

    /// The function prints (logs, its EMF line) before it posts its answer, but the threads
    /// reading its pipes may not have caught up when the answer arrives: wait until the output
    /// stops growing (at most 2 s).
    fn settle_output(&self) {
        let mut last = self.output.lock().unwrap().len();
        let mut quiet = 0;
        for _ in 0..80 {
            std::thread::sleep(Duration::from_millis(25));
            let now = self.output.lock().unwrap().len();
            quiet = if now == last { quiet + 1 } else { 0 };
            if quiet >= 4 {
                return;
            }
            last = now;
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for LambdaHarness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(conn: TcpStream, shared: Arc<Shared>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let base = "/2018-06-01/runtime";
        if method == "GET" && path == format!("{base}/invocation/next") {
            let next = shared.events.lock().unwrap().recv();
            let Ok((id, event, timeout)) = next else { return };
            let payload = event.to_string();
            let deadline = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
                + timeout.as_millis();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {id}\r\n\
                 Lambda-Runtime-Deadline-Ms: {deadline}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:test\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0\r\n\
                 Content-Length: {}\r\n\r\n{payload}",
                payload.len()
            );
            if writer.write_all(resp.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let answer = if path == format!("{base}/init/error") {
            *shared.init_error.lock().unwrap() = Some(json);
            None
        } else if let Some(rest) = path.strip_prefix(&format!("{base}/invocation/")) {
            let (id, kind) = rest.split_once('/').unwrap_or((rest, ""));
            let tx = shared.answers.lock().unwrap().remove(id);
            tx.map(|tx| (tx, if kind == "response" { Answer::Response(json) } else { Answer::Error(json) }))
        } else {
            None
        };
        if let Some((tx, a)) = answer {
            let _ = tx.send(a);
        }
        if writer.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}
