//! The real `dlq-monitor` binary, run through the local Lambda Runtime API (test-support/src/lambda_rt.rs), against LocalStack.
use sqskit_test_support as support;

use std::time::Duration;

use serde_json::{json, Value};
use sqskit::processor::{dead_letter_attributes as dl, dead_letter_message, Failure, FailureKind};
use sqskit::{OutgoingMessage, Queue, ReceivedMessage};
use sqskit_test_support::archive::capture;
use support::lambda_rt::{emf_lines, event, failures, response, Answer, LambdaHarness};
use support::*;

/// A source queue and DLQ holding four dead letters, the Lambda event for them, and the harness
/// started with `env`.
async fn setup(prefix: &str, env: &[(&str, String)]) -> (Queue, Vec<ReceivedMessage>, Value, LambdaHarness) {
    let (src, dlq) = queue_with_dlq(prefix, 3, false, 30).await;
    let dlq_arn = dlq.attributes().await.unwrap().arn.unwrap();
    let msgs = dead_letters(&dlq, src.name()).await;
    let records: Vec<Value> = msgs.iter().map(|m| lambda_record(m, &dlq_arn)).collect();
    let lambda = LambdaHarness::start(env!("CARGO_BIN_EXE_dlq-monitor"), "dlq-monitor", env);
    (src, msgs, event(records), lambda)
}

async fn dead_letters(dlq: &Queue, src_name: &str) -> Vec<ReceivedMessage> {
    // three dead-lettered by the processor (with error attributes), one moved by SQS's redrive
    let kinds = [FailureKind::Permanent, FailureKind::Undecodable, FailureKind::Permanent];
    for (i, kind) in kinds.iter().enumerate() {
        let original = ReceivedMessage {
            message_id: format!("orig-{i}"),
            receipt_handle: String::new(),
            body: format!("{{\"order\":{i}}}"),
            attributes: [("tenant".to_string(), sqskit::AttributeValue::string("acme"))].into_iter().collect(),
            system_attributes: [("ApproximateReceiveCount".to_string(), "2".to_string())].into_iter().collect(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        };
        let failure = Failure { kind: *kind, error: format!("bad order {i}"), retry_after: None };
        dlq.send(dead_letter_message(&original, &failure, src_name, false)).await.unwrap();
    }
    dlq.send(OutgoingMessage::new("{\"order\":3}")).await.unwrap();
    receive_exactly(dlq, 4).await
}

#[tokio::test]
async fn dlq_monitor_archives_every_record_and_sends_one_alert() {
    let cap = capture().await;
    let (src, msgs, ev, mut lambda) = setup(
        "monitored",
        &[
            ("ARCHIVE_BUCKET", cap.bucket.clone()),
            ("ARCHIVE_PREFIX", "dead".into()),
            ("ALERT_TOPIC_ARN", cap.topic_arn.clone()),
        ],
    )
    .await;
    let resp = response(lambda.invoke(ev), &lambda.output());
    assert_eq!(resp, json!({"batchItemFailures": []}));

    // one object per message, at <prefix>/<source>/<yyyy>/<mm>/<dd>/<id>.json, with the contents
    for m in &msgs {
        let key = sqskit::dlq::archive_key("dead", src.name(), m);
        assert!(key.starts_with(&format!("dead/{}/", src.name())) && key.ends_with(&format!("/{}.json", m.message_id)));
        let obj =
            cap.s3.get_object().bucket(&cap.bucket).key(&key).send().await.unwrap_or_else(|e| panic!("{key}: {e:?}"));
        let doc: Value = serde_json::from_slice(&obj.body.collect().await.unwrap().into_bytes()).unwrap();
        assert_eq!(doc["body"], m.body);
        assert_eq!(doc["messageId"], m.message_id);
        assert_eq!(doc["sourceQueue"], src.name());
        assert!(doc["sentTimestamp"].is_string());
        if m.attribute_str(dl::ERROR_KIND).is_some() {
            assert_eq!(doc["error"]["kind"], m.attribute_str(dl::ERROR_KIND).unwrap());
            assert_eq!(doc["messageAttributes"]["tenant"]["stringValue"], "acme");
        } else {
            assert!(doc["error"].is_null(), "redriven by SQS: no processor error");
        }
    }
    let listed = cap.s3.list_objects_v2().bucket(&cap.bucket).send().await.unwrap();
    assert_eq!(listed.contents().len(), 4);

    // exactly one alert for the invocation
    let alerts = peek_all(&cap.alerts, Duration::from_secs(3), Duration::from_secs(60)).await;
    assert_eq!(alerts.len(), 1, "one alert per invocation");
    let note: Value = serde_json::from_str(&alerts[0].body).unwrap();
    let text = note["Message"].as_str().unwrap();
    assert!(text.contains("4 message(s)"), "{text}");
    assert!(
        text.contains("permanent: 2") && text.contains("undecodable: 1") && text.contains("max-receives: 1"),
        "{text}"
    );
    assert!(note["Subject"].as_str().unwrap().len() <= 100);
    assert!(!text.contains("{\"order\""), "no bodies unless ALERT_INCLUDE_BODY=true");
    let emf = emf_lines(&lambda.output());
    assert_eq!(emf[0]["Archived"].as_f64(), Some(4.0));
    assert_eq!(emf[0]["AlertSent"].as_f64(), Some(1.0));
}

#[tokio::test]
async fn dlq_monitor_reports_records_whose_archive_failed_and_alerts_nothing() {
    let cap = capture().await;
    let (_src, msgs, ev, mut lambda) = setup(
        "monfail",
        &[("ARCHIVE_BUCKET", unique("no-such-bucket").to_lowercase()), ("ALERT_TOPIC_ARN", cap.topic_arn.clone())],
    )
    .await;
    let resp = response(lambda.invoke(ev), &lambda.output());
    let mut failed = failures(&resp);
    failed.sort();
    let mut want: Vec<String> = msgs.iter().map(|m| m.message_id.clone()).collect();
    want.sort();
    assert_eq!(failed, want, "every record whose archive failed stays in the DLQ");
    assert!(
        peek_all(&cap.alerts, Duration::from_secs(2), Duration::from_secs(60)).await.is_empty(),
        "no alert for nothing archived"
    );
    assert_eq!(emf_lines(&lambda.output())[0]["ArchiveFailures"].as_f64(), Some(4.0));
}

#[tokio::test]
async fn dlq_monitor_succeeds_when_only_the_alert_fails() {
    let cap = capture().await;
    let (_src, _msgs, ev, mut lambda) = setup(
        "monalert",
        &[
            ("ARCHIVE_BUCKET", cap.bucket.clone()),
            ("ALERT_TOPIC_ARN", "arn:aws:sns:us-east-1:000000000000:no-such-topic".into()),
        ],
    )
    .await;
    let resp = response(lambda.invoke(ev), &lambda.output());
    assert_eq!(resp, json!({"batchItemFailures": []}), "archived is the durable part");
    let out = lambda.output();
    assert!(out.contains("alert failed"), "{out}");
    assert_eq!(emf_lines(&out)[0]["AlertFailures"].as_f64(), Some(1.0));
    assert_eq!(cap.s3.list_objects_v2().bucket(&cap.bucket).send().await.unwrap().contents().len(), 4);
}

#[tokio::test]
async fn dlq_monitor_without_bucket_fails_at_start_naming_it() {
    let mut lambda = LambdaHarness::start(env!("CARGO_BIN_EXE_dlq-monitor"), "dlq-monitor", &[]);
    let answer = lambda.invoke(event(vec![]));
    assert!(matches!(answer, Answer::Exited(_) | Answer::InitError(_)), "{answer:?}");
    assert!(lambda.output().contains("ARCHIVE_BUCKET"), "{}", lambda.output());
}
