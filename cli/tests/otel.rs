//! OpenTelemetry export from the real `sqskit poll --otlp-endpoint`: the OTLP/HTTP protobuf the
//! exporter posts to a local receiver is decoded field by field (no OpenTelemetry code on the
//! reading side), and checked against the messaging conventions and against the trace context
//! the `--exec` handler was given.
use sqskit_test_support as support;

use std::collections::HashMap;
use std::time::Duration;

use sqskit::trace::{TraceContext, TRACEPARENT};
use sqskit::{AttributeValue, OutgoingMessage};
use support::http::serve_with;
use support::proc::{spawn, sqskit, tail, temp_dir};
use support::*;

const EXIT_LIMIT: Duration = Duration::from_secs(120);
const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_A: &str = "00f067aa0ba902b7";
const TRACE_B: &str = "0af7651916cd43dd8448eb211c80319c";
const PRODUCER_B: &str = "b7ad6b7169203331";

// ---- a protobuf reader: just enough of the wire format for OTLP traces ----

#[derive(Debug, Clone)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(b: &[u8], i: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*i];
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    v
}

fn fields(b: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i);
        let f = match key & 7 {
            0 => Field::Varint(varint(b, &mut i)),
            1 => {
                i += 8;
                Field::Fixed
            }
            2 => {
                let len = varint(b, &mut i) as usize;
                i += len;
                Field::Bytes(&b[i - len..i])
            }
            5 => {
                i += 4;
                Field::Fixed
            }
            w => panic!("wire type {w} not expected in OTLP traces"),
        };
        out.push((key >> 3, f));
    }
    out
}

fn all(b: &[u8], n: u64) -> Vec<&[u8]> {
    fields(b)
        .into_iter()
        .filter_map(|(k, f)| if let (true, Field::Bytes(x)) = (k == n, f) { Some(x) } else { None })
        .collect()
}

fn one(b: &[u8], n: u64) -> Option<&[u8]> {
    all(b, n).into_iter().next()
}

fn int(b: &[u8], n: u64) -> Option<u64> {
    fields(b).into_iter().find_map(|(k, f)| if let (true, Field::Varint(v)) = (k == n, f) { Some(v) } else { None })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// KeyValue list → key → value as text (string_value = 1, int_value = 3).
fn attributes(kvs: Vec<&[u8]>) -> HashMap<String, String> {
    kvs.into_iter()
        .map(|kv| {
            let key = String::from_utf8(one(kv, 1).unwrap_or_default().to_vec()).unwrap();
            let any = one(kv, 2).unwrap_or_default();
            let value = match (one(any, 1), int(any, 3)) {
                (Some(s), _) => String::from_utf8(s.to_vec()).unwrap(),
                (None, Some(i)) => i.to_string(),
                _ => String::new(),
            };
            (key, value)
        })
        .collect()
}

#[derive(Debug)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: u64,
    attrs: HashMap<String, String>,
    /// (trace id, span id) of each link
    links: Vec<(String, String)>,
    status_code: u64,
    resource: HashMap<String, String>,
}

/// ExportTraceServiceRequest { 1: ResourceSpans { 1: Resource { 1: attrs }, 2: ScopeSpans { 2: Span } } }
fn spans(body: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in all(body, 1) {
        let resource = attributes(one(rs, 1).map(|r| all(r, 1)).unwrap_or_default());
        for ss in all(rs, 2) {
            for s in all(ss, 2) {
                out.push(Span {
                    trace_id: hex(one(s, 1).unwrap_or_default()),
                    span_id: hex(one(s, 2).unwrap_or_default()),
                    parent: hex(one(s, 4).unwrap_or_default()),
                    name: String::from_utf8(one(s, 5).unwrap_or_default().to_vec()).unwrap(),
                    kind: int(s, 6).unwrap_or(0),
                    attrs: attributes(all(s, 9)),
                    links: all(s, 13).into_iter().map(|l| (hex(one(l, 1).unwrap()), hex(one(l, 2).unwrap()))).collect(),
                    status_code: one(s, 15).and_then(|st| int(st, 3)).unwrap_or(0),
                    resource: resource.clone(),
                });
            }
        }
    }
    out
}

const KIND_CLIENT: u64 = 3;
const KIND_CONSUMER: u64 = 5;
const STATUS_ERROR: u64 = 2;

#[tokio::test]
async fn poll_exports_messaging_spans_whose_ids_are_the_ones_the_handler_continues() {
    let (collector, seen) = serve_with(|_| support::http::Reply { status: 200, headers: vec![] });
    // the receiver's base URL: the exporter must add /v1/traces itself
    let base = collector.trim_end_matches("/work").to_string();
    let (q, _dlq) = queue_with_dlq("cli-otel", 3, false, 30).await;
    let tp = |t: &str, s: &str| AttributeValue::string(format!("00-{t}-{s}-01"));
    q.send(OutgoingMessage::new("ok-a").attribute(TRACEPARENT, tp(TRACE_A, PRODUCER_A))).await.unwrap();
    q.send(OutgoingMessage::new("bad-b").attribute(TRACEPARENT, tp(TRACE_B, PRODUCER_B))).await.unwrap();
    let plain = q.send(OutgoingMessage::new("ok-plain")).await.unwrap();
    let dir = temp_dir("otel-exec");
    // "bad" bodies exit 65: a permanent failure, dead-lettered, and an error span
    let script = format!(
        "sh -c 'printf \"%s\" \"$TRACEPARENT\" > {}/$SQSKIT_MESSAGE_ID; body=$(cat); case $body in bad*) exit 65;; esac'",
        dir.display()
    );
    let mut cmd = sqskit(None);
    cmd.args(["poll", "--queue-url", q.url(), "--progress-interval", "0", "--wait-time", "1", "--until-empty"]);
    cmd.args(["--otlp-endpoint", &base, "--exec", &script]);
    cmd.env("OTEL_SERVICE_NAME", "orders-worker");
    let mut p = spawn(cmd);
    let status = p.wait(EXIT_LIMIT);
    let err = p.stderr();
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&err, 30));

    let reqs = seen.lock().unwrap().clone();
    assert!(!reqs.is_empty(), "nothing exported before exit; stderr:\n{}", tail(&err, 30));
    for r in &reqs {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/traces"));
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/x-protobuf"));
    }
    let spans: Vec<Span> = reqs.iter().flat_map(|r| spans(&r.raw)).collect();
    let queue_name = q.name();
    let process: Vec<&Span> = spans.iter().filter(|s| s.name == format!("process {queue_name}")).collect();
    assert_eq!(process.len(), 3, "one process span per message: {spans:#?}");
    for s in &process {
        assert_eq!(s.kind, KIND_CONSUMER, "{s:?}");
        assert_eq!(s.attrs["messaging.system"], "aws_sqs");
        assert_eq!(s.attrs["messaging.destination.name"], queue_name);
        assert_eq!(s.attrs["messaging.operation.type"], "process");
        assert_eq!(s.resource["service.name"], "orders-worker");
    }
    let handled = |id: &str| std::fs::read_to_string(dir.join(id)).unwrap();
    for (trace, producer, bad) in [(TRACE_A, PRODUCER_A, false), (TRACE_B, PRODUCER_B, true)] {
        let s =
            process.iter().find(|s| s.trace_id == trace).unwrap_or_else(|| panic!("no span in {trace}: {process:#?}"));
        let seen_tp = TraceContext::parse_traceparent(&handled(&s.attrs["messaging.message.id"])).unwrap();
        assert_eq!(seen_tp.trace_id(), trace);
        assert_eq!(s.span_id, seen_tp.span_id(), "the exported span is the one the handler continues");
        assert_eq!(s.parent, "", "a consumer span is not the producer's child");
        assert_eq!(s.links, vec![(trace.to_string(), producer.to_string())], "linked to the producer");
        assert_eq!(s.status_code == STATUS_ERROR, bad, "{s:?}");
        if bad {
            assert_eq!(s.attrs["error.type"], "permanent");
        }
    }
    let untraced = process.iter().find(|s| s.attrs["messaging.message.id"] == plain.message_id).unwrap();
    assert!(untraced.links.is_empty() && untraced.trace_id != TRACE_A && untraced.trace_id != TRACE_B);

    let receive: Vec<&Span> = spans.iter().filter(|s| s.name == format!("receive {queue_name}")).collect();
    assert!(receive.iter().all(|s| s.kind == KIND_CLIENT && s.attrs["messaging.operation.type"] == "receive"));
    // (a receive cut short by the shutdown has no count)
    let received: u64 = receive
        .iter()
        .filter_map(|s| s.attrs.get("messaging.batch.message_count"))
        .map(|c| c.parse::<u64>().unwrap())
        .sum();
    assert_eq!(received, 3, "receive spans count the messages: {receive:#?}");
    let settle: Vec<&Span> = spans.iter().filter(|s| s.name == format!("settle {queue_name}")).collect();
    let settled: u64 = settle.iter().map(|s| s.attrs["messaging.batch.message_count"].parse::<u64>().unwrap()).sum();
    assert_eq!(settled, 3, "two deletes and one dead-letter delete: {settle:#?}");
    assert!(settle.iter().all(|s| s.kind == KIND_CLIENT && s.attrs["messaging.system"] == "aws_sqs"));
}

#[test]
fn an_otlp_endpoint_that_is_not_http_is_refused_by_name() {
    for (endpoint, says) in
        [("https://collector:4318", "https is not supported"), ("collector:4318", "expected an http:// URL")]
    {
        let out =
            sqskit(None).args(["--otlp-endpoint", endpoint, "stats", "--queue-url", "http://x/1/q"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--otlp-endpoint") && err.contains(says), "{err}");
    }
}
