//! Large payloads (claim check) through the real `sqskit send` and `sqskit poll --exec`
//! against LocalStack S3 + SQS.
use sqskit_test_support as support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::proc::{spawn, sqskit, tail, temp_dir};
use support::*;

const EXIT_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn exec_handler_gets_the_resolved_body_on_stdin_and_cleanup_removes_the_object() {
    let s3 = sqskit::payload::s3_client(&sdk_config().await);
    let bucket = unique("cc-cli").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    let queue = queue("cc-exec").await;
    let dir = temp_dir("cc-exec");

    // 5 MiB of text with multi-byte characters, sent by the CLI through the bucket
    let mut body = String::new();
    let mut i = 0;
    while body.len() < 5 << 20 {
        body.push_str(&format!("{i:08} ✓ claim-checked line\n"));
        i += 1;
    }
    let file = dir.join("body.txt");
    std::fs::write(&file, &body).unwrap();
    let mut send = spawn({
        let mut c = sqskit(None);
        c.args(["send", "--queue-url", queue.url(), "--payload-bucket", &bucket, "--file", file.to_str().unwrap()]);
        c
    });
    assert!(send.wait(EXIT_LIMIT).success(), "send failed:\n{}", tail(&send.stderr(), 20));
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert_eq!(listed.contents().len(), 1, "the body went to S3");

    let out = dir.join("stdin.txt");
    let attrs = dir.join("attrs.txt");
    let handler = dir.join("handler");
    std::fs::write(
        &handler,
        format!("#!/bin/sh\ncat > '{}'\nenv | grep '^SQSKIT_ATTR_' > '{}'\nexit 0\n", out.display(), attrs.display()),
    )
    .unwrap();
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut poll = spawn({
        let mut c = sqskit(None);
        c.args(["poll", "--queue-url", queue.url(), "--progress-interval", "0", "--wait-time", "1"]);
        c.args(["--payload-bucket", &bucket, "--payload-cleanup", "--until-empty"]);
        c.args(["--exec", handler.to_str().unwrap()]);
        c
    });
    let status = poll.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&poll.stderr(), 30));
    let got = std::fs::read(&out).expect("the handler ran");
    assert!(got == body.as_bytes(), "the handler got the exact body on stdin ({} bytes)", got.len());
    let seen = std::fs::read_to_string(&attrs).unwrap_or_default();
    assert!(!seen.contains("EXTENDEDPAYLOADSIZE"), "the reserved attribute is hidden: {seen}");
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert_eq!(listed.contents().len(), 0, "cleanup removed the object after the delete");
}
