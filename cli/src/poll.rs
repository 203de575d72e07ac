//! `sqskit poll`: the worker for ECS (and anywhere).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use sqskit::handlers::{ExecHandler, HttpHandler};
use sqskit::poller::{PollStats, Poller, PollerConfig, QueueSpec};

/// `URL` or `URL=WEIGHT`.
#[derive(Debug, Clone)]
pub struct QueueArg {
    pub url: String,
    pub weight: u32,
}
use sqskit::config::IdempotencySettings;
use sqskit::retry::Backoff;
use sqskit::{Processor, ProcessorConfig, Queue};

use crate::args::{self, TWELVE_HOURS};
use crate::common::{aws_config, Global};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("handler").required(true).args(["http", "exec"])))]
pub struct Args {
    /// Queue URL to poll, optionally with a weight: URL=3. Repeat for several queues
    /// (in the env var: comma-separated).
    #[arg(long = "queue-url", env = "SQSKIT_QUEUE_URL", value_delimiter = ',', required = true, value_parser = parse_spec)]
    pub queue_urls: Vec<QueueArg>,
    /// Handlers running at once at most, 1–100000 (independent of the receive batch size of
    /// 10), or `auto`: found between --min-concurrency and --max-concurrency from the handlers'
    /// latency and retryable failures (see docs/flow-control.md).
    #[arg(long, env = "SQSKIT_CONCURRENCY", default_value = "32", value_parser = parse_concurrency)]
    pub concurrency: Concurrency,
    /// With --concurrency auto: the floor (1–100000); the limit starts there.
    #[arg(long, env = "SQSKIT_MIN_CONCURRENCY", default_value_t = 1, value_parser = args::count(1..=100_000),
          help_heading = "Flow control")]
    pub min_concurrency: usize,
    /// With --concurrency auto: the ceiling (1–100000).
    #[arg(long, env = "SQSKIT_MAX_CONCURRENCY", default_value_t = 100, value_parser = args::count(1..=100_000),
          help_heading = "Flow control")]
    pub max_concurrency: usize,
    /// The circuit breaker, `on` (default) or `off`: when most recent messages fail retryably
    /// (HTTP 5xx / 429 / timeouts, retryable exits), stop receiving, probe, and start again
    /// slowly once the downstream answers; failures seen meanwhile are not dead-lettered.
    #[arg(long, env = sqskit::flow::breaker_env::SWITCH, default_value = "on", value_parser = on_off, action = clap::ArgAction::Set,
          value_name = "on|off", help_heading = "Flow control")]
    pub breaker: bool,
    /// Breaker: outcomes looked at (the last N), 2–1000.
    #[arg(long, env = sqskit::flow::breaker_env::WINDOW, default_value_t = 20, value_name = "N",
          value_parser = args::count(2..=1000), help_heading = "Flow control")]
    pub breaker_window: usize,
    /// Breaker: percentage of them failing retryably that opens it, 1–100 (80: 16 of 20; a
    /// 10 % random failure rate never gets there).
    #[arg(long, env = sqskit::flow::breaker_env::FAILURE_RATE, default_value_t = 80, value_name = "PCT",
          value_parser = clap::value_parser!(u8).range(1..=100), help_heading = "Flow control")]
    pub breaker_failure_rate: u8,
    /// Breaker: seconds before the first probe (1–3600); each failed probe doubles it.
    #[arg(long, env = sqskit::flow::breaker_env::PROBE_INTERVAL, default_value_t = 1, value_name = "SECONDS",
          value_parser = args::secs(1..=3600), help_heading = "Flow control")]
    pub breaker_probe_interval: u64,
    /// Breaker: longest time between probes in seconds (1–3600, at least the first interval).
    #[arg(long, env = sqskit::flow::breaker_env::PROBE_MAX, default_value_t = 30, value_name = "SECONDS",
          value_parser = args::secs(1..=3600), help_heading = "Flow control")]
    pub breaker_probe_max: u64,
    /// Breaker: successful probes in a row that close it (1–100).
    #[arg(long, env = sqskit::flow::breaker_env::CLOSE_AFTER, default_value_t = 3, value_name = "N",
          value_parser = args::count(1..=100), help_heading = "Flow control")]
    pub breaker_close_after: usize,
    /// Breaker: the longest outage it holds messages back for, in seconds (1–1209600, 14 days;
    /// default 86400, a day); after it, messages follow the normal rules (retries, then the DLQ).
    #[arg(long, env = sqskit::flow::breaker_env::MAX_OUTAGE, default_value_t = 86_400, value_name = "SECONDS",
          value_parser = args::secs(1..=1_209_600), help_heading = "Flow control")]
    pub breaker_max_outage: u64,
    /// Breaker: probe the downstream with `GET URL` (healthy: 2xx) while half-open, instead of
    /// with one message at a time. With --http.
    #[arg(long, env = "SQSKIT_PROBE_URL", value_parser = args::http_url, help_heading = "Flow control")]
    pub probe_url: Option<String>,
    /// Seconds between reads of each queue's pause flag (`sqskit pause`), 0–3600; 0 = never.
    /// Every read is one ListQueueTags call: 120 an hour per queue at the default 30.
    #[arg(long, env = "SQSKIT_PAUSE_CHECK", default_value_t = 30, value_name = "SECONDS",
          value_parser = args::secs(0..=3600), help_heading = "Flow control")]
    pub pause_check: u64,
    /// Visibility timeout requested on receive, in seconds (1–43200); the heartbeat extends it while a handler runs.
    #[arg(long, env = "SQSKIT_VISIBILITY_TIMEOUT", default_value_t = 30, value_parser = args::secs(1..=TWELVE_HOURS))]
    pub visibility_timeout: u64,
    /// Longest total invisibility since receipt the heartbeat may give a message, in seconds (0–43200).
    #[arg(long, env = "SQSKIT_MAX_VISIBILITY_EXTENSION", default_value_t = 3600, value_parser = args::secs(0..=TWELVE_HOURS))]
    pub max_visibility_extension: u64,
    /// Backoff base for retryable failures, in seconds (0–43200): the delay after receive n is
    /// between half and all of base × 2^(n−1), capped by --backoff-max (see README "Reliability").
    #[arg(long, env = "SQSKIT_BACKOFF_BASE", default_value_t = 15, value_parser = args::secs(0..=TWELVE_HOURS))]
    pub backoff_base: u64,
    /// Backoff cap, in seconds (0–43200).
    #[arg(long, env = "SQSKIT_BACKOFF_MAX", default_value_t = 900, value_parser = args::secs(0..=TWELVE_HOURS))]
    pub backoff_max: u64,
    /// Seconds running handlers get to finish after SIGTERM, 0–43200 (keep it below ECS's stopTimeout).
    #[arg(long, env = "SQSKIT_SHUTDOWN_TIMEOUT", default_value_t = 25, value_parser = args::secs(0..=TWELVE_HOURS))]
    pub shutdown_timeout: u64,
    /// Per-message handler timeout in seconds, 1–43200 (overrun = retryable failure); none by default.
    #[arg(long, env = "SQSKIT_HANDLER_TIMEOUT", value_parser = args::secs(1..=TWELVE_HOURS))]
    pub handler_timeout: Option<u64>,
    /// Long-poll wait in seconds (0–20).
    #[arg(long, env = "SQSKIT_WAIT_TIME", default_value_t = 20, value_parser = args::secs(0..=20))]
    pub wait_time: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9090), health at
    /// /healthz (liveness) and /readyz (readiness), and the poller's state as JSON at /status
    /// (what `sqskit console --poller` shows); off by default. `sqskit health --addr` checks them.
    #[arg(long, env = "SQSKIT_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Longest delay hop in seconds when re-sending a message that is not due yet (sent with
    /// `sqskit send --delay/--deliver-at` or `Queue::send_at`); 1–900, default 900.
    #[arg(long, env = "SQSKIT_DELAY_HOP", default_value_t = 900, value_parser = args::secs(1..=900),
          value_name = "SECONDS", help_heading = "Flow control")]
    pub delay_hop: u64,
    /// Messages received ahead of free handler slots, so a slot that frees up starts the next
    /// message without waiting for a receive (default: 10 per receiver; 0 = off; at most
    /// 100000). They are in flight: heart-beaten, and released at shutdown without running.
    #[arg(long, env = "SQSKIT_PREFETCH", value_name = "N", help_heading = "Flow control",
          value_parser = args::count(0..=100_000))]
    pub prefetch: Option<usize>,
    /// Fair queues (standard queues whose messages carry a MessageGroupId naming a tenant):
    /// count messages per tenant and outcome (sqskit_tenant_messages_total), with labels of
    /// their own for the first N tenants seen and `other` for the rest. 0 = off; at most 10000.
    #[arg(long, env = "SQSKIT_TENANT_METRICS", default_value_t = 0, value_name = "N", requires = "metrics_addr",
          value_parser = args::count(0..=10_000))]
    pub tenant_metrics: usize,
    /// Start at most N messages per second, over all queues (e.g. 50, or 0.5 for one every
    /// 2 s; 0.001–100000). Receives are sized so that nothing waits invisible for its turn for long.
    #[arg(long, env = "SQSKIT_RATE", value_name = "N", value_parser = args::rate, help_heading = "Flow control")]
    pub rate: Option<f64>,
    /// Start at most N messages per second from each queue (with --rate, both hold).
    #[arg(long, env = "SQSKIT_RATE_PER_QUEUE", value_name = "N", value_parser = args::rate, help_heading = "Flow control")]
    pub rate_per_queue: Option<f64>,
    /// Liveness: SQS must have answered a receive within 2 × --wait-time + this many seconds
    /// (0–3600; unless every slot is busy or the poller drains).
    #[arg(long, env = "SQSKIT_LIVENESS_MARGIN", default_value_t = 10, value_parser = args::secs(0..=3600))]
    pub liveness_margin: u64,
    /// DLQ for permanent failures when the queue's redrive policy names none.
    #[arg(long, env = "SQSKIT_DLQ_URL")]
    pub dlq_url: Option<String>,
    /// Handler: POST each message to this URL (Elastic Beanstalk worker / sqsd style); an
    /// http(s) URL with a host.
    #[arg(long, env = "SQSKIT_HTTP", value_parser = args::http_url)]
    pub http: Option<String>,
    /// Timeout of each --http request, in seconds (1–43200).
    #[arg(long, env = "SQSKIT_HTTP_TIMEOUT", default_value_t = 30, value_parser = args::secs(1..=TWELVE_HOURS))]
    pub http_timeout: u64,
    /// Handler: run this command per message (split like a shell would), body on stdin.
    /// Exit 0 = success, 65 = permanent failure (DLQ), other = retry. Checked at start-up,
    /// before any receive: the program must be found (PATH) and executable, with its #!
    /// interpreter; for `sh -c SCRIPT` the script's first command too, when it is a plain
    /// program. Environment: SQSKIT_MESSAGE_ID, SQSKIT_QUEUE_URL, SQSKIT_RECEIVE_COUNT,
    /// SQSKIT_GROUP_ID, …, SQSKIT_ATTRIBUTES (every String and Number attribute as a JSON
    /// object under its exact name) and SQSKIT_ATTR_<NAME> per attribute (upper-cased, other
    /// characters as _; not set when two attributes map to the same name: read those from
    /// SQSKIT_ATTRIBUTES).
    #[arg(long, env = "SQSKIT_EXEC", value_parser = args::exec)]
    pub exec: Option<String>,
    /// The bodies come in this envelope: the handler gets the payload inside (sns: the
    /// notification's Message; eventbridge: the event's detail; s3: each record of an S3 event
    /// notification, one handler call per record, s3:TestEvent settled without a call;
    /// cloudevents: the CloudEvent's data or data_base64) and the envelope's metadata in
    /// SQSKIT_<NAME> variables (--exec: SQSKIT_ENVELOPE, SQSKIT_SNS_TOPIC_ARN, SQSKIT_SNS_SUBJECT,
    /// SQSKIT_EVENT_TYPE, SQSKIT_EVENT_SOURCE, SQSKIT_S3_BUCKET, SQSKIT_S3_KEY, …) or
    /// X-Sqskit-<Name> headers (--http: X-Sqskit-Sns-Topic-Arn, X-Sqskit-Event-Type, …). A
    /// body that is not this envelope is dead-lettered as undecodable, the error naming the
    /// missing field.
    #[arg(long, env = "SQSKIT_ENVELOPE", value_name = "sns|eventbridge|s3|cloudevents",
          value_parser = args::envelope, help_heading = "Messages from other services")]
    pub envelope: Option<sqskit::envelope::EnvelopeKind>,
    /// Validate each payload (inside the envelope, if any) against this JSON Schema (2020-12
    /// unless its $schema names another draft) before the handler runs: one that fails is
    /// dead-lettered as permanent with the failing keyword and path (never the value). The file
    /// is read and compiled at start-up.
    #[arg(long, env = "SQSKIT_SCHEMA", value_name = "FILE", value_parser = args::schema,
          help_heading = "Messages from other services")]
    pub schema: Option<sqskit::schema::Schema>,
    /// Exit by itself once the queues are empty (nothing visible, in flight or delayed).
    #[arg(long, env = "SQSKIT_UNTIL_EMPTY")]
    pub until_empty: bool,
    /// Put full decoding errors (which may quote the body) in logs and DLQ attributes.
    #[arg(long, env = "SQSKIT_LOG_BODIES")]
    pub log_bodies: bool,
    /// Idempotency: claim each message's key in this DynamoDB table before its handler runs
    /// (Powertools' record layout; hash key `id`, TTL on `expiration`).
    #[arg(long, env = "SQSKIT_IDEMPOTENCY_TABLE", conflicts_with = "idempotency_redis", help_heading = "Idempotency")]
    pub idempotency_table: Option<String>,
    /// Idempotency: keep claims in this Redis (redis://host:port/db).
    #[arg(long, env = "SQSKIT_IDEMPOTENCY_REDIS", help_heading = "Idempotency")]
    pub idempotency_redis: Option<String>,
    /// Where the key comes from: a JSON Pointer into the body (/order_id; RFC 6901: `~0` is
    /// `~`, `~1` is `/`), a message attribute (attr:NAME) or the whole body (body, the default).
    #[arg(long, env = "SQSKIT_IDEMPOTENCY_KEY", value_parser = parse_key, help_heading = "Idempotency")]
    pub idempotency_key: Option<String>,
    /// Key prefix (keys are PREFIX#md5); Powertools' `key_prefix`.
    #[arg(long, env = "SQSKIT_IDEMPOTENCY_PREFIX", default_value = "sqskit", help_heading = "Idempotency")]
    pub idempotency_prefix: String,
    /// Seconds a completed key keeps later copies from running (1 to 315360000, 10 years).
    #[arg(long, env = "SQSKIT_IDEMPOTENCY_TTL", default_value_t = 3600,
          value_parser = args::secs(1..=sqskit::idempotency::MAX_TTL.as_secs()), help_heading = "Idempotency")]
    pub idempotency_ttl: u64,
    /// Run the handler without a claim when the store fails (default: retry the message).
    #[arg(long, env = "SQSKIT_IDEMPOTENCY_FAIL_OPEN", help_heading = "Idempotency")]
    pub idempotency_fail_open: bool,
    /// Claim check: the payload bucket, needed for --payload-cleanup. Messages whose body is in
    /// S3 (Amazon SQS Extended Client pointers) are resolved with or without it: each pointer
    /// names its own bucket (needs s3:GetObject on it).
    #[arg(long, env = "SQSKIT_PAYLOAD_BUCKET", help_heading = "Large payloads")]
    pub payload_bucket: Option<String>,
    /// Delete a claim-checked message's S3 object once its delete from the queue succeeded
    /// (never for dead-lettered ones). Needs s3:DeleteObject.
    #[arg(long, env = "SQSKIT_PAYLOAD_CLEANUP", requires = "payload_bucket", help_heading = "Large payloads")]
    pub payload_cleanup: bool,
    /// Seconds between progress log lines (0 = none; at most 86400).
    #[arg(long, env = "SQSKIT_PROGRESS_INTERVAL", default_value_t = 10, value_parser = args::secs(0..=86_400))]
    pub progress_interval: u64,
}

/// `--concurrency`: a fixed number of handlers, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    Fixed(usize),
    Auto,
}

fn parse_concurrency(s: &str) -> Result<Concurrency, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Concurrency::Auto);
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(Concurrency::Fixed(n)),
        _ => Err(format!("{s:?}: expected a whole number from 1 to 100000, or auto")),
    }
}

fn on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        other => Err(format!("{other:?}: expected on or off")),
    }
}

impl Args {
    /// What clap cannot check alone (a usage error, exit 2).
    pub fn validate(&self) -> Result<(), String> {
        if self.probe_url.is_some() && self.http.is_none() {
            return Err("--probe-url needs --http (it probes the --http downstream)".into());
        }
        if self.breaker_probe_max < self.breaker_probe_interval {
            return Err(format!(
                "--breaker-probe-max {} is below --breaker-probe-interval {}",
                self.breaker_probe_max, self.breaker_probe_interval
            ));
        }
        if self.concurrency == Concurrency::Auto && self.min_concurrency > self.max_concurrency {
            return Err(format!(
                "--min-concurrency {} is above --max-concurrency {}",
                self.min_concurrency, self.max_concurrency
            ));
        }
        Ok(())
    }

    /// The handler slots: the fixed number, or auto's ceiling.
    fn slots(&self) -> usize {
        match self.concurrency {
            Concurrency::Fixed(n) => n,
            Concurrency::Auto => self.max_concurrency,
        }
    }

    fn breaker(&self) -> Option<sqskit::flow::BreakerConfig> {
        self.breaker.then(|| {
            sqskit::flow::BreakerConfig::default()
                .with_window(self.breaker_window)
                .with_failure_rate(self.breaker_failure_rate)
                .with_probe_intervals(
                    Duration::from_secs(self.breaker_probe_interval),
                    Duration::from_secs(self.breaker_probe_max),
                )
                .with_close_after(self.breaker_close_after)
                .with_max_outage(Duration::from_secs(self.breaker_max_outage))
        })
    }
}

fn parse_key(s: &str) -> Result<String, String> {
    sqskit::idempotency::KeySource::<()>::parse(s).map(|_| s.to_string())
}

fn parse_spec(s: &str) -> Result<QueueArg, String> {
    QueueSpec::parse_url(s).map(|(url, weight)| QueueArg { url, weight }).map_err(|e| e.to_string())
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let health = std::sync::Arc::new(sqskit::health::Health::default());
    let board = std::sync::Arc::new(sqskit::status::StatusBoard::new(env!("CARGO_PKG_VERSION"), health.clone()));
    if let Some(addr) = args.metrics_addr {
        sqskit::metrics::install_prometheus_with_status(addr, board.clone())?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics, health at /healthz and /readyz, state at /status");
    }
    let config = aws_config(global).await?;
    let client = aws_sdk_sqs::Client::new(&config);
    let processor_config = ProcessorConfig::default()
        .with_backoff(
            Backoff::default()
                .with_base(Duration::from_secs(args.backoff_base))
                .with_max(Duration::from_secs(args.backoff_max)),
        )
        .with_timeout(args.handler_timeout.map(Duration::from_secs))
        .with_concurrency(args.slots())
        .with_log_bodies(args.log_bodies);
    let probe = match &args.probe_url {
        Some(url) => Some(sqskit::handlers::http_probe(url.clone(), Duration::from_secs(args.http_timeout))?),
        None => None,
    };
    let mut poller_config = PollerConfig::default()
        .with_concurrency(args.slots())
        .with_breaker(args.breaker())
        .with_probe(probe)
        .with_pause_check(Duration::from_secs(args.pause_check))
        .with_visibility_timeout(Duration::from_secs(args.visibility_timeout))
        .with_max_visibility_extension(Duration::from_secs(args.max_visibility_extension))
        .with_wait_time(Duration::from_secs(args.wait_time))
        .with_liveness_margin(Duration::from_secs(args.liveness_margin))
        .with_rate(args.rate)
        .with_tenant_metrics(args.tenant_metrics)
        .with_prefetch(args.prefetch)
        .with_health(health)
        .with_shutdown_timeout(Duration::from_secs(args.shutdown_timeout))
        .with_until_empty(args.until_empty)
        .with_dead_letter_url(args.dlq_url.clone());
    if args.concurrency == Concurrency::Auto {
        poller_config = poller_config.with_adaptive_concurrency(args.min_concurrency, args.max_concurrency);
    }
    let s3 = sqskit::payload::s3_client(&config);
    let claim_check = args
        .payload_bucket
        .as_ref()
        .map(|bucket| sqskit::payload::ClaimCheck::new(s3.clone(), bucket).with_cleanup(args.payload_cleanup));
    // pointers are resolved with or without a bucket (each names its own): never handed to the handler
    let resolver = claim_check.clone().unwrap_or_else(|| sqskit::payload::ClaimCheck::reader(s3));
    let queues: Vec<QueueSpec> = args
        .queue_urls
        .iter()
        .map(|s| {
            // the delay hop's and the claim check's home: the queue (the processor re-sends
            // hops and resolves pointers with those of the queue it consumes)
            let queue = Queue::new(client.clone(), s.url.clone()).with_delay_hop(Duration::from_secs(args.delay_hop));
            let queue = queue.with_claim_check(resolver.clone());
            QueueSpec::new(queue).with_weight(s.weight).with_rate(args.rate_per_queue)
        })
        .collect();
    let first = &args.queue_urls[0].url;
    let processor = if let Some(url) = &args.http {
        let name = first.rsplit('/').next().unwrap_or_default();
        Processor::raw(HttpHandler::new(url.clone(), Duration::from_secs(args.http_timeout), name)?)
    } else {
        let line = args.exec.as_deref().unwrap_or_default();
        let words = shlex::split(line).with_context(|| format!("--exec {line:?} is not valid shell syntax"))?;
        Processor::raw(ExecHandler::new(words, first.clone())?)
    }
    .with_config(processor_config);
    let processor = match args.envelope {
        Some(kind) => processor.with_envelope(kind),
        None => processor,
    };
    let processor = match args.schema.clone() {
        Some(schema) => processor.with_schema(schema),
        None => processor,
    };
    let mut idempotency = IdempotencySettings::default();
    idempotency.table = args.idempotency_table.clone();
    idempotency.redis = args.idempotency_redis.clone();
    idempotency.key = args.idempotency_key.clone();
    idempotency.prefix = Some(args.idempotency_prefix.clone());
    idempotency.ttl = Some(Duration::from_secs(args.idempotency_ttl));
    idempotency.fail_open = args.idempotency_fail_open;
    let processor = match idempotency.build().await.context("idempotency settings")? {
        Some(idem) => {
            tracing::info!(store = idem.store().kind(), prefix = %args.idempotency_prefix, "idempotency on");
            processor.with_idempotency(idem)
        }
        None => processor,
    };
    let poller = Poller::new(processor, queues, poller_config).await.context("starting the poller")?;
    let stats = poller.stats();
    board.attach(
        stats.clone(),
        args.queue_urls.iter().map(|q| q.url.rsplit('/').next().unwrap_or(&q.url).to_string()).collect(),
    );
    let progress = tokio::spawn(report_progress(stats.clone(), args.progress_interval));
    let summary = poller.run(sqskit::shutdown_signal()).await;
    progress.abort();
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

async fn report_progress(stats: std::sync::Arc<PollStats>, every: u64) {
    if every == 0 {
        return;
    }
    let mut last = stats.snapshot();
    loop {
        tokio::time::sleep(Duration::from_secs(every)).await;
        let now = stats.snapshot();
        if now != last {
            tracing::info!(
                received = now.received,
                succeeded = now.succeeded,
                duplicates = now.duplicates,
                retried = now.retried,
                dead_lettered = now.dead_lettered,
                in_flight = now.in_flight,
                rate_per_s = (now.succeeded - last.succeeded) as f64 / every as f64,
                "progress"
            );
            last = now;
        }
    }
}
