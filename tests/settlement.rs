//! Every message accounted for: the settlement rules against LocalStack — what happens when
//! a DLQ send fails mid-FIFO-group, on the last allowed receive, when a delete is refused,
//! on fair queues, in FIFO producer batches, and to personal data in decoding errors.
use sqskit_test_support as support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::{json, Value};
use sqskit::client::EARLIER_ENTRY_FAILED;
use sqskit::lambda::LambdaAdapter;
use sqskit::processor::dead_letter_attributes as dl;
use sqskit::retry::Backoff;
use sqskit::{
    FailureKind, HandlerError, Message, Outcome, OutgoingMessage, Processor, ProcessorConfig, Queue, QueueContext,
};
use support::*;

type Calls = Arc<Mutex<Vec<String>>>;

/// A raw processor scripted by the body ("ok", "retry", "perm"), recording the bodies it ran,
/// with a fixed 1 s backoff so retries come back quickly.
fn scripted(calls: Calls) -> Processor<String> {
    Processor::raw(move |m: Message<String>| {
        let calls = calls.clone();
        async move {
            calls.lock().unwrap().push(m.body.clone());
            match m.body.split(':').next().unwrap_or_default() {
                "retry" => Err(HandlerError::retryable("downstream 503")),
                "perm" => Err(HandlerError::permanent("invalid order")),
                _ => Ok(()),
            }
        }
    })
    .with_config(ProcessorConfig::default().with_backoff(Backoff::fixed(Duration::from_secs(1))))
}

fn ran(calls: &Calls) -> Vec<String> {
    calls.lock().unwrap().clone()
}

/// The URL a queue named `name` would have on LocalStack (it need not exist).
fn url_of(name: &str) -> String {
    format!("{}/queue/us-east-1/000000000000/{name}", endpoint())
}

fn lambda_event(records: Vec<Value>) -> aws_lambda_events::event::sqs::SqsEvent {
    serde_json::from_value(json!({ "Records": records })).expect("event parses")
}

fn failed_ids(resp: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    resp.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect()
}

// ---- FIFO: a dead letter is confirmed before the rest of its group is settled ----

#[tokio::test]
async fn fifo_group_is_held_behind_a_message_whose_dead_letter_send_failed() {
    let src = fifo_queue("dlq-send-fails").await;
    let dlq_name = format!("{}.fifo", unique("dlq-missing"));
    let ctx = QueueContext::new(src.clone(), Some(Queue::new(src.client().clone(), url_of(&dlq_name))));
    src.send_batch(["perm:a1", "ok:a2", "ok:a3"].map(|b| OutgoingMessage::new(b).group_id("A")))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let calls = Calls::default();
    let p = scripted(calls.clone());

    // the DLQ does not exist: a1 cannot be dead-lettered, so a2 and a3 must not overtake it
    let decisions = p.process_batch(&ctx, receive_exactly(&src, 3).await).await;
    assert!(matches!(&decisions[0].outcome, Outcome::Retry { failure, .. }
        if failure.kind == FailureKind::Permanent && failure.error.contains("dead-letter send failed")));
    for d in &decisions[1..] {
        assert!(matches!(&d.outcome, Outcome::Held { behind, .. } if *behind == decisions[0].message.message_id));
    }
    assert_eq!(ran(&calls), ["perm:a1"], "nothing after a1 ran");
    let report = p.settle(&ctx, &decisions).await;
    assert_eq!((report.deleted, report.retried), (0, 3), "{:?}", report.errors);

    // once the DLQ exists, the group comes back in order: a1 is dead-lettered, then a2, a3 run
    create_queue(
        src.client(),
        &dlq_name,
        &[
            (QueueAttributeName::FifoQueue, "true".into()),
            (QueueAttributeName::ContentBasedDeduplication, "true".into()),
        ],
    )
    .await;
    let again = receive_exactly(&src, 3).await;
    let decisions = p.process_batch(&ctx, again).await;
    assert!(matches!(decisions[0].outcome, Outcome::DeadLetter { .. }));
    let report = p.settle(&ctx, &decisions).await;
    assert_eq!((report.deleted, report.succeeded, report.dead_lettered), (3, 2, 1), "{:?}", report.errors);
    assert_eq!(ran(&calls), ["perm:a1", "perm:a1", "ok:a2", "ok:a3"]);
    let dead = drain(ctx.dlq.as_ref().unwrap(), Duration::from_secs(1)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attribute_str(dl::ERROR_KIND), Some("permanent"));
    assert_eq!(depth(&src).await, (0, 0, 0));
}

#[tokio::test]
async fn fifo_lambda_does_not_run_later_messages_when_the_dead_letter_send_fails() {
    let src = fifo_queue("lambda-dlq-fails").await;
    let arn = src.attributes().await.unwrap().arn.unwrap();
    let missing = Queue::new(src.client().clone(), url_of(&format!("{}.fifo", unique("nodlq"))));
    src.send_batch(["perm:f1", "ok:f2", "ok:f3"].map(|b| OutgoingMessage::new(b).group_id("A")))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let got = receive_exactly(&src, 3).await;
    let calls = Calls::default();
    let adapter = LambdaAdapter::new(scripted(calls.clone()), sqs().await)
        .with_context(QueueContext::new(src.clone(), Some(missing)));
    let (resp, _) = adapter.handle(lambda_event(got.iter().map(|m| lambda_record(m, &arn)).collect())).await.unwrap();
    let ids: Vec<String> = got.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(failed_ids(&resp), ids, "the failure and everything after it");
    assert_eq!(ran(&calls), ["perm:f1"], "f2 and f3 were not run, so they are not run twice");
}

// ---- the last receive the redrive policy allows ----

#[tokio::test]
async fn the_last_allowed_receive_is_dead_lettered_with_its_error() {
    let (src, dlq) = queue_with_dlq("exhausted", 2, false, 30).await;
    src.send(OutgoingMessage::new("retry:x")).await.unwrap();
    let ctx = QueueContext::discover(src.clone()).await.unwrap();
    assert_eq!(ctx.max_receive_count, Some(2));
    let p = scripted(Calls::default());
    for receive in 1..=2 {
        let batch = receive_exactly(&src, 1).await;
        assert_eq!(batch[0].receive_count(), receive);
        let decisions = p.process_batch(&ctx, batch).await;
        let report = p.settle(&ctx, &decisions).await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }
    let dead = dlq.receive(10, Duration::from_secs(3), None).await.unwrap();
    assert_eq!(dead.len(), 1, "moved on its last allowed receive");
    assert_eq!(dead[0].attribute_str(dl::ERROR_KIND), Some("retries-exhausted"));
    assert_eq!(dead[0].attribute_str(dl::ERROR), Some("retryable: downstream 503"));
    assert_eq!(dead[0].attribute_str(dl::RECEIVE_COUNT), Some("2"));
    assert_eq!(depth(&src).await, (0, 0, 0));
}

// ---- a success counts once its delete is confirmed ----

fn counter(
    snapshot: &[(metrics_util::CompositeKey, Option<metrics::Unit>, Option<metrics::SharedString>, DebugValue)],
    name: &str,
) -> u64 {
    snapshot
        .iter()
        .filter(|(k, _, _, _)| k.key().name() == name)
        .map(|(_, _, _, v)| match v {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn a_success_counts_only_once_its_delete_is_confirmed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let q = queue("delete-refused").await;
    q.send_batch(["ok:1", "ok:2"].map(OutgoingMessage::new)).await.unwrap().into_result().unwrap();
    let mut batch = receive_exactly(&q, 2).await;
    batch[1].receipt_handle = "not-a-valid-receipt-handle".into(); // SQS answers 200 with a per-entry failure
    let p = scripted(Calls::default());
    let ctx = QueueContext::new(q.clone(), None);
    let decisions = p.process_batch(&ctx, batch).await;
    assert!(decisions.iter().all(|d| d.outcome.is_success()));
    let report = p.settle(&ctx, &decisions).await;
    assert_eq!((report.deleted, report.succeeded), (1, 1));
    assert_eq!(report.errors.len(), 1);
    assert!(report.errors[0].contains("ReceiptHandleIsInvalid"), "{:?}", report.errors);
    let snap = snapshotter.snapshot().into_vec();
    assert_eq!(counter(&snap, "sqskit_messages_succeeded_total"), 1, "the refused delete is not a success");
    assert_eq!(counter(&snap, "sqskit_delete_failures_total"), 1);
    assert_eq!(counter(&snap, "sqskit_leases_lost_total"), 1);
    assert_eq!(depth(&q).await.1, 1, "the undeleted message is still in flight, not lost");
}

#[tokio::test]
async fn a_refused_visibility_change_is_counted_by_reason() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let q = queue("visibility-refused").await;
    q.send(OutgoingMessage::new("retry:1")).await.unwrap();
    let mut batch = receive_exactly(&q, 1).await;
    batch[0].receipt_handle = "not-a-valid-receipt-handle".into();
    let p = scripted(Calls::default());
    let ctx = QueueContext::new(q.clone(), None);
    let report = p.settle(&ctx, &p.process_batch(&ctx, batch).await).await;
    assert_eq!(report.retried, 0);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let snap = snapshotter.snapshot().into_vec();
    let by_reason: Vec<String> = snap
        .iter()
        .filter(|(k, _, _, _)| k.key().name() == "sqskit_visibility_failures_total")
        .flat_map(|(k, _, _, _)| k.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect::<Vec<_>>())
        .collect();
    assert_eq!(by_reason, ["reason=retry"]);
}

// ---- fair queues: a group id on a standard queue is a tenant, not a FIFO group ----

#[tokio::test]
async fn lambda_on_a_fair_queue_lists_only_the_failed_message() {
    let (src, _dlq) = queue_with_dlq("fair-lambda", 5, false, 60).await;
    let arn = src.attributes().await.unwrap().arn.unwrap();
    src.send_batch(["ok:1", "retry:2", "ok:3", "ok:4"].map(|b| OutgoingMessage::new(b).group_id("tenant-a")))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let mut got = receive_exactly(&src, 4).await;
    got.sort_by_key(|m| m.body.rsplit(':').next().map(str::to_string)); // ok:1, retry:2, ok:3, ok:4
    assert!(got.iter().all(|m| m.group_id() == Some("tenant-a")), "the tenant id comes back on a standard queue");
    let calls = Calls::default();
    let adapter = LambdaAdapter::new(scripted(calls.clone()), sqs().await);
    let (resp, _) = adapter.handle(lambda_event(got.iter().map(|m| lambda_record(m, &arn)).collect())).await.unwrap();
    let retry = got.iter().find(|m| m.body == "retry:2").unwrap();
    assert_eq!(failed_ids(&resp), std::slice::from_ref(&retry.message_id));
    assert_eq!(ran(&calls).len(), 4, "every message ran, none held");
    // and the failed one got a backoff visibility (standard-queue behaviour), not the queue's 60 s
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let back = src.receive(10, Duration::from_secs(5), None).await.unwrap();
    assert_eq!(back.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["retry:2"]);
}

// ---- FIFO producer: nothing of a group is sent after one of its entries failed ----

#[tokio::test]
async fn fifo_send_batch_sends_nothing_of_a_group_after_a_failed_entry() {
    let q = fifo_queue("fifo-send").await;
    // chunk 1 (10 entries): a0, a1 (invalid characters: SQS fails that entry), a2, b0, a3..a8
    // chunk 2: a9, b1
    let mut msgs = vec![
        OutgoingMessage::new("a0").group_id("A"),
        OutgoingMessage::new("a1 \u{1}").group_id("A"),
        OutgoingMessage::new("a2").group_id("A"),
        OutgoingMessage::new("b0").group_id("B"),
    ];
    msgs.extend((3..=8).map(|i| OutgoingMessage::new(format!("a{i}")).group_id("A")));
    msgs.push(OutgoingMessage::new("a9").group_id("A"));
    msgs.push(OutgoingMessage::new("b1").group_id("B"));
    let report = q.send_batch(msgs).await.unwrap();
    let failed: Vec<(usize, &str)> = report.failed.iter().map(|f| (f.index, f.code.as_str())).collect();
    assert_eq!(failed, [(1, "InvalidMessageContents"), (10, EARLIER_ENTRY_FAILED)], "{:?}", report.failed);
    assert_eq!(report.calls, 2, "a1 is not re-sent after a2 of its group went out");
    let on_queue: Vec<String> = drain(&q, Duration::from_secs(1)).await.into_iter().map(|m| m.body).collect();
    assert!(!on_queue.contains(&"a9".to_string()), "{on_queue:?}");
    assert!(on_queue.contains(&"b1".to_string()), "other groups go on: {on_queue:?}");
}

// ---- decoding errors do not leak bodies ----

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Customer {
    age: u32,
}

#[tokio::test]
async fn a_decoding_error_in_the_dlq_does_not_quote_the_body() {
    let (src, dlq) = queue_with_dlq("decode-pii", 5, false, 30).await;
    src.send(OutgoingMessage::new(r#"{"age": "Jane Doe, 12 Secret Street"}"#)).await.unwrap();
    let ctx = QueueContext::discover(src.clone()).await.unwrap();
    let p = Processor::json(|_m: Message<Customer>| async { Ok(()) });
    let decisions = p.process_batch(&ctx, receive_exactly(&src, 1).await).await;
    p.settle(&ctx, &decisions).await;
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    assert_eq!(dead.len(), 1);
    let error = dead[0].attribute_str(dl::ERROR).unwrap_or_default();
    assert!(!error.contains("Secret") && !error.contains("Jane"), "{error}");
    assert!(error.contains("data error at line 1 column"), "{error}");
}

// ---- Lambda: a DLQ that could not be resolved is looked up again next time ----

#[tokio::test]
async fn lambda_looks_the_dlq_up_again_after_it_could_not_be_resolved() {
    let client = sqs().await;
    let dlq_name = unique("late-dlq");
    let arn_of = |name: &str| format!("arn:aws:sqs:us-east-1:000000000000:{name}");
    let policy = json!({"deadLetterTargetArn": arn_of(&dlq_name), "maxReceiveCount": 5}).to_string();
    let src = create_queue(&client, &unique("late-dlq-src"), &[(QueueAttributeName::RedrivePolicy, policy)]).await;
    let arn = src.attributes().await.unwrap().arn.unwrap();
    src.send_batch(["perm:1", "perm:2"].map(OutgoingMessage::new)).await.unwrap().into_result().unwrap();
    let got = receive_exactly(&src, 2).await;
    let adapter = LambdaAdapter::new(scripted(Calls::default()), client.clone());
    // the DLQ does not exist yet: the permanent failure is reported as a failure (nothing lost)
    let (resp, _) = adapter.handle(lambda_event(vec![lambda_record(&got[0], &arn)])).await.unwrap();
    assert_eq!(failed_ids(&resp), [got[0].message_id.clone()]);
    // the DLQ appears; the next invocation finds it instead of remembering "no DLQ"
    let dlq = create_queue(&client, &dlq_name, &[]).await;
    let (resp, summary) = adapter.handle(lambda_event(vec![lambda_record(&got[1], &arn)])).await.unwrap();
    assert!(failed_ids(&resp).is_empty());
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(drain(&dlq, Duration::from_secs(1)).await.len(), 1);
}
