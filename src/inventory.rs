//! Inventory: which queues there are and how deep they are, read from queue attributes only.
//!
//! It owns listing queues by name prefix, one [`QueueStats`] row per queue (visible, in flight,
//! delayed, its dead-letter queue and that queue's depth, and whether it is paused: what
//! `sqskit stats` prints and the console's overview shows), a queue's [`QueueSettings`] (the attributes that matter when
//! operating it) and its tags (where a paused queue is marked, [`PAUSED_TAG`]). Nothing here
//! receives a message, so nothing here changes a receive count; looking at messages is
//! [`dlq::inspect`](crate::dlq::inspect)'s job (feature `dlq`).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::types::QueueAttributeName;
use futures::StreamExt;

use crate::client::{parse_redrive, sqs_error};
use crate::{Error, Queue};

/// The tag that marks a queue as paused, its value being the reason (`sqskit pause` sets it;
/// consumers that honour it stop receiving from the queue).
pub const PAUSED_TAG: &str = "sqskit:paused";

// The two operations only this module calls, classified as the client classifies the others.
impl crate::error::QueueMissing for aws_sdk_sqs::operation::list_queues::ListQueuesError {
    fn queue_missing(&self) -> bool {
        false
    }
}
impl crate::error::QueueMissing for aws_sdk_sqs::operation::list_queue_tags::ListQueueTagsError {
    fn queue_missing(&self) -> bool {
        self.is_queue_does_not_exist()
    }
}

/// How many queues' attributes are read at once.
const CONCURRENCY: usize = 8;

/// The queues whose name starts with `prefix` (all when `None`), sorted by name, every page of
/// `ListQueues` followed.
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), sqskit::Error> {
/// let sdk = sqskit::load_aws_config().await;
/// let client = aws_sdk_sqs::Client::new(&sdk);
/// for q in sqskit::inventory::list_queues(&client, Some("orders")).await? {
///     println!("{}", q.url());
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// The classified error of `ListQueues`.
pub async fn list_queues(client: &aws_sdk_sqs::Client, prefix: Option<&str>) -> Result<Vec<Queue>, Error> {
    let mut urls: Vec<String> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = client
            .list_queues()
            .set_queue_name_prefix(prefix.filter(|p| !p.is_empty()).map(str::to_string))
            .max_results(1000)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| sqs_error("ListQueues", prefix.unwrap_or("*"), e))?;
        urls.extend(out.queue_urls().iter().cloned());
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    let mut queues: Vec<Queue> = urls.into_iter().map(|u| Queue::new(client.clone(), u)).collect();
    queues.sort_by(|a, b| a.name().cmp(b.name()));
    queues.dedup_by(|a, b| a.url() == b.url());
    Ok(queues)
}

/// One queue's depth and its dead-letter queue's, as `sqskit stats` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue's name.
    pub queue: String,
    /// The queue's URL.
    pub url: String,
    /// `ApproximateNumberOfMessages`.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`.
    pub in_flight: u64,
    /// `ApproximateNumberOfMessagesDelayed`.
    pub delayed: u64,
    /// The dead-letter queue's name, from the redrive policy.
    pub dlq: Option<String>,
    /// The dead-letter queue's URL, when it exists.
    pub dlq_url: Option<String>,
    /// Messages visible in the dead-letter queue (`None` when it could not be read).
    pub dlq_visible: Option<u64>,
    /// The redrive policy's `maxReceiveCount`.
    pub max_receive_count: Option<u32>,
    /// Why the queue is paused ([`PAUSED_TAG`]); `None` when it is not, or when its tags were
    /// not read ([`stats_with_pauses`] reads them, [`stats`] does not).
    pub paused: Option<String>,
}

/// As [`stats`], and each row's [`QueueStats::paused`] from the queue's tags (one more
/// `ListQueueTags` call per queue).
///
/// # Errors
/// The classified error of the first queue whose attributes or tags cannot be read.
pub async fn stats_with_pauses(queues: &[Queue]) -> Result<Vec<QueueStats>, Error> {
    let mut rows = stats(queues).await?;
    let tags: Vec<Result<BTreeMap<String, String>, Error>> =
        futures::stream::iter(queues.iter().map(tags)).buffered(CONCURRENCY).collect().await;
    for (row, t) in rows.iter_mut().zip(tags) {
        row.paused = paused(&t?).map(str::to_string);
    }
    Ok(rows)
}

/// [`QueueStats`] of each queue, in the given order: `GetQueueAttributes` of every queue, then of
/// each dead-letter queue that is not itself among `queues` (read once however many queues share
/// it). A dead-letter queue that cannot be read leaves `dlq_visible` empty rather than failing
/// the whole table.
///
/// # Errors
/// The classified error of the first queue whose attributes cannot be read.
pub async fn stats(queues: &[Queue]) -> Result<Vec<QueueStats>, Error> {
    let attrs: Vec<Result<crate::QueueAttributes, Error>> =
        futures::stream::iter(queues.iter().cloned().map(|q| async move { q.attributes().await }))
            .buffered(CONCURRENCY)
            .collect()
            .await;
    let mut rows = Vec::with_capacity(queues.len());
    for (q, a) in queues.iter().zip(attrs) {
        let a = a?;
        let redrive = a.redrive.as_ref();
        rows.push(QueueStats {
            queue: q.name().to_string(),
            url: q.url().to_string(),
            visible: a.visible,
            in_flight: a.in_flight,
            delayed: a.delayed,
            dlq: redrive.map(|r| r.dead_letter_arn.rsplit(':').next().unwrap_or_default().to_string()),
            dlq_url: redrive.and_then(|r| r.dead_letter_url.clone()),
            dlq_visible: None,
            max_receive_count: redrive.map(|r| r.max_receive_count),
            paused: None,
        });
    }
    let mut known: HashMap<String, Option<u64>> = rows.iter().map(|r| (r.url.clone(), Some(r.visible))).collect();
    let missing: Vec<String> = {
        let mut m: Vec<String> =
            rows.iter().filter_map(|r| r.dlq_url.clone()).filter(|u| !known.contains_key(u)).collect();
        m.sort();
        m.dedup();
        m
    };
    let client = queues.first().map(|q| q.client().clone());
    if let Some(client) = client {
        let read: Vec<(String, Option<u64>)> = futures::stream::iter(missing.into_iter().map(|url| {
            let q = Queue::new(client.clone(), url.clone());
            async move { (url, q.attributes().await.ok().map(|d| d.visible)) }
        }))
        .buffered(CONCURRENCY)
        .collect()
        .await;
        known.extend(read);
    }
    for r in &mut rows {
        r.dlq_visible = r.dlq_url.as_ref().and_then(|u| known.get(u).copied().flatten());
    }
    Ok(rows)
}

/// The attributes of a queue that matter when operating it, and all of them as SQS returned them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct QueueSettings {
    /// `QueueArn`.
    pub arn: Option<String>,
    /// `VisibilityTimeout`, seconds.
    pub visibility_timeout_s: Option<u64>,
    /// `MessageRetentionPeriod`, seconds.
    pub retention_s: Option<u64>,
    /// `DelaySeconds`.
    pub delay_s: Option<u64>,
    /// `ReceiveMessageWaitTimeSeconds`.
    pub receive_wait_s: Option<u64>,
    /// `MaximumMessageSize`, bytes.
    pub max_message_bytes: Option<u64>,
    /// The dead-letter queue's name (redrive policy).
    pub dlq: Option<String>,
    /// The redrive policy's `maxReceiveCount`.
    pub max_receive_count: Option<u32>,
    /// `FifoQueue`.
    pub fifo: bool,
    /// `ContentBasedDeduplication` (FIFO).
    pub content_based_dedup: bool,
    /// How the queue is encrypted: `SSE-SQS`, `SSE-KMS (<key id>)`, or `none`.
    pub encryption: String,
    /// Every attribute, by name.
    pub all: BTreeMap<String, String>,
}

/// A queue's [`QueueSettings`] (`GetQueueAttributes` with `All`).
///
/// # Errors
/// The classified error of `GetQueueAttributes`.
pub async fn settings(queue: &Queue) -> Result<QueueSettings, Error> {
    let out = queue
        .client()
        .get_queue_attributes()
        .queue_url(queue.url())
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| sqs_error("GetQueueAttributes", queue.url(), e))?;
    let all: BTreeMap<String, String> = out
        .attributes()
        .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect())
        .unwrap_or_default();
    let num = |n: &str| all.get(n).and_then(|v| v.parse::<u64>().ok());
    let yes = |n: &str| all.get(n).map(String::as_str) == Some("true");
    let redrive = all.get("RedrivePolicy").and_then(|p| parse_redrive(p));
    let encryption = match (all.get("KmsMasterKeyId"), yes("SqsManagedSseEnabled")) {
        (Some(key), _) if !key.is_empty() => format!("SSE-KMS ({key})"),
        (_, true) => "SSE-SQS".to_string(),
        _ => "none".to_string(),
    };
    Ok(QueueSettings {
        arn: all.get("QueueArn").cloned(),
        visibility_timeout_s: num("VisibilityTimeout"),
        retention_s: num("MessageRetentionPeriod"),
        delay_s: num("DelaySeconds"),
        receive_wait_s: num("ReceiveMessageWaitTimeSeconds"),
        max_message_bytes: num("MaximumMessageSize"),
        dlq: redrive.as_ref().map(|r| r.dead_letter_arn.rsplit(':').next().unwrap_or_default().to_string()),
        max_receive_count: redrive.map(|r| r.max_receive_count),
        fifo: yes("FifoQueue"),
        content_based_dedup: yes("ContentBasedDeduplication"),
        encryption,
        all,
    })
}

/// A queue's tags (`ListQueueTags`).
///
/// # Errors
/// The classified error of `ListQueueTags`.
pub async fn tags(queue: &Queue) -> Result<BTreeMap<String, String>, Error> {
    let out = queue
        .client()
        .list_queue_tags()
        .queue_url(queue.url())
        .send()
        .await
        .map_err(|e| sqs_error("ListQueueTags", queue.url(), e))?;
    Ok(out.tags().map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default())
}

/// Why a queue is paused, when its tags say it is ([`PAUSED_TAG`]; an empty reason reads as
/// `paused`).
///
/// # Example
/// ```
/// use std::collections::BTreeMap;
/// let mut tags = BTreeMap::new();
/// assert_eq!(sqskit::inventory::paused(&tags), None);
/// tags.insert("sqskit:paused".to_string(), "deploy in progress".to_string());
/// assert_eq!(sqskit::inventory::paused(&tags), Some("deploy in progress"));
/// ```
pub fn paused(tags: &BTreeMap<String, String>) -> Option<&str> {
    tags.get(PAUSED_TAG).map(|r| if r.is_empty() { "paused" } else { r.as_str() })
}
