//! The Redis store (feature `idempotency-redis`), for ECS users who already run one.
//!
//! One key per record, its value a JSON object with Powertools' field names (`status`,
//! `expiration` in epoch seconds, `in_progress_expiration` in epoch milliseconds, `data`,
//! `validation`) and a Redis expiry at `expiration`. A claim is one Lua script (read, compare,
//! `SET … PX`) so it is atomic; a missing key is claimed without a compare.

use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::{
    epoch_millis, epoch_secs, from_epoch_millis, from_epoch_secs, Claim, IdempotencyStore, Record, Status, StoreError,
    StoreFuture,
};

/// Claim: `KEYS[1]` the key, `ARGV[1]` the record, `ARGV[2]` its TTL in ms, `ARGV[3]` now in
/// ms, `ARGV[4]` now in seconds. Returns nil when claimed, else the record holding the key.
const CLAIM: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, r = pcall(cjson.decode, cur)
  if ok and type(r) == 'table' then
    local expired = r.expiration ~= nil and tonumber(r.expiration) < tonumber(ARGV[4])
    local lapsed = r.status == 'INPROGRESS' and r.in_progress_expiration ~= nil
      and tonumber(r.in_progress_expiration) < tonumber(ARGV[3])
    if not (expired or lapsed) then return cur end
  else
    return cur
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"#;

/// Extend: `ARGV[1]` the new in-progress expiry (ms); only while `INPROGRESS`.
const EXTEND: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, r = pcall(cjson.decode, cur)
if not ok or type(r) ~= 'table' or r.status ~= 'INPROGRESS' then return 0 end
r.in_progress_expiration = tonumber(ARGV[1])
redis.call('SET', KEYS[1], cjson.encode(r), 'KEEPTTL')
return 1
"#;

/// Idempotency records in Redis.
///
/// The connection is made on first use and re-made after failures (so a Redis that is down
/// at start-up fails claims, which are retried, rather than the start); every command has a
/// 2 s response timeout.
///
/// # Example
/// ```no_run
/// use sqskit::idempotency::{Idempotency, RedisStore};
/// let store = RedisStore::open("redis://127.0.0.1:6379/").expect("a redis:// URL");
/// let idem: Idempotency<String> = Idempotency::new(store).with_prefix("orders");
/// # let _ = idem;
/// ```
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    conn: std::sync::Arc<OnceCell<ConnectionManager>>,
    claim: std::sync::Arc<redis::Script>,
    extend: std::sync::Arc<redis::Script>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("addr", &self.client.get_connection_info().addr).finish()
    }
}

impl RedisStore {
    /// A store at `url` (`redis://[user:password@]host:port/db`). Connects on first use.
    ///
    /// # Errors
    /// A [`StoreError`] naming the problem when the URL is not a valid Redis URL.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError {
            store: "redis",
            operation: "open",
            message: format!("invalid Redis URL: {e}"),
        })?;
        Ok(Self {
            client,
            conn: Default::default(),
            claim: std::sync::Arc::new(redis::Script::new(CLAIM)),
            extend: std::sync::Arc::new(redis::Script::new(EXTEND)),
        })
    }

    async fn conn(&self, operation: &'static str) -> Result<ConnectionManager, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            // one quick retry: the crate's backoff factor otherwise grows the second wait to
            // ~100 s (measured: a claim against a stopped Redis took 118 s to fail)
            .set_number_of_retries(1)
            .set_max_delay(200);
        self.conn
            .get_or_try_init(|| self.client.get_connection_manager_with_config(config))
            .await
            .cloned()
            .map_err(|e| err(operation, e))
    }
}

fn err(operation: &'static str, e: redis::RedisError) -> StoreError {
    StoreError { store: "redis", operation, message: e.to_string() }
}

fn encode(r: &Record) -> String {
    let mut v = json!({
        "status": r.status.as_str(),
        "expiration": epoch_secs(r.expiration),
    });
    if let Some(t) = r.in_progress_expiration {
        v["in_progress_expiration"] = json!(epoch_millis(t));
    }
    if let Some(h) = &r.validation {
        v["validation"] = json!(h);
    }
    if let Some(d) = &r.data {
        v["data"] = json!(d);
    }
    v.to_string()
}

fn decode(key: &str, text: &str) -> Result<Record, StoreError> {
    let bad = |what: &str| StoreError { store: "redis", operation: "claim", message: format!("record {key}: {what}") };
    let v: Value = serde_json::from_str(text).map_err(|_| bad("not a JSON object"))?;
    let status = v["status"].as_str().and_then(Status::parse).ok_or_else(|| bad("no known `status`"))?;
    let number = |name: &str| v[name].as_u64().or_else(|| v[name].as_f64().map(|f| f as u64));
    Ok(Record {
        key: key.to_string(),
        status,
        expiration: number("expiration").map(from_epoch_secs).ok_or_else(|| bad("no `expiration`"))?,
        in_progress_expiration: number("in_progress_expiration").map(from_epoch_millis),
        validation: v["validation"].as_str().map(str::to_string),
        data: v["data"].as_str().map(str::to_string),
    })
}

/// Milliseconds from `now` until `t`, at least 1 (a Redis expiry must be positive).
fn ttl_ms(t: SystemTime, now: SystemTime) -> u64 {
    t.duration_since(now).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0).max(1)
}

impl IdempotencyStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn claim<'a>(&'a self, record: &'a Record, now: SystemTime) -> StoreFuture<'a, Claim> {
        Box::pin(async move {
            let mut conn = self.conn("claim").await?;
            let held: Option<String> = self
                .claim
                .key(&record.key)
                .arg(encode(record))
                .arg(ttl_ms(record.expiration, now))
                .arg(epoch_millis(now))
                .arg(epoch_secs(now))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| err("claim", e))?;
            match held {
                None => Ok(Claim::Claimed),
                Some(text) => Ok(Claim::Existing(decode(&record.key, &text)?)),
            }
        })
    }

    fn complete<'a>(&'a self, record: &'a Record) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn("complete").await?;
            let ttl = ttl_ms(record.expiration, SystemTime::now());
            redis::cmd("SET")
                .arg(&record.key)
                .arg(encode(record))
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| err("complete", e))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn("delete").await?;
            redis::cmd("DEL").arg(key).query_async::<()>(&mut conn).await.map_err(|e| err("delete", e))
        })
    }

    fn extend<'a>(&'a self, key: &'a str, until: SystemTime) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn("extend").await?;
            self.extend
                .key(key)
                .arg(epoch_millis(until))
                .invoke_async::<i64>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| err("extend", e))
        })
    }
}
