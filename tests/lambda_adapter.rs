//! The Lambda adapter: real-shaped `SqsEvent` JSON in, exact `SqsBatchResponse` JSON out.
use sqskit_test_support as support;

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::{json, Value};
use sqskit::lambda::LambdaAdapter;
use sqskit::processor::dead_letter_attributes as dl;
use sqskit::{HandlerError, Message, OutgoingMessage, Processor, QueueContext, ReceivedMessage};
use support::*;

/// A record exactly as Lambda's SQS event source sends it.
fn record(id: &str, body: &str, group: Option<&str>, arn: &str, handle: &str) -> Value {
    let mut attributes = json!({
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1545082649183",
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": "1545082649185"
    });
    if let Some(g) = group {
        attributes["MessageGroupId"] = json!(g);
        attributes["SequenceNumber"] = json!("18849496460467696128");
        attributes["MessageDeduplicationId"] = json!(id);
    }
    json!({
        "messageId": id,
        "receiptHandle": handle,
        "body": body,
        "attributes": attributes,
        "messageAttributes": {
            "tenant": {"stringValue": "acme", "stringListValues": [], "binaryListValues": [], "dataType": "String"}
        },
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1"
    })
}

fn event(records: Vec<Value>) -> SqsEvent {
    serde_json::from_value(json!({ "Records": records })).expect("event parses")
}

fn scripted() -> Processor<String> {
    Processor::raw(|m: Message<String>| async move {
        match m.body.as_str() {
            "ok" => Ok(()),
            "retry" => Err(HandlerError::retryable("503 from downstream")),
            "perm" => Err(HandlerError::permanent("invalid order")),
            "panic" => panic!("handler bug"),
            _ => Ok(()),
        }
    })
}

async fn respond(adapter: &LambdaAdapter<String>, ev: SqsEvent) -> Value {
    let (resp, _) = adapter.handle(ev).await.expect("handled");
    serde_json::to_value(resp).unwrap()
}

const ARN: &str = "arn:aws:sqs:us-east-1:000000000000:no-such-queue-for-adapter-tests";

fn offline_adapter() -> LambdaAdapter<String> {
    // no queue known: nothing is settled on SQS, only the response matters
    let conf = aws_sdk_sqs::Config::builder().behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest()).build();
    LambdaAdapter::new(scripted(), aws_sdk_sqs::Client::from_conf(conf)).with_context(QueueContext::default())
}

#[tokio::test]
async fn empty_batch_returns_empty_failures() {
    assert_eq!(respond(&offline_adapter(), event(vec![])).await, json!({"batchItemFailures": []}));
}

#[tokio::test]
async fn all_success_returns_empty_failures() {
    let ev = event(vec![record("m1", "ok", None, ARN, "h1"), record("m2", "ok", None, ARN, "h2")]);
    assert_eq!(respond(&offline_adapter(), ev).await, json!({"batchItemFailures": []}));
}

#[tokio::test]
async fn standard_queue_lists_each_failure_by_message_id() {
    let ev = event(vec![
        record("m1", "ok", None, ARN, "h1"),
        record("m2", "retry", None, ARN, "h2"),
        record("m3", "ok", None, ARN, "h3"),
        record("m4", "panic", None, ARN, "h4"),
        record("m5", "perm", None, ARN, "h5"),
    ]);
    // no DLQ known, so the permanent failure is reported too (nothing lost)
    assert_eq!(
        respond(&offline_adapter(), ev).await,
        json!({"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m4"}, {"itemIdentifier": "m5"}]})
    );
}

#[tokio::test]
async fn fifo_reports_the_first_failure_and_everything_after_it() {
    let arn = "arn:aws:sqs:us-east-1:000000000000:orders.fifo";
    let ev = event(vec![
        record("f1", "ok", Some("A"), arn, "h1"),
        record("f2", "ok", Some("B"), arn, "h2"),
        record("f3", "retry", Some("A"), arn, "h3"),
        record("f4", "ok", Some("B"), arn, "h4"),
        record("f5", "ok", Some("A"), arn, "h5"),
    ]);
    assert_eq!(
        respond(&offline_adapter(), ev).await,
        json!({"batchItemFailures": [{"itemIdentifier": "f3"}, {"itemIdentifier": "f4"}, {"itemIdentifier": "f5"}]})
    );
}

#[tokio::test]
async fn a_record_without_message_id_fails_the_invocation() {
    let mut r = record("x", "ok", None, ARN, "h");
    r.as_object_mut().unwrap().remove("messageId");
    let err = offline_adapter().handle(event(vec![r])).await.unwrap_err();
    assert!(err.to_string().contains("messageId"), "{err}");
}

#[tokio::test]
async fn undecodable_typed_body_is_reported_as_that_message_failure() {
    #[derive(serde::Deserialize)]
    struct Order {
        #[allow(dead_code)]
        id: u64,
    }
    let conf = aws_sdk_sqs::Config::builder().behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest()).build();
    let adapter = LambdaAdapter::new(
        Processor::json(|_m: Message<Order>| async { Ok(()) }),
        aws_sdk_sqs::Client::from_conf(conf),
    )
    .with_context(QueueContext::default());
    let ev = event(vec![record("good", r#"{"id":1}"#, None, ARN, "h1"), record("bad", "<xml/>", None, ARN, "h2")]);
    let (resp, summary) = adapter.handle(ev).await.unwrap();
    assert_eq!(serde_json::to_value(resp).unwrap(), json!({"batchItemFailures": [{"itemIdentifier": "bad"}]}));
    assert_eq!(summary.failed.get("undecodable"), Some(&1));
}

/// Against LocalStack: the adapter discovers the queue and DLQ from the event source ARN,
/// dead-letters the permanent failure itself (and reports it as success), and backs off the retry.
#[tokio::test]
async fn permanent_failure_is_dead_lettered_by_the_function_and_reported_as_success() {
    let (src, dlq) = queue_with_dlq("lambda", 5, false, 60).await;
    let arn = src.attributes().await.unwrap().arn.unwrap();
    src.send_batch(["ok", "retry", "perm"].map(OutgoingMessage::new)).await.unwrap().into_result().unwrap();
    let mut got: Vec<ReceivedMessage> = Vec::new();
    while got.len() < 3 {
        got.extend(src.receive(10, Duration::from_secs(2), None).await.unwrap());
    }
    let records: Vec<Value> =
        got.iter().map(|m| record(&m.message_id, &m.body, None, &arn, &m.receipt_handle)).collect();
    let id_of = |body: &str| got.iter().find(|m| m.body == body).unwrap().message_id.clone();
    let adapter = LambdaAdapter::new(scripted(), sqs().await);
    let (resp, summary) = adapter.handle(event(records)).await.unwrap();
    assert_eq!(serde_json::to_value(resp).unwrap(), json!({"batchItemFailures": [{"itemIdentifier": id_of("retry")}]}));
    assert_eq!(summary.dead_lettered, 1);
    let dead = dlq.receive(10, Duration::from_secs(3), None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "perm");
    assert_eq!(dead[0].attribute_str(dl::ERROR_KIND), Some("permanent"));
    assert_eq!(dead[0].attribute_str(dl::SOURCE_QUEUE), Some(src.name()));
}

/// Trace context through the adapter: a record's `traceparent` attribute, or its
/// `AWSTraceHeader` system attribute (as Lambda puts it in `attributes`), is the trace the
/// handler sees, and what it sends from the handler continues it.
#[tokio::test]
async fn records_carry_their_trace_into_the_handler_and_on_to_what_it_sends() {
    use sqskit::trace::{TraceContext, AWS_TRACE_HEADER, TRACEPARENT};
    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const XRAY: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let src = queue("lambda-trace").await;
    let out = queue("lambda-trace-out").await;
    let arn = src.attributes().await.unwrap().arn.unwrap();
    src.send(OutgoingMessage::new("w3c").attribute(TRACEPARENT, sqskit::AttributeValue::string(TP))).await.unwrap();
    src.send(OutgoingMessage::new("xray").trace_header(XRAY)).await.unwrap();
    let got = receive_exactly(&src, 2).await;
    let mut records: Vec<Value> = got.iter().map(|m| lambda_record(m, &arn)).collect();
    // and one built by hand, as Lambda's event source shapes it
    let mut by_hand = record("hand", "hand", None, &arn, "h-hand");
    by_hand["attributes"][AWS_TRACE_HEADER] = json!(XRAY);
    records.push(by_hand);

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s2, out2) = (seen.clone(), out.clone());
    let p = Processor::raw(move |m: Message<String>| {
        let (seen, out) = (s2.clone(), out2.clone());
        async move {
            let t = m.trace();
            seen.lock().unwrap().push((m.body.clone(), t.clone()));
            out.send(OutgoingMessage::new(format!("from {}", m.body))).await?;
            Ok::<_, HandlerError>(())
        }
    });
    let adapter = LambdaAdapter::new(p, sqs().await).with_context(QueueContext::default());
    let (resp, _) = adapter.handle(event(records)).await.unwrap();
    assert_eq!(serde_json::to_value(resp).unwrap(), json!({"batchItemFailures": []}));
    let seen = seen.lock().unwrap().clone();
    let trace_of = |body: &str| seen.iter().find(|(b, _)| b == body).and_then(|(_, t)| t.clone()).unwrap();
    assert_eq!(trace_of("w3c").trace_id(), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(trace_of("xray").trace_id(), "5759e988bd862e3fe1be46a994272793");
    assert_eq!(trace_of("hand").trace_id(), "5759e988bd862e3fe1be46a994272793");
    let sent = drain(&out, Duration::from_secs(1)).await;
    assert_eq!(sent.len(), 3);
    for m in &sent {
        let from = m.body.trim_start_matches("from ");
        let tp = TraceContext::parse_traceparent(m.attribute_str(TRACEPARENT).expect("traceparent sent on")).unwrap();
        assert_eq!(tp.trace_id(), trace_of(from).trace_id(), "{}", m.body);
        assert_eq!(tp.span_id(), trace_of(from).span_id(), "{}: the handler's span", m.body);
        assert_ne!(tp.span_id(), "b7ad6b7169203331");
        assert_ne!(tp.span_id(), "53995c3f42cd8ad8");
    }
}

// ---------------------------------------------------------------- the invocation deadline

/// Counts its drops: held by a handler's future, it shows the future was dropped (cancelled).
struct DropCount(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// "ok" succeeds at once, "hang" never returns (until its future is dropped, counted in
/// `dropped`); every start is counted in `started`.
fn hanging(
    started: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Processor<String> {
    Processor::raw(move |m: Message<String>| {
        let (started, guard) = (started.clone(), DropCount(dropped.clone()));
        async move {
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if m.body == "hang" {
                std::future::pending::<()>().await;
            }
            drop(guard);
            Ok(())
        }
    })
}

fn offline(p: Processor<String>) -> LambdaAdapter<String> {
    let conf = aws_sdk_sqs::Config::builder().behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest()).build();
    LambdaAdapter::new(p, aws_sdk_sqs::Client::from_conf(conf)).with_context(QueueContext::default())
}

/// `handle_with_deadline` with `deadline` from now, given 30 s to answer at all (the adapter
/// before the fix waited for running handlers: a handler that never returns kept it forever).
/// Returns the response as JSON, the summary, and whether it answered before the deadline.
async fn handle_within(
    adapter: &LambdaAdapter<String>,
    ev: SqsEvent,
    deadline: Duration,
) -> (Value, sqskit::lambda::BatchSummary, bool) {
    let deadline = std::time::SystemTime::now() + deadline;
    let (resp, summary) =
        tokio::time::timeout(Duration::from_secs(30), adapter.handle_with_deadline(ev, Some(deadline)))
            .await
            .expect("an answer within 30 s")
            .expect("handled");
    let in_time = std::time::SystemTime::now() < deadline;
    (serde_json::to_value(resp).unwrap(), summary, in_time)
}

fn counters() -> [std::sync::Arc<std::sync::atomic::AtomicUsize>; 2] {
    [Default::default(), Default::default()]
}

fn count(c: &std::sync::atomic::AtomicUsize) -> usize {
    c.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn handlers_still_running_at_the_margin_are_dropped_and_listed_before_the_deadline() {
    let [started, dropped] = counters();
    let adapter = offline(hanging(started.clone(), dropped.clone()));
    let bodies = ["ok", "hang", "ok", "hang", "ok"];
    let ev = event(bodies.iter().enumerate().map(|(i, b)| record(&format!("m{i}"), b, None, ARN, "h")).collect());
    let (resp, summary, in_time) = handle_within(&adapter, ev, Duration::from_secs(4)).await;
    assert!(in_time, "answered after the deadline");
    assert_eq!(resp, json!({"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}));
    assert_eq!((summary.succeeded, summary.failed.get("timeout").copied()), (3, Some(2)), "{summary:?}");
    assert_eq!((count(&started), count(&dropped)), (5, 5), "every handler ran; the hanging ones were dropped");
}

#[tokio::test]
async fn fifo_lists_the_message_running_at_the_margin_and_every_later_one() {
    let [started, dropped] = counters();
    let adapter = offline(hanging(started.clone(), dropped.clone()));
    let arn = "arn:aws:sqs:us-east-1:000000000000:cut.fifo";
    let ev = event(
        ["ok", "hang", "ok", "ok"]
            .iter()
            .enumerate()
            .map(|(i, b)| record(&format!("f{i}"), b, Some("A"), arn, "h"))
            .collect(),
    );
    let (resp, summary, in_time) = handle_within(&adapter, ev, Duration::from_secs(4)).await;
    assert!(in_time, "answered after the deadline");
    assert_eq!(
        resp,
        json!({"batchItemFailures": [{"itemIdentifier": "f1"}, {"itemIdentifier": "f2"}, {"itemIdentifier": "f3"}]})
    );
    assert_eq!(count(&started), 2, "nothing after the cut message started");
    assert_eq!(summary.failed.get("timeout"), Some(&1), "{summary:?}");
}

#[tokio::test]
async fn a_batch_handler_still_running_at_the_margin_is_dropped_and_its_batch_listed() {
    let [dropped] = [std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0))];
    let d = dropped.clone();
    let p = Processor::raw_batch(move |batch: Vec<Message<String>>| {
        let guard = DropCount(d.clone());
        async move {
            std::future::pending::<()>().await;
            drop(guard);
            batch.iter().map(|_| Ok(())).collect()
        }
    });
    let ev = event(vec![record("b1", "x", None, ARN, "h1"), record("b2", "y", None, ARN, "h2")]);
    let (resp, _, in_time) = handle_within(&offline(p), ev, Duration::from_secs(4)).await;
    assert!(in_time, "answered after the deadline");
    assert_eq!(resp, json!({"batchItemFailures": [{"itemIdentifier": "b1"}, {"itemIdentifier": "b2"}]}));
    assert_eq!(count(&dropped), 1);
}

/// The claim of a message cut at the deadline is released: its redelivery runs at once, instead
/// of waiting behind an `INPROGRESS` record.
#[tokio::test]
async fn the_claim_of_a_message_cut_at_the_deadline_is_released_for_its_redelivery() {
    use sqskit::idempotency::{Idempotency, MemoryStore};
    let store = MemoryStore::new();
    let hang = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (h, r) = (hang.clone(), runs.clone());
    let p = Processor::raw(move |_m: Message<String>| {
        let (hang, runs) = (h.clone(), r.clone());
        async move {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if hang.load(std::sync::atomic::Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    })
    .with_idempotency(Idempotency::new(store.clone()));
    let adapter = offline(p);
    let (resp, summary, in_time) =
        handle_within(&adapter, event(vec![record("m1", "order-1", None, ARN, "h1")]), Duration::from_secs(4)).await;
    assert!(in_time);
    assert_eq!(resp, json!({"batchItemFailures": [{"itemIdentifier": "m1"}]}));
    assert_eq!(summary.idempotency.claimed, 1);
    let key = format!("sqskit#{}", sqskit::idempotency::hash_value(&json!("order-1")));
    assert_eq!(store.get(&key), None, "the claim was released");
    // the redelivery (another receipt of the same message) is claimed and runs
    hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let (resp, summary) = adapter.handle(event(vec![record("m1", "order-1", None, ARN, "h1b")])).await.unwrap();
    assert_eq!(serde_json::to_value(resp).unwrap(), json!({"batchItemFailures": []}));
    assert_eq!((summary.succeeded, summary.idempotency.in_progress), (1, 0));
    assert_eq!(count(&runs), 2);
}

/// An idempotency store whose claims never return: the message is stuck before its handler,
/// where cancelling handlers cannot reach it.
struct StuckStore;

impl sqskit::idempotency::IdempotencyStore for StuckStore {
    fn kind(&self) -> &'static str {
        "stuck"
    }
    fn claim<'a>(
        &'a self,
        _: &'a sqskit::idempotency::Record,
        _: std::time::SystemTime,
    ) -> sqskit::idempotency::StoreFuture<'a, sqskit::idempotency::Claim> {
        Box::pin(std::future::pending())
    }
    fn complete<'a>(&'a self, _: &'a sqskit::idempotency::Record) -> sqskit::idempotency::StoreFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn delete<'a>(&'a self, _: &'a str) -> sqskit::idempotency::StoreFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn extend<'a>(&'a self, _: &'a str, _: std::time::SystemTime) -> sqskit::idempotency::StoreFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The cut ends a message's whole attempt (its claim included), not only its handler: a message
/// stuck in a store call is cancelled as a timeout at the margin and listed.
#[tokio::test]
async fn messages_stuck_outside_their_handler_are_cut_and_listed_before_the_deadline() {
    let [started, dropped] = counters();
    let p = hanging(started.clone(), dropped).with_idempotency(sqskit::idempotency::Idempotency::new(StuckStore));
    let ev = event(vec![record("s1", "ok", None, ARN, "h1"), record("s2", "ok", None, ARN, "h2")]);
    let (resp, summary, in_time) = handle_within(&offline(p), ev, Duration::from_secs(4)).await;
    assert!(in_time, "answered after the deadline");
    assert_eq!(resp, json!({"batchItemFailures": [{"itemIdentifier": "s1"}, {"itemIdentifier": "s2"}]}));
    assert_eq!(summary.failed.get("timeout"), Some(&2), "{summary:?}");
    assert_eq!(count(&started), 0);
}

#[tokio::test]
async fn a_margin_longer_than_the_invocation_starts_nothing_and_answers_at_once() {
    let [started, dropped] = counters();
    let adapter = offline(hanging(started.clone(), dropped)).with_deadline_margin(Duration::from_secs(u64::MAX));
    let ev = event(vec![record("x1", "ok", None, ARN, "h1")]);
    let (resp, summary, in_time) = handle_within(&adapter, ev, Duration::from_secs(4)).await;
    assert!(in_time);
    assert_eq!(resp, json!({"batchItemFailures": [{"itemIdentifier": "x1"}]}));
    assert_eq!((count(&started), summary.failed.get("released").copied()), (0, Some(1)));
}

// ---------------------------------------------------------------- concurrent invocations

/// Two invocations at once through one adapter (Lambda Managed Instances): each keeps its own
/// deadline (one is cut, the other's slow handler runs on across that cut), its own failures and
/// its own idempotency counts.
#[tokio::test]
async fn two_invocations_at_once_keep_their_own_deadlines_failures_and_counts() {
    use sqskit::idempotency::{Idempotency, MemoryStore};
    // "meet": waits until the other invocation's "meet" started too (proof they overlap)
    let meet = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let p = Processor::raw(move |m: Message<String>| {
        let meet = meet.clone();
        async move {
            match m.body.split(':').next() {
                Some("meet") => {
                    tokio::time::timeout(Duration::from_secs(20), meet.wait())
                        .await
                        .map_err(|_| HandlerError::retryable("the other invocation never started"))?;
                }
                Some("hang") => std::future::pending::<()>().await,
                Some("slow") => tokio::time::sleep(Duration::from_secs(6)).await,
                Some("fail") => return Err(HandlerError::retryable("503")),
                _ => {}
            }
            Ok(())
        }
    })
    .with_idempotency(Idempotency::new(MemoryStore::new()));
    let adapter = std::sync::Arc::new(offline(p));
    let ev =
        |records: &[(&str, &str)]| event(records.iter().map(|(id, body)| record(id, body, None, ARN, id)).collect());
    let a = ev(&[("a1", "meet:a"), ("a2", "fail:a"), ("a3", "slow:a"), ("a4", "ok:a")]);
    let b = ev(&[("b1", "meet:b"), ("b2", "hang:b")]);
    let (a_deadline, b_deadline) = (Duration::from_secs(60), Duration::from_secs(4));
    let ((a_resp, a_sum, a_in_time), (b_resp, b_sum, b_in_time)) =
        tokio::join!(handle_within(&adapter, a, a_deadline), handle_within(&adapter, b, b_deadline));
    assert!(a_in_time && b_in_time);
    assert_eq!(
        a_resp,
        json!({"batchItemFailures": [{"itemIdentifier": "a2"}]}),
        "only its own failure; a3 ran on past the other's cut"
    );
    assert_eq!(b_resp, json!({"batchItemFailures": [{"itemIdentifier": "b2"}]}), "its own deadline cut b2");
    assert_eq!((a_sum.succeeded, a_sum.failed.get("retryable").copied()), (3, Some(1)), "{a_sum:?}");
    assert_eq!((b_sum.succeeded, b_sum.failed.get("timeout").copied()), (1, Some(1)), "{b_sum:?}");
    assert_eq!((a_sum.idempotency.claimed, b_sum.idempotency.claimed), (4, 2), "each counts its own claims");
    assert!(a_sum.duration_ms >= 6_000 && b_sum.duration_ms < 4_000, "{} / {}", a_sum.duration_ms, b_sum.duration_ms);
}
