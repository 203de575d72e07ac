//! Flow control: policies that decide how much a consumer takes in, each a plain value that
//! never imports the poller.
//!
//! - [`Breaker`] (`breaker.rs`): the circuit breaker. It watches retryable failures across
//!   messages; when the downstream is down it opens (no receive, so no receive count burned),
//!   probes at a backing-off interval, and closes with a slow start.
//! - [`pause`] / [`resume`] (`pause.rs`): a per-queue flag (a queue tag) that every poller of the
//!   queue reads on a slow timer, to stop and start a fleet without a redeploy.
//! - [`AdaptiveLimit`] (`adaptive.rs`): a concurrency limit found from handler latency and
//!   retryable failures (`--concurrency auto`).
//!
//! The [`poller`](crate::poller) feeds them (outcomes as they are settled, handler latencies,
//! the time) and carries out what they say: it gates its receivers, releases what it holds
//! unstarted, resizes its pool of handler slots. The [`processor`](crate::processor) knows
//! nothing of them. The model is Spring Cloud AWS SQS's `listener/backpressure/` package:
//! each policy small, testable alone, with its clock passed in.
//!
//! The guide's chapter: [Flow control](crate::guide::flow_control).

mod adaptive;
mod breaker;
mod pause;

pub use adaptive::{AdaptiveConfig, AdaptiveLimit, Sample};
pub use breaker::{env_names as breaker_env, Breaker, BreakerConfig, BreakerState, Signal, Transition};
pub use pause::{check_reason, pause, paused_reason, resume, DEFAULT_REASON, PAUSED_TAG, PAUSE_CHECK_INTERVAL};
