//! The DynamoDB store (feature `idempotency-dynamodb`), with the record layout of Powertools'
//! `DynamoDBPersistenceLayer`: a table written by a Powertools function is read by sqskit and
//! the other way round.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use super::{
    epoch_millis, epoch_secs, from_epoch_millis, from_epoch_secs, Claim, IdempotencyStore, Record, Status, StoreError,
    StoreFuture,
};

/// Attribute names of the table (Powertools' defaults; change them as Powertools allows).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableLayout {
    /// Partition key (`id`, a string).
    pub key_attr: String,
    /// Record expiry, epoch seconds (`expiration`; make it the table's TTL attribute).
    pub expiry_attr: String,
    /// In-progress expiry, epoch milliseconds (`in_progress_expiration`).
    pub in_progress_expiry_attr: String,
    /// Status (`status`).
    pub status_attr: String,
    /// Result data (`data`).
    pub data_attr: String,
    /// Payload hash (`validation`).
    pub validation_key_attr: String,
}

impl Default for TableLayout {
    fn default() -> Self {
        Self {
            key_attr: "id".into(),
            expiry_attr: "expiration".into(),
            in_progress_expiry_attr: "in_progress_expiration".into(),
            status_attr: "status".into(),
            data_attr: "data".into(),
            validation_key_attr: "validation".into(),
        }
    }
}

/// Idempotency records in a DynamoDB table (partition key `id`, string; TTL on `expiration`).
///
/// Claims are one conditional `PutItem` with `ReturnValuesOnConditionCheckFailure=ALL_OLD`
/// (the record holding the key comes back in the error: no extra read); completion is an
/// `UpdateItem`, release a `DeleteItem`. The role needs `dynamodb:PutItem`, `UpdateItem`,
/// `DeleteItem` (and `GetItem` for tools) on the table only.
///
/// # Example
/// ```no_run
/// # async fn run() {
/// use sqskit::idempotency::{DynamoDbStore, Idempotency};
/// let store = DynamoDbStore::from_env("sqskit-idempotency").await;
/// let idem: Idempotency<String> = Idempotency::new(store).with_prefix("orders");
/// # let _ = idem; }
/// ```
#[derive(Debug, Clone)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
    layout: TableLayout,
}

impl DynamoDbStore {
    /// A store over `table` with `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), layout: TableLayout::default() }
    }

    /// A store over `table`, configured from the environment (`AWS_ENDPOINT_URL_DYNAMODB`
    /// and the usual AWS variables), with a 5 s attempt timeout so a hung endpoint fails a
    /// claim (the message is retried) instead of stalling it.
    pub async fn from_env(table: impl Into<String>) -> Self {
        let shared = crate::env::load_aws_config().await;
        let timeouts = aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(12))
            .connect_timeout(Duration::from_secs(3))
            .build();
        let config = aws_sdk_dynamodb::config::Builder::from(&shared).timeout_config(timeouts).build();
        Self::new(Client::from_conf(config), table)
    }

    /// Use other attribute names.
    pub fn with_layout(mut self, layout: TableLayout) -> Self {
        self.layout = layout;
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn err(operation: &'static str, e: impl std::error::Error + 'static) -> StoreError {
        StoreError { store: "dynamodb", operation, message: DisplayErrorContext(&e).to_string() }
    }

    fn key(&self, key: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(self.layout.key_attr.clone(), AttributeValue::S(key.to_string()))])
    }

    fn item(&self, r: &Record) -> HashMap<String, AttributeValue> {
        let l = &self.layout;
        let mut item = self.key(&r.key);
        item.insert(l.expiry_attr.clone(), AttributeValue::N(epoch_secs(r.expiration).to_string()));
        item.insert(l.status_attr.clone(), AttributeValue::S(r.status.as_str().into()));
        if let Some(t) = r.in_progress_expiration {
            item.insert(l.in_progress_expiry_attr.clone(), AttributeValue::N(epoch_millis(t).to_string()));
        }
        if let Some(v) = &r.validation {
            item.insert(l.validation_key_attr.clone(), AttributeValue::S(v.clone()));
        }
        if let Some(d) = &r.data {
            item.insert(l.data_attr.clone(), AttributeValue::S(d.clone()));
        }
        item
    }

    /// Read a stored item (as Powertools or sqskit wrote it).
    fn parse(&self, key: &str, item: &HashMap<String, AttributeValue>) -> Result<Record, StoreError> {
        let l = &self.layout;
        let bad = |what: String| StoreError { store: "dynamodb", operation: "claim", message: what };
        let number = |attr: &str| -> Option<u64> {
            // Powertools writes integers; accept a fractional number too
            let n = item.get(attr)?.as_n().ok()?;
            n.parse::<u64>().ok().or_else(|| n.parse::<f64>().ok().filter(|f| *f >= 0.0).map(|f| f as u64))
        };
        let status = item
            .get(&l.status_attr)
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| bad(format!("record {key} has no `{}` string", l.status_attr)))?;
        let status =
            Status::parse(status).ok_or_else(|| bad(format!("record {key} has an unknown status `{status}`")))?;
        let expiration = number(&l.expiry_attr)
            .map(from_epoch_secs)
            .ok_or_else(|| bad(format!("record {key} has no `{}` number", l.expiry_attr)))?;
        Ok(Record {
            key: key.to_string(),
            status,
            expiration,
            in_progress_expiration: number(&l.in_progress_expiry_attr).map(from_epoch_millis),
            validation: item.get(&l.validation_key_attr).and_then(|v| v.as_s().ok()).cloned(),
            data: item.get(&l.data_attr).and_then(|v| v.as_s().ok()).cloned(),
        })
    }
}

impl IdempotencyStore for DynamoDbStore {
    fn kind(&self) -> &'static str {
        "dynamodb"
    }

    fn claim<'a>(&'a self, record: &'a Record, now: SystemTime) -> StoreFuture<'a, Claim> {
        Box::pin(async move {
            let l = &self.layout;
            // Powertools' condition, word for word
            let sent = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(self.item(record)))
                .condition_expression(
                    "attribute_not_exists(#id) OR #expiry < :now OR \
                     (#status = :inprogress AND attribute_exists(#in_progress_expiry) AND #in_progress_expiry < :now_in_millis)",
                )
                .expression_attribute_names("#id", &l.key_attr)
                .expression_attribute_names("#expiry", &l.expiry_attr)
                .expression_attribute_names("#in_progress_expiry", &l.in_progress_expiry_attr)
                .expression_attribute_names("#status", &l.status_attr)
                .expression_attribute_values(":now", AttributeValue::N(epoch_secs(now).to_string()))
                .expression_attribute_values(":now_in_millis", AttributeValue::N(epoch_millis(now).to_string()))
                .expression_attribute_values(":inprogress", AttributeValue::S(Status::InProgress.as_str().into()))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match sent {
                Ok(_) => Ok(Claim::Claimed),
                Err(e) => match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => match c.item() {
                        Some(item) => Ok(Claim::Existing(self.parse(&record.key, item)?)),
                        None => Err(StoreError {
                            store: "dynamodb",
                            operation: "claim",
                            message: "the conditional put failed without returning the record (ALL_OLD)".into(),
                        }),
                    },
                    _ => Err(Self::err("claim", e)),
                },
            }
        })
    }

    fn complete<'a>(&'a self, record: &'a Record) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let l = &self.layout;
            let mut update = "SET #response_data = :response_data, #expiry = :expiry, #status = :status".to_string();
            let mut req = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(self.key(&record.key)))
                .expression_attribute_names("#response_data", &l.data_attr)
                .expression_attribute_names("#expiry", &l.expiry_attr)
                .expression_attribute_names("#status", &l.status_attr)
                .expression_attribute_values(
                    ":response_data",
                    AttributeValue::S(record.data.clone().unwrap_or_else(|| "null".into())),
                )
                .expression_attribute_values(":expiry", AttributeValue::N(epoch_secs(record.expiration).to_string()))
                .expression_attribute_values(":status", AttributeValue::S(record.status.as_str().into()));
            if let Some(v) = &record.validation {
                update.push_str(", #validation_key = :validation_key");
                req = req
                    .expression_attribute_names("#validation_key", &l.validation_key_attr)
                    .expression_attribute_values(":validation_key", AttributeValue::S(v.clone()));
            }
            req.update_expression(update).send().await.map(|_| ()).map_err(|e| Self::err("complete", e))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(self.key(key)))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| Self::err("delete", e))
        })
    }

    fn extend<'a>(&'a self, key: &'a str, until: SystemTime) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let l = &self.layout;
            let sent = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(self.key(key)))
                .update_expression("SET #in_progress_expiry = :until")
                .condition_expression("#status = :inprogress")
                .expression_attribute_names("#in_progress_expiry", &l.in_progress_expiry_attr)
                .expression_attribute_names("#status", &l.status_attr)
                .expression_attribute_values(":until", AttributeValue::N(epoch_millis(until).to_string()))
                .expression_attribute_values(":inprogress", AttributeValue::S(Status::InProgress.as_str().into()))
                .send()
                .await;
            match sent {
                Ok(_) => Ok(()),
                // completed or gone meanwhile: nothing to extend
                Err(e) if matches!(e.as_service_error(), Some(UpdateItemError::ConditionalCheckFailedException(_))) => {
                    Ok(())
                }
                Err(e) => Err(Self::err("extend", e)),
            }
        })
    }
}
