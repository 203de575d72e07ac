//! Metrics: the Prometheus exporter for the poller and CloudWatch Embedded Metric Format
//! lines for Lambda.
//!
//! The library records through the `metrics` facade (no-ops until a recorder is
//! installed); `install_prometheus` (feature `prometheus`) installs one with an HTTP `/metrics` listener
//! (`install_prometheus_with_health` adds the poller's `/healthz` and `/readyz`,
//! `install_prometheus_with_status` also its `/status`).
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
    /// Gauge: messages received ahead of a free handler slot (the poller's prefetch buffer).
    pub const PREFETCHED: &str = "sqskit_prefetched";
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
    /// Counter, labels `queue`, `tenant`, `outcome` (`succeeded`, `retried`, `dead_lettered`,
    /// `duplicate`, `deferred`, `released`): messages per tenant of a fair queue (the
    /// `MessageGroupId` of a standard queue), only with [`TenantLabels`](super::TenantLabels)
    /// on; tenants past the limit are counted as `other`.
    pub const TENANT_MESSAGES: &str = "sqskit_tenant_messages_total";
    /// Counter: messages not due yet, re-sent with their next delay hop (not run).
    pub const DEFERRED: &str = "sqskit_messages_deferred_total";
    /// Counter: messages released unstarted on their last allowed receive and carried over as a
    /// fresh copy instead (see [`settle::carry_over`](crate::settle::carry_over)).
    pub const CARRIED_OVER: &str = "sqskit_messages_carried_over_total";
    /// Counter: duplicates deleted without running the handler (their delete confirmed).
    pub const DUPLICATES: &str = "sqskit_messages_duplicate_total";
    /// Gauge, labels `queue`, `state` (`visible`, `in_flight`, `delayed`): queue depth.
    pub const QUEUE_DEPTH: &str = "sqskit_queue_messages";
    /// Gauge, label `queue`: the circuit breaker's state, 0 closed, 1 open, 2 half-open.
    pub const BREAKER_STATE: &str = "sqskit_breaker_state";
    /// Counter, labels `queue`, `to` (`open`, `half-open`, `closed`): breaker transitions.
    pub const BREAKER_TRANSITIONS: &str = "sqskit_breaker_transitions_total";
    /// Counter, label `queue`: messages whose retryable failure on their last allowed receive
    /// came while the breaker was open, carried over instead of dead-lettered.
    pub const BREAKER_HELD: &str = "sqskit_breaker_held_total";
    /// Gauge, label `queue`: 1 while the queue is paused (`sqskit pause`), else 0.
    pub const PAUSED: &str = "sqskit_queue_paused";
    /// Gauge: handlers allowed to run at once now (the adaptive limit, or the fixed
    /// concurrency; lower during the slow start after the breaker closes).
    pub const CONCURRENCY_LIMIT: &str = "sqskit_concurrency_limit";
    /// Counter: claim-check objects whose cleanup (delete after the message's delete) failed.
    pub const PAYLOAD_CLEANUP_FAILURES: &str = "sqskit_payload_cleanup_failures_total";
}

/// Tenant labels with bounded cardinality: the first `limit` tenants seen get a label of their
/// own, later ones share `other` (a fair queue may carry millions of tenants; a metrics label
/// per tenant would not survive that).
///
/// # Example
/// ```
/// let t = sqskit::metrics::TenantLabels::new(2);
/// assert_eq!(t.label("acme"), "acme");
/// assert_eq!(t.label("globex"), "globex");
/// assert_eq!(t.label("initech"), "other");
/// assert_eq!(t.label("acme"), "acme");
/// ```
#[derive(Debug)]
pub struct TenantLabels {
    limit: usize,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl TenantLabels {
    /// Own labels for the first `limit` tenants.
    pub fn new(limit: usize) -> Self {
        Self { limit, seen: std::sync::Mutex::default() }
    }

    /// The label for `tenant`.
    pub fn label(&self, tenant: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(tenant) {
            return tenant.to_string();
        }
        if seen.len() < self.limit && tenant != "other" {
            seen.insert(tenant.to_string());
            return tenant.to_string();
        }
        "other".to_string()
    }
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

/// Install the global Prometheus recorder with an HTTP listener serving `/metrics` on `addr`.
/// Must be called inside a Tokio runtime.
///
/// # Errors
/// [`ExporterError`] when the address cannot be bound or a recorder is already installed.
#[cfg(feature = "prometheus")]
pub fn install_prometheus(addr: SocketAddr) -> Result<(), ExporterError> {
    serve(addr, None)
}

/// As [`install_prometheus`], and the same listener answers `GET /healthz` (liveness) and
/// `GET /readyz` (readiness) from `health`: `200` or `503`, with the [`HealthReport`] as JSON
/// (see [`crate::health`]).
///
/// [`HealthReport`]: crate::health::HealthReport
///
/// # Errors
/// As [`install_prometheus`].
#[cfg(all(feature = "prometheus", feature = "poller"))]
pub fn install_prometheus_with_health(
    addr: SocketAddr,
    health: std::sync::Arc<crate::health::Health>,
) -> Result<(), ExporterError> {
    serve(addr, Some(Box::new(move |path: &str, _: &Prometheus| health_route(path, &health))))
}

/// What `GET /status` and the health routes of [`install_prometheus_with_status`] answer from:
/// implemented by [`StatusBoard`](crate::status::StatusBoard). A trait here, so that the exporter
/// does not depend on the poller's status (which reads this module's metric names).
#[cfg(all(feature = "prometheus", feature = "poller"))]
pub trait StatusSource: Send + Sync + 'static {
    /// The health behind `/healthz` and `/readyz`.
    fn health(&self) -> &crate::health::Health;
    /// The `/status` body (JSON), given this recorder's counters as Prometheus text.
    fn status_json(&self, prometheus_text: &str) -> String;
}

/// As [`install_prometheus_with_health`] with the board's health, and `GET /status` answers the
/// poller's [`PollerStatus`](crate::status::PollerStatus) as JSON (failures by kind read from
/// this recorder's counters).
///
/// # Errors
/// As [`install_prometheus`].
#[cfg(all(feature = "prometheus", feature = "poller"))]
pub fn install_prometheus_with_status<B: StatusSource>(
    addr: SocketAddr,
    board: std::sync::Arc<B>,
) -> Result<(), ExporterError> {
    serve(
        addr,
        Some(Box::new(move |path: &str, prometheus: &Prometheus| match path {
            "/status" => Some((200, board.status_json(&prometheus.render()))),
            _ => health_route(path, board.health()),
        })),
    )
}

/// `/healthz` and `/readyz`: 200 or 503 with the health report.
#[cfg(all(feature = "prometheus", feature = "poller"))]
fn health_route(path: &str, health: &crate::health::Health) -> Option<(u16, String)> {
    let report = health.report();
    let ok = match path {
        "/healthz" => report.live,
        "/readyz" => report.ready,
        _ => return None,
    };
    Some((if ok { 200 } else { 503 }, serde_json::to_string(&report).unwrap_or_default()))
}

#[cfg(feature = "prometheus")]
type Prometheus = metrics_exporter_prometheus::PrometheusHandle;

/// Extra routes: (path, the recorder) → (status, JSON body).
#[cfg(feature = "prometheus")]
type Routes = Box<dyn Fn(&str, &Prometheus) -> Option<(u16, String)> + Send + Sync>;

#[cfg(feature = "prometheus")]
fn serve(addr: SocketAddr, routes: Option<Routes>) -> Result<(), ExporterError> {
    use std::sync::Arc;
    let err = |e: &dyn std::fmt::Display| ExporterError { addr, message: e.to_string() };
    let buckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(names::HANDLER_DURATION.into()), &buckets)
        .map_err(|e| err(&e))?
        .build_recorder();
    let handle = recorder.handle();
    let std_listener = std::net::TcpListener::bind(addr).map_err(|e| err(&e))?;
    std_listener.set_nonblocking(true).map_err(|e| err(&e))?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|e| err(&e))?;
    metrics::set_global_recorder(recorder).map_err(|e| err(&e))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (handle, routes) = (handle.clone(), routes.clone());
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (status, content_type, body) = match (req.method(), req.uri().path()) {
                    (&hyper::Method::GET, "/metrics") => (200, "text/plain; version=0.0.4", handle.render()),
                    (&hyper::Method::GET, path) => match routes.as_ref().as_ref().and_then(|r| r(path, &handle)) {
                        Some((status, body)) => (status, "application/json", body),
                        None => (404, "text/plain", "not found\n".to_string()),
                    },
                    _ => (405, "text/plain", "method not allowed\n".to_string()),
                };
                let mut resp = hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from(body)));
                *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
                    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                }
                std::future::ready(Ok::<_, std::convert::Infallible>(resp))
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
                // a client that stalls must not hold a connection forever
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
            });
        }
    });
    Ok(())
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
