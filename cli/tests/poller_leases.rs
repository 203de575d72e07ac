//! `sqskit poll` as a real process against LocalStack: leases and settlement — FIFO deletes
//! as each message is done, handlers cancelled at the lease limit, fair-queue tenants run
//! independently, and FIFO messages never dead-lettered into a standard DLQ.
use sqskit_test_support as support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqskit::{OutgoingMessage, Queue};
use support::proc::{log_lines, spawn, sqskit, tail, temp_dir, wait_until};
use support::*;

const EXIT_LIMIT: Duration = Duration::from_secs(120);

/// A handler script: logs `start|end <body> <receive count>` to `$HANDLER_LOG`; a body
/// containing `gate` waits until the file `$GATE` exists; `poison` exits 65; `hang-once`
/// replaces itself with a long sleep on its first receive.
fn handler(dir: &Path) -> PathBuf {
    let path = dir.join("handler.sh");
    std::fs::write(
        &path,
        r#"#!/bin/sh
body=$(cat)
echo "start $body $SQSKIT_RECEIVE_COUNT $$" >> "$HANDLER_LOG"
echo "queue $body $SQSKIT_QUEUE_NAME" >> "$HANDLER_LOG"
case "$body" in
  *gate*) while [ ! -f "$GATE" ]; do sleep 0.1; done ;;
esac
case "$body" in
  *poison*) exit 65 ;;
  *hang-once*) if [ "$SQSKIT_RECEIVE_COUNT" -lt 2 ]; then exec sleep 300; fi ;;
esac
echo "end $body $SQSKIT_RECEIVE_COUNT" >> "$HANDLER_LOG"
"#,
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path
}

fn poll(queue: &Queue, dir: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = sqskit(None);
    cmd.env("HANDLER_LOG", dir.join("handler.log")).env("GATE", dir.join("gate"));
    cmd.args([
        "poll",
        "--queue-url",
        queue.url(),
        "--exec",
        handler(dir).to_str().unwrap(),
        "--progress-interval",
        "0",
    ]);
    cmd.args(extra);
    cmd
}

fn lines(dir: &Path, event: &str) -> Vec<Vec<String>> {
    log_lines(&dir.join("handler.log"))
        .into_iter()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|w| w.first().map(String::as_str) == Some(event))
        .collect()
}

#[tokio::test]
async fn fifo_messages_are_deleted_as_each_succeeds_not_when_the_group_ends() {
    let q = fifo_queue("fifo-early-delete").await;
    q.send_batch(["first", "second-gate"].map(|b| OutgoingMessage::new(b).group_id("G")))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let dir = temp_dir("early-delete");
    let mut p = spawn(poll(&q, &dir, &["--until-empty", "--wait-time", "1"]));
    wait_until(Duration::from_secs(30), "the second message to start", || lines(&dir, "start").len() == 2);
    // the second one is blocked on its gate; the first must be deleted while it waits
    let limit = std::time::Instant::now() + Duration::from_secs(30);
    while depth(&q).await.1 != 1 {
        assert!(std::time::Instant::now() < limit, "the first message was not deleted while its group ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(dir.join("gate"), "").unwrap();
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    assert_eq!(lines(&dir, "end").len(), 2);
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn a_handler_reaching_the_max_visibility_extension_is_cancelled_not_run_past_its_lease() {
    let q = queue("lease-limit").await;
    q.send(OutgoingMessage::new("hang-once")).await.unwrap();
    let dir = temp_dir("lease-limit");
    let mut p = spawn(poll(
        &q,
        &dir,
        &[
            "--until-empty",
            "--wait-time",
            "1",
            "--visibility-timeout",
            "2",
            "--max-visibility-extension",
            "4",
            "--backoff-base",
            "1",
            "--backoff-max",
            "1",
        ],
    ));
    let status = p.wait(EXIT_LIMIT);
    let stderr = p.stderr();
    assert!(status.success(), "stderr:\n{}", tail(&stderr, 30));
    assert!(stderr.contains("longest visibility extension"), "{}", tail(&stderr, 30));
    let starts = lines(&dir, "start");
    let ends = lines(&dir, "end");
    assert_eq!(starts.len(), 2, "cancelled on receive 1, done on receive 2: {starts:?}");
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0][2], "2");
    // the first run was stopped, not left running next to the second
    let first_pid = &starts[0][3];
    assert!(!Path::new(&format!("/proc/{first_pid}")).exists(), "the cancelled handler {first_pid} is gone");
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn poller_runs_fair_queue_tenants_independently() {
    // a standard queue whose messages carry a group id (fair queues): not FIFO groups
    let q = queue("fair-poller").await;
    q.send_batch(["t1-gate", "t2-gate", "t3-gate", "t4-gate"].map(|b| OutgoingMessage::new(b).group_id("tenant-a")))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let dir = temp_dir("fair");
    let mut p = spawn(poll(&q, &dir, &["--until-empty", "--wait-time", "1"]));
    // all four of one tenant run at once (a FIFO group would run them one by one)
    wait_until(Duration::from_secs(30), "all four to run together", || lines(&dir, "start").len() == 4);
    std::fs::write(dir.join("gate"), "").unwrap();
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    assert_eq!(lines(&dir, "end").len(), 4);
}

#[tokio::test]
async fn a_fifo_queue_never_dead_letters_into_a_standard_dlq() {
    let src = fifo_queue("fifo-std-dlq").await;
    let standard_dlq = queue("std-dlq").await;
    src.send(OutgoingMessage::new("poison").group_id("G")).await.unwrap();
    let dir = temp_dir("fifo-std-dlq");
    let mut p = spawn(poll(
        &src,
        &dir,
        &["--dlq-url", standard_dlq.url(), "--wait-time", "1", "--backoff-base", "1", "--backoff-max", "1"],
    ));
    wait_until(Duration::from_secs(60), "the poison message to be tried twice", || lines(&dir, "start").len() >= 2);
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(30)).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    assert!(p.stderr().contains("differs from the source queue"), "the refusal is logged:\n{}", tail(&p.stderr(), 30));
    assert_eq!(depth(&standard_dlq).await.0, 0, "nothing went to the standard DLQ");
    let left = peek_all(&src, Duration::from_secs(3), Duration::from_secs(30)).await;
    assert_eq!(left.len(), 1, "the message is kept (retried), not lost");
}

#[tokio::test]
async fn a_stalled_delete_endpoint_slows_receiving_instead_of_piling_up_messages() {
    let q = queue("stalled-deletes").await;
    let bodies: Vec<OutgoingMessage> = (0..300).map(|i| OutgoingMessage::new(format!("m{i}"))).collect();
    q.send_batch(bodies).await.unwrap().into_result().unwrap();
    let target = endpoint().trim_start_matches("http://").to_string();
    let proxy = support::deny::DenyProxy::hold(target, &[".DeleteMessageBatch"]);
    let dir = temp_dir("stalled");
    let mut cmd = poll(&q, &dir, &["--until-empty", "--wait-time", "1", "--concurrency", "10"]);
    cmd.env("AWS_ENDPOINT_URL", &proxy.url);
    let mut p = spawn(cmd);
    // while no delete is confirmed, handlers wait to hand over their acks (keeping their slots):
    // at most ~10 running + 10 queued acks + 8 delete calls of 10 are out, not all 300
    wait_until(Duration::from_secs(30), "deletes to stall", || {
        proxy.denied.load(std::sync::atomic::Ordering::SeqCst) >= 8
    });
    let mut most = 0;
    for _ in 0..16 {
        most = most.max(depth(&q).await.1);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(most <= 150, "{most} messages in flight while deletes stalled");
    proxy.release();
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    assert_eq!(lines(&dir, "end").len(), 300);
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn exec_handlers_see_the_queue_each_message_came_from() {
    let (a, b) = (queue("own-queue-a").await, queue("own-queue-b").await);
    a.send(OutgoingMessage::new("from-a")).await.unwrap();
    b.send(OutgoingMessage::new("from-b")).await.unwrap();
    let dir = temp_dir("own-queue");
    let mut cmd = poll(&a, &dir, &["--until-empty", "--wait-time", "1"]);
    cmd.args(["--queue-url", b.url()]);
    let mut p = spawn(cmd);
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    let mut seen: Vec<(String, String)> =
        lines(&dir, "queue").into_iter().map(|w| (w[1].clone(), w[2].clone())).collect();
    seen.sort();
    assert_eq!(seen, [("from-a".to_string(), a.name().to_string()), ("from-b".to_string(), b.name().to_string())]);
}
