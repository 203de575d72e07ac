//! The library as a dependency: batch handlers in Lambda and in an embedded poller, and
//! handlers using `?`, against LocalStack.
use sqskit_test_support as support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sqskit::lambda::LambdaAdapter;
use sqskit::poller::{Poller, PollerConfig, QueueSpec};
use sqskit::processor::dead_letter_attributes as dl;
use sqskit::{HandlerError, Message, OutgoingMessage, Processor, ResultExt};
use support::*;

#[derive(serde::Deserialize)]
struct Row {
    n: i64,
}

/// A batch handler that "writes" rows in bulk: negative rows are rejected for good.
fn bulk_writer(batches: Arc<Mutex<Vec<usize>>>) -> Processor<Row> {
    Processor::json_batch(move |rows: Vec<Message<Row>>| {
        let batches = batches.clone();
        async move {
            batches.lock().unwrap().push(rows.len());
            rows.iter()
                .map(|r| if r.body.n < 0 { Err(HandlerError::permanent("negative row")) } else { Ok(()) })
                .collect()
        }
    })
}

#[tokio::test]
async fn a_batch_handler_in_lambda_reports_partial_failures_and_dead_letters() {
    let (src, dlq) = queue_with_dlq("batch-lambda", 5, false, 60).await;
    let arn = src.attributes().await.unwrap().arn.unwrap();
    let bodies = [json!({"n": 1}), json!({"n": -1}), json!({"n": 2}), json!("not a row")];
    src.send_batch(bodies.iter().map(|b| OutgoingMessage::new(b.to_string()))).await.unwrap().into_result().unwrap();
    let got = receive_exactly(&src, 4).await;
    let batches = Arc::new(Mutex::new(Vec::new()));
    let adapter = LambdaAdapter::new(bulk_writer(batches.clone()), sqs().await);
    let event =
        serde_json::from_value(json!({"Records": got.iter().map(|m| lambda_record(m, &arn)).collect::<Vec<_>>()}))
            .unwrap();
    let (resp, summary) = adapter.handle(event).await.unwrap();
    assert!(resp.batch_item_failures.is_empty(), "the negative row and the bad body are dead-lettered by the function");
    assert_eq!(summary.dead_lettered, 2);
    assert_eq!(batches.lock().unwrap().clone(), [3], "one call with the three decodable rows");
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    let mut kinds: Vec<&str> = dead.iter().filter_map(|m| m.attribute_str(dl::ERROR_KIND)).collect();
    kinds.sort();
    assert_eq!(kinds, ["permanent", "undecodable"]);
}

#[tokio::test]
async fn an_embedded_poller_gives_a_batch_handler_whole_receives() {
    let (q, dlq) = queue_with_dlq("batch-poller", 5, false, 30).await;
    let rows: Vec<OutgoingMessage> =
        (0..40).map(|i| OutgoingMessage::new(json!({"n": if i == 7 { -7 } else { i }}).to_string())).collect();
    q.send_batch(rows).await.unwrap().into_result().unwrap();
    let batches = Arc::new(Mutex::new(Vec::new()));
    let config = PollerConfig::default()
        .with_until_empty(true)
        .with_wait_time(Duration::from_secs(1))
        .with_depth_interval(Duration::ZERO);
    let poller = Poller::new(bulk_writer(batches.clone()), [QueueSpec::new(q.clone())], config).await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(90), poller.run(std::future::pending())).await.unwrap();
    assert_eq!((summary.succeeded, summary.dead_lettered), (39, 1), "{summary:?}");
    let batches = batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 40);
    assert!(batches.iter().any(|&n| n > 1), "receives are handed over whole: {batches:?}");
    assert_eq!(drain(&dlq, Duration::from_secs(1)).await.len(), 1);
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn handlers_use_question_mark_and_mark_permanent_errors() {
    let (q, dlq) = queue_with_dlq("question-mark", 5, false, 30).await;
    q.send_batch(["12", "twelve"].map(OutgoingMessage::new)).await.unwrap().into_result().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let p = Processor::raw(move |m: Message<String>| {
        let s2 = s2.clone();
        async move {
            let n: u64 = m.body.parse().permanent()?;
            s2.lock().unwrap().push(n);
            Ok(())
        }
    });
    let config = PollerConfig::default().with_until_empty(true).with_wait_time(Duration::from_secs(1));
    let poller = Poller::new(p, [q.clone()], config).await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), poller.run(std::future::pending())).await.unwrap();
    assert_eq!((summary.succeeded, summary.dead_lettered), (1, 1));
    assert_eq!(seen.lock().unwrap().clone(), [12]);
    let dead = drain(&dlq, Duration::from_secs(1)).await;
    assert_eq!(dead[0].body, "twelve");
    assert!(dead[0].attribute_str(dl::ERROR).is_some_and(|e| e.contains("invalid digit")));
}

#[tokio::test]
async fn a_message_move_task_returns_dead_letters_to_their_source() {
    let (src, dlq) = queue_with_dlq("move-task", 1, false, 1).await;
    src.send(OutgoingMessage::new("bounce")).await.unwrap();
    // receive it once without deleting; on the next receive SQS moves it to the DLQ
    assert_eq!(src.receive(1, Duration::from_secs(2), None).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(src.receive(1, Duration::from_secs(1), None).await.unwrap().is_empty());
    let limit = std::time::Instant::now() + Duration::from_secs(20);
    while depth(&dlq).await.0 != 1 {
        assert!(std::time::Instant::now() < limit, "the message reached the DLQ");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let e = sqskit::dlq::start_move_task(&dlq, None, Some(501)).await.unwrap_err();
    assert!(e.to_string().contains("rate"), "validated before any call: {e}");
    let handle = sqskit::dlq::start_move_task(&dlq, None, Some(50)).await.unwrap();
    assert!(!handle.is_empty());
    let back = src.receive(1, Duration::from_secs(20), None).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body, "bounce");
}
