//! Exponential backoff with full jitter, computed from a message's receive count.
//!
//! Used by the processor to choose the visibility timeout of a retryable
//! failure: `delay = random(0 ..= min(max, base × factor^(receive_count − 1)))`,
//! never beyond the 12-hour SQS visibility limit.

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
/// assert!(b.delay(3) <= Duration::from_secs(8));
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
        Self { base: Duration::from_secs(2), factor: 2.0, max: Duration::from_secs(900) }
    }
}

impl Backoff {
    /// The upper bound of the delay after `receive_count` receives (whole seconds).
    pub fn ceiling(&self, receive_count: u32) -> Duration {
        let cap = self.max.as_secs_f64().min(f64::from(MAX_VISIBILITY_SECONDS));
        let exp = receive_count.saturating_sub(1).min(1000) as i32;
        let raw = self.base.as_secs_f64() * self.factor.max(1.0).powi(exp);
        let secs = if raw.is_finite() { raw.min(cap) } else { cap };
        Duration::from_secs(secs.round() as u64)
    }

    /// A full-jitter delay: uniform in `0 ..= ceiling(receive_count)`, whole seconds.
    pub fn delay(&self, receive_count: u32) -> Duration {
        self.delay_with(receive_count, &mut fastrand::Rng::new())
    }

    /// As [`Backoff::delay`] with a given random source (for reproducible tests).
    pub fn delay_with(&self, receive_count: u32, rng: &mut fastrand::Rng) -> Duration {
        Duration::from_secs(rng.u64(0..=self.ceiling(receive_count).as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_grows_exponentially_and_stops_at_max() {
        let b = Backoff::default();
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
    fn full_jitter_spans_zero_to_ceiling() {
        let b = Backoff::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let samples: Vec<u64> = (0..2000).map(|_| b.delay_with(5, &mut rng).as_secs()).collect();
        assert!(samples.iter().all(|&s| s <= 32));
        assert!(samples.contains(&0), "full jitter reaches 0");
        assert!(samples.contains(&32), "full jitter reaches the ceiling");
        let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
        assert!((13.0..19.0).contains(&mean), "mean {mean} is near ceiling/2");
    }

    #[test]
    fn factor_below_one_is_treated_as_constant() {
        let b = Backoff { base: Duration::from_secs(5), factor: 0.5, max: Duration::from_secs(100) };
        assert_eq!(b.ceiling(10).as_secs(), 5);
    }
}
