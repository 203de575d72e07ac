//! `sqskit redrive`: move messages from a DLQ back to their source queue, here or with a
//! message move task; `--status` and `--cancel` for move tasks.

use sqskit::dlq::{MoveTask, MoveTaskRedriveReport, RedriveFilter, RedriveOptions, RedriveReport};
use sqskit::Queue;
use std::io::IsTerminal;

use crate::common::{sqs, Global, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dead-letter queue URL, or its name.
    #[arg(long)]
    pub dlq_url: String,
    /// Target queue URL or name (default: each message's source queue).
    #[arg(long, conflicts_with_all = ["status", "cancel"])]
    pub to: Option<String>,
    /// Move at most N messages (with --filter: N matching ones); at least 1.
    #[arg(long, conflicts_with_all = ["use_move_task", "status", "cancel"], value_parser = crate::args::count(1..=u64::MAX))]
    pub max: Option<usize>,
    /// At most R messages per second, 0.001–100000 (with --use-move-task: a whole number, 1-500).
    #[arg(long, conflicts_with_all = ["status", "cancel"], value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Move only messages matching EXPR: `/json/pointer=value` (the body parsed as JSON has
    /// this value there; a JSON literal, else a string), `kind=<error kind>` (permanent,
    /// undecodable, ..., max-receives), `source=<queue name>` or `id=<id>,<id>...` (DLQ message
    /// ids). Repeat to require all.
    #[arg(long, value_name = "EXPR", value_parser = parse_filter,
          conflicts_with_all = ["use_move_task", "status", "cancel"])]
    pub filter: Vec<RedriveFilter>,
    /// Show what would move (message id, source, target, error kind; with --use-move-task: the
    /// plan, by kind) and change nothing.
    #[arg(long, conflicts_with_all = ["status", "cancel"])]
    pub dry_run: bool,
    /// Ask SQS to do it (StartMessageMoveTask). Without --to, messages SQS did not move there
    /// (sqskit's own dead letters) are moved here first: SQS cannot return those.
    #[arg(long, conflicts_with_all = ["status", "cancel"])]
    pub use_move_task: bool,
    /// List the DLQ's message move tasks (the 10 most recent) instead of moving anything.
    #[arg(long, conflicts_with = "cancel")]
    pub status: bool,
    /// Cancel the DLQ's running message move task (the one with TASK_HANDLE, if given).
    #[arg(long, value_name = "TASK_HANDLE", num_args = 0..=1)]
    pub cancel: Option<Option<String>>,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

fn parse_filter(s: &str) -> Result<RedriveFilter, String> {
    s.parse().map_err(|e: sqskit::dlq::DlqError| e.to_string())
}

/// Any number here; its range depends on the mode and is checked in [`Args::validate`] (a move
/// task takes a whole number 1..=500, the client-side redrive the process rate range).
fn parse_rate(s: &str) -> Result<f64, String> {
    s.trim().parse::<f64>().ok().filter(|r| r.is_finite()).ok_or_else(|| format!("{s:?} is not a number"))
}

impl Args {
    /// Checks clap cannot express; run before any call (a usage error).
    pub fn validate(&self) -> Result<(), String> {
        match (self.use_move_task, self.rate) {
            (true, Some(rate)) => {
                sqskit::dlq::move_task_rate(rate).map_err(|e| format!("'--rate {rate}' with --use-move-task: {e}"))?;
            }
            (false, Some(rate)) => {
                crate::args::rate(&rate.to_string()).map_err(|e| format!("'--rate {rate}': {e}"))?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Each message is deleted from the DLQ only after it was sent: interrupting and rerunning
/// loses nothing, but a message sent just before the interruption may be sent twice.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = sqs(global).await?;
    let dlq = crate::common::queue(&client, &args.dlq_url).await?;
    if args.status {
        return status(&dlq, args.output).await;
    }
    if let Some(handle) = &args.cancel {
        let cancelled = sqskit::dlq::cancel_move_task(&dlq, handle.as_deref()).await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string(&cancelled)?),
            Output::Text => println!(
                "cancelled message move task on {} after {} message(s) moved; the rest stay in the DLQ\n  task handle: {}",
                dlq.name(),
                cancelled.moved,
                cancelled.task_handle
            ),
        }
        return Ok(());
    }
    let to = match &args.to {
        Some(u) => Some(crate::common::queue(&client, u).await?),
        None => None,
    };
    if args.use_move_task {
        let rate = args.rate.map(sqskit::dlq::move_task_rate).transpose()?;
        return match to {
            Some(to) => move_task_to(&dlq, &to, rate, &args).await,
            None => move_task_back(&dlq, rate, &args).await,
        };
    }
    let total = dlq.attributes().await?.visible;
    let limit = args.max.unwrap_or(usize::MAX);
    let bar = Bar::new(!args.dry_run, total.min(limit as u64), "moved");
    let mut options = RedriveOptions::default().with_max(args.max).with_rate(args.rate).with_dry_run(args.dry_run);
    for f in args.filter {
        options = options.with_filter(f);
    }
    let report = sqskit::dlq::redrive(&dlq, to, &options, |moved| bar.set(moved)).await?;
    bar.finish();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&report)?),
        Output::Text => print_report(&report, dlq.name()),
    }
    anyhow::ensure!(
        report.failed.is_empty(),
        "{} message(s) could not be moved (left in the DLQ)",
        report.failed.len()
    );
    Ok(())
}

/// A progress bar on stderr when it is a terminal (and `on`).
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(on: bool, len: u64, what: &str) -> Self {
        Bar((on && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(len);
            b.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  eta {{eta}}"
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        }))
    }

    fn set(&self, n: usize) {
        if let Some(b) = &self.0 {
            b.set_position(n as u64);
        }
    }

    fn finish(self) {
        if let Some(b) = self.0 {
            b.finish_and_clear();
        }
    }
}

/// `--use-move-task --to`: one task moves every message there, whatever its origin.
async fn move_task_to(dlq: &Queue, to: &Queue, rate: Option<u32>, args: &Args) -> anyhow::Result<()> {
    if args.dry_run {
        let messages = dlq.attributes().await?.visible;
        match args.output {
            Output::Json => {
                println!("{}", serde_json::json!({ "dry_run": true, "to": to.name(), "messages": messages }))
            }
            Output::Text => println!(
                "dry run: a message move task would move the {messages} message(s) of {} to {} (nothing moved)",
                dlq.name(),
                to.name()
            ),
        }
        return Ok(());
    }
    let handle = sqskit::dlq::start_move_task(dlq, Some(to), rate).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::json!({ "task_handle": handle })),
        Output::Text => print_started(&handle, None, dlq),
    }
    Ok(())
}

/// `--use-move-task` without `--to`: the plan by kind first, then the client-side part and the
/// task (see `sqskit::dlq::move_task_redrive`).
async fn move_task_back(dlq: &Queue, rate: Option<u32>, args: &Args) -> anyhow::Result<()> {
    let plan = sqskit::dlq::plan_move_task_redrive(dlq).await?;
    if args.output == Output::Text {
        println!("{} message(s) in {}:", plan.total(), dlq.name());
        for line in plan.lines() {
            println!("  {line}");
        }
    }
    let left = plan.left.len();
    if args.dry_run {
        match args.output {
            Output::Json => println!("{}", serde_json::json!({ "dry_run": true, "plan": plan })),
            Output::Text => println!("dry run: nothing moved, no move task started"),
        }
        anyhow::ensure!(left == 0, "{left} message(s) have no recorded source and would stay in the DLQ");
        return Ok(());
    }
    let bar = Bar::new(true, plan.client_side() as u64, "moved here");
    let report = sqskit::dlq::move_task_redrive(dlq, plan, rate, |moved| bar.set(moved)).await?;
    bar.finish();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&report)?),
        Output::Text => print_move_task_report(&report, dlq),
    }
    let failed = report.failed().len();
    anyhow::ensure!(failed == 0, "{failed} message(s) could not be moved (left in the DLQ)");
    if let Some(why) = &report.move_task_skipped {
        anyhow::bail!("no message move task started: {why}");
    }
    Ok(())
}

fn print_started(handle: &str, to_move: Option<usize>, dlq: &Queue) {
    match to_move {
        Some(n) => println!("started message move task {handle} for {n} message(s) moved to the DLQ by SQS"),
        None => println!("started message move task {handle}"),
    }
    println!("follow it with: sqskit redrive --status --dlq-url {}", dlq.url());
}

fn print_move_task_report(report: &MoveTaskRedriveReport, dlq: &Queue) {
    if let Some(r) = &report.client_side {
        println!("moved {} message(s) here to their source queues, {} failed", r.moved, r.failed.len());
        for f in &r.failed {
            println!("  {f}");
        }
    }
    if let Some(t) = &report.move_task {
        print_started(&t.task_handle, Some(t.to_move), dlq);
    }
    if let Some(why) = &report.move_task_skipped {
        println!("no message move task started: {why}");
    }
    if !report.left.is_empty() {
        println!("left in the DLQ (no recorded source; move them with --to): {}", report.left.join(", "));
    }
}

fn print_report(report: &RedriveReport, dlq: &str) {
    if report.dry_run {
        println!("dry run: would move {} message(s) out of {}:", report.would_move.len(), dlq);
        for m in &report.would_move {
            println!(
                "  {}  {} -> {}  {}",
                m.message_id,
                m.source_queue.as_deref().unwrap_or("?"),
                m.target,
                m.error_kind
            );
        }
    } else {
        println!("moved {} message(s) out of {}, {} failed", report.moved, dlq, report.failed.len());
    }
    if report.skipped > 0 {
        println!("{} message(s) did not match the filter (left in the DLQ)", report.skipped);
    }
    for f in &report.failed {
        println!("  {f}");
    }
}

async fn status(dlq: &Queue, output: Output) -> anyhow::Result<()> {
    let tasks = sqskit::dlq::list_move_tasks(dlq, sqskit::dlq::MAX_LISTED_MOVE_TASKS).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string(&tasks)?),
        Output::Text if tasks.is_empty() => println!("no message move tasks for {}", dlq.name()),
        Output::Text => {
            println!("message move tasks of {} (newest first):", dlq.name());
            for t in &tasks {
                print_task(t);
            }
        }
    }
    Ok(())
}

fn print_task(t: &MoveTask) {
    let to_move = t.to_move.map_or_else(|| "?".to_string(), |n| n.to_string());
    let rate = t.max_per_second.map_or_else(|| "SQS's pace".to_string(), |r| format!("{r}/s"));
    let destination = t.destination_arn.as_deref().and_then(|a| a.rsplit(':').next()).unwrap_or("(source queues)");
    println!(
        "{:<10} moved {}/{}  rate {}  started {}  to {}",
        t.status,
        t.moved,
        to_move,
        rate,
        t.started.as_deref().unwrap_or("?"),
        destination
    );
    if let Some(h) = &t.task_handle {
        println!("  task handle: {h}");
    }
    if let Some(r) = &t.failure_reason {
        println!("  failure: {r}");
    }
}
