//! The adaptive concurrency limit: how many handlers may run at once, found from the handlers'
//! latency and retryable failures, with the clock passed in.
//!
//! It owns the policy, after TCP Vegas as Netflix's concurrency-limits applies it to services:
//! a downstream with room for `K` requests at once answers in its unloaded time up to `K`, and
//! beyond that requests queue in it and latency grows with the excess. So the limit grows while
//! the latency stays near the unloaded one and shrinks in proportion when it rises:
//!
//! - Samples are taken in windows of at least `max(limit, 16)` handler runs (4 while starting), each window's
//!   **median** latency compared with the **baseline**, the unloaded latency (the median is
//!   robust to the odd message that takes a fast path, which a minimum is not).
//! - Ratio below 1.1 and the limit in use (at least half of it running): grow, doubling while
//!   starting (slow start), by a tenth afterwards. Above 1.3: shrink to aim at 1.2
//!   (`limit × 1.2 / ratio`, at most halving), then hold for three windows. In between: hold.
//! - A quarter or more of a window failing retryably (503, 429, timeouts: the downstream
//!   shedding load) shrinks it by a quarter; a 10 % random failure rate does not.
//! - The baseline follows lower window medians a fifth of the way (one window of fast messages
//!   does not set it), is taken as it is at the floor (nothing of ours queues there), and is
//!   measured again every 10 s by halving the limit for one window (a downstream that got
//!   slower for good is not mistaken for a loaded one for ever; the cost is about 1 % of
//!   throughput).
//! - Samples from handlers started before the last change are left out: each window measures
//!   the limit it is about.
//!
//! It never goes below [`AdaptiveConfig::min`] or above [`AdaptiveConfig::max`], and starts at
//! the minimum. It does not run anything: the poller feeds it one [`Sample`] per handler run
//! and resizes its pool of handler slots to [`AdaptiveLimit::limit`].
//!
//! # Example
//! ```
//! use std::time::{Duration, Instant};
//! use sqskit::flow::{AdaptiveConfig, AdaptiveLimit, Sample};
//! let mut limit = AdaptiveLimit::new(AdaptiveConfig::default().with_range(1, 64));
//! assert_eq!(limit.limit(), 1);
//! let mut now = Instant::now();
//! // a downstream that answers in 20 ms whatever the load: the limit doubles each window
//! for _ in 0..40 {
//!     let n = limit.limit();
//!     for _ in 0..n.max(16) {
//!         let s = Sample { started: now, latency: Duration::from_millis(20), dropped: false, in_flight: n };
//!         limit.on_sample(now + Duration::from_millis(20), s);
//!     }
//!     now += Duration::from_millis(20);
//! }
//! assert_eq!(limit.limit(), 64);
//! ```

use std::time::{Duration, Instant};

/// The range of an adaptive limit.
///
/// # Example
/// ```
/// let c = sqskit::flow::AdaptiveConfig::default().with_range(2, 200);
/// assert!(c.validate().is_ok());
/// assert!(sqskit::flow::AdaptiveConfig::default().with_range(5, 4).validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdaptiveConfig {
    /// The floor (≥ 1); the limit starts here.
    pub min: usize,
    /// The ceiling (the poller's pool of handler slots).
    pub max: usize,
}

impl Default for AdaptiveConfig {
    /// 1 to 100.
    fn default() -> Self {
        Self { min: 1, max: 100 }
    }
}

impl AdaptiveConfig {
    /// Set the floor and the ceiling.
    pub fn with_range(mut self, min: usize, max: usize) -> Self {
        self.min = min;
        self.max = max;
        self
    }
    /// Check `1 ≤ min ≤ max ≤ 100000`, naming the setting.
    ///
    /// # Errors
    /// [`crate::Error::Limit`] naming `min_concurrency` or `max_concurrency`.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        crate::limits::check_range("max_concurrency", count(self.max), 1, 100_000u64)?;
        crate::limits::check_range("min_concurrency", count(self.min), 1, count(self.max))?;
        Ok(())
    }
}

/// One handler run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the handler started.
    pub started: Instant,
    /// How long it ran.
    pub latency: Duration,
    /// Whether it failed retryably (the downstream shed it or did not answer): no latency sample.
    pub dropped: bool,
    /// Handlers running when it finished (itself included).
    pub in_flight: usize,
}

/// Fewest samples in a window; while starting (slow start), fewer: the limit doubles each
/// window, and from a floor of 1 sixteen samples a window would take sixteen round trips.
const MIN_WINDOW: usize = 16;
const MIN_WINDOW_STARTING: usize = 4;
/// Windows the limit holds after shrinking before it may grow again.
const HOLD: u8 = 3;
/// Below this latency ratio the limit grows; above [`HIGH`] it shrinks towards [`TARGET`].
const LOW: f64 = 1.1;
const HIGH: f64 = 1.3;
const TARGET: f64 = 1.2;
/// The share of retryable failures in a window that means the downstream sheds load.
const SHEDDING: f64 = 0.25;
/// How often the baseline is measured again.
const REPROBE: Duration = Duration::from_secs(10);

/// The adaptive limit (see the module docs).
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    config: AdaptiveConfig,
    limit: f64,
    baseline: Option<Duration>,
    latencies: Vec<Duration>,
    drops: usize,
    busiest: usize,
    /// Samples of handlers started before this are left out.
    changed_at: Option<Instant>,
    slow_start: bool,
    hold: u8,
    /// While the baseline is measured again: the limit to go back to.
    probing: Option<f64>,
    last_probe: Option<Instant>,
}

impl AdaptiveLimit {
    /// A limit at `config.min`.
    pub fn new(config: AdaptiveConfig) -> Self {
        let config = AdaptiveConfig { min: config.min.max(1), max: config.max.max(config.min.max(1)) };
        Self {
            limit: config.min as f64,
            config,
            baseline: None,
            latencies: Vec::new(),
            drops: 0,
            busiest: 0,
            changed_at: None,
            slow_start: true,
            hold: 0,
            probing: None,
            last_probe: None,
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        (self.limit.round() as usize).clamp(self.config.min, self.config.max)
    }

    /// The unloaded latency it measured (`None` before the first window).
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline
    }

    /// Take one handler run into account at `now`; the new limit when it changed.
    pub fn on_sample(&mut self, now: Instant, sample: Sample) -> Option<usize> {
        if self.changed_at.is_some_and(|c| sample.started < c) {
            return None;
        }
        if sample.dropped {
            self.drops += 1;
        } else {
            self.latencies.push(sample.latency);
        }
        self.busiest = self.busiest.max(sample.in_flight);
        let n = self.drops + self.latencies.len();
        let least = if self.slow_start { MIN_WINDOW_STARTING } else { MIN_WINDOW };
        if n < least.max(self.limit.ceil() as usize) {
            return None;
        }
        let before = self.limit();
        self.adjust(now, n);
        self.latencies.clear();
        self.drops = 0;
        self.busiest = 0;
        let after = self.limit();
        (after != before).then(|| {
            self.changed_at = Some(now);
            after
        })
    }

    fn adjust(&mut self, now: Instant, n: usize) {
        let (min, max) = (self.config.min as f64, self.config.max as f64);
        if self.drops as f64 >= SHEDDING * n as f64 {
            self.limit = (self.limit * 0.75).max(min);
            self.slow_start = false;
            if let Some(saved) = self.probing.take() {
                self.limit = self.limit.min(saved);
            }
            return;
        }
        let Some(median) = median(&mut self.latencies) else { return };
        if let Some(saved) = self.probing.take() {
            // the window at half the limit: its median is the unloaded latency now
            self.baseline = Some(median);
            self.limit = saved;
            self.last_probe = Some(now);
            return;
        }
        let baseline = match self.baseline {
            // a lower median: the downstream got faster, or a window of fast messages; follow
            // it a tenth of the way (one odd window does not set the baseline), and not at all
            // below half of it (an outlier)
            Some(b) if median < b && median * 2 >= b => b.mul_f64(0.9) + median.mul_f64(0.1),
            Some(b) => b,
            None => {
                self.last_probe = Some(now);
                median
            }
        };
        self.baseline = Some(baseline);
        let ratio = median.as_secs_f64() / baseline.as_secs_f64().max(1e-9);
        if ratio > HIGH && self.limit <= min {
            // at the floor nothing of ours queues: this is the unloaded latency now
            self.baseline = Some(median);
            self.slow_start = true;
        } else if ratio > HIGH {
            self.limit = (self.limit * (TARGET / ratio).clamp(0.5, 0.95)).max(min);
            self.slow_start = false;
            self.hold = HOLD;
        } else if self.hold > 0 {
            self.hold -= 1;
        } else if ratio < LOW && self.busiest as f64 >= self.limit / 2.0 {
            let grown = if self.slow_start { self.limit * 2.0 } else { self.limit + (self.limit * 0.1).max(1.0) };
            self.limit = grown.min(max);
        }
        if self.last_probe.is_some_and(|t| now.saturating_duration_since(t) >= REPROBE) {
            self.probing = Some(self.limit);
            self.limit = (self.limit / 2.0).max(min);
        }
    }
}

fn median(v: &mut [Duration]) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let mid = v.len() / 2;
    Some(*v.select_nth_unstable(mid).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A downstream with room for `capacity` requests at once taking `unloaded` each: beyond
    /// that they queue (latency grows with the excess), beyond twice that it answers 503.
    struct Downstream {
        capacity: usize,
        unloaded: Duration,
        /// Retryable failures at random, whatever the load.
        random_failures: f64,
        /// Share of requests that take a fast path (a hundredth of the time).
        fast: f64,
    }

    /// Run `rounds` rounds of `limit` concurrent requests; (throughput / the best possible,
    /// mean latency / unloaded) over the second half, and the final limit.
    fn simulate(d: &Downstream, max: usize, rounds: usize, seed: u64) -> (f64, f64, usize) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut a = AdaptiveLimit::new(AdaptiveConfig::default().with_range(1, max));
        let mut now = Instant::now();
        let (mut done, mut elapsed, mut latency_sum) = (0usize, Duration::ZERO, 0.0);
        for round in 0..rounds {
            let c = a.limit();
            let load = (c as f64 / d.capacity as f64).max(1.0);
            let shed = c.saturating_sub(2 * d.capacity);
            let took = d.unloaded.mul_f64(load);
            let mut ok = 0;
            for i in 0..c {
                let noise = 0.95 + rng.f64() * 0.1;
                let dropped = i < shed || rng.f64() < d.random_failures;
                let latency = if rng.f64() < d.fast { took / 100 } else { took.mul_f64(noise) };
                ok += usize::from(!dropped);
                if !dropped && round >= rounds / 2 {
                    latency_sum += latency.as_secs_f64();
                }
                a.on_sample(now + took, Sample { started: now, latency, dropped, in_flight: c });
            }
            now += took;
            if round >= rounds / 2 {
                done += ok;
                elapsed += took;
            }
        }
        let best = d.capacity as f64 / d.unloaded.as_secs_f64() * (1.0 - d.random_failures);
        let throughput = done as f64 / elapsed.as_secs_f64();
        (throughput / best, latency_sum / done.max(1) as f64 / d.unloaded.as_secs_f64(), a.limit())
    }

    #[test]
    fn finds_the_capacity_of_downstreams_of_every_size() {
        for (capacity, ms) in [(1, 20), (4, 5), (16, 50), (50, 20), (200, 10)] {
            let d = Downstream { capacity, unloaded: Duration::from_millis(ms), random_failures: 0.0, fast: 0.0 };
            let (throughput, latency, limit) = simulate(&d, 1000, 3000, capacity as u64);
            assert!(throughput >= 0.9, "K={capacity}: throughput {throughput:.2} of the best (limit {limit})");
            assert!(latency <= 1.5, "K={capacity}: latency {latency:.2} × unloaded (limit {limit})");
        }
    }

    #[test]
    fn a_ten_percent_random_failure_rate_does_not_collapse_it() {
        let d = Downstream { capacity: 32, unloaded: Duration::from_millis(20), random_failures: 0.1, fast: 0.0 };
        let (throughput, latency, limit) = simulate(&d, 1000, 3000, 7);
        assert!(throughput >= 0.9 && latency <= 1.5, "{throughput:.2} {latency:.2} limit {limit}");
    }

    #[test]
    fn messages_that_take_a_fast_path_do_not_fool_the_baseline() {
        // 30 % of the messages never reach the downstream (e.g. already done): a minimum would
        // take their latency for the unloaded one and sink the limit to the floor
        let d = Downstream { capacity: 32, unloaded: Duration::from_millis(20), random_failures: 0.0, fast: 0.3 };
        let (throughput, _, limit) = simulate(&d, 1000, 3000, 9);
        assert!(throughput >= 0.9, "{throughput:.2}, limit {limit}");
    }

    #[test]
    fn stays_within_its_range_and_shrinks_when_the_downstream_sheds_load() {
        let d = Downstream { capacity: 50, unloaded: Duration::from_millis(10), random_failures: 0.0, fast: 0.0 };
        let (_, _, limit) = simulate(&d, 8, 500, 1);
        assert_eq!(limit, 8, "capped by the maximum");
        // everything fails: down to the floor
        let mut a = AdaptiveLimit::new(AdaptiveConfig::default().with_range(3, 100));
        let now = Instant::now();
        for i in 0..2000u64 {
            let at = now + Duration::from_millis(i);
            let s = Sample { started: at, latency: Duration::from_millis(5), dropped: i > 200, in_flight: 50 };
            a.on_sample(at, s);
        }
        assert_eq!(a.limit(), 3);
    }

    #[test]
    fn a_downstream_that_gets_slower_for_good_is_measured_again() {
        let mut a = AdaptiveLimit::new(AdaptiveConfig::default().with_range(1, 1000));
        let mut now = Instant::now();
        let run = |a: &mut AdaptiveLimit, now: &mut Instant, unloaded: Duration, capacity: usize, rounds| {
            for _ in 0..rounds {
                let c = a.limit();
                let took = unloaded.mul_f64((c as f64 / capacity as f64).max(1.0));
                for _ in 0..c {
                    a.on_sample(*now + took, Sample { started: *now, latency: took, dropped: false, in_flight: c });
                }
                *now += took;
            }
        };
        run(&mut a, &mut now, Duration::from_millis(10), 40, 2000);
        let before = a.limit();
        assert!((40..=56).contains(&before), "{before}");
        // the same capacity, every request now twice as slow: without measuring the baseline
        // again the limit would sink to the floor
        run(&mut a, &mut now, Duration::from_millis(20), 40, 3000);
        assert!((40..=56).contains(&a.limit()), "{} (baseline {:?})", a.limit(), a.baseline());
        assert!(a.baseline().unwrap() >= Duration::from_millis(19));
    }
}
