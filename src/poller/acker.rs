//! The acker: one per queue, it coalesces a poller's deletes and visibility changes into batch
//! calls.
//!
//! It owns the batching of acks (a full batch of 10 deletes at once, the rest when its oldest
//! entry has waited `ack_flush_interval`; a unit's visibility changes kept together and in
//! order), the number of calls in flight, and the final flush at shutdown. It carries acks out
//! through [`settle`], which confirms, retries and counts them; it decides nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::stats::PollStats;
use super::PollerConfig;
use crate::client::Queue;
use crate::limits::MAX_BATCH_ENTRIES;
use crate::message::ReceivedMessage;
use crate::settle::{self, Deletion};

/// Visibility changes of one unit, in order: `(message, seconds)`.
pub(super) type VisibilityUnit = Vec<(Arc<ReceivedMessage>, u32)>;

pub(super) enum Ack {
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
pub(super) async fn acker(
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
