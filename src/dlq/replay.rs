//! The dead-letter archive in S3, read back: browse it by source queue and day, open a record,
//! and replay records to the queue they came from.
//!
//! The archive is what [`DlqMonitor`](crate::dlq::DlqMonitor) writes (the `dlq-monitor` Lambda,
//! `sqskit dlq drain`): one JSON document per message at
//! `<prefix>/<source-queue>/<yyyy>/<mm>/<dd>/<messageId>.json` ([`archive_key`]). A replay sends
//! each record's body and attributes back as [`redriven_message`] builds them for a redrive (the
//! processor's error attributes dropped, the trace header kept, on a FIFO target the group kept
//! and the original message id as deduplication id); it never deletes the record, so replaying
//! the same record twice sends it twice (on a FIFO queue, not within SQS's 5-minute
//! deduplication window). `sqskit dlq replay` and the console's archive page call this module.
//!
//! [`archive_key`]: crate::dlq::archive_key
//! [`redriven_message`]: crate::dlq::redriven_message

use std::collections::{BTreeSet, HashMap};

use base64::Engine;

use super::DlqError;
use crate::message::{AttributeValue, ReceivedMessage};
use crate::Queue;

/// Where the archive is: bucket and key prefix (the monitor's `ARCHIVE_BUCKET` and
/// `ARCHIVE_PREFIX`).
#[derive(Debug, Clone)]
pub struct Archive {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

/// One record as listed (from its key; the object is not read).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ArchiveEntry {
    /// The object key.
    pub key: String,
    /// The source queue (the key's first part after the prefix).
    pub source_queue: String,
    /// The day the message was sent, `yyyy-mm-dd` (UTC).
    pub day: String,
    /// The message id.
    pub message_id: String,
    /// Object size in bytes.
    pub size: u64,
}

/// A record read back.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ArchiveRecord {
    /// The object key.
    pub key: String,
    /// The source queue the monitor filed it under (`sourceQueue`).
    pub source_queue: String,
    /// The DLQ it was archived from (`deadLetterQueue`).
    pub dead_letter_queue: Option<String>,
    /// The error kind and text the processor recorded, if any.
    pub error: Option<(String, Option<String>)>,
    /// The message as it was in the DLQ (body, message attributes, system attributes).
    pub message: ReceivedMessage,
    /// The whole document.
    pub document: serde_json::Value,
}

/// One replayed record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Replayed {
    /// The record's key.
    pub key: String,
    /// The archived message id.
    pub message_id: String,
    /// The queue it was (dry run: would be) sent to.
    pub queue: String,
    /// The new message id (none in a dry run).
    pub new_message_id: Option<String>,
}

/// What [`Archive::replay`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Records sent (dry run: that would be sent).
    pub replayed: Vec<Replayed>,
    /// Records not sent, with the reason.
    pub failed: Vec<String>,
    /// Nothing was sent.
    pub dry_run: bool,
}

fn s3_err<'a, E: std::fmt::Display>(
    operation: &'static str,
    bucket: &'a str,
    key: &'a str,
) -> impl FnOnce(aws_sdk_s3::error::SdkError<E>) -> DlqError + 'a {
    move |e| {
        let message = match &e {
            aws_sdk_s3::error::SdkError::ServiceError(s) => s.err().to_string(),
            other => other.to_string(),
        };
        DlqError::ArchiveRead { operation, bucket: bucket.to_string(), key: key.to_string(), message }
    }
}

impl Archive {
    /// The archive in `bucket` under `prefix` (trailing or leading slashes do not matter), read
    /// with an S3 client from `sdk` (path-style under an endpoint override, as LocalStack needs).
    pub fn new(sdk: &aws_config::SdkConfig, bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            s3: crate::payload::s3_client(sdk),
            bucket: bucket.into(),
            prefix: prefix.into().trim_matches('/').to_string(),
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn head(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    /// Every page of `ListObjectsV2` under `prefix`: the objects (key, size) and, with a
    /// delimiter, the common prefixes.
    async fn list_all(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<(String, u64)>, Vec<String>), DlqError> {
        let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
        let mut token = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_delimiter(delimiter.map(str::to_string))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(s3_err("ListObjectsV2", &self.bucket, prefix))?;
            for o in page.contents() {
                if let Some(key) = o.key() {
                    objects.push((key.to_string(), o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0)));
                }
            }
            prefixes.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_string)));
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok((objects, prefixes)),
            }
        }
    }

    /// The source queues that have records (the key level under the prefix).
    ///
    /// # Errors
    /// [`DlqError::ArchiveRead`] when listing fails.
    pub async fn sources(&self) -> Result<Vec<String>, DlqError> {
        let head = self.head();
        let (_, prefixes) = self.list_all(&head, Some("/")).await?;
        let names: BTreeSet<String> = prefixes
            .iter()
            .filter_map(|p| p.strip_prefix(head.as_str()))
            .map(|n| n.trim_end_matches('/').to_string())
            .collect();
        Ok(names.into_iter().collect())
    }

    /// The records of `source` (all sources when `None`), of `day` (`yyyy-mm-dd`) when given,
    /// newest day first, at most `max`.
    ///
    /// # Errors
    /// [`DlqError::ArchiveRead`] when listing fails.
    pub async fn list(
        &self,
        source: Option<&str>,
        day: Option<&str>,
        max: usize,
    ) -> Result<Vec<ArchiveEntry>, DlqError> {
        let mut prefix = self.head();
        if let Some(s) = source {
            prefix.push_str(s);
            prefix.push('/');
            if let Some(d) = day {
                prefix.push_str(&d.replace('-', "/"));
                prefix.push('/');
            }
        }
        let (objects, _) = self.list_all(&prefix, None).await?;
        let mut out: Vec<ArchiveEntry> = objects
            .into_iter()
            .filter_map(|(key, size)| self.parse_key(&key).map(|e| ArchiveEntry { size, ..e }))
            .filter(|e| day.is_none_or(|d| d == e.day))
            .collect();
        out.sort_by(|a, b| b.day.cmp(&a.day).then_with(|| a.source_queue.cmp(&b.source_queue)).then(a.key.cmp(&b.key)));
        out.truncate(max);
        Ok(out)
    }

    /// An [`ArchiveEntry`] from a key of this archive (`None` for other keys).
    ///
    /// # Example
    /// ```
    /// # let sdk = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
    /// let archive = sqskit::dlq::replay::Archive::new(&sdk, "b", "dead-letters");
    /// let e = archive.parse_key("dead-letters/orders/2026/12/01/m-1.json").unwrap();
    /// assert_eq!((e.source_queue.as_str(), e.day.as_str(), e.message_id.as_str()), ("orders", "2026-12-01", "m-1"));
    /// assert!(archive.parse_key("elsewhere/orders/2026/12/01/m-1.json").is_none());
    /// ```
    pub fn parse_key(&self, key: &str) -> Option<ArchiveEntry> {
        let rest = key.strip_prefix(self.head().as_str())?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [source, y, m, d, file] = parts.as_slice() else { return None };
        let id = file.strip_suffix(".json")?;
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if source.is_empty() || id.is_empty() || !digits(y, 4) || !digits(m, 2) || !digits(d, 2) {
            return None;
        }
        Some(ArchiveEntry {
            key: key.to_string(),
            source_queue: source.to_string(),
            day: format!("{y}-{m}-{d}"),
            message_id: id.to_string(),
            size: 0,
        })
    }

    /// Read one record.
    ///
    /// # Errors
    /// [`DlqError::ArchiveRead`] when the object cannot be read, [`DlqError::NotARecord`] when it
    /// is not an archive document.
    pub async fn read(&self, key: &str) -> Result<ArchiveRecord, DlqError> {
        let obj = self.s3.get_object().bucket(&self.bucket).key(key).send().await.map_err(s3_err(
            "GetObject",
            &self.bucket,
            key,
        ))?;
        let bytes = obj.body.collect().await.map_err(|e| DlqError::ArchiveRead {
            operation: "GetObject",
            bucket: self.bucket.clone(),
            key: key.to_string(),
            message: e.to_string(),
        })?;
        let not = |reason: String| DlqError::NotARecord { bucket: self.bucket.clone(), key: key.to_string(), reason };
        let document: serde_json::Value =
            serde_json::from_slice(&bytes.into_bytes()).map_err(|e| not(format!("not JSON: {e}")))?;
        let message = record_message(&document).map_err(not)?;
        let source_queue = document["sourceQueue"]
            .as_str()
            .map(str::to_string)
            .or_else(|| self.parse_key(key).map(|e| e.source_queue))
            .ok_or_else(|| not("no sourceQueue".into()))?;
        let error = document["error"]["kind"]
            .as_str()
            .map(|k| (k.to_string(), document["error"]["message"].as_str().map(str::to_string)));
        Ok(ArchiveRecord {
            key: key.to_string(),
            source_queue,
            dead_letter_queue: document["deadLetterQueue"].as_str().map(str::to_string),
            error,
            message,
            document,
        })
    }

    /// Send the records at `keys` back: each to `to` when given, else to its source queue
    /// (looked up by name with `client`). Records that cannot be read or sent are reported and
    /// the others go on. `progress` gets the number handled so far.
    ///
    /// # Errors
    /// None for single records (they are in [`ReplayReport::failed`]); the signature leaves room
    /// for a call that fails as a whole.
    pub async fn replay(
        &self,
        client: &aws_sdk_sqs::Client,
        keys: &[String],
        to: Option<&Queue>,
        dry_run: bool,
        mut progress: impl FnMut(usize),
    ) -> Result<ReplayReport, DlqError> {
        let mut report = ReplayReport { dry_run, ..Default::default() };
        let mut targets: HashMap<String, Queue> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            match self.replay_one(client, key, to, dry_run, &mut targets).await {
                Ok(r) => report.replayed.push(r),
                Err(e) => report.failed.push(format!("{key}: {e}")),
            }
            progress(i + 1);
        }
        Ok(report)
    }

    async fn replay_one(
        &self,
        client: &aws_sdk_sqs::Client,
        key: &str,
        to: Option<&Queue>,
        dry_run: bool,
        targets: &mut HashMap<String, Queue>,
    ) -> Result<Replayed, DlqError> {
        let record = self.read(key).await?;
        let target = match to {
            Some(q) => q.clone(),
            None => match targets.get(&record.source_queue) {
                Some(q) => q.clone(),
                None => {
                    let q = Queue::by_name(client.clone(), &record.source_queue, None).await?;
                    targets.insert(record.source_queue.clone(), q.clone());
                    q
                }
            },
        };
        let mut replayed = Replayed {
            key: key.to_string(),
            message_id: record.message.message_id.clone(),
            queue: target.name().to_string(),
            new_message_id: None,
        };
        if !dry_run {
            let sent = target.send(super::redriven_message(&record.message, target.is_fifo())).await?;
            replayed.new_message_id = Some(sent.message_id);
        }
        Ok(replayed)
    }
}

/// The message an archive document holds (the inverse of
/// [`archive_document`](crate::dlq::archive_document)): body, message attributes (binary ones
/// decoded from base64) and system attributes; no receipt handle.
///
/// # Errors
/// A sentence naming the field that is missing or malformed.
pub fn record_message(doc: &serde_json::Value) -> Result<ReceivedMessage, String> {
    let message_id = doc["messageId"].as_str().ok_or("no messageId")?.to_string();
    let body = doc["body"].as_str().ok_or("no body")?.to_string();
    let mut attributes = HashMap::new();
    if let Some(attrs) = doc["messageAttributes"].as_object() {
        for (name, v) in attrs {
            let data_type = v["dataType"].as_str().ok_or_else(|| format!("messageAttributes.{name}: no dataType"))?;
            let binary_value = match v["binaryValue"].as_str() {
                Some(b) => Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .map_err(|e| format!("messageAttributes.{name}.binaryValue: {e}"))?,
                ),
                None => None,
            };
            attributes.insert(
                name.clone(),
                AttributeValue {
                    data_type: data_type.to_string(),
                    string_value: v["stringValue"].as_str().map(str::to_string),
                    binary_value,
                },
            );
        }
    }
    let system_attributes = doc["attributes"]
        .as_object()
        .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    Ok(ReceivedMessage {
        message_id,
        receipt_handle: String::new(),
        body,
        attributes,
        system_attributes,
        received_at: std::time::Instant::now(),
        queue_url: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::dead_letter_attributes as dl;

    #[test]
    fn a_record_reads_back_as_the_message_that_was_archived() {
        let mut m = ReceivedMessage {
            message_id: "m-1".into(),
            receipt_handle: "h".into(),
            body: "{\"order\":1}".into(),
            attributes: Default::default(),
            system_attributes: [
                ("SentTimestamp".to_string(), "1700000000000".to_string()),
                (
                    "AWSTraceHeader".to_string(),
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".to_string(),
                ),
            ]
            .into_iter()
            .collect(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        };
        m.attributes.insert("tenant".into(), AttributeValue::string("acme"));
        m.attributes.insert(
            "blob".into(),
            AttributeValue { data_type: "Binary".into(), string_value: None, binary_value: Some(vec![0, 1, 255]) },
        );
        m.attributes.insert(dl::ERROR_KIND.into(), AttributeValue::string("permanent"));
        let doc = crate::dlq::archive_document(&m, "orders", "orders-dlq");
        let back = record_message(&doc).unwrap();
        assert_eq!(back.message_id, "m-1");
        assert_eq!(back.body, m.body);
        assert_eq!(back.attributes, m.attributes);
        assert_eq!(back.system_attributes, m.system_attributes);
        let out = crate::dlq::redriven_message(&back, false);
        assert!(out.attributes.contains_key("tenant") && !out.attributes.contains_key(dl::ERROR_KIND));
        assert!(out.trace_header.is_some(), "the trace header goes back with it");
        assert!(record_message(&serde_json::json!({"body": "x"})).unwrap_err().contains("messageId"));
    }
}
