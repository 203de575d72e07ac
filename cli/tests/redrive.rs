//! `sqskit redrive` as real processes against LocalStack: message move tasks (start, status,
//! cancel) and the client-side redrive's --filter and --dry-run.
use sqskit_test_support as support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqskit::dlq::{list_move_tasks, MoveTask, RedriveOptions};
use sqskit::processor::{dead_letter_message, Failure, FailureKind};
use sqskit::{OutgoingMessage, Queue, ReceivedMessage};
use support::proc::sqskit;
use support::*;

/// An endpoint nothing listens on: a command that makes any call fails with a transport error.
const NOWHERE: &str = "http://127.0.0.1:1";

fn run_at(endpoint: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let out = sqskit(endpoint).args(args).stdin(std::process::Stdio::null()).output().expect("run sqskit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn run(args: &[&str]) -> (i32, String, String) {
    run_at(None, args)
}

fn json(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A dead letter as the processor writes it: the body, the error attributes, `src` as source.
fn letter(src: &Queue, body: &str, kind: FailureKind) -> OutgoingMessage {
    let original = ReceivedMessage {
        message_id: format!("orig-{body}"),
        receipt_handle: String::new(),
        body: body.to_string(),
        attributes: Default::default(),
        system_attributes: Default::default(),
        received_at: Instant::now(),
        queue_url: None,
    };
    dead_letter_message(&original, &Failure { kind, error: "e".into(), retry_after: None }, src.name(), false)
}

/// A source queue (`maxReceiveCount` 1) and its DLQ holding `n` messages that SQS's redrive
/// policy moved there (so they carry `DeadLetterQueueSourceArn`): each is received once with
/// visibility 0, and the next receive moves it.
async fn dead_lettered(prefix: &str, n: usize) -> (Queue, Queue) {
    let (src, dlq) = queue_with_dlq(prefix, 1, false, 30).await;
    src.send_batch((0..n).map(|i| OutgoingMessage::new(format!("bounce {i}")))).await.unwrap().into_result().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while depth(&dlq).await.0 < n as u64 {
        assert!(Instant::now() < deadline, "SQS moved the messages to the DLQ");
        src.receive(10, Duration::from_secs(1), Some(Duration::ZERO)).await.unwrap();
    }
    assert_eq!(depth(&src).await, (0, 0, 0));
    (src, dlq)
}

/// Wait until the DLQ's newest move task is no longer running (or cancelling); returns it.
async fn wait_settled(dlq: &Queue, limit: Duration) -> MoveTask {
    let deadline = Instant::now() + limit;
    loop {
        let tasks = list_move_tasks(dlq, 1).await.unwrap();
        if let Some(t) = tasks.first().filter(|t| !matches!(t.status.as_str(), "RUNNING" | "CANCELLING")) {
            return t.clone();
        }
        assert!(Instant::now() < deadline, "the move task finished within {limit:?}: {tasks:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn arn(q: &Queue) -> String {
    q.attributes().await.unwrap().arn.unwrap()
}

fn bodies(msgs: &[ReceivedMessage]) -> HashSet<String> {
    msgs.iter().map(|m| m.body.clone()).collect()
}

#[tokio::test]
async fn a_move_task_returns_dead_letters_to_their_source_and_status_shows_it_completed() {
    let (src, dlq) = dead_lettered("mt-back", 5).await;
    let (code, out, err) =
        run(&["redrive", "--dlq-url", dlq.url(), "--use-move-task", "--rate", "10", "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report = json(&out);
    let handle = report["move_task"]["task_handle"].as_str().unwrap().to_string();
    assert!(!handle.is_empty());
    assert_eq!(report["move_task"]["to_move"], 5, "{report}");
    assert!(report["client_side"].is_null(), "nothing to move here: {report}");
    let task = wait_settled(&dlq, Duration::from_secs(60)).await;
    assert_eq!(task.status, "COMPLETED", "{task:?}");
    let back = drain(&src, Duration::from_secs(1)).await;
    assert_eq!(bodies(&back), (0..5).map(|i| format!("bounce {i}")).collect(), "all five back in the source");
    assert_eq!(depth(&dlq).await, (0, 0, 0));

    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--status", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let tasks = json(&out);
    let t = &tasks[0];
    assert_eq!(t["status"], "COMPLETED");
    assert_eq!((t["moved"].as_u64(), t["to_move"].as_u64()), (Some(5), Some(5)), "{t}");
    assert_eq!(t["max_per_second"], 10);
    assert_eq!(t["source_arn"], arn(&dlq).await.as_str());
    assert!(t["destination_arn"].is_null(), "back to the sources: {t}");
    assert!(t["started"].as_str().is_some_and(|s| s.ends_with('Z')), "RFC 3339 UTC: {t}");
    let (code, out, _) = run(&["redrive", "--dlq-url", dlq.url(), "--status"]);
    assert_eq!(code, 0);
    assert!(out.contains("COMPLETED") && out.contains("moved 5/5") && out.contains("(source queues)"), "{out}");
}

#[tokio::test]
async fn a_move_task_with_to_moves_every_kind_of_dead_letter_to_that_queue() {
    // two that SQS moved, four sent to the DLQ directly, two that sqskit dead-lettered
    let (src, dlq) = dead_lettered("mt-to", 2).await;
    let other = queue("mt-to-other").await;
    dlq.send_batch((0..4).map(|i| OutgoingMessage::new(format!("elsewhere {i}"))))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    dlq.send_batch((0..2).map(|i| letter(&src, &format!("sqskit {i}"), FailureKind::Permanent)))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let (code, out, err) =
        run(&["redrive", "--dlq-url", dlq.url(), "--use-move-task", "--to", other.url(), "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("would move the 8 message(s) of {} to {}", dlq.name(), other.name())), "{out}");
    assert_eq!(depth(&dlq).await, (8, 0, 0), "a dry run looks at nothing and moves nothing");
    assert!(list_move_tasks(&dlq, 10).await.unwrap().is_empty());
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--use-move-task", "--to", other.url()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("started message move task") && out.contains("--status"), "{out}");
    let task = wait_settled(&dlq, Duration::from_secs(60)).await;
    assert_eq!(task.status, "COMPLETED", "{task:?}");
    assert_eq!(task.destination_arn.as_deref(), Some(arn(&other).await.as_str()), "--to is the DestinationArn");
    assert_eq!(task.max_per_second, None, "no --rate: SQS's pace");
    let moved = drain(&other, Duration::from_secs(1)).await;
    let mut want: HashSet<String> = (0..4).map(|i| format!("elsewhere {i}")).collect();
    want.extend((0..2).map(|i| format!("bounce {i}")));
    want.extend((0..2).map(|i| format!("sqskit {i}")));
    assert_eq!((moved.len(), bodies(&moved)), (8, want), "every kind, once");
    assert_eq!(depth(&dlq).await, (0, 0, 0));
    assert_eq!(depth(&src).await, (0, 0, 0), "nothing went to the source");
}

#[tokio::test]
async fn a_move_task_rate_must_be_a_whole_number_up_to_500_checked_before_any_call() {
    let (_src, dlq) = queue_with_dlq("mt-rate", 3, false, 30).await;
    dlq.send(OutgoingMessage::new("stay")).await.unwrap();
    for (rate, why) in [("501", "500"), ("2.5", "whole number"), ("0", "1..=500"), ("0.4", "whole number")] {
        for endpoint in [None, Some(NOWHERE)] {
            let (code, out, err) =
                run_at(endpoint, &["redrive", "--dlq-url", dlq.url(), "--use-move-task", "--rate", rate]);
            assert_eq!(code, 2, "--rate {rate} is a usage error: {out}{err}");
            assert!(err.contains("--rate") && err.contains(why) && err.contains("500"), "--rate {rate}: {err}");
            assert!(!err.contains("transport") && !err.contains("dispatch"), "no call was made: {err}");
            assert!(err.contains("Usage: sqskit redrive"), "the subcommand's usage: {err}");
        }
    }
    assert!(list_move_tasks(&dlq, 10).await.unwrap().is_empty(), "no task was started");
    assert_eq!(depth(&dlq).await.0, 1);
    // the client-side redrive keeps fractional rates
    let (code, _, err) = run_at(Some(NOWHERE), &["redrive", "--dlq-url", dlq.url(), "--rate", "0.5"]);
    assert_eq!(code, 1, "accepted, then fails on the first call: {err}");
}

#[tokio::test]
async fn status_lists_the_running_task_and_cancel_stops_it() {
    let (_src, dlq) = queue_with_dlq("mt-cancel", 3, false, 30).await;
    let other = queue("mt-cancel-to").await;
    dlq.send_batch((0..10).map(|i| OutgoingMessage::new(format!("slow {i}")))).await.unwrap().into_result().unwrap();
    dlq.send_batch((10..20).map(|i| OutgoingMessage::new(format!("slow {i}")))).await.unwrap().into_result().unwrap();
    let (code, out, err) = run(&[
        "redrive",
        "--dlq-url",
        dlq.url(),
        "--use-move-task",
        "--rate",
        "1",
        "--to",
        other.url(),
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let handle = json(&out)["task_handle"].as_str().unwrap().to_string();

    // at 1 message per second, 20 messages keep the task running for ~20 s
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--status", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let t = &json(&out)[0];
    assert_eq!(t["status"], "RUNNING", "{t}");
    assert_eq!(t["task_handle"], handle.as_str());
    assert_eq!(t["to_move"], 20);
    assert_eq!(t["max_per_second"], 1);
    assert_eq!(t["destination_arn"], arn(&other).await.as_str());
    assert!(t["moved"].as_u64().unwrap() < 20, "{t}");
    let (code, out, _) = run(&["redrive", "--dlq-url", dlq.url(), "--status"]);
    assert_eq!(code, 0);
    assert!(out.contains("RUNNING") && out.contains(&format!("task handle: {handle}")), "{out}");
    assert!(out.contains(&format!("to {}", other.name())) && out.contains("/20"), "{out}");

    // a redrive with a move task refuses to start while one runs (it would take the task's messages)
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--use-move-task", "--to", other.url()]);
    assert_eq!(code, 1, "SQS refuses a second task: {out}{err}");
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--use-move-task"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("a message move task is running on {} (task handle {handle})", dlq.name())), "{err}");
    assert!(out.is_empty(), "nothing looked at, nothing moved: {out}");

    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--cancel", "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let cancelled = json(&out);
    assert_eq!(cancelled["task_handle"], handle.as_str(), "the running task, found by the list");
    let task = wait_settled(&dlq, Duration::from_secs(30)).await;
    assert_eq!(task.status, "CANCELLED", "{task:?}");
    assert!(task.moved < 20, "stopped before the end: {task:?}");
    tokio::time::sleep(Duration::from_secs(3)).await; // nothing moves after the cancel
    let (left, moved) = (depth(&dlq).await, depth(&other).await);
    assert_eq!(left.0 + moved.0, 20, "every message is in one queue or the other: {left:?} {moved:?}");
    assert!(left.0 > 0, "the rest stay in the DLQ");
    assert_eq!(moved.0, task.moved, "the task's count matches the target queue");

    // nothing left to cancel: a clear error, with or without the handle
    let (code, _, err) = run(&["redrive", "--dlq-url", dlq.url(), "--cancel"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("no message move task is running on {}", dlq.name())), "{err}");
    assert!(err.contains("CANCELLED"), "names the most recent task's status: {err}");
    let (code, _, err) = run(&["redrive", "--dlq-url", dlq.url(), "--cancel", &handle]);
    assert_eq!(code, 1);
    assert!(err.contains("with handle") && err.contains(dlq.name()), "{err}");
}

#[tokio::test]
async fn status_says_when_there_are_no_tasks_and_shows_why_one_failed() {
    let (src, dlq) = queue_with_dlq("mt-failed", 3, false, 30).await;
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no message move tasks"), "{out}");
    let (code, out, _) = run(&["redrive", "--dlq-url", dlq.url(), "--status", "--output", "json"]);
    assert_eq!((code, json(&out)), (0, serde_json::json!([])));
    let (code, _, err) = run(&["redrive", "--dlq-url", dlq.url(), "--cancel"]);
    assert_eq!(code, 1);
    assert!(err.contains("no message move task is running") && err.contains("it has no move tasks"), "{err}");

    // Sent to the DLQ directly, this message has no DeadLetterQueueSourceArn: a task without a
    // destination cannot return it (LocalStack fails the task; its reason is its own). Started
    // here as SQS's API starts it: `sqskit redrive --use-move-task` does not start one on it.
    dlq.send(OutgoingMessage::new("no way back")).await.unwrap();
    sqskit::dlq::start_move_task(&dlq, None, None).await.unwrap();
    let task = wait_settled(&dlq, Duration::from_secs(30)).await;
    assert_eq!(task.status, "FAILED", "{task:?}");
    let reason = task.failure_reason.clone().expect("a failure reason");
    let (code, out, _) = run(&["redrive", "--dlq-url", dlq.url(), "--status"]);
    assert_eq!(code, 0);
    assert!(out.contains("FAILED") && out.contains(&format!("failure: {reason}")), "{out}");
    // LocalStack received it before failing: it is in flight for the DLQ's visibility timeout
    let d = depth(&dlq).await;
    assert_eq!(d.0 + d.1, 1, "the message stays in the DLQ: {d:?}");

    // the CLI sends it to the DLQ's only source queue itself, as `sqskit redrive` does
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--use-move-task"]);
    assert_eq!(code, 0, "{out}{err}");
    let line = format!("1 message(s) with no recorded source: moved here to {}, the DLQ's only source", src.name());
    assert!(out.contains(&line), "{out}");
    assert!(out.contains("moved 1 message(s) here") && !out.contains("started message move task"), "{out}");
    assert_eq!(bodies(&drain(&src, Duration::from_secs(1)).await), HashSet::from(["no way back".to_string()]));
    assert_eq!(depth(&dlq).await, (0, 0, 0));
    assert_eq!(list_move_tasks(&dlq, 10).await.unwrap().len(), 1, "no second task");
}

/// A DLQ shared by two source queues `a` and `b` (`maxReceiveCount` 1) holding both kinds of
/// dead letters, in this order: 3 that a real `sqskit poll` on `a` dead-lettered itself (its
/// handler fails permanently, exit 65; each has its own attribute `tenant`), 7 that SQS's
/// redrive policy moved there (4 from `a`, 3 from `b`: they carry `DeadLetterQueueSourceArn`),
/// and 3 for `b` written as the processor writes them (with an `AWSTraceHeader`). sqskit's own
/// carry no `DeadLetterQueueSourceArn`. Bodies say which is which.
struct Mixed {
    a: Queue,
    b: Queue,
    dlq: Queue,
}

const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

impl Mixed {
    fn bodies_a() -> Vec<String> {
        let mut v: Vec<String> = (0..4).map(|i| format!("sqs-moved a{i}")).collect();
        v.extend((0..3).map(|i| format!("sqskit a{i}")));
        v.sort();
        v
    }
    fn bodies_b() -> Vec<String> {
        let mut v: Vec<String> = (0..3).map(|i| format!("sqs-moved b{i}")).collect();
        v.extend((0..3).map(|i| format!("sqskit b{i}")));
        v.sort();
        v
    }
}

async fn mixed_dlq(prefix: &str) -> Mixed {
    let client = sqs().await;
    let base = unique(prefix);
    let dlq = create_queue(&client, &format!("{base}-dlq"), &[]).await;
    let policy = serde_json::json!({"deadLetterTargetArn": arn(&dlq).await, "maxReceiveCount": 1}).to_string();
    let attrs = [
        (aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy, policy),
        (aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "30".to_string()),
    ];
    let a = create_queue(&client, &format!("{base}-a"), &attrs).await;
    let b = create_queue(&client, &format!("{base}-b"), &attrs).await;
    // sqskit dead-letters these itself: a real poller whose handler fails permanently
    a.send_batch((0..3).map(|i| {
        let mut m = OutgoingMessage::new(format!("sqskit a{i}"));
        m.attributes.insert("tenant".into(), sqskit::AttributeValue::string(format!("t{i}")));
        m
    }))
    .await
    .unwrap()
    .into_result()
    .unwrap();
    let out = sqskit(None)
        .args(["poll", "--queue-url", a.url(), "--exec", "sh -c 'exit 65'", "--until-empty", "--wait-time", "1"])
        .args(["--progress-interval", "0"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run sqskit poll");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{summary}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&summary)["dead_lettered"], 3, "{summary}");
    // The poller's last long poll (--wait-time 1) may still be open in LocalStack after it exits
    // (issue 21, item 3): let it end before anything else is sent to `a`, or it takes them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SQS moves these: received once (visibility 0), the next receive moves each to the DLQ
    a.send_batch((0..4).map(|i| OutgoingMessage::new(format!("sqs-moved a{i}")))).await.unwrap().into_result().unwrap();
    b.send_batch((0..3).map(|i| OutgoingMessage::new(format!("sqs-moved b{i}")))).await.unwrap().into_result().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while depth(&dlq).await.0 < 10 {
        assert!(Instant::now() < deadline, "SQS moved the messages to the DLQ");
        for q in [&a, &b] {
            q.receive(10, Duration::from_secs(1), Some(Duration::ZERO)).await.unwrap();
        }
    }
    assert_eq!((depth(&a).await, depth(&b).await), ((0, 0, 0), (0, 0, 0)));
    // and these as the processor writes them, for b, with a trace header
    let letters = (0..3).map(|i| {
        let mut m = letter(&b, &format!("sqskit b{i}"), FailureKind::Permanent);
        m.trace_header = Some(TRACE.to_string());
        m
    });
    dlq.send_batch(letters).await.unwrap().into_result().unwrap();
    assert_eq!(depth(&dlq).await, (13, 0, 0));
    Mixed { a, b, dlq }
}

fn sorted_bodies(msgs: &[ReceivedMessage]) -> Vec<String> {
    let mut v: Vec<String> = msgs.iter().map(|m| m.body.clone()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_move_task_redrive_returns_both_kinds_of_dead_letters_to_their_sources() {
    // Before the fix: the task failed at the first message sqskit had dead-lettered ("FAILED
    // moved 0/13", exit 0, all 13 left in the DLQ; with SQS's own first: "FAILED moved 7/13").
    let m = mixed_dlq("mt-mixed").await;

    // a dry run says the plan, by kind, and moves nothing
    let (code, out, err) = run(&["redrive", "--dlq-url", m.dlq.url(), "--use-move-task", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("13 message(s) in {}", m.dlq.name())), "{out}");
    assert!(
        out.contains("7 message(s) moved to the DLQ by SQS (DeadLetterQueueSourceArn): a message move task"),
        "{out}"
    );
    assert!(out.contains("6 message(s) dead-lettered by sqskit (sqskit-source-queue): moved here"), "{out}");
    assert!(out.contains("dry run: nothing moved, no move task started"), "{out}");
    assert!(!out.contains("sqs-moved") && !out.contains("sqskit a"), "no bodies: {out}");
    let (code, out, err) =
        run(&["redrive", "--dlq-url", m.dlq.url(), "--use-move-task", "--dry-run", "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let plan = &json(&out)["plan"];
    assert_eq!((plan["moved_by_sqs"].as_u64(), plan["dead_lettered_by_sqskit"].as_u64()), (Some(7), Some(6)), "{out}");
    assert_eq!((plan["no_source"].as_u64(), plan["use_move_task"].as_bool()), (Some(0), Some(true)), "{out}");
    assert_eq!(depth(&m.dlq).await, (13, 0, 0), "the dry run moved nothing and left everything visible");
    assert_eq!((depth(&m.a).await, depth(&m.b).await), ((0, 0, 0), (0, 0, 0)));
    assert!(list_move_tasks(&m.dlq, 10).await.unwrap().is_empty(), "no task was started");

    let (code, out, err) = run(&["redrive", "--dlq-url", m.dlq.url(), "--use-move-task", "--output", "json"]);
    let task = wait_settled(&m.dlq, Duration::from_secs(60)).await;
    let (back_a, back_b) = (drain(&m.a, Duration::from_secs(1)).await, drain(&m.b, Duration::from_secs(1)).await);
    let left = depth(&m.dlq).await;
    eprintln!(
        "exit {code}; task {} moved {}/{:?} ({:?}); back in a: {}, in b: {}; left in the DLQ: {left:?}",
        task.status,
        task.moved,
        task.to_move,
        task.failure_reason,
        back_a.len(),
        back_b.len()
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(task.status, "COMPLETED", "{task:?}");
    assert_eq!((task.moved, task.to_move), (7, Some(7)), "the task moved what SQS moved: {task:?}");
    assert_eq!(sorted_bodies(&back_a), Mixed::bodies_a(), "each back in its source once, none lost");
    assert_eq!(sorted_bodies(&back_b), Mixed::bodies_b(), "each back in its source once, none lost");
    assert_eq!(left, (0, 0, 0), "nothing left in the DLQ");

    let report = json(&out);
    assert_eq!(&report["plan"], plan, "the plan it followed: {report}");
    assert_eq!(report["client_side"]["moved"], 6, "{report}");
    assert_eq!(report["client_side"]["skipped"], 7, "SQS's own left for the task: {report}");
    assert_eq!(report["client_side"]["failed"], serde_json::json!([]), "{report}");
    assert_eq!(report["move_task"]["to_move"], 7, "{report}");
    assert!(report["move_task"]["task_handle"].as_str().is_some_and(|h| !h.is_empty()), "{report}");
    assert_eq!(report["left"], serde_json::json!([]), "{report}");
    // moved here as `sqskit redrive` moves them: own attributes and trace kept, sqskit's dropped
    for msg in back_a.iter().filter(|x| x.body.starts_with("sqskit")) {
        let i = &msg.body["sqskit a".len()..];
        assert_eq!(msg.attribute_str("tenant"), Some(format!("t{i}").as_str()), "{:?}", msg.attributes);
        assert!(msg.attributes.keys().all(|k| !k.starts_with("sqskit-")), "{:?}", msg.attributes);
    }
    for msg in back_b.iter().filter(|x| x.body.starts_with("sqskit")) {
        assert!(msg.attributes.is_empty(), "{:?}", msg.attributes);
        assert_eq!(msg.system_attributes.get("AWSTraceHeader").map(String::as_str), Some(TRACE));
    }
}

#[tokio::test]
async fn a_move_task_redrive_leaves_and_names_a_message_with_no_source_and_exits_1() {
    // A DLQ shared by two sources: a message sent to it directly says nowhere where it belongs.
    let (a, dlq) = shared_dlq_with_redriven_message("mt-nosource", "sqs-moved").await;
    let b = sqskit::Queue::by_name(sqs().await, &format!("{}-b", a.name().strip_suffix("-a").unwrap()), None)
        .await
        .unwrap();
    dlq.send(letter(&b, "sqskit", FailureKind::Permanent)).await.unwrap();
    let stray = dlq.send(OutgoingMessage::new("stray")).await.unwrap().message_id;

    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--use-move-task", "--dry-run"]);
    assert_eq!(code, 1, "a dry run that would leave a message behind says so: {out}{err}");
    assert!(out.contains("1 message(s) with no recorded source: left in the DLQ") && out.contains(&stray), "{out}");
    assert!(out.contains("moved here to their source queues (a move task would stop at"), "{out}");
    assert_eq!(depth(&dlq).await, (3, 0, 0));

    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--use-move-task", "--output", "json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("1 message(s) could not be moved (left in the DLQ)"), "{err}");
    let report = json(&out);
    let plan = &report["plan"];
    assert_eq!(
        (plan["moved_by_sqs"].as_u64(), plan["dead_lettered_by_sqskit"].as_u64(), plan["no_source"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(plan["use_move_task"], false, "a task would stop at the stray message: {report}");
    assert_eq!(report["left"], serde_json::json!([stray]), "{report}");
    assert_eq!(report["client_side"]["moved"], 2, "{report}");
    assert!(report["move_task"].is_null(), "{report}");
    assert!(list_move_tasks(&dlq, 10).await.unwrap().is_empty(), "no task was started");
    assert_eq!(bodies(&drain(&a, Duration::from_secs(1)).await), HashSet::from(["sqs-moved".to_string()]));
    assert_eq!(bodies(&drain(&b, Duration::from_secs(1)).await), HashSet::from(["sqskit".to_string()]));
    let rest = drain(&dlq, Duration::from_secs(1)).await;
    assert_eq!(rest.iter().map(|m| m.message_id.as_str()).collect::<Vec<_>>(), [stray.as_str()], "kept, visible");

    // in text: named, and how to move it
    dlq.send(OutgoingMessage::new("stray 2")).await.unwrap();
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--use-move-task"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("left in the DLQ (no recorded source; move them with --to)"), "{out}");
    assert_eq!(depth(&dlq).await, (1, 0, 0));
}

/// The DLQ holds `{"order":{"id":i,"status":...}}` for i in 0..6 (even: failed) and a body that
/// is not JSON.
async fn orders_dlq(prefix: &str) -> (Queue, Queue) {
    let (src, dlq) = queue_with_dlq(prefix, 3, false, 30).await;
    let mut letters: Vec<OutgoingMessage> = (0..6)
        .map(|i| {
            let status = if i % 2 == 0 { "failed" } else { "ok" };
            letter(&src, &format!(r#"{{"order":{{"id":{i},"status":"{status}"}}}}"#), FailureKind::Permanent)
        })
        .collect();
    letters.push(letter(&src, "plain text, not JSON", FailureKind::Undecodable));
    dlq.send_batch(letters).await.unwrap().into_result().unwrap();
    (src, dlq)
}

#[tokio::test]
async fn filter_by_json_pointer_moves_exactly_the_matching_messages() {
    let (src, dlq) = orders_dlq("rd-pointer").await;
    let (code, out, err) =
        run(&["redrive", "--dlq-url", dlq.url(), "--filter", "/order/status=failed", "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report = json(&out);
    assert_eq!((report["moved"].as_u64(), report["skipped"].as_u64()), (Some(3), Some(4)), "{report}");
    assert_eq!(depth(&dlq).await, (4, 0, 0), "the others are in the DLQ and visible again at once");
    let back = drain(&src, Duration::from_secs(1)).await;
    let want: HashSet<String> =
        [0, 2, 4].iter().map(|i| format!(r#"{{"order":{{"id":{i},"status":"failed"}}}}"#)).collect();
    assert_eq!(bodies(&back), want);

    // a JSON literal: the number 5 (not the string "5")
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--filter", "/order/id=5"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("moved 1 message(s)") && out.contains("3 message(s) did not match"), "{out}");
    let back = drain(&src, Duration::from_secs(1)).await;
    assert_eq!(bodies(&back), HashSet::from([r#"{"order":{"id":5,"status":"ok"}}"#.to_string()]));
    let (code, out, _) = run(&["redrive", "--dlq-url", dlq.url(), "--filter", r#"/order/id="1""#, "--output", "json"]);
    assert_eq!((code, json(&out)["moved"].as_u64()), (0, Some(0)), "the string \"1\" is not the number 1");
    assert_eq!(depth(&dlq).await, (3, 0, 0));
    assert_eq!(depth(&src).await.0, 0);
}

#[tokio::test]
async fn filter_by_error_kind_moves_exactly_the_matching_messages() {
    let (src, dlq) = queue_with_dlq("rd-kind", 3, false, 30).await;
    let kinds = [FailureKind::Permanent, FailureKind::Undecodable, FailureKind::Undecodable, FailureKind::Permanent];
    let mut letters: Vec<OutgoingMessage> =
        kinds.iter().enumerate().map(|(i, k)| letter(&src, &format!("{}-{i}", k.as_str()), *k)).collect();
    letters.push(OutgoingMessage::new("moved by SQS, no attributes"));
    dlq.send_batch(letters).await.unwrap().into_result().unwrap();

    let (code, out, err) =
        run(&["redrive", "--dlq-url", dlq.url(), "--filter", "kind=undecodable", "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["moved"], 2);
    assert_eq!(depth(&dlq).await, (3, 0, 0));
    let back = drain(&src, Duration::from_secs(1)).await;
    assert_eq!(bodies(&back), HashSet::from(["undecodable-1".to_string(), "undecodable-2".to_string()]));

    // no error kind: `max-receives`, sent to the DLQ's single redrive source
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--filter", "kind=max-receives"]);
    assert_eq!(code, 0, "{out}{err}");
    let back = drain(&src, Duration::from_secs(1)).await;
    assert_eq!(bodies(&back), HashSet::from(["moved by SQS, no attributes".to_string()]));
    assert_eq!(depth(&dlq).await, (2, 0, 0), "the two permanent ones stay");

    // two filters: both must match
    let (code, out, err) =
        run(&["redrive", "--dlq-url", dlq.url(), "--filter", "kind=permanent", "--filter", "/x=1", "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!((json(&out)["moved"].as_u64(), json(&out)["skipped"].as_u64()), (Some(0), Some(2)));
    assert_eq!(depth(&dlq).await, (2, 0, 0));
}

#[tokio::test]
async fn dry_run_reports_what_would_move_and_changes_nothing() {
    let (src, dlq) = queue_with_dlq("rd-dry", 3, false, 30).await;
    let secret = "secret-body-text";
    let kinds = [FailureKind::Permanent, FailureKind::Undecodable, FailureKind::Permanent, FailureKind::TimedOut];
    let letters: Vec<OutgoingMessage> =
        kinds.iter().enumerate().map(|(i, k)| letter(&src, &format!("{secret} {i}"), *k)).collect();
    let sent = dlq.send_batch(letters).await.unwrap().into_result().unwrap();
    let ids: HashSet<String> = sent.iter().map(|s| s.message_id.clone()).collect();

    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--dry-run", "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(secret) && !err.contains(secret), "no bodies: {out}{err}");
    let report = json(&out);
    assert_eq!((report["dry_run"].as_bool(), report["moved"].as_u64()), (Some(true), Some(0)));
    let planned = report["would_move"].as_array().unwrap();
    assert_eq!(planned.iter().map(|p| p["message_id"].as_str().unwrap().to_string()).collect::<HashSet<_>>(), ids);
    assert!(planned.iter().all(|p| p["target"] == src.name() && p["source_queue"] == src.name()), "{report}");
    let mut planned_kinds: Vec<&str> = planned.iter().map(|p| p["error_kind"].as_str().unwrap()).collect();
    planned_kinds.sort();
    assert_eq!(planned_kinds, ["permanent", "permanent", "timeout", "undecodable"]);
    assert_eq!(depth(&dlq).await, (4, 0, 0), "the DLQ holds everything, visible");
    assert_eq!(depth(&src).await, (0, 0, 0), "nothing sent");

    // with --filter and --max, in text
    let (code, out, err) =
        run(&["redrive", "--dlq-url", dlq.url(), "--dry-run", "--filter", "kind=permanent", "--max", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dry run: would move 1 message(s)"), "{out}");
    let line = out.lines().find(|l| ids.iter().any(|id| l.contains(id.as_str()))).expect("a line per message");
    assert!(line.contains(&format!("{0} -> {0}", src.name())) && line.contains("permanent"), "{out}");
    assert!(!out.contains(secret), "{out}");
    assert_eq!(depth(&dlq).await, (4, 0, 0));
    assert_eq!(depth(&src).await, (0, 0, 0));
}

#[tokio::test]
async fn a_bad_filter_is_refused_naming_filter_before_any_call() {
    for (expr, why) in [
        ("status=failed", "expected /json/pointer=value or kind="),
        ("kind=permanant", "unknown error kind"),
        ("/order/status", "no `=value`"),
        ("/a~2b=1", "not a JSON pointer"),
        ("origin=sqs,mine", "unknown origin \"mine\""),
    ] {
        let (code, out, err) = run_at(Some(NOWHERE), &["redrive", "--dlq-url", "http://h/q", "--filter", expr]);
        assert_eq!(code, 2, "{expr}: {out}{err}");
        assert!(err.contains("--filter") && err.contains(why), "{expr}: {err}");
    }
    for args in [
        &["--filter", "kind=permanent", "--use-move-task"][..],
        &["--max", "3", "--use-move-task"],
        &["--status", "--max", "3"],
        &["--cancel", "--to", "http://h/other"],
    ] {
        let (code, _, err) = run_at(Some(NOWHERE), &[&["redrive", "--dlq-url", "http://h/q"][..], args].concat());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("cannot be used with"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn a_filtered_run_examines_each_message_once_while_holding_the_others() {
    // The library loop with short holds: the run outlasts them, so the messages it leaves in
    // the DLQ must be kept invisible (or recognised when they come back) to be examined once.
    let (src, dlq) = orders_dlq("rd-once").await;
    let mut options =
        RedriveOptions::default().with_filter("/order/status=failed".parse().unwrap()).with_rate(Some(1.0));
    options.hold = Duration::from_secs(1);
    options.keep_hold = Duration::from_secs(2);
    let started = Instant::now();
    let during = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        depth(&dlq).await
    };
    let (report, during) = tokio::join!(sqskit::dlq::redrive(&dlq, None, &options, |_| {}), during);
    let report = report.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(3), "the run outlasted the holds");
    assert_eq!(during.0, 0, "2.5 s in, the four it leaves behind are still invisible: {during:?}");
    assert_eq!((report.moved, report.skipped), (3, 4), "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(depth(&dlq).await, (4, 0, 0), "released at the end");
    assert_eq!(drain(&src, Duration::from_secs(1)).await.len(), 3);
}

#[tokio::test]
async fn the_kind_in_the_combined_dead_letter_attribute_counts_for_filters_and_dlq_list() {
    // seven attributes of its own: the processor writes one `sqskit-dead-letter` JSON attribute
    let (src, dlq) = queue_with_dlq("rd-combined", 3, false, 30).await;
    let mut original = ReceivedMessage {
        message_id: "orig-combined".into(),
        receipt_handle: String::new(),
        body: "many attributes".into(),
        attributes: Default::default(),
        system_attributes: Default::default(),
        received_at: Instant::now(),
        queue_url: None,
    };
    for i in 0..7 {
        original.attributes.insert(format!("a{i}"), sqskit::AttributeValue::string("x"));
    }
    let letter = dead_letter_message(
        &original,
        &Failure { kind: FailureKind::Permanent, error: "e".into(), retry_after: None },
        src.name(),
        false,
    );
    assert!(letter.attributes.contains_key(sqskit::processor::dead_letter_attributes::COMBINED));
    dlq.send(letter).await.unwrap();
    let (code, out, err) = run(&["dlq", "list", "--dlq-url", dlq.url(), "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["kinds"], serde_json::json!({"permanent": 1}), "{out}");
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--filter", "kind=permanent", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["moved"], 1, "{out}");
    let back = drain(&src, Duration::from_secs(1)).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].attributes.len(), 7, "the dead-letter attribute is dropped on the way back");
}
