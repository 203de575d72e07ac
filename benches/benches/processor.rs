//! The processor on the Lambda path: one 10-message `SqsEvent` through `LambdaAdapter` with a
//! no-op handler (no SQS calls: no queue context), µs per batch; and the cost of schema
//! validation at the edge: ten 1 KB orders (20 properties) with and without
//! `Processor::with_schema`, and one `Schema::validate` of such an order.

use aws_lambda_events::event::sqs::SqsEvent;
use sqskit::lambda::LambdaAdapter;
use sqskit::{HandlerError, Message, Processor, QueueContext};

fn main() {
    divan::main();
}

fn event() -> SqsEvent {
    event_of(|i| format!("{{\"order_id\":{i},\"total_cents\":1999,\"currency\":\"EUR\",\"customer\":\"c-{i}\"}}"))
}

fn event_of(body: impl Fn(usize) -> String) -> SqsEvent {
    let records: Vec<serde_json::Value> = (0..10)
        .map(|i| {
            serde_json::json!({
                "messageId": format!("059f36b4-87a3-44ab-83d2-66170000000{i}"),
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
                "body": body(i),
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

/// A 1 KB order of 20 top-level properties (addresses, lines, tags).
fn order_1kb(i: usize) -> serde_json::Value {
    let address = |kind: &str| serde_json::json!({"name": format!("{kind} Person {i}"), "street": "1234 Long Example Street", "city": "Springfield", "zip": "12345-6789", "country": "DE"});
    let lines: Vec<serde_json::Value> = (0..3)
        .map(|l| serde_json::json!({"sku": format!("SKU-{i:04}-{l:02}"), "name": "A product with a fairly long name", "qty": l + 1, "price_cents": 1999}))
        .collect();
    serde_json::json!({
        "id": i, "customer_id": format!("cust-{i:06}"), "email": format!("person{i}@example.com"),
        "currency": "EUR", "total_cents": 5997, "tax_cents": 957, "shipping_cents": 495,
        "status": "placed", "created_at": "2026-12-06T10:42:21Z", "updated_at": "2026-12-06T10:42:21Z",
        "channel": "web", "coupon": "WINTER-2026", "notes": "Leave the parcel with the neighbour if nobody is at home.",
        "shipping_address": address("Shipping"), "billing_address": address("Billing"), "lines": lines,
        "tags": ["gift", "express", "newsletter"], "gift": true, "priority": 2, "locale": "de-DE"
    })
}

/// Its schema: every property typed and constrained, addresses and lines checked deep.
fn order_schema() -> sqskit::schema::Schema {
    let address = serde_json::json!({"type": "object", "required": ["name", "street", "city", "zip", "country"],
        "properties": {"name": {"type": "string", "maxLength": 100}, "street": {"type": "string", "maxLength": 200},
                       "city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}(-[0-9]{4})?$"},
                       "country": {"type": "string", "minLength": 2, "maxLength": 2}}});
    sqskit::schema::Schema::new(&serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["id", "customer_id", "email", "currency", "total_cents", "status", "lines"],
        "additionalProperties": false,
        "properties": {
            "id": {"type": "integer", "minimum": 0}, "customer_id": {"type": "string", "pattern": "^cust-[0-9]+$"},
            "email": {"type": "string", "maxLength": 254}, "currency": {"enum": ["EUR", "USD", "GBP"]},
            "total_cents": {"type": "integer", "minimum": 0}, "tax_cents": {"type": "integer", "minimum": 0},
            "shipping_cents": {"type": "integer", "minimum": 0}, "status": {"enum": ["placed", "paid", "shipped"]},
            "created_at": {"type": "string"}, "updated_at": {"type": "string"}, "channel": {"type": "string"},
            "coupon": {"type": ["string", "null"]}, "notes": {"type": "string", "maxLength": 1000},
            "shipping_address": address, "billing_address": address,
            "lines": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["sku", "qty", "price_cents"],
                "properties": {"sku": {"type": "string"}, "name": {"type": "string"}, "qty": {"type": "integer", "minimum": 1},
                               "price_cents": {"type": "integer", "minimum": 0}}}},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}, "gift": {"type": "boolean"},
            "priority": {"type": "integer", "minimum": 0, "maximum": 9}, "locale": {"type": "string"}
        }
    }))
    .expect("schema")
}

fn adapter_1kb(schema: bool) -> (tokio::runtime::Runtime, LambdaAdapter<serde_json::Value>, SqsEvent) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let conf = aws_sdk_sqs::Config::builder().behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest()).build();
    let processor = Processor::json(|_m: Message<serde_json::Value>| async { Ok::<(), HandlerError>(()) });
    let processor = if schema { processor.with_schema(order_schema()) } else { processor };
    let adapter =
        LambdaAdapter::new(processor, aws_sdk_sqs::Client::from_conf(conf)).with_context(QueueContext::default());
    let ev = event_of(|i| order_1kb(i).to_string());
    assert!(ev.records.iter().all(|r| r.body.as_ref().is_some_and(|b| (950..1300).contains(&b.len()))), "1 KB bodies");
    (rt, adapter, ev)
}

/// Ten 1 KB orders, no schema: the baseline for the next.
#[divan::bench]
fn ten_1kb_orders_no_schema(bencher: divan::Bencher) {
    let (rt, adapter, ev) = adapter_1kb(false);
    bencher.bench_local(|| {
        let (resp, _) = rt.block_on(adapter.handle(divan::black_box(ev.clone()))).expect("handled");
        assert!(resp.batch_item_failures.is_empty());
    });
}

/// Ten 1 KB orders validated against a 20-property schema before the handler.
#[divan::bench]
fn ten_1kb_orders_with_schema(bencher: divan::Bencher) {
    let (rt, adapter, ev) = adapter_1kb(true);
    bencher.bench_local(|| {
        let (resp, _) = rt.block_on(adapter.handle(divan::black_box(ev.clone()))).expect("handled");
        assert!(resp.batch_item_failures.is_empty(), "every order is valid");
    });
}

/// One `Schema::validate` of a 1 KB order (already parsed).
#[divan::bench]
fn schema_validate_1kb_order(bencher: divan::Bencher) {
    let schema = order_schema();
    let order = order_1kb(7);
    bencher.bench_local(|| assert!(schema.validate(divan::black_box(&order)).is_ok()));
}
