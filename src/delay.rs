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

use crate::message::{AttributeValue, OutgoingMessage, ReceivedMessage};

/// The message attribute carrying the due time (Number, epoch milliseconds).
pub const DELIVER_AT: &str = "sqskit-deliver-at";

/// The longest hop: SQS's maximum `DelaySeconds`.
pub const MAX_HOP: Duration = Duration::from_secs(crate::limits::MAX_DELAY_SECONDS as u64);

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

/// Epoch milliseconds of `t`.
pub fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The due time a received message carries, if any (a malformed value is ignored).
pub fn deliver_at(m: &ReceivedMessage) -> Option<SystemTime> {
    let v = m.attributes.get(DELIVER_AT)?.as_str()?;
    let ms: u64 = v.trim().parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// Whether a received message carries a due time (`sqskit-deliver-at`), due or not.
pub(crate) fn carries_due_time(m: &ReceivedMessage) -> bool {
    m.attributes.contains_key(DELIVER_AT)
}

/// Time left until a received message is due (`None`: due now, or no due time).
pub fn remaining(m: &ReceivedMessage, now: SystemTime) -> Option<Duration> {
    deliver_at(m)?.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// Add the due-time attribute to `msg`.
pub fn mark(msg: &mut OutgoingMessage, when: SystemTime) {
    msg.attributes.insert(DELIVER_AT.to_string(), AttributeValue::number(epoch_millis(when).to_string()));
}

/// The next hop of a received message due in `remaining`: the same body, attributes (the due
/// time included), `AWSTraceHeader` and fair-queue group, delayed by `min(remaining, hop)`
/// (whole seconds, at least one).
pub fn next_hop(m: &ReceivedMessage, remaining: Duration, hop: Duration) -> OutgoingMessage {
    let mut out = OutgoingMessage::new(m.body.clone());
    out.attributes = m.attributes.clone();
    out.trace_header = crate::trace::received_trace_header(m);
    out.group_id = m.group_id().map(str::to_string);
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
    }
}
