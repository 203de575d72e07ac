//! `sqskit console`: a web console for queues, dead letters, the archive and the pollers.
//!
//! Thin, like the other commands: every figure and every action is a library call
//! (`sqskit::inventory` for the overview, `sqskit::dlq` (`dlq::inspect`) for the
//! dead-letter pages, `sqskit::dlq::replay` for the archive, the pollers' own `/status`).
//! HTML is rendered on the server (maud escapes every value), the one script and style sheet are
//! embedded in the binary, and actions run as jobs in this process, so closing the page does not
//! stop them. Security: `security.rs`.

mod history;
mod jobs;
mod pages;
mod routes;
mod security;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{aws_config, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on. Anything but a loopback address needs --token.
    #[arg(long, env = "SQSKIT_CONSOLE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Show the queues whose name starts with this prefix (default: every queue of the account
    /// and region).
    #[arg(long, env = "SQSKIT_CONSOLE_QUEUE_PREFIX", conflicts_with = "queue_urls")]
    pub queue_prefix: Option<String>,
    /// Show these queues (URL or name; repeatable) and their dead-letter queues.
    #[arg(long = "queue-url", value_name = "URL")]
    pub queue_urls: Vec<String>,
    /// Refuse every state-changing request (403) and hide the buttons.
    #[arg(long, env = "SQSKIT_CONSOLE_READ_ONLY")]
    pub read_only: bool,
    /// Show message bodies on the dead-letter and archive pages (hidden by default; never logged).
    #[arg(long, env = "SQSKIT_CONSOLE_SHOW_BODIES")]
    pub show_bodies: bool,
    /// Require this token: browsers log in with it (an HttpOnly, SameSite cookie), scripts send
    /// `Authorization: Bearer TOKEN`. At least 12 characters.
    #[arg(long, env = "SQSKIT_CONSOLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A poller's metrics address (http://HOST:PORT of `sqskit poll --metrics-addr`): the
    /// console shows its /status. Repeatable.
    #[arg(long = "poller", value_name = "URL")]
    pub pollers: Vec<String>,
    /// The DLQ monitor's S3 archive (its ARCHIVE_BUCKET) for the archive page.
    #[arg(long, env = "SQSKIT_CONSOLE_ARCHIVE_BUCKET")]
    pub archive_bucket: Option<String>,
    /// Key prefix of the archive (ARCHIVE_PREFIX).
    #[arg(long, env = "SQSKIT_CONSOLE_ARCHIVE_PREFIX", default_value = "dead-letters")]
    pub archive_prefix: String,
    /// Sample every queue's depth for the charts this often, in seconds, while nobody watches
    /// (an open overview refreshes every few seconds). Each sample is one GetQueueAttributes per
    /// queue (plus ListQueues with --queue-prefix).
    #[arg(long, default_value_t = 30, value_parser = crate::args::secs(2..=3600), value_name = "SECS")]
    pub sample_every: u64,
}

/// The smallest token accepted.
const MIN_TOKEN_LEN: usize = 12;

impl Args {
    /// Checks before anything starts (usage errors, exit 2).
    pub fn validate(&self) -> Result<(), String> {
        match self.token.as_deref() {
            None if !self.addr.ip().is_loopback() => {
                return Err(format!(
                    "refusing to listen on {} without a token: anyone who can reach it could redrive, delete and \
                     purge. Pass --token (or set SQSKIT_CONSOLE_TOKEN), or listen on 127.0.0.1",
                    self.addr
                ))
            }
            Some(t) if t.chars().count() < MIN_TOKEN_LEN => {
                return Err(format!("--token must be at least {MIN_TOKEN_LEN} characters"))
            }
            _ => {}
        }
        for p in &self.pollers {
            poller_status_url(p)?;
        }
        Ok(())
    }
}

/// `/status` of a `--poller` value: `http(s)://HOST:PORT[/status]`.
fn poller_status_url(given: &str) -> Result<String, String> {
    let rest = given
        .strip_prefix("http://")
        .or_else(|| given.strip_prefix("https://"))
        .ok_or_else(|| format!("--poller {given:?}: expected http://HOST:PORT (the poller's --metrics-addr)"))?;
    if rest.split('/').next().unwrap_or_default().is_empty() {
        return Err(format!("--poller {given:?}: no host"));
    }
    let base = given.trim_end_matches('/');
    Ok(if base.ends_with("/status") { base.to_string() } else { format!("{base}/status") })
}

/// Which queues the console shows.
#[derive(Debug, Clone)]
pub enum Selection {
    Prefix(Option<String>),
    Queues(Vec<sqskit::Queue>),
}

/// Everything the handlers share.
pub struct App {
    pub sqs: aws_sdk_sqs::Client,
    pub selection: Selection,
    pub read_only: bool,
    pub show_bodies: bool,
    pub security: security::Security,
    pub pollers: Vec<String>,
    /// For the pollers' `/status` (`sqskit::handlers::http_client`: rustls, platform roots).
    pub http: reqwest::Client,
    pub archive: Option<sqskit::dlq::replay::Archive>,
    pub history: history::History,
    pub jobs: jobs::Jobs,
    pub version: &'static str,
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let sdk = aws_config(global).await?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let selection = if args.queue_urls.is_empty() {
        Selection::Prefix(args.queue_prefix.clone())
    } else {
        let mut queues = Vec::new();
        for given in &args.queue_urls {
            queues.push(crate::common::queue(&sqs, given).await?);
        }
        Selection::Queues(queues)
    };
    let pollers =
        args.pollers.iter().map(|p| poller_status_url(p)).collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::msg)?;
    let app = Arc::new(App {
        sqs,
        selection,
        read_only: args.read_only,
        show_bodies: args.show_bodies,
        security: security::Security::new(args.token.clone())?,
        http: sqskit::handlers::http_client(Duration::from_secs(3))?,
        pollers,
        archive: args
            .archive_bucket
            .as_ref()
            .map(|b| sqskit::dlq::replay::Archive::new(&sdk, b.clone(), args.archive_prefix.clone())),
        history: history::History::default(),
        jobs: jobs::Jobs::default(),
        version: env!("CARGO_PKG_VERSION"),
    });
    // the first sample now: a wrong endpoint or missing permission shows at start, not on a page
    app.history.refresh(&app, Duration::ZERO).await?;
    let sampler = {
        let app = app.clone();
        let every = Duration::from_secs(args.sample_every);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = app.history.refresh(&app, every / 2).await {
                    tracing::warn!(error = %e, "sampling queue depths failed");
                }
            }
        })
    };
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.addr))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, read_only = args.read_only, token = args.token.is_some(), "console listening");
    println!("sqskit console on http://{local}/");
    let router = routes::router(app.clone());
    let served =
        axum::serve(listener, router.into_make_service()).with_graceful_shutdown(sqskit::shutdown_signal()).await;
    sampler.abort();
    served.map_err(|e| anyhow::anyhow!("console server: {e}"))
}
