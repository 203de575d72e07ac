//! A poller's state as one serialisable snapshot, [`PollerStatus`]: what `GET /status` next to
//! `/metrics` answers (see
//! [`install_prometheus_with_status`](crate::metrics::install_prometheus_with_status)), and what
//! the console's pollers page shows.
//!
//! It owns the snapshot and the [`StatusBoard`] it is read from; it computes nothing of the
//! poller's own: counts come from [`PollStats`], liveness from [`Health`], failures by kind from
//! the `sqskit_messages_failed_total{kind}` counter the processor records, flow control's state
//! (the breaker, the paused queues, the adaptive limit) from the poller's
//! [`FlowStatus`](crate::poller::FlowStatus).
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use sqskit::health::Health;
//! use sqskit::status::StatusBoard;
//! let board = StatusBoard::new("1.2.3", Arc::new(Health::default()));
//! let status = board.snapshot(Default::default());
//! assert_eq!(status.version, "1.2.3");
//! assert!(!status.started && status.breaker.is_none());
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::health::{Health, HealthReport};
pub use crate::poller::{BreakerStatus, PauseStatus};
use crate::poller::{PollStats, PollSummary};

/// The state of one poller process.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct PollerStatus {
    /// The version of the program serving it.
    pub version: String,
    /// Whether the poller has started (its queues resolved); before that only health is known.
    pub started: bool,
    /// Names of the queues it consumes.
    pub queues: Vec<String>,
    /// Seconds since the process made its status board.
    pub uptime_s: f64,
    /// Messages in flight in this process.
    pub in_flight: u64,
    /// Messages finished (succeeded, retried, dead-lettered, duplicates) per second over the
    /// last [`PollerStatus::throughput_window_s`] seconds.
    pub throughput_per_s: f64,
    /// The window of [`PollerStatus::throughput_per_s`] (the time between two status reads, up
    /// to a minute).
    pub throughput_window_s: f64,
    /// The counts since start.
    pub counts: PollSummary,
    /// Handler failures by [`FailureKind`](crate::FailureKind) since start.
    pub failures_by_kind: BTreeMap<String, u64>,
    /// Liveness and readiness.
    pub health: HealthReport,
    /// The circuit breaker's state; `None` before the poller started, or with the breaker off.
    pub breaker: Option<BreakerStatus>,
    /// The queues paused and why; `None` before the poller started.
    pub paused: Option<Vec<PauseStatus>>,
    /// Handlers allowed to run at once now with `--concurrency auto`; `None` otherwise.
    pub concurrency_limit: Option<usize>,
}

/// Where a [`PollerStatus`] is read from: made before the poller (so the endpoint answers while
/// it starts), attached to the poller's counters once it exists.
#[derive(Debug)]
pub struct StatusBoard {
    version: String,
    born: Instant,
    health: Arc<Health>,
    poller: OnceLock<(Arc<PollStats>, Vec<String>)>,
    /// `(when, messages finished then)`, oldest first, for the throughput.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

const THROUGHPUT_WINDOW: Duration = Duration::from_secs(60);

impl StatusBoard {
    /// A board for a program of `version`, with the poller's `health`.
    pub fn new(version: impl Into<String>, health: Arc<Health>) -> Self {
        Self {
            version: version.into(),
            born: Instant::now(),
            health,
            poller: OnceLock::new(),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// The health the board reports.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Attach the poller's counters ([`Poller::stats`](crate::poller::Poller::stats)) and the
    /// names of its queues; a second call is ignored.
    pub fn attach(&self, stats: Arc<PollStats>, queues: Vec<String>) {
        let _ = self.poller.set((stats, queues));
    }

    /// The status now; `failures_by_kind` comes from the metrics recorder (see
    /// [`failures_by_kind`]).
    pub fn snapshot(&self, failures_by_kind: BTreeMap<String, u64>) -> PollerStatus {
        let now = Instant::now();
        let (counts, queues, flow) = match self.poller.get() {
            Some((stats, queues)) => (stats.snapshot(), queues.clone(), Some(stats.flow())),
            None => (PollSummary::default(), Vec::new(), None),
        };
        let started = flow.is_some();
        let finished = counts
            .succeeded
            .saturating_add(counts.retried)
            .saturating_add(counts.dead_lettered)
            .saturating_add(counts.duplicates);
        let (throughput_per_s, throughput_window_s) = {
            let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            while samples.len() > 1 && samples.get(1).is_some_and(|(t, _)| now.duration_since(*t) > THROUGHPUT_WINDOW) {
                samples.pop_front();
            }
            let rate = match samples.front() {
                Some((t, n)) if now.duration_since(*t) > Duration::from_millis(100) => {
                    let secs = now.duration_since(*t).as_secs_f64();
                    (finished.saturating_sub(*n) as f64 / secs, secs)
                }
                _ => (0.0, 0.0),
            };
            samples.push_back((now, finished));
            rate
        };
        PollerStatus {
            version: self.version.clone(),
            started,
            queues,
            uptime_s: now.duration_since(self.born).as_secs_f64(),
            in_flight: counts.in_flight,
            throughput_per_s,
            throughput_window_s,
            counts,
            failures_by_kind,
            health: self.health.report(),
            breaker: flow.as_ref().and_then(|f| f.breaker.clone()),
            paused: flow.as_ref().map(|f| f.paused.clone()),
            concurrency_limit: flow.and_then(|f| f.concurrency_limit),
        }
    }
}

/// Failures by kind from a Prometheus text exposition: the `sqskit_messages_failed_total`
/// counters, summed by their `kind` label.
///
/// # Example
/// ```
/// let text = "# TYPE sqskit_messages_failed_total counter\n\
///             sqskit_messages_failed_total{kind=\"permanent\"} 3\n\
///             sqskit_messages_failed_total{kind=\"retryable\"} 1\n\
///             sqskit_messages_received_total 9\n";
/// let f = sqskit::status::failures_by_kind(text);
/// assert_eq!(f.get("permanent"), Some(&3));
/// assert_eq!(f.len(), 2);
/// ```
pub fn failures_by_kind(prometheus_text: &str) -> BTreeMap<String, u64> {
    let name = crate::metrics::names::FAILED;
    let mut out = BTreeMap::new();
    for line in prometheus_text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else { continue };
        let Some((labels, value)) = rest.split_once('}') else { continue };
        let Some(kind) =
            labels.split(',').find_map(|l| l.trim().strip_prefix("kind=\"").and_then(|v| v.strip_suffix('"')))
        else {
            continue;
        };
        let n = value.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).unwrap_or(0.0);
        let total: &mut u64 = out.entry(kind.to_string()).or_default();
        *total = total.saturating_add(n as u64);
    }
    out
}

#[cfg(feature = "prometheus")]
impl crate::metrics::StatusSource for StatusBoard {
    fn health(&self) -> &Health {
        StatusBoard::health(self)
    }
    fn status_json(&self, prometheus_text: &str) -> String {
        serde_json::to_string(&self.snapshot(failures_by_kind(prometheus_text))).unwrap_or_default()
    }
}
