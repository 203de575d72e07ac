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

fn parse_secs(name: &'static str, value: Option<&str>, default: u64) -> Result<u64, ConfigError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError {
            name,
            value: v.to_string(),
            reason: "expected a whole number of seconds".into(),
        }),
    }
}

/// Processor settings from `SQSKIT_BACKOFF_BASE` (default 2), `SQSKIT_BACKOFF_MAX` (default
/// 900) and `SQSKIT_HANDLER_TIMEOUT` (seconds; unset = none).
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
    let base = env_secs("SQSKIT_BACKOFF_BASE", 2)?;
    let max = env_secs("SQSKIT_BACKOFF_MAX", 900)?;
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
        ..ProcessorConfig::default()
    })
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
}
