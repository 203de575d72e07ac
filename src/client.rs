//! The SQS client core: a [`Queue`] handle that knows SQS and its limits.
//!
//! It sends (single, typed, batched with automatic chunking), receives with long
//! polling, deletes and changes visibility in batches, and reads queue
//! attributes. Every per-entry failure of a batch call is surfaced, even when
//! SQS answered HTTP 200. It knows nothing about handlers or outcomes; that is
//! the [`processor`](crate::processor)'s job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageAttributeValue,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use futures::StreamExt;

use crate::error::{EntryFailure, Error};
use crate::limits::{self, MAX_BATCH_ENTRIES, MAX_DELAY_SECONDS, MAX_VISIBILITY_SECONDS, MAX_WAIT_SECONDS};
use crate::message::{AttributeValue, OutgoingMessage, ReceivedMessage};

/// Classify an SDK error and count it in `sqskit_sqs_errors_total{operation}`.
pub(crate) fn sqs_error<E, R>(operation: &'static str, queue: &str, err: aws_sdk_sqs::error::SdkError<E, R>) -> Error
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata
        + crate::error::QueueMissing
        + std::error::Error
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug,
{
    metrics::counter!(crate::metrics::names::SQS_ERRORS, "operation" => operation).increment(1);
    crate::error::classify(operation, queue, err)
}

pub use crate::env::load_aws_config;

/// A handle on one SQS queue: an `aws_sdk_sqs::Client` plus the queue URL. Cheap to clone.
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), sqskit::Error> {
/// use sqskit::{Queue, OutgoingMessage};
/// let queue = Queue::from_env("http://127.0.0.1:4566/queue/us-east-1/000000000000/orders").await;
/// queue.send(OutgoingMessage::new("hello")).await?;
/// for msg in queue.receive(10, std::time::Duration::from_secs(20), None).await? {
///     println!("{} {}", msg.message_id, msg.receive_count());
///     queue.delete_batch(&[msg.receipt_handle.as_str()]).await?.into_result()?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: Arc<str>,
    #[cfg(feature = "payload")]
    claim_check: Option<crate::payload::ClaimCheck>,
    /// Longest `DelaySeconds` hop of [`Queue::send_at`] (900 s).
    delay_hop: Duration,
}

/// A message SQS accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// Position in the caller's input (0 for a single send).
    pub index: usize,
    /// SQS message id.
    pub message_id: String,
    /// FIFO sequence number.
    pub sequence_number: Option<String>,
}

/// What a `send_batch` did.
#[derive(Debug, Clone, Default)]
pub struct SendBatchReport {
    /// Messages SQS accepted, in input order.
    pub sent: Vec<SentMessage>,
    /// Entries that failed for good (sender fault, or still failing after the retries).
    pub failed: Vec<EntryFailure>,
    /// Number of `SendMessageBatch` calls made (including retries).
    pub calls: usize,
}

impl SendBatchReport {
    /// `Ok` with the sent messages when nothing failed, else [`Error::EntriesFailed`].
    ///
    /// # Errors
    /// [`Error::EntriesFailed`] listing each failed entry.
    pub fn into_result(self) -> Result<Vec<SentMessage>, Error> {
        if self.failed.is_empty() {
            Ok(self.sent)
        } else {
            Err(Error::EntriesFailed { operation: "SendMessageBatch", failures: self.failed })
        }
    }
}

/// What a delete or change-visibility batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Indexes (into the caller's input) that succeeded.
    pub succeeded: Vec<usize>,
    /// Entries SQS reported in `Failed`.
    pub failed: Vec<EntryFailure>,
    /// Number of calls made.
    pub calls: usize,
}

impl BatchReport {
    /// `Ok` when no entry failed.
    ///
    /// # Errors
    /// [`Error::EntriesFailed`] listing each failed entry.
    pub fn into_result(self) -> Result<(), Error> {
        if self.failed.is_empty() {
            Ok(())
        } else {
            Err(Error::EntriesFailed { operation: "batch", failures: self.failed })
        }
    }
}

/// Queue depth and redrive configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueAttributes {
    /// `ApproximateNumberOfMessages`.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible` (in flight).
    pub in_flight: u64,
    /// `ApproximateNumberOfMessagesDelayed`.
    pub delayed: u64,
    /// `QueueArn`.
    pub arn: Option<String>,
    /// `VisibilityTimeout` in seconds.
    pub visibility_timeout: Option<u32>,
    /// `FifoQueue`.
    pub fifo: bool,
    /// The redrive policy, when the queue has a dead-letter queue.
    pub redrive: Option<RedrivePolicy>,
}

/// A queue's `RedrivePolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedrivePolicy {
    /// ARN of the dead-letter queue.
    pub dead_letter_arn: String,
    /// URL of the dead-letter queue (resolved with `GetQueueUrl`), when it exists.
    pub dead_letter_url: Option<String>,
    /// Receives after which SQS moves a message to the DLQ.
    pub max_receive_count: u32,
}

const SEND_ATTEMPTS: usize = 4;

/// [`EntryFailure::code`] of a FIFO entry not sent because an earlier entry of its message
/// group failed in the same `send_batch` call.
pub const EARLIER_ENTRY_FAILED: &str = "sqskit.EarlierEntryInGroupFailed";
const SEND_CONCURRENCY: usize = 8;

impl Queue {
    /// A handle on the queue at `url` using `client`.
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: Arc::from(url.into()),
            #[cfg(feature = "payload")]
            claim_check: None,
            delay_hop: crate::delay::MAX_HOP,
        }
    }

    /// Shorten the delay hops of messages sent to this queue (1 s to 900 s; tests and demos):
    /// see [`delay`](crate::delay). This is the delay hop's one home: [`Queue::send_at`] sends
    /// the first hop with it and a [`Processor`](crate::Processor) consuming this queue re-sends
    /// messages that are not due yet with it.
    pub fn with_delay_hop(mut self, hop: Duration) -> Self {
        self.delay_hop = hop.clamp(Duration::from_secs(1), crate::delay::MAX_HOP);
        self
    }

    /// The longest delay hop of messages sent to this queue ([`Queue::with_delay_hop`]; 900 s).
    pub fn delay_hop(&self) -> Duration {
        self.delay_hop
    }

    /// Send `msg` to be delivered at `when`, even past SQS's 15-minute limit: within one hop a
    /// plain `DelaySeconds`, else hops through consumers that re-send it until it is due (see
    /// [`delay`](crate::delay)). A time in the past sends at once.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: sqskit::Queue) -> Result<(), sqskit::Error> {
    /// use std::time::{Duration, SystemTime};
    /// let tomorrow = SystemTime::now() + Duration::from_secs(24 * 3600);
    /// queue.send_at(sqskit::OutgoingMessage::new("reminder"), tomorrow).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `deliver_at` on a FIFO queue (no per-message delay there) or
    /// for a message that already has a `DelaySeconds`; else as [`Queue::send`].
    pub async fn send_at(
        &self,
        msg: impl Into<OutgoingMessage>,
        when: std::time::SystemTime,
    ) -> Result<SentMessage, Error> {
        let mut msg = msg.into();
        if self.is_fifo() {
            return Err(Error::Invalid {
                what: "deliver_at",
                reason: format!("{} is a FIFO queue: FIFO queues have no per-message delay", self.name()),
            });
        }
        if msg.delay_seconds.is_some() {
            return Err(Error::Invalid {
                what: "deliver_at",
                reason: "the message already has a delay_seconds".into(),
            });
        }
        let (delay, hops) = crate::delay::first_hop(when, std::time::SystemTime::now(), self.delay_hop);
        if hops {
            crate::delay::mark(&mut msg, when);
        }
        msg.delay_seconds = Some(delay).filter(|d| *d > 0);
        self.send(msg).await
    }

    /// Send large bodies through S3 and resolve them on receive (claim check, in the Amazon
    /// SQS Extended Client's format; see [`payload`](crate::payload)). This is the claim
    /// check's one home: `send` and `send_batch`
    /// offload what `check` says, a [`Processor`](crate::Processor) working on this queue
    /// resolves pointers before decoding, and [`settle`](crate::settle) deletes objects after
    /// their message's delete when cleanup is on. Messages that already carry a pointer (DLQ
    /// forwarding, redrive) are sent as they are.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() {
    /// use sqskit::{payload::ClaimCheck, Queue};
    /// let sdk = sqskit::load_aws_config().await;
    /// let queue = Queue::new(aws_sdk_sqs::Client::new(&sdk), "https://sqs.eu-west-1.amazonaws.com/1/jobs")
    ///     .with_claim_check(ClaimCheck::new(sqskit::payload::s3_client(&sdk), "payloads"));
    /// assert_eq!(queue.claim_check().map(|c| c.bucket()), Some("payloads"));
    /// # }
    /// ```
    #[cfg(feature = "payload")]
    pub fn with_claim_check(mut self, check: crate::payload::ClaimCheck) -> Self {
        self.claim_check = Some(check);
        self
    }

    /// The claim check set with [`Queue::with_claim_check`].
    #[cfg(feature = "payload")]
    pub fn claim_check(&self) -> Option<&crate::payload::ClaimCheck> {
        self.claim_check.as_ref()
    }

    /// `msg` as it goes on the wire: offloaded to S3 when the claim check says so.
    async fn offload(&self, msg: OutgoingMessage) -> Result<OutgoingMessage, Error> {
        #[cfg(feature = "payload")]
        if let Some(check) = &self.claim_check {
            return Ok(check.offload(msg).await?);
        }
        Ok(msg)
    }

    /// A handle using the AWS configuration from the environment ([`load_aws_config`]).
    pub async fn from_env(url: impl Into<String>) -> Self {
        let config = load_aws_config().await;
        Self::new(aws_sdk_sqs::Client::new(&config), url)
    }

    /// Look up a queue by name (`GetQueueUrl`).
    ///
    /// # Errors
    /// [`Error::QueueDoesNotExist`] when there is no such queue, or a transport/service error.
    pub async fn by_name(client: aws_sdk_sqs::Client, name: &str, owner: Option<&str>) -> Result<Self, Error> {
        let out = client
            .get_queue_url()
            .queue_name(name)
            .set_queue_owner_aws_account_id(owner.map(str::to_string))
            .send()
            .await
            .map_err(|e| sqs_error("GetQueueUrl", name, e))?;
        let url = out.queue_url().ok_or_else(|| Error::QueueDoesNotExist { queue: name.to_string() })?;
        Ok(Self::new(client, url))
    }

    /// Look up a queue by ARN (`arn:aws:sqs:REGION:ACCOUNT:NAME`).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed ARN, else as [`Queue::by_name`].
    pub async fn by_arn(client: aws_sdk_sqs::Client, arn: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = arn.split(':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[2] != "sqs" {
            return Err(Error::Invalid {
                what: "queue ARN",
                reason: format!("{arn:?} is not arn:aws:sqs:REGION:ACCOUNT:NAME"),
            });
        }
        Self::by_name(client, parts[5], Some(parts[4]).filter(|a| !a.is_empty())).await
    }

    /// The queue URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    #[cfg(feature = "lambda")]
    pub(crate) fn shared_url(&self) -> Arc<str> {
        self.url.clone()
    }

    /// The queue name (last path segment of the URL).
    pub fn name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }

    /// Whether this is a FIFO queue (its name ends in `.fifo`).
    pub fn is_fifo(&self) -> bool {
        self.name().ends_with(".fifo")
    }

    /// The underlying SDK client.
    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    /// Send one message (through S3 when it is large and a claim check is set:
    /// [`Queue::with_claim_check`]).
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] / [`Error::Limit`] before any call when the message breaks
    /// an SQS limit; [`Error::Payload`] when its upload fails; otherwise the classified SDK error.
    pub async fn send(&self, msg: impl Into<OutgoingMessage>) -> Result<SentMessage, Error> {
        let mut msg = msg.into();
        crate::trace::inject(&mut msg);
        let msg = self.offload(msg).await?;
        validate_outgoing(0, &msg)?;
        let out = self
            .client
            .send_message()
            .queue_url(self.url())
            .message_body(msg.body)
            .set_delay_seconds(msg.delay_seconds.map(|d| d as i32))
            .set_message_attributes(to_sdk_attributes(&msg.attributes)?)
            .set_message_system_attributes(to_sdk_system_attributes(msg.trace_header.as_deref())?)
            .set_message_group_id(msg.group_id)
            .set_message_deduplication_id(msg.dedup_id)
            .send()
            .await
            .map_err(|e| sqs_error("SendMessage", self.url(), e))?;
        Ok(SentMessage {
            index: 0,
            message_id: out.message_id().unwrap_or_default().to_string(),
            sequence_number: out.sequence_number().map(str::to_string),
        })
    }

    /// Send `value` serialised as JSON.
    ///
    /// # Errors
    /// [`Error::Encode`] when `value` cannot be serialised, else as [`Queue::send`].
    pub async fn send_typed<T: serde::Serialize + ?Sized>(&self, value: &T) -> Result<SentMessage, Error> {
        self.send(OutgoingMessage::json(value)?).await
    }

    /// Send any number of messages, split into `SendMessageBatch` calls of at most 10 entries
    /// and 1 MiB. Entries that fail with `SenderFault = false` are retried (bounded, with
    /// backoff); the others are returned in [`SendBatchReport::failed`]. Calls run
    /// concurrently on standard queues and one after another (in order) on FIFO queues.
    ///
    /// FIFO order: once an entry of a message group fails, no later entry of that group in
    /// this call is sent (they are returned as failed with code [`EARLIER_ENTRY_FAILED`]), and
    /// a failed entry is not retried after a later entry of its group went out, so the
    /// group's order on the queue is always a prefix of the caller's order.
    ///
    /// With a claim check ([`Queue::with_claim_check`]) the large bodies are uploaded first and
    /// the batches carry their pointers.
    ///
    /// # Errors
    /// A limit violation of any message, or a failed upload ([`Error::Payload`]), before any
    /// SQS call is made; [`Error::QueueDoesNotExist`].
    pub async fn send_batch(
        &self,
        messages: impl IntoIterator<Item = OutgoingMessage>,
    ) -> Result<SendBatchReport, Error> {
        let mut messages: Vec<OutgoingMessage> = messages.into_iter().collect();
        // trace context first, so the claim check sees the size that goes on the wire
        messages.iter_mut().for_each(crate::trace::inject);
        #[cfg(feature = "payload")]
        if self.claim_check.is_some() {
            // uploads first (a few at a time), so the chunks count pointers, not payloads
            messages = futures::stream::iter(messages.into_iter().map(|m| self.offload(m)))
                .buffered(SEND_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
        }
        let fifo = self.is_fifo();
        let groups: Vec<Option<String>> = messages.iter().map(|m| m.group_id.clone()).collect();
        let mut sizes = Vec::with_capacity(messages.len());
        let mut entries = Vec::with_capacity(messages.len());
        for (i, m) in messages.into_iter().enumerate() {
            validate_outgoing(i, &m)?;
            sizes.push(m.payload_size());
            entries.push(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(m.body.clone())
                    .set_delay_seconds(m.delay_seconds.map(|d| d as i32))
                    .set_message_attributes(to_sdk_attributes(&m.attributes)?)
                    .set_message_system_attributes(to_sdk_system_attributes(m.trace_header.as_deref())?)
                    .set_message_group_id(m.group_id)
                    .set_message_deduplication_id(m.dedup_id)
                    .build()
                    .map_err(|e| Error::Invalid { what: "batch entry", reason: e.to_string() })?,
            );
        }
        let chunks = limits::chunk_by_limits(&sizes);
        let mut report = SendBatchReport::default();
        if fifo {
            // one call after another; a group that had a failure sends nothing more
            let mut blocked: std::collections::HashSet<String> = std::collections::HashSet::new();
            for r in chunks {
                let mut chunk = Vec::new();
                for i in r {
                    match groups[i].as_deref() {
                        Some(g) if blocked.contains(g) => report.failed.push(EntryFailure {
                            index: i,
                            code: EARLIER_ENTRY_FAILED.into(),
                            message: format!("not sent: an earlier message of group {g:?} in this call failed"),
                            sender_fault: true,
                        }),
                        _ => chunk.push((i, entries[i].clone())),
                    }
                }
                if chunk.is_empty() {
                    continue;
                }
                let r = self.send_chunk(chunk, Some(&groups)).await?;
                blocked.extend(r.failed.iter().filter_map(|f| groups[f.index].clone()));
                report.sent.extend(r.sent);
                report.failed.extend(r.failed);
                report.calls += r.calls;
            }
        } else {
            let results: Vec<Result<SendBatchReport, Error>> = futures::stream::iter(chunks.into_iter().map(|r| {
                let chunk: Vec<(usize, SendMessageBatchRequestEntry)> =
                    r.clone().map(|i| (i, entries[i].clone())).collect();
                self.send_chunk(chunk, None)
            }))
            .buffered(SEND_CONCURRENCY)
            .collect()
            .await;
            for r in results {
                let r = r?;
                report.sent.extend(r.sent);
                report.failed.extend(r.failed);
                report.calls += r.calls;
            }
        }
        report.sent.sort_by_key(|s| s.index);
        report.failed.sort_by_key(|f| f.index);
        Ok(report)
    }

    /// One chunk, with retries of entries SQS failed on its side. `groups` (FIFO: the group id
    /// of every input index): an entry is not retried once a later entry of its group was sent.
    async fn send_chunk(
        &self,
        mut pending: Vec<(usize, SendMessageBatchRequestEntry)>,
        groups: Option<&[Option<String>]>,
    ) -> Result<SendBatchReport, Error> {
        let mut report = SendBatchReport::default();
        for attempt in 0..SEND_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(retry_delay(attempt)).await;
            }
            report.calls += 1;
            let last = attempt + 1 == SEND_ATTEMPTS;
            let call = self
                .client
                .send_message_batch()
                .queue_url(self.url())
                .set_entries(Some(pending.iter().map(|(_, e)| e.clone()).collect()))
                .send()
                .await;
            let out = match call {
                Ok(out) => out,
                Err(e) => {
                    let err = sqs_error("SendMessageBatch", self.url(), e);
                    if matches!(err, Error::QueueDoesNotExist { .. }) {
                        return Err(err);
                    }
                    if err.is_transient() && !last {
                        tracing::warn!(queue = self.name(), error = %err, "SendMessageBatch failed; retrying");
                        continue;
                    }
                    let (code, sender_fault) = match &err {
                        Error::Service { code, .. } => (code.clone(), true),
                        _ => ("Transport".to_string(), false),
                    };
                    report.failed.extend(pending.iter().map(|(i, _)| EntryFailure {
                        index: *i,
                        code: code.clone(),
                        message: err.to_string(),
                        sender_fault,
                    }));
                    return Ok(report);
                }
            };
            for ok in out.successful() {
                if let Ok(index) = ok.id().parse::<usize>() {
                    report.sent.push(SentMessage {
                        index,
                        message_id: ok.message_id().to_string(),
                        sequence_number: ok.sequence_number().map(str::to_string),
                    });
                }
            }
            let sent_now: Vec<usize> = out.successful().iter().filter_map(|s| s.id().parse().ok()).collect();
            // FIFO: retrying an entry after a later one of its group went out would reorder them
            let overtaken = |index: usize| {
                groups.is_some_and(|g| {
                    g.get(index).and_then(Option::as_deref).is_some_and(|group| {
                        sent_now.iter().any(|&j| j > index && g.get(j).and_then(Option::as_deref) == Some(group))
                    })
                })
            };
            let mut retry = Vec::new();
            for f in out.failed() {
                let Ok(index) = f.id().parse::<usize>() else { continue };
                if !f.sender_fault() && !last && !overtaken(index) {
                    if let Some(pos) = pending.iter().position(|(i, _)| *i == index) {
                        retry.push(pending.swap_remove(pos));
                        continue;
                    }
                }
                report.failed.push(EntryFailure {
                    index,
                    code: f.code().to_string(),
                    message: f.message().unwrap_or_default().to_string(),
                    sender_fault: f.sender_fault(),
                });
            }
            if retry.is_empty() {
                return Ok(report);
            }
            tracing::warn!(
                queue = self.name(),
                entries = retry.len(),
                "SendMessageBatch entries failed on the server side; retrying"
            );
            retry.sort_by_key(|(i, _)| *i);
            pending = retry;
        }
        Ok(report)
    }

    /// Receive up to `max` (1..=10) messages, long-polling up to `wait` (0..=20 s). `visibility`
    /// overrides the queue's visibility timeout for these messages (0..=43,200 s).
    /// Message attributes and all system attributes are requested.
    ///
    /// # Errors
    /// [`Error::Limit`] for values outside the SQS limits (not clamped), else the classified SDK error.
    pub async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<ReceivedMessage>, Error> {
        limits::check_range("max_messages", max.into(), 1, MAX_BATCH_ENTRIES as u64)?;
        limits::check_range("wait_time_seconds", wait.as_secs(), 0, MAX_WAIT_SECONDS)?;
        if let Some(v) = visibility {
            limits::check_range("visibility_timeout", v.as_secs(), 0, MAX_VISIBILITY_SECONDS)?;
        }
        let call = self
            .client
            .receive_message()
            .queue_url(self.url())
            .max_number_of_messages(max as i32)
            .wait_time_seconds(wait.as_secs() as i32)
            .set_visibility_timeout(visibility.map(|v| v.as_secs() as i32))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send();
        let out =
            crate::span::operation("receive", self.name(), call, |r| r.as_ref().map_or(0, |o| o.messages().len()))
                .await
                .map_err(|e| sqs_error("ReceiveMessage", self.url(), e))?;
        let now = Instant::now();
        // taken apart, not copied: the body and attributes move into the ReceivedMessage
        let messages = out.messages.unwrap_or_default();
        let mut received = Vec::with_capacity(messages.len());
        for m in messages {
            let (Some(id), Some(handle)) = (m.message_id, m.receipt_handle) else {
                tracing::warn!(
                    queue = self.name(),
                    "ReceiveMessage returned a message without id or receipt handle; skipped"
                );
                continue;
            };
            received.push(ReceivedMessage {
                message_id: id,
                receipt_handle: handle,
                body: m.body.unwrap_or_default(),
                attributes: m
                    .message_attributes
                    .map(|a| a.into_iter().map(|(k, v)| (k, from_sdk_attribute(&v))).collect())
                    .unwrap_or_default(),
                system_attributes: m
                    .attributes
                    .map(|a| a.into_iter().map(|(k, v)| (k.as_str().to_string(), v)).collect())
                    .unwrap_or_default(),
                received_at: now,
                queue_url: Some(self.url.clone()),
            });
        }
        Ok(received)
    }

    /// Delete messages by receipt handle, in calls of at most 10.
    ///
    /// # Errors
    /// A classified SDK error when a whole call fails; per-entry failures are in the report.
    pub async fn delete_batch<S: AsRef<str>>(&self, handles: &[S]) -> Result<BatchReport, Error> {
        let mut report = BatchReport::default();
        for (c, chunk) in handles.chunks(MAX_BATCH_ENTRIES).enumerate() {
            let base = c * MAX_BATCH_ENTRIES;
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id((base + i).to_string())
                        .receipt_handle(h.as_ref())
                        .build()
                        .map_err(|e| Error::Invalid { what: "delete entry", reason: e.to_string() })
                })
                .collect::<Result<Vec<_>, _>>()?;
            report.calls += 1;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(self.url())
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sqs_error("DeleteMessageBatch", self.url(), e))?;
            collect_batch(&mut report, out.successful().iter().map(|s| s.id()), out.failed());
        }
        Ok(report)
    }

    /// Set the same visibility timeout on several messages, in calls of at most 10, in order.
    ///
    /// # Errors
    /// As [`Queue::change_visibility_each`].
    pub async fn change_visibility_batch<S: AsRef<str>>(
        &self,
        handles: &[S],
        seconds: u32,
    ) -> Result<BatchReport, Error> {
        let entries: Vec<(&str, u32)> = handles.iter().map(|h| (h.as_ref(), seconds)).collect();
        self.change_visibility_each(&entries).await
    }

    /// Set a visibility timeout per message (`(receipt handle, seconds)`), in calls of at most
    /// 10, keeping the given order inside each call.
    ///
    /// # Errors
    /// [`Error::Limit`] for a timeout over 43,200 s; a classified SDK error when a whole call
    /// fails; per-entry failures are in the report.
    pub async fn change_visibility_each(&self, entries: &[(&str, u32)]) -> Result<BatchReport, Error> {
        for (_, s) in entries {
            limits::check_range("visibility_timeout", u64::from(*s), 0, MAX_VISIBILITY_SECONDS)?;
        }
        let mut report = BatchReport::default();
        for (c, chunk) in entries.chunks(MAX_BATCH_ENTRIES).enumerate() {
            let base = c * MAX_BATCH_ENTRIES;
            let sdk_entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (h, s))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id((base + i).to_string())
                        .receipt_handle(*h)
                        .visibility_timeout(*s as i32)
                        .build()
                        .map_err(|e| Error::Invalid { what: "visibility entry", reason: e.to_string() })
                })
                .collect::<Result<Vec<_>, _>>()?;
            report.calls += 1;
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(self.url())
                .set_entries(Some(sdk_entries))
                .send()
                .await
                .map_err(|e| sqs_error("ChangeMessageVisibilityBatch", self.url(), e))?;
            collect_batch(&mut report, out.successful().iter().map(|s| s.id()), out.failed());
        }
        Ok(report)
    }

    /// Queue depth, ARN, visibility timeout and redrive policy (with the DLQ URL resolved).
    ///
    /// # Errors
    /// The classified SDK error of `GetQueueAttributes`.
    pub async fn attributes(&self) -> Result<QueueAttributes, Error> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(self.url())
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| sqs_error("GetQueueAttributes", self.url(), e))?;
        let empty = HashMap::new();
        let a = out.attributes().unwrap_or(&empty);
        let get = |n: QueueAttributeName| a.get(&n).map(String::as_str);
        let num = |n: QueueAttributeName| get(n).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let mut attrs = QueueAttributes {
            visible: num(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: num(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: num(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            arn: get(QueueAttributeName::QueueArn).map(str::to_string),
            visibility_timeout: get(QueueAttributeName::VisibilityTimeout).and_then(|v| v.parse().ok()),
            fifo: get(QueueAttributeName::FifoQueue) == Some("true"),
            redrive: None,
        };
        if let Some(policy) = get(QueueAttributeName::RedrivePolicy) {
            attrs.redrive = parse_redrive(policy);
            if let Some(r) = attrs.redrive.as_mut() {
                r.dead_letter_url = match Queue::by_arn(self.client.clone(), &r.dead_letter_arn).await {
                    Ok(q) => Some(q.url().to_string()),
                    Err(Error::QueueDoesNotExist { .. }) => {
                        tracing::error!(queue = self.name(), dlq = %r.dead_letter_arn,
                            "the redrive policy names a dead-letter queue that does not exist");
                        None
                    }
                    // a transient or permission error must not read as "no DLQ"
                    Err(e) => return Err(e),
                };
            }
        }
        Ok(attrs)
    }

    /// The dead-letter queue from the redrive policy, if any.
    ///
    /// # Errors
    /// As [`Queue::attributes`].
    pub async fn dead_letter_queue(&self) -> Result<Option<Queue>, Error> {
        Ok(self
            .attributes()
            .await?
            .redrive
            .and_then(|r| r.dead_letter_url)
            .map(|url| Queue::new(self.client.clone(), url)))
    }

    /// Look at up to `max` messages without consuming them: receive them (held invisible for
    /// `hold`, ≥ 1 s), then release them with visibility 0. Each peek counts as a receive
    /// (`ApproximateReceiveCount` grows; a redrive policy may move a message to its DLQ).
    ///
    /// # Errors
    /// As [`Queue::receive`] and [`Queue::change_visibility_each`].
    pub async fn peek(&self, max: usize, hold: Duration) -> Result<Vec<ReceivedMessage>, Error> {
        let hold = hold.max(Duration::from_secs(1));
        let mut got: Vec<ReceivedMessage> = Vec::new();
        while got.len() < max {
            let want = (max - got.len()).min(MAX_BATCH_ENTRIES) as u32;
            let batch = self.receive(want, Duration::from_secs(1), Some(hold)).await?;
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
        }
        let handles: Vec<(&str, u32)> = got.iter().map(|m| (m.receipt_handle.as_str(), 0)).collect();
        self.change_visibility_each(&handles).await?.into_result()?;
        Ok(got)
    }

    /// Delete every message in the queue (`PurgeQueue`).
    ///
    /// # Errors
    /// The classified SDK error.
    pub async fn purge(&self) -> Result<(), Error> {
        self.client
            .purge_queue()
            .queue_url(self.url())
            .send()
            .await
            .map_err(|e| sqs_error("PurgeQueue", self.url(), e))?;
        Ok(())
    }
}

/// Parse a `RedrivePolicy` JSON document (`maxReceiveCount` may be a string or a number).
pub(crate) fn parse_redrive(policy: &str) -> Option<RedrivePolicy> {
    let v: serde_json::Value = serde_json::from_str(policy).ok()?;
    let arn = v.get("deadLetterTargetArn")?.as_str()?.to_string();
    let max = match v.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => n.as_u64()? as u32,
        serde_json::Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some(RedrivePolicy { dead_letter_arn: arn, dead_letter_url: None, max_receive_count: max })
}

fn collect_batch<'a>(
    report: &mut BatchReport,
    successful: impl Iterator<Item = &'a str>,
    failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
) {
    report.succeeded.extend(successful.filter_map(|id| id.parse::<usize>().ok()));
    report.failed.extend(failed.iter().filter_map(|f| {
        Some(EntryFailure {
            index: f.id().parse().ok()?,
            code: f.code().to_string(),
            message: f.message().unwrap_or_default().to_string(),
            sender_fault: f.sender_fault(),
        })
    }));
}

fn retry_delay(attempt: usize) -> Duration {
    let cap = 100u64 << attempt.min(6);
    Duration::from_millis(cap / 2 + fastrand::u64(0..=cap / 2))
}

/// Check one message against the SQS limits (size, delay, attribute count, non-empty body).
///
/// # Errors
/// The first limit it breaks, naming it.
pub fn validate_outgoing(index: usize, m: &OutgoingMessage) -> Result<(), Error> {
    limits::check_message_size(index, m.payload_size())?;
    if let Some(d) = m.delay_seconds {
        limits::check_range("delay_seconds", d.into(), 0, MAX_DELAY_SECONDS)?;
    }
    if m.attributes.len() > limits::MAX_MESSAGE_ATTRIBUTES {
        return Err(Error::Limit {
            what: "message attributes",
            value: m.attributes.len() as u64,
            min: 0,
            max: limits::MAX_MESSAGE_ATTRIBUTES as u64,
        });
    }
    if m.body.is_empty() {
        return Err(Error::Invalid {
            what: "message body",
            reason: format!("message {index} is empty; SQS needs at least 1 character"),
        });
    }
    Ok(())
}

fn to_sdk_attributes(
    attrs: &HashMap<String, AttributeValue>,
) -> Result<Option<HashMap<String, MessageAttributeValue>>, Error> {
    if attrs.is_empty() {
        return Ok(None);
    }
    attrs
        .iter()
        .map(|(k, v)| {
            MessageAttributeValue::builder()
                .data_type(&v.data_type)
                .set_string_value(v.string_value.clone())
                .set_binary_value(v.binary_value.clone().map(Blob::new))
                .build()
                .map(|sdk| (k.clone(), sdk))
                .map_err(|e| Error::Invalid { what: "message attribute", reason: format!("{k}: {e}") })
        })
        .collect::<Result<HashMap<_, _>, _>>()
        .map(Some)
}

type SdkSystemAttributes =
    HashMap<aws_sdk_sqs::types::MessageSystemAttributeNameForSends, aws_sdk_sqs::types::MessageSystemAttributeValue>;

/// `AWSTraceHeader`, the one message system attribute SQS accepts on send.
fn to_sdk_system_attributes(trace_header: Option<&str>) -> Result<Option<SdkSystemAttributes>, Error> {
    use aws_sdk_sqs::types::{MessageSystemAttributeNameForSends, MessageSystemAttributeValue};
    let Some(header) = trace_header else { return Ok(None) };
    let value = MessageSystemAttributeValue::builder()
        .data_type("String")
        .string_value(header)
        .build()
        .map_err(|e| Error::Invalid { what: "AWSTraceHeader", reason: e.to_string() })?;
    Ok(Some(HashMap::from([(MessageSystemAttributeNameForSends::AwsTraceHeader, value)])))
}

fn from_sdk_attribute(v: &MessageAttributeValue) -> AttributeValue {
    AttributeValue {
        data_type: v.data_type().to_string(),
        string_value: v.string_value().map(str::to_string),
        binary_value: v.binary_value().map(|b| b.as_ref().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policy_parses_number_and_string_counts() {
        let p =
            parse_redrive(r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":5}"#)
                .unwrap();
        assert_eq!(p.max_receive_count, 5);
        assert_eq!(p.dead_letter_arn, "arn:aws:sqs:us-east-1:000000000000:dlq");
        let p = parse_redrive(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":"3"}"#).unwrap();
        assert_eq!(p.max_receive_count, 3);
        assert!(parse_redrive("not json").is_none());
        assert!(parse_redrive(r#"{"maxReceiveCount":3}"#).is_none());
    }

    #[test]
    fn outgoing_validation_names_the_problem() {
        let too_big = OutgoingMessage::new("x".repeat(limits::MAX_PAYLOAD_BYTES + 1));
        assert!(matches!(validate_outgoing(0, &too_big), Err(Error::MessageTooLarge { size: 1_048_577, .. })));
        let late = OutgoingMessage::new("x").delay_seconds(901);
        assert!(validate_outgoing(0, &late).unwrap_err().to_string().contains("delay_seconds"));
        // attributes count toward the size
        let attr = OutgoingMessage::new("x".repeat(limits::MAX_PAYLOAD_BYTES - 10))
            .attribute("name", AttributeValue::string("value"));
        assert_eq!(attr.payload_size(), limits::MAX_PAYLOAD_BYTES - 10 + 4 + 6 + 5);
        assert!(validate_outgoing(0, &attr).is_err());
    }

    #[test]
    fn queue_name_and_fifo_come_from_the_url() {
        let conf =
            aws_sdk_sqs::Config::builder().behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest()).build();
        let q = Queue::new(aws_sdk_sqs::Client::from_conf(conf), "http://h/queue/us-east-1/000000000000/jobs.fifo");
        assert_eq!(q.name(), "jobs.fifo");
        assert!(q.is_fifo());
    }
}
