//! Strict sequences: the FIFO rules of the processor.
//!
//! It owns the order of a FIFO queue's messages: splitting a batch into its message groups
//! ([`fifo_groups`]), running a group (or any strict sequence, e.g. a Lambda FIFO batch) one
//! message at a time ([`Processor::process_sequence`], and [`Sequence`], which yields each
//! decision as soon as it is known so a runtime can settle it at once), and holding the rest of
//! a group behind its first retried message ([`Outcome::Held`]). Whether a queue is FIFO is the
//! [`QueueContext`]'s to say; what each message's outcome is, the engine's.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Drive, Processor};
use crate::context::QueueContext;
use crate::message::ReceivedMessage;
use crate::outcome::{Decision, Outcome};

impl<T: Send + 'static> Processor<T> {
    /// Process messages of one FIFO group (or any strict sequence) in order, one at a time.
    /// After the first message that will be retried, the rest are not attempted and are
    /// [`Outcome::Held`] with its visibility. Dead-lettered messages do not stop the sequence
    /// (their DLQ send is confirmed before the next message starts; a failed send is a retry).
    pub async fn process_sequence(&self, ctx: &QueueContext, messages: Vec<Arc<ReceivedMessage>>) -> Vec<Decision> {
        self.process_sequence_until(ctx, messages, None).await
    }

    /// As [`Processor::process_sequence`], but once `stop` is cancelled no further message is
    /// started: the rest are [`Outcome::Released`] (or held, when an earlier one failed).
    pub async fn process_sequence_until(
        &self,
        ctx: &QueueContext,
        messages: Vec<Arc<ReceivedMessage>>,
        stop: Option<&CancellationToken>,
    ) -> Vec<Decision> {
        let mut seq = Sequence::new(self, ctx, messages, stop, None);
        let mut out = Vec::with_capacity(seq.len());
        while let Some(d) = seq.next().await {
            out.push(d);
        }
        out
    }
}

/// A strict sequence in progress (one FIFO group, or a Lambda FIFO batch): yields one decision
/// at a time, so a runtime can settle each message as soon as its outcome is known.
pub(crate) struct Sequence<'a, T> {
    processor: &'a Processor<T>,
    ctx: &'a QueueContext,
    rest: std::collections::VecDeque<Arc<ReceivedMessage>>,
    blocked: Option<(String, u32)>,
    drive: Drive<'a>,
    /// At `stop`, go on up to the last message on its last allowed receive (see
    /// [`Sequence::run_through_at_stop`]).
    run_through: bool,
}

impl<'a, T: Send + 'static> Sequence<'a, T> {
    /// `stop`: start nothing more (the rest are released). `lease`: cancel the running
    /// handler (a retryable timeout; the rest are held behind it) and start nothing more.
    pub(crate) fn new(
        processor: &'a Processor<T>,
        ctx: &'a QueueContext,
        messages: Vec<Arc<ReceivedMessage>>,
        stop: Option<&'a CancellationToken>,
        lease: Option<&'a CancellationToken>,
    ) -> Self {
        let drive = Drive { stop, lease, started: None };
        Self { processor, ctx, rest: messages.into(), blocked: None, drive, run_through: false }
    }

    /// Tell `started` right before each message's handler starts (after its rate turn).
    #[cfg(feature = "poller")]
    pub(crate) fn on_start(mut self, started: &'a (dyn Fn(&ReceivedMessage) + Send + Sync)) -> Self {
        self.drive.started = Some(started);
        self
    }

    /// On a FIFO queue, releasing a message on its last allowed receive (`receive count ≥
    /// maxReceiveCount`) would let SQS move it to the DLQ without it ever running, and it cannot
    /// be re-sent without losing its place in the group. So at `stop`, the sequence goes on
    /// (in order) up to the last such message, and releases only what comes after it; the
    /// lease still ends it.
    #[cfg(feature = "poller")]
    pub(crate) fn run_through_at_stop(mut self) -> Self {
        self.run_through = true;
        self
    }

    /// Whether `m` or a later message is on its last allowed receive.
    fn last_receive_ahead(&self, m: &ReceivedMessage) -> bool {
        let Some(max) = self.ctx.max_receive_count else { return false };
        m.receive_count() >= max || self.rest.iter().any(|r| r.receive_count() >= max)
    }

    pub(crate) fn len(&self) -> usize {
        self.rest.len()
    }

    pub(crate) async fn next(&mut self) -> Option<Decision> {
        let m = self.rest.pop_front()?;
        let stopped = |t: Option<&CancellationToken>| t.is_some_and(CancellationToken::is_cancelled);
        let mut drive = self.drive;
        if stopped(drive.stop) && self.run_through && self.last_receive_ahead(&m) {
            drive.stop = None;
        }
        let outcome = match &self.blocked {
            Some((behind, visibility)) => Outcome::Held { visibility: *visibility, behind: behind.clone() },
            None if drive.ended() => Outcome::Released,
            None => {
                let outcome = self.processor.process_one_driven(self.ctx, m.clone(), drive).await;
                if let Outcome::Retry { visibility, .. } = &outcome {
                    self.blocked = Some((m.message_id.clone(), *visibility));
                }
                outcome
            }
        };
        Some(Decision { message: m, outcome })
    }
}

/// Split messages into their FIFO groups (by `MessageGroupId`), groups in order of first
/// appearance, each group in input order.
pub(crate) fn fifo_groups<M: std::borrow::Borrow<ReceivedMessage>>(messages: Vec<M>) -> Vec<Vec<M>> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<M>> = HashMap::new();
    for m in messages {
        let g = m.borrow().group_id().unwrap_or("").to_string();
        if !groups.contains_key(&g) {
            order.push(g.clone());
        }
        groups.entry(g).or_default().push(m);
    }
    order.into_iter().filter_map(|g| groups.remove(&g)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn fifo_groups_keep_receive_order() {
        let m = |id: &str, g: &str| ReceivedMessage {
            message_id: id.into(),
            receipt_handle: id.into(),
            body: String::new(),
            attributes: Default::default(),
            system_attributes: [("MessageGroupId".to_string(), g.to_string())].into_iter().collect(),
            received_at: Instant::now(),
            queue_url: None,
        };
        let groups = fifo_groups(vec![m("a1", "A"), m("b1", "B"), m("a2", "A")]);
        let ids: Vec<Vec<&str>> = groups.iter().map(|g| g.iter().map(|m| m.message_id.as_str()).collect()).collect();
        assert_eq!(ids, vec![vec!["a1", "a2"], vec!["b1"]]);
    }
}
