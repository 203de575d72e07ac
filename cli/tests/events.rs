//! `sqskit poll --envelope` and `--schema` through the real binary, with real producers on
//! LocalStack: an SNS topic (no raw delivery) into `--exec`, S3 notifications into `--http`,
//! schema failures dead-lettered with the keyword and path, and bad flags refused as usage
//! errors.
use sqskit_test_support as support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use sqskit::processor::dead_letter_attributes as dl;
use sqskit::OutgoingMessage;
use support::http::serve;
use support::proc::{spawn, sqskit, tail, temp_dir};
use support::*;

const EXIT_LIMIT: Duration = Duration::from_secs(120);

/// `sqskit poll --until-empty` on `queue` with quick retries, then the extra arguments.
fn poll(queue: &sqskit::Queue, extra: &[&str]) -> std::process::Command {
    let mut cmd = sqskit(None);
    cmd.args(["poll", "--queue-url", queue.url(), "--progress-interval", "0", "--wait-time", "1", "--until-empty"]);
    cmd.args(["--backoff-base", "1", "--backoff-max", "1"]);
    cmd.args(extra);
    cmd
}

fn summary(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary line: {e}: {stdout:?}"))
}

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn exec_with_the_sns_envelope_gets_the_payload_on_stdin_and_the_topic_in_its_environment() {
    let (q, dlq) = queue_with_dlq("cli-ev-sns", 3, false, 30).await;
    let (sns, topic) = producers::sns_topic_into(&q).await;
    producers::publish(&sns, &topic, r#"{"order":1}"#, Some("placed"), &[("kind", "order")]).await;
    wait_visible(&q, 1).await;
    let dir = temp_dir("cli-ev-sns");
    let out = dir.join("seen");
    let handler = dir.join("handler.sh");
    executable(
        &handler,
        &format!(
            "#!/bin/sh\n{{ printf 'stdin=%s\\n' \"$(cat)\"; env | grep -E '^SQSKIT_(ENVELOPE|SNS_|EVENT_TYPE)' | sort; }} >> {}\n",
            out.display()
        ),
    );
    let mut cmd = poll(&q, &["--exec", handler.to_str().unwrap(), "--envelope", "sns"]);
    // never inherited by the command: it describes the message, not the poller
    cmd.env("SQSKIT_EVENT_TYPE", "inherited-from-the-poller");
    let mut p = spawn(cmd);
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    assert_eq!(summary(&p.stdout())["succeeded"], 1);
    let seen = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], r#"stdin={"order":1}"#, "{seen}");
    assert!(lines.contains(&"SQSKIT_ENVELOPE=sns"), "{seen}");
    assert!(lines.contains(&format!("SQSKIT_SNS_TOPIC_ARN={topic}").as_str()), "{seen}");
    assert!(lines.contains(&"SQSKIT_SNS_SUBJECT=placed"), "{seen}");
    assert!(lines.contains(&r#"SQSKIT_SNS_ATTRIBUTES={"kind":"order"}"#), "{seen}");
    assert!(lines.iter().any(|l| l.starts_with("SQSKIT_SNS_MESSAGE_ID=")), "{seen}");
    assert!(!seen.contains("inherited-from-the-poller"), "{seen}");
    assert_eq!(depth(&dlq).await, (0, 0, 0));
}

#[tokio::test]
async fn http_with_the_s3_envelope_posts_each_record_with_bucket_and_key_headers_and_never_the_test_event() {
    let (url, seen) = serve(|_| (200, None));
    let (q, dlq) = queue_with_dlq("cli-ev-s3", 3, false, 30).await;
    let (s3, bucket) = producers::s3_bucket_notifying(&q).await;
    s3.put_object().bucket(&bucket).key("reports/q1 2026.csv").body(b"a,b".to_vec().into()).send().await.unwrap();
    wait_visible(&q, 2).await; // the test event and the object's notification
    let mut p = spawn(poll(&q, &["--http", &url, "--envelope", "s3"]));
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    assert_eq!(summary(&p.stdout())["succeeded"], 2, "the test event is settled as a success");
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "one POST: the object's record, not the test event");
    let r = &requests[0];
    let h = |k: &str| r.headers.get(k).map(String::as_str);
    assert_eq!(h("x-sqskit-envelope"), Some("s3"));
    assert_eq!(h("x-sqskit-s3-bucket"), Some(bucket.as_str()));
    assert_eq!(h("x-sqskit-s3-key"), Some("reports/q1 2026.csv"));
    assert_eq!(h("x-sqskit-event-type"), Some("ObjectCreated:Put"));
    let record: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(record["s3"]["bucket"]["name"], bucket.as_str(), "the body is the record");
    let err = p.stderr();
    assert!(err.contains("s3:TestEvent"), "the test event is logged:\n{}", tail(&err, 20));
    assert_eq!(depth(&dlq).await, (0, 0, 0));
}

#[tokio::test]
async fn schema_failures_are_dead_lettered_with_keyword_and_path_and_the_rest_run() {
    let (q, dlq) = queue_with_dlq("cli-schema", 3, false, 30).await;
    let dir = temp_dir("cli-schema");
    let schema = dir.join("order.json");
    std::fs::write(
        &schema,
        r#"{"type":"object","required":["order"],"properties":{"order":{"type":"integer"},"email":{"type":"string","format":"email","maxLength":12}}}"#,
    )
    .unwrap();
    q.send_batch(
        [
            r#"{"order":1}"#,
            r#"{"order":"secret-7"}"#,
            r#"{"order":2,"email":"someone.private@example.com"}"#,
            "not json",
        ]
        .map(OutgoingMessage::new),
    )
    .await
    .unwrap()
    .into_result()
    .unwrap();
    let ran = dir.join("ran");
    let handler = dir.join("handler.sh");
    executable(&handler, &format!("#!/bin/sh\ncat >> {}; echo >> {}\n", ran.display(), ran.display()));
    let mut p = spawn(poll(&q, &["--exec", handler.to_str().unwrap(), "--schema", schema.to_str().unwrap()]));
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    let s = summary(&p.stdout());
    assert_eq!((s["succeeded"].as_u64(), s["dead_lettered"].as_u64()), (Some(1), Some(3)), "{s}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "{\"order\":1}\n", "only the valid one ran");
    let mut dead: Vec<(String, String)> = drain(&dlq, Duration::from_secs(1))
        .await
        .iter()
        .map(|m| (m.attribute_str(dl::ERROR_KIND).unwrap().into(), m.attribute_str(dl::ERROR).unwrap().into()))
        .collect();
    dead.sort();
    let file = schema.display().to_string();
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert_eq!(dead[0].0, "permanent");
    assert!(dead[0].1.starts_with(&format!("schema {file}: keyword `maxLength` failed at `/email`")), "{}", dead[0].1);
    assert!(dead[1].1.starts_with(&format!("schema {file}: keyword `type` failed at `/order`")), "{}", dead[1].1);
    assert_eq!(
        dead[2],
        ("undecodable".into(), "schema: the payload is not JSON (syntax error at line 1 column 2)".into())
    );
    for (_, error) in &dead {
        assert!(!error.contains("secret") && !error.contains("private"), "{error}");
    }
}

#[test]
fn a_bad_schema_file_or_envelope_is_a_usage_error_naming_the_flag() {
    let dir = temp_dir("cli-schema-bad");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"type": "no-such-type"}"#).unwrap();
    let missing = dir.join("missing.json");
    for (flag, value, says) in [
        ("--schema", bad.to_str().unwrap(), "not a valid JSON Schema"),
        ("--schema", missing.to_str().unwrap(), "cannot read it"),
        ("--envelope", "kafka", "sns, eventbridge, s3, cloudevents"),
    ] {
        let out = sqskit(None)
            .args(["poll", "--queue-url", "http://127.0.0.1:9/queue/q", "--exec", "true", flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag) && err.contains(says), "{flag} {value}: {err}");
    }
}
