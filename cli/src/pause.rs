//! `sqskit pause` / `sqskit resume`: stop and start every consumer of a queue without a redeploy.
//! The queue's pause tag is the library's (`sqskit::flow::pause`); a Lambda function's event
//! source mapping (`--function`) is switched here, with the Lambda API (the library never calls
//! it).

use anyhow::Context;
use aws_sdk_lambda::error::ProvideErrorMetadata;

use crate::common::{aws_config, Global};

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// Queue URL or name (repeatable, or comma-separated).
    #[arg(long = "queue-url", env = "SQSKIT_QUEUE_URL", value_delimiter = ',', required = true)]
    pub queue_urls: Vec<String>,
    /// Why (shown by `sqskit stats`, the console, the pollers' logs and /status): letters,
    /// digits, spaces and _ . : / = + - @, at most 256 characters.
    #[arg(long, default_value = sqskit::flow::DEFAULT_REASON, value_parser = reason)]
    pub reason: String,
    /// Also disable this Lambda function's event source mapping from the queue (repeatable):
    /// Lambda stops polling it. `sqskit resume --function` enables it again.
    #[arg(long = "function", value_name = "NAME")]
    pub functions: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Queue URL or name (repeatable, or comma-separated).
    #[arg(long = "queue-url", env = "SQSKIT_QUEUE_URL", value_delimiter = ',', required = true)]
    pub queue_urls: Vec<String>,
    /// Also enable this Lambda function's event source mapping from the queue (repeatable).
    #[arg(long = "function", value_name = "NAME")]
    pub functions: Vec<String>,
}

fn reason(s: &str) -> Result<String, String> {
    sqskit::flow::check_reason(s).map_err(|e| e.to_string())
}

pub async fn pause(global: &Global, args: PauseArgs) -> anyhow::Result<()> {
    switch(global, &args.queue_urls, &args.functions, Some(&args.reason)).await
}

pub async fn resume(global: &Global, args: ResumeArgs) -> anyhow::Result<()> {
    switch(global, &args.queue_urls, &args.functions, None).await
}

/// Pause (`reason` given) or resume each queue, and switch the functions' mappings from it.
async fn switch(global: &Global, queues: &[String], functions: &[String], reason: Option<&str>) -> anyhow::Result<()> {
    let config = aws_config(global).await?;
    let client = aws_sdk_sqs::Client::new(&config);
    let lambda = (!functions.is_empty()).then(|| aws_sdk_lambda::Client::new(&config));
    let every = sqskit::flow::PAUSE_CHECK_INTERVAL.as_secs();
    for given in queues {
        let queue = crate::common::queue(&client, given).await?;
        if let Some(lambda) = &lambda {
            let arn = queue.attributes().await?.arn.with_context(|| format!("{} has no QueueArn", queue.name()))?;
            for f in functions {
                set_mappings(lambda, f, &arn, queue.name(), reason.is_none()).await?;
            }
        }
        match reason {
            Some(reason) => {
                sqskit::flow::pause(&queue, reason).await?;
                println!(
                    "paused {} ({reason}): its pollers stop receiving within {every} s; in-flight messages finish",
                    queue.name()
                );
            }
            None => match sqskit::flow::resume(&queue).await? {
                Some(was) => {
                    println!("resumed {} (was paused: {was}): its pollers receive again within {every} s", queue.name())
                }
                None => println!("{} was not paused", queue.name()),
            },
        }
    }
    Ok(())
}

/// Enable or disable every event source mapping of `function` from the queue `arn`.
async fn set_mappings(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    arn: &str,
    queue: &str,
    enabled: bool,
) -> anyhow::Result<()> {
    let mut uuids = Vec::new();
    let mut marker = None;
    loop {
        let out = lambda
            .list_event_source_mappings()
            .function_name(function)
            .event_source_arn(arn)
            .set_marker(marker.take())
            .send()
            .await
            .map_err(|e| lambda_error("ListEventSourceMappings", function, e))?;
        uuids.extend(out.event_source_mappings().iter().filter_map(|m| m.uuid().map(str::to_string)));
        match out.next_marker() {
            Some(m) if !m.is_empty() => marker = Some(m.to_string()),
            _ => break,
        }
    }
    anyhow::ensure!(
        !uuids.is_empty(),
        "the Lambda function {function:?} has no event source mapping from {queue} ({arn})"
    );
    for uuid in uuids {
        let out = lambda
            .update_event_source_mapping()
            .uuid(&uuid)
            .enabled(enabled)
            .send()
            .await
            .map_err(|e| lambda_error("UpdateEventSourceMapping", function, e))?;
        println!(
            "{} the event source mapping {uuid} ({queue} -> {function}): {}",
            if enabled { "enabled" } else { "disabled" },
            out.state().unwrap_or("?")
        );
    }
    Ok(())
}

fn lambda_error<E, R>(operation: &str, function: &str, e: aws_sdk_lambda::error::SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.code() {
        Some("ResourceNotFoundException") => anyhow::anyhow!("there is no Lambda function {function:?} ({operation})"),
        Some(code) => anyhow::anyhow!("{operation} for {function:?}: {code}: {}", e.message().unwrap_or_default()),
        None => anyhow::anyhow!("{operation} for {function:?}: {}", aws_sdk_lambda::error::DisplayErrorContext(&e)),
    }
}
