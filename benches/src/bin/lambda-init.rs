//! Lambda init time: from spawning a Lambda binary to its first
//! `GET /2018-06-01/runtime/invocation/next` on a Runtime API served here (std only).
//!
//! `lambda-init [--runs N] [--warmup N] [--timeout-ms MS] [--env K=V ...] NAME=PATH [NAME=PATH ...]`
//!
//! Each start gets a fresh listener on 127.0.0.1:0 and a clean environment: the four
//! `AWS_LAMBDA_*` variables the runtime needs, dummy AWS credentials, `AWS_REGION`, and
//! `SQSKIT_ARCHIVE_BUCKET` (the DLQ monitor's one required setting), plus any `--env`. The child is killed as soon as it
//! asks for its first event, so what is measured is exactly the function's init phase: process
//! start, dynamic linking, `main` up to the runtime loop (logging, SDK config, clients, TLS roots).
//! The page cache is warm (`--warmup` unmeasured starts first), unlike a real cold start, which
//! also downloads and unpacks the code.
//!
//! Prints one JSON object: `{"NAME": {"runs": N, "median_ms": .., "min_ms": .., "max_ms": .., "all_ms": [..]}, ...}`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NEXT: &str = "GET /2018-06-01/runtime/invocation/next";

fn usage() -> ! {
    eprintln!("usage: lambda-init [--runs N] [--warmup N] [--timeout-ms MS] [--env K=V ...] NAME=PATH [NAME=PATH ...]");
    std::process::exit(2)
}

/// Milliseconds from spawn to the first `invocation/next` request of one start.
fn one_start(path: &str, name: &str, timeout: Duration, extra_env: &[(String, String)]) -> Result<f64, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut child = Command::new(path)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("SQSKIT_ARCHIVE_BUCKET", "sqskit-bench-archive")
        .env("RUST_LOG", "info")
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {path}: {e}"))?;
    let result = loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).ok();
                stream.set_read_timeout(Some(timeout)).ok();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(_) if line.starts_with(NEXT) => {
                        // time of the request line, not of the TCP connect (the same within µs)
                        let ms = start.elapsed().as_secs_f64() * 1000.0;
                        // answer nothing useful: the child is killed next
                        let _ = reader
                            .get_mut()
                            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
                        break Ok(ms);
                    }
                    Ok(_) => break Err(format!("first request was {:?}, not {NEXT}", line.trim_end())),
                    Err(e) => break Err(format!("reading the first request: {e}")),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut s) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut s, &mut err);
                    }
                    return Err(format!("{name} exited with {status} before asking for an event: {}", err.trim()));
                }
                if start.elapsed() > timeout {
                    break Err(format!("{name} did not ask for an event within {timeout:?}"));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => break Err(format!("accept: {e}")),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn main() {
    let mut runs = 20usize;
    let mut warmup = 2usize;
    let mut timeout = Duration::from_secs(10);
    let mut bins: Vec<(String, String)> = Vec::new();
    let mut extra_env: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--warmup" => warmup = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--timeout-ms" => {
                timeout = Duration::from_millis(args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()))
            }
            "--env" => match args.next().as_deref().and_then(|v| v.split_once('=')) {
                Some((k, v)) if !k.is_empty() => extra_env.push((k.to_string(), v.to_string())),
                _ => usage(),
            },
            "-h" | "--help" => usage(),
            _ => match a.split_once('=') {
                Some((n, p)) if !n.is_empty() && !p.is_empty() => bins.push((n.to_string(), p.to_string())),
                _ => usage(),
            },
        }
    }
    if bins.is_empty() || runs == 0 {
        usage();
    }
    // std only (no serde): `rustc -O benches/src/bin/lambda-init.rs` builds it in a second
    let mut out = Vec::new();
    for (name, path) in &bins {
        let mut all = Vec::with_capacity(runs);
        for i in 0..warmup + runs {
            match one_start(path, name, timeout, &extra_env) {
                Ok(ms) if i >= warmup => all.push(ms),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("lambda-init: {e}");
                    std::process::exit(1);
                }
            }
        }
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        eprintln!(
            "lambda-init: {name}: median {median:.2} ms, min {:.2}, max {:.2} ({runs} starts)",
            sorted[0],
            sorted[n - 1]
        );
        let list: Vec<String> = all.iter().map(|v| format!("{v:.2}")).collect();
        out.push(format!(
            "\"{}\": {{\"runs\": {runs}, \"median_ms\": {median:.2}, \"min_ms\": {:.2}, \"max_ms\": {:.2}, \"all_ms\": [{}]}}",
            name.replace(['"', '\\'], "_"),
            sorted[0],
            sorted[n - 1],
            list.join(", ")
        ));
    }
    println!("{{{}}}", out.join(", "));
}
