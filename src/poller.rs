//! The poller: a long-running consumer that keeps SQS busy and never loses a message.
//!
//! It owns time: receiving only when there is room (permits for `concurrency` handler
//! slots plus a small prefetch buffer, taken *before* each receive), heartbeats that extend
//! the visibility of long-running handlers, coalescing deletes and visibility changes into
//! batch calls (the acker: a full batch of 10 at once, a partial one when its oldest entry has
//! waited `ack_flush_interval`), and graceful shutdown. What happens to each message is
//! decided by the [`Processor`]; the poller only carries it out.
//!
//! This file holds the [`Poller`] itself (start, run, drain) and [`shutdown_signal`]; its parts
//! are `config.rs` ([`QueueSpec`], [`PollerConfig`]), `receive.rs` (the picker, the receivers,
//! room before each receive), `unit.rs` (a message's run and its heartbeat), `acker.rs`
//! (batched acks) and `stats.rs` ([`PollStats`], [`PollSummary`], queue depth).
//!
//! Idle: while a queue is empty one receiver long-polls it, and once every queue has such a
//! receiver the others park, so an idle poller makes one `ReceiveMessage` per queue per
//! `wait_time` however many receivers it has; the first messages one of them gets wake them all.
//!
//! Shutdown (when the `shutdown` future completes, or the queues are empty with `until_empty`):
//! no new receive goes out; open long polls are let return (they live on at SQS whatever the
//! client does) and what they bring goes back unstarted, as does every message that has not
//! started (prefetched, or waiting for its rate turn); running handlers finish; all of it
//! within `shutdown_timeout`. At that deadline what is still going is cut like a lease that
//! ends (running handlers stop as retryable timeouts, waiting messages go back) and settled
//! within 3 s more; then pending acks are flushed. "Back unstarted" is a release
//! (visibility 0), except for a message on its last allowed receive, which SQS would move to
//! the DLQ unrun: on a standard queue it is carried over as a fresh copy
//! ([`settle::carry_over`](crate::settle::carry_over)), in a FIFO group it runs through.
//!
//! Leases: a message's lease budget is spent only on running it. The heartbeat extends a
//! unit's messages while they wait for a slot or a rate turn and while they run; the running
//! handler is cancelled (a retryable `timeout`) when the next extension would pass
//! `max_visibility_extension` since it *started*, and a message still waiting when SQS's 12
//! hours from receipt come near is given back; either way while the lease still has half a
//! visibility timeout left, so no handler runs past its lease. A panic anywhere in a message's
//! steps is its retryable failure. In a FIFO group each message is deleted as soon as its
//! outcome is known (batched with others, not held until the group finishes).
//!
//! Acks go through a bounded channel: when SQS is slow to confirm deletes, handlers wait
//! to hand theirs over (keeping their slots), so receiving slows down instead of memory
//! growing.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod acker;
mod config;
mod flow;
mod receive;
mod stats;
mod unit;

use acker::{acker, Ack};
pub use config::{HealthProbe, PollerConfig, QueueSpec};
use receive::{receiver, Picker};
use stats::depth_reporter;
pub use stats::{BreakerStatus, FlowStatus, PauseStatus, PollStats, PollSummary};

use crate::client::Queue;
use crate::context::QueueContext;
use crate::error::Error;
use crate::health::Health;
use crate::limits::MAX_BATCH_ENTRIES;
use crate::processor::Processor;
use crate::rate::RateLimit;

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
    /// Flow control (shared by the queues of a poller), and this queue's index in it.
    flow: Arc<flow::Flow>,
    index: usize,
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
        health.set_window(config.wait_time.saturating_mul(2).saturating_add(config.liveness_margin));
        // the longest a message may hold a slot without anything starting or finishing: its run
        // (capped by the extension limit), two visibility timeouts, the margin, one rate period
        let rate_period = contexts
            .iter()
            .flat_map(|(ctx, _): &(QueueContext, u32)| ctx.rates.iter())
            .map(|r| Duration::from_secs_f64(1.0 / r.rate()))
            .max()
            .unwrap_or_default();
        health.set_slot_window(
            config
                .max_visibility_extension
                .saturating_add(config.visibility_timeout.saturating_mul(2))
                .saturating_add(config.liveness_margin)
                .saturating_add(rate_period),
        );
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
        let cut = CancellationToken::new();
        let mut ackers = JoinSet::new();
        let tenants =
            (config.tenant_metrics > 0).then(|| Arc::new(crate::metrics::TenantLabels::new(config.tenant_metrics)));
        let receivers = config.concurrency.div_ceil(MAX_BATCH_ENTRIES).clamp(1, 64).max(queues.len());
        let prefetch = config.prefetch.unwrap_or(receivers * MAX_BATCH_ENTRIES);
        // receive permits: handler slots plus the prefetch buffer; handler slots: `exec`
        let sem = Arc::new(Semaphore::new(config.concurrency + prefetch));
        let exec = Arc::new(Semaphore::new(config.concurrency));
        let names = queues.iter().map(|(ctx, _)| ctx.queue_name().to_string()).collect();
        let flow = flow::Flow::new(
            &config,
            names,
            exec.clone(),
            (sem.clone(), config.concurrency + prefetch),
            stats.clone(),
            stop.clone(),
        );
        let sources: Vec<Arc<Source>> = queues
            .into_iter()
            .enumerate()
            .filter_map(|(index, (ctx, weight))| {
                let (tx, rx) = mpsc::channel(config.concurrency.max(MAX_BATCH_ENTRIES));
                let queue = ctx.queue.clone()?;
                ackers.spawn(acker(queue.clone(), rx, config.clone(), stats.clone(), drain_acks.clone()));
                let tenants = if ctx.fifo { None } else { tenants.clone() };
                let flow = flow.clone();
                // a standard queue's failure on its last allowed receive while the breaker is
                // open is the outage's: held from the DLQ and carried over (a FIFO message could
                // not be: a copy loses its place in the group)
                let ctx = if ctx.fifo {
                    ctx
                } else {
                    let f = flow.clone();
                    ctx.with_exhaustion_hold(crate::context::ExhaustionHold::new(move |m| f.hold(m)))
                };
                Some(Arc::new(Source {
                    ctx,
                    queue,
                    weight,
                    acker: tx,
                    tenants,
                    idle_lead: AtomicBool::new(false),
                    flow,
                    index,
                }))
            })
            .collect();
        // Receivers wait for room for whole batches when the buffer holds a batch per receiver
        // and at least two: a receive then goes out while the buffer still holds a batch or
        // more for the handlers. With one batch of buffer, waiting for a whole one would let
        // it run dry first.
        let whole_batches = prefetch >= (receivers * MAX_BATCH_ENTRIES).max(2 * MAX_BATCH_ENTRIES);
        // flow control: the pause flags read before the first receive, then its timers
        let mut side = JoinSet::new();
        flow.start(&sources, &mut side).await;
        let tracker = TaskTracker::new();
        let picker = Arc::new(Mutex::new(Picker::new(sources.iter().map(|s| s.weight).collect())));
        let wake = Arc::new(Notify::new());
        let returned: receive::Returned = Arc::default();
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
                cut.clone(),
                tracker.clone(),
                wake.clone(),
                returned.clone(),
                whole_batches,
            ));
        }
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
        // one deadline for the whole drain: open receives return (what they bring goes back
        // unstarted) while running handlers finish
        let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
        let receives = async { while recv_tasks.join_next().await.is_some() {} };
        if tokio::time::timeout_at(deadline, receives).await.is_err() {
            tracing::warn!(
                deadline = ?config.shutdown_timeout,
                "receives still open at the shutdown deadline (keep it above the wait time); abandoning them"
            );
            recv_tasks.abort_all();
            while recv_tasks.join_next().await.is_some() {}
        }
        // what the last receives brought, given back now that none is open
        let back = std::mem::take(&mut *lock(&returned));
        for (i, source) in sources.iter().enumerate() {
            let mine: Vec<_> = back.iter().filter(|(s, _)| *s == i).map(|(_, m)| m.clone()).collect();
            if !mine.is_empty() {
                unit::give_back(source, &stats, mine).await;
            }
        }
        side.abort_all();
        tracker.close();
        if tokio::time::timeout_at(deadline, tracker.wait()).await.is_err() {
            // the deadline: cut what is still going (running handlers end as retryable
            // timeouts, waiting messages go back unstarted) and settle it, briefly
            tracing::warn!(
                still_running = tracker.len(),
                deadline = ?config.shutdown_timeout,
                "handlers still running at the shutdown deadline; cancelling them (retryable timeouts)"
            );
            cut.cancel();
            if tokio::time::timeout(CUT_GRACE, tracker.wait()).await.is_err() {
                tracing::warn!(
                    still_running = tracker.len(),
                    "messages still being settled after the cut; they come back after their visibility timeout"
                );
            }
        }
        drop(sources);
        drain_acks.cancel();
        while ackers.join_next().await.is_some() {}
        let summary = stats.snapshot();
        tracing::info!(?summary, "poller stopped");
        summary
    }
}

/// How long the units cut at the drain's deadline get to settle their outcomes.
const CUT_GRACE: Duration = Duration::from_secs(3);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
