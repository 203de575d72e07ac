//! Receiving: the receivers that long-poll the queues, the picker that shares receives out by
//! weight, and the room a receive needs first.
//!
//! It owns when and where a receive goes out: only with room (receive permits taken before
//! the call, a whole batch of them when the prefetch buffer allows), under the start limits
//! (only what can start within about a second), one long poll per empty queue while the other
//! receivers park, retries with backoff after a failed receive, and handing each unit (a
//! message, a FIFO group or a whole batch) to a task. At shutdown an open long poll is let
//! return (it lives on at SQS whatever the client does, and would take any message that arrives
//! meanwhile), and what it brings is given back unstarted; a receive that cannot return within
//! `wait_time` and a few seconds is abandoned. What happens to a unit is `unit.rs`'s.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::flow::Gate;
use super::stats::PollStats;
use super::unit::run_unit;
use super::{lock, Defer, PollerConfig, Source};
use crate::health::Health;
use crate::limits::MAX_BATCH_ENTRIES;
use crate::message::ReceivedMessage;
use crate::metrics::names;
use crate::processor::{fifo_groups, Processor};
use crate::rate::RateLimit;
use crate::retry::Backoff;

/// Smooth weighted round robin over the queues, skipping queues that were just found empty.
pub(super) struct Picker {
    weights: Vec<i64>,
    current: Vec<i64>,
    paused_until: Vec<Option<Instant>>,
}

impl Picker {
    pub(super) fn new(weights: Vec<u32>) -> Self {
        let n = weights.len();
        Self { weights: weights.into_iter().map(i64::from).collect(), current: vec![0; n], paused_until: vec![None; n] }
    }
    pub(super) fn next(&mut self) -> usize {
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
    pub(super) fn empty(&mut self, i: usize) {
        if self.weights.len() > 1 {
            self.paused_until[i] = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    pub(super) fn busy(&mut self, i: usize) {
        self.paused_until[i] = None;
    }
}

/// Messages received after the shutdown began, by source index: `Poller::run` gives them back
/// once every receive has returned.
pub(super) type Returned = Arc<Mutex<Vec<(usize, ReceivedMessage)>>>;

/// How long past its wait a receive may take to return at shutdown before it is abandoned.
const RECEIVE_GRACE: Duration = Duration::from_secs(5);

#[allow(clippy::too_many_arguments)]
pub(super) async fn receiver<T: Send + 'static>(
    sources: Vec<Arc<Source>>,
    picker: Arc<Mutex<Picker>>,
    sem: Arc<Semaphore>,
    exec: Arc<Semaphore>,
    processor: Processor<T>,
    config: Arc<PollerConfig>,
    stats: Arc<PollStats>,
    stop: CancellationToken,
    cut: CancellationToken,
    tracker: TaskTracker,
    wake: Arc<Notify>,
    returned: Returned,
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
        if stop.is_cancelled() {
            // no new receive once the shutdown began (the last one's messages went back)
            return;
        }
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
        // Flow control: a paused queue is skipped, an open breaker stops every receive, a
        // half-open one lets one message through (its probe).
        let gate = source.flow.gate(idx);
        if gate == Gate::Wait {
            drop(permits);
            if lead.take().is_some() {
                source.idle_lead.store(false, Ordering::Release);
                wake.notify_waiters();
            }
            if stop.is_cancelled() {
                return;
            }
            if !source.flow.all_gated() {
                lock(&picker).empty(idx);
                continue;
            }
            health.gated(true);
            source.flow.changed(&stop).await;
            health.gated(false);
            if stop.is_cancelled() {
                return;
            }
            continue;
        }
        let want = if gate == Gate::Probe { 1 } else { permits.num_permits() };
        // Under a rate limit, receive only what can start within about a second.
        let max = reserve(&source.ctx.rates, want);
        if max == 0 {
            if gate == Gate::Probe {
                source.flow.probe_received(&[]);
            }
            drop(permits);
            let pause =
                source.ctx.rates.iter().map(|r| Duration::from_secs_f64(1.0 / r.rate())).min().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(pause.clamp(Duration::from_millis(5), Duration::from_millis(250))) => continue,
                _ = stop.cancelled() => return,
            }
        }
        let unreserve = |n: usize| source.ctx.rates.iter().for_each(|r| r.release(n));
        let receive = source.queue.receive(max as u32, config.wait_time, Some(config.visibility_timeout));
        tokio::pin!(receive);
        let received = tokio::select! {
            r = &mut receive => r,
            _ = stop.cancelled() => {
                // Let the open long poll return: it lives on at SQS whatever we do here, and a
                // message arriving meanwhile would be taken and kept invisible for a whole
                // visibility timeout. What it brings goes back below.
                match tokio::time::timeout(config.wait_time + RECEIVE_GRACE, &mut receive).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(queue = source.queue.name(), "a receive did not return at shutdown; abandoning it");
                        unreserve(max);
                        return;
                    }
                }
            }
        };
        unreserve(max - received.as_ref().map_or(0, Vec::len));
        PollStats::add(&stats.receive_calls, 1);
        let messages = match received {
            Ok(m) => {
                if gate == Gate::Probe {
                    source.flow.probe_received(&m);
                }
                health.receive_succeeded();
                failures = 0;
                m
            }
            Err(e) => {
                if gate == Gate::Probe {
                    source.flow.probe_received(&[]);
                }
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
            if !sources.iter().all(|s| s.idle_lead.load(Ordering::Acquire) || s.flow.paused(s.index)) {
                // another queue has nobody long-polling it: go there (the picker skips this
                // one for a second)
                continue;
            }
            drop(permits);
            stats.parked.fetch_add(1, Ordering::Relaxed);
            // parked counts like waiting for liveness: the lead answers for this queue (its
            // receives keep the poller live, or it waits for slots like the rest)
            health.parked(true);
            let stopped = tokio::select! {
                _ = woken => false,
                // a queue paused or resumed (nobody long-polls a paused one)
                _ = source.flow.pauses_changed() => false,
                _ = stop.cancelled() => true,
            };
            health.parked(false);
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
        // received after the breaker opened (a receive already open then): not to be started
        let halted = !stop.is_cancelled() && gate != Gate::Probe && source.flow.halted();
        if stop.is_cancelled() || halted {
            // Received as the shutdown began, or after the breaker opened: give them back
            // unstarted, but a FIFO group holding a message on its last allowed receive runs
            // through it (see `unit.rs`).
            let (run, back): (Vec<_>, Vec<_>) = if source.ctx.fifo && !processor.is_batch() {
                fifo_groups(messages).into_iter().partition(|g| {
                    source.ctx.max_receive_count.is_some_and(|max| g.iter().any(|m| m.receive_count() >= max))
                })
            } else {
                (Vec::new(), vec![messages])
            };
            let back: Vec<ReceivedMessage> = back.into_iter().flatten().collect();
            unreserve(back.len());
            if halted {
                // at once: the breaker may stay open for long (released, or carried over on
                // their last allowed receive)
                super::unit::give_back(&source, &stats, back).await;
            } else {
                // given back once every open receive has returned (`Poller::run`): a message
                // given back now would be taken by another receive still open
                lock(&returned).extend(back.into_iter().map(|m| (idx, m)));
            }
            for unit in run {
                let Some(permit) = permits.split(unit.len()) else {
                    unreserve(unit.len());
                    super::unit::give_back(&source, &stats, unit).await;
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
                    cut.clone(),
                ));
            }
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
                tracing::error!("more messages than permits; giving them back");
                unreserve(unit.len());
                super::unit::give_back(&source, &stats, unit).await;
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
                cut.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
