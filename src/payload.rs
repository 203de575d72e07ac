//! Large payloads through S3 (the claim check), byte for byte compatible with the Amazon SQS
//! Extended Client (Java `amazon-sqs-java-extended-client-lib`, Python
//! `amazon-sqs-extended-client`).
//!
//! It owns the wire format and the S3 calls: [`ClaimCheck::offload`] uploads a body that is too
//! large for SQS and replaces it with a pointer, [`ClaimCheck::resolve`] fetches the body a
//! pointer names, [`ClaimCheck::delete`] removes the object. It does not decide when: the
//! [`Queue`](crate::Queue) offloads on send ([`Queue::with_claim_check`](crate::Queue::with_claim_check)),
//! the [`processor`](crate::processor) resolves before decoding (so a failed fetch is that
//! message's outcome, never a batch error) and [`settle`](crate::settle) deletes the object
//! after the message's delete succeeded, when cleanup is on.
//!
//! Wire format (what the Extended Clients write and read):
//! - body: `["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"B","s3Key":"K"}]`
//!   (the legacy class name `com.amazon.sqs.javamessaging.MessageS3Pointer` is read too);
//! - message attribute `ExtendedPayloadSize` (legacy `SQSLargePayloadSize`, read too), data type
//!   `Number`, value the body's length in bytes (UTF-8);
//! - the object: the body's UTF-8 bytes, key a random UUID.
//!
//! The Extended Clients also decorate receipt handles
//! (`-..s3BucketName..-B-..s3BucketName..--..s3Key..-K-..s3Key..-HANDLE`) so that a later
//! `DeleteMessage` knows which object to remove. sqskit keeps SQS's receipt handles as they are:
//! the pointer stays on the received message ([`ReceivedMessage::body`] of the message as
//! received), which is also what dead-letter forwarding and redrive send on, untouched.

use std::collections::HashMap;

use crate::message::{AttributeValue, OutgoingMessage, ReceivedMessage};
use crate::processor::{Failure, FailureKind};

/// The message attribute that marks a claim-checked message (value: the body's size in bytes).
pub const SIZE_ATTRIBUTE: &str = "ExtendedPayloadSize";
/// The legacy name of [`SIZE_ATTRIBUTE`] (Extended Client for Java 1.x), read but never written.
pub const LEGACY_SIZE_ATTRIBUTE: &str = "SQSLargePayloadSize";
/// The pointer's class name, first element of the pointer body.
pub const POINTER_CLASS: &str = "software.amazon.payloadoffloading.PayloadS3Pointer";
/// The legacy pointer class name, read but never written.
pub const LEGACY_POINTER_CLASS: &str = "com.amazon.sqs.javamessaging.MessageS3Pointer";

/// Where a claim-checked body is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// The S3 bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
}

impl Pointer {
    /// The pointer body the Extended Clients read.
    ///
    /// # Example
    /// ```
    /// use sqskit::payload::Pointer;
    /// let p = Pointer { bucket: "b".into(), key: "k".into() };
    /// assert_eq!(p.body(), r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"b","s3Key":"k"}]"#);
    /// assert_eq!(Pointer::parse(&p.body()).unwrap(), p);
    /// ```
    pub fn body(&self) -> String {
        serde_json::json!([POINTER_CLASS, { "s3BucketName": self.bucket, "s3Key": self.key }]).to_string()
    }

    /// Parse a pointer body (either class name; any JSON spacing).
    ///
    /// # Errors
    /// [`PayloadError::Malformed`] when `body` is not a pointer.
    pub fn parse(body: &str) -> Result<Self, PayloadError> {
        let malformed = |reason: &str| PayloadError::Malformed { reason: reason.to_string() };
        let v: serde_json::Value = serde_json::from_str(body).map_err(|_| malformed("the body is not JSON"))?;
        let [class, details] = v.as_array().map(Vec::as_slice).unwrap_or_default() else {
            return Err(malformed("the body is not a two-element JSON array"));
        };
        if !matches!(class.as_str(), Some(POINTER_CLASS | LEGACY_POINTER_CLASS)) {
            return Err(malformed("unknown pointer class"));
        }
        let field = |name: &str| details.get(name).and_then(serde_json::Value::as_str).filter(|s| !s.is_empty());
        match (field("s3BucketName"), field("s3Key")) {
            (Some(bucket), Some(key)) => Ok(Self { bucket: bucket.to_string(), key: key.to_string() }),
            _ => Err(malformed("the pointer lacks s3BucketName or s3Key")),
        }
    }
}

/// Whether these attributes mark a claim-checked message ([`SIZE_ATTRIBUTE`] or its legacy name).
pub fn is_claim_checked(attributes: &HashMap<String, AttributeValue>) -> bool {
    attributes.contains_key(SIZE_ATTRIBUTE) || attributes.contains_key(LEGACY_SIZE_ATTRIBUTE)
}

/// The pointer of a received message: `None` when it is not claim-checked.
///
/// # Errors
/// [`PayloadError::Malformed`] when it carries the size attribute but its body is no pointer.
pub fn pointer_of(raw: &ReceivedMessage) -> Option<Result<Pointer, PayloadError>> {
    is_claim_checked(&raw.attributes).then(|| Pointer::parse(&raw.body))
}

/// The failure of a claim-checked message that reaches a processor with no claim check to fetch
/// its body (`None` when `raw` is not claim-checked): `undecodable`, so it is dead-lettered with
/// its pointer (nothing lost: redrive it once a claim check is configured) instead of reaching
/// the handler with the pointer as its body. A malformed pointer is the usual
/// [`PayloadError::Malformed`].
pub(crate) fn unresolvable(raw: &ReceivedMessage) -> Option<Failure> {
    let failure = match pointer_of(raw)? {
        Ok(p) => Failure {
            kind: FailureKind::Undecodable,
            error: format!(
                "claim check: the body is a pointer to s3://{}/{} ({SIZE_ATTRIBUTE}), and this processor has no \
                 claim check to fetch it: give it one (Processor::with_claim_check(ClaimCheck::reader(s3)))",
                p.bucket, p.key
            ),
            retry_after: None,
        },
        Err(e) => e.failure(),
    };
    Some(failure)
}

/// Claim-check errors, classified by what happens to the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The message carries the size attribute but its body is not a pointer (permanent).
    #[error("claim check: malformed pointer: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The object (or its bucket) does not exist: it never will (permanent, `payload-missing`).
    #[error("claim check: s3://{bucket}/{key} does not exist ({code})")]
    Missing {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// S3's error code (`NoSuchKey`, `NoSuchBucket`, `NotFound`).
        code: String,
    },
    /// The object is not UTF-8 text, so it cannot be an SQS body (permanent).
    #[error("claim check: s3://{bucket}/{key} is not UTF-8 text")]
    NotText {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// An S3 call failed otherwise (transport, throttling, access denied): retry later.
    #[error("claim check: {operation} s3://{bucket}/{key} failed: {message}")]
    S3 {
        /// `GetObject`, `PutObject` or `DeleteObject`.
        operation: &'static str,
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The S3 error.
        message: String,
    },
}

impl PayloadError {
    /// Whether the message can never be resolved (dead-letter it).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::S3 { .. })
    }

    /// The processor's failure for this error.
    pub(crate) fn failure(&self) -> Failure {
        let kind = match self {
            Self::Missing { .. } => FailureKind::PayloadMissing,
            Self::Malformed { .. } | Self::NotText { .. } => FailureKind::Undecodable,
            Self::S3 { .. } => FailureKind::Retryable,
        };
        Failure { kind, error: self.to_string(), retry_after: None }
    }
}

/// S3 error codes that mean the object is gone for good. `NoSuchBucket` is one: a bucket that
/// does not exist holds no object, and the message is kept (pointer and all) in the DLQ, where
/// it can be redriven should the bucket come back. `AccessDenied` is not: S3 answers 403 for a
/// missing key when the reader lacks `s3:ListBucket`, and a policy can be fixed.
const MISSING_CODES: &[&str] = &["NoSuchKey", "NoSuchBucket", "NotFound"];

/// Offload and fetch bodies through one S3 bucket.
///
/// Cheap to clone. Offloads when a message's payload (body + attributes, as SQS counts it) is
/// over the threshold (default 1 MiB, SQS's limit) or always ([`ClaimCheck::with_always`]);
/// a message that already carries [`SIZE_ATTRIBUTE`] is never offloaded again (DLQ forwarding
/// and redrive keep pointers). Resolving fetches from the pointer's own bucket.
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), sqskit::Error> {
/// use sqskit::{payload::ClaimCheck, OutgoingMessage, Queue};
/// let sdk = sqskit::load_aws_config().await;
/// let check = ClaimCheck::new(sqskit::payload::s3_client(&sdk), "my-payload-bucket").with_cleanup(true);
/// let queue = Queue::new(aws_sdk_sqs::Client::new(&sdk), "https://sqs.eu-west-1.amazonaws.com/1/jobs")
///     .with_claim_check(check);
/// queue.send(OutgoingMessage::new("x".repeat(5 << 20))).await?; // 5 MiB: goes through S3
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClaimCheck {
    s3: aws_sdk_s3::Client,
    bucket: String,
    threshold: usize,
    always: bool,
    cleanup: bool,
}

/// An S3 client from `config`, with path-style addressing whenever an endpoint override is
/// in use (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, or the config's), as LocalStack needs.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let overridden = config.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let s3 = aws_sdk_s3::config::Builder::from(config).force_path_style(overridden).build();
    aws_sdk_s3::Client::from_conf(s3)
}

impl ClaimCheck {
    /// Offload to `bucket` what is over 1 MiB; no cleanup.
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self { s3, bucket: bucket.into(), threshold: crate::limits::MAX_PAYLOAD_BYTES, always: false, cleanup: false }
    }

    /// A claim check that only reads: it resolves pointers (each names its own bucket) and
    /// never offloads ([`ClaimCheck::bucket`] is empty). What `sqskit poll` and
    /// [`lambda::run`](crate::lambda) use when no payload bucket is configured, so that an
    /// Extended Client's pointer never reaches a handler as its body.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() {
    /// let sdk = sqskit::load_aws_config().await;
    /// let reader = sqskit::payload::ClaimCheck::reader(sqskit::payload::s3_client(&sdk));
    /// assert!(!reader.should_offload(&sqskit::OutgoingMessage::new("x".repeat(2 << 20))));
    /// let processor = sqskit::Processor::raw(|_m: sqskit::Message<String>| async { Ok::<_, sqskit::HandlerError>(()) })
    ///     .with_claim_check(reader);
    /// # let _ = processor; }
    /// ```
    pub fn reader(s3: aws_sdk_s3::Client) -> Self {
        Self::new(s3, "")
    }

    /// From `SQSKIT_PAYLOAD_BUCKET` (unset or empty: `None`), `SQSKIT_PAYLOAD_THRESHOLD`
    /// (bytes, ≤ 1,048,576), `SQSKIT_PAYLOAD_ALWAYS` and `SQSKIT_PAYLOAD_CLEANUP` (`true`/`false`).
    ///
    /// # Errors
    /// [`ConfigError`](crate::config::ConfigError) naming the variable at fault.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> Result<(), sqskit::config::ConfigError> {
    /// let sdk = sqskit::load_aws_config().await;
    /// let check = sqskit::payload::ClaimCheck::from_env(&sdk)?; // None without SQSKIT_PAYLOAD_BUCKET
    /// # Ok(()) }
    /// ```
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Option<Self>, crate::config::ConfigError> {
        let Some(bucket) = std::env::var("SQSKIT_PAYLOAD_BUCKET").ok().filter(|b| !b.trim().is_empty()) else {
            return Ok(None);
        };
        let limit = crate::limits::MAX_PAYLOAD_BYTES as u64;
        let threshold = crate::config::env_count("SQSKIT_PAYLOAD_THRESHOLD", limit)?;
        if threshold > limit {
            return Err(crate::config::ConfigError {
                name: "SQSKIT_PAYLOAD_THRESHOLD",
                value: threshold.to_string(),
                reason: format!("at most {limit} bytes (the SQS limit)"),
            });
        }
        Ok(Some(
            Self::new(s3_client(sdk), bucket.trim())
                .with_threshold(threshold as usize)
                .with_always(crate::config::env_bool("SQSKIT_PAYLOAD_ALWAYS")?)
                .with_cleanup(crate::config::env_bool("SQSKIT_PAYLOAD_CLEANUP")?),
        ))
    }

    /// Offload payloads over `bytes` (capped at 1 MiB, SQS's limit).
    pub fn with_threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes.min(crate::limits::MAX_PAYLOAD_BYTES);
        self
    }

    /// Offload every message, whatever its size.
    pub fn with_always(mut self, on: bool) -> Self {
        self.always = on;
        self
    }

    /// Delete the object once the message's delete from the queue succeeded (never before, and
    /// never for a dead-lettered message, whose DLQ copy still points at it). Off by default.
    pub fn with_cleanup(mut self, on: bool) -> Self {
        self.cleanup = on;
        self
    }

    /// The bucket offloaded bodies go to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Whether objects are deleted after their message's delete.
    pub fn cleanup(&self) -> bool {
        self.cleanup
    }

    /// The S3 client.
    pub fn s3(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    /// Whether `msg` would be offloaded (never by a [`ClaimCheck::reader`]).
    pub fn should_offload(&self, msg: &OutgoingMessage) -> bool {
        !self.bucket.is_empty()
            && !is_claim_checked(&msg.attributes)
            && (self.always || msg.payload_size() > self.threshold)
    }

    /// Upload the body when [`ClaimCheck::should_offload`], and return the message to send
    /// instead: the pointer body plus [`SIZE_ATTRIBUTE`]. The upload is streamed from the
    /// body's own bytes (no copy). Otherwise `msg` comes back unchanged.
    ///
    /// # Errors
    /// [`PayloadError::S3`] when the upload fails.
    pub async fn offload(&self, mut msg: OutgoingMessage) -> Result<OutgoingMessage, PayloadError> {
        if !self.should_offload(&msg) {
            return Ok(msg);
        }
        let pointer = Pointer { bucket: self.bucket.clone(), key: uuid_v4() };
        let body = std::mem::take(&mut msg.body).into_bytes();
        let size = body.len();
        self.s3
            .put_object()
            .bucket(&pointer.bucket)
            .key(&pointer.key)
            .content_length(size as i64)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", &pointer, e))?;
        msg.body = pointer.body();
        msg.attributes.insert(SIZE_ATTRIBUTE.into(), AttributeValue::number(size));
        Ok(msg)
    }

    /// The body a pointer names, read into one buffer.
    ///
    /// # Errors
    /// [`PayloadError::Missing`] when the object or bucket does not exist,
    /// [`PayloadError::NotText`] for bytes that are not UTF-8, else [`PayloadError::S3`].
    pub async fn fetch(&self, pointer: &Pointer) -> Result<String, PayloadError> {
        let out = self
            .s3
            .get_object()
            .bucket(&pointer.bucket)
            .key(&pointer.key)
            .send()
            .await
            .map_err(|e| s3_error("GetObject", pointer, e))?;
        let mut buf = Vec::with_capacity(out.content_length().and_then(|l| usize::try_from(l).ok()).unwrap_or(0));
        let mut stream = out.body;
        while let Some(chunk) = stream.try_next().await.map_err(|e| PayloadError::S3 {
            operation: "GetObject",
            bucket: pointer.bucket.clone(),
            key: pointer.key.clone(),
            message: e.to_string(),
        })? {
            buf.extend_from_slice(&chunk);
        }
        String::from_utf8(buf)
            .map_err(|_| PayloadError::NotText { bucket: pointer.bucket.clone(), key: pointer.key.clone() })
    }

    /// The message a handler sees for `raw`: `None` when it is not claim-checked, else a copy
    /// with the body fetched from S3 and the size attribute removed (the pointer stays on
    /// `raw`, which is what dead-lettering forwards).
    ///
    /// # Errors
    /// As [`pointer_of`] and [`ClaimCheck::fetch`].
    pub async fn resolve(&self, raw: &ReceivedMessage) -> Result<Option<ReceivedMessage>, PayloadError> {
        let Some(pointer) = pointer_of(raw) else { return Ok(None) };
        let body = self.fetch(&pointer?).await?;
        let mut resolved = raw.clone();
        resolved.body = body;
        resolved.attributes.remove(SIZE_ATTRIBUTE);
        resolved.attributes.remove(LEGACY_SIZE_ATTRIBUTE);
        Ok(Some(resolved))
    }

    /// Delete the object a pointer names.
    ///
    /// # Errors
    /// [`PayloadError::S3`] when the delete fails.
    pub async fn delete(&self, pointer: &Pointer) -> Result<(), PayloadError> {
        self.s3
            .delete_object()
            .bucket(&pointer.bucket)
            .key(&pointer.key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| s3_error("DeleteObject", pointer, e))
    }

    /// Cleanup after confirmed deletes: remove the objects of the claim-checked ones among
    /// `deleted` (failures are logged and counted, the lifecycle rule collects the rest).
    pub(crate) async fn cleanup_after_delete(&self, deleted: &[&ReceivedMessage]) {
        let pointers: Vec<Pointer> = deleted.iter().filter_map(|m| pointer_of(m).and_then(Result::ok)).collect();
        let calls = pointers.iter().map(|p| self.delete(p));
        for r in futures::future::join_all(calls).await {
            if let Err(e) = r {
                metrics::counter!(crate::metrics::names::PAYLOAD_CLEANUP_FAILURES).increment(1);
                tracing::warn!(error = %e, "claim check cleanup failed; the bucket's lifecycle rule will remove the object");
            }
        }
    }
}

fn s3_error<E, R>(operation: &'static str, pointer: &Pointer, err: aws_sdk_s3::error::SdkError<E, R>) -> PayloadError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    let status = err.raw_response().map(HttpStatus::status);
    let code = err.as_service_error().and_then(|e| e.code()).map(str::to_string);
    let missing = code.as_deref().is_some_and(|c| MISSING_CODES.contains(&c)) || status == Some(404);
    if missing && operation == "GetObject" {
        return PayloadError::Missing {
            bucket: pointer.bucket.clone(),
            key: pointer.key.clone(),
            code: code.unwrap_or_else(|| "NotFound".into()),
        };
    }
    PayloadError::S3 {
        operation,
        bucket: pointer.bucket.clone(),
        key: pointer.key.clone(),
        message: aws_sdk_s3::error::DisplayErrorContext(err).to_string(),
    }
}

/// The HTTP status of a raw response.
trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// A random (version 4) UUID, as the Extended Clients name their objects.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_parses_both_classes_and_python_spacing() {
        let python = r#"["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": "b", "s3Key": "k"}]"#;
        assert_eq!(Pointer::parse(python).unwrap(), Pointer { bucket: "b".into(), key: "k".into() });
        let legacy = r#"["com.amazon.sqs.javamessaging.MessageS3Pointer",{"s3BucketName":"b","s3Key":"k"}]"#;
        assert!(Pointer::parse(legacy).is_ok());
        for bad in [
            "hello",
            "[]",
            r#"["x",{"s3BucketName":"b","s3Key":"k"}]"#,
            r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3Key":"k"}]"#,
        ] {
            assert!(matches!(Pointer::parse(bad), Err(PayloadError::Malformed { .. })), "{bad}");
        }
    }

    /// A message whose body is a pointer, without the size attribute.
    fn pointer_shaped() -> ReceivedMessage {
        ReceivedMessage {
            message_id: "1".into(),
            receipt_handle: "h".into(),
            body: Pointer { bucket: "b".into(), key: "k".into() }.body(),
            attributes: HashMap::new(),
            system_attributes: HashMap::new(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        }
    }

    #[test]
    fn only_messages_with_the_size_attribute_are_pointers() {
        let mut m = pointer_shaped();
        assert!(pointer_of(&m).is_none(), "a pointer-shaped body alone is just a body");
        m.attributes.insert(LEGACY_SIZE_ATTRIBUTE.into(), AttributeValue::number(5));
        assert_eq!(pointer_of(&m).unwrap().unwrap().key, "k");
        m.body = "not a pointer".into();
        let err = pointer_of(&m).unwrap().unwrap_err();
        assert_eq!(err.failure().kind, FailureKind::Undecodable);
    }

    #[test]
    fn a_pointer_without_a_claim_check_is_unresolvable_and_a_reader_never_offloads() {
        let mut m = pointer_shaped();
        assert!(unresolvable(&m).is_none(), "not claim-checked");
        m.attributes.insert(SIZE_ATTRIBUTE.into(), AttributeValue::number(5));
        let f = unresolvable(&m).unwrap();
        assert_eq!(f.kind, FailureKind::Undecodable);
        assert!(f.error.contains("s3://b/k") && f.error.contains("ClaimCheck::reader"), "{}", f.error);
        let conf =
            aws_sdk_s3::Config::builder().behavior_version(aws_sdk_s3::config::BehaviorVersion::latest()).build();
        let reader = ClaimCheck::reader(aws_sdk_s3::Client::from_conf(conf)).with_always(true);
        assert!(!reader.should_offload(&OutgoingMessage::new("x".repeat(2 << 20))));
    }

    #[test]
    fn uuids_are_version_4() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(uuid_v4(), u);
    }
}
