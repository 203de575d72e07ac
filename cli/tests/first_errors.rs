//! The errors a newcomer meets first, from the real binary: each is one sentence that says what
//! to do (no SDK debug dump), and exits 1.
//!
//! Each run clears the environment (no AWS_* variables, a HOME without ~/.aws), then sets only
//! what the case needs.

use std::process::Command;

const LOCALSTACK: &str = "http://127.0.0.1:4566";

fn sqskit(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let home = std::env::temp_dir().join(format!("sqskit-no-home-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_sqskit"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run sqskit");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

const CREDS: [(&str, &str); 2] = [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")];

fn one_sentence(stderr: &str) {
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("DispatchFailure") && !stderr.contains("ConnectorError"), "no SDK dump: {stderr}");
}

#[test]
fn no_region_names_aws_region_and_the_region_flag() {
    let url = format!("{LOCALSTACK}/queue/us-east-1/000000000000/anything");
    let (code, err) = sqskit(&CREDS, &["stats", "--endpoint-url", LOCALSTACK, "--queue-url", &url]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no AWS region") && err.contains("AWS_REGION") && err.contains("--region"), "{err}");
    one_sentence(&err);
}

#[tokio::test]
async fn the_region_flag_works_without_aws_region() {
    let q = sqskit_test_queue("first-errors-region").await;
    let mut env = CREDS.to_vec();
    env.push(("AWS_ENDPOINT_URL", LOCALSTACK));
    let (code, err) = sqskit(&env, &["stats", "--region", "us-east-1", "--queue-url", &q]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn no_credentials_says_where_they_are_looked_for() {
    let url = format!("{LOCALSTACK}/queue/us-east-1/000000000000/anything");
    let (code, err) =
        sqskit(&[("AWS_REGION", "us-east-1")], &["peek", "--endpoint-url", LOCALSTACK, "--queue-url", &url]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no AWS credentials") && err.contains("AWS_ACCESS_KEY_ID") && err.contains("AWS_PROFILE"),
        "{err}"
    );
    one_sentence(&err);
}

#[test]
fn an_endpoint_that_does_not_answer_is_named() {
    // a port nothing listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let url = format!("{endpoint}/queue/us-east-1/000000000000/anything");
    let mut env = CREDS.to_vec();
    env.push(("AWS_REGION", "us-east-1"));
    let (code, err) = sqskit(&env, &["stats", "--endpoint-url", &endpoint, "--queue-url", &url]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("cannot reach the endpoint {endpoint}")) && err.contains("connection refused"),
        "{err}"
    );
    one_sentence(&err);
}

#[test]
fn a_missing_queue_is_named_as_given_url_or_name() {
    let mut env = CREDS.to_vec();
    env.push(("AWS_REGION", "us-east-1"));
    let name = format!("no-such-queue-{}", std::process::id());
    let url = format!("{LOCALSTACK}/queue/us-east-1/000000000000/{name}");
    let (code, err) = sqskit(&env, &["stats", "--endpoint-url", LOCALSTACK, "--queue-url", &url]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("the queue URL {url} names no queue")), "{err}");
    one_sentence(&err);
    let (code, err) = sqskit(&env, &["peek", "--endpoint-url", LOCALSTACK, "--queue-url", &name]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("there is no queue named \"{name}\"")), "{err}");
    one_sentence(&err);
}

#[tokio::test]
async fn a_queue_name_works_where_a_url_is_expected() {
    let url = sqskit_test_queue("first-errors-name").await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let mut env = CREDS.to_vec();
    env.push(("AWS_REGION", "us-east-1"));
    let (code, err) = sqskit(&env, &["send", "--endpoint-url", LOCALSTACK, "--queue-url", &name, "--body", "hello"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = sqskit(&env, &["stats", "--endpoint-url", LOCALSTACK, "--queue-url", &name]);
    assert_eq!(code, 0, "{err}");
}

/// A fresh standard queue on LocalStack; its URL.
async fn sqskit_test_queue(prefix: &str) -> String {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(LOCALSTACK)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "test"))
        .load()
        .await;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000
    );
    client.create_queue().queue_name(name).send().await.unwrap().queue_url().unwrap().to_string()
}
