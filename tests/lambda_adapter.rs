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
