//! An S3 bucket and an SNS topic whose alerts land in an SQS queue, for the DLQ archive and
//! alert tests (the dlq-monitor Lambda and `sqskit dlq drain`).

use sqskit::Queue;

use crate::{queue, sdk_config, unique};

pub struct Capture {
    pub bucket: String,
    pub topic_arn: String,
    pub alerts: Queue,
    pub s3: aws_sdk_s3::Client,
}

/// A fresh bucket, a topic, and a queue subscribed to the topic.
pub async fn capture() -> Capture {
    let sdk = sdk_config().await;
    let s3 = sqskit::dlq::s3_client(&sdk);
    let bucket = unique("archive").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let sns = aws_sdk_sns::Client::new(&sdk);
    let topic_arn = sns.create_topic().name(unique("alerts")).send().await.unwrap().topic_arn().unwrap().to_string();
    let alerts = queue("alert-capture").await;
    let alerts_arn = alerts.attributes().await.unwrap().arn.unwrap();
    sns.subscribe().topic_arn(&topic_arn).protocol("sqs").endpoint(alerts_arn).send().await.unwrap();
    Capture { bucket, topic_arn, alerts, s3 }
}

impl Capture {
    /// The keys of every object in the archive bucket.
    pub async fn keys(&self) -> Vec<String> {
        let listed = self.s3.list_objects_v2().bucket(&self.bucket).send().await.unwrap();
        listed.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
    }
}
