//! The environment: the one place the library reads environment variables.
//!
//! It owns reading and parsing them: typed getters ([`env_secs`], [`env_count`], [`env_bool`],
//! [`env_switch`], [`text`]) that treat unset and empty alike and return a [`ConfigError`] naming the variable
//! for a value they cannot use, the old names of renamed variables (still read for one release,
//! with a warning naming the new one), and the AWS SDK's own chain ([`load_aws_config`]). It
//! does not decide what a setting means or which settings a component takes: the modules that
//! own a setting build their configuration from these getters
//! ([`config::processor_from_env`](crate::config::processor_from_env),
//! [`BreakerConfig::from_env`](crate::flow::BreakerConfig::from_env),
//! [`ClaimCheck::from_env`](crate::payload::ClaimCheck::from_env), the DLQ monitor's
//! `MonitorConfig::from_env`, the Lambda adapter).
//!
//! # Example
//! ```
//! let secs = sqskit::env::env_secs("SQSKIT_EXAMPLE_UNSET_SECONDS", 15).unwrap();
//! assert_eq!(secs, 15); // unset: the default
//! ```

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

/// The value of `name`, trimmed; `None` when unset, empty or not Unicode.
///
/// # Example
/// ```
/// assert_eq!(sqskit::env::text("SQSKIT_EXAMPLE_UNSET_TEXT"), None);
/// ```
pub fn text(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The value of `name` as set (not trimmed), `None` when unset or not Unicode.
pub(crate) fn raw(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The value of `name` as the OS holds it (e.g. `PATH`), `None` when unset.
#[cfg_attr(not(feature = "handlers"), allow(dead_code))]
pub(crate) fn os(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name)
}

/// Whether `name` is set at all (even to an empty or non-Unicode value).
#[cfg_attr(not(feature = "payload"), allow(dead_code))]
pub(crate) fn is_set(name: &str) -> bool {
    std::env::var_os(name).is_some()
}

/// A whole number of seconds from `name`, or `default` when unset or empty.
///
/// # Errors
/// [`ConfigError`] naming the variable when it is not a whole number.
pub fn env_secs(name: &'static str, default: u64) -> Result<u64, ConfigError> {
    parse_secs(name, raw(name).as_deref(), default)
}

/// A whole number (a count) from `name`, or `default` when unset or empty.
///
/// # Errors
/// [`ConfigError`] naming the variable when it is not a whole number.
pub fn env_count(name: &'static str, default: u64) -> Result<u64, ConfigError> {
    parse_whole(name, raw(name).as_deref(), default, "expected a whole number")
}

/// A boolean from `name`: `true`/`1`/`yes` or `false`/`0`/`no` (any case); unset or empty is false.
///
/// # Errors
/// [`ConfigError`] naming the variable for any other value.
pub fn env_bool(name: &'static str) -> Result<bool, ConfigError> {
    parse_bool(name, raw(name).as_deref())
}

/// A switch from `name`: `on`/`true`/`1`/`yes` or `off`/`false`/`0`/`no` (any case); unset or
/// empty is `default` (for settings that are on unless turned off, e.g. `SQSKIT_BREAKER`).
///
/// # Errors
/// [`ConfigError`] naming the variable for any other value.
///
/// # Example
/// ```
/// assert!(sqskit::env::env_switch("SQSKIT_EXAMPLE_UNSET_SWITCH", true).unwrap());
/// ```
pub fn env_switch(name: &'static str, default: bool) -> Result<bool, ConfigError> {
    parse_switch(name, raw(name).as_deref(), default)
}

/// The variable to read for a setting that was renamed: `new` when set (not empty), else `old`
/// when set, with a warning naming the new variable (old names are read for one release).
#[cfg_attr(not(feature = "dlq"), allow(dead_code))]
fn renamed(new: &'static str, old: &'static str) -> Option<(&'static str, String)> {
    if let Some(v) = text(new) {
        return Some((new, v));
    }
    let v = text(old)?;
    tracing::warn!(variable = old, use_instead = new, "deprecated environment variable; set {new} instead");
    Some((old, v))
}

/// [`text`] of a renamed setting (see [`renamed`]).
#[cfg_attr(not(feature = "dlq"), allow(dead_code))]
pub(crate) fn renamed_text(new: &'static str, old: &'static str) -> Option<String> {
    renamed(new, old).map(|(_, v)| v)
}

/// [`env_bool`] of a renamed setting (see [`renamed`]); the error names the variable read.
#[cfg_attr(not(feature = "dlq"), allow(dead_code))]
pub(crate) fn renamed_bool(new: &'static str, old: &'static str) -> Result<bool, ConfigError> {
    match renamed(new, old) {
        None => Ok(false),
        Some((name, v)) => parse_bool(name, Some(&v)),
    }
}

/// Load the AWS configuration from the standard chain (env, profile, IMDS/ECS
/// credentials; `AWS_ENDPOINT_URL` for LocalStack).
pub async fn load_aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
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

fn parse_bool(name: &'static str, value: Option<&str>) -> Result<bool, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => Err(ConfigError { name, value: other.to_string(), reason: "expected true or false".into() }),
    }
}

fn parse_switch(name: &'static str, value: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") => Ok(default),
        Some("on") | Some("true") | Some("1") | Some("yes") => Ok(true),
        Some("off") | Some("false") | Some("0") | Some("no") => Ok(false),
        Some(other) => Err(ConfigError { name, value: other.to_string(), reason: "expected on or off".into() }),
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

    #[test]
    fn switches_default_when_unset_and_name_the_variable() {
        assert_eq!(parse_switch("X", None, true), Ok(true));
        assert_eq!(parse_switch("X", Some(" "), false), Ok(false));
        assert_eq!(parse_switch("X", Some("OFF"), true), Ok(false));
        assert_eq!(parse_switch("X", Some("on"), false), Ok(true));
        let e = parse_switch("SQSKIT_BREAKER", Some("maybe"), true).unwrap_err();
        assert!(e.to_string().contains("SQSKIT_BREAKER"), "{e}");
    }

    #[test]
    fn a_renamed_variable_is_read_under_its_new_name_first_then_its_old_one() {
        // names of this test only: the process environment is shared by the tests of this binary
        const NEW: &str = "SQSKIT_ENV_TEST_RENAMED";
        const OLD: &str = "ENV_TEST_RENAMED_OLD";
        std::env::remove_var(NEW);
        std::env::remove_var(OLD);
        assert_eq!(renamed_text(NEW, OLD), None);
        assert_eq!(renamed_bool(NEW, OLD), Ok(false));
        std::env::set_var(OLD, "yes");
        assert_eq!(renamed_text(NEW, OLD).as_deref(), Some("yes"), "the old name still works");
        assert_eq!(renamed_bool(NEW, OLD), Ok(true));
        std::env::set_var(OLD, "maybe");
        assert_eq!(renamed_bool(NEW, OLD).unwrap_err().name, OLD, "the error names the variable read");
        std::env::set_var(NEW, " false ");
        assert_eq!(renamed_text(NEW, OLD).as_deref(), Some("false"), "the new name wins");
        assert_eq!(renamed_bool(NEW, OLD), Ok(false));
        std::env::set_var(NEW, "maybe");
        assert_eq!(renamed_bool(NEW, OLD).unwrap_err().name, NEW);
        std::env::remove_var(NEW);
        std::env::remove_var(OLD);
    }
}
