//! Exponential backoff with "equal" jitter, computed from a message's receive count.
//!
//! Used by the processor to choose the visibility timeout of a retryable failure:
//! `ceiling = min(max, base × factor^(receive_count − 1))`, `delay = random(ceiling/2 ..= ceiling)`,
//! never beyond the 12-hour SQS visibility limit.
//!
//! The lower half is kept on purpose: with the queue's `maxReceiveCount = N`, a message gets
//! `N − 1` backoffs before its last attempt, so the retry window is guaranteed to be at least
//! half the sum of the ceilings. With the defaults (base 15 s, factor 2, max 900 s):
//!
//! | maxReceiveCount | backoffs (ceilings) | retry window |
//! |---|---|---|
//! | 3 | 15 + 30 s | 22–45 s |
//! | 5 | 15 + 30 + 60 + 120 s | 112–225 s |
//! | 10 | 15 … 900 s (9 backoffs) | 30–61 min |
//!
//! so a downstream outage of a minute or two does not dead-letter everything (full jitter
//! from 0, the previous default with base 2 s, gave maxReceiveCount 5 about 15 s).

use std::time::Duration;

use crate::limits::MAX_VISIBILITY_SECONDS;

/// Backoff settings.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use sqskit::retry::Backoff;
/// let b = Backoff { base: Duration::from_secs(2), factor: 2.0, max: Duration::from_secs(900) };
/// assert_eq!(b.ceiling(1), Duration::from_secs(2));
/// assert_eq!(b.ceiling(4), Duration::from_secs(16));
/// assert_eq!(b.ceiling(40), Duration::from_secs(900));
/// let d = b.delay(3);
/// assert!(d >= Duration::from_secs(4) && d <= Duration::from_secs(8));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay ceiling after the first receive.
    pub base: Duration,
    /// Growth per receive (≥ 1).
    pub factor: f64,
    /// Largest delay (capped at 12 h in any case).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(15), factor: 2.0, max: Duration::from_secs(900) }
    }
}

impl Backoff {
    /// Set the ceiling after the first receive.
    pub fn with_base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }
    /// Set the growth per receive (≥ 1).
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }
    /// Set the largest delay.
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }
    /// A constant delay (base = max, factor 1), e.g. for tests.
    pub fn fixed(delay: Duration) -> Self {
        Self { base: delay, factor: 1.0, max: delay }
    }

    /// The upper bound of the delay after `receive_count` receives (whole seconds).
    pub fn ceiling(&self, receive_count: u32) -> Duration {
        let cap = self.max.as_secs_f64().min(f64::from(MAX_VISIBILITY_SECONDS));
        let exp = receive_count.saturating_sub(1).min(1000) as i32;
        let raw = self.base.as_secs_f64() * self.factor.max(1.0).powi(exp);
        let secs = if raw.is_finite() { raw.min(cap) } else { cap };
        Duration::from_secs(secs.round() as u64)
    }

    /// A jittered delay: uniform in `ceiling/2 ..= ceiling` (whole seconds, rounded up).
    pub fn delay(&self, receive_count: u32) -> Duration {
        self.delay_with(receive_count, &mut fastrand::Rng::new())
    }

    /// As [`Backoff::delay`] with a given random source (for reproducible tests).
    pub fn delay_with(&self, receive_count: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = self.ceiling(receive_count).as_secs();
        Duration::from_secs(rng.u64(ceiling.div_ceil(2)..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_grows_exponentially_and_stops_at_max() {
        let b = Backoff { base: Duration::from_secs(2), ..Backoff::default() };
        let c: Vec<u64> = (1..=12).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(c, vec![2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900]);
        assert_eq!(b.ceiling(0).as_secs(), 2, "receive count 0 is treated as the first");
        assert_eq!(b.ceiling(u32::MAX).as_secs(), 900);
    }

    #[test]
    fn ceiling_never_exceeds_twelve_hours() {
        let b = Backoff { base: Duration::from_secs(60), factor: 10.0, max: Duration::from_secs(1_000_000) };
        assert_eq!(b.ceiling(50).as_secs(), u64::from(MAX_VISIBILITY_SECONDS));
    }

    #[test]
    fn jitter_spans_half_the_ceiling_to_the_ceiling() {
        let b = Backoff { base: Duration::from_secs(2), ..Backoff::default() };
        let mut rng = fastrand::Rng::with_seed(1);
        let samples: Vec<u64> = (0..2000).map(|_| b.delay_with(5, &mut rng).as_secs()).collect();
        assert!(samples.iter().all(|&s| (16..=32).contains(&s)));
        assert!(samples.contains(&16) && samples.contains(&32), "both ends are reached");
    }

    #[test]
    fn default_retry_window_survives_a_short_outage_at_max_receive_count_5() {
        // 4 backoffs before the 5th (last) attempt; the documented table
        let b = Backoff::default();
        let ceilings: u64 = (1..=4).map(|n| b.ceiling(n).as_secs()).sum();
        assert_eq!(ceilings, 225);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let window: u64 = (1..=4).map(|n| b.delay_with(n, &mut rng).as_secs()).sum();
            assert!((112..=225).contains(&window), "{window}");
        }
    }

    #[test]
    fn factor_below_one_is_treated_as_constant() {
        let b = Backoff { base: Duration::from_secs(5), factor: 0.5, max: Duration::from_secs(100) };
        assert_eq!(b.ceiling(10).as_secs(), 5);
    }
}
