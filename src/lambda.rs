//! The Lambda adapter: `SqsEvent` in, the processor in the middle, `SqsBatchResponse` out.
//!
//! It owns the mapping between Lambda's SQS event source and the processor: records
//! become [`ReceivedMessage`]s, decisions become `batchItemFailures`. It does not
//! decide anything itself.
//!
//! - Successes are omitted (Lambda deletes them).
//! - Retryable failures are listed; on standard queues their visibility is also set to
//!   the processor's backoff (best effort), so retries back off instead of waiting the
//!   queue's fixed visibility timeout.
//! - Permanent failures are sent to the DLQ **by the function** and then reported as
//!   success (Lambda deletes them from the source). When no DLQ is known (no
//!   `SQSKIT_DLQ_URL` and no redrive policy readable) or the send fails, they are
//!   reported as failures instead, so nothing is lost; the redrive policy moves them later.
//! - FIFO (decided from the event source ARN / the queue, never from a message's
//!   `MessageGroupId`, which standard fair queues carry as a tenant id): messages are
//!   processed strictly in batch order; the first failure and every message after it are
//!   listed. A dead letter is confirmed by the DLQ before the next message starts; when the
//!   send fails, the rest are not run at all (so nothing that succeeded is run again).
//! - Deadline: given the invocation's deadline ([`LambdaAdapter::handle_with_deadline`]), the
//!   answer goes out before it, listing every message not finished. Once less than the safety
//!   margin remains (default 10 % of the time left when the invocation began, between 2 and
//!   10 s; `SQSKIT_DEADLINE_MARGIN` seconds, 1 to 900) no message is started and the handlers
//!   still running are cancelled: their futures are dropped (an `--exec` command's process group
//!   is killed, an HTTP request is abandoned), their idempotency claims released, and they are
//!   listed (kind `timeout`; the unstarted ones `released`). When half the margin remains the
//!   adapter answers whatever is left unfinished (a message stuck outside its handler, e.g. in
//!   an idempotency store call, is listed as `abandoned`; its claim lapses at the deadline).
//!   FIFO: the first of them and every later message are listed.
//! - Concurrent invocations (Lambda Managed Instances, `AWS_LAMBDA_MAX_CONCURRENCY` > 1): one
//!   adapter serves them all; each invocation has its own deadline, cut and counts, and only
//!   the queue lookups and the in-process idempotency holds are shared.
//! - A record without a `messageId` cannot be reported individually: the whole
//!   invocation fails, and Lambda retries the batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::client::Queue;
use crate::error::Error;
use crate::idempotency::{IdempotencyCounts, Lease};
use crate::message::{AttributeValue, ReceivedMessage};
use crate::processor::{Decision, Drive, Outcome, Processor, QueueContext, Sequence};
use crate::settle::Actions;

pub use aws_lambda_events;
pub use lambda_runtime;

/// The error `lambda_runtime` expects from a function (any boxed error).
pub type BoxError = lambda_runtime::Error;

/// Run an SQS-triggered Lambda function whose handler is `processor`'s: JSON logs, settings from
/// the environment, each invocation's deadline, partial batch responses, one EMF metrics line
/// per invocation. Returns when the runtime stops.
///
/// Settings: [`config::processor_from_env`](crate::config::processor_from_env) (`SQSKIT_BACKOFF_BASE`,
/// `SQSKIT_BACKOFF_MAX`, `SQSKIT_HANDLER_TIMEOUT`, `SQSKIT_LOG_BODIES`) replace the processor's,
/// and [`LambdaAdapter::from_env`] reads `SQSKIT_QUEUE_URL`, `SQSKIT_DLQ_URL`,
/// `SQSKIT_MAX_RECEIVE_COUNT`, `SQSKIT_DEADLINE_MARGIN`, the idempotency settings
/// (`SQSKIT_IDEMPOTENCY_*`) and, with the `payload` feature, `SQSKIT_PAYLOAD_*`. For full control
/// build a [`LambdaAdapter`] and call [`run_adapter`].
///
/// # Errors
/// A [`ConfigError`](crate::config::ConfigError) naming the variable at fault, or what the
/// Lambda runtime reports.
///
/// # Example
/// ```no_run
/// use sqskit::{HandlerError, Message, Processor};
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// async fn handle(order: Message<Order>) -> Result<(), HandlerError> {
///     tracing::info!(order = order.body.id, "charging");
///     Ok(())
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), sqskit::lambda::BoxError> {
///     sqskit::lambda::run(Processor::json(handle)).await
/// }
/// ```
pub async fn run<T: Send + 'static>(processor: Processor<T>) -> Result<(), BoxError> {
    // boxed: the runtime's future is deep, and a user's `main` should not need a recursion limit
    Box::pin(async move {
        init_logging();
        let config = crate::config::processor_from_env()?;
        let processor = processor.with_config(config);
        run_adapter(LambdaAdapter::from_env(processor).await?).await
    })
    .await
}

/// Run the Lambda runtime over an adapter you built: each invocation's deadline goes to
/// [`LambdaAdapter::handle_with_deadline`]; its EMF line is printed to stdout. Does not set up
/// logging (see [`init_logging`]).
///
/// With `AWS_LAMBDA_MAX_CONCURRENCY` above 1 (Lambda Managed Instances, where one execution
/// environment serves several invocations at once) it takes that many invocations at a time
/// (`lambda_runtime`'s concurrent mode), all through this one adapter; unset or 1, one at a time.
///
/// # Errors
/// A [`ConfigError`](crate::config::ConfigError) when `AWS_LAMBDA_MAX_CONCURRENCY` is not a
/// whole number from 1 to [`MAX_CONCURRENCY`] (see [`max_concurrency_from_env`]), or what the
/// Lambda runtime reports.
pub async fn run_adapter<T: Send + 'static>(adapter: LambdaAdapter<T>) -> Result<(), BoxError> {
    let concurrency = max_concurrency_from_env()?;
    if concurrency > 1 {
        tracing::info!(concurrency, "serving concurrent invocations (AWS_LAMBDA_MAX_CONCURRENCY)");
    }
    let adapter = Arc::new(adapter);
    let function = crate::env::raw("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "sqskit".into());
    let service = lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<SqsEvent>| {
        let (adapter, function) = (adapter.clone(), function.clone());
        async move {
            let deadline = event.context.deadline();
            let (response, summary) = adapter.handle_with_deadline(event.payload, Some(deadline)).await?;
            println!("{}", summary.emf_line(&function));
            Ok::<_, BoxError>(response)
        }
    });
    // sequential when the variable is unset or 1, as `lambda_runtime::run` is
    Box::pin(lambda_runtime::run_concurrent(service)).await
}

/// The largest `AWS_LAMBDA_MAX_CONCURRENCY` accepted: Lambda's limit on
/// `PerExecutionEnvironmentMaxConcurrency` (Lambda Managed Instances).
pub const MAX_CONCURRENCY: u32 = 1600;

/// How many invocations one execution environment serves at once: `AWS_LAMBDA_MAX_CONCURRENCY`
/// (set by Lambda Managed Instances), 1 when unset or empty.
///
/// # Errors
/// A [`ConfigError`](crate::config::ConfigError) naming the variable when it is not a whole
/// number from 1 to [`MAX_CONCURRENCY`].
///
/// # Example
/// ```
/// // outside Lambda Managed Instances the variable is unset: one invocation at a time
/// # if std::env::var_os("AWS_LAMBDA_MAX_CONCURRENCY").is_none() {
/// assert_eq!(sqskit::lambda::max_concurrency_from_env().unwrap(), 1);
/// # }
/// ```
pub fn max_concurrency_from_env() -> Result<u32, crate::config::ConfigError> {
    parse_max_concurrency(crate::env::raw("AWS_LAMBDA_MAX_CONCURRENCY").as_deref())
}

fn parse_max_concurrency(value: Option<&str>) -> Result<u32, crate::config::ConfigError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else { return Ok(1) };
    // exactly what `lambda_runtime` parses (no spaces), so that both read the same number
    match v.parse::<u32>() {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(crate::config::ConfigError {
            name: "AWS_LAMBDA_MAX_CONCURRENCY",
            value: v.to_string(),
            reason: format!("expected a whole number from 1 to {MAX_CONCURRENCY}"),
        }),
    }
}

/// The shortest deadline margin: half of it is what the answer has to reach Lambda.
pub const MIN_DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// The longest `SQSKIT_DEADLINE_MARGIN` (seconds): Lambda's longest timeout, 15 minutes.
pub const MAX_DEADLINE_MARGIN_SECS: u64 = 900;

/// The default margin for an invocation with `left` to go: 10 %, between 2 and 10 s.
fn default_margin(left: Duration) -> Duration {
    (left / 10).clamp(Duration::from_secs(2), Duration::from_secs(10))
}

/// When an invocation stops starting messages and cancels its running handlers (`cut`: the
/// margin before the deadline), and when it answers whatever is still unfinished (`answer`:
/// half the margin before it).
#[derive(Debug, Clone, Copy)]
struct Cutoff {
    cut: tokio::time::Instant,
    answer: tokio::time::Instant,
}

impl Cutoff {
    fn new(deadline: SystemTime, margin: Option<Duration>) -> Self {
        // no invocation lasts a day: a later deadline is as good as none, and the sums stay small
        let left = deadline.duration_since(SystemTime::now()).unwrap_or_default().min(Duration::from_secs(86_400));
        let margin = margin.unwrap_or_else(|| default_margin(left));
        let now = tokio::time::Instant::now();
        Self { cut: now + left.saturating_sub(margin), answer: now + left.saturating_sub(margin / 2) }
    }
}

/// JSON logs for a Lambda function (to stdout, as CloudWatch Logs expects; no time stamps, no
/// colours; the runtime's span adds the request id). Filter with `RUST_LOG` (default `info`).
/// Does nothing when a subscriber is already installed.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(true)
        .with_ansi(false)
        .without_time()
        .try_init();
}

/// Counts of one invocation, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    /// Records in the event.
    pub records: usize,
    /// Handled successfully.
    pub succeeded: usize,
    /// Sent to the DLQ by the function.
    pub dead_lettered: usize,
    /// Duplicates of completed messages, not run (idempotency).
    pub duplicates: usize,
    /// Not due yet: re-sent with their next delay hop, not run (see [`crate::delay`]).
    pub deferred: usize,
    /// Idempotency checks of this invocation.
    pub idempotency: IdempotencyCounts,
    /// Failures by kind (`retryable`, `panic`, `timeout` — also a handler cancelled at the
    /// deadline margin —, `permanent`, `undecodable`, `held`, `released` for messages not
    /// started because the deadline was near, `abandoned` for those the invocation answered
    /// without, stuck outside their handlers).
    pub failed: HashMap<&'static str, usize>,
    /// Wall time of the invocation in milliseconds.
    pub duration_ms: u64,
}

impl BatchSummary {
    /// One CloudWatch EMF line (namespace `sqskit`, dimension `Function`): `Records`,
    /// `Succeeded`, `DeadLettered`, `Duplicates`, `Failed`, `Failed_<kind>` per kind,
    /// `Idempotency_<result>` per idempotency result met, `DurationMs`.
    pub fn emf_line(&self, function: &str) -> String {
        let mut kinds: Vec<(String, f64)> =
            self.failed.iter().map(|(k, n)| (format!("Failed_{k}"), *n as f64)).collect();
        let i = &self.idempotency;
        for (name, n) in [
            ("claimed", i.claimed),
            ("duplicate", i.duplicate),
            ("in_progress", i.in_progress),
            ("reuse", i.reuse),
            ("store_error", i.store_error),
        ] {
            if n > 0 {
                kinds.push((format!("Idempotency_{name}"), n as f64));
            }
        }
        let mut metrics: Vec<(&str, f64, &str)> = vec![
            ("Records", self.records as f64, "Count"),
            ("Succeeded", self.succeeded as f64, "Count"),
            ("DeadLettered", self.dead_lettered as f64, "Count"),
            ("Duplicates", self.duplicates as f64, "Count"),
            ("Failed", self.failed.values().sum::<usize>() as f64, "Count"),
            ("DurationMs", self.duration_ms as f64, "Milliseconds"),
        ];
        metrics.extend(kinds.iter().map(|(k, v)| (k.as_str(), *v, "Count")));
        crate::metrics::emf_line("sqskit", &[("Function", function)], &metrics, crate::metrics::now_ms())
    }
}

/// Runs SQS events through a [`Processor`].
///
/// # Example
/// ```no_run
/// use sqskit::{lambda::LambdaAdapter, HandlerError, Message, Processor};
/// # async fn demo(event: aws_lambda_events::event::sqs::SqsEvent) -> Result<(), Box<dyn std::error::Error>> {
/// let adapter = LambdaAdapter::from_env(Processor::json(|m: Message<serde_json::Value>| async move {
///     if m.body.get("id").is_none() { return Err(HandlerError::permanent("no id")); }
///     Ok(())
/// })).await?;
/// let (response, _summary) = adapter.handle(event).await?;
/// println!("{}", serde_json::to_string(&response).unwrap());
/// # Ok(()) }
/// ```
pub struct LambdaAdapter<T> {
    processor: Processor<T>,
    client: aws_sdk_sqs::Client,
    fixed: Option<QueueContext>,
    contexts: tokio::sync::Mutex<HashMap<String, QueueContext>>,
    backoff_visibility: bool,
    deadline_margin: Option<Duration>,
    /// The claim check of the queues it serves (their contexts' queues get it).
    #[cfg(feature = "payload")]
    claim_check: Option<crate::payload::ClaimCheck>,
}

impl<T: Send + 'static> LambdaAdapter<T> {
    /// An adapter that discovers each event source's queue and DLQ (`GetQueueUrl`,
    /// `GetQueueAttributes`) on first use and caches them.
    pub fn new(processor: Processor<T>, client: aws_sdk_sqs::Client) -> Self {
        Self {
            processor,
            client,
            fixed: None,
            contexts: Default::default(),
            backoff_visibility: true,
            deadline_margin: None,
            #[cfg(feature = "payload")]
            claim_check: None,
        }
    }

    /// From the environment: the SDK config from the standard chain; `SQSKIT_QUEUE_URL`,
    /// `SQSKIT_DLQ_URL` and `SQSKIT_MAX_RECEIVE_COUNT`, when set, describe the source queue,
    /// its DLQ and its redrive policy's `maxReceiveCount` (no discovery calls for events from
    /// that queue; events from any other queue are discovered); `SQSKIT_DEADLINE_MARGIN`
    /// (seconds, 1 to 900) overrides the deadline safety margin. With the `payload` feature the
    /// queues it serves resolve claim-checked messages (each pointer names its bucket; see
    /// [`LambdaAdapter::with_claim_check`]) unless the processor or a queue has a claim check
    /// already: through `SQSKIT_PAYLOAD_BUCKET` (and `SQSKIT_PAYLOAD_*`, see
    /// [`ClaimCheck::from_env`](crate::payload::ClaimCheck::from_env)) when set, else a
    /// [`ClaimCheck::reader`](crate::payload::ClaimCheck::reader). Cleanup does not apply in
    /// Lambda: the event source mapping deletes the messages after the function returned.
    /// Unless the processor has idempotency already,
    /// [`IdempotencySettings::from_env`](crate::config::IdempotencySettings::from_env) adds it
    /// (`SQSKIT_IDEMPOTENCY_TABLE` or `_REDIS`, `_KEY`, `_PREFIX`, `_TTL`); claims lapse at each
    /// invocation's deadline.
    ///
    /// # Errors
    /// [`crate::env::ConfigError`] naming a variable that is set to something unusable.
    pub async fn from_env(processor: Processor<T>) -> Result<Self, crate::env::ConfigError> {
        let config = crate::env::load_aws_config().await;
        let client = aws_sdk_sqs::Client::new(&config);
        let processor = match crate::config::IdempotencySettings::from_env()?.build().await? {
            Some(idem) if processor.idempotency().is_none() => processor.with_idempotency(idem),
            _ => processor,
        };
        let mut adapter = Self::new(processor, client.clone());
        // pointers name their own bucket: they are resolved with or without SQSKIT_PAYLOAD_BUCKET
        #[cfg(feature = "payload")]
        {
            let check = match crate::payload::ClaimCheck::from_env(&config)? {
                Some(check) => check,
                None => crate::payload::ClaimCheck::reader(crate::payload::s3_client(&config)),
            };
            adapter = adapter.with_claim_check(check);
        }
        if let Some(url) = crate::env::raw("SQSKIT_QUEUE_URL") {
            let dlq =
                crate::env::raw("SQSKIT_DLQ_URL").filter(|u| !u.is_empty()).map(|u| Queue::new(client.clone(), u));
            let max = crate::env::env_count("SQSKIT_MAX_RECEIVE_COUNT", 0)?;
            let max = u32::try_from(max).ok().filter(|m| *m > 0);
            adapter.fixed = Some(QueueContext::new(Queue::new(client, url), dlq).with_max_receive_count(max));
        }
        if crate::env::text("SQSKIT_DEADLINE_MARGIN").is_some() {
            let secs = crate::env::env_secs("SQSKIT_DEADLINE_MARGIN", 0)?;
            if !(MIN_DEADLINE_MARGIN.as_secs()..=MAX_DEADLINE_MARGIN_SECS).contains(&secs) {
                return Err(crate::config::ConfigError {
                    name: "SQSKIT_DEADLINE_MARGIN",
                    value: secs.to_string(),
                    reason: format!(
                        "expected {} to {MAX_DEADLINE_MARGIN_SECS} seconds (half of it is left for the answer)",
                        MIN_DEADLINE_MARGIN.as_secs()
                    ),
                });
            }
            adapter.deadline_margin = Some(Duration::from_secs(secs));
        }
        Ok(adapter)
    }

    /// Once less than `margin` is left before the deadline, start no more messages and cancel
    /// the handlers still running; answer when half of it is left (default: 10 % of the time
    /// left when the invocation began, between 2 and 10 s; at least [`MIN_DEADLINE_MARGIN`]).
    /// A margin longer than the invocation starts nothing.
    pub fn with_deadline_margin(mut self, margin: Duration) -> Self {
        self.deadline_margin = Some(margin.max(MIN_DEADLINE_MARGIN));
        self
    }

    /// Use this queue context for events from its queue (and events without a source ARN)
    /// instead of discovering it.
    pub fn with_context(mut self, ctx: QueueContext) -> Self {
        self.fixed = Some(ctx);
        self
    }

    /// Resolve claim-checked messages (Amazon SQS Extended Client pointers) with `check`: it
    /// becomes the claim check of the queues this adapter serves (the queue is the claim
    /// check's home, see [`Queue::with_claim_check`]), unless a queue has one already.
    #[cfg(feature = "payload")]
    pub fn with_claim_check(mut self, check: crate::payload::ClaimCheck) -> Self {
        self.claim_check = Some(check);
        self
    }

    /// Whether to set backoff visibility on retryable failures of standard queues (default true).
    pub fn with_backoff_visibility(mut self, on: bool) -> Self {
        self.backoff_visibility = on;
        self
    }

    /// The context for events from `source_arn`, its queue with the adapter's claim check.
    async fn context(&self, source_arn: Option<&str>) -> QueueContext {
        #[cfg_attr(not(feature = "payload"), allow(unused_mut))]
        let mut ctx = self.queue_context(source_arn).await;
        #[cfg(feature = "payload")]
        if let (Some(check), Some(queue)) = (&self.claim_check, &ctx.queue) {
            if queue.claim_check().is_none() {
                ctx.queue = Some(queue.clone().with_claim_check(check.clone()));
            }
        }
        ctx
    }

    async fn queue_context(&self, source_arn: Option<&str>) -> QueueContext {
        if let Some(ctx) = &self.fixed {
            // the configured queue serves its own events (and events without a source ARN)
            let own = match (source_arn, &ctx.queue) {
                (Some(arn), Some(q)) => arn.rsplit(':').next() == Some(q.name()),
                _ => true,
            };
            if own {
                return ctx.clone();
            }
        }
        let Some(arn) = source_arn else { return QueueContext::default() };
        let mut cache = self.contexts.lock().await;
        if let Some(ctx) = cache.get(arn) {
            return ctx.clone();
        }
        let resolved = match Queue::by_arn(self.client.clone(), arn).await {
            Ok(q) => QueueContext::discover(q).await,
            Err(e) => Err(e),
        };
        match resolved {
            Ok(ctx) => {
                // a redrive policy whose DLQ could not be resolved is not remembered either:
                // the DLQ may be created (or become readable) before the next invocation
                if ctx.dlq.is_some() || ctx.max_receive_count.is_none() {
                    cache.insert(arn.to_string(), ctx.clone());
                }
                ctx
            }
            Err(e) => {
                // not cached: the next invocation tries again
                tracing::warn!(source = arn, error = %e, "cannot resolve the source queue; permanent failures will be reported as failures");
                QueueContext::default() // FIFO-ness comes from the ARN in `handle_with_deadline`
            }
        }
    }

    /// Process one SQS event, with no deadline (see [`LambdaAdapter::handle_with_deadline`]).
    ///
    /// # Errors
    /// [`Error::Invalid`] when a record has no `messageId` (the whole batch is retried).
    pub async fn handle(&self, event: SqsEvent) -> Result<(SqsBatchResponse, BatchSummary), Error> {
        self.handle_with_deadline(event, None).await
    }

    /// Process one SQS event that must be answered by `deadline` (the invocation's, from
    /// `lambda_runtime::Context::deadline()`). Once less than the safety margin remains, no
    /// message is started and the handlers still running are cancelled (their futures dropped);
    /// when half the margin remains, it returns without waiting for anything else. Every message
    /// not finished is listed as a failure (FIFO: with every later one).
    ///
    /// # Errors
    /// [`Error::Invalid`] when a record has no `messageId` (the whole batch is retried).
    pub async fn handle_with_deadline(
        &self,
        event: SqsEvent,
        deadline: Option<SystemTime>,
    ) -> Result<(SqsBatchResponse, BatchSummary), Error> {
        let started = Instant::now();
        let cutoff = deadline.map(|d| Cutoff::new(d, self.deadline_margin));
        let source = event.records.iter().find_map(|r| r.event_source_arn.clone());
        let mut messages = event.records.into_iter().map(from_record).collect::<Result<Vec<_>, _>>()?;
        let mut summary = BatchSummary { records: messages.len(), ..Default::default() };
        if messages.is_empty() {
            return Ok((SqsBatchResponse::default(), summary));
        }
        let ctx = match cutoff {
            Some(c) => tokio::time::timeout_at(c.cut, self.context(source.as_deref())).await.unwrap_or_else(|_| {
                tracing::warn!("the source queue was not resolved before the deadline margin");
                QueueContext::default()
            }),
            None => self.context(source.as_deref()).await,
        };
        // FIFO queue names end in `.fifo`; a message's group id says nothing (fair queues)
        let fifo = ctx.fifo || source.as_deref().is_some_and(|a| a.ends_with(".fifo"));
        // an idempotency claim lapses with the invocation
        let lease = deadline.map_or(ctx.lease, Lease::Deadline);
        let ctx = QueueContext { fifo, lease, ..ctx };
        // this invocation's own counts, even while others run in the same process
        let processor = match self.processor.idempotency() {
            Some(idem) => self.processor.clone().with_idempotency(idem.with_own_counts()),
            None => self.processor.clone(),
        };
        if let Some(q) = &ctx.queue {
            for m in &mut messages {
                m.queue_url = Some(q.shared_url());
            }
        }
        let messages: Vec<Arc<ReceivedMessage>> = messages.into_iter().map(Arc::new).collect();

        // at the cut nothing more starts and running handlers are cancelled; at `answer` the
        // work is dropped, whatever it is waiting for
        let cut = CancellationToken::new();
        if cutoff.is_some_and(|c| c.cut <= tokio::time::Instant::now()) {
            cut.cancel();
        }
        let outcomes = std::sync::Mutex::new(vec![None; messages.len()]);
        let mut work = Box::pin(run_until_cut(&processor, &ctx, &messages, &cut, &outcomes));
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        loop {
            tokio::select! {
                biased;
                () = &mut work => break,
                () = tokio::time::sleep_until(cutoff.map_or(far, |c| c.cut)), if !cut.is_cancelled() => {
                    tracing::warn!("the invocation deadline is near: starting no more messages, cancelling the handlers still running");
                    cut.cancel();
                }
                () = tokio::time::sleep_until(cutoff.map_or(far, |c| c.answer)) => break,
            }
        }
        drop(work); // what has not concluded is dropped here, before the answer
        let outcomes = outcomes.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        let decisions: Vec<Decision> = messages
            .iter()
            .zip(&outcomes)
            .filter_map(|(m, o)| o.clone().map(|outcome| Decision { message: m.clone(), outcome }))
            .collect();

        if !fifo && self.backoff_visibility {
            if let Some(queue) = &ctx.queue {
                let entries: Vec<_> = Actions::plan(&decisions)
                    .visibility
                    .into_iter()
                    .filter(|(m, _)| !m.receipt_handle.is_empty())
                    .collect();
                let change = crate::settle::change_visibility(queue, &entries, "retry");
                match cutoff {
                    Some(c) => {
                        if tokio::time::timeout_at(c.answer, change).await.is_err() {
                            tracing::warn!("no time left before the deadline to set the retries' backoff visibility");
                        }
                    }
                    None => {
                        change.await;
                    }
                }
            }
        }

        let mut failed_flags: Vec<bool> = outcomes
            .iter()
            .map(|o| match o {
                // a dead letter is only decided once the DLQ confirmed it: Lambda may delete it
                Some(Outcome::Succeeded | Outcome::Duplicate | Outcome::Deferred | Outcome::DeadLetter { .. }) => false,
                Some(Outcome::Retry { .. } | Outcome::Held { .. } | Outcome::Released) | None => true,
            })
            .collect();
        if fifo {
            if let Some(first) = failed_flags.iter().position(|f| *f) {
                failed_flags[first..].iter_mut().for_each(|f| *f = true);
            }
        }
        let mut response = SqsBatchResponse::default();
        for ((m, outcome), failed) in messages.iter().zip(&outcomes).zip(&failed_flags) {
            match outcome {
                _ if *failed => {
                    response.add_failure(m.message_id.clone());
                    *summary.failed.entry(outcome.as_ref().map_or(ABANDONED, Outcome::label)).or_default() += 1;
                }
                Some(Outcome::Duplicate) => summary.duplicates += 1,
                Some(Outcome::Deferred) => summary.deferred += 1,
                Some(o) if o.is_success() => summary.succeeded += 1,
                _ => summary.dead_lettered += 1,
            }
        }
        let abandoned: Vec<&str> =
            messages.iter().zip(&outcomes).filter(|(_, o)| o.is_none()).map(|(m, _)| m.message_id.as_str()).collect();
        if !abandoned.is_empty() {
            tracing::warn!(
                abandoned = abandoned.len(),
                "answering at the deadline without the messages still unfinished outside their handlers; listed as failures"
            );
            metrics::counter!(crate::metrics::names::FAILED, "kind" => ABANDONED).increment(abandoned.len() as u64);
            if let Some(idem) = processor.idempotency() {
                // their claims lapse at the deadline; this process forgets them now
                abandoned.iter().for_each(|id| idem.local.running(id, None));
            }
        }
        // Lambda deletes what is not listed: that is when a success counts
        metrics::counter!(crate::metrics::names::SUCCEEDED).increment(summary.succeeded as u64);
        metrics::counter!(crate::metrics::names::DUPLICATES).increment(summary.duplicates as u64);
        summary.idempotency = processor.idempotency_counts();
        summary.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            records = summary.records,
            succeeded = summary.succeeded,
            dead_lettered = summary.dead_lettered,
            duplicates = summary.duplicates,
            failed = response.batch_item_failures.len(),
            not_started = summary.failed.get("released").copied().unwrap_or(0),
            cancelled = summary.failed.get("timeout").copied().unwrap_or(0),
            abandoned = abandoned.len(),
            "batch processed"
        );
        Ok((response, summary))
    }
}

/// The failure kind of a message the invocation answered without (stuck outside its handler
/// when half the deadline margin was left).
const ABANDONED: &str = "abandoned";

/// Run `messages` as the processor would (a batch handler gets them all; FIFO: strictly in
/// order; standard: concurrently), writing each outcome into `outcomes` as soon as it is known,
/// so that what finished survives when this future is dropped at the deadline. `cut` stops
/// starting messages and cancels the running handlers.
async fn run_until_cut<T: Send + 'static>(
    processor: &Processor<T>,
    ctx: &QueueContext,
    messages: &[Arc<ReceivedMessage>],
    cut: &CancellationToken,
    outcomes: &std::sync::Mutex<Vec<Option<Outcome>>>,
) {
    let put = |i: usize, outcome: Outcome| {
        outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(outcome);
    };
    if processor.is_batch() {
        for d in processor
            .process_whole(ctx, messages.to_vec(), Drive { stop: Some(cut), lease: Some(cut), started: None })
            .await
        {
            if let Some(i) = messages.iter().position(|m| Arc::ptr_eq(m, &d.message)) {
                put(i, d.outcome);
            }
        }
    } else if ctx.fifo {
        let mut seq = Sequence::new(processor, ctx, messages.to_vec(), Some(cut), Some(cut));
        for i in 0.. {
            let Some(d) = seq.next().await else { break };
            put(i, d.outcome);
        }
    } else {
        // each message a sequence of one: not started after the cut, cancelled by it
        futures::stream::iter(messages.iter().cloned().enumerate())
            .map(|(i, m)| async move {
                let mut one = Sequence::new(processor, ctx, vec![m], Some(cut), Some(cut));
                if let Some(d) = one.next().await {
                    put(i, d.outcome);
                }
            })
            .buffer_unordered(processor.config().concurrency.max(1))
            .for_each(|()| std::future::ready(()))
            .await;
    }
}

/// Convert one Lambda SQS record into a [`ReceivedMessage`].
///
/// # Errors
/// [`Error::Invalid`] when the record has no `messageId`.
pub fn from_record(r: SqsMessage) -> Result<ReceivedMessage, Error> {
    let message_id = r.message_id.filter(|id| !id.is_empty()).ok_or_else(|| Error::Invalid {
        what: "SQS event record",
        reason: "a record has no messageId, so it cannot be reported individually".to_string(),
    })?;
    Ok(ReceivedMessage {
        message_id,
        receipt_handle: r.receipt_handle.unwrap_or_default(),
        body: r.body.unwrap_or_default(),
        attributes: r
            .message_attributes
            .into_iter()
            .map(|(k, v)| {
                let value = AttributeValue {
                    data_type: v.data_type.unwrap_or_else(|| "String".to_string()),
                    string_value: v.string_value,
                    binary_value: v.binary_value.map(|b| b.0),
                };
                (k, value)
            })
            .collect(),
        system_attributes: r.attributes,
        received_at: Instant::now(),
        queue_url: None,
    })
}

/// The dlq-monitor Lambda's work for one event (see [`DlqMonitor::handle_messages`]): records
/// whose archive failed are listed in `batchItemFailures`.
///
/// # Errors
/// [`Error::Invalid`] when a record has no `messageId` (the whole batch is retried).
///
/// [`DlqMonitor::handle_messages`]: crate::dlq::DlqMonitor::handle_messages
#[cfg(feature = "dlq")]
pub async fn handle_dlq_event(
    monitor: &crate::dlq::DlqMonitor,
    event: SqsEvent,
    sqs: &aws_sdk_sqs::Client,
) -> Result<(SqsBatchResponse, crate::dlq::MonitorSummary), Error> {
    let arn = event.records.iter().find_map(|r| r.event_source_arn.clone()).unwrap_or_default();
    let messages = event.records.into_iter().map(from_record).collect::<Result<Vec<_>, _>>()?;
    let (failed, summary) = monitor.handle_messages(&arn, messages, sqs).await;
    let mut response = SqsBatchResponse::default();
    for id in failed {
        response.add_failure(id);
    }
    Ok((response, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_concurrency_is_range_checked_naming_the_variable() {
        assert_eq!(parse_max_concurrency(None), Ok(1));
        assert_eq!(parse_max_concurrency(Some("")), Ok(1));
        assert_eq!(parse_max_concurrency(Some("1")), Ok(1));
        assert_eq!(parse_max_concurrency(Some("1600")), Ok(MAX_CONCURRENCY));
        for bad in ["0", "1601", "4294967296", "-2", " 2", "2.0", "two"] {
            let e = parse_max_concurrency(Some(bad)).unwrap_err();
            assert_eq!((e.name, e.value.as_str()), ("AWS_LAMBDA_MAX_CONCURRENCY", bad));
            assert!(e.to_string().contains("1 to 1600"), "{e}");
        }
    }

    #[test]
    fn the_default_margin_is_a_tenth_between_two_and_ten_seconds() {
        assert_eq!(default_margin(Duration::ZERO), Duration::from_secs(2));
        assert_eq!(default_margin(Duration::from_secs(30)), Duration::from_secs(3));
        assert_eq!(default_margin(Duration::from_secs(900)), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn cutoffs_stay_in_order_whatever_the_deadline_and_margin() {
        let far = SystemTime::now() + Duration::from_secs(u64::from(u32::MAX));
        for (deadline, margin) in [
            (SystemTime::UNIX_EPOCH, None),
            (SystemTime::now() + Duration::from_secs(4), None),
            (SystemTime::now() + Duration::from_secs(4), Some(Duration::MAX)),
            (far, Some(MIN_DEADLINE_MARGIN)),
            (far, None),
        ] {
            let now = tokio::time::Instant::now();
            let c = Cutoff::new(deadline, margin);
            assert!(now <= c.cut && c.cut <= c.answer, "{deadline:?} {margin:?}: {c:?}");
        }
    }
}
