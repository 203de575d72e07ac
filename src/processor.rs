//! The batch processor: the one place where a handler's result becomes an action on SQS.
//!
//! This file is the engine; its parts are `handler.rs` ([`HandlerError`],
//! [`ResultExt`], [`Handler`], [`BatchHandler`]), `batch.rs` (whole-batch handlers) and
//! `sequence.rs` (the FIFO rules); the idempotency claim and completion rules are in
//! [`idempotency`](crate::idempotency). The outcome types are [`outcome`](crate::outcome)'s and
//! [`QueueContext`] is [`context`](crate::context)'s; both are re-exported here, as are
//! [`dead_letter_attributes`] and [`dead_letter_message`] from [`settle`](crate::settle), where
//! they are defined.
//!
//! It runs handlers (decoding the body, catching panics, enforcing an optional
//! timeout), turns each result into an [`Outcome`] and applies the FIFO rules. A
//! message that must be dead-lettered is sent to the DLQ right away, so that an
//! outcome is only [`Outcome::DeadLetter`] once the DLQ has it; everything else is
//! carried out by [`settle`](crate::settle), the one path the poller, the Lambda
//! adapter and [`Processor::settle`] share. Whether a queue is FIFO is a property of
//! the queue ([`QueueContext::fifo`]), never of a message: on a standard queue a
//! `MessageGroupId` names a tenant (fair queues) and every message is independent.
//!
//! | handler result | outcome | SQS action |
//! |---|---|---|
//! | `Ok(())` | [`Outcome::Succeeded`] | delete |
//! | retryable / panic / timeout | [`Outcome::Retry`] | visibility = backoff (or retry-after) |
//! | retryable on the last receive the redrive policy allows, DLQ known | [`Outcome::DeadLetter`] (`retries-exhausted`) | sent to the DLQ with the last error, delete |
//! | permanent / undecodable, DLQ known | [`Outcome::DeadLetter`] | sent to the DLQ with error attributes, delete |
//! | permanent / undecodable, no DLQ, or the DLQ send failed | [`Outcome::Retry`] (with a warning) | visibility = backoff |
//! | FIFO: later message of a failed group | [`Outcome::Held`] | same visibility as the failed one, in the same call, after it |
//! | idempotency key already completed ([`Processor::with_idempotency`]) | [`Outcome::Duplicate`] (handler not run) | delete |
//! | idempotency key held by another consumer | [`Outcome::Retry`] ([`FailureKind::InProgress`]) | visibility = the claim's remaining time |

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod batch;
mod handler;
mod sequence;

use handler::Handlers;
pub(crate) use handler::{failure_of, Dispatch, DispatchBatch};
pub use handler::{BatchHandler, BoxFuture, Handler, HandlerError, ResultExt, Source};
pub(crate) use sequence::fifo_groups;
#[cfg(any(feature = "poller", feature = "lambda"))]
pub(crate) use sequence::Sequence;

pub use crate::context::QueueContext;
use crate::idempotency::{claim, finish, idem_key, Claimed, CountKind, Idempotency, Lease};
use crate::limits::clamp_visibility;
use crate::message::{Message, ReceivedMessage};
pub use crate::outcome::{Decision, Failure, FailureKind, Outcome, Verdict};
use crate::retry::Backoff;
pub use crate::settle::{dead_letter_attributes, dead_letter_message, Actions, SettleReport};

/// Processor settings: `ProcessorConfig::default()` and the `with_*` setters.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use sqskit::{retry::Backoff, ProcessorConfig};
/// let c = ProcessorConfig::default()
///     .with_timeout(Some(Duration::from_secs(30)))
///     .with_backoff(Backoff::default().with_base(Duration::from_secs(5)));
/// assert_eq!(c.backoff.base, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessorConfig {
    /// Backoff for retryable failures.
    pub backoff: Backoff,
    /// Per-message handler timeout (overrun = retryable failure).
    pub timeout: Option<Duration>,
    /// Messages handled at once within a batch (standard queues; FIFO groups).
    pub concurrency: usize,
    /// Put the full decoding error (which may quote the body) in logs and DLQ attributes.
    /// Off by default: only the error's category, line and column are recorded.
    pub log_bodies: bool,
    /// Deprecated: the delay hop's one home is the queue
    /// ([`Queue::with_delay_hop`](crate::Queue::with_delay_hop)), whose hop the processor
    /// re-sends with. Kept for compatibility: a hop shorter than the queue's
    /// set here still caps the processor's re-sends (default 900 s: no effect).
    #[deprecated(since = "0.1.0", note = "set the delay hop on the queue: `Queue::with_delay_hop`")]
    pub delay_hop: Duration,
}

impl Default for ProcessorConfig {
    #[allow(deprecated)] // delay_hop
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            timeout: None,
            concurrency: 10,
            log_bodies: false,
            delay_hop: crate::delay::MAX_HOP,
        }
    }
}

impl ProcessorConfig {
    /// Set the backoff for retryable failures.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
    /// Set (or clear) the per-message handler timeout.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
    /// Set how many messages of a batch run at once.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }
    /// Deprecated: set the delay hop on the queue
    /// ([`Queue::with_delay_hop`](crate::Queue::with_delay_hop)), its one home.
    /// Kept for compatibility: caps the processor's re-sends at `hop` (1 s to 900 s) when it
    /// is shorter than the queue's.
    #[deprecated(since = "0.1.0", note = "set the delay hop on the queue: `Queue::with_delay_hop`")]
    #[allow(deprecated)] // delay_hop
    pub fn with_delay_hop(mut self, hop: Duration) -> Self {
        self.delay_hop = hop.clamp(Duration::from_secs(1), crate::delay::MAX_HOP);
        self
    }
    /// Put full decoding errors (which may quote the body) in logs and DLQ attributes.
    pub fn with_log_bodies(mut self, on: bool) -> Self {
        self.log_bodies = on;
        self
    }
}

type Decoder<T> = fn(&str, bool) -> Result<T, String>;

/// The batch processor.
///
/// # Example
/// ```no_run
/// use serde::Deserialize;
/// use sqskit::{HandlerError, Message, Processor, Queue, QueueContext};
///
/// #[derive(Deserialize)]
/// struct Order { id: u64, amount_cents: i64 }
///
/// async fn handle(msg: Message<Order>) -> Result<(), HandlerError> {
///     if msg.body.amount_cents < 0 {
///         return Err(HandlerError::permanent("negative amount"));   // → DLQ now
///     }
///     charge(msg.body.id).await.map_err(HandlerError::retryable)  // → backoff
/// }
/// # async fn charge(_: u64) -> Result<(), std::io::Error> { Ok(()) }
///
/// # async fn run() -> Result<(), sqskit::Error> {
/// let queue = Queue::from_env("http://127.0.0.1:4566/queue/us-east-1/000000000000/orders").await;
/// let ctx = QueueContext::discover(queue.clone()).await?;  // finds the DLQ
/// let processor = Processor::json(handle);
/// let batch = queue.receive(10, std::time::Duration::from_secs(20), None).await?;
/// let decisions = processor.process_batch(&ctx, batch).await;
/// processor.settle(&ctx, &decisions).await;               // delete / backoff
/// # Ok(()) }
/// ```
pub struct Processor<T> {
    handler: Handlers<T>,
    decode: Decoder<T>,
    config: ProcessorConfig,
    idempotency: Option<Idempotency<T>>,
    #[cfg(feature = "payload")]
    claim_check: Option<crate::payload::ClaimCheck>,
    #[cfg(feature = "events")]
    envelope: Option<crate::envelope::EnvelopeKind>,
    #[cfg(feature = "schema")]
    schema: Option<Arc<crate::schema::Schema>>,
}

impl<T> Clone for Processor<T> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            decode: self.decode,
            config: self.config.clone(),
            idempotency: self.idempotency.clone(),
            #[cfg(feature = "payload")]
            claim_check: self.claim_check.clone(),
            #[cfg(feature = "events")]
            envelope: self.envelope,
            #[cfg(feature = "schema")]
            schema: self.schema.clone(),
        }
    }
}

impl<T> Processor<T> {
    fn build(handler: Handlers<T>, decode: Decoder<T>) -> Self {
        Self {
            handler,
            decode,
            config: ProcessorConfig::default(),
            idempotency: None,
            #[cfg(feature = "payload")]
            claim_check: None,
            #[cfg(feature = "events")]
            envelope: None,
            #[cfg(feature = "schema")]
            schema: None,
        }
    }
}

/// The decoding error for logs and DLQ attributes: by default only its category, line and
/// column, because serde's message may quote the offending value (personal data).
fn decode_json<T: DeserializeOwned>(body: &str, full: bool) -> Result<T, String> {
    serde_json::from_str(body).map_err(|e| {
        let ty = std::any::type_name::<T>();
        if full {
            return format!("body is not a valid {ty}: {e}");
        }
        let category = match e.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        };
        format!("body is not a valid {ty}: {category} error at line {} column {}", e.line(), e.column())
    })
}

fn decode_raw(body: &str, _full: bool) -> Result<String, String> {
    Ok(body.to_string())
}

impl<T: DeserializeOwned + Send + 'static> Processor<T> {
    /// A processor whose handler gets the body decoded from JSON into `T`.
    pub fn json(handler: impl Handler<T>) -> Self {
        Self::build(Handlers::One(Arc::new(handler)), decode_json::<T>)
    }
    /// A processor whose batch handler gets the bodies decoded from JSON into `T` (an
    /// undecodable body fails that message alone and is not passed to the handler).
    pub fn json_batch(handler: impl BatchHandler<T>) -> Self {
        Self::build(Handlers::Batch(Arc::new(handler)), decode_json::<T>)
    }
    /// A processor over a dispatcher (a router) whose results are failures already.
    #[cfg_attr(not(feature = "events"), allow(dead_code))]
    pub(crate) fn dispatching(one: Arc<dyn Dispatch<T>>) -> Self {
        Self::build(Handlers::Dispatch(one), decode_json::<T>)
    }
    /// As [`Processor::dispatching`], for whole batches.
    #[cfg_attr(not(feature = "events"), allow(dead_code))]
    pub(crate) fn dispatching_batch(batch: Arc<dyn DispatchBatch<T>>) -> Self {
        Self::build(Handlers::DispatchBatch(batch), decode_json::<T>)
    }
}

impl Processor<String> {
    /// A processor whose handler gets the raw body.
    pub fn raw(handler: impl Handler<String>) -> Self {
        Self::build(Handlers::One(Arc::new(handler)), decode_raw)
    }
    /// A processor whose batch handler gets the raw bodies.
    pub fn raw_batch(handler: impl BatchHandler<String>) -> Self {
        Self::build(Handlers::Batch(Arc::new(handler)), decode_raw)
    }
}

impl<T: Send + 'static> Processor<T> {
    /// Replace the settings.
    pub fn with_config(mut self, config: ProcessorConfig) -> Self {
        self.config = config;
        self
    }
    /// The settings.
    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }
    /// Whether the handler takes whole batches ([`BatchHandler`]).
    pub fn is_batch(&self) -> bool {
        self.handler.is_batch()
    }

    /// Open every body as this envelope before decoding: the handler gets the payload inside
    /// (`T` decoded from the SNS `Message`, the EventBridge `detail`, each S3 record, the
    /// CloudEvent's data) and the envelope's metadata through
    /// [`Message::envelope`](crate::Message::envelope). See [`envelope`](crate::envelope).
    ///
    /// - A body that is not this envelope fails as `undecodable` (dead-lettered) with an error
    ///   naming the envelope and the field (`sns envelope: missing field `TopicArn``), never
    ///   the body.
    /// - S3: the handler is called once per record, in order (a batch handler gets every
    ///   record of the batch); the first failure is the message's, and the records after it
    ///   are not run (on a retry the earlier ones run again). S3's `s3:TestEvent` is settled as
    ///   a success without calling the handler (logged).
    /// - Idempotency keys still come from the body as received (`/MessageId` for SNS, `/id`
    ///   for EventBridge and CloudEvents); a key closure gets the first payload.
    ///
    /// # Example
    /// ```
    /// use sqskit::envelope::EnvelopeKind;
    /// use sqskit::{HandlerError, Message, Processor};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Order { id: u64 }
    ///
    /// let p = Processor::json(|m: Message<Order>| async move {
    ///     let topic = m.envelope().and_then(|e| e.sns()).map(|s| s.topic_arn.clone());
    ///     tracing::info!(order = m.body.id, ?topic, "from SNS");
    ///     Ok::<_, HandlerError>(())
    /// })
    /// .with_envelope(EnvelopeKind::Sns);
    /// assert_eq!(p.envelope(), Some(EnvelopeKind::Sns));
    /// ```
    #[cfg(feature = "events")]
    pub fn with_envelope(mut self, kind: crate::envelope::EnvelopeKind) -> Self {
        self.envelope = Some(kind);
        self
    }

    /// The envelope bodies are opened as, when set.
    #[cfg(feature = "events")]
    pub fn envelope(&self) -> Option<crate::envelope::EnvelopeKind> {
        self.envelope
    }

    /// Validate every payload against `schema` (JSON Schema 2020-12, compiled once) before it
    /// is decoded: one that fails is dead-lettered as `permanent` with the failing keyword and
    /// the instance path (never the value); one that is not JSON fails as `undecodable`. With
    /// an envelope the payload inside is validated. See [`schema`](crate::schema).
    ///
    /// # Example
    /// ```
    /// use sqskit::schema::Schema;
    /// use sqskit::{HandlerError, Processor};
    /// let schema = Schema::new(&serde_json::json!({"type": "object", "required": ["id"]})).unwrap();
    /// let p = Processor::raw(|_m| async { Ok::<_, HandlerError>(()) }).with_schema(schema);
    /// assert!(p.schema().is_some());
    /// ```
    #[cfg(feature = "schema")]
    pub fn with_schema(mut self, schema: crate::schema::Schema) -> Self {
        self.schema = Some(Arc::new(schema));
        self
    }

    /// The schema payloads are validated against, when set.
    #[cfg(feature = "schema")]
    pub fn schema(&self) -> Option<&crate::schema::Schema> {
        self.schema.as_deref()
    }

    /// Run each logical message once: claim its idempotency key before the handler runs (see
    /// [`idempotency`](crate::idempotency)). Works with one-message and batch handlers, on
    /// standard and FIFO queues (a duplicate in a FIFO group counts as done and the group goes on).
    ///
    /// # Example
    /// ```
    /// use sqskit::idempotency::{Idempotency, KeySource, MemoryStore};
    /// use sqskit::{HandlerError, Processor};
    /// let p = Processor::raw(|_m| async { Ok::<_, HandlerError>(()) })
    ///     .with_idempotency(Idempotency::new(MemoryStore::new()).with_key_source(KeySource::Pointer("/order_id".into())));
    /// assert!(p.idempotency().is_some());
    /// ```
    pub fn with_idempotency(mut self, idempotency: Idempotency<T>) -> Self {
        self.idempotency = Some(idempotency);
        self
    }

    /// Deprecated: the claim check's one home is the queue
    /// ([`Queue::with_claim_check`](crate::Queue::with_claim_check)): it
    /// offloads on send, the processor resolves pointers with the claim check of the
    /// context's queue, and [`settle`](crate::settle) cleans up after deletes. Kept for
    /// compatibility: a claim check set here is used instead of the queue's for resolving
    /// (only), also where no queue is known ([`Processor::call_handler`]).
    ///
    /// A missing object is [`FailureKind::PayloadMissing`] (dead-lettered with the pointer),
    /// another fetch failure a retryable one.
    #[cfg(feature = "payload")]
    #[deprecated(since = "0.1.0", note = "set the claim check on the queue: `Queue::with_claim_check`")]
    pub fn with_claim_check(mut self, check: crate::payload::ClaimCheck) -> Self {
        self.claim_check = Some(check);
        self
    }

    /// Deprecated with [`Processor::with_claim_check`]: the claim check set there.
    #[cfg(feature = "payload")]
    #[deprecated(since = "0.1.0", note = "the claim check is the queue's: `Queue::claim_check`")]
    pub fn claim_check(&self) -> Option<&crate::payload::ClaimCheck> {
        self.claim_check.as_ref()
    }

    /// The message the handler sees: a claim-checked one with its body fetched from S3 through
    /// the claim check of the context's queue (feature `payload`; the deprecated processor's
    /// own one first), else `raw` itself. The caller keeps `raw` (the pointer) for its
    /// decision, so dead-lettering forwards the pointer. A pointer that no claim check here can
    /// fetch, and (standard queues) a `sqskit-deliver-at` that cannot be honoured, fail the
    /// message as `undecodable` instead of reaching the handler.
    async fn resolve(
        &self,
        ctx: Option<&QueueContext>,
        raw: Arc<ReceivedMessage>,
    ) -> Result<Arc<ReceivedMessage>, Failure> {
        if let Some(failure) =
            ctx.filter(|c| !c.fifo).and_then(|_| crate::delay::refused(&raw, std::time::SystemTime::now()))
        {
            return Err(failure);
        }
        #[cfg(feature = "payload")]
        {
            let from_queue = ctx.and_then(|c| c.queue.as_ref()).and_then(crate::Queue::claim_check);
            if let Some(check) = self.claim_check.as_ref().or(from_queue) {
                // boxed: the S3 call's future is large and most messages take no claim check;
                // kept inline it would be copied with every message's future (see `attempt`)
                return match Box::pin(check.resolve(&raw)).await {
                    Ok(Some(resolved)) => Ok(Arc::new(resolved)),
                    Ok(None) => Ok(raw),
                    Err(e) => Err(e.failure()),
                };
            }
            if let Some(failure) = crate::payload::unresolvable(&raw) {
                return Err(failure);
            }
        }
        // (`payload::SIZE_ATTRIBUTE` and its legacy name: that module is not built here)
        #[cfg(not(feature = "payload"))]
        if ["ExtendedPayloadSize", "SQSLargePayloadSize"].iter().any(|a| raw.attributes.contains_key(*a)) {
            let error = "claim check: the body is an Amazon SQS Extended Client pointer to S3, and this build \
                         cannot fetch it (sqskit's `payload` feature)";
            return Err(Failure { kind: FailureKind::Undecodable, error: error.into(), retry_after: None });
        }
        Ok(raw)
    }

    /// The idempotency settings, when set.
    pub fn idempotency(&self) -> Option<&Idempotency<T>> {
        self.idempotency.as_ref()
    }

    /// What the idempotency checks found so far (zeros without idempotency).
    pub fn idempotency_counts(&self) -> crate::idempotency::IdempotencyCounts {
        self.idempotency.as_ref().map(Idempotency::counts).unwrap_or_default()
    }

    /// Move the in-progress expiry of the idempotency claims of `messages` (those running)
    /// to `until`. The poller's heartbeat calls it after extending their visibility.
    pub async fn extend_claims(&self, messages: &[Arc<ReceivedMessage>], until: std::time::SystemTime) {
        let Some(idem) = &self.idempotency else { return };
        let keys: Vec<String> = messages.iter().filter_map(|m| idem.local.key_of_running(&m.message_id)).collect();
        let calls = keys.iter().map(|k| idem.store.extend(k, until));
        for r in futures::future::join_all(calls).await {
            if let Err(e) = r {
                idem.count(CountKind::StoreError);
                tracing::warn!(error = %e, "could not extend an idempotency claim; it may lapse before the handler ends");
            }
        }
    }

    /// Call the handler on one message and return what went wrong, if anything; nothing
    /// else: no verdict, no dead-lettering, no SQS call (see [`Processor::process_one`] for
    /// those). Resolves a claim check, decodes the body and claims the idempotency key first.
    /// Never panics: decode errors, panics and timeouts become failures. A duplicate
    /// (idempotency) is `Ok` without running the handler.
    pub async fn call_handler(&self, raw: Arc<ReceivedMessage>) -> Result<(), Failure> {
        self.call_handler_until(raw, None).await
    }

    /// As [`Processor::call_handler`]; when `cancel` fires while the handler runs, the handler
    /// is dropped and the result is a [`FailureKind::TimedOut`] failure.
    pub async fn call_handler_until(
        &self,
        raw: Arc<ReceivedMessage>,
        cancel: Option<&CancellationToken>,
    ) -> Result<(), Failure> {
        self.attempt(None, Lease::default(), raw, cancel).await.map(|_| ())
    }

    /// The old name of [`Processor::call_handler`], kept so code written against it builds.
    #[deprecated(since = "0.1.0", note = "renamed `call_handler`: it only calls the handler (no verdict, no SQS call)")]
    pub async fn run(&self, raw: Arc<ReceivedMessage>) -> Result<(), Failure> {
        self.call_handler(raw).await
    }

    /// The old name of [`Processor::call_handler_until`], kept so code written against it builds.
    #[deprecated(since = "0.1.0", note = "renamed `call_handler_until`")]
    pub async fn run_until(
        &self,
        raw: Arc<ReceivedMessage>,
        cancel: Option<&CancellationToken>,
    ) -> Result<(), Failure> {
        self.call_handler_until(raw, cancel).await
    }

    /// Resolve a claim check, decode, claim the idempotency key (when configured), run the
    /// handler, record the result.
    async fn attempt(
        &self,
        ctx: Option<&QueueContext>,
        lease: Lease,
        raw: Arc<ReceivedMessage>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Done, Failure> {
        // the lease ends every step before the handler too: a claim check or an idempotency
        // store that hangs must not keep the message (and its slot) forever; what comes after
        // the handler (recording its result) is never cut
        let raw = until_lease(self.resolve(ctx, raw), cancel).await??;
        let msgs = self.open(&raw)?;
        let Some(idem) = &self.idempotency else {
            return self.call_each(msgs, cancel).await.map(|()| Done::Handled);
        };
        // Boxed, like every store or S3 call on this path: the futures of SDK calls are large
        // (kilobytes), and whatever sits inline in a message's future is copied each time the
        // future moves (into its task, into a select); without idempotency this costs nothing.
        Box::pin(self.attempt_idempotent(idem, lease, raw, msgs, cancel)).await
    }

    async fn attempt_idempotent(
        &self,
        idem: &Idempotency<T>,
        lease: Lease,
        raw: Arc<ReceivedMessage>,
        msgs: Vec<Message<T>>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Done, Failure> {
        // the key of the message is its first payload's (nothing to run: no claim either)
        let id = match msgs.first().map(|m| idem_key(idem, m)).transpose()?.flatten() {
            Some(id) => id,
            None => return self.call_each(msgs, cancel).await.map(|()| Done::Handled),
        };
        let hold = until_lease(idem.local.hold(&id.key), cancel).await?;
        match until_lease(claim(idem, lease, &raw, id), cancel).await?? {
            Claimed::Run(record) => {
                let result = self.call_each(msgs, cancel).await;
                finish(idem, &raw, record, result.is_ok()).await;
                drop(hold);
                result.map(|()| Done::Handled)
            }
            Claimed::Unguarded => self.call_each(msgs, cancel).await.map(|()| Done::Handled),
            Claimed::Duplicate => Ok(Done::Duplicate),
        }
    }

    /// What the handler gets for `raw`: its body opened as the processor's envelope (when set),
    /// each payload validated against the schema (when set) and decoded. Usually one message;
    /// one per record of an S3 notification; none for S3's test event.
    fn open(&self, raw: &Arc<ReceivedMessage>) -> Result<Vec<Message<T>>, Failure> {
        #[cfg(feature = "events")]
        if let Some(kind) = self.envelope {
            use crate::envelope::Opened;
            let undecodable = |error: String| Failure { kind: FailureKind::Undecodable, error, retry_after: None };
            return match kind.open(&raw.body, self.config.log_bodies).map_err(|e| undecodable(e.to_string()))? {
                Opened::S3TestEvent { bucket } => {
                    tracing::info!(message_id = %raw.message_id, bucket = bucket.as_deref().unwrap_or_default(),
                        "s3:TestEvent (sent when a bucket notification is configured): nothing to handle");
                    Ok(Vec::new())
                }
                Opened::Payloads(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, payload) in items.into_iter().enumerate() {
                        let body = self.decode_payload(&payload.text).map_err(|f| {
                            if f.kind != FailureKind::Undecodable {
                                return f; // a schema's verdict: its paths are the payload's
                            }
                            // "body is not a valid T": name the payload inside the envelope instead
                            use crate::envelope::EnvelopeKind as K;
                            let what = match kind {
                                K::Sns => "Message".to_string(),
                                K::EventBridge => "detail".to_string(),
                                K::S3 => format!("Records[{i}]"),
                                K::CloudEvents => "data".to_string(),
                            };
                            let error = match f.error.strip_prefix("body ") {
                                Some(rest) => format!("{kind} envelope: {what} {rest}"),
                                None => format!("{kind} envelope: {what}: {}", f.error),
                            };
                            Failure { error, ..f }
                        })?;
                        out.push(Message::new(body, raw.clone()).with_envelope(Arc::new(payload.envelope)));
                    }
                    Ok(out)
                }
            };
        }
        Ok(vec![Message::new(self.decode_payload(&raw.body)?, raw.clone())])
    }

    /// One payload checked against the schema (when set) and decoded.
    fn decode_payload(&self, text: &str) -> Result<T, Failure> {
        #[cfg(feature = "schema")]
        if let Some(schema) = &self.schema {
            schema.check_text(text, self.config.log_bodies)?;
        }
        (self.decode)(text, self.config.log_bodies).map_err(|error| Failure {
            kind: FailureKind::Undecodable,
            error,
            retry_after: None,
        })
    }

    /// Each message of one SQS message through the handler, in order, up to the first failure.
    async fn call_each(&self, msgs: Vec<Message<T>>, cancel: Option<&CancellationToken>) -> Result<(), Failure> {
        for msg in msgs {
            self.call_one(msg, cancel).await?;
        }
        Ok(())
    }

    /// One message through the handler (a batch handler gets a batch of one), guarded.
    /// The message's trace context is [`current`](crate::trace::current) while the handler runs.
    async fn call_one(&self, msg: Message<T>, cancel: Option<&CancellationToken>) -> Result<(), Failure> {
        let trace = msg.trace();
        let call: BoxFuture<Result<(), HandlerError>> = match &self.handler {
            Handlers::One(h) => h.call(msg),
            Handlers::Dispatch(d) => {
                let call = Box::pin(crate::trace::scope(trace, d.call(msg)));
                return self.guarded("handler", call, cancel).await?;
            }
            Handlers::Batch(_) | Handlers::DispatchBatch(_) => {
                let fut = self.handler.call_batch(vec![msg]);
                let call = Box::pin(crate::trace::scope(trace, async move {
                    let mut results = fut.await;
                    match (results.pop(), results.is_empty()) {
                        (Some(r), true) => r,
                        _ => Err(failure_of(HandlerError::retryable(
                            "the batch handler did not return exactly one result",
                        ))),
                    }
                }));
                return self.guarded("handler", call, cancel).await?;
            }
        };
        let call = Box::pin(crate::trace::scope(trace, call));
        self.guarded("handler", call, cancel).await?.map_err(failure_of)
    }

    /// Run a handler's future under the handler timeout, `cancel` (a lease that cannot be
    /// extended) and a panic guard; record its duration when it completed. `what` names it in
    /// the error texts.
    async fn guarded<R>(
        &self,
        what: &str,
        call: BoxFuture<R>,
        cancel: Option<&CancellationToken>,
    ) -> Result<R, Failure> {
        let started = Instant::now();
        let fut = AssertUnwindSafe(call).catch_unwind();
        let failed = |kind: FailureKind, error: String| Err(Failure { kind, error, retry_after: None });
        let limited = async {
            match self.config.timeout {
                Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| format!("{what} overran its {t:?} timeout")),
                None => Ok(fut.await),
            }
        };
        let never;
        let cancel = match cancel {
            Some(c) => c,
            None => {
                never = CancellationToken::new();
                &never
            }
        };
        // biased, the handler first: one that is done at its first poll never registers
        // with `cancel` (a lock in the token)
        let result = tokio::select! {
            biased;
            r = limited => match r { Ok(r) => r, Err(e) => return failed(FailureKind::TimedOut, e) },
            _ = cancel.cancelled() => {
                return failed(
                    FailureKind::TimedOut,
                    format!(
                        "{what} cancelled: its lease ended (the longest visibility extension allowed, the shutdown \
                         deadline or the invocation's deadline)"
                    ),
                )
            }
        };
        metrics::histogram!(crate::metrics::names::HANDLER_DURATION).record(started.elapsed().as_secs_f64());
        result.or_else(|panic| failed(FailureKind::Panicked, panic_text(&panic)))
    }

    /// Turn a handler result into a [`Verdict`], before any I/O: a [`Verdict::DeadLetter`] is
    /// not sent yet ([`Processor::process_one`] sends it, and only a confirmed send becomes
    /// [`Outcome::DeadLetter`]; a failed one a retry). Pure apart from the jitter.
    ///
    /// A retryable failure on the last receive the redrive policy allows
    /// (`receive count ≥ maxReceiveCount`) is dead-lettered as
    /// [`FailureKind::RetriesExhausted`] with the last error, so the DLQ sees why, unless the
    /// context's [`ExhaustionHold`](crate::context::ExhaustionHold) holds it (a retry then).
    pub fn decide(&self, ctx: &QueueContext, raw: &ReceivedMessage, result: Result<(), Failure>) -> Verdict {
        let failure = match result {
            Ok(()) => return Verdict::Succeeded,
            Err(f) => f,
        };
        let has_dlq = ctx.dlq.is_some();
        if failure.kind.is_permanent() {
            if has_dlq {
                return Verdict::DeadLetter { failure };
            }
            tracing::warn!(message_id = %raw.message_id, kind = failure.kind.as_str(),
                "permanent failure but no dead-letter queue is known; retrying with backoff instead");
        } else if has_dlq
            && ctx.max_receive_count.is_some_and(|max| raw.receive_count() >= max)
            && !ctx.exhaustion_hold.holds(raw)
        {
            let error = format!("{}: {}", failure.kind.as_str(), failure.error);
            return Verdict::DeadLetter {
                failure: Failure { kind: FailureKind::RetriesExhausted, error, retry_after: None },
            };
        }
        let wanted = failure.retry_after.unwrap_or_else(|| self.config.backoff.delay(raw.receive_count()));
        let visibility = retry_visibility(raw, wanted);
        Verdict::Retry { visibility, failure }
    }

    /// Run and decide one message, inside a tracing span with its id, queue and receive count:
    /// its turn under the context's start limits first, then the handler. A message to
    /// dead-letter is sent to the DLQ before this returns: the outcome is
    /// [`Outcome::DeadLetter`] only when the DLQ confirmed it, else a retry with backoff.
    pub async fn process_one(&self, ctx: &QueueContext, raw: Arc<ReceivedMessage>) -> Outcome {
        self.process_one_driven(ctx, raw, Drive::default()).await
    }

    /// [`Processor::process_one`] as a runtime drives it (see [`Drive`]). A panic anywhere in
    /// the message's steps (outside its handler too: a claim check, an idempotency store, a
    /// DLQ send) is that message's retryable failure, never the caller's.
    pub(crate) async fn process_one_driven(
        &self,
        ctx: &QueueContext,
        raw: Arc<ReceivedMessage>,
        drive: Drive<'_>,
    ) -> Outcome {
        let span = crate::span::message_span(&raw, ctx.queue_name());
        let steps = async {
            if let Some(outcome) = self.defer(ctx, &raw).await {
                return outcome;
            }
            if !drive.turn(ctx).await {
                return Outcome::Released;
            }
            drive.start(&raw);
            let result = self.attempt(Some(ctx), ctx.lease, raw.clone(), drive.lease).await;
            self.conclude(ctx, &raw, result).await
        };
        let caught = AssertUnwindSafe(steps).catch_unwind().instrument(span.clone()).await;
        match caught {
            Ok(outcome) => outcome,
            Err(panic) => self.panicked(ctx, &raw, panic_text(&panic)).instrument(span).await,
        }
    }

    /// The outcome of a message whose steps panicked outside its handler: a retryable failure
    /// (kind `panic`), concluded like any other (so dead-lettered on its last receive). Should
    /// concluding panic too, a plain retry with backoff.
    pub(crate) async fn panicked(&self, ctx: &QueueContext, raw: &Arc<ReceivedMessage>, panic: String) -> Outcome {
        let failure =
            Failure { kind: FailureKind::Panicked, error: format!("outside the handler: {panic}"), retry_after: None };
        tracing::error!(error = %failure.error, "a message's processing panicked; retrying it");
        let again = AssertUnwindSafe(self.conclude(ctx, raw, Err(failure.clone()))).catch_unwind().await;
        again.unwrap_or_else(|_| {
            let visibility = retry_visibility(raw, self.config.backoff.delay(raw.receive_count()));
            Outcome::Retry { visibility, failure }
        })
    }

    /// A standard-queue message whose `sqskit-deliver-at` is still ahead: send its next hop
    /// and make this copy [`Outcome::Deferred`] (the handler does not run). When that send
    /// fails, a retry with the remaining time as visibility (this one counts a receive).
    async fn defer(&self, ctx: &QueueContext, raw: &ReceivedMessage) -> Option<Outcome> {
        if ctx.fifo || !crate::delay::carries_due_time(raw) {
            return None;
        }
        let left = crate::delay::remaining(raw, std::time::SystemTime::now())?;
        let Some(queue) = &ctx.queue else {
            tracing::warn!("not due yet, but the source queue is unknown: handled now");
            return None;
        };
        #[allow(deprecated)] // the processor's own delay hop: a deprecated cap
        let hop = queue.delay_hop().min(self.config.delay_hop);
        let next = crate::delay::next_hop(raw, left, hop);
        // boxed: the send's future is large (kilobytes) and only deferred messages take it;
        // inline it would make every message's future that large (see `attempt`)
        match Box::pin(queue.send(next)).await {
            Ok(sent) => {
                tracing::debug!(next_message_id = %sent.message_id, remaining_s = left.as_secs(), "not due yet: re-sent with its next delay hop");
                metrics::counter!(crate::metrics::names::DEFERRED).increment(1);
                Some(Outcome::Deferred)
            }
            Err(e) => {
                let visibility = retry_visibility(raw, left.min(hop));
                tracing::warn!(error = %e, visibility, "not due yet, and its next hop could not be sent: retrying it then");
                let failure = Failure {
                    kind: FailureKind::Retryable,
                    error: format!("delay hop not sent: {e}"),
                    retry_after: None,
                };
                Some(Outcome::Retry { visibility, failure })
            }
        }
    }

    /// Decide, dead-letter (confirmed) or fall back to a retry, count and log one result.
    async fn conclude(&self, ctx: &QueueContext, raw: &Arc<ReceivedMessage>, result: Result<Done, Failure>) -> Outcome {
        if let Ok(Done::Duplicate) = result {
            tracing::debug!("duplicate: its idempotency key was already completed; not run");
            return Outcome::Duplicate;
        }
        let outcome = match self.decide(ctx, raw, result.map(|_| ())) {
            Verdict::Succeeded => Outcome::Succeeded,
            Verdict::Retry { visibility, failure } => Outcome::Retry { visibility, failure },
            // only a send the DLQ confirmed is a dead letter
            Verdict::DeadLetter { failure } => match Box::pin(crate::settle::dead_letter(ctx, raw, &failure)).await {
                Ok(()) => Outcome::DeadLetter { failure },
                Err(e) => {
                    let visibility = retry_visibility(raw, self.config.backoff.delay(raw.receive_count()));
                    tracing::error!(kind = failure.kind.as_str(), error = %e, visibility,
                        "dead-letter send failed; the message will be retried instead");
                    let error = format!("{}; dead-letter send failed: {e}", failure.error);
                    Outcome::Retry { visibility, failure: Failure { error, ..failure } }
                }
            },
        };
        if let Outcome::Retry { failure, .. } | Outcome::DeadLetter { failure } = &outcome {
            if failure.kind != FailureKind::InProgress {
                metrics::counter!(crate::metrics::names::FAILED, "kind" => failure.kind.as_str()).increment(1);
                #[cfg(feature = "otel")]
                crate::otel::failed(&tracing::Span::current(), failure.kind.as_str());
            }
        }
        match &outcome {
            Outcome::Succeeded => tracing::debug!("processed"),
            // not an error: another consumer is on it (counted as `in_progress`)
            Outcome::Retry { visibility, failure } if failure.kind == FailureKind::InProgress => {
                tracing::info!(
                    visibility,
                    "its idempotency key is held by another consumer; will look again when the claim lapses"
                )
            }
            Outcome::Retry { visibility, failure } => {
                tracing::warn!(kind = failure.kind.as_str(), error = %failure.error, visibility, "failed; will retry")
            }
            Outcome::DeadLetter { failure } => {
                tracing::warn!(kind = failure.kind.as_str(), error = %failure.error, "failed permanently; dead-lettered")
            }
            Outcome::Held { .. } | Outcome::Released | Outcome::Duplicate | Outcome::Deferred => {}
        }
        outcome
    }

    /// Process a received batch and return one decision per message, in input order.
    ///
    /// Standard queue: messages run concurrently (up to `concurrency`), whatever their
    /// `MessageGroupId` (a tenant id on fair queues). FIFO ([`QueueContext::fifo`]): each group
    /// runs in order through [`Processor::process_sequence`], groups concurrently.
    pub async fn process_batch(&self, ctx: &QueueContext, messages: Vec<ReceivedMessage>) -> Vec<Decision> {
        self.process_batch_until(ctx, messages, None).await
    }

    /// As [`Processor::process_batch`], but once `stop` is cancelled no further message is
    /// started: those not started are [`Outcome::Released`] (the Lambda adapter cancels it
    /// when the invocation's deadline nears).
    pub async fn process_batch_until(
        &self,
        ctx: &QueueContext,
        messages: Vec<ReceivedMessage>,
        stop: Option<&CancellationToken>,
    ) -> Vec<Decision> {
        let messages: Vec<Arc<ReceivedMessage>> = messages.into_iter().map(Arc::new).collect();
        if self.is_batch() {
            return self.process_whole(ctx, messages, Drive { stop, ..Drive::default() }).await;
        }
        let limit = self.config.concurrency.max(1);
        if ctx.fifo {
            let seqs = fifo_groups(messages.clone());
            let decided: Vec<Vec<Decision>> =
                futures::stream::iter(seqs.into_iter().map(|s| self.process_sequence_until(ctx, s, stop)))
                    .buffer_unordered(limit)
                    .collect()
                    .await;
            let mut by_id: HashMap<String, Decision> =
                decided.into_iter().flatten().map(|d| (d.message.message_id.clone(), d)).collect();
            messages.iter().filter_map(|m| by_id.remove(&m.message_id)).collect()
        } else {
            futures::stream::iter(messages.into_iter().map(|m| async move {
                let outcome = if stop.is_some_and(CancellationToken::is_cancelled) {
                    Outcome::Released
                } else {
                    self.process_one(ctx, m.clone()).await
                };
                Decision { message: m, outcome }
            }))
            .buffered(limit)
            .collect()
            .await
        }
    }

    /// Carry out decisions on SQS through [`settle::settle`](crate::settle::settle): delete
    /// successes and dead-lettered messages, set visibility for retries with each FIFO
    /// failure followed by the messages held behind it in the same call.
    pub async fn settle(&self, ctx: &QueueContext, decisions: &[Decision]) -> SettleReport {
        crate::settle::settle(ctx, decisions).await
    }
}

/// How a runtime drives one message through [`Processor::process_one`]'s steps: `stop` (start
/// nothing more: a message still waiting for its rate turn is [`Outcome::Released`]), `lease`
/// (the lease can no longer be extended: a waiting message is released, a running handler is
/// cancelled as a retryable `timeout`) and `started` (told right before the handler starts,
/// after the rate turn: the poller counts a message's running time from there, not from its
/// receipt).
#[derive(Clone, Copy, Default)]
pub(crate) struct Drive<'a> {
    pub(crate) stop: Option<&'a CancellationToken>,
    pub(crate) lease: Option<&'a CancellationToken>,
    pub(crate) started: Option<&'a (dyn Fn(&ReceivedMessage) + Send + Sync)>,
}

impl Drive<'_> {
    /// Whether `stop` or `lease` fired.
    pub(crate) fn ended(&self) -> bool {
        self.stop.is_some_and(CancellationToken::is_cancelled)
            || self.lease.is_some_and(CancellationToken::is_cancelled)
    }

    /// Wait for the context's start limits; `false` when `stop` or `lease` fired first (the
    /// message did not start). Waiting for a turn is not running.
    pub(crate) async fn turn(&self, ctx: &QueueContext) -> bool {
        if ctx.rates.is_empty() {
            return true;
        }
        let never = CancellationToken::new();
        let stop = self.stop.unwrap_or(&never);
        let lease = self.lease.unwrap_or(&never);
        tokio::select! {
            biased;
            _ = stop.cancelled() => false,
            _ = lease.cancelled() => false,
            _ = ctx.start_gate() => true,
        }
    }

    /// Tell the runtime that `m`'s handler starts now.
    pub(crate) fn start(&self, m: &ReceivedMessage) {
        if let Some(f) = self.started {
            f(m);
        }
    }
}

/// `step`, unless `lease` ends first: then a retryable `timeout` (the step's future is dropped).
async fn until_lease<F: std::future::Future>(step: F, lease: Option<&CancellationToken>) -> Result<F::Output, Failure> {
    let Some(lease) = lease else { return Ok(step.await) };
    tokio::select! {
        biased;
        out = step => Ok(out),
        _ = lease.cancelled() => Err(Failure {
            kind: FailureKind::TimedOut,
            error: "cancelled before its handler started: its lease could not be extended any further".into(),
            retry_after: None,
        }),
    }
}

/// What an attempt came to when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// The handler ran and succeeded.
    Handled,
    /// Idempotency: the key was completed before; the handler did not run.
    Duplicate,
}

/// The visibility (seconds) that brings `m` back after `wanted`, within 12 h of its receipt.
pub(crate) fn retry_visibility(m: &ReceivedMessage, wanted: Duration) -> u32 {
    clamp_visibility(wanted.as_secs(), m.received_at.elapsed().as_secs())
}

pub(crate) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "handler panicked".to_string());
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests;
