//! The real `worker` binary delivering to endpoints at the edges: redirects and https with a
//! CA from `SSL_CERT_FILE`, through the local Lambda Runtime API against LocalStack.
use sqskit_test_support as support;

use serde_json::{json, Value};
use sqskit::OutgoingMessage;
use support::http::{serve_with, Reply};
use support::lambda_rt::{event, failures, response, LambdaHarness};
use support::tls::TlsServer;
use support::*;

fn delivery(id: &str, url: &str) -> String {
    json!({"delivery_id": id, "url": url, "event_type": "order.created", "payload": {"order": id}}).to_string()
}

/// One message carrying `body` in a fresh queue, as a Lambda event.
async fn one_record(prefix: &str, body: String) -> (String, Value) {
    let (q, _dlq) = queue_with_dlq(prefix, 5, false, 60).await;
    let arn = q.attributes().await.unwrap().arn.unwrap();
    q.send(OutgoingMessage::new(body)).await.unwrap();
    let got = receive_exactly(&q, 1).await;
    (got[0].message_id.clone(), event(vec![lambda_record(&got[0], &arn)]))
}

#[tokio::test]
async fn worker_treats_a_redirect_as_a_retryable_failure_not_a_delivery() {
    let (url, seen) = serve_with(|req| {
        if req.method == "POST" {
            Reply { status: 302, headers: vec![("Location".into(), "/ok".into())] }
        } else {
            Reply { status: 200, headers: vec![] }
        }
    });
    let (id, ev) = one_record("worker-redirect", delivery("r1", &url)).await;
    let mut lambda =
        LambdaHarness::start(env!("CARGO_BIN_EXE_worker"), "worker-redirect", &[("SQSKIT_BACKOFF_BASE", "1".into())]);
    let resp = response(lambda.invoke(ev), &lambda.output());
    let out = lambda.output();
    let requests: Vec<String> = seen.lock().unwrap().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(requests, ["POST /work"], "no GET after the 302");
    assert_eq!(failures(&resp), [id], "retried, not reported as delivered; output:\n{out}");
    assert!(out.contains("302") && out.contains("/ok"), "the error names the status and Location:\n{out}");
}

#[tokio::test]
async fn worker_delivers_over_https_trusting_the_ca_in_ssl_cert_file() {
    let tls = TlsServer::start(200);
    let (id, ev) = one_record("worker-tls", delivery("t1", &tls.url)).await;

    // without the test CA the certificate is not trusted: a retryable failure
    let mut untrusting = LambdaHarness::start(env!("CARGO_BIN_EXE_worker"), "worker-tls-no-ca", &[]);
    let resp = response(untrusting.invoke(ev.clone()), &untrusting.output());
    assert_eq!(
        failures(&resp),
        std::slice::from_ref(&id),
        "an unknown CA is refused; output:\n{}",
        untrusting.output()
    );
    assert!(tls.requests().is_empty());

    let mut lambda = LambdaHarness::start(
        env!("CARGO_BIN_EXE_worker"),
        "worker-tls",
        &[("SSL_CERT_FILE", tls.ca_file.to_string_lossy().to_string())],
    );
    let resp = response(lambda.invoke(ev), &lambda.output());
    assert!(failures(&resp).is_empty(), "delivered; output:\n{}", lambda.output());
    let reqs = tls.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0]["method"], "POST");
    assert_eq!(reqs[0]["headers"]["x-webhook-delivery"], "t1");
    assert_eq!(serde_json::from_str::<Value>(reqs[0]["body"].as_str().unwrap()).unwrap(), json!({"order": "t1"}));
}
