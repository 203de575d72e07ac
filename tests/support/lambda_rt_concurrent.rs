//! A Lambda Runtime API on 127.0.0.1 that hands out several invocations at once, as Lambda
//! Managed Instances does (one execution environment serves up to `AWS_LAMBDA_MAX_CONCURRENCY`
//! invocations), and keeps each answer with the moment it arrived and the deadline the
//! invocation was given. Runs a real Lambda binary as a child process.
//!
//! [`ConcurrentLambda::submit`] queues an event and returns at once; each
//! `GET /2018-06-01/runtime/invocation/next` takes the oldest queued event (waiting while there is
//! none) with `Lambda-Runtime-Deadline-Ms` = now + its timeout; [`ConcurrentLambda::wait`] returns
//! its answer. Std only, one thread per connection.
//!
//! Include it next to `support` (it uses `support::lambda_rt::Answer`, `support::aws_env` and
//! `support::proc`): `#[path = "…/tests/support/lambda_rt_concurrent.rs"] mod lambda_rt_concurrent;`.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::lambda_rt::Answer;
use crate::support::proc::{spawn, Running};

/// One invocation's answer and its timing.
#[derive(Debug, Clone)]
pub struct Answered {
    pub answer: Answer,
    /// When the function took the invocation (`/next` answered); `None` if it never did.
    pub handed_out: Option<SystemTime>,
    /// The deadline the invocation was given; `None` if it was never handed out.
    pub deadline: Option<SystemTime>,
    /// When the answer arrived (or the process was seen to have exited).
    pub answered: SystemTime,
}

impl Answered {
    /// Milliseconds between the answer and the deadline: positive = that much before it.
    pub fn early_ms(&self) -> i128 {
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as i128;
        ms(self.deadline.expect("the invocation was handed out")) - ms(self.answered)
    }
}

struct Queued {
    id: String,
    event: serde_json::Value,
    timeout: Duration,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// request id -> (handed out, deadline)
    given: HashMap<String, (SystemTime, SystemTime)>,
    answers: HashMap<String, (Answer, SystemTime)>,
    init_error: Option<serde_json::Value>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// A Lambda binary behind a Runtime API that serves concurrent invocations.
pub struct ConcurrentLambda {
    running: Running,
    shared: Arc<Shared>,
    counter: u64,
}

impl ConcurrentLambda {
    /// Start the Runtime API and `binary` with `env` (after the usual `AWS_LAMBDA_*` variables
    /// and `support::aws_env()`, so `env` may override them).
    pub fn start(binary: &str, function_name: &str, env: &[(&str, String)]) -> ConcurrentLambda {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Runtime API");
        let addr = listener.local_addr().expect("its address");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
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
            .stdin(Stdio::null());
        for (k, v) in crate::support::aws_env().into_iter().chain(env.iter().map(|(k, v)| (*k, v.clone()))) {
            cmd.env(k, v);
        }
        ConcurrentLambda { running: spawn(cmd), shared, counter: 0 }
    }

    /// Queue an invocation of `event` whose deadline is `timeout` after the function takes it;
    /// returns its request id at once.
    pub fn submit(&mut self, event: serde_json::Value, timeout: Duration) -> String {
        self.counter += 1;
        let id = format!("req-{}-{}", std::process::id(), self.counter);
        let mut state = self.shared.state.lock().unwrap();
        state.queue.push_back(Queued { id: id.clone(), event, timeout });
        self.shared.changed.notify_all();
        id
    }

    /// How many invocations the function has taken so far.
    pub fn handed_out(&self) -> usize {
        self.shared.state.lock().unwrap().given.len()
    }

    /// The answer to invocation `id` (or the function's init error, or its exit), waiting up to
    /// 60 s; panics with the function's output after that.
    pub fn wait(&mut self, id: &str) -> Answered {
        let start = Instant::now();
        loop {
            let found = {
                let mut state = self.shared.state.lock().unwrap();
                if !state.answers.contains_key(id) && state.init_error.is_none() {
                    state = self.shared.changed.wait_timeout(state, Duration::from_millis(100)).unwrap().0;
                }
                match state.answers.remove(id) {
                    Some((answer, at)) => Some((answer, at)),
                    None => state.init_error.clone().map(|e| (Answer::InitError(e), SystemTime::now())),
                }
            };
            let found = found.or_else(|| {
                let status = self.running.child.try_wait().ok().flatten()?;
                std::thread::sleep(Duration::from_millis(200)); // let the output readers finish
                Some((Answer::Exited(status), SystemTime::now()))
            });
            if let Some((answer, answered)) = found {
                let given = self.shared.state.lock().unwrap().given.get(id).copied();
                return Answered { answer, handed_out: given.map(|g| g.0), deadline: given.map(|g| g.1), answered };
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no answer to {id} within 60 s; output:\n{}",
                self.output()
            );
        }
    }

    /// Everything the function printed so far (stdout, then stderr).
    pub fn output(&self) -> String {
        format!("{}{}", self.running.stdout(), self.running.stderr())
    }

    /// The function's output once `ready(output)` holds (it prints before it answers, but the
    /// threads reading its pipes may lag), waiting up to 10 s; panics with the output after that.
    pub fn output_when(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let out = self.output();
            if ready(&out) {
                return out;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "waited 10 s for {what}; output:\n{out}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ConcurrentLambda {
    fn drop(&mut self) {
        // the connections waiting in `/next` return; `Running` kills the child
        self.shared.state.lock().unwrap().closed = true;
        self.shared.changed.notify_all();
    }
}

/// One Runtime API connection: requests until the client closes it.
fn serve(conn: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
    let mut writer = conn;
    let base = "/2018-06-01/runtime";
    while let Some((method, path, body)) = read_request(&mut reader) {
        if method == "GET" && path == format!("{base}/invocation/next") {
            let Some(next) = next_invocation(shared) else { return };
            if writer.write_all(next.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        {
            let mut state = shared.state.lock().unwrap();
            if path == format!("{base}/init/error") {
                state.init_error = Some(json);
            } else if let Some(rest) = path.strip_prefix(&format!("{base}/invocation/")) {
                let (id, kind) = rest.split_once('/').unwrap_or((rest, ""));
                let answer = if kind == "response" { Answer::Response(json) } else { Answer::Error(json) };
                state.answers.insert(id.to_string(), (answer, SystemTime::now()));
            }
            shared.changed.notify_all();
        }
        if writer.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

/// The response to `/next`: the oldest queued event, once there is one (`None`: shutting down).
fn next_invocation(shared: &Shared) -> Option<String> {
    let mut state = shared.state.lock().unwrap();
    let next = loop {
        if state.closed {
            return None;
        }
        if let Some(next) = state.queue.pop_front() {
            break next;
        }
        state = shared.changed.wait(state).unwrap();
    };
    let now = SystemTime::now();
    let deadline = now + next.timeout;
    state.given.insert(next.id.clone(), (now, deadline));
    let deadline_ms = deadline.duration_since(UNIX_EPOCH).expect("after 1970").as_millis();
    let payload = next.event.to_string();
    Some(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {}\r\n\
         Lambda-Runtime-Deadline-Ms: {deadline_ms}\r\n\
         Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:test\r\n\
         Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0\r\n\
         Content-Length: {}\r\n\r\n{payload}",
        next.id,
        payload.len()
    ))
}

/// Method, path and body of the next request (`None` when the connection closed).
fn read_request(reader: &mut impl BufRead) -> Option<(String, String, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut words = line.split_whitespace().map(str::to_string);
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let mut len = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok().filter(|n| *n > 0)?;
        match header.trim_end().split_once(':') {
            None => break, // the empty line
            Some((k, v)) if k.eq_ignore_ascii_case("content-length") => len = v.trim().parse().unwrap_or(0),
            Some(_) => {}
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((method, path, body))
}
