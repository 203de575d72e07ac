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
//! | idempotency key already completed ([`Processor::with_idempotency`]) | [`Outcome::Duplicate`] (handler not run) | delete |
//! | idempotency key held by another consumer | [`Outcome::Retry`] ([`FailureKind::InProgress`]) | visibility = the claim's remaining time |

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
use crate::idempotency::{Claim, CountKind, Idempotency, Lease, LocalHold, Record, Status};
use crate::limits::clamp_visibility;
use crate::message::{Message, ReceivedMessage};
use crate::retry::Backoff;
pub use crate::settle::{dead_letter_attributes, dead_letter_message, Actions, SettleReport};

/// A boxed, sendable future returned by handlers.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A handler error's cause, kept for logs and callers (`std::error::Error::source` chain).
pub type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler returns when it cannot process a message.
///
/// Any `std::error::Error + Send + Sync + 'static` converts into a retryable `HandlerError`
/// (keeping it as the source), so `?` works in handlers; mark an error permanent with
/// [`HandlerError::permanent`] or [`ResultExt::permanent`].
///
/// # Example
/// ```
/// use sqskit::{HandlerError, Message, ResultExt};
///
/// async fn handle(msg: Message<String>) -> Result<(), HandlerError> {
///     let n: u64 = msg.body.trim().parse().permanent()?; // a bad number never gets better: DLQ
///     std::fs::metadata(format!("/tmp/{n}"))?;           // an I/O error: retry with backoff
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HandlerError {
    /// Try again later (with backoff, or after `retry_after` when given).
    #[non_exhaustive]
    Retryable {
        /// What went wrong (logged; never includes the body unless you put it there).
        message: String,
        /// Explicit delay before the message comes back.
        retry_after: Option<Duration>,
        /// The error it came from, if any.
        source: Option<Source>,
    },
    /// Will never succeed: dead-letter it now instead of burning receives.
    #[non_exhaustive]
    Permanent {
        /// What went wrong.
        message: String,
        /// The error it came from, if any.
        source: Option<Source>,
    },
}

/// `err` and its `source()` chain as one line: `outer: inner: innermost`.
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let part = e.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = e.source();
    }
    text
}

impl HandlerError {
    /// A retryable failure.
    pub fn retryable(err: impl std::fmt::Display) -> Self {
        Self::Retryable { message: err.to_string(), retry_after: None, source: None }
    }
    /// A retryable failure that should come back after `after`.
    pub fn retry_after(err: impl std::fmt::Display, after: Duration) -> Self {
        Self::Retryable { message: err.to_string(), retry_after: Some(after), source: None }
    }
    /// A permanent failure.
    pub fn permanent(err: impl std::fmt::Display) -> Self {
        Self::Permanent { message: err.to_string(), source: None }
    }
    /// A permanent failure caused by `err` (kept as the source).
    pub fn permanent_from(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Permanent { message: chain_text(&err), source: Some(Arc::new(err)) }
    }
    /// The error text.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable { message, .. } | Self::Permanent { message, .. } => message,
        }
    }
    /// The error this one came from, if any.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Self::Retryable { source, .. } | Self::Permanent { source, .. } => source.as_deref(),
        }
    }
    /// Whether this failure is permanent.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent { .. })
    }
    /// The explicit retry-after, if any.
    pub fn retry_after_hint(&self) -> Option<Duration> {
        match self {
            Self::Retryable { retry_after, .. } => *retry_after,
            Self::Permanent { .. } => None,
        }
    }
}

/// Any error converts into a retryable failure that keeps it as its source, so `?` works.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(err: E) -> Self {
        Self::Retryable { message: chain_text(&err), retry_after: None, source: Some(Arc::new(err)) }
    }
}

/// Equal when kind, text and retry-after are equal (sources are not compared).
impl PartialEq for HandlerError {
    fn eq(&self, other: &Self) -> bool {
        self.is_permanent() == other.is_permanent()
            && self.message() == other.message()
            && self.retry_after_hint() == other.retry_after_hint()
    }
}

impl Eq for HandlerError {}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retryable { message, .. } => write!(f, "retryable: {message}"),
            Self::Permanent { message, .. } => write!(f, "permanent: {message}"),
        }
    }
}

/// Short ways to classify an error in a handler.
pub trait ResultExt<T> {
    /// Turn the error into a permanent failure (dead-lettered at once), keeping it as the source.
    ///
    /// # Errors
    /// [`HandlerError::Permanent`] when `self` is an error.
    fn permanent(self) -> Result<T, HandlerError>;
    /// Turn the error into a retryable failure that comes back after `after`.
    ///
    /// # Errors
    /// [`HandlerError::Retryable`] when `self` is an error.
    fn retry_after(self, after: Duration) -> Result<T, HandlerError>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> ResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::permanent_from)
    }
    fn retry_after(self, after: Duration) -> Result<T, HandlerError> {
        self.map_err(|e| HandlerError::Retryable {
            message: chain_text(&e),
            retry_after: Some(after),
            source: Some(Arc::new(e)),
        })
    }
}

/// Why a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// Idempotency: another consumer holds the message's key; retried when its claim lapses.
    InProgress,
    /// Idempotency: the key was used before with a different payload (dead-lettered).
    KeyReuse,
    /// Idempotency: the store failed, so the handler was not run (retryable).
    IdempotencyStore,
    /// Claim check: the S3 object (or bucket) a pointer names does not exist (dead-lettered
    /// with the pointer). Other fetch failures are [`FailureKind::Retryable`].
    PayloadMissing,
}

impl FailureKind {
    /// Every kind, in declaration order (e.g. to validate a kind name a user typed).
    pub const ALL: [FailureKind; 10] = [
        Self::Retryable,
        Self::Permanent,
        Self::Undecodable,
        Self::Panicked,
        Self::TimedOut,
        Self::RetriesExhausted,
        Self::InProgress,
        Self::KeyReuse,
        Self::IdempotencyStore,
        Self::PayloadMissing,
    ];

    /// Stable lowercase name (metrics labels, DLQ attributes).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Undecodable => "undecodable",
            Self::Panicked => "panic",
            Self::TimedOut => "timeout",
            Self::RetriesExhausted => "retries-exhausted",
            Self::InProgress => "duplicate-in-progress",
            Self::KeyReuse => "idempotency-key-reuse",
            Self::IdempotencyStore => "idempotency-store",
            Self::PayloadMissing => "payload-missing",
        }
    }
    /// Whether messages failing this way belong in the dead-letter queue right away.
    pub fn is_permanent(self) -> bool {
        matches!(self, Self::Permanent | Self::Undecodable | Self::KeyReuse | Self::PayloadMissing)
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
#[non_exhaustive]
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
    /// Idempotency: its key was already completed, so the handler did not run: delete it.
    Duplicate,
    /// Not due yet (its `sqskit-deliver-at` is in the future): the next delay hop was sent,
    /// the handler did not run; delete this copy (see [`crate::delay`]).
    Deferred,
}

impl Outcome {
    /// True for [`Outcome::Succeeded`] and [`Outcome::Duplicate`] (both are deleted).
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded | Outcome::Duplicate)
    }
    /// Short name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Retry { failure, .. } => failure.kind.as_str(),
            Outcome::DeadLetter { failure } => failure.kind.as_str(),
            Outcome::Held { .. } => "held",
            Outcome::Released => "released",
            Outcome::Duplicate => "duplicate",
            Outcome::Deferred => "deferred",
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

/// Something that handles a whole batch at once (e.g. one bulk database write) and returns one
/// result per message, in the order given.
///
/// Implemented for every `Fn(Vec<Message<T>>) -> impl Future<Output = Vec<Result<(), HandlerError>>>`.
/// The outcomes, DLQ rules and Lambda partial responses are the same as for one-message
/// handlers. On FIFO queues the whole batch is handed over in order; after a message of a group
/// failed, the later messages of that group are held behind it (not deleted, even if the
/// handler reported them done), so they run again after it: keep batch handlers idempotent.
/// A result list of the wrong length fails the whole batch (retryable).
///
/// # Example
/// ```
/// use sqskit::{HandlerError, Message, Processor};
/// let p = Processor::json_batch(|batch: Vec<Message<serde_json::Value>>| async move {
///     // one bulk write for the whole batch, then one result per message
///     batch.iter().map(|_| Ok::<_, HandlerError>(())).collect::<Vec<_>>()
/// });
/// assert!(p.is_batch());
/// ```
pub trait BatchHandler<T>: Send + Sync + 'static {
    /// Handle a batch; return exactly one result per message, in order.
    fn call(&self, batch: Vec<Message<T>>) -> BoxFuture<Vec<Result<(), HandlerError>>>;
}

impl<T, F, Fut> BatchHandler<T> for F
where
    F: Fn(Vec<Message<T>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<(), HandlerError>>> + Send + 'static,
{
    fn call(&self, batch: Vec<Message<T>>) -> BoxFuture<Vec<Result<(), HandlerError>>> {
        Box::pin(self(batch))
    }
}

enum Handlers<T> {
    One(Arc<dyn Handler<T>>),
    Batch(Arc<dyn BatchHandler<T>>),
}

impl<T> Clone for Handlers<T> {
    fn clone(&self) -> Self {
        match self {
            Self::One(h) => Self::One(h.clone()),
            Self::Batch(h) => Self::Batch(h.clone()),
        }
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
    /// How long a received message stays ours (idempotency claims lapse with it).
    pub lease: Lease,
    /// Start limits each message waits for before it is handled (this queue's, the
    /// process's; see [`crate::rate`]).
    pub rates: Vec<Arc<crate::rate::RateLimit>>,
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
        let lease =
            attrs.visibility_timeout.map(|v| Lease::Visibility(Duration::from_secs(v.into()))).unwrap_or_default();
        Ok(Self { queue: Some(queue), dlq: None, fifo, max_receive_count, lease, rates: Vec::new() }.with_dlq(dlq))
    }

    /// Context with an explicit DLQ (or none). FIFO-ness comes from the queue's name.
    pub fn new(queue: Queue, dlq: Option<Queue>) -> Self {
        let fifo = queue.is_fifo();
        Self {
            queue: Some(queue),
            dlq: None,
            fifo,
            max_receive_count: None,
            lease: Lease::default(),
            rates: Vec::new(),
        }
        .with_dlq(dlq)
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

    /// Set the lease (the poller's visibility timeout, a Lambda invocation's deadline).
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = lease;
        self
    }

    /// Add a start limit: each message of this context waits for it before it is handled
    /// (several limits: each in turn, e.g. the queue's and the process's).
    pub fn with_rate(mut self, rate: Arc<crate::rate::RateLimit>) -> Self {
        self.rates.push(rate);
        self
    }

    /// Wait for every start limit.
    pub(crate) async fn start_gate(&self) {
        if !self.rates.is_empty() {
            crate::rate::RateLimit::start_all(&self.rates).await;
        }
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

/// Processor settings: `ProcessorConfig::default()` and the `with_*` setters.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use sqskit::{retry::Backoff, ProcessorConfig};
/// let c = ProcessorConfig::default()
///     .with_timeout(Some(Duration::from_secs(30)))
///     .with_backoff(Backoff::default().with_base(Duration::from_secs(5)));
/// assert_eq!(c.backoff.base, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Longest delay hop when re-sending a message that is not due yet (900 s; see
    /// [`crate::delay`]).
    pub delay_hop: Duration,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            timeout: None,
            concurrency: 10,
            log_bodies: false,
            delay_hop: crate::delay::MAX_HOP,
        }
    }
}

impl ProcessorConfig {
    /// Set the backoff for retryable failures.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
    /// Set (or clear) the per-message handler timeout.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
    /// Set how many messages of a batch run at once.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }
    /// Shorten the delay hops of messages re-sent because they are not due yet (1 s to 900 s;
    /// tests and demos).
    pub fn with_delay_hop(mut self, hop: Duration) -> Self {
        self.delay_hop = hop.clamp(Duration::from_secs(1), crate::delay::MAX_HOP);
        self
    }
    /// Put full decoding errors (which may quote the body) in logs and DLQ attributes.
    pub fn with_log_bodies(mut self, on: bool) -> Self {
        self.log_bodies = on;
        self
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
    handler: Handlers<T>,
    decode: Decoder<T>,
    config: ProcessorConfig,
    idempotency: Option<Idempotency<T>>,
    #[cfg(feature = "payload")]
    claim_check: Option<crate::payload::ClaimCheck>,
}

impl<T> Clone for Processor<T> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            decode: self.decode,
            config: self.config.clone(),
            idempotency: self.idempotency.clone(),
            #[cfg(feature = "payload")]
            claim_check: self.claim_check.clone(),
        }
    }
}

impl<T> Processor<T> {
    fn build(handler: Handlers<T>, decode: Decoder<T>) -> Self {
        Self {
            handler,
            decode,
            config: ProcessorConfig::default(),
            idempotency: None,
            #[cfg(feature = "payload")]
            claim_check: None,
        }
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
        Self::build(Handlers::One(Arc::new(handler)), decode_json::<T>)
    }
    /// A processor whose batch handler gets the bodies decoded from JSON into `T` (an
    /// undecodable body fails that message alone and is not passed to the handler).
    pub fn json_batch(handler: impl BatchHandler<T>) -> Self {
        Self::build(Handlers::Batch(Arc::new(handler)), decode_json::<T>)
    }
}

impl Processor<String> {
    /// A processor whose handler gets the raw body.
    pub fn raw(handler: impl Handler<String>) -> Self {
        Self::build(Handlers::One(Arc::new(handler)), decode_raw)
    }
    /// A processor whose batch handler gets the raw bodies.
    pub fn raw_batch(handler: impl BatchHandler<String>) -> Self {
        Self::build(Handlers::Batch(Arc::new(handler)), decode_raw)
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
    /// Whether the handler takes whole batches ([`BatchHandler`]).
    pub fn is_batch(&self) -> bool {
        matches!(self.handler, Handlers::Batch(_))
    }

    /// Run each logical message once: claim its idempotency key before the handler runs (see
    /// [`idempotency`](crate::idempotency)). Works with one-message and batch handlers, on
    /// standard and FIFO queues (a duplicate in a FIFO group counts as done and the group goes on).
    ///
    /// # Example
    /// ```
    /// use sqskit::idempotency::{Idempotency, KeySource, MemoryStore};
    /// use sqskit::{HandlerError, Processor};
    /// let p = Processor::raw(|_m| async { Ok::<_, HandlerError>(()) })
    ///     .with_idempotency(Idempotency::new(MemoryStore::new()).with_key_source(KeySource::Pointer("/order_id".into())));
    /// assert!(p.idempotency().is_some());
    /// ```
    pub fn with_idempotency(mut self, idempotency: Idempotency<T>) -> Self {
        self.idempotency = Some(idempotency);
        self
    }

    /// Resolve claim-checked messages (Amazon SQS Extended Client pointers) through `check`
    /// before decoding: the handler sees the real body, without the size attribute. A missing
    /// object is [`FailureKind::PayloadMissing`] (dead-lettered with the pointer), another
    /// fetch failure a retryable one. Without it, the claim check of the context's queue
    /// ([`Queue::with_claim_check`]) is used, if any.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() {
    /// use sqskit::{payload::ClaimCheck, HandlerError, Processor};
    /// let sdk = sqskit::load_aws_config().await;
    /// let p = Processor::raw(|_m| async { Ok::<_, HandlerError>(()) })
    ///     .with_claim_check(ClaimCheck::new(sqskit::payload::s3_client(&sdk), "payloads"));
    /// assert!(p.claim_check().is_some());
    /// # }
    /// ```
    #[cfg(feature = "payload")]
    pub fn with_claim_check(mut self, check: crate::payload::ClaimCheck) -> Self {
        self.claim_check = Some(check);
        self
    }

    /// The claim check set with [`Processor::with_claim_check`].
    #[cfg(feature = "payload")]
    pub fn claim_check(&self) -> Option<&crate::payload::ClaimCheck> {
        self.claim_check.as_ref()
    }

    /// The message the handler sees: a claim-checked one with its body fetched from S3
    /// (feature `payload`), else `raw` itself. The caller keeps `raw` (the pointer) for its
    /// decision, so dead-lettering forwards the pointer. A pointer that no claim check here can
    /// fetch, and (standard queues) a `sqskit-deliver-at` that cannot be honoured, fail the
    /// message as `undecodable` instead of reaching the handler.
    async fn resolve(
        &self,
        ctx: Option<&QueueContext>,
        raw: Arc<ReceivedMessage>,
    ) -> Result<Arc<ReceivedMessage>, Failure> {
        if let Some(failure) =
            ctx.filter(|c| !c.fifo).and_then(|_| crate::delay::refused(&raw, std::time::SystemTime::now()))
        {
            return Err(failure);
        }
        #[cfg(feature = "payload")]
        {
            let from_queue = ctx.and_then(|c| c.queue.as_ref()).and_then(Queue::claim_check);
            if let Some(check) = self.claim_check.as_ref().or(from_queue) {
                // boxed: the S3 call's future is large and most messages take no claim check;
                // kept inline it would be copied with every message's future (see `attempt`)
                return match Box::pin(check.resolve(&raw)).await {
                    Ok(Some(resolved)) => Ok(Arc::new(resolved)),
                    Ok(None) => Ok(raw),
                    Err(e) => Err(e.failure()),
                };
            }
            if let Some(failure) = crate::payload::unresolvable(&raw) {
                return Err(failure);
            }
        }
        // (`payload::SIZE_ATTRIBUTE` and its legacy name: that module is not built here)
        #[cfg(not(feature = "payload"))]
        if ["ExtendedPayloadSize", "SQSLargePayloadSize"].iter().any(|a| raw.attributes.contains_key(*a)) {
            let error = "claim check: the body is an Amazon SQS Extended Client pointer to S3, and this build \
                         cannot fetch it (sqskit's `payload` feature)";
            return Err(Failure { kind: FailureKind::Undecodable, error: error.into(), retry_after: None });
        }
        Ok(raw)
    }

    /// The idempotency settings, when set.
    pub fn idempotency(&self) -> Option<&Idempotency<T>> {
        self.idempotency.as_ref()
    }

    /// What the idempotency checks found so far (zeros without idempotency).
    pub fn idempotency_counts(&self) -> crate::idempotency::IdempotencyCounts {
        self.idempotency.as_ref().map(Idempotency::counts).unwrap_or_default()
    }

    /// Move the in-progress expiry of the idempotency claims of `messages` (those running)
    /// to `until`. The poller's heartbeat calls it after extending their visibility.
    pub async fn extend_claims(&self, messages: &[Arc<ReceivedMessage>], until: std::time::SystemTime) {
        let Some(idem) = &self.idempotency else { return };
        let keys: Vec<String> = messages.iter().filter_map(|m| idem.local.key_of_running(&m.message_id)).collect();
        let calls = keys.iter().map(|k| idem.store.extend(k, until));
        for r in futures::future::join_all(calls).await {
            if let Err(e) = r {
                idem.count(CountKind::StoreError);
                tracing::warn!(error = %e, "could not extend an idempotency claim; it may lapse before the handler ends");
            }
        }
    }

    /// Run the handler on one message and return what went wrong, if anything.
    /// Never panics: decode errors, panics and timeouts become failures. A duplicate
    /// (idempotency) is `Ok` without running the handler.
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
        self.attempt(None, Lease::default(), raw, cancel).await.map(|_| ())
    }

    /// Resolve a claim check, decode, claim the idempotency key (when configured), run the
    /// handler, record the result.
    async fn attempt(
        &self,
        ctx: Option<&QueueContext>,
        lease: Lease,
        raw: Arc<ReceivedMessage>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Done, Failure> {
        if let Some(ctx) = ctx {
            ctx.start_gate().await;
        }
        let raw = self.resolve(ctx, raw).await?;
        let body = (self.decode)(&raw.body, self.config.log_bodies).map_err(|error| Failure {
            kind: FailureKind::Undecodable,
            error,
            retry_after: None,
        })?;
        let msg = Message::new(body, raw.clone());
        let Some(idem) = &self.idempotency else {
            return self.call_one(msg, cancel).await.map(|()| Done::Handled);
        };
        // Boxed, like every store or S3 call on this path: the futures of SDK calls are large
        // (kilobytes), and whatever sits inline in a message's future is copied each time the
        // future moves (into its task, into a select); without idempotency this costs nothing.
        Box::pin(self.attempt_idempotent(idem, lease, raw, msg, cancel)).await
    }

    async fn attempt_idempotent(
        &self,
        idem: &Idempotency<T>,
        lease: Lease,
        raw: Arc<ReceivedMessage>,
        msg: Message<T>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Done, Failure> {
        let id = match idem_key(idem, &msg)? {
            Some(id) => id,
            None => return self.call_one(msg, cancel).await.map(|()| Done::Handled),
        };
        let hold = idem.local.hold(&id.key).await;
        match claim(idem, lease, &raw, id).await? {
            Claimed::Run(record) => {
                let result = self.call_one(msg, cancel).await;
                finish(idem, &raw, record, result.is_ok()).await;
                drop(hold);
                result.map(|()| Done::Handled)
            }
            Claimed::Unguarded => self.call_one(msg, cancel).await.map(|()| Done::Handled),
            Claimed::Duplicate => Ok(Done::Duplicate),
        }
    }

    /// One message through the handler (a batch handler gets a batch of one), guarded.
    /// The message's trace context is [`current`](crate::trace::current) while the handler runs.
    async fn call_one(&self, msg: Message<T>, cancel: Option<&CancellationToken>) -> Result<(), Failure> {
        let trace = msg.trace();
        let call: BoxFuture<Result<(), HandlerError>> = match &self.handler {
            Handlers::One(h) => h.call(msg),
            Handlers::Batch(h) => {
                let fut = h.call(vec![msg]);
                Box::pin(async move {
                    let mut results = fut.await;
                    match (results.pop(), results.is_empty()) {
                        (Some(r), true) => r,
                        _ => Err(HandlerError::retryable("the batch handler did not return exactly one result")),
                    }
                })
            }
        };
        let call = Box::pin(crate::trace::scope(trace, call));
        self.guarded("handler", call, cancel).await?.map_err(failure_of)
    }

    /// Run a handler's future under the handler timeout, `cancel` (a lease that cannot be
    /// extended) and a panic guard; record its duration when it completed. `what` names it in
    /// the error texts.
    async fn guarded<R>(
        &self,
        what: &str,
        call: BoxFuture<R>,
        cancel: Option<&CancellationToken>,
    ) -> Result<R, Failure> {
        let started = Instant::now();
        let fut = AssertUnwindSafe(call).catch_unwind();
        let failed = |kind: FailureKind, error: String| Err(Failure { kind, error, retry_after: None });
        let limited = async {
            match self.config.timeout {
                Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| format!("{what} overran its {t:?} timeout")),
                None => Ok(fut.await),
            }
        };
        let never;
        let cancel = match cancel {
            Some(c) => c,
            None => {
                never = CancellationToken::new();
                &never
            }
        };
        // biased, the handler first: one that is done at its first poll never registers
        // with `cancel` (a lock in the token)
        let result = tokio::select! {
            biased;
            r = limited => match r { Ok(r) => r, Err(e) => return failed(FailureKind::TimedOut, e) },
            _ = cancel.cancelled() => {
                return failed(
                    FailureKind::TimedOut,
                    format!("{what} cancelled: its lease reached the longest visibility extension allowed"),
                )
            }
        };
        metrics::histogram!(crate::metrics::names::HANDLER_DURATION).record(started.elapsed().as_secs_f64());
        result.or_else(|panic| failed(FailureKind::Panicked, panic_text(&panic)))
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
        let span = crate::trace::message_span(&raw, ctx.queue_name());
        async {
            if let Some(outcome) = self.defer(ctx, &raw).await {
                return outcome;
            }
            let result = self.attempt(Some(ctx), ctx.lease, raw.clone(), cancel).await;
            self.conclude(ctx, &raw, result).await
        }
        .instrument(span)
        .await
    }

    /// A standard-queue message whose `sqskit-deliver-at` is still ahead: send its next hop
    /// and make this copy [`Outcome::Deferred`] (the handler does not run). When that send
    /// fails, a retry with the remaining time as visibility (this one counts a receive).
    async fn defer(&self, ctx: &QueueContext, raw: &ReceivedMessage) -> Option<Outcome> {
        if ctx.fifo || !crate::delay::carries_due_time(raw) {
            return None;
        }
        let left = crate::delay::remaining(raw, std::time::SystemTime::now())?;
        let Some(queue) = &ctx.queue else {
            tracing::warn!("not due yet, but the source queue is unknown: handled now");
            return None;
        };
        let next = crate::delay::next_hop(raw, left, self.config.delay_hop);
        // boxed: the send's future is large (kilobytes) and only deferred messages take it;
        // inline it would make every message's future that large (see `attempt`)
        match Box::pin(queue.send(next)).await {
            Ok(sent) => {
                tracing::debug!(next_message_id = %sent.message_id, remaining_s = left.as_secs(), "not due yet: re-sent with its next delay hop");
                metrics::counter!(crate::metrics::names::DEFERRED).increment(1);
                Some(Outcome::Deferred)
            }
            Err(e) => {
                let visibility = retry_visibility(raw, left.min(self.config.delay_hop));
                tracing::warn!(error = %e, visibility, "not due yet, and its next hop could not be sent: retrying it then");
                let failure = Failure {
                    kind: FailureKind::Retryable,
                    error: format!("delay hop not sent: {e}"),
                    retry_after: None,
                };
                Some(Outcome::Retry { visibility, failure })
            }
        }
    }

    /// Decide, dead-letter (confirmed) or fall back to a retry, count and log one result.
    async fn conclude(&self, ctx: &QueueContext, raw: &Arc<ReceivedMessage>, result: Result<Done, Failure>) -> Outcome {
        if let Ok(Done::Duplicate) = result {
            tracing::debug!("duplicate: its idempotency key was already completed; not run");
            return Outcome::Duplicate;
        }
        let mut outcome = self.decide(ctx, raw, result.map(|_| ()));
        if let Outcome::DeadLetter { failure } = &outcome {
            if let Err(e) = Box::pin(crate::settle::dead_letter(ctx, raw, failure)).await {
                let visibility = retry_visibility(raw, self.config.backoff.delay(raw.receive_count()));
                tracing::error!(kind = failure.kind.as_str(), error = %e, visibility,
                        "dead-letter send failed; the message will be retried instead");
                let error = format!("{}; dead-letter send failed: {e}", failure.error);
                outcome = Outcome::Retry { visibility, failure: Failure { error, ..failure.clone() } };
            }
        }
        if let Outcome::Retry { failure, .. } | Outcome::DeadLetter { failure } = &outcome {
            if failure.kind != FailureKind::InProgress {
                metrics::counter!(crate::metrics::names::FAILED, "kind" => failure.kind.as_str()).increment(1);
                #[cfg(feature = "otel")]
                crate::otel::failed(&tracing::Span::current(), failure.kind.as_str());
            }
        }
        match &outcome {
            Outcome::Succeeded => tracing::debug!("processed"),
            // not an error: another consumer is on it (counted as `in_progress`)
            Outcome::Retry { visibility, failure } if failure.kind == FailureKind::InProgress => {
                tracing::info!(
                    visibility,
                    "its idempotency key is held by another consumer; will look again when the claim lapses"
                )
            }
            Outcome::Retry { visibility, failure } => {
                tracing::warn!(kind = failure.kind.as_str(), error = %failure.error, visibility, "failed; will retry")
            }
            Outcome::DeadLetter { failure } => {
                tracing::warn!(kind = failure.kind.as_str(), error = %failure.error, "failed permanently; dead-lettered")
            }
            Outcome::Held { .. } | Outcome::Released | Outcome::Duplicate | Outcome::Deferred => {}
        }
        outcome
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
        if self.is_batch() {
            return self.process_whole(ctx, messages, stop, None).await;
        }
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

    /// A [`BatchHandler`] over `messages` (in order): one call for every decodable message,
    /// then the same rules as one-message handlers, with FIFO groups held after a failure.
    /// `stop` already cancelled: nothing is started (all released). `lease` cancelled while the
    /// handler runs: the handler is dropped and every message times out (retryable).
    pub(crate) async fn process_whole(
        &self,
        ctx: &QueueContext,
        messages: Vec<Arc<ReceivedMessage>>,
        stop: Option<&CancellationToken>,
        lease: Option<&CancellationToken>,
    ) -> Vec<Decision> {
        if stop.is_some_and(CancellationToken::is_cancelled) || lease.is_some_and(CancellationToken::is_cancelled) {
            return messages.into_iter().map(|message| Decision { message, outcome: Outcome::Released }).collect();
        }
        let mut out = Vec::with_capacity(messages.len());
        // messages not due yet go on to their next hop; the handler gets the rest
        let mut due = Vec::with_capacity(messages.len());
        for m in messages {
            // (a span only for messages that may be deferred: the others get theirs when concluded)
            let deferred = if crate::delay::carries_due_time(&m) {
                self.defer(ctx, &m).instrument(crate::trace::message_span(&m, ctx.queue_name())).await
            } else {
                None
            };
            match deferred {
                Some(outcome) => out.push(Decision { message: m, outcome }),
                None => due.push(m),
            }
        }
        let messages = due;
        if messages.is_empty() {
            return out;
        }
        let results = self.run_whole(ctx, &messages, lease).await;
        let mut blocked: HashMap<String, (String, u32)> = HashMap::new();
        for (m, result) in messages.into_iter().zip(results) {
            let group = if ctx.fifo { m.group_id().map(str::to_string) } else { None };
            let outcome = match group.as_ref().and_then(|g| blocked.get(g)) {
                Some((behind, visibility)) => Outcome::Held { visibility: *visibility, behind: behind.clone() },
                None => {
                    let span = crate::trace::message_span(&m, ctx.queue_name());
                    let outcome = self.conclude(ctx, &m, result).instrument(span).await;
                    if let (Some(g), Outcome::Retry { visibility, .. }) = (group, &outcome) {
                        blocked.insert(g, (m.message_id.clone(), *visibility));
                    }
                    outcome
                }
            };
            out.push(Decision { message: m, outcome });
        }
        out
    }

    /// One call of the batch handler; one result per message (decoding failures included).
    /// With idempotency, every key is claimed before the call (local holds taken in key order,
    /// so two batches cannot wait on each other); a key met twice in one batch is looked at
    /// again after the call (a duplicate when the first one completed).
    async fn run_whole(
        &self,
        ctx: &QueueContext,
        messages: &[Arc<ReceivedMessage>],
        cancel: Option<&CancellationToken>,
    ) -> Vec<Result<Done, Failure>> {
        let lease_kind = ctx.lease;
        let Handlers::Batch(handler) = &self.handler else {
            let error = "not a batch handler".to_string();
            return vec![Err(Failure { kind: FailureKind::Retryable, error, retry_after: None }); messages.len()];
        };
        // a batch call starts every message in it: each takes its turn under the limits first
        for _ in messages {
            ctx.start_gate().await;
        }
        let mut results: Vec<Result<Done, Failure>> = vec![Ok(Done::Handled); messages.len()];
        let mut batch: Vec<Option<Message<T>>> = Vec::with_capacity(messages.len());
        // claim checks resolved first (concurrently); the handler and the claims see real bodies
        let resolved: Vec<Result<Arc<ReceivedMessage>, Failure>> =
            futures::stream::iter(messages.iter().cloned().map(|m| self.resolve(Some(ctx), m)))
                .buffered(self.config.concurrency.max(1))
                .collect()
                .await;
        let mut real: Vec<Arc<ReceivedMessage>> = Vec::with_capacity(messages.len());
        for (i, r) in resolved.into_iter().enumerate() {
            match r {
                Ok(m) => real.push(m),
                Err(f) => {
                    results[i] = Err(f);
                    real.push(messages[i].clone());
                }
            }
        }
        let messages = &real[..];
        for (i, raw) in messages.iter().enumerate() {
            if results[i].is_err() {
                batch.push(None);
                continue;
            }
            match (self.decode)(&raw.body, self.config.log_bodies) {
                Ok(body) => batch.push(Some(Message::new(body, raw.clone()))),
                Err(error) => {
                    results[i] = Err(Failure { kind: FailureKind::Undecodable, error, retry_after: None });
                    batch.push(None);
                }
            }
        }

        // idempotency: claim first occurrences, defer repeats within the batch
        let mut claimed: Vec<(usize, Record)> = Vec::new();
        let mut deferred: Vec<(usize, Identity)> = Vec::new();
        let mut holds: Vec<LocalHold> = Vec::new();
        if let Some(idem) = &self.idempotency {
            let mut first: HashMap<String, (usize, String)> = HashMap::new();
            for i in 0..batch.len() {
                let Some(msg) = &batch[i] else { continue };
                match idem_key(idem, msg) {
                    Err(f) => {
                        results[i] = Err(f);
                        batch[i] = None;
                    }
                    Ok(None) => {}
                    Ok(Some(id)) if first.contains_key(&id.key) => {
                        deferred.push((i, id));
                        batch[i] = None;
                    }
                    Ok(Some(Identity { key, payload_hash })) => {
                        first.insert(key, (i, payload_hash));
                    }
                }
            }
            let mut keys: Vec<(String, (usize, String))> = first.into_iter().collect();
            keys.sort();
            for (k, _) in &keys {
                holds.push(idem.local.hold(k).await);
            }
            let claims = keys.into_iter().map(|(key, (i, payload_hash))| async move {
                (i, claim(idem, lease_kind, &messages[i], Identity { key, payload_hash }).await)
            });
            for (i, c) in futures::future::join_all(claims).await {
                match c {
                    Ok(Claimed::Run(record)) => claimed.push((i, record)),
                    Ok(Claimed::Unguarded) => {}
                    Ok(Claimed::Duplicate) => {
                        results[i] = Ok(Done::Duplicate);
                        batch[i] = None;
                    }
                    Err(f) => {
                        results[i] = Err(f);
                        batch[i] = None;
                    }
                }
            }
        }

        let (positions, batch): (Vec<usize>, Vec<Message<T>>) =
            batch.into_iter().enumerate().filter_map(|(i, m)| m.map(|m| (i, m))).unzip();
        let n = batch.len();
        if n > 0 {
            let outcome: Vec<Result<(), Failure>> =
                match self.guarded("batch handler", handler.call(batch), cancel).await {
                    Ok(list) if list.len() == n => list.into_iter().map(|r| r.map_err(failure_of)).collect(),
                    Ok(list) => {
                        let error = format!("the batch handler returned {} results for {n} messages", list.len());
                        vec![Err(Failure { kind: FailureKind::Retryable, error, retry_after: None }); n]
                    }
                    Err(failure) => vec![Err(failure); n],
                };
            for (pos, r) in positions.into_iter().zip(outcome) {
                results[pos] = r.map(|()| Done::Handled);
            }
        }

        let Some(idem) = &self.idempotency else { return results };
        let finishing = claimed.into_iter().map(|(i, record)| {
            let ok = results[i].is_ok();
            finish(idem, &messages[i], record, ok)
        });
        futures::future::join_all(finishing).await;
        drop(holds);
        for (i, id) in deferred {
            let _hold = idem.local.hold(&id.key).await;
            results[i] = match claim(idem, lease_kind, &messages[i], id).await {
                Ok(Claimed::Duplicate) => Ok(Done::Duplicate),
                Ok(Claimed::Run(record)) => {
                    // the first message with this key failed and released it: retry this one too
                    finish(idem, &messages[i], record, false).await;
                    let error = "an earlier message of this batch with the same idempotency key failed".to_string();
                    Err(Failure { kind: FailureKind::Retryable, error, retry_after: None })
                }
                Ok(Claimed::Unguarded) => {
                    let error = "the idempotency store failed; not running a repeated key unguarded".to_string();
                    Err(Failure { kind: FailureKind::IdempotencyStore, error, retry_after: None })
                }
                Err(f) => Err(f),
            };
        }
        results
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

/// What an attempt came to when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// The handler ran and succeeded.
    Handled,
    /// Idempotency: the key was completed before; the handler did not run.
    Duplicate,
}

/// What an idempotency claim allows.
enum Claimed {
    /// The key is ours: run the handler, then [`finish`].
    Run(Record),
    /// No claim, by choice (fail-open after a store error).
    Unguarded,
    /// The key was completed before.
    Duplicate,
}

/// A message's idempotency key and the hash of its payload (the record's `validation`).
struct Identity {
    key: String,
    payload_hash: String,
}

/// The message's identity; `None` runs it unguarded (Powertools' default when no key is found).
fn idem_key<T>(idem: &Idempotency<T>, msg: &Message<T>) -> Result<Option<Identity>, Failure> {
    match idem.identify(msg) {
        (Some(key), payload_hash) => Ok(Some(Identity { key, payload_hash })),
        (None, _) if idem.require_key => Err(Failure {
            kind: FailureKind::Permanent,
            error: format!("no idempotency key: {:?} yields nothing for this message", idem.key),
            retry_after: None,
        }),
        (None, _) => {
            tracing::warn!(key_source = ?idem.key, "no idempotency key for this message; running it without a claim");
            Ok(None)
        }
    }
}

/// Claim `id`'s key for `raw` in the store: `INPROGRESS` until the lease ends.
async fn claim<T>(
    idem: &Idempotency<T>,
    lease: Lease,
    raw: &ReceivedMessage,
    id: Identity,
) -> Result<Claimed, Failure> {
    let now = std::time::SystemTime::now();
    let record = Record {
        key: id.key,
        status: Status::InProgress,
        expiration: now + idem.ttl,
        in_progress_expiration: Some(crate::idempotency::lease_end(lease, raw)),
        validation: Some(id.payload_hash),
        data: None,
    };
    let failed = |kind, error: String, retry_after| Err(Failure { kind, error, retry_after });
    match idem.store.claim(&record, now).await {
        Ok(Claim::Claimed) => {
            idem.count(CountKind::Claimed);
            idem.local.running(&raw.message_id, Some(&record.key));
            Ok(Claimed::Run(record))
        }
        Ok(Claim::Existing(old)) if old.validation.is_some() && old.validation != record.validation => {
            idem.count(CountKind::Reuse);
            let error = format!("idempotency key {} was used before with a different payload", record.key);
            failed(FailureKind::KeyReuse, error, None)
        }
        Ok(Claim::Existing(old)) if old.status == Status::Completed => {
            idem.count(CountKind::Duplicate);
            Ok(Claimed::Duplicate)
        }
        Ok(Claim::Existing(old)) => {
            idem.count(CountKind::InProgress);
            let until = old.in_progress_expiration.unwrap_or(old.expiration);
            let left = until.duration_since(now).unwrap_or_default();
            let secs = (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1);
            let error = format!("idempotency key {} is held by another consumer for {secs} s more", record.key);
            failed(FailureKind::InProgress, error, Some(Duration::from_secs(secs)))
        }
        Err(e) if idem.fail_open => {
            idem.count(CountKind::StoreError);
            tracing::warn!(error = %e, "idempotency store failed; running the handler without a claim (fail-open)");
            Ok(Claimed::Unguarded)
        }
        Err(e) => {
            idem.count(CountKind::StoreError);
            failed(FailureKind::IdempotencyStore, e.to_string(), None)
        }
    }
}

/// After the handler: `COMPLETED` on success, the record deleted on failure (so a retry can
/// claim it). A failed write is logged and counted; the claim then lapses with the lease.
async fn finish<T>(idem: &Idempotency<T>, raw: &ReceivedMessage, record: Record, ok: bool) {
    idem.local.running(&raw.message_id, None);
    let result = if ok {
        let done = Record {
            status: Status::Completed,
            expiration: std::time::SystemTime::now() + idem.ttl,
            in_progress_expiration: None,
            data: Some("null".into()),
            ..record
        };
        idem.store.complete(&done).await
    } else {
        idem.store.delete(&record.key).await
    };
    if let Err(e) = result {
        idem.count(CountKind::StoreError);
        tracing::warn!(error = %e, completed = ok,
            "could not record the idempotency result; the key stays in progress until its claim lapses");
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

fn failure_of(e: HandlerError) -> Failure {
    match e {
        HandlerError::Retryable { message, retry_after, .. } => {
            Failure { kind: FailureKind::Retryable, error: message, retry_after }
        }
        HandlerError::Permanent { message, .. } => {
            Failure { kind: FailureKind::Permanent, error: message, retry_after: None }
        }
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

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
