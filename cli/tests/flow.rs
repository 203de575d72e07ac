//! Flow control through the real `sqskit` binary against LocalStack: a downstream outage
//! (the circuit breaker), pausing a fleet (`sqskit pause` / `resume`), and the breaker's
//! switches.
use sqskit_test_support as support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqskit::{OutgoingMessage, Queue};
use support::http::{serve_with, Reply};
use support::proc::{run, spawn, sqskit, tail};
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

/// The issue's reproduction, at the breaker's documented defaults: the downstream answers 503
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

/// `GET path` of the poller's metrics listener at `addr` (blocking, HTTP/1.0): (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The poller's `/status` at `addr`.
fn status(addr: &str) -> serde_json::Value {
    serde_json::from_str(&get(addr, "/status").1).unwrap_or_default()
}

fn paused_in(addr: &str) -> bool {
    status(addr)["paused"].as_array().is_some_and(|p| !p.is_empty())
}

/// Two poller processes on one queue, `sqskit pause`: both stop receiving within 30 s (the
/// default pause check); what is sent meanwhile stays in the queue, unhandled; `sqskit stats`
/// shows the queue paused with the reason, for the queue and for each poller; `sqskit resume`:
/// everything is handled, once. Paused again, SIGTERM: both drain and exit 0, nothing lost.
#[tokio::test]
async fn pause_and_resume_a_fleet_of_two_pollers() {
    let q = queue("pause").await;
    let (url, posts) = downstream(|_, _| 200);
    let addrs: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", support::stores::free_port())).collect();
    let mut pollers: Vec<_> = addrs
        .iter()
        .map(|a| spawn(poll_http(&q, &url, &["--wait-time", "1", "--metrics-addr", a, "--concurrency", "4"])))
        .collect();
    let handled =
        |posts: &Posts, prefix: &str| posts.lock().unwrap().iter().filter(|p| p.1.starts_with(prefix)).count();
    send_bodies(&q, (0..20).map(|i| format!("before-{i}"))).await;
    support::proc::wait_until(Duration::from_secs(30), "the first messages", || handled(&posts, "before") == 20);

    let (code, out, err) = run(&["pause", "--queue-url", q.url(), "--reason", "deploy of the billing service"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("paused") && out.contains("within 30 s"), "{out}");
    let paused_at = Instant::now();
    support::proc::wait_until(Duration::from_secs(35), "both pollers to see the pause flag", || {
        addrs.iter().all(|a| paused_in(a))
    });
    let seen_after = paused_at.elapsed();
    // a long poll already waiting when the flag was read ends within the wait time (1 s)
    tokio::time::sleep(Duration::from_secs(2)).await;
    send_bodies(&q, (0..50).map(|i| format!("while-{i}"))).await;
    let (code, out, err) = run(&["stats", "--queue-url", q.url(), "--poller", &addrs[0], "--poller", &addrs[1]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().nth(1).is_some_and(|l| l.contains("deploy of the billing service")), "{out}");
    assert_eq!(out.matches("paused: ").count(), 2, "each poller reports the pause: {out}");
    assert!(out.contains("breaker closed"), "{out}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(handled(&posts, "while"), 0, "nothing handled while paused");
    assert_eq!(depth(&q).await.0, 50, "nothing received while paused");

    let (code, out, err) = run(&["resume", "--queue-url", q.url()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("was paused: deploy of the billing service"), "{out}");
    let resumed_at = Instant::now();
    support::proc::wait_until(Duration::from_secs(40), "the messages sent while paused", || {
        handled(&posts, "while") >= 50
    });
    let handled_after = resumed_at.elapsed();
    let (_, out, _) = run(&["resume", "--queue-url", q.url()]);
    assert!(out.contains("was not paused"), "{out}");
    let bodies: Vec<String> = posts.lock().unwrap().iter().map(|p| p.1.clone()).collect();
    let unique: HashSet<&String> = bodies.iter().collect();
    assert_eq!(unique.len(), bodies.len(), "nothing handled twice");
    assert_eq!(bodies.len(), 70);

    // paused again, with messages waiting: SIGTERM drains, exits 0, loses nothing
    run(&["pause", "--queue-url", q.url()]);
    support::proc::wait_until(Duration::from_secs(35), "the pause again", || addrs.iter().all(|a| paused_in(a)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    send_bodies(&q, (0..5).map(|i| format!("last-{i}"))).await;
    for p in &pollers {
        p.signal("TERM");
    }
    for p in &mut pollers {
        let status = p.wait(EXIT_LIMIT);
        assert!(status.success(), "exit {status}: {}", tail(&p.stderr(), 20));
        assert!(!p.stderr().contains("panicked"));
        assert!(p.stderr().contains("queue paused"), "the pause is logged: {}", tail(&p.stderr(), 20));
    }
    assert_eq!(depth(&q).await, (5, 0, 0), "the messages sent while paused are all there");
    eprintln!("pause seen by both pollers after {seen_after:?}; resumed work done {handled_after:?} after resume");
}

/// 10 % of POSTs answered 503 at random: the breaker never opens (no transition in /status or
/// the logs), every message is delivered.
#[tokio::test]
async fn a_ten_percent_random_failure_rate_never_opens_the_breaker() {
    let q = queue("random503").await;
    // xorshift64, seeded: 10 % of answers 503, at random
    let rng = Mutex::new(0x9E37_79B9_7F4A_7C15u64);
    let (url, posts) = downstream(move |_, _| {
        let mut x = rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        if (*x).is_multiple_of(10) {
            503
        } else {
            200
        }
    });
    send_bodies(&q, (0..1500).map(|i| format!("m-{i}"))).await;
    let addr = format!("127.0.0.1:{}", support::stores::free_port());
    let mut p = spawn(poll_http(
        &q,
        &url,
        &["--backoff-base", "1", "--backoff-max", "1", "--wait-time", "1", "--metrics-addr", &addr],
    ));
    let ok = |posts: &Posts| {
        posts.lock().unwrap().iter().filter(|p| p.2 == 200).map(|p| p.1.clone()).collect::<HashSet<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while ok(&posts).len() < 1500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = status(&addr);
    p.signal("TERM");
    assert!(p.wait(EXIT_LIMIT).success());
    let failed = posts.lock().unwrap().iter().filter(|p| p.2 == 503).count();
    assert_eq!(ok(&posts).len(), 1500, "all delivered ({failed} 503s)");
    assert!(failed >= 100, "the downstream did fail about 10 %: {failed}");
    assert_eq!(st["breaker"]["state"], "closed", "{st}");
    assert_eq!(st["breaker"]["transitions"], 0, "{st}");
    assert!(!p.stderr().contains("circuit breaker open"), "{}", tail(&p.stderr(), 20));
}

/// The downstream is down for good: the breaker opens (/readyz answers 503, `sqskit stats
/// --poller` shows it), SIGTERM drains and exits 0, and every message is still in the queue,
/// none dead-lettered.
#[tokio::test]
async fn sigterm_while_the_breaker_is_open_drains_and_loses_nothing() {
    let (q, dlq) = queue_with_dlq("open-term", 4, false, 30).await;
    send_bodies(&q, (0..40).map(|i| format!("m-{i}"))).await;
    let (url, posts) = downstream(|_, _| 503);
    let addr = format!("127.0.0.1:{}", support::stores::free_port());
    let mut p = spawn(poll_http(&q, &url, &["--backoff-base", "1", "--backoff-max", "1", "--metrics-addr", &addr]));
    support::proc::wait_until(Duration::from_secs(30), "the breaker to open", || {
        status(&addr)["breaker"]["state"].as_str().is_some_and(|s| s != "closed")
    });
    assert_eq!(get(&addr, "/readyz").0, 503, "not ready while open");
    assert_eq!(get(&addr, "/healthz").0, 200, "but live");
    let (_, out, _) = run(&["stats", "--queue-url", q.url(), "--poller", &addr]);
    assert!(out.contains("breaker open") || out.contains("breaker half-open"), "{out}");
    assert!(out.contains("of the last") || out.contains("probe"), "the reason is shown: {out}");
    let posts_at_open = posts.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    p.signal("TERM");
    let status = p.wait(EXIT_LIMIT);
    let stderr = p.stderr();
    assert!(status.success(), "exit {status}: {}", tail(&stderr, 20));
    assert!(stderr.contains("circuit breaker open") && stderr.contains("reason="), "{}", tail(&stderr, 20));
    assert!(!stderr.contains("panicked"));
    // the failed ones come back after their 1 s backoff, the released ones at once
    let deadline = Instant::now() + Duration::from_secs(20);
    while depth(&q).await.0 < 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(depth(&q).await, (40, 0, 0), "nothing lost");
    assert_eq!(depth(&dlq).await.0, 0, "nothing dead-lettered");
    let posts = posts.lock().unwrap().len();
    assert!(posts <= posts_at_open + 3, "at most a probe a second while open: {posts_at_open} then {posts}");
}

/// `--breaker-max-outage 5` and a downstream down for good: the breaker opens, stands aside once
/// the outage outlasts 5 s, and the messages then follow the normal rules (retries, then the
/// DLQ as retries-exhausted).
#[tokio::test]
async fn an_outage_longer_than_max_outage_follows_the_normal_rules() {
    let (q, dlq) = queue_with_dlq("max-outage", 3, false, 30).await;
    send_bodies(&q, (0..30).map(|i| format!("m-{i}"))).await;
    let (url, _posts) = downstream(|_, _| 503);
    let mut p = spawn(poll_http(
        &q,
        &url,
        &["--backoff-base", "1", "--backoff-max", "1", "--wait-time", "1", "--breaker-max-outage", "5"],
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while depth(&dlq).await.0 < 30 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    p.signal("TERM");
    assert!(p.wait(EXIT_LIMIT).success());
    let stderr = p.stderr();
    assert!(stderr.contains("circuit breaker open"), "{}", tail(&stderr, 20));
    assert!(stderr.contains("outage outlasted"), "{}", tail(&stderr, 20));
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    assert_eq!(dead.len(), 30, "all dead-lettered by the normal rules");
    assert_eq!(depth(&q).await, (0, 0, 0));
}

/// `sqskit pause --function` disables a Lambda function's event source mapping from the queue,
/// `sqskit resume --function` enables it again (and the queue's pause tag goes and comes with
/// it). LocalStack here runs without Lambda (no Docker, `SERVICES` without it), so this runs
/// against moto, which implements the Lambda API's event source mappings (not invocations):
/// the queue, an IAM role, a function and its mapping are made there with boto3.
#[tokio::test]
async fn pause_with_a_function_disables_and_enables_its_event_source_mapping() {
    let moto = support::stores::dynamodb_url();
    let name = support::unique("esm");
    let setup = format!(
        r##"
import boto3, io, json, zipfile
kw = dict(endpoint_url="{moto}", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
sqs, lam, iam = boto3.client("sqs", **kw), boto3.client("lambda", **kw), boto3.client("iam", **kw)
url = sqs.create_queue(QueueName="{name}")["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
trust = {{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Principal": {{"Service": "lambda.amazonaws.com"}}, "Action": "sts:AssumeRole"}}]}}
role = iam.create_role(RoleName="{name}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
z = io.BytesIO()
with zipfile.ZipFile(z, "w") as f:
    f.writestr("bootstrap", "#!/bin/sh\n")
lam.create_function(FunctionName="{name}", Runtime="provided.al2023", Role=role, Handler="bootstrap", Code={{"ZipFile": z.getvalue()}})
m = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="{name}", BatchSize=10)
print(url, m["UUID"])
"##
    );
    let py = |script: &str| {
        let out = std::process::Command::new(support::stores::python()).args(["-c", script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let made = py(&setup);
    let (url, uuid) = made.split_once(' ').unwrap();
    let state = || {
        py(&format!(
            r#"
import boto3
kw = dict(endpoint_url="{moto}", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
m = boto3.client("lambda", **kw).get_event_source_mapping(UUID="{uuid}")
t = boto3.client("sqs", **kw).list_queue_tags(QueueUrl="{url}").get("Tags", {{}})
print(m["State"], t.get("sqskit:paused", "-"))
"#
        ))
    };
    let at_moto = |args: &[&str]| {
        let out = sqskit(Some(&moto)).args(args).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    };
    assert_eq!(state(), "Enabled -");
    let (code, out) = at_moto(&["pause", "--queue-url", url, "--function", &name, "--reason", "deploy"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("disabled the event source mapping {uuid}")), "{out}");
    assert_eq!(state(), "Disabled deploy");
    let (code, out) = at_moto(&["resume", "--queue-url", url, "--function", &name]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("enabled the event source mapping"), "{out}");
    assert_eq!(state(), "Enabled -");
    // a function with no mapping from the queue, and no such function: clear errors, nothing changed
    let (code, out) = at_moto(&["pause", "--queue-url", url, "--function", "no-such-function-here"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no-such-function-here"), "{out}");
    assert_eq!(state(), "Enabled -", "nothing paused when the function part fails");
    // a bad reason is a usage error naming the flag
    let (code, out) = at_moto(&["pause", "--queue-url", url, "--reason", "deploy #42"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--reason") && out.contains("'#'"), "{out}");
    py(&format!(
        r#"
import boto3
kw = dict(endpoint_url="{moto}", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
lam = boto3.client("lambda", **kw)
lam.delete_event_source_mapping(UUID="{uuid}")
lam.delete_function(FunctionName="{name}")
boto3.client("iam", **kw).delete_role(RoleName="{name}")
boto3.client("sqs", **kw).delete_queue(QueueUrl="{url}")
"#
    ));
}
