//! Ready-made handlers that need no Rust from their user: run a command per message
//! ([`ExecHandler`]) or POST it to a local HTTP app, Elastic Beanstalk worker style
//! ([`HttpHandler`]). Both map their result onto [`HandlerError`] and leave every
//! decision to the [`processor`](crate::processor).

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::message::Message;
use crate::processor::{BoxFuture, Handler, HandlerError};

/// Exit code meaning "this message is bad, do not retry" (`EX_DATAERR`).
pub const EXIT_PERMANENT: i32 = 65;

/// Runs a command per message: body on stdin, metadata in `SQSKIT_*` environment variables.
///
/// Exit 0 → success; exit 65 (`EX_DATAERR`) → permanent failure (DLQ); anything else or a
/// timeout (the processor's) → retryable. Output lines are logged with the message id.
/// Environment: `SQSKIT_MESSAGE_ID`, `SQSKIT_QUEUE_URL`, `SQSKIT_QUEUE_NAME`,
/// `SQSKIT_RECEIVE_COUNT`, `SQSKIT_GROUP_ID`, `SQSKIT_SENT_TIMESTAMP` (ms),
/// `SQSKIT_FIRST_RECEIVED_AT` (ms), and `SQSKIT_ATTR_<NAME>` per string attribute (name
/// upper-cased, other characters as `_`).
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
    /// [`crate::Error::Invalid`] when the command is empty.
    pub fn new(command: Vec<String>, queue_url: impl Into<String>) -> Result<Self, crate::Error> {
        let mut it = command.into_iter();
        let program = it
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| crate::Error::Invalid { what: "exec", reason: "the command is empty".into() })?;
        Ok(Self { program, args: it.collect(), queue_url: queue_url.into() })
    }

    /// For another queue (each queue's messages carry their own queue URL).
    pub fn for_queue(&self, queue_url: impl Into<String>) -> Self {
        Self { queue_url: queue_url.into(), ..self.clone() }
    }
}

/// `SQSKIT_ATTR_<NAME>` for an attribute name.
pub fn attribute_env_name(name: &str) -> String {
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("SQSKIT_ATTR_{clean}")
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
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("SQSKIT_MESSAGE_ID", &raw.message_id)
            .env("SQSKIT_QUEUE_URL", &self.queue_url)
            .env("SQSKIT_QUEUE_NAME", self.queue_url.rsplit('/').next().unwrap_or_default())
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
        for (k, v) in &raw.attributes {
            if let Some(s) = v.as_str() {
                cmd.env(attribute_env_name(k), s);
            }
        }
        let mut child =
            cmd.spawn().map_err(|e| HandlerError::retryable(format!("cannot start {}: {e}", self.program)))?;
        let id = raw.message_id.clone();
        let out = child.stdout.take().map(|s| tokio::spawn(log_lines(s, id.clone(), "stdout")));
        let err = child.stderr.take().map(|s| tokio::spawn(log_lines(s, id.clone(), "stderr")));
        if let Some(mut stdin) = child.stdin.take() {
            // a command that does not read stdin closes the pipe early: not an error
            let _ = stdin.write_all(msg.body.as_bytes()).await;
            drop(stdin);
        }
        let status =
            child.wait().await.map_err(|e| HandlerError::retryable(format!("waiting for {}: {e}", self.program)))?;
        for t in [out, err].into_iter().flatten() {
            let _ = t.await;
        }
        match status.code() {
            Some(0) => Ok(()),
            Some(EXIT_PERMANENT) => {
                Err(HandlerError::permanent(format!("{} exited with {EXIT_PERMANENT} (EX_DATAERR)", self.program)))
            }
            Some(c) => Err(HandlerError::retryable(format!("{} exited with {c}", self.program))),
            None => Err(HandlerError::retryable(format!("{} was killed by a signal", self.program))),
        }
    }
}

async fn log_lines(stream: impl tokio::io::AsyncRead + Unpin, message_id: String, which: &'static str) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(message_id = %message_id, stream = which, "{line}");
    }
}

/// POSTs each message to a local HTTP app, like the Elastic Beanstalk worker daemon (sqsd).
///
/// Body as is; headers `X-Aws-Sqsd-Msgid`, `X-Aws-Sqsd-Queue`, `X-Aws-Sqsd-Receive-Count`,
/// `X-Aws-Sqsd-First-Received-At` (RFC 3339), `X-Aws-Sqsd-Sender-Id`, `X-Aws-Sqsd-Attr-<name>`
/// per string attribute; `Content-Type` from a `Content-Type` attribute or `application/json`.
/// 2xx → success; 429, 5xx, timeout, connection refused → retryable (`Retry-After` seconds
/// honoured); other 4xx → permanent.
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
    /// [`crate::Error::Invalid`] when the URL is not http(s) or the client cannot be built.
    pub fn new(url: impl Into<String>, timeout: Duration, queue_name: impl Into<String>) -> Result<Self, crate::Error> {
        let url = url.into();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(crate::Error::Invalid { what: "http", reason: format!("{url:?} is not an http(s) URL") });
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| crate::Error::Invalid { what: "http", reason: e.to_string() })?;
        Ok(Self { client, url, queue_name: queue_name.into() })
    }

    /// For another queue.
    pub fn for_queue(&self, queue_name: impl Into<String>) -> Self {
        Self { queue_name: queue_name.into(), ..self.clone() }
    }

    async fn run(&self, msg: Message<String>) -> Result<(), HandlerError> {
        let raw = msg.raw();
        let content_type = ["Content-Type", "content-type", "ContentType"]
            .iter()
            .find_map(|k| raw.attribute_str(k))
            .unwrap_or("application/json")
            .to_string();
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", content_type)
            .header("User-Agent", concat!("sqskit/", env!("CARGO_PKG_VERSION")))
            .header("X-Aws-Sqsd-Msgid", &raw.message_id)
            .header("X-Aws-Sqsd-Queue", &self.queue_name)
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
        classify_status(resp.status().as_u16(), resp.headers().get("Retry-After").and_then(|v| v.to_str().ok()))
    }
}

/// Map an HTTP status (and `Retry-After`) to a handler result.
pub fn classify_status(status: u16, retry_after: Option<&str>) -> Result<(), HandlerError> {
    match status {
        200..=299 => Ok(()),
        429 | 500..=599 => {
            let msg = format!("HTTP {status}");
            match retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
                Some(secs) => Err(HandlerError::retry_after(msg, Duration::from_secs(secs))),
                None => Err(HandlerError::retryable(msg)),
            }
        }
        400..=499 => Err(HandlerError::permanent(format!("HTTP {status}"))),
        other => Err(HandlerError::retryable(format!("unexpected HTTP {other}"))),
    }
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
    fn attribute_names_become_env_names() {
        assert_eq!(attribute_env_name("tenant-id"), "SQSKIT_ATTR_TENANT_ID");
        assert_eq!(attribute_env_name("a.b"), "SQSKIT_ATTR_A_B");
    }
}
