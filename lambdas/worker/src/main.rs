//! The SQS-triggered worker Lambda: delivers webhooks through the sqskit processor.
//!
//! Copy it for your own work: replace [`WebhookDelivery`] and [`deliver`]. Everything else
//! (decoding, panics, backoff, DLQ, partial batch responses, FIFO rules) is the library's.
//!
//! Message: `{"delivery_id": "...", "url": "https://...", "event_type": "order.created", "payload": {...}}`.
//! 2xx → done; 3xx (never followed) / 429 / 5xx / timeout / connection error → retry with
//! backoff (honouring `Retry-After`); other 4xx or an invalid message → DLQ. HTTPS trusts the
//! platform's certificates, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set
//! ([`sqskit::handlers::http_client`]).

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::Deserialize;
use sqskit::lambda::LambdaAdapter;
use sqskit::{HandlerError, Message, Processor};

/// One webhook to deliver.
#[derive(Debug, Deserialize)]
struct WebhookDelivery {
    delivery_id: String,
    url: String,
    event_type: String,
    payload: serde_json::Value,
}

async fn deliver(http: reqwest::Client, msg: Message<WebhookDelivery>) -> Result<(), HandlerError> {
    let d = &msg.body;
    if !(d.url.starts_with("https://") || d.url.starts_with("http://")) {
        return Err(HandlerError::permanent(format!("delivery {} has no http(s) url", d.delivery_id)));
    }
    if d.event_type.is_empty() {
        return Err(HandlerError::permanent(format!("delivery {} has no event_type", d.delivery_id)));
    }
    let resp = http
        .post(&d.url)
        .header("Content-Type", "application/json")
        .header("X-Webhook-Event", &d.event_type)
        .header("X-Webhook-Delivery", &d.delivery_id)
        .header("X-Webhook-Attempt", msg.receive_count().to_string())
        .body(d.payload.to_string())
        .send()
        .await
        .map_err(|e| HandlerError::retryable(format!("delivery {}: {e}", d.delivery_id)))?;
    sqskit::handlers::classify_response(&resp)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    sqskit::lambda::init_logging();
    let config = sqskit::config::processor_from_env()?;
    let http = sqskit::handlers::http_client(Duration::from_secs(10))?;
    let processor = Processor::json(move |m: Message<WebhookDelivery>| deliver(http.clone(), m)).with_config(config);
    let adapter = Arc::new(LambdaAdapter::from_env(processor).await?);
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "worker".into());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let (adapter, function) = (adapter.clone(), function.clone());
        async move {
            let deadline = event.context.deadline();
            let (response, summary) = adapter.handle_with_deadline(event.payload, Some(deadline)).await?;
            println!("{}", summary.emf_line(&function));
            Ok::<_, Error>(response)
        }
    }))
    .await
}
