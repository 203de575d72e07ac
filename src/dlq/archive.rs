//! Archive and alert: what the `dlq-monitor` Lambda and `sqskit dlq drain` do with dead letters.
//!
//! It owns archiving dead letters to S3 (one JSON document per message, body, attributes,
//! timestamps, source queue and the processor's error attributes) and the one aggregated SNS
//! alert per invocation or drain. Archiving is the durable part: a record whose archive fails
//! stays in the DLQ; the alert covers only what was archived, and a failed alert does not undo
//! the archive. It does not move messages back (see `redrive.rs`).
//!
//! Object key: `<prefix>/<source-queue>/<yyyy>/<mm>/<dd>/<messageId>.json`, the date being the
//! message's `SentTimestamp` (UTC), so archiving the same message twice writes the same key.

use std::collections::BTreeMap;

use base64::Engine;
use futures::StreamExt;

use super::{error_info, redrive_source, s3_client, source_queue, DlqError, MAX_RECEIVES_KIND};
use crate::message::ReceivedMessage;

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

    /// From `SQSKIT_ARCHIVE_BUCKET` (required), `SQSKIT_ARCHIVE_PREFIX`, `SQSKIT_ALERT_TOPIC_ARN`,
    /// `SQSKIT_ALERT_INCLUDE_BODY` and `SQSKIT_ARCHIVE_RESOLVE_PAYLOADS` (`true`:
    /// [`MonitorConfig::with_resolve_payloads`]). Their old names without `SQSKIT_`
    /// (`ARCHIVE_BUCKET`, ...) are still read for one release, with a warning.
    ///
    /// # Errors
    /// [`DlqError::Config`] naming the variable that is missing or invalid.
    pub fn from_env() -> Result<Self, DlqError> {
        use crate::env::{renamed_bool, renamed_text};
        let config = |e: crate::env::ConfigError| DlqError::Config {
            name: e.name,
            reason: format!("{:?}: {}", e.value, e.reason),
        };
        let bucket = renamed_text(ARCHIVE_BUCKET, "ARCHIVE_BUCKET").ok_or(DlqError::Config {
            name: ARCHIVE_BUCKET,
            reason: "is not set (nor its old name ARCHIVE_BUCKET)".into(),
        })?;
        Ok(Self {
            bucket,
            prefix: renamed_text("SQSKIT_ARCHIVE_PREFIX", "ARCHIVE_PREFIX").unwrap_or_else(|| "dead-letters".into()),
            topic_arn: renamed_text("SQSKIT_ALERT_TOPIC_ARN", "ALERT_TOPIC_ARN"),
            include_body: renamed_bool("SQSKIT_ALERT_INCLUDE_BODY", "ALERT_INCLUDE_BODY").map_err(config)?,
            max_ids: 20,
            resolve_payloads: renamed_bool("SQSKIT_ARCHIVE_RESOLVE_PAYLOADS", "ARCHIVE_RESOLVE_PAYLOADS")
                .map_err(config)?,
        })
    }
}

/// The variable naming the archive bucket of the DLQ monitor (required by
/// [`MonitorConfig::from_env`]).
const ARCHIVE_BUCKET: &str = "SQSKIT_ARCHIVE_BUCKET";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::tests::msg;

    #[test]
    fn key_uses_source_queue_and_sent_date() {
        assert_eq!(archive_key("dead-letters/", "orders", &msg()), "dead-letters/orders/2023/11/14/m-1.json");
        assert_eq!(archive_key("", "orders", &msg()), "orders/2023/11/14/m-1.json");
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

    #[test]
    fn monitor_settings_come_from_the_sqskit_variables_and_their_old_names_still_work() {
        // the only test reading these variables (the process environment is shared)
        const NEW: [&str; 5] = [
            "SQSKIT_ARCHIVE_BUCKET",
            "SQSKIT_ARCHIVE_PREFIX",
            "SQSKIT_ALERT_TOPIC_ARN",
            "SQSKIT_ALERT_INCLUDE_BODY",
            "SQSKIT_ARCHIVE_RESOLVE_PAYLOADS",
        ];
        let clear = || {
            NEW.iter().for_each(|n| {
                std::env::remove_var(n);
                std::env::remove_var(n.trim_start_matches("SQSKIT_"));
            })
        };
        clear();
        let e = MonitorConfig::from_env().unwrap_err();
        assert!(e.to_string().contains("SQSKIT_ARCHIVE_BUCKET") && e.to_string().contains("not set"), "{e}");
        for (n, v) in NEW.iter().zip(["archive", "dead", "arn:aws:sns:us-east-1:1:t", "true", "yes"]) {
            std::env::set_var(n, v);
        }
        let c = MonitorConfig::from_env().unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("archive", "dead"));
        assert_eq!(c.topic_arn.as_deref(), Some("arn:aws:sns:us-east-1:1:t"));
        assert!(c.include_body && c.resolve_payloads);
        std::env::set_var("SQSKIT_ALERT_INCLUDE_BODY", "sometimes");
        let e = MonitorConfig::from_env().unwrap_err();
        assert!(e.to_string().contains("SQSKIT_ALERT_INCLUDE_BODY"), "{e}");
        clear();
        // the old names (one more release)
        std::env::set_var("ARCHIVE_BUCKET", "old-archive");
        std::env::set_var("ALERT_INCLUDE_BODY", "true");
        let c = MonitorConfig::from_env().unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("old-archive", "dead-letters"));
        assert!(c.include_body && !c.resolve_payloads && c.topic_arn.is_none());
        std::env::set_var("SQSKIT_ARCHIVE_BUCKET", "new-archive");
        assert_eq!(MonitorConfig::from_env().unwrap().bucket, "new-archive", "the new name wins");
        clear();
    }
}
