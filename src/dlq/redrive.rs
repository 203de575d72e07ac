//! Client-side redrive: move dead letters back to their source queue, filtered and paced.
//!
//! It owns [`Redriver`] and the loop behind `sqskit redrive` ([`redrive`]): which messages move
//! ([`RedriveFilter`]: a JSON Pointer into the body, or the error kind), where to (the given
//! queue, else each message's source queue), how fast ([`RedriveOptions`]), and the rule that a
//! message is deleted from the DLQ only after it was sent (an interruption loses nothing; a
//! message may be sent twice). Messages a run leaves in the DLQ are kept invisible while it goes
//! on and made visible again at the end. SQS's own move tasks are in `move_task.rs`.

use super::{error_kind, origin, redrive_source, source_queue, DlqError, Origin, MAX_RECEIVES_KIND};
use crate::message::ReceivedMessage;
use crate::settle::dead_letter_attributes as dl;

/// The message to send back to the source queue for a dead letter: body and attributes without
/// the processor's error attributes, its `AWSTraceHeader` kept; on a FIFO target the group is kept and the DLQ message id
/// is the deduplication id (so a rerun within 5 minutes does not duplicate).
pub fn redriven_message(m: &ReceivedMessage, fifo_target: bool) -> crate::OutgoingMessage {
    let mut out = crate::OutgoingMessage::new(m.body.clone());
    out.attributes = m
        .attributes
        .iter()
        .filter(|(k, _)| !dl::ALL.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.trace_header = crate::trace::received_trace_header(m);
    if fifo_target {
        out.group_id = Some(m.group_id().unwrap_or("sqskit-redrive").to_string());
        out.dedup_id = Some(m.message_id.clone());
    }
    out
}

/// Which DLQ messages a client-side [`redrive`] moves; parsed from the text of
/// `sqskit redrive --filter` with [`str::parse`].
///
/// - `/json/pointer=value`: the body, parsed as JSON, holds `value` at the
///   [JSON Pointer](https://www.rfc-editor.org/rfc/rfc6901) (the pointer ends at the first `=`).
///   `value` is compared as a JSON literal when it parses as one (`42`, `true`, `"42"`,
///   `{"a":1}`), else as a string (`failed` is the same as `"failed"`); numbers compare by value
///   (`1` matches `1.0`). A body that is not JSON, or has nothing at the pointer, does not match.
///   The body is the one in the DLQ: a claim-checked message is matched as its S3 pointer.
/// - `kind=<error kind>`: the error kind the processor recorded when it dead-lettered the message
///   ([`FailureKind::as_str`](crate::FailureKind::as_str): `permanent`, `undecodable`, ...), or
///   `max-receives` for a message without one (moved by SQS's redrive policy).
/// - `source=<queue name>`: the message's [`source_queue`].
/// - `id=<message id>[,<message id>...]`: one of these DLQ message ids.
/// - `origin=<origin>[,<origin>...]`: its [`Origin`]: `sqs` (moved by SQS's redrive policy),
///   `sqskit` (dead-lettered by sqskit), `none` (neither recorded).
///
/// # Example
/// ```
/// use sqskit::dlq::RedriveFilter;
/// let f: RedriveFilter = "/order/status=failed".parse()?;
/// assert_eq!(f, RedriveFilter::Pointer { pointer: "/order/status".into(), value: "failed".into() });
/// let k: RedriveFilter = "kind=undecodable".parse()?;
/// assert_eq!(k.to_string(), "kind=undecodable");
/// assert!("kind=typo".parse::<RedriveFilter>().is_err());
/// # Ok::<(), sqskit::dlq::DlqError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RedriveFilter {
    /// The body parsed as JSON has `value` at `pointer`.
    Pointer {
        /// An RFC 6901 JSON Pointer (`/a/0/b`, `~1` for `/`, `~0` for `~`).
        pointer: String,
        /// The value to find there.
        value: serde_json::Value,
    },
    /// The dead letter's error kind (see [`error_kind`]).
    Kind(String),
    /// The dead letter's source queue (see [`source_queue`]).
    Source(String),
    /// One of these DLQ message ids.
    MessageIds(std::collections::BTreeSet<String>),
    /// The dead letter's origin (see [`origin`]) is one of these.
    Origins(std::collections::BTreeSet<Origin>),
}

impl RedriveFilter {
    /// Whether `m` passes this filter (the body is parsed for a pointer; never logged).
    pub fn matches(&self, m: &ReceivedMessage) -> bool {
        match self {
            RedriveFilter::Kind(kind) => error_kind(m) == *kind,
            RedriveFilter::Source(name) => source_queue(m).as_deref() == Some(name.as_str()),
            RedriveFilter::MessageIds(ids) => ids.contains(&m.message_id),
            RedriveFilter::Origins(origins) => origins.contains(&origin(m)),
            RedriveFilter::Pointer { pointer, value } => serde_json::from_str::<serde_json::Value>(&m.body)
                .ok()
                .and_then(|body| body.pointer(pointer).map(|found| json_equal(found, value)))
                .unwrap_or(false),
        }
    }
}

/// JSON equality, with numbers compared by value (`1` equals `1.0`).
fn json_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Number(x), serde_json::Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        _ => a == b,
    }
}

impl std::str::FromStr for RedriveFilter {
    type Err = DlqError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| DlqError::InvalidFilter { expr: s.to_string(), reason };
        if let Some(kind) = s.strip_prefix("kind=") {
            let known = || crate::FailureKind::ALL.iter().map(|k| k.as_str()).chain([MAX_RECEIVES_KIND]);
            if known().any(|k| k == kind) {
                return Ok(RedriveFilter::Kind(kind.to_string()));
            }
            return Err(invalid(format!(
                "unknown error kind {kind:?} (one of: {})",
                known().collect::<Vec<_>>().join(", ")
            )));
        }
        if let Some(name) = s.strip_prefix("source=").filter(|n| !n.is_empty()) {
            return Ok(RedriveFilter::Source(name.to_string()));
        }
        if let Some(ids) = s.strip_prefix("id=") {
            let ids: std::collections::BTreeSet<String> =
                ids.split(',').map(str::trim).filter(|i| !i.is_empty()).map(str::to_string).collect();
            return match ids.is_empty() {
                true => Err(invalid("no message id after `id=`".into())),
                false => Ok(RedriveFilter::MessageIds(ids)),
            };
        }
        if let Some(names) = s.strip_prefix("origin=") {
            let mut origins = std::collections::BTreeSet::new();
            for name in names.split(',').map(str::trim) {
                let Some(o) = Origin::ALL.into_iter().find(|o| o.as_str() == name) else {
                    return Err(invalid(format!("unknown origin {name:?} (one of: sqs, sqskit, none)")));
                };
                origins.insert(o);
            }
            return Ok(RedriveFilter::Origins(origins));
        }
        if !s.starts_with('/') {
            return Err(invalid(
                "expected /json/pointer=value or kind=<error kind> (or source=<queue>, id=<id>,<id>..., origin=<origin>)"
                    .into(),
            ));
        }
        let Some((pointer, value)) = s.split_once('=') else {
            return Err(invalid("no `=value` after the JSON pointer (expected /json/pointer=value)".into()));
        };
        let mut chars = pointer.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(invalid(format!("{pointer:?} is not a JSON pointer: `~` must be followed by 0 or 1")));
            }
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        Ok(RedriveFilter::Pointer { pointer: pointer.to_string(), value })
    }
}

impl std::fmt::Display for RedriveFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedriveFilter::Kind(kind) => write!(f, "kind={kind}"),
            RedriveFilter::Source(name) => write!(f, "source={name}"),
            RedriveFilter::MessageIds(ids) => write!(f, "id={}", ids.iter().cloned().collect::<Vec<_>>().join(",")),
            RedriveFilter::Origins(origins) => {
                write!(f, "origin={}", origins.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(","))
            }
            RedriveFilter::Pointer { pointer, value } => write!(f, "{pointer}={value}"),
        }
    }
}

/// A message a dry run would move.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PlannedMove {
    /// The DLQ message id.
    pub message_id: String,
    /// Where it was dead-lettered from, when known (see [`source_queue`]).
    pub source_queue: Option<String>,
    /// The queue it would be sent to (name).
    pub target: String,
    /// Its error kind (see [`error_kind`]).
    pub error_kind: String,
    /// How it came to the DLQ (see [`origin`]).
    pub origin: Origin,
}

/// What a redrive did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RedriveReport {
    /// Messages sent back and deleted from the DLQ.
    pub moved: usize,
    /// Messages that could not be moved (left in the DLQ), with the reason.
    pub failed: Vec<String>,
    /// Messages examined and left in the DLQ because they did not match the filters.
    pub skipped: usize,
    /// Whether this was a dry run (nothing sent, nothing deleted).
    pub dry_run: bool,
    /// Dry run: the messages that would move, in the order examined.
    pub would_move: Vec<PlannedMove>,
    /// Ids of the messages left in the DLQ because nothing says where they came from (no
    /// `DeadLetterQueueSourceArn`, no `sqskit-source-queue`, and the DLQ has no single source
    /// queue); each is also in `failed`. A run with a target queue has none.
    pub no_source: Vec<String>,
}

/// How [`redrive`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedriveOptions {
    /// Move at most this many messages (`None`: all). Counts moved messages (dry run: messages
    /// that would move), not messages examined.
    pub max: Option<usize>,
    /// At most this many messages per second (`None`: as fast as SQS goes).
    pub rate: Option<f64>,
    /// How long a received DLQ message stays invisible while it is being moved.
    pub hold: std::time::Duration,
    /// How long to wait for DLQ messages in flight (e.g. held by an interrupted run) to come back.
    pub in_flight_patience: std::time::Duration,
    /// Move only the messages that pass every one of these filters (empty: all).
    pub filters: Vec<RedriveFilter>,
    /// Examine and report what would move, but send and delete nothing.
    pub dry_run: bool,
    /// How long the messages a run leaves in the DLQ (not matching, not moved, or in a dry run)
    /// stay invisible at a time; the run renews it while it goes on and makes them visible again
    /// at the end. After an interrupted run they come back within this time.
    pub keep_hold: std::time::Duration,
}

impl Default for RedriveOptions {
    fn default() -> Self {
        Self {
            max: None,
            rate: None,
            hold: std::time::Duration::from_secs(10),
            in_flight_patience: std::time::Duration::from_secs(30),
            filters: Vec::new(),
            dry_run: false,
            keep_hold: std::time::Duration::from_secs(60),
        }
    }
}

impl RedriveOptions {
    /// Move at most `max` messages.
    pub fn with_max(mut self, max: Option<usize>) -> Self {
        self.max = max;
        self
    }
    /// At most `rate` messages per second.
    pub fn with_rate(mut self, rate: Option<f64>) -> Self {
        self.rate = rate;
        self
    }
    /// Add a filter: a message moves only when it passes every filter added.
    ///
    /// # Example
    /// ```
    /// let options = sqskit::dlq::RedriveOptions::default()
    ///     .with_filter("kind=permanent".parse()?)
    ///     .with_dry_run(true);
    /// assert_eq!(options.filters.len(), 1);
    /// # Ok::<(), sqskit::dlq::DlqError>(())
    /// ```
    pub fn with_filter(mut self, filter: RedriveFilter) -> Self {
        self.filters.push(filter);
        self
    }
    /// Report what would move without sending or deleting anything.
    pub fn with_dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }
}

/// Move messages from `dlq` back to `to`, or to each message's source queue: the loop behind
/// `sqskit redrive`. Each message is deleted from the DLQ only after it was sent, so
/// interrupting and rerunning loses nothing (a message sent just before an interruption may be
/// sent twice). Waits up to `in_flight_patience` for messages held by an interrupted run.
/// `progress` is called with the number moved so far (dry run: the number that would move).
///
/// Each DLQ message is examined once per run: those the run leaves in the DLQ (not matching the
/// filters, failing to move, beyond `max`, or all of them in a dry run) are kept invisible
/// while the run goes on (renewed every `keep_hold / 2`) and made visible again at the end,
/// also when the run stops with an error. A message that comes back anyway (its hold lapsed) is
/// recognised by its id and held again without being examined or sent a second time. So the
/// run ends once every message has been seen; on a FIFO DLQ, messages queued behind a held one
/// in the same message group are not received in that run. A run stops early when every move
/// of a batch failed.
///
/// # Errors
/// [`DlqError::Sqs`]: [`crate::Error::Invalid`] for a rate that is not above 0; a failed receive
/// or delete on the DLQ.
pub async fn redrive(
    dlq: &crate::Queue,
    to: Option<crate::Queue>,
    options: &RedriveOptions,
    mut progress: impl FnMut(usize),
) -> Result<RedriveReport, DlqError> {
    if let Some(rate) = options.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            let reason = format!("must be above 0 (got {rate})");
            return Err(crate::Error::Invalid { what: "rate", reason }.into());
        }
    }
    let mut redriver = Redriver::new(dlq.clone(), to)
        .await
        .with_filters(options.filters.clone())
        .with_dry_run(options.dry_run)
        .with_keep_hold(options.keep_hold);
    let mut report = RedriveReport { dry_run: options.dry_run, ..Default::default() };
    let result = redrive_loop(&mut redriver, options, &mut report, &mut progress).await;
    redriver.release().await;
    result.map(|()| report)
}

async fn redrive_loop(
    redriver: &mut Redriver,
    options: &RedriveOptions,
    report: &mut RedriveReport,
    progress: &mut impl FnMut(usize),
) -> Result<(), DlqError> {
    use std::time::{Duration, Instant};
    let limit = options.max.unwrap_or(usize::MAX);
    let taken = |r: &RedriveReport| r.moved + r.would_move.len();
    let started = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while taken(report) < limit {
        redriver.keep_alive().await;
        let want = (limit - taken(report)).min(10) as u32;
        let Some((step, attempted)) = redriver.step_inner(want, options.hold).await? else {
            // Nothing visible. Messages held by an interrupted run (or another consumer) come
            // back when their visibility ends: wait for them, within reason. Those this run
            // holds itself are not waited for.
            let attrs = redriver.dlq.attributes().await?;
            let in_flight = attrs.in_flight.saturating_sub(redriver.held.len() as u64);
            let waited = idle_since.get_or_insert_with(Instant::now).elapsed();
            // A message whose visibility ended between the empty receive and this count is
            // visible now: receive again. (Not on a FIFO DLQ: there, visible messages behind a
            // held one in their group cannot be received by this run.)
            if attrs.visible > 0 && !redriver.dlq.is_fifo() && waited <= options.in_flight_patience {
                continue;
            }
            if in_flight == 0 || waited > options.in_flight_patience {
                if in_flight > 0 {
                    report.failed.push(format!(
                        "{in_flight} message(s) still in flight in {} (held by another consumer?); rerun later",
                        redriver.dlq.name()
                    ));
                }
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        idle_since = None;
        report.moved += step.moved;
        report.skipped += step.skipped;
        report.would_move.extend(step.would_move);
        report.no_source.extend(step.no_source);
        progress(taken(report));
        let stuck = attempted > 0 && step.moved == 0 && !options.dry_run;
        report.failed.extend(step.failed);
        if stuck {
            break; // every move of this batch failed: stop instead of going on failing
        }
        if let (Some(rate), false) = (options.rate, options.dry_run) {
            // `None`: a rate so low the next message is due beyond what an Instant can hold
            let due = Duration::try_from_secs_f64(report.moved as f64 / rate).ok().and_then(|d| started.checked_add(d));
            // sleep in short steps so the messages held meanwhile stay invisible
            loop {
                redriver.keep_alive().await;
                let wait = due.map_or(Duration::from_secs(1), |d| d.saturating_duration_since(Instant::now()));
                if wait.is_zero() {
                    break;
                }
                tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
            }
        }
    }
    Ok(())
}

/// DLQ messages a redrive received and leaves in the DLQ: receipt handle and until when it is
/// invisible, by message id, and a queue of when each hold needs renewing.
#[derive(Debug, Default)]
struct Held {
    by_id: std::collections::HashMap<String, (String, std::time::Instant)>,
    /// `(until, id)`, earliest first; an entry whose `until` no longer matches `by_id` is stale.
    due: std::collections::BinaryHeap<std::cmp::Reverse<(std::time::Instant, String)>>,
}

impl Held {
    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn insert(&mut self, m: &ReceivedMessage, until: std::time::Instant) {
        self.by_id.insert(m.message_id.clone(), (m.receipt_handle.clone(), until));
        self.due.push(std::cmp::Reverse((until, m.message_id.clone())));
    }

    /// `(id, receipt handle)` of the messages whose hold ends before `before`, taken off the
    /// renewal queue (put them back with [`Held::renewed`]).
    fn take_due(&mut self, before: std::time::Instant) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while self.due.peek().is_some_and(|std::cmp::Reverse((until, _))| *until < before) {
            let Some(std::cmp::Reverse((until, id))) = self.due.pop() else { break };
            if let Some((handle, _)) = self.by_id.get(&id).filter(|(_, u)| *u == until) {
                out.push((id, handle.clone()));
            }
        }
        out
    }

    fn renewed(&mut self, id: &str, until: std::time::Instant) {
        if let Some(entry) = self.by_id.get_mut(id) {
            entry.1 = until;
            self.due.push(std::cmp::Reverse((until, id.to_string())));
        }
    }
}

/// Moves messages from a DLQ back to their source: each is deleted from the DLQ only after its
/// send succeeded, so an interruption loses nothing (a message sent but not yet deleted is sent
/// again by the next run: duplicates are possible, losses are not).
///
/// Messages it leaves in the DLQ (not passing the filters, failing to move, or every message in
/// a dry run) are kept invisible: call [`Redriver::keep_alive`] regularly while stepping and
/// [`Redriver::release`] at the end (see [`redrive`]).
pub struct Redriver {
    dlq: crate::Queue,
    to: Option<crate::Queue>,
    redrive_source: Option<String>,
    targets: std::collections::HashMap<String, crate::Queue>,
    filters: Vec<RedriveFilter>,
    dry_run: bool,
    keep_hold: std::time::Duration,
    /// Ids of the messages received so far.
    seen: std::collections::HashSet<String>,
    held: Held,
}

impl Redriver {
    /// A redriver for `dlq`, to `to` when given, else to each message's [`source_queue`] (or
    /// the DLQ's single redrive source).
    pub async fn new(dlq: crate::Queue, to: Option<crate::Queue>) -> Self {
        let redrive_source = if to.is_none() { redrive_source(&dlq).await } else { None };
        Self {
            dlq,
            to,
            redrive_source,
            targets: Default::default(),
            filters: Vec::new(),
            dry_run: false,
            keep_hold: RedriveOptions::default().keep_hold,
            seen: Default::default(),
            held: Held::default(),
        }
    }

    /// Move only messages passing every filter (see [`RedriveFilter`]).
    pub fn with_filters(mut self, filters: Vec<RedriveFilter>) -> Self {
        self.filters = filters;
        self
    }

    /// Send and delete nothing; [`RedriveReport::would_move`] lists what would move.
    pub fn with_dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// How long held messages stay invisible at a time (see [`RedriveOptions::keep_hold`];
    /// clamped to 2 s..=12 h, the most SQS allows).
    pub fn with_keep_hold(mut self, hold: std::time::Duration) -> Self {
        let max = std::time::Duration::from_secs(u64::from(crate::limits::MAX_VISIBILITY_SECONDS));
        self.keep_hold = hold.clamp(std::time::Duration::from_secs(2), max);
        self
    }

    /// How many DLQ messages the redriver holds invisible.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    async fn target(&mut self, m: &ReceivedMessage) -> Result<crate::Queue, String> {
        if let Some(t) = &self.to {
            return Ok(t.clone());
        }
        let name = source_queue(m).or_else(|| self.redrive_source.clone()).ok_or_else(|| {
            format!(
                "{}: source queue unknown (no DeadLetterQueueSourceArn or {} attribute, DLQ has no single source); use --to",
                m.message_id,
                dl::SOURCE_QUEUE
            )
        })?;
        if let Some(q) = self.targets.get(&name) {
            return Ok(q.clone());
        }
        let q = crate::Queue::by_name(self.dlq.client().clone(), &name, None)
            .await
            .map_err(|e| format!("{}: {e}", m.message_id))?;
        self.targets.insert(name, q.clone());
        Ok(q)
    }

    /// Move up to `max` (≤ 10) messages: one receive from the DLQ (of 10 messages when
    /// filtering, of `max` otherwise). Returns `None` when the DLQ had nothing visible.
    ///
    /// # Errors
    /// [`DlqError::Sqs`] for a failed receive or delete on the DLQ.
    pub async fn step(&mut self, max: u32, hold: std::time::Duration) -> Result<Option<RedriveReport>, DlqError> {
        Ok(self.step_inner(max, hold).await?.map(|(report, _)| report))
    }

    /// [`Redriver::step`], also returning how many messages it tried to move (matching, within
    /// `max`).
    async fn step_inner(
        &mut self,
        max: u32,
        hold: std::time::Duration,
    ) -> Result<Option<(RedriveReport, usize)>, DlqError> {
        let max = max.clamp(1, 10) as usize;
        let filtering = !self.filters.is_empty();
        let want = if filtering { 10 } else { max as u32 };
        let batch = self.dlq.receive(want, std::time::Duration::from_secs(1), Some(hold)).await?;
        if batch.is_empty() {
            return Ok(None);
        }
        let held_until = std::time::Instant::now() + hold;
        let mut report = RedriveReport { dry_run: self.dry_run, ..Default::default() };
        let mut by_target: Vec<(crate::Queue, Vec<&ReceivedMessage>)> = Vec::new();
        let mut taken = 0;
        for m in &batch {
            if !self.seen.insert(m.message_id.clone()) {
                // back after its hold lapsed (or a delete that failed): examined already
                self.held.insert(m, held_until);
                continue;
            }
            if !self.filters.iter().all(|f| f.matches(m)) {
                report.skipped += 1;
                self.held.insert(m, held_until);
                continue;
            }
            if taken == max {
                self.held.insert(m, held_until); // beyond --max
                continue;
            }
            taken += 1;
            let target = match self.target(m).await {
                Ok(t) => t,
                Err(e) => {
                    if self.to.is_none() && self.redrive_source.is_none() && source_queue(m).is_none() {
                        report.no_source.push(m.message_id.clone());
                    }
                    report.failed.push(e);
                    self.held.insert(m, held_until);
                    continue;
                }
            };
            if self.dry_run {
                report.would_move.push(PlannedMove {
                    message_id: m.message_id.clone(),
                    source_queue: source_queue(m),
                    target: target.name().to_string(),
                    error_kind: error_kind(m),
                    origin: origin(m),
                });
                self.held.insert(m, held_until);
                continue;
            }
            match by_target.iter_mut().find(|(q, _)| q.url() == target.url()) {
                Some((_, v)) => v.push(m),
                None => by_target.push((target, vec![m])),
            }
        }
        let mut delete: Vec<&ReceivedMessage> = Vec::new();
        for (target, msgs) in by_target {
            let fifo = target.is_fifo();
            match target.send_batch(msgs.iter().map(|m| redriven_message(m, fifo))).await {
                Ok(r) => {
                    delete.extend(r.sent.iter().map(|s| msgs[s.index]));
                    for f in &r.failed {
                        report.failed.push(format!("{}: {}: {}", msgs[f.index].message_id, f.code, f.message));
                        self.held.insert(msgs[f.index], held_until);
                    }
                }
                Err(e) => {
                    for m in msgs {
                        report.failed.push(format!("{}: {e}", m.message_id));
                        self.held.insert(m, held_until);
                    }
                }
            }
        }
        if !delete.is_empty() {
            let handles: Vec<&str> = delete.iter().map(|m| m.receipt_handle.as_str()).collect();
            let r = self.dlq.delete_batch(&handles).await?;
            report.moved = r.succeeded.len();
            for f in &r.failed {
                // sent, but still in the DLQ: not sent again by this run
                report.failed.push(format!("delete from DLQ: {}: {}", f.code, f.message));
                if let Some(m) = delete.get(f.index) {
                    self.held.insert(m, held_until);
                }
            }
        }
        Ok(Some((report, taken)))
    }

    /// Renew the invisibility of held messages whose hold ends within `keep_hold / 2`. A message
    /// whose renewal fails is not renewed again: it comes back when its hold ends, and the next
    /// step holds it again without examining it.
    pub async fn keep_alive(&mut self) {
        let now = std::time::Instant::now();
        let due = self.held.take_due(now + self.keep_hold / 2);
        if due.is_empty() {
            return;
        }
        let handles: Vec<&str> = due.iter().map(|(_, h)| h.as_str()).collect();
        match self.dlq.change_visibility_batch(&handles, self.keep_hold.as_secs() as u32).await {
            Ok(r) => {
                for i in r.succeeded {
                    if let Some((id, _)) = due.get(i) {
                        self.held.renewed(id, now + self.keep_hold);
                    }
                }
                if !r.failed.is_empty() {
                    tracing::warn!(
                        queue = self.dlq.name(),
                        failed = r.failed.len(),
                        "could not keep some held DLQ messages invisible; they will be held again when they come back"
                    );
                }
            }
            Err(e) => tracing::warn!(queue = self.dlq.name(), error = %e, "could not keep held DLQ messages invisible"),
        }
    }

    /// Make every held message visible again (visibility 0). A message whose release fails
    /// comes back when its hold ends (at most `keep_hold`).
    pub async fn release(&mut self) {
        let held = std::mem::take(&mut self.held).by_id;
        if held.is_empty() {
            return;
        }
        let handles: Vec<&str> = held.values().map(|(h, _)| h.as_str()).collect();
        match self.dlq.change_visibility_batch(&handles, 0).await {
            Ok(r) if r.failed.is_empty() => {}
            Ok(r) => tracing::warn!(
                queue = self.dlq.name(),
                failed = r.failed.len(),
                released = r.succeeded.len(),
                "some DLQ messages could not be made visible again; they come back when their hold ends"
            ),
            Err(e) => tracing::warn!(queue = self.dlq.name(), error = %e,
                "DLQ messages could not be made visible again; they come back when their hold ends"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::tests::msg;
    use crate::AttributeValue;

    #[test]
    fn filters_parse_and_match() {
        let pointer = |s: &str| s.parse::<RedriveFilter>().unwrap();
        let mut m = msg(); // {"order":1}, kind undecodable
        assert!(pointer("/order=1").matches(&m));
        assert!(pointer("/order=1.0").matches(&m), "numbers compare by value");
        assert!(!pointer("/order=\"1\"").matches(&m), "the string \"1\" is not the number 1");
        assert!(!pointer("/missing=1").matches(&m));
        assert!(pointer("kind=undecodable").matches(&m));
        assert!(!pointer("kind=permanent").matches(&m));
        m.body = r#"{"a/b":{"s":"x=y"},"t":true,"n":null}"#.into();
        assert!(pointer("/a~1b/s=x=y").matches(&m), "~1 is a slash; the pointer ends at the first =");
        assert!(pointer("/a~1b/s=\"x=y\"").matches(&m));
        assert!(pointer("/t=true").matches(&m) && !pointer("/t=\"true\"").matches(&m));
        assert!(pointer("/n=null").matches(&m));
        assert!(pointer("/a~1b={\"s\":\"x=y\"}").matches(&m), "objects compare as JSON");
        m.body = "not json".into();
        assert!(!pointer("/order=1").matches(&m), "a body that is not JSON does not match");
        m.attributes.clear();
        assert!(pointer("kind=max-receives").matches(&m), "no error kind: max-receives");
        m.attributes.insert(
            dl::COMBINED.into(),
            AttributeValue::string(r#"{"kind":"permanent","error":"e","source_queue":"q","receive_count":"1"}"#),
        );
        assert!(pointer("kind=permanent").matches(&m), "the kind inside sqskit-dead-letter");
        for bad in ["", "order=1", "kind=", "kind=Permanent", "/order", "/a~2=1", "/a~=1"] {
            let e = bad.parse::<RedriveFilter>().unwrap_err();
            assert!(matches!(e, DlqError::InvalidFilter { .. }), "{bad:?}: {e}");
        }
        m.system_attributes.insert("DeadLetterQueueSourceArn".into(), "arn:aws:sqs:us-east-1:1:orders".into());
        assert!(pointer("origin=sqs").matches(&m) && !pointer("origin=sqskit,none").matches(&m));
        m.system_attributes.clear();
        assert!(pointer("origin=sqskit").matches(&m), "the source inside sqskit-dead-letter");
        m.attributes.clear();
        assert!(pointer("origin=sqskit,none").matches(&m) && !pointer("origin=sqs").matches(&m));
        assert_eq!(pointer("origin=none, sqs").to_string(), "origin=sqs,none");
        for bad in ["origin=", "origin=SQS", "origin=sqs,"] {
            assert!(bad.parse::<RedriveFilter>().is_err(), "{bad:?}");
        }
        assert_eq!(pointer("/order/id=42").to_string(), "/order/id=42");
        assert_eq!(pointer("/s=abc").to_string(), "/s=\"abc\"");
    }
}
