//! The poller's numbers: counters of a run ([`PollStats`], [`PollSummary`]) and the queue-depth
//! gauges.
//!
//! It owns what is counted and how a snapshot is taken; the receivers, units and ackers count
//! as they go. It does not serve anything (the metrics server does, see [`crate::metrics`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
