//! `sqskit redrive`: move messages from a DLQ back to their source queue.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqskit::dlq::Redriver;
use sqskit::Queue;

use crate::common::{sqs, Global, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dead-letter queue URL.
    #[arg(long)]
    pub dlq_url: String,
    /// Target queue URL (default: each message's source queue).
    #[arg(long)]
    pub to: Option<String>,
    /// Move at most N messages.
    #[arg(long)]
    pub max: Option<usize>,
    /// At most R messages per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Ask SQS to do it (StartMessageMoveTask) instead of moving messages here.
    #[arg(long)]
    pub use_move_task: bool,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// How long a received DLQ message stays invisible while it is being moved.
const HOLD: Duration = Duration::from_secs(10);
/// How long to wait for in-flight DLQ messages (e.g. held by an interrupted run) to come back.
const IN_FLIGHT_PATIENCE: Duration = Duration::from_secs(3 * HOLD.as_secs());

/// Each message is deleted from the DLQ only after it was sent: interrupting and rerunning
/// loses nothing, but a message sent just before the interruption may be sent twice.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = sqs(global).await;
    let dlq = Queue::new(client.clone(), args.dlq_url.clone());
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate > 0.0, "--rate must be above 0 (got {rate})");
    }
    if args.use_move_task {
        return move_task(&dlq, &args).await;
    }
    let to = args.to.as_ref().map(|u| Queue::new(client.clone(), u.clone()));
    let total = dlq.attributes().await?.visible;
    let limit = args.max.unwrap_or(usize::MAX);
    let bar = (std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total.min(limit as u64));
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} moved  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut redriver = Redriver::new(dlq.clone(), to).await;
    let mut moved = 0usize;
    let mut failed: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while moved < limit {
        let want = (limit - moved).min(10) as u32;
        let Some(step) = redriver.step(want, HOLD).await? else {
            // Nothing visible. Messages held by an interrupted run (or another consumer) come
            // back when their visibility ends: wait for them, within reason.
            let in_flight = dlq.attributes().await?.in_flight;
            let waited = idle_since.get_or_insert_with(Instant::now).elapsed();
            if in_flight == 0 || waited > IN_FLIGHT_PATIENCE {
                if in_flight > 0 {
                    failed.push(format!(
                        "{in_flight} message(s) still in flight in {} (held by another consumer?); rerun later",
                        dlq.name()
                    ));
                }
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        idle_since = None;
        moved += step.moved;
        if let Some(b) = &bar {
            b.inc(step.moved as u64);
        }
        let stuck = step.moved == 0 && !step.failed.is_empty();
        failed.extend(step.failed);
        if stuck {
            break; // every message of this batch failed: stop instead of spinning on them
        }
        if let Some(rate) = args.rate {
            let due = Duration::from_secs_f64(moved as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = sqskit::dlq::RedriveReport { moved, failed };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&report)?),
        Output::Text => {
            println!("moved {} message(s) out of {}, {} failed", report.moved, dlq.name(), report.failed.len());
            for f in &report.failed {
                println!("  {f}");
            }
        }
    }
    anyhow::ensure!(
        report.failed.is_empty(),
        "{} message(s) could not be moved (left in the DLQ)",
        report.failed.len()
    );
    Ok(())
}

async fn move_task(dlq: &Queue, args: &Args) -> anyhow::Result<()> {
    let arn = dlq.attributes().await?.arn.context("the DLQ has no ARN")?;
    let mut req = dlq.client().start_message_move_task().source_arn(&arn);
    if let Some(to) = &args.to {
        let target = Queue::new(dlq.client().clone(), to.clone());
        req = req.destination_arn(target.attributes().await?.arn.context("the target queue has no ARN")?);
    }
    if let Some(rate) = args.rate {
        req = req.max_number_of_messages_per_second(rate.round().max(1.0) as i32);
    }
    let out = req.send().await.map_err(|e| {
        anyhow::anyhow!("StartMessageMoveTask on {arn}: {}", aws_sdk_sqs::error::DisplayErrorContext(e))
    })?;
    println!("started message move task {}", out.task_handle().unwrap_or("?"));
    Ok(())
}
