//! `sqskit dlq drain` as a real process against LocalStack: what it does when a delete is
//! refused, and where it files messages moved by SQS's redrive policy.
use sqskit_test_support as support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use sqskit::{OutgoingMessage, Queue};
use sqskit_test_support::archive::{capture, Capture};
use support::deny::DenyProxy;
use support::proc::sqskit;
use support::*;

fn drain_cmd(dlq: &Queue, cap: &Capture) -> std::process::Command {
    let mut c = sqskit(None);
    c.args(["dlq", "drain", "--queue-url", dlq.url(), "--bucket", &cap.bucket, "--topic-arn", &cap.topic_arn]);
    c.stdin(std::process::Stdio::null());
    c
}

#[tokio::test]
async fn dlq_drain_alerts_on_what_it_archived_when_the_delete_is_denied() {
    let cap = capture().await;
    let dlq = queue("drain-denied").await;
    dlq.send_batch((0..3).map(|i| OutgoingMessage::new(format!("{{\"dead\":{i}}}"))))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    // SQS through a proxy that refuses deletes (a role without sqs:DeleteMessage); S3 and SNS direct
    let upstream = endpoint().trim_start_matches("http://").trim_end_matches('/').to_string();
    let proxy = DenyProxy::start(upstream, &[".DeleteMessageBatch", ".DeleteMessage"]);
    let mut cmd = drain_cmd(&dlq, &cap);
    cmd.env("AWS_ENDPOINT_URL", &proxy.url)
        .env("AWS_ENDPOINT_URL_S3", endpoint())
        .env("AWS_ENDPOINT_URL_SNS", endpoint());
    let out = cmd.output().expect("run sqskit");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(proxy.denied.load(Ordering::SeqCst) >= 1, "the delete was attempted and refused");
    assert_eq!(out.status.code(), Some(1), "a failed delete is an error; stdout {stdout}\nstderr {stderr}");
    assert!(stderr.contains("AccessDenied") || stderr.contains("not authorized"), "the error is reported: {stderr}");
    assert_eq!(cap.keys().await.len(), 3, "archived");
    let alerts = peek_all(&cap.alerts, Duration::from_secs(3), Duration::from_secs(60)).await;
    assert_eq!(alerts.len(), 1, "one alert for what was archived; stderr {stderr}");
    let note: serde_json::Value = serde_json::from_str(&alerts[0].body).unwrap();
    assert!(note["Message"].as_str().unwrap().contains("3 message(s)"), "{note}");
    let (visible, in_flight, _) = depth(&dlq).await;
    assert_eq!(visible + in_flight, 3, "nothing deleted");
}

#[tokio::test]
async fn dlq_drain_files_redriven_messages_under_their_source_queue() {
    let cap = capture().await;
    let (src, dlq) = shared_dlq_with_redriven_message("drain-redriven", "{\"order\":9}").await;
    let out = drain_cmd(&dlq, &cap).output().expect("run sqskit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys = cap.keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with(&format!("dead-letters/{}/", src.name())), "filed under the source queue: {keys:?}");
    assert_eq!(depth(&dlq).await, (0, 0, 0));
}

#[tokio::test]
async fn dlq_replay_sends_archived_records_back_to_their_source_queue_and_a_dry_run_sends_nothing() {
    use sqskit::processor::{dead_letter_message, Failure, FailureKind};
    let cap = capture().await;
    let (src, dlq) = queue_with_dlq("replayed", 3, false, 30).await;
    for i in 0..2 {
        let original = sqskit::ReceivedMessage {
            message_id: format!("orig-{i}"),
            receipt_handle: String::new(),
            body: format!("{{\"order\":{i}}}"),
            attributes: [("tenant".to_string(), sqskit::AttributeValue::string("acme"))].into_iter().collect(),
            system_attributes: Default::default(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        };
        let failure = Failure { kind: FailureKind::Permanent, error: "bad order".into(), retry_after: None };
        dlq.send(dead_letter_message(&original, &failure, src.name(), false)).await.unwrap();
    }
    let out = drain_cmd(&dlq, &cap).output().expect("run sqskit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replay = |extra: &[&str]| {
        let mut c = sqskit(None);
        c.args(["dlq", "replay", "--bucket", &cap.bucket, "--source", src.name(), "--output", "json"]).args(extra);
        let out = c.stdin(std::process::Stdio::null()).output().expect("run sqskit");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let dry = replay(&["--dry-run"]);
    assert_eq!(dry["replayed"].as_array().unwrap().len(), 2, "{dry}");
    assert_eq!(depth(&src).await, (0, 0, 0), "a dry run sends nothing");
    let done = replay(&[]);
    assert_eq!(done["replayed"].as_array().unwrap().len(), 2, "{done}");
    assert!(done["failed"].as_array().unwrap().is_empty(), "{done}");
    let back = drain(&src, Duration::from_secs(1)).await;
    let mut bodies: Vec<&str> = back.iter().map(|m| m.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["{\"order\":0}", "{\"order\":1}"]);
    for m in &back {
        assert_eq!(m.attribute_str("tenant"), Some("acme"), "attributes kept");
        assert!(
            m.attribute_str(sqskit::processor::dead_letter_attributes::ERROR_KIND).is_none(),
            "error attributes dropped"
        );
    }
    assert_eq!(cap.keys().await.len(), 2, "the records stay in the archive");
}
