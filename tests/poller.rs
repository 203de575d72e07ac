//! The poller against LocalStack.
//!
//! The prefetch buffer and idle receivers: the buffer is bounded to one batch per receiver,
//! heart-beaten while it waits for a handler slot, released at shutdown without running; on an
//! empty queue one receiver long-polls and the others park.
//!
//! Rate limits through the real poller: handler start times, not the run's wall clock, are what
//! is checked.
use sqskit_test_support as support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// (handler start, how long the message waited after its receive, body)
type Starts = Arc<Mutex<Vec<(Instant, Duration, String)>>>;

fn recorder(starts: Starts) -> Processor<String> {
    Processor::raw(move |m: Message<String>| {
        let starts = starts.clone();
        async move {
            let now = Instant::now();
            starts.lock().unwrap().push((now, now - m.raw().received_at, m.body.clone()));
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, HandlerError>(())
        }
    })
}

/// Most starts in any window [t, t + 1 s) that begins at a start.
fn busiest_second(starts: &[Instant]) -> usize {
    let mut s = starts.to_vec();
    s.sort();
    (0..s.len()).map(|i| s[i..].iter().take_while(|t| **t - s[i] < Duration::from_secs(1)).count()).max().unwrap_or(0)
}

fn config() -> PollerConfig {
    PollerConfig::default()
        .with_until_empty(true)
        .with_wait_time(Duration::from_secs(1))
        .with_depth_interval(Duration::ZERO)
}

#[tokio::test]
async fn three_hundred_messages_at_fifty_per_second_never_exceed_fifty_starts_in_a_second() {
    let q = queue("rate-50").await;
    send_numbered(&q, 300, "m").await;
    let starts: Starts = Arc::default();
    // concurrency far above the rate: only the limit holds the starts back
    let poller = Poller::new(
        recorder(starts.clone()),
        [QueueSpec::new(q.clone())],
        config().with_concurrency(64).with_rate(Some(50.0)),
    )
    .await
    .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(120), poller.run(std::future::pending())).await.unwrap();
    assert_eq!(summary.succeeded, 300, "{summary:?}");
    let starts = starts.lock().unwrap().clone();
    let times: Vec<Instant> = starts.iter().map(|s| s.0).collect();
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    assert!(last - first >= Duration::from_millis(5500), "300 starts at 50/s span ≥ 5.5 s: {:?}", last - first);
    let busiest = busiest_second(&times);
    let longest = starts.iter().map(|s| s.1).max().unwrap();
    eprintln!("300 at 50/s: span {:?}, busiest second {busiest}, longest wait after receive {longest:?}", last - first);
    assert!(busiest <= 50, "{busiest} starts within one second");
    assert!(busiest >= 40, "the limit is used, not undershot by far: {busiest}");
    // receives are sized by the limit: nothing waits long between its receive and its start
    assert!(longest < Duration::from_secs(3), "a message waited {longest:?} invisible for its turn");
}

#[tokio::test]
async fn per_queue_and_process_limits_both_hold() {
    let a = queue("rate-a").await;
    let b = queue("rate-b").await;
    send_numbered(&a, 40, "a").await;
    send_numbered(&b, 80, "b").await;
    let starts: Starts = Arc::default();
    let specs = [QueueSpec::new(a.clone()).with_rate(Some(10.0)), QueueSpec::new(b.clone())];
    let poller = Poller::new(recorder(starts.clone()), specs, config().with_concurrency(32).with_rate(Some(40.0)))
        .await
        .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(120), poller.run(std::future::pending())).await.unwrap();
    assert_eq!(summary.succeeded, 120, "{summary:?}");
    let starts = starts.lock().unwrap().clone();
    let times: Vec<Instant> = starts.iter().map(|s| s.0).collect();
    assert!(busiest_second(&times) <= 40, "process limit: {}", busiest_second(&times));
    let of_a: Vec<Instant> = starts.iter().filter(|s| s.2.starts_with('a')).map(|s| s.0).collect();
    assert_eq!(of_a.len(), 40);
    assert!(busiest_second(&of_a) <= 10, "queue a's limit: {}", busiest_second(&of_a));
}

#[tokio::test]
async fn an_invalid_rate_is_refused_by_name() {
    let q = queue("rate-bad").await;
    for bad in [0.0, -3.0, f64::NAN] {
        let err = Poller::new(recorder(Arc::default()), [QueueSpec::new(q.clone())], config().with_rate(Some(bad)))
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("rate"), "{err}");
    }
    let err = Poller::new(recorder(Arc::default()), [QueueSpec::new(q.clone()).with_rate(Some(0.0))], config())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("rate"), "{err}");
}

/// An idempotency store whose first claims panic (a bug outside the handler, like the TTL
/// overflow the issue found), then behaves as the in-memory store.
struct PanickyStore {
    panics_left: AtomicUsize,
    inner: sqskit::idempotency::MemoryStore,
}

impl sqskit::idempotency::IdempotencyStore for PanickyStore {
    fn kind(&self) -> &'static str {
        "panicky"
    }
    fn claim<'a>(
        &'a self,
        record: &'a sqskit::idempotency::Record,
        now: std::time::SystemTime,
    ) -> sqskit::idempotency::StoreFuture<'a, sqskit::idempotency::Claim> {
        if self.panics_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            panic!("overflow when adding duration to instant");
        }
        self.inner.claim(record, now)
    }
    fn complete<'a>(&'a self, record: &'a sqskit::idempotency::Record) -> sqskit::idempotency::StoreFuture<'a, ()> {
        self.inner.complete(record)
    }
    fn delete<'a>(&'a self, key: &'a str) -> sqskit::idempotency::StoreFuture<'a, ()> {
        self.inner.delete(key)
    }
    fn extend<'a>(&'a self, key: &'a str, until: std::time::SystemTime) -> sqskit::idempotency::StoreFuture<'a, ()> {
        self.inner.extend(key, until)
    }
}

/// A panic outside the handler (here in the idempotency claim) is that message's retryable
/// failure: its slot is freed, `in_flight` goes back to 0, the poller stays live and the
/// message runs on a later receive (before: the unit's task died with its in-flight count and
/// the message came back only after its visibility timeout, to be dead-lettered unrun).
#[tokio::test]
async fn a_panic_outside_the_handler_is_a_retry_and_frees_the_slot() {
    let (q, dlq) = queue_with_dlq("panic-outside", 3, false, 30).await;
    send_numbered(&q, 4, "pa").await;
    let done = Arc::new(AtomicUsize::new(0));
    let store = PanickyStore { panics_left: AtomicUsize::new(4), inner: Default::default() };
    let processor = counting(done.clone(), Duration::ZERO)
        .with_idempotency(sqskit::idempotency::Idempotency::new(store))
        .with_config(sqskit::ProcessorConfig::default().with_backoff(
            sqskit::retry::Backoff::default().with_base(Duration::from_secs(1)).with_max(Duration::from_secs(1)),
        ));
    let config = PollerConfig::default()
        .with_concurrency(2)
        .with_wait_time(Duration::from_secs(1))
        .with_until_empty(true)
        .with_depth_interval(Duration::ZERO);
    let poller = Poller::new(processor, [QueueSpec::new(q.clone())], config).await.unwrap();
    let health = poller.health();
    let (_tx, run) = start(poller);
    let summary = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the poller ends").unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 4, "every message ran once the store stopped panicking: {summary:?}");
    assert_eq!((summary.succeeded, summary.in_flight), (4, 0), "{summary:?}");
    assert_eq!(summary.retried, 4, "each panic was a retry: {summary:?}");
    assert!(!health.report().wedged, "{:?}", health.report());
    assert_eq!(depth(&dlq).await.0, 0);
    assert_eq!(depth(&q).await, (0, 0, 0));
}
