//! Metrics: the Prometheus exporter for the poller and CloudWatch Embedded Metric Format
//! lines for Lambda.
//!
//! The library records through the `metrics` facade (no-ops until a recorder is
//! installed); `install_prometheus` (feature `prometheus`) installs one with an HTTP `/metrics` listener.
//! [`emf_line`] formats one EMF JSON line for stdout, so Lambdas publish metrics
//! without a CloudWatch API call on the hot path.

#[cfg(feature = "prometheus")]
use std::net::SocketAddr;

/// Metric names recorded by sqskit.
pub mod names {
    /// Counter: messages received.
    pub const RECEIVED: &str = "sqskit_messages_received_total";
    /// Counter: messages handled successfully.
    pub const SUCCEEDED: &str = "sqskit_messages_succeeded_total";
    /// Counter, label `kind`: failed messages.
    pub const FAILED: &str = "sqskit_messages_failed_total";
    /// Counter: messages sent to the DLQ.
    pub const DEAD_LETTERED: &str = "sqskit_messages_dead_lettered_total";
    /// Histogram: handler duration in seconds.
    pub const HANDLER_DURATION: &str = "sqskit_handler_duration_seconds";
    /// Gauge: messages in flight in this process.
    pub const IN_FLIGHT: &str = "sqskit_in_flight";
    /// Counter: visibility extensions made by the heartbeat.
    pub const VISIBILITY_EXTENSIONS: &str = "sqskit_visibility_extensions_total";
    /// Counter, label `code`: deletes that failed for good (the message comes back).
    pub const DELETE_FAILURES: &str = "sqskit_delete_failures_total";
    /// Counter, label `reason` (`heartbeat`, `retry`, `release`): visibility changes that failed for good.
    pub const VISIBILITY_FAILURES: &str = "sqskit_visibility_failures_total";
    /// Counter, label `during`: receipt handles found invalid or expired (the lease was lost).
    pub const LEASES_LOST: &str = "sqskit_leases_lost_total";
    /// Counter: handlers cancelled because their lease reached `max_visibility_extension`.
    pub const LEASE_LIMIT_CANCELLED: &str = "sqskit_lease_limit_cancellations_total";
    /// Counter, label `operation`: failed SQS API calls.
    pub const SQS_ERRORS: &str = "sqskit_sqs_errors_total";
    /// Counter, label `result` (`claimed`, `duplicate`, `in_progress`, `reuse`, `store_error`):
    /// idempotency checks.
    pub const IDEMPOTENCY: &str = "sqskit_idempotency_total";
    /// Counter: duplicates deleted without running the handler (their delete confirmed).
    pub const DUPLICATES: &str = "sqskit_messages_duplicate_total";
    /// Gauge, labels `queue`, `state` (`visible`, `in_flight`, `delayed`): queue depth.
    pub const QUEUE_DEPTH: &str = "sqskit_queue_messages";
    /// Counter: claim-check objects whose cleanup (delete after the message's delete) failed.
    pub const PAYLOAD_CLEANUP_FAILURES: &str = "sqskit_payload_cleanup_failures_total";
}

/// Error installing the Prometheus exporter.
#[cfg(feature = "prometheus")]
#[derive(Debug, thiserror::Error)]
#[error("cannot start the Prometheus exporter on {addr}: {message}")]
pub struct ExporterError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub message: String,
}

#[cfg(feature = "prometheus")]
/// Install the global Prometheus recorder with an HTTP listener serving `/metrics` on `addr`.
/// Must be called inside a Tokio runtime.
///
/// # Errors
/// [`ExporterError`] when the address cannot be bound or a recorder is already installed.
pub fn install_prometheus(addr: SocketAddr) -> Result<(), ExporterError> {
    let buckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(names::HANDLER_DURATION.into()), &buckets)
        .and_then(|b| b.install())
        .map_err(|e| ExporterError { addr, message: e.to_string() })
}

/// One CloudWatch Embedded Metric Format line.
///
/// # Example
/// ```
/// let line = sqskit::metrics::emf_line("sqskit", &[("Function", "worker")], &[("Processed", 9.0, "Count")], 1_700_000_000_000);
/// let v: serde_json::Value = serde_json::from_str(&line).unwrap();
/// assert_eq!(v["Processed"], 9.0);
/// assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "sqskit");
/// ```
pub fn emf_line(
    namespace: &str,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, f64, &str)],
    timestamp_ms: u64,
) -> String {
    let mut root = serde_json::Map::new();
    let dims: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    let defs: Vec<serde_json::Value> =
        metrics.iter().map(|(n, _, u)| serde_json::json!({"Name": n, "Unit": u})).collect();
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": namespace, "Dimensions": [dims], "Metrics": defs}],
        }),
    );
    for (k, v) in dimensions {
        root.insert((*k).into(), serde_json::Value::String((*v).into()));
    }
    for (n, v, _) in metrics {
        root.insert((*n).into(), serde_json::json!(v));
    }
    serde_json::Value::Object(root).to_string()
}

/// Milliseconds since the Unix epoch (for EMF timestamps).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
