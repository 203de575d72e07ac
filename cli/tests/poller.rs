//! `sqskit poll` as a real process against LocalStack.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use sqskit::processor::dead_letter_attributes as dl;
use sqskit::{AttributeValue, OutgoingMessage, Queue};
use support::proc::{demo_handler, log_lines, spawn, sqskit, tail, temp_dir, wait_until};
use support::*;

const EXIT_LIMIT: Duration = Duration::from_secs(120);

fn poll_exec(queue: &Queue, log: &std::path::Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = sqskit(None);
    cmd.env("HANDLER_LOG", log);
    cmd.args([
        "poll",
        "--queue-url",
        queue.url(),
        "--exec",
        demo_handler().to_str().unwrap(),
        "--progress-interval",
        "0",
    ]);
    cmd.args(extra);
    cmd
}

/// `event -> {message id -> receive counts}` from the handler log.
fn events(log: &std::path::Path) -> HashMap<String, Vec<(String, u32)>> {
    let mut out: HashMap<String, Vec<(String, u32)>> = HashMap::new();
    for line in log_lines(log) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let [event, id, rc] = parts[..] {
            out.entry(event.to_string()).or_default().push((id.to_string(), rc.parse().unwrap_or(0)));
        }
    }
    out
}

fn ids(ev: &HashMap<String, Vec<(String, u32)>>, event: &str) -> Vec<String> {
    ev.get(event).map(|v| v.iter().map(|(id, _)| id.clone()).collect()).unwrap_or_default()
}

async fn send_bodies(q: &Queue, bodies: impl IntoIterator<Item = String>) -> Vec<String> {
    let report = q.send_batch(bodies.into_iter().map(OutgoingMessage::new)).await.unwrap();
    report.into_result().unwrap().into_iter().map(|s| s.message_id).collect()
}

#[tokio::test]
async fn exec_handler_processes_1000_messages_and_empties_the_queue() {
    let (q, dlq) = queue_with_dlq("e2e-exec", 5, false, 30).await;
    let sent = send_bodies(&q, (0..1000).map(|i| format!("{{\"n\":{i}}}"))).await;
    let dir = temp_dir("exec");
    let log = dir.join("handler.log");
    let mut p = spawn(poll_exec(&q, &log, &["--until-empty", "--concurrency", "32"]));
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    let done: HashSet<String> = ids(&events(&log), "done").into_iter().collect();
    assert_eq!(done, sent.iter().cloned().collect::<HashSet<_>>(), "every message handled");
    assert_eq!(depth(&q).await, (0, 0, 0), "queue empty");
    assert_eq!(depth(&dlq).await.0, 0);
    let summary: serde_json::Value = serde_json::from_str(p.stdout().trim()).unwrap();
    assert_eq!(summary["succeeded"], 1000);
    assert!(!p.stderr().contains("{\"n\""), "bodies are never logged");
}

#[tokio::test]
async fn http_handler_processes_1000_messages_with_sqsd_headers() {
    let (url, seen) = http::serve(|body| if body.contains("teapot") { (418, None) } else { (200, None) });
    let (q, dlq) = queue_with_dlq("e2e-http", 5, false, 30).await;
    let mut msgs: Vec<OutgoingMessage> = (0..1000).map(|i| OutgoingMessage::new(format!("{{\"n\":{i}}}"))).collect();
    msgs[0] = OutgoingMessage::new("{\"n\":0}")
        .attribute("tenant", AttributeValue::string("acme"))
        .attribute("Content-Type", AttributeValue::string("text/x-test"));
    msgs.push(OutgoingMessage::new("{\"teapot\":true}"));
    let sent = q.send_batch(msgs).await.unwrap().into_result().unwrap();
    let mut p = spawn({
        let mut c = sqskit(None);
        c.args(["poll", "--queue-url", q.url(), "--http", &url, "--until-empty", "--progress-interval", "0"]);
        c
    });
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    let seen = seen.lock().unwrap().clone();
    let got: HashSet<&str> =
        seen.iter().filter_map(|r| r.headers.get("x-aws-sqsd-msgid").map(String::as_str)).collect();
    assert_eq!(got.len(), 1001);
    assert!(sent.iter().all(|s| got.contains(s.message_id.as_str())));
    let first = seen.iter().find(|r| r.headers.get("x-aws-sqsd-msgid") == Some(&sent[0].message_id)).unwrap();
    assert_eq!(first.body, "{\"n\":0}");
    assert_eq!(first.headers["x-aws-sqsd-queue"], q.name());
    assert_eq!(first.headers["x-aws-sqsd-receive-count"], "1");
    assert_eq!(first.headers["x-aws-sqsd-attr-tenant"], "acme");
    assert_eq!(first.headers["content-type"], "text/x-test");
    assert!(first.headers.contains_key("x-aws-sqsd-first-received-at"));
    let other = seen.iter().find(|r| r.headers.get("x-aws-sqsd-msgid") == Some(&sent[5].message_id)).unwrap();
    assert_eq!(other.headers["content-type"], "application/json");
    // 418: a 4xx other than 429 is permanent: dead-lettered, not retried
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "{\"teapot\":true}");
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn heartbeat_keeps_a_slow_message_from_being_received_twice() {
    let q = queue("heartbeat").await;
    let sent = send_bodies(&q, (0..3).map(|i| format!("slow {i} sleep:6"))).await;
    let dir = temp_dir("hb");
    let log = dir.join("handler.log");
    // visibility 2 s, handlers take 6 s: without the heartbeat each would be received ~3 times
    let mut p = spawn(poll_exec(&q, &log, &["--until-empty", "--visibility-timeout", "2", "--wait-time", "1"]));
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "stderr:\n{}", tail(&p.stderr(), 30));
    let ev = events(&log);
    let mut starts = ids(&ev, "start");
    starts.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(starts, want, "each message started exactly once");
    let summary: serde_json::Value = serde_json::from_str(p.stdout().trim()).unwrap();
    assert!(summary["extensions"].as_u64().unwrap() >= 3, "{summary}");
}

#[tokio::test]
async fn flaky_message_succeeds_on_the_third_receive() {
    let q = queue("retry").await;
    let sent = send_bodies(&q, ["flaky one".to_string()]).await;
    let dir = temp_dir("retry");
    let log = dir.join("handler.log");
    let mut p =
        spawn(poll_exec(&q, &log, &["--until-empty", "--backoff-base", "1", "--backoff-max", "1", "--wait-time", "1"]));
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "stderr:\n{}", tail(&p.stderr(), 30));
    let ev = events(&log);
    assert_eq!(ev["fail"].len(), 2);
    assert_eq!(ev["done"], vec![(sent[0].clone(), 3)], "processed once successfully, on receive 3");
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn poison_messages_end_in_the_dlq_and_good_ones_are_processed() {
    let (q, dlq) = queue_with_dlq("poison", 5, false, 30).await;
    let bodies: Vec<String> =
        (0..50).map(|i| if i % 10 == 3 { format!("poison {i}") } else { format!("good {i}") }).collect();
    let sent = send_bodies(&q, bodies.clone()).await;
    let dir = temp_dir("poison");
    let log = dir.join("handler.log");
    let mut p = spawn(poll_exec(&q, &log, &["--until-empty"]));
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    let done: HashSet<String> = ids(&events(&log), "done").into_iter().collect();
    let good: HashSet<String> =
        sent.iter().zip(&bodies).filter(|(_, b)| b.starts_with("good")).map(|(id, _)| id.clone()).collect();
    assert_eq!(done, good);
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    let mut dead_bodies: Vec<&str> = dead.iter().map(|m| m.body.as_str()).collect();
    dead_bodies.sort();
    let mut want: Vec<&str> = bodies.iter().filter(|b| b.starts_with("poison")).map(String::as_str).collect();
    want.sort();
    assert_eq!(dead_bodies, want);
    assert!(dead
        .iter()
        .all(|m| m.attribute_str(dl::ERROR_KIND) == Some("permanent")
            && m.attribute_str(dl::SOURCE_QUEUE) == Some(q.name())));
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn sigterm_drains_running_handlers_and_exits_zero() {
    let q = queue("sigterm").await;
    let sent = send_bodies(&q, (0..20).map(|i| format!("job {i} sleep:2"))).await;
    let dir = temp_dir("term");
    let log = dir.join("handler.log");
    let mut p =
        spawn(poll_exec(&q, &log, &["--concurrency", "4", "--visibility-timeout", "60", "--shutdown-timeout", "10"]));
    wait_until(Duration::from_secs(30), "handlers to start", || ids(&events(&log), "start").len() >= 4);
    let t = Instant::now();
    p.signal("TERM");
    let status = p.wait(Duration::from_secs(20));
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    assert!(t.elapsed() < Duration::from_secs(10), "exited within the deadline ({:?})", t.elapsed());
    let ev = events(&log);
    let started: HashSet<String> = ids(&ev, "start").into_iter().collect();
    let done: HashSet<String> = ids(&ev, "done").into_iter().collect();
    assert_eq!(started, done, "every started handler finished");
    // nothing lost: the rest are visible right away (not after the 60 s visibility timeout)
    let rest: HashSet<String> =
        peek_all(&q, Duration::from_secs(1), Duration::from_secs(60)).await.into_iter().map(|m| m.message_id).collect();
    assert_eq!(rest.len() + done.len(), 20, "done {} + visible {} = 20", done.len(), rest.len());
    assert!(rest.is_disjoint(&done));
    assert_eq!(rest.union(&done).cloned().collect::<HashSet<_>>(), sent.into_iter().collect());
}

#[tokio::test]
async fn sigterm_releases_unstarted_fifo_messages_at_once_in_order() {
    let q = fifo_queue("termfifo").await;
    let msgs = (0..6).map(|i| OutgoingMessage::new(format!("g{i} sleep:1")).group_id("G"));
    let sent: Vec<String> =
        q.send_batch(msgs).await.unwrap().into_result().unwrap().into_iter().map(|s| s.message_id).collect();
    let dir = temp_dir("termfifo");
    let log = dir.join("handler.log");
    // wait time 3 s: the cancelled long polls live on server-side for up to 3 s; released
    // messages are timed to come back just after them
    let mut p =
        spawn(poll_exec(&q, &log, &["--visibility-timeout", "120", "--shutdown-timeout", "10", "--wait-time", "3"]));
    wait_until(Duration::from_secs(30), "the first handler to start", || !ids(&events(&log), "start").is_empty());
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(20)).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    let done = ids(&events(&log), "done");
    assert!(!done.is_empty() && done.len() < 6, "stopped part way: {done:?}");
    assert_eq!(done[..], sent[..done.len()], "in order");
    // the unstarted rest of the group comes back at once (not after the 120 s visibility timeout), in order
    let t = Instant::now();
    let rest: Vec<String> = drain(&q, Duration::from_secs(5)).await.into_iter().map(|m| m.message_id).collect();
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(rest[..], sent[done.len()..]);
}

#[tokio::test]
async fn kill_9_then_restart_loses_nothing() {
    let (q, dlq) = queue_with_dlq("kill9", 10, false, 3).await;
    let sent = send_bodies(&q, (0..200).map(|i| format!("k{i}"))).await;
    let dir = temp_dir("kill9");
    let log = dir.join("handler.log");
    let p = spawn(poll_exec(&q, &log, &["--concurrency", "8", "--visibility-timeout", "3"]));
    wait_until(Duration::from_secs(60), "some progress", || ids(&events(&log), "done").len() >= 40);
    p.signal("KILL");
    drop(p);
    let mut p2 = spawn(poll_exec(
        &q,
        &log,
        &["--concurrency", "8", "--visibility-timeout", "3", "--until-empty", "--wait-time", "1"],
    ));
    assert!(p2.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p2.stderr(), 30));
    let done: HashSet<String> = ids(&events(&log), "done").into_iter().collect();
    let dead: HashSet<String> = drain(&dlq, Duration::from_secs(1)).await.into_iter().map(|m| m.message_id).collect();
    let accounted: HashSet<String> = done.union(&dead).cloned().collect();
    assert_eq!(accounted, sent.into_iter().collect::<HashSet<_>>(), "every message processed at least once");
}

#[tokio::test]
async fn poller_survives_an_unreachable_endpoint_and_finishes_the_work() {
    let target = endpoint().trim_start_matches("http://").to_string();
    let proxy = proxy::Proxy::start(target);
    let q = queue("outage").await;
    let first = send_bodies(&q, (0..20).map(|i| format!("before {i}"))).await;
    let dir = temp_dir("outage");
    let log = dir.join("handler.log");
    let mut cmd = poll_exec(&q, &log, &["--until-empty", "--wait-time", "1"]);
    cmd.env("AWS_ENDPOINT_URL", &proxy.url);
    let mut p = spawn(cmd);
    wait_until(Duration::from_secs(60), "the first messages", || ids(&events(&log), "done").len() >= 20);
    proxy.cut();
    let second = send_bodies(&q, (0..20).map(|i| format!("during {i}"))).await;
    std::thread::sleep(Duration::from_secs(6));
    assert!(p.child.try_wait().unwrap().is_none(), "still running during the outage");
    let done_during = ids(&events(&log), "done").len();
    proxy.restore();
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "stderr:\n{}", tail(&p.stderr(), 30));
    let err = p.stderr();
    assert!(err.contains("receive failed"), "the outage was logged:\n{}", tail(&err, 20));
    assert!(err.contains("retry_in"), "with a backoff");
    assert_eq!(done_during, 20, "nothing handled while cut");
    let done: HashSet<String> = ids(&events(&log), "done").into_iter().collect();
    assert_eq!(done, first.into_iter().chain(second).collect::<HashSet<_>>());
}

#[tokio::test]
async fn metrics_endpoint_reports_what_happened() {
    let (q, _dlq) = queue_with_dlq("metrics", 5, false, 30).await;
    let bodies: Vec<String> = (0..12).map(|i| if i < 2 { format!("poison {i}") } else { format!("ok {i}") }).collect();
    send_bodies(&q, bodies).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let dir = temp_dir("metrics");
    let log = dir.join("handler.log");
    let p = spawn(poll_exec(&q, &log, &["--metrics-addr", &addr, "--wait-time", "1"]));
    wait_until(Duration::from_secs(60), "all handled", || events(&log).values().map(Vec::len).sum::<usize>() >= 24);
    let client = reqwest_get(&addr);
    let mut text = String::new();
    wait_until(Duration::from_secs(20), "metrics to settle", || {
        text = client();
        metric(&text, "sqskit_messages_succeeded_total", "") == Some(10.0)
            && metric(&text, "sqskit_messages_dead_lettered_total", "") == Some(2.0)
    });
    assert_eq!(
        metric(&text, "sqskit_messages_received_total", &format!("queue=\"{}\"", q.name())),
        Some(12.0),
        "{text}"
    );
    assert_eq!(metric(&text, "sqskit_messages_failed_total", "kind=\"permanent\""), Some(2.0), "{text}");
    assert!(text.contains("sqskit_handler_duration_seconds_bucket"), "{text}");
    assert_eq!(metric(&text, "sqskit_in_flight", ""), Some(0.0));
    p.signal("TERM");
}

/// A minimal blocking GET /metrics.
fn reqwest_get(addr: &str) -> impl Fn() -> String {
    let addr = addr.to_string();
    move || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(&addr) else { return String::new() };
        let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }
}

/// The value of `name{...labels containing `label`...}` (or without labels when `label` is empty).
fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{')))
        .filter(|l| label.is_empty() || l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

#[tokio::test]
async fn weighted_queues_are_all_drained() {
    let high = queue("weight-high").await;
    let low = queue("weight-low").await;
    let hi_ids = send_bodies(&high, (0..60).map(|i| format!("high {i}"))).await;
    let lo_ids = send_bodies(&low, (0..60).map(|i| format!("low {i}"))).await;
    let dir = temp_dir("weights");
    let log = dir.join("handler.log");
    let mut cmd = sqskit(None);
    cmd.env("HANDLER_LOG", &log);
    cmd.args(["poll", "--queue-url", &format!("{}=3", high.url()), "--queue-url", &format!("{}=1", low.url())]);
    cmd.args(["--exec", demo_handler().to_str().unwrap(), "--until-empty", "--wait-time", "1", "--concurrency", "10"]);
    let mut p = spawn(cmd);
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    let done: Vec<String> = ids(&events(&log), "done");
    let set: HashSet<&String> = done.iter().collect();
    assert!(hi_ids.iter().chain(&lo_ids).all(|id| set.contains(id)), "both queues drained");
    // the high-weight queue is served first: most of its messages finish in the first half
    let first_half: HashSet<&String> = done[..done.len() / 2].iter().collect();
    let high_early = hi_ids.iter().filter(|id| first_half.contains(id)).count();
    assert!(high_early > 30, "high weight served first ({high_early} of 60 high messages in the first half)");
}

/// `sqskit health --addr ADDR [--ready]`: (exit 0, the printed report).
fn health_check(addr: &str, ready: bool) -> (bool, String) {
    let mut cmd = sqskit(None);
    cmd.args(["health", "--addr", addr, "--timeout", "3"]);
    if ready {
        cmd.arg("--ready");
    }
    let out = cmd.output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn health_endpoints_flip_during_an_outage_and_recover() {
    let proxy = proxy::Proxy::start(endpoint().trim_start_matches("http://").to_string());
    let q = queue("health").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let (refused, said) = health_check(&addr, false);
    assert!(!refused && said.contains("cannot connect"), "nothing listening yet: {said}");
    let log = temp_dir("health").join("handler.log");
    // liveness window: 2 × 1 s + 2 s
    let mut cmd = poll_exec(&q, &log, &["--metrics-addr", &addr, "--wait-time", "1", "--liveness-margin", "2"]);
    cmd.env("AWS_ENDPOINT_URL", &proxy.url);
    let mut p = spawn(cmd);
    wait_until(Duration::from_secs(60), "live and ready", || {
        health_check(&addr, false).0 && health_check(&addr, true).0
    });

    proxy.cut();
    wait_until(Duration::from_secs(20), "not ready once a receive failed", || !health_check(&addr, true).0);
    let (live, report) = health_check(&addr, false);
    assert!(live, "one failed receive is not a dead poller (window 4 s): {report}");
    wait_until(Duration::from_secs(30), "not live after the window", || !health_check(&addr, false).0);
    let (_, report) = health_check(&addr, false);
    assert!(report.contains("\"live\":false") && report.contains("\"last_receive_ok\":false"), "{report}");
    assert!(report.contains("answered 503"), "{report}");

    proxy.restore();
    wait_until(Duration::from_secs(60), "live and ready again", || {
        health_check(&addr, false).0 && health_check(&addr, true).0
    });
    p.signal("TERM");
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
}

#[tokio::test]
async fn rate_flag_spaces_the_starts_and_refuses_nonsense() {
    let q = queue("cli-rate").await;
    send_bodies(&q, (0..30).map(|i| format!("r{i}"))).await;
    let log = temp_dir("cli-rate").join("handler.log");
    let t = Instant::now();
    let mut p =
        spawn(poll_exec(&q, &log, &["--rate", "10", "--concurrency", "30", "--until-empty", "--wait-time", "1"]));
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    assert_eq!(ids(&events(&log), "done").len(), 30);
    assert!(t.elapsed() >= Duration::from_millis(2900), "30 starts at 10/s take ≥ 2.9 s: {:?}", t.elapsed());
    for bad in ["0", "-1", "fast", "200000"] {
        let out = sqskit(None)
            .args(["poll", "--queue-url", q.url(), "--exec", "true", &format!("--rate={bad}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--rate"), "{err}");
    }
}

#[tokio::test]
async fn send_delay_past_one_hop_is_delivered_by_poll_after_its_time() {
    let q = queue("cli-delay").await;
    let sent_at = std::time::SystemTime::now();
    let out = sqskit(None)
        .args(["send", "--queue-url", q.url(), "--body", "later", "--delay", "5s", "--delay-hop", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = temp_dir("cli-delay").join("handler.log");
    let mut p = spawn(poll_exec(&q, &log, &["--delay-hop", "2", "--until-empty", "--wait-time", "1"]));
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
    assert!(sent_at.elapsed().unwrap() >= Duration::from_secs(5), "not handled before it was due");
    assert_eq!(ids(&events(&log), "done").len(), 1, "handled once");
    let tomorrow = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(86_400));
    let tomorrow = tomorrow.to_string();
    for (args, says) in [
        (vec!["--body", "x", "--delay", "soon"], "--delay"),
        (vec!["--body", "x", "--deliver-at", "tomorrow"], "--deliver-at"),
        (vec!["--body", "x", "--delay", "1h", "--deliver-at", &tomorrow], "cannot be used with"),
    ] {
        let out = sqskit(None).args(["send", "--queue-url", q.url()]).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
    }
    let fifo = fifo_queue("cli-delay-fifo").await;
    let out = sqskit(None)
        .args(["send", "--queue-url", fifo.url(), "--body", "x", "--group-id", "g", "--delay", "2h"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("FIFO") && err.contains("--delay"), "a usage error: {err}");
}

#[tokio::test]
async fn tenant_metrics_on_a_fair_queue_are_bounded_with_an_other_bucket() {
    let q = queue("cli-tenants").await;
    // 5 tenants × 3 messages, sent with `sqskit send --group-id` on a standard queue
    for t in 0..5 {
        for i in 0..3 {
            let out = sqskit(None)
                .args([
                    "send",
                    "--queue-url",
                    q.url(),
                    "--body",
                    &format!("t{t}-{i}"),
                    "--group-id",
                    &format!("tenant-{t}"),
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let log = temp_dir("cli-tenants").join("handler.log");
    let p = spawn(poll_exec(&q, &log, &["--metrics-addr", &addr, "--wait-time", "1", "--tenant-metrics", "3"]));
    wait_until(Duration::from_secs(60), "all handled", || ids(&events(&log), "done").len() >= 15);
    let get = reqwest_get(&addr);
    let mut text = String::new();
    wait_until(Duration::from_secs(20), "tenant counters", || {
        text = get();
        metric(&text, "sqskit_tenant_messages_total", "outcome=\"succeeded\"") == Some(15.0)
    });
    let tenants: HashSet<String> = text
        .lines()
        .filter(|l| l.starts_with("sqskit_tenant_messages_total{"))
        .filter_map(|l| l.split("tenant=\"").nth(1)?.split('"').next().map(str::to_string))
        .collect();
    assert_eq!(tenants.len(), 4, "3 tenants of their own + other: {tenants:?}");
    assert!(tenants.contains("other"));
    assert_eq!(metric(&text, "sqskit_tenant_messages_total", "tenant=\"other\""), Some(6.0), "{text}");
    p.signal("TERM");
}
