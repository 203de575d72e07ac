//! Pausing a queue for every consumer at once: a tag on the queue, read on a slow timer.
//!
//! It owns the pause flag: [`pause`] tags the queue [`PAUSED_TAG`] with the reason, [`resume`]
//! removes the tag, [`paused_reason`] reads it (`ListQueueTags`). Every poller of the queue,
//! in any number of processes or ECS tasks, reads the flag every [`PAUSE_CHECK_INTERVAL`]
//! (30 s: 120 `ListQueueTags` calls an hour per queue and poller, and a paused poller makes no
//! receives at all) and stops receiving from the queue while it is set. No new infrastructure:
//! the flag lives on the queue, the console shows it, and it outlives any process. It does not
//! stop anything itself: the poller gates its receivers on what it reads. Disabling a Lambda
//! function's event source mapping is the `sqskit` command's (`sqskit pause --function`).
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), sqskit::Error> {
//! let queue = sqskit::Queue::from_env("http://127.0.0.1:4566/queue/us-east-1/000000000000/orders").await;
//! sqskit::flow::pause(&queue, "deploy of the billing service").await?;
//! assert_eq!(sqskit::flow::paused_reason(&queue).await?.as_deref(), Some("deploy of the billing service"));
//! sqskit::flow::resume(&queue).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use crate::client::sqs_error;
pub use crate::inventory::PAUSED_TAG;
use crate::{Error, Queue};

/// How often a poller reads the pause flag of each of its queues: a queue paused or resumed is
/// seen within this time (and costs 3600 / 30 = 120 `ListQueueTags` calls an hour per queue and
/// poller).
pub const PAUSE_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The reason recorded when none is given.
pub const DEFAULT_REASON: &str = "paused";

impl crate::error::QueueMissing for aws_sdk_sqs::operation::tag_queue::TagQueueError {
    fn queue_missing(&self) -> bool {
        false
    }
}
impl crate::error::QueueMissing for aws_sdk_sqs::operation::untag_queue::UntagQueueError {
    fn queue_missing(&self) -> bool {
        false
    }
}

/// `reason` as a tag value: trimmed, [`DEFAULT_REASON`] when empty; at most 256 characters of
/// letters, digits, spaces and `_ . : / = + - @` (what AWS allows in a tag value).
///
/// # Errors
/// [`Error::Invalid`] naming `reason`, with the first character it refuses.
///
/// # Example
/// ```
/// use sqskit::flow::check_reason;
/// assert_eq!(check_reason("  deploy v2.3 ").unwrap(), "deploy v2.3");
/// assert_eq!(check_reason("").unwrap(), "paused");
/// assert!(check_reason("deploy #42").unwrap_err().to_string().contains("'#'"));
/// ```
pub fn check_reason(reason: &str) -> Result<String, Error> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Ok(DEFAULT_REASON.to_string());
    }
    if reason.chars().count() > 256 {
        return Err(Error::Invalid {
            what: "reason",
            reason: format!("{} characters, a tag value holds 256 at most", reason.chars().count()),
        });
    }
    if let Some(c) = reason.chars().find(|c| !(c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(*c))) {
        return Err(Error::Invalid {
            what: "reason",
            reason: format!(
                "{c:?} cannot be in a queue tag (letters, digits, spaces and _ . : / = + - @ only): {reason:?}"
            ),
        });
    }
    Ok(reason.to_string())
}

/// Pause `queue` for every poller that honours the flag: tag it [`PAUSED_TAG`] = `reason`
/// (see [`check_reason`]). Pausing a paused queue replaces the reason.
///
/// # Errors
/// [`Error::Invalid`] for a reason that cannot be a tag value; the classified error of
/// `TagQueue` (e.g. no `sqs:TagQueue` permission, or no such queue).
pub async fn pause(queue: &Queue, reason: &str) -> Result<(), Error> {
    let reason = check_reason(reason)?;
    queue
        .client()
        .tag_queue()
        .queue_url(queue.url())
        .tags(PAUSED_TAG, reason)
        .send()
        .await
        .map_err(|e| sqs_error("TagQueue", queue.url(), e))?;
    Ok(())
}

/// Resume `queue`: remove its [`PAUSED_TAG`]. Returns the reason it was paused for (`None`:
/// it was not paused; nothing is changed then).
///
/// # Errors
/// The classified error of `ListQueueTags` or `UntagQueue`.
pub async fn resume(queue: &Queue) -> Result<Option<String>, Error> {
    let Some(reason) = paused_reason(queue).await? else { return Ok(None) };
    queue
        .client()
        .untag_queue()
        .queue_url(queue.url())
        .tag_keys(PAUSED_TAG)
        .send()
        .await
        .map_err(|e| sqs_error("UntagQueue", queue.url(), e))?;
    Ok(Some(reason))
}

/// Why `queue` is paused, or `None` when it is not (one `ListQueueTags` call).
///
/// # Errors
/// The classified error of `ListQueueTags`.
pub async fn paused_reason(queue: &Queue) -> Result<Option<String>, Error> {
    let tags = crate::inventory::tags(queue).await?;
    Ok(crate::inventory::paused(&tags).map(str::to_string))
}
