//! Envelopes: the message inside a message from another AWS service (feature `events`).
//!
//! Most messages on a real queue were written by another service: an SNS topic without raw
//! delivery wraps each one in its notification (`Type`, `TopicArn`, `Message`, …), an EventBridge
//! rule sends the whole event (`detail-type`, `source`, `detail`), S3 sends object notifications
//! (`Records`, and an `s3:TestEvent` when the notification is configured), other teams send
//! CloudEvents (`type`, `source`, `data` / `data_base64`). This module owns their shapes and how
//! to open them: [`EnvelopeKind::open`] turns a body into the payload(s) inside plus the
//! envelope's metadata ([`Envelope`]), using `aws_lambda_events`' types where they exist
//! ([`SnsMessage`], [`EventBridgeEvent`], [`S3EventRecord`]; [`CloudEvent`] is this module's).
//! A body that does not match is an [`EnvelopeError`] naming the envelope and the field, never
//! quoting the body.
//!
//! It does not decode payloads nor run handlers: the [`processor`](crate::processor) opens the
//! envelope it is built with ([`Processor::with_envelope`](crate::Processor::with_envelope)) and
//! decodes each payload into the handler's type; a handler reads the metadata with
//! [`Message::envelope`](crate::Message::envelope). Routing by type is [`router`](crate::router)'s.
//!
//! | envelope | payload (the handler's body) | metadata | one SQS message gives |
//! |---|---|---|---|
//! | [`EnvelopeKind::Sns`] | `Message` (a string: JSON or text) | [`SnsMessage`] (topic, subject, message attributes) | one payload |
//! | [`EnvelopeKind::EventBridge`] | `detail` (JSON) | [`EventBridgeEvent`] (`detail-type`, source, time, …) | one payload |
//! | [`EnvelopeKind::S3`] | each record of `Records` (JSON) | [`S3EventRecord`] (bucket, key, event name) | one payload per record; none for `s3:TestEvent` |
//! | [`EnvelopeKind::CloudEvents`] | `data` (JSON, or the text of a non-JSON `datacontenttype`), or `data_base64` decoded (UTF-8) | [`CloudEvent`] (type, source, subject, …) | one payload |
//!
//! # Example
//! ```
//! use sqskit::envelope::{Envelope, EnvelopeKind, Opened};
//! let body = r#"{"version":"0","id":"e1","detail-type":"OrderPlaced","source":"shop","account":"1","time":"2026-12-06T10:42:21Z","region":"us-east-1","resources":[],"detail":{"order":7}}"#;
//! let Opened::Payloads(items) = EnvelopeKind::EventBridge.open(body, false).unwrap() else { unreachable!() };
//! assert_eq!(items[0].text, r#"{"order":7}"#);
//! assert_eq!(items[0].envelope.event_type(), Some("OrderPlaced"));
//!
//! let err = EnvelopeKind::Sns.open(r#"{"Type":"Notification","Message":"secret"}"#, false).unwrap_err();
//! assert_eq!(err.to_string(), "sns envelope: missing field `MessageId`");
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use aws_lambda_events::event::eventbridge::EventBridgeEvent;
pub use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
pub use aws_lambda_events::event::sns::{MessageAttribute as SnsMessageAttribute, SnsMessage};

/// Which envelope a queue's bodies come in (`--envelope sns|eventbridge|s3|cloudevents`).
///
/// # Example
/// ```
/// use sqskit::envelope::EnvelopeKind;
/// assert_eq!("eventbridge".parse::<EnvelopeKind>(), Ok(EnvelopeKind::EventBridge));
/// assert!("kafka".parse::<EnvelopeKind>().unwrap_err().contains("sns, eventbridge, s3, cloudevents"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EnvelopeKind {
    /// An SNS notification (a topic's subscription without raw message delivery).
    Sns,
    /// An EventBridge event (a rule's SQS target without an input transformer).
    EventBridge,
    /// An S3 event notification (a bucket's `QueueConfigurations`).
    S3,
    /// A CloudEvent in structured JSON mode (CloudEvents 1.0).
    CloudEvents,
}

impl EnvelopeKind {
    /// Every envelope, in the order the CLI lists them.
    pub const ALL: [EnvelopeKind; 4] = [Self::Sns, Self::EventBridge, Self::S3, Self::CloudEvents];

    /// The name used by `--envelope` and in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sns => "sns",
            Self::EventBridge => "eventbridge",
            Self::S3 => "s3",
            Self::CloudEvents => "cloudevents",
        }
    }

    /// Open `body`: the payload(s) inside and the envelope's metadata, or the S3 test event.
    /// With `full_errors` an error keeps serde's whole message (which may quote the body);
    /// otherwise it names the field and what was expected, never a value.
    ///
    /// # Errors
    /// [`EnvelopeError`] when the body is not this envelope (not JSON, a field missing or of the
    /// wrong type, an SNS `Type` other than `Notification`, no S3 record, a CloudEvent of another
    /// spec version or with both `data` and `data_base64`).
    pub fn open(self, body: &str, full_errors: bool) -> Result<Opened, EnvelopeError> {
        let fail = |reason: String| EnvelopeError { envelope: self, reason };
        let value: Value = serde_json::from_str(body).map_err(|e| fail(json_error(&e, full_errors)))?;
        match self {
            Self::Sns => open_sns(value, full_errors).map_err(fail),
            Self::EventBridge => open_eventbridge(value, full_errors).map_err(fail),
            Self::S3 => open_s3(value, full_errors).map_err(fail),
            Self::CloudEvents => open_cloudevent(value, full_errors).map_err(fail),
        }
    }
}

impl std::fmt::Display for EnvelopeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EnvelopeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("`{s}` is not an envelope: use one of {}", names.join(", "))
        })
    }
}

/// A body that is not the envelope it was declared to be. Its text names the envelope and the
/// field (`sns envelope: missing field `TopicArn``), never a value from the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{envelope} envelope: {reason}")]
pub struct EnvelopeError {
    /// The envelope expected.
    pub envelope: EnvelopeKind,
    /// What does not match.
    pub reason: String,
}

/// What an envelope held.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Opened {
    /// The payloads (one, or one per S3 record), in order.
    Payloads(Vec<Payload>),
    /// S3's `s3:TestEvent`, sent once when a bucket's notification is configured: nothing to
    /// handle (the processor settles it as a success without calling the handler).
    S3TestEvent {
        /// The bucket it names.
        bucket: Option<String>,
    },
}

/// One payload out of an envelope and the envelope's metadata.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The payload as text: JSON for EventBridge `detail`, S3 records and JSON CloudEvent data;
    /// the SNS `Message` as published; the text of a non-JSON CloudEvent.
    pub text: String,
    /// The envelope's metadata.
    pub envelope: Envelope,
}

/// An envelope's metadata, as the handler sees it ([`Message::envelope`](crate::Message::envelope)).
/// The payload itself is the handler's body: the SNS `message` and the EventBridge `detail`
/// are left empty here.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Envelope {
    /// An SNS notification (its `message` is empty: it is the body).
    Sns(Box<SnsMessage>),
    /// An EventBridge event (its `detail` is `null`: it is the body).
    EventBridge(Box<EventBridgeEvent>),
    /// One record of an S3 event notification (also the body, as JSON).
    S3(Box<S3EventRecord>),
    /// A CloudEvent's attributes (its data is the body).
    CloudEvent(Box<CloudEvent>),
}

/// A CloudEvent's context attributes (CloudEvents 1.0, structured JSON mode); its `data` or
/// `data_base64` is the payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct CloudEvent {
    /// `specversion` (`1.0`).
    pub specversion: String,
    /// `id`: with `source`, identifies the event.
    pub id: String,
    /// `source`: a URI reference naming the context the event happened in.
    pub source: String,
    /// `type`: what happened, e.g. `com.example.order.placed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `time` (RFC 3339, as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `datacontenttype`, e.g. `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// `dataschema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    /// Extension attributes (every other top-level member).
    #[serde(flatten)]
    pub extensions: BTreeMap<String, Value>,
}

impl Envelope {
    /// Which envelope this is.
    pub fn kind(&self) -> EnvelopeKind {
        match self {
            Self::Sns(_) => EnvelopeKind::Sns,
            Self::EventBridge(_) => EnvelopeKind::EventBridge,
            Self::S3(_) => EnvelopeKind::S3,
            Self::CloudEvent(_) => EnvelopeKind::CloudEvents,
        }
    }

    /// The event's type: EventBridge `detail-type`, CloudEvents `type`, S3 `eventName`
    /// (`ObjectCreated:Put`); `None` for SNS (route SNS messages by a message attribute).
    pub fn event_type(&self) -> Option<&str> {
        match self {
            Self::Sns(_) => None,
            Self::EventBridge(e) => Some(&e.detail_type),
            Self::S3(r) => r.event_name.as_deref(),
            Self::CloudEvent(c) => Some(&c.event_type),
        }
    }

    /// An attribute the envelope carries: an SNS message attribute's value, or a CloudEvents
    /// extension attribute that is a string.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        match self {
            Self::Sns(s) => s.message_attributes.get(name).map(|a| a.value.as_str()),
            Self::CloudEvent(c) => c.extensions.get(name).and_then(Value::as_str),
            Self::EventBridge(_) | Self::S3(_) => None,
        }
    }

    /// The SNS notification, when this is one.
    pub fn sns(&self) -> Option<&SnsMessage> {
        match self {
            Self::Sns(s) => Some(s),
            _ => None,
        }
    }

    /// The EventBridge event, when this is one.
    pub fn eventbridge(&self) -> Option<&EventBridgeEvent> {
        match self {
            Self::EventBridge(e) => Some(e),
            _ => None,
        }
    }

    /// The S3 record, when this is one.
    pub fn s3(&self) -> Option<&S3EventRecord> {
        match self {
            Self::S3(r) => Some(r),
            _ => None,
        }
    }

    /// The CloudEvent's attributes, when this is one.
    pub fn cloud_event(&self) -> Option<&CloudEvent> {
        match self {
            Self::CloudEvent(c) => Some(c),
            _ => None,
        }
    }

    /// The metadata as `(NAME, value)` pairs, for handlers outside the process: `--exec` sets
    /// `SQSKIT_<NAME>`, `--http` sends `X-Sqskit-<Name>` (`SNS_TOPIC_ARN` →
    /// `X-Sqskit-Sns-Topic-Arn`). Always `ENVELOPE` (the kind); then per envelope (a field the
    /// message lacks is left out):
    ///
    /// - SNS: `SNS_MESSAGE_ID`, `SNS_TOPIC_ARN`, `SNS_SUBJECT`, `SNS_TIMESTAMP`,
    ///   `SNS_ATTRIBUTES` (the message attributes as a JSON object of strings);
    /// - EventBridge: `EVENT_ID`, `EVENT_TYPE` (`detail-type`), `EVENT_SOURCE`, `EVENT_TIME`,
    ///   `EVENT_ACCOUNT`, `EVENT_REGION`, `EVENT_RESOURCES` (JSON array);
    /// - S3: `EVENT_TYPE` (`eventName`), `EVENT_SOURCE`, `EVENT_TIME`, `EVENT_REGION`,
    ///   `S3_BUCKET`, `S3_KEY` (URL-decoded, see [`s3_key`]), `S3_SIZE`, `S3_ETAG`,
    ///   `S3_VERSION_ID`, `S3_SEQUENCER`;
    /// - CloudEvents: `EVENT_ID`, `EVENT_TYPE`, `EVENT_SOURCE`, `EVENT_SUBJECT`, `EVENT_TIME`,
    ///   `EVENT_CONTENT_TYPE`, `EVENT_DATA_SCHEMA`, `EVENT_SPEC_VERSION`, `EVENT_EXTENSIONS`
    ///   (JSON object).
    ///
    /// Every name any envelope may set is in [`FIELD_NAMES`].
    ///
    /// # Example
    /// ```
    /// use sqskit::envelope::{EnvelopeKind, Opened};
    /// let body = r#"{"specversion":"1.0","id":"1","source":"/shop","type":"order.placed","data":{"n":1}}"#;
    /// let Opened::Payloads(p) = EnvelopeKind::CloudEvents.open(body, false).unwrap() else { unreachable!() };
    /// let fields = p[0].envelope.fields();
    /// assert!(fields.contains(&("EVENT_TYPE", "order.placed".to_string())));
    /// assert!(fields.contains(&("ENVELOPE", "cloudevents".to_string())));
    /// ```
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, Option<String>)> = vec![("ENVELOPE", Some(self.kind().as_str().into()))];
        match self {
            Self::Sns(s) => {
                let attrs: serde_json::Map<String, Value> =
                    s.message_attributes.iter().map(|(k, a)| (k.clone(), Value::String(a.value.clone()))).collect();
                out.extend([
                    ("SNS_MESSAGE_ID", Some(s.message_id.clone())),
                    ("SNS_TOPIC_ARN", Some(s.topic_arn.clone())),
                    ("SNS_SUBJECT", s.subject.clone()),
                    ("SNS_TIMESTAMP", Some(s.timestamp.to_rfc3339())),
                    ("SNS_ATTRIBUTES", Some(Value::Object(attrs).to_string())),
                ]);
            }
            Self::EventBridge(e) => out.extend([
                ("EVENT_ID", e.id.clone()),
                ("EVENT_TYPE", Some(e.detail_type.clone())),
                ("EVENT_SOURCE", Some(e.source.clone())),
                ("EVENT_TIME", e.time.map(|t| t.to_rfc3339())),
                ("EVENT_ACCOUNT", e.account.clone()),
                ("EVENT_REGION", e.region.clone()),
                ("EVENT_RESOURCES", e.resources.as_ref().map(|r| Value::from(r.clone()).to_string())),
            ]),
            Self::S3(r) => out.extend([
                ("EVENT_TYPE", r.event_name.clone()),
                ("EVENT_SOURCE", r.event_source.clone()),
                ("EVENT_TIME", Some(r.event_time.to_rfc3339())),
                ("EVENT_REGION", r.aws_region.clone()),
                ("S3_BUCKET", r.s3.bucket.name.clone()),
                ("S3_KEY", s3_key(r)),
                ("S3_SIZE", r.s3.object.size.map(|s| s.to_string())),
                ("S3_ETAG", r.s3.object.e_tag.clone()),
                ("S3_VERSION_ID", r.s3.object.version_id.clone()),
                ("S3_SEQUENCER", r.s3.object.sequencer.clone()),
            ]),
            Self::CloudEvent(c) => out.extend([
                ("EVENT_ID", Some(c.id.clone())),
                ("EVENT_TYPE", Some(c.event_type.clone())),
                ("EVENT_SOURCE", Some(c.source.clone())),
                ("EVENT_SUBJECT", c.subject.clone()),
                ("EVENT_TIME", c.time.clone()),
                ("EVENT_CONTENT_TYPE", c.datacontenttype.clone()),
                ("EVENT_DATA_SCHEMA", c.dataschema.clone()),
                ("EVENT_SPEC_VERSION", Some(c.specversion.clone())),
                ("EVENT_EXTENSIONS", Some(serde_json::to_string(&c.extensions).unwrap_or_default())),
            ]),
        }
        out.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
    }
}

/// Every name [`Envelope::fields`] may return (an `--exec` command never inherits one of them
/// from the poller's environment).
pub const FIELD_NAMES: [&str; 24] = [
    "ENVELOPE",
    "SNS_MESSAGE_ID",
    "SNS_TOPIC_ARN",
    "SNS_SUBJECT",
    "SNS_TIMESTAMP",
    "SNS_ATTRIBUTES",
    "EVENT_ID",
    "EVENT_TYPE",
    "EVENT_SOURCE",
    "EVENT_TIME",
    "EVENT_ACCOUNT",
    "EVENT_REGION",
    "EVENT_RESOURCES",
    "EVENT_SUBJECT",
    "EVENT_CONTENT_TYPE",
    "EVENT_DATA_SCHEMA",
    "EVENT_SPEC_VERSION",
    "EVENT_EXTENSIONS",
    "S3_BUCKET",
    "S3_KEY",
    "S3_SIZE",
    "S3_ETAG",
    "S3_VERSION_ID",
    "S3_SEQUENCER",
];

/// An S3 record's object key, decoded: S3 notifications carry keys URL-encoded (`+` for a
/// space, `%XX` for other bytes). `None` when the record has no key or the decoded bytes are
/// not UTF-8.
///
/// # Example
/// ```
/// use sqskit::envelope::{EnvelopeKind, Opened};
/// let body = r#"{"Records":[{"eventTime":"2026-12-06T10:42:28.129Z","eventName":"ObjectCreated:Put","userIdentity":{},"requestParameters":{},"s3":{"bucket":{"name":"b"},"object":{"key":"dir/a+file%2Bx.json"}}}]}"#;
/// let Opened::Payloads(p) = EnvelopeKind::S3.open(body, false).unwrap() else { unreachable!() };
/// let record = p[0].envelope.s3().unwrap();
/// assert_eq!(sqskit::envelope::s3_key(record).as_deref(), Some("dir/a file+x.json"));
/// ```
pub fn s3_key(record: &S3EventRecord) -> Option<String> {
    let raw = record.s3.object.key.as_deref()?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A JSON error as text: serde's whole message with `full`, else only what names no value.
fn json_error(e: &serde_json::Error, full: bool) -> String {
    if full {
        return e.to_string();
    }
    match e.classify() {
        serde_json::error::Category::Data => safe_data_error(&e.to_string()),
        serde_json::error::Category::Syntax => {
            format!("not JSON (syntax error at line {} column {})", e.line(), e.column())
        }
        serde_json::error::Category::Eof => "not JSON (it ends early)".to_string(),
        serde_json::error::Category::Io => "not JSON (read error)".to_string(),
    }
}

/// serde's data error without the values it may quote: `missing field `x``, `duplicate field`,
/// `invalid length` and `unknown variant` / `invalid type` / `invalid value` up to their
/// expectation, which comes from the type (`invalid type: string, expected u64`).
pub(crate) fn safe_data_error(text: &str) -> String {
    // serde_json appends " at line L column C"
    let text = text.split(" at line ").next().unwrap_or(text);
    for keep in ["missing field `", "duplicate field `", "invalid length "] {
        if text.starts_with(keep) {
            return text.to_string();
        }
    }
    for (prefix, name) in [("invalid type: ", "invalid type"), ("invalid value: ", "invalid value")] {
        if let Some(rest) = text.strip_prefix(prefix) {
            // "string \"secret\", expected u64": the unexpected's first word, then the expectation
            let what = rest.split([' ', ',']).next().unwrap_or_default();
            let expected = rest.rsplit_once(", expected ").map(|(_, e)| e).unwrap_or("something else");
            return format!("{name}: {what}, expected {expected}");
        }
    }
    if let Some((_, expected)) = text.strip_prefix("unknown variant ").and_then(|r| r.split_once(", expected ")) {
        return format!("unknown variant, expected {expected}");
    }
    "does not match (data error)".to_string()
}

/// `T` from `value`, the error naming the path of the field at fault (`Records[0].s3: …`).
fn typed<T: serde::de::DeserializeOwned>(value: Value, full: bool) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = if full { inner.to_string() } else { safe_data_error(&inner.to_string()) };
        if path == "." {
            text
        } else {
            format!("{path}: {text}")
        }
    })
}

fn open_sns(value: Value, full: bool) -> Result<Opened, String> {
    let mut sns: SnsMessage = typed(value, full)?;
    if sns.sns_message_type != "Notification" {
        let kind: String = sns.sns_message_type.chars().take(40).collect();
        return Err(format!("Type is `{kind}`, not `Notification`"));
    }
    let text = std::mem::take(&mut sns.message);
    Ok(Opened::Payloads(vec![Payload { text, envelope: Envelope::Sns(Box::new(sns)) }]))
}

fn open_eventbridge(value: Value, full: bool) -> Result<Opened, String> {
    if let Value::Object(o) = &value {
        // `detail` is required of an event; serde would take a missing one for `null`
        if !o.contains_key("detail") {
            return Err("missing field `detail`".into());
        }
    }
    let mut event: EventBridgeEvent = typed(value, full)?;
    let text = std::mem::take(&mut event.detail).to_string();
    Ok(Opened::Payloads(vec![Payload { text, envelope: Envelope::EventBridge(Box::new(event)) }]))
}

fn open_s3(value: Value, full: bool) -> Result<Opened, String> {
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        let bucket = value.get("Bucket").and_then(Value::as_str).map(str::to_string);
        return Ok(Opened::S3TestEvent { bucket });
    }
    let records = match value {
        Value::Object(mut o) => match o.remove("Records") {
            Some(Value::Array(r)) => r,
            Some(_) => return Err("Records: invalid type, expected an array of records".into()),
            None => return Err("missing field `Records`".into()),
        },
        _ => return Err("invalid type, expected an S3 event notification (an object with `Records`)".into()),
    };
    if records.is_empty() {
        return Err("Records is empty".into());
    }
    let mut out = Vec::with_capacity(records.len());
    for (i, record) in records.into_iter().enumerate() {
        let text = record.to_string();
        let typed: S3EventRecord = typed(record, full).map_err(|e| format!("Records[{i}]: {e}"))?;
        if typed.s3.bucket.name.is_none() || typed.s3.object.key.is_none() {
            return Err(format!("Records[{i}].s3: missing field `bucket.name` or `object.key`"));
        }
        out.push(Payload { text, envelope: Envelope::S3(Box::new(typed)) });
    }
    Ok(Opened::Payloads(out))
}

/// Whether a `datacontenttype` says JSON (`application/json`, `text/json`, `…+json`); none
/// given means JSON (the spec's default for structured mode).
fn is_json_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let ct = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    ct == "application/json" || ct == "text/json" || ct.ends_with("+json")
}

fn open_cloudevent(value: Value, full: bool) -> Result<Opened, String> {
    use base64::Engine;
    let Value::Object(mut o) = value else {
        return Err("invalid type, expected a CloudEvent (a JSON object)".into());
    };
    let data = o.remove("data");
    let data_base64 = o.remove("data_base64");
    let event: CloudEvent = typed(Value::Object(o), full)?;
    if !event.specversion.starts_with("1.") {
        let v: String = event.specversion.chars().take(10).collect();
        return Err(format!("specversion `{v}` is not supported (CloudEvents 1.0)"));
    }
    let text = match (data, data_base64) {
        (Some(_), Some(_)) => return Err("both `data` and `data_base64` are set".into()),
        (None, Some(Value::String(b64))) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| "data_base64: not valid base64".to_string())?;
            String::from_utf8(bytes).map_err(|_| "data_base64: not UTF-8 text (payloads are handed over as text)")?
        }
        (None, Some(_)) => return Err("data_base64: invalid type, expected a string".into()),
        (Some(Value::String(s)), None) if !is_json_type(event.datacontenttype.as_deref()) => s,
        (Some(v), None) => v.to_string(),
        (None, None) => "null".to_string(),
    };
    Ok(Opened::Payloads(vec![Payload { text, envelope: Envelope::CloudEvent(Box::new(event)) }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exactly what LocalStack 4.14 delivers for SNS → SQS without raw delivery.
    const SNS: &str = r#"{"Type": "Notification", "MessageId": "655b0c12-d35c-4937-bbf4-bad9abc69439", "TopicArn": "arn:aws:sns:us-east-1:000000000000:probe", "Message": "{\"id\": 7}", "Timestamp": "2026-12-06T10:42:28.072Z", "UnsubscribeURL": "http://127.0.0.1:4566/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:000000000000:probe:c9655c81", "Subject": "hello", "MessageAttributes": {"kind": {"Type": "String", "Value": "order"}, "n": {"Type": "Number", "Value": "3"}}, "SignatureVersion": "1", "Signature": "NPaN0FLSKS==", "SigningCertURL": "http://127.0.0.1:4566/_aws/sns/SimpleNotificationService-6c6f.pem"}"#;
    /// And for an EventBridge rule → SQS.
    const EVENTBRIDGE: &str = r#"{"version":"0","id":"6df19a8c-a8dd-4857-8301-54759156e831","detail-type":"OrderPlaced","source":"sqskit.test","account":"000000000000","time":"2026-12-06T10:42:21Z","region":"us-east-1","resources":[],"detail":{"id":1}}"#;
    /// And S3 → SQS.
    const S3: &str = r#"{"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": "2026-12-06T10:42:28.129Z", "eventName": "ObjectCreated:Put", "userIdentity": {"principalId": "AIDAJDPLRKLG7UEXAMPLE"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"}, "responseElements": {"x-amz-request-id": "1b714e94", "x-amz-id-2": "eftixk72aD6Ap51TnqcoF8eFidJG9Z/2"}, "s3": {"s3SchemaVersion": "1.0", "configurationId": "a53d5fcd", "bucket": {"name": "probe", "ownerIdentity": {"principalId": "A3NL1KOZZKExample"}, "arn": "arn:aws:s3:::probe"}, "object": {"key": "dir/a%20file%2Bx.json", "sequencer": "0055AED6DCD90281E5", "eTag": "99914b932bd37a50b983c5e7c90ae93b", "size": 2}}}]}"#;
    const S3_TEST: &str = r#"{"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-06T10:42:28.108Z", "Bucket": "probe", "RequestId": "2a32209c", "HostId": "eftixk72aD6Ap51TnqcoF8eFidJG9Z/2"}"#;

    fn payloads(kind: EnvelopeKind, body: &str) -> Vec<Payload> {
        match kind.open(body, false) {
            Ok(Opened::Payloads(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn localstack_sns_notification_opens_with_topic_subject_and_attributes() {
        let p = payloads(EnvelopeKind::Sns, SNS);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].text, r#"{"id": 7}"#);
        let sns = p[0].envelope.sns().unwrap();
        assert_eq!(sns.topic_arn, "arn:aws:sns:us-east-1:000000000000:probe");
        assert_eq!(sns.subject.as_deref(), Some("hello"));
        assert_eq!(sns.message, "", "the payload is not kept twice");
        assert_eq!(p[0].envelope.attribute("kind"), Some("order"));
        let fields = p[0].envelope.fields();
        assert!(fields.contains(&("SNS_TOPIC_ARN", sns.topic_arn.clone())));
        assert!(fields.contains(&("SNS_SUBJECT", "hello".into())));
        assert!(fields.iter().all(|(k, _)| FIELD_NAMES.contains(k)), "{fields:?}");
        let attrs: Value =
            serde_json::from_str(&fields.iter().find(|(k, _)| *k == "SNS_ATTRIBUTES").unwrap().1).unwrap();
        assert_eq!(attrs, serde_json::json!({"kind": "order", "n": "3"}));
    }

    #[test]
    fn localstack_eventbridge_event_opens_with_its_detail() {
        let p = payloads(EnvelopeKind::EventBridge, EVENTBRIDGE);
        assert_eq!(p[0].text, r#"{"id":1}"#);
        assert_eq!(p[0].envelope.event_type(), Some("OrderPlaced"));
        let e = p[0].envelope.eventbridge().unwrap();
        assert_eq!((e.source.as_str(), e.detail.is_null()), ("sqskit.test", true));
        assert!(p[0].envelope.fields().iter().all(|(k, _)| FIELD_NAMES.contains(k)));
    }

    #[test]
    fn localstack_s3_notification_gives_one_payload_per_record_and_the_decoded_key() {
        let p = payloads(EnvelopeKind::S3, S3);
        assert_eq!(p.len(), 1);
        let r = p[0].envelope.s3().unwrap();
        assert_eq!(r.s3.bucket.name.as_deref(), Some("probe"));
        assert_eq!(s3_key(r).as_deref(), Some("dir/a file+x.json"));
        assert_eq!(p[0].envelope.event_type(), Some("ObjectCreated:Put"));
        let v: Value = serde_json::from_str(&p[0].text).unwrap();
        assert_eq!(v["s3"]["object"]["key"], "dir/a%20file%2Bx.json", "the record as sent");
        let fields = p[0].envelope.fields();
        assert!(fields.contains(&("S3_KEY", "dir/a file+x.json".into())), "{fields:?}");
        assert!(fields.iter().all(|(k, _)| FIELD_NAMES.contains(k)));
        let two = S3.replacen("[{", "[{}, {", 1);
        let err = EnvelopeKind::S3.open(&two, false).unwrap_err().to_string();
        assert!(err.starts_with("s3 envelope: Records[0]: missing field"), "{err}");
    }

    #[test]
    fn the_s3_test_event_is_recognised() {
        match EnvelopeKind::S3.open(S3_TEST, false) {
            Ok(Opened::S3TestEvent { bucket }) => assert_eq!(bucket.as_deref(), Some("probe")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cloudevents_data_data_base64_and_text() {
        let json = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","tenant":"acme","data":{"a":[1,2]}}"#;
        let p = payloads(EnvelopeKind::CloudEvents, json);
        assert_eq!(p[0].text, r#"{"a":[1,2]}"#);
        assert_eq!(p[0].envelope.attribute("tenant"), Some("acme"));
        let names: Vec<&str> = p[0].envelope.fields().iter().map(|(k, _)| *k).collect();
        assert!(names.iter().all(|k| FIELD_NAMES.contains(k)), "{names:?}");
        assert!(names.contains(&"EVENT_EXTENSIONS") && names.contains(&"EVENT_TYPE"), "{names:?}");
        let b64 = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","data_base64":"eyJhIjoxfQ=="}"#;
        assert_eq!(payloads(EnvelopeKind::CloudEvents, b64)[0].text, r#"{"a":1}"#);
        let text =
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"hello"}"#;
        assert_eq!(payloads(EnvelopeKind::CloudEvents, text)[0].text, "hello");
        let json_string = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"hello"}"#;
        assert_eq!(payloads(EnvelopeKind::CloudEvents, json_string)[0].text, r#""hello""#);
        let both = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"MQ=="}"#;
        assert_eq!(
            EnvelopeKind::CloudEvents.open(both, false).unwrap_err().to_string(),
            "cloudevents envelope: both `data` and `data_base64` are set"
        );
        let old = r#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#;
        assert!(EnvelopeKind::CloudEvents.open(old, false).unwrap_err().to_string().contains("`0.3`"));
    }

    #[test]
    fn mismatches_name_the_envelope_and_field_never_a_value() {
        let secret = "4111-1111-1111-1111";
        for (kind, body, want) in [
            (EnvelopeKind::Sns, format!(r#"{{"card":"{secret}"}}"#), "sns envelope: missing field `Type`"),
            (
                EnvelopeKind::Sns,
                format!(r#""{secret}""#),
                "sns envelope: invalid type: string, expected struct SnsMessage",
            ),
            (
                EnvelopeKind::Sns,
                format!("{secret} not json"),
                "sns envelope: not JSON (syntax error at line 1 column 5)",
            ),
            (
                EnvelopeKind::Sns,
                SNS.replace(
                    r#""TopicArn": "arn:aws:sns:us-east-1:000000000000:probe""#,
                    &format!(r#""TopicArn": 5, "x": "{secret}""#),
                ),
                "sns envelope: TopicArn: invalid type: integer, expected a string",
            ),
            (
                EnvelopeKind::EventBridge,
                format!(r#"{{"detail":"{secret}"}}"#),
                "eventbridge envelope: missing field `detail-type`",
            ),
            (
                EnvelopeKind::EventBridge,
                format!(r#"{{"detail-type":"x","source":"s","time":"{secret}","detail":{{}}}}"#),
                "eventbridge envelope: time: does not match (data error)",
            ),
            (EnvelopeKind::S3, format!(r#"{{"order":"{secret}"}}"#), "s3 envelope: missing field `Records`"),
            (
                EnvelopeKind::CloudEvents,
                format!(r#"{{"specversion":"1.0","id":"{secret}"}}"#),
                "cloudevents envelope: missing field `source`",
            ),
        ] {
            let err = kind.open(&body, false).unwrap_err().to_string();
            assert_eq!(err, want, "{body}");
            assert!(!err.contains(secret));
        }
        // with full errors serde's whole text is kept
        let full = EnvelopeKind::Sns.open(&format!(r#""{secret}""#), true).unwrap_err().to_string();
        assert!(full.contains(secret), "{full}");
    }

    #[test]
    fn s3_keys_decode_and_bad_escapes_stay_as_they_are() {
        let mut r = S3EventRecord::default();
        for (raw, want) in [
            ("a+b", Some("a b")),
            ("100%25", Some("100%")),
            ("50%", Some("50%")),
            ("%zz", Some("%zz")),
            ("%C3%A9", Some("é")),
            ("%FF", None),
        ] {
            r.s3.object.key = Some(raw.into());
            assert_eq!(s3_key(&r).as_deref(), want, "{raw}");
        }
    }

    proptest::proptest! {
        #[test]
        fn opening_anything_never_panics(body in "\\PC{0,200}", k in 0usize..4) {
            let _ = EnvelopeKind::ALL[k].open(&body, false);
        }
    }
}
