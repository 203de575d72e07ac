//! Throughput benchmark against LocalStack: the raw-SDK ceiling, the hand-written sequential
//! loop, and the sqskit `Poller`, each in its own process (so CPU time and peak RSS are its
//! own), on a pre-filled queue of the same size.
//!
//! `sqskit-bench [--messages N] [--size BYTES] [--max-secs S] [--quick]` prints a Markdown table
//! and writes `target/bench/results.json`. `sqskit-bench idempotency` measures the idempotency
//! claim's cost per message instead (no SQS; see `idempotency.rs`) and adds it to that file.
//! Run both through `scripts/bench`.

mod idempotency;

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
    /// 1,000 messages, 20 s per run: proves the harness works (numbers not meaningful).
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: std::path::PathBuf,
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
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Measured {
    processed: usize,
    secs: f64,
    cpu_secs: f64,
    peak_rss_mb: f64,
    p50_ms: f64,
    p99_ms: f64,
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
    let done = Arc::new(AtomicUsize::new(0));
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
        Mode::Poller => {
            let lat = latencies.clone();
            let processor = Processor::raw(move |m: Message<String>| {
                lat.lock().unwrap_or_else(|p| p.into_inner()).push(latency_of(m.raw()));
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<(), HandlerError>(())
                }
            });
            let config = PollerConfig::default().with_concurrency(concurrency).with_depth_interval(Duration::ZERO);
            let poller = Poller::new(processor, [queue.clone()], config).await?;
            let stats = poller.stats();
            let finished = async move {
                while stats.snapshot().succeeded < target as u64 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            let summary = poller.run(finished).await;
            done.store(summary.succeeded as usize, Ordering::Relaxed);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (cpu_secs, peak_rss_mb) = usage();
    let mut l = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    l.sort_unstable();
    Ok(Measured {
        processed: done.load(Ordering::Relaxed),
        secs,
        cpu_secs,
        peak_rss_mb,
        p50_ms: percentile(&l, 0.5),
        p99_ms: percentile(&l, 0.99),
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

async fn run_child(args: &[String]) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe).arg("run").args(args).output().await?;
    anyhow::ensure!(out.status.success(), "bench child failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("child output {line:?}"))
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
        Some(Child::Idempotency { messages, quick, dynamodb_url, redis_server, out }) => {
            let messages = if quick { 200 } else { messages };
            return idempotency::run(idempotency::Options { messages, dynamodb_url, redis_server, out }).await;
        }
        None => {}
    }
    let (messages, max_secs) = if cli.quick { (1000, 20) } else { (cli.messages, cli.max_secs) };
    let sdk = sqskit::load_aws_config().await;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let stamp = now_ms();
    let plan: Vec<(&str, Mode, u64, usize, usize)> = vec![
        ("ceiling (raw SDK, 16 loops)", Mode::Ceiling, 0, CEILING_LOOPS, messages),
        ("sequential loop", Mode::Sequential, 0, 1, messages),
        ("sqskit poller (defaults)", Mode::Poller, 0, 32, messages),
        ("ceiling (raw SDK, 16 loops)", Mode::Ceiling, 50, CEILING_LOOPS, messages),
        ("sequential loop", Mode::Sequential, 50, 1, messages),
        ("sqskit poller (concurrency 100)", Mode::Poller, 50, 100, messages),
        ("sqskit poller, 1,000 in flight (RSS)", Mode::Poller, 2000, 1000, messages.min(3000)),
    ];
    let mut results = Vec::new();
    for (i, (name, mode, handler_ms, concurrency, n)) in plan.into_iter().enumerate() {
        let q = prefill(&client, &format!("bench-{stamp}-{i}"), n, cli.size).await?;
        eprintln!("bench: {name}, handler {handler_ms} ms: {n} messages queued");
        let args: Vec<String> = vec![
            "--mode".into(),
            format!("{mode:?}").to_lowercase(),
            "--queue-url".into(),
            q.url().into(),
            "--messages".into(),
            n.to_string(),
            "--delay-ms".into(),
            handler_ms.to_string(),
            "--concurrency".into(),
            concurrency.to_string(),
            "--max-secs".into(),
            max_secs.to_string(),
        ];
        let measured = run_child(&args).await?;
        let _ = client.delete_queue().queue_url(q.url()).send().await;
        let rate = measured.processed as f64 / measured.secs.max(1e-9);
        let cpu = measured.cpu_secs / (measured.processed.max(1) as f64) * 1000.0;
        results.push(RunResult {
            name: name.into(),
            mode,
            handler_ms,
            concurrency,
            sent: n,
            msgs_per_sec: rate,
            cpu_secs_per_1000: cpu,
            measured,
        });
    }
    let find = |mode: Mode, ms: u64| {
        results.iter().find(|r| r.mode == mode && r.handler_ms == ms).map(|r| r.msgs_per_sec).unwrap_or(0.0)
    };
    let ratios = serde_json::json!({
        "noop_poller_vs_ceiling": find(Mode::Poller, 0) / find(Mode::Ceiling, 0),
        "noop_poller_vs_sequential": find(Mode::Poller, 0) / find(Mode::Sequential, 0),
        "io50_poller_vs_ceiling": find(Mode::Poller, 50) / find(Mode::Ceiling, 50),
        "io50_poller_vs_sequential": find(Mode::Poller, 50) / find(Mode::Sequential, 50),
    });
    println!("| run | handler | processed / sent | msg/s | p50 ms | p99 ms | CPU s per 1,000 msgs | peak RSS MB |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} ms | {} / {} | {:.0} | {:.0} | {:.0} | {:.3} | {:.1} |",
            r.name,
            r.handler_ms,
            r.measured.processed,
            r.sent,
            r.msgs_per_sec,
            r.measured.p50_ms,
            r.measured.p99_ms,
            r.cpu_secs_per_1000,
            r.measured.peak_rss_mb
        );
    }
    println!();
    for (k, v) in ratios.as_object().into_iter().flatten() {
        println!("- {k}: {:.2}", v.as_f64().unwrap_or(0.0));
    }
    if let Some(dir) = cli.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let doc = serde_json::json!({
        "messages": messages, "size": cli.size, "max_secs": max_secs, "quick": cli.quick,
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "runs": results, "ratios": ratios,
    });
    std::fs::write(&cli.out, serde_json::to_string_pretty(&doc)?)?;
    eprintln!("bench: results written to {}", cli.out.display());
    Ok(())
}
