//! Idempotency: run each logical message once on top of SQS's at-least-once delivery.
//!
//! It owns the idempotency key of a message, the record layout and the store interface;
//! the [`processor`](crate::processor) calls it around the handler, so the poller, the Lambda
//! adapter and the `--exec` / `--http` handlers all get it. It does not know SQS.
//!
//! For each message the processor derives a key (`{prefix}#{md5}`: by default of the whole
//! body, or of a value picked by a closure, a JSON Pointer or a message attribute) and, before
//! the handler runs, claims it in the store with a conditional write: status `INPROGRESS`,
//! an in-progress expiry that follows the message's lease (its visibility timeout in the
//! poller, extended by the heartbeat; the invocation deadline in Lambda) and a record expiry
//! (`ttl`, default 1 h). The write succeeds when the key is absent, its record expired, or it
//! is `INPROGRESS` and its in-progress expiry passed (a crashed consumer).
//!
//! | the store holds | outcome | metric `sqskit_idempotency_total{result}` |
//! |---|---|---|
//! | nothing usable: claimed | the handler runs; success → `COMPLETED`, failure → record deleted | `claimed` |
//! | `COMPLETED`, same payload | [`Outcome::Duplicate`](crate::Outcome::Duplicate): deleted, handler not run | `duplicate` |
//! | `INPROGRESS` (another consumer) | retry after the claim's remaining time ([`FailureKind::InProgress`](crate::FailureKind::InProgress)) | `in_progress` |
//! | either, payload hash differs | permanent: dead-lettered as `idempotency-key-reuse` | `reuse` |
//! | the store failed | retryable `idempotency-store` (or unguarded with [`Idempotency::with_fail_open`]) | `store_error` |
//!
//! The record layout and the hashing are those of Powertools for AWS Lambda (Python): `id`,
//! `expiration` (epoch seconds), `in_progress_expiration` (epoch milliseconds), `status`
//! (`INPROGRESS` / `COMPLETED`), `data` (the JSON result, `null` here) and `validation` (the
//! payload hash); hashes are the MD5 of the value serialised as Python's
//! `json.dumps(value, sort_keys=True)` does, so a key derived with `--idempotency-key
//! /order_id` and prefix `orders` is the key Powertools derives with
//! `event_key_jmespath="order_id"` and `key_prefix="orders"`.
//!
//! # Example
//! ```
//! use sqskit::idempotency::{Idempotency, MemoryStore};
//! use sqskit::{HandlerError, Message, Processor};
//! # #[derive(serde::Deserialize)] struct Order { order_id: String }
//!
//! let processor = Processor::json(|_msg: Message<Order>| async { Ok::<_, HandlerError>(()) })
//!     .with_idempotency(
//!         Idempotency::new(MemoryStore::new())
//!             .with_prefix("orders")
//!             .with_key(|m: &Message<Order>| Some(m.body.order_id.clone().into())),
//!     );
//! # let _ = processor;
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::message::{Message, ReceivedMessage};

#[cfg(feature = "idempotency-dynamodb")]
mod dynamodb;
#[cfg(feature = "idempotency-dynamodb")]
pub use dynamodb::{DynamoDbStore, TableLayout};
#[cfg(feature = "idempotency-redis")]
mod redis;
#[cfg(feature = "idempotency-redis")]
pub use self::redis::RedisStore;

/// A future returned by an [`IdempotencyStore`].
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A record's status, stored as Powertools writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A consumer claimed the key and is running the handler (`INPROGRESS`).
    InProgress,
    /// The handler succeeded (`COMPLETED`).
    Completed,
}

impl Status {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "INPROGRESS",
            Self::Completed => "COMPLETED",
        }
    }
    /// Parse a stored string (`EXPIRED`, which Powertools only uses in memory, and anything
    /// else are `None`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "INPROGRESS" => Some(Self::InProgress),
            "COMPLETED" => Some(Self::Completed),
            _ => None,
        }
    }
}

/// One idempotency record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key (`{prefix}#{md5}`).
    pub key: String,
    /// The status.
    pub status: Status,
    /// When the record stops counting (epoch seconds when stored).
    pub expiration: SystemTime,
    /// While `INPROGRESS`: when the claim lapses (epoch milliseconds when stored).
    pub in_progress_expiration: Option<SystemTime>,
    /// Hash of the payload, to detect a key reused with a different payload.
    pub validation: Option<String>,
    /// The handler's result as JSON (`null` for sqskit handlers).
    pub data: Option<String>,
}

impl Record {
    /// Whether the record still counts at `now`. Expired records are treated as absent (a
    /// DynamoDB TTL deletes them lazily, up to days late).
    pub fn is_live(&self, now: SystemTime) -> bool {
        epoch_secs(self.expiration) >= epoch_secs(now)
    }
    /// Whether a claim on this record may be taken at `now`: expired, or `INPROGRESS` with its
    /// in-progress expiry passed. The stores' conditional writes encode the same rule.
    pub fn is_claimable(&self, now: SystemTime) -> bool {
        !self.is_live(now)
            || (self.status == Status::InProgress
                && self.in_progress_expiration.is_some_and(|t| epoch_millis(t) < epoch_millis(now)))
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours now (`INPROGRESS`).
    Claimed,
    /// A live record holds the key (returned by the failed conditional write).
    Existing(Record),
}

/// A store failed (network, throttling, permissions, a malformed record).
#[derive(Debug, Clone, thiserror::Error)]
#[error("idempotency store ({store}) {operation}: {message}")]
pub struct StoreError {
    /// The store kind (`dynamodb`, `redis`, `memory`).
    pub store: &'static str,
    /// The operation (`claim`, `complete`, `delete`, `extend`).
    pub operation: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Where idempotency records live. Implemented by [`MemoryStore`], `DynamoDbStore` (feature
/// `idempotency-dynamodb`) and `RedisStore` (feature `idempotency-redis`).
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Short name for logs and errors.
    fn kind(&self) -> &'static str;
    /// Write `record` (status `INPROGRESS`) if the key is absent, expired at `now`, or
    /// `INPROGRESS` with its in-progress expiry before `now`; otherwise return the record that
    /// holds the key, without a second read.
    fn claim<'a>(&'a self, record: &'a Record, now: SystemTime) -> StoreFuture<'a, Claim>;
    /// Mark the key `COMPLETED` with `record`'s expiry, data and validation.
    fn complete<'a>(&'a self, record: &'a Record) -> StoreFuture<'a, ()>;
    /// Delete the key's record (the handler failed: a retry may claim it again).
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
    /// Move an `INPROGRESS` claim's in-progress expiry to `until` (no-op when the record is
    /// gone or completed).
    fn extend<'a>(&'a self, key: &'a str, until: SystemTime) -> StoreFuture<'a, ()>;
}

/// An in-memory store for tests and local runs (one process only).
///
/// # Example
/// ```
/// use std::time::{Duration, SystemTime};
/// use sqskit::idempotency::{Claim, IdempotencyStore, MemoryStore, Record, Status};
/// # tokio_test_block_on(async {
/// let store = MemoryStore::new();
/// let now = SystemTime::now();
/// let rec = Record { key: "k".into(), status: Status::InProgress, expiration: now + Duration::from_secs(60),
///     in_progress_expiration: Some(now + Duration::from_secs(5)), validation: None, data: None };
/// assert_eq!(store.claim(&rec, now).await.unwrap(), Claim::Claimed);
/// assert!(matches!(store.claim(&rec, now).await.unwrap(), Claim::Existing(_)));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f) }
/// ```
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    records: Arc<Mutex<HashMap<String, Record>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
    /// The record held for `key`, if any (expired ones included).
    pub fn get(&self, key: &str) -> Option<Record> {
        lock(&self.records).get(key).cloned()
    }
}

impl IdempotencyStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn claim<'a>(&'a self, record: &'a Record, now: SystemTime) -> StoreFuture<'a, Claim> {
        let mut map = lock(&self.records);
        let result = match map.get(&record.key) {
            Some(old) if !old.is_claimable(now) => Claim::Existing(old.clone()),
            _ => {
                map.insert(record.key.clone(), record.clone());
                Claim::Claimed
            }
        };
        Box::pin(std::future::ready(Ok(result)))
    }
    fn complete<'a>(&'a self, record: &'a Record) -> StoreFuture<'a, ()> {
        lock(&self.records).insert(record.key.clone(), record.clone());
        Box::pin(std::future::ready(Ok(())))
    }
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        lock(&self.records).remove(key);
        Box::pin(std::future::ready(Ok(())))
    }
    fn extend<'a>(&'a self, key: &'a str, until: SystemTime) -> StoreFuture<'a, ()> {
        if let Some(r) = lock(&self.records).get_mut(key) {
            if r.status == Status::InProgress {
                r.in_progress_expiration = Some(until);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seconds since the Unix epoch (0 before it).
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 before it, `u64::MAX` beyond).
pub fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// The latest time a record may hold (the end of year 9999, UTC): larger epoch values read
/// from a store (written by anyone) are taken as this, never overflow.
const LATEST_EPOCH_SECS: u64 = 253_402_300_799;

/// The time `secs` seconds after the Unix epoch (at most the end of year 9999).
pub fn from_epoch_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.min(LATEST_EPOCH_SECS))
}

/// The time `ms` milliseconds after the Unix epoch (at most the end of year 9999).
pub fn from_epoch_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.min(LATEST_EPOCH_SECS * 1000))
}

/// The longest record lifetime ([`Idempotency::with_ttl`]): 10 years.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Check a JSON Pointer (RFC 6901): empty (the whole document) or `/`-separated tokens in which
/// `~` is always followed by `0` (`~`) or `1` (`/`).
///
/// # Errors
/// A text saying what is wrong, for the caller to name its field or flag.
///
/// # Example
/// ```
/// use sqskit::idempotency::check_pointer;
/// assert!(check_pointer("/order/id").is_ok());
/// assert!(check_pointer("/a~1b/c~0d").is_ok());
/// assert!(check_pointer("/a~2b").unwrap_err().contains("~2"));
/// assert!(check_pointer("order_id").is_err());
/// ```
pub fn check_pointer(p: &str) -> Result<(), String> {
    if !(p.is_empty() || p.starts_with('/')) {
        return Err(format!("`{p}` is not a JSON Pointer: it starts with `/` (e.g. `/order_id`)"));
    }
    let mut chars = p.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some((_, '0' | '1'))) {
            let bad: String = p[i..].chars().take(2).collect();
            return Err(format!(
                "`{p}` is not a JSON Pointer: `{bad}` at byte {i} (a `~` is written `~0` and a `/` inside a name `~1`)"
            ));
        }
    }
    Ok(())
}

/// `value` serialised as Python's `json.dumps(value, sort_keys=True)` does (separators
/// `", "` and `": "`, non-ASCII escaped as `\uXXXX`, floats as Python's `repr`), which is
/// what Powertools hashes.
///
/// # Example
/// ```
/// let v: serde_json::Value = serde_json::from_str(r#"{"b":[1,2.5e-7],"a":"é"}"#).unwrap();
/// assert_eq!(sqskit::idempotency::python_json(&v), r#"{"a": "\u00e9", "b": [1, 2.5e-07]}"#);
/// ```
pub fn python_json(value: &Value) -> String {
    let mut out = String::new();
    write_python(value, &mut out);
    out
}

fn write_python(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(f) = n.as_f64() {
                out.push_str(&python_float(f));
            }
        }
        Value::String(s) => write_python_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python(v, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0)); // code point order, as Python's sort
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_str(k, out);
                out.push_str(": ");
                write_python(v, out);
            }
            out.push('}');
        }
    }
}

fn write_python_str(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// A float as Python's `repr`: the shortest digits that round-trip, positional notation for
/// decimal exponents -4..=15 (always with a `.0` when integral), else `d.ddde±XX`.
fn python_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let sci = format!("{f:e}"); // shortest round-trip digits, e.g. "-1.5e16", "1e-7", "0e0"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        let e_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{e_sign}{:02}", exp.abs())
    }
}

/// The MD5 hex digest of [`python_json`]`(value)`: Powertools' default hash.
pub fn hash_value(value: &Value) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(python_json(value).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A message body as the value Powertools would hash: parsed JSON, or the text as a string.
pub fn body_value(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
}

type KeyFn<T> = Arc<dyn Fn(&Message<T>) -> Option<Value> + Send + Sync>;

/// Where a message's idempotency key comes from.
pub enum KeySource<T> {
    /// The whole body (parsed as JSON when it is JSON).
    Body,
    /// A JSON Pointer (RFC 6901) into the body, e.g. `/order_id`; build it with
    /// [`KeySource::pointer`], which checks it (an invalid pointer finds nothing, and every
    /// message would run without a claim).
    Pointer(String),
    /// A message attribute's string value.
    Attribute(String),
    /// A closure over the decoded message.
    Fn(KeyFn<T>),
}

impl<T> Clone for KeySource<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Body => Self::Body,
            Self::Pointer(p) => Self::Pointer(p.clone()),
            Self::Attribute(a) => Self::Attribute(a.clone()),
            Self::Fn(f) => Self::Fn(f.clone()),
        }
    }
}

impl<T> std::fmt::Debug for KeySource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Body => f.write_str("Body"),
            Self::Pointer(p) => write!(f, "Pointer({p:?})"),
            Self::Attribute(a) => write!(f, "Attribute({a:?})"),
            Self::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

impl<T> KeySource<T> {
    /// A JSON Pointer (RFC 6901) key source, checked ([`check_pointer`]).
    ///
    /// # Errors
    /// A text saying what is wrong with the pointer.
    ///
    /// # Example
    /// ```
    /// use sqskit::idempotency::KeySource;
    /// assert!(KeySource::<()>::pointer("/order_id").is_ok());
    /// assert!(KeySource::<()>::pointer("/a~2b").is_err());
    /// ```
    pub fn pointer(p: impl Into<String>) -> Result<Self, String> {
        let p = p.into();
        check_pointer(&p)?;
        Ok(Self::Pointer(p))
    }

    /// Parse the CLI / environment form: `/json/pointer` (RFC 6901, checked), `attr:NAME`, or
    /// `body`.
    ///
    /// # Errors
    /// A text naming the accepted forms, or what is wrong with the pointer.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "body" {
            Ok(Self::Body)
        } else if s.starts_with('/') {
            Self::pointer(s)
        } else if let Some(name) = s.strip_prefix("attr:").filter(|n| !n.is_empty()) {
            Ok(Self::Attribute(name.to_string()))
        } else {
            Err(format!(
                "`{s}` is not an idempotency key source: use a JSON Pointer into the body (`/order_id`), \
                 a message attribute (`attr:NAME`) or `body`"
            ))
        }
    }
}

/// Counters of one processor's idempotency checks (also recorded as
/// `sqskit_idempotency_total{result}`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyCounts {
    /// Keys claimed (the handler ran or runs).
    pub claimed: u64,
    /// Messages skipped because their key was completed.
    pub duplicate: u64,
    /// Messages retried because another consumer holds their key.
    pub in_progress: u64,
    /// Keys reused with a different payload.
    pub reuse: u64,
    /// Store failures.
    pub store_error: u64,
}

impl IdempotencyCounts {
    /// The counts added since `earlier`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            claimed: self.claimed.saturating_sub(earlier.claimed),
            duplicate: self.duplicate.saturating_sub(earlier.duplicate),
            in_progress: self.in_progress.saturating_sub(earlier.in_progress),
            reuse: self.reuse.saturating_sub(earlier.reuse),
            store_error: self.store_error.saturating_sub(earlier.store_error),
        }
    }
}

#[derive(Debug, Default)]
struct Counters([AtomicU64; 5]);

const RESULTS: [&str; 5] = ["claimed", "duplicate", "in_progress", "reuse", "store_error"];

impl Counters {
    fn add(&self, i: usize) {
        self.0[i].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::names::IDEMPOTENCY, "result" => RESULTS[i]).increment(1);
    }
    fn snapshot(&self) -> IdempotencyCounts {
        let g = |i: usize| self.0[i].load(Ordering::Relaxed);
        IdempotencyCounts { claimed: g(0), duplicate: g(1), in_progress: g(2), reuse: g(3), store_error: g(4) }
    }
}

/// Idempotency settings for a [`Processor`](crate::Processor): the store, the key, the key
/// prefix and the record lifetime. See the [module docs](self).
pub struct Idempotency<T> {
    pub(crate) store: Arc<dyn IdempotencyStore>,
    pub(crate) key: KeySource<T>,
    pub(crate) prefix: String,
    pub(crate) ttl: Duration,
    pub(crate) fail_open: bool,
    pub(crate) require_key: bool,
    pub(crate) local: Arc<LocalClaims>,
    counters: Arc<Counters>,
}

impl<T> Clone for Idempotency<T> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            key: self.key.clone(),
            prefix: self.prefix.clone(),
            ttl: self.ttl,
            fail_open: self.fail_open,
            require_key: self.require_key,
            local: self.local.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Idempotency<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("store", &self.store.kind())
            .field("key", &self.key)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("fail_open", &self.fail_open)
            .finish()
    }
}

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "sqskit";

impl<T> Idempotency<T> {
    /// Idempotency over `store`, keyed by the whole body, prefix `sqskit`, records kept 1 h.
    pub fn new(store: impl IdempotencyStore) -> Self {
        Self::with_store(Arc::new(store))
    }
    /// As [`Idempotency::new`], with a shared store.
    pub fn with_store(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            store,
            key: KeySource::Body,
            prefix: DEFAULT_PREFIX.to_string(),
            ttl: Duration::from_secs(3600),
            fail_open: false,
            require_key: false,
            local: Arc::default(),
            counters: Arc::default(),
        }
    }
    /// Key by the value `f` picks (hashed as Powertools hashes a JMESPath result); `None`
    /// means "no key": the message runs unguarded, or fails with
    /// [`Idempotency::with_require_key`].
    pub fn with_key(mut self, f: impl Fn(&Message<T>) -> Option<Value> + Send + Sync + 'static) -> Self {
        self.key = KeySource::Fn(Arc::new(f));
        self
    }
    /// Set where the key comes from.
    pub fn with_key_source(mut self, source: KeySource<T>) -> Self {
        self.key = source;
        self
    }
    /// Set the key prefix (keys are `{prefix}#{md5}`); choose a stable name, not a function's.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// How long a completed record counts (default 1 h; at most [`MAX_TTL`], 10 years: a
    /// longer one is taken as that).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.min(MAX_TTL);
        self
    }
    /// Run the handler without a claim when the store fails (default: retry the message).
    pub fn with_fail_open(mut self, on: bool) -> Self {
        self.fail_open = on;
        self
    }
    /// Fail a message whose key cannot be derived permanently (default: run it unguarded,
    /// with a warning, as Powertools does).
    pub fn with_require_key(mut self, on: bool) -> Self {
        self.require_key = on;
        self
    }
    /// The store.
    pub fn store(&self) -> &Arc<dyn IdempotencyStore> {
        &self.store
    }
    /// What this processor's checks found so far.
    pub fn counts(&self) -> IdempotencyCounts {
        self.counters.snapshot()
    }

    /// The same settings, store and in-process holds, with counts of its own starting at zero
    /// (the Lambda adapter counts each invocation apart, even when several run at once).
    #[cfg(feature = "lambda")]
    pub(crate) fn with_own_counts(&self) -> Self {
        Self { counters: Arc::default(), ..self.clone() }
    }

    /// The key of `msg` (`{prefix}#{md5}`), or `None` when its key source yields nothing.
    pub fn key_of(&self, msg: &Message<T>) -> Option<String> {
        self.identify(msg).0
    }

    /// The key of `msg` and the hash of its whole payload (the record's `validation`), from
    /// one parse of the body: with the default key source they are the same hash.
    pub(crate) fn identify(&self, msg: &Message<T>) -> (Option<String>, String) {
        let body = body_value(&msg.raw().body);
        let payload_hash = hash_value(&body);
        let key_hash = match &self.key {
            KeySource::Body => Some(payload_hash.clone()),
            KeySource::Pointer(p) => body.pointer(p).filter(|v| !v.is_null()).map(hash_value),
            KeySource::Attribute(name) => msg.raw().attribute_str(name).map(|s| hash_value(&Value::String(s.into()))),
            KeySource::Fn(f) => f(msg).filter(|v| !v.is_null()).map(|v| hash_value(&v)),
        };
        (key_hash.map(|h| format!("{}#{h}", self.prefix)), payload_hash)
    }

    pub(crate) fn count(&self, result: CountKind) {
        self.counters.add(result as usize);
    }
}

#[derive(Clone, Copy)]
pub(crate) enum CountKind {
    Claimed = 0,
    Duplicate = 1,
    InProgress = 2,
    Reuse = 3,
    StoreError = 4,
}

/// Keys held by this process: a second message with the same key waits for the first's
/// result instead of finding its claim `INPROGRESS` and backing off (two copies in one
/// Lambda batch, or in one receive). Also maps running messages to their keys, for the
/// heartbeat.
#[derive(Debug, Default)]
pub(crate) struct LocalClaims {
    held: Mutex<HashMap<String, tokio::sync::watch::Receiver<()>>>,
    running: Mutex<HashMap<String, String>>,
}

/// A key held by this process; dropping it wakes the messages waiting for it.
pub(crate) struct LocalHold {
    local: Arc<LocalClaims>,
    key: String,
    _done: tokio::sync::watch::Sender<()>,
}

impl Drop for LocalHold {
    fn drop(&mut self) {
        lock(&self.local.held).remove(&self.key);
    }
}

impl LocalClaims {
    /// Hold `key`, waiting while another message of this process holds it.
    pub(crate) async fn hold(self: &Arc<Self>, key: &str) -> LocalHold {
        loop {
            let mut waiting = {
                let mut held = lock(&self.held);
                match held.get(key) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (tx, rx) = tokio::sync::watch::channel(());
                        held.insert(key.to_string(), rx);
                        return LocalHold { local: self.clone(), key: key.to_string(), _done: tx };
                    }
                }
            };
            // resolves (with an error) when the holder drops its sender
            let _ = waiting.changed().await;
        }
    }
    pub(crate) fn running(&self, message_id: &str, key: Option<&str>) {
        let mut running = lock(&self.running);
        match key {
            Some(k) => running.insert(message_id.to_string(), k.to_string()),
            None => running.remove(message_id),
        };
    }
    pub(crate) fn key_of_running(&self, message_id: &str) -> Option<String> {
        lock(&self.running).get(message_id).cloned()
    }
}

/// When a claim made now for `raw` should lapse, given the lease.
pub(crate) fn lease_end(lease: Lease, raw: &ReceivedMessage) -> SystemTime {
    match lease {
        Lease::Deadline(t) => t,
        Lease::Visibility(v) => {
            // a lease is never longer than SQS's 12-hour visibility
            let v = v.min(Duration::from_secs(u64::from(crate::limits::MAX_VISIBILITY_SECONDS)));
            SystemTime::now().checked_sub(raw.received_at.elapsed()).unwrap_or_else(SystemTime::now) + v
        }
    }
}

/// How long a received message stays this consumer's: an idempotency claim lapses with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Its visibility timeout, counted from receipt (the poller extends claims with its heartbeat).
    Visibility(Duration),
    /// A fixed deadline (a Lambda invocation's).
    Deadline(SystemTime),
}

impl Default for Lease {
    /// SQS's default visibility timeout, 30 s.
    fn default() -> Self {
        Self::Visibility(Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_matches_json_dumps_sort_keys() {
        let v: Value = serde_json::from_str(
            r#"{"z":1,"a":{"y":[true,null,"x\n\"q\"\\"],"b":-0.0},"é":"😀","n":1e16,"m":1e15,"s":0.0001,"t":0.00001,"u":1.5,"big":18446744073709551615,"neg":-3}"#,
        )
        .unwrap();
        assert_eq!(
            python_json(&v),
            r#"{"a": {"b": -0.0, "y": [true, null, "x\n\"q\"\\"]}, "big": 18446744073709551615, "m": 1000000000000000.0, "n": 1e+16, "neg": -3, "s": 0.0001, "t": 1e-05, "u": 1.5, "z": 1, "\u00e9": "\ud83d\ude00"}"#
        );
        assert_eq!(python_json(&Value::String("\u{7f}\u{1}".into())), r#""\u007f\u0001""#);
        assert_eq!(python_json(&serde_json::json!([])), "[]");
        assert_eq!(python_json(&serde_json::json!({})), "{}");
        assert_eq!(python_float(123.456), "123.456");
        assert_eq!(python_float(1e22), "1e+22");
        assert_eq!(python_float(1.2345e-300), "1.2345e-300");
        assert_eq!(python_float(0.0), "0.0");
    }

    #[test]
    fn md5_of_the_python_form() {
        // `hashlib.md5(json.dumps(x, sort_keys=True).encode()).hexdigest()` in Python 3
        assert_eq!(hash_value(&Value::String("abc".into())), "ebd9f4c7b06cb0aaf5d13d80e49d8b90");
        assert_eq!(hash_value(&serde_json::json!({"a": 1})), "42b7b4f2921788ea14dac5566e6f06d0");
    }

    #[test]
    fn claim_rules() {
        let now = SystemTime::now();
        let rec = |status, exp: i64, inprog: Option<i64>| Record {
            key: "k".into(),
            status,
            expiration: if exp >= 0 {
                now + Duration::from_secs(exp as u64)
            } else {
                now - Duration::from_secs((-exp) as u64)
            },
            in_progress_expiration: inprog.map(|ms| {
                if ms >= 0 {
                    now + Duration::from_millis(ms as u64)
                } else {
                    now - Duration::from_millis((-ms) as u64)
                }
            }),
            validation: None,
            data: None,
        };
        assert!(!rec(Status::Completed, 60, None).is_claimable(now));
        assert!(rec(Status::Completed, -5, None).is_claimable(now));
        assert!(!rec(Status::InProgress, 60, Some(500)).is_claimable(now));
        assert!(rec(Status::InProgress, 60, Some(-500)).is_claimable(now));
        // Powertools without a Lambda context writes no in-progress expiry: held until expiration
        assert!(!rec(Status::InProgress, 60, None).is_claimable(now));
    }

    #[test]
    fn key_sources_parse() {
        assert!(matches!(KeySource::<()>::parse("/order_id"), Ok(KeySource::Pointer(p)) if p == "/order_id"));
        assert!(matches!(KeySource::<()>::parse("attr:k"), Ok(KeySource::Attribute(a)) if a == "k"));
        assert!(matches!(KeySource::<()>::parse("body"), Ok(KeySource::Body)));
        let err = KeySource::<()>::parse("order_id").unwrap_err();
        assert!(err.contains("JSON Pointer"), "{err}");
        let err = KeySource::<()>::parse("/a~2b").unwrap_err();
        assert!(err.contains("~2"), "{err}");
        assert!(KeySource::<()>::parse("/a~1b/~0").is_ok());
        assert!(KeySource::<()>::parse("/trailing~").is_err());
    }

    #[test]
    fn times_and_ttls_at_their_limits_do_not_overflow() {
        let _ = from_epoch_secs(u64::MAX) + MAX_TTL;
        let _ = from_epoch_millis(u64::MAX) + MAX_TTL;
        assert_eq!(epoch_secs(from_epoch_secs(u64::MAX)), LATEST_EPOCH_SECS);
        assert_eq!(Idempotency::<()>::new(MemoryStore::new()).with_ttl(Duration::MAX).ttl, MAX_TTL);
        let raw = ReceivedMessage {
            message_id: "m".into(),
            receipt_handle: "h".into(),
            body: "b".into(),
            attributes: HashMap::new(),
            system_attributes: HashMap::new(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        };
        let end = lease_end(Lease::Visibility(Duration::MAX), &raw);
        assert!(end <= SystemTime::now() + Duration::from_secs(43_200));
    }

    proptest::proptest! {
        #[test]
        fn pointers_are_accepted_exactly_when_rfc_6901_allows(p in "(/([a-z~01/]|~[0-9]){0,6}){0,4}|[a-z~]{0,5}") {
            let valid = (p.is_empty() || p.starts_with('/'))
                && p.match_indices('~').all(|(i, _)| matches!(p.as_bytes().get(i + 1), Some(b'0' | b'1')));
            proptest::prop_assert_eq!(check_pointer(&p).is_ok(), valid, "{}", p);
            if valid && !p.is_empty() {
                // a valid pointer finds what it names
                let tokens: Vec<String> = p[1..].split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
                let mut doc = Value::String("found".into());
                for t in tokens.iter().rev() {
                    doc = Value::Object([(t.clone(), doc)].into_iter().collect());
                }
                proptest::prop_assert_eq!(doc.pointer(&p), Some(&Value::String("found".into())));
            }
        }

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in "\\PC{0,20}") {
            let _ = KeySource::<()>::parse(&s);
            let _ = check_pointer(&s);
        }

        #[test]
        fn epoch_values_from_a_store_never_overflow(secs in proptest::num::u64::ANY, ms in proptest::num::u64::ANY) {
            let t = from_epoch_secs(secs);
            proptest::prop_assert!(t.checked_add(MAX_TTL).is_some());
            proptest::prop_assert_eq!(epoch_secs(t), secs.min(LATEST_EPOCH_SECS));
            let t = from_epoch_millis(ms);
            proptest::prop_assert_eq!(epoch_millis(t), ms.min(LATEST_EPOCH_SECS * 1000));
        }
    }
}
