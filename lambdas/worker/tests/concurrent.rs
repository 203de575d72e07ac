//! The real `worker` binary serving two invocations at once, as on Lambda Managed Instances
//! (`AWS_LAMBDA_MAX_CONCURRENCY`), behind a local Runtime API that hands out both
//! (tests/support/lambda_rt_concurrent.rs): each answer lists only its own failures and honours
//! its own deadline.
#[path = "../../../tests/support/hooks.rs"]
mod hooks;
#[path = "../../../tests/support/lambda_rt_concurrent.rs"]
mod lambda_rt_concurrent;
#[path = "../../../tests/support/stores.rs"]
mod stores;
#[path = "../../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use hooks::Hooks;
use lambda_rt_concurrent::ConcurrentLambda;
use serde_json::{json, Value};
use sqskit::OutgoingMessage;
use support::lambda_rt::{emf_lines, event, failures, response, Answer};
use support::*;

fn delivery(id: &str, url: &str) -> String {
    json!({"delivery_id": id, "url": url, "event_type": "e", "payload": {"id": id}}).to_string()
}

#[tokio::test]
async fn two_invocations_at_once_answer_separately_each_by_its_own_deadline() {
    // `/meet` answers once the other invocation's `/meet` call arrived too (so both invocations
    // run at the same time), `/fail` is a 503, `/hang` never answers, `/slow` takes 6 s
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
        "/slow" => hooks::after(Duration::from_secs(6), 200),
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
    let db = stores::dynamodb().await;
    let table = stores::table(&db, &unique("worker-lmi")).await;
    let env = [
        ("AWS_LAMBDA_MAX_CONCURRENCY", "2".to_string()),
        ("SQSKIT_IDEMPOTENCY_TABLE", table),
        ("SQSKIT_IDEMPOTENCY_KEY", "/delivery_id".to_string()),
        ("AWS_ENDPOINT_URL_DYNAMODB", stores::dynamodb_url()),
    ];
    let mut lambda = ConcurrentLambda::start(env!("CARGO_BIN_EXE_worker"), "worker-lmi", &env);
    let a = lambda.submit(records(&["a1", "a2", "a3"]), Duration::from_secs(30));
    let b = lambda.submit(records(&["b1", "b2"]), Duration::from_secs(4));
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

/// `AWS_LAMBDA_MAX_CONCURRENCY` out of range: the worker does not start, and names it.
#[tokio::test]
async fn worker_with_a_max_concurrency_out_of_range_fails_at_start_naming_it() {
    for bad in ["0", "-1", "two", " 2", "1601", "4294967296"] {
        let mut lambda = support::lambda_rt::LambdaHarness::start(
            env!("CARGO_BIN_EXE_worker"),
            "worker-bad-lmi",
            &[("AWS_LAMBDA_MAX_CONCURRENCY", bad.to_string())],
        );
        let answer = lambda.invoke(event(vec![]));
        let out = lambda.output();
        assert!(matches!(answer, Answer::Exited(_) | Answer::InitError(_)), "{bad:?}: {answer:?}\n{out}");
        assert!(out.contains("AWS_LAMBDA_MAX_CONCURRENCY"), "{bad:?}: {out}");
        assert!(!out.contains("panicked"), "{bad:?}: {out}");
    }
    for good in ["", "1", "3"] {
        let mut lambda = support::lambda_rt::LambdaHarness::start(
            env!("CARGO_BIN_EXE_worker"),
            "worker-lmi-ok",
            &[("AWS_LAMBDA_MAX_CONCURRENCY", good.to_string())],
        );
        let answer = lambda.invoke(event(vec![]));
        assert_eq!(response(answer, &lambda.output()), json!({"batchItemFailures": []}), "{good:?}");
    }
}
