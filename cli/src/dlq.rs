//! `sqskit dlq drain | list`.

use std::collections::BTreeMap;
use std::time::Duration;

use sqskit::dlq::{DlqError, DlqMonitor, MonitorConfig};

use crate::common::{aws_config, Global, Output};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Archive every message of a DLQ to S3, delete them, send one SNS alert.
    Drain(DrainArgs),
    /// Error kinds and source queues of a DLQ's messages (left in place).
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The dead-letter queue URL, or its name.
    #[arg(long)]
    pub queue_url: String,
    /// S3 bucket for the archive.
    #[arg(long)]
    pub bucket: String,
    /// Key prefix in the bucket.
    #[arg(long, default_value = "dead-letters")]
    pub prefix: String,
    /// SNS topic for the one alert (none: no alert).
    #[arg(long)]
    pub topic_arn: Option<String>,
    /// Put (truncated) bodies in the alert.
    #[arg(long)]
    pub include_body: bool,
    /// Archive claim-checked messages (Extended Client pointers) with their body fetched from
    /// S3 instead of the pointer.
    #[arg(long)]
    pub resolve_payloads: bool,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The dead-letter queue URL, or its name.
    #[arg(long)]
    pub dlq_url: String,
    /// Look at this many messages at most (1–100000).
    #[arg(short = 'n', long, default_value_t = 1000, value_parser = crate::args::count(1..=100_000))]
    pub count: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub async fn run(global: &Global, command: Command) -> anyhow::Result<()> {
    let sdk = aws_config(global).await?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    match command {
        Command::Drain(a) => {
            let config = MonitorConfig::new(a.bucket)
                .with_prefix(a.prefix)
                .with_topic_arn(a.topic_arn)
                .with_include_body(a.include_body)
                .with_resolve_payloads(a.resolve_payloads);
            let monitor = DlqMonitor::new(&sdk, config);
            let dlq = crate::common::queue(&sqs, &a.queue_url).await?;
            let (report, stopped) = match monitor.drain(&dlq, Duration::from_secs(60)).await {
                Ok(report) => (report, None),
                Err(DlqError::Drain { report, source }) => (report, Some(source)),
                Err(e) => return Err(e.into()),
            };
            match a.output {
                Output::Json => println!("{}", serde_json::to_string(&report)?),
                Output::Text => println!(
                    "archived {} message(s) from {}, deleted {}, {} archive failure(s), alert {}",
                    report.archived,
                    dlq.name(),
                    report.deleted,
                    report.archive_failures,
                    if report.alert_sent { "sent" } else { "not sent" }
                ),
            }
            if let Some(e) = stopped {
                return Err(anyhow::Error::new(e).context(format!(
                    "draining {} stopped after archiving {} message(s) (deleted {}; the rest stay in the DLQ)",
                    dlq.name(),
                    report.archived,
                    report.deleted
                )));
            }
            anyhow::ensure!(
                report.archive_failures == 0,
                "{} message(s) could not be archived (left in the DLQ)",
                report.archive_failures
            );
            Ok(())
        }
        Command::List(a) => {
            let dlq = crate::common::queue(&sqs, &a.dlq_url).await?;
            let msgs = dlq.peek(a.count, Duration::from_secs(30)).await?;
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            let mut sources: BTreeMap<String, usize> = BTreeMap::new();
            for m in &msgs {
                *kinds.entry(sqskit::dlq::error_kind(m)).or_default() += 1;
                *sources.entry(sqskit::dlq::source_queue(m).unwrap_or_else(|| "unknown".into())).or_default() += 1;
            }
            match a.output {
                Output::Json => {
                    println!("{}", serde_json::json!({"messages": msgs.len(), "kinds": kinds, "sources": sources}))
                }
                Output::Text => {
                    println!("{} message(s) in {}", msgs.len(), dlq.name());
                    println!("error kinds:");
                    for (k, n) in &kinds {
                        println!("  {k:<14} {n}");
                    }
                    println!("source queues:");
                    for (k, n) in &sources {
                        println!("  {k:<40} {n}");
                    }
                }
            }
            Ok(())
        }
    }
}
