//! A unit's run: one message (standard queue), one FIFO group or one whole batch, from a
//! handler slot to its acks, with a heartbeat.
//!
//! It owns what happens between a receive and the acks: waiting for a handler slot (prefetched
//! messages wait here, heart-beaten), running the processor (a [`Sequence`] or a whole batch),
//! handing each message's delete to the acker as soon as its outcome is known, the unit's
//! visibility changes in one piece at the end (a FIFO failure first, the messages held behind
//! it after), and the heartbeat that extends the lease while the handler runs and cancels the
//! handler before the lease can no longer be extended. The outcomes are the processor's.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::acker::Ack;
use super::receive::Ghosts;
use super::stats::PollStats;
use super::{lock, PollerConfig, Source};
use crate::limits::{clamp_visibility, MAX_VISIBILITY_SECONDS};
use crate::message::ReceivedMessage;
use crate::metrics::names;
use crate::outcome::{Decision, Outcome};
use crate::processor::{Processor, Sequence};
use crate::settle::{Actions, Deletion};

/// Handle one message (standard queue) or one FIFO group, with a heartbeat; hand each
/// message's delete to the acker as soon as its outcome is known, and the visibility changes
/// of the unit (a failure first, the messages held behind it after) in one piece at the end.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_unit<T: Send + 'static>(
    unit: Vec<Arc<ReceivedMessage>>,
    permit: OwnedSemaphorePermit,
    exec: Arc<Semaphore>,
    processor: Processor<T>,
    source: Arc<Source>,
    config: Arc<PollerConfig>,
    stats: Arc<PollStats>,
    _stop: CancellationToken,
    ghosts: Arc<Ghosts>,
) {
    let n = unit.len();
    // what the unit starts, it starts under flow control's halt: the breaker opening stops it
    // like the shutdown does (the rest goes back unstarted)
    let stop = source.flow.halt();
    // when the current message got its slot (or the one before it was decided)
    let mark = Mutex::new(Instant::now());
    stats.in_flight.fetch_add(n as u64, Ordering::Relaxed);
    metrics::gauge!(names::IN_FLIGHT).increment(n as f64);
    let pending = Arc::new(Mutex::new(unit.clone()));
    let lease = CancellationToken::new();
    let beat = heartbeat(pending.clone(), &processor, &source, &config, &stats, &lease);
    // each decided message: out of the heartbeat, its delete to the acker at once
    let hand_over = |d: &Decision| {
        lock(&pending).retain(|m| m.message_id != d.message.message_id);
        let started = std::mem::replace(&mut *lock(&mark), Instant::now());
        source.flow.settled(&source, d, started);
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
        // (never more than flow control allows now: a slow start or an adaptive limit below it)
        let want = n.min(config.concurrency).min(source.flow.slots()).max(1) as u32;
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
        *lock(&mark) = Instant::now();
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
