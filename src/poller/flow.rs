//! The poller's side of flow control: it feeds the policies of [`crate::flow`] and carries out
//! what they say.
//!
//! It owns the gate the receivers look at before each receive (a paused queue is skipped; an
//! open breaker stops all receives; a half-open one lets one receive of one message through,
//! the probe, unless a health check probes instead), the halt token units start their messages
//! under (cancelled when the breaker opens: what is held unstarted goes back, what runs
//! finishes), the sizes of the two permit pools (handler slots: the adaptive limit, capped by
//! the slow start after the breaker closes; receive permits: that plus the prefetch buffer),
//! the timers (probes, the pause flag read every `pause_check`), and what is published (one
//! log line per transition, the metrics, readiness, [`FlowStatus`](super::FlowStatus)). The
//! decisions stay the policies'; the processor knows nothing of any of it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::HealthProbe;
use super::stats::PollStats;
use super::{lock, PollerConfig, Source};
use crate::flow::{AdaptiveLimit, Breaker, BreakerState, Sample, Signal, Transition};
use crate::health::Health;
use crate::limits::MAX_BATCH_ENTRIES;
use crate::message::ReceivedMessage;
use crate::metrics::names;
use crate::outcome::{Decision, FailureKind, Outcome};

/// What a receiver may do with a queue now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// Receive as usual.
    Receive,
    /// Receive one message: the breaker's probe.
    Probe,
    /// Not now (the queue is paused, or the breaker open).
    Wait,
}

/// A semaphore whose usable size follows a target: the permits above it are held back, taken
/// as they come free (so shrinking waits for running work). A controller task takes free
/// permits; and since tokio's semaphore hands a returned permit to the oldest waiter, which is
/// nearly always a prefetched unit rather than the controller, each unit that got its permits
/// offers them back first ([`Pool::admit`]): without that a pool with units waiting shrank by
/// about one permit per window, and an adaptive limit cut from 32 to 1 still had 25 handlers
/// running.
struct Pool {
    sem: Arc<Semaphore>,
    max: usize,
    target: watch::Sender<usize>,
    held: Arc<Mutex<Vec<OwnedSemaphorePermit>>>,
}

fn count(held: &[OwnedSemaphorePermit]) -> usize {
    held.iter().map(OwnedSemaphorePermit::num_permits).sum()
}

/// Let go of held permits beyond `hold`.
fn trim(held: &mut Vec<OwnedSemaphorePermit>, hold: usize) {
    while count(held) > hold {
        let excess = count(held) - hold;
        let Some(last) = held.last_mut() else { return };
        if last.num_permits() <= excess {
            held.pop();
        } else {
            drop(last.split(excess));
        }
    }
}

impl Pool {
    fn new(sem: Arc<Semaphore>, max: usize) -> Self {
        Self { sem, max, target: watch::Sender::new(max), held: Arc::default() }
    }

    fn set(&self, n: usize) {
        self.target.send_if_modified(|t| std::mem::replace(t, n.clamp(1, self.max)) != n.clamp(1, self.max));
    }

    /// Permits in use by work (not free, not held back).
    fn in_use(&self) -> usize {
        self.max.saturating_sub(self.sem.available_permits() + count(&lock(&self.held)))
    }

    /// Permits just acquired by work: `None` when the pool is above its target, and they are
    /// held back instead (the caller waits again); else the permits, to run with.
    fn admit(&self, permits: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        let hold = self.max.saturating_sub(*self.target.borrow());
        let mut held = lock(&self.held);
        if count(&held) >= hold {
            return Some(permits);
        }
        held.push(permits);
        trim(&mut held, hold);
        None
    }

    async fn control(
        sem: Arc<Semaphore>,
        max: usize,
        mut target: watch::Receiver<usize>,
        held: Arc<Mutex<Vec<OwnedSemaphorePermit>>>,
    ) {
        loop {
            let hold = max.saturating_sub(*target.borrow_and_update());
            let short = {
                let mut held = lock(&held);
                trim(&mut held, hold);
                count(&held) < hold
            };
            if short {
                tokio::select! {
                    p = sem.clone().acquire_owned() => match p {
                        Ok(p) => {
                            let mut held = lock(&held);
                            held.push(p);
                            trim(&mut held, hold);
                        }
                        Err(_) => return,
                    },
                    changed = target.changed() => if changed.is_err() { return },
                }
                continue;
            }
            if target.changed().await.is_err() {
                return;
            }
        }
    }
}

pub(super) struct Flow {
    /// Queue names, by source index (metric labels, pause logs).
    queues: Vec<String>,
    breaker: Option<Mutex<Breaker>>,
    probe: Option<HealthProbe>,
    /// The message the breaker's probe is running on.
    probe_id: Mutex<Option<String>>,
    /// Messages whose failure on their last allowed receive came while the breaker was open.
    held: Mutex<HashSet<String>>,
    halt: Mutex<CancellationToken>,
    stop: CancellationToken,
    paused: Vec<Mutex<Option<String>>>,
    pause_check: Duration,
    adaptive: Option<Mutex<AdaptiveLimit>>,
    /// The concurrency before the slow start's cap: fixed, or the adaptive limit.
    base: AtomicUsize,
    exec: Pool,
    receive: Pool,
    /// `--prefetch` as given, and the buffer the poller sized for its full concurrency.
    prefetch: Option<usize>,
    full_prefetch: usize,
    concurrency: usize,
    changed: Notify,
    /// Notified when a queue is paused or resumed (wakes parked receivers).
    pauses: Notify,
    health: Arc<Health>,
    stats: Arc<PollStats>,
    transitions: AtomicUsize,
}

impl Flow {
    pub(super) fn new(
        config: &PollerConfig,
        queues: Vec<String>,
        exec: Arc<Semaphore>,
        receive: (Arc<Semaphore>, usize),
        stats: Arc<PollStats>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let breaker = config.breaker.clone().map(|b| Mutex::new(Breaker::new(b).with_ceiling(config.concurrency)));
        let adaptive = config.adaptive.map(|a| Mutex::new(AdaptiveLimit::new(a)));
        let base = adaptive.as_ref().map_or(config.concurrency, |a| lock(a).limit());
        let flow = Self {
            paused: queues.iter().map(|_| Mutex::new(None)).collect(),
            queues,
            probe: config.probe.clone().filter(|_| breaker.is_some()),
            breaker,
            probe_id: Mutex::new(None),
            held: Mutex::default(),
            halt: Mutex::new(stop.child_token()),
            stop,
            pause_check: config.pause_check,
            adaptive,
            base: AtomicUsize::new(base),
            exec: Pool::new(exec, config.concurrency),
            full_prefetch: receive.1.saturating_sub(config.concurrency),
            receive: Pool::new(receive.0, receive.1),
            prefetch: config.prefetch,
            concurrency: config.concurrency,
            changed: Notify::new(),
            pauses: Notify::new(),
            health: config.health.clone().unwrap_or_default(),
            stats,
            transitions: AtomicUsize::new(0),
        };
        {
            let mut board = lock(&flow.stats.flow);
            board.breaker = flow.breaker.as_ref().map(|_| (BreakerState::Closed, Instant::now(), String::new(), 0));
            board.limit = flow.adaptive.as_ref().map(|_| base);
        }
        for q in &flow.queues {
            if flow.breaker.is_some() {
                metrics::gauge!(names::BREAKER_STATE, "queue" => q.clone()).set(0.0);
            }
            if !flow.pause_check.is_zero() {
                metrics::gauge!(names::PAUSED, "queue" => q.clone()).set(0.0);
            }
        }
        flow.resize();
        Arc::new(flow)
    }

    /// Read the pause flags once (before the first receive), then start the timers and the
    /// pool controllers.
    pub(super) async fn start(self: &Arc<Self>, sources: &[Arc<Source>], tasks: &mut JoinSet<()>) {
        let every = self.pause_check;
        if !every.is_zero() {
            let checks = sources.iter().enumerate().map(|(i, s)| self.check_pause(i, s));
            let gave_up = futures::future::join_all(checks).await;
            let watched: Vec<(usize, Arc<Source>)> =
                sources.iter().cloned().enumerate().filter(|(i, _)| !gave_up[*i]).collect();
            if !watched.is_empty() {
                tasks.spawn(self.clone().watch_pauses(watched, every));
            }
        }
        if self.breaker.is_some() {
            tasks.spawn(self.clone().drive_breaker());
        }
        if self.breaker.is_some() || self.adaptive.is_some() {
            for pool in [&self.exec, &self.receive] {
                tasks.spawn(Pool::control(pool.sem.clone(), pool.max, pool.target.subscribe(), pool.held.clone()));
            }
        }
    }

    // ---- receivers ----

    /// What a receiver may do with queue `idx` now (a `Probe` is taken: hand it back with
    /// [`Flow::probe_received`]).
    pub(super) fn gate(&self, idx: usize) -> Gate {
        if self.paused(idx) {
            return Gate::Wait;
        }
        let Some(b) = &self.breaker else { return Gate::Receive };
        let mut b = lock(b);
        match b.state() {
            BreakerState::Closed => Gate::Receive,
            BreakerState::HalfOpen if self.probe.is_none() && b.try_probe() => Gate::Probe,
            _ => Gate::Wait,
        }
    }

    /// Whether every queue is gated (the breaker is not closed, or all are paused): receivers
    /// then wait for a change instead of trying the others.
    pub(super) fn all_gated(&self) -> bool {
        self.breaker.as_ref().is_some_and(|b| lock(b).state() != BreakerState::Closed)
            || self.paused.iter().all(|p| lock(p).is_some())
    }

    /// Whether queue `idx` is paused.
    pub(super) fn paused(&self, idx: usize) -> bool {
        self.paused.get(idx).is_some_and(|p| lock(p).is_some())
    }

    /// Completes when a queue is paused or resumed.
    pub(super) async fn pauses_changed(&self) {
        self.pauses.notified().await
    }

    /// Wait until flow control's state changes (or a second passes, or the poller stops).
    pub(super) async fn changed(&self, stop: &CancellationToken) {
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        tokio::select! {
            _ = notified => {},
            _ = stop.cancelled() => {},
            _ = tokio::time::sleep(Duration::from_secs(1)) => {},
        }
    }

    /// The probe's receive returned: it runs on its message, or (none) it is handed back.
    pub(super) fn probe_received(&self, messages: &[ReceivedMessage]) {
        match messages.first() {
            Some(m) => *lock(&self.probe_id) = Some(m.message_id.clone()),
            None => {
                if let Some(b) = &self.breaker {
                    lock(b).cancel_probe();
                }
            }
        }
    }

    /// Whether messages a receive brings now must go back unstarted (the breaker is open or
    /// half-open; a probe's receive excepted).
    pub(super) fn halted(&self) -> bool {
        self.breaker.as_ref().is_some_and(|b| lock(b).state() != BreakerState::Closed)
    }

    // ---- units ----

    /// The token a unit starts its messages under: `stop`, or the breaker opening (a new one
    /// once it is half-open: the probe's unit runs).
    pub(super) fn halt(&self) -> CancellationToken {
        let mut h = lock(&self.halt);
        let open = self.breaker.as_ref().is_some_and(|b| lock(b).state() == BreakerState::Open);
        if h.is_cancelled() && !open && !self.stop.is_cancelled() {
            *h = self.stop.child_token();
        }
        h.clone()
    }

    /// Handler slots a unit just acquired: `None` when flow control has cut the pool below
    /// what is running, and they are held back (the unit waits again).
    pub(super) fn admit(&self, slots: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        self.exec.admit(slots)
    }

    /// Handler slots flow control allows now (a unit never asks for more).
    pub(super) fn slots(&self) -> usize {
        *self.exec.target.borrow()
    }

    /// Whether a retryable failure of `m` on its last allowed receive is flow control's to
    /// carry over (the breaker is open: the failure is the outage's, not the message's). Marks
    /// it so: [`Flow::take_held`].
    pub(super) fn hold(&self, m: &ReceivedMessage) -> bool {
        if !self.halted() || self.breaker.as_ref().is_some_and(|b| lock(b).given_up()) {
            return false;
        }
        lock(&self.held).insert(m.message_id.clone());
        true
    }

    /// Whether `m` was held by [`Flow::hold`] (and forget it).
    pub(super) fn take_held(&self, m: &ReceivedMessage) -> bool {
        lock(&self.held).remove(&m.message_id)
    }

    /// A decision is known: feed the breaker and the adaptive limit (`started`: when its
    /// handler started, if it did).
    pub(super) fn settled(&self, source: &Source, d: &Decision, started: Option<Instant>) {
        let now = Instant::now();
        let failure = match &d.outcome {
            Outcome::Retry { failure, .. } | Outcome::DeadLetter { failure } => Some(failure),
            _ => None,
        };
        let (signal, ran, dropped) = match (&d.outcome, failure.map(|f| f.kind)) {
            (Outcome::Succeeded, _) => (Signal::Success, true, false),
            (_, Some(FailureKind::Retryable | FailureKind::TimedOut | FailureKind::RetriesExhausted)) => {
                (Signal::Failure { error: failure.map_or("", |f| f.error.as_str()) }, true, true)
            }
            (_, Some(FailureKind::IdempotencyStore)) => {
                (Signal::Failure { error: failure.map_or("", |f| f.error.as_str()) }, false, false)
            }
            (_, Some(FailureKind::Permanent)) => (Signal::Neutral, true, false),
            _ => (Signal::Neutral, false, false),
        };
        if let Some(b) = &self.breaker {
            let is_probe = {
                let mut p = lock(&self.probe_id);
                let hit = p.as_deref() == Some(d.message.message_id.as_str());
                if hit {
                    *p = None;
                }
                hit
            };
            let tenant = if source.ctx.fifo { None } else { d.message.group_id() };
            let t = {
                let mut b = lock(b);
                if is_probe {
                    b.probe_result(now, signal)
                } else {
                    b.record(now, signal, tenant)
                }
            };
            if let Some(t) = t {
                self.apply(t);
            } else if is_probe {
                // the next probe may go at once
                self.changed.notify_waiters();
            } else if self.breaker.as_ref().is_some_and(|b| lock(b).ramp().is_some()) {
                self.resize();
            }
        }
        if let (Some(a), true, Some(started)) = (&self.adaptive, ran, started) {
            let sample = Sample {
                started,
                latency: now.saturating_duration_since(started),
                dropped,
                in_flight: self.exec.in_use().max(1),
            };
            let changed = lock(a).on_sample(now, sample);
            if let Some(limit) = changed {
                tracing::debug!(limit, latency_ms = sample.latency.as_millis() as u64, "adaptive concurrency limit");
                self.base.store(limit, Ordering::Relaxed);
                lock(&self.stats.flow).limit = Some(limit);
                self.resize();
            }
        }
    }

    // ---- what is carried out ----

    /// Size the pools: handler slots = the base concurrency, capped by the slow start (one slot
    /// while half-open); receive permits = that plus the prefetch buffer for it.
    fn resize(&self) {
        let base = self.base.load(Ordering::Relaxed);
        let (state, ramp) = match &self.breaker {
            Some(b) => {
                let b = lock(b);
                (b.state(), b.ramp())
            }
            None => (BreakerState::Closed, None),
        };
        let slots = match state {
            BreakerState::HalfOpen => 1,
            _ => base.min(ramp.unwrap_or(usize::MAX)),
        };
        let prefetch = match self.prefetch {
            _ if slots >= self.concurrency => self.full_prefetch,
            Some(p) => p,
            None => self.full_prefetch.min(slots.div_ceil(MAX_BATCH_ENTRIES).max(1) * MAX_BATCH_ENTRIES),
        };
        self.exec.set(slots);
        self.receive.set(slots.saturating_add(prefetch));
        metrics::gauge!(names::CONCURRENCY_LIMIT).set(slots as f64);
    }

    /// Carry out a breaker transition: log it, count it, set readiness, halt or resume, resize.
    fn apply(&self, t: Transition) {
        let n = self.transitions.fetch_add(1, Ordering::Relaxed) as u64 + 1;
        match t.to {
            BreakerState::Open => {
                lock(&self.halt).cancel();
                tracing::warn!(from = t.from.as_str(), to = "open", reason = %t.reason,
                    "circuit breaker open: no receives; held messages go back unstarted, running ones finish");
            }
            BreakerState::HalfOpen => {
                tracing::info!(from = t.from.as_str(), to = "half-open", reason = %t.reason, "circuit breaker half-open")
            }
            BreakerState::Closed => {
                tracing::info!(from = t.from.as_str(), to = "closed", reason = %t.reason, "circuit breaker closed")
            }
        }
        for q in &self.queues {
            metrics::gauge!(names::BREAKER_STATE, "queue" => q.clone()).set(t.to.gauge());
            metrics::counter!(names::BREAKER_TRANSITIONS, "queue" => q.clone(), "to" => t.to.as_str()).increment(1);
        }
        self.health.breaker_open(t.to != BreakerState::Closed);
        lock(&self.stats.flow).breaker = Some((t.to, Instant::now(), t.reason, n));
        self.resize();
        self.changed.notify_waiters();
    }

    /// Count a message held by the breaker and carried over.
    pub(super) fn held_carried(&self, source: &Source, n: usize) {
        if n > 0 {
            metrics::counter!(names::BREAKER_HELD, "queue" => source.queue.name().to_string()).increment(n as u64);
        }
    }

    /// The breaker's timers: open → half-open when a probe is due, the outage limit, and the
    /// health check while half-open.
    async fn drive_breaker(self: Arc<Self>) {
        let Some(breaker) = &self.breaker else { return };
        loop {
            let now = Instant::now();
            let t = lock(breaker).poll(now);
            if let Some(t) = t {
                self.apply(t);
            }
            if let Some(probe) = &self.probe {
                if lock(breaker).try_probe() {
                    let ok = tokio::select! {
                        r = tokio::time::timeout(Duration::from_secs(10), (probe.0)()) => r.unwrap_or(false),
                        _ = self.stop.cancelled() => return,
                    };
                    let signal =
                        if ok { Signal::Success } else { Signal::Failure { error: "the health probe failed" } };
                    let t = lock(breaker).probe_result(Instant::now(), signal);
                    if let Some(t) = t {
                        self.apply(t);
                    }
                    continue;
                }
            }
            let due = lock(breaker).next_probe().map(|d| d.saturating_duration_since(now));
            let wait = due.unwrap_or(Duration::from_secs(1)).clamp(Duration::from_millis(10), Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {},
                _ = self.changed.notified() => {},
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// Read the pause flags every `every`.
    async fn watch_pauses(self: Arc<Self>, mut sources: Vec<(usize, Arc<Source>)>, every: Duration) {
        // fixed-rate ticks (the first was the read at start): exactly 3600 / every reads an hour
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                _ = self.stop.cancelled() => return,
            }
            let mut kept = Vec::with_capacity(sources.len());
            for (i, s) in sources {
                if !self.check_pause(i, &s).await {
                    kept.push((i, s));
                }
            }
            sources = kept;
        }
    }

    /// Read queue `i`'s pause flag; `true` when it cannot be read for good (no permission):
    /// stop reading it.
    async fn check_pause(&self, i: usize, source: &Source) -> bool {
        let reason = match crate::flow::paused_reason(&source.queue).await {
            Ok(r) => r,
            Err(crate::Error::Service { code, message, .. }) if code.contains("AccessDenied") => {
                tracing::warn!(queue = source.queue.name(), %code, %message,
                    "cannot read the queue's tags (sqs:ListQueueTags): `sqskit pause` will not stop this poller");
                return true;
            }
            Err(e) => {
                tracing::warn!(queue = source.queue.name(), error = %e, "could not read the pause flag; trying again later");
                return false;
            }
        };
        let before = std::mem::replace(&mut *lock(&self.paused[i]), reason.clone());
        if before == reason {
            return false;
        }
        let queue = &self.queues[i];
        match &reason {
            Some(why) => tracing::warn!(queue = %queue, reason = %why,
                "queue paused: no more receives from it; in-flight messages finish"),
            None => tracing::info!(queue = %queue, "queue resumed: receiving again"),
        }
        metrics::gauge!(names::PAUSED, "queue" => queue.clone()).set(if reason.is_some() { 1.0 } else { 0.0 });
        lock(&self.stats.flow).paused =
            self.queues.iter().zip(&self.paused).filter_map(|(q, p)| lock(p).clone().map(|r| (q.clone(), r))).collect();
        self.changed.notify_waiters();
        self.pauses.notify_waiters();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool cut from 4 to 1 while units wait for slots: each permit that comes free goes to
    /// the oldest waiter (a unit, not the controller), and the unit's `admit` holds it back, so
    /// what runs falls to the target at once instead of one permit per controller turn.
    #[tokio::test]
    async fn a_cut_pool_holds_back_the_permits_its_waiting_units_get() {
        let sem = Arc::new(Semaphore::new(4));
        let pool = Pool::new(sem.clone(), 4);
        let running: Vec<_> = (0..4).map(|_| sem.clone().try_acquire_owned().unwrap()).collect();
        // units queue first, then the controller
        let waiters: Vec<_> = (0..3).map(|_| tokio::spawn(sem.clone().acquire_owned())).collect();
        tokio::task::yield_now().await;
        let control = tokio::spawn(Pool::control(sem.clone(), 4, pool.target.subscribe(), pool.held.clone()));
        pool.set(1);
        tokio::task::yield_now().await;
        drop(running); // all four finish: the three waiting units get one each, the controller one
        let mut admitted = 0;
        for w in waiters {
            let p = w.await.unwrap().unwrap();
            if let Some(p) = pool.admit(p) {
                admitted += 1;
                std::mem::forget(p); // keeps running
            }
        }
        // without admit all three would run (the controller's turn comes after them)
        assert_eq!(admitted, 1, "one runs, the pool's target; two held back with the controller's one");
        assert_eq!(count(&lock(&pool.held)), 3);
        // grown again: held permits are let go
        pool.set(4);
        tokio::time::timeout(Duration::from_secs(5), async {
            while count(&lock(&pool.held)) > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the controller lets the held permits go");
        control.abort();
    }
}
