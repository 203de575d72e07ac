//! Throughput benchmark against LocalStack: the raw-SDK ceiling, the hand-written sequential
//! loop, the sqskit `Poller`, and two peers (Node's `sqs-consumer`, a boto3 sequential loop;
//! `benches/peers/`), each in its own process (so CPU time and peak RSS are its own), on a
//! pre-filled queue of the same size. Every run talks to LocalStack through a counting proxy in
//! this process ([`proxy`]), which gives the SQS requests per 1,000 messages by operation. Then a
//! latency run (a feeder sends at a steady rate while the poller consumes) and an idle run (the
//! poller with default settings on an empty queue: requests per hour).
//!
//! `sqskit-bench [--messages N] [--size BYTES] [--max-secs S] [--quick] [--node-peer JS]
//! [--python PY --boto3-peer PY]` prints Markdown tables and writes `target/bench/results.json`. `sqskit-bench idempotency` measures the idempotency
//! claim's cost per message instead (no SQS; see `idempotency.rs`) and adds it to that file;
//! `sqskit-bench adaptive` flow control's figures (`adaptive.rs`).
//! Run both through `scripts/bench`.

mod adaptive;
mod idempotency;
mod proxy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use sqskit::poller::{Poller, PollerConfig};
use sqskit::{HandlerError, Message, OutgoingMessage, Processor, Queue};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    child: Option<Child>,
    /// Messages per run.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Longest a run may take; slow runs report the rate over what they processed.
    #[arg(long, default_value_t = 60)]
    max_secs: u64,
    /// 1,000 messages, 10 s per run, short latency and idle runs: proves the harness works
    /// (numbers not meaningful).
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: std::path::PathBuf,
    /// The sqs-consumer peer (`benches/peers/node/consumer.js`, its node_modules installed);
    /// without it the sqs-consumer runs are skipped.
    #[arg(long)]
    node_peer: Option<PathBuf>,
    /// `node` to run it with.
    #[arg(long, default_value = "node")]
    node: String,
    /// The boto3 peer (`benches/peers/python/boto3_loop.py`); without it the boto3 runs are skipped.
    #[arg(long)]
    boto3_peer: Option<PathBuf>,
    /// A Python with boto3 (the project's `.venv-moto/bin/python`).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Latency run: messages per second the feeder sends (default 500; 50 with --quick).
    #[arg(long)]
    latency_rate: Option<u64>,
    /// Latency run: seconds the feeder sends for (default 20; 3 with --quick).
    #[arg(long)]
    latency_secs: Option<u64>,
    /// Idle run: seconds the poller runs on an empty queue (default 30; 5 with --quick).
    #[arg(long)]
    idle_secs: Option<u64>,
    /// Only these throughput runs, by mode (`ceiling,sequential,poller,sqsconsumer,boto3`; for
    /// profiling a change). The latency and idle runs still follow (shorten them with
    /// `--latency-secs 1 --idle-secs 1`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Rounds of the no-op ceiling run followed at once by the no-op poller run (defaults)
    /// (default 3; 1 with --quick). Their ratios (`noop_default_vs_ceiling`, `cpu_vs_raw_sdk`)
    /// are the median of the rounds' ratios: LocalStack's own speed drifts between rounds
    /// (the same ceiling run measured 750 and 1,336 msg/s in one bench), much less within one.
    #[arg(long)]
    rounds: Option<usize>,
}

#[derive(Subcommand)]
enum Child {
    /// One measured run (used by the driver).
    Run {
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long)]
        queue_url: String,
        #[arg(long)]
        messages: usize,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 60)]
        max_secs: u64,
    },
    /// Flow control: `--concurrency auto` against fixed settings in front of a downstream of
    /// limited capacity, and the breaker's cost at 10 % random 503s (see `adaptive.rs`).
    Adaptive {
        /// 4 s per setting instead of 20: proves the harness works.
        #[arg(long)]
        quick: bool,
        /// The JSON results to add an `adaptive` entry to.
        #[arg(long, default_value = "target/bench/results.json")]
        out: std::path::PathBuf,
    },
    /// The idempotency claim's cost per message: in-memory, DynamoDB (moto) and Redis stores
    /// against no idempotency, no SQS involved.
    Idempotency {
        /// Messages (distinct keys) per pass.
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// 200 messages: proves the harness works (numbers not meaningful).
        #[arg(long)]
        quick: bool,
        /// moto's DynamoDB endpoint (only DynamoDB goes there).
        #[arg(long, default_value = "http://127.0.0.1:4571")]
        dynamodb_url: String,
        /// The `redis-server` binary to start (on a free port, killed at the end).
        #[arg(long, default_value = "redis-server")]
        redis_server: String,
        /// The JSON results to add an `idempotency` entry to.
        #[arg(long, default_value = "target/bench/results.json")]
        out: std::path::PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// K concurrent receive(10) + delete_batch loops with the raw SDK.
    Ceiling,
    /// One loop: receive 10, handle one by one, delete.
    Sequential,
    /// The sqskit Poller with default settings (concurrency as given).
    Poller,
    /// The sqskit Poller with `PollerConfig::default()` (depth sampling included) on an empty
    /// queue until --max-secs: the idle request rate.
    Idle,
    /// Peer: Node's sqs-consumer, batchSize 10 (`benches/peers/node/consumer.js`).
    SqsConsumer,
    /// Peer: a boto3 sequential loop (`benches/peers/python/boto3_loop.py`).
    Boto3,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Measured {
    processed: usize,
    secs: f64,
    cpu_secs: f64,
    peak_rss_mb: f64,
    /// SentTimestamp -> handler start (includes the time in the queue).
    p50_ms: f64,
    p99_ms: f64,
    /// Receive (the SDK call returned) -> handler start; the poller only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recv_p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recv_p99_ms: Option<f64>,
    /// Receivers the poller ran (most seen while it ran); the poller only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receivers: Option<usize>,
    /// The poller's graceful stop after the last message (its open long polls return first, up
    /// to the receive wait time); not part of `secs` or `cpu_secs`. The poller only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shutdown_secs: Option<f64>,
}

#[derive(Serialize, Debug, Clone)]
struct RunResult {
    name: String,
    mode: Mode,
    handler_ms: u64,
    concurrency: usize,
    sent: usize,
    msgs_per_sec: f64,
    cpu_secs_per_1000: f64,
    /// SQS requests the run made (through the counting proxy), in all and by operation.
    requests: u64,
    requests_by_op: BTreeMap<String, u64>,
    requests_per_1000: f64,
    #[serde(flatten)]
    measured: Measured,
}

const CEILING_LOOPS: usize = 16;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// (utime + stime) of this process in seconds, and its peak RSS in MB (Linux /proc).
fn usage() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu = (ticks(11) + ticks(12)) / 100.0; // utime, stime (fields 14, 15); USER_HZ = 100
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm_kb / 1024.0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64
}

fn latency_of(m: &sqskit::ReceivedMessage) -> u64 {
    let sent: u64 = m.system_attributes.get("SentTimestamp").and_then(|v| v.parse().ok()).unwrap_or(0);
    now_ms().saturating_sub(sent)
}

async fn child(
    mode: Mode,
    url: String,
    target: usize,
    delay_ms: u64,
    concurrency: usize,
    max_secs: u64,
) -> anyhow::Result<Measured> {
    let sdk = sqskit::load_aws_config().await;
    let queue = Queue::new(aws_sdk_sqs::Client::new(&sdk), url);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(target)));
    let recv_latencies = Arc::new(Mutex::new(Vec::with_capacity(target)));
    let done = Arc::new(AtomicUsize::new(0));
    let mut receivers = None;
    // the poller's figures are taken when its last message succeeded, before its stop (which
    // waits for open long polls to return: up to 20 s of an idle wait that is no one's throughput)
    let mut at_finish: Option<(f64, f64, f64)> = None;
    let mut shutdown_secs = None;
    let deadline = Instant::now() + Duration::from_secs(max_secs);
    let delay = Duration::from_millis(delay_ms);
    let started = Instant::now();
    match mode {
        Mode::Ceiling | Mode::Sequential => {
            let loops = if mode == Mode::Ceiling { CEILING_LOOPS } else { 1 };
            let tasks: Vec<_> = (0..loops)
                .map(|_| {
                    let (queue, latencies, done) = (queue.clone(), latencies.clone(), done.clone());
                    tokio::spawn(async move {
                        while done.load(Ordering::Relaxed) < target && Instant::now() < deadline {
                            let batch = queue.receive(10, Duration::from_secs(1), None).await?;
                            if batch.is_empty() {
                                continue;
                            }
                            latencies.lock().unwrap_or_else(|p| p.into_inner()).extend(batch.iter().map(latency_of));
                            if !delay.is_zero() {
                                if mode == Mode::Sequential {
                                    for _ in &batch {
                                        tokio::time::sleep(delay).await;
                                    }
                                } else {
                                    futures::future::join_all(batch.iter().map(|_| tokio::time::sleep(delay))).await;
                                }
                            }
                            let handles: Vec<&str> = batch.iter().map(|m| m.receipt_handle.as_str()).collect();
                            let r = queue.delete_batch(&handles).await?;
                            done.fetch_add(r.succeeded.len(), Ordering::Relaxed);
                        }
                        Ok::<(), sqskit::Error>(())
                    })
                })
                .collect();
            for t in tasks {
                t.await??;
            }
        }
        Mode::Poller | Mode::Idle => {
            let (lat, recv_lat) = (latencies.clone(), recv_latencies.clone());
            let processor = Processor::raw(move |m: Message<String>| {
                let start = now_ms();
                let sent: u64 =
                    m.raw().system_attributes.get("SentTimestamp").and_then(|v| v.parse().ok()).unwrap_or(0);
                lat.lock().unwrap_or_else(|p| p.into_inner()).push(start.saturating_sub(sent));
                recv_lat
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(m.raw().received_at.elapsed().as_millis() as u64);
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<(), HandlerError>(())
                }
            });
            // Idle: the real defaults (depth sampling too); the throughput runs turn depth sampling off.
            let config = if mode == Mode::Idle {
                PollerConfig::default()
            } else {
                PollerConfig::default().with_concurrency(concurrency).with_depth_interval(Duration::ZERO)
            };
            let poller = Poller::new(processor, [queue.clone()], config).await?;
            let stats = poller.stats();
            let health = poller.health();
            let most = Arc::new(AtomicUsize::new(0));
            let seen = most.clone();
            let finish = Arc::new(Mutex::new(None));
            let finish_at = finish.clone();
            let finished = async move {
                while stats.snapshot().succeeded < target as u64 && Instant::now() < deadline {
                    seen.fetch_max(health.report().receivers, Ordering::Relaxed);
                    // 25 ms: finished at most 25 ms late (0.25 % of a 10-s run); at 5 ms this
                    // loop alone was ~5 % of the poller run's CPU samples (perf)
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                let (cpu, rss) = usage();
                *finish_at.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((started.elapsed().as_secs_f64(), cpu, rss));
            };
            let summary = poller.run(finished).await;
            done.store(summary.succeeded as usize, Ordering::Relaxed);
            receivers = Some(most.load(Ordering::Relaxed));
            at_finish = *finish.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((secs, _, _)) = at_finish {
                shutdown_secs = Some(started.elapsed().as_secs_f64() - secs);
            }
        }
        Mode::SqsConsumer | Mode::Boto3 => anyhow::bail!("{mode:?} is a peer: the driver runs it"),
    }
    let (secs, cpu_secs, peak_rss_mb) = match at_finish {
        Some(figures) => figures,
        None => {
            let (cpu, rss) = usage();
            (started.elapsed().as_secs_f64(), cpu, rss)
        }
    };
    let sorted = |v: &Mutex<Vec<u64>>| {
        let mut l = v.lock().unwrap_or_else(|p| p.into_inner()).clone();
        l.sort_unstable();
        l
    };
    let l = sorted(&latencies);
    let r = sorted(&recv_latencies);
    let poller = matches!(mode, Mode::Poller | Mode::Idle);
    Ok(Measured {
        processed: done.load(Ordering::Relaxed),
        secs,
        cpu_secs,
        peak_rss_mb,
        p50_ms: percentile(&l, 0.5),
        p99_ms: percentile(&l, 0.99),
        recv_p50_ms: poller.then(|| percentile(&r, 0.5)),
        recv_p99_ms: poller.then(|| percentile(&r, 0.99)),
        receivers,
        shutdown_secs,
    })
}

async fn prefill(client: &aws_sdk_sqs::Client, name: &str, n: usize, size: usize) -> anyhow::Result<Queue> {
    let url = client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .context("create queue")?
        .queue_url()
        .context("url")?
        .to_string();
    let queue = Queue::new(client.clone(), url);
    let body = "x".repeat(size);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        queue.send_batch(chunk.iter().map(|_| OutgoingMessage::new(body.clone()))).await?.into_result()?;
    }
    Ok(queue)
}

/// The process for one measured run: this binary's `run` child, or a peer. Its SQS endpoint is
/// `endpoint` (the counting proxy).
fn command(cli: &Cli, spec: &RunSpec, endpoint: &str, url: &str) -> anyhow::Result<tokio::process::Command> {
    let mut cmd = match spec.mode {
        Mode::SqsConsumer => {
            let mut c = tokio::process::Command::new(&cli.node);
            c.arg(cli.node_peer.as_ref().context("no --node-peer")?);
            c
        }
        Mode::Boto3 => {
            let mut c = tokio::process::Command::new(&cli.python);
            c.arg(cli.boto3_peer.as_ref().context("no --boto3-peer")?);
            c
        }
        mode => {
            let mut c = tokio::process::Command::new(std::env::current_exe()?);
            c.arg("run").arg("--mode").arg(format!("{mode:?}").to_lowercase());
            c.arg("--concurrency").arg(spec.concurrency.to_string());
            c
        }
    };
    cmd.arg("--queue-url").arg(url);
    cmd.arg("--messages").arg(spec.messages.to_string());
    cmd.arg("--delay-ms").arg(spec.handler_ms.to_string());
    cmd.arg("--max-secs").arg(spec.max_secs.to_string());
    cmd.env("AWS_ENDPOINT_URL", endpoint).kill_on_drop(true);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    Ok(cmd)
}

async fn wait_child(child: tokio::process::Child, what: &str) -> anyhow::Result<Measured> {
    let out = child.wait_with_output().await?;
    anyhow::ensure!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line.trim()).with_context(|| format!("{what} output {text:?}"))
}

#[derive(Clone)]
struct RunSpec {
    name: &'static str,
    mode: Mode,
    handler_ms: u64,
    concurrency: usize,
    messages: usize,
    max_secs: u64,
}

fn result_of(spec: &RunSpec, measured: Measured, counts: proxy::Counts) -> RunResult {
    let rate = measured.processed as f64 / measured.secs.max(1e-9);
    let cpu = measured.cpu_secs / (measured.processed.max(1) as f64) * 1000.0;
    RunResult {
        name: spec.name.into(),
        mode: spec.mode,
        handler_ms: spec.handler_ms,
        concurrency: spec.concurrency,
        sent: spec.messages,
        msgs_per_sec: rate,
        cpu_secs_per_1000: cpu,
        requests: counts.total,
        requests_per_1000: counts.total as f64 * 1000.0 / measured.processed.max(1) as f64,
        requests_by_op: counts.by_op,
        measured,
    }
}

async fn create_queue(client: &aws_sdk_sqs::Client, name: &str) -> anyhow::Result<Queue> {
    let url = client.create_queue().queue_name(name).send().await.context("create queue")?;
    Ok(Queue::new(client.clone(), url.queue_url().context("url")?.to_string()))
}

fn host_port(endpoint: &str) -> String {
    let rest = endpoint.split("://").nth(1).unwrap_or(endpoint).trim_end_matches('/');
    let host = rest.split('/').next().unwrap_or(rest);
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.child {
        Some(Child::Run { mode, queue_url, messages, delay_ms, concurrency, max_secs }) => {
            let m = child(mode, queue_url, messages, delay_ms, concurrency, max_secs).await?;
            println!("{}", serde_json::to_string(&m)?);
            return Ok(());
        }
        Some(Child::Adaptive { quick, out }) => return adaptive::main(adaptive::Options { quick, out }).await,
        Some(Child::Idempotency { messages, quick, dynamodb_url, redis_server, out }) => {
            let messages = if quick { 200 } else { messages };
            return idempotency::run(idempotency::Options { messages, dynamodb_url, redis_server, out }).await;
        }
        None => {}
    }
    let (messages, max_secs) = if cli.quick { (1000, 10) } else { (cli.messages, cli.max_secs) };
    let sdk = sqskit::load_aws_config().await;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let upstream = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
    let proxy = proxy::Proxy::start(host_port(&upstream)).await?;
    let endpoint = proxy.url();
    let stamp = now_ms();
    let spec = |name, mode, handler_ms, concurrency, messages| RunSpec {
        name,
        mode,
        handler_ms,
        concurrency,
        messages,
        max_secs,
    };
    let mut plan: Vec<RunSpec> = vec![
        // the no-op ceiling and poller side by side (their ratio is a goal; see --rounds)
        spec("ceiling (raw SDK, 16 loops)", Mode::Ceiling, 0, CEILING_LOOPS, messages),
        spec("sqskit poller (defaults)", Mode::Poller, 0, 32, messages),
        spec("sequential loop", Mode::Sequential, 0, 1, messages),
        spec("ceiling (raw SDK, 16 loops)", Mode::Ceiling, 50, CEILING_LOOPS, messages),
        spec("sequential loop", Mode::Sequential, 50, 1, messages),
        spec("sqskit poller (defaults)", Mode::Poller, 50, 32, messages),
        spec("sqskit poller (concurrency 100)", Mode::Poller, 50, 100, messages),
        spec("sqskit poller, 1,000 in flight (RSS)", Mode::Poller, 2000, 1000, messages.min(3000)),
    ];
    let rounds = cli.rounds.unwrap_or(if cli.quick { 1 } else { 3 }).max(1);
    for _ in 1..rounds {
        plan.push(spec("ceiling (raw SDK, 16 loops)", Mode::Ceiling, 0, CEILING_LOOPS, messages));
        plan.push(spec("sqskit poller (defaults)", Mode::Poller, 0, 32, messages));
    }
    if cli.node_peer.is_some() {
        plan.push(spec("sqs-consumer (Node, batchSize 10)", Mode::SqsConsumer, 0, 10, messages));
        plan.push(spec("sqs-consumer (Node, batchSize 10)", Mode::SqsConsumer, 50, 10, messages));
    } else {
        eprintln!("bench: no --node-peer: sqs-consumer runs skipped");
    }
    if cli.boto3_peer.is_some() {
        plan.push(spec("boto3 sequential loop (Python)", Mode::Boto3, 0, 1, messages));
        plan.push(spec("boto3 sequential loop (Python)", Mode::Boto3, 50, 1, messages));
    } else {
        eprintln!("bench: no --boto3-peer: boto3 runs skipped");
    }
    let wanted = |what: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == what);
    plan.retain(|s| wanted(&format!("{:?}", s.mode).to_lowercase()));
    let mut results = Vec::new();
    for (i, spec) in plan.iter().enumerate() {
        let q = prefill(&client, &format!("bench-{stamp}-{i}"), spec.messages, cli.size).await?;
        eprintln!("bench: {}, handler {} ms: {} messages queued", spec.name, spec.handler_ms, spec.messages);
        proxy.take();
        let child = command(&cli, spec, &endpoint, q.url())?.spawn().with_context(|| format!("start {}", spec.name))?;
        let measured = wait_child(child, spec.name).await?;
        let counts = proxy.take();
        let _ = client.delete_queue().queue_url(q.url()).send().await;
        results.push(result_of(spec, measured, counts));
    }

    // Latency: a feeder in this process sends `rate` messages per second (batches of 10, straight
    // to LocalStack) for `secs` while the poller (defaults, concurrency 32) consumes.
    let rate = cli.latency_rate.unwrap_or(if cli.quick { 50 } else { 500 }).max(10);
    let lsecs = cli.latency_secs.unwrap_or(if cli.quick { 3 } else { 20 }).max(1);
    let latency_spec = RunSpec {
        name: "sqskit poller (defaults), fed at a steady rate",
        mode: Mode::Poller,
        handler_ms: 0,
        concurrency: 32,
        messages: (rate * lsecs) as usize / 10 * 10,
        max_secs: lsecs + 30,
    };
    let q = create_queue(&client, &format!("bench-{stamp}-latency")).await?;
    eprintln!("bench: latency: {rate} msg/s for {lsecs} s while the poller consumes");
    proxy.take();
    let child = command(&cli, &latency_spec, &endpoint, q.url())?.spawn()?;
    tokio::time::sleep(Duration::from_secs(1)).await; // the poller's start (not measured)
    let body = "x".repeat(cli.size);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(10.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::new();
    for _ in 0..latency_spec.messages / 10 {
        tick.tick().await;
        let (q, body) = (q.clone(), body.clone());
        sends.push(tokio::spawn(async move {
            q.send_batch((0..10).map(|_| OutgoingMessage::new(body.clone()))).await?.into_result()?;
            Ok::<(), sqskit::Error>(())
        }));
    }
    for s in sends {
        s.await??;
    }
    let measured = wait_child(child, latency_spec.name).await?;
    let latency = result_of(&latency_spec, measured, proxy.take());
    let _ = client.delete_queue().queue_url(q.url()).send().await;

    // Idle: the poller with PollerConfig::default() on an empty queue. Counted from `warmup` after
    // its start (queue resolution and the first round of receives left out) for `idle` seconds:
    // with 20-s long polls a 40-s window holds exactly two rounds of receives per receiver.
    let idle_secs = cli.idle_secs.unwrap_or(if cli.quick { 5 } else { 40 }).max(1);
    let warmup = if cli.quick { 0 } else { 2 };
    let idle_spec = RunSpec {
        name: "sqskit poller (PollerConfig::default()), empty queue",
        mode: Mode::Idle,
        handler_ms: 0,
        concurrency: 32,
        messages: 1,
        max_secs: warmup + idle_secs,
    };
    let q = create_queue(&client, &format!("bench-{stamp}-idle")).await?;
    eprintln!("bench: idle: the poller on an empty queue, {idle_secs} s counted");
    proxy.take();
    let child = command(&cli, &idle_spec, &endpoint, q.url())?.spawn()?;
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    proxy.take();
    let idle_measured = wait_child(child, idle_spec.name).await?;
    let idle_counts = proxy.take();
    let _ = client.delete_queue().queue_url(q.url()).send().await;
    let idle_per_hour = idle_counts.total as f64 * 3600.0 / idle_secs as f64;
    let idle_by_op: BTreeMap<String, f64> =
        idle_counts.by_op.iter().map(|(k, v)| (k.clone(), *v as f64 * 3600.0 / idle_secs as f64)).collect();
    let idle_receivers = idle_measured.receivers.unwrap_or(0);

    // A run repeated (--rounds) counts by its medians: `find` gives the run of median rate,
    // `cpu_of` the median CPU of its kind.
    let group = |mode: Mode, ms: u64, c: Option<usize>| -> Vec<&RunResult> {
        results
            .iter()
            .filter(|r| r.mode == mode && r.handler_ms == ms && c.is_none_or(|c| r.concurrency == c))
            .collect()
    };
    let median_by = |mut v: Vec<&RunResult>, key: fn(&RunResult) -> f64| -> Option<f64> {
        v.sort_by(|a, b| key(a).total_cmp(&key(b)));
        v.get(v.len() / 2).map(|r| key(r))
    };
    let find = |mode: Mode, ms: u64, c: Option<usize>| -> Option<&RunResult> {
        let mut v = group(mode, ms, c);
        v.sort_by(|a, b| a.msgs_per_sec.total_cmp(&b.msgs_per_sec));
        v.get(v.len() / 2).copied()
    };
    let rate_of = |r: Option<&RunResult>| r.map(|r| r.msgs_per_sec).unwrap_or(0.0);
    let cpu_of = |r: Option<&RunResult>| {
        r.and_then(|r| median_by(group(r.mode, r.handler_ms, Some(r.concurrency)), |r| r.cpu_secs_per_1000))
            .unwrap_or(0.0)
    };
    let ceiling = rate_of(find(Mode::Ceiling, 0, None));
    let bound = |c: usize| (c as f64 / 0.050).min(ceiling);
    let poller0 = find(Mode::Poller, 0, Some(32));
    let poller50 = find(Mode::Poller, 50, Some(32));
    let nan_to_null = |v: f64| if v.is_finite() { serde_json::json!(v) } else { serde_json::Value::Null };
    let mut ratios = serde_json::Map::new();
    let mut put = |k: &str, v: f64| {
        ratios.insert(k.into(), nan_to_null(v));
    };
    put("noop_poller_vs_ceiling", rate_of(poller0) / ceiling);
    put("noop_poller_vs_sequential", rate_of(poller0) / rate_of(find(Mode::Sequential, 0, None)));
    put("io50_poller_vs_ceiling", rate_of(find(Mode::Poller, 50, Some(100))) / rate_of(find(Mode::Ceiling, 50, None)));
    put(
        "io50_poller_vs_sequential",
        rate_of(find(Mode::Poller, 50, Some(100))) / rate_of(find(Mode::Sequential, 50, None)),
    );
    // the goals: bound = min(C / 50 ms, the no-op raw-SDK ceiling)
    // paired: each round's poller against the ceiling run just before it, median of the rounds
    let pairs: Vec<(&RunResult, &RunResult)> =
        group(Mode::Ceiling, 0, None).into_iter().zip(group(Mode::Poller, 0, Some(32))).collect();
    let paired = |f: fn(&RunResult, &RunResult) -> f64| {
        let mut v: Vec<f64> = pairs.iter().map(|(c, p)| f(c, p)).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    put("noop_default_vs_ceiling", paired(|c, p| p.msgs_per_sec / c.msgs_per_sec));
    put("io50_c32_vs_bound", rate_of(poller50) / bound(32));
    put("io50_c100_vs_bound", rate_of(find(Mode::Poller, 50, Some(100))) / bound(100));
    put("cpu_vs_raw_sdk", paired(|c, p| p.cpu_secs_per_1000 / c.cpu_secs_per_1000));
    put("cpu_vs_raw_sdk_of_medians", cpu_of(poller0) / cpu_of(find(Mode::Ceiling, 0, None)));
    put("cpu_vs_sequential", cpu_of(poller0) / cpu_of(find(Mode::Sequential, 0, None)));
    // the peers: sqskit's poller (defaults) / the peer, same handler; CPU is per message
    for (key, mode) in [("sqs_consumer", Mode::SqsConsumer), ("boto3", Mode::Boto3)] {
        for (suffix, ms, ours) in [("", 0, poller0), ("_io50", 50, poller50)] {
            if let Some(peer) = find(mode, ms, None) {
                put(&format!("vs_{key}_throughput{suffix}"), rate_of(ours) / peer.msgs_per_sec);
                put(&format!("vs_{key}_cpu{suffix}"), cpu_of(ours) / peer.cpu_secs_per_1000);
            }
        }
    }
    let ratios = serde_json::Value::Object(ratios);

    println!(
        "| run | handler | processed / sent | msg/s | p50 ms | p99 ms | CPU s per 1,000 msgs | peak RSS MB | SQS requests per 1,000 msgs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} ms | {} / {} | {:.0} | {:.0} | {:.0} | {:.3} | {:.1} | {:.0} |",
            r.name,
            r.handler_ms,
            r.measured.processed,
            r.sent,
            r.msgs_per_sec,
            r.measured.p50_ms,
            r.measured.p99_ms,
            r.cpu_secs_per_1000,
            r.measured.peak_rss_mb,
            r.requests_per_1000
        );
    }
    println!();
    println!("SQS requests per 1,000 messages, by operation:");
    for r in &results {
        let ops: Vec<String> = r
            .requests_by_op
            .iter()
            .map(|(k, v)| format!("{k} {:.0}", *v as f64 * 1000.0 / r.measured.processed.max(1) as f64))
            .collect();
        println!("- {} ({} ms): {}", r.name, r.handler_ms, ops.join(", "));
    }
    println!();
    for (k, v) in ratios.as_object().into_iter().flatten() {
        println!("- {k}: {}", v.as_f64().map(|v| format!("{v:.2}")).unwrap_or_else(|| "n/a".into()));
    }
    println!();
    let lm = &latency.measured;
    println!(
        "latency ({rate} msg/s for {lsecs} s, poller defaults, no-op): {} / {} processed, {:.0} msg/s; \
         SentTimestamp -> handler start p50 {:.0} ms, p99 {:.0} ms; receive -> handler start p50 {:.0} ms, p99 {:.0} ms; \
         {:.0} requests per 1,000 msgs",
        lm.processed,
        latency.sent,
        latency.msgs_per_sec,
        lm.p50_ms,
        lm.p99_ms,
        lm.recv_p50_ms.unwrap_or(0.0),
        lm.recv_p99_ms.unwrap_or(0.0),
        latency.requests_per_1000
    );
    let by_op: Vec<String> = idle_by_op.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
    println!(
        "idle (PollerConfig::default(), empty queue, {idle_secs} s counted): {} requests -> {:.0} per hour \
         ({}) with {idle_receivers} receivers; CPU {:.3} s in {:.1} s",
        idle_counts.total,
        idle_per_hour,
        by_op.join(", "),
        idle_measured.cpu_secs,
        idle_measured.secs
    );
    if let Some(dir) = cli.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let peers: Vec<&RunResult> = results.iter().filter(|r| matches!(r.mode, Mode::SqsConsumer | Mode::Boto3)).collect();
    let mut doc = serde_json::json!({
        "messages": messages, "size": cli.size, "max_secs": max_secs, "quick": cli.quick, "rounds": rounds,
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "runs": results, "ratios": ratios, "peers": peers,
        "requests_per_1000": poller0.map(|r| r.requests_per_1000),
        "requests_per_1000_by_op": poller0.map(|r| {
            r.requests_by_op.iter().map(|(k, v)| (k.clone(), *v as f64 * 1000.0 / r.measured.processed.max(1) as f64))
                .collect::<BTreeMap<_, _>>()
        }),
        "requests_per_1000_io50_c32": poller50.map(|r| r.requests_per_1000),
        "idle_requests_per_hour": idle_per_hour,
        "idle_requests_per_hour_by_op": idle_by_op,
        "idle_receivers": idle_receivers,
        "idle_secs_counted": idle_secs,
        "idle_cpu_secs": idle_measured.cpu_secs,
        "latency_rate_per_sec": rate,
        "latency_secs": lsecs,
        "latency_sent_to_start_p50_ms": lm.p50_ms,
        "latency_sent_to_start_p99_ms": lm.p99_ms,
        "latency_receive_to_start_p50_ms": lm.recv_p50_ms,
        "latency_receive_to_start_p99_ms": lm.recv_p99_ms,
        "latency_run": latency,
    });
    // the ratios at the top level too, under the names the issue gives
    if let (Some(map), Some(r)) = (doc.as_object_mut(), ratios.as_object()) {
        for (k, v) in r {
            map.insert(k.clone(), v.clone());
        }
    }
    std::fs::write(&cli.out, serde_json::to_string_pretty(&doc)?)?;
    eprintln!("bench: results written to {}", cli.out.display());
    Ok(())
}
