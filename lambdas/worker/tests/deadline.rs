//! The real `worker` binary and the invocation deadline: a FIFO batch whose deliveries take
//! longer than the invocation has stops starting messages before the deadline and lists the
//! rest as failures, instead of timing out and having Lambda re-run the whole batch.
use sqskit_test_support as support;

use std::time::Duration;

use serde_json::json;
use sqskit::OutgoingMessage;
use support::http::{serve_with, Reply};
use support::lambda_rt::{event, failures, response, LambdaHarness};
use support::*;

#[tokio::test]
async fn worker_stops_starting_messages_near_the_deadline_and_lists_the_rest() {
    // each delivery takes 1 s; 8 in sequence (FIFO) need 8 s; the invocation has 6 s and the
    // default safety margin is max(10 %, 2 s): about 4 are started, the rest are listed
    let (url, seen) = serve_with(|_req| {
        std::thread::sleep(Duration::from_secs(1));
        Reply { status: 200, headers: vec![] }
    });
    let q = fifo_queue("worker-deadline").await;
    let arn = q.attributes().await.unwrap().arn.unwrap();
    let bodies: Vec<String> = (0..8)
        .map(|i| {
            json!({"delivery_id": format!("d{i}"), "url": url, "event_type": "e", "payload": {"i": i}}).to_string()
        })
        .collect();
    q.send_batch(bodies.iter().map(|b| OutgoingMessage::new(b.clone()).group_id("A")))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let got = receive_exactly(&q, 8).await;
    let ids: Vec<String> = got.iter().map(|m| m.message_id.clone()).collect();
    let mut lambda = LambdaHarness::start(env!("CARGO_BIN_EXE_worker"), "worker-deadline", &[]);
    let answer = lambda
        .invoke_with_deadline(event(got.iter().map(|m| lambda_record(m, &arn)).collect()), Duration::from_secs(6));
    let resp = response(answer, &lambda.output());
    let failed = failures(&resp);
    let delivered = seen.lock().unwrap().len();
    assert!(!failed.is_empty() && delivered > 0, "delivered {delivered}, failed {failed:?}");
    assert_eq!(delivered + failed.len(), 8, "every message is either delivered or listed");
    assert_eq!(failed, ids[delivered..], "FIFO: the unstarted tail, in order");
    assert!(lambda.output().contains("deadline is near"), "{}", lambda.output());
}
