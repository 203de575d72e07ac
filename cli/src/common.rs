//! What every subcommand shares: global flags, logging, AWS configuration, errors.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Output format of data.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Global {
    /// Endpoint override for AWS services (e.g. LocalStack: http://127.0.0.1:4566).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Log format on stderr (filter with RUST_LOG, default info).
    #[arg(long, global = true, env = "SQSKIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
        LogFormat::Text => builder.init(),
    }
}

/// The AWS configuration from the standard chain, with the endpoint override if given.
pub async fn aws_config(global: &Global) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = &global.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

pub async fn sqs(global: &Global) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&aws_config(global).await)
}

/// Print one clear line and return exit code 1.
pub fn fail(e: anyhow::Error) -> std::process::ExitCode {
    eprintln!("sqskit: error: {e:#}");
    std::process::ExitCode::from(1)
}
