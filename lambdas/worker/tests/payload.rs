//! The real `worker` binary with `SQSKIT_PAYLOAD_BUCKET`: a claim-checked delivery (Extended
//! Client pointer) is fetched from LocalStack S3 and delivered whole.
use sqskit_test_support as support;

use serde_json::{json, Value};
use sqskit::payload::{ClaimCheck, SIZE_ATTRIBUTE};
use sqskit::OutgoingMessage;
use support::lambda_rt::{event, response, LambdaHarness};
use support::*;

#[tokio::test]
async fn worker_resolves_a_claim_checked_delivery_from_s3() {
    let (hook, seen) = http::serve(|_| (200, None));
    let s3 = sqskit::payload::s3_client(&sdk_config().await);
    let bucket = unique("cc-worker").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    let q = queue("cc-worker").await.with_claim_check(ClaimCheck::new(s3, &bucket).with_always(true));
    let arn = q.attributes().await.unwrap().arn.unwrap();
    let note = "✓".repeat(400_000); // 1.2 MB: over the SQS limit
    let body = json!({"delivery_id": "big-1", "url": hook, "event_type": "order.created", "payload": {"note": note}})
        .to_string();
    q.send(OutgoingMessage::new(body.clone())).await.expect("send through S3");
    let m = receive_exactly(&q, 1).await.remove(0);
    assert!(m.attributes.contains_key(SIZE_ATTRIBUTE), "a pointer on the wire");

    let mut lambda = LambdaHarness::start(
        env!("CARGO_BIN_EXE_worker"),
        "worker",
        &[("SQSKIT_PAYLOAD_BUCKET", bucket.clone()), ("SQSKIT_BACKOFF_BASE", "1".into())],
    );
    let answer = lambda.invoke(event(vec![lambda_record(&m, &arn)]));
    let out = lambda.output();
    assert_eq!(response(answer, &out), json!({"batchItemFailures": []}), "{out}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{out}");
    let delivered: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(delivered["note"].as_str().map(str::len), Some(note.len()), "the whole payload was delivered");
}
