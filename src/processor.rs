//! The batch processor: the one place where a handler's result becomes an action on SQS.
//!
//! It runs handlers (decoding the body, catching panics, enforcing an optional
//! timeout), turns each result into an [`Outcome`], applies the FIFO rules, and
//! carries the outcomes out on SQS ([`Processor::settle`]) or hands them to a
//! runtime that batches them itself (the poller, the Lambda adapter). It knows
//! nothing about where messages came from.
//!
//! | handler result | outcome | SQS action |
//! |---|---|---|
//! | `Ok(())` | [`Outcome::Succeeded`] | delete |
//! | retryable / panic / timeout | [`Outcome::Retry`] | visibility = backoff (or retry-after) |
//! | permanent / undecodable, DLQ known | [`Outcome::DeadLetter`] | send to DLQ with error attributes, delete |
//! | permanent / undecodable, no DLQ | [`Outcome::Retry`] (with a warning) | visibility = backoff |
//! | FIFO: later message of a failed group | [`Outcome::Held`] | same visibility as the failed one, in the same call, after it |

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::client::Queue;
use crate::error::Error;
use crate::limits::{clamp_visibility, MAX_MESSAGE_ATTRIBUTES, MAX_PAYLOAD_BYTES};
use crate::message::{AttributeValue, Message, OutgoingMessage, ReceivedMessage};
use crate::retry::Backoff;

/// A boxed, sendable future returned by handlers.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler returns when it cannot process a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// Try again later (with backoff, or after `retry_after` when given).
    Retryable {
        /// What went wrong (logged; never includes the body unless you put it there).
        message: String,
        /// Explicit delay before the message comes back.
        retry_after: Option<Duration>,
    },
    /// Will never succeed: dead-letter it now instead of burning receives.
    Permanent {
        /// What went wrong.
        message: String,
    },
}

impl HandlerError {
    /// A retryable failure.
    pub fn retryable(err: impl std::fmt::Display) -> Self {
        Self::Retryable { message: err.to_string(), retry_after: None }
    }
    /// A retryable failure that should come back after `after`.
    pub fn retry_after(err: impl std::fmt::Display, after: Duration) -> Self {
        Self::Retryable { message: err.to_string(), retry_after: Some(after) }
    }
    /// A permanent failure.
    pub fn permanent(err: impl std::fmt::Display) -> Self {
        Self::Permanent { message: err.to_string() }
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retryable { message, .. } => write!(f, "retryable: {message}"),
            Self::Permanent { message } => write!(f, "permanent: {message}"),
        }
    }
}

impl std::error::Error for HandlerError {}

/// Why a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The handler returned [`HandlerError::Retryable`].
    Retryable,
    /// The handler returned [`HandlerError::Permanent`].
    Permanent,
    /// The body could not be decoded into the handler's type.
    Undecodable,
    /// The handler panicked.
    Panicked,
    /// The handler overran its timeout.
    TimedOut,
}

impl FailureKind {
    /// Stable lowercase name (metrics labels, DLQ attributes).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Undecodable => "undecodable",
            Self::Panicked => "panic",
            Self::TimedOut => "timeout",
        }
    }
    /// Whether messages failing this way belong in the dead-letter queue right away.
    pub fn is_permanent(self) -> bool {
        matches!(self, Self::Permanent | Self::Undecodable)
    }
}

/// A failed attempt: its kind and a short error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind.
    pub kind: FailureKind,
    /// The error text (short; no body).
    pub error: String,
    /// Explicit retry-after from the handler.
    pub retry_after: Option<Duration>,
}

/// What happens to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed: delete it.
    Succeeded,
    /// Failed, try again: make it visible again after `visibility` seconds.
    Retry {
        /// Visibility timeout to set, in seconds.
        visibility: u32,
        /// Why.
        failure: Failure,
    },
    /// Failed for good: send it to the DLQ, then delete it.
    DeadLetter {
        /// Why.
        failure: Failure,
    },
    /// FIFO: not attempted because an earlier message of its group (`behind`) failed; it gets
    /// the same visibility, set in the same call right after the failed one.
    Held {
        /// Visibility timeout to set, in seconds.
        visibility: u32,
        /// Message id of the failed message it waits behind.
        behind: String,
    },
    /// Not attempted because the consumer is shutting down: make it visible again at once.
    Released,
}

impl Outcome {
    /// True for [`Outcome::Succeeded`].
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded)
    }
    /// Short name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Retry { failure, .. } => failure.kind.as_str(),
            Outcome::DeadLetter { failure } => failure.kind.as_str(),
            Outcome::Held { .. } => "held",
            Outcome::Released => "released",
        }
    }
}

/// A message and its fate.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The message.
    pub message: Arc<ReceivedMessage>,
    /// What to do with it.
    pub outcome: Outcome,
}

/// Something that handles messages with a body of type `T`.
///
/// Implemented for every `Fn(Message<T>) -> impl Future<Output = Result<(), HandlerError>>`,
/// so a plain `async fn` or closure works.
pub trait Handler<T>: Send + Sync + 'static {
    /// Handle one message.
    fn call(&self, msg: Message<T>) -> BoxFuture<Result<(), HandlerError>>;
}

impl<T, F, Fut> Handler<T> for F
where
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn call(&self, msg: Message<T>) -> BoxFuture<Result<(), HandlerError>> {
        Box::pin(self(msg))
    }
}

/// Where messages come from and where dead ones go: the source queue (when known) and its DLQ.
#[derive(Debug, Clone, Default)]
pub struct QueueContext {
    /// The source queue (needed to delete and change visibility).
    pub queue: Option<Queue>,
    /// The dead-letter queue (from the redrive policy or configured).
    pub dlq: Option<Queue>,
}

impl QueueContext {
    /// Context for `queue`, with its DLQ discovered from the redrive policy.
    ///
    /// # Errors
    /// When `GetQueueAttributes` fails (e.g. the queue does not exist).
    pub async fn discover(queue: Queue) -> Result<Self, Error> {
        let dlq = queue.dead_letter_queue().await?;
        Ok(Self { queue: Some(queue), dlq })
    }
    /// Context with an explicit DLQ (or none).
    pub fn new(queue: Queue, dlq: Option<Queue>) -> Self {
        Self { queue: Some(queue), dlq }
    }
    fn queue_name(&self) -> &str {
        self.queue.as_ref().map_or("-", Queue::name)
    }
}

/// Processor settings.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Backoff for retryable failures.
    pub backoff: Backoff,
    /// Per-message handler timeout (overrun = retryable failure).
    pub timeout: Option<Duration>,
    /// Messages handled at once within a batch (standard queues; FIFO groups).
    pub concurrency: usize,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self { backoff: Backoff::default(), timeout: None, concurrency: 10 }
    }
}

type Decoder<T> = fn(&str) -> Result<T, String>;

/// The batch processor.
///
/// # Example
/// ```no_run
/// use serde::Deserialize;
/// use sqskit::{HandlerError, Message, Processor, Queue, QueueContext};
///
/// #[derive(Deserialize)]
/// struct Order { id: u64, amount_cents: i64 }
///
/// async fn handle(msg: Message<Order>) -> Result<(), HandlerError> {
///     if msg.body.amount_cents < 0 {
///         return Err(HandlerError::permanent("negative amount"));   // → DLQ now
///     }
///     charge(msg.body.id).await.map_err(HandlerError::retryable)  // → backoff
/// }
/// # async fn charge(_: u64) -> Result<(), std::io::Error> { Ok(()) }
///
/// # async fn run() -> Result<(), sqskit::Error> {
/// let queue = Queue::from_env("http://127.0.0.1:4566/queue/us-east-1/000000000000/orders").await;
/// let ctx = QueueContext::discover(queue.clone()).await?;  // finds the DLQ
/// let processor = Processor::json(handle);
/// let batch = queue.receive(10, std::time::Duration::from_secs(20), None).await?;
/// let decisions = processor.process_batch(&ctx, batch).await;
/// processor.settle(&ctx, &decisions).await;               // delete / backoff / dead-letter
/// # Ok(()) }
/// ```
pub struct Processor<T> {
    handler: Arc<dyn Handler<T>>,
    decode: Decoder<T>,
    config: ProcessorConfig,
}

impl<T> Clone for Processor<T> {
    fn clone(&self) -> Self {
        Self { handler: self.handler.clone(), decode: self.decode, config: self.config.clone() }
    }
}

fn decode_json<T: DeserializeOwned>(body: &str) -> Result<T, String> {
    serde_json::from_str(body).map_err(|e| format!("body is not a valid {}: {e}", std::any::type_name::<T>()))
}

fn decode_raw(body: &str) -> Result<String, String> {
    Ok(body.to_string())
}

impl<T: DeserializeOwned + Send + 'static> Processor<T> {
    /// A processor whose handler gets the body decoded from JSON into `T`.
    pub fn json(handler: impl Handler<T>) -> Self {
        Self { handler: Arc::new(handler), decode: decode_json::<T>, config: ProcessorConfig::default() }
    }
}

impl Processor<String> {
    /// A processor whose handler gets the raw body.
    pub fn raw(handler: impl Handler<String>) -> Self {
        Self { handler: Arc::new(handler), decode: decode_raw, config: ProcessorConfig::default() }
    }
}

impl<T: Send + 'static> Processor<T> {
    /// Replace the settings.
    pub fn with_config(mut self, config: ProcessorConfig) -> Self {
        self.config = config;
        self
    }
    /// The settings.
    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    /// Run the handler on one message and return what went wrong, if anything.
    /// Never panics: decode errors, panics and timeouts become failures.
    pub async fn run(&self, raw: Arc<ReceivedMessage>) -> Result<(), Failure> {
        let started = Instant::now();
        let body = (self.decode)(&raw.body).map_err(|error| Failure {
            kind: FailureKind::Undecodable,
            error,
            retry_after: None,
        })?;
        let fut = AssertUnwindSafe(self.handler.call(Message::new(body, raw.clone()))).catch_unwind();
        let result = match self.config.timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Failure {
                        kind: FailureKind::TimedOut,
                        error: format!("handler overran its {t:?} timeout"),
                        retry_after: None,
                    })
                }
            },
            None => fut.await,
        };
        metrics::histogram!(crate::metrics::names::HANDLER_DURATION).record(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(HandlerError::Retryable { message, retry_after })) => {
                Err(Failure { kind: FailureKind::Retryable, error: message, retry_after })
            }
            Ok(Err(HandlerError::Permanent { message })) => {
                Err(Failure { kind: FailureKind::Permanent, error: message, retry_after: None })
            }
            Err(panic) => Err(Failure { kind: FailureKind::Panicked, error: panic_text(&panic), retry_after: None }),
        }
    }

    /// Turn a handler result into an outcome. Pure apart from the jitter.
    pub fn decide(&self, raw: &ReceivedMessage, result: Result<(), Failure>, has_dlq: bool) -> Outcome {
        let failure = match result {
            Ok(()) => return Outcome::Succeeded,
            Err(f) => f,
        };
        if failure.kind.is_permanent() {
            if has_dlq {
                return Outcome::DeadLetter { failure };
            }
            tracing::warn!(message_id = %raw.message_id, kind = failure.kind.as_str(),
                "permanent failure but no dead-letter queue is known; retrying with backoff instead");
        }
        let wanted = failure.retry_after.unwrap_or_else(|| self.config.backoff.delay(raw.receive_count()));
        let visibility = retry_visibility(raw, wanted);
        Outcome::Retry { visibility, failure }
    }

    /// Run and decide one message, inside a tracing span with its id, queue and receive count.
    pub async fn process_one(&self, ctx: &QueueContext, raw: Arc<ReceivedMessage>) -> Outcome {
        let span = tracing::info_span!("message", message_id = %raw.message_id, queue = ctx.queue_name(), receive_count = raw.receive_count());
        async {
            let result = self.run(raw.clone()).await;
            let outcome = self.decide(&raw, result, ctx.dlq.is_some());
            record(&outcome);
            match &outcome {
                Outcome::Succeeded => tracing::debug!("processed"),
                Outcome::Retry { visibility, failure } => {
                    tracing::warn!(kind = failure.kind.as_str(), error = %failure.error, visibility, "failed; will retry")
                }
                Outcome::DeadLetter { failure } => {
                    tracing::warn!(kind = failure.kind.as_str(), error = %failure.error, "failed permanently; dead-lettering")
                }
                Outcome::Held { .. } | Outcome::Released => {}
            }
            outcome
        }
        .instrument(span)
        .await
    }

    /// Process messages of one FIFO group (or any strict sequence) in order, one at a time.
    /// After the first message that will be retried, the rest are not attempted and are
    /// [`Outcome::Held`] with its visibility. Dead-lettered messages do not stop the sequence.
    pub async fn process_sequence(&self, ctx: &QueueContext, messages: Vec<Arc<ReceivedMessage>>) -> Vec<Decision> {
        self.process_sequence_until(ctx, messages, None).await
    }

    /// As [`Processor::process_sequence`], but once `stop` is cancelled no further message is
    /// started: the rest are [`Outcome::Released`] (or held, when an earlier one failed).
    pub async fn process_sequence_until(
        &self,
        ctx: &QueueContext,
        messages: Vec<Arc<ReceivedMessage>>,
        stop: Option<&tokio_util::sync::CancellationToken>,
    ) -> Vec<Decision> {
        let mut out = Vec::with_capacity(messages.len());
        let mut blocked: Option<(String, u32)> = None;
        for m in messages {
            let outcome = match &blocked {
                Some((behind, visibility)) => Outcome::Held { visibility: *visibility, behind: behind.clone() },
                None if stop.is_some_and(|s| s.is_cancelled()) => Outcome::Released,
                None => {
                    let outcome = self.process_one(ctx, m.clone()).await;
                    if let Outcome::Retry { visibility, .. } = &outcome {
                        blocked = Some((m.message_id.clone(), *visibility));
                    }
                    outcome
                }
            };
            out.push(Decision { message: m, outcome });
        }
        out
    }

    /// Process a received batch and return one decision per message, in input order.
    ///
    /// Standard queue: messages run concurrently (up to `concurrency`). FIFO (messages carry
    /// a `MessageGroupId`): each group runs in order through [`Processor::process_sequence`],
    /// groups concurrently.
    pub async fn process_batch(&self, ctx: &QueueContext, messages: Vec<ReceivedMessage>) -> Vec<Decision> {
        let messages: Vec<Arc<ReceivedMessage>> = messages.into_iter().map(Arc::new).collect();
        let limit = self.config.concurrency.max(1);
        if messages.iter().any(|m| m.group_id().is_some()) {
            let seqs = fifo_groups(messages.clone());
            let decided: Vec<Vec<Decision>> =
                futures::stream::iter(seqs.into_iter().map(|s| self.process_sequence(ctx, s)))
                    .buffer_unordered(limit)
                    .collect()
                    .await;
            let mut by_id: HashMap<String, Decision> =
                decided.into_iter().flatten().map(|d| (d.message.message_id.clone(), d)).collect();
            messages.iter().filter_map(|m| by_id.remove(&m.message_id)).collect()
        } else {
            futures::stream::iter(messages.into_iter().map(|m| async move {
                let outcome = self.process_one(ctx, m.clone()).await;
                Decision { message: m, outcome }
            }))
            .buffered(limit)
            .collect()
            .await
        }
    }

    /// Carry out decisions on SQS: dead-letter (send to the DLQ, then delete; a failed send
    /// falls back to a retry), delete successes, set visibility for retries with each FIFO
    /// failure followed by the messages held behind it in the same call.
    pub async fn settle(&self, ctx: &QueueContext, decisions: &[Decision]) -> SettleReport {
        settle(ctx, decisions, &self.config.backoff).await
    }
}

/// Split messages into their FIFO groups (by `MessageGroupId`), groups in order of first
/// appearance, each group in input order.
pub(crate) fn fifo_groups<M: std::borrow::Borrow<ReceivedMessage>>(messages: Vec<M>) -> Vec<Vec<M>> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<M>> = HashMap::new();
    for m in messages {
        let g = m.borrow().group_id().unwrap_or("").to_string();
        if !groups.contains_key(&g) {
            order.push(g.clone());
        }
        groups.entry(g).or_default().push(m);
    }
    order.into_iter().filter_map(|g| groups.remove(&g)).collect()
}

/// The visibility (seconds) that brings `m` back after `wanted`, within 12 h of its receipt.
pub(crate) fn retry_visibility(m: &ReceivedMessage, wanted: Duration) -> u32 {
    clamp_visibility(wanted.as_secs(), m.received_at.elapsed().as_secs())
}

fn record(outcome: &Outcome) {
    match outcome {
        Outcome::Succeeded => metrics::counter!(crate::metrics::names::SUCCEEDED).increment(1),
        Outcome::Retry { failure, .. } | Outcome::DeadLetter { failure } => {
            metrics::counter!(crate::metrics::names::FAILED, "kind" => failure.kind.as_str()).increment(1)
        }
        Outcome::Held { .. } | Outcome::Released => {}
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "handler panicked".to_string());
    format!("panicked: {text}")
}

/// The SQS actions a set of decisions calls for.
#[derive(Debug, Default, Clone)]
pub struct Actions {
    /// Receipt handles to delete.
    pub delete: Vec<Arc<ReceivedMessage>>,
    /// Visibility changes, in the order they must be made: each FIFO failure is followed by
    /// the messages held behind it.
    pub visibility: Vec<(Arc<ReceivedMessage>, u32)>,
    /// Messages to send to the DLQ (then delete).
    pub dead_letter: Vec<(Arc<ReceivedMessage>, Failure)>,
}

impl Actions {
    /// Plan the actions for `decisions`.
    pub fn plan(decisions: &[Decision]) -> Self {
        let mut a = Actions::default();
        for d in decisions {
            match &d.outcome {
                Outcome::Succeeded => a.delete.push(d.message.clone()),
                Outcome::DeadLetter { failure } => a.dead_letter.push((d.message.clone(), failure.clone())),
                Outcome::Retry { visibility, .. } => {
                    a.visibility.push((d.message.clone(), *visibility));
                    for h in decisions {
                        if let Outcome::Held { visibility, behind } = &h.outcome {
                            if *behind == d.message.message_id {
                                a.visibility.push((h.message.clone(), *visibility));
                            }
                        }
                    }
                }
                Outcome::Released => a.visibility.push((d.message.clone(), 0)),
                Outcome::Held { .. } => {}
            }
        }
        a
    }
}

/// Names of the message attributes the processor adds when it dead-letters a message.
pub mod dead_letter_attributes {
    /// The [`FailureKind`](super::FailureKind) name.
    pub const ERROR_KIND: &str = "sqskit-error-kind";
    /// A short error text (≤ 256 characters).
    pub const ERROR: &str = "sqskit-error";
    /// The source queue's name.
    pub const SOURCE_QUEUE: &str = "sqskit-source-queue";
    /// The receive count when it was dead-lettered.
    pub const RECEIVE_COUNT: &str = "sqskit-receive-count";
    /// Used instead of the four above (as one JSON object) when the message has more than
    /// six attributes of its own (SQS allows ten).
    pub const COMBINED: &str = "sqskit-dead-letter";
    /// All of them.
    pub const ALL: [&str; 5] = [ERROR_KIND, ERROR, SOURCE_QUEUE, RECEIVE_COUNT, COMBINED];
}

/// The message to send to the DLQ for `raw`: original body and attributes plus the error
/// attributes. On a FIFO DLQ, the group id is kept and the original message id is the dedup id.
pub fn dead_letter_message(
    raw: &ReceivedMessage,
    failure: &Failure,
    source_queue: &str,
    fifo: bool,
) -> OutgoingMessage {
    use dead_letter_attributes as n;
    let error: String = failure.error.chars().take(256).collect();
    let mut msg = OutgoingMessage::new(raw.body.clone());
    msg.attributes = raw.attributes.clone();
    let own = msg.attributes.len();
    if own + 4 <= MAX_MESSAGE_ATTRIBUTES {
        msg.attributes.insert(n::ERROR_KIND.into(), AttributeValue::string(failure.kind.as_str()));
        msg.attributes
            .insert(n::ERROR.into(), AttributeValue::string(if error.is_empty() { "-".into() } else { error }));
        msg.attributes.insert(n::SOURCE_QUEUE.into(), AttributeValue::string(source_queue));
        msg.attributes.insert(n::RECEIVE_COUNT.into(), AttributeValue::number(raw.receive_count()));
    } else if own < MAX_MESSAGE_ATTRIBUTES {
        let combined = serde_json::json!({
            "kind": failure.kind.as_str(), "error": error, "source_queue": source_queue, "receive_count": raw.receive_count(),
        });
        msg.attributes.insert(
            n::COMBINED.into(),
            AttributeValue {
                data_type: "String.json".into(),
                string_value: Some(combined.to_string()),
                binary_value: None,
            },
        );
    } else {
        tracing::warn!(message_id = %raw.message_id, kind = failure.kind.as_str(), error = %failure.error,
            "message already has 10 attributes; dead-lettering it without error attributes");
    }
    // Never make the message too large for the DLQ by adding attributes.
    if msg.payload_size() > MAX_PAYLOAD_BYTES {
        msg.attributes = raw.attributes.clone();
    }
    if fifo {
        msg.group_id = Some(raw.group_id().unwrap_or("sqskit-dead-letter").to_string());
        msg.dedup_id = Some(raw.message_id.clone());
    }
    msg
}

/// What [`Processor::settle`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SettleReport {
    /// Messages deleted (successes and dead-lettered ones).
    pub deleted: usize,
    /// Messages whose visibility was set for a retry (including FIFO held ones).
    pub retried: usize,
    /// Messages sent to the DLQ.
    pub dead_lettered: usize,
    /// Errors met (the affected messages come back after their visibility timeout).
    pub errors: Vec<String>,
}

/// Send dead letters to the DLQ; returns the ones sent and the ones that must be retried instead.
pub(crate) async fn send_dead_letters(
    ctx: &QueueContext,
    letters: &[(Arc<ReceivedMessage>, Failure)],
    errors: &mut Vec<String>,
) -> (Vec<Arc<ReceivedMessage>>, Vec<Arc<ReceivedMessage>>) {
    if letters.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let Some(dlq) = &ctx.dlq else {
        return (Vec::new(), letters.iter().map(|(m, _)| m.clone()).collect());
    };
    let source = ctx.queue_name().to_string();
    let outgoing: Vec<OutgoingMessage> =
        letters.iter().map(|(m, f)| dead_letter_message(m, f, &source, dlq.is_fifo())).collect();
    match dlq.send_batch(outgoing).await {
        Ok(report) => {
            for f in &report.failed {
                errors.push(format!(
                    "dead-letter send failed for {}: {}: {}",
                    letters[f.index].0.message_id, f.code, f.message
                ));
            }
            let sent = report.sent.iter().map(|s| letters[s.index].0.clone()).collect();
            let failed = report.failed.iter().map(|f| letters[f.index].0.clone()).collect();
            metrics::counter!(crate::metrics::names::DEAD_LETTERED).increment(report.sent.len() as u64);
            (sent, failed)
        }
        Err(e) => {
            errors.push(format!("dead-letter send to {} failed: {e}", dlq.name()));
            (Vec::new(), letters.iter().map(|(m, _)| m.clone()).collect())
        }
    }
}

async fn settle(ctx: &QueueContext, decisions: &[Decision], backoff: &Backoff) -> SettleReport {
    let mut report = SettleReport::default();
    let Some(queue) = &ctx.queue else {
        report.errors.push("no source queue known: nothing settled".into());
        return report;
    };
    let mut actions = Actions::plan(decisions);
    let (sent, unsent) = send_dead_letters(ctx, &actions.dead_letter, &mut report.errors).await;
    report.dead_lettered = sent.len();
    actions.delete.extend(sent);
    for m in unsent {
        let v = retry_visibility(&m, backoff.delay(m.receive_count()));
        actions.visibility.push((m, v));
    }
    if !actions.delete.is_empty() {
        let handles: Vec<&str> = actions.delete.iter().map(|m| m.receipt_handle.as_str()).collect();
        match queue.delete_batch(&handles).await {
            Ok(r) => {
                report.deleted = r.succeeded.len();
                report.errors.extend(
                    r.failed
                        .iter()
                        .map(|f| format!("delete {}: {}: {}", actions.delete[f.index].message_id, f.code, f.message)),
                );
            }
            Err(e) => report.errors.push(format!("delete failed: {e}")),
        }
    }
    if !actions.visibility.is_empty() {
        let entries: Vec<(&str, u32)> =
            actions.visibility.iter().map(|(m, v)| (m.receipt_handle.as_str(), *v)).collect();
        match queue.change_visibility_each(&entries).await {
            Ok(r) => {
                report.retried = r.succeeded.len();
                report.errors.extend(r.failed.iter().map(|f| {
                    format!("change visibility {}: {}: {}", actions.visibility[f.index].0.message_id, f.code, f.message)
                }));
            }
            Err(e) => report.errors.push(format!("change visibility failed: {e}")),
        }
    }
    for e in &report.errors {
        tracing::error!(queue = queue.name(), error = %e, "settling a batch");
    }
    report
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
