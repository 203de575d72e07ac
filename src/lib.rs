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
//! - [`message`]: messages sent, received, and handed to handlers.
//! - [`health`]: liveness and readiness (feature `poller`).
//! - [`limits`]: SQS limits and the batching arithmetic.
//! - [`metrics`]: Prometheus exporter and CloudWatch EMF lines.
//! - [`outcome`]: failure kinds, verdicts, outcomes and decisions (plain values).
//! - [`rate`]: start limits (messages per second).
//! - [`idempotency`]: run each logical message once (memory, DynamoDB, Redis stores; the claim
//!   and completion rules).
//! - [`payload`]: large payloads through S3 (claim check, Amazon SQS Extended Client format).
//! - [`retry`]: exponential backoff with jitter.
//! - [`trace`]: trace context through queues (`traceparent`, `AWSTraceHeader`).
//! - [`delay`]: delivery past 15 minutes in hops.
//! - [`otel`]: OpenTelemetry messaging spans.
//! - [`client`]: the [`Queue`] handle: send / send_batch (chunked to SQS limits), receive,
//!   delete_batch, change_visibility_batch, attributes; the home of the claim check and the
//!   delay hop.
//! - [`context`]: the queue context (source queue, DLQ, FIFO, redrive policy, lease, start limits).
//! - [`settle`]: the one path that turns outcomes into SQS actions (delete, visibility, DLQ).
//! - [`processor`]: handlers and the engine that decides every message, the FIFO rules.
//! - [`dlq`]: archive dead letters to S3 with one aggregated SNS alert, redrive, move tasks.
//! - [`config`]: processor and idempotency settings from the environment (for the Lambdas).
//! - [`poller`]: the long-running consumer (concurrency, heartbeat, ack batching, shutdown).
//! - [`handlers`]: ready-made exec / HTTP handlers for the poller.
//! - [`lambda`]: `SqsEvent` → processor → `SqsBatchResponse`.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (core) | always | [`client`], [`message`], [`limits`], [`outcome`], [`context`], [`processor`], [`rate`], [`delay`], [`retry`], [`settle`], [`env`](mod@env), [`config`], [`metrics`] (EMF lines, metric names), [`idempotency`] (with `MemoryStore`), [`trace`] |
//! | `poller` | yes | [`poller`], [`health`] (liveness / readiness) and [`shutdown_signal`] |
//! | `lambda` | no | [`lambda`]: the adapter and `lambda::run`; re-exports `lambda_runtime` and `aws_lambda_events` |
//! | `handlers` | no | [`handlers`]: `--exec` / `--http` handlers (reqwest + rustls) |
//! | `payload` | no | [`payload`]: bodies over 1 MiB through S3 (claim check, Extended Client format) |
//! | `dlq` | no | [`dlq`]: archive to S3, one SNS alert, redrive (enables `payload`) |
//! | `prometheus` | no | `metrics::install_prometheus` |
//! | `idempotency-dynamodb` | no | `idempotency::DynamoDbStore` (Powertools' record layout) |
//! | `idempotency-redis` | no | `idempotency::RedisStore` |
//! | `otel` | no | [`otel`]: OpenTelemetry messaging spans (receive / process / settle) and the id generator that keeps exported ids equal to the propagated ones |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod client;
pub mod config;
pub mod context;
pub mod delay;
#[cfg(feature = "dlq")]
pub mod dlq;
pub mod env;
pub mod error;
#[cfg(feature = "handlers")]
pub mod handlers;
#[cfg(feature = "poller")]
pub mod health;
pub mod idempotency;
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
pub mod settle;
mod span;
pub mod trace;

pub use client::{load_aws_config, BatchReport, Queue, QueueAttributes, RedrivePolicy, SendBatchReport, SentMessage};
pub use context::QueueContext;
pub use error::{EntryFailure, Error};
pub use message::{AttributeValue, Message, OutgoingMessage, ReceivedMessage};
pub use outcome::{Decision, Failure, FailureKind, Outcome, Verdict};
#[cfg(feature = "poller")]
pub use poller::shutdown_signal;
pub use processor::{BatchHandler, Handler, HandlerError, Processor, ProcessorConfig, ResultExt};

/// The README's Rust snippets, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
