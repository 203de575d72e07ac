use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::client::Queue;
use crate::message::AttributeValue;
use crate::settle::Deletion;

fn msg(id: &str, body: &str, group: Option<&str>, receive_count: u32) -> ReceivedMessage {
    let mut sys = HashMap::new();
    sys.insert("ApproximateReceiveCount".to_string(), receive_count.to_string());
    if let Some(g) = group {
        sys.insert("MessageGroupId".to_string(), g.to_string());
    }
    ReceivedMessage {
        message_id: id.to_string(),
        receipt_handle: format!("rh-{id}"),
        body: body.to_string(),
        attributes: HashMap::new(),
        system_attributes: sys,
        received_at: Instant::now(),
        queue_url: None,
    }
}

fn dummy_queue(name: &str) -> Queue {
    let conf = aws_sdk_sqs::Config::builder().behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest()).build();
    Queue::new(aws_sdk_sqs::Client::from_conf(conf), format!("http://127.0.0.1:9/queue/us-east-1/000000000000/{name}"))
}

fn with_dlq() -> QueueContext {
    QueueContext::new(dummy_queue("src"), Some(dummy_queue("dlq")))
}

/// No DLQ: permanent failures become retries, so these tests make no network call.
fn no_dlq() -> QueueContext {
    QueueContext::new(dummy_queue("src"), None)
}

fn fifo_no_dlq() -> QueueContext {
    QueueContext::new(dummy_queue("src.fifo"), None)
}

/// A raw processor whose behaviour is chosen by the body: "ok", "retry", "retry-after-7",
/// "perm", "panic", "sleep"; it records the order of calls.
fn scripted(calls: Arc<Mutex<Vec<String>>>) -> Processor<String> {
    Processor::raw(move |m: Message<String>| {
        let calls = calls.clone();
        async move {
            calls.lock().unwrap().push(m.id().to_string());
            match m.body.as_str() {
                "ok" => Ok(()),
                "retry" => Err(HandlerError::retryable("downstream 503")),
                "retry-after-7" => Err(HandlerError::retry_after("rate limited", Duration::from_secs(7))),
                "perm" => Err(HandlerError::permanent("unknown customer")),
                "panic" => panic!("boom in handler"),
                "sleep" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(())
                }
                other => Err(HandlerError::permanent(format!("unexpected script {other}"))),
            }
        }
    })
}

fn outcomes(decisions: &[Decision]) -> Vec<(String, Outcome)> {
    decisions.iter().map(|d| (d.message.message_id.clone(), d.outcome.clone())).collect()
}

#[tokio::test]
async fn success_is_deleted() {
    let p = scripted(Default::default());
    let d = p.process_batch(&with_dlq(), vec![msg("a", "ok", None, 1)]).await;
    assert_eq!(d[0].outcome, Outcome::Succeeded);
    let plan = Actions::plan(&d);
    assert_eq!(plan.delete.len(), 1);
    assert!(plan.visibility.is_empty());
}

#[tokio::test]
async fn retryable_failure_gets_backoff_visibility_within_the_ceiling() {
    let p = scripted(Default::default());
    for rc in 1..=12 {
        let d = p.process_batch(&with_dlq(), vec![msg("a", "retry", None, rc)]).await;
        match &d[0].outcome {
            Outcome::Retry { visibility, failure } => {
                assert_eq!(failure.kind, FailureKind::Retryable);
                assert_eq!(failure.error, "downstream 503");
                assert!(u64::from(*visibility) <= Backoff::default().ceiling(rc).as_secs());
            }
            other => panic!("expected retry, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn explicit_retry_after_is_honoured() {
    let p = scripted(Default::default());
    let d = p.process_batch(&with_dlq(), vec![msg("a", "retry-after-7", None, 1)]).await;
    assert!(matches!(d[0].outcome, Outcome::Retry { visibility: 7, .. }));
}

#[tokio::test]
async fn permanent_failure_is_decided_for_the_dlq_when_there_is_one() {
    let p = scripted(Default::default());
    let m = Arc::new(msg("a", "perm", None, 1));
    let result = p.call_handler(m.clone()).await;
    match p.decide(&with_dlq(), &m, result) {
        Verdict::DeadLetter { failure } => assert_eq!(failure.kind, FailureKind::Permanent),
        other => panic!("expected dead letter, got {other:?}"),
    }
}

/// Code written before the rename still builds and does the same: `run` and `run_until` are
/// deprecated names of `call_handler` and `call_handler_until`.
#[tokio::test]
#[allow(deprecated)]
async fn the_old_names_of_call_handler_still_work() {
    let p = scripted(Default::default());
    let f = p.run(Arc::new(msg("a", "perm", None, 1))).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::Permanent);
    let f = p.run_until(Arc::new(msg("a", "perm", None, 1)), None).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::Permanent);
    assert!(p.run(Arc::new(msg("a", "ok", None, 1))).await.is_ok());
}

#[test]
fn retryable_failure_on_the_last_allowed_receive_is_dead_lettered_with_its_error() {
    let p = scripted(Default::default());
    let ctx = with_dlq().with_max_receive_count(Some(3));
    let f = || Failure { kind: FailureKind::Retryable, error: "downstream 503".into(), retry_after: None };
    assert!(matches!(p.decide(&ctx, &msg("a", "x", None, 2), Err(f())), Verdict::Retry { .. }));
    match p.decide(&ctx, &msg("a", "x", None, 3), Err(f())) {
        Verdict::DeadLetter { failure } => {
            assert_eq!(failure.kind, FailureKind::RetriesExhausted);
            assert_eq!(failure.kind.as_str(), "retries-exhausted");
            assert_eq!(failure.error, "retryable: downstream 503");
        }
        other => panic!("expected dead letter, got {other:?}"),
    }
    // without a DLQ, SQS's redrive policy is left to move it
    let no = no_dlq().with_max_receive_count(Some(3));
    assert!(matches!(p.decide(&no, &msg("a", "x", None, 3), Err(f())), Verdict::Retry { .. }));
}

#[test]
fn a_dlq_of_the_other_queue_type_is_refused() {
    let ctx = QueueContext::new(dummy_queue("src.fifo"), Some(dummy_queue("dlq")));
    assert!(ctx.fifo && ctx.dlq.is_none(), "a FIFO source never dead-letters into a standard DLQ");
    let ctx = QueueContext::new(dummy_queue("src"), Some(dummy_queue("dlq.fifo")));
    assert!(ctx.dlq.is_none());
    assert!(QueueContext::new(dummy_queue("src.fifo"), Some(dummy_queue("dlq.fifo"))).dlq.is_some());
}

#[tokio::test]
async fn permanent_failure_without_dlq_falls_back_to_retry() {
    let p = scripted(Default::default());
    let ctx = QueueContext::new(dummy_queue("src"), None);
    let d = p.process_batch(&ctx, vec![msg("a", "perm", None, 1)]).await;
    assert!(matches!(&d[0].outcome, Outcome::Retry { failure, .. } if failure.kind == FailureKind::Permanent));
}

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    id: u64,
}

#[tokio::test]
async fn undecodable_body_fails_that_message_alone() {
    let p = Processor::json(|_m: Message<Order>| async { Ok(()) });
    let d = p
        .process_batch(
            &no_dlq(),
            vec![
                msg("good", r#"{"id":1}"#, None, 1),
                msg("bad", "{not json", None, 1),
                msg("good2", r#"{"id":2}"#, None, 1),
            ],
        )
        .await;
    assert_eq!(d[0].outcome, Outcome::Succeeded);
    assert_eq!(d[2].outcome, Outcome::Succeeded);
    match &d[1].outcome {
        Outcome::Retry { failure, .. } => {
            assert_eq!(failure.kind, FailureKind::Undecodable);
            assert!(failure.error.contains("Order"), "{}", failure.error);
        }
        other => panic!("expected a retry (no DLQ), got {other:?}"),
    }
}

#[tokio::test]
async fn decoding_errors_do_not_quote_the_body_unless_asked() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Person {
        age: u32,
    }
    let body = r#"{"age": "Jane Doe, 12 Secret Street"}"#;
    let p = Processor::json(|_m: Message<Person>| async { Ok(()) });
    let err = p.call_handler(Arc::new(msg("a", body, None, 1))).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Undecodable);
    assert!(!err.error.contains("Secret"), "{}", err.error);
    assert!(err.error.contains("data error at line 1 column"), "{}", err.error);
    let p = p.with_config(ProcessorConfig { log_bodies: true, ..Default::default() });
    let err = p.call_handler(Arc::new(msg("a", body, None, 1))).await.unwrap_err();
    assert!(err.error.contains("Secret"), "opted in: the full serde text: {}", err.error);
}

#[tokio::test]
async fn a_panic_is_a_retryable_failure_of_that_message_alone() {
    let p = scripted(Default::default());
    let d = p
        .process_batch(&with_dlq(), vec![msg("a", "ok", None, 1), msg("b", "panic", None, 1), msg("c", "ok", None, 1)])
        .await;
    assert_eq!(d[0].outcome, Outcome::Succeeded);
    assert_eq!(d[2].outcome, Outcome::Succeeded);
    match &d[1].outcome {
        Outcome::Retry { failure, .. } => {
            assert_eq!(failure.kind, FailureKind::Panicked);
            assert!(failure.error.contains("boom in handler"));
        }
        other => panic!("expected retry, got {other:?}"),
    }
}

#[tokio::test]
async fn an_overrunning_handler_times_out_as_retryable() {
    // the "sleep" handler takes 5 s; the timeout is 100 ms
    let p = scripted(Default::default())
        .with_config(ProcessorConfig { timeout: Some(Duration::from_millis(100)), ..Default::default() });
    let d = p.process_batch(&with_dlq(), vec![msg("a", "sleep", None, 1), msg("b", "ok", None, 1)]).await;
    assert!(matches!(&d[0].outcome, Outcome::Retry { failure, .. } if failure.kind == FailureKind::TimedOut));
    assert_eq!(d[1].outcome, Outcome::Succeeded);
}

#[tokio::test]
async fn fifo_failure_holds_the_rest_of_its_group_only() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let p = scripted(calls.clone());
    let batch = vec![
        msg("a1", "ok", Some("A"), 1),
        msg("b1", "ok", Some("B"), 1),
        msg("a2", "retry-after-7", Some("A"), 1),
        msg("b2", "ok", Some("B"), 1),
        msg("a3", "ok", Some("A"), 1),
        msg("c1", "ok", Some("C"), 1),
        msg("a4", "ok", Some("A"), 1),
    ];
    let d = p.process_batch(&fifo_no_dlq(), batch).await;
    let o = outcomes(&d);
    assert_eq!(
        o.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["a1", "b1", "a2", "b2", "a3", "c1", "a4"],
        "input order kept"
    );
    assert_eq!(o[0].1, Outcome::Succeeded);
    assert!(matches!(o[2].1, Outcome::Retry { visibility: 7, .. }));
    assert_eq!(o[4].1, Outcome::Held { visibility: 7, behind: "a2".into() });
    assert_eq!(o[6].1, Outcome::Held { visibility: 7, behind: "a2".into() });
    assert_eq!(o[1].1, Outcome::Succeeded);
    assert_eq!(o[3].1, Outcome::Succeeded);
    assert_eq!(o[5].1, Outcome::Succeeded);
    let calls = calls.lock().unwrap().clone();
    assert!(
        !calls.contains(&"a3".to_string()) && !calls.contains(&"a4".to_string()),
        "held messages are not attempted"
    );
    let pos = |id: &str| calls.iter().position(|c| c == id).unwrap();
    assert!(pos("a1") < pos("a2") && pos("b1") < pos("b2"), "in order within a group: {calls:?}");

    // the failed message first, then the held ones, in one visibility plan
    let plan = Actions::plan(&d);
    let ids: Vec<(&str, u32)> = plan.visibility.iter().map(|(m, v)| (m.message_id.as_str(), *v)).collect();
    assert_eq!(ids, [("a2", 7), ("a3", 7), ("a4", 7)]);
    assert_eq!(plan.delete.len(), 4);
    assert!(plan.delete.iter().all(|(_, why)| *why == Deletion::Succeeded));
}

#[tokio::test]
async fn group_ids_on_a_standard_queue_are_tenants_not_fifo_groups() {
    // fair queues: a failure does not hold later messages of the same group id
    let calls = Arc::new(Mutex::new(Vec::new()));
    let p = scripted(calls.clone());
    let batch = vec![
        msg("t1", "ok", Some("tenant-a"), 1),
        msg("t2", "retry", Some("tenant-a"), 1),
        msg("t3", "ok", Some("tenant-a"), 1),
        msg("u1", "ok", None, 1),
    ];
    let d = p.process_batch(&no_dlq(), batch).await;
    assert_eq!(d[0].outcome, Outcome::Succeeded);
    assert!(matches!(d[1].outcome, Outcome::Retry { .. }));
    assert_eq!(d[2].outcome, Outcome::Succeeded, "not held behind t2");
    assert_eq!(d[3].outcome, Outcome::Succeeded);
    assert_eq!(calls.lock().unwrap().len(), 4, "every message ran");
}

#[tokio::test]
async fn a_stopped_batch_releases_the_messages_not_started() {
    let p = scripted(Default::default()).with_config(ProcessorConfig { concurrency: 1, ..Default::default() });
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    let d = p.process_batch_until(&no_dlq(), vec![msg("a", "ok", None, 1), msg("b", "ok", None, 1)], Some(&stop)).await;
    assert!(d.iter().all(|d| d.outcome == Outcome::Released));
}

#[tokio::test]
async fn sequence_stops_at_first_retry_across_groups() {
    // the Lambda FIFO rule: strictly in batch order, stop at the first failure
    let p = scripted(Default::default());
    let batch: Vec<Arc<ReceivedMessage>> =
        vec![msg("a1", "ok", Some("A"), 1), msg("b1", "retry", Some("B"), 1), msg("a2", "ok", Some("A"), 1)]
            .into_iter()
            .map(Arc::new)
            .collect();
    let d = p.process_sequence(&no_dlq(), batch).await;
    assert_eq!(d[0].outcome, Outcome::Succeeded);
    assert!(matches!(d[1].outcome, Outcome::Retry { .. }));
    assert!(matches!(&d[2].outcome, Outcome::Held { behind, .. } if behind == "b1"));
}

#[tokio::test]
async fn standard_batch_runs_concurrently_up_to_the_limit() {
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (c, pk) = (current.clone(), peak.clone());
    let p = Processor::raw(move |_m: Message<String>| {
        let (c, pk) = (c.clone(), pk.clone());
        async move {
            let now = c.fetch_add(1, Ordering::SeqCst) + 1;
            pk.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    })
    .with_config(ProcessorConfig { concurrency: 4, ..Default::default() });
    let batch = (0..10).map(|i| msg(&i.to_string(), "x", None, 1)).collect();
    let d = p.process_batch(&with_dlq(), batch).await;
    assert!(d.iter().all(|d| d.outcome.is_success()));
    assert_eq!(peak.load(Ordering::SeqCst), 4);
}

#[test]
fn retry_visibility_never_passes_twelve_hours_from_receipt() {
    let p = scripted(Default::default());
    let mut m = msg("a", "x", None, 1);
    m.received_at = Instant::now() - Duration::from_secs(43_100);
    let f = Failure { kind: FailureKind::Retryable, error: "e".into(), retry_after: Some(Duration::from_secs(3600)) };
    assert!(matches!(p.decide(&with_dlq(), &m, Err(f)), Verdict::Retry { visibility: 100, .. }));
}

#[test]
fn dead_letter_message_carries_error_attributes() {
    let mut m = msg("id-1", "payload", Some("G"), 3);
    m.attributes.insert("tenant".into(), AttributeValue::string("acme"));
    let f = Failure { kind: FailureKind::Undecodable, error: "x".repeat(1000), retry_after: None };
    let out = dead_letter_message(&m, &f, "orders", false);
    assert_eq!(out.body, "payload");
    assert_eq!(out.attributes["tenant"].as_str(), Some("acme"));
    assert_eq!(out.attributes[dead_letter_attributes::ERROR_KIND].as_str(), Some("undecodable"));
    assert_eq!(out.attributes[dead_letter_attributes::ERROR].as_str().unwrap().len(), 256);
    assert_eq!(out.attributes[dead_letter_attributes::SOURCE_QUEUE].as_str(), Some("orders"));
    assert_eq!(out.attributes[dead_letter_attributes::RECEIVE_COUNT].as_str(), Some("3"));
    assert!(out.group_id.is_none());
    let fifo = dead_letter_message(&m, &f, "orders.fifo", true);
    assert_eq!(fifo.group_id.as_deref(), Some("G"));
    assert_eq!(fifo.dedup_id.as_deref(), Some("id-1"));
}

#[test]
fn dead_letter_attributes_are_combined_when_the_message_has_many() {
    let mut m = msg("id", "b", None, 1);
    for i in 0..8 {
        m.attributes.insert(format!("a{i}"), AttributeValue::string("v"));
    }
    let f = Failure { kind: FailureKind::Permanent, error: "nope".into(), retry_after: None };
    let out = dead_letter_message(&m, &f, "q", false);
    assert_eq!(out.attributes.len(), 9);
    let v: serde_json::Value =
        serde_json::from_str(out.attributes[dead_letter_attributes::COMBINED].as_str().unwrap()).unwrap();
    assert_eq!(v["kind"], "permanent");
    assert_eq!(v["source_queue"], "q");
}

#[derive(Debug)]
struct Outer(std::io::Error);
impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("saving the order")
    }
}
impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[tokio::test]
async fn question_mark_makes_any_error_retryable_and_keeps_its_source_chain() {
    async fn handler(_m: Message<String>) -> Result<(), HandlerError> {
        Err(Outer(std::io::Error::other("disk full")))?;
        Ok(())
    }
    let e: HandlerError = Outer(std::io::Error::other("disk full")).into();
    assert!(!e.is_permanent());
    assert_eq!(e.message(), "saving the order: disk full");
    assert!(e.source().is_some_and(|s| s.to_string() == "saving the order"));
    let p = Processor::raw(handler);
    let f = p.call_handler(Arc::new(msg("a", "x", None, 1))).await.unwrap_err();
    assert_eq!((f.kind, f.error.as_str()), (FailureKind::Retryable, "saving the order: disk full"));
}

#[tokio::test]
async fn result_ext_marks_an_error_permanent() {
    let p = Processor::raw(|m: Message<String>| async move {
        let _n: u32 = m.body.parse().permanent()?;
        Ok(())
    });
    let f = p.call_handler(Arc::new(msg("a", "not a number", None, 1))).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::Permanent);
    assert!(f.error.contains("invalid digit"), "{}", f.error);
    assert!(p.call_handler(Arc::new(msg("b", "42", None, 1))).await.is_ok());
}

/// A batch processor scripted by body, recording the batches it was given.
fn batch_scripted(batches: Arc<Mutex<Vec<Vec<String>>>>) -> Processor<String> {
    Processor::raw_batch(move |batch: Vec<Message<String>>| {
        let batches = batches.clone();
        async move {
            batches.lock().unwrap().push(batch.iter().map(|m| m.id().to_string()).collect());
            batch
                .iter()
                .map(|m| match m.body.as_str() {
                    "retry" => Err(HandlerError::retryable("bulk write rejected this row")),
                    "perm" => Err(HandlerError::permanent("bad row")),
                    "panic" => panic!("batch handler bug"),
                    _ => Ok(()),
                })
                .collect()
        }
    })
}

#[tokio::test]
async fn a_batch_handler_gets_one_call_and_gives_one_outcome_per_message() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let p = batch_scripted(batches.clone());
    let d = p
        .process_batch(&no_dlq(), vec![msg("a", "ok", None, 1), msg("b", "retry", None, 1), msg("c", "ok", None, 1)])
        .await;
    assert_eq!(batches.lock().unwrap().clone(), vec![vec!["a", "b", "c"]], "one call, in order");
    assert_eq!(d[0].outcome, Outcome::Succeeded);
    assert!(matches!(&d[1].outcome, Outcome::Retry { failure, .. } if failure.error == "bulk write rejected this row"));
    assert_eq!(d[2].outcome, Outcome::Succeeded);
}

#[tokio::test]
async fn a_batch_handler_does_not_see_undecodable_bodies_and_a_panic_fails_its_batch() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let p = Processor::json_batch(move |batch: Vec<Message<Order>>| {
        let s2 = s2.clone();
        async move {
            s2.lock().unwrap().extend(batch.iter().map(|m| m.id().to_string()));
            batch.iter().map(|_| Ok(())).collect()
        }
    });
    let d = p.process_batch(&no_dlq(), vec![msg("good", r#"{"id":1}"#, None, 1), msg("bad", "{nope", None, 1)]).await;
    assert_eq!(seen.lock().unwrap().clone(), ["good"]);
    assert_eq!(d[0].outcome, Outcome::Succeeded);
    assert!(matches!(&d[1].outcome, Outcome::Retry { failure, .. } if failure.kind == FailureKind::Undecodable));

    let p = batch_scripted(Default::default());
    let d = p.process_batch(&no_dlq(), vec![msg("a", "ok", None, 1), msg("b", "panic", None, 1)]).await;
    assert!(d
        .iter()
        .all(|d| matches!(&d.outcome, Outcome::Retry { failure, .. } if failure.kind == FailureKind::Panicked)));
}

#[tokio::test]
async fn a_batch_handler_returning_the_wrong_number_of_results_fails_the_batch() {
    let p = Processor::raw_batch(|_batch: Vec<Message<String>>| async { vec![Ok(())] });
    let d = p.process_batch(&no_dlq(), vec![msg("a", "x", None, 1), msg("b", "y", None, 1)]).await;
    for x in &d {
        assert!(
            matches!(&x.outcome, Outcome::Retry { failure, .. } if failure.error.contains("returned 1 results for 2"))
        );
    }
}

#[tokio::test]
async fn a_fifo_batch_holds_the_rest_of_a_group_after_a_failure() {
    let p = batch_scripted(Default::default());
    let d = p
        .process_batch(
            &fifo_no_dlq(),
            vec![
                msg("a1", "ok", Some("A"), 1),
                msg("a2", "retry", Some("A"), 1),
                msg("b1", "ok", Some("B"), 1),
                msg("a3", "ok", Some("A"), 1),
            ],
        )
        .await;
    assert_eq!(d[0].outcome, Outcome::Succeeded);
    assert!(matches!(d[1].outcome, Outcome::Retry { .. }));
    assert_eq!(d[2].outcome, Outcome::Succeeded, "other groups go on");
    assert!(matches!(&d[3].outcome, Outcome::Held { behind, .. } if behind == "a2"), "not deleted ahead of a2");
}

// ---- idempotency (in-memory store; the DynamoDB and Redis stores are tested against the
// real servers in tests/idempotency.rs) ----

mod idempotency {
    use super::*;
    use crate::idempotency::{hash_value, Idempotency, KeySource, MemoryStore, Record, Status};
    use std::time::SystemTime;

    /// A JSON processor keyed by `/order_id` that counts runs per order and fails orders
    /// whose `fail` is true (retryable).
    fn counting(store: &MemoryStore, runs: Arc<Mutex<HashMap<String, usize>>>) -> Processor<serde_json::Value> {
        Processor::json(move |m: Message<serde_json::Value>| {
            let runs = runs.clone();
            async move {
                let id = m.body["order_id"].as_str().unwrap_or("?").to_string();
                *runs.lock().unwrap().entry(id).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                if m.body["fail"] == true {
                    return Err(HandlerError::retryable("downstream 503"));
                }
                Ok(())
            }
        })
        .with_idempotency(
            Idempotency::new(store.clone())
                .with_prefix("orders")
                .with_key_source(KeySource::Pointer("/order_id".into())),
        )
    }

    fn key(order: &str) -> String {
        format!("orders#{}", hash_value(&serde_json::Value::String(order.into())))
    }

    #[tokio::test]
    async fn a_completed_key_is_a_duplicate_and_the_handler_does_not_run_again() {
        let (store, runs) = (MemoryStore::new(), Arc::new(Mutex::new(HashMap::new())));
        let p = counting(&store, runs.clone());
        let body = r#"{"order_id":"A1","amount":5}"#;
        let first = p.process_one(&no_dlq(), Arc::new(msg("m1", body, None, 1))).await;
        let second = p.process_one(&no_dlq(), Arc::new(msg("m2", body, None, 1))).await;
        assert_eq!((first, second), (Outcome::Succeeded, Outcome::Duplicate));
        assert_eq!(runs.lock().unwrap()["A1"], 1);
        let rec = store.get(&key("A1")).expect("record");
        assert_eq!(rec.status, Status::Completed);
        assert_eq!(rec.data.as_deref(), Some("null"));
        assert!(Outcome::Duplicate.is_success());
        let c = p.idempotency_counts();
        assert_eq!((c.claimed, c.duplicate), (1, 1));
    }

    #[tokio::test]
    async fn same_key_twice_in_one_batch_runs_once_and_the_second_is_a_duplicate() {
        let (store, runs) = (MemoryStore::new(), Arc::new(Mutex::new(HashMap::new())));
        let p = counting(&store, runs.clone());
        let body = r#"{"order_id":"B2"}"#;
        let d = p.process_batch(&no_dlq(), vec![msg("m1", body, None, 1), msg("m2", body, None, 1)]).await;
        let outcomes: Vec<_> = d.iter().map(|d| d.outcome.clone()).collect();
        assert_eq!(outcomes, vec![Outcome::Succeeded, Outcome::Duplicate]);
        assert_eq!(runs.lock().unwrap()["B2"], 1);
    }

    #[tokio::test]
    async fn a_failed_handler_releases_the_key_so_a_retry_runs() {
        let (store, runs) = (MemoryStore::new(), Arc::new(Mutex::new(HashMap::new())));
        let p = counting(&store, runs.clone());
        let o = p.process_one(&no_dlq(), Arc::new(msg("m1", r#"{"order_id":"C3","fail":true}"#, None, 1))).await;
        assert!(matches!(o, Outcome::Retry { ref failure, .. } if failure.kind == FailureKind::Retryable), "{o:?}");
        assert!(store.get(&key("C3")).is_none(), "the failed claim must be deleted");
        // the same logical message, now succeeding (a retry): runs again
        let o = p.process_one(&no_dlq(), Arc::new(msg("m1", r#"{"order_id":"C3","fail":false}"#, None, 2))).await;
        assert_eq!(o, Outcome::Succeeded);
        assert_eq!(runs.lock().unwrap()["C3"], 2);
    }

    #[tokio::test]
    async fn a_key_held_by_another_consumer_is_retried_when_its_claim_lapses() {
        let (store, runs) = (MemoryStore::new(), Arc::new(Mutex::new(HashMap::new())));
        let p = counting(&store, runs.clone());
        let now = SystemTime::now();
        let body = r#"{"order_id":"D4"}"#;
        let held = Record {
            key: key("D4"),
            status: Status::InProgress,
            expiration: now + Duration::from_secs(3600),
            in_progress_expiration: Some(now + Duration::from_millis(42_300)),
            validation: Some(hash_value(&serde_json::from_str(body).unwrap())),
            data: None,
        };
        crate::idempotency::IdempotencyStore::claim(&store, &held, now).await.unwrap();
        let o = p.process_one(&no_dlq(), Arc::new(msg("m1", body, None, 1))).await;
        match o {
            Outcome::Retry { visibility, failure } => {
                assert_eq!(failure.kind, FailureKind::InProgress);
                assert!((42..=43).contains(&visibility), "visibility {visibility}");
            }
            other => panic!("expected a retry, got {other:?}"),
        }
        assert!(runs.lock().unwrap().is_empty(), "the handler must not run");
        assert_eq!(p.idempotency_counts().in_progress, 1);
    }

    #[tokio::test]
    async fn the_same_key_with_another_payload_is_a_permanent_key_reuse() {
        let (store, runs) = (MemoryStore::new(), Arc::new(Mutex::new(HashMap::new())));
        let p = counting(&store, runs.clone());
        assert_eq!(
            p.process_one(&no_dlq(), Arc::new(msg("m1", r#"{"order_id":"E5","amount":1}"#, None, 1))).await,
            Outcome::Succeeded
        );
        let f = p.call_handler(Arc::new(msg("m2", r#"{"order_id":"E5","amount":999}"#, None, 1))).await.unwrap_err();
        assert_eq!(f.kind, FailureKind::KeyReuse);
        assert!(f.kind.is_permanent());
        assert_eq!(f.kind.as_str(), "idempotency-key-reuse");
        assert_eq!(runs.lock().unwrap()["E5"], 1);
    }

    #[tokio::test]
    async fn a_fifo_group_goes_on_after_a_duplicate() {
        let (store, runs) = (MemoryStore::new(), Arc::new(Mutex::new(HashMap::new())));
        let p = counting(&store, runs.clone());
        let d = p
            .process_batch(
                &fifo_no_dlq(),
                vec![
                    msg("1", r#"{"order_id":"F1"}"#, Some("g"), 1),
                    msg("2", r#"{"order_id":"F1"}"#, Some("g"), 1),
                    msg("3", r#"{"order_id":"F2"}"#, Some("g"), 1),
                ],
            )
            .await;
        let outcomes: Vec<_> = d.iter().map(|d| d.outcome.clone()).collect();
        assert_eq!(outcomes, vec![Outcome::Succeeded, Outcome::Duplicate, Outcome::Succeeded]);
        assert_eq!(
            Actions::plan(&d).delete.iter().map(|(_, why)| *why).collect::<Vec<_>>(),
            vec![Deletion::Succeeded, Deletion::Duplicate, Deletion::Succeeded]
        );
    }

    #[tokio::test]
    async fn a_batch_handler_gets_each_key_once_and_repeats_are_duplicates() {
        let store = MemoryStore::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let p = Processor::raw_batch(move |batch: Vec<Message<String>>| {
            let seen = s2.clone();
            async move {
                seen.lock().unwrap().extend(batch.iter().map(|m| m.id().to_string()));
                batch.iter().map(|_| Ok(())).collect::<Vec<_>>()
            }
        })
        .with_idempotency(Idempotency::new(store.clone()));
        let d = p
            .process_batch(&no_dlq(), vec![msg("a", "x", None, 1), msg("b", "y", None, 1), msg("c", "x", None, 1)])
            .await;
        let outcomes: Vec<_> = d.iter().map(|d| d.outcome.clone()).collect();
        assert_eq!(outcomes, vec![Outcome::Succeeded, Outcome::Succeeded, Outcome::Duplicate]);
        assert_eq!(*seen.lock().unwrap(), vec!["a".to_string(), "b".to_string()]);
        // and again in a later batch: all duplicates, the handler is not called
        let d = p.process_batch(&no_dlq(), vec![msg("d", "y", None, 1), msg("e", "x", None, 1)]).await;
        assert!(d.iter().all(|d| d.outcome == Outcome::Duplicate));
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn no_key_runs_unguarded_unless_a_key_is_required() {
        let (store, runs) = (MemoryStore::new(), Arc::new(Mutex::new(HashMap::new())));
        let p = counting(&store, runs.clone());
        assert_eq!(p.process_one(&no_dlq(), Arc::new(msg("m1", r#"{"x":1}"#, None, 1))).await, Outcome::Succeeded);
        assert_eq!(p.process_one(&no_dlq(), Arc::new(msg("m2", r#"{"x":1}"#, None, 1))).await, Outcome::Succeeded);
        assert_eq!(runs.lock().unwrap()["?"], 2);
        let strict = Processor::raw(|_m| async { Ok::<_, HandlerError>(()) }).with_idempotency(
            Idempotency::new(store).with_key_source(KeySource::Attribute("order".into())).with_require_key(true),
        );
        let f = strict.call_handler(Arc::new(msg("m3", "{}", None, 1))).await.unwrap_err();
        assert_eq!(f.kind, FailureKind::Permanent);
        assert!(f.error.contains("no idempotency key"), "{}", f.error);
    }
}

#[test]
fn failure_kind_all_lists_every_kind_once() {
    // A new variant breaks this match: give it the next position and add it to `FailureKind::ALL`.
    let position = |k: FailureKind| match k {
        FailureKind::Retryable => 0,
        FailureKind::Permanent => 1,
        FailureKind::Undecodable => 2,
        FailureKind::Panicked => 3,
        FailureKind::TimedOut => 4,
        FailureKind::RetriesExhausted => 5,
        FailureKind::InProgress => 6,
        FailureKind::KeyReuse => 7,
        FailureKind::IdempotencyStore => 8,
        FailureKind::PayloadMissing => 9,
        FailureKind::Unrouted => 10,
    };
    let positions: Vec<usize> = FailureKind::ALL.iter().map(|k| position(*k)).collect();
    assert_eq!(positions, (0..FailureKind::ALL.len()).collect::<Vec<_>>());
    let names: std::collections::HashSet<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(names.len(), FailureKind::ALL.len());
}

#[cfg(feature = "events")]
mod envelopes {
    use super::*;
    use crate::envelope::EnvelopeKind;

    fn sns(message: &str) -> String {
        serde_json::json!({"Type": "Notification", "MessageId": "n1", "TopicArn": "arn:aws:sns:us-east-1:1:t",
            "Message": message, "Timestamp": "2026-12-06T10:42:28.072Z", "SignatureVersion": "1",
            "Signature": "s", "SigningCertURL": "https://c", "UnsubscribeURL": "https://u"})
        .to_string()
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Order {
        id: u64,
    }

    #[tokio::test]
    async fn a_payload_that_does_not_decode_names_the_envelope_and_the_payload_not_its_value() {
        let p =
            Processor::json(|_m: Message<Order>| async { Ok::<_, HandlerError>(()) }).with_envelope(EnvelopeKind::Sns);
        assert!(p.call_handler(Arc::new(msg("a", &sns(r#"{"id":1}"#), None, 1))).await.is_ok());
        let f = p.call_handler(Arc::new(msg("b", &sns(r#"{"id":"4111-1111"}"#), None, 1))).await.unwrap_err();
        assert_eq!(f.kind, FailureKind::Undecodable);
        assert!(f.error.starts_with("sns envelope: Message is not a valid"), "{}", f.error);
        assert!(!f.error.contains("4111"), "{}", f.error);
    }

    #[tokio::test]
    async fn s3_records_run_in_order_up_to_the_first_failure() {
        let record = |key: &str| {
            serde_json::json!({"eventTime": "2026-12-06T10:00:00Z", "eventName": "ObjectCreated:Put", "userIdentity": {},
                "requestParameters": {}, "s3": {"bucket": {"name": "b"}, "object": {"key": key}}})
        };
        let body = serde_json::json!({"Records": [record("1"), record("fail"), record("3")]}).to_string();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let r = ran.clone();
        let p = Processor::json(move |m: Message<crate::envelope::S3EventRecord>| {
            let key = m.body.s3.object.key.clone().unwrap_or_default();
            r.lock().unwrap().push(key.clone());
            async move {
                if key == "fail" {
                    return Err(HandlerError::retryable("busy"));
                }
                Ok(())
            }
        })
        .with_envelope(EnvelopeKind::S3);
        let f = p.call_handler(Arc::new(msg("a", &body, None, 1))).await.unwrap_err();
        assert_eq!((f.kind, f.error.as_str()), (FailureKind::Retryable, "busy"));
        assert_eq!(*ran.lock().unwrap(), ["1", "fail"], "the record after the failure did not run");
    }
}
