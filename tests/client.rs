//! The client core against LocalStack.
use sqskit_test_support as support;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqskit::limits::MAX_PAYLOAD_BYTES;
use sqskit::{AttributeValue, Error, OutgoingMessage, Queue};
use support::*;

const W: Duration = Duration::from_secs(1);

#[tokio::test]
async fn send_receive_round_trip_with_attributes() {
    let q = queue("roundtrip").await;
    let sent = q
        .send(
            OutgoingMessage::new("hello sqs")
                .attribute("tenant", AttributeValue::string("acme"))
                .attribute("priority", AttributeValue::number(7))
                .attribute("blob", AttributeValue::binary(vec![0u8, 1, 2, 255])),
        )
        .await
        .unwrap();
    let got = q.receive(10, Duration::from_secs(5), None).await.unwrap();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.message_id, sent.message_id);
    assert_eq!(m.body, "hello sqs");
    assert_eq!(m.attribute_str("tenant"), Some("acme"));
    assert_eq!(m.attributes["priority"], AttributeValue::number(7));
    assert_eq!(m.attributes["blob"].binary_value.as_deref(), Some(&[0u8, 1, 2, 255][..]));
    assert_eq!(m.receive_count(), 1);
    assert!(m.sent_at().is_some(), "SentTimestamp requested");
    assert!(m.first_received_at().is_some(), "ApproximateFirstReceiveTimestamp requested");
    assert!(!m.receipt_handle.is_empty());
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Order {
    id: u64,
    customer: String,
    total_cents: i64,
}

#[tokio::test]
async fn typed_send_and_receive() {
    let q = queue("typed").await;
    let order = Order { id: 42, customer: "c-1".into(), total_cents: 1999 };
    q.send_typed(&order).await.unwrap();
    let got = q.receive(1, Duration::from_secs(5), None).await.unwrap();
    let back: Order = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(back, order);
}

#[tokio::test]
async fn batch_of_25_is_sent_in_3_calls_and_all_received() {
    let q = queue("batch25").await;
    let report = q.send_batch((0..25).map(|i| OutgoingMessage::new(format!("m{i}")))).await.unwrap();
    assert_eq!(report.calls, 3);
    assert_eq!(report.sent.len(), 25);
    assert!(report.failed.is_empty());
    assert_eq!(report.sent.iter().map(|s| s.index).collect::<Vec<_>>(), (0..25).collect::<Vec<_>>());
    let mut bodies: Vec<String> = drain(&q, W).await.into_iter().map(|m| m.body).collect();
    bodies.sort();
    let mut want: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(bodies, want);
}

#[tokio::test]
async fn batch_is_split_by_payload_size() {
    let q = queue("batchsize").await;
    let body = "x".repeat(200 * 1024);
    let report = q.send_batch((0..10).map(|_| OutgoingMessage::new(body.clone()))).await.unwrap();
    assert!(report.calls >= 2, "10 x 200 KiB needs at least 2 calls, made {}", report.calls);
    assert_eq!(report.sent.len(), 10);
    assert_eq!(drain(&q, W).await.len(), 10);
}

#[tokio::test]
async fn oversized_message_is_rejected_before_any_call() {
    // A queue that does not exist: any call would fail with QueueDoesNotExist instead.
    let client = sqs().await;
    let q = Queue::new(client, format!("{}/queue/us-east-1/000000000000/{}", endpoint(), unique("nosuch")));
    let big = OutgoingMessage::new("x".repeat(MAX_PAYLOAD_BYTES + 1));
    match q.send(big.clone()).await {
        Err(Error::MessageTooLarge { size, limit, .. }) => {
            assert_eq!(size, MAX_PAYLOAD_BYTES + 1);
            assert_eq!(limit, MAX_PAYLOAD_BYTES);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    let err = q.send_batch(vec![OutgoingMessage::new("small"), big]).await.unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { index: 1, .. }), "{err}");
    assert!(err.to_string().contains("1048577") && err.to_string().contains("1048576"), "{err}");
}

#[tokio::test]
async fn a_message_of_exactly_one_mib_is_accepted() {
    let q = queue("onemib").await;
    q.send(OutgoingMessage::new("y".repeat(MAX_PAYLOAD_BYTES))).await.unwrap();
    let got = q.receive(1, Duration::from_secs(5), None).await.unwrap();
    assert_eq!(got[0].body.len(), MAX_PAYLOAD_BYTES);
}

#[tokio::test]
async fn long_poll_returns_early_when_a_message_arrives() {
    let q = queue("longpoll").await;
    let sender = q.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        sender.send(OutgoingMessage::new("late")).await.unwrap();
    });
    let started = Instant::now();
    let got = q.receive(10, Duration::from_secs(20), None).await.unwrap();
    let took = started.elapsed();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "late");
    assert!(took >= Duration::from_millis(1000), "it did wait for the message ({took:?})");
    assert!(
        took < Duration::from_secs(15),
        "it returned when the message arrived, not at the end of the wait ({took:?})"
    );
}

#[tokio::test]
async fn out_of_range_receive_arguments_are_errors_not_clamped() {
    let q = queue("limits").await;
    for (max, wait) in [(0, 0), (11, 0), (10, 21)] {
        let err = q.receive(max, Duration::from_secs(wait), None).await.unwrap_err();
        assert!(matches!(err, Error::Limit { .. }), "{err}");
    }
    let err = q.receive(1, Duration::ZERO, Some(Duration::from_secs(43_201))).await.unwrap_err();
    assert!(err.to_string().contains("visibility_timeout"));
    let err = q.send(OutgoingMessage::new("x").delay_seconds(901)).await.unwrap_err();
    assert!(err.to_string().contains("delay_seconds"), "{err}");
}

#[tokio::test]
async fn delete_batch_reports_a_bad_handle_and_deletes_the_rest() {
    let q = queue("delete").await;
    q.send_batch((0..3).map(|i| OutgoingMessage::new(format!("d{i}")))).await.unwrap().into_result().unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(q.receive(10, W, Some(Duration::from_secs(60))).await.unwrap());
    }
    let mut handles: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
    handles.insert(1, "not-a-real-receipt-handle".to_string());
    let report = q.delete_batch(&handles).await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].index, 1);
    assert!(report.failed[0].code.contains("ReceiptHandleIsInvalid"), "{}", report.failed[0].code);
    assert_eq!(report.succeeded, vec![0, 2, 3]);
    assert!(report.clone().into_result().is_err());
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn change_visibility_to_zero_makes_a_message_visible_again() {
    let q = queue("vis").await;
    q.send(OutgoingMessage::new("again")).await.unwrap();
    let first = q.receive(1, Duration::from_secs(5), Some(Duration::from_secs(300))).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(q.receive(1, Duration::ZERO, None).await.unwrap().is_empty(), "hidden for 300 s");
    q.change_visibility_batch(&[first[0].receipt_handle.as_str()], 0).await.unwrap().into_result().unwrap();
    let second = q.receive(1, Duration::from_secs(2), None).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].receive_count(), 2);
}

#[tokio::test]
async fn message_received_max_receive_count_times_lands_in_the_dlq() {
    let (src, dlq) = queue_with_dlq("redrive", 2, false, 30).await;
    let attrs = src.attributes().await.unwrap();
    let redrive = attrs.redrive.expect("redrive policy");
    assert_eq!(redrive.max_receive_count, 2);
    assert_eq!(redrive.dead_letter_url.as_deref(), Some(dlq.url()));
    src.send(OutgoingMessage::new("poison")).await.unwrap();
    for n in 1..=2 {
        let got = src.receive(1, Duration::from_secs(5), Some(Duration::ZERO)).await.unwrap();
        assert_eq!(got.len(), 1, "receive {n}");
        assert_eq!(got[0].receive_count(), n);
    }
    // the next receive moves it to the DLQ instead of returning it
    assert!(src.receive(1, Duration::from_secs(1), None).await.unwrap().is_empty());
    let dead = dlq.receive(1, Duration::from_secs(5), None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
}

#[tokio::test]
async fn delayed_message_is_invisible_until_its_delay() {
    let q = queue("delay").await;
    let sent_at = Instant::now();
    q.send(OutgoingMessage::new("later").delay_seconds(3)).await.unwrap();
    assert!(q.receive(1, Duration::ZERO, None).await.unwrap().is_empty());
    assert_eq!(depth(&q).await.2, 1, "counted as delayed");
    let got = q.receive(1, Duration::from_secs(10), None).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(sent_at.elapsed() >= Duration::from_secs(2), "not before the delay ({:?})", sent_at.elapsed());
}

#[tokio::test]
async fn fifo_order_and_group_id_are_preserved() {
    let q = fifo_queue("order").await;
    let msgs =
        (0..15).map(|i| OutgoingMessage::new(format!("o{i:02}")).group_id(if i % 2 == 0 { "even" } else { "odd" }));
    let report = q.send_batch(msgs).await.unwrap();
    assert_eq!(report.sent.len(), 15);
    assert!(report.sent.iter().all(|s| s.sequence_number.is_some()));
    let got = drain(&q, W).await;
    assert_eq!(got.len(), 15);
    for group in ["even", "odd"] {
        let bodies: Vec<&str> = got.iter().filter(|m| m.group_id() == Some(group)).map(|m| m.body.as_str()).collect();
        let mut sorted = bodies.clone();
        sorted.sort();
        assert_eq!(bodies, sorted, "group {group} in send order");
        assert!(got.iter().filter(|m| m.group_id() == Some(group)).all(|m| m.sequence_number().is_some()));
    }
}

#[tokio::test]
async fn missing_queue_is_reported_as_such() {
    let client = sqs().await;
    let name = unique("gone");
    let q = Queue::new(client.clone(), format!("{}/queue/us-east-1/000000000000/{name}", endpoint()));
    let err = q.receive(1, Duration::ZERO, None).await.unwrap_err();
    assert!(matches!(err, Error::QueueDoesNotExist { .. }), "{err:?}");
    let err = Queue::by_name(client, &name, None).await.unwrap_err();
    assert!(matches!(err, Error::QueueDoesNotExist { .. }), "{err:?}");
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transient_transport_error() {
    let conf = sdk_config_for("http://127.0.0.1:9").await;
    let q = Queue::new(aws_sdk_sqs::Client::new(&conf), "http://127.0.0.1:9/queue/us-east-1/000000000000/x");
    let err = q.receive(1, Duration::ZERO, None).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn attributes_report_depth() {
    let q = queue("depth").await;
    q.send_batch((0..4).map(|i| OutgoingMessage::new(format!("{i}")))).await.unwrap();
    q.send(OutgoingMessage::new("d").delay_seconds(60)).await.unwrap();
    let _inflight = q.receive(1, Duration::from_secs(2), Some(Duration::from_secs(60))).await.unwrap();
    let a = q.attributes().await.unwrap();
    assert_eq!((a.visible, a.in_flight, a.delayed), (3, 1, 1));
    assert!(a.redrive.is_none());
    assert!(a.arn.unwrap().ends_with(q.name()));
}
