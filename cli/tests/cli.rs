//! The operator CLI as real processes against LocalStack.
use sqskit_test_support as support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use sqskit::processor::{dead_letter_attributes as dl, dead_letter_message, Failure, FailureKind};
use sqskit::{AttributeValue, OutgoingMessage, Queue, ReceivedMessage};
use support::proc::{run, spawn, sqskit, temp_dir, wait_until};
use support::*;

#[tokio::test]
async fn send_jsonl_of_10000_lines_reports_invalid_lines_and_sends_the_rest() {
    let q = queue("cli-send").await;
    let dir = temp_dir("jsonl");
    let file = dir.join("in.jsonl");
    let mut text = String::new();
    for i in 1..=10_000 {
        let line = match i {
            100 => r#"{"body": 5}"#.to_string(),
            5000 => "{broken json".to_string(),
            9999 => r#"{"body":"late","delay":901}"#.to_string(),
            n if n % 2 == 0 => format!(r#"{{"body":"order {n}","attributes":{{"kind":"order"}}}}"#),
            n => format!("plain line {n}"),
        };
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(&file, text).unwrap();
    let (code, out, err) =
        run(&["send", "--queue-url", q.url(), "--jsonl", file.to_str().unwrap(), "--output", "json"]);
    assert_eq!(code, 1, "some lines failed; stderr: {err}");
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["sent"], 9997);
    let failed: Vec<u64> = summary["failed"].as_array().unwrap().iter().map(|f| f["line"].as_u64().unwrap()).collect();
    assert_eq!(failed, [100, 5000, 9999]);
    let reasons: Vec<&str> =
        summary["failed"].as_array().unwrap().iter().map(|f| f["reason"].as_str().unwrap()).collect();
    assert!(
        reasons[0].contains("body") && reasons[1].contains("invalid JSON") && reasons[2].contains("delay_seconds"),
        "{reasons:?}"
    );
    assert!(err.contains("3 of 10000"), "one clear line: {err}");
    assert_eq!(depth(&q).await.0, 9997);
}

#[tokio::test]
async fn peek_leaves_the_queue_unchanged() {
    let q = queue("cli-peek").await;
    q.send_batch((0..5).map(|i| {
        OutgoingMessage::new(format!("peek me {i} {}", "x".repeat(300)))
            .attribute("tenant", AttributeValue::string("acme"))
    }))
    .await
    .unwrap();
    let (code, out, err) = run(&["peek", "--queue-url", q.url(), "-n", "10", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r["attributes"]["tenant"] == "acme"));
    assert!(rows.iter().all(|r| r["body"].as_str().unwrap().chars().count() <= 201), "bodies truncated unless --full");
    assert_eq!(depth(&q).await, (5, 0, 0), "all five visible again at once");
    let (code, out, _) = run(&["peek", "--queue-url", q.url(), "-n", "1", "--full"]);
    assert_eq!(code, 0);
    assert!(out.contains(&"x".repeat(300)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_of_500_survives_an_interruption_and_a_rerun() {
    let (src, dlq) = queue_with_dlq("cli-redrive", 3, false, 30).await;
    let letters: Vec<OutgoingMessage> = (0..500)
        .map(|i| {
            let original = ReceivedMessage {
                message_id: format!("o{i}"),
                receipt_handle: String::new(),
                body: format!("job {i}"),
                attributes: [("tenant".to_string(), AttributeValue::string("acme"))].into_iter().collect(),
                system_attributes: Default::default(),
                received_at: std::time::Instant::now(),
                queue_url: None,
            };
            dead_letter_message(
                &original,
                &Failure { kind: FailureKind::Permanent, error: "x".into(), retry_after: None },
                src.name(),
                false,
            )
        })
        .collect();
    dlq.send_batch(letters).await.unwrap().into_result().unwrap();
    let p = spawn({
        let mut c = sqskit(None);
        c.args(["redrive", "--dlq-url", dlq.url(), "--rate", "100"]);
        c
    });
    let src2 = src.clone();
    let rt = tokio::runtime::Handle::current();
    wait_until(Duration::from_secs(60), "part of the redrive", || {
        tokio::task::block_in_place(|| rt.block_on(async { depth(&src2).await.0 >= 100 }))
    });
    p.signal("KILL");
    drop(p);
    let moved_before = depth(&src).await.0;
    assert!(moved_before < 500, "interrupted half way ({moved_before} moved)");
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let back = drain(&src, Duration::from_secs(1)).await;
    let bodies: HashSet<&str> = back.iter().map(|m| m.body.as_str()).collect();
    let want: HashSet<String> = (0..500).map(|i| format!("job {i}")).collect();
    assert_eq!(
        bodies,
        want.iter().map(String::as_str).collect(),
        "every message back in the source (duplicates allowed)"
    );
    assert!(back.len() >= 500 && back.len() <= 510, "at most a batch of duplicates: {}", back.len());
    assert!(back
        .iter()
        .all(|m| m.attribute_str("tenant") == Some("acme") && m.attribute_str(dl::ERROR_KIND).is_none()));
    assert_eq!(depth(&dlq).await, (0, 0, 0));
}

#[tokio::test]
async fn bad_arguments_exit_2_with_a_clear_message() {
    let (code, _, err) = run(&["send", "--body", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--queue-url"), "{err}");
    let (code, _, err) = run(&["poll", "--queue-url", "http://h/q", "--exec", "true", "--concurrency", "many"]);
    assert_eq!(code, 2);
    assert!(err.contains("concurrency") && err.contains("many"), "{err}");
    let (code, _, err) = run(&["poll", "--queue-url", "http://h/q=zero", "--exec", "true"]);
    assert_eq!(code, 2);
    assert!(err.contains("weight"), "{err}");
    let (code, _, _) = run(&["frobnicate"]);
    assert_eq!(code, 2);
}

#[tokio::test]
async fn a_missing_queue_exits_1_naming_it() {
    let name = unique("no-such-queue");
    let url = format!("{}/queue/us-east-1/000000000000/{name}", endpoint());
    for args in [
        vec!["stats", "--queue-url", &url],
        vec!["peek", "--queue-url", &url],
        vec!["send", "--queue-url", &url, "--body", "x"],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(&name) && err.contains("names no queue"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[tokio::test]
async fn stats_reports_depth_and_the_dlq() {
    let (src, dlq) = queue_with_dlq("cli-stats", 4, false, 30).await;
    src.send_batch((0..3).map(|i| OutgoingMessage::new(format!("{i}")))).await.unwrap();
    dlq.send(OutgoingMessage::new("dead")).await.unwrap();
    let (code, out, err) = run(&["stats", "--queue-url", src.url(), "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rows[0]["visible"], 3);
    assert_eq!(rows[0]["dlq"], dlq.name());
    assert_eq!(rows[0]["dlq_visible"], 1);
    assert_eq!(rows[0]["max_receive_count"], 4);
}

#[tokio::test]
async fn dlq_list_counts_error_kinds_and_drain_archives_with_one_alert() {
    let (src, dlq) = queue_with_dlq("cli-dlq", 3, false, 30).await;
    for (i, kind) in [FailureKind::Permanent, FailureKind::Undecodable, FailureKind::Permanent].iter().enumerate() {
        let m = ReceivedMessage {
            message_id: format!("m{i}"),
            receipt_handle: String::new(),
            body: format!("b{i}"),
            attributes: Default::default(),
            system_attributes: Default::default(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        };
        dlq.send(dead_letter_message(
            &m,
            &Failure { kind: *kind, error: "e".into(), retry_after: None },
            src.name(),
            false,
        ))
        .await
        .unwrap();
    }
    let (code, out, err) = run(&["dlq", "list", "--dlq-url", dlq.url(), "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["kinds"]["permanent"], 2);
    assert_eq!(v["kinds"]["undecodable"], 1);
    assert_eq!(v["sources"][src.name()], 3);
    assert_eq!(depth(&dlq).await.0, 3, "list leaves them in place");

    let sdk = sdk_config().await;
    let s3 = sqskit::dlq::s3_client(&sdk);
    let bucket = unique("drain").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let sns = aws_sdk_sns::Client::new(&sdk);
    let topic = sns.create_topic().name(unique("drain-alerts")).send().await.unwrap().topic_arn().unwrap().to_string();
    let capture = queue("drain-capture").await;
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(capture.attributes().await.unwrap().arn.unwrap())
        .send()
        .await
        .unwrap();
    let (code, out, err) = run(&[
        "dlq",
        "drain",
        "--queue-url",
        dlq.url(),
        "--bucket",
        &bucket,
        "--topic-arn",
        &topic,
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["archived"].as_u64(), v["alert_sent"].as_bool()), (Some(3), Some(true)));
    assert_eq!(s3.list_objects_v2().bucket(&bucket).send().await.unwrap().contents().len(), 3);
    assert_eq!(depth(&dlq).await, (0, 0, 0));
    assert_eq!(
        peek_all(&capture, Duration::from_secs(3), Duration::from_secs(60)).await.len(),
        1,
        "one alert for the drain"
    );
}

#[tokio::test]
async fn purge_needs_yes_without_a_terminal() {
    let q: Queue = queue("cli-purge").await;
    q.send_batch((0..3).map(|i| OutgoingMessage::new(format!("{i}")))).await.unwrap();
    let (code, _, err) = run(&["purge", "--queue-url", q.url()]);
    assert_eq!(code, 1);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(depth(&q).await.0, 3);
    let (code, _, err) = run(&["purge", "--queue-url", q.url(), "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(depth(&q).await.0, 0);
}
