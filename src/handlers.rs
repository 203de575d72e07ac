//! Ready-made handlers that need no Rust from their user: run a command per message
//! ([`ExecHandler`]) or POST it to a local HTTP app, Elastic Beanstalk worker style
//! ([`HttpHandler`]). Both map their result onto [`HandlerError`] and leave every
//! decision to the [`processor`](crate::processor).

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use std::os::unix::process::ExitStatusExt;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

pub use reqwest;

use crate::message::{AttributeValue, Message};
use crate::processor::{BoxFuture, Handler, HandlerError};

mod command;
pub use command::check_command;

/// Exit code meaning "this message is bad, do not retry" (`EX_DATAERR`).
pub const EXIT_PERMANENT: i32 = 65;

/// Runs a command per message: body on stdin, metadata in `SQSKIT_*` environment variables.
///
/// Exit 0 → success; exit 65 (`EX_DATAERR`) → permanent failure (DLQ); anything else or a
/// timeout (the processor's) → retryable, the error ending with the last few hundred bytes of
/// stderr. Output is read as bytes to its end and logged line by line with the message id
/// (invalid UTF-8 replaced). The command runs in its own process group, which is killed
/// (SIGKILL) when the command exits, times out or the handler is dropped (shutdown): nothing
/// it started, e.g. the other half of `sh -c 'a | b'`, outlives it.
/// Environment: `SQSKIT_MESSAGE_ID`, `SQSKIT_QUEUE_URL`, `SQSKIT_QUEUE_NAME`,
/// `SQSKIT_RECEIVE_COUNT`, `SQSKIT_GROUP_ID`, `SQSKIT_SENT_TIMESTAMP` (ms),
/// `SQSKIT_FIRST_RECEIVED_AT` (ms), the String and Number attributes ([`attribute_env`]:
/// `SQSKIT_ATTRIBUTES`, a JSON object of them all under their exact names, and
/// `SQSKIT_ATTR_<NAME>` per attribute, name upper-cased, other characters as `_`, unless two
/// attributes map to the same variable), and `TRACEPARENT` / `TRACESTATE` (W3C) when the
/// message carries a trace context ([`Message::trace`]: the producer's trace, this processing
/// span's id). With an envelope (feature `events`,
/// [`Processor::with_envelope`](crate::Processor::with_envelope)) stdin is the payload inside and
/// the envelope's metadata is in `SQSKIT_<NAME>` ([`envelope_vars`]: `SQSKIT_ENVELOPE`,
/// `SQSKIT_SNS_TOPIC_ARN`, `SQSKIT_EVENT_TYPE`, `SQSKIT_S3_KEY`, …); none of those is ever
/// inherited from the poller's environment.
///
/// A command that cannot start is refused when the handler is built ([`check_command`]), before
/// any message is received.
///
/// # Example
/// ```
/// let h = sqskit::handlers::ExecHandler::new(vec!["sh".into(), "-c".into(), "cat > /dev/null".into()], "http://h/queue/q").unwrap();
/// # let _ = h;
/// ```
#[derive(Debug, Clone)]
pub struct ExecHandler {
    program: String,
    args: Vec<String>,
    queue_url: String,
}

impl ExecHandler {
    /// A handler running `command[0]` with `command[1..]` as arguments.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] naming `exec` when the command is empty or cannot start
    /// ([`check_command`]: not found on `PATH`, not executable, a missing interpreter).
    pub fn new(command: Vec<String>, queue_url: impl Into<String>) -> Result<Self, crate::Error> {
        check_command(&command).map_err(|reason| crate::Error::Invalid { what: "exec", reason })?;
        let mut it = command.into_iter();
        let program = it.next().unwrap_or_default();
        Ok(Self { program, args: it.collect(), queue_url: queue_url.into() })
    }

    /// For another queue (each queue's messages carry their own queue URL).
    pub fn for_queue(&self, queue_url: impl Into<String>) -> Self {
        Self { queue_url: queue_url.into(), ..self.clone() }
    }
}

/// `SQSKIT_ATTR_<NAME>` for an attribute name: upper-cased, other characters as `_`. Not
/// one-to-one (`tenant-id` and `TENANT_ID` give the same name): see [`attribute_env`].
pub fn attribute_env_name(name: &str) -> String {
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("{ATTR_PREFIX}{clean}")
}

const ATTR_PREFIX: &str = "SQSKIT_ATTR_";

/// The variable holding every String and Number attribute as a JSON object (exact names, the
/// values as strings).
pub const ATTRIBUTES_VAR: &str = "SQSKIT_ATTRIBUTES";

/// The environment of a command for a message's attributes, losing none: `(variables to set,
/// variables not set because several attributes map to them, with those attributes' names)`.
/// [`ATTRIBUTES_VAR`] always holds them all (String and Number ones, exact names); each also
/// gets [`attribute_env_name`] unless another attribute of the message maps to the same
/// variable (e.g. `weird.name-x_y` and `WEIRD_NAME_X_Y`): such a variable is left unset rather
/// than given one value of two. Binary attributes are not passed.
///
/// # Example
/// ```
/// use sqskit::AttributeValue;
/// use sqskit::handlers::attribute_env;
/// let attrs = [("a.b", "1"), ("A_B", "2"), ("tenant-id", "acme")]
///     .map(|(k, v)| (k.to_string(), AttributeValue::string(v)))
///     .into_iter()
///     .collect();
/// let (vars, clashes) = attribute_env(&attrs);
/// assert!(vars.contains(&("SQSKIT_ATTR_TENANT_ID".into(), "acme".into())));
/// assert!(vars.iter().any(|(k, v)| k == "SQSKIT_ATTRIBUTES" && v.contains(r#""a.b":"1""#)));
/// assert_eq!(clashes, [("SQSKIT_ATTR_A_B".to_string(), vec!["A_B".to_string(), "a.b".to_string()])]);
/// ```
#[allow(clippy::type_complexity)]
pub fn attribute_env(
    attributes: &std::collections::HashMap<String, AttributeValue>,
) -> (Vec<(String, String)>, Vec<(String, Vec<String>)>) {
    let mut by_var: std::collections::BTreeMap<String, Vec<(&str, &str)>> = Default::default();
    let mut all = serde_json::Map::new();
    for (name, value) in attributes {
        if let Some(v) = value.as_str() {
            by_var.entry(attribute_env_name(name)).or_default().push((name, v));
            all.insert(name.clone(), serde_json::Value::String(v.to_string()));
        }
    }
    let mut vars = vec![(ATTRIBUTES_VAR.to_string(), serde_json::Value::Object(all).to_string())];
    let mut clashes = Vec::new();
    for (var, mut names) in by_var {
        match names[..] {
            [(_, v)] => vars.push((var, v.to_string())),
            _ => {
                names.sort();
                clashes.push((var, names.into_iter().map(|(n, _)| n.to_string()).collect()));
            }
        }
    }
    (vars, clashes)
}

impl Handler<String> for ExecHandler {
    fn call(&self, msg: Message<String>) -> BoxFuture<Result<(), HandlerError>> {
        let this = self.clone();
        Box::pin(async move { this.run(msg).await })
    }
}

impl ExecHandler {
    async fn run(&self, msg: Message<String>) -> Result<(), HandlerError> {
        let raw = msg.raw();
        // the queue the message came from (a poller serves several), else the configured one
        let queue_url = raw.queue_url.as_deref().unwrap_or(&self.queue_url);
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // its own process group, so that a timeout or shutdown can kill everything it started
            .process_group(0)
            .env("SQSKIT_MESSAGE_ID", &raw.message_id)
            .env("SQSKIT_QUEUE_URL", queue_url)
            .env("SQSKIT_QUEUE_NAME", queue_url.rsplit('/').next().unwrap_or_default())
            .env("SQSKIT_RECEIVE_COUNT", raw.receive_count().to_string())
            .env("SQSKIT_GROUP_ID", raw.group_id().unwrap_or_default())
            .env(
                "SQSKIT_SENT_TIMESTAMP",
                raw.system_attributes.get("SentTimestamp").map(String::as_str).unwrap_or_default(),
            )
            .env(
                "SQSKIT_FIRST_RECEIVED_AT",
                raw.system_attributes.get("ApproximateFirstReceiveTimestamp").map(String::as_str).unwrap_or_default(),
            );
        let (vars, clashes) = attribute_env(&raw.attributes);
        cmd.envs(vars);
        for (var, names) in clashes {
            // not one value of two, and not one inherited from the poller's environment
            cmd.env_remove(&var);
            tracing::warn!(variable = %var, attributes = ?names,
                "these attributes map to the same variable, which is not set: read them from SQSKIT_ATTRIBUTES");
        }
        #[cfg(feature = "events")]
        for (var, value) in envelope_vars(msg.envelope()) {
            match value {
                Some(v) => cmd.env(var, v),
                None => cmd.env_remove(var),
            };
        }
        // the trace continues in the command; never one inherited from the poller's environment
        cmd.env_remove("TRACEPARENT").env_remove("TRACESTATE");
        if let Some(t) = msg.trace() {
            cmd.env("TRACEPARENT", t.traceparent());
            if let Some(state) = t.tracestate() {
                cmd.env("TRACESTATE", state);
            }
        }
        let mut child =
            cmd.spawn().map_err(|e| HandlerError::retryable(format!("cannot start {}: {e}", self.program)))?;
        // dropped on every path out of here (exit, timeout, shutdown, panic): kills the group
        let group = child.id().and_then(|pid| i32::try_from(pid).ok()).map(GroupKill);
        let id = raw.message_id.clone();
        // output lines are logged in the message's span (its trace id, queue, receive count)
        let out = child
            .stdout
            .take()
            .map(|s| AbortOnDropHandle::new(tokio::spawn(drain_output(s, id.clone(), "stdout", 0).in_current_span())));
        let err = child.stderr.take().map(|s| {
            AbortOnDropHandle::new(tokio::spawn(drain_output(s, id.clone(), "stderr", STDERR_KEPT).in_current_span()))
        });
        if let Some(mut stdin) = child.stdin.take() {
            // a command that does not read stdin closes the pipe early: not an error
            let _ = stdin.write_all(msg.body.as_bytes()).await;
            drop(stdin);
        }
        let status =
            child.wait().await.map_err(|e| HandlerError::retryable(format!("waiting for {}: {e}", self.program)))?;
        // the command is done: what it left running in its group goes too, which closes the pipes
        drop(group);
        let mut stderr_tail = Vec::new();
        for (t, keep) in [(out, false), (err, true)] {
            let Some(t) = t else { continue };
            // a process that left the group may still hold a pipe: do not wait for it forever
            if let Ok(Ok(tail)) = tokio::time::timeout(OUTPUT_GRACE, t).await {
                if keep {
                    stderr_tail = tail;
                }
            }
        }
        let stderr = stderr_note(&stderr_tail);
        match status.code() {
            Some(0) => Ok(()),
            Some(EXIT_PERMANENT) => Err(HandlerError::permanent(format!(
                "{} exited with {EXIT_PERMANENT} (EX_DATAERR){stderr}",
                self.program
            ))),
            Some(c) => {
                // what a shell says when it cannot run a command of the script
                let why = match c {
                    126 => " (a command could not be executed)",
                    127 => " (a command was not found)",
                    _ => "",
                };
                Err(HandlerError::retryable(format!("{} exited with {c}{why}{stderr}", self.program)))
            }
            None => Err(HandlerError::retryable(format!(
                "{} was killed by signal {}{stderr}",
                self.program,
                status.signal().unwrap_or_default()
            ))),
        }
    }
}

/// The environment of a command for a message's envelope: `(SQSKIT_<NAME>, value)` for each
/// field of [`Envelope::fields`](crate::envelope::Envelope::fields), and `(SQSKIT_<NAME>, None)`
/// (to remove) for every other name an envelope may set, so that none is inherited.
///
/// # Example
/// ```
/// use sqskit::envelope::{EnvelopeKind, Opened};
/// let body = r#"{"version":"0","id":"e1","detail-type":"OrderPlaced","source":"shop","detail":{}}"#;
/// let Opened::Payloads(p) = EnvelopeKind::EventBridge.open(body, false).unwrap() else { unreachable!() };
/// let vars = sqskit::handlers::envelope_vars(Some(&p[0].envelope));
/// assert!(vars.contains(&("SQSKIT_EVENT_TYPE".into(), Some("OrderPlaced".into()))));
/// assert!(vars.contains(&("SQSKIT_SNS_TOPIC_ARN".into(), None)));
/// ```
#[cfg(feature = "events")]
pub fn envelope_vars(envelope: Option<&crate::envelope::Envelope>) -> Vec<(String, Option<String>)> {
    let fields = envelope.map(crate::envelope::Envelope::fields).unwrap_or_default();
    crate::envelope::FIELD_NAMES
        .iter()
        .map(|name| {
            let value = fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            (format!("SQSKIT_{name}"), value)
        })
        .collect()
}

/// The headers of an HTTP request for a message's envelope: `X-Sqskit-<Name>` for each field
/// of [`Envelope::fields`](crate::envelope::Envelope::fields) (`SNS_TOPIC_ARN` →
/// `X-Sqskit-Sns-Topic-Arn`, `EVENT_TYPE` → `X-Sqskit-Event-Type`).
///
/// # Example
/// ```
/// use sqskit::envelope::{EnvelopeKind, Opened};
/// let body = r#"{"specversion":"1.0","id":"1","source":"/shop","type":"order.placed","data":{}}"#;
/// let Opened::Payloads(p) = EnvelopeKind::CloudEvents.open(body, false).unwrap() else { unreachable!() };
/// let headers = sqskit::handlers::envelope_headers(&p[0].envelope);
/// assert!(headers.contains(&("X-Sqskit-Event-Type".into(), "order.placed".into())));
/// ```
#[cfg(feature = "events")]
pub fn envelope_headers(envelope: &crate::envelope::Envelope) -> Vec<(String, String)> {
    envelope
        .fields()
        .into_iter()
        .map(|(name, value)| {
            let title: Vec<String> = name
                .split('_')
                .map(|w| {
                    let lower = w.to_ascii_lowercase();
                    let mut c = lower.chars();
                    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
                })
                .collect();
            (format!("X-Sqskit-{}", title.join("-")), value)
        })
        .collect()
}

/// How many bytes of a command's stderr (its end) go into the error of a failed run.
const STDERR_KEPT: usize = 300;
/// Lines longer than this are logged in pieces.
const MAX_LINE: u64 = 8 * 1024;
/// How long output is still drained after the command's group was killed.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Kills a child's whole process group (SIGKILL) when dropped.
struct GroupKill(i32);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: kill(2) takes plain integers and touches no memory of this process;
            // a negative pid addresses the process group. ESRCH (group gone) is fine.
            unsafe {
                libc::kill(-self.0, libc::SIGKILL);
            }
        }
    }
}

/// Reads a command's output to its end as bytes, so the command never writes into a closed
/// pipe (SIGPIPE): each line is logged (invalid UTF-8 replaced), and the last `keep` bytes are
/// returned.
async fn drain_output(
    stream: impl tokio::io::AsyncRead + Unpin,
    message_id: String,
    which: &'static str,
    keep: usize,
) -> Vec<u8> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) => return tail,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(message_id = %message_id, stream = which, error = %e, "reading the command's output failed");
                return tail;
            }
        }
        tracing::info!(message_id = %message_id, stream = which, "{}", printable(&line));
        if keep > 0 {
            tail.extend_from_slice(&line);
            if tail.len() > keep {
                tail.drain(..tail.len() - keep);
            }
        }
    }
}

/// One line of a command's output as a log line: invalid UTF-8 as U+FFFD, control characters
/// (an ANSI escape sequence, a NUL, a lone carriage return) escaped, so that a handler printing
/// binary cannot garble or forge the log around it.
fn printable(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `: stderr: "…"` with the end of a command's stderr, or nothing.
fn stderr_note(tail: &[u8]) -> String {
    let text = String::from_utf8_lossy(tail);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; stderr ends: {text:?}")
    }
}

/// POSTs each message to a local HTTP app, like the Elastic Beanstalk worker daemon (sqsd).
///
/// Body as is; headers `X-Aws-Sqsd-Msgid`, `X-Aws-Sqsd-Queue`, `X-Aws-Sqsd-Receive-Count`,
/// `X-Aws-Sqsd-First-Received-At` (RFC 3339), `X-Aws-Sqsd-Sender-Id`, `X-Aws-Sqsd-Attr-<name>`
/// per string attribute, `traceparent` / `tracestate` when the message carries a trace context
/// ([`Message::trace`]); `Content-Type` from a `Content-Type` attribute or `application/json`.
/// With an envelope (feature `events`) the body is the payload inside and the envelope's
/// metadata goes in `X-Sqskit-<Name>` headers ([`envelope_headers`]: `X-Sqskit-Envelope`,
/// `X-Sqskit-Sns-Topic-Arn`, `X-Sqskit-Event-Type`, …); a CloudEvent's `datacontenttype` is
/// the `Content-Type`.
/// 2xx → success; 429, 5xx, timeout, connection refused → retryable (`Retry-After` in seconds
/// or as an HTTP date honoured); a 3xx is never followed and is a retryable failure naming its
/// `Location`; other 4xx → permanent. The client is [`http_client`] (rustls, platform trust store).
#[derive(Debug, Clone)]
pub struct HttpHandler {
    client: reqwest::Client,
    url: String,
    queue_name: String,
}

impl HttpHandler {
    /// A handler posting to `url` with a per-request `timeout`.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] naming `http` when the URL is not an http(s) URL with a host
    /// ([`check_http_url`]) or the client cannot be built.
    pub fn new(url: impl Into<String>, timeout: Duration, queue_name: impl Into<String>) -> Result<Self, crate::Error> {
        let url = url.into();
        check_http_url(&url).map_err(|reason| crate::Error::Invalid { what: "http", reason })?;
        Ok(Self { client: http_client(timeout)?, url, queue_name: queue_name.into() })
    }

    /// For another queue.
    pub fn for_queue(&self, queue_name: impl Into<String>) -> Self {
        Self { queue_name: queue_name.into(), ..self.clone() }
    }

    async fn run(&self, msg: Message<String>) -> Result<(), HandlerError> {
        let raw = msg.raw();
        let content_type = ["Content-Type", "content-type", "ContentType"].iter().find_map(|k| raw.attribute_str(k));
        #[cfg(feature = "events")]
        let content_type =
            msg.envelope().and_then(|e| e.cloud_event()).and_then(|c| c.datacontenttype.as_deref()).or(content_type);
        let content_type = content_type.unwrap_or("application/json").to_string();
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", content_type)
            .header("User-Agent", concat!("sqskit/", env!("CARGO_PKG_VERSION")))
            .header("X-Aws-Sqsd-Msgid", &raw.message_id)
            .header("X-Aws-Sqsd-Queue", raw.queue_name().unwrap_or(&self.queue_name))
            .header("X-Aws-Sqsd-Receive-Count", raw.receive_count().to_string());
        if let Some(t) = raw.first_received_at().and_then(rfc3339) {
            req = req.header("X-Aws-Sqsd-First-Received-At", t);
        }
        if let Some(sender) = raw.system_attributes.get("SenderId") {
            req = req.header("X-Aws-Sqsd-Sender-Id", sender);
        }
        for (k, v) in &raw.attributes {
            if let Some(s) = v.as_str() {
                if reqwest::header::HeaderValue::from_str(s).is_ok()
                    && reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok()
                {
                    req = req.header(format!("X-Aws-Sqsd-Attr-{k}"), s);
                }
            }
        }
        #[cfg(feature = "events")]
        if let Some(envelope) = msg.envelope() {
            for (name, value) in envelope_headers(envelope) {
                // a value that is no valid header (a control character) is left out
                if reqwest::header::HeaderValue::from_str(&value).is_ok() {
                    req = req.header(name, value);
                }
            }
        }
        if let Some(t) = msg.trace() {
            req = req.header("traceparent", t.traceparent());
            if let Some(state) = t.tracestate() {
                req = req.header("tracestate", state);
            }
        }
        let resp = req.body(msg.body.clone()).send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            HandlerError::retryable(format!("POST {}: {why}: {e}", self.url))
        })?;
        classify_response(&resp)
    }
}

/// A health check for the circuit breaker's half-open state (`--probe-url`): `GET url`, healthy
/// when it answers 2xx within `timeout` (a redirect is not followed and is not healthy).
///
/// # Errors
/// As [`HttpHandler::new`], naming `probe-url`.
///
/// # Example
/// ```
/// use std::time::Duration;
/// let probe = sqskit::handlers::http_probe("http://127.0.0.1:8080/healthz", Duration::from_secs(5)).unwrap();
/// let config = sqskit::poller::PollerConfig::default().with_probe(Some(probe));
/// # let _ = config;
/// assert!(sqskit::handlers::http_probe("ftp://x", Duration::from_secs(5)).is_err());
/// ```
#[cfg(feature = "poller")]
pub fn http_probe(url: impl Into<String>, timeout: Duration) -> Result<crate::poller::HealthProbe, crate::Error> {
    let url = url.into();
    check_http_url(&url).map_err(|reason| crate::Error::Invalid { what: "probe-url", reason })?;
    let client = http_client(timeout)?;
    Ok(crate::poller::HealthProbe::new(move || {
        let request = client.get(&url).header("User-Agent", concat!("sqskit/", env!("CARGO_PKG_VERSION"))).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    }))
}

/// Check that `url` is an `http://` or `https://` URL with a host, as [`HttpHandler`] needs.
///
/// # Errors
/// A text saying what is wrong, for the caller to name its flag or field.
///
/// # Example
/// ```
/// use sqskit::handlers::check_http_url;
/// assert!(check_http_url("http://127.0.0.1:8080/jobs").is_ok());
/// assert!(check_http_url("http://").is_err());
/// assert!(check_http_url("ftp://h/x").is_err());
/// ```
pub fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} is not an http(s) URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

/// The HTTP client for delivering messages (`--http`, the worker Lambda): redirects are **not**
/// followed, since following one turns the POST into a body-less GET whose 2xx would count as
/// delivered ([`classify_response`] makes a 3xx a retryable failure); TLS is rustls (no
/// OpenSSL) trusting the platform's certificates, or those named by `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` when set; `timeout` applies to each request.
///
/// # Errors
/// [`crate::Error::Invalid`] when the client cannot be built.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, crate::Error> {
    let invalid = |reason: String| crate::Error::Invalid { what: "http client", reason };
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .use_preconfigured_tls(tls_config().map_err(|e| invalid(e.to_string()))?)
        .build()
        .map_err(|e| invalid(e.to_string()))
}

/// rustls with the aws-lc-rs provider the AWS SDK already uses (one crypto library) and the
/// platform trust store (rustls-native-certs: `SSL_CERT_FILE` / `SSL_CERT_DIR`, else the system's).
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "loading trusted certificates");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::warn!(ignored, "some trusted certificates could not be parsed and are ignored");
    }
    if added == 0 {
        tracing::warn!("no trusted CA certificates found (system store, SSL_CERT_FILE, SSL_CERT_DIR): https will fail");
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Map an HTTP response to a handler result: [`classify_status`] with its `Retry-After`, and
/// a 3xx (redirects are not followed) a retryable failure naming its `Location`.
pub fn classify_response(resp: &reqwest::Response) -> Result<(), HandlerError> {
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
    classify(resp.status().as_u16(), header("Retry-After"), header("Location"))
}

/// Map an HTTP status (and `Retry-After`, in seconds or as an HTTP date) to a handler result:
/// 2xx success; 3xx, 429, 5xx retryable; other 4xx permanent.
pub fn classify_status(status: u16, retry_after: Option<&str>) -> Result<(), HandlerError> {
    classify(status, retry_after, None)
}

/// Longest `Location` quoted in an error.
const LOCATION_MAX: usize = 200;

fn classify(status: u16, retry_after: Option<&str>, location: Option<&str>) -> Result<(), HandlerError> {
    let retry = |msg: String| match retry_after.and_then(parse_retry_after) {
        Some(after) => Err(HandlerError::retry_after(msg, after)),
        None => Err(HandlerError::retryable(msg)),
    };
    match status {
        200..=299 => Ok(()),
        300..=399 => {
            let to: String = location.unwrap_or("(no Location)").chars().take(LOCATION_MAX).collect();
            retry(format!("HTTP {status} redirect to {to} (redirects are not followed; use the final URL)"))
        }
        429 | 500..=599 => retry(format!("HTTP {status}")),
        400..=499 => Err(HandlerError::permanent(format!("HTTP {status}"))),
        other => Err(HandlerError::retryable(format!("unexpected HTTP {other}"))),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (a date in the past means now).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

fn rfc3339(t: SystemTime) -> Option<String> {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).ok()
}

impl Handler<String> for HttpHandler {
    fn call(&self, msg: Message<String>) -> BoxFuture<Result<(), HandlerError>> {
        let this = self.clone();
        Box::pin(async move { this.run(msg).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_are_logged_printable() {
        assert_eq!(printable(b"plain text\n"), "plain text");
        assert_eq!(printable(b"\x1b[31mred\x1b[0m\r\n"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(printable(b"a\0b\rc\td"), "a\\u{0}b\\rc\td");
        assert_eq!(printable(&[0xff, b'x', 0xfe]), "\u{fffd}x\u{fffd}");
    }

    #[test]
    fn http_status_mapping() {
        assert!(classify_status(200, None).is_ok());
        assert!(classify_status(204, None).is_ok());
        assert_eq!(classify_status(503, Some("7")), Err(HandlerError::retry_after("HTTP 503", Duration::from_secs(7))));
        assert_eq!(classify_status(429, None), Err(HandlerError::retryable("HTTP 429")));
        assert_eq!(classify_status(500, Some("soon")), Err(HandlerError::retryable("HTTP 500")));
        assert_eq!(classify_status(400, None), Err(HandlerError::permanent("HTTP 400")));
        assert_eq!(classify_status(404, Some("5")), Err(HandlerError::permanent("HTTP 404")));
    }

    #[test]
    fn redirect_is_retryable_and_names_the_location() {
        assert_eq!(
            classify(302, None, Some("/ok")),
            Err(HandlerError::retryable("HTTP 302 redirect to /ok (redirects are not followed; use the final URL)"))
        );
        assert!(matches!(classify_status(301, Some("4")), Err(HandlerError::Retryable { retry_after: Some(_), .. })));
    }

    #[test]
    fn retry_after_as_http_date_is_honoured() {
        // a date in the past: retry at once
        assert_eq!(
            classify_status(503, Some("Sun, 06 Nov 1994 08:49:37 GMT")),
            Err(HandlerError::retry_after("HTTP 503", Duration::ZERO))
        );
        // a date in the future: the time until then
        match classify_status(429, Some("Fri, 01 Jan 2100 00:00:00 GMT")) {
            Err(HandlerError::Retryable { retry_after: Some(d), .. }) => {
                assert!(d > Duration::from_secs(365 * 24 * 3600), "{d:?}")
            }
            other => panic!("Retry-After date ignored: {other:?}"),
        }
    }

    #[test]
    fn attribute_names_become_env_names() {
        assert_eq!(attribute_env_name("tenant-id"), "SQSKIT_ATTR_TENANT_ID");
        assert_eq!(attribute_env_name("a.b"), "SQSKIT_ATTR_A_B");
    }

    proptest::proptest! {
        #[test]
        fn attribute_env_loses_no_attribute(names in proptest::collection::hash_set("[a-zA-Z0-9_.-]{1,6}", 0..10)) {
            let attrs: std::collections::HashMap<String, AttributeValue> =
                names.iter().map(|n| (n.clone(), AttributeValue::string(format!("v-{n}")))).collect();
            let (vars, clashes) = attribute_env(&attrs);
            let all: serde_json::Value = serde_json::from_str(&vars[0].1).unwrap();
            proptest::prop_assert_eq!(vars[0].0.as_str(), ATTRIBUTES_VAR);
            for n in &names {
                let want = format!("v-{n}");
                proptest::prop_assert_eq!(all[n.as_str()].as_str(), Some(want.as_str()));
                let var = attribute_env_name(n);
                let set: Vec<&String> = vars.iter().filter(|(k, _)| *k == var).map(|(_, v)| v).collect();
                let clashed = clashes.iter().any(|(k, ns)| *k == var && ns.contains(n));
                // either its own variable holds its value, or the clash is reported (never another's value)
                proptest::prop_assert!(set == [&want] || (set.is_empty() && clashed), "{}", n);
            }
        }

        #[test]
        fn http_urls_are_checked_without_panicking(url in "\\PC{0,30}|https?://[a-z0-9.:/]{0,20}") {
            if check_http_url(&url).is_ok() {
                proptest::prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
            }
        }
    }
}
