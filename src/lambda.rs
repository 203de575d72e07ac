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
//! - FIFO: messages are processed strictly in batch order; the first failure and every
//!   message after it are listed.
//! - A record without a `messageId` cannot be reported individually: the whole
//!   invocation fails, and Lambda retries the batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

use crate::client::Queue;
use crate::error::Error;
use crate::message::{AttributeValue, ReceivedMessage};
use crate::processor::{send_dead_letters, Actions, Outcome, Processor, QueueContext};

/// JSON logs for a Lambda function (to stdout, as CloudWatch Logs expects; no time stamps, no
/// colours; the runtime's span adds the request id). Filter with `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(true)
        .with_ansi(false)
        .without_time()
        .init();
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
    /// Failures by kind (`retryable`, `panic`, `timeout`, `permanent`, `undecodable`, `held`).
    pub failed: HashMap<&'static str, usize>,
    /// Wall time of the invocation in milliseconds.
    pub duration_ms: u64,
}

impl BatchSummary {
    /// One CloudWatch EMF line (namespace `sqskit`, dimension `Function`): `Records`,
    /// `Succeeded`, `DeadLettered`, `Failed`, `Failed_<kind>` per kind, `DurationMs`.
    pub fn emf_line(&self, function: &str) -> String {
        let kinds: Vec<(String, f64)> = self.failed.iter().map(|(k, n)| (format!("Failed_{k}"), *n as f64)).collect();
        let mut metrics: Vec<(&str, f64, &str)> = vec![
            ("Records", self.records as f64, "Count"),
            ("Succeeded", self.succeeded as f64, "Count"),
            ("DeadLettered", self.dead_lettered as f64, "Count"),
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
/// # async fn demo(event: aws_lambda_events::event::sqs::SqsEvent) -> Result<(), sqskit::Error> {
/// let adapter = LambdaAdapter::from_env(Processor::json(|m: Message<serde_json::Value>| async move {
///     if m.body.get("id").is_none() { return Err(HandlerError::permanent("no id")); }
///     Ok(())
/// })).await;
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
}

impl<T: Send + 'static> LambdaAdapter<T> {
    /// An adapter that discovers each event source's queue and DLQ (`GetQueueUrl`,
    /// `GetQueueAttributes`) on first use and caches them.
    pub fn new(processor: Processor<T>, client: aws_sdk_sqs::Client) -> Self {
        Self { processor, client, fixed: None, contexts: Default::default(), backoff_visibility: true }
    }

    /// From the environment: the SDK config from the standard chain; `SQSKIT_QUEUE_URL`
    /// and `SQSKIT_DLQ_URL`, when set, name the source queue and its DLQ (no discovery calls
    /// for events from that queue; events from any other queue are discovered).
    pub async fn from_env(processor: Processor<T>) -> Self {
        let config = crate::client::load_aws_config().await;
        let client = aws_sdk_sqs::Client::new(&config);
        let mut adapter = Self::new(processor, client.clone());
        if let Ok(url) = std::env::var("SQSKIT_QUEUE_URL") {
            let dlq =
                std::env::var("SQSKIT_DLQ_URL").ok().filter(|u| !u.is_empty()).map(|u| Queue::new(client.clone(), u));
            adapter.fixed = Some(QueueContext::new(Queue::new(client, url), dlq));
        }
        adapter
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
                cache.insert(arn.to_string(), ctx.clone());
                ctx
            }
            Err(e) => {
                tracing::warn!(source = arn, error = %e, "cannot resolve the source queue; permanent failures will be reported as failures");
                QueueContext::default()
            }
        }
    }

    /// Process one SQS event.
    ///
    /// # Errors
    /// [`Error::Invalid`] when a record has no `messageId` (the whole batch is retried).
    pub async fn handle(&self, event: SqsEvent) -> Result<(SqsBatchResponse, BatchSummary), Error> {
        let started = Instant::now();
        let source = event.records.iter().find_map(|r| r.event_source_arn.clone());
        let fifo = source.as_deref().is_some_and(|a| a.ends_with(".fifo"))
            || event.records.iter().any(|r| r.attributes.contains_key("MessageGroupId"));
        let messages = event.records.into_iter().map(from_record).collect::<Result<Vec<_>, _>>()?;
        let mut summary = BatchSummary { records: messages.len(), ..Default::default() };
        if messages.is_empty() {
            return Ok((SqsBatchResponse::default(), summary));
        }
        let ctx = self.context(source.as_deref()).await;
        let decisions = if fifo {
            self.processor.process_sequence(&ctx, messages.into_iter().map(Arc::new).collect()).await
        } else {
            self.processor.process_batch(&ctx, messages).await
        };

        let actions = Actions::plan(&decisions);
        let mut errors = Vec::new();
        let (sent, _unsent) = send_dead_letters(&ctx, &actions.dead_letter, &mut errors).await;
        for e in &errors {
            tracing::error!(error = %e, "dead-lettering from Lambda");
        }
        let sent_ids: std::collections::HashSet<&str> = sent.iter().map(|m| m.message_id.as_str()).collect();
        summary.dead_lettered = sent_ids.len();

        if !fifo && self.backoff_visibility {
            if let Some(queue) = &ctx.queue {
                let entries: Vec<(&str, u32)> = actions
                    .visibility
                    .iter()
                    .filter(|(m, _)| !m.receipt_handle.is_empty())
                    .map(|(m, v)| (m.receipt_handle.as_str(), *v))
                    .collect();
                if !entries.is_empty() {
                    match queue.change_visibility_each(&entries).await {
                        Ok(r) if !r.failed.is_empty() => {
                            tracing::warn!(failed = r.failed.len(), "some backoff visibility changes failed")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "backoff visibility change failed; the queue's visibility timeout applies")
                        }
                    }
                }
            }
        }

        let mut failed_flags: Vec<bool> = decisions
            .iter()
            .map(|d| match &d.outcome {
                Outcome::Succeeded => false,
                Outcome::DeadLetter { .. } => !sent_ids.contains(d.message.message_id.as_str()),
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
            } else if d.outcome.is_success() {
                summary.succeeded += 1;
            }
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            records = summary.records,
            succeeded = summary.succeeded,
            dead_lettered = summary.dead_lettered,
            failed = response.batch_item_failures.len(),
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
    })
}
