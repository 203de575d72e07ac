//! The circuit breaker: a state machine over the outcomes of messages, with the clock passed in.
//!
//! It owns when a consumer should stop receiving because its downstream is down, and when to
//! try again: **closed** (normal; outcomes go into a window), **open** (no receive at all; a
//! probe is due after an interval that doubles with each failed probe, 1 s → 30 s by default),
//! **half-open** (one probe at a time: one message, or a health check; a few successes in a row
//! close it, one retryable failure opens it again), and after closing a slow start (a
//! concurrency cap that starts at 1 and doubles with each round of successes). It does not
//! receive, run, time or release anything: the poller feeds it outcomes ([`Signal`]) and the
//! time, and carries out what its state says.
//!
//! Only retryable failures count ([`Signal::Failure`]: an HTTP 5xx / 429 / timeout /
//! connection error, a retryable exit, [`HandlerError::retryable`](crate::HandlerError)); a
//! permanent failure or an undecodable body is [`Signal::Neutral`] and never trips it. It opens
//! when the last [`BreakerConfig::window`] outcomes hold at least
//! [`BreakerConfig::threshold`] retryable failures (16 of 20 by default). On a fair queue
//! (outcomes that name a tenant) the failures must also come from more than one tenant, unless
//! only one tenant is in the window: one tenant whose messages fail cannot stop the others.
//!
//! Why 16 of 20: with a 10 % random failure rate the chance that 16 or more of 20 outcomes fail
//! is 3.3 × 10⁻¹³; checked after every outcome at 1,000 messages a second, that is once in about
//! a hundred years (20 %: about once a day; a real outage, where nearly every call fails,
//! trips it at its 16th failure).
//!
//! An outage longer than [`BreakerConfig::max_outage`] (24 h by default) ends the breaker's
//! protection: it closes, and does not open again until a message succeeds, so that messages
//! follow the normal rules (retries, then the dead-letter queue) instead of waiting for ever.
//!
//! # Example
//! ```
//! use std::time::{Duration, Instant};
//! use sqskit::flow::{Breaker, BreakerConfig, BreakerState, Signal};
//! let mut b = Breaker::new(BreakerConfig::default());
//! let t0 = Instant::now();
//! for _ in 0..16 {
//!     b.record(t0, Signal::Failure { error: "HTTP 503" }, None);
//! }
//! assert_eq!(b.state(), BreakerState::Open);
//! // a second later the first probe is due: one message (or a health check) at a time
//! assert!(b.poll(t0 + Duration::from_secs(1)).is_some());
//! assert_eq!(b.state(), BreakerState::HalfOpen);
//! for _ in 0..3 {
//!     assert!(b.try_probe());
//!     b.probe_result(t0 + Duration::from_secs(2), Signal::Success);
//! }
//! assert_eq!(b.state(), BreakerState::Closed);
//! assert_eq!(b.ramp(), Some(1)); // slow start: one message at a time, doubling
//! ```

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::env::{env_count, env_secs, env_switch, ConfigError};

/// Circuit breaker settings: `BreakerConfig::default()` and the `with_*` setters, or
/// [`BreakerConfig::from_env`].
///
/// # Example
/// ```
/// use std::time::Duration;
/// let c = sqskit::flow::BreakerConfig::default().with_window(40).with_failure_rate(75);
/// assert_eq!(c.threshold(), 30);
/// assert!(c.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Outcomes looked at (the last ones): 2–1000, default 20.
    pub window: usize,
    /// Percentage of the window that must be retryable failures to open it: 1–100, default 80.
    pub failure_rate: u8,
    /// Time before the first probe after opening: 1 s by default (0.1 s – 1 h).
    pub probe_interval: Duration,
    /// Longest time between probes (each failed probe doubles the interval up to it): 30 s by
    /// default (at least `probe_interval`, at most 1 h).
    pub probe_max: Duration,
    /// Successful probes in a row that close it: 1–100, default 3.
    pub close_after: usize,
    /// Longest outage the breaker holds messages back for: 24 h by default (1 s – 14 days,
    /// SQS's longest retention). After it, it closes and messages follow the normal rules.
    pub max_outage: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 20,
            failure_rate: 80,
            probe_interval: Duration::from_secs(1),
            probe_max: Duration::from_secs(30),
            close_after: 3,
            max_outage: Duration::from_secs(24 * 3600),
        }
    }
}

/// The environment variables of [`BreakerConfig::from_env`].
pub mod env_names {
    /// `on` / `off` (also `true` / `false`, `1` / `0`, `yes` / `no`); default on.
    pub const SWITCH: &str = "SQSKIT_BREAKER";
    /// [`BreakerConfig::window`](super::BreakerConfig::window).
    pub const WINDOW: &str = "SQSKIT_BREAKER_WINDOW";
    /// [`BreakerConfig::failure_rate`](super::BreakerConfig::failure_rate), percent.
    pub const FAILURE_RATE: &str = "SQSKIT_BREAKER_FAILURE_RATE";
    /// [`BreakerConfig::probe_interval`](super::BreakerConfig::probe_interval), seconds.
    pub const PROBE_INTERVAL: &str = "SQSKIT_BREAKER_PROBE_INTERVAL";
    /// [`BreakerConfig::probe_max`](super::BreakerConfig::probe_max), seconds.
    pub const PROBE_MAX: &str = "SQSKIT_BREAKER_PROBE_MAX";
    /// [`BreakerConfig::close_after`](super::BreakerConfig::close_after).
    pub const CLOSE_AFTER: &str = "SQSKIT_BREAKER_CLOSE_AFTER";
    /// [`BreakerConfig::max_outage`](super::BreakerConfig::max_outage), seconds.
    pub const MAX_OUTAGE: &str = "SQSKIT_BREAKER_MAX_OUTAGE";
}

/// SQS keeps a message 14 days at most: no outage needs holding longer.
const LONGEST_OUTAGE: Duration = Duration::from_secs(14 * 86_400);

impl BreakerConfig {
    /// Retryable failures in the window that open it: `ceil(window × failure_rate / 100)`.
    pub fn threshold(&self) -> usize {
        (self.window.saturating_mul(usize::from(self.failure_rate))).div_ceil(100).max(1)
    }
    /// Outcomes looked at.
    pub fn with_window(mut self, n: usize) -> Self {
        self.window = n;
        self
    }
    /// Percentage of retryable failures that opens it.
    pub fn with_failure_rate(mut self, percent: u8) -> Self {
        self.failure_rate = percent;
        self
    }
    /// First probe interval, and the longest.
    pub fn with_probe_intervals(mut self, first: Duration, max: Duration) -> Self {
        self.probe_interval = first;
        self.probe_max = max;
        self
    }
    /// Successful probes in a row that close it.
    pub fn with_close_after(mut self, n: usize) -> Self {
        self.close_after = n;
        self
    }
    /// Longest outage messages are held back for.
    pub fn with_max_outage(mut self, d: Duration) -> Self {
        self.max_outage = d;
        self
    }

    /// Check the ranges, naming the setting at fault.
    ///
    /// # Errors
    /// [`crate::Error::Limit`] / [`crate::Error::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), crate::Error> {
        use crate::limits::check_range;
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        check_range("breaker window", count(self.window), 2, 1000u64)?;
        check_range("breaker failure_rate", u64::from(self.failure_rate), 1, 100u64)?;
        check_range("breaker probe_interval (ms)", millis(self.probe_interval), 100, 3_600_000u64)?;
        check_range("breaker probe_max (ms)", millis(self.probe_max), millis(self.probe_interval), 3_600_000u64)?;
        check_range("breaker close_after", count(self.close_after), 1, 100u64)?;
        check_range("breaker max_outage", self.max_outage.as_secs(), 1, LONGEST_OUTAGE.as_secs())?;
        Ok(())
    }

    /// The breaker from `SQSKIT_BREAKER` (`off` turns it off: `None`) and
    /// `SQSKIT_BREAKER_WINDOW`, `_FAILURE_RATE`, `_PROBE_INTERVAL`, `_PROBE_MAX`,
    /// `_CLOSE_AFTER`, `_MAX_OUTAGE` (seconds for the times); unset ones keep the defaults.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable that is not a number or is out of range.
    ///
    /// # Example
    /// ```
    /// let c = sqskit::flow::BreakerConfig::from_env().unwrap();
    /// assert_eq!(c, Some(sqskit::flow::BreakerConfig::default())); // nothing set here
    /// ```
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        use env_names as n;
        if !env_switch(n::SWITCH, true)? {
            return Ok(None);
        }
        let d = Self::default();
        let ranged = |name: &'static str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(value)
            } else {
                Err(ConfigError { name, value: value.to_string(), reason: format!("expected {min} to {max}") })
            }
        };
        let window = ranged(n::WINDOW, env_count(n::WINDOW, d.window as u64)?, 2, 1000)?;
        let rate = ranged(n::FAILURE_RATE, env_count(n::FAILURE_RATE, u64::from(d.failure_rate))?, 1, 100)?;
        let first = ranged(n::PROBE_INTERVAL, env_secs(n::PROBE_INTERVAL, d.probe_interval.as_secs())?, 1, 3600)?;
        let max = ranged(n::PROBE_MAX, env_secs(n::PROBE_MAX, d.probe_max.as_secs())?, first, 3600)?;
        let close = ranged(n::CLOSE_AFTER, env_count(n::CLOSE_AFTER, d.close_after as u64)?, 1, 100)?;
        let outage =
            ranged(n::MAX_OUTAGE, env_secs(n::MAX_OUTAGE, d.max_outage.as_secs())?, 1, LONGEST_OUTAGE.as_secs())?;
        Ok(Some(Self {
            window: window as usize,
            failure_rate: rate as u8,
            probe_interval: Duration::from_secs(first),
            probe_max: Duration::from_secs(max),
            close_after: close as usize,
            max_outage: Duration::from_secs(outage),
        }))
    }
}

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Normal: receive, run, count outcomes.
    Closed,
    /// The downstream is down: no receive; a probe is due later.
    Open,
    /// Probing: one message (or a health check) at a time.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

/// One outcome, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal<'a> {
    /// The handler succeeded: the downstream answered.
    Success,
    /// A retryable failure: the downstream did not answer or answered "not now".
    Failure {
        /// The error (for the log line of a transition).
        error: &'a str,
    },
    /// Anything else (a permanent failure, an undecodable body, a duplicate, a message that did
    /// not run): says nothing about the downstream.
    Neutral,
}

/// A change of state, with the reason (one log line each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state now.
    pub to: BreakerState,
    /// Why, in a sentence.
    pub reason: String,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failed: bool,
    tenant: Option<u64>,
}

/// The circuit breaker (see the module docs).
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    window: VecDeque<Entry>,
    failures: usize,
    last_error: String,
    /// When the current outage began (the breaker opened), while not closed.
    outage_since: Option<Instant>,
    next_probe: Option<Instant>,
    interval: Duration,
    probe_successes: usize,
    probing: bool,
    /// Slow start after closing: `(cap, successes at this cap)`.
    ramp: Option<(usize, usize)>,
    ceiling: usize,
    /// Closed because an outage outlasted `max_outage`: it does not open again until a success.
    given_up: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let interval = config.probe_interval;
        Self {
            window: VecDeque::with_capacity(config.window),
            config,
            state: BreakerState::Closed,
            failures: 0,
            last_error: String::new(),
            outage_since: None,
            next_probe: None,
            interval,
            probe_successes: 0,
            probing: false,
            ramp: None,
            ceiling: usize::MAX,
            given_up: false,
        }
    }

    /// End the slow start once its cap reaches `n` (the consumer's concurrency).
    pub fn with_ceiling(mut self, n: usize) -> Self {
        self.ceiling = n.max(1);
        self
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When the current outage began (the breaker opened), while it is not closed.
    pub fn outage_since(&self) -> Option<Instant> {
        self.outage_since
    }

    /// When the next probe is due (while open).
    pub fn next_probe(&self) -> Option<Instant> {
        self.next_probe.filter(|_| self.state == BreakerState::Open)
    }

    /// The concurrency cap of the slow start after closing (`None`: no cap).
    pub fn ramp(&self) -> Option<usize> {
        self.ramp.map(|(cap, _)| cap)
    }

    /// Whether an outage outlasted `max_outage` and the breaker stands aside until a success.
    pub fn given_up(&self) -> bool {
        self.given_up
    }

    /// Retryable failures among the outcomes in the window now.
    pub fn failures_in_window(&self) -> (usize, usize) {
        (self.failures, self.window.len())
    }

    /// Count the outcome of a message that was not a probe; `tenant` is its tenant on a fair
    /// queue (its `MessageGroupId`), `None` elsewhere. While closed it goes into the window and
    /// may open the breaker; while open or half-open it is ignored (messages that were running
    /// when it opened say nothing new).
    pub fn record(&mut self, now: Instant, signal: Signal<'_>, tenant: Option<&str>) -> Option<Transition> {
        if self.state != BreakerState::Closed {
            return None;
        }
        let entry = match signal {
            Signal::Neutral => return None,
            Signal::Success => {
                if self.given_up {
                    // the downstream answers again: count afresh
                    self.given_up = false;
                    self.window.clear();
                    self.failures = 0;
                }
                if let Some((cap, done)) = &mut self.ramp {
                    *done += 1;
                    if *done >= *cap {
                        *cap = cap.saturating_mul(2);
                        *done = 0;
                    }
                    if *cap >= self.ceiling {
                        self.ramp = None;
                    }
                }
                Entry { failed: false, tenant: tenant.map(hash) }
            }
            Signal::Failure { error } => {
                error.clone_into(&mut self.last_error);
                Entry { failed: true, tenant: tenant.map(hash) }
            }
        };
        if self.window.len() == self.config.window {
            if let Some(old) = self.window.pop_front() {
                self.failures -= usize::from(old.failed);
            }
        }
        self.failures += usize::from(entry.failed);
        self.window.push_back(entry);
        // only a failure can open it
        if !entry.failed || self.given_up || self.failures < self.config.threshold() || !self.several_tenants_fail() {
            return None;
        }
        let reason = format!(
            "{} of the last {} outcomes were retryable failures (last: {})",
            self.failures,
            self.window.len(),
            self.last_error
        );
        self.outage_since = Some(now);
        Some(self.open(now, self.config.probe_interval, reason))
    }

    /// Whether the failures in the window come from more than one tenant, or the window holds
    /// only one tenant (or none: not a fair queue).
    fn several_tenants_fail(&self) -> bool {
        let mut first: Option<Option<u64>> = None;
        let mut failing: Option<Option<u64>> = None;
        let mut one_tenant = true;
        for e in &self.window {
            match first {
                None => first = Some(e.tenant),
                Some(t) if t != e.tenant => one_tenant = false,
                Some(_) => {}
            }
            if e.failed {
                match failing {
                    None => failing = Some(e.tenant),
                    Some(t) if t != e.tenant => return true,
                    Some(_) => {}
                }
            }
        }
        one_tenant
    }

    fn open(&mut self, now: Instant, interval: Duration, reason: String) -> Transition {
        let from = self.state;
        self.state = BreakerState::Open;
        self.interval = interval;
        self.next_probe = Some(now + interval);
        self.probing = false;
        self.probe_successes = 0;
        self.ramp = None;
        self.window.clear();
        self.failures = 0;
        Transition { from, to: BreakerState::Open, reason }
    }

    /// Move on with time: open → half-open when the probe is due; an outage longer than
    /// `max_outage` closes it (then it stands aside until a message succeeds).
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        let since = self.outage_since?;
        if self.state == BreakerState::Closed {
            return None;
        }
        if now.saturating_duration_since(since) >= self.config.max_outage {
            let from = self.state;
            self.close();
            self.ramp = None;
            self.given_up = true;
            return Some(Transition {
                from,
                to: BreakerState::Closed,
                reason: format!(
                    "the outage outlasted the longest one held back ({:?}): messages follow the normal rules \
                     (retries, then the dead-letter queue) until one succeeds",
                    self.config.max_outage
                ),
            });
        }
        match (self.state, self.next_probe) {
            (BreakerState::Open, Some(due)) if now >= due => {
                self.state = BreakerState::HalfOpen;
                self.probe_successes = 0;
                self.probing = false;
                Some(Transition {
                    from: BreakerState::Open,
                    to: BreakerState::HalfOpen,
                    reason: format!("probing after {:?}", self.interval),
                })
            }
            _ => None,
        }
    }

    /// Take the probe (half-open, none under way): `true` when the caller may start one.
    pub fn try_probe(&mut self) -> bool {
        if self.state == BreakerState::HalfOpen && !self.probing {
            self.probing = true;
            return true;
        }
        false
    }

    /// Give the probe back without a result (a receive that found no message).
    pub fn cancel_probe(&mut self) {
        self.probing = false;
    }

    /// The result of a probe: enough successes in a row close the breaker (with a slow start),
    /// a retryable failure opens it again with twice the interval (up to `probe_max`), a
    /// neutral outcome lets the next probe go.
    pub fn probe_result(&mut self, now: Instant, signal: Signal<'_>) -> Option<Transition> {
        if self.state != BreakerState::HalfOpen {
            return None;
        }
        self.probing = false;
        match signal {
            Signal::Neutral => None,
            Signal::Failure { error, .. } => {
                let interval = self.interval.saturating_mul(2).min(self.config.probe_max);
                let reason = format!("probe failed ({error}); next probe in {interval:?}");
                Some(self.open(now, interval, reason))
            }
            Signal::Success => {
                self.probe_successes += 1;
                if self.probe_successes < self.config.close_after {
                    return None;
                }
                let lasted = self.outage_since.map(|s| now.saturating_duration_since(s)).unwrap_or_default();
                self.close();
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Closed,
                    reason: format!(
                        "{} probes in a row succeeded after an outage of {:.1} s; ramping concurrency up from 1",
                        self.config.close_after,
                        lasted.as_secs_f64()
                    ),
                })
            }
        }
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.outage_since = None;
        self.next_probe = None;
        self.probing = false;
        self.interval = self.config.probe_interval;
        self.window.clear();
        self.failures = 0;
        self.ramp = (self.ceiling > 1).then_some((1, 0));
    }
}

fn hash(tenant: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tenant.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: Signal<'static> = Signal::Failure { error: "HTTP 503" };

    #[test]
    fn opens_at_the_threshold_and_not_before() {
        let t = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        for _ in 0..15 {
            assert!(b.record(t, FAIL, None).is_none());
        }
        let tr = b.record(t, FAIL, None).expect("the 16th failure opens it");
        assert_eq!((tr.from, tr.to), (BreakerState::Closed, BreakerState::Open));
        assert!(tr.reason.contains("16 of the last 16") && tr.reason.contains("HTTP 503"), "{}", tr.reason);
        assert_eq!(b.next_probe(), Some(t + Duration::from_secs(1)));
        // outcomes of messages still running when it opened change nothing
        assert!(b.record(t, Signal::Success, None).is_none());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn permanent_failures_and_other_neutral_outcomes_never_open_it() {
        let t = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        for _ in 0..1000 {
            assert!(b.record(t, Signal::Neutral, None).is_none());
        }
        assert_eq!(b.failures_in_window(), (0, 0));
    }

    #[test]
    fn a_ten_percent_random_failure_rate_never_opens_it() {
        // two million outcomes, 10 % retryable failures at random (a fixed seed)
        let mut rng = fastrand::Rng::with_seed(23);
        let t = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        let mut most = 0;
        for _ in 0..2_000_000 {
            let s = if rng.f64() < 0.10 { FAIL } else { Signal::Success };
            assert!(b.record(t, s, None).is_none(), "opened at 10 % failures");
            most = most.max(b.failures_in_window().0);
        }
        assert!(most < 16, "most failures in a window: {most}");
        // 50 %: each window position has a 0.6 % chance of 16+ failures: it does open
        let mut b = Breaker::new(BreakerConfig::default());
        let opened = (0..200_000).any(|_| b.record(t, if rng.bool() { FAIL } else { Signal::Success }, None).is_some());
        assert!(opened, "at 50 % failures the breaker opens sooner or later");
    }

    #[test]
    fn one_failing_tenant_of_a_fair_queue_does_not_stop_the_others() {
        let t = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        for i in 0..200 {
            // acme fails every time, globex (1 in 5) is served fine
            let (s, tenant) = if i % 5 == 0 { (Signal::Success, "globex") } else { (FAIL, "acme") };
            assert!(b.record(t, s, Some(tenant)).is_none(), "one tenant's failures opened it at {i}");
        }
        // the same share of failures spread over two tenants: the downstream is down
        let opened = (0..40).any(|i| b.record(t, FAIL, Some(if i % 2 == 0 { "acme" } else { "globex" })).is_some());
        assert!(opened);
        // only one tenant in the window at all: its failures open it
        let mut b = Breaker::new(BreakerConfig::default());
        assert!((0..16).any(|_| b.record(t, FAIL, Some("acme")).is_some()));
    }

    #[test]
    fn probes_back_off_then_close_with_a_slow_start() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default()).with_ceiling(32);
        (0..16).for_each(|_| {
            b.record(t0, FAIL, None);
        });
        assert!(b.poll(t0 + Duration::from_millis(999)).is_none(), "not before the interval");
        assert!(!b.try_probe(), "no probe while open");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let due = b.next_probe().unwrap();
            waits.push(due.duration_since(now).as_secs());
            now = due;
            assert_eq!(b.poll(now).map(|t| t.to), Some(BreakerState::HalfOpen));
            assert!(b.try_probe());
            assert!(!b.try_probe(), "one probe at a time");
            b.probe_result(now, FAIL).expect("a failed probe opens it again");
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30], "1 s doubling up to 30 s");
        now = b.next_probe().unwrap();
        b.poll(now);
        // a neutral probe (a poison message) lets the next one go; a receive that found
        // nothing gives the probe back
        assert!(b.try_probe());
        assert!(b.probe_result(now, Signal::Neutral).is_none());
        assert!(b.try_probe());
        b.cancel_probe();
        for i in 0..3 {
            assert!(b.try_probe());
            let tr = b.probe_result(now, Signal::Success);
            assert_eq!(tr.is_some(), i == 2, "closes on the third success");
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.outage_since(), None);
        // slow start: the cap doubles after as many successes as it allows, up to the ceiling
        let mut caps = vec![b.ramp().unwrap()];
        while let Some(cap) = b.ramp() {
            b.record(now, Signal::Success, None);
            if b.ramp() != Some(cap) {
                caps.push(b.ramp().unwrap_or(usize::MAX));
            }
        }
        assert_eq!(caps, [1, 2, 4, 8, 16, usize::MAX]);
        // and the next outage starts from the first interval again
        (0..16).for_each(|_| {
            b.record(now, FAIL, None);
        });
        assert_eq!(b.next_probe(), Some(now + Duration::from_secs(1)));
    }

    #[test]
    fn an_outage_longer_than_max_outage_closes_it_until_a_success() {
        let t0 = Instant::now();
        let config = BreakerConfig::default().with_max_outage(Duration::from_secs(60));
        let mut b = Breaker::new(config);
        (0..16).for_each(|_| {
            b.record(t0, FAIL, None);
        });
        let mut now = t0;
        while b.state() != BreakerState::Closed {
            now += Duration::from_secs(1);
            if b.poll(now).is_some() && b.try_probe() {
                b.probe_result(now, FAIL);
            }
        }
        assert!(now - t0 >= Duration::from_secs(60) && now - t0 <= Duration::from_secs(61));
        assert!(b.given_up());
        // failures no longer open it: the normal rules apply
        for _ in 0..100 {
            assert!(b.record(now, FAIL, None).is_none());
        }
        // until the downstream answers again
        b.record(now, Signal::Success, None);
        assert!(!b.given_up());
        assert!((0..20).any(|_| b.record(now, FAIL, None).is_some()));
    }

    #[test]
    fn settings_are_range_checked_with_their_names() {
        assert!(BreakerConfig::default().validate().is_ok());
        let e = BreakerConfig::default().with_window(1).validate().unwrap_err();
        assert!(e.to_string().contains("breaker window"), "{e}");
        let e = BreakerConfig::default().with_failure_rate(0).validate().unwrap_err();
        assert!(e.to_string().contains("failure_rate"), "{e}");
        let e = BreakerConfig::default()
            .with_probe_intervals(Duration::from_secs(10), Duration::from_secs(5))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("probe_max"), "{e}");
        let e = BreakerConfig::default().with_max_outage(Duration::from_secs(15 * 86_400)).validate().unwrap_err();
        assert!(e.to_string().contains("max_outage"), "{e}");
        assert_eq!(BreakerConfig::default().with_window(3).with_failure_rate(1).threshold(), 1);
        assert_eq!(BreakerConfig::default().with_window(1000).with_failure_rate(100).threshold(), 1000);
    }
}
