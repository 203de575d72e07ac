//! Claim check cost against LocalStack: time to receive, resolve (S3 GetObject), handle (no-op)
//! and delete one 5 MiB claim-checked message, next to a plain 256-byte one. Sending is not
//! timed. Prints one JSON object (medians in milliseconds); `scripts/bench` runs it.
//!
//!   claim-check [--iterations N] [--size BYTES]

use std::time::{Duration, Instant};

use anyhow::Context;
use sqskit::payload::ClaimCheck;
use sqskit::{HandlerError, OutgoingMessage, Processor, Queue, QueueContext};

async fn median_ms(queue: &Queue, body: &str, iterations: usize) -> anyhow::Result<f64> {
    let processor = Processor::raw(|_m| async { Ok::<_, HandlerError>(()) });
    let ctx = QueueContext::new(queue.clone(), None);
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        queue.send(OutgoingMessage::new(body)).await?;
        let started = Instant::now();
        let mut batch = Vec::new();
        while batch.is_empty() {
            batch = queue.receive(1, Duration::from_secs(5), None).await?;
        }
        let decisions = processor.process_batch(&ctx, batch).await;
        let report = processor.settle(&ctx, &decisions).await;
        anyhow::ensure!(report.succeeded == 1, "not processed: {report:?}");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut iterations = 20;
    let mut size = 5 << 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().context("a flag needs a value")?;
        match a.as_str() {
            "--iterations" => iterations = value.parse()?,
            "--size" => size = value.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let sdk = sqskit::load_aws_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let s3 = sqskit::payload::s3_client(&sdk);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let bucket = format!("sqskit-bench-cc-{stamp}");
    s3.create_bucket().bucket(&bucket).send().await.context("create bucket")?;
    let url = sqs.create_queue().queue_name(format!("bench-cc-{stamp}")).send().await?.queue_url.unwrap_or_default();
    let queue = Queue::new(sqs.clone(), url.clone()).with_claim_check(ClaimCheck::new(s3, &bucket));

    let small = median_ms(&queue, &"s".repeat(256), iterations).await?;
    let large = median_ms(&queue, &"L".repeat(size), iterations).await?;
    let _ = sqs.delete_queue().queue_url(url).send().await;
    println!(
        "{}",
        serde_json::json!({
            "iterations": iterations,
            "plain_256_b_ms": (small * 10.0).round() / 10.0,
            "claim_checked_ms": (large * 10.0).round() / 10.0,
            "claim_checked_bytes": size,
        })
    );
    Ok(())
}
