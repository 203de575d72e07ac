//! Dead letters: archive and alert, redrive, message move tasks.
//!
//! It owns what is done with a dead-letter queue's messages once they are there, in six parts:
//!
//! - [`inspect`]: look at a DLQ (counts by error kind and source queue, one row per message) and
//!   delete chosen messages (`sqskit dlq list`, the console's dead-letter page);
//! - `archive.rs` ([`DlqMonitor`]): archive to S3, one aggregated SNS alert, drain;
//! - [`replay`]: browse that archive and replay records to their source queue (`sqskit dlq
//!   replay`, the console's archive page);
//! - `redrive.rs` ([`Redriver`], [`redrive`]): the client-side redrive, filtered, each message
//!   deleted from the DLQ only after it was sent back;
//! - `move_task.rs`: SQS's own `StartMessageMoveTask`, list and cancel;
//! - `task_redrive.rs` ([`plan_move_task_redrive`], [`move_task_redrive`]): a move task for what
//!   SQS moved, the client-side redrive for what sqskit dead-lettered.
//!
//! This file holds what they share: the one error type [`DlqError`] and how a dead letter says where it came
//! from and why ([`origin`], [`source_queue`], [`error_kind`]). It does not dead-letter
//! anything: the processor does, through [`settle`](crate::settle), which defines the error
//! attributes read here.

use crate::message::ReceivedMessage;
use crate::settle::dead_letter_attributes as dl;

mod archive;
pub mod inspect;
mod move_task;
mod redrive;
pub mod replay;
mod task_redrive;

pub use archive::{
    archive_document, archive_key, ArchiveReport, Archived, DlqMonitor, DrainReport, MonitorConfig, MonitorSummary,
};
pub use move_task::{
    cancel_move_task, list_move_tasks, move_task_rate, start_move_task, CancelledMoveTask, MoveTask,
    MAX_LISTED_MOVE_TASKS, MAX_MOVE_TASK_RATE, MOVE_TASK_RUNNING,
};
pub use redrive::{redrive, redriven_message, PlannedMove, RedriveFilter, RedriveOptions, RedriveReport, Redriver};
pub use task_redrive::{
    move_task_redrive, plan_move_task_redrive, MoveTaskPlan, MoveTaskRedriveReport, StartedMoveTask,
};

/// Errors of the DLQ tools.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// A required setting is missing or invalid (named).
    #[error("invalid configuration: {name}: {reason}")]
    Config {
        /// The setting (environment variable or flag).
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// Writing the archive object failed.
    #[error("archiving {message_id} to s3://{bucket}/{key} failed: {message}")]
    Archive {
        /// Message id.
        message_id: String,
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The S3 error.
        message: String,
    },
    /// Publishing the alert failed.
    #[error("publishing the alert to {topic} failed: {message}")]
    Alert {
        /// Topic ARN.
        topic: String,
        /// The SNS error.
        message: String,
    },
    /// An S3 call reading the archive failed (see [`replay::Archive`]).
    #[error("S3 {operation} on s3://{bucket}/{key} failed: {message}")]
    ArchiveRead {
        /// The S3 operation.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The key or prefix.
        key: String,
        /// The S3 error.
        message: String,
    },
    /// An object of the archive is not an archive record (see [`replay::Archive::read`]).
    #[error("s3://{bucket}/{key} is not an archive record: {reason}")]
    NotARecord {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A redrive filter expression that does not parse (see [`RedriveFilter`]).
    #[error("invalid filter {expr:?}: {reason}")]
    InvalidFilter {
        /// The expression given.
        expr: String,
        /// Why it is rejected.
        reason: String,
    },
    /// No message move task of the DLQ is running (or none with the given handle): nothing to
    /// cancel.
    #[error(
        "no message move task{} is running on {queue}{}",
        handle.as_ref().map(|h| format!(" with handle {h}")).unwrap_or_default(),
        latest.as_ref().map(|s| format!(" (most recent task: {s})")).unwrap_or_else(|| " (it has no move tasks)".into())
    )]
    NoRunningMoveTask {
        /// The DLQ's name.
        queue: String,
        /// The handle asked for, if any.
        handle: Option<String>,
        /// Status of the DLQ's most recent task, if it has any.
        latest: Option<String>,
    },
    /// A message move task of the DLQ is running: a redrive with a move task would take its
    /// messages while it runs, and could not start its own.
    #[error("a message move task is running on {queue} (task handle {handle}); wait for it or cancel it")]
    MoveTaskRunning {
        /// The DLQ's name.
        queue: String,
        /// The running task's handle.
        handle: String,
    },
    /// An SQS call failed, or an argument was refused before any call
    /// ([`Error::Limit`](crate::Error::Limit), [`Error::Invalid`](crate::Error::Invalid)).
    #[error(transparent)]
    Sqs(#[from] crate::Error),
    /// A drain stopped at a failed receive or delete; what was archived before was still
    /// alerted on (see the report).
    #[error("draining stopped after archiving {} and deleting {} message(s)", report.archived, report.deleted)]
    Drain {
        /// What the drain did before it stopped.
        report: DrainReport,
        /// The receive or delete error.
        #[source]
        source: crate::Error,
    },
}

/// An S3 client from `config`, with path-style addressing whenever an endpoint override is
/// in use (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, or the config's), as LocalStack needs.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    crate::payload::s3_client(config)
}

/// Error attributes the processor attached: (kind, error, source queue, receive count).
pub(crate) fn error_info(m: &ReceivedMessage) -> (Option<String>, Option<String>, Option<String>, Option<String>) {
    if let Some(kind) = m.attribute_str(dl::ERROR_KIND) {
        return (
            Some(kind.to_string()),
            m.attribute_str(dl::ERROR).map(str::to_string),
            m.attribute_str(dl::SOURCE_QUEUE).map(str::to_string),
            m.attribute_str(dl::RECEIVE_COUNT).map(str::to_string),
        );
    }
    if let Some(v) = m.attribute_str(dl::COMBINED).and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()) {
        let s = |k: &str| v.get(k).map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()));
        return (s("kind"), s("error"), s("source_queue"), s("receive_count"));
    }
    (None, None, None, None)
}

/// The queue a dead letter came from: SQS's `DeadLetterQueueSourceArn` system attribute (set on
/// every message its redrive policy moves; in Lambda records' `attributes`, on received messages
/// when system attributes `All` are requested), else the processor's `sqskit-source-queue`
/// attribute. `None` when neither says (the caller may ask `ListDeadLetterSourceQueues`).
pub fn source_queue(m: &ReceivedMessage) -> Option<String> {
    sqs_source(m).map(str::to_string).or_else(|| error_info(m).2)
}

/// How a dead letter came to the DLQ, which decides how it can go back (see [`origin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum Origin {
    /// SQS's redrive policy moved it: it carries `DeadLetterQueueSourceArn`, so a message move
    /// task without a destination can return it.
    #[serde(rename = "sqs")]
    Sqs,
    /// sqskit dead-lettered it itself (with `SendMessage`): its source is in the processor's
    /// `sqskit-source-queue` attribute (or in `sqskit-dead-letter`); a move task without a
    /// destination cannot return it, [`redrive`] can.
    #[serde(rename = "sqskit")]
    Sqskit,
    /// Neither says where it came from (e.g. sent to the DLQ directly).
    #[serde(rename = "none")]
    Unrecorded,
}

impl Origin {
    /// All origins, in order.
    pub const ALL: [Origin; 3] = [Origin::Sqs, Origin::Sqskit, Origin::Unrecorded];

    /// The name `redrive --filter origin=` takes: `sqs`, `sqskit` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Sqs => "sqs",
            Origin::Sqskit => "sqskit",
            Origin::Unrecorded => "none",
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a dead letter's source is recorded: [`Origin::Sqs`] when it carries a non-empty
/// `DeadLetterQueueSourceArn` (also when it has sqskit's attributes too: a move task returns it),
/// else [`Origin::Sqskit`] when the processor's attributes name its source queue, else
/// [`Origin::Unrecorded`]. [`source_queue`] reads the queue from the same places.
///
/// # Example
/// ```
/// use sqskit::dlq::{origin, Origin};
/// let mut m = sqskit::ReceivedMessage {
///     message_id: "m-1".into(),
///     receipt_handle: "h".into(),
///     body: "{}".into(),
///     attributes: Default::default(),
///     system_attributes: Default::default(),
///     received_at: std::time::Instant::now(),
///     queue_url: None,
/// };
/// assert_eq!(origin(&m), Origin::Unrecorded);
/// m.attributes.insert("sqskit-error-kind".into(), sqskit::AttributeValue::string("permanent"));
/// m.attributes.insert("sqskit-source-queue".into(), sqskit::AttributeValue::string("orders"));
/// assert_eq!(origin(&m), Origin::Sqskit);
/// m.system_attributes.insert("DeadLetterQueueSourceArn".into(), "arn:aws:sqs:us-east-1:1:orders".into());
/// assert_eq!(origin(&m), Origin::Sqs);
/// ```
pub fn origin(m: &ReceivedMessage) -> Origin {
    if sqs_source(m).is_some() {
        Origin::Sqs
    } else if error_info(m).2.is_some() {
        Origin::Sqskit
    } else {
        Origin::Unrecorded
    }
}

/// The source queue's name from `DeadLetterQueueSourceArn`.
fn sqs_source(m: &ReceivedMessage) -> Option<&str> {
    m.system_attributes
        .get("DeadLetterQueueSourceArn")
        .and_then(|arn| arn.rsplit(':').next())
        .filter(|name| !name.is_empty())
}

/// The error kind [`redrive`] filters and reports for a dead letter without one: a message SQS's
/// redrive policy moved (the processor adds no attributes then).
pub const MAX_RECEIVES_KIND: &str = "max-receives";

/// The error kind of a dead letter: the processor's `sqskit-error-kind` attribute (or the kind
/// in `sqskit-dead-letter`), else [`MAX_RECEIVES_KIND`].
pub fn error_kind(m: &ReceivedMessage) -> String {
    error_info(m).0.unwrap_or_else(|| MAX_RECEIVES_KIND.to_string())
}

/// The single source queue of a DLQ (`ListDeadLetterSourceQueues`), when there is exactly one.
pub async fn redrive_source(dlq: &crate::Queue) -> Option<String> {
    let out = dlq.client().list_dead_letter_source_queues().queue_url(dlq.url()).send().await.ok()?;
    match out.queue_urls() {
        [one] => one.rsplit('/').next().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::AttributeValue;

    /// A dead letter from `orders`, kind `undecodable`, body `{"order":1}`, sent 2023-11-14.
    pub(crate) fn msg() -> ReceivedMessage {
        let mut m = ReceivedMessage {
            message_id: "m-1".into(),
            receipt_handle: "h".into(),
            body: "{\"order\":1}".into(),
            attributes: Default::default(),
            system_attributes: [("SentTimestamp".to_string(), "1700000000000".to_string())].into_iter().collect(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        };
        m.attributes.insert(dl::ERROR_KIND.into(), AttributeValue::string("undecodable"));
        m.attributes.insert(dl::SOURCE_QUEUE.into(), AttributeValue::string("orders"));
        m
    }

    #[test]
    fn source_queue_prefers_the_redrive_attribute() {
        let mut m = msg();
        assert_eq!(source_queue(&m).as_deref(), Some("orders"));
        m.system_attributes
            .insert("DeadLetterQueueSourceArn".into(), "arn:aws:sqs:us-east-1:000000000000:payments".into());
        assert_eq!(source_queue(&m).as_deref(), Some("payments"));
        m.system_attributes.clear();
        m.attributes.clear();
        assert_eq!(source_queue(&m), None);
    }
}
