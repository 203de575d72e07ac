//! The processor on the Lambda path: one 10-message `SqsEvent` through `LambdaAdapter` with a
//! no-op handler (no SQS calls: no queue context), µs per batch.

use aws_lambda_events::event::sqs::SqsEvent;
use sqskit::lambda::LambdaAdapter;
use sqskit::{HandlerError, Message, Processor, QueueContext};

fn main() {
    divan::main();
}

fn event() -> SqsEvent {
    let records: Vec<serde_json::Value> = (0..10)
        .map(|i| {
            serde_json::json!({
                "messageId": format!("059f36b4-87a3-44ab-83d2-66170000000{i}"),
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
                "body": format!("{{\"order_id\":{i},\"total_cents\":1999,\"currency\":\"EUR\",\"customer\":\"c-{i}\"}}"),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183", "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185"},
                "messageAttributes": {"event_type": {"stringValue": "order.created", "stringListValues": [], "binaryListValues": [], "dataType": "String"}},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:orders",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("event")
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Order {
    order_id: u64,
    total_cents: i64,
    currency: String,
    customer: String,
}

#[divan::bench]
fn ten_message_batch_typed_noop(bencher: divan::Bencher) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let conf = aws_sdk_sqs::Config::builder().behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest()).build();
    let adapter = LambdaAdapter::new(
        Processor::json(|_m: Message<Order>| async { Ok::<(), HandlerError>(()) }),
        aws_sdk_sqs::Client::from_conf(conf),
    )
    .with_context(QueueContext::default());
    let ev = event();
    bencher.bench_local(|| {
        let (resp, _) = rt.block_on(adapter.handle(divan::black_box(ev.clone()))).expect("handled");
        assert!(resp.batch_item_failures.is_empty());
    });
}
