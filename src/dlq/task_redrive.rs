//! A redrive with a message move task on a DLQ holding both kinds of dead letters.
//!
//! It owns `sqskit redrive --use-move-task` without `--to`: a move task without a destination
//! returns each message to the queue its `DeadLetterQueueSourceArn` names, which only messages
//! SQS's redrive policy moved carry; it fails on the first message sqskit dead-lettered itself
//! (those name their source in `sqskit-source-queue`). So [`plan_move_task_redrive`] first looks at
//! every message once (a dry run of the client-side redrive) and counts them by [`Origin`];
//! [`move_task_redrive`] then moves the messages without `DeadLetterQueueSourceArn` here, as
//! [`redrive`] does (attributes and trace header kept, each deleted from the DLQ only after it
//! was sent), and starts a move task for the rest. A message whose source nothing records (and
//! the DLQ has more than one source queue) stays in the DLQ and is named; while such a message is
//! in the DLQ a move task would stop at it, so SQS's own dead letters are then moved here too.

use super::{move_task::start_move_task, redrive, DlqError, Origin, RedriveFilter, RedriveOptions, RedriveReport};

/// What [`move_task_redrive`] will do with a DLQ's messages, counted by
/// [`plan_move_task_redrive`]: one look at every message (each receive raises its receive count).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MoveTaskPlan {
    /// The DLQ's name.
    pub dlq: String,
    /// Messages SQS's redrive policy moved ([`Origin::Sqs`]): the move task returns them (moved
    /// here instead when `use_move_task` is false).
    pub moved_by_sqs: usize,
    /// Messages sqskit dead-lettered itself ([`Origin::Sqskit`]): moved here to their source.
    pub dead_lettered_by_sqskit: usize,
    /// Messages that record no source ([`Origin::Unrecorded`]): moved here to
    /// `no_source_target` when the DLQ has a single source queue, else left in the DLQ.
    pub no_source: usize,
    /// The DLQ's single source queue (`ListDeadLetterSourceQueues`), where messages without a
    /// recorded source go; `None` when it has several.
    pub no_source_target: Option<String>,
    /// Ids of the messages that stay in the DLQ: no recorded source and no single source queue.
    pub left: Vec<String>,
    /// Whether a move task is used for `moved_by_sqs`: not while messages it would stop at
    /// (`left`) are in the DLQ.
    pub use_move_task: bool,
    /// Other problems the look found (a source queue that does not exist, messages in flight);
    /// the move reports them again.
    pub problems: Vec<String>,
}

impl MoveTaskPlan {
    /// Messages counted.
    pub fn total(&self) -> usize {
        self.moved_by_sqs + self.dead_lettered_by_sqskit + self.no_source
    }

    /// Messages the client-side part moves.
    pub fn client_side(&self) -> usize {
        let rest = (self.dead_lettered_by_sqskit + self.no_source).saturating_sub(self.left.len());
        if self.use_move_task {
            rest
        } else {
            rest + self.moved_by_sqs
        }
    }

    /// Messages the move task moves.
    pub fn by_move_task(&self) -> usize {
        if self.use_move_task {
            self.moved_by_sqs
        } else {
            0
        }
    }

    /// The plan in words, one line per kind of message (with its count), for an operator to
    /// read before anything moves.
    ///
    /// # Example
    /// ```
    /// let mut plan = sqskit::dlq::MoveTaskPlan::default();
    /// plan.moved_by_sqs = 7;
    /// plan.dead_lettered_by_sqskit = 6;
    /// plan.use_move_task = true;
    /// let lines = plan.lines();
    /// assert!(lines[0].starts_with("7 message(s) moved to the DLQ by SQS"));
    /// assert!(lines[1].starts_with("6 message(s) dead-lettered by sqskit"));
    /// ```
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.moved_by_sqs > 0 {
            out.push(format!(
                "{} message(s) moved to the DLQ by SQS (DeadLetterQueueSourceArn): {}",
                self.moved_by_sqs,
                if self.use_move_task {
                    "a message move task returns them to their source queues"
                } else {
                    "moved here to their source queues (a move task would stop at the messages with no source)"
                }
            ));
        }
        if self.dead_lettered_by_sqskit > 0 {
            out.push(format!(
                "{} message(s) dead-lettered by sqskit (sqskit-source-queue): moved here to their source queues",
                self.dead_lettered_by_sqskit
            ));
        }
        if self.no_source > 0 {
            out.push(match &self.no_source_target {
                Some(q) => format!(
                    "{} message(s) with no recorded source: moved here to {q}, the DLQ's only source queue",
                    self.no_source
                ),
                None => format!(
                    "{} message(s) with no recorded source: left in the DLQ (it has several source queues; move them with --to): {}",
                    self.no_source,
                    self.left.join(", ")
                ),
            });
        }
        if self.total() == 0 {
            out.push("no messages: nothing to move".into());
        }
        out.extend(self.problems.iter().map(|p| format!("problem: {p}")));
        out
    }
}

/// The message move task [`move_task_redrive`] started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct StartedMoveTask {
    /// Its handle (see [`list_move_tasks`](super::list_move_tasks), [`cancel_move_task`](super::cancel_move_task)).
    pub task_handle: String,
    /// How many messages it is to move, as the plan counted them.
    pub to_move: usize,
}

/// What [`move_task_redrive`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MoveTaskRedriveReport {
    /// The plan it followed.
    pub plan: MoveTaskPlan,
    /// The client-side part (`None` when there was nothing to move here).
    pub client_side: Option<RedriveReport>,
    /// The move task started (`None` when there was nothing for one to move). It runs on in
    /// SQS after this returns.
    pub move_task: Option<StartedMoveTask>,
    /// Ids of the messages left in the DLQ because nothing records where they came from.
    pub left: Vec<String>,
    /// Why no move task was started although the plan had one: messages with no recorded source
    /// reached the DLQ after the plan, and the task would stop at them (run it again).
    pub move_task_skipped: Option<String>,
}

impl MoveTaskRedriveReport {
    /// Messages the client-side part could not move (left in the DLQ), with the reason; the
    /// messages in `left` are among them.
    pub fn failed(&self) -> &[String] {
        self.client_side.as_ref().map_or(&[], |r| r.failed.as_slice())
    }
}

/// Look at every message of `dlq` once and count them by [`Origin`]: what
/// [`move_task_redrive`] will do. Moves nothing (a dry run of [`redrive`]: each message is
/// received once and made visible again at the end).
///
/// # Errors
/// [`DlqError::MoveTaskRunning`] when a move task of the DLQ is running (checked first, with
/// `ListMessageMoveTasks`; when that call fails, the look goes on), [`DlqError::Sqs`] for a
/// failed receive on the DLQ.
pub async fn plan_move_task_redrive(dlq: &crate::Queue) -> Result<MoveTaskPlan, DlqError> {
    match super::list_move_tasks(dlq, 1).await {
        Ok(tasks) => {
            if let Some(t) = tasks.iter().find(|t| t.is_running()) {
                let handle = t.task_handle.clone().unwrap_or_default();
                return Err(DlqError::MoveTaskRunning { queue: dlq.name().to_string(), handle });
            }
        }
        Err(e) => tracing::warn!(queue = dlq.name(), error = %e, "could not list the DLQ's message move tasks"),
    }
    let look = redrive(dlq, None, &RedriveOptions::default().with_dry_run(true), |_| {}).await?;
    let count = |o: Origin| look.would_move.iter().filter(|m| m.origin == o).count();
    let no_source_target = look.would_move.iter().find(|m| m.origin == Origin::Unrecorded).map(|m| m.target.clone());
    let no_source_target = match no_source_target {
        Some(t) => Some(t),
        None => super::redrive_source(dlq).await,
    };
    let problems =
        look.failed.iter().filter(|f| !look.no_source.iter().any(|id| f.starts_with(id.as_str()))).cloned().collect();
    Ok(MoveTaskPlan {
        dlq: dlq.name().to_string(),
        moved_by_sqs: count(Origin::Sqs),
        dead_lettered_by_sqskit: count(Origin::Sqskit),
        no_source: count(Origin::Unrecorded) + look.no_source.len(),
        no_source_target,
        use_move_task: look.no_source.is_empty(),
        left: look.no_source,
        problems,
    })
}

/// Return every message of `dlq` to its source queue as `plan` says (see the module docs):
/// first the client-side part (through [`redrive`], at most `rate` messages per second,
/// `progress` called with the number moved so far), then, when the plan uses one and SQS's own
/// dead letters were counted, a message move task without a destination (at `rate`,
/// `MaxNumberOfMessagesPerSecond`). Returns once the task is started; follow it with
/// [`list_move_tasks`](super::list_move_tasks).
///
/// Messages that reach the DLQ after the plan are moved if the client-side part sees them; a
/// dead letter of sqskit's arriving once the task runs makes the task fail at it (SQS keeps what
/// it moved): run it again.
///
/// # Example
/// ```no_run
/// # async fn f(dlq: sqskit::Queue) -> Result<(), sqskit::dlq::DlqError> {
/// let plan = sqskit::dlq::plan_move_task_redrive(&dlq).await?;
/// for line in plan.lines() {
///     println!("{line}");
/// }
/// let report = sqskit::dlq::move_task_redrive(&dlq, plan, Some(50), |_| {}).await?;
/// assert!(report.failed().is_empty());
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`DlqError::Sqs`]: [`crate::Error::Limit`] for a rate outside 1..=500, before any call; a
/// failed receive or delete on the DLQ (no task is started then); the error of
/// `StartMessageMoveTask` (e.g. a task is already running), after the client-side part.
pub async fn move_task_redrive(
    dlq: &crate::Queue,
    plan: MoveTaskPlan,
    rate: Option<u32>,
    progress: impl FnMut(usize),
) -> Result<MoveTaskRedriveReport, DlqError> {
    if let Some(r) = rate {
        crate::limits::check_range("rate", u64::from(r), 1, u64::from(super::MAX_MOVE_TASK_RATE))?;
    }
    let client_side = if plan.client_side() > 0 || !plan.left.is_empty() {
        let mut options = RedriveOptions::default().with_rate(rate.map(f64::from));
        if plan.use_move_task {
            // SQS's own dead letters stay for the task
            let rest = [Origin::Sqskit, Origin::Unrecorded].into_iter().collect();
            options = options.with_filter(RedriveFilter::Origins(rest));
        }
        Some(redrive(dlq, None, &options, progress).await?)
    } else {
        None
    };
    let left = client_side.as_ref().map(|r| r.no_source.clone()).unwrap_or_default();
    let (mut move_task, mut move_task_skipped) = (None, None);
    match plan.by_move_task() {
        0 => {}
        _ if !left.is_empty() => {
            move_task_skipped = Some(format!(
                "{} message(s) with no recorded source are in the DLQ and a move task would stop at them; \
                 move or delete them, then run again",
                left.len()
            ));
        }
        to_move => {
            move_task = Some(StartedMoveTask { task_handle: start_move_task(dlq, None, rate).await?, to_move });
        }
    }
    Ok(MoveTaskRedriveReport { plan, client_side, move_task, left, move_task_skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_says_what_happens_to_each_kind() {
        let mut plan = MoveTaskPlan {
            dlq: "d".into(),
            moved_by_sqs: 7,
            dead_lettered_by_sqskit: 6,
            no_source: 2,
            no_source_target: None,
            left: vec!["m-1".into(), "m-2".into()],
            use_move_task: false,
            problems: vec![],
        };
        assert_eq!((plan.total(), plan.client_side(), plan.by_move_task()), (15, 13, 0));
        let lines = plan.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("moved here") && lines[0].contains("would stop"), "{lines:?}");
        assert!(lines[2].contains("left in the DLQ") && lines[2].contains("m-1, m-2"), "{lines:?}");

        plan.no_source_target = Some("orders".into());
        plan.left.clear();
        plan.use_move_task = true;
        assert_eq!((plan.client_side(), plan.by_move_task()), (8, 7));
        let lines = plan.lines();
        assert!(lines[0].contains("a message move task returns them"), "{lines:?}");
        assert!(lines[2].contains("moved here to orders"), "{lines:?}");
        assert_eq!(MoveTaskPlan::default().lines(), ["no messages: nothing to move"]);
    }
}
