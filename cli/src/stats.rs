//! `sqskit stats`: queue depth, the DLQ and the pause flag, once or refreshed in place; with
//! `--poller`, the flow control state of running pollers (their `/status`).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use sqskit::inventory::QueueStats;
use sqskit::Queue;

use crate::common::{sqs, Global, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Queue URL or name (repeatable).
    #[arg(long = "queue-url", env = "SQSKIT_QUEUE_URL", value_delimiter = ',', required = true)]
    pub queue_urls: Vec<String>,
    /// Refresh every SECS seconds (1–86400) until interrupted.
    #[arg(long, value_name = "SECS", value_parser = crate::args::secs(1..=86_400))]
    pub watch: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// A running poller's --metrics-addr (HOST:PORT or http://HOST:PORT; repeatable): show its
    /// circuit breaker, paused queues, concurrency limit and in-flight count (from its /status).
    /// With --output json the output becomes {"queues": [...], "pollers": [...]}.
    #[arg(long = "poller", value_name = "ADDR", value_parser = crate::health::parse_addr)]
    pub pollers: Vec<String>,
}

fn render(rows: &[QueueStats]) -> String {
    let mut s = format!(
        "{:<40} {:>9} {:>9} {:>9}  {:<34} {}\n",
        "QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED", "DLQ (visible, maxReceiveCount)", "PAUSED"
    );
    for r in rows {
        let dlq = match (&r.dlq, r.dlq_visible, r.max_receive_count) {
            (Some(n), v, m) => format!("{n} ({}, {})", v.map_or("?".into(), |v| v.to_string()), m.unwrap_or(0)),
            _ => "-".into(),
        };
        let paused = r.paused.as_deref().unwrap_or("-");
        s.push_str(&format!(
            "{:<40} {:>9} {:>9} {:>9}  {dlq:<34} {paused}\n",
            r.queue, r.visible, r.in_flight, r.delayed
        ));
    }
    s
}

/// One poller's `/status`, or why it could not be read.
async fn poller_status(addr: &str) -> serde_json::Value {
    let read = async {
        let (status, body) = crate::health::get(addr, "/status").await?;
        anyhow::ensure!(status == 200, "/status answered {status}");
        Ok::<_, anyhow::Error>(serde_json::from_str::<serde_json::Value>(&body)?)
    };
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(mut v)) => {
            v["addr"] = addr.into();
            v
        }
        Ok(Err(e)) => serde_json::json!({"addr": addr, "error": format!("{e:#}")}),
        Err(_) => serde_json::json!({"addr": addr, "error": "no answer within 5 s"}),
    }
}

/// One line per poller: its breaker, paused queues, concurrency limit, in flight.
fn render_pollers(pollers: &[serde_json::Value]) -> String {
    let mut s = String::new();
    for p in pollers {
        let addr = p["addr"].as_str().unwrap_or("?");
        if let Some(e) = p["error"].as_str() {
            s.push_str(&format!("poller {addr}: unreachable: {e}\n"));
            continue;
        }
        let breaker = match &p["breaker"] {
            serde_json::Value::Null => "off".to_string(),
            b => {
                let state = b["state"].as_str().unwrap_or("?");
                let secs = b["for_s"].as_f64().unwrap_or(0.0);
                match b["reason"].as_str().filter(|r| !r.is_empty()) {
                    Some(reason) => format!("{state} for {secs:.0} s ({reason})"),
                    None => format!("{state} for {secs:.0} s"),
                }
            }
        };
        let paused: Vec<String> = p["paused"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| format!("{} ({})", q["queue"].as_str().unwrap_or("?"), q["reason"].as_str().unwrap_or("")))
            .collect();
        let paused = if paused.is_empty() { "none".to_string() } else { paused.join(", ") };
        let limit = p["concurrency_limit"].as_u64().map_or(String::new(), |l| format!(", concurrency limit {l}"));
        s.push_str(&format!(
            "poller {addr}: breaker {breaker}; paused: {paused}; in flight {}{limit}\n",
            p["in_flight"].as_u64().unwrap_or(0)
        ));
    }
    s
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = sqs(global).await?;
    let mut queues: Vec<Queue> = Vec::with_capacity(args.queue_urls.len());
    for given in &args.queue_urls {
        queues.push(crate::common::queue(&client, given).await?);
    }
    loop {
        let rows = sqskit::inventory::stats_with_pauses(&queues).await?;
        let pollers = futures::future::join_all(args.pollers.iter().map(|a| poller_status(a))).await;
        match args.output {
            Output::Json if args.pollers.is_empty() => println!("{}", serde_json::to_string(&rows)?),
            Output::Json => println!("{}", serde_json::json!({"queues": rows, "pollers": pollers})),
            Output::Text => {
                let text = render(&rows) + &render_pollers(&pollers);
                if args.watch.is_some() && std::io::stdout().is_terminal() {
                    print!("\x1b[H\x1b[2J{text}");
                } else {
                    print!("{text}");
                }
                std::io::stdout().flush()?;
            }
        }
        let Some(every) = args.watch else { return Ok(()) };
        tokio::time::sleep(Duration::from_secs(every.max(1))).await;
    }
}
