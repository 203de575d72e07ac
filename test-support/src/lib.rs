//! Helpers shared by the tests of every crate of the workspace (the library's `tests/`, the CLI's,
//! the Lambdas', the example's): queues on LocalStack (started by `scripts/localstack start`),
//! the real binaries as child processes, a local Lambda Runtime API, HTTP/TLS servers and
//! proxies, the idempotency stores (moto's DynamoDB, a redis-server), and an S3 bucket with an
//! SNS topic for the DLQ archive and alert tests. Not published; a dev-dependency only.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::QueueAttributeName;
use sqskit::Queue;

/// The LocalStack endpoint (`AWS_ENDPOINT_URL`, default `http://127.0.0.1:4566`).
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".to_string())
}

/// Environment for child processes (binaries under test) pointing at LocalStack.
pub fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// SDK config for LocalStack with dummy credentials.
pub async fn sdk_config() -> aws_config::SdkConfig {
    sdk_config_for(&endpoint()).await
}

/// SDK config for an arbitrary endpoint (e.g. a proxy in front of LocalStack).
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "sqskit-tests"))
        .load()
        .await
}

/// An SQS client for LocalStack; fails loudly when LocalStack is not up.
pub async fn sqs() -> aws_sdk_sqs::Client {
    let client = aws_sdk_sqs::Client::new(&sdk_config().await);
    if let Err(e) = client.list_queues().max_results(1).send().await {
        panic!(
            "LocalStack is not reachable at {} ({}); start it with `scripts/localstack start` or run `scripts/test`",
            endpoint(),
            aws_sdk_sqs::error::DisplayErrorContext(e)
        );
    }
    client
}

/// A queue name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    format!("{prefix}-{}-{t}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Create a queue with attributes; returns a `Queue` handle.
pub async fn create_queue(client: &aws_sdk_sqs::Client, name: &str, attrs: &[(QueueAttributeName, String)]) -> Queue {
    let map: HashMap<QueueAttributeName, String> = attrs.iter().cloned().collect();
    let out = client
        .create_queue()
        .queue_name(name)
        .set_attributes(if map.is_empty() { None } else { Some(map) })
        .send()
        .await
        .expect("create queue");
    Queue::new(client.clone(), out.queue_url().expect("queue url"))
}

/// A standard queue.
pub async fn queue(prefix: &str) -> Queue {
    let client = sqs().await;
    create_queue(&client, &unique(prefix), &[]).await
}

/// A FIFO queue (content-based deduplication on).
pub async fn fifo_queue(prefix: &str) -> Queue {
    let client = sqs().await;
    let name = format!("{}.fifo", unique(prefix));
    create_queue(
        &client,
        &name,
        &[
            (QueueAttributeName::FifoQueue, "true".into()),
            (QueueAttributeName::ContentBasedDeduplication, "true".into()),
        ],
    )
    .await
}

/// A source queue with a DLQ (`maxReceiveCount`), both standard or both FIFO.
pub async fn queue_with_dlq(prefix: &str, max_receive_count: u32, fifo: bool, visibility: u32) -> (Queue, Queue) {
    let client = sqs().await;
    let base = unique(prefix);
    let suffix = if fifo { ".fifo" } else { "" };
    let mut fifo_attrs = Vec::new();
    if fifo {
        fifo_attrs.push((QueueAttributeName::FifoQueue, "true".to_string()));
        fifo_attrs.push((QueueAttributeName::ContentBasedDeduplication, "true".to_string()));
    }
    let dlq = create_queue(&client, &format!("{base}-dlq{suffix}"), &fifo_attrs).await;
    let dlq_arn = dlq.attributes().await.expect("dlq attributes").arn.expect("dlq arn");
    let mut attrs = fifo_attrs.clone();
    attrs.push((
        QueueAttributeName::RedrivePolicy,
        serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}).to_string(),
    ));
    attrs.push((QueueAttributeName::VisibilityTimeout, visibility.to_string()));
    let src = create_queue(&client, &format!("{base}{suffix}"), &attrs).await;
    (src, dlq)
}

/// Receive everything currently visible (until `idle` passes with nothing new), deleting as it goes.
pub async fn drain(queue: &Queue, idle: Duration) -> Vec<sqskit::ReceivedMessage> {
    let mut all = Vec::new();
    let deadline_idle = idle.as_secs().clamp(1, 20);
    loop {
        let got = queue.receive(10, Duration::from_secs(deadline_idle), None).await.expect("receive");
        if got.is_empty() {
            return all;
        }
        let handles: Vec<&str> = got.iter().map(|m| m.receipt_handle.as_str()).collect();
        queue.delete_batch(&handles).await.expect("delete").into_result().expect("delete entries");
        all.extend(got);
    }
}

/// Wait until `queue` holds at least `n` visible messages (producers such as SNS, S3 and
/// EventBridge deliver asynchronously); panics after 30 s.
pub async fn wait_visible(queue: &Queue, n: u64) {
    for _ in 0..120 {
        if depth(queue).await.0 >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{} never held {n} messages: {:?}", queue.name(), depth(queue).await);
}

/// Receive without deleting (messages become visible again after `visibility`).
pub async fn peek_all(queue: &Queue, wait: Duration, visibility: Duration) -> Vec<sqskit::ReceivedMessage> {
    let mut all = Vec::new();
    loop {
        let got = queue.receive(10, wait, Some(visibility)).await.expect("receive");
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

/// Queue depth: (visible, in flight, delayed).
pub async fn depth(queue: &Queue) -> (u64, u64, u64) {
    let a = queue.attributes().await.expect("attributes");
    (a.visible, a.in_flight, a.delayed)
}

pub mod archive;
pub mod deny;
pub mod hooks;
pub mod http;
pub mod lambda_rt;
pub mod lambda_rt_concurrent;
pub mod proc;
pub mod producers;
pub mod proxy;
pub mod stores;
pub mod tls;

/// A record shaped exactly as Lambda's SQS event source sends it, from a received message.
pub fn lambda_record(m: &sqskit::ReceivedMessage, arn: &str) -> serde_json::Value {
    use base64::Engine;
    let attrs: serde_json::Map<String, serde_json::Value> = m
        .attributes
        .iter()
        .map(|(k, v)| {
            let mut o = serde_json::json!({"stringListValues": [], "binaryListValues": [], "dataType": v.data_type});
            if let Some(s) = &v.string_value {
                o["stringValue"] = s.clone().into();
            }
            if let Some(b) = &v.binary_value {
                o["binaryValue"] = base64::engine::general_purpose::STANDARD.encode(b).into();
            }
            (k.clone(), o)
        })
        .collect();
    serde_json::json!({
        "messageId": m.message_id,
        "receiptHandle": m.receipt_handle,
        "body": m.body,
        "attributes": m.system_attributes,
        "messageAttributes": attrs,
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1"
    })
}

/// Receive exactly `n` messages (keeping them in flight for 120 s).
pub async fn receive_exactly(q: &Queue, n: usize) -> Vec<sqskit::ReceivedMessage> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < n && std::time::Instant::now() < deadline {
        let want = (n - got.len()).min(10) as u32;
        got.extend(q.receive(want, Duration::from_secs(2), Some(Duration::from_secs(120))).await.expect("receive"));
    }
    assert_eq!(got.len(), n, "received all");
    got
}

/// A DLQ shared by two source queues (`maxReceiveCount` 1, so `ListDeadLetterSourceQueues`
/// names no single source) holding one message that SQS's redrive policy moved there from the
/// first source: received once, made visible again, received again. Returns (source, DLQ).
pub async fn shared_dlq_with_redriven_message(prefix: &str, body: &str) -> (Queue, Queue) {
    let client = sqs().await;
    let base = unique(prefix);
    let dlq = create_queue(&client, &format!("{base}-dlq"), &[]).await;
    let dlq_arn = dlq.attributes().await.expect("dlq attributes").arn.expect("dlq arn");
    let policy = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}).to_string();
    let mut sources = Vec::new();
    for name in [format!("{base}-a"), format!("{base}-b")] {
        sources.push(create_queue(&client, &name, &[(QueueAttributeName::RedrivePolicy, policy.clone())]).await);
    }
    let src = sources.swap_remove(0);
    src.send(sqskit::OutgoingMessage::new(body)).await.expect("send");
    let first = receive_exactly(&src, 1).await;
    src.change_visibility_each(&[(first[0].receipt_handle.as_str(), 0)])
        .await
        .expect("release")
        .into_result()
        .expect("release entry");
    for _ in 0..20 {
        let again = src.receive(10, Duration::from_secs(1), Some(Duration::from_secs(30))).await.expect("receive");
        assert!(again.is_empty(), "the second receive moves the message to the DLQ instead of returning it");
        if depth(&dlq).await.0 == 1 {
            return (src, dlq);
        }
    }
    panic!("SQS did not move the message to the DLQ");
}

/// Send `n` messages with bodies `{prefix}0`, `{prefix}1`, … (`send_batch` makes the calls of 10).
pub async fn send_numbered(q: &Queue, n: usize, prefix: &str) {
    q.send_batch((0..n).map(|i| sqskit::OutgoingMessage::new(format!("{prefix}{i}"))))
        .await
        .expect("send")
        .into_result()
        .expect("every entry sent");
}
