//! Large payloads (claim check) against LocalStack S3 + SQS and the Python Amazon SQS Extended
//! Client (`SQSKIT_TEST_PYTHON`, created by `scripts/moto install`).
use sqskit_test_support as support;
use sqskit_test_support::stores;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use sqskit::payload::{ClaimCheck, Pointer, SIZE_ATTRIBUTE};
use sqskit::processor::dead_letter_attributes as dl;
use sqskit::{FailureKind, HandlerError, Message, Outcome, OutgoingMessage, Processor, Queue, QueueContext};
use support::*;

const MIB: usize = 1 << 20;

/// A deterministic body of `n` bytes with multi-byte characters in it.
fn body(n: usize, seed: u32) -> String {
    let mut s = String::with_capacity(n + 32);
    let mut i = 0u64;
    while s.len() < n {
        s.push_str(&format!("{seed}:{i:09} ✓ large payload line\n"));
        i += 1;
    }
    while s.len() > n {
        s.pop();
    }
    s
}

async fn s3() -> aws_sdk_s3::Client {
    sqskit::payload::s3_client(&sdk_config().await)
}

async fn bucket(s3: &aws_sdk_s3::Client) -> String {
    let name = unique("cc").to_lowercase();
    s3.create_bucket().bucket(&name).send().await.expect("create bucket");
    name
}

async fn object_exists(s3: &aws_sdk_s3::Client, p: &Pointer) -> bool {
    s3.head_object().bucket(&p.bucket).key(&p.key).send().await.is_ok()
}

/// A raw processor with `check` that records every body (and the attribute names) it sees.
type Seen = Arc<Mutex<Vec<(String, Vec<String>)>>>;
#[allow(deprecated)] // the processor's own claim check (the queue is its home now)
fn recording(check: ClaimCheck, fail: Option<HandlerError>) -> (Processor<String>, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let p = Processor::raw(move |m: Message<String>| {
        let (s, fail) = (s.clone(), fail.clone());
        async move {
            let mut names: Vec<String> = m.attributes().keys().cloned().collect();
            names.sort();
            s.lock().unwrap().push((m.body, names));
            fail.map_or(Ok(()), Err)
        }
    })
    .with_claim_check(check);
    (p, seen)
}

/// Run the Python Extended Client: `mode` `send FILE...` (one message per file) or
/// `receive N` (prints one JSON line per message: length, sha256, attribute names).
fn python(mode: &str, queue: &Queue, bucket: &str, args: &[String]) -> String {
    let script = r#"
import sys, json, hashlib, boto3
import sqs_extended_client  # patches boto3's SQS clients
mode, url, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
sqs = boto3.client("sqs")
sqs.large_payload_support = bucket
sqs.use_legacy_attribute = False
if mode == "send":
    for path in sys.argv[4:]:
        with open(path, encoding="utf-8") as f:
            sqs.send_message(QueueUrl=url, MessageBody=f.read())
else:
    want, got, empty = int(sys.argv[4]), 0, 0
    while got < want and empty < 10:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                                MessageAttributeNames=["All"], VisibilityTimeout=120)
        msgs = r.get("Messages", [])
        empty = 0 if msgs else empty + 1
        for m in msgs:
            b = m["Body"].encode("utf-8")
            print(json.dumps({"len": len(b), "sha256": hashlib.sha256(b).hexdigest(),
                              "attributes": sorted(m.get("MessageAttributes", {}).keys())}))
            got += 1
"#;
    let mut cmd = std::process::Command::new(stores::python());
    cmd.args(["-c", script, mode, queue.url(), bucket])
        .args(args)
        .envs(aws_env())
        .env("AWS_DEFAULT_REGION", "us-east-1");
    let out = cmd.output().expect("run the Extended Client script (scripts/moto install creates .venv-moto)");
    assert!(out.status.success(), "Extended Client script failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_of_files(paths: &[String]) -> Vec<String> {
    let script = "import sys, hashlib\nfor p in sys.argv[1:]: print(hashlib.sha256(open(p,'rb').read()).hexdigest())";
    let out = std::process::Command::new(stores::python()).args(["-c", script]).args(paths).output().expect("python");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn write_bodies(dir: &Path, bodies: &[&String]) -> Vec<String> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = dir.join(format!("body-{i}.txt"));
            std::fs::write(&p, b.as_bytes()).expect("write body");
            p.display().to_string()
        })
        .collect()
}

#[tokio::test]
async fn python_extended_client_5mib_reaches_the_processor_and_the_lambda_adapter_as_the_real_body() {
    let s3 = s3().await;
    let bucket = bucket(&s3).await;
    let queue = queue("cc-py-in").await;
    let expected = body(5 * MIB, 1);
    let dir = proc::temp_dir("cc-py-in");
    let files = write_bodies(&dir, &[&expected, &expected]);
    python("send", &queue, &bucket, &files);

    let received = receive_exactly(&queue, 2).await;
    for m in &received {
        assert!(
            m.body.starts_with(r#"["software.amazon.payloadoffloading.PayloadS3Pointer""#),
            "a pointer on the wire"
        );
        assert_eq!(m.attribute_str(SIZE_ATTRIBUTE), Some(expected.len().to_string().as_str()));
    }
    let check = ClaimCheck::new(s3.clone(), &bucket);
    let (processor, seen) = recording(check, None);

    // the processor (as the poller runs it)
    let ctx = QueueContext::new(queue.clone(), None);
    let decisions = processor.process_batch(&ctx, vec![received[0].clone()]).await;
    assert_eq!(decisions[0].outcome, Outcome::Succeeded);
    assert_eq!(decisions[0].message.body, received[0].body, "the decision keeps the pointer");

    // the Lambda adapter, with an event made from the received message
    let arn = format!("arn:aws:sqs:us-east-1:000000000000:{}", queue.name());
    let event: SqsEvent =
        serde_json::from_value(serde_json::json!({ "Records": [lambda_record(&received[1], &arn)] })).unwrap();
    let adapter = sqskit::lambda::LambdaAdapter::new(processor, sqs().await).with_context(ctx.clone());
    let (response, summary) = adapter.handle(event).await.expect("handled");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(summary.succeeded, 1);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (b, names) in seen.iter() {
        assert!(b == &expected, "the handler sees the exact bytes (got {} bytes)", b.len());
        assert!(names.is_empty(), "the reserved attribute is hidden: {names:?}");
    }
}

#[tokio::test]
async fn sqskit_sends_5_and_50_mib_that_the_python_extended_client_reads() {
    let s3 = s3().await;
    let bucket = bucket(&s3).await;
    let queue = queue("cc-py-out").await.with_claim_check(ClaimCheck::new(s3.clone(), &bucket));
    let five = body(5 * MIB, 2);
    let fifty = body(50 * MIB, 3);
    let small = "small body ✓".to_string();
    queue.send(OutgoingMessage::new(fifty.clone())).await.expect("send 50 MiB");
    let report = queue
        .send_batch(vec![OutgoingMessage::new(small.clone()), OutgoingMessage::new(five.clone())])
        .await
        .expect("send_batch");
    assert_eq!(report.sent.len(), 2, "{:?}", report.failed);

    let dir = proc::temp_dir("cc-py-out");
    let files = write_bodies(&dir, &[&fifty, &small, &five]);
    let mut expected = sha256_of_files(&files);
    let out = python("receive", &queue, &bucket, &["3".to_string()]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{out}");
    let mut got: Vec<String> = lines.iter().map(|l| l["sha256"].as_str().unwrap().to_string()).collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "Python read the exact bodies");
    assert!(lines.iter().all(|l| l["attributes"].as_array().unwrap().is_empty()), "{out}");
    let lens: Vec<u64> = lines.iter().map(|l| l["len"].as_u64().unwrap()).collect();
    assert!(lens.contains(&(50 * MIB as u64)) && lens.contains(&(5 * MIB as u64)), "{lens:?}");
}

#[tokio::test]
async fn a_pointer_to_a_missing_object_is_dead_lettered_as_the_pointer() {
    let s3 = s3().await;
    let bucket = bucket(&s3).await;
    let (source, dlq) = queue_with_dlq("cc-missing", 5, false, 30).await;
    let check = ClaimCheck::new(s3.clone(), &bucket).with_always(true);
    let source = source.with_claim_check(check.clone());
    source.send(OutgoingMessage::new("gone soon")).await.expect("send");
    let m = receive_exactly(&source, 1).await.remove(0);
    let pointer = sqskit::payload::pointer_of(&m).expect("claim-checked").expect("pointer");
    check.delete(&pointer).await.expect("delete the object");

    let (processor, seen) = recording(check, None);
    let ctx = QueueContext::new(source.clone(), Some(dlq.clone()));
    let decisions = processor.process_batch(&ctx, vec![m.clone()]).await;
    match &decisions[0].outcome {
        Outcome::DeadLetter { failure } => assert_eq!(failure.kind, FailureKind::PayloadMissing),
        other => panic!("expected a dead letter, got {other:?}"),
    }
    assert_eq!(decisions[0].outcome.label(), "payload-missing");
    processor.settle(&ctx, &decisions).await;
    assert!(seen.lock().unwrap().is_empty(), "the handler never ran");
    let dead = receive_exactly(&dlq, 1).await.remove(0);
    assert_eq!(dead.body, m.body, "the DLQ gets the pointer, not a body");
    assert_eq!(dead.attribute_str(SIZE_ATTRIBUTE), Some("9"));
    assert_eq!(dead.attribute_str(dl::ERROR_KIND), Some("payload-missing"));
}

#[tokio::test]
async fn a_pointer_to_a_bucket_that_does_not_exist_is_dead_lettered_too() {
    let s3 = s3().await;
    let (source, dlq) = queue_with_dlq("cc-nobucket", 5, false, 30).await;
    let pointer = Pointer { bucket: unique("no-such-bucket").to_lowercase(), key: "k".into() };
    source
        .send(OutgoingMessage::new(pointer.body()).attribute(SIZE_ATTRIBUTE, sqskit::AttributeValue::number(10)))
        .await
        .expect("send a pointer");
    let m = receive_exactly(&source, 1).await.remove(0);
    let (processor, _) = recording(ClaimCheck::new(s3, "unused"), None);
    let ctx = QueueContext::new(source, Some(dlq.clone()));
    let decisions = processor.process_batch(&ctx, vec![m]).await;
    assert_eq!(decisions[0].outcome.label(), "payload-missing", "{:?}", decisions[0].outcome);
    let dead = receive_exactly(&dlq, 1).await.remove(0);
    assert_eq!(dead.body, pointer.body());
}

#[tokio::test]
async fn s3_unreachable_during_resolution_is_a_retry_and_the_message_stays() {
    let real = s3().await;
    let bucket = bucket(&real).await;
    let (source, dlq) = queue_with_dlq("cc-unreachable", 5, false, 30).await;
    let sender = source.clone().with_claim_check(ClaimCheck::new(real.clone(), &bucket).with_always(true));
    sender.send(OutgoingMessage::new("kept")).await.expect("send");
    let m = receive_exactly(&source, 1).await.remove(0);

    // S3 only on a port that refuses connections (as AWS_ENDPOINT_URL_S3 would point it)
    let port = stores::free_port();
    let dead_s3 = sqskit::payload::s3_client(&sdk_config_for(&format!("http://127.0.0.1:{port}")).await);
    let (processor, seen) = recording(ClaimCheck::new(dead_s3, &bucket), None);
    let ctx = QueueContext::new(source.clone(), Some(dlq.clone()));
    let decisions = processor.process_batch(&ctx, vec![m.clone()]).await;
    match &decisions[0].outcome {
        Outcome::Retry { failure, .. } => {
            assert_eq!(failure.kind, FailureKind::Retryable);
            assert!(failure.error.contains("GetObject"), "{}", failure.error);
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    let report = processor.settle(&ctx, &decisions).await;
    assert_eq!((report.deleted, report.retried), (0, 1));
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(depth(&source).await.1, 1, "still in flight on the source queue, not lost");
    assert_eq!(depth(&dlq).await.0, 0, "not dead-lettered");

    // with S3 back, the same message resolves
    let (processor, seen) = recording(ClaimCheck::new(real, &bucket), None);
    assert_eq!(processor.process_one(&ctx, Arc::new(m)).await, Outcome::Succeeded);
    assert_eq!(seen.lock().unwrap()[0].0, "kept");
}

#[tokio::test]
async fn cleanup_deletes_the_object_only_after_a_confirmed_delete_of_a_handled_message() {
    let s3 = s3().await;
    let bucket = bucket(&s3).await;
    let (source, dlq) = queue_with_dlq("cc-cleanup", 5, false, 30).await;
    let base = ClaimCheck::new(s3.clone(), &bucket).with_always(true);
    let cases = [
        ("cleanup on, success", true, None, false),
        ("cleanup off, success", false, None, true),
        ("cleanup on, retryable failure", true, Some(HandlerError::retryable("later")), true),
        ("cleanup on, dead-lettered", true, Some(HandlerError::permanent("never")), true),
    ];
    for (what, cleanup, fail, stays) in cases {
        let check = base.clone().with_cleanup(cleanup);
        let queue = source.clone().with_claim_check(check.clone());
        queue.send(OutgoingMessage::new(format!("body for {what}"))).await.expect("send");
        let m = receive_exactly(&queue, 1).await.remove(0);
        let pointer = sqskit::payload::pointer_of(&m).unwrap().unwrap();
        let (processor, _) = recording(check, fail);
        let ctx = QueueContext::new(queue.clone(), Some(dlq.clone()));
        let decisions = processor.process_batch(&ctx, vec![m]).await;
        assert!(object_exists(&s3, &pointer).await, "{what}: the object is there before settling");
        processor.settle(&ctx, &decisions).await;
        assert_eq!(object_exists(&s3, &pointer).await, stays, "{what}");
        // make the retried one visible again and drop it, so the next case receives its own
        if let Outcome::Retry { .. } = decisions[0].outcome {
            queue.delete_batch(&[decisions[0].message.receipt_handle.as_str()]).await.unwrap();
        }
    }
}

#[tokio::test]
async fn batches_count_pointers_not_payloads() {
    let s3 = s3().await;
    let bucket = bucket(&s3).await;
    let queue = queue("cc-chunks").await.with_claim_check(ClaimCheck::new(s3.clone(), &bucket).with_always(true));
    let bodies: Vec<String> = (0..25).map(|i| body(300 * 1024, 100 + i)).collect();
    let report = queue.send_batch(bodies.iter().cloned().map(OutgoingMessage::new)).await.expect("send_batch");
    assert_eq!(report.sent.len(), 25, "{:?}", report.failed);
    // 25 pointers fit 10 + 10 + 5; counting 300 KiB payloads would take 9 calls
    assert_eq!(report.calls, 3, "SendMessageBatch calls");

    let (processor, seen) = recording(ClaimCheck::new(s3, &bucket), None);
    let ctx = QueueContext::new(queue.clone(), None);
    let received = receive_exactly(&queue, 25).await;
    let decisions = processor.process_batch(&ctx, received).await;
    assert!(decisions.iter().all(|d| d.outcome == Outcome::Succeeded));
    let mut got: Vec<String> = seen.lock().unwrap().iter().map(|(b, _)| b.clone()).collect();
    got.sort();
    let mut want = bodies;
    want.sort();
    assert!(got == want, "all 25 arrive whole");
}

#[tokio::test]
async fn forwarding_and_resending_keep_pointers_instead_of_offloading_again() {
    let s3 = s3().await;
    let bucket = bucket(&s3).await;
    let check = ClaimCheck::new(s3, &bucket).with_always(true);
    let pointer = Pointer { bucket: bucket.clone(), key: "existing".into() }.body();
    let msg = OutgoingMessage::new(pointer.clone()).attribute(SIZE_ATTRIBUTE, sqskit::AttributeValue::number(3));
    assert!(!check.should_offload(&msg));
    let out = check.offload(msg).await.expect("offload");
    assert_eq!(out.body, pointer, "a message that is already a pointer goes as it is");
}

#[tokio::test]
async fn oversized_without_a_claim_check_is_still_rejected_before_sending() {
    let queue = queue("cc-none").await;
    let err = queue.send(OutgoingMessage::new("x".repeat(MIB + 1))).await.unwrap_err();
    assert!(matches!(err, sqskit::Error::MessageTooLarge { size, limit: MIB, .. } if size == MIB + 1), "{err}");
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn the_dlq_archive_keeps_the_pointer_unless_asked_to_resolve_it() {
    use sqskit::dlq::{DlqMonitor, MonitorConfig};
    let s3 = s3().await;
    let payloads = bucket(&s3).await;
    let archive = bucket(&s3).await;
    let queue = queue("cc-archive").await.with_claim_check(ClaimCheck::new(s3.clone(), &payloads).with_always(true));
    let real = body(2 * MIB, 9);
    queue.send(OutgoingMessage::new(real.clone())).await.expect("send");
    let m = receive_exactly(&queue, 1).await.remove(0);
    let sdk = sdk_config().await;
    for (resolve, prefix) in [(false, "as-received"), (true, "resolved")] {
        let monitor =
            DlqMonitor::new(&sdk, MonitorConfig::new(&archive).with_prefix(prefix).with_resolve_payloads(resolve));
        let report = monitor.archive(std::slice::from_ref(&m), "cc-archive-dlq", Some("source")).await;
        assert_eq!(report.archived.len(), 1, "{:?}", report.failed);
        let got = s3.get_object().bucket(&archive).key(&report.archived[0].key).send().await.unwrap();
        let bytes = got.body.collect().await.unwrap().into_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        if resolve {
            assert!(doc["body"].as_str() == Some(real.as_str()), "the archive holds the real body");
            assert!(doc["messageAttributes"].get(SIZE_ATTRIBUTE).is_none());
            assert_eq!(doc["claimCheck"]["s3BucketName"], payloads.as_str());
        } else {
            assert_eq!(doc["body"].as_str(), Some(m.body.as_str()), "the pointer by default");
            assert!(doc["messageAttributes"].get(SIZE_ATTRIBUTE).is_some());
        }
    }
}

#[tokio::test]
async fn a_processor_resolves_pointers_with_the_claim_check_of_its_queue_its_one_home() {
    let s3 = s3().await;
    let bucket = bucket(&s3).await;
    let queue = queue("cc-home").await.with_claim_check(ClaimCheck::new(s3.clone(), &bucket).with_always(true));
    queue.send(OutgoingMessage::new("resolved through the queue")).await.expect("send");
    let m = receive_exactly(&queue, 1).await.remove(0);
    assert!(sqskit::payload::pointer_of(&m).is_some(), "a pointer on the wire");
    let seen: Seen = Arc::default();
    let s = seen.clone();
    // no claim check on the processor: the context's queue has it
    let processor = Processor::raw(move |m: Message<String>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push((m.body, Vec::new()));
            Ok::<_, HandlerError>(())
        }
    });
    let ctx = QueueContext::new(queue.clone(), None);
    let decisions = processor.process_batch(&ctx, vec![m]).await;
    assert_eq!(decisions[0].outcome, Outcome::Succeeded);
    assert_eq!(seen.lock().unwrap()[0].0, "resolved through the queue");
    // and without it, the handler never gets the pointer as its body: undecodable
    let plain = QueueContext::new(Queue::new(queue.client().clone(), queue.url()), None);
    queue.send(OutgoingMessage::new("not resolved")).await.expect("send");
    let m = receive_exactly(&queue, 1).await.remove(0);
    let decisions = processor.process_batch(&plain, vec![m]).await;
    match &decisions[0].outcome {
        Outcome::Retry { failure, .. } => assert_eq!(failure.kind, FailureKind::Undecodable),
        other => panic!("expected a retry (no DLQ known), got {other:?}"),
    }
    assert_eq!(seen.lock().unwrap().len(), 1, "the handler ran once, for the resolved one");
}
