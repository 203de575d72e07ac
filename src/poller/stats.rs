//! The poller's numbers: counters of a run ([`PollStats`], [`PollSummary`]) and the queue-depth
//! gauges.
//!
//! It owns what is counted and how a snapshot is taken, and flow control's state as the
//! poller publishes it ([`FlowStatus`]); the receivers, units and ackers count as they go. It does not serve anything (the metrics server does, see [`crate::metrics`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Source;
use crate::metrics::names;

/// Counters of a poller run.
#[derive(Debug, Default)]
pub struct PollStats {
    pub(super) received: AtomicU64,
    pub(super) succeeded: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
    pub(super) released: AtomicU64,
    pub(super) carried_over: AtomicU64,
    pub(super) extensions: AtomicU64,
    pub(super) in_flight: AtomicU64,
    pub(super) receive_calls: AtomicU64,
    pub(super) parked: AtomicU64,
    /// Flow control's state, as flow control last set it.
    pub(super) flow: Mutex<FlowBoard>,
}

/// Flow control's state as the poller publishes it (read through [`PollStats::flow`]).
#[derive(Debug, Default)]
pub(super) struct FlowBoard {
    /// `(state, since, reason of the last transition, transitions)`; `None`: no breaker.
    pub(super) breaker: Option<(crate::flow::BreakerState, Instant, String, u64)>,
    /// `(queue, reason)` of each paused queue.
    pub(super) paused: Vec<(String, String)>,
    /// The adaptive limit (`None`: a fixed concurrency).
    pub(super) limit: Option<usize>,
}

/// A circuit breaker's state (see [`crate::flow::Breaker`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct BreakerStatus {
    /// `closed`, `open` or `half-open`.
    pub state: String,
    /// Seconds in this state.
    pub for_s: f64,
    /// Why it is in this state (the last transition's reason; empty before any).
    pub reason: String,
    /// Transitions since start.
    pub transitions: u64,
}

/// A paused queue (see [`crate::flow::pause`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PauseStatus {
    /// The queue's name.
    pub queue: String,
    /// Why it is paused.
    pub reason: String,
}

/// Flow control's state: the breaker (`None` when it is off), the paused queues, the adaptive
/// concurrency limit (`None`: fixed).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct FlowStatus {
    /// The circuit breaker.
    pub breaker: Option<BreakerStatus>,
    /// The queues paused now.
    pub paused: Vec<PauseStatus>,
    /// Handlers allowed to run at once now, with `--concurrency auto`.
    pub concurrency_limit: Option<usize>,
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
    /// Given back unstarted (at shutdown, or when its lease ended while it waited): released,
    /// or carried over (below).
    pub released: u64,
    /// Of the released, those on their last allowed receive that were carried over as a fresh
    /// copy instead of going back to be dead-lettered unrun (standard queues; see
    /// [`settle::carry_over`](crate::settle::carry_over)).
    pub carried_over: u64,
    /// Visibility extensions by the heartbeat.
    pub extensions: u64,
    /// In flight at the time of the snapshot.
    pub in_flight: u64,
    /// `ReceiveMessage` calls made (returned, with or without messages, or failed).
    pub receive_calls: u64,
    /// Receivers parked at the time of the snapshot: their queue was empty and another
    /// receiver already long-polls it (see [`Poller`](super::Poller)).
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
            carried_over: g(&self.carried_over),
            extensions: g(&self.extensions),
            in_flight: g(&self.in_flight),
            receive_calls: g(&self.receive_calls),
            parked: g(&self.parked),
        }
    }
    /// Flow control's state now.
    pub fn flow(&self) -> FlowStatus {
        let board = self.flow.lock().unwrap_or_else(|p| p.into_inner());
        FlowStatus {
            breaker: board.breaker.as_ref().map(|(state, since, reason, transitions)| BreakerStatus {
                state: state.as_str().to_string(),
                for_s: since.elapsed().as_secs_f64(),
                reason: reason.clone(),
                transitions: *transitions,
            }),
            paused: board
                .paused
                .iter()
                .map(|(queue, reason)| PauseStatus { queue: queue.clone(), reason: reason.clone() })
                .collect(),
            concurrency_limit: board.limit,
        }
    }
    pub(super) fn add(a: &AtomicU64, n: usize) {
        a.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Read each queue's depth every `every` for the `sqskit_queue_depth` gauges.
pub(super) async fn depth_reporter(sources: Vec<Arc<Source>>, every: Duration, stop: CancellationToken) {
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
