//! The claim and completion rules: how the processor uses an idempotency store around a
//! handler.
//!
//! It owns the steps the [`processor`](crate::processor) takes for one message with
//! idempotency on: find its key ([`idem_key`]; none: run unguarded, or a permanent failure
//! when a key is required), claim it (`INPROGRESS` until the lease ends; a completed key is a
//! duplicate, another payload under the same key a key reuse, a key held elsewhere a retry when
//! that claim lapses, a store error fail-open or a retryable failure), and record the result
//! ([`finish`]: `COMPLETED`, or the record deleted so a retry can claim it). It does not run
//! handlers or decide outcomes; the stores and the key rules are in the parent module.

use std::time::Duration;

use super::{Claim, CountKind, Idempotency, Lease, Record, Status};
use crate::message::{Message, ReceivedMessage};
use crate::outcome::{Failure, FailureKind};

/// What an idempotency claim allows.
pub(crate) enum Claimed {
    /// The key is ours: run the handler, then [`finish`].
    Run(Record),
    /// No claim, by choice (fail-open after a store error).
    Unguarded,
    /// The key was completed before.
    Duplicate,
}

/// A message's idempotency key and the hash of its payload (the record's `validation`).
pub(crate) struct Identity {
    pub(crate) key: String,
    pub(crate) payload_hash: String,
}

/// The message's identity; `None` runs it unguarded (Powertools' default when no key is found).
pub(crate) fn idem_key<T>(idem: &Idempotency<T>, msg: &Message<T>) -> Result<Option<Identity>, Failure> {
    match idem.identify(msg) {
        (Some(key), payload_hash) => Ok(Some(Identity { key, payload_hash })),
        (None, _) if idem.require_key => Err(Failure {
            kind: FailureKind::Permanent,
            error: format!("no idempotency key: {:?} yields nothing for this message", idem.key),
            retry_after: None,
        }),
        (None, _) => {
            tracing::warn!(key_source = ?idem.key, "no idempotency key for this message; running it without a claim");
            Ok(None)
        }
    }
}

/// Claim `id`'s key for `raw` in the store: `INPROGRESS` until the lease ends.
pub(crate) async fn claim<T>(
    idem: &Idempotency<T>,
    lease: Lease,
    raw: &ReceivedMessage,
    id: Identity,
) -> Result<Claimed, Failure> {
    let now = std::time::SystemTime::now();
    let record = Record {
        key: id.key,
        status: Status::InProgress,
        expiration: now + idem.ttl,
        in_progress_expiration: Some(super::lease_end(lease, raw)),
        validation: Some(id.payload_hash),
        data: None,
    };
    let failed = |kind, error: String, retry_after| Err(Failure { kind, error, retry_after });
    match idem.store.claim(&record, now).await {
        Ok(Claim::Claimed) => {
            idem.count(CountKind::Claimed);
            idem.local.running(&raw.message_id, Some(&record.key));
            Ok(Claimed::Run(record))
        }
        Ok(Claim::Existing(old)) if old.validation.is_some() && old.validation != record.validation => {
            idem.count(CountKind::Reuse);
            let error = format!("idempotency key {} was used before with a different payload", record.key);
            failed(FailureKind::KeyReuse, error, None)
        }
        Ok(Claim::Existing(old)) if old.status == Status::Completed => {
            idem.count(CountKind::Duplicate);
            Ok(Claimed::Duplicate)
        }
        Ok(Claim::Existing(old)) => {
            idem.count(CountKind::InProgress);
            let until = old.in_progress_expiration.unwrap_or(old.expiration);
            let left = until.duration_since(now).unwrap_or_default();
            let secs = (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1);
            let error = format!("idempotency key {} is held by another consumer for {secs} s more", record.key);
            failed(FailureKind::InProgress, error, Some(Duration::from_secs(secs)))
        }
        Err(e) if idem.fail_open => {
            idem.count(CountKind::StoreError);
            tracing::warn!(error = %e, "idempotency store failed; running the handler without a claim (fail-open)");
            Ok(Claimed::Unguarded)
        }
        Err(e) => {
            idem.count(CountKind::StoreError);
            failed(FailureKind::IdempotencyStore, e.to_string(), None)
        }
    }
}

/// After the handler: `COMPLETED` on success, the record deleted on failure (so a retry can
/// claim it). A failed write is logged and counted; the claim then lapses with the lease.
pub(crate) async fn finish<T>(idem: &Idempotency<T>, raw: &ReceivedMessage, record: Record, ok: bool) {
    idem.local.running(&raw.message_id, None);
    let result = if ok {
        let done = Record {
            status: Status::Completed,
            expiration: std::time::SystemTime::now() + idem.ttl,
            in_progress_expiration: None,
            data: Some("null".into()),
            ..record
        };
        idem.store.complete(&done).await
    } else {
        idem.store.delete(&record.key).await
    };
    if let Err(e) = result {
        idem.count(CountKind::StoreError);
        tracing::warn!(error = %e, completed = ok,
            "could not record the idempotency result; the key stays in progress until its claim lapses");
    }
}
