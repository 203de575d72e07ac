//! `sqskit send`: one message or many (JSON Lines), batched through `send_batch`.

use std::io::{BufRead, IsTerminal};

use futures::StreamExt;

use anyhow::Context;
use sqskit::client::validate_outgoing;
use sqskit::payload::ClaimCheck;
use sqskit::{AttributeValue, OutgoingMessage, Queue};

use crate::args;
use crate::common::{aws_config, Global, Output};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["body", "file", "jsonl", "stdin"])))]
pub struct Args {
    /// Queue URL, or its name (looked up with GetQueueUrl).
    #[arg(long, env = "SQSKIT_QUEUE_URL")]
    pub queue_url: String,
    /// Send this text as one message.
    #[arg(long)]
    pub body: Option<String>,
    /// Send the content of this file as one message.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Send one message per line of this JSON Lines file ("-" for stdin). A line is the body as
    /// it is, unless it is a JSON object with a "body" key: then it is an envelope, whose keys
    /// must all be known: "body" (a string), "attributes" (an object of strings and numbers),
    /// "delay" (seconds, ≤ 900), "group_id", "dedup_id"; any other key fails the line, naming it
    /// (so a misspelt key or a payload that has a "body" field is never sent reshaped: send such
    /// payloads with --raw-lines). Blank lines are skipped and counted in line numbers.
    #[arg(long)]
    pub jsonl: Option<std::path::PathBuf>,
    /// Read JSON Lines from stdin (same as --jsonl -).
    #[arg(id = "stdin", value_name = "-", value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
    pub stdin: Option<String>,
    /// JSON Lines: every line is a body as it is, envelope-shaped or not.
    #[arg(long, conflicts_with_all = ["body", "file"])]
    pub raw_lines: bool,
    /// JSON Lines: start at line N (1-based, blank lines counted), e.g. to resume where a run
    /// stopped (it says which line).
    #[arg(long, value_name = "N", value_parser = args::count(1..=u64::MAX), conflicts_with_all = ["body", "file"])]
    pub from_line: Option<usize>,
    /// Message group id for --body/--file (and lines without one): the FIFO group, or on a
    /// standard queue the tenant (fair queues).
    #[arg(long)]
    pub group_id: Option<String>,
    /// Deliver --body/--file after this long: seconds, or a duration such as 90s, 15m, 2h, 3d
    /// (at most 365 days). Up to 15 minutes it is SQS's DelaySeconds; beyond, the message hops
    /// through the consumers until it is due (`sqskit poll` and the library handle hops).
    /// Standard queues only: FIFO queues take no per-message delay.
    #[arg(long, value_parser = args::delay, value_name = "DURATION", conflicts_with_all = ["jsonl", "stdin"])]
    pub delay: Option<std::time::Duration>,
    /// Deliver --body/--file at this time: RFC 3339 with Z or an offset (2026-12-24T18:00:00Z,
    /// 2026-12-24T18:00:00+05:00), at most 365 days ahead; like --delay.
    #[arg(long, value_parser = args::deliver_at, value_name = "TIME", conflicts_with_all = ["delay", "jsonl", "stdin"])]
    pub deliver_at: Option<std::time::SystemTime>,
    /// Longest delay hop in seconds (1–900; default 900). For tests and demos.
    #[arg(long, value_parser = args::secs(1..=900), value_name = "SECONDS")]
    pub delay_hop: Option<u64>,
    /// A string message attribute NAME=VALUE (repeatable, each NAME once); on JSON Lines, for
    /// every line that does not set that attribute itself.
    #[arg(long = "attribute", value_name = "NAME=VALUE", value_parser = args::attribute)]
    pub attributes: Vec<(String, String)>,
    /// Claim check: send bodies over 1 MiB through this S3 bucket (Amazon SQS Extended Client
    /// format, read by its Java and Python consumers and by `sqskit poll`).
    #[arg(long, env = "SQSKIT_PAYLOAD_BUCKET", help_heading = "Large payloads")]
    pub payload_bucket: Option<String>,
    /// Send every body through the bucket, whatever its size.
    #[arg(long, requires = "payload_bucket", help_heading = "Large payloads")]
    pub offload_always: bool,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

impl Args {
    /// What clap cannot check alone: an attribute named twice, a delay on a FIFO queue.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        if let Some((k, _)) = self.attributes.iter().find(|(k, _)| !seen.insert(k)) {
            return Err(format!("--attribute {k:?} given twice (each NAME once)"));
        }
        let flag = match (self.delay, self.deliver_at) {
            (Some(_), _) => Some("--delay"),
            (_, Some(_)) => Some("--deliver-at"),
            _ => None,
        };
        if let (Some(flag), true) = (flag, self.queue_url.trim_end_matches('/').ends_with(".fifo")) {
            return Err(format!(
                "{flag}: FIFO queues take no per-message delay (only the queue's own DelaySeconds), and delays over \
                 15 minutes use delay hops, which FIFO queues cannot take (a hop is a new message, out of order)"
            ));
        }
        Ok(())
    }
}

/// Check a message before sending: one the claim check will offload is checked as its
/// pointer will be (so only the attributes, delay and body presence count). The text never
/// names an index (the caller names the line).
fn check(m: &OutgoingMessage, claim_check: Option<&ClaimCheck>) -> Result<(), String> {
    let result = match claim_check {
        Some(c) if c.should_offload(m) && !m.body.is_empty() => {
            let mut probe = OutgoingMessage::new("-");
            probe.attributes = m.attributes.clone();
            probe.delay_seconds = m.delay_seconds;
            validate_outgoing(0, &probe)
        }
        _ => validate_outgoing(0, m),
    };
    result.map_err(|e| match e {
        sqskit::Error::MessageTooLarge { size, limit, .. } => format!(
            "{size} bytes (body + attributes), over the SQS limit of {limit} bytes (--payload-bucket sends large \
             bodies through S3)"
        ),
        sqskit::Error::Invalid { what: "message body", .. } => {
            "the body is empty; SQS needs at least 1 character".into()
        }
        other => other.to_string(),
    })
}

#[derive(serde::Serialize)]
struct Summary {
    sent: usize,
    failed: Vec<LineFailure>,
    /// The line whose sending failed and stopped the run (nothing after it was sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_at_line: Option<usize>,
    /// Why it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// `--from-line` to send the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    resume_from_line: Option<usize>,
}

#[derive(serde::Serialize)]
struct LineFailure {
    line: usize,
    reason: String,
}

/// The keys of an envelope line.
const ENVELOPE_KEYS: [&str; 5] = ["body", "attributes", "delay", "group_id", "dedup_id"];

/// Parse one JSON Lines line into a message: the line as it is (`raw`, or anything but an
/// object with a "body" key), or an envelope with known keys only.
fn parse_line(line: &str, raw: bool) -> Result<OutgoingMessage, String> {
    if raw || !line.trim_start().starts_with('{') {
        return Ok(OutgoingMessage::new(line));
    }
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e} (--raw-lines sends lines as they are)"))?;
    let Some(obj) = v.as_object().filter(|o| o.contains_key("body")) else {
        return Ok(OutgoingMessage::new(line));
    };
    let unknown: Vec<String> =
        obj.keys().filter(|k| !ENVELOPE_KEYS.contains(&k.as_str())).map(|k| format!("{k:?}")).collect();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown key{} {}: an object with \"body\" is an envelope with the keys {} only (misspelt? to send \
             the whole line as the body, use --raw-lines)",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", "),
            ENVELOPE_KEYS.join(", ")
        ));
    }
    match &obj["body"] {
        serde_json::Value::String(body) => structured(&v, body),
        _ => Err("\"body\" of an envelope must be a string (--raw-lines sends the whole line)".into()),
    }
}

fn structured(v: &serde_json::Value, body: &str) -> Result<OutgoingMessage, String> {
    let mut m = OutgoingMessage::new(body);
    if let Some(d) = v.get("delay") {
        let d = d.as_u64().ok_or("\"delay\" must be a whole number of seconds")?;
        m.delay_seconds = Some(u32::try_from(d).map_err(|_| format!("\"delay\" {d} is out of range"))?);
    }
    for (key, slot) in [("group_id", &mut m.group_id), ("dedup_id", &mut m.dedup_id)] {
        if let Some(x) = v.get(key) {
            *slot = Some(x.as_str().ok_or(format!("\"{key}\" must be a string"))?.to_string());
        }
    }
    if let Some(attrs) = v.get("attributes") {
        let obj = attrs.as_object().ok_or("\"attributes\" must be an object")?;
        for (k, val) in obj {
            let a = match val {
                serde_json::Value::String(s) => AttributeValue::string(s.clone()),
                serde_json::Value::Number(n) => AttributeValue::number(n),
                _ => return Err(format!("attribute {k:?} must be a string or a number")),
            };
            m.attributes.insert(k.clone(), a);
        }
    }
    Ok(m)
}

const CHUNK: usize = 500;

/// Why a run stopped part way: the first line not known to be sent, the error, and the last
/// line of a batch call that failed after some of its messages may have gone out.
struct Stop {
    line: usize,
    error: String,
    unsure_to: Option<usize>,
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let config = aws_config(global).await?;
    let claim_check = args
        .payload_bucket
        .as_ref()
        .map(|bucket| ClaimCheck::new(sqskit::payload::s3_client(&config), bucket).with_always(args.offload_always));
    let mut queue = crate::common::queue(&aws_sdk_sqs::Client::new(&config), &args.queue_url).await?;
    if let Some(c) = &claim_check {
        queue = queue.with_claim_check(c.clone());
    }
    if let Some(hop) = args.delay_hop {
        queue = queue.with_delay_hop(std::time::Duration::from_secs(hop));
    }
    let mut summary =
        Summary { sent: 0, failed: Vec::new(), stopped_at_line: None, error: None, resume_from_line: None };
    let single = match (&args.body, &args.file) {
        (Some(b), _) => Some(b.clone()),
        (_, Some(f)) => Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?),
        _ => None,
    };
    let stop = match single {
        Some(body) => {
            send_one(&queue, &args, body, claim_check.as_ref()).await?;
            summary.sent = 1;
            None
        }
        None => send_lines(&queue, &args, claim_check.as_ref(), &mut summary).await?,
    };
    summary.failed.sort_by_key(|f| f.line);
    if let Some(stop) = &stop {
        summary.stopped_at_line = Some(stop.line);
        summary.error = Some(stop.error.clone());
        summary.resume_from_line = Some(stop.line);
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&summary)?),
        Output::Text => {
            println!("sent {} message(s) to {}, {} failed", summary.sent, queue.name(), summary.failed.len());
            for f in &summary.failed {
                println!("  line {}: {}", f.line, f.reason);
            }
        }
    }
    if let Some(stop) = stop {
        let unsure = match stop.unsure_to {
            Some(to) => format!(" (some of lines {}-{to} may have gone out too: resuming may repeat them)", stop.line),
            None => String::new(),
        };
        anyhow::bail!(
            "stopped at line {line}: {}; sent {} message(s) before it{unsure}; to send the rest: the same command with \
             --from-line {line}",
            stop.error,
            summary.sent,
            line = stop.line,
        );
    }
    if summary.failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{} of {} message(s) not sent", summary.failed.len(), summary.failed.len() + summary.sent))
    }
}

/// `--body` / `--file`: one message, delayed or due at a time when asked.
async fn send_one(queue: &Queue, args: &Args, body: String, claim_check: Option<&ClaimCheck>) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now();
    let max_delay = std::time::Duration::from_secs(u64::from(sqskit::limits::MAX_DELAY_SECONDS));
    // (both within 365 days: checked by their parsers)
    let due = args.deliver_at.or_else(|| args.delay.filter(|d| *d > max_delay).and_then(|d| now.checked_add(d)));
    let mut m = OutgoingMessage::new(body);
    m.group_id = args.group_id.clone();
    if due.is_none() {
        m.delay_seconds = args.delay.and_then(|d| u32::try_from(d.as_secs()).ok());
    }
    for (k, v) in &args.attributes {
        m.attributes.insert(k.clone(), AttributeValue::string(v));
    }
    check(&m, claim_check).map_err(|e| anyhow::anyhow!("{e}"))?;
    match due {
        Some(when) => {
            if when < now {
                tracing::warn!("--deliver-at is in the past: sent for delivery now");
            }
            queue.send_at(m, when).await?;
        }
        None => {
            queue.send(m).await?;
        }
    }
    Ok(())
}

/// JSON Lines: every line checked first (failures listed by line), then sent in chunks, in
/// order. A chunk that cannot be sent (an upload for the claim check, SQS unreachable) stops
/// the run: the lines before it were sent, the rest were not.
async fn send_lines(
    queue: &Queue,
    args: &Args,
    claim_check: Option<&ClaimCheck>,
    summary: &mut Summary,
) -> anyhow::Result<Option<Stop>> {
    let path = args.jsonl.clone().unwrap_or_else(|| "-".into());
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    let from = args.from_line.unwrap_or(1);
    // (line number, message) for every valid line
    let mut items: Vec<(usize, OutgoingMessage)> = Vec::new();
    for (i, bytes) in reader.split(b'\n').enumerate() {
        let line_no = i + 1;
        let mut bytes = bytes.with_context(|| format!("reading line {line_no}"))?;
        if line_no < from {
            continue;
        }
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let line = match String::from_utf8(bytes) {
            Ok(l) => l,
            Err(_) => {
                summary
                    .failed
                    .push(LineFailure { line: line_no, reason: "not UTF-8 text (SQS bodies are text)".into() });
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_line(&line, args.raw_lines).map(|mut m| {
            if m.group_id.is_none() {
                m.group_id = args.group_id.clone();
            }
            for (k, v) in &args.attributes {
                m.attributes.entry(k.clone()).or_insert_with(|| AttributeValue::string(v));
            }
            m
        });
        match parsed.and_then(|m| check(&m, claim_check).map(|()| m)) {
            Ok(m) => items.push((line_no, m)),
            Err(reason) => summary.failed.push(LineFailure { line: line_no, reason }),
        }
    }
    if from > 1 && items.is_empty() && summary.failed.is_empty() {
        tracing::warn!(from_line = from, "nothing to send from that line on");
    }
    let total = items.len();
    let bar = (total > 50 && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} sent  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut stop = None;
    for chunk in items.chunks(CHUNK) {
        // uploads first, one line at a time in order, so a failed one names its line and
        // everything before it still goes out
        let mut ready: Vec<OutgoingMessage> = Vec::with_capacity(chunk.len());
        let mut failed_upload = None;
        match claim_check {
            Some(c) => {
                let mut uploads = futures::stream::iter(chunk.iter().map(|(_, m)| c.offload(m.clone()))).buffered(8);
                while let Some(r) = uploads.next().await {
                    match r {
                        Ok(m) => ready.push(m),
                        Err(e) => {
                            failed_upload = Some((chunk[ready.len()].0, e.to_string()));
                            break;
                        }
                    }
                }
            }
            None => ready.extend(chunk.iter().map(|(_, m)| m.clone())),
        }
        let lines: Vec<usize> = chunk.iter().map(|(l, _)| *l).take(ready.len()).collect();
        if !ready.is_empty() {
            match queue.send_batch(ready).await {
                Ok(report) => {
                    summary.sent += report.sent.len();
                    for f in report.failed {
                        summary
                            .failed
                            .push(LineFailure { line: lines[f.index], reason: format!("{}: {}", f.code, f.message) });
                    }
                }
                Err(e) => {
                    // some calls of this batch may have gone out before the error (their report is lost)
                    let gone = matches!(e, sqskit::Error::QueueDoesNotExist { .. });
                    let unsure_to = lines.last().copied().filter(|last| *last > lines[0] && !gone);
                    stop = Some(Stop { line: lines[0], error: e.to_string(), unsure_to });
                    break;
                }
            }
        }
        if let Some(b) = &bar {
            b.inc(lines.len() as u64);
        }
        if let Some((line, error)) = failed_upload {
            stop = Some(Stop { line, error, unsure_to: None });
            break;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // lines after the stop were not looked at again: their failures (if any) are still listed
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bodies_or_envelopes_with_known_keys_only() {
        assert_eq!(parse_line("plain text", false).unwrap().body, "plain text");
        let m = parse_line(r#"{"order":1}"#, false).unwrap();
        assert_eq!(m.body, r#"{"order":1}"#, "an object without body is the body");
        let m = parse_line(r#"{"body":"b","delay":5,"group_id":"g","attributes":{"k":"v","n":3}}"#, false).unwrap();
        assert_eq!((m.body.as_str(), m.delay_seconds, m.group_id.as_deref()), ("b", Some(5), Some("g")));
        assert_eq!(m.attributes["n"], AttributeValue::number(3));
        assert!(parse_line(r#"{"body": 5}"#, false).unwrap_err().contains("body"));
        assert!(parse_line("{broken", false).unwrap_err().contains("invalid JSON"));
        assert!(parse_line(r#"{"body":"x","delay":"soon"}"#, false).unwrap_err().contains("delay"));
        let line = r#"{"to":"a@example.com","subject":"Hello","body":"Hi there"}"#;
        let e = parse_line(line, false).unwrap_err();
        assert!(e.contains("\"to\"") && e.contains("--raw-lines"), "{e}");
        assert_eq!(parse_line(line, true).unwrap().body, line, "--raw-lines: the line as it is");
        assert!(parse_line(r#"{"body":"x","atributes":{}}"#, false).unwrap_err().contains("atributes"));
        assert!(parse_line("[1,2]", false).is_ok(), "an array is a body");
    }

    #[test]
    fn errors_never_name_an_index() {
        let e = check(&OutgoingMessage::new(""), None).unwrap_err();
        assert!(e.contains("empty") && !e.contains("message 0"), "{e}");
        let e = check(&OutgoingMessage::new("x".repeat(2 << 20)), None).unwrap_err();
        assert!(e.contains("--payload-bucket") && !e.contains("message"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn any_line_is_sent_whole_or_refused_naming_why(line in "\\PC{0,40}|\\{\"body\":\"[a-z]{0,5}\"(,\"[a-z_]{1,10}\":[0-9]{1,3})?\\}") {
            match parse_line(&line, false) {
                // nothing reshaped: the line itself, or the envelope's body with its keys used
                Ok(m) => proptest::prop_assert!(m.body == line || line.contains("\"body\"")),
                Err(e) => proptest::prop_assert!(!e.is_empty()),
            }
            proptest::prop_assert_eq!(parse_line(&line, true).unwrap().body, line);
        }
    }
}
