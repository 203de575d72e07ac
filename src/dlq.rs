//! Dead letters: archive them to S3 and send one aggregated SNS alert.
//!
//! Used by the `dlq-monitor` Lambda (one alert per invocation) and by `sqskit dlq drain`
//! (one alert per run). Archiving is the durable part: a record whose archive fails stays
//! in the DLQ; the alert covers only what was archived, and a failed alert does not undo
//! the archive.
//!
//! Object key: `<prefix>/<source-queue>/<yyyy>/<mm>/<dd>/<messageId>.json`, the date being the
//! message's `SentTimestamp` (UTC), so archiving the same message twice writes the same key.

use std::collections::BTreeMap;

use base64::Engine;
use futures::StreamExt;

use crate::message::ReceivedMessage;
use crate::processor::dead_letter_attributes as dl;

/// Errors of the DLQ tools.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// A required setting is missing or invalid (named).
    #[error("invalid configuration: {name}: {reason}")]
    Config {
        /// The setting (environment variable or flag).
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// Writing the archive object failed.
    #[error("archiving {message_id} to s3://{bucket}/{key} failed: {message}")]
    Archive {
        /// Message id.
        message_id: String,
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The S3 error.
        message: String,
    },
    /// Publishing the alert failed.
    #[error("publishing the alert to {topic} failed: {message}")]
    Alert {
        /// Topic ARN.
        topic: String,
        /// The SNS error.
        message: String,
    },
    /// A redrive filter expression that does not parse (see [`RedriveFilter`]).
    #[error("invalid filter {expr:?}: {reason}")]
    InvalidFilter {
        /// The expression given.
        expr: String,
        /// Why it is rejected.
        reason: String,
    },
    /// No message move task of the DLQ is running (or none with the given handle): nothing to
    /// cancel.
    #[error(
        "no message move task{} is running on {queue}{}",
        handle.as_ref().map(|h| format!(" with handle {h}")).unwrap_or_default(),
        latest.as_ref().map(|s| format!(" (most recent task: {s})")).unwrap_or_else(|| " (it has no move tasks)".into())
    )]
    NoRunningMoveTask {
        /// The DLQ's name.
        queue: String,
        /// The handle asked for, if any.
        handle: Option<String>,
        /// Status of the DLQ's most recent task, if it has any.
        latest: Option<String>,
    },
    /// An SQS call failed.
    #[error(transparent)]
    Sqs(#[from] crate::Error),
    /// A drain stopped at a failed receive or delete; what was archived before was still
    /// alerted on (see the report).
    #[error("draining stopped after archiving {} and deleting {} message(s)", report.archived, report.deleted)]
    Drain {
        /// What the drain did before it stopped.
        report: DrainReport,
        /// The receive or delete error.
        #[source]
        source: crate::Error,
    },
}

/// Where and how to archive and alert: [`MonitorConfig::new`] (or `from_env`) and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MonitorConfig {
    /// S3 bucket for the archive.
    pub bucket: String,
    /// Key prefix (no leading or trailing slash needed).
    pub prefix: String,
    /// SNS topic for the alert (none: no alert).
    pub topic_arn: Option<String>,
    /// Put (truncated) bodies in the alert.
    pub include_body: bool,
    /// How many message ids the alert lists.
    pub max_ids: usize,
    /// Archive the bodies of claim-checked messages (Extended Client pointers) fetched from S3
    /// instead of their pointers (off: the pointer is archived, as received).
    pub resolve_payloads: bool,
}

impl MonitorConfig {
    /// Archive to `bucket` under `dead-letters/`, no alert, bodies left out, 20 ids per alert.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: "dead-letters".into(),
            topic_arn: None,
            include_body: false,
            max_ids: 20,
            resolve_payloads: false,
        }
    }
    /// Archive claim-checked messages with their body fetched from S3 (the pointer is recorded
    /// as `claimCheck`; when the fetch fails, the pointer is archived with `claimCheckError`).
    ///
    /// # Example
    /// ```
    /// let c = sqskit::dlq::MonitorConfig::new("archive").with_resolve_payloads(true);
    /// assert!(c.resolve_payloads);
    /// ```
    pub fn with_resolve_payloads(mut self, on: bool) -> Self {
        self.resolve_payloads = on;
        self
    }
    /// Key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// SNS topic for the one alert per batch (none: no alert).
    pub fn with_topic_arn(mut self, topic_arn: Option<String>) -> Self {
        self.topic_arn = topic_arn;
        self
    }
    /// Put (truncated) bodies in the alert.
    pub fn with_include_body(mut self, on: bool) -> Self {
        self.include_body = on;
        self
    }
    /// How many message ids the alert lists.
    pub fn with_max_ids(mut self, n: usize) -> Self {
        self.max_ids = n;
        self
    }

    /// From `ARCHIVE_BUCKET` (required), `ARCHIVE_PREFIX`, `ALERT_TOPIC_ARN`, `ALERT_INCLUDE_BODY`,
    /// `ARCHIVE_RESOLVE_PAYLOADS` (`true`: [`MonitorConfig::with_resolve_payloads`]).
    ///
    /// # Errors
    /// [`DlqError::Config`] naming the variable that is missing or invalid.
    pub fn from_env() -> Result<Self, DlqError> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        let bucket =
            var("ARCHIVE_BUCKET").ok_or(DlqError::Config { name: "ARCHIVE_BUCKET", reason: "is not set".into() })?;
        let include_body = match var("ALERT_INCLUDE_BODY").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") | Some("0") | Some("no") => false,
            Some("true") | Some("1") | Some("yes") => true,
            Some(other) => {
                return Err(DlqError::Config {
                    name: "ALERT_INCLUDE_BODY",
                    reason: format!("{other:?} is not true or false"),
                })
            }
        };
        Ok(Self {
            bucket,
            prefix: var("ARCHIVE_PREFIX").unwrap_or_else(|| "dead-letters".into()),
            topic_arn: var("ALERT_TOPIC_ARN"),
            include_body,
            max_ids: 20,
            resolve_payloads: crate::config::env_bool("ARCHIVE_RESOLVE_PAYLOADS")
                .map_err(|e| DlqError::Config { name: "ARCHIVE_RESOLVE_PAYLOADS", reason: e.reason })?,
        })
    }
}

/// An S3 client from `config`, with path-style addressing whenever an endpoint override is
/// in use (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, or the config's), as LocalStack needs.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    crate::payload::s3_client(config)
}

/// A dead letter that was archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// Message id.
    pub message_id: String,
    /// Source queue name (see [`source_queue`], else the DLQ's single redrive source).
    pub source_queue: String,
    /// Error kind (`permanent`, `undecodable`, ... or `max-receives` when SQS redrove it).
    pub error_kind: String,
    /// S3 key.
    pub key: String,
    /// Body (kept for the alert only when bodies are included).
    pub body: String,
}

/// Result of archiving a batch.
#[derive(Debug, Default)]
pub struct ArchiveReport {
    /// Archived records, in input order.
    pub archived: Vec<Archived>,
    /// Records whose archive failed.
    pub failed: Vec<DlqError>,
}

/// Archive + alert.
///
/// # Example
/// ```no_run
/// # async fn demo(msgs: Vec<sqskit::ReceivedMessage>) -> Result<(), Box<dyn std::error::Error>> {
/// let config = sqskit::load_aws_config().await;
/// let monitor = sqskit::dlq::DlqMonitor::new(&config, sqskit::dlq::MonitorConfig::from_env()?);
/// let report = monitor.archive(&msgs, "orders-dlq", Some("orders")).await;
/// monitor.alert(&report.archived, "orders-dlq").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DlqMonitor {
    s3: aws_sdk_s3::Client,
    sns: aws_sdk_sns::Client,
    config: MonitorConfig,
}

/// Error attributes the processor attached: (kind, error, source queue, receive count).
pub(crate) fn error_info(m: &ReceivedMessage) -> (Option<String>, Option<String>, Option<String>, Option<String>) {
    if let Some(kind) = m.attribute_str(dl::ERROR_KIND) {
        return (
            Some(kind.to_string()),
            m.attribute_str(dl::ERROR).map(str::to_string),
            m.attribute_str(dl::SOURCE_QUEUE).map(str::to_string),
            m.attribute_str(dl::RECEIVE_COUNT).map(str::to_string),
        );
    }
    if let Some(v) = m.attribute_str(dl::COMBINED).and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()) {
        let s = |k: &str| v.get(k).map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()));
        return (s("kind"), s("error"), s("source_queue"), s("receive_count"));
    }
    (None, None, None, None)
}

/// The queue a dead letter came from: SQS's `DeadLetterQueueSourceArn` system attribute (set on
/// every message its redrive policy moves; in Lambda records' `attributes`, on received messages
/// when system attributes `All` are requested), else the processor's `sqskit-source-queue`
/// attribute. `None` when neither says (the caller may ask `ListDeadLetterSourceQueues`).
pub fn source_queue(m: &ReceivedMessage) -> Option<String> {
    m.system_attributes
        .get("DeadLetterQueueSourceArn")
        .and_then(|arn| arn.rsplit(':').next())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .or_else(|| error_info(m).2)
}

/// The archive key of `m`.
pub fn archive_key(prefix: &str, source_queue: &str, m: &ReceivedMessage) -> String {
    let date = m.sent_at().map(time::OffsetDateTime::from).unwrap_or_else(time::OffsetDateTime::now_utc);
    let prefix = prefix.trim_matches('/');
    let head = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    format!(
        "{head}{source_queue}/{:04}/{:02}/{:02}/{}.json",
        date.year(),
        u8::from(date.month()),
        date.day(),
        m.message_id
    )
}

/// The archive document of `m`.
pub fn archive_document(m: &ReceivedMessage, source_queue: &str, dead_letter_queue: &str) -> serde_json::Value {
    let (kind, error, _, count) = error_info(m);
    let attrs: BTreeMap<&str, serde_json::Value> = m
        .attributes
        .iter()
        .map(|(k, v)| {
            let mut o = serde_json::json!({ "dataType": v.data_type });
            if let Some(s) = &v.string_value {
                o["stringValue"] = s.clone().into();
            }
            if let Some(b) = &v.binary_value {
                o["binaryValue"] = base64::engine::general_purpose::STANDARD.encode(b).into();
            }
            (k.as_str(), o)
        })
        .collect();
    let system: BTreeMap<&String, &String> = m.system_attributes.iter().collect();
    serde_json::json!({
        "messageId": m.message_id,
        "body": m.body,
        "messageAttributes": attrs,
        "attributes": system,
        "receiveCount": m.receive_count(),
        "sentTimestamp": m.system_attributes.get("SentTimestamp"),
        "firstReceiveTimestamp": m.system_attributes.get("ApproximateFirstReceiveTimestamp"),
        "sourceQueue": source_queue,
        "deadLetterQueue": dead_letter_queue,
        "error": kind.map(|k| serde_json::json!({ "kind": k, "message": error, "receiveCount": count })),
    })
}

const PUT_CONCURRENCY: usize = 10;
const SUBJECT_MAX: usize = 100;
const SNS_MESSAGE_MAX: usize = 240 * 1024;
const BODY_IN_ALERT_MAX: usize = 1024;

impl DlqMonitor {
    /// A monitor using clients built from `sdk` (S3 path-style under an endpoint override).
    pub fn new(sdk: &aws_config::SdkConfig, config: MonitorConfig) -> Self {
        Self { s3: s3_client(sdk), sns: aws_sdk_sns::Client::new(sdk), config }
    }

    /// The settings.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Archive each message as one JSON object, under its [`source_queue`], else
    /// `redrive_source` (the DLQ's single source queue, when known), else `unknown`.
    pub async fn archive(
        &self,
        messages: &[ReceivedMessage],
        dead_letter_queue: &str,
        redrive_source: Option<&str>,
    ) -> ArchiveReport {
        let results: Vec<Result<Archived, DlqError>> = futures::stream::iter(messages.iter().map(|m| async move {
            let kind = error_info(m).0;
            let source =
                source_queue(m).or_else(|| redrive_source.map(str::to_string)).unwrap_or_else(|| "unknown".into());
            let key = archive_key(&self.config.prefix, &source, m);
            let doc = match self.config.resolve_payloads {
                true => self.resolved_document(m, &source, dead_letter_queue).await,
                false => archive_document(m, &source, dead_letter_queue),
            };
            let put = self
                .s3
                .put_object()
                .bucket(&self.config.bucket)
                .key(&key)
                .content_type("application/json")
                .body(doc.to_string().into_bytes().into())
                .send()
                .await;
            match put {
                Ok(_) => Ok(Archived {
                    message_id: m.message_id.clone(),
                    source_queue: source,
                    error_kind: kind.unwrap_or_else(|| MAX_RECEIVES_KIND.into()),
                    key,
                    body: if self.config.include_body { m.body.clone() } else { String::new() },
                }),
                Err(e) => Err(DlqError::Archive {
                    message_id: m.message_id.clone(),
                    bucket: self.config.bucket.clone(),
                    key,
                    message: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
                }),
            }
        }))
        .buffered(PUT_CONCURRENCY)
        .collect()
        .await;
        let mut report = ArchiveReport::default();
        for r in results {
            match r {
                Ok(a) => report.archived.push(a),
                Err(e) => {
                    tracing::error!(error = %e, "archive failed");
                    report.failed.push(e);
                }
            }
        }
        report
    }

    /// The archive document with a claim-checked body fetched from S3 (one buffer).
    async fn resolved_document(&self, m: &ReceivedMessage, source: &str, dead_letter_queue: &str) -> serde_json::Value {
        let Some(pointer) = crate::payload::pointer_of(m) else {
            return archive_document(m, source, dead_letter_queue);
        };
        let check = crate::payload::ClaimCheck::new(self.s3.clone(), "");
        match check.resolve(m).await {
            Ok(Some(resolved)) => {
                let mut doc = archive_document(&resolved, source, dead_letter_queue);
                if let Ok(p) = pointer {
                    doc["claimCheck"] = serde_json::json!({ "s3BucketName": p.bucket, "s3Key": p.key });
                }
                doc
            }
            Ok(None) => archive_document(m, source, dead_letter_queue),
            Err(e) => {
                tracing::warn!(message_id = %m.message_id, error = %e, "claim check not resolved; archiving the pointer");
                let mut doc = archive_document(m, source, dead_letter_queue);
                doc["claimCheckError"] = e.to_string().into();
                doc
            }
        }
    }

    /// The alert's subject and message for `archived` (pure).
    pub fn render_alert(&self, archived: &[Archived], dead_letter_queue: &str) -> (String, String) {
        let mut sources: BTreeMap<&str, usize> = BTreeMap::new();
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for a in archived {
            *sources.entry(&a.source_queue).or_default() += 1;
            *kinds.entry(&a.error_kind).or_default() += 1;
        }
        let names: Vec<&str> = sources.keys().copied().collect();
        let subject: String = format!("sqskit: {} dead letter(s) from {}", archived.len(), names.join(", "))
            .chars()
            .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
            .take(SUBJECT_MAX)
            .collect();
        let mut text =
            format!("{} message(s) from {} were dead-lettered and archived.\n\n", archived.len(), dead_letter_queue);
        text.push_str("Source queues:\n");
        for (q, n) in &sources {
            text.push_str(&format!("  {q}: {n}\n"));
        }
        text.push_str("Error kinds:\n");
        for (k, n) in &kinds {
            text.push_str(&format!("  {k}: {n}\n"));
        }
        let prefix = self.config.prefix.trim_matches('/');
        text.push_str(&format!("Archive: s3://{}/{}\n", self.config.bucket, prefix));
        text.push_str(&format!("First {} message id(s):\n", archived.len().min(self.config.max_ids)));
        for a in archived.iter().take(self.config.max_ids) {
            text.push_str(&format!("  {}  s3://{}/{}\n", a.message_id, self.config.bucket, a.key));
        }
        if self.config.include_body {
            text.push_str("Bodies (truncated):\n");
            for a in archived.iter().take(self.config.max_ids) {
                let body: String = a.body.chars().take(BODY_IN_ALERT_MAX).collect();
                let line = format!("  {}: {}\n", a.message_id, body);
                if text.len() + line.len() > SNS_MESSAGE_MAX {
                    text.push_str("  (more omitted: SNS message size limit)\n");
                    break;
                }
                text.push_str(&line);
            }
        }
        (subject, text)
    }

    /// Publish one alert for `archived` (nothing when empty or no topic is configured).
    /// Returns whether an alert was sent.
    ///
    /// # Errors
    /// [`DlqError::Alert`] when SNS refuses.
    pub async fn alert(&self, archived: &[Archived], dead_letter_queue: &str) -> Result<bool, DlqError> {
        let Some(topic) = &self.config.topic_arn else { return Ok(false) };
        if archived.is_empty() {
            return Ok(false);
        }
        let (subject, message) = self.render_alert(archived, dead_letter_queue);
        self.sns.publish().topic_arn(topic).subject(subject).message(message).send().await.map_err(|e| {
            DlqError::Alert { topic: topic.clone(), message: aws_sdk_sns::error::DisplayErrorContext(e).to_string() }
        })?;
        Ok(true)
    }
}

/// Counts of one dlq-monitor invocation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MonitorSummary {
    /// Records archived.
    pub archived: usize,
    /// Records whose archive failed (reported in `batchItemFailures`).
    pub archive_failures: usize,
    /// Whether the alert was published.
    pub alert_sent: bool,
    /// Whether publishing the alert failed.
    pub alert_failed: bool,
}

impl MonitorSummary {
    /// One CloudWatch EMF line: `Archived`, `ArchiveFailures`, `AlertSent`, `AlertFailures`.
    pub fn emf_line(&self, function: &str) -> String {
        crate::metrics::emf_line(
            "sqskit",
            &[("Function", function)],
            &[
                ("Archived", self.archived as f64, "Count"),
                ("ArchiveFailures", self.archive_failures as f64, "Count"),
                ("AlertSent", f64::from(u8::from(self.alert_sent)), "Count"),
                ("AlertFailures", f64::from(u8::from(self.alert_failed)), "Count"),
            ],
            crate::metrics::now_ms(),
        )
    }
}

impl DlqMonitor {
    /// The dlq-monitor's work for the messages of one invocation from the DLQ `dlq_arn`:
    /// archive every message, then send one alert for the archived ones (a failed alert is
    /// logged and counted). Returns the ids whose archive failed (to be retried).
    pub async fn handle_messages(
        &self,
        dlq_arn: &str,
        messages: Vec<ReceivedMessage>,
        sqs: &aws_sdk_sqs::Client,
    ) -> (Vec<String>, MonitorSummary) {
        let arn = dlq_arn.to_string();
        let dlq_name = arn.rsplit(':').next().unwrap_or("unknown").to_string();
        let needs_source = messages.iter().any(|m| source_queue(m).is_none());
        let source = if needs_source && !arn.is_empty() {
            match crate::Queue::by_arn(sqs.clone(), &arn).await {
                Ok(q) => redrive_source(&q).await,
                Err(_) => None,
            }
        } else {
            None
        };
        let report = self.archive(&messages, &dlq_name, source.as_deref()).await;
        let failed: Vec<String> = report
            .failed
            .iter()
            .filter_map(|f| match f {
                DlqError::Archive { message_id, .. } => Some(message_id.clone()),
                _ => None,
            })
            .collect();
        let mut summary = MonitorSummary {
            archived: report.archived.len(),
            archive_failures: report.failed.len(),
            ..Default::default()
        };
        match self.alert(&report.archived, &dlq_name).await {
            Ok(sent) => summary.alert_sent = sent,
            Err(e) => {
                tracing::error!(error = %e, "alert failed; the messages are archived");
                summary.alert_failed = true;
            }
        }
        tracing::info!(
            dlq = %dlq_name,
            archived = summary.archived,
            archive_failures = summary.archive_failures,
            alert_sent = summary.alert_sent,
            "dead letters processed"
        );
        (failed, summary)
    }
}

/// What a drain did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DrainReport {
    /// Messages archived.
    pub archived: usize,
    /// Archived messages deleted from the DLQ.
    pub deleted: usize,
    /// Messages whose archive failed (left in the DLQ).
    pub archive_failures: usize,
    /// Whether the one alert was sent.
    pub alert_sent: bool,
}

impl DlqMonitor {
    /// Empty a DLQ without Lambda: archive every message, delete the archived ones, then send
    /// one alert for all of them. Messages whose archive fails stay (invisible for `hold`).
    /// A failed receive or delete stops the drain, but the alert still goes out for what was
    /// archived (those messages are safe in S3 even when their delete failed) before the error
    /// is returned.
    ///
    /// # Errors
    /// [`DlqError::Drain`] with the report and the receive or delete error. Archive failures of
    /// single messages are counted in the report, not returned.
    pub async fn drain(&self, dlq: &crate::Queue, hold: std::time::Duration) -> Result<DrainReport, DlqError> {
        let source = redrive_source(dlq).await;
        let mut archived = Vec::new();
        let mut report = DrainReport::default();
        let stopped = loop {
            let batch = match dlq.receive(10, std::time::Duration::from_secs(1), Some(hold)).await {
                Ok(b) if b.is_empty() => break None,
                Ok(b) => b,
                Err(e) => break Some(e),
            };
            let r = self.archive(&batch, dlq.name(), source.as_deref()).await;
            report.archive_failures += r.failed.len();
            report.archived += r.archived.len();
            let done: Vec<&str> = batch
                .iter()
                .filter(|m| r.archived.iter().any(|a| a.message_id == m.message_id))
                .map(|m| m.receipt_handle.as_str())
                .collect();
            archived.extend(r.archived);
            if done.is_empty() {
                continue;
            }
            match dlq.delete_batch(&done).await {
                Ok(d) => {
                    report.deleted += d.succeeded.len();
                    if let Err(e) = d.into_result() {
                        break Some(e);
                    }
                }
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = &stopped {
            tracing::error!(error = %e, archived = report.archived, "draining stopped; alerting on what was archived");
        }
        match self.alert(&archived, dlq.name()).await {
            Ok(sent) => report.alert_sent = sent,
            Err(e) => tracing::error!(error = %e, "alert failed; the messages are archived"),
        }
        match stopped {
            None => Ok(report),
            Some(source) => Err(DlqError::Drain { report, source }),
        }
    }
}

/// The message to send back to the source queue for a dead letter: body and attributes without
/// the processor's error attributes, its `AWSTraceHeader` kept; on a FIFO target the group is kept and the DLQ message id
/// is the deduplication id (so a rerun within 5 minutes does not duplicate).
pub fn redriven_message(m: &ReceivedMessage, fifo_target: bool) -> crate::OutgoingMessage {
    let mut out = crate::OutgoingMessage::new(m.body.clone());
    out.attributes = m
        .attributes
        .iter()
        .filter(|(k, _)| !dl::ALL.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.trace_header = crate::trace::received_trace_header(m);
    if fifo_target {
        out.group_id = Some(m.group_id().unwrap_or("sqskit-redrive").to_string());
        out.dedup_id = Some(m.message_id.clone());
    }
    out
}

/// The error kind [`redrive`] filters and reports for a dead letter without one: a message SQS's
/// redrive policy moved (the processor adds no attributes then).
pub const MAX_RECEIVES_KIND: &str = "max-receives";

/// The error kind of a dead letter: the processor's `sqskit-error-kind` attribute (or the kind
/// in `sqskit-dead-letter`), else [`MAX_RECEIVES_KIND`].
pub fn error_kind(m: &ReceivedMessage) -> String {
    error_info(m).0.unwrap_or_else(|| MAX_RECEIVES_KIND.to_string())
}

/// Which DLQ messages a client-side [`redrive`] moves; parsed from the text of
/// `sqskit redrive --filter` with [`str::parse`].
///
/// - `/json/pointer=value`: the body, parsed as JSON, holds `value` at the
///   [JSON Pointer](https://www.rfc-editor.org/rfc/rfc6901) (the pointer ends at the first `=`).
///   `value` is compared as a JSON literal when it parses as one (`42`, `true`, `"42"`,
///   `{"a":1}`), else as a string (`failed` is the same as `"failed"`); numbers compare by value
///   (`1` matches `1.0`). A body that is not JSON, or has nothing at the pointer, does not match.
///   The body is the one in the DLQ: a claim-checked message is matched as its S3 pointer.
/// - `kind=<error kind>`: the error kind the processor recorded when it dead-lettered the message
///   ([`FailureKind::as_str`](crate::FailureKind::as_str): `permanent`, `undecodable`, ...), or
///   `max-receives` for a message without one (moved by SQS's redrive policy).
/// - `source=<queue name>`: the message's [`source_queue`].
/// - `id=<message id>[,<message id>...]`: one of these DLQ message ids.
///
/// # Example
/// ```
/// use sqskit::dlq::RedriveFilter;
/// let f: RedriveFilter = "/order/status=failed".parse()?;
/// assert_eq!(f, RedriveFilter::Pointer { pointer: "/order/status".into(), value: "failed".into() });
/// let k: RedriveFilter = "kind=undecodable".parse()?;
/// assert_eq!(k.to_string(), "kind=undecodable");
/// assert!("kind=typo".parse::<RedriveFilter>().is_err());
/// # Ok::<(), sqskit::dlq::DlqError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RedriveFilter {
    /// The body parsed as JSON has `value` at `pointer`.
    Pointer {
        /// An RFC 6901 JSON Pointer (`/a/0/b`, `~1` for `/`, `~0` for `~`).
        pointer: String,
        /// The value to find there.
        value: serde_json::Value,
    },
    /// The dead letter's error kind (see [`error_kind`]).
    Kind(String),
    /// The dead letter's source queue (see [`source_queue`]).
    Source(String),
    /// One of these DLQ message ids.
    MessageIds(std::collections::BTreeSet<String>),
}

impl RedriveFilter {
    /// Whether `m` passes this filter (the body is parsed for a pointer; never logged).
    pub fn matches(&self, m: &ReceivedMessage) -> bool {
        match self {
            RedriveFilter::Kind(kind) => error_kind(m) == *kind,
            RedriveFilter::Source(name) => source_queue(m).as_deref() == Some(name.as_str()),
            RedriveFilter::MessageIds(ids) => ids.contains(&m.message_id),
            RedriveFilter::Pointer { pointer, value } => serde_json::from_str::<serde_json::Value>(&m.body)
                .ok()
                .and_then(|body| body.pointer(pointer).map(|found| json_equal(found, value)))
                .unwrap_or(false),
        }
    }
}

/// JSON equality, with numbers compared by value (`1` equals `1.0`).
fn json_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Number(x), serde_json::Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        _ => a == b,
    }
}

impl std::str::FromStr for RedriveFilter {
    type Err = DlqError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| DlqError::InvalidFilter { expr: s.to_string(), reason };
        if let Some(kind) = s.strip_prefix("kind=") {
            let known = || crate::FailureKind::ALL.iter().map(|k| k.as_str()).chain([MAX_RECEIVES_KIND]);
            if known().any(|k| k == kind) {
                return Ok(RedriveFilter::Kind(kind.to_string()));
            }
            return Err(invalid(format!(
                "unknown error kind {kind:?} (one of: {})",
                known().collect::<Vec<_>>().join(", ")
            )));
        }
        if let Some(name) = s.strip_prefix("source=").filter(|n| !n.is_empty()) {
            return Ok(RedriveFilter::Source(name.to_string()));
        }
        if let Some(ids) = s.strip_prefix("id=") {
            let ids: std::collections::BTreeSet<String> =
                ids.split(',').map(str::trim).filter(|i| !i.is_empty()).map(str::to_string).collect();
            return match ids.is_empty() {
                true => Err(invalid("no message id after `id=`".into())),
                false => Ok(RedriveFilter::MessageIds(ids)),
            };
        }
        if !s.starts_with('/') {
            return Err(invalid(
                "expected /json/pointer=value or kind=<error kind> (or source=<queue>, id=<id>,<id>...)".into(),
            ));
        }
        let Some((pointer, value)) = s.split_once('=') else {
            return Err(invalid("no `=value` after the JSON pointer (expected /json/pointer=value)".into()));
        };
        let mut chars = pointer.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(invalid(format!("{pointer:?} is not a JSON pointer: `~` must be followed by 0 or 1")));
            }
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        Ok(RedriveFilter::Pointer { pointer: pointer.to_string(), value })
    }
}

impl std::fmt::Display for RedriveFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedriveFilter::Kind(kind) => write!(f, "kind={kind}"),
            RedriveFilter::Source(name) => write!(f, "source={name}"),
            RedriveFilter::MessageIds(ids) => write!(f, "id={}", ids.iter().cloned().collect::<Vec<_>>().join(",")),
            RedriveFilter::Pointer { pointer, value } => write!(f, "{pointer}={value}"),
        }
    }
}

/// A message a dry run would move.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PlannedMove {
    /// The DLQ message id.
    pub message_id: String,
    /// Where it was dead-lettered from, when known (see [`source_queue`]).
    pub source_queue: Option<String>,
    /// The queue it would be sent to (name).
    pub target: String,
    /// Its error kind (see [`error_kind`]).
    pub error_kind: String,
}

/// What a redrive did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RedriveReport {
    /// Messages sent back and deleted from the DLQ.
    pub moved: usize,
    /// Messages that could not be moved (left in the DLQ), with the reason.
    pub failed: Vec<String>,
    /// Messages examined and left in the DLQ because they did not match the filters.
    pub skipped: usize,
    /// Whether this was a dry run (nothing sent, nothing deleted).
    pub dry_run: bool,
    /// Dry run: the messages that would move, in the order examined.
    pub would_move: Vec<PlannedMove>,
}

/// How [`redrive`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedriveOptions {
    /// Move at most this many messages (`None`: all). Counts moved messages (dry run: messages
    /// that would move), not messages examined.
    pub max: Option<usize>,
    /// At most this many messages per second (`None`: as fast as SQS goes).
    pub rate: Option<f64>,
    /// How long a received DLQ message stays invisible while it is being moved.
    pub hold: std::time::Duration,
    /// How long to wait for DLQ messages in flight (e.g. held by an interrupted run) to come back.
    pub in_flight_patience: std::time::Duration,
    /// Move only the messages that pass every one of these filters (empty: all).
    pub filters: Vec<RedriveFilter>,
    /// Examine and report what would move, but send and delete nothing.
    pub dry_run: bool,
    /// How long the messages a run leaves in the DLQ (not matching, not moved, or in a dry run)
    /// stay invisible at a time; the run renews it while it goes on and makes them visible again
    /// at the end. After an interrupted run they come back within this time.
    pub keep_hold: std::time::Duration,
}

impl Default for RedriveOptions {
    fn default() -> Self {
        Self {
            max: None,
            rate: None,
            hold: std::time::Duration::from_secs(10),
            in_flight_patience: std::time::Duration::from_secs(30),
            filters: Vec::new(),
            dry_run: false,
            keep_hold: std::time::Duration::from_secs(60),
        }
    }
}

impl RedriveOptions {
    /// Move at most `max` messages.
    pub fn with_max(mut self, max: Option<usize>) -> Self {
        self.max = max;
        self
    }
    /// At most `rate` messages per second.
    pub fn with_rate(mut self, rate: Option<f64>) -> Self {
        self.rate = rate;
        self
    }
    /// Add a filter: a message moves only when it passes every filter added.
    ///
    /// # Example
    /// ```
    /// let options = sqskit::dlq::RedriveOptions::default()
    ///     .with_filter("kind=permanent".parse()?)
    ///     .with_dry_run(true);
    /// assert_eq!(options.filters.len(), 1);
    /// # Ok::<(), sqskit::dlq::DlqError>(())
    /// ```
    pub fn with_filter(mut self, filter: RedriveFilter) -> Self {
        self.filters.push(filter);
        self
    }
    /// Report what would move without sending or deleting anything.
    pub fn with_dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }
}

/// Move messages from `dlq` back to `to`, or to each message's source queue: the loop behind
/// `sqskit redrive`. Each message is deleted from the DLQ only after it was sent, so
/// interrupting and rerunning loses nothing (a message sent just before an interruption may be
/// sent twice). Waits up to `in_flight_patience` for messages held by an interrupted run.
/// `progress` is called with the number moved so far (dry run: the number that would move).
///
/// Each DLQ message is examined once per run: those the run leaves in the DLQ (not matching the
/// filters, failing to move, beyond `max`, or all of them in a dry run) are kept invisible
/// while the run goes on (renewed every `keep_hold / 2`) and made visible again at the end,
/// also when the run stops with an error. A message that comes back anyway (its hold lapsed) is
/// recognised by its id and held again without being examined or sent a second time. So the
/// run ends once every message has been seen; on a FIFO DLQ, messages queued behind a held one
/// in the same message group are not received in that run. A run stops early when every move
/// of a batch failed.
///
/// # Errors
/// [`crate::Error::Invalid`] for a rate that is not above 0; a failed receive or delete on the DLQ.
pub async fn redrive(
    dlq: &crate::Queue,
    to: Option<crate::Queue>,
    options: &RedriveOptions,
    mut progress: impl FnMut(usize),
) -> Result<RedriveReport, crate::Error> {
    if let Some(rate) = options.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(crate::Error::Invalid { what: "rate", reason: format!("must be above 0 (got {rate})") });
        }
    }
    let mut redriver = Redriver::new(dlq.clone(), to)
        .await
        .with_filters(options.filters.clone())
        .with_dry_run(options.dry_run)
        .with_keep_hold(options.keep_hold);
    let mut report = RedriveReport { dry_run: options.dry_run, ..Default::default() };
    let result = redrive_loop(&mut redriver, options, &mut report, &mut progress).await;
    redriver.release().await;
    result.map(|()| report)
}

async fn redrive_loop(
    redriver: &mut Redriver,
    options: &RedriveOptions,
    report: &mut RedriveReport,
    progress: &mut impl FnMut(usize),
) -> Result<(), crate::Error> {
    use std::time::{Duration, Instant};
    let limit = options.max.unwrap_or(usize::MAX);
    let taken = |r: &RedriveReport| r.moved + r.would_move.len();
    let started = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while taken(report) < limit {
        redriver.keep_alive().await;
        let want = (limit - taken(report)).min(10) as u32;
        let Some((step, attempted)) = redriver.step_inner(want, options.hold).await? else {
            // Nothing visible. Messages held by an interrupted run (or another consumer) come
            // back when their visibility ends: wait for them, within reason. Those this run
            // holds itself are not waited for.
            let in_flight = redriver.dlq.attributes().await?.in_flight.saturating_sub(redriver.held.len() as u64);
            let waited = idle_since.get_or_insert_with(Instant::now).elapsed();
            if in_flight == 0 || waited > options.in_flight_patience {
                if in_flight > 0 {
                    report.failed.push(format!(
                        "{in_flight} message(s) still in flight in {} (held by another consumer?); rerun later",
                        redriver.dlq.name()
                    ));
                }
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        idle_since = None;
        report.moved += step.moved;
        report.skipped += step.skipped;
        report.would_move.extend(step.would_move);
        progress(taken(report));
        let stuck = attempted > 0 && step.moved == 0 && !options.dry_run;
        report.failed.extend(step.failed);
        if stuck {
            break; // every move of this batch failed: stop instead of going on failing
        }
        if let (Some(rate), false) = (options.rate, options.dry_run) {
            // `None`: a rate so low the next message is due beyond what an Instant can hold
            let due = Duration::try_from_secs_f64(report.moved as f64 / rate).ok().and_then(|d| started.checked_add(d));
            // sleep in short steps so the messages held meanwhile stay invisible
            loop {
                redriver.keep_alive().await;
                let wait = due.map_or(Duration::from_secs(1), |d| d.saturating_duration_since(Instant::now()));
                if wait.is_zero() {
                    break;
                }
                tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
            }
        }
    }
    Ok(())
}

/// Largest `MaxNumberOfMessagesPerSecond` SQS accepts for a message move task.
pub const MAX_MOVE_TASK_RATE: u32 = 500;

/// A rate for [`start_move_task`] from a number of messages per second given as a float (e.g.
/// a command-line flag): SQS takes a whole number from 1 to [`MAX_MOVE_TASK_RATE`].
///
/// # Example
/// ```
/// assert_eq!(sqskit::dlq::move_task_rate(50.0).ok(), Some(50));
/// assert!(sqskit::dlq::move_task_rate(2.5).is_err());
/// assert!(sqskit::dlq::move_task_rate(501.0).is_err());
/// ```
///
/// # Errors
/// [`crate::Error::Invalid`] for a fraction, [`crate::Error::Limit`] outside 1..=500.
pub fn move_task_rate(rate: f64) -> Result<u32, crate::Error> {
    if !rate.is_finite() || rate.fract() != 0.0 {
        return Err(crate::Error::Invalid {
            what: "rate",
            reason: format!(
                "{rate} is not a whole number of messages per second (MaxNumberOfMessagesPerSecond: 1..={MAX_MOVE_TASK_RATE})"
            ),
        });
    }
    // saturating casts: a negative rate becomes 0, a huge one u64::MAX; both fail the range check
    crate::limits::check_range("rate", rate as u64, 1, u64::from(MAX_MOVE_TASK_RATE))?;
    Ok(rate as u32)
}

/// Ask SQS to move the DLQ's messages (`StartMessageMoveTask`) to `to`, or back to their
/// sources; `rate` becomes `MaxNumberOfMessagesPerSecond` (1..=500). Returns the task handle.
/// SQS runs one task per DLQ at a time; follow it with [`list_move_tasks`], stop it with
/// [`cancel_move_task`].
///
/// # Errors
/// [`crate::Error::Limit`] for a rate outside 1..=500, before any call; the classified error of
/// `GetQueueAttributes` or `StartMessageMoveTask` (e.g. a task is already running, or the queue
/// is no queue's DLQ).
pub async fn start_move_task(
    dlq: &crate::Queue,
    to: Option<&crate::Queue>,
    rate: Option<u32>,
) -> Result<String, crate::Error> {
    if let Some(r) = rate {
        crate::limits::check_range("rate", u64::from(r), 1, u64::from(MAX_MOVE_TASK_RATE))?;
    }
    let arn = queue_arn(dlq).await?;
    let mut req = dlq.client().start_message_move_task().source_arn(&arn);
    if let Some(target) = to {
        req = req.destination_arn(queue_arn(target).await?);
    }
    if let Some(r) = rate {
        req = req.max_number_of_messages_per_second(r as i32);
    }
    let out = req.send().await.map_err(|e| crate::client::sqs_error("StartMessageMoveTask", dlq.url(), e))?;
    Ok(out.task_handle().unwrap_or_default().to_string())
}

/// The queue's ARN (`GetQueueAttributes` `QueueArn`).
async fn queue_arn(q: &crate::Queue) -> Result<String, crate::Error> {
    q.attributes()
        .await?
        .arn
        .ok_or_else(|| crate::Error::Invalid { what: "queue", reason: format!("{} has no ARN", q.name()) })
}

/// Status of a running message move task (see [`MoveTask::status`]).
pub const MOVE_TASK_RUNNING: &str = "RUNNING";

/// A message move task of a DLQ, as `ListMessageMoveTasks` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MoveTask {
    /// `RUNNING`, `COMPLETED`, `CANCELLING`, `CANCELLED` or `FAILED`.
    pub status: String,
    /// The handle to cancel it with; SQS gives one for a running task only.
    pub task_handle: Option<String>,
    /// Messages moved so far (approximate).
    pub moved: u64,
    /// Messages to move, counted when the task started (approximate).
    pub to_move: Option<u64>,
    /// ARN of the DLQ the messages come from.
    pub source_arn: String,
    /// ARN of the queue they go to (`None`: each message's source queue).
    pub destination_arn: Option<String>,
    /// `MaxNumberOfMessagesPerSecond` (`None`: as fast as SQS goes).
    pub max_per_second: Option<u32>,
    /// When the task started (RFC 3339, UTC).
    pub started: Option<String>,
    /// When the task started, in milliseconds since the Unix epoch.
    pub started_ms: i64,
    /// Why the task failed (status `FAILED`).
    pub failure_reason: Option<String>,
}

impl MoveTask {
    /// Whether the task is still moving messages (and can be cancelled).
    pub fn is_running(&self) -> bool {
        self.status == MOVE_TASK_RUNNING
    }
}

impl From<&aws_sdk_sqs::types::ListMessageMoveTasksResultEntry> for MoveTask {
    fn from(e: &aws_sdk_sqs::types::ListMessageMoveTasksResultEntry) -> Self {
        let started_ms = e.started_timestamp();
        let started = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(started_ms) * 1_000_000)
            .ok()
            .filter(|_| started_ms > 0)
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
        MoveTask {
            status: e.status().unwrap_or("UNKNOWN").to_string(),
            task_handle: e.task_handle().map(str::to_string),
            moved: u64::try_from(e.approximate_number_of_messages_moved()).unwrap_or(0),
            to_move: e.approximate_number_of_messages_to_move().and_then(|n| u64::try_from(n).ok()),
            source_arn: e.source_arn().unwrap_or_default().to_string(),
            destination_arn: e.destination_arn().map(str::to_string),
            max_per_second: e.max_number_of_messages_per_second().and_then(|n| u32::try_from(n).ok()),
            started,
            started_ms,
            failure_reason: e.failure_reason().map(str::to_string),
        }
    }
}

/// Largest number of tasks `ListMessageMoveTasks` returns.
pub const MAX_LISTED_MOVE_TASKS: u32 = 10;

/// The most recent message move tasks of `dlq` (`ListMessageMoveTasks` with the DLQ's ARN as
/// `SourceArn`), newest first, at most `max` (1..=10; SQS keeps the tasks of the last 14 days).
///
/// # Errors
/// [`crate::Error::Limit`] for `max` outside 1..=10, before any call; the classified error of
/// `GetQueueAttributes` or `ListMessageMoveTasks`.
pub async fn list_move_tasks(dlq: &crate::Queue, max: u32) -> Result<Vec<MoveTask>, crate::Error> {
    crate::limits::check_range("max_results", u64::from(max), 1, u64::from(MAX_LISTED_MOVE_TASKS))?;
    let arn = queue_arn(dlq).await?;
    let out = dlq
        .client()
        .list_message_move_tasks()
        .source_arn(&arn)
        .max_results(max as i32)
        .send()
        .await
        .map_err(|e| crate::client::sqs_error("ListMessageMoveTasks", dlq.url(), e))?;
    let mut tasks: Vec<MoveTask> = out.results().iter().map(MoveTask::from).collect();
    tasks.sort_by_key(|t| std::cmp::Reverse(t.started_ms));
    Ok(tasks)
}

/// A cancelled message move task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CancelledMoveTask {
    /// The task's handle.
    pub task_handle: String,
    /// Messages it had moved (approximate); the rest stay in the DLQ.
    pub moved: u64,
}

/// Cancel the running message move task of `dlq` (`CancelMessageMoveTask`): the one with
/// `handle` when given, else the one [`list_move_tasks`] shows running. Messages it moved stay
/// moved; the others stay in the DLQ.
///
/// # Errors
/// [`DlqError::NoRunningMoveTask`] when no task of `dlq` is running (or none with `handle`),
/// checked with `ListMessageMoveTasks` before cancelling; [`DlqError::Sqs`] for a failed call.
pub async fn cancel_move_task(dlq: &crate::Queue, handle: Option<&str>) -> Result<CancelledMoveTask, DlqError> {
    let tasks = list_move_tasks(dlq, MAX_LISTED_MOVE_TASKS).await?;
    let running = tasks
        .iter()
        .filter(|t| t.is_running())
        .find_map(|t| t.task_handle.as_deref().filter(|h| handle.is_none_or(|want| want == *h)));
    let Some(task_handle) = running else {
        return Err(DlqError::NoRunningMoveTask {
            queue: dlq.name().to_string(),
            handle: handle.map(str::to_string),
            latest: tasks.first().map(|t| t.status.clone()),
        });
    };
    let out = dlq
        .client()
        .cancel_message_move_task()
        .task_handle(task_handle)
        .send()
        .await
        .map_err(|e| crate::client::sqs_error("CancelMessageMoveTask", dlq.url(), e))?;
    Ok(CancelledMoveTask {
        task_handle: task_handle.to_string(),
        moved: u64::try_from(out.approximate_number_of_messages_moved()).unwrap_or(0),
    })
}

/// DLQ messages a redrive received and leaves in the DLQ: receipt handle and until when it is
/// invisible, by message id, and a queue of when each hold needs renewing.
#[derive(Debug, Default)]
struct Held {
    by_id: std::collections::HashMap<String, (String, std::time::Instant)>,
    /// `(until, id)`, earliest first; an entry whose `until` no longer matches `by_id` is stale.
    due: std::collections::BinaryHeap<std::cmp::Reverse<(std::time::Instant, String)>>,
}

impl Held {
    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn insert(&mut self, m: &ReceivedMessage, until: std::time::Instant) {
        self.by_id.insert(m.message_id.clone(), (m.receipt_handle.clone(), until));
        self.due.push(std::cmp::Reverse((until, m.message_id.clone())));
    }

    /// `(id, receipt handle)` of the messages whose hold ends before `before`, taken off the
    /// renewal queue (put them back with [`Held::renewed`]).
    fn take_due(&mut self, before: std::time::Instant) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while self.due.peek().is_some_and(|std::cmp::Reverse((until, _))| *until < before) {
            let Some(std::cmp::Reverse((until, id))) = self.due.pop() else { break };
            if let Some((handle, _)) = self.by_id.get(&id).filter(|(_, u)| *u == until) {
                out.push((id, handle.clone()));
            }
        }
        out
    }

    fn renewed(&mut self, id: &str, until: std::time::Instant) {
        if let Some(entry) = self.by_id.get_mut(id) {
            entry.1 = until;
            self.due.push(std::cmp::Reverse((until, id.to_string())));
        }
    }
}

/// Moves messages from a DLQ back to their source: each is deleted from the DLQ only after its
/// send succeeded, so an interruption loses nothing (a message sent but not yet deleted is sent
/// again by the next run: duplicates are possible, losses are not).
///
/// Messages it leaves in the DLQ (not passing the filters, failing to move, or every message in
/// a dry run) are kept invisible: call [`Redriver::keep_alive`] regularly while stepping and
/// [`Redriver::release`] at the end (see [`redrive`]).
pub struct Redriver {
    dlq: crate::Queue,
    to: Option<crate::Queue>,
    redrive_source: Option<String>,
    targets: std::collections::HashMap<String, crate::Queue>,
    filters: Vec<RedriveFilter>,
    dry_run: bool,
    keep_hold: std::time::Duration,
    /// Ids of the messages received so far.
    seen: std::collections::HashSet<String>,
    held: Held,
}

impl Redriver {
    /// A redriver for `dlq`, to `to` when given, else to each message's [`source_queue`] (or
    /// the DLQ's single redrive source).
    pub async fn new(dlq: crate::Queue, to: Option<crate::Queue>) -> Self {
        let redrive_source = if to.is_none() { redrive_source(&dlq).await } else { None };
        Self {
            dlq,
            to,
            redrive_source,
            targets: Default::default(),
            filters: Vec::new(),
            dry_run: false,
            keep_hold: RedriveOptions::default().keep_hold,
            seen: Default::default(),
            held: Held::default(),
        }
    }

    /// Move only messages passing every filter (see [`RedriveFilter`]).
    pub fn with_filters(mut self, filters: Vec<RedriveFilter>) -> Self {
        self.filters = filters;
        self
    }

    /// Send and delete nothing; [`RedriveReport::would_move`] lists what would move.
    pub fn with_dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// How long held messages stay invisible at a time (see [`RedriveOptions::keep_hold`];
    /// clamped to 2 s..=12 h, the most SQS allows).
    pub fn with_keep_hold(mut self, hold: std::time::Duration) -> Self {
        let max = std::time::Duration::from_secs(u64::from(crate::limits::MAX_VISIBILITY_SECONDS));
        self.keep_hold = hold.clamp(std::time::Duration::from_secs(2), max);
        self
    }

    /// How many DLQ messages the redriver holds invisible.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    async fn target(&mut self, m: &ReceivedMessage) -> Result<crate::Queue, String> {
        if let Some(t) = &self.to {
            return Ok(t.clone());
        }
        let name = source_queue(m).or_else(|| self.redrive_source.clone()).ok_or_else(|| {
            format!(
                "{}: source queue unknown (no DeadLetterQueueSourceArn or {} attribute, DLQ has no single source); use --to",
                m.message_id,
                dl::SOURCE_QUEUE
            )
        })?;
        if let Some(q) = self.targets.get(&name) {
            return Ok(q.clone());
        }
        let q = crate::Queue::by_name(self.dlq.client().clone(), &name, None)
            .await
            .map_err(|e| format!("{}: {e}", m.message_id))?;
        self.targets.insert(name, q.clone());
        Ok(q)
    }

    /// Move up to `max` (≤ 10) messages: one receive from the DLQ (of 10 messages when
    /// filtering, of `max` otherwise). Returns `None` when the DLQ had nothing visible.
    ///
    /// # Errors
    /// A failed receive or delete on the DLQ.
    pub async fn step(&mut self, max: u32, hold: std::time::Duration) -> Result<Option<RedriveReport>, crate::Error> {
        Ok(self.step_inner(max, hold).await?.map(|(report, _)| report))
    }

    /// [`Redriver::step`], also returning how many messages it tried to move (matching, within
    /// `max`).
    async fn step_inner(
        &mut self,
        max: u32,
        hold: std::time::Duration,
    ) -> Result<Option<(RedriveReport, usize)>, crate::Error> {
        let max = max.clamp(1, 10) as usize;
        let filtering = !self.filters.is_empty();
        let want = if filtering { 10 } else { max as u32 };
        let batch = self.dlq.receive(want, std::time::Duration::from_secs(1), Some(hold)).await?;
        if batch.is_empty() {
            return Ok(None);
        }
        let held_until = std::time::Instant::now() + hold;
        let mut report = RedriveReport { dry_run: self.dry_run, ..Default::default() };
        let mut by_target: Vec<(crate::Queue, Vec<&ReceivedMessage>)> = Vec::new();
        let mut taken = 0;
        for m in &batch {
            if !self.seen.insert(m.message_id.clone()) {
                // back after its hold lapsed (or a delete that failed): examined already
                self.held.insert(m, held_until);
                continue;
            }
            if !self.filters.iter().all(|f| f.matches(m)) {
                report.skipped += 1;
                self.held.insert(m, held_until);
                continue;
            }
            if taken == max {
                self.held.insert(m, held_until); // beyond --max
                continue;
            }
            taken += 1;
            let target = match self.target(m).await {
                Ok(t) => t,
                Err(e) => {
                    report.failed.push(e);
                    self.held.insert(m, held_until);
                    continue;
                }
            };
            if self.dry_run {
                report.would_move.push(PlannedMove {
                    message_id: m.message_id.clone(),
                    source_queue: source_queue(m),
                    target: target.name().to_string(),
                    error_kind: error_kind(m),
                });
                self.held.insert(m, held_until);
                continue;
            }
            match by_target.iter_mut().find(|(q, _)| q.url() == target.url()) {
                Some((_, v)) => v.push(m),
                None => by_target.push((target, vec![m])),
            }
        }
        let mut delete: Vec<&ReceivedMessage> = Vec::new();
        for (target, msgs) in by_target {
            let fifo = target.is_fifo();
            match target.send_batch(msgs.iter().map(|m| redriven_message(m, fifo))).await {
                Ok(r) => {
                    delete.extend(r.sent.iter().map(|s| msgs[s.index]));
                    for f in &r.failed {
                        report.failed.push(format!("{}: {}: {}", msgs[f.index].message_id, f.code, f.message));
                        self.held.insert(msgs[f.index], held_until);
                    }
                }
                Err(e) => {
                    for m in msgs {
                        report.failed.push(format!("{}: {e}", m.message_id));
                        self.held.insert(m, held_until);
                    }
                }
            }
        }
        if !delete.is_empty() {
            let handles: Vec<&str> = delete.iter().map(|m| m.receipt_handle.as_str()).collect();
            let r = self.dlq.delete_batch(&handles).await?;
            report.moved = r.succeeded.len();
            for f in &r.failed {
                // sent, but still in the DLQ: not sent again by this run
                report.failed.push(format!("delete from DLQ: {}: {}", f.code, f.message));
                if let Some(m) = delete.get(f.index) {
                    self.held.insert(m, held_until);
                }
            }
        }
        Ok(Some((report, taken)))
    }

    /// Renew the invisibility of held messages whose hold ends within `keep_hold / 2`. A message
    /// whose renewal fails is not renewed again: it comes back when its hold ends, and the next
    /// step holds it again without examining it.
    pub async fn keep_alive(&mut self) {
        let now = std::time::Instant::now();
        let due = self.held.take_due(now + self.keep_hold / 2);
        if due.is_empty() {
            return;
        }
        let handles: Vec<&str> = due.iter().map(|(_, h)| h.as_str()).collect();
        match self.dlq.change_visibility_batch(&handles, self.keep_hold.as_secs() as u32).await {
            Ok(r) => {
                for i in r.succeeded {
                    if let Some((id, _)) = due.get(i) {
                        self.held.renewed(id, now + self.keep_hold);
                    }
                }
                if !r.failed.is_empty() {
                    tracing::warn!(
                        queue = self.dlq.name(),
                        failed = r.failed.len(),
                        "could not keep some held DLQ messages invisible; they will be held again when they come back"
                    );
                }
            }
            Err(e) => tracing::warn!(queue = self.dlq.name(), error = %e, "could not keep held DLQ messages invisible"),
        }
    }

    /// Make every held message visible again (visibility 0). A message whose release fails
    /// comes back when its hold ends (at most `keep_hold`).
    pub async fn release(&mut self) {
        let held = std::mem::take(&mut self.held).by_id;
        if held.is_empty() {
            return;
        }
        let handles: Vec<&str> = held.values().map(|(h, _)| h.as_str()).collect();
        match self.dlq.change_visibility_batch(&handles, 0).await {
            Ok(r) if r.failed.is_empty() => {}
            Ok(r) => tracing::warn!(
                queue = self.dlq.name(),
                failed = r.failed.len(),
                released = r.succeeded.len(),
                "some DLQ messages could not be made visible again; they come back when their hold ends"
            ),
            Err(e) => tracing::warn!(queue = self.dlq.name(), error = %e,
                "DLQ messages could not be made visible again; they come back when their hold ends"),
        }
    }
}

/// The single source queue of a DLQ (`ListDeadLetterSourceQueues`), when there is exactly one.
pub async fn redrive_source(dlq: &crate::Queue) -> Option<String> {
    let out = dlq.client().list_dead_letter_source_queues().queue_url(dlq.url()).send().await.ok()?;
    match out.queue_urls() {
        [one] => one.rsplit('/').next().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AttributeValue;

    fn msg() -> ReceivedMessage {
        let mut m = ReceivedMessage {
            message_id: "m-1".into(),
            receipt_handle: "h".into(),
            body: "{\"order\":1}".into(),
            attributes: Default::default(),
            system_attributes: [("SentTimestamp".to_string(), "1700000000000".to_string())].into_iter().collect(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        };
        m.attributes.insert(dl::ERROR_KIND.into(), AttributeValue::string("undecodable"));
        m.attributes.insert(dl::SOURCE_QUEUE.into(), AttributeValue::string("orders"));
        m
    }

    #[test]
    fn filters_parse_and_match() {
        let pointer = |s: &str| s.parse::<RedriveFilter>().unwrap();
        let mut m = msg(); // {"order":1}, kind undecodable
        assert!(pointer("/order=1").matches(&m));
        assert!(pointer("/order=1.0").matches(&m), "numbers compare by value");
        assert!(!pointer("/order=\"1\"").matches(&m), "the string \"1\" is not the number 1");
        assert!(!pointer("/missing=1").matches(&m));
        assert!(pointer("kind=undecodable").matches(&m));
        assert!(!pointer("kind=permanent").matches(&m));
        m.body = r#"{"a/b":{"s":"x=y"},"t":true,"n":null}"#.into();
        assert!(pointer("/a~1b/s=x=y").matches(&m), "~1 is a slash; the pointer ends at the first =");
        assert!(pointer("/a~1b/s=\"x=y\"").matches(&m));
        assert!(pointer("/t=true").matches(&m) && !pointer("/t=\"true\"").matches(&m));
        assert!(pointer("/n=null").matches(&m));
        assert!(pointer("/a~1b={\"s\":\"x=y\"}").matches(&m), "objects compare as JSON");
        m.body = "not json".into();
        assert!(!pointer("/order=1").matches(&m), "a body that is not JSON does not match");
        m.attributes.clear();
        assert!(pointer("kind=max-receives").matches(&m), "no error kind: max-receives");
        m.attributes.insert(
            dl::COMBINED.into(),
            AttributeValue::string(r#"{"kind":"permanent","error":"e","source_queue":"q","receive_count":"1"}"#),
        );
        assert!(pointer("kind=permanent").matches(&m), "the kind inside sqskit-dead-letter");
        for bad in ["", "order=1", "kind=", "kind=Permanent", "/order", "/a~2=1", "/a~=1"] {
            let e = bad.parse::<RedriveFilter>().unwrap_err();
            assert!(matches!(e, DlqError::InvalidFilter { .. }), "{bad:?}: {e}");
        }
        assert_eq!(pointer("/order/id=42").to_string(), "/order/id=42");
        assert_eq!(pointer("/s=abc").to_string(), "/s=\"abc\"");
    }

    #[test]
    fn move_task_rates_are_whole_numbers_from_1_to_500() {
        assert_eq!(move_task_rate(1.0).ok(), Some(1));
        assert_eq!(move_task_rate(500.0).ok(), Some(500));
        for bad in [0.0, -3.0, 501.0, 2.5, 0.4, f64::NAN, f64::INFINITY, 1e30] {
            let e = move_task_rate(bad).unwrap_err();
            assert!(e.to_string().contains("500"), "{bad}: {e}");
        }
    }

    #[test]
    fn key_uses_source_queue_and_sent_date() {
        assert_eq!(archive_key("dead-letters/", "orders", &msg()), "dead-letters/orders/2023/11/14/m-1.json");
        assert_eq!(archive_key("", "orders", &msg()), "orders/2023/11/14/m-1.json");
    }

    #[test]
    fn source_queue_prefers_the_redrive_attribute() {
        let mut m = msg();
        assert_eq!(source_queue(&m).as_deref(), Some("orders"));
        m.system_attributes
            .insert("DeadLetterQueueSourceArn".into(), "arn:aws:sqs:us-east-1:000000000000:payments".into());
        assert_eq!(source_queue(&m).as_deref(), Some("payments"));
        m.system_attributes.clear();
        m.attributes.clear();
        assert_eq!(source_queue(&m), None);
    }

    #[test]
    fn document_carries_error_attributes() {
        let d = archive_document(&msg(), "orders", "orders-dlq");
        assert_eq!(d["error"]["kind"], "undecodable");
        assert_eq!(d["sourceQueue"], "orders");
        assert_eq!(d["body"], "{\"order\":1}");
        assert_eq!(d["sentTimestamp"], "1700000000000");
    }

    #[test]
    fn alert_subject_is_short_and_bodies_are_opt_in() {
        let conf = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let mut config = MonitorConfig::new("b").with_prefix("p").with_max_ids(2);
        let archived: Vec<Archived> = (0..5)
            .map(|i| Archived {
                message_id: format!("id{i}"),
                source_queue: format!("queue-with-a-really-long-name-number-{i}"),
                error_kind: if i % 2 == 0 { "permanent".into() } else { "undecodable".into() },
                key: format!("p/q/{i}.json"),
                body: "secret body".into(),
            })
            .collect();
        let m = DlqMonitor::new(&conf, config.clone());
        let (subject, text) = m.render_alert(&archived, "dlq");
        assert!(subject.len() <= 100, "{subject}");
        assert!(text.contains("permanent: 3") && text.contains("undecodable: 2"), "{text}");
        assert!(text.contains("id0") && text.contains("id1") && !text.contains("id2"));
        assert!(!text.contains("secret body"));
        config.include_body = true;
        let (_, text) = DlqMonitor::new(&conf, config).render_alert(&archived, "dlq");
        assert!(text.contains("secret body"));
    }
}
