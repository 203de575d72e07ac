use serde::Deserialize;
use sqskit::{HandlerError, Message, Processor, ResultExt};

#[derive(Deserialize)]
struct Order {
    id: u64,
    amount_cents: i64,
}

async fn handle(order: Message<Order>) -> Result<(), HandlerError> {
    let cents = u64::try_from(order.body.amount_cents).permanent()?; // negative: straight to the DLQ
    tracing::info!(order = order.body.id, cents, "charged");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), sqskit::lambda::BoxError> {
    sqskit::lambda::run(Processor::json(handle)).await
}
