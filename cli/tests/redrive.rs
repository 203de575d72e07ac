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
    let handle = json(&out)["task_handle"].as_str().unwrap().to_string();
    assert!(!handle.is_empty());
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
async fn a_move_task_with_to_moves_to_that_queue() {
    let (_src, dlq) = queue_with_dlq("mt-to", 3, false, 30).await;
    let other = queue("mt-to-other").await;
    dlq.send_batch((0..4).map(|i| OutgoingMessage::new(format!("elsewhere {i}"))))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--use-move-task", "--to", other.url()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("started message move task") && out.contains("--status"), "{out}");
    let task = wait_settled(&dlq, Duration::from_secs(60)).await;
    assert_eq!(task.status, "COMPLETED", "{task:?}");
    assert_eq!(task.destination_arn.as_deref(), Some(arn(&other).await.as_str()), "--to is the DestinationArn");
    assert_eq!(task.max_per_second, None, "no --rate: SQS's pace");
    let moved = drain(&other, Duration::from_secs(1)).await;
    assert_eq!(bodies(&moved), (0..4).map(|i| format!("elsewhere {i}")).collect());
    assert_eq!(depth(&dlq).await, (0, 0, 0));
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
    let (_src, dlq) = queue_with_dlq("mt-failed", 3, false, 30).await;
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no message move tasks"), "{out}");
    let (code, out, _) = run(&["redrive", "--dlq-url", dlq.url(), "--status", "--output", "json"]);
    assert_eq!((code, json(&out)), (0, serde_json::json!([])));
    let (code, _, err) = run(&["redrive", "--dlq-url", dlq.url(), "--cancel"]);
    assert_eq!(code, 1);
    assert!(err.contains("no message move task is running") && err.contains("it has no move tasks"), "{err}");

    // Sent to the DLQ directly, these messages have no DeadLetterQueueSourceArn: a task without
    // a destination cannot return them (LocalStack fails the task; its reason is its own).
    dlq.send(OutgoingMessage::new("no way back")).await.unwrap();
    let (code, out, err) = run(&["redrive", "--dlq-url", dlq.url(), "--use-move-task"]);
    assert_eq!(code, 0, "{out}{err}");
    let task = wait_settled(&dlq, Duration::from_secs(30)).await;
    assert_eq!(task.status, "FAILED", "{task:?}");
    let reason = task.failure_reason.clone().expect("a failure reason");
    let (code, out, _) = run(&["redrive", "--dlq-url", dlq.url(), "--status"]);
    assert_eq!(code, 0);
    assert!(out.contains("FAILED") && out.contains(&format!("failure: {reason}")), "{out}");
    // LocalStack received it before failing: it is in flight for the DLQ's visibility timeout
    let d = depth(&dlq).await;
    assert_eq!(d.0 + d.1, 1, "the message stays in the DLQ: {d:?}");
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
    ] {
        let (code, out, err) = run_at(Some(NOWHERE), &["redrive", "--dlq-url", "http://h/q", "--filter", expr]);
        assert_eq!(code, 2, "{expr}: {out}{err}");
        assert!(err.contains("--filter") && err.contains(why), "{expr}: {err}");
    }
    for args in [
        &["--filter", "kind=permanent", "--use-move-task"][..],
        &["--dry-run", "--use-move-task"],
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
