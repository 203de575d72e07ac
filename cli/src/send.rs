//! `sqskit send`: one message or many (JSON Lines), batched through `send_batch`.

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use sqskit::client::validate_outgoing;
use sqskit::payload::ClaimCheck;
use sqskit::{AttributeValue, OutgoingMessage};

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
    /// Send one message per line of this JSON Lines file ("-" for stdin): a line is either
    /// the body itself, or an object {"body", "attributes", "delay", "group_id", "dedup_id"}.
    #[arg(long)]
    pub jsonl: Option<std::path::PathBuf>,
    /// Read JSON Lines from stdin (same as --jsonl -).
    #[arg(id = "stdin", value_name = "-", value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
    pub stdin: Option<String>,
    /// Message group id for --body/--file (and lines without one): the FIFO group, or on a
    /// standard queue the tenant (fair queues).
    #[arg(long)]
    pub group_id: Option<String>,
    /// Deliver --body/--file after this long: seconds, or a duration such as 90s, 15m, 2h, 3d.
    /// Up to 15 minutes it is SQS's DelaySeconds; beyond, the message hops through the
    /// consumers until it is due (standard queues; `sqskit poll` and the library handle hops).
    #[arg(long, value_parser = parse_delay, value_name = "DURATION")]
    pub delay: Option<std::time::Duration>,
    /// Deliver --body/--file at this time (RFC 3339, e.g. 2026-12-24T18:00:00Z); like --delay.
    #[arg(long, value_parser = parse_deliver_at, value_name = "TIME", conflicts_with = "delay")]
    pub deliver_at: Option<std::time::SystemTime>,
    /// Longest delay hop in seconds (1–900; default 900). For tests and demos.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=900), value_name = "SECONDS")]
    pub delay_hop: Option<u64>,
    /// A string message attribute NAME=VALUE (repeatable) for --body/--file.
    #[arg(long = "attribute", value_name = "NAME=VALUE")]
    pub attributes: Vec<String>,
    /// Claim check: send bodies over 1 MiB through this S3 bucket (Amazon SQS Extended Client
    /// format, read by its Java and Python consumers and by `sqskit poll --payload-bucket`).
    #[arg(long, env = "SQSKIT_PAYLOAD_BUCKET", help_heading = "Large payloads")]
    pub payload_bucket: Option<String>,
    /// Send every body through the bucket, whatever its size.
    #[arg(long, requires = "payload_bucket", help_heading = "Large payloads")]
    pub offload_always: bool,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Check a message before sending: one the claim check will offload is checked as its
/// pointer will be (so only the attributes, delay and body presence count).
fn check(index: usize, m: &OutgoingMessage, claim_check: Option<&ClaimCheck>) -> Result<(), sqskit::Error> {
    match claim_check {
        Some(c) if c.should_offload(m) && !m.body.is_empty() => {
            let mut probe = OutgoingMessage::new("-");
            probe.attributes = m.attributes.clone();
            probe.delay_seconds = m.delay_seconds;
            validate_outgoing(index, &probe)
        }
        _ => validate_outgoing(index, m),
    }
}

#[derive(serde::Serialize)]
struct Summary {
    sent: usize,
    failed: Vec<LineFailure>,
}

#[derive(serde::Serialize)]
struct LineFailure {
    line: usize,
    reason: String,
}

/// Parse one JSON Lines line into a message (`line_no` is 1-based, for messages).
fn parse_line(line: &str, default_group: Option<&str>) -> Result<OutgoingMessage, String> {
    let trimmed = line.trim_start();
    let mut msg = if trimmed.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
        match v.get("body") {
            None => OutgoingMessage::new(line),
            Some(serde_json::Value::String(body)) => structured(&v, body)?,
            Some(_) => return Err("\"body\" must be a string".into()),
        }
    } else {
        OutgoingMessage::new(line)
    };
    if msg.group_id.is_none() {
        msg.group_id = default_group.map(str::to_string);
    }
    Ok(msg)
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
    // (line number, message) for every valid input; failures by line
    let mut items: Vec<(usize, OutgoingMessage)> = Vec::new();
    let mut failed: Vec<LineFailure> = Vec::new();
    let single = match (&args.body, &args.file) {
        (Some(b), _) => Some(b.clone()),
        (_, Some(f)) => Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?),
        _ => None,
    };
    if single.is_none() && (args.delay.is_some() || args.deliver_at.is_some()) {
        anyhow::bail!(
            "--delay and --deliver-at apply to --body/--file; JSON Lines carry \"delay\" (seconds, ≤ 900) per line"
        );
    }
    let now = std::time::SystemTime::now();
    let due = args
        .deliver_at
        .or_else(|| args.delay.filter(|d| d.as_secs() > u64::from(sqskit::limits::MAX_DELAY_SECONDS)).map(|d| now + d));
    let mut later: Option<(OutgoingMessage, std::time::SystemTime)> = None;
    if let Some(hop) = args.delay_hop {
        queue = queue.with_delay_hop(std::time::Duration::from_secs(hop));
    }
    if let Some(body) = single {
        let mut m = OutgoingMessage::new(body);
        m.group_id = args.group_id.clone();
        if due.is_none() {
            m.delay_seconds = args.delay.map(|d| d.as_secs() as u32);
        }
        for a in &args.attributes {
            let (k, v) = a.split_once('=').with_context(|| format!("--attribute {a:?} is not NAME=VALUE"))?;
            m.attributes.insert(k.to_string(), AttributeValue::string(v));
        }
        check(0, &m, claim_check.as_ref())?;
        match due {
            Some(when) => later = Some((m, when)),
            None => items.push((1, m)),
        }
    } else {
        let path = args.jsonl.clone().unwrap_or_else(|| "-".into());
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            Box::new(std::io::BufReader::new(
                std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
            ))
        };
        for (i, line) in reader.lines().enumerate() {
            let line_no = i + 1;
            let line = line.with_context(|| format!("reading line {line_no}"))?;
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(&line, args.group_id.as_deref())
                .and_then(|m| check(i, &m, claim_check.as_ref()).map(|_| m).map_err(|e| e.to_string()))
            {
                Ok(m) => items.push((line_no, m)),
                Err(reason) => failed.push(LineFailure { line: line_no, reason }),
            }
        }
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
    let mut sent = 0;
    if let Some((m, when)) = later {
        queue.send_at(m, when).await?;
        sent += 1;
    }
    for chunk in items.chunks(CHUNK) {
        let report = queue.send_batch(chunk.iter().map(|(_, m)| m.clone())).await?;
        sent += report.sent.len();
        for f in report.failed {
            failed.push(LineFailure { line: chunk[f.index].0, reason: format!("{}: {}", f.code, f.message) });
        }
        if let Some(b) = &bar {
            b.inc(chunk.len() as u64);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    failed.sort_by_key(|f| f.line);
    let summary = Summary { sent, failed };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&summary)?),
        Output::Text => {
            println!("sent {} message(s) to {}, {} failed", summary.sent, queue.name(), summary.failed.len());
            for f in &summary.failed {
                println!("  line {}: {}", f.line, f.reason);
            }
        }
    }
    if summary.failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{} of {} message(s) not sent", summary.failed.len(), summary.failed.len() + summary.sent))
    }
}

fn parse_delay(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (seconds, or e.g. 90s, 15m, 2h, 3d)"))
}

fn parse_deliver_at(s: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339_weak(s.trim()).map_err(|e| format!("{s:?}: {e} (RFC 3339, e.g. 2026-12-24T18:00:00Z)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bodies_or_structured_objects() {
        assert_eq!(parse_line("plain text", None).unwrap().body, "plain text");
        let m = parse_line(r#"{"order":1}"#, None).unwrap();
        assert_eq!(m.body, r#"{"order":1}"#, "an object without body is the body");
        let m = parse_line(r#"{"body":"b","delay":5,"group_id":"g","attributes":{"k":"v","n":3}}"#, None).unwrap();
        assert_eq!((m.body.as_str(), m.delay_seconds, m.group_id.as_deref()), ("b", Some(5), Some("g")));
        assert_eq!(m.attributes["n"], AttributeValue::number(3));
        assert!(parse_line(r#"{"body": 5}"#, None).unwrap_err().contains("body"));
        assert!(parse_line("{broken", None).unwrap_err().contains("invalid JSON"));
        assert!(parse_line(r#"{"body":"x","delay":"soon"}"#, None).unwrap_err().contains("delay"));
    }
}
