//! `sqskit peek`: look at messages without consuming them.

use std::time::Duration;

use crate::common::{sqs, Global, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Queue URL, or its name (looked up with GetQueueUrl).
    #[arg(long, env = "SQSKIT_QUEUE_URL")]
    pub queue_url: String,
    /// How many messages at most (1–100000).
    #[arg(short = 'n', long, default_value_t = 10, value_parser = crate::args::count(1..=100_000))]
    pub count: usize,
    /// Show whole bodies (default: the first 200 characters).
    #[arg(long)]
    pub full: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Messages are received with a 5 s visibility and released at once (visibility 0). A peek
/// counts as a receive: receive counts grow, and a redrive policy may move a message to its DLQ.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let queue = crate::common::queue(&sqs(global).await?, &args.queue_url).await?;
    let msgs = queue.peek(args.count, Duration::from_secs(5)).await?;
    let shown = |b: &str| {
        if args.full || b.chars().count() <= 200 {
            b.to_string()
        } else {
            format!("{}…", b.chars().take(200).collect::<String>())
        }
    };
    match args.output {
        Output::Json => {
            let rows: Vec<serde_json::Value> = msgs
                .iter()
                .map(|m| {
                    let attrs: serde_json::Map<String, serde_json::Value> =
                        m.attributes.iter().map(|(k, v)| (k.clone(), serde_json::json!(v.string_value))).collect();
                    serde_json::json!({
                        "message_id": m.message_id, "receive_count": m.receive_count(), "group_id": m.group_id(),
                        "sent_timestamp": m.system_attributes.get("SentTimestamp"), "attributes": attrs, "body": shown(&m.body),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string(&rows)?);
        }
        Output::Text => {
            println!("{} message(s) in {} (left in place)", msgs.len(), queue.name());
            for m in &msgs {
                println!(
                    "--- {}  receives: {}{}",
                    m.message_id,
                    m.receive_count(),
                    m.group_id().map(|g| format!("  group: {g}")).unwrap_or_default()
                );
                let mut names: Vec<&String> = m.attributes.keys().collect();
                names.sort();
                for k in names {
                    let v = &m.attributes[k];
                    println!("    {k} ({}) = {}", v.data_type, v.string_value.as_deref().unwrap_or("<binary>"));
                }
                println!("{}", shown(&m.body));
            }
        }
    }
    Ok(())
}
