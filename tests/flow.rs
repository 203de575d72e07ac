//! Flow control through the library's poller against LocalStack: the circuit breaker around an
//! outage (standard and FIFO queues), the adaptive limit, the pause flag.
use sqskit_test_support as support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqskit::flow::BreakerConfig;
use sqskit::poller::{PollSummary, Poller, PollerConfig, QueueSpec};
use sqskit::{HandlerError, Message, Processor};
use support::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Run `poller` until the sender is used (or dropped).
fn start(poller: Poller<String>) -> (oneshot::Sender<()>, JoinHandle<PollSummary>) {
    let (tx, rx) = oneshot::channel::<()>();
    let run = tokio::spawn(poller.run(async {
        let _ = rx.await;
    }));
    (tx, run)
}

/// A downstream that is down (every call a retryable failure) while `down` is set; records
/// every call: (when, body, succeeded).
type Calls = Arc<Mutex<Vec<(Instant, String, bool)>>>;

fn downstream(down: Arc<AtomicBool>, calls: Calls) -> Processor<String> {
    Processor::raw(move |m: Message<String>| {
        let (down, calls) = (down.clone(), calls.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let ok = !down.load(Ordering::SeqCst);
            calls.lock().unwrap().push((Instant::now(), m.body.clone(), ok));
            if ok {
                Ok(())
            } else {
                Err(HandlerError::retryable("503"))
            }
        }
    })
}

fn config() -> PollerConfig {
    PollerConfig::default()
        .with_wait_time(Duration::from_secs(1))
        .with_depth_interval(Duration::ZERO)
        .with_shutdown_timeout(Duration::from_secs(10))
}

/// An outage of 8 s: the breaker opens after a few failures, probes about once a second at
/// most, and once the downstream is back every message is handled once; nothing is
/// dead-lettered and the poller ends with nothing in flight.
#[tokio::test]
async fn the_breaker_opens_during_an_outage_and_everything_is_handled_after_it() {
    logs();
    let (q, dlq) = queue_with_dlq("brk", 4, false, 30).await;
    send_numbered(&q, 200, "m").await;
    let down = Arc::new(AtomicBool::new(true));
    let calls: Calls = Arc::default();
    let poller = Poller::new(
        downstream(down.clone(), calls.clone()),
        [QueueSpec::new(q.clone())],
        config().with_breaker(Some(BreakerConfig::default())),
    )
    .await
    .unwrap();
    let stats = poller.stats();
    let (tx, run) = start(poller);
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    down.store(false, Ordering::SeqCst);
    let back = Instant::now();
    let during = calls.lock().unwrap().len();
    let flow = stats.flow();
    let breaker = flow.breaker.clone().unwrap();
    assert_ne!(breaker.state, "closed", "open or probing while down: {breaker:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let ok = || calls.lock().unwrap().iter().filter(|c| c.2).count();
    while ok() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tx.send(());
    let summary = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap();
    let calls = calls.lock().unwrap().clone();
    let mut delivered: Vec<&str> = calls.iter().filter(|c| c.2).map(|c| c.1.as_str()).collect();
    delivered.sort();
    let n = delivered.len();
    delivered.dedup();
    eprintln!(
        "{during} calls in the {:?} outage; {n} deliveries after it, the last {:?} after recovery; {summary:?}",
        back - began,
        calls.iter().filter(|c| c.2).map(|c| c.0 - back).max().unwrap_or_default()
    );
    assert!(during <= 60, "{during} calls while down");
    assert_eq!(delivered.len(), 200, "every message delivered");
    assert_eq!(n, 200, "none twice");
    assert_eq!(summary.dead_lettered, 0, "{summary:?}");
    assert_eq!(depth(&dlq).await.0, 0);
    assert_eq!(summary.in_flight, 0);
    assert_eq!(stats.flow().breaker.unwrap().state, "closed");
}

/// A FIFO queue through an outage: twenty groups of four, the downstream down for 6 s; the
/// breaker opens, and each group is handled in its order, every message once.
#[tokio::test]
async fn fifo_groups_keep_their_order_through_an_outage() {
    logs();
    let (q, dlq) = queue_with_dlq("brk-fifo", 5, true, 30).await;
    let groups: Vec<String> = (0..20).map(|g| format!("g{g:02}")).collect();
    for g in &groups {
        let msgs = (0..4).map(|i| sqskit::OutgoingMessage::new(format!("{g}-{i}")).group_id(g.clone()));
        q.send_batch(msgs).await.unwrap().into_result().unwrap();
    }
    let down = Arc::new(AtomicBool::new(true));
    let calls: Calls = Arc::default();
    let processor =
        downstream(down.clone(), calls.clone()).with_config(sqskit::ProcessorConfig::default().with_backoff(
            sqskit::retry::Backoff::default().with_base(Duration::from_secs(1)).with_max(Duration::from_secs(2)),
        ));
    let poller = Poller::new(processor, [QueueSpec::new(q.clone())], config()).await.unwrap();
    let stats = poller.stats();
    let (tx, run) = start(poller);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let opened = stats.flow().breaker.unwrap().transitions > 0;
    down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    let ok = || calls.lock().unwrap().iter().filter(|c| c.2).count();
    while ok() < 80 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tx.send(());
    let summary = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap();
    let calls = calls.lock().unwrap().clone();
    for g in &groups {
        let done: Vec<&str> =
            calls.iter().filter(|c| c.2 && c.1.starts_with(g.as_str())).map(|c| c.1.as_str()).collect();
        let want: Vec<String> = (0..4).map(|i| format!("{g}-{i}")).collect();
        assert_eq!(done, want, "group {g} in order, each once");
    }
    assert!(opened, "the breaker opened during the outage");
    assert_eq!(summary.dead_lettered, 0);
    assert_eq!(depth(&dlq).await.0, 0);
}

/// Every message on its last allowed receive once retried (`maxReceiveCount` 2): the probes of
/// an 8-s outage fail on messages whose next failure SQS or sqskit would dead-letter. Those
/// failures are the outage's: they are carried over as fresh copies, and once the downstream is
/// back every message is delivered, none dead-lettered.
#[tokio::test]
async fn failures_on_the_last_allowed_receive_during_an_outage_are_carried_over_not_dead_lettered() {
    logs();
    let (q, dlq) = queue_with_dlq("brk-held", 2, false, 30).await;
    send_numbered(&q, 40, "h").await;
    let down = Arc::new(AtomicBool::new(true));
    let calls: Calls = Arc::default();
    let processor =
        downstream(down.clone(), calls.clone()).with_config(sqskit::ProcessorConfig::default().with_backoff(
            sqskit::retry::Backoff::default().with_base(Duration::from_secs(1)).with_max(Duration::from_secs(1)),
        ));
    let poller = Poller::new(processor, [QueueSpec::new(q.clone())], config()).await.unwrap();
    let (tx, run) = start(poller);
    tokio::time::sleep(Duration::from_secs(8)).await;
    down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = |calls: &Calls| {
        let mut v: Vec<String> = calls.lock().unwrap().iter().filter(|c| c.2).map(|c| c.1.clone()).collect();
        v.sort();
        v
    };
    while delivered(&calls).len() < 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tx.send(());
    let summary = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap();
    let got = delivered(&calls);
    let mut unique = got.clone();
    unique.dedup();
    let failed_at_last = calls.lock().unwrap().iter().filter(|c| !c.2).count();
    eprintln!("{failed_at_last} failed calls; {summary:?}");
    assert_eq!(unique.len(), 40, "every message delivered: {summary:?}");
    assert_eq!(got.len(), 40, "each once");
    assert_eq!(summary.dead_lettered, 0, "{summary:?}");
    assert_eq!(depth(&dlq).await.0, 0, "nothing in the DLQ");
    assert!(summary.carried_over >= 1, "the failed probes on their last receive were carried over: {summary:?}");
}

/// `with_adaptive_concurrency(1, 64)` in front of a handler that can serve 8 at once (beyond 8
/// its calls queue): every message is handled once, the limit settles between the floor and the
/// ceiling near the capacity (never running more handlers than the ceiling), and `FlowStatus`
/// reports it.
#[tokio::test]
async fn the_adaptive_limit_settles_near_the_capacity_of_the_downstream() {
    logs();
    let q = queue("adaptive").await;
    send_numbered(&q, 600, "a").await;
    let room = Arc::new(tokio::sync::Semaphore::new(8));
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (r2, m2, d2, room2) = (running.clone(), most.clone(), done.clone(), room.clone());
    let processor = Processor::raw(move |_m: Message<String>| {
        let (running, most, done, room) = (r2.clone(), m2.clone(), d2.clone(), room2.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            {
                let _slot = room.acquire().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            running.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(())
        }
    });
    let poller =
        Poller::new(processor, [QueueSpec::new(q.clone())], config().with_adaptive_concurrency(1, 64)).await.unwrap();
    let stats = poller.stats();
    let (tx, run) = start(poller);
    let deadline = Instant::now() + Duration::from_secs(90);
    while done.load(Ordering::SeqCst) < 600 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let limit = stats.flow().concurrency_limit.expect("an adaptive limit is reported");
    let _ = tx.send(());
    let summary = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap();
    eprintln!("limit {limit}, at most {} running at once; {summary:?}", most.load(Ordering::SeqCst));
    assert_eq!(summary.succeeded, 600, "{summary:?}");
    assert!(most.load(Ordering::SeqCst) <= 64, "never more handlers than the ceiling");
    assert!((4..=24).contains(&limit), "the limit settles near the capacity of 8: {limit}");
}
