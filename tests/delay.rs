//! Delivery past SQS's 15-minute delay, in hops, through the real poller against LocalStack
//! (2-second hops stand in for 15-minute ones).
use sqskit_test_support as support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sqskit::poller::{Poller, PollerConfig, QueueSpec};
use sqskit::trace::TRACEPARENT;
use sqskit::{AttributeValue, HandlerError, Message, OutgoingMessage, Processor};
use support::*;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// (when the handler started, the message as received)
type Seen = Arc<Mutex<Vec<(SystemTime, sqskit::ReceivedMessage)>>>;

#[tokio::test]
async fn a_message_due_in_seven_seconds_hops_and_runs_once_after_its_time() {
    let q = queue("delay-hops").await.with_delay_hop(Duration::from_secs(2));
    let due = SystemTime::now() + Duration::from_secs(7);
    let msg = OutgoingMessage::new("later")
        .attribute("tenant", AttributeValue::string("t-1"))
        .attribute(TRACEPARENT, AttributeValue::string(TP));
    q.send_at(msg, due).await.unwrap();
    // an ordinary message beside it runs at once
    q.send(OutgoingMessage::new("now")).await.unwrap();
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let processor = Processor::raw(move |m: Message<String>| {
        let seen = s2.clone();
        async move {
            seen.lock().unwrap().push((SystemTime::now(), m.raw().clone()));
            Ok::<_, HandlerError>(())
        }
    });
    let config = PollerConfig::default()
        .with_until_empty(true)
        .with_wait_time(Duration::from_secs(1))
        .with_depth_interval(Duration::ZERO);
    let poller = Poller::new(processor, [QueueSpec::new(q.clone())], config).await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(90), poller.run(std::future::pending())).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let later: Vec<_> = seen.iter().filter(|(_, m)| m.body == "later").collect();
    assert_eq!(later.len(), 1, "handled exactly once: {seen:?}");
    let (started, m) = later[0];
    assert!(*started >= due, "started {:?} before it was due", due.duration_since(*started));
    assert_eq!(m.receive_count(), 1, "hops are new messages: no receive counted against it");
    assert_eq!(m.attributes["tenant"].as_str(), Some("t-1"));
    assert_eq!(m.attributes[TRACEPARENT].as_str(), Some(TP), "the trace context travels with the hops");
    let now: Vec<_> = seen.iter().filter(|(_, m)| m.body == "now").collect();
    assert_eq!(now.len(), 1);
    assert!(now[0].0 < due - Duration::from_secs(3), "an undelayed message is not held back");
    assert_eq!(summary.succeeded, 2, "{summary:?}");
    assert_eq!(depth(&q).await, (0, 0, 0), "no hop left behind");
}

#[tokio::test]
async fn fifo_queues_refuse_a_deliver_at() {
    let q = fifo_queue("delay-fifo").await;
    let err = q
        .send_at(OutgoingMessage::new("x").group_id("g"), SystemTime::now() + Duration::from_secs(3600))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("deliver_at") && err.contains("FIFO"), "{err}");
}
