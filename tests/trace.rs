//! Trace context through queues, against LocalStack: `traceparent` / `AWSTraceHeader` in, the
//! handler's view (`Message::trace`), propagation on sends from a handler, the DLQ and redrive.
use sqskit_test_support as support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqskit::poller::{Poller, PollerConfig, QueueSpec};
use sqskit::trace::{TraceContext, AWS_TRACE_HEADER, TRACEPARENT, TRACESTATE};
use sqskit::{AttributeValue, HandlerError, Message, OutgoingMessage, Processor, Queue, QueueContext};
use support::*;

const TRACE_ID: &str = "5759e988bd862e3fe1be46a994272793";
const PRODUCER_SPAN: &str = "53995c3f42cd8ad8";
const TP: &str = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01";
const XRAY: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

/// What a handler saw: each body and its `Message::trace()`.
type Seen = Arc<Mutex<Vec<(String, Option<TraceContext>)>>>;

fn traced(body: &str) -> OutgoingMessage {
    OutgoingMessage::new(body).attribute(TRACEPARENT, AttributeValue::string(TP))
}

fn poller_config() -> PollerConfig {
    PollerConfig::default()
        .with_until_empty(true)
        .with_wait_time(Duration::from_secs(1))
        .with_depth_interval(Duration::ZERO)
}

async fn run_poller(processor: Processor<String>, q: &Queue) -> sqskit::poller::PollSummary {
    let poller = Poller::new(processor, [QueueSpec::new(q.clone())], poller_config()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(90), poller.run(std::future::pending())).await.unwrap()
}

/// A handler that records `Message::trace()` per body and, for bodies starting with `fwd`, sends
/// one message to `out` (with `extra` attributes) and a batch of two.
fn recorder(seen: Seen, out: Option<Queue>, extra: usize) -> Processor<String> {
    Processor::raw(move |m: Message<String>| {
        let (seen, out) = (seen.clone(), out.clone());
        async move {
            seen.lock().unwrap().push((m.body.clone(), m.trace()));
            if let (Some(out), true) = (out, m.body.starts_with("fwd")) {
                let mut msg = OutgoingMessage::new(format!("child of {}", m.body));
                for i in 0..extra {
                    msg = msg.attribute(format!("a{i}"), AttributeValue::string("v"));
                }
                out.send(msg).await?;
                out.send_batch([OutgoingMessage::new("batch-1"), OutgoingMessage::new("batch-2")])
                    .await?
                    .into_result()?;
            }
            Ok::<_, HandlerError>(())
        }
    })
}

#[tokio::test]
async fn poller_handler_sees_the_producers_trace_and_sends_it_on_with_a_new_span() {
    let q = queue("trace-in").await;
    let out = queue("trace-out").await;
    q.send(traced("fwd-1").attribute(TRACESTATE, AttributeValue::string("vendor=abc"))).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let summary = run_poller(recorder(seen.clone(), Some(out.clone()), 0), &q).await;
    assert_eq!(summary.succeeded, 1, "{summary:?}");

    let seen = seen.lock().unwrap().clone();
    let handler_ctx = seen[0].1.clone().expect("the handler sees a trace context");
    assert_eq!(handler_ctx.trace_id(), TRACE_ID);
    assert_ne!(handler_ctx.span_id(), PRODUCER_SPAN, "processing is a span of its own");
    assert_eq!(handler_ctx.tracestate(), Some("vendor=abc"));

    let sent = drain(&out, Duration::from_secs(1)).await;
    assert_eq!(sent.len(), 3, "one send and a batch of two");
    for m in &sent {
        let tp = m.attribute_str(TRACEPARENT).unwrap_or_else(|| panic!("{} carries a traceparent", m.body));
        let ctx = TraceContext::parse_traceparent(tp).unwrap();
        assert_eq!(ctx.trace_id(), TRACE_ID, "{}: same trace", m.body);
        assert_ne!(ctx.span_id(), PRODUCER_SPAN, "{}: not the producer's span", m.body);
        assert_eq!(ctx.span_id(), handler_ctx.span_id(), "{}: the handler's span is the parent", m.body);
        assert_eq!(m.attribute_str(TRACESTATE), Some("vendor=abc"));
        // LocalStack keeps the AWSTraceHeader system attribute and returns it on receive
        let header = m.system_attributes.get(AWS_TRACE_HEADER).expect("AWSTraceHeader set on the send");
        assert_eq!(TraceContext::from_xray(header).unwrap().trace_id(), TRACE_ID);
    }
}

#[tokio::test]
async fn a_message_with_only_an_aws_trace_header_yields_the_matching_w3c_trace_id() {
    let q = queue("trace-xray").await;
    q.send(OutgoingMessage::new("xray-only").trace_header(XRAY)).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let summary = run_poller(recorder(seen.clone(), None, 0), &q).await;
    assert_eq!(summary.succeeded, 1);
    let ctx = seen.lock().unwrap()[0].1.clone().expect("a context from AWSTraceHeader");
    assert_eq!(ctx.trace_id(), TRACE_ID);
    assert!(ctx.sampled());
    assert_eq!(ctx.xray_root(), "1-5759e988-bd862e3fe1be46a994272793");
}

#[tokio::test]
async fn malformed_traceparents_are_ignored_without_failing_the_message() {
    let (q, dlq) = queue_with_dlq("trace-bad", 1, false, 30).await;
    let bad = [
        "01-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01x", // wrong version layout
        "ff-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",  // version ff
        "00-5759e988bd862e3fe1be46a99427279g-53995c3f42cd8ad8-01",  // bad hex
        "00-00000000000000000000000000000000-53995c3f42cd8ad8-01",  // zero trace id
        "00-5759e988bd862e3fe1be46a994272793-0000000000000000-01",  // zero span id
        "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01-00000000000000000000",
        "00-5759e988bd862e3fe1be46a9942727é3-53995c3f42cd8ad8-01", // non-ASCII
        "00-5759E988BD862E3FE1BE46A994272793-53995C3F42CD8AD8-01", // upper case
    ];
    let msgs: Vec<OutgoingMessage> = bad
        .iter()
        .enumerate()
        .map(|(i, tp)| OutgoingMessage::new(format!("bad-{i}")).attribute(TRACEPARENT, AttributeValue::string(*tp)))
        .collect();
    q.send_batch(msgs).await.unwrap().into_result().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let summary = run_poller(recorder(seen.clone(), None, 0), &q).await;
    assert_eq!((summary.succeeded, summary.dead_lettered), (bad.len() as u64, 0), "{summary:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), bad.len());
    assert!(seen.iter().all(|(_, t)| t.is_none()), "no context from a malformed traceparent: {seen:?}");
    assert_eq!(depth(&dlq).await.0, 0);
}

#[tokio::test]
async fn sending_from_a_handler_never_exceeds_the_ten_attribute_limit() {
    let q = queue("trace-full-in").await;
    let out = queue("trace-full-out").await;
    q.send(traced("fwd-full")).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    // the handler's own message has 10 attributes already: traceparent must not be an 11th
    let summary = run_poller(recorder(seen, Some(out.clone()), 10), &q).await;
    assert_eq!((summary.succeeded, summary.retried), (1, 0), "no SQS error: {summary:?}");
    let sent = drain(&out, Duration::from_secs(1)).await;
    let full = sent.iter().find(|m| m.body == "child of fwd-full").expect("sent");
    assert_eq!(full.attributes.len(), 10);
    assert!(full.attribute_str(TRACEPARENT).is_none());
    let header = full.system_attributes.get(AWS_TRACE_HEADER).expect("the system attribute has no such limit");
    assert_eq!(TraceContext::from_xray(header).unwrap().trace_id(), TRACE_ID);
}

#[tokio::test]
async fn a_dead_lettered_then_redriven_message_keeps_its_trace() {
    let (q, dlq) = queue_with_dlq("trace-dlq", 5, false, 30).await;
    q.send(traced("perm-w3c")).await.unwrap();
    q.send(OutgoingMessage::new("perm-xray").trace_header(XRAY)).await.unwrap();
    let p = Processor::raw(|_m: Message<String>| async { Err::<(), _>(HandlerError::permanent("bad order")) });
    let ctx = QueueContext::discover(q.clone()).await.unwrap();
    let batch = receive_exactly(&q, 2).await;
    let decisions = p.process_batch(&ctx, batch).await;
    p.settle(&ctx, &decisions).await;

    let check = |m: &sqskit::ReceivedMessage, stage: &str| {
        let t = TraceContext::from_message(m).unwrap_or_else(|| panic!("{stage}: {} lost its trace", m.body));
        assert_eq!(t.trace_id(), TRACE_ID, "{stage}: {}", m.body);
        assert_eq!(t.span_id(), PRODUCER_SPAN, "{stage}: {} still links to its producer", m.body);
        if m.body == "perm-xray" {
            assert_eq!(m.system_attributes.get(AWS_TRACE_HEADER).map(String::as_str), Some(XRAY), "{stage}");
        }
    };
    let dead = receive_exactly(&dlq, 2).await;
    for m in &dead {
        check(m, "in the DLQ");
    }
    let release: Vec<(&str, u32)> = dead.iter().map(|m| (m.receipt_handle.as_str(), 0)).collect();
    dlq.change_visibility_each(&release).await.unwrap().into_result().unwrap();
    let report =
        sqskit::dlq::redrive(&dlq, Some(q.clone()), &sqskit::dlq::RedriveOptions::default(), |_| {}).await.unwrap();
    assert_eq!(report.moved, 2, "{report:?}");
    let back = drain(&q, Duration::from_secs(1)).await;
    assert_eq!(back.len(), 2);
    for m in &back {
        check(m, "redriven");
    }
}
