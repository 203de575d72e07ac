//! Issue 21 in the library: what a message carries (a due time, a claim-check pointer) is honoured
//! or refused loudly, never dropped, and no number makes it panic — against LocalStack.
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqskit::idempotency::{Idempotency, MemoryStore};
use sqskit::payload::{Pointer, SIZE_ATTRIBUTE};
use sqskit::poller::{Poller, PollerConfig, QueueSpec};
use sqskit::processor::dead_letter_attributes as dl;
use sqskit::{AttributeValue, HandlerError, Message, OutgoingMessage, Processor, ProcessorConfig, QueueContext};
use support::*;

/// (when the handler started, the body)
type Seen = Arc<Mutex<Vec<(SystemTime, String)>>>;

fn recording() -> (Processor<String>, Seen) {
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let processor = Processor::raw(move |m: Message<String>| {
        let seen = s2.clone();
        async move {
            seen.lock().unwrap().push((SystemTime::now(), m.body.clone()));
            Ok::<_, HandlerError>(())
        }
    });
    (processor, seen)
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

#[tokio::test]
async fn deliver_at_values_that_cannot_be_honoured_are_dead_lettered_not_hopped_or_run_early() {
    let (q, dlq) = queue_with_dlq("in-due", 3, false, 30).await;
    let q = q.with_delay_hop(Duration::from_secs(1));
    let with_due = |body: &str, v: AttributeValue| OutgoingMessage::new(body).attribute(sqskit::delay::DELIVER_AT, v);
    let due_ms = now_ms() + 4000;
    let bad = [
        ("u64-max", AttributeValue::number(u64::MAX)),
        ("a-word", AttributeValue::string("soon")),
        ("a-year-and-more", AttributeValue::number(now_ms() + 400 * 86_400_000)),
        ("exponent", AttributeValue::number("1.5e12")),
        ("negative", AttributeValue::number(-5)),
    ];
    let mut messages: Vec<OutgoingMessage> = bad.iter().map(|(b, v)| with_due(b, v.clone())).collect();
    // a decimal is a due time too (rounded up to the next millisecond): not a reason to run early
    messages.push(with_due("decimal", AttributeValue::number(format!("{due_ms}.5"))));
    messages.push(OutgoingMessage::new("plain"));
    q.send_batch(messages).await.unwrap().into_result().unwrap();

    let (processor, seen) = recording();
    let processor = processor.with_config(ProcessorConfig::default().with_delay_hop(Duration::from_secs(1)));
    let config = PollerConfig::default()
        .with_until_empty(true)
        .with_wait_time(Duration::from_secs(1))
        .with_depth_interval(Duration::ZERO);
    let poller = Poller::new(processor, [QueueSpec::new(q.clone())], config).await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), poller.run(std::future::pending()))
        .await
        .expect("the queue empties: nothing hops forever");
    let seen = seen.lock().unwrap().clone();
    let mut bodies: Vec<&str> = seen.iter().map(|(_, b)| b.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["decimal", "plain"], "only what is due ran: {summary:?}");
    let started = seen.iter().find(|(_, b)| b == "decimal").unwrap().0;
    let due = UNIX_EPOCH + Duration::from_millis(due_ms as u64);
    assert!(started >= due, "the decimal one ran {:?} early", due.duration_since(started).unwrap_or_default());

    let dead = drain(&dlq, Duration::from_secs(1)).await;
    let mut names: Vec<&str> = dead.iter().map(|m| m.body.as_str()).collect();
    names.sort();
    let mut want: Vec<&str> = bad.iter().map(|(b, _)| *b).collect();
    want.sort();
    assert_eq!(names, want, "each refused one is in the DLQ, once");
    for m in &dead {
        assert_eq!(m.attribute_str(dl::ERROR_KIND), Some("undecodable"), "{}", m.body);
        let error = m.attribute_str(dl::ERROR).unwrap_or_default();
        assert!(error.contains(sqskit::delay::DELIVER_AT), "{}: the error names the attribute: {error}", m.body);
        assert!(m.attributes.contains_key(sqskit::delay::DELIVER_AT), "{}: kept as it came", m.body);
    }
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn a_claim_checked_message_never_reaches_a_handler_without_a_claim_check() {
    let (q, dlq) = queue_with_dlq("in-ptr", 3, false, 30).await;
    let pointer = Pointer { bucket: "some-bucket".into(), key: "k".into() };
    q.send(OutgoingMessage::new(pointer.body()).attribute(SIZE_ATTRIBUTE, AttributeValue::number(5_000_000)))
        .await
        .unwrap();
    let (processor, seen) = recording(); // no claim check anywhere
    let ctx = QueueContext::discover(q.clone()).await.unwrap();
    let got = receive_exactly(&q, 1).await;
    let decisions = processor.process_batch(&ctx, got).await;
    processor.settle(&ctx, &decisions).await;
    assert!(seen.lock().unwrap().is_empty(), "the handler never got the pointer as its body");
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    assert_eq!(dead.len(), 1, "dead-lettered with the pointer, nothing lost");
    assert_eq!(dead[0].body, pointer.body());
    assert!(dead[0].attributes.contains_key(SIZE_ATTRIBUTE));
    let error = dead[0].attribute_str(dl::ERROR).unwrap_or_default();
    assert!(error.contains("claim check") && error.contains("s3://some-bucket/k"), "says what is missing: {error}");
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn lambda_from_env_resolves_pointers_without_a_payload_bucket() {
    let s3 = sqskit::payload::s3_client(&sdk_config().await);
    let bucket = unique("in-lambda-ptr").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let payload = "✓ resolved ".repeat(100);
    s3.put_object().bucket(&bucket).key("obj").body(payload.clone().into_bytes().into()).send().await.unwrap();
    let q = queue("in-lambda-ptr").await;
    let arn = q.attributes().await.unwrap().arn.unwrap();
    let pointer = Pointer { bucket, key: "obj".into() };
    q.send(OutgoingMessage::new(pointer.body()).attribute(SIZE_ATTRIBUTE, AttributeValue::number(payload.len())))
        .await
        .unwrap();
    let m = receive_exactly(&q, 1).await.remove(0);
    let (processor, seen) = recording();
    // SQSKIT_PAYLOAD_BUCKET is not set: the pointer names its bucket, nothing needs configuring
    assert!(std::env::var_os("SQSKIT_PAYLOAD_BUCKET").is_none());
    let adapter = sqskit::lambda::LambdaAdapter::from_env(processor).await.unwrap();
    let event = serde_json::from_value(serde_json::json!({"Records": [lambda_record(&m, &arn)]})).unwrap();
    let (response, _) = adapter.handle(event).await.unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, payload, "the handler got the object, not the pointer");
}

#[tokio::test]
async fn idempotency_with_the_longest_ttl_does_not_panic() {
    let (processor, seen) = recording();
    let processor = processor.with_idempotency(Idempotency::new(MemoryStore::new()).with_ttl(Duration::MAX));
    let raw = |id: &str| sqskit::ReceivedMessage {
        message_id: id.into(),
        receipt_handle: "h".into(),
        body: "{\"order\":1}".into(),
        attributes: Default::default(),
        system_attributes: Default::default(),
        received_at: std::time::Instant::now(),
        queue_url: None,
    };
    processor.run(Arc::new(raw("m1"))).await.expect("ran");
    processor.run(Arc::new(raw("m2"))).await.expect("a duplicate, not run");
    assert_eq!(seen.lock().unwrap().len(), 1, "the completed key keeps the copy from running");
}

#[test]
fn poller_settings_out_of_range_are_refused_naming_them() {
    let d = PollerConfig::default;
    let cases = [
        (d().with_prefetch(Some(usize::MAX)), "prefetch"),
        (d().with_liveness_margin(Duration::MAX), "liveness_margin"),
        (d().with_shutdown_timeout(Duration::MAX), "shutdown_timeout"),
        (d().with_depth_interval(Duration::MAX), "depth_interval"),
        (d().with_tenant_metrics(usize::MAX), "tenant_metrics"),
        (d().with_rate(Some(1e-20)), "rate"),
        (d().with_concurrency(usize::MAX), "concurrency"),
        (d().with_visibility_timeout(Duration::MAX), "visibility_timeout"),
        (d().with_max_visibility_extension(Duration::MAX), "max_visibility_extension"),
        (d().with_wait_time(Duration::MAX), "wait_time"),
        (d(), "ack_flush_interval"),
        (d(), "receive_fill_wait"),
    ];
    // (pub fields without setters)
    let mut cases = cases;
    cases[10].0.ack_flush_interval = Duration::MAX;
    cases[11].0.receive_fill_wait = Duration::MAX;
    for (config, name) in cases {
        let e = config.validate().expect_err(name).to_string();
        assert!(e.contains(name), "{name}: {e}");
    }
    assert!(d().validate().is_ok());
}

proptest::proptest! {
    #[test]
    fn accepted_poller_settings_keep_the_poller_arithmetic_in_range(
        concurrency in 0usize..200_000,
        prefetch in proptest::option::of(0usize..200_000),
        secs in proptest::array::uniform4(proptest::num::u64::ANY),
        small in 0u64..100_000,
    ) {
        let config = PollerConfig::default()
            .with_concurrency(concurrency)
            .with_prefetch(prefetch)
            .with_liveness_margin(Duration::from_secs(secs[0] % 7200))
            .with_shutdown_timeout(Duration::from_secs(secs[1]))
            .with_wait_time(Duration::from_secs(small % 40))
            .with_visibility_timeout(Duration::from_secs(secs[2] % 86_400))
            .with_max_visibility_extension(Duration::from_secs(secs[3] % 86_400));
        if config.validate().is_ok() {
            // what the poller computes from them: the liveness window and the permit pool
            proptest::prop_assert!(config.wait_time.checked_mul(2).and_then(|w| w.checked_add(config.liveness_margin)).is_some());
            let permits = config.concurrency.checked_add(config.prefetch.unwrap_or(640));
            proptest::prop_assert!(permits.is_some_and(|p| p <= tokio::sync::Semaphore::MAX_PERMITS));
            proptest::prop_assert!(std::time::Instant::now().checked_add(config.shutdown_timeout).is_some());
        }
    }

    #[test]
    fn queue_urls_with_weights_parse_or_are_refused(s in "\\PC{0,30}|https?://[a-z/]{1,10}(=[0-9 -]{0,12})?") {
        if let Ok((url, weight)) = QueueSpec::parse_url(&s) {
            proptest::prop_assert!(weight >= 1);
            proptest::prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
            proptest::prop_assert_eq!(QueueSpec::parse_url(&format!("{url}={weight}")).unwrap(), (url, weight));
        }
    }
}
