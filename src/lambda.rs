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
//! - Deadline: given the invocation's deadline ([`LambdaAdapter::handle_with_deadline`]), no
//!   message is started once less than the safety margin remains (default 10 % of the time
//!   left when the invocation began, at least 2 s; `SQSKIT_DEADLINE_MARGIN` seconds); the
//!   unstarted ones are listed as failures instead of the whole batch timing out.
//! - A record without a `messageId` cannot be reported individually: the whole
//!   invocation fails, and Lambda retries the batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use tokio_util::sync::CancellationToken;

use crate::client::Queue;
use crate::error::Error;
use crate::idempotency::{IdempotencyCounts, Lease};
use crate::message::{AttributeValue, ReceivedMessage};
use crate::processor::{Outcome, Processor, QueueContext};
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
/// # Errors
/// What the Lambda runtime reports.
pub async fn run_adapter<T: Send + 'static>(adapter: LambdaAdapter<T>) -> Result<(), BoxError> {
    let adapter = Arc::new(adapter);
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "sqskit".into());
    let runtime =
        lambda_runtime::run(lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<SqsEvent>| {
            let (adapter, function) = (adapter.clone(), function.clone());
            async move {
                let deadline = event.context.deadline();
                let (response, summary) = adapter.handle_with_deadline(event.payload, Some(deadline)).await?;
                println!("{}", summary.emf_line(&function));
                Ok::<_, BoxError>(response)
            }
        }));
    Box::pin(runtime).await
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
    /// Failures by kind (`retryable`, `panic`, `timeout`, `permanent`, `undecodable`, `held`,
    /// `released` for messages not started because the deadline was near).
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
        }
    }

    /// From the environment: the SDK config from the standard chain; `SQSKIT_QUEUE_URL`,
    /// `SQSKIT_DLQ_URL` and `SQSKIT_MAX_RECEIVE_COUNT`, when set, describe the source queue,
    /// its DLQ and its redrive policy's `maxReceiveCount` (no discovery calls for events from
    /// that queue; events from any other queue are discovered); `SQSKIT_DEADLINE_MARGIN`
    /// (seconds) overrides the deadline safety margin. With the `payload` feature the processor
    /// resolves claim-checked messages (each pointer names its bucket) unless it has a claim
    /// check already: through `SQSKIT_PAYLOAD_BUCKET` (and `SQSKIT_PAYLOAD_*`, see
    /// [`ClaimCheck::from_env`](crate::payload::ClaimCheck::from_env)) when set, else a
    /// [`ClaimCheck::reader`](crate::payload::ClaimCheck::reader). Cleanup does not apply in
    /// Lambda: the event source mapping deletes the messages after the function returned.
    /// Unless the processor has idempotency already,
    /// [`IdempotencySettings::from_env`](crate::config::IdempotencySettings::from_env) adds it
    /// (`SQSKIT_IDEMPOTENCY_TABLE` or `_REDIS`, `_KEY`, `_PREFIX`, `_TTL`); claims lapse at each
    /// invocation's deadline.
    ///
    /// # Errors
    /// [`crate::config::ConfigError`] naming a variable that is set to something unusable.
    pub async fn from_env(processor: Processor<T>) -> Result<Self, crate::config::ConfigError> {
        let config = crate::client::load_aws_config().await;
        let client = aws_sdk_sqs::Client::new(&config);
        // pointers name their own bucket: they are resolved with or without SQSKIT_PAYLOAD_BUCKET
        #[cfg(feature = "payload")]
        let processor = match crate::payload::ClaimCheck::from_env(&config)? {
            _ if processor.claim_check().is_some() => processor,
            Some(check) => processor.with_claim_check(check),
            None => processor.with_claim_check(crate::payload::ClaimCheck::reader(crate::payload::s3_client(&config))),
        };
        let processor = match crate::config::IdempotencySettings::from_env()?.build().await? {
            Some(idem) if processor.idempotency().is_none() => processor.with_idempotency(idem),
            _ => processor,
        };
        let mut adapter = Self::new(processor, client.clone());
        if let Ok(url) = std::env::var("SQSKIT_QUEUE_URL") {
            let dlq =
                std::env::var("SQSKIT_DLQ_URL").ok().filter(|u| !u.is_empty()).map(|u| Queue::new(client.clone(), u));
            let max = crate::config::env_count("SQSKIT_MAX_RECEIVE_COUNT", 0)?;
            let max = u32::try_from(max).ok().filter(|m| *m > 0);
            adapter.fixed = Some(QueueContext::new(Queue::new(client, url), dlq).with_max_receive_count(max));
        }
        if std::env::var("SQSKIT_DEADLINE_MARGIN").is_ok_and(|v| !v.trim().is_empty()) {
            let secs = crate::config::env_secs("SQSKIT_DEADLINE_MARGIN", 0)?;
            adapter.deadline_margin = Some(Duration::from_secs(secs));
        }
        Ok(adapter)
    }

    /// Stop starting messages once less than `margin` is left before the deadline (default:
    /// 10 % of the time left when the invocation began, at least 2 s).
    pub fn with_deadline_margin(mut self, margin: Duration) -> Self {
        self.deadline_margin = Some(margin);
        self
    }

    /// Use this queue context for events from its queue (and events without a source ARN)
    /// instead of discovering it.
    pub fn with_context(mut self, ctx: QueueContext) -> Self {
        self.fixed = Some(ctx);
        self
    }

    /// Whether to set backoff visibility on retryable failures of standard queues (default true).
    pub fn with_backoff_visibility(mut self, on: bool) -> Self {
        self.backoff_visibility = on;
        self
    }

    async fn context(&self, source_arn: Option<&str>) -> QueueContext {
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
    /// `lambda_runtime::Context::deadline()`): no message is started once less than the
    /// safety margin remains; those not started are listed as failures.
    ///
    /// # Errors
    /// [`Error::Invalid`] when a record has no `messageId` (the whole batch is retried).
    pub async fn handle_with_deadline(
        &self,
        event: SqsEvent,
        deadline: Option<SystemTime>,
    ) -> Result<(SqsBatchResponse, BatchSummary), Error> {
        let started = Instant::now();
        let source = event.records.iter().find_map(|r| r.event_source_arn.clone());
        let mut messages = event.records.into_iter().map(from_record).collect::<Result<Vec<_>, _>>()?;
        let mut summary = BatchSummary { records: messages.len(), ..Default::default() };
        if messages.is_empty() {
            return Ok((SqsBatchResponse::default(), summary));
        }
        let ctx = self.context(source.as_deref()).await;
        // FIFO queue names end in `.fifo`; a message's group id says nothing (fair queues)
        let fifo = ctx.fifo || source.as_deref().is_some_and(|a| a.ends_with(".fifo"));
        // an idempotency claim lapses with the invocation
        let lease = deadline.map_or(ctx.lease, Lease::Deadline);
        let ctx = QueueContext { fifo, lease, ..ctx };
        let idempotency_before = self.processor.idempotency_counts();
        if let Some(q) = &ctx.queue {
            for m in &mut messages {
                m.queue_url = Some(q.shared_url());
            }
        }

        // stop starting messages when the deadline nears
        let stop = CancellationToken::new();
        let start_until = deadline.map(|d| {
            let left = d.duration_since(SystemTime::now()).unwrap_or_default();
            let margin = self.deadline_margin.unwrap_or_else(|| (left / 10).max(Duration::from_secs(2)));
            tokio::time::Instant::now() + left.saturating_sub(margin)
        });
        let work = async {
            if fifo && !self.processor.is_batch() {
                self.processor
                    .process_sequence_until(&ctx, messages.into_iter().map(Arc::new).collect(), Some(&stop))
                    .await
            } else {
                self.processor.process_batch_until(&ctx, messages, Some(&stop)).await
            }
        };
        tokio::pin!(work);
        let decisions = loop {
            tokio::select! {
                d = &mut work => break d,
                _ = tokio::time::sleep_until(start_until.unwrap_or_else(tokio::time::Instant::now)),
                    if start_until.is_some() && !stop.is_cancelled() => {
                    tracing::warn!("the invocation deadline is near: starting no more messages");
                    stop.cancel();
                }
            }
        };

        if !fifo && self.backoff_visibility {
            if let Some(queue) = &ctx.queue {
                let entries: Vec<_> = Actions::plan(&decisions)
                    .visibility
                    .into_iter()
                    .filter(|(m, _)| !m.receipt_handle.is_empty())
                    .collect();
                crate::settle::change_visibility(queue, &entries, "retry").await;
            }
        }

        let mut failed_flags: Vec<bool> = decisions
            .iter()
            .map(|d| match &d.outcome {
                // a dead letter is only decided once the DLQ confirmed it: Lambda may delete it
                Outcome::Succeeded | Outcome::Duplicate | Outcome::Deferred | Outcome::DeadLetter { .. } => false,
                Outcome::Retry { .. } | Outcome::Held { .. } | Outcome::Released => true,
            })
            .collect();
        if fifo {
            if let Some(first) = failed_flags.iter().position(|f| *f) {
                failed_flags[first..].iter_mut().for_each(|f| *f = true);
            }
        }
        let mut response = SqsBatchResponse::default();
        for (d, failed) in decisions.iter().zip(&failed_flags) {
            if *failed {
                response.add_failure(d.message.message_id.clone());
                *summary.failed.entry(d.outcome.label()).or_default() += 1;
            } else if d.outcome == Outcome::Duplicate {
                summary.duplicates += 1;
            } else if d.outcome == Outcome::Deferred {
                summary.deferred += 1;
            } else if d.outcome.is_success() {
                summary.succeeded += 1;
            } else {
                summary.dead_lettered += 1;
            }
        }
        // Lambda deletes what is not listed: that is when a success counts
        metrics::counter!(crate::metrics::names::SUCCEEDED).increment(summary.succeeded as u64);
        metrics::counter!(crate::metrics::names::DUPLICATES).increment(summary.duplicates as u64);
        summary.idempotency = self.processor.idempotency_counts().since(idempotency_before);
        summary.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            records = summary.records,
            succeeded = summary.succeeded,
            dead_lettered = summary.dead_lettered,
            duplicates = summary.duplicates,
            failed = response.batch_item_failures.len(),
            not_started = summary.failed.get("released").copied().unwrap_or(0),
            "batch processed"
        );
        Ok((response, summary))
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
