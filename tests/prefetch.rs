//! The poller's prefetch buffer against LocalStack: bounded to one batch per receiver, heart-
//! beaten while it waits for a handler slot, released at shutdown without running.
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqskit::poller::{Poller, PollerConfig, QueueSpec};
use sqskit::{HandlerError, Message, OutgoingMessage, Processor};
use support::*;

#[tokio::test]
async fn prefetched_messages_are_bounded_kept_invisible_and_released_at_shutdown() {
    let q = queue("prefetch").await;
    for chunk in (0..30).collect::<Vec<_>>().chunks(10) {
        q.send_batch(chunk.iter().map(|i| OutgoingMessage::new(format!("p{i}")))).await.unwrap().into_result().unwrap();
    }
    let started = Arc::new(AtomicUsize::new(0));
    let again = Arc::new(AtomicUsize::new(0));
    let (s2, a2) = (started.clone(), again.clone());
    let processor = Processor::raw(move |m: Message<String>| {
        let (started, again) = (s2.clone(), a2.clone());
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            if m.raw().receive_count() > 1 {
                again.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_secs(4)).await;
            Ok::<_, HandlerError>(())
        }
    });
    // 2 handler slots → 1 receiver → a prefetch buffer of 10; a 2 s visibility timeout that
    // only the heartbeat keeps from lapsing while messages wait for a slot
    let config = PollerConfig::default()
        .with_concurrency(2)
        .with_visibility_timeout(Duration::from_secs(2))
        .with_wait_time(Duration::from_secs(1))
        .with_shutdown_timeout(Duration::from_secs(10))
        .with_depth_interval(Duration::ZERO);
    let poller = Poller::new(processor, [QueueSpec::new(q.clone())], config).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(poller.run(async {
        let _ = rx.await;
    }));
    // let the buffer fill and outlive the visibility timeout twice over
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (visible, in_flight, _) = depth(&q).await;
    assert!(in_flight <= 12, "at most 2 running + 10 prefetched in flight, saw {in_flight}");
    assert!(in_flight >= 8, "the buffer is used: {in_flight} in flight ({visible} visible)");
    let before_stop = started.load(Ordering::SeqCst);
    let _ = tx.send(());
    let summary = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap();
    assert!(started.load(Ordering::SeqCst) <= before_stop, "nothing started after the shutdown signal");
    assert!(summary.released >= 9, "the prefetched messages were released: {summary:?}");
    assert_eq!(summary.received, summary.succeeded + summary.released + summary.retried, "{summary:?}");
    // released at once (visibility 0), not after a timeout
    let (visible, in_flight, _) = depth(&q).await;
    assert_eq!((visible, in_flight), (30 - summary.succeeded, 0), "{summary:?}");
    // the heartbeat kept every waiting message invisible: none was received twice
    assert_eq!(again.load(Ordering::SeqCst), 0, "a message waiting for a slot was received again");
}
