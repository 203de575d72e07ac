//! `sqskit create-queue`.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::common::{sqs, Global};

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Queue name (a `.fifo` suffix is added for --fifo when missing).
    pub name: String,
    /// Also create `<name>-dlq` and a redrive policy to it.
    #[arg(long)]
    pub dlq: bool,
    /// Receives before SQS moves a message to the DLQ (1–1000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_receive_count: u32,
    /// Create FIFO queues (content-based deduplication on).
    #[arg(long)]
    pub fifo: bool,
    /// Queue visibility timeout in seconds (0–43200).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=43_200))]
    pub visibility_timeout: u32,
}

pub async fn create(global: &Global, args: CreateArgs) -> anyhow::Result<()> {
    let client = sqs(global).await?;
    let base = args.name.trim_end_matches(".fifo").to_string();
    let suffix = if args.fifo { ".fifo" } else { "" };
    let mut attrs: HashMap<QueueAttributeName, String> = HashMap::new();
    if args.fifo {
        attrs.insert(QueueAttributeName::FifoQueue, "true".into());
        attrs.insert(QueueAttributeName::ContentBasedDeduplication, "true".into());
    }
    if args.dlq {
        let dlq_name = format!("{base}-dlq{suffix}");
        let mut dlq_attrs = attrs.clone();
        dlq_attrs.insert(QueueAttributeName::MessageRetentionPeriod, "1209600".into());
        let dlq = client
            .create_queue()
            .queue_name(&dlq_name)
            .set_attributes(Some(dlq_attrs))
            .send()
            .await
            .with_context(|| format!("creating {dlq_name}"))?;
        let dlq_url = dlq.queue_url().context("no URL for the DLQ")?;
        let dlq_queue = sqskit::Queue::new(client.clone(), dlq_url);
        let arn = dlq_queue.attributes().await?.arn.context("no ARN for the DLQ")?;
        attrs.insert(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": args.max_receive_count}).to_string(),
        );
        println!("{dlq_url}");
    }
    attrs.insert(QueueAttributeName::VisibilityTimeout, args.visibility_timeout.to_string());
    let name = format!("{base}{suffix}");
    let out = client
        .create_queue()
        .queue_name(&name)
        .set_attributes(Some(attrs))
        .send()
        .await
        .with_context(|| format!("creating {name}"))?;
    println!("{}", out.queue_url().context("no queue URL returned")?);
    Ok(())
}
