//! The real idempotency stores for tests: DynamoDB on moto (`scripts/moto start`, started by
//! `scripts/test`) and a `redis-server` child process per test (installed by
//! `scripts/redis-install`). Included by path where needed (it needs aws-sdk-dynamodb).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};

/// moto's endpoint (`SQSKIT_TEST_DYNAMODB_URL`, default `http://127.0.0.1:4571`).
pub fn dynamodb_url() -> String {
    std::env::var("SQSKIT_TEST_DYNAMODB_URL").unwrap_or_else(|_| "http://127.0.0.1:4571".to_string())
}

/// Environment for child processes: DynamoDB on moto, everything else as before.
pub fn dynamodb_env() -> Vec<(&'static str, String)> {
    vec![("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_url())]
}

/// A DynamoDB client for moto; fails loudly when moto is not up.
pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    let client = aws_sdk_dynamodb::Client::new(&crate::sdk_config_for(&dynamodb_url()).await);
    if let Err(e) = client.list_tables().limit(1).send().await {
        panic!(
            "moto (DynamoDB) is not reachable at {} ({}); start it with `scripts/moto start` or run `scripts/test`",
            dynamodb_url(),
            aws_sdk_dynamodb::error::DisplayErrorContext(e)
        );
    }
    client
}

/// A fresh table laid out as Powertools' (hash key `id`, a string).
pub async fn table(client: &aws_sdk_dynamodb::Client, name: &str) -> String {
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("id").attribute_type(ScalarAttributeType::S).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build().unwrap())
        .send()
        .await
        .expect("create table on moto");
    name.to_string()
}

/// The item stored under `id`, as `{attribute: (type, value)}`.
pub async fn item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    id: &str,
) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    client
        .get_item()
        .table_name(table)
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
}

/// A free local TCP port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A `redis-server` child process on a local port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Start one on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Start one on `port` (e.g. again after [`RedisServer::stop`]).
    pub fn start_on(port: u16) -> Self {
        let bin = std::env::var("SQSKIT_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} ({e}); install it with `scripts/redis-install`"));
        let server = Self { child: Some(child), port };
        let until = Instant::now() + Duration::from_secs(10);
        while !server.answers() {
            assert!(Instant::now() < until, "redis-server did not answer PING on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).map(|n| buf[..n].starts_with(b"+PONG")).unwrap_or(false)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kill it (the port stays free for [`RedisServer::start_on`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Python with Powertools and boto3 (`SQSKIT_TEST_PYTHON`, default `.venv-moto/bin/python`).
pub fn python() -> PathBuf {
    std::env::var_os("SQSKIT_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .find(|p| p.join("scripts/moto").exists())
            .map_or_else(|| PathBuf::from(".venv-moto/bin/python"), |root| root.join(".venv-moto/bin/python"))
    })
}
