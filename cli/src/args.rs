//! Value parsers for flags (and their environment variables): every number is range-checked
//! here, so that a bad one is a usage error (exit 2) naming the flag, never a panic or an
//! overflow later. The ranges are the library's.

use std::time::{Duration, SystemTime};

use clap::builder::RangedU64ValueParser;

/// Seconds within `range` (e.g. `secs(1..=43_200)`).
pub fn secs(range: std::ops::RangeInclusive<u64>) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::<u64>::new().range(range)
}

/// A count within `range`.
pub fn count(range: std::ops::RangeInclusive<u64>) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(range)
}

/// SQS's longest visibility: handler, HTTP and shutdown timeouts never need more.
pub const TWELVE_HOURS: u64 = sqskit::limits::MAX_VISIBILITY_SECONDS as u64;

/// Messages per second, `sqskit::rate::MIN_RATE` (0.001) to `MAX_RATE` (100,000).
pub fn rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
    sqskit::rate::RateLimit::per_second(rate).map(|_| rate).map_err(|e| e.to_string())
}

/// A delay: whole seconds, or a duration such as 90s, 15m, 2h, 3d; at most
/// `sqskit::delay::MAX_AHEAD` (365 days).
pub fn delay(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (seconds, or e.g. 90s, 15m, 2h, 3d)"))?
        }
    };
    let max = sqskit::delay::MAX_AHEAD;
    if d > max {
        return Err(format!("{s:?} is more than {} days, the longest delay", max.as_secs() / 86_400));
    }
    Ok(d)
}

/// An RFC 3339 time with `Z` or an offset (`2026-12-24T18:00:00Z`, `…+05:00`), at most
/// `sqskit::delay::MAX_AHEAD` ahead; a time without a zone is refused with what to add.
pub fn deliver_at(s: &str) -> Result<SystemTime, String> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    let t = time::OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        if time::OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339).is_ok() {
            format!("{s:?} has no time zone: add Z for UTC or an offset such as +05:00 (e.g. {s}Z)")
        } else {
            format!("{s:?}: {e} (RFC 3339 with Z or an offset, e.g. 2026-12-24T18:00:00Z or 2026-12-24T18:00:00+05:00)")
        }
    })?;
    let when = SystemTime::from(t);
    if sqskit::delay::check_ahead(when, SystemTime::now()).is_err() {
        let days = sqskit::delay::MAX_AHEAD.as_secs() / 86_400;
        return Err(format!("{s:?} is more than {days} days ahead, the longest delay"));
    }
    Ok(when)
}

/// `NAME=VALUE` (a string message attribute).
pub fn attribute(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

/// `--exec`: split like a shell would, and able to start (the program found and executable:
/// `sqskit::handlers::check_command`). Returns the command line as given.
pub fn exec(s: &str) -> Result<String, String> {
    let words = shlex::split(s).ok_or_else(|| format!("{s:?} is not valid shell syntax (an unclosed quote?)"))?;
    sqskit::handlers::check_command(&words)?;
    Ok(s.to_string())
}

/// `--http`: an http(s) URL with a host.
pub fn http_url(s: &str) -> Result<String, String> {
    sqskit::handlers::check_http_url(s).map(|()| s.to_string())
}

/// `--envelope`: sns, eventbridge, s3 or cloudevents.
pub fn envelope(s: &str) -> Result<sqskit::envelope::EnvelopeKind, String> {
    s.trim().parse()
}

/// `--schema FILE`: read and compiled while the flags are parsed, so that a missing file or a
/// bad schema is a usage error naming the flag, before anything starts.
pub fn schema(s: &str) -> Result<sqskit::schema::Schema, String> {
    sqskit::schema::Schema::from_file(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_and_times_at_their_limits() {
        assert_eq!(delay("90").unwrap(), Duration::from_secs(90));
        assert_eq!(delay("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(delay("365d").unwrap(), sqskit::delay::MAX_AHEAD);
        for bad in ["18446744073709551615s", "30000000000y", "366d", "soon", "-5", ""] {
            assert!(delay(bad).is_err(), "{bad}");
        }
        let e = deliver_at("2026-12-24T18:00:00").unwrap_err();
        assert!(e.contains("add Z") && e.contains("offset"), "{e}");
        let utc = deliver_at("2026-12-24T13:00:00Z");
        let offset = deliver_at("2026-12-24T18:00:00+05:00");
        // both the same instant (or both past the horizon/in the past alike)
        assert_eq!(utc.ok(), offset.ok());
        assert!(deliver_at("9999-12-31T23:59:59Z").unwrap_err().contains("days"));
        assert!(rate("1e-20").is_err() && rate("NaN").is_err() && rate("0.5").is_ok());
        assert_eq!(attribute("k=v=w").unwrap(), ("k".into(), "v=w".into()));
        assert!(attribute("=v").is_err() && attribute("k").is_err());
    }

    proptest! {
        #[test]
        fn delays_parse_into_range_or_are_refused(s in "\\PC{0,24}|[0-9]{1,22}(s|m|h|d|y|ms|us)?") {
            if let Ok(d) = delay(&s) {
                prop_assert!(d <= sqskit::delay::MAX_AHEAD);
            }
        }

        #[test]
        fn whole_seconds_round_trip(secs in 0u64..=sqskit::delay::MAX_AHEAD.as_secs()) {
            prop_assert_eq!(delay(&secs.to_string()).unwrap(), Duration::from_secs(secs));
            prop_assert_eq!(delay(&format!("{secs}s")).unwrap(), Duration::from_secs(secs));
        }

        #[test]
        fn deliver_at_round_trips_through_any_offset(ahead in 0i64..=364 * 86_400, offset_min in -1439i32..=1439) {
            use time::format_description::well_known::Rfc3339;
            let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::seconds(ahead);
            let offset = time::UtcOffset::from_whole_seconds(offset_min * 60).unwrap();
            let text = now.to_offset(offset).format(&Rfc3339).unwrap();
            prop_assert_eq!(deliver_at(&text).unwrap(), SystemTime::from(now), "{}", text);
        }

        #[test]
        fn any_time_text_is_parsed_or_refused(s in "\\PC{0,30}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}(Z|[+-][0-9]{2}:[0-9]{2})?") {
            if let Ok(t) = deliver_at(&s) {
                prop_assert!(sqskit::delay::check_ahead(t, SystemTime::now()).is_ok());
            }
        }

        #[test]
        fn rates_are_in_range(s in "\\PC{0,12}|[0-9.e+-]{1,12}") {
            if let Ok(r) = rate(&s) {
                prop_assert!((sqskit::rate::MIN_RATE..=sqskit::rate::MAX_RATE).contains(&r));
            }
        }
    }
}
