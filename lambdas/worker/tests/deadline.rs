//! The real `worker` binary and the invocation deadline: it answers before the deadline, listing
//! every message it did not finish — those it did not start and those still running, whose
//! webhook calls it cancels — instead of timing out (Lambda would then re-run the whole batch,
//! successes included). Also with two invocations at once, as on Lambda Managed Instances
//! (`AWS_LAMBDA_MAX_CONCURRENCY`): each answer lists only its own failures and honours its own
//! deadline. Behind a local Runtime API that hands out several invocations and times each answer
//! (tests/support/lambda_rt_concurrent.rs).
#[path = "../../../tests/support/hooks.rs"]
mod hooks;
#[path = "../../../tests/support/lambda_rt_concurrent.rs"]
mod lambda_rt_concurrent;
#[path = "../../../tests/support/stores.rs"]
mod stores;
#[path = "../../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hooks::Hooks;
use lambda_rt_concurrent::ConcurrentLambda;
use serde_json::{json, Value};
use sqskit::{OutgoingMessage, ReceivedMessage};
use support::http::{serve_with, Reply};
use support::lambda_rt::{emf_lines, event, failures, response, Answer, LambdaHarness};
use support::*;

fn delivery(id: &str, url: &str) -> String {
    json!({"delivery_id": id, "url": url, "event_type": "e", "payload": {"id": id}}).to_string()
}

/// The worker's idempotency settings, on a fresh DynamoDB table (moto): (client, table, env).
async fn idempotency(prefix: &str) -> (aws_sdk_dynamodb::Client, String, Vec<(&'static str, String)>) {
    let db = stores::dynamodb().await;
    let table = stores::table(&db, &unique(prefix)).await;
    let env = vec![
        ("SQSKIT_IDEMPOTENCY_TABLE", table.clone()),
        ("SQSKIT_IDEMPOTENCY_KEY", "/delivery_id".to_string()),
        ("SQSKIT_IDEMPOTENCY_PREFIX", "webhooks".to_string()),
        ("AWS_ENDPOINT_URL_DYNAMODB", stores::dynamodb_url()),
    ];
    (db, table, env)
}

/// `/ok` answers 200 at once; `/hang` never answers (the worker's HTTP client would give up
/// after 10 s, far past the deadlines below).
fn ok_or_hang() -> Hooks {
    Hooks::start(|req| if req.path == "/hang" { hooks::never() } else { hooks::after(Duration::ZERO, 200) })
}

/// `(delivery id, url)` sent in this order and received back sorted by that order.
async fn send_deliveries(q: &sqskit::Queue, list: &[(String, String)], group: Option<&str>) -> Vec<ReceivedMessage> {
    let bodies: Vec<String> = list.iter().map(|(id, url)| delivery(id, url)).collect();
    q.send_batch(bodies.iter().map(|b| match group {
        Some(g) => OutgoingMessage::new(b.clone()).group_id(g),
        None => OutgoingMessage::new(b.clone()),
    }))
    .await
    .unwrap()
    .into_result()
    .unwrap();
    let mut got = receive_exactly(q, list.len()).await;
    got.sort_by_key(|m| bodies.iter().position(|b| *b == m.body));
    got
}

#[tokio::test]
async fn worker_answers_before_the_deadline_listing_the_webhooks_still_running() {
    let hooks = ok_or_hang();
    let q = queue("worker-cut").await;
    let arn = q.attributes().await.unwrap().arn.unwrap();
    let (db, table, env) = idempotency("worker-cut").await;
    // 10 records: 4 answered at once, 6 never (each would take the HTTP client's 10 s)
    let list: Vec<(String, String)> = (0..10)
        .map(|i| {
            let path = if i % 5 == 1 || i % 5 == 3 || i % 5 == 4 { "/hang" } else { "/ok" };
            (format!("d{i}"), hooks.url(path))
        })
        .collect();
    let got = send_deliveries(&q, &list, None).await;
    let hanging: BTreeSet<String> =
        got.iter().filter(|m| m.body.contains("/hang")).map(|m| m.message_id.clone()).collect();
    assert_eq!(hanging.len(), 6);

    let mut lambda = ConcurrentLambda::start(env!("CARGO_BIN_EXE_worker"), "worker-cut", &env);
    let id = lambda.submit(event(got.iter().map(|m| lambda_record(m, &arn)).collect()), Duration::from_secs(6));
    let answered = lambda.wait(&id);
    let out = lambda.output_when("the EMF line", |o| !emf_lines(o).is_empty());
    eprintln!("answered {} ms before the deadline", answered.early_ms());
    assert!(answered.early_ms() > 0, "answered {} ms after the deadline; output:\n{out}", -answered.early_ms());
    let listed: BTreeSet<String> = failures(&response(answered.answer.clone(), &out)).into_iter().collect();
    assert_eq!(listed, hanging, "exactly the webhooks still running are listed; output:\n{out}");

    // each hanging call was made, and cancelled by the worker (its connection closed) before the
    // deadline; each quick one was posted once
    let deadline = answered.deadline.unwrap();
    for (d, url) in &list {
        let calls = hooks.calls_of(d);
        assert_eq!(calls.len(), 1, "{d}: {calls:?}");
        if url.ends_with("/hang") {
            hooks.wait_for(&format!("{d}'s call abandoned"), Duration::from_secs(5), |c| {
                c.iter().any(|c| c.request.delivery.as_deref() == Some(d.as_str()) && c.abandoned.is_some())
            });
            let abandoned = hooks.calls_of(d)[0].abandoned.unwrap();
            assert!(abandoned < deadline, "{d}'s call was cancelled after the deadline");
        } else {
            assert!(calls[0].answered.is_some(), "{d}: {calls:?}");
        }
    }
    // the cut claims were released (a redelivery runs at once); the delivered ones completed
    for (d, url) in &list {
        let key = format!("webhooks#{}", sqskit::idempotency::hash_value(&json!(d)));
        let item = stores::item(&db, &table, &key).await;
        if url.ends_with("/hang") {
            assert!(item.is_none(), "{d}'s claim is still held: {item:?}");
        } else {
            assert_eq!(item.expect("a record")["status"].as_s().unwrap(), "COMPLETED", "{d}");
        }
    }
    let emf = emf_lines(&out);
    assert_eq!(emf.len(), 1, "{out}");
    assert_eq!(
        (emf[0]["Succeeded"].as_f64(), emf[0]["Failed"].as_f64(), emf[0]["Failed_timeout"].as_f64()),
        (Some(4.0), Some(6.0), Some(6.0)),
        "{}",
        emf[0]
    );
    assert!(out.contains("cancelling the handlers still running"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[tokio::test]
async fn worker_on_fifo_lists_the_message_cut_at_the_deadline_and_every_later_one() {
    let hooks = ok_or_hang();
    let q = fifo_queue("worker-cut-fifo").await;
    let arn = q.attributes().await.unwrap().arn.unwrap();
    let paths = ["/ok", "/ok", "/hang", "/ok", "/ok"];
    let list: Vec<(String, String)> = paths.iter().enumerate().map(|(i, p)| (format!("f{i}"), hooks.url(p))).collect();
    let got = send_deliveries(&q, &list, Some("A")).await;
    let ids: Vec<String> = got.iter().map(|m| m.message_id.clone()).collect();
    let mut lambda = ConcurrentLambda::start(env!("CARGO_BIN_EXE_worker"), "worker-cut-fifo", &[]);
    let id = lambda.submit(event(got.iter().map(|m| lambda_record(m, &arn)).collect()), Duration::from_secs(6));
    let answered = lambda.wait(&id);
    let out = lambda.output_when("the EMF line", |o| !emf_lines(o).is_empty());
    eprintln!("answered {} ms before the deadline", answered.early_ms());
    assert!(answered.early_ms() > 0, "answered {} ms after the deadline; output:\n{out}", -answered.early_ms());
    let resp = response(answered.answer.clone(), &out);
    assert_eq!(failures(&resp), ids[2..], "the running message and every later one; output:\n{out}");
    assert_eq!((hooks.calls_of("f0").len(), hooks.calls_of("f1").len()), (1, 1));
    assert!(hooks.calls_of("f3").is_empty() && hooks.calls_of("f4").is_empty(), "nothing after the cut one ran");
    hooks.wait_for("f2's call abandoned", Duration::from_secs(5), |_| {
        hooks.calls_of("f2").first().is_some_and(|c| c.abandoned.is_some())
    });
}

#[tokio::test]
async fn worker_stops_starting_messages_near_the_deadline_and_lists_the_rest() {
    // each delivery takes 1 s; 8 in sequence (FIFO) need 8 s; the invocation has 6 s and the
    // default safety margin is 2 s: about 4 are started, the rest are listed
    let (url, seen) = serve_with(|_req| {
        std::thread::sleep(Duration::from_secs(1));
        Reply { status: 200, headers: vec![] }
    });
    let q = fifo_queue("worker-deadline").await;
    let arn = q.attributes().await.unwrap().arn.unwrap();
    let list: Vec<(String, String)> = (0..8).map(|i| (format!("d{i}"), url.clone())).collect();
    let got = send_deliveries(&q, &list, Some("A")).await;
    let ids: Vec<String> = got.iter().map(|m| m.message_id.clone()).collect();
    let mut lambda = LambdaHarness::start(env!("CARGO_BIN_EXE_worker"), "worker-deadline", &[]);
    let answer = lambda
        .invoke_with_deadline(event(got.iter().map(|m| lambda_record(m, &arn)).collect()), Duration::from_secs(6));
    let resp = response(answer, &lambda.output());
    let failed = failures(&resp);
    assert!(!failed.is_empty() && failed.len() < 8, "failed {failed:?}");
    let done = 8 - failed.len();
    assert_eq!(failed, ids[done..], "FIFO: a suffix, in order");
    // every message not listed was delivered; the server counts a call when it answers, so a
    // call cut at the deadline (listed) may be counted too
    let delivered: Vec<String> =
        seen.lock().unwrap().iter().filter_map(|r| r.headers.get("x-webhook-delivery").cloned()).collect();
    for (d, _) in &list[..done] {
        assert_eq!(delivered.iter().filter(|x| *x == d).count(), 1, "{d} delivered once: {delivered:?}");
    }
    assert!(delivered.len() <= done + 1, "at most the cut one beyond those: {delivered:?}");
    assert!(lambda.output().contains("deadline is near"), "{}", lambda.output());
}

/// The worker with `var` set to each of `refused` does not start and names the variable (no
/// panic); with each of `served` it answers an empty event.
fn refuses_out_of_range(var: &'static str, refused: &[&str], served: &[&str]) {
    for (value, ok) in refused.iter().map(|v| (v, false)).chain(served.iter().map(|v| (v, true))) {
        let mut lambda =
            LambdaHarness::start(env!("CARGO_BIN_EXE_worker"), "worker-range", &[(var, value.to_string())]);
        let answer = lambda.invoke(event(vec![]));
        let out = lambda.output();
        if ok {
            assert_eq!(response(answer, &out), json!({"batchItemFailures": []}), "{var}={value:?}");
            continue;
        }
        assert!(matches!(answer, Answer::Exited(_) | Answer::InitError(_)), "{var}={value:?}: {answer:?}\n{out}");
        assert!(out.contains(var), "{var}={value:?}: {out}");
        assert!(!out.contains("panicked"), "{var}={value:?}: {out}");
    }
}

#[tokio::test]
async fn worker_with_a_deadline_margin_out_of_range_fails_at_start_naming_it() {
    refuses_out_of_range(
        "SQSKIT_DEADLINE_MARGIN",
        &["0", "901", "18446744073709551615", "99999999999999999999999", "2s"],
        &["1", "900"],
    );
}

// ---------------------------------------------------------------- concurrent invocations

#[tokio::test]
async fn two_invocations_at_once_answer_separately_each_by_its_own_deadline() {
    // `/meet` answers once the other invocation's `/meet` call arrived too (so both invocations
    // run at the same time), `/fail` is a 503, `/hang` never answers, `/slow` takes 7 s
    let meet = Arc::new(tokio::sync::Barrier::new(2));
    let hooks = Hooks::start(move |req| match req.path.as_str() {
        "/meet" => {
            let meet = meet.clone();
            Box::pin(async move {
                match tokio::time::timeout(Duration::from_secs(8), meet.wait()).await {
                    Ok(_) => 200,
                    Err(_) => 504,
                }
            })
        }
        "/fail" => hooks::after(Duration::ZERO, 503),
        "/hang" => hooks::never(),
        "/slow" => hooks::after(Duration::from_secs(7), 200),
        _ => hooks::after(Duration::ZERO, 200),
    });
    let q = queue("worker-lmi").await;
    let arn = q.attributes().await.unwrap().arn.unwrap();
    let plan = [("a1", "/meet"), ("a2", "/fail"), ("a3", "/slow"), ("b1", "/meet"), ("b2", "/hang")];
    let bodies: Vec<String> = plan.iter().map(|(id, path)| delivery(id, &hooks.url(path))).collect();
    q.send_batch(bodies.iter().map(|b| OutgoingMessage::new(b.clone()))).await.unwrap().into_result().unwrap();
    let got = receive_exactly(&q, plan.len()).await;
    let id_of = |d: &str| got.iter().find(|m| m.body.contains(&format!("\"{d}\""))).unwrap().message_id.clone();
    let records = |ids: &[&str]| -> Value {
        event(ids.iter().map(|d| lambda_record(got.iter().find(|m| m.message_id == id_of(d)).unwrap(), &arn)).collect())
    };
    let (_db, _table, mut env) = idempotency("worker-lmi").await;
    env.push(("AWS_LAMBDA_MAX_CONCURRENCY", "2".to_string()));
    let mut lambda = ConcurrentLambda::start(env!("CARGO_BIN_EXE_worker"), "worker-lmi", &env);
    let a = lambda.submit(records(&["a1", "a2", "a3"]), Duration::from_secs(30));
    let b = lambda.submit(records(&["b1", "b2"]), Duration::from_secs(6));
    let b_answer = lambda.wait(&b);
    let a_answer = lambda.wait(&a);
    let out = lambda.output_when("two EMF lines", |o| emf_lines(o).len() == 2);
    eprintln!("b answered {} ms before its deadline, a {} ms before its own", b_answer.early_ms(), a_answer.early_ms());

    // each lists only its own failures: a2 (503) for a; b2 (still running at b's margin) for b;
    // a1 and b1 met, so the two ran at the same time
    let a_resp = response(a_answer.answer.clone(), &out);
    let b_resp = response(b_answer.answer.clone(), &out);
    assert_eq!(failures(&a_resp), [id_of("a2")], "{out}");
    assert_eq!(failures(&b_resp), [id_of("b2")], "{out}");
    assert!(b_answer.early_ms() > 0, "b answered {} ms after its deadline; output:\n{out}", -b_answer.early_ms());
    assert!(a_answer.early_ms() > 0, "{out}");
    // b's cut cancelled its own webhook call only: a3 ran on across it, to its answer
    let a3 = &hooks.calls_of("a3")[0];
    assert!(a3.arrived < b_answer.answered && a3.answered.is_some_and(|t| t > b_answer.answered), "{a3:?}");
    hooks.wait_for("b2's call abandoned", Duration::from_secs(5), |_| {
        hooks.calls_of("b2").first().is_some_and(|c| c.abandoned.is_some())
    });
    // one EMF line each, with its own counts (idempotency included)
    let emf = emf_lines(&out);
    let line =
        |records: f64| emf.iter().find(|l| l["Records"].as_f64() == Some(records)).unwrap_or_else(|| panic!("{out}"));
    let counts = |l: &Value| {
        ["Succeeded", "Failed", "Failed_retryable", "Failed_timeout", "Idempotency_claimed"].map(|k| l[k].as_f64())
    };
    assert_eq!(counts(line(3.0)), [Some(2.0), Some(1.0), Some(1.0), None, Some(3.0)], "a: {}", line(3.0));
    assert_eq!(counts(line(2.0)), [Some(1.0), Some(1.0), None, Some(1.0), Some(2.0)], "b: {}", line(2.0));
    assert!(!out.contains("running sequentially"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[tokio::test]
async fn worker_with_a_max_concurrency_out_of_range_fails_at_start_naming_it() {
    refuses_out_of_range(
        "AWS_LAMBDA_MAX_CONCURRENCY",
        &["0", "-1", "two", " 2", "1601", "4294967296"],
        &["", "1", "3"],
    );
}
