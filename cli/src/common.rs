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
    /// AWS region (default: AWS_REGION, then the profile's region).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Log format on stderr (filter with RUST_LOG, default info).
    #[arg(long, global = true, env = "SQSKIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export OpenTelemetry spans (receive / process / settle, messaging conventions) over
    /// OTLP/HTTP (protobuf) to this collector, e.g. http://127.0.0.1:4318 (`/v1/traces` is
    /// added to a URL without a path). Off when unset. OTEL_SERVICE_NAME,
    /// OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_HEADERS / _TIMEOUT apply.
    #[arg(long, global = true, env = "SQSKIT_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// What has to be flushed before the process exits.
pub struct Telemetry {
    provider: Option<sqskit::otel::opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Flush and stop the span exporter (spans still queued are sent).
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("sqskit: warning: OpenTelemetry export did not shut down cleanly: {e}");
            }
        }
    }
}

/// Logs on stderr (text or JSON) and, with `--otlp-endpoint`, OpenTelemetry export. Call it
/// before the async runtime exists: the exporter's HTTP client runs on a thread of its own.
pub fn init_logging(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(false).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let (otel, provider) = match otlp_endpoint.filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            let provider = tracer_provider(endpoint)?;
            use sqskit::otel::opentelemetry::trace::TracerProvider as _;
            let layer = sqskit::otel::tracing_opentelemetry::layer().with_tracer(provider.tracer("sqskit"));
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).init();
    Ok(Telemetry { provider })
}

/// `--otlp-endpoint` as the traces URL: a base URL gets `/v1/traces`, a URL with a path is
/// taken as it is.
pub fn otlp_traces_url(endpoint: &str) -> anyhow::Result<String> {
    let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
        if endpoint.starts_with("https://") {
            anyhow::anyhow!(
                "--otlp-endpoint {endpoint:?}: https is not supported; point it at a collector on the host or \
                     a sidecar over http (e.g. http://127.0.0.1:4318), which forwards with TLS"
            )
        } else {
            anyhow::anyhow!("--otlp-endpoint {endpoint:?}: expected an http:// URL such as http://127.0.0.1:4318")
        }
    })?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        anyhow::bail!("--otlp-endpoint {endpoint:?}: no host");
    }
    if path.trim_end_matches('/').is_empty() {
        Ok(format!("http://{host}/v1/traces"))
    } else {
        Ok(endpoint.to_string())
    }
}

fn tracer_provider(endpoint: &str) -> anyhow::Result<sqskit::otel::opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use sqskit::otel::opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(otlp_traces_url(endpoint)?)
        .build()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint:?}: {e}"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("sqskit");
    }
    Ok(SdkTracerProvider::builder()
        .with_id_generator(sqskit::otel::IdGenerator::default())
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build())
}

/// Where the AWS calls of this process go, for error messages: the endpoint and the region.
static TARGET: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// The AWS configuration from the standard chain, with the endpoint and region overrides if
/// given. Checked before any call, so that the first errors a newcomer meets are sentences:
/// no region (names AWS_REGION and --region), no credentials (says where they are looked for).
pub async fn aws_config(global: &Global) -> anyhow::Result<aws_config::SdkConfig> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = &global.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = &global.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    let Some(region) = sdk.region().map(|r| r.to_string()) else {
        anyhow::bail!(
            "no AWS region is configured: set AWS_REGION (e.g. `export AWS_REGION=us-east-1`), give your AWS profile \
             a region, or pass --region"
        );
    };
    let endpoint = global.endpoint_url.clone().unwrap_or_else(|| format!("https://sqs.{region}.amazonaws.com"));
    let _ = TARGET.set((endpoint, region));
    if let Some(provider) = sdk.credentials_provider() {
        use aws_sdk_sqs::config::ProvideCredentials;
        if let Err(e) = provider.provide_credentials().await {
            tracing::debug!(error = ?e, "credentials chain");
            let said = first_line(&e);
            anyhow::bail!(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, choose a profile with \
                 AWS_PROFILE (run `aws sso login` first for an SSO profile), or run where a role is available (ECS task \
                 role, EC2 instance profile); for LocalStack any values work (e.g. test/test). The SDK said: {}",
                said.trim_end_matches("Attempted:").trim_end().trim_end_matches('.')
            );
        }
    }
    Ok(sdk)
}

fn first_line(e: &dyn std::error::Error) -> String {
    use std::fmt::Write;
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let _ = write!(text, ": {s}");
        next = s.source();
    }
    text.lines().next().unwrap_or_default().to_string()
}

pub async fn sqs(global: &Global) -> anyhow::Result<aws_sdk_sqs::Client> {
    Ok(aws_sdk_sqs::Client::new(&aws_config(global).await?))
}

/// The queue a `--queue-url` (or `--dlq-url`) value names: a URL as it is, anything else
/// looked up as a queue name (`GetQueueUrl`), so that a name works where a URL is expected.
///
/// # Errors
/// No queue of that name (the error names it), or the lookup failed.
pub async fn queue(client: &aws_sdk_sqs::Client, given: &str) -> anyhow::Result<sqskit::Queue> {
    if given.contains("://") {
        return Ok(sqskit::Queue::new(client.clone(), given));
    }
    Ok(sqskit::Queue::by_name(client.clone(), given, None).await?)
}

/// The sentence for an error a newcomer meets first (a queue that does not exist, an endpoint
/// that does not answer), or `None` to print the error as it is.
fn explain(e: &anyhow::Error) -> Option<String> {
    let (endpoint, region) = TARGET.get().cloned().unwrap_or_else(|| ("the AWS endpoint".into(), "?".into()));
    let err = e.chain().find_map(|c| c.downcast_ref::<sqskit::Error>())?;
    match err {
        sqskit::Error::QueueDoesNotExist { queue } if queue.contains("://") => Some(format!(
            "the queue URL {queue} names no queue (endpoint {endpoint}, region {region}): check the URL, or create \
             the queue (`sqskit create-queue NAME`)"
        )),
        sqskit::Error::QueueDoesNotExist { queue } => Some(format!(
            "there is no queue named {queue:?} (endpoint {endpoint}, region {region}): check the name, or create it \
             (`sqskit create-queue {queue}`)"
        )),
        sqskit::Error::Transport { operation, message, .. } if unreachable(message) => {
            let why = if message.contains("Connection refused") {
                "connection refused"
            } else if message.contains("dns error") || message.contains("failed to lookup") {
                "its host name does not resolve"
            } else {
                "no answer"
            };
            Some(format!(
                "cannot reach the endpoint {endpoint} ({why}) for {operation}: check --endpoint-url / AWS_ENDPOINT_URL \
                 and the network (for LocalStack: `scripts/localstack start`)"
            ))
        }
        _ => None,
    }
}

fn unreachable(message: &str) -> bool {
    ["Connection refused", "tcp connect error", "dns error", "failed to lookup", "timed out", "timeout"]
        .iter()
        .any(|m| message.contains(m))
}

/// Print one clear line and return exit code 1.
pub fn fail(e: anyhow::Error) -> std::process::ExitCode {
    match explain(&e) {
        Some(sentence) => eprintln!("sqskit: error: {sentence}"),
        None => eprintln!("sqskit: error: {e:#}"),
    }
    std::process::ExitCode::from(1)
}
