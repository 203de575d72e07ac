//! # sqskit
//!
//! Consume Amazon SQS in production, on containers (the [`poller`]) and
//! in Lambda (the [`lambda`] adapter), with one [`processor`] deciding every
//! message's fate:
//!
//! ```text
//!           receive (long poll, ≤10)            handler result                 SQS actions (batched)
//! SQS ──► client::Queue ──► Message<T> ──► processor ──► Outcome ──► client::Queue
//!                                              │    success     → delete
//!   poller (ECS)  ── feeds ────────────────────┤    retry(after)→ change visibility (backoff)
//!   lambda adapter (SqsEvent) ── feeds ────────┘    permanent   → send to DLQ + delete
//! ```
//!
//! Modules, in layers from the bottom (a module imports only from layers below it; no import
//! cycle, checked by `scripts/check-layers`):
//!
//! - [`error`]: the library's error types, classified by what a caller does next.
//! - [`env`](mod@env): the one place environment variables are read (typed getters, errors that name the
//!   variable).
//! - [`envelope`]: the payload inside SNS, EventBridge, S3 and CloudEvents messages and their
//!   metadata (feature `events`; a leaf, since a handler's [`Message`] carries the metadata).
//! - [`message`]: messages sent, received, and handed to handlers.
//! - [`health`]: liveness and readiness (feature `poller`).
//! - [`limits`]: SQS limits and the batching arithmetic.
//! - [`metrics`]: Prometheus exporter and CloudWatch EMF lines.
//! - [`outcome`]: failure kinds, verdicts, outcomes and decisions (plain values).
//! - [`rate`]: start limits (messages per second).
//! - [`idempotency`]: run each logical message once (memory, DynamoDB, Redis stores; the claim
//!   and completion rules).
//! - [`schema`]: JSON Schema checks of payloads before a handler (feature `schema`).
//! - [`payload`]: large payloads through S3 (claim check, Amazon SQS Extended Client format).
//! - [`retry`]: exponential backoff with jitter.
//! - [`trace`]: trace context through queues (`traceparent`, `AWSTraceHeader`).
//! - [`delay`]: delivery past 15 minutes in hops.
//! - [`otel`]: OpenTelemetry messaging spans.
//! - [`client`]: the [`Queue`] handle: send / send_batch (chunked to SQS limits), receive,
//!   delete_batch, change_visibility_batch, attributes; the home of the claim check and the
//!   delay hop.
//! - [`context`]: the queue context (source queue, DLQ, FIFO, redrive policy, lease, start limits).
//! - [`inventory`]: list queues, their depth and their DLQ's, settings and tags (`sqskit stats`).
//! - [`settle`]: the one path that turns outcomes into SQS actions (delete, visibility, DLQ).
//! - [`processor`]: handlers and the engine that decides every message, the FIFO rules.
//! - [`dlq`]: dead letters: look at a DLQ and delete chosen ones ([`dlq::inspect`]), archive to S3
//!   with one aggregated SNS alert, browse the archive and replay it ([`dlq::replay`]), redrive,
//!   move tasks.
//! - [`flow`]: flow control as plain policies: the circuit breaker, the pause flag (a queue
//!   tag), the adaptive concurrency limit.
//! - [`config`]: processor and idempotency settings from the environment (for the Lambdas).
//! - [`poller`]: the long-running consumer (concurrency, heartbeat, ack batching, shutdown).
//! - [`status`]: a poller's state as one snapshot (`/status` next to `/metrics`).
//! - [`handlers`]: ready-made exec / HTTP handlers for the poller.
//! - [`router`]: each message to the handler for its type (feature `events`).
//! - [`lambda`]: `SqsEvent` → processor → `SqsBatchResponse`.
//!
//! ## The guide
//!
//! The chapters of `docs/` (the [`guide`]), one page each, their examples compiled as doc tests:
//!
//! - [Guarantees](guide::guarantees): at-least-once, FIFO order, leases, retries against
//!   `maxReceiveCount`, personal data, back-pressure, and what no consumer can rule out.
//! - [Exactly-once processing](guide::exactly_once): idempotency keys and stores, and the
//!   limits of the guarantee.
//! - [The poller](guide::poller): concurrency, heartbeat, drain, prefetch, idle cost.
//! - [Handlers without Rust](guide::handlers): `--exec` and `--http`.
//! - [Lambda](guide::lambda): the adapter, the worker and the DLQ monitor.
//! - [The sqskit command](guide::cli): every command, redrive, exit codes.
//! - [The web console](guide::console): queues, dead letters, the archive and the pollers in a
//!   browser; what a look costs; security.
//! - [Flow control](guide::flow_control): the circuit breaker, pausing a fleet, adaptive
//!   concurrency.
//! - [Messages from other services](guide::events): SNS, EventBridge, S3 and CloudEvents
//!   envelopes, routing by type, schemas at the edge, recurring jobs.
//! - [Rate limits](guide::rate_limits), [Delays past 15 minutes](guide::delays),
//!   [Tenants (fair queues)](guide::fair_queues).
//! - [Large messages](guide::large_messages): bodies over 1 MiB through S3.
//! - [Tracing](guide::tracing): trace context through queues, OpenTelemetry export.
//! - [Operating](guide::operating): health checks, autoscaling, Lambda polling modes.
//! - [Deploying](guide::deploying): the SAM template, packaging, the poller image.
//! - [Performance](guide::performance): throughput, latency, requests, Lambda size.
//! - [Repository layout](guide::layout).
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (core) | always | [`client`], [`message`], [`limits`], [`outcome`], [`context`], [`processor`], [`rate`], [`delay`], [`retry`], [`settle`], [`flow`], [`env`](mod@env), [`config`], [`metrics`] (EMF lines, metric names), [`idempotency`] (with `MemoryStore`), [`trace`], [`inventory`] |
//! | `poller` | yes | [`poller`], [`health`] (liveness / readiness), [`status`] and [`shutdown_signal`] |
//! | `lambda` | no | [`lambda`]: the adapter and `lambda::run`; re-exports `lambda_runtime` and `aws_lambda_events` |
//! | `handlers` | no | [`handlers`]: `--exec` / `--http` handlers (reqwest + rustls) |
//! | `payload` | no | [`payload`]: bodies over 1 MiB through S3 (claim check, Extended Client format) |
//! | `dlq` | no | [`dlq`]: archive to S3, one SNS alert, redrive, move tasks, [`dlq::inspect`], [`dlq::replay`] (enables `payload`) |
//! | `prometheus` | no | `metrics::install_prometheus` |
//! | `idempotency-dynamodb` | no | `idempotency::DynamoDbStore` (Powertools' record layout) |
//! | `idempotency-redis` | no | `idempotency::RedisStore` |
//! | `events` | no | [`envelope`]: SNS, EventBridge, S3 and CloudEvents envelopes (`aws_lambda_events`' types); [`router`]: routing by type |
//! | `schema` | no | [`schema`]: JSON Schema (2020-12) validation at the edge (`jsonschema`) |
//! | `otel` | no | [`otel`]: OpenTelemetry messaging spans (receive / process / settle) and the id generator that keeps exported ids equal to the propagated ones |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The rustdoc targets of the chapters' reference links. A chapter links with labels that are its
// GitHub targets (`[text][guarantees.md#leases]`, defined at its end as `guarantees.md#leases`);
// these definitions come first on each page, and rustdoc (CommonMark) takes the first definition
// of a label, so the crate docs link to the guide's pages and GitHub to the files. Written by
// `scripts/check-docs --fix` (which also checks that it is complete); rustdoc checks each target.
// BEGIN guide_links
macro_rules! guide_links {
    () => {
        concat!(
            "[../README.md]: https://github.com/sqskit/sqskit/blob/HEAD/README.md\n",
            "[../src/delay.rs]: crate::delay\n",
            "[../src/dlq.rs]: crate::dlq\n",
            "[../src/dlq/inspect.rs]: crate::dlq::inspect\n",
            "[../src/dlq/replay.rs]: crate::dlq::replay\n",
            "[../src/flow.rs]: crate::flow\n",
            "[../src/handlers.rs]: crate::handlers\n",
            "[../src/idempotency.rs]: crate::idempotency\n",
            "[../src/inventory.rs]: crate::inventory\n",
            "[../src/lambda.rs]: crate::lambda\n",
            "[../src/otel.rs]: crate::otel\n",
            "[../src/payload.rs]: crate::payload\n",
            "[../src/rate.rs]: crate::rate\n",
            "[../src/settle.rs]: crate::settle\n",
            "[../src/trace.rs]: crate::trace\n",
            "[../template.yaml]: https://github.com/sqskit/sqskit/blob/HEAD/template.yaml\n",
            "[../test-support/src/lambda_rt.rs]: https://github.com/sqskit/sqskit/blob/HEAD/test-support/src/lambda_rt.rs\n",
            "[cli.md]: crate::guide::cli\n",
            "[console.md]: crate::guide::console\n",
            "[delays.md]: crate::guide::delays\n",
            "[deploying.md]: crate::guide::deploying\n",
            "[events.md]: crate::guide::events\n",
            "[events.md#recurring-jobs]: crate::guide::events#recurring-jobs\n",
            "[exactly-once.md]: crate::guide::exactly_once\n",
            "[exactly-once.md#what-this-guarantees-and-what-it-does-not]: crate::guide::exactly_once#what-this-guarantees-and-what-it-does-not\n",
            "[fair-queues.md]: crate::guide::fair_queues\n",
            "[flow-control.md]: crate::guide::flow_control\n",
            "[flow-control.md#lambda]: crate::guide::flow_control#lambda\n",
            "[guarantees.md]: crate::guide::guarantees\n",
            "[guarantees.md#fifo-order-per-group]: crate::guide::guarantees#fifo-order-per-group\n",
            "[guarantees.md#leases]: crate::guide::guarantees#leases\n",
            "[guarantees.md#retries-against-maxreceivecount]: crate::guide::guarantees#retries-against-maxreceivecount\n",
            "[guarantees.md#what-counts-as-success]: crate::guide::guarantees#what-counts-as-success\n",
            "[handlers.md]: crate::guide::handlers\n",
            "[img/console-dlq.png]: https://github.com/sqskit/sqskit/blob/HEAD/docs/img/console-dlq.png\n",
            "[img/console-overview.png]: https://github.com/sqskit/sqskit/blob/HEAD/docs/img/console-overview.png\n",
            "[lambda.md]: crate::guide::lambda\n",
            "[lambda.md#the-adapter]: crate::guide::lambda#the-adapter\n",
            "[lambda.md#the-dlq-monitor]: crate::guide::lambda#the-dlq-monitor\n",
            "[large-messages.md]: crate::guide::large_messages\n",
            "[layout.md]: crate::guide::layout\n",
            "[operating.md]: crate::guide::operating\n",
            "[operating.md#worker-polling-mode-lambda]: crate::guide::operating#worker-polling-mode-lambda\n",
            "[performance.md]: crate::guide::performance\n",
            "[performance.md#lambda-size-and-init-time]: crate::guide::performance#lambda-size-and-init-time\n",
            "[poller.md]: crate::guide::poller\n",
            "[rate-limits.md]: crate::guide::rate_limits\n",
            "[tracing.md]: crate::guide::tracing\n",
            "[tracing.md#opentelemetry-export]: crate::guide::tracing#opentelemetry-export\n",
        )
    };
}
// END guide_links

pub mod client;
pub mod config;
pub mod context;
pub mod delay;
#[cfg(feature = "dlq")]
pub mod dlq;
pub mod env;
#[cfg(feature = "events")]
pub mod envelope;
pub mod error;
pub mod flow;
#[cfg(feature = "handlers")]
pub mod handlers;
#[cfg(feature = "poller")]
pub mod health;
pub mod idempotency;
pub mod inventory;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod limits;
pub mod message;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod outcome;
#[cfg(feature = "payload")]
pub mod payload;
#[cfg(feature = "poller")]
pub mod poller;
pub mod processor;
pub mod rate;
pub mod retry;
#[cfg(feature = "events")]
pub mod router;
#[cfg(feature = "schema")]
pub mod schema;
pub mod settle;
mod span;
#[cfg(feature = "poller")]
pub mod status;
pub mod trace;

pub use client::{load_aws_config, BatchReport, Queue, QueueAttributes, RedrivePolicy, SendBatchReport, SentMessage};
pub use context::QueueContext;
pub use error::{EntryFailure, Error};
pub use message::{AttributeValue, Message, OutgoingMessage, ReceivedMessage};
pub use outcome::{Decision, Failure, FailureKind, Outcome, Verdict};
#[cfg(feature = "poller")]
pub use poller::shutdown_signal;
pub use processor::{BatchHandler, Handler, HandlerError, Processor, ProcessorConfig, ResultExt};

#[doc = guide_links!()]
#[doc = include_str!("../docs/README.md")]
pub mod guide {
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/guarantees.md")]
    pub mod guarantees {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/exactly-once.md")]
    pub mod exactly_once {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/poller.md")]
    pub mod poller {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/handlers.md")]
    pub mod handlers {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/lambda.md")]
    pub mod lambda {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/cli.md")]
    pub mod cli {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/console.md")]
    pub mod console {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/flow-control.md")]
    pub mod flow_control {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/events.md")]
    pub mod events {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/rate-limits.md")]
    pub mod rate_limits {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/delays.md")]
    pub mod delays {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/fair-queues.md")]
    pub mod fair_queues {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/large-messages.md")]
    pub mod large_messages {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/tracing.md")]
    pub mod tracing {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/operating.md")]
    pub mod operating {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/deploying.md")]
    pub mod deploying {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/performance.md")]
    pub mod performance {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/layout.md")]
    pub mod layout {}
}

/// The README's Rust snippets, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
