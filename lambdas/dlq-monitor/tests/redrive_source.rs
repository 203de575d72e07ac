//! Dead letters moved by SQS's redrive policy are filed under their source queue, taken from
//! the `DeadLetterQueueSourceArn` system attribute: a real redrive through LocalStack, archived
//! by the real `dlq-monitor` binary.
use sqskit_test_support as support;

use support::lambda_rt::{event, response, LambdaHarness};
use support::*;

#[tokio::test]
async fn dlq_monitor_files_a_redriven_message_under_its_source_queue_not_unknown() {
    let (src, dlq) = shared_dlq_with_redriven_message("monredrive", "{\"order\":7}").await;
    let dlq_arn = dlq.attributes().await.unwrap().arn.unwrap();
    let got = receive_exactly(&dlq, 1).await;
    let src_arn = src.attributes().await.unwrap().arn.unwrap();
    assert_eq!(
        got[0].system_attributes.get("DeadLetterQueueSourceArn"),
        Some(&src_arn),
        "SQS marks what its redrive policy moved"
    );
    let sdk = sdk_config().await;
    let s3 = sqskit::dlq::s3_client(&sdk);
    let bucket = unique("archive").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let mut lambda = LambdaHarness::start(
        env!("CARGO_BIN_EXE_dlq-monitor"),
        "dlq-monitor",
        &[("ARCHIVE_BUCKET", bucket.clone()), ("ARCHIVE_PREFIX", "dead".into())],
    );
    let resp = response(lambda.invoke(event(vec![lambda_record(&got[0], &dlq_arn)])), &lambda.output());
    assert_eq!(resp, serde_json::json!({"batchItemFailures": []}));
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with(&format!("dead/{}/", src.name())), "filed under the source queue: {keys:?}");
}
