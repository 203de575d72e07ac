//! The README's three-line Lambda (`sqskit::lambda::run`), run as a real binary through the
//! local Lambda Runtime API against LocalStack: settings from the environment, partial batch
//! responses, permanent failures dead-lettered by the function, the EMF line.
use sqskit_test_support as support;

use std::time::Duration;

use serde_json::json;
use sqskit::OutgoingMessage;
use support::lambda_rt::{emf_lines, event, failures, response, LambdaHarness};
use support::*;

#[tokio::test]
async fn the_three_line_lambda_settles_a_batch() {
    let (q, dlq) = queue_with_dlq("example-lambda", 5, false, 60).await;
    let arn = q.attributes().await.unwrap().arn.unwrap();
    let bodies = [json!({"id": 1, "amount_cents": 500}), json!({"id": 2, "amount_cents": -3}), json!({"id": 3})];
    q.send_batch(bodies.iter().map(|b| OutgoingMessage::new(b.to_string()))).await.unwrap().into_result().unwrap();
    let got = receive_exactly(&q, 3).await;
    let mut lambda = LambdaHarness::start(
        env!("CARGO_BIN_EXE_example-lambda"),
        "example-lambda",
        &[("SQSKIT_QUEUE_URL", q.url().to_string()), ("SQSKIT_DLQ_URL", dlq.url().to_string())],
    );
    let resp = response(lambda.invoke(event(got.iter().map(|m| lambda_record(m, &arn)).collect())), &lambda.output());
    assert!(failures(&resp).is_empty(), "negative amount (permanent) and missing field (undecodable) go to the DLQ");
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    assert_eq!(dead.len(), 2);
    let emf = emf_lines(&lambda.output());
    assert_eq!(emf.last().map(|l| l["Succeeded"].clone()), Some(json!(1.0)), "{}", lambda.output());
    assert_eq!(emf.last().map(|l| l["DeadLettered"].clone()), Some(json!(2.0)));
}
