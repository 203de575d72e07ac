//! Idempotency against the real stores: DynamoDB on moto (with Powertools for AWS Lambda,
//! Python, writing and reading the same table), Redis (a real `redis-server`), and SQS on
//! LocalStack for the message side.
use sqskit_test_support as support;
use sqskit_test_support::stores;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use sqskit::idempotency::{
    Claim, DynamoDbStore, Idempotency, IdempotencyStore, KeySource, MemoryStore, Record, RedisStore, Status,
};
use sqskit::processor::dead_letter_attributes as dl;
use sqskit::retry::Backoff;
use sqskit::{
    FailureKind, HandlerError, Message, Outcome, OutgoingMessage, Processor, ProcessorConfig, QueueContext,
    ReceivedMessage,
};
use support::*;

fn received(id: &str, body: &str) -> Arc<ReceivedMessage> {
    Arc::new(ReceivedMessage {
        message_id: id.to_string(),
        receipt_handle: String::new(),
        body: body.to_string(),
        attributes: HashMap::new(),
        system_attributes: HashMap::from([("ApproximateReceiveCount".to_string(), "1".to_string())]),
        received_at: Instant::now(),
        queue_url: None,
    })
}

/// The claim rules every store must follow, driven with explicit clocks.
async fn follows_the_claim_rules(store: &dyn IdempotencyStore) {
    let now = SystemTime::now();
    let key = unique("rules");
    let at = |secs: u64| now + Duration::from_secs(secs);
    let in_progress = Record {
        key: key.clone(),
        status: Status::InProgress,
        expiration: at(60),
        in_progress_expiration: Some(now + Duration::from_millis(5_250)),
        validation: Some("v1".into()),
        data: None,
    };
    assert_eq!(store.claim(&in_progress, now).await.unwrap(), Claim::Claimed, "{}: absent key", store.kind());
    match store.claim(&in_progress, now).await.unwrap() {
        Claim::Existing(r) => {
            assert_eq!(r.status, Status::InProgress);
            assert_eq!(r.validation.as_deref(), Some("v1"));
            let ms = |t: SystemTime| sqskit::idempotency::epoch_millis(t);
            assert_eq!(
                r.in_progress_expiration.map(ms),
                in_progress.in_progress_expiration.map(ms),
                "{}",
                store.kind()
            );
        }
        other => panic!("{}: a held key must come back, got {other:?}", store.kind()),
    }
    // the heartbeat moves the claim: still held at +8 s, lapsed at +10 s
    store.extend(&key, at(9)).await.unwrap();
    assert!(matches!(store.claim(&in_progress, at(8)).await.unwrap(), Claim::Existing(_)), "{}", store.kind());
    assert_eq!(store.claim(&in_progress, at(10)).await.unwrap(), Claim::Claimed, "{}: lapsed claim", store.kind());
    // completed: held until it expires, whatever its in-progress expiry said
    let done = Record {
        status: Status::Completed,
        in_progress_expiration: None,
        data: Some("null".into()),
        ..in_progress.clone()
    };
    store.complete(&done).await.unwrap();
    store.extend(&key, at(30)).await.unwrap(); // no effect on a completed record
    match store.claim(&in_progress, at(40)).await.unwrap() {
        Claim::Existing(r) => assert_eq!((r.status, r.data.as_deref()), (Status::Completed, Some("null"))),
        other => panic!("{}: a completed key must come back, got {other:?}", store.kind()),
    }
    // expired records count as absent (a TTL deletes them late)
    assert_eq!(store.claim(&in_progress, at(62)).await.unwrap(), Claim::Claimed, "{}: expired", store.kind());
    store.delete(&key).await.unwrap();
    assert_eq!(store.claim(&in_progress, now).await.unwrap(), Claim::Claimed, "{}: deleted", store.kind());
}

#[tokio::test]
async fn memory_store_follows_the_claim_rules() {
    follows_the_claim_rules(&MemoryStore::new()).await;
}

#[tokio::test]
async fn dynamodb_store_follows_the_claim_rules() {
    let client = stores::dynamodb().await;
    let table = stores::table(&client, &unique("idem-rules")).await;
    follows_the_claim_rules(&DynamoDbStore::new(client, table)).await;
}

#[tokio::test]
async fn redis_store_follows_the_claim_rules() {
    let redis = stores::RedisServer::start();
    follows_the_claim_rules(&RedisStore::open(&redis.url()).unwrap()).await;
}

/// A processor keyed by `/order_id` with prefix `orders` that counts handler runs.
fn orders(store: Arc<dyn IdempotencyStore>, runs: Arc<AtomicUsize>) -> Processor<Value> {
    Processor::json(move |_m: Message<Value>| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(())
        }
    })
    .with_idempotency(
        Idempotency::with_store(store).with_prefix("orders").with_key_source(KeySource::Pointer("/order_id".into())),
    )
}

/// Run one record through a Powertools `idempotent_function` (key `order_id`, prefix
/// `orders`, payload validation over the whole record); returns what it printed.
fn powertools(table: &str, record: &Value) -> Value {
    let script = r#"
import json, sys
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyValidationError
ran = []
persistence = DynamoDBPersistenceLayer(table_name=sys.argv[1])
config = IdempotencyConfig(event_key_jmespath="order_id", payload_validation_jmespath="@")
@idempotent_function(data_keyword_argument="record", persistence_store=persistence, config=config, key_prefix="orders")
def process(record):
    ran.append(record["order_id"])
    return None
try:
    process(record=json.loads(sys.argv[2]))
    print(json.dumps({"ran": bool(ran)}))
except IdempotencyValidationError as e:
    print(json.dumps({"ran": bool(ran), "error": "validation"}))
"#;
    let out = std::process::Command::new(stores::python())
        .args(["-c", script, table, &record.to_string()])
        .envs(aws_env())
        .envs(stores::dynamodb_env())
        .output()
        .expect("run the Powertools script (scripts/moto install creates .venv-moto)");
    assert!(out.status.success(), "Powertools script failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn powertools_and_sqskit_share_one_table_in_both_directions() {
    let client = stores::dynamodb().await;
    let table = stores::table(&client, &unique("idem-powertools")).await;
    let store: Arc<dyn IdempotencyStore> = Arc::new(DynamoDbStore::new(client.clone(), table.clone()));
    let runs = Arc::new(AtomicUsize::new(0));
    let p = orders(store, runs.clone());
    let ctx = QueueContext::default();

    // Powertools first: sqskit sees a duplicate and does not run its handler
    let py_order = json!({"order_id": "py-1", "amount": 1, "note": "naïve"});
    assert_eq!(powertools(&table, &py_order), json!({"ran": true}));
    let o = p.process_one(&ctx, received("m1", &py_order.to_string())).await;
    assert_eq!(o, Outcome::Duplicate, "sqskit must read the record Powertools wrote");
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    // sqskit first: Powertools returns the stored result without running the function
    let rs_order = json!({"order_id": "rs-1", "amount": 2});
    assert_eq!(p.process_one(&ctx, received("m2", &rs_order.to_string())).await, Outcome::Succeeded);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(powertools(&table, &rs_order), json!({"ran": false}), "Powertools must read sqskit's record");

    // the payload hashes agree too: another payload under the same key is refused by both
    let changed = json!({"order_id": "rs-1", "amount": 3});
    assert_eq!(powertools(&table, &changed), json!({"ran": false, "error": "validation"}));
    let f =
        p.call_handler(received("m3", &json!({"order_id": "py-1", "amount": 9, "note": "naïve"}).to_string())).await;
    assert_eq!(f.map_err(|f| f.kind), Err(FailureKind::KeyReuse));

    // sqskit's item has Powertools' layout and types
    let key = format!("orders#{}", sqskit::idempotency::hash_value(&json!("rs-1")));
    let item = stores::item(&client, &table, &key).await.expect("sqskit's record");
    assert_eq!(item["status"].as_s().unwrap(), "COMPLETED");
    assert_eq!(item["data"].as_s().unwrap(), "null");
    let expiration: u64 = item["expiration"].as_n().unwrap().parse().unwrap();
    let now = sqskit::idempotency::epoch_secs(SystemTime::now());
    assert!((now + 3500..=now + 3700).contains(&expiration), "expiration {expiration} is epoch seconds, 1 h ahead");
}

#[tokio::test]
async fn a_reused_key_with_another_payload_is_dead_lettered_with_its_kind() {
    let (q, dlq) = queue_with_dlq("idem-reuse", 5, false, 30).await;
    let ctx = QueueContext::discover(q.clone()).await.unwrap();
    let client = stores::dynamodb().await;
    let table = stores::table(&client, &unique("idem-reuse")).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let p = orders(Arc::new(DynamoDbStore::new(client, table)), runs.clone());
    q.send(OutgoingMessage::new(r#"{"order_id":"r-1","amount":1}"#)).await.unwrap();
    q.send(OutgoingMessage::new(r#"{"order_id":"r-1","amount":1000}"#)).await.unwrap();
    let batch = receive_exactly(&q, 2).await;
    let decisions = p.process_sequence(&ctx, batch.into_iter().map(Arc::new).collect()).await;
    let report = p.settle(&ctx, &decisions).await;
    assert_eq!(report.deleted, 2, "{report:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let dead = drain(&dlq, Duration::from_secs(2)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, r#"{"order_id":"r-1","amount":1000}"#);
    assert_eq!(dead[0].attribute_str(dl::ERROR_KIND), Some("idempotency-key-reuse"));
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn an_unavailable_store_retries_the_message_and_never_runs_it_unguarded() {
    let (q, _dlq) = queue_with_dlq("idem-down", 5, false, 30).await;
    let ctx = QueueContext::discover(q.clone()).await.unwrap();
    let mut redis = stores::RedisServer::start();
    let port = redis.port;
    let store: Arc<dyn IdempotencyStore> = Arc::new(RedisStore::open(&redis.url()).unwrap());
    let runs = Arc::new(AtomicUsize::new(0));
    let p = orders(store, runs.clone())
        .with_config(ProcessorConfig::default().with_backoff(Backoff::fixed(Duration::from_secs(1))));
    redis.stop();
    let t0 = Instant::now();
    q.send(OutgoingMessage::new(r#"{"order_id":"d-1"}"#)).await.unwrap();
    let batch = receive_exactly(&q, 1).await;
    let decisions = p.process_batch(&ctx, batch).await;
    // a dead store must fail the claim promptly, not stall the message for minutes (it took
    // 118 s before the Redis connection retries were bounded)
    assert!(t0.elapsed() < Duration::from_secs(15), "claim against a stopped Redis took {:?}", t0.elapsed());
    match &decisions[0].outcome {
        Outcome::Retry { failure, .. } => {
            assert_eq!(failure.kind, FailureKind::IdempotencyStore);
            assert!(failure.error.contains("redis"), "{}", failure.error);
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the handler must not run without a claim");
    p.settle(&ctx, &decisions).await;
    assert_eq!(p.idempotency_counts().store_error, 1);

    // the store comes back: the same message is processed, once
    let _redis = stores::RedisServer::start_on(port);
    let batch = receive_exactly(&q, 1).await;
    assert_eq!(batch[0].receive_count(), 2);
    let decisions = p.process_batch(&ctx, batch).await;
    assert_eq!(decisions[0].outcome, Outcome::Succeeded);
    p.settle(&ctx, &decisions).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn an_unreachable_dynamodb_fails_the_claim_as_a_retry() {
    // nothing listens there: the SDK's connection errors become a store error, not a run
    let conf = sdk_config_for(&format!("http://127.0.0.1:{}", stores::free_port())).await;
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&conf), "nowhere");
    let runs = Arc::new(AtomicUsize::new(0));
    let p = orders(Arc::new(store), runs.clone());
    let f = p.call_handler(received("m1", r#"{"order_id":"x"}"#)).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::IdempotencyStore);
    assert!(f.error.contains("dynamodb"), "{}", f.error);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}
