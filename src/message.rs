//! Messages: what is sent, what is received, and what a handler sees.
//!
//! [`ReceivedMessage`] is the source-independent form of a received SQS message
//! (from `ReceiveMessage` or from a Lambda `SqsEvent`); [`Message<T>`] is what a
//! handler gets: the decoded body plus the metadata (with feature `events`, also the envelope
//! its body came out of: [`Message::envelope`]). [`OutgoingMessage`] is one message to send,
//! with its attributes, delay and FIFO ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A message attribute value, as SQS carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeValue {
    /// `String`, `Number`, `Binary`, or one of those with a custom suffix (`String.json`).
    pub data_type: String,
    /// Value of `String` and `Number` attributes.
    pub string_value: Option<String>,
    /// Value of `Binary` attributes.
    pub binary_value: Option<Vec<u8>>,
}

impl AttributeValue {
    /// A `String` attribute.
    pub fn string(value: impl Into<String>) -> Self {
        Self { data_type: "String".into(), string_value: Some(value.into()), binary_value: None }
    }
    /// A `Number` attribute.
    pub fn number(value: impl std::fmt::Display) -> Self {
        Self { data_type: "Number".into(), string_value: Some(value.to_string()), binary_value: None }
    }
    /// A `Binary` attribute.
    pub fn binary(value: impl Into<Vec<u8>>) -> Self {
        Self { data_type: "Binary".into(), string_value: None, binary_value: Some(value.into()) }
    }
    /// The string value, if this is a `String` or `Number` attribute.
    pub fn as_str(&self) -> Option<&str> {
        self.string_value.as_deref()
    }
    /// Bytes SQS counts for this attribute (without its name).
    pub fn payload_size(&self) -> usize {
        self.data_type.len()
            + self.string_value.as_ref().map_or(0, String::len)
            + self.binary_value.as_ref().map_or(0, Vec::len)
    }
}

/// Payload size of a message as SQS counts it: body + every attribute's name, type and value.
pub fn payload_size(body: &str, attributes: &HashMap<String, AttributeValue>) -> usize {
    body.len() + attributes.iter().map(|(k, v)| k.len() + v.payload_size()).sum::<usize>()
}

/// One message to send.
///
/// # Example
/// ```
/// use sqskit::{OutgoingMessage, AttributeValue};
/// let m = OutgoingMessage::new(r#"{"order":42}"#)
///     .attribute("kind", AttributeValue::string("order.created"))
///     .delay_seconds(30);
/// assert_eq!(m.delay_seconds, Some(30));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The body (any text; SQS allows a restricted Unicode set).
    pub body: String,
    /// Message attributes (at most 10).
    pub attributes: HashMap<String, AttributeValue>,
    /// Delay before the message becomes visible, 0..=900 s (standard queues only).
    pub delay_seconds: Option<u32>,
    /// Message group id: the group on a FIFO queue, the tenant on a standard (fair) queue.
    pub group_id: Option<String>,
    /// FIFO deduplication id (not needed with content-based deduplication).
    pub dedup_id: Option<String>,
    /// The X-Ray trace header, sent as the `AWSTraceHeader` message system attribute (it counts
    /// toward neither the 10-attribute nor the size limit). Inside a handler, `Queue::send*` fill
    /// it from the current trace context when it is `None` (see [`crate::trace`]).
    pub trace_header: Option<String>,
}

impl OutgoingMessage {
    /// A message with this body and nothing else.
    pub fn new(body: impl Into<String>) -> Self {
        Self { body: body.into(), ..Self::default() }
    }
    /// A message whose body is `value` as JSON.
    ///
    /// # Errors
    /// [`crate::Error::Encode`] when `value` cannot be serialised.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, crate::Error> {
        Ok(Self::new(serde_json::to_string(value)?))
    }
    /// Add a message attribute.
    pub fn attribute(mut self, name: impl Into<String>, value: AttributeValue) -> Self {
        self.attributes.insert(name.into(), value);
        self
    }
    /// Set the delay (validated when sent: 0..=900).
    pub fn delay_seconds(mut self, seconds: u32) -> Self {
        self.delay_seconds = Some(seconds);
        self
    }
    /// Set the message group id: the FIFO group, or on a standard queue the tenant (fair
    /// queues: SQS keeps one noisy tenant from delaying the others; no ordering).
    pub fn group_id(mut self, id: impl Into<String>) -> Self {
        self.group_id = Some(id.into());
        self
    }
    /// Set the FIFO deduplication id.
    pub fn dedup_id(mut self, id: impl Into<String>) -> Self {
        self.dedup_id = Some(id.into());
        self
    }
    /// Set the `AWSTraceHeader` system attribute (an X-Ray trace header).
    pub fn trace_header(mut self, header: impl Into<String>) -> Self {
        self.trace_header = Some(header.into());
        self
    }
    /// Payload size as SQS counts it.
    pub fn payload_size(&self) -> usize {
        payload_size(&self.body, &self.attributes)
    }
}

/// A received message, independent of where it came from (`ReceiveMessage` or a Lambda event).
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// SQS message id.
    pub message_id: String,
    /// Receipt handle of this receive (needed to delete or change visibility).
    pub receipt_handle: String,
    /// Raw body.
    pub body: String,
    /// Message attributes.
    pub attributes: HashMap<String, AttributeValue>,
    /// System attributes (`ApproximateReceiveCount`, `SentTimestamp`, `MessageGroupId`, ...).
    pub system_attributes: HashMap<String, String>,
    /// When this process got the message (the visibility clock started about then).
    pub received_at: Instant,
    /// URL of the queue it was received from, when known (always for `Queue::receive`; for a
    /// Lambda event once the adapter resolved the event source).
    pub queue_url: Option<Arc<str>>,
}

impl ReceivedMessage {
    /// `ApproximateReceiveCount` (1 on the first receive; 1 if absent).
    pub fn receive_count(&self) -> u32 {
        self.system_attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1)
    }
    /// `MessageGroupId` (FIFO queues).
    pub fn group_id(&self) -> Option<&str> {
        self.system_attributes.get("MessageGroupId").map(String::as_str)
    }
    /// `SequenceNumber` (FIFO queues).
    pub fn sequence_number(&self) -> Option<&str> {
        self.system_attributes.get("SequenceNumber").map(String::as_str)
    }
    /// `MessageDeduplicationId` (FIFO queues).
    pub fn dedup_id(&self) -> Option<&str> {
        self.system_attributes.get("MessageDeduplicationId").map(String::as_str)
    }
    /// `SentTimestamp` as a time.
    pub fn sent_at(&self) -> Option<SystemTime> {
        self.millis_attr("SentTimestamp")
    }
    /// `ApproximateFirstReceiveTimestamp` as a time.
    pub fn first_received_at(&self) -> Option<SystemTime> {
        self.millis_attr("ApproximateFirstReceiveTimestamp")
    }
    fn millis_attr(&self, name: &str) -> Option<SystemTime> {
        let ms: u64 = self.system_attributes.get(name)?.parse().ok()?;
        UNIX_EPOCH.checked_add(Duration::from_millis(ms))
    }
    /// A message attribute's string value.
    pub fn attribute_str(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(AttributeValue::as_str)
    }
    /// The name of the queue it came from (last segment of [`ReceivedMessage::queue_url`]).
    pub fn queue_name(&self) -> Option<&str> {
        self.queue_url.as_deref().and_then(|u| u.rsplit('/').next())
    }
}

/// What a handler receives: the decoded body and the message's metadata.
///
/// # Example
/// ```
/// use sqskit::Message;
/// async fn handle(msg: Message<serde_json::Value>) -> Result<(), sqskit::HandlerError> {
///     tracing::info!(id = msg.id(), receive_count = msg.receive_count(), "got it");
///     let _order = msg.body["order"].as_u64();
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Message<T> {
    /// The decoded body.
    pub body: T,
    raw: Arc<ReceivedMessage>,
    #[cfg(feature = "events")]
    envelope: Option<Arc<crate::envelope::Envelope>>,
}

impl<T> Message<T> {
    /// Wrap a decoded body with its raw message.
    pub fn new(body: T, raw: Arc<ReceivedMessage>) -> Self {
        Self {
            body,
            raw,
            #[cfg(feature = "events")]
            envelope: None,
        }
    }
    /// The same message with another body (its metadata and envelope kept).
    ///
    /// # Example
    /// ```
    /// # use std::sync::Arc;
    /// # fn raw() -> Arc<sqskit::ReceivedMessage> { unimplemented!() }
    /// # fn demo() {
    /// let m = sqskit::Message::new("42".to_string(), raw());
    /// let n: sqskit::Message<u64> = m.map(|s| s.parse().unwrap_or(0));
    /// # let _ = n; }
    /// ```
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Message<U> {
        Message {
            body: f(self.body),
            raw: self.raw,
            #[cfg(feature = "events")]
            envelope: self.envelope,
        }
    }
    /// The envelope the body came out of (SNS, EventBridge, S3, CloudEvents), when the
    /// processor opens one ([`Processor::with_envelope`](crate::Processor::with_envelope)).
    #[cfg(feature = "events")]
    pub fn envelope(&self) -> Option<&crate::envelope::Envelope> {
        self.envelope.as_deref()
    }
    /// Attach the envelope the body came out of (the processor does; handy in handler tests).
    #[cfg(feature = "events")]
    pub fn with_envelope(mut self, envelope: Arc<crate::envelope::Envelope>) -> Self {
        self.envelope = Some(envelope);
        self
    }
    /// SQS message id.
    pub fn id(&self) -> &str {
        &self.raw.message_id
    }
    /// `ApproximateReceiveCount`.
    pub fn receive_count(&self) -> u32 {
        self.raw.receive_count()
    }
    /// FIFO message group id.
    pub fn group_id(&self) -> Option<&str> {
        self.raw.group_id()
    }
    /// Message attributes.
    pub fn attributes(&self) -> &HashMap<String, AttributeValue> {
        &self.raw.attributes
    }
    /// URL of the queue it came from, when known.
    pub fn queue_url(&self) -> Option<&str> {
        self.raw.queue_url.as_deref()
    }
    /// Name of the queue it came from, when known.
    pub fn queue_name(&self) -> Option<&str> {
        self.raw.queue_name()
    }
    /// The raw message (body as received, receipt handle, system attributes).
    pub fn raw(&self) -> &ReceivedMessage {
        &self.raw
    }
    /// Take the body out.
    pub fn into_body(self) -> T {
        self.body
    }
}
