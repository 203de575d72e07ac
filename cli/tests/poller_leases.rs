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
/// containing `gate` waits until the file `$GATE` exists; `slow` sleeps 5 s; `poison` exits 65;
/// `hang-once` replaces itself with a long sleep on its first receive.
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
  *slow*) sleep 5 ;;
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

/// The issue's reproduction (its 4-s visibility timeout and 12-s cap made 6 and 18 s, so that a
/// loaded machine's late heartbeat cannot lose a lease): one slot, 5-s jobs, `maxReceiveCount` 2.
/// Prefetched messages wait up to 25 s for the slot: the wait is heart-beaten and does not count
/// toward the cap, so every message runs once and nothing is dead-lettered (before: the waiting
/// ones were cancelled or released past the cap and the DLQ got them, some never run).
#[tokio::test]
async fn waiting_for_a_slot_does_not_spend_a_message_lease() {
    let (q, dlq) = queue_with_dlq("slot-wait", 2, false, 6).await;
    send_bodies(&q, (0..6).map(|i| format!("slow {i}"))).await;
    let dir = temp_dir("slot-wait");
    let args = [
        "--until-empty",
        "--wait-time",
        "1",
        "--concurrency",
        "1",
        "--visibility-timeout",
        "6",
        "--max-visibility-extension",
        "18",
        "--backoff-base",
        "1",
        "--backoff-max",
        "1",
    ];
    let mut p = spawn(poll(&q, &dir, &args));
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    let starts = lines(&dir, "start");
    let ends = lines(&dir, "end");
    assert_eq!(ends.len(), 6, "every message ran to its end: {starts:?}");
    assert_eq!(starts.len(), 6, "each once: {starts:?}");
    assert!(starts.iter().all(|w| w[3] == "1"), "each on its first receive: {starts:?}");
    assert_eq!(depth(&dlq).await.0, 0, "nothing dead-lettered");
    assert_eq!(depth(&q).await, (0, 0, 0));
}

/// One start every 5 s, `maxReceiveCount` 1, a 4-s visibility timeout and an 8-s extension cap:
/// a message waits up to 5 s for its rate turn, heart-beaten, without that wait counting toward
/// the cap (before: it was given back at the cap, and SQS dead-lettered it unrun on its next
/// receive).
#[tokio::test]
async fn waiting_for_a_rate_turn_does_not_spend_a_message_lease() {
    let (q, dlq) = queue_with_dlq("rate-wait", 1, false, 4).await;
    send_bodies(&q, (0..4).map(|i| format!("quick {i}"))).await;
    let dir = temp_dir("rate-wait");
    let args = [
        "--until-empty",
        "--wait-time",
        "1",
        "--rate",
        "0.2",
        "--visibility-timeout",
        "4",
        "--max-visibility-extension",
        "8",
    ];
    let mut p = spawn(poll(&q, &dir, &args));
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    let starts = lines(&dir, "start");
    assert_eq!(lines(&dir, "end").len(), 4, "every message ran: {starts:?}");
    assert_eq!(starts.len(), 4, "each once: {starts:?}");
    assert_eq!(depth(&dlq).await.0, 0, "nothing dead-lettered");
}

/// SIGTERM while a message waits for its rate turn: it goes back at once (it has not started),
/// the drain does not wait for it, and it is not left in flight (before: counted as running,
/// the drain waited out its deadline and left it invisible).
#[tokio::test]
async fn sigterm_gives_back_a_message_waiting_for_its_rate_turn() {
    let (q, _dlq) = queue_with_dlq("rate-term", 5, false, 30).await;
    send_bodies(&q, (0..3).map(|i| format!("quick {i}"))).await;
    let dir = temp_dir("rate-term");
    let mut p = spawn(poll(&q, &dir, &["--wait-time", "1", "--rate", "0.1", "--shutdown-timeout", "20"]));
    wait_until(Duration::from_secs(30), "the first message to run", || lines(&dir, "end").len() == 1);
    // the next one is received within about a second and waits ~10 s for its turn
    wait_until(Duration::from_secs(10), "a second message in flight", || futures_lite_depth(&q).1 >= 1);
    p.signal("TERM");
    let status = p.wait(EXIT_LIMIT);
    let stderr = p.stderr();
    assert!(status.success(), "stderr:\n{}", tail(&stderr, 30));
    assert!(!stderr.contains("still running at the shutdown deadline"), "{}", tail(&stderr, 30));
    let summary: serde_json::Value = serde_json::from_str(p.stdout().trim()).unwrap();
    assert_eq!(summary["in_flight"], 0, "{summary}");
    assert!(summary["released"].as_u64() >= Some(1), "the waiting message went back: {summary}");
    assert_eq!(lines(&dir, "start").len(), 1, "nothing else started");
    assert_eq!(depth(&q).await, (2, 0, 0), "both unstarted messages are visible again at once");
}

/// SIGTERM while a long poll is open on an empty queue, then a message arrives: the open poll
/// (which lives on at SQS) is let return and the message goes back at once. With
/// `maxReceiveCount` 1 that receive was its last allowed one, so it is carried over as a fresh
/// copy rather than released to be dead-lettered unrun (before: the poll was dropped, its ghost
/// took the message and kept it in flight for the whole visibility timeout).
#[tokio::test]
async fn shutdown_lets_an_open_long_poll_return_and_gives_back_what_it_brings() {
    let (q, dlq) = queue_with_dlq("open-poll", 1, false, 60).await;
    let dir = temp_dir("open-poll");
    let mut p = spawn(poll(&q, &dir, &["--wait-time", "10", "--visibility-timeout", "60"]));
    // the poller is up and long-polling the empty queue
    wait_until(Duration::from_secs(30), "the poller to start polling", || p.stderr().contains("polling"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    p.signal("TERM");
    tokio::time::sleep(Duration::from_secs(1)).await;
    q.send(OutgoingMessage::new("arrives during the drain")).await.unwrap();
    let status = p.wait(EXIT_LIMIT);
    let stderr = p.stderr();
    assert!(status.success(), "stderr:\n{}", tail(&stderr, 30));
    assert!(lines(&dir, "start").is_empty(), "nothing ran after the signal");
    let summary: serde_json::Value = serde_json::from_str(p.stdout().trim()).unwrap();
    assert_eq!((summary["received"].as_u64(), summary["carried_over"].as_u64()), (Some(1), Some(1)), "{summary}");
    assert_eq!(summary["receive_calls"].as_u64(), Some(4), "the four open polls returned, none after: {summary}");
    assert_eq!(depth(&q).await, (1, 0, 0), "visible at once, not in flight for 60 s");
    let got = q.receive(1, Duration::from_secs(2), Some(Duration::from_secs(30))).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "arrives during the drain");
    assert_eq!(got[0].receive_count(), 1, "a fresh copy: the receive at shutdown does not count");
    assert_eq!(got[0].attributes["sqskit-carried-over"].string_value.as_deref(), Some("1"));
    assert_eq!(depth(&dlq).await.0, 0);
}

/// An idle poller: no receiver is reported as waiting for slots (they park), and it is ready
/// as soon as it reached SQS, before its first long poll returns (before: 3 receivers reported
/// waiting for slots, and /readyz answered 503 for the first 20 s).
#[tokio::test]
async fn an_idle_poller_is_ready_at_once_and_waits_for_no_slots() {
    let q = queue("idle-health").await;
    let dir = temp_dir("idle-health");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut p = spawn(poll(&q, &dir, &["--wait-time", "6", "--concurrency", "40", "--metrics-addr", &addr]));
    wait_until(Duration::from_secs(30), "the poller to start polling", || p.stderr().contains("polling"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, body) = http_get(&addr, "/readyz");
    assert_eq!(code, 200, "ready while the first long polls are open: {body}");
    // after the first empty answers: one receiver long-polls, the three others park
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (code, body) = http_get(&addr, "/healthz");
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["waiting_for_slots"], 0, "parked receivers wait for no slot: {report}");
    assert_eq!(report["parked"], 3, "idle receivers park: {report}");
    p.signal("TERM");
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
}

async fn send_bodies(q: &Queue, bodies: impl IntoIterator<Item = String>) {
    q.send_batch(bodies.into_iter().map(OutgoingMessage::new)).await.unwrap().into_result().unwrap();
}

/// Queue depth from a blocking context (`wait_until`'s closure).
fn futures_lite_depth(q: &Queue) -> (u64, u64, u64) {
    let q = q.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(depth(&q))
    })
    .join()
    .unwrap()
}

/// A blocking GET: (status code, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}
