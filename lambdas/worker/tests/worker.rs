//! The real `worker` binary, run through the local Lambda Runtime API (test-support/src/lambda_rt.rs), against LocalStack.
use sqskit_test_support as support;

use std::time::Duration;

use serde_json::{json, Value};
use sqskit::processor::dead_letter_attributes as dl;
use sqskit::{OutgoingMessage, ReceivedMessage};
use support::lambda_rt::{emf_lines, event, failures, response, Answer, LambdaHarness};
use support::*;

fn delivery(id: &str, url: &str, extra: &str) -> String {
    json!({"delivery_id": id, "url": url, "event_type": "order.created", "payload": {"order": id, "note": extra}})
        .to_string()
}

#[tokio::test]
async fn worker_reports_partial_failures_and_dead_letters_permanent_ones() {
    let (hook, seen) = http::serve(|body| {
        if body.contains("flaky") {
            (503, None)
        } else if body.contains("gone") {
            (410, None)
        } else {
            (200, None)
        }
    });
    let (q, dlq) = queue_with_dlq("worker", 5, false, 60).await;
    let arn = q.attributes().await.unwrap().arn.unwrap();
    let bodies = [
        delivery("d1", &hook, "ok"),
        delivery("d2", &hook, "flaky"),
        delivery("d3", &hook, "gone"),
        "not json".to_string(),
        delivery("d5", &hook, "ok"),
    ];
    q.send_batch(bodies.iter().map(|b| OutgoingMessage::new(b.clone()))).await.unwrap().into_result().unwrap();
    let mut got = receive_exactly(&q, 5).await;
    let order: Vec<&str> = bodies.iter().map(String::as_str).collect();
    got.sort_by_key(|m| order.iter().position(|b| *b == m.body));
    let records: Vec<Value> = got.iter().map(|m| lambda_record(m, &arn)).collect();

    let mut lambda =
        LambdaHarness::start(env!("CARGO_BIN_EXE_worker"), "worker", &[("SQSKIT_BACKOFF_BASE", "1".into())]);
    let answer = lambda.invoke(event(records));
    let out = lambda.output();
    let resp = response(answer, &out);
    // only the 503 is reported: the 410 and the undecodable body went to the DLQ (success for Lambda)
    assert_eq!(resp, json!({"batchItemFailures": [{"itemIdentifier": got[1].message_id}]}), "{out}");
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    let mut kinds: Vec<&str> = dead.iter().filter_map(|m| m.attribute_str(dl::ERROR_KIND)).collect();
    kinds.sort();
    assert_eq!(kinds, ["permanent", "undecodable"]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "4 deliveries attempted (the undecodable one never reaches the handler)");
    let d1 = seen.iter().find(|r| r.headers.get("x-webhook-delivery").map(String::as_str) == Some("d1")).unwrap();
    assert_eq!(d1.headers["x-webhook-event"], "order.created");
    assert_eq!(serde_json::from_str::<Value>(&d1.body).unwrap()["order"], "d1");
    // EMF line with the counts; JSON logs with the request id; no bodies in the logs
    let emf = emf_lines(&out);
    assert_eq!(emf.len(), 1, "{out}");
    assert_eq!(
        (emf[0]["Records"].as_f64(), emf[0]["Succeeded"].as_f64(), emf[0]["DeadLettered"].as_f64()),
        (Some(5.0), Some(2.0), Some(2.0))
    );
    assert_eq!(emf[0]["Failed_retryable"].as_f64(), Some(1.0));
    assert_eq!(emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], "sqskit");
    assert!(out.contains("req-"), "request id in the logs:\n{out}");
    assert!(!out.contains("not json"), "bodies are not logged");
}

#[tokio::test]
async fn worker_on_fifo_reports_the_first_failure_and_everything_after() {
    let (hook, _seen) = http::serve(|body| if body.contains("flaky") { (503, Some(30)) } else { (200, None) });
    let (q, _dlq) = queue_with_dlq("workerfifo", 5, true, 60).await;
    let arn = q.attributes().await.unwrap().arn.unwrap();
    let msgs = vec![
        OutgoingMessage::new(delivery("f1", &hook, "ok")).group_id("A"),
        OutgoingMessage::new(delivery("f2", &hook, "ok")).group_id("B"),
        OutgoingMessage::new(delivery("f3", &hook, "flaky")).group_id("A"),
        OutgoingMessage::new(delivery("f4", &hook, "ok")).group_id("B"),
        OutgoingMessage::new(delivery("f5", &hook, "ok")).group_id("A"),
    ];
    q.send_batch(msgs).await.unwrap().into_result().unwrap();
    // FIFO hands out one group's messages at a time: collect all five
    let mut got: Vec<ReceivedMessage> = Vec::new();
    for _ in 0..10 {
        got.extend(q.receive(10, Duration::from_secs(1), Some(Duration::from_secs(120))).await.unwrap());
        if got.len() == 5 {
            break;
        }
    }
    assert_eq!(got.len(), 5);
    got.sort_by_key(|m| m.sequence_number().map(str::to_string));
    let ids: Vec<String> = got.iter().map(|m| m.message_id.clone()).collect();
    let flaky = got.iter().position(|m| m.body.contains("flaky")).unwrap();
    let records: Vec<Value> = got.iter().map(|m| lambda_record(m, &arn)).collect();
    let mut lambda = LambdaHarness::start(env!("CARGO_BIN_EXE_worker"), "worker-fifo", &[]);
    let resp = response(lambda.invoke(event(records)), &lambda.output());
    assert_eq!(failures(&resp), ids[flaky..].to_vec(), "first failure and every message after it");
}

#[tokio::test]
async fn worker_with_invalid_config_fails_at_start_naming_the_variable() {
    let mut lambda =
        LambdaHarness::start(env!("CARGO_BIN_EXE_worker"), "worker-bad", &[("SQSKIT_BACKOFF_BASE", "soon".into())]);
    let answer = lambda.invoke(event(vec![]));
    assert!(matches!(answer, Answer::Exited(_) | Answer::InitError(_)), "{answer:?}");
    assert!(lambda.output().contains("SQSKIT_BACKOFF_BASE"), "{}", lambda.output());
}
