//! Flow control's benchmark: `--concurrency auto` against fixed settings, and the circuit
//! breaker's cost when it stays closed.
//!
//! A downstream in this process (an HTTP/1.1 server on 127.0.0.1) with room for `K` = 16
//! requests at once, each taking 50 ms: requests beyond `K` queue (latency grows), beyond
//! `2K` it answers 503 at once. The sqskit poller (LocalStack queue, pre-filled) delivers to it
//! with the `--http` handler ([`HttpHandler`]) for a fixed time per setting: concurrency 1 (the
//! unloaded latency), 8, 32, 100 and auto (1–100, no tuning). Throughput is the 200s the
//! downstream gave per second of the run; handler latency is the `POST`'s round trip as the
//! handler sees it, of the successful ones. Then the breaker: a downstream without a capacity
//! limit that answers 503 to 10 % of the requests at random, at concurrency 32, with the breaker
//! on and off (interleaved, twice each; the ratio of the means).
//!
//! `sqskit-bench adaptive [--quick]` prints a table and adds an `adaptive` entry to
//! `target/bench/results.json`: per setting, `auto_vs_best_fixed` (auto's throughput over the
//! best fixed setting's), `auto_p99_vs_unloaded` (auto's p99 over the unloaded median), and
//! `breaker_on_vs_off_random_10pct`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sqskit::handlers::HttpHandler;
use sqskit::poller::{Poller, PollerConfig};
use sqskit::{Handler, HandlerError, Message, OutgoingMessage, Processor, Queue};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

/// Requests the downstream serves at once.
const CAPACITY: usize = 16;
/// Each one's time.
const SERVICE: Duration = Duration::from_millis(50);

/// Options of the `adaptive` part.
pub struct Options {
    pub quick: bool,
    pub out: std::path::PathBuf,
}

/// The downstream's behaviour.
#[derive(Clone, Copy)]
enum Kind {
    /// `CAPACITY` at once, queue beyond, 503 beyond twice that.
    Capacity,
    /// No limit; 503 to 10 % at random.
    Random503,
}

/// A downstream on 127.0.0.1; counts its 200s.
struct Downstream {
    url: String,
    ok: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
}

impl Downstream {
    async fn start(kind: Kind) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/work", listener.local_addr()?);
        let (ok, rejected) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (ok2, rejected2) = (ok.clone(), rejected.clone());
        let room = Arc::new(Semaphore::new(CAPACITY));
        let inside = Arc::new(AtomicUsize::new(0));
        let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(10)));
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let (ok, rejected, room, inside, rng) =
                    (ok2.clone(), rejected2.clone(), room.clone(), inside.clone(), rng.clone());
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut r = BufReader::new(r);
                    loop {
                        if sqskit_test_support::http::read_request(&mut r).await.is_none() {
                            return;
                        }
                        let status = match kind {
                            Kind::Capacity => {
                                if inside.fetch_add(1, Ordering::SeqCst) >= 2 * CAPACITY {
                                    503
                                } else {
                                    let _slot = room.acquire().await;
                                    tokio::time::sleep(SERVICE).await;
                                    200
                                }
                            }
                            Kind::Random503 => {
                                inside.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(SERVICE).await;
                                if rng.lock().unwrap_or_else(|p| p.into_inner()).f64() < 0.1 {
                                    503
                                } else {
                                    200
                                }
                            }
                        };
                        inside.fetch_sub(1, Ordering::SeqCst);
                        if status == 200 { &ok } else { &rejected }.fetch_add(1, Ordering::Relaxed);
                        let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                        if w.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self { url, ok, rejected })
    }
}

#[derive(Serialize, Debug, Clone)]
struct Setting {
    name: String,
    concurrency: String,
    secs: f64,
    delivered: u64,
    rejected_503: u64,
    msgs_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Auto: the limit at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    final_limit: Option<usize>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn filled_queue(client: &aws_sdk_sqs::Client, name: &str, n: usize) -> anyhow::Result<Queue> {
    let url = client.create_queue().queue_name(name).send().await.context("create queue")?;
    let queue = Queue::new(client.clone(), url.queue_url().context("url")?.to_string());
    let sends = (0..n.div_ceil(500)).map(|c| {
        let q = queue.clone();
        let k = (n - c * 500).min(500);
        async move { q.send_batch((0..k).map(|i| OutgoingMessage::new(format!("{{\"n\":{i}}}")))).await?.into_result() }
    });
    for r in futures::future::join_all(sends).await {
        r?;
    }
    Ok(queue)
}

/// Run the poller on a queue of `messages` for `secs` against `down`.
async fn run(
    client: &aws_sdk_sqs::Client,
    name: &str,
    down: &Downstream,
    config: PollerConfig,
    messages: usize,
    secs: Duration,
) -> anyhow::Result<Setting> {
    let stamp = sqskit::metrics::now_ms();
    let queue = filled_queue(client, &format!("bench-adaptive-{stamp}"), messages).await?;
    let http = HttpHandler::new(down.url.clone(), Duration::from_secs(30), queue.name())?;
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let lat = latencies.clone();
    let processor = Processor::raw(move |m: Message<String>| {
        let (http, lat) = (http.clone(), lat.clone());
        async move {
            let t = Instant::now();
            let r: Result<(), HandlerError> = http.call(m).await;
            if r.is_ok() {
                lat.lock().unwrap_or_else(|p| p.into_inner()).push(t.elapsed().as_secs_f64() * 1000.0);
            }
            r
        }
    });
    let concurrency = if config.adaptive.is_some() { "auto".to_string() } else { config.concurrency.to_string() };
    let config = config.with_wait_time(Duration::from_secs(1)).with_depth_interval(Duration::ZERO);
    let poller = Poller::new(processor, [queue.clone()], config).await?;
    let stats = poller.stats();
    let (ok0, rej0) = (down.ok.load(Ordering::Relaxed), down.rejected.load(Ordering::Relaxed));
    let started = Instant::now();
    let until = tokio::time::Instant::now() + secs;
    let (ok_at_end, rej_at_end) = (down.ok.clone(), down.rejected.clone());
    let end = async move {
        tokio::time::sleep_until(until).await;
        (ok_at_end.load(Ordering::Relaxed), rej_at_end.load(Ordering::Relaxed))
    };
    let counts = Arc::new(Mutex::new((0, 0)));
    let c2 = counts.clone();
    poller
        .run(async move {
            *c2.lock().unwrap_or_else(|p| p.into_inner()) = end.await;
        })
        .await;
    let elapsed = started.elapsed().min(secs).as_secs_f64();
    let (ok1, rej1) = *counts.lock().unwrap_or_else(|p| p.into_inner());
    let _ = client.delete_queue().queue_url(queue.url()).send().await;
    let mut l = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    l.sort_by(f64::total_cmp);
    let delivered = ok1 - ok0;
    Ok(Setting {
        name: name.to_string(),
        concurrency,
        secs: elapsed,
        delivered,
        rejected_503: rej1 - rej0,
        msgs_per_sec: delivered as f64 / elapsed,
        p50_ms: percentile(&l, 0.5),
        p99_ms: percentile(&l, 0.99),
        final_limit: stats.flow().concurrency_limit,
    })
}

pub async fn main(opts: Options) -> anyhow::Result<()> {
    let sdk = sqskit::load_aws_config().await;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let secs = Duration::from_secs(if opts.quick { 4 } else { 20 });
    // enough for the best setting with room to spare: K / service time × the run
    let best = CAPACITY as f64 / SERVICE.as_secs_f64();
    let messages = (best * secs.as_secs_f64() * 1.5) as usize;
    let down = Downstream::start(Kind::Capacity).await?;
    eprintln!(
        "bench: adaptive: a downstream with room for {CAPACITY} at once ({} ms each, 503 beyond {}), {} s per setting",
        SERVICE.as_millis(),
        2 * CAPACITY,
        secs.as_secs()
    );
    let base = PollerConfig::default;
    let unloaded = run(
        &client,
        "unloaded (1)",
        &down,
        base().with_concurrency(1),
        messages / 10,
        secs.min(Duration::from_secs(5)),
    )
    .await?;
    let mut settings = Vec::new();
    for c in [8, 32, 100] {
        settings.push(run(&client, &format!("fixed {c}"), &down, base().with_concurrency(c), messages, secs).await?);
    }
    let auto = run(&client, "auto (1-100)", &down, base().with_adaptive_concurrency(1, 100), messages, secs).await?;
    let best_fixed = settings.iter().map(|s| s.msgs_per_sec).fold(0.0, f64::max);
    let auto_vs_best_fixed = auto.msgs_per_sec / best_fixed;
    let auto_p99_vs_unloaded = auto.p99_ms / unloaded.p50_ms;

    // the breaker's cost while it stays closed: 10 % random 503s, concurrency 32, on and off
    // (interleaved, twice each in the full run: this machine's speed drifts between runs)
    let random = Downstream::start(Kind::Random503).await?;
    let c32 = || base().with_concurrency(32);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..if opts.quick { 1 } else { 2 } {
        on.push(run(&client, "random 10 % 503, breaker on", &random, c32(), messages * 2, secs).await?);
        off.push(
            run(&client, "random 10 % 503, breaker off", &random, c32().with_breaker(None), messages * 2, secs).await?,
        );
    }
    let mean = |v: &[Setting]| v.iter().map(|s| s.msgs_per_sec).sum::<f64>() / v.len() as f64;
    let breaker_on_vs_off = mean(&on) / mean(&off);

    println!("| setting | delivered/s | p50 ms | p99 ms | 503s | final limit |");
    println!("|---|---|---|---|---|---|");
    for s in std::iter::once(&unloaded).chain(&settings).chain([&auto]).chain(&on).chain(&off) {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {} | {} |",
            s.name,
            s.msgs_per_sec,
            s.p50_ms,
            s.p99_ms,
            s.rejected_503,
            s.final_limit.map_or("-".into(), |l| l.to_string())
        );
    }
    println!(
        "- auto_vs_best_fixed: {auto_vs_best_fixed:.2} (goal ≥ 0.9)\n- auto_p99_vs_unloaded: {auto_p99_vs_unloaded:.2} \
         (goal ≤ 2)\n- breaker_on_vs_off_random_10pct: {breaker_on_vs_off:.2} (goal ≥ 0.9)"
    );
    let entry = serde_json::json!({
        "capacity": CAPACITY, "service_ms": SERVICE.as_millis() as u64, "secs_per_setting": secs.as_secs(),
        "quick": opts.quick, "best_possible_per_sec": best,
        "unloaded": unloaded, "fixed": settings, "auto": auto,
        "auto_vs_best_fixed": auto_vs_best_fixed,
        "auto_p99_vs_unloaded": auto_p99_vs_unloaded,
        "breaker_random_10pct": { "on": on, "off": off },
        "breaker_on_vs_off_random_10pct": breaker_on_vs_off,
    });
    crate::idempotency::merge_into(&opts.out, "adaptive", entry)?;
    eprintln!("bench: adaptive results added to {}", opts.out.display());
    Ok(())
}
