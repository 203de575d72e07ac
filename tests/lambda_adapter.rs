//! The Lambda adapter: real-shaped `SqsEvent` JSON in, exact `SqsBatchResponse` JSON out.
mod support;

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
