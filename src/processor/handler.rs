//! Handlers: what the processor calls for each message, and what they return when they fail.
//!
//! It owns the handler interface ([`Handler`] for one message, [`BatchHandler`] for a whole
//! batch, both implemented for plain `async` closures), the handler's error ([`HandlerError`],
//! retryable or permanent, with [`ResultExt`] to classify errors with `?`) and the mapping of a
//! handler's error to a [`Failure`]. It does not run handlers (timeouts, panics, idempotency:
//! the engine in [`processor`](super)) nor decide what a failure leads to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::message::Message;
use crate::outcome::{Failure, FailureKind};

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

/// What the processor calls in place of a [`Handler`] when the call itself can fail in ways a
/// handler cannot say (a router: a payload of the wrong type is `undecodable`, an unknown type
/// `unrouted`): the result is a [`Failure`] already.
pub(crate) trait Dispatch<T>: Send + Sync + 'static {
    /// Handle one message.
    fn call(&self, msg: Message<T>) -> BoxFuture<Result<(), Failure>>;
}

/// [`Dispatch`] for whole batches: one result per message, in order.
pub(crate) trait DispatchBatch<T>: Send + Sync + 'static {
    /// Handle a batch.
    fn call(&self, batch: Vec<Message<T>>) -> BoxFuture<Vec<Result<(), Failure>>>;
}

/// The processor's handler: one message at a time, or whole batches; a user's handler, or a
/// dispatcher (a router) over several.
pub(super) enum Handlers<T> {
    One(Arc<dyn Handler<T>>),
    Batch(Arc<dyn BatchHandler<T>>),
    Dispatch(Arc<dyn Dispatch<T>>),
    DispatchBatch(Arc<dyn DispatchBatch<T>>),
}

impl<T> Clone for Handlers<T> {
    fn clone(&self) -> Self {
        match self {
            Self::One(h) => Self::One(h.clone()),
            Self::Batch(h) => Self::Batch(h.clone()),
            Self::Dispatch(h) => Self::Dispatch(h.clone()),
            Self::DispatchBatch(h) => Self::DispatchBatch(h.clone()),
        }
    }
}

impl<T: Send + 'static> Handlers<T> {
    /// Whether it takes whole batches.
    pub(super) fn is_batch(&self) -> bool {
        matches!(self, Self::Batch(_) | Self::DispatchBatch(_))
    }

    /// One call of a batch handler for `batch` (one result per message, in order; a
    /// one-message handler fails them all: the processor never asks it).
    pub(super) fn call_batch(&self, batch: Vec<Message<T>>) -> BoxFuture<Vec<Result<(), Failure>>> {
        match self {
            Self::Batch(h) => {
                let fut = h.call(batch);
                Box::pin(async move { fut.await.into_iter().map(|r| r.map_err(failure_of)).collect() })
            }
            Self::DispatchBatch(h) => h.call(batch),
            Self::One(_) | Self::Dispatch(_) => {
                let error = "not a batch handler".to_string();
                let failed = vec![Err(Failure { kind: FailureKind::Retryable, error, retry_after: None }); batch.len()];
                Box::pin(std::future::ready(failed))
            }
        }
    }
}

/// The processor's failure for a handler's error.
pub(crate) fn failure_of(e: HandlerError) -> Failure {
    match e {
        HandlerError::Retryable { message, retry_after, .. } => {
            Failure { kind: FailureKind::Retryable, error: message, retry_after }
        }
        HandlerError::Permanent { message, .. } => {
            Failure { kind: FailureKind::Permanent, error: message, retry_after: None }
        }
    }
}
