//! Trace context through queues: extracted when a message is received, injected when one is sent.
//!
//! A producer's context arrives in one of two places:
//!
//! - the W3C **`traceparent`** message attribute (`00-<32 hex trace id>-<16 hex span id>-<2 hex
//!   flags>`), with an optional **`tracestate`** attribute (OpenTelemetry propagators);
//! - the **`AWSTraceHeader`** message *system* attribute (X-Ray:
//!   `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`), which the
//!   AWS SDKs and Lambda set when X-Ray tracing is on. An X-Ray root is a W3C trace id with a
//!   dash: `1-5759e988-bd862e3fe1be46a994272793` ⇄ `5759e988bd862e3fe1be46a994272793`.
//!
//! [`TraceContext::from_message`] reads them; **a valid `traceparent` wins** over
//! `AWSTraceHeader` (an application that set it on purpose knows its trace better than the
//! SDK's automatic header), and a malformed one is ignored (the `AWSTraceHeader`, if valid, is
//! used instead). Both are parsed strictly (wrong lengths or version, upper-case or non-hex
//! digits, all-zero ids, non-ASCII are refused) and never make a message fail.
//!
//! Processing a message is a **new span in the producer's trace, linked to the producer's span**
//! rather than a child of it (OpenTelemetry's messaging conventions: a consumer is not part of
//! the producer's operation). [`TraceContext::processing`] gives that span's context: the same
//! trace id and flags, a span id of its own (unpredictable, and the same for every call on the
//! same receive, so the log span, [`Message::trace`](crate::Message::trace) and what the handler
//! sends all agree). The processor records `trace_id`, `span_id`, `link.trace_id` and
//! `link.span_id` on each message's `tracing` span, so JSON logs carry them.
//!
//! While a one-message handler runs, the processor makes its processing context
//! [`current`]. [`Queue::send`](crate::Queue::send) and
//! [`Queue::send_batch`](crate::Queue::send_batch) then add `traceparent` (and `tracestate`) to
//! every outgoing message that has none, when the message has room for them (SQS allows 10
//! attributes and 1 MiB; a message without room is sent without them, with a debug log), and
//! set `AWSTraceHeader` when the message has none (system attributes count toward neither
//! limit). Outside a handler (or in a task the handler spawned) nothing is added unless you
//! [`scope`] a context yourself. Batch handlers have no single current context: use each
//! message's [`Message::trace`](crate::Message::trace).
//!
//! The ready-made handlers pass the context on: `TRACEPARENT` / `TRACESTATE` in the environment
//! of an `--exec` command, `traceparent` / `tracestate` headers on an `--http` POST.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use crate::message::{Message, OutgoingMessage, ReceivedMessage};

/// The message attribute carrying a W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// The message attribute carrying W3C trace state (only read next to a valid `traceparent`).
pub const TRACESTATE: &str = "tracestate";
/// The message system attribute carrying an X-Ray trace header.
pub const AWS_TRACE_HEADER: &str = "AWSTraceHeader";

/// Longest `tracestate` passed on (the W3C limit is 32 members; 512 characters is what
/// propagators must keep).
const MAX_TRACESTATE: usize = 512;
/// Longest X-Ray header looked at.
const MAX_XRAY_HEADER: usize = 2048;

/// Why a trace header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// A `traceparent` that is not `VV-<32 hex>-<16 hex>-<2 hex>` (lower-case hex).
    #[error("malformed traceparent: {0}")]
    TraceParent(&'static str),
    /// An X-Ray header without a valid `Root=1-<8 hex>-<24 hex>` and `Parent=<16 hex>`.
    #[error("malformed AWSTraceHeader: {0}")]
    XRay(&'static str),
    /// A trace id or span id of all zeros (invalid in both formats).
    #[error("all-zero {0}")]
    Zero(&'static str),
}

/// Where a [`TraceContext`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceSource {
    /// The W3C `traceparent` message attribute.
    TraceParent,
    /// The X-Ray `AWSTraceHeader` system attribute.
    XRay,
    /// Made here ([`TraceContext::new`], [`TraceContext::random`], [`TraceContext::child`]).
    Local,
}

/// One span's trace context: trace id, span id, flags and W3C trace state.
///
/// # Example
/// ```
/// use sqskit::trace::TraceContext;
/// let tp = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01";
/// let producer = TraceContext::parse_traceparent(tp)?;
/// assert_eq!(producer.traceparent(), tp);
/// assert_eq!(producer.xray_header(), "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1");
/// let mine = producer.child();
/// assert_eq!(mine.trace_id(), producer.trace_id());
/// assert_ne!(mine.span_id(), producer.span_id());
///
/// let xray = TraceContext::from_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")?;
/// assert_eq!(xray.trace_id(), "5759e988bd862e3fe1be46a994272793");
/// assert!(TraceContext::parse_traceparent("00-00000000000000000000000000000000-53995c3f42cd8ad8-01").is_err());
/// # Ok::<(), sqskit::trace::TraceError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
    state: Option<String>,
    source: TraceSource,
}

impl TraceContext {
    /// A context from raw ids and W3C flags (bit 0: sampled).
    ///
    /// # Errors
    /// [`TraceError::Zero`] when either id is all zeros.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Result<Self, TraceError> {
        if trace_id == [0; 16] {
            return Err(TraceError::Zero("trace id"));
        }
        if span_id == [0; 8] {
            return Err(TraceError::Zero("span id"));
        }
        Ok(Self { trace_id, span_id, flags, state: None, source: TraceSource::Local })
    }

    /// A new trace (random ids, sampled).
    pub fn random() -> Self {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&nonzero_u64().to_be_bytes());
        trace_id[8..].copy_from_slice(&fastrand::u64(..).to_be_bytes());
        Self { trace_id, span_id: nonzero_u64().to_be_bytes(), flags: 1, state: None, source: TraceSource::Local }
    }

    /// Parse a W3C `traceparent`. Version `00` must be exactly 55 characters; a later version
    /// may carry more after a `-` (as the W3C spec asks); version `ff` is invalid.
    ///
    /// # Errors
    /// [`TraceError::TraceParent`] or [`TraceError::Zero`] naming what is wrong.
    pub fn parse_traceparent(value: &str) -> Result<Self, TraceError> {
        let bad = TraceError::TraceParent;
        let b = value.trim().as_bytes();
        if b.len() < 55 {
            return Err(bad("too short"));
        }
        let version = hex_byte(&b[0..2]).ok_or(bad("version is not 2 lower-case hex digits"))?;
        if version == 0xff {
            return Err(bad("version ff is invalid"));
        }
        if version == 0 && b.len() != 55 {
            return Err(bad("version 00 must be 55 characters"));
        }
        if b.len() > 55 && b[55] != b'-' {
            return Err(bad("too long"));
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(bad("fields are not separated by '-'"));
        }
        let trace_id = hex_array::<16>(&b[3..35]).ok_or(bad("trace id is not 32 lower-case hex digits"))?;
        let span_id = hex_array::<8>(&b[36..52]).ok_or(bad("parent id is not 16 lower-case hex digits"))?;
        let flags = hex_byte(&b[53..55]).ok_or(bad("flags are not 2 lower-case hex digits"))?;
        let mut ctx = Self::new(trace_id, span_id, flags)?;
        ctx.source = TraceSource::TraceParent;
        Ok(ctx)
    }

    /// Parse an X-Ray trace header (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=0|1|?`, in
    /// any order, other keys such as `Lineage` ignored). `Sampled=1` sets the W3C sampled flag.
    ///
    /// # Errors
    /// [`TraceError::XRay`] or [`TraceError::Zero`] naming what is wrong.
    pub fn from_xray(value: &str) -> Result<Self, TraceError> {
        let bad = TraceError::XRay;
        if value.len() > MAX_XRAY_HEADER {
            return Err(bad("too long"));
        }
        let (mut root, mut parent, mut sampled) = (None, None, false);
        for part in value.split(';') {
            let Some((k, v)) = part.split_once('=') else { continue };
            match k.trim() {
                "Root" if root.is_none() => {
                    root = Some(xray_root_to_id(v.trim()).ok_or(bad("Root is not 1-<8 hex>-<24 hex>"))?)
                }
                "Parent" if parent.is_none() => {
                    parent = Some(hex_array::<8>(v.trim().as_bytes()).ok_or(bad("Parent is not 16 hex digits"))?)
                }
                "Sampled" => sampled = v.trim() == "1",
                "Root" | "Parent" => return Err(bad("Root or Parent given twice")),
                _ => {}
            }
        }
        let trace_id = root.ok_or(bad("no Root"))?;
        let span_id = parent.ok_or(bad("no Parent"))?;
        let mut ctx = Self::new(trace_id, span_id, u8::from(sampled))?;
        ctx.source = TraceSource::XRay;
        Ok(ctx)
    }

    /// Attach W3C trace state. A value that is not printable ASCII, or longer than 512
    /// characters, is dropped (with a debug log): trace state is advisory.
    pub fn with_tracestate(mut self, state: Option<&str>) -> Self {
        self.state = state.map(str::trim).filter(|s| !s.is_empty()).and_then(|s| {
            let ok = s.len() <= MAX_TRACESTATE && s.bytes().all(|c| (0x20..=0x7e).contains(&c));
            if !ok {
                tracing::debug!("ignoring a tracestate that is too long or not printable ASCII");
            }
            ok.then(|| s.to_string())
        });
        self
    }

    /// The producer's context carried by a received message: a valid `traceparent` attribute
    /// (with its `tracestate`), else a valid `AWSTraceHeader` system attribute, else `None`.
    /// Malformed values are ignored with a debug log (never the value itself).
    pub fn from_message(msg: &ReceivedMessage) -> Option<Self> {
        if let Some(tp) = msg.attribute_str(TRACEPARENT) {
            match Self::parse_traceparent(tp) {
                Ok(ctx) => return Some(ctx.with_tracestate(msg.attribute_str(TRACESTATE))),
                Err(e) => {
                    tracing::debug!(message_id = %msg.message_id, error = %e, "ignoring the traceparent attribute")
                }
            }
        }
        let header = msg.system_attributes.get(AWS_TRACE_HEADER)?;
        match Self::from_xray(header) {
            Ok(ctx) => Some(ctx),
            Err(e) => {
                tracing::debug!(message_id = %msg.message_id, error = %e, "ignoring the AWSTraceHeader system attribute");
                None
            }
        }
    }

    /// The context of processing `msg` (this receive of it): the producer's trace id, flags
    /// and trace state with a span id of its own, or `None` when the message carries no
    /// valid context. The span id is derived from the message id and receipt handle with a
    /// per-process random key: unpredictable, and the same on every call for the same receive.
    ///
    /// # Example
    /// ```
    /// # fn demo(msg: &sqskit::ReceivedMessage) {
    /// use sqskit::trace::TraceContext;
    /// if let (Some(producer), Some(mine)) = (TraceContext::from_message(msg), TraceContext::processing(msg)) {
    ///     assert_eq!(producer.trace_id(), mine.trace_id());
    /// }
    /// # }
    /// ```
    pub fn processing(msg: &ReceivedMessage) -> Option<Self> {
        Some(Self::processing_of(&Self::from_message(msg)?, msg))
    }

    pub(crate) fn processing_of(producer: &Self, msg: &ReceivedMessage) -> Self {
        static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        let mut h = KEY.get_or_init(Default::default).build_hasher();
        h.write(msg.message_id.as_bytes());
        h.write_u8(0xff);
        h.write(msg.receipt_handle.as_bytes());
        let mut span = h.finish();
        if span == 0 || span.to_be_bytes() == producer.span_id {
            span = span.wrapping_add(1).max(1);
        }
        Self { span_id: span.to_be_bytes(), source: TraceSource::Local, ..producer.clone() }
    }

    /// A new span in the same trace: same trace id, flags and state, a random span id.
    pub fn child(&self) -> Self {
        let mut span_id = nonzero_u64().to_be_bytes();
        while span_id == self.span_id {
            span_id = nonzero_u64().to_be_bytes();
        }
        Self { span_id, source: TraceSource::Local, ..self.clone() }
    }

    /// The W3C `traceparent` value (version 00).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), self.flags)
    }

    /// The W3C trace state, when any.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The X-Ray trace header: `Root=1-<8 hex>-<24 hex>;Parent=<span id>;Sampled=0|1`.
    pub fn xray_header(&self) -> String {
        format!("Root={};Parent={};Sampled={}", self.xray_root(), hex(&self.span_id), u8::from(self.sampled()))
    }

    /// The trace id as an X-Ray root: `1-<first 8 hex>-<last 24 hex>`.
    pub fn xray_root(&self) -> String {
        let t = hex(&self.trace_id);
        format!("1-{}-{}", &t[..8], &t[8..])
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id, 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// The trace id's bytes.
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The span id's bytes.
    pub fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id
    }

    /// The W3C trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Where this context came from.
    pub fn source(&self) -> TraceSource {
        self.source
    }
}

tokio::task_local! {
    static CURRENT: Option<TraceContext>;
}

/// The trace context of the handler running on this task (set by the processor around a
/// one-message handler, or by [`scope`]), if any.
///
/// # Example
/// ```
/// # async fn demo() {
/// use sqskit::trace::{current, scope, TraceContext};
/// assert!(current().is_none());
/// let ctx = TraceContext::random();
/// let seen = scope(Some(ctx.clone()), async { current() }).await;
/// assert_eq!(seen, Some(ctx));
/// # }
/// ```
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}

/// Run `fut` with `ctx` as the [`current`] trace context (what `Queue::send*` propagates).
/// Use it in tasks a handler spawns (task-locals do not follow `tokio::spawn`), or to send
/// with a context of your own.
pub async fn scope<F: Future>(ctx: Option<TraceContext>, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// Add the current trace context to an outgoing message (see the module docs): `traceparent`
/// and `tracestate` when the message has none and has room, `AWSTraceHeader` when it has none.
pub(crate) fn inject(msg: &mut OutgoingMessage) {
    let Some(ctx) = current() else { return };
    if msg.trace_header.is_none() {
        msg.trace_header = Some(ctx.xray_header());
    }
    if msg.attributes.contains_key(TRACEPARENT) {
        return;
    }
    if add_attribute(msg, TRACEPARENT, ctx.traceparent()) && !msg.attributes.contains_key(TRACESTATE) {
        if let Some(state) = ctx.tracestate() {
            add_attribute(msg, TRACESTATE, state.to_string());
        }
    }
}

/// Add a string attribute when the message stays within SQS's attribute count and size limits.
fn add_attribute(msg: &mut OutgoingMessage, name: &str, value: String) -> bool {
    let attr = crate::AttributeValue::string(value);
    let room = msg.attributes.len() < crate::limits::MAX_MESSAGE_ATTRIBUTES
        && msg.payload_size() + name.len() + attr.payload_size() <= crate::limits::MAX_PAYLOAD_BYTES;
    if room {
        msg.attributes.insert(name.to_string(), attr);
    } else {
        tracing::debug!(attribute = name, "no room on the outgoing message for the trace attribute; not added");
    }
    room
}

/// The `AWSTraceHeader` of a received message, when it is a valid X-Ray header (to keep it on
/// a copy sent elsewhere: the DLQ, a redrive).
pub fn received_trace_header(msg: &ReceivedMessage) -> Option<String> {
    msg.system_attributes.get(AWS_TRACE_HEADER).filter(|h| TraceContext::from_xray(h).is_ok()).cloned()
}

// defined here rather than in `message`, which stays below this module
impl<T> Message<T> {
    /// The trace context of processing this message: the producer's trace id (from its
    /// `traceparent` attribute, else its `AWSTraceHeader`) with this processing span's own span
    /// id; `None` when the message carries no valid context. The same value the processor logs
    /// as `trace_id` / `span_id` and propagates on sends from the handler (see [this module](crate::trace)).
    ///
    /// # Example
    /// ```
    /// use sqskit::{HandlerError, Message};
    /// async fn handle(msg: Message<String>) -> Result<(), HandlerError> {
    ///     if let Some(t) = msg.trace() {
    ///         tracing::info!(traceparent = %t.traceparent(), "continuing the producer's trace");
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn trace(&self) -> Option<TraceContext> {
        TraceContext::processing(self.raw())
    }
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    match two {
        [h, l] => Some((hex_digit(*h)? << 4) | hex_digit(*l)?),
        _ => None,
    }
}

fn hex_array<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = hex_byte(pair)?;
    }
    Some(out)
}

/// `1-5759e988-bd862e3fe1be46a994272793` → the 16 bytes of `5759e988bd862e3fe1be46a994272793`.
fn xray_root_to_id(root: &str) -> Option<[u8; 16]> {
    let b = root.as_bytes();
    if b.len() != 35 || &b[..2] != b"1-" || b[10] != b'-' {
        return None;
    }
    let mut digits = [0u8; 32];
    digits[..8].copy_from_slice(&b[2..10]);
    digits[8..].copy_from_slice(&b[11..]);
    hex_array::<16>(&digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const TP: &str = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01";
    const XRAY: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

    fn received(attrs: &[(&str, &str)], system: &[(&str, &str)]) -> ReceivedMessage {
        ReceivedMessage {
            message_id: "m-1".into(),
            receipt_handle: "h-1".into(),
            body: "secret body".into(),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), crate::AttributeValue::string(*v))).collect(),
            system_attributes: system.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            received_at: Instant::now(),
            queue_url: None,
        }
    }

    #[test]
    fn traceparent_round_trips_and_converts_to_xray() {
        let c = TraceContext::parse_traceparent(TP).unwrap();
        assert_eq!(c.traceparent(), TP);
        assert_eq!(c.xray_header(), XRAY);
        assert_eq!(c.xray_root(), "1-5759e988-bd862e3fe1be46a994272793");
        assert!(c.sampled());
        let x = TraceContext::from_xray(XRAY).unwrap();
        assert_eq!(x.traceparent(), TP);
        assert_eq!(x.source(), TraceSource::XRay);
        let unsampled = TraceContext::from_xray(
            "Sampled=?;Lineage=a:1;Parent=53995c3f42cd8ad8;Root=1-5759e988-bd862e3fe1be46a994272793",
        )
        .unwrap();
        assert_eq!(unsampled.traceparent(), "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00");
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        let bad = [
            "",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8",
            "ff-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
            "0g-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
            "00-5759E988BD862E3FE1BE46A994272793-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a99427279z-53995c3f42cd8ad8-01",
            "00-00000000000000000000000000000000-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a994272793-0000000000000000-01",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01-extra",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-0100",
            "00_5759e988bd862e3fe1be46a994272793_53995c3f42cd8ad8_01",
            "00-5759e988bd862e3fe1be46a9942727é-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8aé-01",
            "01-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01x",
        ];
        for b in bad {
            assert!(TraceContext::parse_traceparent(b).is_err(), "{b:?} accepted");
        }
        // a later version may carry more after a dash
        assert!(TraceContext::parse_traceparent("01-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01-more").is_ok());
    }

    #[test]
    fn malformed_xray_headers_are_refused() {
        let bad = [
            "",
            "garbage",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
            "Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Root=1-00000000-000000000000000000000000;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000",
            "Root=1-5759e988-bd862e3fe1be46a99427279é;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Root=1-5759e988-bd862e3fe1be46a994272794",
        ];
        for b in bad {
            assert!(TraceContext::from_xray(b).is_err(), "{b:?} accepted");
        }
        assert!(TraceContext::from_xray(&"x".repeat(5000)).is_err());
    }

    #[test]
    fn traceparent_wins_and_a_bad_one_falls_back_to_xray() {
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let both = received(&[(TRACEPARENT, other), (TRACESTATE, "vendor=1")], &[(AWS_TRACE_HEADER, XRAY)]);
        let c = TraceContext::from_message(&both).unwrap();
        assert_eq!(c.traceparent(), other);
        assert_eq!(c.tracestate(), Some("vendor=1"));
        let bad = received(&[(TRACEPARENT, "00-zz")], &[(AWS_TRACE_HEADER, XRAY)]);
        assert_eq!(TraceContext::from_message(&bad).unwrap().traceparent(), TP);
        assert!(TraceContext::from_message(&received(&[(TRACEPARENT, "00-zz")], &[])).is_none());
    }

    #[test]
    fn processing_span_is_new_stable_per_receive_and_in_the_same_trace() {
        let m = received(&[(TRACEPARENT, TP)], &[]);
        let a = TraceContext::processing(&m).unwrap();
        assert_eq!(a, TraceContext::processing(&m).unwrap());
        assert_eq!(a.trace_id(), "5759e988bd862e3fe1be46a994272793");
        assert_ne!(a.span_id(), "53995c3f42cd8ad8");
        let again = ReceivedMessage { receipt_handle: "h-2".into(), ..m };
        assert_ne!(TraceContext::processing(&again).unwrap().span_id(), a.span_id());
    }

    #[tokio::test]
    async fn inject_respects_existing_values_and_the_attribute_limit() {
        let ctx = TraceContext::parse_traceparent(TP).unwrap().with_tracestate(Some("a=b"));
        let mut plain = OutgoingMessage::new("x");
        let mut full = OutgoingMessage::new("x");
        full.attributes = (0..10).map(|i| (format!("a{i}"), crate::AttributeValue::string("v"))).collect();
        let mut nine = OutgoingMessage::new("x");
        nine.attributes = (0..9).map(|i| (format!("a{i}"), crate::AttributeValue::string("v"))).collect();
        let mut own = OutgoingMessage::new("x").attribute(TRACEPARENT, crate::AttributeValue::string("mine"));
        own.trace_header = Some("theirs".into());
        scope(Some(ctx.clone()), async {
            for m in [&mut plain, &mut full, &mut nine, &mut own] {
                inject(m);
            }
        })
        .await;
        assert_eq!(plain.attributes[TRACEPARENT].as_str(), Some(TP));
        assert_eq!(plain.attributes[TRACESTATE].as_str(), Some("a=b"));
        assert_eq!(plain.trace_header.as_deref(), Some(XRAY));
        assert_eq!(full.attributes.len(), 10);
        assert!(!full.attributes.contains_key(TRACEPARENT));
        assert_eq!(full.trace_header.as_deref(), Some(XRAY));
        assert_eq!(nine.attributes.len(), 10);
        assert!(nine.attributes.contains_key(TRACEPARENT) && !nine.attributes.contains_key(TRACESTATE));
        assert_eq!(own.attributes[TRACEPARENT].as_str(), Some("mine"));
        assert_eq!(own.trace_header.as_deref(), Some("theirs"));
        // nothing current: nothing added
        let mut outside = OutgoingMessage::new("x");
        inject(&mut outside);
        assert_eq!(outside, OutgoingMessage::new("x"));
    }

    #[test]
    fn tracestate_that_is_not_printable_ascii_is_dropped() {
        let c = TraceContext::random();
        assert_eq!(c.clone().with_tracestate(Some("a=\u{e9}")).tracestate(), None);
        assert_eq!(c.clone().with_tracestate(Some(&"a".repeat(600))).tracestate(), None);
        assert_eq!(c.with_tracestate(Some(" a=1 ")).tracestate(), Some("a=1"));
    }
}
