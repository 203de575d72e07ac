//! Rate limits through the real poller against LocalStack: handler start times, not the
//! run's wall clock, are what is checked.
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqskit::poller::{Poller, PollerConfig, QueueSpec};
use sqskit::{HandlerError, Message, Processor};
use support::*;

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
