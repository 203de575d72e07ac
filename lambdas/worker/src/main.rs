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
//!
//! Exactly once per delivery: with `SQSKIT_IDEMPOTENCY_TABLE` set (the template sets it, with
//! `SQSKIT_IDEMPOTENCY_KEY=/delivery_id`), a copy of a delivery that already succeeded is
//! dropped without a second POST; `lambda::run` wires it.

use std::time::Duration;

use serde::Deserialize;
use sqskit::{HandlerError, Message, Processor};

/// One webhook to deliver.
#[derive(Debug, Deserialize)]
struct WebhookDelivery {
    delivery_id: String,
    url: String,
    event_type: String,
    payload: serde_json::Value,
}

async fn deliver(http: sqskit::handlers::reqwest::Client, msg: Message<WebhookDelivery>) -> Result<(), HandlerError> {
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
async fn main() -> Result<(), sqskit::lambda::BoxError> {
    let http = sqskit::handlers::http_client(Duration::from_secs(10))?;
    sqskit::lambda::run(Processor::json(move |m: Message<WebhookDelivery>| deliver(http.clone(), m))).await
}
