//! Settlement: the one path that turns outcomes into SQS actions.
//!
//! The poller's acker, the Lambda adapter and [`Processor::settle`](crate::Processor::settle)
//! all carry outcomes out through this module, so each rule lives once:
//!
//! - **Dead letters** are sent to the DLQ by [`dead_letter`] as soon as the processor decides
//!   them, before anything later in a FIFO group starts; only a confirmed send becomes
//!   [`Outcome::DeadLetter`] (then the message is deleted), a failed one a retry.
//! - **Deletes** ([`delete`]) are confirmed per entry: `DeleteMessageBatch` may answer HTTP 200
//!   with entries in `Failed`. Entries failing with `SenderFault = false` and whole calls
//!   failing transiently are retried; a success is counted
//!   (`sqskit_messages_succeeded_total`) only once its delete is confirmed; every delete that
//!   fails for good is counted in `sqskit_delete_failures_total`.
//! - **Visibility changes** ([`change_visibility`]) keep the given order inside a call (a FIFO
//!   failure first, then the messages held behind it), are retried the same way, and each
//!   failure is counted in `sqskit_visibility_failures_total{reason}`.
//! - **Claim check cleanup** (feature `payload`, [`ClaimCheck::with_cleanup`](crate::payload::ClaimCheck::with_cleanup)):
//!   the S3 object of a claim-checked message is deleted once [`delete`] is confirmed for it,
//!   never before, and never for a dead-lettered message (its DLQ copy still points at it).
//! - An invalid or expired receipt handle means the lease was lost: the message may already be
//!   with another consumer. That is logged as a warning and counted in
//!   `sqskit_leases_lost_total`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{BatchReport, Queue};
use crate::context::QueueContext;
use crate::error::Error;
use crate::limits::{MAX_BATCH_ENTRIES, MAX_MESSAGE_ATTRIBUTES, MAX_PAYLOAD_BYTES};
use crate::message::{AttributeValue, OutgoingMessage, ReceivedMessage};
use crate::metrics::names;
use crate::outcome::{Decision, Failure, Outcome};

/// Names of the message attributes the processor adds when it dead-letters a message.
pub mod dead_letter_attributes {
    /// The [`FailureKind`](crate::FailureKind) name.
    pub const ERROR_KIND: &str = "sqskit-error-kind";
    /// A short error text (≤ 256 characters).
    pub const ERROR: &str = "sqskit-error";
    /// The source queue's name.
    pub const SOURCE_QUEUE: &str = "sqskit-source-queue";
    /// The receive count when it was dead-lettered.
    pub const RECEIVE_COUNT: &str = "sqskit-receive-count";
    /// Used instead of the four above (as one JSON object) when the message has more than
    /// six attributes of its own (SQS allows ten).
    pub const COMBINED: &str = "sqskit-dead-letter";
    /// All of them.
    pub const ALL: [&str; 5] = [ERROR_KIND, ERROR, SOURCE_QUEUE, RECEIVE_COUNT, COMBINED];
}

/// The message to send to the DLQ for `raw`: original body and attributes (so its
/// `traceparent`) and its `AWSTraceHeader`, plus the error attributes. On a FIFO DLQ, the group id is kept and the original message id is the dedup id.
pub fn dead_letter_message(
    raw: &ReceivedMessage,
    failure: &Failure,
    source_queue: &str,
    fifo: bool,
) -> OutgoingMessage {
    use dead_letter_attributes as n;
    let error: String = failure.error.chars().take(256).collect();
    let mut msg = OutgoingMessage::new(raw.body.clone());
    msg.attributes = raw.attributes.clone();
    msg.trace_header = crate::trace::received_trace_header(raw);
    let own = msg.attributes.len();
    if own + 4 <= MAX_MESSAGE_ATTRIBUTES {
        msg.attributes.insert(n::ERROR_KIND.into(), AttributeValue::string(failure.kind.as_str()));
        msg.attributes
            .insert(n::ERROR.into(), AttributeValue::string(if error.is_empty() { "-".into() } else { error }));
        msg.attributes.insert(n::SOURCE_QUEUE.into(), AttributeValue::string(source_queue));
        msg.attributes.insert(n::RECEIVE_COUNT.into(), AttributeValue::number(raw.receive_count()));
    } else if own < MAX_MESSAGE_ATTRIBUTES {
        let combined = serde_json::json!({
            "kind": failure.kind.as_str(), "error": error, "source_queue": source_queue, "receive_count": raw.receive_count(),
        });
        msg.attributes.insert(
            n::COMBINED.into(),
            AttributeValue {
                data_type: "String.json".into(),
                string_value: Some(combined.to_string()),
                binary_value: None,
            },
        );
    } else {
        tracing::warn!(message_id = %raw.message_id, kind = failure.kind.as_str(), error = %failure.error,
            "message already has 10 attributes; dead-lettering it without error attributes");
    }
    // Never make the message too large for the DLQ by adding attributes.
    if msg.payload_size() > MAX_PAYLOAD_BYTES {
        msg.attributes = raw.attributes.clone();
    }
    if fifo {
        msg.group_id = Some(raw.group_id().unwrap_or("sqskit-dead-letter").to_string());
        msg.dedup_id = Some(raw.message_id.clone());
    }
    msg
}

/// Send `raw` to the context's DLQ with the error attributes, and wait for SQS to confirm.
///
/// # Errors
/// A text naming the DLQ and the reason when no DLQ is known or the send failed.
pub async fn dead_letter(ctx: &QueueContext, raw: &ReceivedMessage, failure: &Failure) -> Result<(), String> {
    let Some(dlq) = &ctx.dlq else { return Err("no dead-letter queue is known".into()) };
    let msg = dead_letter_message(raw, failure, ctx.queue_name(), dlq.is_fifo());
    match dlq.send(msg).await {
        Ok(_) => {
            metrics::counter!(names::DEAD_LETTERED).increment(1);
            Ok(())
        }
        Err(e) => Err(format!("sending to {}: {e}", dlq.name())),
    }
}

/// Why a message is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// The handler succeeded.
    Succeeded,
    /// It is in the DLQ now.
    DeadLettered,
    /// Idempotency: a duplicate of a completed message.
    Duplicate,
    /// Not due yet: its next delay hop was sent.
    Deferred,
    /// Released unstarted on its last allowed receive: a fresh copy was sent in its place
    /// ([`carry_over`]).
    CarriedOver,
}

/// The message attribute a carried-over copy counts its carry-overs in.
pub const CARRIED_OVER_ATTRIBUTE: &str = "sqskit-carried-over";

/// Whether releasing `m` unstarted would let SQS move it to the DLQ without it ever running:
/// a standard (or fair) queue's message on its last allowed receive (`receive count ≥
/// maxReceiveCount`). Such a message is carried over instead ([`carry_over`]). A FIFO message
/// cannot be (its copy would lose its place in the group): runtimes run those through.
pub fn must_carry_over(ctx: &QueueContext, m: &ReceivedMessage) -> bool {
    !ctx.fifo && ctx.max_receive_count.is_some_and(|max| m.receive_count() >= max)
}

/// Carry over messages that must go back unstarted but are on their last allowed receive
/// (shutdown, a lease that could not be extended while they waited): send a fresh copy of each
/// ([`delay::copy_of`](crate::delay::copy_of), with [`CARRIED_OVER_ATTRIBUTE`] counting the
/// carry-overs when the message has room for one more attribute) and return the ones whose copy
/// SQS accepted: the caller deletes those ([`Deletion::CarriedOver`]) and releases the rest
/// (visibility 0). A receive that never ran the handler then counts toward nothing.
pub async fn carry_over(queue: &Queue, messages: &[Arc<ReceivedMessage>]) -> Vec<Arc<ReceivedMessage>> {
    if messages.is_empty() {
        return Vec::new();
    }
    let copies = messages.iter().map(|m| {
        let mut copy = crate::delay::copy_of(m);
        let n = m
            .attributes
            .get(CARRIED_OVER_ATTRIBUTE)
            .and_then(|a| a.string_value.as_deref())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_add(1);
        if copy.attributes.contains_key(CARRIED_OVER_ATTRIBUTE) || copy.attributes.len() < MAX_MESSAGE_ATTRIBUTES {
            copy.attributes.insert(CARRIED_OVER_ATTRIBUTE.into(), AttributeValue::number(n));
        }
        copy
    });
    let sent = match Box::pin(queue.send_batch(copies)).await {
        Ok(report) => {
            for f in &report.failed {
                tracing::warn!(queue = queue.name(), message_id = %messages[f.index].message_id, code = %f.code,
                    "could not carry the message over; releasing it (SQS may move it to the DLQ on its next receive)");
            }
            report.sent.iter().map(|s| messages[s.index].clone()).collect()
        }
        Err(e) => {
            tracing::warn!(queue = queue.name(), error = %e, messages = messages.len(),
                "could not carry messages over; releasing them (SQS may move them to the DLQ on their next receive)");
            Vec::new()
        }
    };
    for m in &sent {
        tracing::info!(queue = queue.name(), message_id = %m.message_id, receive_count = m.receive_count(),
            "released unstarted on its last allowed receive: carried over as a fresh copy");
    }
    metrics::counter!(names::CARRIED_OVER).increment(sent.len() as u64);
    sent
}

/// The SQS actions a set of decisions calls for.
#[derive(Debug, Default, Clone)]
pub struct Actions {
    /// Messages to delete, and why.
    pub delete: Vec<(Arc<ReceivedMessage>, Deletion)>,
    /// Visibility changes, in the order they must be made: each FIFO failure is followed by
    /// the messages held behind it.
    pub visibility: Vec<(Arc<ReceivedMessage>, u32)>,
    /// Released messages to carry over instead ([`Actions::plan_for`], [`carry_over`]).
    pub carry: Vec<Arc<ReceivedMessage>>,
}

impl Actions {
    /// Plan the actions for `decisions` of `ctx`'s queue: as [`Actions::plan`], and the released
    /// messages that [`must_carry_over`] go to `carry` instead of getting visibility 0.
    pub fn plan_for(ctx: &QueueContext, decisions: &[Decision]) -> Self {
        let mut a = Self::plan(decisions);
        let (carry, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut a.visibility).into_iter().partition(|(m, _)| {
            must_carry_over(ctx, m)
                && decisions.iter().any(|d| Arc::ptr_eq(&d.message, m) && d.outcome == Outcome::Released)
        });
        a.visibility = rest;
        a.carry = carry.into_iter().map(|(m, _)| m).collect();
        a
    }

    /// Plan the actions for `decisions` (released messages all get visibility 0; see
    /// [`Actions::plan_for`]).
    pub fn plan(decisions: &[Decision]) -> Self {
        let mut a = Actions::default();
        for d in decisions {
            match &d.outcome {
                Outcome::Succeeded => a.delete.push((d.message.clone(), Deletion::Succeeded)),
                Outcome::Duplicate => a.delete.push((d.message.clone(), Deletion::Duplicate)),
                Outcome::Deferred => a.delete.push((d.message.clone(), Deletion::Deferred)),
                Outcome::DeadLetter { .. } => a.delete.push((d.message.clone(), Deletion::DeadLettered)),
                Outcome::Retry { visibility, .. } => {
                    a.visibility.push((d.message.clone(), *visibility));
                    for h in decisions {
                        if let Outcome::Held { visibility, behind } = &h.outcome {
                            if *behind == d.message.message_id {
                                a.visibility.push((h.message.clone(), *visibility));
                            }
                        }
                    }
                }
                Outcome::Released => a.visibility.push((d.message.clone(), 0)),
                Outcome::Held { .. } => {}
            }
        }
        a
    }
}

/// What [`settle`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SettleReport {
    /// Messages deleted (successes and dead-lettered ones), confirmed by SQS.
    pub deleted: usize,
    /// Successes whose delete SQS confirmed.
    pub succeeded: usize,
    /// Duplicates (idempotency) whose delete SQS confirmed.
    pub duplicates: usize,
    /// Messages whose visibility was set for a retry (including FIFO held ones).
    pub retried: usize,
    /// Messages in the DLQ (their send was confirmed when they were decided).
    pub dead_lettered: usize,
    /// Errors met (the affected messages come back after their visibility timeout).
    pub errors: Vec<String>,
}

/// Carry out `decisions` for one batch: delete successes and dead-lettered messages, then set
/// the visibility of retried, held and released ones (each FIFO failure first, its held
/// messages after it, in one call).
pub async fn settle(ctx: &QueueContext, decisions: &[Decision]) -> SettleReport {
    let mut report = SettleReport {
        dead_lettered: decisions.iter().filter(|d| matches!(d.outcome, Outcome::DeadLetter { .. })).count(),
        ..Default::default()
    };
    let Some(queue) = &ctx.queue else {
        report.errors.push("no source queue known: nothing settled".into());
        return report;
    };
    let mut actions = Actions::plan_for(ctx, decisions);
    let carried = carry_over(queue, &actions.carry).await;
    for m in &actions.carry {
        if carried.iter().any(|c| Arc::ptr_eq(c, m)) {
            actions.delete.push((m.clone(), Deletion::CarriedOver));
        } else {
            actions.visibility.push((m.clone(), 0));
        }
    }
    let d = delete(queue, &actions.delete).await;
    report.deleted = d.done;
    report.succeeded = d.succeeded;
    report.duplicates = d.duplicates;
    report.errors.extend(d.errors);
    let v = change_visibility(queue, &actions.visibility, "retry").await;
    report.retried = v.done;
    report.errors.extend(v.errors);
    report
}

/// What [`delete`] or [`change_visibility`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Entries SQS confirmed.
    pub done: usize,
    /// Of the deletes, successes (counted as processed only now).
    pub succeeded: usize,
    /// Of the deletes, duplicates (idempotency).
    pub duplicates: usize,
    /// One text per entry or call that failed for good.
    pub errors: Vec<String>,
}

const ATTEMPTS: u32 = 4;

/// Delete messages, at most 10 per call; retries entries that SQS failed on its side and
/// calls that failed transiently. Counts successes only once their delete is confirmed.
pub async fn delete(queue: &Queue, items: &[(Arc<ReceivedMessage>, Deletion)]) -> Applied {
    let mut applied = Applied::default();
    for chunk in items.chunks(MAX_BATCH_ENTRIES) {
        let call = with_retries(chunk.len(), |idx| {
            let handles: Vec<&str> = idx.iter().map(|&i| chunk[i].0.receipt_handle.as_str()).collect();
            async move { queue.delete_batch(&handles).await }
        });
        let r = crate::span::operation("settle", queue.name(), call, |_| chunk.len()).await;
        #[cfg(feature = "payload")]
        if let Some(check) = queue.claim_check().filter(|c| c.cleanup()) {
            // only now that SQS confirmed the delete; a dead letter's DLQ copy and a deferred
            // message's next hop still point at it
            let gone: Vec<&ReceivedMessage> =
                r.ok.iter()
                    .filter(|&&i| matches!(chunk[i].1, Deletion::Succeeded | Deletion::Duplicate))
                    .map(|&i| &*chunk[i].0)
                    .collect();
            check.cleanup_after_delete(&gone).await;
        }
        let succeeded = r.ok.iter().filter(|&&i| chunk[i].1 == Deletion::Succeeded).count();
        let duplicates = r.ok.iter().filter(|&&i| chunk[i].1 == Deletion::Duplicate).count();
        applied.done += r.ok.len();
        applied.succeeded += succeeded;
        applied.duplicates += duplicates;
        metrics::counter!(names::SUCCEEDED).increment(succeeded as u64);
        if duplicates > 0 {
            metrics::counter!(names::DUPLICATES).increment(duplicates as u64);
        }
        for (i, code, message) in r.failed {
            let m = &chunk[i].0;
            metrics::counter!(names::DELETE_FAILURES, "code" => code.clone()).increment(1);
            if lease_lost(&code, &message) {
                lost_lease(queue, m, "delete");
            } else {
                tracing::warn!(queue = queue.name(), message_id = %m.message_id, code = %code, error = %message,
                    "delete failed; the message will be received again");
            }
            applied.errors.push(format!("delete {}: {code}: {message}", m.message_id));
        }
    }
    applied
}

/// Set visibility timeouts (`(message, seconds)`), at most 10 per call, keeping the order;
/// retries like [`delete`]. `reason` labels the failure metric: `heartbeat`, `retry`, `release`.
pub async fn change_visibility(
    queue: &Queue,
    entries: &[(Arc<ReceivedMessage>, u32)],
    reason: &'static str,
) -> Applied {
    let mut applied = Applied::default();
    for chunk in entries.chunks(MAX_BATCH_ENTRIES) {
        let call = with_retries(chunk.len(), |idx| {
            let list: Vec<(&str, u32)> =
                idx.iter().map(|&i| (chunk[i].0.receipt_handle.as_str(), chunk[i].1)).collect();
            async move { queue.change_visibility_each(&list).await }
        });
        // a heartbeat is no settlement (and would be one span per in-flight batch every beat)
        let r = if reason == "heartbeat" {
            call.await
        } else {
            crate::span::operation("settle", queue.name(), call, |_| chunk.len()).await
        };
        applied.done += r.ok.len();
        for (i, code, message) in r.failed {
            let m = &chunk[i].0;
            metrics::counter!(names::VISIBILITY_FAILURES, "reason" => reason).increment(1);
            if lease_lost(&code, &message) {
                lost_lease(queue, m, reason);
            } else {
                tracing::warn!(queue = queue.name(), message_id = %m.message_id, code = %code, error = %message, reason,
                    "visibility change failed; the queue's visibility timeout applies");
            }
            applied.errors.push(format!("change visibility ({reason}) {}: {code}: {message}", m.message_id));
        }
    }
    applied
}

/// Whether an entry failure means the receipt handle no longer holds the message (retrying
/// cannot help; LocalStack reports these with `SenderFault = false`).
fn lease_lost(code: &str, message: &str) -> bool {
    let code = code.rsplit('.').next().unwrap_or(code);
    let message = message.to_ascii_lowercase();
    matches!(code, "ReceiptHandleIsInvalid" | "MessageNotInflight")
        || message.contains("receipt handle has expired")
        || message.contains("not available for visibility timeout change")
}

fn lost_lease(queue: &Queue, m: &ReceivedMessage, during: &'static str) {
    metrics::counter!(names::LEASES_LOST, "during" => during).increment(1);
    tracing::warn!(queue = queue.name(), message_id = %m.message_id, receive_count = m.receive_count(), during,
        "lease lost: the receipt handle is no longer valid; the message may be processed again by another consumer");
}

#[derive(Default)]
struct EntryResults {
    ok: Vec<usize>,
    failed: Vec<(usize, String, String)>,
}

/// Run a batch call over entries `0..n`, retrying the entries SQS failed on its side
/// (`SenderFault = false`) and calls that failed transiently, up to [`ATTEMPTS`] times.
async fn with_retries<F, Fut>(n: usize, mut call: F) -> EntryResults
where
    F: FnMut(Vec<usize>) -> Fut,
    Fut: Future<Output = Result<BatchReport, Error>>,
{
    let mut pending: Vec<usize> = (0..n).collect();
    let mut out = EntryResults::default();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let cap = 100u64 << attempt;
            tokio::time::sleep(Duration::from_millis(cap / 2 + fastrand::u64(0..=cap / 2))).await;
        }
        let last = attempt + 1 == ATTEMPTS;
        match call(pending.clone()).await {
            Ok(r) => {
                out.ok.extend(r.succeeded.iter().filter_map(|&i| pending.get(i).copied()));
                let mut retry = Vec::new();
                for f in r.failed {
                    let Some(&idx) = pending.get(f.index) else { continue };
                    if !f.sender_fault && !last && !lease_lost(&f.code, &f.message) {
                        retry.push(idx);
                    } else {
                        out.failed.push((idx, f.code, f.message));
                    }
                }
                if retry.is_empty() {
                    return out;
                }
                pending = retry;
            }
            Err(e) if e.is_transient() && !last => {
                tracing::debug!(error = %e, attempt, "batch call failed; retrying");
            }
            Err(e) => {
                let code = match &e {
                    Error::Service { code, .. } | Error::Throttled { code, .. } => code.clone(),
                    Error::QueueDoesNotExist { .. } => "QueueDoesNotExist".into(),
                    _ => "Transport".into(),
                };
                out.failed.extend(pending.iter().map(|&i| (i, code.clone(), e.to_string())));
                return out;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EntryFailure;

    fn fail(index: usize, code: &str, sender_fault: bool) -> EntryFailure {
        EntryFailure { index, code: code.into(), message: String::new(), sender_fault }
    }

    #[tokio::test]
    async fn server_side_entry_failures_are_retried_and_client_side_ones_are_not() {
        // entries 0..4: 1 fails on SQS's side once, 2 is the caller's fault, 3 lost its lease
        let calls = std::sync::Mutex::new(Vec::new());
        let r = with_retries(4, |idx: Vec<usize>| {
            let attempt = {
                let mut c = calls.lock().unwrap();
                c.push(idx.clone());
                c.len()
            };
            async move {
                let mut report = BatchReport::default();
                for (pos, entry) in idx.iter().enumerate() {
                    match (entry, attempt) {
                        (1, 1) => report.failed.push(fail(pos, "InternalError", false)),
                        (2, _) => report.failed.push(fail(pos, "InvalidParameterValue", true)),
                        (3, _) => report.failed.push(fail(pos, "ReceiptHandleIsInvalid", false)),
                        _ => report.succeeded.push(pos),
                    }
                }
                Ok(report)
            }
        })
        .await;
        assert_eq!(*calls.lock().unwrap(), vec![vec![0, 1, 2, 3], vec![1]], "only the server-side failure is re-sent");
        let mut ok = r.ok.clone();
        ok.sort();
        assert_eq!(ok, [0, 1]);
        let failed: Vec<(usize, &str)> = r.failed.iter().map(|(i, c, _)| (*i, c.as_str())).collect();
        assert_eq!(failed, [(2, "InvalidParameterValue"), (3, "ReceiptHandleIsInvalid")]);
    }

    #[test]
    fn invalid_or_expired_receipt_handles_mean_a_lost_lease() {
        assert!(lease_lost("ReceiptHandleIsInvalid", ""));
        assert!(lease_lost("AWS.SimpleQueueService.MessageNotInflight", ""));
        assert!(lease_lost(
            "InvalidParameterValue",
            "Value x for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."
        ));
        assert!(!lease_lost("InternalError", "try again"));
    }
}
