//! The poller's settings: which queues, with which weights and rates ([`QueueSpec`]), and how
//! the poller runs ([`PollerConfig`]), checked against SQS's limits.
//!
//! It owns the settings and their validation (errors name the field). It does not read the
//! environment or flags (the CLI does, through clap) and does not run anything.

use std::sync::Arc;
use std::time::Duration;

use crate::client::Queue;
use crate::error::Error;
use crate::flow::{AdaptiveConfig, BreakerConfig};
use crate::health::Health;
use crate::limits::MAX_VISIBILITY_SECONDS;
use crate::rate::RateLimit;

/// A queue to poll and its weight (its share of receives relative to the other queues).
///
/// # Example
/// ```
/// # async fn demo() {
/// use sqskit::{poller::QueueSpec, Queue};
/// let high = QueueSpec::new(Queue::from_env("http://127.0.0.1:4566/queue/us-east-1/000000000000/high").await).with_weight(3);
/// assert_eq!(high.weight, 3);
/// let (url, weight) = QueueSpec::parse_url("https://sqs.eu-west-1.amazonaws.com/1/low=1").unwrap();
/// assert_eq!((url.as_str(), weight), ("https://sqs.eu-west-1.amazonaws.com/1/low", 1));
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueSpec {
    /// The queue.
    pub queue: Queue,
    /// Weight ≥ 1.
    pub weight: u32,
    /// Messages started per second from this queue at most (see [`crate::rate`]).
    pub rate: Option<f64>,
}

impl QueueSpec {
    /// `queue` with weight 1.
    pub fn new(queue: Queue) -> Self {
        Self { queue, weight: 1, rate: None }
    }
    /// Start at most `rate` messages per second from this queue (`None`: no limit).
    pub fn with_rate(mut self, rate: Option<f64>) -> Self {
        self.rate = rate;
        self
    }
    /// Set the weight (0 is taken as 1).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }
    /// Parse `URL` or `URL=WEIGHT` (the CLI's `--queue-url` form).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `queue-url` for a non-http(s) URL or a weight that is not ≥ 1.
    pub fn parse_url(s: &str) -> Result<(String, u32), Error> {
        let (url, weight) = match s.rsplit_once('=') {
            Some((url, w)) if !w.contains('/') => {
                let weight = w.trim().parse::<u32>().ok().filter(|w| *w >= 1).ok_or_else(|| Error::Invalid {
                    what: "queue-url",
                    reason: format!("weight {w:?} in {s:?} is not a whole number ≥ 1"),
                })?;
                (url, weight)
            }
            _ => (s, 1),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Invalid { what: "queue-url", reason: format!("{url:?} is not an http(s) queue URL") });
        }
        Ok((url.to_string(), weight))
    }
}

impl From<Queue> for QueueSpec {
    fn from(queue: Queue) -> Self {
        Self::new(queue)
    }
}

/// Poller settings: `PollerConfig::default()` and the `with_*` setters.
///
/// # Example
/// ```
/// use std::time::Duration;
/// let c = sqskit::poller::PollerConfig::default().with_concurrency(100).with_wait_time(Duration::from_secs(5));
/// assert!(c.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PollerConfig {
    /// Messages in flight at most (handlers running or about to).
    pub concurrency: usize,
    /// Visibility timeout requested on receive; the heartbeat extends by this much.
    pub visibility_timeout: Duration,
    /// Longest total time a message may be kept invisible by heartbeats (≤ 12 h). A handler
    /// still running when the next extension would pass it is cancelled (retryable timeout).
    pub max_visibility_extension: Duration,
    /// Long-poll wait (≤ 20 s).
    pub wait_time: Duration,
    /// Time running handlers get to finish after shutdown starts.
    pub shutdown_timeout: Duration,
    /// Longest time an ack waits to be batched with others.
    pub ack_flush_interval: Duration,
    /// Longest time a receiver waits for more free slots to ask for a fuller batch (≤ 10).
    pub receive_fill_wait: Duration,
    /// How often queue depth is read for the metrics (zero: never).
    pub depth_interval: Duration,
    /// Stop by itself once the queues are empty (nothing visible, in flight or delayed).
    pub until_empty: bool,
    /// DLQ to use for queues whose redrive policy names none.
    pub dead_letter_url: Option<String>,
    /// Added to 2 × `wait_time` to make the liveness window (see [`crate::health`]).
    pub liveness_margin: Duration,
    /// Messages received ahead of free handler slots, so that a slot that frees up starts the
    /// next message at once instead of waiting for a receive round trip. `None`: one batch
    /// (10) per receiver; `Some(0)`: off. They are in flight like any other message: counted,
    /// heart-beaten, and released at shutdown without running.
    pub prefetch: Option<usize>,
    /// Per-tenant counters for fair queues (standard queues whose messages carry a
    /// `MessageGroupId`): own labels for this many tenants, the rest as `other`; 0 = off.
    pub tenant_metrics: usize,
    /// Messages started per second by this poller at most, over all its queues (see
    /// [`crate::rate`]); each queue may have its own limit too ([`QueueSpec::with_rate`]).
    pub rate: Option<f64>,
    /// Health state to update (e.g. one a metrics server already serves); else the poller
    /// makes its own ([`Poller::health`](super::Poller::health)).
    pub health: Option<Arc<Health>>,
    /// The circuit breaker (on by default; `None`: off). See [`crate::flow::Breaker`].
    pub breaker: Option<BreakerConfig>,
    /// A health check the breaker probes with while half-open instead of one message at a time
    /// (`--probe-url` for `--http`): `true` when the downstream is healthy.
    pub probe: Option<HealthProbe>,
    /// Find the concurrency between a floor and [`PollerConfig::concurrency`] (the ceiling)
    /// from handler latency and retryable failures (`--concurrency auto`; see
    /// [`crate::flow::AdaptiveLimit`]). `None`: `concurrency` handlers at most, always.
    pub adaptive: Option<AdaptiveConfig>,
    /// How often each queue's pause flag (a queue tag, see [`crate::flow::pause`]) is read:
    /// 30 s by default, 120 `ListQueueTags` calls an hour per queue; zero: never (the flag is
    /// not honoured).
    pub pause_check: Duration,
}

/// A health check for the breaker's half-open state: `true` when the downstream is healthy.
///
/// # Example
/// ```
/// let probe = sqskit::poller::HealthProbe::new(|| async { true });
/// let c = sqskit::poller::PollerConfig::default().with_probe(Some(probe));
/// assert!(c.probe.is_some());
/// ```
#[derive(Clone)]
pub struct HealthProbe(pub(super) Arc<dyn Fn() -> futures::future::BoxFuture<'static, bool> + Send + Sync>);

impl HealthProbe {
    /// A probe from an async closure.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        Self(Arc::new(move || Box::pin(f())))
    }
}

impl std::fmt::Debug for HealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HealthProbe")
    }
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self {
            concurrency: 32,
            visibility_timeout: Duration::from_secs(30),
            max_visibility_extension: Duration::from_secs(3600),
            wait_time: Duration::from_secs(20),
            shutdown_timeout: Duration::from_secs(25),
            ack_flush_interval: Duration::from_millis(20),
            receive_fill_wait: Duration::from_millis(10),
            depth_interval: Duration::from_secs(15),
            until_empty: false,
            dead_letter_url: None,
            liveness_margin: Duration::from_secs(10),
            rate: None,
            prefetch: None,
            tenant_metrics: 0,
            health: None,
            breaker: Some(BreakerConfig::default()),
            probe: None,
            adaptive: None,
            pause_check: crate::flow::PAUSE_CHECK_INTERVAL,
        }
    }
}

impl PollerConfig {
    /// Messages in flight at most.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }
    /// Visibility timeout requested on receive (and each heartbeat's extension).
    pub fn with_visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility_timeout = d;
        self
    }
    /// Longest total invisibility since receipt (then the handler is cancelled).
    pub fn with_max_visibility_extension(mut self, d: Duration) -> Self {
        self.max_visibility_extension = d;
        self
    }
    /// Long-poll wait (≤ 20 s).
    pub fn with_wait_time(mut self, d: Duration) -> Self {
        self.wait_time = d;
        self
    }
    /// Time running handlers get after shutdown starts.
    pub fn with_shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }
    /// How often queue depth is read for the metrics (zero: never).
    pub fn with_depth_interval(mut self, d: Duration) -> Self {
        self.depth_interval = d;
        self
    }
    /// Stop by itself once the queues are empty.
    pub fn with_until_empty(mut self, on: bool) -> Self {
        self.until_empty = on;
        self
    }
    /// DLQ for queues whose redrive policy names none (refused if its type differs).
    pub fn with_dead_letter_url(mut self, url: Option<String>) -> Self {
        self.dead_letter_url = url;
        self
    }

    /// Messages received ahead of free handler slots (`None`: one batch per receiver;
    /// `Some(0)`: off).
    pub fn with_prefetch(mut self, prefetch: Option<usize>) -> Self {
        self.prefetch = prefetch;
        self
    }
    /// Count messages per tenant of fair queues, with own labels for `limit` tenants (0: off;
    /// see [`metrics::TenantLabels`](crate::metrics::TenantLabels)).
    pub fn with_tenant_metrics(mut self, limit: usize) -> Self {
        self.tenant_metrics = limit;
        self
    }
    /// Start at most `rate` messages per second over all queues (`None`: no limit).
    pub fn with_rate(mut self, rate: Option<f64>) -> Self {
        self.rate = rate;
        self
    }
    /// Added to 2 × the wait time to make the liveness window.
    pub fn with_liveness_margin(mut self, d: Duration) -> Self {
        self.liveness_margin = d;
        self
    }
    /// Update this health state (serve it before the poller starts: not ready until the
    /// queues are resolved).
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// The circuit breaker's settings (`None`: off; it is on by default).
    pub fn with_breaker(mut self, breaker: Option<BreakerConfig>) -> Self {
        self.breaker = breaker;
        self
    }
    /// Probe the downstream with this health check while the breaker is half-open, instead of
    /// with one message at a time.
    pub fn with_probe(mut self, probe: Option<HealthProbe>) -> Self {
        self.probe = probe;
        self
    }
    /// Adaptive concurrency between `min` and `max` handlers (sets
    /// [`PollerConfig::concurrency`] to `max`); `--concurrency auto`.
    pub fn with_adaptive_concurrency(mut self, min: usize, max: usize) -> Self {
        self.adaptive = Some(AdaptiveConfig::default().with_range(min, max));
        self.concurrency = max;
        self
    }
    /// How often each queue's pause flag is read (zero: never).
    pub fn with_pause_check(mut self, every: Duration) -> Self {
        self.pause_check = every;
        self
    }

    /// Check the settings against SQS limits, naming the field at fault.
    ///
    /// # Errors
    /// [`Error::Limit`] / [`Error::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), Error> {
        use crate::limits::check_range;
        check_range("concurrency", self.concurrency as u64, 1, 100_000u64)?;
        check_range("visibility_timeout", self.visibility_timeout.as_secs(), 1, MAX_VISIBILITY_SECONDS)?;
        check_range("max_visibility_extension", self.max_visibility_extension.as_secs(), 0, MAX_VISIBILITY_SECONDS)?;
        check_range("wait_time", self.wait_time.as_secs(), 0, crate::limits::MAX_WAIT_SECONDS)?;
        // not SQS limits: ranges that keep the poller's own arithmetic (semaphore sizes, timers,
        // the liveness window) far from overflow
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        check_range("prefetch", count(self.prefetch.unwrap_or(0)), 0, 100_000u64)?;
        check_range("tenant_metrics", count(self.tenant_metrics), 0, 10_000u64)?;
        check_range("liveness_margin", self.liveness_margin.as_secs(), 0, 3600u64)?;
        check_range("shutdown_timeout", self.shutdown_timeout.as_secs(), 0, MAX_VISIBILITY_SECONDS)?;
        check_range("depth_interval", self.depth_interval.as_secs(), 0, 86_400u64)?;
        check_range("ack_flush_interval", self.ack_flush_interval.as_secs(), 0, 10u64)?;
        check_range("receive_fill_wait", self.receive_fill_wait.as_secs(), 0, 10u64)?;
        if let Some(r) = self.rate {
            RateLimit::per_second(r)?;
        }
        if let Some(b) = &self.breaker {
            b.validate()?;
        }
        if let Some(a) = &self.adaptive {
            a.validate()?;
            if a.max != self.concurrency {
                return Err(Error::Invalid {
                    what: "max_concurrency",
                    reason: format!("the adaptive ceiling {} differs from concurrency {}", a.max, self.concurrency),
                });
            }
        }
        check_range("pause_check", self.pause_check.as_secs(), 0, 3600u64)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_spec_parses_url_and_weight() {
        let (url, weight) = QueueSpec::parse_url("http://h:4566/queue/us-east-1/000000000000/high=3").unwrap();
        assert_eq!(weight, 3);
        assert!(url.ends_with("/high"));
        let (_, weight) = QueueSpec::parse_url("https://sqs.eu-west-1.amazonaws.com/1/q").unwrap();
        assert_eq!(weight, 1);
        let e = QueueSpec::parse_url("http://h/q=0").unwrap_err();
        assert!(e.to_string().contains("queue-url"), "{e}");
        assert!(QueueSpec::parse_url("not a url").is_err());
    }

    #[test]
    fn config_validation_names_the_field() {
        let c = PollerConfig { wait_time: Duration::from_secs(30), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("wait_time"));
        let c = PollerConfig { concurrency: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("concurrency"));
        assert!(PollerConfig::default().validate().is_ok());
    }
}
