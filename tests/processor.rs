//! The batch processor against LocalStack: run a batch, settle it, observe the queues.
use sqskit_test_support as support;

use std::time::{Duration, Instant};

use sqskit::processor::dead_letter_attributes as dl;
use sqskit::retry::Backoff;
use sqskit::{HandlerError, Message, Outcome, OutgoingMessage, Processor, ProcessorConfig, QueueContext};
use support::*;

#[derive(serde::Deserialize)]
struct Job {
    action: String,
}

fn processor() -> Processor<Job> {
    Processor::json(|m: Message<Job>| async move {
        match m.body.action.as_str() {
            "ok" => Ok(()),
            "retry" => Err(HandlerError::retry_after("try later", Duration::from_secs(2))),
            "perm" => Err(HandlerError::permanent("cannot ever work")),
            _ => Err(HandlerError::permanent("unknown action")),
        }
    })
}

async fn receive_n(q: &sqskit::Queue, n: usize) -> Vec<sqskit::ReceivedMessage> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.len() < n && Instant::now() < deadline {
        got.extend(
            q.receive((n - got.len()).min(10) as u32, Duration::from_secs(2), Some(Duration::from_secs(60)))
                .await
                .unwrap(),
        );
    }
    got
}

#[tokio::test]
async fn batch_outcomes_are_carried_out_on_sqs() {
    let (src, dlq) = queue_with_dlq("proc", 5, false, 60).await;
    let bodies =
        [r#"{"action":"ok"}"#, r#"{"action":"retry"}"#, r#"{"action":"perm"}"#, "{broken json", r#"{"action":"ok"}"#];
    src.send_batch(
        bodies.iter().map(|b| OutgoingMessage::new(*b).attribute("tenant", sqskit::AttributeValue::string("t1"))),
    )
    .await
    .unwrap()
    .into_result()
    .unwrap();
    let batch = receive_n(&src, 5).await;
    assert_eq!(batch.len(), 5);

    let ctx = QueueContext::discover(src.clone()).await.unwrap();
    assert_eq!(ctx.dlq.as_ref().map(|q| q.url()), Some(dlq.url()), "DLQ discovered from the redrive policy");
    let p = processor();
    let decisions = p.process_batch(&ctx, batch).await;
    let report = p.settle(&ctx, &decisions).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.deleted, 4, "2 successes + 2 dead letters deleted");
    assert_eq!(report.retried, 1);
    assert_eq!(report.dead_lettered, 2);

    // successes and dead letters are gone; the retry is hidden for its retry-after (2 s) then back
    let (visible, in_flight, _) = depth(&src).await;
    assert_eq!(visible + in_flight, 1);
    let back = receive_n(&src, 1).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body, r#"{"action":"retry"}"#);
    assert_eq!(back[0].receive_count(), 2);

    // the DLQ has the permanent and the undecodable one, with error attributes and the original ones
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    assert_eq!(dead.len(), 2);
    let perm = dead.iter().find(|m| m.body.contains("perm")).expect("perm in DLQ");
    assert_eq!(perm.attribute_str(dl::ERROR_KIND), Some("permanent"));
    assert_eq!(perm.attribute_str(dl::ERROR), Some("cannot ever work"));
    assert_eq!(perm.attribute_str(dl::SOURCE_QUEUE), Some(src.name()));
    assert_eq!(perm.attribute_str(dl::RECEIVE_COUNT), Some("1"));
    assert_eq!(perm.attribute_str("tenant"), Some("t1"));
    let bad = dead.iter().find(|m| m.body == "{broken json").expect("undecodable in DLQ");
    assert_eq!(bad.attribute_str(dl::ERROR_KIND), Some("undecodable"));
}

#[tokio::test]
async fn retryable_failure_comes_back_after_its_backoff_not_before() {
    let q = queue("backoff").await;
    q.send(OutgoingMessage::new(r#"{"action":"x"}"#)).await.unwrap();
    // fixed backoff of 3 s (base 3, factor 1, no jitter floor: full jitter could give 0, so use retry_after)
    let p =
        Processor::json(|_m: Message<Job>| async { Err(HandlerError::retry_after("later", Duration::from_secs(3))) });
    let ctx = QueueContext::new(q.clone(), None);
    let batch = receive_n(&q, 1).await;
    let decisions = p.process_batch(&ctx, batch).await;
    assert!(matches!(decisions[0].outcome, Outcome::Retry { visibility: 3, .. }));
    let settled_at = Instant::now();
    p.settle(&ctx, &decisions).await;
    assert!(q.receive(1, Duration::from_secs(1), None).await.unwrap().is_empty(), "hidden during the backoff");
    let back = q.receive(1, Duration::from_secs(10), None).await.unwrap();
    assert_eq!(back.len(), 1);
    assert!(settled_at.elapsed() >= Duration::from_secs(2), "came back after {:?}", settled_at.elapsed());
}

#[tokio::test]
async fn permanent_failure_without_dlq_is_retried_not_lost() {
    let q = queue("nodlq").await;
    q.send(OutgoingMessage::new(r#"{"action":"perm"}"#)).await.unwrap();
    let p = processor().with_config(ProcessorConfig::default().with_backoff(Backoff::fixed(Duration::from_secs(1))));
    let ctx = QueueContext::discover(q.clone()).await.unwrap();
    assert!(ctx.dlq.is_none());
    let decisions = p.process_batch(&ctx, receive_n(&q, 1).await).await;
    assert!(matches!(decisions[0].outcome, Outcome::Retry { .. }));
    let report = p.settle(&ctx, &decisions).await;
    assert_eq!((report.deleted, report.retried), (0, 1));
    let back = q.receive(1, Duration::from_secs(5), None).await.unwrap();
    assert_eq!(back.len(), 1, "the message is still there");
}

#[tokio::test]
async fn fifo_order_is_preserved_across_retries() {
    let (src, _dlq) = queue_with_dlq("fifoproc", 10, true, 30).await;
    // group A: a0..a4, group B: b0..b2; a2 fails twice before succeeding
    let mut msgs = Vec::new();
    for i in 0..5 {
        msgs.push(OutgoingMessage::new(format!("a{i}")).group_id("A"));
        if i < 3 {
            msgs.push(OutgoingMessage::new(format!("b{i}")).group_id("B"));
        }
    }
    src.send_batch(msgs).await.unwrap().into_result().unwrap();

    let handled = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let h = handled.clone();
    let p = Processor::raw(move |m: Message<String>| {
        let h = h.clone();
        async move {
            if m.body == "a2" && m.receive_count() < 3 {
                return Err(HandlerError::retry_after("flaky", Duration::from_secs(1)));
            }
            h.lock().unwrap().push(m.body.clone());
            Ok(())
        }
    });
    let ctx = QueueContext::discover(src.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while handled.lock().unwrap().len() < 8 && Instant::now() < deadline {
        let batch = src.receive(10, Duration::from_secs(2), None).await.unwrap();
        if batch.is_empty() {
            continue;
        }
        let decisions = p.process_batch(&ctx, batch).await;
        let report = p.settle(&ctx, &decisions).await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }
    let handled = handled.lock().unwrap().clone();
    let a: Vec<&str> = handled.iter().filter(|s| s.starts_with('a')).map(String::as_str).collect();
    let b: Vec<&str> = handled.iter().filter(|s| s.starts_with('b')).map(String::as_str).collect();
    assert_eq!(a, ["a0", "a1", "a2", "a3", "a4"], "group A in order, each once: {handled:?}");
    assert_eq!(b, ["b0", "b1", "b2"]);
}
