//! SQS service limits and the batching arithmetic.
//!
//! Owns the numbers SQS enforces (entries per call, payload size, wait time,
//! delay, visibility) and the pure functions that validate against them and
//! split a list of entries into calls. It performs no I/O.

use crate::error::Error;

/// Maximum entries in one `SendMessageBatch` / `DeleteMessageBatch` /
/// `ChangeMessageVisibilityBatch` call, and messages per `ReceiveMessage`.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// Maximum size of one message, and of the sum of a batch's payloads, in bytes
/// (1 MiB). SQS counts the body plus each message attribute's name, data type and value.
pub const MAX_PAYLOAD_BYTES: usize = 1_048_576;
/// Maximum long-poll wait (`WaitTimeSeconds`).
pub const MAX_WAIT_SECONDS: u32 = 20;
/// Maximum per-message delay (`DelaySeconds`).
pub const MAX_DELAY_SECONDS: u32 = 900;
/// Maximum visibility timeout: 12 hours, counted from the receipt of the message.
pub const MAX_VISIBILITY_SECONDS: u32 = 43_200;
/// Maximum number of message attributes on one message.
pub const MAX_MESSAGE_ATTRIBUTES: usize = 10;

/// Check that `value` lies in `0..=max` (or `min..=max`), naming the parameter when it does not.
///
/// # Errors
/// [`Error::Limit`] naming `what`, the value and the allowed range.
///
/// # Example
/// ```
/// use sqskit::limits::{check_range, MAX_WAIT_SECONDS};
/// assert!(check_range("wait_time_seconds", 20, 0, MAX_WAIT_SECONDS).is_ok());
/// let err = check_range("wait_time_seconds", 21, 0, MAX_WAIT_SECONDS).unwrap_err();
/// assert!(err.to_string().contains("wait_time_seconds"));
/// ```
pub fn check_range(what: &'static str, value: u64, min: u64, max: impl Into<u64>) -> Result<(), Error> {
    let max = max.into();
    if value < min || value > max {
        return Err(Error::Limit { what, value, min, max });
    }
    Ok(())
}

/// Split items into consecutive chunks of at most [`MAX_BATCH_ENTRIES`] entries whose
/// sizes add up to at most [`MAX_PAYLOAD_BYTES`]. Order is preserved.
///
/// `sizes[i]` is the payload size of item `i`; every size must already be
/// `<= MAX_PAYLOAD_BYTES` (check with [`check_message_size`] first). Returns the
/// index ranges of the chunks.
///
/// # Example
/// ```
/// use sqskit::limits::chunk_by_limits;
/// // 25 small entries -> 10 + 10 + 5
/// let chunks = chunk_by_limits(&[100; 25]);
/// assert_eq!(chunks, vec![0..10, 10..20, 20..25]);
/// // 10 entries of 200 KiB -> 5 per call
/// let chunks = chunk_by_limits(&[200 * 1024; 10]);
/// assert_eq!(chunks, vec![0..5, 5..10]);
/// ```
pub fn chunk_by_limits(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    chunk_with(sizes, MAX_BATCH_ENTRIES, MAX_PAYLOAD_BYTES)
}

pub(crate) fn chunk_with(sizes: &[usize], max_entries: usize, max_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, &size) in sizes.iter().enumerate() {
        let full = i - start == max_entries || (i > start && bytes + size > max_bytes);
        if full {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// Reject a single message whose payload is over [`MAX_PAYLOAD_BYTES`].
///
/// # Errors
/// [`Error::MessageTooLarge`] with the size and the limit.
pub fn check_message_size(index: usize, size: usize) -> Result<(), Error> {
    if size > MAX_PAYLOAD_BYTES {
        return Err(Error::MessageTooLarge { index, size, limit: MAX_PAYLOAD_BYTES });
    }
    Ok(())
}

/// Clamp a visibility timeout so that the total since `elapsed_since_receipt` seconds ago
/// stays within the 12-hour limit.
pub fn clamp_visibility(seconds: u64, elapsed_since_receipt: u64) -> u32 {
    let room = u64::from(MAX_VISIBILITY_SECONDS).saturating_sub(elapsed_since_receipt);
    seconds.min(room) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_gives_no_chunks() {
        assert!(chunk_by_limits(&[]).is_empty());
    }

    #[test]
    fn splits_by_entry_count() {
        assert_eq!(chunk_by_limits(&[1; 10]), vec![0..10]);
        assert_eq!(chunk_by_limits(&[1; 11]), vec![0..10, 10..11]);
        assert_eq!(chunk_by_limits(&[1; 25]).len(), 3);
    }

    #[test]
    fn splits_by_payload_bytes() {
        // 4 x 300 KiB = 1200 KiB > 1 MiB: 3 fit, the 4th starts a new call
        let c = chunk_by_limits(&[300 * 1024; 4]);
        assert_eq!(c, vec![0..3, 3..4]);
        // exactly 1 MiB in one call is allowed
        let c = chunk_by_limits(&[MAX_PAYLOAD_BYTES / 2, MAX_PAYLOAD_BYTES / 2]);
        assert_eq!(c, vec![0..2]);
        // one byte over splits
        let c = chunk_by_limits(&[MAX_PAYLOAD_BYTES / 2, MAX_PAYLOAD_BYTES / 2 + 1]);
        assert_eq!(c, vec![0..1, 1..2]);
    }

    #[test]
    fn a_full_size_message_gets_its_own_call() {
        let c = chunk_by_limits(&[10, MAX_PAYLOAD_BYTES, 10]);
        assert_eq!(c, vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn every_chunk_respects_both_limits() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let sizes: Vec<usize> = (0..rng.usize(0..60)).map(|_| rng.usize(1..=MAX_PAYLOAD_BYTES / 3)).collect();
            let chunks = chunk_by_limits(&sizes);
            let mut next = 0;
            for r in &chunks {
                assert_eq!(r.start, next, "chunks are contiguous and ordered");
                next = r.end;
                assert!(r.len() <= MAX_BATCH_ENTRIES && !r.is_empty());
                assert!(sizes[r.clone()].iter().sum::<usize>() <= MAX_PAYLOAD_BYTES);
            }
            assert_eq!(next, sizes.len());
        }
    }

    #[test]
    fn oversized_message_is_rejected_with_size_and_limit() {
        let err = check_message_size(3, MAX_PAYLOAD_BYTES + 1).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("1048577"), "{text}");
        assert!(text.contains("1048576"), "{text}");
        assert!(check_message_size(0, MAX_PAYLOAD_BYTES).is_ok());
    }

    #[test]
    fn range_checks_name_the_parameter() {
        let err = check_range("delay_seconds", 901, 0, MAX_DELAY_SECONDS).unwrap_err();
        assert!(err.to_string().contains("delay_seconds"));
        assert!(check_range("max_messages", 0, 1, 10u32).is_err());
        assert!(check_range("max_messages", 10, 1, 10u32).is_ok());
    }

    #[test]
    fn visibility_is_clamped_to_twelve_hours_from_receipt() {
        assert_eq!(clamp_visibility(100, 0), 100);
        assert_eq!(clamp_visibility(50_000, 0), MAX_VISIBILITY_SECONDS);
        assert_eq!(clamp_visibility(43_200, 200), 43_000);
        assert_eq!(clamp_visibility(10, 50_000), 0);
    }
}
