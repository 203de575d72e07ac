//! Configuration from the environment (12-factor), for the Lambdas; errors name the variable.
//!
//! It owns the settings that span components: the processor's ([`processor_from_env`]) and
//! idempotency's ([`IdempotencySettings`]), built from the typed getters of [`crate::env`] (the
//! one place variables are read; its getters and [`ConfigError`] are re-exported here). It does
//! not read variables itself, and settings owned by one component live with it
//! ([`ClaimCheck::from_env`](crate::payload::ClaimCheck::from_env), the Lambda adapter's).
//! The `sqskit` CLI reads the same `SQSKIT_*` variables through its flags.

use std::time::Duration;

pub use crate::env::{env_bool, env_count, env_secs, ConfigError};
use crate::processor::ProcessorConfig;
use crate::retry::Backoff;

/// Processor settings from `SQSKIT_BACKOFF_BASE` (default 15), `SQSKIT_BACKOFF_MAX` (default
/// 900), `SQSKIT_HANDLER_TIMEOUT` (seconds; unset = none) and `SQSKIT_LOG_BODIES` (`true`:
/// full decoding errors, which may quote the body, in logs and DLQ attributes; default off).
///
/// # Errors
/// [`ConfigError`] naming the variable at fault.
///
/// # Example
/// ```
/// let c = sqskit::config::processor_from_env().unwrap();
/// assert!(c.backoff.max >= c.backoff.base);
/// ```
pub fn processor_from_env() -> Result<ProcessorConfig, ConfigError> {
    let base = env_secs("SQSKIT_BACKOFF_BASE", Backoff::default().base.as_secs())?;
    let max = env_secs("SQSKIT_BACKOFF_MAX", Backoff::default().max.as_secs())?;
    if max < base {
        return Err(ConfigError {
            name: "SQSKIT_BACKOFF_MAX",
            value: max.to_string(),
            reason: format!("is below SQSKIT_BACKOFF_BASE ({base})"),
        });
    }
    let timeout = match env_secs("SQSKIT_HANDLER_TIMEOUT", 0)? {
        0 => None,
        t => Some(Duration::from_secs(t)),
    };
    Ok(ProcessorConfig {
        backoff: Backoff { base: Duration::from_secs(base), factor: 2.0, max: Duration::from_secs(max) },
        timeout,
        log_bodies: env_bool("SQSKIT_LOG_BODIES")?,
        ..ProcessorConfig::default()
    })
}

/// Idempotency settings (`SQSKIT_IDEMPOTENCY_*`; the CLI's `--idempotency-*` flags): which
/// store, how keys are made, how long records count.
///
/// # Example
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use sqskit::config::IdempotencySettings;
/// let s = IdempotencySettings::default();            // no store configured
/// assert!(s.build::<String>().await.unwrap().is_none());
/// # });
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdempotencySettings {
    /// DynamoDB table (`SQSKIT_IDEMPOTENCY_TABLE`; feature `idempotency-dynamodb`).
    pub table: Option<String>,
    /// Redis URL (`SQSKIT_IDEMPOTENCY_REDIS`; feature `idempotency-redis`).
    pub redis: Option<String>,
    /// Key source: `/json/pointer`, `attr:NAME` or `body` (`SQSKIT_IDEMPOTENCY_KEY`; default
    /// the whole body).
    pub key: Option<String>,
    /// Key prefix (`SQSKIT_IDEMPOTENCY_PREFIX`; default `sqskit`).
    pub prefix: Option<String>,
    /// How long completed records count (`SQSKIT_IDEMPOTENCY_TTL`, seconds; default 3600).
    pub ttl: Option<Duration>,
    /// Run the handler without a claim when the store fails (`SQSKIT_IDEMPOTENCY_FAIL_OPEN`).
    pub fail_open: bool,
}

impl IdempotencySettings {
    /// Read the `SQSKIT_IDEMPOTENCY_*` variables.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable at fault.
    pub fn from_env() -> Result<Self, ConfigError> {
        let text = crate::env::text;
        let ttl = match env_secs("SQSKIT_IDEMPOTENCY_TTL", 0)? {
            0 => None,
            t => Some(Duration::from_secs(t)),
        };
        Ok(Self {
            table: text("SQSKIT_IDEMPOTENCY_TABLE"),
            redis: text("SQSKIT_IDEMPOTENCY_REDIS"),
            key: text("SQSKIT_IDEMPOTENCY_KEY"),
            prefix: text("SQSKIT_IDEMPOTENCY_PREFIX"),
            ttl,
            fail_open: env_bool("SQSKIT_IDEMPOTENCY_FAIL_OPEN")?,
        })
    }

    /// Build the idempotency layer, or `None` when no store is configured.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting: both stores set, a store this build lacks (cargo
    /// feature), an invalid key source or Redis URL, a TTL of 0.
    pub async fn build<T>(&self) -> Result<Option<crate::idempotency::Idempotency<T>>, ConfigError> {
        use crate::idempotency::{Idempotency, IdempotencyStore, KeySource};
        let invalid =
            |name: &'static str, value: &str, reason: String| ConfigError { name, value: value.into(), reason };
        let store: std::sync::Arc<dyn IdempotencyStore> = match (&self.table, &self.redis) {
            (None, None) => return Ok(None),
            (Some(_), Some(r)) => {
                return Err(invalid("SQSKIT_IDEMPOTENCY_REDIS", r, "set one store: a DynamoDB table or Redis".into()))
            }
            (Some(table), None) => dynamodb_store(table).await?,
            (None, Some(url)) => redis_store(url)?,
        };
        let mut idem = Idempotency::with_store(store).with_fail_open(self.fail_open);
        if let Some(k) = &self.key {
            idem = idem.with_key_source(KeySource::parse(k).map_err(|e| invalid("SQSKIT_IDEMPOTENCY_KEY", k, e))?);
        }
        if let Some(p) = &self.prefix {
            idem = idem.with_prefix(p.clone());
        }
        if let Some(ttl) = self.ttl {
            if ttl.is_zero() {
                return Err(invalid("SQSKIT_IDEMPOTENCY_TTL", "0", "must be at least 1 second".into()));
            }
            idem = idem.with_ttl(ttl);
        }
        Ok(Some(idem))
    }
}

#[cfg(feature = "idempotency-dynamodb")]
async fn dynamodb_store(table: &str) -> Result<std::sync::Arc<dyn crate::idempotency::IdempotencyStore>, ConfigError> {
    Ok(std::sync::Arc::new(crate::idempotency::DynamoDbStore::from_env(table).await))
}

#[cfg(not(feature = "idempotency-dynamodb"))]
async fn dynamodb_store(table: &str) -> Result<std::sync::Arc<dyn crate::idempotency::IdempotencyStore>, ConfigError> {
    Err(ConfigError {
        name: "SQSKIT_IDEMPOTENCY_TABLE",
        value: table.into(),
        reason: "this build has no DynamoDB store (cargo feature `idempotency-dynamodb`)".into(),
    })
}

#[cfg(feature = "idempotency-redis")]
fn redis_store(url: &str) -> Result<std::sync::Arc<dyn crate::idempotency::IdempotencyStore>, ConfigError> {
    crate::idempotency::RedisStore::open(url)
        .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn crate::idempotency::IdempotencyStore>)
        .map_err(|e| ConfigError { name: "SQSKIT_IDEMPOTENCY_REDIS", value: url.into(), reason: e.message })
}

#[cfg(not(feature = "idempotency-redis"))]
fn redis_store(url: &str) -> Result<std::sync::Arc<dyn crate::idempotency::IdempotencyStore>, ConfigError> {
    Err(ConfigError {
        name: "SQSKIT_IDEMPOTENCY_REDIS",
        value: url.into(),
        reason: "this build has no Redis store (cargo feature `idempotency-redis`)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idempotency_settings_name_the_setting_at_fault() {
        let mut s = IdempotencySettings::default();
        assert!(s.build::<String>().await.unwrap().is_none(), "no store, no idempotency");
        s.table = Some("t".into());
        s.redis = Some("redis://127.0.0.1:1/".into());
        let e = s.build::<String>().await.unwrap_err();
        assert_eq!(e.name, "SQSKIT_IDEMPOTENCY_REDIS");
        s.table = None;
        s.key = Some("order_id".into());
        let e = s.build::<String>().await.unwrap_err();
        assert_eq!(e.name, "SQSKIT_IDEMPOTENCY_KEY");
        assert!(e.reason.contains("JSON Pointer"), "{e}");
        s.key = Some("/order_id".into());
        s.redis = Some("http://not-redis".into());
        let e = s.build::<String>().await.unwrap_err();
        assert_eq!(e.name, "SQSKIT_IDEMPOTENCY_REDIS");
    }
}
