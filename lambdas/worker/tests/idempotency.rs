//! The real `worker` binary with `SQSKIT_IDEMPOTENCY_TABLE` (DynamoDB on moto), through the
//! local Lambda Runtime API: a webhook is delivered once, however many copies arrive.
use sqskit_test_support as support;
use sqskit_test_support::stores;

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use sqskit::OutgoingMessage;
use support::lambda_rt::{emf_lines, event, response, LambdaHarness};
use support::*;

fn delivery(id: &str, url: &str) -> String {
    json!({"delivery_id": id, "url": url, "event_type": "order.created", "payload": {"order": id}}).to_string()
}

#[tokio::test]
async fn the_same_delivery_twice_in_one_batch_and_again_later_is_posted_once() {
    let (hook, seen) = http::serve(|_| (200, None));
    let (q, _dlq) = queue_with_dlq("worker-idem", 5, false, 60).await;
    let arn = q.attributes().await.unwrap().arn.unwrap();
    let db = stores::dynamodb().await;
    let table = stores::table(&db, &unique("worker-idem")).await;
    let env = [
        ("SQSKIT_IDEMPOTENCY_TABLE", table.clone()),
        ("SQSKIT_IDEMPOTENCY_KEY", "/delivery_id".to_string()),
        ("SQSKIT_IDEMPOTENCY_PREFIX", "webhooks".to_string()),
        ("AWS_ENDPOINT_URL_DYNAMODB", stores::dynamodb_url()),
    ];
    let mut lambda = LambdaHarness::start(env!("CARGO_BIN_EXE_worker"), "worker", &env);

    // one batch: d1, d1 again (a producer retry: another message id), d2
    let bodies = [delivery("d1", &hook), delivery("d1", &hook), delivery("d2", &hook)];
    q.send_batch(bodies.iter().map(|b| OutgoingMessage::new(b.clone()))).await.unwrap().into_result().unwrap();
    let got = receive_exactly(&q, 3).await;
    let records: Vec<Value> = got.iter().map(|m| lambda_record(m, &arn)).collect();
    let invoked = SystemTime::now();
    let answer = lambda.invoke_with_deadline(event(records), Duration::from_secs(30));
    let out = lambda.output();
    assert_eq!(response(answer, &out), json!({"batchItemFailures": []}), "{out}");
    let posted = |id: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| r.headers.get("x-webhook-delivery").map(String::as_str) == Some(id))
            .count()
    };
    assert_eq!((posted("d1"), posted("d2")), (1, 1), "{out}");
    let emf = emf_lines(&out);
    assert_eq!(emf.len(), 1, "{out}");
    assert_eq!(
        (emf[0]["Succeeded"].as_f64(), emf[0]["Duplicates"].as_f64(), emf[0]["Idempotency_claimed"].as_f64()),
        (Some(2.0), Some(1.0), Some(2.0)),
        "{}",
        emf[0]
    );

    // the claim lapsed with the invocation's deadline (not an hour later)
    let key = format!("webhooks#{}", sqskit::idempotency::hash_value(&json!("d1")));
    let record = stores::item(&db, &table, &key).await.expect("d1's record");
    assert_eq!(record["status"].as_s().unwrap(), "COMPLETED");
    let lapse_ms: u64 = record["in_progress_expiration"].as_n().unwrap().parse().unwrap();
    let deadline_ms = sqskit::idempotency::epoch_millis(invoked + Duration::from_secs(30));
    assert!(lapse_ms.abs_diff(deadline_ms) < 3_000, "claim lapsed at {lapse_ms}, the deadline was ~{deadline_ms}");

    // a later copy (a redelivery in another invocation): not posted again, not reported failed
    q.send(OutgoingMessage::new(delivery("d1", &hook))).await.unwrap();
    let again = receive_exactly(&q, 1).await;
    let answer = lambda.invoke(event(vec![lambda_record(&again[0], &arn)]));
    let out = lambda.output();
    assert_eq!(response(answer, &out), json!({"batchItemFailures": []}), "{out}");
    assert_eq!(posted("d1"), 1);
    let last = emf_lines(&out).pop().unwrap();
    assert_eq!(last["Duplicates"].as_f64(), Some(1.0), "{last}");
}
