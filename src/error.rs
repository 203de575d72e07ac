//! The library's error type, classified by what a caller does next.
//!
//! [`Error`] covers everything the client can report: a limit violated before
//! any call (fix the input), a missing queue (fix the configuration), throttling
//! and transport errors (retry later), and per-entry failures of batch calls.

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// One entry of a batch call that SQS reported in `Failed` (even on HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    /// Position of the entry in the caller's input.
    pub index: usize,
    /// SQS error code, e.g. `ReceiptHandleIsInvalid`.
    pub code: String,
    /// SQS error message.
    pub message: String,
    /// Whether SQS blames the request (true: retrying the same entry will fail again).
    pub sender_fault: bool,
}

impl std::fmt::Display for EntryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {}: {}: {}", self.index, self.code, self.message)
    }
}

/// Claim-check errors ([`payload`](crate::payload), feature `payload`), classified by what
/// happens to the message. Defined here, at the bottom of the layers, because [`Error`] carries
/// them ([`Error::Payload`]); re-exported as `sqskit::payload::PayloadError`.
#[cfg(feature = "payload")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The message carries the size attribute but its body is not a pointer (permanent).
    #[error("claim check: malformed pointer: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The object (or its bucket) does not exist: it never will (permanent, `payload-missing`).
    #[error("claim check: s3://{bucket}/{key} does not exist ({code})")]
    Missing {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// S3's error code (`NoSuchKey`, `NoSuchBucket`, `NotFound`).
        code: String,
    },
    /// The object is not UTF-8 text, so it cannot be an SQS body (permanent).
    #[error("claim check: s3://{bucket}/{key} is not UTF-8 text")]
    NotText {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// An S3 call failed otherwise (transport, throttling, access denied): retry later.
    #[error("claim check: {operation} s3://{bucket}/{key} failed: {message}")]
    S3 {
        /// `GetObject`, `PutObject` or `DeleteObject`.
        operation: &'static str,
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The S3 error.
        message: String,
    },
}

#[cfg(feature = "payload")]
impl PayloadError {
    /// Whether the message can never be resolved (dead-letter it).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::S3 { .. })
    }
}

/// Errors from the sqskit client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value is outside what SQS accepts; nothing was sent.
    #[error("{what} = {value} is outside the SQS limit {min}..={max}")]
    Limit {
        /// The parameter that is out of range.
        what: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A message is over the 1 MiB payload limit; nothing was sent.
    #[error("message {index} is {size} bytes (body + attributes), over the SQS limit of {limit} bytes")]
    MessageTooLarge {
        /// Position of the message in the input.
        index: usize,
        /// Its payload size as SQS counts it.
        size: usize,
        /// The limit (1,048,576).
        limit: usize,
    },
    /// An argument is invalid for another reason (named).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The parameter.
        what: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// The queue does not exist (or is not visible with these credentials).
    #[error("queue does not exist: {queue}")]
    QueueDoesNotExist {
        /// Queue URL or name.
        queue: String,
    },
    /// SQS throttled the request; retry later with backoff.
    #[error("SQS throttled {operation} on {queue}: {code}")]
    Throttled {
        /// The API operation.
        operation: &'static str,
        /// Queue URL.
        queue: String,
        /// Error code returned.
        code: String,
    },
    /// The request did not get an answer (connection refused, timeout, bad response); retry later.
    #[error("transport error on {operation} ({queue}): {message}")]
    Transport {
        /// The API operation.
        operation: &'static str,
        /// Queue URL.
        queue: String,
        /// Description of the failure.
        message: String,
    },
    /// SQS rejected the request with another error code.
    #[error("SQS {operation} failed on {queue}: {code}: {message}")]
    Service {
        /// The API operation.
        operation: &'static str,
        /// Queue URL.
        queue: String,
        /// Error code.
        code: String,
        /// Error message.
        message: String,
    },
    /// Some entries of a batch call failed; the others succeeded.
    #[error("{operation}: {} entries failed: {}", failures.len(), failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "))]
    EntriesFailed {
        /// The API operation.
        operation: &'static str,
        /// The failed entries.
        failures: Vec<EntryFailure>,
    },
    /// A body could not be encoded as JSON.
    #[error("cannot encode message body as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    /// A large body could not be offloaded to S3 (claim check); nothing was sent.
    #[cfg(feature = "payload")]
    #[error(transparent)]
    Payload(Box<PayloadError>),
}

#[cfg(feature = "payload")]
impl From<PayloadError> for Error {
    fn from(e: PayloadError) -> Self {
        Error::Payload(Box::new(e))
    }
}

impl Error {
    /// True when retrying the same call later may succeed (throttling, transport).
    pub fn is_transient(&self) -> bool {
        #[cfg(feature = "payload")]
        if let Error::Payload(e) = self {
            return !e.is_permanent();
        }
        matches!(self, Error::Throttled { .. } | Error::Transport { .. })
            || matches!(self, Error::Service { code, .. } if code.contains("InternalError") || code.contains("ServiceUnavailable"))
    }
}

/// Operation errors that can say "the queue does not exist" through their typed variant.
pub(crate) trait QueueMissing {
    fn queue_missing(&self) -> bool;
}

macro_rules! queue_missing {
    ($($t:ty),* $(,)?) => {$(
        impl QueueMissing for $t {
            fn queue_missing(&self) -> bool { self.is_queue_does_not_exist() }
        }
    )*};
}
use aws_sdk_sqs::operation as op;
queue_missing!(
    op::send_message::SendMessageError,
    op::send_message_batch::SendMessageBatchError,
    op::receive_message::ReceiveMessageError,
    op::delete_message_batch::DeleteMessageBatchError,
    op::delete_message::DeleteMessageError,
    op::change_message_visibility_batch::ChangeMessageVisibilityBatchError,
    op::get_queue_attributes::GetQueueAttributesError,
    op::get_queue_url::GetQueueUrlError,
    op::purge_queue::PurgeQueueError,
);

// The move-task operations name the queue by ARN: "resource not found" is the source queue for
// Start and List, but the task for Cancel.
impl QueueMissing for op::start_message_move_task::StartMessageMoveTaskError {
    fn queue_missing(&self) -> bool {
        self.is_resource_not_found_exception()
    }
}
impl QueueMissing for op::list_message_move_tasks::ListMessageMoveTasksError {
    fn queue_missing(&self) -> bool {
        self.is_resource_not_found_exception()
    }
}
impl QueueMissing for op::cancel_message_move_task::CancelMessageMoveTaskError {
    fn queue_missing(&self) -> bool {
        false
    }
}

const THROTTLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "OverLimit",
    "KmsThrottled",
    "AWS.SimpleQueueService.RequestThrottled",
];

/// Classify an SDK error for `operation` on `queue`.
pub(crate) fn classify<E, R>(operation: &'static str, queue: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + QueueMissing + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().unwrap_or("Unknown").to_string();
            if e.queue_missing() || code == "AWS.SimpleQueueService.NonExistentQueue" {
                return Error::QueueDoesNotExist { queue: queue.to_string() };
            }
            if THROTTLE_CODES.contains(&code.as_str()) {
                return Error::Throttled { operation, queue: queue.to_string(), code };
            }
            Error::Service {
                operation,
                queue: queue.to_string(),
                code,
                message: e.message().unwrap_or_default().to_string(),
            }
        }
        other => {
            Error::Transport { operation, queue: queue.to_string(), message: DisplayErrorContext(&other).to_string() }
        }
    }
}
