//! The DLQ monitor Lambda: archives dead letters to S3 and sends one SNS alert per invocation.
//! All logic is in `sqskit::dlq`; this only wires it to the Lambda runtime.
//!
//! Environment: `SQSKIT_ARCHIVE_BUCKET` (required), `SQSKIT_ARCHIVE_PREFIX`, `SQSKIT_ALERT_TOPIC_ARN`,
//! `SQSKIT_ALERT_INCLUDE_BODY`, `SQSKIT_ARCHIVE_RESOLVE_PAYLOADS` (the old names without `SQSKIT_` still
//! work for one release, with a warning).

use std::sync::Arc;

use sqskit::dlq::{DlqMonitor, MonitorConfig};
use sqskit::lambda::aws_lambda_events::event::sqs::SqsEvent;
use sqskit::lambda::lambda_runtime::{self, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    sqskit::lambda::init_logging();
    let config = MonitorConfig::from_env()?;
    let sdk = sqskit::load_aws_config().await;
    let monitor = Arc::new(DlqMonitor::new(&sdk, config));
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "dlq-monitor".into());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let (monitor, sqs, function) = (monitor.clone(), sqs.clone(), function.clone());
        async move {
            let (response, summary) = sqskit::lambda::handle_dlq_event(&monitor, event.payload, &sqs).await?;
            println!("{}", summary.emf_line(&function));
            Ok::<_, Error>(response)
        }
    }))
    .await
}
