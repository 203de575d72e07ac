//! Configuration from the environment (12-factor), for the Lambdas; errors name the variable.
//!
//! The `sqskit` CLI reads the same `SQSKIT_*` variables through its flags.

use std::time::Duration;

use crate::processor::ProcessorConfig;
use crate::retry::Backoff;

/// An environment variable is set to something unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {name}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// Why it is rejected.
    pub reason: String,
}

/// A whole number of seconds from `name`, or `default` when unset or empty.
///
/// # Errors
/// [`ConfigError`] naming the variable when it is not a whole number.
pub fn env_secs(name: &'static str, default: u64) -> Result<u64, ConfigError> {
    parse_secs(name, std::env::var(name).ok().as_deref(), default)
}

/// A whole number (a count) from `name`, or `default` when unset or empty.
///
/// # Errors
/// [`ConfigError`] naming the variable when it is not a whole number.
pub fn env_count(name: &'static str, default: u64) -> Result<u64, ConfigError> {
    parse_whole(name, std::env::var(name).ok().as_deref(), default, "expected a whole number")
}

fn parse_secs(name: &'static str, value: Option<&str>, default: u64) -> Result<u64, ConfigError> {
    parse_whole(name, value, default, "expected a whole number of seconds")
}

fn parse_whole(name: &'static str, value: Option<&str>, default: u64, expected: &str) -> Result<u64, ConfigError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError { name, value: v.to_string(), reason: expected.into() }),
    }
}

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

/// A boolean from `name`: `true`/`1`/`yes` or `false`/`0`/`no` (any case); unset or empty is false.
///
/// # Errors
/// [`ConfigError`] naming the variable for any other value.
pub fn env_bool(name: &'static str) -> Result<bool, ConfigError> {
    parse_bool(name, std::env::var(name).ok().as_deref())
}

fn parse_bool(name: &'static str, value: Option<&str>) -> Result<bool, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => Err(ConfigError { name, value: other.to_string(), reason: "expected true or false".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_or_name_the_variable() {
        assert_eq!(parse_secs("X", None, 5), Ok(5));
        assert_eq!(parse_secs("X", Some(" "), 5), Ok(5));
        assert_eq!(parse_secs("X", Some("12"), 5), Ok(12));
        let e = parse_secs("SQSKIT_BACKOFF_BASE", Some("2s"), 5).unwrap_err();
        assert!(e.to_string().contains("SQSKIT_BACKOFF_BASE"), "{e}");
    }

    #[test]
    fn booleans_parse_or_name_the_variable() {
        assert_eq!(parse_bool("X", None), Ok(false));
        assert_eq!(parse_bool("X", Some("TRUE")), Ok(true));
        assert_eq!(parse_bool("X", Some("0")), Ok(false));
        let e = parse_bool("SQSKIT_LOG_BODIES", Some("sometimes")).unwrap_err();
        assert!(e.to_string().contains("SQSKIT_LOG_BODIES"), "{e}");
    }
}
