//! `sqskit poll --idempotency-table` as real processes: SQS on LocalStack, DynamoDB on moto.
use sqskit_test_support as support;
use sqskit_test_support::stores;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sqskit::{OutgoingMessage, Queue};
use support::proc::{spawn, sqskit, tail, temp_dir, wait_until};
use support::*;

const EXIT_LIMIT: Duration = Duration::from_secs(300);

/// A poller with idempotency on `table` (key `/order_id`, prefix `orders`) running `handler`
/// (a shell line; the body is on its stdin).
fn poll(queue: &Queue, table: &str, handler: &str, extra: &[&str]) -> std::process::Command {
    let mut cmd = sqskit(None);
    cmd.envs(stores::dynamodb_env());
    cmd.args([
        "poll",
        "--queue-url",
        queue.url(),
        "--exec",
        handler,
        "--idempotency-table",
        table,
        "--idempotency-key",
        "/order_id",
        "--idempotency-prefix",
        "orders",
        "--progress-interval",
        "0",
    ]);
    cmd.args(extra);
    cmd
}

/// Bodies of the handler runs recorded in `dir` (one file per run).
fn runs(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("run dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("run.") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            out.push(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}")));
        }
    }
    out
}

fn summary(p: &support::proc::Running) -> serde_json::Value {
    let out = p.stdout();
    let line = out.lines().last().unwrap_or_default().to_string();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: poller stdout {out:?}"))
}

#[tokio::test]
async fn two_pollers_run_each_of_200_orders_once_though_each_was_sent_three_times() {
    let (q, dlq) = queue_with_dlq("idem-two", 10, false, 30).await;
    let db = stores::dynamodb().await;
    let table = stores::table(&db, &unique("idem-two")).await;
    let body = |i: usize| serde_json::json!({"order_id": format!("o-{i}"), "amount": i}).to_string();
    // the first 100 orders' copies side by side (the two pollers race for them), the other
    // 100 in three rounds (later copies find the order completed)
    let mut bodies: Vec<String> = (0..100).flat_map(|i| [body(i), body(i), body(i)]).collect();
    for _ in 0..3 {
        bodies.extend((100..200).map(body));
    }
    let report = q.send_batch(bodies.into_iter().map(OutgoingMessage::new)).await.unwrap();
    assert_eq!(report.into_result().unwrap().len(), 600, "600 distinct SQS messages");

    let dir = temp_dir("idem-two");
    // each run: its body in run.*, and "message id, receive count, start ns, body" in meta.*
    let handler = format!(
        "sh -c 'b=$(cat); printf %s \"$b\" > \"$(mktemp {0}/run.XXXXXX)\"; \
         echo \"$SQSKIT_MESSAGE_ID $SQSKIT_RECEIVE_COUNT $(date +%s%N) $b\" > \"$(mktemp {0}/meta.XXXXXX)\"'",
        dir.display()
    );
    let args = ["--until-empty", "--concurrency", "8", "--visibility-timeout", "6", "--backoff-base", "1"];
    let mut a = spawn(poll(&q, &table, &handler, &args));
    let mut b = spawn(poll(&q, &table, &handler, &args));
    for p in [&mut a, &mut b] {
        let status = p.wait(EXIT_LIMIT);
        assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    }

    let mut per_order: HashMap<String, usize> = HashMap::new();
    for run in runs(&dir) {
        *per_order.entry(run["order_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_order.len(), 200, "every order ran");
    let twice: Vec<_> = per_order.iter().filter(|(_, n)| **n != 1).collect();
    if !twice.is_empty() {
        let meta: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("meta."))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .filter(|m| twice.iter().any(|(o, _)| m.contains(&format!("\"{o}\""))))
            .collect();
        let notable = |p: &support::proc::Running| {
            p.stderr()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("idempotency"))
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "orders run more than once: {twice:?}\nruns (id, receive count, start ns): {meta:#?}\nA:\n{}\nB:\n{}",
            notable(&a),
            notable(&b)
        );
    }
    let (sa, sb) = (summary(&a), summary(&b));
    let total = |k: &str| sa[k].as_u64().unwrap() + sb[k].as_u64().unwrap();
    assert_eq!((total("succeeded"), total("duplicates")), (200, 400), "a: {sa}\nb: {sb}");
    assert!(sa["succeeded"].as_u64().unwrap() > 0 && sb["succeeded"].as_u64().unwrap() > 0, "both worked: {sa} {sb}");
    assert_eq!(depth(&q).await, (0, 0, 0));
    assert!(drain(&dlq, Duration::from_secs(1)).await.is_empty(), "nothing dead-lettered");
}

#[tokio::test]
async fn a_consumer_killed_mid_handler_leaves_a_claim_that_lapses_with_its_lease() {
    let (q, _dlq) = queue_with_dlq("idem-kill", 10, false, 30).await;
    let db = stores::dynamodb().await;
    let table = stores::table(&db, &unique("idem-kill")).await;
    q.send(OutgoingMessage::new(r#"{"order_id":"k-1"}"#)).await.unwrap();
    let dir = temp_dir("idem-kill");

    // A claims the key, starts the handler and is killed with SIGKILL: nothing is settled
    let started = dir.join("started");
    let stuck = format!("sh -c 'touch {}; sleep 120'", started.display());
    let mut a = spawn(poll(&q, &table, &stuck, &["--visibility-timeout", "4"]));
    wait_until(Duration::from_secs(30), "A's handler to start", || started.exists());
    a.signal("KILL");
    a.wait(Duration::from_secs(10));
    let _ = std::process::Command::new("pkill").args(["-KILL", "-f", &started.display().to_string()]).status();
    let key = format!("orders#{}", sqskit::idempotency::hash_value(&serde_json::json!("k-1")));
    let claim = stores::item(&db, &table, &key).await.expect("A's claim");
    assert_eq!(claim["status"].as_s().unwrap(), "INPROGRESS");
    let lapses: u64 = claim["in_progress_expiration"].as_n().unwrap().parse().unwrap();

    // B takes the key once A's claim lapsed, runs it and completes it
    let handler = format!("sh -c 'cat > \"$(mktemp {}/run.XXXXXX)\"'", dir.display());
    let mut b =
        spawn(poll(&q, &table, &handler, &["--until-empty", "--visibility-timeout", "4", "--backoff-base", "1"]));
    let status = b.wait(Duration::from_secs(120));
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&b.stderr(), 30));
    let ran = runs(&dir);
    assert_eq!(ran, vec![serde_json::json!({"order_id": "k-1"})]);
    let run_file =
        std::fs::read_dir(&dir).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with("run."));
    let ran_at = run_file.unwrap().metadata().unwrap().modified().unwrap();
    let ran_at_ms = ran_at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(ran_at_ms >= lapses, "B ran at {ran_at_ms}, before A's claim lapsed at {lapses}");
    assert_eq!(summary(&b)["succeeded"], 1);
    let done = stores::item(&db, &table, &key).await.expect("record");
    assert_eq!(done["status"].as_s().unwrap(), "COMPLETED");
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn the_heartbeat_extends_the_claim_with_the_lease() {
    let (q, _dlq) = queue_with_dlq("idem-beat", 10, false, 30).await;
    let db = stores::dynamodb().await;
    let table = stores::table(&db, &unique("idem-beat")).await;
    q.send(OutgoingMessage::new(r#"{"order_id":"h-1"}"#)).await.unwrap();
    let dir = temp_dir("idem-beat");
    let started = dir.join("started");
    // a handler that outlives two visibility timeouts of 4 s
    let slow = format!("sh -c 'touch {}; sleep 9'", started.display());
    let mut p = spawn(poll(&q, &table, &slow, &["--until-empty", "--visibility-timeout", "4"]));
    wait_until(Duration::from_secs(30), "the handler to start", || started.exists());
    let key = format!("orders#{}", sqskit::idempotency::hash_value(&serde_json::json!("h-1")));
    let lapse = |item: HashMap<String, aws_sdk_dynamodb::types::AttributeValue>| -> u64 {
        item["in_progress_expiration"].as_n().unwrap().parse().unwrap()
    };
    let first = lapse(stores::item(&db, &table, &key).await.expect("claim"));
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let later = lapse(stores::item(&db, &table, &key).await.expect("claim"));
    assert!(later >= first + 1_500, "the claim was not extended: {first} then {later}");
    let now = sqskit::idempotency::epoch_millis(SystemTime::now());
    assert!(later > now, "the claim lapsed while the handler still ran: {later} <= {now}");
    let status = p.wait(Duration::from_secs(60));
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    assert_eq!(summary(&p)["succeeded"], 1);
}

#[tokio::test]
async fn an_invalid_idempotency_key_option_is_refused_naming_it() {
    let out = sqskit(None)
        .args(["poll", "--queue-url", "http://127.0.0.1:1/queue/x", "--exec", "true", "--idempotency-key", "order_id"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--idempotency-key") && err.contains("JSON Pointer"), "{err}");
}
