//! Message move tasks: SQS's own redrive (`StartMessageMoveTask`), followed and cancelled.
//!
//! It owns starting a move task for a DLQ (to a given queue or back to each message's source,
//! at a validated rate), listing a DLQ's recent tasks ([`MoveTask`]) and cancelling the running
//! one. SQS moves the messages; nothing here receives or filters them (that is the client-side
//! redrive in `redrive.rs`).

use super::DlqError;

/// Largest `MaxNumberOfMessagesPerSecond` SQS accepts for a message move task.
pub const MAX_MOVE_TASK_RATE: u32 = 500;

/// A rate for [`start_move_task`] from a number of messages per second given as a float (e.g.
/// a command-line flag): SQS takes a whole number from 1 to [`MAX_MOVE_TASK_RATE`].
///
/// # Example
/// ```
/// assert_eq!(sqskit::dlq::move_task_rate(50.0).ok(), Some(50));
/// assert!(sqskit::dlq::move_task_rate(2.5).is_err());
/// assert!(sqskit::dlq::move_task_rate(501.0).is_err());
/// ```
///
/// # Errors
/// [`DlqError::Sqs`] with [`crate::Error::Invalid`] for a fraction, [`crate::Error::Limit`]
/// outside 1..=500.
pub fn move_task_rate(rate: f64) -> Result<u32, DlqError> {
    if !rate.is_finite() || rate.fract() != 0.0 {
        return Err(DlqError::Sqs(crate::Error::Invalid {
            what: "rate",
            reason: format!(
                "{rate} is not a whole number of messages per second (MaxNumberOfMessagesPerSecond: 1..={MAX_MOVE_TASK_RATE})"
            ),
        }));
    }
    // saturating casts: a negative rate becomes 0, a huge one u64::MAX; both fail the range check
    crate::limits::check_range("rate", rate as u64, 1, u64::from(MAX_MOVE_TASK_RATE))?;
    Ok(rate as u32)
}

/// Ask SQS to move the DLQ's messages (`StartMessageMoveTask`) to `to`, or back to their
/// sources; `rate` becomes `MaxNumberOfMessagesPerSecond` (1..=500). Returns the task handle.
/// SQS runs one task per DLQ at a time; follow it with [`list_move_tasks`], stop it with
/// [`cancel_move_task`].
///
/// # Errors
/// [`DlqError::Sqs`]: [`crate::Error::Limit`] for a rate outside 1..=500, before any call; the classified error of
/// `GetQueueAttributes` or `StartMessageMoveTask` (e.g. a task is already running, or the queue
/// is no queue's DLQ).
pub async fn start_move_task(
    dlq: &crate::Queue,
    to: Option<&crate::Queue>,
    rate: Option<u32>,
) -> Result<String, DlqError> {
    if let Some(r) = rate {
        crate::limits::check_range("rate", u64::from(r), 1, u64::from(MAX_MOVE_TASK_RATE))?;
    }
    let arn = queue_arn(dlq).await?;
    let mut req = dlq.client().start_message_move_task().source_arn(&arn);
    if let Some(target) = to {
        req = req.destination_arn(queue_arn(target).await?);
    }
    if let Some(r) = rate {
        req = req.max_number_of_messages_per_second(r as i32);
    }
    let out = req.send().await.map_err(|e| crate::client::sqs_error("StartMessageMoveTask", dlq.url(), e))?;
    Ok(out.task_handle().unwrap_or_default().to_string())
}

/// The queue's ARN (`GetQueueAttributes` `QueueArn`).
async fn queue_arn(q: &crate::Queue) -> Result<String, DlqError> {
    q.attributes()
        .await?
        .arn
        .ok_or_else(|| crate::Error::Invalid { what: "queue", reason: format!("{} has no ARN", q.name()) }.into())
}

/// Status of a running message move task (see [`MoveTask::status`]).
pub const MOVE_TASK_RUNNING: &str = "RUNNING";

/// A message move task of a DLQ, as `ListMessageMoveTasks` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MoveTask {
    /// `RUNNING`, `COMPLETED`, `CANCELLING`, `CANCELLED` or `FAILED`.
    pub status: String,
    /// The handle to cancel it with; SQS gives one for a running task only.
    pub task_handle: Option<String>,
    /// Messages moved so far (approximate).
    pub moved: u64,
    /// Messages to move, counted when the task started (approximate).
    pub to_move: Option<u64>,
    /// ARN of the DLQ the messages come from.
    pub source_arn: String,
    /// ARN of the queue they go to (`None`: each message's source queue).
    pub destination_arn: Option<String>,
    /// `MaxNumberOfMessagesPerSecond` (`None`: as fast as SQS goes).
    pub max_per_second: Option<u32>,
    /// When the task started (RFC 3339, UTC).
    pub started: Option<String>,
    /// When the task started, in milliseconds since the Unix epoch.
    pub started_ms: i64,
    /// Why the task failed (status `FAILED`).
    pub failure_reason: Option<String>,
}

impl MoveTask {
    /// Whether the task is still moving messages (and can be cancelled).
    pub fn is_running(&self) -> bool {
        self.status == MOVE_TASK_RUNNING
    }
}

impl From<&aws_sdk_sqs::types::ListMessageMoveTasksResultEntry> for MoveTask {
    fn from(e: &aws_sdk_sqs::types::ListMessageMoveTasksResultEntry) -> Self {
        let started_ms = e.started_timestamp();
        let started = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(started_ms) * 1_000_000)
            .ok()
            .filter(|_| started_ms > 0)
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
        MoveTask {
            status: e.status().unwrap_or("UNKNOWN").to_string(),
            task_handle: e.task_handle().map(str::to_string),
            moved: u64::try_from(e.approximate_number_of_messages_moved()).unwrap_or(0),
            to_move: e.approximate_number_of_messages_to_move().and_then(|n| u64::try_from(n).ok()),
            source_arn: e.source_arn().unwrap_or_default().to_string(),
            destination_arn: e.destination_arn().map(str::to_string),
            max_per_second: e.max_number_of_messages_per_second().and_then(|n| u32::try_from(n).ok()),
            started,
            started_ms,
            failure_reason: e.failure_reason().map(str::to_string),
        }
    }
}

/// Largest number of tasks `ListMessageMoveTasks` returns.
pub const MAX_LISTED_MOVE_TASKS: u32 = 10;

/// The most recent message move tasks of `dlq` (`ListMessageMoveTasks` with the DLQ's ARN as
/// `SourceArn`), newest first, at most `max` (1..=10; SQS keeps the tasks of the last 14 days).
///
/// # Errors
/// [`DlqError::Sqs`]: [`crate::Error::Limit`] for `max` outside 1..=10, before any call; the classified error of
/// `GetQueueAttributes` or `ListMessageMoveTasks`.
pub async fn list_move_tasks(dlq: &crate::Queue, max: u32) -> Result<Vec<MoveTask>, DlqError> {
    crate::limits::check_range("max_results", u64::from(max), 1, u64::from(MAX_LISTED_MOVE_TASKS))?;
    let arn = queue_arn(dlq).await?;
    let out = dlq
        .client()
        .list_message_move_tasks()
        .source_arn(&arn)
        .max_results(max as i32)
        .send()
        .await
        .map_err(|e| crate::client::sqs_error("ListMessageMoveTasks", dlq.url(), e))?;
    let mut tasks: Vec<MoveTask> = out.results().iter().map(MoveTask::from).collect();
    tasks.sort_by_key(|t| std::cmp::Reverse(t.started_ms));
    Ok(tasks)
}

/// A cancelled message move task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CancelledMoveTask {
    /// The task's handle.
    pub task_handle: String,
    /// Messages it had moved (approximate); the rest stay in the DLQ.
    pub moved: u64,
}

/// Cancel the running message move task of `dlq` (`CancelMessageMoveTask`): the one with
/// `handle` when given, else the one [`list_move_tasks`] shows running. Messages it moved stay
/// moved; the others stay in the DLQ.
///
/// # Errors
/// [`DlqError::NoRunningMoveTask`] when no task of `dlq` is running (or none with `handle`),
/// checked with `ListMessageMoveTasks` before cancelling; [`DlqError::Sqs`] for a failed call.
pub async fn cancel_move_task(dlq: &crate::Queue, handle: Option<&str>) -> Result<CancelledMoveTask, DlqError> {
    let tasks = list_move_tasks(dlq, MAX_LISTED_MOVE_TASKS).await?;
    let running = tasks
        .iter()
        .filter(|t| t.is_running())
        .find_map(|t| t.task_handle.as_deref().filter(|h| handle.is_none_or(|want| want == *h)));
    let Some(task_handle) = running else {
        return Err(DlqError::NoRunningMoveTask {
            queue: dlq.name().to_string(),
            handle: handle.map(str::to_string),
            latest: tasks.first().map(|t| t.status.clone()),
        });
    };
    let out = dlq
        .client()
        .cancel_message_move_task()
        .task_handle(task_handle)
        .send()
        .await
        .map_err(|e| crate::client::sqs_error("CancelMessageMoveTask", dlq.url(), e))?;
    Ok(CancelledMoveTask {
        task_handle: task_handle.to_string(),
        moved: u64::try_from(out.approximate_number_of_messages_moved()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_task_rates_are_whole_numbers_from_1_to_500() {
        assert_eq!(move_task_rate(1.0).ok(), Some(1));
        assert_eq!(move_task_rate(500.0).ok(), Some(500));
        for bad in [0.0, -3.0, 501.0, 2.5, 0.4, f64::NAN, f64::INFINITY, 1e30] {
            let e = move_task_rate(bad).unwrap_err();
            assert!(e.to_string().contains("500"), "{bad}: {e}");
        }
    }
}
