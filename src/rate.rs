//! Rate limits: at most N messages *started* per second, per queue and/or per process.
//!
//! A [`RateLimit`] spaces handler starts at least `1 / N` seconds apart, measured between the
//! actual starts (no burst, no catching up after a late start), so no one-second window ever
//! holds more than N starts. Waiting messages are served first come, first started. The
//! processor waits right before each message is decoded and handled, under all of its
//! context's limits at once (a queue's from
//! [`QueueContext::with_rate`](crate::processor::QueueContext::with_rate), then the
//! process-wide one): a start counts against each of them at the same instant.
//!
//! (A token bucket such as `governor`'s cannot take one token from two buckets at the same
//! instant nor serve waiters in order; both are needed for the guarantee above.)
//!
//! The poller also **sizes its receives** by it: the messages received but not yet started
//! are kept within about one second of starts ([`RateLimit::reserve`]), so nothing sits
//! invisible for long waiting for its turn, and a message the limit cannot start soon stays in
//! the queue for another consumer.
//!
//! # Example
//! ```
//! # async fn demo() -> Result<(), sqskit::Error> {
//! let limit = sqskit::rate::RateLimit::per_second(50.0)?;
//! let t = std::time::Instant::now();
//! for _ in 0..3 {
//!     limit.start().await;
//! }
//! assert!(t.elapsed() >= std::time::Duration::from_millis(40)); // 3 starts, 20 ms apart
//! assert!(sqskit::rate::RateLimit::per_second(0.0).is_err());
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;

/// Highest accepted rate (messages per second).
pub const MAX_RATE: f64 = 100_000.0;
/// Lowest accepted rate: one start per 1,000 s (a received message waits at most one period
/// for its turn, invisible and heart-beaten; much longer would outlast its lease).
pub const MIN_RATE: f64 = 0.001;

/// At most N message starts per second (see the module docs).
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    per_second: f64,
    /// The last start; the lock is the queue of messages waiting for their turn (FIFO).
    last: tokio::sync::Mutex<Option<Instant>>,
    /// Received (reserved) and not started yet.
    pending: AtomicUsize,
}

impl RateLimit {
    /// A limit of `rate` starts per second (fractions allowed: `0.5` is one every 2 s).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `rate` unless 0.001 ([`MIN_RATE`]) ≤ `rate` ≤ 100,000
    /// ([`MAX_RATE`]).
    pub fn per_second(rate: f64) -> Result<Self, Error> {
        let period = (rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate))
            .then(|| Duration::try_from_secs_f64(1.0 / rate).ok())
            .flatten();
        let Some(period) = period else {
            return Err(Error::Invalid {
                what: "rate",
                reason: format!(
                    "{rate:?} messages per second: must be at least {MIN_RATE} (one every 1000 s) and at most {MAX_RATE}"
                ),
            });
        };
        Ok(Self { period, per_second: rate, last: tokio::sync::Mutex::new(None), pending: AtomicUsize::new(0) })
    }

    /// The limit, in starts per second.
    pub fn rate(&self) -> f64 {
        self.per_second
    }

    /// Wait for this message's turn to start.
    pub async fn start(&self) {
        Self::turn([self]).await;
    }

    /// Wait for a turn under every limit in `limits` at the same instant: each start is at
    /// least one period after the previous start under each of them. Waiters are served in
    /// order (first come, first started). Take the limits in the same order everywhere (a
    /// queue's before the process's).
    pub async fn start_all(limits: &[Arc<RateLimit>]) {
        Self::turn(limits.iter().map(Arc::as_ref)).await;
    }

    async fn turn<'a>(limits: impl IntoIterator<Item = &'a RateLimit>) {
        let mut held = Vec::new();
        for l in limits {
            let last = l.last.lock().await;
            if let Some(t) = *last {
                // the limits taken before stay ready: only this waiter can start under them
                tokio::time::sleep_until((t + l.period).into()).await;
            }
            held.push((l, last));
        }
        let now = Instant::now();
        for (l, mut last) in held {
            *last = Some(now);
            drop(last);
            l.release(1);
        }
    }

    /// How many more messages may be received for this limit now (≤ `want`), counted as
    /// pending until they [`start`](Self::start) or are [`release`](Self::release)d: received but
    /// unstarted messages stay within one second of starts (at least one when none is pending).
    pub fn reserve(&self, want: usize) -> usize {
        let budget = (self.per_second.floor() as usize).max(1);
        let mut took = 0;
        let _ = self.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
            took = want.min(budget.saturating_sub(p));
            Some(p + took)
        });
        took
    }

    /// Give back `n` reservations (messages not received, or never started).
    pub fn release(&self, n: usize) {
        let _ = self.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| Some(p.saturating_sub(n)));
    }

    /// Messages reserved and not started.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_one_second_of_starts() {
        let r = RateLimit::per_second(25.0).unwrap();
        assert_eq!(r.reserve(10), 10);
        assert_eq!(r.reserve(10), 10);
        assert_eq!(r.reserve(10), 5);
        assert_eq!(r.reserve(10), 0);
        r.release(7);
        assert_eq!(r.reserve(10), 7);
        let slow = RateLimit::per_second(0.2).unwrap();
        assert_eq!(slow.reserve(10), 1, "at least one");
        assert_eq!(slow.reserve(10), 0);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 100_001.0, 1e-20, 0.000_999, f64::MIN_POSITIVE] {
            let e = RateLimit::per_second(bad).unwrap_err().to_string();
            assert!(e.contains("rate"), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_rate_is_accepted_in_range_or_refused_naming_it(rate in proptest::num::f64::ANY) {
            match RateLimit::per_second(rate) {
                Ok(r) => {
                    proptest::prop_assert!((MIN_RATE..=MAX_RATE).contains(&r.rate()));
                    proptest::prop_assert!(r.period <= Duration::from_secs(1000) && !r.period.is_zero());
                    proptest::prop_assert!((1..=MAX_RATE as usize).contains(&r.reserve(usize::MAX)));
                }
                Err(e) => proptest::prop_assert!(e.to_string().contains("rate")),
            }
        }
    }

    #[tokio::test]
    async fn starts_are_spaced_by_the_period() {
        let r = RateLimit::per_second(100.0).unwrap();
        let mut at = Vec::new();
        for _ in 0..20 {
            r.start().await;
            at.push(std::time::Instant::now());
        }
        // 20 starts at 10 ms spacing: the first and the last at least 190 ms apart
        assert!(at[19] - at[0] >= Duration::from_millis(185), "{:?}", at[19] - at[0]);
    }
}
