//! Whole-batch handlers: one [`BatchHandler`](super::BatchHandler) call for a received batch.
//!
//! It owns the batch path of the processor: messages not due yet are deferred first, claim
//! checks are resolved and bodies decoded per message (a failure there is that message's alone),
//! idempotency keys are claimed for the whole batch before the call (a key met twice in one
//! batch is looked at again after it), the handler is called once, and its results are
//! concluded message by message with FIFO groups held after a failure. The rules for each
//! result (verdict, dead-lettering, logs, metrics) are the engine's, shared with one-message
//! handlers.

use std::collections::HashMap;
use std::sync::Arc;

use std::panic::AssertUnwindSafe;

use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Done, Drive, Processor};
use crate::context::QueueContext;
use crate::idempotency::{claim, finish, idem_key, Claimed, Identity, LocalHold, Record};
use crate::message::{Message, ReceivedMessage};
use crate::outcome::{Decision, Failure, FailureKind, Outcome};

impl<T: Send + 'static> Processor<T> {
    /// A [`BatchHandler`] over `messages` (in order): one call for every decodable message,
    /// then the same rules as one-message handlers, with FIFO groups held after a failure.
    /// `stop` or `lease` fired before the call (while waiting for the rate turns too): nothing
    /// is started (all released). `lease` cancelled while the handler runs: the handler is
    /// dropped and every message times out (retryable). A panic outside the handler is every
    /// message's retryable failure.
    pub(crate) async fn process_whole(
        &self,
        ctx: &QueueContext,
        messages: Vec<Arc<ReceivedMessage>>,
        drive: Drive<'_>,
    ) -> Vec<Decision> {
        let all = messages.clone();
        match AssertUnwindSafe(self.process_whole_steps(ctx, messages, drive)).catch_unwind().await {
            Ok(decisions) => decisions,
            Err(panic) => {
                let text = super::panic_text(&panic);
                drop(panic);
                let mut out = Vec::with_capacity(all.len());
                for m in all {
                    let span = crate::span::message_span(&m, ctx.queue_name());
                    let outcome = self.panicked(ctx, &m, text.clone()).instrument(span).await;
                    out.push(Decision { message: m, outcome });
                }
                out
            }
        }
    }

    async fn process_whole_steps(
        &self,
        ctx: &QueueContext,
        messages: Vec<Arc<ReceivedMessage>>,
        drive: Drive<'_>,
    ) -> Vec<Decision> {
        let released = |messages: Vec<Arc<ReceivedMessage>>| {
            messages.into_iter().map(|message| Decision { message, outcome: Outcome::Released })
        };
        if drive.ended() {
            return released(messages).collect();
        }
        let mut out = Vec::with_capacity(messages.len());
        // messages not due yet go on to their next hop; the handler gets the rest
        let mut due = Vec::with_capacity(messages.len());
        for m in messages {
            // (a span only for messages that may be deferred: the others get theirs when concluded)
            let deferred = if crate::delay::carries_due_time(&m) {
                self.defer(ctx, &m).instrument(crate::span::message_span(&m, ctx.queue_name())).await
            } else {
                None
            };
            match deferred {
                Some(outcome) => out.push(Decision { message: m, outcome }),
                None => due.push(m),
            }
        }
        let messages = due;
        if messages.is_empty() {
            return out;
        }
        // a batch call starts every message in it: each takes its turn under the limits first
        for _ in &messages {
            if !drive.turn(ctx).await {
                out.extend(released(messages));
                return out;
            }
        }
        for m in &messages {
            drive.start(m);
        }
        let results = self.run_whole(ctx, &messages, drive.lease).await;
        let mut blocked: HashMap<String, (String, u32)> = HashMap::new();
        for (m, result) in messages.into_iter().zip(results) {
            let group = if ctx.fifo { m.group_id().map(str::to_string) } else { None };
            let outcome = match group.as_ref().and_then(|g| blocked.get(g)) {
                Some((behind, visibility)) => Outcome::Held { visibility: *visibility, behind: behind.clone() },
                None => {
                    let span = crate::span::message_span(&m, ctx.queue_name());
                    let outcome = self.conclude(ctx, &m, result).instrument(span).await;
                    if let (Some(g), Outcome::Retry { visibility, .. }) = (group, &outcome) {
                        blocked.insert(g, (m.message_id.clone(), *visibility));
                    }
                    outcome
                }
            };
            out.push(Decision { message: m, outcome });
        }
        out
    }

    /// One call of the batch handler; one result per message (decoding failures included).
    /// With idempotency, every key is claimed before the call (local holds taken in key order,
    /// so two batches cannot wait on each other); a key met twice in one batch is looked at
    /// again after the call (a duplicate when the first one completed).
    async fn run_whole(
        &self,
        ctx: &QueueContext,
        messages: &[Arc<ReceivedMessage>],
        cancel: Option<&CancellationToken>,
    ) -> Vec<Result<Done, Failure>> {
        let lease_kind = ctx.lease;
        if !self.handler.is_batch() {
            let error = "not a batch handler".to_string();
            return vec![Err(Failure { kind: FailureKind::Retryable, error, retry_after: None }); messages.len()];
        }
        let mut results: Vec<Result<Done, Failure>> = vec![Ok(Done::Handled); messages.len()];
        // what each message gives the handler: usually one message, one per record of an S3
        // notification, none for S3's test event
        let mut batch: Vec<Option<Vec<Message<T>>>> = Vec::with_capacity(messages.len());
        // claim checks resolved first (concurrently); the handler and the claims see real bodies
        let resolved: Vec<Result<Arc<ReceivedMessage>, Failure>> =
            futures::stream::iter(messages.iter().cloned().map(|m| self.resolve(Some(ctx), m)))
                .buffered(self.config.concurrency.max(1))
                .collect()
                .await;
        let mut real: Vec<Arc<ReceivedMessage>> = Vec::with_capacity(messages.len());
        for (i, r) in resolved.into_iter().enumerate() {
            match r {
                Ok(m) => real.push(m),
                Err(f) => {
                    results[i] = Err(f);
                    real.push(messages[i].clone());
                }
            }
        }
        let messages = &real[..];
        for (i, raw) in messages.iter().enumerate() {
            if results[i].is_err() {
                batch.push(None);
                continue;
            }
            match self.open(raw) {
                Ok(msgs) => batch.push(Some(msgs)),
                Err(failure) => {
                    results[i] = Err(failure);
                    batch.push(None);
                }
            }
        }

        // idempotency: claim first occurrences, defer repeats within the batch
        let mut claimed: Vec<(usize, Record)> = Vec::new();
        let mut deferred: Vec<(usize, Identity)> = Vec::new();
        let mut holds: Vec<LocalHold> = Vec::new();
        if let Some(idem) = &self.idempotency {
            let mut first: HashMap<String, (usize, String)> = HashMap::new();
            for i in 0..batch.len() {
                // a message's key is its first payload's; nothing to run, no claim
                let Some(msg) = batch[i].as_ref().and_then(|m| m.first()) else { continue };
                match idem_key(idem, msg) {
                    Err(f) => {
                        results[i] = Err(f);
                        batch[i] = None;
                    }
                    Ok(None) => {}
                    Ok(Some(id)) if first.contains_key(&id.key) => {
                        deferred.push((i, id));
                        batch[i] = None;
                    }
                    Ok(Some(Identity { key, payload_hash })) => {
                        first.insert(key, (i, payload_hash));
                    }
                }
            }
            let mut keys: Vec<(String, (usize, String))> = first.into_iter().collect();
            keys.sort();
            for (k, _) in &keys {
                holds.push(idem.local.hold(k).await);
            }
            let claims = keys.into_iter().map(|(key, (i, payload_hash))| async move {
                (i, claim(idem, lease_kind, &messages[i], Identity { key, payload_hash }).await)
            });
            for (i, c) in futures::future::join_all(claims).await {
                match c {
                    Ok(Claimed::Run(record)) => claimed.push((i, record)),
                    Ok(Claimed::Unguarded) => {}
                    Ok(Claimed::Duplicate) => {
                        results[i] = Ok(Done::Duplicate);
                        batch[i] = None;
                    }
                    Err(f) => {
                        results[i] = Err(f);
                        batch[i] = None;
                    }
                }
            }
        }

        let (positions, batch): (Vec<usize>, Vec<Message<T>>) = batch
            .into_iter()
            .enumerate()
            .filter_map(|(i, m)| m.map(|m| m.into_iter().map(move |m| (i, m))))
            .flatten()
            .unzip();
        let n = batch.len();
        if n > 0 {
            let outcome: Vec<Result<(), Failure>> =
                match self.guarded("batch handler", self.handler.call_batch(batch), cancel).await {
                    Ok(list) if list.len() == n => list,
                    Ok(list) => {
                        let error = format!("the batch handler returned {} results for {n} messages", list.len());
                        vec![Err(Failure { kind: FailureKind::Retryable, error, retry_after: None }); n]
                    }
                    Err(failure) => vec![Err(failure); n],
                };
            // a message's result is its first failure (S3: one payload per record), else done
            for (pos, r) in positions.into_iter().zip(outcome) {
                if let (Ok(_), Err(f)) = (&results[pos], r) {
                    results[pos] = Err(f);
                }
            }
        }

        let Some(idem) = &self.idempotency else { return results };
        let finishing = claimed.into_iter().map(|(i, record)| {
            let ok = results[i].is_ok();
            finish(idem, &messages[i], record, ok)
        });
        futures::future::join_all(finishing).await;
        drop(holds);
        for (i, id) in deferred {
            let _hold = idem.local.hold(&id.key).await;
            results[i] = match claim(idem, lease_kind, &messages[i], id).await {
                Ok(Claimed::Duplicate) => Ok(Done::Duplicate),
                Ok(Claimed::Run(record)) => {
                    // the first message with this key failed and released it: retry this one too
                    finish(idem, &messages[i], record, false).await;
                    let error = "an earlier message of this batch with the same idempotency key failed".to_string();
                    Err(Failure { kind: FailureKind::Retryable, error, retry_after: None })
                }
                Ok(Claimed::Unguarded) => {
                    let error = "the idempotency store failed; not running a repeated key unguarded".to_string();
                    Err(Failure { kind: FailureKind::IdempotencyStore, error, retry_after: None })
                }
                Err(f) => Err(f),
            };
        }
        results
    }
}
