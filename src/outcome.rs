//! Outcomes: what happens to a message, as plain values.
//!
//! It owns the vocabulary the processor decides in and the runtimes carry out: why a message
//! failed ([`FailureKind`], [`Failure`]), what a handler's result calls for before any SQS call
//! ([`Verdict`]), what happened to the message in the end ([`Outcome`]) and a message with its
//! outcome ([`Decision`]). It is a leaf: it runs no handler and makes no SQS call. The
//! [`processor`](crate::processor) is the only place that turns a handler's result into a
//! verdict and an outcome; [`settle`](crate::settle) is the only place that turns outcomes into
//! SQS actions.
//!
//! [`Outcome::DeadLetter`] has one meaning: the DLQ confirmed the message. A message that is
//! to be dead-lettered is a [`Verdict::DeadLetter`] until its send is confirmed (a failed send
//! makes it an [`Outcome::Retry`]).

use std::sync::Arc;
use std::time::Duration;

use crate::message::ReceivedMessage;

/// Why a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The handler returned [`HandlerError::Retryable`](crate::HandlerError::Retryable).
    Retryable,
    /// The handler returned [`HandlerError::Permanent`](crate::HandlerError::Permanent).
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
    /// Routing: no route for the message's type, and the router has no fallback handler
    /// (dead-lettered; see the `router` module, feature `events`).
    Unrouted,
}

impl FailureKind {
    /// Every kind, in declaration order (e.g. to validate a kind name a user typed).
    pub const ALL: [FailureKind; 11] = [
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
        Self::Unrouted,
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
            Self::Unrouted => "unrouted",
        }
    }
    /// Whether messages failing this way belong in the dead-letter queue right away.
    pub fn is_permanent(self) -> bool {
        matches!(self, Self::Permanent | Self::Undecodable | Self::KeyReuse | Self::PayloadMissing | Self::Unrouted)
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

/// What a handler's result calls for, decided before any SQS call
/// ([`Processor::decide`](crate::Processor::decide)). The processor carries it out: a
/// [`Verdict::DeadLetter`] is sent to the DLQ and becomes [`Outcome::DeadLetter`] only once the
/// DLQ confirmed it (else [`Outcome::Retry`]).
///
/// # Example
/// ```
/// use sqskit::{Failure, FailureKind, Verdict};
/// let failure = Failure { kind: FailureKind::Permanent, error: "bad order".into(), retry_after: None };
/// let v = Verdict::DeadLetter { failure };
/// assert_eq!(v.label(), "permanent");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The handler succeeded: delete it.
    Succeeded,
    /// Failed, try again: make it visible again after `visibility` seconds.
    Retry {
        /// Visibility timeout to set, in seconds.
        visibility: u32,
        /// Why.
        failure: Failure,
    },
    /// Failed for good: send it to the DLQ (not sent yet), then delete it.
    DeadLetter {
        /// Why.
        failure: Failure,
    },
}

impl Verdict {
    /// Short name for logs and metrics (as [`Outcome::label`]).
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::Retry { failure, .. } | Verdict::DeadLetter { failure } => failure.kind.as_str(),
        }
    }
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
