//! The idempotency claim's cost per message: a no-op `Processor` with idempotency on against
//! the same processor without it, for the in-memory store (the baseline of the machinery), the
//! DynamoDB store (on moto) and the Redis store (a `redis-server` child on a free port).
//!
//! N messages with distinct keys go through `Processor::process_batch` in batches of 10 with a
//! `QueueContext::default()`, so no SQS call is made: what is measured is the key derivation,
//! the claim (one conditional write) and the completion (one write) per message. Then the same
//! N messages again: all duplicates, one conditional write each that finds `COMPLETED`.
//! Within a batch the 10 messages run concurrently (the processor's default concurrency), as
//! they do in the poller and in Lambda; µs per message is the pass's wall time ÷ N, best of 3
//! rounds of new keys (1 round for DynamoDB on moto, which is slow).
//!
//! `sqskit-bench idempotency [--messages N] [--quick] [--dynamodb-url URL]` prints a Markdown
//! table and adds an `idempotency` entry to `target/bench/results.json`. Run it through
//! `scripts/bench`, which starts moto and makes sure `redis-server` is installed.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use serde::Serialize;
use sqskit::idempotency::{DynamoDbStore, Idempotency, IdempotencyStore, KeySource, MemoryStore, RedisStore};
use sqskit::{HandlerError, Message, Outcome, Processor, QueueContext, ReceivedMessage};

/// Messages per batch, as SQS hands them out.
const BATCH: usize = 10;
/// Messages (distinct keys, not measured) that open the store's connection first.
const WARMUP: usize = 20;
/// Rounds for the quick stores (no idempotency, memory, Redis); best of them. DynamoDB on moto
/// gets one: moto's ~10 ms per request dwarfs the noise and a round of 2,000 takes a minute.
const ROUNDS: usize = 3;

/// Options of the `idempotency` part.
pub struct Options {
    pub messages: usize,
    pub dynamodb_url: String,
    pub redis_server: String,
    pub out: std::path::PathBuf,
}

#[derive(Serialize, Debug, Clone)]
struct StoreResult {
    store: &'static str,
    /// Rounds of N new keys; the figures are the best round's.
    rounds: usize,
    /// µs per message, claim + handler + completion.
    fresh_us_per_msg: f64,
    /// µs per message, the same messages again (all duplicates).
    duplicate_us_per_msg: f64,
    /// `fresh_us_per_msg` minus the baseline (no idempotency).
    fresh_overhead_us_per_msg: f64,
    /// `duplicate_us_per_msg` minus the baseline.
    duplicate_overhead_us_per_msg: f64,
}

/// A `redis-server` child process on a free local port, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(bin: &str) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {bin}; install it with `scripts/redis-install`"))?;
        let mut server = Self { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        while !server.answers() {
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("{bin} exited at start-up ({status})");
            }
            anyhow::ensure!(Instant::now() < until, "{bin} did not answer PING on port {port} within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).map(|n| buf[..n].starts_with(b"+PONG")).unwrap_or(false)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DynamoDB client for `url` only (the rest of the harness keeps `AWS_ENDPOINT_URL`).
async fn dynamodb(url: &str) -> anyhow::Result<aws_sdk_dynamodb::Client> {
    let sdk = sqskit::load_aws_config().await;
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk).endpoint_url(url).build();
    let client = aws_sdk_dynamodb::Client::from_conf(conf);
    if let Err(e) = client.list_tables().limit(1).send().await {
        anyhow::bail!(
            "moto (DynamoDB) is not reachable at {url} ({}); start it with `scripts/moto start`",
            DisplayErrorContext(e)
        );
    }
    Ok(client)
}

/// A fresh table laid out as Powertools' (hash key `id`, a string; on demand).
async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) -> anyhow::Result<()> {
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("id").attribute_type(ScalarAttributeType::S).build()?,
        )
        .key_schema(KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build()?)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("create table {name}: {}", DisplayErrorContext(e)))?;
    Ok(())
}

/// `n` messages whose bodies (and keys, `/order_id`) are distinct within `run`.
fn messages(run: &str, from: usize, n: usize) -> Vec<ReceivedMessage> {
    (from..from + n)
        .map(|i| ReceivedMessage {
            message_id: format!("{run}-{i}"),
            receipt_handle: String::new(),
            body: format!(r#"{{"order_id":"{run}-{i}","total_cents":1999,"currency":"EUR"}}"#),
            attributes: HashMap::new(),
            system_attributes: HashMap::from([("ApproximateReceiveCount".to_string(), "1".to_string())]),
            received_at: Instant::now(),
            queue_url: None,
        })
        .collect()
}

fn noop() -> Processor<String> {
    Processor::raw(|_m: Message<String>| async { Ok::<(), HandlerError>(()) })
}

/// Run `msgs` through `p` in batches of 10; µs per message. Every outcome must satisfy `want`
/// (a correctness check: a benchmark of claims that failed would measure nothing).
async fn pass(
    p: &Processor<String>,
    msgs: &[ReceivedMessage],
    what: &str,
    want: fn(&Outcome) -> bool,
) -> anyhow::Result<f64> {
    let ctx = QueueContext::default();
    let started = Instant::now();
    for chunk in msgs.chunks(BATCH) {
        for d in p.process_batch(&ctx, chunk.to_vec()).await {
            anyhow::ensure!(want(&d.outcome), "{what}: message {} came out {:?}", d.message.message_id, d.outcome);
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / msgs.len().max(1) as f64)
}

fn succeeded(o: &Outcome) -> bool {
    matches!(o, Outcome::Succeeded)
}

fn duplicate(o: &Outcome) -> bool {
    matches!(o, Outcome::Duplicate)
}

/// Fresh and duplicate passes over `store`, best of `rounds` (each round with new keys).
async fn measure(
    name: &'static str,
    store: Arc<dyn IdempotencyStore>,
    run: &str,
    n: usize,
    rounds: usize,
    baseline: f64,
) -> anyhow::Result<StoreResult> {
    let idem =
        Idempotency::with_store(store).with_prefix("bench").with_key_source(KeySource::Pointer("/order_id".into()));
    let p = noop().with_idempotency(idem);
    pass(&p, &messages(&format!("{run}-{name}-warmup"), 0, WARMUP), &format!("{name} warm-up"), succeeded).await?;
    let (mut fresh, mut dup) = (f64::INFINITY, f64::INFINITY);
    for round in 0..rounds {
        let msgs = messages(&format!("{run}-{name}-{round}"), 0, n);
        fresh = fresh.min(pass(&p, &msgs, &format!("{name} fresh"), succeeded).await?);
        dup = dup.min(pass(&p, &msgs, &format!("{name} duplicate"), duplicate).await?);
    }
    let counts = p.idempotency_counts();
    anyhow::ensure!(
        counts.claimed == (WARMUP + rounds * n) as u64
            && counts.duplicate == (rounds * n) as u64
            && counts.store_error == 0,
        "{name}: unexpected idempotency counts {counts:?}"
    );
    Ok(StoreResult {
        store: name,
        rounds,
        fresh_us_per_msg: fresh,
        duplicate_us_per_msg: dup,
        fresh_overhead_us_per_msg: fresh - baseline,
        duplicate_overhead_us_per_msg: dup - baseline,
    })
}

/// The whole part: baseline, memory, DynamoDB (a table made for this run, deleted after),
/// Redis (a server started for this run, killed after).
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let n = opts.messages.max(BATCH);
    let run = format!("{}", crate::now_ms());
    let profile = if cfg!(debug_assertions) { "dev" } else { "release" };
    eprintln!("bench: idempotency, {n} messages in batches of {BATCH} ({profile} build)");

    // the baseline: the same no-op processor, no idempotency
    let plain = noop();
    pass(&plain, &messages(&run, n, WARMUP), "baseline warm-up", succeeded).await?;
    let mut baseline = f64::INFINITY;
    for _ in 0..ROUNDS {
        baseline = baseline.min(pass(&plain, &messages(&run, 0, n), "baseline", succeeded).await?);
    }

    let mut results = vec![measure("memory", Arc::new(MemoryStore::new()), &run, n, ROUNDS, baseline).await?];

    let client = dynamodb(&opts.dynamodb_url).await?;
    let table = format!("sqskit-bench-idempotency-{run}");
    create_table(&client, &table).await?;
    let dynamo = measure("dynamodb", Arc::new(DynamoDbStore::new(client.clone(), &table)), &run, n, 1, baseline).await;
    let _ = client.delete_table().table_name(&table).send().await;
    results.push(dynamo?);

    let server = RedisServer::start(&opts.redis_server)?;
    let store = RedisStore::open(&server.url()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let redis = measure("redis", Arc::new(store), &run, n, ROUNDS, baseline).await;
    drop(server);
    results.push(redis?);

    println!("| store | fresh µs/msg (claim + complete) | overhead vs none | duplicate µs/msg (one conditional write) | overhead vs none |");
    println!("|---|---|---|---|---|");
    println!("| none (no idempotency) | {baseline:.1} | – | – | – |");
    for r in &results {
        println!(
            "| {} | {:.1} | +{:.1} | {:.1} | +{:.1} |",
            r.store,
            r.fresh_us_per_msg,
            r.fresh_overhead_us_per_msg,
            r.duplicate_us_per_msg,
            r.duplicate_overhead_us_per_msg
        );
    }
    println!();
    println!(
        "({profile} build; {n} messages per pass in batches of {BATCH}, 10 concurrent per batch, best of {ROUNDS} \
         rounds (DynamoDB: 1); DynamoDB is moto at {}, Redis a local redis-server)",
        opts.dynamodb_url
    );

    let entry = serde_json::json!({
        "messages": n, "batch": BATCH, "profile": profile, "dynamodb": "moto", "dynamodb_url": opts.dynamodb_url,
        "baseline_us_per_msg": baseline,
        "stores": results.iter().map(|r| (r.store, r)).collect::<std::collections::BTreeMap<_, _>>(),
    });
    merge_into(&opts.out, "idempotency", entry)?;
    eprintln!("bench: idempotency results added to {}", opts.out.display());
    Ok(())
}

/// Set `key` in the JSON object at `path` (created when missing), keeping what is there.
pub fn merge_into(path: &Path, key: &str, value: serde_json::Value) -> anyhow::Result<()> {
    let mut doc: serde_json::Value = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?,
        Err(_) => serde_json::json!({}),
    };
    let obj = doc.as_object_mut().with_context(|| format!("{} is not a JSON object", path.display()))?;
    obj.insert(key.to_string(), value);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}
