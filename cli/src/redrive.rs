//! `sqskit redrive`: move messages from a DLQ back to their source queue.

use sqskit::dlq::RedriveOptions;
use sqskit::Queue;
use std::io::IsTerminal;

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

/// Each message is deleted from the DLQ only after it was sent: interrupting and rerunning
/// loses nothing, but a message sent just before the interruption may be sent twice.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = sqs(global).await;
    let dlq = Queue::new(client.clone(), args.dlq_url.clone());
    let to = args.to.as_ref().map(|u| Queue::new(client.clone(), u.clone()));
    if args.use_move_task {
        let rate = args.rate.map(|r| r.round().max(1.0) as u32);
        let handle = sqskit::dlq::start_move_task(&dlq, to.as_ref(), rate).await?;
        println!("started message move task {handle}");
        return Ok(());
    }
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
    let options = RedriveOptions::default().with_max(args.max).with_rate(args.rate);
    let report = sqskit::dlq::redrive(&dlq, to, &options, |moved| {
        if let Some(b) = &bar {
            b.set_position(moved as u64);
        }
    })
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
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
