//! Liveness and readiness of a poller, for container health checks (`/healthz`, `/readyz`).
//!
//! - **Live**: the receive loop is getting answers from SQS — a `ReceiveMessage` call succeeded
//!   (with or without messages) within the liveness window (2 × the long-poll wait + a
//!   margin) — or it has no reason to call: every receiver is waiting for a free handler slot
//!   (or parked behind the one receiver that long-polls an empty queue for all, which is then
//!   itself waiting for a slot) *and the slots are moving* (a message started or finished within
//!   the slot window: the longest a message may legitimately hold a slot), or the poller is
//!   draining after a shutdown signal. A poller that has been unable to reach SQS for longer
//!   than the window (a network partition, credentials that no longer work), whose slots stopped
//!   moving (leaked: a message wedged outside its handler), or one of whose messages' tasks
//!   ended in a panic the processor could not catch, is not live; an orchestrator then replaces
//!   it.
//!   Receivers held back by flow control (the circuit breaker open, every queue paused) count as
//!   waiting, and slots that do not move then are expected (nothing may start).
//! - **Ready**: the queues were resolved (the poller reached SQS and started), the last
//!   `ReceiveMessage` call succeeded (or none returned yet: an idle long poll takes up to 20 s),
//!   the poller is not draining, and its circuit breaker is closed (an open breaker means the
//!   downstream is down: see [`crate::flow`]).
//!
//! Before the poller's first receive, the window counts from when the [`Health`] was made.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use sqskit::health::Health;
//! let h = Health::new(Duration::from_secs(50));
//! assert!(h.live() && !h.ready()); // queues not resolved yet
//! h.queues_resolved();
//! h.receive_succeeded();
//! assert!(h.ready());
//! h.receive_failed();
//! assert!(!h.ready() && h.live()); // one failure is not yet a dead poller
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Shared health state of one poller (see the module docs).
#[derive(Debug)]
pub struct Health {
    born: Instant,
    window_ms: AtomicU64,
    /// Milliseconds after `born` of the last successful receive (0: none yet).
    last_ok_ms: AtomicU64,
    waiting: AtomicUsize,
    parked: AtomicUsize,
    receivers: AtomicUsize,
    resolved: AtomicBool,
    last_call_ok: AtomicBool,
    draining: AtomicBool,
    /// Milliseconds after `born` a message last started or finished (0: none yet).
    last_progress_ms: AtomicU64,
    /// The slot window in milliseconds (0: not set; then only the receive window counts).
    slot_window_ms: AtomicU64,
    /// A message's task ended in a panic nobody caught: its accounting cannot be trusted.
    wedged: AtomicBool,
    /// Receivers held back by flow control (breaker open, every queue paused).
    gated: AtomicUsize,
    breaker_open: AtomicBool,
}

/// A snapshot of [`Health`], as the health endpoints print it (JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HealthReport {
    /// See the module docs.
    pub live: bool,
    /// See the module docs.
    pub ready: bool,
    /// Seconds since the last successful `ReceiveMessage` (since start when there was none).
    pub since_last_receive_s: f64,
    /// The liveness window in seconds.
    pub window_s: f64,
    /// Receivers waiting for a free handler slot.
    pub waiting_for_slots: usize,
    /// Receivers parked while another long-polls their empty queue.
    pub parked: usize,
    /// Seconds since a message last started or finished (since start when none did).
    pub since_last_progress_s: f64,
    /// Whether a message's task ended in a panic that was not caught (not live).
    pub wedged: bool,
    /// Receivers running.
    pub receivers: usize,
    /// Whether the queues were resolved.
    pub queues_resolved: bool,
    /// Whether the last `ReceiveMessage` call succeeded.
    pub last_receive_ok: bool,
    /// Whether the poller is draining after a shutdown signal.
    pub draining: bool,
    /// Receivers held back by flow control (the breaker open, every queue paused).
    pub gated: usize,
    /// Whether its circuit breaker is open or half-open (the downstream is down: not ready).
    pub breaker_open: bool,
}

impl Default for Health {
    /// A window for the default 20 s wait: 2 × 20 s + 10 s.
    fn default() -> Self {
        Self::new(Duration::from_secs(50))
    }
}

impl Health {
    /// Health with a liveness `window` (the poller sets it to 2 × wait time + margin).
    pub fn new(window: Duration) -> Self {
        Self {
            born: Instant::now(),
            window_ms: AtomicU64::new(millis(window)),
            last_ok_ms: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            receivers: AtomicUsize::new(0),
            resolved: AtomicBool::new(false),
            last_call_ok: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            last_progress_ms: AtomicU64::new(0),
            slot_window_ms: AtomicU64::new(0),
            wedged: AtomicBool::new(false),
            gated: AtomicUsize::new(0),
            breaker_open: AtomicBool::new(false),
        }
    }

    /// Set the slot window: the longest a message may hold a handler slot without anything
    /// starting or finishing (the poller: its longest visibility extension + 2 × the visibility
    /// timeout + the liveness margin + the longest rate period).
    pub fn set_slot_window(&self, window: Duration) {
        self.slot_window_ms.store(u64::try_from(window.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A message started or finished: the slots are moving.
    pub(crate) fn progress(&self) {
        self.last_progress_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A message's task ended in a panic that was not caught: the poller is no longer live.
    pub(crate) fn wedged(&self) {
        self.wedged.store(true, Ordering::Relaxed);
    }

    /// A receiver is held back by flow control (the breaker open, every queue paused), or
    /// goes on.
    pub(crate) fn gated(&self, on: bool) {
        if on {
            self.gated.fetch_add(1, Ordering::Relaxed);
        } else {
            self.gated.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The circuit breaker opened (`true`: not ready) or closed again.
    pub fn breaker_open(&self, open: bool) {
        self.breaker_open.store(open, Ordering::Relaxed);
    }

    /// A receiver parks (its queue is empty and another receiver long-polls it) or wakes.
    pub(crate) fn parked(&self, on: bool) {
        if on {
            self.parked.fetch_add(1, Ordering::Relaxed);
        } else {
            self.parked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Change the liveness window.
    pub fn set_window(&self, window: Duration) {
        self.window_ms.store(millis(window), Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        (self.born.elapsed().as_millis() as u64).max(1)
    }

    /// The queues were resolved (SQS answered): the poller is about to receive. Ready from
    /// now on, until a receive fails (an idle queue's first long poll may take 20 s to return).
    pub fn queues_resolved(&self) {
        self.resolved.store(true, Ordering::Relaxed);
        self.last_call_ok.store(true, Ordering::Relaxed);
    }

    /// A `ReceiveMessage` call returned (with or without messages).
    pub fn receive_succeeded(&self) {
        self.last_ok_ms.store(self.now_ms(), Ordering::Relaxed);
        self.last_call_ok.store(true, Ordering::Relaxed);
    }

    /// A `ReceiveMessage` call failed.
    pub fn receive_failed(&self) {
        self.last_call_ok.store(false, Ordering::Relaxed);
    }

    /// A receiver starts or stops waiting for a free handler slot.
    pub(crate) fn waiting(&self, on: bool) {
        if on {
            self.waiting.fetch_add(1, Ordering::Relaxed);
        } else {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A receiver task starts or ends.
    pub(crate) fn receiver(&self, on: bool) {
        if on {
            self.receivers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.receivers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The poller stopped receiving to drain (live, not ready).
    pub fn draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// See the module docs.
    pub fn live(&self) -> bool {
        self.report().live
    }

    /// See the module docs.
    pub fn ready(&self) -> bool {
        self.report().ready
    }

    /// Everything at once.
    pub fn report(&self) -> HealthReport {
        let now = self.now_ms();
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        let since = now.saturating_sub(last);
        let window = self.window_ms.load(Ordering::Relaxed);
        let waiting = self.waiting.load(Ordering::Relaxed);
        let parked = self.parked.load(Ordering::Relaxed);
        let receivers = self.receivers.load(Ordering::Relaxed);
        let draining = self.draining.load(Ordering::Relaxed);
        let resolved = self.resolved.load(Ordering::Relaxed);
        let last_ok = self.last_call_ok.load(Ordering::Relaxed);
        let wedged = self.wedged.load(Ordering::Relaxed);
        let since_progress = now.saturating_sub(self.last_progress_ms.load(Ordering::Relaxed));
        let slot_window = self.slot_window_ms.load(Ordering::Relaxed);
        let slots_moving = slot_window == 0 || since_progress <= slot_window;
        let gated = self.gated.load(Ordering::Relaxed);
        let breaker_open = self.breaker_open.load(Ordering::Relaxed);
        // held back by flow control, nothing may start: slots that do not move are expected
        let all_waiting = receivers > 0 && waiting + parked + gated >= receivers && (slots_moving || gated > 0);
        HealthReport {
            live: !wedged && (draining || all_waiting || since <= window),
            ready: resolved && last_ok && !draining && !breaker_open,
            since_last_receive_s: since as f64 / 1000.0,
            window_s: window as f64 / 1000.0,
            waiting_for_slots: waiting,
            parked,
            since_last_progress_s: since_progress as f64 / 1000.0,
            wedged,
            receivers,
            queues_resolved: resolved,
            last_receive_ok: last_ok,
            draining,
            gated,
            breaker_open,
        }
    }
}

/// Milliseconds of `d`, `u64::MAX` for a longer one (a window that never lapses).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_lapses_after_the_window_unless_every_receiver_waits_for_slots() {
        let h = Health::new(Duration::from_millis(30));
        h.queues_resolved();
        h.receive_succeeded();
        assert!(h.live() && h.ready());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!h.live(), "no answer from SQS within the window");
        h.receiver(true);
        h.receiver(true);
        h.waiting(true);
        assert!(!h.live(), "one of two receivers still calls (and fails)");
        h.waiting(true);
        assert!(h.live(), "all receivers wait for handler slots: busy, not dead");
        h.waiting(false);
        h.receive_succeeded();
        assert!(h.live());
        h.draining();
        assert!(h.live() && !h.ready());
    }

    #[test]
    fn slots_that_stop_moving_fail_liveness_and_a_wedge_fails_it_for_good() {
        let h = Health::new(Duration::from_millis(30));
        h.set_slot_window(Duration::from_millis(80));
        h.queues_resolved();
        assert!(h.ready(), "ready once SQS answered the queue lookups, before the first long poll returns");
        h.receiver(true);
        h.parked(true);
        let r = h.report();
        assert_eq!((r.waiting_for_slots, r.parked), (0, 1), "parked is not waiting for slots");
        h.parked(false);
        h.waiting(true);
        h.progress();
        std::thread::sleep(Duration::from_millis(50));
        assert!(h.live(), "waiting for slots that moved 50 ms ago (slot window 80 ms)");
        std::thread::sleep(Duration::from_millis(60));
        assert!(!h.live(), "nothing started or finished for 110 ms: the slots leaked");
        h.progress();
        assert!(h.live());
        h.wedged();
        h.receive_succeeded();
        assert!(!h.live(), "an uncaught panic in a message's task");
    }

    #[test]
    fn an_open_breaker_is_live_but_not_ready_however_long_it_lasts() {
        let h = Health::new(Duration::from_millis(30));
        h.set_slot_window(Duration::from_millis(30));
        h.queues_resolved();
        h.receive_succeeded();
        h.receiver(true);
        h.breaker_open(true);
        h.gated(true);
        std::thread::sleep(Duration::from_millis(80));
        let r = h.report();
        assert!(r.live, "held back by the breaker: no receive, no slot moves, still live: {r:?}");
        assert!(!r.ready && r.breaker_open && r.gated == 1, "{r:?}");
        h.gated(false);
        h.breaker_open(false);
        assert!(h.ready());
        assert!(!h.live(), "going on again, a receiver must get answers");
    }
}
