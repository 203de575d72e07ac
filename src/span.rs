//! The `tracing` spans sqskit opens: one per message the processor handles, one per SQS call
//! the poller and settlement make.
//!
//! It owns their names and fields: a message's span carries its id, queue, receive count and,
//! when the message carries a trace context ([`crate::trace`]), the processing span's ids and a
//! link to the producer's; with the `otel` feature [`crate::otel`] adds what the OpenTelemetry
//! messaging conventions ask for. It does not propagate trace context (that is
//! [`crate::trace`]) nor export anything (that is the application's subscriber).

use std::future::Future;

use crate::message::ReceivedMessage;
use crate::trace::TraceContext;

/// The processor's `tracing` span for one message: `message_id`, `queue`, `receive_count`, and
/// when the message carries a trace context, `trace_id` / `span_id` (this processing span, see
/// [`TraceContext::processing`](crate::trace::TraceContext::processing)) and `link.trace_id` / `link.span_id` (the producer's span).
pub(crate) fn message_span(raw: &ReceivedMessage, queue: &str) -> tracing::Span {
    use tracing::field::Empty;
    let span = tracing::info_span!("message", message_id = %raw.message_id, queue, receive_count = raw.receive_count(),
        trace_id = Empty, span_id = Empty, link.trace_id = Empty, link.span_id = Empty,
        otel.name = Empty, otel.kind = Empty);
    let producer = TraceContext::from_message(raw);
    let mine = producer.as_ref().map(|p| TraceContext::processing_of(p, raw));
    if let (Some(producer), Some(mine)) = (&producer, &mine) {
        span.record("trace_id", mine.trace_id().as_str());
        span.record("span_id", mine.span_id().as_str());
        span.record("link.trace_id", producer.trace_id().as_str());
        span.record("link.span_id", producer.span_id().as_str());
    }
    #[cfg(feature = "otel")]
    crate::otel::process(&span, raw, queue, producer.as_ref().zip(mine.as_ref()));
    span
}

/// Run `fut` (one SQS call of `operation`, `receive` or `settle`) inside a span that the `otel`
/// feature exports as a messaging client span, with `count(&output)` as its message count;
/// without the feature, just `fut`.
#[cfg(feature = "otel")]
pub(crate) async fn operation<F: Future>(
    operation: &'static str,
    queue: &str,
    fut: F,
    count: impl FnOnce(&F::Output) -> usize,
) -> F::Output {
    use tracing::field::Empty;
    use tracing::Instrument;
    let span = match operation {
        "receive" => tracing::info_span!("receive", queue, otel.name = Empty, otel.kind = Empty),
        _ => tracing::info_span!("settle", queue, otel.name = Empty, otel.kind = Empty),
    };
    crate::otel::operation(&span, operation, queue);
    let out = fut.instrument(span.clone()).await;
    crate::otel::count(&span, count(&out));
    out
}

/// Without the `otel` feature: just `fut`.
#[cfg(not(feature = "otel"))]
pub(crate) async fn operation<F: Future>(
    _operation: &'static str,
    _queue: &str,
    fut: F,
    _count: impl FnOnce(&F::Output) -> usize,
) -> F::Output {
    fut.await
}
