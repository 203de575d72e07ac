//! Messages from the rest of AWS, with real producers on LocalStack: an SNS topic without raw
//! delivery, S3 object notifications (and their `s3:TestEvent`), EventBridge rules (`PutEvents`
//! and a `rate(1 minute)` schedule), CloudEvents sent by another producer; envelopes opened,
//! messages routed by type, payloads validated against a schema, and what does not fit
//! dead-lettered with an error that names the field, never the body.
//!
//! EventBridge needs `events` in LocalStack's services (`scripts/localstack` starts it so); the
//! EventBridge tests (queues included: a rule targets a queue of its own LocalStack) use
//! `SQSKIT_TEST_EVENTS_ENDPOINT` when set, else the usual endpoint.
use sqskit_test_support as support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use serde::Deserialize;
use serde_json::{json, Value};
use sqskit::envelope::{s3_key, EnvelopeKind, S3EventRecord};
use sqskit::lambda::LambdaAdapter;
use sqskit::poller::{PollSummary, Poller, PollerConfig, QueueSpec};
use sqskit::processor::dead_letter_attributes as dl;
use sqskit::router::{RouteKey, Router};
use sqskit::schema::Schema;
use sqskit::{HandlerError, Message, OutgoingMessage, Processor, Queue, QueueContext};
use support::*;

/// Run `processor` over `queue` until it is empty (nothing visible, in flight or delayed).
async fn drain_with<T: Send + 'static>(processor: Processor<T>, queue: &Queue) -> PollSummary {
    let config = PollerConfig::default()
        .with_until_empty(true)
        .with_wait_time(Duration::from_secs(1))
        .with_depth_interval(Duration::ZERO);
    let poller = Poller::new(processor, [QueueSpec::new(queue.clone())], config).await.expect("poller");
    tokio::time::timeout(Duration::from_secs(90), poller.run(std::future::pending()))
        .await
        .expect("poller drained the queue")
}

#[derive(Debug, Deserialize, PartialEq)]
struct Order {
    id: u64,
    sku: String,
}

type Seen = Arc<Mutex<Vec<(u64, String, Option<String>, Option<String>)>>>;

/// A handler of SNS-wrapped orders that records (id, topic, subject, `kind` attribute).
fn sns_orders(seen: Seen) -> Processor<Order> {
    Processor::json(move |m: Message<Order>| {
        let sns = m.envelope().and_then(|e| e.sns()).cloned();
        let kind = m.envelope().and_then(|e| e.attribute("kind")).map(str::to_string);
        seen.lock().unwrap().push((
            m.body.id,
            sns.as_ref().map(|s| s.topic_arn.clone()).unwrap_or_default(),
            sns.and_then(|s| s.subject),
            kind,
        ));
        async { Ok::<_, HandlerError>(()) }
    })
    .with_envelope(EnvelopeKind::Sns)
}

#[tokio::test]
async fn sns_notifications_reach_the_poller_and_the_lambda_adapter_as_the_typed_payload_with_their_topic() {
    let (src, dlq) = queue_with_dlq("ev-sns", 3, false, 30).await;
    let (sns, topic) = producers::sns_topic_into(&src).await;
    producers::publish(&sns, &topic, r#"{"id":1,"sku":"a"}"#, Some("new order"), &[("kind", "order")]).await;
    producers::publish(&sns, &topic, r#"{"id":2,"sku":"b"}"#, None, &[]).await;
    // another producer sends straight to the queue: no envelope; its body must not be recorded
    src.send(OutgoingMessage::new(r#"{"id":3,"sku":"c","card":"4111-1111-1111-1111"}"#)).await.unwrap();
    wait_visible(&src, 3).await;

    let seen: Seen = Arc::default();
    let summary = drain_with(sns_orders(seen.clone()), &src).await;
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        [(1, topic.clone(), Some("new order".into()), Some("order".into())), (2, topic.clone(), None, None)]
    );
    assert_eq!((summary.succeeded, summary.dead_lettered), (2, 1), "{summary:?}");
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attribute_str(dl::ERROR_KIND), Some("undecodable"));
    assert_eq!(dead[0].attribute_str(dl::ERROR), Some("sns envelope: missing field `Type`"));
    assert!(dead[0].body.contains("4111"), "the body is kept as it was");

    // the Lambda adapter: an SqsEvent made of the very message SNS delivered
    producers::publish(&sns, &topic, r#"{"id":4,"sku":"d"}"#, Some("lambda"), &[]).await;
    let received = receive_exactly(&src, 1).await;
    assert!(received[0].body.contains(r#""Type": "Notification""#), "{}", received[0].body);
    let arn = src.attributes().await.unwrap().arn.unwrap();
    let event = serde_json::from_value(json!({"Records": [lambda_record(&received[0], &arn)]})).unwrap();
    let seen: Seen = Arc::default();
    let adapter = LambdaAdapter::new(sns_orders(seen.clone()), sqs().await)
        .with_context(QueueContext::discover(src.clone()).await.unwrap());
    let (response, summary) = adapter.handle(event).await.unwrap();
    assert!(response.batch_item_failures.is_empty(), "{summary:?}");
    assert_eq!(*seen.lock().unwrap(), [(4, topic.clone(), Some("lambda".into()), None)]);
}

#[tokio::test]
async fn s3_notifications_give_bucket_and_key_and_the_test_event_is_settled_without_the_handler() {
    let (src, dlq) = queue_with_dlq("ev-s3", 3, false, 30).await;
    let (s3, bucket) = producers::s3_bucket_notifying(&src).await;
    for key in ["in/a file.json", "in/b+c.json"] {
        s3.put_object().bucket(&bucket).key(key).body(b"{}".to_vec().into()).send().await.unwrap();
    }
    wait_visible(&src, 3).await; // the test event and one notification per object
                                 // another producer: an S3-shaped event with two records, the second of which fails
    let two = json!({"Records": [
        {"eventTime": "2026-12-06T10:00:00.000Z", "eventName": "ObjectCreated:Put", "userIdentity": {}, "requestParameters": {}, "s3": {"bucket": {"name": "other"}, "object": {"key": "ok.json"}}},
        {"eventTime": "2026-12-06T10:00:00.000Z", "eventName": "ObjectCreated:Put", "userIdentity": {}, "requestParameters": {}, "s3": {"bucket": {"name": "other"}, "object": {"key": "bad.json"}}}
    ]});
    src.send(OutgoingMessage::new(two.to_string())).await.unwrap();

    let seen = Arc::new(Mutex::new(Vec::<(String, String, String)>::new()));
    let s = seen.clone();
    let processor = Processor::json(move |m: Message<S3EventRecord>| {
        let bucket = m.body.s3.bucket.name.clone().unwrap_or_default();
        let key = s3_key(&m.body).unwrap_or_default();
        let event = m.envelope().and_then(|e| e.event_type()).unwrap_or_default().to_string();
        s.lock().unwrap().push((bucket, key.clone(), event));
        async move {
            if key == "bad.json" {
                return Err(HandlerError::permanent("cannot read bad.json"));
            }
            Ok(())
        }
    })
    .with_envelope(EnvelopeKind::S3);
    let summary = drain_with(processor, &src).await;
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    let put = "ObjectCreated:Put".to_string();
    assert_eq!(
        got,
        [
            (bucket.clone(), "in/a file.json".into(), put.clone()),
            (bucket.clone(), "in/b+c.json".into(), put.clone()),
            ("other".into(), "bad.json".into(), put.clone()),
            ("other".into(), "ok.json".into(), put.clone()),
        ],
        "the handler never saw the test event"
    );
    // the test event and both objects succeeded; the two-record message is dead-lettered whole
    assert_eq!((summary.succeeded, summary.dead_lettered, summary.retried), (3, 1, 0), "{summary:?}");
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attribute_str(dl::ERROR), Some("cannot read bad.json"));
    assert_eq!(depth(&src).await, (0, 0, 0));
}

#[tokio::test]
async fn cloudevents_from_a_plain_send_give_data_and_type_and_schema_failures_are_dead_lettered_with_the_path() {
    let (src, dlq) = queue_with_dlq("ev-ce", 3, false, 30).await;
    let event = |id: &str, data: Value| {
        json!({"specversion": "1.0", "id": id, "source": "/shop", "type": "com.example.order.placed",
               "datacontenttype": "application/json", "tenant": "acme", "data": data})
        .to_string()
    };
    let b64 = json!({"specversion": "1.0", "id": "e3", "source": "/shop", "type": "com.example.order.placed",
                     "data_base64": "eyJpZCI6Mywic2t1IjoiYyJ9"}) // {"id":3,"sku":"c"}
    .to_string();
    let bodies = [
        event("e1", json!({"id": 1, "sku": "a"})),
        event("e2", json!({"id": 2, "sku": "secret-sku-that-is-far-too-long"})),
        b64,
        event("e4", json!({"id": "4111-1111-1111-1111", "sku": "d"})),
    ];
    src.send_batch(bodies.iter().map(OutgoingMessage::new)).await.unwrap().into_result().unwrap();
    let schema = Schema::new(&json!({
        "type": "object",
        "required": ["id", "sku"],
        "properties": {"id": {"type": "integer"}, "sku": {"type": "string", "maxLength": 10}}
    }))
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<(u64, String, Option<String>)>::new()));
    let s = seen.clone();
    let processor = Processor::json(move |m: Message<Order>| {
        let ce = m.envelope().and_then(|e| e.cloud_event()).unwrap();
        s.lock().unwrap().push((
            m.body.id,
            ce.event_type.clone(),
            m.envelope().and_then(|e| e.attribute("tenant")).map(Into::into),
        ));
        async { Ok::<_, HandlerError>(()) }
    })
    .with_envelope(EnvelopeKind::CloudEvents)
    .with_schema(schema);
    let summary = drain_with(processor, &src).await;
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    let t = "com.example.order.placed".to_string();
    assert_eq!(got, [(1, t.clone(), Some("acme".into())), (3, t.clone(), None)]);
    assert_eq!((summary.succeeded, summary.dead_lettered), (2, 2), "{summary:?}");
    let mut dead: Vec<(String, String)> = drain(&dlq, Duration::from_secs(1))
        .await
        .iter()
        .map(|m| {
            (m.attribute_str(dl::ERROR_KIND).unwrap().to_string(), m.attribute_str(dl::ERROR).unwrap().to_string())
        })
        .collect();
    dead.sort();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (kind, error) in &dead {
        assert_eq!(kind, "permanent");
        assert!(!error.contains("secret") && !error.contains("4111"), "{error}");
    }
    assert!(dead[0].1.starts_with("schema: keyword `maxLength` failed at `/sku`"), "{}", dead[0].1);
    assert!(dead[1].1.starts_with("schema: keyword `type` failed at `/id`"), "{}", dead[1].1);
}

// ---- EventBridge (LocalStack with `events`) ----

fn events_endpoint() -> String {
    std::env::var("SQSKIT_TEST_EVENTS_ENDPOINT").unwrap_or_else(|_| endpoint())
}

/// SQS and EventBridge clients of the LocalStack that has EventBridge; fails loudly without it.
async fn events_clients() -> (aws_sdk_sqs::Client, aws_sdk_eventbridge::Client) {
    let at = events_endpoint();
    let conf = sdk_config_for(&at).await;
    let eb = aws_sdk_eventbridge::Client::new(&conf);
    if let Err(e) = eb.list_rules().limit(1).send().await {
        panic!(
            "EventBridge does not answer at {at} ({}): LocalStack needs `events` in SERVICES (scripts/localstack \
             starts it so), or set SQSKIT_TEST_EVENTS_ENDPOINT to a LocalStack that has it",
            aws_sdk_sqs::error::DisplayErrorContext(e)
        );
    }
    (aws_sdk_sqs::Client::new(&conf), eb)
}

/// A queue with a DLQ on the EventBridge LocalStack, and its ARN.
async fn events_queue(sqs: &aws_sdk_sqs::Client, prefix: &str) -> (Queue, Queue, String) {
    let base = unique(prefix);
    let dlq = create_queue(sqs, &format!("{base}-dlq"), &[]).await;
    let dlq_arn = dlq.attributes().await.unwrap().arn.unwrap();
    let policy = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}).to_string();
    let src = create_queue(sqs, &base, &[(QueueAttributeName::RedrivePolicy, policy)]).await;
    let arn = src.attributes().await.unwrap().arn.unwrap();
    (src, dlq, arn)
}

/// A rule (pattern or schedule) whose target is `queue_arn`; returns its name and ARN.
async fn rule_into(
    eb: &aws_sdk_eventbridge::Client,
    pattern: Option<Value>,
    schedule: Option<&str>,
    queue_arn: &str,
) -> (String, String) {
    let name = unique("rule");
    let rule = eb
        .put_rule()
        .name(&name)
        .set_event_pattern(pattern.map(|p| p.to_string()))
        .set_schedule_expression(schedule.map(str::to_string))
        .send()
        .await
        .expect("put rule");
    let target = aws_sdk_eventbridge::types::Target::builder().id("queue").arn(queue_arn).build().unwrap();
    eb.put_targets().rule(&name).targets(target).send().await.expect("put targets");
    (name, rule.rule_arn().unwrap_or_default().to_string())
}

async fn delete_rule(eb: &aws_sdk_eventbridge::Client, name: &str) {
    let _ = eb.remove_targets().rule(name).ids("queue").send().await;
    let _ = eb.delete_rule().name(name).send().await;
}

#[derive(Debug, Deserialize)]
struct Placed {
    order: u64,
}

#[derive(Debug, Deserialize)]
struct Shipped {
    order: u64,
    carrier: String,
}

#[tokio::test]
async fn eventbridge_events_are_routed_by_detail_type_and_an_unknown_type_is_dead_lettered_as_unrouted() {
    let (sqs, eb) = events_clients().await;
    let (src, dlq, arn) = events_queue(&sqs, "ev-route").await;
    let source = unique("sqskit.test");
    let (rule, _) = rule_into(&eb, Some(json!({"source": [source]})), None, &arn).await;
    let entry = |detail_type: &str, detail: Value| {
        aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source(&source)
            .detail_type(detail_type)
            .detail(detail.to_string())
            .build()
    };
    let put = eb
        .put_events()
        .entries(entry("OrderPlaced", json!({"order": 1})))
        .entries(entry("OrderShipped", json!({"order": 1, "carrier": "ups"})))
        .entries(entry("OrderPlaced", json!({"order": 2})))
        .entries(entry("OrderRefunded", json!({"order": 1, "iban": "DE89370400440532013000"})))
        .send()
        .await
        .unwrap();
    assert_eq!(put.failed_entry_count(), 0);
    wait_visible(&src, 4).await;

    let placed = Arc::new(Mutex::new(Vec::new()));
    let shipped = Arc::new(Mutex::new(Vec::new()));
    let (p, s) = (placed.clone(), shipped.clone());
    let router = Router::new(RouteKey::EventType)
        .route("OrderPlaced", move |m: Message<Placed>| {
            p.lock().unwrap().push(m.body.order);
            async { Ok::<_, HandlerError>(()) }
        })
        .route("OrderShipped", move |m: Message<Shipped>| {
            let source = m.envelope().and_then(|e| e.eventbridge()).map(|e| e.source.clone()).unwrap_or_default();
            s.lock().unwrap().push((m.body.order, m.body.carrier.clone(), source));
            async { Ok::<_, HandlerError>(()) }
        });
    let summary = drain_with(Processor::router(router).with_envelope(EnvelopeKind::EventBridge), &src).await;
    let mut placed = placed.lock().unwrap().clone();
    placed.sort();
    assert_eq!(placed, [1, 2]);
    assert_eq!(*shipped.lock().unwrap(), [(1, "ups".to_string(), source.clone())]);
    assert_eq!((summary.succeeded, summary.dead_lettered, summary.retried), (3, 1, 0), "{summary:?}");
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attribute_str(dl::ERROR_KIND), Some("unrouted"));
    assert_eq!(
        dead[0].attribute_str(dl::ERROR),
        Some("no route for `OrderRefunded` (routed by its event type; routes: OrderPlaced, OrderShipped)")
    );
    let original: Value = serde_json::from_str(&dead[0].body).unwrap();
    assert_eq!(original["detail"]["iban"], "DE89370400440532013000", "the DLQ keeps the event as delivered");
    assert_eq!(depth(&src).await, (0, 0, 0));
    delete_rule(&eb, &rule).await;
}

/// About two minutes: LocalStack fires a `rate(1 minute)` rule first about a minute after it is
/// created, then every minute.
#[tokio::test]
async fn a_rate_one_minute_rule_delivers_to_a_running_poller_once_a_minute() {
    let (sqs, eb) = events_clients().await;
    let (src, dlq, arn) = events_queue(&sqs, "ev-schedule").await;
    let (rule, rule_arn) = rule_into(&eb, None, Some("rate(1 minute)"), &arn).await;

    // how a handler tells scheduled messages apart: EventBridge's `Scheduled Event` from aws.events
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, Vec<String>)>();
    let router = Router::new(RouteKey::EventType).route("Scheduled Event", move |m: Message<Value>| {
        let e = m.envelope().and_then(|e| e.eventbridge()).cloned().unwrap_or_default();
        let _ = tx.send((m.id().to_string(), e.source, e.resources.unwrap_or_default()));
        async { Ok::<_, HandlerError>(()) }
    });
    let processor = Processor::router(router).with_envelope(EnvelopeKind::EventBridge);
    let config = PollerConfig::default().with_wait_time(Duration::from_secs(20)).with_depth_interval(Duration::ZERO);
    let poller = Poller::new(processor, [QueueSpec::new(src.clone())], config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(poller.run(async {
        let _ = stopped.await;
    }));

    let mut ids = HashSet::new();
    for _ in 0..2 {
        // a bound, not a timing claim: the second firing comes about 120 s after the rule
        let (id, source, resources) =
            tokio::time::timeout(Duration::from_secs(240), rx.recv()).await.expect("the schedule fired").unwrap();
        assert_eq!(source, "aws.events");
        assert_eq!(resources, std::slice::from_ref(&rule_arn));
        ids.insert(id);
    }
    delete_rule(&eb, &rule).await;
    let _ = stop.send(());
    let summary = running.await.unwrap();
    assert_eq!(ids.len(), 2, "two firings, two messages");
    assert!(summary.succeeded >= 2 && summary.dead_lettered == 0 && summary.retried == 0, "{summary:?}");
    assert_eq!(depth(&dlq).await, (0, 0, 0));
}

#[tokio::test]
async fn a_router_with_a_batch_route_works_in_the_lambda_adapter() {
    // EventBridge-shaped bodies as another producer would write them; no queue: only the answer
    let body = |t: &str, order: u64| {
        json!({"version": "0", "id": format!("e{order}"), "detail-type": t, "source": "shop", "detail": {"order": order}}).to_string()
    };
    let records: Vec<Value> = [("OrderPlaced", 1), ("OrderShipped", 2), ("OrderPlaced", 3), ("Refunded", 4), ("OrderPlaced", 5)]
        .iter()
        .map(|(t, n)| {
            json!({"messageId": format!("m{n}"), "receiptHandle": "h", "body": body(t, *n),
                   "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                   "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:no-such-queue", "awsRegion": "us-east-1"})
        })
        .collect();
    let event = serde_json::from_value(json!({"Records": records})).unwrap();
    let batches = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
    let b = batches.clone();
    let router = Router::new(RouteKey::EventType)
        .route_batch("OrderPlaced", move |msgs: Vec<Message<Placed>>| {
            b.lock().unwrap().push(msgs.iter().map(|m| m.body.order).collect());
            // order 3 fails, the others are done
            let out: Vec<Result<(), HandlerError>> = msgs
                .iter()
                .map(|m| if m.body.order == 3 { Err(HandlerError::retryable("busy")) } else { Ok(()) })
                .collect();
            async move { out }
        })
        .route("OrderShipped", |_m: Message<Value>| async { Ok::<_, HandlerError>(()) });
    let processor = Processor::router(router).with_envelope(EnvelopeKind::EventBridge);
    assert!(processor.is_batch());
    let conf = aws_sdk_sqs::Config::builder().behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest()).build();
    let adapter =
        LambdaAdapter::new(processor, aws_sdk_sqs::Client::from_conf(conf)).with_context(QueueContext::default());
    let (response, summary) = adapter.handle(event).await.unwrap();
    assert_eq!(*batches.lock().unwrap(), [vec![1, 3, 5]], "one call for the route's messages, in order");
    let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    // no DLQ known: the unrouted one is reported as a failure (the redrive policy moves it later)
    assert_eq!(failed, ["m3", "m4"]);
    assert_eq!(summary.failed.get("unrouted"), Some(&1), "{summary:?}");
    assert_eq!(summary.succeeded, 3);
}
