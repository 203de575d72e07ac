//! Routing by type (feature `events`): each message to the handler registered for its type.
//!
//! A [`Router`] reads each message's type ([`RouteKey`]: the envelope's event type — EventBridge
//! `detail-type`, CloudEvents `type`, S3 `eventName` —, an SNS or SQS message attribute, or a
//! JSON Pointer into the payload) and calls the route registered for it, each route with its own
//! payload type (`Message<OrderPlaced>` for one, `Message<OrderShipped>` for another), and with
//! its own schema ([`Router::with_schema`], feature `schema`). A message whose type has no route
//! goes to the fallback ([`Router::fallback`]), or fails as
//! [`FailureKind::Unrouted`] (dead-lettered). A payload that does not decode into its route's
//! type fails as `undecodable`, one that fails its route's schema as `permanent`.
//!
//! It owns the choice of handler and the payload's conversion into the route's type; the rest
//! is the processor's ([`Processor::router`]): envelopes, idempotency, FIFO rules, retries,
//! dead-lettering. A router with a batch route ([`Router::route_batch`]) makes the processor a
//! batch processor: each batch route gets its messages of the batch in one call, one-message
//! routes are called per message (up to [`Router::with_concurrency`] at once).
//!
//! # Example
//! ```
//! use serde::Deserialize;
//! use sqskit::envelope::EnvelopeKind;
//! use sqskit::router::{RouteKey, Router};
//! use sqskit::{HandlerError, Message, Processor};
//!
//! #[derive(Deserialize)]
//! struct Placed { order: u64 }
//! #[derive(Deserialize)]
//! struct Shipped { order: u64, carrier: String }
//!
//! let router = Router::new(RouteKey::EventType)
//!     .route("OrderPlaced", |m: Message<Placed>| async move {
//!         tracing::info!(order = m.body.order, "placed");
//!         Ok::<_, HandlerError>(())
//!     })
//!     .route("OrderShipped", |m: Message<Shipped>| async move {
//!         tracing::info!(order = m.body.order, carrier = %m.body.carrier, "shipped");
//!         Ok::<_, HandlerError>(())
//!     });
//! // EventBridge events: routed by `detail-type`, each handler gets its `detail`
//! let processor = Processor::router(router).with_envelope(EnvelopeKind::EventBridge);
//! assert!(!processor.is_batch());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::message::Message;
use crate::outcome::{Failure, FailureKind};
use crate::processor::{failure_of, BatchHandler, BoxFuture, Dispatch, DispatchBatch, Handler, Processor};

/// Where a message's type comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteKey {
    /// The envelope's event type: EventBridge `detail-type`, CloudEvents `type`, S3 `eventName`
    /// (needs [`Processor::with_envelope`]).
    EventType,
    /// A message attribute's string value: the SNS notification's message attribute (SNS
    /// envelope) or the CloudEvent's extension attribute when the envelope has it, else the SQS
    /// message attribute.
    Attribute(String),
    /// A JSON Pointer (RFC 6901) into the payload (after the envelope): a string, number or
    /// boolean there names the route.
    Pointer(String),
}

impl RouteKey {
    /// A [`RouteKey::Pointer`], checked.
    ///
    /// # Errors
    /// A text saying what is wrong with the pointer.
    ///
    /// # Example
    /// ```
    /// use sqskit::router::RouteKey;
    /// assert!(RouteKey::pointer("/job/name").is_ok());
    /// assert!(RouteKey::pointer("job").is_err());
    /// ```
    pub fn pointer(p: impl Into<String>) -> Result<Self, String> {
        let p = p.into();
        crate::idempotency::check_pointer(&p)?;
        Ok(Self::Pointer(p))
    }

    /// A [`RouteKey::Attribute`].
    pub fn attribute(name: impl Into<String>) -> Self {
        Self::Attribute(name.into())
    }

    fn describe(&self) -> String {
        match self {
            Self::EventType => "its event type".to_string(),
            Self::Attribute(a) => format!("attribute `{a}`"),
            Self::Pointer(p) => format!("`{p}` in the payload"),
        }
    }

    /// The type of `msg`, when it has one.
    fn of<'m>(&self, msg: &'m Message<Value>) -> Option<std::borrow::Cow<'m, str>> {
        use std::borrow::Cow;
        match self {
            Self::EventType => msg.envelope().and_then(|e| e.event_type()).map(Cow::Borrowed),
            Self::Attribute(name) => msg
                .envelope()
                .and_then(|e| e.attribute(name))
                .or_else(|| msg.raw().attribute_str(name))
                .map(Cow::Borrowed),
            Self::Pointer(p) => match msg.body.pointer(p)? {
                Value::String(s) => Some(Cow::Borrowed(s)),
                v @ (Value::Number(_) | Value::Bool(_)) => Some(Cow::Owned(v.to_string())),
                _ => None,
            },
        }
    }
}

/// A route: a handler of its own payload type.
#[derive(Clone)]
enum Route {
    One(Arc<dyn Dispatch<Value>>),
    Batch(Arc<dyn DispatchBatch<Value>>),
}

/// Sends each message to the handler registered for its type. See the [module docs](self).
#[derive(Clone)]
pub struct Router {
    key: RouteKey,
    routes: HashMap<String, Route>,
    fallback: Option<Arc<dyn Dispatch<Value>>>,
    #[cfg(feature = "schema")]
    schemas: HashMap<String, crate::schema::Schema>,
    concurrency: usize,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes: BTreeMap<&str, &str> = self
            .routes
            .iter()
            .map(|(k, r)| (k.as_str(), if matches!(r, Route::Batch(_)) { "batch" } else { "one" }))
            .collect();
        f.debug_struct("Router")
            .field("key", &self.key)
            .field("routes", &routes)
            .field("fallback", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router reading each message's type from `key`, with no routes yet.
    pub fn new(key: RouteKey) -> Self {
        Self {
            key,
            routes: HashMap::new(),
            fallback: None,
            #[cfg(feature = "schema")]
            schemas: HashMap::new(),
            concurrency: 10,
        }
    }

    /// Messages of type `name` go to `handler`, their payload decoded from JSON into `T`
    /// (registering a name again replaces its route).
    pub fn route<T, H>(mut self, name: impl Into<String>, handler: H) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        H: Handler<T>,
    {
        let route = Typed::<T, H> { handler, name: name.into(), _t: PhantomData };
        self.routes.insert(route.name.clone(), Route::One(Arc::new(route)));
        self
    }

    /// Messages of type `name` go to the batch handler `handler`, all those of a batch in one
    /// call, their payloads decoded into `T`. The processor becomes a batch processor.
    pub fn route_batch<T, H>(mut self, name: impl Into<String>, handler: H) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        H: BatchHandler<T>,
    {
        let route = TypedBatch::<T, H> { handler, name: name.into(), _t: PhantomData };
        self.routes.insert(route.name.clone(), Route::Batch(Arc::new(route)));
        self
    }

    /// Messages with no route (an unknown type, or none) go to `handler` with the payload as
    /// JSON, instead of failing as `unrouted`.
    pub fn fallback<H: Handler<Value>>(mut self, handler: H) -> Self {
        self.fallback = Some(Arc::new(Typed::<Value, H> { handler, name: "(fallback)".into(), _t: PhantomData }));
        self
    }

    /// Validate the payloads of route `name` against `schema` before decoding them (a failure
    /// is `permanent`, with the keyword and the instance path; see [`schema`](crate::schema)).
    #[cfg(feature = "schema")]
    pub fn with_schema(mut self, name: impl Into<String>, schema: crate::schema::Schema) -> Self {
        self.schemas.insert(name.into(), schema);
        self
    }

    /// How many messages of one-message routes run at once within a batch when the router has
    /// batch routes (default 10; at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The route names registered.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether a route takes whole batches.
    pub fn has_batch_routes(&self) -> bool {
        self.routes.values().any(|r| matches!(r, Route::Batch(_)))
    }

    /// Where `msg` goes: its route (its schema checked), else the fallback, else the `unrouted`
    /// failure.
    fn pick(&self, msg: &Message<Value>) -> Result<Target, Failure> {
        let key = self.key.of(msg);
        let Some((name, route)) = key.as_deref().and_then(|k| self.routes.get_key_value(k)) else {
            if let Some(fallback) = &self.fallback {
                return Ok(Target::One(fallback.clone()));
            }
            let what: String = match &key {
                Some(k) => format!("no route for `{}`", k.chars().take(100).collect::<String>()),
                None => "no route: the message has no type".to_string(),
            };
            let error = format!("{what} (routed by {}; routes: {})", self.key.describe(), self.names().join(", "));
            return Err(Failure { kind: FailureKind::Unrouted, error, retry_after: None });
        };
        #[cfg(feature = "schema")]
        if let Some(schema) = self.schemas.get(name) {
            schema
                .check(&msg.body, false)
                .map_err(|f| Failure { error: format!("route `{name}`: {}", f.error), ..f })?;
        }
        Ok(match route {
            Route::One(r) => Target::One(r.clone()),
            Route::Batch(r) => Target::Batch(name.clone(), r.clone()),
        })
    }
}

/// Where one message goes.
enum Target {
    /// A one-message route or the fallback.
    One(Arc<dyn Dispatch<Value>>),
    /// A batch route (its name: messages of one route share a call).
    Batch(String, Arc<dyn DispatchBatch<Value>>),
}

/// A message's result, with its position in the batch.
type Placed = (usize, Result<(), Failure>);
/// A batch route and its messages, with their positions.
type RouteBatch = (Arc<dyn DispatchBatch<Value>>, Vec<(usize, Message<Value>)>);

impl Processor<Value> {
    /// A processor that sends each message to `router`'s route for its type (see
    /// [`router`](crate::router)); the payload reaches the router as JSON. A batch processor
    /// when the router has batch routes.
    pub fn router(router: Router) -> Self {
        if router.has_batch_routes() {
            Processor::dispatching_batch(Arc::new(router))
        } else {
            Processor::dispatching(Arc::new(router))
        }
    }
}

fn failed(f: Failure) -> BoxFuture<Result<(), Failure>> {
    Box::pin(std::future::ready(Err(f)))
}

impl Dispatch<Value> for Router {
    fn call(&self, msg: Message<Value>) -> BoxFuture<Result<(), Failure>> {
        match self.pick(&msg) {
            Err(f) => failed(f),
            Ok(Target::One(route)) => route.call(msg),
            Ok(Target::Batch(_, route)) => {
                let fut = route.call(vec![msg]);
                Box::pin(async move {
                    fut.await.pop().unwrap_or_else(|| {
                        let error = "the batch handler returned no result".to_string();
                        Err(Failure { kind: FailureKind::Retryable, error, retry_after: None })
                    })
                })
            }
        }
    }
}

impl DispatchBatch<Value> for Router {
    fn call(&self, batch: Vec<Message<Value>>) -> BoxFuture<Vec<Result<(), Failure>>> {
        let n = batch.len();
        let mut results: Vec<Option<Result<(), Failure>>> = vec![None; n];
        // the batch routes' messages, by route, in order; the others one by one
        let mut batches: BTreeMap<String, RouteBatch> = BTreeMap::new();
        let mut single_calls: Vec<BoxFuture<Placed>> = Vec::new();
        for (i, msg) in batch.into_iter().enumerate() {
            match self.pick(&msg) {
                Err(f) => results[i] = Some(Err(f)),
                Ok(Target::One(route)) => single_calls.push(Box::pin(route.call(msg).map(move |r| (i, r)))),
                Ok(Target::Batch(name, route)) => batches.entry(name).or_insert((route, Vec::new())).1.push((i, msg)),
            }
        }
        // every call's future is made here (each `'static`) and awaited below
        let batch_calls: Vec<BoxFuture<Vec<Placed>>> = batches
            .into_values()
            .map(|(route, items)| {
                let (positions, msgs): (Vec<usize>, Vec<Message<Value>>) = items.into_iter().unzip();
                let out = route.call(msgs);
                Box::pin(out.map(move |out| positions.into_iter().zip(out).collect::<Vec<_>>()))
                    as BoxFuture<Vec<Placed>>
            })
            .collect();
        let concurrency = self.concurrency;
        Box::pin(async move {
            let singled = futures::stream::iter(single_calls).buffer_unordered(concurrency).collect::<Vec<_>>();
            let (batched, singled) = futures::join!(futures::future::join_all(batch_calls), singled);
            for (i, r) in batched.into_iter().flatten().chain(singled) {
                results[i] = Some(r);
            }
            results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        let error = "the batch route returned too few results".to_string();
                        Err(Failure { kind: FailureKind::Retryable, error, retry_after: None })
                    })
                })
                .collect()
        })
    }
}

/// A route's handler and its payload type.
struct Typed<T, H> {
    handler: H,
    name: String,
    _t: PhantomData<fn() -> T>,
}

/// A batch route's handler and its payload type.
struct TypedBatch<T, H> {
    handler: H,
    name: String,
    _t: PhantomData<fn() -> T>,
}

/// `msg`'s payload decoded into the route's type: `undecodable` when it does not fit (the
/// error names the route and the type, never a value).
fn convert<T: DeserializeOwned>(route: &str, msg: Message<Value>) -> Result<Message<T>, Failure> {
    let mut decoded = None;
    let msg = msg.map(|body| decoded = Some(serde_json::from_value::<T>(body)));
    match decoded.unwrap_or_else(|| serde_json::from_value::<T>(Value::Null)) {
        Ok(t) => Ok(msg.map(|()| t)),
        Err(e) => Err(Failure {
            kind: FailureKind::Undecodable,
            error: format!(
                "route `{route}`: the payload is not a valid {}: {}",
                std::any::type_name::<T>(),
                crate::envelope::safe_data_error(&e.to_string())
            ),
            retry_after: None,
        }),
    }
}

impl<T, H> Dispatch<Value> for Typed<T, H>
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    fn call(&self, msg: Message<Value>) -> BoxFuture<Result<(), Failure>> {
        match convert::<T>(&self.name, msg) {
            Ok(msg) => {
                let fut = self.handler.call(msg);
                Box::pin(async move { fut.await.map_err(failure_of) })
            }
            Err(f) => failed(f),
        }
    }
}

impl<T, H> DispatchBatch<Value> for TypedBatch<T, H>
where
    T: DeserializeOwned + Send + 'static,
    H: BatchHandler<T>,
{
    fn call(&self, batch: Vec<Message<Value>>) -> BoxFuture<Vec<Result<(), Failure>>> {
        let mut results: Vec<Result<(), Failure>> = vec![Ok(()); batch.len()];
        let mut positions = Vec::with_capacity(batch.len());
        let mut typed = Vec::with_capacity(batch.len());
        for (i, msg) in batch.into_iter().enumerate() {
            match convert::<T>(&self.name, msg) {
                Ok(m) => {
                    positions.push(i);
                    typed.push(m);
                }
                Err(f) => results[i] = Err(f),
            }
        }
        if typed.is_empty() {
            return Box::pin(std::future::ready(results));
        }
        let n = typed.len();
        let fut = self.handler.call(typed);
        let name = self.name.clone();
        Box::pin(async move {
            let out = fut.await;
            if out.len() != n {
                let error =
                    format!("route `{name}`: the batch handler returned {} results for {n} messages", out.len());
                let f = Failure { kind: FailureKind::Retryable, error, retry_after: None };
                positions.iter().for_each(|&i| results[i] = Err(f.clone()));
            } else {
                for (i, r) in positions.into_iter().zip(out) {
                    results[i] = r.map_err(failure_of);
                }
            }
            results
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EnvelopeKind;
    use crate::message::ReceivedMessage;
    use std::sync::Mutex;

    fn raw(body: &str, attrs: &[(&str, &str)]) -> Arc<ReceivedMessage> {
        Arc::new(ReceivedMessage {
            message_id: "m1".into(),
            receipt_handle: String::new(),
            body: body.into(),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), crate::AttributeValue::string(*v))).collect(),
            system_attributes: Default::default(),
            received_at: std::time::Instant::now(),
            queue_url: None,
        })
    }

    #[derive(serde::Deserialize, Debug)]
    struct Placed {
        order: u64,
    }

    fn event(detail_type: &str, detail: &str) -> String {
        format!(r#"{{"version":"0","id":"e","detail-type":"{detail_type}","source":"shop","detail":{detail}}}"#)
    }

    #[tokio::test]
    async fn routes_by_event_type_and_fails_the_unknown_as_unrouted() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let router = Router::new(RouteKey::EventType).route("OrderPlaced", move |m: Message<Placed>| {
            s.lock().unwrap().push(m.body.order);
            async { Ok::<_, crate::HandlerError>(()) }
        });
        let p = Processor::router(router).with_envelope(EnvelopeKind::EventBridge);
        p.call_handler(raw(&event("OrderPlaced", r#"{"order":7}"#), &[])).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [7]);
        let f = p.call_handler(raw(&event("Refunded", r#"{"order":8}"#), &[])).await.unwrap_err();
        assert_eq!(f.kind, FailureKind::Unrouted);
        assert_eq!(f.error, "no route for `Refunded` (routed by its event type; routes: OrderPlaced)");
        let f = p.call_handler(raw(&event("OrderPlaced", r#"{"order":"secret"}"#), &[])).await.unwrap_err();
        assert_eq!(f.kind, FailureKind::Undecodable);
        assert!(f.error.starts_with("route `OrderPlaced`: the payload is not a valid"), "{}", f.error);
        assert!(!f.error.contains("secret"), "{}", f.error);
        assert_eq!(*seen.lock().unwrap(), [7]);
    }

    #[tokio::test]
    async fn routes_by_attribute_or_pointer_with_a_fallback() {
        let hits = Arc::new(Mutex::new(Vec::<String>::new()));
        let (a, b) = (hits.clone(), hits.clone());
        let router = Router::new(RouteKey::attribute("job"))
            .route("email", move |_m: Message<Value>| {
                a.lock().unwrap().push("email".into());
                async { Ok::<_, crate::HandlerError>(()) }
            })
            .fallback(move |m: Message<Value>| {
                b.lock().unwrap().push(format!("fallback {}", m.body));
                async { Ok::<_, crate::HandlerError>(()) }
            });
        let p = Processor::router(router);
        p.call_handler(raw("{}", &[("job", "email")])).await.unwrap();
        p.call_handler(raw(r#"{"x":1}"#, &[("job", "sms")])).await.unwrap();
        p.call_handler(raw("[]", &[])).await.unwrap();
        assert_eq!(*hits.lock().unwrap(), ["email", r#"fallback {"x":1}"#, "fallback []"]);

        let p = Processor::router(
            Router::new(RouteKey::pointer("/job/name").unwrap())
                .route("7", |_m: Message<Value>| async { Ok::<_, crate::HandlerError>(()) }),
        );
        p.call_handler(raw(r#"{"job":{"name":7}}"#, &[])).await.unwrap();
        let f = p.call_handler(raw(r#"{"job":{}}"#, &[])).await.unwrap_err();
        assert_eq!(f.error, "no route: the message has no type (routed by `/job/name` in the payload; routes: 7)");
    }

    #[tokio::test]
    async fn batch_routes_get_their_messages_in_one_call() {
        let calls = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
        let c = calls.clone();
        let router = Router::new(RouteKey::attribute("t"))
            .route_batch("placed", move |b: Vec<Message<Placed>>| {
                c.lock().unwrap().push(b.iter().map(|m| m.body.order).collect());
                let n = b.len();
                async move { (0..n).map(|_| Ok::<_, crate::HandlerError>(())).collect::<Vec<_>>() }
            })
            .route("other", |_m: Message<Value>| async { Err(crate::HandlerError::permanent("no")) });
        let p = Processor::router(router);
        assert!(p.is_batch());
        let msgs: Vec<ReceivedMessage> =
            [("placed", r#"{"order":1}"#), ("other", "{}"), ("placed", r#"{"order":2}"#), ("x", "{}")]
                .iter()
                .enumerate()
                .map(|(i, (t, b))| {
                    let mut m = (*raw(b, &[("t", t)])).clone();
                    m.message_id = format!("m{i}");
                    m
                })
                .collect();
        let decisions = p.process_batch(&crate::QueueContext::default(), msgs).await;
        assert_eq!(*calls.lock().unwrap(), [vec![1, 2]]);
        let labels: Vec<&str> = decisions.iter().map(|d| d.outcome.label()).collect();
        // no DLQ known here: permanent failures are retried (with a warning)
        assert_eq!(labels, ["succeeded", "permanent", "succeeded", "unrouted"]);
    }
}
