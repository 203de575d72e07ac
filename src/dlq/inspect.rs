//! Dead letters as an operator sees them: a look at a DLQ's messages, their counts by error kind
//! and by source queue, one [`DeadLetter`] row per message, and deleting chosen ones.
//!
//! What `sqskit dlq list` prints and the console's dead-letter page shows. Moving messages back
//! is [`dlq::redrive`](crate::dlq::redrive) (filtered with [`RedriveFilter`]) or a message move
//! task; this module only looks and deletes.
//!
//! # What a look costs
//! SQS has no way to read a message without receiving it: [`look`] receives up to `max` messages
//! (each receive raises its `ApproximateReceiveCount` by one), holds them invisible while it
//! gathers more (so that a look of more than ten does not see the same ten again), then makes
//! them visible again at once (visibility 0). Other consumers of the DLQ (a redrive, a move task,
//! the DLQ monitor) do not see those messages for the second or so the look takes, or for
//! [`LOOK_HOLD`] at most if the looking process dies half way. A DLQ normally has no consumer and
//! no redrive policy of its own, so the raised count harms nothing; on a DLQ that has one, each
//! look brings its messages one receive closer to being moved on.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use super::{error_info, error_kind, source_queue, RedriveFilter};
use crate::message::ReceivedMessage;
use crate::{Error, Queue};

/// How long a look holds the messages it received at most (they are released at once when it
/// ends; this bounds their invisibility if the process dies in between).
pub const LOOK_HOLD: Duration = Duration::from_secs(30);

/// Look at up to `max` messages of `dlq` without consuming them (see the module docs for what
/// it costs): received with all their attributes, then made visible again.
///
/// # Errors
/// As [`Queue::peek`].
pub async fn look(dlq: &Queue, max: usize) -> Result<Vec<ReceivedMessage>, Error> {
    dlq.peek(max, LOOK_HOLD).await
}

/// Counts of dead letters by error kind and by source queue (`unknown` when the source is not
/// recorded), as `sqskit dlq list` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DeadLetterCounts {
    /// Messages counted.
    pub messages: usize,
    /// By error kind ([`error_kind`]).
    pub kinds: BTreeMap<String, usize>,
    /// By source queue ([`source_queue`]).
    pub sources: BTreeMap<String, usize>,
}

/// Count `messages` by error kind and source queue.
///
/// # Example
/// ```
/// let counts = sqskit::dlq::inspect::count(&[]);
/// assert_eq!(counts.messages, 0);
/// assert!(counts.kinds.is_empty());
/// ```
pub fn count(messages: &[ReceivedMessage]) -> DeadLetterCounts {
    let mut c = DeadLetterCounts { messages: messages.len(), ..Default::default() };
    for m in messages {
        *c.kinds.entry(error_kind(m)).or_default() += 1;
        *c.sources.entry(source_queue(m).unwrap_or_else(|| UNKNOWN_SOURCE.into())).or_default() += 1;
    }
    c
}

/// What [`count`] files a dead letter without a known source queue under.
pub const UNKNOWN_SOURCE: &str = "unknown";

/// One dead letter, for a listing. The body is here for callers that choose to show it; nothing
/// in this crate logs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The DLQ message id.
    pub message_id: String,
    /// Where it was dead-lettered from, when known ([`source_queue`]).
    pub source_queue: Option<String>,
    /// Its error kind ([`error_kind`]).
    pub error_kind: String,
    /// The error text the processor recorded (≤ 256 characters), if any.
    pub error: Option<String>,
    /// Receives it had on its source queue when it failed for good: the count the processor
    /// recorded, else (moved by SQS's redrive policy) the message's own `ApproximateReceiveCount`,
    /// which also counts the looks at it in the DLQ; unknown for a message sent to the DLQ
    /// directly.
    pub receive_count: Option<u64>,
    /// First failure, ms since the Unix epoch: its first receive
    /// (`ApproximateFirstReceiveTimestamp`) when SQS moved it (it carries
    /// `DeadLetterQueueSourceArn` and keeps the source queue's timestamps); unknown for a message
    /// the processor dead-lettered (a new message in the DLQ) or one sent to the DLQ directly.
    pub first_failure_ms: Option<u64>,
    /// Last failure, ms since the Unix epoch: when the processor sent it to the DLQ (its
    /// `SentTimestamp` there); unknown otherwise.
    pub last_failure_ms: Option<u64>,
    /// `SentTimestamp`, ms since the Unix epoch.
    pub sent_ms: Option<u64>,
    /// `MessageGroupId`, when it has one (FIFO group or fair-queue tenant).
    pub group_id: Option<String>,
    /// Message attributes (string and number values; binary ones as `<N bytes>`).
    pub attributes: BTreeMap<String, String>,
    /// The body as it is in the DLQ.
    pub body: String,
}

impl From<&ReceivedMessage> for DeadLetter {
    fn from(m: &ReceivedMessage) -> Self {
        let (kind, error, _, recorded_count) = error_info(m);
        let ms = |n: &str| m.system_attributes.get(n).and_then(|v| v.parse::<u64>().ok());
        // moved by SQS's redrive policy: it keeps the source queue's timestamps and count
        let moved_by_sqs = m.system_attributes.contains_key("DeadLetterQueueSourceArn");
        let by_processor = kind.is_some();
        let attributes = m
            .attributes
            .iter()
            .map(|(k, v)| {
                let shown = match (&v.string_value, &v.binary_value) {
                    (Some(s), _) => s.clone(),
                    (None, Some(b)) => format!("<{} bytes>", b.len()),
                    (None, None) => String::new(),
                };
                (k.clone(), shown)
            })
            .collect();
        DeadLetter {
            message_id: m.message_id.clone(),
            source_queue: source_queue(m),
            error_kind: error_kind(m),
            error,
            receive_count: recorded_count
                .and_then(|c| c.parse().ok())
                .or_else(|| moved_by_sqs.then(|| u64::from(m.receive_count()))),
            first_failure_ms: moved_by_sqs.then(|| ms("ApproximateFirstReceiveTimestamp")).flatten(),
            last_failure_ms: by_processor.then(|| ms("SentTimestamp")).flatten(),
            sent_ms: ms("SentTimestamp"),
            group_id: m.group_id().map(str::to_string),
            attributes,
            body: m.body.clone(),
        }
    }
}

/// The messages that pass every filter (the filters of [`RedriveFilter`], so a listing filtered
/// this way shows exactly what a redrive with the same filters moves).
pub fn filtered<'a>(messages: &'a [ReceivedMessage], filters: &[RedriveFilter]) -> Vec<&'a ReceivedMessage> {
    messages.iter().filter(|m| filters.iter().all(|f| f.matches(m))).collect()
}

/// What [`delete`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DeleteReport {
    /// Ids deleted.
    pub deleted: Vec<String>,
    /// Ids asked for that were not found among the DLQ's visible messages.
    pub not_found: Vec<String>,
    /// Deletes that failed (the message stays), with the reason.
    pub failed: Vec<String>,
}

/// Delete the messages of `dlq` whose id is in `ids`: receive the DLQ's messages in batches
/// (held invisible meanwhile; the others are made visible again at the end, also on error),
/// delete those asked for, stop once all were found or every visible message was seen.
/// `progress` gets the number deleted so far.
///
/// # Errors
/// A failed receive or delete call (per-message failures are in the report).
pub async fn delete(
    dlq: &Queue,
    ids: &BTreeSet<String>,
    mut progress: impl FnMut(usize),
) -> Result<DeleteReport, Error> {
    let mut report = DeleteReport::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut others: Vec<String> = Vec::new();
    let mut failed_ids: HashSet<String> = HashSet::new();
    let result: Result<(), Error> = async {
        while report.deleted.len() + report.failed.len() < ids.len() {
            let batch = dlq.receive(10, Duration::from_secs(1), Some(LOOK_HOLD)).await?;
            let fresh: Vec<&ReceivedMessage> = batch.iter().filter(|m| seen.insert(m.message_id.clone())).collect();
            if fresh.is_empty() {
                others.extend(batch.iter().map(|m| m.receipt_handle.clone()));
                break;
            }
            let (chosen, rest): (Vec<&ReceivedMessage>, Vec<&ReceivedMessage>) =
                fresh.into_iter().partition(|m| ids.contains(&m.message_id));
            others.extend(rest.iter().map(|m| m.receipt_handle.clone()));
            if chosen.is_empty() {
                continue;
            }
            let handles: Vec<&str> = chosen.iter().map(|m| m.receipt_handle.as_str()).collect();
            let r = dlq.delete_batch(&handles).await?;
            report.deleted.extend(r.succeeded.iter().filter_map(|i| chosen.get(*i)).map(|m| m.message_id.clone()));
            for f in &r.failed {
                if let Some(m) = chosen.get(f.index) {
                    report.failed.push(format!("{}: {}: {}", m.message_id, f.code, f.message));
                    failed_ids.insert(m.message_id.clone());
                    others.push(m.receipt_handle.clone());
                }
            }
            progress(report.deleted.len());
        }
        Ok(())
    }
    .await;
    if !others.is_empty() {
        if let Err(e) = dlq.change_visibility_batch(&others, 0).await {
            tracing::warn!(queue = dlq.name(), error = %e, "could not make looked-at DLQ messages visible again; they come back when their hold ends");
        }
    }
    result?;
    let deleted: HashSet<&String> = report.deleted.iter().collect();
    report.not_found = ids.iter().filter(|id| !deleted.contains(id) && !failed_ids.contains(*id)).cloned().collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::dead_letter_attributes as dl;
    use crate::AttributeValue;

    fn letter(id: &str, kind: Option<&str>, source: Option<&str>) -> ReceivedMessage {
        let mut m = ReceivedMessage {
            message_id: id.into(),
            receipt_handle: "h".into(),
            body: format!("{{\"id\":\"{id}\"}}"),
            attributes: Default::default(),
            system_attributes: [
                ("SentTimestamp".to_string(), "1700000000000".to_string()),
                ("ApproximateFirstReceiveTimestamp".to_string(), "1700000001000".to_string()),
                ("ApproximateReceiveCount".to_string(), "4".to_string()),
            ]
            .into_iter()
            .collect(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        };
        if let Some(k) = kind {
            m.attributes.insert(dl::ERROR_KIND.into(), AttributeValue::string(k));
            m.attributes.insert(dl::ERROR.into(), AttributeValue::string("boom"));
            m.attributes.insert(dl::RECEIVE_COUNT.into(), AttributeValue::number(2));
        }
        if let Some(s) = source {
            m.attributes.insert(dl::SOURCE_QUEUE.into(), AttributeValue::string(s));
        }
        m
    }

    #[test]
    fn counts_by_kind_and_source_with_unknown_sources_and_max_receives() {
        let msgs = [
            letter("a", Some("permanent"), Some("orders")),
            letter("b", Some("permanent"), Some("payments")),
            letter("c", Some("undecodable"), Some("orders")),
            letter("d", None, None),
        ];
        let c = count(&msgs);
        assert_eq!(c.messages, 4);
        assert_eq!(c.kinds, [("max-receives".into(), 1), ("permanent".into(), 2), ("undecodable".into(), 1)].into());
        assert_eq!(c.sources, [("orders".into(), 2), ("payments".into(), 1), ("unknown".into(), 1)].into());
    }

    #[test]
    fn rows_say_which_times_and_counts_are_known() {
        let by_processor = DeadLetter::from(&letter("a", Some("permanent"), Some("orders")));
        assert_eq!(by_processor.receive_count, Some(2), "the count recorded on the source queue");
        assert_eq!(by_processor.last_failure_ms, Some(1_700_000_000_000), "sent to the DLQ then");
        assert_eq!(by_processor.first_failure_ms, None);
        assert_eq!(by_processor.error.as_deref(), Some("boom"));
        let raw = DeadLetter::from(&letter("r", None, None));
        assert_eq!((raw.receive_count, raw.first_failure_ms, raw.last_failure_ms), (None, None, None), "sent directly");
        let mut moved = letter("d", None, None);
        moved
            .system_attributes
            .insert("DeadLetterQueueSourceArn".into(), "arn:aws:sqs:us-east-1:000000000000:orders".into());
        let by_sqs = DeadLetter::from(&moved);
        assert_eq!(by_sqs.error_kind, "max-receives");
        assert_eq!(by_sqs.source_queue.as_deref(), Some("orders"));
        assert_eq!(by_sqs.receive_count, Some(4));
        assert_eq!(by_sqs.first_failure_ms, Some(1_700_000_001_000));
        assert_eq!(by_sqs.last_failure_ms, None);
    }

    #[test]
    fn source_and_id_filters_select_like_the_listing() {
        let msgs = [
            letter("a", Some("permanent"), Some("orders")),
            letter("b", Some("permanent"), Some("payments")),
            letter("c", Some("undecodable"), Some("orders")),
        ];
        let f = |s: &str| s.parse::<RedriveFilter>().unwrap();
        let ids = |v: Vec<&ReceivedMessage>| v.iter().map(|m| m.message_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(filtered(&msgs, &[f("source=orders")])), ["a", "c"]);
        assert_eq!(ids(filtered(&msgs, &[f("source=orders"), f("kind=permanent")])), ["a"]);
        assert_eq!(ids(filtered(&msgs, &[f("id=c, b")])), ["b", "c"]);
        assert_eq!(f("id=b,a").to_string(), "id=a,b");
        assert_eq!(f("source=orders").to_string(), "source=orders");
        for bad in ["id=", "id=,", "source="] {
            assert!(bad.parse::<RedriveFilter>().is_err(), "{bad}");
        }
    }
}
