//! `sqskit`: run an SQS worker (`poll`) and operate queues.
//! Thin: parsing, wiring and output; every behaviour lives in the library.

mod args;
mod common;
#[cfg(feature = "console")]
mod console;
mod dlq;
mod health;
mod pause;
mod peek;
mod poll;
mod purge;
mod queue;
mod redrive;
mod send;
mod stats;

use clap::{CommandFactory, Parser, Subcommand};

/// sqskit: consume and operate Amazon SQS queues.
#[derive(Parser, Debug)]
#[command(name = "sqskit", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: common::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the worker: receive, handle (via --exec or --http), settle, until SIGTERM.
    Poll(Box<poll::Args>),
    /// Send one message, or many from JSON Lines (batched, with progress).
    Send(send::Args),
    /// Show messages without consuming them (each peek counts as a receive).
    Peek(peek::Args),
    /// Move messages from a DLQ back to their source queue (or --to).
    Redrive(redrive::Args),
    /// Dead-letter queue tools: drain (archive + alert), list (error kinds).
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Delete every message in a queue (asks first unless --yes).
    Purge(purge::Args),
    /// Stop every poller of a queue from receiving, in any number of processes, within 30 s
    /// (a queue tag they read; in-flight messages finish); --function also disables a Lambda
    /// function's event source mapping from it.
    Pause(pause::PauseArgs),
    /// Undo `sqskit pause`: the pollers receive again within 30 s; --function enables the
    /// mapping again.
    Resume(pause::ResumeArgs),
    /// Queue depth (visible, in flight, delayed) and the DLQ; --watch refreshes in place.
    Stats(stats::Args),
    /// Create a queue (optionally with a dead-letter queue and redrive policy); prints its URL.
    CreateQueue(queue::CreateArgs),
    /// A web console for the queues, their dead letters, the DLQ archive and the pollers
    /// (127.0.0.1:8080 by default; any other address needs --token).
    #[cfg(feature = "console")]
    Console(console::Args),
    /// Check a running poller's health endpoint (for container health checks without curl):
    /// exit 0 when /healthz (or /readyz) answers 200.
    Health(health::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // what clap cannot check alone, as usage errors too (exit 2)
    let invalid = match &cli.command {
        Command::Redrive(args) => args.validate().err().map(|e| ("redrive", e)),
        Command::Send(args) => args.validate().err().map(|e| ("send", e)),
        Command::Poll(args) => args.validate().err().map(|e| ("poll", e)),
        #[cfg(feature = "console")]
        Command::Console(args) => args.validate().err().map(|e| ("console", e)),
        _ => None,
    };
    if let Some((name, e)) = invalid {
        let mut cmd = Cli::command();
        cmd.build(); // gives the subcommand its full name for the usage line
        let kind = clap::error::ErrorKind::ValueValidation;
        match cmd.find_subcommand_mut(name) {
            Some(sub) => sub.error(kind, e).exit(),
            None => cmd.error(kind, e).exit(),
        }
    }
    let telemetry = match common::init_logging(cli.global.log_format, cli.global.otlp_endpoint.as_deref()) {
        Ok(t) => t,
        Err(e) => return common::fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return common::fail(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Poll(args) => poll::run(&cli.global, *args).await,
            Command::CreateQueue(args) => queue::create(&cli.global, args).await,
            Command::Send(args) => send::run(&cli.global, args).await,
            Command::Stats(args) => stats::run(&cli.global, args).await,
            Command::Peek(args) => peek::run(&cli.global, args).await,
            Command::Redrive(args) => redrive::run(&cli.global, args).await,
            Command::Dlq(cmd) => dlq::run(&cli.global, cmd).await,
            Command::Purge(args) => purge::run(&cli.global, args).await,
            Command::Pause(args) => pause::pause(&cli.global, args).await,
            Command::Resume(args) => pause::resume(&cli.global, args).await,
            Command::Health(args) => health::run(args).await,
            #[cfg(feature = "console")]
            Command::Console(args) => console::run(&cli.global, args).await,
        }
    });
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => common::fail(e),
    }
}
