//! OpenTelemetry spans for what sqskit does (feature `otel`, off by default).
//!
//! With this feature the processor's and the poller's `tracing` spans carry what the
//! [OpenTelemetry messaging conventions] ask for, so a [`tracing_opentelemetry`] layer exports
//! them as proper messaging spans:
//!
//! | span | kind | when |
//! |---|---|---|
//! | `receive <queue>` | client | each `ReceiveMessage` call of the poller that returned messages |
//! | `process <queue>` | consumer | each message, around decoding, the handler and its decision |
//! | `settle <queue>` | client | each `DeleteMessageBatch` / `ChangeMessageVisibilityBatch` call |
//!
//! with `messaging.system = aws_sqs`, `messaging.destination.name` (the queue name),
//! `messaging.operation.name` / `messaging.operation.type`, and `messaging.message.id` (process)
//! or `messaging.batch.message_count` (receive, settle). A process span whose message carries a
//! trace context (see [`crate::trace`]) is **linked** to the producer's span, not a child of it.
//!
//! ## One set of ids
//!
//! sqskit propagates the processing span's context on its own (`traceparent` on messages the
//! handler sends, `TRACEPARENT` for `--exec`, headers for `--http`), with the producer's trace
//! id and a span id of its own ([`TraceContext::processing`](crate::trace::TraceContext::processing)).
//! For the exported span to *be* that span, build the tracer provider with this module's
//! [`IdGenerator`]: while sqskit starts a process span it hands the generator that trace id and
//! span id, so the exported span, the JSON log's `trace_id` / `span_id` and what downstream
//! consumers link to are one and the same. Any other span gets random ids, as with the SDK's
//! default generator.
//!
//! Exporters are the application's business: the `sqskit` binary builds an OTLP/HTTP exporter
//! for `--otlp-endpoint`; a library user builds whichever they like.
//!
//! # Example
//! ```
//! use sqskit::otel::{opentelemetry::trace::TracerProvider as _, opentelemetry_sdk, tracing_opentelemetry};
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! // any exporter: OTLP (opentelemetry-otlp), stdout, in-memory...
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
//!     .with_id_generator(sqskit::otel::IdGenerator::default())
//!     .build();
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("my-worker")));
//! # drop(subscriber);
//! ```
//!
//! [OpenTelemetry messaging conventions]: https://opentelemetry.io/docs/specs/semconv/messaging/messaging-spans/

use std::cell::Cell;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry::KeyValue;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::message::ReceivedMessage;
use crate::trace::TraceContext;

pub use opentelemetry;
pub use opentelemetry_sdk;
pub use tracing_opentelemetry;

/// `messaging.system` for Amazon SQS.
pub const MESSAGING_SYSTEM: &str = "aws_sqs";

thread_local! {
    /// Ids for the span being started on this thread right now (see [`IdGenerator`]).
    static NEXT: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// An [`opentelemetry_sdk::trace::IdGenerator`] that gives a process span the ids sqskit
/// propagates (see the module docs) and random ids to every other span.
///
/// # Example
/// ```
/// let provider = sqskit::otel::opentelemetry_sdk::trace::SdkTracerProvider::builder()
///     .with_id_generator(sqskit::otel::IdGenerator::default())
///     .build();
/// # drop(provider);
/// ```
#[derive(Debug, Default, Clone)]
pub struct IdGenerator {
    random: opentelemetry_sdk::trace::RandomIdGenerator,
}

impl opentelemetry_sdk::trace::IdGenerator for IdGenerator {
    fn new_trace_id(&self) -> TraceId {
        match NEXT.with(Cell::get) {
            Some((trace, _)) => trace,
            None => self.random.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match NEXT.with(Cell::get) {
            Some((_, span)) => span,
            None => self.random.new_span_id(),
        }
    }
}

fn span_context(ctx: &TraceContext, remote: bool) -> SpanContext {
    let state = ctx.tracestate().and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
    SpanContext::new(
        TraceId::from_bytes(ctx.trace_id_bytes()),
        SpanId::from_bytes(ctx.span_id_bytes()),
        TraceFlags::new(ctx.flags()),
        remote,
        state,
    )
}

fn common(span: &tracing::Span, operation: &'static str, kind: &'static str, queue: &str) {
    span.record("otel.name", format!("{operation} {queue}"));
    span.record("otel.kind", kind);
    span.set_attribute("messaging.system", MESSAGING_SYSTEM);
    span.set_attribute("messaging.destination.name", queue.to_string());
    span.set_attribute("messaging.operation.name", operation);
    span.set_attribute("messaging.operation.type", operation);
}

/// Make the message span a `process <queue>` consumer span; with a producer context, start it
/// now, in the producer's trace with sqskit's processing span id, without a parent, linked to
/// the producer's span.
pub(crate) fn process(
    span: &tracing::Span,
    raw: &ReceivedMessage,
    queue: &str,
    ids: Option<(&TraceContext, &TraceContext)>,
) {
    if span.is_disabled() {
        return;
    }
    common(span, "process", "consumer", queue);
    span.set_attribute("messaging.message.id", raw.message_id.clone());
    if let Some(group) = raw.system_attributes.get("MessageGroupId") {
        span.set_attribute("messaging.aws.sqs.message_group_id", group.clone());
    }
    span.set_attribute("messaging.aws.sqs.receive_count", i64::from(raw.receive_count()));
    let Some((producer, mine)) = ids else { return };
    span.add_link_with_attributes(span_context(producer, true), vec![KeyValue::new("sqskit.link", "producer")]);
    // not a child of whatever was current (the Lambda invocation's span, a caller's span)
    let _ = span.set_parent(opentelemetry::Context::new());
    let ids = (TraceId::from_bytes(mine.trace_id_bytes()), SpanId::from_bytes(mine.span_id_bytes()));
    NEXT.with(|n| n.set(Some(ids)));
    // starts the OpenTelemetry span now, on this thread, so the generator sees the ids
    let _ = span.context();
    NEXT.with(|n| n.set(None));
}

/// Make `span` a `receive <queue>` or `settle <queue>` client span.
pub(crate) fn operation(span: &tracing::Span, operation: &'static str, queue: &str) {
    if !span.is_disabled() {
        common(span, operation, "client", queue);
    }
}

/// Set a receive or settle span's `messaging.batch.message_count`.
pub(crate) fn count(span: &tracing::Span, count: usize) {
    if !span.is_disabled() {
        span.set_attribute("messaging.batch.message_count", count as i64);
    }
}

/// Mark a process span failed (`otel.status_code = ERROR`) with the failure kind.
pub(crate) fn failed(span: &tracing::Span, kind: &str) {
    if !span.is_disabled() {
        span.set_status(opentelemetry::trace::Status::error(kind.to_string()));
        span.set_attribute("error.type", kind.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn process_span_takes_sqskit_ids_and_links_the_producer() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_id_generator(IdGenerator::default())
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        let msg = ReceivedMessage {
            message_id: "m-1".into(),
            receipt_handle: "h-1".into(),
            body: "b".into(),
            attributes: [(
                crate::trace::TRACEPARENT.to_string(),
                crate::AttributeValue::string("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            )]
            .into_iter()
            .collect(),
            system_attributes: Default::default(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        };
        let mine = TraceContext::processing(&msg).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("invocation");
            let _g = outer.enter();
            let span = crate::span::message_span(&msg, "orders");
            span.in_scope(|| tracing::info_span!("inner").in_scope(|| ()));
            let other = tracing::info_span!("unrelated");
            drop(other);
            drop(span);
        });
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().unwrap();
        let process = spans.iter().find(|s| s.name == "process orders").expect("process span");
        assert_eq!(process.span_context.trace_id().to_string(), mine.trace_id());
        assert_eq!(process.span_context.span_id().to_string(), mine.span_id());
        assert_eq!(process.parent_span_id, SpanId::INVALID);
        assert_eq!(process.span_kind, opentelemetry::trace::SpanKind::Consumer);
        assert_eq!(process.links.links.len(), 1);
        assert_eq!(process.links.links[0].span_context.span_id().to_string(), "00f067aa0ba902b7");
        let attr = |k: &str| process.attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.to_string());
        assert_eq!(attr("messaging.system").as_deref(), Some("aws_sqs"));
        assert_eq!(attr("messaging.destination.name").as_deref(), Some("orders"));
        assert_eq!(attr("messaging.message.id").as_deref(), Some("m-1"));
        let inner = spans.iter().find(|s| s.name == "inner").unwrap();
        assert_eq!(inner.parent_span_id.to_string(), mine.span_id());
        assert_eq!(inner.span_context.trace_id().to_string(), mine.trace_id());
        // other spans still get fresh random ids
        let other = spans.iter().find(|s| s.name == "unrelated").unwrap();
        assert_ne!(other.span_context.span_id().to_string(), mine.span_id());
    }
}
