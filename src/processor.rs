//! The batch processor: the one place where a handler's result becomes an action on SQS.
//!
//! It runs handlers (decoding the body, catching panics, enforcing an optional
//! timeout), turns each result into an [`Outcome`] and applies the FIFO rules. A
//! message that must be dead-lettered is sent to the DLQ right away, so that an
//! outcome is only [`Outcome::DeadLetter`] once the DLQ has it; everything else is
//! carried out by [`settle`](crate::settle), the one path the poller, the Lambda
//! adapter and [`Processor::settle`] share. Whether a queue is FIFO is a property of
//! the queue ([`QueueContext::fifo`]), never of a message: on a standard queue a
//! `MessageGroupId` names a tenant (fair queues) and every message is independent.
//!
//! | handler result | outcome | SQS action |
//! |---|---|---|
//! | `Ok(())` | [`Outcome::Succeeded`] | delete |
//! | retryable / panic / timeout | [`Outcome::Retry`] | visibility = backoff (or retry-after) |
//! | retryable on the last receive the redrive policy allows, DLQ known | [`Outcome::DeadLetter`] (`retries-exhausted`) | sent to the DLQ with the last error, delete |
//! | permanent / undecodable, DLQ known | [`Outcome::DeadLetter`] | sent to the DLQ with error attributes, delete |
//! | permanent / undecodable, no DLQ, or the DLQ send failed | [`Outcome::Retry`] (with a warning) | visibility = backoff |
//! | FIFO: later message of a failed group | [`Outcome::Held`] | same visibility as the failed one, in the same call, after it |

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::client::Queue;
use crate::error::Error;
use crate::limits::clamp_visibility;
use crate::message::{Message, ReceivedMessage};
use crate::retry::Backoff;
pub use crate::settle::{dead_letter_attributes, dead_letter_message, Actions, SettleReport};

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
    /// The handler overran its timeout, or its lease could not be extended any further.
    TimedOut,
    /// A retryable failure on the last receive the queue's redrive policy allows: dead-lettered
    /// by sqskit with the last error, instead of being moved by SQS without one.
    RetriesExhausted,
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
            Self::RetriesExhausted => "retries-exhausted",
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
    /// Failed for good and sent to the DLQ (the send is confirmed): delete it.
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

/// Where messages come from and where dead ones go: the source queue (when known), its DLQ,
/// whether it is FIFO, and how many receives its redrive policy allows.
#[derive(Debug, Clone, Default)]
pub struct QueueContext {
    /// The source queue (needed to delete and change visibility).
    pub queue: Option<Queue>,
    /// The dead-letter queue (from the redrive policy or configured).
    pub dlq: Option<Queue>,
    /// Whether the source queue is FIFO. Decided from the queue (`.fifo` name, `FifoQueue`
    /// attribute, event source ARN), never from a message's `MessageGroupId`.
    pub fifo: bool,
    /// `maxReceiveCount` of the redrive policy, when known: a retryable failure on that
    /// receive is dead-lettered by sqskit (kind `retries-exhausted`) with its error.
    pub max_receive_count: Option<u32>,
}

impl QueueContext {
    /// Context for `queue`, with its DLQ and `maxReceiveCount` from the redrive policy and
    /// FIFO-ness from the `FifoQueue` attribute.
    ///
    /// # Errors
    /// When `GetQueueAttributes` fails (e.g. the queue does not exist), or the DLQ named by
    /// the redrive policy cannot be looked up for a reason other than not existing.
    pub async fn discover(queue: Queue) -> Result<Self, Error> {
        let attrs = queue.attributes().await?;
        let fifo = attrs.fifo || queue.is_fifo();
        let (dlq, max_receive_count) = match attrs.redrive {
            Some(r) => (r.dead_letter_url.map(|u| Queue::new(queue.client().clone(), u)), Some(r.max_receive_count)),
            None => (None, None),
        };
        Ok(Self { queue: Some(queue), dlq: None, fifo, max_receive_count }.with_dlq(dlq))
    }

    /// Context with an explicit DLQ (or none). FIFO-ness comes from the queue's name.
    pub fn new(queue: Queue, dlq: Option<Queue>) -> Self {
        let fifo = queue.is_fifo();
        Self { queue: Some(queue), dlq: None, fifo, max_receive_count: None }.with_dlq(dlq)
    }

    /// Context for messages whose queue could not be resolved: only FIFO-ness is known.
    pub fn unresolved(fifo: bool) -> Self {
        Self { fifo, ..Self::default() }
    }

    /// Use `dlq` as the dead-letter queue. A DLQ whose type (FIFO or standard) differs from
    /// the source's is refused with an error log: SQS itself does not allow it, and sending a
    /// FIFO message to a standard DLQ would lose its group order.
    pub fn with_dlq(mut self, dlq: Option<Queue>) -> Self {
        self.dlq = match dlq {
            Some(d) if d.is_fifo() != self.fifo => {
                tracing::error!(
                    queue = self.queue_name(),
                    dlq = d.name(),
                    source_fifo = self.fifo,
                    "the dead-letter queue's type (FIFO or standard) differs from the source queue's; not using it"
                );
                None
            }
            other => other,
        };
        self
    }

    /// Set `maxReceiveCount` (when the redrive policy is not read, e.g. a configured Lambda).
    pub fn with_max_receive_count(mut self, max: Option<u32>) -> Self {
        self.max_receive_count = max.filter(|m| *m > 0);
        self
    }

    pub(crate) fn queue_name(&self) -> &str {
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
    /// Put the full decoding error (which may quote the body) in logs and DLQ attributes.
    /// Off by default: only the error's category, line and column are recorded.
    pub log_bodies: bool,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self { backoff: Backoff::default(), timeout: None, concurrency: 10, log_bodies: false }
    }
}

type Decoder<T> = fn(&str, bool) -> Result<T, String>;

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
/// processor.settle(&ctx, &decisions).await;               // delete / backoff
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

/// The decoding error for logs and DLQ attributes: by default only its category, line and
/// column, because serde's message may quote the offending value (personal data).
fn decode_json<T: DeserializeOwned>(body: &str, full: bool) -> Result<T, String> {
    serde_json::from_str(body).map_err(|e| {
        let ty = std::any::type_name::<T>();
        if full {
            return format!("body is not a valid {ty}: {e}");
        }
        let category = match e.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        };
        format!("body is not a valid {ty}: {category} error at line {} column {}", e.line(), e.column())
    })
}

fn decode_raw(body: &str, _full: bool) -> Result<String, String> {
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
        self.run_until(raw, None).await
    }

    /// As [`Processor::run`]; when `cancel` fires while the handler runs, the handler is
    /// dropped and the result is a [`FailureKind::TimedOut`] failure (the poller uses this
    /// when a message's lease cannot be extended any further).
    pub async fn run_until(
        &self,
        raw: Arc<ReceivedMessage>,
        cancel: Option<&CancellationToken>,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        let body = (self.decode)(&raw.body, self.config.log_bodies).map_err(|error| Failure {
            kind: FailureKind::Undecodable,
            error,
            retry_after: None,
        })?;
        let fut = AssertUnwindSafe(self.handler.call(Message::new(body, raw.clone()))).catch_unwind();
        let timed_out = |error: String| Err(Failure { kind: FailureKind::TimedOut, error, retry_after: None });
        let limited = async {
            match self.config.timeout {
                Some(t) => match tokio::time::timeout(t, fut).await {
                    Ok(r) => Ok(r),
                    Err(_) => Err(format!("handler overran its {t:?} timeout")),
                },
                None => Ok(fut.await),
            }
        };
        let never = CancellationToken::new();
        let cancel = cancel.unwrap_or(&never);
        let result = tokio::select! {
            r = limited => match r { Ok(r) => r, Err(e) => return timed_out(e) },
            _ = cancel.cancelled() => {
                return timed_out("handler cancelled: its lease reached the longest visibility extension allowed".into())
            }
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

    /// Turn a handler result into an outcome, before any I/O: [`Outcome::DeadLetter`] here
    /// means "to be dead-lettered" ([`Processor::process_one`] sends it and falls back to a
    /// retry when the send fails). Pure apart from the jitter.
    ///
    /// A retryable failure on the last receive the redrive policy allows
    /// (`receive count ≥ maxReceiveCount`) is dead-lettered as
    /// [`FailureKind::RetriesExhausted`] with the last error, so the DLQ sees why.
    pub fn decide(&self, ctx: &QueueContext, raw: &ReceivedMessage, result: Result<(), Failure>) -> Outcome {
        let failure = match result {
            Ok(()) => return Outcome::Succeeded,
            Err(f) => f,
        };
        let has_dlq = ctx.dlq.is_some();
        if failure.kind.is_permanent() {
            if has_dlq {
                return Outcome::DeadLetter { failure };
            }
            tracing::warn!(message_id = %raw.message_id, kind = failure.kind.as_str(),
                "permanent failure but no dead-letter queue is known; retrying with backoff instead");
        } else if has_dlq && ctx.max_receive_count.is_some_and(|max| raw.receive_count() >= max) {
            let error = format!("{}: {}", failure.kind.as_str(), failure.error);
            return Outcome::DeadLetter {
                failure: Failure { kind: FailureKind::RetriesExhausted, error, retry_after: None },
            };
        }
        let wanted = failure.retry_after.unwrap_or_else(|| self.config.backoff.delay(raw.receive_count()));
        let visibility = retry_visibility(raw, wanted);
        Outcome::Retry { visibility, failure }
    }

    /// Run and decide one message, inside a tracing span with its id, queue and receive count.
    /// A message to dead-letter is sent to the DLQ before this returns: the outcome is
    /// [`Outcome::DeadLetter`] only when the DLQ confirmed it, else a retry with backoff.
    pub async fn process_one(&self, ctx: &QueueContext, raw: Arc<ReceivedMessage>) -> Outcome {
        self.process_one_until(ctx, raw, None).await
    }

    async fn process_one_until(
        &self,
        ctx: &QueueContext,
        raw: Arc<ReceivedMessage>,
        cancel: Option<&CancellationToken>,
    ) -> Outcome {
        let span = tracing::info_span!("message", message_id = %raw.message_id, queue = ctx.queue_name(), receive_count = raw.receive_count());
        async {
            let result = self.run_until(raw.clone(), cancel).await;
            let mut outcome = self.decide(ctx, &raw, result);
            if let Outcome::DeadLetter { failure } = &outcome {
                if let Err(e) = crate::settle::dead_letter(ctx, &raw, failure).await {
                    let visibility = retry_visibility(&raw, self.config.backoff.delay(raw.receive_count()));
                    tracing::error!(kind = failure.kind.as_str(), error = %e, visibility,
                        "dead-letter send failed; the message will be retried instead");
                    let error = format!("{}; dead-letter send failed: {e}", failure.error);
                    outcome = Outcome::Retry { visibility, failure: Failure { error, ..failure.clone() } };
                }
            }
            if let Outcome::Retry { failure, .. } | Outcome::DeadLetter { failure } = &outcome {
                metrics::counter!(crate::metrics::names::FAILED, "kind" => failure.kind.as_str()).increment(1);
            }
            match &outcome {
                Outcome::Succeeded => tracing::debug!("processed"),
                Outcome::Retry { visibility, failure } => {
                    tracing::warn!(kind = failure.kind.as_str(), error = %failure.error, visibility, "failed; will retry")
                }
                Outcome::DeadLetter { failure } => {
                    tracing::warn!(kind = failure.kind.as_str(), error = %failure.error, "failed permanently; dead-lettered")
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
    /// [`Outcome::Held`] with its visibility. Dead-lettered messages do not stop the sequence
    /// (their DLQ send is confirmed before the next message starts; a failed send is a retry).
    pub async fn process_sequence(&self, ctx: &QueueContext, messages: Vec<Arc<ReceivedMessage>>) -> Vec<Decision> {
        self.process_sequence_until(ctx, messages, None).await
    }

    /// As [`Processor::process_sequence`], but once `stop` is cancelled no further message is
    /// started: the rest are [`Outcome::Released`] (or held, when an earlier one failed).
    pub async fn process_sequence_until(
        &self,
        ctx: &QueueContext,
        messages: Vec<Arc<ReceivedMessage>>,
        stop: Option<&CancellationToken>,
    ) -> Vec<Decision> {
        let mut seq = Sequence::new(self, ctx, messages, stop, None);
        let mut out = Vec::with_capacity(seq.len());
        while let Some(d) = seq.next().await {
            out.push(d);
        }
        out
    }

    /// Process a received batch and return one decision per message, in input order.
    ///
    /// Standard queue: messages run concurrently (up to `concurrency`), whatever their
    /// `MessageGroupId` (a tenant id on fair queues). FIFO ([`QueueContext::fifo`]): each group
    /// runs in order through [`Processor::process_sequence`], groups concurrently.
    pub async fn process_batch(&self, ctx: &QueueContext, messages: Vec<ReceivedMessage>) -> Vec<Decision> {
        self.process_batch_until(ctx, messages, None).await
    }

    /// As [`Processor::process_batch`], but once `stop` is cancelled no further message is
    /// started: those not started are [`Outcome::Released`] (the Lambda adapter cancels it
    /// when the invocation's deadline nears).
    pub async fn process_batch_until(
        &self,
        ctx: &QueueContext,
        messages: Vec<ReceivedMessage>,
        stop: Option<&CancellationToken>,
    ) -> Vec<Decision> {
        let messages: Vec<Arc<ReceivedMessage>> = messages.into_iter().map(Arc::new).collect();
        let limit = self.config.concurrency.max(1);
        if ctx.fifo {
            let seqs = fifo_groups(messages.clone());
            let decided: Vec<Vec<Decision>> =
                futures::stream::iter(seqs.into_iter().map(|s| self.process_sequence_until(ctx, s, stop)))
                    .buffer_unordered(limit)
                    .collect()
                    .await;
            let mut by_id: HashMap<String, Decision> =
                decided.into_iter().flatten().map(|d| (d.message.message_id.clone(), d)).collect();
            messages.iter().filter_map(|m| by_id.remove(&m.message_id)).collect()
        } else {
            futures::stream::iter(messages.into_iter().map(|m| async move {
                let outcome = if stop.is_some_and(CancellationToken::is_cancelled) {
                    Outcome::Released
                } else {
                    self.process_one(ctx, m.clone()).await
                };
                Decision { message: m, outcome }
            }))
            .buffered(limit)
            .collect()
            .await
        }
    }

    /// Carry out decisions on SQS through [`settle::settle`](crate::settle::settle): delete
    /// successes and dead-lettered messages, set visibility for retries with each FIFO
    /// failure followed by the messages held behind it in the same call.
    pub async fn settle(&self, ctx: &QueueContext, decisions: &[Decision]) -> SettleReport {
        crate::settle::settle(ctx, decisions).await
    }
}

/// A strict sequence in progress (one FIFO group, or a Lambda FIFO batch): yields one decision
/// at a time, so a runtime can settle each message as soon as its outcome is known.
pub(crate) struct Sequence<'a, T> {
    processor: &'a Processor<T>,
    ctx: &'a QueueContext,
    rest: std::collections::VecDeque<Arc<ReceivedMessage>>,
    blocked: Option<(String, u32)>,
    stop: Option<&'a CancellationToken>,
    lease: Option<&'a CancellationToken>,
}

impl<'a, T: Send + 'static> Sequence<'a, T> {
    /// `stop`: start nothing more (the rest are released). `lease`: cancel the running
    /// handler (a retryable timeout; the rest are held behind it) and start nothing more.
    pub(crate) fn new(
        processor: &'a Processor<T>,
        ctx: &'a QueueContext,
        messages: Vec<Arc<ReceivedMessage>>,
        stop: Option<&'a CancellationToken>,
        lease: Option<&'a CancellationToken>,
    ) -> Self {
        Self { processor, ctx, rest: messages.into(), blocked: None, stop, lease }
    }

    pub(crate) fn len(&self) -> usize {
        self.rest.len()
    }

    pub(crate) async fn next(&mut self) -> Option<Decision> {
        let m = self.rest.pop_front()?;
        let stopped = |t: Option<&CancellationToken>| t.is_some_and(CancellationToken::is_cancelled);
        let outcome = match &self.blocked {
            Some((behind, visibility)) => Outcome::Held { visibility: *visibility, behind: behind.clone() },
            None if stopped(self.stop) || stopped(self.lease) => Outcome::Released,
            None => {
                let outcome = self.processor.process_one_until(self.ctx, m.clone(), self.lease).await;
                if let Outcome::Retry { visibility, .. } = &outcome {
                    self.blocked = Some((m.message_id.clone(), *visibility));
                }
                outcome
            }
        };
        Some(Decision { message: m, outcome })
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

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "handler panicked".to_string());
    format!("panicked: {text}")
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
