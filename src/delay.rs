//! Delivery later than SQS's 15-minute delay, in hops.
//!
//! SQS delays a message by at most 900 s (`DelaySeconds`), and keeping a received message
//! invisible longer would count receives toward its DLQ. So a message due later is sent with
//! `DelaySeconds = min(remaining, hop)` and a **`sqskit-deliver-at`** attribute (Number, epoch
//! milliseconds). A consumer that receives it early does not run the handler: it re-sends the
//! message with the next hop (body, attributes, `AWSTraceHeader`, fair-queue group id kept: a
//! new message, so no receive is counted against it) and deletes the copy it received
//! ([`Outcome::Deferred`](crate::Outcome::Deferred)). Once due, the handler runs as usual.
//!
//! FIFO queues have no per-message delay: [`Queue::send_at`](crate::Queue::send_at) refuses
//! them, and a FIFO consumer ignores the attribute.
//!
//! A due time is at most [`MAX_AHEAD`] (365 days) away. The attribute is read strictly
//! ([`parse_due_time`]): a whole number of epoch milliseconds (a decimal fraction, as other
//! producers write it, is rounded up to the next millisecond). On a standard queue a message
//! whose attribute is anything else, or more than [`MAX_AHEAD`] (plus a day for clock skew)
//! ahead, is never run early nor hopped forever: the processor dead-letters it as
//! `undecodable`, with an error naming the attribute ([`due_time`]).
//!
//! The hop is 900 s; tests and impatient demos may shorten it on the queue
//! ([`Queue::with_delay_hop`](crate::Queue::with_delay_hop), its one home: the first hop is
//! sent with it, and a processor consuming the queue re-sends with it).
//!
//! # Example
//! ```
//! use std::time::{Duration, SystemTime};
//! use sqskit::delay::first_hop;
//! let now = SystemTime::now();
//! // two hours away: the first hop is 15 minutes, and the attribute carries the due time
//! let (delay, attribute) = first_hop(now + Duration::from_secs(7200), now, Duration::from_secs(900));
//! assert_eq!(delay, 900);
//! assert!(attribute);
//! // 5 minutes away: a plain delay
//! assert_eq!(first_hop(now + Duration::from_secs(300), now, Duration::from_secs(900)), (300, false));
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::message::{AttributeValue, OutgoingMessage, ReceivedMessage};

/// The message attribute carrying the due time (Number, epoch milliseconds).
pub const DELIVER_AT: &str = "sqskit-deliver-at";

/// The longest hop: SQS's maximum `DelaySeconds`.
pub const MAX_HOP: Duration = Duration::from_secs(crate::limits::MAX_DELAY_SECONDS as u64);

/// The furthest ahead a message may be due: 365 days (each hop is a new message, so SQS's
/// retention does not bound it; this does, and catches unit mistakes such as microseconds).
pub const MAX_AHEAD: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a consumer tolerates beyond [`MAX_AHEAD`]: the producer's clock may run ahead of its own.
const CLOCK_SLACK: Duration = Duration::from_secs(24 * 3600);

/// Check that a due time `when` is at most [`MAX_AHEAD`] after `now` (a time in the past is
/// due at once, and fine).
///
/// # Errors
/// [`Error::Invalid`] naming [`DELIVER_AT`], with how far ahead `when` is.
///
/// # Example
/// ```
/// use std::time::{Duration, SystemTime};
/// use sqskit::delay::{check_ahead, MAX_AHEAD};
/// let now = SystemTime::now();
/// assert!(check_ahead(now + MAX_AHEAD, now).is_ok());
/// assert!(check_ahead(now + MAX_AHEAD + Duration::from_secs(1), now).is_err());
/// ```
pub fn check_ahead(when: SystemTime, now: SystemTime) -> Result<(), Error> {
    within(when, now, MAX_AHEAD)
}

fn within(when: SystemTime, now: SystemTime, horizon: Duration) -> Result<(), Error> {
    match when.duration_since(now) {
        Ok(ahead) if ahead > horizon => Err(Error::Invalid {
            what: DELIVER_AT,
            reason: format!(
                "due in {} days, more than the {} days a message may be delayed (hops)",
                ahead.as_secs() / 86_400,
                MAX_AHEAD.as_secs() / 86_400
            ),
        }),
        _ => Ok(()),
    }
}

/// Parse a `sqskit-deliver-at` value: epoch milliseconds as a whole number (digits only), or
/// with a decimal fraction, rounded up to the next millisecond (so nothing runs early).
///
/// # Errors
/// [`Error::Invalid`] naming [`DELIVER_AT`] for anything else (a sign, an exponent, words, a
/// value beyond what a time can hold).
///
/// # Example
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use sqskit::delay::parse_due_time;
/// assert_eq!(parse_due_time("1767225600000").unwrap(), UNIX_EPOCH + Duration::from_millis(1_767_225_600_000));
/// assert_eq!(parse_due_time("1767225600000.25").unwrap(), UNIX_EPOCH + Duration::from_millis(1_767_225_600_001));
/// assert!(parse_due_time("1.7e12").is_err());
/// assert!(parse_due_time("soon").is_err());
/// ```
pub fn parse_due_time(value: &str) -> Result<SystemTime, Error> {
    let invalid = |why: &str| Error::Invalid {
        what: DELIVER_AT,
        reason: format!("{:?}: {why}", value.chars().take(40).collect::<String>()),
    };
    let v = value.trim();
    let (whole, fraction) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || (v.contains('.') && fraction.is_empty()) {
        return Err(invalid("not a whole number of epoch milliseconds (e.g. 1767225600000)"));
    }
    let ms: u64 = whole.parse().map_err(|_| invalid("too large for a time"))?;
    let ms = if fraction.bytes().any(|b| b != b'0') { ms.checked_add(1) } else { Some(ms) };
    ms.and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms))).ok_or_else(|| invalid("too large for a time"))
}

/// The due time a received message carries: `Ok(None)` without the attribute.
///
/// # Errors
/// [`Error::Invalid`] naming [`DELIVER_AT`] when its value is not a due time
/// ([`parse_due_time`]), or is more than [`MAX_AHEAD`] (and a day of clock skew) after `now`.
pub fn due_time(m: &ReceivedMessage, now: SystemTime) -> Result<Option<SystemTime>, Error> {
    let Some(v) = m.attributes.get(DELIVER_AT) else { return Ok(None) };
    let text = v.as_str().ok_or_else(|| Error::Invalid {
        what: DELIVER_AT,
        reason: format!("a {} attribute without a value (expected Number, epoch milliseconds)", v.data_type),
    })?;
    let when = parse_due_time(text)?;
    within(when, now, MAX_AHEAD.saturating_add(CLOCK_SLACK))?;
    Ok(Some(when))
}

/// The failure of a received message whose due time cannot be honoured ([`due_time`]):
/// dead-lettered as `undecodable` with the reason, never run early, never hopped forever.
pub(crate) fn refused(m: &ReceivedMessage, now: SystemTime) -> Option<crate::outcome::Failure> {
    due_time(m, now).err().map(|e| crate::outcome::Failure {
        kind: crate::outcome::FailureKind::Undecodable,
        error: e.to_string(),
        retry_after: None,
    })
}

/// `(DelaySeconds, whether the deliver-at attribute is needed)` for a message due at `when`:
/// a plain delay (rounded up to whole seconds) when it fits in one `hop`, else one hop and the
/// attribute.
pub fn first_hop(when: SystemTime, now: SystemTime, hop: Duration) -> (u32, bool) {
    let hop = hop.clamp(Duration::from_secs(1), MAX_HOP);
    let remaining = when.duration_since(now).unwrap_or_default();
    if remaining <= hop {
        (ceil_secs(remaining), false)
    } else {
        (ceil_secs(hop), true)
    }
}

fn ceil_secs(d: Duration) -> u32 {
    (d.as_millis().div_ceil(1000)).min(u128::from(u32::MAX)) as u32
}

/// Epoch milliseconds of `t` (0 before the epoch, `u64::MAX` beyond what it holds).
pub fn epoch_millis(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// The due time a received message carries, if it carries a valid one ([`due_time`]).
pub fn deliver_at(m: &ReceivedMessage) -> Option<SystemTime> {
    due_time(m, SystemTime::now()).ok().flatten()
}

/// Whether a received message carries a due time (`sqskit-deliver-at`), due or not.
pub(crate) fn carries_due_time(m: &ReceivedMessage) -> bool {
    m.attributes.contains_key(DELIVER_AT)
}

/// Time left until a received message is due (`None`: due now, no due time, or one that cannot
/// be honoured: see [`due_time`]).
pub fn remaining(m: &ReceivedMessage, now: SystemTime) -> Option<Duration> {
    due_time(m, now).ok().flatten()?.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// Add the due-time attribute to `msg`.
pub fn mark(msg: &mut OutgoingMessage, when: SystemTime) {
    msg.attributes.insert(DELIVER_AT.to_string(), AttributeValue::number(epoch_millis(when).to_string()));
}

/// A fresh copy of a received standard-queue message, to be sent in its place: the same body
/// (a claim-check pointer stays a pointer), attributes, `AWSTraceHeader` and fair-queue group
/// (the tenant). A delay hop and a carry-over ([`settle::carry_over`](crate::settle::carry_over))
/// both send one, then delete the message received; the copy starts with no receive counted.
pub fn copy_of(m: &ReceivedMessage) -> OutgoingMessage {
    let mut out = OutgoingMessage::new(m.body.clone());
    out.attributes = m.attributes.clone();
    out.trace_header = crate::trace::received_trace_header(m);
    out.group_id = m.group_id().map(str::to_string);
    out
}

/// The next hop of a received message due in `remaining`: the same body, attributes (the due
/// time included), `AWSTraceHeader` and fair-queue group, delayed by `min(remaining, hop)`
/// (whole seconds, at least one).
pub fn next_hop(m: &ReceivedMessage, remaining: Duration, hop: Duration) -> OutgoingMessage {
    let mut out = copy_of(m);
    let hop = hop.clamp(Duration::from_secs(1), MAX_HOP);
    out.delay_seconds = Some(ceil_secs(remaining.min(hop)).max(1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_and_due_times() {
        let now = SystemTime::now();
        let hop = Duration::from_secs(2);
        assert_eq!(first_hop(now + Duration::from_millis(7000), now, hop), (2, true));
        assert_eq!(first_hop(now + Duration::from_millis(1500), now, hop), (2, false));
        assert_eq!(first_hop(now - Duration::from_secs(5), now, hop), (0, false), "past: no delay");
        assert_eq!(
            first_hop(now + Duration::from_secs(5000), now, Duration::from_secs(5000)),
            (900, true),
            "hop ≤ 900 s"
        );
        let mut out = OutgoingMessage::new("b");
        mark(&mut out, now + Duration::from_secs(7));
        let received = ReceivedMessage {
            message_id: "m".into(),
            receipt_handle: "h".into(),
            body: "b".into(),
            attributes: out.attributes.clone(),
            system_attributes: [("MessageGroupId".to_string(), "tenant-1".to_string())].into_iter().collect(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        };
        let left = remaining(&received, now).unwrap();
        assert!(left > Duration::from_millis(6900) && left <= Duration::from_secs(7));
        let next = next_hop(&received, left, hop);
        assert_eq!((next.delay_seconds, next.group_id.as_deref()), (Some(2), Some("tenant-1")));
        assert_eq!(next.attributes, received.attributes);
        assert!(remaining(&received, now + Duration::from_secs(8)).is_none());
        let mut bad = received.clone();
        bad.attributes.insert(DELIVER_AT.into(), AttributeValue::string("soon"));
        assert!(deliver_at(&bad).is_none());
        assert!(refused(&bad, now).is_some_and(|f| f.error.contains(DELIVER_AT)), "named in the failure");
        assert!(refused(&received, now).is_none());
    }

    fn with_due(value: AttributeValue) -> ReceivedMessage {
        ReceivedMessage {
            message_id: "m".into(),
            receipt_handle: "h".into(),
            body: "b".into(),
            attributes: [(DELIVER_AT.to_string(), value)].into_iter().collect(),
            system_attributes: Default::default(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        }
    }

    #[test]
    fn due_times_beyond_the_horizon_or_malformed_are_refused() {
        let now = SystemTime::now();
        for v in ["18446744073709551615", "-5", "1.5e12", "", "1.", ".5", "0x10", "١٢٣", "NaN", "+5"] {
            let m = with_due(AttributeValue::number(v));
            assert!(due_time(&m, now).is_err(), "{v:?}");
            assert!(remaining(&m, now).is_none(), "{v:?} does not hop");
        }
        let year_and_more = epoch_millis(now + MAX_AHEAD + CLOCK_SLACK + Duration::from_secs(60));
        assert!(due_time(&with_due(AttributeValue::number(year_and_more)), now).is_err());
        let binary = with_due(AttributeValue::binary(vec![1, 2]));
        assert!(due_time(&binary, now).unwrap_err().to_string().contains("Binary"));
        let decimal = epoch_millis(now) + 5000;
        let m = with_due(AttributeValue::number(format!("{decimal}.001")));
        assert_eq!(due_time(&m, now).unwrap(), Some(UNIX_EPOCH + Duration::from_millis(decimal + 1)), "rounded up");
        assert!(check_ahead(now + Duration::from_secs(400 * 86_400), now)
            .unwrap_err()
            .to_string()
            .contains("400 days"));
        assert_eq!(epoch_millis(UNIX_EPOCH + Duration::from_secs(u64::MAX / 2)), u64::MAX, "saturates");
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_text_never_panics_and_accepts_only_due_times(v in "\\PC{0,30}|[0-9]{0,25}(\\.[0-9]{0,5})?") {
            let now = SystemTime::now();
            if let Ok(Some(when)) = due_time(&with_due(AttributeValue::string(v.clone())), now) {
                proptest::prop_assert!(when <= now + MAX_AHEAD + CLOCK_SLACK);
                let (whole, _) = v.trim().split_once('.').unwrap_or((v.trim(), ""));
                proptest::prop_assert!(whole.bytes().all(|b| b.is_ascii_digit()));
            }
            let _ = parse_due_time(&v);
        }

        #[test]
        fn marked_due_times_read_back(ahead_ms in 0u64..=MAX_AHEAD.as_millis() as u64) {
            let now = SystemTime::now();
            let when = UNIX_EPOCH + Duration::from_millis(epoch_millis(now) + ahead_ms);
            let mut out = OutgoingMessage::new("b");
            mark(&mut out, when);
            let m = with_due(out.attributes[DELIVER_AT].clone());
            proptest::prop_assert_eq!(due_time(&m, now).unwrap(), Some(when));
            proptest::prop_assert!(check_ahead(when, now).is_ok());
        }

        #[test]
        fn whole_milliseconds_round_trip(ms in proptest::num::u64::ANY) {
            match parse_due_time(&ms.to_string()) {
                Ok(t) => proptest::prop_assert_eq!(epoch_millis(t), ms),
                Err(e) => proptest::prop_assert!(e.to_string().contains(DELIVER_AT)),
            }
        }

        #[test]
        fn hops_stay_within_sqs_delays(ahead_s in proptest::num::u64::ANY, hop_s in proptest::num::u64::ANY) {
            let now = SystemTime::now();
            let when = now.checked_add(Duration::from_secs(ahead_s)).unwrap_or(now);
            let (delay, _) = first_hop(when, now, Duration::from_secs(hop_s));
            proptest::prop_assert!(delay <= crate::limits::MAX_DELAY_SECONDS);
            let m = with_due(AttributeValue::number(1));
            let next = next_hop(&m, Duration::from_secs(ahead_s), Duration::from_secs(hop_s));
            proptest::prop_assert!(next.delay_seconds.is_some_and(|d| (1..=crate::limits::MAX_DELAY_SECONDS).contains(&d)));
        }
    }
}
