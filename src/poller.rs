//! The poller: a long-running consumer that keeps SQS busy and never loses a message.
//!
//! It owns time: receiving only when there is room (permits for `concurrency` handler
//! slots plus a small prefetch buffer, taken *before* each receive), heartbeats that extend
//! the visibility of long-running handlers, coalescing deletes and visibility changes into
//! batch calls (the acker: a full batch of 10 at once, a partial one when its oldest entry has
//! waited `ack_flush_interval`), and graceful shutdown. What happens to each message is
//! decided by the [`Processor`]; the poller only carries it out.
//!
//! Idle: while a queue is empty one receiver long-polls it, and once every queue has such a
//! receiver the others park, so an idle poller makes one `ReceiveMessage` per queue per
//! `wait_time` however many receivers it has; the first messages one of them gets wake them all.
//!
//! Shutdown (when the `shutdown` future completes): in-flight long polls are
//! cancelled at once; messages received but not started are released (visibility 0);
//! running handlers get `shutdown_timeout` to finish; pending acks are flushed.
//!
//! Leases: the heartbeat extends a unit's messages until its next extension would pass
//! `max_visibility_extension` since receipt; then the running handler is cancelled (a
//! retryable `timeout`) while the lease still has half a visibility timeout left, so no
//! handler runs past its lease. In a FIFO group each message is deleted as soon as its
//! outcome is known (batched with others, not held until the group finishes).
//!
//! Acks go through a bounded channel: when SQS is slow to confirm deletes, handlers wait
//! to hand theirs over (keeping their slots), so receiving slows down instead of memory
//! growing.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::Queue;
use crate::error::Error;
use crate::health::Health;
use crate::limits::{clamp_visibility, MAX_BATCH_ENTRIES, MAX_VISIBILITY_SECONDS};
use crate::message::ReceivedMessage;
use crate::metrics::names;
use crate::processor::{fifo_groups, Decision, Outcome, Processor, QueueContext, Sequence};
use crate::rate::RateLimit;
use crate::retry::Backoff;
use crate::settle::{self, Actions, Deletion};

/// Completes on the first SIGTERM or SIGINT (the signals ECS, Kubernetes and a terminal send):
/// pass it to [`Poller::run`] for a graceful drain. A second signal exits the process at once
/// (code 130).
///
/// # Example
/// ```no_run
/// # async fn demo(poller: sqskit::poller::Poller<String>) {
/// let summary = poller.run(sqskit::shutdown_signal()).await;
/// # let _ = summary; }
/// ```
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received: draining (a second signal exits at once)");
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("sqskit: second signal: exiting now");
        std::process::exit(130);
    });
}

/// A queue to poll and its weight (its share of receives relative to the other queues).
///
/// # Example
/// ```
/// # async fn demo() {
/// use sqskit::{poller::QueueSpec, Queue};
/// let high = QueueSpec::new(Queue::from_env("http://127.0.0.1:4566/queue/us-east-1/000000000000/high").await).with_weight(3);
/// assert_eq!(high.weight, 3);
/// let (url, weight) = QueueSpec::parse_url("https://sqs.eu-west-1.amazonaws.com/1/low=1").unwrap();
/// assert_eq!((url.as_str(), weight), ("https://sqs.eu-west-1.amazonaws.com/1/low", 1));
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueSpec {
    /// The queue.
    pub queue: Queue,
    /// Weight ≥ 1.
    pub weight: u32,
    /// Messages started per second from this queue at most (see [`crate::rate`]).
    pub rate: Option<f64>,
}

impl QueueSpec {
    /// `queue` with weight 1.
    pub fn new(queue: Queue) -> Self {
        Self { queue, weight: 1, rate: None }
    }
    /// Start at most `rate` messages per second from this queue (`None`: no limit).
    pub fn with_rate(mut self, rate: Option<f64>) -> Self {
        self.rate = rate;
        self
    }
    /// Set the weight (0 is taken as 1).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }
    /// Parse `URL` or `URL=WEIGHT` (the CLI's `--queue-url` form).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `queue-url` for a non-http(s) URL or a weight that is not ≥ 1.
    pub fn parse_url(s: &str) -> Result<(String, u32), Error> {
        let (url, weight) = match s.rsplit_once('=') {
            Some((url, w)) if !w.contains('/') => {
                let weight = w.trim().parse::<u32>().ok().filter(|w| *w >= 1).ok_or_else(|| Error::Invalid {
                    what: "queue-url",
                    reason: format!("weight {w:?} in {s:?} is not a whole number ≥ 1"),
                })?;
                (url, weight)
            }
            _ => (s, 1),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Invalid { what: "queue-url", reason: format!("{url:?} is not an http(s) queue URL") });
        }
        Ok((url.to_string(), weight))
    }
}

impl From<Queue> for QueueSpec {
    fn from(queue: Queue) -> Self {
        Self::new(queue)
    }
}

/// Poller settings: `PollerConfig::default()` and the `with_*` setters.
///
/// # Example
/// ```
/// use std::time::Duration;
/// let c = sqskit::poller::PollerConfig::default().with_concurrency(100).with_wait_time(Duration::from_secs(5));
/// assert!(c.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PollerConfig {
    /// Messages in flight at most (handlers running or about to).
    pub concurrency: usize,
    /// Visibility timeout requested on receive; the heartbeat extends by this much.
    pub visibility_timeout: Duration,
    /// Longest total time a message may be kept invisible by heartbeats (≤ 12 h). A handler
    /// still running when the next extension would pass it is cancelled (retryable timeout).
    pub max_visibility_extension: Duration,
    /// Long-poll wait (≤ 20 s).
    pub wait_time: Duration,
    /// Time running handlers get to finish after shutdown starts.
    pub shutdown_timeout: Duration,
    /// Longest time an ack waits to be batched with others.
    pub ack_flush_interval: Duration,
    /// Longest time a receiver waits for more free slots to ask for a fuller batch (≤ 10).
    pub receive_fill_wait: Duration,
    /// How often queue depth is read for the metrics (zero: never).
    pub depth_interval: Duration,
    /// Stop by itself once the queues are empty (nothing visible, in flight or delayed).
    pub until_empty: bool,
    /// DLQ to use for queues whose redrive policy names none.
    pub dead_letter_url: Option<String>,
    /// Added to 2 × `wait_time` to make the liveness window (see [`crate::health`]).
    pub liveness_margin: Duration,
    /// Messages received ahead of free handler slots, so that a slot that frees up starts the
    /// next message at once instead of waiting for a receive round trip. `None`: one batch
    /// (10) per receiver; `Some(0)`: off. They are in flight like any other message: counted,
    /// heart-beaten, and released at shutdown without running.
    pub prefetch: Option<usize>,
    /// Per-tenant counters for fair queues (standard queues whose messages carry a
    /// `MessageGroupId`): own labels for this many tenants, the rest as `other`; 0 = off.
    pub tenant_metrics: usize,
    /// Messages started per second by this poller at most, over all its queues (see
    /// [`crate::rate`]); each queue may have its own limit too ([`QueueSpec::with_rate`]).
    pub rate: Option<f64>,
    /// Health state to update (e.g. one a metrics server already serves); else the poller
    /// makes its own ([`Poller::health`]).
    pub health: Option<Arc<Health>>,
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self {
            concurrency: 32,
            visibility_timeout: Duration::from_secs(30),
            max_visibility_extension: Duration::from_secs(3600),
            wait_time: Duration::from_secs(20),
            shutdown_timeout: Duration::from_secs(25),
            ack_flush_interval: Duration::from_millis(20),
            receive_fill_wait: Duration::from_millis(10),
            depth_interval: Duration::from_secs(15),
            until_empty: false,
            dead_letter_url: None,
            liveness_margin: Duration::from_secs(10),
            rate: None,
            prefetch: None,
            tenant_metrics: 0,
            health: None,
        }
    }
}

impl PollerConfig {
    /// Messages in flight at most.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }
    /// Visibility timeout requested on receive (and each heartbeat's extension).
    pub fn with_visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility_timeout = d;
        self
    }
    /// Longest total invisibility since receipt (then the handler is cancelled).
    pub fn with_max_visibility_extension(mut self, d: Duration) -> Self {
        self.max_visibility_extension = d;
        self
    }
    /// Long-poll wait (≤ 20 s).
    pub fn with_wait_time(mut self, d: Duration) -> Self {
        self.wait_time = d;
        self
    }
    /// Time running handlers get after shutdown starts.
    pub fn with_shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }
    /// How often queue depth is read for the metrics (zero: never).
    pub fn with_depth_interval(mut self, d: Duration) -> Self {
        self.depth_interval = d;
        self
    }
    /// Stop by itself once the queues are empty.
    pub fn with_until_empty(mut self, on: bool) -> Self {
        self.until_empty = on;
        self
    }
    /// DLQ for queues whose redrive policy names none (refused if its type differs).
    pub fn with_dead_letter_url(mut self, url: Option<String>) -> Self {
        self.dead_letter_url = url;
        self
    }

    /// Messages received ahead of free handler slots (`None`: one batch per receiver;
    /// `Some(0)`: off).
    pub fn with_prefetch(mut self, prefetch: Option<usize>) -> Self {
        self.prefetch = prefetch;
        self
    }
    /// Count messages per tenant of fair queues, with own labels for `limit` tenants (0: off;
    /// see [`metrics::TenantLabels`](crate::metrics::TenantLabels)).
    pub fn with_tenant_metrics(mut self, limit: usize) -> Self {
        self.tenant_metrics = limit;
        self
    }
    /// Start at most `rate` messages per second over all queues (`None`: no limit).
    pub fn with_rate(mut self, rate: Option<f64>) -> Self {
        self.rate = rate;
        self
    }
    /// Added to 2 × the wait time to make the liveness window.
    pub fn with_liveness_margin(mut self, d: Duration) -> Self {
        self.liveness_margin = d;
        self
    }
    /// Update this health state (serve it before the poller starts: not ready until the
    /// queues are resolved).
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Check the settings against SQS limits, naming the field at fault.
    ///
    /// # Errors
    /// [`Error::Limit`] / [`Error::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), Error> {
        use crate::limits::check_range;
        check_range("concurrency", self.concurrency as u64, 1, 100_000u64)?;
        check_range("visibility_timeout", self.visibility_timeout.as_secs(), 1, MAX_VISIBILITY_SECONDS)?;
        check_range("max_visibility_extension", self.max_visibility_extension.as_secs(), 0, MAX_VISIBILITY_SECONDS)?;
        check_range("wait_time", self.wait_time.as_secs(), 0, crate::limits::MAX_WAIT_SECONDS)?;
        // not SQS limits: ranges that keep the poller's own arithmetic (semaphore sizes, timers,
        // the liveness window) far from overflow
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        check_range("prefetch", count(self.prefetch.unwrap_or(0)), 0, 100_000u64)?;
        check_range("tenant_metrics", count(self.tenant_metrics), 0, 10_000u64)?;
        check_range("liveness_margin", self.liveness_margin.as_secs(), 0, 3600u64)?;
        check_range("shutdown_timeout", self.shutdown_timeout.as_secs(), 0, MAX_VISIBILITY_SECONDS)?;
        check_range("depth_interval", self.depth_interval.as_secs(), 0, 86_400u64)?;
        check_range("ack_flush_interval", self.ack_flush_interval.as_secs(), 0, 10u64)?;
        check_range("receive_fill_wait", self.receive_fill_wait.as_secs(), 0, 10u64)?;
        if let Some(r) = self.rate {
            RateLimit::per_second(r)?;
        }
        Ok(())
    }
}

/// Counters of a poller run.
#[derive(Debug, Default)]
pub struct PollStats {
    received: AtomicU64,
    succeeded: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    released: AtomicU64,
    extensions: AtomicU64,
    in_flight: AtomicU64,
    receive_calls: AtomicU64,
    parked: AtomicU64,
}

/// A snapshot of [`PollStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PollSummary {
    /// Messages received.
    pub received: u64,
    /// Handled successfully (deleted).
    pub succeeded: u64,
    /// Duplicates of completed messages, deleted without running the handler (idempotency).
    pub duplicates: u64,
    /// Failed and set to come back later (including FIFO held ones).
    pub retried: u64,
    /// Sent to the DLQ.
    pub dead_lettered: u64,
    /// Released unstarted at shutdown.
    pub released: u64,
    /// Visibility extensions by the heartbeat.
    pub extensions: u64,
    /// In flight at the time of the snapshot.
    pub in_flight: u64,
    /// `ReceiveMessage` calls made (returned, with or without messages, or failed).
    pub receive_calls: u64,
    /// Receivers parked at the time of the snapshot: their queue was empty and another
    /// receiver already long-polls it (see [`Poller`]).
    pub parked: u64,
}

impl PollStats {
    /// Current counts.
    pub fn snapshot(&self) -> PollSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PollSummary {
            received: g(&self.received),
            succeeded: g(&self.succeeded),
            duplicates: g(&self.duplicates),
            retried: g(&self.retried),
            dead_lettered: g(&self.dead_lettered),
            released: g(&self.released),
            extensions: g(&self.extensions),
            in_flight: g(&self.in_flight),
            receive_calls: g(&self.receive_calls),
            parked: g(&self.parked),
        }
    }
    fn add(a: &AtomicU64, n: usize) {
        a.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Long polls cancelled at shutdown live on server-side until their wait ends, and grab any
/// message that becomes visible meanwhile (verified on LocalStack): releases made at shutdown
/// are timed to land just after the last of them ends.
#[derive(Default)]
struct Ghosts(Mutex<Option<Instant>>);

impl Ghosts {
    fn cancelled(&self, started: Instant, wait: Duration) {
        let end = started + wait + Duration::from_millis(500);
        let mut g = lock(&self.0);
        if g.is_none_or(|t| t < end) {
            *g = Some(end);
        }
    }
    /// Visibility (whole seconds) that makes a released message visible once the ghosts are gone.
    fn release_visibility(&self) -> u32 {
        lock(&self.0).map_or(0, |t| t.saturating_duration_since(Instant::now()).as_secs_f64().ceil() as u32)
    }
}

struct Source {
    ctx: QueueContext,
    queue: Queue,
    weight: u32,
    acker: mpsc::Sender<Ack>,
    /// Tenant labels (fair queues, `--tenant-metrics`); shared by the queues of a poller.
    tenants: Option<Arc<crate::metrics::TenantLabels>>,
    /// A receiver (its lead) long-polls this queue on behalf of all while it is empty. A
    /// receiver that finds a queue empty which already has a lead parks (on the poller's
    /// `wake`) once every queue has one (until then it goes on to the others), so an idle
    /// poller makes one receive per queue per `wait_time`, not one per receiver. A lead that
    /// receives messages gives up the role and wakes them all.
    idle_lead: AtomicBool,
}

/// The poller.
///
/// # Example
/// ```no_run
/// use sqskit::poller::{Poller, PollerConfig};
/// use sqskit::{HandlerError, Message, Processor, Queue};
/// # async fn run() -> Result<(), sqskit::Error> {
/// let queue = Queue::from_env("http://127.0.0.1:4566/queue/us-east-1/000000000000/jobs").await;
/// let processor = Processor::raw(|m: Message<String>| async move {
///     tracing::info!(id = m.id(), "working");
///     Ok::<_, HandlerError>(())
/// });
/// let poller = Poller::new(processor, [queue], PollerConfig::default()).await?;
/// let summary = poller.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
/// println!("{summary:?}");
/// # Ok(()) }
/// ```
pub struct Poller<T> {
    processor: Processor<T>,
    queues: Vec<(QueueContext, u32)>,
    config: PollerConfig,
    stats: Arc<PollStats>,
}

impl<T: Send + 'static> Poller<T> {
    /// A poller for `queues` (`(queue, weight)`); discovers each queue's DLQ.
    ///
    /// # Errors
    /// An invalid setting, or a queue that does not exist / cannot be read.
    pub async fn new(
        processor: Processor<T>,
        queues: impl IntoIterator<Item = impl Into<QueueSpec>>,
        config: PollerConfig,
    ) -> Result<Self, Error> {
        config.validate()?;
        let queues: Vec<QueueSpec> = queues.into_iter().map(Into::into).collect();
        if queues.is_empty() {
            return Err(Error::Invalid { what: "queue-url", reason: "at least one queue is needed".into() });
        }
        let mut contexts = Vec::new();
        let process_rate = config.rate.map(RateLimit::per_second).transpose()?.map(Arc::new);
        for QueueSpec { queue: q, weight: w, rate } in queues {
            let queue_rate = rate.map(RateLimit::per_second).transpose()?.map(Arc::new);
            // messages are received with the poller's visibility timeout: that is their lease
            let mut ctx = QueueContext::discover(q.clone())
                .await?
                .with_lease(crate::idempotency::Lease::Visibility(config.visibility_timeout));
            for r in queue_rate.iter().chain(&process_rate) {
                ctx = ctx.with_rate(r.clone());
            }
            if ctx.dlq.is_none() {
                // the fallback DLQ is refused (with an error log) when its type differs from the queue's
                let fallback = config.dead_letter_url.as_ref().map(|u| Queue::new(q.client().clone(), u.clone()));
                ctx = ctx.with_dlq(fallback);
            }
            tracing::info!(
                queue = q.name(),
                dlq = ctx.dlq.as_ref().map(|d| d.name()),
                fifo = ctx.fifo,
                max_receive_count = ctx.max_receive_count,
                weight = w,
                "polling"
            );
            contexts.push((ctx, w.max(1)));
        }
        let health = config.health.clone().unwrap_or_default();
        health.set_window(config.wait_time * 2 + config.liveness_margin);
        health.queues_resolved();
        let config = PollerConfig { health: Some(health), ..config };
        Ok(Self { processor, queues: contexts, config, stats: Arc::default() })
    }

    /// The poller's health (what `/healthz` and `/readyz` report).
    pub fn health(&self) -> Arc<Health> {
        self.config.health.clone().unwrap_or_default()
    }

    /// Live counters (for progress reporting while [`Poller::run`] runs).
    pub fn stats(&self) -> Arc<PollStats> {
        self.stats.clone()
    }

    /// Run until `shutdown` completes (or, with `until_empty`, until the queues are empty),
    /// then drain: stop receiving, let handlers finish within the deadline, flush acks.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> PollSummary {
        let Poller { processor, queues, config, stats } = self;
        let config = Arc::new(config);
        let stop = CancellationToken::new();
        let drain_acks = CancellationToken::new();
        let mut ackers = JoinSet::new();
        let tenants =
            (config.tenant_metrics > 0).then(|| Arc::new(crate::metrics::TenantLabels::new(config.tenant_metrics)));
        let sources: Vec<Arc<Source>> = queues
            .into_iter()
            .filter_map(|(ctx, weight)| {
                let (tx, rx) = mpsc::channel(config.concurrency.max(MAX_BATCH_ENTRIES));
                let queue = ctx.queue.clone()?;
                ackers.spawn(acker(queue.clone(), rx, config.clone(), stats.clone(), drain_acks.clone()));
                let tenants = if ctx.fifo { None } else { tenants.clone() };
                Some(Arc::new(Source { ctx, queue, weight, acker: tx, tenants, idle_lead: AtomicBool::new(false) }))
            })
            .collect();
        let receivers = config.concurrency.div_ceil(MAX_BATCH_ENTRIES).clamp(1, 64).max(sources.len());
        let prefetch = config.prefetch.unwrap_or(receivers * MAX_BATCH_ENTRIES);
        // receive permits: handler slots plus the prefetch buffer; handler slots: `exec`
        let sem = Arc::new(Semaphore::new(config.concurrency + prefetch));
        let exec = Arc::new(Semaphore::new(config.concurrency));
        // Receivers wait for room for whole batches when the buffer holds a batch per receiver
        // and at least two: a receive then goes out while the buffer still holds a batch or
        // more for the handlers. With one batch of buffer, waiting for a whole one would let
        // it run dry first.
        let whole_batches = prefetch >= (receivers * MAX_BATCH_ENTRIES).max(2 * MAX_BATCH_ENTRIES);
        let tracker = TaskTracker::new();
        let picker = Arc::new(Mutex::new(Picker::new(sources.iter().map(|s| s.weight).collect())));
        let ghosts = Arc::new(Ghosts::default());
        let wake = Arc::new(Notify::new());
        let mut recv_tasks = JoinSet::new();
        for _ in 0..receivers {
            recv_tasks.spawn(receiver(
                sources.clone(),
                picker.clone(),
                sem.clone(),
                exec.clone(),
                processor.clone(),
                config.clone(),
                stats.clone(),
                stop.clone(),
                tracker.clone(),
                ghosts.clone(),
                wake.clone(),
                whole_batches,
            ));
        }
        let mut side = JoinSet::new();
        if !config.depth_interval.is_zero() {
            side.spawn(depth_reporter(sources.clone(), config.depth_interval, stop.clone()));
        }
        let empty = until_empty(sources.clone(), stats.clone(), config.until_empty);
        tokio::select! {
            _ = shutdown => tracing::info!("shutdown requested: stopping receives, draining"),
            _ = empty => tracing::info!("queues are empty: stopping"),
        }
        if let Some(h) = &config.health {
            h.draining();
        }
        stop.cancel();
        while recv_tasks.join_next().await.is_some() {}
        side.abort_all();
        tracker.close();
        if tokio::time::timeout(config.shutdown_timeout, tracker.wait()).await.is_err() {
            tracing::warn!(
                still_running = tracker.len(),
                deadline = ?config.shutdown_timeout,
                "handlers still running at the shutdown deadline; their messages come back after the visibility timeout"
            );
        }
        drop(sources);
        drain_acks.cancel();
        while ackers.join_next().await.is_some() {}
        let summary = stats.snapshot();
        tracing::info!(?summary, "poller stopped");
        summary
    }
}

/// Smooth weighted round robin over the queues, skipping queues that were just found empty.
struct Picker {
    weights: Vec<i64>,
    current: Vec<i64>,
    paused_until: Vec<Option<Instant>>,
}

impl Picker {
    fn new(weights: Vec<u32>) -> Self {
        let n = weights.len();
        Self { weights: weights.into_iter().map(i64::from).collect(), current: vec![0; n], paused_until: vec![None; n] }
    }
    fn next(&mut self) -> usize {
        let now = Instant::now();
        let active: Vec<usize> =
            (0..self.weights.len()).filter(|&i| self.paused_until[i].is_none_or(|t| t <= now)).collect();
        let candidates = if active.is_empty() { (0..self.weights.len()).collect() } else { active };
        let total: i64 = candidates.iter().map(|&i| self.weights[i]).sum();
        let mut best = candidates[0];
        for &i in &candidates {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        best
    }
    fn empty(&mut self, i: usize) {
        if self.weights.len() > 1 {
            self.paused_until[i] = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    fn busy(&mut self, i: usize) {
        self.paused_until[i] = None;
    }
}

#[allow(clippy::too_many_arguments)]
async fn receiver<T: Send + 'static>(
    sources: Vec<Arc<Source>>,
    picker: Arc<Mutex<Picker>>,
    sem: Arc<Semaphore>,
    exec: Arc<Semaphore>,
    processor: Processor<T>,
    config: Arc<PollerConfig>,
    stats: Arc<PollStats>,
    stop: CancellationToken,
    tracker: TaskTracker,
    ghosts: Arc<Ghosts>,
    wake: Arc<Notify>,
    whole_batches: bool,
) {
    // the queue this receiver long-polls for all while it is empty
    let mut lead: Option<usize> = None;
    let retry = Backoff { base: Duration::from_millis(200), factor: 2.0, max: Duration::from_secs(30) };
    let mut failures: u32 = 0;
    let health = config.health.clone().unwrap_or_default();
    health.receiver(true);
    let _gone = Defer(|| health.receiver(false));
    loop {
        // Take room first. With a prefetch buffer of a batch per receiver (and two or more),
        // wait for a whole batch (10) of room: handlers have the buffer to work on meanwhile,
        // a receive of 10 costs what a receive of 1 does, and receivers queue for room one
        // after another (the semaphore is FIFO) instead of each collecting a few. Otherwise: at
        // least one permit, then as many more as free up within `receive_fill_wait`.
        let mut permits = if whole_batches {
            match take_room(&sem, MAX_BATCH_ENTRIES, &health, &stop).await {
                Some(p) => p,
                None => return,
            }
        } else {
            let Some(mut permits) = take_room(&sem, 1, &health, &stop).await else { return };
            // Fill the batch: a receive of 10 costs SQS (and us) about what a receive of 1
            // does, so wait a moment for slots that are about to free up.
            let fill_until = tokio::time::Instant::now() + config.receive_fill_wait;
            while permits.num_permits() < MAX_BATCH_ENTRIES {
                if let Ok(p) = sem.clone().try_acquire_owned() {
                    permits.merge(p);
                    continue;
                }
                match tokio::time::timeout_at(fill_until, sem.clone().acquire_owned()).await {
                    Ok(Ok(p)) => permits.merge(p),
                    _ => break,
                }
            }
            permits
        };
        let idx = match lead {
            Some(i) => i,
            None => lock(&picker).next(),
        };
        let source = sources[idx].clone();
        // Under a rate limit, receive only what can start within about a second.
        let max = reserve(&source.ctx.rates, permits.num_permits());
        if max == 0 {
            drop(permits);
            let pause =
                source.ctx.rates.iter().map(|r| Duration::from_secs_f64(1.0 / r.rate())).min().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(pause.clamp(Duration::from_millis(5), Duration::from_millis(250))) => continue,
                _ = stop.cancelled() => return,
            }
        }
        let unreserve = |n: usize| source.ctx.rates.iter().for_each(|r| r.release(n));
        let started = Instant::now();
        let received = tokio::select! {
            r = source.queue.receive(max as u32, config.wait_time, Some(config.visibility_timeout)) => r,
            _ = stop.cancelled() => {
                unreserve(max);
                ghosts.cancelled(started, config.wait_time);
                return;
            }
        };
        unreserve(max - received.as_ref().map_or(0, Vec::len));
        PollStats::add(&stats.receive_calls, 1);
        let messages = match received {
            Ok(m) => {
                health.receive_succeeded();
                failures = 0;
                m
            }
            Err(e) => {
                health.receive_failed();
                failures += 1;
                let pause = retry.ceiling(failures).max(Duration::from_millis(100));
                let pause = pause.mul_f64(0.5 + fastrand::f64() * 0.5);
                tracing::warn!(queue = source.queue.name(), error = %e, retry_in = ?pause, consecutive = failures, "receive failed");
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        if messages.is_empty() {
            lock(&picker).empty(idx);
            if lead.is_some() {
                continue;
            }
            // Become this queue's lead, or park while another receiver long-polls it. Listen
            // before looking, so that a lead giving up the role in between still wakes us.
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if source.idle_lead.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                lead = Some(idx);
                continue;
            }
            if !sources.iter().all(|s| s.idle_lead.load(Ordering::Acquire)) {
                // another queue has nobody long-polling it: go there (the picker skips this
                // one for a second)
                continue;
            }
            drop(permits);
            stats.parked.fetch_add(1, Ordering::Relaxed);
            // parked counts as waiting for liveness: the lead answers for this queue (its
            // receives keep the poller live, or it waits for slots like the rest)
            health.waiting(true);
            let stopped = tokio::select! {
                _ = woken => false,
                _ = stop.cancelled() => true,
            };
            health.waiting(false);
            stats.parked.fetch_sub(1, Ordering::Relaxed);
            if stopped {
                return;
            }
            continue;
        }
        if let Some(i) = lead.take() {
            // messages again: everyone back to work
            sources[i].idle_lead.store(false, Ordering::Release);
            wake.notify_waiters();
        }
        lock(&picker).busy(idx);
        PollStats::add(&stats.received, messages.len());
        metrics::counter!(names::RECEIVED, "queue" => source.queue.name().to_string()).increment(messages.len() as u64);
        if stop.is_cancelled() {
            // Received as the shutdown began: hand them back at once.
            PollStats::add(&stats.released, messages.len());
            unreserve(messages.len());
            let v = ghosts.release_visibility();
            let unit = messages.into_iter().map(|m| (Arc::new(m), v)).collect();
            let _ = source.acker.send(Ack::Visibility(unit, "release")).await;
            continue;
        }
        // FIFO-ness is the queue's (never a message's group id: fair queues carry one too)
        let units = if processor.is_batch() {
            vec![messages] // a batch handler gets the whole receive
        } else if source.ctx.fifo {
            fifo_groups(messages)
        } else {
            messages.into_iter().map(|m| vec![m]).collect()
        };
        for unit in units {
            let Some(permit) = permits.split(unit.len()) else {
                tracing::error!("more messages than permits; releasing");
                unreserve(unit.len());
                let unit = unit.into_iter().map(|m| (Arc::new(m), 0)).collect();
                let _ = source.acker.send(Ack::Visibility(unit, "release")).await;
                continue;
            };
            let unit: Vec<Arc<ReceivedMessage>> = unit.into_iter().map(Arc::new).collect();
            tracker.spawn(run_unit(
                unit,
                permit,
                exec.clone(),
                processor.clone(),
                source.clone(),
                config.clone(),
                stats.clone(),
                stop.clone(),
                ghosts.clone(),
            ));
        }
        // unused permits go back to the semaphore here
    }
}

/// `n` receive permits: at once when free, else waiting (every slot busy: that is health, not
/// a stall, so the receiver counts as waiting meanwhile); `None` at shutdown.
async fn take_room(
    sem: &Arc<Semaphore>,
    n: usize,
    health: &Health,
    stop: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    match sem.clone().try_acquire_many_owned(n as u32) {
        Ok(p) => return Some(p),
        Err(tokio::sync::TryAcquireError::Closed) => return None,
        Err(tokio::sync::TryAcquireError::NoPermits) => {}
    }
    health.waiting(true);
    let waited = tokio::select! {
        p = sem.clone().acquire_many_owned(n as u32) => p.ok(),
        _ = stop.cancelled() => None,
    };
    health.waiting(false);
    waited
}

/// Reserve up to `want` receives under every limit (the smallest grant; the others give the
/// excess back).
fn reserve(rates: &[Arc<RateLimit>], want: usize) -> usize {
    let mut granted = Vec::with_capacity(rates.len());
    let mut n = want;
    for r in rates {
        let got = r.reserve(n);
        granted.push(got);
        n = n.min(got);
    }
    for (r, got) in rates.iter().zip(granted) {
        r.release(got - n);
    }
    n
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handle one message (standard queue) or one FIFO group, with a heartbeat; hand each
/// message's delete to the acker as soon as its outcome is known, and the visibility changes
/// of the unit (a failure first, the messages held behind it after) in one piece at the end.
#[allow(clippy::too_many_arguments)]
async fn run_unit<T: Send + 'static>(
    unit: Vec<Arc<ReceivedMessage>>,
    permit: OwnedSemaphorePermit,
    exec: Arc<Semaphore>,
    processor: Processor<T>,
    source: Arc<Source>,
    config: Arc<PollerConfig>,
    stats: Arc<PollStats>,
    stop: CancellationToken,
    ghosts: Arc<Ghosts>,
) {
    let n = unit.len();
    stats.in_flight.fetch_add(n as u64, Ordering::Relaxed);
    metrics::gauge!(names::IN_FLIGHT).increment(n as f64);
    let pending = Arc::new(Mutex::new(unit.clone()));
    let lease = CancellationToken::new();
    let beat = heartbeat(pending.clone(), &processor, &source, &config, &stats, &lease);
    // each decided message: out of the heartbeat, its delete to the acker at once
    let hand_over = |d: &Decision| {
        lock(&pending).retain(|m| m.message_id != d.message.message_id);
        let delete = match &d.outcome {
            Outcome::Succeeded => Some(Deletion::Succeeded),
            Outcome::Duplicate => Some(Deletion::Duplicate),
            Outcome::Deferred => Some(Deletion::Deferred),
            Outcome::DeadLetter { .. } => {
                PollStats::add(&stats.dead_lettered, 1);
                Some(Deletion::DeadLettered)
            }
            Outcome::Retry { .. } | Outcome::Held { .. } => {
                PollStats::add(&stats.retried, 1);
                None
            }
            _ => {
                PollStats::add(&stats.released, 1);
                None
            }
        };
        if let (Some(labels), Some(tenant)) = (&source.tenants, d.message.group_id()) {
            let outcome = match &d.outcome {
                Outcome::Succeeded => "succeeded",
                Outcome::Duplicate => "duplicate",
                Outcome::DeadLetter { .. } => "dead_lettered",
                Outcome::Deferred => "deferred",
                Outcome::Retry { .. } | Outcome::Held { .. } => "retried",
                _ => "released",
            };
            metrics::counter!(names::TENANT_MESSAGES, "queue" => source.queue.name().to_string(),
                "tenant" => labels.label(tenant), "outcome" => outcome)
            .increment(1);
        }
        if matches!(d.outcome, Outcome::Held { .. } | Outcome::Released | Outcome::Deferred) {
            // never started: its reservation goes back
            source.ctx.rates.iter().for_each(|r| r.release(1));
        }
        let (acker, message) = (source.acker.clone(), d.message.clone());
        async move {
            if let Some(why) = delete {
                let _ = acker.send(Ack::Delete(message, why)).await;
            }
        }
    };
    let work = async {
        // a handler slot (prefetched messages wait here, heart-beaten; at shutdown they are
        // released below without running); a unit takes as many as it has messages, up to all
        let want = n.min(config.concurrency).max(1) as u32;
        let slots = match exec.clone().try_acquire_many_owned(want) {
            Ok(p) => Some(p),
            Err(_) => {
                metrics::gauge!(names::PREFETCHED).increment(n as f64);
                let p = tokio::select! {
                    p = exec.clone().acquire_many_owned(want) => p.ok(),
                    _ = stop.cancelled() => None,
                };
                metrics::gauge!(names::PREFETCHED).decrement(n as f64);
                p
            }
        };
        let _slots = slots;
        if processor.is_batch() {
            // a batch handler gets the whole receive at once
            // boxed: the batch path's future is ~10 KB, and inline it would make every
            // one-message unit's future (spawned, moved, polled in a select) that large too
            let decisions =
                Box::pin(processor.process_whole(&source.ctx, unit.clone(), Some(&stop), Some(&lease))).await;
            for d in &decisions {
                hand_over(d).await;
            }
            return decisions;
        }
        let mut seq = Sequence::new(&processor, &source.ctx, unit.clone(), Some(&stop), Some(&lease));
        let mut decisions = Vec::with_capacity(n);
        while let Some(d) = seq.next().await {
            hand_over(&d).await;
            decisions.push(d);
        }
        decisions
    };
    // biased, work first: a handler that finishes at its first poll (most do, or soon after)
    // never arms the heartbeat's timer (arming and disarming one takes the timer driver's lock)
    let decisions = tokio::select! {
        biased;
        d = work => d,
        never = beat => match never {},
    };
    let mut actions = Actions::plan(&decisions);
    let released: Vec<&str> =
        decisions.iter().filter(|d| d.outcome == Outcome::Released).map(|d| d.message.message_id.as_str()).collect();
    if !released.is_empty() {
        let v = ghosts.release_visibility();
        for (m, vis) in actions.visibility.iter_mut() {
            if released.contains(&m.message_id.as_str()) {
                *vis = v;
            }
        }
    }
    if !actions.visibility.is_empty() {
        let reason = if released.len() == actions.visibility.len() { "release" } else { "retry" };
        let _ = source.acker.send(Ack::Visibility(actions.visibility, reason)).await;
    }
    stats.in_flight.fetch_sub(n as u64, Ordering::Relaxed);
    metrics::gauge!(names::IN_FLIGHT).decrement(n as f64);
    drop(permit);
}

/// Extend the visibility of the unit's undecided messages while its handler runs: every half
/// visibility timeout, by one visibility timeout. When the next extension would pass
/// `max_visibility_extension` since receipt (or 12 h), cancel `lease`: the running handler is
/// stopped while half a visibility timeout of its lease is left.
async fn heartbeat<T: Send + 'static>(
    pending: Arc<Mutex<Vec<Arc<ReceivedMessage>>>>,
    processor: &Processor<T>,
    source: &Source,
    config: &PollerConfig,
    stats: &PollStats,
    lease: &CancellationToken,
) -> std::convert::Infallible {
    let vis = config.visibility_timeout;
    let Some(received_at) = lock(&pending).iter().map(|m| m.received_at).min() else {
        return std::future::pending().await;
    };
    let limit = config.max_visibility_extension.as_secs().min(u64::from(MAX_VISIBILITY_SECONDS));
    let mut next = received_at + vis / 2;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let elapsed = received_at.elapsed().as_secs();
        let room = limit.saturating_sub(elapsed);
        let extend = if room < vis.as_secs() { 0 } else { clamp_visibility(vis.as_secs(), elapsed) };
        let unit: Vec<Arc<ReceivedMessage>> = lock(&pending).clone();
        if unit.is_empty() {
            return std::future::pending().await;
        }
        if extend == 0 {
            tracing::warn!(
                queue = source.queue.name(),
                message_id = %unit[0].message_id,
                limit_secs = limit,
                "handler reached the longest visibility extension allowed; cancelling it before its lease ends"
            );
            metrics::counter!(names::LEASE_LIMIT_CANCELLED).increment(1);
            lease.cancel();
            return std::future::pending().await;
        }
        PollStats::add(&stats.extensions, unit.len());
        metrics::counter!(names::VISIBILITY_EXTENSIONS).increment(unit.len() as u64);
        tracing::debug!(messages = unit.len(), seconds = extend, "extending visibility");
        let entries = unit.iter().map(|m| (m.clone(), extend)).collect();
        let _ = source.acker.send(Ack::Visibility(entries, "heartbeat")).await;
        // idempotency claims follow the lease
        let until = std::time::SystemTime::now() + Duration::from_secs(u64::from(extend));
        processor.extend_claims(&unit, until).await;
        next = Instant::now() + Duration::from_secs(u64::from(extend)) / 2;
    }
}

/// Visibility changes of one unit, in order: `(message, seconds)`.
type VisibilityUnit = Vec<(Arc<ReceivedMessage>, u32)>;

enum Ack {
    Delete(Arc<ReceivedMessage>, Deletion),
    /// One unit of visibility changes, kept together and in order in one call; the reason
    /// labels failures (`heartbeat`, `retry`, `release`).
    Visibility(VisibilityUnit, &'static str),
}

const ACK_CALLS_IN_FLIGHT: usize = 8;

/// Coalesces acks of one queue into batch calls: a full batch (10 deletes) goes at once; what
/// is left goes when its oldest entry has waited `ack_flush_interval` (not on a fixed tick, which
/// would cut a partial batch every interval under load). Carries them out through [`settle`],
/// which confirms, retries and counts them.
async fn acker(
    queue: Queue,
    mut rx: mpsc::Receiver<Ack>,
    config: Arc<PollerConfig>,
    stats: Arc<PollStats>,
    drain: CancellationToken,
) {
    let mut deletes: Vec<(Arc<ReceivedMessage>, Deletion)> = Vec::new();
    let mut vis: Vec<(VisibilityUnit, &'static str)> = Vec::new();
    let mut calls = JoinSet::new();
    let limit = Arc::new(Semaphore::new(ACK_CALLS_IN_FLIGHT));
    let wait = config.ack_flush_interval.max(Duration::from_millis(1));
    // when the oldest entry waiting in `deletes` / `vis` is due: one timer, reset once per
    // round (not a new one per ack: the select below runs for every message)
    let mut due: Option<tokio::time::Instant> = None;
    let flush_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(flush_timer);
    let mut closing = false;
    let take = |msg: Ack, deletes: &mut Vec<_>, vis: &mut Vec<_>| match msg {
        Ack::Delete(m, why) => deletes.push((m, why)),
        Ack::Visibility(unit, reason) => vis.push((unit, reason)),
    };
    loop {
        tokio::select! {
            biased;
            msg = rx.recv(), if !closing => match msg {
                Some(msg) => take(msg, &mut deletes, &mut vis),
                None => closing = true,
            },
            _ = drain.cancelled(), if !closing => {
                // take whatever is queued, then stop
                while let Ok(msg) = rx.try_recv() {
                    take(msg, &mut deletes, &mut vis);
                }
                closing = true;
            }
            _ = &mut flush_timer, if due.is_some() => {
                flush_all(&queue, &mut deletes, &mut vis, &mut calls, &limit, &stats).await;
            }
        }
        while deletes.len() >= MAX_BATCH_ENTRIES {
            let batch: Vec<_> = deletes.drain(..MAX_BATCH_ENTRIES).collect();
            spawn_delete(&queue, batch, &mut calls, &limit, &stats).await;
        }
        if deletes.is_empty() && vis.is_empty() {
            due = None;
        } else if due.is_none() {
            // the first entry of a new round: it may wait `wait` for company
            let at = tokio::time::Instant::now() + wait;
            flush_timer.as_mut().reset(at);
            due = Some(at);
        }
        while calls.try_join_next().is_some() {}
        if closing {
            flush_all(&queue, &mut deletes, &mut vis, &mut calls, &limit, &stats).await;
            while calls.join_next().await.is_some() {}
            return;
        }
    }
}

async fn flush_all(
    queue: &Queue,
    deletes: &mut Vec<(Arc<ReceivedMessage>, Deletion)>,
    vis: &mut Vec<(VisibilityUnit, &'static str)>,
    calls: &mut JoinSet<()>,
    limit: &Arc<Semaphore>,
    stats: &Arc<PollStats>,
) {
    while !deletes.is_empty() {
        let n = deletes.len().min(MAX_BATCH_ENTRIES);
        let batch: Vec<_> = deletes.drain(..n).collect();
        spawn_delete(queue, batch, calls, limit, stats).await;
    }
    // Visibility changes in arrival order, units never split across calls (unless > 10);
    // a call's failures are labelled with the reason of its first unit.
    let mut pending: Vec<(Arc<ReceivedMessage>, u32)> = Vec::new();
    let mut reason = "retry";
    for (unit, why) in vis.drain(..) {
        if !pending.is_empty() && pending.len() + unit.len() > MAX_BATCH_ENTRIES {
            settle::change_visibility(queue, &pending, reason).await;
            pending.clear();
        }
        if pending.is_empty() {
            reason = why;
        }
        pending.extend(unit);
    }
    if !pending.is_empty() {
        settle::change_visibility(queue, &pending, reason).await;
    }
}

async fn spawn_delete(
    queue: &Queue,
    batch: Vec<(Arc<ReceivedMessage>, Deletion)>,
    calls: &mut JoinSet<()>,
    limit: &Arc<Semaphore>,
    stats: &Arc<PollStats>,
) {
    let permit = limit.clone().acquire_owned().await;
    let (queue, stats) = (queue.clone(), stats.clone());
    calls.spawn(async move {
        let _permit = permit;
        let applied = settle::delete(&queue, &batch).await;
        // a success counts once SQS confirmed its delete
        PollStats::add(&stats.succeeded, applied.succeeded);
        PollStats::add(&stats.duplicates, applied.duplicates);
    });
}

async fn depth_reporter(sources: Vec<Arc<Source>>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
        for s in &sources {
            if let Ok(a) = s.queue.attributes().await {
                let q = s.queue.name().to_string();
                metrics::gauge!(names::QUEUE_DEPTH, "queue" => q.clone(), "state" => "visible").set(a.visible as f64);
                metrics::gauge!(names::QUEUE_DEPTH, "queue" => q.clone(), "state" => "in_flight")
                    .set(a.in_flight as f64);
                metrics::gauge!(names::QUEUE_DEPTH, "queue" => q, "state" => "delayed").set(a.delayed as f64);
            }
        }
    }
}

/// Completes when every queue is empty (nothing visible, in flight or delayed) and nothing
/// is in flight here, twice in a row one second apart. Never completes when `enabled` is false.
async fn until_empty(sources: Vec<Arc<Source>>, stats: Arc<PollStats>, enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let mut quiet = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut empty = stats.in_flight.load(Ordering::Relaxed) == 0;
        for s in &sources {
            if !empty {
                break;
            }
            match s.queue.attributes().await {
                Ok(a) => empty = a.visible + a.in_flight + a.delayed == 0,
                Err(_) => empty = false,
            }
        }
        quiet = if empty { quiet + 1 } else { 0 };
        if quiet >= 2 {
            return;
        }
    }
}

/// Runs a closure when dropped.
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_spec_parses_url_and_weight() {
        let (url, weight) = QueueSpec::parse_url("http://h:4566/queue/us-east-1/000000000000/high=3").unwrap();
        assert_eq!(weight, 3);
        assert!(url.ends_with("/high"));
        let (_, weight) = QueueSpec::parse_url("https://sqs.eu-west-1.amazonaws.com/1/q").unwrap();
        assert_eq!(weight, 1);
        let e = QueueSpec::parse_url("http://h/q=0").unwrap_err();
        assert!(e.to_string().contains("queue-url"), "{e}");
        assert!(QueueSpec::parse_url("not a url").is_err());
    }

    #[test]
    fn weighted_round_robin_follows_weights() {
        let mut p = Picker::new(vec![3, 1]);
        let picks: Vec<usize> = (0..8).map(|_| p.next()).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 6);
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 2);
        // an empty queue is skipped while paused
        p.empty(0);
        assert_eq!(p.next(), 1);
        assert_eq!(p.next(), 1);
        p.busy(0);
        assert!((0..4).map(|_| p.next()).any(|i| i == 0));
    }

    #[test]
    fn config_validation_names_the_field() {
        let c = PollerConfig { wait_time: Duration::from_secs(30), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("wait_time"));
        let c = PollerConfig { concurrency: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("concurrency"));
        assert!(PollerConfig::default().validate().is_ok());
    }

    #[test]
    fn fifo_groups_keep_receive_order() {
        let m = |id: &str, g: &str| ReceivedMessage {
            message_id: id.into(),
            receipt_handle: id.into(),
            body: String::new(),
            attributes: Default::default(),
            system_attributes: [("MessageGroupId".to_string(), g.to_string())].into_iter().collect(),
            received_at: Instant::now(),
            queue_url: None,
        };
        let groups = fifo_groups(vec![m("a1", "A"), m("b1", "B"), m("a2", "A")]);
        let ids: Vec<Vec<&str>> = groups.iter().map(|g| g.iter().map(|m| m.message_id.as_str()).collect()).collect();
        assert_eq!(ids, vec![vec!["a1", "a2"], vec!["b1"]]);
    }
}
