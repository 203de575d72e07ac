//! The poller's prefetch buffer and idle receivers against LocalStack: the buffer is bounded to
//! one batch per receiver, heart-beaten while it waits for a handler slot, released at shutdown
//! without running; on an empty queue one receiver long-polls and the others park.
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqskit::poller::{PollSummary, Poller, PollerConfig, QueueSpec};
use sqskit::{HandlerError, Message, Processor};
use support::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A handler that counts the messages it handled, after `pause`.
fn counting(done: Arc<AtomicUsize>, pause: Duration) -> Processor<String> {
    Processor::raw(move |_m: Message<String>| {
        let done = done.clone();
        async move {
            tokio::time::sleep(pause).await;
            done.fetch_add(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(())
        }
    })
}

/// Run `poller` until the sender is used (or dropped).
fn start(poller: Poller<String>) -> (oneshot::Sender<()>, JoinHandle<PollSummary>) {
    let (tx, rx) = oneshot::channel::<()>();
    let run = tokio::spawn(poller.run(async {
        let _ = rx.await;
    }));
    (tx, run)
}

#[tokio::test]
async fn prefetched_messages_are_bounded_kept_invisible_and_released_at_shutdown() {
    let q = queue("prefetch").await;
    send_numbered(&q, 30, "p").await;
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
    let (tx, run) = start(poller);
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

/// Four receivers on an empty queue: one long-polls it, three park (one receive per wait time,
/// not four); messages wake them all; a shutdown ends the parked ones too.
#[tokio::test]
async fn an_idle_poller_long_polls_an_empty_queue_once_per_wait_not_once_per_receiver() {
    let q = queue("idle").await;
    let done = Arc::new(AtomicUsize::new(0));
    let processor = counting(done.clone(), Duration::from_millis(20));
    // 40 slots → 4 receivers; 2-s long polls
    let config = PollerConfig::default()
        .with_concurrency(40)
        .with_wait_time(Duration::from_secs(2))
        .with_shutdown_timeout(Duration::from_secs(10))
        .with_depth_interval(Duration::ZERO);
    let poller = Poller::new(processor, [QueueSpec::new(q.clone())], config).await.unwrap();
    let stats = poller.stats();
    let (tx, run) = start(poller);
    // 4 first receives end empty at ~2 s; then only the lead polls: ~2 s, ~4 s, ~6 s, ~8 s
    tokio::time::sleep(Duration::from_secs(9)).await;
    let idle = stats.snapshot();
    assert_eq!(idle.parked, 3, "three of four receivers park on an empty queue: {idle:?}");
    // without parking: 4 receivers × 4 rounds = 16 calls by now
    assert!(
        (5..=9).contains(&idle.receive_calls),
        "one long poll per wait time once idle, saw {} calls in 9 s: {idle:?}",
        idle.receive_calls
    );
    // messages arrive: the lead's receive returns them and wakes the others
    send_numbered(&q, 300, "i").await;
    let mut fewest_parked = u64::MAX;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < 300 && std::time::Instant::now() < deadline {
        fewest_parked = fewest_parked.min(stats.snapshot().parked);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(done.load(Ordering::SeqCst), 300, "every message handled");
    assert_eq!(fewest_parked, 0, "messages woke every parked receiver");
    // empty again: back to one long poll
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(stats.snapshot().parked, 3, "{:?}", stats.snapshot());
    let _ = tx.send(());
    let summary = tokio::time::timeout(Duration::from_secs(10), run).await.expect("parked receivers stop").unwrap();
    assert_eq!(summary.succeeded, 300, "{summary:?}");
    assert_eq!(summary.parked, 0, "{summary:?}");
}

/// Two queues, both empty: one lead each, the other receivers park. Then queue a gets messages
/// that are taken slowly (10/s) while b stays empty: all handled. (A receiver must not park while
/// some queue has nobody long-polling it. Without that rule this test happened to pass, but
/// `tests/rate.rs` `per_queue_and_process_limits_both_hold` hung every time: every receiver but
/// b's lead ended up parked behind b while a still held messages.)
#[tokio::test]
async fn with_two_queues_no_receiver_parks_while_a_queue_has_messages() {
    let a = queue("idle-a").await;
    let b = queue("idle-b").await;
    let done = Arc::new(AtomicUsize::new(0));
    let processor = counting(done.clone(), Duration::ZERO);
    let config = PollerConfig::default()
        .with_concurrency(40)
        .with_wait_time(Duration::from_secs(1))
        .with_shutdown_timeout(Duration::from_secs(10))
        .with_depth_interval(Duration::ZERO);
    let specs = [QueueSpec::new(a.clone()).with_rate(Some(10.0)), QueueSpec::new(b.clone())];
    let poller = Poller::new(processor, specs, config).await.unwrap();
    let stats = poller.stats();
    let (tx, run) = start(poller);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(stats.snapshot().parked, 2, "4 receivers, 2 empty queues: 2 leads, 2 parked: {:?}", stats.snapshot());
    send_numbered(&a, 60, "a").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while done.load(Ordering::SeqCst) < 60 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(done.load(Ordering::SeqCst), 60, "queue a's messages handled: {:?}", stats.snapshot());
    let _ = tx.send(());
    let summary = tokio::time::timeout(Duration::from_secs(10), run).await.expect("stops").unwrap();
    assert_eq!(summary.succeeded, 60, "{summary:?}");
}
