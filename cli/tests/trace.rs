//! Trace context through the real `sqskit poll`: `--exec` gets `TRACEPARENT` / `TRACESTATE`,
//! `--http` gets `traceparent` / `tracestate` headers, and the JSON log names the trace and the
//! producer's span (a link) without the body.
use sqskit_test_support as support;

use std::time::Duration;

use sqskit::trace::{TraceContext, TRACEPARENT, TRACESTATE};
use sqskit::{AttributeValue, OutgoingMessage};
use support::http::serve;
use support::proc::{spawn, sqskit, tail, temp_dir};
use support::*;

const EXIT_LIMIT: Duration = Duration::from_secs(120);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const XRAY: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

fn poll(queue: &sqskit::Queue, handler: &[&str]) -> std::process::Command {
    let mut cmd = sqskit(None);
    cmd.args(["poll", "--queue-url", queue.url(), "--progress-interval", "0", "--wait-time", "1", "--until-empty"]);
    cmd.args(["--log-format", "json"]);
    cmd.args(handler);
    cmd
}

fn traced(body: &str) -> OutgoingMessage {
    OutgoingMessage::new(body)
        .attribute(TRACEPARENT, AttributeValue::string(TP))
        .attribute(TRACESTATE, AttributeValue::string("congo=t61rcWkgMzE"))
}

/// JSON log lines whose current span is the message span of `trace_id`.
fn span_lines(stderr: &str, trace_id: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["span"]["trace_id"] == trace_id)
        .collect()
}

#[tokio::test]
async fn exec_handler_gets_traceparent_and_the_json_log_links_the_producer_without_the_body() {
    let q = queue("cli-trace-exec").await;
    q.send(traced("secret-body-w3c")).await.unwrap();
    q.send(OutgoingMessage::new("secret-body-xray").trace_header(XRAY)).await.unwrap();
    q.send(OutgoingMessage::new("secret-body-none")).await.unwrap();
    let dir = temp_dir("trace-exec");
    let script = format!(
        "sh -c 'printf \"%s|%s\\n\" \"$TRACEPARENT\" \"$TRACESTATE\" > {}/$SQSKIT_MESSAGE_ID; echo handled'",
        dir.display()
    );
    let mut cmd = poll(&q, &["--exec", &script]);
    // a context in the poller's own environment must not leak into messages without one
    cmd.env("TRACEPARENT", "00-11111111111111111111111111111111-2222222222222222-01");
    let mut p = spawn(cmd);
    let status = p.wait(EXIT_LIMIT);
    let err = p.stderr();
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&err, 30));

    let mut seen: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().trim().to_string())
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().any(|s| s == "|"), "no trace, and none inherited from the poller: {seen:?}");
    let w3c = seen.iter().find(|s| s.contains(TRACE_ID)).expect("TRACEPARENT with the producer's trace id");
    let (tp, state) = w3c.split_once('|').unwrap();
    let ctx = TraceContext::parse_traceparent(tp).unwrap();
    assert_ne!(ctx.span_id(), PRODUCER_SPAN, "the command continues from the processing span");
    assert_eq!(state, "congo=t61rcWkgMzE");
    assert!(
        seen.iter().any(|s| s.starts_with("00-5759e988bd862e3fe1be46a994272793-")),
        "AWSTraceHeader becomes a W3C TRACEPARENT: {seen:?}"
    );

    let lines = span_lines(&err, TRACE_ID);
    assert!(!lines.is_empty(), "JSON log lines carry the trace id:\n{}", tail(&err, 30));
    for l in &lines {
        assert_eq!(l["span"]["link.trace_id"], TRACE_ID, "{l}");
        assert_eq!(l["span"]["link.span_id"], PRODUCER_SPAN, "{l}");
        assert_eq!(l["span"]["span_id"], ctx.span_id(), "the span id the command got: {l}");
    }
    assert!(lines.iter().any(|l| l["fields"]["message"] == "handled"), "the command's output is logged in the span");
    assert!(!span_lines(&err, "5759e988bd862e3fe1be46a994272793").is_empty(), "X-Ray trace id logged");
    assert!(!err.contains("secret-body"), "bodies are never logged:\n{}", tail(&err, 30));
}

#[tokio::test]
async fn http_handler_sends_traceparent_and_tracestate_headers() {
    let (url, seen) = serve(|_| (200, None));
    let q = queue("cli-trace-http").await;
    q.send(traced("{\"job\":1}")).await.unwrap();
    let mut p = spawn(poll(&q, &["--http", &url]));
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    let tp = reqs[0].headers.get("traceparent").expect("traceparent header");
    let ctx = TraceContext::parse_traceparent(tp).unwrap();
    assert_eq!(ctx.trace_id(), TRACE_ID);
    assert_ne!(ctx.span_id(), PRODUCER_SPAN);
    assert_eq!(reqs[0].headers.get("tracestate").map(String::as_str), Some("congo=t61rcWkgMzE"));
}
