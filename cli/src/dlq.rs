//! `sqskit dlq drain | list | replay`.

use std::time::Duration;

use sqskit::dlq::{DlqError, DlqMonitor, MonitorConfig};

use crate::common::{aws_config, Global, Output};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Archive every message of a DLQ to S3, delete them, send one SNS alert.
    Drain(DrainArgs),
    /// Error kinds and source queues of a DLQ's messages (left in place; each message looked
    /// at is received once, which raises its receive count).
    List(ListArgs),
    /// Send archived dead letters (the DLQ monitor's S3 archive) back to their source queue.
    Replay(ReplayArgs),
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
            let msgs = sqskit::dlq::inspect::look(&dlq, a.count).await?;
            let counts = sqskit::dlq::inspect::count(&msgs);
            match a.output {
                Output::Json => println!("{}", serde_json::to_string(&counts)?),
                Output::Text => {
                    println!("{} message(s) in {}", counts.messages, dlq.name());
                    println!("error kinds:");
                    for (k, n) in &counts.kinds {
                        println!("  {k:<14} {n}");
                    }
                    println!("source queues:");
                    for (k, n) in &counts.sources {
                        println!("  {k:<40} {n}");
                    }
                }
            }
            Ok(())
        }
        Command::Replay(a) => replay(&sdk, &sqs, a).await,
    }
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["key", "source", "all"])))]
pub struct ReplayArgs {
    /// S3 bucket of the archive (the DLQ monitor's ARCHIVE_BUCKET).
    #[arg(long)]
    pub bucket: String,
    /// Key prefix of the archive (ARCHIVE_PREFIX).
    #[arg(long, default_value = "dead-letters")]
    pub prefix: String,
    /// Replay this record (its S3 key; repeatable).
    #[arg(long)]
    pub key: Vec<String>,
    /// Replay the records of this source queue (with --day: of that day only).
    #[arg(long)]
    pub source: Option<String>,
    /// With --source: only the records of this day (YYYY-MM-DD, the day the message was sent, UTC).
    #[arg(long, requires = "source", value_parser = parse_day)]
    pub day: Option<String>,
    /// Replay every record of the archive.
    #[arg(long, conflicts_with_all = ["key", "source"])]
    pub all: bool,
    /// Send to this queue (URL or name) instead of each record's source queue.
    #[arg(long)]
    pub to: Option<String>,
    /// At most this many records (from --source / --all; newest day first; 1–100000).
    #[arg(long, default_value_t = 1000, value_parser = crate::args::count(1..=100_000))]
    pub max: usize,
    /// Show what would be sent and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

fn parse_day(s: &str) -> Result<String, String> {
    let ok = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a day as YYYY-MM-DD"))
    }
}

/// Records are sent, never deleted: a record replayed twice is sent twice.
async fn replay(sdk: &aws_config::SdkConfig, sqs: &aws_sdk_sqs::Client, a: ReplayArgs) -> anyhow::Result<()> {
    let archive = sqskit::dlq::replay::Archive::new(sdk, &a.bucket, &a.prefix);
    let mut keys = a.key.clone();
    if a.all || a.source.is_some() {
        let listed = archive.list(a.source.as_deref(), a.day.as_deref(), a.max).await?;
        keys.extend(listed.into_iter().map(|e| e.key));
    }
    let to = match &a.to {
        Some(t) => Some(crate::common::queue(sqs, t).await?),
        None => None,
    };
    let report = archive.replay(sqs, &keys, to.as_ref(), a.dry_run, |_| {}).await?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string(&report)?),
        Output::Text => {
            let verb = if a.dry_run { "would replay" } else { "replayed" };
            println!(
                "{verb} {} record(s) from s3://{}, {} failed",
                report.replayed.len(),
                a.bucket,
                report.failed.len()
            );
            for r in &report.replayed {
                println!("  {}  {} -> {}", r.message_id, r.key, r.queue);
            }
            for f in &report.failed {
                println!("  failed: {f}");
            }
        }
    }
    anyhow::ensure!(report.failed.is_empty(), "{} record(s) could not be replayed", report.failed.len());
    Ok(())
}
