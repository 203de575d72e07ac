//! Real producers from other AWS services, on LocalStack: an SNS topic that fans out into a
//! queue (the notification envelope: no raw delivery) and an S3 bucket that notifies a queue of
//! new objects (after its `s3:TestEvent`). For the envelope tests of the library and the CLI.

use sqskit::Queue;

use crate::{sdk_config, unique};

/// A new SNS topic with `queue` subscribed to it, without raw message delivery (so each message
/// arrives in SNS's notification envelope). Returns the client and the topic's ARN.
pub async fn sns_topic_into(queue: &Queue) -> (aws_sdk_sns::Client, String) {
    let sns = aws_sdk_sns::Client::new(&sdk_config().await);
    let topic = sns.create_topic().name(unique("topic")).send().await.expect("create topic");
    let topic_arn = topic.topic_arn().expect("topic arn").to_string();
    let queue_arn = queue.attributes().await.expect("queue attributes").arn.expect("queue arn");
    sns.subscribe().topic_arn(&topic_arn).protocol("sqs").endpoint(queue_arn).send().await.expect("subscribe");
    (sns, topic_arn)
}

/// A new S3 bucket whose object-created notifications go to `queue` (S3 sends an
/// `s3:TestEvent` there first). Returns the client (path style) and the bucket's name.
pub async fn s3_bucket_notifying(queue: &Queue) -> (aws_sdk_s3::Client, String) {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    let s3 = sqskit::payload::s3_client(&sdk_config().await);
    let bucket = unique("events").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    let queue_arn = queue.attributes().await.expect("queue attributes").arn.expect("queue arn");
    let target = QueueConfiguration::builder()
        .queue_arn(queue_arn)
        .events(Event::S3ObjectCreated)
        .build()
        .expect("queue configuration");
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(NotificationConfiguration::builder().queue_configurations(target).build())
        .send()
        .await
        .expect("put bucket notification configuration");
    (s3, bucket)
}

/// Publish `message` to `topic` with an optional subject and String message attributes.
pub async fn publish(
    sns: &aws_sdk_sns::Client,
    topic: &str,
    message: &str,
    subject: Option<&str>,
    attributes: &[(&str, &str)],
) {
    let mut call = sns.publish().topic_arn(topic).message(message).set_subject(subject.map(str::to_string));
    for (name, value) in attributes {
        let v = aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(*value)
            .build()
            .expect("attribute");
        call = call.message_attributes(*name, v);
    }
    call.send().await.expect("publish");
}
