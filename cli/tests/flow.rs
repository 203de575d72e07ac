//! Flow control through the real `sqskit` binary against LocalStack: a downstream outage
//! (the circuit breaker), pausing a fleet (`sqskit pause` / `resume`), and the breaker's
//! switches.
use sqskit_test_support as support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqskit::{OutgoingMessage, Queue};
use support::http::{serve_with, Reply};
use support::proc::{spawn, sqskit, tail};
use support::*;

const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// One POST the downstream answered: when, the body, the status it gave.
type Posts = Arc<Mutex<Vec<(Instant, String, u16)>>>;

/// A downstream that answers `answer(now, body)` and records every POST.
fn downstream(answer: impl Fn(Instant, &str) -> u16 + Send + Sync + 'static) -> (String, Posts) {
    let posts: Posts = Arc::default();
    let seen = posts.clone();
    let (url, _) = serve_with(move |req| {
        let now = Instant::now();
        let status = answer(now, &req.body);
        seen.lock().unwrap().push((now, req.body.clone(), status));
        Reply { status, headers: Vec::new() }
    });
    (url, posts)
}

async fn send_bodies(q: &Queue, bodies: impl IntoIterator<Item = String>) {
    q.send_batch(bodies.into_iter().map(OutgoingMessage::new)).await.unwrap().into_result().unwrap();
}

fn poll_http(queue: &Queue, url: &str, extra: &[&str]) -> std::process::Command {
    let mut cmd = sqskit(None);
    cmd.args(["poll", "--queue-url", queue.url(), "--http", url, "--progress-interval", "0"]);
    cmd.args(extra);
    cmd
}

/// The reproduction, at the breaker's documented defaults: the downstream answers 503
/// for 60 s, then 200 (400 for poison). 300 good messages and 10 poison ones on a queue with
/// `maxReceiveCount` 4, `--backoff-base 2 --backoff-max 20`. Nothing good may be dead-lettered,
/// the failing downstream gets at most one POST per second on average while it is down, every
/// good message is delivered within 45 s of its recovery, and the poison ones end in the DLQ.
#[tokio::test]
async fn a_downstream_outage_dead_letters_no_good_message_and_does_not_hammer_it() {
    let (q, dlq) = queue_with_dlq("outage", 4, false, 30).await;
    let good: Vec<String> = (0..300).map(|i| format!("good-{i}")).collect();
    let poison: Vec<String> = (0..10).map(|i| format!("poison-{i}")).collect();
    send_bodies(&q, good.iter().chain(&poison).cloned()).await;
    let outage = Duration::from_secs(60);
    let started = Instant::now();
    let recovered_at = started + outage;
    let (url, posts) = downstream(move |now, body| match (now < recovered_at, body.starts_with("poison")) {
        (true, _) => 503,
        (false, true) => 400,
        (false, false) => 200,
    });
    let mut p = spawn(poll_http(&q, &url, &["--backoff-base", "2", "--backoff-max", "20"]));
    let deadline = recovered_at + Duration::from_secs(45);
    let delivered = |posts: &Posts| -> HashSet<String> {
        posts.lock().unwrap().iter().filter(|(_, _, s)| *s == 200).map(|(_, b, _)| b.clone()).collect()
    };
    while Instant::now() < deadline && delivered(&posts).len() < good.len() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // the poison ones are refused (400) once the downstream is back: give them a moment
    let poison_deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < poison_deadline && depth(&dlq).await.0 < poison.len() as u64 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    p.signal("TERM");
    let status = p.wait(EXIT_LIMIT);
    let stderr = p.stderr();
    let posts = posts.lock().unwrap().clone();
    let during: Vec<&(Instant, String, u16)> = posts.iter().filter(|(t, _, _)| *t < recovered_at).collect();
    let mut deliveries: HashMap<&str, Vec<Duration>> = HashMap::new();
    for (t, body, s) in &posts {
        if *s == 200 {
            deliveries.entry(body.as_str()).or_default().push(t.saturating_duration_since(recovered_at));
        }
    }
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    let dead_good: Vec<&str> = dead.iter().map(|m| m.body.as_str()).filter(|b| b.starts_with("good")).collect();
    let dead_poison: HashSet<&str> = dead.iter().map(|m| m.body.as_str()).filter(|b| b.starts_with("poison")).collect();
    let late = deliveries.values().filter_map(|d| d.iter().min()).filter(|d| **d > Duration::from_secs(45)).count();
    let last = deliveries.values().filter_map(|d| d.iter().min()).max().copied().unwrap_or_default();
    let report = format!(
        "{} POSTs during the {outage:?} outage ({:.2}/s), {} POSTs in all; {} of {} good delivered (the last {last:?} \
         after recovery, {late} later than 45 s); {} good and {} poison dead-lettered; exit {status}",
        during.len(),
        during.len() as f64 / outage.as_secs_f64(),
        posts.len(),
        deliveries.len(),
        good.len(),
        dead_good.len(),
        dead_poison.len(),
    );
    eprintln!("outage: {report}");
    assert!(dead_good.is_empty(), "good messages dead-lettered: {report}");
    assert!(during.len() as f64 <= outage.as_secs_f64(), "more than one POST per second while down: {report}");
    assert_eq!(deliveries.len(), good.len(), "every good message delivered: {report}");
    assert_eq!(late, 0, "delivered within 45 s of recovery: {report}");
    let twice: Vec<_> = deliveries.iter().filter(|(_, d)| d.len() > 1).map(|(b, _)| *b).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}; {report}");
    assert_eq!(dead_poison.len(), poison.len(), "the poison ones are dead-lettered: {report}");
    assert!(status.success(), "{report}; stderr:\n{}", tail(&stderr, 40));
    assert!(!stderr.contains("panicked"), "{}", tail(&stderr, 40));
    assert_eq!(depth(&q).await, (0, 0, 0), "{report}");
}
