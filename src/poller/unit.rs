//! A unit's run: one message (standard queue), one FIFO group or one whole batch, from a
//! handler slot to its acks, with a heartbeat.
//!
//! It owns what happens between a receive and the acks: waiting for a handler slot (prefetched
//! messages wait here, heart-beaten), running the processor (a [`Sequence`] or a whole batch),
//! handing each message's delete to the acker as soon as its outcome is known, the unit's
//! visibility changes in one piece at the end (a FIFO failure first, the messages held behind
//! it after), what goes back unstarted (released, or carried over when it is on its last allowed
//! receive, or when its failure there came while the circuit breaker was open), feeding flow
//! control each outcome, and the heartbeat that extends the lease while the message waits and runs.
//!
//! A message's lease budget is spent only on running it: waiting for a slot or a rate turn is
//! heart-beaten without counting toward `max_visibility_extension`, which counts from the
//! moment its handler starts. The only limit on waiting is SQS's 12 hours from receipt: a
//! message that could not start before it is released while its lease still runs. The outcomes
//! are the processor's.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::acker::Ack;
use super::stats::PollStats;
use super::{lock, PollerConfig, Source};
use crate::health::Health;
use crate::limits::{clamp_visibility, MAX_VISIBILITY_SECONDS};
use crate::message::ReceivedMessage;
use crate::metrics::names;
use crate::outcome::{Decision, Outcome};
use crate::processor::{Drive, Processor, Sequence};
use crate::settle::{self, Actions, Deletion};

/// What the heartbeat looks at: the unit's undecided messages, and since when the current one
/// runs (`None` while it waits for a slot or a rate turn).
struct Lease {
    pending: Vec<Arc<ReceivedMessage>>,
    running_since: Option<Instant>,
}

/// Counts a unit in flight while it lives, and tells the health when it ends: a message
/// finished (the slots move), or its task unwound from a panic nobody caught (wedged).
struct InFlight<'a> {
    stats: &'a PollStats,
    health: &'a Health,
    n: usize,
}

impl<'a> InFlight<'a> {
    fn new(stats: &'a PollStats, health: &'a Health, n: usize) -> Self {
        stats.in_flight.fetch_add(n as u64, Ordering::Relaxed);
        metrics::gauge!(names::IN_FLIGHT).increment(n as f64);
        Self { stats, health, n }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(self.n as u64, Ordering::Relaxed);
        metrics::gauge!(names::IN_FLIGHT).decrement(self.n as f64);
        if std::thread::panicking() {
            tracing::error!(
                messages = self.n,
                "a message's task panicked outside the processor; the poller is no longer live"
            );
            self.health.wedged();
        } else {
            self.health.progress();
        }
    }
}

/// Handle one message (standard queue) or one FIFO group, with a heartbeat, until `stop` (start
/// nothing more) or `cut` (the drain's deadline: end everything, see the lease below); hand each
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
    cut: CancellationToken,
) {
    let n = unit.len();
    // what the unit starts, it starts under flow control's halt, a child of the poller's stop:
    // the breaker opening stops it as the shutdown does (the rest goes back unstarted)
    let stop = source.flow.halt();
    let health = config.health.clone().unwrap_or_default();
    let _in_flight = InFlight::new(&stats, &health, n);
    let state = Arc::new(Mutex::new(Lease { pending: unit.clone(), running_since: None }));
    // the lease ends when the heartbeat can extend it no further, or when the drain's deadline
    // cuts every unit still going (`cut`): running handlers stop as retryable timeouts,
    // waiting messages go back unstarted, and every outcome is settled before the poller exits
    let lease = cut.child_token();
    let beat = heartbeat(state.clone(), &processor, &source, &config, &stats, &lease);
    // A FIFO unit holding a message on its last allowed receive is not released at shutdown (SQS
    // would dead-letter it unrun, and a copy would lose its place): it runs through it.
    let run_through = source.ctx.fifo
        && source.ctx.max_receive_count.is_some_and(|max| unit.iter().any(|m| m.receive_count() >= max));
    let started = |_: &ReceivedMessage| {
        lock(&state).running_since = Some(Instant::now());
        health.progress();
    };
    // each decided message: out of the heartbeat, its delete to the acker at once
    let hand_over = |d: &Decision| {
        let ran_from = {
            let mut s = lock(&state);
            s.pending.retain(|m| m.message_id != d.message.message_id);
            s.running_since.take()
        };
        // flow control sees each outcome as it is settled (the breaker, the adaptive limit)
        source.flow.settled(&source, d, ran_from);
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
            // released ones are counted when they go back (released or carried over)
            _ => None,
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
        // a handler slot (prefetched messages wait here, heart-beaten; at shutdown or when the
        // lease ends first they go back below without running); a unit takes as many as it has
        // messages, up to all
        // (never more than flow control allows now: a slow start or an adaptive limit below it)
        let want = n.min(config.concurrency).min(source.flow.slots()).max(1) as u32;
        let never = CancellationToken::new();
        let stop_waiting = if run_through { &never } else { &stop };
        let slots = loop {
            let slots = match exec.clone().try_acquire_many_owned(want) {
                Ok(p) => Some(p),
                Err(_) => {
                    metrics::gauge!(names::PREFETCHED).increment(n as f64);
                    let p = tokio::select! {
                        p = exec.clone().acquire_many_owned(want) => p.ok(),
                        _ = stop_waiting.cancelled() => None,
                        _ = lease.cancelled() => None,
                    };
                    metrics::gauge!(names::PREFETCHED).decrement(n as f64);
                    p
                }
            };
            // flow control may have cut the pool below what runs: then the slots are held
            // back and the unit waits again (the semaphore would hand them to the next unit)
            match slots {
                Some(p) => match source.flow.admit(p) {
                    Some(p) => break Some(p),
                    None => continue,
                },
                None => break None,
            }
        };
        if slots.is_none() {
            // not started: stop, or its lease ended while it waited
            let decisions: Vec<Decision> =
                unit.iter().map(|m| Decision { message: m.clone(), outcome: Outcome::Released }).collect();
            for d in &decisions {
                hand_over(d).await;
            }
            return decisions;
        }
        let drive = Drive { stop: Some(&stop), lease: Some(&lease), started: Some(&started) };
        let _slots = slots;
        if processor.is_batch() {
            // a batch handler gets the whole receive at once
            // boxed: the batch path's future is ~10 KB, and inline it would make every
            // one-message unit's future (spawned, moved, polled in a select) that large too
            let decisions = Box::pin(processor.process_whole(&source.ctx, unit.clone(), drive)).await;
            for d in &decisions {
                hand_over(d).await;
            }
            return decisions;
        }
        let mut seq =
            Sequence::new(&processor, &source.ctx, unit.clone(), Some(&stop), Some(&lease)).on_start(&started);
        if run_through {
            seq = seq.run_through_at_stop();
        }
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
    let mut actions = Actions::plan_for(&source.ctx, &decisions);
    // failures on their last allowed receive that came while the breaker was open (the
    // outage's, not the message's; see `flow.rs`): carried over too, not left to SQS's DLQ move
    let (held, visibility): (Vec<_>, Vec<_>) =
        std::mem::take(&mut actions.visibility).into_iter().partition(|(m, _)| source.flow.take_held(m));
    source.flow.held_carried(&source, held.len());
    actions.carry.extend(held.into_iter().map(|(m, _)| m));
    let released = decisions.iter().filter(|d| d.outcome == Outcome::Released).count();
    let mut visibility = visibility;
    back_unstarted(&source, &stats, actions.carry, &mut visibility).await;
    PollStats::add(&stats.released, released);
    if !visibility.is_empty() {
        let reason = if released >= visibility.len() { "release" } else { "retry" };
        let _ = source.acker.send(Ack::Visibility(visibility, reason)).await;
    }
    drop(permit);
}

/// Carry over `carry` (released unstarted on their last allowed receive, see
/// [`settle::carry_over`]): the ones whose copy was sent are deleted, the others join
/// `visibility` with 0 (released).
async fn back_unstarted(
    source: &Source,
    stats: &PollStats,
    carry: Vec<Arc<ReceivedMessage>>,
    visibility: &mut Vec<(Arc<ReceivedMessage>, u32)>,
) {
    if carry.is_empty() {
        return;
    }
    let carried = settle::carry_over(&source.queue, &carry).await;
    PollStats::add(&stats.carried_over, carried.len());
    for m in carry {
        if carried.iter().any(|c| Arc::ptr_eq(c, &m)) {
            let _ = source.acker.send(Ack::Delete(m, Deletion::CarriedOver)).await;
        } else {
            visibility.push((m, 0));
        }
    }
}

/// Give back messages received once the shutdown began, unstarted: released (visibility 0), or
/// carried over when on their last allowed receive (standard queues).
pub(super) async fn give_back(source: &Source, stats: &PollStats, messages: Vec<ReceivedMessage>) {
    let messages: Vec<Arc<ReceivedMessage>> = messages.into_iter().map(Arc::new).collect();
    PollStats::add(&stats.released, messages.len());
    let (carry, rest): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| settle::must_carry_over(&source.ctx, m));
    let mut visibility: Vec<(Arc<ReceivedMessage>, u32)> = rest.into_iter().map(|m| (m, 0)).collect();
    back_unstarted(source, stats, carry, &mut visibility).await;
    if !visibility.is_empty() {
        let _ = source.acker.send(Ack::Visibility(visibility, "release")).await;
    }
}

/// Extend the visibility of the unit's undecided messages, every half visibility timeout by one
/// visibility timeout, while they wait and while they run. The lease ends (`lease` cancelled:
/// the running handler is stopped as a retryable timeout, waiting messages are released) when
/// the next extension would pass `max_visibility_extension` since the running handler started,
/// or SQS's 12 hours since receipt; either way while half a visibility timeout of the lease is
/// left.
async fn heartbeat<T: Send + 'static>(
    state: Arc<Mutex<Lease>>,
    processor: &Processor<T>,
    source: &Source,
    config: &PollerConfig,
    stats: &PollStats,
    lease: &CancellationToken,
) -> std::convert::Infallible {
    let vis = config.visibility_timeout;
    let Some(received_at) = lock(&state).pending.iter().map(|m| m.received_at).min() else {
        return std::future::pending().await;
    };
    let cap = config.max_visibility_extension.as_secs();
    let mut next = received_at + vis / 2;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let (unit, running) = {
            let s = lock(&state);
            (s.pending.clone(), s.running_since)
        };
        if unit.is_empty() {
            return std::future::pending().await;
        }
        let since_receipt = received_at.elapsed().as_secs();
        let ran = running.map(|t| t.elapsed().as_secs());
        let over_cap = ran.is_some_and(|r| r.saturating_add(vis.as_secs()) > cap);
        let over_sqs = since_receipt.saturating_add(vis.as_secs()) > u64::from(MAX_VISIBILITY_SECONDS);
        if over_cap || over_sqs {
            if over_cap {
                tracing::warn!(
                    queue = source.queue.name(),
                    message_id = %unit[0].message_id,
                    limit_secs = cap,
                    ran_secs = ran.unwrap_or_default(),
                    "handler reached the longest visibility extension allowed; cancelling it before its lease ends"
                );
            } else {
                tracing::warn!(
                    queue = source.queue.name(),
                    message_id = %unit[0].message_id,
                    waited_secs = since_receipt,
                    "SQS allows a message 12 hours from its receipt; giving it back before its lease ends"
                );
            }
            metrics::counter!(names::LEASE_LIMIT_CANCELLED).increment(1);
            lease.cancel();
            return std::future::pending().await;
        }
        let extend = clamp_visibility(vis.as_secs(), since_receipt);
        PollStats::add(&stats.extensions, unit.len());
        metrics::counter!(names::VISIBILITY_EXTENSIONS).increment(unit.len() as u64);
        tracing::debug!(messages = unit.len(), seconds = extend, running = running.is_some(), "extending visibility");
        let entries = unit.iter().map(|m| (m.clone(), extend)).collect();
        let _ = source.acker.send(Ack::Visibility(entries, "heartbeat")).await;
        // idempotency claims follow the lease
        let until = std::time::SystemTime::now() + Duration::from_secs(u64::from(extend));
        processor.extend_claims(&unit, until).await;
        next = Instant::now() + Duration::from_secs(u64::from(extend)) / 2;
    }
}
