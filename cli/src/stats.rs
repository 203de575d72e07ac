//! `sqskit stats`: queue depth and the DLQ, once or refreshed in place.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use sqskit::inventory::QueueStats;
use sqskit::Queue;

use crate::common::{sqs, Global, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Queue URL or name (repeatable).
    #[arg(long = "queue-url", env = "SQSKIT_QUEUE_URL", value_delimiter = ',', required = true)]
    pub queue_urls: Vec<String>,
    /// Refresh every SECS seconds (1–86400) until interrupted.
    #[arg(long, value_name = "SECS", value_parser = crate::args::secs(1..=86_400))]
    pub watch: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

fn render(rows: &[QueueStats]) -> String {
    let mut s = format!(
        "{:<40} {:>9} {:>9} {:>9}  {}\n",
        "QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED", "DLQ (visible, maxReceiveCount)"
    );
    for r in rows {
        let dlq = match (&r.dlq, r.dlq_visible, r.max_receive_count) {
            (Some(n), v, m) => format!("{n} ({}, {})", v.map_or("?".into(), |v| v.to_string()), m.unwrap_or(0)),
            _ => "-".into(),
        };
        s.push_str(&format!("{:<40} {:>9} {:>9} {:>9}  {}\n", r.queue, r.visible, r.in_flight, r.delayed, dlq));
    }
    s
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = sqs(global).await?;
    let mut queues: Vec<Queue> = Vec::with_capacity(args.queue_urls.len());
    for given in &args.queue_urls {
        queues.push(crate::common::queue(&client, given).await?);
    }
    loop {
        let rows = sqskit::inventory::stats(&queues).await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string(&rows)?),
            Output::Text => {
                let text = render(&rows);
                if args.watch.is_some() && std::io::stdout().is_terminal() {
                    print!("\x1b[H\x1b[2J{text}");
                } else {
                    print!("{text}");
                }
                std::io::stdout().flush()?;
            }
        }
        let Some(every) = args.watch else { return Ok(()) };
        tokio::time::sleep(Duration::from_secs(every.max(1))).await;
    }
}
