//! The queue context: where messages come from and where dead ones go.
//!
//! It owns [`QueueContext`]: the source queue, its dead-letter queue (refused when its type
//! differs), whether the queue is FIFO (a property of the queue, never of a message), the
//! redrive policy's `maxReceiveCount`, the lease a received message is held for and the start
//! limits each message waits for. It knows nothing of handlers and outcomes: the
//! [`processor`](crate::processor) decides with it, [`settle`](crate::settle) carries out with
//! it, the poller and the Lambda adapter build it.

use std::sync::Arc;
use std::time::Duration;

use crate::client::Queue;
use crate::error::Error;
use crate::idempotency::Lease;
use crate::message::ReceivedMessage;

/// Where messages come from and where dead ones go: the source queue (when known), its DLQ,
/// whether it is FIFO, and how many receives its redrive policy allows.
#[derive(Debug, Clone, Default)]
pub struct QueueContext {
    /// The source queue (needed to delete and change visibility).
    pub queue: Option<Queue>,
    /// The dead-letter queue (from the redrive policy or configured).
    pub dlq: Option<Queue>,
    /// Whether the source queue is FIFO. Decided from the queue (`.fifo` name, `FifoQueue`
    /// attribute, event source ARN), never from a message's `MessageGroupId`.
    pub fifo: bool,
    /// `maxReceiveCount` of the redrive policy, when known: a retryable failure on that
    /// receive is dead-lettered by sqskit (kind `retries-exhausted`) with its error.
    pub max_receive_count: Option<u32>,
    /// How long a received message stays ours (idempotency claims lapse with it).
    pub lease: Lease,
    /// Start limits each message waits for before it is handled (this queue's, the
    /// process's; see [`crate::rate`]).
    pub rates: Vec<Arc<crate::rate::RateLimit>>,
    /// Retryable failures on the last allowed receive that are not dead-lettered (flow control
    /// sets it while its circuit breaker is open: the failure is the outage's).
    pub exhaustion_hold: ExhaustionHold,
}

/// A predicate a runtime sets on a [`QueueContext`]: while it answers `true` for a message, a
/// retryable failure on its last allowed receive is not dead-lettered as `retries-exhausted`
/// but retried, and the runtime takes care of it (the poller carries it over while its
/// circuit breaker is open). Answers `false` when not set.
///
/// # Example
/// ```
/// use sqskit::context::ExhaustionHold;
/// let hold = ExhaustionHold::new(|_m| true);
/// # let _ = hold;
/// assert!(!format!("{:?}", ExhaustionHold::default()).is_empty());
/// ```
#[derive(Clone, Default)]
pub struct ExhaustionHold(Option<Arc<HoldFn>>);

type HoldFn = dyn Fn(&ReceivedMessage) -> bool + Send + Sync;

impl ExhaustionHold {
    /// A hold answering with `f`.
    pub fn new(f: impl Fn(&ReceivedMessage) -> bool + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }
    /// Whether a retryable failure of `m` on its last allowed receive is held.
    pub fn holds(&self, m: &ReceivedMessage) -> bool {
        self.0.as_ref().is_some_and(|f| f(m))
    }
}

impl std::fmt::Debug for ExhaustionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ExhaustionHold(set)" } else { "ExhaustionHold(none)" })
    }
}

impl QueueContext {
    /// Context for `queue`, with its DLQ and `maxReceiveCount` from the redrive policy and
    /// FIFO-ness from the `FifoQueue` attribute.
    ///
    /// # Errors
    /// When `GetQueueAttributes` fails (e.g. the queue does not exist), or the DLQ named by
    /// the redrive policy cannot be looked up for a reason other than not existing.
    pub async fn discover(queue: Queue) -> Result<Self, Error> {
        let attrs = queue.attributes().await?;
        let fifo = attrs.fifo || queue.is_fifo();
        let (dlq, max_receive_count) = match attrs.redrive {
            Some(r) => (r.dead_letter_url.map(|u| Queue::new(queue.client().clone(), u)), Some(r.max_receive_count)),
            None => (None, None),
        };
        let lease =
            attrs.visibility_timeout.map(|v| Lease::Visibility(Duration::from_secs(v.into()))).unwrap_or_default();
        Ok(Self {
            queue: Some(queue),
            dlq: None,
            fifo,
            max_receive_count,
            lease,
            rates: Vec::new(),
            exhaustion_hold: ExhaustionHold::default(),
        }
        .with_dlq(dlq))
    }

    /// Context with an explicit DLQ (or none). FIFO-ness comes from the queue's name.
    pub fn new(queue: Queue, dlq: Option<Queue>) -> Self {
        let fifo = queue.is_fifo();
        Self {
            queue: Some(queue),
            dlq: None,
            fifo,
            max_receive_count: None,
            lease: Lease::default(),
            rates: Vec::new(),
            exhaustion_hold: ExhaustionHold::default(),
        }
        .with_dlq(dlq)
    }

    /// Use `dlq` as the dead-letter queue. A DLQ whose type (FIFO or standard) differs from
    /// the source's is refused with an error log: SQS itself does not allow it, and sending a
    /// FIFO message to a standard DLQ would lose its group order.
    pub fn with_dlq(mut self, dlq: Option<Queue>) -> Self {
        self.dlq = match dlq {
            Some(d) if d.is_fifo() != self.fifo => {
                tracing::error!(
                    queue = self.queue_name(),
                    dlq = d.name(),
                    source_fifo = self.fifo,
                    "the dead-letter queue's type (FIFO or standard) differs from the source queue's; not using it"
                );
                None
            }
            other => other,
        };
        self
    }

    /// Set the lease (the poller's visibility timeout, a Lambda invocation's deadline).
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = lease;
        self
    }

    /// Add a start limit: each message of this context waits for it before it is handled
    /// (several limits: each in turn, e.g. the queue's and the process's).
    pub fn with_rate(mut self, rate: Arc<crate::rate::RateLimit>) -> Self {
        self.rates.push(rate);
        self
    }

    /// Wait for every start limit.
    pub(crate) async fn start_gate(&self) {
        if !self.rates.is_empty() {
            crate::rate::RateLimit::start_all(&self.rates).await;
        }
    }

    /// Hold retryable failures on the last allowed receive back from the DLQ while `hold`
    /// answers `true` for the message (see [`ExhaustionHold`]).
    pub fn with_exhaustion_hold(mut self, hold: ExhaustionHold) -> Self {
        self.exhaustion_hold = hold;
        self
    }

    /// Set `maxReceiveCount` (when the redrive policy is not read, e.g. a configured Lambda).
    pub fn with_max_receive_count(mut self, max: Option<u32>) -> Self {
        self.max_receive_count = max.filter(|m| *m > 0);
        self
    }

    pub(crate) fn queue_name(&self) -> &str {
        self.queue.as_ref().map_or("-", Queue::name)
    }
}
